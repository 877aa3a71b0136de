"""``ifu-extract split CATALOG -n K -o OUTDIR``: cut a catalogue into K parts to process apart."""

import click

from ..catalog_parts import SPLIT_FORMATS
from ..steps.split import SplitConfig, run_split
from ._options import catalog_format_option, report
from ._paths import OutputPath


@click.command("split")
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("-n", "--parts", "n_parts", required=True, type=click.IntRange(min=1, max=100000),
              help="Number of parts (at most the number of catalogue rows).")
@click.option("-o", "--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder of the parts <STEM>_part01.<ext>, <STEM>_part02.<ext>...")
@click.option("--output-format", type=click.Choice(SPLIT_FORMATS), default="same", show_default=True,
              help="Format of the parts: 'same' keeps the input's (text catalogues keep their "
                   "header, comments and the rows' own text), or a TSV/CSV/ECSV/FITS table.")
@click.option("--prefix", default=None, metavar="STEM",
              help="Stem of the part names [default: the catalogue's file name without suffix].")
@click.option("--suffix", default=None, metavar=".EXT",
              help="File-name suffix of the parts, e.g. .tabular [default: the input's with "
                   "'same', else the format's: .tsv, .csv, .ecsv, .fits].")
@catalog_format_option
def cmd(catalog, n_parts, output, output_format, prefix, suffix, catalog_format):
    """Split CATALOG into consecutive parts of near-equal size (sizes differ by at most one row),
    keeping the catalogue order and IDs; extract each part on its own, then put the outputs back
    together with 'ifu-extract merge'.
    """
    for value, hint in ((prefix, "--prefix"), (suffix, "--suffix")):
        if value is not None and (not value.strip() or any(c in value for c in "/\\\0")):
            raise click.BadParameter("must be part of a file name, without folders", param_hint=hint)
    cfg = SplitConfig(n_parts=n_parts, catalog_format=catalog_format, output_format=output_format,
                      prefix=prefix, suffix=suffix)
    result = run_split(catalog, output, cfg)
    for p in result.parts:
        report(f"{p.path}: {p.n_rows} rows (IDs {p.first_id} to {p.last_id})")
    report(f"wrote {len(result.parts)} parts of {result.n_rows} rows to {output}")

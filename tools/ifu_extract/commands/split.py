"""``ifu-extract split CATALOG -n K -o OUTDIR``: cut a catalogue into K parts to process apart."""

import click

from ..chunks import SPLIT_FORMATS, split_catalog
from ._options import catalog_format_option, report


@click.command("split")
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("-n", "--parts", "n_parts", required=True, type=click.IntRange(min=1, max=100000),
              help="Number of parts (at most the number of catalogue rows).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output folder of the parts <STEM>_part01.<ext>, <STEM>_part02.<ext>...")
@click.option("--output-format", type=click.Choice(SPLIT_FORMATS), default="same", show_default=True,
              help="Format of the parts: 'same' keeps the input's (text catalogues keep their "
                   "header, comments and the rows' own text), or a TSV/CSV/ECSV/FITS table.")
@click.option("--prefix", default=None, metavar="STEM",
              help="Stem of the part names [default: the catalogue's file name without suffix].")
@catalog_format_option
def cmd(catalog, n_parts, output, output_format, prefix, catalog_format):
    """Split CATALOG into consecutive parts of near-equal size (sizes differ by at most one row),
    keeping the catalogue order and IDs; extract each part on its own, then put the outputs back
    together with 'ifu-extract merge'.
    """
    if prefix is not None and (not prefix.strip() or any(c in prefix for c in "/\\\0")):
        raise click.BadParameter("must be a file name stem, without folders", param_hint="--prefix")
    parts = split_catalog(catalog, n_parts, output, fmt=catalog_format, output_format=output_format,
                          prefix=prefix)
    for p in parts:
        report(f"{p.path}: {p.n_rows} rows (IDs {p.first_id} to {p.last_id})")
    report(f"wrote {len(parts)} parts of {sum(p.n_rows for p in parts)} rows to {output}")

"""``ifu-extract merge OUTDIR... -o OUTDIR``: one folder, summary and report from the parts' outputs."""

import click

from ..chunks import LINK_MODES, merge_outputs
from ..report import DEFAULT_DPI
from ._options import catalog_format_option, report


@click.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Merged output folder (new or empty): sources/, summary.tsv, qa/, index.html.")
@click.option("--catalog", type=click.Path(dir_okay=False), default=None,
              help="The catalogue that was split: rows follow its order, and its IDs found in no "
                   "folder are listed as missing [default: the order of the folders given].")
@catalog_format_option
@click.option("--link", type=click.Choice(LINK_MODES), default="copy", show_default=True,
              help="Copy the Source files, or hard-link them (saves space on one file system).")
@click.option("--no-report", is_flag=True, help="Do not rebuild the QA report (qa/, index.html).")
@click.option("--no-plots", is_flag=True, help="Rebuild index.html without the per-object figures.")
@click.option("--segmap", type=click.Path(dir_okay=False), default=None,
              help="Segmentation map outlined on the stamps [default: the first folder's "
                   "masks.fits, if any].")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Worker processes for the figures (Galaxy passes GALAXY_SLOTS).")
@click.option("--dpi", type=click.IntRange(min=50, max=300), default=DEFAULT_DPI, show_default=True,
              help="Resolution of the figures.")
def cmd(inputs, output, catalog, catalog_format, link, no_report, no_plots, segmap, threads, dpi):
    """Merge the output folders INPUTS of catalogue parts (from 'ifu-extract split') into one:
    Source files, one summary.tsv and the QA report.  Refuses folders made from different cubes
    and IDs present twice with different results.
    """
    merged = merge_outputs(inputs, output, catalog=catalog, catalog_format=catalog_format, link=link,
                           report=not no_report, plots=not no_plots, threads=threads, segmap=segmap,
                           report_kwargs={"dpi": dpi})
    extra = f"; {len(merged.duplicates)} IDs found twice with identical results kept once" \
        if merged.duplicates else ""
    miss = f"; {len(merged.missing)} catalogue IDs in no folder" if merged.missing else ""
    report(f"merged {len(inputs)} folders into {output}: {merged.n_rows} objects, "
           f"{merged.n_sources} Source files{extra}{miss}")
    if merged.report is not None:
        report(f"report: {merged.report.index}")

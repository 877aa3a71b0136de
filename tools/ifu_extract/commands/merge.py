"""``ifu-extract merge OUTDIR... -o OUTDIR``: one folder, summary and report from the parts' outputs."""

import click

from ..catalog_parts import LINK_MODES
from ..report import DEFAULT_DPI
from ..steps.merge import MergeConfig, run_merge
from ..steps.report import ReportConfig
from ._options import catalog_format_option, progress_bar, report
from ._paths import OutputPath


@click.command("merge")
@click.argument("inputs", nargs=-1, type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(file_okay=False),
              help="Merged output folder (new or empty): sources/, summary.tsv, qa/, index.html.")
@click.option("--part-summary", "part_summaries", multiple=True, type=click.Path(dir_okay=False),
              help="Summary table of a part (repeat, in the order to merge; instead of or after "
                   "the folders INPUTS).")
@click.option("--part-sources", "part_sources", multiple=True, type=click.Path(dir_okay=False),
              help="A Source file of those parts (repeat, any order: matched to the rows by the "
                   "ID in its header).")
@click.option("--catalog", type=click.Path(dir_okay=False), default=None,
              help="The catalogue that was split: rows follow its order, and its IDs found in no "
                   "part are listed as missing [default: the order of the parts given].")
@catalog_format_option
@click.option("--link", type=click.Choice(LINK_MODES), default="copy", show_default=True,
              help="Copy the Source files, or hard-link them (saves space on one file system).")
@click.option("--no-report", is_flag=True, help="Do not rebuild the QA report (qa/, index.html).")
@click.option("--no-plots", is_flag=True, help="Rebuild index.html without the per-object figures.")
@click.option("--html", type=OutputPath(dir_okay=False), default=None,
              help="Index page of the report [default: OUTPUT/index.html].")
@click.option("--assets-dir", type=OutputPath(file_okay=False), default=None,
              help="Folder of the report's figures (qa/) and linked Source files (sources/) "
                   "[default: the page's folder].")
@click.option("--segmap", type=click.Path(dir_okay=False), default=None,
              help="Segmentation map outlined on the stamps [default: the first folder's "
                   "masks.fits, if any].")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Worker processes for the figures (Galaxy passes GALAXY_SLOTS).")
@click.option("--dpi", type=click.IntRange(min=50, max=300), default=DEFAULT_DPI, show_default=True,
              help="Resolution of the figures.")
def cmd(inputs, output, part_summaries, part_sources, catalog, catalog_format, link, no_report,
        no_plots, html, assets_dir, segmap, threads, dpi):
    """Merge the output folders INPUTS of catalogue parts (from 'ifu-extract split'), or their
    --part-summary tables and --part-sources files, into one: Source files, one summary.tsv and
    the QA report.  Refuses parts made from different cubes and IDs present twice with different
    results.
    """
    if not inputs and not part_summaries:
        raise click.UsageError("give the parts' output folders, or --part-summary (with "
                               "--part-sources)")
    cfg = MergeConfig(catalog=catalog, catalog_format=catalog_format, link=link,
                      report=not no_report,
                      report_config=ReportConfig(threads=threads, plots=not no_plots, segmap=segmap,
                                                 dpi=dpi))
    with progress_bar("figures", enabled=not (no_report or no_plots)) as bar:
        result = run_merge(inputs, output, cfg, part_summaries=part_summaries,
                           part_sources=part_sources, html=html, assets_dir=assets_dir, progress=bar)
    merged = result.merge
    extra = f"; {len(merged.duplicates)} IDs found twice with identical results kept once" \
        if merged.duplicates else ""
    miss = f"; {len(merged.missing)} catalogue IDs in no folder" if merged.missing else ""
    n_parts = len(inputs) + len(part_summaries)
    report(f"merged {n_parts} {'folders' if not part_summaries else 'parts'} into {output}: "
           f"{merged.n_rows} objects, {merged.n_sources} Source files{extra}{miss}")
    if result.report is not None:
        report(f"report: {result.report.index}")

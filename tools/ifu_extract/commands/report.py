"""``ifu-extract report``: the QA report (figures and index page) of extracted objects."""

import click

from ..report import DEFAULT_DPI
from ..steps.report import ReportConfig, run_report
from ._options import progress_bar, report
from ._paths import OutputPath


@click.command("report")
@click.argument("outdir", required=False, type=click.Path(file_okay=False))
@click.option("--summary", type=click.Path(dir_okay=False), default=None,
              help="Summary table of the objects [default: OUTDIR/summary.tsv].")
@click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False),
              help="A Source file (repeat; matched to the summary rows by the ID in its header) "
                   "[default: the files the summary's FILE column names, relative to its folder].")
@click.option("--html", type=OutputPath(dir_okay=False), default=None,
              help="Index page to write [default: OUTDIR/index.html].")
@click.option("--assets-dir", type=OutputPath(file_okay=False), default=None,
              help="Folder of the figures (qa/) and of the Source files the page links to "
                   "(sources/, copied there when given with --source) [default: the page's folder].")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Worker processes for the figures (Galaxy passes GALAXY_SLOTS).")
@click.option("--no-plots", is_flag=True,
              help="Write index.html alone, without the per-object figures (fast).")
@click.option("--segmap", type=click.Path(dir_okay=False), default=None,
              help="Segmentation map outlined on the stamps (FITS with WCS, any grid: "
                   "'ifu-extract detect --segmap', SExtractor, or a masks file) [default: "
                   "OUTDIR/masks.fits when present].")
@click.option("--spectrum-tag", default=None, metavar="TAG",
              help="Spectrum drawn for every object, e.g. MUSE_APER_1.0_SKYSUB [default: the "
                   "summary's SNR_TAG, or a deblended/cross-correlated one added later].")
@click.option("--smooth", type=click.IntRange(min=1, max=101), default=5, show_default=True,
              help="Channels of the inverse-variance weighted running mean drawn over each "
                   "spectrum; 1 draws the raw spectrum only.")
@click.option("--dpi", type=click.IntRange(min=50, max=300), default=DEFAULT_DPI, show_default=True,
              help="Resolution of the figures (stamps 2.45 x 2.75 in per panel, spectrum 10 x 3.9 in).")
@click.option("--title", default=None, help="Title of index.html [default: the folder name].")
def cmd(outdir, summary, sources, html, assets_dir, threads, no_plots, segmap, spectrum_tag, smooth,
        dpi, title):
    """Write the QA report of OUTDIR (from 'extract', 'run' or 'merge'), or of a --summary table
    and its --source files: per object a stamps figure (white light, segmentation, masks) and a
    spectrum figure (variance band, sky lines, lines at the catalogue redshift) in qa/, and an
    index page, a table of every object sortable by S/N and status.
    """
    if outdir is None and summary is None:
        raise click.UsageError("give OUTDIR, or --summary (with its --source files)")
    cfg = ReportConfig(threads=threads, plots=not no_plots, segmap=segmap, tag=spectrum_tag,
                       smooth=smooth, dpi=dpi, title=title)
    with progress_bar("figures", enabled=not no_plots) as bar:
        result = run_report(outdir, cfg, summary=summary, sources=sources or None, html=html,
                            assets_dir=assets_dir, progress=bar)
    if not no_plots:
        n_src = len(result.plots)
        report(f"wrote {result.n_plotted} of {n_src} objects' figures to {result.assets_dir / 'qa'} "
               f"({result.seconds_per_object:.2f} s per object)")
        if n_src and result.n_plotted == 0:
            raise click.ClickException(f"no figure could be drawn ({n_src} objects tried); "
                                       "see the warnings above")
    report(f"wrote {result.index} ({result.n_objects} objects)")

"""``ifu-extract report OUTDIR``: the QA report (qa/<ID>_*.png and index.html) of an output folder."""

import contextlib
import sys

import click

from ..report import DEFAULT_DPI, make_report
from ._options import report


@click.command("report")
@click.argument("outdir", type=click.Path(file_okay=False))
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
def cmd(outdir, threads, no_plots, segmap, spectrum_tag, smooth, dpi, title):
    """Write the QA report of OUTDIR (from 'extract', 'run' or 'merge'): per object a stamps
    figure (white light, segmentation, masks) and a spectrum figure (variance band, sky lines,
    lines at the catalogue redshift) in OUTDIR/qa, and OUTDIR/index.html, a table of every object
    sortable by S/N and status.
    """
    ctx = click.get_current_context()
    show = sys.stderr.isatty() and not (ctx.find_root().obj or {}).get("quiet") and not no_plots
    with click.progressbar(length=_n_rows(outdir), label="figures", file=sys.stderr) if show \
            else contextlib.nullcontext() as bar:
        result = make_report(outdir, threads=threads, plots=not no_plots, segmap=segmap,
                             tag=spectrum_tag, smooth=smooth, dpi=dpi, title=title,
                             progress=bar.update if bar is not None else None)
    if not no_plots:
        n_src = len(result.plots)
        report(f"wrote {result.n_plotted} of {n_src} objects' figures to {outdir}/qa "
               f"({result.seconds_per_object:.2f} s per object)")
        if n_src and result.n_plotted == 0:
            raise click.ClickException(f"no figure could be drawn ({n_src} objects tried); "
                                       "see the warnings above")
    report(f"wrote {result.index} ({result.n_objects} objects)")


def _n_rows(outdir) -> int:
    """Rows of OUTDIR/summary.tsv (for the progress bar; 0 when unreadable)."""
    try:
        with open(f"{outdir}/summary.tsv", encoding="utf-8") as fh:
            return max(sum(1 for line in fh if line.strip()) - 1, 0)
    except OSError:
        return 0

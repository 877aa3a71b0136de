"""``ifu-extract xcorr CUBE CATALOG --masks MASKS.fits --source F... --summary S.tsv``
(or ``-o OUTDIR``, the folder of ``extract``)."""

import click

from ..contsub import METHODS
from ..steps.xcorr import run_xcorr
from ..xcorr import XcorConfig
from ._options import batch_exit, catalog_format_option, cube_kwargs, cube_options, report
from ._paths import OutputPath


@click.command("xcorr")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--masks", required=True, type=click.Path(dir_okay=False),
              help="Masks file from 'ifu-extract mask' (object, sky and neighbours' masks).")
@click.option("--reference", default="MUSE_WHITE", show_default=True, metavar="TAG",
              help="Spectrum of the Source file used as the first reference: MUSE_WHITE, an "
                   "aperture tag (MUSE_APER_1.0) or an ancillary-image tag.")
@click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="A Source file from 'extract' or 'run', matched to its catalogue row by its ID "
                   "keyword; repeatable.  XCOR and XCOR_CONTSUB spectra and IMA_XCOR maps are added "
                   "to it (or to its copy in --sources-out).")
@click.option("--summary", type=OutputPath(dir_okay=False), default=None,
              help="Summary table to write (TSV), with --source.")
@click.option("--sources-out", type=OutputPath(file_okay=False), default=None,
              help="With --source: copy every Source file to this folder as <ID>.fits and update the "
                   "copies [default: update the files in place].")
@click.option("-o", "--output", type=OutputPath(file_okay=False), default=None,
              help="Instead of --source/--summary: the folder of the 'extract' step (sources/<ID>.fits "
                   "updated in place, summary in xcorr.tsv).")
@click.option("--contsub-cube", type=click.Path(dir_okay=False), default=None,
              help="Continuum-subtracted cube from 'ifu-extract contsub' [default: the continuum "
                   "of each stamp is fitted here].")
@click.option("--method", type=click.Choice(METHODS), default="poly", show_default=True,
              help="Continuum model of the reference (and of the stamps without --contsub-cube).")
@click.option("--degree", type=click.IntRange(min=0, max=30), default=5, show_default=True,
              help="Polynomial degree of the continuum (poly).")
@click.option("--median-width", type=click.FloatRange(min=0, min_open=True), default=150.0,
              show_default=True, help="Running-median width of the continuum, Angstrom (median).")
@click.option("--max-iter", type=click.IntRange(min=1, max=200), default=50, show_default=True,
              help="Largest number of rounds (reference re-extracted with the new map); 1 is "
                   "AutoSpec's single pass.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True, max=1), default=1e-3,
              show_default=True,
              help="Converged when the unit-sum map changes by less than this (L1) between rounds.")
@click.option("--snr-min", type=click.FloatRange(min=0, max=100), default=2.0, show_default=True,
              help="Spaxels enter the extraction region where the map exceeds this many sigma "
                   "(connected to the object mask).")
@click.option("--skysub/--no-skysub", default=True, show_default=True,
              help="Also write XCOR_SKYSUB and XCOR_CONTSUB_SKYSUB (local sky from the sky mask).")
@catalog_format_option
@cube_options
def cmd(cube, catalog, masks, reference, sources, summary, sources_out, output, contsub_cube, method,
        degree, median_width, max_iter, tol, snr_min, skysub, catalog_format, **kwargs):
    """Cross-correlation spectra (AutoSpec's XCOR, made sound) for every CATALOG object whose
    Source file holds the reference spectrum; others get a status in the summary."""
    if output is not None and (sources or summary or sources_out):
        raise click.UsageError("-o/--output is exclusive with --source, --summary and --sources-out")
    if output is None and not (sources and summary):
        raise click.UsageError("give --source (one or more) and --summary, or -o/--output")
    cfg = XcorConfig(max_iter=max_iter, tol=tol, snr_min=snr_min, method=method, degree=degree,
                     median_width=median_width, skysub=skysub)
    res = run_xcorr(cube, catalog, masks, output=output, sources=list(sources) or None,
                    summary=summary, sources_out=sources_out, reference=reference,
                    contsub=contsub_cube, config=cfg, catalog_format=catalog_format,
                    cube_kwargs=cube_kwargs(kwargs))
    report(f"cross-correlated {res.n_ok} of {len(res.rows)} objects (reference {res.reference}); "
           f"summary in {res.summary}")
    batch_exit(res.n_ok, len(res.rows))

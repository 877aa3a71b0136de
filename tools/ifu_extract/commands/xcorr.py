"""``ifu-extract xcorr CUBE CATALOG --masks MASKS.fits --reference TAG -o OUTDIR``."""

import click

from ..catalog import read_catalog
from ..contsub import METHODS
from ..xcorr import XcorConfig, xcorr_catalog
from ._options import batch_exit, catalog_format_option, cube_kwargs, cube_options, report


@click.command("xcorr")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--masks", required=True, type=click.Path(dir_okay=False),
              help="Masks file from 'ifu-extract mask' (object, sky and neighbours' masks).")
@click.option("--reference", default="MUSE_WHITE", show_default=True, metavar="TAG",
              help="Spectrum of the Source file used as the first reference: MUSE_WHITE, an "
                   "aperture tag (MUSE_APER_1.0) or an ancillary-image tag.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Folder of the 'extract' step: XCOR and XCOR_CONTSUB spectra and IMA_XCOR maps "
                   "are added to sources/<ID>.fits; summary in xcorr.tsv.")
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
def cmd(cube, catalog, masks, reference, output, contsub_cube, method, degree, median_width,
        max_iter, tol, snr_min, skysub, catalog_format, **kwargs):
    """Cross-correlation spectra (AutoSpec's XCOR, made sound) for every CATALOG object whose
    Source file holds the reference spectrum; others get a status in xcorr.tsv."""
    table = read_catalog(catalog, catalog_format)
    cfg = XcorConfig(max_iter=max_iter, tol=tol, snr_min=snr_min, method=method, degree=degree,
                     median_width=median_width, skysub=skysub)
    rows = xcorr_catalog(cube, table, masks, output, reference, config=cfg, contsub_path=contsub_cube,
                         cube_kwargs=cube_kwargs(kwargs))
    n_ok = sum(r["STATUS"] == "ok" for r in rows)
    report(f"cross-correlated {n_ok} of {len(rows)} objects (reference {reference.upper()}); "
           f"summary in {output}/xcorr.tsv")
    batch_exit(n_ok, len(rows))

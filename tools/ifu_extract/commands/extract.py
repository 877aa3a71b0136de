"""``ifu-extract extract CUBE CATALOG --masks MASKS.fits -o OUTDIR``."""

import contextlib
import sys

import click

from ..steps.extract import ExtractOptions, run_extract
from ._options import (batch_exit, catalog_format_option, cube_kwargs, cube_name_option, cube_options,
                       report, wave_range_option, white_option)
from ._paths import OutputPath


def extraction_options(func):
    """Options shared by ``extract`` and ``run``."""
    for opt in reversed([
        click.option("--aperture", "apertures", multiple=True, type=click.FloatRange(min=0, min_open=True),
                     default=(1.0,), show_default=True,
                     help="Aperture radius, arcsec (repeat for several): MUSE_APER_<r> spectra."),
        click.option("--aperture-method", type=click.Choice(["exact", "center"]), default="exact",
                     show_default=True,
                     help="exact: pixel overlap fraction; center: spaxels whose centre is inside "
                          "(MPDAF's rule)."),
        click.option("--fwhm", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="PSF FWHM, arcsec, for MUSE_PSF [default: the cube's FSF keywords, else "
                          "fitted on the field's stars, else --fwhm-fallback; without any, MUSE_PSF "
                          "is not computed]."),
        click.option("--fwhm-fallback", "fallback_fwhm", type=click.FloatRange(min=0, min_open=True),
                     default=None, metavar="FWHM",
                     help="PSF FWHM, arcsec, used only when the cube has no FSF keywords and no "
                          "star could be fitted (PSFSRC = 'fallback', said in NOTES); --fwhm and "
                          "the cube's own PSF win over it."),
        click.option("--beta", type=click.FloatRange(min=1, min_open=True), default=None,
                     help="Moffat beta of the PSF [default: FSF keywords, else 2.8]."),
        click.option("--psf-kind", type=click.Choice(["moffat", "gaussian"]), default="moffat",
                     show_default=True, help="PSF profile for a given --fwhm."),
        click.option("--psf-radius", type=click.FloatRange(min=0), default=2.0, show_default=True,
                     help="MUSE_PSF uses the object mask plus a disk of this many FWHM."),
        click.option("--skysub/--no-skysub", default=True, show_default=True,
                     help="Local sky (MUSE_SKY) from the sky mask and *_SKYSUB spectra."),
        click.option("--image", "weight_images", multiple=True, metavar="TAG=FILE",
                     help="Ancillary image (FITS with WCS) used as extraction weights; resampled to "
                          "the cube grid; spectrum and stamp stored under TAG. Repeatable."),
        click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
                     help="Worker processes (Galaxy passes GALAXY_SLOTS)."),
        click.option("--resume", is_flag=True,
                     help="Keep Source files already written for this cube; extract the rest."),
    ]):
        func = opt(func)
    return func


@contextlib.contextmanager
def _progress_bar(total: int):
    """A progress bar on stderr for *total* objects; yields its update function."""
    with click.progressbar(length=total, label="extracting", file=sys.stderr) as bar:
        yield bar.update


@click.command("extract")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--masks", required=True, type=click.Path(dir_okay=False),
              help="Masks file from 'ifu-extract mask'.")
@click.option("-o", "--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder: sources/<ID>.fits (MPDAF Source layout) and summary.tsv.")
@extraction_options
@click.option("--marz", type=OutputPath(dir_okay=False), default=None,
              help="Also write the best spectrum of every object to this MARZ FITS file.")
@click.option("--line-images", type=click.Path(dir_okay=False), default=None,
              help="The emitters' narrow-band images from 'detect --line-scan --line-images': the "
                   "catalogue's line emitters get a MUSE_NB spectrum weighted by their image.")
@white_option
@wave_range_option
@catalog_format_option
@cube_options
@cube_name_option
def cmd(cube, catalog, masks, output, apertures, aperture_method, fwhm, fallback_fwhm, beta, psf_kind, psf_radius,
        skysub, weight_images, threads, resume, marz, line_images, white_path, wave_range,
        catalog_format, **kwargs):
    """Extract spectra of every CATALOG object: MUSE_TOT, MUSE_APER_<r>, MUSE_WHITE, MUSE_PSF,
    MUSE_SKY and *_SKYSUB, with variance, into one MPDAF Source file per object."""
    options = ExtractOptions(apertures=apertures, aperture_method=aperture_method, fwhm=fwhm,
                             fallback_fwhm=fallback_fwhm,
                             beta=beta, psf_kind=psf_kind, psf_radius=psf_radius, skysub=skysub,
                             weight_images=weight_images, threads=threads, resume=resume,
                             wave_range=wave_range, catalog_format=catalog_format,
                             cube_kwargs=cube_kwargs(kwargs))
    show = sys.stderr.isatty() and not (click.get_current_context().find_root().obj or {}).get("quiet")
    result = run_extract(cube, catalog, masks, output, options, white=white_path, marz=marz,
                         line_images=line_images, progress=_progress_bar if show else None)
    report(f"wrote {result.n_ok} Source files of {len(result.rows)} objects to {output}/sources; "
           f"summary in {output}/summary.tsv")
    batch_exit(result.n_ok, len(result.rows))

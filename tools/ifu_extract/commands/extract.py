"""``ifu-extract extract CUBE CATALOG --masks MASKS.fits -o OUTDIR``."""

import contextlib
import logging
import sys

import click

from ..catalog import read_catalog
from ..cubeio import open_cube
from ..extraction import extract_catalog
from ..extract import ExtractConfig
from ..psf import catalog_candidates, resolve_psf
from ..psffit import psf_summary
from ..weights import load_weight_images
from ._options import (batch_exit, catalog_format_option, cube_kwargs, cube_options, report,
                       wave_range_option, white_option)

log = logging.getLogger("ifu_extract")

#: The note of every object (summary.tsv NOTES, Source NOTES) when no PSF could be found.
NO_PSF_NOTE = "no PSF: MUSE_PSF not computed (give --fwhm)"


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
                          "fitted on the field's stars; without any, MUSE_PSF is not computed]."),
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


def build_config(cube, apertures, aperture_method, fwhm, beta, psf_kind, psf_radius, skysub,
                 table=None, details: dict | None = None) -> ExtractConfig:
    """ExtractConfig from the command-line values (PSF resolved against the cube and, for the
    stars it may be fitted on, the catalogue *table*: :func:`ifu_extract.psf.resolve_psf`)."""
    psf = resolve_psf(cube, fwhm=fwhm, beta=beta, kind=psf_kind,
                      candidates=catalog_candidates(cube, table), details=details)
    return ExtractConfig(apertures=tuple(sorted(set(apertures))), aperture_method=aperture_method,
                         psf=psf, psf_radius_fwhm=psf_radius, skysub=skysub, white=True,
                         psf_missing="" if psf is not None else NO_PSF_NOTE)


@click.command("extract")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--masks", required=True, type=click.Path(dir_okay=False),
              help="Masks file from 'ifu-extract mask'.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output folder: sources/<ID>.fits (MPDAF Source layout) and summary.tsv.")
@extraction_options
@click.option("--marz", type=click.Path(dir_okay=False), default=None,
              help="Also write the best spectrum of every object to this MARZ FITS file.")
@white_option
@wave_range_option
@catalog_format_option
@cube_options
def cmd(cube, catalog, masks, output, apertures, aperture_method, fwhm, beta, psf_kind, psf_radius,
        skysub, weight_images, threads, resume, marz, white_path, wave_range, catalog_format, **kwargs):
    """Extract spectra of every CATALOG object: MUSE_TOT, MUSE_APER_<r>, MUSE_WHITE, MUSE_PSF,
    MUSE_SKY and *_SKYSUB, with variance, into one MPDAF Source file per object."""
    ck = cube_kwargs(kwargs)
    table = read_catalog(catalog, catalog_format)
    with open_cube(cube, **ck) as c:
        details = {}
        cfg = build_config(c, apertures, aperture_method, fwhm, beta, psf_kind, psf_radius, skysub,
                           table, details)
        weights = load_weight_images(weight_images, c)
        if cfg.psf is None:
            log.warning(f"warning: MUSE_PSF not computed: {details.get('message', 'no PSF')}")
        elif "fit" in details:
            report(psf_summary(details["fit"], c.wave))
    show = sys.stderr.isatty() and not (click.get_current_context().find_root().obj or {}).get("quiet")
    with click.progressbar(length=len(table), label="extracting", file=sys.stderr) if show \
            else contextlib.nullcontext() as bar:
        rows = extract_catalog(cube, table, masks, output, cfg, cube_kwargs=ck,
                               wave_range=tuple(wave_range) if wave_range else None, threads=threads,
                               resume=resume, weight_images=weights,
                               white_path=None if wave_range else white_path,
                               progress=bar.update if bar is not None else None)
    n_ok = sum(bool(r["FILE"]) for r in rows)
    if marz:
        from ..marz import marz_from_outdir

        marz_from_outdir(output, marz)
    report(f"wrote {n_ok} Source files of {len(rows)} objects to {output}/sources; summary in "
           f"{output}/summary.tsv")
    batch_exit(n_ok, len(rows))

"""The ``extract`` step: the spectra of every catalogue object into MPDAF Source files."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import read_catalog
from ..catalog_extraction import extract_catalog
from ..cubeio import open_cube
from ..estimators import ExtractConfig
from ..marz import marz_from_outdir
from ..psf import FALLBACK_NOTE, PSFModel, catalog_candidates, fallback_summary, resolve_psf
from ..psffit import psf_summary
from ..weights import load_weight_images

__all__ = ["NO_PSF_NOTE", "psf_note", "ExtractOptions", "ExtractResult", "build_config", "run_extract"]

log = logging.getLogger("ifu_extract")

#: The note of every object (summary.tsv NOTES, Source NOTES) when no PSF could be found.
NO_PSF_NOTE = "no PSF: MUSE_PSF not computed (give --fwhm or --fwhm-fallback)"


@dataclass
class ExtractOptions:
    """What the ``extract`` step is asked for (units as in the estimators).

    Attributes
    ----------
    apertures : tuple of float
        Aperture radii, arcsec.
    aperture_method : {"exact", "center"}
    fwhm : float or None
        PSF FWHM, arcsec (None: the cube's FSF keywords, else fitted on the field's stars, else
        ``fallback_fwhm``).
    fallback_fwhm : float or None
        PSF FWHM, arcsec, used only when the cube has no FSF keywords and no star could be fitted.
    beta : float or None
        Moffat beta.
    psf_kind : {"moffat", "gaussian"}
    psf_radius : float
        MUSE_PSF uses the object mask plus a disk of this many FWHM.
    skysub : bool
    weight_images : tuple of str
        ``TAG=FILE`` ancillary images used as weights.
    threads : int
        Worker processes.
    resume : bool
    wave_range : (float, float) or None
        Angstrom.
    catalog_format : str
    cube_kwargs : dict
    psf : PSFModel or None
        A PSF already resolved (``run`` resolves it once for every step); it wins over
        ``fwhm``, ``beta`` and ``psf_kind``.
    """

    apertures: tuple = (1.0,)
    aperture_method: str = "exact"
    fwhm: float | None = None
    fallback_fwhm: float | None = None
    beta: float | None = None
    psf_kind: str = "moffat"
    psf_radius: float = 2.0
    skysub: bool = True
    weight_images: tuple = ()
    threads: int = 1
    resume: bool = False
    wave_range: tuple | None = None
    catalog_format: str = "auto"
    cube_kwargs: dict = field(default_factory=dict)
    psf: PSFModel | None = None


@dataclass
class ExtractResult:
    """What :func:`run_extract` wrote.

    Attributes
    ----------
    outdir : pathlib.Path
        ``sources/<ID>.fits`` and ``summary.tsv`` inside.
    rows : list of dict
        Summary rows, catalogue order.
    marz : pathlib.Path or None
    """

    outdir: Path
    rows: list
    marz: Path | None = None

    @property
    def n_ok(self) -> int:
        """Objects with a Source file."""
        return sum(bool(r["FILE"]) for r in self.rows)

    @property
    def summary(self) -> Path:
        return self.outdir / "summary.tsv"


def build_config(cube, apertures, aperture_method, fwhm, beta, psf_kind, psf_radius, skysub,
                 table=None, details: dict | None = None, psf: PSFModel | None = None,
                 fallback_fwhm: float | None = None) -> ExtractConfig:
    """ExtractConfig from the requested values (PSF resolved against the cube and, for the
    stars it may be fitted on, the catalogue *table*: :func:`ifu_extract.psf.resolve_psf`;
    a *psf* already resolved is used as it is).  Every object's notes say when there is no PSF,
    or when it is the fallback."""
    if psf is None:
        psf = resolve_psf(cube, fwhm=fwhm, beta=beta, kind=psf_kind, fallback_fwhm=fallback_fwhm,
                          candidates=catalog_candidates(cube, table), details=details)
    return ExtractConfig(apertures=tuple(sorted(set(apertures))), aperture_method=aperture_method,
                         psf=psf, psf_radius_fwhm=psf_radius, skysub=skysub, white=True,
                         psf_note=psf_note(psf))


def psf_note(psf: PSFModel | None) -> str:
    """What every object's NOTES say of *psf*: why there is none, that it is the fallback, or nothing."""
    if psf is None:
        return NO_PSF_NOTE
    if psf.source == "fallback":
        return FALLBACK_NOTE.format(fwhm=float(psf.fwhm_coeffs[-1]))
    return ""


def run_extract(cube, catalog, masks, outdir, options: ExtractOptions | None = None, *,
                white=None, marz=None, line_images=None, progress=None) -> ExtractResult:
    """Extract every object of *catalog* from *cube* with the masks of *masks* into *outdir*.

    Parameters
    ----------
    cube, catalog, masks : str or os.PathLike
        The cube, the catalogue and the masks file of ``mask`` on this cube.
    outdir : str or os.PathLike
        Output folder: ``sources/<ID>.fits`` (MPDAF Source layout) and ``summary.tsv``.
    options : ExtractOptions
    white : str or os.PathLike, optional
        White-light image of this cube (ignored with a wavelength range, which asks for the
        band's own image).
    marz : str or os.PathLike, optional
        Also write the best spectrum of every object to this MARZ FITS file.
    line_images : str or os.PathLike, optional
        The emitters' narrow-band images of the line scan (``detect --line-images``): the
        catalogue's line emitters (``ORIGIN = linescan``) get their ``MUSE_NB`` spectrum, the
        optimal extraction weighted by their image.
    progress : callable, optional
        ``progress(n_objects)`` gives a context manager yielding a function that is called
        with the number of objects finished, as they finish (a progress bar).
    """
    opt = options or ExtractOptions()
    table = read_catalog(catalog, opt.catalog_format)
    with open_cube(cube, **opt.cube_kwargs) as c:
        details = {}
        cfg = build_config(c, opt.apertures, opt.aperture_method, opt.fwhm, opt.beta, opt.psf_kind,
                           opt.psf_radius, opt.skysub, table, details, psf=opt.psf,
                           fallback_fwhm=opt.fallback_fwhm)
        weights = load_weight_images(opt.weight_images, c)
        if cfg.psf is None:
            log.warning(f"warning: MUSE_PSF not computed: {details.get('message', 'no PSF')}")
        elif "fit" in details:
            log.info(psf_summary(details["fit"], c.wave))
        elif opt.psf is None and cfg.psf.source == "fallback":  # run says it once for every step
            log.info(fallback_summary(cfg.psf))
    wave_range = tuple(opt.wave_range) if opt.wave_range else None
    with progress(len(table)) if progress else contextlib.nullcontext() as update:
        rows = extract_catalog(cube, table, masks, outdir, cfg, cube_kwargs=opt.cube_kwargs,
                               wave_range=wave_range, threads=opt.threads, resume=opt.resume,
                               weight_images=weights, white_path=None if wave_range else white,
                               progress=update)
    if line_images is not None:
        from ..emitters import add_emitter_spectra, read_emitter_images

        images = read_emitter_images(line_images)
        with open_cube(cube, **opt.cube_kwargs) as c:
            n = add_emitter_spectra(outdir, c, table, images, psf=cfg.psf, wave_range=wave_range)
        log.info(f"      MUSE_NB spectra for {n} line emitters")
    marz_path = marz_from_outdir(outdir, marz) if marz else None
    return ExtractResult(Path(outdir), rows, marz_path)

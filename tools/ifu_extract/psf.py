"""The PSF of a cube, decided in one place: given by the user, from header keywords, fitted
on the cube's stars (:mod:`ifu_extract.psffit`), or the user's fallback FWHM when the cube gives
none: :func:`resolve_psf`, with its named defaults.

A :class:`PSFModel` gives FWHM(λ) in arcsec and β(λ) for a circular Moffat (or a Gaussian), and
renders normalised PSF images on a pixel grid (:meth:`PSFModel.stamps`), integrated over
spaxels, for optimal extraction and deblending.  The model and the profiles are
:mod:`ifu_extract.psfmodel` (which the fits use too, so that the policy can call them without an
import cycle); this module is the PSF's public face and gives them under their names here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, ParameterError
from .psffit import fit_psf_from_stars
from .psffit import fit_psf_on_star as _fit_on_star
from .psfmodel import (DEFAULT_BETA, SUPERSAMPLE, PSFModel, fsf_cards, gaussian_image, moffat_alpha, moffat_image,
                       moffat_images, muse_fsf_curves, muse_fsf_keywords, subpixel_grid)
from .wcsutil import world_to_pixel

if TYPE_CHECKING:
    from .cubeio import Cube

__all__ = ["PSFModel", "DEFAULT_BETA", "CIRCLE_FWHM", "FILTER_FWHM", "resolve_fwhm", "SUPERSAMPLE",
           "subpixel_grid", "moffat_alpha", "moffat_image", "moffat_images", "psf_from_cube",
           "muse_fsf_keywords", "muse_fsf_curves", "fit_psf_on_star", "resolve_psf", "catalog_candidates",
           "fsf_cards", "gaussian_image", "PSF_PRIORITY", "fallback_summary", "FALLBACK_NOTE"]


log = logging.getLogger("ifu_extract")

# The named defaults of the PSF policy (values of 5a40b32: outputs are unchanged).
#: FWHM, arcsec, of the PSF circles of the masks when no PSF is given, read or fitted.
CIRCLE_FWHM = 0.8
#: FWHM, arcsec, of the line scan's spatial filter when no PSF model is known.
FILTER_FWHM = 0.7


def psf_from_cube(cube, *, fwhm: float | None = None, beta: float | None = None,
                  kind: str = "moffat", field: int | None = None) -> PSFModel | None:
    """The PSF of *cube*: given values win, else the MUSE FSF header keywords, else None.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    fwhm : float, optional
        Constant FWHM, arcsec (overrides the header).
    beta : float, optional
        Moffat β (overrides the header's).
    kind : str
        ``"moffat"`` or ``"gaussian"`` for a given FWHM.
    field : int, optional
        FSF field number for mosaics (default: the first field in the header).
    """
    if fwhm is not None:
        if fwhm <= 0:
            raise ParameterError("{fwhm}", f"{fwhm} is not a positive FWHM", "give the PSF FWHM in arcsec",
                                 params=("fwhm",))
        return PSFModel(kind, (float(fwhm),), (float(beta or DEFAULT_BETA),), "given")
    found = muse_fsf_keywords(cube)
    if found is None:
        return None
    hdr, fields = found
    field = field if field is not None else (fields[0] if fields else None)
    # Sample the model and fit a low-order polynomial in Angstrom: one representation for all.
    wave = np.linspace(cube.wave[0], cube.wave[-1], 32)
    try:
        fw, be = muse_fsf_curves(hdr, field, wave, cube.pixscale)
    except Exception as exc:  # noqa: BLE001 - mpdaf raises ValueError/KeyError variants
        raise InputError(cube.path, f"has FSF keywords mpdaf cannot read ({exc})",
                         "give the PSF with --fwhm/--beta") from None
    if beta is not None:
        be = np.full_like(wave, float(beta))
    return PSFModel("moffat", tuple(np.polyfit(wave, fw, 3)), tuple(np.polyfit(wave, be, 3)), "header")


def fit_psf_on_star(cube: Cube, x: float, y: float, *, kind: str = "moffat", nbins: int = 10,
                    half_size: int | None = None) -> PSFModel:
    """FWHM(λ) and β fitted on the star at cube pixel (*x*, *y*): see
    :func:`ifu_extract.psffit.fit_psf_on_star` (this is its home for existing callers)."""
    return _fit_on_star(cube, x, y, kind=kind, nbins=nbins, half_size=half_size)


# ------------------------------------------------------------------------------ the one policy
#: Where a PSF may come from, in order of priority (see :func:`resolve_psf`).
PSF_PRIORITY = ("given", "header", "star", "fitted", "fallback")

#: What every report of a fallback PSF says (Source and summary NOTES, psf.fits, the log).
FALLBACK_NOTE = "PSF: fallback FWHM {fwhm:g} arcsec (--fwhm-fallback: no FSF keywords, no star fitted)"

_FITTED: dict = {}  # in-process cache of fitted PSFs: run's steps share one fit


def resolve_psf(cube: Cube, *, fwhm: float | None = None, beta: float | None = None,
                fwhm_red: float | None = None, kind: str = "moffat", star: tuple | None = None,
                candidates=None, fallback_fwhm: float | None = None, required: bool = False,
                details: dict | None = None) -> PSFModel | None:
    """The PSF of *cube*, decided in one place for mask, extract, deblend and the line scan.

    Priority: the user's FWHM (``--fwhm``, ``--fwhm-red``, ``--beta``) > the cube's MUSE FSF
    keywords > a named star (``--psf-star``) > the PSF fitted on the field's own point-like
    stars (:func:`ifu_extract.psffit.fit_psf_from_stars`) > the user's fallback FWHM
    (``--fwhm-fallback``: a PSF for cubes that give none, which never replaces one they give) > none.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    fwhm : float, optional
        Given FWHM, arcsec (at the first channel when *fwhm_red* is given).
    beta : float, optional
        Moffat β (default: the header's, else the fitted one, else :data:`DEFAULT_BETA` with a given FWHM).
    fwhm_red : float, optional
        Given FWHM at the last channel (linear in between).
    kind : {"moffat", "gaussian"}
        Profile of a given FWHM or of the fit.
    star : (float, float), optional
        0-based cube pixel position of a star to fit on (before the automatic search).
    candidates : sequence of (id, x, y), optional
        Catalogue objects (0-based cube pixels) among which stars are looked for; default:
        detections on the white light.
    fallback_fwhm : float, optional
        FWHM, arcsec, of the PSF (*kind*, *beta* else :data:`DEFAULT_BETA`) used only when the
        cube has no FSF keywords and no star could be fitted; its source is ``"fallback"``.
    required : bool
        Raise when no PSF can be found (deblending); else warn in one line and return None.
    details : dict, optional
        Filled with ``"fit"`` (the :class:`~ifu_extract.psffit.PSFFit`) when the PSF was fitted,
        and ``"message"`` (the one-line error: why no PSF was read or fitted) when none was
        found or the fallback was used, with ``"reason"`` (that error's problem alone, without
        the file's path) for the fallback.

    Returns
    -------
    PSFModel or None

    Raises
    ------
    InputError
        Bad given values, unreadable FSF keywords, a failed *star* fit, or (with *required*) no PSF:
        one line naming ``--fwhm``.
    """
    given = (("fwhm", fwhm), ("fwhm_red", fwhm_red)) if fwhm is not None else ()
    for name, value in (*given, ("fallback_fwhm", fallback_fwhm)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ParameterError("{%s}" % name, f"{value} is not a positive FWHM",
                                 "give the PSF FWHM in arcsec", params=(name,))
    if fwhm is not None:
        if fwhm_red is None:
            return psf_from_cube(cube, fwhm=fwhm, beta=beta, kind=kind)
        w0, w1 = float(cube.wave[0]), float(cube.wave[-1])
        slope = (float(fwhm_red) - float(fwhm)) / (w1 - w0) if w1 != w0 else 0.0
        coeffs = (slope, float(fwhm) - slope * w0) if w1 != w0 else (float(fwhm),)
        return PSFModel(kind, coeffs, (float(beta if beta is not None else DEFAULT_BETA),), "given")
    model = psf_from_cube(cube, beta=beta)
    if model is not None:
        return model
    if star is not None:
        return fit_psf_on_star(cube, *star, kind=kind)
    key = (str(cube.path), _stamp(cube), kind,
           None if candidates is None else tuple((str(i), round(float(x), 3), round(float(y), 3))
                                                 for i, x, y in candidates))
    if key not in _FITTED:
        try:
            _FITTED[key] = fit_psf_from_stars(cube, candidates, kind=kind)
        except InputError as exc:
            _FITTED[key] = InputError(exc.path, "has no MUSE FSF keywords and " + exc.problem.removeprefix("has "),
                                      exc.fix)
    found = _FITTED[key]
    if isinstance(found, InputError):
        if details is not None:
            details["message"] = found.oneline()
        if fallback_fwhm is not None:
            if details is not None:
                details["reason"] = " ".join(found.problem.split())
            return PSFModel(kind, (float(fallback_fwhm),),
                            (float(beta if beta is not None else DEFAULT_BETA),), "fallback")
        if required:
            raise found
        return None
    if details is not None:
        details["fit"] = found
    if beta is not None:  # a given β wins over the fitted one (the FWHM stays the fitted one)
        return PSFModel(found.model.kind, found.model.fwhm_coeffs, (float(beta),), "fitted",
                        found.model.lbrange)
    return found.model


def _stamp(cube) -> tuple:
    try:
        st = cube.path.stat()
        return (st.st_size, st.st_mtime_ns, cube.data_ext, cube.var_ext)
    except (OSError, AttributeError):
        return (id(cube),)


def catalog_candidates(cube: Cube, table) -> list | None:
    """(id, x, y) of a catalogue's objects on *cube* (0-based pixels), for :func:`resolve_psf`."""
    if table is None or len(table) == 0:
        return None
    x, y = world_to_pixel(cube.wcs, np.asarray(table["RA"], float), np.asarray(table["DEC"], float))
    return [(str(i), float(a), float(b)) for i, a, b in zip(table["ID"], np.atleast_1d(x), np.atleast_1d(y))]


def fallback_summary(model: PSFModel) -> str:
    """The fallback PSF as ``ifu-extract info`` prints a PSF: one line saying it is the fallback."""
    beta = f", beta {float(model.beta_coeffs[-1]):.2f}" if model.kind == "moffat" else ""
    return (f"psf         fallback ({model.kind}): FWHM {float(model.fwhm_coeffs[-1]):.3f} arcsec"
            f"{beta} at every wavelength, from --fwhm-fallback: the cube has no FSF keywords and "
            "no star could be fitted")


def resolve_fwhm(cube: Cube, fwhm: float | None = None, candidates=None,
                 fallback_fwhm: float | None = None) -> tuple[float, str]:
    """The PSF FWHM for the circle fallback, arcsec, and where it came from.

    Parameters
    ----------
    cube : Cube
    fwhm : float, optional
        Given FWHM, arcsec; wins over the header.
    candidates : sequence of (id, x, y), optional
        Catalogue objects (0-based cube pixels) among which to look for stars.
    fallback_fwhm : float, optional
        FWHM, arcsec, when the cube has no FSF keywords and no star could be fitted.

    Returns
    -------
    fwhm : float
        The PSF of :func:`ifu_extract.psf.resolve_psf` (given, the cube's FSF keywords, fitted
        on the field's stars, or *fallback_fwhm*) at the median wavelength; else :data:`CIRCLE_FWHM`.
    source : str
        ``"given"``, ``"header"``, ``"fitted"``, ``"fallback"`` or ``"default"``.
    """
    if fwhm is not None:
        if not np.isfinite(fwhm) or fwhm <= 0:
            raise ParameterError("{fwhm}", f"{fwhm} is not a positive FWHM", "give the PSF FWHM in arcsec",
                                 params=("fwhm",))
        return float(fwhm), "given"
    details = {}
    try:
        model = resolve_psf(cube, candidates=candidates, fallback_fwhm=fallback_fwhm, details=details)
    except InputError as exc:
        details["message"] = exc.oneline()
        model = None
    if model is not None:
        value = float(model.fwhm(np.median(cube.wave)))
        if np.isfinite(value) and value > 0:
            return value, model.source
    if "message" in details:
        log.warning(f"warning: {details['message']}; using FWHM = {CIRCLE_FWHM} arcsec for PSF circles")
    return CIRCLE_FWHM, "default"

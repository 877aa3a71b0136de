"""WCS helpers: celestial and spectral axes, pixel scales, shifted (cut-out) WCS.

Axis order follows numpy: a cube is ``(n_wave, ny, nx)``, an image ``(ny, nx)``; pixel
coordinates are 0-based with ``x`` the fast axis, as in SEP and photutils.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = [
    "WCS_KEY",
    "wcs_cards",
    "quiet_wcs",
    "celestial_from_header",
    "pixel_scale_arcsec",
    "shifted_wcs",
    "world_to_pixel",
    "pixel_to_world",
    "wave_axis",
    "same_grid",
]


#: Header keywords that describe a WCS (copied between headers, never anything else).
WCS_KEY = re.compile(r"^(WCSAXES|CTYPE\d|CUNIT\d|CRPIX\d|CRVAL\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|"
                     r"PV\d_\d+|CSYER\d|CRDER\d|RADESYS|RADECSYS|EQUINOX|EPOCH|LONPOLE|LATPOLE|"
                     r"SPECSYS|RESTFRQ|RESTWAV|MJD-OBS|DATE-OBS)$")


def wcs_cards(*headers) -> fits.Header:
    """A header of the WCS cards of *headers* (first header wins), copied, never shared.

    Deprecated aliases (RADECSYS, EPOCH) are dropped when the modern keyword is present, so that
    cards from a primary and an extension header never conflict.
    """
    out = fits.Header()
    for src in headers:
        if src is None:
            continue
        for card in src.cards:
            if WCS_KEY.match(card.keyword) and card.keyword not in out:
                out.append((card.keyword, card.value, card.comment))
    for new, old in (("RADESYS", "RADECSYS"), ("EQUINOX", "EPOCH")):
        if new in out and old in out:
            del out[old]
    return out


def quiet_wcs(header, **kwargs) -> WCS:
    """``astropy.wcs.WCS(header)`` without the FITSFixedWarning noise of pipeline headers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, **kwargs)


def celestial_from_header(header: fits.Header) -> WCS | None:
    """The 2-D celestial WCS of *header*, or None when it has none."""
    try:
        wcs = quiet_wcs(header)
    except Exception:  # noqa: BLE001 - astropy raises many kinds on broken headers
        return None
    if not wcs.has_celestial:
        return None
    cel = wcs.celestial
    # A "celestial" WCS with an identity matrix and no reference value is no WCS at all.
    if np.all(cel.wcs.crval == 0) and not cel.wcs.ctype[0].strip():
        return None
    return cel


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean spaxel side of a celestial WCS, arcsec."""
    scales = wcs.celestial.proj_plane_pixel_scales()
    return float(np.sqrt(scales[0].to_value(u.arcsec) * scales[1].to_value(u.arcsec)))


def shifted_wcs(wcs: WCS, y0: int, x0: int) -> WCS:
    """The WCS of a window whose pixel (0, 0) is pixel (*y0*, *x0*) of *wcs*.

    Works for windows that start outside the parent grid (negative offsets), which
    ``WCS.slice`` does not allow: partial cut-outs near an edge keep an exact WCS.
    """
    out = wcs.deepcopy()
    out.wcs.crpix[0] -= x0
    out.wcs.crpix[1] -= y0
    return out


def world_to_pixel(wcs: WCS, ra, dec):
    """(x, y) 0-based pixel positions of RA/Dec in degrees (arrays or scalars)."""
    x, y = wcs.celestial.all_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0)
    if np.ndim(ra) == 0:
        return float(x[0]), float(y[0])
    return x, y


def pixel_to_world(wcs: WCS, x, y):
    """(RA, Dec) in degrees of 0-based pixel positions."""
    ra, dec = wcs.celestial.all_pix2world(np.atleast_1d(x), np.atleast_1d(y), 0)
    if np.ndim(x) == 0:
        return float(ra[0]), float(dec[0])
    return ra, dec


def wave_axis(header: fits.Header, nwave: int) -> tuple[np.ndarray, str]:
    """Wavelengths of the spectral axis of a cube header, in Angstrom, and 'air' or 'vacuum'.

    Linear (``CD3_3``/``CDELT3``) and logarithmic (``WAVE-LOG``, MaNGA) axes are read through
    astropy's spectral WCS; a frequency or velocity axis is refused by the caller.
    """
    step_key = "CD3_3" if "CD3_3" in header else ("CDELT3" if "CDELT3" in header else None)
    if step_key is not None and nwave > 1:
        step = header[step_key]
        if not isinstance(step, (int, float)) or not np.isfinite(step) or step == 0:
            # wcslib would read a zero CD3_3 as a 1-unit step: refuse it instead.
            raise ValueError(f"{step_key} = {step!r} is not a wavelength step")
    wcs = quiet_wcs(header)
    if wcs.naxis < 3 or not wcs.has_spectral:
        # Some cubes carry only CRVAL3/CDELT3 without CTYPE3: read them as a linear axis.
        if "CRVAL3" in header and ("CDELT3" in header or "CD3_3" in header):
            step = header.get("CD3_3", header.get("CDELT3"))
            wave = header["CRVAL3"] + (np.arange(nwave) + 1 - header.get("CRPIX3", 1.0)) * step
            unit = u.Unit(header.get("CUNIT3", "Angstrom") or "Angstrom", parse_strict="silent")
            return _to_angstrom(wave, unit), "air"
        raise ValueError("no spectral axis")
    spec = wcs.sub([wcs.wcs.spec + 1])
    wave = spec.all_pix2world(np.arange(nwave, dtype=float), 0)[0]
    ctype = spec.wcs.ctype[0].upper()
    unit = u.Unit(spec.wcs.cunit[0] or "m")
    if not ctype.startswith(("AWAV", "WAVE")):
        raise ValueError(f"spectral axis {ctype} is not a wavelength")
    medium = "air" if ctype.startswith("AWAV") else "vacuum"
    return _to_angstrom(wave, unit), medium


def _to_angstrom(wave, unit) -> np.ndarray:
    try:
        return (np.asarray(wave, dtype=float) * unit).to_value(u.AA)
    except (u.UnitConversionError, TypeError):
        return np.asarray(wave, dtype=float)


def finer_wcs(wcs: WCS, scale: int) -> WCS:
    """Celestial WCS of the grid whose pixels divide each pixel of *wcs* into ``scale x scale``
    (same tangent point and orientation; the grids share their outer edges)."""
    out = wcs.celestial.deepcopy()
    # FITS pixel p (1-based) of the fine grid has its centre at coarse p' = (p - 0.5)/scale + 0.5.
    out.wcs.crpix = [scale * (c - 0.5) + 0.5 for c in out.wcs.crpix]
    if out.wcs.has_cd():
        out.wcs.cd = out.wcs.cd / scale
    else:
        out.wcs.cdelt = [c / scale for c in out.wcs.cdelt]
    out.wcs.set()
    return out


def same_grid(wcs_a: WCS, shape_a, wcs_b: WCS, shape_b, tol_pix: float = 1e-3) -> bool:
    """True when two celestial grids coincide pixel for pixel (within *tol_pix*)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    ny, nx = shape_a
    xs = np.array([0, nx - 1, 0, nx - 1], dtype=float)
    ys = np.array([0, 0, ny - 1, ny - 1], dtype=float)
    ra, dec = wcs_a.celestial.all_pix2world(xs, ys, 0)
    xb, yb = wcs_b.celestial.all_world2pix(ra, dec, 0)
    return bool(np.all(np.abs(xb - xs) < tol_pix) and np.all(np.abs(yb - ys) < tol_pix))


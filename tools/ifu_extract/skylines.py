"""Bright night-sky emission lines and telluric absorption bands, for marking spectra.

The line list is the brightest, isolated features of the optical night sky (4000-9700 Angstrom,
the range of MUSE, KCWI and MaNGA): the [OI] and NaI airglow lines and the OH Meinel bands, with
wavelengths in standard **air** (Osterbrock et al. 1996, PASP 108, 277; 1997, PASP 109, 614;
the UVES sky atlas of Hanuschik 2003, A&A 407, 1157).  Lines closer together than a MUSE
resolution element (~2.5 Angstrom) are listed once, at the stronger component.  It is a list for
*marking* residuals on plots and masking windows, not a wavelength calibration reference.

:func:`air_to_vacuum` / :func:`vacuum_to_air` convert between the media (IAU standard, Morton
2000 and its inverse, accurate to ~1e-4 Angstrom above 2000 Angstrom), so that the same lines can
be drawn on vacuum spectra (MaNGA, SDSS) with ``medium="vacuum"``.

Examples
--------
>>> [round(line.wave, 2) for line in sky_lines(5500, 6000)]
[5577.34, 5889.95, 5895.92]
>>> round(float(air_to_vacuum(5577.338)), 2)
5578.89
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SkyLine",
    "SKY_LINES",
    "TELLURIC_BANDS",
    "MEDIA",
    "air_to_vacuum",
    "vacuum_to_air",
    "sky_lines",
    "telluric_bands",
]

#: Wavelength media a spectrum can be in.
MEDIA = ("air", "vacuum")


@dataclass(frozen=True)
class SkyLine:
    """One night-sky emission line.

    Attributes
    ----------
    wave : float
        Wavelength, Angstrom (air in :data:`SKY_LINES`; in the medium asked for in the output of
        :func:`sky_lines`).
    species : str
        ``"[OI]"``, ``"NaI"``, ``"OH"``, ``"[NI]"``.
    strong : bool
        One of the brightest lines of its region (worth a label on a plot); weaker lines still
        leave residuals in faint spectra.
    """

    wave: float
    species: str
    strong: bool = False

    @property
    def label(self) -> str:
        """Short plot label, e.g. ``"[OI] 5577"``."""
        return f"{self.species} {self.wave:.0f}"


_S, _W = True, False
#: The built-in line list, air wavelengths (Angstrom), sorted.
SKY_LINES: tuple[SkyLine, ...] = tuple(SkyLine(w, s, k) for w, s, k in (
    (5197.90, "[NI]", _W), (5200.26, "[NI]", _W),
    (5577.338, "[OI]", _S),
    (5889.950, "NaI", _S), (5895.924, "NaI", _W),
    (6300.304, "[OI]", _S), (6363.776, "[OI]", _S),
    (6533.044, "OH", _W), (6553.617, "OH", _W),
    (6863.955, "OH", _S), (6923.220, "OH", _W),
    (7276.405, "OH", _W), (7316.282, "OH", _W), (7340.885, "OH", _S),
    (7571.746, "OH", _W), (7750.640, "OH", _W), (7794.112, "OH", _W), (7821.503, "OH", _W),
    (7913.708, "OH", _S), (7964.650, "OH", _W), (7993.332, "OH", _S), (8014.059, "OH", _W),
    (8310.719, "OH", _W), (8344.602, "OH", _S), (8399.170, "OH", _S), (8430.174, "OH", _S),
    (8465.208, "OH", _W), (8493.389, "OH", _W),
    (8778.333, "OH", _W), (8791.186, "OH", _W), (8827.096, "OH", _S), (8885.850, "OH", _S),
    (8919.533, "OH", _S), (8943.395, "OH", _W), (8988.366, "OH", _W),
    (9375.961, "OH", _S), (9419.729, "OH", _W), (9439.650, "OH", _S), (9458.528, "OH", _W),
    (9502.815, "OH", _W), (9552.534, "OH", _W), (9607.726, "OH", _W),
))

#: Telluric absorption bands ``(start, end, name)``, air Angstrom: the cores that absorb more
#: than a few per cent at low airmass (approximate edges, for shading plots).
TELLURIC_BANDS: tuple[tuple[float, float, str], ...] = (
    (6864.0, 6920.0, "O2 B"),
    (7160.0, 7340.0, "H2O"),
    (7590.0, 7700.0, "O2 A"),
    (8120.0, 8340.0, "H2O"),
    (8950.0, 9800.0, "H2O"),
)


def air_to_vacuum(wave):
    """Vacuum wavelength of air wavelength(s) *wave* (Angstrom).

    Uses the inverse of the Morton (2000) formula (N. Piskunov, VALD); below 2000 Angstrom
    wavelengths are returned unchanged (air and vacuum are not distinguished there).

    Parameters
    ----------
    wave : float or array_like
        Air wavelengths, Angstrom.

    Returns
    -------
    numpy.ndarray or float
        Vacuum wavelengths, Angstrom (a float for a scalar input).
    """
    w = np.asarray(wave, dtype=float)
    s2 = (1e4 / np.where(w > 0, w, np.nan)) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (1.301065924522e2 - s2)
         + 1.599740894897e-4 / (3.892568793293e1 - s2))
    out = np.where(w >= 2000.0, w * n, w)
    return float(out) if out.ndim == 0 else out


def vacuum_to_air(wave):
    """Air wavelength of vacuum wavelength(s) *wave* (Angstrom), Morton (2000, ApJS 130, 403).

    Parameters
    ----------
    wave : float or array_like
        Vacuum wavelengths, Angstrom; below 2000 Angstrom they are returned unchanged.

    Returns
    -------
    numpy.ndarray or float
        Air wavelengths, Angstrom.
    """
    w = np.asarray(wave, dtype=float)
    s2 = (1e4 / np.where(w > 0, w, np.nan)) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    out = np.where(w >= 2000.0, w / n, w)
    return float(out) if out.ndim == 0 else out


def _check_medium(medium: str) -> str:
    medium = str(medium).strip().lower()
    if medium not in MEDIA:
        raise ValueError(f"unknown wavelength medium {medium!r} (use 'air' or 'vacuum')")
    return medium


def sky_lines(wmin: float | None = None, wmax: float | None = None, *, medium: str = "air",
              strong_only: bool = False) -> list[SkyLine]:
    """The sky lines between *wmin* and *wmax* (inclusive), in the medium of a spectrum.

    Parameters
    ----------
    wmin, wmax : float, optional
        Wavelength range, Angstrom, in *medium* (open-ended when None).
    medium : {"air", "vacuum"}
        Medium of the wavelengths given and returned.
    strong_only : bool
        Only the lines flagged ``strong``.

    Returns
    -------
    list of SkyLine
        Sorted by wavelength, with ``wave`` in *medium*.
    """
    medium = _check_medium(medium)
    out = []
    for line in SKY_LINES:
        if strong_only and not line.strong:
            continue
        w = line.wave if medium == "air" else float(air_to_vacuum(line.wave))
        if (wmin is None or w >= wmin) and (wmax is None or w <= wmax):
            out.append(SkyLine(w, line.species, line.strong))
    return out


def telluric_bands(wmin: float | None = None, wmax: float | None = None, *,
                   medium: str = "air") -> list[tuple[float, float, str]]:
    """Telluric absorption bands overlapping ``[wmin, wmax]``, clipped to it, in *medium*.

    Returns
    -------
    list of (float, float, str)
        ``(start, end, name)`` in Angstrom.
    """
    medium = _check_medium(medium)
    out = []
    for lo, hi, name in TELLURIC_BANDS:
        if medium == "vacuum":
            lo, hi = float(air_to_vacuum(lo)), float(air_to_vacuum(hi))
        lo2 = lo if wmin is None else max(lo, wmin)
        hi2 = hi if wmax is None else min(hi, wmax)
        if hi2 > lo2:
            out.append((lo2, hi2, name))
    return out

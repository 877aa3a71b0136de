"""Quick-look emission-line finder for 1-D spectra.

:func:`strongest_emission_line` gives the observed wavelength, S/N and flux of the strongest
emission feature of a spectrum with variance: the continuum (a running median, wide compared with
a line) is subtracted, the residual is cross-correlated with a Gaussian line profile weighted by
the inverse variance (the matched filter, whose S/N is that of the best-fitting line amplitude),
and the highest S/N outside the bright night-sky lines wins.  It answers "which line, where, how
significant" for a table of thousands of objects (the ``LINE_WAVE``/``LINE_SNR`` summary columns,
a redshift hint, a sanity check of a known line); it is not a line-fitting or redshift code.

Examples
--------
>>> import numpy as np
>>> wave = 7000.0 + 1.25 * np.arange(400)
>>> flux = 2.0 + 30.0 * np.exp(-0.5 * ((wave - 7300.0) / 1.2) ** 2)
>>> line = strongest_emission_line(wave, flux, np.ones_like(flux), sky=False)
>>> round(line.wave, 1), line.snr > 5
(7300.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from .contsub import fit_continuum
from .skylines import sky_lines

__all__ = ["EmissionLine", "strongest_emission_line"]

#: Gaussian sigma-to-FWHM factor.
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class EmissionLine:
    """The strongest emission feature of a spectrum.

    Attributes
    ----------
    wave : float
        Observed wavelength of the line (peak of the matched filter, interpolated between
        channels), in the spectrum's wavelength unit and medium.
    snr : float
        Matched-filter signal-to-noise ratio of the line.
    flux : float
        Continuum-subtracted flux summed within one FWHM either side of the peak, times the
        channel width (spectrum flux unit times wavelength unit).
    """

    wave: float
    snr: float
    flux: float


def strongest_emission_line(wave, flux, var, *, line_fwhm: float = 3.0,
                            continuum_width: float = 150.0, min_snr: float = 6.0,
                            sky: bool = True, medium: str = "air") -> EmissionLine | None:
    """The strongest emission line of a spectrum, or None when none reaches *min_snr*.

    Parameters
    ----------
    wave : array_like, shape (n,)
        Wavelengths of the channels, increasing (Angstrom, for the sky-line list).
    flux, var : array_like, shape (n,)
        Spectrum and its variance; non-finite values or non-positive variances are ignored.
    line_fwhm : float
        FWHM of the line profile of the matched filter, Angstrom (MUSE's resolution is about
        2.5-3 Angstrom; a broad line is still found, at a lower S/N).
    continuum_width : float
        Width of the running median that estimates the continuum, Angstrom: wide compared with a
        line, narrow compared with the continuum's features.
    min_snr : float
        Lowest matched-filter S/N that counts as a line.
    sky : bool
        Skip peaks within half a *line_fwhm* of the bright night-sky lines
        (:func:`ifu_extract.skylines.sky_lines`), where sky-subtraction residuals sit.
    medium : {"air", "vacuum"}
        Medium of *wave*, for the sky lines.

    Returns
    -------
    EmissionLine or None
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    good = np.isfinite(flux) & np.isfinite(var) & (var > 0)
    if good.sum() < 10:
        return None
    step = float(np.median(np.diff(wave)))
    if not step > 0:
        raise ValueError("wavelengths must increase")
    # The continuum: contsub's NaN-aware running median over the usable channels.
    cont = fit_continuum(np.where(good, flux, np.nan), None, wave, method="median",
                         median_width=continuum_width).continuum
    resid = np.where(good, flux - cont, 0.0)
    ivar = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)

    sigma = max(line_fwhm / _FWHM / step, 0.5)  # channels
    half = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    # Matched filter: amplitude estimate A = sum(k r / v) / sum(k^2 / v), S/N = A * sqrt(sum(k^2 / v)).
    num = np.convolve(resid * ivar, kernel[::-1], mode="same")
    den = np.convolve(ivar, (kernel ** 2)[::-1], mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(den > 0, num / np.sqrt(den), -np.inf)
    # Half a kernel at either end sees the padding, not the spectrum.
    snr[:half] = snr[-half:] = -np.inf
    # Candidates are the local maxima of the S/N; a maximum on a bright sky line (within half a
    # FWHM) is a sky residual, while a real line a few Angstrom away keeps its own maximum.
    cand = np.zeros(snr.size, dtype=bool)
    cand[1:-1] = (snr[1:-1] >= snr[:-2]) & (snr[1:-1] >= snr[2:]) & np.isfinite(snr[1:-1])
    if sky:
        for line in sky_lines(wave[0], wave[-1], medium=medium):
            cand &= np.abs(wave - line.wave) > line_fwhm / 2
    if not cand.any():
        return None
    snr_cand = np.where(cand, snr, -np.inf)
    peak = int(np.argmax(snr_cand))
    if not snr[peak] >= min_snr:
        return None

    # Sub-channel position: the vertex of the parabola through the S/N at the peak and its two
    # neighbours (the matched filter's peak is the maximum-likelihood line position).
    centre = float(wave[peak])
    if 0 < peak < wave.size - 1 and np.isfinite(snr[peak - 1]) and np.isfinite(snr[peak + 1]):
        curv = snr[peak - 1] - 2 * snr[peak] + snr[peak + 1]
        if curv < 0:
            shift = 0.5 * (snr[peak - 1] - snr[peak + 1]) / curv
            centre += float(np.clip(shift, -0.5, 0.5)) * step
    window = np.abs(wave - wave[peak]) <= line_fwhm + step / 2
    return EmissionLine(wave=centre, snr=float(snr[peak]), flux=float(resid[window].sum() * step))

"""Synthetic IFU cubes with known truth, for tests, benchmarks and the shipped test data.

A cube is the sum of sources, each a spatial profile (point source or Sérsic) times a spectrum,
convolved with a circular Moffat PSF whose FWHM varies linearly with wavelength (MUSE-like:
0.85″ in the blue to 0.60″ in the red, β = 2.8), plus Gaussian noise whose variance is written
in STAT, plus a few NaN voxels flagged in DQ.  Profiles are integrated over each spaxel
(supersampled), and normalised over the infinite plane, so a source's *spectrum* is its true
total flux per channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from scipy.signal import fftconvolve
from scipy.special import gammaincinv

# The PSF profiles live in the library (psf.py); synth builds cubes with them, never the reverse.
from .psfmodel import SUPERSAMPLE, moffat_alpha, moffat_image, moffat_images, subpixel_grid

__all__ = [
    "SynthSource",
    "Truth",
    "moffat_alpha",
    "moffat_image",
    "moffat_images",
    "sersic_image",
    "fwhm_at",
    "make_cube",
    "cube_hdulist",
    "continuum_spectrum",
    "emission_line",
]

def sersic_image(shape, x0, y0, re_pix, n=1.0, q=1.0, pa_deg=0.0, binned: bool = True) -> np.ndarray:
    """Sérsic profile integrated over spaxels, normalised to unit total flux (``binned=False``:
    its ``SUPERSAMPLE``-times finer samples, each holding its share of the flux).

    Normalised numerically on a large supersampled grid so that the truncation at the field
    edge is part of the truth (the returned image sums to < 1 when the source is cut).
    """
    bn = gammaincinv(2.0 * n, 0.5)
    ys, xs = subpixel_grid(shape, x0, y0)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    t = np.deg2rad(pa_deg)
    xr = xx * np.cos(t) + yy * np.sin(t)
    yr = -xx * np.sin(t) + yy * np.cos(t)
    r = np.sqrt(xr**2 + (yr / q) ** 2)
    prof = np.exp(-bn * ((r / re_pix) ** (1.0 / n) - 1.0))
    ny, nx = shape
    if not binned:
        big = int(np.ceil(20 * re_pix)) * 2 + 1
        yb, xb = subpixel_grid((big, big), big // 2, big // 2)
        yyb, xxb = np.meshgrid(yb, xb, indexing="ij")
        rb = np.sqrt(xxb**2 + (yyb / q) ** 2)
        total = np.exp(-bn * ((rb / re_pix) ** (1.0 / n) - 1.0)).mean() * big * big
        return prof / total / SUPERSAMPLE**2
    img = prof.reshape(ny, SUPERSAMPLE, nx, SUPERSAMPLE).mean(axis=(1, 3))
    # Total flux of the infinite profile, from a big centred grid of the same sampling.
    big = int(np.ceil(20 * re_pix)) * 2 + 1
    yb, xb = subpixel_grid((big, big), big // 2, big // 2)
    yyb, xxb = np.meshgrid(yb, xb, indexing="ij")
    rb = np.sqrt(xxb**2 + (yyb / q) ** 2)
    total = np.exp(-bn * ((rb / re_pix) ** (1.0 / n) - 1.0)).mean() * big * big
    return img / total


def fwhm_at(wave, fwhm_blue: float, fwhm_red: float, wave_blue: float, wave_red: float):
    """FWHM (arcsec) falling linearly from *fwhm_blue* at *wave_blue* to *fwhm_red*."""
    frac = (np.asarray(wave, dtype=float) - wave_blue) / (wave_red - wave_blue)
    return fwhm_blue + (fwhm_red - fwhm_blue) * frac


def continuum_spectrum(wave, level=1.0, slope=0.0, features=(), rng=None):
    """A smooth continuum ``level * (1 + slope*(λ/λ_mid - 1))`` with Gaussian absorption dips.

    *features* is a sequence of ``(centre, sigma, depth)`` in Angstrom and fractional depth.
    """
    wave = np.asarray(wave, dtype=float)
    mid = 0.5 * (wave[0] + wave[-1])
    spec = level * (1.0 + slope * (wave / mid - 1.0))
    for centre, sigma, depth in features:
        spec *= 1.0 - depth * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)
    return spec


def emission_line(wave, centre, sigma, flux):
    """Gaussian line of total *flux* (flux density × Angstrom) per channel value."""
    wave = np.asarray(wave, dtype=float)
    return flux / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)


@dataclass
class SynthSource:
    """A source to inject: position (0-based pixels), spectrum (total flux per channel)."""

    id: str
    x: float
    y: float
    spectrum: np.ndarray
    kind: str = "point"
    re_arcsec: float = 0.5
    n: float = 1.0
    q: float = 1.0
    pa_deg: float = 0.0


@dataclass
class Truth:
    """What went into a synthetic cube."""

    wave: np.ndarray
    fwhm_arcsec: np.ndarray
    beta: float
    pixscale: float
    sources: list = field(default_factory=list)
    ra: dict = field(default_factory=dict)
    dec: dict = field(default_factory=dict)
    #: Noise-free model cube, (n_wave, ny, nx), per source id (only when asked).
    models: dict = field(default_factory=dict)
    sigma: np.ndarray | None = None


def _nodes(fwhm_pix, nnodes=48):
    lo, hi = float(np.min(fwhm_pix)), float(np.max(fwhm_pix))
    if hi - lo < 1e-9:
        return np.array([lo]), np.zeros(len(fwhm_pix), int), np.zeros(len(fwhm_pix))
    nodes = np.linspace(lo, hi, nnodes)
    pos = (fwhm_pix - lo) / (hi - lo) * (nnodes - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, nnodes - 2)
    return nodes, i0, pos - i0


def _sersic_exact(shape, src: SynthSource, nodes, beta, pixscale) -> list:
    """A Sérsic profile convolved with the Moffat PSF of each FWHM node (pixels) on its
    SUPERSAMPLE-times finer sampling (analytic transform of the PSF: no truncated kernel), then
    summed into spaxels: the sky's light seen through the PSF and integrated by the spaxels,
    with no second spaxel integration of the profile."""
    from .deblend.fourier import psf_ft

    ny, nx = shape
    sup = SUPERSAMPLE
    fine = sersic_image(shape, src.x, src.y, src.re_arcsec / pixscale, src.n, src.q, src.pa_deg,
                        binned=False)
    pad = int(np.ceil(8 * max(nodes))) * sup
    big = np.zeros((ny * sup + 2 * pad, nx * sup + 2 * pad))
    big[pad:pad + ny * sup, pad:pad + nx * sup] = fine
    ft = np.fft.rfft2(big)
    k = np.hypot(np.fft.rfftfreq(big.shape[1])[None, :], np.fft.fftfreq(big.shape[0])[:, None])
    out = []
    for f in nodes:
        conv = np.fft.irfft2(ft * psf_ft("moffat", f * sup, beta, k), s=big.shape)
        conv = conv[pad:pad + ny * sup, pad:pad + nx * sup]
        out.append(conv.reshape(ny, sup, nx, sup).sum(axis=(1, 3)))
    return out


def _source_cube(src: SynthSource, shape, fwhm_pix, beta, pixscale, exact: bool = False) -> np.ndarray:
    """Spectrum × PSF-convolved profile, with the PSF interpolated between FWHM nodes
    (*exact*: extended profiles convolved on their fine sampling, :func:`_sersic_exact`)."""
    nw, ny, nx = shape
    nodes, i0, frac = _nodes(fwhm_pix)
    if src.kind == "point":
        stamps = [moffat_image((ny, nx), src.x, src.y, f, beta) for f in nodes]
    elif src.kind == "sersic" and exact:
        stamps = _sersic_exact((ny, nx), src, nodes, beta, pixscale)
    elif src.kind == "sersic":
        prof = sersic_image((ny, nx), src.x, src.y, src.re_arcsec / pixscale, src.n, src.q, src.pa_deg)
        half = int(np.ceil(4 * max(nodes))) + 2
        stamps = []
        for f in nodes:
            kern = moffat_image((2 * half + 1, 2 * half + 1), half, half, f, beta)
            stamps.append(fftconvolve(prof, kern / kern.sum(), mode="same"))
    else:
        raise ValueError(f"unknown source kind {src.kind!r}")
    stamps = np.asarray(stamps)
    if len(nodes) == 1:
        psf = np.broadcast_to(stamps[0], shape)
    else:
        psf = stamps[i0] * (1 - frac)[:, None, None] + stamps[np.minimum(i0 + 1, len(nodes) - 1)] * frac[:, None, None]
    return np.asarray(src.spectrum, dtype=float)[:, None, None] * psf


def make_cube(sources, *, shape=(200, 40, 40), wave0=4750.0, dwave=1.25, pixscale=0.2,
              ra0=150.0, dec0=2.0, fwhm=(0.85, 0.60), beta=2.8, sigma=1.0, nan_fraction=0.0,
              seed=0, keep_models=False, sky=None, exact=False):
    """Build a synthetic cube and its truth.

    Parameters
    ----------
    sources : sequence of SynthSource
    shape : (n_wave, ny, nx)
    wave0, dwave : float
        First wavelength and step, Angstrom (air, like MUSE).
    pixscale : float
        Spaxel side, arcsec.
    ra0, dec0 : float
        Sky position of the field centre, degrees.
    fwhm : (float, float)
        PSF FWHM (arcsec) at the first and last channel.
    beta : float
        Moffat β.
    sigma : float or numpy.ndarray
        Noise standard deviation per voxel: scalar, per channel ``(n_wave,)`` or full cube.
    nan_fraction : float
        Fraction of voxels set to NaN (flagged in DQ).
    seed : int
        Random seed (noise and NaN placement).
    exact : bool
        Convolve extended profiles with the PSF on their fine sampling and then integrate
        over spaxels (:func:`_sersic_exact`), as the sky does.  The default convolves the
        spaxel-integrated profile with a spaxel-integrated PSF truncated at 4 FWHM (faster;
        one spaxel of extra blur and ~1-2 % of the wings moved inwards), which is fine for
        tests of a few per cent but not for tests of model systematics.
    keep_models : bool
        Keep each source's noise-free model cube in the truth.
    sky : numpy.ndarray, optional
        Uniform sky spectrum ``(n_wave,)`` added to every spaxel.

    Returns
    -------
    data, var, dq : numpy.ndarray
        float32, float32, uint8 cubes.
    header : astropy.io.fits.Header
        WCS (RA---TAN, DEC--TAN, AWAV) and BUNIT, FSF keywords.
    truth : Truth
    """
    rng = np.random.default_rng(seed)
    nw, ny, nx = shape
    wave = wave0 + dwave * np.arange(nw)
    fwhm_arcsec = fwhm_at(wave, fwhm[0], fwhm[1], wave[0], wave[-1])
    fwhm_pix = fwhm_arcsec / pixscale
    model = np.zeros(shape, dtype=np.float64)
    truth = Truth(wave=wave, fwhm_arcsec=fwhm_arcsec, beta=beta, pixscale=pixscale)
    for src in sources:
        part = _source_cube(src, shape, fwhm_pix, beta, pixscale, exact)
        model += part
        truth.sources.append(src)
        if keep_models:
            truth.models[src.id] = part.astype(np.float32)
    if sky is not None:
        model += np.asarray(sky, dtype=float)[:, None, None]
    sigma = np.asarray(sigma, dtype=float)
    sig = np.broadcast_to(sigma[:, None, None] if sigma.ndim == 1 else sigma, shape)
    truth.sigma = sigma
    data = (model + rng.standard_normal(shape) * sig).astype(np.float32)
    var = np.array(sig**2, dtype=np.float32)
    dq = np.zeros(shape, dtype=np.uint8)
    if nan_fraction > 0:
        bad = rng.random(shape) < nan_fraction
        data[bad] = np.nan
        var[bad] = np.nan
        dq[bad] = 1
    header = _header(shape, wave0, dwave, pixscale, ra0, dec0, fwhm, beta, wave)
    from astropy.wcs import WCS

    wcs = WCS(header).celestial
    for src in sources:
        ra, dec = wcs.all_pix2world([src.x], [src.y], 0)
        truth.ra[src.id], truth.dec[src.id] = float(ra[0]), float(dec[0])
    return data, var, dq, header, truth


def _header(shape, wave0, dwave, pixscale, ra0, dec0, fwhm, beta, wave) -> fits.Header:
    nw, ny, nx = shape
    h = fits.Header()
    h["WCSAXES"] = 3
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", "AWAV"
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "Angstrom"
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = (nx + 1) / 2.0, (ny + 1) / 2.0, 1.0
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = ra0, dec0, wave0
    h["CD1_1"], h["CD1_2"] = -pixscale / 3600.0, 0.0
    h["CD2_1"], h["CD2_2"] = 0.0, pixscale / 3600.0
    h["CD3_3"] = dwave
    h["CD1_3"] = h["CD2_3"] = h["CD3_1"] = h["CD3_2"] = 0.0
    h["RADESYS"] = "ICRS"
    h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    # MUSE FSF keywords (MOFFAT1: FWHM = FWA + FWB * lambda[Angstrom]).
    fwb = (fwhm[1] - fwhm[0]) / (wave[-1] - wave[0]) if nw > 1 else 0.0
    h["FSFMODE"] = "MOFFAT1"
    h["FSF00BET"] = beta
    h["FSF00FWA"] = fwhm[0] - fwb * wave[0]
    h["FSF00FWB"] = fwb
    return h


def cube_hdulist(data, var, dq, header, *, layout="MUSE", instrument="MUSE") -> fits.HDUList:
    """Wrap arrays into an HDUList of a given layout (``MUSE``, ``MaNGA``, ``SCI/ERR``, ``primary``)."""
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = instrument
    prim.header["OBJECT"] = "synthetic field"
    for key in ("FSFMODE", "FSF00BET", "FSF00FWA", "FSF00FWB"):
        prim.header[key] = header[key]
    hdr = header.copy()
    for key in ("FSFMODE", "FSF00BET", "FSF00FWA", "FSF00FWB"):
        del hdr[key]
    if layout == "MUSE":
        return fits.HDUList([prim, fits.ImageHDU(data, hdr, name="DATA"),
                             fits.ImageHDU(var, hdr, name="STAT"), fits.ImageHDU(dq, name="DQ")])
    if layout == "MaNGA":
        with np.errstate(divide="ignore"):
            ivar = np.where(np.isfinite(var) & (var > 0), 1.0 / var, 0.0).astype(np.float32)
        mask = np.where(dq > 0, 1 << 10, 0).astype(np.int32)
        h2 = hdr.copy()
        h2["CTYPE3"] = "WAVE"
        h2["BUNIT"] = "1E-17 erg/s/cm^2/Ang/spaxel"
        return fits.HDUList([prim, fits.ImageHDU(np.nan_to_num(data), h2, name="FLUX"),
                             fits.ImageHDU(ivar, h2, name="IVAR"), fits.ImageHDU(mask, h2, name="MASK")])
    if layout == "SCI/ERR":
        return fits.HDUList([prim, fits.ImageHDU(data, hdr, name="SCI"),
                             fits.ImageHDU(np.sqrt(var).astype(np.float32), hdr, name="ERR")])
    if layout == "primary":
        p = fits.PrimaryHDU(data, hdr)
        p.header["INSTRUME"] = instrument
        return fits.HDUList([p])
    raise ValueError(f"unknown layout {layout!r}")

"""The PSF fitted on the cube's own stars, as MPDAF's FSF model (``FSFMODE = 2``).

Used when a cube has neither MUSE FSF keywords nor a FWHM given (:func:`ifu_extract.psf.resolve_psf`).

1. **Candidates**: the catalogue's positions when one is given, else SEP detections on the
   white-light image.
2. **Point-like, isolated, unsaturated**: every candidate's white-light stamp is fitted with a
   pixel-integrated circular Moffat plus a plane (STAT weights, the pixels nearer another
   candidate left out).  A star has a high S/N, no neighbour closer than
   :data:`MIN_SEPARATION`, a centre where it was expected, a Moffat β of a PSF (not the low β of
   a galaxy's wings), no flat top, and the smallest FWHM of the field: at most
   :data:`POINT_TOLERANCE` above the sharpest well-measured candidate.
3. **Across λ** (as mpdaf's ``MoffatModel2.from_starfit``): each star is fitted in
   :data:`NBANDS` wavelength bands (the band's mean image, STAT weights); β(λ) is a polynomial
   through the bands of all stars, then the bands are fitted again with β fixed on it and FWHM(λ)
   is a polynomial through them, in MPDAF's normalised wavelength.  A star whose band FWHMs do
   not follow the others' curve (a galaxy, a blend, colour-dependent shape) is dropped.
4. **Uncertainty**: the covariance of the weighted polynomial fits, scaled up by the scatter
   between stars (reduced χ² when > 1): FWHM ± error at reference wavelengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .box import Box
from .cubeinfo import format_fsf, fsf_header_info
from .detect import detect_sources
from .errors import InputError, ParameterError
from .fitsout import add_provenance, write_hdulist
from .image import band_image
from .psfmodel import DEFAULT_BETA, PSFModel, fsf_cards, gaussian_image, moffat_images
from .wcsutil import pixel_to_world

__all__ = ["StarFit", "PSFFit", "fit_psf_on_star", "fit_psf_from_stars", "find_stars", "psf_summary",
           "write_psf_product", "write_fallback_psf_product",
           "FWHM_DEGREE", "BETA_DEGREE", "NBANDS", "LBRANGE", "MIN_SNR", "MAX_STARS",
           "MIN_SEPARATION", "POINT_TOLERANCE", "STAMP_HALF"]

#: Degree of the FWHM(λ) polynomial (MUSE seeing-limited FWHM is close to linear; 2 absorbs
#: the curvature of ground-layer AO without following the noise).
FWHM_DEGREE = 2
#: Degree of the β(λ) polynomial (β is degenerate with the FWHM band by band: a constant).
BETA_DEGREE = 0
#: Wavelength bands a star is fitted in.
NBANDS = 10
#: Normalisation wavelengths of the FSF polynomials, Angstrom (mpdaf's default, MUSE's cards).
LBRANGE = (5000.0, 9000.0)
#: Minimum white-light S/N within one FWHM of a star (the FWHM then has a few per cent error
#: in each of the :data:`NBANDS` bands).
MIN_SNR = 50.0
#: Stars kept, brightest first.
MAX_STARS = 5
#: No other catalogue object or detection closer than this, arcsec.
MIN_SEPARATION = 1.5
#: A star's white-light FWHM is at most this fraction above the sharpest candidate's.
POINT_TOLERANCE = 0.12
#: Moffat β range of a PSF (a galaxy's wings give a lower β).
BETA_RANGE = (1.3, 8.0)
#: Half side of the fitted stamp, arcsec.
STAMP_HALF = 1.5
#: Band FWHMs of a star further than this many sigma (and 5 %) from the combined curve drop it.
STAR_CLIP = 4.0
#: Reference wavelengths (fractions of the cube's range) at which the FWHM error is reported.
REF_FRACTIONS = (0.0, 0.5, 1.0)


@dataclass
class StarFit:
    """One candidate star: where, how bright, and its per-band Moffat fits.

    Attributes
    ----------
    id : str
        Catalogue ID or ``"det<k>"``.
    x, y : float
        0-based cube pixels (fitted centre on the white light).
    snr : float
        White-light S/N within one FWHM of the centre.
    fwhm_white, beta_white : float
        White-light Moffat FWHM (arcsec) and β.
    status : str
        ``"used"`` or why it was not.
    wave, fwhm, fwhm_err, beta, beta_err : numpy.ndarray
        ``(n_band,)`` band centres (Angstrom), FWHM (arcsec) and β with their 1σ errors.
    """

    id: str
    x: float
    y: float
    snr: float = 0.0
    fwhm_white: float = float("nan")
    beta_white: float = float("nan")
    status: str = "candidate"
    wave: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fwhm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fwhm_err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    beta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    beta_err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Neighbours' cube pixel positions (their side of the stamp is left out of the fits).
    neighbours: list = field(default_factory=list)
    #: White-light data / model at the peak spaxel (a flat top: saturation).
    core: float = float("nan")
    #: Distance between the given and the fitted white-light centre, pixels.
    shift: float = 0.0
    #: χ² summed over the band fits of the last :func:`fit_star_bands`.
    chi2: float = 0.0
    #: Half side of the fitted stamps, spaxels (None: :data:`STAMP_HALF`).
    half_size: int | None = None


@dataclass
class PSFFit:
    """A PSF fitted on stars: the model, its uncertainty and the stars.

    Attributes
    ----------
    model : PSFModel
        ``source == "fitted"``, polynomials in MPDAF's normalised wavelength (``lbrange``).
    fwhm_cov, beta_cov : numpy.ndarray
        Covariance of the FWHM and β polynomial coefficients (``numpy.polyval`` order).
    stars : list of StarFit
        Every candidate examined, with its status.
    """

    model: PSFModel
    fwhm_cov: np.ndarray
    beta_cov: np.ndarray
    stars: list

    @property
    def used(self) -> list:
        return [s for s in self.stars if s.status == "used"]

    def _x(self, wave):
        lb1, lb2 = self.model.lbrange
        return (np.atleast_1d(np.asarray(wave, dtype=float)) - lb1) / (lb2 - lb1) - 0.5

    def fwhm_err(self, wave) -> np.ndarray:
        """1σ error of FWHM(λ), arcsec, at *wave* (Angstrom)."""
        v = np.vander(self._x(wave), len(self.model.fwhm_coeffs))
        return np.sqrt(np.einsum("ij,jk,ik->i", v, self.fwhm_cov, v))

    def beta_err(self, wave) -> np.ndarray:
        """1σ error of β(λ) at *wave* (Angstrom)."""
        v = np.vander(self._x(wave), len(self.model.beta_coeffs))
        return np.sqrt(np.einsum("ij,jk,ik->i", v, self.beta_cov, v))

    def coeff_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """1σ errors of the FWHM and β coefficients (``FSF00Fkk``, ``FSF00Bkk`` order)."""
        return np.sqrt(np.diag(self.fwhm_cov)), np.sqrt(np.diag(self.beta_cov))


# ------------------------------------------------------------------------------ one image
def _fit_image(img, ivar, px, py, scale, *, kind="moffat", beta=None, fwhm0=0.8, beta0=2.5):
    """Fit one stamp with a pixel-integrated circular Moffat (or Gaussian) plus a plane.

    Parameters
    ----------
    img, ivar : numpy.ndarray
        ``(ny, nx)`` data and inverse variance (0 where unusable).
    px, py : float
        First guess of the centre, 0-based stamp pixels.
    scale : float
        Spaxel side, arcsec.
    beta : float, optional
        Fixed β (free when None).
    fwhm0, beta0 : float
        First guesses (arcsec, β).

    Returns
    -------
    dict or None
        ``flux, flux_err, x, y, fwhm, fwhm_err`` (arcsec), ``beta, beta_err``, ``chi2``, ``dof``,
        ``core`` (data / model at the peak spaxel), ``snr`` (S/N within one FWHM); None when the fit fails.
    """
    from scipy.optimize import least_squares

    good = ivar > 0
    if good.sum() < 12:
        return None
    sw = np.sqrt(ivar)
    data = np.where(good, img, 0.0)
    shape = img.shape
    free_beta = kind == "moffat" and beta is None

    def model(p):
        if kind != "moffat":
            return gaussian_image(shape, p[1], p[2], p[3])
        return moffat_images(shape, p[1], p[2], p[3], p[4] if free_beta else beta)[0]

    # The background is a plane: stars often sit on a galaxy's halo (cluster cores).
    yy, xx = np.indices(shape, dtype=float)
    xx -= px
    yy -= py

    def background(p):
        return p[-3] + p[-2] * xx + p[-1] * yy

    def resid(p):
        return ((p[0] * model(p) + background(p) - data) * sw).ravel()

    total = float(np.sum(data))
    p0 = [max(total, 1e-30), px, py, fwhm0 / scale]
    lo = [0.0, px - 2.0, py - 2.0, 0.15 / scale]
    hi = [np.inf, px + 2.0, py + 2.0, 3.0 / scale]
    if free_beta:
        p0.append(min(max(beta0, 1.3), 9.0))
        lo.append(1.2)
        hi.append(10.0)
    p0 += [float(np.median(data[good])), 0.0, 0.0]
    lo += [-np.inf] * 3
    hi += [np.inf] * 3
    p0 = np.clip(p0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    try:
        fit = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", max_nfev=200)
    except ValueError:
        return None
    if not fit.success or fit.x[0] <= 0:
        return None
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac)
    except np.linalg.LinAlgError:
        return None
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    # S/N within one FWHM of the centre (the total flux's error is dominated by its degeneracy
    # with the background in the wings, which says nothing about how well the core is measured).
    iy, ix = np.indices(shape)
    bg = background(fit.x)
    core_ap = good & ((ix - fit.x[1]) ** 2 + (iy - fit.x[2]) ** 2 <= fit.x[3] ** 2)
    ap_var = float(np.sum(1.0 / ivar[core_ap])) if core_ap.any() else np.inf
    snr = float(np.sum((data - bg)[core_ap]) / np.sqrt(ap_var)) if ap_var > 0 else 0.0
    dof = max(int(good.sum()) - len(p0), 1)
    chi2 = float(np.sum(fit.fun**2))
    star = fit.x[0] * model(fit.x)
    ky, kx = np.unravel_index(np.argmax(np.where(good, star, -np.inf)), shape)
    core = float((img[ky, kx] - bg[ky, kx]) / star[ky, kx]) if star[ky, kx] > 0 else np.nan
    out = {"flux": fit.x[0], "flux_err": err[0], "snr": snr, "x": fit.x[1], "y": fit.x[2],
           "fwhm": fit.x[3] * scale, "fwhm_err": err[3] * scale,
           "beta": fit.x[4] if free_beta else (beta if beta is not None else np.nan),
           "beta_err": err[4] if free_beta else 0.0, "chi2": chi2, "dof": dof, "core": core}
    if not (np.isfinite(out["fwhm_err"]) and out["fwhm_err"] > 0):
        return None
    return out


def _half(cube, star) -> int:
    """Half side of *star*'s fitted stamps, spaxels."""
    return int(star.half_size or max(5, round(STAMP_HALF / cube.pixscale)))


def _neighbour_mask(box, x, y, others):
    """Stamp pixels nearer one of *others* (cube pixels) than to (x, y): left out of the fit."""
    x0, x1, y0, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d0 = (xx - x) ** 2 + (yy - y) ** 2
    near = np.zeros(d0.shape, dtype=bool)
    for ox, oy in others:
        near |= (xx - ox) ** 2 + (yy - oy) ** 2 < d0
    return near


def _band_stamp(cube, box, z0, z1, exclude):
    """Mean image of channels [z0, z1) over *box* and its inverse variance (0 = unusable)."""
    data, var = cube.window(*box, z0, z1)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.sum(np.isfinite(data), axis=0)
        img = np.nansum(data, axis=0) / np.maximum(n, 1)
        if var is not None:
            ivar = n.astype(float) ** 2 / np.nansum(np.where(np.isfinite(data), var, np.nan), axis=0)
        else:  # no STAT: uniform weights, scaled below to the robust scatter of the stamp
            ivar = np.ones(img.shape)
    ivar = np.where((n > 0) & np.isfinite(ivar) & ~exclude, ivar, 0.0)
    if var is None and (ivar > 0).any():
        ring = img[ivar > 0]
        sig = 1.4826 * np.median(np.abs(ring - np.median(ring)))
        ivar = np.where(ivar > 0, 1.0 / max(sig, 1e-30) ** 2, 0.0)
    return np.where(ivar > 0, img, 0.0), ivar


def _band_edges(cube, nbands):
    return np.linspace(0, cube.nwave, min(nbands, cube.nwave) + 1).astype(int)


def fit_star_bands(cube, star: StarFit, *, nbands: int = NBANDS, kind: str = "moffat",
                   beta_curve=None, others=(), half_size: int | None = None) -> StarFit:
    """Fit *star* in *nbands* wavelength bands; fills its ``wave, fwhm, fwhm_err, beta, beta_err``.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    star : StarFit
    nbands : int
    kind : {"moffat", "gaussian"}
    beta_curve : callable, optional
        ``β(λ)`` to hold β fixed at (second pass); free when None.
    others : sequence of (x, y)
        Neighbours' cube pixel positions (their side of the stamp is left out).
    half_size : int, optional
        Half side of the stamp, spaxels (default :data:`STAMP_HALF`).
    """
    scale = cube.pixscale
    h = int(half_size or _half(cube, star))
    box = Box.centred(star.x, star.y, h)
    exclude = _neighbour_mask(box, star.x, star.y, others)
    px, py = star.x - box[0], star.y - box[2]
    edges = _band_edges(cube, nbands)
    rows, chi2 = [], 0.0
    for z0, z1 in zip(edges[:-1], edges[1:]):
        if z1 <= z0:
            continue
        lam = float(np.mean(cube.wave[z0:z1]))
        img, ivar = _band_stamp(cube, box, z0, z1, exclude)
        beta = None if beta_curve is None or kind != "moffat" else float(beta_curve(lam))
        f0 = star.fwhm_white if np.isfinite(star.fwhm_white) else 0.8
        b0 = star.beta_white if np.isfinite(star.beta_white) else 2.5
        fit = _fit_image(img, ivar, px, py, scale, kind=kind, beta=beta, fwhm0=f0, beta0=b0)
        if fit is None or not (0.16 < fit["fwhm"] < 2.9):
            continue
        rows.append((lam, fit["fwhm"], fit["fwhm_err"], fit["beta"], fit["beta_err"]))
        chi2 += fit["chi2"]
    star.chi2 = chi2
    arr = np.array(rows, dtype=float).reshape(-1, 5)
    star.wave, star.fwhm, star.fwhm_err, star.beta, star.beta_err = arr.T
    return star


# ------------------------------------------------------------------------------ polynomials
def _norm(wave, lbrange=LBRANGE):
    return (np.asarray(wave, dtype=float) - lbrange[0]) / (lbrange[1] - lbrange[0]) - 0.5


def _wpoly(x, y, err, deg):
    """Weighted polynomial and its covariance, scaled by the reduced χ² when above 1."""
    deg = int(min(deg, max(len(x) - 1, 0)))
    w = 1.0 / np.asarray(err, dtype=float)
    if len(x) > deg + 1:
        coeffs, cov = np.polyfit(x, y, deg, w=w, cov="unscaled")
        chi2 = float(np.sum(((np.polyval(coeffs, x) - y) * w) ** 2)) / (len(x) - deg - 1)
        cov = cov * max(chi2, 1.0)
    else:
        coeffs = np.polyfit(x, y, deg, w=w)
        cov = np.diag(np.full(deg + 1, np.inf))
    return coeffs, cov


def _padded(coeffs, cov, deg):
    """*coeffs* (and *cov*) of a lower degree written with *deg* + 1 coefficients."""
    k = deg + 1 - len(coeffs)
    if k <= 0:
        return coeffs, cov
    full = np.zeros((deg + 1, deg + 1))
    full[k:, k:] = cov
    return np.concatenate([np.zeros(k), coeffs]), full


def _combine(stars, attr, deg, lbrange, clip=True):
    """Polynomial through the band values of all *stars*; drops stars off the common curve."""
    for _ in range(3):
        use = [s for s in stars if s.status == "used"]
        x = np.concatenate([_norm(s.wave, lbrange) for s in use])
        y = np.concatenate([getattr(s, attr) for s in use])
        e = np.concatenate([getattr(s, attr + "_err") for s in use])
        e = np.maximum(e, 1e-3 * np.abs(y))  # a floor: no band dominates by a vanishing error
        coeffs, cov = _wpoly(x, y, e, deg)
        if not clip or len(use) < 2:
            break
        worst, dev = None, 0.0
        for s in use:
            d = getattr(s, attr) - np.polyval(coeffs, _norm(s.wave, lbrange))
            z = float(np.median(np.abs(d) / np.maximum(getattr(s, attr + "_err"), 1e-6)))
            rel = float(np.median(np.abs(d) / getattr(s, attr)))
            if z > STAR_CLIP and rel > 0.05 and z > dev:
                worst, dev = s, z
        if worst is None:
            break
        worst.status = f"off_the_common_psf_curve ({dev:.1f} sigma)"
    return _padded(coeffs, cov, deg)


def _model_from_stars(stars, kind, fwhm_degree, lbrange, beta_poly):
    fw, fw_cov = _combine(stars, "fwhm", fwhm_degree, lbrange)
    be, be_cov = beta_poly
    model = PSFModel(kind, tuple(float(c) for c in fw), tuple(float(c) for c in be), "fitted",
                     tuple(float(v) for v in lbrange))
    return PSFFit(model, fw_cov, be_cov, stars)


def _profile_beta(cube, stars, *, nbands, kind):
    """Constant β by profile likelihood: the β minimising the χ² of all stars' band fits.

    Band by band, β is poorly constrained and its errors are correlated with its value (a low β
    gets a small error), so a weighted mean of free per-band β is biased low; the β shared by
    all bands is not.  Returns β and its 1σ error (Δχ² = 1, scaled by the reduced χ² when > 1).
    """
    from scipy.optimize import minimize_scalar

    nb = max(2, min(4, nbands))  # β needs S/N more than λ resolution: a few broad bands

    def chi2(beta):
        total = 0.0
        for s in stars:
            fit_star_bands(cube, s, nbands=nb, kind=kind, beta_curve=lambda lam: beta, others=s.neighbours)
            total += s.chi2 + (1e30 if len(s.wave) < nb else 0.0)
        return total

    best = minimize_scalar(chi2, bounds=(1.1, BETA_RANGE[1]), method="bounded",
                           options={"xatol": 0.01})
    b0, c0 = float(best.x), float(best.fun)
    d = 0.05
    curv = (chi2(b0 + d) + chi2(b0 - d) - 2.0 * c0) / d**2
    nfit = sum(len(s.fwhm) for s in stars)  # band fits, each with 7 parameters (β shared)
    dof = max(sum((2 * _half(cube, s) + 1) ** 2 for s in stars) * nb - 7 * nfit - 1, 1)
    err = np.sqrt(2.0 / curv * max(c0 / dof, 1.0)) if curv > 0 else np.inf
    return b0, float(err)


def _fit_bands_twice(cube, stars, *, nbands, kind, beta_degree, lbrange):
    """β(λ), then FWHM(λ) band by band with β fixed on it (MPDAF's ``from_starfit`` passes).

    A constant β (*beta_degree* 0) comes from :func:`_profile_beta`; a polynomial β from free
    per-band fits as mpdaf does.  Returns the β polynomial and its covariance; the stars keep the
    FWHMs of the second pass.
    """
    def bands(s, curve=None):
        fit_star_bands(cube, s, nbands=nbands, kind=kind, beta_curve=curve, others=s.neighbours)
        if len(s.wave) < 3:
            s.status = f"band_fits_failed ({len(s.wave)} of {nbands} converged)"

    if kind != "moffat":
        for s in stars:
            bands(s)
        return np.array([DEFAULT_BETA]), np.zeros((1, 1))
    if beta_degree == 0:
        b0, err = _profile_beta(cube, stars, nbands=nbands, kind=kind)
        be, be_cov = np.array([b0]), np.array([[err**2]])
    else:
        for s in stars:
            bands(s)
        if not any(s.status == "used" for s in stars):
            return np.array([DEFAULT_BETA]), np.zeros((1, 1))
        be, be_cov = _combine(stars, "beta", beta_degree, lbrange, clip=False)
    for s in stars:
        if s.status == "used":
            bands(s, lambda lam: np.polyval(be, _norm(lam, lbrange)))
    return be, be_cov


# ------------------------------------------------------------------------------ one star
def fit_psf_on_star(cube, x: float, y: float, *, kind: str = "moffat", nbins: int = NBANDS,
                    half_size: int | None = None, fwhm_degree: int = FWHM_DEGREE,
                    beta_degree: int = BETA_DEGREE, lbrange=LBRANGE, full: bool = False):
    """Fit FWHM(λ) and β(λ) on the star at cube pixel (*x*, *y*).

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    x, y : float
        0-based cube pixel position of the star.
    kind : {"moffat", "gaussian"}
    nbins : int
        Wavelength bands.
    half_size : int, optional
        Half side of the stamp, spaxels (default :data:`STAMP_HALF`).
    fwhm_degree, beta_degree : int
        Polynomial degrees in normalised wavelength.
    lbrange : (float, float)
        Normalisation wavelengths, Angstrom.
    full : bool
        Return the :class:`PSFFit` (uncertainties, band fits) instead of the model.

    Returns
    -------
    PSFModel or PSFFit

    Raises
    ------
    InputError
        The star is off the cube, too faint, or the fits fail in most bands.
    """
    if not (0 <= int(np.floor(x + 0.5)) < cube.nx and 0 <= int(np.floor(y + 0.5)) < cube.ny):
        raise ParameterError("{psf_star}", f"the star at pixel ({x:.1f}, {y:.1f}) is outside the cube",
                         "choose a star inside the field", params=("psf_star",))
    star = StarFit("star", float(x), float(y), status="used", half_size=half_size)
    _white_fit(cube, star, [], kind=kind)
    if star.status != "used":
        star.status = "used"  # a named star is fitted whatever its white-light shape
    beta_poly = _fit_bands_twice(cube, [star], nbands=nbins, kind=kind, beta_degree=beta_degree,
                                 lbrange=lbrange)
    if star.status != "used":
        raise ParameterError("{psf_star}", f"the PSF fit on the star at pixel ({x:.1f}, {y:.1f}) failed "
                         f"in {nbins - len(star.wave)} of {nbins} wavelength bins",
                         "choose a brighter, isolated star, or give --fwhm/--beta", params=("psf_star",))
    result = _model_from_stars([star], kind, fwhm_degree, lbrange, beta_poly)
    return result if full else result.model


# ------------------------------------------------------------------------------ many stars
def _white_fit(cube, star: StarFit, others, *, kind="moffat"):
    """Fit the white-light (whole band) stamp of *star*; sets its S/N, FWHM, β and centre."""
    scale = cube.pixscale
    h = _half(cube, star)
    box = Box.centred(star.x, star.y, h)
    exclude = _neighbour_mask(box, star.x, star.y, others)
    img, ivar = _band_stamp(cube, box, 0, cube.nwave, exclude)
    fit = _fit_image(img, ivar, star.x - box[0], star.y - box[2], scale, kind=kind)
    if fit is None:
        star.status = "white_fit_failed"
        return None
    star.snr = fit["snr"]
    star.fwhm_white, star.beta_white = float(fit["fwhm"]), float(fit["beta"])
    shift = np.hypot(fit["x"] + box[0] - star.x, fit["y"] + box[2] - star.y)
    star.x, star.y = float(fit["x"] + box[0]), float(fit["y"] + box[2])
    star.core, star.shift = float(fit["core"]), float(shift)
    return fit


def find_stars(cube, candidates=None, *, kind: str = "moffat", min_snr: float = MIN_SNR,
               min_separation: float = MIN_SEPARATION, max_stars: int = MAX_STARS) -> list:
    """Candidates examined for stellarity on the white light, each with a status.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    candidates : sequence of (id, x, y), optional
        Catalogue objects, 0-based cube pixels; default: SEP detections on the white light.
    kind : {"moffat", "gaussian"}
    min_snr, min_separation, max_stars
        See :data:`MIN_SNR`, :data:`MIN_SEPARATION` (arcsec), :data:`MAX_STARS`.

    Returns
    -------
    list of StarFit
        All candidates; the chosen stars (at most *max_stars*, brightest first) have status
        ``"used"``.
    """
    if candidates is None:
        candidates = _detections(cube)
    cands = [StarFit(str(i), float(x), float(y)) for i, x, y in candidates
             if np.isfinite(x) and np.isfinite(y)]
    scale = cube.pixscale
    pos = np.array([(c.x, c.y) for c in cands]).reshape(-1, 2)
    margin = 0.5 / scale
    for k, c in enumerate(cands):
        if not (-margin <= c.x <= cube.nx - 1 + margin and -margin <= c.y <= cube.ny - 1 + margin):
            c.status = "off_field"
            continue
        d = np.hypot(pos[:, 0] - c.x, pos[:, 1] - c.y) * scale
        d[k] = np.inf
        if d.size and d.min() < min_separation:
            c.status = f"neighbour_at_{d.min():.2f}_arcsec"
            continue
        near = [tuple(p) for j, p in enumerate(pos) if j != k and d[j] < 4 * STAMP_HALF]
        if _white_fit(cube, c, near, kind=kind) is None:
            continue
        if c.snr < min_snr:
            c.status = f"snr_{c.snr:.0f}_below_{min_snr:g}"
        elif c.shift > 1.5:
            c.status = "centre_off_position"
        elif kind == "moffat" and not (BETA_RANGE[0] <= c.beta_white <= BETA_RANGE[1]):
            c.status = f"extended_wings_beta_{c.beta_white:.2f}"
        elif np.isfinite(c.core) and c.core < 0.85:
            c.status = "flat_core_saturated"
        else:
            c.status = "point_candidate"
            c.neighbours = near
    pts = [c for c in cands if c.status == "point_candidate"]
    if pts:
        sharpest = min(c.fwhm_white for c in pts)
        for c in pts:
            if c.fwhm_white > sharpest * (1 + POINT_TOLERANCE):
                c.status = f"extended_fwhm_{c.fwhm_white:.2f}_arcsec"
        pts = sorted((c for c in pts if c.status == "point_candidate"), key=lambda c: -c.snr)
        for k, c in enumerate(pts):
            c.status = "used" if k < max_stars else "not_needed"
    return cands


def _detections(cube):
    """(id, x, y) of SEP detections on the white light (default detection parameters)."""
    res = detect_sources(band_image(cube))
    return [(f"det{int(r['ID'])}", float(r["x"]), float(r["y"])) for r in res.catalog]


def fit_psf_from_stars(cube, candidates=None, *, kind: str = "moffat", nbands: int = NBANDS,
                       fwhm_degree: int = FWHM_DEGREE, beta_degree: int = BETA_DEGREE,
                       lbrange=LBRANGE, min_snr: float = MIN_SNR, max_stars: int = MAX_STARS) -> PSFFit:
    """The PSF of *cube* fitted on its point-like, isolated stars (see the module docstring).

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    candidates : sequence of (id, x, y), optional
        Catalogue objects (0-based cube pixels); default: detections on the white light.
    kind, nbands, fwhm_degree, beta_degree, lbrange, min_snr, max_stars
        See the module's defaults.

    Returns
    -------
    PSFFit

    Raises
    ------
    InputError
        No usable star (one line naming ``--fwhm``).
    """
    stars = find_stars(cube, candidates, kind=kind, min_snr=min_snr, max_stars=max_stars)
    used = [s for s in stars if s.status == "used"]
    result = None
    for _ in range(MAX_STARS):
        used = [s for s in stars if s.status == "used"]
        if not used:
            break
        beta_poly = _fit_bands_twice(cube, used, nbands=nbands, kind=kind, beta_degree=beta_degree,
                                     lbrange=lbrange)
        if not any(s.status == "used" for s in stars):
            break
        n_before = sum(s.status == "used" for s in stars)
        result = _model_from_stars(stars, kind, fwhm_degree, lbrange, beta_poly)
        if len(result.used) == n_before:
            break
        result = None  # a star left the common curve: β and the FWHMs again without it
    if result is None:
        raise InputError(cube.path, f"has no usable star to fit the PSF on ({_why(stars)})",
                         "give the PSF FWHM with --fwhm (and --beta)")
    return result


def _why(stars) -> str:
    if not stars:
        return "no candidate source"
    counts = {}
    for s in stars:
        key = s.status.split(" (")[0].split("_below")[0]
        key = key.split("_at_")[0].split("_beta_")[0].split("_fwhm_")[0]
        counts[key] = counts.get(key, 0) + 1
    return f"{len(stars)} candidates: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


# ------------------------------------------------------------------------------ reporting
def _fsf_header(fit: PSFFit, wave):
    hdr = fits.Header()
    for key, value, comment in fsf_cards(fit.model, wave):
        hdr[key] = (value, comment)
    return hdr


def psf_summary(fit: PSFFit, wave, pixscale: float = 0.2) -> str:
    """The fitted PSF as ``ifu-extract info`` prints FSF keywords, with its uncertainty.

    Parameters
    ----------
    fit : PSFFit
    wave : array_like
        The cube's wavelengths, Angstrom (the ends and the middle are reported).
    pixscale : float
        Spaxel side, arcsec (not used by mode-2 keywords).
    """
    wave = np.asarray(wave, dtype=float)
    lines = format_fsf(fsf_header_info(_fsf_header(fit, wave), [0], (wave[0], wave[-1]), pixscale))
    lam = np.array([wave[0] + f * (wave[-1] - wave[0]) for f in REF_FRACTIONS])
    fw, fe = fit.model.fwhm(lam), fit.fwhm_err(lam)
    be, bee = fit.model.beta(lam[:1]), fit.beta_err(lam[:1])
    used = fit.used
    lines.append(f"psf         fitted on {len(used)} star(s) ({', '.join(s.id for s in used)}): FWHM "
                 + ", ".join(f"{f:.3f} +- {e:.3f}" for f, e in zip(fw, fe)) + " arcsec at "
                 + ", ".join(f"{v:.0f}" for v in lam) + f" Angstrom; beta {be[0]:.2f} +- {bee[0]:.2f}")
    return "\n".join(lines)


def write_psf_product(path, fit: PSFFit, cube, *, inputs: dict | None = None):
    """Write the fitted PSF: MUSE FSF keywords (``FSFMODE = 2``) in the primary header, which
    ``mpdaf.MUSE.FSFModel.read`` reads, with the FWHM and β curves and their errors (``PSF``
    table, one row per channel band) and the stars examined (``STARS`` table).

    Parameters
    ----------
    path : str or os.PathLike
    fit : PSFFit
    cube : ifu_extract.cubeio.Cube
    inputs : dict, optional
        Provenance ``{role: path}``.
    """


    prim = fits.PrimaryHDU()
    hdr = _fsf_header(fit, cube.wave)
    prim.header.update(hdr)
    ferr, berr = fit.coeff_errors()
    for k, e in enumerate(ferr):
        prim.header[f"FSFEF{k:02d}"] = (float(e), f"1 sigma error of FSF00F{k:02d}")
    for k, e in enumerate(berr):
        prim.header[f"FSFEB{k:02d}"] = (float(e), f"1 sigma error of FSF00B{k:02d}")
    prim.header["PSFSRC"] = ("fitted", "PSF fitted on the cube's stars")
    prim.header["NSTARS"] = (len(fit.used), "stars the PSF was fitted on")
    add_provenance(prim.header, "psf", inputs)
    edges = _band_edges(cube, 2 * NBANDS)
    lam = np.array([np.mean(cube.wave[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    curve = Table({"WAVE": lam, "FWHM": fit.model.fwhm(lam), "FWHM_ERR": fit.fwhm_err(lam),
                   "BETA": fit.model.beta(lam) * np.ones_like(lam), "BETA_ERR": fit.beta_err(lam)})
    for col, unit in (("WAVE", "Angstrom"), ("FWHM", "arcsec"), ("FWHM_ERR", "arcsec")):
        curve[col].unit = unit
    ra, dec = pixel_to_world(cube.wcs, np.array([s.x for s in fit.stars]), np.array([s.y for s in fit.stars]))
    stars = Table({"ID": [s.id for s in fit.stars], "X": [s.x for s in fit.stars],
                   "Y": [s.y for s in fit.stars], "RA": np.atleast_1d(ra), "DEC": np.atleast_1d(dec),
                   "SNR": [s.snr for s in fit.stars], "FWHM_WHITE": [s.fwhm_white for s in fit.stars],
                   "BETA_WHITE": [s.beta_white for s in fit.stars],
                   "STATUS": [s.status for s in fit.stars]})
    hdul = fits.HDUList([prim, fits.table_to_hdu(curve), fits.table_to_hdu(stars)])
    hdul[1].name, hdul[2].name = "PSF", "STARS"
    return write_hdulist(hdul, path)


def write_fallback_psf_product(path, model: PSFModel, cube, *, reason: str = "", inputs: dict | None = None):
    """Write the fallback PSF (``--fwhm-fallback``: the cube had no FSF keywords and no star could
    be fitted) as :func:`write_psf_product` writes a fitted one: MUSE FSF keywords of a Moffat
    model, ``PSFSRC = 'fallback'``, ``NSTARS = 0``, the reason no PSF was found (``PSFWHY``) and
    the ``PSF`` table of FWHM and β per band (no ``STARS`` table: none was used).

    Parameters
    ----------
    path : str or os.PathLike
    model : PSFModel
        Source ``"fallback"``.
    cube : ifu_extract.cubeio.Cube
    reason : str, optional
        Why the cube gave no PSF (the failed search's message).
    inputs : dict, optional
        Provenance ``{role: path}``.
    """
    prim = fits.PrimaryHDU()
    if model.kind == "moffat":
        for key, value, comment in fsf_cards(model, cube.wave):
            prim.header[key] = (value, comment)
    prim.header["PSFSRC"] = ("fallback", "PSF from --fwhm-fallback: the cube gave none")
    prim.header["PSFKIND"] = (model.kind, "profile of the fallback PSF")
    prim.header["NSTARS"] = (0, "stars the PSF was fitted on")
    if reason:
        prim.header["PSFWHY"] = (reason, "why no PSF was read or fitted")
    add_provenance(prim.header, "psf", inputs)
    edges = _band_edges(cube, 2 * NBANDS)
    lam = np.array([np.mean(cube.wave[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    curve = Table({"WAVE": lam, "FWHM": model.fwhm(lam) * np.ones_like(lam),
                   "BETA": model.beta(lam) * np.ones_like(lam)})
    for col, unit in (("WAVE", "Angstrom"), ("FWHM", "arcsec")):
        curve[col].unit = unit
    hdul = fits.HDUList([prim, fits.table_to_hdu(curve)])
    hdul[1].name = "PSF"
    return write_hdulist(hdul, path)

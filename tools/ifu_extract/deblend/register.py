"""Registration of a sharp ancillary image onto the cube: one global offset of its astrometry.

HST and MUSE astrometry differ by 0.05-0.3″ (by 1.25″ for mpdaf's WFPC2 cut-out of the
minicube's field, ``a478hst-cutout.fits``); at MUSE's 0.2″ spaxels a 0.1-0.2″ error moves
every image template of the deblending and throws a bright neighbour's light into a faint
source.  :func:`register_image` fits the offset by comparing the image, convolved to the cube's
PSF and resampled onto the cube's grid, with the cube's white light; :func:`shift_image_wcs`
removes it from the image's WCS before anything else uses the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

from ..image import Image
from ..wcsutil import finer_wcs, shifted_wcs
from ..weights import fine_scale, resample_to_grid
from .fourier import psf_ft
from .models import channel_weights, psf_nodes

__all__ = ["ImageRegistration", "fit_image_shift", "register_image", "shift_image_wcs"]

#: Largest offset (arcsec) accepted by default: HST-MUSE offsets are 0.05-0.3″ with Gaia-tied
#: astrometry, up to 1-2″ before (the minicube's WFPC2 cut-out: 1.25″).
MAX_SHIFT = 2.5
#: Fewest spaxels with signal on which an offset is fitted.
MIN_SPAXELS = 20
#: A spaxel has signal when its white light is this many sigma above zero.
SIGNAL_SNR = 5.0
#: An offset below this many standard errors (or below MIN_SHIFT) is not applied.
SIGNIFICANCE = 3.0
#: Offsets (arcsec) smaller than this are left alone: the fit's systematic floor.  Without noise,
#: on the 8 blend scenes of ``tests/blend_scenes.py`` with a correct image, the fitted offset is
#: up to 0.022″ (colour gradients; a faint source's template moves 5 % of contamination per
#: 0.01″, so an offset at the floor is not worth applying).
MIN_SHIFT = 0.025
#: Distance (spaxels) up to which a cell's radial colour term grows linearly.
RADIAL_MAX = 10.0
#: Sources whose cells get their own scales (the brightest); the others share one.
MAX_PARTS = 16
#: Radius (spaxels) of the centroids that centre the cells on the image's light.
CENTROID_RADIUS = 1.0


@dataclass(frozen=True)
class ImageRegistration:
    """The offset of an ancillary image's astrometry relative to the cube's.

    Attributes
    ----------
    dx, dy : float
        Offset of the image relative to the cube on the sky, arcsec: ``dx`` along RA·cos(Dec)
        (positive east), ``dy`` along Dec (positive north).  A source's image position is its
        cube position plus this offset; :func:`shift_image_wcs` removes it.  NaN when no fit.
    sigma : float
        Standard error of the offset (arcsec, larger of the two axes); NaN when no fit.
    shift_pix : (float, float)
        The same offset in cube spaxels, ``(x, y)``.
    n_spaxels : int
        Spaxels with signal the offset was fitted on.
    applied : bool
        Whether the offset is (to be) removed from the image's WCS.
    reason : str
        Why it is not applied ('' when applied).
    """

    dx: float
    dy: float
    sigma: float
    shift_pix: tuple
    n_spaxels: int
    applied: bool
    reason: str = ""

    def describe(self) -> str:
        """One log line."""
        shift = f'shift dx={self.dx:+.3f}" dy={self.dy:+.3f}"' if np.isfinite(self.dx) else "no shift fitted"
        fitted = f'±{self.sigma:.3f}", fitted on {self.n_spaxels} spaxels'
        if self.applied:
            return f"image registered: {shift} ({fitted})"
        if not np.isfinite(self.dx):
            return f"image not registered: {self.reason}"
        return f"image not registered ({self.reason}): {shift} ({fitted})"

    def cards(self) -> dict:
        """Header keywords ``DBIMGREG``, ``DBIMGDX``, ``DBIMGDY`` (``{key: (value, comment)}``)."""
        def fin(v):
            return round(float(v), 4) if np.isfinite(v) else -99.0
        return {"DBIMGREG": (bool(self.applied), "image offset to the cube fitted and removed"),
                "DBIMGDX": (fin(self.dx), "[arcsec] image-cube offset, RA*cos(Dec) (-99: none)"),
                "DBIMGDY": (fin(self.dy), "[arcsec] image-cube offset, Dec (-99: none)")}


def fit_image_shift(models: np.ndarray, white: np.ndarray, white_var: np.ndarray | None, *, pad: int,
                    max_shift_pix: float, off: np.ndarray | None = None, signal_snr: float = SIGNAL_SNR,
                    min_spaxels: int = MIN_SPAXELS) -> tuple:
    """Sub-spaxel shift of an image's model of the white light that best matches the white light.

    The model is ``Σ_p a_p · M_p(x + sx, y + sy) + c``, with ``M_p`` the parts of the image
    already convolved with the white light's PSF (:func:`register_image`: the sources' cells,
    so that each gets its own scale), fitted by weighted least squares on the spaxels where the
    white light has signal; the scales and ``c`` are solved for at every shift (variable
    projection).  The shift starts from the best whole-spaxel shift of the summed model within
    *max_shift_pix* and is refined by :func:`scipy.optimize.least_squares`; shifts are Fourier
    phases (the convolved models are smooth on the spaxel grid).

    Parameters
    ----------
    models : numpy.ndarray
        ``(P, ny + 2 pad, nx + 2 pad)`` the parts on the cube's grid extended by *pad* spaxels
        on every side (axis 1 is y, axis 2 is x), zero off the image.
    white, white_var : numpy.ndarray
        ``(ny, nx)`` the cube's white light and its variance (None: estimated from the
        white light's scatter).
    pad : int
    max_shift_pix : float
        Largest shift searched, spaxels.
    off : numpy.ndarray, optional
        ``models.shape[1:]`` True off the image: spaxels within ``pad / 2`` of it are not fitted.
    signal_snr : float
        Spaxels whose white light is above this many sigma are fitted.
    min_spaxels : int
        Fewest such spaxels for a fit.

    Returns
    -------
    (sx, sy, sigma_x, sigma_y, n_spaxels, reason)
        The shift (spaxels; the image's light sits at the cube's position plus it), its
        standard errors, and '' or why there is no fit (then the shift is NaN).
    """
    ny, nx = white.shape
    if white_var is None or not np.isfinite(white_var).any():
        med = np.nanmedian(white)
        noise2 = (1.4826 * np.nanmedian(np.abs(white - med))) ** 2
        white_var = np.full(white.shape, noise2 if noise2 > 0 else np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = white / np.sqrt(white_var)
    good = np.isfinite(snr) & (snr > signal_snr) & np.isfinite(white_var) & (white_var > 0)
    if off is not None and off.any():
        # Spaxels within a kernel's reach of the image's edge see a truncated model: left out.
        good &= ~ndimage.binary_dilation(off, iterations=max(2, pad // 2))[pad:pad + ny, pad:pad + nx]
    n = int(good.sum())
    none = (np.nan, np.nan, np.nan, np.nan, n)
    if n < max(min_spaxels, 3 * len(models)):
        return (*none, f"{n} spaxels with signal, fewer than {max(min_spaxels, 3 * len(models))}")
    Ny, Nx = models.shape[1:]
    ky = np.fft.fftfreq(Ny)[:, None]
    kx = np.fft.rfftfreq(Nx)[None, :]
    base = np.fft.rfft2(models)
    w = 1.0 / np.sqrt(white_var[good])
    d = white[good] * w

    def model(ft, s):
        conv = np.fft.irfft2(ft * np.exp(2j * np.pi * (kx * s[0] + ky * s[1])), s=(Ny, Nx))
        return conv[..., pad:pad + ny, pad:pad + nx][..., good]

    def profile(ft, s):
        A = np.column_stack([*(model(ft, s).reshape(-1, n) * w), w])
        coef, *_ = np.linalg.lstsq(A, d, rcond=None)
        return d - A @ coef, coef

    r = int(np.floor(max_shift_pix))
    grid = [(float(i), float(j)) for j in range(-r, r + 1) for i in range(-r, r + 1) if np.hypot(i, j) <= max_shift_pix]
    total = base.sum(axis=0)
    start = min(grid, key=lambda s: float(np.sum(profile(total, s)[0] ** 2)))
    fit = optimize.least_squares(lambda s: profile(base, s)[0], np.array(start), x_scale=0.1, xtol=1e-8,
                                 diff_step=1e-4)
    if not fit.success:
        return (*none, f"no convergence ({fit.message})")
    res, coef = profile(base, fit.x)
    if not coef[int(np.argmax(models.sum(axis=(1, 2))))] > 0:
        return (*none, "the image does not match the white light (scale <= 0)")
    dof = max(n - 3 - len(models), 1)
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * float(res @ res) / dof
    except np.linalg.LinAlgError:
        return (*none, "shift not constrained (singular fit)")
    sig = np.sqrt(np.clip(np.diag(cov), 0, None))
    return float(fit.x[0]), float(fit.x[1]), float(sig[0]), float(sig[1]), n, ""


def _parts(fine, scale, pad, positions):
    """The image cut into its sources' nearest cells (:data:`MAX_PARTS` brightest; the rest
    summed into one part), each also weighted by the distance to its source (a colour gradient)."""
    if positions is None:
        return fine[None]
    px, py = (np.asarray(v, float) for v in positions)
    ok = np.isfinite(px) & np.isfinite(py)
    if ok.sum() < 2:
        return fine[None]
    px, py = px[ok], py[ok]
    # Fine pixel i is centred at spaxel (i + 0.5) / scale - 0.5 of the padded grid.
    yy = (np.arange(fine.shape[0]) + 0.5) / scale - 0.5 - pad
    xx = (np.arange(fine.shape[1]) + 0.5) / scale - 0.5 - pad
    gx, gy = np.meshgrid(xx, yy)
    # Centred on the image's own light (the catalogue's positions are the cube's, or off): a
    # radial term off its source's centre mimics a shift.
    pos = np.clip(fine, 0.0, None)

    def window(c, n):
        """Fine-pixel slice holding every pixel within CENTROID_RADIUS of spaxel coordinate *c*
        (a crowded catalogue must not scan the whole grid once per source)."""
        lo = int(np.floor((c - CENTROID_RADIUS + 0.5 + pad) * scale - 0.5)) - 1
        hi = int(np.ceil((c + CENTROID_RADIUS + 0.5 + pad) * scale - 0.5)) + 2
        return slice(min(max(lo, 0), n), min(max(hi, 0), n))

    for _ in range(3):
        for i in range(len(px)):
            win = (window(py[i], fine.shape[0]), window(px[i], fine.shape[1]))
            wx, wy = gx[win], gy[win]
            near = (wx - px[i]) ** 2 + (wy - py[i]) ** 2 <= CENTROID_RADIUS ** 2
            f = pos[win][near]
            if f.sum() > 0:
                px[i], py[i] = (wx[near] @ f) / f.sum(), (wy[near] @ f) / f.sum()
    tree = cKDTree(np.column_stack([px, py]))
    dist, label = tree.query(np.column_stack([gx.ravel(), gy.ravel()]))
    dist, label = dist.reshape(fine.shape), label.reshape(fine.shape)
    flux = np.bincount(label.ravel(), fine.ravel(), minlength=len(px))
    order = np.argsort(-flux)
    keep = order[:MAX_PARTS][flux[order[:MAX_PARTS]] > 0.01 * max(flux.sum(), 1e-30)]
    parts = [np.where(label == v, fine, 0.0) for v in keep]
    rest = ~np.isin(label, keep)
    r = np.minimum(dist, RADIAL_MAX) / RADIAL_MAX
    parts += [p * r for p in parts]
    if rest.any() and np.abs(fine[rest]).sum() > 0:
        parts.append(np.where(rest, fine, 0.0))
    return np.stack(parts)


def register_image(image: Image, cube, psf, *, white: Image, image_fwhm: float = 0.0,
                   positions=None, wave_range=None, max_shift: float = MAX_SHIFT, signal_snr: float = SIGNAL_SNR,
                   min_spaxels: int = MIN_SPAXELS) -> ImageRegistration:
    """Fit one global offset of a sharp image's astrometry relative to the cube's.

    The image is resampled onto a grid aligned with the cube's (extended by a PSF's reach on
    every side, so that light just outside the field is convolved in; finer than the cube's
    when the image is, :func:`ifu_extract.weights.fine_scale`), convolved there with the
    white light's PSF (the cube's PSF at its nodes, averaged over the channels) divided by the
    image's own Gaussian PSF (*image_fwhm*), summed into spaxels (convolving spaxel means
    instead aliases a sharp core: 0.01-0.03″ of bias), and compared with the white light
    (:func:`fit_image_shift`).

    Parameters
    ----------
    image : ifu_extract.image.Image
        Sharp image with a celestial WCS.
    cube : ifu_extract.cubeio.Cube
    psf : ifu_extract.psfmodel.PSFModel
        The cube's PSF.
    white : ifu_extract.image.Image
        The cube's white light over *wave_range* (:func:`ifu_extract.image.band_image`).
    image_fwhm : float
        FWHM of the image's PSF, arcsec.
    positions : (numpy.ndarray, numpy.ndarray), optional
        0-based cube pixel ``(x, y)`` of the catalogue's sources: the image is cut into their
        nearest-source cells, each with its own scale and radial colour term (the sources'
        colours differ between the image's band and the white light; one scale pulls the
        shift towards the bluer neighbour by 0.03-0.05″ in the blend scenes).
    wave_range : (float, float), optional
        Angstrom, the channels of *white*; default the whole cube.
    max_shift : float
        Largest offset accepted, arcsec; larger fits are not applied.
    signal_snr, min_spaxels
        See :func:`fit_image_shift`.

    Returns
    -------
    ImageRegistration
        ``applied`` is False when the fit failed, the offset exceeds *max_shift*, or it is
        below :data:`SIGNIFICANCE` standard errors or :data:`MIN_SHIFT`.
    """
    pixscale = float(cube.pixscale)
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    wave = cube.wave[z0:z1]
    node_wave = psf_nodes(psf, wave, pixscale)
    fwhm_max = float(np.max(psf.fwhm(node_wave))) / pixscale
    pad = int(np.ceil(max(4.0, 3.0 * fwhm_max + max_shift / pixscale)))
    Ny, Nx = cube.ny + 2 * pad, cube.nx + 2 * pad
    target = shifted_wcs(cube.wcs.celestial, -pad, -pad)
    scale = fine_scale(image, cube)
    fine = resample_to_grid(image, finer_wcs(target, scale) if scale > 1 else target,
                            (Ny * scale, Nx * scale)).astype(np.float64)
    off = ~np.isfinite(fine).reshape(Ny, scale, Nx, scale).all(axis=(1, 3))
    fine = np.nan_to_num(fine)
    k = np.hypot(np.fft.fftfreq(Ny * scale)[:, None], np.fft.rfftfreq(Nx * scale)[None, :]) * scale
    node_ft = np.stack([psf_ft(psf.kind, float(psf.fwhm(w)) / pixscale, float(psf.beta(w)), k) for w in node_wave])
    kernel = np.tensordot(channel_weights(node_wave, wave), node_ft, axes=1)
    if image_fwhm > 0:
        # Divide out the image's own PSF where it is not negligible (it is much the sharper).
        kernel = kernel / np.maximum(psf_ft("gaussian", image_fwhm / pixscale, 2.8, k), 1e-3)
    var = None if white.var is None else np.asarray(white.var, float)
    sx = sy = 0.0
    # Twice: the second time the cells are cut around the sources' positions moved by the first
    # fit, onto the image's light (a cell off its source's light pulls the shift).
    for _ in range(2 if positions is not None else 1):
        cells = None if positions is None else (np.asarray(positions[0], float) + (0.0 if np.isnan(sx) else sx),
                                                np.asarray(positions[1], float) + (0.0 if np.isnan(sy) else sy))
        models = np.stack([np.fft.irfft2(np.fft.rfft2(p) * kernel, s=p.shape).reshape(Ny, scale, Nx, scale)
                           .mean(axis=(1, 3)) for p in _parts(fine, scale, pad, cells)])
        sx, sy, ex, ey, n, reason = fit_image_shift(models, np.asarray(white.data, float), var, pad=pad,
                                                    max_shift_pix=max_shift / pixscale, off=off,
                                                    signal_snr=signal_snr, min_spaxels=min_spaxels)
        if reason:
            break
    if reason:
        return ImageRegistration(np.nan, np.nan, np.nan, (np.nan, np.nan), n, False, reason)
    cd = cube.wcs.celestial.pixel_scale_matrix * 3600.0            # arcsec per spaxel, (world, pixel)
    dx, dy = cd @ np.array([sx, sy])
    sig = float(max(ex, ey)) * pixscale
    size = float(np.hypot(dx, dy))
    applied, reason = True, ""
    if size > max_shift:
        applied, reason = False, f'offset {size:.2f}" is beyond {max_shift:g}"'
    elif size < max(SIGNIFICANCE * sig, MIN_SHIFT):
        applied, reason = False, f'offset {size:.3f}" is insignificant'
    return ImageRegistration(float(dx), float(dy), sig, (sx, sy), n, applied, reason)


def shift_image_wcs(image: Image, dx: float, dy: float) -> Image:
    """A copy of *image* whose WCS is moved by ``(-dx, -dy)`` arcsec on the sky (RA·cos(Dec),
    Dec): the offset *dx*, *dy* of :class:`ImageRegistration` removed (through CRVAL)."""
    wcs = image.wcs.deepcopy()
    lng, lat = wcs.wcs.lng, wcs.wcs.lat
    crval = np.array(wcs.wcs.crval, float)
    crval[lng] -= dx / 3600.0 / np.cos(np.deg2rad(crval[lat]))
    crval[lat] -= dy / 3600.0
    wcs.wcs.crval = crval
    wcs.wcs.set()
    return replace(image, wcs=wcs)

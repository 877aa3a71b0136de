"""The wavelength-dependent PSF (MUSE's FSF): from header keywords, given by the user, or fitted
on a star of the cube (:func:`fit_psf_on_star`).

A :class:`PSFModel` gives FWHM(λ) in arcsec and β(λ) for a circular Moffat (or a Gaussian), and
renders normalised PSF images on a pixel grid (:meth:`PSFModel.stamps`), integrated over
spaxels, for optimal extraction and deblending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from astropy.io import fits

from .errors import InputError
from .synth import moffat_image, moffat_images

if TYPE_CHECKING:
    from .cubeio import Cube

__all__ = ["PSFModel", "psf_from_cube", "muse_fsf_keywords", "muse_fsf_curves", "fit_psf_on_star",
           "gaussian_image"]


@dataclass(frozen=True)
class PSFModel:
    """Circular PSF with FWHM and β linear (or polynomial) in wavelength.

    Attributes
    ----------
    kind : str
        ``"moffat"`` or ``"gaussian"``.
    fwhm_coeffs : tuple of float
        ``numpy.polyval`` coefficients of FWHM (arcsec) in wavelength (Angstrom).
    beta_coeffs : tuple of float
        Coefficients of β(λ) (Moffat only).
    source : str
        Where the model came from (``"header"``, ``"given"``, ``"fitted"``).
    """

    kind: str
    fwhm_coeffs: tuple
    beta_coeffs: tuple = (2.8,)
    source: str = "given"

    def fwhm(self, wave) -> np.ndarray:
        """FWHM in arcsec at *wave* (Angstrom)."""
        return np.polyval(self.fwhm_coeffs, np.asarray(wave, dtype=float))

    def beta(self, wave) -> np.ndarray:
        return np.polyval(self.beta_coeffs, np.asarray(wave, dtype=float))

    def stamps(self, wave, shape, x0: float, y0: float, pixscale: float, nodes: int = 24) -> np.ndarray:
        """PSF images ``(n_wave, ny, nx)`` centred at (*x0*, *y0*) (0-based pixels).

        Each image is the PSF integrated over spaxels and normalised over the infinite plane, so
        the sum over a stamp is the fraction of the flux it encloses.  The PSF is computed at
        *nodes* FWHM values spanning the range and interpolated linearly in between (the error is
        far below 0.1 % of the flux for MUSE-like variations).
        """
        imgs, i0, frac = self.node_images(wave, shape, x0, y0, pixscale, nodes)
        if len(imgs) == 1:
            return np.repeat(imgs, len(i0), axis=0)
        frac = frac[:, None, None]
        return imgs[i0] * (1 - frac) + imgs[i0 + 1] * frac

    def node_images(self, wave, shape, x0: float, y0: float, pixscale: float, nodes: int = 24):
        """The node images of :meth:`stamps` and, per channel, how they are interpolated.

        ``stamps(...)[k] == imgs[i0[k]] * (1 - frac[k]) + imgs[i0[k] + 1] * frac[k]`` (or
        ``imgs[0]`` when there is a single node): products with the stamps can then be taken
        with the few node images instead of one image per channel.

        Parameters
        ----------
        wave : array_like
            ``(n_wave,)`` Angstrom.
        shape : (ny, nx)
        x0, y0 : float
            Centre, 0-based pixels.
        pixscale : float
            Spaxel side, arcsec.
        nodes : int
            Maximum number of FWHM nodes.

        Returns
        -------
        imgs : numpy.ndarray
            ``(n_nodes, ny, nx)`` float64.
        i0 : numpy.ndarray
            ``(n_wave,)`` int: lower node of each channel (0 with one node).
        frac : numpy.ndarray
            ``(n_wave,)`` float64 in [0, 1]: weight of node ``i0 + 1`` (0 with one node).
        """
        wave = np.atleast_1d(np.asarray(wave, dtype=float))
        fwhm_pix = self.fwhm(wave) / pixscale
        beta = self.beta(wave)
        lo, hi = float(fwhm_pix.min()), float(fwhm_pix.max())
        n = 1 if hi - lo < 1e-6 else min(nodes, len(wave))
        grid = np.linspace(lo, hi, n)
        bgrid = np.interp(grid, np.sort(fwhm_pix), beta[np.argsort(fwhm_pix)]) if n > 1 else [beta[0]]
        if self.kind == "moffat":  # all nodes in one pass: the supersampled grid is shared
            imgs = moffat_images(shape, x0, y0, grid, bgrid)
        else:
            imgs = np.array([gaussian_image(shape, x0, y0, f) for f in grid])
        if n == 1:
            return imgs, np.zeros(len(wave), dtype=int), np.zeros(len(wave))
        pos = (fwhm_pix - lo) / (hi - lo) * (n - 1)
        i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
        return imgs, i0, pos - i0


def gaussian_image(shape, x0, y0, fwhm_pix) -> np.ndarray:
    """Circular Gaussian integrated over pixels (exact, through error functions), unit total."""
    from scipy.special import erf

    s = fwhm_pix / (2.0 * np.sqrt(2.0 * np.log(2.0))) * np.sqrt(2.0)
    ny, nx = shape
    ex = np.diff(erf((np.arange(nx + 1) - 0.5 - x0) / s)) / 2.0
    ey = np.diff(erf((np.arange(ny + 1) - 0.5 - y0) / s)) / 2.0
    return np.outer(ey, ex)


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
            raise InputError("--fwhm", f"{fwhm} is not a positive FWHM", "give the PSF FWHM in arcsec")
        return PSFModel(kind, (float(fwhm),), (float(beta or 2.8),), "given")
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


def muse_fsf_keywords(cube) -> tuple[fits.Header, list[int]] | None:
    """The MUSE FSF keywords of *cube* and its FSF field numbers, or None without ``FSFMODE``.

    The keywords are those of the primary header, with the ``FSF*`` cards of the data header
    added (some pipelines put them there).
    """
    hdr = cube.primary_header.copy()
    hdr.update({k: v for k, v in cube.data_header.items() if k.startswith("FSF")})
    if "FSFMODE" not in hdr:
        return None
    fields = sorted({int(k[3:5]) for k in hdr if k.startswith("FSF") and k[3:5].isdigit()})
    return hdr, fields


def muse_fsf_curves(hdr, field, wave, pixscale: float) -> tuple[np.ndarray, np.ndarray]:
    """FWHM (arcsec) and β of MUSE FSF field *field* at *wave* (Angstrom), both ``(n,)``.

    MOFFAT1 and mode-2 keywords are read here (:func:`_muse_fsf`); other modes, or incomplete
    keywords, go through mpdaf's ``FSFModel``, whose exception is raised as it is.
    """
    wave = np.atleast_1d(np.asarray(wave, dtype=float))
    native = _muse_fsf(hdr, field)
    if native is not None:
        return native(wave)
    from mpdaf.MUSE import FSFModel

    model = FSFModel.read(hdr, field=field, pixstep=pixscale)
    return (np.atleast_1d(model.get_fwhm(wave)),
            np.atleast_1d(model.get_beta(wave)) * np.ones_like(wave))


def _muse_fsf(hdr, field):
    """FWHM(λ) and β(λ) of a MUSE FSF model (``FSFMODE`` MOFFAT1 or 2) read from *hdr*.

    The same polynomials as mpdaf's ``MoffatModel2.from_header`` (MOFFAT1 converted to mode 2
    as mpdaf does), read without importing mpdaf, which costs ~1 s of CPU per run.

    Parameters
    ----------
    hdr : astropy.io.fits.Header
        Header holding the ``FSF*`` keywords.
    field : int or None
        FSF field number.

    Returns
    -------
    callable or None
        ``f(wave) -> (fwhm, beta)``, *wave* in Angstrom, FWHM in arcsec, both ``(n,)`` arrays;
        None for other modes or missing keywords (the caller then asks mpdaf).
    """
    if field is None:
        return None
    mode = hdr["FSFMODE"]
    key = f"FSF{field:02d}"
    try:
        if isinstance(mode, str):
            if mode != "MOFFAT1":
                return None
            fwa, fwb, bet = (hdr[key + k] for k in ("FWA", "FWB", "BET"))
            l1, l2 = 5000, 9000
            a = fwb * (l2 - l1)
            fwhm_pol, beta_pol, lbrange = [a, fwa + a * (l1 / (l2 - l1) + 0.5)], [bet], (l1, l2)
        elif mode == 2:
            lbrange = (hdr["FSFLB1"], hdr["FSFLB2"])
            if not lbrange[1] > lbrange[0]:
                return None
            fwhm_pol = [hdr[f"{key}F{k:02d}"] for k in range(int(hdr[key + "FNC"]))]
            beta_pol = [hdr[f"{key}B{k:02d}"] for k in range(int(hdr[key + "BNC"]))]
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None

    def evaluate(wave):
        x = (np.asarray(wave, dtype=float) - lbrange[0]) / (lbrange[1] - lbrange[0]) - 0.5
        return (np.atleast_1d(np.polyval(fwhm_pol, x)),
                np.atleast_1d(np.polyval(beta_pol, x)) * np.ones_like(x))

    return evaluate


def fit_psf_on_star(cube: Cube, x: float, y: float, *, kind: str = "moffat", nbins: int = 8,
                    half_size: int | None = None) -> PSFModel:
    """Fit FWHM(λ) (linear) and β (constant) on a star of the cube.

    The star's stamp is averaged in *nbins* wavelength bins; each bin image is fitted with a
    pixel-integrated circular Moffat (or Gaussian) plus a constant, by variance-weighted least
    squares; FWHM(λ) is the weighted straight line through the bins, β the weighted mean.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    x, y : float
        0-based cube pixel position of the star.
    kind : {"moffat", "gaussian"}
    nbins : int
        Wavelength bins.
    half_size : int, optional
        Half side of the stamp, spaxels (default: 2.5″).

    Raises
    ------
    InputError
        The star is off the cube, too faint, or the fits do not converge to a sensible FWHM.
    """
    from scipy.optimize import least_squares

    scale = cube.pixscale
    h = int(half_size or max(5, round(2.5 / scale)))
    xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    if not (0 <= xc < cube.nx and 0 <= yc < cube.ny):
        raise InputError("--psf-star", f"the star at pixel ({x:.1f}, {y:.1f}) is outside the cube",
                         "choose a star inside the field")
    edges = np.linspace(0, cube.nwave, nbins + 1).astype(int)
    fw, be, wv, wt = [], [], [], []
    for z0, z1 in zip(edges[:-1], edges[1:]):
        if z1 <= z0:
            continue
        data, var = cube.window(xc - h, xc + h + 1, yc - h, yc + h + 1, z0, z1)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.sum(np.isfinite(data), axis=0)
            img = np.nansum(data, axis=0) / np.maximum(n, 1)
            ivar = (n**2 / np.nansum(var, axis=0)) if var is not None else n.astype(float)
        good = (n > 0) & np.isfinite(ivar) & (ivar > 0)
        img = np.where(good, img, 0.0)
        sw = np.sqrt(np.where(good, ivar, 0.0))
        px, py = x - (xc - h), y - (yc - h)
        shape = img.shape

        def resid(p):
            amp, x0, y0, f, b, bg = p
            m = moffat_image(shape, x0, y0, f, b) if kind == "moffat" else \
                gaussian_image(shape, x0, y0, f)
            return ((amp * m + bg - img) * sw).ravel()

        peak = float(np.max(img[good])) if good.any() else 0.0
        p0 = [max(peak, 1e-30) * 10.0, px, py, 0.8 / scale, 2.8, 0.0]
        lo = [0, px - 2, py - 2, 0.3 / scale * 0.5, 1.2, -np.inf]
        hi = [np.inf, px + 2, py + 2, 3.0 / scale, 10.0, np.inf]
        try:
            fit = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", max_nfev=400)
        except ValueError:
            continue
        if not fit.success:
            continue
        jac = fit.jac
        try:
            cov = np.linalg.inv(jac.T @ jac)
        except np.linalg.LinAlgError:
            continue
        sig_f = np.sqrt(max(cov[3, 3], 0)) * scale
        f = fit.x[3] * scale
        if not (np.isfinite(sig_f) and sig_f > 0) or fit.x[0] <= 0 or f < 0.16 or f > 2.9:
            continue
        fw.append(f)
        be.append(fit.x[4])
        wv.append(float(np.mean(cube.wave[z0:z1])))
        wt.append(1.0 / sig_f**2)
    if len(fw) < 2:
        raise InputError("--psf-star", f"the PSF fit on the star at pixel ({x:.1f}, {y:.1f}) failed "
                         f"in {nbins - len(fw)} of {nbins} wavelength bins",
                         "choose a brighter, isolated star, or give --fwhm/--beta")
    fw, be, wv, wt = map(np.asarray, (fw, be, wv, wt))
    coeffs = np.polyfit(wv, fw, 1, w=np.sqrt(wt))
    beta = float(np.average(be, weights=wt)) if kind == "moffat" else 2.8
    return PSFModel(kind, tuple(float(c) for c in coeffs), (beta,), "fitted")

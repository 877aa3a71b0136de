"""The PSF model: circular Moffat and Gaussian profiles integrated over spaxels, the
wavelength-dependent :class:`PSFModel` (MUSE's FSF), and MUSE's FSF header keywords (read and
written).

Where a PSF comes from (given, header, star, fitted) is decided in :mod:`ifu_extract.psf`; the
fits on stars are :mod:`ifu_extract.psffit`.  Both use this module; it uses neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = ["PSFModel", "DEFAULT_BETA", "SUPERSAMPLE", "subpixel_grid", "moffat_alpha", "moffat_image",
           "moffat_images", "gaussian_image", "muse_fsf_keywords", "muse_fsf_curves", "fsf_cards"]

#: Moffat β of a given FWHM when no β is given (MUSE WFM's typical β).
DEFAULT_BETA = 2.8

#: Subpixels per spaxel side when integrating profiles over spaxels.
SUPERSAMPLE = 5


def subpixel_grid(shape, x0, y0, sup=SUPERSAMPLE):
    """Subpixel centres ``(ys, xs)`` of a *shape* ``(ny, nx)`` image relative to ``(x0, y0)``.

    Each is 1-D, ``ny * sup`` (``nx * sup``) long: the *sup* subpixel centres of every spaxel
    row (column), in spaxels, 0-based (spaxel centres at integers).
    """
    ny, nx = shape
    off = (np.arange(sup) + 0.5) / sup - 0.5
    ys = (np.arange(ny)[:, None] + off[None, :]).ravel() - y0
    xs = (np.arange(nx)[:, None] + off[None, :]).ravel() - x0
    return ys, xs


def moffat_alpha(fwhm, beta: float):
    """Moffat core width α from the FWHM (same unit)."""
    return np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_image(shape, x0: float, y0: float, fwhm_pix: float, beta: float) -> np.ndarray:
    """Moffat PSF integrated over spaxels, normalised to unit flux over the infinite plane.

    Parameters
    ----------
    shape : (ny, nx)
    x0, y0 : float
        Centre, 0-based pixels (x fast axis).
    fwhm_pix : float
        FWHM in pixels.
    beta : float
        Moffat β (> 1).
    """
    alpha = float(moffat_alpha(fwhm_pix, beta))
    ys, xs = subpixel_grid(shape, x0, y0)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    prof = (beta - 1.0) / (np.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)
    ny, nx = shape
    return prof.reshape(ny, SUPERSAMPLE, nx, SUPERSAMPLE).mean(axis=(1, 3))


def moffat_images(shape, x0: float, y0: float, fwhm_pix, beta) -> np.ndarray:
    """:func:`moffat_image` for several FWHM (and β) at once, on one grid.

    The same images to float rounding (~1e-15 relative), about twice as fast for many FWHM
    (the node images of a wavelength-dependent PSF): the supersampled radii are computed once,
    the profiles of a group of FWHM in one broadcast, and each spaxel's subpixels are summed
    by whole rows and strided slices rather than by a reduction over two short axes.

    Parameters
    ----------
    shape : (ny, nx)
    x0, y0 : float
        Centre, 0-based pixels (x fast axis).
    fwhm_pix : array_like
        ``(n,)`` FWHM in pixels.
    beta : float or array_like
        Moffat β (> 1), one value or one per FWHM.

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx)`` float64, each image normalised to unit flux over the infinite plane.
    """
    fwhm = np.atleast_1d(np.asarray(fwhm_pix, dtype=float))
    beta = np.broadcast_to(np.asarray(beta, dtype=float), fwhm.shape)
    alpha2 = moffat_alpha(fwhm, beta) ** 2
    ny, nx = shape
    ys, xs = subpixel_grid(shape, x0, y0)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2  # (ny*S, nx*S) pixels², shared by all FWHM
    out = np.empty((len(fwhm), ny, nx))
    # Groups of FWHM whose supersampled profiles take ~2 MB, so that they stay in the CPU cache
    # between the power and the subpixel sums (and memory stays bounded for big stamps).
    group = max(1, (1 << 18) // max(r2.size, 1))
    for g0 in range(0, len(fwhm), group):
        sl = slice(g0, g0 + group)
        prof = np.divide(r2[None], alpha2[sl, None, None])
        prof += 1.0
        np.power(prof, -beta[sl, None, None], out=prof)
        # Sum the S x S subpixels of each spaxel: along y first (whole contiguous rows), then
        # along x (strided, on S times fewer values).
        py = np.add.reduce(prof.reshape(len(prof), ny, SUPERSAMPLE, nx * SUPERSAMPLE), axis=2)
        img = out[sl]
        np.copyto(img, py[:, :, 0::SUPERSAMPLE])
        for s in range(1, SUPERSAMPLE):
            img += py[:, :, s::SUPERSAMPLE]
    out *= ((beta - 1.0) / (np.pi * alpha2) / SUPERSAMPLE**2)[:, None, None]
    return out


@dataclass(frozen=True)
class PSFModel:
    """Circular PSF with FWHM and β linear (or polynomial) in wavelength.

    Attributes
    ----------
    kind : str
        ``"moffat"`` or ``"gaussian"``.
    fwhm_coeffs : tuple of float
        ``numpy.polyval`` coefficients of FWHM (arcsec) in wavelength (Angstrom), or in
        normalised wavelength when *lbrange* is set.
    beta_coeffs : tuple of float
        Coefficients of β(λ) (Moffat only), same variable.
    source : str
        Where the model came from (``"header"``, ``"given"``, ``"fitted"``, ``"fallback"``: the
        user's ``--fwhm-fallback`` for a cube that gave none).
    lbrange : (float, float), optional
        When set, the polynomials are in MPDAF's normalised wavelength
        ``(λ - lbrange[0]) / (lbrange[1] - lbrange[0]) - 0.5`` (``FSFMODE = 2``, ``FSFLB1``,
        ``FSFLB2``), so that they are written as FSF keywords unchanged.
    """

    kind: str
    fwhm_coeffs: tuple
    beta_coeffs: tuple = (DEFAULT_BETA,)
    source: str = "given"
    lbrange: tuple | None = None

    def _x(self, wave) -> np.ndarray:
        wave = np.asarray(wave, dtype=float)
        if self.lbrange is None:
            return wave
        return (wave - self.lbrange[0]) / (self.lbrange[1] - self.lbrange[0]) - 0.5

    def fwhm(self, wave) -> np.ndarray:
        """FWHM in arcsec at *wave* (Angstrom)."""
        return np.polyval(self.fwhm_coeffs, self._x(wave))

    def beta(self, wave) -> np.ndarray:
        """Moffat β at *wave* (Angstrom)."""
        return np.polyval(self.beta_coeffs, self._x(wave))

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


# ------------------------------------------------------------------------------ FSF keywords out
def fsf_cards(model: PSFModel, wave=None, *, field: int = 0, lbrange=(5000.0, 9000.0),
              fwhm_degree: int = 2) -> list[tuple]:
    """MUSE FSF keywords (``FSFMODE = 2``, as mpdaf's ``MoffatModel2.to_header``) of *model*.

    A model fitted here (``lbrange`` set) is written as it is; another one is sampled at *wave*
    (Angstrom) and refitted in mpdaf's normalised wavelength.

    Returns
    -------
    list of (keyword, value, comment)
    """
    if model.lbrange is not None:
        lbrange, fw, be = model.lbrange, list(model.fwhm_coeffs), list(model.beta_coeffs)
    else:
        wave = np.asarray(wave, dtype=float)
        x = (wave - lbrange[0]) / (lbrange[1] - lbrange[0]) - 0.5
        fw = list(np.polyfit(x, model.fwhm(wave), fwhm_degree))
        be = list(np.polyfit(x, model.beta(wave), fwhm_degree))
    cards = [("FSFMODE", 2, "Circular MOFFAT beta=poly(lbda) fwhm=poly(lbda)"),
             ("FSFLB1", float(lbrange[0]), "FSF Blue Ref Wave (A)"),
             ("FSFLB2", float(lbrange[1]), "FSF Red Ref Wave (A)"),
             (f"FSF{field:02d}FNC", len(fw), f"FSF{field:02d} FWHM Poly Ncoef")]
    cards += [(f"FSF{field:02d}F{k:02d}", float(c), f"FSF{field:02d} FWHM Poly C{k:02d}") for k, c in enumerate(fw)]
    cards.append((f"FSF{field:02d}BNC", len(be), f"FSF{field:02d} BETA Poly Ncoef"))
    cards += [(f"FSF{field:02d}B{k:02d}", float(c), f"FSF{field:02d} BETA Poly C{k:02d}") for k, c in enumerate(be)]
    return cards

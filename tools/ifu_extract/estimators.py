"""Spectrum estimators: the 1D spectral extraction of one object from its window of the cube.

Every spectrum here is a *linear* estimator: for each channel λ, coefficients ``a(λ, y, x)``
over the object's stamp give ``F(λ) = Σ a·d`` and ``V(λ) = Σ a²·v``.  Writing all methods in
that form makes the variance exact for each of them, handles NaN voxels uniformly (a NaN voxel
gets a zero coefficient and the weights of that channel are renormalised where the method
requires it), and gives local-sky subtraction for free: with a per-spaxel sky ``s(λ)`` of
variance ``σ²_s(λ)`` estimated on disjoint spaxels, ``F_skysub = F − s·Σa`` and
``V_skysub = V + (Σa)²·σ²_s``.

Tags (MPDAF names):

``MUSE_TOT``       sum over the object mask
``MUSE_APER_<r>``  sum over a circle of radius r arcsec (exact pixel overlap, or MPDAF's
                   centre rule), neighbour segments not excluded (a plain aperture)
``MUSE_WHITE``     weighted by the white-light image inside the object mask (Horne 1986 with
                   a λ-independent profile), calibrated on the image: estimates the flux
                   inside the mask with a better S/N than ``MUSE_TOT``
``MUSE_PSF``       optimal extraction with the λ-dependent PSF (Horne 1986), the PSF
                   normalised over the infinite plane, so it estimates the total flux of a
                   point source; spaxels: the object mask plus a disk of 2 FWHM, minus
                   neighbours' segments
``<IMAGE>``        weighted by an ancillary image (resampled to the cube grid)
``MUSE_SKY``       mean per-spaxel sky over the sky mask
``*_SKYSUB``       the above with the local sky removed

Arrays are ``(n_wave, ny, nx)``; stamps ``(ny, nx)`` with x the fast axis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .cubeio import channels_per_block
from .psf import PSFModel

__all__ = [
    "ObjectRegion",
    "ExtractConfig",
    "Spectrum1D",
    "ObjectResult",
    "aperture_weights",
    "circle_overlap",
    "extract_object",
    "extract_window",
    "extract_windows",
    "aperture_tag",
    "StampMatrices",
]


@dataclass
class ObjectRegion:
    """What extraction needs to know about one object, on its stamp.

    Attributes
    ----------
    id : str
    ra, dec : float
        Degrees.
    x, y : float
        0-based position on the stamp (not the cube).
    box : (int, int, int, int)
        ``(x0, x1, y0, y1)`` of the stamp in cube pixels.
    obj_mask, sky_mask : numpy.ndarray
        Boolean ``(ny, nx)``.
    neighbours : numpy.ndarray or None
        Boolean ``(ny, nx)``: spaxels of other objects' segments.
    status : str
        Mask-step status ('ok' or the fallback used).
    """

    id: str
    ra: float
    dec: float
    x: float
    y: float
    box: tuple
    obj_mask: np.ndarray
    sky_mask: np.ndarray
    neighbours: np.ndarray | None = None
    status: str = "ok"
    mask_used: str = "union"


@dataclass
class ExtractConfig:
    """Extraction options.

    Attributes
    ----------
    apertures : tuple of float
        Aperture radii, arcsec.
    aperture_method : str
        ``"exact"`` (pixel overlap fraction) or ``"center"`` (MPDAF's rule: centres inside).
    psf : PSFModel or None
        PSF for ``MUSE_PSF``; None skips that tag.
    psf_radius_fwhm : float
        Radius (in FWHM) of the disk added to the object mask for ``MUSE_PSF``.
    skysub : bool
        Compute ``MUSE_SKY`` and the ``_SKYSUB`` spectra.
    white : bool
        Compute ``MUSE_WHITE``.
    psf_note : str
        What every object's notes record of the PSF: without *psf*, why; with a fallback PSF,
        that it is one (empty: nothing recorded).
    """

    apertures: tuple = (1.0,)
    aperture_method: str = "exact"
    psf: PSFModel | None = None
    psf_radius_fwhm: float = 2.0
    skysub: bool = True
    white: bool = True
    psf_note: str = ""


@dataclass
class Spectrum1D:
    """A spectrum on the cube's wavelength grid: flux and variance ``(n_wave,)`` float64."""

    flux: np.ndarray
    var: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class ObjectResult:
    """Spectra and stamp images of one object."""

    spectra: dict
    images: dict
    n_spaxels: int
    n_sky: int
    notes: list = field(default_factory=list)


def aperture_tag(radius: float) -> str:
    """MPDAF's aperture tag: ``MUSE_APER_1.0`` for 1.0 arcsec."""
    return "MUSE_APER_%.1f" % radius


def aperture_weights(shape, x: float, y: float, radius_pix: float, method: str = "exact") -> np.ndarray:
    """Fraction of each pixel inside a circle (exact overlap) or centre rule (0/1).

    Parameters
    ----------
    shape : (ny, nx)
    x, y : float
        Circle centre, 0-based pixels.
    radius_pix : float
        Radius in pixels.
    method : str
        ``"exact"`` or ``"center"``.
    """
    if method == "center":
        yy, xx = np.indices(shape)
        return ((xx - x) ** 2 + (yy - y) ** 2 <= radius_pix**2).astype(float)
    return circle_overlap(shape, x, y, radius_pix)


def _disk_area_below(x, y, r: float):
    """Area of the disk of radius *r* centred on 0 where ``X <= x`` and ``Y <= y`` (broadcast).

    The chord at abscissa X covers ``|Y| <= h(X) = sqrt(r² - X²)``; its part below *y* is
    ``y + h`` where ``h >= |y|`` (``|X| <= w = sqrt(r² - y²)``) and, beyond, all of it (2h) when
    ``y >= 0`` or none of it when ``y < 0``.  Integrated with ``∫h = (X·h + r²·asin(X/r)) / 2``.
    """
    x = np.clip(x, -r, r)
    y = np.clip(y, -r, r)
    w = np.sqrt(np.maximum(r * r - y * y, 0.0))

    def prim(t):
        h = np.sqrt(np.maximum(r * r - t * t, 0.0))
        return 0.5 * (t * h + r * r * np.arcsin(np.clip(t / r, -1.0, 1.0)))

    c = np.clip(x, -w, w)
    area = y * (c + w) + prim(c) - prim(-w)
    sides = 2.0 * (prim(np.minimum(x, -w)) - prim(-r)) + 2.0 * (prim(np.maximum(x, w)) - prim(w))
    return area + np.where(y >= 0, sides, 0.0)


def circle_overlap(shape, x: float, y: float, radius_pix: float) -> np.ndarray:
    """Exact area of each pixel inside a circle: ``(ny, nx)`` float64 in [0, 1].

    The same quantity as photutils' ``CircularAperture.to_mask(method="exact")`` (agreement
    ~1e-12), in closed form from the disk area below each pixel corner, without importing
    photutils (about 1 s).

    Parameters
    ----------
    shape : (ny, nx)
    x, y : float
        Circle centre, 0-based pixels (pixel ``(j, i)`` covers ``[i - 0.5, i + 0.5]`` in x).
    radius_pix : float
        Radius in pixels.
    """
    ny, nx = shape
    r = float(radius_pix)
    if r <= 0:
        return np.zeros(shape)
    xs = np.arange(nx + 1) - 0.5 - x
    ys = np.arange(ny + 1) - 0.5 - y
    cdf = _disk_area_below(xs[None, :], ys[:, None], r)
    area = cdf[1:, 1:] - cdf[:-1, 1:] - cdf[1:, :-1] + cdf[:-1, :-1]
    area[area < 1e-12] = 0.0  # rounding of corners outside the circle
    return np.minimum(area, 1.0)


class StampMatrices:
    """The object's window flattened to ``(n_wave, n_spaxel)`` matrices, NaN voxels zeroed.

    Every estimator is then a few matrix-vector products over the spaxels it uses, which is
    what keeps extraction at a few milliseconds per object for MUSE cubes.
    """

    def __init__(self, data, var):
        self.nz = data.shape[0]
        # float32 storage halves the memory traffic; products accumulate over <= 10^3 spaxels.
        d = np.array(data, dtype=np.float32, copy=True).reshape(self.nz, -1)
        good = np.isfinite(d)
        if var is not None:
            v = np.array(var, dtype=np.float32, copy=True).reshape(self.nz, -1)
            good &= v >= 0  # False for NaN
            v[~good] = 0.0
            self.V = v
        else:
            self.V = None
        d[~good] = 0.0
        self.good = good
        self.G = good.astype(np.float32)
        self.D = d
        self._iv = None

    @property
    def IV(self):
        """Inverse variance (0 for bad or zero-variance voxels); ones when there is no variance."""
        if self._iv is None:
            if self.V is None:
                self._iv = self.G
            else:
                self._iv = _inverse(self.V)
            self._div = self.D * self._iv
        return self._iv

    # Full-width matrix-vector products (BLAS) beat gathering the used columns first: the
    # gather is a copy of the whole block, the product of zeros is almost free.
    def plain(self, weights2d):
        """``Σ w·d``, ``Σ w²·v``, ``Σ w`` over good voxels, for a list of spatial weight maps.

        All maps go through one matrix product (one pass over the data).
        """
        W = np.stack([np.asarray(w, dtype=np.float32).ravel() for w in weights2d], axis=1)
        flux = self.D @ W
        var = (self.V @ (W * W)) if self.V is not None else np.full(flux.shape, np.nan)
        s = (self.G @ W).astype(np.float64)
        empty = (self.G @ np.abs(W)) == 0
        flux, var = _blank(flux, var, empty)
        return [((flux[:, k], var[:, k]), s[:, k]) for k in range(W.shape[1])]

    def weighted(self, weight2d, template2d, total):
        """Estimator calibrated on a template: ``Σ(w d/v) / Σ(w T/v) · total`` (λ-independent w, T)."""
        w = np.asarray(weight2d, dtype=np.float32).ravel()
        t = np.asarray(template2d, dtype=np.float32).ravel()
        iv = self.IV
        norm = (iv @ (w * t)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(norm > 0, total / norm, np.nan)
            flux = (self._div @ w) * scale
            var = (iv @ (w * w)) * scale**2 if self.V is not None else np.full(self.nz, np.nan)
            s = (iv @ w) * scale
        return _blank(flux, var, ~np.isfinite(scale)), np.nan_to_num(s)

    def optimal(self, profile, use2d):
        """Horne (1986) with a λ-dependent profile ``P (n_wave, ny, nx)`` normalised to unit flux."""
        p = profile.reshape(self.nz, -1).astype(np.float32) * np.asarray(use2d, dtype=np.float32).ravel()
        ivp = self.IV * p
        norm = np.einsum("ij,ij->i", ivp, p, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(norm > 0, 1.0 / norm, np.nan)
            flux = np.einsum("ij,ij->i", self._div, p, dtype=np.float64) * inv
            var = inv if self.V is not None else np.full(self.nz, np.nan)
            s = ivp.sum(axis=1, dtype=np.float64) * inv
        return _blank(flux, var, ~np.isfinite(inv)), np.nan_to_num(s)

    def mean(self, mask2d):
        """Mean per spaxel over *mask2d* and its variance (the local sky)."""
        m = np.asarray(mask2d, dtype=np.float32).ravel()
        n = (self.G @ m).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            flux = np.where(n > 0, (self.D @ m) / n, np.nan)
            var = (np.where(n > 0, (self.V @ m) / n**2, np.nan)
                   if self.V is not None else np.full(self.nz, np.nan))
        return flux, var


def _blank(flux, var, empty):
    """NaN where a channel had no usable spaxel (float64 results)."""
    flux = np.where(empty, np.nan, flux).astype(np.float64)
    var = np.where(empty, np.nan, var).astype(np.float64)
    return flux, var


def _inverse(v: np.ndarray, out: np.ndarray | None = None, pos: np.ndarray | None = None) -> np.ndarray:
    """``1/v`` where ``v > 0``, else 0, for a float32 array with no NaN (bad voxels zeroed).

    Written as ``pos / (v + ~pos)``: the same values as a masked divide, several times faster.
    *out* (float32) and *pos* (bool) are optional buffers of *v*'s shape.
    """
    pos = np.greater(v, 0, out=pos)
    if pos.all():
        return np.divide(1.0, v, out=out, dtype=np.float32)
    den = np.add(v, ~pos, out=out, dtype=np.float32)  # *out* may be *v*
    return np.divide(pos, den, out=out, dtype=np.float32)


class _LinearPass:
    """Every product ``Σ_spaxels M(λ, s)·w(s)`` an object's estimators need, in one blocked pass.

    ``M`` is one of the stamp matrices ``(n_wave, n_spaxel)`` that :class:`StampMatrices` would build
    (``D`` data, ``V`` variance, ``G`` good voxels, ``IV`` inverse variance, ``DIV`` = ``D·IV``,
    with bad voxels zeroed) and ``w`` a spatial weight map registered beforehand with
    :meth:`column`.  The stamp comes in blocks of channels small enough that a block and the
    matrices derived from it stay in the CPU cache: the window is read from memory once, and
    the derived matrices never reach it.  Products are float32 matrix products (BLAS), as in
    :class:`StampMatrices`.  A λ-dependent ``MUSE_PSF`` profile is handled through its node images
    (:meth:`~ifu_extract.psf.PSFModel.node_images`): the products with the interpolated
    profile are the same interpolation of the products with the two nodes around each channel.
    """

    KINDS = ("D", "V", "G", "IV", "DIV")

    def __init__(self, shape, has_var: bool):
        self.nz = int(shape[0])
        self.npix = int(np.prod(shape[1:]))
        self.has_var = has_var
        self._cols = {k: [] for k in self.KINDS}
        self._psf = None
        self._psf_cols = None
        self._W = None  # weight matrices, stacked when the first block comes
        self.out = {}

    def column(self, kind: str, weights) -> int:
        """Register the map *weights* ``(ny, nx)`` against matrix *kind*; returns its column."""
        self._cols[kind].append(np.asarray(weights, dtype=np.float32).ravel())
        return len(self._cols[kind]) - 1

    def psf(self, nodes: np.ndarray, i0: np.ndarray, frac: np.ndarray) -> None:
        """Register the optimal-extraction profile: node images ``(n, ny, nx)`` (spaxel selection
        applied) and, per channel, the lower node *i0* and interpolation weight *frac*.

        :meth:`run` then adds ``out["PSF"] = (num, norm, s)``: ``Σ DIV·P``, ``Σ IV·P²`` and
        ``Σ IV·P`` per channel for the interpolated profile ``P``.
        """
        imgs = nodes.reshape(len(nodes), -1).astype(np.float32)
        if len(imgs) == 1:  # λ-independent: three plain columns
            self._psf_cols = (self.column("DIV", imgs[0]), self.column("IV", imgs[0] * imgs[0]),
                              self.column("IV", imgs[0]))
            return
        n = len(imgs)
        # Columns per node k: I_k, I_k², I_k·I_(k+1) (zero for the last node), because the norm of
        # P = (1-f)·I_a + f·I_b is (1-f)²·Σ IV·I_a² + 2f(1-f)·Σ IV·I_a·I_b + f²·Σ IV·I_b².
        trio = np.zeros((self.npix, 3 * n), dtype=np.float32)
        trio[:, 0::3] = imgs.T
        trio[:, 1::3] = (imgs * imgs).T
        trio[:, 2:3 * (n - 1):3] = (imgs[:-1] * imgs[1:]).T
        lower = np.asarray(i0, dtype=np.intp)
        self._psf = (np.ascontiguousarray(imgs.T), trio, lower, lower + 1, np.asarray(frac, dtype=np.float64))

    def run(self, blocks) -> None:
        """Consume ``(z_start, data, var, bad)`` blocks (see :meth:`feed`), then :meth:`finish`."""
        for block in blocks:
            self.feed(*block)
        self.finish()

    def _start(self) -> None:
        self._W = {k: np.ascontiguousarray(np.stack(c, axis=1)) for k, c in self._cols.items() if c}
        self._acc = {k: np.empty((self.nz, w.shape[1]), dtype=np.float32) for k, w in self._W.items()}
        self._psf_acc = tuple(np.empty(self.nz) for _ in range(3)) if self._psf is not None else None
        self._gsum = self._W["G"].sum(axis=0, dtype=np.float64).astype(np.float32) if "G" in self._W else None
        self._scratch = None  # per-block temporaries, allocated once (fresh large arrays cost page faults)
        self._bool = None

    def feed(self, zs: int, data: np.ndarray, var: np.ndarray | None, bad: np.ndarray | None,
             positive: bool = False) -> None:
        """Add the products of one block of channels ``[zs, zs + n)``.

        *data* and *var* are ``(n, ny, nx)`` float32 arrays the pass may modify (its own
        scratch or the reader's), *var* None without variance; *bad* is None when every
        voxel of the block is usable, else the bool mask of unusable ones; *positive* says
        that every variance of the block is known to be > 0 (saves a pass; ignored when
        there are bad voxels, whose variance the pass sets to 0).
        """
        if self._W is None:
            self._start()
        W, out = self._W, self._acc
        nb = len(data)
        ze = zs + nb
        if self._scratch is None or len(self._scratch) < nb:
            self._scratch = np.empty((nb, self.npix), np.float32)
            self._bool = np.empty((nb, self.npix), bool)
        d = data.reshape(nb, self.npix)
        v = None if var is None or not self.has_var else var.reshape(nb, self.npix)
        g = None
        if bad is not None:
            bad = bad.reshape(nb, self.npix)
            np.copyto(d, 0.0, where=bad)
            if v is not None:
                np.copyto(v, 0.0, where=bad)
            g = self._scratch[:nb]
            np.logical_not(bad, out=g, casting="unsafe")
        if "G" in W:
            if g is None:
                out["G"][zs:ze] = self._gsum
            else:
                np.matmul(g, W["G"], out=out["G"][zs:ze])
        if "D" in W:
            np.matmul(d, W["D"], out=out["D"][zs:ze])
        if "V" in W and v is not None:
            np.matmul(v, W["V"], out=out["V"][zs:ze])
        if self._psf is None and "IV" not in W and "DIV" not in W:
            return
        if v is not None:  # in place: D and V are no longer needed, the block stays small in cache
            if positive and bad is None:
                iv = np.divide(1.0, v, out=v)
            else:
                iv = _inverse(v, v, self._bool[:nb])
            div = np.multiply(d, iv, out=d)
        else:
            iv = np.ones_like(d) if g is None else g
            div = d
        if "IV" in W:
            np.matmul(iv, W["IV"], out=out["IV"][zs:ze])
        if "DIV" in W:
            np.matmul(div, W["DIV"], out=out["DIV"][zs:ze])
        if self._psf is not None:
            imgs, trio, lower, upper, frac = self._psf
            psf_num, psf_norm, psf_s = self._psf_acc
            a, b, f = lower[zs:ze], upper[zs:ze], frac[zs:ze]
            k0, k1 = int(a.min()), int(b.max())
            ivt = (iv @ trio[:, 3 * k0:3 * k1 + 3]).astype(np.float64)
            dvi = (div @ imgs[:, k0:k1 + 1]).astype(np.float64)
            rows = np.arange(nb)
            la, lb = a - k0, b - k0
            g1 = 1.0 - f
            psf_num[zs:ze] = g1 * dvi[rows, la] + f * dvi[rows, lb]
            psf_norm[zs:ze] = (g1 * g1 * ivt[rows, 3 * la + 1] + 2.0 * f * g1 * ivt[rows, 3 * la + 2]
                               + f * f * ivt[rows, 3 * lb + 1])
            psf_s[zs:ze] = g1 * ivt[rows, 3 * la] + f * ivt[rows, 3 * lb]

    def finish(self) -> None:
        """Fill :attr:`out`: each matrix kind's products ``(n_wave, n_col)`` float64, and
        ``out["PSF"] = (num, norm, s)`` when a profile was registered."""
        if self._W is None:
            self._start()
        self.out = {k: o.astype(np.float64) for k, o in self._acc.items()}
        if self._psf is not None:
            self.out["PSF"] = self._psf_acc
        elif self._psf_cols is not None:
            c_num, c_norm, c_s = self._psf_cols
            self.out["PSF"] = (self.out["DIV"][:, c_num], self.out["IV"][:, c_norm], self.out["IV"][:, c_s])
        self._acc = self._scratch = self._bool = None  # free the buffers: a group holds many passes


def _array_blocks(data, var, step):
    """Channel blocks of caller's arrays, copied to float32 scratch with their bad-voxel masks."""
    npix = int(np.prod(data.shape[1:]))
    dbuf = np.empty((step, npix), np.float32)
    vbuf = None if var is None else np.empty((step, npix), np.float32)
    for zs in range(0, data.shape[0], step):
        n = min(step, data.shape[0] - zs)
        d = dbuf[:n]
        np.copyto(d, data[zs:zs + n].reshape(n, npix), casting="unsafe")
        good = np.isfinite(d)
        v = None
        if vbuf is not None:
            v = vbuf[:n]
            np.copyto(v, var[zs:zs + n].reshape(n, npix), casting="unsafe")
            with np.errstate(invalid="ignore"):
                good &= v >= 0  # False for NaN
        yield zs, d, v, (None if good.all() else ~good)


def extract_object(data: np.ndarray, var: np.ndarray | None, wave: np.ndarray, pixscale: float,
                   region: ObjectRegion, cfg: ExtractConfig, *, white: np.ndarray | None = None,
                   white_var: np.ndarray | None = None, weight_images: dict | None = None) -> ObjectResult:
    """Extract every configured spectrum of one object from its stamp.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, ny, nx)`` stamp of the cube (NaN for bad or outside voxels), per spaxel.
    wave : numpy.ndarray
        ``(n_wave,)`` Angstrom.
    pixscale : float
        Spaxel side, arcsec.
    region : ObjectRegion
    cfg : ExtractConfig
    white, white_var : numpy.ndarray, optional
        ``(ny, nx)`` white-light stamp (computed from *data* when not given).
    weight_images : dict, optional
        ``{tag: (ny, nx) image}`` of ancillary weight images on the stamp grid.

    Returns
    -------
    ObjectResult
        ``spectra`` maps tags to :class:`Spectrum1D`; the ``_SKYSUB`` versions are included
        when the sky mask has usable spaxels.
    """
    data = np.asarray(data)
    var = None if var is None else np.asarray(var)
    if cfg.white and white is None:
        with np.errstate(invalid="ignore"):
            white = np.nanmean(data, axis=0)
    step = channels_per_block(int(np.prod(data.shape[1:])))
    return _extract(lambda: _array_blocks(data, var, step), data.shape, var is not None, wave,
                    pixscale, region, cfg, white, white_var, weight_images)


def extract_window(cube, z0: int, z1: int, region: ObjectRegion, cfg: ExtractConfig, *,
                   white: np.ndarray | None = None, white_var: np.ndarray | None = None,
                   weight_images: dict | None = None) -> ObjectResult:
    """:func:`extract_object` on the window ``region.box`` of *cube*, read block by block.

    The same spectra as ``extract_object(*cube.window(*region.box, z0, z1), ...)`` without
    ever holding the window in memory: each block of channels is read from the memory-mapped
    cube (:meth:`~ifu_extract.cubeio.Cube.window_blocks`) and used while it is in the CPU
    cache.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    z0, z1 : int
        Half-open channel range.
    region, cfg, white, white_var, weight_images
        As for :func:`extract_object`.
    """
    got = extract_windows(cube, z0, z1, [(region, white, white_var, weight_images)], cfg)[0]
    if isinstance(got, Exception):
        raise got
    return got


#: Fewer sky spaxels than this (or than a quarter of the object's) get a "thin sky" note.
THIN_SKY_MIN = 10

#: Bytes of one block of channels of a group's union window (data and variance) read at a time
#: by :func:`extract_windows`: the block stays in the CPU's last-level cache while each object's
#: part of it is copied out.
GROUP_BLOCK_BYTES = 16 << 20


def extract_windows(cube, z0: int, z1: int, jobs, cfg: ExtractConfig) -> list:
    """:func:`extract_window` for several objects, reading the union of their windows once.

    Neighbouring objects' windows overlap (a crowded MUSE field reads each voxel about three
    times over with 5″ stamps); reading their union block by block and copying each object's
    part out of it while it is in the CPU cache reads each voxel once.  The spectra are the
    same as object by object.

    Parameters
    ----------
    cube : ifu_extract.cubeio.Cube
    z0, z1 : int
        Half-open channel range.
    jobs : list of (ObjectRegion, white, white_var, weight_images)
        As the arguments of :func:`extract_window`, one tuple per object.
    cfg : ExtractConfig

    Returns
    -------
    list
        Per job, its :class:`ObjectResult`, or the exception that stopped it (the other
        objects go on).
    """
    z0, z1 = max(int(z0), 0), min(int(z1), cube.nwave)
    wave = cube.wave[z0:z1]
    plans = []
    for region, white, white_var, weight_images in jobs:
        try:
            x0, x1, y0, y1 = region.box
            if cfg.white and white is None:
                white = _window_white(cube, region.box, z0, z1)
            plans.append(_Plan((z1 - z0, y1 - y0, x1 - x0), cube.has_var, wave, cube.pixscale, region, cfg,
                               white, white_var, weight_images))
        except Exception as exc:  # noqa: BLE001 - reported per object by the caller
            plans.append(exc)
    live = [p for p in plans if isinstance(p, _Plan)]
    failed: dict[int, Exception] = {}
    if len(live) == 1:  # the reader's buffers are the object's own: no copy
        p = live[0]
        try:
            for zs, d, v, bad, positive in cube.window_blocks(*p.box, z0, z1, with_flags=True):
                p.lp.feed(zs - z0, d, v, bad, positive)
        except Exception as exc:  # noqa: BLE001
            failed[id(p)] = exc
    elif live:
        ux0, ux1 = min(p.box[0] for p in live), max(p.box[1] for p in live)
        uy0, uy1 = min(p.box[2] for p in live), max(p.box[3] for p in live)
        npix = max(int(np.prod(p.shape[1:])) for p in live)
        step = max(1, min(channels_per_block(npix), GROUP_BLOCK_BYTES // (8 * (ux1 - ux0) * (uy1 - uy0))))
        flat = np.empty((3, step * npix), dtype=np.float32)  # one object's copy of a block at a time
        views = {}  # per object: its part of the union, and full-block views of the copy buffers
        for p in live:
            x0, x1, y0, y1 = p.box
            shape = (step, y1 - y0, x1 - x0)
            size = step * shape[1] * shape[2]
            views[id(p)] = ((slice(None), slice(y0 - uy0, y1 - uy0), slice(x0 - ux0, x1 - ux0)),
                            flat[0, :size].reshape(shape), flat[1, :size].reshape(shape),
                            flat[2].view(bool)[:size].reshape(shape))
        try:
            for zs, d, v, bad, positive in cube.window_blocks(ux0, ux1, uy0, uy1, z0, z1, with_flags=True,
                                                              block=step):
                n = len(d)
                for p in live:
                    if id(p) in failed:
                        continue
                    try:
                        part, pd, pv, pb = views[id(p)]
                        pd = pd[:n]
                        np.copyto(pd, d[part])
                        if v is not None:
                            pv = pv[:n]
                            np.copyto(pv, v[part])
                        else:
                            pv = None
                        if bad is not None and bad[part].any():
                            pb = pb[:n]
                            np.copyto(pb, bad[part])
                        else:
                            pb = None
                        p.lp.feed(zs - z0, pd, pv, pb, positive and bad is None)
                    except Exception as exc:  # noqa: BLE001
                        failed[id(p)] = exc
        except Exception as exc:  # noqa: BLE001 - a read error stops every object of the group
            for p in live:
                failed.setdefault(id(p), exc)
    results = []
    for p in plans:
        if isinstance(p, Exception):
            results.append(p)
        elif id(p) in failed:
            results.append(failed[id(p)])
        else:
            try:
                p.lp.finish()
                results.append(p.result())
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
    return results


def _window_white(cube, box, z0, z1) -> np.ndarray:
    """Mean over channels of the finite voxels of a window, ``(ny, nx)`` float32."""
    x0, x1, y0, y1 = box
    total = np.zeros((y1 - y0, x1 - x0))
    count = np.zeros((y1 - y0, x1 - x0))
    for _, d, _ in cube.window_blocks(x0, x1, y0, y1, z0, z1, with_var=False):
        good = np.isfinite(d)
        total += np.where(good, d, 0.0).sum(axis=0)
        count += good.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def _extract(blocks, shape, has_var, wave, pixscale, region, cfg, white, white_var,
             weight_images) -> ObjectResult:
    """The estimators of :func:`extract_object` over a source of channel blocks."""
    plan = _Plan(shape, has_var, wave, pixscale, region, cfg, white, white_var, weight_images)
    plan.lp.run(blocks())
    return plan.result()


class _Plan:
    """One object's estimators: the weight maps registered on a :class:`_LinearPass` before the
    pass over its window, and the spectra assembled from the products after it."""

    def __init__(self, shape, has_var, wave, pixscale, region, cfg, white, white_var, weight_images):
        self.shape, self.has_var, self.cfg = shape, has_var, cfg
        self.box = region.box
        self.white, self.white_var = white, white_var
        self.obj = obj = region.obj_mask.astype(bool)
        self.lp = lp = _LinearPass(shape, has_var)
        self.notes: list[str] = []

        # Plain sums (the object mask and the apertures): D·w, V·w², G·w (and G·|w| if w < 0).
        self.tags, maps, self.metas = ["MUSE_TOT"], [obj], [{}]
        for radius in cfg.apertures:
            maps.append(aperture_weights(obj.shape, region.x, region.y, radius / pixscale, cfg.aperture_method))
            meta = {"APRADIUS": (radius, "[arcsec] aperture radius"),
                    "APMETHOD": (cfg.aperture_method, "exact overlap or centre rule")}
            if cfg.psf is not None:
                meta.update(_aperture_correction(cfg.psf, wave, radius, pixscale))
            self.tags.append(aperture_tag(radius))
            self.metas.append(meta)
        self.plain = []
        for w in maps:
            w = np.asarray(w, dtype=np.float32)
            self.plain.append((lp.column("D", w), lp.column("V", w * w), lp.column("G", w),
                               lp.column("G", np.abs(w)) if (w < 0).any() else None))

        # Weighted by images (λ-independent profiles) inside the object mask.
        images_w = ([("MUSE_WHITE", white)] if cfg.white else []) + list((weight_images or {}).items())
        self.weighted = []
        for tag, img in images_w:
            got = _image_weights(tag, img, obj, self.notes)
            if got is None:
                continue
            w, t, total = np.asarray(got[0], np.float32), np.asarray(got[1], np.float32), got[2]
            self.weighted.append((tag, total, lp.column("IV", w * t), lp.column("IV", w * w),
                                  lp.column("IV", w), lp.column("DIV", w)))

        # Optimal PSF-weighted extraction: spaxels of the mask plus a disk, minus neighbours.
        if cfg.psf is not None:
            nodes, i0, frac = cfg.psf.node_images(wave, obj.shape, region.x, region.y, pixscale)
            fwhm_max = float(np.max(cfg.psf.fwhm(wave))) / pixscale
            yy, xx = np.indices(obj.shape)
            disk = (xx - region.x) ** 2 + (yy - region.y) ** 2 <= (cfg.psf_radius_fwhm * fwhm_max) ** 2
            use = obj | disk
            if region.neighbours is not None:
                use &= ~region.neighbours
            lp.psf(nodes.astype(np.float32) * use.astype(np.float32), i0, frac)

        # Local sky: mean per spaxel over the sky mask.
        sky = region.sky_mask.astype(bool)
        self.n_sky = int(sky.sum())
        self.sky_cols = None
        if cfg.skysub and self.n_sky > 0:
            m = sky.astype(np.float32)
            self.sky_cols = (lp.column("D", m), lp.column("V", m), lp.column("G", m))

    def result(self) -> ObjectResult:
        """The spectra, once the pass has been fed every block and finished."""
        out, cfg, has_var = self.lp.out, self.cfg, self.has_var
        nan = np.full(self.shape[0], np.nan)
        spectra: dict[str, Spectrum1D] = {}
        sums: dict[str, np.ndarray] = {}
        notes = list(self.notes)
        with np.errstate(divide="ignore", invalid="ignore"):
            for tag, meta, (cd, cv, cg, cabs) in zip(self.tags, self.metas, self.plain):
                s = out["G"][:, cg]
                empty = (out["G"][:, cabs] if cabs is not None else s) == 0
                flux, var = _blank(out["D"][:, cd], out["V"][:, cv] if has_var else nan, empty)
                spectra[tag] = Spectrum1D(flux, var, meta)
                sums[tag] = s
            for tag, total, c_wt, c_ww, c_w, c_dw in self.weighted:
                norm = out["IV"][:, c_wt]
                scale = np.where(norm > 0, total / norm, np.nan)
                flux = out["DIV"][:, c_dw] * scale
                var = out["IV"][:, c_ww] * scale**2 if has_var else nan
                flux, var = _blank(flux, var, ~np.isfinite(scale))
                spectra[tag] = Spectrum1D(flux, var, {})
                sums[tag] = np.nan_to_num(out["IV"][:, c_w] * scale)
            if cfg.psf is not None:
                num, norm, s = out["PSF"]
                inv = np.where(norm > 0, 1.0 / norm, np.nan)
                flux, var = _blank(num * inv, inv if has_var else nan, ~np.isfinite(inv))
                spectra["MUSE_PSF"] = Spectrum1D(
                    flux, var, {"PSFSRC": (cfg.psf.source, "PSF from header, given, fitted or fallback")})
                sums["MUSE_PSF"] = np.nan_to_num(s * inv)
            if cfg.psf_note:
                notes.append(cfg.psf_note)
            if cfg.skysub:
                if self.sky_cols is None:
                    notes.append("no sky spaxel: _SKYSUB spectra not computed")
                else:
                    n_obj = int(self.obj.sum())
                    if self.n_sky < max(THIN_SKY_MIN, n_obj / 4):
                        # Subtracting the mean of n_sky spaxels from a sum of n_obj adds n_obj/n_sky
                        # times the object's own variance: above 4x (S/N more than halved), or with
                        # under 10 spaxels, the _SKYSUB spectra are the sky's noise.
                        notes.append(f"thin sky: {self.n_sky} sky for {n_obj} object spaxels")
                    cd, cv, cg = self.sky_cols
                    n = out["G"][:, cg]
                    sky_flux = np.where(n > 0, out["D"][:, cd] / n, np.nan)
                    sky_var = np.where(n > 0, out["V"][:, cv] / n**2, np.nan) if has_var else nan
                    spectra["MUSE_SKY"] = Spectrum1D(sky_flux, sky_var, {"NSKYSPX": (self.n_sky, "sky spaxels")})
                    for tag in [t for t in spectra if t != "MUSE_SKY"]:
                        sp, s = spectra[tag], sums[tag]
                        spectra[tag + "_SKYSUB"] = Spectrum1D(sp.flux - sky_flux * s, sp.var + s * s * sky_var,
                                                              dict(sp.meta))
        images = {}
        if self.white is not None:
            wvar = None if self.white_var is None else np.asarray(self.white_var, dtype=np.float32)
            images["MUSE_WHITE"] = (np.asarray(self.white, dtype=np.float32), wvar)
        return ObjectResult(spectra, images, int(self.obj.sum()), self.n_sky, notes)


def _image_weights(tag, image, obj, notes):
    """Weights, template and total of an image-weighted spectrum that estimates the flux inside
    the object mask, or None (with a note) when the image has nothing finite there.

    The weights are the image inside the mask with its minimum subtracted (MPDAF's choice, so
    that they are >= 0), and the estimate is calibrated on the image itself:
    ``F(λ) = Σ(w d/v) / Σ(w I/v) · Σ_mask I``.  For a source whose profile does not change with
    wavelength (``d = f(λ)·P``, ``I ∝ P``) this is exactly the flux inside the mask, whatever
    the weights, so the weighting only buys S/N and never biases the flux.
    """
    img = np.where(obj & np.isfinite(image), image, np.nan)
    if not np.isfinite(img).any():
        notes.append(f"{tag}: no finite weight inside the object mask")
        return None
    template = np.nan_to_num(img, nan=0.0)
    total = float(template.sum())
    weight = np.nan_to_num(img - np.nanmin(img), nan=0.0)
    if weight.sum() <= 0 or total <= 0:
        notes.append(f"{tag}: image has no positive flux inside the object mask; uniform weights used")
        weight, template, total = obj.astype(float), obj.astype(float), float(obj.sum())
    return weight, template, total


def _aperture_correction(psf: PSFModel, wave, radius, pixscale) -> dict:
    """Point-source encircled energy of the aperture at three wavelengths, and 1/EE at the middle."""
    pick = (float(wave[0]), float(wave[len(wave) // 2]), float(wave[-1]))
    try:
        return dict(_aperture_correction_cached(psf, pick, float(radius), float(pixscale)))
    except TypeError:  # an unhashable PSF (lists for coefficients): compute it each time
        return dict(_aperture_correction_cached.__wrapped__(psf, pick, float(radius), float(pixscale)))


# The same for every object of a run (it depends on the PSF, the band and the radius only).
@functools.lru_cache(maxsize=64)
def _aperture_correction_cached(psf: PSFModel, pick: tuple, radius: float, pixscale: float) -> dict:
    pick = np.array(pick)
    size = int(np.ceil(2 * radius / pixscale + 8 * np.max(psf.fwhm(pick)) / pixscale)) | 1
    c = (size - 1) / 2.0
    stamps = psf.stamps(pick, (size, size), c, c, pixscale, nodes=3)
    w = aperture_weights((size, size), c, c, radius / pixscale, "exact")
    ee = (stamps * w).sum(axis=(1, 2))
    return {"EEBLUE": (round(float(ee[0]), 5), "PSF encircled energy at the blue end"),
            "EEMID": (round(float(ee[1]), 5), "PSF encircled energy at mid band"),
            "EERED": (round(float(ee[2]), 5), "PSF encircled energy at the red end"),
            "APCOR": (round(float(1.0 / ee[1]), 5), "point-source aperture correction (mid band)")}

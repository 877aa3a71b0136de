"""Sky coordinates of pixel-table rows: MPDAF's conventions, sky apertures, fast mask look-up.

Exactness first.  :func:`sky_positions` is MPDAF's ``PixTable.get_pos_sky`` step for step (float64
from the float32 columns, same operations in the same order), and :func:`in_region` is its
``select_sky`` test, so rows on an aperture boundary fall on the same side as in MPDAF.

Speed second.  Those float64 trigonometric formulas cost ~100 ns a row; two cheap pre-stages
avoid them on most rows:

* apertures: a conservative box (or annulus sector, for projected tables) in the table's own
  float32 coordinates keeps only candidate rows; the exact test runs on the candidates;
* mask images (:class:`MaskProjector`): the map from table coordinates to mask-image pixels is
  smooth over a 1' field, so a low-order 2-D polynomial fitted to astropy's ``wcs_world2pix``
  (the local gnomonic projection, validated on a dense grid) gives each row's pixel in a few
  float32 operations; rows whose position lands within the validated error bound of a pixel
  boundary, or outside the fitted domain, are recomputed exactly.  The result is identical to
  MPDAF's ``mask_column``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy import units as u

from ..errors import InputError, ParameterError

__all__ = [
    "DEG2RAD",
    "RAD2DEG",
    "SkyRegion",
    "SkyFrame",
    "sky_positions",
    "in_region",
    "candidate_mask",
    "region_outside_field",
    "MaskProjector",
    "CellGrid",
    "load_mask_image",
    "f32_ceil",
    "f32_floor",
]

DEG2RAD = np.pi / 180
RAD2DEG = 180 / np.pi


def f32_ceil(value: float) -> np.float32:
    """Smallest float32 >= *value* (float64): ``x >= value`` <=> ``x >= f32_ceil(value)`` for
    every float32 ``x``, so a float32 comparison gives MPDAF's float64 answer."""
    f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return f


def f32_floor(value: float) -> np.float32:
    """Largest float32 <= *value* (float64)."""
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


@dataclass(frozen=True)
class SkyRegion:
    """A sky aperture, as MPDAF's ``sky=(y, x, size, shape)``.

    Attributes
    ----------
    ra, dec : float
        Centre, degrees (pixels for tables with pixel units).
    size : float
        Radius (circle) or half side (square), arcsec (pixels for pixel units).
    shape : {'C', 'S'}
        Circle or square (aligned with RA/Dec).
    """

    ra: float
    dec: float
    size: float
    shape: str = "C"

    def describe(self) -> str:
        kind = "circle" if self.shape == "C" else "square"
        return f"{kind} at RA {self.ra:.6f} Dec {self.dec:.6f} size {self.size:g}\""


@dataclass(frozen=True)
class SkyFrame:
    """What turns a table's xpos/ypos into RA/Dec (as MPDAF does).

    Attributes
    ----------
    convention : str
        ``positioned`` or ``projected``.
    unit : str
        ``deg``, ``rad`` or ``pix``: the xpos/ypos unit.
    xc, yc : float
        Field centre, degrees.
    """

    convention: str
    unit: str
    xc: float
    yc: float

    @classmethod
    def of(cls, table) -> "SkyFrame":
        """The frame of a :class:`~ifu_extract.pixtable.reader.PixTable` (InputError when the
        table has no sky coordinates)."""
        table.meta.require_sky(table.path)
        unit = table.unit("xpos")
        where = "BUNIT of the xpos extension" if table.layout == "image" else "TUNIT of the xpos column"
        fix = (f"set the {where} to 'deg' (positioned tables) or 'rad' (projected ones), as the "
               "MUSE pipeline writes (MPDAF refuses the file too)")
        if unit is None:
            text = table.columns["xpos"].unit
            problem = (f"column 'xpos' has no unit ({where})" if not text else
                       f"column 'xpos' has an unknown unit {text!r}")
            raise InputError(table.path, problem + ", so its positions cannot be placed on the sky", fix)
        if unit == u.deg:
            name = "deg"
        elif unit == u.rad:
            name = "rad"
        elif unit == u.pix:
            name = "pix"
        else:
            raise InputError(table.path, f"column 'xpos' is in {unit}, not an angle or pixels", fix)
        return cls(table.meta.convention, name, table.meta.xc, table.meta.yc)

    @property
    def spherical(self) -> bool:
        return self.unit in ("deg", "rad")


def sky_positions(frame: SkyFrame, xpos, ypos):
    """RA, Dec (deg; pixels for pixel units) of rows, as MPDAF's ``get_pos_sky`` (numpy path).

    Parameters
    ----------
    xpos, ypos : ndarray
        Table columns (any float type; computed in float64).
    """
    xpos = np.asarray(xpos, dtype=np.float64)
    ypos = np.asarray(ypos, dtype=np.float64)
    if frame.convention == "projected":
        phi = xpos
        theta = ypos + np.pi / 2
        dp = frame.yc * DEG2RAD
        ra = np.arctan2(np.cos(theta) * np.sin(phi),
                        np.sin(theta) * np.cos(dp) +
                        np.cos(theta) * np.sin(dp) * np.cos(phi)) * RAD2DEG
        xs = frame.xc + ra
        ys = np.arcsin(np.sin(theta) * np.sin(dp) -
                       np.cos(theta) * np.cos(dp) * np.cos(phi)) * RAD2DEG
    elif frame.unit == "deg":
        xs = frame.xc + xpos
        ys = frame.yc + ypos
    elif frame.unit == "rad":
        xs = frame.xc + xpos * RAD2DEG
        ys = frame.yc + ypos * RAD2DEG
    else:
        xs = frame.xc + xpos
        ys = frame.yc + ypos
    return xs, ys


def in_region(frame: SkyFrame, xpos, ypos, region: SkyRegion) -> np.ndarray:
    """MPDAF's ``select_sky`` test of one aperture (float64, same operation order)."""
    xs, ys = sky_positions(frame, xpos, ypos)
    x0, y0, size = region.ra, region.dec, region.size
    if region.shape == "C":
        if frame.spherical:
            return (((xs - x0) * 3600 * np.cos(y0 * DEG2RAD)) ** 2
                    + ((ys - y0) * 3600) ** 2) < size ** 2
        return ((xs - x0) ** 2 + (ys - y0) ** 2) < size ** 2
    if region.shape == "S":
        if frame.spherical:
            return ((np.abs((xs - x0) * 3600 * np.cos(y0 * DEG2RAD)) < size)
                    & (np.abs((ys - y0) * 3600) < size))
        return (np.abs(xs - x0) < size) & (np.abs(ys - y0) < size)
    raise ValueError(f"unknown aperture shape {region.shape!r}")


def _angular_sep(ra1, dec1, ra2, dec2) -> float:
    """Great-circle distance, radians (haversine; inputs in degrees)."""
    p1, p2 = dec1 * DEG2RAD, dec2 * DEG2RAD
    dl = (ra2 - ra1) * DEG2RAD
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * math.asin(min(1.0, math.sqrt(a)))


def _native_of(frame: SkyFrame, ra: float, dec: float) -> tuple[float, float]:
    """(phi, r) of a sky position in the native frame of a projected table (radians)."""
    a = (ra - frame.xc) * DEG2RAD
    d, d0 = dec * DEG2RAD, frame.yc * DEG2RAD
    east = math.cos(d) * math.sin(a)
    north = math.sin(d) * math.cos(d0) - math.cos(d) * math.sin(d0) * math.cos(a)
    return math.atan2(east, -north), _angular_sep(frame.xc, frame.yc, ra, dec)


def candidate_mask(frame: SkyFrame, xpos: np.ndarray, ypos: np.ndarray,
                   region: SkyRegion) -> np.ndarray | None:
    """Conservative float32 pre-selection of the rows that may lie in *region*.

    Every row MPDAF would select is a candidate; most others are not.  Returns None when no
    safe pre-selection exists (near a pole), meaning "test every row exactly".

    Parameters
    ----------
    xpos, ypos : ndarray of float32
        Table columns, native byte order.
    """
    size = float(region.size)
    if frame.spherical and abs(region.dec) > 80.0:
        return None
    if frame.convention == "projected":
        if not frame.spherical:
            return None
        rho = size / 3600.0 * DEG2RAD * (1.5 if region.shape == "C" else 2.2) + 1e-9
        phi0, r0 = _native_of(frame, region.ra, region.dec)
        r = -ypos  # ypos = theta - pi/2 = -r
        keep = (r >= f32_floor(r0 - rho)) & (r <= f32_ceil(r0 + rho))
        if r0 > rho:
            half = math.asin(min(1.0, 1.5 * rho / r0)) + 1e-5
            if half < math.pi:
                dphi = xpos - np.float32(phi0)
                dphi = np.abs(dphi - np.float32(2 * np.pi) * np.round(dphi / np.float32(2 * np.pi)))
                keep &= dphi <= np.float32(half)
        return keep
    # positioned: xs = xc + xpos*k and ys = yc + ypos*k, k the unit factor
    k = 1.0 if frame.unit in ("deg", "pix") else RAD2DEG
    if frame.spherical:
        cosv = abs(math.cos(region.dec * DEG2RAD))
        hx = size / 3600.0 / max(cosv, 1e-12)
        hy = size / 3600.0
    else:
        hx = hy = size
    cx, cy = (region.ra - frame.xc) / k, (region.dec - frame.yc) / k
    hx, hy = hx / k * (1 + 1e-7) + 1e-12, hy / k * (1 + 1e-7) + 1e-12
    keep = (xpos >= f32_floor(cx - hx)) & (xpos <= f32_ceil(cx + hx))
    keep &= (ypos >= f32_floor(cy - hy)) & (ypos <= f32_ceil(cy + hy))
    return keep


def region_outside_field(frame: SkyFrame, header_limits: dict, region: SkyRegion) -> bool:
    """True when *region* cannot touch the field described by the table's LIMITS keywords.

    Parameters
    ----------
    header_limits : dict
        ``{"X LOW": .., "X HIGH": .., "Y LOW": .., "Y HIGH": ..}`` in the table's xpos/ypos
        units (missing keys: the test is skipped and False returned).
    """
    need = ("X LOW", "X HIGH", "Y LOW", "Y HIGH")
    if any(header_limits.get(k) is None for k in need):
        return False
    size_deg = region.size / 3600.0 if frame.spherical else region.size
    if frame.convention == "projected":
        rmax = max(abs(header_limits["Y LOW"]), abs(header_limits["Y HIGH"]))
        dist = _angular_sep(frame.xc, frame.yc, region.ra, region.dec)
        return dist - 2.0 * size_deg * DEG2RAD > rmax
    k = 1.0 if frame.unit in ("deg", "pix") else RAD2DEG
    ra_lo, ra_hi = frame.xc + header_limits["X LOW"] * k, frame.xc + header_limits["X HIGH"] * k
    de_lo, de_hi = frame.yc + header_limits["Y LOW"] * k, frame.yc + header_limits["Y HIGH"] * k
    cosv = max(abs(math.cos(region.dec * DEG2RAD)), 1e-12) if frame.spherical else 1.0
    hx, hy = 2.0 * size_deg / cosv, 2.0 * size_deg
    return (region.ra + hx < ra_lo or region.ra - hx > ra_hi
            or region.dec + hy < de_lo or region.dec - hy > de_hi)


# --------------------------------------------------------------------------------------------
# Mask images: table coordinates -> mask pixel, fast and exact
# --------------------------------------------------------------------------------------------

def _design(s, t, degree):
    """Monomials s**i t**j with i + j <= degree, columns in :func:`_terms` order."""
    return np.stack([s ** i * t ** j for i, j in _terms(degree)], axis=-1)


def _terms(degree):
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


class MaskProjector:
    """Map pixel-table rows to the nearest pixel of a mask image, identically to MPDAF.

    MPDAF's ``mask_column`` computes RA/Dec of every row, calls ``wcs_world2pix``, rounds with
    ``int(p + 0.5)`` and clips to the image.  Here a polynomial in the table's own coordinates
    (``xpos, ypos`` for positioned tables; ``r sin(phi), -r cos(phi)`` for projected ones),
    fitted to that exact chain on a grid over the field, gives the pixel position in float32.
    Its worst error on a dense validation set (float32 evaluation included), doubled, plus one
    float32 spacing of the pixel coordinates, is the band ``tol`` around pixel boundaries inside
    which rows are recomputed exactly, as are rows outside the fitted domain.

    Parameters
    ----------
    frame : SkyFrame
        Coordinates of the table.
    wcs : astropy.wcs.WCS
        Celestial WCS of the mask image.
    shape : (int, int)
        Mask image shape (ny, nx).
    domain : (float, float, float, float)
        ``(xlo, xhi, ylo, yhi)``: extent of the table's xpos/ypos.
    """

    #: Largest acceptable band: beyond it the polynomial is not used (every row exact).
    MAX_TOL = 0.02

    def __init__(self, frame: SkyFrame, wcs, shape, domain):
        self.frame = frame
        self.wcs = wcs
        self.ny, self.nx = int(shape[0]), int(shape[1])
        xlo, xhi, ylo, yhi = (float(v) for v in domain)
        if frame.convention == "projected":
            rmax = max(abs(ylo), abs(yhi))
            ulo, uhi, vlo, vhi = -rmax, rmax, -rmax, rmax
        else:
            ulo, uhi, vlo, vhi = xlo, xhi, ylo, yhi
        # A little margin so that rows on the limits are inside.
        pu = 0.01 * (uhi - ulo) + 1e-12
        pv = 0.01 * (vhi - vlo) + 1e-12
        self.ulo, self.uhi, self.vlo, self.vhi = ulo - pu, uhi + pu, vlo - pv, vhi + pv
        self.cu, self.cv = 0.5 * (self.ulo + self.uhi), 0.5 * (self.vlo + self.vhi)
        self.su = 2.0 / max(self.uhi - self.ulo, 1e-300)
        self.sv = 2.0 / max(self.vhi - self.vlo, 1e-300)
        self.coef = None
        self.tol = np.inf
        self.degree = None
        self._fit()

    # exact chain (MPDAF) ----------------------------------------------------------------------
    def exact_pixel_float(self, xpos, ypos):
        """Pixel position (x, y), 0-based float64, by MPDAF's chain."""
        xs, ys = sky_positions(self.frame, xpos, ypos)
        ax, ay = self.wcs.wcs_world2pix(xs, ys, 0)
        return ax, ay

    def exact_index(self, xpos, ypos):
        """Nearest pixel (ix, iy) by MPDAF's chain: ``int(p + 0.5)`` then clip."""
        ax, ay = self.exact_pixel_float(xpos, ypos)
        with np.errstate(invalid="ignore"):
            ix = (ax + 0.5).astype(np.int64)
            iy = (ay + 0.5).astype(np.int64)
        np.clip(ix, 0, self.nx - 1, out=ix)
        np.clip(iy, 0, self.ny - 1, out=iy)
        return ix, iy

    # fast path --------------------------------------------------------------------------------
    def _uv(self, xpos, ypos):
        """float32 fit variables of float32 table coordinates (native order)."""
        if self.frame.convention == "projected":
            r = -ypos
            return r * np.sin(xpos), -(r * np.cos(xpos))
        return xpos, ypos

    def _table_coords(self, u_, v_):
        """float32 table coordinates of fit variables (float64): the grid used for fitting."""
        if self.frame.convention == "projected":
            r = np.hypot(u_, v_)
            return np.arctan2(u_, -v_).astype(np.float32), (-r).astype(np.float32)
        return u_.astype(np.float32), v_.astype(np.float32)

    def _fit(self) -> None:
        rng = np.random.default_rng(12345)
        g = np.linspace(-1.0, 1.0, 33)
        gs, gt = np.meshgrid(g, g)
        fit_s = np.concatenate([gs.ravel(), rng.uniform(-1, 1, 2000)])
        fit_t = np.concatenate([gt.ravel(), rng.uniform(-1, 1, 2000)])
        x32, y32 = self._table_coords(self.cu + fit_s / self.su, self.cv + fit_t / self.sv)
        with np.errstate(invalid="ignore", divide="ignore"):
            px, py = self.exact_pixel_float(x32, y32)
        # Fit on the float32 inputs actually seen: recompute s, t from them.
        s, t = self._st(*self._uv(x32, y32))
        s, t = s.astype(np.float64), t.astype(np.float64)
        ok = np.isfinite(px) & np.isfinite(py)
        if ok.sum() < 100:
            return
        vs = rng.uniform(-1, 1, 40000)
        vt = rng.uniform(-1, 1, 40000)
        edge = np.linspace(-1, 1, 401)
        vs = np.concatenate([vs, edge, edge, -np.ones(401), np.ones(401)])
        vt = np.concatenate([vt, -np.ones(401), np.ones(401), edge, edge])
        vx32, vy32 = self._table_coords(self.cu + vs / self.su, self.cv + vt / self.sv)
        with np.errstate(invalid="ignore", divide="ignore"):
            vpx, vpy = self.exact_pixel_float(vx32, vy32)
        for degree in (2, 3, 4, 5):
            a = _design(s[ok], t[ok], degree)
            cx = np.linalg.lstsq(a, px[ok], rcond=None)[0]
            cy = np.linalg.lstsq(a, py[ok], rcond=None)[0]
            self.degree, self.coef = degree, (cx, cy)
            fx, fy = self._poly(vx32, vy32)
            err = max(np.nanmax(np.abs(fx - vpx)), np.nanmax(np.abs(fy - vpy)))
            # index() adds 0.5 in float32: one more rounding of up to half a float32 spacing
            top = float(max(np.nanmax(np.abs(fx)), np.nanmax(np.abs(fy)))) + 1.0
            tol = 2.0 * err + float(np.spacing(np.float32(top))) + 1e-6
            if np.isfinite(tol) and tol < self.MAX_TOL:
                self.tol = tol
                return
        self.coef, self.degree, self.tol = None, None, np.inf

    def _st(self, u_, v_):
        return ((u_ - np.float32(self.cu)) * np.float32(self.su),
                (v_ - np.float32(self.cv)) * np.float32(self.sv))

    def _poly(self, xpos, ypos):
        """float32 pixel position of float32 table coordinates (the fast path)."""
        s, t = self._st(*self._uv(xpos, ypos))
        out = []
        terms = _terms(self.degree)
        for c in self.coef:
            coef = {ij: np.float32(v) for ij, v in zip(terms, c)}
            acc = None
            # Horner in s of polynomials in t: sum_i s**i * P_i(t).
            for i in range(self.degree, -1, -1):
                p = None
                for j in range(self.degree - i, -1, -1):
                    p = (np.full_like(t, coef[(i, j)]) if p is None
                         else p * t + coef[(i, j)])
                acc = p if acc is None else acc * s + p
            out.append(acc)
        return out[0], out[1]

    def index(self, xpos: np.ndarray, ypos: np.ndarray):
        """Nearest mask pixel (ix, iy) of every row, identical to MPDAF's chain.

        Parameters
        ----------
        xpos, ypos : ndarray of float32
            Table columns, native byte order, shape (n,).

        Returns
        -------
        ix, iy : ndarray of int32
            0-based column and row in the mask image, clipped to it.
        """
        if self.coef is None:
            ix, iy = self.exact_index(xpos, ypos)
            return ix.astype(np.int32), iy.astype(np.int32)
        with np.errstate(invalid="ignore", over="ignore"):
            px, py = self._poly(xpos, ypos)
            px += np.float32(0.5)
            py += np.float32(0.5)
            fx = np.floor(px)
            fy = np.floor(py)
            tol = np.float32(self.tol)
            # Rows near a pixel boundary, outside the fitted domain, or not finite.
            px -= fx
            py -= fy
            unsure = (px < tol) | (px > 1 - tol) | (py < tol) | (py > 1 - tol)
            if self.frame.convention == "projected":
                r = -ypos
                unsure |= ~(r <= np.float32(max(abs(self.ulo), abs(self.uhi))))
            else:
                unsure |= ~((xpos >= np.float32(self.ulo)) & (xpos <= np.float32(self.uhi))
                            & (ypos >= np.float32(self.vlo)) & (ypos <= np.float32(self.vhi)))
            ix = np.clip(fx, -1, self.nx).astype(np.int32)
            iy = np.clip(fy, -1, self.ny).astype(np.int32)
        np.clip(ix, 0, self.nx - 1, out=ix)
        np.clip(iy, 0, self.ny - 1, out=iy)
        redo = np.flatnonzero(unsure)
        if redo.size:
            ex, ey = self.exact_index(xpos[redo], ypos[redo])
            ix[redo] = ex
            iy[redo] = ey
        return ix, iy


def load_mask_image(path, ext=None):
    """Read a mask image as MPDAF's ``Image(path, dtype=bool)``: (bool array, celestial WCS).

    The image is the primary HDU of a single-HDU file, else the ``DATA`` (or ``SCI``) extension,
    or the extension named by *ext*.  Non-zero values (NaN included) are "masked".
    """
    from astropy.io import fits
    from ..wcsutil import celestial_from_header

    try:
        with fits.open(path) as hdul:
            if ext is not None:
                try:
                    hdu = hdul[int(ext) if str(ext).isdigit() else ext]
                except (KeyError, IndexError):
                    raise ParameterError(path, f"has no extension {ext!r}",
                                         "name the mask extension with {mask_ext}",
                                         params=("mask_ext",)) from None
            elif len(hdul) == 1:
                hdu = hdul[0]
            elif "DATA" in hdul:
                hdu = hdul["DATA"]
            elif "SCI" in hdul:
                hdu = hdul["SCI"]
            else:
                raise ParameterError(path, "has no DATA or SCI extension",
                                     "name the mask extension with {mask_ext}", params=("mask_ext",))
            if hdu.data is None or hdu.data.ndim != 2:
                raise InputError(path, "the mask is not a 2-D image",
                                 "give a 2-D image (0 = sky, > 0 = objects)")
            wcs = celestial_from_header(hdu.header)
            if wcs is None:
                raise InputError(path, "the mask image has no celestial WCS",
                                 "give a mask image with RA/Dec WCS keywords (CTYPE, CRVAL, CD)")
            data = np.asarray(hdu.data).astype(bool)
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(path, f"is not a readable FITS image ({exc})",
                         "give a FITS mask image") from None
    return data, wcs


class CellGrid:
    """A coarse grid over the table's coordinates telling where the mask is surely 0 or 1.

    Each cell (about one mask pixel) is mapped to the mask image by the exact chain at its
    corners; the mask pixels any point of the cell can round to lie within the corners'
    bounding box widened by one pixel (and clipped to the image, as MPDAF clips).  When all
    those pixels are 0 (1) every row in the cell gets 0 (1) without further work; only rows in
    mixed cells, outside the grid or not finite go through :meth:`MaskProjector.index`.
    Per row this costs a dozen float32/int32 operations and one look-up.

    Parameters
    ----------
    projector : MaskProjector
        Supplies the frame, the mask WCS and the fitted domain.
    mask : ndarray of bool, shape (ny, nx)
    max_cells : int
        Upper bound on the number of cells (coarser cells beyond it).
    """

    SURE0, SURE1, MIXED = 0, 1, 2

    def __init__(self, projector: MaskProjector, mask: np.ndarray, max_cells: int = 1 << 20):
        p = projector
        self.projected = p.frame.convention == "projected"
        self.ulo, self.vlo = p.ulo, p.vlo
        wu, wv = p.uhi - p.ulo, p.vhi - p.vlo
        # Cell size from the pixel scale of the mask in the table's coordinates.
        du, dv = self._pixel_steps(p)
        nu = int(np.clip(np.ceil(wu / du), 1, 1 << 12))
        nv = int(np.clip(np.ceil(wv / dv), 1, 1 << 12))  # flat index exact in float32
        while nu * nv > max_cells:
            nu, nv = max(1, nu // 2), max(1, nv // 2)
        self.nu, self.nv = nu, nv
        self.ku, self.kv = nu / wu, nv / wv
        gu = self.ulo + np.arange(nu + 1) / self.ku
        gv = self.vlo + np.arange(nv + 1) / self.kv
        cu, cv = np.meshgrid(gu, gv)  # (nv + 1, nu + 1)
        if self.projected:
            x, y = np.arctan2(cu, -cv), -np.hypot(cu, cv)
        else:
            x, y = cu, cv
        with np.errstate(invalid="ignore", divide="ignore"):
            px, py = p.exact_pixel_float(x.ravel(), y.ravel())
        px, py = px.reshape(cu.shape), py.reshape(cu.shape)

        def corners(a):
            return np.stack([a[:-1, :-1], a[:-1, 1:], a[1:, :-1], a[1:, 1:]])

        with np.errstate(invalid="ignore"):
            xmin, xmax = corners(px).min(axis=0), corners(px).max(axis=0)
            ymin, ymax = corners(py).min(axis=0), corners(py).max(axis=0)
            ok = np.isfinite(xmin) & np.isfinite(xmax) & np.isfinite(ymin) & np.isfinite(ymax)
            ny, nx = mask.shape
            big = float(1 << 30)
            ix0 = np.clip(np.floor(np.nan_to_num(xmin, nan=0) + 0.5) - 1, 0, nx - 1)
            ix1 = np.clip(np.floor(np.clip(np.nan_to_num(xmax, nan=0), -big, big) + 0.5) + 1,
                          0, nx - 1)
            iy0 = np.clip(np.floor(np.nan_to_num(ymin, nan=0) + 0.5) - 1, 0, ny - 1)
            iy1 = np.clip(np.floor(np.clip(np.nan_to_num(ymax, nan=0), -big, big) + 0.5) + 1,
                          0, ny - 1)
        ix0, ix1, iy0, iy1 = (a.astype(np.int64) for a in (ix0, ix1, iy0, iy1))
        integral = np.zeros((ny + 1, nx + 1), dtype=np.int64)
        integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
        count = (integral[iy1 + 1, ix1 + 1] - integral[iy0, ix1 + 1]
                 - integral[iy1 + 1, ix0] + integral[iy0, ix0])
        area = (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
        status = np.full(count.shape, self.MIXED, dtype=np.uint8)
        status[ok & (count == 0)] = self.SURE0
        status[ok & (count == area)] = self.SURE1
        padded = np.full((nv + 2, nu + 2), self.MIXED, dtype=np.uint8)
        padded[1:-1, 1:-1] = status
        self.status = padded.ravel()
        self.mixed_fraction = float(np.mean(status == self.MIXED))

    @staticmethod
    def _pixel_steps(p: MaskProjector):
        """Extent of one mask pixel along u and v (table units), from the exact chain."""
        uc, vc = 0.5 * (p.ulo + p.uhi), 0.5 * (p.vlo + p.vhi)
        h = 1e-3 * min(p.uhi - p.ulo, p.vhi - p.vlo)
        pts_u = np.array([uc - h, uc + h, uc, uc])
        pts_v = np.array([vc, vc, vc - h, vc + h])
        if p.frame.convention == "projected":
            x, y = np.arctan2(pts_u, -pts_v), -np.hypot(pts_u, pts_v)
        else:
            x, y = pts_u, pts_v
        px, py = p.exact_pixel_float(x, y)
        dpdu = np.hypot(px[1] - px[0], py[1] - py[0]) / (2 * h)
        dpdv = np.hypot(px[3] - px[2], py[3] - py[2]) / (2 * h)
        if not (np.isfinite(dpdu) and np.isfinite(dpdv) and dpdu > 0 and dpdv > 0):
            return (p.uhi - p.ulo), (p.vhi - p.vlo)
        return 1.0 / dpdu, 1.0 / dpdv

    def lookup(self, xpos: np.ndarray, ypos: np.ndarray) -> np.ndarray:
        """Cell status (SURE0, SURE1, MIXED) of float32 rows (native order).

        The result is a per-thread scratch array (valid until the next call).
        """
        from .reader import scratch

        n = xpos.size
        fu = scratch("grid:fu", n, np.float32)
        fv = scratch("grid:fv", n, np.float32)
        if self.projected:
            np.sin(xpos, out=fu)
            np.multiply(fu, ypos, out=fu)  # -r sin(phi) = -u
            np.negative(fu, out=fu)
            np.cos(xpos, out=fv)
            np.multiply(fv, ypos, out=fv)  # -r cos(phi) = v
            u_, v_ = fu, fv
        else:
            u_, v_ = xpos, ypos
        # Cell coordinates in float32: u*k + (1 - lo*k), clipped to the padded grid, floored;
        # then one flat index.  NaN gives an out-of-range index, clipped by take() to cell 0,
        # a border cell (MIXED).  Rounding can move a row into a neighbouring cell, which the
        # one-pixel margin of every cell's window covers.
        with np.errstate(invalid="ignore"):
            for src, f, lo, k, top in ((u_, fu, self.ulo, self.ku, self.nu + 1),
                                       (v_, fv, self.vlo, self.kv, self.nv + 1)):
                np.multiply(src, np.float32(k), out=f)
                np.add(f, np.float32(1 - lo * k), out=f)
                np.clip(f, np.float32(0), np.float32(top), out=f)
                np.floor(f, out=f)
            np.multiply(fv, np.float32(self.nu + 2), out=fv)
            np.add(fv, fu, out=fv)
            cv = scratch("grid:index", n, np.intp)
            np.copyto(cv, fv, casting="unsafe")
        return self.status.take(cv, out=scratch("grid:status", n, np.uint8), mode="clip")

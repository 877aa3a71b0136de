"""HEALPix spatial index of a spectra catalogue: cone and polygon queries.

Each spectrum row stores its nested HEALPix pixel at order :data:`ORDER` (nside 4096, pixels of
about 0.86 arcmin).  A query covers the region with pixels of a coarser order chosen from its
size, turns them into ranges of fine pixels (nested numbering keeps children contiguous), finds
the rows in those ranges by binary search in the sorted pixel column, and keeps the rows that are
exactly inside (angular distance for cones, gnomonic point-in-polygon for polygons, exact since
great circles project to straight lines).
"""

from __future__ import annotations

import math

import numpy as np
from astropy import units as u
from astropy.coordinates import Latitude, Longitude
from astropy_healpix import HEALPix

from ..errors import InputError

__all__ = ["ORDER", "hpx_of", "SkyIndex", "angular_distance"]

#: HEALPix order (nested) of the stored pixel of each row.
ORDER = 12
_HP = HEALPix(nside=2 ** ORDER, order="nested")
#: Side of a base pixel (order 0), degrees.
_BASE_PIXEL_DEG = math.degrees(math.sqrt(4 * math.pi / 12))


def hpx_of(ra, dec) -> np.ndarray:
    """Nested HEALPix pixels (int64, order :data:`ORDER`) of positions in degrees; -1 if NaN."""
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    out = np.full(ra.shape, -1, dtype=np.int64)
    if ok.any():
        out[ok] = _HP.lonlat_to_healpix(Longitude(ra[ok] % 360.0, u.deg), Latitude(dec[ok], u.deg))
    return out


def angular_distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (haversine; all inputs in degrees)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=np.float64))
                            for a in (ra1, dec1, ra2, dec2))
    s = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


def _unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


class SkyIndex:
    """Rows sorted by HEALPix pixel, for fast region queries.

    Parameters
    ----------
    hpx : numpy.ndarray
        Pixel (order :data:`ORDER`) of each indexed row; -1 rows (no position) never match.
    rows : numpy.ndarray
        Row numbers of the indexed rows (same length as *hpx*).
    ra, dec : numpy.ndarray
        Positions of *all* rows (indexed by row number), degrees.
    """

    def __init__(self, hpx, rows, ra, dec):
        order = np.argsort(hpx, kind="stable")
        self.hpx = np.ascontiguousarray(hpx[order])
        self.rows = np.ascontiguousarray(rows[order])
        self.ra, self.dec = ra, dec
        # unit vectors in pixel order: a cone test is then a dot product, no trigonometry
        r_ra, r_dec = np.radians(ra[self.rows]), np.radians(dec[self.rows])
        cos_dec = np.cos(r_dec)
        self.x = cos_dec * np.cos(r_ra)
        self.y = cos_dec * np.sin(r_ra)
        self.z = np.sin(r_dec)

    def _positions_in_pixels(self, pixels: np.ndarray, q: int) -> np.ndarray:
        """Positions (in pixel order) of the rows inside coarse pixels *pixels* of order *q*."""
        if not len(pixels):
            return np.zeros(0, dtype=np.int64)
        shift = 2 * (ORDER - q)
        pixels = np.unique(pixels.astype(np.int64))
        # merge runs of consecutive coarse pixels into ranges of fine pixels
        breaks = np.flatnonzero(np.diff(pixels) != 1) + 1
        starts = pixels[np.r_[0, breaks]] << shift
        ends = (pixels[np.r_[breaks - 1, len(pixels) - 1]] + 1) << shift
        lo = np.searchsorted(self.hpx, starts, side="left")
        hi = np.searchsorted(self.hpx, ends, side="left")
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        # concatenated aranges lo[i]..hi[i]
        offs = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        return np.arange(total) + offs

    @staticmethod
    def _query_order(radius_deg: float) -> int:
        if radius_deg <= 0:
            return ORDER
        q = int(math.floor(math.log2(3 * _BASE_PIXEL_DEG / radius_deg)))
        return max(0, min(ORDER, q))

    def cone(self, ra: float, dec: float, radius: float) -> np.ndarray:
        """Rows within *radius* degrees of (*ra*, *dec*) (degrees), sorted by row number."""
        _check_position(ra, dec)
        if not (math.isfinite(radius) and 0 <= radius <= 180):
            raise InputError("size", f"search radius {radius!r} is not within 0-180 degrees",
                             "give the cone radius in degrees")
        q = self._query_order(radius)
        hp = HEALPix(nside=2 ** q, order="nested")
        pad = 1.5 * _BASE_PIXEL_DEG / 2 ** q  # covers any pixel touching the cone
        if radius + pad >= 180:
            pixels = np.arange(12 * 4 ** q)
        else:
            pixels = hp.cone_search_lonlat(Longitude(ra % 360.0, u.deg), Latitude(dec, u.deg),
                                           (radius + pad) * u.deg)
        pos = self._positions_in_pixels(np.asarray(pixels), q)
        if not len(pos):
            return pos
        cx, cy, cz = _unit(ra, dec)
        dot = self.x[pos] * cx + self.y[pos] * cy + self.z[pos] * cz
        inside = dot >= math.cos(math.radians(radius))
        # near the edge, decide with the haversine distance (exact for tiny radii too)
        edge = np.abs(dot - math.cos(math.radians(radius))) < 1e-9
        if edge.any():
            rows_e = self.rows[pos[edge]]
            inside[edge] = angular_distance(ra, dec, self.ra[rows_e], self.dec[rows_e]) <= radius
        return np.sort(self.rows[pos[inside]])

    def polygon(self, vertices) -> np.ndarray:
        """Rows inside a spherical polygon of (ra, dec) vertices in degrees (edges: great circles).

        Raises
        ------
        InputError
            Fewer than 3 vertices, bad coordinates, or a polygon wider than a hemisphere.
        """
        try:
            v = np.asarray(vertices, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("region", "vertices must be (ra, dec) pairs in degrees",
                             "give e.g. [(10, -5), (11, -5), (10.5, -4)]") from None
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise InputError("region", "a polygon needs at least 3 (ra, dec) vertices",
                             "give e.g. [(10, -5), (11, -5), (10.5, -4)]")
        for ra, dec in v:
            _check_position(ra, dec)
        xyz = _unit(v[:, 0], v[:, 1])
        centre = xyz.mean(axis=0)
        norm = np.linalg.norm(centre)
        if norm < 1e-9:
            raise InputError("region", "the polygon has no well-defined centre",
                             "split it into smaller polygons")
        centre /= norm
        if np.any(xyz @ centre <= 0.05):
            raise InputError("region", "the polygon spans more than a hemisphere",
                             "split it into smaller polygons")
        cra = math.degrees(math.atan2(centre[1], centre[0])) % 360
        cdec = math.degrees(math.asin(np.clip(centre[2], -1, 1)))
        radius = float(np.max(angular_distance(cra, cdec, v[:, 0], v[:, 1])))
        cand = self.cone(cra, cdec, min(radius * 1.000001 + 1e-9, 180.0))
        if not len(cand):
            return cand
        px, py = _gnomonic(cra, cdec, v[:, 0], v[:, 1])
        x, y = _gnomonic(cra, cdec, self.ra[cand], self.dec[cand])
        inside = np.zeros(len(cand), dtype=bool)
        n = len(px)
        for i in range(n):  # even-odd rule
            x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
            crosses = (y1 > y) != (y2 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (x < xint)
        return np.sort(cand[inside])


def _gnomonic(ra0, dec0, ra, dec):
    ra0, dec0 = math.radians(ra0), math.radians(dec0)
    ra, dec = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, np.float64))
    cosc = math.sin(dec0) * np.sin(dec) + math.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    x = np.cos(dec) * np.sin(ra - ra0) / cosc
    y = (math.cos(dec0) * np.sin(dec) - math.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return x, y


def _check_position(ra, dec):
    if not (math.isfinite(float(ra)) and math.isfinite(float(dec)) and -90 <= float(dec) <= 90):
        raise InputError("position", f"({ra}, {dec}) is not a valid RA/Dec in degrees",
                         "give RA in degrees and Dec within -90..90")

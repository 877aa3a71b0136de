"""Segmentation maps: reading them, and putting them on a cube's spatial grid.

A segmentation map is a 2-D integer image in which every pixel holds the label of the source it
belongs to (SExtractor, SEP, photutils) and 0 the background.  Label maps must never be
interpolated (label 7.5 means nothing), so a map made on another grid (an HST image at 0.05″ or
0.1″ for a MUSE cube at 0.2″) is put on the cube grid with an *area-coverage* rule
(:func:`reproject_labels`): every cube spaxel is cut into ``n × n`` sub-spaxels, each sub-spaxel
centre is mapped through the cube WCS to the sky and through the map's WCS to the map pixel that
holds it, and the spaxel takes the label covering the largest share of its area when that share
is at least ``min_coverage``; otherwise it is background.

Axis order follows numpy: maps are ``(ny, nx)``, pixel coordinates 0-based with ``x`` the fast
axis.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from .cubeio import open_fits
from .errors import InputError, ParameterError
from .wcsutil import celestial_from_header, pixel_scale_arcsec, same_grid

__all__ = ["SegMap", "read_segmap", "reproject_labels", "segmap_on_grid", "split_label",
           "DEFAULT_MIN_COVERAGE"]

log = logging.getLogger("ifu_extract")

#: Default minimum share of a spaxel's area a label must cover to be given to the spaxel.
DEFAULT_MIN_COVERAGE = 0.5
#: Extension names tried, in order, before falling back to the first 2-D image HDU.
_SEG_NAMES = ("SEGMAP", "SEG", "SEGMENTATION", "SEGM", "DATA", "SCI", "IMAGE")
_CHUNK_POINTS = 2_000_000  # sub-spaxel samples mapped per block (bounds the memory to ~100 MB)


@dataclass
class SegMap:
    """A segmentation map as read from a file.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(ny, nx)`` int32 labels, 0 for the background (negative and NaN values become 0).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the map, None when the file has none.
    path : pathlib.Path
        The file it came from (for messages).
    ext : str
        The extension read (``"1:SEGMAP"``).
    """

    labels: np.ndarray
    wcs: WCS | None
    path: Path
    ext: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)

    @property
    def nlabels(self) -> int:
        """Number of distinct non-zero labels."""
        return int(np.unique(self.labels[self.labels > 0]).size)


def _pick_hdu(hdul, path, ext):
    names = [h.name for h in hdul]

    def dims(h):
        """Number of axes longer than one (from the header: the data are not read)."""
        if not h.is_image:
            return 0
        naxis = int(h.header.get("NAXIS", 0))
        lengths = [int(h.header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
        if naxis == 2 and all(n > 0 for n in lengths):
            return 2
        return sum(1 for n in lengths if n > 1)

    if ext is not None:
        key = int(ext) if str(ext).strip().isdigit() else str(ext).upper()
        idx = key if isinstance(key, int) else (names.index(key) if key in names else None)
        if idx is None or not 0 <= idx < len(hdul) or dims(hdul[idx]) != 2:
            raise InputError(path, f"extension {ext!r} is not a 2-D segmentation map",
                             "name the extension holding the labels")
        return idx
    for name in _SEG_NAMES:
        if name in names and dims(hdul[names.index(name)]) == 2:
            return names.index(name)
    for i, h in enumerate(hdul):
        if dims(h) == 2:
            return i
    listing = ", ".join(f"{i}:{h.name or '-'}" for i, h in enumerate(hdul))
    raise InputError(path, f"has no 2-D image to read as a segmentation map (extensions: {listing})",
                     "give the segmentation map written by 'ifu-extract detect', SEP or SExtractor")


def read_segmap(path, *, ext=None) -> SegMap:
    """Read a segmentation map (labels and celestial WCS) from a FITS file.

    Parameters
    ----------
    path : str or os.PathLike
        FITS file; the labels are read from *ext*, else from an extension named ``SEGMAP``,
        ``SEG``, ``DATA`` or ``SCI``, else from the first 2-D image.
    ext : str or int, optional
        Extension name or index.

    Returns
    -------
    SegMap

    Raises
    ------
    InputError
        Not FITS, truncated, no 2-D image, or values that are not integer labels (an image
        given instead of its segmentation map).
    """
    path = Path(path)
    hdul = open_fits(path, "segmentation map")
    with hdul:
        idx = _pick_hdu(hdul, path, ext)
        hdu = hdul[idx]
        try:
            raw = np.asarray(hdu.data)
        except Exception as exc:  # noqa: BLE001 - mmap errors on damaged files
            raise InputError(path, f"cannot read its data ({exc})", "re-create the file") from None
        raw = np.squeeze(raw) if raw.ndim > 2 else raw
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw)
            vals = raw[finite]
            frac = vals != np.round(vals)
            if frac.any():
                raise InputError(path, f"holds non-integer values (e.g. {vals[frac][0]:g}), so it is "
                                 "not a segmentation map",
                                 "give the label map (0 = background, 1, 2... = sources), not the image")
            if vals.size and np.abs(vals).max() > np.iinfo(np.int32).max:
                raise InputError(path, "holds labels too large for 32-bit integers",
                                 "renumber the labels")
            labels = np.where(finite, raw, 0).astype(np.int32)
        elif raw.dtype.kind in "iub":
            if raw.size and raw.max(initial=0) > np.iinfo(np.int32).max:
                raise InputError(path, "holds labels too large for 32-bit integers",
                                 "renumber the labels")
            labels = raw.astype(np.int32)
        else:
            raise InputError(path, f"holds {raw.dtype} values, not integer labels",
                             "give a segmentation map")
        labels[labels < 0] = 0
        merged = hdul[0].header.copy() if idx != 0 else fits.Header()
        merged.update(hdu.header)
        merged["NAXIS"] = 2
        wcs = celestial_from_header(merged)
        name = hdu.name or ("PRIMARY" if idx == 0 else "-")
    return SegMap(np.ascontiguousarray(labels), wcs, path, f"{idx}:{name}")


def _mode_labels(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of *samples* ``(m, k)``, the most frequent non-zero label and its count.

    Ties go to the smaller label (deterministic).  Rows without a non-zero sample get 0, 0.
    """
    m, k = samples.shape
    srt = np.sort(samples, axis=1)
    start = np.ones((m, k), dtype=bool)
    start[:, 1:] = srt[:, 1:] != srt[:, :-1]
    flat = np.flatnonzero(start.ravel())
    length = np.diff(np.append(flat, m * k))
    row = flat // k
    lab = srt.ravel()[flat]
    keep = lab > 0
    row, lab, length = row[keep], lab[keep], length[keep]
    best_lab = np.zeros(m, dtype=np.int32)
    best_n = np.zeros(m, dtype=np.int64)
    if row.size:
        order = np.lexsort((lab, -length, row))
        first = np.ones(order.size, dtype=bool)
        first[1:] = row[order][1:] != row[order][:-1]
        pick = order[first]
        best_lab[row[pick]] = lab[pick]
        best_n[row[pick]] = length[pick]
    return best_lab, best_n


def reproject_labels(labels: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape_out, *,
                     min_coverage: float = DEFAULT_MIN_COVERAGE,
                     supersample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Put a label map on another celestial grid with the area-coverage rule.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(ny_in, nx_in)`` integer labels, 0 = background.
    wcs_in : astropy.wcs.WCS
        Celestial WCS of *labels*.
    wcs_out : astropy.wcs.WCS
        Celestial WCS of the target grid (the cube's).
    shape_out : (int, int)
        ``(ny, nx)`` of the target grid.
    min_coverage : float
        Minimum share (0-1] of a target spaxel's area that its dominant label must cover for the
        spaxel to take it; otherwise the spaxel is background.  The share is of the whole
        spaxel, so a spaxel half outside the map can hold at most a share of 0.5.
    supersample : int, optional
        Sub-spaxels per target spaxel side.  Default: twice the ratio of the pixel scales, at
        least 4 and at most 16, so each map pixel is hit by about four samples.

    Returns
    -------
    out : numpy.ndarray
        ``(ny, nx)`` int32 labels on the target grid.
    footprint : numpy.ndarray
        ``(ny, nx)`` float32 share of each target spaxel's area that falls inside the map.
    """
    if not 0.0 < float(min_coverage) <= 1.0:
        raise ParameterError("{min_coverage}", f"{min_coverage} is not in (0, 1]",
                         "give the minimum area share as a fraction, e.g. 0.5", params=("min_coverage",))
    labels = np.asarray(labels)
    ny_in, nx_in = labels.shape
    ny, nx = (int(s) for s in shape_out)
    if supersample is None:
        ratio = pixel_scale_arcsec(wcs_out) / pixel_scale_arcsec(wcs_in)
        supersample = int(np.clip(np.ceil(2.0 * ratio), 4, 16))
    n = int(supersample)
    k = n * n
    out = np.zeros((ny, nx), dtype=np.int32)
    footprint = np.zeros((ny, nx), dtype=np.float32)

    # Target spaxels whose centres fall near the map (one spaxel's reach, in map pixels).
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs_out.all_pix2world(xx.ravel().astype(float), yy.ravel().astype(float), 0)
    cx, cy = wcs_in.all_world2pix(ra, dec, 0)
    reach = pixel_scale_arcsec(wcs_out) / pixel_scale_arcsec(wcs_in)
    near = ((cx > -0.5 - reach) & (cx < nx_in - 0.5 + reach)
            & (cy > -0.5 - reach) & (cy < ny_in - 0.5 + reach))
    cand = np.flatnonzero(near)
    if cand.size == 0:
        return out, footprint
    off = (np.arange(n) + 0.5) / n - 0.5
    sub_y, sub_x = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    per_block = max(1, _CHUNK_POINTS // k)
    flat_out = out.ravel()
    flat_fp = footprint.ravel()
    for start in range(0, cand.size, per_block):
        idx = cand[start:start + per_block]
        px = (xx.ravel()[idx][:, None] + sub_x[None, :]).ravel()
        py = (yy.ravel()[idx][:, None] + sub_y[None, :]).ravel()
        sra, sdec = wcs_out.all_pix2world(px, py, 0)
        mx, my = wcs_in.all_world2pix(sra, sdec, 0)
        ix = np.floor(mx + 0.5)
        iy = np.floor(my + 0.5)
        inside = (ix >= 0) & (ix < nx_in) & (iy >= 0) & (iy < ny_in)
        samples = np.zeros(px.size, dtype=np.int32)
        samples[inside] = labels[iy[inside].astype(np.intp), ix[inside].astype(np.intp)]
        samples = samples.reshape(idx.size, k)
        lab, cnt = _mode_labels(samples)
        share = cnt / k
        flat_out[idx] = np.where(share >= min_coverage - 1e-9, lab, 0)
        flat_fp[idx] = inside.reshape(idx.size, k).mean(axis=1)
    return out, footprint


def segmap_on_grid(segmap: SegMap, wcs: WCS, shape, *,
                   min_coverage: float = DEFAULT_MIN_COVERAGE) -> tuple[np.ndarray, float, str]:
    """The labels of *segmap* on the grid ``(wcs, shape)`` of a cube.

    A map on the same grid is used as is; a map without WCS is accepted only when it has the
    cube's spatial shape (it is then assumed to have been made on the cube's white light);
    any other map is reprojected with :func:`reproject_labels`.

    Parameters
    ----------
    segmap : SegMap
    wcs : astropy.wcs.WCS
        Celestial WCS of the cube.
    shape : (int, int)
        ``(ny, nx)`` of the cube.
    min_coverage : float
        See :func:`reproject_labels`.

    Returns
    -------
    labels : numpy.ndarray
        ``(ny, nx)`` int32.
    footprint : float
        Share (0-1) of the cube grid covered by the map.
    how : str
        ``"same grid"``, ``"no WCS, same shape"`` or ``"reprojected"``.

    Raises
    ------
    InputError
        No WCS and another shape; no overlap with the cube.
    """
    shape = tuple(int(s) for s in shape)
    if segmap.wcs is None:
        if segmap.shape == shape:
            log.info(f"{segmap.path.name}: no WCS; its shape matches the cube, so it is used as made "
                     "on the cube grid")
            return segmap.labels, 1.0, "no WCS, same shape"
        raise InputError(segmap.path, f"has no celestial WCS and its shape {segmap.shape} differs "
                         f"from the cube's {shape}, so it cannot be placed on the cube grid",
                         "give a segmentation map with a WCS, or one made on the cube's white-light "
                         "image (ifu-extract image, then detect)")
    if same_grid(segmap.wcs, segmap.shape, wcs, shape):
        return segmap.labels, 1.0, "same grid"
    labels, fp = reproject_labels(segmap.labels, segmap.wcs, wcs, shape, min_coverage=min_coverage)
    frac = float(fp.mean())
    if frac == 0.0:
        raise InputError(segmap.path, "does not overlap the cube (no spaxel falls inside it)",
                         "give a segmentation map of the same field, and check both WCS")
    return labels, frac, "reprojected"


def split_label(domain: np.ndarray, image: np.ndarray, seeds, core_radius: float) -> np.ndarray:
    """Share one segment among several objects: PSF cores, then a watershed on the light.

    Every object first keeps the spaxels of the segment within *core_radius* of its position
    (where two cores overlap, the nearer position wins: the bisector); the rest of the segment
    goes to the object whose hill of light it lies on, by a seeded watershed (Meyer's flooding)
    on the image smoothed by a Gaussian of sigma ``core_radius / 4.7`` (half the PSF's
    sigma when *core_radius* is the FWHM), so that noise peaks do not make basins.  Flooding
    starts from the cores, brightest spaxel first; a spaxel goes to the flood that reaches it
    first, and at equal level to the one whose object is nearer.  Faint companions on the wing
    of a bright galaxy are not local maxima of the light: a plain watershed leaves them a
    sliver (or nothing), a Voronoi split gives them half of the galaxy's wing; the core keeps
    their PSF, and the galaxy keeps its light.  Measured against both on synthetic crowded
    fields in ``bench/segmentation_bench.py`` (results in ``bench/README.md``).

    Parameters
    ----------
    domain : numpy.ndarray
        ``(ny, nx)`` bool, the segment's spaxels.
    image : numpy.ndarray
        ``(ny, nx)`` light (the white-light image), NaN allowed (flooded last).
    seeds : sequence of (float, float)
        ``(x, y)`` 0-based pixel positions of the objects, x the fast axis.  A position off
        the segment starts from the segment spaxel nearest to it.
    core_radius : float
        Radius of the cores, pixels (the PSF FWHM).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` int32: ``k + 1`` where the spaxel goes to ``seeds[k]``, 0 off the domain.
        Every domain spaxel connected to a seed is assigned; each object's part is connected
        to its seed spaxel.
    """
    domain = np.asarray(domain, dtype=bool)
    ny, nx = domain.shape
    out = np.zeros((ny, nx), dtype=np.int32)
    if not domain.any() or len(seeds) == 0:
        return out
    sx = np.array([float(s[0]) for s in seeds])
    sy = np.array([float(s[1]) for s in seeds])
    # Work on the segment's bounding box only.
    rows, cols = np.nonzero(domain)
    pad = int(np.ceil(core_radius)) + 1
    y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, ny)
    x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, nx)
    dom = domain[y0:y1, x0:x1]
    light = np.asarray(image, dtype=float)[y0:y1, x0:x1]
    finite = np.isfinite(light)
    floor = np.nanmin(light) if finite.any() else 0.0
    smooth = ndimage.gaussian_filter(np.where(finite, light, floor), max(core_radius, 1.0) / 4.71)
    smooth[~finite] = -np.inf
    gy, gx = np.mgrid[y0:y1, x0:x1]
    # Nearest position to every spaxel (a tree: memory stays O(spaxels) for many objects).
    dist, nearest = cKDTree(np.column_stack([sx, sy])).query(np.column_stack([gx.ravel(), gy.ravel()]))
    dist, nearest = dist.reshape(gx.shape), nearest.reshape(gx.shape)
    part = np.where(dom & (dist <= core_radius), nearest + 1, 0).astype(np.int32)
    # Seed spaxels: under the position, else the segment spaxel nearest to it.
    dy, dx = np.nonzero(dom)
    for k in range(len(sx)):
        xc, yc = int(np.floor(sx[k] + 0.5)) - x0, int(np.floor(sy[k] + 0.5)) - y0
        if not (0 <= yc < dom.shape[0] and 0 <= xc < dom.shape[1] and dom[yc, xc]):
            j = int(np.argmin((dx + x0 - sx[k]) ** 2 + (dy + y0 - sy[k]) ** 2))
            yc, xc = int(dy[j]), int(dx[j])
        if part[yc, xc] == 0:
            part[yc, xc] = k + 1
    # Meyer's flooding from every assigned spaxel: brightest first, then nearest to its object.
    heap = [(-smooth[y, x], 0.0, y, x) for y, x in zip(*np.nonzero(part))]
    heapq.heapify(heap)
    hy, hx = dom.shape
    while heap:
        level, _, y, x = heapq.heappop(heap)
        lab = int(part[y, x])
        for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= yy < hy and 0 <= xx < hx and dom[yy, xx] and not part[yy, xx]:
                part[yy, xx] = lab
                d2 = (xx + x0 - sx[lab - 1]) ** 2 + (yy + y0 - sy[lab - 1]) ** 2
                heapq.heappush(heap, (max(-smooth[yy, xx], level), float(d2), yy, xx))
    out[y0:y1, x0:x1] = part
    return out

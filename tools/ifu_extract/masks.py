"""Object and sky masks from segmentation maps (the ``mask`` microtool), and their file format.

For every catalogue object, on the stamp box of :func:`~ifu_extract.wcsutil.stamp_box` (the
geometry shared by every per-object product), this module builds three masks, named as in MPDAF
Sources:

``MASK_UNION``
    spaxels that carry the object's label in *any* segmentation map;
``MASK_INTER``
    spaxels that carry the object's label in *every* segmentation map;
``MASK_SKY``
    spaxels inside the cube, with finite white light, that carry no label in any map (labels
    grown by ``sky_grow`` spaxels) and lie outside every PSF-circle fallback.

The object's label in a map is the label at its position or, when the position falls on the
background, the dominant unclaimed label within ``match_radius`` (a label is *claimed* by the
catalogue objects that sit on it).  A segment claimed by several catalogue objects (a galaxy
and its companions in one SEP segment: the normal case in cluster cores and deep fields) is
split among them by default: each keeps the segment's spaxels within one PSF FWHM of its
position, and the rest goes by a watershed on the white light seeded by the catalogue
(:func:`~ifu_extract.segmap.split_label`); the split maps are the ``SEGMAP`` written.  Spaxels
carrying another label (a neighbour) in any map are removed from the object masks.  When the
intersection is empty in ``inter`` mode the union is used; when the object has no label in any
map (or nothing of its segment is left once the neighbours and its Voronoi cell are taken out),
a circle of radius FWHM (the PSF) centred on it is used, minus the neighbours' spaxels and cut
to its Voronoi cell among the catalogue positions (so that no two footprints overlap), and
stored as both MASK_UNION and MASK_INTER: an object is never dropped, and its ``STATUS`` says
what was done.  With ``voronoi=True`` every object mask
is also cut to the object's Voronoi cell among the catalogue positions (crowded fields).

File layout (``MASKS.fits``), read back with :func:`read_masks`:

* PRIMARY: provenance, ``CUBE``, ``NOBJ``, ``MASKMODE`` and the parameters used;
* ``OBJECTS``: one row per catalogue row, in catalogue order: ``ID``, ``RA``, ``DEC`` (deg),
  ``X``, ``Y`` (0-based cube pixels), ``X0``, ``Y0``, ``NX``, ``NY`` (the stamp box in cube
  pixels, from :func:`~ifu_extract.wcsutil.stamp_box`; it may extend beyond the cube),
  ``STATUS``, ``MASKUSED`` (``union``, ``inter``, ``circle``, or empty when the row has no mask),
  ``N_UNION``, ``N_INTER``, ``N_SKY`` (spaxel counts), ``SEGLABEL`` (the row's label in each map,
  comma-separated in map order, 0 = none);
* ``MASK_UNION``, ``MASK_INTER``, ``MASK_SKY`` image HDUs with ``EXTVER`` = 1-based row number,
  uint8 ``(NY, NX)``, with the stamp's celestial WCS and ``OBJ_ID``, for the rows that have masks
  (``MASKUSED`` not empty);
* ``SEGMAP`` (``EXTVER`` 1, 2... per map): the segmentation maps on the cube grid, int32.

``STATUS`` is ``ok`` or, joined by ``"; "``: ``off_field`` (outside the cube), ``no_data`` (NaN
white light at the position), ``bad_coordinates: ...`` (from the catalogue),
``no_segment_used_psf_circle``, ``segment_unusable_used_psf_circle``, ``inter_empty_used_union``,
``matched_within_radius``, ``shared_segment: with <IDs>`` (only when splitting is turned off),
``empty_mask: ...``.  A row has masks exactly when ``MASKUSED`` is not empty.

Axis order follows numpy: masks are ``(ny, nx)``; pixel coordinates are 0-based, ``x`` fast.
"""

from __future__ import annotations

import functools
import logging
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from .cubeio import Cube, open_fits
from .errors import OK, InputError, warn_object
from .fitsio import encode_checksum, ones_sum
from .fitsout import add_provenance, ascii_safe, ascii_unescape, atomic_path, iso_date
from .psf import catalog_candidates, resolve_fwhm
from .segmap import DEFAULT_MIN_COVERAGE, SegMap, read_segmap, segmap_on_grid, split_label
from .wcsutil import celestial_from_header, stamp_box, world_to_pixel

__all__ = [
    "MODES",
    "DEFAULT_SIZE",
    "DEFAULT_MATCH_RADIUS",
    "DEFAULT_SKY_GROW",
    "GridSegmap",
    "MaskResult",
    "ObjectMasks",
    "MaskSet",
    "prepare_segmaps",
    "build_masks",
    "make_masks",
    "write_masks",
    "read_masks",
    "object_mask",
    "reframe",
]

log = logging.getLogger("ifu_extract")

MODES = ("union", "inter")
#: Default full side of the stamp box, arcsec (AutoSpec's SIZE).
DEFAULT_SIZE = 5.0
#: Default radius within which a label is looked for when the position is on background, arcsec.
DEFAULT_MATCH_RADIUS = 0.5
#: Default growth of every label before the sky is chosen, spaxels.
DEFAULT_SKY_GROW = 1

# Status strings (the OBJECTS table, the summary of `run`).
ST_OFF_FIELD = "off_field"
ST_NO_DATA = "no_data"
ST_CIRCLE = "no_segment_used_psf_circle"
ST_SEG_UNUSABLE = "segment_unusable_used_psf_circle"
ST_INTER_EMPTY = "inter_empty_used_union"
ST_RADIUS = "matched_within_radius"
ST_SHARED = "shared_segment"
ST_EMPTY = "empty_mask"
_MASK_NAMES = ("MASK_UNION", "MASK_INTER", "MASK_SKY")
_TABLE_COLUMNS = ("ID", "RA", "DEC", "X", "Y", "X0", "Y0", "NX", "NY", "STATUS", "MASKUSED",
                  "N_UNION", "N_INTER", "N_SKY", "SEGLABEL")


# --------------------------------------------------------------------------------- inputs
@dataclass
class GridSegmap:
    """A segmentation map on the cube grid.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(ny, nx)`` int32 labels on the cube grid, 0 = background.
    name : str
        Where it came from (file name, or ``"segmap<k>"`` for arrays).
    how : str
        ``"same grid"``, ``"no WCS, same shape"``, ``"reprojected"`` or ``"array"``.
    footprint : float
        Share (0-1) of the cube grid covered by the original map.
    """

    labels: np.ndarray
    name: str
    how: str = "array"
    footprint: float = 1.0


def prepare_segmaps(segmaps, cube: Cube, *,
                    min_coverage: float = DEFAULT_MIN_COVERAGE) -> list[GridSegmap]:
    """Read segmentation maps and put them on the cube grid; set aside the empty ones.

    Parameters
    ----------
    segmaps : sequence of (path, SegMap, or (ny, nx) array on the cube grid)
    cube : Cube
    min_coverage : float
        Area share for reprojected maps (see :func:`ifu_extract.segmap.reproject_labels`).

    Returns
    -------
    list of GridSegmap
        The maps that hold at least one label on the cube grid, in the order given.

    Raises
    ------
    InputError
        A map cannot be read or placed; or *every* map is empty on the cube grid (all objects
        would be PSF circles, which is almost always a wrong file or threshold).  When only
        some maps are empty, those are ignored with a warning.
    """
    if len(segmaps) == 0:
        raise InputError("--segmap", "no segmentation map given",
                         "give at least one with --segmap (e.g. from 'ifu-extract detect')")
    ny, nx = cube.ny, cube.nx
    kept, empty = [], []
    for k, item in enumerate(segmaps, start=1):
        if isinstance(item, np.ndarray):
            labels = np.asarray(item)
            if labels.shape != (ny, nx):
                raise InputError(f"segmap {k}", f"array of shape {labels.shape} is not on the cube "
                                 f"grid {(ny, nx)}", "reproject it first")
            grid = GridSegmap(np.where(labels > 0, labels, 0).astype(np.int32), f"segmap{k}")
            n_file = grid.labels.any()
        else:
            seg = item if isinstance(item, SegMap) else read_segmap(item)
            n_file = seg.nlabels
            labels, frac, how = segmap_on_grid(seg, cube.wcs, (ny, nx), min_coverage=min_coverage)
            grid = GridSegmap(labels, seg.path.name, how, frac)
            if frac < 0.99 and n_file:
                log.warning(f"warning: {seg.path}: covers {100 * frac:.0f}% of the cube grid; "
                            "spaxels outside it are treated as unlabelled (they may be chosen as sky)")
        if not grid.labels.any():
            why = ("has no labelled pixel (all background)" if not n_file else
                   f"has no labelled spaxel on the cube grid ({n_file} labels, none covering "
                   f">= {min_coverage:g} of a spaxel)")
            empty.append((grid.name, why))
            continue
        kept.append(grid)
    if not kept:
        name, why = empty[0]
        raise InputError(name, f"{why}, so every object would fall back to a PSF circle",
                         "check the detection threshold, or give another --segmap")
    for name, why in empty:
        log.warning(f"warning: {name}: {why}; ignored")
    return kept


# --------------------------------------------------------------------------------- result
@dataclass
class MaskResult:
    """Masks of every catalogue object, before writing.

    Attributes
    ----------
    objects : astropy.table.Table
        The ``OBJECTS`` table (see the module docstring).
    stamps : list
        Per catalogue row, ``(union, inter, sky)`` uint8 ``(NY, NX)`` arrays, or None.
    segmaps : list of GridSegmap
    wcs : astropy.wcs.WCS
        Celestial WCS of the cube.
    cube_name : str
    meta : dict
        Primary-header cards ``{key: (value, comment)}``.
    """

    objects: Table
    stamps: list
    segmaps: list
    wcs: WCS
    cube_name: str
    meta: dict = field(default_factory=dict)

    @property
    def n_masked(self) -> int:
        """Number of objects with an object mask."""
        return int(np.sum(self.objects["MASKUSED"] != ""))


def _window(arr: np.ndarray, x0: int, x1: int, y0: int, y1: int, fill) -> np.ndarray:
    """``arr[y0:y1, x0:x1]`` padded with *fill* where the box leaves the array."""
    ny, nx = arr.shape
    out = np.full((y1 - y0, x1 - x0), fill, dtype=arr.dtype)
    cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = arr[cy0:cy1, cx0:cx1]
    return out


def _disc(x: float, y: float, radius: float, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Spaxels of the box whose centres lie within *radius* pixels of (*x*, *y*)."""
    yy = np.arange(y0, y1)[:, None] - y
    xx = np.arange(x0, x1)[None, :] - x
    return xx * xx + yy * yy <= radius * radius


def _catalog_size(catalog: Table, default: float) -> np.ndarray:
    size = np.full(len(catalog), float(default))
    if "SIZE" in catalog.colnames:
        col = catalog["SIZE"]
        for i, v in enumerate(col):
            if v is np.ma.masked:
                continue
            try:
                val = float(v)
            except (TypeError, ValueError):
                continue
            if np.isfinite(val) and val > 0:
                size[i] = val
    return size


def _match_in_radius(labels: np.ndarray, x: float, y: float, radius: float,
                     claimed: set) -> int:
    """Dominant unclaimed label among the spaxels within *radius* pixels of (x, y); 0 if none.

    Dominant = most spaxels inside the disc; ties go to the label with the nearest spaxel, then
    to the smaller label.
    """
    r = int(np.ceil(radius)) + 1
    xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x0, x1, y0, y1 = xc - r, xc + r + 1, yc - r, yc + r + 1
    win = _window(labels, x0, x1, y0, y1, 0)
    yy = np.arange(y0, y1)[:, None] - y
    xx = np.arange(x0, x1)[None, :] - x
    d2 = xx * xx + yy * yy
    sel = (d2 <= radius * radius) & (win > 0)
    if not sel.any():
        return 0
    cand = win[sel]
    dist = d2[sel]
    ok = ~np.isin(cand, list(claimed)) if claimed else np.ones(cand.size, bool)
    if not ok.any():
        return 0
    cand, dist = cand[ok], dist[ok]
    labs, counts = np.unique(cand, return_counts=True)
    nearest = np.array([dist[cand == lab].min() for lab in labs])
    order = np.lexsort((labs, nearest, -counts))
    return int(labs[order[0]])


@dataclass
class _Placement:
    """Where the catalogue rows fall on the cube grid (internal)."""

    ids: list
    ra: np.ndarray
    dec: np.ndarray
    x: np.ndarray          # 0-based pixel positions, NaN when unusable
    y: np.ndarray
    xc: np.ndarray         # spaxel holding the position (-1 when unusable)
    yc: np.ndarray
    placed: np.ndarray     # finite pixel position
    infield: np.ndarray    # on a spaxel of the cube with finite white light
    status: list


def _place(cube: Cube, catalog: Table, valid: np.ndarray) -> _Placement:
    """Pixel positions of the rows and their statuses (bad coordinates, off field, no data)."""
    nrow = len(catalog)
    ids = [str(v) for v in catalog["ID"]]
    ra = np.asarray(np.ma.filled(np.ma.asarray(catalog["RA"], dtype=float), np.nan), dtype=float)
    dec = np.asarray(np.ma.filled(np.ma.asarray(catalog["DEC"], dtype=float), np.nan), dtype=float)
    status = [str(s) for s in catalog["STATUS"]] if "STATUS" in catalog.colnames else [OK] * nrow
    x = np.full(nrow, np.nan)
    y = np.full(nrow, np.nan)
    usable = np.array([s == OK for s in status], dtype=bool) & np.isfinite(ra) & np.isfinite(dec)
    if usable.any():
        x[usable], y[usable] = world_to_pixel(cube.wcs, ra[usable], dec[usable])
    for i in np.flatnonzero(~usable):
        if status[i] == OK:
            status[i] = "bad_coordinates: RA/DEC is not a number"
    placed = usable & np.isfinite(x) & np.isfinite(y)
    for i in np.flatnonzero(usable & ~placed):
        status[i] = "bad_coordinates: cannot be projected on the cube"
    xc = np.where(placed, np.floor(np.nan_to_num(x) + 0.5), -1).astype(np.int64)
    yc = np.where(placed, np.floor(np.nan_to_num(y) + 0.5), -1).astype(np.int64)
    inside = placed & (xc >= 0) & (xc < cube.nx) & (yc >= 0) & (yc < cube.ny)
    for i in np.flatnonzero(placed & ~inside):
        status[i] = ST_OFF_FIELD
    infield = inside.copy()
    infield[inside] = valid[yc[inside], xc[inside]]
    for i in np.flatnonzero(inside & ~infield):
        status[i] = ST_NO_DATA
    return _Placement(ids, ra, dec, x, y, xc, yc, placed, infield, status)


def _claim_labels(labels, pos: _Placement, match_pix: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's label in each map ``(nrow, nmap)`` and whether a radius search found it.

    The label under a position claims its segment; a position on background takes the dominant
    label within *match_pix* that no other row claims.
    """
    nrow = len(pos.ids)
    own = np.zeros((nrow, len(labels)), dtype=np.int64)
    matched = np.zeros(nrow, dtype=bool)
    rows = np.flatnonzero(pos.infield)
    for k, lab in enumerate(labels):
        own[rows, k] = lab[pos.yc[rows], pos.xc[rows]]
        claimed = set(np.unique(own[rows, k][own[rows, k] > 0]).tolist())
        if match_pix > 0:
            for i in rows[own[rows, k] == 0]:
                found = _match_in_radius(lab, pos.x[i], pos.y[i], match_pix, claimed)
                if found:
                    own[i, k] = found
                    matched[i] = True
    return own, matched


def _sky_allowed(labels, valid: np.ndarray, pos: _Placement, circle_rows, radius_pix: float,
                 sky_grow: int) -> np.ndarray:
    """Spaxels any sky may use: finite data, no label and no PSF-circle fallback (both grown)."""
    ny, nx = valid.shape
    blocked = np.zeros((ny, nx), dtype=bool)
    for lab in labels:
        blocked |= lab > 0
    r = int(np.ceil(radius_pix)) + 1
    for i in circle_rows:
        bx0, bx1, by0, by1 = pos.xc[i] - r, pos.xc[i] + r + 1, pos.yc[i] - r, pos.yc[i] + r + 1
        disc = _disc(pos.x[i], pos.y[i], radius_pix, bx0, bx1, by0, by1)
        cx0, cy0, cx1, cy1 = max(bx0, 0), max(by0, 0), min(bx1, nx), min(by1, ny)
        blocked[cy0:cy1, cx0:cx1] |= disc[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0]
    if sky_grow > 0:
        struct = ndimage.generate_binary_structure(2, 1)
        blocked = ndimage.binary_dilation(blocked, struct, iterations=int(sky_grow))
    return valid & ~blocked


def _voronoi_cells(pos: _Placement, shape) -> np.ndarray:
    """``(ny, nx)`` row index of the nearest catalogue position to every spaxel centre."""
    ny, nx = shape
    rows = np.flatnonzero(pos.placed)
    tree = cKDTree(np.column_stack([pos.x[rows], pos.y[rows]]))
    gy, gx = np.mgrid[0:ny, 0:nx]
    _, nearest = tree.query(np.column_stack([gx.ravel(), gy.ravel()]))
    return rows[nearest].reshape(ny, nx)


def _split_shared(labels, own: np.ndarray, rows, pos: _Placement, white: np.ndarray,
                  core_pix: float) -> tuple[list, np.ndarray, int]:
    """Split every segment claimed by several rows among them (:func:`~ifu_extract.segmap.split_label`).

    Returns the new label maps, the rows' labels in them, and the number of segments split.
    The first claimant (catalogue order) keeps the segment's label, the others get new ones;
    spaxels of the segment that no claimant's flood reaches get a label of their own, so that
    they go to nobody's mask and not to the sky.
    """
    out, own = [], own.copy()
    nsplit = 0
    for k, lab in enumerate(labels):
        groups: dict = {}
        for i in rows:
            if own[i, k] > 0:
                groups.setdefault(int(own[i, k]), []).append(int(i))
        shared = {key: members for key, members in groups.items() if len(members) > 1}
        if not shared:
            out.append(lab)
            continue
        new = lab.copy()
        free = int(lab.max()) + 1
        for key in sorted(shared):
            members = shared[key]
            part = split_label(lab == key, white, [(pos.x[i], pos.y[i]) for i in members], core_pix)
            for m, i in enumerate(members):
                value = key if m == 0 else free
                free += m > 0
                new[part == m + 1] = value
                own[i, k] = value
            new[(lab == key) & (part == 0)] = free
            free += 1
            nsplit += 1
        out.append(new)
    return out, own, nsplit


def _shared_segments(own: np.ndarray, rows) -> dict:
    """``{row: [other rows]}`` of rows whose label is also another row's label in some map."""
    shared: dict = {}
    for k in range(own.shape[1]):
        groups: dict = {}
        for i in rows:
            if own[i, k] > 0:
                groups.setdefault(int(own[i, k]), []).append(int(i))
        for members in groups.values():
            for i in members if len(members) > 1 else ():
                have = shared.setdefault(i, [])
                have.extend(j for j in members if j != i and j not in have)
    return shared


def _warn_rows(pos: _Placement, status, fwhm: float) -> None:
    """One ObjectWarning per row that could not be processed as asked."""
    for i, st in enumerate(status):
        if st == OK or st.startswith((ST_RADIUS, ST_SHARED)):
            continue
        if st == ST_OFF_FIELD:
            msg = "outside the cube; no mask"
        elif st == ST_NO_DATA:
            msg = "no valid data at its position (NaN white light); no mask"
        elif st.startswith(ST_CIRCLE):
            msg = f"no segment in any map; PSF circle of radius {fwhm:.2f} arcsec used"
        elif st.startswith(ST_SEG_UNUSABLE):
            msg = ("its segment lies entirely on neighbours or outside its Voronoi cell; PSF "
                   f"circle of radius {fwhm:.2f} arcsec used")
        elif st.startswith(ST_INTER_EMPTY):
            msg = "the intersection of the maps is empty; the union is used"
        else:
            msg = st
        warn_object(pos.ids[i] or f"(row {i + 1})", msg)


def build_masks(cube: Cube, catalog: Table, segmaps, *, white: np.ndarray | None = None,
                size: float = DEFAULT_SIZE, mode: str = "union", fwhm: float | None = None,
                match_radius: float = DEFAULT_MATCH_RADIUS, sky_grow: int = DEFAULT_SKY_GROW,
                split: bool = True, voronoi: bool = False, warn: bool = True) -> MaskResult:
    """Object and sky masks for every catalogue row.

    Parameters
    ----------
    cube : Cube
        Gives the grid (WCS, ``ny``, ``nx``, spaxel scale) and, unless *white* is given, the
        white light whose finite spaxels define where data exist.
    catalog : astropy.table.Table
        From :func:`~ifu_extract.catalog.read_catalog`: ``ID``, ``RA``, ``DEC`` (deg),
        ``STATUS``, optional ``SIZE`` (arcsec; a finite positive value wins over *size*).
    segmaps : sequence of GridSegmap or (ny, nx) int arrays
        Segmentation maps already on the cube grid (:func:`prepare_segmaps`).
    white : numpy.ndarray, optional
        ``(ny, nx)`` white-light image; spaxels where it is not finite are never used.
        Computed with :func:`~ifu_extract.image.band_image` when not given.
    size : float
        Full side of the stamp box, arcsec.
    mode : {"union", "inter"}
        Object mask to use: union or intersection of the maps (intersection falls back to union
        when empty).
    fwhm : float, optional
        PSF FWHM, arcsec, radius of the circle fallback (see :func:`resolve_fwhm`).
    match_radius : float
        Radius, arcsec, within which the dominant unclaimed label is taken when the position
        falls on background (0 = only the label at the position).
    sky_grow : int
        Every label is grown by this many spaxels before the sky is chosen.
    split : bool
        Share every segment claimed by several rows among them: each keeps the segment's
        spaxels within one FWHM of its position, and the rest goes by a watershed on the white
        light seeded by the rows (:func:`~ifu_extract.segmap.split_label`).  The split labels
        are the ``SEGMAP`` written.  Off: every claimant takes the whole segment, and its
        status says ``shared_segment``.
    voronoi : bool
        Cut every object mask to the object's Voronoi cell among the catalogue positions
        (instead of *split*).
    warn : bool
        Emit an :class:`~ifu_extract.errors.ObjectWarning` for each object not processed as
        asked (off the field, fallbacks).

    Returns
    -------
    MaskResult
    """
    if mode not in MODES:
        raise InputError("--mode", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    if not np.isfinite(size) or size <= 0:
        raise InputError("--size", f"{size} is not a positive box size", "give the box side in arcsec")
    if match_radius < 0 or sky_grow < 0:
        raise InputError("--match-radius/--sky-grow", "must not be negative", "give 0 or more")
    grids = [s if isinstance(s, GridSegmap) else GridSegmap(np.asarray(s, dtype=np.int32), f"segmap{k}")
             for k, s in enumerate(segmaps, start=1)]
    if not grids:
        raise InputError("--segmap", "no segmentation map given", "give at least one with --segmap")
    ny, nx = cube.ny, cube.nx
    for g in grids:
        if g.labels.shape != (ny, nx):
            raise InputError(g.name, f"shape {g.labels.shape} is not the cube grid {(ny, nx)}",
                             "put it on the cube grid with prepare_segmaps")
    if white is None:
        from .image import band_image

        white = band_image(cube).data
    valid = np.isfinite(np.asarray(white))
    pixscale = cube.pixscale
    fwhm_val, fwhm_src = resolve_fwhm(cube, fwhm, catalog_candidates(cube, catalog) if fwhm is None else None)
    radius_pix = fwhm_val / pixscale
    labels = [g.labels for g in grids]
    nrow = len(catalog)

    pos = _place(cube, catalog, valid)
    own, radius_matched = _claim_labels(labels, pos, match_radius / pixscale)
    has_segment = (own > 0).any(axis=1)
    rows = np.flatnonzero(pos.infield)
    nsplit = 0
    if split and not voronoi:
        labels, own, nsplit = _split_shared(labels, own, rows, pos, np.asarray(white), radius_pix)
        grids = [GridSegmap(lab, g.name, g.how, g.footprint) for lab, g in zip(labels, grids)]
    sky_ok = _sky_allowed(labels, valid, pos, np.flatnonzero(pos.infield & ~has_segment),
                          radius_pix, sky_grow)
    cell = _voronoi_cells(pos, (ny, nx)) if voronoi else None
    # Circle fallbacks are cut to the Voronoi cells too, so that no two footprints overlap.
    circle_cell = cell
    shared = {} if voronoi else _shared_segments(own, rows)

    sizes = cube.clip_box_sizes(_catalog_size(catalog, size))
    boxes = np.zeros((nrow, 4), dtype=np.int32)  # x0, y0, nx, ny
    for i in np.flatnonzero(pos.placed):
        bx0, bx1, by0, by1 = stamp_box(pos.x[i], pos.y[i], sizes[i], pixscale)
        boxes[i] = (bx0, by0, bx1 - bx0, by1 - by0)
    counts = np.zeros((nrow, 3), dtype=np.int32)  # N_UNION, N_INTER, N_SKY
    used = [""] * nrow
    seglabel = [""] * nrow
    stamps: list = [None] * nrow
    status = list(pos.status)
    for i in rows:
        bx0, by0, bnx, bny = (int(v) for v in boxes[i])
        bx1, by1 = bx0 + bnx, by0 + bny
        seglabel[i] = ",".join(str(int(v)) for v in own[i])
        # Spaxels the object may use: finite data, no other label in any map, its own cell.
        other = np.zeros((bny, bnx), dtype=bool)
        owns = []
        for k, lab in enumerate(labels):
            win = _window(lab, bx0, bx1, by0, by1, 0)
            mine = (win == own[i, k]) & (own[i, k] > 0)
            other |= (win > 0) & ~mine
            owns.append(mine)
        keep = _window(valid, bx0, bx1, by0, by1, False) & ~other
        if cell is not None:
            keep &= _window(cell, bx0, bx1, by0, by1, -1) == i
        note = []
        if has_segment[i]:
            union = np.logical_or.reduce(owns) & keep
            inter = np.logical_and.reduce(owns) & keep
            if mode == "inter" and inter.any():
                used[i] = "inter"
            elif union.any():
                used[i] = "union"
                if mode == "inter":
                    note.append(ST_INTER_EMPTY)
            if radius_matched[i]:
                note.append(ST_RADIUS)
        if not used[i]:
            # No segment, or nothing of it left (neighbours, Voronoi cell): the PSF circle.
            if circle_cell is None:
                circle_cell = _voronoi_cells(pos, (ny, nx))
            union = _disc(pos.x[i], pos.y[i], radius_pix, bx0, bx1, by0, by1) & keep
            union &= _window(circle_cell, bx0, bx1, by0, by1, -1) == i
            inter = union
            note = [ST_CIRCLE if not has_segment[i] else ST_SEG_UNUSABLE]
            if union.any():
                used[i] = "circle"
        if not used[i]:
            note = [f"{ST_EMPTY}: no usable spaxel left for the object (neighbours, Voronoi cell "
                    "or missing data)"]
        if i in shared and used[i] in ("union", "inter"):
            others = shared[i]
            text = ",".join(pos.ids[j] for j in others[:3]) + (",..." if len(others) > 3 else "")
            note.append(f"{ST_SHARED}: with {text} (segment not split)")
        sky = _window(sky_ok, bx0, bx1, by0, by1, False) & ~union
        counts[i] = (union.sum(), inter.sum(), sky.sum())
        status[i] = "; ".join(note) if note else OK
        if used[i]:
            stamps[i] = (union.astype(np.uint8), inter.astype(np.uint8), sky.astype(np.uint8))
    if warn:
        _warn_rows(pos, status, fwhm_val)

    out = Table()
    out["ID"] = _text(pos.ids)
    out["RA"] = pos.ra * u.deg
    out["DEC"] = pos.dec * u.deg
    out["X"] = pos.x * u.pix
    out["Y"] = pos.y * u.pix
    for j, name in enumerate(("X0", "Y0", "NX", "NY")):
        out[name] = boxes[:, j]
    out["STATUS"] = _text(status)
    out["MASKUSED"] = _text(used)
    for j, name in enumerate(("N_UNION", "N_INTER", "N_SKY")):
        out[name] = counts[:, j]
    out["SEGLABEL"] = _text(seglabel)
    meta = {
        "CUBE": (Path(str(cube.path)).name[:68], "datacube the masks are on"),
        "NOBJ": (nrow, "catalogue rows (OBJECTS table)"),
        "NMASKED": (int(sum(1 for s in used if s)), "rows with an object mask"),
        "MASKMODE": (mode, "object mask asked: union or inter"),
        "FWHM": (round(fwhm_val, 4), "[arcsec] PSF FWHM = radius of circle fallbacks"),
        "FWHMSRC": (fwhm_src, "where the FWHM came from"),
        "BOXSIZE": (float(size), "[arcsec] default full side of the stamp boxes"),
        "MATCHRAD": (float(match_radius), "[arcsec] radius for matching a segment"),
        "SKYGROW": (int(sky_grow), "[spaxel] labels grown before choosing the sky"),
        "SPLIT": (bool(split and not voronoi), "shared segments split: PSF cores + watershed"),
        "NSPLIT": (int(nsplit), "segments shared by several objects, split"),
        "VORONOI": (bool(voronoi), "object masks cut to Voronoi cells"),
        "NSEGMAP": (len(grids), "segmentation maps used"),
    }
    for k, g in enumerate(grids, start=1):
        meta[f"SEGMAP{k}"] = (g.name[:68], f"segmentation map {k} (SEGLABEL field {k})")
        meta[f"SEGHOW{k}"] = (g.how, f"how map {k} was put on the cube grid")
        meta[f"SEGCOV{k}"] = (round(g.footprint, 4), f"share of the cube grid covered by map {k}")
    return MaskResult(out, stamps, grids, cube.wcs, Path(str(cube.path)).name, meta)


def _set_card(header: fits.Header, key: str, value, comment: str) -> None:
    """Set a card, shortening the comment to what fits beside the value (no VerifyWarning)."""
    if isinstance(value, str):
        value = ascii_safe(value)  # FITS headers are ASCII (a cube named cübe.fits)
    width = len(str(fits.Card(key, value)).rstrip())
    room = 80 - width - 3
    header[key] = (value, comment[:room] if room > 0 else "")


def _ascii_table(table: Table) -> Table:
    """*table* with its text columns made ASCII (:func:`~ifu_extract.fitsout.ascii_safe`):
    FITS tables hold ASCII only; :func:`read_masks` restores the IDs."""
    text = [c for c in table.colnames if table[c].dtype.kind == "U"
            and not all(str(v).isascii() for v in table[c])]
    if not text:
        return table
    out = table.copy(copy_data=False)
    for c in text:
        out[c] = _text([ascii_safe(v) for v in table[c]])
    return out


def _text(values) -> np.ndarray:
    arr = np.array([str(v) for v in values], dtype=str)
    return arr if arr.dtype.itemsize else arr.astype("U1")


def make_masks(cube: Cube, catalog: Table, segmaps, *, min_coverage: float = DEFAULT_MIN_COVERAGE,
               **kwargs) -> MaskResult:
    """Read and place *segmaps* (paths or SegMaps) on the grid of *cube*, then build the masks.

    Parameters
    ----------
    cube : Cube
    catalog : astropy.table.Table
    segmaps : sequence of str, os.PathLike, SegMap or arrays on the cube grid
        None given: every object gets a PSF circle.
    min_coverage : float
        Minimum area share for reprojected maps.
    **kwargs
        Passed to :func:`build_masks` (``size``, ``mode``, ``fwhm``, ``match_radius``,
        ``sky_grow``, ``split``, ``voronoi``, ``white``, ``warn``).

    Returns
    -------
    MaskResult
    """
    if len(segmaps) == 0:
        # No map at all: every object gets the fallback of objects no segment covers, the PSF
        # circle (an all-empty map *given* is refused by prepare_segmaps: a wrong file).
        grids = [GridSegmap(np.zeros((cube.ny, cube.nx), np.int32), "none", "no map given", 0.0)]
    else:
        grids = prepare_segmaps(list(segmaps), cube, min_coverage=min_coverage)
    result = build_masks(cube, catalog, grids, **kwargs)
    result.meta["MINCOVER"] = (float(min_coverage), "min area share of a reprojected label")
    return result


def write_masks(result: MaskResult, path, *, inputs: dict | None = None,
                params: dict | None = None, tool: str = "mask") -> Path:
    """Write a :class:`MaskResult` as ``MASKS.fits`` (atomically; layout in the module docstring).

    The PRIMARY, ``OBJECTS`` and ``SEGMAP`` HDUs are written by astropy; the thousands of small
    per-object mask HDUs are serialised directly (:func:`_mask_hdu_bytes`: same cards, same
    CHECKSUM/DATASUM as astropy would write, ~50 times faster).

    Parameters
    ----------
    result : MaskResult
    path : str or os.PathLike
        Output FITS file.
    inputs, params : dict, optional
        Provenance (see :func:`~ifu_extract.fitsout.add_provenance`).
    tool : str
        Microtool recorded in the provenance.
    """
    prim = fits.PrimaryHDU()
    add_provenance(prim.header, tool, inputs, params)
    for key, (value, comment) in result.meta.items():
        _set_card(prim.header, key, value, comment)
    hdus = [prim, fits.BinTableHDU(_ascii_table(result.objects), name="OBJECTS")]
    cube_hdr = result.wcs.to_header(relax=True)
    for k, g in enumerate(result.segmaps, start=1):
        h = cube_hdr.copy()
        _set_card(h, "SEGFILE", g.name[:68], "original segmentation map")
        h["SEGHOW"] = (g.how, "how it was put on the cube grid")
        hdus.append(fits.ImageHDU(g.labels.astype(np.int32), h, name="SEGMAP", ver=k))
    when = iso_date()
    wcs_cards = [(c.keyword, c.value, c.comment) for c in cube_hdr.cards
                 if c.keyword not in ("WCSAXES", "CRPIX1", "CRPIX2")]
    crpix = (float(cube_hdr["CRPIX1"]), float(cube_hdr["CRPIX2"]))
    dest = Path(path)
    with atomic_path(dest, suffix=".fits") as tmp:
        try:
            hdul = fits.HDUList(hdus)
            hdul.verify("silentfix")
            for hdu in hdul:
                # Checksum comments dated like the rest (SOURCE_DATE_EPOCH): reruns are identical.
                hdu.add_datasum(when=f"data unit checksum updated {when}")
                hdu.add_checksum(when=f"HDU checksum updated {when}", override_datasum=True)
            hdul.writeto(tmp, overwrite=True, checksum=False, output_verify="silentfix")
            with open(tmp, "ab") as fh:
                for i, stamp in enumerate(result.stamps):
                    if stamp is None:
                        continue
                    row = result.objects[i]
                    x0, y0 = int(row["X0"]), int(row["Y0"])
                    common = [("WCSAXES", 2, "Number of coordinate axes"),
                              ("CRPIX1", crpix[0] - x0, "Pixel coordinate of reference point"),
                              ("CRPIX2", crpix[1] - y0, "Pixel coordinate of reference point"),
                              *wcs_cards,
                              ("OBJ_ID", str(row["ID"]), "catalogue ID"),
                              ("BOXX0", x0, "[pix] cube x of stamp column 0 (0-based)"),
                              ("BOXY0", y0, "[pix] cube y of stamp row 0 (0-based)")]
                    for name, arr in zip(_MASK_NAMES, stamp):
                        kind = name[5:].lower()
                        if name != "MASK_SKY" and row["MASKUSED"] == "circle":
                            kind = "circle"
                        cards = common + [("MASKKIND", kind, "union, inter, sky, or circle (PSF fallback)")]
                        fh.write(_mask_hdu_bytes(arr, name, i + 1, cards, when))
        except OSError as exc:
            raise InputError(dest, f"cannot write ({exc.strerror or exc})",
                             "check free space and permissions") from None
    return dest


_BLOCK = 2880


@functools.lru_cache(maxsize=65536)
def _card(key: str, value, comment: str) -> bytes:
    """One 80-byte header card, formatted by astropy (cached: most cards repeat)."""
    if isinstance(value, str):
        value = ascii_safe(value)  # FITS headers are ASCII (an ID such as gälaxy6)
    return str(fits.Card(key, value, comment)).encode("ascii")


def _mask_hdu_bytes(arr: np.ndarray, name: str, ver: int, cards, when: str) -> bytes:
    """A complete uint8 image extension (header and data, padded) with CHECKSUM and DATASUM."""
    ny, nx = arr.shape
    data = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    data += b"\0" * (-len(data) % _BLOCK)
    datasum = ones_sum(data)
    head = [_card("XTENSION", "IMAGE", "Image extension"), _card("BITPIX", 8, "array data type"),
            _card("NAXIS", 2, "number of array dimensions"), _card("NAXIS1", nx, ""),
            _card("NAXIS2", ny, ""), _card("PCOUNT", 0, "number of parameters"),
            _card("GCOUNT", 1, "number of groups")]
    head += [_card(k, v, c) for k, v, c in cards]
    head += [_card("EXTNAME", name, "extension name"), _card("EXTVER", ver, "extension value")]
    head.append(_card("CHECKSUM", "0" * 16, f"HDU checksum updated {when}"))
    head.append(_card("DATASUM", str(datasum), f"data unit checksum updated {when}"))
    text = b"".join(head) + b"END".ljust(80)
    text += b" " * (-len(text) % _BLOCK)
    checksum = encode_checksum(~ones_sum(text, datasum) & 0xFFFFFFFF)
    pos = text.index(b"CHECKSUM= '") + 11
    text = text[:pos] + checksum.encode("ascii") + text[pos + 16:]
    return text + data


# --------------------------------------------------------------------------------- reading
@dataclass
class ObjectMasks:
    """The masks of one object, on its stamp box.

    Attributes
    ----------
    id : str
    row : int
        0-based catalogue row.
    x0, y0 : int
        Cube pixel of the stamp's ``[0, 0]`` (may be negative).
    union, inter, sky : numpy.ndarray
        ``(ny, nx)`` bool.
    used : str
        ``"union"``, ``"inter"``, ``"circle"`` (the MASKUSED column).
    status : str
    header_source : astropy.io.fits.Header, bytes or None
        Header of the stamp (celestial WCS), or its raw FITS bytes: :attr:`header` parses them
        when first asked (extraction never needs it), and :attr:`wcs` is built from it.
    """

    id: str
    row: int
    x0: int
    y0: int
    union: np.ndarray
    inter: np.ndarray
    sky: np.ndarray
    used: str
    status: str = OK
    header_source: fits.Header | bytes | None = field(default=None, repr=False)

    @property
    def header(self) -> fits.Header | None:
        """Header of the stamp (celestial WCS, ``OBJ_ID``, ``BOXX0``...), or None."""
        if isinstance(self.header_source, bytes):
            self.header_source = fits.Header.fromstring(self.header_source.decode("ascii"))
        return self.header_source

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.union.shape)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, x1, y0, y1)`` half-open cube-pixel ranges, as :func:`~ifu_extract.wcsutil.stamp_box`."""
        ny, nx = self.shape
        return self.x0, self.x0 + nx, self.y0, self.y0 + ny

    @property
    def wcs(self) -> WCS | None:
        """Celestial WCS of the stamp (None without a header)."""
        if self.header is None:
            return None
        if not hasattr(self, "_wcs"):
            self._wcs = celestial_from_header(self.header)
        return self._wcs

    @property
    def obj(self) -> np.ndarray:
        """The object mask named by :attr:`used`."""
        return object_mask(self)

    def on_box(self, box) -> "ObjectMasks":
        """The same masks on another box ``(x0, x1, y0, y1)`` of the cube (cropped / padded with False)."""
        x0, y0 = int(box[0]), int(box[2])
        header = None
        if self.header is not None:
            header = fits.Header([c for c in self.header.cards
                                  if c.keyword not in ("NAXIS1", "NAXIS2", "CHECKSUM", "DATASUM")])
            header["CRPIX1"] = float(header["CRPIX1"]) - (x0 - self.x0)
            header["CRPIX2"] = float(header["CRPIX2"]) - (y0 - self.y0)
            header["BOXX0"], header["BOXY0"] = x0, y0
        return ObjectMasks(self.id, self.row, x0, y0, reframe(self.union, self.box, box),
                           reframe(self.inter, self.box, box), reframe(self.sky, self.box, box),
                           self.used, self.status, header_source=header)


def reframe(mask: np.ndarray, src_box, dst_box) -> np.ndarray:
    """Move a boolean stamp from box *src_box* to *dst_box* (both ``(x0, x1, y0, y1)``, cube pixels).

    Spaxels of the destination outside the source are False.
    """
    sx0, sx1, sy0, sy1 = (int(v) for v in src_box)
    dx0, dx1, dy0, dy1 = (int(v) for v in dst_box)
    out = np.zeros((dy1 - dy0, dx1 - dx0), dtype=bool)
    ix0, ix1, iy0, iy1 = max(sx0, dx0), min(sx1, dx1), max(sy0, dy0), min(sy1, dy1)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - dy0:iy1 - dy0, ix0 - dx0:ix1 - dx0] = mask[iy0 - sy0:iy1 - sy0, ix0 - sx0:ix1 - sx0]
    return out


def object_mask(masks: ObjectMasks, used: str | None = None) -> np.ndarray:
    """The object mask named by ``MASKUSED`` (or by *used*): a ``(ny, nx)`` bool array.

    ``"union"`` and ``"circle"`` give ``MASK_UNION`` (a circle fallback is stored there),
    ``"inter"`` gives ``MASK_INTER``; an empty name gives an all-False mask.
    """
    used = masks.used if used is None else used
    if used in ("union", "circle"):
        return masks.union
    if used == "inter":
        return masks.inter
    if used == "":
        return np.zeros(masks.shape, dtype=bool)
    raise ValueError(f"unknown mask name {used!r} (union, inter or circle)")


@dataclass(frozen=True)
class _HduSpan:
    """Where one HDU lies in a FITS file, from its structural keywords only.

    Attributes
    ----------
    name : str
        ``EXTNAME`` in upper case (``"PRIMARY"`` for the first HDU when it has none).
    ver : int
        ``EXTVER`` (1 when absent).
    header_start, data_start : int
        Byte offsets of the header and of the data.
    shape : tuple of int
        Data shape in numpy order (``NAXISn ... NAXIS1``).
    bitpix : int
    scaled : bool
        ``BSCALE``/``BZERO`` present (read through astropy, which applies them).
    """

    name: str
    ver: int
    header_start: int
    data_start: int
    shape: tuple
    bitpix: int
    scaled: bool

    @property
    def nbytes(self) -> int:
        return abs(self.bitpix) // 8 * int(np.prod(self.shape)) if self.shape else 0


_END_CARD = re.compile(rb"END {77}")
_STRUCT_CARD = re.compile(rb"(BITPIX|NAXIS\d*|PCOUNT|GCOUNT|EXTNAME|EXTVER|BSCALE|BZERO) *= *('(?:[^']|'')*'|[^ /]+)")


def _scan_hdus(buf, size: int, path) -> list[_HduSpan]:
    """Every HDU of the FITS bytes *buf* (``size`` long), without parsing full headers.

    A masks file holds three small HDUs per object; astropy builds every header of the file
    when it opens it (~1 ms each), whereas extraction needs three arrays per object.  This scan
    reads only the structural cards (FITS standard 4.0, section 4.4.1) and the names.
    """
    spans = []
    pos = 0
    while pos < size:
        end = _END_CARD.search(buf, pos)
        while end is not None and (end.start() - pos) % 80:
            end = _END_CARD.search(buf, end.start() + 1)
        header_end = size + 1 if end is None else end.start() + 80
        header_end += -(header_end - pos) % _BLOCK
        if header_end > size:
            raise InputError(path, f"is truncated (HDU {len(spans)} has no complete header)",
                             "re-create it with 'ifu-extract mask'")
        cards = {}
        for m in _STRUCT_CARD.finditer(buf, pos, end.start()):
            if (m.start() - pos) % 80 == 0:
                cards.setdefault(m.group(1).decode(), m.group(2).decode().strip("'").strip())
        try:
            naxis = int(cards.get("NAXIS", 0))
            shape = tuple(int(cards[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
            bitpix = int(cards["BITPIX"])
            ver = int(cards.get("EXTVER", 1))
            pcount, gcount = int(cards.get("PCOUNT", 0)), int(cards.get("GCOUNT", 1))
        except (KeyError, ValueError):
            raise InputError(path, f"has an unreadable header at byte {pos}",
                             "re-create it with 'ifu-extract mask'") from None
        name = cards.get("EXTNAME", "PRIMARY" if not spans else "").upper()
        span = _HduSpan(name, ver, pos, header_end, shape, bitpix, "BSCALE" in cards or "BZERO" in cards)
        nbytes = abs(bitpix) // 8 * gcount * (pcount + (int(np.prod(shape)) if shape else 0))
        if header_end + nbytes > size:
            raise InputError(path, f"is truncated (HDU {len(spans)} needs {header_end + nbytes} bytes, "
                             f"the file has {size})", "re-create it with 'ifu-extract mask'")
        spans.append(span)
        pos = header_end + nbytes + (-nbytes % _BLOCK)
    return spans


class MaskSet:
    """Access to the per-object masks of a ``MASKS.fits`` file (see :func:`read_masks`).

    Use as a context manager, or call :meth:`close`.  Index by 0-based row number or by ID:
    ``masks.get(3)``, ``masks.get("12")``; the result is None for rows without masks.

    The mask HDUs are read straight from the memory-mapped file at offsets found by one scan
    of the structural cards (:func:`_scan_hdus`), so that opening a file of thousands of
    objects costs milliseconds, not seconds; their headers are parsed only when asked for.
    """

    def __init__(self, path, hdul: fits.HDUList, objects: Table, spans: list, buf):
        self.path = Path(path)
        self._hdul = hdul
        self._spans = spans
        self._buf = buf
        self.objects = objects
        self.header = hdul[0].header
        self._index = {(s.name, s.ver): i for i, s in enumerate(spans)}
        self._rows = {str(v): i for i, v in enumerate(objects["ID"])}

    def __len__(self) -> int:
        return len(self.objects)

    def row_of(self, key) -> int:
        """0-based row of *key* (a row number or an ID)."""
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < len(self.objects):
                raise IndexError(f"row {key} out of range (0-{len(self.objects) - 1})")
            return int(key)
        if str(key) not in self._rows:
            raise KeyError(f"no object with ID {key!r} in {self.path.name}")
        return self._rows[str(key)]

    def _mask(self, i: int) -> np.ndarray:
        """HDU *i* as a bool array (raw bytes for our uint8 masks, astropy otherwise)."""
        span = self._spans[i]
        if span.bitpix != 8 or span.scaled:
            return np.asarray(self._hdul[i].data, dtype=bool)
        raw = self._buf[span.data_start:span.data_start + span.nbytes]
        return np.frombuffer(raw, dtype=np.uint8).reshape(span.shape).astype(bool)

    def get(self, key) -> ObjectMasks | None:
        """The masks of one object (by row number or ID), or None when it has none."""
        i = self.row_of(key)
        row = self.objects[i]
        if not str(row["MASKUSED"]) or ("MASK_UNION", i + 1) not in self._index:
            return None
        idx = [self._index[(n, i + 1)] for n in _MASK_NAMES]
        arrs = [self._mask(k) for k in idx]
        first = self._spans[idx[0]]
        header = self._buf[first.header_start:first.data_start]
        return ObjectMasks(str(row["ID"]), i, int(row["X0"]), int(row["Y0"]), *arrs,
                           used=str(row["MASKUSED"]), status=str(row["STATUS"]), header_source=header)

    __getitem__ = get

    @property
    def n_segmaps(self) -> int:
        """Number of SEGMAP HDUs (segmentation maps on the cube grid)."""
        return sum(1 for name, _ in self._index if name == "SEGMAP")

    def segmap(self, k: int = 1) -> np.ndarray | None:
        """The *k*-th (1-based) segmentation map on the cube grid, ``(ny, nx)`` int32, or None."""
        if ("SEGMAP", k) not in self._index:
            return None
        return np.asarray(self._hdul[self._index[("SEGMAP", k)]].data, dtype=np.int32)

    def close(self) -> None:
        self._hdul.close()
        self._buf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_mask_hdus(objects: Table, spans: list, path) -> None:
    """Every object with masks has its three stamps, of the box size in its OBJECTS row.

    A file cut at an HDU boundary scans cleanly; the objects whose stamps are gone would be
    extracted with empty masks under their old statuses.
    """
    shapes = {(s.name, s.ver): s.shape for s in spans if s.name in _MASK_NAMES}
    used = np.flatnonzero(np.asarray(objects["MASKUSED"]) != "")
    ny, nx = np.asarray(objects["NY"]), np.asarray(objects["NX"])
    missing = bad = 0
    for i in used:
        want = (int(ny[i]), int(nx[i]))
        for name in _MASK_NAMES:
            got = shapes.get((name, int(i) + 1))
            if got is None:
                missing += 1
                break
            if tuple(got) != want:
                bad += 1
                break
    if missing:
        raise InputError(path, f"is truncated or incomplete: the masks of {missing} of "
                         f"{len(used)} objects are missing", "re-create it with 'ifu-extract mask'")
    if bad:
        raise InputError(path, f"is corrupt: the masks of {bad} objects do not have the box size "
                         "of their OBJECTS row", "re-create it with 'ifu-extract mask'")


def read_masks(path) -> tuple[Table, MaskSet]:
    """Open a ``MASKS.fits`` file written by :func:`write_masks`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    objects : astropy.table.Table
        The ``OBJECTS`` table (``ID``, ``STATUS``, ``MASKUSED``, ``SEGLABEL`` as str).
    masks : MaskSet
        ``masks.get(row_or_id)`` gives an :class:`ObjectMasks` (three bool stamps and the box),
        and :func:`object_mask` the mask named by ``MASKUSED``.

    Raises
    ------
    InputError
        Not FITS, or not a masks file (no ``OBJECTS`` table with the expected columns).
    """
    hdul = open_fits(path, "masks file", lazy=True)
    buf = None
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        spans = _scan_hdus(buf, len(buf), path)
        names = [s.name for s in spans]
        if "OBJECTS" not in names:
            raise InputError(path, "has no OBJECTS table, so it is not a masks file",
                             "give the output of 'ifu-extract mask'")
        objects = Table(hdul[names.index("OBJECTS")].data, masked=False)
        missing = [c for c in _TABLE_COLUMNS if c not in objects.colnames]
        if missing:
            raise InputError(path, f"OBJECTS table lacks {', '.join(missing)}",
                             "re-create it with 'ifu-extract mask'")
        for name in ("ID", "STATUS", "MASKUSED", "SEGLABEL"):
            objects[name] = np.char.strip(np.asarray(objects[name]).astype(str))
        for name in ("ID", "STATUS"):
            if any("\\" in v for v in objects[name]):  # non-ASCII text written escaped
                objects[name] = _text([ascii_unescape(v) for v in objects[name]])
        objects.meta.clear()
        _check_mask_hdus(objects, spans, path)
    except BaseException:
        hdul.close()
        if buf is not None:
            buf.close()
        raise
    return objects, MaskSet(path, hdul, objects, spans, buf)

"""Object and sky masks from segmentation maps: the algorithm of the ``mask`` step.

For every catalogue object, on the stamp box of :meth:`~ifu_extract.box.Box.around` (the
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
is also cut to the object's Voronoi cell among the catalogue positions (crowded fields); the
``NVORCUT`` card of the masks file counts the object masks that lost spaxels to that cut (0
without it), as ``NSPLIT`` counts the segments split.

The masks are written and read by :mod:`ifu_extract.masks.io` (file layout there).

``STATUS`` is ``ok`` or, joined by ``"; "``: ``off_field`` (outside the cube), ``no_data`` (NaN
white light at the position), ``bad_coordinates: ...`` (from the catalogue),
``no_segment_used_psf_circle``, ``segment_unusable_used_psf_circle``, ``inter_empty_used_union``,
``matched_within_radius``, ``shared_segment: with <IDs>`` (only when splitting is turned off),
``empty_mask: ...``.  A row has masks exactly when ``MASKUSED`` is not empty.

Axis order follows numpy: masks are ``(ny, nx)``; pixel coordinates are 0-based, ``x`` fast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from ..box import Box
from ..cubeio import Cube
from ..errors import OK, InputError, ParameterError, warn_object
from ..image import band_image
from ..psf import catalog_candidates, resolve_fwhm
from ..segmap import DEFAULT_MIN_COVERAGE, SegMap, read_segmap, segmap_on_grid, split_label
from ..wcsutil import world_to_pixel

__all__ = [
    "MODES",
    "DEFAULT_SIZE",
    "DEFAULT_MATCH_RADIUS",
    "DEFAULT_SKY_GROW",
    "GridSegmap",
    "BuiltMasks",
    "prepare_segmaps",
    "build_masks",
    "make_masks",
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
        raise ParameterError("{segmaps}", "no segmentation map given",
                             "give at least one with {segmaps} (e.g. from 'ifu-extract detect')",
                             params=("segmaps",))
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
                         "check the detection threshold, or give another segmentation map")
    for name, why in empty:
        log.warning(f"warning: {name}: {why}; ignored")
    return kept


# --------------------------------------------------------------------------------- result
@dataclass
class BuiltMasks:
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
    return Box(x0, x1, y0, y1).cut(arr, fill)


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
                fallback_fwhm: float | None = None, match_radius: float = DEFAULT_MATCH_RADIUS,
                sky_grow: int = DEFAULT_SKY_GROW,
                split: bool = True, voronoi: bool = False, warn: bool = True) -> BuiltMasks:
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
        PSF FWHM, arcsec, radius of the circle fallback (see :func:`ifu_extract.psf.resolve_fwhm`).
    fallback_fwhm : float, optional
        PSF FWHM, arcsec, when the cube has no FSF keywords and no star could be fitted
        (``FWHMSRC = 'fallback'``).
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
    BuiltMasks
    """
    if mode not in MODES:
        raise ParameterError("{mode}", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}",
                             params=("mode",))
    if not np.isfinite(size) or size <= 0:
        raise ParameterError("{size}", f"{size} is not a positive box size",
                             "give the box side in arcsec", params=("size",))
    for name, value in (("match_radius", match_radius), ("sky_grow", sky_grow)):
        if value < 0:
            raise ParameterError(f"{{{name}}}", f"{value} is negative", "give 0 or more", params=(name,))
    grids = [s if isinstance(s, GridSegmap) else GridSegmap(np.asarray(s, dtype=np.int32), f"segmap{k}")
             for k, s in enumerate(segmaps, start=1)]
    if not grids:
        raise ParameterError("{segmaps}", "no segmentation map given", "give at least one with {segmaps}",
                             params=("segmaps",))
    ny, nx = cube.ny, cube.nx
    for g in grids:
        if g.labels.shape != (ny, nx):
            raise InputError(g.name, f"shape {g.labels.shape} is not the cube grid {(ny, nx)}",
                             "put it on the cube grid with prepare_segmaps")
    if white is None:
        white = band_image(cube).data
    valid = np.isfinite(np.asarray(white))
    pixscale = cube.pixscale
    fwhm_val, fwhm_src = resolve_fwhm(cube, fwhm, catalog_candidates(cube, catalog) if fwhm is None else None,
                                      fallback_fwhm=fallback_fwhm)
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
        bx0, bx1, by0, by1 = Box.around(pos.x[i], pos.y[i], sizes[i], pixscale)
        boxes[i] = (bx0, by0, bx1 - bx0, by1 - by0)
    counts = np.zeros((nrow, 3), dtype=np.int32)  # N_UNION, N_INTER, N_SKY
    nvorcut = 0  # object masks the Voronoi cells cut
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
            segment = np.logical_or.reduce(owns) & keep  # its segment before the cut
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
        if cell is not None and has_segment[i] and (segment & ~union).any():
            nvorcut += 1  # the cut made: the object mask lost spaxels of its segment
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
        "NVORCUT": (int(nvorcut), "object masks cut by their Voronoi cell"),
        "NSEGMAP": (len(grids), "segmentation maps used"),
    }
    for k, g in enumerate(grids, start=1):
        meta[f"SEGMAP{k}"] = (g.name[:68], f"segmentation map {k} (SEGLABEL field {k})")
        meta[f"SEGHOW{k}"] = (g.how, f"how map {k} was put on the cube grid")
        meta[f"SEGCOV{k}"] = (round(g.footprint, 4), f"share of the cube grid covered by map {k}")
    return BuiltMasks(out, stamps, grids, cube.wcs, Path(str(cube.path)).name, meta)


def _text(values) -> np.ndarray:
    arr = np.array([str(v) for v in values], dtype=str)
    return arr if arr.dtype.itemsize else arr.astype("U1")


def make_masks(cube: Cube, catalog: Table, segmaps, *, min_coverage: float = DEFAULT_MIN_COVERAGE,
               **kwargs) -> BuiltMasks:
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
        Passed to :func:`build_masks` (``size``, ``mode``, ``fwhm``, ``fallback_fwhm``, ``match_radius``,
        ``sky_grow``, ``split``, ``voronoi``, ``white``, ``warn``).

    Returns
    -------
    BuiltMasks
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

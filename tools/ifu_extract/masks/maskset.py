"""What a masks file holds, as read: :class:`MaskSet` (every object) and :class:`ObjectMasks` (one).

The readers of the two file formats (:mod:`ifu_extract.masks.io`, version 2, and
:mod:`ifu_extract.masks.legacy`, version 1) return a :class:`MaskSet`.  Axis order follows numpy:
masks are ``(ny, nx)`` bool; pixel coordinates are 0-based, ``x`` fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from ..box import Box, reframe
from ..errors import OK, InputError
from ..fitsout import ascii_safe
from ..wcsutil import celestial_from_header

__all__ = ["MASK_NAMES", "TABLE_COLUMNS", "ObjectMasks", "MaskSet", "object_mask"]

#: The three masks of an object, in the order of :class:`ObjectMasks` (union, inter, sky).
MASK_NAMES = ("MASK_UNION", "MASK_INTER", "MASK_SKY")
#: Columns of the ``OBJECTS`` table (besides the masks).
TABLE_COLUMNS = ("ID", "RA", "DEC", "X", "Y", "X0", "Y0", "NX", "NY", "STATUS", "MASKUSED",
                 "N_UNION", "N_INTER", "N_SKY", "SEGLABEL")
RECREATE = "re-create it with 'ifu-extract mask'"


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
    header_source : astropy.io.fits.Header, callable or None
        Header of the stamp (celestial WCS), or a function that makes it: :attr:`header` calls
        it when first asked (extraction never needs it), and :attr:`wcs` is built from it.
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
    header_source: object = field(default=None, repr=False)

    @property
    def header(self) -> fits.Header | None:
        """Header of the stamp (celestial WCS, ``OBJ_ID``, ``BOXX0``...), or None."""
        if callable(self.header_source):
            self.header_source = self.header_source()
        return self.header_source

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.union.shape)

    @property
    def box(self) -> Box:
        """The stamp's :class:`~ifu_extract.box.Box` (half-open cube-pixel ranges)."""
        ny, nx = self.shape
        return Box(self.x0, self.x0 + nx, self.y0, self.y0 + ny)

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
            header = _shifted(self.header, x0 - self.x0, y0 - self.y0)
            header["BOXX0"], header["BOXY0"] = x0, y0
        return ObjectMasks(self.id, self.row, x0, y0, reframe(self.union, self.box, box, False),
                           reframe(self.inter, self.box, box, False), reframe(self.sky, self.box, box, False),
                           self.used, self.status, header_source=header)


def _shifted(header: fits.Header, dx: int, dy: int) -> fits.Header:
    """*header* for an image whose pixel [0, 0] is pixel (dx, dy) of *header*'s image."""
    out = header.copy()  # a copy of the cards too: setting CRPIX must not move the source's
    for key in ("NAXIS1", "NAXIS2", "CHECKSUM", "DATASUM"):
        out.remove(key, ignore_missing=True)
    out["CRPIX1"] = float(out["CRPIX1"]) - dx
    out["CRPIX2"] = float(out["CRPIX2"]) - dy
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


class MaskSet:
    """Access to the per-object masks of a masks file (see :func:`read_masks`).

    Use as a context manager, or call :meth:`close`.  Index by 0-based row number or by ID:
    ``masks.get(3)``, ``masks.get("12")``; the result is None for rows without masks.

    Subclasses say where the stamps are (:meth:`_stamps`, :meth:`_stamp_header`); this class
    reads them from the stacked ``MASKS`` image at the ``MASKOFF`` of each ``OBJECTS`` row
    (format version 2, :mod:`ifu_extract.masks.io`), memory-mapped: only the stamps asked for
    are read.
    """

    version = 2

    def __init__(self, path, hdul: fits.HDUList, objects: Table, stacked=None, wcs_header=None):
        self.path = Path(path)
        self._hdul = hdul
        self._stacked = stacked  # (MASKS (3, n) uint8, MASKOFF per row)
        self._wcs_header = wcs_header
        self.objects = objects
        self.header = hdul[0].header
        self._rows = {str(v): i for i, v in enumerate(objects["ID"])}
        self._segmaps = {h.ver: h for h in hdul if h.name == "SEGMAP"}

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

    def has_masks(self, i: int) -> bool:
        """Whether 0-based row *i* has masks stored."""
        return bool(str(self.objects["MASKUSED"][i])) and self._stacked[1][i] >= 0

    def _stamps(self, i: int) -> list:
        """The three ``(ny, nx)`` bool stamps of row *i* (union, inter, sky)."""
        ny, nx = int(self.objects["NY"][i]), int(self.objects["NX"][i])
        stacked, offsets = self._stacked
        part = stacked[:, offsets[i]:offsets[i] + ny * nx].reshape(len(MASK_NAMES), ny, nx)
        return list(part.astype(bool))

    def _stamp_header(self, i: int) -> fits.Header:
        """The header a version-1 stamp HDU carried: stamp WCS, ``OBJ_ID``, box, mask kind."""
        row = self.objects[i]
        header = _shifted(self._wcs_header, int(row["X0"]), int(row["Y0"]))
        header["OBJ_ID"] = (ascii_safe(str(row["ID"])), "catalogue ID")
        header["BOXX0"] = (int(row["X0"]), "[pix] cube x of stamp column 0 (0-based)")
        header["BOXY0"] = (int(row["Y0"]), "[pix] cube y of stamp row 0 (0-based)")
        kind = "circle" if row["MASKUSED"] == "circle" else "union"
        header["MASKKIND"] = (kind, "union, inter, sky, or circle (PSF fallback)")
        return header

    def get(self, key) -> ObjectMasks | None:
        """The masks of one object (by row number or ID), or None when it has none."""
        i = self.row_of(key)
        if not self.has_masks(i):
            return None
        row = self.objects[i]
        return ObjectMasks(str(row["ID"]), i, int(row["X0"]), int(row["Y0"]), *self._stamps(i),
                           used=str(row["MASKUSED"]), status=str(row["STATUS"]),
                           header_source=lambda: self._stamp_header(i))

    __getitem__ = get

    @property
    def cube_wcs(self) -> WCS | None:
        """Celestial WCS of the cube grid the masks are on (None when the file holds none)."""
        if self._wcs_header is not None:
            return celestial_from_header(self._wcs_header)
        if self._segmaps:
            return celestial_from_header(self._segmaps[min(self._segmaps)].header)
        for i in range(len(self)):
            m = self.get(i)
            if m is not None and m.header is not None:
                return celestial_from_header(_shifted(m.header, -m.x0, -m.y0))
        return None

    def segmap_source(self, k: int = 1) -> tuple[str, str]:
        """``(SEGFILE, SEGHOW)`` of the *k*-th segmentation map: its file and how it was placed."""
        header = self._segmaps[k].header
        return str(header.get("SEGFILE", "")), str(header.get("SEGHOW", ""))

    @property
    def n_segmaps(self) -> int:
        """Number of SEGMAP HDUs (segmentation maps on the cube grid)."""
        return len(self._segmaps)

    def segmap(self, k: int = 1) -> np.ndarray | None:
        """The *k*-th (1-based) segmentation map on the cube grid, ``(ny, nx)`` int32, or None."""
        if k not in self._segmaps:
            return None
        return np.asarray(self._segmaps[k].data, dtype=np.int32)

    def close(self) -> None:
        self._hdul.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_stamps(objects: Table, sizes, path) -> None:
    """Every object with masks has its three stamps, of the box size in its OBJECTS row.

    *sizes* maps a mask name to the stamp size of every row (0 = missing), in spaxels.
    """
    used = np.flatnonzero(np.asarray(objects["MASKUSED"]) != "")
    want = np.asarray(objects["NX"], dtype=np.int64) * np.asarray(objects["NY"], dtype=np.int64)
    missing = bad = 0
    for i in used:
        got = [int(sizes[name][i]) for name in MASK_NAMES]
        if min(got) == 0:
            missing += 1
        elif any(g != want[i] for g in got):
            bad += 1
    if missing:
        raise InputError(path, f"is truncated or incomplete: the masks of {missing} of "
                         f"{len(used)} objects are missing", RECREATE)
    if bad:
        raise InputError(path, f"is corrupt: the masks of {bad} objects do not have the box size "
                         "of their OBJECTS row", RECREATE)

"""Reading masks files of format version 1 (one image HDU per mask), written before format 2.

Version 1 stored, after the ``OBJECTS`` table and the ``SEGMAP`` maps, three uint8 image HDUs
per object with masks: ``MASK_UNION``, ``MASK_INTER`` and ``MASK_SKY``, ``EXTVER`` = 1-based
catalogue row, each ``(NY, NX)`` with the stamp's celestial WCS.  They are read through astropy,
which parses every header of the file once (about a millisecond per HDU: seconds for thousands
of objects; re-create such a file with ``ifu-extract mask`` to read it in one pass).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import InputError
from .maskset import MASK_NAMES, RECREATE, MaskSet, check_stamps

__all__ = ["read_v1"]


class MaskSetV1(MaskSet):
    """:class:`~ifu_extract.masks.maskset.MaskSet` over the per-object HDUs of a version-1 file."""

    version = 1

    def __init__(self, path, hdul: fits.HDUList, objects: Table, index: dict):
        super().__init__(path, hdul, objects)
        self._index = index

    def has_masks(self, i: int) -> bool:
        return bool(str(self.objects["MASKUSED"][i])) and ("MASK_UNION", i + 1) in self._index

    def _stamps(self, i: int) -> list:
        return [np.asarray(self._index[(name, i + 1)].data, dtype=bool) for name in MASK_NAMES]

    def _stamp_header(self, i: int) -> fits.Header:
        return self._index[("MASK_UNION", i + 1)].header.copy()


def read_v1(path, hdul: fits.HDUList, objects: Table) -> tuple[Table, MaskSetV1]:
    """The objects and masks of a version-1 file already opened (lazily) as *hdul*."""
    try:
        hdus = list(hdul)  # loads every header (astropy stops quietly at a truncated HDU)
        index = {(h.name, h.ver): h for h in hdus if h.name in MASK_NAMES}
        sizes = {name: np.zeros(len(objects), dtype=np.int64) for name in MASK_NAMES}
        for (name, ver), h in index.items():
            if 1 <= ver <= len(objects):
                shape = h.shape if h.header.get("NAXIS", 0) == 2 else (0, 0)
                ok = shape == (int(objects["NY"][ver - 1]), int(objects["NX"][ver - 1]))
                sizes[name][ver - 1] = shape[0] * shape[1] if ok else -1  # -1: not the box
    except (OSError, ValueError, IndexError) as exc:
        raise InputError(path, f"is truncated or unreadable ({exc})",
                         RECREATE) from None
    check_stamps(objects, sizes, path)
    objects.meta.clear()
    return objects, MaskSetV1(path, hdul, objects, index)

"""The ``origin`` column: where on which detector each pixel-table row comes from.

The MUSE pipeline packs four numbers into one int32 (bit 0 is the least significant)::

    bits  0-5   slice number on the CCD (1..48)
    bits  6-10  IFU number (1..24)
    bits 11-23  ypix + 1 (detector row, 0-based ypix)
    bits 24-30  xpix - XOFFSET + 1, with XOFFSET = ``EXP0 IFUnn SLICEnn XOFFSET`` of the slice

so ``xpix = XOFFSET + ((origin >> 24) & 0x7f) - 1`` and ``ypix = ((origin >> 11) & 0x1fff) - 1``,
exactly as MPDAF's ``origin2coords``.  The offset look-up is one table of 2048 entries indexed by
``origin & 0x7ff`` (IFU and slice bits together), so decoding is four integer operations and one
gather per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .header import TableMeta, key

__all__ = [
    "SLICE_MASK",
    "IFU_SHIFT",
    "IFU_MASK",
    "YPIX_SHIFT",
    "XPIX_SHIFT",
    "Decoded",
    "xoffset_lut",
    "decode",
    "encode",
    "check_xoffsets",
]

SLICE_MASK = 0x3F
IFU_SHIFT = 6
IFU_MASK = 0x1F
YPIX_SHIFT = 11
YPIX_MASK = 0x1FFF
XPIX_SHIFT = 24
XPIX_MASK = 0x7F
#: Mask of the IFU and slice bits together: the index of the XOFFSET look-up table.
KEY_MASK = 0x7FF


@dataclass
class Decoded:
    """Decoded origins of a set of rows (1-D arrays of equal length).

    Attributes
    ----------
    ifu, slice : ndarray of uint8
        IFU (1..24) and CCD slice (1..48) numbers.
    ypix, xpix : ndarray of int16
        0-based detector row and column.
    """

    ifu: np.ndarray
    slice: np.ndarray
    ypix: np.ndarray
    xpix: np.ndarray


def xoffset_lut(meta: TableMeta) -> np.ndarray:
    """XOFFSET of every (IFU, slice) as an int32 table indexed by ``origin & 0x7ff``; -1 where
    the header has no keyword."""
    lut = np.full(KEY_MASK + 1, -1, dtype=np.int32)
    ifus, slices = np.nonzero(meta.xoffset[:IFU_MASK + 1, :SLICE_MASK + 1] >= 0)
    lut[(ifus << IFU_SHIFT) | slices] = meta.xoffset[ifus, slices]
    return lut


def check_xoffsets(keys: np.ndarray, lut: np.ndarray, path) -> None:
    """Raise :class:`InputError` when rows refer to a slice without XOFFSET keyword.

    Parameters
    ----------
    keys : ndarray of int
        ``origin & 0x7ff`` of the rows (any length).
    """
    present = np.zeros(KEY_MASK + 1, dtype=bool)
    present[np.unique(keys)] = True
    bad = np.flatnonzero(present & (lut < 0))
    if bad.size:
        ifu, sli = int(bad[0] >> IFU_SHIFT), int(bad[0] & SLICE_MASK)
        raise InputError(path, f"lacks the header keyword "
                         f"'{key(f'EXP0 IFU{ifu:02d} SLICE{sli:02d} XOFFSET')}' needed to decode "
                         "detector x positions", "use a pixel table written by the MUSE pipeline")


def decode(origin: np.ndarray, lut: np.ndarray) -> Decoded:
    """Decode an int32 origin array (native byte order) into IFU, slice, ypix, xpix.

    Parameters
    ----------
    origin : ndarray of int32
        Origin codes, shape (n,).
    lut : ndarray of int32
        :func:`xoffset_lut` of the table.
    """
    origin = np.asarray(origin)
    ifu = ((origin >> IFU_SHIFT) & IFU_MASK).astype(np.uint8)
    sli = (origin & SLICE_MASK).astype(np.uint8)
    ypix = (((origin >> YPIX_SHIFT) & YPIX_MASK) - 1).astype(np.int16)
    xpix = (lut.take(origin & KEY_MASK) + ((origin >> XPIX_SHIFT) & XPIX_MASK) - 1)
    return Decoded(ifu, sli, ypix, xpix.astype(np.int16))


def encode(ifu, sli, ypix, xpix, xoffset) -> np.ndarray:
    """Pack IFU, CCD slice, detector ypix/xpix (0-based) and the slice XOFFSET into origins.

    All arguments broadcast; ``xpix - xoffset + 1`` must fit in 7 bits and ``ypix + 1`` in 13.
    """
    xrel = np.asarray(xpix) - np.asarray(xoffset) + 1
    yrel = np.asarray(ypix) + 1
    if np.any((xrel < 0) | (xrel > XPIX_MASK)) or np.any((yrel < 0) | (yrel > YPIX_MASK)):
        raise ValueError("detector position does not fit in the origin bit fields")
    return ((xrel.astype(np.int32) << XPIX_SHIFT) | (yrel.astype(np.int32) << YPIX_SHIFT)
            | (np.asarray(ifu, dtype=np.int32) << IFU_SHIFT) | np.asarray(sli, dtype=np.int32))

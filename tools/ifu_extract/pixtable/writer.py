"""Streaming FITS writers: pixel tables in both layouts, and one-column / table products.

A pixel table can be far larger than memory, so it is never assembled: the file is sized up
front (the number of output rows is known once the selection pass has counted them), and each
chunk of rows is written at its place with ``pwrite`` -- from several threads when useful.  The
primary header is written last, once the limits of the written rows are known; it is prepared
with every card it will hold so that its size does not change.  The whole file is written under
a temporary name and renamed by :func:`ifu_extract.fitsout.atomic_path`, so an error never
leaves a partial output.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits

from ..fitsio import pwrite_all
from .header import COLUMN_DTYPES, COLUMNS
from .origin import IFU_MASK, IFU_SHIFT, SLICE_MASK
from .reader import scratch

__all__ = ["ColumnStats", "PixTableWriter", "StreamWriter", "primary_header_from"]

_BLOCK = 2880
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "CHECKSUM",
               "DATASUM", "PCOUNT", "GCOUNT", "XTENSION", "END"}


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def primary_header_from(header: fits.Header) -> fits.Header:
    """A data-less primary header (``NAXIS = 0``, ``EXTEND = T``) carrying *header*'s cards."""
    out = fits.PrimaryHDU().header
    out["EXTEND"] = True
    for card in header.cards:
        if card.keyword in _STRUCTURAL or card.keyword.startswith("NAXIS"):
            continue
        out.append(card, end=True)
    return out


class ColumnStats:
    """Limits of the rows written so far (what MPDAF's extract writes in the header).

    NaN propagates, as with ``numpy.min`` on the whole column.
    """

    def __init__(self):
        self.lo = {"xpos": np.inf, "ypos": np.inf, "lambda": np.inf}
        self.hi = {"xpos": -np.inf, "ypos": -np.inf, "lambda": -np.inf}
        self.ifus = np.zeros(IFU_MASK + 1, dtype=bool)
        self.slices = np.zeros(SLICE_MASK + 1, dtype=bool)
        self.nrows = 0

    @classmethod
    def of_block(cls, block: dict) -> "ColumnStats":
        """Limits of one block of rows ``{column: array}``."""
        st = cls()
        n = len(block["origin"])
        st.nrows = n
        if n == 0:
            return st
        for name in ("xpos", "ypos", "lambda"):
            arr = block[name]
            st.lo[name] = float(np.min(arr))
            st.hi[name] = float(np.max(arr))
        origin = scratch("stats:origin", n, np.int32)
        np.copyto(origin, block["origin"])
        part = scratch("stats:part", n, np.int32)
        # presence by counting (a sort, as in np.unique, is ~50x slower on millions of rows)
        np.right_shift(origin, IFU_SHIFT, out=part)
        np.bitwise_and(part, IFU_MASK, out=part)
        st.ifus = np.bincount(part, minlength=IFU_MASK + 1) > 0
        np.bitwise_and(origin, SLICE_MASK, out=part)
        st.slices = np.bincount(part, minlength=SLICE_MASK + 1) > 0
        return st

    def merge(self, other: "ColumnStats") -> None:
        """Fold the limits of another block into these."""
        if other.nrows == 0:
            return
        for name in self.lo:
            self.lo[name] = float(np.minimum(self.lo[name], other.lo[name]))
            self.hi[name] = float(np.maximum(self.hi[name], other.hi[name]))
        self.ifus |= other.ifus
        self.slices |= other.slices
        self.nrows += other.nrows

    @property
    def ifu_lo(self) -> int:
        return int(np.flatnonzero(self.ifus)[0])

    @property
    def ifu_hi(self) -> int:
        return int(np.flatnonzero(self.ifus)[-1])

    @property
    def slice_lo(self) -> int:
        return int(np.flatnonzero(self.slices)[0])

    @property
    def slice_hi(self) -> int:
        return int(np.flatnonzero(self.slices)[-1])

    @property
    def n_ifus(self) -> int:
        return int(np.count_nonzero(self.ifus))


class StreamWriter:
    """Write a FITS file whose HDU sizes are known in advance, data first, headers last.

    Parameters
    ----------
    path : str or os.PathLike
        Output (normally the temporary path of :func:`~ifu_extract.fitsout.atomic_path`).
    headers : list of astropy.io.fits.Header
        One complete header per HDU (the primary first), with their final set of cards.
    data_bytes : list of int
        Unpadded data size of each HDU.
    """

    def __init__(self, path, headers: list, data_bytes: list):
        self.path = os.fspath(path)
        self.headers = headers
        self.header_bytes = [len(h.tostring(padding=True)) for h in headers]
        self.data_offsets = []
        pos = 0
        for hb, db in zip(self.header_bytes, data_bytes):
            pos += hb
            self.data_offsets.append(pos)
            pos += _padded(db)
        self.size = pos
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        # Sized up front: padding is the zero fill of the sparse file, blocks land in place.
        os.ftruncate(self.fd, self.size)

    def write(self, hdu: int, byte_offset: int, data: np.ndarray) -> None:
        """Write contiguous *data* (already in FITS byte order) into HDU *hdu*'s data."""
        pwrite_all(self.fd, np.ascontiguousarray(data), self.data_offsets[hdu] + byte_offset)

    def finish(self, headers: list | None = None) -> None:
        """Write the headers (optionally updated, same size) and close the file."""
        headers = self.headers if headers is None else headers
        for i, h in enumerate(headers):
            text = h.tostring(padding=True).encode("ascii")
            if len(text) != self.header_bytes[i]:
                raise RuntimeError("header size changed while writing")  # a bug, not a user error
            start = self.data_offsets[i] - self.header_bytes[i]
            pwrite_all(self.fd, np.frombuffer(text, dtype=np.uint8), start)
        os.close(self.fd)
        self.fd = None

    def abort(self) -> None:
        """Close without writing headers (the caller removes the file)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _column_unit_cards(name: str, units: dict):
    unit = units.get(name)
    return [("BUNIT", unit)] if unit else []


class PixTableWriter:
    """Write a pixel table of a known number of rows, block by block, in either layout.

    Parameters
    ----------
    path : str or os.PathLike
        Output path (temporary; see :func:`~ifu_extract.fitsout.atomic_path`).
    header : astropy.io.fits.Header
        Primary header with its final set of cards (values may still change).
    nrows : int
        Rows that will be written.
    layout : {'image', 'table'}
        Multi-extension images (default of MPDAF and the pipeline) or one binary table.
    units : dict of str -> str
        FITS unit string of each column (``BUNIT`` / ``TUNITn``).
    names : tuple of str
        Columns to write (the seven of :data:`COLUMNS`, plus ``weight`` when present).
    """

    def __init__(self, path, header: fits.Header, nrows: int, *, layout: str = "image",
                 units: dict | None = None, names=COLUMNS):
        self.layout = layout
        self.nrows = int(nrows)
        self.names = tuple(names)
        units = units or {}
        self.dtypes = {n: np.dtype(COLUMN_DTYPES[n]) for n in self.names}
        self.primary = primary_header_from(header)
        headers = [self.primary]
        data_bytes = [0]
        if layout == "image":
            for name in self.names:
                dt = self.dtypes[name]
                h = fits.Header([("XTENSION", "IMAGE", "Image extension"),
                                 ("BITPIX", -32 if dt.kind == "f" else 32, "array data type"),
                                 ("NAXIS", 2, "number of array dimensions"),
                                 ("NAXIS1", 1), ("NAXIS2", self.nrows),
                                 ("PCOUNT", 0, "number of parameters"),
                                 ("GCOUNT", 1, "number of groups"),
                                 ("EXTNAME", name, "extension name")]
                                + _column_unit_cards(name, units))
                headers.append(h)
                data_bytes.append(self.nrows * dt.itemsize)
        elif layout == "table":
            self.row_dtype = np.dtype([(n, self.dtypes[n]) for n in self.names])
            cards = [("XTENSION", "BINTABLE", "binary table extension"),
                     ("BITPIX", 8, "array data type"), ("NAXIS", 2, "number of array dimensions"),
                     ("NAXIS1", self.row_dtype.itemsize, "length of dimension 1"),
                     ("NAXIS2", self.nrows, "length of dimension 2"),
                     ("PCOUNT", 0, "number of group parameters"),
                     ("GCOUNT", 1, "number of groups"),
                     ("TFIELDS", len(self.names), "number of table fields")]
            for i, name in enumerate(self.names, start=1):
                cards.append((f"TTYPE{i}", name))
                cards.append((f"TFORM{i}", "1E" if self.dtypes[name].kind == "f" else "1J"))
                if units.get(name):
                    cards.append((f"TUNIT{i}", units[name]))
            headers.append(fits.Header(cards))
            data_bytes.append(self.nrows * self.row_dtype.itemsize)
        else:
            raise ValueError(f"unknown layout {layout!r}")
        self.stream = StreamWriter(path, headers, data_bytes)
        self.stats = ColumnStats()

    def write_block(self, out_start: int, block: dict) -> ColumnStats:
        """Write rows ``[out_start, out_start + n)``; *block* maps every column to an array.

        Thread-safe for disjoint row ranges.  Returns the limits of the block (merge them with
        :meth:`ColumnStats.merge`; the writer does not, to stay lock-free).
        """
        n = len(block["origin"])
        if n == 0:
            return ColumnStats()
        if out_start + n > self.nrows:
            raise RuntimeError("block beyond the announced number of rows")
        if self.layout == "image":
            for i, name in enumerate(self.names, start=1):
                arr = np.asarray(block[name]).astype(self.dtypes[name], copy=False)
                self.stream.write(i, out_start * self.dtypes[name].itemsize, arr)
        else:
            rec = np.empty(n, dtype=self.row_dtype)
            for name in self.names:
                rec[name] = block[name]
            self.stream.write(1, out_start * self.row_dtype.itemsize, rec)
        return ColumnStats.of_block(block)

    def finish(self, header: fits.Header | None = None) -> None:
        """Write the primary header (with the same cards as given at creation) and close."""
        primary = self.primary if header is None else primary_header_from(header)
        self.stream.finish([primary] + self.stream.headers[1:])

    def abort(self) -> None:
        self.stream.abort()

"""Memory-mapped, chunked access to MUSE pixel tables in both on-disk layouts.

A pixel table is either a multi-extension file with one ``(nrows, 1)`` image per column
(``xpos``, ``ypos``, ``lambda``, ``data``, ``dq``, ``stat``, ``origin``; the pipeline's and MPDAF's
default) or one binary table with those columns.  :class:`PixTable` maps the file once and hands
out *views* of the raw big-endian columns; :meth:`PixTable.read` copies one row range of one
column into native byte order.  Nothing is read until it is asked for, and callers work on row
chunks (:meth:`PixTable.chunks`) so that memory stays bounded whatever the table size: the
pages of a mapped file belong to the page cache, not to the program.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from ..errors import InputError
from .header import COLUMNS, TableMeta, read_meta

__all__ = ["PixTable", "open_pixtable", "DEFAULT_CHUNK_ROWS", "default_threads", "ordered_map",
           "scratch"]

#: Rows per chunk: 2**18 rows is 1 MB per float32 column, so that the few temporaries of a
#: chunk stay in the CPU caches; threads get groups of chunks (:data:`TASK_ROWS`).
DEFAULT_CHUNK_ROWS = 1 << 18

#: Rows per thread task: large enough that scheduling costs vanish.
TASK_ROWS = 1 << 21


_LOCAL = threading.local()


def scratch(tag: str, n: int, dtype) -> np.ndarray:
    """A per-thread scratch array of *n* elements, reused from chunk to chunk.

    Fresh multi-megabyte temporaries cost page faults at every chunk (the allocator hands the
    memory back to the system between chunks); reusing a few buffers per thread avoids that.
    The array is only valid until the same thread asks for *tag* again.
    """
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = {}
    dtype = np.dtype(dtype)
    arr = pool.get(tag)
    if arr is None or arr.size < n or arr.dtype != dtype:
        arr = pool[tag] = np.empty(max(n, 1), dtype=dtype)
    return arr[:n]


def default_threads() -> int:
    """Cores available to this process (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(func, items, threads: int):
    """``map(func, items)`` on *threads* threads, yielding results in order.

    At most ``2 * threads`` results wait to be consumed, so memory stays bounded when the
    results are large (numpy releases the GIL in the heavy loops, so threads do scale).
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        for item in items:
            yield func(item)
        return
    window = 2 * threads
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = [pool.submit(func, it) for it in items[:window]]
        nxt = window
        while pending:
            fut = pending.pop(0)
            if nxt < len(items):
                pending.append(pool.submit(func, items[nxt]))
                nxt += 1
            yield fut.result()


@dataclass(frozen=True)
class Column:
    """Where one column lives in the mapped file."""

    name: str
    dtype: np.dtype  # on-disk (big-endian) type
    offset: int  # byte offset of row 0
    stride: int  # bytes between rows
    unit: str | None
    bscale: float = 1.0
    bzero: float = 0.0


_IMAGE_BITPIX = {-32: ">f4", -64: ">f8", 32: ">i4", 16: ">i2", 8: "u1", 64: ">i8"}


class PixTable:
    """A pixel table opened for chunked, memory-mapped reading.

    Parameters
    ----------
    path : str or os.PathLike
        FITS file in either layout.
    chunk_rows : int, optional
        Rows per chunk for :meth:`chunks`.
    threads : int, optional
        Threads used by the chunked operations (default: the cores available).

    Attributes
    ----------
    nrows : int
        Number of rows.
    layout : {'image', 'table'}
        On-disk layout.
    header : astropy.io.fits.Header
        Primary header.
    meta : TableMeta
        Parsed pixel-table keywords.
    columns : dict of str -> Column
        Column locations (``weight`` present only when the file has one).
    """

    def __init__(self, path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, threads: int | None = None):
        self.path = Path(path)
        self.chunk_rows = int(chunk_rows)
        self.threads = default_threads() if threads is None else max(1, int(threads))
        if not self.path.is_file():
            raise InputError(self.path, "no such file", "check the path of the pixel table")
        try:
            with fits.open(self.path, memmap=True, lazy_load_hdus=False) as hdul:
                self.header = hdul[0].header.copy()
                self._parse(hdul)
        except InputError:
            raise
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise InputError(self.path, f"is not a readable FITS pixel table ({exc})",
                             "give a MUSE PIXTABLE file") from None
        self.meta: TableMeta = read_meta(self.header, _primary_text(self.path))
        size = self.path.stat().st_size
        need = max((c.offset + c.stride * (self.nrows - 1) + c.dtype.itemsize)
                   for c in self.columns.values()) if self.nrows else 0
        if need > size:
            raise InputError(self.path, f"is truncated ({size} bytes, {need} needed)",
                             "copy or download the file again")
        try:
            with open(self.path, "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, MemoryError) as exc:
            # A mapped file costs address space, not memory: ulimit -v limits the former.
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise InputError(self.path, f"cannot be mapped into memory ({size / 1e9:.1f} GB file: "
                             f"{reason}); a mapped file needs address space, not RAM",
                             "raise the address-space limit (ulimit -v unlimited, or a Galaxy/Slurm "
                             "virtual-memory limit above the file size)") from None
        self._views = {}

    # -- opening ------------------------------------------------------------------------------
    def _parse(self, hdul) -> None:
        if len(hdul) < 2:
            raise InputError(self.path, "has no extension: not a pixel table",
                             "give a MUSE PIXTABLE file (7 image extensions or a binary table)")
        first = hdul[1]
        if isinstance(first, fits.BinTableHDU):
            self.layout = "table"
            self._parse_table(hdul, first)
        else:
            self.layout = "image"
            self._parse_images(hdul)

    def _missing(self, found, hdul=None):
        missing = [c for c in COLUMNS if c not in found]
        if missing and hdul is not None:
            self._check_complete(hdul)
        if missing:
            what = "extension" if self.layout == "image" else "column"
            raise InputError(self.path, f"has no '{missing[0]}' {what}"
                             + (f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else ""),
                             "a MUSE pixel table has the columns " + ", ".join(COLUMNS))

    def _check_complete(self, hdul) -> None:
        """Raise "is truncated" when the file ends inside an HDU (astropy lists the HDUs it
        could read, so a file cut short would otherwise look like one without some columns)."""
        size = self.path.stat().st_size
        last = len(hdul) - 1
        info = hdul.fileinfo(last)
        end = info["datLoc"] + info["datSpan"]
        if size % 2880 or end > size:
            raise InputError(self.path, f"is truncated ({size} bytes; it ends inside HDU {last})",
                             "copy or download the file again")

    def _check_integer(self, name: str, dtype: np.dtype, what: str) -> None:
        """dq and origin hold bit fields: a float column would silently lose bits."""
        if name in ("dq", "origin") and dtype.kind not in "iu":
            raise InputError(self.path, f"column '{name}' is {what}, not an integer column "
                             f"({name} holds bit-packed values)",
                             "write it as int32, as the MUSE pipeline and MPDAF do")

    def _parse_images(self, hdul) -> None:
        cols, nrows = {}, None
        for i, hdu in enumerate(hdul[1:], start=1):
            name = str(hdu.header.get("EXTNAME", "")).strip().lower()
            if name not in COLUMNS + ("weight",) or name in cols:
                continue
            hdr = hdu.header
            if hdr.get("XTENSION", "").strip() != "IMAGE":
                continue
            shape = [hdr.get(f"NAXIS{k}", 0) for k in range(1, hdr.get("NAXIS", 0) + 1)]
            n = int(np.prod(shape)) if shape else 0
            if len(shape) == 2 and shape[0] != 1:
                raise InputError(self.path, f"extension '{name}' is {shape[0]} x {shape[1]}, "
                                 "not one column", "a pixel-table column is a (nrows, 1) image")
            if nrows is None:
                nrows = n
            elif n != nrows:
                raise InputError(self.path, f"extension '{name}' has {n} rows, not {nrows}",
                                 "the columns of a pixel table must have the same length")
            dtype = _IMAGE_BITPIX.get(hdr["BITPIX"])
            if dtype is None:
                raise InputError(self.path, f"extension '{name}' has BITPIX {hdr['BITPIX']}",
                                 "expected float32 or int32 columns")
            self._check_integer(name, np.dtype(dtype), f"floating point (BITPIX {hdr['BITPIX']})")
            cols[name] = Column(name, np.dtype(dtype), hdul.fileinfo(i)["datLoc"],
                                np.dtype(dtype).itemsize, hdr.get("BUNIT"),
                                float(hdr.get("BSCALE", 1.0)), float(hdr.get("BZERO", 0.0)))
        self._missing(cols, hdul)
        self.nrows = int(nrows or 0)
        self.columns = cols

    def _parse_table(self, hdul, hdu) -> None:
        hdr = hdu.header
        self.nrows = int(hdr["NAXIS2"])
        rowbytes = int(hdr["NAXIS1"])
        datloc = hdul.fileinfo(1)["datLoc"]
        names = [str(n).lower() for n in hdu.columns.names]
        self._missing(names, hdul)
        dt = hdu.columns.dtype  # numpy record layout of one row, with byte offsets
        cols = {}
        for i, col in enumerate(hdu.columns):
            name = str(col.name).lower()
            if name not in COLUMNS + ("weight",):
                continue
            fdt, off = dt.fields[col.name][:2]
            if fdt.shape or fdt.kind not in "fiu":
                raise InputError(self.path, f"column '{name}' has format {col.format}",
                                 "expected scalar 1E / 1J columns")
            self._check_integer(name, fdt, f"floating point (format {col.format})")
            cols[name] = Column(name, fdt.newbyteorder(">") if fdt.itemsize > 1 else fdt,
                                datloc + off, rowbytes, col.unit,
                                float(col.bscale if col.bscale is not None else 1.0),
                                float(col.bzero if col.bzero is not None else 0.0))
        self.columns = cols

    # -- access -------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the views and unmap the file (views taken before become invalid)."""
        self._views.clear()
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a caller still holds a view; the map goes when it does
            self._mmap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<PixTable {self.path.name}: {self.nrows} rows, {self.layout} layout, "
                f"{self.meta.nifu} IFUs, {self.meta.wcs_value or 'no WCS'}>")

    def has(self, name: str) -> bool:
        """True when the table has column *name*."""
        return name in self.columns

    def raw(self, name: str) -> np.ndarray:
        """The whole column as a read-only big-endian view of the mapped file (no copy)."""
        view = self._views.get(name)
        if view is None:
            col = self.columns[name]
            if self._mmap is None:
                view = np.empty(0, dtype=col.dtype)
            else:
                view = np.ndarray((self.nrows,), dtype=col.dtype, buffer=self._mmap,
                                  offset=col.offset, strides=(col.stride,))
            self._views[name] = view
        return view

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of column *name*, native byte order (a copy).

        Float columns stay float32 and integer columns int32, as on disk (MPDAF converts floats
        to float64, which doubles the memory for no gain in the comparisons).
        """
        col = self.columns[name]
        part = self.raw(name)[start:stop]
        out = part.astype(col.dtype.newbyteorder("="))
        if col.bscale != 1.0 or col.bzero != 0.0:
            out = out * col.bscale + col.bzero
        return out

    def read_scratch(self, name: str, start: int, stop: int, tag: str | None = None) -> np.ndarray:
        """Like :meth:`read` into a per-thread :func:`scratch` buffer (valid until the same
        thread reads *tag* again): the chunk loops' way to avoid a fresh array per chunk."""
        col = self.columns[name]
        if col.bscale != 1.0 or col.bzero != 0.0:
            return self.read(name, start, stop)
        part = self.raw(name)[start:stop]
        out = scratch(tag or f"col:{name}", part.size, col.dtype.newbyteorder("="))
        np.copyto(out, part)
        return out

    def take(self, name: str, rows: np.ndarray, start: int = 0) -> np.ndarray:
        """Rows ``start + rows`` of column *name*, big-endian as on disk (for copying out)."""
        return self.raw(name)[start:].take(rows) if start else self.raw(name).take(rows)

    def unit(self, name: str):
        """Astropy unit of a column (None when absent or unparsable)."""
        text = self.columns[name].unit
        if not text:
            return None
        try:
            return u.Unit(text)
        except ValueError:
            return None

    def chunks(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """Row ranges ``(a, b)`` of at most ``chunk_rows`` rows covering ``[start, stop)``."""
        stop = self.nrows if stop is None else stop
        step = self.chunk_rows
        return [(a, min(a + step, stop)) for a in range(start, stop, step)]

    def map_chunks(self, func, chunks=None):
        """``func(a, b)`` on every chunk, on :attr:`threads` threads; results in row order.

        Threads take groups of consecutive chunks (about :data:`TASK_ROWS` rows each).
        """
        chunks = self.chunks() if chunks is None else chunks
        per_task = max(1, TASK_ROWS // max(self.chunk_rows, 1))
        groups = [chunks[i:i + per_task] for i in range(0, len(chunks), per_task)]
        for results in ordered_map(lambda grp: [func(a, b) for a, b in grp], groups,
                                   self.threads):
            yield from results


def _primary_text(path) -> str | None:
    """The primary header as stored: 2880-byte blocks up to the one holding ``END``."""
    chunks = []
    with open(path, "rb") as fh:
        while True:
            block = fh.read(2880)
            if len(block) < 2880:
                return None
            text = block.decode("ascii", errors="replace")
            chunks.append(text)
            if any(text[i:i + 8] == "END     " for i in range(0, 2880, 80)):
                return "".join(chunks)


def open_pixtable(path, **kwargs) -> PixTable:
    """Open a pixel table (either layout); see :class:`PixTable`."""
    return PixTable(path, **kwargs)

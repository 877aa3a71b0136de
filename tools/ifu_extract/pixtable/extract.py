"""Write the selected rows of a pixel table: a new pixel table, or their decoded origins.

:func:`extract` is MPDAF's ``PixTable.extract(filename=...)``: same rows, same header updates
(``LIMITS ...``, ``MERGED``, ``COMBINED``/``EXPn FIRST|LAST`` renumbered), written in either
layout without ever holding the table in memory: a first pass selects (and counts) rows chunk
by chunk, a second copies the selected rows of each chunk to their place in the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..fitsout import add_provenance, atomic_path
from .header import COLUMNS, ensure_limit_cards, set_exposures, set_limits
from .origin import (IFU_SHIFT, KEY_MASK, SLICE_MASK, XPIX_MASK, XPIX_SHIFT,
                     YPIX_MASK, YPIX_SHIFT, Decoded, check_xoffsets, decode, xoffset_lut)
from .reader import ordered_map, scratch
from .select import ChunkRows, Selection, SelectionResult, run_selection
from .writer import ColumnStats, PixTableWriter, StreamWriter

__all__ = ["ExtractResult", "extract", "write_selected", "write_origins", "decode_rows",
           "column_units", "raise_no_match"]


@dataclass
class ExtractResult:
    """Summary of a written table: rows, IFUs and limits."""

    nrows: int
    n_ifus: int
    limits: dict
    path: str


def column_units(table) -> dict:
    """FITS unit strings of the columns of *table* (for writing a new table)."""
    return {name: col.unit for name, col in table.columns.items() if col.unit}


def raise_no_match(table, selection: Selection):
    """Raise the :class:`InputError` of a selection that matches no row."""
    what = "criteria" if selection.has_criteria else "mask"
    raise InputError(table.path, f"no row matches the selection ({what})",
                     "widen the ranges, check the numbers, or combine the criteria with 'or'")


def write_selected(table, result: SelectionResult, dest, *, layout: str = "image",
                   tool: str = "pixtable extract", inputs=None, params=None,
                   transform=None) -> ExtractResult:
    """Write the rows of *result* as a pixel table (MPDAF ``extract_from_mask`` + ``write``).

    Parameters
    ----------
    table : PixTable
    result : SelectionResult
        Rows to copy (in table order).
    dest : str or os.PathLike
        Output FITS file.
    layout : {'image', 'table'}
    transform : callable, optional
        ``transform(block, a, rows) -> block`` applied to each block before writing (used by
        the self-calibration to correct ``data`` and ``stat``).
    """
    n = result.count
    names = COLUMNS + (("weight",) if table.has("weight") else ())
    header = table.header.copy()
    ensure_limit_cards(header)
    if table.meta.exposures:
        ranges = []
        for first, last in table.meta.exposures:
            before = result.count_below(first)
            inside = result.count_below(last + 1) - before
            if inside > 0:
                ranges.append((before, before + inside - 1))
        set_exposures(header, ranges, len(table.meta.exposures))
    add_provenance(header, tool, inputs={"pixtable": table.path, **(inputs or {})},
                   params=params)
    offsets = result.offsets()
    jobs = [(c, o) for c, o in zip(result.chunks, offsets) if c.count]
    with atomic_path(dest, suffix=".fits") as tmp:
        writer = PixTableWriter(tmp, header, n, layout=layout, units=column_units(table),
                                names=names)
        try:
            scaled = {nm for nm in names
                      if (table.columns[nm].bscale, table.columns[nm].bzero) != (1.0, 0.0)}

            def column(nm, chunk, rows):
                if nm in scaled:  # BSCALE/BZERO columns are written as their values
                    vals = table.read(nm, chunk.a, chunk.b)
                    return vals if rows is None else vals[rows]
                if rows is None:  # whole chunk: a view of the mapped file, no copy
                    return table.raw(nm)[chunk.a:chunk.b]
                return table.raw(nm)[chunk.a:chunk.b].take(rows)

            def work(job):
                chunk, out_start = job
                rows = chunk.rows()
                block = {nm: column(nm, chunk, rows) for nm in names}
                if transform is not None:
                    block = transform(block, chunk.a, rows)
                return writer.write_block(out_start, block)

            stats = ColumnStats()
            for st in ordered_map(work, jobs, table.threads):
                stats.merge(st)
            set_limits(header, stats, table.meta.nifu)
            writer.finish(header)
        except BaseException:
            writer.abort()
            raise
    limits = {"xpos": (stats.lo["xpos"], stats.hi["xpos"]),
              "ypos": (stats.lo["ypos"], stats.hi["ypos"]),
              "lambda": (stats.lo["lambda"], stats.hi["lambda"]),
              "ifu": (stats.ifu_lo, stats.ifu_hi), "slice": (stats.slice_lo, stats.slice_hi)}
    return ExtractResult(n, stats.n_ifus, limits, str(dest))


def extract(table, selection: Selection, dest, *, layout: str = "image", inputs=None,
            params=None) -> ExtractResult:
    """Select rows of *table* and write them as a new pixel table (MPDAF ``extract``).

    Raises :class:`~ifu_extract.errors.InputError` when no row matches (MPDAF returns None).
    """
    result = run_selection(table, selection)
    if result.count == 0:
        raise_no_match(table, selection)
    params = {**selection.describe(), **(params or {})}
    if selection.mask is not None:
        inputs = {"mask": getattr(selection.mask, "path", None), **(inputs or {})}
    return write_selected(table, result, dest, layout=layout, inputs=inputs, params=params)


def write_origins(table, result: SelectionResult, dest, *, with_rows: bool,
                  params=None) -> dict:
    """Decode the origins of the selected rows into a FITS binary table.

    Columns ``IFU`` (uint8), ``SLICE`` (uint8, CCD numbering), ``YPIX``, ``XPIX`` (int16,
    0-based detector pixels) and, when *with_rows*, ``ROW`` (int64, 0-based row in the table).

    Returns
    -------
    dict
        ``nrows`` and ``per_ifu`` (rows per IFU number).
    """
    n = result.count
    lut = xoffset_lut(table.meta)
    fields = ([("ROW", ">i8")] if with_rows else []) + [("IFU", "u1"), ("SLICE", "u1"),
                                                        ("YPIX", ">i2"), ("XPIX", ">i2")]
    dt = np.dtype(fields)
    forms = {"ROW": "1K", "IFU": "1B", "SLICE": "1B", "YPIX": "1I", "XPIX": "1I"}
    comments = {"ROW": "0-based row in the pixel table", "IFU": "IFU number",
                "SLICE": "slice number (CCD numbering)", "YPIX": "0-based detector row",
                "XPIX": "0-based detector column"}
    prim = fits.PrimaryHDU().header
    add_provenance(prim, "pixtable origin", inputs={"pixtable": table.path}, params=params)
    cards = [("XTENSION", "BINTABLE", "binary table extension"), ("BITPIX", 8), ("NAXIS", 2),
             ("NAXIS1", dt.itemsize), ("NAXIS2", n), ("PCOUNT", 0), ("GCOUNT", 1),
             ("TFIELDS", len(fields))]
    for i, (name, _) in enumerate(fields, start=1):
        cards += [(f"TTYPE{i}", name, comments[name]), (f"TFORM{i}", forms[name])]
        if name in ("YPIX", "XPIX"):
            cards.append((f"TUNIT{i}", "pix"))
    cards.append(("EXTNAME", "ORIGIN", "decoded origin column"))
    hdr = fits.Header(cards)
    offsets = result.offsets()
    jobs = [(c, o) for c, o in zip(result.chunks, offsets) if c.count]
    with atomic_path(dest, suffix=".fits") as tmp:
        stream = StreamWriter(tmp, [prim, hdr], [0, n * dt.itemsize])
        try:
            def work(job):
                chunk, out_start = job
                rows = chunk.rows()
                origin = table.read("origin", chunk.a, chunk.b)
                if rows is not None:
                    origin = origin[rows]
                keys = origin & KEY_MASK
                if np.any(lut.take(keys) < 0):
                    check_xoffsets(keys, lut, table.path)
                dec = decode(origin, lut)
                rec = np.empty(origin.size, dtype=dt)
                if with_rows:
                    rec["ROW"] = chunk.a + (np.arange(chunk.b - chunk.a) if rows is None
                                            else rows)
                rec["IFU"], rec["SLICE"] = dec.ifu, dec.slice
                rec["YPIX"], rec["XPIX"] = dec.ypix, dec.xpix
                stream.write(1, out_start * dt.itemsize, rec)
                return np.bincount(dec.ifu, minlength=32)

            per_ifu = np.zeros(32, dtype=np.int64)
            for counts in ordered_map(work, jobs, table.threads):
                per_ifu += counts
            stream.finish()
        except BaseException:
            stream.abort()
            raise
    return {"nrows": n, "per_ifu": {int(i): int(c) for i, c in enumerate(per_ifu) if c}}


def _key_runs(keys: np.ndarray):
    """Bounds of the runs of equal keys, or None when runs are short (< 64 rows on average):
    pipeline tables are ordered by IFU and slice, so a chunk holds a handful of runs."""
    m = keys.size
    if m < 2:
        return [0, m]
    change = np.flatnonzero(np.not_equal(keys[1:], keys[:-1],
                                         out=scratch("dec:chg", m - 1, bool)))
    if change.size * 64 >= m:
        return None
    return [0, *(change + 1).tolist(), m]


def decode_rows(table, result: SelectionResult | None = None) -> Decoded:
    """Decoded origins of every row (or of the rows of *result*), in memory.

    The outputs (uint8 IFU and slice, int16 ypix and xpix: 6 bytes a row) are filled chunk by
    chunk on all threads; nothing else grows with the table.  Identical to MPDAF's
    ``origin2coords(get_origin())``.
    """
    if result is None:
        result = SelectionResult([ChunkRows(a, b, b - a, "all") for a, b in table.chunks()])
    n = result.count
    out = Decoded(np.empty(n, np.uint8), np.empty(n, np.uint8), np.empty(n, np.int16),
                  np.empty(n, np.int16))
    lut = xoffset_lut(table.meta)
    lut_minus1 = np.where(lut >= 0, lut - 1, -2).astype(np.int32)  # xpix = XOFFSET + bits - 1
    jobs = [(c, o) for c, o in zip(result.chunks, result.offsets()) if c.count]

    def work(job):
        chunk, start = job
        rows = chunk.rows()
        o = table.read_scratch("origin", chunk.a, chunk.b)
        if rows is not None:
            o = o[rows]
        m = o.size
        t = scratch("dec:t", m, np.int32)
        key = scratch("dec:key", m, np.int32)
        sl = slice(start, start + m)
        ifu, sli = out.ifu[sl], out.slice[sl]
        np.bitwise_and(o, KEY_MASK, out=key)  # IFU and slice bits together
        runs = _key_runs(key)
        ypix, xpix = out.ypix[sl], out.xpix[sl]
        # ypix = ((o >> 11) & 0x1fff) - 1, the last step on the int16 output
        np.right_shift(o, YPIX_SHIFT, out=t)
        np.bitwise_and(t, YPIX_MASK, out=ypix, casting="unsafe")
        np.subtract(ypix, 1, out=ypix)
        # xpix = XOFFSET - 1 + ((o >> 24) & 0x7f)
        if o.min() < 0:  # bit 31 set: the arithmetic shift needs the mask (never in practice)
            np.right_shift(o, XPIX_SHIFT, out=t)
            np.bitwise_and(t, XPIX_MASK, out=xpix, casting="unsafe")
        else:
            np.right_shift(o, XPIX_SHIFT, out=xpix, casting="unsafe")
        if runs is not None:  # per run: IFU, slice and XOFFSET are constants
            for lo, hi in zip(runs[:-1], runs[1:]):
                k = int(key[lo])
                if lut[k] < 0:
                    check_xoffsets(key[lo:lo + 1], lut, table.path)
                ifu[lo:hi] = k >> IFU_SHIFT
                sli[lo:hi] = k & SLICE_MASK
                xpix[lo:hi] += int(lut_minus1[k])
        else:
            # int32 work, cast on output by the last ufunc of each field (no extra pass)
            np.right_shift(key, IFU_SHIFT, out=ifu, casting="unsafe")
            np.bitwise_and(key, SLICE_MASK, out=sli, casting="unsafe")
            off = lut_minus1.take(key, out=scratch("dec:off", m, np.int32))
            if off.min() < -1:
                check_xoffsets(key, lut, table.path)
            np.add(xpix, off, out=xpix, casting="unsafe")
        return None

    per_task = max(1, (1 << 21) // max(table.chunk_rows, 1))
    groups = [jobs[i:i + per_task] for i in range(0, len(jobs), per_task)]
    for _ in ordered_map(lambda grp: [work(j) for j in grp], groups, table.threads):
        pass
    return out

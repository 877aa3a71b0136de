"""Row selection: MPDAF's ``PixTable.extract`` criteria, evaluated chunk by chunk.

Criteria (each a union over its values, as in MPDAF) are combined with ``and`` or ``or``:

========== ===================================================== ============================
criterion  test (MPDAF semantics)                                 evaluated on
========== ===================================================== ============================
exposures  row inside ``EXPn FIRST..LAST``                        row numbers (no data read)
ifu/slice  ``(origin >> 6) & 0x1f`` / ``origin & 0x3f`` in list   ``origin``, one look-up
stacks     CCD slices of SKY slices 12(s-1)+1..12s                ``origin``, same look-up
ypix/xpix  ``lo <= pix < hi`` (decoded from origin, XOFFSET)      ``origin``
wavelength ``lo <= lambda < hi`` compared in float64              ``lambda``, exact in float32
sky        MPDAF's circle / square in float64                     ``xpos``, ``ypos``
========== ===================================================== ============================

With ``and`` every criterion after the first is evaluated only on the rows still selected, and
the cheap ones come first; the sky test runs its float64 trigonometry only on the rows a
conservative float32 box lets through.  An object mask (from :mod:`.maskcol`) is applied last,
whatever the combination, keeping the unmasked (default) or the masked rows.

Results are identical to MPDAF's, except for stacks (MPDAF drops two slices of each stack; see
:func:`~ifu_extract.pixtable.header.stack_ccd_slices`) and for rows outside every exposure range
of a combined table (MPDAF reads uninitialised memory there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy import units as u

from ..errors import InputError, ParameterError
from .header import NIFU, NSLICE, get_keyword, stack_ccd_slices
from .origin import (IFU_MASK, IFU_SHIFT, KEY_MASK, SLICE_MASK, XPIX_MASK, XPIX_SHIFT,
                     YPIX_MASK, YPIX_SHIFT, check_xoffsets, xoffset_lut)
from .reader import scratch
from .sky import SkyFrame, candidate_mask, f32_ceil, in_region, region_outside_field

__all__ = ["Selection", "Selector", "ChunkRows", "SelectionResult", "run_selection"]


@dataclass
class Selection:
    """What to select (empty tuples: criterion not used).

    Attributes
    ----------
    regions : tuple of SkyRegion
        Sky apertures (union).
    wave : tuple of (float, float)
        Wavelength ranges ``[lo, hi)``, Angstrom (union).
    ifus, slices, stacks, exposures : tuple of int
        IFU numbers (1..24), CCD slice numbers (1..48), stacks (1..4), exposure numbers.
    xpix, ypix : tuple of (int, int)
        Detector pixel ranges ``[lo, hi)`` (union).
    method : {'and', 'or'}
        How criteria combine.
    mask : object or None
        A mask source (:class:`~ifu_extract.pixtable.maskcol.MaskColumn` or
        :class:`~ifu_extract.pixtable.maskcol.MaskFromImage`), applied after the criteria.
    keep : {'unmasked', 'masked'}
        Which rows of the mask to keep.
    """

    regions: tuple = ()
    wave: tuple = ()
    ifus: tuple = ()
    slices: tuple = ()
    stacks: tuple = ()
    exposures: tuple = ()
    xpix: tuple = ()
    ypix: tuple = ()
    method: str = "and"
    mask: object = None
    keep: str = "unmasked"

    @property
    def has_criteria(self) -> bool:
        return any((self.regions, self.wave, self.ifus, self.slices, self.stacks,
                    self.exposures, self.xpix, self.ypix))

    def describe(self) -> dict:
        """Parameters worth recording in output headers."""
        out = {}
        for name in ("wave", "ifus", "slices", "stacks", "exposures", "xpix", "ypix"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.regions:
            out["sky"] = [(r.ra, r.dec, r.size, r.shape) for r in self.regions]
        if self.has_criteria:
            out["combine"] = self.method
        if self.mask is not None:
            out["mask"] = f"{self.mask.name} (keep {self.keep})"
        return out


class _ChunkData:
    """Columns of one chunk, read at most once each (dense) or gathered (sparse)."""

    def __init__(self, table, a: int, b: int):
        self.table, self.a, self.b = table, a, b
        self._dense = {}

    def dense(self, name):
        arr = self._dense.get(name)
        if arr is None:
            arr = self._dense[name] = self.table.read_scratch(name, self.a, self.b)
        return arr

    def sparse(self, name, rows):
        if name in self._dense:
            return self._dense[name][rows]
        col = self.table.raw(name)[self.a:self.b].take(rows)
        return col.astype(col.dtype.newbyteorder("="))


class _Criterion:
    cost = 0

    def dense(self, cd: _ChunkData) -> np.ndarray:
        raise NotImplementedError

    def sparse(self, cd: _ChunkData, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _Exposures(_Criterion):
    cost = 0

    def __init__(self, ranges):
        self.ranges = sorted(ranges)
        self.starts = np.array([r[0] for r in self.ranges], dtype=np.int64)
        self.stops = np.array([r[1] + 1 for r in self.ranges], dtype=np.int64)

    def dense(self, cd):
        m = np.zeros(cd.b - cd.a, dtype=bool)
        for lo, hi in zip(self.starts, self.stops):
            lo, hi = max(lo, cd.a), min(hi, cd.b)
            if lo < hi:
                m[lo - cd.a:hi - cd.a] = True
        return m

    def sparse(self, cd, rows):
        g = rows.astype(np.int64) + cd.a
        k = np.searchsorted(self.starts, g, side="right") - 1
        return (k >= 0) & (g < self.stops[np.maximum(k, 0)])

    def touches(self, a, b) -> bool:
        return bool(np.any((self.starts < b) & (self.stops > a)))


class _OriginKey(_Criterion):
    """IFU, slice and stack membership through one 2048-entry table on ``origin & 0x7ff``."""

    cost = 1

    def __init__(self, lut: np.ndarray):
        self.lut = lut
        hits = np.flatnonzero(lut)
        ifus = np.unique(hits >> IFU_SHIFT)
        # One IFU with all its slices allowed: a masked compare is cheaper than a gather.
        self.single_ifu = None
        if len(ifus) == 1:
            block = lut[ifus[0] << IFU_SHIFT:(ifus[0] + 1) << IFU_SHIFT]
            if block.all():
                self.single_ifu = np.int32(ifus[0] << IFU_SHIFT)

    def _test(self, origin):
        tmp = scratch("key", origin.size, np.int32)
        np.bitwise_and(origin, np.int32(IFU_MASK << IFU_SHIFT) if self.single_ifu is not None
                       else np.int32(KEY_MASK), out=tmp)
        if self.single_ifu is not None:
            return np.equal(tmp, self.single_ifu, out=scratch("hit", origin.size, bool))
        return self.lut.take(tmp)

    def dense(self, cd):
        raw = cd.table.raw("origin")
        col = cd.table.columns["origin"]
        if (self.single_ifu is not None and raw.dtype == np.dtype(">i4")
                and col.bscale == 1.0 and col.bzero == 0.0):
            # Bitwise tests commute with byte order: test the big-endian words as they lie in
            # the mapped file against byte-swapped constants (no conversion pass).
            words = raw[cd.a:cd.b].view("<i4")
            tmp = scratch("key", words.size, np.int32)
            np.bitwise_and(words, np.int32(IFU_MASK << IFU_SHIFT).byteswap(), out=tmp)
            return np.equal(tmp, self.single_ifu.byteswap(), out=scratch("hit", words.size, bool))
        return self._test(cd.dense("origin"))

    def sparse(self, cd, rows):
        return self._test(cd.sparse("origin", rows))


class _Ypix(_Criterion):
    cost = 2

    def __init__(self, ranges):
        self.ranges = ranges

    def _test(self, origin):
        y = ((origin >> YPIX_SHIFT) & YPIX_MASK) - 1
        m = np.zeros(y.shape, dtype=bool)
        for lo, hi in self.ranges:
            m |= (y >= lo) & (y < hi)
        return m

    def dense(self, cd):
        return self._test(cd.dense("origin"))

    def sparse(self, cd, rows):
        return self._test(cd.sparse("origin", rows))


class _Xpix(_Ypix):
    cost = 3

    def __init__(self, ranges, lut, path):
        super().__init__(ranges)
        self.xlut, self.path = lut, path

    def _test(self, origin):
        keys = origin & KEY_MASK
        off = self.xlut.take(keys)
        if np.any(off < 0):
            check_xoffsets(keys, self.xlut, self.path)
        x = off + ((origin >> XPIX_SHIFT) & XPIX_MASK) - 1
        m = np.zeros(x.shape, dtype=bool)
        for lo, hi in self.ranges:
            m |= (x >= lo) & (x < hi)
        return m


class _Wave(_Criterion):
    cost = 4

    def __init__(self, ranges32):
        self.ranges32 = ranges32

    def _test(self, lam):
        m = scratch("hit", lam.size, bool)
        t = scratch("hit2", lam.size, bool)
        for i, (lo, hi) in enumerate(self.ranges32):
            dst = m if i == 0 else t
            np.greater_equal(lam, lo, out=dst)
            np.logical_and(dst, np.less(lam, hi, out=scratch("hit3", lam.size, bool)), out=dst)
            if i:
                m |= t
        return m

    def dense(self, cd):
        return self._test(cd.dense("lambda"))

    def sparse(self, cd, rows):
        return self._test(cd.sparse("lambda", rows))


class _Sky(_Criterion):
    cost = 5

    def __init__(self, frame, regions):
        self.frame, self.regions = frame, regions

    def _test(self, x, y):
        m = np.zeros(x.shape, dtype=bool)
        for reg in self.regions:
            cand = candidate_mask(self.frame, x, y, reg)
            if cand is None:
                m |= in_region(self.frame, x, y, reg)
                continue
            idx = np.flatnonzero(cand & ~m)
            if idx.size:
                m[idx[in_region(self.frame, x[idx], y[idx], reg)]] = True
        return m

    def dense(self, cd):
        return self._test(cd.dense("xpos"), cd.dense("ypos"))

    def sparse(self, cd, rows):
        return self._test(cd.sparse("xpos", rows), cd.sparse("ypos", rows))


@dataclass
class ChunkRows:
    """Selected rows of one chunk ``[a, b)``.

    Attributes
    ----------
    kind : {'none', 'all', 'idx', 'bits'}
        No row, every row, ``payload`` = int32 offsets, or ``payload`` = packed bits.
    """

    a: int
    b: int
    count: int
    kind: str
    payload: np.ndarray | None = None

    def rows(self) -> np.ndarray | None:
        """int32 offsets of the selected rows within the chunk (None for all rows)."""
        if self.kind == "all":
            return None
        if self.kind == "none":
            return np.empty(0, dtype=np.int32)
        if self.kind == "idx":
            return self.payload
        bits = np.unpackbits(self.payload, count=self.b - self.a).view(bool)
        return np.flatnonzero(bits).astype(np.int32)

    def count_below(self, pos: int) -> int:
        """Selected rows with global index < *pos*."""
        if pos <= self.a:
            return 0
        if pos >= self.b:
            return self.count
        if self.kind == "all":
            return pos - self.a
        if self.kind == "none":
            return 0
        return int(np.searchsorted(self.rows(), pos - self.a))

    @classmethod
    def from_rows(cls, a, b, rows):
        n = b - a
        if rows is None:
            return cls(a, b, n, "all")
        count = int(rows.size)
        if count == 0:
            return cls(a, b, 0, "none")
        if count == n:
            return cls(a, b, n, "all")
        if count * 32 > n:  # dense: one bit per row is smaller than 32 bits per selected row
            m = np.zeros(n, dtype=bool)
            m[rows] = True
            return cls(a, b, count, "bits", np.packbits(m))
        return cls(a, b, count, "idx", rows.astype(np.int32))


@dataclass
class SelectionResult:
    """Selected rows of a whole table, chunk by chunk."""

    chunks: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(c.count for c in self.chunks)

    def count_below(self, pos: int) -> int:
        return sum(c.count_below(pos) for c in self.chunks)

    def offsets(self) -> list[int]:
        """Output row of the first selected row of each chunk."""
        out, acc = [], 0
        for c in self.chunks:
            out.append(acc)
            acc += c.count
        return out


class Selector:
    """A :class:`Selection` compiled against one table (validated; errors raised here).

    Parameters
    ----------
    table : PixTable
    selection : Selection
    """

    def __init__(self, table, selection: Selection):
        self.table, self.sel = table, selection
        path = table.path
        if selection.method not in ("and", "or"):
            raise ParameterError(None, "{combine}: " + f"unknown combination {selection.method!r}",
                                 "use 'and' or 'or'", params=("combine",))
        crits = []
        if selection.exposures:
            if not table.meta.exposures:
                raise ParameterError(path, "is not a combined table (no COMBINED/EXPn keywords), "
                                     "so it cannot be selected by exposure", "drop {exposures}",
                                     params=("exposures",))
            n = len(table.meta.exposures)
            bad = [e for e in selection.exposures if not 1 <= e <= n]
            if bad:
                raise ParameterError(path, f"has {n} exposures; exposure {bad[0]} does not exist",
                                     f"use {{exposures}} between 1 and {n}", params=("exposures",))
            self.exposures = _Exposures([table.meta.exposures[e - 1]
                                         for e in sorted(set(selection.exposures))])
            crits.append(self.exposures)
        else:
            self.exposures = None
        if selection.ifus or selection.slices or selection.stacks:
            crits.append(_OriginKey(self._key_lut()))
        if selection.ypix:
            crits.append(_Ypix(list(selection.ypix)))
        if selection.xpix:
            crits.append(_Xpix(list(selection.xpix), xoffset_lut(table.meta), path))
        if selection.wave:
            crits.append(_Wave(self._wave_thresholds()))
        if selection.regions:
            frame = SkyFrame.of(table)
            limits = {k: get_keyword(table.header, f"LIMITS {k}", None)
                      for k in ("X LOW", "X HIGH", "Y LOW", "Y HIGH")}
            for i, reg in enumerate(selection.regions, start=1):
                if reg.shape not in ("C", "S"):
                    raise ParameterError(None, "{regions}: " + f"unknown aperture shape {reg.shape!r}",
                                         "use C (circle) or S (square)", params=("regions",))
                if not reg.size > 0:
                    raise ParameterError(None, "{regions}: " + f"aperture {i} has size {reg.size}",
                                         "give a positive radius / half side in arcsec",
                                         params=("regions",))
                if region_outside_field(frame, limits, reg):
                    raise InputError(path, f"sky region {i} ({reg.describe()}) lies outside the "
                                     f"field of the table (centre RA {frame.xc:.6f} Dec "
                                     f"{frame.yc:.6f})",
                                     "check the centre (degrees) and the size (arcsec)")
            crits.append(_Sky(frame, list(selection.regions)))
        self.criteria = sorted(crits, key=lambda c: c.cost)

    def _key_lut(self) -> np.ndarray:
        s = self.sel
        ifu_ok = np.zeros(IFU_MASK + 1, dtype=bool)
        slice_ok = np.zeros(SLICE_MASK + 1, dtype=bool)
        stack_ok = np.zeros(SLICE_MASK + 1, dtype=bool)
        for v, name, hi in ((s.ifus, "ifus", NIFU), (s.slices, "slices", NSLICE),
                            (s.stacks, "stacks", 4)):
            bad = [x for x in v if not 1 <= x <= hi]
            if bad:
                raise ParameterError(None, "{%s}: value %s is out of range" % (name, bad[0]),
                                     f"use 1..{hi}", params=(name,))
        ifu_ok[list(s.ifus)] = True
        slice_ok[list(s.slices)] = True
        for st in s.stacks:
            stack_ok[stack_ccd_slices(st)] = True
        keys = np.arange(KEY_MASK + 1)
        ki, ks = keys >> IFU_SHIFT, keys & SLICE_MASK
        parts = []
        if s.ifus:
            parts.append(ifu_ok[ki])
        if s.slices:
            parts.append(slice_ok[ks])
        if s.stacks:
            parts.append(stack_ok[ks])
        if s.method == "and":
            return np.logical_and.reduce(parts)
        return np.logical_or.reduce(parts)

    def _wave_thresholds(self):
        unit = self.table.unit("lambda") or u.AA
        out = []
        for lo, hi in self.sel.wave:
            # MPDAF converts the Angstrom bounds to the column unit, then compares in float64.
            lo_t = (lo * u.AA).to(unit).value
            hi_t = (hi * u.AA).to(unit).value
            out.append((f32_ceil(lo_t), f32_ceil(hi_t)))
        return out

    def chunk(self, a: int, b: int) -> ChunkRows:
        """Select the rows of chunk ``[a, b)``."""
        cd = _ChunkData(self.table, a, b)
        if self.sel.method == "and" or not self.criteria:
            rows = None
            if self.exposures is not None and not self.exposures.touches(a, b):
                return ChunkRows(a, b, 0, "none")
            for crit in self.criteria:
                if rows is None:
                    m = crit.dense(cd)  # may be a scratch buffer: used up right here
                    if m.all():
                        continue
                    rows = np.flatnonzero(m).astype(np.int32)
                else:
                    rows = rows[crit.sparse(cd, rows)]
                if rows.size == 0:
                    return ChunkRows(a, b, 0, "none")
        else:
            m = np.zeros(b - a, dtype=bool)
            for crit in self.criteria:
                m |= crit.dense(cd)  # scratch results are folded in at once
            rows = None if m.all() else np.flatnonzero(m).astype(np.int32)
        if self.sel.mask is not None:
            masked = self.sel.mask.values(self.table, a, b, rows)
            keep = ~masked if self.sel.keep == "unmasked" else masked
            if rows is None:
                rows = None if keep.all() else np.flatnonzero(keep).astype(np.int32)
            else:
                rows = rows[keep]
        return ChunkRows.from_rows(a, b, rows)


def run_selection(table, selection: Selection) -> SelectionResult:
    """Evaluate *selection* over the whole table (chunks in parallel)."""
    selector = Selector(table, selection)
    return SelectionResult(list(table.map_chunks(selector.chunk)))

"""The spectra store: one file, append-only, crash-safe, memory-mapped.

A store is a single file (Galaxy holds it as one dataset) made of segments appended one after
the other; nothing already written is ever rewritten::

    file header   64 bytes: b"IFXSPEC1", format version (uint32 LE), zero padding
    segment       32-byte header: b"SEG1", kind (b"DATA" or b"COMT"), payload length (uint64),
                  CRC-32 of the payload (uint32, COMT only), zero padding; then the payload,
                  zero-padded to a multiple of 64 bytes.

``DATA`` payload
    One *block*: ``m`` spectra of one context that share a channel range, as a little-endian
    array of 4-byte words of shape ``(m, P, N)``: spectrum, plane (the context's planes, e.g.
    flux float32, ivar float32, mask int32), channel.  Channels outside a spectrum's own range are
    padding (flux 0, ivar 0, mask :data:`MASK_NODATA`).  Memory-mapped and sliced in place.
``COMT`` payload
    One *commit*: a JSON header (uint64 length first) followed by raw column arrays (each
    8-byte aligned) of three tables: ``blocks`` (where each DATA block is), ``spectra`` (one row
    per spectrum: context, object ID, tag, RA, Dec, z, HEALPix, channel range, block, row,
    provenance) and ``objects`` (summary-table rows).  The JSON also carries the context
    descriptors (grid, units, planes) and the rows superseded by this commit.

An ingest writes DATA segments, fsyncs, then writes its COMT segment and fsyncs again.  A
reader takes everything up to the last COMT whose CRC is right: an ingest killed half-way
leaves a tail that no commit refers to, which readers ignore and the next writer truncates.
One writer at a time is enforced with an advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..fitsout import iso_date
from .grid import Grid

__all__ = [
    "Store", "StoreWriter", "Context", "UnknownIds", "spectrum_key", "keys64",
    "MASK_BAD", "MASK_NODATA", "PAD_WORDS", "PLANE_DTYPES", "FORMAT_VERSION",
]

MAGIC = b"IFXSPEC1"
FORMAT_VERSION = 1
FILE_HEADER = 64
SEG_HEADER = struct.Struct("<4s4sQI12x")  # 32 bytes
SEG_MAGIC = b"SEG1"
ALIGN = 64

#: Mask bit of a channel whose value was not valid in the source (NaN, masked, ivar <= 0).
MASK_BAD = 1 << 28
#: Mask bit of a padding channel (outside the spectrum's own wavelength range).
MASK_NODATA = 1 << 30

#: Mask of the integer spectrum id (:meth:`Store.specnums`): 63 bits, a positive int64.
SPECNUM_MASK = (1 << 63) - 1

#: Storage dtype of each known plane (all 4-byte, little-endian).
PLANE_DTYPES = {"flux": "<f4", "ivar": "<f4", "mask": "<i4", "sky": "<f4", "model": "<f4"}
#: Padding value of each plane, as its 4-byte word.
PAD_WORDS = {"flux": 0, "ivar": 0, "mask": MASK_NODATA, "sky": 0, "model": 0}

_SPECTRA_COLUMNS = {
    "ctx": "<u2", "tag": "<u2", "id": "S", "specid": "S", "key": "<u8", "content": "<u8",
    "ra": "<f8", "dec": "<f8", "z": "<f8", "hpx": "<i8", "k0": "<i8", "nchan": "<i4",
    "wmin": "<f8", "wmax": "<f8", "snr": "<f4", "block": "<i8", "brow": "<i4", "source": "<i4",
    "commit": "<i4",
}
_BLOCK_COLUMNS = {"ctx": "<u2", "offset": "<i8", "m": "<i4", "nplanes": "<i4", "n": "<i4",
                  "k0": "<i8"}


class UnknownIds(InputError, KeyError):
    """Some requested spectrum ids are not in the store (``.ids`` lists them)."""

    def __init__(self, ids):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:5]) + (" ..." if len(self.ids) > 5 else "")
        super().__init__("ids", f"{len(self.ids)} unknown spectrum id(s): {shown}",
                         "take ids from query() or 'ifu-extract spectra query'")

    def __str__(self):
        return self.oneline()


def spectrum_key(context: str, obj_id: str, tag: str) -> str:
    """The spectrum id ``context:ID:TAG`` (the unit of retrieval)."""
    return f"{context}:{obj_id}:{tag}"


def keys64(specids) -> np.ndarray:
    """64-bit hashes (uint64) of spectrum id strings: the store's lookup key."""
    out = np.empty(len(specids), dtype=np.uint64)
    for i, s in enumerate(specids):
        if isinstance(s, bytes):
            s = s.decode()
        out[i] = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
    return out


@dataclass
class Context:
    """A collection of spectra on one wavelength lattice, with one layout and flux unit.

    Attributes
    ----------
    name : str
        ``[a-z0-9_]`` name, the first part of spectrum ids.
    grid : Grid
        Wavelength lattice (linear/log, air/vacuum, Angstrom).
    flux_unit : str
        Unit of ``flux`` (and ``sky``/``model``); ``ivar`` is in its inverse square.
    planes : tuple of str
        Stored planes, in storage order (``flux``, ``ivar``, ``mask`` first).
    layout : str
        Where the spectra came from (``mpdaf-source``, ``sdss-spec``).
    kmin, kmax : int
        Channel range covered by all spectra ever ingested (``kmin <= k < kmax``).
    n_spectra : int
        Spectra currently in the context.
    """

    name: str
    grid: Grid
    flux_unit: str
    planes: tuple
    layout: str
    kmin: int
    kmax: int
    description: str = ""
    n_spectra: int = 0
    tags: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON form (the descriptor served by ``/contexts``)."""
        wmin, wmax = (float(self.grid.wave(self.kmin)), float(self.grid.wave(self.kmax - 1)))
        return {"name": self.name, "grid": self.grid.to_dict(), "flux_unit": self.flux_unit,
                "ivar_unit": f"({self.flux_unit})**-2", "planes": list(self.planes),
                "layout": self.layout, "kmin": int(self.kmin), "kmax": int(self.kmax),
                "wmin": wmin, "wmax": wmax, "nchan": int(self.kmax - self.kmin),
                "description": self.description or self.grid.describe(),
                "n_spectra": int(self.n_spectra), "tags": list(self.tags)}

    @classmethod
    def from_dict(cls, d: dict) -> "Context":
        """Inverse of :meth:`to_dict`."""
        return cls(name=d["name"], grid=Grid.from_dict(d["grid"]), flux_unit=d["flux_unit"],
                   planes=tuple(d["planes"]), layout=d["layout"], kmin=int(d["kmin"]),
                   kmax=int(d["kmax"]), description=d.get("description", ""),
                   n_spectra=int(d.get("n_spectra", 0)), tags=list(d.get("tags", [])))


# -- low-level encoding ---------------------------------------------------------------------------
def _pad(n: int, align: int = ALIGN) -> int:
    return (-n) % align


def _encode_tables(meta: dict, tables: dict[str, dict[str, np.ndarray]]) -> bytes:
    """JSON header + 8-byte-aligned raw columns."""
    chunks, offset, spec = [], 0, {}
    for tname, cols in tables.items():
        nrows = len(next(iter(cols.values()))) if cols else 0
        entries = []
        for cname, arr in cols.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.kind in "iuf" and arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            raw = arr.tobytes()
            entries.append([cname, arr.dtype.str, offset, len(raw)])
            chunks.append(raw + b"\0" * _pad(len(raw), 8))
            offset += len(raw) + _pad(len(raw), 8)
        spec[tname] = {"n": nrows, "columns": entries}
    head = json.dumps({**meta, "tables": spec}, sort_keys=True).encode()
    head += b" " * _pad(len(head) + 8, 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def _decode_tables(payload) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    (hlen,) = struct.unpack_from("<Q", payload, 0)
    meta = json.loads(bytes(payload[8:8 + hlen]))
    base = 8 + hlen
    tables = {}
    for tname, spec in meta.pop("tables").items():
        cols = {}
        for cname, dtype, offset, nbytes in spec["columns"]:
            dt = np.dtype(dtype)
            start = base + offset
            count = nbytes // dt.itemsize if dt.itemsize else 0
            cols[cname] = np.frombuffer(payload, dtype=dt, count=count, offset=start).copy()
        tables[tname] = cols
    return meta, tables


def _concat(parts: list[dict[str, np.ndarray]], schema: dict[str, str] | None = None):
    """Concatenate column dicts; missing columns are filled (NaN, b'', 0)."""
    names = []
    for p in parts:
        for k in p:
            if k not in names:
                names.append(k)
    out = {}
    for name in names:
        arrays = []
        kinds = {p[name].dtype.kind for p in parts if name in p}
        for p in parts:
            n = len(next(iter(p.values()))) if p else 0
            if name in p:
                arrays.append(p[name])
            elif "S" in kinds:
                arrays.append(np.zeros(n, dtype="S1"))
            elif "f" in kinds:
                arrays.append(np.full(n, np.nan))
            else:
                arrays.append(np.zeros(n, dtype=np.int64))
        out[name] = np.concatenate(arrays) if arrays else np.zeros(0)
    if schema:
        for name, dt in schema.items():
            if name not in out:
                out[name] = np.zeros(0, dtype=dt if dt != "S" else "S1")
    return out


# -- reader ------------------------------------------------------------------------------------
class Store:
    """Read access to a spectra store (memory-mapped; safe to share between threads).

    Parameters
    ----------
    path : str or os.PathLike
        The store file.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._load()

    # -- loading ----------------------------------------------------------------------------------
    def _load(self):
        path = self.path
        if not path.is_file():
            raise InputError(path, "no such spectra store",
                             "create it with 'ifu-extract spectra ingest SOURCES... --store STORE'")
        with open(path, "rb") as fh:
            head = fh.read(FILE_HEADER)
            if len(head) < FILE_HEADER or head[:8] != MAGIC:
                raise InputError(path, "is not an ifu-extract spectra store",
                                 "give a store written by 'ifu-extract spectra ingest'")
            (version,) = struct.unpack_from("<I", head, 8)
            if version > FORMAT_VERSION:
                raise InputError(path, f"was written by a newer ifu-extract (store format "
                                       f"{version})", "upgrade ifu-extract")
            size = os.fstat(fh.fileno()).st_size
            self.file_size = size
            commits = []
            pos = FILE_HEADER
            valid_end = FILE_HEADER
            while pos + SEG_HEADER.size <= size:
                fh.seek(pos)
                magic, kind, length, crc = SEG_HEADER.unpack(fh.read(SEG_HEADER.size))
                end = pos + SEG_HEADER.size + length + _pad(SEG_HEADER.size + length)
                if magic != SEG_MAGIC or end > size:
                    break
                if kind == b"COMT":
                    payload = fh.read(length)
                    if len(payload) != length or zlib.crc32(payload) != crc:
                        break
                    meta, tables = _decode_tables(payload)
                    if any(o + SEG_HEADER.size > pos for o in tables["blocks"].get("offset", [])):
                        break  # refers to data after itself: corrupt
                    commits.append((meta, tables))
                    valid_end = end
                elif kind != b"DATA":
                    break
                pos = end
            self.valid_end = valid_end
            self.n_commits = len(commits)
            self._mm = (mmap.mmap(fh.fileno(), valid_end, access=mmap.ACCESS_READ)
                        if valid_end > FILE_HEADER else None)
        self._words = (np.frombuffer(self._mm, dtype="<u4") if self._mm is not None
                       else np.zeros(0, dtype="<u4"))
        self._build(commits)

    def _build(self, commits):
        self.context_names: list[str] = []
        self.tag_names: list[str] = []
        self.source_names: list[str] = []
        self.contexts: dict[str, Context] = {}
        blocks, spectra, objects, retired = [], [], [], []
        self.summaries: list[str] = []
        nrows = nblocks = 0
        for seq, (meta, tables) in enumerate(commits):
            cmap = np.array([self._code(self.context_names, c) for c in meta["contexts_order"]]
                            or [0], dtype=np.uint16)
            tmap = np.array([self._code(self.tag_names, t) for t in meta["tags"]] or [0],
                            dtype=np.uint16)
            smap = np.array([self._code(self.source_names, s, unique=False)
                             for s in meta["sources"]] or [0], dtype=np.int32)
            for name, desc in meta["contexts"].items():
                self.contexts[name] = Context.from_dict(desc)
            b = tables["blocks"]
            if b and len(b["ctx"]):
                b["ctx"] = cmap[b["ctx"]]
                blocks.append(b)
            s = tables["spectra"]
            if s and len(s["ctx"]):
                s["ctx"] = cmap[s["ctx"]]
                s["tag"] = tmap[s["tag"]]
                s["source"] = smap[s["source"]]
                s["block"] = s["block"] + nblocks
                s["commit"] = np.full(len(s["ctx"]), seq, dtype=np.int32)
                spectra.append(s)
            o = tables.get("objects")
            if o and "id" in o and len(o["id"]):
                objects.append(o)
            retired.extend(meta.get("retire", []))
            self.summaries.extend(meta.get("summaries", []))
            nblocks += len(b["ctx"]) if b else 0
            nrows += len(s["ctx"]) if s else 0
        self.blocks = _concat(blocks, _BLOCK_COLUMNS)
        self.spectra = _concat(spectra, _SPECTRA_COLUMNS)
        self.n_rows = nrows
        alive = np.ones(nrows, dtype=bool)
        if retired:
            alive[np.asarray(retired, dtype=np.int64)] = False
        self.alive = alive
        self.alive_rows = np.flatnonzero(alive)
        self.objects = self._merge_objects(objects)
        counts = np.bincount(self.spectra["ctx"][alive].astype(np.int64),
                             minlength=len(self.context_names))
        for code, name in enumerate(self.context_names):
            if name in self.contexts:
                self.contexts[name].n_spectra = int(counts[code])
                tags = np.unique(self.spectra["tag"][alive & (self.spectra["ctx"] == code)])
                self.contexts[name].tags = [self.tag_names[t] for t in tags]
        self._key_index = None
        self._num_index = None
        self._sky_index = None
        self._object_join = None

    @staticmethod
    def _code(names: list, value: str, unique: bool = True) -> int:
        if unique and value in names:
            return names.index(value)
        names.append(value)
        return len(names) - 1

    @staticmethod
    def _merge_objects(parts):
        if not parts:
            return {"id": np.zeros(0, dtype="S1")}
        cols = _concat(parts)
        ids = cols["id"]
        # The last row for an object wins (a later summary replaces an earlier one).
        rev = ids[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        keep = np.sort(len(ids) - 1 - first_in_rev)
        return {k: v[keep] for k, v in cols.items()}

    def refresh(self) -> bool:
        """Reload when the file grew (a new ingest committed); True when reloaded."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return False
        if size == self.file_size:
            return False
        with self._lock:
            self._load()
        return True

    def close(self):
        """Drop the memory map (arrays handed out keep their own copies)."""
        self._words = np.zeros(0, dtype="<u4")
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- lookups ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.alive.sum())

    def block_view(self, b: int) -> np.ndarray:
        """Block *b* as a read-only ``(m, P, N)`` uint32 view of the file."""
        off = int(self.blocks["offset"][b]) // 4
        m, p, n = (int(self.blocks[k][b]) for k in ("m", "nplanes", "n"))
        return self._words[off:off + m * p * n].reshape(m, p, n)

    def context_of_rows(self, rows) -> np.ndarray:
        """Context codes of *rows*."""
        return self.spectra["ctx"][rows]

    def rows_for(self, specids) -> np.ndarray:
        """Row numbers (int64) of spectrum ids, in the order given.

        Raises
        ------
        UnknownIds
            When some ids are not in the store.
        """
        if not len(specids):
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            if self._key_index is None:  # alive spectrum ids, sorted (built on first use)
                rows = self.alive_rows
                ids = self.spectra["specid"][rows]
                order = np.argsort(ids, kind="stable")
                self._key_index = (ids[order], rows[order])
        sids, srows = self._key_index
        try:
            want = np.array(specids, dtype="S")
        except (UnicodeEncodeError, TypeError, ValueError):
            want = np.array([s if isinstance(s, bytes) else str(s).encode("utf-8", "replace")
                             for s in specids], dtype="S")
        too_long = np.zeros(len(want), dtype=bool)
        if len(sids) and want.dtype.itemsize != sids.dtype.itemsize:
            if want.dtype.itemsize > sids.dtype.itemsize:
                too_long = np.char.str_len(want) > sids.dtype.itemsize
            want = want.astype(sids.dtype)  # same width: no conversion inside searchsorted
        pos = np.searchsorted(sids, want)
        pos_c = np.minimum(pos, max(len(sids) - 1, 0))
        found = ((sids[pos_c] == want) & ~too_long if len(sids)
                 else np.zeros(len(want), dtype=bool))
        if not found.all():
            raise UnknownIds([s.decode() if isinstance(s, bytes) else str(s)
                              for s, ok in zip(specids, found) if not ok])
        return srows[pos_c].astype(np.int64)

    def specids(self, rows) -> np.ndarray:
        """Spectrum ids (str array) of *rows*."""
        return self.spectra["specid"][rows].astype(str)

    def specnums(self, rows) -> np.ndarray:
        """Integer spectrum ids (int64 >= 0) of *rows*: the spectrum's 64-bit key with the top
        bit cleared, the same for a spectrum in any store.  For clients that take integer ids
        only (NOIRLab Data Lab's, like SDSS ``specobjid``)."""
        return (self.spectra["key"][rows] & np.uint64(SPECNUM_MASK)).astype(np.int64)

    def rows_for_specnums(self, nums) -> np.ndarray:
        """Row numbers of integer spectrum ids (see :meth:`specnums`), in the order given.

        Raises
        ------
        UnknownIds
            When some are not in the store, or name two spectra (a 63-bit collision).
        """
        with self._lock:
            if self._num_index is None:
                rows = self.alive_rows
                nums_all = self.specnums(rows)
                order = np.argsort(nums_all, kind="stable")
                sn = nums_all[order]
                dup = np.zeros(len(sn), dtype=bool)
                if len(sn) > 1:
                    same = sn[1:] == sn[:-1]
                    dup[1:] |= same
                    dup[:-1] |= same
                self._num_index = (sn, rows[order], dup)
        sn, srows, dup = self._num_index
        want = np.asarray([int(n) for n in nums], dtype=np.int64)
        if not len(want):
            return np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(sn, want), max(len(sn) - 1, 0))
        found = (sn[pos] == want) & ~dup[pos] if len(sn) else np.zeros(len(want), dtype=bool)
        if not found.all():
            raise UnknownIds([str(n) for n, ok in zip(want.tolist(), found) if not ok])
        return srows[pos].astype(np.int64)

    def object_join(self) -> np.ndarray:
        """For every spectrum row, its row in :attr:`objects` (-1 when it has none)."""
        with self._lock:
            if self._object_join is None:
                oid = self.objects["id"]
                order = np.argsort(oid, kind="stable")
                sid = self.spectra["id"]
                if len(oid):
                    pos = np.searchsorted(oid[order], sid)
                    pos_c = np.minimum(pos, len(oid) - 1)
                    ok = oid[order][pos_c] == sid
                    self._object_join = np.where(ok, order[pos_c], -1)
                else:
                    self._object_join = np.full(len(sid), -1, dtype=np.int64)
        return self._object_join

    def sky_index(self):
        """The HEALPix index of alive rows (built on first use)."""
        from .skyindex import SkyIndex

        with self._lock:
            if self._sky_index is None:
                rows = self.alive_rows
                self._sky_index = SkyIndex(self.spectra["hpx"][rows], rows,
                                           self.spectra["ra"], self.spectra["dec"])
        return self._sky_index


# -- writer ------------------------------------------------------------------------------------
class StoreWriter:
    """Append spectra to a store, in commits; one writer at a time.

    Opening truncates a tail left by an interrupted ingest (nothing committed is touched).
    Data blocks are written as they come; :meth:`commit` makes them visible atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The store file; created when missing.
    """

    def __init__(self, path):
        self.path = Path(path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(self.path, "the folder of the store does not exist",
                             "create it or choose another --store")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(self.path, f"cannot open the store for writing ({exc.strerror})",
                             "choose a writable --store path") from None
        self._fh = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise InputError(self.path, "another ingest is writing this store",
                             "wait for it to finish") from None
        if os.fstat(self._fh.fileno()).st_size == 0:
            self._fh.write(MAGIC + struct.pack("<I", FORMAT_VERSION) + b"\0" * (FILE_HEADER - 12))
            self._sync()
        self.store = Store(self.path)
        self.dropped_bytes = self.store.file_size - self.store.valid_end
        if self.dropped_bytes:
            self._fh.truncate(self.store.valid_end)
            self._sync()
        self._fh.seek(self.store.valid_end)
        self._pos = self.store.valid_end
        self._n_rows = self.store.n_rows
        self.commits = 0
        self.contexts: dict[str, Context] = {k: v for k, v in self.store.contexts.items()}
        self.summaries: set[str] = set(self.store.summaries)
        self._known = dict(zip(self.store.spectra["key"][self.store.alive_rows].tolist(),
                               zip(self.store.alive_rows.tolist(),
                                   self.store.spectra["content"][self.store.alive_rows].tolist())))
        self._reset_pending()

    def _reset_pending(self):
        self._blocks: list[dict] = []
        self._rows: list[dict] = []
        self._objects: list[dict] = []
        self._retire: list[int] = []
        self._pending_keys: dict[int, tuple[int, int]] = {}
        self._touched: set[str] = set()
        self._summaries: list[str] = []
        self.pending_bytes = 0

    def _sync(self):
        self._fh.flush()
        os.fsync(self._fh.fileno())

    # -- state queries --------------------------------------------------------------------------
    def status(self, key: int, content: int) -> str:
        """``'new'``, ``'same'`` (already stored identically) or ``'changed'`` for a spectrum."""
        hit = self._pending_keys.get(key) or self._known.get(key)
        if hit is None:
            return "new"
        return "same" if hit[1] == content else "changed"

    @property
    def n_pending(self) -> int:
        return sum(len(r["key"]) for r in self._rows)

    # -- appending ------------------------------------------------------------------------------
    def define_context(self, ctx: Context) -> None:
        """Create or update (coverage) a context; persisted at the next commit."""
        old = self.contexts.get(ctx.name)
        if old is not None:
            ctx = Context(name=old.name, grid=old.grid, flux_unit=old.flux_unit,
                          planes=old.planes, layout=old.layout, kmin=min(old.kmin, ctx.kmin),
                          kmax=max(old.kmax, ctx.kmax), description=old.description)
        self.contexts[ctx.name] = ctx
        self._touched.add(ctx.name)

    def add_block(self, context: str, k0: int, words: np.ndarray, rows: dict) -> None:
        """Write one block of spectra and queue its catalogue rows.

        Parameters
        ----------
        context : str
            An already defined context.
        k0 : int
            Lattice channel of the block's first column.
        words : numpy.ndarray
            ``(m, P, N)`` array of 4-byte words (any 4-byte dtype, viewed as uint32), planes in
            the context's order.
        rows : dict of numpy.ndarray
            Catalogue columns for the ``m`` spectra: ``id``, ``tag`` (str), ``key``,
            ``content`` (uint64), ``ra``, ``dec``, ``z``, ``hpx``, ``k0``, ``nchan``, ``wmin``,
            ``wmax``, ``snr``, ``source`` (str), ``specid`` (str), ``retire`` (int, -1 or the
            row superseded).
        """
        ctx = self.contexts[context]
        words = np.ascontiguousarray(words).view("<u4")
        m, p, n = words.shape
        if p != len(ctx.planes):
            raise ValueError(f"block has {p} planes, context {context} has {len(ctx.planes)}")
        raw = words.tobytes()
        offset = self._pos + SEG_HEADER.size
        self._fh.write(SEG_HEADER.pack(SEG_MAGIC, b"DATA", len(raw), 0))
        self._fh.write(raw)
        self._fh.write(b"\0" * _pad(SEG_HEADER.size + len(raw)))
        self._pos += SEG_HEADER.size + len(raw) + _pad(SEG_HEADER.size + len(raw))
        self._blocks.append({"ctx": context, "offset": offset, "m": m, "nplanes": p, "n": n,
                             "k0": k0})
        rows = dict(rows)
        rows["ctx"] = context
        rows["block"] = len(self._blocks) - 1
        rows["brow"] = np.arange(m, dtype=np.int32)
        self._rows.append(rows)
        base = self._n_rows + sum(len(r["key"]) for r in self._rows[:-1])
        for i, (key, content) in enumerate(zip(rows["key"].tolist(), rows["content"].tolist())):
            self._pending_keys[key] = (base + i, content)
        for r in rows["retire"].tolist():
            if r >= 0:
                self._retire.append(int(r))
        self.pending_bytes += len(raw)

    def add_objects(self, columns: dict[str, np.ndarray], digest: str | None = None) -> None:
        """Queue summary-table rows (``id`` plus typed columns) for the next commit.

        *digest* identifies the table's content, so that the same table is not added twice.
        """
        if len(columns.get("id", [])):
            self._objects.append(columns)
        if digest:
            self._summaries.append(digest)
            self.summaries.add(digest)

    def row_of(self, key: int) -> int:
        """Row number of a stored (or pending) spectrum key, -1 when absent."""
        hit = self._pending_keys.get(key) or self._known.get(key)
        return -1 if hit is None else hit[0]

    def commit(self) -> int:
        """Make everything appended since the last commit visible; returns the rows added."""
        if not (self._rows or self._objects or self._touched or self._summaries):
            return 0
        names = sorted({b["ctx"] for b in self._blocks} | self._touched)
        code = {c: i for i, c in enumerate(names)}
        tags = sorted({t for r in self._rows for t in r["tag"].tolist()})
        tcode = {t: i for i, t in enumerate(tags)}
        sources = sorted({s for r in self._rows for s in r["source"].tolist()})
        scode = {s: i for i, s in enumerate(sources)}
        blocks = {k: np.array([b[k] if k != "ctx" else code[b["ctx"]] for b in self._blocks],
                              dtype=dt) for k, dt in _BLOCK_COLUMNS.items()}
        spectra = {}
        if self._rows:
            for k, dt in _SPECTRA_COLUMNS.items():
                if k == "commit":
                    continue
                parts = []
                for r in self._rows:
                    m = len(r["key"])
                    if k == "ctx":
                        parts.append(np.full(m, code[r["ctx"]], dtype=dt))
                    elif k == "tag":
                        parts.append(np.array([tcode[t] for t in r["tag"].tolist()], dtype=dt))
                    elif k == "source":
                        parts.append(np.array([scode[s] for s in r["source"].tolist()], dtype=dt))
                    elif k == "block":
                        parts.append(np.full(m, r["block"], dtype=dt))
                    elif dt == "S":
                        parts.append(np.char.encode(np.asarray(r[k], dtype=str), "utf-8"))
                    else:
                        parts.append(np.asarray(r[k]).astype(dt))
                spectra[k] = np.concatenate(parts)
        objects = _concat(self._objects) if self._objects else {}
        contexts = {}
        for name in names:
            ctx = self.contexts[name]
            contexts[name] = ctx.to_dict()
        meta = {"format": FORMAT_VERSION, "writer": f"ifu-extract {__version__}",
                "date": iso_date(), "contexts_order": names, "tags": tags, "sources": sources,
                "contexts": contexts, "retire": sorted(set(self._retire)),
                "summaries": self._summaries}
        payload = _encode_tables(meta, {"blocks": blocks, "spectra": spectra, "objects": objects})
        self._sync()  # data first ...
        self._fh.write(SEG_HEADER.pack(SEG_MAGIC, b"COMT", len(payload), zlib.crc32(payload)))
        self._fh.write(payload)
        self._fh.write(b"\0" * _pad(SEG_HEADER.size + len(payload)))
        self._sync()  # ... then the commit that makes it visible
        self._pos += SEG_HEADER.size + len(payload) + _pad(SEG_HEADER.size + len(payload))
        added = len(spectra.get("key", []))
        for key, hit in self._pending_keys.items():
            self._known[key] = hit
        self._n_rows += added
        self.commits += 1
        self._reset_pending()
        return added

    def close(self) -> None:
        """Release the lock; anything not committed is left as a tail that readers ignore."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.flush()
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

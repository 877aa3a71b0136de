"""The operations of the spectra service, on a local store.

:class:`LocalBackend` is what the client runs on a store path and what the HTTP service runs
behind each endpoint, so both give the same answers.  It validates what it is given (id syntax,
sizes against :class:`Limits`) and returns plain data: dicts and lists (JSON-ready), a
:class:`~.access.SpectraBatch`, PNG bytes or an image array.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from . import access, plots
from .storefile import Store

__all__ = ["Limits", "LocalBackend", "ID_PATTERN", "CONTEXT_PATTERN", "check_ids"]

#: A spectrum id: ``context:ID:TAG``.
ID_PATTERN = r"^[a-z0-9_]{1,40}:[A-Za-z0-9_.+-]{1,64}:[A-Za-z0-9_.+-]{1,64}$"
CONTEXT_PATTERN = r"^[a-z0-9_]{1,40}$"
_ID_RE = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class Limits:
    """Request-size limits (the service's; a local client has none unless given).

    Attributes
    ----------
    max_ids : int
        Spectrum ids in one request.
    max_rows : int
        Rows a query may return.
    max_words : int
        4-byte values in one getSpec answer (spectra x planes x channels; a ``.npy`` answer
        counts its float64 wavelength column as two more per channel): 64 Mi values, 256 MiB.
    max_body : int
        Bytes of a request body.
    max_region : int
        Polygon vertices.
    max_stack_rows : int
        Spectra in one stacked image (one pixel row each).
    """

    max_ids: int = 100_000
    max_rows: int = 2_000_000
    max_words: int = 64 * 1024 * 1024
    max_body: int = 16 * 1024 * 1024
    max_region: int = 100
    max_stack_rows: int = 4096


def check_ids(ids, limits: Limits | None = None) -> list[str]:
    """Validate spectrum ids (syntax and count); returns them as a list of str."""
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    if not ids:
        raise InputError("id_list", "no spectrum id given", "give ids as returned by query()")
    if limits is not None and len(ids) > limits.max_ids:
        raise InputError("id_list", f"{len(ids)} ids, more than the limit of {limits.max_ids}",
                         "split the list into several requests")
    for s in ids:
        if not _ID_RE.match(s):
            raise InputError("id_list", f"{s[:80]!r} is not a spectrum id",
                             "ids look like 'context:ID:TAG', as returned by query()")
    return ids


class LocalBackend:
    """Service operations over a store file.

    Parameters
    ----------
    store : str, os.PathLike or Store
    limits : Limits, optional
        Enforced when given (the service passes its limits).
    refresh_every : float
        Seconds between checks that the store file grew (a new ingest); 0 disables.
    """

    def __init__(self, store, limits: Limits | None = None, refresh_every: float = 2.0):
        self.store = store if isinstance(store, Store) else Store(store)
        self.path = Path(self.store.path)
        self.limits = limits
        self.refresh_every = refresh_every
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    # -- store state ------------------------------------------------------------------------------
    def current(self) -> Store:
        """The store, reopened when an ingest has committed since (swapped atomically)."""
        if self.refresh_every and time.monotonic() - self._checked > self.refresh_every:
            with self._lock:
                self._checked = time.monotonic()
                try:
                    grown = self.path.stat().st_size != self.store.file_size
                except OSError:
                    grown = False
                if grown:
                    self.store = Store(self.path)
        return self.store

    def alive(self) -> bool:
        return True

    def available(self) -> dict:
        s = self.current()
        return {"available": True, "version": __version__, "spectra": len(s),
                "contexts": sorted(s.contexts)}

    def contexts(self, context: str | None = None) -> list[dict]:
        """Context descriptors (all, or the one named)."""
        s = self.current()
        if context:
            if context not in s.contexts:
                raise InputError("context", f"unknown context {context!r}",
                                 f"use one of: {', '.join(sorted(s.contexts)) or '(none)'}")
            return [s.contexts[context].to_dict()]
        return [s.contexts[k].to_dict() for k in sorted(s.contexts)]

    def catalogs(self, context: str | None = None) -> dict:
        """Queryable catalogue columns, per context."""
        s = self.current()
        cols = access.catalogue_columns(s)
        names = [context] if context else sorted(s.contexts)
        for n in names:
            if n not in s.contexts:
                raise InputError("context", f"unknown context {n!r}",
                                 f"use one of: {', '.join(sorted(s.contexts)) or '(none)'}")
        return {n: {"catalog": "spectra", "columns": cols, "id_main": "specid",
                    "n_rows": s.contexts[n].n_spectra} for n in names}

    def validate(self, what: str, value: str) -> bool:
        """Whether a context (or the 'default' profile) exists."""
        if what == "context":
            return value in self.current().contexts
        if what == "profile":
            return value == "default"
        return False

    # -- query ------------------------------------------------------------------------------------
    def query(self, *, ra=None, dec=None, size=None, region=None, constraint=None, context=None,
              fields=None) -> dict:
        """``{'ids': [...]}``, or ``{'fields': [...], 'table': {col: [...]}}`` with *fields*."""
        s, rows = self.query_rows(ra=ra, dec=dec, size=size, region=region,
                                  constraint=constraint, context=context)
        if not fields:
            return {"ids": s.specids(rows)}  # numpy str array (the service makes it a list)
        table = access.query_table(s, rows, fields)
        return {"fields": list(table), "table": {k: _jsonable(v) for k, v in table.items()}}

    def query_rows(self, *, ra=None, dec=None, size=None, region=None, constraint=None,
                   context=None, ids=None):
        """(store, rows) matching a query; *ids* (int or str) restricts to those spectra."""
        lim = self.limits
        if region is not None and lim is not None and len(region) > lim.max_region:
            raise InputError("region", f"{len(region)} vertices, more than {lim.max_region}",
                             "simplify the polygon")
        s = self.current()
        rows = access.query_rows(s, ra=ra, dec=dec, size=size, region=region,
                                 constraint=constraint, context=context,
                                 max_rows=lim.max_rows if lim else None,
                                 max_region=lim.max_region if lim else None)
        if ids is not None:
            rows = rows[np.isin(rows, self._rows(s, ids))]
        return s, rows

    def table(self, rows, fields, store=None) -> dict:
        """Columns *fields* of *rows* as arrays."""
        return access.query_table(store or self.current(), rows, fields)

    def resolve(self, ids) -> list[str]:
        """Spectrum ids ``context:ID:TAG`` of ids given as such or as integers (specnum)."""
        ids = list(ids)
        nums = [k for k, i in enumerate(ids) if isinstance(i, (int, np.integer))]
        if not nums:
            return ids
        s = self.current()
        found = s.specids(s.rows_for_specnums([ids[k] for k in nums])).tolist()
        out = list(ids)
        for k, sid in zip(nums, found):
            out[k] = sid
        return out

    def _rows(self, s, ids):
        return s.rows_for(check_ids(self.resolve(ids), self.limits))

    def span(self, ids) -> dict:
        ids = check_ids(self.resolve(ids), self.limits)
        return access.span(self.current(), ids)

    # -- retrieval ---------------------------------------------------------------------------------
    def batch(self, ids, *, align=False, cutout=None, resample=False, values=None,
              wave_words: int = 0):
        """A :class:`~.access.SpectraBatch` of *ids* (``context:ID:TAG`` or integer specnums).

        *wave_words*: 4-byte words per channel the answer adds to the planes (2 for a ``.npy``
        answer's float64 wavelength column), counted against ``Limits.max_words``.
        """
        ids = check_ids(self.resolve(ids), self.limits)
        return access.fetch(self.current(), ids, align=align, cutout=cutout, resample=resample,
                            values=values, max_words=self.limits.max_words if self.limits else None,
                            wave_words=wave_words)

    def preview(self, spec_id: str) -> bytes:
        return plots.preview_png(self.batch([spec_id]), 0)

    def grid(self, ids, nx: int, ny: int, page: int = 0, align=False, cutout=None) -> bytes:
        ids = check_ids(self.resolve(ids), self.limits)
        nx, ny, page = int(nx), int(ny), int(page)
        if not (1 <= nx <= 10 and 1 <= ny <= 10):
            raise InputError("nx, ny", f"a {nx} x {ny} grid is not allowed", "use 1-10 each")
        per = nx * ny
        pages = max(1, math.ceil(len(ids) / per))
        if not 0 <= page < pages:
            raise InputError("page", f"page {page} does not exist ({pages} page(s))",
                             f"use 0-{pages - 1}")
        chunk = ids[page * per:(page + 1) * per]
        return plots.grid_png(self.batch(chunk, align=align, cutout=cutout), nx, ny)

    def stacked(self, ids, *, fmt="png", yflip=False, cutout=None, resample=False, style=None):
        """Stacked image of *ids* (always aligned): PNG bytes or a float32 array.

        *style*: options of :func:`~.plots.stacked_png` (Data Lab's ``thickness``, ``cmap``,
        ``inverse``, ``xscale``, ``yscale``, ``width``, ``height``).
        """
        if fmt not in ("png", "numpy"):
            raise InputError("fmt", f"unknown image format {fmt!r}", "use 'png' or 'numpy'")
        lim = self.limits
        if lim is not None and len(ids) > lim.max_stack_rows:
            raise InputError("id_list", f"{len(ids)} spectra, more than the limit of "
                             f"{lim.max_stack_rows} rows of a stacked image",
                             "stack fewer spectra per image")
        batch = self.batch(ids, align=True, cutout=cutout, resample=resample, values=["flux",
                                                                                        "mask"])
        if fmt == "numpy":
            return plots.stacked_array(batch, yflip)
        return plots.stacked_png(batch, yflip, **(style or {}))


def _jsonable(arr) -> list:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        return [None if not math.isfinite(x) else x for x in arr.tolist()]
    if arr.dtype.kind in "SU":
        return [str(x) for x in arr.tolist()]
    return arr.tolist()

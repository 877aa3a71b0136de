"""Query and retrieval over a spectra store: the operations both the local client and the
HTTP service run.

``query_rows`` selects catalogue rows (cone, polygon, context, constraint, ORDER BY, LIMIT);
``fetch`` reads spectra into a :class:`SpectraBatch` (aligned on a common channel range, cut out,
or each on its own range).  Everything a client shows (NumPy, pandas, Table, Spectrum, FITS,
plots) is made from a batch, so a local store and the service give identical results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u

from ..errors import InputError
from .constraint import Query, evaluate, order_rows, parse, split_position
from .grid import air_to_vacuum, parse_cutout, vacuum_to_air
from .storefile import PAD_WORDS, PLANE_DTYPES, Store

__all__ = ["SpectraBatch", "BASE_COLUMNS", "catalogue_columns", "column_values", "query_rows",
           "fetch", "span", "PLANE_ORDER", "DEFAULT_FIELDS"]

#: Canonical order of planes in outputs.
PLANE_ORDER = ("flux", "ivar", "mask", "sky", "model")

#: Catalogue columns of every store (type 'num' or 'str'), usable in constraints and fields.
BASE_COLUMNS = {
    "specid": "str", "specnum": "num", "context": "str", "id": "str", "tag": "str",
    "ra": "num", "dec": "num",
    "z": "num", "wmin": "num", "wmax": "num", "nchan": "num", "snr": "num", "source": "str",
    "commit": "num",
}
#: Columns of a query table when ``fields`` is not given.
DEFAULT_FIELDS = ("specid", "context", "id", "tag", "ra", "dec", "z")


def catalogue_columns(store: Store) -> dict[str, str]:
    """Known columns: the base ones plus the summary-table columns (lower case; a summary
    column whose name is taken is prefixed ``summary_``)."""
    cols = dict(BASE_COLUMNS)
    for name, arr in store.objects.items():
        if name == "id":
            continue
        key = name if name not in cols else f"summary_{name}"
        cols[key] = "str" if arr.dtype.kind in "SU" else "num"
    return cols


def _summary_name(store: Store, name: str) -> str | None:
    if name in store.objects and name != "id" and name not in BASE_COLUMNS:
        return name
    if name.startswith("summary_") and name[8:] in store.objects:
        return name[8:]
    return None


def column_values(store: Store, name: str, rows: np.ndarray) -> np.ndarray:
    """Values of catalogue column *name* for *rows* (numbers as float/int, text as str)."""
    s = store.spectra
    if name == "context":
        return np.asarray(store.context_names, dtype=str)[s["ctx"][rows]]
    if name == "tag":
        return np.asarray(store.tag_names, dtype=str)[s["tag"][rows]]
    if name == "source":
        return np.asarray(store.source_names or [""], dtype=str)[s["source"][rows]]
    if name in ("specid", "id"):
        return s[name][rows].astype(str)
    if name == "specnum":
        return store.specnums(rows)
    if name in BASE_COLUMNS:
        return s[name][rows]
    sname = _summary_name(store, name)
    if sname is None:
        raise InputError("fields", f"unknown column {name!r}",
                         f"use one of: {', '.join(sorted(catalogue_columns(store)))}")
    join = store.object_join()[rows]
    arr = store.objects[sname]
    ok = join >= 0
    if arr.dtype.kind in "SU":
        out = np.full(len(rows), "", dtype=object)
        out[ok] = arr[join[ok]].astype(str)
        return out.astype(str)
    out = np.full(len(rows), np.nan)
    out[ok] = arr[join[ok]]
    return out


def query_rows(store: Store, *, ra=None, dec=None, size=None, region=None, constraint=None,
               context=None, max_rows: int | None = None,
               max_region: int | None = None) -> np.ndarray:
    """Rows matching a position (cone or polygon), a context and a constraint.

    Parameters
    ----------
    store : Store
    ra, dec, size : float, optional
        Cone centre and radius, degrees.
    region : sequence of (ra, dec), optional
        Polygon vertices, degrees.
    constraint : str, optional
        A constraint in the safe dialect of :mod:`.constraint` (may end with ORDER BY / LIMIT).
    context : str, optional
        Keep this context only.
    max_rows : int, optional
        Refuse results longer than this (a service limit).
    max_region : int, optional
        Refuse polygons (``q3c_poly_query`` in the constraint) with more vertices than this.

    Returns
    -------
    numpy.ndarray
        Row numbers, in catalogue order unless the constraint orders them.
    """
    q: Query = parse(constraint, catalogue_columns(store))
    for node in q.nodes("poly"):
        if max_region is not None and len(node.value) > max_region:
            raise InputError("region", f"{len(node.value)} vertices, more than the limit of "
                             f"{max_region}",
                             "simplify the polygon")
    if region is not None and len(region):
        rows = store.sky_index().polygon(region)
    elif ra is not None or dec is not None:
        if ra is None or dec is None or size is None:
            raise InputError("query", "a cone needs ra, dec and size", "give all three, degrees")
        rows = store.sky_index().cone(float(ra), float(dec), float(size))
    else:
        node, rest = split_position(q)  # q3c_*_query(...) AND ...: the index answers it
        if node is not None:
            rows, q = _position_rows(store, node), rest
        else:
            rows = store.alive_rows
    if context:
        if context not in store.context_names:
            raise InputError("context", f"unknown context {context!r}",
                             f"use one of: {', '.join(sorted(store.contexts)) or '(none)'}")
        rows = rows[store.spectra["ctx"][rows] == store.context_names.index(context)]
    if q.where is not None:
        cand = rows
        rows = rows[evaluate(q, lambda c: column_values(store, c, cand), len(cand),
                             lambda node: np.isin(cand, _position_rows(store, node)))]
    if q.order or q.limit is not None:
        rows = rows[order_rows(q, lambda c: column_values(store, c, rows), len(rows))]
    if max_rows is not None and len(rows) > max_rows:
        raise InputError("query", f"{len(rows)} rows match, more than the limit of {max_rows}",
                         "narrow the query or add LIMIT to the constraint")
    return rows


def _position_rows(store: Store, node) -> np.ndarray:
    """Rows inside a parsed ``q3c_radial_query`` (cone) or ``q3c_poly_query`` (polygon)."""
    if node.op == "cone":
        return store.sky_index().cone(*node.value)
    return store.sky_index().polygon(node.value)


def query_table(store: Store, rows: np.ndarray, fields) -> dict[str, np.ndarray]:
    """Columns *fields* (comma-separated text or list) of *rows*, as a dict of arrays."""
    if fields is None or fields == "" or fields == "*":
        names = list(DEFAULT_FIELDS)
    elif isinstance(fields, str):
        names = [f.strip().lower() for f in fields.split(",") if f.strip()]
    else:
        names = [str(f).strip().lower() for f in fields]
    known = catalogue_columns(store)
    for n in names:
        if n not in known:
            raise InputError("fields", f"unknown column {n!r}",
                             f"use one of: {', '.join(sorted(known))}")
    return {n: column_values(store, n, rows) for n in names}


# -- retrieval -------------------------------------------------------------------------------------
@dataclass
class SpectraBatch:
    """Spectra read from a store, before formatting.

    Attributes
    ----------
    ids : list of str
        Spectrum ids, in the order asked.
    planes : tuple of str
        Plane names (``flux``, ``ivar``, ``mask`` and, when the context has them, ``sky``,
        ``model``).
    aligned : bool
        True: one wavelength axis for all (``wave`` and ``words``); False: one per spectrum.
    wave : numpy.ndarray
        Aligned: channel centres, Angstrom, float64, shape ``(L,)``.
    words : numpy.ndarray
        Aligned: shape ``(P, n, L)``, uint32 words (plane, spectrum, channel): each plane is a
        contiguous ``(n, L)`` array, see :meth:`plane`.
    waves, chunks : list of numpy.ndarray
        Unaligned: per spectrum, ``(L_i,)`` wavelengths and ``(P, L_i)`` words.
    columns : dict of list
        Per spectrum, column-wise: specid, context, id, tag, ra, dec, z, snr, wmin, wmax,
        flux_unit, medium, source, k0, nchan; :attr:`meta` gives them row-wise.
    info : dict
        Batch-level facts: grid description, medium, flux unit, resampled, cutout.
    """

    ids: list
    planes: tuple
    aligned: bool
    columns: dict
    wave: np.ndarray | None = None
    words: np.ndarray | None = None
    waves: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.ids)

    @property
    def meta(self) -> list[dict]:
        """Per-spectrum facts as one dict per spectrum (made on first use)."""
        cached = self.__dict__.get("_meta")
        if cached is None:
            keys = list(self.columns)
            cached = [dict(zip(keys, vals)) for vals in zip(*(self.columns[k] for k in keys))]
            self.__dict__["_meta"] = cached
        return cached

    def plane(self, name: str, i: int | None = None) -> np.ndarray:
        """Plane *name* with its dtype: aligned ``(n, L)`` (a view), or spectrum *i* ``(L_i,)``."""
        j = self.planes.index(name)
        dt = np.dtype(PLANE_DTYPES[name])
        if self.aligned:
            arr = self.words[j].view(dt) if i is None else self.words[j, i].view(dt)
            return arr
        return self.chunks[i][j].view(dt)

    def wavelength(self, i: int | None = None) -> np.ndarray:
        """Channel centres (Angstrom): shared when aligned, else spectrum *i*'s."""
        return self.wave if self.aligned else self.waves[i]


def _columns(store: Store, rows, ids=None) -> dict[str, list]:
    """Per-spectrum facts of *rows*, column-wise (lists, JSON-ready; NaN for missing numbers).

    *ids*, when given, are the spectrum ids of *rows* (saves decoding them again).
    """
    s = store.spectra
    codes = s["ctx"][rows]
    ctx_names = [n for n in store.context_names]
    units = [store.contexts[n].flux_unit if n in store.contexts else "" for n in ctx_names]
    media = [store.contexts[n].grid.medium if n in store.contexts else "" for n in ctx_names]
    code_list = codes.tolist()
    tag_names = store.tag_names
    src_names = store.source_names or [""]
    cols = {"specid": list(ids) if ids is not None else s["specid"][rows].astype(str).tolist(),
            "context": [ctx_names[c] for c in code_list],
            "id": s["id"][rows].astype(str).tolist(),
            "tag": [tag_names[t] for t in s["tag"][rows].tolist()]}
    for k in ("ra", "dec", "z", "snr", "wmin", "wmax"):
        cols[k] = s[k][rows].astype(np.float64).tolist()
    cols["flux_unit"] = [units[c] for c in code_list]
    cols["medium"] = [media[c] for c in code_list]
    cols["source"] = [src_names[c] for c in s["source"][rows].tolist()]
    cols["k0"] = s["k0"][rows].tolist()
    cols["nchan"] = s["nchan"][rows].tolist()
    return cols


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def span(store: Store, ids) -> dict:
    """Wavelength limits (Angstrom) of spectra: ``{'w0', 'w1', 'contexts': {...}}``."""
    rows = store.rows_for(ids)
    if not len(rows):
        return {"w0": None, "w1": None, "contexts": {}}
    s = store.spectra
    per = {}
    for code in np.unique(s["ctx"][rows]):
        sel = rows[s["ctx"][rows] == code]
        per[store.context_names[code]] = {"w0": float(s["wmin"][sel].min()),
                                          "w1": float(s["wmax"][sel].max()), "n": int(len(sel))}
    return {"w0": min(v["w0"] for v in per.values()), "w1": max(v["w1"] for v in per.values()),
            "contexts": per}


def _unit_scale(src: str, dst: str) -> float:
    if src == dst:
        return 1.0
    try:
        return float(u.Unit(src).to(u.Unit(dst), equivalencies=u.spectral_density(1 * u.AA)))
    except (ValueError, u.UnitsError):
        raise InputError("ids", f"flux units {src!r} and {dst!r} cannot be aligned",
                         "retrieve the contexts separately") from None


def fetch(store: Store, ids, *, align: bool = False, cutout=None, resample: bool = False,
          values=None, max_words: int | None = None, wave_words: int = 0) -> SpectraBatch:
    """Read spectra *ids* from *store*.

    Parameters
    ----------
    ids : sequence of str
        Spectrum ids ``context:ID:TAG``.
    align : bool
        Put all spectra on one channel range of the (first) context's lattice, padding each
        where it has no data (flux 0, ivar 0, mask :data:`MASK_NODATA`); the range spans the
        lowest to highest channel of the spectra asked.
    cutout : str or (float, float), optional
        ``'w0-w1'`` Angstrom: keep the channels whose centre lies in ``[w0, w1]``, within the
        contexts' coverage; implies *align*.
    resample : bool
        Allow spectra of contexts on other lattices (another step, log/linear, air/vacuum) to
        be linearly interpolated onto the first context's lattice.  Without it such a mix is an
        error: aligning never resamples silently.
    values : sequence of str, optional
        Planes to return (default: all the contexts have).
    max_words : int, optional
        Refuse batches larger than this many 4-byte values (a service limit), checked before
        anything is read.
    wave_words : int
        Words per channel the caller's answer adds (a ``.npy`` answer's float64 wavelength
        column: 2), counted against *max_words*.
    """
    ids = list(ids)
    rows = store.rows_for(ids)
    cut = parse_cutout(cutout)
    align = bool(align or cut)
    s = store.spectra
    codes = s["ctx"][rows]
    ctx_names = [store.context_names[c] for c in dict.fromkeys(codes.tolist())]
    ctxs = [store.contexts[n] for n in ctx_names]
    have = {p for c in ctxs for p in c.planes}
    planes = tuple(p for p in PLANE_ORDER if p in have)
    if values:
        want = [v.strip().lower() for v in (values.split(",") if isinstance(values, str)
                                            else values) if v.strip()]
        bad = [v for v in want if v not in planes]
        if bad:
            raise InputError("values", f"no plane {bad[0]!r} in these spectra",
                             f"choose among: {', '.join(planes)}")
        planes = tuple(p for p in PLANE_ORDER if p in want)
    cols = _columns(store, rows, ids)
    if not align:
        return _fetch_unaligned(store, ids, rows, planes, cols, max_words, wave_words)

    target = ctxs[0] if ctxs else None
    shifts, foreign = {}, []
    for c in ctxs:
        d = target.grid.same_lattice(c.grid)
        if d is None:
            if not resample:
                raise InputError("ids", f"contexts {target.name!r} and {c.name!r} are on "
                                 f"different wavelength grids ({target.grid.describe()} vs "
                                 f"{c.grid.describe()})",
                                 "ask for resampling (resample=True, --resample) or retrieve one "
                                 "context at a time")
            foreign.append(c.name)
        shifts[c.name] = d
    # channel range on the target lattice
    if cut is not None:
        ka, kb = target.grid.channels_inside(*cut)
        cov_lo, cov_hi = [], []
        for c in ctxs:
            if shifts[c.name] is not None:
                cov_lo.append(c.kmin + shifts[c.name])
                cov_hi.append(c.kmax + shifts[c.name])
            else:
                w = _in_medium(c.grid.wave([c.kmin, c.kmax - 1]), c.grid.medium,
                               target.grid.medium)
                kf = target.grid.channel_float(w)
                cov_lo.append(int(math.floor(kf[0])))
                cov_hi.append(int(math.ceil(kf[1])) + 1)
        ka, kb = max(ka, min(cov_lo)), min(kb, max(cov_hi))
        if kb <= ka:
            lo = float(target.grid.wave(min(cov_lo)))
            hi = float(target.grid.wave(max(cov_hi) - 1))
            raise InputError("cutout", f"{cut[0]:g}-{cut[1]:g} Angstrom has no channel of these "
                             f"spectra ({lo:.2f}-{hi:.2f} Angstrom)",
                             "choose a range inside the data")
    code_shift = np.zeros(len(store.context_names), dtype=np.int64)
    code_same = np.zeros(len(store.context_names), dtype=bool)
    for c in ctxs:
        code = store.context_names.index(c.name)
        code_same[code] = shifts[c.name] is not None
        code_shift[code] = shifts[c.name] or 0
    same = code_same[codes]
    if cut is None:  # from the lowest to the highest channel of the spectra asked
        k0 = s["k0"][rows] + code_shift[codes]
        lo_list = [int(k0[same].min())] if same.any() else []
        hi_list = [int((k0 + s["nchan"][rows])[same].max())] if same.any() else []
        for r in rows[~same]:
            name = store.context_names[s["ctx"][r]]
            w = _in_medium(np.array([s["wmin"][r], s["wmax"][r]]),
                           store.contexts[name].grid.medium, target.grid.medium)
            kf = target.grid.channel_float(w)
            lo_list.append(int(math.ceil(kf[0] - 1e-9)))
            hi_list.append(int(math.floor(kf[1] + 1e-9)) + 1)
        ka, kb = (min(lo_list), max(hi_list)) if lo_list else (0, 0)
    L = max(kb - ka, 0)
    if max_words is not None and len(rows) * (len(planes) + wave_words) * L > max_words:
        raise InputError("getSpec", f"{len(rows)} spectra x {L} channels x {len(planes)} planes "
                         f"exceed the limit of {max_words} values ({4 * max_words >> 20} MiB)",
                         "ask for fewer spectra, fewer planes (values=) or a cut-out")
    if same.all() and _covers(store, rows, ka, L, shifts, planes):
        words = np.empty((len(planes), len(rows), L), dtype="<u4")  # every word gets written
    else:
        words = np.zeros((len(planes), len(rows), L), dtype="<u4")
        for j, p in enumerate(planes):
            if PAD_WORDS[p]:
                words[j] = PAD_WORDS[p]
    scale = {c.name: _unit_scale(c.flux_unit, target.flux_unit) for c in ctxs}
    _gather_aligned(store, rows[same], np.flatnonzero(same), words, planes, ka, L, shifts)
    for i in np.flatnonzero(~same):
        _resample_into(store, rows[i], words[:, i], planes, target, ka, L)
    for name, f in scale.items():
        if f != 1.0:
            sel = np.flatnonzero(codes == store.context_names.index(name))
            for j, p in enumerate(planes):
                if p in ("flux", "sky", "model", "ivar"):
                    vals = words[j, sel].view("<f4")
                    vals = vals * np.float32(f) if p != "ivar" else vals / np.float32(f * f)
                    words[j, sel] = vals.astype("<f4").view("<u4")
    cols["flux_unit"] = [target.flux_unit] * len(rows)
    info = {"context": target.name if target else None,
            "grid": target.grid.to_dict() if target else None,
            "medium": target.grid.medium if target else None,
            "flux_unit": target.flux_unit if target else None,
            "k_lo": int(ka), "k_hi": int(kb), "resampled": foreign,
            "cutout": list(cut) if cut else None}
    wave = target.grid.wave(np.arange(ka, kb)) if target else np.zeros(0)
    return SpectraBatch(ids=ids, planes=planes, aligned=True, columns=cols, wave=wave,
                        words=words, info=info)


def _block_groups(store: Store, rows):
    blocks = store.spectra["block"][rows]
    order = np.argsort(blocks, kind="stable")
    sb = blocks[order]
    cuts = np.flatnonzero(np.diff(sb)) + 1
    for grp in np.split(order, cuts):
        if len(grp):
            yield int(blocks[grp[0]]), grp


def _plane_map(store: Store, block: int, planes):
    ctx = store.contexts[store.context_names[store.blocks["ctx"][block]]]
    return [(j, ctx.planes.index(p)) for j, p in enumerate(planes) if p in ctx.planes], ctx


def _covers(store: Store, rows, ka, L, shifts, planes) -> bool:
    """True when the blocks of *rows* hold every plane of channels ``ka .. ka+L``."""
    blocks = np.unique(store.spectra["block"][rows])
    for b in blocks.tolist():
        pmap, ctx = _plane_map(store, b, planes)
        if len(pmap) != len(planes):
            return False
        kb0 = int(store.blocks["k0"][b]) + shifts[ctx.name]
        if kb0 > ka or kb0 + int(store.blocks["n"][b]) < ka + L:
            return False
    return True


def _gather_aligned(store, rows, out_pos, words, planes, ka, L, shifts):
    """Copy channels ``ka .. ka+L`` of *rows* into ``words[:, out_pos]`` (block by block)."""
    if not len(rows):
        return
    for b, grp in _block_groups(store, rows):
        pmap, ctx = _plane_map(store, b, planes)
        kb0 = int(store.blocks["k0"][b]) + shifts[ctx.name]
        n = int(store.blocks["n"][b])
        lo, hi = max(ka, kb0), min(ka + L, kb0 + n)
        if hi <= lo:
            continue
        view = store.block_view(b)
        brows = store.spectra["brow"][rows[grp]]
        dst = out_pos[grp]
        for j, p in pmap:
            words[j, dst, lo - ka:hi - ka] = view[brows, p, lo - kb0:hi - kb0]


def _row_words(store: Store, row: int, planes):
    """``(P, nchan)`` words of one spectrum over its own range, and its context."""
    s = store.spectra
    b = int(s["block"][row])
    pmap, ctx = _plane_map(store, b, planes)
    view = store.block_view(b)
    off = int(s["k0"][row] - store.blocks["k0"][b])
    n = int(s["nchan"][row])
    out = np.zeros((len(planes), n), dtype="<u4")
    for j, p in enumerate(planes):
        if PAD_WORDS[p]:
            out[j] = PAD_WORDS[p]
    src = view[int(s["brow"][row]), :, off:off + n]
    for j, p in pmap:
        out[j] = src[p]
    return out, ctx


def _fetch_unaligned(store, ids, rows, planes, cols, max_words, wave_words=0):
    total = int(store.spectra["nchan"][rows].sum()) * (len(planes) + wave_words)
    if max_words is not None and total > max_words:
        raise InputError("getSpec", f"{len(rows)} spectra hold {total} values, more than the "
                         f"limit of {max_words}", "ask for fewer spectra or a cut-out")
    waves, chunks = [], []
    for r in rows:
        w, ctx = _row_words(store, int(r), planes)
        k0 = int(store.spectra["k0"][r])
        waves.append(ctx.grid.wave(np.arange(k0, k0 + w.shape[1])))
        chunks.append(w)
    return SpectraBatch(ids=ids, planes=planes, aligned=False, columns=cols, waves=waves,
                        chunks=chunks, info={"resampled": [], "cutout": None})


def _in_medium(wave, src: str, dst: str):
    if src == dst:
        return np.asarray(wave, dtype=np.float64)
    return air_to_vacuum(wave) if dst == "vacuum" else vacuum_to_air(wave)


def _resample_into(store, row, out, planes, target, ka, L):
    """Linear interpolation of one spectrum onto the target lattice (only when asked)."""
    words, ctx = _row_words(store, int(row), planes)
    k0 = int(store.spectra["k0"][row])
    w = _in_medium(ctx.grid.wave(np.arange(k0, k0 + words.shape[1])), ctx.grid.medium,
                   target.grid.medium)
    tw = target.grid.wave(np.arange(ka, ka + L))
    inside = (tw >= w[0]) & (tw <= w[-1])
    if not inside.any():
        return
    for j, p in enumerate(planes):
        src = words[j].view(PLANE_DTYPES[p])
        dst = out[j].view(PLANE_DTYPES[p])
        if p == "mask":
            idx = np.clip(np.searchsorted(w, tw[inside]), 0, len(w) - 1)
            idx2 = np.clip(idx - 1, 0, len(w) - 1)
            dst[inside] = src[idx] | src[idx2]
        elif p == "ivar":
            with np.errstate(divide="ignore"):
                var = np.where(src > 0, 1.0 / src.astype(np.float64), np.inf)
            vi = np.interp(tw[inside], w, var)
            with np.errstate(divide="ignore"):
                dst[inside] = np.where(np.isfinite(vi), 1.0 / vi, 0.0).astype(np.float32)
        else:
            dst[inside] = np.interp(tw[inside], w, src.astype(np.float64)).astype(np.float32)

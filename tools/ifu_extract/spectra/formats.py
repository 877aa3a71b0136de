"""Output formats of retrieved spectra, and the binary wire encoding of a batch.

All formats are made from a :class:`~.access.SpectraBatch`, on the client side, whether the
batch came from a local store or over HTTP; hence identical results.

``numpy``     structured arrays with fields ``wavelength`` (Angstrom, float64), ``flux``, ``ivar``
              (float32), ``mask`` (int32) and ``sky``/``model`` where the context has them: one
              ``(L_i,)`` array per spectrum, or a single ``(n, L)`` array when aligned (row i is
              spectrum i, like the rows of an SDSS COADD table)
``arrays``    (aligned only) a dict of contiguous arrays: ``wavelength (L,)``, each plane
              ``(n, L)``, ``ids``, ``columns``: the fastest form for large batches
``pandas``    one DataFrame per spectrum
``table``     one astropy Table per spectrum, with units
``Spectrum``  specutils 2.x ``Spectrum``: flux with units, ``InverseVariance`` uncertainty, mask
              (any mask bit set); one per spectrum, or one 2-D ``(n, L)`` Spectrum when aligned
``fits``      one ``HDUList`` per spectrum (primary header with ID RA DEC Z and provenance, a
              ``SPECTRUM`` table WAVELENGTH FLUX IVAR MASK [SKY MODEL])
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from ..fitsout import add_provenance, atomic_path
from .access import SpectraBatch
from .storefile import PLANE_DTYPES

__all__ = ["FORMATS", "to_numpy", "to_arrays", "to_pandas", "to_Table", "to_Spectrum",
           "to_fits", "format_batch", "encode_batch", "decode_batch", "flux_unit", "write_tsv"]

FORMATS = ("numpy", "arrays", "pandas", "table", "spectrum", "fits")
_WIRE_MAGIC = b"IFXW1\n\0\0"


def flux_unit(text):
    """An astropy unit from a stored unit string (dimensionless when empty)."""
    if not text:
        return u.dimensionless_unscaled
    return u.Unit(text, parse_strict="silent")


def _dtype(planes) -> np.dtype:
    return np.dtype([("wavelength", "<f8")] + [(p, PLANE_DTYPES[p]) for p in planes])


def to_numpy(batch: SpectraBatch):
    """Structured arrays: a list of ``(L_i,)`` arrays, or one ``(n, L)`` array when aligned."""
    dt = _dtype(batch.planes)
    if batch.aligned:
        n, L = len(batch), len(batch.wave)
        out = np.empty((n, L), dtype=dt)
        planes = [(p, batch.plane(p)) for p in batch.planes]
        step = max(1, (1 << 21) // max(1, L * dt.itemsize))  # ~2 MB of output per chunk:
        for a in range(0, n, step):                         # fields filled while in cache
            chunk = out[a:a + step]
            chunk["wavelength"] = batch.wave
            for p, arr in planes:
                chunk[p] = arr[a:a + step]
        return out
    result = []
    for i in range(len(batch)):
        w = batch.waves[i]
        arr = np.empty(len(w), dtype=dt)
        arr["wavelength"] = w
        for p in batch.planes:
            arr[p] = batch.plane(p, i)
        result.append(arr)
    return result


def to_arrays(batch: SpectraBatch) -> dict:
    """Contiguous arrays of an aligned batch (``wavelength``, planes ``(n, L)``, ids, columns)."""
    if not batch.aligned:
        raise ValueError("fmt='arrays' needs aligned spectra: ask for align=True or a cutout")
    out = {"ids": list(batch.ids), "wavelength": np.array(batch.wave)}
    for p in batch.planes:
        out[p] = np.ascontiguousarray(batch.plane(p))
    out["columns"] = batch.columns
    out["info"] = batch.info
    return out


def _rows(data):
    """Split a numpy result into per-spectrum structured arrays."""
    if isinstance(data, np.ndarray) and data.dtype.names and data.ndim == 2:
        return [data[i] for i in range(len(data))]
    if isinstance(data, np.ndarray) and data.dtype.names:
        return [data]
    return list(data)


def to_pandas(npy_data):
    """DataFrame(s) of NumPy-format spectra: one per spectrum (a single one for one spectrum)."""
    import pandas as pd

    frames = [pd.DataFrame({k: np.asarray(r[k]) for k in r.dtype.names}) for r in _rows(npy_data)]
    if isinstance(npy_data, np.ndarray) and npy_data.ndim == 1:
        return frames[0]
    return frames


def to_Table(npy_data, flux_unit_text: str | None = None, meta: list | dict | None = None):
    """astropy Table(s) of NumPy-format spectra, with units when *flux_unit_text* is given."""
    fu = flux_unit(flux_unit_text) if flux_unit_text is not None else None
    rows = _rows(npy_data)
    metas = meta if isinstance(meta, list) else [meta] * len(rows)
    tables = []
    for r, m in zip(rows, metas):
        t = Table()
        for k in r.dtype.names:
            col = np.asarray(r[k])
            unit = None
            if k == "wavelength":
                unit = u.AA
            elif fu is not None and k in ("flux", "sky", "model"):
                unit = fu
            elif fu is not None and k == "ivar":
                unit = fu ** -2
            t[k] = col if unit is None else col * unit
        if m:
            t.meta.update(_clean_meta(m))
        tables.append(t)
    if isinstance(npy_data, np.ndarray) and npy_data.ndim == 1:
        return tables[0]
    return tables


def to_Spectrum(npy_data, flux_unit_text: str | None = None, meta: list | dict | None = None,
                medium: str | None = None):
    """specutils ``Spectrum`` (2.x) of NumPy-format spectra.

    An aligned ``(n, L)`` array gives one Spectrum with 2-D flux (spectrum, channel); a single
    ``(L,)`` array one Spectrum; a list gives a list.  Uncertainty is ``InverseVariance``;
    ``mask`` is True where any mask bit is set (bad, padding, or a survey flag).
    """
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    fu = flux_unit(flux_unit_text) if flux_unit_text is not None else u.dimensionless_unscaled

    def one(arr, m):
        wave = np.asarray(arr["wavelength"][0] if arr.ndim == 2 else arr["wavelength"])
        flux = np.asarray(arr["flux"], dtype=np.float32)
        info = {"medium": medium} if medium else {}
        if isinstance(m, dict):
            info.update(_clean_meta(m))
        elif isinstance(m, list):
            info["spectra"] = m
        for extra in ("sky", "model"):
            if extra in arr.dtype.names:
                info[extra] = np.asarray(arr[extra]) * fu
        return Spectrum(flux=flux * fu, spectral_axis=wave * u.AA,
                        uncertainty=InverseVariance(np.asarray(arr["ivar"]) * fu ** -2),
                        mask=np.asarray(arr["mask"]) != 0, meta=info)

    if isinstance(npy_data, np.ndarray) and npy_data.dtype.names:
        return one(npy_data, meta)
    metas = meta if isinstance(meta, list) else [meta] * len(npy_data)
    return [one(a, m) for a, m in zip(npy_data, metas)]


def _finite(x):
    """A header value: the number, or None (an undefined card) when missing."""
    return None if x is None or not np.isfinite(x) else float(x)


def _clean_meta(m: dict) -> dict:
    """Row facts for Table/Spectrum meta: missing numbers dropped."""
    return {k: v for k, v in m.items()
            if v is not None and not (isinstance(v, float) and not np.isfinite(v))}


def to_fits(batch: SpectraBatch) -> list[fits.HDUList]:
    """One FITS HDUList per spectrum of *batch*."""
    out = []
    for i, m in enumerate(batch.meta):
        fu = m.get("flux_unit") or ""
        h = fits.Header()
        h["ID"] = (m["id"], "object ID")
        h["RA"] = (_finite(m["ra"]), "RA u.degree")
        h["DEC"] = (_finite(m["dec"]), "DEC u.degree")
        h["Z"] = (_finite(m["z"]), "redshift")
        h["SPECID"] = m["specid"]  # context:ID:TAG (no comment: long ids fill the card)
        h["CONTEXT"] = (m["context"], "spectra context")
        h["TAG"] = (m["tag"], "spectrum tag")
        h["AIRORVAC"] = ("air" if m["medium"] == "air" else "vac", "wavelength medium")
        h["SRCFILE"] = (str(m.get("source", ""))[:60], "file the spectrum was ingested from")
        add_provenance(h, "spectra get")
        cols = [fits.Column(name="WAVELENGTH", format="D", unit="Angstrom",
                            array=batch.wavelength(i))]
        for p in batch.planes:
            arr = batch.plane(p, i)
            unit = {"flux": fu, "sky": fu, "model": fu, "ivar": f"({fu})**-2" if fu else ""}.get(
                p, "")
            cols.append(fits.Column(name=p.upper(), format="J" if p == "mask" else "E",
                                    unit=unit or None, array=arr))
        tab = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
        out.append(fits.HDUList([fits.PrimaryHDU(header=h), tab]))
    return out


def format_batch(batch: SpectraBatch, fmt: str):
    """Convert a batch to format *fmt* (see the module documentation); always a list or, when
    aligned for numpy/Spectrum, one array/Spectrum."""
    fmt = (fmt or "numpy").lower()
    if fmt.startswith("spectrum"):
        fmt = "spectrum"
    if fmt in ("tables", "astropy"):
        fmt = "table"
    fu = batch.columns["flux_unit"][0] if len(batch) else None
    medium = batch.info.get("medium") or (batch.columns["medium"][0] if len(batch) else None)
    if fmt == "numpy":
        return to_numpy(batch)
    if fmt == "arrays":
        return to_arrays(batch)
    if fmt == "pandas":
        return to_pandas(to_numpy(batch)) if batch.aligned else [to_pandas(a) for a in
                                                                 to_numpy(batch)]
    if fmt == "table":
        data = to_numpy(batch)
        if batch.aligned:
            return to_Table(data, fu, batch.meta)
        return [to_Table(a, m["flux_unit"], m) for a, m in zip(data, batch.meta)]
    if fmt == "spectrum":
        data = to_numpy(batch)
        if batch.aligned:
            return to_Spectrum(data, fu, batch.meta, medium)
        return [to_Spectrum(a, m["flux_unit"], m, m["medium"]) for a, m in zip(data, batch.meta)]
    if fmt == "fits":
        return to_fits(batch)
    raise ValueError(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")


# -- wire encoding -------------------------------------------------------------------------------
def encode_batch(batch: SpectraBatch) -> list[bytes]:
    """Binary form of a batch: magic, JSON header, raw little-endian arrays (as buffers)."""
    arrays = []
    if batch.aligned:
        arrays = [("wave", np.ascontiguousarray(batch.wave, dtype="<f8")),
                  ("words", np.ascontiguousarray(batch.words, dtype="<u4"))]
        lengths = None
    else:
        lengths = [len(w) for w in batch.waves]
        arrays = [("waves", np.concatenate(batch.waves).astype("<f8") if lengths else
                   np.zeros(0, "<f8")),
                  ("chunks", np.concatenate(batch.chunks, axis=1).astype("<u4") if lengths else
                   np.zeros((len(batch.planes), 0), "<u4"))]
    columns = {}
    for name, values in batch.columns.items():  # numbers as arrays, repeated text as codes
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in values):
            kind = "i8" if all(isinstance(v, int) for v in values) else "f8"
            arrays.append((f"col:{name}", np.asarray(values, dtype=f"<{kind}")))
            columns[name] = {"array": f"col:{name}"}
        else:
            uniq = list(dict.fromkeys(values))
            if len(uniq) * 4 <= len(values):
                index = {v: i for i, v in enumerate(uniq)}
                arrays.append((f"col:{name}", np.array([index[v] for v in values], "<u4")))
                columns[name] = {"values": uniq, "codes": f"col:{name}"}
            else:
                columns[name] = {"list": values}
    specs, offset = [], 0
    for name, arr in arrays:
        specs.append([name, arr.dtype.str, list(arr.shape), offset, arr.nbytes])
        offset += arr.nbytes
    head = json.dumps({"ids": batch.ids, "planes": list(batch.planes), "aligned": batch.aligned,
                       "columns": columns, "info": batch.info, "lengths": lengths,
                       "arrays": specs}).encode()
    head += b" " * ((-len(head)) % 8)
    return [_WIRE_MAGIC, struct.pack("<Q", len(head)), head] + [memoryview(a).cast("B")
                                                                 for _, a in arrays]


def decode_batch(data: bytes) -> SpectraBatch:
    """Inverse of :func:`encode_batch` (arrays are views of *data*)."""
    if data[:8] != _WIRE_MAGIC:
        raise ValueError("not an ifu-extract spectra batch")
    (hlen,) = struct.unpack_from("<Q", data, 8)
    head = json.loads(bytes(data[16:16 + hlen]))
    base = 16 + hlen
    arrs = {}
    for name, dtype, shape, offset, nbytes in head["arrays"]:
        dt = np.dtype(dtype)
        arrs[name] = np.frombuffer(data, dtype=dt, count=nbytes // dt.itemsize,
                                   offset=base + offset).reshape(shape)
    columns = {}
    for name, spec in head["columns"].items():
        if "array" in spec:
            columns[name] = arrs[spec["array"]].tolist()
        elif "codes" in spec:
            uniq = spec["values"]
            columns[name] = [uniq[c] for c in arrs[spec["codes"]].tolist()]
        else:
            columns[name] = spec["list"]
    b = SpectraBatch(ids=head["ids"], planes=tuple(head["planes"]), aligned=head["aligned"],
                     columns=columns, info=head["info"])
    if b.aligned:
        b.wave, b.words = arrs["wave"], arrs["words"]
    else:
        cuts = np.cumsum(head["lengths"])[:-1] if head["lengths"] else []
        b.waves = np.split(arrs["waves"], cuts)
        b.chunks = np.split(arrs["chunks"], cuts, axis=1)
    return b


def write_tsv(ids, data, path) -> None:
    """Write NumPy-format spectra as one tab-separated table (Galaxy ``tabular``): a header
    line, then one row per spectrum and channel: ``specid wavelength <planes>``."""
    rows = _rows(data)
    names = [n for n in rows[0].dtype.names] if rows else ["wavelength"]
    with atomic_path(path, suffix=".tsv") as tmp, open(tmp, "w") as fh:
        fh.write("\t".join(["specid"] + names) + "\n")
        for sid, arr in zip(ids, rows):
            cols = [np.asarray(arr[n]) for n in names]
            for k in range(len(arr)):
                fh.write("\t".join([sid] + [repr(float(c[k])) if c.dtype.kind == "f" else
                                              str(int(c[k])) for c in cols]) + "\n")


def npy_bytes(arr: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (for images sent over HTTP)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    """Inverse of :func:`npy_bytes` (no pickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)

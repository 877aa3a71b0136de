"""Ingest spectra into a store: MPDAF Source files, SDSS ``spec-*`` files and summary tables.

Readers
-------
MPDAF ``Source`` FITS
    Every ``SPE_<TAG>_DATA`` extension (with ``SPE_<TAG>_STAT`` as variance when present) is one
    spectrum ``context:ID:TAG``; ID, RA and DEC come from the primary header, z from its ``Z``
    keyword or the ``Z`` table.  Linear grids from ``CRVAL1/CDELT1|CD1_1/CRPIX1/CUNIT1``;
    ``CTYPE1`` ``AWAV`` is air, ``WAVE`` vacuum.
SDSS ``spec-*`` files (SDSS data model)
    HDU 1 ``COADD`` table (``loglam flux ivar and_mask sky model``), HDU 2 ``SPECOBJ`` table
    (``PLUG_RA PLUG_DEC Z`` and ``SPECOBJID`` or ``PLATE MJD FIBERID``); one spectrum
    ``context:SPECOBJID:COADD`` on the vacuum log10 lattice of step 1e-4 dex; ``and_mask`` bits
    are kept in the mask plane, ``sky`` and ``model`` as planes.
Summary tables (``summary.tsv``)
    Tab-separated with a header that has an ``ID`` column; every other column becomes a
    catalogue column usable in constraints (``status = 'ok'``).

Contexts
--------
A spectrum goes to ``--context NAME`` when given (it must fit that context's lattice), else to
the first existing context with its lattice, layout and a convertible flux unit, else to a new
context named after them (``mpdaf_air_linear_1p25``, ``sdss_vacuum_log10_0p0001``).

Idempotence and interruption
----------------------------
A spectrum already stored with the same content is skipped; with new content it supersedes the
stored one.  Work is committed every ``commit_every`` files: a killed ingest loses at most the
files since its last commit, and running it again stores every spectrum exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from ..catalog import safe_id
from ..errors import ParameterError
from ..fitsio import is_fits
from ..sourcefile import ext_name, tags_of
from .grid import Grid, GridMismatch
from .skyindex import hpx_of
from .storefile import (MASK_BAD, PAD_WORDS, PLANE_DTYPES, Context, StoreWriter,
                        keys64, spectrum_key)

__all__ = ["SpectrumIn", "IngestReport", "ingest", "read_fits_spectra", "read_source_file",
           "read_sdss_file", "read_summary", "detect_kind", "SDSS_FLUX_UNIT"]

SDSS_FLUX_UNIT = "1e-17 erg / (Angstrom s cm2)"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_CONTEXT_OK = re.compile(r"^[a-z0-9_]{1,40}$")
_UNIT_SCALE = {"angstrom": 1.0, "a": 1.0, "aa": 1.0, "nm": 10.0, "um": 1e4, "micron": 1e4,
               "m": 1e10, "cm": 1e8}


@dataclass
class SpectrumIn:
    """One spectrum read from an input file, before it is placed on a context lattice.

    ``planes`` maps plane name to a 1-D array (flux/ivar/sky/model float32, mask int32), all of
    the same length; ``first`` and ``step`` are in Angstrom (linear) or dex (log10).
    """

    obj_id: str
    tag: str
    ra: float
    dec: float
    z: float
    kind: str
    first: float
    step: float
    medium: str
    flux_unit: str
    layout: str
    planes: dict
    source: str
    k0: int = 0
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def nchan(self) -> int:
        return len(self.planes["flux"])


@dataclass
class IngestReport:
    """What an ingest did (counts, and one line per problem)."""

    files: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    objects: int = 0
    commits: int = 0
    dropped_bytes: int = 0
    problems: list = field(default_factory=list)
    contexts: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line for people."""
        ctx = ", ".join(f"{k} ({v})" for k, v in sorted(self.contexts.items())) or "none"
        line = (f"{self.files} file(s): {self.added} spectra added, {self.updated} updated, "
                f"{self.unchanged} already stored, {self.objects} summary rows; contexts: {ctx}")
        if self.dropped_bytes:
            line += f"; dropped {self.dropped_bytes} bytes left by an interrupted ingest"
        if self.problems:
            line += f"; {len(self.problems)} problem(s)"
        return line


# -- readers -----------------------------------------------------------------------------------
def detect_kind(path: Path) -> str:
    """``'fits'``, ``'summary'`` (text with an ID column) or ``'unknown'``, from the content."""
    with open(path, "rb") as fh:
        head = fh.read(2880)
    if is_fits(head):
        return "fits"
    try:
        first = head.decode("utf-8").splitlines()[0] if head else ""
    except UnicodeDecodeError:
        return "unknown"
    cells = [c.strip().lstrip("#").strip().lower() for c in first.split("\t")]
    return "summary" if len(cells) > 1 and "id" in cells else "unknown"


def read_fits_spectra(path) -> list["SpectrumIn"]:
    """Spectra of a FITS file, opened once: an MPDAF Source or an SDSS spec file.

    Raises
    ------
    ValueError
        When the file is neither (or is malformed), with the reason.
    """
    path = Path(path)
    with fits.open(path, memmap=True) as hdul:
        names = [h.name.upper() for h in hdul]
        if tags_of(names, "SPE"):
            return _source_from_hdul(hdul, names, path.name)
        if len(hdul) > 2 and isinstance(hdul[1], fits.BinTableHDU):
            cols = {c.lower() for c in hdul[1].columns.names}
            if {"loglam", "flux", "ivar"} <= cols:
                return _sdss_from_hdul(hdul, path.name)
    raise ValueError(f"{path.name}: neither an MPDAF Source (SPE_*_DATA extensions) nor an SDSS "
                     "spec file (COADD table with loglam, flux, ivar)")


def _wave_axis(hdr, where: str):
    ctype = str(hdr.get("CTYPE1", "AWAV")).strip().upper()
    if ctype.endswith("-LOG") or ctype.endswith("-TAB"):
        raise ValueError(f"{where}: wavelength axis {ctype} is not supported (linear only)")
    medium = "vacuum" if ctype.startswith("WAVE") or ctype.startswith("VWAV") else "air"
    step = hdr.get("CDELT1", hdr.get("CD1_1"))
    if step is None or "CRVAL1" not in hdr:
        raise ValueError(f"{where}: no wavelength WCS (CRVAL1, CDELT1 or CD1_1)")
    unit = str(hdr.get("CUNIT1", "Angstrom")).strip().lower()
    if unit not in _UNIT_SCALE:
        raise ValueError(f"{where}: unknown wavelength unit {unit!r}")
    f = _UNIT_SCALE[unit]
    crpix = float(hdr.get("CRPIX1", 1.0))
    first = (float(hdr["CRVAL1"]) + (1.0 - crpix) * float(step)) * f
    return first, float(step) * f, medium


def _flux_unit(text) -> str:
    if not text:
        return ""
    try:
        return u.Unit(str(text).strip(), parse_strict="raise").to_string()
    except ValueError:
        return str(text).strip()


def _valid_name(value, what: str, where: str) -> str:
    text = safe_id(value)
    if not _NAME_OK.match(text):
        raise ValueError(f"{where}: {what} {text!r} must be 1-64 letters, digits or _.+-")
    return text


def _finite_or_nan(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _planes_from_flux_var(flux, var):
    flux = np.asarray(flux, dtype=np.float64)
    bad = ~np.isfinite(flux)
    if var is None:
        ivar = np.zeros(flux.shape)
    else:
        var = np.asarray(var, dtype=np.float64)
        good = np.isfinite(var) & (var > 0)
        ivar = np.zeros(flux.shape)
        ivar[good] = 1.0 / var[good]
        bad |= ~good
    mask = np.where(bad, MASK_BAD, 0).astype(np.int32)
    return {"flux": np.where(bad, 0.0, flux).astype(np.float32),
            "ivar": np.where(bad, 0.0, ivar).astype(np.float32), "mask": mask}


def read_source_file(path) -> list[SpectrumIn]:
    """All spectra of an MPDAF Source file (one per ``SPE_<TAG>_DATA`` extension)."""
    path = Path(path)
    with fits.open(path, memmap=True) as hdul:
        return _source_from_hdul(hdul, [h.name.upper() for h in hdul], path.name)


def _source_from_hdul(hdul, names, fname) -> list[SpectrumIn]:
    out = []
    path = Path(fname)
    h0 = hdul[0].header
    if "ID" not in h0:
        raise ValueError(f"{path.name}: no ID in the primary header (not an MPDAF Source)")
    obj_id = _valid_name(h0["ID"], "object ID", path.name)
    ra, dec = _finite_or_nan(h0.get("RA")), _finite_or_nan(h0.get("DEC"))
    z = _finite_or_nan(h0.get("Z"))
    if math.isnan(z) and "Z" in hdul and isinstance(hdul["Z"], fits.BinTableHDU):
        zt = hdul["Z"].data
        if zt is not None and len(zt) and "Z" in zt.columns.names:
            zs = [_finite_or_nan(v) for v in zt["Z"]]
            zs = [v for v in zs if not math.isnan(v)]
            z = zs[0] if zs else math.nan
    for raw_tag in tags_of(names, "SPE"):
        name = ext_name("SPE", raw_tag)
        tag = _valid_name(raw_tag, "spectrum tag", path.name)
        hdu = hdul[name]
        data = hdu.data
        if data is None or data.ndim != 1:
            raise ValueError(f"{path.name}: {name} is not a 1-D spectrum")
        first, step, medium = _wave_axis(hdu.header, f"{path.name}[{name}]")
        var = None
        stat = ext_name("SPE", raw_tag, "STAT")
        if stat in names and hdul[stat].data is not None:
            var = hdul[stat].data
            if var.shape != data.shape:
                raise ValueError(f"{path.name}: {stat} and {name} differ in length")
        out.append(SpectrumIn(obj_id=obj_id, tag=tag, ra=ra, dec=dec, z=z, kind="linear",
                              first=first, step=step, medium=medium,
                              flux_unit=_flux_unit(hdu.header.get("BUNIT")),
                              layout="mpdaf-source", planes=_planes_from_flux_var(data, var),
                              source=path.name))
    if not out:
        raise ValueError(f"{path.name}: no SPE_*_DATA spectrum in this Source file")
    return out


def _col(table, *names):
    lower = {c.lower(): c for c in table.columns.names}
    for n in names:
        if n.lower() in lower:
            return table[lower[n.lower()]]
    return None


def read_sdss_file(path) -> list[SpectrumIn]:
    """The coadded spectrum of an SDSS ``spec-*`` file (SDSS data model)."""
    path = Path(path)
    with fits.open(path, memmap=True) as hdul:
        return _sdss_from_hdul(hdul, path.name)


def _sdss_from_hdul(hdul, fname) -> list[SpectrumIn]:
    path = Path(fname)
    coadd = hdul["COADD"].data if "COADD" in hdul else hdul[1].data
    spo = hdul["SPECOBJ"].data if "SPECOBJ" in hdul else hdul[2].data
    loglam = np.asarray(_col(coadd, "loglam"), dtype=np.float64)
    if len(loglam) < 2:
        raise ValueError(f"{path.name}: COADD has fewer than 2 channels")
    h0 = hdul[0].header
    if "COEFF0" in h0 and "COEFF1" in h0:
        first, step = float(h0["COEFF0"]), float(h0["COEFF1"])
    else:
        first = float(loglam[0])
        step = float(f"{(loglam[-1] - loglam[0]) / (len(loglam) - 1):.6g}")
    expect = first + step * np.arange(len(loglam))
    if np.max(np.abs(loglam - expect)) > 0.02 * step:
        raise ValueError(f"{path.name}: loglam is not evenly spaced")
    flux = np.asarray(_col(coadd, "flux"), dtype=np.float64)
    ivar = np.asarray(_col(coadd, "ivar"), dtype=np.float64)
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    and_mask = _col(coadd, "and_mask")
    mask = (np.asarray(and_mask, dtype=np.int64) & (MASK_BAD - 1) if and_mask is not None
            else np.zeros(len(flux), dtype=np.int64))
    mask = (mask | np.where(bad, MASK_BAD, 0)).astype(np.int32)
    planes = {"flux": np.where(bad, 0, flux).astype(np.float32),
              "ivar": np.where(bad, 0, ivar).astype(np.float32), "mask": mask}
    for extra in ("sky", "model"):
        col = _col(coadd, extra)
        planes[extra] = (np.nan_to_num(np.asarray(col, dtype=np.float64)).astype(np.float32)
                         if col is not None else np.zeros(len(flux), dtype=np.float32))
    row = spo[0]
    names = {c.lower() for c in spo.columns.names}
    specobjid = str(row["SPECOBJID"]).strip() if "specobjid" in names else ""
    if specobjid and specobjid not in ("0", ""):
        obj_id = specobjid
    else:
        obj_id = f"{int(row['PLATE']):04d}-{int(row['MJD']):05d}-{int(row['FIBERID']):04d}"
    obj_id = _valid_name(obj_id, "object ID", path.name)
    ra = _finite_or_nan(row["PLUG_RA"]) if "plug_ra" in names else _finite_or_nan(
        h0.get("PLUG_RA"))
    dec = _finite_or_nan(row["PLUG_DEC"]) if "plug_dec" in names else _finite_or_nan(
        h0.get("PLUG_DEC"))
    z = _finite_or_nan(row["Z"]) if "z" in names else math.nan
    return [SpectrumIn(obj_id=obj_id, tag="COADD", ra=ra, dec=dec, z=z, kind="log10",
                       first=first, step=step, medium="vacuum", flux_unit=SDSS_FLUX_UNIT,
                       layout="sdss-spec", planes=planes, source=path.name)]


def read_summary(path) -> dict[str, np.ndarray]:
    """A summary table as typed columns: ``id`` (bytes) plus one column per other header name
    (lower case; numbers as float64 with NaN for missing, text as UTF-8 bytes)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path.name}: empty summary table")
    header = [c.strip().lstrip("#").strip() for c in lines[0].split("\t")]
    rows = list(csv.reader(lines[1:], delimiter="\t"))
    names = [re.sub(r"[^a-z0-9_]", "_", h.lower()) or f"col{i + 1}" for i, h in enumerate(header)]
    if "id" not in names:
        raise ValueError(f"{path.name}: the summary table has no ID column")
    cols = {}
    for j, name in enumerate(names):
        if name in cols:
            continue
        cells = [(r[j].strip() if j < len(r) else "") for r in rows]
        if name == "id":
            cols["id"] = np.array([safe_id(c).encode() for c in cells], dtype="S")
            continue
        missing = {"", "--", "nan", "NaN", "null", "NULL", "None", "N/A"}
        try:
            cols[name] = np.array([math.nan if c in missing else float(c) for c in cells])
        except ValueError:
            cols[name] = np.array([c.encode("utf-8") for c in cells], dtype="S")
    keep = np.array([len(i) > 0 for i in cols["id"]], dtype=bool)
    return {k: v[keep] for k, v in cols.items()}


# -- placing spectra in contexts ---------------------------------------------------------------
def _auto_name(sp: SpectrumIn) -> str:
    family = "sdss" if sp.layout == "sdss-spec" else "mpdaf"
    step = f"{sp.step:.6g}".replace(".", "p").replace("-", "m").replace("+", "")
    return f"{family}_{sp.medium}_{sp.kind}_{step}".lower()


def _compatible_unit(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        u.Unit(a).to(u.Unit(b))
        return True
    except (ValueError, u.UnitsError):
        return False


def _choose_context(writer: StoreWriter, sp: SpectrumIn, name: str | None) -> tuple[str, int]:
    """Context name and first channel of *sp*; creates the context when needed."""
    grid_of = Grid(kind=sp.kind, start=sp.first, step=sp.step, medium=sp.medium)
    if name is not None:
        ctx = writer.contexts.get(name)
        if ctx is None:
            _new_context(writer, name, sp, grid_of)
            return name, 0
        if not _compatible_unit(sp.flux_unit, ctx.flux_unit) and sp.flux_unit and ctx.flux_unit:
            raise GridMismatch(f"flux unit {sp.flux_unit!r} cannot be converted to the context "
                               f"unit {ctx.flux_unit!r}")
        if sp.layout != ctx.layout:
            raise GridMismatch(f"a {sp.layout} spectrum does not fit context {name} "
                               f"({ctx.layout})")
        return name, ctx.grid.locate(sp.first, sp.step, sp.kind, sp.medium)
    for cname in sorted(writer.contexts):
        ctx = writer.contexts[cname]
        if ctx.layout != sp.layout or not _compatible_unit(sp.flux_unit, ctx.flux_unit):
            continue
        try:
            return cname, ctx.grid.locate(sp.first, sp.step, sp.kind, sp.medium)
        except GridMismatch:
            continue
    base = _auto_name(sp)
    cname, i = base, 2
    while cname in writer.contexts:
        cname, i = f"{base}_{i}", i + 1
    _new_context(writer, cname, sp, grid_of)
    return cname, 0


def _new_context(writer, name, sp: SpectrumIn, grid: Grid):
    planes = ("flux", "ivar", "mask") + tuple(p for p in ("sky", "model") if p in sp.planes)
    writer.define_context(Context(name=name, grid=grid, flux_unit=sp.flux_unit, planes=planes,
                                  layout=sp.layout, kmin=0, kmax=sp.nchan))


def _content_hash(sp: SpectrumIn, scale: float) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{sp.ra!r},{sp.dec!r},{sp.z!r},{sp.first!r},{sp.step!r},{scale!r}".encode())
    for name in sorted(sp.planes):
        h.update(name.encode())
        h.update(np.ascontiguousarray(sp.planes[name]).tobytes())
    return int.from_bytes(h.digest(), "little")


def _group_blocks(items: list[SpectrumIn]) -> list[list[SpectrumIn]]:
    """Group spectra into blocks sharing a channel range, wasting at most half in padding."""
    groups, cur, lo, hi, total = [], [], 0, 0, 0
    for sp in sorted(items, key=lambda s: (s.k0, s.nchan)):
        nlo, nhi = (min(lo, sp.k0), max(hi, sp.k0 + sp.nchan)) if cur else (sp.k0,
                                                                            sp.k0 + sp.nchan)
        if cur and (nhi - nlo) * (len(cur) + 1) > 1.5 * (total + sp.nchan):
            groups.append(cur)
            cur, total = [], 0
            nlo, nhi = sp.k0, sp.k0 + sp.nchan
        cur.append(sp)
        lo, hi, total = nlo, nhi, total + sp.nchan
    if cur:
        groups.append(cur)
    return groups


def _write_blocks(writer: StoreWriter, context: str, items: list[SpectrumIn]):
    ctx = writer.contexts[context]
    for group in _group_blocks(items):
        lo = min(s.k0 for s in group)
        n = max(s.k0 + s.nchan for s in group) - lo
        words = np.zeros((len(group), len(ctx.planes), n), dtype="<u4")
        for j, p in enumerate(ctx.planes):
            if PAD_WORDS[p]:
                words[:, j, :] = PAD_WORDS[p]
        for i, sp in enumerate(group):
            a = sp.k0 - lo
            for j, p in enumerate(ctx.planes):
                arr = sp.planes.get(p)
                if arr is None:
                    continue
                words[i, j, a:a + sp.nchan] = np.asarray(arr, dtype=PLANE_DTYPES[p]).view("<u4")
        rows = {k: [] for k in ("id", "tag", "specid", "key", "content", "ra", "dec", "z",
                                "k0", "nchan", "wmin", "wmax", "snr", "source", "retire")}
        for sp in group:
            m = sp.meta
            rows["id"].append(sp.obj_id)
            rows["tag"].append(sp.tag)
            rows["specid"].append(m["specid"])
            rows["key"].append(m["key"])
            rows["content"].append(m["content"])
            rows["ra"].append(sp.ra)
            rows["dec"].append(sp.dec)
            rows["z"].append(sp.z)
            rows["k0"].append(sp.k0)
            rows["nchan"].append(sp.nchan)
            rows["wmin"].append(float(ctx.grid.wave(sp.k0)))
            rows["wmax"].append(float(ctx.grid.wave(sp.k0 + sp.nchan - 1)))
            rows["snr"].append(_snr(sp.planes))
            rows["source"].append(sp.source)
            rows["retire"].append(m["retire"])
        cols = {k: np.array(v) for k, v in rows.items()}
        cols["key"] = np.array(rows["key"], dtype=np.uint64)
        cols["content"] = np.array(rows["content"], dtype=np.uint64)
        cols["hpx"] = hpx_of(cols["ra"], cols["dec"])
        cols["retire"] = np.array(rows["retire"], dtype=np.int64)
        writer.add_block(context, lo, words, cols)


def _snr(planes) -> float:
    good = (planes["mask"] == 0) & (planes["ivar"] > 0)
    if not good.any():
        return math.nan
    return float(np.median(planes["flux"][good] * np.sqrt(planes["ivar"][good])))


# -- the ingest ---------------------------------------------------------------------------------
def _expand(paths) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()
                              and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def ingest(paths, store, *, summaries=(), names=None, context: str | None = None,
           commit_every: int = 200, progress=None) -> IngestReport:
    """Ingest Source files, SDSS spec files and summary tables into *store*.

    Parameters
    ----------
    paths : sequence of path
        Files (kind detected from the content) or folders (searched recursively).
    store : path
        The store file; created when missing (an empty file is a new store).
    summaries : sequence of path
        Summary tables (``summary.tsv``), read as such whatever their content looks like.
    names : sequence of str, optional
        The names recorded as the spectra's source file, one per path of *paths* (which must
        then all be files), e.g. the names Galaxy users gave their datasets; default: the file
        names.
    context : str, optional
        Put every spectrum in this context (``[a-z0-9_]``); default: chosen by grid.
    commit_every : int
        Commit after this many input files (an interrupted ingest loses at most these).
    progress : callable, optional
        Called with each input path after it is read.

    Returns
    -------
    IngestReport
        Counts, and one line per file or spectrum that could not be ingested (never raised:
        one bad file does not stop the batch).
    """
    if context is not None and not _CONTEXT_OK.match(context):
        raise ParameterError(None, "{context}: " + f"{context!r} is not a valid context name",
                             "use 1-40 lower-case letters, digits or _", params=("context",))
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise ParameterError(None, f"{{names}}: {len(names)} names for {len(paths)} files",
                                 "give one name per file, in the same order", params=("names",))
        for p in paths:
            if Path(p).is_dir():
                raise ParameterError(p, "is a folder, which cannot be given a name",
                                     "give files with {names}", params=("names",))
    # (path, forced kind or None, recorded name or None)
    files = ([(f, None, None) for f in _expand(paths)] if names is None
             else [(Path(p), None, n) for p, n in zip(paths, names)])
    files += [(Path(p), "summary", None) for p in summaries]
    if not files:
        raise ParameterError(None, "{paths}: no input files",
                             "give Source/spec FITS files or folders, or summary tables",
                             params=("paths",))
    report = IngestReport()
    with StoreWriter(store) as writer:
        report.dropped_bytes = writer.dropped_bytes
        pending: dict[str, dict[str, SpectrumIn]] = {}
        n_since = 0

        def flush():
            for cname, items in pending.items():
                _write_blocks(writer, cname, list(items.values()))
            pending.clear()
            writer.commit()
            report.commits = writer.commits

        for path, forced, name in files:
            report.files += 1
            try:
                kind = forced or detect_kind(path)
            except OSError as exc:
                report.problems.append(f"{path}: cannot read ({exc.strerror or exc})")
                continue
            try:
                if kind == "summary":
                    digest = hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
                    if digest in writer.summaries:
                        spectra = []  # this very table is already in the store
                    else:
                        cols = read_summary(path)
                        writer.add_objects(cols, digest)
                        report.objects += len(cols["id"])
                        spectra = []
                elif kind == "fits":
                    spectra = read_fits_spectra(path)
                    for sp in spectra if name is not None else ():
                        sp.source = name
                else:
                    report.problems.append(f"{path}: neither an MPDAF Source, an SDSS spec file "
                                           "nor a summary table (with an ID column)")
                    continue
            except Exception as exc:  # noqa: BLE001 - one bad file is one problem line
                report.problems.append(f"{path}: {exc}")
                continue
            for sp in spectra:
                try:
                    cname, k0 = _choose_context(writer, sp, context)
                except GridMismatch as exc:
                    where = f"context {context}" if context else "any context"
                    report.problems.append(f"{path}: {sp.tag}: does not fit {where}: {exc}")
                    continue
                ctx = writer.contexts[cname]
                scale = 1.0
                if sp.flux_unit and ctx.flux_unit and sp.flux_unit != ctx.flux_unit:
                    scale = float(u.Unit(sp.flux_unit).to(u.Unit(ctx.flux_unit)))
                    for p in ("flux", "sky", "model"):
                        if p in sp.planes:
                            sp.planes[p] = (sp.planes[p] * np.float32(scale)).astype(np.float32)
                    sp.planes["ivar"] = (sp.planes["ivar"] / np.float32(scale ** 2)).astype(
                        np.float32)
                sp.k0 = k0
                specid = spectrum_key(cname, sp.obj_id, sp.tag)
                key = int(keys64([specid])[0])
                content = _content_hash(sp, scale)
                status = writer.status(key, content)
                if status == "same":
                    report.unchanged += 1
                    continue
                sp.meta = {"specid": specid, "key": key, "content": content,
                            "retire": writer.row_of(key) if status == "changed" else -1}
                items = pending.setdefault(cname, {})
                if specid in items:  # listed twice in one run: the last one wins
                    report.added -= 1
                items[specid] = sp
                if status == "changed":
                    report.updated += 1
                else:
                    report.added += 1
                if k0 < ctx.kmin or k0 + sp.nchan > ctx.kmax:
                    writer.define_context(Context(name=cname, grid=ctx.grid,
                                                  flux_unit=ctx.flux_unit, planes=ctx.planes,
                                                  layout=ctx.layout, kmin=min(ctx.kmin, k0),
                                                  kmax=max(ctx.kmax, k0 + sp.nchan)))
                report.contexts[cname] = report.contexts.get(cname, 0) + 1
            n_since += 1
            if progress is not None:
                progress(path)
            if n_since >= commit_every:
                flush()
                n_since = 0
        flush()
    return report

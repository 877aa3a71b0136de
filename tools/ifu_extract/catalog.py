"""Object catalogues in the formats IFU users have: read by content, validated, written.

Formats read (``fmt``):

``autospec``  whitespace text, ``#ID RA DEC [SIZE REF]`` header, ``(int) (deg)`` unit line
``muselet``   whitespace text with a bare header line, ``--`` for missing values (mpdaf ``cat.txt``)
``csv``       comma-separated with a header
``tsv``       tab-separated with a header (Galaxy ``tabular``)
``ecsv``      astropy ECSV
``fits``      first binary/ASCII table HDU

The format is detected from the content (Galaxy names every file ``.dat``) unless given.
Column names are matched case-insensitively, with the usual aliases (``ALPHA_J2000``,
``X_WORLD``, ``NUMBER``...).  A row whose coordinates cannot be read is kept with a status
explaining why: one bad row never stops a batch.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from .errors import OK, InputError, ParameterError
from .fitsio import file_head, is_fits
from .fitsout import atomic_path

__all__ = ["read_catalog", "write_catalog", "merge_catalogs", "FORMATS", "catalog_from_position", "safe_id",
           "is_number"]

FORMATS = ("auto", "autospec", "muselet", "csv", "tsv", "ecsv", "fits")
_ALIASES = {
    "ID": ("ID", "NUMBER", "OBJ_ID", "OBJID", "SOURCE_ID", "SRC_ID", "IDENT", "NAME"),
    "RA": ("RA", "ALPHA_J2000", "RA_DEG", "X_WORLD", "RAJ2000", "RA_J2000", "ALPHA"),
    "DEC": ("DEC", "DELTA_J2000", "DEC_DEG", "Y_WORLD", "DEJ2000", "DEC_J2000", "DELTA", "DE"),
}
_MISSING = {"", "--", "nan", "NaN", "NAN", "null", "NULL", "None", "-", "N/A", "n/a"}
# Letters and digits of any script (\w), dot, plus, minus: no spaces, separators or quotes.
_ID_OK = re.compile(r"^[\w.+-]+$")
_STEM_OK = re.compile(r"^[A-Za-z0-9_.+-]+$")


def safe_id(value) -> str:
    """An object ID as text usable in file names (``<ID>.fits``)."""
    text = str(value).strip()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        text = str(int(value))
    return text


def file_stem(obj_id) -> str:
    """The file-name stem of an object: its ID when ASCII, else an ASCII form made unique.

    ``<stem>.fits`` and ``<stem>_stamps.png`` are safe in every file system, archive and Galaxy
    collection; the ID itself is kept in the files' headers and in the summary.
    """
    text = str(obj_id)
    if _STEM_OK.match(text):
        return text
    import hashlib
    import unicodedata

    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    plain = re.sub(r"[^A-Za-z0-9_.+-]", "_", plain).strip("._") or "id"
    return f"{plain}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"



def file_column(path, base) -> str:
    """*path* as a summary table's ``FILE`` column names it: relative to the table's folder
    *base* when inside it (``sources/<stem>.fits``), else as it is."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel.startswith("..") else Path(rel).as_posix()

def _sniff(path: Path) -> str:
    head = file_head(path, 65536)
    if is_fits(head):
        return "fits"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "is neither text nor FITS",
                         "give a text (CSV, TSV, whitespace) or FITS table catalogue") from None
    if text.lstrip().startswith("# %ECSV"):
        return "ecsv"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    data_lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    probe = data_lines[:5] or lines[:1]
    if probe and all("\t" in ln for ln in probe):
        return "tsv"
    if probe and all("," in ln for ln in probe):
        return "csv"
    if lines and lines[0].lstrip().startswith("#"):
        return "autospec"
    return "muselet"


def _rows_from_text(path: Path, fmt: str) -> tuple[list[str] | None, list[list[str]]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    header = None
    rows: list[list[str]] = []
    if fmt in ("csv", "tsv"):
        delim = "," if fmt == "csv" else "\t"
        lines = [ln for ln in text.splitlines() if ln.strip()]
        parsed = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
        for cells in parsed:
            cells = [c.strip() for c in cells]
            if cells and cells[0].startswith("#"):
                if header is None and len(cells) > 1:
                    cells[0] = cells[0].lstrip("#").strip()
                    header = cells
                continue
            if header is None and not is_number(cells[0]):
                header = cells
                continue
            rows.append(cells)
        return header, rows
    for ln in text.splitlines():
        s = ln.strip()
        if not s:
            continue
        if s.startswith("#"):
            words = s.lstrip("#").split()
            # The first commented line of words is the header; "(int) (deg)" unit lines are not.
            if header is None and words and not all(w.startswith("(") for w in words):
                header = words
            continue
        words = s.split()
        if all(w.startswith("(") and w.endswith(")") for w in words):
            continue  # AutoSpec's units line "(int) (deg) (deg) (arcsec) (str)", commented or not
        if header is None and not is_number(words[0]):
            header = words
            continue
        rows.append(words)
    return header, rows


def is_number(s: str) -> bool:
    """Whether the text *s* reads as a number (``float`` accepts it: ``nan`` and ``1e3`` do)."""
    try:
        float(s)
        return True
    except ValueError:
        return False


def _table_from_rows(path, header, rows) -> Table:
    if not rows:
        raise InputError(path, "has no catalogue rows", "give at least one object (ID RA DEC)")
    width = max(len(r) for r in rows)
    if header is None:
        header = ["ID", "RA", "DEC", "SIZE", "REF"][:width] + [f"COL{i}" for i in range(6, width + 1)]
    if len(header) < width:
        header = list(header) + [f"COL{i}" for i in range(len(header) + 1, width + 1)]
    cols = {}
    for j, name in enumerate(header):
        cells = [r[j] if j < len(r) else "" for r in rows]
        cols[name] = _column(cells)
    return Table(cols)


def _column(cells: list[str]):
    missing = np.array([c in _MISSING for c in cells])
    present = [c for c, m in zip(cells, missing) if not m]
    if present and all(is_number(c) for c in present):
        if all(re.fullmatch(r"[+-]?\d+", c) for c in present):
            values = np.array([int(c) if not m else 0 for c, m in zip(cells, missing)], dtype=np.int64)
        else:
            values = np.array([float(c) if not m else np.nan for c, m in zip(cells, missing)])
        return MaskedColumn(values, mask=missing) if missing.any() else values
    return MaskedColumn(np.array(cells, dtype=str), mask=missing) if missing.any() else np.array(cells)


def _find_column(table: Table, canonical: str) -> str | None:
    upper = {c.upper(): c for c in table.colnames}
    for alias in _ALIASES[canonical]:
        if alias in upper:
            return upper[alias]
    return None


def _coords(values, is_ra: bool):
    """Parse one coordinate column to degrees; sexagesimal accepted. Bad cells are NaN."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is np.ma.masked:
            continue
        if isinstance(v, (int, float, np.integer, np.floating)):
            out[i] = float(v)
            continue
        s = str(v).strip()
        if is_number(s):
            out[i] = float(s)
        elif re.fullmatch(r"[+-]?\d{1,3}[:hd ]\d{1,2}[:m' ]\d{1,2}(\.\d*)?s?\"?", s):
            try:
                ang = Angle(s, unit=u.hourangle if is_ra else u.deg)
                out[i] = ang.to_value(u.deg)
            except (ValueError, u.UnitsError):
                pass
    return out


def read_catalog(path, fmt: str = "auto") -> Table:
    """Read and validate an object catalogue.

    Parameters
    ----------
    path : str or os.PathLike
        Catalogue file.
    fmt : str
        One of :data:`FORMATS`; ``"auto"`` detects it from the content.

    Returns
    -------
    astropy.table.Table
        Columns ``ID`` (text), ``RA``, ``DEC`` (deg, NaN where unreadable), ``STATUS``
        (``"ok"`` or why the row cannot be used), then every other input column (``SIZE``,
        ``REF``, ``Z``...) under its original name.  ``meta['format']`` records the format.

    Raises
    ------
    InputError
        Unreadable file, no rows, missing ID/RA/DEC columns, no row with valid coordinates,
        duplicate IDs.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such catalogue file", "check the path")
    if fmt not in FORMATS:
        raise InputError(f"--catalog-format {fmt}", "unknown catalogue format",
                         f"use one of {', '.join(FORMATS)}")
    fmt = _sniff(path) if fmt == "auto" else fmt
    try:
        if fmt == "fits":
            with fits.open(path) as hdul:
                tab_hdu = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))),
                               None)
                if tab_hdu is None:
                    raise InputError(path, "is a FITS file without a table extension",
                                     "give a FITS binary table or a text catalogue")
                table = Table(tab_hdu.data)
        elif fmt == "ecsv":
            table = Table.read(path, format="ascii.ecsv")
        else:
            table = _table_from_rows(path, *_rows_from_text(path, fmt))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - parsers raise many kinds
        raise InputError(path, f"cannot be read as a {fmt} catalogue ({str(exc).splitlines()[0]})",
                         "check the file, or give --catalog-format") from None
    if len(table) == 0:
        raise InputError(path, "has no catalogue rows", "give at least one object (ID RA DEC)")
    names = {k: _find_column(table, k) for k in ("ID", "RA", "DEC")}
    missing = [k for k, v in names.items() if v is None]
    if missing:
        raise InputError(path, f"has no {'/'.join(missing)} column (columns: "
                         f"{', '.join(table.colnames)})",
                         "name the columns ID, RA, DEC (degrees) in a header line")
    ra = _coords(table[names["RA"]], True)
    dec = _coords(table[names["DEC"]], False)
    ids = [safe_id(v) if v is not np.ma.masked else "" for v in table[names["ID"]]]
    status = []
    for i, obj in enumerate(ids):
        if not obj or not _ID_OK.match(obj):
            status.append("bad_id: ID is empty or has characters not allowed in file names")
        elif not np.isfinite(ra[i]) or not np.isfinite(dec[i]):
            status.append("bad_coordinates: RA/DEC is not a number")
        elif not (0 <= ra[i] <= 360 and -90 <= dec[i] <= 90):
            status.append("bad_coordinates: RA/DEC out of range (degrees expected)")
        else:
            status.append(OK)
    if not any(s == OK for s in status):
        raise InputError(path, f"has no row with a valid ID, RA and DEC ({status[0]})",
                         "give RA and DEC in decimal degrees (or hh:mm:ss / dd:mm:ss)")
    seen = {}
    for obj in ids:
        seen[obj] = seen.get(obj, 0) + 1
    dup = sorted(k for k, n in seen.items() if n > 1 and k)
    if dup:
        raise InputError(path, f"has duplicate IDs ({', '.join(dup[:5])})",
                         "give every object its own ID")
    out = Table()
    out["ID"] = np.array(ids, dtype=str)
    out["RA"] = ra * u.deg
    out["DEC"] = dec * u.deg
    out["STATUS"] = np.array(status, dtype=object).astype(str)
    skip = {names["ID"], names["RA"], names["DEC"], "STATUS"}
    for name in table.colnames:
        if name not in skip:
            out[name.upper() if name.upper() in ("SIZE", "REF", "Z") else name] = table[name]
    out.meta["format"] = fmt
    out.meta["path"] = str(path)
    return out


def catalog_from_position(ra: float, dec: float, obj_id: str = "1") -> Table:
    """A one-row catalogue for ``--ra/--dec`` options."""
    tab = Table({"ID": [obj_id], "RA": [float(ra)] * u.deg, "DEC": [float(dec)] * u.deg,
                 "STATUS": [OK]})
    if not (0 <= ra <= 360 and -90 <= dec <= 90):
        raise ParameterError("{ra}/{dec}", f"({ra}, {dec}) is not a sky position in degrees",
                         "give RA in [0, 360] and Dec in [-90, 90]", params=("ra", "dec"))
    tab.meta["format"] = "position"
    return tab


def _output_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return {".fits": "fits", ".fit": "fits", ".ecsv": "ecsv", ".csv": "csv"}.get(suffix, "tsv")


def write_catalog(table: Table, path, fmt: str = "auto") -> Path:
    """Write *table* atomically as FITS, ECSV, CSV or TSV (chosen by *fmt* or the suffix).

    TSV (the default, Galaxy's ``tabular``) has one header line of column names and no comment
    lines, so that astropy (``format='ascii.tab'``), pandas and Galaxy all read it.
    """
    path = Path(path)
    fmt = _output_format(path, fmt)
    table = table.copy(copy_data=False)
    for name in table.colnames:  # text formats cannot hold masks portably
        col = table[name]
        if fmt != "ecsv" and hasattr(col, "mask") and np.any(col.mask):
            fill = np.nan if col.dtype.kind == "f" else ("" if col.dtype.kind in "US" else -1)
            table[name] = col.filled(fill)
    with atomic_path(path, suffix={"fits": ".fits", "ecsv": ".ecsv", "csv": ".csv"}.get(fmt, ".tsv")) as tmp:
        if fmt == "fits":
            table.write(tmp, format="fits", overwrite=True)
        elif fmt == "ecsv":
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        elif fmt == "csv":
            table.write(tmp, format="ascii.csv", overwrite=True)
        elif fmt in ("tsv", "tabular"):
            table.write(tmp, format="ascii.tab", overwrite=True)
        else:
            raise InputError(f"--catalog-format {fmt}", "unknown output format",
                             "use fits, ecsv, csv or tsv")
    return path


def merge_catalogs(catalog: Table, detections: Table, radius_arcsec: float) -> Table:
    """Add to *catalog* the detections that match none of its objects within *radius_arcsec*.

    Catalogue rows (and IDs) always win; a detection within the radius of a catalogue object is
    that object.  New objects get integer IDs after the largest integer catalogue ID (or
    ``D<n>`` when the catalogue IDs are not integers) and ``SOURCE = 'detect'``.

    Parameters
    ----------
    catalog : astropy.table.Table
        From :func:`read_catalog`.
    detections : astropy.table.Table
        With ``RA``, ``DEC`` (deg), e.g. from ``detect``.
    radius_arcsec : float
    """
    out = catalog.copy()
    # Fixed-width text columns would silently truncate longer new values.
    out["ID"] = np.asarray(out["ID"]).astype("U64")
    out["STATUS"] = np.asarray(out["STATUS"]).astype("U200")
    if "SOURCE" not in out.colnames:
        out["SOURCE"] = np.array(["catalog"] * len(out), dtype="U8")
    good = np.isfinite(np.asarray(detections["RA"], float)) & np.isfinite(np.asarray(detections["DEC"], float))
    det = detections[good]
    if len(det) == 0:
        return out
    ok = np.asarray(out["STATUS"]) == OK
    new_mask = np.ones(len(det), dtype=bool)
    if ok.any():
        cat_c = SkyCoord(np.asarray(out["RA"], float)[ok] * u.deg, np.asarray(out["DEC"], float)[ok] * u.deg)
        det_c = SkyCoord(np.asarray(det["RA"], float) * u.deg, np.asarray(det["DEC"], float) * u.deg)
        _, sep, _ = det_c.match_to_catalog_sky(cat_c)
        new_mask = sep.to_value(u.arcsec) > radius_arcsec
    ints = [int(i) for i in out["ID"] if str(i).lstrip("-").isdigit()]
    all_int = len(ints) == len(out)
    start = (max(ints) + 1) if all_int and ints else 1
    rows = []
    for k, row in enumerate(det[new_mask]):
        new_id = str(start + k) if all_int else f"D{k + 1}"
        rows.append((new_id, float(row["RA"]), float(row["DEC"])))
    given = {"ID", "RA", "DEC", "STATUS", "SOURCE"}
    if rows:
        out = Table(out, masked=True)  # other columns of detected objects are missing values
    for new_id, ra, dec in rows:
        vals = {c: _blank_like(out[c]) for c in out.colnames}
        vals.update({"ID": new_id, "RA": ra, "DEC": dec, "STATUS": OK, "SOURCE": "detect"})
        out.add_row([vals[c] for c in out.colnames], mask=[c not in given for c in out.colnames])
    return out


def _blank_like(col):
    kind = col.dtype.kind
    if kind == "f":
        return np.nan
    if kind in "iu":
        return 0
    if kind == "b":
        return False
    return ""

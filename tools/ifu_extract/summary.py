"""The summary table (``summary.tsv``): one row per catalogue object, the one home of its layout.

``extract`` writes it (:func:`write_summary`, typed values formatted once), ``report`` and
``merge`` read it as text (:func:`read_summary`: values are kept as written, so that IDs such as
``007`` stay text and a merged table repeats its parts' cells exactly), ``merge`` writes the
concatenation (:func:`write_summary_text`), and ``--resume`` rebuilds rows from the Source files,
whose primary headers carry the same values (``NSPAX NSKY SNRTAG SNRMED WFLUX WFLUXERR STATUS``;
:func:`row_from_header`, :func:`summary_from_sources`).

Columns (:data:`SUMMARY_COLUMNS`)
    ``ID RA DEC`` (degrees), ``STATUS`` (``ok``, a fallback, or why the object failed),
    ``N_SPAXELS N_SKY`` (spaxels of the object and sky masks), ``SNR_TAG SNR_MEDIAN`` (the
    spectrum whose median S/N per channel is given), ``WHITE_FLUX WHITE_FLUX_ERR`` (white-light
    flux in the object mask, in ``FLUX_UNIT``), ``MASKUSED`` (``union`` or ``inter``), ``FILE``
    (``sources/<ID>.fits`` relative to the table's folder; empty when no file was written),
    ``NOTES``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .catalog import write_catalog
from .errors import OK, InputError
from .fitsout import ascii_unescape, atomic_path

__all__ = ["SUMMARY_COLUMNS", "REQUIRED_COLUMNS", "SUMMARY_NAME", "row_result", "row_from_header",
           "summary_from_sources", "write_summary", "read_summary", "write_summary_text",
           "missing_row", "index_sources", "status_group"]

#: File name of the table in an output folder.
SUMMARY_NAME = "summary.tsv"
#: Columns, in order, as ``extract`` writes them.
SUMMARY_COLUMNS = ("ID", "RA", "DEC", "STATUS", "N_SPAXELS", "N_SKY", "SNR_TAG", "SNR_MEDIAN",
                   "WHITE_FLUX", "WHITE_FLUX_ERR", "FLUX_UNIT", "MASKUSED", "FILE", "NOTES")
#: Column types of :func:`write_summary` (same order).
_DTYPES = (str, float, float, str, int, int, str, float, float, float, str, str, str, str)
#: Columns without which a table is not a summary (:func:`read_summary`).
REQUIRED_COLUMNS = ("ID", "STATUS", "FILE")


# ----------------------------------------------------------------------------- rows
def row_result(row, status: str, **values) -> dict:
    """The summary row of a catalogue *row* (``ID RA DEC``) with *status*; *values* fill the
    other columns (unset ones are 0, NaN or empty)."""
    out = {"ID": str(row["ID"]), "RA": float(row["RA"]), "DEC": float(row["DEC"]), "STATUS": status,
           "N_SPAXELS": 0, "N_SKY": 0, "SNR_TAG": "", "SNR_MEDIAN": float("nan"),
           "WHITE_FLUX": float("nan"), "WHITE_FLUX_ERR": float("nan"), "FLUX_UNIT": "",
           "MASKUSED": "", "FILE": "", "NOTES": ""}
    out.update(values)
    return out


def row_from_header(hdr: fits.Header, fname: str, row=None) -> dict:
    """The summary row stored in a Source file's primary header *hdr*.

    Parameters
    ----------
    hdr : astropy.io.fits.Header
    fname : str
        The ``FILE`` value (``sources/<ID>.fits``).
    row : dict, optional
        Catalogue row giving ``ID RA DEC`` (default: the header's ``ID RA DEC``).
    """
    base = row or {"ID": ascii_unescape(str(hdr["ID"])), "RA": hdr["RA"], "DEC": hdr["DEC"]}

    def num(k):
        v = hdr.get(k, "nan")
        return float(v) if v not in ("nan", None, "") else float("nan")

    return row_result(base, str(hdr.get("STATUS", OK)), N_SPAXELS=int(hdr.get("NSPAX", 0)),
                      N_SKY=int(hdr.get("NSKY", 0)), SNR_TAG=str(hdr.get("SNRTAG", "")),
                      SNR_MEDIAN=num("SNRMED"), WHITE_FLUX=num("WFLUX"), WHITE_FLUX_ERR=num("WFLUXERR"),
                      FLUX_UNIT=str(hdr.get("BUNIT", "")), MASKUSED=str(hdr.get("MASKUSED", "")),
                      FILE=fname, NOTES=str(hdr.get("NOTES", "")))


def summary_from_sources(sources_dir) -> list[dict]:
    """Summary rows rebuilt from the Source files ``*.fits`` of a folder, in file-name order.

    An unreadable file is a row with status ``failed: unreadable Source file``.
    """
    rows = []
    for path in sorted(Path(sources_dir).glob("*.fits")):
        try:
            hdr = fits.getheader(path, 0)
        except Exception:  # noqa: BLE001 - a corrupt file is listed as such
            rows.append(row_result({"ID": path.stem, "RA": np.nan, "DEC": np.nan},
                                   "failed: unreadable Source file"))
            continue
        row = row_from_header(hdr, f"sources/{path.name}")
        if not row["FLUX_UNIT"]:
            with fits.open(path) as hdul:
                spe = next((h for h in hdul if h.name.startswith("SPE_") and h.name.endswith("_DATA")), None)
                row["FLUX_UNIT"] = "" if spe is None else str(spe.header.get("BUNIT", ""))
        rows.append(row)
    return rows


def missing_row(columns, obj_id: str, ra: float, dec: float) -> dict:
    """The text row of a catalogue object found in no merged folder (status ``missing``)."""
    defaults = {"ID": obj_id, "RA": f"{ra:.7f}" if np.isfinite(ra) else "nan",
                "DEC": f"{dec:.7f}" if np.isfinite(dec) else "nan",
                "STATUS": "missing: in no merged output folder", "N_SPAXELS": "0", "N_SKY": "0",
                "SNR_MEDIAN": "nan", "WHITE_FLUX": "nan", "WHITE_FLUX_ERR": "nan"}
    return {c: defaults.get(c, "") for c in columns}


def index_sources(paths, *, unique: bool = False) -> dict[str, list[Path]]:
    """``{ID: [paths]}`` of Source files, from the ``ID`` of their primary headers (given order).

    How Source files given as files (Galaxy datasets, whose names say nothing) are matched to
    summary and catalogue rows.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
    unique : bool
        Refuse two files of one ID (else both are listed, for the caller to compare).

    Raises
    ------
    InputError
        A file that is not FITS, has no ``ID`` keyword, or (*unique*) repeats another's ID.
    """
    out: dict[str, list[Path]] = {}
    for p in map(Path, paths or ()):
        try:
            value = fits.getheader(p, 0).get("ID")
        except (OSError, ValueError) as exc:
            raise InputError(p, f"is not a readable FITS file ({exc})".rstrip("."),
                             "give the Source files of extract or run") from None
        if value is None:
            raise InputError(p, "has no ID keyword, so it is not a Source file",
                             "give the Source files of extract or run")
        obj_id = ascii_unescape(str(value))
        if unique and obj_id in out:
            raise InputError(p, f"has ID {obj_id}, as {out[obj_id][0]} has",
                             "give each object's Source file once")
        out.setdefault(obj_id, []).append(p)
    return out


def status_group(row: dict) -> str:
    """``"ok"``, ``"flag"`` (a fallback or warning; spectrum written) or ``"failed"`` (none)."""
    status = str(row.get("STATUS", "")).strip()
    if not str(row.get("FILE", "")).strip() or status.startswith(("failed", "missing")):
        return "failed"
    return "ok" if status == OK else "flag"


# ----------------------------------------------------------------------------- files
def write_summary(rows: list[dict], path) -> Path:
    """Write typed summary rows (TSV, one row per catalogue ID, in catalogue order), atomically.

    RA/DEC get 7 decimals, ``SNR_MEDIAN`` 3, the white-light flux and error 6 significant digits.
    """
    tab = Table(rows=[[r[c] for c in SUMMARY_COLUMNS] for r in rows], names=SUMMARY_COLUMNS,
                dtype=_DTYPES) if rows else Table(names=SUMMARY_COLUMNS, dtype=_DTYPES)
    for col in ("RA", "DEC"):
        tab[col].format = ".7f"
    for col in ("SNR_MEDIAN",):
        tab[col].format = ".3f"
    for col in ("WHITE_FLUX", "WHITE_FLUX_ERR"):
        tab[col].format = ".6g"
    return write_catalog(tab, path, "tsv")


def read_summary(path) -> tuple[list[str], list[dict]]:
    """Read a summary table as text: its column names and one ``{column: text}`` dict per row.

    Values are kept as written (IDs such as ``007`` stay text, numbers are not parsed).

    Raises
    ------
    InputError
        Missing or unreadable file, or no ``ID``/``STATUS``/``FILE`` column.
    """
    path = Path(path)
    if not path.is_file():
        if path.name == SUMMARY_NAME:   # the folder convention: name the folder
            raise InputError(path.parent, f"has no {SUMMARY_NAME}",
                             "give a folder written by 'ifu-extract extract', 'run' or 'merge'")
        raise InputError(path, "does not exist", "give the summary table written by 'ifu-extract "
                         "extract', 'run' or 'merge'")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = [ln for ln in csv.reader(fh, delimiter="\t") if any(c.strip() for c in ln)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot be read ({exc})", "re-create it with 'ifu-extract extract'") from None
    if not lines:
        raise InputError(path, "is empty", "re-create it with 'ifu-extract extract'")
    columns = [c.strip() for c in lines[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(path, f"is not an ifu-extract summary (no {'/'.join(missing)} column)",
                         "give the summary.tsv written by 'ifu-extract extract'")
    rows = []
    for cells in lines[1:]:
        cells = list(cells) + [""] * (len(columns) - len(cells))
        rows.append({c: cells[i] for i, c in enumerate(columns)})
    return columns, rows


def write_summary_text(columns, rows: list[dict], dest) -> Path:
    """Write text rows (as :func:`read_summary` gives them) under *columns*, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([r.get(c, "") for c in columns])
    with atomic_path(dest, suffix=".tsv") as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")
    return Path(dest)

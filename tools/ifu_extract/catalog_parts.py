"""A large catalogue processed in parts: split the catalogue, then merge the parts' results.

``split_catalog`` cuts a catalogue into *K* consecutive parts of near-equal size (sizes differ by
at most one row), in catalogue order, with the IDs untouched.  Text catalogues (AutoSpec, MUSELET,
CSV, TSV) are split line by line, so every part keeps the header, comment and unit lines and the
exact text of its rows; FITS and ECSV tables keep their columns, units and metadata.  Each part
can then be extracted on its own (another machine, another Galaxy job).

``merge_parts`` combines the results of the parts (output folders, :func:`folder_parts`, or
summary tables and Source files given as files, :func:`file_parts`): it copies (or hard-links)
the Source files into one ``OUTDIR/sources`` and concatenates the summaries (in the order of the
parts given, or of the original catalogue with ``catalog=``); the ``merge`` step then rebuilds
the QA report.  It refuses, in one line and before writing anything, parts made from different
cubes (the ``CUBECSUM`` fingerprint of the Source files) and an ID present in two parts with
different results; an ID present twice with identical results is kept once.

For results identical to a single run, build the masks once on the whole catalogue and extract
each part with them (``ifu-extract extract PART --masks MASKS.fits``): masks depend on the
neighbouring catalogue objects, which a part alone does not know.
"""

from __future__ import annotations

import csv
import filecmp
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .catalog import is_number, read_catalog, safe_id, write_catalog
from .errors import InputError, ParameterError, warn_object
from .fitsout import atomic_path, ensure_dir
from .summary import SUMMARY_NAME, index_sources, missing_row, read_summary, write_summary_text

__all__ = ["SPLIT_FORMATS", "LINK_MODES", "SplitPart", "Part", "MergeResult", "split_catalog",
           "folder_parts", "file_parts", "merge_parts", "part_names", "place_file"]

log = logging.getLogger("ifu_extract")

#: Output formats of :func:`split_catalog`: ``same`` keeps the input's.
SPLIT_FORMATS = ("same", "tsv", "csv", "ecsv", "fits")
#: How :func:`merge_parts` puts the Source files in the merged folder.
LINK_MODES = ("copy", "hardlink")
_SUFFIX = {"tsv": ".tsv", "csv": ".csv", "ecsv": ".ecsv", "fits": ".fits"}
# Cards that differ between two runs of the same object (dates, file names, checksums).
_VOLATILE = {"DATE", "CHECKSUM", "DATASUM", "HISTORY", "COMMENT", "IFXIMAGE"}


# ----------------------------------------------------------------------------- split
@dataclass
class SplitPart:
    """One part written by :func:`split_catalog`.

    Attributes
    ----------
    path : pathlib.Path
    n_rows : int
    first_id, last_id : str
        IDs of its first and last rows.
    """

    path: Path
    n_rows: int
    first_id: str
    last_id: str


def _bounds(n_rows: int, n_parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of *n_parts* consecutive parts; the first ``n_rows % n_parts`` are one longer."""
    k, r = divmod(n_rows, n_parts)
    out, start = [], 0
    for i in range(n_parts):
        stop = start + k + (1 if i < r else 0)
        out.append((start, stop))
        start = stop
    return out


def part_names(stem: str, suffix: str, n_parts: int) -> list[str]:
    """File names of the parts: ``<stem>_part01<suffix>``... (zero-padded so they sort in order)."""
    width = max(2, len(str(n_parts)))
    return [f"{stem}_part{i:0{width}d}{suffix}" for i in range(1, n_parts + 1)]


def _text_lines(path: Path, fmt: str) -> tuple[list[str], list[str]] | None:
    """Preamble lines (header, units, comments before the first row) and row lines of a text
    catalogue, classified as :func:`~ifu_extract.catalog.read_catalog` reads them; None when a
    row spans several lines (quoted newlines)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    preamble, rows = [], []
    header = False
    delim = {"csv": ",", "tsv": "\t"}.get(fmt)
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if not s:
            continue
        if not line.endswith(("\n", "\r")):
            line += "\n"
        if delim is not None:
            cells = next(csv.reader([s], delimiter=delim), [])
            if s.count('"') % 2:
                return None
            cells = [c.strip() for c in cells]
            if cells and cells[0].startswith("#"):
                if not header and len(cells) > 1:
                    header = True
                if not rows:
                    preamble.append(line)
                continue
            if not header and cells and not is_number(cells[0]):
                header = True
                preamble.append(line)
                continue
        else:
            if s.startswith("#"):
                words = s.lstrip("#").split()
                if not header and words and not all(w.startswith("(") for w in words):
                    header = True
                if not rows:
                    preamble.append(line)
                continue
            words = s.split()
            if not header and not is_number(words[0]):
                header = True
                preamble.append(line)
                continue
        rows.append(line)
    return preamble, rows


def _check_parts(n_parts: int, n_rows: int, path) -> None:
    if n_parts < 1:
        raise ParameterError("{n_parts}", f"{n_parts} parts asked", "ask for at least 1",
                             params=("n_parts",))
    if n_parts > n_rows:
        raise InputError(path, f"has {n_rows} catalogue rows, fewer than the {n_parts} parts asked",
                         f"ask for {n_rows} parts or fewer")


def split_catalog(catalog, n_parts: int, outdir, *, fmt: str = "auto", output_format: str = "same",
                  prefix: str | None = None, suffix: str | None = None) -> list[SplitPart]:
    """Split a catalogue into *n_parts* consecutive parts of near-equal size.

    Parameters
    ----------
    catalog : str or os.PathLike
        Any catalogue :func:`~ifu_extract.catalog.read_catalog` reads.
    n_parts : int
        Number of parts, 1 to the number of rows.
    outdir : str or os.PathLike
        Folder for the parts (created).
    fmt : str
        Input format (:data:`~ifu_extract.catalog.FORMATS`; ``auto`` detects it).
    output_format : str
        One of :data:`SPLIT_FORMATS`: ``same`` keeps the input's format and text (header,
        comments, the rows' own text), else the parts are written as TSV, CSV, ECSV or FITS
        tables of the columns read (RA/DEC in degrees).
    prefix : str, optional
        Stem of the part names ``<prefix>_partNN.<ext>`` (default: the input's stem).
    suffix : str, optional
        File-name suffix of the parts, e.g. ``.tabular`` (default: the input's suffix with
        ``same``, else the format's: ``.tsv``, ``.csv``, ``.ecsv``, ``.fits``).

    Returns
    -------
    list of SplitPart
        In catalogue order; part *i* holds rows ``sum(sizes[:i])`` to ``sum(sizes[:i+1]) - 1``.

    Raises
    ------
    InputError
        Unreadable catalogue, *n_parts* out of range, unknown format.  Nothing is written then.
    """
    path = Path(catalog)
    name_suffix = suffix      # (the branches below set the format's own suffix)
    if output_format not in SPLIT_FORMATS:
        raise ParameterError("{output_format}", f"unknown format {output_format!r}",
                             f"use one of {', '.join(SPLIT_FORMATS)}", params=("output_format",))
    table = read_catalog(path, fmt)
    n_rows = len(table)
    _check_parts(int(n_parts), n_rows, path)
    in_fmt = table.meta.get("format", fmt)
    ids = [str(v) for v in table["ID"]]
    bounds = _bounds(n_rows, int(n_parts))
    stem = prefix or path.stem or "catalog"
    blobs: list[tuple[str, object]] = []  # (suffix, writer(dest))
    lines = None
    if output_format == "same" and in_fmt in ("autospec", "muselet", "csv", "tsv"):
        lines = _text_lines(path, in_fmt)
        if lines is not None and len(lines[1]) != n_rows:
            lines = None
        if lines is None:
            log.info(f"{path.name}: rows not one per line; parts written as TSV tables")
    if lines is not None:
        preamble, rows = lines
        suffix = path.suffix or ".txt"
        for a, b in bounds:
            text = "".join(preamble + rows[a:b])
            blobs.append((suffix, lambda dest, text=text: Path(dest).write_text(text, encoding="utf-8")))
    elif output_format == "same" and in_fmt == "fits":
        suffix = path.suffix or ".fits"
        with fits.open(path) as hdul:
            idx = next(i for i, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU)))
            primary = hdul[0].header.copy()
            head = hdul[idx].header.copy()
            data = hdul[idx].data.copy()
        for a, b in bounds:
            def write_fits(dest, a=a, b=b):
                hdu = _table_hdu_class(head)(data=data[a:b], header=head)
                fits.HDUList([fits.PrimaryHDU(header=primary), hdu]).writeto(dest, overwrite=True)
            blobs.append((suffix, write_fits))
    else:
        out_fmt = in_fmt if output_format == "same" and in_fmt == "ecsv" else (
            "tsv" if output_format == "same" else output_format)
        suffix = path.suffix if (output_format == "same" and in_fmt == "ecsv" and path.suffix) \
            else _SUFFIX[out_fmt]
        if out_fmt == "ecsv" and in_fmt == "ecsv":
            source = Table.read(path, format="ascii.ecsv")
        else:
            source = table.copy()
            source.remove_column("STATUS")
        source.meta.pop("path", None)
        for a, b in bounds:
            part = source[a:b]
            blobs.append((suffix, lambda dest, part=part, f=out_fmt: write_catalog(part, dest, f)))
    ensure_dir(outdir)
    names = part_names(stem, name_suffix or (blobs[0][0] if blobs else ".tsv"), len(blobs))
    written: list[Path] = []
    try:
        for name, (tmp_suffix, writer), (a, b) in zip(names, blobs, bounds):
            dest = Path(outdir) / name
            with atomic_path(dest, suffix=tmp_suffix) as tmp:
                writer(tmp)
            written.append(dest)
    except BaseException:
        for p in written:  # no partial set of parts
            p.unlink(missing_ok=True)
        raise
    return [SplitPart(p, b - a, ids[a], ids[b - 1]) for p, (a, b) in zip(written, bounds)]


def _table_hdu_class(header: fits.Header):
    """``BinTableHDU`` or ``TableHDU`` (ASCII) for a table header."""
    return fits.TableHDU if str(header.get("XTENSION", "")).strip() == "TABLE" else fits.BinTableHDU


# ----------------------------------------------------------------------------- merge
@dataclass
class MergeResult:
    """What :func:`merge_parts` did.

    Attributes
    ----------
    outdir : pathlib.Path
    n_rows : int
        Rows of the merged summary.
    n_sources : int
        Source files copied or linked.
    duplicates : list of str
        IDs found in several folders with identical results (kept once).
    missing : list of str
        Catalogue IDs (``catalog=``) found in no folder (listed with status ``missing``).
    """

    outdir: Path
    n_rows: int
    n_sources: int
    duplicates: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def _same_source(a: Path, b: Path) -> bool:
    """True when two Source files hold the same data (dates and file names aside)."""
    if filecmp.cmp(a, b, shallow=False):
        return True
    try:
        with fits.open(a) as ha, fits.open(b) as hb:
            if [h.name for h in ha] != [h.name for h in hb]:
                return False
            for x, y in zip(ha, hb):
                ka = {c.keyword: c.value for c in x.header.cards
                      if c.keyword not in _VOLATILE and not c.keyword.startswith("IFXIN")}
                kb = {c.keyword: c.value for c in y.header.cards
                      if c.keyword not in _VOLATILE and not c.keyword.startswith("IFXIN")}
                if ka != kb:
                    return False
                if (x.data is None) != (y.data is None):
                    return False
                if x.data is not None and not np.array_equal(np.asarray(x.data), np.asarray(y.data),
                                                             equal_nan=True):
                    return False
    except Exception:  # noqa: BLE001 - unreadable: not provably the same
        return False
    return True


def _cube_of(path: Path) -> tuple[str, str] | None:
    """``(CUBECSUM, CUBE)`` of a Source file, None when unreadable or unmarked."""
    try:
        hdr = fits.getheader(path, 0)
    except Exception:  # noqa: BLE001 - corrupt files are shown by the report
        return None
    csum = str(hdr.get("CUBECSUM", "")).strip()
    return (csum, str(hdr.get("CUBE", "")).strip()) if csum else None


def place_file(src: Path, dest: Path, link: str = "copy") -> None:
    """Put *src* at *dest*: a copy (atomic), or a hard link (a copy across file systems)."""
    if link == "hardlink":
        try:
            dest.unlink(missing_ok=True)
            os.link(src, dest)
            return
        except OSError:
            pass  # another file system: copy
    with atomic_path(dest, suffix=".fits") as tmp:
        shutil.copyfile(src, tmp)


@dataclass
class Part:
    """The results of one catalogue part: its summary table and where its Source files are.

    Attributes
    ----------
    name : str
        Short name (a folder's name), in the notes of rows whose Source file is missing.
    label : str
        How error messages name the part (its folder, or its summary table).
    summary : pathlib.Path
    folder : pathlib.Path or None
        Output folder whose ``FILE`` paths the Source files are at; None when *sources* is.
    sources : dict or None
        ``{ID: [Source files]}`` given as files (:func:`~ifu_extract.summary.index_sources`).
    """

    name: str
    label: str
    summary: Path
    folder: Path | None = None
    sources: dict | None = None

    def source(self, row: dict) -> Path | None:
        """The Source file of a summary *row* (None when it names none); it may not exist."""
        fname = row.get("FILE", "").strip()
        if not fname:
            return None
        if self.folder is not None:
            return self.folder / fname
        found = (self.sources or {}).get(row["ID"])
        return found[0] if found else Path(fname)


def folder_parts(inputs) -> list[Part]:
    """The parts of output folders (``summary.tsv`` and ``sources/`` in each).

    Raises
    ------
    InputError
        No folder, a path that is not a folder, a folder given twice.
    """
    dirs = [Path(p) for p in inputs]
    if not dirs:
        raise InputError(None, "no output folder to merge", "give one or more OUTDIR")
    seen = set()
    for d in dirs:
        if not d.is_dir():
            raise InputError(d, "is not a folder", "give output folders of 'ifu-extract extract' or 'run'")
        if d.resolve() in seen:
            raise InputError(d, "is given twice", "give each folder once")
        seen.add(d.resolve())
    return [Part(d.name, str(d), d / SUMMARY_NAME, folder=d) for d in dirs]


def file_parts(summaries, sources) -> list[Part]:
    """The parts of summary tables given as files, with the Source files of all of them.

    The Source files are matched to the rows by the ``ID`` of their primary header, so they
    may be given in any order; two files of one ID must hold the same results.

    Raises
    ------
    InputError
        No summary, a summary given twice, two different Source files of one ID.
    """
    paths = [Path(p) for p in summaries]
    if not paths:
        raise ParameterError(None, "no summary table to merge", "give one per part with {part_summaries}",
                             params=("part_summaries",))
    if len({p.resolve() for p in paths}) < len(paths):
        raise ParameterError("{part_summaries}", "a summary table is given twice", "give each part once",
                             params=("part_summaries",))
    by_id = index_sources(sources)
    for obj_id, files in by_id.items():
        for other in files[1:]:
            if not _same_source(files[0], other):
                raise InputError(f"ID {obj_id}", f"has two Source files with different results "
                                 f"({files[0]}, {other})", "give the files of disjoint parts, "
                                 "or leave one of them out")
    return [Part(p.stem, str(p), p, sources=by_id) for p in paths]


def merge_parts(parts: list[Part], outdir, *, catalog=None, catalog_format: str = "auto",
                link: str = "copy", progress=None) -> MergeResult:
    """Merge the results of catalogue parts into one folder: ``sources/`` and ``summary.tsv``.

    Parameters
    ----------
    parts : list of Part
        From :func:`folder_parts` or :func:`file_parts`, in the order their rows are merged.
    outdir : str or os.PathLike
        The merged folder: new, or empty.
    catalog : str or os.PathLike, optional
        The original catalogue: rows are put in its order, and its IDs found in no part are
        listed with status ``missing: in no merged output folder``.  Default: the parts' order.
    catalog_format : str
        Format of *catalog* (``auto`` detects it).
    link : {"copy", "hardlink"}
        How Source files get into ``outdir/sources`` (hard links fall back to copies across
        file systems).
    progress : callable, optional
        Called with the number of Source files placed, as they are.

    Returns
    -------
    MergeResult

    Raises
    ------
    InputError
        A part without summary, summaries with different columns, Source files of different
        cubes, an ID in two parts with different results, *outdir* one of the input folders or
        already holding an output.  Nothing is written then.
    """
    if link not in LINK_MODES:
        raise ParameterError("{link}", f"unknown mode {link!r}", f"use one of {', '.join(LINK_MODES)}",
                             params=("link",))
    outdir = Path(outdir)
    out_res = outdir.resolve()
    for part in parts:
        if part.folder is not None and part.folder.resolve() == out_res:
            raise InputError(outdir, "is also one of the folders to merge", "choose a new folder to write to")
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "is a file, not a folder", "choose a new or empty folder to write to")
    if outdir.is_dir() and any(outdir.iterdir()):
        # Merged files next to older ones would make a folder no run produced.
        raise InputError(outdir, "is not empty", "choose a new or empty folder to write to")
    columns = None
    entries: dict[str, tuple[int, dict]] = {}
    order: list[str] = []
    duplicates: list[str] = []
    cubes: dict[str, tuple[str, str]] = {}
    given = {}    # Source files given as files: each must be the file of a summary row
    for part in parts:
        given.update(part.sources or {})
    for k, part in enumerate(parts):
        cols, rows = read_summary(part.summary)
        if columns is None:
            columns = cols
        elif cols != columns:
            raise InputError(part.summary, f"has other columns than {parts[0].summary}",
                             "merge outputs of the same ifu-extract version")
        for r in rows:
            fname = r.get("FILE", "").strip()
            src = part.source(r)
            if src is not None:
                cube = _cube_of(src) if src.is_file() else None
                if cube is not None:
                    csum, name = cube
                    if cubes and csum not in cubes:
                        other_csum, (other_label, other_name) = next(iter(cubes.items()))
                        raise InputError(f"{other_label} and {part.label}",
                                         f"were made from different cubes ({other_name or '?'} "
                                         f"{other_csum[:12]}, {name or '?'} {csum[:12]})",
                                         "merge only the outputs of parts of one cube")
                    cubes.setdefault(csum, (part.label, name))
            obj_id = r["ID"]
            if obj_id in entries:
                k0, r0 = entries[obj_id]
                same_row = all(r0.get(c, "") == r.get(c, "") for c in columns if c != "FILE")
                f0 = r0.get("FILE", "").strip()
                src0 = parts[k0].source(r0)
                same_file = (not f0 and not fname) or (
                    bool(f0) and bool(fname) and src0.is_file() and src.is_file()
                    and _same_source(src0, src))
                if not (same_row and same_file):
                    raise InputError(f"ID {obj_id}", f"is in {parts[k0].label} and {part.label} with "
                                     "different results", "merge the outputs of disjoint parts "
                                     "('ifu-extract split'), or leave one of them out")
                duplicates.append(obj_id)
                continue
            entries[obj_id] = (k, r)
            order.append(obj_id)
    orphans = [i for i in given if i not in entries or not entries[i][1].get("FILE", "").strip()]
    if orphans:
        path = given[orphans[0]][0]
        raise InputError(path, f"is the Source file of ID {orphans[0]}, in none of the summary "
                         "tables", "give the summary table of every part whose Source files are given")
    missing: list[str] = []
    rows_out: list[tuple[int | None, dict]] = []
    if catalog is not None:
        table = read_catalog(catalog, catalog_format)
        cat_ids = [safe_id(v) for v in table["ID"]]
        for obj_id, ra, dec in zip(cat_ids, np.asarray(table["RA"], float), np.asarray(table["DEC"], float)):
            if obj_id in entries:
                rows_out.append(entries[obj_id])
            else:
                missing.append(obj_id)
                rows_out.append((None, missing_row(columns, obj_id, ra, dec)))
        extra = [i for i in order if i not in set(cat_ids)]
        if extra:
            log.warning(f"warning: {len(extra)} merged IDs are not in {Path(catalog).name} "
                        f"({', '.join(extra[:5])}); listed last")
        rows_out += [entries[i] for i in extra]
    else:
        rows_out = [entries[i] for i in order]
    # ---- write (everything above only read)
    ensure_dir(outdir)
    sources = ensure_dir(outdir / "sources")
    merged_rows, n_src = [], 0
    for k, r in rows_out:
        r = dict(r)
        fname = r.get("FILE", "").strip()
        if k is not None and fname:
            src = parts[k].source(r)
            if src.is_file():
                dest = sources / Path(fname).name
                place_file(src, dest, link)
                r["FILE"] = f"sources/{dest.name}"
                n_src += 1
                if progress:
                    progress(1)
            else:
                warn_object(r["ID"], f"Source file {src} is missing; listed without it")
                r["FILE"] = ""
                r["NOTES"] = (r.get("NOTES", "") + "; " if r.get("NOTES", "") else "") + \
                    f"Source file missing from {parts[k].name}"
        merged_rows.append(r)
    for obj_id in missing:
        warn_object(obj_id, "in the catalogue but in no merged output folder")
    write_summary_text(columns, merged_rows, outdir / SUMMARY_NAME)
    return MergeResult(outdir, len(merged_rows), n_src, duplicates, missing)

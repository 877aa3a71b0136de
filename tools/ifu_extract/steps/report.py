"""The ``report`` step: the QA report of a summary table and its Source files.

Inputs come either from an output folder (``OUTDIR/summary.tsv``, the Source files its ``FILE``
column names, relative to it, and ``OUTDIR/masks.fits`` for the segmentation) or as explicit
files (a summary table and any number of Source files, matched to the rows by the ``ID`` of
their primary header), which is what Galaxy gives.  The report is written as

``HTML``
    the index page (default ``OUTDIR/index.html``);
``ASSETS/qa/<ID>_stamps.png``, ``ASSETS/qa/<ID>_spectrum.png``
    the figures (``ASSETS`` defaults to the page's folder);
``ASSETS/sources/<ID>.fits``
    the Source files the page links to, copied there when they are not there already.

Everything is read and checked before the first file is written, and the files are written all
together or not at all (:class:`~ifu_extract.steps._outputs.OutputSet`): no half report.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, ParameterError
from ..catalog_parts import place_file
from ..fitsout import ensure_dir
from ..report import (DEFAULT_DPI, FIGURES, INDEX_NAME, QA_DIR, ObjectPlots, cube_names, draw_figures,
                      figure_name, resolve_segmap, write_index)
from ..summary import SUMMARY_NAME, index_sources, read_summary
from ._outputs import OutputSet

__all__ = ["ReportConfig", "ReportResult", "run_report"]


@dataclass
class ReportConfig:
    """How the report is drawn.

    Attributes
    ----------
    threads : int
        Worker processes for the figures.
    plots : bool
        Draw the figures; False writes the index page alone (fast).
    segmap : str or os.PathLike or SegMap, optional
        Segmentation map outlined on the stamps (a ``detect --segmap`` output, a masks file, or
        any labelled FITS image with WCS, on any grid).  Default: in folder mode
        ``OUTDIR/masks.fits`` or ``OUTDIR/segmap.fits`` when present, else none.
    tag : str, optional
        Spectrum drawn for every object (default: the summary's ``SNR_TAG``).
    smooth : int
        Channels of the smoothed curve drawn over the spectrum (1: none).
    dpi : int
        Figure resolution.
    title : str, optional
        Title of the page (default: ``ifu-extract QA report: <cube name>``).
    """

    threads: int = 1
    plots: bool = True
    segmap: object = None
    tag: str | None = None
    smooth: int = 5
    dpi: int = DEFAULT_DPI
    title: str | None = None


@dataclass
class ReportResult:
    """What :func:`run_report` did.

    Attributes
    ----------
    index : pathlib.Path
        The index page.
    n_objects : int
        Summary rows listed.
    plots : dict
        ``{ID: ObjectPlots}`` of the objects with a Source file (empty without plots).
    segmap : str
        The segmentation map drawn ('' when none).
    seconds : float
        Wall time of the figures.
    assets_dir : pathlib.Path or None
        Folder of ``qa/`` and ``sources/``.
    n_placed : int
        Source files copied into ``assets_dir/sources``.
    """

    index: Path
    n_objects: int
    plots: dict = field(default_factory=dict)
    segmap: str = ""
    seconds: float = 0.0
    assets_dir: Path | None = None
    n_placed: int = 0

    @property
    def n_plotted(self) -> int:
        """Objects with both figures."""
        return sum(1 for p in self.plots.values() if len(p.files) == len(FIGURES))

    @property
    def failures(self) -> dict:
        """``{ID: reason}`` of objects whose figures failed."""
        return {k: p.error for k, p in self.plots.items() if p.error}

    @property
    def seconds_per_object(self) -> float:
        n = len(self.plots)
        return self.seconds / n if n else 0.0


def _resolve_inputs(outdir, summary, sources, html, assets_dir):
    """(folder, summary, {ID: Source}, html, assets) with the folder conventions filled in."""
    folder = None if outdir is None else Path(outdir)
    if folder is not None and not folder.is_dir():
        raise InputError(folder, "is not a folder", "give the output folder of 'ifu-extract extract' or 'run'")
    if summary is None and folder is None:
        raise ParameterError(None, "no summary table given",
                             "give an output folder, or {summary} and the Source files",
                             params=("summary",))
    summary = Path(summary) if summary is not None else folder / SUMMARY_NAME
    html = Path(html) if html is not None else (folder or summary.parent) / INDEX_NAME
    assets = Path(assets_dir) if assets_dir is not None else html.parent
    if html.is_dir():
        raise InputError(html, "is a folder", "give the file name of the page to write")
    if assets.exists() and not assets.is_dir():
        raise InputError(assets, "is a file, not a folder", "give the folder of the page's figures")
    by_id = None if sources is None else index_sources(sources)
    return folder, summary, by_id, html, assets


def _row_sources(rows, folder: Path | None, summary: Path, by_id: dict | None) -> dict[str, Path | None]:
    """``{ID: Source file or None (missing)}`` of the rows that name one."""
    out = {}
    base = folder if folder is not None else summary.parent
    for r in rows:
        fname = r.get("FILE", "").strip()
        if not fname:
            continue
        if by_id is not None:
            src = (by_id.get(r["ID"]) or [None])[0]
        else:
            src = base / fname
        out[r["ID"]] = src if src is not None and src.is_file() else None
    return out


def run_report(outdir=None, config: ReportConfig | None = None, *, summary=None, sources=None,
               html=None, assets_dir=None, progress=None) -> ReportResult:
    """Write the QA report: figures, Source files where the page links to them, the index page.

    Parameters
    ----------
    outdir : str or os.PathLike, optional
        A folder written by ``extract``, ``run`` or ``merge`` (``summary.tsv`` and ``sources/``);
        it supplies every file not given below.
    config : ReportConfig, optional
    summary : str or os.PathLike, optional
        The summary table (default ``OUTDIR/summary.tsv``).
    sources : sequence of str or os.PathLike, optional
        The Source files, matched to the summary rows by their header ``ID`` (default: the
        files the ``FILE`` column names, relative to the summary's folder).
    html : str or os.PathLike, optional
        The index page to write (default ``OUTDIR/index.html``, or ``index.html`` next to the
        summary).
    assets_dir : str or os.PathLike, optional
        Folder of the figures (``qa/``) and of the linked Source files (``sources/``); default:
        the page's folder.
    progress : callable, optional
        ``progress(done, total)`` with the number of rows done, as objects finish.

    Returns
    -------
    ReportResult

    Raises
    ------
    InputError
        *outdir* is not a folder, the summary is missing or invalid, *segmap* is unreadable, or
        ``smooth`` < 1.  Nothing is written then.
    """
    cfg = config or ReportConfig()
    folder, summary, by_id, html, assets = _resolve_inputs(outdir, summary, sources, html, assets_dir)
    columns, rows = read_summary(summary)
    seg = resolve_segmap(cfg.segmap, folder) if cfg.plots else None
    if int(cfg.smooth) < 1:
        raise ParameterError("{smooth}", "must be at least 1", "give a width in channels",
                             params=("smooth",))
    srcs = _row_sources(rows, folder, summary, by_id)
    notes = []
    title = cfg.title
    cubes = cube_names(p for p in srcs.values() if p is not None)
    if cubes:
        notes.append("Cube: " + ", ".join(cubes))
        title = title or f"ifu-extract QA report: {', '.join(cubes)}"
    if seg is not None:
        notes.append(f"Segmentation map: {seg.path.name} (outlines on the stamps)")
    results: dict[str, ObjectPlots] = {}
    t0 = time.perf_counter()
    done = [0]

    def advance(n):
        done[0] += n
        if progress:
            progress(done[0], len(rows))

    placed = 0
    # All or nothing: a failure (a full disk, SIGTERM) removes the figures, copies and page
    # written here; files that were there before are left.
    with OutputSet() as outputs:
        ensure_dir(html.parent)
        for r in rows:     # the Source files the page links to, next to its figures
            fname = r.get("FILE", "").strip()
            src = srcs.get(r["ID"])
            if fname and src is not None:
                dest = assets / fname
                if not (dest.is_file() and os.path.samefile(src, dest)):
                    ensure_dir(outputs.claim(dest).parent)
                    place_file(src, dest, "copy")
                    placed += 1
        if cfg.plots:
            jobs = []
            for r in rows:
                fname = r.get("FILE", "").strip()
                if not fname:
                    continue
                if srcs[r["ID"]] is None:
                    results[r["ID"]] = ObjectPlots(r["ID"], error=f"Source file {fname} is missing")
                    continue
                jobs.append((r["ID"], assets / fname))
                for kind in FIGURES:
                    outputs.claim(assets / QA_DIR / figure_name(r["ID"], kind))
            if len(rows) > len(jobs):
                advance(len(rows) - len(jobs))   # rows without a Source file: nothing to draw
            draw_figures(jobs, assets / QA_DIR, results, segmap=seg, threads=cfg.threads, tag=cfg.tag,
                         smooth=cfg.smooth, dpi=cfg.dpi, progress=advance)
        seconds = time.perf_counter() - t0
        index = write_index(outputs.claim(html), columns, rows, results, assets_dir=assets,
                            title=title, notes=notes)
    return ReportResult(index, len(rows), results, "" if seg is None else str(seg.path), seconds,
                        assets, placed)

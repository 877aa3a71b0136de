"""The ``merge`` step: the results of catalogue parts put back together, with one QA report.

The parts are output folders (``summary.tsv`` and ``sources/`` each) or, as Galaxy gives them,
summary tables and Source files given as files (matched to the rows by their header ``ID``).
The merged folder gets ``sources/`` and ``summary.tsv``
(:func:`~ifu_extract.catalog_parts.merge_parts`), then the QA report
(:func:`~ifu_extract.steps.report.run_report`), whose page may be written elsewhere (``html``,
``assets_dir``).  Every input, the report's segmentation map included, is read before the first
file is written, and a failure after that (a full disk, SIGTERM) leaves nothing in the merged
folder.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog_parts import MergeResult, file_parts, folder_parts, merge_parts
from ..errors import InputError, ParameterError
from ..report import resolve_segmap
from ..segmap import read_segmap
from .report import ReportConfig, ReportResult, run_report

__all__ = ["MergeConfig", "MergeStepResult", "run_merge"]


@dataclass
class MergeConfig:
    """How the parts are merged and reported.

    Attributes
    ----------
    catalog : str or os.PathLike, optional
        The catalogue that was split: rows follow its order, its IDs found in no part are listed
        as missing (default: the order of the parts).
    catalog_format : str
    link : {"copy", "hardlink"}
        How the Source files get into the merged folder.
    report : bool
        Rebuild the QA report.
    report_config : ReportConfig
        Its options (``segmap`` None: the first folder's ``masks.fits`` when the parts are
        folders).
    """

    catalog: object = None
    catalog_format: str = "auto"
    link: str = "copy"
    report: bool = True
    report_config: ReportConfig = field(default_factory=ReportConfig)


@dataclass
class MergeStepResult:
    """What :func:`run_merge` did: the merge (:class:`~ifu_extract.catalog_parts.MergeResult`)
    and the report (None when not asked for)."""

    merge: MergeResult
    report: ReportResult | None = None


def _first_masks_segmap(parts):
    """The segmentation map of the first folder's ``masks.fits`` that holds one (parts of one
    cube share it)."""
    for part in parts:
        if part.folder is not None and (part.folder / "masks.fits").is_file():
            try:
                return read_segmap(part.folder / "masks.fits", ext="SEGMAP")
            except InputError:
                continue
    return None


def _clear(folder: Path, *, keep_folder: bool) -> None:
    """Remove what was written in *folder* (all of it: it was new or empty), and the folder
    itself unless it existed before."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
    if not keep_folder:
        with contextlib.suppress(OSError):
            folder.rmdir()


def run_merge(inputs=(), output=None, config: MergeConfig | None = None, *, part_summaries=(),
              part_sources=(), html=None, assets_dir=None, progress=None) -> MergeStepResult:
    """Merge catalogue parts into the folder *output*, and write its QA report.

    Parameters
    ----------
    inputs : sequence of path
        Output folders of the parts (``extract``, ``run``).
    output : str or os.PathLike
        The merged folder: new, or empty.
    config : MergeConfig, optional
    part_summaries : sequence of path
        Summary tables of the parts (instead of, or after, the folders), in the order to merge.
    part_sources : sequence of path
        The Source files of those parts, in any order.
    html, assets_dir : path, optional
        Where the report's page and its figures and Source files go (default: the merged
        folder's ``index.html``, ``qa/``, ``sources/``).
    progress : callable, optional
        ``progress(done, total)`` of the report's figures.

    Raises
    ------
    InputError
        As :func:`~ifu_extract.catalog_parts.merge_parts`, an unreadable segmentation map, or
        Source files without summary tables.  Nothing is written then.
    """
    cfg = config or MergeConfig()
    if output is None:
        raise ParameterError(None, "no merged folder given", "give {output}", params=("output",))
    if part_sources and not part_summaries:
        raise ParameterError(None, "{part_sources} given without the parts' summary tables",
                             "give the summary table of every part with {part_summaries}",
                             params=("part_sources", "part_summaries"))
    parts = (folder_parts(inputs) if inputs else []) + \
        (file_parts(part_summaries, part_sources) if part_summaries else [])
    if not parts:
        raise InputError(None, "no output folder to merge", "give one or more OUTDIR")
    rcfg = cfg.report_config
    if cfg.report and rcfg.plots:      # read before anything is written
        seg = resolve_segmap(rcfg.segmap) if rcfg.segmap is not None else _first_masks_segmap(parts)
        rcfg = ReportConfig(**{**rcfg.__dict__, "segmap": seg})
    output = Path(output)
    # The merged folder must be new or empty (merge_parts refuses others before writing), so
    # whatever is in it after a failure was written here: all or nothing.
    existed = output.exists()
    fresh = not existed or (output.is_dir() and not any(output.iterdir()))
    try:
        merged = merge_parts(parts, output, catalog=cfg.catalog, catalog_format=cfg.catalog_format,
                             link=cfg.link)
        rep = None
        if cfg.report:
            rep = run_report(output, rcfg, html=html, assets_dir=assets_dir, progress=progress)
    except BaseException:
        if fresh and output.is_dir():
            _clear(output, keep_folder=existed)
        raise
    return MergeStepResult(merged, rep)

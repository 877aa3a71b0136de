"""The figures of many objects: shared out over worker processes, one bad object never stops them.

:func:`draw_figures` draws both figures of every ``(ID, Source file)`` it is given into a ``qa``
folder, in worker processes (contiguous blocks, :func:`~ifu_extract.parallel.even_blocks`); an
object whose figure fails is returned with the reason (and warned about), and the others go on.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from ..catalog import file_stem
from ..errors import InputError, is_disk_full, warn_object
from ..fitsout import ensure_dir
from ..parallel import even_blocks, process_map
from ..segmap import SegMap, read_segmap
from .cache import clear_figure_cache
from .figures import DEFAULT_DPI, plot_spectrum, plot_stamps
from .loader import SegmapSampler, load_object

__all__ = ["QA_DIR", "ObjectPlots", "figure_name", "plot_object", "draw_figures", "resolve_segmap", "cube_names"]

log = logging.getLogger("ifu_extract")

#: Sub-folder of the report folder holding the figures.
QA_DIR = "qa"


@dataclass
class ObjectPlots:
    """Outcome of the figures of one object.

    Attributes
    ----------
    id : str
    files : dict
        ``{kind: path relative to the report folder}`` of the figures written
        (:data:`~ifu_extract.report.figures.FIGURES`).
    error : str
        Why a figure could not be drawn ('' when all were).
    seconds : float
    """

    id: str
    files: dict = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def figure_name(obj_id: str, kind: str) -> str:
    """File name of a figure in the ``qa`` folder: ``<ID>_<kind>.png`` (the ID made file-safe)."""
    return f"{file_stem(obj_id)}_{kind}.png"


def plot_object(source_path, qa_dir, obj_id: str, *, segmap=None, tag: str | None = None,
                smooth: int = 5, dpi: int = DEFAULT_DPI) -> ObjectPlots:
    """Both figures of one object; failures are returned, never raised.

    Parameters
    ----------
    source_path : str or os.PathLike
    qa_dir : str or os.PathLike
        Folder of the PNGs (``OUTDIR/qa``).
    obj_id : str
        Used in the file names ``<ID>_stamps.png`` / ``<ID>_spectrum.png``.
    segmap, tag, smooth, dpi
        As :func:`load_object`, :func:`plot_spectrum`.
    """
    t0 = time.perf_counter()
    out = ObjectPlots(str(obj_id))
    qa_dir = Path(qa_dir)
    try:
        obj = load_object(source_path, segmap=segmap)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the report
        out.error = f"cannot read {Path(source_path).name}: {_reason(exc)}"
        out.seconds = time.perf_counter() - t0
        return out
    errors = []
    for kind, func, kwargs in (("stamps", plot_stamps, {}),
                               ("spectrum", plot_spectrum, {"tag": tag, "smooth": smooth})):
        name = figure_name(obj_id, kind)
        try:
            func(obj, qa_dir / name, dpi=dpi, **kwargs)
            out.files[kind] = f"{QA_DIR}/{name}"
        except Exception as exc:  # noqa: BLE001 - reported in the index, the others go on
            if is_disk_full(exc):
                raise                   # not this object's fault: the report stops
            errors.append(f"{kind}: {_reason(exc)}")
    out.error = "; ".join(errors)
    out.seconds = time.perf_counter() - t0
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, KeyError):
        text = str(exc.args[0]) if exc.args else text
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, (KeyError, ValueError)) else text


# Set in the parent before the workers fork, so that a large map is not pickled per job.
_WORKER = {"segmap": None}


def _plot_jobs(jobs) -> list[ObjectPlots]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source, qa_dir, obj_id, kwargs in jobs:
            out.append(plot_object(source, qa_dir, obj_id, segmap=_WORKER["segmap"], **kwargs))
    return out



def draw_figures(jobs, qa_dir, results: dict, *, segmap=None, threads: int = 1,
                 tag: str | None = None, smooth: int = 5, dpi: int = DEFAULT_DPI,
                 progress=None) -> dict:
    """Both figures of every object of *jobs*, into *qa_dir*.

    Parameters
    ----------
    jobs : list of (str, path)
        ``(ID, Source file)`` of the objects to draw, in the order to draw them.
    qa_dir : str or os.PathLike
        Folder of the PNGs (created).
    results : dict
        ``{ID: ObjectPlots}`` filled in place (entries already there, e.g. objects whose Source
        file is missing, are kept); every entry with an error is warned about at the end.
    segmap : SegMap, optional
        Segmentation map outlined on the stamps.
    threads : int
        Worker processes.
    tag, smooth, dpi
        As :func:`~ifu_extract.report.figures.plot_spectrum`.
    progress : callable, optional
        Called with the number of objects done, as they finish.

    Returns
    -------
    dict
        *results*.
    """
    qa_dir = ensure_dir(qa_dir)
    kwargs = {"tag": tag, "smooth": int(smooth), "dpi": int(dpi)}
    work = [(str(src), str(qa_dir), obj_id, kwargs) for obj_id, src in jobs]
    _WORKER["segmap"] = None if segmap is None else SegmapSampler(segmap)
    try:
        threads = max(1, min(int(threads), len(work) or 1))
        if threads == 1:
            for job in work:
                (res,) = _plot_jobs([job])
                results[res.id] = res
                if progress:
                    progress(1)
        else:
            blocks = even_blocks(work, min(len(work), threads * 4))
            with process_map(_plot_jobs, blocks, threads) as outs:
                for block, out in zip(blocks, outs):
                    for res in out:
                        results[res.id] = res
                    if progress:
                        progress(len(block))
    finally:
        _WORKER["segmap"] = None
        clear_figure_cache()   # the figures drawn here (threads=1) are not needed any more
    for obj_id, res in results.items():
        if res.error:
            warn_object(obj_id, f"QA figure failed: {res.error}")
    return results


def resolve_segmap(segmap, folder=None):
    """The segmentation map to draw: the one given, else *folder*'s masks or segmap file.

    Parameters
    ----------
    segmap : str or os.PathLike or SegMap or None
    folder : str or os.PathLike, optional
        Output folder searched for ``masks.fits`` (its ``SEGMAP``) and ``segmap.fits`` (what
        ``run`` writes) when *segmap* is None.

    Raises
    ------
    InputError
        *segmap* is given and unreadable.
    """
    if isinstance(segmap, SegMap):
        return segmap
    if segmap is not None:
        return read_segmap(segmap)
    if folder is None:
        return None
    for name, ext in (("masks.fits", "SEGMAP"), ("segmap.fits", None)):
        auto = Path(folder) / name
        if auto.is_file():
            try:
                return read_segmap(auto, ext=ext)
            except InputError as exc:
                log.debug(f"report: {auto.name} not used for the segmentation ({exc.oneline()})")
    return None


def cube_names(sources) -> list[str]:
    """Name of the cube the Source files were made from (``CUBE`` of the first readable one).

    Parameters
    ----------
    sources : iterable of path
        Source files, in row order.
    """
    for path in sources:
        try:
            name = str(fits.getheader(path, 0).get("CUBE", "")).strip()
        except Exception:  # noqa: BLE001 - unreadable files are reported by the figures
            continue
        if name:
            return [name]
    return []

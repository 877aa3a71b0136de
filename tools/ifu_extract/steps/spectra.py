"""The ``spectra ingest`` step: Source files, SDSS spectra and summary tables into a store.

:func:`run_ingest` adds to the store at its path, in place (commits every ``commit_every``
files, so that an interrupted ingest loses at most these), or, given a *previous* store,
builds a new store from a copy of it and renames it into place when the ingest is complete
(the previous store is never modified).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..fitsout import atomic_path
from ..spectra.ingest import IngestReport, ingest
from ._outputs import OutputSet

__all__ = ["run_ingest", "run_plot"]


def run_ingest(store, *, sources=(), summaries=(), names=None, previous=None,
               context: str | None = None, commit_every: int = 200,
               progress=None) -> IngestReport:
    """Ingest *sources* (files or folders, kind from the content) and *summaries* into *store*.

    Parameters
    ----------
    store : str or os.PathLike
        The store file: added to in place (an empty or missing file is a new store), or, with
        *previous*, replaced by the previous store plus the new spectra.
    sources, summaries, names, context, commit_every, progress
        See :func:`ifu_extract.spectra.ingest.ingest` (*sources* is its ``paths``).
    previous : str or os.PathLike, optional
        A store to start from (copied; never modified).

    Returns
    -------
    IngestReport
    """
    if previous is None:
        return ingest(list(sources), store, summaries=list(summaries), names=names,
                      context=context, commit_every=commit_every, progress=progress)
    with OutputSet() as outputs:
        tmp = outputs.path(store, suffix=Path(store).suffix or ".ifxs")
        shutil.copyfile(previous, tmp)
        return ingest(list(sources), tmp, summaries=list(summaries), names=names,
                      context=context, commit_every=commit_every, progress=progress)


def run_plot(client, ids, output, *, kind: str = "preview", nx: int = 5, ny: int = 5, page: int = 0,
             yflip: bool = False, align: bool = False, cutout=None) -> Path:
    """Draw spectra of a store and write the PNG atomically.

    Parameters
    ----------
    client : ifu_extract.spectra.client.SpecClient
        The store (local or remote) to draw from.
    ids : sequence of str
        Spectrum ids, in the order drawn (``preview``: the first).
    output : str or os.PathLike
        PNG file to write.
    kind : {"preview", "grid", "stacked"}
        One preview, a page of *nx* x *ny* previews, or one image row per id.
    nx, ny, page, align : optional
        Grid layout, page (0 first) and whether the spectra are aligned first.
    yflip : bool
        Stacked image: first id at the top.
    cutout : str, optional
        Grid/stacked wavelength window ``"W0-W1"``, Angstrom.
    """
    if kind == "preview":
        png = client.preview(ids[0])
    elif kind == "grid":
        png = client.plotGrid(ids, nx, ny, page=page, align=align, cutout=cutout)
    else:
        png = client.stackedImage(ids, fmt="png", yflip=yflip, cutout=cutout)
    with atomic_path(output, suffix=".png") as tmp:
        Path(tmp).write_bytes(png)
    return Path(output)

"""The ``spectra ingest`` step: Source files, SDSS spectra and summary tables into a store.

:func:`run_ingest` adds to the store at its path, in place (commits every ``commit_every``
files, so that an interrupted ingest loses at most these), or, given a *previous* store,
builds a new store from a copy of it and renames it into place when the ingest is complete
(the previous store is never modified).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..spectra.ingest import IngestReport, ingest
from ._outputs import OutputSet

__all__ = ["run_ingest"]


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

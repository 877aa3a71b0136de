"""Source files named on the command line: matched to catalogue rows by their ``ID`` keyword and,
when asked, copied to an output folder (Galaxy gives read-only inputs; no staging in the
wrappers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..catalog import file_stem
from ..fitsout import ensure_dir
from ..summary import index_sources

__all__ = ["source_ids", "copy_sources"]


def source_ids(sources) -> dict:
    """``{ID: path}`` of the Source files *sources*, from their primary ``ID`` keyword.

    Raises
    ------
    InputError
        A file that is not FITS, has no ``ID`` keyword, or repeats another file's ID.
    """
    return {obj_id: paths[0] for obj_id, paths in index_sources(sources, unique=True).items()}


def copy_sources(found: dict, folder) -> dict:
    """Copy the Source files of *found* (``{ID: path}``) to ``FOLDER/<ID>.fits`` (created when
    missing); the same mapping for the copies.  A file already there is left as it is."""
    folder = Path(ensure_dir(folder))
    out = {}
    for obj_id, src in found.items():
        dest = folder / f"{file_stem(obj_id)}.fits"
        if not (dest.exists() and os.path.samefile(src, dest)):
            shutil.copyfile(src, dest)
        out[obj_id] = dest
    return out

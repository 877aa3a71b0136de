"""Source files named on the command line: matched to catalogue rows by their ``ID`` keyword and,
when asked, copied to an output folder (Galaxy gives read-only inputs; no staging in the
wrappers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from astropy.io import fits

from ..catalog import file_stem
from ..errors import InputError
from ..fitsout import ensure_dir

__all__ = ["source_ids", "copy_sources"]


def source_ids(sources) -> dict:
    """``{ID: path}`` of the Source files *sources*, from their primary ``ID`` keyword.

    Raises
    ------
    InputError
        A file that is not FITS, has no ``ID`` keyword, or repeats another file's ID.
    """
    found: dict = {}
    for src in sources or ():
        try:
            value = fits.getheader(src, 0).get("ID")
        except (OSError, ValueError) as exc:
            raise InputError(src, f"is not a readable FITS file ({exc})".rstrip("."),
                             "give the Source files of extract or run") from None
        if value is None:
            raise InputError(src, "has no ID keyword, so it is not a Source file",
                             "give the Source files of extract or run")
        obj_id = str(value)
        if obj_id in found:
            raise InputError(src, f"has ID {obj_id}, as {found[obj_id]} has",
                             "give each object's Source file once")
        found[obj_id] = Path(src)
    return found


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

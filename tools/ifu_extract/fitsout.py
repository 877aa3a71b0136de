"""Writing outputs: atomically, with provenance, deterministically.

Every file the tools write goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed into place only when complete, so a
failure never leaves a half-written output.  Dates come from ``SOURCE_DATE_EPOCH`` when it is
set, so that reruns are byte-identical.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import tempfile
from pathlib import Path

from astropy.io import fits

from . import __version__
from .errors import InputError

__all__ = [
    "atomic_path",
    "write_hdulist",
    "add_provenance",
    "iso_date",
    "file_checksum",
    "ensure_dir",
]


def iso_date() -> str:
    """Current UTC time as ISO-8601 (``SOURCE_DATE_EPOCH`` wins, for reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        when = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    else:
        when = _dt.datetime.now(tz=_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def ensure_dir(path) -> Path:
    """Create folder *path* (and parents); a clear error when it cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(path, f"cannot create the output folder ({exc.strerror})",
                         "choose a writable location with -o") from None
    return path


@contextlib.contextmanager
def atomic_path(dest, suffix: str | None = None):
    """Yield a temporary path next to *dest*; rename it to *dest* on success.

    Parameters
    ----------
    dest : str or os.PathLike
        Final output path.
    suffix : str, optional
        Suffix of the temporary file (some writers pick the format from it); defaults to the
        suffix of *dest*.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(dest, "the output folder does not exist", "create it or choose another -o")
    if suffix is None:
        suffix = "".join(dest.suffixes) or ".tmp"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=parent)
    except OSError as exc:
        raise InputError(dest, f"cannot write here ({exc.strerror})",
                         "choose a writable output path") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise InputError(dest, f"cannot be written ({exc.strerror})",
                             "choose a writable output path") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_hdulist(hdul: fits.HDUList, dest, *, checksum: bool = True) -> Path:
    """Write *hdul* atomically to *dest* (FITS), with CHECKSUM/DATASUM cards."""
    with atomic_path(dest, suffix=".fits") as tmp:
        try:
            hdul.writeto(tmp, overwrite=True, checksum=checksum, output_verify="silentfix")
        except OSError as exc:
            raise InputError(dest, f"cannot write ({exc.strerror or exc})",
                             "check free space and permissions") from None
    return Path(dest)


def add_provenance(header: fits.Header, tool: str, inputs: dict | None = None,
                   params: dict | None = None) -> fits.Header:
    """Stamp *header* with the program, version, date and inputs that made the file.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Modified in place and returned.
    tool : str
        The microtool verb (``"image"``, ``"detect"``...).
    inputs : dict, optional
        ``{role: path}`` of input files; their base names go in ``IFXIN*`` cards.
    params : dict, optional
        Parameters worth recording; written as ``HISTORY`` lines.
    """
    header["ORIGIN"] = ("ifu-extract", "software that wrote this file")
    header["IFXVER"] = (__version__, "ifu-extract version")
    header["IFXTOOL"] = (tool, "ifu-extract microtool")
    header["DATE"] = (iso_date(), "UTC date the file was written")
    for i, (role, path) in enumerate(sorted((inputs or {}).items()), start=1):
        if path is None:
            continue
        header[f"IFXIN{i}"] = (Path(str(path)).name[:60], f"input: {role}")
    for key, value in sorted((params or {}).items()):
        header.add_history(f"ifu-extract {tool}: {key}={value}"[:72])
    # Environment marker set only inside our container image: proves where a job ran.
    image = os.environ.get("IFU_EXTRACT_IMAGE")
    if image:
        header["IFXIMAGE"] = (image[:60], "container image that ran the job")
    return header


def file_checksum(path, nbytes: int = 1 << 24) -> str:
    """SHA-256 of the first *nbytes* of *path* plus its size: a cheap input fingerprint."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        h.update(fh.read(nbytes))
    h.update(str(size).encode())
    return h.hexdigest()[:32]

"""Writing outputs: atomically, with provenance, deterministically.

(The bytes of FITS files -- cards, checksums, streamed cubes, file-kind sniffing -- are
:mod:`ifu_extract.fitsio`; this module is about output *files* of any kind.)

Every file the tools write goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and renamed into place only when complete, so a
failure never leaves a half-written output.  Dates come from ``SOURCE_DATE_EPOCH`` when it is
set, so that reruns are byte-identical.

Temporary files are named by :func:`temp_path`, ``.<name>.ifxtmp-<host>-<pid>-<random><suffix>``:
the host and PID of the process writing them.  A process killed with ``kill -9`` cannot remove
its temporary files, so :func:`clean_stale_temps` removes, when a folder is first written to,
those whose owner is a dead process of this host (a live owner's file, or another host's on a
shared disk, is left alone).  Running out of space while writing is the one-line
:class:`~ifu_extract.errors.DiskFullError`, never a half-written output.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path

from astropy.io import fits

from . import __version__
from .errors import DiskFullError, InputError
from .pathguard import refuse_input
from .parallel import signals_deferred

__all__ = [
    "atomic_path",
    "temp_path",
    "clean_stale_temps",
    "sweep_stale_temps",
    "write_error",
    "write_hdulist",
    "add_provenance",
    "iso_date",
    "file_checksum",
    "ensure_dir",
    "ascii_safe",
    "ascii_unescape",
]


def ascii_safe(text) -> str:
    """*text* as printable ASCII for a FITS header (FITS allows nothing else).

    Non-ASCII characters become Python escapes (``cübe.fits`` -> ``c\\xfcbe.fits``), so that
    the value stays unambiguous and :func:`ascii_unescape` restores it.
    """
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def ascii_unescape(text: str) -> str:
    """Undo :func:`ascii_safe` (text without a backslash is returned as is)."""
    if "\\" not in text:
        return text
    try:
        return text.encode("ascii").decode("unicode_escape")
    except (UnicodeError, ValueError):
        return text


def iso_date() -> str:
    """Current UTC time as ISO-8601 (``SOURCE_DATE_EPOCH`` wins, for reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        when = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    else:
        when = _dt.datetime.now(tz=_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def ensure_dir(path) -> Path:
    """Create folder *path* (and parents); a clear error when it cannot be created.

    Temporary files left in it by killed runs are removed (:func:`clean_stale_temps`).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc, "cannot create the output folder",
                          "choose a writable location with -o") from None
    clean_stale_temps(path)
    _SCANNED.add(_folder_key(path))
    return path


#: Space errors: the device or the user's quota is full.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def write_error(dest, exc: OSError, problem: str = "cannot be written",
                fix: str = "choose a writable output path") -> InputError:
    """The one-line error for an :class:`OSError` raised while writing *dest*.

    A full disk or quota is a :class:`~ifu_extract.errors.DiskFullError` naming the folder.
    """
    if getattr(exc, "errno", None) in _NO_SPACE:
        return DiskFullError(dest, "no space left on the device",
                             "free some space or choose another output folder with -o")
    return InputError(dest, f"{problem} ({exc.strerror or exc})", fix)


# ----------------------------------------------------------------------------- temporary files
_TEMP_TAG = "ifxtmp"
_TEMP_RE = re.compile(r"^\..+\." + _TEMP_TAG + r"-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]+")
#: Folders already scanned for stale temporary files by this process.
_SCANNED: set = set()


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _folder_key(folder) -> str:
    try:
        return os.path.realpath(folder)
    except OSError:  # pragma: no cover
        return str(folder)


def temp_path(dest, suffix: str | None = None) -> Path:
    """Create an empty temporary file next to *dest*, named after this host and process.

    Parameters
    ----------
    dest : str or os.PathLike
        The output the temporary file will become.
    suffix : str, optional
        Suffix of the temporary file; defaults to the suffixes of *dest*.

    Returns
    -------
    pathlib.Path
        ``.<dest name>.ifxtmp-<host hash>-<pid>-<random><suffix>`` in the folder of *dest*.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if suffix is None:
        suffix = "".join(dest.suffixes) or ".tmp"
    key = _folder_key(parent)
    if key not in _SCANNED:
        _SCANNED.add(key)
        clean_stale_temps(parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{_TEMP_TAG}-{_host_tag()}-{os.getpid()}-",
                                   suffix=suffix, dir=parent)
    except OSError as exc:
        raise write_error(dest, exc, "cannot write here", "choose a writable output path") from None
    os.close(fd)
    return Path(tmp)


def sweep_stale_temps() -> None:
    """Remove, from every folder this process has written in, the temporary files of dead
    processes of this host: run when a command is terminated, once its workers are stopped, so
    that a worker killed while writing leaves nothing behind (the next run would remove it)."""
    for folder in sorted(_SCANNED):
        clean_stale_temps(folder)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True           # someone else's live process
    return True


def clean_stale_temps(folder) -> list[Path]:
    """Remove the temporary files of dead processes of this host from *folder*.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host_tag()
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != host or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


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
    refuse_input(dest)  # the one guard: never replace a file the command reads
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(dest, "the output folder does not exist", "create it or choose another -o")
    tmp = None
    try:
        with signals_deferred():   # a SIGTERM between creation and this try would leak the file
            tmp = temp_path(dest, suffix)
        try:
            yield tmp
        except OSError as exc:
            if getattr(exc, "errno", None) in _NO_SPACE:
                raise write_error(dest, exc) from None
            raise
        os.chmod(tmp, 0o644)
        refuse_input(dest)
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise write_error(dest, exc) from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def write_hdulist(hdul: fits.HDUList, dest, *, checksum: bool = True, verify: str = "silentfix") -> Path:
    """Write *hdul* atomically to *dest* (FITS), with CHECKSUM/DATASUM cards.

    *verify* is astropy's ``output_verify``; files we build card by card pass ``"ignore"``,
    which saves most of the writing time of many small HDUs.
    """
    if checksum:
        # astropy dates the CHECKSUM/DATASUM comments with the clock: use iso_date() so that
        # reruns with SOURCE_DATE_EPOCH are byte-identical.
        hdul.verify(verify if verify != "ignore" else "silentfix")
        when = iso_date()
        for hdu in hdul:
            hdu.add_datasum(when=f"data unit checksum updated {when}")
            hdu.add_checksum(when=f"HDU checksum updated {when}", override_datasum=True)
    with atomic_path(dest, suffix=".fits") as tmp:
        try:
            hdul.writeto(tmp, overwrite=True, checksum=False, output_verify=verify)
        except OSError as exc:
            raise write_error(dest, exc, "cannot write", "check free space and permissions") from None
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
    given = sorted((role, path) for role, path in (inputs or {}).items() if path is not None)
    for i, (role, path) in enumerate(given, start=1):
        header[f"IFXIN{i}"] = (ascii_safe(Path(str(path)).name)[:60], f"input: {role}")
    for key, value in sorted((params or {}).items()):
        header.add_history(ascii_safe(f"ifu-extract {tool}: {key}={value}")[:72])
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

"""The one output-path guard: no verb ever writes over one of its inputs.

Two layers, both here:

* :func:`check_paths` compares the outputs of a verb with its inputs before any work is done
  (the CLI calls it for every verb, from the click parameters; see :mod:`ifu_extract.cli`);
* :func:`refuse_input` is called by :func:`~ifu_extract.fitsout.atomic_path`, the one place
  where files are renamed into place, against every input registered during the current command
  (:func:`register_inputs`): a product written under a name the CLI did not know as an output
  still cannot replace an input.

Paths are compared by file identity (``st_dev``, ``st_ino``), so a symbolic link, a hard link
or another spelling of an input is the input.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import InputError, OptionConflict

__all__ = ["check_paths", "register_inputs", "refuse_input", "clear_inputs", "same_file"]

#: (st_dev, st_ino) -> the name the user gave, for the inputs of the running command.
_INPUTS: dict[tuple[int, int], str] = {}


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # follows symbolic links: a link to an input is that input
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_file(a, b) -> bool:
    """True when *a* and *b* exist and are the same file (links and spellings resolved)."""
    ia = _identity(a)
    return ia is not None and ia == _identity(b)


def _error(out_label: str, out_path, in_label: str, in_path, fix: str | None = None) -> InputError:
    return InputError(out_path, f"{out_label} is the same file as the {in_label} {in_path}, "
                      "which it would overwrite", fix or f"choose another {out_label} path")


def check_paths(outputs: dict, inputs: dict, fix: str | None = None) -> None:
    """Refuse an output that is one of the inputs, or two outputs that are one file.

    Parameters
    ----------
    outputs : dict
        ``{label: path}`` of files the command will write (``"-o"``, ``"--segmap"``...); None
        values are ignored.
    inputs : dict
        ``{label: path or list of paths}`` of files it reads.
    fix : str, optional
        The advice of the message (default: choose another path for that output).

    Raises
    ------
    InputError
        One line naming the output and the input it would overwrite.
    OptionConflict
        Two outputs are one file (a usage error of the command line).
    """
    seen: dict = {}
    for label, path in inputs.items():
        for p in (path if isinstance(path, (list, tuple)) else [path]):
            if p is None:
                continue
            ident = _identity(p)
            if ident is not None and os.path.isfile(p):
                seen.setdefault(ident, (label, p))
    written: dict = {}
    for label, path in outputs.items():
        if path is None:
            continue
        ident = _identity(path)
        if ident is not None and ident in seen:
            in_label, in_path = seen[ident]
            raise _error(label, path, in_label, in_path, fix)
        key = ident or os.path.normcase(os.path.abspath(path))
        if key in written:
            raise OptionConflict(f"two outputs have the same file name: {path} is given both "
                                   f"as {written[key]} and as {label}")
        written[key] = label


def register_inputs(inputs: dict) -> None:
    """Remember the files *inputs* (``{label: path or paths}``) of the running command."""
    for label, path in inputs.items():
        for p in (path if isinstance(path, (list, tuple)) else [path]):
            if p is None or not os.path.isfile(p):
                continue
            ident = _identity(p)
            if ident is not None:
                _INPUTS.setdefault(ident, f"{label} {p}")


def clear_inputs() -> None:
    """Forget the registered inputs (at the start of each command line)."""
    _INPUTS.clear()


def refuse_input(dest) -> None:
    """Raise :class:`InputError` when *dest* is a registered input (called before a rename)."""
    if not _INPUTS:
        return
    ident = _identity(dest)
    if ident is not None and ident in _INPUTS:
        raise InputError(dest, f"is the same file as the input {_INPUTS[ident]}, which it would "
                         "overwrite", "choose another output path")


@contextlib.contextmanager
def folder_cleanup(path):
    """Remove folder *path* (and missing parents) if the block fails and leaves it empty.

    Only folders that did not exist when the block started are removed, and only when empty
    (the ``sources/`` and ``qa/`` sub-folders our verbs make first count as empty).
    """
    path = Path(path)
    missing = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        yield path
    except BaseException:
        for folder in missing:  # deepest first
            for sub in ("sources", "qa"):
                with contextlib.suppress(OSError):
                    (folder / sub).rmdir()
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise

"""User-facing errors and per-object statuses.

Every problem with the *whole* input (an unreadable cube, a catalogue without RA) is raised as
:class:`InputError`, which the CLI prints as one stderr line and turns into exit code 1.  Problems
with one *row* (an object off the field, an empty segment) never raise: they become an
:class:`ObjectStatus` that travels with the object into the summary table.
"""

from __future__ import annotations

import warnings

__all__ = ["DiskFullError", "InputError", "is_disk_full", "ObjectWarning", "OK", "warn_object",
           "warn_once", "reset_once"]

#: Status string of an object processed without any fallback.
OK = "ok"


class InputError(Exception):
    """A problem with a user-supplied file or option, reported in one line.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file (or option name) at fault; shown first so that the user knows where to look.
    problem : str
        What is wrong, as a short clause ("has no 3-D image extension").
    fix : str, optional
        What the user can do about it ("name it with --data-ext").
    """

    def __init__(self, path, problem: str, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem.rstrip(".")
        self.fix = None if fix is None else fix.rstrip(".")
        super().__init__(self.oneline())

    def oneline(self) -> str:
        """The message as a single line: ``path: problem; fix``."""
        msg = self.problem if self.path is None else f"{self.path}: {self.problem}"
        if self.fix:
            msg += f"; {self.fix}"
        # A user error is one line, whatever the text it quotes.
        return " ".join(msg.split())

    def __reduce__(self):
        # Picklable with its three parts (errors cross from worker processes to the parent).
        return (type(self), (self.path, self.problem, self.fix))


class DiskFullError(InputError):
    """The output device or quota is full: the run stops (it is never one object's fault)."""


def is_disk_full(exc: BaseException) -> bool:
    """True for :class:`DiskFullError` and for an ``OSError`` of a full device or quota."""
    import errno

    return isinstance(exc, DiskFullError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


class ObjectWarning(UserWarning):
    """One catalogue object could not be processed as asked; the batch goes on."""


def warn_object(obj_id, message: str) -> None:
    """Emit an :class:`ObjectWarning` naming the object."""
    warnings.warn(f"object {obj_id}: {message}", ObjectWarning, stacklevel=2)


_ONCE: set = set()


def warn_once(path, message: str) -> None:
    """A whole-input warning (``warning: PATH: message``), printed once per command line.

    ``run`` opens the cube in every step; its problems are said once.
    """
    import logging

    key = (str(path), message)
    if key not in _ONCE:
        _ONCE.add(key)
        logging.getLogger("ifu_extract").warning(f"warning: {path}: {message}")


def reset_once() -> None:
    """Forget the warnings given (at the start of each command line)."""
    _ONCE.clear()

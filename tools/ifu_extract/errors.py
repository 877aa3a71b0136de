"""User-facing errors and per-object statuses.

Every problem with the *whole* input (an unreadable cube, a catalogue without RA) is raised as
:class:`InputError`, which the CLI prints as one stderr line and turns into exit code 1.  Problems
with one *row* (an object off the field, an empty segment) never raise: they become an
:class:`ObjectStatus` that travels with the object into the summary table.
"""

from __future__ import annotations

import warnings

__all__ = ["DiskFullError", "InputError", "ParameterError", "is_disk_full", "ObjectWarning", "OK", "warn_object",
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


class ParameterError(InputError):
    """A bad value of a library parameter, named as the library names it (``"fwhm"``,
    ``"degree"``, ``"match_radius/sky_grow"``), not as a command line spells it.

    The command line reports it under the option of the verb that ran (``--fwhm``): see
    :meth:`for_options`, applied to every verb by :mod:`ifu_extract.cli`.

    Parameters
    ----------
    param : str
        Parameter name(s), ``/``-separated when the problem involves several.
    problem, fix : str
        As for :class:`InputError`.
    """

    def __init__(self, param: str, problem: str, fix: str | None = None):
        self.param = str(param)
        super().__init__(self.param, problem, fix)

    def for_options(self, options: dict) -> InputError:
        """The same error naming options: *options* maps parameter names to option spellings
        (``{"fwhm": "--fwhm"}``); a name without an option becomes ``--name-with-dashes``."""
        label = "/".join(options.get(name, "--" + name.replace("_", "-"))
                         for name in self.param.split("/"))
        return InputError(label, self.problem, self.fix)

    def __reduce__(self):
        return (type(self), (self.param, self.problem, self.fix))


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

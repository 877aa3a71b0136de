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
    """A bad parameter value or combination, naming the parameters the way the caller spells them.

    The library and the steps name parameters by their Python names (``degree``,
    ``allow_no_wcs``); the command line reports them by its options (``--degree``): every verb
    relabels them through :func:`ifu_extract.cli` (the running verb's click options), and a
    command whose step renames a parameter passes the map itself
    (:func:`ifu_extract.commands._options.option_errors`).  *path*, *problem* and *fix* are
    templates whose ``{name}`` fields are the parameters of *params*.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file at fault, a template naming the parameter (``"{fwhm}"``), or None (then the
        message starts with the problem).
    problem, fix : str
        Templates, e.g. ``"{line} and {wave_range} are exclusive"``.
    params : sequence of str
        The parameter names used in the templates.
    labels : dict, optional
        ``{parameter: label}`` shown instead of the parameter names.

    Examples
    --------
    >>> ParameterError("{fwhm}", "-1 is not a positive FWHM", params=("fwhm",)).relabel(
    ...     {"fwhm": "--fwhm"}).path
    '--fwhm'
    """

    def __init__(self, path, problem: str, fix: str | None = None, *, params=(),
                 labels: dict | None = None):
        self.params = tuple(params)
        self.labels = {p: (labels or {}).get(p, p) for p in self.params}
        self.templates = (path, problem, fix)
        shown = _fill(path, self.labels) if isinstance(path, str) else path
        super().__init__(shown, _fill(problem, self.labels),
                         None if fix is None else _fill(fix, self.labels))

    @property
    def relabelled(self) -> bool:
        """True once every parameter is shown by an option spelling (``--x``, ``-o``)."""
        return all(str(v).startswith("-") for v in self.labels.values())

    def relabel(self, labels: dict) -> "ParameterError":
        """The same error with the parameters named by *labels* (``{param: "--option"}``)."""
        new = {p: labels.get(p, self.labels[p]) for p in self.params}
        clone = type(self).__new__(type(self))
        ParameterError.__init__(clone, *self.templates, params=self.params, labels=new)
        for key, value in vars(self).items():
            clone.__dict__.setdefault(key, value)
        return clone

    def for_options(self, options: dict) -> "ParameterError":
        """Name every parameter not yet shown as an option by *options* (``{name: "--x"}``);
        a name without an option becomes ``--name-with-dashes``."""
        labels = {p: (cur if str(cur).startswith("-")
                      else options.get(cur, "--" + str(cur).replace("_", "-")))
                  for p, cur in self.labels.items()}
        return self.relabel(labels)

    def __reduce__(self):
        return (_parameter_error, (type(self), *self.templates, self.params,
                                   self.labels, dict(vars(self))))


def _fill(template: str, labels: dict) -> str:
    # Plain replacement, not str.format: the text may quote values with braces in them.
    for param, label in labels.items():
        template = template.replace("{%s}" % param, label)
    return template


def _parameter_error(cls, path, problem, fix, params, labels, state):
    err = cls.__new__(cls)
    ParameterError.__init__(err, path, problem, fix, params=params, labels=labels)
    for key, value in state.items():
        err.__dict__.setdefault(key, value)
    return err


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

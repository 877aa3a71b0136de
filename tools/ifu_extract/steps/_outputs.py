"""All-or-nothing writing of the several products of one step.

A step that writes more than one file (a catalogue and its segmentation map, a corrected pixel
table and its corrections...) opens one :class:`OutputSet`; every product is written either

* through :meth:`OutputSet.path`, a temporary file next to its destination, renamed into place
  only when the whole block succeeded (:func:`~ifu_extract.fitsout.atomic_path`), or
* by a library writer that puts the file at its final name itself (already atomic, file by
  file), announced with :meth:`OutputSet.claim`: it is removed again if a later product fails.

Either way, an error anywhere in the block leaves none of the new outputs behind.  Before any
work is done, :func:`check_writable` refuses outputs that could not be written at the end.

Example
-------
>>> with OutputSet() as outputs:                                    # doctest: +SKIP
...     write_catalog(table, outputs.path("cat.tsv"), "tsv")
...     outputs.claim("plot.png")
...     plot(table, "plot.png")
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..errors import ParameterError
from ..fitsout import atomic_path, write_error

__all__ = ["OutputSet", "OutputError", "check_writable"]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class OutputError(ParameterError):
    """An output that cannot be written, naming the step parameter that gave its path.

    ``param`` is the step's parameter name (``"output"``, ``"segmap"``); a command reports it
    by its own option (:func:`ifu_extract.commands._options.option_errors`).
    """

    def __init__(self, path, problem: str, fix: str | None = None, *, param: str = "output"):
        self.param = param
        super().__init__(path, problem, fix, params=(param,))


def check_writable(outputs: dict) -> None:
    """Fail before the work, not after it, when an output file cannot be written.

    Parameters
    ----------
    outputs : dict
        ``{parameter name: path}``; None values (products not asked for) are skipped.

    Raises
    ------
    OutputError
        The path is a folder, its folder does not exist or is not writable.
    """
    for param, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise OutputError(path, f"is a folder ({{{param}}} needs a file name)",
                              f"give a file path to {{{param}}}", param=param)
        if not parent.is_dir():
            raise OutputError(path, "the output folder does not exist",
                              f"create it or choose another {{{param}}}", param=param)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(path, "the output folder is not writable",
                              f"choose another {{{param}}}", param=param)


class OutputSet:
    """The products of one step, written all together or not at all.

    Use as a context manager.  On success the temporary files of :meth:`path` are renamed into
    place (in the order they were asked for); on any error they are deleted, and so are the
    files announced by :meth:`claim` and the products already renamed, unless the file existed
    before the block (an existing file cannot be restored; Galaxy creates its outputs empty
    before the job, and those are left as they are).
    """

    def __init__(self):
        self._stack = contextlib.ExitStack()
        self._pending: list[tuple[Path, contextlib.AbstractContextManager]] = []
        self._created: list[Path] = []        # products that were not there before the block
        self._seen: set[str] = set()

    def _note(self, dest) -> Path:
        dest = Path(dest)
        key = os.path.abspath(dest)
        if key not in self._seen:
            self._seen.add(key)
            if not dest.exists():
                self._created.append(dest)
        return dest

    def path(self, dest, suffix: str | None = None) -> Path:
        """A temporary path to write product *dest* to; renamed to *dest* when all succeeded.

        Parameters
        ----------
        dest : str or os.PathLike
            Final path of the product.
        suffix : str, optional
            Suffix of the temporary file, for writers that choose the format from it (default:
            the suffix of *dest*).
        """
        dest = self._note(dest)
        cm = atomic_path(dest, suffix=suffix)
        tmp = cm.__enter__()
        self._pending.append((dest, cm))
        return tmp

    def claim(self, dest) -> Path:
        """Announce product *dest*, written at its final path by a writer of its own.

        Returns *dest* as a :class:`~pathlib.Path`.  Call it before the writer runs, so that
        the file is known to be new.
        """
        return self._note(dest)

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            last = self._pending[-1][0] if self._pending else None
            self._abort(exc_type, exc, tb)
            if last is not None and isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                # A full disk while writing a product: the one-line error naming it.
                raise write_error(last, exc) from None
            return False
        try:
            # Rename the temporary files into place, first asked first renamed.
            while self._pending:
                dest, cm = self._pending.pop(0)
                cm.__exit__(None, None, None)
        except BaseException as err:
            self._abort(type(err), err, err.__traceback__)
            raise
        return False

    def _abort(self, exc_type, exc, tb) -> None:
        for _dest, cm in self._pending:           # temporary files not renamed yet: delete
            with contextlib.suppress(BaseException):
                cm.__exit__(exc_type, exc, tb)
        self._pending.clear()
        for dest in self._created:                # new products already in place: remove
            with contextlib.suppress(OSError):
                os.unlink(dest)

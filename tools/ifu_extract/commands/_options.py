"""Options shared by several verbs, so that every verb (and Galaxy wrapper) spells them alike."""

from __future__ import annotations

import contextlib
import logging
import math
import os

import click

from ..catalog import FORMATS
from ..errors import InputError

log = logging.getLogger("ifu_extract")


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses NaN and infinities (usage errors).

    ``FloatRange(min=0, min_open=True)`` lets NaN through, since every comparison with NaN is
    false.
    """

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


#: Box side of per-object stamps, arcsec: a positive finite number (clipped to the field).
BOX_SIZE = FiniteFloatRange(min=0, min_open=True)


def cube_options(func):
    """``--data-ext/--var-ext/--dq-ext``: override the cube layout detection."""
    options = [
        click.option("--data-ext", default=None, metavar="NAME|INDEX",
                     help="Extension holding the flux (default: detected: DATA, FLUX, SCI or the "
                          "first 3-D HDU)."),
        click.option("--var-ext", default=None, metavar="NAME|INDEX",
                     help="Extension holding the variance (STAT), inverse variance (IVAR) or error "
                          "(ERR); the kind follows the name."),
        click.option("--dq-ext", default=None, metavar="NAME|INDEX",
                     help="Extension holding data-quality flags; flagged voxels are ignored."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def cube_kwargs(kwargs: dict) -> dict:
    """Pop the cube options from a command's kwargs, as open_cube keyword arguments."""
    return {k: kwargs.pop(k) for k in ("data_ext", "var_ext", "dq_ext")}


def wave_range_option(func):
    return click.option("--wave-range", nargs=2, type=float, default=None, metavar="MIN MAX",
                        help="Wavelength range, Angstrom (channel centres inside are used).")(func)


def catalog_format_option(func):
    return click.option("--catalog-format", type=click.Choice(FORMATS), default="auto",
                        show_default=True,
                        help="Catalogue format; 'auto' detects it from the content.")(func)


def report(message: str) -> None:
    """Progress/result line (suppressed by --quiet)."""
    log.info(message)


def batch_exit(n_ok: int, n_total: int, what: str = "object") -> None:
    """Exit 1 when no object of a batch could be processed (row problems were warned)."""
    if n_total and n_ok == 0:
        raise click.ClickException(f"no {what} could be processed ({n_total} tried); "
                                   "see the warnings above")


def white_option(func):
    """``--white``: a white-light image of the cube already made (saves a pass over the cube)."""
    return click.option("--white", "white_path", type=click.Path(dir_okay=False), default=None,
                        help="White-light image of this cube from 'ifu-extract image' (computed "
                             "from the cube when not given).")(func)


@contextlib.contextmanager
def option_names(**aliases):
    """Report a library error that names a parameter (``"degree"``) by the option of the running
    command that sets it (``--degree``).

    The library and the steps name their parameters, never CLI flags; the click parameter of the
    same name gives the flag.  *aliases* maps a library parameter name to a click parameter name
    where they differ (``psf_star="psf_star"`` is implied).
    """
    try:
        yield
    except InputError as exc:
        ctx = click.get_current_context(silent=True)
        name = aliases.get(exc.path, exc.path)
        flag = None
        if name is None or not name.isidentifier() or os.path.exists(exc.path):
            raise  # a file, not a parameter
        for param in ctx.command.params if ctx is not None else ():
            if isinstance(param, click.Option) and param.name == name:
                flag = max(param.opts, key=len)
        if flag is None:
            raise
        raise type(exc)(flag, exc.problem, exc.fix) from exc

"""Options shared by several verbs, so that every verb (and Galaxy wrapper) spells them alike."""

from __future__ import annotations

import contextlib
import logging
import math
import sys

import click

from ..catalog import FORMATS
from ..errors import ParameterError

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


class MaxFalse(click.ParamType):
    """A count of false lines (integer >= 0) or ``off`` (None)."""

    name = "INTEGER|off"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text in ("off", "none"):
            return None
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 0:
            self.fail(f"{value!r} is neither a count of lines (0 or more) nor 'off'", param, ctx)
        return n


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


def cube_name_option(func):
    """``--cube-name``: the cube's name in the Source files it makes (Galaxy: the dataset's name)."""
    return click.option("--cube-name", default=None, metavar="NAME",
                        help="Name of the cube recorded in the Source files (CUBE keyword) and shown "
                             "in the QA report [default: the file name].")(func)


def cube_kwargs(kwargs: dict) -> dict:
    """Pop the cube options from a command's kwargs, as open_cube keyword arguments."""
    out = {k: kwargs.pop(k) for k in ("data_ext", "var_ext", "dq_ext")}
    if kwargs.get("cube_name") is not None:
        out["cube_name"] = kwargs.pop("cube_name")
    kwargs.pop("cube_name", None)
    return out


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


def option_label(command: click.Command, param: str) -> str:
    """The option (``-o``, ``--segmap``) of *command* whose parameter name is *param*.

    Steps and the library name parameters; a command reports them by its own options.  The
    parameter name is returned unchanged when *command* has no such option.
    """
    for p in command.params:
        if p.name == param:
            return p.opts[0] if isinstance(p, click.Option) else p.human_readable_name
    return param


@contextlib.contextmanager
def option_errors(command: click.Command | None = None, extra: dict | None = None):
    """Report a :class:`~ifu_extract.errors.ParameterError` by the options of *command*.

    Parameters
    ----------
    command : click.Command, optional
        Default: the click command running now.
    extra : dict, optional
        ``{parameter: option}`` for parameters whose names are not those of the command's
        options (the line scan's ``snr`` is ``detect --line-snr``).
    """
    try:
        yield
    except ParameterError as exc:
        cmd = command or click.get_current_context().command
        # A step may have renamed a library parameter to its own (the scan's snr is line_snr).
        names = {p: exc.labels.get(p, p) for p in exc.params}
        labels = {p: (extra or {}).get(n) or option_label(cmd, n) for p, n in names.items()}
        raise exc.relabel(labels) from None


class _Progress:
    """``progress(done, total)`` drawn as a click progress bar, opened at the first call."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.bar, self.done = label, enabled, None, 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label,
                                         file=click.get_text_stream("stderr"))
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool = True):
    """A ``progress(done, total)`` callback for a step, shown as a progress bar on a terminal
    (not with --quiet, not when stderr is redirected); closed when the block ends."""
    quiet = (click.get_current_context().find_root().obj or {}).get("quiet")
    bar = _Progress(label, enabled and not quiet and sys.stderr.isatty())
    try:
        yield bar
    finally:
        bar.close()

"""The ``ifu-extract`` command line: one click group, one module per verb.

Verbs are imported lazily (``ifu-extract info`` does not import matplotlib or SEP).  User errors
(:class:`~ifu_extract.errors.InputError`) become one stderr line and exit code 1; usage errors
exit 2; per-object warnings are printed as ``warning: object ID: ...`` lines.  Ctrl-C exits
with 130 and SIGTERM (Galaxy, Slurm, ``docker stop``) with 143, both after the same cleanup:
worker processes killed, temporary files removed (:mod:`ifu_extract.parallel`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import sys
import warnings

import click

from . import __version__
from . import pathguard
from .commands._paths import is_output
from .errors import InputError, ObjectWarning, OptionConflict, ParameterError, reset_once
from .parallel import Terminated, install_sigterm_handler

# This module imports no numpy (nor astropy): main() must set the BLAS threads before it loads.

#: verb -> "module:attribute" of its click command, under ifu_extract.commands.
COMMANDS = {
    "info": "info:cmd",
    "image": "image:cmd",
    "detect": "detect:cmd",
    "cutout": "cutout:cmd",
    "mask": "mask:cmd",
    "extract": "extract:cmd",
    "run": "run:cmd",
    "report": "report:cmd",
    "split": "split:cmd",
    "merge": "merge:cmd",
    "demo": "demo:cmd",
    "contsub": "contsub:cmd",
    "xcorr": "xcorr:cmd",
    "deblend": "deblend:cmd",
    "pixtable": "pixtable:group",
    "spectra": "spectra:group",
}

log = logging.getLogger("ifu_extract")


def _guard(cmd: click.Command) -> click.Command:
    """Wrap *cmd* (and the subcommands of a group) so that no output is one of its inputs."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _guard(sub)
        return cmd
    if cmd.callback is None or getattr(cmd.callback, "_guarded", False):
        return cmd
    callback = cmd.callback
    paths = {p.name: p for p in cmd.params if isinstance(p.type, click.Path)}
    # Outputs are the parameters of type OutputPath: declared where the option is, nowhere else.
    out_names = {n for n, p in paths.items() if is_output(p)}

    def label(p):
        return p.opts[-1] if isinstance(p, click.Option) else p.human_readable_name

    # Library errors name parameters (ParameterError("fwhm")); the user sees this verb's option.
    options = {p.name: label(p) for p in cmd.params if isinstance(p, click.Option)}

    def guarded(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except OptionConflict as exc:  # a usage error (exit 2), as the verbs' own option checks
            raise click.UsageError(str(exc)) from None

    def checked(*args, **kwargs):
        outputs = {label(paths[n]): kwargs.get(n) for n in paths if n in out_names}
        inputs = {label(paths[n]): kwargs.get(n) for n in paths if n not in out_names}
        pathguard.check_paths(outputs, inputs)
        pathguard.register_inputs(inputs)
        folders = [kwargs.get(n) for n in paths if n in out_names and kwargs.get(n)
                   and not paths[n].type.file_okay]
        with contextlib.ExitStack() as stack:
            for folder in folders:  # no empty output folder left behind by a failure
                stack.enter_context(pathguard.folder_cleanup(folder))
            try:
                return callback(*args, **kwargs)
            except ParameterError as exc:
                raise exc.for_options(options) from None

    guarded._guarded = True
    guarded.__wrapped__ = callback
    cmd.callback = guarded
    return cmd


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (and listed if importable)."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(f"ifu_extract.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ifu_extract.commands.{module}":
                return None  # verb not built yet
            raise
        return _guard(getattr(mod, attr))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ObjectWarning):
        click.echo(f"warning: {message}", err=True)
    elif log.isEnabledFor(logging.DEBUG):
        click.echo(f"warning: {category.__name__}: {message} ({filename}:{lineno})", err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ifu-extract")
@click.option("-q", "--quiet", is_flag=True, help="Print errors and warnings only.")
@click.option("-v", "--verbose", is_flag=True, help="Print debugging details and library warnings.")
@click.pass_context
def cli(ctx, quiet, verbose):
    """Turn IFU datacubes into clean 1D spectra of every object in the field.

    Each verb is one step (a Galaxy tool); `ifu-extract run` chains them.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    log.setLevel(level)
    for name in ("mpdaf", "astropy", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)
    pathguard.clear_inputs()  # the inputs of this command line only
    reset_once()
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["verbose"] = verbose


#: BLAS thread-pool variables, read once when numpy (or scipy) loads its BLAS.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_blas() -> None:
    """Make BLAS single-threaded in this program unless the user set it (environment variables,
    so that it holds for every BLAS loaded later, scipy's included).

    Our linear algebra is many small products (one object at a time) and we parallelise over
    objects with processes; a multi-threaded BLAS only adds contention (40x slower measured on a
    loaded 2-core machine).  Called when the command line starts, before numpy is imported;
    importing the library changes no environment.
    """
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def sweep_stale_temps() -> None:
    """:func:`ifu_extract.fitsout.sweep_stale_temps` (imported here, when needed: fitsout loads
    numpy, which must come after :func:`single_threaded_blas`)."""
    from .fitsout import sweep_stale_temps as sweep

    sweep()


def main(argv=None):
    """Entry point of the ``ifu-extract`` console script."""
    single_threaded_blas()
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", ObjectWarning)
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    prog = "ifu-extract"
    install_sigterm_handler()
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        sweep_stale_temps()   # the workers are stopped: what they were writing goes too
        if isinstance(exc.__cause__, Terminated):      # click turns KeyboardInterrupt into Abort
            click.echo("terminated", err=True)
            sys.exit(Terminated.exit_code)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else prog
        click.echo(f"{cmd}: usage error: {exc.format_message()} (see '{cmd} --help')", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except InputError as exc:
        click.echo(f"{prog}: error: {exc.oneline()}", err=True)
        sys.exit(1)
    except Terminated as exc:
        sweep_stale_temps()
        click.echo("terminated", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sweep_stale_temps()
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            click.echo(f"{prog}: error: {where}no space left on the device; free some space or "
                       "choose another output folder with -o", err=True)
            sys.exit(1)
        if exc.errno != errno.ENOMEM:
            if verbose:
                raise
            _internal_error(prog, exc)
        _out_of_memory(prog)
    except MemoryError:
        _out_of_memory(prog)
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, traceback on -v
        if verbose:
            raise
        _internal_error(prog, exc)
    sys.exit(rv if isinstance(rv, int) else 0)


def _out_of_memory(prog: str):
    click.echo(f"{prog}: error: out of memory; process a smaller window or fewer objects "
               "at once (--wave-range, split), or raise the memory limit (ulimit -v)", err=True)
    sys.exit(1)


def _internal_error(prog: str, exc: BaseException):
    click.echo(f"{prog}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
               " (rerun with --verbose for the traceback and report it)", err=True)
    sys.exit(3)


if __name__ == "__main__":  # pragma: no cover
    main()

"""Parameters of ``ifu-extract run``: verb defaults, ``run.toml``, then the command line.

``run.toml`` has one table per verb whose keys are that verb's long option names (with or
without the leading dashes, ``-`` or ``_``)::

    [detect]
    thresh = 2.0
    minarea = 6

    [extract]
    aperture = [0.5, 1.0]
    fwhm = 0.7

Values are checked with the verb's own option types (bounds and choices), so a wrong value is
refused with the file, the key and the allowed range; command-line options of ``run`` win.

The options that shape the products of a run are stored in ``OUTDIR/run_options.json``
(:func:`write_run_options`); ``run --resume`` compares them with its own
(:func:`changed_options`) and refuses to mix products made with different options.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import click

from .errors import InputError

__all__ = ["RUN_OPTIONS_FILE", "changed_options", "load_run_config", "read_run_options",
           "run_options_record", "verb_params", "write_run_options"]

#: File of OUTDIR that records the options of the run that made it.
RUN_OPTIONS_FILE = "run_options.json"
#: Options that change how a run goes, not what it makes.
_NOT_PRODUCT = {"threads", "resume", "force"}


def _option_map(command: click.Command) -> dict[str, click.Parameter]:
    """``{normalised long name: param}`` for the options of *command*."""
    out = {}
    for p in command.params:
        if not isinstance(p, click.Option):
            continue
        for opt in p.opts + p.secondary_opts:
            if opt.startswith("--"):
                out[opt[2:].replace("_", "-")] = p
        out[p.name.replace("_", "-")] = p
    return out


def verb_params(command: click.Command, section: dict, source: str) -> dict:
    """Convert one TOML table to keyword arguments of *command*'s callback.

    Parameters
    ----------
    command : click.Command
    section : dict
        The table (``{option name: value}``).
    source : str
        Where the table comes from (``run.toml [detect]``), for error messages.
    """
    options = _option_map(command)
    out = {}
    for key, value in section.items():
        norm = str(key).lstrip("-").replace("_", "-")
        param = options.get(norm)
        if param is None or param.name in ("output",):
            known = sorted({k for k, p in options.items() if p.name != "output" and not k.startswith("no-")})
            raise InputError(source, f"unknown option {key!r} for '{command.name}'",
                             f"use one of: {', '.join(known)}")
        # --flag/--no-flag given as its "no-" name with true means False.
        if norm.startswith("no-") and param.is_flag and norm in [o[2:] for o in param.secondary_opts]:
            value = not value
        try:
            if param.multiple or (param.nargs != 1 and param.nargs != 0):
                values = value if isinstance(value, list) else [value]
                if param.nargs > 1:
                    value = tuple(param.type.convert(v, param, None) for v in values)
                else:
                    value = tuple(param.type.convert(v, param, None) for v in values)
            elif param.is_flag:
                if not isinstance(value, bool):
                    raise click.BadParameter(f"{value!r} is not true or false")
            else:
                value = param.type.convert(value, param, None)
        except click.BadParameter as exc:
            raise InputError(source, f"bad value for {key!r}: {exc.format_message()}",
                             "fix the value in the config file") from None
        out[param.name] = value
    return out


def load_run_config(path, commands: dict[str, click.Command]) -> dict[str, dict]:
    """Read ``run.toml`` into ``{verb: {param name: value}}`` (validated).

    Parameters
    ----------
    path : str or os.PathLike
    commands : dict
        ``{verb: click.Command}`` of the verbs a section may name.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such config file", "check the --config path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid TOML ({exc})", "fix the syntax (see the README example)") from None
    out = {}
    for verb, section in data.items():
        if verb not in commands:
            raise InputError(path, f"unknown section [{verb}]", f"use {', '.join('[' + v + ']' for v in commands)}")
        if not isinstance(section, dict):
            raise InputError(path, f"[{verb}] must be a table of options", "write key = value lines under it")
        out[verb] = verb_params(commands[verb], section, f"{path} [{verb}]")
    return out


def _jsonable(value):
    """*value* as JSON would give it back (tuples as lists), so records compare equal."""
    return json.loads(json.dumps(value, default=str))


def run_options_record(inputs: dict, flags: dict, params: dict[str, dict]) -> dict:
    """The options of a run that shape its products, as ``{"--option": value}``.

    Parameters
    ----------
    inputs : dict
        ``{"CUBE": fingerprint, "CATALOG": fingerprint}`` of the input files (content, not name).
    flags : dict
        ``run``'s own options (``{"detect": True, "match_radius": 0.6, ...}``).
    params : dict
        ``{verb: {parameter: value}}`` given to each step (``run.toml`` and the command line).
        A parameter set to different values for different steps is recorded per step.
    """
    out = {k: _jsonable(v) for k, v in inputs.items()}
    for name, value in flags.items():
        if name not in _NOT_PRODUCT:
            out["--" + name.replace("_", "-")] = _jsonable(value)
    for verb in sorted(params):
        for name, value in sorted(params[verb].items()):
            if name in _NOT_PRODUCT:
                continue
            key = "--" + name.replace("_", "-")
            value = _jsonable(value)
            if key in out and out[key] != value:
                key = f"{verb} {key}"
            out.setdefault(key, value)
    return out


def write_run_options(outdir, record: dict) -> Path:
    """Write *record* to ``OUTDIR/run_options.json`` (atomically, sorted keys)."""
    from .fitsout import atomic_path

    dest = Path(outdir) / RUN_OPTIONS_FILE
    with atomic_path(dest, suffix=".json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return dest


def read_run_options(outdir) -> dict | None:
    """The record of ``OUTDIR/run_options.json``; None when absent or unreadable."""
    try:
        return json.loads((Path(outdir) / RUN_OPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def changed_options(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """``(option, old value, new value)`` for every option whose value differs (None: not set)."""
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]

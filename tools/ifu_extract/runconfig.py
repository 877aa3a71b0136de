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
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click

from .errors import InputError

__all__ = ["load_run_config", "verb_params"]


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

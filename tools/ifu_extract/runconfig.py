"""The record of the options of a run: ``OUTDIR/run_options.json``.

The options that shape the products of a run are stored in ``OUTDIR/run_options.json``
(:func:`write_run_options`); ``run --resume`` compares them with its own
(:func:`changed_options`) and refuses to mix products made with different options.  (The
parameters themselves come from each verb's options and ``run.toml``:
:mod:`ifu_extract.commands.run`.)
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RUN_OPTIONS_FILE", "changed_options", "read_run_options", "run_options_record",
           "write_run_options"]

#: File of OUTDIR that records the options of the run that made it.
RUN_OPTIONS_FILE = "run_options.json"
#: Options that change how a run goes, not what it makes.
_NOT_PRODUCT = {"threads", "resume", "force"}


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

"""The ``run`` step: check every input, then run the chain into the output folder.

:func:`run_run` validates first and writes second: the catalogue, the segmentation maps and the
output paths are checked before any product is written (the cube by the first step, before it
writes); a folder it created is removed again if it is still empty when a step fails.  The
options that shape the products are recorded in ``OUTDIR/run_options.json`` once the cube has
been read, and ``resume`` refuses (or, with ``force``, overrides) a folder made with other
options (:func:`check_resume`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from astropy.table import Table

from ..catalog import read_catalog
from ..errors import InputError
from ..fitsout import file_checksum
from ..pathguard import check_paths, created_folder
from .pipeline import PRODUCTS, RunPlan, RunResult, run_chain, with_resume
from ..runconfig import (RUN_OPTIONS_FILE, changed_options, read_run_options, run_options_record,
                         write_run_options)
from ..segmap import read_segmap

__all__ = ["RunRequest", "run_run", "check_resume", "fingerprint"]

log = logging.getLogger("ifu_extract")


@dataclass
class RunRequest:
    """Inputs and options of ``run``.

    Attributes
    ----------
    cube, catalog : str
        The cube and the user's catalogue (None: detections only).
    outdir : str
    plan : RunPlan
    catalog_format : str
        Format of *catalog*.
    given : dict
        ``{verb: {parameter: value}}`` set by the user (config file and options), recorded in
        ``run_options.json`` with ``flags`` (``run``'s own options).
    flags : dict
    config_file : str, optional
        The config file read (an input: never overwritten by a product).
    weight_images : tuple of str
        Files named by the extraction's ``TAG=FILE`` weights (inputs, for the same check).
    force : bool
        With resume: accept options that differ from the recorded ones.
    """

    cube: str
    catalog: str | None
    outdir: str
    plan: RunPlan
    catalog_format: str = "auto"
    given: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    config_file: str | None = None
    force: bool = False


def fingerprint(path) -> str | None:
    """Content fingerprint of an input file (None when absent: the step that reads it says so)."""
    if not path:
        return None
    try:
        return file_checksum(path)
    except OSError:
        return None


def _show(value) -> str:
    return "unset" if value is None else json.dumps(value)


def check_resume(out, record: dict, resume: bool, force: bool) -> bool:
    """Whether to resume: refuse ``resume`` when the options differ from those recorded in *out*.

    With *force* the difference is reported and every object is extracted again (returns
    False), so that no Source file made with other options is kept.

    Raises
    ------
    ParameterError
        The options changed and *force* is not set.
    """
    from ..errors import ParameterError

    if not resume:
        return False
    old = read_run_options(out)
    if old is None and any(Path(out, "sources").glob("*.fits")):
        log.info(f"--resume: no {RUN_OPTIONS_FILE} in {out}: the options of the earlier run "
                 "cannot be checked")
    diff = changed_options(old, record) if old is not None else []
    if not diff:
        return True
    text = ", ".join(f"{k} was {_show(a)}, now {_show(b)}" for k, a, b in diff)
    if not force:
        raise ParameterError(Path(out) / RUN_OPTIONS_FILE, "{resume} with changed options: " + text,
                             "rerun without {resume} (or into a new folder), or add {force} to "
                             "extract every object again with the new options",
                             params=("resume", "force"))
    log.info(f"--force: options changed ({text}); every object is extracted again")
    return False


def _validate(req: RunRequest) -> Table | None:
    """Read and check every input but the cube before anything is written."""
    plan = req.plan
    if not req.catalog and plan.detect is None:
        raise InputError(None, "no catalogue and no detection",
                         "give a CATALOG or let run detect sources")
    if plan.detect is None and not plan.segmaps:
        raise InputError(None, "no segmentation map", "let run detect sources or give segmaps")
    # No product of the chain may replace an input (a catalogue given as OUTDIR/catalog.tsv).
    check_paths({f"the product {name} of -o": Path(req.outdir) / name for name in PRODUCTS.values()},
                {"CUBE": req.cube, "CATALOG": req.catalog, "--config": req.config_file,
                 "--segmap": list(plan.segmaps),
                 "--image": [w.split("=", 1)[-1] for w in plan.extract.weight_images]},
                fix="choose another -o folder, or move the input out of it")
    table = read_catalog(req.catalog, req.catalog_format) if req.catalog else None
    for path in plan.segmaps:
        read_segmap(path)
    return table


def run_run(req: RunRequest) -> RunResult:
    """Run the whole chain of *req* into ``req.outdir`` (created when missing).

    Returns
    -------
    RunResult
    """
    user_table = _validate(req)
    given = dict(req.given)
    record = run_options_record({"CUBE": fingerprint(req.cube), "CATALOG": fingerprint(req.catalog)},
                                {**req.flags, "segmap": [fingerprint(p) for p in req.plan.segmaps]},
                                given)
    # The cube is checked by the first step, before it writes; a folder this step made is
    # removed if it is still empty when a step fails.
    with created_folder(req.outdir) as out:
        plan = req.plan
        if plan.extract.resume:
            plan = with_resume(plan, check_resume(out, record, True, req.force))
        return run_chain(req.cube, user_table, out, plan,
                         after_first_step=lambda: write_run_options(out, record))

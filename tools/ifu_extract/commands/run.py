"""``ifu-extract run CUBE [CATALOG] -o OUTDIR [--config run.toml]``: the whole chain.

image -> detect -> (merge with the catalogue) -> mask -> extract -> report, each step the same
step a Galaxy user runs as its own tool, writing its product into OUTDIR so that any step can be
inspected or re-run (:mod:`ifu_extract.steps.pipeline`).

Each verb's parameters come from that verb's own options: their defaults, then ``run.toml``'s
table for the verb, then the options of ``run`` that set one of them, given to click as the
verb's ``default_map`` so that every value is checked by the verb's own option (type, bounds,
choices).  ``run.toml`` has one table per verb whose keys are that verb's long option names
(with or without the leading dashes, ``-`` or ``_``)::

    [detect]
    thresh = 2.0
    minarea = 6

    [extract]
    aperture = [0.5, 1.0]
    fwhm = 0.7

A wrong key or value is refused with the file, the key and the allowed range.  An option of
``run`` that sets a verb's parameter is a copy of that verb's option (:func:`_verb_option`): its
bounds cannot drift from the verb's.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import click

from ..errors import InputError
from ..steps.pipeline import RunPlan
from ..steps.contsub import ContsubConfig
from ..steps.deblend import DeblendConfig, DeblendStepConfig
from ..steps.detect import DetectConfig
from ..steps.extract import ExtractOptions
from ..steps.image import ImageOptions
from ..steps.mask import MaskConfig
from ..steps.report import ReportConfig
from ..steps.run import RunRequest, run_run
from ..steps.xcorr import XcorConfig
from ._options import catalog_format_option, cube_name_option, cube_options, option_errors
from .contsub import cmd as contsub_cmd
from .deblend import cmd as deblend_cmd
from .detect import cmd as detect_cmd
from .extract import cmd as extract_cmd
from .image import cmd as image_cmd
from .mask import cmd as mask_cmd
from .report import cmd as report_cmd
from .xcorr import cmd as xcorr_cmd
from ._paths import OutputPath

__all__ = ["cmd", "VERBS", "load_run_config", "verb_params", "build_request"]

#: The verbs of the chain: a ``run.toml`` table each.
VERBS: dict[str, click.Command] = {
    "image": image_cmd, "detect": detect_cmd, "mask": mask_cmd, "extract": extract_cmd,
    "report": report_cmd, "contsub": contsub_cmd, "xcorr": xcorr_cmd, "deblend": deblend_cmd}

_CUBE = ("data_ext", "var_ext", "dq_ext", "cube_name")
#: run parameter -> the (verb, parameter) pairs it sets; filled by the option declarations.
_SETS: dict[str, list[tuple[str, str]]] = {}


def _verb_option(verb: str, name: str, *also: tuple[str, str], decls=None, help=None):
    """Declare an option of ``run`` that is option *name* of *verb* (and sets *also*).

    The option is a copy of the verb's own (type, bounds, choices, help), with no default: a
    value given sets the verb's parameter; none leaves the verb's default (or run.toml's).
    """
    src = next(p for p in VERBS[verb].params if p.name == name)
    if decls is None:
        decls = list(src.opts)
        if src.secondary_opts:
            decls = [f"{src.opts[-1]}/{src.secondary_opts[-1]}"]
        decls.append(src.name)
    option = click.Option(decls, type=None if src.is_flag else src.type, multiple=src.multiple,
                          nargs=src.nargs, is_flag=src.is_flag and not src.secondary_opts or None,
                          default=None, metavar=src.metavar, help=help or src.help)
    _SETS[option.name] = [(verb, name), *also]

    def deco(func):
        func.__dict__.setdefault("__click_params__", []).append(option)
        return func
    return deco


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


def toml_params(command: click.Command, section: dict, source: str) -> dict:
    """Convert one TOML table to parameters of *command* (checked by its options).

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
        out[verb] = toml_params(commands[verb], section, f"{path} [{verb}]")
    return out


def verb_params(command: click.Command, default_map: dict) -> dict:
    """The parameters *command* takes with *default_map* as its defaults (click's mechanism).

    Every value goes through the command's own option (conversion, bounds); required
    parameters (the files the chain gives) are left out.
    """
    ctx = click.Context(command, info_name=command.name, default_map=default_map)
    out = {}
    with ctx:
        for p in command.params:
            if p.required:
                continue
            value, _source = p.consume_value(ctx, {})
            out[p.name] = p.process_value(ctx, value)
    return out


def _fill(cls, params: dict, **extra):
    """An instance of dataclass *cls* from the parameters named as its fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in params.items() if k in names}
    if "cube_kwargs" in names:
        kw["cube_kwargs"] = {k: params[k] for k in _CUBE if k in params}
    for key in ("wave_range", "mask_windows", "apertures", "weight_images"):
        if key in kw and kw[key] is not None:
            kw[key] = tuple(kw[key])
    return cls(**{**kw, **extra})


def _plan(params: dict[str, dict], flags: dict, threads: int) -> RunPlan:
    """The steps' configurations from each verb's parameters, and run's own options."""
    p = params
    deblend = None
    if flags["deblend"]:
        deblend = _fill(DeblendStepConfig, p["deblend"], fit=_fill(DeblendConfig, p["deblend"]))
    report = None
    if flags["plots"]:
        report = _fill(ReportConfig, p["report"], plots=not p["report"]["no_plots"],
                       tag=p["report"]["spectrum_tag"])
    return RunPlan(
        image=_fill(ImageOptions, p["image"]),
        detect=_fill(DetectConfig, p["detect"]) if flags["detect"] else None,
        mask=_fill(MaskConfig, p["mask"]),
        extract=_fill(ExtractOptions, p["extract"]),
        contsub=_fill(ContsubConfig, p["contsub"]) if flags["contsub"] else None,
        xcorr=_fill(XcorConfig, p["xcorr"]) if flags["xcor"] else None,
        xcorr_reference=p["xcorr"]["reference"],
        deblend=deblend, deblend_image=p["deblend"].get("image"), report=report,
        line_scan=flags["line_scan"], match_radius=flags["match_radius"],
        segmaps=tuple(flags["segmaps"]), cube_ext={k: flags[k] for k in _CUBE},
        threads=threads, html=flags.get("html"), assets_dir=flags.get("assets_dir"))


def build_request(cube, catalog, output, *, config=None, options: dict | None = None,
                  flags: dict | None = None, force: bool = False) -> RunRequest:
    """The :class:`~ifu_extract.steps.run.RunRequest` of ``run`` (also used by ``demo``).

    Parameters
    ----------
    config : str, optional
        ``run.toml``.
    options : dict
        Options of ``run`` that set verbs' parameters (``{"fwhm": 0.75}``), given by the user.
    flags : dict
        ``run``'s own options (``detect``, ``contsub``, ``match_radius``...; defaults below).
    """
    flags = {"detect": True, "contsub": False, "xcor": False, "deblend": False, "line_scan": False,
             "plots": True, "match_radius": 0.6, "catalog_format": "auto", "segmaps": (),
             "html": None, "assets_dir": None, **{k: None for k in _CUBE}, **(flags or {})}
    given = {verb: {} for verb in VERBS}
    if config:
        for verb, values in load_run_config(config, VERBS).items():
            given[verb].update(values)
    for name, value in (options or {}).items():
        if value is None or value == ():
            continue
        for verb, pname in _SETS.get(name, []):
            given[verb][pname] = value
    # The cube layout is run's own option, and every verb reading the cube gets it.
    for k in _CUBE:
        if flags[k] is not None:
            for verb in ("image", "mask", "extract", "contsub", "xcorr", "deblend"):
                given[verb][k] = flags[k]
    # --threads is a number of processes, for every verb that has workers.
    if os.environ.get("GALAXY_SLOTS") and "threads" not in given["extract"]:
        given["extract"]["threads"] = int(os.environ["GALAXY_SLOTS"])
    threads = given["extract"].get("threads", 1)
    for verb in ("report", "contsub"):
        given[verb].setdefault("threads", threads)
    params = {verb: verb_params(VERBS[verb], given[verb]) for verb in VERBS}
    # The deblend step shares the extraction's PSF and wavelength range (unless told otherwise).
    for key in ("wave_range", "fwhm", "fallback_fwhm", "beta"):
        if params["deblend"].get(key) is None and params["extract"].get(key) is not None:
            params["deblend"][key] = params["extract"][key]
    # What run_options.json records: run's own options (the segmentation maps by content).
    record_flags = {k: v for k, v in flags.items()
                    if k not in ("segmaps", "html", "assets_dir", "plots", "cube_name")}
    return RunRequest(str(cube), str(catalog) if catalog else None, str(output),
                      _plan(params, flags, threads), catalog_format=flags["catalog_format"],
                      given=given, flags=record_flags, config_file=config, force=force)


@click.command("run")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder (white.fits, detections.tsv, segmap.fits, catalog.tsv, psf.fits when "
                   "the PSF was fitted on the field's stars or is the --fwhm-fallback, masks.fits, "
                   "sources/, summary.tsv, qa/, "
                   "index.html, run_options.json; lines.tsv and line_images.fits with --line-scan).")
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="run.toml: one table per verb ([image], [detect], [mask], [extract], [report], "
                   "[contsub], [xcorr], [deblend]) with that verb's long option names as keys; "
                   "command-line options win.")
@click.option("--detect/--no-detect", "do_detect", default=True, show_default=True,
              help="Detect sources on the white-light image and add those not in CATALOG.")
@click.option("--match-radius", type=click.FloatRange(min=0), default=0.6, show_default=True,
              help="A detection (or a line emitter) within this radius (arcsec) of a catalogue "
                   "object is that object.")
@click.option("--segmap", "segmaps", multiple=True, type=click.Path(dir_okay=False),
              help="Extra segmentation map(s) for the masks (e.g. from HST), any grid.")
@_verb_option("detect", "thresh", help="Detection threshold (see detect --thresh).")
@_verb_option("detect", "minarea", help="Detection minimum area, spaxels.")
@_verb_option("mask", "size")
@_verb_option("mask", "mode")
@_verb_option("mask", "split")
@_verb_option("mask", "voronoi")
@_verb_option("extract", "fwhm", ("mask", "fwhm"),
              help="PSF FWHM, arcsec, of every step (mask, extract, line scan, deblend) "
                   "[default: FSF keywords of the cube, else fitted on the field's stars].")
@_verb_option("extract", "fallback_fwhm", ("mask", "fallback_fwhm"),
              help="PSF FWHM, arcsec, of every step when the cube has no FSF keywords and no star "
                   "could be fitted (PSFSRC = 'fallback', said in NOTES and psf.fits); --fwhm and "
                   "the cube's own PSF win over it.")
@_verb_option("extract", "beta", help="PSF Moffat beta.")
@_verb_option("extract", "apertures")
@_verb_option("extract", "weight_images")
@_verb_option("extract", "wave_range", help="Wavelength range of the spectra, Angstrom.")
@_verb_option("extract", "threads",
              help="Worker processes of every step that has them (extract, report, contsub); "
                   "Galaxy passes GALAXY_SLOTS.")
@_verb_option("extract", "resume",
              help="Skip objects already written in OUTDIR by a run with the same options and "
                   "inputs (recorded in OUTDIR/run_options.json).")
@click.option("--force", is_flag=True,
              help="With --resume: accept options or inputs that differ from the recorded ones; the "
                   "Source files are then all extracted again.")
@click.option("--contsub", "do_contsub", is_flag=True,
              help="Continuum-subtract the cube (contsub.fits), used by --xcor and --line-scan.")
@click.option("--xcor", "do_xcor", is_flag=True,
              help="Cross-correlation maps and XCOR/XCOR_CONTSUB spectra (the AutoSpec method, iterated).")
@click.option("--deblend", "do_deblend", is_flag=True,
              help="Model-based deblending of overlapping sources: DEBLEND spectra.")
@_verb_option("deblend", "image", decls=["--deblend-image", "deblend_image"],
              help="Sharp image of the field (FITS with WCS, e.g. HST) on which --deblend fits the "
                   "sources' shapes, convolved with the cube's PSF [default: the cube's white light].")
@_verb_option("deblend", "image_fwhm", decls=["--deblend-image-fwhm", "deblend_image_fwhm"],
              help="PSF FWHM, arcsec, of --deblend-image (e.g. 0.1 for HST ACS in the red) "
                   "[default: 0, sharp compared with the cube].")
@_verb_option("deblend", "register_image",
              decls=["--deblend-register-image/--no-deblend-register-image", "deblend_register_image"],
              help="Fit the offset of --deblend-image's astrometry to the cube's and remove it before "
                   "the models are made (DBIMGDX, DBIMGDY) [default: on].")
@click.option("--line-scan", "do_line_scan", is_flag=True,
              help="Find line emitters with a narrow-band scan and extract them (MUSE_NB spectra).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the QA report.")
@click.option("--html", type=OutputPath(dir_okay=False), default=None,
              help="Index page of the QA report [default: OUTDIR/index.html].")
@click.option("--assets-dir", type=OutputPath(file_okay=False), default=None,
              help="Folder of the QA report's figures (qa/) and linked Source files (sources/) "
                   "[default: the page's folder].")
@catalog_format_option
@cube_options
@cube_name_option
def cmd(cube, catalog, output, config, do_detect, match_radius, segmaps, force, do_contsub, do_xcor,
        do_deblend, do_line_scan, plots, html, assets_dir, catalog_format, data_ext, var_ext,
        dq_ext, cube_name, **options):
    """Run the whole chain on CUBE (and optionally CATALOG) into OUTDIR."""
    if not catalog and not do_detect:
        raise click.UsageError("give a CATALOG or let run detect sources (--detect)")
    if not do_detect and not segmaps:
        raise click.UsageError("no segmentation map: let run detect sources or give --segmap")
    flags = {"detect": do_detect, "match_radius": match_radius, "contsub": do_contsub,
             "xcor": do_xcor, "deblend": do_deblend, "line_scan": do_line_scan, "plots": plots,
             "catalog_format": catalog_format, "segmaps": segmaps, "html": html,
             "assets_dir": assets_dir, "data_ext": data_ext, "var_ext": var_ext, "dq_ext": dq_ext,
             "cube_name": cube_name}
    request = build_request(cube, catalog, output, config=config, options=options, flags=flags,
                            force=force)
    with option_errors():
        run_run(request)

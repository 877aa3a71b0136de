"""``ifu-extract run CUBE [CATALOG] -o OUTDIR [--config run.toml]``: the whole chain.

image -> detect -> (merge with the catalogue) -> mask -> extract -> report, each step the same
microtool a Galaxy user runs, writing its product into OUTDIR so that any step can be inspected
or re-run.  Parameters: each verb's defaults, then ``run.toml`` (one table per verb, keys are
the verb's long option names), then the options given to ``run``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from click.core import ParameterSource

from ..catalog import merge_catalogs, read_catalog, write_catalog
from ..errors import InputError
from ..fitsout import file_checksum
from ..pathguard import check_paths, created_folder
from ..runconfig import (RUN_OPTIONS_FILE, changed_options, load_run_config, read_run_options,
                         run_options_record, write_run_options)
from ._options import BOX_SIZE, catalog_format_option, cube_options, report


def _commands() -> dict:
    from ..cli import LazyGroup

    out = {}
    for verb in ("image", "detect", "mask", "extract", "report", "contsub", "xcorr", "deblend"):
        cmd = LazyGroup._load(verb)
        if cmd is not None:
            out[verb] = cmd
    return out


# run option -> (verb, parameter name) it sets.
_ROUTES = {
    "thresh": [("detect", "thresh")],
    "minarea": [("detect", "minarea")],
    "size": [("mask", "size")],
    "mode": [("mask", "mode")],
    "split": [("mask", "split")],
    "voronoi": [("mask", "voronoi")],
    "fwhm": [("mask", "fwhm"), ("extract", "fwhm")],
    "beta": [("extract", "beta")],
    "apertures": [("extract", "apertures")],
    "weight_images": [("extract", "weight_images")],
    "wave_range": [("extract", "wave_range")],
    "threads": [("extract", "threads"), ("report", "threads")],
    "resume": [("extract", "resume")],
    "deblend_image": [("deblend", "image")],
    "segmaps": [],
    "data_ext": [("image", "data_ext"), ("mask", "data_ext"), ("extract", "data_ext")],
    "var_ext": [("image", "var_ext"), ("mask", "var_ext"), ("extract", "var_ext")],
    "dq_ext": [("image", "dq_ext"), ("mask", "dq_ext"), ("extract", "dq_ext")],
}


#: The files of the chain in OUTDIR.
_PRODUCTS = {"white": "white.fits", "detections": "detections.tsv", "segmap": "segmap.fits",
             "catalog": "catalog.tsv", "masks": "masks.fits", "plot": "detections.png",
             "contsub": "contsub.fits", "line_images": "line_images.fits", "summary": "summary.tsv",
             "psf": "psf.fits", "run_options": RUN_OPTIONS_FILE, "lines": "lines.tsv"}


@click.command("run")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Output folder (white.fits, detections.tsv, segmap.fits, catalog.tsv, psf.fits when "
                   "the PSF was fitted on the field's stars, masks.fits, sources/, summary.tsv, qa/, "
                   "index.html, run_options.json; lines.tsv and line_images.fits with --line-scan).")
@click.option("--config", type=click.Path(dir_okay=False), default=None,
              help="run.toml: one table per verb ([image], [detect], [mask], [extract], [report]) "
                   "with that verb's long option names as keys; command-line options win.")
@click.option("--detect/--no-detect", "do_detect", default=True, show_default=True,
              help="Detect sources on the white-light image and add those not in CATALOG.")
@click.option("--match-radius", type=click.FloatRange(min=0), default=0.6, show_default=True,
              help="A detection within this radius (arcsec) of a catalogue object is that object.")
@click.option("--segmap", "segmaps", multiple=True, type=click.Path(dir_okay=False),
              help="Extra segmentation map(s) for the masks (e.g. from HST), any grid.")
@click.option("--thresh", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Detection threshold (see detect --thresh).")
@click.option("--minarea", type=click.IntRange(min=1), default=None, help="Detection minimum area, spaxels.")
@click.option("--size", type=BOX_SIZE, default=None,
              help="Box side per object, arcsec (a catalogue SIZE column wins).")
@click.option("--mode", type=click.Choice(["union", "inter"]), default=None,
              help="Object mask: union or intersection of the segmentation maps.")
@click.option("--split/--no-split", default=None,
              help="Split segments shared by several catalogue objects (PSF cores, then a "
                   "watershed on the white light) [default: split].")
@click.option("--voronoi", is_flag=True, default=None,
              help="Split segments shared by several catalogue objects into Voronoi cells instead.")
@click.option("--fwhm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="PSF FWHM, arcsec [default: FSF keywords of the cube, else fitted on the field's "
                   "stars].")
@click.option("--beta", type=click.FloatRange(min=1, min_open=True), default=None, help="PSF Moffat beta.")
@click.option("--aperture", "apertures", multiple=True, type=click.FloatRange(min=0, min_open=True),
              help="Aperture radius, arcsec (repeatable).")
@click.option("--image", "weight_images", multiple=True, metavar="TAG=FILE",
              help="Ancillary image used as extraction weights (repeatable).")
@click.option("--wave-range", nargs=2, type=float, default=None, metavar="MIN MAX",
              help="Wavelength range of the spectra, Angstrom.")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=None,
              help="Worker processes (Galaxy passes GALAXY_SLOTS).")
@click.option("--resume", is_flag=True, default=None,
              help="Skip objects already written in OUTDIR by a run with the same options and inputs "
                   "(recorded in OUTDIR/run_options.json).")
@click.option("--force", is_flag=True,
              help="With --resume: accept options or inputs that differ from the recorded ones; the "
                   "Source files are then all extracted again.")
@click.option("--contsub", "do_contsub", is_flag=True,
              help="Continuum-subtract the cube (contsub.fits), used by --xcor and --line-scan.")
@click.option("--xcor", "do_xcor", is_flag=True,
              help="Cross-correlation maps and XCOR/XCOR_CONTSUB spectra (the AutoSpec method, iterated).")
@click.option("--deblend", "do_deblend", is_flag=True,
              help="Model-based deblending of overlapping sources: DEBLEND spectra.")
@click.option("--deblend-image", type=click.Path(dir_okay=False), default=None,
              help="Sharp image of the field (FITS with WCS, e.g. HST) on which --deblend fits the "
                   "sources' shapes, convolved with the cube's PSF [default: the cube's white light].")
@click.option("--line-scan", "do_line_scan", is_flag=True,
              help="Find line emitters with a narrow-band scan and extract them (MUSE_NB spectra).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the QA report.")
@click.option("--html", type=click.Path(dir_okay=False), default=None,
              help="Index page of the QA report [default: OUTDIR/index.html].")
@click.option("--assets-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of the QA report's figures (qa/) and linked Source files (sources/) "
                   "[default: the page's folder].")
@catalog_format_option
@cube_options
@click.pass_context
def cmd(ctx, cube, catalog, output, config, do_detect, match_radius, do_contsub, do_xcor, do_deblend,
        do_line_scan, plots, catalog_format, force, **options):
    """Run the whole chain on CUBE (and optionally CATALOG) into OUTDIR."""
    commands = _commands()
    params = {verb: {} for verb in commands}
    if config:
        for verb, values in load_run_config(config, commands).items():
            params[verb].update(values)
    for name, value in options.items():
        if ctx.get_parameter_source(name) == ParameterSource.DEFAULT or value in (None, ()):
            continue
        for verb, pname in _ROUTES.get(name, []):
            if verb in params:
                params[verb][pname] = value
    if os.environ.get("GALAXY_SLOTS") and "threads" not in params.get("extract", {}):
        params["extract"]["threads"] = int(os.environ["GALAXY_SLOTS"])
    # Validate first, write second: the inputs are read and checked before the first product.
    if not catalog and not do_detect:
        raise click.UsageError("give a CATALOG or let run detect sources (--detect)")
    if not do_detect and not options.get("segmaps"):
        raise click.UsageError("no segmentation map: let run detect sources or give --segmap")
    # No product of the chain may replace an input (a catalogue given as OUTDIR/catalog.tsv).
    check_paths({f"the product {name} of -o": Path(output) / name for name in _PRODUCTS.values()},
                {"CUBE": cube, "CATALOG": catalog, "--config": config,
                 "--segmap": list(options.get("segmaps") or ()),
                 "--image": [w.split("=", 1)[-1] for w in options.get("weight_images") or ()]},
                fix="choose another -o folder, or move the input out of it")
    user_table = read_catalog(catalog, catalog_format) if catalog else None
    if options.get("segmaps"):
        from ..segmap import read_segmap

        for path in options["segmaps"]:
            read_segmap(path)
    # The cube is checked by the first step, before it writes; a folder this command made is
    # removed if it is still empty when a step fails.
    with created_folder(output) as out:
        _chain(ctx, commands, params, cube, catalog, catalog_format, user_table, out, do_detect,
               match_radius, do_contsub, do_xcor, do_deblend, do_line_scan, plots, force, options)


def _chain(ctx, commands, params, cube, catalog, catalog_format, user_table, out, do_detect,
           match_radius, do_contsub, do_xcor, do_deblend, do_line_scan, plots, force, options):
    """The steps of ``run`` into the folder *out* (inputs already checked)."""
    files = {k: str(Path(out) / v) for k, v in _PRODUCTS.items()}
    cube_ext = {k: options.get(k) for k in ("data_ext", "var_ext", "dq_ext")}
    flags = {"detect": do_detect, "match_radius": match_radius, "contsub": do_contsub, "xcor": do_xcor,
             "deblend": do_deblend, "line_scan": do_line_scan, "catalog_format": catalog_format,
             "segmap": [_fingerprint(p) for p in options.get("segmaps") or ()], **cube_ext}
    record = run_options_record({"CUBE": _fingerprint(cube), "CATALOG": _fingerprint(catalog)},
                                flags, params)
    _check_resume(out, record, params, force)

    if do_contsub:
        report(f"[0/5] contsub -> {files['contsub']}")
        ctx.invoke(commands["contsub"], cube=cube, output=files["contsub"],
                   **{**cube_ext, **params.get("contsub", {})})
    report(f"[1/5] image: white light -> {files['white']}")
    ctx.invoke(commands["image"], cube=cube, output=files["white"], **params["image"])
    # Recorded once the cube has been read without error (validate first, write second).
    write_run_options(out, record)
    if do_detect:
        report(f"[2/5] detect -> {files['detections']}")
        ctx.invoke(commands["detect"], image_or_cube=files["white"], output=files["detections"],
                   segmap=files["segmap"], plot=files["plot"] if plots else None, **params["detect"])
    if user_table is not None:
        table = user_table
        if do_detect:
            table = merge_catalogs(table, read_catalog(files["detections"]), match_radius)
    else:
        table = read_catalog(files["detections"])
    if do_line_scan:
        table = _line_scan(table, cube, cube_ext, files, do_contsub, match_radius)
    write_catalog(table, files["catalog"])
    if not do_detect:
        n_det = 0
    else:
        n_det = int((table["SOURCE"] == "detect").sum()) if "SOURCE" in table.colnames else len(table)
    report(f"      catalogue: {len(table)} objects ({n_det} from detection) -> {files['catalog']}")
    _psf_step(cube, cube_ext, files, params["extract"])
    segmaps = ([files["segmap"]] if do_detect else []) + list(options.get("segmaps") or ())
    report(f"[3/5] mask -> {files['masks']}")
    # The white light of step 1 serves mask and extract (one pass over the cube, not three).
    white = files["white"] if not params["image"].get("wave_range") and not params["image"].get("line") else None
    ctx.invoke(commands["mask"], cube=cube, catalog=files["catalog"], segmaps=tuple(segmaps),
               output=files["masks"], **{"white_path": white, **params["mask"]})
    report(f"[4/5] extract -> {out}/sources")
    ctx.invoke(commands["extract"], cube=cube, catalog=files["catalog"], masks=files["masks"],
               output=str(out), **{"white_path": white, **params["extract"]})
    extract_params = params["extract"]
    if do_line_scan:
        _emitter_spectra(out, cube, cube_ext, table, files, extract_params)
    if do_xcor:
        report("[4/5] xcorr: cross-correlation maps")
        ctx.invoke(commands["xcorr"], cube=cube, catalog=files["catalog"], masks=files["masks"],
                   output=str(out), contsub_cube=files["contsub"] if do_contsub else None,
                   **{**cube_ext, **params.get("xcorr", {})})
    if do_deblend:
        report("[4/5] deblend: model fit of overlapping sources")
        deblend_kw = {"wave_range": extract_params.get("wave_range"), "fwhm": extract_params.get("fwhm"),
                      "beta": extract_params.get("beta")}
        ctx.invoke(commands["deblend"], cube=cube, catalog=files["catalog"], output=str(out),
                   masks=files["masks"],
                   **{**cube_ext, **{k: v for k, v in deblend_kw.items() if v is not None},
                      **params.get("deblend", {})})
    if plots and "report" in commands:
        report("[5/5] report")
        # Where the page goes is not an option of the products (not in run_options.json).
        where = {k: options[k] for k in ("html", "assets_dir") if options.get(k) is not None}
        ctx.invoke(commands["report"], outdir=str(out), **{**params.get("report", {}), **where})
    page = options.get("html") or f"{out}/index.html"
    report(f"done: {out}/summary.tsv" + (f", {page}" if plots and "report" in commands else ""))


def _psf_step(cube, cube_ext, files, extract_params):
    """The PSF every step will use (:func:`ifu_extract.psf.resolve_psf`, fitted once and shared
    in this process); when fitted on the field's stars, written to psf.fits and reported."""
    from ..cubeio import open_cube
    from ..psf import catalog_candidates, resolve_psf
    from ..psffit import psf_summary, write_psf_product

    if extract_params.get("fwhm") is not None:
        return
    with open_cube(cube, **cube_ext) as c:
        details = {}
        cand = catalog_candidates(c, read_catalog(files["catalog"]))
        model = resolve_psf(c, beta=extract_params.get("beta"),
                            kind=extract_params.get("psf_kind", "moffat"), candidates=cand, details=details)
        if model is not None and "fit" in details:
            write_psf_product(files["psf"], details["fit"], c, inputs={"cube": cube, "catalog": files["catalog"]})
            report(f"      PSF: no FSF keywords in the cube; fitted on its stars -> {files['psf']}")
            for line in psf_summary(details["fit"], c.wave, c.pixscale).splitlines():
                report("      " + line)


def _fingerprint(path) -> str | None:
    """Content fingerprint of an input file (None when absent: the step that reads it says so)."""
    if not path:
        return None
    try:
        return file_checksum(path)
    except OSError:
        return None


def _check_resume(out, record: dict, params: dict, force: bool) -> None:
    """Refuse ``--resume`` when the options differ from those recorded in OUTDIR.

    With ``--force`` the difference is reported and every object is extracted again, so that
    no Source file made with other options is kept.
    """
    if params.get("extract", {}).get("resume"):
        old = read_run_options(out)
        if old is None and any(Path(out, "sources").glob("*.fits")):
            report(f"--resume: no {RUN_OPTIONS_FILE} in {out}: the options of the earlier run "
                   "cannot be checked")
        diff = changed_options(old, record) if old is not None else []
        if diff:
            text = ", ".join(f"{k} was {_show(a)}, now {_show(b)}" for k, a, b in diff)
            if not force:
                raise InputError(Path(out) / RUN_OPTIONS_FILE, f"--resume with changed options: {text}",
                                 "rerun without --resume (or into a new folder), or add --force to "
                                 "extract every object again with the new options")
            report(f"--force: options changed ({text}); every object is extracted again")
            params["extract"]["resume"] = False


def _show(value) -> str:
    return "unset" if value is None else json.dumps(value)


def _line_scan(table, cube, cube_ext, files, do_contsub, match_radius):
    """Add the objects of the line scan to *table*; write the line table and their images."""
    from ..linescan import ScanConfig
    from ..steps.linescan import LineScanRequest, run_line_scan

    report(f"      line scan -> {files['lines']}, {files['line_images']}")
    cfg = ScanConfig(merge_radius=match_radius, **({"continuum_width": 0.0, "side_width": 0.0}
                                                   if do_contsub else {}))
    request = LineScanRequest(cfg, contsub=files["contsub"] if do_contsub else None,
                              lines=files["lines"], images=files["line_images"])
    merged, scan = run_line_scan(cube, table, request, cube_ext=cube_ext, inputs={"cube": cube})
    report(f"      line scan: {len(scan.lines)} lines in {len(scan.catalog)} objects, "
           f"{len(merged) - len(table)} new; {scan.n_false} false lines expected (negated cube)")
    return merged


def _emitter_spectra(out, cube, cube_ext, table, files, extract_params):
    """MUSE_NB spectra of the emitters found by the scan, into their Source files."""
    from ..cubeio import open_cube
    from ..emitters import add_emitter_spectra, read_emitter_images
    from ..psf import catalog_candidates, resolve_psf

    images = read_emitter_images(files["line_images"])
    with open_cube(cube, **cube_ext) as c:
        psf = resolve_psf(c, fwhm=extract_params.get("fwhm"), beta=extract_params.get("beta"),
                          candidates=catalog_candidates(c, read_catalog(files["catalog"])))
        n = add_emitter_spectra(out, c, table, images, psf=psf, wave_range=extract_params.get("wave_range"))
    report(f"      MUSE_NB spectra for {n} line emitters")

"""The chain of ``ifu-extract run``, one step after the other.

::

    CUBE ──(contsub)──────────────────────────────────────────────┐ contsub.fits
      │                                                           │
      ├─ image ── white.fits ── detect ── detections.tsv, segmap.fits
      │                              │
    CATALOG ──────── merge ──────────┴── (line scan) ── catalog.tsv, lines.tsv, line_images.fits
      │                                        │
      ├─ PSF (resolved once: given, FSF keywords, fitted on the field's stars, or the fallback; psf.fits)
      ├─ mask ── masks.fits
      ├─ extract ── sources/<ID>.fits, summary.tsv   (+ MUSE_NB of the emitters)
      ├─ (xcorr) ── XCOR spectra, xcorr.tsv
      ├─ (deblend) ── DEBLEND spectra, deblend.tsv
      └─ report ── index.html, qa/

Every arrow is a step of :mod:`ifu_extract.steps` called with its own configuration
(:class:`RunPlan`); each product is a file of the output folder that any step can be re-run on.
The command line builds the plan from each verb's own options (:mod:`ifu_extract.commands.run`);
:func:`ifu_extract.steps.run.run_run` checks the inputs and the folder, then calls
:func:`run_chain`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from astropy.table import Table

from ..catalog import merge_catalogs, read_catalog, write_catalog
from ..cubeio import open_cube
from ..linescan import ScanConfig
from ..psf import PSFModel, catalog_candidates, fallback_summary, resolve_psf
from ..psffit import psf_summary, write_fallback_psf_product, write_psf_product
from .contsub import ContsubConfig, run_contsub
from .deblend import DeblendStepConfig, run_deblend
from .detect import DetectConfig, DetectOutputs, run_detect
from .extract import ExtractOptions, run_extract
from .image import ImageOptions, run_image
from .linescan import LineScanRequest, run_line_scan
from .mask import MaskConfig, run_mask
from .report import ReportConfig, run_report
from .xcorr import XcorConfig, run_xcorr

__all__ = ["PRODUCTS", "RunPlan", "RunResult", "product_paths", "run_chain"]

log = logging.getLogger("ifu_extract")

#: The files of the chain in the output folder.
PRODUCTS = {"white": "white.fits", "detections": "detections.tsv", "segmap": "segmap.fits",
            "catalog": "catalog.tsv", "masks": "masks.fits", "plot": "detections.png",
            "contsub": "contsub.fits", "line_images": "line_images.fits",
            "summary": "summary.tsv", "psf": "psf.fits", "run_options": "run_options.json",
            "lines": "lines.tsv"}


def product_paths(outdir) -> dict[str, str]:
    """``{product: path}`` of the chain's files in *outdir*."""
    return {k: str(Path(outdir) / v) for k, v in PRODUCTS.items()}


@dataclass
class RunPlan:
    """What the chain does: which optional steps run, and each step's configuration.

    Attributes
    ----------
    image, mask, extract : step configurations (always run)
    detect : DetectConfig or None
        None: no detection (a catalogue and segmentation maps must be given).
    contsub, xcorr, deblend, report : configurations, or None to skip the step
    xcorr_reference : str
        The spectrum xcorr starts from.
    deblend_image : str, optional
        Sharp image of the field deblend fits the shapes on.
    line_scan : bool
        Find line emitters and extract them (``MUSE_NB``).
    match_radius : float
        Arcsec: a detection (or an emitter) this close to a catalogue object is that object.
    segmaps : tuple of str
        Extra segmentation maps for the masks.
    cube_ext : dict
        ``data_ext``/``var_ext``/``dq_ext`` of the cube (the chain's own reads of it).
    threads : int
        Worker processes of the steps that have them (contsub's blocks too).
    html, assets_dir : str, optional
        Where the report's page and figures go (default: the output folder).
    """

    image: ImageOptions = field(default_factory=ImageOptions)
    mask: MaskConfig = field(default_factory=MaskConfig)
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    detect: DetectConfig | None = field(default_factory=DetectConfig)
    contsub: ContsubConfig | None = None
    xcorr: XcorConfig | None = None
    xcorr_reference: str = "MUSE_WHITE"
    deblend: DeblendStepConfig | None = None
    deblend_image: str | None = None
    report: ReportConfig | None = field(default_factory=ReportConfig)
    line_scan: bool = False
    match_radius: float = 0.6
    segmaps: tuple = ()
    cube_ext: dict = field(default_factory=dict)
    threads: int = 1
    html: str | None = None
    assets_dir: str | None = None


@dataclass
class RunResult:
    """What :func:`run_chain` made: ``files`` (product paths), the catalogue, its number of
    objects from detection, the PSF used (None: none found) and the report page (or None)."""

    outdir: Path
    files: dict
    catalog: Table
    n_detected: int
    psf: PSFModel | None
    index: Path | None = None


def _psf(cube, plan: RunPlan, table: Table, files: dict) -> tuple[PSFModel | None, object]:
    """The one PSF of the run (given, FSF keywords, else fitted on *table*'s stars, else the
    fallback), with the fit when it was fitted, or why the cube gave none when it is the
    fallback (written later to psf.fits)."""
    ex = plan.extract
    with open_cube(cube, **plan.cube_ext) as c:
        details: dict = {}
        model = resolve_psf(c, fwhm=ex.fwhm, beta=ex.beta, kind=ex.psf_kind, fallback_fwhm=ex.fallback_fwhm,
                            candidates=catalog_candidates(c, table), details=details)
    if model is not None and model.source == "fallback":
        return model, details.get("reason", "")
    return model, details.get("fit")


def _write_psf(cube, plan: RunPlan, fit, files: dict, psf: PSFModel | None = None) -> None:
    """psf.fits when the PSF was fitted on the field's stars or is the fallback (the cube gave
    none); *fit* is then the reason the cube gave none."""
    inputs = {"cube": cube, "catalog": files["catalog"]}
    if psf is not None and psf.source == "fallback":
        with open_cube(cube, **plan.cube_ext) as c:
            write_fallback_psf_product(files["psf"], psf, c, reason=fit or "", inputs=inputs)
        log.info(f"      PSF: no FSF keywords in the cube and no star fitted; the fallback "
                 f"(--fwhm-fallback) -> {files['psf']}")
        log.info("      " + fallback_summary(psf))
        return
    with open_cube(cube, **plan.cube_ext) as c:
        write_psf_product(files["psf"], fit, c, inputs=inputs)
        log.info(f"      PSF: no FSF keywords in the cube; fitted on its stars -> {files['psf']}")
        for line in psf_summary(fit, c.wave, c.pixscale).splitlines():
            log.info("      " + line)


def run_chain(cube, user_table: Table | None, outdir, plan: RunPlan, *,
              after_first_step=None) -> RunResult:
    """Run the steps of *plan* on *cube* (and the catalogue *user_table*) into *outdir*.

    Parameters
    ----------
    cube : str or os.PathLike
    user_table : astropy.table.Table or None
        The user's catalogue (already read and checked), or None: the detections alone.
    outdir : str or os.PathLike
        Existing output folder.
    plan : RunPlan
    after_first_step : callable, optional
        Called once the cube has been read without error (the white light is written):
        ``run`` records its options then (validate first, write second).

    Returns
    -------
    RunResult
    """
    out = Path(outdir)
    files = product_paths(out)
    if plan.contsub is not None:
        log.info(f"[0/5] contsub -> {files['contsub']}")
        res = run_contsub(cube, files["contsub"], config=plan.contsub, threads=plan.threads,
                          cube_kwargs=plan.cube_ext)
        cs = plan.contsub
        model = (f"degree-{cs.degree} polynomial, {cs.clip_sigma:g}-sigma clipping x{cs.clip_iters}"
                 if cs.method == "poly" else f"{cs.median_width:g} Angstrom running median")
        z0, z1 = res.channels
        log.info(f"wrote {res.output} ({model}; {res.n_spaxels} spaxels, {z1 - z0} channels)")
    log.info(f"[1/5] image: white light -> {files['white']}")
    img = run_image(cube, files["white"], plan.image)
    log.info(f"wrote {img.output} ({img.image.meta['IMGTYPE'][0]} image, "
             f"{img.image.shape[1]} x {img.image.shape[0]} spaxels)")
    if after_first_step is not None:
        after_first_step()
    n_det = 0
    if plan.detect is not None:
        log.info(f"[2/5] detect -> {files['detections']}")
        det = run_detect(files["white"], DetectOutputs(files["detections"], segmap=files["segmap"],
                                                        plot=files["plot"] if plan.report else None),
                         plan.detect)
        for message in det.warnings:
            log.warning(f"warning: {Path(files['white']).name}: {message}")
        n = len(det.detection)
        log.info(f"detected {n} source{'' if n == 1 else 's'} in white.fits ({det.kind}, "
                 f"{det.image.shape[1]} x {det.image.shape[0]} pixels, threshold "
                 f"{det.detection.threshold:.4g}); wrote {files['detections']}")
    if user_table is not None:
        table = user_table
        if plan.detect is not None:
            table = merge_catalogs(table, read_catalog(files["detections"]), plan.match_radius)
    else:
        table = read_catalog(files["detections"])

    # The PSF is resolved once, when first needed, and every step is given the same one.
    psf = fit = None
    if plan.line_scan:
        psf, fit = _psf(cube, plan, table, files)
        table = _line_scan(cube, table, plan, files, psf)
    write_catalog(table, files["catalog"])
    if plan.detect is not None:
        n_det = int((table["SOURCE"] == "detect").sum()) if "SOURCE" in table.colnames else len(table)
    log.info(f"      catalogue: {len(table)} objects ({n_det} from detection) -> {files['catalog']}")
    if not plan.line_scan:
        # The catalogue as written (and as mask and extract read it): the same stars.
        psf, fit = _psf(cube, plan, read_catalog(files["catalog"]), files)
    if fit is not None and plan.extract.fwhm is None:
        _write_psf(cube, plan, fit, files, psf)

    segmaps = ([files["segmap"]] if plan.detect is not None else []) + list(plan.segmaps)
    log.info(f"[3/5] mask -> {files['masks']}")
    # The white light of step 1 serves mask and extract (one pass over the cube, not three).
    white = files["white"] if not plan.image.wave_range and not plan.image.line else None
    mres = run_mask(cube, files["catalog"], tuple(segmaps), files["masks"], plan.mask, white=white)
    log.info(f"wrote {files['masks']} ({mres.n_masked} of {mres.n_objects} objects masked: "
             f"{mres.count('union')} union, {mres.count('inter')} inter, "
             f"{mres.count('circle')} PSF circle)")
    log.info(f"[4/5] extract -> {out}/sources")
    xres = run_extract(cube, files["catalog"], files["masks"], str(out),
                       dataclasses.replace(plan.extract, psf=psf), white=white,
                       line_images=files["line_images"] if plan.line_scan else None)
    log.info(f"wrote {xres.n_ok} Source files of {len(xres.rows)} objects to {out}/sources; "
             f"summary in {out}/summary.tsv")
    if plan.xcorr is not None:
        log.info("[4/5] xcorr: cross-correlation maps")
        xc = run_xcorr(cube, files["catalog"], files["masks"], output=str(out),
                       contsub=files["contsub"] if plan.contsub is not None else None,
                       reference=plan.xcorr_reference, config=plan.xcorr,
                       cube_kwargs=plan.cube_ext)
        log.info(f"cross-correlated {xc.n_ok} of {len(xc.rows)} objects (reference "
                 f"{xc.reference}); summary in {xc.summary}")
    if plan.deblend is not None:
        log.info("[4/5] deblend: model fit of overlapping sources")
        db = run_deblend(cube, files["catalog"], str(out), masks=files["masks"],
                         image=plan.deblend_image, config=plan.deblend, cube_kwargs=plan.cube_ext,
                         psf=psf if _same_psf(plan.deblend, plan.extract) else None)
        log.info(f"deblended {db.n_ok} of {len(db.rows)} objects in {db.n_groups} groups; "
                 f"DEBLEND spectra in {db.sources_dir}, summary in {db.summary}")
    index = None
    if plan.report is not None:
        log.info("[5/5] report")
        rep = run_report(str(out), plan.report, html=plan.html, assets_dir=plan.assets_dir)
        index = rep.index
        if plan.report.plots:
            log.info(f"wrote {rep.n_plotted} of {len(rep.plots)} objects' figures to "
                     f"{rep.assets_dir / 'qa'} ({rep.seconds_per_object:.2f} s per object)")
        log.info(f"wrote {rep.index} ({rep.n_objects} objects)")
    page = plan.html or f"{out}/index.html"
    log.info(f"done: {out}/summary.tsv" + (f", {page}" if plan.report is not None else ""))
    return RunResult(out, files, table, n_det, psf, index)


def _same_psf(deblend: DeblendStepConfig, extract: ExtractOptions) -> bool:
    """Whether deblend asks for the run's PSF (not a PSF of its own: a red FWHM, a star...)."""
    return (deblend.fwhm_red is None and deblend.psf_star is None and deblend.psf_kind == extract.psf_kind
            and deblend.fwhm == extract.fwhm and deblend.beta == extract.beta
            and deblend.fallback_fwhm == extract.fallback_fwhm)


def _line_scan(cube, table: Table, plan: RunPlan, files: dict, psf) -> Table:
    """Add the objects of the line scan to *table*; write the line table and their images."""
    log.info(f"      line scan -> {files['lines']}, {files['line_images']}")
    cfg = ScanConfig(merge_radius=plan.match_radius,
                     **({"continuum_width": 0.0, "side_width": 0.0} if plan.contsub is not None
                        else {}))
    request = LineScanRequest(cfg, contsub=files["contsub"] if plan.contsub is not None else None,
                              lines=files["lines"], images=files["line_images"])
    merged, scan = run_line_scan(cube, table, request, cube_ext=plan.cube_ext, psf=psf,
                                 inputs={"cube": cube})
    log.info(f"      line scan: {len(scan.lines)} lines in {len(scan.catalog)} objects, "
             f"{len(merged) - len(table)} new; {scan.n_false} false lines expected (negated cube)")
    return merged


def with_resume(plan: RunPlan, resume: bool) -> RunPlan:
    """*plan* with extract's ``resume`` set to *resume*."""
    return dataclasses.replace(plan, extract=dataclasses.replace(plan.extract, resume=resume))

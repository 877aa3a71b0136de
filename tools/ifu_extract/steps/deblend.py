"""The ``deblend`` step: a cube and a catalogue in, DEBLEND spectra, a summary table and the
optional model and residual cubes out (the science is in :mod:`ifu_extract.deblend`).

The Source files are named explicitly (``sources=`` existing ones, matched to their catalogue
rows by their ``ID`` keyword and copied to ``sources_out``, where new ones are written too;
``summary=``), or found by the folder convention of ``extract`` (``output=``:
``OUTPUT/sources/<ID>.fits``, ``OUTPUT/deblend.tsv``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
import logging
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..catalog import read_catalog
from ..cubeio import open_cube
from ..deblend import (
    DeblendConfig,
    deblend_catalog,
    model_accumulator,
    resolve_psf,
    write_deblend,
    write_model_cube,
    write_residual_cube,
)
from ..errors import InputError, ParameterError
from ..fitsout import ensure_dir
from ..identity import check_product
from ..deblend.register import register_image, shift_image_wcs
from ..image import band_image, read_image
from ..masks import read_masks
from ..psf import PSFModel, catalog_candidates
from ..segmap import read_segmap, segmap_on_grid
from ..wcsutil import world_to_pixel
from ..weights import model_images
from ._outputs import OutputSet, check_writable
from ._sources import copy_sources, source_ids

log = logging.getLogger("ifu_extract")

__all__ = ["DeblendStepConfig", "DeblendStepResult", "run_deblend"]


@dataclass
class DeblendStepConfig:
    """Everything ``deblend`` is told besides its files.

    Attributes
    ----------
    fit : DeblendConfig
        Models, groups and solver (:class:`ifu_extract.deblend.DeblendConfig`).
    fwhm, fwhm_red : float, optional
        PSF FWHM at the first and last channel, arcsec (see :func:`ifu_extract.psf.resolve_psf`).
    beta : float, optional
        Moffat beta.
    fallback_fwhm : float, optional
        PSF FWHM, arcsec, used only when the cube has no FSF keywords and no star could be fitted.
    psf_kind : {"moffat", "gaussian"}
    psf_star : str, optional
        Catalogue ID of a star to fit the PSF on when neither a FWHM nor FSF keywords exist.
    wave_range : (float, float), optional
        Angstrom; default the whole cube.
    size : float
        Stamp side (arcsec) of the Source files created by the step.
    register_image : bool
        Fit the offset of an ancillary image's astrometry to the cube's and remove it before the
        models are made (:func:`ifu_extract.deblend.register.register_image`).
    """

    fit: DeblendConfig = field(default_factory=DeblendConfig)
    fwhm: float | None = None
    fwhm_red: float | None = None
    beta: float | None = None
    fallback_fwhm: float | None = None
    psf_kind: str = "moffat"
    psf_star: str | None = None
    wave_range: tuple | None = None
    size: float = 5.0
    register_image: bool = True

    @classmethod
    def from_options(cls, **options) -> "DeblendStepConfig":
        """The configuration from the ``deblend`` command's option values, by parameter name
        (``max_group=10``, ``fwhm=None``...; names of neither this class nor
        :class:`~ifu_extract.deblend.DeblendConfig` are ignored), so that ``run`` builds it
        from the same options as the verb."""
        fit_names = {f.name for f in dataclasses.fields(DeblendConfig)}
        own = {f.name for f in dataclasses.fields(cls)} - {"fit"}
        kw = {k: v for k, v in options.items() if k in own}
        kw["wave_range"] = tuple(kw["wave_range"]) if kw.get("wave_range") else None
        return cls(fit=DeblendConfig(**{k: v for k, v in options.items() if k in fit_names}), **kw)


@dataclass
class DeblendStepResult:
    """What :func:`run_deblend` wrote.

    Attributes
    ----------
    rows : list of dict
        The rows of the summary (:data:`ifu_extract.deblend.DEBLEND_COLUMNS`), catalogue order;
        empty with *pass_through*.
    summary : pathlib.Path or None
        The summary table (None with *pass_through*).
    sources_dir : pathlib.Path
        Folder of the Source files (updated or created).
    model_cube, residual_cube : pathlib.Path or None
    n_ok : int
        Objects with a DEBLEND spectrum written.
    n_groups : int
        Groups the placed objects formed.
    n_copied : int
        Source files given and copied to *sources_out*.
    registration : ImageRegistration, optional
        The image's fitted offset (None without an image or with ``register_image`` off).
    """

    rows: list
    summary: Path | None
    sources_dir: Path
    model_cube: Path | None
    residual_cube: Path | None
    n_ok: int
    n_groups: int
    n_copied: int = 0
    registration: object = None


def run_deblend(cube_path, catalog, output=None, *, sources=None, summary=None, sources_out=None,
                masks=None, segmap=None, image=None, model_cube=None, residual_cube=None,
                config: DeblendStepConfig | None = None, psf: PSFModel | None = None,
                pass_through: bool = False, catalog_format: str = "auto",
                cube_kwargs: dict | None = None, progress=None) -> DeblendStepResult:
    """Deblend every catalogue object of a cube; files in, files out.

    Parameters
    ----------
    cube_path : str or os.PathLike
    catalog : str or os.PathLike or astropy.table.Table
        A catalogue file (read with *catalog_format*) or a table from
        :func:`~ifu_extract.catalog.read_catalog`.
    output : str or os.PathLike, optional
        The folder layout of ``extract``/``run``: ``OUTPUT/sources/<ID>.fits`` updated or
        created, ``OUTPUT/deblend.tsv``.  Exclusive with *sources*, *summary*, *sources_out*.
    sources : sequence of str or os.PathLike, optional
        Existing Source files (from ``extract``), copied to *sources_out* and updated there.
    summary : str or os.PathLike, optional
        The summary table to write (TSV); required without *output*.
    sources_out : str or os.PathLike, optional
        Folder of the Source files written (``<ID>.fits``); required without *output*.
    masks : str or os.PathLike, optional
        ``MASKS.fits``: its first ``SEGMAP`` gives the segments (wins over *segmap*).
    segmap : str or os.PathLike, optional
        A segmentation map (reprojected to the cube grid when needed).
    image : str or os.PathLike, optional
        Ancillary model image (FITS with WCS), resampled to the cube grid; default: the cube's
        white light.
    model_cube, residual_cube : str or os.PathLike, optional
        Write the model cube (sum of all fitted sources) and ``cube - model`` here.
    config : DeblendStepConfig, optional
    psf : PSFModel, optional
        A ready PSF (wins over the PSF options of *config*).
    pass_through : bool
        Fit nothing: only copy the *sources* to *sources_out* (a workflow's off switch).
    catalog_format : str
        Format of a catalogue file.
    cube_kwargs : dict, optional
        :func:`~ifu_extract.cubeio.open_cube` options.
    progress : callable, optional
        Called with the number of groups done.

    Returns
    -------
    DeblendStepResult

    Raises
    ------
    InputError
        Unreadable inputs, or a PSF that cannot be determined (one line).  Parameters are named
        as in this signature and :class:`DeblendStepConfig` (e.g. ``psf_star``).
    """
    cfg = config or DeblendStepConfig()
    names = ("output", "sources", "summary", "sources_out")
    if output is not None and (sources or summary is not None or sources_out is not None):
        raise ParameterError("{output}", "is exclusive with {sources}, {summary} and {sources_out}",
                             "give either the extract folder or the Source files, their folder and "
                             "the summary", params=names)
    if output is None and (sources_out is None or (summary is None and not pass_through)):
        raise ParameterError("{sources_out}" if sources_out is None else "{summary}", "is missing",
                             "give the folder of the Source files and the summary table, or {output}",
                             params=names)
    given = source_ids(sources) if output is None else {}
    check_writable({"model_cube": model_cube, "residual_cube": residual_cube})  # before the work
    if pass_through:
        copied = copy_sources(given, sources_out) if output is None else {}
        return DeblendStepResult([], None, Path(sources_out or Path(output) / "sources"), None, None,
                                 0, 0, len(copied))
    table = catalog if isinstance(catalog, Table) else read_catalog(catalog, catalog_format)
    if output is not None:
        outdir = ensure_dir(output)
        sources_dir, summary = Path(outdir) / "sources", Path(outdir) / "deblend.tsv"
    else:
        sources_dir, summary = Path(sources_out), Path(summary)
    with open_cube(cube_path, **(cube_kwargs or {})) as cube:
        star = None
        if cfg.psf_star is not None:
            ids = [str(v) for v in table["ID"]]
            if str(cfg.psf_star) not in ids:
                raise ParameterError("{psf_star}", f"ID {cfg.psf_star!r} is not in the catalogue",
                                     "give the ID of a star listed in CATALOG", params=("psf_star",))
            r = table[ids.index(str(cfg.psf_star))]
            star = world_to_pixel(cube.wcs, float(r["RA"]), float(r["DEC"]))
        psf = resolve_psf(cube, psf=psf, fwhm=cfg.fwhm, fwhm_red=cfg.fwhm_red, beta=cfg.beta,
                          kind=cfg.psf_kind, star=star, candidates=catalog_candidates(cube, table),
                          fallback_fwhm=cfg.fallback_fwhm)
        seg = None
        if masks is not None:
            _, mfile = read_masks(masks)
            with mfile:
                check_product(mfile.header, masks, cube, cube_path, what="masks file")
                seg = mfile.segmap(1)
        elif segmap is not None:
            seg, _, _ = segmap_on_grid(read_segmap(segmap), cube.wcs, (cube.ny, cube.nx))
        model_image = model_fine = registration = white = None
        if image is not None:
            img = read_image(image)
            if img.wcs is None:
                raise InputError(image, "has no celestial WCS, so it cannot be aligned with the cube",
                                 "give an image with RA/Dec WCS keywords")
            if cfg.register_image:
                # The white light the fit needs is the deblending's own: made once, given to both.
                z0, z1 = cube.channel_range(*(cfg.wave_range or (None, None)))
                white = band_image(cube, (float(cube.wave[z0]), float(cube.wave[z1 - 1])))
                registration = _register(img, cube, psf, table, cfg, white)
                if registration.applied:
                    img = shift_image_wcs(img, registration.dx, registration.dy)
            model_image, model_fine = model_images(img, cube, fine=cfg.fit.image_templates)
            if not np.isfinite(model_image).any():
                raise InputError(image, "does not overlap the cube", "give an image of the same field")
        z0, z1 = cube.channel_range(*(cfg.wave_range or (None, None)))
        inputs = {"cube": cube_path, "masks": masks, "segmap": segmap, "image": image}
        with contextlib.ExitStack() as stack:
            model = None
            if model_cube is not None or residual_cube is not None:
                # Group models overlap: summed in a scratch memory map, never in memory.
                model = stack.enter_context(model_accumulator(model_cube or residual_cube,
                                                              (z1 - z0, cube.ny, cube.nx)))
            result = deblend_catalog(cube, table, psf, image=model_image, image_is_cube=model_image is None,
                                     image_fine=model_fine, segmap=seg, config=cfg.fit, wave_range=cfg.wave_range,
                                     model_cube=model, progress=progress, white=white)
            with OutputSet() as outs:   # both cubes or neither
                if model_cube is not None:
                    write_model_cube(cube, model, outs.path(model_cube, ".fits"), z0, z1, inputs=inputs)
                if residual_cube is not None:
                    write_residual_cube(cube, model, outs.path(residual_cube, ".fits"), z0, z1, inputs=inputs)
        if registration is not None:
            for src in result.sources:
                if src.spectrum is not None:
                    src.spectrum.meta.update(registration.cards())
        copied = copy_sources(given, sources_dir)   # the given Source files get DEBLEND added
        rows = write_deblend(result, cube, table, sources_dir, summary, size=cfg.size, inputs=inputs)
    return DeblendStepResult(rows=rows, summary=summary, sources_dir=sources_dir,
                             model_cube=None if model_cube is None else Path(model_cube),
                             residual_cube=None if residual_cube is None else Path(residual_cube),
                             n_ok=sum(bool(r["FILE"]) for r in rows),
                             n_groups=len({r["GROUP"] for r in rows if r["GROUP"]}), n_copied=len(copied),
                             registration=registration)


def _register(img, cube, psf, table, cfg, white):
    """The image's offset to the cube, fitted on the white light over the deblending's channels,
    with one scale per catalogue source's cell; logged in one line."""
    ra = np.ma.filled(np.ma.asarray(table["RA"], dtype=float), np.nan)
    dec = np.ma.filled(np.ma.asarray(table["DEC"], dtype=float), np.nan)
    ok = np.isfinite(ra) & np.isfinite(dec)
    if "STATUS" in table.colnames:
        ok &= np.array([str(v) == "ok" for v in table["STATUS"]])
    positions = world_to_pixel(cube.wcs, ra[ok], dec[ok]) if ok.any() else None
    reg = register_image(img, cube, psf, white=white, image_fwhm=cfg.fit.image_fwhm,
                         positions=positions, wave_range=cfg.wave_range)
    log.info(reg.describe())
    return reg

"""The catalogue driver: objects placed, grouped, modelled and solved group by group."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ..cubeio import Cube
from ..errors import OK, InputError, ParameterError, warn_object
from ..estimators import Spectrum1D
from ..image import band_image
from ..psf import PSFModel
from ..wcsutil import world_to_pixel
from .config import (
    GRADIENT_KEEP,
    GRADIENT_SMOOTH,
    GRADIENT_SPLIT,
    IMAGE_FIXES_COMPACT,
    IMAGE_MIN_SNR,
    MODELS,
    DeblendConfig,
    DeblendResult,
    SourceResult,
)
from .groups import (cut_footprints, find_groups, footprint_radius, object_labels, own_segments,
                     split_large_groups)
from .joint import POOR_CHI2, GroupComponents, hat_weights, joint_fit
from .models import ModelImages, build_group_model, psf_nodes
from .psfrefine import BinnedGroup, binned_chi2, refine_group_psf
from .solver import NEG_SIGMA, GroupChiSquare, clip_negative, solve_layers

log = logging.getLogger("ifu_extract")


def deblend_catalog(cube: Cube, catalog: Table, psf: PSFModel, *, image: np.ndarray | None = None,
                    image_var: np.ndarray | None = None, image_is_cube: bool = True,
                    image_fine: np.ndarray | None = None,
                    segmap: np.ndarray | None = None, config: DeblendConfig | None = None,
                    wave_range=None, model_cube=None, progress=None, white=None) -> DeblendResult:
    """Deblend every catalogue object: groups, models, fluxes per channel.

    Parameters
    ----------
    cube : Cube
    catalog : astropy.table.Table
        ``ID``, ``RA``, ``DEC`` (deg), ``STATUS`` (rows not ``"ok"`` are skipped, keeping it).
    psf : PSFModel
        From :func:`resolve_psf`.
    image, image_var : numpy.ndarray, optional
        ``(ny, nx)`` model image on the cube grid and its variance (default: the white light
        of *cube* over *wave_range*).
    image_is_cube : bool
        The image is the cube's own white light (its PSF is the cube's, averaged over the
        channels); False for an ancillary image (PSF FWHM ``config.image_fwhm``).
    image_fine : numpy.ndarray, optional
        The ancillary image on a grid an integer number of times finer than the cube's,
        ``(ny * s, nx * s)`` (:func:`ifu_extract.weights.resample_to_cube` with ``scale=s``):
        its members' models are then made and convolved on that grid (``config.image_templates``).
    segmap : numpy.ndarray, optional
        ``(ny, nx)`` segmentation labels on the cube grid (0 = background).  Without it every
        object is modelled from its position alone (round profiles up to 1 spaxel).
    config : DeblendConfig, optional
    wave_range : (float, float), optional
        Angstrom; default the whole cube.
    model_cube : numpy.ndarray-like, optional
        A writable ``(z1 - z0, ny, nx)`` array (e.g. a memory map) to which every group's
        model is added.
    progress : callable, optional
        Called with the number of groups done, as they finish.
    white : ifu_extract.image.Image, optional
        The cube's white light over *wave_range* (:func:`ifu_extract.image.band_image`), when
        the caller already made it; default: made here when needed.

    Returns
    -------
    DeblendResult

    Notes
    -----
    An object whose group is refused, or whose position is off the field, gets a status and
    an :class:`~ifu_extract.errors.ObjectWarning`; the other groups are processed.
    """
    cfg = config or DeblendConfig()
    if cfg.model not in MODELS:
        raise ParameterError("{model}", f"unknown model {cfg.model!r}", f"use one of {', '.join(MODELS)}",
                             params=("model",))
    if not 0 < cfg.overlap < 1:
        raise ParameterError("{overlap}", f"{cfg.overlap} is not a fraction between 0 and 1",
                         "give e.g. 0.05", params=("overlap",))
    if cfg.max_group < 1:
        raise ParameterError("{max_group}", f"{cfg.max_group} is not a group size", "give 1 or more",
                             params=("max_group",))
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    wave = cube.wave[z0:z1]
    pixscale = cube.pixscale
    if white is None and (image is None or (not image_is_cube and cfg.fit_centres and cfg.model == "profile")):
        white = band_image(cube, (float(wave[0]), float(wave[-1])))
    if image is None:
        images = ModelImages(white.data.astype(np.float64),
                             None if white.var is None else white.var.astype(np.float64), True)
    else:
        image = np.asarray(image, dtype=np.float64)
        if image.shape != (cube.ny, cube.nx):
            raise ParameterError("{image}", f"model image shape {image.shape} is not the cube grid "
                             f"{(cube.ny, cube.nx)}", "resample it to the cube grid first", params=("image",))
        images = ModelImages(image, None if image_var is None else np.asarray(image_var, float),
                             bool(image_is_cube))
        if image_fine is not None and not image_is_cube:
            scale = image_fine.shape[0] // cube.ny
            if scale < 1 or image_fine.shape != (cube.ny * scale, cube.nx * scale):
                raise ParameterError("{image}", f"fine model image shape {image_fine.shape} is not the "
                                     f"cube grid {(cube.ny, cube.nx)} times an integer",
                                     "resample it with resample_to_cube(..., scale=s)", params=("image",))
            images.fine, images.fine_scale = np.asarray(image_fine, dtype=np.float64), scale
        if not image_is_cube and cfg.fit_centres and cfg.model == "profile":
            images.white = ModelImages(white.data.astype(np.float64),
                                       None if white.var is None else white.var.astype(np.float64), True)
    if segmap is not None and segmap.shape != (cube.ny, cube.nx):
        raise ParameterError("{segmap}", f"segmentation map shape {segmap.shape} is not the cube grid "
                         f"{(cube.ny, cube.nx)}", "put it on the cube grid first", params=("segmap",))
    image = images.image

    n = len(catalog)
    ids = [str(v) for v in catalog["ID"]]
    status_in = [str(s) for s in catalog["STATUS"]] if "STATUS" in catalog.colnames else [OK] * n
    ra = np.asarray(np.ma.filled(np.ma.asarray(catalog["RA"], dtype=float), np.nan), dtype=float)
    dec = np.asarray(np.ma.filled(np.ma.asarray(catalog["DEC"], dtype=float), np.nan), dtype=float)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    ok = np.array([s == OK for s in status_in]) & np.isfinite(ra) & np.isfinite(dec)
    if ok.any():
        x[ok], y[ok] = world_to_pixel(cube.wcs, ra[ok], dec[ok])
    results = [SourceResult(ids[i], i, status_in[i] if status_in[i] != OK else OK, x[i], y[i])
               for i in range(n)]
    rows = []
    for i in range(n):
        if not ok[i]:
            if results[i].status == OK:
                results[i].status = "bad_coordinates: RA/DEC is not a number"
            continue
        xc, yc = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if not (0 <= xc < cube.nx and 0 <= yc < cube.ny) or not np.isfinite(image[yc, xc]):
            results[i].status = "off_field: no data at the object's position"
            warn_object(ids[i], "no data at its position; not deblended")
            continue
        rows.append(i)

    labels = object_labels(segmap, x, y, cfg.match_radius / pixscale)
    segments = own_segments(segmap, labels, x, y, rows)
    radius = footprint_radius(psf, wave, pixscale, cfg.overlap)
    groups, foot = find_groups(x, y, segments, (cube.ny, cube.nx), radius, rows)
    # Crowded fields chain every object into one group: too large groups are cut into parts of
    # --max-group members (each fitted on its own) rather than refused.
    groups, cut_from = split_large_groups(groups, x, y, cfg.max_group)
    node_wave = psf_nodes(psf, wave, pixscale)

    for g, members in enumerate(groups, start=1):
        member_ids = [ids[i] for i in members]
        for i in members:
            results[i].group = g
            results[i].group_ids = member_ids
        try:
            part_foot = foot
            if members[0] in cut_from:
                part_foot = {**foot, **cut_footprints(members, cut_from[members[0]], foot, x, y)}
            _solve_group(cube, members, part_foot, x, y, segments, images, psf, node_wave, pixscale,
                         cfg, z0, z1, results, model_cube)
            for i in members:
                if i in cut_from:
                    results[i].notes.append(f"crowded: fitted in a part of {len(members)} of its group "
                                            f"of {len(cut_from[i])} (--max-group {cfg.max_group})")
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - one group's failure is its members' status
            reason = f"failed: {type(exc).__name__}: {exc}"[:200]
            for i in members:
                results[i].status = reason
                warn_object(ids[i], reason)
        if progress:
            progress(1)
    return DeblendResult(results, (z0, z1), psf, groups)



def _solve_group(cube, members, foot, x, y, segments, images, psf, node_wave, pixscale, cfg, z0, z1,
                 results, model_cube):
    ys = np.concatenate([foot[i][0] for i in members])
    xs = np.concatenate([foot[i][1] for i in members])
    box = (int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1)
    bx0, bx1, by0, by1 = box
    region = np.zeros((by1 - by0, bx1 - bx0), dtype=bool)
    region[ys - by0, xs - bx0] = True
    wave = cube.wave[z0:z1]
    refine = cfg.refine_psf and cube.has_var  # the χ² test needs the variance
    # The binned data also judge a sharp image's shrunk templates against its raw ones.
    judge = cube.has_var and (refine or (not images.from_cube and cfg.image_shrink > 0))
    binned = BinnedGroup(z1 - z0, region, judge)
    for c0 in range(z0, z1, 512):
        data, dvar = cube.window(bx0, bx1, by0, by1, c0, min(c0 + 512, z1), with_var=judge)
        binned.add(c0 - z0, data, dvar)
    spectrum = binned.spectrum
    centres = white = None
    if cfg.fit_centres and images.white is not None and cfg.model == "profile":
        # With an ancillary image the centres are fitted on the cube's own white light: the
        # image's astrometry and sampling are not the cube's, and a model 0.02″ off the cube's
        # light leaks its neighbour into a faint member.
        white = build_group_model(members, box, region, x, y, segments, images.white, psf,
                                  node_wave, wave, pixscale, cfg, spectrum)
        centres = white.layout[2]
    gm = build_group_model(members, box, region, x, y, segments, images, psf, node_wave,
                           wave, pixscale, cfg, spectrum, centres=centres)
    psf_scale = 1.0
    if refine and gm.layout is not None:
        psf, psf_scale, note = refine_group_psf(binned, gm.layout, members, box, region, x, y, segments,
                                                images, psf, node_wave, wave, pixscale, cfg)
        if psf_scale != 1.0:
            # Same components as with the given PSF: narrowing it must not turn a compact
            # source into a "resolved" one with broad components.
            gm = build_group_model(members, box, region, x, y, segments, images, psf, node_wave,
                                   wave, pixscale, cfg, spectrum, gm.layout)
            for i in members:
                gm.notes[i].append(note)
    wgm = white if psf_scale == 1.0 else None

    def faint_from_cube(model, cfg_):
        if model.summed and model.image_snr is not None and images.white is not None:
            return _faint_in_image_from_cube(model, members, box, region, x, y, segments, images, psf,
                                             node_wave, wave, pixscale, cfg_, spectrum, centres, wgm)
        return model

    gm = faint_from_cube(gm, cfg)
    if gm.summed and cfg.image_shrink > 0:
        raw_cfg = replace(cfg, image_shrink=0.0)
        gm = _shrink_or_not(gm, lambda: faint_from_cube(
            build_group_model(members, box, region, x, y, segments, images, psf, node_wave, wave, pixscale,
                              raw_cfg, spectrum, gm.layout, centres=centres), raw_cfg),
            binned, node_wave, wave, region, cfg)
    K = len(members)
    meta_fit = {}
    if cfg.solver == "joint" and gm.parts is not None:
        flux, var, meta_fit = _solve_joint(cube, gm, images, box, region, z0, z1, cfg, model_cube)
        _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit)
        return
    ncol = gm.n_columns
    step = int(min(cfg.block, max(8, 2e7 // max(ncol * region.size, 1))))
    sel = region.ravel()
    nz = z1 - z0

    def blocks():
        for c0 in range(z0, z1, step):
            c1 = min(c0 + step, z1)
            L = c1 - c0
            data, dvar = cube.window(bx0, bx1, by0, by1, c0, c1)
            models = gm.at(cube.wave[c0:c1]).reshape(L, ncol, -1)
            yield (c0 - z0, c1 - z0, data.reshape(L, -1)[:, sel],
                   None if dvar is None else dvar.reshape(L, -1)[:, sel], models)

    if gm.summed:
        flux, var, meta_fit = _solve_summed(cube, gm, box, region, z0, z1, step, cfg, model_cube)
        _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit)
        return
    # Pass 1 (groups with gradient shapes): every column free in every channel.  The gradient
    # amplitudes are then smoothed along wavelength (keeping the channels where they depart
    # significantly from the smooth curve, e.g. a line in the bulge only), which restores
    # the S/N that a free nuisance amplitude per channel would cost.
    grad = np.zeros((nz, ncol - K))
    kept = np.zeros(nz, dtype=bool)
    first = {}
    if ncol > K:
        signed = np.arange(ncol) >= K
        coef = np.full((nz, ncol), np.nan)
        cvar = np.full((nz, ncol), np.nan)
        for s0, s1, d, v, models in blocks():
            f, cov = solve_layers(d, v, models[:, :, sel], nonneg=cfg.nonneg,
                                  background=cfg.background, signed=signed)
            coef[s0:s1] = f[:, :ncol]
            cvar[s0:s1] = np.einsum("lkk->lk", cov)[:, :ncol]
        grad, kept = _smooth_amplitudes(coef[:, K:], cvar[:, K:])
        first = {"flux": coef[:, :K], "var": cvar[:, :K]}
    flux = np.full((nz, K), np.nan)
    var = np.full((nz, K), np.nan)
    acc = GroupChiSquare(K)
    for s0, s1, d, v, models in blocks():
        m = models[:, :, sel]
        if ncol > K:
            d = d - np.einsum("lg,lgp->lp", grad[s0:s1], m[:, K:])
        f, cov = solve_layers(d, v, m[:, :K], nonneg=cfg.nonneg, background=cfg.background)
        flux[s0:s1] = f[:, :K]
        var[s0:s1] = np.einsum("lkk->lk", cov)[:, :K]
        if v is not None:
            parts = np.nan_to_num(f[:, :K])[:, :, None] * m[:, :K]
            acc.add_residual(d, v, parts.sum(axis=1) + (np.nan_to_num(f[:, K:K + 1]) if cfg.background else 0.0),
                             parts)
        if model_cube is not None:
            fz = np.nan_to_num(f)
            shape = (s1 - s0, by1 - by0, bx1 - bx0)
            cube_block = np.einsum("lk,lkp->lp", fz[:, :K], models[:, :K]).reshape(shape)
            if ncol > K:
                cube_block += np.einsum("lg,lgp->lp", grad[s0:s1], models[:, K:]).reshape(shape)
            if cfg.background:
                cube_block += fz[:, K][:, None, None] * region[None]
            _add_box(model_cube, cube_block, box, s0, cube.ny, cube.nx)
    if kept.any():
        flux[kept] = first["flux"][kept]
        var[kept] = first["var"][kept]
    if cube.has_var:
        # Gradient amplitudes are smoothed along wavelength: not counted as free parameters.
        chi2, chi2_group = acc.result(nz, K + (1 if cfg.background else 0))
        meta_fit = _fit_meta(gm, chi2, chi2_group)
    _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit)


def _shrink_or_not(gm, build_raw, binned, node_wave, wave, region, cfg):
    """The image templates with the image's departures from the smooth models shrunk
    (*gm*, ``cfg.image_shrink``) or as they are (``build_raw()``, the same model built with
    ``image_shrink=0``), whichever fits the group's binned cube better.

    Shrinking removes the image's noise from the templates (a bright neighbour's noise is
    otherwise light in a faint member's spectrum: +3.8 % against +1.6 % on the synthetic
    ``easy-0.7``), but also departures that are real and too faint to stand out from it: on
    the real WFPC2 image of the minicube some groups fit the cube better with the image's
    pixels as they are.  The cube, averaged in a few wide bins (see :class:`BinnedGroup`),
    tells which (bench/README.md, "Image noise in the templates")."""
    shrunk = binned_chi2(binned, gm, node_wave, wave, region, cfg)
    if shrunk is None:
        return gm
    raw = build_raw()
    as_is = binned_chi2(binned, raw, node_wave, wave, region, cfg)
    log.debug("deblend: group %s binned chi2 shrunk %.1f, as is %.1f", gm.rows, shrunk, as_is)
    if as_is is None or as_is >= shrunk:
        return gm
    for i in gm.rows:
        raw.notes[i].append(f"image's pixels as they are (binned chi2 {as_is:.0f} against {shrunk:.0f} shrunk)")
    return raw


def _faint_in_image_from_cube(gm, members, box, region, x, y, segments, images, psf, node_wave, wave,
                              pixscale, cfg, spectrum, centres, wgm=None):
    """Members too faint in the ancillary image (S/N below :data:`IMAGE_MIN_SNR`) modelled on
    the cube's white light instead.

    A shallow image (the minicube's 600 s WFPC2 F814W cut-out) holds its faint members at the
    noise: their templates are noise, their light in the image goes to the bright neighbour's
    template, and their DEBLEND spectra come out near zero or negative while the cube sees them
    at S/N 20.  Their profile models fitted on the white light (with the group's other members,
    so that the split of the light there is the cube's) replace their image templates; the
    other members keep theirs.  When every member is faint in the image, the group is fitted
    on the white light alone (the joint fit).  *wgm*: that white-light model when the caller
    already built it with the same PSF (the centres' fit), else built here."""
    faint = np.asarray(gm.image_snr) < IMAGE_MIN_SNR
    if not faint.any():
        return gm
    if wgm is None:
        wgm = build_group_model(members, box, region, x, y, segments, images.white, psf, node_wave, wave,
                                pixscale, cfg, spectrum, centres=centres)
    notes = {i: [n for n in gm.notes[i] if not (faint[k] and n.startswith("no light in the model image"))]
             for k, i in enumerate(members)}
    for k in np.flatnonzero(faint):
        notes[members[k]].append(f"S/N {gm.image_snr[k]:.1f} in the image (< {IMAGE_MIN_SNR:g}): "
                                 "modelled on the cube's white light")
    if faint.all():
        return replace(wgm, notes=notes, image_snr=gm.image_snr)
    keep = ~faint[gm.col_member]
    cols = np.concatenate([gm.col_nodes[:, keep], wgm.col_nodes[:, np.flatnonzero(faint)]], axis=1)
    col_member = np.concatenate([gm.col_member[keep], np.flatnonzero(faint)])
    # IMA_ of a member modelled on the white light: that model (its light in the image is noise).
    image_models = gm.image_models.copy()
    image_models[faint] = wgm.image_models[faint]
    return replace(gm, col_nodes=cols, col_member=col_member, image_models=image_models, notes=notes)


def _solve_summed(cube, gm, box, region, z0, z1, step, cfg, model_cube):
    """Fluxes of a group whose columns are all free parts of its members (sharp-image
    templates): every column fitted per channel, a member's flux the sum of its parts'; with
    the fit's χ²/dof (``DBCHI2``...) as the third value."""
    bx0, bx1, by0, by1 = box
    sel = region.ravel()
    K = len(gm.rows)
    ncol = gm.n_columns
    S = (gm.col_member[:, None] == np.arange(K)[None, :]).astype(float)   # (ncol, K)
    flux = np.full((z1 - z0, K), np.nan)
    var = np.full((z1 - z0, K), np.nan)
    acc = GroupChiSquare(K)
    clipped = np.zeros(K, int)
    for c0 in range(z0, z1, step):
        c1 = min(c0 + step, z1)
        L = c1 - c0
        data, dvar = cube.window(bx0, bx1, by0, by1, c0, c1)
        models = gm.at(cube.wave[c0:c1]).reshape(L, ncol, -1)
        d = data.reshape(L, -1)[:, sel]
        v = None if dvar is None else dvar.reshape(L, -1)[:, sel]
        m = models[:, :, sel]
        f, cov = solve_layers(d, v, m, nonneg=cfg.nonneg, background=cfg.background)
        if not cfg.nonneg:
            f, cov, low = clip_negative(
                lambda rows: solve_layers(d[rows], None if v is None else v[rows], m[rows], nonneg=True,
                                          background=cfg.background), f, cov, S)
            clipped += low.sum(axis=0)
        flux[c0 - z0:c1 - z0] = np.nan_to_num(f[:, :ncol]) @ S
        var[c0 - z0:c1 - z0] = np.einsum("lij,ik,jk->lk", np.nan_to_num(cov[:, :ncol, :ncol]), S, S)
        nan = ~np.isfinite(f[:, :ncol]) @ S > 0      # a member with an unusable part: no flux there
        flux[c0 - z0:c1 - z0][nan] = np.nan
        var[c0 - z0:c1 - z0][nan] = np.nan
        if v is not None:
            parts = np.einsum("lc,lcp,ck->lkp", np.nan_to_num(f[:, :ncol]), m, S)
            acc.add_residual(d, v, parts.sum(axis=1) + (np.nan_to_num(f[:, ncol:ncol + 1]) if cfg.background
                                                         else 0.0), parts)
        if model_cube is not None:
            fz = np.nan_to_num(f)
            block = np.einsum("lk,lkp->lp", fz[:, :ncol], models).reshape(L, by1 - by0, bx1 - bx0)
            if cfg.background:
                block += fz[:, ncol][:, None, None] * region[None]
            _add_box(model_cube, block, box, c0 - z0, cube.ny, cube.nx)
    for k, i in enumerate(gm.rows):
        if clipped[k]:
            gm.notes[i].append(f"{int(clipped[k])} channels below -{NEG_SIGMA:g} sigma refitted with fluxes >= 0")
    meta = {"DBNCLIP": ([int(v) for v in clipped], "channels refitted with fluxes >= 0")}
    if not cube.has_var:
        return flux, var, meta
    # Every part of a member is a flux free in every channel.
    chi2, chi2_group = acc.result(z1 - z0, ncol + (1 if cfg.background else 0))
    return flux, var, {**_fit_meta(gm, chi2, chi2_group), **meta}


def _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit):
    """The members' DEBLEND spectra, model images and header keywords."""
    K = len(members)
    for k, i in enumerate(members):
        res = results[i]
        meta = {"DBGROUP": (res.group, "deblending group"),
                "DBNGROUP": (K, "sources fitted together"),
                "DBMODEL": (cfg.model, "spatial model kind"),
                "DBSOLVER": ("template" if gm.summed else cfg.solver if gm.parts is not None else "image",
                             "joint: spectra and morphology fitted together; template: image light"),
                "DBNONNEG": (bool(cfg.nonneg), "fluxes constrained >= 0"),
                "DBBKG": (bool(cfg.background), "uniform background fitted"),
                "PSFSRC": (psf.source, "PSF from header, given, fitted or fallback"),
                "DBPSFSCL": (float(psf_scale), "FWHM scale fitted on the group (1: as given)")}
        for key, per_member in meta_fit.items():
            value, comment = per_member
            meta[key] = (value[k] if isinstance(value, (list, tuple, np.ndarray)) else value, comment)
        res.spectrum = Spectrum1D(flux[:, k], var[:, k], meta)
        res.model_image = gm.image_models[k]
        res.box = box
        res.notes = gm.notes[i]
        res.status = OK


def _solve_joint(cube, gm, images, box, region, z0, z1, cfg, model_cube):
    """Fluxes of a "profile" group from the joint fit of spectra and morphologies
    (:func:`ifu_extract.deblend.joint.joint_fit`); the model added to *model_cube*."""
    bx0, bx1, by0, by1 = box
    sel = region.ravel()
    parts = gm.parts
    grid = parts["grid"]
    K = len(gm.rows)
    node_images = np.stack([grid.to_image(parts["comp_ft"] * f).reshape(len(parts["owner"]), -1)[:, sel]
                            for f in parts["node_ft"]])
    resolved = np.asarray(parts["resolved"], dtype=bool)
    # With a sharp ancillary image, compact members keep the shape measured on it; resolved
    # members still adapt their amplitudes per wavelength band on the cube (colour gradients).
    fixed = np.zeros(K, dtype=bool) if images.from_cube or not IMAGE_FIXES_COMPACT else ~resolved
    # A resolved source's core and envelope get their own spectra (a red bulge in a blue
    # disk: the colour gradient has the spectral features of both, which no smooth change of
    # shape with wavelength follows); its DEBLEND spectrum is their sum.
    owner = np.asarray(parts["owner"]).copy()
    shares = np.asarray(parts["shares"], dtype=float).copy()
    member_of = list(range(K))
    sigma = parts["sigma"]
    if cfg.gradients:
        for k in np.flatnonzero(resolved & ~fixed):
            outer = (owner == k) & (sigma > GRADIENT_SPLIT)
            inner = (owner == k) & (sigma <= GRADIENT_SPLIT)
            if outer.any() and inner.any():
                owner[outer] = len(member_of)
                member_of.append(k)
                for sel_ in (inner, outer):
                    total = shares[sel_].sum()
                    shares[sel_] = shares[sel_] / total if total > 0 else 1.0 / sel_.sum()
                gm.notes[gm.rows[k]].append("core and envelope fitted with their own spectra")
    member_of = np.asarray(member_of)
    sub_resolved = resolved[member_of]
    sub_fixed = fixed[member_of]
    comps = GroupComponents(node_images, gm.node_wave, owner, shares, sub_resolved & ~sub_fixed,
                            sub_fixed, member_of)
    nz = z1 - z0
    npx = int(sel.sum())
    data = np.empty((nz, npx), np.float32)
    var = None
    for c0 in range(z0, z1, 512):
        c1 = min(c0 + 512, z1)
        d, v = cube.window(bx0, bx1, by0, by1, c0, c1)
        data[c0 - z0:c1 - z0] = d.reshape(c1 - c0, -1)[:, sel]
        if v is not None:
            if var is None:
                var = np.empty((nz, npx), np.float32)
            var[c0 - z0:c1 - z0] = v.reshape(c1 - c0, -1)[:, sel]
    wave = cube.wave[z0:z1]
    res = joint_fit(data, var, wave, comps, background=cfg.background)
    del data, var
    for k, i in enumerate(gm.rows):
        if res.clipped[k]:
            gm.notes[i].append(f"{int(res.clipped[k])} channels below -{NEG_SIGMA:g} sigma refitted with fluxes >= 0")
    meta = _fit_meta(gm, res.chi2, res.chi2_group)
    if model_cube is not None:
        Hm = hat_weights(wave, res.morph_wave)
        Hn = hat_weights(wave, gm.node_wave)
        onehot = (owner[:, None] == np.arange(len(member_of))[None, :]).astype(float)
        full = np.stack([grid.to_image(parts["comp_ft"] * f) for f in parts["node_ft"]])  # (n, C, ny, nx)
        col = np.einsum("cj,ck,ncyx->jnkyx", res.amp, onehot, full, optimize=True)
        fz = np.nan_to_num(res.sub_flux)
        for c0 in range(0, nz, 256):
            c1 = min(c0 + 256, nz)
            m = np.einsum("lj,ln,jnkyx->lkyx", Hm[c0:c1], Hn[c0:c1], col, optimize=True)
            block = np.einsum("lk,lkyx->lyx", fz[c0:c1], m)
            if res.background is not None:
                block += res.background[c0:c1, None, None] * region[None]
            _add_box(model_cube, block.astype(np.float32), box, c0, cube.ny, cube.nx)
    meta.update({"DBNCLIP": ([int(v) for v in res.clipped], "channels refitted with fluxes >= 0"),
                 "DBNITER": (int(res.iterations), "joint fit iterations")})
    return res.flux, res.var, meta


def _fit_meta(gm, chi2, chi2_group) -> dict:
    """``DBCHI2``/``DBGCHI2``/``DBPOOR`` of a group's fit (per member, over the group; -1 when
    the cube has no variance), and a note on each member whose model is poor."""
    def fin(v):  # FITS headers hold no NaN
        return round(float(v), 4) if np.isfinite(v) else -1.0

    for k, i in enumerate(gm.rows):
        if chi2[k] > POOR_CHI2:
            gm.notes[i].append(f"poor model: chi2/dof {chi2[k]:.2f}")
    return {"DBCHI2": ([fin(v) for v in chi2], "chi2/dof on its own spaxels (-1: no STAT or none own)"),
            "DBGCHI2": (fin(chi2_group), "chi2/dof of the fit over the group"),
            "DBPOOR": ([bool(v > POOR_CHI2) for v in chi2], f"model poor: DBCHI2 > {POOR_CHI2}")}


def _smooth_amplitudes(amp: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running median (GRADIENT_SMOOTH channels) of nuisance amplitudes ``(n_wave, G)``, keeping
    the raw value where it departs from the median by more than GRADIENT_KEEP sigma.

    Returns the smoothed amplitudes and the channels where some raw value was kept.
    """
    out = np.zeros_like(amp)
    kept = np.zeros(amp.shape[0], dtype=bool)
    idx = np.arange(amp.shape[0])
    width = min(GRADIENT_SMOOTH, amp.shape[0] | 1)
    for g in range(amp.shape[1]):
        a = amp[:, g]
        ok = np.isfinite(a)
        if not ok.any():
            continue
        filled = np.interp(idx, idx[ok], a[ok])
        smooth = ndimage.median_filter(filled, size=width, mode="nearest")
        with np.errstate(invalid="ignore"):
            keep = ok & (np.abs(a - smooth) > GRADIENT_KEEP * np.sqrt(var[:, g]))
        out[:, g] = np.where(keep, a, smooth)
        kept |= keep
    return out, kept


def _add_box(target, block, box, zoff, ny, nx):
    """``target[zoff:, y0:y1, x0:x1] += block`` clipped to the cube grid."""
    x0, x1, y0, y1 = box
    cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    L = block.shape[0]
    target[zoff:zoff + L, cy0:cy1, cx0:cx1] += block[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]

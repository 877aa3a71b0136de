"""Spatial models of a group's members at the PSF nodes ("profile" and "segment" kinds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std
from scipy.ndimage import gaussian_filter
from scipy.optimize import lsq_linear

from ..errors import ParameterError
from ..psf import PSFModel
from .config import (
    CENTRE_MIN_RATIO,
    CENTRE_NEAR,
    COMPONENT_SIGMAS,
    ELONGATION,
    GRADIENT_SPLIT,
    IMAGE_MIN_SIGMA,
    NEIGHBOUR_FRACTION,
    NO_SEGMENT_CAP,
    NODE_STEP,
    SEGMENT_CAP,
    UNRESOLVED_MAX_SIGMA,
    DeblendConfig,
)
from .fourier import FourierGrid, psf_ft
from .groups import intrinsic_shape
from .joint import refine_centres


@dataclass
class ModelImages:
    """The high-S/N images the spatial models are fitted on, on the cube grid.

    Attributes
    ----------
    image, var : numpy.ndarray
        ``(ny, nx)`` whole-band image (white light or ancillary) and its variance (or None).
    from_cube : bool
        True when the images are means of the cube's own channels (their PSF is the cube's,
        averaged over those channels); False for an ancillary image (PSF FWHM
        ``DeblendConfig.image_fwhm``).
    """

    image: np.ndarray
    var: np.ndarray | None
    from_cube: bool
    white: "ModelImages | None" = None   # the cube's white light, with an ancillary image
    #: The ancillary image on a grid ``fine_scale`` times finer than the cube's (aligned with
    #: it: ``(ny * fine_scale, nx * fine_scale)``), or None.
    fine: np.ndarray | None = None
    fine_scale: int = 1


@dataclass
class _GroupModel:
    """Spatial models of the members of a group at the PSF nodes.

    Columns ``0..K-1`` are the members' unit-flux models (their fitted fluxes are the DEBLEND
    spectra); further columns are zero-flux *gradient* shapes of resolved members (the main
    change of their shape with wavelength, e.g. a red bulge in a blue disk), whose per-channel
    amplitudes are nuisance parameters: they let a member's shape follow its colours without
    changing what its flux means.
    """

    rows: list
    box: tuple
    region: np.ndarray          # (ny, nx) bool: spaxels fitted
    node_wave: np.ndarray       # (n_nodes,)
    col_nodes: np.ndarray       # (n_nodes, n_columns, ny, nx)
    col_member: np.ndarray      # (n_columns,) member index of each column
    image_models: np.ndarray    # (K, ny, nx) members' models in the whole-band image
    notes: dict                 # row -> list of notes
    layout: tuple | None = None  # ("profile") members' component caps and intrinsic shapes
    parts: dict | None = None   # ("profile") components for the joint fit (.joint)
    summed: bool = False        # every column has a free flux, summed into its member's
    image_snr: np.ndarray | None = None  # (K,) members' S/N in an ancillary image (templates)

    @property
    def n_columns(self) -> int:
        return len(self.col_member)

    def at(self, wave: np.ndarray) -> np.ndarray:
        """Column models ``(n_wave, n_columns, ny, nx)`` float32 at *wave* (Angstrom), linear in
        wavelength between PSF nodes."""
        wave = np.asarray(wave, dtype=float)
        nw = self.node_wave
        if len(nw) == 1:
            return np.broadcast_to(self.col_nodes[0], (len(wave),) + self.col_nodes.shape[1:])
        pos = np.interp(wave, nw, np.arange(len(nw)))
        i0 = np.clip(np.floor(pos).astype(int), 0, len(nw) - 2)
        t = (pos - i0)[:, None, None, None].astype(np.float32)
        return self.col_nodes[i0] * (1 - t) + self.col_nodes[i0 + 1] * t


def psf_nodes(psf: PSFModel, wave: np.ndarray, pixscale: float) -> np.ndarray:
    """Node wavelengths such that the FWHM changes by at most NODE_STEP between nodes."""
    fw = psf.fwhm(wave)
    lo, hi = float(np.min(fw)), float(np.max(fw))
    if lo <= 0:
        raise ParameterError("PSF", f"FWHM(λ) reaches {lo:.3g} arcsec in the cube's range",
                             "check the FSF keywords or give {fwhm}", params=("fwhm",))
    n = 1 if hi / lo < 1.0 + 1e-6 else int(np.ceil(np.log(hi / lo) / np.log(NODE_STEP))) + 1
    n = min(max(n, 1 if n == 1 else 2), 64)
    return np.array([float(np.mean(wave))]) if n == 1 else np.linspace(wave[0], wave[-1], n)


def channel_weights(node_wave, wave, spectrum=None) -> np.ndarray:
    """Mean over *wave* (weighted by *spectrum*) of the linear-interpolation weights of each
    node (sums to 1): the mix of node PSFs that makes a band image's PSF."""
    n = len(node_wave)
    if n == 1:
        return np.ones(1)
    pos = np.interp(wave, node_wave, np.arange(n))
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
    t = pos - i0
    s = np.ones(len(wave)) if spectrum is None else np.clip(np.nan_to_num(spectrum), 0.0, None)
    if not s.sum() > 0:
        s = np.ones(len(wave))
    w = np.bincount(i0, s * (1 - t), minlength=n) + np.bincount(i0 + 1, s * t, minlength=n)
    return w / w.sum()


def _fit_amplitudes(design, img, ivar, good, background):
    """Non-negative weighted least squares of an image on component images (+ a constant)."""
    A = design[:, good].T
    b = img[good].astype(np.float64)
    sw = np.sqrt(ivar[good]) if ivar is not None else np.ones_like(b)
    ncol = A.shape[1]
    cols, lower = [A * sw[:, None]], [np.zeros(ncol)]
    if background:
        cols.append(sw[:, None])
        lower.append([-np.inf])
    Aw = np.hstack(cols)
    scale = np.sqrt((Aw**2).sum(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    sol = lsq_linear(Aw / scale, b * sw, bounds=(np.concatenate(lower), np.inf), method="bvls")
    return sol.x[:ncol] / scale[:ncol]


def _ivar(var):
    if var is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(var) & (var > 0), 1.0 / var, 0.0)


def build_group_model(rows, box, region, x, y, segments, images: ModelImages, psf, node_wave,
                      wave, pixscale, cfg: DeblendConfig, spectrum=None, layout=None,
                      centres=None) -> _GroupModel:
    """The group's column models (members' unit-flux models, then gradient shapes) at the PSF
    nodes, and the members' models in the model image.

    *layout* (``_GroupModel.layout`` of an earlier build) reuses that build's component caps
    and intrinsic shapes ("profile" models), so that models built with different PSFs have
    the same components and only their amplitudes are refitted.  *centres* (``(x, y)`` arrays
    of the members) are used instead of fitting them."""
    bx0, bx1, by0, by1 = box
    ny, nx = by1 - by0, bx1 - bx0
    fwhm_max = float(np.max(psf.fwhm(node_wave))) / pixscale
    grid = FourierGrid(box, pad=int(np.ceil(max(8.0, 6.0 * fwhm_max))))
    node_ft = np.stack([psf_ft(psf.kind, float(psf.fwhm(w)) / pixscale, float(psf.beta(w)), grid.k)
                        for w in node_wave]) * grid.pixel
    if images.from_cube:
        # The white light's PSF: the channel PSFs weighted by the group's spectrum.
        image_ft = np.tensordot(channel_weights(node_wave, wave, spectrum), node_ft, axes=1)
    else:
        image_ft = psf_ft("gaussian", cfg.image_fwhm / pixscale, 2.8, grid.k) * grid.pixel
    img = images.image[by0:by1, bx0:bx1]
    ivar = _ivar(None if images.var is None else images.var[by0:by1, bx0:bx1])
    good = region & np.isfinite(img)
    if ivar is not None:
        good &= ivar > 0
    notes = {i: [] for i in rows}
    K = len(rows)

    if cfg.model == "segment":
        comp_nodes = np.zeros((len(node_wave), K, ny, nx), dtype=np.float32)
        image_models = np.zeros((K, ny, nx), dtype=np.float32)
        for k, i in enumerate(rows):
            own = np.zeros((ny, nx), dtype=bool)
            if i in segments:
                ys, xs = segments[i]
                inb = (ys >= by0) & (ys < by1) & (xs >= bx0) & (xs < bx1)
                own[ys[inb] - by0, xs[inb] - bx0] = True
            intrinsic = np.where(own & np.isfinite(img), np.clip(img, 0, None), 0.0)
            if intrinsic.sum() <= 0:
                notes[i].append("no segment light: point-source model")
                ft = grid.phase(x[i], y[i])
                image_models[k] = grid.to_image(ft * image_ft)
                comp_nodes[:, k] = grid.to_image(ft[None] * node_ft)
                continue
            total = intrinsic.sum()
            image_models[k] = intrinsic
            if images.from_cube:
                # The white light already carries the PSF: used as is at every wavelength.
                comp_nodes[:, k] = intrinsic / total
            else:
                padded = np.zeros((grid.ny, grid.nx))
                p = grid.pad
                padded[p:p + ny, p:p + nx] = intrinsic / total
                comp_nodes[:, k] = grid.to_image(np.fft.rfft2(padded)[None] * node_ft)
        return _GroupModel(rows, box, region, node_wave, comp_nodes, np.arange(K), image_models, notes)

    # "profile": multi-Gaussian expansion per member, amplitudes fitted jointly on the image.
    # A first fit with point sources ranks the members by flux.  Each member's widest
    # component is bounded by its segment's size and by a fraction of the distance to any
    # brighter member (a faint source's broad halo cannot be told from a brighter neighbour's
    # wings, so it is not allowed one).  A second fit with round components gives every
    # member's own light (the image minus the others' models), on which its intrinsic size and
    # ellipticity are measured; unresolved members stay round and compact, resolved ones get
    # elongated components in four directions so that any ellipticity and angle is a
    # non-negative combination.  The final fit uses those components.
    px = np.array([x[i] for i in rows], dtype=float)
    py = np.array([y[i] for i in rows], dtype=float)
    if layout is None:
        point = grid.to_image(np.stack([grid.phase(px[k], py[k]) for k in range(K)]) * image_ft)
        pflux = _fit_amplitudes(point, img, ivar, good, cfg.background)
        caps = []
        for k, i in enumerate(rows):
            cap = max(1.0, SEGMENT_CAP * np.sqrt(len(segments[i][0]) / np.pi)) if i in segments else NO_SEGMENT_CAP
            brighter = [j for j in range(K) if pflux[j] > pflux[k]]
            if brighter:
                dist = min(np.hypot(x[rows[j]] - x[i], y[rows[j]] - y[i]) for j in brighter)
                cap = min(cap, NEIGHBOUR_FRACTION * dist)
            caps.append(max(0.5, cap))
    else:
        caps, shapes, (px, py) = layout
    phases = [grid.phase(px[k], py[k]) for k in range(K)]
    point = grid.to_image(np.stack(phases) * image_ft)             # (K, ny, nx)

    comp_params = []

    def components(shapes, centres=None):
        phs = phases if centres is None else [grid.phase(cx, cy) for cx, cy in zip(*centres)]
        fts, own, sigs = [], [], []
        comp_params.clear()
        for k in range(K):
            smaj, q, theta = shapes[k]
            cap = caps[k] if smaj > 0 else min(caps[k], UNRESOLVED_MAX_SIGMA)
            for sig in COMPONENT_SIGMAS:
                if sig > cap:
                    continue
                if sig >= 1.0 and smaj > 0 and q < 1.0:
                    variants = [(1.0, 0.0)] + [(ELONGATION, np.pi * j / 4.0) for j in range(4)]
                else:
                    variants = [(1.0, 0.0)]
                for qq, tt in variants:
                    fts.append(phs[k] * grid.gaussian(sig, qq, tt))
                    comp_params.append((k, sig, qq, tt))
                    own.append(k)
                    sigs.append(sig)
        return np.stack(fts), np.asarray(own), np.asarray(sigs)

    if layout is None:
        comp_ft, owner, _ = components([(1.0, 0.5, 0.0)] * K)       # round, up to the caps
        design = grid.to_image(comp_ft * image_ft)
        amp = _fit_amplitudes(design, img, ivar, good, cfg.background)
        models = np.stack([np.tensordot(amp[owner == k], design[owner == k], axes=1) for k in range(K)])
        shapes = []
        s_w = 2.0 * float(np.mean(psf.fwhm(node_wave))) / pixscale / 2.3548
        for k, i in enumerate(rows):
            own = img - (models.sum(axis=0) - models[k])
            shapes.append(intrinsic_shape(np.where(np.isfinite(own), own, 0.0), point[k],
                                          px[k] - bx0, py[k] - by0, s_w))
        if centres is not None:
            px, py = (np.asarray(v, dtype=float) for v in centres)
            phases = [grid.phase(px[k], py[k]) for k in range(K)]
        elif cfg.fit_centres:
            # The centres are fitted with the final components (elliptical ones included: a
            # round model of an elliptical galaxy leaves a residual its neighbour pulls at).
            px, py = refine_centres(grid, image_ft, img, ivar, good, px, py,
                                    lambda cx, cy: components(shapes, (cx, cy))[:2],
                                    fit=lambda design: _fit_amplitudes(design, img, ivar, good,
                                                                       cfg.background),
                                    movable=_centre_movable(models.sum(axis=(1, 2)), px, py),
                                    background=cfg.background)
            for k, i in enumerate(rows):
                moved = np.hypot(px[k] - x[i], py[k] - y[i]) * pixscale
                if moved >= 0.005:
                    notes[i].append(f"centre fitted {moved:.3f} arcsec from the catalogue position")
            phases = [grid.phase(px[k], py[k]) for k in range(K)]
    comp_ft, owner, comp_sigma = components(shapes)
    design = grid.to_image(comp_ft * image_ft)                  # (C, ny, nx)
    amp = _fit_amplitudes(design, img, ivar, good, cfg.background)
    image_models = np.stack([np.tensordot(amp[owner == k], design[owner == k], axes=1)
                             for k in range(K)])
    resolved = np.array([sh[0] > 0 for sh in shapes])
    shares = np.zeros(len(owner))
    for k, i in enumerate(rows):
        mine = owner == k
        a = amp[mine]
        if not np.any(a > 0):
            notes[i].append("no light in the model image: point-source model")
            a = np.zeros(mine.sum())
            a[0] = 1.0
        shares[mine] = a / a.sum()
    image_models = image_models.astype(np.float32)
    if not images.from_cube and cfg.image_templates:
        fine = None if images.fine is None else (images.fine, images.fine_scale)
        return _image_templates(rows, box, region, img, ivar, good, list(comp_params), owner,
                                comp_sigma, resolved, grid, node_ft, node_wave, psf, pixscale, fine,
                                cfg, notes, (caps, shapes, (px, py)))
    rows_w = [np.where(owner == k, shares, 0.0) for k in range(K)]
    col_member = list(range(K))
    if cfg.gradients:
        # Zero-flux "core minus envelope" shape of each resolved member: its core (components
        # up to GRADIENT_SPLIT spaxels) and its envelope, each with unit flux, differenced.
        for k in np.flatnonzero(resolved):
            mine = owner == k
            inner = mine & (comp_sigma <= GRADIENT_SPLIT)
            outer = mine & (comp_sigma > GRADIENT_SPLIT)
            if shares[inner].sum() > 0 and shares[outer].sum() > 0:
                rows_w.append(np.where(inner, shares, 0.0) / shares[inner].sum()
                              - np.where(outer, shares, 0.0) / shares[outer].sum())
                col_member.append(k)
                notes[rows[k]].append("colour gradient (core/envelope) modelled")
    col_ft = np.tensordot(np.asarray(rows_w), comp_ft, axes=1)   # (n_columns, fy, fx)
    col_nodes = np.stack([grid.to_image(col_ft * f) for f in node_ft]).astype(np.float32)
    parts = {"comp_ft": comp_ft, "owner": owner, "shares": shares, "grid": grid,
             "node_ft": node_ft, "resolved": resolved, "sigma": comp_sigma}
    return _GroupModel(rows, box, region, node_wave, col_nodes, np.asarray(col_member),
                       image_models, notes, (caps, shapes, (px, py)), parts)


def _pixel_components(params, px, py, origin, shape, image_sigma: float, *, scale: int = 1,
                      sub: int = 5) -> np.ndarray:
    """Unit-flux elliptical Gaussian components integrated over pixels (real space, *sub* x
    *sub* samples per pixel): ``(C, ny, nx)`` for *shape* ``(ny, nx)`` pixels of a grid
    *scale* times finer than the cube's whose first pixel lies in the spaxel *origin*
    ``(x, y)`` (cube pixels, 0-based).  Each sums to 1 over the grid.  Unlike their
    band-limited transforms these do not ring around a sharp component.

    Parameters
    ----------
    params : list of (member, sigma, q, theta)
        Member index, major-axis sigma (spaxels), axis ratio and angle (radians).
    px, py : sequence of float
        Members' centres, cube pixels (0-based).
    image_sigma : float
        Sigma (spaxels) of the image's PSF, added in quadrature.
    """
    ny, nx = shape
    n = sub * 1
    gy, gx = np.mgrid[0:ny * n, 0:nx * n]
    # Centre of sample (gx, gy) in cube pixels: fine pixel i covers [i/scale, (i+1)/scale)
    # of the spaxels from origin - 0.5.
    xs = origin[0] - 0.5 + (gx + 0.5) / (n * scale)
    ys = origin[1] - 0.5 + (gy + 0.5) / (n * scale)
    out = np.empty((len(params), ny, nx))
    for c, (k, sig, q, theta) in enumerate(params):
        s1 = np.hypot(sig, image_sigma)
        s2 = np.hypot(q * sig, image_sigma)
        dx, dy = xs - px[k], ys - py[k]
        ct, st = np.cos(theta), np.sin(theta)
        u = (dx * ct + dy * st) / s1
        v = (-dx * st + dy * ct) / s2
        g = np.exp(-0.5 * (u * u + v * v))
        img = g.reshape(ny, n, nx, n).sum(axis=(1, 3))
        out[c] = img / img.sum()
    return out


def _image_templates(rows, box, region, img, ivar, good, params, owner, comp_sigma, resolved, grid,
                     node_ft, node_wave, psf, pixscale, fine, cfg, notes, layout) -> _GroupModel:
    """Members' models made of the sharp ancillary image's own pixels.

    Each member (and, for a resolved member with ``cfg.gradients``, its core and its envelope:
    *parts* with their own spectra) is its multi-Gaussian model on the image, corrected on the
    group's region by its share of the model's residual: there the parts' light adds up to the
    image, shared in proportion to their models.  The models' shortcomings (a Sérsic n = 4 cusp
    and wings are not a few Gaussians) then only move light between members where they overlap,
    instead of leaving a residual that the faint neighbour absorbs in the cube; outside the
    region (wings beyond the fitted spaxels) the smooth model stands.

    Each part is then convolved with the cube's PSF at every node.  With *fine* (the image on
    a grid ``scale`` times finer than the cube's, see :class:`ModelImages`) the parts are made
    and convolved on that grid and summed into spaxels, as the cube's light was: a sharp cusp
    or point sampled on the spaxels alone does not say where in its spaxel its light lies.
    """
    K = len(rows)
    ny, nx = img.shape
    p = grid.pad
    px, py = layout[2]
    # The image's PSF, and at least IMAGE_MIN_SIGMA so that a point is sampled by the spaxels'
    # sub-samples.
    image_sigma = max(cfg.image_fwhm / 2.3548 / pixscale, IMAGE_MIN_SIGMA)
    origin = (grid.box[0] - p, grid.box[2] - p)
    full = _pixel_components(params, px, py, origin, (grid.ny, grid.nx), image_sigma)
    design = full[:, p:p + ny, p:p + nx]
    amp = _fit_amplitudes(design.reshape(len(params), -1), img.ravel(),
                          None if ivar is None else ivar.ravel(), good.ravel(), cfg.background)
    snr = _image_snr(design, amp, owner, K, img, ivar, good)
    groups = []
    for k in range(K):
        mine = owner == k
        inner = mine & (comp_sigma <= GRADIENT_SPLIT)
        outer = mine & (comp_sigma > GRADIENT_SPLIT)
        split = (cfg.gradients and resolved[k] and np.any(amp[inner] > 0) and np.any(amp[outer] > 0))
        groups += [(k, sel) for sel in ((inner, outer) if split else (mine,))]
        if split:
            notes[rows[k]].append("core and envelope fitted with their own spectra")
    part_member = np.array([k for k, _ in groups])
    scale = 1 if fine is None else fine[1]
    if fine is None:
        sky = img
        comps = full
        kernels = node_ft / grid.pixel   # the image's pixels already hold pixel-integrated light
        k_img = grid.k
    else:
        sky = fine[0][box[2] * scale:box[3] * scale, box[0] * scale:box[1] * scale] / scale**2
        comps = _pixel_components(params, px, py, origin, (grid.ny * scale, grid.nx * scale),
                                  image_sigma, scale=scale, sub=2)
        fy = np.fft.fftfreq(grid.ny * scale)[:, None]
        fx = np.fft.rfftfreq(grid.nx * scale)[None, :]
        kf = np.hypot(fx, fy)
        kernels = np.stack([psf_ft(psf.kind, float(psf.fwhm(w)) / pixscale * scale, float(psf.beta(w)), kf)
                            for w in node_wave])
        k_img = kf * scale                                # cycles per spaxel
    if cfg.image_fwhm > 0:
        # From the image's resolution to the cube's: the cube's PSF over the image's (a Gaussian
        # of FWHM image_fwhm), stable since the cube's PSF is the broader one by far.
        kernels = kernels / psf_ft("gaussian", cfg.image_fwhm / pixscale, 2.5, k_img)
    pf = p * scale
    fy_, fx_ = ny * scale, nx * scale
    parts = np.asarray([np.tensordot(amp[sel], comps[sel], axes=1) for _, sel in groups])
    inner_parts = parts[:, pf:pf + fy_, pf:pf + fx_]
    total = inner_parts.sum(axis=0)
    on = np.kron(good, np.ones((scale, scale), dtype=bool)) if scale > 1 else good
    use = on & np.isfinite(sky) & (total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(use, inner_parts / np.where(use, total, 1.0), 0.0)
    # The departures' significance on the scale of the cube's PSF (middle of the band), in pixels
    # of the image's grid.
    smooth = float(np.median([psf.fwhm(w) for w in node_wave])) / 2.3548 / pixscale * scale
    sky = _shrink_residual(sky, total, use, cfg.image_shrink, smooth)
    cols = np.zeros((len(node_wave), len(groups), ny, nx), dtype=np.float32)
    image_models = np.zeros((K, ny, nx), dtype=np.float32)
    shape_f = (grid.ny * scale, grid.nx * scale)

    def to_box(a):
        """Padded (fine) grid -> spaxels of the box."""
        if scale > 1:
            a = a.reshape(a.shape[:-2] + (grid.ny, scale, grid.nx, scale)).sum(axis=(-3, -1))
        return a[..., p:p + ny, p:p + nx]

    fts = []
    for j, k in enumerate(part_member):
        tpl = parts[j].copy()
        tpl[pf:pf + fy_, pf:pf + fx_][use] = (share[j] * sky)[use]
        flux = float(tpl.sum())
        if not flux > 0:
            notes[rows[k]].append("no light in the model image: point-source model")
            fts.append(None)
            continue
        image_models[k] += to_box(tpl).astype(np.float32)
        fts.append(np.fft.rfft2(tpl / flux))
    for j, k in enumerate(part_member):
        if fts[j] is None:
            cols[:, j] = grid.to_image(grid.phase(px[k], py[k])[None] * node_ft)
            continue
        conv = np.fft.irfft2(fts[j][None] * kernels, s=shape_f, axes=(-2, -1))
        cols[:, j] = to_box(conv)
    return _GroupModel(rows, box, region, node_wave, cols, part_member, image_models,
                       notes, layout, None, summed=True, image_snr=snr)


def _shrink_residual(sky, model, use, shrink: float, smooth: float):
    """*sky* with its departures from *model* kept where they are significant on the cube's
    PSF scale, soft-thresholded at *shrink* σ there (elsewhere, outside *use*, *sky* as is).

    The templates are the image's pixels shared out in proportion to the members' smooth models:
    where the image departs from them by more than its noise (a Sérsic cusp, a real galaxy's
    envelope, spiral structure) the departure is real light and kept; below, it is mostly the
    image's noise, which in a bright neighbour's template becomes its light in the faint
    member's spectrum.  Significance is judged on the departures smoothed by a Gaussian of
    *smooth* pixels (the cube's PSF), the scale on which they reach the cube: a faint but
    coherent departure (the real WFPC2 image of the minicube's BCG) is far above the smoothed
    noise although below the noise of one pixel, which a per-pixel threshold removed
    (bench/README.md, "Image noise in the templates").  The noise of the smoothed map is the
    pixels' robust spread times the kernel's norm (white noise; the spread of the departures
    themselves, an upper bound where they are broad)."""
    if not shrink > 0 or not use.any():
        return sky
    resid = np.where(use, sky - model, 0.0)
    weight = gaussian_filter(use.astype(float), smooth, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        smoothed = np.where(use, gaussian_filter(resid, smooth, mode="constant") / weight, 0.0)
    delta = np.zeros((2 * int(4 * smooth) + 1,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    norm = float(np.sqrt(np.sum(gaussian_filter(delta, smooth, mode="constant") ** 2)))
    sigma = float(mad_std(resid[use])) * norm
    size = np.abs(smoothed)
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.where(size > 0, np.maximum(size - shrink * sigma, 0.0) / size, 0.0)
    return np.where(use, model + resid * keep, sky)


def _image_snr(design, amp, owner, K, img, ivar, good) -> np.ndarray:
    """Each member's S/N in the ancillary image: that of its model's flux fitted with the
    model's own shape (``‖m_k‖ / σ``), σ the image's noise per pixel on the cube grid (from
    *ivar*, else the robust spread of the fit's residual, which a few cosmic rays do not move).
    """
    models = np.stack([np.tensordot(amp[owner == k], design[owner == k], axes=1) for k in range(K)])
    if ivar is not None:
        return np.sqrt(np.einsum("kyx,yx->k", np.where(good, models, 0.0) ** 2, ivar))
    resid = (img - models.sum(axis=0))[good]
    sigma = float(mad_std(resid)) if resid.size else 0.0
    norm = np.sqrt(np.sum(np.where(good, models, 0.0) ** 2, axis=(1, 2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, norm / sigma, np.inf)


def _centre_movable(pflux, px, py) -> np.ndarray:
    """Members whose centre is fitted: those at least CENTRE_MIN_RATIO as bright (point-source
    flux on the model image) as every member within CENTRE_NEAR spaxels."""
    K = len(pflux)
    out = np.ones(K, dtype=bool)
    for k in range(K):
        for j in range(K):
            if j != k and np.hypot(px[j] - px[k], py[j] - py[k]) < CENTRE_NEAR \
                    and pflux[k] < CENTRE_MIN_RATIO * pflux[j]:
                out[k] = False
    return out

"""The PSF to deblend with, and its narrowing by each group's own data."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..cubeio import Cube
from ..psf import PSFModel
from ..psf import resolve_psf as resolve_cube_psf
from .config import REFINE_BIN_MIN, REFINE_BINS, REFINE_LOWEST, REFINE_MIN_DCHI2, REFINE_STEP
from .models import ModelImages, build_group_model, channel_weights
from .solver import solve_layers

log = logging.getLogger("ifu_extract")


def resolve_psf(cube: Cube, *, psf: PSFModel | None = None, fwhm: float | None = None,
                fwhm_red: float | None = None, beta: float | None = None, kind: str = "moffat",
                star: tuple | None = None, candidates=None, fallback_fwhm: float | None = None) -> PSFModel:
    """The PSF to deblend with: *psf* when given, else :func:`ifu_extract.psf.resolve_psf`
    (given FWHM > FSF keywords > *star* > fitted on the field's stars > *fallback_fwhm*), required.

    Parameters
    ----------
    cube : Cube
    psf : PSFModel, optional
        A ready model (wins over everything).
    fwhm, fwhm_red, beta, kind, star, candidates, fallback_fwhm : optional
        See :func:`ifu_extract.psf.resolve_psf`.

    Returns
    -------
    PSFModel

    Raises
    ------
    InputError
        When no source of a PSF is available (one line naming ``--fwhm``), or a star fit fails.
    """
    if psf is not None:
        return psf
    return resolve_cube_psf(cube, fwhm=fwhm, fwhm_red=fwhm_red, beta=beta, kind=kind, star=star,
                            candidates=candidates, fallback_fwhm=fallback_fwhm, required=True)



class BinnedGroup:
    """The group box summarised for the PSF refinement, in one pass over its channels.

    The refinement builds the members' models on the *even* channels' mean image and judges
    them on the *odd* channels averaged in a few wide wavelength bins: the two halves have
    independent noise, so a more flexible model (more components) cannot look better by
    fitting the noise it is judged on.  Also sums the group's spectrum over the fitted region
    (all channels: the weights of the white light's PSF).

    Attributes
    ----------
    spectrum : numpy.ndarray
        ``(n_wave,)`` sum of the data over the fitted region, per channel.
    edges : numpy.ndarray
        ``(n_bins + 1,)`` channel edges of the bins (relative to the first channel).
    """

    def __init__(self, nz: int, region: np.ndarray, keep_bins: bool):
        self.region = region
        self.spectrum = np.zeros(nz)
        nb = int(np.clip(nz // REFINE_BIN_MIN, 1, REFINE_BINS))
        self.edges = np.linspace(0, nz, nb + 1).astype(int)
        self.keep = keep_bins
        shape = (nb, int(region.sum()))
        self._sum, self._var, self._n = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self._img, self._varsum, self._in = (np.zeros(region.shape) for _ in range(3))

    def add(self, c0: int, data: np.ndarray, var: np.ndarray | None) -> None:
        """Channels ``c0 : c0 + len(data)`` of the box: ``data``, ``var`` ``(L, ny, nx)``
        (*var* may be None when the bins are not kept)."""
        d = data[:, self.region]
        self.spectrum[c0:c0 + d.shape[0]] = np.nansum(d, axis=1)
        if not self.keep:
            return
        ok_box = np.isfinite(data) & np.isfinite(var) & (var > 0)
        even = (c0 + np.arange(data.shape[0])) % 2 == 0
        self._img += np.where(ok_box[even], data[even], 0.0).sum(axis=0)
        self._varsum += np.where(ok_box[even], var[even], 0.0).sum(axis=0)
        self._in += ok_box[even].sum(axis=0)
        v = var[:, self.region]
        ok = ok_box[:, self.region] & ~even[:, None]
        c1 = c0 + d.shape[0]
        for b, (e0, e1) in enumerate(zip(self.edges[:-1], self.edges[1:])):
            lo, hi = max(e0, c0) - c0, min(e1, c1) - c0
            if hi > lo:
                self._sum[b] += np.where(ok[lo:hi], d[lo:hi], 0.0).sum(axis=0)
                self._var[b] += np.where(ok[lo:hi], v[lo:hi], 0.0).sum(axis=0)
                self._n[b] += ok[lo:hi].sum(axis=0)

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """Odd channels: bin means ``(n_bins, n_pix)`` over the region and their variances
        (NaN: no data)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(self._n > 0, self._n, np.nan)
            return self._sum / n, self._var / n**2

    def odd_data(self, node_wave, wave, n_members: int):
        """What a model is judged on: the odd channels' bin means and variances
        (:meth:`images`), where they are usable, and each bin's weights of the PSF nodes
        ``(n_bins, n_nodes)`` (the group's spectrum over its odd channels); None when there are
        too few data for *n_members* members."""
        dimg, dvar = self.images()
        ok = np.isfinite(dimg) & np.isfinite(dvar) & (dvar > 0)
        if ok.sum() < 4 * (n_members + 2) * len(dimg):
            return None
        odd = np.arange(len(wave)) % 2 == 1
        mix = np.stack([channel_weights(node_wave, wave[e0:e1][odd[e0:e1]], self.spectrum[e0:e1][odd[e0:e1]])
                        for e0, e1 in zip(self.edges[:-1], self.edges[1:])])
        return dimg, dvar, ok, mix

    def even_image(self) -> tuple[np.ndarray, np.ndarray]:
        """Even channels: mean image ``(ny, nx)`` of the box and its variance (NaN: no data)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(self._in > 0, self._in, np.nan)
            return self._img / n, self._varsum / n**2


def _binned_chi2(gm, mix, dimg, dvar, ok, sel, K, cfg) -> tuple[float, int]:
    """χ² of a group model solved on the binned odd channels (all columns free per bin, a
    uniform background always fitted: a sky residual under the group would otherwise pull the
    models' wings), and the number of fitted parameters."""
    cols = gm.col_nodes.reshape(mix.shape[1], gm.n_columns, -1)[:, :, sel]
    models = np.tensordot(mix, cols, axes=1)                  # (n_bins, n_columns, n_pix)
    f, _ = solve_layers(np.where(ok, dimg, np.nan), dvar, models, nonneg=cfg.nonneg,
                        background=True, signed=np.arange(gm.n_columns) >= K)
    f = np.nan_to_num(f)
    fit = np.einsum("bk,bkp->bp", f[:, :gm.n_columns], models) + f[:, -1:]
    return float(np.sum(np.where(ok, (dimg - fit) ** 2 / np.where(ok, dvar, 1.0), 0.0))), f.size


def binned_chi2(binned: BinnedGroup, gm, node_wave, wave, region, cfg) -> float | None:
    """χ² of the group model *gm* on the group's data averaged in wide wavelength bins (the
    odd channels, see :class:`BinnedGroup`), or None when the bins were not kept or hold too
    few data.  Judges models made from an ancillary image against the cube."""
    K = len(gm.rows)
    judged = binned.odd_data(node_wave, wave, K) if binned.keep else None
    if judged is None:
        return None
    dimg, dvar, ok, mix = judged
    return _binned_chi2(gm, mix, dimg, dvar, ok, region.ravel(), K, cfg)[0]


def _scaled_psf(psf: PSFModel, scale: float) -> PSFModel:
    # dataclasses.replace keeps the wavelength normalisation (lbrange) of a fitted PSF.
    return dataclasses.replace(psf, fwhm_coeffs=tuple(float(c) * scale for c in psf.fwhm_coeffs))


def refine_group_psf(binned: BinnedGroup, layout, members, box, region, x, y, segments, images, psf,
                     node_wave, wave, pixscale, cfg) -> tuple[PSFModel, float, str]:
    """Narrow the PSF's FWHM(λ) by the factor the group's data demand, if they demand one.

    Trial factors go from ``REFINE_LOWEST`` to 1 in steps of ``REFINE_STEP``.  For each, the
    group is modelled with the components chosen with the given PSF (*layout*; unresolved
    members as pure PSFs), their amplitudes refitted with the scaled PSF on the model image,
    and the model is solved (all columns and a uniform background free) on the group box
    averaged in at most ``REFINE_BINS`` wavelength bins.  With the cube's white light as model
    image, the models are built on its even channels and judged on its odd ones (see
    :class:`BinnedGroup`): judged on the data they were fitted to, models with more free
    components look better by fitting the noise, which favours a narrower PSF by a few χ²
    units even when the given one is right.

    Only narrowing is considered, because only a PSF too broad is both harmful and measurable.
    No non-negative light distribution is sharper than the PSF, so a model built with a PSF too
    broad cannot fit a compact source (its flux is overestimated: ~6 % for a point source and a
    FWHM 5 % too broad), whereas a model built with a PSF too narrow widens itself through its
    intrinsic components (a few per cent of flux at most), and broader PSF wings are
    degenerate with extended halos and sky residuals.  The factor kept is the broadest one
    whose χ² is within ``REFINE_MIN_DCHI2`` of the minimum (the PSF is narrowed as far as the
    data demand, not further); the PSF is kept as given when χ² at factor 1 is within
    ``REFINE_MIN_DCHI2`` of the minimum, or when χ² still falls at the narrowest trial (no
    minimum: the group does not constrain the PSF).  χ² differences are in units of the best
    fit's reduced χ² when that exceeds 1, so that the small misfit of any model of a very
    bright source is not taken for a PSF error.

    Returns
    -------
    psf : PSFModel
        The scaled model (or *psf* itself).
    scale : float
        The FWHM factor applied (1.0: none).
    note : str
        What was done, for the members' notes.
    """
    judged = binned.odd_data(node_wave, wave, len(members))
    if judged is None:
        return psf, 1.0, "PSF as given (too few data to refine it)"
    dimg, dvar, ok, mix = judged
    K = len(members)
    sel = region.ravel()
    odd = np.arange(len(wave)) % 2 == 1
    if images.from_cube:
        # The models are built on the even channels' image, on a frame of the cube's size.
        bx0, bx1, by0, by1 = box
        img, var = binned.even_image()
        frame, frame_var = (np.full(images.image.shape, np.nan) for _ in range(2))
        frame[by0:by1, bx0:bx1], frame_var[by0:by1, bx0:bx1] = img, var
        images = ModelImages(frame, frame_var, True)
        spectrum = np.where(odd, 0.0, binned.spectrum)
    else:
        spectrum = binned.spectrum

    n_params = []
    # Unresolved members are pure PSFs here (no component wider than a point): their χ² then
    # measures the PSF's width from both sides, with no amplitude held at zero by the
    # non-negativity (which would bias a model with the true PSF towards a broader one).
    caps, shapes, centres = layout
    layout = ([0.0 if sh[0] == 0 else c for c, sh in zip(caps, shapes)], shapes, centres)

    def chi2(scale: float) -> float:
        trial = _scaled_psf(psf, scale)
        gm = build_group_model(members, box, region, x, y, segments, images, trial, node_wave, wave,
                               pixscale, cfg, spectrum, layout)
        value, size = _binned_chi2(gm, mix, dimg, dvar, ok, sel, K, cfg)
        n_params.append(size)
        return value

    n = int(round((1.0 - REFINE_LOWEST) / REFINE_STEP))
    grid = 1.0 - REFINE_STEP * np.arange(n, -1, -1)               # ascending, ends at 1
    values = np.array([chi2(s) for s in grid])
    log.debug("deblend: PSF scale chi2 of group %s: %s", members,
              " ".join(f"{s:.2f}:{v:.1f}" for s, v in zip(grid, values)))
    j = int(np.argmin(values))
    lowest = values[j]
    # χ² differences are counted in units of the best fit's reduced χ²: where the model's
    # own misfit exceeds the noise (bright sources), it is that misfit, not the noise, that a
    # change of scale must beat.
    misfit = max(1.0, lowest / max(int(ok.sum()) - max(n_params), 1))
    threshold = REFINE_MIN_DCHI2 * misfit
    if values[-1] - lowest <= threshold:
        return psf, 1.0, "PSF as given (the data ask for no narrower one)"
    if j == 0:
        return psf, 1.0, (f"PSF as given (chi2 still falls at {grid[0]:.2f} x FWHM: not "
                          "constrained by this group)")
    # The broadest factor within the threshold of the minimum: where the rising curve crosses
    # that level, between the last grid point below it and the next.
    level = lowest + threshold
    k = j + int(np.argmax(values[j:] > level)) - 1
    t = (level - values[k]) / (values[k + 1] - values[k])
    best = float(grid[k] + t * (grid[k + 1] - grid[k]))
    return (_scaled_psf(psf, best), best,
            f"PSF FWHM scaled by {best:.3f} (fitted on the group: chi2 {values[-1]:.0f} at 1, "
            f"{lowest:.0f} at {grid[j]:.2f})")

"""Per-spaxel continuum subtraction of IFU cubes, vectorised over all spaxels.

The continuum of every spaxel is modelled along wavelength, independently of its neighbours,
with one of two methods:

``poly``
    A polynomial of degree *degree* in wavelength (AutoSpec's ``CONT_POLY``), fitted by weighted
    least squares with weights ``1 / variance`` and iterative sigma clipping.  The polynomial is
    expanded on Legendre polynomials of the wavelength scaled to [-1, 1], which keeps the normal
    equations well conditioned; the fitted curve is the same as a power-series fit.  All spaxels
    of a block share one design matrix, so the normal equations of thousands of spaxels are built
    by two matrix products and solved in one batched call, instead of one ``numpy.polyfit`` per
    spaxel and clipping round.
``median``
    A running median of a given full width in Angstrom, NaN-aware: each channel gets the median
    of the usable channels within the window (truncated at the ends of the spectrum).

The fitting rules, which :func:`polyfit_continuum_reference` restates spaxel by spaxel:

1. *Usable* voxels have finite data, a finite positive variance (when a variance is given) and a
   wavelength outside every masked window (e.g. strong lines or sky residuals).
2. A spaxel with fewer than ``degree + 1`` usable voxels gets a NaN continuum; it is counted as
   *failed* unless it has no usable voxel at all (spaxels outside the field of view).
3. Fit: minimise ``sum_i w_i (y_i - P(lambda_i))**2`` over the voxels kept, ``w_i = 1 / var_i``
   (``w_i = 1`` without variance).
4. Clip: with ``s**2 = sum_kept w r**2 / (n_kept - degree - 1)`` (the reduced chi-square),
   reject the kept voxels where ``w r**2 > clip_sigma**2 s**2``, i.e. beyond *clip_sigma* times
   the voxel's noise scaled by the spaxel's own residual scatter (robust to a mis-scaled
   variance); refit.  Rejections accumulate.  A spaxel stops after *clip_iters* rounds, when a
   round rejects nothing, when it has no degree of freedom left, or when a round would leave
   fewer than ``degree + 1`` voxels (that round is then not applied).

:func:`subtract_continuum` streams a cube file through :func:`fit_continuum` in blocks of rows
of spaxels, so memory stays bounded whatever the cube size, and writes the result block by block
in place into the output files (MUSE layout: PRIMARY, DATA, STAT; float32; full 3-D WCS;
provenance; CHECKSUM/DATASUM), renamed into place only when complete.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from numpy.polynomial import legendre
from scipy import ndimage

from .cubeio import Cube, open_cube
from .errors import InputError, ParameterError
from .fitsio import StreamingCubeWriter, cube_extension_header
from .fitsout import add_provenance, atomic_path
from .identity import stamp
from .wcsutil import celestial_from_header, quiet_wcs

__all__ = [
    "METHODS",
    "ContinuumFit",
    "ContsubConfig",
    "ContsubResult",
    "fit_continuum",
    "subtract_continuum",
    "polyfit_continuum_reference",
]

#: Continuum models understood by :func:`fit_continuum`.
METHODS = ("poly", "median")

#: Default number of spaxels fitted at once by :func:`subtract_continuum` (about 0.4 GB of
#: working memory for 3681 channels).
DEFAULT_BLOCK_SPAXELS = 4096

_MEDIAN_CHUNK = 1 << 16  # windows sorted at once on the exact (NaN-aware) median path


class ContinuumFit(NamedTuple):
    """Result of :func:`fit_continuum`.

    Attributes
    ----------
    continuum : numpy.ndarray
        Continuum model, same shape as the data ``(n_wave, ...)``, float32; NaN where it could
        not be determined.
    n_used : numpy.ndarray
        Voxels per spaxel that entered the final fit (``poly``: after clipping) or that were
        usable (``median``), shape ``data.shape[1:]``, int.
    failed : numpy.ndarray
        Spaxels holding usable data but no continuum (too few usable voxels), bool, shape
        ``data.shape[1:]``.
    """

    continuum: np.ndarray
    n_used: np.ndarray
    failed: np.ndarray


@dataclass
class ContsubResult:
    """What :func:`subtract_continuum` wrote.

    Attributes
    ----------
    output : pathlib.Path
        Continuum-subtracted cube.
    continuum : pathlib.Path or None
        Continuum cube, when asked for.
    method : str
    channels : (int, int)
        Half-open channel range of the input cube that was processed.
    n_spaxels : int
        Spaxels with at least one usable voxel.
    n_failed : int
        Of those, spaxels left without continuum (NaN in the output).
    """

    output: Path
    continuum: Path | None
    method: str
    channels: tuple[int, int]
    n_spaxels: int
    n_failed: int


@dataclass(frozen=True)
class ContsubConfig:
    """The continuum model of :func:`subtract_continuum` (see :func:`fit_continuum`).

    Attributes
    ----------
    method : {"poly", "median"}
    degree : int
        Polynomial degree (``poly``).
    clip_sigma : float
        Rejection threshold of the clipping rounds (``poly``).
    clip_iters : int
        Maximum number of clipping rounds (``poly``).
    median_width : float
        Running-median window, Angstrom (``median``).
    mask_windows : tuple of (float, float)
        Wavelength windows, Angstrom, left out of the fit.
    wave_range : (float, float), optional
        Process (and write) only the channels inside, Angstrom.
    """

    method: str = "poly"
    degree: int = 5
    clip_sigma: float = 3.0
    clip_iters: int = 3
    median_width: float = 150.0
    mask_windows: tuple = ()
    wave_range: tuple | None = None


# ---------------------------------------------------------------------------------- checks
def _window_mask(wave: np.ndarray, mask_windows) -> np.ndarray:
    """True for channels inside any of the ``(min, max)`` Angstrom windows."""
    inside = np.zeros(wave.shape, dtype=bool)
    for window in mask_windows or ():
        lo, hi = (float(v) for v in window)
        if not lo < hi:
            raise ParameterError("{mask_windows}", f"window {lo:g} {hi:g} is empty",
                             "give MIN MAX with MIN < MAX, in Angstrom", params=("mask_windows",))
        inside |= (wave >= lo) & (wave <= hi)
    return inside


def _median_channels(wave: np.ndarray, width: float) -> int:
    """Odd number of channels of a running-median window *width* Angstrom wide."""
    step = float(np.median(np.abs(np.diff(wave)))) if wave.size > 1 else 1.0
    half = int(round(width / (2.0 * step))) if step > 0 else 0
    if half < 1:
        raise ParameterError("{median_width}", f"{width:g} Angstrom spans fewer than 3 channels "
                         f"({step:.4g} Angstrom each)",
                         f"give at least {3 * step:.4g} Angstrom (100-200 is typical)", params=("median_width",))
    return 2 * half + 1


def _check_options(wave, method, degree, clip_sigma, clip_iters, median_width, mask_windows):
    """Validate the options against the channels to fit; return the masked-channel flags."""
    if method not in METHODS:
        raise ParameterError("{method}", f"unknown continuum method {method!r}",
                         f"choose one of {', '.join(METHODS)}", params=("method",))
    inside = _window_mask(wave, mask_windows)
    n_free = int(np.count_nonzero(~inside))
    if method == "poly":
        if int(degree) != degree or degree < 0:
            raise ParameterError("{degree}", f"{degree} is not a polynomial degree",
                             "give an integer >= 0 (5 is typical)", params=("degree",))
        if degree + 1 > wave.size:
            raise ParameterError("{degree}", f"degree {degree} is above the channel count: a "
                             f"polynomial of degree {degree} needs {degree + 1} channels, there "
                             f"are {wave.size} to fit",
                             "choose {degree} " + f"{max(wave.size - 1, 0)} or lower (5 is typical)",
                             params=("degree",))
        if degree + 1 > n_free:
            raise ParameterError("{mask_windows}", f"the masked windows leave {n_free} of "
                             f"{wave.size} channels, fewer than the {degree + 1} a degree-"
                             f"{degree} polynomial needs", "mask less or lower {degree}",
                             params=("mask_windows", "degree"))
        if clip_iters < 0 or (clip_iters > 0 and not clip_sigma > 0):
            raise ParameterError("{clip_sigma}", f"clipping at {clip_sigma} sigma for {clip_iters} "
                             "rounds is not possible",
                             "give {clip_sigma} > 0 and {clip_iters} >= 0", params=("clip_sigma", "clip_iters"))
    else:
        if not median_width > 0:
            raise ParameterError("{median_width}", f"{median_width} is not a positive width",
                             "give the window width in Angstrom (100-200 is typical)", params=("median_width",))
        _median_channels(wave, median_width)
    return inside


# ---------------------------------------------------------------------------------- fitting
def fit_continuum(data, var, wave, *, method: str = "poly", degree: int = 5,
                  clip_sigma: float = 3.0, clip_iters: int = 3, median_width: float = 150.0,
                  mask_windows=()) -> ContinuumFit:
    """Continuum of every spaxel of a block, all spaxels at once.

    Parameters
    ----------
    data : numpy.ndarray
        Flux, ``(n_wave, ...)`` (wavelength first: ``(n_wave, N)`` spectra or a ``(n_wave, ny,
        nx)`` cube), any float dtype; NaN marks bad voxels.
    var : numpy.ndarray or None
        Variance, same shape; voxels with a non-finite or non-positive variance are not used.
        None: every finite voxel has the same weight.
    wave : numpy.ndarray
        Wavelength of each channel, Angstrom, ``(n_wave,)``.
    method : {'poly', 'median'}
        Weighted, sigma-clipped polynomial, or running median.
    degree : int
        Polynomial degree (``poly``); must be below the number of channels.
    clip_sigma : float
        Rejection threshold of the clipping rounds, in units of the voxel noise times the
        spaxel's residual scatter (``poly``).
    clip_iters : int
        Maximum number of clipping rounds (``poly``); 0 fits once without clipping.
    median_width : float
        Full width of the running-median window, Angstrom (``median``); it is converted to an
        odd number of channels with the median channel width.
    mask_windows : sequence of (float, float)
        Wavelength windows, Angstrom, left out of the fit (the continuum is still evaluated
        there).

    Returns
    -------
    ContinuumFit
        ``continuum`` (float32, shape of *data*), ``n_used`` and ``failed`` (per spaxel).

    Raises
    ------
    InputError
        Unknown method, degree not below the number of (unmasked) channels, median window
        narrower than 3 channels, empty mask window.

    Notes
    -----
    The rules (usable voxels, weights, clipping) are in the module docstring; ``median``
    ignores *var*, *clip_sigma* and *clip_iters* (a median is already robust to lines).
    """
    data = np.asarray(data)
    wave = np.asarray(wave, dtype=np.float64)
    if data.ndim < 1 or data.shape[0] != wave.size:
        raise ValueError(f"data has shape {data.shape}; its first axis must match the "
                         f"{wave.size} wavelengths")
    inside = _check_options(wave, method, degree, clip_sigma, clip_iters, median_width,
                            mask_windows)
    spatial = data.shape[1:]
    y = data.reshape(wave.size, -1)
    v = None if var is None else np.asarray(var).reshape(y.shape)
    if method == "poly":
        cont, n_used, failed = _fit_poly(y, v, wave, inside, int(degree), float(clip_sigma),
                                         int(clip_iters))
    else:
        cont, n_used, failed = _fit_median(y, wave, _usable(y, v, inside), float(median_width))
    return ContinuumFit(cont.reshape(data.shape), n_used.reshape(spatial),
                        failed.reshape(spatial))


def _usable(y, v, inside) -> np.ndarray:
    """Voxels to fit: finite data, finite positive variance, channel outside masked windows."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(y)
        if v is not None:
            usable &= np.isfinite(v) & (v > 0)
    usable[inside] = False
    return usable


def _scaled_wave(wave: np.ndarray) -> np.ndarray:
    """Wavelengths mapped linearly onto [-1, 1] (the Legendre domain)."""
    lo, hi = float(np.min(wave)), float(np.max(wave))
    if hi == lo:
        return np.zeros_like(wave)
    return 2.0 * (wave - lo) / (hi - lo) - 1.0


def _solve(upper, rhs, iu, ju, p) -> np.ndarray:
    """Solve the ``(p, p)`` normal equations of many spaxels at once.

    Parameters
    ----------
    upper : (p(p+1)/2, M) float64
        Upper triangle of each normal matrix, ``sum_i w_i A_ik A_il`` (in ``iu``, ``ju`` order).
    rhs : (p, M) float64
        ``sum_i w_i y_i A_ik``.

    Returns
    -------
    (p, M) float64 coefficients.
    """
    normal = np.empty((upper.shape[1], p, p))
    normal[:, iu, ju] = upper.T
    normal[:, ju, iu] = upper.T
    try:
        return np.linalg.solve(normal, rhs.T[..., None])[..., 0].T
    except np.linalg.LinAlgError:
        # Only for degenerate weights (e.g. underflowing variances): solve one by one.
        return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(normal, rhs.T)],
                        axis=1)


def _chunks(n: int, m: int):
    """Channel slices whose ``(channels, m)`` float64 work arrays fit in a CPU cache (~1 MB)."""
    step = max(1, (1 << 20) // (8 * max(m, 1)))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


#: Below this fraction of sum(w y**2), chi2 = sum(w y**2) - coef . rhs has lost too many digits
#: to cancellation (voxel S/N above ~1000): such spaxels get chi2 summed voxel by voxel.
_CANCELLATION = 1e-6


def _fit_poly(y, var, wave, inside, degree, clip_sigma, clip_iters):
    """Weighted, clipped polynomial continua of ``(n_wave, N)`` spectra (rules: module doc).

    Memory traffic, not arithmetic, bounds this code.  So one pass over the data, channel
    chunk by channel chunk (in cache), finds the usable voxels, keeps their variance (``inf``
    for the others: weight 0) and accumulates the normal equations of all spaxels; a clipping
    round reads the data and variance once more, to find the voxels to reject (NaN data and
    infinite variances never are); the chi-square it needs comes from the normal equations
    (``sum(w y**2) - coef . rhs``); and the normal equations are updated by subtracting the
    contributions of the rejected voxels (a few per cent) instead of being rebuilt.
    """
    n, nspax = y.shape
    p = degree + 1
    design = legendre.legvander(_scaled_wave(wave), degree)          # (n, p)
    iu, ju = np.triu_indices(p)
    pairs = design[:, iu] * design[:, ju]                             # (n, q)
    vdtype = np.float64 if var is not None and var.dtype == np.float64 else np.float32
    vz = np.empty((n, nspax), dtype=vdtype)        # variance of the voxels kept, inf elsewhere
    chunks = _chunks(n, nspax)
    upper = np.zeros((iu.size, nspax))
    rhs = np.zeros((p, nspax))
    syy = np.zeros(nspax)
    n_usable = np.zeros(nspax, dtype=np.int64)
    for sl in chunks:
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(y[sl])
            if var is not None:
                ok &= np.isfinite(var[sl]) & (var[sl] > 0)
        ok[inside[sl]] = False
        n_usable += ok.sum(axis=0)
        np.copyto(vz[sl], np.inf if var is None else np.where(ok, var[sl], np.inf))
        if var is None:
            vz[sl][ok] = 1.0
        w = np.divide(1.0, vz[sl], dtype=np.float64)
        upper += pairs[sl].T @ w
        yc = np.where(ok, y[sl], 0)
        w *= yc                                                       # w y (w = 0 elsewhere)
        rhs += design[sl].T @ w
        w *= yc                                                       # w y**2
        syy += w.sum(axis=0)
    fitted = n_usable >= p
    failed = (n_usable > 0) & ~fitted
    upper[:, ~fitted] = np.eye(p)[iu, ju][:, None]                    # identity: solvable
    rhs[:, ~fitted] = 0.0
    coef = _solve(upper, rhs, iu, ju, p)
    kept = n_usable.copy()
    stopped = ~fitted
    buf = np.empty((chunks[0].stop - chunks[0].start, nspax))
    for _ in range(clip_iters):
        chi2 = _chi2(coef, rhs, syy, design, y, vz)
        dof = kept - p
        with np.errstate(divide="ignore", invalid="ignore"):
            threshold = clip_sigma**2 * chi2 / dof
        # No degree of freedom, a perfect fit, or a spaxel already done: nothing to reject.
        threshold[(dof <= 0) | ~(threshold > 0) | stopped] = np.inf
        chan, spax = _find_rejects(design, coef, y, vz, threshold, np.flatnonzero(~stopped),
                                   chunks, buf)
        n_reject = np.bincount(spax, minlength=nspax)
        go = (n_reject > 0) & (kept - n_reject >= p)
        stopped |= ~go
        if not go.any():
            break
        applied = go[spax]
        chan, spax = chan[applied], spax[applied]
        w_out = np.divide(1.0, vz[chan, spax], dtype=np.float64)
        vz[chan, spax] = np.inf
        for k in range(iu.size):
            upper[k] -= np.bincount(spax, pairs[chan, k] * w_out, minlength=nspax)
        w_out *= y[chan, spax]
        for k in range(p):
            rhs[k] -= np.bincount(spax, design[chan, k] * w_out, minlength=nspax)
        syy -= np.bincount(spax, w_out * y[chan, spax], minlength=nspax)
        kept -= np.where(go, n_reject, 0)
        coef[:, go] = _solve(upper[:, go], rhs[:, go], iu, ju, p)
    cont = np.empty((n, nspax), dtype=np.float32)
    for sl in chunks:
        cont[sl] = design[sl] @ coef
    cont[:, ~fitted] = np.nan
    return cont, np.where(fitted, kept, 0), failed


def _chi2(coef, rhs, syy, design, y, vz):
    """``sum_i w_i (y_i - model_i)**2`` per spaxel at the least-squares solution *coef*."""
    chi2 = syy - np.einsum("km,km->m", coef, rhs)
    lost = np.flatnonzero(~(chi2 > _CANCELLATION * syy) & (syy > 0))
    if lost.size:
        resid = y[:, lost] - design @ coef[:, lost]
        with np.errstate(invalid="ignore"):
            r2w = resid * resid / vz[:, lost]
        chi2[lost] = np.where(np.isfinite(vz[:, lost]), r2w, 0.0).sum(axis=0)
    return chi2


def _find_rejects(design, coef, y, vz, threshold, active, chunks, buf):
    """(channel, spaxel) indexes of the voxels with ``(y - model)**2 / vz > threshold``.

    Only the *active* spaxels are scanned; when they are a minority (late clipping rounds) their
    columns are gathered chunk by chunk.
    """
    nspax = y.shape[1]
    if active.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if active.size > 0.7 * nspax:
        flat = np.concatenate([
            np.flatnonzero(_weighted_r2(design[sl], coef, y[sl], vz[sl], buf) > threshold)
            + sl.start * nspax for sl in chunks])
        return np.divmod(flat, nspax)
    m = active.size
    coef_a, thr_a = coef[:, active], threshold[active]
    flat = np.concatenate([
        np.flatnonzero(_weighted_r2(design[sl], coef_a, y[sl][:, active], vz[sl][:, active],
                                    buf[:, :m]) > thr_a) + sl.start * m for sl in chunks])
    chan, col = np.divmod(flat, m)
    return chan, active[col]


def _weighted_r2(design, coef, y, vz, buf):
    """``(y - design @ coef)**2 / vz`` for one channel chunk, in *buf* (reused).

    NaN where *y* is NaN, 0 where *vz* is infinite: neither exceeds a threshold.
    """
    out = buf[:y.shape[0]]
    np.matmul(design, coef, out=out)
    np.subtract(y, out, out=out)
    np.square(out, out=out)
    out /= vz
    return out


def _fit_median(y, wave, usable, width):
    k = _median_channels(wave, width)
    cont = _running_median(y, usable, k)
    n_used = usable.sum(axis=0)
    with np.errstate(invalid="ignore"):
        lost = np.isfinite(y) & ~np.isfinite(cont)
    failed = (n_used > 0) & lost.any(axis=0)
    return cont, n_used, failed


def _running_median(y, usable, k):
    """Median of the usable values in a ``k``-channel window centred on each channel.

    The window is truncated at both ends of the spectrum; a window without usable value gives
    NaN.  Fast path: the spectra are laid end to end and filtered by SciPy's 1-D running rank
    filter in one call; the windows that this cannot get right (near the ends of a spectrum, or
    holding an unusable voxel) are recomputed exactly by sorting them.
    """
    n, nspax = y.shape
    h = k // 2
    spectra = np.ascontiguousarray(np.where(usable, y, 0.0).T, dtype=np.float32)   # (N, n)
    out = np.empty_like(spectra)
    ndimage.median_filter(spectra.reshape(-1), size=k, mode="nearest", output=out.reshape(-1))
    del spectra
    bad = ~usable.T
    counts = np.zeros((nspax, n + 1), dtype=np.int32)
    np.cumsum(bad, axis=1, out=counts[:, 1:])
    idx = np.arange(n)
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, n)
    n_bad = counts[:, hi] - counts[:, lo]
    del counts, bad
    n_good = (hi - lo) - n_bad
    redo = n_bad > 0
    redo[:, :h] = True
    redo[:, max(n - h, 0):] = True
    out[n_good == 0] = np.nan                             # nothing usable in the window
    redo &= n_good > 0
    del n_bad, n_good
    padded = np.full((nspax, n + 2 * h), np.nan, dtype=np.float32)
    padded[:, h:h + n] = np.where(usable, y, np.nan).T
    rows, chans = np.nonzero(redo)
    del redo
    offsets = np.arange(k)
    for s in range(0, rows.size, _MEDIAN_CHUNK):
        r, c = rows[s:s + _MEDIAN_CHUNK], chans[s:s + _MEDIAN_CHUNK]
        win = padded[r[:, None], c[:, None] + offsets]
        win.sort(axis=1)                                  # NaN sort last
        nfin = k - np.isnan(win).sum(axis=1)
        below = np.take_along_axis(win, ((nfin - 1) // 2)[:, None], axis=1)[:, 0]
        above = np.take_along_axis(win, (nfin // 2)[:, None], axis=1)[:, 0]
        out[r, c] = 0.5 * (below.astype(np.float64) + above)
    return np.ascontiguousarray(out.T)


def polyfit_continuum_reference(data, var, wave, *, degree: int = 5, clip_sigma: float = 3.0,
                                clip_iters: int = 3, mask_windows=()) -> ContinuumFit:
    """The ``poly`` continuum computed spaxel by spaxel with :func:`numpy.polyfit`.

    A slow, plain restatement of the rules of the module docstring, one spectrum and one
    ``numpy.polyfit`` call per clipping round at a time (on wavelength scaled to [-1, 1], with
    weights ``1 / sigma``): the reference against which :func:`fit_continuum` is tested and
    benchmarked.  Same parameters and result as :func:`fit_continuum` with ``method='poly'``.
    """
    data = np.asarray(data)
    wave = np.asarray(wave, dtype=np.float64)
    inside = _check_options(wave, "poly", degree, clip_sigma, clip_iters, 0.0, mask_windows)
    spatial = data.shape[1:]
    y_all = data.reshape(wave.size, -1)
    v_all = None if var is None else np.asarray(var).reshape(y_all.shape)
    x = _scaled_wave(wave)
    p = degree + 1
    cont = np.full(y_all.shape, np.nan, dtype=np.float32)
    n_used = np.zeros(y_all.shape[1], dtype=np.int64)
    failed = np.zeros(y_all.shape[1], dtype=bool)
    for j in range(y_all.shape[1]):
        y = y_all[:, j].astype(np.float64)
        good = np.isfinite(y) & ~inside
        if v_all is None:
            w = np.ones_like(y)
        else:
            v = v_all[:, j].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                good &= np.isfinite(v) & (v > 0)
                w = np.where(good, 1.0 / v, 0.0)
        if good.sum() < p:
            failed[j] = good.any()
            continue
        keep = good
        for it in range(clip_iters + 1):
            poly = np.polyfit(x[keep], y[keep], degree, w=np.sqrt(w[keep]))
            model = np.polyval(poly, x)
            dof = keep.sum() - p
            if it == clip_iters or dof <= 0:
                break
            chi2 = np.where(good, (y - model) ** 2 * w, 0.0)
            s2 = chi2[keep].sum() / dof
            if not s2 > 0:
                break
            new = keep & (chi2 <= clip_sigma**2 * s2)
            if new.sum() == keep.sum() or new.sum() < p:
                break
            keep = new
        cont[:, j] = model
        n_used[j] = keep.sum()
    return ContinuumFit(cont.reshape(data.shape), n_used.reshape(spatial), failed.reshape(spatial))


# ---------------------------------------------------------------------------------- writing
_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS", "BSCALE",
               "BZERO", "BLANK", "CHECKSUM", "DATASUM", "EXTNAME", "EXTVER", "EXTLEVEL",
               "INHERIT", "HDUCLASS", "HDUDOC", "HDUVERS", "HDUCLAS1", "HDUCLAS2", "HDUCLAS3",
               "ERRDATA", "QUALDATA", "SCIDATA")
def _strip(header: fits.Header) -> fits.Header:
    """A copy of *header* without the cards that describe an HDU's structure or checksum."""
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith("NAXIS"):
            continue
        out.append(card, end=True)
    return out


def _cube_header(cube: Cube, z0: int) -> fits.Header:
    """The cube's data header (full 3-D WCS, BUNIT per spaxel) for channels from *z0* on."""
    hdr = _strip(cube.data_header)
    if celestial_from_header(hdr) is None:
        # The celestial keywords sat in the primary header: write the merged 3-D WCS.
        merged = cube.primary_header.copy() if cube.data_ext != 0 else fits.Header()
        merged.update(cube.data_header)
        merged["NAXIS"] = 3
        hdr.update(quiet_wcs(merged).to_header(relax=True))
    hdr["CRPIX3"] = float(hdr.get("CRPIX3", 1.0)) - z0
    unit = cube.unit_string
    if unit:
        hdr["BUNIT"] = (unit, "flux unit, per spaxel")
    else:
        hdr.remove("BUNIT", ignore_missing=True)
    return hdr


def _primary_header(cube: Cube, tool_params: dict) -> fits.Header:
    hdr = fits.Header()
    hdr["SIMPLE"] = (True, "conforms to FITS standard")
    hdr["BITPIX"] = (8, "array data type")
    hdr["NAXIS"] = (0, "number of array dimensions")
    hdr["EXTEND"] = True
    if cube.data_ext != 0:
        hdr.extend(_strip(cube.primary_header))
    else:
        for key in ("TELESCOP", "INSTRUME", "OBJECT", "DATE-OBS", "RA", "DEC"):
            if key in cube.primary_header:
                hdr[key] = cube.primary_header[key]
    add_provenance(hdr, "contsub", {"cube": cube.path}, tool_params)
    stamp(hdr, cube)  # consumers check that they pair it with this cube
    return hdr


def _method_cards(method, degree, clip_sigma, clip_iters, median_width, mask_windows) -> dict:
    cards = {"CONTMETH": (method, "continuum model (ifu-extract contsub)")}
    if method == "poly":
        cards["CONTDEG"] = (int(degree), "continuum polynomial degree")
        cards["CONTCLIP"] = (float(clip_sigma), "continuum clipping threshold, sigma")
        cards["CONTITER"] = (int(clip_iters), "continuum clipping rounds (max)")
    else:
        cards["CONTMEDW"] = (float(median_width), "[Angstrom] running-median full width")
    cards["CONTNMSK"] = (len(mask_windows), "wavelength windows left out of the fit")
    for i, (lo, hi) in enumerate(mask_windows, start=1):
        if i <= 99:
            cards[f"CONTMW{i}"] = (f"{float(lo):g} {float(hi):g}", "[Angstrom] masked window")
    cards["CONTNFAI"] = (0, "spaxels with data but no continuum (NaN)")
    return cards


# ---------------------------------------------------------------------------------- driver
def subtract_continuum(cube, out_path, *, continuum_path=None, method: str = "poly",
                       degree: int = 5, clip_sigma: float = 3.0, clip_iters: int = 3,
                       median_width: float = 150.0, mask_windows=(), wave_range=None,
                       block_spaxels: int = DEFAULT_BLOCK_SPAXELS, threads: int = 1,
                       progress=None, cube_kwargs: dict | None = None) -> ContsubResult:
    """Subtract the continuum of every spaxel of a cube file and write the result.

    Parameters
    ----------
    cube : Cube or str or os.PathLike
        An open cube, or the path of one (opened with *cube_kwargs*).
    out_path : str or os.PathLike
        Output FITS cube: PRIMARY (input primary header + provenance), DATA = cube - continuum,
        STAT = the cube's variance (when it has one), both float32 ``(n_wave, ny, nx)`` with the
        input's 3-D WCS and per-spaxel BUNIT.  Voxels without a continuum are NaN in both.
    continuum_path : str or os.PathLike, optional
        Also write the continuum model (PRIMARY + DATA) here.
    method, degree, clip_sigma, clip_iters, median_width, mask_windows
        As in :func:`fit_continuum`.
    wave_range : (float, float), optional
        Process (and write) only the channels whose centres lie in this range, Angstrom.
    block_spaxels : int
        Spaxels fitted at once (rounded to whole rows of the cube); bounds the memory used
        (about 30 bytes per voxel of a block, per thread).
    threads : int
        Blocks processed at the same time (NumPy releases the GIL in its array loops); the
        result does not depend on it.
    progress : callable, optional
        Called as ``progress(rows_done, n_rows)`` after each block.
    cube_kwargs : dict, optional
        :func:`~ifu_extract.cubeio.open_cube` options when *cube* is a path.

    Returns
    -------
    ContsubResult

    Raises
    ------
    InputError
        Bad options (see :func:`fit_continuum`), an output path equal to the input, unwritable
        output.  Options are checked before anything is written; outputs appear only complete.

    Notes
    -----
    STAT is the input variance, unchanged.  The continuum model's own error is neglected: for a
    degree-*d* polynomial fitted to *n* channels its variance is on average ``(d + 1) / n`` of
    the voxel variance (0.16 % for degree 5 over 3681 MUSE channels), and for a running median
    of *k* channels about ``pi / (2 k)`` of it (1.3 % for 121 channels); it is moreover
    correlated over all channels, which a per-voxel variance cannot express.  Both are below
    the accuracy of pipeline variances themselves.
    """
    with contextlib.ExitStack() as stack:
        if not isinstance(cube, Cube):
            cube = stack.enter_context(open_cube(cube, **(cube_kwargs or {})))
        z0, z1 = (0, cube.nwave) if not wave_range else cube.channel_range(*wave_range)
        wave = cube.wave[z0:z1]
        mask_windows = [tuple(float(v) for v in w) for w in (mask_windows or ())]
        _check_options(wave, method, degree, clip_sigma, clip_iters, median_width, mask_windows)
        outputs = [Path(os.fspath(out_path))]
        if continuum_path is not None:
            outputs.append(Path(os.fspath(continuum_path)))
        for out in outputs:
            if out.exists() and out.resolve() == cube.path.resolve():
                raise InputError(out, "is the input cube", "write the output to another file")
        if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
            raise InputError(outputs[1], "is also the -o output", "give --continuum another path")

        shape = (z1 - z0, cube.ny, cube.nx)
        params = {"method": method, "wave_range": f"{wave[0]:.2f}-{wave[-1]:.2f}"}
        if method == "poly":
            params.update(degree=degree, clip_sigma=clip_sigma, clip_iters=clip_iters)
        else:
            params["median_width"] = median_width
        if mask_windows:
            params["mask_windows"] = " ".join(f"{a:g}-{b:g}" for a, b in mask_windows)
        cards = _method_cards(method, degree, clip_sigma, clip_iters, median_width, mask_windows)
        base = _cube_header(cube, z0)
        for key, value in cards.items():
            base[key] = value
        stat_base = base.copy()
        if cube.unit is not None:
            stat_base["BUNIT"] = ((cube.unit**2).to_string("fits"), "variance unit, per spaxel")
        stat_base["COMMENT"] = ("Variance of the input cube; the continuum model error is "
                                "neglected (see ifu_extract.contsub).")
        if cube.has_var:
            base["ERRDATA"] = ("STAT", "pointer to the variance extension")

        extensions = {"DATA": cube_extension_header(base, "DATA", shape)}
        if cube.has_var:
            extensions["STAT"] = cube_extension_header(stat_base, "STAT", shape)
        tmp = stack.enter_context(atomic_path(outputs[0], suffix=".fits"))
        files = [StreamingCubeWriter(tmp, _primary_header(cube, params), extensions, shape)]
        stack.callback(files[0].abandon)
        if continuum_path is not None:
            cont_base = base.copy()
            cont_base.remove("ERRDATA", ignore_missing=True)
            tmp_c = stack.enter_context(atomic_path(outputs[1], suffix=".fits"))
            files.append(StreamingCubeWriter(tmp_c, _primary_header(cube, params),
                                   {"DATA": cube_extension_header(cont_base, "DATA", shape)}, shape))
            stack.callback(files[1].abandon)

        rows = max(1, int(block_spaxels) // max(cube.nx, 1))
        opts = dict(method=method, degree=degree, clip_sigma=clip_sigma, clip_iters=clip_iters,
                    median_width=median_width, mask_windows=mask_windows)
        blocks = [(y0, min(y0 + rows, cube.ny)) for y0 in range(0, cube.ny, rows)]
        cube.window(0, 1, 0, 1, z0, z0 + 1)           # map the HDUs before threads share them
        work = functools.partial(_process_block, cube, files, (z0, z1), wave, opts)
        n_spaxels = n_failed = 0
        for (_, y1), (n_data, n_bad) in zip(blocks, _in_order(work, blocks, threads)):
            n_spaxels += n_data
            n_failed += n_bad
            if progress is not None:
                progress(y1, cube.ny)
        for f in files:
            for hdr in f.headers[1:]:
                hdr["CONTNFAI"] = n_failed
            f.close()
    return ContsubResult(outputs[0], outputs[1] if continuum_path is not None else None,
                         method, (z0, z1), n_spaxels, n_failed)


def _process_block(cube: Cube, files, channels, wave, opts, rows) -> tuple[int, int]:
    """Fit, subtract and write one block of rows; return (spaxels with data, failed)."""
    (z0, z1), (y0, y1) = channels, rows
    data, var = cube.window(0, cube.nx, y0, y1, z0, z1)
    fit = fit_continuum(data, var, wave, **opts)
    np.subtract(data, fit.continuum, out=data)
    if var is not None and fit.failed.any():
        var[np.isnan(data)] = np.nan                  # voxels left without a continuum
    counts = (int(np.count_nonzero((fit.n_used > 0) | fit.failed)),
              int(np.count_nonzero(fit.failed)))
    files[0].write("DATA", data, y0=y0)                  # the writes consume the arrays
    if var is not None:
        files[0].write("STAT", var, y0=y0)
    if len(files) > 1:
        files[1].write("DATA", fit.continuum, y0=y0)
    return counts


def _in_order(func, items, threads: int):
    """``map(func, items)`` on *threads* threads, at most two items in flight per thread."""
    if threads <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

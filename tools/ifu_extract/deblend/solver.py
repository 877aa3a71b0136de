"""Weighted (optionally non-negative) least-squares fluxes of models in every channel at once."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def solve_layers(data: np.ndarray, var: np.ndarray | None, models: np.ndarray, *,
                 nonneg: bool = False, background: bool = False, signed=None):
    """Weighted least-squares fluxes of *K* models in every channel at once.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, n_pix)`` flux and variance of the fitted spaxels; NaN (or non-positive
        variance) marks a voxel left out.  *var* None: unit weights.
    models : numpy.ndarray
        ``(n_wave, K, n_pix)`` spatial models, each normalised to unit total flux.
    nonneg : bool
        Solve with ``flux >= 0`` (exact NNLS per channel, batched active sets).
    background : bool
        Add a uniform per-spaxel background per channel (returned as the last column).
    signed : numpy.ndarray, optional
        ``(K,)`` bool: columns never constrained by *nonneg* (e.g. zero-flux shape terms).

    Returns
    -------
    flux : numpy.ndarray
        ``(n_wave, K[+1])``; NaN where a model has no usable spaxel in that channel.
    cov : numpy.ndarray
        ``(n_wave, K[+1], K[+1])`` covariance of the solution: ``(Mᵀ V⁻¹ M)⁻¹`` over the free
        (non-clamped) fluxes; a flux clamped at 0 gets the variance of the unconstrained fit.
    """
    d = np.asarray(data, dtype=np.float64)
    good = np.isfinite(d)
    if var is not None:
        v = np.asarray(var, dtype=np.float64)
        good &= np.isfinite(v) & (v > 0)
        with np.errstate(divide="ignore"):
            iv = np.where(good, 1.0 / np.where(good, v, 1.0), 0.0)
    else:
        iv = good.astype(np.float64)
    d = np.where(good, d, 0.0)
    M = np.asarray(models, dtype=np.float64)
    if background:
        M = np.concatenate([M, np.ones((M.shape[0], 1, M.shape[2]))], axis=1)
    L, K, _ = M.shape
    Mw = M * iv[:, None, :]
    N = Mw @ M.transpose(0, 2, 1)            # batched BLAS products
    r = (Mw @ d[:, :, None])[:, :, 0]
    diag = np.einsum("lkk->lk", N)
    usable = diag > 1e-12 * np.maximum(diag.max(axis=1, keepdims=True), 1e-300)
    free = usable.copy()
    x = _masked_solve(N, r, free)
    if nonneg:
        can_clamp = np.ones(K, dtype=bool)
        if signed is not None:
            can_clamp[:len(signed)] = ~np.asarray(signed, dtype=bool)
        if background:
            can_clamp[-1] = False
        x, free = _batched_nnls(N, r, free, can_clamp)
    cov = _masked_inverse(N, free)
    full = _masked_inverse(N, usable)
    clamped = usable & ~free
    if clamped.any():
        idx = np.nonzero(clamped)
        cov[idx[0], idx[1], idx[1]] = full[idx[0], idx[1], idx[1]]
    x = np.where(usable, x, np.nan)
    return x, cov


def _masked_system(N, r, active):
    eye = np.eye(N.shape[1])[None]
    m = active[:, :, None] & active[:, None, :]
    Nm = np.where(m, N, eye)
    rm = np.where(active, r, 0.0)
    return Nm, rm


def _masked_solve(N, r, active):
    Nm, rm = _masked_system(N, r, active)
    try:
        x = np.linalg.solve(Nm, rm[..., None])[..., 0]
    except np.linalg.LinAlgError:
        x = np.einsum("lkj,lj->lk", np.linalg.pinv(Nm), rm)
    return np.where(active, x, 0.0)


def _masked_inverse(N, active):
    Nm, _ = _masked_system(N, np.zeros(N.shape[:2]), active)
    try:
        inv = np.linalg.inv(Nm)
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(Nm)
    m = active[:, :, None] & active[:, None, :]
    return np.where(m, inv, np.nan)


def _batched_nnls(N, r, usable, can_clamp):
    """NNLS of every channel: active sets updated for all channels at once, exact KKT check,
    and scipy's NNLS for the rare channels that have not settled after a few rounds."""
    L, K = r.shape
    free = usable.copy()
    x = _masked_solve(N, r, free)
    for _ in range(3 * K + 3):
        neg = free & (x < 0) & can_clamp
        grad = r - np.einsum("lkj,lj->lk", N, x)
        scale = np.sqrt(np.maximum(np.einsum("lkk->lk", N), 1e-300))
        add = usable & ~free & (grad > 1e-10 * scale * np.maximum(np.abs(x).max(axis=1, keepdims=True), 1.0))
        bad_layer = neg.any(axis=1)
        if not bad_layer.any() and not add.any():
            return x, free
        free = (free & ~neg) | (add & ~bad_layer[:, None])
        x = _masked_solve(N, r, free)
    neg = free & (x < -1e-12) & can_clamp
    grad = r - np.einsum("lkj,lj->lk", N, x)
    add = usable & ~free & (grad > 1e-9 * np.maximum(np.abs(r), 1e-300))
    for l in np.flatnonzero(neg.any(axis=1) | add.any(axis=1)):
        u = np.flatnonzero(usable[l])
        Nl, rl = N[l][np.ix_(u, u)], r[l][u]
        # Unconstrained members (a background) are split into two non-negative parts.
        cc = can_clamp[u]
        T = np.hstack([np.eye(len(u)), -np.eye(len(u))[:, ~cc]])
        Nt, rt = T.T @ Nl @ T, T.T @ rl
        try:
            Lc = np.linalg.cholesky(Nt + 1e-12 * np.trace(Nt) * np.eye(len(rt)))
        except np.linalg.LinAlgError:
            continue
        z, _ = nnls(Lc.T, np.linalg.solve(Lc, rt))
        xl = T @ z
        x[l] = 0.0
        x[l, u] = xl
        free[l] = False
        free[l, u] = (xl != 0) | ~cc
    return x, free

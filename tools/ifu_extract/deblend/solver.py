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
    for layer in np.flatnonzero(neg.any(axis=1) | add.any(axis=1)):
        u = np.flatnonzero(usable[layer])
        Nl, rl = N[layer][np.ix_(u, u)], r[layer][u]
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
        x[layer] = 0.0
        x[layer, u] = xl
        free[layer] = False
        free[layer, u] = (xl != 0) | ~cc
    return x, free


#: Channels where a member's flux falls below this many standard deviations are solved again
#: with every flux >= 0 (:func:`clip_negative`).
NEG_SIGMA = 4.0


def clip_negative(solve_nonneg, flux, cov, S, neg_sigma: float = NEG_SIGMA):
    """Channels where a member's flux is far below zero, solved again with every flux >= 0.

    A member's flux far below zero is model mismatch, not noise (a neighbour's emission line
    whose morphology differs from its continuum's, a template from a shallow image): left as
    is it prints the neighbour's lines upside down into the member's spectrum.

    Parameters
    ----------
    solve_nonneg : callable
        ``solve_nonneg(rows) -> (flux, cov)``: the non-negative solution of those channels
        (indices into the block), as :func:`solve_layers` returns it.
    flux, cov : numpy.ndarray
        ``(L, C[+1])``, ``(L, C[+1], C[+1])`` the unconstrained solution of the block's
        *C* columns (then a background, which stays free).
    S : numpy.ndarray
        ``(C, K)`` column-to-member matrix: a member's flux is the sum of its columns'.
    neg_sigma : float

    Returns
    -------
    flux, cov : numpy.ndarray
        The solution with those channels replaced; a clamped flux's NaN covariances with the
        others are set to 0 (its variance, that of the unconstrained fit, stands alone).
    low : numpy.ndarray
        ``(L, K)`` bool, the member channels that triggered a refit.
    """
    C = S.shape[0]
    fs = np.nan_to_num(flux[:, :C]) @ S
    fv = np.einsum("ck,lcd,dk->lk", S, np.nan_to_num(cov[:, :C, :C]), S)
    with np.errstate(invalid="ignore"):
        low = fs < -neg_sigma * np.sqrt(fv)
    rows = np.flatnonzero(low.any(axis=1))
    if rows.size:
        flux, cov = flux.copy(), cov.copy()
        flux[rows], cov[rows] = solve_nonneg(rows)
    cz = np.where(np.isfinite(cov), cov, 0.0)
    idx = np.arange(cov.shape[1])
    cz[:, idx, idx] = cov[:, idx, idx]
    return flux, cz, low


#: A spaxel is a member's own when the member's model is at least this fraction of the group's.
OWN_FRACTION = 0.3


class GroupChiSquare:
    """χ² of a group's fit, accumulated block by block of channels: over the whole group and
    over each member's own spaxels (where its model is at least :data:`OWN_FRACTION` of the
    group's model), for the DEBLEND spectra's headers (``DBCHI2``, ``DBGCHI2``, ``DBPOOR``).

    Parameters
    ----------
    n_members : int
        Members of the group (*K*).
    """

    def __init__(self, n_members: int):
        self.own = np.zeros((n_members, 2))    # (χ², valid voxels) on each member's own spaxels
        self.total = np.zeros(2)               # the same over the group

    def add(self, chi2: np.ndarray, valid: np.ndarray, parts: np.ndarray) -> None:
        """Add one block: *chi2* ``(n_wave, n_pix)`` the weighted squared residuals (0 where not
        *valid*), *parts* ``(n_wave, K, n_pix)`` each member's model (fluxes times shapes)."""
        self.total += (chi2.sum(), valid.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.abs(parts) / np.maximum(np.abs(parts).sum(axis=1, keepdims=True), 1e-300)
        own = share >= OWN_FRACTION
        self.own[:, 0] += np.einsum("lkp,lp->k", own, chi2)
        self.own[:, 1] += np.einsum("lkp,lp->k", own, valid.astype(float))

    def add_residual(self, data, var, model, parts) -> None:
        """Add one block from its *data*, *var* and *model* ``(n_wave, n_pix)`` (NaN data or a
        non-positive variance: left out) and the members' *parts* ``(n_wave, K, n_pix)``."""
        d = np.asarray(data, dtype=np.float64)
        v = np.asarray(var, dtype=np.float64)
        valid = np.isfinite(d) & np.isfinite(v) & (v > 0) & np.isfinite(model)
        with np.errstate(invalid="ignore", divide="ignore"):
            chi2 = np.where(valid, (d - model) ** 2 / np.where(valid, v, 1.0), 0.0)
        self.add(chi2, valid, np.nan_to_num(parts))

    def result(self, n_wave: int, params_group: int) -> tuple[np.ndarray, float]:
        """χ²/dof on each member's own spaxels and over the group.

        *params_group* are the fluxes fitted per channel for the whole group, *n_wave* channels.
        A member's own voxels carry the group's average share of those parameters (its degrees
        of freedom are its voxel count times ``dof_group / voxels_group``): subtracting a
        member's own fluxes from its own voxels instead leaves nothing for a member with one
        own spaxel per channel, whose χ² then reads as thousands (the real minicube with its
        HST image: 17290 for a faint member whose group fit is at 1.2).
        """
        dof_group = max(self.total[1] - params_group * n_wave, 1.0)
        share = dof_group / max(self.total[1], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            chi2 = np.where(self.own[:, 1] > 0, self.own[:, 0] / np.maximum(self.own[:, 1] * share, 1e-300), np.nan)
        return chi2, float(self.total[0] / dof_group)

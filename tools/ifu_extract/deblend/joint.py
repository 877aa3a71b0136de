"""Joint fit of the spectra and the morphologies of a deblending group (issue 15).

:mod:`ifu_extract.deblend` fits each member's intrinsic light as a non-negative sum of Gaussian
components on one high-S/N image (the white light, or a sharp ancillary image).  On the white
light alone the split between a bright galaxy's wings and a faint neighbour 0.7-0.9″ away is
degenerate: a few per cent of the bright galaxy's flux given to the neighbour's model is 20
times that in the neighbour's spectrum.  The cube breaks that degeneracy through the members'
*spectra*: light given to the wrong member carries the wrong spectrum (a faint emission-line
galaxy's lines, a bright galaxy's 4000 Å break) into every channel.  This module fits

    d(λ, p) = Σ_k f_k(λ) · Σ_{c ∈ k} a_c(λ) · [G_c ⊗ PSF_λ](p)  [+ b(λ)]  + noise

over the group's spaxels and all channels, by alternating least squares:

* **fluxes** ``f_k(λ)`` given the morphologies: the weighted linear solution per channel
  (:func:`ifu_extract.deblend.solve_layers`, all channels at once);
* **morphologies** given the fluxes: the non-negative amplitudes ``a_c`` of every member's
  components, linear in them, solved jointly for the whole group from the normal equations
  summed over all channels (the channels are grouped in bins a few per cent wide in FWHM for
  this step only).

Colour gradients: a member's amplitudes may vary with wavelength, linearly between
``MORPH_NODES`` nodes spread over the band (hat functions; non-negative at the nodes hence
everywhere), so that a red bulge in a blue disk keeps its own spectrum in each part of the
band.  Every member's model has unit flux at every wavelength (the amplitudes at each node are
renormalised to sum to 1), so ``f_k(λ)`` is its total flux.  Members whose morphology comes
from a sharp ancillary image can be held at it (``fixed``).

After the last iteration the fluxes are solved once more per channel; channels where a
member's flux falls below ``-NEG_SIGMA`` standard deviations, which only model mismatch
produces (e.g. a neighbour's emission line whose morphology differs from its continuum's), are
re-solved with every member's flux >= 0, and counted.  The fit's χ² per degree of freedom over
each member's own spaxels (where its model is at least ``solver.OWN_FRACTION`` of the group's)
and over the group is returned for the spectra's headers (:class:`~.solver.GroupChiSquare`).

Arrays: data ``(n_wave, n_pix)`` over the group's fitted spaxels (NaN: left out); component
node images ``(n_nodes, n_comp, n_pix)``.  Deterministic: no random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .solver import NEG_SIGMA, GroupChiSquare, clip_negative, solve_layers

__all__ = ["GroupComponents", "JointResult", "joint_fit", "hat_weights", "MORPH_NODES",
           "JOINT_ITERATIONS", "NEG_SIGMA", "POOR_CHI2"]

#: Wavelength nodes of the morphology of a member allowed to change with wavelength.
MORPH_NODES = 4
#: Alternations of the flux and morphology steps (and the relative change of the fluxes below
#: which they stop early).
JOINT_ITERATIONS = 30
JOINT_TOL = 1e-3
#: χ²/dof above which a member's model is flagged as poor (DBPOOR).
POOR_CHI2 = 1.5
#: Largest number of channels per morphology bin (the PSF changes by < 2 % within one).
MAX_BINS = 48


@dataclass
class GroupComponents:
    """The components of a group's members, convolved with the PSF at its wavelength nodes.

    Attributes
    ----------
    node_images : numpy.ndarray
        ``(n_nodes, C, n_pix)`` each component (unit flux over the plane) convolved with the
        PSF at each node, over the group's fitted spaxels.
    node_wave : numpy.ndarray
        ``(n_nodes,)`` Angstrom.
    owner : numpy.ndarray
        ``(C,)`` member index of each component.
    amp : numpy.ndarray
        ``(C,)`` initial amplitudes (the image fit), each member's summing to 1.
    banded : numpy.ndarray
        ``(K,)`` bool: member whose amplitudes may change with wavelength.
    fixed : numpy.ndarray
        ``(K,)`` bool: member whose amplitudes are held at *amp*.
    member_of : numpy.ndarray, optional
        ``(K,)`` index of the source each (sub-)member belongs to (default: itself).  A
        resolved source may be split into sub-members (its core and its envelope), each with
        its own spectrum; the source's flux is their sum.
    """

    node_images: np.ndarray
    node_wave: np.ndarray
    owner: np.ndarray
    amp: np.ndarray
    banded: np.ndarray
    fixed: np.ndarray
    member_of: np.ndarray | None = None

    @property
    def n_members(self) -> int:
        return len(self.banded)


@dataclass
class JointResult:
    """What :func:`joint_fit` returns.

    Attributes
    ----------
    flux, var : numpy.ndarray
        ``(n_wave, n_sources)`` each source's flux (the sum of its sub-members') and its
        variance (NaN where it has no usable spaxel).
    background : numpy.ndarray or None
        ``(n_wave,)`` uniform background per spaxel, when fitted.
    amp : numpy.ndarray
        ``(C, J)`` amplitudes at the morphology nodes (each member's summing to 1 per node).
    morph_wave : numpy.ndarray
        ``(J,)`` Angstrom.
    chi2 : numpy.ndarray
        ``(K,)`` χ²/dof over each member's own spaxels.
    chi2_group : float
        χ²/dof over the group's fitted voxels.
    clipped : numpy.ndarray
        ``(K,)`` number of channels where the member's flux was re-solved >= 0.
    iterations : int
    sub_flux : numpy.ndarray
        ``(n_wave, K)`` the flux of every (sub-)member.
    """

    flux: np.ndarray
    var: np.ndarray
    background: np.ndarray | None
    amp: np.ndarray
    morph_wave: np.ndarray
    chi2: np.ndarray
    chi2_group: float
    clipped: np.ndarray
    iterations: int
    sub_flux: np.ndarray | None = None


def hat_weights(wave, nodes) -> np.ndarray:
    """``(n_wave, n_nodes)`` linear-interpolation weights of *wave* between *nodes* (rows sum
    to 1; constant beyond the end nodes)."""
    wave = np.asarray(wave, dtype=float)
    n = len(nodes)
    out = np.zeros((len(wave), n))
    if n == 1:
        out[:, 0] = 1.0
        return out
    pos = np.interp(wave, nodes, np.arange(n))
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
    t = pos - i0
    rows = np.arange(len(wave))
    out[rows, i0] = 1 - t
    out[rows, i0 + 1] += t
    return out


def _member_matrix(owner, K) -> np.ndarray:
    return (owner[:, None] == np.arange(K)[None, :]).astype(float)  # (C, K)


def _models(comps: GroupComponents, amp, Hm, Hn, sl) -> np.ndarray:
    """Unit-flux member models ``(L, K, n_pix)`` on channels *sl*."""
    onehot = _member_matrix(comps.owner, comps.n_members)
    # (J, n_nodes, K, P): each member's model at each morphology node and PSF node.
    col = np.einsum("cj,ck,ncp->jnkp", amp, onehot, comps.node_images, optimize=True)
    return np.einsum("lj,ln,jnkp->lkp", Hm[sl], Hn[sl], col, optimize=True)


def _flux_step(data, iv, models, background, nonneg=None):
    var = np.where(iv > 0, 1.0 / np.where(iv > 0, iv, 1.0), np.nan)
    return solve_layers(np.where(iv > 0, data, np.nan), var, models, background=background,
                        nonneg=bool(nonneg))


def _morphology_step(comps: GroupComponents, data, iv, flux, bkg, Hm, Hn, bins, amp):
    """Non-negative amplitudes ``(C, J)`` given the fluxes (see the module docstring)."""
    C, J = amp.shape
    K = comps.n_members
    onehot = _member_matrix(comps.owner, K)
    f = np.nan_to_num(flux)
    d = data if bkg is None else data - np.nan_to_num(bkg)[:, None]
    S = np.zeros((C * J, C * J))
    r = np.zeros(C * J)
    for b0, b1 in bins:
        fb, ivb = f[b0:b1], iv[b0:b1]
        W = np.einsum("lk,lm,lp->kmp", fb, fb, ivb, optimize=True)        # (K, K, P)
        R = np.einsum("lk,lp->kp", fb, d[b0:b1] * ivb, optimize=True)       # (K, P)
        hb = Hm[b0:b1].mean(axis=0)                                          # (J,)
        G = np.einsum("n,ncp->cp", Hn[b0:b1].mean(axis=0), comps.node_images)  # (C, P)
        # S_b[c, c'] = Σ_p G_c G_c' W[k(c), k(c')]
        GW = np.einsum("cp,ck,kmp->cmp", G, onehot, W, optimize=True)       # (C, K, P)
        Sb = np.einsum("cmp,dm,dp->cd", GW, onehot, G, optimize=True)
        rb = np.einsum("cp,ck,kp->c", G, onehot, R, optimize=True)
        hh = np.outer(hb, hb)
        S += np.kron(Sb, hh)       # index (c, j) -> c * J + j
        r += np.kron(rb, hb)
    # Parameters: free members' amplitudes, per node when banded, else one per component.
    cols, fixed_vec = [], np.zeros(C * J)
    for c in range(C):
        k = comps.owner[c]
        if comps.fixed[k]:
            fixed_vec[c * J:(c + 1) * J] = amp[c]
            continue
        if comps.banded[k]:
            for j in range(J):
                e = np.zeros(C * J)
                e[c * J + j] = 1.0
                cols.append(e)
        else:
            e = np.zeros(C * J)
            e[c * J:(c + 1) * J] = 1.0
            cols.append(e)
    if not cols:
        return amp
    T = np.array(cols).T                                    # (C*J, n_free)
    Sr = T.T @ S @ T
    rr = T.T @ (r - S @ fixed_vec)
    scale = np.sqrt(np.clip(np.diag(Sr), 1e-300, None))
    Ss = Sr / np.outer(scale, scale)
    rs = rr / scale
    try:
        Lc = np.linalg.cholesky(Ss + 1e-10 * np.eye(len(rs)))
    except np.linalg.LinAlgError:
        return amp
    z, _ = nnls(Lc.T, np.linalg.solve(Lc, rs), maxiter=50 * len(rs))
    new = (T @ (z / scale) + fixed_vec).reshape(C, J)
    # Each member's model keeps unit flux at every node; a member left with no light keeps its
    # previous morphology.
    sums = onehot.T @ new                                   # (K, J)
    for k in range(K):
        mine = comps.owner == k
        ok = sums[k] > 0
        new[np.ix_(mine, ok)] /= sums[k, ok]
        new[np.ix_(mine, ~ok)] = amp[np.ix_(mine, ~ok)]
    return new


def _bins(n_wave, node_wave, wave) -> list:
    """Channel bins of the morphology step: one per PSF-node interval at least, at most
    MAX_BINS, equal in channels."""
    nb = int(np.clip(max(len(node_wave), 8), 1, min(MAX_BINS, n_wave)))
    edges = np.linspace(0, n_wave, nb + 1).astype(int)
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def joint_fit(data, var, wave, comps: GroupComponents, *, background: bool = False,
              morph_nodes: int | None = None, iterations: int | None = None,
              block: int = 512) -> JointResult:
    """Spectra and morphologies of a group's members fitted together (module docstring).

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, n_pix)`` the group's fitted spaxels; NaN or non-positive variance: left
        out.  *var* None: unit weights (no χ² then).
    wave : numpy.ndarray
        ``(n_wave,)`` Angstrom.
    comps : GroupComponents
    background : bool
        Fit a uniform background per channel.
    morph_nodes : int, optional
        Morphology nodes of the banded members (default ``MORPH_NODES``).
    iterations : int, optional
        Largest number of alternations (default ``JOINT_ITERATIONS``).
    block : int
        Channels per block of the flux step (memory).

    Returns
    -------
    JointResult
    """
    L, P = data.shape
    K = comps.n_members
    morph_nodes = MORPH_NODES if morph_nodes is None else morph_nodes
    iterations = JOINT_ITERATIONS if iterations is None else iterations
    good = np.isfinite(data)
    if var is not None:
        good &= np.isfinite(var) & (var > 0)
        iv = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
    else:
        iv = good.astype(float)
    d = np.where(good, data, 0.0).astype(np.float64)
    J = morph_nodes if comps.banded.any() else 1
    morph_wave = np.linspace(wave[0], wave[-1], J) if J > 1 else np.array([float(np.mean(wave))])
    Hm = hat_weights(wave, morph_wave)
    Hn = hat_weights(wave, comps.node_wave)
    amp = np.repeat(comps.amp[:, None], J, axis=1)
    bins = _bins(L, comps.node_wave, wave)

    member_of = np.arange(K) if comps.member_of is None else np.asarray(comps.member_of)
    Ko = int(member_of.max()) + 1
    Smat = (member_of[:, None] == np.arange(Ko)[None, :]).astype(float)   # (K, Ko)

    sub_flux = np.full((L, K), np.nan)

    def fluxes(amp, final=False):
        flux = np.full((L, K if not final else Ko), np.nan)
        fvar = np.full((L, Ko), np.nan)
        bkg = np.zeros(L) if background else None
        clipped = np.zeros(Ko, int)
        acc = GroupChiSquare(Ko)
        for c0 in range(0, L, block):
            sl = slice(c0, min(c0 + block, L))
            m = _models(comps, amp, Hm, Hn, sl)
            f, cov = _flux_step(d[sl], iv[sl], m, background)
            if not final:
                flux[sl] = f[:, :K]
                if background:
                    bkg[sl] = f[:, K]
                continue
            f, cz, low = clip_negative(
                lambda rows: _flux_step(d[sl][rows], iv[sl][rows], m[rows], background, nonneg=True),
                f, cov, Smat)
            clipped += low.sum(axis=0)
            flux[sl] = f[:, :K] @ Smat
            sub_flux[sl] = f[:, :K]
            fvar[sl] = np.einsum("ka,lkj,ja->la", Smat, cz[:, :K, :K], Smat)
            if background:
                bkg[sl] = f[:, K]
            fz = np.nan_to_num(f)
            parts = np.einsum("lk,lkp,ka->lap", fz[:, :K], m, Smat)          # (l, Ko, P)
            model = parts.sum(axis=1) + (fz[:, K:K + 1] if background else 0.0)
            acc.add((d[sl] - model) ** 2 * iv[sl], iv[sl] > 0, parts)
        return flux, fvar, bkg, clipped, acc

    flux, _, bkg, _, _ = fluxes(amp)
    n_iter = 0
    for n_iter in range(1, iterations + 1):
        amp = _morphology_step(comps, d, iv, flux, bkg, Hm, Hn, bins, amp)
        new, _, bkg, _, _ = fluxes(amp)
        # Each member's own change, relative to its own flux: a faint member's spectrum moves
        # by amounts that are nothing on its bright neighbour's scale.
        with np.errstate(invalid="ignore", divide="ignore"):
            change = float(np.nanmax(np.nanmean(np.abs(new - flux), axis=0)
                                     / np.maximum(np.nanmean(np.abs(new), axis=0), 1e-300)))
        flux = new
        if change < JOINT_TOL:
            break
    flux, fvar, bkg, clipped, acc = fluxes(amp, final=True)
    # Degrees of freedom: fluxes per channel, amplitudes (few) neglected.
    chi2, chi2_group = acc.result(L, K + (1 if background else 0))
    if var is None:
        chi2, chi2_group = np.full(Ko, np.nan), np.nan
    return JointResult(flux, fvar, bkg, amp, morph_wave, chi2, chi2_group, clipped, n_iter, sub_flux)


# ------------------------------------------------------------------------------ centres
#: Largest shift of a member's centre from its catalogue position, spaxels, and as a fraction of
#: the distance to its nearest neighbour.
CENTRE_MAX_SHIFT = 1.0
CENTRE_NEIGHBOUR_FRACTION = 0.25
CENTRE_ITERATIONS = 8


def refine_centres(grid, image_ft, img, ivar, good, x, y, make_fts, *, fit, movable=None,
                   background=False):
    """Members' centres fitted on the model image (Gauss-Newton on sub-pixel shifts).

    A concentric model centred 0.1″ off a bright galaxy's light leaves an antisymmetric
    residual that the nearest faint neighbour absorbs: in the regime of issue 15 that is half
    of the neighbour's spectrum.  Catalogue positions from another image, another pipeline or
    a centroid of the blend are rarely better than that, so each member's centre is fitted with
    its round components (non-negative amplitudes) and the shifts solved from the model's
    derivatives, within ``CENTRE_MAX_SHIFT`` spaxels and ``CENTRE_NEIGHBOUR_FRACTION`` of the
    distance to the nearest member.

    Parameters
    ----------
    grid : ifu_extract.deblend.FourierGrid
    image_ft : numpy.ndarray
        Transform of the model image's PSF (times the spaxel).
    img, ivar, good : numpy.ndarray
        ``(ny, nx)`` model image on the group box, its inverse variance (or None), fitted pixels.
    x, y : sequence of float
        Cube pixel positions of the members (0-based).
    make_fts : callable
        ``make_fts(x, y) -> (fts (C, fy, fx), owner (C,))``: the members' intrinsic component
        transforms centred at (x, y).
    fit : callable
        ``fit(design (C, ny, nx)) -> amplitudes`` (non-negative least squares on the image).
    movable : numpy.ndarray, optional
        ``(K,)`` bool: members whose centre is fitted (default all).  A faint member next to a
        bright one is better left at its catalogue position: its fitted centre would follow
        the bright one's model errors, and its own position error costs little.

    Returns
    -------
    x, y : numpy.ndarray
        Fitted positions.
    """
    x = np.asarray(x, dtype=float).copy()
    y = np.asarray(y, dtype=float).copy()
    x0, y0 = x.copy(), y.copy()
    K = len(x)
    limit = np.full(K, CENTRE_MAX_SHIFT)
    movable = np.ones(K, dtype=bool) if movable is None else np.asarray(movable, dtype=bool)
    if not movable.any():
        return x, y
    mv = np.flatnonzero(movable)
    for k in range(K):
        others = [np.hypot(x[j] - x[k], y[j] - y[k]) for j in range(K) if j != k]
        if others:
            limit[k] = min(limit[k], CENTRE_NEIGHBOUR_FRACTION * min(others))
    w = np.sqrt(ivar[good]) if ivar is not None else np.ones(int(good.sum()))
    target = img[good] * w
    for _ in range(CENTRE_ITERATIONS):
        fts, owner = make_fts(x, y)
        fts = fts * image_ft
        design = grid.to_image(fts)
        amp = fit(design)
        member_ft = np.stack([np.tensordot(amp[owner == k], fts[owner == k], axes=1) for k in range(K)])
        model = np.tensordot(amp, design, axes=1)
        # d(model)/d(x_k) = -∂x of member k's image.
        dx = grid.to_image(-2j * np.pi * grid.kx * member_ft)
        dy = grid.to_image(-2j * np.pi * grid.ky * member_ft)
        cols = [dx[k][good] * w for k in mv] + [dy[k][good] * w for k in mv]
        cols += [design[c][good] * w for c in range(len(design))]
        if background:
            cols.append(w)
        A = np.column_stack(cols)
        resid = target - model[good] * w
        step, *_ = np.linalg.lstsq(A, resid, rcond=None)
        sx, sy = np.zeros(K), np.zeros(K)
        sx[mv] = np.clip(step[:len(mv)], -0.5, 0.5)
        sy[mv] = np.clip(step[len(mv):2 * len(mv)], -0.5, 0.5)
        x, y = x + sx, y + sy
        shift = np.hypot(x - x0, y - y0)
        over = shift > limit
        if over.any():
            f = np.where(over, limit / np.maximum(shift, 1e-12), 1.0)
            x, y = x0 + (x - x0) * f, y0 + (y - y0) * f
        if np.max(np.abs(np.concatenate([sx, sy]))) < 1e-3:
            break
    return x, y

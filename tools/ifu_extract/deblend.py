"""Model-based deblending: every source of a group fitted at once, layer by layer, with the PSF.

The cube is modelled, in each wavelength channel λ and over the spaxels of a *group* of sources
whose profiles overlap, as

    d(λ, p) = Σ_k f_k(λ) · M_k(λ, p)  [+ b(λ)]  + noise,

where ``M_k(λ, ·)`` is the spatial model of source *k* at λ, normalised to unit total flux over
the infinite plane, ``f_k(λ)`` its total flux (the ``DEBLEND`` spectrum) and ``b(λ)`` an optional
uniform background.  The fluxes of each channel are the weighted linear least-squares solution
(weights 1/variance, NaN voxels left out), optionally with ``f_k ≥ 0``; their variances are the
diagonal of the covariance of that solution, ``(Mᵀ V⁻¹ M)⁻¹`` (:func:`solve_layers` returns the
whole matrix, the covariance between neighbours included).  All channels are solved together
(batched normal equations), with no Python loop over channels.

Spatial models (``model=``)
---------------------------
``"profile"`` (default)
    Each source's intrinsic light is a sum of concentric Gaussians (a multi-Gaussian expansion,
    the point source being the zero-width member) centred on its catalogue position.  Their
    non-negative amplitudes are fitted jointly for all members of a group on the high-S/N image
    (the cube's white light, or an ancillary image on the cube grid), each component convolved
    with that image's PSF (for the white light: the channel PSFs weighted by the group's
    spectrum).  The model at λ is the same intrinsic light convolved with the PSF at λ.
    Which components a member gets: widths up to ~0.6 of its segment's radius, and at most
    ``NEIGHBOUR_FRACTION`` of the distance to any brighter member (a faint source's broad halo
    cannot be told from a brighter neighbour's wings); a member unresolved on its own light (the
    image minus the other members' models; PSF-corrected weighted second moments) keeps round
    components up to 1 spaxel, a resolved one also gets components elongated in four
    directions, so that any ellipticity and angle is a non-negative combination.  Fitting the
    members jointly is what keeps a bright galaxy's wings out of its faint neighbour's model:
    the segment-restricted white light, used as is, gives the faint neighbour a model made
    mostly of the bright one's wings.
``"segment"``
    The segment-restricted image itself: with an ancillary (sharp, e.g. HST) image it is the
    intrinsic light of each source and is convolved with the PSF at λ (TDOSE, ODHIN); with the
    white light, which already carries the PSF, it is used as is at every λ (a baseline).

Colour gradients.  A resolved "profile" member also gets a zero-flux shape, its core
(components up to ``GRADIENT_SPLIT`` spaxels) minus its envelope, each of unit flux, with a free
amplitude per channel: its shape can follow its colours (a red bulge in a blue disk) without
the mismatch leaking into its neighbours, and without changing what its flux means.  Those
amplitudes are fitted in a first pass, smoothed along wavelength (running median of
``GRADIENT_SMOOTH`` channels, keeping the channels that depart by more than ``GRADIENT_KEEP``
sigma, e.g. a line of the bulge only), and held fixed in the second pass that gives the fluxes;
so they cost almost no S/N.  The variance of the fluxes neglects the noise of the smoothed
amplitudes (about 1/``GRADIENT_SMOOTH`` of theirs).

Convolutions are exact products in Fourier space: analytic transforms of the Moffat (or
Gaussian) PSF, of the Gaussian components and of the square spaxel, with the sub-pixel position
as a phase, on a grid padded by several FWHM.  Models are computed at PSF nodes spaced by at
most 2 % in FWHM and interpolated linearly in wavelength in between (error < 1e-4 of the flux).

Groups
------
The *footprint* of a source is its segment (or its position) grown by the radius at which the
broadest PSF of the cube falls to ``overlap`` times its peak; sources whose footprints touch are
in the same group (connected components), which is fitted over the union of its footprints.  A
group with more than ``max_group`` members is refused: its members get a status saying so and
the other groups go on.

PSF
---
:func:`resolve_psf` (the one policy, :func:`ifu_extract.psf.resolve_psf`): FWHM(λ) and β given
by the user, else the MUSE FSF keywords of the cube, else fitted on a named star, else fitted on
the field's own point-like stars (:mod:`ifu_extract.psffit`), else an :class:`InputError`.
Each group then narrows FWHM(λ) by one factor if its own data demand it (χ² of the group in
wide wavelength bins, :func:`_refine_psf`): a PSF too broad cannot be compensated by the
model (nothing is sharper than the PSF) and overestimates compact sources, while a PSF too
narrow is widened by the intrinsic components, so only narrowing is measured and applied.
The factor is written as ``DBPSFSCL`` with each spectrum.

Joint fit (default, ``DeblendConfig.solver="joint"``)
----------------------------------------------------
The "profile" components above only start the fit: the members' centres are fitted on the
cube's white light, then the spectra and the components' amplitudes are fitted together on the
cube (:mod:`ifu_extract.deblend_models`, which also writes χ²/dof and the poor-model flag), and
channels where a source's flux falls below -4 sigma are re-solved with fluxes >= 0 (issue 15).

Everything is deterministic: no random numbers, groups and members in catalogue order.
Arrays are ``(n_wave, ny, nx)``; images ``(ny, nx)`` with x the fast axis; pixel positions are
0-based.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage
from scipy.optimize import lsq_linear, nnls
from scipy.special import gamma as gamma_fn
from scipy.special import kv

from .cubeio import Cube
from .errors import OK, InputError, warn_object
from .extract import Spectrum1D
from .lines import strongest_emission_line
from .psf import PSFModel, catalog_candidates, fit_psf_on_star, moffat_alpha  # fit_psf_on_star: re-exported
from .psf import resolve_psf as resolve_cube_psf
from .wcsutil import world_to_pixel

__all__ = [
    "MODELS",
    "DeblendConfig",
    "SourceResult",
    "DeblendResult",
    "resolve_psf",
    "fit_psf_on_star",
    "find_groups",
    "solve_layers",
    "deblend_catalog",
    "write_deblend",
    "write_residual_cube",
    "run_deblend",
    "CubeWriter",
    "DEBLEND_COLUMNS",
]

log = logging.getLogger("ifu_extract")

#: Spatial model kinds (see the module docstring).
MODELS = ("profile", "segment")
#: Widths (major-axis sigma, spaxels) of the Gaussian components of a "profile" model; 0 is
#: the point source.  Components wider than the source's segment allows are left out.
COMPONENT_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 9.0)
#: A member's widest component is at most this fraction of its segment's radius.
SEGMENT_CAP = 1.5
#: A member's widest component is at most this fraction of the distance to a brighter member.
NEIGHBOUR_FRACTION = 0.3
#: Widest component (sigma, spaxels) of a member without a segment.
NO_SEGMENT_CAP = 4.0
#: Components up to this sigma (spaxels) form a resolved member's core, wider ones its envelope.
GRADIENT_SPLIT = 1.0
#: Running-median width (channels) of the gradient amplitudes, and the departure (sigma) at
#: which a channel keeps its own amplitude.
GRADIENT_SMOOTH = 51
GRADIENT_KEEP = 4.0
#: Intrinsic major-axis sigma (spaxels) above which a source counts as resolved (0.12″ on
#: MUSE's 0.2″ spaxels, a fifth of the best seeing FWHM).
RESOLVED_SIGMA = 0.6
#: Widest component (sigma, spaxels) of an unresolved member.
UNRESOLVED_MAX_SIGMA = 1.0
#: Axis ratio of the elongated components of resolved members.
ELONGATION = 0.5
#: Largest step between PSF nodes, as a FWHM ratio.
NODE_STEP = 1.02
#: PSF refinement (see :func:`_refine_psf`): at most REFINE_BINS wavelength bins of at least
#: REFINE_BIN_MIN channels; trial FWHM factors from REFINE_LOWEST to 1 in steps of
#: REFINE_STEP; the χ² difference that counts (3 sigma for one parameter).
REFINE_BINS = 10
REFINE_BIN_MIN = 20
REFINE_LOWEST = 0.70
REFINE_STEP = 0.05
REFINE_MIN_DCHI2 = 9.0
#: Centre fitting (:func:`ifu_extract.deblend_models.refine_centres`): a member's centre is
#: fitted unless a member within CENTRE_NEAR spaxels is more than 1/CENTRE_MIN_RATIO times
#: brighter.
CENTRE_NEAR = 10.0
CENTRE_MIN_RATIO = 0.25
#: With a sharp ancillary image, compact members keep the shape fitted on it in the joint fit.
IMAGE_FIXES_COMPACT = True
#: Status of members of a refused group (followed by the details).
ST_GROUP_TOO_LARGE = "group_too_large"


# ------------------------------------------------------------------------------ configuration
@dataclass
class DeblendConfig:
    """Options of :func:`deblend_catalog`.

    Attributes
    ----------
    model : {"profile", "segment"}
        Spatial model kind (see the module docstring).
    overlap : float
        Footprint level, as a fraction of the PSF peak (0-1): smaller groups more sources.
    max_group : int
        Largest group fitted; larger groups are refused (their members get a status).
    nonneg : bool
        Constrain every flux to be >= 0 in every channel.
    background : bool
        Fit a uniform background per channel and group (absorbs sky residuals).
    image_fwhm : float
        FWHM of the PSF of an ancillary model image, arcsec (0: sharp compared with the cube).
    match_radius : float
        Radius, arcsec, within which an object on background takes the nearest segment.
    gradients : bool
        Give every resolved member ("profile" models) a zero-flux core-minus-envelope shape
        with a free amplitude per channel, so that its shape can follow a colour gradient
        (red bulge, blue disk) without its light leaking into its neighbours.
    refine_psf : bool
        Narrow the PSF's FWHM(λ) by the factor each group's data demand, if they demand one
        (see :func:`_refine_psf`; "profile" models of a cube with variance).  FSF keywords, or a PSF fitted on
        a star elsewhere in the field, are often a few per cent off; a FWHM 5 % too broad
        overestimates a point source's flux by ~6 % and leaks a bright neighbour into it.
    block : int
        Largest number of channels solved at once (the memory is bounded by
        ``block x components x spaxels`` floats).
    solver : {"joint", "image"}
        "profile" models: ``"joint"`` fits the spectra and the members' component amplitudes
        together on the cube (:mod:`ifu_extract.deblend_models`), a resolved source's core and
        envelope with their own spectra; ``"image"`` keeps the amplitudes fitted on the model
        image (the previous release's solver, with the gradient shapes above).
    fit_centres : bool
        Fit the centres of the members that dominate their surroundings on the cube's white
        light (:func:`ifu_extract.deblend_models.refine_centres`) instead of using the
        catalogue positions as they are.
    """

    model: str = "profile"
    overlap: float = 0.05
    max_group: int = 10
    nonneg: bool = False
    background: bool = False
    image_fwhm: float = 0.0
    match_radius: float = 0.5
    gradients: bool = True
    refine_psf: bool = True
    block: int = 512
    solver: str = "joint"
    fit_centres: bool = True


@dataclass
class SourceResult:
    """The deblending result of one catalogue row.

    Attributes
    ----------
    id : str
    row : int
        0-based catalogue row.
    status : str
        ``"ok"`` or why the object has no DEBLEND spectrum.
    x, y : float
        0-based cube pixel position.
    group : int
        Group number (1-based, catalogue order of first member); 0 when not placed.
    group_ids : list of str
        IDs of the group members.
    spectrum : Spectrum1D or None
        ``DEBLEND``: total flux per channel and its variance, on channels ``z0:z1`` of the cube.
    model_image : numpy.ndarray or None
        The source's model in the model image (white light or ancillary image units), on
        ``box``.
    box : tuple
        ``(x0, x1, y0, y1)`` cube pixels of *model_image* (the group box).
    notes : list of str
    """

    id: str
    row: int
    status: str
    x: float = np.nan
    y: float = np.nan
    group: int = 0
    group_ids: list = field(default_factory=list)
    spectrum: Spectrum1D | None = None
    model_image: np.ndarray | None = None
    box: tuple = (0, 0, 0, 0)
    notes: list = field(default_factory=list)


@dataclass
class DeblendResult:
    """What :func:`deblend_catalog` computed.

    Attributes
    ----------
    sources : list of SourceResult
        One per catalogue row, in catalogue order.
    channels : (int, int)
        Half-open channel range of the cube the spectra cover.
    psf : PSFModel
    groups : list of list of int
        Catalogue rows of each group, in group order.
    """

    sources: list
    channels: tuple
    psf: PSFModel
    groups: list


# ------------------------------------------------------------------------------ PSF
def resolve_psf(cube: Cube, *, psf: PSFModel | None = None, fwhm: float | None = None,
                fwhm_red: float | None = None, beta: float | None = None, kind: str = "moffat",
                star: tuple | None = None, candidates=None) -> PSFModel:
    """The PSF to deblend with: *psf* when given, else :func:`ifu_extract.psf.resolve_psf`
    (given FWHM > FSF keywords > *star* > fitted on the field's stars), required.

    Parameters
    ----------
    cube : Cube
    psf : PSFModel, optional
        A ready model (wins over everything).
    fwhm, fwhm_red, beta, kind, star, candidates : optional
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
                            candidates=candidates, required=True)


# ------------------------------------------------------------------------------ Fourier models
def _psf_ft(kind: str, fwhm_pix: float, beta: float, k: np.ndarray) -> np.ndarray:
    """2-D Fourier transform of a unit-flux circular PSF at spatial frequency *k* (cycles/spaxel)."""
    if kind == "gaussian":
        s = fwhm_pix / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return np.exp(-2.0 * np.pi**2 * s * s * k * k)
    nu = beta - 1.0
    xk = 2.0 * np.pi * float(moffat_alpha(fwhm_pix, beta)) * k
    out = np.ones_like(xk)
    pos = xk > 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        val = 2.0 ** (1.0 - nu) / gamma_fn(nu) * xk[pos] ** nu * kv(nu, xk[pos])
    out[pos] = np.nan_to_num(val, nan=0.0, posinf=0.0)
    return out


class _FourierGrid:
    """An FFT grid around a box of the cube, for exact convolutions and sub-pixel shifts."""

    def __init__(self, box, pad: int):
        x0, x1, y0, y1 = box
        self.box = box
        self.pad = int(pad)
        self.ny = (y1 - y0) + 2 * self.pad
        self.nx = (x1 - x0) + 2 * self.pad
        self.ky = np.fft.fftfreq(self.ny)[:, None]
        self.kx = np.fft.rfftfreq(self.nx)[None, :]
        self.k = np.hypot(self.kx, self.ky)
        self.pixel = np.sinc(self.kx) * np.sinc(self.ky)  # the square spaxel

    def phase(self, x: float, y: float) -> np.ndarray:
        """Shift to cube position (x, y) (0-based)."""
        gx = x - self.box[0] + self.pad
        gy = y - self.box[2] + self.pad
        return np.exp(-2j * np.pi * (self.kx * gx + self.ky * gy))

    def gaussian(self, sigma: float, q: float, theta: float) -> np.ndarray:
        """Transform of a unit-flux elliptical Gaussian (major-axis sigma, axis ratio, angle)."""
        if sigma <= 0:
            return np.ones_like(self.k)
        c, s = np.cos(theta), np.sin(theta)
        smaj, smin = sigma**2, (q * sigma) ** 2
        sxx = smaj * c * c + smin * s * s
        syy = smaj * s * s + smin * c * c
        sxy = (smaj - smin) * c * s
        return np.exp(-2.0 * np.pi**2 * (sxx * self.kx**2 + syy * self.ky**2 + 2 * sxy * self.kx * self.ky))

    def to_image(self, ft: np.ndarray) -> np.ndarray:
        """Inverse transform(s), cropped to the box: ``(..., ny_box, nx_box)``."""
        img = np.fft.irfft2(ft, s=(self.ny, self.nx), axes=(-2, -1))
        p = self.pad
        return img[..., p:self.ny - p, p:self.nx - p]


# ------------------------------------------------------------------------------ segments
def _object_labels(seg: np.ndarray | None, x, y, radius_pix: float) -> np.ndarray:
    """Segment label of each object: under it, else the nearest labelled spaxel within radius."""
    n = len(x)
    out = np.zeros(n, dtype=np.int64)
    if seg is None:
        return out
    ny, nx = seg.shape
    r = int(np.ceil(radius_pix))
    for i in range(n):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        xc, yc = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if 0 <= xc < nx and 0 <= yc < ny and seg[yc, xc] > 0:
            out[i] = seg[yc, xc]
            continue
        if r <= 0:
            continue
        y0, y1, x0, x1 = max(yc - r, 0), min(yc + r + 1, ny), max(xc - r, 0), min(xc + r + 1, nx)
        if y1 <= y0 or x1 <= x0:
            continue
        win = seg[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d2 = (xx - x[i]) ** 2 + (yy - y[i]) ** 2
        ok = (win > 0) & (d2 <= radius_pix**2)
        if ok.any():
            out[i] = win[ok][np.argmin(d2[ok])]
    return out


def _own_segments(seg, labels, x, y, rows) -> dict:
    """Spaxels of each object's segment; segments shared by several objects are split between
    them by nearest position (Voronoi)."""
    out = {}
    if seg is None:
        return out
    by_label: dict = {}
    for i in rows:
        if labels[i] > 0:
            by_label.setdefault(int(labels[i]), []).append(i)
    for lab, members in by_label.items():
        ys, xs = np.nonzero(seg == lab)
        if len(members) == 1:
            out[members[0]] = (ys, xs)
            continue
        d2 = np.stack([(xs - x[i]) ** 2 + (ys - y[i]) ** 2 for i in members])
        near = np.argmin(d2, axis=0)
        for j, i in enumerate(members):
            out[i] = (ys[near == j], xs[near == j])
    return out


def _footprint_radius(psf: PSFModel, wave, pixscale: float, level: float) -> float:
    """Radius (spaxels) where the broadest PSF falls to *level* times its peak."""
    fwhm = float(np.max(psf.fwhm(wave))) / pixscale
    if psf.kind == "gaussian":
        s = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return s * np.sqrt(-2.0 * np.log(level))
    beta = float(np.min(psf.beta(wave)))
    alpha = float(moffat_alpha(fwhm, beta))
    return alpha * np.sqrt(level ** (-1.0 / beta) - 1.0)


def find_groups(x, y, segments: dict, shape, radius_pix: float, rows) -> tuple[list, dict]:
    """Groups of objects whose footprints (segment or position, grown by *radius_pix*) touch.

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based cube pixel positions of every catalogue row.
    segments : dict
        ``{row: (ys, xs)}`` spaxels of each object's own segment.
    shape : (ny, nx)
        Cube grid.
    radius_pix : float
        Growth of each footprint, spaxels.
    rows : sequence of int
        Rows to group (placed objects).

    Returns
    -------
    groups : list of list of int
        Rows of each group, groups ordered by their first row, rows in catalogue order.
    footprints : dict
        ``{row: (ys, xs)}`` spaxels of each footprint (clipped to the cube grid).
    """
    ny, nx = shape
    r = int(np.ceil(radius_pix))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2) <= radius_pix**2
    foot = {}
    for i in rows:
        pts_y = [np.array([int(np.floor(y[i] + 0.5))])]
        pts_x = [np.array([int(np.floor(x[i] + 0.5))])]
        if i in segments:
            pts_y.append(segments[i][0])
            pts_x.append(segments[i][1])
        py, px = np.concatenate(pts_y), np.concatenate(pts_x)
        bx0, by0 = px.min() - r, py.min() - r
        local = np.zeros((py.max() - by0 + r + 1, px.max() - bx0 + r + 1), dtype=bool)
        local[py - by0, px - bx0] = True
        local = ndimage.binary_dilation(local, structure=disk)
        ly, lx = np.nonzero(local)
        gy, gx = ly + by0, lx + bx0
        inside = (gy >= 0) & (gy < ny) & (gx >= 0) & (gx < nx)
        foot[i] = (gy[inside], gx[inside])
    # Union-find over rows sharing a spaxel.
    parent = {i: i for i in rows}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner = np.full((ny, nx), -1, dtype=np.int64)
    for i in rows:
        gy, gx = foot[i]
        prev = np.unique(owner[gy, gx])
        for j in prev[prev >= 0]:
            a, b = find(int(j)), find(i)
            if a != b:
                parent[max(a, b)] = min(a, b)
        owner[gy, gx] = i
    groups: dict = {}
    for i in rows:
        groups.setdefault(find(i), []).append(i)
    ordered = sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])
    return ordered, foot


def _weighted_covariance(img, x, y, s_w) -> np.ndarray | None:
    """Second-moment matrix of *img* with a circular Gaussian weight of sigma *s_w* at (x, y),
    corrected for the weight (exact for a Gaussian source): ``(M⁻¹ - I/s_w²)⁻¹``; None when the
    light is too faint or too narrow to measure."""
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    dx, dy = xx - x, yy - y
    w = np.exp(-0.5 * (dx * dx + dy * dy) / s_w**2) * np.nan_to_num(img)
    tot = w.sum()
    if not tot > 0:
        return None
    m = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                  [np.sum(w * dx * dy), np.sum(w * dy * dy)]]) / tot
    try:
        inv = np.linalg.inv(m) - np.eye(2) / s_w**2
        if np.any(np.linalg.eigvalsh(inv) <= 0):
            return None
        return np.linalg.inv(inv)
    except np.linalg.LinAlgError:
        return None


def _intrinsic_shape(own, psf_img, x, y, s_w) -> tuple[float, float, float]:
    """Major-axis sigma (spaxels), axis ratio and angle (radians from +x) of a source's
    intrinsic light: weighted second moments of its own light minus those of the PSF."""
    src = _weighted_covariance(own, x, y, s_w)
    ref = _weighted_covariance(psf_img, x, y, s_w)
    if src is None or ref is None:
        return 0.0, 1.0, 0.0
    vals, vecs = np.linalg.eigh(src - ref)
    l2, l1 = vals
    if l1 <= RESOLVED_SIGMA**2:
        return 0.0, 1.0, 0.0
    q = float(np.clip(np.sqrt(max(l2, 0.0) / l1), 0.3, 1.0))
    theta = float(np.arctan2(vecs[1, 1], vecs[0, 1]))
    return float(np.sqrt(l1)), q, theta


# ------------------------------------------------------------------------------ group models
@dataclass
class _ModelImages:
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
    white: "_ModelImages | None" = None   # the cube's white light, with an ancillary image


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
    parts: dict | None = None   # ("profile") components for the joint fit (deblend_models)

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


def _psf_nodes(psf: PSFModel, wave: np.ndarray, pixscale: float) -> np.ndarray:
    """Node wavelengths such that the FWHM changes by at most NODE_STEP between nodes."""
    fw = psf.fwhm(wave)
    lo, hi = float(np.min(fw)), float(np.max(fw))
    if lo <= 0:
        raise InputError("PSF", f"FWHM(λ) reaches {lo:.3g} arcsec in the cube's range",
                         "check the FSF keywords or give --fwhm")
    n = 1 if hi / lo < 1.0 + 1e-6 else int(np.ceil(np.log(hi / lo) / np.log(NODE_STEP))) + 1
    n = min(max(n, 1 if n == 1 else 2), 64)
    return np.array([float(np.mean(wave))]) if n == 1 else np.linspace(wave[0], wave[-1], n)


def _channel_weights(node_wave, wave, spectrum=None) -> np.ndarray:
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


def _build_group_model(rows, box, region, x, y, segments, images: _ModelImages, psf, node_wave,
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
    grid = _FourierGrid(box, pad=int(np.ceil(max(8.0, 6.0 * fwhm_max))))
    node_ft = np.stack([_psf_ft(psf.kind, float(psf.fwhm(w)) / pixscale, float(psf.beta(w)), grid.k)
                        for w in node_wave]) * grid.pixel
    if images.from_cube:
        # The white light's PSF: the channel PSFs weighted by the group's spectrum.
        image_ft = np.tensordot(_channel_weights(node_wave, wave, spectrum), node_ft, axes=1)
    else:
        image_ft = _psf_ft("gaussian", cfg.image_fwhm / pixscale, 2.8, grid.k) * grid.pixel
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

    def components(shapes, centres=None):
        phs = phases if centres is None else [grid.phase(cx, cy) for cx, cy in zip(*centres)]
        fts, own, sigs = [], [], []
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
            shapes.append(_intrinsic_shape(np.where(np.isfinite(own), own, 0.0), point[k],
                                           px[k] - bx0, py[k] - by0, s_w))
        if centres is not None:
            px, py = (np.asarray(v, dtype=float) for v in centres)
            phases = [grid.phase(px[k], py[k]) for k in range(K)]
        elif cfg.fit_centres:
            # The centres are fitted with the final components (elliptical ones included: a
            # round model of an elliptical galaxy leaves a residual its neighbour pulls at).
            from .deblend_models import refine_centres

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


# ------------------------------------------------------------------------------ the solver
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


# ------------------------------------------------------------------------------ catalogue driver
def deblend_catalog(cube: Cube, catalog: Table, psf: PSFModel, *, image: np.ndarray | None = None,
                    image_var: np.ndarray | None = None, image_is_cube: bool = True,
                    segmap: np.ndarray | None = None, config: DeblendConfig | None = None,
                    wave_range=None, model_cube=None, progress=None) -> DeblendResult:
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
        raise InputError("--model", f"unknown model {cfg.model!r}", f"use one of {', '.join(MODELS)}")
    if not 0 < cfg.overlap < 1:
        raise InputError("--overlap", f"{cfg.overlap} is not a fraction between 0 and 1",
                         "give e.g. 0.05")
    if cfg.max_group < 1:
        raise InputError("--max-group", f"{cfg.max_group} is not a group size", "give 1 or more")
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    wave = cube.wave[z0:z1]
    pixscale = cube.pixscale
    if image is None:
        from .image import band_image

        white = band_image(cube, (float(wave[0]), float(wave[-1])))
        images = _ModelImages(white.data.astype(np.float64),
                              None if white.var is None else white.var.astype(np.float64), True)
    else:
        image = np.asarray(image, dtype=np.float64)
        if image.shape != (cube.ny, cube.nx):
            raise InputError("--image", f"model image shape {image.shape} is not the cube grid "
                             f"{(cube.ny, cube.nx)}", "resample it to the cube grid first")
        images = _ModelImages(image, None if image_var is None else np.asarray(image_var, float),
                              bool(image_is_cube))
        if not image_is_cube and cfg.fit_centres and cfg.model == "profile":
            from .image import band_image

            white = band_image(cube, (float(wave[0]), float(wave[-1])))
            images.white = _ModelImages(white.data.astype(np.float64),
                                        None if white.var is None else white.var.astype(np.float64), True)
    if segmap is not None and segmap.shape != (cube.ny, cube.nx):
        raise InputError("--segmap", f"segmentation map shape {segmap.shape} is not the cube grid "
                         f"{(cube.ny, cube.nx)}", "put it on the cube grid first")
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

    labels = _object_labels(segmap, x, y, cfg.match_radius / pixscale)
    segments = _own_segments(segmap, labels, x, y, rows)
    radius = _footprint_radius(psf, wave, pixscale, cfg.overlap)
    groups, foot = find_groups(x, y, segments, (cube.ny, cube.nx), radius, rows)
    node_wave = _psf_nodes(psf, wave, pixscale)

    for g, members in enumerate(groups, start=1):
        member_ids = [ids[i] for i in members]
        for i in members:
            results[i].group = g
            results[i].group_ids = member_ids
        if len(members) > cfg.max_group:
            shown = ",".join(member_ids[:6]) + (",..." if len(members) > 6 else "")
            msg = (f"{ST_GROUP_TOO_LARGE}: group {g} has {len(members)} overlapping sources "
                   f"({shown}), more than --max-group {cfg.max_group}")
            log.warning(f"warning: deblend: {msg}; its sources are not deblended "
                        "(raise --max-group, or lower --overlap to split groups)")
            for i in members:
                results[i].status = msg
            if progress:
                progress(1)
            continue
        try:
            _solve_group(cube, members, foot, x, y, segments, images, psf, node_wave, pixscale,
                         cfg, z0, z1, results, model_cube)
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


class _BinnedGroup:
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

    def even_image(self) -> tuple[np.ndarray, np.ndarray]:
        """Even channels: mean image ``(ny, nx)`` of the box and its variance (NaN: no data)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(self._in > 0, self._in, np.nan)
            return self._img / n, self._varsum / n**2


def _scaled_psf(psf: PSFModel, scale: float) -> PSFModel:
    # dataclasses.replace keeps the wavelength normalisation (lbrange) of a fitted PSF.
    return dataclasses.replace(psf, fwhm_coeffs=tuple(float(c) * scale for c in psf.fwhm_coeffs))


def _refine_psf(binned: _BinnedGroup, layout, members, box, region, x, y, segments, images, psf,
                node_wave, wave, pixscale, cfg) -> tuple[PSFModel, float, str]:
    """Narrow the PSF's FWHM(λ) by the factor the group's data demand, if they demand one.

    Trial factors go from ``REFINE_LOWEST`` to 1 in steps of ``REFINE_STEP``.  For each, the
    group is modelled with the components chosen with the given PSF (*layout*; unresolved
    members as pure PSFs), their amplitudes refitted with the scaled PSF on the model image,
    and the model is solved (all columns and a uniform background free) on the group box
    averaged in at most ``REFINE_BINS`` wavelength bins.  With the cube's white light as model
    image, the models are built on its even channels and judged on its odd ones (see
    :class:`_BinnedGroup`): judged on the data they were fitted to, models with more free
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
    dimg, dvar = binned.images()
    ok = np.isfinite(dimg) & np.isfinite(dvar) & (dvar > 0)
    if ok.sum() < 4 * (len(members) + 2) * len(dimg):
        return psf, 1.0, "PSF as given (too few data to refine it)"
    edges = binned.edges
    K = len(members)
    sel = region.ravel()
    odd = np.arange(len(wave)) % 2 == 1
    mix = np.stack([_channel_weights(node_wave, wave[e0:e1][odd[e0:e1]],
                                     binned.spectrum[e0:e1][odd[e0:e1]])
                    for e0, e1 in zip(edges[:-1], edges[1:])])
    if images.from_cube:
        # The models are built on the even channels' image, on a frame of the cube's size.
        bx0, bx1, by0, by1 = box
        img, var = binned.even_image()
        frame, frame_var = (np.full(images.image.shape, np.nan) for _ in range(2))
        frame[by0:by1, bx0:bx1], frame_var[by0:by1, bx0:bx1] = img, var
        images = _ModelImages(frame, frame_var, True)
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
        gm = _build_group_model(members, box, region, x, y, segments, images, trial, node_wave, wave,
                                pixscale, cfg, spectrum, layout)
        cols = gm.col_nodes.reshape(len(node_wave), gm.n_columns, -1)[:, :, sel]
        models = np.tensordot(mix, cols, axes=1)                  # (n_bins, n_columns, n_pix)
        # A uniform background is always fitted here: a sky residual under the group would
        # otherwise pull the PSF's wings.
        f, _ = solve_layers(np.where(ok, dimg, np.nan), dvar, models, nonneg=cfg.nonneg,
                            background=True, signed=np.arange(gm.n_columns) >= K)
        f = np.nan_to_num(f)
        n_params.append(f.size)
        fit = np.einsum("bk,bkp->bp", f[:, :gm.n_columns], models) + f[:, -1:]
        return float(np.sum(np.where(ok, (dimg - fit) ** 2 / np.where(ok, dvar, 1.0), 0.0)))

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
    binned = _BinnedGroup(z1 - z0, region, refine)
    for c0 in range(z0, z1, 512):
        data, dvar = cube.window(bx0, bx1, by0, by1, c0, min(c0 + 512, z1), with_var=refine)
        binned.add(c0 - z0, data, dvar)
    spectrum = binned.spectrum
    centres = None
    if cfg.fit_centres and images.white is not None and cfg.model == "profile":
        # With an ancillary image the centres are fitted on the cube's own white light: the
        # image's astrometry and sampling are not the cube's, and a model 0.02″ off the cube's
        # light leaks its neighbour into a faint member.
        white = _build_group_model(members, box, region, x, y, segments, images.white, psf,
                                   node_wave, wave, pixscale, cfg, spectrum)
        centres = white.layout[2]
    gm = _build_group_model(members, box, region, x, y, segments, images, psf, node_wave,
                            wave, pixscale, cfg, spectrum, centres=centres)
    psf_scale = 1.0
    if refine and gm.layout is not None:
        psf, psf_scale, note = _refine_psf(binned, gm.layout, members, box, region, x, y, segments,
                                           images, psf, node_wave, wave, pixscale, cfg)
        if psf_scale != 1.0:
            # Same components as with the given PSF: narrowing it must not turn a compact
            # source into a "resolved" one with broad components.
            gm = _build_group_model(members, box, region, x, y, segments, images, psf, node_wave,
                                    wave, pixscale, cfg, spectrum, gm.layout)
            for i in members:
                gm.notes[i].append(note)
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
    for s0, s1, d, v, models in blocks():
        m = models[:, :, sel]
        if ncol > K:
            d = d - np.einsum("lg,lgp->lp", grad[s0:s1], m[:, K:])
        f, cov = solve_layers(d, v, m[:, :K], nonneg=cfg.nonneg, background=cfg.background)
        flux[s0:s1] = f[:, :K]
        var[s0:s1] = np.einsum("lkk->lk", cov)[:, :K]
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
    _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit)


def _store_group(results, members, gm, box, flux, var, cfg, psf, psf_scale, meta_fit):
    """The members' DEBLEND spectra, model images and header keywords."""
    K = len(members)
    for k, i in enumerate(members):
        res = results[i]
        meta = {"DBGROUP": (res.group, "deblending group"),
                "DBNGROUP": (K, "sources fitted together"),
                "DBMODEL": (cfg.model, "spatial model kind"),
                "DBSOLVER": (cfg.solver if gm.parts is not None else "image",
                             "joint: spectra and morphology fitted together"),
                "DBNONNEG": (bool(cfg.nonneg), "fluxes constrained >= 0"),
                "DBBKG": (bool(cfg.background), "uniform background fitted"),
                "PSFSRC": (psf.source, "PSF from header, given or fitted"),
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
    (:func:`ifu_extract.deblend_models.joint_fit`); the model added to *model_cube*."""
    from .deblend_models import POOR_CHI2, GroupComponents, hat_weights, joint_fit

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
            gm.notes[i].append(f"{int(res.clipped[k])} channels below -4 sigma refitted with fluxes >= 0")
        if res.chi2[k] > POOR_CHI2:
            gm.notes[i].append(f"poor model: chi2/dof {res.chi2[k]:.2f}")
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
    def _fin(v):  # FITS headers hold no NaN: -1 when the cube has no variance
        return round(float(v), 4) if np.isfinite(v) else -1.0

    meta = {"DBCHI2": ([_fin(v) for v in res.chi2], "chi2/dof on its own spaxels (-1: no STAT)"),
            "DBGCHI2": (_fin(res.chi2_group), "chi2/dof of the fit over the group"),
            "DBPOOR": ([bool(v > POOR_CHI2) for v in res.chi2], f"model poor: DBCHI2 > {POOR_CHI2}"),
            "DBNCLIP": ([int(v) for v in res.clipped], "channels refitted with fluxes >= 0"),
            "DBNITER": (int(res.iterations), "joint fit iterations")}
    return res.flux, res.var, meta


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


# ------------------------------------------------------------------------------ outputs
#: Columns of ``OUTDIR/deblend.tsv``.
DEBLEND_COLUMNS = ("ID", "RA", "DEC", "STATUS", "GROUP", "GROUP_SIZE", "GROUP_IDS", "SNR_MEDIAN",
                   "FLUX_MEDIAN", "LINE_WAVE", "LINE_SNR", "FILE", "NOTES")


def _cube_wcs_header(cube: Cube, z0: int) -> fits.Header:
    """3-D WCS cards of the cube for channels from *z0* on, and BUNIT."""
    from .wcsutil import wcs_cards

    hdr = wcs_cards(cube.data_header, cube.primary_header if cube.data_ext != 0 else None)
    hdr["CRPIX3"] = float(hdr.get("CRPIX3", 1.0)) - z0
    if cube.unit_string:
        hdr["BUNIT"] = (cube.unit_string, "flux unit, per spaxel")
    return hdr


class CubeWriter:
    """A FITS cube file (PRIMARY + float32 image extensions) filled in place through memory maps.

    The file is created sparse at its final size (headers first, data zero), so neither the
    model nor the residual cube is ever held in memory.  Written to a temporary name and
    renamed by :meth:`close` (call :meth:`abort` on failure).
    """

    def __init__(self, path, cube: Cube, z0: int, z1: int, names=("DATA",), *, tool="deblend",
                 inputs=None, params=None, product=""):
        from .fitsout import add_provenance, temp_path
        from .identity import stamp
        from .pathguard import refuse_input

        self.path = Path(path)
        refuse_input(self.path)  # never replace an input of the command
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(self.path, "the output folder does not exist", "create it first")
        shape = (z1 - z0, cube.ny, cube.nx)
        prim = fits.Header()
        prim["SIMPLE"] = True
        prim["BITPIX"] = 8
        prim["NAXIS"] = 0
        prim["EXTEND"] = True
        add_provenance(prim, tool, inputs, params)
        stamp(prim, cube)  # the cube it models: checkable by whoever uses it with a cube
        if product:
            prim["IFXPROD"] = (product, "ifu-extract product")
        base = _cube_wcs_header(cube, z0)
        self._tmp = temp_path(self.path, ".fits")   # named after this process: see fitsout
        nbytes = 4 * int(np.prod(shape))
        padded = -(-nbytes // 2880) * 2880
        offsets = []
        with open(self._tmp, "wb") as fh:
            fh.write(prim.tostring().encode("ascii"))
            for name in names:
                h = fits.Header()
                h["XTENSION"] = "IMAGE"
                h["BITPIX"] = -32
                h["NAXIS"] = 3
                h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = shape[2], shape[1], shape[0]
                h["PCOUNT"] = 0
                h["GCOUNT"] = 1
                h["EXTNAME"] = name
                h.extend(base)
                if name == "STAT" and cube.unit is not None:
                    h["BUNIT"] = ((cube.unit ** 2).to_string("fits"), "variance unit, per spaxel")
                fh.write(h.tostring().encode("ascii"))
                offsets.append(fh.tell())
                fh.seek(fh.tell() + padded)
            fh.truncate(fh.tell())
        self.arrays = {name: np.memmap(self._tmp, dtype=">f4", mode="r+", offset=off, shape=shape)
                       for name, off in zip(names, offsets)}

    def close(self) -> Path:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.arrays.clear()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def write_residual_cube(cube: Cube, model: np.ndarray, path, z0: int, z1: int, *, inputs=None) -> Path:
    """``DATA - model`` (and the cube's STAT) over channels ``z0:z1``, with the cube's 3-D WCS."""
    names = ("DATA", "STAT") if cube.has_var else ("DATA",)
    out = CubeWriter(path, cube, z0, z1, names, inputs=inputs, product="DEBLEND_RESIDUAL")
    try:
        for zs, data, var in cube.iter_planes(z0, z1):
            ze = zs + data.shape[0]
            out.arrays["DATA"][zs - z0:ze - z0] = data - model[zs - z0:ze - z0]
            if var is not None:
                out.arrays["STAT"][zs - z0:ze - z0] = var
    except BaseException:
        out.abort()
        raise
    return out.close()


def _stamp_of(image, box, stamp_box_):
    """*image* on *box* moved to *stamp_box_* (zero outside)."""
    sx0, sx1, sy0, sy1 = box
    dx0, dx1, dy0, dy1 = stamp_box_
    out = np.zeros((dy1 - dy0, dx1 - dx0), dtype=np.float32)
    ix0, ix1, iy0, iy1 = max(sx0, dx0), min(sx1, dx1), max(sy0, dy0), min(sy1, dy1)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - dy0:iy1 - dy0, ix0 - dx0:ix1 - dx0] = image[iy0 - sy0:iy1 - sy0, ix0 - sx0:ix1 - sx0]
    return out


def write_deblend(result: DeblendResult, cube: Cube, catalog: Table, outdir, *, size: float = 5.0,
                  inputs: dict | None = None) -> list[dict]:
    """Store the ``DEBLEND`` spectra in the objects' Source files and write ``deblend.tsv``.

    An existing ``OUTDIR/sources/<ID>.fits`` (from ``extract``) gets ``SPE_DEBLEND_*`` on its own
    wavelength grid and ``IMA_DEBLEND`` (the object's model in the model image) on its stamp;
    otherwise a new Source file is written with a stamp of *size* arcsec.

    Returns
    -------
    list of dict
        One row per catalogue ID (:data:`DEBLEND_COLUMNS`).
    """
    from .catalog import write_catalog
    from .fitsout import ensure_dir, file_checksum
    from .sourcefile import source_layout, stamp_wcs_for, update_source, write_source
    from .wcsutil import stamp_box

    outdir = ensure_dir(outdir)
    ensure_dir(Path(outdir) / "sources")
    z0, z1 = result.channels
    checksum = None
    rows = []
    for src in result.sources:
        row = catalog[src.row]
        rec = {"ID": src.id, "RA": float(row["RA"]) if np.isfinite(float(row["RA"])) else np.nan,
               "DEC": float(row["DEC"]) if np.isfinite(float(row["DEC"])) else np.nan,
               "STATUS": src.status, "GROUP": int(src.group), "GROUP_SIZE": len(src.group_ids),
               "GROUP_IDS": ",".join(src.group_ids), "SNR_MEDIAN": np.nan, "FLUX_MEDIAN": np.nan,
               "LINE_WAVE": np.nan, "LINE_SNR": np.nan, "FILE": "", "NOTES": "; ".join(src.notes)}
        if src.spectrum is None:
            rows.append(rec)
            continue
        sp = src.spectrum
        with np.errstate(invalid="ignore", divide="ignore"):
            rec["SNR_MEDIAN"] = float(np.nanmedian(sp.flux / np.sqrt(sp.var)))
            rec["FLUX_MEDIAN"] = float(np.nanmedian(sp.flux))
        # The strongest emission line of the deblended spectrum: a quick look that shows whose
        # line it is once the neighbour's light is fitted out.
        line = strongest_emission_line(cube.wave[z0:z1], sp.flux, sp.var, medium=cube.medium)
        if line is not None:
            rec["LINE_WAVE"], rec["LINE_SNR"] = line.wave, line.snr
        from .catalog import file_stem

        path = Path(outdir) / "sources" / f"{file_stem(src.id)}.fits"
        keywords = {"DBSTATUS": (src.status[:68], "deblend status"),
                    "DBGROUP": (int(src.group), "deblending group"),
                    "DBGRPIDS": (",".join(src.group_ids)[:68], "members of the group")}
        try:
            if path.exists():
                layout = source_layout(path, cube)
                if layout.channels is None:
                    s0, s1 = z0, z1
                else:
                    s0, s1 = layout.channels
                if s0 < z0 or s1 > z1:
                    raise InputError(path, f"its spectra cover channels {s0}-{s1}, the deblending "
                                     f"{z0}-{z1}", "deblend over the same --wave-range as extract")
                spec = Spectrum1D(sp.flux[s0 - z0:s1 - z0], sp.var[s0 - z0:s1 - z0], sp.meta)
                images = {}
                if layout.box is not None:
                    images["DEBLEND"] = (_stamp_of(src.model_image, src.box, layout.box), None)
                update_source(path, spectra={"DEBLEND": spec}, images=images, keywords=keywords,
                              tool="deblend")
            else:
                if checksum is None:
                    checksum = file_checksum(cube.path)
                box = stamp_box(src.x, src.y, size, cube.pixscale)
                spec_hdr = cube.spectral_header()
                spec_hdr["CRPIX1"] = spec_hdr["CRPIX1"] - z0
                keywords.update({"X": (float(src.x), "[pix] 0-based cube x"),
                                 "Y": (float(src.y), "[pix] 0-based cube y"),
                                 "STATUS": (src.status[:68], "ok or the fallback used")})
                write_source(path, obj_id=src.id, ra=rec["RA"], dec=rec["DEC"], cube_name=cube.path.name,
                             cube_version=str(cube.primary_header.get("DATE", "")), cube_checksum=checksum,
                             spec_header=spec_hdr, flux_unit=cube.unit_string, spectra={"DEBLEND": sp},
                             images={"DEBLEND": (_stamp_of(src.model_image, src.box, box), None)},
                             masks={}, stamp_wcs=stamp_wcs_for(cube.wcs, box), keywords=keywords,
                             inputs=inputs)
            rec["FILE"] = f"sources/{path.name}"
        except InputError as exc:
            rec["STATUS"] = f"failed: {exc.oneline()}"[:200]
            warn_object(src.id, exc.oneline())
        rows.append(rec)
    types = (str, float, float, str, int, int, str, float, float, float, float, str, str)
    tab = Table(rows=[[r[c] for c in DEBLEND_COLUMNS] for r in rows], names=DEBLEND_COLUMNS, dtype=types) \
        if rows else Table(names=DEBLEND_COLUMNS, dtype=types)
    for col in ("RA", "DEC"):
        tab[col].format = ".7f"
    tab["SNR_MEDIAN"].format = ".3f"
    tab["FLUX_MEDIAN"].format = ".6g"
    tab["LINE_WAVE"].format = ".2f"
    tab["LINE_SNR"].format = ".1f"
    write_catalog(tab, Path(outdir) / "deblend.tsv", "tsv")
    return rows


def run_deblend(cube_path, catalog: Table, outdir, *, masks_path=None, segmap_path=None,
                image_path=None, psf: PSFModel | None = None, fwhm=None, fwhm_red=None, beta=None,
                psf_kind="moffat", psf_star: str | None = None, config: DeblendConfig | None = None,
                wave_range=None, model_cube_path=None, residual_cube_path=None, size: float = 5.0,
                cube_kwargs: dict | None = None, progress=None) -> list[dict]:
    """The ``deblend`` step: files in, Source files and ``deblend.tsv`` out (used by ``run``).

    Parameters
    ----------
    cube_path : str or os.PathLike
    catalog : astropy.table.Table
        From :func:`~ifu_extract.catalog.read_catalog`.
    outdir : str or os.PathLike
        Output folder (``sources/<ID>.fits`` are updated or created; ``deblend.tsv``).
    masks_path : str or os.PathLike, optional
        ``MASKS.fits``: its first ``SEGMAP`` gives the segments (wins over *segmap_path*).
    segmap_path : str or os.PathLike, optional
        A segmentation map (reprojected to the cube grid when needed).
    image_path : str or os.PathLike, optional
        Ancillary model image (FITS with WCS), resampled to the cube grid; default: the cube's
        white light.
    psf, fwhm, fwhm_red, beta, psf_kind : optional
        See :func:`resolve_psf`.
    psf_star : str, optional
        Catalogue ID of a star to fit the PSF on when neither a FWHM nor FSF keywords exist.
    config : DeblendConfig, optional
    wave_range : (float, float), optional
        Angstrom.
    model_cube_path, residual_cube_path : str or os.PathLike, optional
        Write the model cube (sum of all fitted sources) and ``cube - model`` here.
    size : float
        Stamp side (arcsec) of Source files created here.
    cube_kwargs : dict, optional
    progress : callable, optional
        Called with the number of groups done.

    Returns
    -------
    list of dict
        The rows of ``deblend.tsv``.

    Raises
    ------
    InputError
        Unreadable inputs, or a PSF that cannot be determined (one line).
    """
    from .cubeio import open_cube
    from .fitsout import ensure_dir

    cfg = config or DeblendConfig()
    ensure_dir(outdir)
    with open_cube(cube_path, **(cube_kwargs or {})) as cube:
        star = None
        if psf_star is not None:
            ids = [str(v) for v in catalog["ID"]]
            if str(psf_star) not in ids:
                raise InputError("--psf-star", f"ID {psf_star!r} is not in the catalogue",
                                 "give the ID of a star listed in CATALOG")
            r = catalog[ids.index(str(psf_star))]
            star = world_to_pixel(cube.wcs, float(r["RA"]), float(r["DEC"]))
        psf = resolve_psf(cube, psf=psf, fwhm=fwhm, fwhm_red=fwhm_red, beta=beta, kind=psf_kind, star=star,
                          candidates=catalog_candidates(cube, catalog))
        seg = None
        if masks_path is not None:
            from .masks import read_masks

            from .identity import check_product

            _, masks = read_masks(masks_path)
            with masks:
                check_product(masks.header, masks_path, cube, cube_path, what="masks file")
                seg = masks.segmap(1)
        elif segmap_path is not None:
            from .segmap import read_segmap, segmap_on_grid

            seg, _, _ = segmap_on_grid(read_segmap(segmap_path), cube.wcs, (cube.ny, cube.nx))
        image = None
        if image_path is not None:
            from .image import read_image
            from .weights import resample_to_cube

            img = read_image(image_path)
            if img.wcs is None:
                raise InputError(image_path, "has no celestial WCS, so it cannot be aligned with the cube",
                                 "give an image with RA/Dec WCS keywords")
            image = resample_to_cube(img, cube)
            if not np.isfinite(image).any():
                raise InputError(image_path, "does not overlap the cube", "give an image of the same field")
        z0, z1 = cube.channel_range(*(wave_range or (None, None)))
        inputs = {"cube": cube_path, "masks": masks_path, "segmap": segmap_path, "image": image_path}
        writer = None
        model = None
        if model_cube_path is not None or residual_cube_path is not None:
            # The model is accumulated in a memory-mapped file (the output, or a scratch file
            # next to the residual cube), never in memory.
            writer = CubeWriter(model_cube_path or residual_cube_path, cube, z0, z1, ("DATA",),
                                inputs=inputs, product="DEBLEND_MODEL")
            model = writer.arrays["DATA"]
        try:
            result = deblend_catalog(cube, catalog, psf, image=image, image_is_cube=image is None,
                                     segmap=seg, config=cfg, wave_range=wave_range, model_cube=model,
                                     progress=progress)
            if residual_cube_path is not None:
                write_residual_cube(cube, model, residual_cube_path, z0, z1, inputs=inputs)
            if writer is not None and model_cube_path is not None:
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.abort()
        return write_deblend(result, cube, catalog, outdir, size=size, inputs=inputs)

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
wide wavelength bins, :func:`~ifu_extract.deblend.psfrefine.refine_group_psf`): a PSF too
broad cannot be compensated by the model (nothing is sharper than the PSF) and overestimates
compact sources, while a PSF too narrow is widened by the intrinsic components, so only
narrowing is measured and applied.
The factor is written as ``DBPSFSCL`` with each spectrum.

Joint fit (default, ``DeblendConfig.solver="joint"``)
----------------------------------------------------
The "profile" components above only start the fit: the members' centres are fitted on the
cube's white light, then the spectra and the components' amplitudes are fitted together on the
cube (:mod:`ifu_extract.deblend.joint`, which also writes χ²/dof and the poor-model flag), and
channels where a source's flux falls below -4 sigma are re-solved with fluxes >= 0 (issue 15).

Everything is deterministic: no random numbers, groups and members in catalogue order.
Arrays are ``(n_wave, ny, nx)``; images ``(ny, nx)`` with x the fast axis; pixel positions are
0-based.
"""

from __future__ import annotations

from ..psf import fit_psf_on_star
from .config import MODELS, DeblendConfig, DeblendResult, SourceResult
from .driver import deblend_catalog
from .groups import find_groups
from .psfrefine import resolve_psf
from .solver import solve_layers
from .writers import DEBLEND_COLUMNS, model_accumulator, write_deblend, write_model_cube, write_residual_cube

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
    "write_model_cube",
    "write_residual_cube",
    "model_accumulator",
    "DEBLEND_COLUMNS",
]

"""Options, tuning constants and result types of the deblending (:mod:`ifu_extract.deblend`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..estimators import Spectrum1D
from ..psf import PSFModel

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
#: PSF refinement (see :func:`~ifu_extract.deblend.psfrefine.refine_group_psf`): at most
#: REFINE_BINS wavelength bins of at least REFINE_BIN_MIN channels; trial FWHM factors from
#: REFINE_LOWEST to 1 in steps of REFINE_STEP; the χ² difference that counts (3 sigma for one
#: parameter).
REFINE_BINS = 10
REFINE_BIN_MIN = 20
REFINE_LOWEST = 0.70
REFINE_STEP = 0.05
REFINE_MIN_DCHI2 = 9.0
#: Centre fitting (:func:`ifu_extract.deblend.joint.refine_centres`): a member's centre is
#: fitted unless a member within CENTRE_NEAR spaxels is more than 1/CENTRE_MIN_RATIO times
#: brighter.  A faint neighbour 15-25 times fainter is fitted too: left 0.05″ off its light it
#: took 14 % of the bright galaxy's light (bench/README.md, hard-0.8-r15-off), fitted 3 %.
CENTRE_NEAR = 10.0
CENTRE_MIN_RATIO = 0.02
#: Smallest sigma (spaxels) of the components that share a sharp ancillary image's light out
#: (:func:`ifu_extract.deblend.models._image_templates`); the image's own PSF when larger.
IMAGE_MIN_SIGMA = 0.25
#: Default of :attr:`DeblendConfig.image_shrink`: a sharp image's departures from the members'
#: smooth models, smoothed to the cube's PSF, are soft-thresholded at this many σ before the
#: templates share the image out (:func:`ifu_extract.deblend.models._shrink_residual`).
RESID_SHRINK = 2.0
#: Members below this S/N in a sharp ancillary image get their model from the cube's white
#: light instead (:func:`ifu_extract.deblend.driver._faint_in_image_from_cube`).
IMAGE_MIN_SNR = 5.0
#: With a sharp ancillary image, compact members keep the shape fitted on it in the joint fit.
IMAGE_FIXES_COMPACT = True


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
        Largest group fitted at once; larger groups are cut into parts of at most this many
        members (:func:`~ifu_extract.deblend.groups.split_large_groups`), each member noted.
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
        (see :func:`~ifu_extract.deblend.psfrefine.refine_group_psf`; "profile" models of a cube
        with variance).  FSF keywords, or a PSF fitted on a star elsewhere in the field, are
        often a few per cent off; a FWHM 5 % too broad overestimates a point source's flux by
        ~6 % and leaks a bright neighbour into it.
    block : int
        Largest number of channels solved at once (the memory is bounded by
        ``block x components x spaxels`` floats).
    solver : {"joint", "image"}
        "profile" models: ``"joint"`` fits the spectra and the members' component amplitudes
        together on the cube (:mod:`ifu_extract.deblend.joint`), a resolved source's core and
        envelope with their own spectra; ``"image"`` keeps the amplitudes fitted on the model
        image (the previous release's solver, with the gradient shapes above).
    fit_centres : bool
        Fit the centres of the members that dominate their surroundings on the cube's white
        light (:func:`ifu_extract.deblend.joint.refine_centres`) instead of using the
        catalogue positions as they are.
    image_shrink : float
        A sharp ancillary image's departures from the members' smooth models are kept where
        they are significant on the cube's PSF scale, soft-thresholded at this many σ
        (:func:`~ifu_extract.deblend.models._shrink_residual`); 0 keeps the image's pixels as
        they are.  With the cube's variance, each group keeps whichever of the two fits its
        binned data better (:func:`~ifu_extract.deblend.driver._solve_group`).
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
    image_templates: bool = True
    image_shrink: float = RESID_SHRINK


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

"""The ``mask`` step: object and sky masks of every catalogue object, written as a masks file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import read_catalog
from ..cubeio import open_cube
from ..identity import cube_identity
from ..image import white_for_cube
from ..masks import (DEFAULT_MATCH_RADIUS, DEFAULT_SIZE, DEFAULT_SKY_GROW, BuiltMasks, make_masks,
                     write_masks)
from ..segmap import DEFAULT_MIN_COVERAGE
from ._outputs import check_writable

__all__ = ["MaskConfig", "MaskResult", "run_mask"]


@dataclass
class MaskConfig:
    """Parameters of :func:`~ifu_extract.masks.build.build_masks` and of the inputs.

    Attributes
    ----------
    size : float
        Full side of each object's box, arcsec (a catalogue SIZE column wins).
    mode : {"union", "inter"}
    fwhm : float or None
        PSF FWHM, arcsec (None: from the cube or fitted, see
        :func:`~ifu_extract.masks.build.resolve_fwhm`).
    fallback_fwhm : float or None
        PSF FWHM, arcsec, used only when the cube has no FSF keywords and no star could be fitted.
    match_radius : float
        Arcsec.
    sky_grow : int
        Spaxels.
    min_coverage : float
        Area share (0-1] for reprojected maps.
    split, voronoi : bool
    catalog_format : str
    cube_kwargs : dict
        ``data_ext``/``var_ext``/``dq_ext`` for :func:`~ifu_extract.cubeio.open_cube`.
    """

    size: float = DEFAULT_SIZE
    mode: str = "union"
    fwhm: float | None = None
    fallback_fwhm: float | None = None
    match_radius: float = DEFAULT_MATCH_RADIUS
    sky_grow: int = DEFAULT_SKY_GROW
    min_coverage: float = DEFAULT_MIN_COVERAGE
    split: bool = True
    voronoi: bool = False
    catalog_format: str = "auto"
    cube_kwargs: dict = field(default_factory=dict)

    def params(self) -> dict:
        """The parameters recorded in the file's provenance (None left out)."""
        params = {"size": self.size, "mode": self.mode, "fwhm": self.fwhm, "fallback_fwhm": self.fallback_fwhm,
                  "match_radius": self.match_radius, "sky_grow": self.sky_grow,
                  "min_coverage": self.min_coverage, "split": self.split, "voronoi": self.voronoi}
        return {k: v for k, v in params.items() if v is not None}


@dataclass
class MaskResult:
    """What :func:`run_mask` wrote.

    Attributes
    ----------
    output : pathlib.Path or None
        The masks file (None when no object could be masked: nothing is written).
    masks : BuiltMasks
    n_objects : int
        Catalogue rows.
    """

    output: Path | None
    masks: BuiltMasks
    n_objects: int

    @property
    def n_masked(self) -> int:
        return self.masks.n_masked

    def count(self, used: str) -> int:
        """Objects whose mask is *used* (``"union"``, ``"inter"``, ``"circle"``)."""
        return int((self.masks.objects["MASKUSED"] == used).sum())


def run_mask(cube, catalog, segmaps, output, config: MaskConfig | None = None, *,
             white=None) -> MaskResult:
    """Masks of every object of *catalog* on the grid of *cube*, written to *output*.

    Parameters
    ----------
    cube, catalog : str or os.PathLike
    segmaps : sequence of str or os.PathLike
        Segmentation maps (none: every object gets a PSF circle).
    output : str or os.PathLike
        The masks file (:mod:`ifu_extract.masks.io`); not written when no catalogue row could
        be masked.
    config : MaskConfig
    white : str or os.PathLike, optional
        White-light image of this cube (saves a pass over the cube).

    Raises
    ------
    OutputError
        The output folder is missing or not writable (checked before the work).
    InputError
        An input is unusable.
    """
    config = config or MaskConfig()
    check_writable({"output": output})  # before the work is done, not after
    table = read_catalog(catalog, config.catalog_format)
    with open_cube(cube, **config.cube_kwargs) as c:
        white_img = white_for_cube(c, white).data if white else None
        built = make_masks(c, table, segmaps, min_coverage=config.min_coverage, size=config.size,
                           mode=config.mode, fwhm=config.fwhm, fallback_fwhm=config.fallback_fwhm,
                           match_radius=config.match_radius,
                           sky_grow=config.sky_grow, split=config.split, voronoi=config.voronoi,
                           white=white_img)
        built.meta.update(cube_identity(c))  # extract checks the masks against its cube
    if len(table) and not built.n_masked:
        return MaskResult(None, built, len(table))  # all or nothing: no file of no masks
    inputs = {"cube": cube, "catalog": catalog}
    inputs.update({f"segmap{k}": s for k, s in enumerate(segmaps, start=1)})
    path = write_masks(built, output, inputs=inputs, params=config.params())
    return MaskResult(path, built, len(table))

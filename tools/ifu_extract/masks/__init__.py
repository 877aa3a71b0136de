"""Object and sky masks from segmentation maps (the ``mask`` step), and the masks file.

* :mod:`ifu_extract.masks.build`: the algorithm (segment matching, splitting of shared segments,
  PSF-circle fallbacks, sky), :func:`make_masks` / :func:`build_masks` -> :class:`BuiltMasks`;
* :mod:`ifu_extract.masks.io`: the masks file (format version 2: one ``OBJECTS`` table with
  variable-length mask columns), :func:`write_masks`, :func:`read_masks`;
* :mod:`ifu_extract.masks.maskset`: what :func:`read_masks` gives, :class:`MaskSet` and
  :class:`ObjectMasks`;
* :mod:`ifu_extract.masks.legacy`: reading files of format version 1 (one HDU per mask).
"""

from ..box import reframe
from .build import (DEFAULT_MATCH_RADIUS, DEFAULT_SIZE, DEFAULT_SKY_GROW, MODES, BuiltMasks,
                    GridSegmap, build_masks, make_masks, prepare_segmaps)
from .io import FORMAT_VERSION, copy_masks, read_masks, write_masks
from .maskset import MaskSet, ObjectMasks, object_mask

__all__ = [
    "MODES",
    "DEFAULT_SIZE",
    "DEFAULT_MATCH_RADIUS",
    "DEFAULT_SKY_GROW",
    "FORMAT_VERSION",
    "GridSegmap",
    "BuiltMasks",
    "ObjectMasks",
    "MaskSet",
    "prepare_segmaps",
    "build_masks",
    "make_masks",
    "write_masks",
    "read_masks",
    "copy_masks",
    "object_mask",
    "reframe",
]

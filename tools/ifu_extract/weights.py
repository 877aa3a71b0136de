"""Ancillary images (e.g. HST) as extraction weights, resampled to the cube grid."""

from __future__ import annotations

import re

import numpy as np

from .errors import InputError, ParameterError
from .image import read_image
from .wcsutil import same_grid

__all__ = ["load_weight_images", "resample_to_cube"]

_TAG = re.compile(r"^[A-Z0-9_]+$")


def resample_to_cube(image, cube) -> np.ndarray:
    """Image flux resampled onto the cube's celestial grid (area-weighted, ``reproject_exact``).

    Parameters
    ----------
    image : ifu_extract.image.Image
        Must have a celestial WCS.
    cube : ifu_extract.cubeio.Cube
    """
    if same_grid(image.wcs, image.shape, cube.wcs, (cube.ny, cube.nx)):
        return image.data.astype(np.float32)
    from reproject import reproject_exact

    out, footprint = reproject_exact((np.nan_to_num(image.data), image.wcs), cube.wcs,
                                     shape_out=(cube.ny, cube.nx), parallel=False)
    out[footprint <= 0] = np.nan
    return out.astype(np.float32)


def load_weight_images(specs, cube) -> dict:
    """Parse ``TAG=FILE`` options and return ``{TAG: (ny, nx) image on the cube grid}``."""
    out = {}
    for spec in specs or ():
        if "=" not in spec:
            raise ParameterError("{weight_images} " + spec, "expects TAG=FILE",
                                 "e.g. {weight_images} HST_F606W=f606w.fits", params=("weight_images",))
        tag, path = spec.split("=", 1)
        tag = tag.strip().upper()
        if not _TAG.match(tag) or tag.startswith(("MUSE_", "MASK_")):
            raise ParameterError("{weight_images} " + spec, f"tag {tag!r} must be letters, digits and _ "
                                 "and not start with MUSE_ or MASK_", "e.g. HST_F606W",
                                 params=("weight_images",))
        img = read_image(path)
        if img.wcs is None:
            raise InputError(path, "has no celestial WCS, so it cannot be aligned with the cube",
                             "give an image with RA/Dec WCS keywords")
        out[tag] = resample_to_cube(img, cube)
        if not np.isfinite(out[tag]).any():
            raise InputError(path, "does not overlap the cube", "give an image of the same field")
    return out

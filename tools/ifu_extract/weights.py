"""Ancillary images (e.g. HST) as extraction weights, resampled to the cube grid."""

from __future__ import annotations

import re

import numpy as np

from .errors import InputError, ParameterError
from .image import read_image
from .wcsutil import finer_wcs, pixel_scale_arcsec, same_grid

__all__ = ["fine_scale", "load_weight_images", "model_images", "resample_to_cube", "resample_to_grid"]

_TAG = re.compile(r"^[A-Z0-9_]+$")


def resample_to_cube(image, cube, scale: int = 1) -> np.ndarray:
    """Image resampled onto the cube's celestial grid (area-weighted, ``reproject_exact``), or
    onto that grid with each spaxel divided into ``scale x scale`` pixels.

    Parameters
    ----------
    image : ifu_extract.image.Image
        Must have a celestial WCS.
    cube : ifu_extract.cubeio.Cube
    scale : int
        Subdivision of the spaxels (1: the cube grid).

    Returns
    -------
    numpy.ndarray
        ``(ny * scale, nx * scale)`` float32, the mean surface brightness of *image* over each
        pixel (NaN off the image).
    """
    shape = (cube.ny * scale, cube.nx * scale)
    target = cube.wcs.celestial if scale == 1 else finer_wcs(cube.wcs, scale)
    return resample_to_grid(image, target, shape)


def resample_to_grid(image, wcs, shape) -> np.ndarray:
    """Image resampled onto any celestial grid (area-weighted, ``reproject_exact``).

    Parameters
    ----------
    image : ifu_extract.image.Image
        Must have a celestial WCS.
    wcs : astropy.wcs.WCS
        Celestial WCS of the target grid.
    shape : (int, int)
        ``(ny, nx)`` of the target grid.

    Returns
    -------
    numpy.ndarray
        ``shape`` float32, the mean surface brightness of *image* over each pixel (NaN off
        the image).
    """
    target = wcs
    if same_grid(image.wcs, image.shape, target, shape):
        return image.data.astype(np.float32)
    from reproject import reproject_exact

    out, footprint = reproject_exact((np.nan_to_num(image.data), image.wcs), target,
                                     shape_out=shape, parallel=False)
    out[footprint <= 0] = np.nan
    return out.astype(np.float32)


def fine_scale(image, cube, largest: int = 4) -> int:
    """Integer subdivision of the cube's spaxels closest to the image's own pixel size (1 when
    the image is not finer than the cube), at most *largest*."""
    ratio = cube.pixscale / pixel_scale_arcsec(image.wcs)
    return int(min(max(round(ratio), 1), largest))


def model_images(image, cube, fine: bool = True) -> tuple:
    """A sharp ancillary image on the cube's grid and, when its pixels are finer, on the finer
    grid aligned with the cube's (:func:`fine_scale`) that the deblending's image models are
    made on (:func:`ifu_extract.deblend.deblend_catalog`, ``image`` and ``image_fine``).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray or None)
        ``(ny, nx)`` and ``(ny * s, nx * s)`` (None when s is 1 or *fine* is False).
    """
    coarse = resample_to_cube(image, cube)
    scale = fine_scale(image, cube)
    return coarse, (resample_to_cube(image, cube, scale) if fine and scale > 1 else None)


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

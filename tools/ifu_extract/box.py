"""The one stamp geometry: a box of cube pixels, and moving images between boxes.

Every per-object product (cut-out, masks, Source images, PSF-fit stamps) lives on a :class:`Box`:
half-open cube-pixel ranges ``x0:x1``, ``y0:y1`` that may extend beyond the cube.  Pixels of a
box that the source array does not cover are filled (NaN for data, False for masks, 0 for
labels), so that every object's products keep their geometry near an edge.

Axis order follows numpy: images are ``(ny, nx)`` (or ``(..., ny, nx)``), x the fast axis;
pixel coordinates are 0-based.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Box", "stamp_box", "reframe"]


class Box(NamedTuple):
    """Half-open cube-pixel ranges ``x0:x1``, ``y0:y1`` (a tuple ``(x0, x1, y0, y1)``).

    Being a tuple, a box unpacks and compares like the ``(x0, x1, y0, y1)`` tuples it replaces.
    """

    x0: int
    x1: int
    y0: int
    y1: int

    @classmethod
    def around(cls, x: float, y: float, size_arcsec: float, pixscale: float) -> "Box":
        """Square box of full side *size_arcsec* centred on the spaxel holding (*x*, *y*).

        Parameters
        ----------
        x, y : float
            0-based pixel position of the object.
        size_arcsec : float
            Full side of the box, arcsec (AutoSpec's SIZE).
        pixscale : float
            Spaxel side, arcsec.
        """
        npix = max(1, int(round(size_arcsec / pixscale)))
        xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        x0, y0 = xc - npix // 2, yc - npix // 2
        return cls(x0, x0 + npix, y0, y0 + npix)

    @classmethod
    def centred(cls, x: float, y: float, half: int) -> "Box":
        """Box of side ``2 * half + 1`` spaxels centred on the spaxel holding (*x*, *y*)."""
        xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        return cls(xc - half, xc + half + 1, yc - half, yc + half + 1)

    @classmethod
    def of(cls, shape) -> "Box":
        """The box covering a whole ``(..., ny, nx)`` array."""
        ny, nx = shape[-2:]
        return cls(0, int(nx), 0, int(ny))

    @property
    def nx(self) -> int:
        return self.x1 - self.x0

    @property
    def ny(self) -> int:
        return self.y1 - self.y0

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return self.y1 - self.y0, self.x1 - self.x0

    def within(self, shape) -> bool:
        """True when the box lies entirely on a ``(..., ny, nx)`` grid."""
        ny, nx = shape[-2:]
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= nx and self.y1 <= ny

    def overlap(self, other) -> "Box | None":
        """The common part of two boxes, or None when they do not overlap."""
        ox0, ox1, oy0, oy1 = other
        box = Box(max(self.x0, ox0), min(self.x1, ox1), max(self.y0, oy0), min(self.y1, oy1))
        return box if box.x1 > box.x0 and box.y1 > box.y0 else None

    def cut(self, image: np.ndarray, fill, dtype=None) -> np.ndarray:
        """``image[..., y0:y1, x0:x1]`` of a full-grid *image*, *fill* where the box leaves it."""
        return reframe(image, Box.of(image.shape), self, fill, dtype)


def stamp_box(x: float, y: float, size_arcsec: float, pixscale: float) -> Box:
    """:meth:`Box.around`: the box every per-object product of an object uses."""
    return Box.around(x, y, size_arcsec, pixscale)


def reframe(image: np.ndarray, src_box, dst_box, fill=False, dtype=None) -> np.ndarray:
    """Move an image from box *src_box* to *dst_box* (both ``(x0, x1, y0, y1)``, cube pixels).

    Parameters
    ----------
    image : numpy.ndarray
        ``(..., ny, nx)`` on *src_box*.
    src_box, dst_box : Box or tuple
    fill
        Value of the destination pixels outside the source (False: a mask).
    dtype : numpy dtype, optional
        Of the result; default: the image's.

    Returns
    -------
    numpy.ndarray
        ``(..., dst ny, dst nx)``, a new array.
    """
    sx0, _, sy0, _ = (int(v) for v in src_box)
    dst = Box(*(int(v) for v in dst_box))
    out = np.full(image.shape[:-2] + dst.shape, fill, dtype=image.dtype if dtype is None else dtype)
    common = dst.overlap(src_box)
    if common is not None:
        ix0, ix1, iy0, iy1 = common
        out[..., iy0 - dst.y0:iy1 - dst.y0, ix0 - dst.x0:ix1 - dst.x0] = \
            image[..., iy0 - sy0:iy1 - sy0, ix0 - sx0:ix1 - sx0]
    return out

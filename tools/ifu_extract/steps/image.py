"""The ``image`` step: a white-light, band or narrow-band image of a cube, written as FITS."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cubeio import open_cube
from ..identity import cube_identity
from ..image import Image, cube_image, write_image

__all__ = ["ImageOptions", "ImageResult", "run_image"]


@dataclass
class ImageOptions:
    """The band (Angstrom): ``wave_range`` (None: the whole cube), or a continuum-subtracted
    narrow band of full width ``width`` centred on ``line``, side bands ``side_width`` wide
    (None: ``width``) ``gap`` beyond it; and ``cube_kwargs`` for the cube layout."""

    wave_range: tuple | None = None
    line: float | None = None
    width: float = 10.0
    side_width: float | None = None
    gap: float = 0.0
    cube_kwargs: dict = field(default_factory=dict)

    def params(self) -> dict:
        """The parameters recorded in the image's provenance."""
        params = {"wave_range": self.wave_range, "line": self.line,
                  "width": self.width if self.line else None}
        return {k: v for k, v in params.items() if v}


@dataclass
class ImageResult:
    """``output``: the FITS image written; ``image``: its content."""

    output: Path
    image: Image


def run_image(cube, output, options: ImageOptions | None = None) -> ImageResult:
    """Collapse *cube* into the image *options* ask for and write it to *output* (DATA and
    STAT with the celestial WCS, and the cube's identity, which ``mask``/``extract --white``
    check)."""
    opt = options or ImageOptions()
    with open_cube(cube, **opt.cube_kwargs) as c:
        img = cube_image(c, wave_range=opt.wave_range, line=opt.line, width=opt.width,
                         side_width=opt.side_width, gap=opt.gap)
        identity = cube_identity(c)
    path = write_image(img, output, "image", {"cube": cube}, opt.params(), identity=identity)
    return ImageResult(Path(path), img)

"""The ``info`` step: what a cube is, as the tools will read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cubeinfo import cube_info, format_info
from ..cubeio import open_cube

__all__ = ["InfoResult", "run_info"]


@dataclass
class InfoResult:
    """``info``: the description of :func:`~ifu_extract.cubeinfo.cube_info` (JSON-ready)."""

    info: dict = field(default_factory=dict)

    def text(self) -> str:
        """The description as the text ``info`` prints."""
        return format_info(self.info)


def run_info(cube, *, cube_kwargs: dict | None = None) -> InfoResult:
    """Describe *cube* (extensions used, shape, spaxel scale, WCS centre, wavelengths, units,
    instrument, FSF keywords); a cube with no finite voxel is described too."""
    with open_cube(cube, **(cube_kwargs or {}), require_finite=False) as c:
        return InfoResult(cube_info(c))

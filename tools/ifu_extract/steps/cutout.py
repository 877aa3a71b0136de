"""The ``cutout`` step: sub-cubes around catalogue objects or one sky position."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from astropy.table import Table

from ..catalog import catalog_from_position, read_catalog
from ..cubeio import open_cube
from ..cutout import cutout_catalog

__all__ = ["CutoutOptions", "CutoutResult", "run_cutout"]


@dataclass
class CutoutOptions:
    """Attributes: ``size`` (full side of the box, arcsec; a catalogue SIZE column wins),
    ``wave_range`` (Angstrom, or None), ``catalog_format``, ``cube_kwargs``."""

    size: float = 5.0
    wave_range: tuple | None = None
    catalog_format: str = "auto"
    cube_kwargs: dict = field(default_factory=dict)


@dataclass
class CutoutResult:
    """``outdir`` holds ``<ID>.fits`` and ``cutouts.tsv``; ``summary`` is that table."""

    outdir: Path
    summary: Table

    @property
    def n_ok(self) -> int:
        """Objects with a cut-out written."""
        return int(sum(bool(f) for f in self.summary["FILE"]))


def run_cutout(cube, outdir, *, catalog=None, position=None,
               options: CutoutOptions | None = None) -> CutoutResult:
    """Cut the sub-cube of every object of *catalog* (or of one *position*) out of *cube*.

    Parameters
    ----------
    cube : str or os.PathLike
    outdir : str or os.PathLike
    catalog : str or os.PathLike, optional
    position : (float, float, str), optional
        ``(ra, dec, id)``, degrees, instead of a catalogue.
    options : CutoutOptions
    """
    opt = options or CutoutOptions()
    if catalog is not None:
        table = read_catalog(catalog, opt.catalog_format)
    else:
        ra, dec, obj_id = position
        table = catalog_from_position(ra, dec, obj_id)
    with open_cube(cube, **opt.cube_kwargs) as c:
        summary = cutout_catalog(c, table, outdir, opt.size,
                                 tuple(opt.wave_range) if opt.wave_range else None)
    return CutoutResult(Path(outdir), summary)

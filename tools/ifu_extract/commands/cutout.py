"""``ifu-extract cutout CUBE (CATALOG | --ra --dec) -o DIR --size ARCSEC``."""

import click

from ..steps.cutout import CutoutOptions, run_cutout
from ._options import (BOX_SIZE, batch_exit, catalog_format_option, cube_kwargs, cube_options,
                       report, wave_range_option)
from ._paths import OutputPath


@click.command("cutout")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", required=False, type=click.Path(dir_okay=False))
@click.option("--ra", type=click.FloatRange(0, 360), default=None, help="Right ascension, degrees "
              "(instead of a catalogue).")
@click.option("--dec", type=click.FloatRange(-90, 90), default=None, help="Declination, degrees.")
@click.option("--id", "obj_id", default="1", show_default=True, help="ID of the --ra/--dec object.")
@click.option("-o", "--output", required=True, type=OutputPath(file_okay=False),
              help="Output folder: one <ID>.fits per object and cutouts.tsv.")
@click.option("--size", type=BOX_SIZE, default=5.0, show_default=True,
              help="Full side of the square box, arcsec (a catalogue SIZE column wins).")
@wave_range_option
@catalog_format_option
@cube_options
def cmd(cube, catalog, ra, dec, obj_id, output, size, wave_range, catalog_format, **kwargs):
    """Cut sub-cubes (DATA, STAT, full WCS) around catalogue objects or one position.

    Boxes crossing the cube edge are padded with NaN and flagged edge_partial; objects off the
    field are reported and skipped.
    """
    if (catalog is None) == (ra is None or dec is None):
        raise click.UsageError("give either a CATALOG or both --ra and --dec")
    options = CutoutOptions(size=size, wave_range=wave_range, catalog_format=catalog_format,
                            cube_kwargs=cube_kwargs(kwargs))
    result = run_cutout(cube, output, catalog=catalog,
                        position=None if catalog else (ra, dec, obj_id), options=options)
    report(f"wrote {result.n_ok} cut-outs of {len(result.summary)} objects to {output}")
    batch_exit(result.n_ok, len(result.summary))

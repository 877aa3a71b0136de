"""``ifu-extract info CUBE``."""

import json

import click

from ..cubeinfo import cube_info, format_info
from ..cubeio import open_cube
from ._options import cube_kwargs, cube_options


@click.command("info")
@click.argument("cube", type=click.Path(dir_okay=False))
@cube_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def cmd(cube, as_json, **kwargs):
    """Describe CUBE: extensions used, shape, spaxel scale, WCS centre, wavelength range and
    unit, BUNIT, instrument and FSF keywords."""
    with open_cube(cube, **cube_kwargs(kwargs), require_finite=False) as c:
        info = cube_info(c)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))

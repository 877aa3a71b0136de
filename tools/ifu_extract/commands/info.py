"""``ifu-extract info CUBE``."""

import json

import click

from ..steps.info import run_info
from ._options import cube_kwargs, cube_options


@click.command("info")
@click.argument("cube", type=click.Path(dir_okay=False))
@cube_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def cmd(cube, as_json, **kwargs):
    """Describe CUBE: extensions used, shape, spaxel scale, WCS centre, wavelength range and
    unit, BUNIT, instrument and FSF keywords."""
    result = run_info(cube, cube_kwargs=cube_kwargs(kwargs))
    click.echo(json.dumps(result.info, indent=2) if as_json else result.text())

"""``ifu-extract image CUBE -o IMAGE.fits``."""

import click

from ..steps.image import ImageOptions, run_image
from ._options import cube_kwargs, cube_options, report, wave_range_option
from ._paths import OutputPath


def image_options(func):
    """Band selection shared by ``image`` and ``detect`` (cube input)."""
    for opt in reversed([
        wave_range_option,
        click.option("--line", type=click.FloatRange(min=0, min_open=True), default=None,
                     metavar="CENTRE", help="Continuum-subtracted narrow band centred here, Angstrom."),
        click.option("--width", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True, help="Full width of the narrow band, Angstrom (with --line)."),
        click.option("--side-width", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Width of each continuum side band, Angstrom [default: --width]."),
        click.option("--gap", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Gap between the line band and each side band, Angstrom."),
    ]):
        func = opt(func)
    return func


@click.command("image")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output FITS image (DATA and STAT with the celestial WCS).")
@image_options
@cube_options
def cmd(cube, output, wave_range, line, width, side_width, gap, **kwargs):
    """Collapse CUBE into a white-light, band, or continuum-subtracted narrow-band image."""
    if line is not None and wave_range:
        raise click.UsageError("--line and --wave-range are exclusive")
    options = ImageOptions(wave_range=wave_range, line=line, width=width, side_width=side_width,
                           gap=gap, cube_kwargs=cube_kwargs(kwargs))
    img = run_image(cube, output, options).image
    report(f"wrote {output} ({img.meta['IMGTYPE'][0]} image, {img.shape[1]} x {img.shape[0]} spaxels)")

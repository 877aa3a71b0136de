"""``ifu-extract contsub CUBE -o OUT.fits [--continuum CONT.fits]``."""

import click

from ..contsub import METHODS, ContsubConfig
from ..steps.contsub import run_contsub
from ._options import cube_kwargs, cube_options, progress_bar, report, wave_range_option
from ._paths import OutputPath


@click.command("contsub")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output FITS cube: DATA = CUBE minus its continuum, STAT = the variance of "
                   "CUBE, float32, with the full 3-D WCS.")
@click.option("--continuum", "continuum_output", type=OutputPath(dir_okay=False), default=None,
              help="Also write the continuum model cube (DATA) to this FITS file.")
@click.option("--method", type=click.Choice(METHODS), default="poly", show_default=True,
              help="Continuum model per spaxel: 'poly' = polynomial fitted with variance "
                   "weights and sigma clipping (AutoSpec's CONT_POLY); 'median' = running median "
                   "along wavelength.")
@click.option("--degree", type=click.IntRange(min=0), default=5, show_default=True,
              help="Polynomial degree (poly); must be below the number of channels.")
@click.option("--clip-sigma", type=click.FloatRange(min=1.0), default=3.0, show_default=True,
              help="Reject channels whose residual exceeds this many sigma (noise from the "
                   "variance, scaled by the spaxel's residual scatter), then refit (poly).")
@click.option("--clip-iters", type=click.IntRange(min=0), default=3, show_default=True,
              help="Maximum number of clipping rounds (poly); 0 fits once without clipping.")
@click.option("--median-width", type=click.FloatRange(min=0, min_open=True), default=150.0,
              show_default=True,
              help="Full width of the running-median window, Angstrom (median); make it several "
                   "times wider than the broadest line.")
@click.option("--mask-window", "mask_windows", type=(float, float), multiple=True,
              metavar="MIN MAX",
              help="Leave this wavelength window (Angstrom) out of the continuum fit, e.g. a "
                   "strong line or sky residual; repeatable.")
@wave_range_option
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Blocks of spaxels processed in parallel (the result does not depend on it).")
@cube_options
def cmd(cube, output, continuum_output, method, degree, clip_sigma, clip_iters, median_width,
        mask_windows, wave_range, threads, **kwargs):
    """Subtract the continuum of every spaxel of CUBE (all spaxels fitted at once).

    With --wave-range only the channels inside are fitted and written.  STAT is copied
    unchanged (the continuum model's own error, ~(degree+1)/channels of the variance, is
    neglected).
    """
    cfg = ContsubConfig(method=method, degree=degree, clip_sigma=clip_sigma, clip_iters=clip_iters,
                        median_width=median_width, mask_windows=tuple(mask_windows),
                        wave_range=tuple(wave_range) if wave_range else None)
    with progress_bar("contsub: rows") as progress:
        result = run_contsub(cube, output, continuum=continuum_output, config=cfg,
                             threads=threads, progress=progress, cube_kwargs=cube_kwargs(kwargs))
    if result.n_failed:
        click.echo(f"warning: {result.n_failed} of {result.n_spaxels} spaxels with data have too "
                   "few usable channels for a continuum; they are NaN in the output", err=True)
    model = (f"degree-{degree} polynomial, {clip_sigma:g}-sigma clipping x{clip_iters}"
             if method == "poly" else f"{median_width:g} Angstrom running median")
    extra = f" and {result.continuum}" if result.continuum else ""
    z0, z1 = result.channels
    report(f"wrote {result.output}{extra} ({model}; {result.n_spaxels} spaxels, "
           f"{z1 - z0} channels)")


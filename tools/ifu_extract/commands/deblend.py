"""``ifu-extract deblend CUBE CATALOG --sources-out DIR --summary S.tsv [--source F...]`` (or
``-o OUTDIR``, the folder of ``extract``): model-based deblending (DEBLEND spectra)."""

import click

from ..deblend import MODELS
from ..steps.deblend import DeblendStepConfig, run_deblend
from ._options import (
    FiniteFloatRange,
    batch_exit,
    catalog_format_option,
    cube_kwargs,
    cube_name_option,
    cube_options,
    report,
    wave_range_option,
)
from ._paths import OutputPath


@click.command("deblend")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="A Source file from 'extract' or 'run', matched to its catalogue row by its ID "
                   "keyword; repeatable.  It is copied to --sources-out and DEBLEND is added to the copy.")
@click.option("--sources-out", type=OutputPath(file_okay=False), default=None,
              help="Folder of the Source files written, <ID>.fits (those of --source with DEBLEND "
                   "added, new ones for the other objects).")
@click.option("--summary", type=OutputPath(dir_okay=False), default=None,
              help="Summary table to write (TSV), with --sources-out.")
@click.option("-o", "--output", type=OutputPath(file_okay=False), default=None,
              help="Instead of --sources-out/--summary: the folder of the 'extract' step (DEBLEND "
                   "spectra added to sources/<ID>.fits, created when missing; summary in deblend.tsv).")
@click.option("--pass-through", is_flag=True, default=False,
              help="Fit nothing: only copy the --source files to --sources-out unchanged (a "
                   "workflow's off switch).")
@click.option("--masks", type=click.Path(dir_okay=False), default=None,
              help="Masks file from 'ifu-extract mask': its segmentation map gives each source's "
                   "footprint and shape.")
@click.option("--segmap", type=click.Path(dir_okay=False), default=None,
              help="Segmentation map (FITS) instead of --masks; reprojected to the cube grid.")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Sharp model image (FITS with WCS, e.g. HST): each source's light in it, "
                   "convolved with the cube's PSF, is its model [default: the cube's white light].")
@click.option("--image-fwhm", type=click.FloatRange(min=0, max=5), default=0.0, show_default=True,
              help="PSF FWHM of --image, arcsec (0: sharp compared with the cube).")
@click.option("--register-image/--no-register-image", default=True, show_default=True,
              help="Fit one offset of --image's astrometry to the cube's (the image convolved to the "
                   "cube's PSF against the white light, up to 2.5 arcsec) and remove it before the models "
                   "are made; not applied when poorly constrained.  Headers: DBIMGREG, DBIMGDX, DBIMGDY.  "
                   "Relies on --image-fwhm being the image's PSF.")
@click.option("--model", type=click.Choice(MODELS), default="profile", show_default=True,
              help="Spatial models: 'profile' = concentric Gaussians per source fitted jointly on the "
                   "image; 'segment' = the segment-restricted image itself (for a sharp --image).")
@click.option("--fwhm", type=click.FloatRange(min=0, min_open=True, max=10), default=None,
              help="PSF FWHM at the first channel, arcsec [default: the cube's FSF keywords, else "
                   "fitted on --psf-star, else on the field's point-like stars].")
@click.option("--fwhm-fallback", "fallback_fwhm", type=click.FloatRange(min=0, min_open=True, max=10),
              default=None, metavar="FWHM",
              help="PSF FWHM, arcsec, used only when the cube has no FSF keywords and no star could "
                   "be fitted (PSFSRC = 'fallback'); --fwhm, the cube's own PSF and --psf-star win "
                   "over it.")
@click.option("--fwhm-red", type=click.FloatRange(min=0, min_open=True, max=10), default=None,
              help="PSF FWHM at the last channel, arcsec (linear in between) [default: --fwhm].")
@click.option("--beta", type=click.FloatRange(min=1, min_open=True, max=20), default=None,
              help="Moffat beta [default: FSF keywords, else fitted, else 2.8].")
@click.option("--psf-kind", type=click.Choice(["moffat", "gaussian"]), default="moffat",
              show_default=True, help="PSF profile for --fwhm or --psf-star.")
@click.option("--psf-star", default=None, metavar="ID",
              help="Catalogue ID of a star on which to fit the PSF when the cube has no FSF "
                   "keywords and no --fwhm is given [default: the field's stars, found by their "
                   "shape].")
@click.option("--overlap", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=0.05, show_default=True,
              help="Sources whose footprints (segment grown to where the PSF falls to this "
                   "fraction of its peak) touch are fitted together.")
@click.option("--max-group", type=click.IntRange(min=1, max=100), default=10, show_default=True,
              help="Largest group fitted at once; larger groups (crowded fields) are cut into parts of at "
                   "most this many sources, each noted.")
@click.option("--nonneg/--no-nonneg", default=False, show_default=True,
              help="Constrain every flux to be >= 0 in every channel.")
@click.option("--background/--no-background", default=False, show_default=True,
              help="Fit a uniform background per channel and group (sky residuals).")
@click.option("--gradients/--no-gradients", default=True, show_default=True,
              help="Let resolved sources change shape with wavelength (core versus envelope).")
@click.option("--refine-psf/--no-refine-psf", default=True, show_default=True,
              help="Narrow the PSF to each group's data when the FSF keywords or --fwhm are too "
                   "broad (chi-square over FWHM factors 0.70-1.00 in wavelength bins, accepted at "
                   "3 sigma; the factor is the DBPSFSCL keyword); never widens it.")
@click.option("--match-radius", type=click.FloatRange(min=0, max=10), default=0.5, show_default=True,
              help="An object on background takes the nearest segment within this radius, arcsec.")
@click.option("--size", type=FiniteFloatRange(min=0, min_open=True, max=60), default=5.0,
              show_default=True, help="Stamp side, arcsec, of Source files created by this step.")
@click.option("--model-cube", type=OutputPath(dir_okay=False), default=None,
              help="Write the model cube (all fitted sources) to this FITS file.")
@click.option("--residual-cube", type=OutputPath(dir_okay=False), default=None,
              help="Write CUBE minus the model cube (DATA, STAT) to this FITS file.")
@wave_range_option
@catalog_format_option
@cube_options
@cube_name_option
def cmd(cube, catalog, sources, sources_out, summary, output, pass_through, masks, segmap, image,
        image_fwhm, register_image, model, fwhm, fallback_fwhm, fwhm_red, beta, psf_kind, psf_star, overlap,
        max_group, nonneg, background, gradients, refine_psf, match_radius, size, model_cube, residual_cube, wave_range,
        catalog_format, **kwargs):
    """Deblend every CATALOG object: overlapping sources are fitted together, channel by channel,
    with the wavelength-dependent PSF; DEBLEND is each source's total flux with its variance."""
    if masks and segmap:
        raise click.UsageError("--masks and --segmap are exclusive")
    if output is not None and (sources or summary or sources_out):
        raise click.UsageError("-o/--output is exclusive with --source, --summary and --sources-out")
    if output is None and not (sources_out and (summary or pass_through)):
        raise click.UsageError("give --sources-out and --summary (and --source files to update), or -o/--output")
    cfg = DeblendStepConfig.from_options(
        model=model, overlap=overlap, max_group=max_group, nonneg=nonneg, background=background,
        image_fwhm=image_fwhm, register_image=register_image, match_radius=match_radius, gradients=gradients,
        refine_psf=refine_psf,
        fwhm=fwhm, fallback_fwhm=fallback_fwhm, fwhm_red=fwhm_red, beta=beta, psf_kind=psf_kind, psf_star=psf_star,
        wave_range=wave_range, size=size)
    res = run_deblend(cube, catalog, output, sources=list(sources), summary=summary,
                      sources_out=sources_out, masks=masks, segmap=segmap, image=image,
                      model_cube=model_cube, residual_cube=residual_cube, config=cfg,
                      pass_through=pass_through, catalog_format=catalog_format,
                      cube_kwargs=cube_kwargs(kwargs))
    if pass_through:
        report(f"deblending is off: {res.n_copied} Source files copied unchanged to {res.sources_dir}")
        return
    report(f"deblended {res.n_ok} of {len(res.rows)} objects in {res.n_groups} groups; DEBLEND spectra in "
           f"{res.sources_dir}, summary in {res.summary}")
    batch_exit(res.n_ok, len(res.rows))

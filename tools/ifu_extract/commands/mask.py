"""``ifu-extract mask CUBE CATALOG [--segmap S.fits ...] -o MASKS.fits``."""

import click

from ..masks import DEFAULT_MATCH_RADIUS, DEFAULT_SIZE, DEFAULT_SKY_GROW, MODES
from ..segmap import DEFAULT_MIN_COVERAGE
from ..steps.mask import MaskConfig, run_mask
from ._options import (BOX_SIZE, batch_exit, catalog_format_option, cube_kwargs, cube_options,
                       report, white_option)
from ._paths import OutputPath


@click.command("mask")
@click.argument("cube", type=click.Path(dir_okay=False))
@click.argument("catalog", type=click.Path(dir_okay=False))
@click.option("--segmap", "segmaps", multiple=True, type=click.Path(dir_okay=False),
              help="Segmentation map (FITS, 0 = background); repeat for several maps. Maps on "
                   "another grid (e.g. HST) are reprojected onto the cube grid by area coverage. "
                   "Without one, every object gets a PSF circle (radius the FWHM).")
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output FITS file: OBJECTS table with the MASK_UNION/MASK_INTER/MASK_SKY stamps of "
                   "every object, SEGMAP on the cube grid.")
@click.option("--size", type=BOX_SIZE, default=DEFAULT_SIZE,
              show_default=True,
              help="Full side of each object's square box, arcsec; a catalogue SIZE column wins "
                   "where it is a positive number.")
@click.option("--mode", type=click.Choice(MODES), default="union", show_default=True,
              help="Object mask: union or intersection (inter) of the maps; an empty intersection "
                   "falls back to the union.")
@click.option("--fwhm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="PSF FWHM, arcsec, radius of the circle used when no segment covers an object "
                   "[default: from the cube's FSF keywords, else fitted on the field's stars, else "
                   "--fwhm-fallback, else 0.8].")
@click.option("--fwhm-fallback", "fallback_fwhm", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="FWHM",
              help="PSF FWHM, arcsec, used only when the cube has no FSF keywords and no star could "
                   "be fitted (FWHMSRC = 'fallback'); --fwhm and the cube's own PSF win over it.")
@click.option("--match-radius", type=click.FloatRange(min=0, max=10), default=DEFAULT_MATCH_RADIUS,
              show_default=True,
              help="When an object's position falls on background, take the dominant segment not "
                   "claimed by another object within this radius, arcsec (0: only the segment "
                   "under the position).")
@click.option("--sky-grow", type=click.IntRange(min=0, max=50), default=DEFAULT_SKY_GROW,
              show_default=True,
              help="Grow every segment by this many spaxels before choosing sky spaxels.")
@click.option("--min-coverage", type=click.FloatRange(min=0, max=1, min_open=True),
              default=DEFAULT_MIN_COVERAGE, show_default=True,
              help="For maps on another grid: a cube spaxel takes the label covering the largest "
                   "share of its area if that share is at least this fraction, else background.")
@click.option("--split/--no-split", default=True, show_default=True,
              help="Share a segment claimed by several catalogue objects among them: each keeps "
                   "the spaxels within one PSF FWHM of its position, the rest goes by a watershed "
                   "on the white light. --no-split: each takes the whole segment.")
@click.option("--voronoi", is_flag=True,
              help="Cut each object mask to the object's Voronoi cell among the catalogue "
                   "positions (instead of --split).")
@white_option
@catalog_format_option
@cube_options
def cmd(cube, catalog, segmaps, output, size, mode, fwhm, fallback_fwhm, match_radius, sky_grow, min_coverage,
        split, voronoi, white_path, catalog_format, **kwargs):
    """Object and sky masks for every object of CATALOG on the grid of CUBE.

    A segment holding several catalogue objects is split among them (--split, the default).
    Each object keeps a status: a PSF circle when no segment covers it, the union when the
    intersection is empty; objects off the field are listed without masks.
    """
    config = MaskConfig(size=size, mode=mode, fwhm=fwhm, fallback_fwhm=fallback_fwhm, match_radius=match_radius,
                        sky_grow=sky_grow, min_coverage=min_coverage, split=split, voronoi=voronoi,
                        catalog_format=catalog_format, cube_kwargs=cube_kwargs(kwargs))
    result = run_mask(cube, catalog, segmaps, output, config, white=white_path)
    batch_exit(result.n_masked, result.n_objects)
    report(f"wrote {output} ({result.n_masked} of {result.n_objects} objects masked: "
           f"{result.count('union')} union, {result.count('inter')} inter, "
           f"{result.count('circle')} PSF circle)")

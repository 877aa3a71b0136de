"""``ifu-extract pixtable <verb>``: MUSE pixel tables (info, extract, origin, detimage, mask,
selfcal, plot).  The commands parse and report; :mod:`ifu_extract.pixtable` does the work."""

from __future__ import annotations

import json

import click

from ..steps.pixtable import (Reading, SelectionOptions, run_detimage, run_extract, run_info,
                              run_mask, run_origin, run_plot, run_selfcal)
from ._options import option_errors, report
from ._paths import OutputPath

_BOTH_LAYOUTS = click.Choice(["image", "table"])
#: Selection parameters of the library whose names are not an option's.
_SELECTION_OPTIONS = {"regions": "--circle/--square", "ifus": "--ifu"}


def _threads_option(func):
    func = click.option("--chunk-rows", type=click.IntRange(1 << 14, 1 << 26), default=1 << 18,
                        show_default=True,
                        help="Rows processed at once by a thread (memory grows with it).")(func)
    return click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="Threads to use (default: all available cores).")(func)


def _selection_options(ifu: bool = True):
    """Selection criteria shared by extract, origin and detimage (MPDAF ``extract`` ones)."""
    def deco(func):
        opts = [
            click.option("--circle", "circles", multiple=True, metavar="RA DEC RADIUS",
                         type=(click.FloatRange(0, 360), click.FloatRange(-90, 90),
                               click.FloatRange(0, 3600, min_open=True)),
                         help="Circular sky aperture: centre RA, Dec (deg) and radius (arcsec). "
                              "Repeatable (union)."),
            click.option("--square", "squares", multiple=True, metavar="RA DEC HALF_SIDE",
                         type=(click.FloatRange(0, 360), click.FloatRange(-90, 90),
                               click.FloatRange(0, 3600, min_open=True)),
                         help="Square sky aperture aligned with RA/Dec: centre RA, Dec (deg) and "
                              "half side (arcsec). Repeatable (union)."),
            click.option("--wave-range", "waves", multiple=True, metavar="MIN MAX",
                         type=(click.FloatRange(0, 1e6), click.FloatRange(0, 1e6)),
                         help="Wavelength range [MIN, MAX) in Angstrom. Repeatable (union)."),
            click.option("--slice", "slices", multiple=True, type=click.IntRange(1, 48),
                         help="Slice number, CCD numbering (1-48). Repeatable."),
            click.option("--stack", "stacks", multiple=True, type=click.IntRange(1, 4),
                         help="Slicer stack (1-4): SKY slices 12(s-1)+1..12s. Repeatable."),
            click.option("--xpix", multiple=True, metavar="MIN MAX",
                         type=(click.IntRange(0, 8192), click.IntRange(0, 8192)),
                         help="Detector column range [MIN, MAX), 0-based. Repeatable (union)."),
            click.option("--ypix", multiple=True, metavar="MIN MAX",
                         type=(click.IntRange(0, 8192), click.IntRange(0, 8192)),
                         help="Detector row range [MIN, MAX), 0-based. Repeatable (union)."),
            click.option("--exp", "exposures", multiple=True, type=click.IntRange(1, 9999),
                         help="Exposure number of a combined table (1-based). Repeatable."),
            click.option("--combine", type=click.Choice(["and", "or"]), default="and",
                         show_default=True,
                         help="Combine the criteria: rows matching all (and) or any (or)."),
            click.option("--mask-column", type=click.Path(dir_okay=False), default=None,
                         help="Object mask column of this table (from 'pixtable mask'); applied "
                              "after the criteria."),
            click.option("--mask-image", type=click.Path(dir_okay=False), default=None,
                         help="Object mask image with WCS (0 = sky, non-zero = object), turned "
                              "into the mask column on the fly."),
            click.option("--mask-ext", default=None, metavar="NAME|INDEX",
                         help="Extension of --mask-image (default: primary of a one-HDU file, "
                              "else DATA or SCI)."),
            click.option("--keep", type=click.Choice(["unmasked", "masked"]), default="unmasked",
                         show_default=True,
                         help="With a mask: keep the sky rows (unmasked) or the object rows "
                              "(masked)."),
        ]
        if ifu:
            opts.insert(3, click.option("--ifu", "ifus", multiple=True,
                                        type=click.IntRange(1, 24),
                                        help="IFU number (1-24). Repeatable."))
        for opt in reversed(opts):
            func = opt(func)
        return func
    return deco


def _reading(threads, chunk_rows) -> Reading:
    return Reading(threads=threads, chunk_rows=chunk_rows)


@click.group("pixtable")
def group():
    """MUSE pixel tables: inspect, cut, decode, mask, self-calibrate and plot them.

    Works on tables of any size (memory-mapped, chunked, multi-threaded) in both layouts
    (one image per column, or a binary table), with MPDAF's PixTable results.
    """


@group.command("info")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info_cmd(table, as_json):
    """Describe TABLE from its headers: IFUs merged, flux calibration, projection, rows,
    columns, limits, exposures (MPDAF's info(), plus more)."""
    from ..pixtable.info import format_info

    info = run_info(table)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@group.command("extract")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output pixel table (FITS).")
@click.option("--layout", type=_BOTH_LAYOUTS, default="image", show_default=True,
              help="Output layout: one image per column (MPDAF's default) or a binary table.")
@_selection_options()
@_threads_option
def extract_cmd(table, output, layout, threads, chunk_rows, **kw):
    """Write the rows of TABLE matching sky apertures, wavelength ranges, IFUs, slices,
    stacks, detector pixels and exposures (combined with --combine) as a new pixel table."""
    with option_errors(extra=_SELECTION_OPTIONS):
        res = run_extract(table, output, SelectionOptions(**kw), layout=layout,
                          reading=_reading(threads, chunk_rows))
    lo, hi = res.limits["lambda"]
    report(f"wrote {output}: {res.nrows} rows, {res.n_ifus} IFU(s), "
           f"lambda {lo:.2f}-{hi:.2f}")


@group.command("origin")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output FITS table with columns IFU, SLICE, YPIX, XPIX (and ROW with a "
                   "selection).")
@_selection_options()
@_threads_option
def origin_cmd(table, output, threads, chunk_rows, **kw):
    """Decode the origin column of TABLE (or of the selected rows) into IFU, slice (CCD
    numbering) and 0-based detector row and column."""
    with option_errors(extra=_SELECTION_OPTIONS):
        out = run_origin(table, output, SelectionOptions(**kw), reading=_reading(threads, chunk_rows))
    per = ", ".join(f"{i}:{n}" for i, n in out.per_ifu.items())
    report(f"wrote {output}: {out.nrows} rows; rows per IFU {per}")


@group.command("detimage")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output FITS with DATA and LAMBDA detector images.")
@click.option("--ifu", type=click.IntRange(1, 24), default=None,
              help="IFU to rebuild (required when the selection holds several).")
@click.option("--png", type=OutputPath(dir_okay=False), default=None,
              help="Also write a PNG of the data image.")
@click.option("--png-wave", type=OutputPath(dir_okay=False), default=None,
              help="Also write a PNG of the wavelength image.")
@click.option("--xrange", nargs=2, type=click.IntRange(0, 8192), default=None,
              metavar="START STOP", help="Detector columns to keep (inclusive, 0-based).")
@click.option("--yrange", nargs=2, type=click.IntRange(0, 8192), default=None,
              metavar="START STOP", help="Detector rows to keep (inclusive, 0-based).")
@_selection_options(ifu=False)
@_threads_option
def detimage_cmd(table, output, ifu, png, png_wave, xrange, yrange, threads, chunk_rows, **kw):
    """Rebuild the detector image of one IFU (and the wavelength of each detector pixel) from
    TABLE, optionally restricted like extract."""
    with option_errors(extra=_SELECTION_OPTIONS):
        images = run_detimage(table, output, SelectionOptions(**kw), ifu=ifu, xrange=xrange,
                              yrange=yrange, png=png, png_wave=png_wave,
                              reading=_reading(threads, chunk_rows))
    ny, nx = images.data.shape
    report(f"wrote {output}: IFU {images.ifu}, {nx} x {ny} detector pixels from "
           f"{images.nrows} rows (x from {images.xstart}, y from {images.ystart})")


@group.command("mask")
@click.argument("table", type=click.Path(dir_okay=False))
@click.argument("mask_image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output mask column (MPDAF PixTableMask FITS).")
@click.option("--mask-ext", default=None, metavar="NAME|INDEX",
              help="Extension of MASK_IMAGE (default: primary of a one-HDU file, else DATA "
                   "or SCI).")
@_threads_option
def mask_cmd(table, mask_image, output, mask_ext, threads, chunk_rows):
    """Compute the per-row object mask of TABLE from MASK_IMAGE (0 = sky, non-zero = object,
    with a celestial WCS): the value of the nearest mask pixel, as MPDAF's mask_column."""
    with option_errors():
        out = run_mask(table, mask_image, output, mask_ext=mask_ext,
                       reading=_reading(threads, chunk_rows))
    frac = out["masked"] / max(out["nrows"], 1)
    report(f"wrote {output}: {out['masked']} of {out['nrows']} rows masked ({100 * frac:.2f}%)")


def _parse_edges(text):
    from ..errors import InputError

    if text is None:
        return None
    try:
        edges = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError("--bin-edges", f"cannot read {text!r} as numbers",
                         "give comma-separated wavelengths in Angstrom") from None
    return edges


@group.command("selfcal")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Corrected pixel table (FITS).")
@click.option("--corrections", required=True, type=OutputPath(dir_okay=False),
              help="Output corrections table (FITS, AUTOCAL_FACTORS layout).")
@click.option("--mask-image", type=click.Path(dir_okay=False), default=None,
              help="Source mask image with WCS (0 = sky, non-zero = object).")
@click.option("--mask-column", type=click.Path(dir_okay=False), default=None,
              help="Source mask column of this table (from 'pixtable mask').")
@click.option("--mask-ext", default=None, metavar="NAME|INDEX",
              help="Extension of --mask-image.")
@click.option("--bin-edges", default=None, metavar="W0,W1,...",
              help="Wavelength bin edges in Angstrom, comma-separated (default: the pipeline's "
                   "200-300 A sky segments).")
@click.option("--fit-rows", type=click.Choice(["all", "even", "odd"]), default="all",
              show_default=True,
              help="Fit on all rows, or on even/odd detector rows only; the others then "
                   "measure the residual scatter (reported).")
@click.option("--corr-clip", type=click.FloatRange(1, 100), default=15.0, show_default=True,
              help="Replace corrections further than this many sigma from their IFU's mean "
                   "by the IFU's correction.")
@click.option("--min-npts", type=click.IntRange(1, 10 ** 9), default=100, show_default=True,
              help="Fewest pixels for a slice and bin to get its own correction.")
@click.option("--layout", type=_BOTH_LAYOUTS, default="image", show_default=True,
              help="Layout of the corrected table.")
@click.option("--png", type=OutputPath(dir_okay=False), default=None,
              help="Also plot the corrections (PNG).")
@_threads_option
def selfcal_cmd(table, output, corrections, mask_image, mask_column, mask_ext, bin_edges,
                fit_rows, corr_clip, min_npts, layout, png, threads, chunk_rows):
    """Bring every slice of TABLE (not sky-subtracted) to the same sky level, per wavelength
    bin, with the sources masked (MPDAF's selfcalibrate); write the corrected table and the
    corrections."""
    from ..pixtable.selfcal import DEFAULT_BIN_EDGES

    edges = _parse_edges(bin_edges) or DEFAULT_BIN_EDGES
    with option_errors(extra={"edges": "--bin-edges"}):
        res = run_selfcal(table, output, corrections, mask_image=mask_image,
                          mask_column=mask_column, mask_ext=mask_ext, edges=edges,
                          fit_rows=fit_rows, corr_clip=corr_clip, min_npts=min_npts,
                          layout=layout, png=png, reading=_reading(threads, chunk_rows))
    msg = (f"wrote {output} and {corrections}: {int((res.npts > 0).any(axis=2).sum())} slices, "
           f"{len(res.edges) - 1} bins, {int(res.replaced.sum())} corrections replaced")
    if res.scatter_before is not None:
        msg += (f"; hold-out slice-level scatter {100 * res.scatter_before:.3f}% -> "
                f"{100 * res.scatter_after:.3f}%")
    report(msg)


@group.command("plot")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output PNG.")
@click.option("--kind", type=click.Choice(["sky", "detector", "wave", "corrections"]),
              default="sky", show_default=True,
              help="sky: positions coloured by IFU; detector / wave: detector image of one IFU "
                   "(data / wavelength); corrections: a selfcal corrections table.")
@click.option("--ifu", type=click.IntRange(1, 24), default=None,
              help="IFU of the detector plots (required when the table holds several).")
@click.option("--max-points", type=click.IntRange(1000, 10 ** 7), default=200_000,
              show_default=True, help="Rows drawn in the sky plot (an even subsample).")
@_threads_option
def plot_cmd(source, output, kind, ifu, max_points, threads, chunk_rows):
    """Quick-look PNG of SOURCE: a pixel table (sky, detector, wave) or a corrections table
    written by selfcal (corrections)."""
    with option_errors():
        out = run_plot(source, output, kind=kind, ifu=ifu, max_points=max_points,
                       reading=_reading(threads, chunk_rows))
    if kind == "sky":
        report(f"wrote {output}: {out['points']} of {out['rows']} rows")
    elif kind == "corrections":
        report(f"wrote {output}")
    else:
        report(f"wrote {output}: IFU {out['ifu']}")

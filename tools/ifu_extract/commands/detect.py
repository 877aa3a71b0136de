"""``ifu-extract detect IMAGE_OR_CUBE -o CATALOG``: SEP source detection.

Every SEP parameter is one option, with the bounds that the Galaxy wrapper mirrors.  The
science is in :mod:`ifu_extract.detect`, the files in :mod:`ifu_extract.steps.detect`; this
module maps the options to the step's configuration and reports.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..detect import DEFAULTS, FILTER_TYPES, KERNELS, THRESH_TYPES
from ..linescan import DEFAULT_SKY_WINDOWS, ScanConfig
from ..steps.detect import DetectConfig, DetectOutputs, run_detect
from ..steps.linescan import LineScanRequest
from ._options import MaxFalse, cube_options, option_errors, report, white_option
from .image import image_options
from ._paths import OutputPath

__all__ = ["cmd", "CATALOG_FORMATS"]

CATALOG_FORMATS = ("auto", "tsv", "csv", "ecsv", "fits")


@click.command("detect")
@click.argument("image_or_cube", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=OutputPath(dir_okay=False),
              help="Output catalogue: ID, x, y, RA, DEC, a, b, theta, flux, flux_err, "
                   "kron_radius, flag, and more.")
@click.option("--catalog-format", type=click.Choice(CATALOG_FORMATS), default="auto",
              show_default=True,
              help="Catalogue format; 'auto' follows the suffix (.fits, .ecsv, .csv; else TSV).")
@click.option("--segmap", type=OutputPath(dir_okay=False), default=None,
              help="Write the segmentation map (FITS, int32 labels = catalogue IDs, input WCS).")
@click.option("--background", type=OutputPath(dir_okay=False), default=None,
              help="Write the background map (FITS, input WCS).")
@click.option("--rms", type=OutputPath(dir_okay=False), default=None,
              help="Write the background RMS map (FITS, input WCS).")
@click.option("--plot", type=OutputPath(dir_okay=False), default=None,
              help="Write a PNG of the image (arcsinh scale) with Kron apertures and IDs.")
@image_options
@cube_options
@click.option("--allow-no-wcs", is_flag=True,
              help="Accept a FITS image without celestial WCS (RA/DEC are then NaN); TIFF "
                   "images never have one.")
@click.option("--mask", "mask_path", type=click.Path(dir_okay=False), default=None,
              help="Mask image (FITS or TIFF) on the image grid: pixels above --mask-thresh "
                   "are ignored.")
@click.option("--mask-thresh", type=float, default=DEFAULTS["mask_thresh"], show_default=True,
              help="Mask pixels whose mask value is greater than this.")
@click.option("--back-size", type=click.IntRange(min=1), default=DEFAULTS["back_size"],
              show_default=True,
              help="Background box size, pixels (larger than the image: one box).")
@click.option("--back-filter-size", type=click.IntRange(min=1),
              default=DEFAULTS["back_filter_size"], show_default=True,
              help="Median filter of the background boxes, in boxes.")
@click.option("--back-filter-thresh", type=click.FloatRange(min=0),
              default=DEFAULTS["back_filter_thresh"], show_default=True,
              help="Median-filter only boxes departing from their neighbours by more than "
                   "this, image units.")
@click.option("--back-mask-sources/--no-back-mask-sources",
              default=DEFAULTS["back_mask_sources"], show_default=True,
              help="Re-estimate the background with the detected sources masked, then detect "
                   "again (better in crowded fields); --no-back-mask-sources: one SExtractor "
                   "pass.")
@click.option("--back-mask-dilate", type=click.FloatRange(min=0, max=50),
              default=DEFAULTS["back_mask_dilate"], show_default=True,
              help="Grow the source mask of the second background pass by this radius, pixels.")
@click.option("--thresh", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS["thresh"],
              show_default=True,
              help="Detection threshold, in sigma of --thresh-type (image units for absolute).")
@click.option("--thresh-type", type=click.Choice(THRESH_TYPES), default=DEFAULTS["thresh_type"],
              show_default=True,
              help="Sigma of the threshold: auto (global, or the variance when the global RMS "
                   "is over 3 times its noise: a galaxy fills the field), the global background "
                   "RMS, the local RMS map, the image's variance (STAT), or none (absolute).")
@click.option("--minarea", type=click.IntRange(min=1), default=DEFAULTS["minarea"],
              show_default=True, help="Minimum number of pixels above the threshold.")
@click.option("--filter-kernel", type=click.Choice(KERNELS), default=DEFAULTS["kernel"],
              show_default=True,
              help="Detection filter: SExtractor's 3x3 (default), a Gaussian of --filter-fwhm, "
                   "or none.")
@click.option("--filter-file", type=click.Path(dir_okay=False), default=None,
              help="Custom filter kernel: a text file of numbers, one row per line "
                   "(numpy.loadtxt; SExtractor .conv accepted). Overrides --filter-kernel.")
@click.option("--filter-fwhm", type=click.FloatRange(min=0, min_open=True, max=30),
              default=DEFAULTS["kernel_fwhm"], show_default=True,
              help="FWHM of the Gaussian filter kernel, pixels.")
@click.option("--filter-type", type=click.Choice(FILTER_TYPES), default=DEFAULTS["filter_type"],
              show_default=True,
              help="conv: threshold in unfiltered sigma (SExtractor); matched: in filtered "
                   "sigma with a noise map (needs a higher --thresh).")
@click.option("--deblend-nthresh", type=click.IntRange(min=1, max=256),
              default=DEFAULTS["deblend_nthresh"], show_default=True,
              help="Number of deblending levels.")
@click.option("--deblend-cont", type=click.FloatRange(min=0, max=1),
              default=DEFAULTS["deblend_cont"], show_default=True,
              help="Minimum contrast for deblending (1 disables deblending).")
@click.option("--clean/--no-clean", default=DEFAULTS["clean"], show_default=True,
              help="Remove spurious detections in the wings of bright objects.")
@click.option("--clean-param", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULTS["clean_param"], show_default=True,
              help="Cleaning efficiency (SExtractor CLEAN_PARAM).")
@click.option("--kron-factor", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULTS["kron_factor"], show_default=True,
              help="Kron aperture size, in first-moment (Kron) radii.")
@click.option("--kron-min", type=click.FloatRange(min=0),
              default=DEFAULTS["kron_min"], show_default=True,
              help="Minimum Kron aperture, in units of the isophotal a and b.")
@click.option("--min-radius", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULTS["min_radius"], show_default=True,
              help="Circular aperture radius for sources smaller than a Kron aperture, pixels.")
@click.option("--line-scan/--no-line-scan", default=None,
              help="Cube input: also find emission lines with a calibrated 3-D matched filter and "
                   "add the objects they belong to (invisible in white light) to the catalogue.  "
                   "--no-line-scan: the scan is off, and --lines and --line-images are written "
                   "holding no line (LINESCAN = F), for a workflow's on/off switch.")
@click.option("--lines", "lines_path", type=OutputPath(dir_okay=False), default=None,
              help="Write the line table here: one row per line (LINE_ID, ID of its object, RA, DEC, "
                   "LINE_WAVE, LINE_FLUX, LINE_FLUX_ERR, SNR, PURITY, EXTENT...); format by suffix.")
@click.option("--line-snr", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True,
              help="Lowest detection threshold: matched-filter S/N calibrated on the data (unit "
                   "spread on noise); raised by --line-max-false.")
@click.option("--line-max-false", type=MaxFalse(), default="5", show_default=True,
              help="Raise the threshold above --line-snr until at most this many lines are found "
                   "in the negated cube (false lines); 'off' keeps --line-snr.")
@click.option("--line-profile-fwhm", type=click.FloatRange(min=0, min_open=True), default=4.0,
              show_default=True, help="FWHM of the Gaussian line profile of the filter, Angstrom.")
@click.option("--line-continuum-width", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="Running-median continuum window, Angstrom (0: none, e.g. with --contsub-cube).")
@click.option("--line-merge-radius", type=click.FloatRange(min=0, max=10), default=0.6,
              show_default=True,
              help="Lines closer than this (arcsec) are one object; emitters this close to a "
                   "catalogue object are that object.")
@click.option("--line-fwhm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="PSF FWHM for the matched filter, arcsec [default: FSF keywords, else the "
                   "field's stars, else --fwhm-fallback, else a 0.7 Gaussian].")
@click.option("--fwhm-fallback", "fallback_fwhm", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="FWHM",
              help="PSF FWHM of the line scan, arcsec, used only when the cube has no FSF keywords "
                   "and no star could be fitted; --line-fwhm and the cube's own PSF win over it.")
@click.option("--line-window", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True,
              help="Narrow-band width of the emitters' images (--line-images), Angstrom.")
@click.option("--line-side-width", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Width of each continuum side band of the emitters' images, Angstrom.")
@click.option("--sky-window", "sky_windows", nargs=2, type=float, multiple=True, metavar="MIN MAX",
              help="Wavelength window skipped by the scan (repeatable), Angstrom.")
@click.option("--no-default-sky", is_flag=True,
              help="Do not skip the built-in bright sky-line windows.")
@click.option("--contsub-cube", type=click.Path(dir_okay=False), default=None,
              help="Continuum-subtracted cube (from contsub) to scan instead of local side bands.")
@click.option("--line-images", type=OutputPath(dir_okay=False), default=None,
              help="Write the emitters' narrow-band images (their extraction weights) here.")
@click.option("--merge-catalog", type=click.Path(dir_okay=False), default=None,
              help="A catalogue (AutoSpec, MUSELET cat.txt, CSV, TSV, ECSV or FITS) that the "
                   "detections are merged into, as `run` does: its rows and IDs win, a detection "
                   "within --match-radius of one of its objects is that object, the others are "
                   "added with new IDs and SOURCE=detect.  The segmentation map keeps SEP's labels "
                   "(mask finds each object's segment by position).")
@click.option("--match-radius", type=click.FloatRange(min=0), default=0.6, show_default=True,
              help="Radius within which a detection is a --merge-catalog object, arcsec.")
@white_option
def cmd(image_or_cube, output, catalog_format, segmap, background, rms, plot, wave_range,
        line, width, side_width, gap, data_ext, var_ext, dq_ext, allow_no_wcs, mask_path,
        filter_kernel, filter_file, filter_fwhm, line_scan, lines_path, line_snr,
        line_max_false, line_profile_fwhm, line_continuum_width, line_merge_radius, line_fwhm,
        fallback_fwhm, line_window,
        line_side_width, sky_windows, no_default_sky, contsub_cube, line_images, merge_catalog,
        match_radius, white_path, **sep_options):
    """Detect sources in IMAGE_OR_CUBE with SEP (SExtractor's algorithms).

    IMAGE_OR_CUBE is a FITS cube (collapsed to white light, or to the band of --wave-range or
    --line, as in `ifu-extract image`), a FITS image (DATA/SCI/primary, with STAT/VAR/ERR
    used for flux errors), or a single-channel TIFF; --data-ext/--var-ext also name the
    extensions of a FITS image.  Positions are windowed centroids (0-based pixels, x fast
    axis) and RA/DEC from the WCS; fluxes are Kron fluxes.  The optional segmentation,
    background and RMS maps (FITS, input WCS) and PNG are written with the catalogue, all
    or none.
    """
    if line is not None and wave_range:
        raise click.UsageError("--line and --wave-range are exclusive")
    if filter_file is not None and filter_kernel != "default":
        raise click.UsageError("--filter-file and --filter-kernel are exclusive")
    if (lines_path or line_images or fallback_fwhm is not None) and line_scan is None:
        raise click.UsageError("--lines, --line-images and --fwhm-fallback need --line-scan (or "
                               "--no-line-scan, which writes the line files holding no line)")
    scan = None
    if line_scan is False and (lines_path or line_images):
        scan = LineScanRequest(lines=lines_path, images=line_images, enabled=False)
    elif line_scan:
        scan = LineScanRequest(
            ScanConfig(snr=line_snr, max_false=line_max_false, line_fwhm=line_profile_fwhm,
                       continuum_width=0.0 if contsub_cube else line_continuum_width,
                       merge_radius=line_merge_radius, window=line_window,
                       side_width=0.0 if contsub_cube else line_side_width,
                       sky_windows=(() if no_default_sky else DEFAULT_SKY_WINDOWS) + tuple(sky_windows)),
            contsub=contsub_cube, fwhm=line_fwhm, fallback_fwhm=fallback_fwhm, lines=lines_path,
            images=line_images)
    config = DetectConfig(wave_range=tuple(wave_range) if wave_range else None, line=line,
                          width=width, side_width=side_width, gap=gap, data_ext=data_ext,
                          var_ext=var_ext, dq_ext=dq_ext, allow_no_wcs=allow_no_wcs,
                          filter_kernel=filter_kernel, filter_fwhm=filter_fwhm,
                          match_radius=match_radius, scan=scan, **sep_options)
    outputs = DetectOutputs(output, catalog_format, segmap=segmap, background=background, rms=rms,
                            plot=plot)
    # The library's names of detect's options (the others are the options' own names).
    with option_errors(extra={"mask": "--mask", "white": "--white", "kernel": "--filter-kernel",
                              "kernel_fwhm": "--filter-fwhm"}):
        res = run_detect(image_or_cube, outputs, config, mask=mask_path, filter_file=filter_file,
                         merge_catalog=merge_catalog, white=white_path)
    name = Path(image_or_cube).name
    for message in res.warnings:
        click.echo(f"warning: {name}: {message}", err=True)
    if res.n_merged_new is not None:
        report(f"merged into {Path(merge_catalog).name}: {res.n_catalog} catalogue objects, "
               f"{res.n_merged_new} of {len(res.detection)} detections added (match radius "
               f"{match_radius:g}\")")
    if res.scan is not None:
        report(f"line scan: {len(res.scan.lines)} lines in {len(res.scan.catalog)} objects, "
               f"{res.n_scan_new} new; {res.scan.n_false} false lines expected at S/N "
               f"{res.scan.threshold:g} (negated cube)")
    elif scan is not None:
        written = " and ".join(str(p) for p in (lines_path, line_images) if p)
        report(f"line scan off (--no-line-scan): {written} written holding no line")
    plural = "" if len(res.detection) == 1 else "s"
    report(f"detected {len(res.detection)} source{plural} in {name} ({res.kind}, "
           f"{res.image.shape[1]} x {res.image.shape[0]} pixels, threshold "
           f"{res.detection.threshold:.4g}); wrote {output}")

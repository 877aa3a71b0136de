"""Source detection on an image (or a collapsed cube) with SEP, the library of SExtractor.

:func:`detect_sources` runs the SExtractor recipe on an :class:`~ifu_extract.image.Image`:

1. **Background** (``sep.Background``): a sigma-clipped mode in boxes of ``back_size`` pixels,
   median-filtered over ``back_filter_size`` boxes, interpolated to every pixel; its RMS map and
   its global RMS (the mean of the box RMS values).  By default (``back_mask_sources``) it is
   estimated twice: once as SExtractor does, then again with the detected segments, grown by
   ``back_mask_dilate`` pixels, masked, and detection is run again on the second estimate.
   In crowded fields the wings of the sources otherwise bias the clipped mode: on the
   50-source synthetic field of the tests (one source per 17×17 pixels, a MUSE deep-field
   density) a single pass overestimates the background by 0.4σ and the RMS by 30 %, which
   costs completeness at S/N ~ 10 and biases Kron fluxes low; the second pass brings the RMS
   within a few % of the truth.  When the mask leaves SEP no usable box (one galaxy filling
   a small cube) the first estimate is kept.
2. **Detection** (``sep.extract``) on the background-subtracted image, filtered by a kernel, at
   ``thresh`` times an error: the global RMS (``thresh_type='global'``, the SExtractor
   convention), the local RMS map (``'local'``), the image's own variance (``'variance'``,
   e.g. MUSE ``STAT``), or none (``'absolute'``: *thresh* in image units); then deblending
   (``deblend_nthresh`` levels, ``deblend_cont`` contrast) and cleaning.  The default,
   ``'auto'``, is ``'global'`` unless the image has a variance and the global RMS of the
   background boxes exceeds :data:`AUTO_RMS_RATIO` times the noise the variance gives: the
   boxes then measure a galaxy's light, not noise (a small cube filled by a cluster's central
   galaxy: on the mpdaf minicube of Abell 478 the RMS is 25 times the STAT noise, and at 1.5
   times that RMS the only segment stops short of three of the eight catalogued objects),
   and ``'variance'`` is used.
3. **Measurements**: Kron ("AUTO") flux as SExtractor computes it: the first moment radius
   r1 of the light within 6 isophotal radii, an elliptical aperture of
   ``max(kron_factor * r1, kron_min)`` times (a, b) (``PHOT_AUTOPARAMS 2.5, 3.5``), pixels
   of other objects masked (``MASK_TYPE BLANK``), and a circle of ``min_radius`` pixels for
   objects whose ellipse would be smaller (the SEP documentation recipe).  For a MUSE Moffat
   PSF (β ≈ 2.8) the Kron flux holds about 90 % of the total flux: it is an aperture flux,
   as in SExtractor, not a model total.  Then the half-light radius; and **windowed positions**
   (``sep.winpos``, SExtractor ``XWIN_IMAGE``), close to the Cramér-Rao bound on the
   synthetic fields of the tests (median error 0.7–0.96 times the radial rms bound, where an
   efficient estimator gives 0.83; the isophotal barycentre gives 0.94–1.5).
   Two refinements over plain ``winpos``: the window shrinks near the image edge (a cut
   window pulls the centroid inwards), and pixels of neighbouring objects or masked (NaN)
   pixels inside the window, e.g. the NaN corners of a rotated MUSE field, are replaced by
   their mirror image through the centre (``MASK_TYPE CORRECT``).  The flux
   error comes from the image's variance when it has one (MUSE ``STAT``), else from the
   background RMS map.

Conventions: arrays are ``(ny, nx)``; pixel positions are 0-based with ``x`` the fast axis
(SEP, photutils and numpy order; add 1 for FITS/ds9 pixel coordinates); ``theta`` is in
degrees, counter-clockwise from the +x axis, in ``[-90, 90]`` (SExtractor ``THETA_IMAGE``).

Threshold semantics.  With the default ``filter_type='conv'`` the threshold applies to the
filtered image in units of the *unfiltered* noise, whatever ``thresh_type`` is: ``thresh=1.5``
means what it means in SExtractor.  SEP's ``'matched'`` filter, used with a noise *map*
(``local`` or ``variance``), instead expresses the threshold in units of the *filtered*
noise, which is about 2.7 times lower for the default 3×3 kernel: on pure white noise
(128×128 pixels, minarea 5) ``thresh=1.5`` gives 0 false detections with ``'conv'`` and ~18
with ``'matched'``.  Use ``'matched'`` with a correspondingly higher threshold.

Defaults, chosen for MUSE white-light images (0.2″ spaxels, PSF FWHM 3–4 spaxels) and kept
equal to SExtractor's where that works: background boxes of 64 pixels (12.8″, several times
the size of the galaxies one extracts spectra of; larger than a small cube, in which case one
box covers the field), a 3×3 median filter of boxes, ``thresh=1.5`` times the global RMS, the
SExtractor 3×3 kernel, ``minarea=5``, 32 deblending levels at 0.005 contrast, cleaning on,
the two-pass background.  Measured on six synthetic 120×120 fields of 50 sources each
(white-light optimal S/N 10–200, one in five a Sérsic galaxy, MUSE-like PSF): 297 of 300
sources found (the three missed are extended galaxies at S/N 10), no false detection; a single
SExtractor-like background pass finds 280.  Pure white noise gives no false detection per
128×128 image; noise correlated over 2×2 pixels (resampled images) gives ~7, and none
from ``thresh=2.5``: raise the threshold on images with correlated noise.

Flags (``flag`` column, bits OR-ed):

====  =======================================================================
bit   meaning
====  =======================================================================
1     object was deblended from a blend (``sep.OBJ_MERGED``)
2     object touches the image edge (``sep.OBJ_TRUNC``)
4     deblending overflow (``sep.OBJ_DOVERFLOW``)
8     singular second moments (``sep.OBJ_SINGU``)
16    Kron aperture truncated by the image edge (``sep.APER_TRUNC``)
32    Kron aperture holds masked pixels: NaN, user mask, or pixels of other objects, which
      are left out of the sum (``sep.APER_HASMASKED``)
64    Kron aperture fully masked (``sep.APER_ALLMASKED``)
128   non-positive flux in the Kron-radius ellipse (``sep.APER_NONPOSITIVE``)
256   windowed position failed or ran away: the isophotal barycentre is given
512   object too small for a Kron aperture: flux in a circle of ``min_radius``
====  =======================================================================
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sep
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from .errors import InputError, ParameterError
from .fitsio import file_head, is_fits, is_tiff
from .image import Image, image_from_input, is_cube_file, read_image
from .wcsutil import pixel_to_world, same_grid

__all__ = [
    "DEFAULTS",
    "THRESH_TYPES",
    "AUTO_RMS_RATIO",
    "KERNELS",
    "FILTER_TYPES",
    "FLAG_WINPOS",
    "FLAG_CIRCLE",
    "FLAG_BITS",
    "DetectionWarning",
    "DetectionResult",
    "detect_sources",
    "read_detection_image",
    "read_mask",
    "load_kernel",
    "gaussian_kernel",
]

#: Error the threshold is expressed in (see the module docstring).
THRESH_TYPES = ("auto", "global", "local", "variance", "absolute")
#: With ``thresh_type='auto'``: the variance is used when the global background RMS exceeds
#: this many times the median noise of the variance.  Correlated noise and sky residuals make
#: the RMS of a sky-dominated MUSE white light up to ~1.5 times its STAT noise; a ratio above 3
#: means the background boxes are filled with source light.
AUTO_RMS_RATIO = 3.0
#: Named filter kernels; an array may be given instead.
KERNELS = ("default", "gaussian", "none")
#: SEP filter treatments.
FILTER_TYPES = ("conv", "matched")
#: Flag bit: windowed position unusable, isophotal barycentre reported.
FLAG_WINPOS = 256
#: Flag bit: flux measured in the minimum circle instead of a Kron ellipse.
FLAG_CIRCLE = 512
#: Every flag bit and its meaning (also written to the catalogue metadata).
FLAG_BITS = {
    sep.OBJ_MERGED: "deblended from a blend",
    sep.OBJ_TRUNC: "touches the image edge",
    sep.OBJ_DOVERFLOW: "deblending overflow",
    sep.OBJ_SINGU: "singular moments",
    sep.APER_TRUNC: "Kron aperture truncated by the edge",
    sep.APER_HASMASKED: "Kron aperture has masked or neighbour pixels",
    sep.APER_ALLMASKED: "Kron aperture fully masked",
    sep.APER_NONPOSITIVE: "non-positive flux in the Kron-radius ellipse",
    FLAG_WINPOS: "windowed position failed; isophotal barycentre given",
    FLAG_CIRCLE: "too small for a Kron aperture; flux in the minimum circle",
}

#: Default parameters of :func:`detect_sources`; the CLI takes its defaults from here.
DEFAULTS = {
    "back_size": 64,
    "back_filter_size": 3,
    "back_filter_thresh": 0.0,
    "back_mask_sources": True,
    "back_mask_dilate": 3.0,
    "mask_thresh": 0.0,
    "thresh": 1.5,
    "thresh_type": "auto",
    "minarea": 5,
    "kernel": "default",
    "kernel_fwhm": 3.0,
    "filter_type": "conv",
    "deblend_nthresh": 32,
    "deblend_cont": 0.005,
    "clean": True,
    "clean_param": 1.0,
    "kron_factor": 2.5,
    "kron_min": 3.5,
    "min_radius": 1.75,
}

# SExtractor's Kron integration radius, in units of the isophotal a and b.
_KRON_INTEGRATION = 6.0
# Windowed centroids that move further than this from the barycentre (in units of the
# isophotal semi-major axis, at least one pixel) have run onto a neighbour: not trusted.
_WINPOS_MAX_SHIFT = 1.0
# SExtractor's smallest window sigma: a half-light radius of 0.5 pixel.
_WINPOS_MIN_SIG = 2.0 / 2.35 * 0.5
# Hard caps when SEP's internal buffers overflow and are enlarged for a retry.
_MAX_SUB_OBJECTS = 16384

_COLUMNS = ("ID", "x", "y", "RA", "DEC", "a", "b", "theta", "flux", "flux_err", "kron_radius",
            "flag", "x_iso", "y_iso", "npix", "peak", "flux_radius", "snr")


class DetectionWarning(UserWarning):
    """Detection ran, but the result deserves attention (no source, no WCS...)."""


@dataclass
class DetectionResult:
    """What :func:`detect_sources` found.

    Attributes
    ----------
    catalog : astropy.table.Table
        One row per source, in SEP's deterministic detection order (the image is scanned
        by increasing ``y``); columns: ``ID`` (1..N, the segmentation label), ``x``, ``y`` (windowed
        position, 0-based pixels, x fast axis), ``RA``, ``DEC`` (deg, ICRS/FK5 as the WCS;
        NaN without WCS), ``a``, ``b`` (isophotal semi-axes, pixels), ``theta`` (degrees,
        counter-clockwise from +x), ``flux``, ``flux_err`` (Kron flux, image units times
        pixels), ``kron_radius`` (SExtractor ``KRON_RADIUS``: the Kron aperture is the ellipse
        of semi-axes ``kron_radius * a``, ``kron_radius * b``), ``flag`` (see :data:`FLAG_BITS`),
        ``x_iso``, ``y_iso`` (isophotal barycentre), ``npix`` (isophotal area), ``peak``
        (background-subtracted peak), ``flux_radius`` (half-light radius, pixels), ``snr``
        (``flux / flux_err``).  ``meta`` records the parameters and derived levels.
    segmap : numpy.ndarray
        ``(ny, nx)`` int32 segmentation map: 0 for background, ``ID`` for each source.
    background, rms : numpy.ndarray
        ``(ny, nx)`` float32 background level and background RMS, image units.
    global_back, global_rms : float
        Global background level and RMS, image units.
    threshold : float
        Detection threshold in image units (for ``local``/``variance``: at the global RMS).
    params : dict
        The parameters actually used (box sizes clipped to the image, kernel name...).
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the image (shared by the segmentation map).
    """

    catalog: Table
    segmap: np.ndarray
    background: np.ndarray
    rms: np.ndarray
    global_back: float
    global_rms: float
    threshold: float
    params: dict = field(default_factory=dict)
    wcs: WCS | None = None

    def __len__(self) -> int:
        return len(self.catalog)


# --------------------------------------------------------------------------- kernels
def gaussian_kernel(fwhm: float, size: int | None = None) -> np.ndarray:
    """A normalised circular Gaussian filter kernel (SExtractor ``gauss_<fwhm>_<n>x<n>.conv``).

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, pixels (match it to the PSF to detect faint point sources).
    size : int, optional
        Side of the square kernel (odd); default ``2 * ceil(1.5 * fwhm) + 1``, i.e. ±3σ.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 kernel summing to 1.
    """
    if not fwhm > 0:
        raise ParameterError("{kernel_fwhm}", f"{fwhm} is not a positive FWHM",
                             "give a FWHM in pixels > 0", params=("kernel_fwhm",))
    if size is None:
        size = 2 * int(np.ceil(1.5 * fwhm)) + 1
    half = size // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    kern = np.exp(-0.5 * (xx**2 + yy**2) / sigma**2)
    return kern / kern.sum()


def _check_kernel(kernel, source) -> np.ndarray:
    kern = np.atleast_2d(np.asarray(kernel, dtype=np.float64))
    if kern.ndim != 2 or kern.size == 0:
        raise InputError(source, f"the filter kernel must be a 2-D array of numbers (got shape "
                         f"{kern.shape})", "give one row of numbers per line")
    if not np.all(np.isfinite(kern)):
        raise InputError(source, "the filter kernel has non-finite values",
                         "give finite numbers only")
    if not kern.sum() > 0:
        raise InputError(source, "the filter kernel does not sum to a positive value",
                         "give a smoothing kernel (e.g. 1 2 1 / 2 4 2 / 1 2 1)")
    if max(kern.shape) > 63:
        raise InputError(source, f"the filter kernel is {kern.shape[0]}x{kern.shape[1]} pixels",
                         "use a kernel no larger than 63x63 pixels")
    return np.ascontiguousarray(kern)


def load_kernel(path) -> np.ndarray:
    """Read a custom filter kernel from a text file (``numpy.loadtxt``: one row per line).

    The Galaxy SEP tool convention; SExtractor ``.conv`` files (a ``CONV NORM`` first line,
    ``#`` comments) are read too.

    Raises
    ------
    InputError
        Missing, unreadable, non-numeric, not 2-D, non-finite or non-positive-sum kernel.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such filter kernel file", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read as a text kernel ({exc})",
                         "give a text file of numbers, one kernel row per line") from None
    # SExtractor .conv files start with "CONV NORM" or "CONV NONORM".
    lines = [ln for ln in text.splitlines() if not ln.strip().upper().startswith("CONV")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on empty input
            kern = np.loadtxt(lines, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"is not a table of numbers ({str(exc).splitlines()[0]})",
                         "give one kernel row per line, numbers separated by spaces") from None
    return _check_kernel(kern, path)


def _resolve_kernel(kernel, kernel_fwhm):
    if isinstance(kernel, str):
        if kernel == "default":
            return "default", np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
        if kernel == "gaussian":
            return f"gaussian FWHM {kernel_fwhm:g} px", gaussian_kernel(kernel_fwhm)
        if kernel == "none":
            return "none", None
        raise ParameterError("{kernel}", f"unknown kernel {kernel!r}",
                             f"use one of {', '.join(KERNELS)} or a kernel file", params=("kernel",))
    if kernel is None:
        return "none", None
    kern = _check_kernel(kernel, "filter kernel")
    return f"custom {kern.shape[0]}x{kern.shape[1]}", kern


# --------------------------------------------------------------------------- inputs
def _check_var_ext(path: Path, var_ext) -> None:
    """A clear error for a --var-ext the FITS image does not have (read_image would raise a
    bare ValueError on a missing name)."""
    if var_ext is None:
        return
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
    key = str(var_ext).strip()
    if (key.isdigit() and int(key) < len(names)) or key.upper() in names:
        return
    listing = ", ".join(f"{i}:{n or '-'}" for i, n in enumerate(names))
    raise ParameterError(path, f"has no extension {var_ext!r} for the variance (extensions: "
                         f"{listing})", "choose one of those with {var_ext}", params=("var_ext",))


def read_detection_image(path, *, wave_range=None, line=None, width=10.0, side_width=None,
                         gap=0.0, data_ext=None, var_ext=None, dq_ext=None) -> tuple[Image, str]:
    """The image to detect on: a cube collapsed as in ``image``, a FITS image, or a TIFF.

    Parameters
    ----------
    path : str or os.PathLike
        FITS cube, FITS image or single-channel TIFF.
    wave_range : (float, float), optional
        Cube only: band limits, Angstrom (default: white light).
    line, width, side_width, gap : float, optional
        Cube only: continuum-subtracted narrow band (see
        :func:`~ifu_extract.image.narrowband_image`).
    data_ext, var_ext, dq_ext : str or int, optional
        Extensions of the cube (all three) or of the FITS image (data and variance).

    Returns
    -------
    image : Image
    kind : str
        ``"cube"``, ``"fits"`` or ``"tiff"``.

    Raises
    ------
    InputError
        Missing file, neither FITS nor TIFF, band options on an image, no finite pixel, and
        every error of :func:`~ifu_extract.cubeio.open_cube` and
        :func:`~ifu_extract.image.read_image`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file", "check the path")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image or a cube", "give the file itself")
    head = file_head(path)
    band = wave_range is not None or line is not None
    if is_tiff(head):
        if band:
            raise ParameterError(path, "is a TIFF image; {wave_range}/{line} apply to cubes only",
                                 "drop the band options, or give the cube",
                                 params=("wave_range", "line"))
        image, kind = read_image(path), "tiff"
    elif is_fits(head) or path.name.endswith((".gz", ".fz")):
        if is_cube_file(path):
            cube_kwargs = {"data_ext": data_ext, "var_ext": var_ext, "dq_ext": dq_ext}
            image, _ = image_from_input(path, wave_range=wave_range, line=line, width=width,
                                        side_width=side_width, gap=gap, cube_kwargs=cube_kwargs)
            kind = "cube"
        else:
            _check_var_ext(path, var_ext)
            image, kind = read_image(path, ext=data_ext, var_ext=var_ext), "fits"
            if band or dq_ext is not None:
                raise ParameterError(path, "is a 2-D image; {wave_range}, {line} and {dq_ext} "
                                     "apply to cubes only", "drop those options, or give the cube",
                                     params=("wave_range", "line", "dq_ext"))
    else:
        raise InputError(path, "is neither a FITS nor a TIFF file",
                         "give a FITS image or cube, or a single-channel TIFF image")
    if not np.isfinite(image.data).any():
        raise InputError(path, "has no finite pixel (all NaN)", "check the data extension")
    return image, kind


def read_mask(path, image: Image) -> np.ndarray:
    """Read a mask image (FITS or TIFF) that must lie on the grid of *image*.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 mask values (NaN read as masked: ``+inf``); compare them with
        ``mask_thresh`` as SEP does.
    """
    path = Path(path)
    mask = read_image(path)
    if mask.shape != image.shape:
        raise InputError(path, f"mask is {mask.shape[1]} x {mask.shape[0]} pixels, the image "
                         f"{image.shape[1]} x {image.shape[0]}", "give a mask on the image grid")
    if mask.wcs is not None and image.wcs is not None and not same_grid(
            mask.wcs, mask.shape, image.wcs, image.shape):
        raise InputError(path, "mask WCS does not match the image grid",
                         "give a mask made on the same pixel grid as the image")
    return np.where(np.isfinite(mask.data), mask.data, np.inf).astype(np.float32)


# --------------------------------------------------------------------------- detection
def _as_sep(arr) -> np.ndarray:
    """SEP needs native byte order and C order; float32 halves memory."""
    return np.ascontiguousarray(arr, dtype=np.float32)


def _pow2_scale(data: np.ndarray, good: np.ndarray) -> float:
    """A power of two near the data's spread: dividing by it is exact and keeps cgs-unit
    images (1e-20) and their variances (1e-40, below float32's normal range) well inside
    float32 for SEP."""
    vals = data[good]
    spread = float(np.median(np.abs(vals - np.median(vals)))) if vals.size else 0.0
    if not spread > 0:
        spread = float(np.max(np.abs(vals))) if vals.size else 0.0
    if not spread > 0 or not np.isfinite(spread):
        return 1.0
    return float(2.0 ** np.round(np.log2(spread)))


def _box(size, shape) -> tuple[int, int]:
    """(bw, bh) from an int or a pair, clipped to the image (one box covers a small image)."""
    bw, bh = (size, size) if np.ndim(size) == 0 else tuple(size)
    if int(bw) < 1 or int(bh) < 1:
        raise ParameterError("{back_size}", f"{size} is not a positive box size", "give pixels >= 1",
                             params=("back_size",))
    return min(int(bw), shape[1]), min(int(bh), shape[0])


def _extract(data, thresh, err, **kwargs):
    """``sep.extract`` with its internal buffers enlarged on overflow instead of failing."""
    kwargs.update(err)
    npix = data.size
    stack0, limit0 = sep.get_extract_pixstack(), sep.get_sub_object_limit()
    try:
        while True:
            try:
                return sep.extract(data, thresh, segmentation_map=True, **kwargs)
            except Exception as exc:  # noqa: BLE001 - SEP raises a bare Exception
                msg = str(exc)
                if "pixel buffer full" in msg and sep.get_extract_pixstack() < npix:
                    sep.set_extract_pixstack(min(npix, 4 * sep.get_extract_pixstack()))
                elif "deblending overflow" in msg and sep.get_sub_object_limit() < _MAX_SUB_OBJECTS:
                    sep.set_sub_object_limit(min(_MAX_SUB_OBJECTS, 4 * sep.get_sub_object_limit()))
                else:
                    raise ParameterError("detection", f"SEP failed ({msg.split(':')[0]})",
                                         "raise {thresh} or {minarea}, or lower {deblend_nthresh}",
                                         params=("thresh", "minarea", "deblend_nthresh")) from None
    finally:
        sep.set_extract_pixstack(stack0)
        sep.set_sub_object_limit(limit0)


def _window_sigma(r50, x, y, shape):
    """Window sigma 2 r50 / 2.35 (SExtractor), shrunk so that the 4-sigma window stays inside
    the image: a window cut by the edge pulls the centroid inwards (0.2 px seen at S/N 160)."""
    ny, nx = shape
    sig = 2.0 / 2.35 * np.where(np.isfinite(r50) & (r50 > 0), r50, 1.0)
    edge = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
    return np.maximum(np.minimum(sig, edge / 4.0), _WINPOS_MIN_SIG)


def _mirror_box(sub, mask, seg, obj_id, xc, yc, x0, y0, x1, y1):
    """A box of *sub* in which pixels of other objects and masked (NaN) pixels are replaced
    by the pixel symmetric through the centre (SExtractor ``MASK_TYPE CORRECT``), or masked
    when that one is unusable too; returns the box and its mask.  A one-sided hole in the
    window would otherwise pull the centroid away from it."""
    box = np.array(sub[y0:y1, x0:x1], dtype=np.float32)
    segb = seg[y0:y1, x0:x1]
    unusable = ((segb != 0) & (segb != obj_id)) | (mask[y0:y1, x0:x1] != 0)
    bmask = unusable.astype(np.uint8)
    jj, ii = np.nonzero(unusable)
    mi = np.rint(2.0 * (xc - x0) - ii).astype(int)
    mj = np.rint(2.0 * (yc - y0) - jj).astype(int)
    ok = (mi >= 0) & (mi < box.shape[1]) & (mj >= 0) & (mj < box.shape[0])
    ok[ok] &= ~unusable[mj[ok], mi[ok]]
    box[jj[ok], ii[ok]] = box[mj[ok], mi[ok]]
    bmask[jj[ok], ii[ok]] = 0
    return box, bmask


def _detection_input(work, bad, bkg, thresh, thresh_type, var_s, scale):
    """(background-subtracted image, threshold, keyword err) for ``sep.extract``."""
    sub = _as_sep(np.where(bad, 0.0, work - bkg.back()))
    if thresh_type == "global":
        return sub, thresh, {"err": float(bkg.globalrms)}
    if thresh_type == "local":
        return sub, thresh, {"err": _as_sep(np.where(bad, 1.0, bkg.rms()))}
    if thresh_type == "variance":
        return sub, thresh, {"err": _as_sep(np.sqrt(var_s))}
    return sub, thresh / scale, {}


def _windowed(sub, mask, seg, ids, x, y, r50, a):
    """Windowed centroids (SExtractor XWIN_IMAGE), with neighbours' light mirrored away.

    Returns x, y, a boolean "fell back to the barycentre" array, and SEP's aperture flags.
    """
    sig = _window_sigma(r50, x, y, sub.shape)
    xw, yw, wflag = sep.winpos(sub, x, y, sig, mask=mask)
    xw, yw, wflag = np.array(xw), np.array(yw), np.asarray(wflag, dtype=np.int64)
    ny, nx = sub.shape
    for k in range(len(x)):
        half = int(np.ceil(4.0 * sig[k])) + 2
        x0, x1 = max(int(x[k]) - half, 0), min(int(x[k]) + half + 1, nx)
        y0, y1 = max(int(y[k]) - half, 0), min(int(y[k]) + half + 1, ny)
        segb = seg[y0:y1, x0:x1]
        if not (np.any((segb != 0) & (segb != ids[k])) or np.any(mask[y0:y1, x0:x1])):
            continue  # no neighbour and no hole in the window: the plain result stands
        box, bmask = _mirror_box(sub, mask, seg, ids[k], x[k], y[k], x0, y0, x1, y1)
        bx, by, bf = sep.winpos(box, x[k] - x0, y[k] - y0, sig[k], mask=bmask)
        xw[k], yw[k], wflag[k] = float(bx) + x0, float(by) + y0, int(bf)
    shift = np.hypot(xw - x, yw - y)
    # A window that runs onto a neighbour or diverges is not trusted: keep the barycentre.
    bad = ~np.isfinite(xw) | ~np.isfinite(yw) | (shift > _WINPOS_MAX_SHIFT * np.maximum(a, 1.0))
    return np.where(bad, x, xw), np.where(bad, y, yw), bad, wflag


def detect_sources(image: Image, *, back_size=DEFAULTS["back_size"],
                   back_filter_size=DEFAULTS["back_filter_size"],
                   back_filter_thresh: float = DEFAULTS["back_filter_thresh"],
                   back_mask_sources: bool = DEFAULTS["back_mask_sources"],
                   back_mask_dilate: float = DEFAULTS["back_mask_dilate"],
                   mask: np.ndarray | None = None, mask_thresh: float = DEFAULTS["mask_thresh"],
                   thresh: float = DEFAULTS["thresh"], thresh_type: str = DEFAULTS["thresh_type"],
                   minarea: int = DEFAULTS["minarea"], kernel="default",
                   kernel_fwhm: float = DEFAULTS["kernel_fwhm"],
                   filter_type: str = DEFAULTS["filter_type"],
                   deblend_nthresh: int = DEFAULTS["deblend_nthresh"],
                   deblend_cont: float = DEFAULTS["deblend_cont"], clean: bool = DEFAULTS["clean"],
                   clean_param: float = DEFAULTS["clean_param"],
                   kron_factor: float = DEFAULTS["kron_factor"],
                   kron_min: float = DEFAULTS["kron_min"],
                   min_radius: float = DEFAULTS["min_radius"]) -> DetectionResult:
    """Detect and measure sources in an image with SEP.

    Parameters
    ----------
    image : Image
        ``(ny, nx)`` data, optional variance, optional celestial WCS.  NaN pixels (and pixels
        whose variance is not finite) are masked.
    back_size : int or (int, int)
        Background box size, pixels: square, or ``(width, height)`` (SEP ``bw, bh``); clipped
        to the image size.
    back_filter_size : int or (int, int)
        Median filter of the background boxes, in boxes (SEP ``fw, fh``).
    back_filter_thresh : float
        Filter only boxes whose background departs from the median by more than this (SEP
        ``fthresh``, image units).
    back_mask_sources : bool
        Estimate the background a second time with the detected sources masked, then detect
        again (see the module docstring); False gives SExtractor's single pass.
    back_mask_dilate : float
        Radius by which the segments are grown for that mask, pixels (about one MUSE PSF FWHM).
    mask : numpy.ndarray, optional
        ``(ny, nx)``; pixels whose value is greater than *mask_thresh* (``True`` for booleans)
        are excluded from background, detection and photometry.
    mask_thresh : float
        Mask threshold (SEP ``maskthresh``).
    thresh : float
        Detection threshold, in units of the error chosen by *thresh_type* (image units for
        ``'absolute'``).
    thresh_type : {'auto', 'global', 'local', 'variance', 'absolute'}
        Error the threshold multiplies: the global background RMS, the local RMS map, the
        square root of the image variance, or none; ``'auto'`` is ``'global'``, or
        ``'variance'`` when the image has a variance and the global RMS is more than
        :data:`AUTO_RMS_RATIO` times its noise (see the module docstring).  The type used is
        ``params['thresh_type']`` of the result.
    minarea : int
        Minimum number of pixels above threshold.
    kernel : {'default', 'gaussian', 'none'} or numpy.ndarray
        Filter kernel: SExtractor's 3×3 ``[[1,2,1],[2,4,2],[1,2,1]]``, a Gaussian of
        *kernel_fwhm* pixels, none, or a custom 2-D array (any normalisation).
    kernel_fwhm : float
        FWHM of the ``'gaussian'`` kernel, pixels.
    filter_type : {'conv', 'matched'}
        SEP filter treatment (see the module docstring for what it does to *thresh*).
    deblend_nthresh : int
        Number of deblending levels.
    deblend_cont : float
        Minimum contrast for deblending, 0–1 (1 disables deblending).
    clean : bool
        Remove spurious detections in the wings of bright objects.
    clean_param : float
        Cleaning efficiency (SExtractor ``CLEAN_PARAM``).
    kron_factor : float
        Kron aperture size, in first-moment radii (SExtractor ``PHOT_AUTOPARAMS`` first value).
    kron_min : float
        Minimum Kron aperture, in units of a and b (``PHOT_AUTOPARAMS`` second value).
    min_radius : float
        Radius of the circular aperture used when the Kron ellipse is smaller, pixels.

    Returns
    -------
    DetectionResult

    Raises
    ------
    InputError
        No finite pixel, everything masked, a flat image (zero RMS) with a relative
        threshold, ``'variance'`` without variance, bad parameter values.

    Warns
    -----
    DetectionWarning
        No source detected; no WCS (RA/DEC are NaN).
    """
    if thresh_type not in THRESH_TYPES:
        raise ParameterError("{thresh_type}", f"unknown threshold type {thresh_type!r}",
                             f"use one of {', '.join(THRESH_TYPES)}", params=("thresh_type",))
    if filter_type not in FILTER_TYPES:
        raise ParameterError("{filter_type}", f"unknown filter type {filter_type!r}",
                             f"use one of {', '.join(FILTER_TYPES)}", params=("filter_type",))
    if not thresh > 0:
        raise ParameterError("{thresh}", f"{thresh} is not a positive threshold", "give a value > 0",
                             params=("thresh",))
    kernel_name, kern = _resolve_kernel(kernel, kernel_fwhm)
    data = np.asarray(image.data)
    if data.ndim != 2:
        raise InputError("image", f"is {data.ndim}-D, not a 2-D image",
                         "give a 2-D image or a cube")
    shape = data.shape
    bad = ~np.isfinite(data)
    var = None
    if image.var is not None:
        var = np.asarray(image.var)
        bad |= ~np.isfinite(var) | (var < 0)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise ParameterError("{mask}", f"mask shape {mask.shape} differs from the image {shape}",
                                 "give a mask on the image grid", params=("mask",))
        # SEP's rule: masked where the value exceeds the threshold (True counts as 1).
        bad |= mask.astype(np.float64) > mask_thresh
    if thresh_type == "variance":
        if var is None:
            raise ParameterError("{thresh_type} variance", "the image has no variance (STAT) extension",
                                 "use {thresh_type} global or local, or give an image with STAT",
                                 params=("thresh_type",))
        bad |= var <= 0
    if bad.all():
        raise InputError("image", "has no usable pixel (all NaN or masked)",
                         "check the image and the mask")

    # Work in power-of-two-scaled float32 copies: exact, and safe for SEP's float32 internals.
    scale = _pow2_scale(data, ~bad)
    work = _as_sep(np.where(bad, 0.0, data / scale))
    sep_mask = np.ascontiguousarray(bad, dtype=np.uint8)
    good_vals = work[~bad]
    if thresh_type in ("auto", "global", "local") and np.all(good_vals == good_vals[0]):
        # SEP would report an RMS of 1 for a flat image: refuse rather than detect noise of 0.
        raise ParameterError("image", "is flat: its background RMS is 0, so a threshold in sigma "
                             "means nothing",
                             "use {thresh_type} absolute with a threshold in image units",
                             params=("thresh_type",))
    bw, bh = _box(back_size, shape)
    fw, fh = (back_filter_size, back_filter_size) if np.ndim(back_filter_size) == 0 \
        else tuple(back_filter_size)

    def background(mask):
        return sep.Background(work, mask=mask, maskthresh=0.0, bw=bw, bh=bh, fw=int(fw),
                              fh=int(fh), fthresh=float(back_filter_thresh) / scale)

    extract_kw = {"mask": sep_mask, "minarea": int(minarea), "filter_kernel": kern,
                  "filter_type": filter_type, "deblend_nthresh": int(deblend_nthresh),
                  "deblend_cont": float(deblend_cont), "clean": bool(clean),
                  "clean_param": float(clean_param)}
    var_s = None if var is None else np.where(bad, 1.0, var / scale**2)
    bkg = background(sep_mask)
    if thresh_type == "auto":
        # Only a variance positive on every usable pixel can serve (it is the error map).
        noise = None if var_s is None or not (var_s[~bad] > 0).all() else \
            float(np.median(np.sqrt(var_s[~bad])))
        thresh_type = ("variance" if noise is not None and bkg.globalrms > AUTO_RMS_RATIO * noise
                       else "global")
    objects, seg = _extract(*_detection_input(work, bad, bkg, thresh, thresh_type, var_s, scale),
                            **extract_kw)
    back_masked = 0
    if back_mask_sources and len(objects):
        # Second pass: the light of the detected sources (and their wings, by dilating the
        # segments) biases the clipped mode upwards in crowded fields; estimate it without.
        objmask = seg > 0
        if back_mask_dilate > 0:
            r = int(np.ceil(back_mask_dilate))
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            disk = xx**2 + yy**2 <= back_mask_dilate**2
            objmask = ndimage.binary_dilation(objmask, structure=disk)
        bkg2 = background(np.ascontiguousarray(bad | objmask, dtype=np.uint8))
        # SEP's answer when no box keeps enough pixels is exactly (0, 1): keep pass one then.
        if not (bkg2.globalback == 0.0 and bkg2.globalrms == 1.0):
            bkg = bkg2
            back_masked = int(np.sum(objmask & ~bad))
            objects, seg = _extract(*_detection_input(work, bad, bkg, thresh, thresh_type, var_s,
                                                      scale), **extract_kw)
    back = bkg.back()
    rms = bkg.rms()
    sub = _as_sep(np.where(bad, 0.0, work - back))
    global_rms = float(bkg.globalrms)
    if thresh_type in ("global", "local"):
        level = thresh * global_rms
    elif thresh_type == "variance":
        level = thresh * float(np.median(np.sqrt(var_s[~bad])))
    else:
        level = thresh / scale

    phot_var = None if var is None else _as_sep(np.where(bad, 0.0, var / scale**2))
    phot_err = None if var is not None else _as_sep(np.where(bad, 0.0, rms))
    table = _measure(objects, seg, sub, sep_mask, phot_var, phot_err, kron_factor, kron_min,
                     min_radius)
    for name in ("flux", "flux_err", "peak"):
        table[name] *= scale

    if image.wcs is not None and len(table):
        ra, dec = pixel_to_world(image.wcs, np.asarray(table["x"]), np.asarray(table["y"]))
        # The positions the catalogue file holds: a detection merged into a catalogue in memory
        # (detect --merge-catalog, the Galaxy workflow) or read back from the file (run) is the
        # same object at the same position, and gives the same spectra.
        table["RA"], table["DEC"] = np.round(ra, SKY_DECIMALS), np.round(dec, SKY_DECIMALS)
    elif image.wcs is None:
        warnings.warn("the image has no celestial WCS: RA and DEC are NaN", DetectionWarning,
                      stacklevel=2)
    _set_units(table, image.unit)

    params = {"back_size": (bw, bh), "back_filter_size": (int(fw), int(fh)),
              "back_filter_thresh": float(back_filter_thresh),
              "back_mask_sources": bool(back_mask_sources),
              "back_mask_dilate": float(back_mask_dilate), "back_masked_pixels": back_masked,
              "mask_thresh": float(mask_thresh),
              "masked_pixels": int(bad.sum()), "thresh": float(thresh), "thresh_type": thresh_type,
              "minarea": int(minarea), "kernel": kernel_name, "filter_type": filter_type,
              "deblend_nthresh": int(deblend_nthresh), "deblend_cont": float(deblend_cont),
              "clean": bool(clean), "clean_param": float(clean_param),
              "kron_factor": float(kron_factor), "kron_min": float(kron_min),
              "min_radius": float(min_radius),
              "flux_err_from": "variance" if var is not None else "background rms"}
    result = DetectionResult(
        catalog=table, segmap=np.ascontiguousarray(seg, dtype=np.int32),
        background=(back * scale).astype(np.float32), rms=(rms * scale).astype(np.float32),
        global_back=float(bkg.globalback) * scale, global_rms=global_rms * scale,
        threshold=float(level) * scale, params=params, wcs=image.wcs)
    _set_meta(result)
    if len(table) == 0:
        warnings.warn(f"no source detected above {thresh:g} x {thresh_type} "
                      f"({result.threshold:.4g} in image units) with minarea {minarea}",
                      DetectionWarning, stacklevel=2)
    return result


def _measure(objects, seg, sub, mask, var, err, kron_factor, kron_min, min_radius) -> Table:
    """Kron photometry, half-light radii and windowed positions of SEP objects."""
    n = len(objects)
    ids = np.arange(1, n + 1, dtype=np.int32)
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    a, b = objects["a"].astype(np.float64), objects["b"].astype(np.float64)
    # SEP's ellipse routines need a >= b > 0 and |theta| <= pi/2; singular objects may not.
    a = np.where(np.isfinite(a) & (a > 0), a, 0.5)
    b = np.clip(np.where(np.isfinite(b) & (b > 0), b, 0.5), 1e-3, a)
    theta = np.clip(np.nan_to_num(objects["theta"].astype(np.float64)), -np.pi / 2, np.pi / 2)
    flag = objects["flag"].astype(np.int64)
    flux = np.zeros(n)
    flux_err = np.zeros(n)
    kron = np.zeros(n)
    r50 = np.full(n, np.nan)
    xw, yw = x.copy(), y.copy()
    if n:
        noise = {"var": var} if var is not None else {"err": err}
        r1, kflag = sep.kron_radius(sub, x, y, a, b, theta, _KRON_INTEGRATION, mask=mask,
                                    seg_id=ids, segmap=seg)
        flag |= kflag
        # SExtractor: the minimum also applies when r1 is undefined (non-positive light sum).
        r1 = np.where(np.isfinite(r1) & (r1 > 0), r1, 0.0)
        kron = np.maximum(kron_factor * r1, kron_min)
        circle = kron * np.sqrt(a * b) < min_radius
        ell = ~circle
        if ell.any():
            f, fe, fflag = sep.sum_ellipse(sub, x[ell], y[ell], a[ell], b[ell], theta[ell],
                                           kron[ell], mask=mask, seg_id=ids[ell],
                                           segmap=seg, subpix=5, **noise)
            flux[ell], flux_err[ell] = f, fe
            flag[ell] |= fflag
        if circle.any():
            f, fe, fflag = sep.sum_circle(sub, x[circle], y[circle], min_radius, mask=mask,
                                          seg_id=ids[circle], segmap=seg, subpix=5, **noise)
            flux[circle], flux_err[circle] = f, fe
            flag[circle] |= fflag | FLAG_CIRCLE
        norm = np.where(flux > 0, flux, objects["flux"])
        r50, _ = sep.flux_radius(sub, x, y, _KRON_INTEGRATION * a, 0.5, normflux=norm,
                                 mask=mask, seg_id=ids, segmap=seg, subpix=5)
        xw, yw, fallback, wflag = _windowed(sub, mask, seg, ids, x, y, r50, a)
        flag |= np.where(fallback, FLAG_WINPOS, wflag & sep.APER_TRUNC)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, np.nan)
    cols = {
        "ID": ids, "x": xw, "y": yw, "RA": np.full(n, np.nan), "DEC": np.full(n, np.nan),
        "a": a, "b": b, "theta": np.degrees(theta), "flux": flux, "flux_err": flux_err,
        "kron_radius": kron, "flag": flag.astype(np.int32), "x_iso": x, "y_iso": y,
        "npix": objects["npix"].astype(np.int32), "peak": objects["peak"].astype(np.float64),
        "flux_radius": np.asarray(r50, dtype=np.float64), "snr": snr,
    }
    return Table([cols[c] for c in _COLUMNS], names=_COLUMNS)


#: Decimals of RA/DEC (deg) in the catalogue: 1e-7 deg, 0.4 mas.
SKY_DECIMALS = 7
# Text catalogues: 1e-4 px positions, 1e-7 deg (0.4 mas) sky positions, 6 significant digits.
_FORMATS = {"x": ".4f", "y": ".4f", "x_iso": ".4f", "y_iso": ".4f",
            "RA": f".{SKY_DECIMALS}f", "DEC": f".{SKY_DECIMALS}f",
            "a": ".3f", "b": ".3f", "theta": ".2f", "flux": ".6g", "flux_err": ".6g",
            "peak": ".6g", "kron_radius": ".3f", "flux_radius": ".3f", "snr": ".1f"}


def _set_units(table: Table, unit_string: str) -> None:
    for name, fmt in _FORMATS.items():
        table[name].info.format = fmt
    for name in ("x", "y", "a", "b", "x_iso", "y_iso", "flux_radius"):
        table[name].unit = u.pix
    table["RA"].unit = table["DEC"].unit = table["theta"].unit = u.deg
    table["npix"].unit = u.pix**2
    if unit_string:
        unit = u.Unit(unit_string, parse_strict="silent")
        if not isinstance(unit, u.UnrecognizedUnit):
            for name in ("flux", "flux_err", "peak"):
                table[name].unit = unit


def _set_meta(result: DetectionResult) -> None:
    """FITS-safe (8-character) metadata: kept by ECSV and FITS catalogues."""
    p = result.params
    meta = result.catalog.meta
    meta["THRESH"] = p["thresh"]
    meta["THRTYPE"] = p["thresh_type"]
    meta["THRLEVEL"] = result.threshold
    meta["GLOBBACK"] = result.global_back
    meta["GLOBRMS"] = result.global_rms
    meta["BACKSIZE"] = f"{p['back_size'][0]} {p['back_size'][1]}"
    meta["BACKFILT"] = f"{p['back_filter_size'][0]} {p['back_filter_size'][1]}"
    meta["BACKMASK"] = p["back_masked_pixels"]
    meta["MINAREA"] = p["minarea"]
    meta["KERNEL"] = p["kernel"]
    meta["FILTTYPE"] = p["filter_type"]
    meta["DBNTHRSH"] = p["deblend_nthresh"]
    meta["DBCONT"] = p["deblend_cont"]
    meta["CLEAN"] = p["clean"]
    meta["CLEANPAR"] = p["clean_param"]
    meta["KRONFACT"] = p["kron_factor"]
    meta["KRONMIN"] = p["kron_min"]
    meta["FLUXERR"] = p["flux_err_from"]
    meta["FLAGS"] = "; ".join(f"{bit}={text}" for bit, text in FLAG_BITS.items())

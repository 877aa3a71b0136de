"""The ``detect`` step: SEP detection on an image or a cube, its products written together.

:func:`run_detect` reads the detection image (a cube collapsed as ``image`` does, a FITS image
or a TIFF), detects with :func:`ifu_extract.detect.detect_sources`, optionally merges the
detections into a user catalogue and adds the line emitters of the line scan, then writes the
catalogue and the maps asked for (segmentation, background, RMS; FITS with the image's WCS and
provenance), the PNG and the line-scan products, all or none (:class:`._outputs.OutputSet`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from .. import detect as lib
from ..catalog import merge_catalogs, read_catalog, write_catalog
from ..detect import DEFAULTS, DetectionResult, DetectionWarning
from ..errors import ParameterError
from ..fitsout import add_provenance, write_hdulist
from ..image import Image
from ..linescan import LineScan
from ._outputs import OutputSet, check_writable
from .linescan import LineScanRequest, run_line_scan, write_scan_off

__all__ = ["DetectConfig", "DetectOutputs", "DetectResult", "run_detect", "product_hdul"]


@dataclass(frozen=True)
class DetectConfig:
    """Parameters of the ``detect`` step, named as the verb's options.

    The image parameters (``wave_range``, ``line``, ``width``, ``side_width``, ``gap``,
    ``data_ext``, ``var_ext``, ``dq_ext``) are those of
    :func:`ifu_extract.detect.read_detection_image`; the detection parameters those of
    :func:`ifu_extract.detect.detect_sources` (:meth:`sep_kwargs`), with the filter named
    ``filter_kernel``/``filter_fwhm``; ``match_radius`` (arcsec) is the radius within which a
    detection is an object of the merge catalogue; ``scan`` asks for the line scan (or, with
    ``scan.enabled`` False, for its files holding no line).
    """

    wave_range: tuple | None = None
    line: float | None = None
    width: float = 10.0
    side_width: float | None = None
    gap: float = 0.0
    data_ext: object = None
    var_ext: object = None
    dq_ext: object = None
    allow_no_wcs: bool = False
    mask_thresh: float = DEFAULTS["mask_thresh"]
    back_size: int = DEFAULTS["back_size"]
    back_filter_size: int = DEFAULTS["back_filter_size"]
    back_filter_thresh: float = DEFAULTS["back_filter_thresh"]
    back_mask_sources: bool = DEFAULTS["back_mask_sources"]
    back_mask_dilate: float = DEFAULTS["back_mask_dilate"]
    thresh: float = DEFAULTS["thresh"]
    thresh_type: str = DEFAULTS["thresh_type"]
    minarea: int = DEFAULTS["minarea"]
    filter_kernel: str = DEFAULTS["kernel"]
    filter_fwhm: float = DEFAULTS["kernel_fwhm"]
    filter_type: str = DEFAULTS["filter_type"]
    deblend_nthresh: int = DEFAULTS["deblend_nthresh"]
    deblend_cont: float = DEFAULTS["deblend_cont"]
    clean: bool = DEFAULTS["clean"]
    clean_param: float = DEFAULTS["clean_param"]
    kron_factor: float = DEFAULTS["kron_factor"]
    kron_min: float = DEFAULTS["kron_min"]
    min_radius: float = DEFAULTS["min_radius"]
    match_radius: float = 0.6
    scan: LineScanRequest | None = None

    @property
    def cube_ext(self) -> dict:
        return {"data_ext": self.data_ext, "var_ext": self.var_ext, "dq_ext": self.dq_ext}

    def sep_kwargs(self) -> dict:
        """Keyword arguments of :func:`ifu_extract.detect.detect_sources` (but mask, kernel)."""
        names = ("mask_thresh", "back_size", "back_filter_size", "back_filter_thresh",
                 "back_mask_sources", "back_mask_dilate", "thresh", "thresh_type", "minarea",
                 "filter_type", "deblend_nthresh", "deblend_cont", "clean", "clean_param",
                 "kron_factor", "kron_min", "min_radius")
        return {**{n: getattr(self, n) for n in names}, "kernel_fwhm": self.filter_fwhm}


@dataclass(frozen=True)
class DetectOutputs:
    """The files ``detect`` writes (None: not asked for); ``catalog`` is required."""

    catalog: object
    catalog_format: str = "auto"
    segmap: object = None
    background: object = None
    rms: object = None
    plot: object = None

    def paths(self) -> dict:
        """``{parameter name: path}`` of the products (the line scan's excepted)."""
        return {"output": self.catalog, "segmap": self.segmap, "background": self.background,
                "rms": self.rms, "plot": self.plot}


@dataclass
class DetectResult:
    """What :func:`run_detect` did.

    Attributes
    ----------
    catalog : astropy.table.Table
        The catalogue written (merged and with emitters when asked).
    detection : DetectionResult
        SEP's result on the image (``len(detection)`` sources).
    image : Image
        The detection image.
    kind : {"cube", "fits", "tiff"}
    warnings : list of str
        :class:`~ifu_extract.detect.DetectionWarning` messages (no source found...).
    n_merged_new : int or None
        Detections added to the user catalogue (None without one); ``n_catalog`` its rows.
    scan : LineScan or None
        The line scan, when asked; ``n_scan_new`` objects it added.
    """

    catalog: Table
    detection: DetectionResult
    image: Image
    kind: str
    warnings: list = field(default_factory=list)
    n_catalog: int | None = None
    n_merged_new: int | None = None
    scan: LineScan | None = None
    n_scan_new: int = 0


def product_hdul(data, image: Image, result: DetectionResult, product: str, bunit: str | None,
                 inputs: dict, params: dict) -> fits.HDUList:
    """One map of ``detect`` (segmentation, background, RMS) as a one-HDU FITS file.

    The image's WCS and metadata, the detection levels and the provenance are in the header.
    """
    hdr = fits.Header() if image.wcs is None else image.wcs.to_header(relax=True)
    hdr["IFXPROD"] = (product, "ifu-extract detect product")
    if bunit:
        hdr["BUNIT"] = bunit
    for key, value in image.meta.items():
        hdr[key] = value
    hdr["THRTYPE"] = (result.params["thresh_type"], "detection threshold type")
    hdr["THRESH"] = (result.params["thresh"], "detection threshold (sigma, or image units)")
    hdr["THRLEVEL"] = (result.threshold, "detection threshold, image units")
    hdr["GLOBBACK"] = (result.global_back, "global background, image units")
    hdr["GLOBRMS"] = (result.global_rms, "global background RMS, image units")
    hdr["NSOURCES"] = (len(result), "sources detected")
    add_provenance(hdr, "detect", inputs, params)
    # One primary HDU, as SExtractor check images: ds9, MPDAF and read_image all open it.
    return fits.HDUList([fits.PrimaryHDU(data, hdr)])


def _given_white(cube_path, white, cfg: DetectConfig):
    """The white-light image *white* of the cube *cube_path*, checked against it."""
    from ..cubeio import open_cube
    from ..image import is_cube_file, white_for_cube

    if cfg.wave_range or cfg.line is not None:
        raise ParameterError(None, "{white} is the white light; it cannot be used with {wave_range} "
                             "or {line}", "drop {white}", params=("white", "wave_range", "line"))
    if not is_cube_file(cube_path):
        raise ParameterError(cube_path, "is not a cube, so {white} (the white light of a cube) "
                             "has nothing to stand for", "give the cube, or drop {white}",
                             params=("white",))
    with open_cube(cube_path, **cfg.cube_ext) as cube:
        return white_for_cube(cube, white), "cube"


def run_detect(image_or_cube, outputs: DetectOutputs, config: DetectConfig | None = None, *,
               mask=None, filter_file=None, merge_catalog=None, white=None) -> DetectResult:
    """Detect the sources of *image_or_cube* and write the products of *outputs*.

    Parameters
    ----------
    image_or_cube : str or os.PathLike
        FITS cube, FITS image or single-channel TIFF.
    outputs : DetectOutputs
    config : DetectConfig, optional
    mask : str or os.PathLike, optional
        Mask image on the image grid (pixels above ``config.mask_thresh`` are ignored).
    filter_file : str or os.PathLike, optional
        Custom filter kernel (text), instead of ``config.filter_kernel``.
    merge_catalog : str or os.PathLike, optional
        Catalogue the detections are merged into (its rows and IDs win within
        ``config.match_radius`` arcsec).
    white : str or os.PathLike, optional
        White-light image of the cube *image_or_cube* (``ifu-extract image``), detected on
        instead of collapsing the cube again (the line scan still reads the cube): the same
        detections as ``detect WHITE``.

    Raises
    ------
    InputError
        Unreadable inputs, an image without WCS (unless ``allow_no_wcs``), ``line`` with
        ``wave_range``, ``filter_file`` with a named kernel, a line scan on an image; one
        line naming the parameter.
    """
    cfg = config or DetectConfig()
    if cfg.line is not None and cfg.wave_range:
        raise ParameterError(None, "{line} and {wave_range} are exclusive", "give one of them",
                             params=("line", "wave_range"))
    if filter_file is not None and cfg.filter_kernel != "default":
        raise ParameterError(None, "{filter_file} and {filter_kernel} are exclusive",
                             "give one of them", params=("filter_file", "filter_kernel"))
    check_writable(outputs.paths())
    if cfg.scan is not None:
        check_writable({"lines_path": cfg.scan.lines, "line_images": cfg.scan.images})

    if white is not None:
        image, kind = _given_white(image_or_cube, white, cfg)
    else:
        image, kind = lib.read_detection_image(
            image_or_cube, wave_range=tuple(cfg.wave_range) if cfg.wave_range else None,
            line=cfg.line, width=cfg.width, side_width=cfg.side_width, gap=cfg.gap, **cfg.cube_ext)
    if image.wcs is None and kind == "fits" and not cfg.allow_no_wcs:
        raise ParameterError(image_or_cube, "has no celestial WCS, so the catalogue cannot have "
                             "RA/DEC", "add CTYPE/CRVAL/CRPIX/CD keywords, or pass {allow_no_wcs}",
                             params=("allow_no_wcs",))
    user_catalog = read_catalog(merge_catalog) if merge_catalog else None
    mask_data = lib.read_mask(mask, image) if mask else None
    kernel = lib.load_kernel(filter_file) if filter_file else cfg.filter_kernel

    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DetectionWarning)
        result = lib.detect_sources(image, mask=mask_data, kernel=kernel, **cfg.sep_kwargs())
    for w in caught:
        if issubclass(w.category, DetectionWarning):
            messages.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    inputs = {role: path for role, path in
              (("image", image_or_cube), ("white", white), ("mask", mask), ("filter", filter_file))
              if path}
    params = {k: v for k, v in result.params.items()
              if k not in ("masked_pixels", "back_masked_pixels")}
    if kind == "cube":
        params.update({"wave_range": cfg.wave_range, "line": cfg.line,
                       "width": cfg.width if cfg.line else None})
    params = {k: v for k, v in params.items() if v is not None and v != ()}
    table = result.catalog
    table.meta["IMAGE"] = Path(image_or_cube).name
    table.meta["IMGKIND"] = kind
    out = DetectResult(table, result, image, kind, messages)
    if user_catalog is not None:
        if image.wcs is None:
            raise ParameterError(image_or_cube, "has no celestial WCS, so detections cannot be "
                                 "matched to {merge_catalog} by RA/DEC",
                                 "add a WCS, or drop {merge_catalog}", params=("merge_catalog",))
        meta = dict(table.meta)
        table = merge_catalogs(user_catalog, table, cfg.match_radius)
        table.meta.update(meta)
        out.n_catalog = len(user_catalog)
        out.n_merged_new = int((table["SOURCE"] == "detect").sum())

    # Every product goes to a temporary file, renamed with the others at the end: an error in
    # any of them leaves no output at all.
    with OutputSet() as products:
        if cfg.scan is not None and not cfg.scan.enabled:
            write_scan_off(cfg.scan, products, inputs={"cube": image_or_cube})
        elif cfg.scan is not None:
            if kind != "cube":
                raise ParameterError(None, "{line_scan} needs a cube as input",
                                     "give the cube, or drop {line_scan}", params=("line_scan",))
            n0 = len(table)
            table, out.scan = run_line_scan(image_or_cube, table, cfg.scan,
                                            cube_ext=cfg.cube_ext, outputs=products,
                                            inputs={"cube": image_or_cube})
            out.n_scan_new = len(table) - n0
        write_catalog(table, products.path(outputs.catalog,
                                           suffix=Path(outputs.catalog).suffix or ".tsv"),
                      outputs.catalog_format)
        unit = image.unit or None
        for path, data, product, bunit in (
                (outputs.segmap, result.segmap, "SEGMENTATION", None),
                (outputs.background, result.background, "BACKGROUND", unit),
                (outputs.rms, result.rms, "BACKGROUND_RMS", unit)):
            if path is None:
                continue
            write_hdulist(product_hdul(data, image, result, product, bunit, inputs, params),
                          products.path(path, suffix=".fits"))
        if outputs.plot is not None:
            # matplotlib is imported only when a plot is asked for.
            from ..detect_plot import plot_detections

            plot_detections(image, result, products.path(outputs.plot, suffix=".png"),
                            title=Path(image_or_cube).name)
    out.catalog = table
    return out

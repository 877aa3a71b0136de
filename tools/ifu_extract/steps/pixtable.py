"""The ``pixtable`` steps: MUSE pixel tables in, products out (info, extract, origin, detimage,
mask, selfcal, plot).

Each step opens the table (memory-mapped, chunked, multi-threaded:
:class:`ifu_extract.pixtable.reader.PixTable`), builds the row selection from a plain
:class:`SelectionOptions`, calls :mod:`ifu_extract.pixtable` and writes its products all or
none (:class:`._outputs.OutputSet`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError, ParameterError
from ..pixtable.detimage import DetectorImages, reconstruct, write_detimage
from ..pixtable.extract import ExtractResult, extract, raise_no_match, write_origins
from ..pixtable.info import table_info
from ..pixtable.maskcol import MaskColumn, MaskFromImage, write_mask_column
from ..pixtable.reader import DEFAULT_CHUNK_ROWS, PixTable
from ..pixtable.select import Selection, run_selection
from ..pixtable.selfcal import DEFAULT_BIN_EDGES, SelfCalResult, selfcalibrate
from ..pixtable.sky import SkyRegion
from ._outputs import OutputSet

__all__ = ["Reading", "SelectionOptions", "run_info", "run_extract", "run_origin", "run_detimage",
           "run_mask", "run_selfcal", "run_plot"]


@dataclass(frozen=True)
class Reading:
    """How a table is read: *threads* (default: all available cores) and *chunk_rows* rows
    processed at once by a thread."""

    threads: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def open(self, path) -> PixTable:
        return PixTable(path, threads=self.threads, chunk_rows=self.chunk_rows)


@dataclass(frozen=True)
class SelectionOptions:
    """Row selection criteria (MPDAF ``extract``), as plain values.

    Attributes
    ----------
    circles, squares : tuple of (ra, dec, size)
        Sky apertures: centre (deg) and radius / half side (arcsec); union.
    waves : tuple of (min, max)
        Wavelength ranges ``[min, max)``, Angstrom; union.
    ifus, slices, stacks, exposures : tuple of int
    xpix, ypix : tuple of (min, max)
        Detector pixel ranges ``[min, max)``, 0-based.
    combine : {"and", "or"}
    mask_column, mask_image : str or os.PathLike, optional
        Object mask (one of them), *mask_ext* the extension of *mask_image*; *keep* the sky
        rows (``unmasked``) or the object rows (``masked``).
    """

    circles: tuple = ()
    squares: tuple = ()
    waves: tuple = ()
    ifus: tuple = ()
    slices: tuple = ()
    stacks: tuple = ()
    xpix: tuple = ()
    ypix: tuple = ()
    exposures: tuple = ()
    combine: str = "and"
    mask_column: object = None
    mask_image: object = None
    mask_ext: object = None
    keep: str = "unmasked"


def mask_source(table: PixTable, mask_column=None, mask_image=None, mask_ext=None):
    """The object mask of *table*: a mask column file, a mask image, or None."""
    if mask_column and mask_image:
        raise ParameterError(None, "{mask_column}/{mask_image}: both given", "give one of them",
                             params=("mask_column", "mask_image"))
    if mask_column:
        return MaskColumn(mask_column, table)
    if mask_image:
        return MaskFromImage(mask_image, table, mask_ext)
    return None


def selection(table: PixTable, options: SelectionOptions) -> Selection:
    """The :class:`~ifu_extract.pixtable.select.Selection` of *options* on *table*."""
    o = options
    regions = tuple(SkyRegion(ra, dec, size, "C") for ra, dec, size in o.circles)
    regions += tuple(SkyRegion(ra, dec, size, "S") for ra, dec, size in o.squares)
    mask = mask_source(table, o.mask_column, o.mask_image, o.mask_ext)
    return Selection(regions=regions, wave=tuple(o.waves), ifus=tuple(o.ifus),
                     slices=tuple(o.slices), stacks=tuple(o.stacks), xpix=tuple(o.xpix),
                     ypix=tuple(o.ypix), exposures=tuple(o.exposures), method=o.combine,
                     mask=mask, keep=o.keep)


def run_info(path) -> dict:
    """The description of the table at *path* (:func:`ifu_extract.pixtable.info.table_info`)."""
    with Reading(1).open(path) as t:
        return table_info(t)


def run_extract(path, output, options: SelectionOptions = SelectionOptions(), *,
                layout: str = "image", reading: Reading = Reading()) -> ExtractResult:
    """Write the selected rows of the table at *path* as a new pixel table *output*."""
    with reading.open(path) as t:
        return extract(t, selection(t, options), output, layout=layout)


@dataclass
class OriginResult:
    """``nrows`` rows decoded, ``per_ifu`` ``{ifu: rows}``."""

    nrows: int
    per_ifu: dict


def run_origin(path, output, options: SelectionOptions = SelectionOptions(), *,
               reading: Reading = Reading()) -> OriginResult:
    """Decode the origin column of the selected rows into IFU, slice, detector row and column."""
    with reading.open(path) as t:
        sel = selection(t, options)
        result = run_selection(t, sel)
        if result.count == 0:
            raise_no_match(t, sel)
        out = write_origins(t, result, output,
                            with_rows=sel.has_criteria or sel.mask is not None,
                            params=sel.describe())
    return OriginResult(out["nrows"], out["per_ifu"])


def run_detimage(path, output, options: SelectionOptions = SelectionOptions(), *, ifu=None,
                 xrange=None, yrange=None, png=None, png_wave=None,
                 reading: Reading = Reading()) -> DetectorImages:
    """Rebuild the detector image of one IFU (and its wavelengths); write the FITS and the PNGs.

    Returns the :class:`~ifu_extract.pixtable.detimage.DetectorImages` written.
    """
    from ..pixtable.plots import plot_detector  # matplotlib only when the verb runs

    with reading.open(path) as t:
        sel = selection(t, options)
        images = reconstruct(t, ifu, sel, xrange=tuple(xrange) if xrange else None,
                             yrange=tuple(yrange) if yrange else None)
        units = (t.columns["data"].unit, t.columns["lambda"].unit)
    with OutputSet() as outputs:
        for dest in (output, png, png_wave):
            if dest:
                outputs.claim(dest)
        write_detimage(images, output, table_path=path, unit_data=units[0],
                       unit_wave=units[1], params=sel.describe())
        if png:
            plot_detector(images, png, which="data")
        if png_wave:
            plot_detector(images, png_wave, which="wave")
    return images


def run_mask(path, mask_image, output, *, mask_ext=None, reading: Reading = Reading()) -> dict:
    """Write the per-row object mask of the table from *mask_image* (``nrows``, ``masked``)."""
    with reading.open(path) as t:
        return write_mask_column(t, mask_image, output, ext=mask_ext)


def run_selfcal(path, output, corrections, *, mask_image=None, mask_column=None, mask_ext=None,
                edges=DEFAULT_BIN_EDGES, fit_rows: str = "all", corr_clip: float = 15.0,
                min_npts: int = 100, layout: str = "image", png=None,
                reading: Reading = Reading()) -> SelfCalResult:
    """Self-calibrate the table: write the corrected table, the corrections and their plot."""
    from astropy.io import fits

    from ..pixtable.plots import plot_corrections

    with reading.open(path) as t:
        mask = mask_source(t, mask_column, mask_image, mask_ext)
        with OutputSet() as outputs:
            for dest in (output, corrections, png):
                if dest:
                    outputs.claim(dest)
            res = selfcalibrate(t, output, corrections, mask=mask, edges=edges,
                                fit_rows=fit_rows, corr_clip=corr_clip, min_npts=min_npts,
                                layout=layout)
            if png:
                with fits.open(corrections) as hdul:
                    plot_corrections(hdul, png)
    return res


def run_plot(source, output, *, kind: str = "sky", ifu=None, max_points: int = 200_000,
             reading: Reading = Reading()) -> dict:
    """Quick-look PNG of a pixel table (``sky``, ``detector``, ``wave``) or of a selfcal
    corrections table (``corrections``).  Returns ``{"points", "rows"}`` (sky) or ``{"ifu"}``."""
    from astropy.io import fits

    from ..pixtable.plots import plot_corrections, plot_detector, plot_sky

    if kind == "corrections":
        try:
            hdul = fits.open(source)
        except (OSError, ValueError) as exc:
            raise InputError(source, f"is not a readable FITS table ({exc})",
                             "give the corrections written by 'pixtable selfcal'") from None
        with hdul:
            plot_corrections(hdul, output)
        return {}
    with reading.open(source) as t:
        if kind == "sky":
            return {"points": plot_sky(t, output, max_points=max_points), "rows": t.nrows}
        images = reconstruct(t, ifu)
        plot_detector(images, output, which="data" if kind == "detector" else "wave")
        return {"ifu": images.ifu}

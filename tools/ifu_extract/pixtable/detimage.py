"""Detector images of one IFU rebuilt from a pixel table (MPDAF ``reconstruct_det_image``).

Every row knows its detector pixel (decoded from ``origin``); scattering ``data`` (or
``lambda``) to those pixels gives back the CCD image of an IFU, or the wavelength solution
drawn on the detector.  MPDAF's ``reconstruct_det_image`` no longer runs on numpy 2 (it uses
``np.NaN``) and both its methods need a table holding one IFU only, loaded whole in float64;
here any table works (rows of the chosen IFU are picked chunk by chunk), images are float32,
and pixels without a row are NaN in both images (MPDAF leaves 0 in the wavelength image).
When several rows fall on one pixel (a combined table), the last one wins, as in MPDAF.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from astropy.io import fits

from ..errors import ParameterError
from ..fitsout import add_provenance, write_hdulist
from .origin import (IFU_MASK, IFU_SHIFT, KEY_MASK, XPIX_MASK, XPIX_SHIFT, YPIX_MASK,
                     YPIX_SHIFT, check_xoffsets, xoffset_lut)
from .reader import ordered_map
from .select import ChunkRows, Selection, SelectionResult, run_selection

__all__ = ["DetectorImages", "reconstruct", "write_detimage", "ifus_present"]


@dataclass
class DetectorImages:
    """Detector images of one IFU.

    Attributes
    ----------
    data, wave : ndarray of float32, shape (ny, nx)
        ``data`` and ``lambda`` of the rows at each detector pixel (NaN where none).
    xstart, ystart : int
        Detector column and row of pixel ``[0, 0]`` (0-based).
    ifu : int
    nrows : int
        Rows used.
    """

    data: np.ndarray
    wave: np.ndarray
    xstart: int
    ystart: int
    ifu: int
    nrows: int


def ifus_present(table) -> np.ndarray:
    """IFU numbers present in the table (one pass over ``origin``)."""
    def work(a, b):
        o = table.read("origin", a, b)
        return np.bincount((o >> IFU_SHIFT) & IFU_MASK, minlength=IFU_MASK + 1) > 0

    seen = np.zeros(IFU_MASK + 1, dtype=bool)
    for part in table.map_chunks(work):
        seen |= part
    return np.flatnonzero(seen)


def reconstruct(table, ifu: int | None = None, selection: Selection | None = None,
                *, xrange=None, yrange=None) -> DetectorImages:
    """Rebuild the detector image and wavelength image of one IFU.

    Parameters
    ----------
    table : PixTable
    ifu : int, optional
        IFU number; may be omitted when the table (or the selection) holds a single IFU.
    selection : Selection, optional
        Further restrictions (wavelength ranges, sky apertures...); the IFU is added to it.
    xrange, yrange : (int, int), optional
        Detector window ``[start, stop]`` (inclusive, MPDAF's ``xstart/xstop``); default: the
        extent of the rows.
    """
    selection = selection or Selection()
    if ifu is None:
        if selection.has_criteria or selection.mask is not None:
            ifus = _ifus_of(table, run_selection(table, selection))
        else:
            ifus = ifus_present(table)
        if len(ifus) != 1:
            raise ParameterError(table.path, f"holds {len(ifus)} IFUs ({_short(ifus)})",
                                 "choose one with {ifu}", params=("ifu",))
        ifu = int(ifus[0])
    if selection.method == "and" or not selection.has_criteria:
        if selection.ifus and ifu not in selection.ifus:
            result = SelectionResult([])
        else:
            result = run_selection(table, replace(selection, ifus=(ifu,), method="and"))
    else:  # 'or': the IFU restricts the union of the other criteria
        result = _restrict_ifu(table, run_selection(table, selection), ifu)
    if result.count == 0:
        raise ParameterError(table.path, f"has no row of IFU {ifu} in the selection",
                             "check {ifu} and the other criteria", params=("ifu",))
    lut = xoffset_lut(table.meta)

    def coords(chunk):
        rows = chunk.rows()
        o = table.read("origin", chunk.a, chunk.b)
        if rows is not None:
            o = o[rows]
        keys = o & KEY_MASK
        off = lut.take(keys)
        if np.any(off < 0):
            check_xoffsets(keys, lut, table.path)
        x = off + ((o >> XPIX_SHIFT) & XPIX_MASK) - 1
        y = ((o >> YPIX_SHIFT) & YPIX_MASK) - 1
        return chunk, rows, x, y

    jobs = [c for c in result.chunks if c.count]
    if xrange is None or yrange is None:
        lo = np.array([np.iinfo(np.int64).max] * 2)
        hi = np.array([np.iinfo(np.int64).min] * 2)
        for _, _, x, y in ordered_map(coords, jobs, table.threads):
            lo = np.minimum(lo, [x.min(), y.min()])
            hi = np.maximum(hi, [x.max(), y.max()])
        xrange = xrange or (int(lo[0]), int(hi[0]))
        yrange = yrange or (int(lo[1]), int(hi[1]))
    x0, x1 = xrange
    y0, y1 = yrange
    if x1 < x0 or y1 < y0:
        raise ParameterError(None, "{xrange}/{yrange}: empty detector window", "give start <= stop",
                             params=("xrange", "yrange"))
    data = np.full((y1 - y0 + 1, x1 - x0 + 1), np.nan, dtype=np.float32)
    wave = np.full_like(data, np.nan)
    used = 0
    # Sequential scatter in row order: the last row on a pixel wins, as in MPDAF.
    for chunk, rows, x, y in ordered_map(coords, jobs, table.threads):
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        sub = None if inside.all() else np.flatnonzero(inside)
        xs, ys = (x, y) if sub is None else (x[sub], y[sub])
        d = table.read("data", chunk.a, chunk.b)
        lam = table.read("lambda", chunk.a, chunk.b)
        if rows is not None:
            d, lam = d[rows], lam[rows]
        if sub is not None:
            d, lam = d[sub], lam[sub]
        data[ys - y0, xs - x0] = d
        wave[ys - y0, xs - x0] = lam
        used += xs.size
    return DetectorImages(data, wave, x0, y0, ifu, used)


def _short(ifus) -> str:
    ifus = [int(i) for i in ifus]
    return ", ".join(map(str, ifus[:6])) + (", ..." if len(ifus) > 6 else "")


def _ifus_of(table, result: SelectionResult) -> np.ndarray:
    seen = np.zeros(IFU_MASK + 1, dtype=bool)
    for c in result.chunks:
        if c.count:
            o = table.read("origin", c.a, c.b)
            rows = c.rows()
            o = o if rows is None else o[rows]
            seen[np.unique((o >> IFU_SHIFT) & IFU_MASK)] = True
    return np.flatnonzero(seen)


def _restrict_ifu(table, result: SelectionResult, ifu: int) -> SelectionResult:
    out = []
    for c in result.chunks:
        if not c.count:
            out.append(c)
            continue
        o = table.read("origin", c.a, c.b)
        rows = c.rows()
        rows = np.arange(c.b - c.a, dtype=np.int32) if rows is None else rows
        keep = ((o[rows] >> IFU_SHIFT) & IFU_MASK) == ifu
        out.append(ChunkRows.from_rows(c.a, c.b, rows[keep]))
    return SelectionResult(out)


def write_detimage(images: DetectorImages, dest, *, table_path, unit_data=None, unit_wave=None,
                   params=None) -> None:
    """Write the images as FITS: primary header (provenance), ``DATA`` and ``LAMBDA`` images.

    Each image has a linear WCS giving detector pixels (1-based in FITS, so pixel 1 is
    detector column ``xstart``, 0-based), like MPDAF's ``WCS(crval=(ystart, xstart))``.
    """
    prim = fits.PrimaryHDU()
    prim.header["IFU"] = (images.ifu, "IFU of the detector image")
    prim.header["NPIXROWS"] = (images.nrows, "pixel-table rows used")
    prim.header["XSTART"] = (images.xstart, "0-based detector column of pixel 1")
    prim.header["YSTART"] = (images.ystart, "0-based detector row of pixel 1")
    add_provenance(prim.header, "pixtable detimage", inputs={"pixtable": table_path},
                   params=params)
    hdus = [prim]
    for name, arr, unit in (("DATA", images.data, unit_data), ("LAMBDA", images.wave, unit_wave)):
        h = fits.ImageHDU(arr, name=name)
        for ax, start in ((1, images.xstart), (2, images.ystart)):
            h.header[f"CTYPE{ax}"] = "LINEAR"
            h.header[f"CRPIX{ax}"] = 1.0
            h.header[f"CRVAL{ax}"] = float(start)
            h.header[f"CDELT{ax}"] = 1.0
            h.header[f"CUNIT{ax}"] = "pixel"
        if unit:
            h.header["BUNIT"] = unit
        hdus.append(h)
    write_hdulist(fits.HDUList(hdus), dest)

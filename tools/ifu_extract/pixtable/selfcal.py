"""Self-calibration of slice levels for sparse fields (MPDAF's ``selfcalibrate``, rebuilt).

Residual flat-field errors leave each of the 1152 slices of MUSE a little too bright or too
faint, differently at each wavelength.  On a table that is *not* sky-subtracted the sky is a
uniform reference: once the sources are masked, every slice should see the same sky level.
Following the algorithm MPDAF shipped in C until its version 3.0 (and the pipeline's
``autocalib="deepfield"``):

1. rows with ``dq > 0``, masked rows (a source mask image or mask column) and non-finite data
   are ignored;
2. wavelengths are cut into bins of 200-300 A whose edges avoid sky lines
   (:data:`DEFAULT_BIN_EDGES`, the DRS and MPDAF segments);
3. in each bin, the level of a slice is the median, over its detector columns, of the mean of
   each column; the reference is the median level of all slices;
4. the correction of a slice in a bin is ``reference / level`` (multiplicative); slices with
   too few pixels, or whose correction is more than ``corr_clip`` standard deviations from the
   mean of their IFU, get their IFU's correction instead;
5. ``data`` is multiplied by the correction of its slice and bin, ``stat`` by its square.

Everything is accumulated in one pass over the table (per-column sums, a few MB) and the
corrected table is written in a second, so memory does not grow with the table.  With
``fit_rows='even'`` (or ``'odd'``) only rows of even (odd) detector rows are used for the fit
and the others measure the result: the scatter of the slice levels, before and after
correction, on pixels the fit never saw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ..errors import InputError, ParameterError
from ..fitsout import add_provenance, write_hdulist
from .extract import write_selected
from .header import NIFU, NSLICE
from .origin import IFU_MASK, IFU_SHIFT, SLICE_MASK, XPIX_MASK, XPIX_SHIFT, YPIX_MASK, YPIX_SHIFT
from .select import ChunkRows, SelectionResult

__all__ = ["DEFAULT_BIN_EDGES", "SelfCalResult", "compute_corrections", "selfcalibrate",
           "corrections_hdulist", "apply_corrections"]

#: Wavelength bin edges, Angstrom: MPDAF's ``SKY_SEGMENTS`` (those of the MUSE pipeline),
#: 200-300 A wide with edges between sky lines.
DEFAULT_BIN_EDGES = (0, 5000, 5265, 5466, 5658, 5850, 6120, 6440, 6678, 6931, 7211, 7450, 7668,
                     7900, 8120, 8330, 8565, 8731, 9012, 9275, 10000)

_NCOL = XPIX_MASK + 1  # detector columns addressable inside one slice


@dataclass
class SelfCalResult:
    """Corrections and diagnostics.

    Attributes
    ----------
    corr : ndarray, shape (24, 48, nbins)
        Multiplicative correction of each IFU, slice (CCD numbering) and wavelength bin.
    corr_orig : ndarray, shape (24, 48, nbins)
        Corrections before replacement (NaN where none could be computed).
    npts : ndarray of int64, shape (24, 48, nbins)
        Pixels used for each slice and bin.
    level : ndarray, shape (24, 48, nbins)
        Slice levels (fit rows), data units.
    reference : ndarray, shape (nbins,)
        Reference (all-slice median) level of each bin.
    replaced : ndarray of bool, shape (24, 48, nbins)
        Slices and bins that got their IFU's correction.
    edges : ndarray
        Bin edges, Angstrom.
    scatter_before, scatter_after : float or None
        Standard deviation of the relative slice levels measured on the hold-out rows before
        and after correction (None when every row was used for the fit).
    n_levels : int
        Slice-bin levels entering the scatter.
    """

    corr: np.ndarray
    corr_orig: np.ndarray
    npts: np.ndarray
    level: np.ndarray
    reference: np.ndarray
    replaced: np.ndarray
    edges: np.ndarray
    scatter_before: float | None = None
    scatter_after: float | None = None
    n_levels: int = 0


def _levels(sums, counts, min_col_pts: int, min_cols: int):
    """Slice levels: median over detector columns of the column means.

    sums, counts : ndarray, shape (24, 48, nbins, 128)
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts >= min_col_pts, sums / counts, np.nan)
    ncols = np.sum(np.isfinite(means), axis=-1)
    level = np.full(means.shape[:-1], np.nan)
    ok = ncols >= min_cols
    if ok.any():
        level[ok] = np.nanmedian(means[ok], axis=-1)
    return level, counts.sum(axis=-1)


def _scatter(level, mask=None):
    """Standard deviation of level / (median over slices of each bin) - 1."""
    lv = np.where(mask, level, np.nan) if mask is not None else level
    ref = np.nanmedian(lv.reshape(-1, lv.shape[-1]), axis=0)
    rel = lv / ref - 1.0
    good = np.isfinite(rel)
    return (float(np.std(rel[good])) if good.sum() > 1 else None), int(good.sum())


def compute_corrections(table, *, mask=None, edges=DEFAULT_BIN_EDGES, fit_rows: str = "all",
                        corr_clip: float = 15.0, min_npts: int = 100, min_col_pts: int = 3,
                        min_cols: int = 3) -> SelfCalResult:
    """Accumulate the slice levels of *table* and derive the corrections.

    Parameters
    ----------
    table : PixTable
        A table that is not sky-subtracted.
    mask : MaskColumn or MaskFromImage, optional
        Object mask; masked rows are ignored.
    edges : sequence of float
        Wavelength bin edges, Angstrom, increasing.
    fit_rows : {'all', 'even', 'odd'}
        Rows used for the fit, by parity of the detector row; the others are the hold-out.
    corr_clip : float
        Corrections further than this many standard deviations from their IFU's mean are
        replaced by the IFU's correction.
    min_npts : int
        Fewest pixels for a slice-bin correction of its own.
    min_col_pts, min_cols : int
        Fewest pixels for a column mean; fewest columns for a slice level.
    """
    if table.meta.skysub:
        raise InputError(table.path, "is sky-subtracted; the self-calibration uses the sky as "
                         "its reference", "run it on the table before sky subtraction")
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError(None, "{edges}: bin edges must be at least two increasing "
                             "wavelengths", "give e.g. 4750,5000,5265", params=("edges",))
    if fit_rows not in ("all", "even", "odd"):
        raise ParameterError(None, "{fit_rows}: " + f"unknown value {fit_rows!r}",
                             "use all, even or odd", params=("fit_rows",))
    nbins = edges.size - 1
    edges32 = edges.astype(np.float32)
    ngroup = NIFU * NSLICE * nbins
    nkey = ngroup * _NCOL * 2
    parity = {"all": -1, "even": 0, "odd": 1}[fit_rows]

    def work(a, b):
        o = table.read("origin", a, b)
        lam = table.read("lambda", a, b)
        data = table.read("data", a, b)
        dq = table.read("dq", a, b)
        ifu = (o >> IFU_SHIFT) & IFU_MASK
        sli = o & SLICE_MASK
        k = np.searchsorted(edges32, lam, side="right") - 1
        ok = (dq == 0) & np.isfinite(data) & (k >= 0) & (k < nbins)
        ok &= (ifu >= 1) & (ifu <= NIFU) & (sli >= 1) & (sli <= NSLICE)
        if mask is not None:
            ok &= ~mask.values(table, a, b)
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            return None
        o, k = o[rows], k[rows]
        g = ((ifu[rows] - 1) * NSLICE + (sli[rows] - 1)) * nbins + k
        key = (g * _NCOL + ((o >> XPIX_SHIFT) & XPIX_MASK)) * 2
        if parity >= 0:  # hold-out rows go to the odd keys
            ypix = ((o >> YPIX_SHIFT) & YPIX_MASK) - 1
            key += (ypix & 1) != parity
        lo = int(key.min())
        sums = np.bincount(key - lo, weights=data[rows])
        counts = np.bincount(key - lo)
        return lo, sums, counts

    sums = np.zeros(nkey)
    counts = np.zeros(nkey, dtype=np.int64)
    for part in table.map_chunks(work):
        if part is None:
            continue
        lo, s, c = part
        sums[lo:lo + s.size] += s
        counts[lo:lo + c.size] += c
    shape = (NIFU, NSLICE, nbins, _NCOL, 2)
    with warnings.catch_warnings():
        # all-NaN slices (absent from the table) are expected: they stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return _derive(table, sums.reshape(shape), counts.reshape(shape), edges, parity,
                       corr_clip, min_npts, min_col_pts, min_cols)


def _derive(table, sums, counts, edges, parity, corr_clip, min_npts, min_col_pts, min_cols):
    nbins = edges.size - 1
    level, npts = _levels(sums[..., 0], counts[..., 0], min_col_pts, min_cols)
    if not np.isfinite(level).any():
        raise InputError(table.path, "no slice has enough unmasked, unflagged pixels in any "
                         "wavelength bin", "check the mask and the bin edges")
    reference = np.nanmedian(level.reshape(-1, nbins), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr_orig = reference / level
        ifu_level = np.nanmedian(level, axis=1)  # (24, nbins)
        ifu_corr = reference / ifu_level
    corr = corr_orig.copy()
    replaced = ~np.isfinite(corr) | (npts < min_npts)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(replaced, np.nan, corr), axis=1, keepdims=True)
        std = np.nanstd(np.where(replaced, np.nan, corr), axis=1, keepdims=True)
        replaced |= np.abs(corr - mean) > corr_clip * std
    fill = np.broadcast_to(ifu_corr[:, None, :], corr.shape)
    corr = np.where(replaced, fill, corr)
    corr = np.where(np.isfinite(corr), corr, 1.0)  # slices absent from the table
    present = npts > 0
    replaced &= present
    result = SelfCalResult(corr, np.where(present, corr_orig, np.nan), npts, level, reference,
                           replaced, edges)
    if parity >= 0:
        hold, _ = _levels(sums[..., 1], counts[..., 1], min_col_pts, min_cols)
        result.scatter_before, result.n_levels = _scatter(hold)
        result.scatter_after, _ = _scatter(hold * corr)
    return result


def apply_corrections(result: SelfCalResult):
    """A block transform for :func:`~ifu_extract.pixtable.extract.write_selected`:
    ``data *= corr``, ``stat *= corr**2`` by slice and wavelength bin (others unchanged)."""
    edges32 = result.edges.astype(np.float32)
    nbins = edges32.size - 1
    table_corr = np.ones((IFU_MASK + 1, SLICE_MASK + 1, nbins + 2), dtype=np.float32)
    table_corr[1:NIFU + 1, 1:NSLICE + 1, 1:nbins + 1] = result.corr
    flat = table_corr.ravel()

    def transform(block, a, rows):
        o = np.asarray(block["origin"]).astype(np.int32)
        lam = np.asarray(block["lambda"]).astype(np.float32)
        k = np.searchsorted(edges32, lam, side="right")  # 0 and nbins+1: outside, factor 1
        np.clip(k, 0, nbins + 1, out=k)
        idx = (((o >> IFU_SHIFT) & IFU_MASK) * (SLICE_MASK + 1) + (o & SLICE_MASK)) * (nbins + 2)
        f = flat.take(idx + k)
        out = dict(block)
        out["data"] = np.asarray(block["data"]).astype(np.float32) * f
        out["stat"] = np.asarray(block["stat"]).astype(np.float32) * (f * f)
        return out

    return transform


def corrections_hdulist(result: SelfCalResult, *, table_path, mask_name=None,
                        params=None) -> fits.HDUList:
    """The corrections as MPDAF/DRS ``AUTOCAL_FACTORS``: columns ``ifu sli quad npts corr
    corr_orig`` (+ ``level``, ``replaced``), one row per IFU, slice and bin (bin-major, as
    MPDAF), bins in ``ESO DRS MUSE LAMBDAn MIN/MAX``; readable by MPDAF's
    ``plot_autocal_factors`` and ``merge_autocal_factors``."""
    nbins = result.edges.size - 1
    prim = fits.PrimaryHDU()
    h = prim.header
    for q in range(nbins):
        h[f"HIERARCH ESO DRS MUSE LAMBDA{q + 1} MIN"] = float(result.edges[q])
        h[f"HIERARCH ESO DRS MUSE LAMBDA{q + 1} MAX"] = float(result.edges[q + 1])
    h["PIXTABLE"] = (str(table_path).split("/")[-1][:60], "pixel table")
    if mask_name:
        h["MASK"] = (str(mask_name)[:60], "file to mask out all bright objects")
    if result.scatter_before is not None:
        h["SCATBEF"] = (result.scatter_before, "hold-out slice-level rms before")
        h["SCATAFT"] = (result.scatter_after, "hold-out slice-level rms after")
        h["NLEVELS"] = (result.n_levels, "slice-bin levels in the rms")
    add_provenance(h, "pixtable selfcal", inputs={"pixtable": table_path}, params=params)
    q, i, s = np.meshgrid(np.arange(nbins), np.arange(NIFU), np.arange(NSLICE), indexing="ij")
    cols = [
        fits.Column("ifu", "J", array=(i + 1).ravel()),
        fits.Column("sli", "J", array=(s + 1).ravel()),
        fits.Column("quad", "J", array=(q + 1).ravel()),
        fits.Column("npts", "K", array=result.npts[i, s, q].ravel()),
        fits.Column("corr", "D", array=result.corr[i, s, q].ravel()),
        fits.Column("corr_orig", "D", array=result.corr_orig[i, s, q].ravel()),
        fits.Column("level", "D", array=result.level[i, s, q].ravel()),
        fits.Column("replaced", "L", array=result.replaced[i, s, q].ravel()),
    ]
    tab = fits.BinTableHDU.from_columns(cols, name="AUTOCAL_FACTORS")
    return fits.HDUList([prim, tab])


def selfcalibrate(table, dest, corrections_dest, *, mask=None, edges=DEFAULT_BIN_EDGES,
                  fit_rows: str = "all", corr_clip: float = 15.0, min_npts: int = 100,
                  layout: str = "image", params=None) -> SelfCalResult:
    """Compute the corrections, write them (FITS table) and the corrected pixel table.

    See :func:`compute_corrections` for the parameters; *dest* is the corrected table and
    *corrections_dest* the ``AUTOCAL_FACTORS`` table.
    """
    result = compute_corrections(table, mask=mask, edges=edges, fit_rows=fit_rows,
                                 corr_clip=corr_clip, min_npts=min_npts)
    params = {"bins": len(result.edges) - 1, "fit_rows": fit_rows, "corr_clip": corr_clip,
              "min_npts": min_npts, **(params or {})}
    mask_name = getattr(mask, "name", None)
    write_hdulist(corrections_hdulist(result, table_path=table.path, mask_name=mask_name,
                                      params=params), corrections_dest)
    every = SelectionResult([ChunkRows(a, b, b - a, "all") for a, b in table.chunks()])
    inputs = {"mask": getattr(mask, "path", None)} if mask is not None else None
    write_selected(table, every, dest, layout=layout, tool="pixtable selfcal", inputs=inputs,
                   params=params, transform=apply_corrections(result))
    return result

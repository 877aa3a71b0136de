"""The two QA figures of one object: the stamps and the spectrum.

``<ID>_stamps.png``
    the white-light stamp (arcsinh stretch, offsets in arcsec from the catalogue position, north
    and east arrows, 1″ bar, PSF FWHM circle) with the outlines of the segmentation map when one
    is available (the object's segment thick, its neighbours numbered), the object and sky masks
    that were used, and every other image of the Source (``IMA_XCOR``, ancillary images) with the
    object mask drawn on it;
``<ID>_spectrum.png``
    the object's spectrum (the tag of ``SNR_MEDIAN`` by default) with its ±1σ band from the
    variance, an inverse-variance smoothed curve, the night-sky lines (:mod:`ifu_extract.skylines`)
    and telluric bands marked, the lines expected at the catalogue redshift ``Z`` when there is
    one, a thin reference spectrum when the best tag is a deblended one, and the local sky
    spectrum below.

Each figure is kept from object to object (:mod:`.cache`): the stamps swap their images and
marks, and the spectrum figure keeps what all objects share (wavelength axis, sky lines and their
labels, key) as a pre-drawn background.  Curves are drawn with their extreme channels in each
pixel column only, which looks the same and is quicker to draw.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch
from matplotlib.transforms import blended_transform_factory

from ..detect_plot import asinh_scale
from ..skylines import sky_lines, telluric_bands, vacuum_to_air
from ..sourcefile import BEST_TAGS, best_tag
from ..units import display_unit
from .cache import kept_figure, new_figure, text_style, write_png
from .loader import ObjectData, as_float, object_mask

__all__ = ["FIGURES", "DEFAULT_DPI", "PlotInfo", "plot_stamps", "plot_spectrum", "column_samples"]

#: Figure kinds, as the ``<ID>_<kind>.png`` suffixes.
FIGURES = ("stamps", "spectrum")
#: Resolution of the figures (their pixel size is figsize x DPI, fixed).
DEFAULT_DPI = 100
_STAMP_PANEL = (2.45, 2.75)   # inches per stamp panel (width, height)
_STAMP_KEY_WIDTH = 1.45       # inches right of the panels for their keys
_SPEC_SIZE = (10.0, 3.9)      # inches

# Okabe & Ito colour-blind safe palette.
_ORANGE, _SKY, _GREEN, _YELLOW, _BLUE, _VERMILION, _PURPLE = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")

#: Rest-frame lines marked at the catalogue redshift: (vacuum Angstrom, label, emission?).
_Z_LINES = (
    (1215.67, "Lyα", True), (1549.06, "CIV", True), (1908.73, "CIII]", True),
    (2798.75, "MgII", True), (3728.48, "[OII]", True), (3869.86, "[NeIII]", True),
    (3934.78, "K", False), (3969.59, "H", False), (4102.89, "Hδ", True), (4305.61, "G", False),
    (4341.69, "Hγ", True), (4862.68, "Hβ", True), (4960.30, "", True), (5008.24, "[OIII]", True),
    (5176.70, "Mgb", False), (5895.60, "NaD", False), (6302.05, "[OI]", True),
    (6549.86, "", True), (6564.61, "Hα", True), (6585.27, "[NII]", True),
    (6718.29, "[SII]", True), (6732.67, "", True), (8500.36, "CaT", False),
    (8544.44, "", False), (8664.52, "", False),
)



# ----------------------------------------------------------------------------- drawing helpers
def _outline(mask: np.ndarray, x0: float, y0: float, scale: float) -> np.ndarray:
    """Pixel-edge outline of a boolean mask as ``(n, 2, 2)`` segments in offset units.

    Every edge between a True and a False pixel (or the stamp border) is one segment, so the
    outline follows the spaxels exactly (contouring would round the corners).
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    segs = []
    iy, ix = np.nonzero(m[:, 1:] != m[:, :-1])      # vertical edges at x = ix - 0.5
    if iy.size:
        x = ix - 0.5
        y = iy - 1.0
        segs.append(np.stack([np.stack([x, y - 0.5], -1), np.stack([x, y + 0.5], -1)], 1))
    iy, ix = np.nonzero(m[1:, :] != m[:-1, :])      # horizontal edges at y = iy - 0.5
    if iy.size:
        y = iy - 0.5
        x = ix - 1.0
        segs.append(np.stack([np.stack([x - 0.5, y], -1), np.stack([x + 0.5, y], -1)], 1))
    if not segs:
        return np.zeros((0, 2, 2))
    out = np.concatenate(segs)
    out[..., 0] = (out[..., 0] - x0) * scale
    out[..., 1] = (out[..., 1] - y0) * scale
    return out


def _add_outline(ax, mask, x0, y0, scale, color, lw=1.2, ls="solid", zorder=3):
    segs = _outline(mask, x0, y0, scale)
    if len(segs):
        ax.add_collection(LineCollection(segs, colors=color, linewidths=lw, linestyles=ls,
                                         zorder=zorder, capstyle="projecting"), autolim=False)


def _stretch(data: np.ndarray, var: np.ndarray | None, sky: np.ndarray | None):
    """Arcsinh-scaled stamp and display limits; background and noise from the sky spaxels."""
    finite = np.isfinite(data)
    pool = data[finite & sky] if sky is not None and (finite & sky).sum() >= 5 else data[finite]
    if pool.size == 0:
        return np.zeros_like(data), 0.0, 1.0
    back = float(np.median(pool))
    noise = float("nan")
    if var is not None:
        vpool = var[np.isfinite(var) & finite & (sky if sky is not None and (finite & sky).sum() >= 5
                                                   else finite)]
        if vpool.size:
            noise = float(np.sqrt(np.median(vpool)))
    if not np.isfinite(noise) or noise <= 0:
        noise = 1.4826 * float(np.median(np.abs(pool - back)))
    scaled, vmin, vmax = asinh_scale(data - back, noise)
    # A bright object fills its stamp: start the scale at its faintest pixels, not at -2 sigma.
    vals = scaled[np.isfinite(scaled)]
    if vals.size:
        vmin = max(vmin, float(np.percentile(vals, 1.0)))
        vmax = max(vmax, vmin + 1e-3)
    return scaled, vmin, vmax


def _extent(shape, x0, y0, scale):
    ny, nx = shape
    return [(-0.5 - x0) * scale, (nx - 0.5 - x0) * scale, (-0.5 - y0) * scale, (ny - 0.5 - y0) * scale]


def _compass(ax, wcs, x0, y0, scale, extent):
    """North and East arrows in the upper-left corner (from the WCS: rotated cubes too)."""
    if wcs is None:
        return
    try:
        ra, dec = wcs.all_pix2world([x0], [y0], 0)
        d = 1.0 / 3600.0
        pts = wcs.all_world2pix([ra[0], ra[0] + d / max(np.cos(np.radians(dec[0])), 1e-6)],
                                [dec[0] + d, dec[0]], 0)
    except Exception:  # noqa: BLE001 - a WCS that cannot be inverted: no compass
        return
    size = 0.15 * min(extent[1] - extent[0], extent[3] - extent[2])
    base = (extent[0] + 0.82 * (extent[1] - extent[0]), extent[2] + 0.68 * (extent[3] - extent[2]))
    for k, name in enumerate("NE"):
        vx, vy = (pts[0][k] - x0), (pts[1][k] - y0)
        norm = np.hypot(vx, vy)
        if not np.isfinite(norm) or norm == 0:
            continue
        dx, dy = size * vx / norm, size * vy / norm
        ax.annotate("", xy=(base[0] + dx, base[1] + dy), xytext=base,
                    arrowprops=dict(arrowstyle="-|>", color="white", lw=0.9, mutation_scale=7))
        ax.text(base[0] + 1.3 * dx, base[1] + 1.3 * dy, name, color="white", fontsize=6.5,
                ha="center", va="center")


def _scale_bar(ax, extent, unit_is_arcsec: bool):
    width = extent[1] - extent[0]
    length = 1.0 if unit_is_arcsec and width > 2.5 else round(width / 4.0, 1) or width / 4.0
    x1 = extent[1] - 0.06 * width
    y = extent[2] + 0.07 * (extent[3] - extent[2])
    ax.plot([x1 - length, x1], [y, y], color="white", lw=1.6, solid_capstyle="butt")
    ax.text(x1 - length / 2, y + 0.03 * (extent[3] - extent[2]),
            f"{length:g}″" if unit_is_arcsec else f"{length:g} spx",
            color="white", fontsize=6.5, ha="center", va="bottom")


@dataclass
class PlotInfo:
    """What one figure shows (for tests and the index page).

    Attributes
    ----------
    path : pathlib.Path
    size : (int, int)
        Width and height in pixels.
    sky_lines : list of float
        Wavelengths of the sky lines marked (in the spectrum's medium), spectrum figure only.
    z_lines : list of float
        Observed wavelengths of the redshifted lines marked.
    xlim : (float, float) or None
        Plotted wavelength range.
    tag : str
        Spectrum tag drawn (spectrum figure) or the panels drawn (stamps figure).
    """

    path: Path
    size: tuple
    sky_lines: list = field(default_factory=list)
    z_lines: list = field(default_factory=list)
    xlim: tuple | None = None
    tag: str = ""


# ----------------------------------------------------------------------------- stamps figure
class _StampsFigure:
    """A stamps figure of *n_panels* panels, kept from object to object.

    The axes (their ticks, labels and titles) stay; each object removes the images, outlines,
    marks and legends of the previous one and draws its own.
    """

    def __init__(self, n_panels: int, dpi: int):
        pw, ph = _STAMP_PANEL
        width = pw * n_panels + _STAMP_KEY_WIDTH
        self.fig = fig = new_figure(width, ph, dpi)
        left_pad, right_pad = 0.36, 0.08
        self.axes = []
        #: Left edge of the keys (figure fraction), right of the panels.
        self.key_x = (pw * n_panels + 0.02) / width
        for k in range(n_panels):
            ax = fig.add_axes([(k * pw + left_pad) / width, 0.14,
                               (pw - left_pad - right_pad) / width, 0.70])
            if k == 0:   # the panels share one grid: axes on the first only (ticks are costly)
                ax.tick_params(labelsize=6.5, length=2.5, pad=1.5)
                ax.locator_params(nbins=5)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            self.axes.append(ax)
        self.title = fig.text(0.5, 0.975, "", ha="center", va="top", fontsize=8, fontweight="bold")

    def clear(self) -> None:
        """Remove what the previous object added to the axes."""
        for ax in self.axes:
            for artist in [*ax.images, *ax.lines, *ax.collections, *ax.patches, *ax.texts]:
                artist.remove()
            if ax.legend_ is not None:
                ax.legend_.remove()
        for legend in list(self.fig.legends):
            legend.remove()

    def key(self, handles, title: str, top: float) -> None:
        """A key of the panels' symbols right of the panels, its top at *top* (figure fraction)."""
        self.fig.legend(handles=handles, title=title, loc="upper left",
                        bbox_to_anchor=(self.key_x, top), fontsize=6, title_fontsize=6.5,
                        frameon=False, handlelength=1.0, handleheight=0.8, borderpad=0.2,
                        labelspacing=0.3, borderaxespad=0.0, alignment="left")


#: Panel titles.  y is the automatic position, given so that matplotlib does not look for tick
#: labels above the panel at every draw (there are none).
_PANEL_TITLE = {"fontsize": 7, "pad": 2, "y": 1.0}


def plot_stamps(obj: ObjectData, path, *, dpi: int = DEFAULT_DPI, max_extra: int = 2) -> PlotInfo:
    """Write the stamps figure of one object (see the module description).

    Parameters
    ----------
    obj : ObjectData
    path : str or os.PathLike
        PNG to write (atomically).
    dpi : int
    max_extra : int
        At most this many further images (after the white light) are drawn.

    Returns
    -------
    PlotInfo
        ``tag`` lists the panels drawn, comma-separated.
    """
    shape = obj.stamp_shape
    if shape is None:
        raise ValueError("the Source file has no stamp image")
    x0, y0 = obj.centre()
    scale = obj.pixscale
    arcsec = obj.wcs is not None
    extent = _extent(shape, x0, y0, scale)
    sky = obj.masks.get("MASK_SKY")
    union = obj.masks.get("MASK_UNION")
    inter = obj.masks.get("MASK_INTER")
    used = str(obj.header.get("MASKUSED", "union")).strip() or "union"
    objmask = object_mask(obj)

    white_tag = "MUSE_WHITE" if "MUSE_WHITE" in obj.images else next(iter(obj.images), None)
    extra = [t for t in sorted(obj.images) if t != white_tag][:max_extra]
    panels = ([white_tag] if white_tag else []) + ["masks"] + extra
    dpi = int(dpi)
    figure = kept_figure(("stamps", len(panels), dpi), lambda: _StampsFigure(len(panels), dpi))
    figure.clear()
    gray, mask_cmap = _stamp_colormaps()
    light_keys, mask_keys = [], []
    for k, (tag, ax) in enumerate(zip(panels, figure.axes)):
        if k == 0:
            ax.set_ylabel("Δy (arcsec)" if arcsec else "Δy (spaxel)", fontsize=7, labelpad=1)
            ax.set_xlabel("Δx (arcsec)" if arcsec else "Δx (spaxel)", fontsize=7, labelpad=1)
        if tag == "masks":
            cat = np.zeros(shape, dtype=np.uint8)          # 0: neither object nor sky
            if sky is not None:
                cat[sky] = 1
            if objmask is not None:
                cat[objmask] = 2
            ax.imshow(cat, origin="lower", cmap=mask_cmap, vmin=-0.5, vmax=2.5, extent=extent,
                      interpolation="nearest")
            others = np.zeros(shape, dtype=bool)
            if obj.segmap is not None:
                others = (obj.segmap > 0) & (obj.segmap != obj.seglabel)
                _add_outline(ax, others, x0, y0, scale, _PURPLE, lw=0.9)
            other_name, other = ("inter", inter) if used != "inter" else ("union", union)
            show_other = other is not None and objmask is not None and not np.array_equal(other, objmask)
            if show_other:
                _add_outline(ax, other, x0, y0, scale, "white", lw=0.9, ls=(0, (2, 1.5)))
            n_obj = int(objmask.sum()) if objmask is not None else 0
            n_sky = int(sky.sum()) if sky is not None else 0
            ax.set_title(f"masks: object {n_obj} ({used}), sky {n_sky}", **_PANEL_TITLE)
            handles = [Patch(color=_ORANGE, label=f"object ({used})"), Patch(color=_SKY, label="sky")]
            if show_other:
                handles.append(Patch(facecolor="none", edgecolor="white", ls="--", label=other_name))
            if obj.segmap is not None and others.any():
                handles.append(Patch(facecolor="none", edgecolor=_PURPLE, label="other segments"))
            mask_keys = handles
        else:
            data, var = obj.images[tag]
            scaled, vmin, vmax = _stretch(np.asarray(data, dtype=float), var, sky)
            ax.imshow(scaled, origin="lower", cmap=gray, vmin=vmin, vmax=vmax, extent=extent,
                      interpolation="nearest")
            if k == 0 and obj.segmap is not None:
                seg = obj.segmap
                for lab in np.unique(seg[seg > 0]):
                    if lab == obj.seglabel:
                        continue
                    m = seg == lab
                    _add_outline(ax, m, x0, y0, scale, _PURPLE, lw=0.8)
                    yy, xx = np.nonzero(m)
                    ax.text((xx.mean() - x0) * scale, (yy.mean() - y0) * scale, str(lab),
                            color=_PURPLE, fontsize=6.5, ha="center", va="center",
                            fontweight="bold", clip_on=True)
                if obj.seglabel:
                    _add_outline(ax, seg == obj.seglabel, x0, y0, scale, _YELLOW, lw=1.0, ls="dashed")
            if objmask is not None:
                _add_outline(ax, objmask, x0, y0, scale, _ORANGE, lw=1.3)
            ax.plot([0], [0], marker="+", color=_SKY, ms=7, mew=1.2)
            if k == 0:
                fwhm = as_float(obj.header.get("PSFFWHM", "nan"))
                has_psf = bool(np.isfinite(fwhm) and fwhm > 0 and arcsec)
                if has_psf:
                    cx = extent[0] + 0.1 * (extent[1] - extent[0]) + fwhm / 2
                    cy = extent[2] + 0.1 * (extent[3] - extent[2]) + fwhm / 2
                    ax.add_patch(Circle((cx, cy), fwhm / 2, fill=False, color=_GREEN, lw=1.0))
                # Every symbol of the panel in its key (issue 17): only those drawn.
                keys = [Line2D([], [], ls="none", marker="+", color=_SKY, ms=5, mew=1.0,
                               label="catalogue position")]
                if objmask is not None:
                    keys.append(Patch(facecolor="none", edgecolor=_ORANGE, lw=1.0, label="object mask"))
                if obj.segmap is not None and obj.seglabel:
                    keys.append(Patch(facecolor="none", edgecolor=_YELLOW, ls="--", label="its segment"))
                if obj.segmap is not None and np.any((obj.segmap > 0) & (obj.segmap != obj.seglabel)):
                    keys.append(Patch(facecolor="none", edgecolor=_PURPLE, label="other segments"))
                if has_psf:
                    keys.append(Line2D([], [], ls="none", marker="o", mfc="none", mec=_GREEN, ms=5,
                                       label=f"PSF FWHM {fwhm:.2f}″"))
                if not np.all(np.isfinite(data)):
                    keys.append(Patch(color="#5a1e1e", label="no data (off field, flagged)"))
                light_keys = keys
                _compass(ax, obj.wcs, x0, y0, scale, extent)
                _scale_bar(ax, extent, arcsec)
                seg_note = f"; segment {obj.seglabel}" if obj.segmap is not None and obj.seglabel else ""
                ax.set_title(f"{tag.replace('MUSE_', '').lower()} light{seg_note}", **_PANEL_TITLE)
            else:
                ax.set_title(tag, **_PANEL_TITLE)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    if light_keys:
        figure.key(light_keys, "white light", 0.86)
    if mask_keys:
        figure.key(mask_keys, "masks", 0.86 - 0.075 * (len(light_keys) + 2))
    status = obj.status if len(obj.status) <= 70 else obj.status[:67] + "..."
    figure.title.set_text(f"ID {obj.id}  ·  {status}")
    with text_style():
        figure.fig.canvas.draw()
    size = write_png(figure.fig, path)
    return PlotInfo(Path(path), size, tag=",".join(panels))


@functools.cache
def _stamp_colormaps():
    """Grey scale with NaN in dark red, and the three colours of the masks panel."""
    return colormaps["gray"].with_extremes(bad="#5a1e1e"), ListedColormap(["#2b2b2b", _SKY, _ORANGE])


# ----------------------------------------------------------------------------- spectrum figure
def _smooth(flux: np.ndarray, var: np.ndarray | None, width: int):
    """Inverse-variance weighted running mean over *width* channels (NaN-aware) and its variance."""
    good = np.isfinite(flux) & (np.isfinite(var) & (var > 0) if var is not None else True)
    if width <= 1:
        return np.where(good, flux, np.nan), (None if var is None else np.where(good, var, np.nan))
    w = np.where(good, 1.0 / var, 0.0) if var is not None else good.astype(float)
    kernel = np.ones(int(width))
    sw = np.convolve(w, kernel, mode="same")
    swf = np.convolve(np.where(good, flux, 0.0) * w, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        sm = swf / sw
        if var is not None:
            svar = 1.0 / sw
        else:
            svar = None
    gaps = np.convolve(good.astype(float), kernel, mode="same") < width / 2.0
    sm[gaps] = np.nan
    if svar is not None:
        svar[gaps] = np.nan
    return sm, svar


def _limits(flux, var, smooth, wave, avoid):
    """Robust y-limits of a spectrum plot.

    The range holds the smoothed spectrum, emission and absorption lines included, but not the
    residuals of bright sky lines (channels within 3 Angstrom of *avoid* are left out) nor lone
    spikes: an excursion is shown in full up to 6 times the 0.5-99.5 percentile half-range.
    """
    vals = smooth if np.isfinite(smooth).any() else flux
    keep = np.isfinite(vals)
    if len(avoid):
        near = np.abs(wave[:, None] - np.asarray(avoid)[None, :]).min(axis=1) < 3.0
        if (keep & ~near).sum() > 10:
            keep &= ~near
    vals = vals[keep]
    if vals.size == 0:
        return -1.0, 1.0
    p_lo, med, p_hi = np.percentile(vals, [0.5, 50.0, 99.5])
    hi = min(float(vals.max()), p_hi + 6.0 * (p_hi - med))
    lo = max(float(vals.min()), p_lo - 6.0 * (med - p_lo))
    if var is not None:
        sig = np.sqrt(var[np.isfinite(var) & (var > 0)])
        if sig.size:
            s = float(np.median(sig))
            lo, hi = min(lo, med - 2.5 * s), max(hi, med + 2.5 * s)
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.06 * (hi - lo)
    return float(lo - pad), float(hi + 1.5 * pad)


def _pick_tag(obj: ObjectData, tag: str | None) -> str:
    """The spectrum to draw: *tag*, else the summary's ``SNRTAG`` unless a later step (xcorr,
    deblend) added a better one (:data:`~ifu_extract.sourcefile.BEST_TAGS`)."""
    if tag:
        if tag not in obj.spectra:
            raise KeyError(f"no spectrum {tag} (has {', '.join(sorted(obj.spectra))})")
        return tag
    best = best_tag(obj.spectra)
    snrtag = str(obj.header.get("SNRTAG", "")).strip()
    if snrtag in obj.spectra:
        if best is not None and snrtag in BEST_TAGS and BEST_TAGS.index(best) < BEST_TAGS.index(snrtag):
            return best
        return snrtag
    chosen = best or next(iter(sorted(obj.spectra)), None)
    if chosen is None:
        raise KeyError("the Source file has no spectrum")
    return chosen


def _reference_tag(obj: ObjectData, tag: str) -> str | None:
    """A plain extraction to draw under a deblended / cross-correlated spectrum."""
    if not tag.startswith(("DEBLEND", "XCOR")):
        return None
    for ref in ("MUSE_PSF_SKYSUB", "MUSE_WHITE_SKYSUB", "MUSE_TOT_SKYSUB", "MUSE_PSF", "MUSE_TOT"):
        if ref in obj.spectra:
            return ref
    return None


def _mark_lines(ax, waves, *, color, lw, alpha, ls="solid", ymin=0.0, ymax=1.0, animated=False):
    if not len(waves):
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.vlines(waves, ymin, ymax, transform=trans, colors=color, linewidths=lw, alpha=alpha,
              linestyles=ls, zorder=1, animated=animated)


def _label_lines(ax, items, y, *, color, fontsize=5.5, min_sep_frac=0.011, va="bottom",
                 rotation=90, animated=False):
    """Labels at axes height *y* (rotated), skipping ones that would overlap the previous."""
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    x0, x1 = ax.get_xlim()
    last = -np.inf
    for w, text in items:
        if not text or not x0 <= w <= x1:
            continue
        if (w - last) < min_sep_frac * (x1 - x0):
            continue
        ax.text(w, y, text, transform=trans, rotation=rotation, fontsize=fontsize, color=color,
                ha="center", va=va, clip_on=False, animated=animated)
        last = w


def _sky_label(line) -> str:
    return f"{line.wave:.0f}" if line.species == "OH" else line.label


def column_samples(px: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the samples of a polyline that draw the same picture at screen resolution.

    Parameters
    ----------
    px : numpy.ndarray
        x of the samples in display pixels, non-decreasing.
    y : numpy.ndarray
        Values; NaN breaks the line.

    Returns
    -------
    numpy.ndarray
        Sorted indices: in every pixel column its lowest and its highest finite sample (so that
        every spike and dip is drawn to its full height), the first and last sample of every
        finite run and the first NaN of every gap (so that gaps stay where they are).  All
        samples when there are fewer than three per column.  (Ties keep every tied sample.)
    """
    n = y.size
    col = np.floor(px).astype(np.int64)
    if n == 0 or n < 3 * (col[-1] - col[0] + 1) or np.any(col[1:] < col[:-1]):
        return np.arange(n)
    finite = np.isfinite(y)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    counts = np.diff(np.r_[starts, n])
    low = np.where(finite, y, np.inf)
    high = np.where(finite, y, -np.inf)
    is_low = finite & (low == np.repeat(np.minimum.reduceat(low, starts), counts))
    is_high = finite & (high == np.repeat(np.maximum.reduceat(high, starts), counts))
    run_start = finite != np.r_[not finite[0], finite[:-1]]
    run_end = finite & ~np.r_[finite[1:], False]
    return np.flatnonzero(is_low | is_high | run_start | run_end)


def _band_polygons(x, low, high) -> list[np.ndarray]:
    """Polygons of the band between *low* and *high*, one per run of finite samples (what
    ``fill_between`` draws; not thinned, so that one noisy channel stays as narrow as it is)."""
    good = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    idx = np.flatnonzero(good)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []
    return [np.concatenate([np.column_stack([x[r], high[r]]), np.column_stack([x[r], low[r]])[::-1]])
            for r in runs]


class _SpectrumFigure:
    """The spectrum figure of one wavelength range, medium and key, kept from object to object.

    What is the same for every object (wavelength axes, telluric bands, sky lines and their
    labels, the flux axis labels, the key) is drawn once and kept as a background; each object
    restores it and draws its own artists (spectra, band, flux ticks, redshifted lines, title)
    over it in z-order.  Text is what costs most to draw, and most of this figure's is shared.
    """

    def __init__(self, *, xlim: tuple, medium: str, has_sky: bool, key: str, ylabel: str,
                 dpi: int):
        self.fig = fig = new_figure(*_SPEC_SIZE, dpi)
        left, right, top = 0.075, 0.985, 0.80
        if has_sky:
            ax = fig.add_axes([left, 0.35, right - left, top - 0.35])
            axs = fig.add_axes([left, 0.11, right - left, 0.21], sharex=ax)
        else:
            ax = fig.add_axes([left, 0.12, right - left, top - 0.12])
            axs = None
        # The flux labels sit at a fixed place by the figure's left edge (room for 10-character
        # tick labels), not next to the tick labels: then they are drawn once, with the rest.
        for a, text in ((ax, ylabel), (axs, "sky")):
            if a is not None:
                box = a.get_position()
                fig.text(0.014, (box.y0 + box.y1) / 2, text, rotation=90, ha="center",
                         va="center", fontsize=6.5)
                a.yaxis.set_label_coords(0.0, 0.5)   # its own label is empty: no need to place it
        self.ax, self.axs = ax, axs
        ax.set_xlim(*xlim)
        for lo, hi, _name in telluric_bands(*xlim, medium=medium):
            ax.axvspan(lo, hi, color="#f0f0f0", lw=0, zorder=0)
        lines = sky_lines(*xlim, medium=medium)
        self.sky_lines = [ln.wave for ln in lines]
        self.strong = [ln.wave for ln in lines if ln.strong]
        _mark_lines(ax, self.strong, color=_SKY, lw=0.7, alpha=0.6)
        _mark_lines(ax, [ln.wave for ln in lines if not ln.strong], color=_SKY, lw=0.5, alpha=0.35)
        _label_lines(ax, [(ln.wave, _sky_label(ln) if ln.strong else "") for ln in lines], 1.01,
                     color=_BLUE)
        ax.tick_params(labelsize=7, length=2.5, pad=1.5)
        xlabel = f"wavelength ({medium}, Å)"
        if axs is not None:
            unit = f" ({ylabel} per spaxel)" if ylabel != "flux" else " (per spaxel)"
            axs.text(0.004, 0.95, "local sky: mean of the sky mask" + unit, transform=axs.transAxes,
                     ha="left", va="top", fontsize=6, color="#333333",
                     bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.0))
            _mark_lines(axs, self.strong, color=_SKY, lw=0.7, alpha=0.6)
            axs.tick_params(labelsize=7, length=2.5, pad=1.5)
            ax.tick_params(labelbottom=False)
            axs.set_xlabel(xlabel, fontsize=7, labelpad=1)
        else:
            ax.set_xlabel(xlabel, fontsize=7, labelpad=1)
        fig.text(0.5, 0.94, key, ha="center", va="top", fontsize=6.5, color="#444444")
        self.title = fig.text(0.5, 0.99, "", ha="center", va="top", fontsize=8, fontweight="bold",
                              animated=True)
        # Drawn per object: the flux axes, and the frames (so that they stay over the band).
        for a in (ax, axs):
            if a is not None:
                a.yaxis.set_animated(True)
                for spine in a.spines.values():
                    spine.set_animated(True)
        with text_style():
            fig.canvas.draw()
        self.background = fig.canvas.copy_from_bbox(fig.bbox)
        box = ax.get_window_extent()
        self._px = (float(box.x0), float(box.width) / (xlim[1] - xlim[0]), float(xlim[0]))

    def pixels(self, wave: np.ndarray) -> np.ndarray:
        """Display x (pixels) of wavelengths."""
        x0, per, w0 = self._px
        return x0 + (np.asarray(wave, dtype=float) - w0) * per

    def begin(self) -> None:
        """Restore the background and remove the previous object's artists."""
        self.fig.canvas.restore_region(self.background)
        for a in (self.ax, self.axs):
            if a is None:
                continue
            for artist in [*a.lines, *a.collections, *a.patches, *a.texts]:
                if artist.get_animated():
                    artist.remove()

    def finish(self) -> None:
        """Draw the object's artists over the background, as a full draw would order them."""
        with text_style():
            for a in (self.ax, self.axs):
                if a is None:
                    continue
                mine = [c for c in a.get_children() if c.get_animated() and c.get_visible()]
                for artist in sorted(mine, key=lambda c: c.get_zorder()):   # stable, as Axes.draw
                    a.draw_artist(artist)
            self.fig.draw_artist(self.title)

    def line(self, ax, wave, values, **kwargs):
        """Plot *values* with only the samples :func:`column_samples` keeps."""
        keep = column_samples(self.pixels(wave), values)
        return ax.plot(wave[keep], values[keep], animated=True, **kwargs)


def plot_spectrum(obj: ObjectData, path, *, tag: str | None = None, smooth: int = 5,
                  dpi: int = DEFAULT_DPI) -> PlotInfo:
    """Write the spectrum figure of one object (see the module description).

    The curves are drawn with, in every pixel column, their lowest and highest channel (and
    the edges of gaps): what the full curve covers at the figure's resolution.

    Parameters
    ----------
    obj : ObjectData
    path : str or os.PathLike
        PNG to write (atomically).
    tag : str, optional
        Spectrum to draw (default: the summary's ``SNRTAG``, or a better one added later).
    smooth : int
        Width (channels) of the inverse-variance weighted running mean drawn over the raw
        spectrum; 1 draws the raw spectrum only.
    dpi : int

    Returns
    -------
    PlotInfo
        With the sky lines and redshifted lines marked, and the plotted range.
    """
    tag = _pick_tag(obj, tag)
    wave, flux, var = obj.spectra[tag]
    finite = np.isfinite(flux)
    if not finite.any():
        raise ValueError(f"spectrum {tag} has no finite value")
    idx = np.nonzero(finite)[0]
    wmin, wmax = float(wave[idx[0]]), float(wave[idx[-1]])
    span = max(wmax - wmin, 1.0)
    xlim = (wmin - 0.005 * span, wmax + 0.005 * span)
    has_sky = "MUSE_SKY" in obj.spectra
    smooth = max(int(smooth), 1)
    ref = _reference_tag(obj, tag)
    z = obj.z
    z_items = []
    if np.isfinite(z) and z > -0.01:
        for rest, label, _emission in _Z_LINES:
            obs = rest * (1.0 + z)
            obs = float(vacuum_to_air(obs)) if obj.medium == "air" else obs
            if xlim[0] <= obs <= xlim[1]:
                z_items.append((obs, label))
    z_marked = [w for w, _label in z_items]
    key = ["grey: per channel", "blue band: ±1σ"]
    if smooth > 1:
        key.append(f"black: smoothed ({smooth} channels, 1/σ² weights)")
    if ref is not None:
        key.append(f"orange: {ref}")
    key.append("blue lines: night-sky lines; shaded: telluric bands")
    if z_marked:
        key.append("green: lines at the catalogue z")
    key = "; ".join(key)
    ylabel = display_unit(obj.unit) if obj.unit else ""
    ylabel = ylabel if ylabel and len(ylabel) < 34 else "flux"
    dpi = int(dpi)
    figure = kept_figure(("spectrum", xlim, obj.medium, has_sky, key, ylabel, dpi),
                          lambda: _SpectrumFigure(xlim=xlim, medium=obj.medium, has_sky=has_sky,
                                                  key=key, ylabel=ylabel, dpi=dpi))
    figure.begin()
    ax, axs = figure.ax, figure.axs

    sm, _ = _smooth(flux, var, smooth)
    sig = None if var is None else np.sqrt(np.where(np.isfinite(var) & (var >= 0), var, np.nan))
    if sig is not None:
        polys = _band_polygons(wave, flux - sig, flux + sig)
        if polys:
            ax.add_collection(PolyCollection(polys, facecolors="#b9d7ec", linewidths=0, zorder=2,
                                             animated=True), autolim=False)
    figure.line(ax, wave, flux, color="#666666", lw=0.45, zorder=3)
    if ref is not None:
        rw, rf, rv = obj.spectra[ref]
        rsm, _ = _smooth(rf, rv, smooth)
        figure.line(ax, rw, rsm, color=_ORANGE, lw=0.6, alpha=0.9, zorder=3)
    if smooth > 1:
        figure.line(ax, wave, sm, color="black", lw=0.7, zorder=4)
    ax.axhline(0.0, color="#999999", lw=0.5, zorder=1, animated=True)
    ax.set_ylim(*_limits(flux, var, sm, wave, figure.strong))
    if z_items:
        _mark_lines(ax, z_marked, color=_GREEN, lw=0.9, alpha=0.9, ymin=0.93, animated=True)
        _label_lines(ax, z_items, 0.92, color=_GREEN, fontsize=6, va="top", rotation=0,
                     min_sep_frac=0.022, animated=True)
    if axs is not None:
        sw, sf, _ = obj.spectra["MUSE_SKY"]
        figure.line(axs, sw, sf, color=_BLUE, lw=0.5)
        good = sf[np.isfinite(sf)]
        lo, hi = np.percentile(good, [0.5, 99.9]) if good.size else (0.0, 1.0)
        # Always set: the axes are reused, their limits must not come from the previous object.
        axs.set_ylim(min(lo, 0.0), hi + 0.05 * (hi - lo) if hi > lo else hi + 1.0)
    snr = as_float(obj.header.get("SNRMED", "nan"))
    parts = [f"ID {obj.id}", tag, f"median S/N {snr:.1f}" if np.isfinite(snr) else "median S/N n/a"]
    if np.isfinite(z):
        parts.append(f"z = {z:.4f}")
    parts.append(f"{obj.header.get('NSPAX', '?')} spaxels ({obj.header.get('MASKUSED', '?')}), "
                 f"sky {obj.header.get('NSKY', '?')}")
    status = obj.status if len(obj.status) <= 60 else obj.status[:57] + "..."
    parts.append(status)
    figure.title.set_text("  ·  ".join(str(p) for p in parts))
    figure.finish()
    size = write_png(figure.fig, path)
    return PlotInfo(Path(path), size, sky_lines=list(figure.sky_lines), z_lines=z_marked,
                    xlim=xlim, tag=tag)

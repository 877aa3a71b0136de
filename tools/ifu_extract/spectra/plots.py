"""Quick-look graphics of spectra: a preview, a grid of previews, a stacked image.

All functions take a :class:`~.access.SpectraBatch` and return PNG bytes (or an array), drawn
with matplotlib's Agg backend (no display needed); the output is deterministic.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InputError
from .access import SpectraBatch
from .storefile import MASK_BAD, MASK_NODATA

__all__ = ["preview_png", "grid_png", "stacked_array", "stacked_png", "MAX_GRID"]

#: Most panels in one grid page.
MAX_GRID = 100


def _figure(w, h):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _draw(ax, batch: SpectraBatch, i: int, small: bool = False):
    wave = batch.wavelength(i)
    flux = batch.plane("flux", i).astype(float)
    mask = batch.plane("mask", i) if "mask" in batch.planes else np.zeros(len(flux), int)
    flux = np.where((mask & (MASK_NODATA | MASK_BAD)) != 0, np.nan, flux)
    ax.plot(wave, flux, lw=0.6, color="k", label="flux")
    if "model" in batch.planes:
        ax.plot(wave, batch.plane("model", i), lw=0.6, color="tab:red", label="model")
    if "ivar" in batch.planes and not small:
        ivar = batch.plane("ivar", i).astype(float)
        with np.errstate(divide="ignore"):
            err = np.where(ivar > 0, 1.0 / np.sqrt(np.maximum(ivar, 1e-30)), np.nan)
        ax.plot(wave, err, lw=0.5, color="tab:blue", alpha=0.6, label="error")
    m = batch.meta[i]
    z = m.get("z")
    z = f"  z={z:.4f}" if z is not None and np.isfinite(z) else ""
    ax.set_title(f"{m['specid']}{z}", fontsize=6 if small else 9)
    ax.tick_params(labelsize=5 if small else 8)
    if not small:
        ax.set_xlabel("wavelength (Angstrom, %s)" % m.get("medium", ""), fontsize=8)
        ax.set_ylabel(m.get("flux_unit") or "flux", fontsize=7)
        ax.legend(fontsize=6, loc="upper right")


def preview_png(batch: SpectraBatch, i: int = 0) -> bytes:
    """PNG (800 x 250 pixels) of spectrum *i*: flux, model when present, error."""
    fig = _figure(8, 2.5)
    ax = fig.add_axes((0.08, 0.2, 0.9, 0.68))
    _draw(ax, batch, i)
    return _png(fig)


def grid_png(batch: SpectraBatch, nx: int, ny: int) -> bytes:
    """PNG of an ``nx`` x ``ny`` grid of small previews (row-major, spectra in batch order)."""
    fig = _figure(2.4 * nx, 1.5 * ny)
    for k in range(min(len(batch), nx * ny)):
        ax = fig.add_subplot(ny, nx, k + 1)
        _draw(ax, batch, k, small=True)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.92, hspace=0.6, wspace=0.3)
    return _png(fig)


def stacked_array(batch: SpectraBatch, yflip: bool = False) -> np.ndarray:
    """Image of an aligned batch, one spectrum per row: ``(n, L)`` float32 flux, NaN where a
    channel is padding or bad.

    Row 0 is the first id, which a picture shows at the bottom (``origin='lower'``); *yflip*
    reverses the rows, putting the first id at the top.
    """
    if not batch.aligned:
        raise ValueError("a stacked image needs aligned spectra")
    img = np.array(batch.plane("flux"), dtype=np.float32)
    if "mask" in batch.planes:
        img[(batch.plane("mask") & (MASK_NODATA | MASK_BAD)) != 0] = np.nan
    return img[::-1].copy() if yflip else img


def stacked_png(batch: SpectraBatch, yflip: bool = False, *, cmap: str = "gray",
                inverse: bool = False, thickness: int = 1, xscale: float = 1.0,
                yscale: float = 1.0, width: int = 0, height: int = 0) -> bytes:
    """The stacked image as a PNG, one pixel row per spectrum (``thickness`` rows each), first
    id at the bottom (at the top with *yflip*); scaled between the 1st and 99th percentiles,
    padding black.

    Parameters
    ----------
    cmap : str
        A matplotlib colour map; *inverse* reverses it.
    thickness : int
        Pixel rows per spectrum (1-20).
    xscale, yscale : float
        Image scale factors (0.05-20), nearest-neighbour; *width*/*height* (pixels, 0: from
        the scale) set the size directly.  The image is at most 8192 x 16384 pixels.

    Notes
    -----
    Memory: the float32 image, one byte per pixel of colour index and three of RGB, no float64
    copy (a 4096-row stack of 3681-channel spectra takes about 120 MB).
    """
    from matplotlib import colormaps
    from PIL import Image

    if cmap not in colormaps:
        raise InputError("cmap", f"unknown colour map {cmap[:40]!r}",
                         "use a matplotlib name such as gray, viridis, magma")
    thickness = int(thickness)
    if not 1 <= thickness <= 20:
        raise InputError("thickness", f"{thickness} pixel rows per spectrum", "use 1-20")
    for name, v in (("xscale", xscale), ("yscale", yscale)):
        if not 0.05 <= float(v) <= 20:
            raise InputError(name, f"scale {v} is outside 0.05-20", "use a factor near 1")
    img = stacked_array(batch, yflip)[::-1]  # PNG rows go top-down: first id at the bottom
    del batch
    # percentiles of at most ~10^6 evenly strided pixels (all of them in smaller images)
    sample = img.reshape(-1)[::max(1, img.size // 1_000_000)]
    finite = sample[np.isfinite(sample)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    del finite, sample
    if hi <= lo:
        hi = lo + 1.0
    lut = colormaps[cmap].reversed() if inverse else colormaps[cmap]
    lut = (np.asarray(lut(np.linspace(0, 1, 255))[:, :3]) * 255 + 0.5).astype(np.uint8)
    lut = np.vstack([lut, np.zeros((1, 3), np.uint8)])  # index 255: no data (black)
    index = np.empty(img.shape, dtype=np.uint8)
    bad = ~np.isfinite(img)
    np.subtract(img, np.float32(lo), out=img)
    np.multiply(img, np.float32(254.0 / (hi - lo)), out=img)
    np.clip(img, 0, 254, out=img)
    img[bad] = 0
    np.copyto(index, img, casting="unsafe")
    index[bad] = 255
    del img, bad
    n, L = index.shape
    ny = int(height) or max(1, int(round(n * thickness * float(yscale))))
    nx = int(width) or max(1, int(round(L * float(xscale))))
    if not (1 <= nx <= 8192 and 1 <= ny <= 16384):
        raise InputError("width, height", f"a {nx} x {ny} image is too large",
                         "ask for fewer spectra or a smaller scale")
    if (ny, nx) != (n, L):
        index = index[(np.arange(ny) * n) // ny][:, (np.arange(nx) * L) // nx]
    buf = io.BytesIO()
    Image.fromarray(lut[index]).save(buf, format="png")
    return buf.getvalue()

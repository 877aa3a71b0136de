"""Quick-look plots of pixel tables: sky positions by IFU, detector images, corrections.

All plots are PNG files written atomically with the Agg backend (no display needed).  The sky
plot draws a deterministic subsample of the rows (every n-th row), so its cost does not grow
with the table.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..errors import InputError, ParameterError
from ..fitsout import atomic_path
from .header import NIFU, NSLICE
from .origin import IFU_MASK, IFU_SHIFT
from .sky import SkyFrame, sky_positions

__all__ = ["plot_sky", "plot_detector", "plot_corrections", "ifu_colors"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def ifu_colors() -> np.ndarray:
    """24 distinguishable RGBA colours, one per IFU (index 0 = IFU 1)."""
    from matplotlib import colormaps

    a = colormaps["tab20"](np.linspace(0, 1, 20))
    b = colormaps["tab20b"](np.linspace(0, 1, 20))[[1, 5, 9, 13]]
    return np.concatenate([a, b])


def _save(fig, dest, dpi):
    plt = _pyplot()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": "ifu-extract"})
    plt.close(fig)


def plot_sky(table, dest, *, max_points: int = 200_000, title: str | None = None,
             dpi: int = 110) -> int:
    """Sky positions of (a subsample of) the rows, coloured by IFU; returns points drawn.

    Axes are offsets from the field centre in arcsec (east left, north up).
    """
    frame = SkyFrame.of(table)
    step = max(1, -(-table.nrows // max_points))
    idx = np.arange(0, table.nrows, step)
    x = table.raw("xpos")[idx].astype(np.float32)
    y = table.raw("ypos")[idx].astype(np.float32)
    o = table.raw("origin")[idx].astype(np.int32)
    ra, dec = sky_positions(frame, x, y)
    dx = (ra - frame.xc) * 3600 * np.cos(np.deg2rad(frame.yc))
    dy = (dec - frame.yc) * 3600
    ifu = (o >> IFU_SHIFT) & IFU_MASK
    colors = ifu_colors()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 6.4), layout="constrained")
    ax.scatter(dx, dy, s=0.5, c=colors[np.clip(ifu - 1, 0, NIFU - 1)], lw=0, rasterized=True)
    for i in np.unique(ifu):
        sel = ifu == i
        ax.text(np.median(dx[sel]), np.median(dy[sel]), str(i), fontsize=7, ha="center",
                va="center", color="k", alpha=0.8)
    ax.set_xlabel("RA offset (arcsec, east to the left)")
    ax.set_ylabel("Dec offset (arcsec)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.set_title(title or f"{table.path.name}: {table.nrows} rows ({idx.size} shown), by IFU",
                 fontsize=9)
    _save(fig, dest, dpi)
    return int(idx.size)


def plot_detector(images, dest, *, which: str = "data", title: str | None = None,
                  dpi: int = 110) -> None:
    """A detector image (``data`` or ``wave``) of :class:`~.detimage.DetectorImages`."""
    arr = images.data if which == "data" else images.wave
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise ParameterError(dest, "the detector image is empty", "check {ifu} and the selection",
                             params=("ifu",))
    # Flagged pixels and sky lines reach far above the sky: clip the colour scale.
    vmin, vmax = np.percentile(finite, [2, 97]) if which == "data" else (finite.min(),
                                                                          finite.max())
    plt = _pyplot()
    ny, nx = arr.shape
    fig, ax = plt.subplots(figsize=(8.0, 8.0 * min(1.5, max(0.6, ny / max(nx, 1)))),
                           layout="constrained")
    im = ax.imshow(arr, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis",
                   interpolation="nearest", aspect="auto",
                   extent=(images.xstart - 0.5, images.xstart + nx - 0.5,
                           images.ystart - 0.5, images.ystart + ny - 0.5))
    fig.colorbar(im, ax=ax, label="lambda (Angstrom)" if which == "wave" else "data")
    ax.set_xlabel("detector x (pixel)")
    ax.set_ylabel("detector y (pixel)")
    ax.set_title(title or f"IFU {images.ifu}: {which} ({images.nrows} rows)", fontsize=9)
    _save(fig, dest, dpi)


def plot_corrections(table_hdul, dest, *, dpi: int = 90) -> None:
    """Self-calibration corrections: one panel per IFU, one curve per slice (vs bin)."""
    from astropy.table import Table

    hdu = table_hdul["AUTOCAL_FACTORS"] if "AUTOCAL_FACTORS" in table_hdul else (
        table_hdul[1] if len(table_hdul) > 1 else table_hdul[0])
    if not isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
        raise InputError(table_hdul.filename() or dest, "is not a corrections table (no table extension)",
                         "give the corrections file written by 'ifu-extract pixtable selfcal'")
    t = Table.read(hdu)
    for need in ("ifu", "sli", "quad", "corr"):
        if need not in t.colnames:
            raise InputError(dest, f"the corrections table has no '{need}' column",
                             "give the table written by 'ifu-extract pixtable selfcal'")
    plt = _pyplot()
    from matplotlib import colormaps

    palette = colormaps["Spectral"](np.linspace(0, 1, NSLICE))
    fig, axes = plt.subplots(6, 4, figsize=(12, 15), sharex=True, sharey=True)
    ifu, sli, quad, corr = (np.asarray(t[c]) for c in ("ifu", "sli", "quad", "corr"))
    npts = np.asarray(t["npts"]) if "npts" in t.colnames else np.ones(len(t))
    for i in range(1, NIFU + 1):
        ax = axes.flat[i - 1]
        for s in range(1, NSLICE + 1):
            sel = (ifu == i) & (sli == s) & (npts > 0)
            if sel.any():
                order = np.argsort(quad[sel])
                ax.plot(quad[sel][order], corr[sel][order], color=palette[s - 1], lw=0.8)
        ax.set_title(f"IFU {i}", fontsize=8)
        ax.grid(True, lw=0.3)
    fig.suptitle("Correction factor per wavelength bin (x), slice (colour) and IFU", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, dest, dpi)

"""The detection check plot: the image, arcsinh-scaled, with each source's Kron aperture and ID.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it works
headless (Galaxy, CI) and the same inputs give the same PNG bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse

from .detect import FLAG_CIRCLE, DetectionResult
from .image import Image

__all__ = ["plot_detections", "asinh_scale"]


def asinh_scale(sub: np.ndarray, rms: float) -> tuple[np.ndarray, float, float]:
    """Arcsinh stretch of a background-subtracted image, and its display limits.

    The softening is the background RMS: noise stays linear, bright cores are compressed
    logarithmically (Lupton et al. 1999).

    Parameters
    ----------
    sub : numpy.ndarray
        ``(ny, nx)`` background-subtracted image (NaN allowed).
    rms : float
        Background RMS, image units.

    Returns
    -------
    scaled : numpy.ndarray
        ``arcsinh(sub / rms)``.
    vmin, vmax : float
        Display limits: -2 sigma, and the 99.8th percentile (at least 5 sigma).
    """
    soft = rms if rms > 0 and np.isfinite(rms) else max(float(np.nanstd(sub)), 1e-30)
    scaled = np.arcsinh(sub / soft)
    finite = scaled[np.isfinite(scaled)]
    vmax = float(np.percentile(finite, 99.8)) if finite.size else 1.0
    return scaled, float(np.arcsinh(-2.0)), max(vmax, float(np.arcsinh(5.0)))


def plot_detections(image: Image, result: DetectionResult, path, *, title: str | None = None,
                    dpi: int = 100) -> Path:
    """Write a PNG of *image* with the Kron aperture and ID of every detected source.

    Parameters
    ----------
    image : Image
        The image detection ran on.
    result : DetectionResult
        Output of :func:`~ifu_extract.detect.detect_sources` on *image*.
    path : str or os.PathLike
        PNG file to write (the caller makes the write atomic).
    title : str, optional
        First title line (e.g. the input file name).
    dpi : int
        Resolution; the figure is about 8 inches on its long side.

    Returns
    -------
    pathlib.Path
    """
    ny, nx = image.shape
    sub = np.asarray(image.data, dtype=np.float64) - result.background
    scaled, vmin, vmax = asinh_scale(sub, result.global_rms)
    side = 8.0
    width, height = (side, side * ny / nx) if nx >= ny else (side * nx / ny, side)
    fig = Figure(figsize=(max(width, 4.0) + 1.2, max(height, 4.0) + 0.9))
    FigureCanvasAgg(fig)
    if result.wcs is not None:
        ax = fig.add_subplot(projection=result.wcs)
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
    else:
        ax = fig.add_subplot()
        ax.set_xlabel("x (pixel, 0-based)")
        ax.set_ylabel("y (pixel, 0-based)")
    cmap = colormaps["gray"].with_extremes(bad="#5a1e1e")
    ax.imshow(scaled, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")

    cat = result.catalog
    rmin = result.params.get("min_radius", 1.75)
    fontsize = 9 if len(cat) <= 50 else (7 if len(cat) <= 300 else 5)
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for row in cat:
        x, y = float(row["x"]), float(row["y"])
        if row["flag"] & FLAG_CIRCLE:
            patch = Circle((x, y), rmin)
            reach = rmin
        else:
            size = float(row["kron_radius"])
            patch = Ellipse((x, y), 2 * size * float(row["a"]), 2 * size * float(row["b"]),
                            angle=float(row["theta"]))
            reach = size * float(row["b"])
        patch.set(facecolor="none", edgecolor="#ff4040", linewidth=1.0)
        ax.add_patch(patch)
        ax.text(x + 0.7 * reach + 0.5, y + 0.7 * reach + 0.5, str(row["ID"]), color="#ffd040",
                fontsize=fontsize, path_effects=outline, clip_on=True)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    p = result.params
    lines = [title] if title else []
    plural = "" if len(cat) == 1 else "s"
    lines.append(f"{len(cat)} source{plural} above {p['thresh']:g} x {p['thresh_type']} "
                 f"(minarea {p['minarea']}, kernel {p['kernel']}); ellipses: Kron apertures; "
                 f"arcsinh scale")
    ax.set_title("\n".join(lines), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    # No Software/date metadata: the same inputs give the same bytes.
    fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path

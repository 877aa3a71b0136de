"""The canvases of the QA figures: made once per layout and kept, drawn, written as PNG.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot state), at a fixed size and
DPI, and written by Pillow without date or software metadata (header, resolution, data and end
chunks only), so that the same inputs give the same bytes.  Laying out axes and their ticks costs
more than drawing them, so each worker process keeps a few figures, one per layout
(:func:`kept_figure`), and reuses them from object to object.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..fitsout import atomic_path

__all__ = ["PNG_LEVEL", "text_style", "new_figure", "write_png", "png_bytes", "kept_figure",
           "n_kept", "clear_figure_cache"]

#: Text drawn without hinting: glyphs cost half as much to render at these sizes, as readable.
_RC = {"text.hinting": "no_hinting"}
#: zlib level of the PNGs: higher levels take much longer for files a few per cent smaller
#: (bench/report_png_bench.py).
PNG_LEVEL = 2


def text_style():
    """Context in which the report's figures are drawn (text without hinting)."""
    return rc_context(_RC)


def new_figure(width: float, height: float, dpi: int) -> Figure:
    """A figure of *width* x *height* inches at *dpi* with its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def write_png(fig: Figure, path) -> tuple[int, int]:
    """Write what the Agg canvas of *fig* holds (it must have been drawn) as a PNG, atomically.

    Returns
    -------
    (int, int)
        Width and height in pixels.
    """
    rgba = np.asarray(fig.canvas.buffer_rgba())
    with atomic_path(path, suffix=".png") as tmp:
        Path(tmp).write_bytes(png_bytes(rgba, fig.dpi))
    return rgba.shape[1], rgba.shape[0]


def png_bytes(rgba: np.ndarray, dpi: float) -> bytes:
    """An 8-bit RGB PNG of an ``(h, w, 4)`` uint8 image whose alpha is opaque (it is dropped).

    Pillow at zlib level :data:`PNG_LEVEL`; only the header, resolution (*dpi*), data and end
    chunks are written (no date, no software), so the bytes depend on the pixels and *dpi* alone.
    """
    img = Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), np.ascontiguousarray(rgba),
                           "raw", "RGBA", 0, 1).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_LEVEL, dpi=(float(dpi), float(dpi)))
    return buf.getvalue()


#: Figures kept from object to object in this process, most recently used last.
_KEPT: dict = {}
_MAX_KEPT = 8


def kept_figure(key: tuple, build):
    """The kept figure of layout *key*, made by ``build()`` the first time it is asked for."""
    figure = _KEPT.pop(key, None)
    if figure is None:
        figure = build()
        while len(_KEPT) >= _MAX_KEPT:
            del _KEPT[next(iter(_KEPT))]   # the least recently used
    _KEPT[key] = figure
    return figure


def n_kept() -> int:
    """Figures kept in this process (for tests)."""
    return len(_KEPT)


def clear_figure_cache() -> None:
    """Forget the figures that :func:`~ifu_extract.report.figures.plot_stamps` and
    :func:`~ifu_extract.report.figures.plot_spectrum` keep for reuse.

    They are kept per process, a few layouts at most; the report clears them when it is done.
    The PNGs do not depend on what was drawn before.
    """
    _KEPT.clear()

"""The QA report of extracted objects: per-object figures and a sortable index page.

From a summary table (:mod:`ifu_extract.summary`) and the Source files it names, the report is

``<assets>/qa/<ID>_stamps.png`` and ``<assets>/qa/<ID>_spectrum.png``
    the stamps and spectrum figures of every object with a Source file (:mod:`.figures`);
``index.html``
    one table row per summary row (failed objects included, with their reason), linking to the
    figures and to the Source files (``<assets>/sources/``), sortable and filterable
    (:mod:`.html`).

Modules, in the order the data flows:

:mod:`.loader`
    a Source file read into :class:`ObjectData`;
:mod:`.cache`
    the figures' canvases, kept per layout, and the PNG writer (Pillow);
:mod:`.figures`
    :func:`plot_stamps` and :func:`plot_spectrum`;
:mod:`.driver`
    :func:`draw_figures`: both figures of many objects over worker processes;
:mod:`.html`
    :func:`write_index`.

Which files go where, and writing all of it or nothing, is the ``report`` step's job
(:func:`ifu_extract.steps.report.run_report`).
"""

from .cache import clear_figure_cache
from .driver import (QA_DIR, ObjectPlots, cube_names, draw_figures, figure_name, plot_object,
                     resolve_segmap)
from .figures import DEFAULT_DPI, FIGURES, PlotInfo, plot_spectrum, plot_stamps
from .html import INDEX_NAME, write_index
from .loader import ObjectData, load_object

__all__ = ["QA_DIR", "FIGURES", "DEFAULT_DPI", "INDEX_NAME", "ObjectData", "PlotInfo", "ObjectPlots",
           "load_object", "plot_stamps", "plot_spectrum", "plot_object", "clear_figure_cache",
           "draw_figures", "figure_name", "resolve_segmap", "cube_names", "write_index"]

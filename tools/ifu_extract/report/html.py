"""The report's index page: one table row per summary row, sortable and filterable.

Each row shows the object's status colour-coded (failed objects included, with their reason),
S/N, spaxel counts, white-light flux, a link to the Source file, and its figures in a row of
their own.  Any column sorts and rows filter by status with a small inline script
(``data/report.js``, styled by ``data/report.css``); the page is readable without it.  The folder
is self-contained (no network access) and works inside Galaxy.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .. import __version__
from ..fitsout import atomic_path
from ..summary import status_group
from ..units import display_unit
from .loader import as_float

__all__ = ["INDEX_NAME", "write_index"]

#: File name of the page in a report folder.
INDEX_NAME = "index.html"


def _asset(name: str) -> str:
    return (resources.files("ifu_extract") / "data" / name).read_text(encoding="utf-8")


_NUMERIC = ("SNR_MEDIAN", "N_SPAXELS", "N_SKY", "WHITE_FLUX", "WHITE_FLUX_ERR", "RA", "DEC", "Z")


def _fmt(col: str, text: str) -> str:
    if col in ("SNR_MEDIAN",):
        v = as_float(text)
        return "–" if not np.isfinite(v) else f"{v:.1f}"
    if col in ("WHITE_FLUX", "WHITE_FLUX_ERR"):
        v = as_float(text)
        if not np.isfinite(v):
            return "–"
        if v == 0 or 1e-3 <= abs(v) < 1e7:   # 4 significant digits, no exponent
            digits = 0 if v == 0 else max(0, 3 - int(np.floor(np.log10(abs(v)))))
            return f"{v:.{digits}f}"
        return f"{v:.3e}"
    if col in ("RA", "DEC"):
        v = as_float(text)
        return "–" if not np.isfinite(v) else f"{v:.6f}"
    return text if text.strip() else "–"


def _sort_value(col: str, text: str) -> str:
    if col in _NUMERIC:
        v = as_float(text)
        return "" if not np.isfinite(v) else text.strip()
    return text


def write_index(dest, columns: list[str], rows: list[dict], plots: dict, *, assets_dir=None,
                title: str | None = None, notes: list[str] | None = None) -> Path:
    """Write the index page *dest* (atomically): one table row per summary row.

    Parameters
    ----------
    dest : str or os.PathLike
        The page (``OUTDIR/index.html``).
    columns : list of str
        Summary columns (from :func:`~ifu_extract.summary.read_summary`).
    rows : list of dict
        Summary rows, in the order to show.
    plots : dict
        ``{ID: ObjectPlots}``; objects without an entry have no figures.
    assets_dir : str or os.PathLike, optional
        The folder the page's links are relative to (its ``qa/`` and ``sources/``; default: the
        page's folder).  A Source file is linked when it is there.
    title : str, optional
        Page title (default: ``ifu-extract QA report: <name of assets_dir>``).
    notes : list of str, optional
        Extra lines under the title (cubes, segmentation map used...).

    Returns
    -------
    pathlib.Path
        The index file.
    """
    dest = Path(dest)
    assets = Path(assets_dir) if assets_dir is not None else dest.parent
    esc = html.escape
    title = title or f"ifu-extract QA report: {assets.resolve().name}"
    ids_numeric = all(_is_int(r["ID"]) for r in rows) and rows
    counts = {"ok": 0, "flag": 0, "failed": 0}
    for r in rows:
        counts[status_group(r)] += 1
    unit = display_unit(next((r.get("FLUX_UNIT", "") for r in rows if r.get("FLUX_UNIT", "").strip()), ""))
    has_z = "Z" in columns
    # (header, column, sort kind, tooltip)
    cols = [("#", None, "num", "row of the catalogue"),
            ("ID", "ID", "num" if ids_numeric else "text", "object ID (links to the Source file)"),
            ("Status", "STATUS", "text", "ok, the fallback used, or why the object failed"),
            ("S/N", "SNR_MEDIAN", "num", "median S/N per channel of the SNR tag"),
            ("Tag", "SNR_TAG", "text", "spectrum of the S/N (and of the figure)"),
            ("Spaxels", "N_SPAXELS", "num", "spaxels in the object mask"),
            ("Sky", "N_SKY", "num", "spaxels in the sky mask"),
            ("Mask", "MASKUSED", "text", "object mask used"),
            ("White flux", "WHITE_FLUX", "num", f"white-light flux in the object mask ({unit})"),
            ("±", "WHITE_FLUX_ERR", "num", "its error")]
    if has_z:
        cols.append(("z", "Z", "num", "catalogue redshift"))
    cols += [("RA", "RA", "num", "degrees"), ("Dec", "DEC", "num", "degrees"),
             ("Notes", "NOTES", "text", "extraction and figure notes")]
    # The figures go in a row of their own under each object's row (one <tbody> per object, so
    # that sorting and filtering move both): the page then fits a 1400 px window.
    figures = (("stamps", "white light with segmentation and masks; click to enlarge"),
               ("spectrum", "spectrum with ±1σ band and sky lines; click to enlarge"))
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title>",
           # Galaxy serves the page at .../display?preview=True as well as .../display/: without
           # the slash the figures' relative links would miss the dataset's extra files.
           '<script>(function () { var p = location.pathname; if (/\\/display$/.test(p)) { '
           'var b = document.createElement("base"); b.href = p + "/"; '
           'document.head.appendChild(b); } }());</script>',
           f"<style>\n{_asset('report.css')}</style>", "</head>",
           "<body>", f"<h1>{esc(title)}</h1>",
           '<p class="counts">'
           f'{len(rows)} objects: <span class="badge ok">{counts["ok"]} ok</span> '
           f'<span class="badge flag">{counts["flag"]} with a fallback</span> '
           f'<span class="badge failed">{counts["failed"]} failed</span></p>']
    for line in notes or []:
        out.append(f'<p class="note">{esc(line)}</p>')
    out.append('<p class="note">Click a column header to sort (again to reverse); click a figure '
               "to open it full size. Rows: green ok, amber a fallback was used, red no spectrum."
               "</p>")
    out.append('<div class="controls" id="controls" hidden>'
               '<label>Show <select id="group-filter"><option value="">all</option>'
               '<option value="ok">ok</option><option value="flag">with a fallback</option>'
               '<option value="failed">failed</option><option value="problem">not ok</option>'
               '</select></label> <label>Find <input id="text-filter" type="search" '
               'placeholder="ID or status"></label> <span id="shown"></span></div>')
    out.append('<table id="objects" class="report">')
    head = []
    for name, _col, kind, tip in cols:
        attr = f' data-sort="{kind}"' if kind else ""
        head.append(f'<th{attr} title="{esc(tip, quote=True)}">{esc(name)}</th>')
    out.append("<thead><tr>" + "".join(head) + "</tr></thead>")
    for i, r in enumerate(rows, start=1):
        group = status_group(r)
        obj_id = r["ID"]
        p = plots.get(obj_id)
        cells = []
        for name, col, kind, _tip in cols:
            if name == "#":
                cells.append(f'<td data-value="{i}">{i}</td>')
            elif col == "ID":
                text = esc(obj_id)
                fname = r.get("FILE", "").strip()
                if fname and (assets / fname).is_file():
                    text = f'<a href="{esc(quote(fname), quote=True)}" title="Source file">{text}</a>'
                cells.append(f'<td data-value="{esc(obj_id, quote=True)}">{text}</td>')
            elif col == "STATUS":
                rank = {"failed": 0, "flag": 1, "ok": 2}[group]
                cells.append(f'<td class="status" data-value="{rank}:{esc(r["STATUS"], quote=True)}">'
                             f'{esc(r["STATUS"] or "–")}</td>')
            elif col == "NOTES":
                note = r.get("NOTES", "")
                if p is not None and p.error:
                    note = (note + "; " if note else "") + f"figure failed: {p.error}"
                cells.append(f'<td class="notes">{esc(note) if note else "–"}</td>')
            else:
                text = r.get(col, "")
                cells.append(f'<td data-value="{esc(_sort_value(col, text), quote=True)}">'
                             f"{esc(_fmt(col, text))}</td>")
        figs = []
        for kind_name, tip in figures:
            rel = p.files.get(kind_name) if p is not None else None
            if rel:
                href = esc(quote(rel), quote=True)
                figs.append(f'<a href="{href}" title="{esc(tip, quote=True)}"><img src="{href}" '
                            f'loading="lazy" class="{kind_name}" '
                            f'alt="{kind_name} of {esc(obj_id, quote=True)}"></a>')
        oid = esc(obj_id, quote=True)
        out.append(f'<tbody id="obj-{oid}" class="{group}" data-group="{group}">')
        out.append(f'<tr class="data">{"".join(cells)}</tr>')
        out.append(f'<tr class="figs"><td colspan="{len(cols)}">'
                   + ("".join(figs) if figs else '<span class="empty">no figure</span>')
                   + "</td></tr></tbody>")
    out.append("</table>")
    out.append(f'<p class="footer">Made by ifu-extract {esc(__version__)} '
               "(<code>ifu-extract report</code>). Spectra: <code>sources/&lt;ID&gt;.fits</code> "
               "(MPDAF Source layout); table: <code>summary.tsv</code>.</p>")
    out.append(f"<script>\n{_asset('report.js')}</script>")
    out += ["</body>", "</html>", ""]
    with atomic_path(dest, suffix=".html") as tmp:
        Path(tmp).write_text("\n".join(out), encoding="utf-8")
    return dest


def _is_int(text: str) -> bool:
    return str(text).lstrip("+-").isdigit()


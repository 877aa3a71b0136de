"""``info``: what a pixel table holds, from its headers only (no data read).

The first lines are those of MPDAF's ``PixTable.info()`` (IFUs merged, sky-subtracted,
flux-calibrated, the ``WCS`` keyword with its comment, the HDU list); then rows, layout,
columns with their types and units, limits, exposures and the field centre.
"""

from __future__ import annotations

import io

from astropy.io import fits

from .header import get_keyword

__all__ = ["table_info", "format_info"]


def table_info(table) -> dict:
    """A JSON-friendly description of a :class:`~ifu_extract.pixtable.reader.PixTable`."""
    m = table.meta
    limits = {}
    for name in ("X", "Y", "LAMBDA", "IFU", "SLICE"):
        lo = get_keyword(table.header, f"LIMITS {name} LOW", None)
        hi = get_keyword(table.header, f"LIMITS {name} HIGH", None)
        if lo is not None and hi is not None:
            limits[name.lower()] = [lo, hi]
    return {
        "file": str(table.path),
        "rows": table.nrows,
        "layout": table.layout,
        "columns": {name: {"type": col.dtype.newbyteorder("=").name, "unit": col.unit}
                    for name, col in table.columns.items()},
        "merged_ifus": m.nifu,
        "sky_subtracted": m.skysub,
        "flux_calibrated": m.fluxcal,
        "weighted": m.weighted,
        "wcs": m.wcs_value,
        "wcs_comment": m.wcs_comment,
        "convention": m.convention,
        "sky_coordinates": m.has_sky,
        "center_deg": [m.xc, m.yc] if m.has_sky and m.has_center else None,
        "exposures": [list(r) for r in m.exposures],
        "limits": limits,
    }


def _hdu_listing(path) -> str:
    buf = io.StringIO()
    with fits.open(path, memmap=True) as hdul:
        hdul.info(output=buf)
    return buf.getvalue().rstrip("\n")


def format_info(info: dict) -> str:
    """Human-readable text of :func:`table_info`, MPDAF's ``info()`` lines first."""
    lines = [f"{info['merged_ifus']} merged IFUs went into this pixel table"]
    if info["sky_subtracted"]:
        lines.append("This pixel table was sky-subtracted")
    if info["flux_calibrated"]:
        lines.append("This pixel table was flux-calibrated")
    else:
        lines.append("This pixel table was not flux-calibrated")
    if info["wcs"] is not None:
        lines.append(f"{info['wcs']} ({info['wcs_comment']})")
    else:
        lines.append("Unknown projection")
    lines.append(_hdu_listing(info["file"]))
    lines.append(f"rows: {info['rows']}  layout: {info['layout']}"
                 f" ({'one image per column' if info['layout'] == 'image' else 'binary table'})")
    cols = ", ".join(f"{n} ({c['type']}{', ' + c['unit'] if c['unit'] else ''})"
                     for n, c in info["columns"].items())
    lines.append(f"columns: {cols}")
    if info["center_deg"]:
        lines.append(f"field centre: RA {info['center_deg'][0]:.6f} Dec "
                     f"{info['center_deg'][1]:.6f} deg ({info['convention']})")
    elif info["convention"] not in (None, "positioned", "projected"):
        lines.append(f"coordinates: '{info['convention']}' (not sky coordinates)")
    for name, (lo, hi) in info["limits"].items():
        lines.append(f"limits {name}: {lo} .. {hi}")
    if info["exposures"]:
        lines.append(f"combined exposures: {len(info['exposures'])} (rows "
                     + ", ".join(f"{a}-{b}" for a, b in info["exposures"]) + ")")
    return "\n".join(lines)

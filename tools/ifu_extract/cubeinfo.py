"""``ifu-extract info``: what a cube is, as the tools will read it."""

from __future__ import annotations

import numpy as np

from .cubeio import Cube
from .psfmodel import muse_fsf_curves, muse_fsf_keywords
from .wcsutil import pixel_to_world

__all__ = ["cube_info", "fsf_info", "fsf_header_info", "format_info", "format_fsf"]


def fsf_info(cube: Cube) -> dict | None:
    """MUSE FSF keywords (read as :func:`ifu_extract.psf.psf_from_cube` reads them), or None
    when absent.

    Returns the model name, number of fields, and FWHM (arcsec) and β at the blue and red ends
    of the cube, for each field.
    """
    found = muse_fsf_keywords(cube)
    if found is None:
        return None
    hdr, field_numbers = found
    return fsf_header_info(hdr, field_numbers, (cube.wave[0], cube.wave[-1]), cube.pixscale)


def fsf_header_info(hdr, field_numbers, ends, pixscale: float) -> dict:
    """:func:`fsf_info` of FSF keywords in *hdr*, at the wavelengths *ends* (Angstrom)."""
    ends = np.asarray(ends, dtype=float)
    fields = []
    for field in field_numbers or [None]:
        try:
            fwhm, beta = muse_fsf_curves(hdr, field, ends, pixscale)
        except Exception as exc:  # noqa: BLE001 - mpdaf raises ValueError/KeyError variants
            return {"mode": str(hdr["FSFMODE"]), "error": str(exc)}
        fields.append({"field": field, "fwhm_arcsec": [round(float(v), 4) for v in fwhm],
                       "beta": [round(float(v), 4) for v in beta]})
    return {"mode": str(hdr["FSFMODE"]), "nfields": len(fields), "fields": fields}


def cube_info(cube: Cube) -> dict:
    """A JSON-friendly description of *cube*."""
    ra, dec = pixel_to_world(cube.wcs, (cube.nx - 1) / 2.0, (cube.ny - 1) / 2.0)
    names = [h.name or "PRIMARY" for h in cube.hdul]
    return {
        "file": cube.path.name,  # never the server's internal path (Galaxy datasets)
        "layout": cube.layout,
        "extensions": {
            "data": f"{cube.data_ext}:{names[cube.data_ext]}",
            "variance": None if cube.var_ext is None else f"{cube.var_ext}:{names[cube.var_ext]} ({cube.var_kind})",
            "quality": None if cube.dq_ext is None else f"{cube.dq_ext}:{names[cube.dq_ext]}",
        },
        "shape": {"nwave": cube.nwave, "ny": cube.ny, "nx": cube.nx},
        "spaxel_arcsec": round(cube.pixscale, 6),
        "field_arcsec": [round(cube.nx * cube.pixscale, 3), round(cube.ny * cube.pixscale, 3)],
        "centre_deg": {"ra": round(ra, 7), "dec": round(dec, 7)},
        "wavelength": {"min": round(float(cube.wave[0]), 4), "max": round(float(cube.wave[-1]), 4),
                       "step": round(float(np.median(cube.dwave)), 6), "unit": "Angstrom",
                       "medium": cube.medium},
        "bunit": cube.flux_unit.text,
        "flux_unit": cube.unit_string,
        "per_area": cube.flux_unit.per_area,
        "instrument": cube.instrument,
        "fsf": fsf_info(cube),
    }


def format_info(info: dict) -> str:
    """Human-readable text of :func:`cube_info`."""
    ext = info["extensions"]
    w = info["wavelength"]
    lines = [
        f"file        {info['file']}",
        f"layout      {info['layout']}  (data {ext['data']}, variance {ext['variance'] or 'none'}, "
        f"quality {ext['quality'] or 'none'})",
        f"shape       {info['shape']['nwave']} x {info['shape']['ny']} x {info['shape']['nx']} "
        "(wave, y, x)",
        f"spaxel      {info['spaxel_arcsec']:.4f} arcsec; field {info['field_arcsec'][0]} x "
        f"{info['field_arcsec'][1]} arcsec",
        f"centre      RA {info['centre_deg']['ra']:.6f}  Dec {info['centre_deg']['dec']:.6f} deg",
        f"wavelength  {w['min']:.2f} - {w['max']:.2f} Angstrom, step {w['step']:g} ({w['medium']})",
        f"bunit       {info['bunit'] or '(none)'}  -> {info['flux_unit'] or 'unknown'}"
        + (f" per {info['per_area']}" if info['per_area'] else ""),
        f"instrument  {info['instrument']}",
    ]
    return "\n".join(lines + format_fsf(info["fsf"]))


def format_fsf(fsf: dict | None) -> list[str]:
    """The ``fsf`` lines of :func:`format_info` for :func:`fsf_info`'s dict."""
    if fsf is None:
        return ["fsf         none in the header"]
    if "error" in fsf:
        return [f"fsf         {fsf['mode']} (unreadable: {fsf['error']})"]
    return [f"fsf         {fsf['mode']} field {f['field']}: FWHM {f['fwhm_arcsec'][0]:.3f} -> "
            f"{f['fwhm_arcsec'][1]:.3f} arcsec, beta {f['beta'][0]:.2f} -> {f['beta'][1]:.2f}"
            for f in fsf["fields"]]

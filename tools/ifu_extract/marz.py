"""MARZ export of an output folder: the best spectrum of every object in one FITS file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .sourcefile import SourceFile
from .specio import write_marz

__all__ = ["marz_from_outdir"]


def marz_from_outdir(outdir, dest, tag: str | None = None) -> Path:
    """Write ``dest`` (MARZ FITS) from ``outdir/sources/*.fits`` (best tag, or *tag*)."""
    files = sorted((Path(outdir) / "sources").glob("*.fits"))
    if not files:
        raise InputError(outdir, "has no Source files", "run extract first")
    entries, wave0, medium, unit = [], None, "air", ""
    for path in files:
        source = SourceFile(path)
        wave, flux, var, unit, used, hdr = source.spectrum(tag)
        if wave0 is None:
            wave0 = wave
            medium = str(hdr.get("WAVEMED", "air"))
        if len(wave) != len(wave0) or not np.allclose(wave, wave0):
            raise InputError(path, "has a wavelength grid different from the other objects",
                             "extract all objects with the same --wave-range")
        sky = source.spectrum("MUSE_SKY")[1] if "MUSE_SKY" in source.tags("SPE") else None
        entries.append({"id": hdr["ID"], "ra": hdr["RA"], "dec": hdr["DEC"], "flux": flux,
                        "var": var if var is not None else np.full_like(flux, np.nan), "sky": sky,
                        "comment": used})
    return write_marz(dest, entries, wave0, medium, unit)

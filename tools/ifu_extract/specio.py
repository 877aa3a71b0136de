"""Spectrum formats for other tools: a specutils loader for our Source files, and MARZ FITS.

``import ifu_extract.specio`` registers the reader ``"ifu-extract-source"`` with specutils,
so that ``Spectrum.read("sources/12.fits")`` (auto-identified) or
``Spectrum.read(path, format="ifu-extract-source", tag="MUSE_TOT")`` returns a
``specutils.Spectrum`` with flux unit, Angstrom spectral axis and variance uncertainty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from .fitsout import add_provenance, write_hdulist
from .sourcefile import read_source_spectrum, tags_of
from .units import parse_flux_unit

__all__ = ["FORMAT_NAME", "identify_source", "read_source", "write_marz"]

FORMAT_NAME = "ifu-extract-source"


def identify_source(origin, *args, **kwargs) -> bool:
    """True for FITS files written by ifu-extract in the Source layout."""
    path = args[0] if args else None
    if not isinstance(path, (str, Path)):
        return False
    try:
        with fits.open(path) as hdul:
            return hdul[0].header.get("FROM") == "ifu-extract" and bool(
                tags_of([h.name for h in hdul], "SPE"))
    except Exception:  # noqa: BLE001 - not ours
        return False


def read_source(path, tag: str | None = None, **kwargs):
    """Read one spectrum of a Source file as ``specutils.Spectrum``.

    Parameters
    ----------
    path : str or os.PathLike
    tag : str, optional
        Spectrum tag (``MUSE_PSF_SKYSUB``...); the best available by default.
    """
    from astropy.nddata import VarianceUncertainty
    from specutils import Spectrum

    wave, flux, var, unit_text, tag, hdr = read_source_spectrum(path, tag)
    unit = parse_flux_unit(unit_text).unit or u.dimensionless_unscaled
    meta = {"header": hdr, "tag": tag, "id": hdr.get("ID")}
    unc = None if var is None else VarianceUncertainty(var * unit**2)
    mask = ~np.isfinite(flux)
    return Spectrum(flux=np.nan_to_num(flux) * unit, spectral_axis=wave * u.AA, uncertainty=unc,
                    mask=mask, meta=meta)


def _register():
    try:
        from specutils.io.registers import data_loader
    except ImportError:  # specutils absent: the MARZ writer still works
        return
    try:
        data_loader(FORMAT_NAME, identifier=identify_source, extensions=["fits"], priority=10)(read_source)
    except Exception:  # noqa: BLE001 - already registered (module reloaded)
        pass


_register()


def write_marz(path, entries, wave, medium: str, flux_unit: str = "") -> Path:
    """Write spectra for MARZ (redshifting): one row per object.

    Parameters
    ----------
    path : str or os.PathLike
    entries : list of dict
        ``{"id", "ra", "dec", "flux", "var", "sky"}`` with ``(n_wave,)`` arrays (``sky`` optional).
    wave : numpy.ndarray
        ``(n_wave,)`` Angstrom, common to all.
    medium : str
        ``"air"`` or ``"vacuum"``; MARZ reads the ``VACUUM`` keyword.
    """
    n = len(entries)
    nw = len(wave)
    inten = np.full((n, nw), np.nan, dtype=np.float32)
    var = np.full((n, nw), np.nan, dtype=np.float32)
    sky = np.zeros((n, nw), dtype=np.float32)
    for i, e in enumerate(entries):
        inten[i], var[i] = e["flux"], e["var"]
        if e.get("sky") is not None:
            sky[i] = np.nan_to_num(e["sky"])
    prim = fits.PrimaryHDU(inten)
    prim.header["EXTNAME"] = "INTENSITY"
    prim.header["VACUUM"] = (medium == "vacuum", "wavelengths in vacuum (else air)")
    if flux_unit:
        prim.header["BUNIT"] = flux_unit
    add_provenance(prim.header, "extract")
    fib = Table({"NAME": [str(e["id"]) for e in entries],
                 "TYPE": ["P"] * n,  # program target
                 # 2dF/MARZ convention: RA and DEC in radians.
                 "RA": np.deg2rad([float(e["ra"]) for e in entries]),
                 "DEC": np.deg2rad([float(e["dec"]) for e in entries]),
                 "MAGNITUDE": np.zeros(n), "COMMENT": [e.get("comment", "") for e in entries]})
    fib_hdu = fits.table_to_hdu(fib)
    fib_hdu.name = "FIBRES"
    hdul = fits.HDUList([prim, fits.ImageHDU(var, name="VARIANCE"),
                         fits.ImageHDU(np.asarray(wave, dtype=np.float64), name="WAVELENGTH"),
                         fits.ImageHDU(sky, name="SKY"), fib_hdu])
    return write_hdulist(hdul, path)

"""The identity of the cube a product was made from, and the check every consumer makes.

A product made from a cube (a masks file, a continuum-subtracted cube) records, in its primary
header, what that cube *is* — never its file name, since Galaxy and batch systems stage the same
data under other names:

=========  =======================================================================
IFXCNAX    ``"NWAVE NY NX"``: the shape of the cube's data
IFXCRA0    RA of the centre of spaxel (0, 0), degrees
IFXCDE0    Dec of the centre of spaxel (0, 0), degrees
IFXCRA1    RA of the centre of spaxel (nx - 1, ny - 1), degrees
IFXCDE1    Dec of the centre of spaxel (nx - 1, ny - 1), degrees
IFXCSUM    fingerprint of the data: ``PLANES:`` and a SHA-1 of the shape, the type and 9
           evenly spaced planes (see :func:`data_fingerprint`)
=========  =======================================================================

:func:`check_product` compares them with the cube given to the consumer and raises a one-line
:class:`~ifu_extract.errors.InputError` naming both files when they differ.  A product without
these cards (written by an older version) is accepted with a warning.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from .errors import InputError

__all__ = ["IDENTITY_KEYS", "cube_identity", "check_product"]

log = logging.getLogger("ifu_extract")

IDENTITY_KEYS = ("IFXCNAX", "IFXCRA0", "IFXCDE0", "IFXCRA1", "IFXCDE1", "IFXCSUM")
#: Planes hashed when the data HDU has no DATASUM card.
_N_PLANES = 9


def _corners(cube) -> tuple[float, float, float, float]:
    world = cube.wcs.pixel_to_world_values(np.array([0.0, cube.nx - 1.0]),
                                           np.array([0.0, cube.ny - 1.0]))
    ra, dec = (np.asarray(w, dtype=float) for w in world)
    return float(ra[0]), float(dec[0]), float(ra[1]), float(dec[1])


def data_fingerprint(cube) -> str:
    """A cheap, name-independent fingerprint of the cube's data.

    A SHA-1 of the shape, the on-disk type and :data:`_N_PLANES` evenly spaced whole planes (a
    few MB of a 3 GB MUSE cube, read through the memory map).  The data HDU's ``DATASUM`` card
    would cost nothing, but it is often stale: astropy copies it with the header when a script
    changes the data and writes the file without ``checksum=True``.
    """
    hdu = cube.hdul[cube.data_ext]
    h = hashlib.sha1()
    h.update(repr((cube.shape, int(hdu.header.get("BITPIX", 0)))).encode())
    for z in np.unique(np.linspace(0, cube.nwave - 1, _N_PLANES).astype(int)):
        h.update(np.ascontiguousarray(cube._read(cube.data_ext, int(z))).tobytes())
    return f"PLANES:{h.hexdigest()[:24]}"


def cube_identity(cube) -> dict:
    """``{key: (value, comment)}`` cards recording *cube*'s identity (see the module docstring)."""
    ra0, de0, ra1, de1 = _corners(cube)
    return {
        "IFXCNAX": (f"{cube.nwave} {cube.ny} {cube.nx}", "source cube shape: NWAVE NY NX"),
        "IFXCRA0": (round(ra0, 8), "[deg] source cube RA of spaxel (0,0)"),
        "IFXCDE0": (round(de0, 8), "[deg] source cube Dec of spaxel (0,0)"),
        "IFXCRA1": (round(ra1, 8), "[deg] source cube RA of the last spaxel"),
        "IFXCDE1": (round(de1, 8), "[deg] source cube Dec of the last spaxel"),
        "IFXCSUM": (data_fingerprint(cube), "source cube data fingerprint"),
    }


def stamp(header, cube) -> None:
    """Write *cube*'s identity cards into the astropy *header* (in place)."""
    for key, (value, comment) in cube_identity(cube).items():
        header[key] = (value, comment)


def check_product(header, product, cube, cube_name, *, what: str = "masks file",
                  channels: bool = True, data: bool = True) -> None:
    """Refuse a product made from another cube than *cube*.

    Parameters
    ----------
    header : astropy.io.fits.Header or dict
        Primary header of the product.
    product : str or os.PathLike
        The product's path as the user gave it (named in the message).
    cube : Cube
        The cube the consumer works on.
    cube_name : str or os.PathLike
        Its path as the user gave it.
    what : str
        What the product is ("masks file", "continuum-subtracted cube").
    channels : bool
        Compare the number of channels too (False for products cut to a wavelength range).
    data : bool
        Compare the data fingerprint too (False for products that only need the same grid).

    Raises
    ------
    InputError
        One line naming both files and what differs.
    """
    if "IFXCNAX" not in header:
        log.warning(f"warning: {product}: this {what} does not record the cube it was made from "
                    f"(older ifu-extract); it cannot be checked against {cube_name}")
        return
    fix = f"re-create it from {cube_name}, or give the cube it was made from"
    try:
        nwave, ny, nx = (int(v) for v in str(header["IFXCNAX"]).split())
    except ValueError:
        raise InputError(product, f"has an unreadable IFXCNAX card {header['IFXCNAX']!r}",
                         fix) from None
    if (ny, nx) != (cube.ny, cube.nx) or (channels and nwave != cube.nwave):
        raise InputError(product, f"this {what} was made for a cube of {nx} x {ny} spaxels and "
                         f"{nwave} channels, but {cube_name} has {cube.nx} x {cube.ny} spaxels and "
                         f"{cube.nwave} channels", fix)
    made = [float(header.get(k, np.nan)) for k in ("IFXCRA0", "IFXCDE0", "IFXCRA1", "IFXCDE1")]
    here = _corners(cube)
    # 1/100 of a spaxel: the WCS of a copy matches to rounding, a shifted grid does not.
    tol = cube.pixscale / 3600.0 / 100.0
    cosd = np.cos(np.radians(here[1]))
    off = max(abs((made[0] - here[0] + 180) % 360 - 180) * cosd, abs(made[1] - here[1]),
              abs((made[2] - here[2] + 180) % 360 - 180) * cosd, abs(made[3] - here[3]))
    if not off <= tol:
        raise InputError(product, f"this {what} was made for a cube on another sky grid (spaxel "
                         f"(0,0) at RA {made[0]:.6f} Dec {made[1]:.6f}, in {cube_name} at RA "
                         f"{here[0]:.6f} Dec {here[1]:.6f}; {off * 3600:.3g} arcsec apart)", fix)
    if data and str(header.get("IFXCSUM", "")) != data_fingerprint(cube):
        raise InputError(product, f"this {what} was made from other data than {cube_name} "
                         "(same grid, different data fingerprint IFXCSUM)", fix)

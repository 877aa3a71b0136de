"""Sub-cubes around catalogue objects, with exact WCS, read through memory-mapped windows.

A cut-out is the square box of :meth:`~ifu_extract.box.Box.around` (full side SIZE arcsec,
as AutoSpec's SIZE), optionally restricted in wavelength.  Near an edge the box is kept whole
and padded with NaN, so that every object's products have the same geometry; the object's
status says so.  Objects entirely off the field are reported and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .catalog import file_stem, write_catalog
from .cubeio import Cube
from .errors import OK, warn_object
from .fitsout import add_provenance, ascii_safe, ensure_dir, write_hdulist
from .box import Box
from .wcsutil import wcs_cards, world_to_pixel

__all__ = ["SubCube", "cut_box", "object_box", "cube_wcs_header", "cutout_catalog", "EDGE", "OFF_FIELD"]

EDGE = "edge_partial"
OFF_FIELD = "off_field"


@dataclass
class SubCube:
    """A window of a cube: data and variance ``(n_wave, ny, nx)`` and the window's geometry."""

    data: np.ndarray
    var: np.ndarray | None
    x0: int
    y0: int
    z0: int
    header: fits.Header
    partial: bool

    @property
    def shape(self):
        return self.data.shape


def cube_wcs_header(cube: Cube, x0: int = 0, y0: int = 0, z0: int = 0) -> fits.Header:
    """The cube's 3-D WCS cards for a window whose first voxel is (*z0*, *y0*, *x0*).

    The cube's own cards are copied (units and conventions kept, so MPDAF reads the cut-out
    exactly as it reads the cube) and only the reference pixels are shifted.
    """
    hdr = wcs_cards(cube.data_header, cube.primary_header if cube.data_ext != 0 else None)
    for axis, offset in ((1, x0), (2, y0), (3, z0)):
        hdr[f"CRPIX{axis}"] = hdr.get(f"CRPIX{axis}", 0.0) - offset
    if cube.unit_string:
        hdr["BUNIT"] = (cube.unit_string, "per spaxel" if cube.flux_unit.per_area else "")
    return hdr


def object_box(cube: Cube, ra: float, dec: float, size_arcsec: float):
    """Pixel position and stamp box of a sky position: ``(x, y, (x0, x1, y0, y1), status)``.

    *status* is ``"ok"``, :data:`EDGE` (box partly outside the cube) or :data:`OFF_FIELD`
    (the position itself is outside the cube).
    """
    x, y = world_to_pixel(cube.wcs, ra, dec)
    box = Box.around(x, y, size_arcsec, cube.pixscale)
    if not (-0.5 <= x < cube.nx - 0.5 and -0.5 <= y < cube.ny - 0.5):
        return x, y, box, OFF_FIELD
    return x, y, box, (OK if box.within((cube.ny, cube.nx)) else EDGE)


def cut_box(cube: Cube, box, wave_range=None) -> SubCube:
    """Read the window *box* = (x0, x1, y0, y1) (NaN outside the cube) and its 3-D WCS."""
    box = Box(*box)
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    data, var = cube.window(*box, z0, z1)
    return SubCube(data, var, box.x0, box.y0, z0, cube_wcs_header(cube, box.x0, box.y0, z0),
                   not box.within((cube.ny, cube.nx)))


def _subcube_hdulist(sub: SubCube, obj_id, ra, dec, status, cube: Cube) -> fits.HDUList:
    prim = fits.PrimaryHDU()
    h = prim.header
    h["ID"] = (ascii_safe(obj_id), "object ID from the catalogue")
    h["RA"] = (float(ra), "[deg] object right ascension")
    h["DEC"] = (float(dec), "[deg] object declination")
    h["STATUS"] = (status, "ok, or edge_partial when padded with NaN")
    h["CUBE"] = (ascii_safe(cube.path.name)[:60], "parent cube")
    h["X0"], h["Y0"], h["Z0"] = sub.x0, sub.y0, sub.z0
    h.comments["X0"] = "parent-cube x of pixel 0 (0-based)"
    h.comments["Y0"] = "parent-cube y of pixel 0 (0-based)"
    h.comments["Z0"] = "parent-cube channel of channel 0 (0-based)"
    add_provenance(h, "cutout", {"cube": cube.path})
    hdus = [prim, fits.ImageHDU(sub.data, sub.header, name="DATA")]
    if sub.var is not None:
        hdus.append(fits.ImageHDU(sub.var, sub.header, name="STAT"))
    return fits.HDUList(hdus)


def cutout_catalog(cube: Cube, catalog: Table, outdir, size_arcsec: float,
                   wave_range=None) -> Table:
    """Write ``OUTDIR/<ID>.fits`` sub-cubes for every usable catalogue row.

    A finite ``SIZE`` column of the catalogue (arcsec) overrides *size_arcsec* per object.

    Returns
    -------
    astropy.table.Table
        One row per catalogue row: ID, RA, DEC, X, Y, X0, Y0, NX, NY, STATUS, FILE.  Also
        written as ``OUTDIR/cutouts.tsv``.
    """
    outdir = ensure_dir(outdir)
    rows = []
    sizes = cube.clip_box_sizes(_sizes(catalog, size_arcsec))
    for row, size in zip(catalog, sizes):
        obj = str(row["ID"])
        status, x, y, box, fname = str(row["STATUS"]), np.nan, np.nan, (0, 0, 0, 0), ""
        if status == OK:
            x, y, box, status = object_box(cube, float(row["RA"]), float(row["DEC"]), size)
            if status == OFF_FIELD:
                warn_object(obj, f"RA/DEC ({float(row['RA']):.6f}, {float(row['DEC']):.6f}) is outside the cube")
            else:
                sub = cut_box(cube, box, wave_range)
                fname = f"{file_stem(obj)}.fits"
                write_hdulist(_subcube_hdulist(sub, obj, row["RA"], row["DEC"], status, cube),
                              Path(outdir) / fname)
        else:
            warn_object(obj, status)
        x0, x1, y0, y1 = box
        rows.append((obj, float(row["RA"]), float(row["DEC"]), x, y, x0, y0, x1 - x0, y1 - y0, status, fname))
    summary = Table(rows=rows, names=("ID", "RA", "DEC", "X", "Y", "X0", "Y0", "NX", "NY", "STATUS", "FILE"),
                    dtype=(str, float, float, float, float, int, int, int, int, str, str))
    write_catalog(summary, Path(outdir) / "cutouts.tsv")
    return summary


def _sizes(catalog: Table, default: float) -> np.ndarray:
    """Per-object box size: a finite positive SIZE column value, else *default* (arcsec)."""
    sizes = np.full(len(catalog), float(default))
    if "SIZE" in catalog.colnames:
        try:
            col = np.ma.filled(np.ma.asarray(catalog["SIZE"], dtype=float), np.nan)
        except (TypeError, ValueError):  # a text SIZE column: every object gets the default
            return sizes
        good = np.isfinite(col) & (col > 0)
        sizes[good] = col[good]
    return sizes

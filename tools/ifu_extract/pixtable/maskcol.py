"""Per-row object masks: MPDAF's ``mask_column`` and its ``PixTableMask`` file.

``mask`` turns a mask image (0 = sky, non-zero = object; any celestial WCS) into one boolean
per pixel-table row -- the value of the mask pixel nearest to the row's sky position -- and
writes it as MPDAF's ``PixTableMask`` file: a primary header with ``MASK`` and ``PIXTABLE``
(file names) and one ``MASKCOL`` image of shape ``(nrows, 1)``.  The column is written as
unsigned bytes (MPDAF writes int32; it reads either), a quarter of the size on 3x10^8 rows.

Both :class:`MaskColumn` (such a file) and :class:`MaskFromImage` (computed on the fly, chunk by
chunk) can restrict :func:`~ifu_extract.pixtable.extract.extract` and
:func:`~ifu_extract.pixtable.selfcal.selfcalibrate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..fitsout import add_provenance, atomic_path, file_checksum
from .header import get_keyword
from .sky import CellGrid, MaskProjector, SkyFrame, load_mask_image, sky_positions
from .writer import StreamWriter

__all__ = ["MaskColumn", "MaskFromImage", "table_domain", "write_mask_column", "MASKCOL_EXT"]

MASKCOL_EXT = "MASKCOL"


def table_domain(table) -> tuple[float, float, float, float]:
    """(xlo, xhi, ylo, yhi) of xpos/ypos: the LIMITS keywords, or a scan when absent."""
    keys = ("X LOW", "X HIGH", "Y LOW", "Y HIGH")
    vals = [get_keyword(table.header, f"LIMITS {k}", None) for k in keys]
    if all(v is not None for v in vals) and all(np.isfinite(vals)):
        return tuple(float(v) for v in vals)

    def scan(a, b):
        x, y = table.read("xpos", a, b), table.read("ypos", a, b)
        return np.nanmin(x), np.nanmax(x), np.nanmin(y), np.nanmax(y)

    parts = np.array(list(table.map_chunks(scan)), dtype=np.float64)
    return (float(parts[:, 0].min()), float(parts[:, 1].max()),
            float(parts[:, 2].min()), float(parts[:, 3].max()))


def _require_overlap(path, table, frame, wcs, shape, domain) -> None:
    """Refuse a mask image that does not cover any part of the table's field.

    Such a mask gives every row the value 0 (sky), which looks like a valid mask column; a
    mask of another field, or a table whose field centre is wrong, is a mistake to report.
    The table's field is sampled on a 9 x 9 grid of its xpos/ypos domain; the image overlaps
    when a sample lands on it or the image centre lies within the samples' bounding box.
    """
    ny, nx = shape
    xlo, xhi, ylo, yhi = domain
    gx, gy = np.meshgrid(np.linspace(xlo, xhi, 9), np.linspace(ylo, yhi, 9))
    ra, dec = sky_positions(frame, gx.ravel(), gy.ravel())
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return
    with np.errstate(invalid="ignore"):
        px, py = wcs.all_world2pix(ra, dec, 0)
    if np.any((px >= -0.5) & (px < nx - 0.5) & (py >= -0.5) & (py < ny - 0.5)):
        return
    cra, cdec = (float(v) for v in wcs.all_pix2world((nx - 1) / 2, (ny - 1) / 2, 0))
    cos0 = np.cos(np.radians(frame.yc))
    dx = ((ra - frame.xc + 180) % 360 - 180) * cos0
    dy = dec - frame.yc
    cx = ((cra - frame.xc + 180) % 360 - 180) * cos0
    cy = cdec - frame.yc
    if dx.min() <= cx <= dx.max() and dy.min() <= cy <= dy.max():
        return
    raise InputError(path, f"the mask image (centre RA {cra:.5f} Dec {cdec:.5f}) does not cover the "
                     f"field of the pixel table {Path(table.path).name} (centre RA {frame.xc:.5f} "
                     f"Dec {frame.yc:.5f}); every row would be unmasked",
                     "give the mask image of this field")


class MaskFromImage:
    """The mask column of a table, computed from a mask image chunk by chunk.

    Parameters
    ----------
    path : str or os.PathLike
        Mask image (see :func:`~ifu_extract.pixtable.sky.load_mask_image`).
    table : PixTable
        The pixel table the rows belong to (must have sky coordinates).
    ext : str or int, optional
        Extension of the mask image.
    """

    def __init__(self, path, table, ext=None):
        self.path = Path(path)
        self.name = self.path.name
        frame = SkyFrame.of(table)
        image, wcs = load_mask_image(path, ext)
        self.ny, self.nx = image.shape
        self.flat = np.ascontiguousarray(image).ravel()
        domain = table_domain(table)
        _require_overlap(self.path, table, frame, wcs, image.shape, domain)
        self.projector = MaskProjector(frame, wcs, image.shape, domain)
        self.grid = CellGrid(self.projector, image)

    def values(self, table, a: int, b: int, rows=None) -> np.ndarray:
        """Mask value (True = object) of rows ``a + rows`` (all of ``[a, b)`` when None)."""
        if rows is None:
            x, y = table.read_scratch("xpos", a, b), table.read_scratch("ypos", a, b)
        else:
            xr, yr = table.raw("xpos")[a:b].take(rows), table.raw("ypos")[a:b].take(rows)
            x, y = xr.astype(np.float32), yr.astype(np.float32)
        out = np.empty(x.size, dtype=bool)
        step = 1 << 16  # sub-blocks that keep the temporaries in cache
        for s in range(0, x.size, step):
            xs, ys = x[s:s + step], y[s:s + step]
            status = self.grid.lookup(xs, ys)
            part = out[s:s + step]
            np.equal(status, CellGrid.SURE1, out=part)
            mixed = status == CellGrid.MIXED
            if mixed.any():
                rows = np.flatnonzero(mixed)
                ix, iy = self.projector.index(xs[rows], ys[rows])
                iy *= self.nx
                iy += ix
                part[rows] = self.flat.take(iy)
        return out


class MaskColumn:
    """A mask column file (written by :func:`write_mask_column` or MPDAF), memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike
    table : PixTable
        The table it must belong to (same number of rows).
    """

    def __init__(self, path, table):
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            raise InputError(self.path, "no such file", "give the mask column written by "
                             "'ifu-extract pixtable mask'")
        try:
            with fits.open(self.path, memmap=True) as hdul:
                if MASKCOL_EXT not in hdul:
                    raise InputError(self.path, "has no MASKCOL extension",
                                     "give a mask column written by 'ifu-extract pixtable mask' "
                                     "or MPDAF's PixTableMask.write")
                i = hdul.index_of(MASKCOL_EXT)
                hdr = hdul[i].header
                n = int(np.prod([hdr.get(f"NAXIS{k}", 0)
                                 for k in range(1, hdr.get("NAXIS", 0) + 1)]))
                dtype = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}.get(hdr["BITPIX"])
                offset = hdul.fileinfo(i)["datLoc"]
                self.pixtable_name = hdul[0].header.get("PIXTABLE")
                fingerprint = hdul[0].header.get("PTSUM")
        except InputError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(self.path, f"is not a readable mask column ({exc})",
                             "write it again with 'ifu-extract pixtable mask'") from None
        if dtype is None:
            raise InputError(self.path, "MASKCOL is not an integer column",
                             "write it again with 'ifu-extract pixtable mask'")
        if n != table.nrows:
            raise InputError(self.path, f"has {n} rows but the pixel table has {table.nrows}",
                             "compute the mask column of this table with "
                             "'ifu-extract pixtable mask'")
        if fingerprint and fingerprint != file_checksum(table.path):
            raise InputError(self.path, f"was computed for another pixel table "
                             f"({self.pixtable_name})", "compute the mask column of this table "
                             "with 'ifu-extract pixtable mask'")
        self.col = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(n,))

    def values(self, table, a: int, b: int, rows=None) -> np.ndarray:
        """Mask value (True = object) of rows ``a + rows`` (all of ``[a, b)`` when None)."""
        part = self.col[a:b]
        return (part if rows is None else part.take(rows)) != 0


def write_mask_column(table, mask_image, dest, *, ext=None, params=None) -> dict:
    """Compute the mask column of *table* from *mask_image* and write it to *dest*.

    Parameters
    ----------
    table : PixTable
    mask_image : str or os.PathLike
        Mask image with a celestial WCS.
    dest : str or os.PathLike
        Output FITS file (MPDAF ``PixTableMask`` layout, ``MASKCOL`` as uint8).
    ext : str or int, optional
        Extension of the mask image.

    Returns
    -------
    dict
        ``nrows``, ``masked`` (rows with mask True), ``tolerance`` and ``degree`` of the fast
        transform.
    """
    source = MaskFromImage(mask_image, table, ext)
    prim = fits.PrimaryHDU().header
    prim["PIXTABLE"] = (Path(table.path).name[:60], "pixtable")
    prim["MASK"] = (Path(mask_image).name[:60], "file to mask out all bright obj")
    prim["NROWS"] = (table.nrows, "rows of the pixel table")
    prim["PTSUM"] = (file_checksum(table.path), "fingerprint of the pixel table")
    add_provenance(prim, "pixtable mask", inputs={"pixtable": table.path, "mask": mask_image},
                   params=params)
    ext_hdr = fits.Header([("XTENSION", "IMAGE", "Image extension"), ("BITPIX", 8),
                           ("NAXIS", 2), ("NAXIS1", 1), ("NAXIS2", table.nrows),
                           ("PCOUNT", 0), ("GCOUNT", 1), ("EXTNAME", MASKCOL_EXT),
                           ("BUNIT", "boolean")])
    with atomic_path(dest, suffix=".fits") as tmp:
        stream = StreamWriter(tmp, [prim, ext_hdr], [0, table.nrows])
        try:
            def work(ab):
                a, b = ab
                m = source.values(table, a, b).view(np.uint8)
                stream.write(1, a, m)
                return int(np.count_nonzero(m))

            masked = sum(table.map_chunks(lambda a, b: work((a, b))))
            stream.finish()
        except BaseException:
            stream.abort()
            raise
    return {"nrows": table.nrows, "masked": masked, "tolerance": float(source.projector.tol),
            "degree": source.projector.degree}

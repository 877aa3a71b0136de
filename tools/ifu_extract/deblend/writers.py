"""Products of the deblending: DEBLEND spectra in Source files, ``deblend.tsv``, model and
residual cubes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..catalog import file_column, file_stem, write_catalog
from ..cubeio import Cube
from ..errors import InputError, warn_object
from ..estimators import Spectrum1D
from ..fitsout import add_provenance, ensure_dir, file_checksum, temp_path
from ..identity import stamp
from ..lines import strongest_emission_line
from ..pathguard import refuse_input
from ..sourcefile import source_layout, stamp_wcs_for, update_source, write_source
from ..box import reframe, stamp_box
from ..wcsutil import wcs_cards
from .config import DeblendResult

#: Columns of the summary table (``deblend.tsv``).
DEBLEND_COLUMNS = ("ID", "RA", "DEC", "STATUS", "GROUP", "GROUP_SIZE", "GROUP_IDS", "SNR_MEDIAN",
                   "FLUX_MEDIAN", "LINE_WAVE", "LINE_SNR", "FILE", "NOTES")


def _cube_wcs_header(cube: Cube, z0: int) -> fits.Header:
    """3-D WCS cards of the cube for channels from *z0* on, and BUNIT."""
    hdr = wcs_cards(cube.data_header, cube.primary_header if cube.data_ext != 0 else None)
    hdr["CRPIX3"] = float(hdr.get("CRPIX3", 1.0)) - z0
    if cube.unit_string:
        hdr["BUNIT"] = (cube.unit_string, "flux unit, per spaxel")
    return hdr


class CubeWriter:
    """A FITS cube file (PRIMARY + float32 image extensions) filled in place through memory maps.

    The file is created sparse at its final size (headers first, data zero), so neither the
    model nor the residual cube is ever held in memory.  Written to a temporary name and
    renamed by :meth:`close` (call :meth:`abort` on failure).
    """

    def __init__(self, path, cube: Cube, z0: int, z1: int, names=("DATA",), *, tool="deblend",
                 inputs=None, params=None, product=""):
        self.path = Path(path)
        refuse_input(self.path)  # never replace an input of the command
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(self.path, "the output folder does not exist", "create it first")
        shape = (z1 - z0, cube.ny, cube.nx)
        prim = fits.Header()
        prim["SIMPLE"] = True
        prim["BITPIX"] = 8
        prim["NAXIS"] = 0
        prim["EXTEND"] = True
        add_provenance(prim, tool, inputs, params)
        stamp(prim, cube)  # the cube it models: checkable by whoever uses it with a cube
        if product:
            prim["IFXPROD"] = (product, "ifu-extract product")
        base = _cube_wcs_header(cube, z0)
        self._tmp = temp_path(self.path, ".fits")   # named after this process: see fitsout
        nbytes = 4 * int(np.prod(shape))
        padded = -(-nbytes // 2880) * 2880
        offsets = []
        with open(self._tmp, "wb") as fh:
            fh.write(prim.tostring().encode("ascii"))
            for name in names:
                h = fits.Header()
                h["XTENSION"] = "IMAGE"
                h["BITPIX"] = -32
                h["NAXIS"] = 3
                h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = shape[2], shape[1], shape[0]
                h["PCOUNT"] = 0
                h["GCOUNT"] = 1
                h["EXTNAME"] = name
                h.extend(base)
                if name == "STAT" and cube.unit is not None:
                    h["BUNIT"] = ((cube.unit ** 2).to_string("fits"), "variance unit, per spaxel")
                fh.write(h.tostring().encode("ascii"))
                offsets.append(fh.tell())
                fh.seek(fh.tell() + padded)
            fh.truncate(fh.tell())
        self.arrays = {name: np.memmap(self._tmp, dtype=">f4", mode="r+", offset=off, shape=shape)
                       for name, off in zip(names, offsets)}

    def close(self) -> Path:
        for arr in self.arrays.values():
            arr.flush()
        self.arrays.clear()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.arrays.clear()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def write_residual_cube(cube: Cube, model: np.ndarray, path, z0: int, z1: int, *, inputs=None) -> Path:
    """``DATA - model`` (and the cube's STAT) over channels ``z0:z1``, with the cube's 3-D WCS."""
    names = ("DATA", "STAT") if cube.has_var else ("DATA",)
    out = CubeWriter(path, cube, z0, z1, names, inputs=inputs, product="DEBLEND_RESIDUAL")
    try:
        for zs, data, var in cube.iter_planes(z0, z1):
            ze = zs + data.shape[0]
            out.arrays["DATA"][zs - z0:ze - z0] = data - model[zs - z0:ze - z0]
            if var is not None:
                out.arrays["STAT"][zs - z0:ze - z0] = var
    except BaseException:
        out.abort()
        raise
    return out.close()


def _stamp_of(image, box, stamp_box_):
    """*image* on *box* moved to *stamp_box_* (zero outside), float32."""
    return reframe(image, box, stamp_box_, 0.0, dtype=np.float32)


def write_deblend(result: DeblendResult, cube: Cube, catalog: Table, sources_dir, summary, *,
                  size: float = 5.0, inputs: dict | None = None) -> list[dict]:
    """Store the ``DEBLEND`` spectra in the objects' Source files and write the summary table.

    An existing ``SOURCES_DIR/<ID>.fits`` (from ``extract``) gets ``SPE_DEBLEND_*`` on its own
    wavelength grid and ``IMA_DEBLEND`` (the object's model in the model image) on its stamp;
    otherwise a new Source file is written with a stamp of *size* arcsec.

    Parameters
    ----------
    result : DeblendResult
    cube : Cube
    catalog : astropy.table.Table
    sources_dir : str or os.PathLike
        Folder of the Source files (created when missing).
    summary : str or os.PathLike
        The summary table (TSV, :data:`DEBLEND_COLUMNS`); its ``FILE`` column names the Source
        files relative to its folder (``sources/<ID>.fits`` in the folder layout of ``run``).
    size : float
        Stamp side (arcsec) of new Source files.
    inputs : dict, optional
        Provenance of new Source files.

    Returns
    -------
    list of dict
        One row per catalogue ID (:data:`DEBLEND_COLUMNS`).
    """
    sources_dir = Path(ensure_dir(sources_dir))
    summary = Path(summary)
    z0, z1 = result.channels
    checksum = None
    rows = []
    for src in result.sources:
        row = catalog[src.row]
        rec = {"ID": src.id, "RA": float(row["RA"]) if np.isfinite(float(row["RA"])) else np.nan,
               "DEC": float(row["DEC"]) if np.isfinite(float(row["DEC"])) else np.nan,
               "STATUS": src.status, "GROUP": int(src.group), "GROUP_SIZE": len(src.group_ids),
               "GROUP_IDS": ",".join(src.group_ids), "SNR_MEDIAN": np.nan, "FLUX_MEDIAN": np.nan,
               "LINE_WAVE": np.nan, "LINE_SNR": np.nan, "FILE": "", "NOTES": "; ".join(src.notes)}
        if src.spectrum is None:
            rows.append(rec)
            continue
        sp = src.spectrum
        with np.errstate(invalid="ignore", divide="ignore"):
            rec["SNR_MEDIAN"] = float(np.nanmedian(sp.flux / np.sqrt(sp.var)))
            rec["FLUX_MEDIAN"] = float(np.nanmedian(sp.flux))
        # The strongest emission line of the deblended spectrum: a quick look that shows whose
        # line it is once the neighbour's light is fitted out.
        line = strongest_emission_line(cube.wave[z0:z1], sp.flux, sp.var, medium=cube.medium)
        if line is not None:
            rec["LINE_WAVE"], rec["LINE_SNR"] = line.wave, line.snr
        path = sources_dir / f"{file_stem(src.id)}.fits"
        keywords = {"DBSTATUS": (src.status[:68], "deblend status"),
                    "DBGROUP": (int(src.group), "deblending group"),
                    "DBGRPIDS": (",".join(src.group_ids)[:68], "members of the group")}
        try:
            if path.exists():
                layout = source_layout(path, cube)
                if layout.channels is None:
                    s0, s1 = z0, z1
                else:
                    s0, s1 = layout.channels
                if s0 < z0 or s1 > z1:
                    raise InputError(path, f"its spectra cover channels {s0}-{s1}, the deblending "
                                     f"{z0}-{z1}", "deblend over the same --wave-range as extract")
                spec = Spectrum1D(sp.flux[s0 - z0:s1 - z0], sp.var[s0 - z0:s1 - z0], sp.meta)
                images = {}
                if layout.box is not None:
                    images["DEBLEND"] = (_stamp_of(src.model_image, src.box, layout.box), None)
                update_source(path, spectra={"DEBLEND": spec}, images=images, keywords=keywords,
                              tool="deblend")
            else:
                if checksum is None:
                    checksum = file_checksum(cube.path)
                box = stamp_box(src.x, src.y, size, cube.pixscale)
                spec_hdr = cube.spectral_header()
                spec_hdr["CRPIX1"] = spec_hdr["CRPIX1"] - z0
                keywords.update({"X": (float(src.x), "[pix] 0-based cube x"),
                                 "Y": (float(src.y), "[pix] 0-based cube y"),
                                 "STATUS": (src.status[:68], "ok or the fallback used")})
                write_source(path, obj_id=src.id, ra=rec["RA"], dec=rec["DEC"], cube_name=cube.path.name,
                             cube_version=str(cube.primary_header.get("DATE", "")), cube_checksum=checksum,
                             spec_header=spec_hdr, flux_unit=cube.unit_string, spectra={"DEBLEND": sp},
                             images={"DEBLEND": (_stamp_of(src.model_image, src.box, box), None)},
                             masks={}, stamp_wcs=stamp_wcs_for(cube.wcs, box), keywords=keywords,
                             inputs=inputs)
            rec["FILE"] = file_column(path, summary.parent)
        except InputError as exc:
            rec["STATUS"] = f"failed: {exc.oneline()}"[:200]
            warn_object(src.id, exc.oneline())
        rows.append(rec)
    types = (str, float, float, str, int, int, str, float, float, float, float, str, str)
    tab = Table(rows=[[r[c] for c in DEBLEND_COLUMNS] for r in rows], names=DEBLEND_COLUMNS, dtype=types) \
        if rows else Table(names=DEBLEND_COLUMNS, dtype=types)
    for col in ("RA", "DEC"):
        tab[col].format = ".7f"
    tab["SNR_MEDIAN"].format = ".3f"
    tab["FLUX_MEDIAN"].format = ".6g"
    tab["LINE_WAVE"].format = ".2f"
    tab["LINE_SNR"].format = ".1f"
    write_catalog(tab, summary, "tsv")
    return rows

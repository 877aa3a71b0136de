"""Products of the deblending: DEBLEND spectra in Source files, the summary table, model and
residual cubes (streamed with checksums through :class:`~ifu_extract.fitsio.StreamingCubeWriter`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..box import reframe, stamp_box
from ..catalog import file_column, file_stem, write_catalog
from ..cubeio import Cube
from ..errors import InputError, warn_object
from ..estimators import Spectrum1D
from ..fitsio import StreamingCubeWriter
from ..fitsout import add_provenance, ensure_dir, file_checksum, temp_path
from ..identity import stamp
from ..lines import strongest_emission_line
from ..sourcefile import source_layout, stamp_wcs_for, update_source, write_source
from ..wcsutil import wcs_cards
from .config import DeblendResult

#: Columns of the summary table (``deblend.tsv``).
DEBLEND_COLUMNS = ("ID", "RA", "DEC", "STATUS", "GROUP", "GROUP_SIZE", "GROUP_IDS", "SNR_MEDIAN",
                   "FLUX_MEDIAN", "LINE_WAVE", "LINE_SNR", "DBCHI2", "DBPOOR", "FILE", "NOTES")


def _cube_wcs_header(cube: Cube, z0: int) -> fits.Header:
    """3-D WCS cards of the cube for channels from *z0* on, and BUNIT."""
    hdr = wcs_cards(cube.data_header, cube.primary_header if cube.data_ext != 0 else None)
    hdr["CRPIX3"] = float(hdr.get("CRPIX3", 1.0)) - z0
    if cube.unit_string:
        hdr["BUNIT"] = (cube.unit_string, "flux unit, per spaxel")
    return hdr


#: Channels written at once to the model and residual cubes (bounds the memory: planes x ny x nx
#: float32).
PLANES_PER_WRITE = 64


@contextlib.contextmanager
def model_accumulator(near, shape):
    """A zero ``(n_wave, ny, nx)`` float32 memory map to which the groups' models are added.

    Group boxes overlap, so the model is summed in this scratch file (created sparse next to
    *near*, deleted on exit) and then streamed, once, to the model and residual cubes
    (:func:`write_model_cube`, :func:`write_residual_cube`): it is never held in memory.
    """
    tmp = temp_path(near, ".model")
    try:
        yield np.memmap(tmp, dtype=np.float32, mode="w+", shape=tuple(int(s) for s in shape))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _cube_file(path, cube: Cube, z0: int, z1: int, names, product: str, inputs, blocks) -> Path:
    """Write a PRIMARY + float32 cube extensions *names* with the cube's 3-D WCS for channels
    ``z0:z1`` to *path* (a temporary path of the caller), from ``(name, z, block)`` *blocks*,
    through :class:`~ifu_extract.fitsio.StreamingCubeWriter` (CHECKSUM and DATASUM)."""
    shape = (z1 - z0, cube.ny, cube.nx)
    prim = fits.Header()
    prim["SIMPLE"] = True
    prim["BITPIX"] = 8
    prim["NAXIS"] = 0
    prim["EXTEND"] = True
    add_provenance(prim, "deblend", inputs, None)
    stamp(prim, cube)  # the cube it models: checkable by whoever uses it with a cube
    prim["IFXPROD"] = (product, "ifu-extract product")
    base = _cube_wcs_header(cube, z0)
    headers = {}
    for name in names:
        h = fits.Header()
        h["XTENSION"] = "IMAGE"
        h["BITPIX"] = -32
        h["NAXIS"] = 3
        h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = shape[2], shape[1], shape[0]
        h["PCOUNT"] = 0
        h["GCOUNT"] = 1
        h["EXTNAME"] = name
        h.extend(base.copy())   # cards are shared objects: STAT sets its own BUNIT
        if name == "STAT" and cube.unit is not None:
            h["BUNIT"] = ((cube.unit ** 2).to_string("fits"), "variance unit, per spaxel")
        headers[name] = h
    out = StreamingCubeWriter(path, prim, headers, shape)
    try:
        for name, z, block in blocks:
            out.write(name, block, z0=z)
    except BaseException:
        out.abandon()
        raise
    out.close()
    return Path(path)


def write_model_cube(cube: Cube, model: np.ndarray, path, z0: int, z1: int, *, inputs=None) -> Path:
    """The model cube (sum of every group's model, :func:`model_accumulator`) over channels
    ``z0:z1``, with the cube's 3-D WCS, to *path*."""
    def blocks():
        for zs in range(0, z1 - z0, PLANES_PER_WRITE):
            # a copy: the writer byte-swaps its blocks in place
            yield "DATA", zs, np.array(model[zs:zs + PLANES_PER_WRITE], dtype=np.float32)

    return _cube_file(path, cube, z0, z1, ("DATA",), "DEBLEND_MODEL", inputs, blocks())


def write_residual_cube(cube: Cube, model: np.ndarray, path, z0: int, z1: int, *, inputs=None) -> Path:
    """``DATA - model`` (and the cube's STAT) over channels ``z0:z1``, with the cube's 3-D WCS,
    to *path*."""
    names = ("DATA", "STAT") if cube.has_var else ("DATA",)

    def blocks():
        for zs, data, var in cube.iter_planes(z0, z1):
            ze = zs + data.shape[0]
            yield "DATA", zs - z0, np.asarray(data - model[zs - z0:ze - z0], dtype=np.float32)
            if var is not None:
                yield "STAT", zs - z0, np.array(var, dtype=np.float32)

    return _cube_file(path, cube, z0, z1, names, "DEBLEND_RESIDUAL", inputs, blocks())


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
               "LINE_WAVE": np.nan, "LINE_SNR": np.nan, "DBCHI2": np.nan, "DBPOOR": False, "FILE": "",
               "NOTES": "; ".join(src.notes)}
        if src.spectrum is None:
            rows.append(rec)
            continue
        sp = src.spectrum
        # The model's goodness of fit, per object: a user sorts the table by it (the Source
        # files carry the same DBCHI2/DBPOOR keywords).  -1 in a header means no variance.
        chi2 = float((sp.meta or {}).get("DBCHI2", (np.nan, ""))[0])
        rec["DBCHI2"] = chi2 if chi2 >= 0 else np.nan
        rec["DBPOOR"] = bool((sp.meta or {}).get("DBPOOR", (False, ""))[0])
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
                    images["DEBLEND"] = (reframe(src.model_image, src.box, layout.box, 0.0, np.float32), None)
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
                write_source(path, obj_id=src.id, ra=rec["RA"], dec=rec["DEC"], cube_name=cube.name,
                             cube_version=str(cube.primary_header.get("DATE", "")), cube_checksum=checksum,
                             spec_header=spec_hdr, flux_unit=cube.unit_string, spectra={"DEBLEND": sp},
                             images={"DEBLEND": (reframe(src.model_image, src.box, box, 0.0, np.float32), None)},
                             masks={}, stamp_wcs=stamp_wcs_for(cube.wcs, box), keywords=keywords,
                             inputs=inputs)
            rec["FILE"] = file_column(path, summary.parent)
        except InputError as exc:
            rec["STATUS"] = f"failed: {exc.oneline()}"[:200]
            warn_object(src.id, exc.oneline())
        rows.append(rec)
    types = (str, float, float, str, int, int, str, float, float, float, float, float, bool, str, str)
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

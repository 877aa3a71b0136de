"""Extraction over a catalogue (the work of the ``extract`` step): masks in, Source files and a
summary table out.

For each catalogue row, the object's window is read from the memory-mapped cube, every
configured spectrum is extracted (:mod:`ifu_extract.estimators`), and
``OUTDIR/sources/<ID>.fits`` is written atomically in MPDAF's Source layout.  Objects are taken
in spatial order, and neighbours whose windows overlap are extracted together from one read of
the union of their windows (:func:`~ifu_extract.estimators.extract_windows`): same spectra, each
voxel read once.  One row per catalogue ID goes to ``OUTDIR/summary.tsv``; an object that fails
gets a status there and the others go on.

The summary values are also stored in each Source file's primary header (``NSPAX NSKY SNRTAG
SNRMED WFLUX WFLUXERR STATUS``), so that ``--resume`` and ``merge`` rebuild the summary from the
files alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .box import Box
from .catalog import file_stem
from .cubeio import Cube, open_cube
from .errors import OK, InputError, is_disk_full, warn_object
from .estimators import ExtractConfig, ObjectRegion, extract_windows
from .fitsio import header_cards
from .fitsout import ensure_dir, file_checksum, temp_path
from .identity import check_product
from .image import white_for_cube
from .masks import copy_masks, read_masks
from .parallel import even_blocks, process_map
from .sourcefile import best_tag, stamp_wcs_cards, write_source
from .summary import row_from_header, row_result, write_summary

__all__ = ["ExtractJob", "extract_catalog"]

log = logging.getLogger("ifu_extract")

_EXTRA_KEYS = ("Z", "SIZE", "REF")


@dataclass
class ExtractJob:
    """Everything a worker needs to extract a list of objects (picklable)."""

    cube_path: str
    cube_kwargs: dict
    masks_path: str
    outdir: str
    cfg: ExtractConfig
    rows: list = field(default_factory=list)          # catalogue rows as dicts
    white: np.ndarray | None = None
    white_var: np.ndarray | None = None
    checksum: str = ""
    wave_range: tuple | None = None
    weight_images: dict = field(default_factory=dict)  # tag -> (ny, nx) image on the cube grid
    masks_read: str = ""      # the file the workers read the masks from (default: masks_path)


def _snr_median(flux, var) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / np.sqrt(var)
    snr = snr[np.isfinite(snr)]
    return float(np.median(snr)) if snr.size else float("nan")


@dataclass
class _Shared:
    """What every object of a worker shares: computed once, not per Source file."""

    spec_cards: list          # spectral WCS cards of the spectra (axis 1)
    cube_wcs_cards: list      # celestial WCS cards of the cube (shifted per stamp)
    cube_version: str
    psf_fwhm: float | None    # median PSF FWHM over the band, arcsec
    unit: str                 # the cube's flux unit (formatting it costs ~0.1 ms)
    fsf: list = None          # MUSE FSF cards of a PSF fitted on the data (none otherwise)

    @classmethod
    def of(cls, cube: Cube, job: ExtractJob, z0: int, z1: int) -> "_Shared":
        spec_hdr = cube.spectral_header()
        spec_hdr["CRPIX1"] = spec_hdr["CRPIX1"] - z0
        fwhm = None
        if job.cfg.psf is not None:
            fwhm = round(float(np.median(job.cfg.psf.fwhm(cube.wave[z0:z1]))), 4)
        fsf = []
        if job.cfg.psf is not None and job.cfg.psf.source == "fitted":
            from .psf import fsf_cards  # the cube had none: the Source files carry the fitted one

            fsf = fsf_cards(job.cfg.psf, cube.wave)
        return cls(header_cards(spec_hdr), header_cards(cube.wcs.to_header(relax=True)),
                   _cube_version(cube), fwhm, cube.unit_string, fsf)


@dataclass
class _Pending:
    """An object ready for extraction: its masks, region and stamps of the images."""

    row: dict
    masks: object              # ObjectMasks
    mrow: object               # its OBJECTS row
    region: ObjectRegion
    white: np.ndarray | None
    white_var: np.ndarray | None
    weights: dict
    index: int = -1            # position in the worker's rows

    @property
    def job(self) -> tuple:
        """The tuple :func:`~ifu_extract.estimators.extract_windows` takes."""
        return self.region, self.white, self.white_var, self.weights


def _prepare(cube: Cube, masks, job: ExtractJob, row: dict, seg) -> dict | _Pending:
    """The summary row of an object that cannot be extracted, or what its extraction needs."""
    obj_id = str(row["ID"])
    if row["STATUS"] != OK:
        return row_result(row, row["STATUS"])
    try:
        m = masks.get(obj_id)
    except KeyError:
        return row_result(row, "no_mask: object not in the masks file")
    if m is None:
        mrow = masks.objects[masks.row_of(obj_id)]
        return row_result(row, str(mrow["STATUS"]) or "no_mask")
    x0, y0 = m.x0, m.y0
    neighbours = None
    if seg is not None:
        neighbours = (m.box.cut(seg, 0, dtype=np.int32) > 0) & ~m.union
    mrow = masks.objects[m.row]
    region = ObjectRegion(obj_id, float(row["RA"]), float(row["DEC"]), float(mrow["X"]) - x0,
                          float(mrow["Y"]) - y0, m.box, m.obj, m.sky, neighbours, m.status, m.used)
    white = wvar = None
    if job.white is not None:
        white = _stamp(job.white, m.box)
        wvar = None if job.white_var is None else _stamp(job.white_var, m.box)
    weights = {tag: _stamp(img, m.box) for tag, img in job.weight_images.items()}
    return _Pending(row, m, mrow, region, white, wvar, weights)


def _finish(cube: Cube, job: ExtractJob, pending: _Pending, res, shared: _Shared) -> dict:
    """Write the Source file of an extracted object; its summary row."""
    row, m, mrow, weights = pending.row, pending.masks, pending.mrow, pending.weights
    white, wvar, obj_id = pending.white, pending.white_var, pending.region.id
    tag = best_tag(res.spectra)
    notes = list(res.notes) + ([cube.var_problem] if cube.var_problem else [])
    snr = _snr_median(res.spectra[tag].flux, res.spectra[tag].var) if tag else float("nan")
    wflux = wferr = float("nan")
    if white is not None:
        wflux = float(np.nansum(np.where(m.obj, white, 0.0)))
        if wvar is not None:
            wferr = float(np.sqrt(np.nansum(np.where(m.obj, wvar, 0.0))))
    status = m.status
    keywords = {
        "X": (float(mrow["X"]), "[pix] 0-based cube x"), "Y": (float(mrow["Y"]), "[pix] 0-based cube y"),
        "STATUS": (status, "ok or the fallback"), "MASKUSED": (m.used, "object mask used"),
        "NSPAX": (res.n_spaxels, "spaxels in the object mask"), "NSKY": (res.n_sky, "sky spaxels"),
        "SNRTAG": (tag or "", "tag of SNRMED"), "SNRMED": (_finite(snr), "median S/N over channels"),
        "WFLUX": (_finite(wflux), "white light summed over the mask"),
        "WFLUXERR": (_finite(wferr), "its error"),
        "WAVEMED": (cube.medium, "air or vacuum"),
    }
    for key in _EXTRA_KEYS:
        if key in row and row[key] is not None and str(row[key]) not in ("", "--", "nan"):
            value = row[key]
            keywords[key] = (float(value) if isinstance(value, (int, float, np.number)) else str(value)[:60],
                             "from the input catalogue")
    if notes:
        # Whole (CONTINUE cards when long): --resume and merge rebuild the summary from it.
        keywords["NOTES"] = ("; ".join(notes), "extraction notes")
    if shared.psf_fwhm is not None:
        keywords["PSFFWHM"] = (shared.psf_fwhm, "[arcsec] median PSF FWHM used")
    for key, value, comment in shared.fsf or ():
        keywords[key] = (value, comment)
    masks_img = {"MASK_UNION": m.union, "MASK_INTER": m.inter, "MASK_SKY": m.sky}
    images = dict(res.images)
    for t, img in weights.items():
        images[t] = (img.astype(np.float32), None)
    fname = f"{file_stem(obj_id)}.fits"
    write_source(Path(job.outdir) / "sources" / fname, obj_id=obj_id, ra=row["RA"], dec=row["DEC"],
                 cube_name=cube.name, cube_version=shared.cube_version, cube_checksum=job.checksum,
                 spec_header=shared.spec_cards, flux_unit=shared.unit, spectra=res.spectra,
                 images=images, masks=masks_img, stamp_wcs=stamp_wcs_cards(shared.cube_wcs_cards, m.box),
                 keywords=keywords, inputs={"cube": cube.path, "masks": job.masks_path})
    return row_result(row, status, N_SPAXELS=res.n_spaxels, N_SKY=res.n_sky, SNR_TAG=tag or "",
                       SNR_MEDIAN=snr, WHITE_FLUX=wflux, WHITE_FLUX_ERR=wferr, FLUX_UNIT=shared.unit,
                       MASKUSED=m.used, FILE=f"sources/{fname}", NOTES="; ".join(notes))


def _finite(v):
    return float(v) if np.isfinite(v) else "nan"


def _cube_version(cube: Cube) -> str:
    for key in ("CUBE_V", "PIPEVERS", "HIERARCH ESO PRO REC1 PIPE ID", "VERSDRP3", "DATE"):
        for hdr in (cube.primary_header, cube.data_header):
            if key in hdr:
                return str(hdr[key])
    return ""


def _stamp(image: np.ndarray, box: Box) -> np.ndarray:
    """A full-grid image on the object's box, float32, NaN outside the image."""
    return box.cut(image, np.nan, dtype=np.float32)


def _failed(row: dict, exc: Exception) -> dict:
    """Summary row of an object whose extraction raised *exc* (one bad object never stops a batch)."""
    if is_disk_full(exc):
        raise exc                       # a full disk is not the object's fault: the run stops
    if isinstance(exc, InputError):
        warn_object(row["ID"], exc.oneline())
        return row_result(row, f"failed: {exc.oneline()}"[:200])
    warn_object(row["ID"], f"{type(exc).__name__}: {exc}")
    return row_result(row, f"failed: {type(exc).__name__}: {exc}"[:200])


#: Largest number of objects extracted together from the union of their windows.
GROUP_MAX = 64


def _groups(pending: list[_Pending]) -> list[list[_Pending]]:
    """Consecutive objects whose windows' union is no larger than their windows together.

    Objects come in spatial order (:func:`_spatial_order`), so neighbours with overlapping
    windows fall in one group and their union is read once (:func:`extract_windows`).
    """
    groups, box, area = [], None, 0
    for p in pending:
        x0, x1, y0, y1 = p.region.box
        own = (x1 - x0) * (y1 - y0)
        if box is not None and len(groups[-1]) < GROUP_MAX:
            u = (min(box[0], x0), max(box[1], x1), min(box[2], y0), max(box[3], y1))
            if (u[1] - u[0]) * (u[3] - u[2]) <= area + own:
                groups[-1].append(p)
                box, area = u, area + own
                continue
        groups.append([p])
        box, area = (x0, x1, y0, y1), own
    return groups


def _work(job: ExtractJob) -> list[dict]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), open_cube(job.cube_path, **job.cube_kwargs, require_finite=False) as cube:
        z0, z1 = cube.channel_range(*(job.wave_range or (None, None)))
        _, masks = read_masks(job.masks_read or job.masks_path)
        with masks:
            seg = masks.segmap(1)  # neighbours' segments, on the cube grid (None without a map)
            shared = _Shared.of(cube, job, z0, z1)
            done: dict[int, dict] = {}
            pending = []
            for i, row in enumerate(job.rows):
                try:
                    got = _prepare(cube, masks, job, row, seg)
                except Exception as exc:  # noqa: BLE001 - reported per object, with its type
                    got = _failed(row, exc)
                if isinstance(got, dict):
                    done[i] = got
                else:
                    got.index = i
                    pending.append(got)
            for group in _groups(pending):
                results = extract_windows(cube, z0, z1, [p.job for p in group], job.cfg)
                for p, res in zip(group, results):
                    try:
                        if isinstance(res, Exception):
                            raise res
                        done[p.index] = _finish(cube, job, p, res, shared)
                    except Exception as exc:  # noqa: BLE001
                        done[p.index] = _failed(p.row, exc)
            return [done[i] for i in range(len(job.rows))]


def _done_row(path: Path, row: dict, checksum: str, unit: str) -> dict | None:
    """Summary row of an object already written by an earlier run on the same cube, else None.

    *unit* is the cube's flux unit, which a fresh extraction puts in FLUX_UNIT (the Source
    file keeps it in its spectra's BUNIT only).
    """
    try:
        hdr = fits.getheader(path, 0)
    except Exception:  # noqa: BLE001 - unreadable: extract it again
        return None
    if hdr.get("CUBECSUM") != checksum:
        return None
    return {**row_from_header(hdr, f"sources/{path.name}", row), "FLUX_UNIT": unit}


def _spatial_order(rows: list, objects: Table) -> list:
    """*rows* in boustrophedon order over strips one stamp high (rows without masks last).

    Consecutive windows then overlap, so that part of each window is still in the CPU cache
    from the previous one, and each worker's contiguous block covers one compact region.
    """
    where = {str(o["ID"]): (int(o["Y0"]), int(o["X0"]), int(o["NY"])) for o in objects
             if str(o["MASKUSED"])}
    if not where:
        return rows
    band = max(1, int(np.median([ny for _, _, ny in where.values()])))

    def key(row):
        pos = where.get(str(row["ID"]))
        if pos is None:
            return (1, 0, 0)
        strip = pos[0] // band
        return (0, strip, pos[1] if strip % 2 == 0 else -pos[1])

    return sorted(rows, key=key)


def _check_boxes(objects: Table, masks_path, cube: Cube) -> None:
    """Refuse stamps more than twice the field's side (masks made before --size was clipped to
    the cube, e.g. --size 1000 on an 8" field): each would be read as a window of that size.
    Stamps somewhat larger than the field are only padded, as older masks files have them."""
    side = 2 * max(cube.nx, cube.ny)
    used = np.asarray(objects["MASKUSED"]) != ""
    big = used & ((np.asarray(objects["NX"]) > side) | (np.asarray(objects["NY"]) > side))
    if big.any():
        worst = int(max(np.max(np.asarray(objects["NX"])[big]), np.max(np.asarray(objects["NY"])[big])))
        raise InputError(masks_path, f"has stamps of up to {worst} x {worst} spaxels for "
                         f"{int(big.sum())} objects, more than twice the field of {cube.path} "
                         f"({cube.nx} x {cube.ny})", "re-create it with 'ifu-extract mask', which "
                         "clips --size to the field")


def extract_catalog(cube_path, catalog: Table, masks_path, outdir, cfg: ExtractConfig, *,
                    cube_kwargs: dict | None = None, wave_range=None, threads: int = 1,
                    resume: bool = False, weight_images: dict | None = None,
                    white_path=None, progress=None) -> list[dict]:
    """Extract every catalogue object; write Source files and ``summary.tsv``.

    Parameters
    ----------
    cube_path : str or os.PathLike
    catalog : astropy.table.Table
        From :func:`~ifu_extract.catalog.read_catalog`.
    masks_path : str or os.PathLike
        ``MASKS.fits`` from the ``mask`` step.
    outdir : str or os.PathLike
    cfg : ExtractConfig
    cube_kwargs : dict, optional
        Extension overrides for :func:`~ifu_extract.cubeio.open_cube`.
    wave_range : (float, float), optional
        Restrict the spectra to this range, Angstrom.
    threads : int
        Worker processes (objects are shared out in contiguous blocks).
    resume : bool
        Keep Source files already written for this cube (same checksum).
    weight_images : dict, optional
        ``{tag: (ny, nx) image on the cube grid}`` for ancillary-image weighting.
    white_path : str or os.PathLike, optional
        White-light image of this cube (``ifu-extract image``): saves a pass over the cube.
    progress : callable, optional
        Called with the number of objects finished, as they finish.

    Returns
    -------
    list of dict
        Summary rows in catalogue order.
    """
    cube_kwargs = cube_kwargs or {}
    # Every input is read and checked before the first output is made.
    with open_cube(cube_path, **cube_kwargs) as cube:
        objects, masks = read_masks(masks_path)
        masks.close()
        legacy = masks.version == 1
        check_product(masks.header, masks_path, cube, cube_path, what="masks file")
        _check_boxes(objects, masks_path, cube)
        white_img = white_for_cube(cube, white_path, wave_range)
        checksum = file_checksum(cube.path)
        unit = cube.unit_string
    outdir = ensure_dir(outdir)
    ensure_dir(Path(outdir) / "sources")
    rows = [{c: (row[c] if not np.ma.is_masked(row[c]) else None) for c in catalog.colnames} for row in catalog]
    results: dict[str, dict] = {}
    todo = []
    for row in rows:
        path = Path(outdir) / "sources" / f"{file_stem(row['ID'])}.fits"
        done = _done_row(path, row, checksum, unit) if (resume and path.exists()) else None
        if done is not None:
            results[str(row["ID"])] = done
        else:
            todo.append(row)
    if resume and results:
        log.info(f"resume: {len(results)} objects already extracted, {len(todo)} to go")
    todo = _spatial_order(todo, objects)
    base = ExtractJob(str(cube_path), cube_kwargs, str(masks_path), str(outdir), cfg, [],
                      white_img.data, white_img.var, checksum, wave_range, dict(weight_images or {}))
    threads = max(1, min(int(threads), len(todo) or 1))
    # Small blocks keep the progress bar moving; contiguous blocks keep reads local.
    nblocks = min(len(todo), threads * 8) if threads > 1 else 1
    blocks = [ExtractJob(**{**base.__dict__, "rows": chunk}) for chunk in even_blocks(todo, max(nblocks, 1))]
    copy = None
    try:
        if legacy and len(blocks) > 1:
            # Every block reads the masks; a format-1 file costs milliseconds per object to open
            # (one HDU per mask), so the blocks read a current-format copy made once.
            copy = temp_path(Path(outdir) / "masks.fits")
            _, old = read_masks(masks_path)
            with old:
                copy_masks(old, copy)
            for job in blocks:
                job.masks_read = str(copy)
        if threads == 1:
            for job in blocks:
                for r in _work(job):
                    results[r["ID"]] = r
                if progress:
                    progress(len(job.rows))
        else:
            with process_map(_work, blocks, threads) as outs:
                for job, out in zip(blocks, outs):
                    for r in out:
                        results[r["ID"]] = r
                    if progress:
                        progress(len(job.rows))
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)
    ordered = [results[str(r["ID"])] for r in rows]
    write_summary(ordered, Path(outdir) / "summary.tsv")
    return ordered

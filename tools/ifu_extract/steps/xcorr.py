"""The ``xcorr`` step: XCOR spectra and maps added to the objects' Source files, and a summary
table (the science is in :mod:`ifu_extract.xcorr`).

The Source files are named explicitly (``sources=``, each matched to its catalogue row by its
``ID`` keyword; updated in place or copied to ``sources_out`` first), or found by the folder
convention of ``extract`` (``output=``: ``OUTPUT/sources/<ID>.fits``, ``OUTPUT/xcorr.tsv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..box import Box
from ..catalog import file_column, file_stem, read_catalog, write_catalog
from ..cubeio import open_cube
from ..errors import OK, InputError, ParameterError, warn_object
from ..identity import check_product
from ..masks import read_masks
from ..sourcefile import read_source_spectrum, source_layout, update_source
from ..xcorr import XCOR_COLUMNS, XcorConfig, xcorr_object
from ._sources import copy_sources, source_ids

__all__ = ["XcorrStepResult", "run_xcorr"]


@dataclass
class XcorrStepResult:
    """What :func:`run_xcorr` wrote.

    Attributes
    ----------
    rows : list of dict
        One per catalogue ID (:data:`ifu_extract.xcorr.XCOR_COLUMNS`), catalogue order.
    summary : pathlib.Path
        The summary table (TSV).
    sources : list of pathlib.Path
        The Source files written (updated, or copies updated), in the order given.
    reference : str
        Spectrum tag of the first reference, upper case.
    n_ok : int
        Objects with XCOR spectra.
    """

    rows: list
    summary: Path
    sources: list
    reference: str
    n_ok: int


def run_xcorr(cube_path, catalog, masks, *, output=None, sources=None, summary=None,
              sources_out=None, reference: str = "MUSE_WHITE", contsub=None,
              config: XcorConfig | None = None, catalog_format: str = "auto",
              cube_kwargs: dict | None = None, progress=None) -> XcorrStepResult:
    """Add ``XCOR``/``XCOR_CONTSUB`` spectra and maps to every object's Source file.

    Parameters
    ----------
    cube_path : str or os.PathLike
        The cube the Source files were extracted from.
    catalog : str or os.PathLike or astropy.table.Table
        ``ID`` and ``STATUS`` (rows not ``"ok"`` keep their status); a file is read with
        *catalog_format*.
    masks : str or os.PathLike
        ``MASKS.fits`` (object, sky and neighbours' segments).
    output : str or os.PathLike, optional
        The folder of ``extract``: ``OUTPUT/sources/<ID>.fits`` updated in place and
        ``OUTPUT/xcorr.tsv`` written.  Exclusive with *sources*/*summary*.
    sources : sequence of str or os.PathLike, optional
        Source files, each matched to its catalogue row by its ``ID`` keyword.
    summary : str or os.PathLike, optional
        The summary table to write (TSV); required with *sources*.
    sources_out : str or os.PathLike, optional
        With *sources*: every Source file is copied to ``SOURCES_OUT/<ID>.fits`` and the copy is
        updated (the inputs stay as they are); default: update them in place.
    reference : str
        Spectrum tag used as the first reference (``MUSE_WHITE``, ``MUSE_APER_1.0``, an
        ancillary-image tag...).
    contsub : str or os.PathLike, optional
        Continuum-subtracted cube (``ifu-extract contsub``) on the same grid; without it the
        continuum of each stamp is fitted here.
    config : XcorConfig, optional
    catalog_format : str
    cube_kwargs : dict, optional
        :func:`~ifu_extract.cubeio.open_cube` options.
    progress : callable, optional
        Called with 1 after each object.

    Returns
    -------
    XcorrStepResult
        An object without a Source file, without the reference tag, or that fails, gets a
        status and a warning; the others go on.

    Raises
    ------
    InputError
        Unreadable inputs, a Source file without an ID or two with the same ID, or neither
        *output* nor *sources*/*summary* (parameters are named ``output``, ``sources``,
        ``summary``).
    """
    cfg = config or XcorConfig()
    tag = str(reference).strip().upper()
    names = ("output", "sources", "summary", "sources_out")
    if output is not None and (sources or summary is not None or sources_out is not None):
        raise ParameterError("{output}", "is exclusive with {sources}, {summary} and {sources_out}",
                             "give either the extract folder or the Source files and the summary",
                             params=names)
    if output is None and (not sources or summary is None):
        raise ParameterError("{sources}" if summary is not None else "{summary}", "is missing",
                             "give the Source files and the summary table, or {output}", params=names)
    table = catalog if isinstance(catalog, Table) else read_catalog(catalog, catalog_format)
    if output is not None:
        output = Path(output)
        summary_path = output / "xcorr.tsv"
        by_id = {str(v): output / "sources" / f"{file_stem(v)}.fits" for v in table["ID"]}
    else:
        summary_path = Path(summary)
        by_id = source_ids(sources)
    rows = []
    with open_cube(cube_path, **(cube_kwargs or {})) as cube:
        csub = None
        if contsub is not None:
            csub = open_cube(contsub)
            if csub.shape[1:] != cube.shape[1:] or csub.nx != cube.nx:
                csub.close()
                raise InputError(contsub, f"has spatial shape {csub.shape[1:]}, the cube "
                                 f"{cube.shape[1:]}", "give the contsub output of this cube")
            try:
                check_product(csub.primary_header, contsub, cube, cube_path,
                              what="continuum-subtracted cube", channels=False)
            except InputError:
                csub.close()
                raise
        try:
            _, mfile = read_masks(masks)
            with mfile:
                check_product(mfile.header, masks, cube, cube_path, what="masks file")
                seg = mfile.segmap(1)
                if sources_out is not None:  # the inputs stay as they are
                    by_id = copy_sources(by_id, sources_out)
                for row in table:
                    obj_id = str(row["ID"])
                    status = str(row["STATUS"]) if "STATUS" in table.colnames else OK
                    if status != OK:
                        rows.append(_row(obj_id, status, REFERENCE=tag))
                    else:
                        rows.append(_xcorr_one(cube, csub, mfile, seg, obj_id, by_id.get(obj_id),
                                               summary_path.parent, tag, cfg))
                    if progress:
                        progress(1)
        finally:
            if csub is not None:
                csub.close()
    _write_table(rows, summary_path)
    written = ([Path(output) / r["FILE"] for r in rows if r["FILE"]] if output is not None
               else list(by_id.values()))
    return XcorrStepResult(rows, summary_path, written, tag, sum(r["STATUS"] == OK for r in rows))


def _row(obj_id, status, **kw):
    out = {"ID": str(obj_id), "STATUS": status, "REFERENCE": "", "N_SPAXELS": 0, "N_ITER": 0,
           "CONVERGED": False, "N_SPAXELS_CONTSUB": 0, "N_ITER_CONTSUB": 0, "CONVERGED_CONTSUB": False,
           "SNR_MEDIAN": float("nan"), "FILE": ""}
    out.update(kw)
    return out


def _xcorr_one(cube, csub, masks, seg, obj_id, path, base, tag, cfg) -> dict:
    try:
        if path is None:
            raise _Skip("no_source_file: no Source file was given for it")
        if not path.exists():
            raise _Skip(f"no_source_file: {path.name} not found (run 'extract' first)")
        layout = source_layout(path, cube)
        if tag not in layout.spectra:
            raise _Skip(f"no_reference: tag {tag} is not in {path.name} (it has "
                        f"{', '.join(sorted(layout.spectra)) or 'no spectrum'})")
        try:
            m = masks.get(obj_id)
        except KeyError:
            m = None
        if m is None:
            raise _Skip("no_mask: the object has no mask in the masks file")
        box = layout.box or m.box
        z0, z1 = layout.channels
        _, rflux, rvar, _, _, _ = read_source_spectrum(path, tag)
        x0, x1, y0, y1 = box
        data, var = cube.window(x0, x1, y0, y1, z0, z1)
        contsub = None
        if csub is not None:
            cz0 = int(np.argmin(np.abs(csub.wave - cube.wave[z0])))
            off = abs(csub.wave[cz0] - cube.wave[z0]) > 1e-3 * abs(float(cube.dwave[z0]))
            if off or cz0 + (z1 - z0) > csub.nwave:
                raise InputError(csub.path, "does not cover the channels of the Source spectra",
                                 "run contsub on the same wavelength range as extract")
            contsub, _ = csub.window(x0, x1, y0, y1, cz0, cz0 + (z1 - z0), with_var=False)
        mm = m.on_box(box) if tuple(m.box) != tuple(box) else m
        obj = mm.obj
        neighbours = None
        if seg is not None:
            seg_stamp = Box(*box).cut(seg, 0)
            neighbours = (seg_stamp > 0) & ~mm.union
        res = xcorr_object(data, var, cube.wave[z0:z1], rflux, rvar, obj, neighbours=neighbours,
                           sky=mm.sky, contsub=contsub, config=cfg)
        if not res.spectra:
            raise _Skip("empty_map: no spaxel correlates positively with the reference")
        kw = {"XCREF": (tag[:40], "reference spectrum of the cross-correlation")}
        if res.notes:
            kw["XCNOTES"] = ("; ".join(res.notes)[:50], "xcorr notes")
        update_source(path, spectra=res.spectra, images=res.images, keywords=kw, tool="xcorr")
        x = res.xcor
        c = res.xcor_contsub
        sp = res.spectra.get("XCOR")
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = float(np.nanmedian(sp.flux / np.sqrt(sp.var))) if sp is not None else float("nan")
        for note in res.notes:
            warn_object(obj_id, note)
        return _row(obj_id, OK, REFERENCE=tag, N_SPAXELS=int(x.region.sum()) if x else 0,
                    N_ITER=x.n_iter if x else 0, CONVERGED=bool(x.converged) if x else False,
                    N_SPAXELS_CONTSUB=int(c.region.sum()) if c else 0, N_ITER_CONTSUB=c.n_iter if c else 0,
                    CONVERGED_CONTSUB=bool(c.converged) if c else False, SNR_MEDIAN=snr,
                    FILE=file_column(path, base))
    except _Skip as exc:
        warn_object(obj_id, str(exc))
        return _row(obj_id, str(exc)[:200], REFERENCE=tag)
    except InputError as exc:
        warn_object(obj_id, exc.oneline())
        return _row(obj_id, f"failed: {exc.oneline()}"[:200], REFERENCE=tag)
    except Exception as exc:  # noqa: BLE001 - one object's failure is its status
        warn_object(obj_id, f"{type(exc).__name__}: {exc}")
        return _row(obj_id, f"failed: {type(exc).__name__}: {exc}"[:200], REFERENCE=tag)


class _Skip(Exception):
    """An object that cannot be processed as asked (its status says why)."""


def _write_table(rows, path):
    types = (str, str, str, int, int, bool, int, int, bool, float, str)
    tab = Table(rows=[[r[c] for c in XCOR_COLUMNS] for r in rows], names=XCOR_COLUMNS, dtype=types) \
        if rows else Table(names=XCOR_COLUMNS, dtype=types)
    tab["SNR_MEDIAN"].format = ".3f"
    return write_catalog(tab, path, "tsv")

"""The masks file (``MASKS.fits``): writing, and reading both its versions.

Format version 2 (written since the ``masks`` package; primary keyword ``MASKFMT = 2``):

* PRIMARY: provenance, ``MASKFMT``, ``CUBE``, ``NOBJ``, ``MASKMODE`` and the parameters used;
* ``OBJECTS``: a binary table, one row per catalogue row, in catalogue order: ``ID``, ``RA``,
  ``DEC`` (deg), ``X``, ``Y`` (0-based cube pixels), ``X0``, ``Y0``, ``NX``, ``NY`` (the stamp
  box in cube pixels, from :meth:`~ifu_extract.box.Box.around`; it may extend beyond the cube),
  ``STATUS``, ``MASKUSED`` (``union``, ``inter``, ``circle``, or empty when the row has no
  mask), ``N_UNION``, ``N_INTER``, ``N_SKY`` (spaxel counts), ``SEGLABEL`` (the row's label in
  each map, comma-separated in map order, 0 = none) and ``MASKOFF``: where the row's stamps
  start in ``MASKS`` (-1 for rows without masks).  Its header holds the celestial WCS of the
  cube grid: a stamp's pixel ``[0, 0]`` is cube pixel ``(X0, Y0)``;
* ``MASKS``: one uint8 image ``(3, n)`` of every object's stamps stacked: row 0
  ``MASK_UNION``, row 1 ``MASK_INTER``, row 2 ``MASK_SKY`` (``MASKROW1..3``); an object's
  stamp is ``MASKS[:, MASKOFF:MASKOFF + NY * NX].reshape(3, NY, NX)`` (x fast), 0 or 1;
* ``SEGMAP`` (``EXTVER`` 1, 2... per map): the segmentation maps on the cube grid, int32.

Four HDUs instead of three per object: astropy opens a file of thousands of objects in a few
milliseconds (it parses one header per HDU, about a millisecond each) and reads only the stamps
asked for from the memory-mapped ``MASKS``, so no custom FITS scanner is needed.

Format version 1 (no ``MASKFMT``; files of ifu-extract 0.x up to the ``masks`` package) stored
``MASK_UNION``, ``MASK_INTER``, ``MASK_SKY`` image HDUs per object (``EXTVER`` = 1-based row);
:func:`read_masks` still reads it (:mod:`ifu_extract.masks.legacy`).

Axis order follows numpy: masks are ``(ny, nx)``; pixel coordinates are 0-based, ``x`` fast.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from ..cubeio import open_fits
from ..errors import InputError
from ..fitsout import add_provenance, ascii_safe, ascii_unescape, atomic_path, iso_date
from ..wcsutil import WCS_KEY
from .build import BuiltMasks, GridSegmap, _text
from .legacy import read_v1
from .maskset import MASK_NAMES, RECREATE, TABLE_COLUMNS, MaskSet, check_stamps

__all__ = ["FORMAT_VERSION", "write_masks", "read_masks", "copy_masks"]

#: Version of the masks file format written (primary keyword ``MASKFMT``).
FORMAT_VERSION = 2


# --------------------------------------------------------------------------------- writing
def _set_card(header: fits.Header, key: str, value, comment: str) -> None:
    """Set a card, shortening the comment to what fits beside the value (no VerifyWarning)."""
    if isinstance(value, str):
        value = ascii_safe(value)  # FITS headers are ASCII (a cube named cübe.fits)
    width = len(str(fits.Card(key, value)).rstrip())
    room = 80 - width - 3
    header[key] = (value, comment[:room] if room > 0 else "")


def _ascii_table(table: Table) -> Table:
    """*table* with its text columns made ASCII (:func:`~ifu_extract.fitsout.ascii_safe`):
    FITS tables hold ASCII only; :func:`read_masks` restores the IDs."""
    text = [c for c in table.colnames if table[c].dtype.kind == "U"
            and not all(str(v).isascii() for v in table[c])]
    if not text:
        return table
    out = table.copy(copy_data=False)
    for c in text:
        out[c] = _text([ascii_safe(v) for v in table[c]])
    return out


def _mask_hdus(result: BuiltMasks, cube_hdr: fits.Header) -> list:
    """The ``OBJECTS`` table (with ``MASKOFF`` and the cube WCS) and the stacked ``MASKS`` image."""
    offsets = np.full(len(result.stamps), -1, dtype=np.int64)
    flat, total = [], 0
    for i, stamp in enumerate(result.stamps):
        if stamp is None:
            continue
        offsets[i] = total
        flat.append(np.stack([np.asarray(s, dtype=np.uint8).ravel() for s in stamp]))
        total += flat[-1].shape[1]
    stacked = np.concatenate(flat, axis=1) if flat else np.zeros((len(MASK_NAMES), 0), np.uint8)
    objects = _ascii_table(result.objects).copy(copy_data=False)
    objects["MASKOFF"] = offsets
    table = fits.BinTableHDU(objects, name="OBJECTS")
    for card in cube_hdr.cards:
        table.header.append((card.keyword, card.value, card.comment))
    image = fits.ImageHDU(stacked if total else None, name="MASKS")
    for k, name in enumerate(MASK_NAMES, start=1):
        image.header[f"MASKROW{k}"] = (name, f"row {k} of the stacked stamps")
    return [table, image]


def write_masks(result: BuiltMasks, path, *, inputs: dict | None = None,
                params: dict | None = None, tool: str = "mask") -> Path:
    """Write a :class:`~ifu_extract.masks.build.BuiltMasks` as ``MASKS.fits`` (format version 2,
    layout in the module docstring), atomically, with CHECKSUM/DATASUM on every HDU.

    Parameters
    ----------
    result : BuiltMasks
    path : str or os.PathLike
        Output FITS file.
    inputs, params : dict, optional
        Provenance (see :func:`~ifu_extract.fitsout.add_provenance`).
    tool : str
        Microtool recorded in the provenance.
    """
    prim = fits.PrimaryHDU()
    add_provenance(prim.header, tool, inputs, params)
    prim.header["MASKFMT"] = (FORMAT_VERSION, "masks file format version")
    for key, (value, comment) in result.meta.items():
        _set_card(prim.header, key, value, comment)
    cube_hdr = result.wcs.to_header(relax=True)
    hdus = [prim, *_mask_hdus(result, cube_hdr)]
    for k, g in enumerate(result.segmaps, start=1):
        h = cube_hdr.copy()
        _set_card(h, "SEGFILE", g.name[:68], "original segmentation map")
        h["SEGHOW"] = (g.how, "how it was put on the cube grid")
        hdus.append(fits.ImageHDU(g.labels.astype(np.int32), h, name="SEGMAP", ver=k))
    when = iso_date()
    dest = Path(path)
    with atomic_path(dest, suffix=".fits") as tmp:
        try:
            hdul = fits.HDUList(hdus)
            hdul.verify("silentfix")
            for hdu in hdul:
                # Checksum comments dated like the rest (SOURCE_DATE_EPOCH): reruns are identical.
                hdu.add_datasum(when=f"data unit checksum updated {when}")
                hdu.add_checksum(when=f"HDU checksum updated {when}", override_datasum=True)
            hdul.writeto(tmp, overwrite=True, checksum=False, output_verify="silentfix")
        except OSError as exc:
            raise InputError(dest, f"cannot write ({exc.strerror or exc})",
                             "check free space and permissions") from None
    return dest


#: Primary-header cards of a masks file that :func:`copy_masks` does not carry over.
_NOT_COPIED = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|ORIGIN|IFXVER|IFXTOOL|DATE|IFXIN\d+|CHECKSUM|"
                         r"DATASUM|MASKFMT|HISTORY|COMMENT|)$")


def copy_masks(masks: MaskSet, dest) -> Path:
    """Write the masks of an open masks file, of any format version, to *dest* in the current
    format (objects, stamps, segmentation maps and the parameter cards; new provenance).

    Extraction reads a format-1 file once through this, so that its workers open a file of
    four HDUs instead of three HDUs per object.
    """
    stamps = []
    for i in range(len(masks)):
        m = masks.get(i)
        stamps.append(None if m is None else tuple(a.astype(np.uint8) for a in (m.union, m.inter, m.sky)))
    segmaps = []
    for k in range(1, masks.n_segmaps + 1):
        name, how = masks.segmap_source(k)
        segmaps.append(GridSegmap(masks.segmap(k), name, how))
    meta = {c.keyword: (c.value, c.comment) for c in masks.header.cards if not _NOT_COPIED.match(c.keyword)}
    built = BuiltMasks(masks.objects, stamps, segmaps, masks.cube_wcs, str(masks.header.get("CUBE", "")), meta)
    return write_masks(built, dest, tool="mask")


def _objects_table(hdu, path) -> Table:
    """The ``OBJECTS`` columns (without the mask columns) with text columns as str."""
    names = list(hdu.columns.names)
    missing = [c for c in TABLE_COLUMNS if c not in names]
    if missing:
        raise InputError(path, f"OBJECTS table lacks {', '.join(missing)}", RECREATE)
    data = hdu.data
    objects = Table([data.field(n) for n in names], names=names, masked=False)
    for name in ("ID", "STATUS", "MASKUSED", "SEGLABEL"):
        objects[name] = np.char.strip(np.asarray(objects[name]).astype(str))
    for name in ("ID", "STATUS"):
        if any("\\" in v for v in objects[name]):  # non-ASCII text written escaped
            objects[name] = _text([ascii_unescape(v) for v in objects[name]])
    return objects


def read_masks(path) -> tuple[Table, MaskSet]:
    """Open a masks file written by :func:`write_masks` (format version 2) or by an earlier
    version (version 1: one image HDU per mask).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    objects : astropy.table.Table
        The ``OBJECTS`` table (``ID``, ``STATUS``, ``MASKUSED``, ``SEGLABEL`` as str), without
        the mask columns.
    masks : MaskSet
        ``masks.get(row_or_id)`` gives an :class:`ObjectMasks` (three bool stamps and the box),
        and :func:`object_mask` the mask named by ``MASKUSED``.

    Raises
    ------
    InputError
        Not FITS, not a masks file (no ``OBJECTS`` table with the expected columns), a format
        version this program does not know, or stamps missing or of the wrong size.
    """
    hdul = open_fits(path, "masks file", lazy=True)
    try:
        return _read(path, hdul)
    except (OSError, ValueError, IndexError, EOFError) as exc:
        hdul.close()
        raise InputError(path, f"is truncated or unreadable ({exc})", RECREATE) from None
    except BaseException:
        hdul.close()
        raise


def _check_complete(path, hdul: fits.HDUList) -> None:
    """Refuse a file whose last HDU is cut short (astropy only warns, and reads zeros or fails
    later): its data unit must lie inside the file (FITS 4.0, section 4.4.1.1)."""
    size = Path(path).stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # "may have been truncated": said below
        hdus = list(hdul)  # loads every header: four or five for format 2
    for hdu in hdus[-1:]:  # data units follow one another: a cut file is short at its end
        h = hdu.header
        naxes = [h.get(f"NAXIS{k}", 0) for k in range(1, h.get("NAXIS", 0) + 1)]
        elements = h.get("PCOUNT", 0) + int(np.prod(naxes)) if naxes else 0
        end = hdu.fileinfo()["datLoc"] + abs(h["BITPIX"]) // 8 * h.get("GCOUNT", 1) * elements
        if end > size:
            raise InputError(path, f"is truncated (HDU {hdu.name} needs {end} bytes, the file has "
                             f"{size})", RECREATE)
    # A file cut at an HDU boundary reads cleanly: count the segmentation maps announced.
    want = hdul[0].header.get("NSEGMAP")
    have = sum(1 for hdu in hdus if hdu.name == "SEGMAP")
    if want is not None and have < want:
        raise InputError(path, f"is truncated or incomplete: {want - have} of {want} segmentation "
                         "maps (SEGMAP) are missing", RECREATE)


def _read(path, hdul: fits.HDUList) -> tuple[Table, MaskSet]:
    """:func:`read_masks` of a file opened (lazily) as *hdul*."""
    try:
        hdu = hdul["OBJECTS"]
    except KeyError:
        raise InputError(path, "has no OBJECTS table, so it is not a masks file",
                         "give the output of 'ifu-extract mask'") from None
    _check_complete(path, hdul)
    version = hdul[0].header.get("MASKFMT", 1)
    if version == 1:
        return read_v1(path, hdul, _objects_table(hdu, path))
    if version != FORMAT_VERSION:
        raise InputError(path, f"is a masks file of format version {version}, newer than this "
                         f"program reads ({FORMAT_VERSION})", "update ifu-extract")
    objects = _objects_table(hdu, path)
    if "MASKOFF" not in objects.colnames or "MASKS" not in hdul:
        raise InputError(path, "has no MASKOFF column or MASKS image", RECREATE)
    stacked = hdul["MASKS"].data
    stacked = np.zeros((len(MASK_NAMES), 0), np.uint8) if stacked is None else stacked
    if stacked.ndim != 2 or stacked.shape[0] != len(MASK_NAMES):
        raise InputError(path, f"MASKS image has shape {stacked.shape}, not (3, n)", RECREATE)
    offsets = np.asarray(objects["MASKOFF"], dtype=np.int64)
    size = np.asarray(objects["NX"], dtype=np.int64) * np.asarray(objects["NY"], dtype=np.int64)
    inside = (offsets >= 0) & (offsets + size <= stacked.shape[1])
    check_stamps(objects, {name: np.where(inside, size, np.where(offsets < 0, 0, -1))
                           for name in MASK_NAMES}, path)
    objects.remove_column("MASKOFF")
    wcs_header = fits.Header([c for c in hdu.header.cards if WCS_KEY.match(c.keyword)])
    objects.meta.clear()
    return objects, MaskSet(path, hdul, objects, (stacked, offsets), wcs_header)

"""Per-object output files in MPDAF's ``Source`` layout, written fast with astropy.

Layout (what ``mpdaf.sdetect.Source.from_file`` reads):

- PRIMARY: ``ID RA DEC FROM FROM_V CUBE CUBE_V`` (MPDAF's mandatory keywords), ``FORMAT``,
  ``CUBECSUM`` (input checksum), ``X Y`` (0-based cube pixels), ``STATUS``, ``MASKUSED``,
  provenance (``IFXVER``, ``IFXTOOL``, ``DATE`` from ``SOURCE_DATE_EPOCH`` when set).
- ``SPE_<TAG>_DATA`` / ``SPE_<TAG>_STAT``: spectra (float32) with a linear spectral WCS.
- ``IMA_<TAG>_DATA`` / ``IMA_<TAG>_STAT``: stamps with the celestial WCS of the stamp
  (``MUSE_WHITE``, ancillary images, and the masks ``MASK_UNION``, ``MASK_INTER``,
  ``MASK_SKY`` as 0/1 images, MPDAF's names for them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from . import __version__
from .errors import InputError
from .fitsio import card_image, header_cards, image_hdu_bytes, primary_header_bytes, write_fast_fits
from .fitsout import add_provenance, ascii_safe
from .wcsutil import celestial_from_header, quiet_wcs, shifted_wcs

__all__ = ["SOURCE_FORMAT", "build_source", "write_source", "read_source_spectrum",
           "BEST_TAGS", "best_tag", "update_source", "stamp_wcs_for", "stamp_wcs_cards",
           "SourceFile", "SourceLayout", "source_layout", "ext_name", "tags_of", "MASK_TAGS"]

#: MPDAF Source format version we follow.
SOURCE_FORMAT = "0.6"
#: Preferred tags for "the" spectrum of an object, best first.
BEST_TAGS = ("DEBLEND", "MUSE_NB", "XCOR_SKYSUB", "XCOR", "MUSE_PSF_SKYSUB", "MUSE_PSF", "MUSE_WHITE_SKYSUB",
             "MUSE_WHITE", "MUSE_TOT_SKYSUB", "MUSE_TOT")


#: Image tags of the masks (0/1 stamps, ``IMA_MASK_UNION_DATA``...), MPDAF's names.
MASK_TAGS = ("MASK_UNION", "MASK_INTER", "MASK_SKY")


def ext_name(kind: str, tag: str, part: str = "DATA") -> str:
    """The extension name of a spectrum or image: ``ext_name("SPE", "MUSE_TOT")`` is
    ``"SPE_MUSE_TOT_DATA"``; *kind* is ``"SPE"`` or ``"IMA"``, *part* ``"DATA"`` or ``"STAT"``."""
    return f"{kind}_{tag}_{part}"


def tags_of(names, kind: str = "SPE") -> list[str]:
    """Tags of the ``<kind>_<TAG>_DATA`` extensions among *names*, in file order.

    Parameters
    ----------
    names : iterable of str
        Extension names (upper case, as astropy gives them).
    kind : str
        ``"SPE"`` (spectra) or ``"IMA"`` (images, the masks included).
    """
    head, tail = f"{kind}_", "_DATA"
    return [n[len(head):-len(tail)] for n in names
            if n.startswith(head) and n.endswith(tail) and len(n) > len(head) + len(tail)]


def best_tag(tags) -> str | None:
    """The preferred spectrum tag among *tags*."""
    tags = set(tags)
    return next((t for t in BEST_TAGS if t in tags), None)


def _spectrum_hdus(tag, flux, var, spec_cards, unit, meta):
    cards = list(spec_cards) + ([("BUNIT", unit, "")] if unit else [])
    cards += [(k, v[0], v[1]) if isinstance(v, tuple) else (k, v, "") for k, v in (meta or {}).items()]
    out = [image_hdu_bytes(f"SPE_{tag}_DATA", np.asarray(flux, dtype=np.float32), cards)]
    if var is not None:
        vcards = list(spec_cards) + ([("BUNIT", f"({unit})**2", "")] if unit else [])
        out.append(image_hdu_bytes(f"SPE_{tag}_STAT", np.asarray(var, dtype=np.float32), vcards))
    return out


def _image_hdus(tag, data, var, wcs_cards_, unit=None):
    cards = list(wcs_cards_) + ([("BUNIT", unit, "")] if unit else [])
    out = [image_hdu_bytes(f"IMA_{tag}_DATA", data, cards)]
    if var is not None:
        vcards = list(wcs_cards_) + ([("BUNIT", f"({unit})**2", "")] if unit else [])
        out.append(image_hdu_bytes(f"IMA_{tag}_STAT", var, vcards))
    return out


def build_source(*, obj_id, ra, dec, cube_name, cube_version, cube_checksum,
                 spec_header, flux_unit: str, spectra: dict, images: dict,
                 masks: dict, stamp_wcs, keywords: dict | None = None,
                 inputs: dict | None = None) -> tuple[fits.Header, list]:
    """The primary header and the extensions (bytes) of one Source file.

    Parameters
    ----------
    obj_id : str
    ra, dec : float
        Degrees.
    cube_name, cube_version, cube_checksum : str
    spec_header : astropy.io.fits.Header or list of (key, value, comment)
        Spectral WCS cards on axis 1 (CTYPE1/CUNIT1/CRVAL1/CRPIX1/CDELT1).
    flux_unit : str
        Unit of the spectra (per spaxel sums: flux density).
    spectra : dict
        ``{tag: Spectrum1D}`` (flux, var, meta).
    images : dict
        ``{tag: (data, var)}`` stamps.
    masks : dict
        ``{"MASK_UNION": bool array, ...}`` stamps.
    stamp_wcs : astropy.wcs.WCS or list of (key, value, comment)
        Celestial WCS of the stamps, or its header cards (:func:`stamp_wcs_cards`).
    keywords : dict, optional
        Extra primary cards ``{key: (value, comment)}``.
    """
    cards, exts = _source_parts(obj_id=obj_id, ra=ra, dec=dec, cube_name=cube_name,
                                cube_version=cube_version, cube_checksum=cube_checksum,
                                spec_header=spec_header, flux_unit=flux_unit, spectra=spectra,
                                images=images, masks=masks, stamp_wcs=stamp_wcs, keywords=keywords,
                                inputs=inputs)
    h = fits.Header()
    for key, value, comment in cards:
        if key == "HISTORY":
            h.add_history(value)
        else:
            h[key] = (value, comment)
    return h, exts


class _Cards(dict):
    """Primary-header cards in order, with the part of the Header API :func:`add_provenance` uses.

    Building a 30-card :class:`astropy.io.fits.Header` costs about a millisecond per file.
    """

    def __init__(self):
        super().__init__()
        self.history = []

    def __setitem__(self, key, value):
        super().__setitem__(key.upper(), tuple(value) if isinstance(value, tuple) else (value, ""))

    def add_history(self, text):
        self.history.append(str(text))

    def cards(self) -> list:
        return [(k, v, c) for k, (v, c) in self.items()] + [("HISTORY", t, "") for t in self.history]


def _source_parts(*, obj_id, ra, dec, cube_name, cube_version, cube_checksum, spec_header, flux_unit,
                  spectra, images, masks, stamp_wcs, keywords=None, inputs=None) -> tuple[list, list]:
    """Primary cards ``[(key, value, comment)]`` and extension bytes of :func:`build_source`."""
    h = _Cards()
    h["ID"] = (_id_value(obj_id), "object ID")
    h["RA"] = (float(ra), "[deg] right ascension")
    h["DEC"] = (float(dec), "[deg] declination")
    h["FROM"] = ("ifu-extract", "software that created this source")
    h["FROM_V"] = (__version__, "version of the software")
    h["CUBE"] = (ascii_safe(str(cube_name))[:50], "datacube")
    h["CUBE_V"] = (str(cube_version)[:50], "datacube version")
    h["CUBECSUM"] = (cube_checksum, "SHA-256 of the cube head + size")
    h["FORMAT"] = (SOURCE_FORMAT, "version of the Source format")
    for key, value in (keywords or {}).items():
        h[key] = value
    add_provenance(h, "extract", inputs)
    del h["ORIGIN"]  # MPDAF reads ORIGIN in a Source as an old name of FROM
    # Cards shared by many extensions are formatted once.
    spec_cards = [card_image(*c) for c in _as_cards(spec_header)]
    exts = []
    for tag in sorted(spectra):
        sp = spectra[tag]
        exts += _spectrum_hdus(tag, sp.flux, sp.var, spec_cards, flux_unit, sp.meta)
    wcs_cards_ = [card_image(*c) for c in (stamp_wcs if isinstance(stamp_wcs, (list, tuple))
                                           else header_cards(stamp_wcs.to_header(relax=True)))]
    for tag in sorted(images):
        data, var = images[tag]
        exts += _image_hdus(tag, np.asarray(data, dtype=np.float32),
                            None if var is None else np.asarray(var, dtype=np.float32), wcs_cards_, flux_unit)
    for tag in sorted(masks):
        exts += _image_hdus(tag, np.asarray(masks[tag], dtype=np.uint8), None, wcs_cards_)
    return h.cards(), exts


def _as_cards(header) -> list:
    return list(header) if isinstance(header, (list, tuple)) else header_cards(header)


def _id_value(obj_id):
    """IDs that are integers are stored as integers (MPDAF's convention)."""
    text = str(obj_id)
    return int(text) if text.lstrip("-").isdigit() else text


def write_source(path, **kwargs) -> Path:
    """Build (as :func:`build_source`, same arguments) and write a Source file atomically."""
    cards, exts = _source_parts(**kwargs)
    return write_fast_fits(path, primary_header_bytes(cards), exts)


def stamp_wcs_for(cube_wcs: WCS, box) -> WCS:
    """Celestial WCS of the stamp ``box = (x0, x1, y0, y1)`` of a cube."""
    x0, _, y0, _ = box
    return shifted_wcs(cube_wcs, y0, x0)


def stamp_wcs_cards(cube_cards, box) -> list:
    """Header cards of :func:`stamp_wcs_for`, from the cube's (``WCS.to_header(relax=True)``).

    The same cards with ``CRPIX1``/``CRPIX2`` moved to the stamp: what :func:`stamp_wcs_for`
    gives, without copying and serialising a WCS per object.

    Parameters
    ----------
    cube_cards : list of (key, value, comment)
        ``header_cards(cube.wcs.to_header(relax=True))``.
    box : (int, int, int, int)
        ``(x0, x1, y0, y1)`` of the stamp in cube pixels.
    """
    shift = {"CRPIX1": box[0], "CRPIX2": box[2]}
    return [(k, float(v) - shift[k], c) if k in shift else (k, v, c) for k, v, c in cube_cards]


@dataclass
class SourceLayout:
    """Where an existing Source file sits on its cube.

    Attributes
    ----------
    box : (int, int, int, int) or None
        ``(x0, x1, y0, y1)`` cube pixels of its stamps (None without any image).
    channels : (int, int) or None
        Half-open cube channel range of its spectra (None without any spectrum).
    spectra : list of str
        Spectrum tags present.
    images : list of str
        Image tags present.
    """

    box: tuple | None
    channels: tuple | None
    spectra: list
    images: list


class SourceFile:
    """A Source file on disk (as MPDAF's ``Source``): its spectra, its stamps, its layout on
    the cube it came from, and updates to it.

    Each method opens the file for what it reads and closes it again (Source files are small
    and may be rewritten by :meth:`update` between reads).

    Parameters
    ----------
    path : str, os.PathLike or file object
        A file written by :func:`write_source` (or by MPDAF); a file object (as specutils
        passes) can be read but not updated.
    """

    def __init__(self, path):
        self.path = Path(path) if isinstance(path, (str, os.PathLike)) else path

    def __repr__(self) -> str:
        return f"SourceFile({str(self.path)!r})"

    def tags(self, kind: str = "SPE") -> list[str]:
        """Spectrum (``"SPE"``) or image (``"IMA"``) tags present, in file order."""
        with fits.open(self.path) as hdul:
            return tags_of([h.name for h in hdul], kind)

    def spectrum(self, tag: str | None = None):
        """One spectrum: ``(wave [Angstrom], flux, var, unit, tag, primary header)``.

        *tag* defaults to the best one present (:data:`BEST_TAGS`).

        Raises
        ------
        KeyError
            No spectrum *tag* in the file.
        """
        path = self.path
        with fits.open(path) as hdul:
            names = [h.name for h in hdul]
            tags = tags_of(names, "SPE")
            if tag is None:
                tag = best_tag(tags) or (tags[0] if tags else None)
            if tag is None or ext_name("SPE", tag) not in names:
                raise KeyError(f"{path}: no spectrum {tag!r} (has {', '.join(tags)})")
            hdu = hdul[ext_name("SPE", tag)]
            flux = np.asarray(hdu.data, dtype=float)
            var = (np.asarray(hdul[ext_name("SPE", tag, "STAT")].data, dtype=float)
                   if ext_name("SPE", tag, "STAT") in names else None)
            wave = spectrum_wave(hdu.header, flux.size)
            return wave, flux, var, hdu.header.get("BUNIT", ""), tag, hdul[0].header.copy()

    def layout(self, cube) -> SourceLayout:
        """Stamp box and channel range of this file on *cube* (a :class:`~ifu_extract.cubeio.Cube`).

        Raises
        ------
        InputError
            Spectra or stamps that are not on the cube's grid.
        """
        path = self.path
        with fits.open(path) as hdul:
            names = [h.name for h in hdul]
            spe = tags_of(names, "SPE")
            ima = tags_of(names, "IMA")
            box = channels = None
            if ima:
                h = hdul[ext_name("IMA", ima[0])].header
                wcs = celestial_from_header(h)
                if wcs is not None:
                    dx = float(cube.wcs.wcs.crpix[0] - wcs.wcs.crpix[0])
                    dy = float(cube.wcs.wcs.crpix[1] - wcs.wcs.crpix[1])
                    x0, y0 = int(round(dx)), int(round(dy))
                    if abs(dx - x0) > 1e-3 or abs(dy - y0) > 1e-3:
                        raise InputError(path, "its stamps are not on the cube's spatial grid",
                                         "extract it again from this cube")
                    box = (x0, x0 + int(h["NAXIS1"]), y0, y0 + int(h["NAXIS2"]))
            if spe:
                h = hdul[ext_name("SPE", spe[0])].header
                n = int(h["NAXIS1"])
                w0 = float(h.get("CRVAL1", cube.wave[0])) + (1.0 - float(h.get("CRPIX1", 1.0))) * float(
                    h.get("CDELT1", h.get("CD1_1", cube.dwave[0])))
                cunit = str(h.get("CUNIT1", "Angstrom")).strip().lower()
                if cunit in ("m", "meter"):
                    w0 *= 1e10
                z0 = int(np.argmin(np.abs(cube.wave - w0)))
                if abs(cube.wave[z0] - w0) > 1e-3 * abs(float(cube.dwave[z0])) or z0 + n > cube.nwave:
                    raise InputError(path, "its spectra are not on the cube's wavelength grid",
                                     "extract it again from this cube")
                channels = (z0, z0 + n)
        return SourceLayout(box, channels, spe, ima)

    def update(self, *, spectra: dict | None = None, images: dict | None = None,
               keywords: dict | None = None, flux_unit: str | None = None, tool: str = "extract") -> Path:
        """Add or replace spectra/images (the file is rewritten atomically).

        Parameters
        ----------
        spectra : dict, optional
            ``{tag: Spectrum1D}`` on the file's spectral grid (that of its other spectra).
        images : dict, optional
            ``{tag: (data, var)}`` on the file's stamp grid (that of ``IMA_MUSE_WHITE``).
        keywords : dict, optional
            Primary cards to set ``{key: (value, comment)}``.
        flux_unit : str, optional
            Unit of the new spectra/images (default: that of the existing spectra).
        tool : str
            Microtool name recorded in the HISTORY.
        """
        path = self.path
        with fits.open(path) as hdul:
            primary = hdul[0].header.copy()
            names = [h.name for h in hdul]
            spe = next((hdul[ext_name("SPE", t)] for t in tags_of(names, "SPE")), None)
            ima = next((hdul[ext_name("IMA", t)] for t in tags_of(names, "IMA")), None)
            unit = flux_unit if flux_unit is not None else ("" if spe is None else str(spe.header.get("BUNIT", "")))
            spec_cards = [] if spe is None else [(k, spe.header[k], "") for k in
                                                 ("CTYPE1", "CUNIT1", "CRPIX1", "CRVAL1", "CDELT1") if k in spe.header]
            wcs_cards_ = [] if ima is None else header_cards(
                celestial_from_header(ima.header).to_header(relax=True))
            new_exts: dict[str, bytes] = {}
            for tag, sp in (spectra or {}).items():
                for blob, suffix in zip(_spectrum_hdus(tag, sp.flux, sp.var, spec_cards, unit, sp.meta),
                                        ("DATA", "STAT")):
                    new_exts[ext_name("SPE", tag, suffix)] = blob
            for tag, (data, var) in (images or {}).items():
                blobs = _image_hdus(tag, np.asarray(data, dtype=np.float32),
                                    None if var is None else np.asarray(var, dtype=np.float32), wcs_cards_, unit)
                for blob, suffix in zip(blobs, ("DATA", "STAT")):
                    new_exts[ext_name("IMA", tag, suffix)] = blob
            kept = []
            for name, hdu in zip(names[1:], hdul[1:]):
                if name in new_exts:
                    continue
                kept.append(image_hdu_bytes(name, np.asarray(hdu.data), _extension_cards(hdu.header)))
        for key, value in (keywords or {}).items():
            if isinstance(value, tuple) and value and isinstance(value[0], str):
                value = (ascii_safe(value[0]), *value[1:])  # FITS headers are ASCII (IDs may not be)
            elif isinstance(value, str):
                value = ascii_safe(value)
            primary[key] = value
        primary.add_history(f"ifu-extract {tool}: added {', '.join(sorted(new_exts))}"[:72])
        return write_fast_fits(path, _strip_structural(primary), kept + [new_exts[k] for k in sorted(new_exts)])


def read_source_spectrum(path, tag: str | None = None):
    """:meth:`SourceFile.spectrum` of the file *path*."""
    return SourceFile(path).spectrum(tag)


def source_layout(path, cube) -> SourceLayout:
    """:meth:`SourceFile.layout` of the file *path* on *cube*."""
    return SourceFile(path).layout(cube)


def update_source(path, **kwargs) -> Path:
    """:meth:`SourceFile.update` of the file *path* (same keyword arguments)."""
    return SourceFile(path).update(**kwargs)


_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME"}


def _extension_cards(header: fits.Header):
    return [(c.keyword, c.value, c.comment) for c in header.cards
            if c.keyword not in _STRUCTURAL and not c.keyword.startswith("NAXIS")]


def _strip_structural(header: fits.Header) -> fits.Header:
    out = fits.Header()
    for c in header.cards:
        if c.keyword not in _STRUCTURAL and not c.keyword.startswith("NAXIS"):
            out.append((c.keyword, c.value, c.comment))
    return out


def spectrum_wave(header: fits.Header, n: int) -> np.ndarray:
    """Wavelengths (Angstrom) of a 1-D spectrum HDU's axis 1 (linear or log, any length unit)."""
    wcs = quiet_wcs(header)
    # astropy returns spectral coordinates in SI units: convert back with the WCS's own unit.
    world = wcs.all_pix2world(np.arange(n, dtype=float), 0)[0]
    unit = u.Unit(wcs.wcs.cunit[0] or header.get("CUNIT1", "Angstrom") or "Angstrom")
    return (world * unit).to_value(u.AA)

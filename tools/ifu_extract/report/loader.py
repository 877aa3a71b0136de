"""What the QA figures of one object are drawn from: a Source file read into :class:`ObjectData`.

:func:`load_object` reads the spectra (``SPE_<TAG>_DATA/_STAT``), the images (``IMA_<TAG>_DATA``,
masks apart), the celestial WCS of the stamps and the wavelength medium, and samples a
segmentation map (any grid with a WCS) at the stamp's pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..errors import OK
from ..sourcefile import ext_name, tags_of
from ..wcsutil import celestial_from_header, pixel_scale_arcsec, world_to_pixel

__all__ = ["ObjectData", "SegmapSampler", "as_float", "load_object", "object_mask"]


def as_float(text) -> float:
    """*text* (a header value or a summary cell) as a float, NaN when it is not a number."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


@dataclass
class ObjectData:
    """What the figures of one object are drawn from (read by :func:`load_object`).

    Attributes
    ----------
    id : str
    path : pathlib.Path
        The Source file.
    header : astropy.io.fits.Header
        Its primary header (``STATUS``, ``SNRTAG``, ``Z``, ``PSFFWHM``...).
    spectra : dict
        ``{tag: (wave [Angstrom], flux, var or None)}``.
    images : dict
        ``{tag: (data, var or None)}`` stamps (``MUSE_WHITE``, ``XCOR``...), masks excluded.
    masks : dict
        ``{"MASK_UNION" | "MASK_INTER" | "MASK_SKY": (ny, nx) bool}``.
    medium : str
        ``"air"`` or ``"vacuum"``.
    unit : str
        Flux unit of the spectra.
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the stamps.
    segmap : numpy.ndarray or None
        Segmentation labels sampled on the stamp grid (0 = background).
    seglabel : int
        The object's label in *segmap* (0 when none).
    """

    id: str
    path: Path
    header: fits.Header
    spectra: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    medium: str = "air"
    unit: str = ""
    wcs: object = None
    segmap: np.ndarray | None = None
    seglabel: int = 0

    @property
    def status(self) -> str:
        return str(self.header.get("STATUS", OK))

    @property
    def z(self) -> float:
        """Catalogue redshift (``Z`` card), NaN when absent."""
        return as_float(self.header.get("Z", "nan"))

    @property
    def stamp_shape(self) -> tuple[int, int] | None:
        for arr in list(self.masks.values()) + [d for d, _ in self.images.values()]:
            return tuple(arr.shape)
        return None

    @property
    def pixscale(self) -> float:
        """Spaxel side, arcsec (1 without WCS: the axes are then in spaxels)."""
        if self.wcs is None:
            return 1.0
        return pixel_scale_arcsec(self.wcs)

    def centre(self) -> tuple[float, float]:
        """0-based stamp pixel of the catalogue position (the stamp centre without WCS)."""
        shape = self.stamp_shape or (1, 1)
        if self.wcs is not None:
            x, y = world_to_pixel(self.wcs, float(self.header["RA"]), float(self.header["DEC"]))
            if np.isfinite(x) and np.isfinite(y):
                return x, y
        return (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0


def _wave_of(header: fits.Header, n: int) -> np.ndarray:
    """Wavelengths (Angstrom) of a linear spectral axis 1 (``CRVAL1 + (i + 1 - CRPIX1) * CDELT1``)."""
    crval = float(header.get("CRVAL1", 0.0))
    crpix = float(header.get("CRPIX1", 1.0))
    cdelt = float(header.get("CDELT1", header.get("CD1_1", 1.0)))
    wave = crval + (np.arange(n, dtype=float) + 1.0 - crpix) * cdelt
    unit = str(header.get("CUNIT1", "Angstrom")).strip().lower()
    scale = {"m": 1e10, "meter": 1e10, "nm": 10.0, "um": 1e4, "micron": 1e4}.get(unit, 1.0)
    return wave * scale


def _medium(primary: fits.Header, spec_header: fits.Header | None) -> str:
    med = str(primary.get("WAVEMED", "")).strip().lower()
    if med in ("air", "vacuum"):
        return med
    ctype = "" if spec_header is None else str(spec_header.get("CTYPE1", "")).strip().upper()
    return "vacuum" if ctype.startswith("WAVE") else "air"


class SegmapSampler:
    """A segmentation map sampled at the stamp pixel centres of each object (any grid)."""

    def __init__(self, segmap):
        self.labels = segmap.labels
        self.wcs = segmap.wcs
        self.name = segmap.path.name

    def stamp(self, stamp_wcs, shape) -> np.ndarray | None:
        if self.wcs is None or stamp_wcs is None:
            return None
        ny, nx = shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        ra, dec = stamp_wcs.all_pix2world(xx.ravel().astype(float), yy.ravel().astype(float), 0)
        sx, sy = self.wcs.all_world2pix(ra, dec, 0)
        ix, iy = np.round(sx).astype(np.int64), np.round(sy).astype(np.int64)
        h, w = self.labels.shape
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        out = np.zeros(ny * nx, dtype=np.int32)
        out[inside] = self.labels[iy[inside], ix[inside]]
        return out.reshape(ny, nx)


def _object_label(seg: np.ndarray, obj_mask: np.ndarray | None, x: float, y: float) -> int:
    ny, nx = seg.shape
    ix, iy = int(round(x)), int(round(y))
    if 0 <= ix < nx and 0 <= iy < ny and seg[iy, ix] > 0:
        return int(seg[iy, ix])
    if obj_mask is not None and obj_mask.any():
        vals = seg[obj_mask & (seg > 0)]
        if vals.size:
            return int(np.bincount(vals).argmax())
    return 0


def load_object(path, *, segmap=None) -> ObjectData:
    """Read what the figures need from one Source file.

    Parameters
    ----------
    path : str or os.PathLike
        ``OUTDIR/sources/<ID>.fits``.
    segmap : SegMap, optional
        A segmentation map (:func:`~ifu_extract.segmap.read_segmap`) on any grid with a WCS;
        it is sampled at the stamp's pixel centres.

    Returns
    -------
    ObjectData
    """
    path = Path(path)
    with fits.open(path, memmap=False) as hdul:
        primary = hdul[0].header.copy()
        obj = ObjectData(str(primary.get("ID", path.stem)), path, primary)
        hdus = {h.name: h for h in hdul[1:]}
        names = list(hdus)
        first_spec = None
        for tag in tags_of(names, "SPE"):
            hdu = hdus[ext_name("SPE", tag)]
            if hdu.data is None:
                continue
            flux = np.asarray(hdu.data, dtype=float)
            obj.spectra[tag] = (_wave_of(hdu.header, flux.size), flux, _stat(hdus, "SPE", tag))
            if first_spec is None:
                first_spec = hdu.header
                obj.unit = str(hdu.header.get("BUNIT", ""))
        for tag in tags_of(names, "IMA"):
            hdu = hdus[ext_name("IMA", tag)]
            if hdu.data is None:
                continue
            data = np.asarray(hdu.data)
            if tag.startswith("MASK_"):
                obj.masks[tag] = data.astype(bool)
                continue
            obj.images[tag] = (data.astype(float), _stat(hdus, "IMA", tag))
            if obj.wcs is None:
                obj.wcs = celestial_from_header(hdu.header)
        if obj.wcs is None:
            ima = next((h for n, h in hdus.items() if n.startswith("IMA_")), None)
            obj.wcs = None if ima is None else celestial_from_header(ima.header)
        obj.medium = _medium(primary, first_spec)
    if segmap is not None and obj.stamp_shape is not None:
        sampler = segmap if isinstance(segmap, SegmapSampler) else SegmapSampler(segmap)
        seg = sampler.stamp(obj.wcs, obj.stamp_shape)
        if seg is not None:
            obj.segmap = seg
            x, y = obj.centre()
            obj.seglabel = _object_label(seg, object_mask(obj), x, y)
    return obj


def _stat(hdus: dict, kind: str, tag: str) -> np.ndarray | None:
    """The variance of a spectrum or image, None when the file has none."""
    stat = hdus.get(ext_name(kind, tag, "STAT"))
    return None if stat is None or stat.data is None else np.asarray(stat.data, dtype=float)


def object_mask(obj: ObjectData) -> np.ndarray | None:
    used = str(obj.header.get("MASKUSED", "union")).strip()
    name = "MASK_INTER" if used == "inter" else "MASK_UNION"
    return obj.masks.get(name, obj.masks.get("MASK_UNION"))

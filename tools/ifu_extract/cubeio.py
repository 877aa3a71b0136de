"""Reading IFU datacubes: layouts, variance, data quality, units, memory-mapped windows.

A :class:`Cube` is a light handle on a FITS file.  Opening it reads headers only; pixel values
are read per window (:meth:`Cube.window`) or per block of wavelength planes
(:meth:`Cube.iter_planes`) from the memory-mapped file, so that cutting a 2″ box out of a
3 GB MUSE cube reads only that box.

Layouts recognised (``Cube.layout``), by extension names:

=========  ===========================  =====================
layout     data / variance / quality    variance from
=========  ===========================  =====================
MUSE       DATA / STAT / DQ             STAT (variance)
MaNGA      FLUX / IVAR / MASK           1 / IVAR
SCI/ERR    SCI / ERR / DQ               ERR²
primary    first 3-D HDU / - / -        none
=========  ===========================  =====================

``data_ext``/``var_ext``/``dq_ext`` override the detection (by name or index).  Voxels whose
quality flag matches ``dq_bits`` become NaN in data and variance.  Surface-brightness cubes
(``.../arcsec2``) are converted to per-spaxel values when read, so that every sum downstream is a
flux.  Arrays are ``(n_wave, ny, nx)`` float32.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from .errors import InputError
from .units import FluxUnit, parse_flux_unit
from .wcsutil import celestial_from_header, pixel_scale_arcsec, wave_axis, wcs_cards

__all__ = ["Cube", "open_cube", "open_fits", "LAYOUTS", "MANGA_DONOTUSE_BITS"]

#: Extension-name triples (data, variance, quality) per layout, tried in this order.
LAYOUTS = {
    "MUSE": ("DATA", "STAT", "DQ"),
    "MaNGA": ("FLUX", "IVAR", "MASK"),
    "SCI/ERR": ("SCI", "ERR", "DQ"),
}
_VAR_KIND = {"STAT": "var", "VAR": "var", "VARIANCE": "var", "IVAR": "ivar", "ERR": "err",
             "ERROR": "err", "SIGMA": "err", "NOISE": "err", "UNCERT": "err"}
#: MaNGA 3DREDUX mask bits that make a voxel unusable: NOCOV, DEADFIBER, FORESTAR, DONOTUSE.
MANGA_DONOTUSE_BITS = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 10)
_FITS_MAGIC = b"SIMPLE  ="


def open_fits(path, what: str = "FITS file") -> fits.HDUList:
    """Open a FITS file memory-mapped, or raise :class:`InputError` saying why not."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file", "check the path")
    if path.is_dir():
        raise InputError(path, f"is a folder, not {_article(what)} {what}", "give the file itself")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "check its permissions") from None
    if head != _FITS_MAGIC and not path.name.endswith((".gz", ".fz")):
        raise InputError(path, "is not a FITS file (it does not start with 'SIMPLE')",
                         f"give {_article(what)} {what} in FITS format")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
    except Exception as exc:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (OSError, fits.verify.VerifyWarning)):
            raise InputError(path, f"is truncated or corrupt ({reason})",
                             "re-download or re-create the file") from None
        raise InputError(path, f"cannot be read as FITS ({reason})", "check the file") from None
    size = path.stat().st_size
    for hdu in hdul:
        # A truncated file opens, but its last data units run past the end of the file.
        offset = getattr(hdu, "_data_offset", None)
        nbytes = getattr(hdu, "_data_size", None)
        if offset is not None and nbytes and offset + nbytes > size:
            hdul.close()
            raise InputError(path, f"is truncated (HDU {hdul.index(hdu)} needs "
                             f"{offset + nbytes} bytes, the file has {size})",
                             "re-download or re-create the file")
    return hdul


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _find_ext(hdul: fits.HDUList, key, path, role: str) -> int:
    """Index of extension *key* (name or number) in *hdul*, or a clear error."""
    if key is None:
        return None
    names = [h.name for h in hdul]
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if isinstance(key, int):
        if 0 <= key < len(hdul):
            return key
    else:
        upper = key.upper()
        if upper in names:
            return names.index(upper)
    listing = ", ".join(f"{i}:{n or '-'}" for i, n in enumerate(names))
    raise InputError(path, f"has no extension {key!r} for the {role} (extensions: {listing})",
                     f"choose one of those with --{role}-ext")


def _ndim(hdu) -> int:
    return int(hdu.header.get("NAXIS", 0)) if hdu.is_image else 0


@dataclass
class Cube:
    """Handle on an IFU datacube file.

    Attributes
    ----------
    path : pathlib.Path
    layout : str
        ``"MUSE"``, ``"MaNGA"``, ``"SCI/ERR"``, ``"primary"`` or ``"custom"``.
    data_ext, var_ext, dq_ext : int or None
        HDU indexes used.
    var_kind : str or None
        How the variance extension encodes the variance: ``"var"``, ``"ivar"`` or ``"err"``.
    shape : tuple of int
        ``(n_wave, ny, nx)``.
    wcs : astropy.wcs.WCS
        Celestial (2-D) WCS of the spatial axes.
    wave : numpy.ndarray
        Wavelength of each channel, Angstrom, ``(n_wave,)``.
    medium : str
        ``"air"`` or ``"vacuum"``.
    flux_unit : FluxUnit
        Parsed BUNIT.
    area_factor : float
        Factor applied when reading (spaxel area in arcsec² for per-arcsec² cubes, else 1).
    dq_bits : int
        Quality bits that flag a voxel as bad (all bits by default; MaNGA's DONOTUSE set).
    """

    path: Path
    hdul: fits.HDUList = field(repr=False)
    layout: str
    data_ext: int
    var_ext: int | None
    dq_ext: int | None
    var_kind: str | None
    shape: tuple
    wcs: WCS = field(repr=False)
    wave: np.ndarray = field(repr=False)
    medium: str
    flux_unit: FluxUnit
    area_factor: float
    dq_bits: int
    primary_header: fits.Header = field(repr=False)
    data_header: fits.Header = field(repr=False)

    # ------------------------------------------------------------------ properties
    @property
    def nwave(self) -> int:
        return self.shape[0]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def nx(self) -> int:
        return self.shape[2]

    @property
    def pixscale(self) -> float:
        """Spaxel side, arcsec."""
        return pixel_scale_arcsec(self.wcs)

    @property
    def dwave(self) -> np.ndarray:
        """Channel widths, Angstrom, ``(n_wave,)``."""
        return np.gradient(self.wave) if self.nwave > 1 else np.ones(1)

    @property
    def unit(self) -> u.UnitBase | None:
        """Per-spaxel flux-density unit of the values returned by the readers."""
        return self.flux_unit.unit

    @property
    def unit_string(self) -> str:
        return self.flux_unit.to_string()

    @property
    def instrument(self) -> str:
        for hdr in (self.primary_header, self.data_header):
            for key in ("INSTRUME", "TELESCOP"):
                if hdr.get(key):
                    return str(hdr[key]).strip()
        return "unknown"

    @property
    def has_var(self) -> bool:
        return self.var_ext is not None

    # ------------------------------------------------------------------ readers
    def _convert_var(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if self.var_kind == "ivar":
            with np.errstate(divide="ignore", invalid="ignore"):
                var = np.where(raw > 0, 1.0 / raw, np.nan).astype(np.float32)
        elif self.var_kind == "err":
            var = np.square(raw, dtype=np.float32)
        else:
            var = raw  # the caller copies it into its own buffer
        return var

    def _read(self, ext: int, sl) -> np.ndarray:
        hdu = self.hdul[ext]
        try:
            return hdu.data[sl]
        except Exception as exc:  # noqa: BLE001 - mmap errors on truncated or odd files
            raise InputError(self.path, f"cannot read extension {ext} ({exc})",
                             "check that the file is complete") from None

    def window(self, x0: int, x1: int, y0: int, y1: int, z0: int = 0, z1: int | None = None,
               *, with_var: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Read a box of the cube; parts outside the cube are NaN.

        Parameters
        ----------
        x0, x1, y0, y1 : int
            Half-open spatial pixel ranges (0-based, may extend beyond the cube).
        z0, z1 : int
            Half-open channel range (clipped to the cube).
        with_var : bool
            Also read the variance.

        Returns
        -------
        data, var : numpy.ndarray
            ``(z1 - z0, y1 - y0, x1 - x0)`` float32 arrays with bad voxels set to NaN, per
            spaxel; *var* is None when the cube has no variance or it was not asked for.
        """
        z1 = self.nwave if z1 is None else min(int(z1), self.nwave)
        z0 = max(int(z0), 0)
        out_shape = (z1 - z0, y1 - y0, x1 - x0)
        want_var = with_var and self.has_var
        cx0, cx1 = max(x0, 0), min(x1, self.nx)
        cy0, cy1 = max(y0, 0), min(y1, self.ny)
        src = (slice(z0, z1), slice(cy0, cy1), slice(cx0, cx1))
        if (cx0, cx1, cy0, cy1) == (x0, x1, y0, y1) and z1 > z0:
            # Whole box inside the cube: one converting copy, no padding buffer.
            data = np.array(self._read(self.data_ext, src), dtype=np.float32)
            var = np.array(self._convert_var(self._read(self.var_ext, src)), dtype=np.float32) if want_var else None
            self._apply_quality(data, var, src, (slice(None),) * 3)
            return data, var
        data = np.full(out_shape, np.nan, dtype=np.float32)
        var = np.full(out_shape, np.nan, dtype=np.float32) if want_var else None
        if cx1 <= cx0 or cy1 <= cy0 or z1 <= z0:
            return data, var
        dst = (slice(None), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        data[dst] = self._read(self.data_ext, src)
        if var is not None:
            var[dst] = self._convert_var(self._read(self.var_ext, src))
        self._apply_quality(data, var, src, dst)
        return data, var

    def _apply_quality(self, data, var, src, dst) -> None:
        d = data[dst]  # a view: edits land in *data*
        bad = ~np.isfinite(d)
        if self.dq_ext is not None:
            dq = np.asarray(self._read(self.dq_ext, src))
            if self.dq_bits == -1:
                bad |= dq != 0
            else:
                bad |= (dq.astype(np.int64) & self.dq_bits) != 0
        if var is not None:
            v = var[dst]
            bad |= ~(v >= 0)  # NaN or negative variance
            np.copyto(v, np.nan, where=bad)
        np.copyto(d, np.nan, where=bad)
        if self.area_factor != 1.0:
            d *= self.area_factor
            if var is not None:
                var[dst] *= self.area_factor ** 2

    def iter_planes(self, z0: int = 0, z1: int | None = None, *, block: int | None = None,
                    with_var: bool = True):
        """Yield ``(z_start, data, var)`` blocks of whole wavelength planes.

        The block size keeps each read near 64 MB whatever the cube size.
        """
        z1 = self.nwave if z1 is None else min(z1, self.nwave)
        if block is None:
            block = max(1, int(64e6 // (4 * self.nx * self.ny)))
        for zs in range(max(z0, 0), z1, block):
            ze = min(zs + block, z1)
            data, var = self.window(0, self.nx, 0, self.ny, zs, ze, with_var=with_var)
            yield zs, data, var

    def channel_range(self, wmin: float | None, wmax: float | None) -> tuple[int, int]:
        """Half-open channel range whose centres lie within [wmin, wmax] Angstrom."""
        lo = -np.inf if wmin is None else wmin
        hi = np.inf if wmax is None else wmax
        eps = 1e-6 * float(np.median(np.abs(self.dwave)))  # bounds on a channel centre count
        inside = np.flatnonzero((self.wave >= lo - eps) & (self.wave <= hi + eps))
        if inside.size == 0:
            raise InputError(self.path, f"no channel between {lo:g} and {hi:g} Angstrom "
                             f"(the cube covers {self.wave[0]:.1f}-{self.wave[-1]:.1f})",
                             "choose a wavelength range inside the cube")
        return int(inside[0]), int(inside[-1]) + 1

    def sample_finite(self, nplanes: int = 16) -> bool:
        """True when some evenly spaced planes hold at least one finite voxel (cheap check)."""
        for z in np.unique(np.linspace(0, self.nwave - 1, nplanes).astype(int)):
            data, _ = self.window(0, self.nx, 0, self.ny, z, z + 1, with_var=False)
            if np.isfinite(data).any():
                return True
        return False

    def spectral_header(self) -> fits.Header:
        """The spectral-axis cards of the cube, for 1D spectra (axis 1)."""
        hdr = fits.Header()
        src = self.data_header
        ctype = src.get("CTYPE3", "AWAV" if self.medium == "air" else "WAVE")
        hdr["CTYPE1"] = ctype
        hdr["CUNIT1"] = src.get("CUNIT3", "Angstrom")
        hdr["CRPIX1"] = src.get("CRPIX3", 1.0)
        hdr["CRVAL1"] = src.get("CRVAL3", float(self.wave[0]))
        hdr["CDELT1"] = src.get("CD3_3", src.get("CDELT3", float(self.dwave[0])))
        return hdr

    def close(self) -> None:
        self.hdul.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _detect_layout(hdul, path, data_ext, var_ext, dq_ext):
    names = [h.name for h in hdul]
    if data_ext is not None:
        d = _find_ext(hdul, data_ext, path, "data")
        v = _find_ext(hdul, var_ext, path, "var")
        q = _find_ext(hdul, dq_ext, path, "dq")
        if v is None:
            # Same conventions as detection: the data HDU may point to its variance (ERRDATA).
            for cand in (hdul[d].header.get("ERRDATA"), "STAT", "IVAR", "ERR", "VAR"):
                if cand and str(cand).upper() in names:
                    v = names.index(str(cand).upper())
                    break
        return "custom", d, v, q
    for layout, (dn, vn, qn) in LAYOUTS.items():
        if dn in names and _ndim(hdul[names.index(dn)]) == 3:
            d = names.index(dn)
            v = _find_ext(hdul, var_ext, path, "var") if var_ext is not None else (
                names.index(vn) if vn in names else None)
            q = _find_ext(hdul, dq_ext, path, "dq") if dq_ext is not None else (
                names.index(qn) if qn in names else None)
            return layout, d, v, q
    three_d = [i for i, h in enumerate(hdul) if _ndim(h) == 3]
    if not three_d:
        listing = ", ".join(f"{i}:{h.name or '-'}({_ndim(h)}-D)" for i, h in enumerate(hdul))
        raise InputError(path, f"has no 3-D image extension (found {listing})",
                         "give a datacube, or name its extension with --data-ext")
    d = three_d[0]
    v = _find_ext(hdul, var_ext, path, "var")
    q = _find_ext(hdul, dq_ext, path, "dq")
    return ("primary" if d == 0 else "custom"), d, v, q


def open_cube(path, *, data_ext=None, var_ext=None, dq_ext=None,
              dq_bits: int | None = None, require_finite: bool = True) -> Cube:
    """Open an IFU datacube (headers only; pixels are read on demand).

    Parameters
    ----------
    path : str or os.PathLike
        FITS file.
    data_ext, var_ext, dq_ext : int or str, optional
        Extension name or index overriding the layout detection.
    dq_bits : int, optional
        Quality bits that flag a voxel (default: any bit; MaNGA: DONOTUSE and friends).
    require_finite : bool
        Refuse a cube whose sampled planes are all NaN.

    Returns
    -------
    Cube

    Raises
    ------
    InputError
        Not FITS, truncated, no 3-D HDU, no celestial WCS, no wavelength axis, all NaN...
    """
    path = Path(os.fspath(path))
    hdul = open_fits(path, "datacube")
    try:
        layout, d, v, q = _detect_layout(hdul, path, data_ext, var_ext, dq_ext)
        hdr = hdul[d].header
        if _ndim(hdul[d]) != 3:
            raise InputError(path, f"extension {d} ({hdul[d].name or 'PRIMARY'}) is "
                             f"{_ndim(hdul[d])}-D, not a cube",
                             "name the 3-D extension with --data-ext")
        shape = tuple(int(hdr[f"NAXIS{k}"]) for k in (3, 2, 1))
        if v is not None and tuple(hdul[v].shape or ()) != shape:
            raise InputError(path, f"variance extension {hdul[v].name} has shape "
                             f"{hdul[v].shape}, the data {shape}", "name the right one with --var-ext")
        if q is not None and tuple(hdul[q].shape or ()) != shape:
            q = None  # a quality HDU of another shape (e.g. MaNGA 2-D masks) cannot flag voxels
        # Celestial keywords may sit in the primary header of some layouts: merge them.
        merged = wcs_cards(hdr, hdul[0].header if d != 0 else None)
        merged["NAXIS"] = 3
        for k in (1, 2, 3):
            merged[f"NAXIS{k}"] = hdr[f"NAXIS{k}"]
        wcs = celestial_from_header(merged)
        if wcs is None:
            raise InputError(path, "has no celestial WCS (RA/Dec axes) in its data header",
                             "add CTYPE1/2, CRVAL, CRPIX and CD keywords, e.g. from the pipeline")
        try:
            wave, medium = wave_axis(merged, shape[0])
        except ValueError as exc:
            raise InputError(path, f"has no usable wavelength axis ({exc})",
                             "the third axis must be AWAV or WAVE (CTYPE3) in a length unit") from None
        var_kind = None
        if v is not None:
            var_kind = _VAR_KIND.get(hdul[v].name.upper(), "var")
        flux_unit = parse_flux_unit(hdr.get("BUNIT", hdul[0].header.get("BUNIT")))
        scale = pixel_scale_arcsec(wcs)
        area_factor = scale * scale if flux_unit.per_area == "arcsec2" else 1.0
        if dq_bits is None:
            dq_bits = MANGA_DONOTUSE_BITS if layout == "MaNGA" else -1
        cube = Cube(path=path, hdul=hdul, layout=layout, data_ext=d, var_ext=v, dq_ext=q,
                    var_kind=var_kind, shape=shape, wcs=wcs, wave=wave, medium=medium,
                    flux_unit=flux_unit, area_factor=area_factor, dq_bits=int(dq_bits),
                    primary_header=hdul[0].header, data_header=hdr)
        if require_finite and not cube.sample_finite():
            if not any(np.isfinite(blk).any() for _, blk, _ in cube.iter_planes(with_var=False)):
                raise InputError(path, "has no finite data value (all NaN or flagged)",
                                 "check the data extension and the DQ policy (--dq-ext)")
        return cube
    except BaseException:
        hdul.close()
        raise

"""Reading IFU datacubes: layouts, variance, data quality, units, memory-mapped windows.

A :class:`Cube` is a light handle on a FITS file.  Opening it reads headers only; pixel values
are read per window (:meth:`Cube.window`, or block by block of channels with
:meth:`Cube.window_blocks`) or per block of wavelength planes (:meth:`Cube.iter_planes`) from
the memory-mapped file, so that cutting a 2″ box out of a 3 GB MUSE cube reads only that box.

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

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from .errors import InputError, warn_once
from .fitsio import compression, decompress_command, file_head, is_fits
from .units import FluxUnit, parse_flux_unit
from .wcsutil import celestial_from_header, pixel_scale_arcsec, wave_axis, wcs_cards

__all__ = ["Cube", "open_cube", "open_fits", "LAYOUTS", "MANGA_DONOTUSE_BITS", "BLOCK_BYTES",
           "channels_per_block"]

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
log = logging.getLogger("ifu_extract")
#: Bytes of one float32 block of channels read at a time: the block and the few arrays derived
#: from it stay in the CPU's L2 cache (~2 MB) while they are processed.
BLOCK_BYTES = 1 << 18


def channels_per_block(npix: int) -> int:
    """Channels per block of a window of *npix* spaxels: :data:`BLOCK_BYTES` of float32 (>= 1)."""
    return max(1, BLOCK_BYTES // (4 * max(npix, 1)))


def open_fits(path, what: str = "FITS file", *, lazy: bool = False) -> fits.HDUList:
    """Open a FITS file memory-mapped, or raise :class:`InputError` saying why not.

    With *lazy*, HDUs are parsed only when first indexed and the file is not checked for
    truncation here: for files of thousands of HDUs whose reader scans their layout itself
    (:func:`ifu_extract.masks.read_masks`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file", "check the path")
    if path.is_dir():
        raise InputError(path, f"is a folder, not {_article(what)} {what}", "give the file itself")
    head = file_head(path)
    packed = compression(head)
    if not is_fits(head) and packed is None:
        raise InputError(path, "is not a FITS file (it does not start with 'SIMPLE')",
                         f"give {_article(what)} {what} in FITS format")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            hdul = fits.open(path, memmap=True, lazy_load_hdus=lazy)
    except Exception as exc:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, (OSError, fits.verify.VerifyWarning)):
            raise InputError(path, f"is truncated or corrupt ({reason})",
                             "re-download or re-create the file") from None
        raise InputError(path, f"cannot be read as FITS ({reason})", "check the file") from None
    if lazy or packed is not None:
        return hdul  # a compressed file is shorter than its HDUs: astropy checks it as it reads
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


def _refuse_compressed(path, hdul, d: int) -> None:
    """Cubes are read window by window through a memory map: compressed files are refused."""
    packed = compression(file_head(path))
    if packed is not None:
        tool = decompress_command(packed)
        raise InputError(path, f"is a {packed}-compressed cube, which cannot be read window by "
                         "window", f"decompress it first ({tool} {path.name}) and give the .fits file")
    if isinstance(hdul[d], fits.CompImageHDU):
        raise InputError(path, f"extension {hdul[d].name} is tile-compressed (fpack), which cannot "
                         "be read window by window",
                         f"decompress it first (funpack {path.name}) and give the .fits file")


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
    #: Why the variance cannot give errors and S/N (missing, all zero, negative), or None.
    var_problem: str | None = None
    #: Name of the cube shown to people and recorded in products (``CUBE`` of Source files):
    #: the file name, unless the caller knows a better one (Galaxy's dataset name).
    display_name: str | None = None

    @property
    def name(self) -> str:
        """The cube's name for people: :attr:`display_name`, else the file name."""
        return self.display_name or self.path.name

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
    def _convert_var_into(self, out: np.ndarray, raw) -> None:
        """Variance from the raw variance HDU values *raw*, written into the float32 array *out*.

        ``var`` is copied, ``ivar`` inverted (NaN where not > 0), ``err`` squared; in place,
        without temporaries.
        """
        np.copyto(out, raw, casting="unsafe")
        if self.var_kind == "ivar":
            pos = out > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(1.0, out, out=out)
            np.copyto(out, np.nan, where=~pos)
        elif self.var_kind == "err":
            np.square(out, out=out)

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
        out_shape = (max(z1 - z0, 0), y1 - y0, x1 - x0)
        want_var = with_var and self.has_var
        data = np.empty(out_shape, dtype=np.float32)
        var = np.empty(out_shape, dtype=np.float32) if want_var else None
        step = channels_per_block(out_shape[1] * out_shape[2])
        for zs in range(z0, z1, step):
            ze = min(zs + step, z1)
            self._fill(data[zs - z0:ze - z0], None if var is None else var[zs - z0:ze - z0],
                       x0, x1, y0, y1, zs, ze)
        return data, var

    def window_blocks(self, x0: int, x1: int, y0: int, y1: int, z0: int = 0, z1: int | None = None,
                      *, with_var: bool = True, block: int | None = None, with_flags: bool = False):
        """Yield the :meth:`window` of a box in blocks of channels: ``(z_start, data, var)``.

        The values are those of :meth:`window`; the arrays ``(n, y1 - y0, x1 - x0)`` float32 are
        the same buffers refilled for every block (sized to stay in the CPU cache by default), so
        use each block before asking for the next (the caller may modify them).  A per-object
        estimator then never holds its whole window in memory, nor reads it twice.

        Parameters
        ----------
        x0, x1, y0, y1, z0, z1, with_var
            As for :meth:`window`.
        block : int, optional
            Channels per block.
        with_flags : bool
            Also yield the bool mask of the block's NaN (bad or outside) voxels, or None when
            there are none, and whether there are none and every variance is > 0:
            ``(z_start, data, var, bad, positive)``.
        """
        z1 = self.nwave if z1 is None else min(int(z1), self.nwave)
        z0 = max(int(z0), 0)
        step = max(1, int(block)) if block else channels_per_block((y1 - y0) * (x1 - x0))
        step = min(step, max(z1 - z0, 1))
        dbuf = np.empty((step, y1 - y0, x1 - x0), dtype=np.float32)
        vbuf = np.empty_like(dbuf) if (with_var and self.has_var) else None
        for zs in range(z0, z1, step):
            n = min(step, z1 - zs)
            d, v = dbuf[:n], None if vbuf is None else vbuf[:n]
            bad, positive = self._fill(d, v, x0, x1, y0, y1, zs, zs + n)
            yield (zs, d, v, bad, positive) if with_flags else (zs, d, v)

    def _fill(self, data, var, x0, x1, y0, y1, z0, z1):
        """Fill *data* (and *var*), ``(z1 - z0, y1 - y0, x1 - x0)`` float32, as :meth:`window` does.

        Returns the bool mask of NaN voxels (bad or outside the cube), or None when there is
        none, and whether every variance is > 0 (False without variance).
        """
        cx0, cx1 = max(x0, 0), min(x1, self.nx)
        cy0, cy1 = max(y0, 0), min(y1, self.ny)
        inside = (cx0, cx1, cy0, cy1) == (x0, x1, y0, y1)
        if not inside:
            data.fill(np.nan)
            if var is not None:
                var.fill(np.nan)
            if cx1 <= cx0 or cy1 <= cy0:
                return np.ones(data.shape, dtype=bool), False
        src = (slice(z0, z1), slice(cy0, cy1), slice(cx0, cx1))
        dst = (slice(None), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        # One converting copy straight from the memory-mapped file (big-endian on disk).
        np.copyto(data[dst], self._read(self.data_ext, src), casting="unsafe")
        if var is not None:
            self._convert_var_into(var[dst], self._read(self.var_ext, src))
        bad, positive = self._apply_quality(data, var, src, dst)
        if inside:
            return bad, positive
        full = np.ones(data.shape, dtype=bool)
        full[dst] = False if bad is None else bad
        return full, False

    def _apply_quality(self, data, var, src, dst):
        """Flag bad voxels of ``data[dst]`` (NaN in data and variance).

        Returns their mask (None when there is none) and whether every variance is > 0 (False
        when there are bad voxels).
        """
        d = data[dst]  # a view: edits land in *data*
        v = None if var is None else var[dst]
        dq = None
        if self.dq_ext is not None:
            dq = np.asarray(self._read(self.dq_ext, src))
            dq = dq != 0 if self.dq_bits == -1 else (dq.astype(np.int64) & self.dq_bits) != 0
        # Most blocks have nothing to flag: two reductions say so (a NaN or an infinity makes the
        # sum non-finite, a NaN or non-positive variance the minimum not > 0) before any mask.
        with np.errstate(over="ignore", invalid="ignore"):
            clean = bool(np.isfinite(d.sum())) and (dq is None or not dq.any())
            positive = v is not None and bool(v.min(initial=np.inf) > 0)
        if clean and (v is None or positive):
            bad = None
        else:
            bad = np.isfinite(d)
            np.logical_not(bad, out=bad)
            if dq is not None:
                bad |= dq
            if v is not None and not positive:  # NaN or negative variance is bad (zero is usable)
                ok = np.greater_equal(v, 0)
                bad |= np.logical_not(ok, out=ok)
            if bad.any():
                np.copyto(d, np.nan, where=bad)
                if v is not None:
                    np.copyto(v, np.nan, where=bad)
            else:
                bad = None
        if self.area_factor != 1.0:
            d *= self.area_factor
            if v is not None:
                v *= self.area_factor ** 2
        return (bad, False) if bad is not None else (None, positive)

    def iter_planes(self, z0: int = 0, z1: int | None = None, *, block: int | None = None,
                    with_var: bool = True):
        """Yield ``(z_start, data, var)`` blocks of whole wavelength planes.

        The default block size keeps each read near 4 MB whatever the cube size: small enough
        that the caller's passes over a block (masks, sums) find it in the CPU's last-level
        cache (a white-light image of a 2.6 GB cube takes half the time it takes with 64 MB
        blocks), large enough that the per-block overhead stays negligible.
        """
        z1 = self.nwave if z1 is None else min(z1, self.nwave)
        if block is None:
            block = max(1, int(4e6 // (4 * self.nx * self.ny)))
        for zs in range(max(z0, 0), z1, block):
            ze = min(zs + block, z1)
            data, var = self.window(0, self.nx, 0, self.ny, zs, ze, with_var=with_var)
            yield zs, data, var

    @property
    def max_box_arcsec(self) -> float:
        """Largest box side (arcsec) a per-object stamp may have: the field's longer side."""
        return max(self.nx, self.ny) * self.pixscale

    def clip_box_sizes(self, sizes, what: str = "--size") -> np.ndarray:
        """Box sides *sizes* (arcsec) clipped to :attr:`max_box_arcsec`, with one warning.

        A stamp then never exceeds the field, whatever the option or the catalogue's SIZE
        column asks (a 1000-arcsec box on an 8-arcsec field would need tens of GB).
        """
        sizes = np.array(sizes, dtype=float, ndmin=1)
        limit = self.max_box_arcsec
        over = ~(sizes <= limit)
        if over.any():
            log.warning(f"warning: {what}: box side {float(np.nanmax(sizes)):g} arcsec is larger "
                        f"than the field of {self.path.name} ({limit:g} arcsec); clipped to "
                        f"{limit:g} arcsec for {int(over.sum())} object(s)")
            sizes[over] = limit
        return sizes

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


#: Extension names of data-quality flags, never a variance.
_QUALITY_NAMES = ("DQ", "MASK", "QUALITY", "FLAGS", "BADPIX")


def _refuse_quality_as_variance(hdul, v: int, path) -> None:
    hdu = hdul[v]
    name = (hdu.name or "").upper()
    integer = int(hdu.header.get("BITPIX", -32)) > 0 and "BSCALE" not in hdu.header
    if name in _QUALITY_NAMES or integer:
        what = f"data-quality flags ({name})" if name in _QUALITY_NAMES else \
            f"integers (BITPIX {hdu.header.get('BITPIX')})"
        raise InputError(path, f"extension {v} ({name or '-'}) holds {what}, not a variance",
                         "name the variance (STAT, VAR), inverse variance (IVAR) or error (ERR) "
                         "extension with --var-ext")


def _variance_problem(cube: Cube, layout: str) -> tuple[str, str] | None:
    """Why the cube's variance cannot give errors: missing, all zero or negative (or None).

    Returns a short note for the objects' NOTES and the warning text.  Reads the variance of
    16 evenly spaced planes (as :meth:`Cube.sample_finite` does for the data): a cheap look that
    catches a missing, zeroed or sign-flipped variance extension.
    """
    if cube.var_ext is None:
        names = ", ".join(h.name or "-" for h in cube.hdul)
        expected = LAYOUTS.get(layout, (None, "STAT, IVAR or ERR"))[1]
        return ("no variance: S/N and errors NaN",
                f"has no variance extension (looked for {expected}; extensions: {names}): errors "
                "and S/N will be NaN and the objects' NOTES say so; name it with --var-ext")
    name = cube.hdul[cube.var_ext].name or str(cube.var_ext)
    planes = np.unique(np.linspace(0, cube.nwave - 1, 16).astype(int))
    # fmin/fmax ignore NaN: two reductions per plane, no temporaries.
    lo, hi = np.inf, -np.inf
    for z in planes:
        raw = cube._read(cube.var_ext, int(z))
        lo = min(lo, float(np.fmin.reduce(raw, axis=None)))
        hi = max(hi, float(np.fmax.reduce(raw, axis=None)))
    n_neg = n_fin = 0
    if lo < 0:  # count them, for the message
        for z in planes:
            raw = np.asarray(cube._read(cube.var_ext, int(z)), dtype=np.float64)
            n_fin += int(np.isfinite(raw).sum())
            n_neg += int((raw < 0).sum())
    if lo == 0 and hi == 0:
        return (f"variance {name} all zero: S/N and errors NaN",
                f"variance extension {name} is all zero: errors and S/N will be NaN and the "
                "objects' NOTES say so; check the file or name another one with --var-ext")
    if n_neg:
        share = f"{100.0 * n_neg / max(n_fin, 1):.3g}%"
        return (f"variance {name} negative in {share} of voxels (ignored)",
                f"variance extension {name} has negative values ({share} of the sampled voxels): "
                "those voxels are ignored and the objects' NOTES say so; check the file or name "
                "another one with --var-ext")
    return None


def open_cube(path, *, data_ext=None, var_ext=None, dq_ext=None,
              dq_bits: int | None = None, require_finite: bool = True, cube_name: str | None = None) -> Cube:
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
    cube_name : str, optional
        The cube's name for people (:attr:`Cube.name`) when the file name is not it, e.g. the
        dataset name of a Galaxy job whose file is ``dataset_<uuid>.dat``.

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
        _refuse_compressed(path, hdul, d)
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
            _refuse_quality_as_variance(hdul, v, path)
            var_kind = _VAR_KIND.get(hdul[v].name.upper(), "var")
        flux_unit = parse_flux_unit(hdr.get("BUNIT", hdul[0].header.get("BUNIT")))
        scale = pixel_scale_arcsec(wcs)
        area_factor = scale * scale if flux_unit.per_area == "arcsec2" else 1.0
        if dq_bits is None:
            dq_bits = MANGA_DONOTUSE_BITS if layout == "MaNGA" else -1
        cube = Cube(path=path, hdul=hdul, layout=layout, data_ext=d, var_ext=v, dq_ext=q,
                    var_kind=var_kind, shape=shape, wcs=wcs, wave=wave, medium=medium,
                    flux_unit=flux_unit, area_factor=area_factor, dq_bits=int(dq_bits),
                    primary_header=hdul[0].header, data_header=hdr, display_name=cube_name or None)
        if require_finite and not cube.sample_finite():
            if not any(np.isfinite(blk).any() for _, blk, _ in cube.iter_planes(with_var=False)):
                raise InputError(path, "has no finite data value (all NaN or flagged)",
                                 "check the data extension and the DQ policy (--dq-ext)")
        problem = _variance_problem(cube, layout)
        if problem is not None:
            cube.var_problem = problem[0]
            warn_once(path, problem[1])
        return cube
    except BaseException:
        hdul.close()
        raise

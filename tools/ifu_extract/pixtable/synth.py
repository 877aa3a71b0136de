"""Synthetic MUSE pixel tables of any size, in both layouts, with known truth.

The geometry follows the instrument: 24 IFUs, each a 60" x 2.5" strip of the 1' field; each IFU
has 48 slices (4 stacks of 12 on the sky, side by side on the CCD in CCD numbering, at the x
offsets recorded in ``EXP0 IFUnn SLICEnn XOFFSET``); every slice is ``slice_width`` detector
columns (along the slice on the sky) by ``n_lambda`` detector rows (wavelength).  Rows are
ordered exposure, IFU, CCD slice, detector column, detector row, like a pipeline table.  Sky
positions drift slowly with wavelength (differential refraction) and carry a small jitter, so
the table is irregular like a real one.  Data are a sky continuum with emission lines (times an
optional per-slice, per-wavelength-bin throughput factor, for self-calibration tests), plus
Gaussian sources, plus noise whose variance is the ``stat`` column; about ``dq_fraction`` of the
rows have ``dq > 0`` (bad detector columns and random bad pixels, with spiked data).

For a requested number of rows the slice width and the number of wavelength pixels are chosen
with the aspect ratio of the real detector (~75 x 4000), and the table is cut at exactly
``nrows``.  Generation is chunked and multi-threaded (each chunk has its own seeded generator,
so the output does not depend on the thread count), and memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from ..fitsout import add_provenance, atomic_path
from .header import NSLICE, ccd_to_sky_slice, ensure_limit_cards, key, set_limits
from .origin import encode
from .reader import default_threads, ordered_map
from .writer import ColumnStats, PixTableWriter

__all__ = ["SynthSource", "SynthSpec", "Geometry", "geometry", "generate_rows",
           "write_pixtable", "mask_image_hdulist", "SKY_LINES", "DATA_UNITS"]

#: Bright night-sky lines (Angstrom, air) put in the synthetic sky, with relative amplitudes.
SKY_LINES = ((5577.34, 6.0), (5889.95, 2.0), (6300.30, 3.0), (6363.78, 1.0), (6863.96, 1.5),
             (7340.89, 1.5), (7913.71, 2.0), (8344.60, 3.0), (8827.10, 3.5), (9001.4, 2.0))

DATA_UNITS = {True: ("10**(-20)*erg/s/cm**2/Angstrom", "10**(-40)*erg**2/(s**2*cm**4*Angstrom**2)"),
              False: ("count", "count**2")}

_GEN_CHUNK = 1 << 18  # rows per generator chunk: fixes the random streams; cache-sized
_ARCSEC = np.pi / 180.0 / 3600.0
_IFU_HEIGHT = 2.5  # arcsec
_STACK_LENGTH = 15.0  # arcsec
_GAP = 10  # detector columns between slices
_SKY_OF_CCD = np.concatenate([[0], ccd_to_sky_slice(np.arange(1, NSLICE + 1))])


@dataclass(frozen=True)
class SynthSource:
    """A round Gaussian source with a flat spectrum.

    Attributes
    ----------
    ra, dec : float
        Position, degrees.
    peak : float
        Peak value added to ``data`` (data units per pixel).
    fwhm : float
        FWHM, arcsec.
    """

    ra: float
    dec: float
    peak: float
    fwhm: float = 0.7


@dataclass
class SynthSpec:
    """What to generate.

    Attributes
    ----------
    nrows : int
        Rows of the table (exactly).
    n_ifu : int
        IFUs (1..24), numbered 1..n_ifu, stacked along Dec about the field centre.
    n_exp : int
        Exposures of a combined table (``COMBINED``, ``EXPn FIRST/LAST``), dithered by 0.6".
    convention : {'positioned', 'projected'}
        Coordinates of ``xpos``/``ypos`` (deg offsets from CRVAL, or native spherical, rad).
    ra, dec : float
        Field centre, degrees.
    slice_width, n_lambda : int or None
        Detector columns per slice and rows per column (chosen from nrows when None).
    wave_range : (float, float)
        Wavelength range, Angstrom.
    sky_level : float
        Sky continuum at 7000 A, data units.
    noise : bool
        Add noise (variance = signal + 4) to data.
    dq_fraction : float
        Approximate fraction of rows with dq > 0.
    fluxcal, skysub : bool
        Header flags (skysub also removes the nominal sky from data).
    sources : tuple of SynthSource
    factors : ndarray or None
        Throughput factors, shape (n_ifu, 48, len(factor_edges) - 1), applied to the sky.
    factor_edges : sequence of float or None
        Wavelength bin edges (Angstrom) of *factors*.
    seed : int
    """

    nrows: int
    n_ifu: int = 24
    n_exp: int = 1
    convention: str = "positioned"
    ra: float = 53.1625
    dec: float = -27.7914
    slice_width: int | None = None
    n_lambda: int | None = None
    wave_range: tuple = (4750.0, 9350.0)
    sky_level: float = 100.0
    noise: bool = True
    dq_fraction: float = 0.03
    fluxcal: bool = True
    skysub: bool = False
    sources: tuple = ()
    factors: np.ndarray | None = None
    factor_edges: tuple | None = None
    seed: int = 0


@dataclass
class Geometry:
    """Derived layout of a :class:`SynthSpec` (the truth tests compare against).

    Attributes
    ----------
    width, n_lambda : int
        Detector columns per slice, detector rows per column.
    dlambda : float
        Wavelength step along a column, Angstrom.
    xoffset : ndarray of int, shape (n_ifu + 1, 49)
        XOFFSET of each [ifu, slice] (row/column 0 unused).
    y0 : ndarray of int, shape (n_ifu + 1, 49)
        Detector row of the first wavelength pixel of each slice.
    ifus : ndarray of int
        IFU numbers present.
    """

    width: int
    n_lambda: int
    dlambda: float
    xoffset: np.ndarray
    y0: np.ndarray
    ifus: np.ndarray
    per_slice: int = 0
    per_ifu: int = 0
    per_exp: int = 0
    wave_shift: np.ndarray | None = None
    exp_ranges: list = field(default_factory=list)


def geometry(spec: SynthSpec) -> Geometry:
    """Slice width, wavelength sampling and detector offsets for *spec*."""
    if not 1 <= spec.n_ifu <= 24:
        raise ValueError("n_ifu must be 1..24")
    per_slice_needed = -(-spec.nrows // (spec.n_exp * spec.n_ifu * NSLICE))
    width = spec.slice_width or int(np.clip(round(np.sqrt(per_slice_needed / 53.0)), 4, 100))
    n_lambda = spec.n_lambda or max(1, -(-per_slice_needed // width))
    if width > 126:
        raise ValueError("slice_width must fit in the 7 origin bits (<= 126)")
    if n_lambda > 8000:
        raise ValueError("n_lambda must fit in the 13 origin bits (<= 8000)")
    ifu = np.arange(spec.n_ifu + 1)[:, None]
    sl = np.arange(NSLICE + 1)[None, :]
    xoffset = 30 + (sl - 1) * (width + _GAP) + (ifu % 3)
    y0 = 20 + (7 * sl + 3 * ifu) % 15
    wave_shift = 0.3 * np.sin(1.7 * sl + 0.9 * ifu)  # per-slice wavelength zero point, A
    per_slice = width * n_lambda
    geo = Geometry(width, n_lambda, (spec.wave_range[1] - spec.wave_range[0]) / n_lambda,
                   xoffset, y0, np.arange(1, spec.n_ifu + 1), per_slice,
                   NSLICE * per_slice, spec.n_ifu * NSLICE * per_slice,
                   wave_shift=wave_shift)
    for e in range(spec.n_exp):
        first, last = e * geo.per_exp, min((e + 1) * geo.per_exp, spec.nrows) - 1
        if first <= last:
            geo.exp_ranges.append((first, last))
    return geo


def _sky_exact(wave, level):
    cont = level * (1.0 + 0.25 * (wave - 7000.0) / 2300.0)
    lines = np.zeros_like(wave)
    for lam, amp in SKY_LINES:
        lines += amp * np.exp(-0.5 * ((wave - lam) / 1.2) ** 2)
    return cont + level * lines


_SKY_GRID = np.arange(3000.0, 11000.0, 0.02)
_SKY_UNIT = _sky_exact(_SKY_GRID, 1.0)


def _sky(wave, level):
    """Sky spectrum (continuum + lines, FWHM 2.8 A), data units; tabulated every 0.02 A."""
    pos = np.clip((wave - _SKY_GRID[0]) / 0.02, 0, _SKY_GRID.size - 2)
    i = pos.astype(np.int64)
    f = pos - i
    return level * (_SKY_UNIT[i] * (1 - f) + _SKY_UNIT[i + 1] * f)


def _tan_to_sky(xi, eta, ra0, dec0):
    """Inverse gnomonic projection: tangent-plane offsets (rad) -> RA, Dec (deg)."""
    d0 = np.deg2rad(dec0)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = ra0 + np.rad2deg(np.arctan2(xi, den))
    dec = np.rad2deg(np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den)))
    return ra, dec


def _sky_to_tan(ra, dec, ra0, dec0):
    """Gnomonic projection of RA, Dec (deg) about (ra0, dec0): tangent-plane offsets, rad."""
    a, d = np.deg2rad(ra - ra0), np.deg2rad(dec)
    d0 = np.deg2rad(dec0)
    den = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / den
    eta = (np.sin(d) * np.cos(d0) - np.cos(d) * np.sin(d0) * np.cos(a)) / den
    return xi, eta


def generate_rows(spec: SynthSpec, geo: Geometry, start: int, stop: int,
                  rng: np.random.Generator) -> dict:
    """Columns of rows ``[start, stop)`` as native arrays ``{name: array}``."""
    r = np.arange(start, stop, dtype=np.int64)
    exp, rem = np.divmod(r, geo.per_exp)
    ifu_i, rem = np.divmod(rem, geo.per_ifu)
    sl_i, rem = np.divmod(rem, geo.per_slice)
    xcol, y = np.divmod(rem, geo.n_lambda)
    ifu = ifu_i + 1
    sl = sl_i + 1
    n = r.size
    w = geo.width

    frac = (xcol + 0.5) / w - 0.5  # position along the slice, -0.5..0.5
    wave = (spec.wave_range[0] + (y + 0.5) * geo.dlambda + 2.4 * geo.dlambda * frac ** 2
            + geo.wave_shift[ifu, sl])

    sky_slice = _SKY_OF_CCD[sl]
    stack, row = np.divmod(sky_slice - 1, 12)
    xi = (stack - 1.5) * _STACK_LENGTH + frac * _STACK_LENGTH
    eta = ((ifu - (spec.n_ifu + 1) / 2.0) * _IFU_HEIGHT
           + (row - 5.5) * (_IFU_HEIGHT / 12.0))
    eta = eta + 0.3 * (wave - 7000.0) / 2300.0  # differential refraction, +-0.3"
    xi = xi + 0.6 * exp
    eta = eta - 0.4 * exp
    xi = xi + rng.normal(0.0, 0.01, n)
    eta = eta + rng.normal(0.0, 0.01, n)

    xi_r, eta_r = xi * _ARCSEC, eta * _ARCSEC
    if spec.convention == "positioned":
        ra, dec = _tan_to_sky(xi_r, eta_r, spec.ra, spec.dec)
        xpos = (ra - spec.ra).astype(np.float32)
        ypos = (dec - spec.dec).astype(np.float32)
    elif spec.convention == "projected":
        xpos = np.arctan2(xi_r, -eta_r).astype(np.float32)  # native longitude phi
        ypos = (-np.arctan(np.hypot(xi_r, eta_r))).astype(np.float32)  # theta - pi/2
    else:
        raise ValueError(f"unknown convention {spec.convention!r}")

    signal = _sky(wave, spec.sky_level)
    if spec.factors is not None:
        k = np.clip(np.searchsorted(spec.factor_edges, wave, side="right") - 1, 0,
                    spec.factors.shape[2] - 1)
        signal = signal * spec.factors[ifu - 1, sl - 1, k]
    for src in spec.sources:
        sxi, seta = _sky_to_tan(src.ra, src.dec, spec.ra, spec.dec)
        sxi, seta = sxi / _ARCSEC, seta / _ARCSEC
        sigma = src.fwhm / 2.3548
        near = np.flatnonzero((np.abs(xi - sxi) < 6 * sigma) & (np.abs(eta - seta) < 6 * sigma))
        d2 = (xi[near] - sxi) ** 2 + (eta[near] - seta) ** 2
        signal[near] += src.peak * np.exp(-0.5 * d2 / sigma ** 2)
    var = signal + 4.0
    data = signal + (np.sqrt(var) * rng.standard_normal(n) if spec.noise else 0.0)
    if spec.skysub:
        data = data - _sky(wave, spec.sky_level)

    # Bad detector columns (1 in 100, deterministic) and random bad pixels.
    bad_col = ((ifu * 7919 + sl * 104729 + xcol * 1299709) % 100) < spec.dq_fraction / 3 * 100
    bad_pix = rng.random(n) < spec.dq_fraction * 2 / 3
    dq = np.where(bad_col, 64, 0) | np.where(bad_pix, 2, 0)
    data = np.where(bad_pix, data + 50.0 * spec.sky_level, data)

    xpix = geo.xoffset[ifu, sl] + xcol
    ypix = geo.y0[ifu, sl] + y
    origin = encode(ifu, sl, ypix, xpix, geo.xoffset[ifu, sl])
    return {"xpos": xpos, "ypos": ypos, "lambda": wave.astype(np.float32),
            "data": data.astype(np.float32), "dq": dq.astype(np.int32),
            "stat": var.astype(np.float32), "origin": origin}


def _header(spec: SynthSpec, geo: Geometry) -> fits.Header:
    h = fits.Header()
    h["TELESCOP"] = ("ESO-VLT-U4", "ESO telescope designation")
    h["INSTRUME"] = ("MUSE", "instrument used")
    h["OBJECT"] = ("SYNTH-PIXTABLE", "synthetic pixel table (ifu-extract)")
    h["RA"] = (spec.ra, "[deg] field centre")
    h["DEC"] = (spec.dec, "[deg] field centre")
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRVAL1"] = (spec.ra, "[deg] reference RA")
    h["CRVAL2"] = (spec.dec, "[deg] reference Dec")
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -0.2 / 3600, 0.0, 0.0, 0.2 / 3600
    h["HIERARCH ESO OBS NAME"] = "synthetic"
    if spec.convention == "positioned":
        h[key("WCS")] = ("positioned (final)", "positioned")
    else:
        h[key("WCS")] = ("projected (intermediate)", "Gnomonic proj")
    ensure_limit_cards(h)
    if spec.n_ifu > 1:
        h[key("MERGED")] = (spec.n_ifu, "merged IFUs")
    h[key("FLUXCAL")] = (bool(spec.fluxcal), "flux-calibrated")
    if spec.skysub:
        h[key("SKYSUB")] = (True, "sky-subtracted")
    if spec.n_exp > 1:
        h[key("COMBINED")] = (len(geo.exp_ranges), "combined exposures")
        for i, (first, last) in enumerate(geo.exp_ranges, start=1):
            h[key(f"EXP{i} FIRST")] = (first, "first row of this exposure")
            h[key(f"EXP{i} LAST")] = (last, "last row of this exposure")
    for ifu in geo.ifus:
        for sl in range(1, NSLICE + 1):
            h[key(f"EXP0 IFU{ifu:02d} SLICE{sl:02d} XOFFSET")] = int(geo.xoffset[ifu, sl])
    return h


def write_pixtable(path, spec: SynthSpec, *, layout: str = "image", threads: int | None = None,
                   provenance: bool = True) -> Geometry:
    """Write the synthetic table of *spec* to *path* (atomically); returns its geometry.

    Parameters
    ----------
    path : str or os.PathLike
        Output FITS file.
    layout : {'image', 'table'}
        Multi-extension images or one binary table.
    threads : int, optional
        Generator threads (default: available cores).
    """
    geo = geometry(spec)
    header = _header(spec, geo)
    if provenance:
        add_provenance(header, "pixtable synth", params={"nrows": spec.nrows,
                                                           "convention": spec.convention,
                                                           "seed": spec.seed})
    data_unit, stat_unit = DATA_UNITS[bool(spec.fluxcal)]
    pos_unit = "deg" if spec.convention == "positioned" else "rad"
    units = {"xpos": pos_unit, "ypos": pos_unit, "lambda": "Angstrom", "data": data_unit,
             "stat": stat_unit}
    chunks = [(a, min(a + _GEN_CHUNK, spec.nrows)) for a in range(0, spec.nrows, _GEN_CHUNK)]
    threads = default_threads() if threads is None else threads
    with atomic_path(path, suffix=".fits") as tmp:
        writer = PixTableWriter(tmp, header, spec.nrows, layout=layout, units=units)
        try:
            def work(item):
                i, (a, b) = item
                rng = np.random.default_rng([spec.seed, i])
                return writer.write_block(a, generate_rows(spec, geo, a, b, rng))

            stats = ColumnStats()
            for st in ordered_map(work, list(enumerate(chunks)), threads):
                stats.merge(st)
            if spec.nrows:
                set_limits(header, stats, nifu_in=spec.n_ifu)
            writer.finish(header)
        except BaseException:
            writer.abort()
            raise
    return geo


def mask_image_hdulist(spec: SynthSpec, radius=1.5, *, shape=(330, 330),
                       pixscale: float = 0.2, rotation_deg: float = 0.0,
                       center_offset=(0.0, 0.0), primary_only: bool = False,
                       with_wcs: bool = True) -> fits.HDUList:
    """A source mask (1 inside *radius* arcsec of each source of *spec*, else 0) with a TAN WCS.

    Parameters
    ----------
    radius : float or sequence of float
        Mask radius in arcsec (one for all sources, or one per source).
    shape : (ny, nx)
        Image size, pixels.
    pixscale : float
        Pixel size, arcsec.
    rotation_deg : float
        Rotation of the pixel grid (tests of the fast sky-to-pixel transform).
    center_offset : (float, float)
        Offset of the image centre (CRVAL) from the field centre, arcsec (RA, Dec).
    primary_only : bool
        Put the image in the primary HDU instead of a ``DATA`` extension.
    with_wcs : bool
        False gives an image without WCS (a bad input).
    """
    ny, nx = shape
    dra, ddec = center_offset
    ra0 = spec.ra + dra / 3600.0 / np.cos(np.deg2rad(spec.dec))
    dec0 = spec.dec + ddec / 3600.0
    th = np.deg2rad(rotation_deg)
    s = pixscale / 3600.0
    cd = np.array([[-s * np.cos(th), s * np.sin(th)], [s * np.sin(th), s * np.cos(th)]])
    hdr = fits.Header()
    if with_wcs:
        hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
        hdr["CRVAL1"], hdr["CRVAL2"] = ra0, dec0
        hdr["CRPIX1"], hdr["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
        hdr["CD1_1"], hdr["CD1_2"] = cd[0]
        hdr["CD2_1"], hdr["CD2_2"] = cd[1]
    yy, xx = np.mgrid[0:ny, 0:nx]
    mask = np.zeros(shape, dtype=np.int16)
    if spec.sources:
        inv = np.linalg.inv(cd)
        radii = np.broadcast_to(np.asarray(radius, dtype=float), (len(spec.sources),))
        for src, rad in zip(spec.sources, radii):
            xi, eta = _sky_to_tan(src.ra, src.dec, ra0, dec0)
            px, py = inv @ np.rad2deg([xi, eta])
            px += (nx - 1) / 2.0
            py += (ny - 1) / 2.0
            mask[(xx - px) ** 2 + (yy - py) ** 2 < (rad / pixscale) ** 2] = 1
    if primary_only:
        return fits.HDUList([fits.PrimaryHDU(mask, header=hdr)])
    return fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mask, header=hdr, name="DATA")])

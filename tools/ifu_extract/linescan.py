"""Line emitters: a 3-D matched filter through the cube, calibrated on the data (LSDCat's idea).

Objects with emission lines and no continuum are invisible in white light.  :func:`scan_lines`
finds their lines, one row per line, and groups the lines of one object:

1. **Continuum.**  A running median along wavelength (``contsub.fit_continuum(method="median")``,
   ``continuum_width`` Angstrom) of the spectra binned by ``continuum_bin`` Angstrom, sky
   windows left out, interpolated back to every channel and subtracted.  A median is not dragged
   by a strong neighbouring line or an absorption band as mean side bands are.  On a cube that is
   already continuum-subtracted (``ifu-extract contsub``) ``continuum_width = 0`` skips it.
   The median residual of the continuum-faint half of the spaxels is then subtracted from every
   channel (``sky_residual``): the sky-subtraction residual a channel shares over the field,
   which STAT does not know and which a spatial filter adds up coherently.
2. **3-D matched filter.**  The template of a point-like line is the PSF at the chunk's
   wavelength (:func:`scan_psf`) times a Gaussian line profile of ``line_fwhm`` Angstrom, both of
   unit sum.  With the inverse variance ``w = 1/STAT`` of every voxel, the maximum-likelihood line
   amplitude at each voxel and its S/N are ``A = (K ⋆ r w) / (K² ⋆ w)`` and
   ``S/N = (K ⋆ r w) / sqrt(K² ⋆ w)`` (separable: a 1-D correlation along wavelength, then an FFT
   convolution per channel, float32, chunked over wavelength).  ``A × Δλ`` is the line flux.
   The spatial filter is compensated (``background_box``): the PSF minus its mean over a square
   of 5″, so that residuals correlated over the field (continuum and sky residuals, the
   resampling) add nothing where they are flat on that scale.
3. **Calibration on the data.**  STAT misses the correlated noise of resampled cubes, so the S/N
   of step 2 is over-dispersed (robust spread 1.3-1.5 on real MUSE data).  It is divided by its
   robust spread (1.4826 × MAD) over the field in every channel, smoothed by a running median of
   ``calib_window`` channels, then by the robust spread along wavelength of every spaxel in
   blocks of ``spread_block`` Angstrom (never below 1: continuum residuals of bright galaxies,
   sky residuals of one part of the field in the red), so that the calibrated S/N of noise has
   unit spread.  The S/N map itself is thresholded (no background is subtracted from it).
4. **Detection.**  Voxels whose calibrated S/N reaches ``snr`` form 3-D connected groups; the
   local maxima of each group are candidates.  ``POINT`` is the fraction of its S/N that a point
   source still has when fitted jointly with a component shaped as the local continuum image (on
   the line's narrow band): features of continuum objects that follow their light (stellar
   absorption, continuum residuals; the negated cube turns absorption into emission) keep
   little of it.  With ``continuum_test`` (off by default) the S/N is multiplied by it.
   Candidates closer than ``merge_radius`` (arcsec) in position *and* ``line_merge`` (Angstrom)
   in wavelength are one line, at its highest S/N (sub-pixel and sub-channel positions from
   parabolas).  Lines closer than ``merge_radius`` are one object.
5. **Purity.**  The same detection on the negated S/N cube (every line found there is false) is
   exactly the scan of the cube with DATA negated (the median, the filter and the spreads are all
   odd or even in the data): it counts the false lines at the threshold (``NFALSE``) and gives
   every line a purity estimate, ``1 - N_false(≥ S/N) / N(≥ S/N)``.  With ``max_false`` (the
   default, 5) the threshold is raised above ``snr`` until the negated cube holds at most that
   many lines, so that a large cube does not get more false lines than a small one.

Lines are flagged ``edge`` (within a PSF FWHM of the field's edge), ``continuum`` (on a spaxel
whose continuum is above the noise per channel), ``sky`` (within ``line_fwhm`` of a fainter sky
line of :mod:`ifu_extract.skylines`), ``telluric`` (in a telluric absorption band), and, after
:func:`ifu_extract.emitters.merge_emitters`, ``catalog`` (the object is in the catalogue).
Channels of the bright sky lines (:data:`DEFAULT_SKY_WINDOWS`) carry no weight and hold no line.

What becomes of the objects found (merged into a catalogue, their narrow-band images, their
``MUSE_NB`` spectra) is in :mod:`ifu_extract.emitters`; the ``--line-scan`` step of ``detect``
and ``run`` (files in, files out) is :func:`ifu_extract.steps.linescan.run_line_scan`.

Images are ``(ny, nx)`` with x the fast axis, cubes ``(n_wave, ny, nx)``; pixel positions are
0-based.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from .box import Box
from .cubeio import Cube
from .errors import InputError, ParameterError
from .psf import FILTER_FWHM, PSFModel, gaussian_image, moffat_image
from .skylines import SKY_LINES, telluric_bands
from .wcsutil import pixel_to_world

__all__ = [
    "DEFAULT_SKY_WINDOWS",
    "ScanConfig",
    "LineScan",
    "scan_lines",
    "scan_psf",
    "calibration_cards",
    "sky_channels",
    "ArrayCube",
    "EMITTER_COLUMNS",
    "LINE_COLUMNS",
    "empty_line_table",
]


def _sky_windows(half: float = 4.0) -> tuple:
    """Windows of +-*half* Angstrom around the strong sky lines and the Na D pair
    (:data:`ifu_extract.skylines.SKY_LINES`, air), overlapping windows merged."""
    centres = sorted(s.wave for s in SKY_LINES if s.strong or s.species == "NaI")
    out = []
    for c in centres:
        lo, hi = round(c - half, 1), round(c + half, 1)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


#: Wavelength windows (air, Angstrom) whose channels the scan gives no weight: +-4 Angstrom
#: around the bright night-sky lines of :mod:`ifu_extract.skylines` (the Na D pair in one).
DEFAULT_SKY_WINDOWS = _sky_windows()
#: Columns of the object table (one row per object).
EMITTER_COLUMNS = ("ID", "RA", "DEC", "X", "Y", "LBDA", "SNR", "LINE_FLUX", "NLINES", "LINES",
                   "FLAGS")
#: Columns of the line table (one row per line).
LINE_COLUMNS = ("LINE_ID", "ID", "RA", "DEC", "X", "Y", "LINE_WAVE", "LINE_FLUX", "LINE_FLUX_ERR",
                "SNR", "PURITY", "EXTENT", "NCHAN", "POINT", "FLAGS")
_LINE_DTYPES = (str, str, float, float, float, float, float, float, float, float, float, float, int,
                float, str)
_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def empty_line_table() -> Table:
    """The line table of a scan that was not run: :data:`LINE_COLUMNS`, no row,
    ``LINESCAN = False`` in its meta (a scan's own table has ``LINESCAN = True``)."""
    t = Table(names=LINE_COLUMNS, dtype=_LINE_DTYPES)
    t.meta.update({"LINESCAN": False, "NLINES": 0})
    return t


@dataclass
class ScanConfig:
    """Options of :func:`scan_lines`.

    Attributes
    ----------
    snr : float
        Detection threshold on the calibrated matched-filter S/N; with *max_false*, the lowest
        one (5: on the real MUSE minicube the compensated filter's negated pass holds 7 lines at
        5, 27 at 4.5).
    max_false : int or None
        Raise the threshold above *snr* until at most this many lines are found in the negated
        cube (the expected false lines; None: the threshold is *snr*).  A fixed S/N threshold
        gives false lines in proportion to the cube's volume; this keeps their number.
    line_fwhm : float
        FWHM of the Gaussian line profile of the filter, Angstrom.
    background_box : float
        The spatial filter is compensated: the PSF minus its mean over a square of this width
        (arcsec; 0: the PSF alone), so that a background flat on that scale adds nothing (on
        real MUSE data the residuals after the continuum and the sky residual are correlated
        over the field; at equal false lines the compensated filter recovers more lines).
    fwhm : float or None
        PSF FWHM, arcsec, when no PSF model is given (default 0.7).
    continuum_width : float
        Running-median window of the continuum, Angstrom (0: no continuum subtraction, for a
        continuum-subtracted cube).
    continuum_bin : float
        The spectra are averaged in bins of this width (Angstrom) before the running median.
    calib_window : int
        Channels of the running median of the per-channel spreads (calibration).
    continuum_test : bool
        Discount what a candidate shares with the continuum image around it (see
        :func:`scan_lines`, step 4): features of bright continuum objects that follow their light
        (stellar absorption, continuum residuals) are not lines.  Off by default: with the
        compensated filter (*background_box*) it costs more lines than false lines at equal
        false counts; ``POINT`` is measured either way.
    spaxel_spread : bool
        Also divide the S/N by each spaxel's robust spread along wavelength (never below 1).
    sky_spaxels : bool
        Measure each channel's spread on the half of the spaxels that is faintest in continuum
        (the noise rather than the lines and absorption features of the objects).
    sky_residual : bool
        Subtract from every channel the median residual (after the continuum) of that half of
        the spaxels: the sky-subtraction residual that a channel shares over the field.
    spread_block : float
        The spaxel spread of *spaxel_spread* is measured in blocks of this many Angstrom (0: one
        block, the whole range): sky residuals of one part of the field are often worse in the
        red, where the sky lines are.
    merge_radius : float
        Candidates (with *line_merge*) and lines closer than this (arcsec) are one line, one
        object.
    line_merge : float or None
        Candidates closer than this in wavelength (Angstrom) are one line (default 2 *line_fwhm*).
    sky_windows : sequence of (float, float)
        Wavelength windows (Angstrom) given no weight and holding no line.
    wave_range : (float, float) or None
        Scan only this range, Angstrom.
    window, side_width, gap : float
        Narrow band (Angstrom) of the emitters' weight images (:func:`emitter_image`): its width,
        the width of its continuum side bands and their gap (default ``window / 2``).
    """

    snr: float = 5.0
    max_false: int | None = 5
    line_fwhm: float = 4.0
    background_box: float = 5.0
    fwhm: float | None = None
    continuum_width: float = 150.0
    continuum_bin: float = 10.0
    calib_window: int = 9
    continuum_test: bool = False
    spaxel_spread: bool = True
    sky_spaxels: bool = True
    sky_residual: bool = True
    spread_block: float = 1000.0
    merge_radius: float = 0.6
    line_merge: float | None = None
    sky_windows: tuple = DEFAULT_SKY_WINDOWS
    wave_range: tuple | None = None
    window: float = 5.0
    side_width: float = 20.0
    gap: float | None = None
    step: float | None = None


@dataclass
class LineScan:
    """What :func:`scan_lines` found.

    Attributes
    ----------
    catalog : astropy.table.Table
        One row per object (:data:`EMITTER_COLUMNS`): ``ID`` (``L1``, ``L2``... by wavelength of
        the strongest line), ``RA``/``DEC`` (deg), ``X``/``Y`` (0-based cube pixels), ``LBDA``
        (Angstrom, its strongest line), ``SNR`` (that line's calibrated S/N), ``LINE_FLUX`` (its
        flux, cube unit x Angstrom), ``NLINES``, ``LINES`` (comma-separated wavelengths),
        ``FLAGS`` (union of its lines').
    lines : astropy.table.Table
        One row per line (:data:`LINE_COLUMNS`): ``LINE_ID`` (``L3_1``...), ``ID`` (its object),
        ``RA``, ``DEC``, ``X``, ``Y``, ``LINE_WAVE`` (Angstrom), ``LINE_FLUX`` and
        ``LINE_FLUX_ERR`` (cube unit x Angstrom, error calibrated), ``SNR`` (calibrated),
        ``PURITY`` (estimate from the negated cube), ``EXTENT`` (arcsec: diameter of the area
        where the S/N is above half its peak; about 1.4 PSF FWHM for a point source), ``NCHAN``
        (channels above half the peak S/N), ``POINT`` (the fraction of its S/N left once a
        component shaped as the local continuum image is fitted with it: 1 for a line on the sky),
        ``FLAGS``.  ``meta`` holds the calibration
        (``SNRTHR``, ``NFALSE``, ``PURITY``, ``SNRSPRD``...).
    false_lines : astropy.table.Table
        The lines of the negated cube (all false), same columns.
    spread : numpy.ndarray
        ``(n_wave,)`` robust spread of the raw S/N per channel (NaN where not scanned).
    spaxel_spread : numpy.ndarray
        ``(n_block, ny, nx)`` robust spread along wavelength of the band-calibrated S/N (>= 1),
        in the wavelength blocks of ``config.spread_block``.
    scanned : numpy.ndarray
        ``(n_wave,)`` bool: channels that can hold a line.
    config : ScanConfig
    """

    catalog: Table
    lines: Table
    false_lines: Table
    spread: np.ndarray
    spaxel_spread: np.ndarray
    scanned: np.ndarray
    config: ScanConfig = field(default_factory=ScanConfig)

    @property
    def threshold(self) -> float:
        """The calibrated S/N threshold used (``config.snr``, or above it with ``max_false``)."""
        return float(self.lines.meta.get("SNRTHR", self.config.snr))

    @property
    def n_false(self) -> int:
        """False lines at the threshold: lines of the negated cube."""
        return len(self.false_lines)


def _check(cfg: ScanConfig, cube: Cube) -> None:
    """Refuse options the scan cannot run with (errors name the :class:`ScanConfig` fields)."""
    dw = float(np.median(np.abs(cube.dwave)))

    def bad(param, problem, fix):
        return ParameterError(None, "{%s}: %s" % (param, problem), fix, params=(param,))

    if not cfg.snr > 0:
        raise bad("snr", f"{cfg.snr} is not a positive threshold", "give S/N > 0")
    if not cfg.line_fwhm > 0:
        raise bad("line_fwhm", f"{cfg.line_fwhm} is not a positive width", "give Angstrom > 0")
    if not cfg.window > 0:
        raise bad("window", f"{cfg.window} is not a positive width", "give Angstrom > 0")
    if cfg.window < dw:
        raise bad("window", f"{cfg.window:g} Angstrom is narrower than one channel ({dw:.3g})",
                  f"give at least {dw:.3g}")
    for name in ("merge_radius", "side_width", "continuum_width", "background_box"):
        if getattr(cfg, name) < 0:
            raise bad(name, "must not be negative", "check the scan options")
    if cfg.continuum_width > 0 and cfg.continuum_width < 3 * max(cfg.continuum_bin, dw):
        raise bad("continuum_width", f"{cfg.continuum_width:g} Angstrom is less than 3 bins of "
                  f"{max(cfg.continuum_bin, dw):g}", "give a wider window (150 is typical)")
    for lo, hi in cfg.sky_windows:
        if not lo < hi:
            raise bad("sky_windows", f"window {lo:g} {hi:g} is empty", "give MIN MAX with MIN < MAX")


def scan_psf(cube: Cube, fwhm: float | None = None, beta: float | None = None,
             table: Table | None = None, fallback_fwhm: float | None = None) -> PSFModel | None:
    """The PSF the scan filters with: the package's one policy, :func:`ifu_extract.psf.resolve_psf`
    (given *fwhm*, else the cube's FSF keywords, else fitted on the stars among *table*'s objects
    or the white light's detections, else the *fallback_fwhm* Moffat, else None: a Gaussian of
    ``ScanConfig`` FWHM)."""
    from .psf import catalog_candidates, resolve_psf

    return resolve_psf(cube, fwhm=fwhm, beta=beta, candidates=catalog_candidates(cube, table),
                       fallback_fwhm=fallback_fwhm)


def sky_channels(wave, windows) -> np.ndarray:
    """``(n_wave,)`` bool: channels of *wave* (Angstrom) inside one of *windows* ``(min, max)``."""
    sky = np.zeros(wave.size, dtype=bool)
    for lo, hi in windows:
        sky |= (wave >= lo) & (wave <= hi)
    return sky


def _spatial_kernel(psf: PSFModel | None, lam: float, pixscale: float, default_fwhm: float) -> np.ndarray:
    """PSF image of unit sum at *lam*, on an odd square grid of about +-2 FWHM."""
    fw = float(psf.fwhm(lam)) if psf is not None else default_fwhm
    fpix = max(fw / pixscale, 1.0)
    h = int(np.ceil(2.0 * fpix)) + 1
    n = 2 * h + 1
    if psf is not None and psf.kind == "moffat":
        k = moffat_image((n, n), h, h, fpix, float(psf.beta(lam)))
    else:
        k = gaussian_image((n, n), h, h, fpix)
    return (k / k.sum()).astype(np.float32)


def _compensated(kern: np.ndarray, width_pix: float) -> np.ndarray:
    """*kern* minus its mean over a square of about *width_pix* pixels (never smaller than
    *kern*'s grid): a zero-sum filter, blind to a background flat on that scale.  Scaled so that
    the amplitude still estimates a source of shape *kern* (``sum(k * kern) = sum(k * k)``);
    *kern* itself when *width_pix* <= 0."""
    if not width_pix > 0:
        return kern
    h = kern.shape[0] // 2
    hb = max(h, int(round(0.5 * width_pix)))
    kp = np.zeros((2 * hb + 1, 2 * hb + 1))
    kp[hb - h:hb + h + 1, hb - h:hb + h + 1] = kern
    k = kp - kp.sum() / kp.size
    k *= (k * kp).sum() / (k * k).sum()
    return k.astype(np.float32)


def _line_kernel(line_fwhm: float, dw: float) -> np.ndarray:
    s = max(line_fwhm / _FWHM / dw, 0.4)
    h = int(np.ceil(3.0 * s))
    g = np.exp(-0.5 * (np.arange(-h, h + 1) / s) ** 2)
    return (g / g.sum()).astype(np.float32)


def _continuum_bins(src: Cube, cfg: ScanConfig, sky: np.ndarray, z0: int, z1: int):
    """Running median (contsub's) of the spectra averaged in bins, sky channels left out.

    Returns ``(bins, centre)``: the continuum ``(n_bins, ny, nx)`` float32 at bin centres
    ``(n_bins,)`` (fractional channel indexes); None when no continuum is subtracted.
    """
    from .contsub import fit_continuum

    if cfg.continuum_width <= 0:
        return None
    dw = float(np.median(np.abs(src.dwave)))
    nb = max(1, int(round(cfg.continuum_bin / dw)))
    edges = np.arange(z0, z1 + nb, nb)
    edges[-1] = min(edges[-1], z1)
    edges = np.unique(np.clip(edges, z0, z1))
    nbin = len(edges) - 1
    means = np.full((nbin, src.ny, src.nx), np.nan, dtype=np.float32)
    per_read = max(nb, (int(64e6 // (8 * src.ny * src.nx)) // nb) * nb)
    for a in range(0, nbin, max(1, per_read // nb)):
        b = min(nbin, a + max(1, per_read // nb))
        data, _ = src.window(0, src.nx, 0, src.ny, int(edges[a]), int(edges[b]), with_var=False)
        ok = np.isfinite(data) & ~sky[int(edges[a]):int(edges[b]), None, None]
        d = np.where(ok, data, 0.0)
        idx = edges[a:b + 1] - edges[a]
        s = np.add.reduceat(d, idx[:-1], axis=0, dtype=np.float64)
        n = np.add.reduceat(ok, idx[:-1], axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[a:b] = np.where(n > 0, s / n, np.nan)
    centre = 0.5 * (edges[:-1] + edges[1:] - 1)
    if nbin < 3:
        return np.nanmedian(means, axis=0, keepdims=True), centre[:1]
    bwave = np.interp(centre, np.arange(src.nwave), src.wave)
    width = max(cfg.continuum_width, 3.0 * float(np.median(np.diff(bwave))))
    cont = fit_continuum(means, None, bwave, method="median", median_width=width).continuum
    return np.asarray(cont, dtype=np.float32), centre


def _continuum_at(bins, centre, z0: int, z1: int) -> np.ndarray:
    """Continuum of channels z0..z1-1, linear between bin centres (constant beyond)."""
    z = np.arange(z0, z1, dtype=float)
    if len(centre) == 1:
        return np.broadcast_to(bins[0], (z1 - z0,) + bins.shape[1:])
    pos = np.interp(z, centre, np.arange(len(centre), dtype=float))
    i0 = np.clip(np.floor(pos).astype(int), 0, len(centre) - 2)
    f = (pos - i0).astype(np.float32)[:, None, None]
    return bins[i0] * (1 - f) + bins[i0 + 1] * f


def _filter_chunk(data, var, cont, weight_ok, g, kern, sky_sample=None):
    """Matched-filter numerator and denominator of a block ``(n, ny, nx)``, for the line
    profile *g* and the spatial filter *kern* (compensated or not).

    With *sky_sample* (flat spaxel indexes), the median residual of those spaxels is subtracted
    from each channel (a sky residual shared by the field; odd in the data, so the negated pass
    stays the scan of the negated cube).
    """
    good = np.isfinite(data) & weight_ok[:, None, None]
    if var is not None:
        good &= np.isfinite(var) & (var > 0)
    if cont is not None:
        good &= np.isfinite(cont)
        resid = data - cont
    else:
        resid = data
    if sky_sample is not None:
        n = resid.shape[0]
        flat = np.where(good, resid, np.nan).reshape(n, -1)[:, sky_sample]
        off = _row_median(flat)
        off = np.where(np.isfinite(flat).sum(axis=1) >= 50, off, 0.0).astype(np.float32)
        resid = resid - off[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(good, 1.0 / (var if var is not None else 1.0), 0.0).astype(np.float32)
    a = np.where(good, resid * w, 0.0).astype(np.float32)
    a = ndimage.correlate1d(a, g, axis=0, mode="constant")
    w = ndimage.correlate1d(w, g * g, axis=0, mode="constant")
    num = fftconvolve(a, kern[None], mode="same", axes=(1, 2)).astype(np.float32)
    den = fftconvolve(w, (kern * kern)[None], mode="same", axes=(1, 2)).astype(np.float32)
    return num, den, np.where(good, resid, np.nan).astype(np.float32)


def _row_median(a) -> np.ndarray:
    """Median of the finite values of each row of a 2-D array (NaN for none); one sort."""
    srt = np.sort(a, axis=1)                    # NaN last
    cnt = np.isfinite(a).sum(axis=1)
    rows = np.arange(a.shape[0])
    lo = srt[rows, np.maximum((cnt - 1) // 2, 0)]
    hi = srt[rows, np.maximum(cnt // 2, 0)]
    return np.where(cnt > 0, 0.5 * (lo.astype(np.float64) + hi), np.nan)


def _continuum_ratio(cont, kern, resid, var, g, z, y, x) -> float:
    """How much of a candidate survives a continuum-shaped component: the S/N of the point-source
    amplitude fitted jointly with the local continuum image, over its S/N alone (1: nothing of
    the line looks like the continuum; near 0: an absorption or emission feature of a continuum
    object, spread as its light is).  The line's narrow band (the filter's profile) is fitted on
    a stamp of the kernel's size, inverse-variance weighted."""
    if cont is None:
        return 1.0
    h = kern.shape[0] // 2
    hg = len(g) // 2
    nz, ny, nx = resid.shape
    za, zb = max(z - hg, 0), min(z + hg + 1, nz)
    ya, yb, xa, xb = max(y - h, 0), min(y + h + 1, ny), max(x - h, 0), min(x + h + 1, nx)
    gw = g[za - z + hg:zb - z + hg][:, None, None]
    r = resid[za:zb, ya:yb, xa:xb]
    ok = np.isfinite(r)
    nb = np.where(ok, r, 0.0) * gw
    wsum = (ok * gw).sum(axis=0)
    if var is not None:
        vv = np.where(ok & np.isfinite(var[za:zb, ya:yb, xa:xb]), var[za:zb, ya:yb, xa:xb], 0.0)
        vnb = (vv * gw * gw).sum(axis=0)
    else:
        vnb = (ok * gw * gw).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        img = nb.sum(axis=0) / wsum
        w = np.where((wsum > 0) & (vnb > 0), wsum ** 2 / vnb, 0.0)
    c = np.nan_to_num(cont[z, ya:yb, xa:xb])
    p = kern[ya - y + h:yb - y + h, xa - x + h:xb - x + h].astype(np.float64)
    img = np.where(w > 0, img, 0.0)
    spp, spc, scc = (w * p * p).sum(), (w * p * c).sum(), (w * c * c).sum()
    bp, bc = (w * p * img).sum(), (w * c * img).sum()
    if not spp > 0:
        return 1.0
    alone = bp / np.sqrt(spp)
    det = spp * scc - spc * spc
    if not det > 1e-12 * spp * max(scc, 1e-300) or alone == 0:
        return 1.0
    alpha = (scc * bp - spc * bc) / det
    joint = alpha / np.sqrt(scc / det)
    return float(np.clip(joint / alone, 0.0, 1.0))


def _candidates(snr, num, den, z_core, thresh, sign, cont=None, kern=None, resid=None, var=None, g=None,
                footprint=(3, 5, 5)):
    """Peaks of the 3-D groups of voxels where ``sign * snr >= thresh`` with their peak in the
    core channels *z_core* (slice); tuples (z, y, x, s, dz, dy, dx, amp, inv_sd, extent, nchan,
    continuum)."""
    s = sign * snr
    above = s >= thresh
    if not above.any():
        return []
    lab, n = ndimage.label(above)
    # Local maxima of each group (two neighbours at one wavelength touch through their wings);
    # the sub-peaks of one line are merged later, in position and wavelength.
    pos = []
    for k, box in enumerate(ndimage.find_objects(lab), start=1):
        sub = np.where(lab[box] == k, s[box], -np.inf)
        peaks = (sub == ndimage.maximum_filter(sub, size=footprint, mode="constant", cval=-np.inf))
        peaks &= np.isfinite(sub)
        for i in zip(*np.nonzero(peaks)):
            pos.append(tuple(int(i[d] + box[d].start) for d in range(3)))
    out = []
    nz, ny, nx = s.shape
    for z, y, x in pos:
        if not (z_core.start <= z < z_core.stop):
            continue
        peak = float(s[z, y, x])

        def vertex(a, b, c):
            d = a - 2 * b + c
            return float(np.clip(0.5 * (a - c) / d, -0.5, 0.5)) if d < 0 and np.isfinite(d) else 0.0

        dz = vertex(s[z - 1, y, x], peak, s[z + 1, y, x]) if 0 < z < nz - 1 else 0.0
        dy = vertex(s[z, y - 1, x], peak, s[z, y + 1, x]) if 0 < y < ny - 1 else 0.0
        dx = vertex(s[z, y, x - 1], peak, s[z, y, x + 1]) if 0 < x < nx - 1 else 0.0
        plane = s[z]
        lab2, _ = ndimage.label(plane >= 0.5 * peak)
        area = int((lab2 == lab2[y, x]).sum())
        spec = s[:, y, x] >= 0.5 * peak
        lo, hi = z, z
        while lo > 0 and spec[lo - 1]:
            lo -= 1
        while hi < nz - 1 and spec[hi + 1]:
            hi += 1
        d = float(den[z, y, x])
        out.append((z, y, x, peak, dz, dy, dx, float(num[z, y, x]) / d, 1.0 / np.sqrt(d), area,
                    hi - lo + 1, _continuum_ratio(cont, kern, resid, var, g, z, y, x)))
    return out


def scan_lines(cube: Cube, *, contsub: Cube | None = None, psf: PSFModel | None = None,
               config: ScanConfig | None = None, progress=None, chunk: int = 128) -> LineScan:
    """Find emission lines with a calibrated 3-D matched filter; group them into objects.

    Parameters
    ----------
    cube : Cube
        The cube (its WCS and wavelengths; its pixels unless *contsub* is given).
    contsub : Cube, optional
        Continuum-subtracted version of *cube* (``ifu-extract contsub``), scanned instead (set
        ``continuum_width = 0`` to skip the scan's own continuum).
    psf : PSFModel, optional
        Spatial filter at each wavelength (default: a Gaussian of ``config.fwhm``, else 0.7″).
    config : ScanConfig, optional
    progress : callable, optional
        Called with the number of channels done.
    chunk : int
        Channels filtered at once (a multiple of ``config.calib_block``; memory is about
        ``10 × 4 × chunk × ny × nx`` bytes).  The result does not depend on it.

    Returns
    -------
    LineScan
    """
    cfg = config or ScanConfig()
    _check(cfg, cube)
    src = contsub if contsub is not None else cube
    if src.shape[1:] != cube.shape[1:]:
        raise InputError(src.path, f"has spatial shape {src.shape[1:]}, the cube {cube.shape[1:]}",
                         "give the contsub output of this cube")
    wave = np.asarray(src.wave, dtype=float)
    dw = float(np.median(np.abs(src.dwave)))
    ny, nx = src.ny, src.nx
    z0, z1 = 0, src.nwave
    if cfg.wave_range is not None:
        z0, z1 = src.channel_range(*cfg.wave_range)
    if z1 - z0 < 8:
        raise ParameterError(None, "{wave_range}: fewer than 8 channels to scan", "widen the range",
                             params=("wave_range",))
    sky = sky_channels(wave, cfg.sky_windows)
    g = _line_kernel(cfg.line_fwhm, dw)
    hg = len(g) // 2
    fwhm_default = cfg.fwhm if cfg.fwhm is not None else FILTER_FWHM
    hw = max(1, int(cfg.calib_window) // 2)
    rpk = max(1, int(np.ceil(0.5 * cfg.merge_radius / cube.pixscale)))
    footprint = (2 * hg + 1, 2 * rpk + 1, 2 * rpk + 1)
    margin = hw + 2 * hg + 2
    chunk = max(16, int(chunk))
    cont = _continuum_bins(src, cfg, sky, z0, z1)
    spread = np.full(src.nwave, np.nan)
    # Wavelength blocks of the spaxel spread (a short last block joins the one before).
    block = np.zeros(src.nwave, dtype=int)
    if cfg.spread_block > 0:
        span = abs(float(wave[z1 - 1] - wave[z0]))
        nblock = max(1, int(np.floor(span / cfg.spread_block + 0.5)))
        block[z0:z1] = np.minimum((np.abs(wave[z0:z1] - wave[z0]) / cfg.spread_block).astype(int),
                                  nblock - 1)
    nblock = int(block.max()) + 1
    n_exceed = np.zeros((nblock, ny, nx), dtype=np.int64)
    n_valid = np.zeros((nblock, ny, nx), dtype=np.int64)
    cands = {1: [], -1: []}
    valid_any = np.zeros((ny, nx), dtype=bool)
    cont_snr = np.zeros((ny, nx), dtype=np.float64)
    ncont = 0
    # Spaxels of the per-channel statistics: the fainter half in continuum when
    # sky_spaxels (the noise, not the features of the objects that cover the rest), up to 5000.
    sample = np.arange(ny * nx)
    if cont is not None and cfg.sky_spaxels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level = np.nanmedian(np.abs(cont[0]), axis=0).ravel()
        ok = np.isfinite(level)
        if ok.sum() >= 100:
            sample = np.flatnonzero(ok & (level <= np.nanmedian(level[ok])))
    sample = sample[::max(1, sample.size // 5000)]
    for c0 in range(z0, z1, chunk):
        c1 = min(c0 + chunk, z1)
        r0, r1 = max(c0 - margin, z0), min(c1 + margin, z1)
        data, var = src.window(0, nx, 0, ny, r0, r1)
        cc = None if cont is None else _continuum_at(cont[0], cont[1], r0, r1)
        kern = _spatial_kernel(psf, float(np.mean(wave[c0:c1])), cube.pixscale, fwhm_default)
        # The compensated filter detects; the PSF itself shapes the continuum test's fit.
        kfilt = _compensated(kern, cfg.background_box / cube.pixscale)
        num, den, resid = _filter_chunk(data, var, cc, ~sky[r0:r1], g, kfilt,
                                        sample if cfg.sky_residual else None)
        valid_any |= np.isfinite(data).any(axis=0)
        if cc is not None and var is not None:
            mid = (c0 + c1) // 2 - r0
            with np.errstate(invalid="ignore", divide="ignore"):
                cs = cc[mid] / np.sqrt(var[mid])
            cont_snr += np.where(np.isfinite(cs), np.abs(cs), 0.0)
            ncont += 1
        del data
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = np.where(den > 0, num / np.sqrt(np.maximum(den, 1e-30)), np.nan).astype(np.float32)
        n = snr.shape[0]
        flat_den = den.reshape(n, -1)[:, sample]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # Coverage: spaxels with at least half the channel's typical weight (field edges and
            # sky channels carry less).
            dmed = _row_median(np.where(flat_den > 0, flat_den, np.nan))
            full = (den >= 0.5 * dmed[:, None, None]) & ~sky[r0:r1, None, None]
            snr[~full] = np.nan
            # Robust spread of each channel's S/N map, then a running median over calib_window
            # channels (a channel crowded with real lines does not set its own scale); the
            # margins make it independent of the chunking.
            flat = snr.reshape(n, -1)[:, sample]
            med = _row_median(flat)
            mad = 1.4826 * _row_median(np.abs(flat - med[:, None]))
            mad[np.isfinite(flat).sum(axis=1) < 50] = np.nan
            win = np.lib.stride_tricks.sliding_window_view(np.pad(mad, hw, constant_values=np.nan), 2 * hw + 1)
            sig = np.nanmedian(win, axis=1)
        spread[r0:r1][c0 - r0:c1 - r0] = sig[c0 - r0:c1 - r0]
        fill = np.nanmedian(sig) if np.isfinite(sig).any() else 1.0
        sig_r = np.where(np.isfinite(sig) & (sig > 0), sig, fill).astype(np.float32)
        snr /= sig_r[:, None, None]
        sl = slice(c0 - r0, c1 - r0)
        core = np.abs(snr[sl])
        bk = block[c0:c1]
        for b in np.unique(bk):
            n_exceed[b] += (core[bk == b] > 1.0).sum(axis=0)
            n_valid[b] += np.isfinite(core[bk == b]).sum(axis=0)
        del core
        for sign in (1, -1):
            for c in _candidates(snr, num, den, sl, cfg.snr, sign, cc, kern, resid, var, g, footprint):
                z = c[0] + r0
                cands[sign].append((z, *c[1:], float(sig_r[c[0]])))
        del resid, var, cc, num, den, snr
        if progress:
            progress(c1 - c0)
    # Spread along wavelength of each spaxel in each block (never below 1), from the fraction of
    # |S/N| > 1 (0.3173 for unit Gaussian noise): a quantile estimate, as robust as the MAD.
    from scipy.special import ndtri

    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_valid > 100, n_exceed / np.maximum(n_valid, 1), 0.3173)
        spax = np.where(frac > 0.3173, 1.0 / ndtri(1.0 - np.clip(frac, 0, 0.99) / 2.0), 1.0)
    scanned = np.zeros(src.nwave, dtype=bool)
    scanned[z0:z1] = ~sky[z0:z1] & np.isfinite(spread[z0:z1])
    fw_pix = (float(np.median(psf.fwhm(wave[z0:z1]))) if psf is not None else fwhm_default) / cube.pixscale
    edge = ndimage.distance_transform_edt(np.pad(valid_any, 1))[1:-1, 1:-1] <= fw_pix
    cmap = cont_snr / max(ncont, 1)
    ctx = dict(cube=cube, wave=wave, dw=dw, spax=spax, block=block, edge=edge, cont=cmap, cfg=cfg)
    lines = _lines(cands[1], ctx)
    false = _lines(cands[-1], ctx)
    thr = float(cfg.snr)
    if cfg.max_false is not None and len(false) > cfg.max_false:
        # Just above the (max_false + 1)-th false line (S/N are rounded to 0.001).
        thr = round(float(np.sort(np.asarray(false["SNR"], dtype=float))[::-1][cfg.max_false]) + 0.001, 3)
        lines = lines[np.asarray(lines["SNR"], dtype=float) >= thr]
        false = false[np.asarray(false["SNR"], dtype=float) >= thr]
    _purity(lines, false)
    catalog = _objects(lines, cube, cfg)
    med_spread = float(np.nanmedian(spread)) if np.isfinite(spread).any() else np.nan
    for t in (lines, false):
        t.meta.update({"LINESCAN": True, "SNRTHR": thr, "SNRMIN": float(cfg.snr),
                       "MAXFALSE": -1 if cfg.max_false is None else int(cfg.max_false),
                       "NFALSE": len(false), "NLINES": len(lines),
                       "PURITY": round(1.0 - len(false) / len(lines), 4) if len(lines) else np.nan,
                       "SNRSPRD": round(med_spread, 4),
                       "LINEFWHM": cfg.line_fwhm})
    return LineScan(catalog, lines, false, spread, spax.astype(np.float32), scanned, cfg)


def _lines(cands, ctx) -> Table:
    """Candidates -> lines: calibrated by the spaxel spread, thresholded, merged in (x, y, λ)."""
    cube, wave, dw, spax, cfg = ctx["cube"], ctx["wave"], ctx["dw"], ctx["spax"], ctx["cfg"]
    rows = []
    for z, y, x, s, dz, dy, dx, amp, isd, area, nchan, rho, sig in cands:
        sp = float(spax[ctx["block"][z], y, x]) if cfg.spaxel_spread else 1.0
        snr = s / sp
        # A feature shaped like the continuum image (stellar absorption, continuum residuals;
        # either sign) keeps only the S/N it has beyond that shape.
        if cfg.continuum_test:
            snr *= rho
            sp /= max(rho, 1e-6)       # the flux error grows as the S/N shrinks
        if snr < cfg.snr:
            continue
        zz = z + dz
        lam = float(np.interp(zz, np.arange(wave.size), wave))
        rows.append((x + dx, y + dy, lam, snr, abs(amp) * dw, isd * dw * sig * sp, area, nchan, y, x, rho))
    names = LINE_COLUMNS
    if not rows:
        return Table(names=names, dtype=_LINE_DTYPES)
    arr = np.array([r[:4] for r in rows])
    rpix = cfg.merge_radius / cube.pixscale
    lm = cfg.line_merge if cfg.line_merge is not None else 2.0 * cfg.line_fwhm
    groups = _fof(np.column_stack([arr[:, 0] / max(rpix, 1e-6), arr[:, 1] / max(rpix, 1e-6),
                                   arr[:, 2] / lm]), 1.0)
    out = []
    tel = telluric_bands(float(wave[0]), float(wave[-1]))
    faint_sky = [s.wave for s in SKY_LINES]
    for members in groups:
        best = members[np.argmax(arr[members, 3])]
        x, y, lam, snr, flux, err, area, nchan, yi, xi, rho = rows[best]
        flags = []
        if ctx["edge"][yi, xi]:
            flags.append("edge")
        if ctx["cont"][yi, xi] > 1.0:
            flags.append("continuum")
        if any(abs(lam - w) < cfg.line_fwhm for w in faint_sky):
            flags.append("sky")
        if any(lo <= lam <= hi for lo, hi, _ in tel):
            flags.append("telluric")
        ra, dec = pixel_to_world(cube.wcs, x, y)
        ext = 2.0 * np.sqrt(area / np.pi) * cube.pixscale
        out.append(["", "", float(ra), float(dec), float(x), float(y), round(lam, 2), flux, err,
                     round(snr, 3), 1.0, round(ext, 3), int(nchan), round(rho, 3), ",".join(flags)])
    t = Table(rows=out, names=names, dtype=_LINE_DTYPES)
    t.sort(["LINE_WAVE", "Y", "X"])
    return t


def _fof(points, radius) -> list:
    """Friends-of-friends groups (lists of row indexes) of *points* linked within *radius*."""
    n = len(points)
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if n > 1:
        for a, b in sorted(cKDTree(points).query_pairs(radius)):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(a) for a in range(n)])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def _purity(lines: Table, false: Table) -> None:
    """``PURITY`` of each line: 1 - (false lines at >= its S/N) / (lines at >= its S/N)."""
    if not len(lines):
        return
    fs = np.sort(np.asarray(false["SNR"], dtype=float))
    ls = np.sort(np.asarray(lines["SNR"], dtype=float))
    s = np.asarray(lines["SNR"], dtype=float)
    nf = fs.size - np.searchsorted(fs, s, side="left")
    nl = ls.size - np.searchsorted(ls, s, side="left")
    lines["PURITY"] = np.round(np.clip(1.0 - nf / np.maximum(nl, 1), 0.0, 1.0), 3)


def _objects(lines: Table, cube: Cube, cfg: ScanConfig) -> Table:
    """Group lines closer than ``merge_radius`` into objects; name lines and objects."""
    dtypes = (str, float, float, float, float, float, float, float, int, str, str)
    if not len(lines):
        return Table(names=EMITTER_COLUMNS, dtype=dtypes)
    rpix = max(cfg.merge_radius / cube.pixscale, 1e-6)
    groups = _fof(np.column_stack([np.asarray(lines["X"]), np.asarray(lines["Y"])]) / rpix, 1.0)
    snr = np.asarray(lines["SNR"], dtype=float)
    objs = []
    for members in groups:
        best = members[np.argmax(snr[members])]
        objs.append((float(lines["LINE_WAVE"][best]), float(lines["Y"][best]),
                     float(lines["X"][best]), members, best))
    objs.sort(key=lambda t: (t[0], t[1], t[2]))
    rows = []
    lines["ID"] = lines["ID"].astype("U16")
    lines["LINE_ID"] = lines["LINE_ID"].astype("U16")
    for k, (lam, _, _, members, best) in enumerate(objs, start=1):
        oid = f"L{k}"
        order = members[np.argsort(np.asarray(lines["LINE_WAVE"])[members])]
        for j, m in enumerate(order, start=1):
            lines["ID"][m] = oid
            lines["LINE_ID"][m] = f"{oid}_{j}"
        flags = sorted({f for m in members for f in str(lines["FLAGS"][m]).split(",") if f})
        rows.append((oid, float(lines["RA"][best]), float(lines["DEC"][best]), float(lines["X"][best]),
                     float(lines["Y"][best]), lam, float(snr[best]), float(lines["LINE_FLUX"][best]),
                     len(members), ",".join(f"{w:.1f}" for w in np.sort(np.asarray(lines["LINE_WAVE"])[members])),
                     ",".join(flags)))
    tab = Table(rows=rows, names=EMITTER_COLUMNS, dtype=dtypes)
    for col in ("RA", "DEC"):
        tab[col].format = ".7f"
        lines[col].format = ".7f"
    return tab


#: Header cards of the calibration (key, LineScan.lines.meta key, comment).
_CALIB_CARDS = (("LINESCAN", "LINESCAN", "line scan run (F: it was off; no line)"),
                ("SNRTHR", "SNRTHR", "calibrated S/N threshold of the line scan"),
                ("SNRMIN", "SNRMIN", "lowest threshold asked (--line-snr)"),
                ("MAXFALSE", "MAXFALSE", "threshold raised to <= this many false lines (-1: no)"),
                ("NLINES", "NLINES", "lines found at the threshold"),
                ("NFALSE", "NFALSE", "lines found in the negated cube (false) at the threshold"),
                ("PURITY", "PURITY", "1 - NFALSE / NLINES"),
                ("SNRSPRD", "SNRSPRD", "median robust spread of the uncalibrated S/N"),
                ("LINEFWHM", "LINEFWHM", "[Angstrom] FWHM of the filter's line profile"))


def calibration_cards(header, scan: LineScan) -> None:
    """Write the calibration of *scan* (threshold, false lines, purity...) into *header*."""
    for key, meta, comment in _CALIB_CARDS:
        value = scan.lines.meta.get(meta)
        if value is not None:
            header[key] = (value if np.isfinite(value) else "NaN") if isinstance(value, float) else value, comment


class ArrayCube:
    """A cube held in memory with the reading interface :func:`scan_lines` uses (injections,
    benchmarks): ``data`` and ``var`` ``(n_wave, ny, nx)``, the celestial WCS, the wavelengths.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, ny, nx)``; *var* may be None.
    like : Cube
        Gives ``wave``, ``wcs``, ``pixscale``, headers (its shape must match).
    """

    def __init__(self, data, var, like):
        self.data, self.var = data, var
        self.shape = tuple(data.shape)
        self.nwave, self.ny, self.nx = self.shape
        self.wave, self.wcs, self.pixscale = like.wave, like.wcs, like.pixscale
        self.dwave = like.dwave
        self.path = getattr(like, "path", "memory")
        self.unit_string = getattr(like, "unit_string", "")
        self.primary_header, self.data_header = like.primary_header, like.data_header
        self.has_var = var is not None

    def channel_range(self, wmin, wmax):
        z0 = 0 if wmin is None else int(np.searchsorted(self.wave, wmin, side="left"))
        z1 = self.nwave if wmax is None else int(np.searchsorted(self.wave, wmax, side="right"))
        return z0, z1

    def window(self, x0, x1, y0, y1, z0=0, z1=None, *, with_var=True):
        z1 = self.nwave if z1 is None else min(int(z1), self.nwave)
        z0 = max(int(z0), 0)
        out = []
        for arr in (self.data, self.var if with_var else None):
            if arr is None:
                out.append(None)
                continue
            out.append(Box(x0, x1, y0, y1).cut(arr[z0:z1], np.nan, dtype=np.float32))
        return out[0], out[1]

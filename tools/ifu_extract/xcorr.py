"""Cross-correlation maps and spectra (AutoSpec's method, made sound).

For one object, with a reference spectrum ``r(λ)`` (a spectrum already in its Source file:
``MUSE_WHITE``, an aperture tag, an ancillary-image tag...), the *cross-correlation map* is, in
every spaxel ``p`` of the object's stamp, the inverse-variance-weighted least-squares amplitude
of the reference in that spaxel's spectrum:

    A_p = Σ_λ r(λ) d_p(λ) / v_p(λ)  /  Σ_λ r(λ)² / v_p(λ),     Var(A_p) = 1 / Σ_λ r(λ)² / v_p(λ),

summed over the channels where the voxel is finite (NaN voxels drop out of both sums, so a
spaxel with missing channels is not biased low).  AutoSpec's plain ``Σ r·d`` is this up to a
per-spaxel normalisation that depends on the noise and on missing voxels; the amplitude is a
map of "how much of the reference is here", in units of the reference.

Two maps are made: ``IMA_XCOR`` from the cube and the reference as they are, and
``IMA_XCOR_CONTSUB`` from the continuum-subtracted cube and the continuum-subtracted reference
(continua from :func:`ifu_extract.contsub.fit_continuum`, or a cube written by ``contsub``).  The
second map follows the object's own spectral features (lines, breaks), so a neighbour with
another spectrum falls to zero (or below: negative values are clipped) — AutoSpec's deblending
trick.  It is not made when the continuum-subtracted reference is consistent with noise
(chi-square within :data:`FEATURE_SIGMA` sigma of its degrees of freedom): a featureless
spectrum has nothing to correlate.

Iteration.  The reference is re-extracted with the map as weights and the map recomputed, until
the map, normalised to unit sum over its extraction region, changes by less than ``tol`` in L1
norm (default 1e-3: 0.1 % of the weight moves) or ``max_iter`` rounds are done.  For the
``CONTSUB`` map the re-extracted reference is taken from the continuum-subtracted cube.

Extraction region: the spaxels where ``A_p`` exceeds ``snr_min`` times its error, connected
(8-neighbours) to the object mask, minus the neighbours' segments; the object mask when that is
empty.  Weights are the map clipped at 0 inside the region.

Spectra.  ``XCOR`` and ``XCOR_CONTSUB`` are extracted from the *original* cube with their map as
weights, with the image-calibrated linear estimator of :mod:`ifu_extract.estimators`
(``F = Σ(w d/v) / Σ(w A/v) · Σ_region A``): the flux inside the region, with the exact variance
of that linear combination (the map's own noise, correlated with each channel at the 1/N_channel
level, is neglected, as in every optimal extraction).  With a sky mask, ``XCOR_SKYSUB`` and
``XCOR_CONTSUB_SKYSUB`` are added as for the other tags.

Arrays are ``(n_wave, ny, nx)``; maps ``(ny, nx)`` with x the fast axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .contsub import fit_continuum
from .estimators import Spectrum1D, StampMatrices

__all__ = [
    "XcorConfig",
    "XcorMap",
    "XcorResult",
    "correlation_map",
    "xcorr_object",
    "XCOR_COLUMNS",
]

#: A continuum-subtracted reference must exceed pure noise by this many sigma (chi-square test)
#: for an XCOR_CONTSUB map to be made.
FEATURE_SIGMA = 3.0
#: Columns of the summary table (``xcorr.tsv``) of :func:`ifu_extract.steps.xcorr.run_xcorr`.
XCOR_COLUMNS = ("ID", "STATUS", "REFERENCE", "N_SPAXELS", "N_ITER", "CONVERGED", "N_SPAXELS_CONTSUB",
                "N_ITER_CONTSUB", "CONVERGED_CONTSUB", "SNR_MEDIAN", "FILE")


@dataclass
class XcorConfig:
    """Options of the cross-correlation extraction.

    Attributes
    ----------
    max_iter : int
        Largest number of map/reference rounds (1: AutoSpec's single pass).
    tol : float
        Convergence: L1 change of the unit-sum map between rounds.
    snr_min : float
        Spaxels enter the extraction region where the map exceeds this many sigma.
    method, degree, median_width : str, int, float
        Continuum model for the ``CONTSUB`` map (:func:`~ifu_extract.contsub.fit_continuum`)
        when no continuum-subtracted cube is given; the reference's continuum is always fitted
        this way.
    skysub : bool
        Add ``*_SKYSUB`` versions when the object has sky spaxels.
    """

    max_iter: int = 50
    tol: float = 1e-3
    snr_min: float = 2.0
    method: str = "poly"
    degree: int = 5
    median_width: float = 150.0
    skysub: bool = True


@dataclass
class XcorMap:
    """One converged cross-correlation map and the spectrum it gives.

    Attributes
    ----------
    amplitude, variance : numpy.ndarray
        ``(ny, nx)`` map and its variance (NaN where no voxel is usable or on neighbours).
    region : numpy.ndarray
        ``(ny, nx)`` bool extraction region.
    spectrum : Spectrum1D
        Extracted from the original cube with the map as weights.
    n_iter : int
    converged : bool
    change : float
        L1 change of the unit-sum map at the last round.
    """

    amplitude: np.ndarray
    variance: np.ndarray
    region: np.ndarray
    spectrum: Spectrum1D
    n_iter: int
    converged: bool
    change: float
    sums: np.ndarray = field(default=None, repr=False)  # Σ of the linear coefficients per channel


@dataclass
class XcorResult:
    """``XCOR`` and ``XCOR_CONTSUB`` of one object."""

    xcor: XcorMap
    xcor_contsub: XcorMap | None
    spectra: dict
    images: dict
    notes: list = field(default_factory=list)


def correlation_map(data: np.ndarray, var: np.ndarray | None, reference: np.ndarray,
                    use: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares amplitude of *reference* in every spaxel.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, ny, nx)``; NaN marks unusable voxels.  *var* None: unit weights.
    reference : numpy.ndarray
        ``(n_wave,)``; NaN channels are left out.
    use : numpy.ndarray, optional
        ``(ny, nx)`` bool; other spaxels are NaN in the result.

    Returns
    -------
    amplitude, variance : numpy.ndarray
        ``(ny, nx)`` float64.
    """
    return _correlate(StampMatrices(data, var), reference, data.shape[1:], use)


def _correlate(st: StampMatrices, reference, shape, use=None):
    """:func:`correlation_map` on a prepared stamp (one pass: two matrix-vector products)."""
    ref = np.asarray(reference, dtype=np.float64)
    good_r = np.isfinite(ref)
    r = np.where(good_r, ref, 0.0).astype(np.float32)
    iv = st.IV  # also prepares st._div = D / V
    num = (r @ st._div).astype(np.float64)
    den = ((r * r) @ iv).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.where(den > 0, num / den, np.nan)
        var_a = np.where(den > 0, 1.0 / den, np.nan)
    amp, var_a = amp.reshape(shape), var_a.reshape(shape)
    if use is not None:
        amp = np.where(use, amp, np.nan)
        var_a = np.where(use, var_a, np.nan)
    return amp, var_a


def _region(amp, var_a, obj, neighbours, snr_min) -> np.ndarray:
    """Spaxels above *snr_min* sigma connected to the object mask, minus neighbours."""
    with np.errstate(invalid="ignore"):
        sig = np.isfinite(amp) & (amp > snr_min * np.sqrt(var_a))
    if neighbours is not None:
        sig &= ~neighbours
    lab, n = ndimage.label(sig, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros_like(obj)
    keep = np.unique(lab[obj & (lab > 0)])
    region = np.isin(lab, keep[keep > 0])
    return region


def _extract_with_map(stamp: StampMatrices, amp, region):
    """Image-calibrated weighted estimator with the map as weights and template."""
    w = np.where(region & np.isfinite(amp), np.clip(amp, 0.0, None), 0.0)
    total = float(w.sum())
    if total <= 0:
        return None
    (flux, var), s = stamp.weighted(w, w, total)
    return flux, var, s


def _iterate(stamp_corr: StampMatrices, stamp_out: StampMatrices, reference, obj, neighbours, cfg: XcorConfig):
    """Map/reference rounds until the unit-sum map moves less than cfg.tol (L1)."""
    use = ~neighbours if neighbours is not None else None
    ref = np.asarray(reference, dtype=np.float64)
    prev = None
    change = np.inf
    n_iter = 0
    for n_iter in range(1, max(1, cfg.max_iter) + 1):
        amp, var_a = _correlate(stamp_corr, ref, obj.shape, use)
        region = _region(amp, var_a, obj, neighbours, cfg.snr_min)
        if not region.any():
            region = obj & np.isfinite(amp)
        w = np.where(region, np.clip(np.nan_to_num(amp), 0.0, None), 0.0)
        norm = w / w.sum() if w.sum() > 0 else w
        if prev is not None:
            change = float(np.abs(norm - prev).sum())
            if change < cfg.tol:
                break
        prev = norm
        if n_iter == cfg.max_iter:
            break
        got = _extract_with_map(stamp_corr, amp, region)
        if got is None:
            break
        ref = got[0]
    out = _extract_with_map(stamp_out, amp, region)
    return amp, var_a, region, out, n_iter, change < cfg.tol, change


def _has_features(ref_c, ref_var, cfg: XcorConfig) -> bool:
    """Whether a continuum-subtracted reference holds more than noise: its chi-square against
    zero exceeds the degrees of freedom by FEATURE_SIGMA standard deviations.  Without a
    variance the reference is assumed to have features."""
    if ref_var is None:
        return True
    v = np.asarray(ref_var, dtype=np.float64)
    ok = np.isfinite(ref_c) & np.isfinite(v) & (v > 0)
    dof = int(ok.sum()) - (cfg.degree + 1 if cfg.method == "poly" else 0)
    if dof <= 0:
        return False
    chi2 = float(np.sum(ref_c[ok] ** 2 / v[ok]))
    return (chi2 - dof) / np.sqrt(2.0 * dof) > FEATURE_SIGMA


def xcorr_object(data: np.ndarray, var: np.ndarray | None, wave: np.ndarray, reference: np.ndarray,
                 reference_var: np.ndarray | None, obj: np.ndarray, *, neighbours=None, sky=None,
                 contsub: np.ndarray | None = None, config: XcorConfig | None = None) -> XcorResult:
    """``XCOR`` and ``XCOR_CONTSUB`` maps and spectra of one object.

    Parameters
    ----------
    data, var : numpy.ndarray
        ``(n_wave, ny, nx)`` stamp of the original cube (NaN for bad voxels).
    wave : numpy.ndarray
        ``(n_wave,)`` Angstrom.
    reference, reference_var : numpy.ndarray
        ``(n_wave,)`` reference spectrum (and variance) on the same channels.
    obj : numpy.ndarray
        ``(ny, nx)`` bool object mask.
    neighbours, sky : numpy.ndarray, optional
        ``(ny, nx)`` bool: other objects' segments (never used), sky spaxels (``_SKYSUB``).
    contsub : numpy.ndarray, optional
        ``(n_wave, ny, nx)`` continuum-subtracted stamp; computed with
        :func:`~ifu_extract.contsub.fit_continuum` when not given.
    config : XcorConfig, optional

    Returns
    -------
    XcorResult
    """
    cfg = config or XcorConfig()
    obj = np.asarray(obj, dtype=bool)
    notes = []
    stamp = StampMatrices(data, var)
    xc = _iterate(stamp, stamp, reference, obj, neighbours, cfg)
    maps = {}
    spectra, images = {}, {}
    sky_flux = sky_var = None
    if cfg.skysub and sky is not None and np.any(sky):
        sky_flux, sky_var = stamp.mean(np.asarray(sky, dtype=bool))

    def record(tag, result):
        amp, var_a, region, out, n_iter, conv, change = result
        if out is None:
            notes.append(f"{tag}: empty map (no positive weight); not extracted")
            return None
        flux, fvar, s = out
        meta = {"XCNITER": (n_iter, "cross-correlation rounds"),
                "XCCONV": (bool(conv), f"map converged (L1 change < {cfg.tol:g})"),
                "XCCHANGE": (float(change) if np.isfinite(change) else "inf", "last L1 change of the map"),
                "XCNSPAX": (int(region.sum()), "spaxels in the extraction region")}
        sp = Spectrum1D(flux, fvar, meta)
        spectra[tag] = sp
        if sky_flux is not None:
            spectra[tag + "_SKYSUB"] = Spectrum1D(flux - sky_flux * s, fvar + s * s * sky_var, dict(meta))
        images[tag] = (amp.astype(np.float32), var_a.astype(np.float32))
        m = XcorMap(amp, var_a, region, sp, n_iter, bool(conv), float(change), s)
        maps[tag] = m
        if not conv and cfg.max_iter > 1:
            notes.append(f"{tag}: map not converged after {n_iter} rounds (L1 change {change:.2g})")
        return m

    record("XCOR", xc)
    # Continuum-subtracted map: cube and reference without their continua.
    ref_fit = fit_continuum(np.asarray(reference, dtype=np.float64)[:, None],
                            None if reference_var is None else np.asarray(reference_var)[:, None], wave,
                            method=cfg.method, degree=cfg.degree, median_width=cfg.median_width)
    ref_c = np.asarray(reference, dtype=np.float64) - ref_fit.continuum[:, 0]
    if not np.isfinite(ref_c).any():
        notes.append("XCOR_CONTSUB: the reference has no continuum fit; not computed")
    elif not _has_features(ref_c, reference_var, cfg):
        notes.append("XCOR_CONTSUB: no significant feature in the reference once its continuum "
                     "is removed; not computed")
    else:
        if contsub is None:
            contsub = np.asarray(data, dtype=np.float32) - fit_continuum(
                data, var, wave, method=cfg.method, degree=cfg.degree,
                median_width=cfg.median_width).continuum
        stamp_c = StampMatrices(contsub, var)
        xcc = _iterate(stamp_c, stamp, ref_c, obj, neighbours, cfg)
        record("XCOR_CONTSUB", xcc)
    return XcorResult(maps.get("XCOR"), maps.get("XCOR_CONTSUB"), spectra, images, notes)

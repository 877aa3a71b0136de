"""The ``deblend`` step: groups, models, layer-by-layer fluxes, and the blend benchmark of issue 4.

The blend test builds the scene of the issue: a bright red galaxy with absorption features and a
colour gradient (a red point-like bulge inside a bluer exponential disk) and, 0.9″ away, a galaxy
20 times fainter with emission lines, on a 0.2″ grid, Moffat β = 2.8 with FWHM 0.85″ → 0.60″,
a few NaN voxels, three noise seeds.  The deblender is given the PSF through FSF keywords 5 %
broader than the truth.  Every spectrum S of each object is scored against the true total
spectra by least squares, ``S = a·T_self + b·T_other + c`` over all channels, and
``contamination = b·ΣT_other / (a·ΣT_self)``.

Noise level.  "Per-channel S/N of about 5 for the bright one" is taken as the S/N per channel of
the bright galaxy's brightest spaxel (its spectrum then has S/N ≈ 16 per channel).  The
contamination of the faint object is a ratio of two regression coefficients, and its statistical
error (printed with each value) is ``≈ 20 / (S/N_bright · rms(T_bright)/mean(T_bright) · √N)``:
0.10 per seed here with N = 3681 MUSE channels, and 0.3 if the bright galaxy's *spectrum* had
S/N 5.  An ORACLE, the same cube fitted with the true spatial models and PSF, shows how much of
a seed's value is its noise draw (the same for any unbiased estimator); the noise-free run below
measures the method's own (systematic) contamination, which the noisy seeds cannot resolve
better than that.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main, write_synth
from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.deblend import DeblendConfig, deblend_catalog, find_groups, resolve_psf, solve_layers
from ifu_extract.errors import InputError
from ifu_extract.psf import PSFModel, fit_psf_on_star
from ifu_extract.sourcefile import read_source_spectrum
from ifu_extract.wcsutil import pixel_to_world

NWAVE = 3681          # MUSE: 4750-9350 Angstrom in 1.25 Angstrom channels
SEEDS = (0, 1, 2)
PSF_ERROR = 1.05      # the fitter's FWHM is 5 % broader than the truth


# ----------------------------------------------------------------------------- the blend scene
def blend_truth(nwave=NWAVE):
    """True total spectra (bulge, disk, faint) of the blend, per channel, and positions."""
    wave = 4750.0 + 1.25 * np.arange(nwave)
    z = 0.3  # the bright galaxy: 4000 Angstrom break, Ca H&K, G band, Hb, Mg b, Fe, Na D, Ha
    absorb = [(lam * (1 + z), s, d) for lam, s, d in (
        (3934, 5, .5), (3969, 5, .45), (4304, 8, .3), (4861, 6, .3), (5175, 8, .35), (5270, 6, .2),
        (5893, 6, .35), (6563, 6, .3))]
    brk = 1.0 / (1.0 + np.exp(-(wave - 4000 * (1 + z)) / 30.0))
    bulge = synth.continuum_spectrum(wave, 1.0, 0.8, absorb) * (0.45 + 0.55 * brk)
    disk = synth.continuum_spectrum(wave, 1.0, 0.2, [(c, s, d / 2) for c, s, d in absorb]) * (0.75 + 0.25 * brk)
    bulge *= 60.0 / bulge.mean()
    disk *= 40.0 / disk.mean()
    bright = bulge + disk
    zf = 0.6  # the faint galaxy: [O II], Hb, [O III] (40 % of its flux), blue continuum
    lines = sum(synth.emission_line(wave, lam * (1 + zf), 2.5, w)
                for lam, w in ((3727, 1.0), (4861, 0.5), (4959, 0.5), (5007, 1.5)))
    cont = synth.continuum_spectrum(wave, 1.0, -0.3)
    total_faint = bright.sum() / 20.0
    faint = cont * (0.6 * total_faint / cont.sum()) + lines * (0.4 * total_faint / lines.sum())
    xb, yb = 14.2, 15.4
    ang = np.deg2rad(17.0)  # near the disk's major axis (PA 20 deg): the harder case
    xf, yf = xb + 4.5 * np.cos(ang), yb + 4.5 * np.sin(ang)  # 4.5 spaxels = 0.9 arcsec
    return wave, bulge, disk, faint, (xb, yb), (xf, yf)


def make_blend(path, seed, *, peak_snr=5.0, nan_fraction=1e-4, psf_error=PSF_ERROR, nwave=NWAVE,
               oracle=False):
    """Write the blend cube; returns (T_bright, T_faint, positions), and with *oracle* also the
    true fluxes' least-squares estimate on this cube (:func:`oracle_fluxes`)."""
    wave, bulge, disk, faint, pb, pf = blend_truth(nwave)
    srcs = [synth.SynthSource("bulge", *pb, bulge),
            synth.SynthSource("disk", *pb, disk, kind="sersic", re_arcsec=0.4, n=1.0, q=0.8, pa_deg=20.0),
            synth.SynthSource("faint", *pf, faint)]
    _, _, dq, hdr, truth = synth.make_cube(srcs, shape=(nwave, 31, 31), sigma=1.0, keep_models=True, seed=seed)
    model = sum(truth.models[k].astype(np.float64) for k in ("bulge", "disk", "faint"))
    rng = np.random.default_rng(1000 + seed)
    if peak_snr is None:
        sigma = 1e-6 * float(model.max())
    else:  # S/N per channel of the bright galaxy's brightest spaxel
        sigma = float(np.median(model.reshape(nwave, -1).max(axis=1))) / peak_snr
    data = (model + rng.standard_normal(model.shape) * sigma).astype(np.float32)
    var = np.full(model.shape, sigma**2, dtype=np.float32)
    bad = rng.random(model.shape) < nan_fraction
    data[bad] = np.nan
    var[bad] = np.nan
    dq = bad.astype(np.uint8)
    hdr["FSF00FWA"] *= psf_error  # the FSF keywords the fitter reads: 5 % off
    hdr["FSF00FWB"] *= psf_error
    synth.cube_hdulist(data, var, dq, hdr).writeto(path, overwrite=True)
    if not oracle:
        return bulge + disk, faint, (pb, pf)
    units = [(truth.models[k] / spec[:, None, None]).astype(np.float32)
             for k, spec in (("bulge", bulge), ("disk", disk), ("faint", faint))]
    return bulge + disk, faint, (pb, pf), oracle_fluxes(data, var, units)


def oracle_fluxes(data, var, units):
    """The fluxes of the sources of the blend, fitted with their *true* spatial models.

    An estimator that knows everything but the fluxes: per channel, weighted least squares of
    the cube on the true unit-flux models of bulge, disk and faint galaxy (``units``, each
    ``(n_wave, ny, nx)``), with the true PSF, each flux free (so it pays, like DEBLEND, for not
    knowing the bulge-to-disk colour).  Its contamination is what the noise of that cube alone
    puts into the score: the irreducible part, against which DEBLEND's own is measured.

    Returns
    -------
    bright, faint : numpy.ndarray
        ``(n_wave,)`` total fluxes (bulge + disk, faint).
    """
    L = data.shape[0]
    f = np.empty((L, len(units)))
    for z0 in range(0, L, 512):  # blocks of channels: bounded memory
        z1 = min(z0 + 512, L)
        M = np.stack([u[z0:z1].reshape(z1 - z0, -1) for u in units], axis=1)
        f[z0:z1] = solve_layers(data[z0:z1].reshape(z1 - z0, -1), var[z0:z1].reshape(z1 - z0, -1), M)[0]
    return f[:, 0] + f[:, 1], f[:, 2]


def score(S, t_self, t_other):
    """a, b, contamination and its 1-sigma error from ``S = a T_self + b T_other + c``."""
    ok = np.isfinite(S)
    A = np.column_stack([t_self[ok], t_other[ok], np.ones(ok.sum())])
    coef, *_ = np.linalg.lstsq(A, S[ok], rcond=None)
    a, b, _ = coef
    resid = S[ok] - A @ coef
    cov = resid @ resid / (ok.sum() - 3) * np.linalg.inv(A.T @ A)
    ratio = t_other.sum() / (a * t_self.sum())
    return float(a), float(b), float(b * ratio), float(np.sqrt(cov[1, 1]) * ratio)


def _catalog(path, cube_path, positions):
    with open_cube(cube_path) as c:
        xs = np.array([p[0] for p in positions])
        ys = np.array([p[1] for p in positions])
        ra, dec = pixel_to_world(c.wcs, xs, ys)
    lines = ["ID RA DEC"] + [f"{i} {r:.9f} {d:.9f}" for i, (r, d) in enumerate(zip(ra, dec), start=1)]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def _masks(cube_path, cat_path, out, tmp):
    """Masks as a user would make them: SEP on the white light (which does not split a 20:1 pair
    0.9″ apart), then Voronoi cells to cut the shared segment."""
    from ifu_extract.catalog import read_catalog
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image
    from ifu_extract.masks import make_masks, write_masks

    with open_cube(cube_path) as c:
        wl = band_image(c)
        det = detect_sources(wl)
        seg = tmp / "seg.fits"
        fits.PrimaryHDU(det.segmap, wl.wcs.to_header()).writeto(seg, overwrite=True)
        result = make_masks(c, read_catalog(cat_path), [seg], size=5.0, voronoi=True, warn=False)
    write_masks(result, out)
    return out


METHODS = ("MUSE_WHITE", "XCOR", "XCOR_CONTSUB", "DEBLEND", "ORACLE")


@pytest.fixture(scope="module")
def blend_runs(tmp_path_factory):
    """The whole chain (mask, extract, xcorr, deblend) on the three seeds; scores per method."""
    from ifu_extract.catalog import read_catalog
    from ifu_extract.estimators import ExtractConfig
    from ifu_extract.catalog_extraction import extract_catalog
    from ifu_extract.steps.deblend import run_deblend
    from ifu_extract.steps.xcorr import run_xcorr

    scores = {m: {1: [], 2: []} for m in METHODS}
    runs = []
    for seed in SEEDS:
        tmp = tmp_path_factory.mktemp(f"blend{seed}")
        cube = tmp / "cube.fits"
        t_bright, t_faint, (pb, pf), (o_bright, o_faint) = make_blend(cube, seed, oracle=True)
        cat = _catalog(tmp / "cat.txt", cube, [pb, pf])
        masks = _masks(cube, cat, tmp / "masks.fits", tmp)
        out = tmp / "out"
        table = read_catalog(cat)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extract_catalog(cube, table, masks, out, ExtractConfig(apertures=(1.0,)))
            run_xcorr(cube, table, masks, output=out, reference="MUSE_WHITE")
        t1 = time.perf_counter()
        rows = run_deblend(cube, table, out, masks=masks).rows
        t2 = time.perf_counter()
        for oid, ts, to, oracle in ((1, t_bright, t_faint, o_bright), (2, t_faint, t_bright, o_faint)):
            for m in METHODS[:-1]:
                _, flux, var, *_ = read_source_spectrum(out / "sources" / f"{oid}.fits", m)
                scores[m][oid].append(score(flux, ts, to))
            scores["ORACLE"][oid].append(score(oracle, ts, to))
        runs.append({"seed": seed, "out": out, "rows": rows, "t_bright": t_bright, "t_faint": t_faint,
                     "extract_xcorr_s": t1 - t0, "deblend_s": t2 - t1})
    return scores, runs


def test_blend_contamination(blend_runs):
    """Issue 4: DEBLEND contamination <= 2 % (bright) and <= 10 % (faint), 0.8 <= a <= 1.2.

    Both signs count: a negative contamination would be the neighbour over-subtracted.  The
    bright object's (error 0.02 %) is checked as |c| <= 2 %.  The faint object's has an error
    of 10-12 % per seed (module docstring) whatever the estimator: with the *true* models and
    PSF (ORACLE) it is -12 %, -21 % and +3 % on these three cubes, and within +-10 % in 11 of 20
    seeds.  So |c| <= 10 % cannot be asked of one noisy seed; what DEBLEND adds to that seed's
    noise draw can: |c(DEBLEND) - c(ORACLE)| <= 10 % on the same cube (over 20 seeds this
    difference is +2 % +- 5 %, beyond 10 % in one).  The issue's one-sided c <= 10 % is kept,
    and the method's own contamination, without noise, is held within 1 % by
    ``test_blend_systematics_noise_free``."""
    scores, runs = blend_runs
    print("\nblend 0.9\" apart, bright = 20 x faint, PSF 5 % off, seeds", SEEDS)
    print(f"{'method':14s} {'obj':6s} {'a':>7s} {'b':>9s} {'contamination':>22s}")
    for m in METHODS:
        for oid, name in ((1, "bright"), (2, "faint")):
            for seed, (a, b, c, e) in zip(SEEDS, scores[m][oid]):
                print(f"{m:14s} {name:6s} {a:7.3f} {b:9.5f} {c:10.4f} +- {e:.4f}  (seed {seed})")
            mean = np.mean(scores[m][oid], axis=0)
            print(f"{m:14s} {name:6s} {mean[0]:7.3f} {mean[1]:9.5f} {mean[2]:10.4f}  (mean)")
    for seed, d, o in zip(SEEDS, scores["DEBLEND"][2], scores["ORACLE"][2]):
        print(f"DEBLEND - ORACLE faint contamination {d[2] - o[2]:+.4f}  (seed {seed})")
    for r in runs:
        assert [row["STATUS"] for row in r["rows"]] == ["ok", "ok"]
        assert r["rows"][0]["GROUP"] == r["rows"][1]["GROUP"] == 1  # found together
    for a, b, c, e in scores["DEBLEND"][1]:
        assert abs(c) <= 0.02 and 0.8 <= a <= 1.2
    for (a, b, c, e), (_, _, c_oracle, _) in zip(scores["DEBLEND"][2], scores["ORACLE"][2]):
        assert c <= 0.10 and 0.8 <= a <= 1.2
        assert abs(c - c_oracle) <= 0.10
    # The cross-correlation and white-light spectra of the faint object are dominated by its
    # neighbour (the reason for deblending): 2-4 times its own flux; DEBLEND adds far less.
    excess = max(abs(d[2] - o[2]) for d, o in zip(scores["DEBLEND"][2], scores["ORACLE"][2]))
    for m in ("MUSE_WHITE", "XCOR", "XCOR_CONTSUB"):
        assert min(s[2] for s in scores[m][2]) > 1.0 > 5 * excess


def test_deblend_summary_names_whose_line_it_is(blend_runs):
    """deblend.tsv: the faint galaxy's strongest line is one of its own emission lines; the
    bright galaxy (absorption only), once the faint one is fitted out, has none at S/N >= 6,
    though its white-light spectrum shows the neighbour's line."""
    from ifu_extract.lines import strongest_emission_line

    own = [lam * 1.6 for lam in (3727, 4861, 4959, 5007)]  # the faint galaxy's lines, z = 0.6
    for run in blend_runs[1]:
        tab = Table.read(run["out"] / "deblend.tsv", format="ascii.tab")
        line = {str(i): (w, s) for i, w, s in zip(tab["ID"], tab["LINE_WAVE"], tab["LINE_SNR"])}
        wave, snr = line["2"]
        assert min(abs(wave - lam) for lam in own) < 1.0 and snr > 10, line
        assert not np.isfinite(line["1"][0]), line
        wave_axis, flux, var, *_ = read_source_spectrum(run["out"] / "sources" / "1.fits", "MUSE_WHITE")
        seen = strongest_emission_line(wave_axis, flux, var)
        assert seen is not None and min(abs(seen.wave - lam) for lam in own) < 1.0


def test_deblend_variance_matches_scatter(blend_runs):
    """DEBLEND's variance is that of the estimate: (S - T) / sigma has unit scatter."""
    _, runs = blend_runs
    for r in runs:
        for oid, truth in ((1, r["t_bright"]), (2, r["t_faint"])):
            _, flux, var, *_ = read_source_spectrum(r["out"] / "sources" / f"{oid}.fits", "DEBLEND")
            a = score(flux, truth, r["t_faint"] if oid == 1 else r["t_bright"])[0]
            chi = (flux - a * truth) / np.sqrt(var)
            chi = chi[np.isfinite(chi)]
            # Model mismatch adds a little to the faint object's scatter; 3681 channels give the
            # std to +-2.5 %.
            assert 0.9 < np.std(chi) < 1.15, (oid, np.std(chi))


def _scaled(psf: PSFModel, factor: float) -> PSFModel:
    return PSFModel(psf.kind, tuple(c * factor for c in psf.fwhm_coeffs), psf.beta_coeffs, psf.source)


def test_blend_systematics_noise_free(tmp_path):
    """Without noise, what is left is the method's own error: the blend of the contamination
    test given FSF keywords 5 % too broad (the default run), 10 % too broad, exact, or 5 % too
    narrow.  A PSF too broad is narrowed on the group's data (``DBPSFSCL``) and the
    contamination stays within 1 % (faint) and 0.2 % (bright), both fluxes within 2 %; without
    that refinement the faint galaxy takes +3 % (+13 % with 10 %) of its neighbour's light and
    its flux is 6 % (12 %) too high.  A PSF too narrow is left as given: the model widens the
    faint source itself (flux 3-4 % low, contamination < 1 %)."""
    from ifu_extract.masks import read_masks

    cube = tmp_path / "cube.fits"
    t_bright, t_faint, (pb, pf) = make_blend(cube, 0, peak_snr=None, nwave=1200)
    cat = _catalog(tmp_path / "cat.txt", cube, [pb, pf])
    masks = _masks(cube, cat, tmp_path / "masks.fits", tmp_path)
    with read_masks(masks)[1] as m:
        seg = m.segmap(1)
    runs = {}
    with open_cube(cube) as c:
        ra, dec = pixel_to_world(c.wcs, np.array([pb[0], pf[0]]), np.array([pb[1], pf[1]]))
        table = Table({"ID": ["1", "2"], "RA": ra, "DEC": dec, "STATUS": ["ok", "ok"]})
        psf = resolve_psf(c)
        assert psf.source == "header"
        for name, error, cfg in (("5% broad", PSF_ERROR, DeblendConfig()),
                                 ("5% broad, not refined", PSF_ERROR, DeblendConfig(refine_psf=False)),
                                 ("5% broad, no gradients", PSF_ERROR, DeblendConfig(gradients=False)),
                                 ("10% broad", 1.10, DeblendConfig()),
                                 ("10% broad, not refined", 1.10, DeblendConfig(refine_psf=False)),
                                 ("exact", 1.0, DeblendConfig()),
                                 ("5% narrow", 0.95, DeblendConfig())):
            res = deblend_catalog(c, table, _scaled(psf, error / PSF_ERROR), segmap=seg, config=cfg)
            sb, sf = res.sources[0].spectrum, res.sources[1].spectrum
            a1, _, c1, _ = score(sb.flux, t_bright, t_faint)
            a2, _, c2, _ = score(sf.flux, t_faint, t_bright)
            scale = sb.meta["DBPSFSCL"][0]
            runs[name] = (a1, c1, a2, c2, scale * error, res.sources[0].notes)
            print(f"\nnoise-free, FSF {name:24s}: bright a={a1:.4f} contamination {c1:+.4f}; "
                  f"faint a={a2:.4f} contamination {c2:+.4f}; FWHM used / true {scale * error:.3f}", end="")
    print()
    for name in ("5% broad", "10% broad", "exact", "5% narrow"):
        a1, c1, a2, c2, used, notes = runs[name]
        assert any("gradient" in n for n in notes)
        # The joint solver (fitted centres, core/envelope spectra) leaves a noise-free floor of
        # 1.0-2.4 % in the faint galaxy (0.02-1 % with the old per-layer solver at exact
        # positions), the price of 6-11 % instead of 23-58 % with 0.06-0.11" catalogue errors
        # (bench/README.md, Deblending).
        assert abs(c1) < 0.002 and abs(c2) < 0.03, name
        assert abs(a1 - 1) < 0.01, name
        assert abs(a2 - 1) < (0.02 if "broad" in name or name == "exact" else 0.05), name
    assert abs(runs["5% broad"][4] - 1) < 0.01 and abs(runs["10% broad"][4] - 1) < 0.01
    assert runs["exact"][4] == 1.0 and runs["5% narrow"][4] == 0.95  # not touched
    # What the refinement removes: a PSF too broad leaks the neighbour into the faint galaxy.
    # (With the faint member's centre fitted too, the 5 % case leaks 1.9 %, twice the refined
    # 0.9 %, and overestimates the faint galaxy's flux by 5.6 %.)
    assert runs["5% broad, not refined"][3] > 2 * abs(runs["5% broad"][3])
    assert runs["5% broad, not refined"][2] > 1.04 and runs["10% broad, not refined"][3] > 0.08
    # Without the core/envelope shape the bright galaxy's colour gradient leaks into its neighbour.
    # (With the joint solver's own core and envelope spectra the leak is 3 %, not the 20+ % of the
    # per-layer solver: the gradient amplitudes still remove it.)
    assert abs(runs["5% broad, no gradients"][3]) > 0.02 > abs(runs["5% broad"][3])


def test_real_mosaic_residuals_are_noise(mosaic, tmp_path, capfd):
    """Two touching UDF galaxies (real MUSE data, FSF keywords): the deblended model leaves
    residuals whose scatter is the STAT noise, and the PSF is left as given (extended galaxies
    do not constrain its width)."""
    from ifu_extract.catalog import read_catalog
    from ifu_extract.masks import read_masks

    for args in (["detect", mosaic, "-o", tmp_path / "cat.tsv", "--segmap", tmp_path / "seg.fits"],
                 ["mask", mosaic, tmp_path / "cat.tsv", "--segmap", tmp_path / "seg.fits", "-o",
                  tmp_path / "masks.fits"]):
        assert run_main(args, capfd).exit_code == 0
    with read_masks(tmp_path / "masks.fits")[1] as m:
        seg = m.segmap(1)
    with open_cube(mosaic) as c:
        data, var = c.window(0, c.nx, 0, c.ny)
        model = np.zeros(data.shape, np.float32)
        res = deblend_catalog(c, read_catalog(tmp_path / "cat.tsv"), resolve_psf(c), segmap=seg,
                              model_cube=model)
    assert any(len(g) > 1 for g in res.groups)
    assert all(s.status == "ok" and s.spectrum.meta["DBPSFSCL"][0] == 1.0 for s in res.sources)
    used = np.any(model != 0, axis=0)
    chi = ((data - model) / np.sqrt(var))[:, used]
    print(f"\nsubcub_mosaic: std of residual / sqrt(STAT) over {used.sum()} spaxels: {np.nanstd(chi):.4f}")
    assert 0.97 < np.nanstd(chi) < 1.03


# ----------------------------------------------------------------------------- exactness
def test_point_sources_exact_with_true_psf(tmp_path):
    """Two overlapping point sources and the true PSF: DEBLEND is the total flux (light outside
    the group box included), NaN voxels included, in every channel: to 1 %, and 2 % for a source
    cut by the field's edge.  (The synthetic cube integrates the PSF over spaxels on a 5x5
    sub-grid, 0.2 % off at the peak; the fit absorbs that with a slightly broader profile.)"""
    wave = 4750.0 + 1.25 * np.arange(300)
    s1 = synth.continuum_spectrum(wave, 50.0, 0.5, [(4900, 4, 0.5)])
    s2 = synth.continuum_spectrum(wave, 5.0, -0.5) + synth.emission_line(wave, 4950, 2.0, 300.0)
    srcs = [synth.SynthSource("a", 12.4, 13.1, s1), synth.SynthSource("b", 15.9, 14.6, s2),
            synth.SynthSource("c", 3.0, 27.5, s2)]  # "c" is cut by the field edge
    path = tmp_path / "pts.fits"
    truth = write_synth(path, srcs, shape=(300, 30, 30), sigma=1e-4, nan_fraction=0.002, seed=3)
    with open_cube(path) as c:
        ra, dec = pixel_to_world(c.wcs, np.array([12.4, 15.9, 3.0]), np.array([13.1, 14.6, 27.5]))
        cat = Table({"ID": ["a", "b", "c"], "RA": ra, "DEC": dec, "STATUS": ["ok"] * 3})
        res = deblend_catalog(c, cat, resolve_psf(c))
    assert res.sources[0].group == res.sources[1].group != res.sources[2].group
    for src, spec, tol in zip(res.sources, (s1, s2, s2), (0.01, 0.01, 0.02)):
        rel = src.spectrum.flux / spec - 1
        assert np.nanmax(np.abs(rel)) < tol, (src.id, np.nanmax(np.abs(rel)))
        assert np.all(np.isfinite(src.spectrum.flux)) and np.all(src.spectrum.var > 0)
    del truth


def test_solver_matches_scipy_nnls_and_covariance():
    """Batched layer solutions equal scipy's NNLS channel by channel; the covariance is
    (M^T V^-1 M)^-1; a background column is never clamped."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(7)
    L, K, P = 200, 4, 60
    M = rng.random((L, K, P)) ** 3
    M /= M.sum(axis=2, keepdims=True)
    f_true = rng.normal(0.0, 1.0, (L, K)) * 5
    var = rng.uniform(0.5, 2.0, (L, P))
    data = np.einsum("lk,lkp->lp", f_true, M) - 0.3 + rng.standard_normal((L, P)) * np.sqrt(var)
    data[5, :7] = np.nan
    f, cov = solve_layers(data, var, M, nonneg=True, background=True)
    for layer in range(L):
        ok = np.isfinite(data[layer])
        w = 1 / np.sqrt(var[layer, ok])
        A = np.vstack([M[layer][:, ok], np.ones(ok.sum())]).T * w[:, None]
        # background split in two non-negative parts
        A2 = np.hstack([A, -A[:, -1:]])
        z, _ = nnls(A2, data[layer, ok] * w)
        ref = np.concatenate([z[:K], [z[K] - z[K + 1]]])
        assert np.allclose(f[layer], ref, atol=1e-6 * max(1, np.abs(ref).max())), layer
    f_u, cov_u = solve_layers(data, var, M)
    layer = 3
    A = M[layer].T / np.sqrt(var[layer])[:, None]
    assert np.allclose(cov_u[layer], np.linalg.inv(A.T @ A), rtol=1e-8)
    assert np.all(f[:, :K] >= 0) and np.any(f[:, K] < 0)


def test_groups_are_connected_components():
    x = np.array([5.0, 9.0, 13.0, 30.0, 50.0])
    y = np.array([5.0, 5.0, 5.0, 30.0, 50.0])
    groups, foot = find_groups(x, y, {}, (60, 60), 2.5, [0, 1, 2, 3, 4])
    assert groups == [[0, 1, 2], [3], [4]]  # a chain is one group
    assert all(len(foot[i][0]) > 0 for i in range(5))


# ----------------------------------------------------------------------------- CLI and bad inputs
def _field(tmp_path, *, fsf=True, star=False):
    """Three isolated sources, a clump of four overlapping ones, and optionally a bright isolated
    star (the field is then larger)."""
    wave = 4750.0 + 1.25 * np.arange(120)
    spec = synth.continuum_spectrum(wave, 30.0, 0.3)
    pos = [(6.3, 6.2), (33.5, 7.1), (7.2, 33.4), (20.1, 20.2), (23.6, 21.0), (21.4, 23.5), (24.2, 24.4)]
    srcs = [synth.SynthSource(str(i), x, y, spec * (1 + 0.3 * i)) for i, (x, y) in enumerate(pos, start=1)]
    size = 40
    if star:
        srcs.append(synth.SynthSource("star", 44.0, 44.0, spec * 40))
        pos.append((44.0, 44.0))
        size = 56
    path = tmp_path / "field.fits"
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=(120, size, size), sigma=0.5, seed=5)
    hdul = synth.cube_hdulist(data, var, dq, hdr)
    if not fsf:
        for key in ("FSFMODE", "FSF00BET", "FSF00FWA", "FSF00FWB"):
            del hdul[0].header[key]
    hdul.writeto(path, overwrite=True)
    ids = [str(i) for i in range(1, 8)] + (["star"] if star else [])
    cat = _catalog(tmp_path / "cat.txt", path, pos)
    text = Path(cat).read_text().splitlines()
    Path(cat).write_text("\n".join([text[0]] + [f"{i} {ln.split()[1]} {ln.split()[2]}"
                                               for i, ln in zip(ids, text[1:])]) + "\n")
    return path, cat, truth


def test_cli_groups_cap_and_outputs(tmp_path, capfd):
    """A group larger than --max-group is cut into parts of at most that many (it used to be
    refused: crowded fields chain every object into one group), each member noted; model and
    residual cubes carry the cube's WCS; reruns are identical."""
    cube, cat, truth = _field(tmp_path)
    out = tmp_path / "out"
    res = run_main(["deblend", cube, cat, "-o", out, "--max-group", "3", "--model-cube", tmp_path / "model.fits",
                    "--residual-cube", tmp_path / "resid.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    tab = Table.read(out / "deblend.tsv", format="ascii.tab")
    status = dict(zip([str(v) for v in tab["ID"]], tab["STATUS"]))
    notes = dict(zip([str(v) for v in tab["ID"]], [str(n) for n in tab["NOTES"]]))
    assert all(status[i] == "ok" for i in "1234567")
    assert all("crowded: fitted in a part of 2 of its group of 4 (--max-group 3)" in notes[i] for i in "4567")
    assert not any("crowded" in notes[i] for i in "123")
    assert len({int(g) for g, i in zip(tab["GROUP"], tab["ID"]) if str(i) in "4567"}) == 2
    for i in "123":
        _, flux, var, *_ = read_source_spectrum(out / "sources" / f"{i}.fits", "DEBLEND")
        spec = truth.sources[int(i) - 1].spectrum
        assert abs(np.median(flux / spec) - 1) < 0.02
    with fits.open(tmp_path / "model.fits") as m, fits.open(tmp_path / "resid.fits") as r, fits.open(cube) as c:
        assert m["DATA"].shape == c["DATA"].shape and r["STAT"].shape == c["DATA"].shape
        for key in ("CTYPE1", "CTYPE3", "CRVAL3", "CD3_3", "CRPIX1"):
            assert m["DATA"].header[key] == c["DATA"].header[key]
        resid = r["DATA"].data[:, 2:11, 2:11]  # around source 1: noise only
        assert 0.8 < np.nanstd(resid) / 0.5 < 1.2
        assert np.all(m["DATA"].data[:, 18:26, 18:26].sum(axis=0) > 0)  # the cut group is modelled
    first = fits.getdata(out / "sources" / "1.fits", "SPE_DEBLEND_DATA").copy()
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "again", "--max-group", "3"], capfd)
    assert np.array_equal(first, fits.getdata(tmp_path / "again" / "sources" / "1.fits", "SPE_DEBLEND_DATA"))


def test_psf_fitted_on_the_field_without_fsf_keywords(tmp_path, capfd):
    """Without FSF keywords and --fwhm, deblend fits the PSF on the field's stars (issue 15: it
    used to stop with "no star to fit it on"); a named star still works and an unknown one is a
    one-line error."""
    cube, cat, truth = _field(tmp_path, fsf=False, star=True)
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "out", "--max-group", "4"], capfd)
    assert res.exit_code == 0, res.stderr
    for i in "123":
        _, flux, var, *_ = read_source_spectrum(tmp_path / "out" / "sources" / f"{i}.fits", "DEBLEND")
        assert abs(np.median(flux / truth.sources[int(i) - 1].spectrum) - 1) < 0.02
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "out", "--psf-star", "nope"], capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1 and "not in the catalogue" in res.stderr
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "out", "--psf-star", "star", "--max-group", "4"], capfd)
    assert res.exit_code == 0, res.stderr
    with open_cube(cube) as c:
        psf = fit_psf_on_star(c, 44.0, 44.0)
        auto = resolve_psf(c)
    for model in (psf, auto):
        assert np.max(np.abs(model.fwhm(truth.wave) / truth.fwhm_arcsec - 1)) < 0.03
        assert abs(model.beta(5000.0) - 2.8) < 0.3


def test_nonneg_background_and_segment_model(tmp_path, capfd):
    """--nonneg, --background and a sharp ancillary image with --model segment all run and give
    sensible fluxes for isolated sources."""
    cube, cat, truth = _field(tmp_path)
    # The "HST" image: the sources' intrinsic light (points) on the cube grid, with its WCS.
    with fits.open(cube) as h:
        wcs_hdr = {k: h["DATA"].header[k] for k in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1",
                                                     "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CUNIT1",
                                                     "CUNIT2")}
    from ifu_extract.psf import gaussian_image

    img = sum(s.spectrum.mean() * gaussian_image((40, 40), s.x, s.y, 0.5) for s in truth.sources)
    fits.PrimaryHDU(img, fits.Header(wcs_hdr)).writeto(tmp_path / "hst.fits")
    seg = np.zeros((40, 40), np.int32)
    for k, s in enumerate(truth.sources, start=1):
        seg[int(round(s.y)) - 1:int(round(s.y)) + 2, int(round(s.x)) - 1:int(round(s.x)) + 2] = k
    fits.PrimaryHDU(seg, fits.Header(wcs_hdr)).writeto(tmp_path / "seg.fits")
    for extra in (["--nonneg", "--background"], ["--model", "segment", "--image", tmp_path / "hst.fits",
                                                 "--segmap", tmp_path / "seg.fits"]):
        out = tmp_path / ("o" + str(len(extra)))
        res = run_main(["deblend", cube, cat, "-o", out, *extra], capfd)
        assert res.exit_code == 0, res.stderr
        for i in "1237":
            _, flux, var, *_ = read_source_spectrum(out / "sources" / f"{i}.fits", "DEBLEND")
            ratio = np.median(flux / truth.sources[int(i) - 1].spectrum)
            # segment: the "HST" sources are 0.1" Gaussians sampled on 0.2" spaxels, taken as
            # intrinsic light, so the models are a little broader than the truth.
            assert abs(ratio - 1) < 0.05, (extra, i, ratio)
            if "--nonneg" in extra:
                assert np.all(flux[np.isfinite(flux)] >= 0)


def test_bad_options(tmp_path, capfd):
    cube, cat, _ = _field(tmp_path)
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "o", "--overlap", "1.5"], capfd)
    assert res.exit_code == 2
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "o", "--masks", "a.fits", "--segmap", "b.fits"], capfd)
    assert res.exit_code == 2 and "exclusive" in res.stderr
    res = run_main(["deblend", cube, cat, "-o", tmp_path / "o", "--image", tmp_path / "missing.fits"], capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1 and "missing.fits" in res.stderr


# ------------------------------------------------------------------------- explicit files (Galaxy)
def _gx_deblend(extra):
    from conftest import TEST_DATA

    return ["deblend", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt", "--fwhm", 0.7, *extra]


def test_explicit_files_write_what_the_folder_form_writes(tmp_path, capfd, monkeypatch):
    """--source F --sources-out D --summary S (the wrapper's form) writes the same bytes as
    -o OUTDIR on the folder layout of extract: the given Source file updated (a copy of it), a new
    one for the other object; the input is left as it is."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")   # same DATE in both runs
    from conftest import TEST_DATA

    seg = ["--segmap", TEST_DATA / "gx_segmap.fits"]
    folder = tmp_path / "folder"
    (folder / "sources").mkdir(parents=True)
    src = TEST_DATA / "gx_source_1.fits"
    (folder / "sources" / "1.fits").write_bytes(src.read_bytes())
    res = run_main(_gx_deblend([*seg, "-o", folder]), capfd)
    assert res.exit_code == 0, res.stderr
    before = src.read_bytes()
    res = run_main(_gx_deblend([*seg, "--source", src, "--sources-out", tmp_path / "out",
                                "--summary", tmp_path / "d.tsv"]), capfd)
    assert res.exit_code == 0, res.stderr
    assert src.read_bytes() == before
    for name in ("1.fits", "3.fits"):
        assert (tmp_path / "out" / name).read_bytes() == (folder / "sources" / name).read_bytes()
    with fits.open(tmp_path / "out" / "1.fits") as h:
        assert "SPE_MUSE_WHITE_DATA" in h and "SPE_DEBLEND_DATA" in h   # updated, not replaced
    assert (folder / "deblend.tsv").read_text().replace("sources/", "out/") == (tmp_path / "d.tsv").read_text()


def test_pass_through_copies_the_source_files_unchanged(tmp_path, capfd):
    """--pass-through (the workflow's off switch): the Source files are copied as they are, named
    by their ID; nothing is fitted and no summary is written."""
    from conftest import TEST_DATA

    given = tmp_path / "dataset_7.dat"
    given.write_bytes((TEST_DATA / "gx_source_3.fits").read_bytes())
    res = run_main(_gx_deblend(["--source", given, "--sources-out", tmp_path / "out", "--pass-through"]), capfd)
    assert res.exit_code == 0, res.stderr
    assert "deblending is off: 1 Source files copied unchanged" in res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["3.fits"]
    assert (tmp_path / "out" / "3.fits").read_bytes() == given.read_bytes()


def test_library_errors_name_parameters_and_the_command_its_options(tmp_path, capfd):
    """The library says "max_group", the command "--max-group" (the click parameter of that name)."""
    from conftest import TEST_DATA
    from ifu_extract.catalog import read_catalog

    with open_cube(TEST_DATA / "gx_minicube.fits") as cube, pytest.raises(InputError) as err:
        deblend_catalog(cube, read_catalog(TEST_DATA / "gx_catalog.txt"), PSFModel("moffat", (0.7,)),
                        config=DeblendConfig(max_group=0))
    assert err.value.path == "max_group"
    res = run_main(_gx_deblend(["--psf-star", "nosuch", "-o", tmp_path / "o"]), capfd)
    assert res.exit_code == 1
    assert res.err_lines == ["ifu-extract: error: --psf-star: ID 'nosuch' is not in the catalogue; "
                             "give the ID of a star listed in CATALOG"]


def test_model_and_residual_cubes_carry_checksums_and_add_up_to_the_cube(tmp_path, capfd, monkeypatch):
    """The model and residual cubes are streamed through the one cube writer (fitsio): valid
    CHECKSUM/DATASUM, residual + model == cube on the fitted channels, STAT copied, no scratch
    file left; a residual cube alone works too (the model is summed in a scratch file)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")   # same DATE in both runs
    from conftest import TEST_DATA

    seg = ["--segmap", TEST_DATA / "gx_segmap.fits", "--wave-range", 7100, 7200]
    res = run_main(_gx_deblend([*seg, "-o", tmp_path / "a", "--model-cube", tmp_path / "m.fits",
                                "--residual-cube", tmp_path / "r.fits"]), capfd)
    assert res.exit_code == 0, res.stderr
    res = run_main(_gx_deblend([*seg, "-o", tmp_path / "b", "--residual-cube", tmp_path / "r_only.fits"]), capfd)
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "m.fits", "r.fits", "r_only.fits"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # a wrong checksum is a warning of astropy
        with fits.open(tmp_path / "m.fits", checksum=True) as m, fits.open(tmp_path / "r.fits", checksum=True) as r, \
                fits.open(TEST_DATA / "gx_minicube.fits") as c:
            assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in (*m, *r))
            assert m[0].header["IFXPROD"] == "DEBLEND_MODEL" and r[0].header["IFXPROD"] == "DEBLEND_RESIDUAL"
            n = m["DATA"].data.shape[0]
            z0 = int(round(-r["DATA"].header["CRPIX3"] + c["DATA"].header["CRPIX3"]))
            cube = c["DATA"].data[z0:z0 + n].astype(np.float32)
            np.testing.assert_array_equal(r["DATA"].data, cube - m["DATA"].data)
            np.testing.assert_array_equal(r["STAT"].data, c["STAT"].data[z0:z0 + n].astype(np.float32))
            assert np.abs(m["DATA"].data).max() > 0
    assert (tmp_path / "r_only.fits").read_bytes() == (tmp_path / "r.fits").read_bytes()


def test_deblend_summary_carries_the_fit_quality(blend_runs):
    """deblend.tsv has each object's χ²/dof (DBCHI2) and poor-model flag (DBPOOR), the same
    values as its Source file's keywords, so a table of thousands can be sorted by them."""
    from ifu_extract.deblend.joint import POOR_CHI2

    for run in blend_runs[1]:
        tab = Table.read(run["out"] / "deblend.tsv", format="ascii.tab")
        assert {"DBCHI2", "DBPOOR"} <= set(tab.colnames)
        for row in tab:
            hdr = fits.getheader(run["out"] / "sources" / f"{row['ID']}.fits", "SPE_DEBLEND_DATA")
            assert row["DBCHI2"] == pytest.approx(hdr["DBCHI2"], rel=1e-6) and row["DBCHI2"] > 0
            assert str(row["DBPOOR"]) == str(hdr["DBPOOR"]) == str(hdr["DBCHI2"] > POOR_CHI2)


def test_large_groups_cut_into_parts():
    """A chain of 15 sources is one group; above --max-group it is cut at the median along its
    long axis until every part is small enough: parts of 4, 4, 4 and 3 for a cap of 4, each
    contiguous, every source in exactly one."""
    from ifu_extract.deblend.groups import split_large_groups

    x = 5.0 + 5.0 * np.arange(15)
    y = np.full(15, 10.0)
    rows = list(range(15))
    groups, _ = find_groups(x, y, {}, (20, 90), 5.0, rows)
    assert groups == [rows]
    out, sizes = split_large_groups(groups, x, y, 4)
    assert sorted(len(g) for g in out) == [3, 4, 4, 4]
    assert sorted(i for g in out for i in g) == rows
    assert all(g == list(range(g[0], g[0] + len(g))) for g in out)   # contiguous along x
    assert sizes == {i: tuple(rows) for i in rows}
    assert split_large_groups(groups, x, y, 15) == (groups, {})


def test_crowded_chain_is_deblended(tmp_path, capfd):
    """15 sources 1″ apart in a row (one group at the default footprint, above --max-group 10):
    every source is deblended, in parts of the group, with a note saying so (the group used to be
    refused: no spectrum at all).  Away from the cut the fluxes are within 6 %; the sources next
    to it lose or gain their cut-away neighbours' light: 8-40 % here, which the note says."""
    wave = 4750.0 + 1.25 * np.arange(60)
    spec = synth.continuum_spectrum(wave, 30.0, 0.3)
    pos = [(6.0 + 5.0 * i + 0.13 * (i % 3), 12.0 + 0.2 * (i % 2)) for i in range(15)]
    srcs = [synth.SynthSource(str(i + 1), x, y, spec * (1 + 0.1 * i)) for i, (x, y) in enumerate(pos)]
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=(60, 24, 84), sigma=0.5, seed=9)
    path = tmp_path / "chain.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)
    cat = _catalog(tmp_path / "cat.txt", path, pos)
    res = run_main(["deblend", path, cat, "-o", tmp_path / "out"], capfd)
    assert res.exit_code == 0, res.stderr
    tab = Table.read(tmp_path / "out" / "deblend.tsv", format="ascii.tab")
    assert list(tab["STATUS"]) == ["ok"] * 15
    assert all("crowded: fitted in a part of" in str(n) for n in tab["NOTES"])
    err = []
    for i in range(15):
        _, flux, *_ = read_source_spectrum(tmp_path / "out" / "sources" / f"{tab['ID'][i]}.fits", "DEBLEND")
        err.append(abs(np.median(flux / truth.sources[i].spectrum) - 1))
    print("\nchain flux errors:", " ".join(f"{e:.3f}" for e in err))
    cut = [5, 6, 7, 8]   # parts 1-7 and 8-15 (0-based 0-6 and 7-14), two each side of the cut
    assert max(e for i, e in enumerate(err) if i not in cut) < 0.06
    assert max(err) < 0.5

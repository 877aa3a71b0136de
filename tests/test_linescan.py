"""The line scan: a calibrated 3-D matched filter, one row per line, lines grouped into objects,
their narrow-band images as extraction weights (issues 4 and 16).  Synthetic cubes with known
truth, and injections into the real MUSE minicube shipped with mpdaf (with DATA negated, every
line found is false)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from ifu_extract import synth
from ifu_extract.contsub import subtract_continuum
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import InputError
from ifu_extract.emitters import emitter_image, extract_emitter
from ifu_extract.linescan import DEFAULT_SKY_WINDOWS, ScanConfig, scan_lines
from ifu_extract.psf import psf_from_cube
from linescan_helpers import EMITTER, LINE, LINE_SIGMA, SHAPE, make_cube as _cube

def test_line_emitter_found_and_flux_recovered(tmp_path):
    """A line-only emitter at S/N 10 in its narrow band is found, at its wavelength, and its
    MUSE_NB spectrum holds >= 80 % of the line flux; the continuum galaxy is not an emitter."""
    path = tmp_path / "cube.fits"
    flux, truth = _cube(path, seed=4)
    with open_cube(path) as cube:
        psf = psf_from_cube(cube)
        scan = scan_lines(cube, psf=psf)
        cat = scan.catalog
        print(f"\nline scan: {len(cat)} object(s), {len(scan.lines)} line(s), "
              f"{int(scan.scanned.sum())} channels scanned; S/N 10 in a 5 A band")
        print(scan.lines["ID", "X", "Y", "LINE_WAVE", "LINE_FLUX", "LINE_FLUX_ERR", "SNR", "EXTENT"])
        assert len(cat) == 1 and len(scan.lines) == 1
        e = cat[0]
        assert np.hypot(e["X"] - EMITTER[0], e["Y"] - EMITTER[1]) < 1.0
        assert abs(e["LBDA"] - LINE) <= 1.0 and e["NLINES"] == 1
        # The 3-D filter sees more of the line than a 5 A band: S/N above 10, not wildly.
        assert 10.0 < e["SNR"] < 20.0
        line = scan.lines[0]
        # Flux of the matched filter (PSF x 4 A Gaussian for a 3.5 A line): within 20 %, and the
        # error is its S/N's.
        print(f"line flux {line['LINE_FLUX']:.1f} +- {line['LINE_FLUX_ERR']:.1f}, true {flux:.1f}")
        assert abs(line["LINE_FLUX"] / flux - 1) < 0.2
        assert line["LINE_FLUX"] / line["LINE_FLUX_ERR"] == pytest.approx(line["SNR"], rel=1e-3)
        # A point source: the half-peak S/N area is about sqrt(2) PSF FWHM across.
        assert 0.5 < line["EXTENT"] < 2.0
        img = emitter_image(cube, e["LBDA"], scan.config)
        assert img.shape == (40, 40) and img.wcs is not None and img.var is not None
        py, px = np.unravel_index(np.nanargmax(img.data), img.shape)   # noisy: within 1.5 spaxels
        assert np.hypot(px - EMITTER[0], py - EMITTER[1]) <= 1.5
        sp = extract_emitter(cube, e["X"], e["Y"], img, psf=psf)
        wave = cube.wave
        win = np.abs(wave - LINE) < 4 * LINE_SIGMA
        dw = float(np.median(cube.dwave))
        cont = np.nanmedian(sp.flux[(np.abs(wave - LINE) > 10) & (np.abs(wave - LINE) < 60)])
        got = float(np.nansum(sp.flux[win] - cont)) * dw
        err = float(np.sqrt(np.nansum(sp.var[win]))) * dw
        print(f"line flux recovered: {got / flux:.3f} +- {err / flux:.3f} of {flux:.1f}")
        assert got >= 0.8 * flux


def test_pure_noise_at_most_one_false_detection(tmp_path):
    path = tmp_path / "noise.fits"
    _cube(path, seed=9, with_emitter=False)  # the continuum galaxy, and noise
    with open_cube(path) as cube:
        scan = scan_lines(cube, psf=psf_from_cube(cube))
    print(f"\npure noise: {len(scan.lines)} false line(s) in {int(scan.scanned.sum())} channels")
    assert len(scan.catalog) <= 1
    data = synth.make_cube([], shape=SHAPE, sigma=1.0, seed=21)
    synth.cube_hdulist(*data[:4]).writeto(tmp_path / "flat.fits")
    with open_cube(tmp_path / "flat.fits") as cube:
        assert len(scan_lines(cube, psf=psf_from_cube(cube)).catalog) <= 1


def test_sky_windows_are_skipped(tmp_path):
    """Channels of a sky window carry no weight and hold no line: a line inside one is not
    reported (the built-in list holds the bright night-sky lines; any window can be given)."""
    assert any(lo < 5577.3 < hi for lo, hi in DEFAULT_SKY_WINDOWS)
    assert any(lo < 6300.3 < hi for lo, hi in DEFAULT_SKY_WINDOWS)
    assert any(lo < 6363.8 < hi for lo, hi in DEFAULT_SKY_WINDOWS)
    assert any(lo < 5890.0 < hi and lo < 5896.0 < hi for lo, hi in DEFAULT_SKY_WINDOWS)
    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        psf = psf_from_cube(cube)
        window = (LINE - 6.0, LINE + 6.0)  # as if the line sat on a sky line
        scan = scan_lines(cube, psf=psf, config=ScanConfig(sky_windows=DEFAULT_SKY_WINDOWS + (window,)))
        plain = scan_lines(cube, psf=psf)
        wave = cube.wave
    near = [np.abs(np.asarray(t.lines["LINE_WAVE"]) - LINE) <= 6.0 for t in (plain, scan)]
    assert near[0].sum() == 1 and near[1].sum() == 0
    inside = (wave >= window[0]) & (wave <= window[1])
    assert inside.sum() >= 8 and not scan.scanned[inside].any() and plain.scanned[inside].all()


def test_scan_on_a_contsub_cube_and_bad_options(tmp_path):
    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    subtract_continuum(path, tmp_path / "cs.fits", method="median", median_width=100.0)
    with open_cube(path) as cube, open_cube(tmp_path / "cs.fits") as cs:
        scan = scan_lines(cube, contsub=cs, psf=psf_from_cube(cube),
                          config=ScanConfig(side_width=0.0, continuum_width=0.0))
        best = scan.catalog[np.argmax(scan.catalog["SNR"])]
        assert abs(best["LBDA"] - LINE) <= 1.0 and best["SNR"] > 8
        with pytest.raises(InputError, match="narrower than one channel"):
            scan_lines(cube, config=ScanConfig(window=0.5))
        with pytest.raises(InputError, match="empty"):
            scan_lines(cube, config=ScanConfig(sky_windows=((5000.0, 4990.0),)))


# ---------------------------------------------------------------------- one row per line
def test_two_lines_of_one_object_are_one_object_two_rows(tmp_path):
    """Lines are merged in position *and* wavelength: an emitter with two lines is one object
    with two rows in the line table; another emitter at the wavelength of one of them, 2.4"
    away, is another object."""
    wave = 4750.0 + 1.25 * np.arange(SHAPE[0])
    a = synth.emission_line(wave, 4920.0, 1.5, 1.0) + synth.emission_line(wave, 5210.0, 1.5, 1.0)
    b = synth.emission_line(wave, 5210.0, 1.5, 1.0)
    flux = 900.0  # S/N ~ 15 each (sigma 1)
    srcs = [synth.SynthSource("A", 12.0, 20.0, a * flux), synth.SynthSource("B", 24.0, 20.0, b * flux)]
    data, var, dq, hdr, _ = synth.make_cube(srcs, shape=SHAPE, sigma=1.0, seed=3)
    synth.cube_hdulist(data, var, dq, hdr).writeto(tmp_path / "two.fits")
    with open_cube(tmp_path / "two.fits") as cube:
        scan = scan_lines(cube, psf=psf_from_cube(cube))
    print(scan.lines["LINE_ID", "ID", "X", "Y", "LINE_WAVE", "SNR"])
    lines = scan.lines[scan.lines["SNR"] > 10]           # the injected lines are at S/N ~ 30
    objs = scan.catalog[np.isin(scan.catalog["ID"], lines["ID"])]
    assert len(objs) == 2 and len(lines) == 3
    ida = objs["ID"][np.argmin(np.abs(objs["X"] - 12.0))]
    mine = lines[lines["ID"] == ida]
    assert len(mine) == 2 and sorted(np.round(mine["LINE_WAVE"], -1)) == [4920.0, 5210.0]
    assert list(mine["LINE_ID"]) == [f"{ida}_1", f"{ida}_2"]
    row = objs[objs["ID"] == ida][0]
    assert row["NLINES"] == 2 and min(abs(row["LBDA"] - 4920.0), abs(row["LBDA"] - 5210.0)) < 1.5
    assert len(set(lines["LINE_ID"])) == 3


def test_calibrated_significance_on_correlated_noise(tmp_path):
    """STAT that misses correlated noise (the resampling of real cubes) makes the raw S/N
    over-dispersed; the calibration brings it back: the raw spread is measured, and the false
    lines of the correlated-noise cube are as few as those of white noise."""
    rng = np.random.default_rng(5)
    counts = {}
    for name, smooth in (("white", False), ("correlated", True)):
        data, var, dq, hdr, _ = synth.make_cube([], shape=SHAPE, sigma=1.0, seed=11)
        if smooth:
            from scipy import ndimage
            noise = rng.standard_normal(SHAPE)
            # 3x3 spatial boxcar scaled back to unit variance per voxel: STAT stays right per
            # voxel but neighbours are correlated, as in a resampled cube.
            data = (ndimage.uniform_filter(noise, size=(1, 3, 3), mode="nearest") * 3.0).astype(np.float32)
        synth.cube_hdulist(data, var, dq, hdr).writeto(tmp_path / f"{name}.fits")
        with open_cube(tmp_path / f"{name}.fits") as cube:
            scan = scan_lines(cube, psf=psf_from_cube(cube), config=ScanConfig(snr=4.5))
        counts[name] = (float(np.nanmedian(scan.spread)), len(scan.lines), scan.n_false)
    print(f"\n(raw spread, lines, negated lines) at S/N 4.5: {counts}")
    assert counts["white"][0] == pytest.approx(1.0, abs=0.08)
    assert counts["correlated"][0] > 1.5                    # what STAT misses
    # Gaussian random-field tail: about 0.5 peaks above 4.5 per pass in this volume; without the
    # calibration the correlated cube's raw S/N of 4.5 would be 2.9 sigma (hundreds of peaks).
    for name in counts:
        assert counts[name][1] + counts[name][2] <= 5, name


# ---------------------------------------------------------------------- the real minicube
@pytest.fixture(scope="module")
def minicube():
    import os

    import mpdaf

    from ifu_extract.linescan import ArrayCube

    path = os.path.join(os.path.dirname(mpdaf.__file__), "data", "sdetect", "minicube.fits")
    cube = open_cube(path)
    data, var = cube.window(0, cube.nx, 0, cube.ny)
    yield cube, data, var, ArrayCube
    cube.close()


def _inject(cube, var, seed, n, snr_range, fwhm=0.7):
    """*n* point-like lines (Moffat PSF x Gaussian line), each in its own wavelength slot away
    from the sky windows, flux set by the S/N of the optimal estimate computed from STAT."""
    from ifu_extract.synth import moffat_image

    rng = np.random.default_rng(seed)
    wave = cube.wave
    edges = np.linspace(wave[0] + 30, wave[-1] - 30, n + 1)
    model = np.zeros(var.shape, dtype=np.float32)
    truth = []
    for k in range(n):
        while True:
            lam = rng.uniform(edges[k] + 25, edges[k + 1] - 25)
            if all(not (a - 6 <= lam <= b + 6) for a, b in DEFAULT_SKY_WINDOWS):
                break
        x, y = rng.uniform(2, cube.nx - 3), rng.uniform(2, cube.ny - 3)
        s = rng.uniform(2.5, 6.0) / 2.3548
        z = np.flatnonzero(np.abs(wave - lam) < 5 * s)
        m = (np.exp(-0.5 * ((wave[z] - lam) / s) ** 2) / (np.sqrt(2 * np.pi) * s))[:, None, None] \
            * moffat_image(var.shape[1:], x, y, fwhm / cube.pixscale, 2.8)[None]
        v = var[z]
        ok = np.isfinite(v) & (v > 0)
        snr = rng.uniform(*snr_range)
        model[z] += snr / np.sqrt(np.sum(np.where(ok, m * m / np.where(ok, v, 1), 0))) * m
        truth.append((x, y, lam, snr))
    return np.array(truth), model


def _found(truth, lines, pixscale):
    ok = []
    for x, y, lam, _ in truth:
        d = np.hypot(lines["X"] - x, lines["Y"] - y) * pixscale
        ok.append(bool(np.any((d <= 0.8) & (np.abs(lines["LINE_WAVE"] - lam) <= 5.0))))
    return np.array(ok)


def test_minicube_injections_and_negated_purity(minicube):
    """Real MUSE data: injected point-like lines are recovered at the default threshold, and the
    cube with DATA negated gives at most 5 lines (all false) at that threshold, which needs to
    climb little above its floor (5) on this cube.  The bench (bench/linescan_bench.py)
    measures the full completeness curve."""
    from ifu_extract.linescan import ScanConfig as Cfg

    cube, data, var, ArrayCube = minicube
    cfg = Cfg(fwhm=0.7)
    real = scan_lines(ArrayCube(data, var, cube), config=cfg)
    fixed = Cfg(fwhm=0.7, snr=real.threshold, max_false=None)
    neg = scan_lines(ArrayCube(-data, var, cube), config=fixed)
    print(f"\nminicube: threshold {real.threshold}; negated minicube: {len(neg.lines)} false lines "
          f"there (raw S/N spread {np.nanmedian(neg.spread):.2f})")
    assert len(neg.lines) == real.n_false <= 5 and real.threshold <= 5.5
    truths, found, reported = [], [], None
    for seed in (1, 2):
        truth, model = _inject(cube, var, seed, 30, (8.0, 20.0))
        scan = scan_lines(ArrayCube(data + model, var, cube), config=cfg)
        truths.append(truth)
        found.append(_found(truth, scan.lines, cube.pixscale))
        reported = scan.n_false
    truth, found = np.concatenate(truths), np.concatenate(found)
    hi = truth[:, 3] >= 14
    print(f"recovered: S/N 8-20 {found.mean():.2f}, S/N 14-20 {found[hi].mean():.2f} "
          f"({len(found)} injections); NFALSE reported {reported}")
    # Measured here: 0.93 and 1.00 (seeds 1, 2; 0.85 and 0.94 before the compensated filter,
    # 0.48 and 0.75 before the sky residual and the spaxel spread in wavelength blocks); the
    # bench measures the full curve.  The S/N is
    # STAT's, which the data's noise exceeds about 1.4 times in this cube.
    assert found.mean() >= 0.75
    assert found[hi].mean() >= 0.88
    # The negated pass of the injected cubes finds as few false lines.
    assert reported <= 5


def test_negated_pass_is_the_negated_cube(minicube):
    """The purity pass is exactly the scan of the cube with DATA negated (the median, the filter
    and the spreads are odd or even in the data)."""
    cube, data, var, ArrayCube = minicube
    cfg = ScanConfig(fwhm=0.7, snr=4.0, max_false=None, wave_range=(5200.0, 7400.0))
    a = scan_lines(ArrayCube(data, var, cube), config=cfg)
    b = scan_lines(ArrayCube(-data, var, cube), config=cfg)
    assert len(a.false_lines) == len(b.lines) and len(b.false_lines) == len(a.lines)
    assert len(a.lines) + len(b.lines) > 0
    for t1, t2 in ((a.false_lines, b.lines), (a.lines, b.false_lines)):
        assert np.allclose(t1["LINE_WAVE"], t2["LINE_WAVE"]) and np.allclose(t1["SNR"], t2["SNR"], rtol=1e-4)


def test_detect_cli_writes_one_row_per_line(tmp_path, capfd):
    """``detect --line-scan --lines``: the catalogue gets one row per object, the line table one
    row per line with its object's ID, and the report says how many false lines to expect."""
    from conftest import run_main

    wave = 4750.0 + 1.25 * np.arange(SHAPE[0])
    a = synth.emission_line(wave, 4920.0, 1.5, 1.0) + synth.emission_line(wave, 5210.0, 1.5, 1.0)
    data, var, dq, hdr, _ = synth.make_cube([synth.SynthSource("A", 12.0, 20.0, a * 900.0)],
                                            shape=SHAPE, sigma=1.0, seed=3)
    synth.cube_hdulist(data, var, dq, hdr).writeto(tmp_path / "a.fits")
    res = run_main(["detect", tmp_path / "a.fits", "-o", tmp_path / "cat.tsv", "--line-scan",
                    "--lines", tmp_path / "lines.ecsv", "--line-snr", "8", "--line-max-false", "off"],
                   capfd)
    assert res.exit_code == 0, res.stderr
    assert "false lines expected" in res.stderr
    lines = Table.read(tmp_path / "lines.ecsv")
    cat = Table.read(tmp_path / "cat.tsv", format="ascii.tab")
    assert len(lines) == 2 and len(set(lines["ID"])) == 1
    oid = lines["ID"][0]
    assert oid in [str(i) for i in cat["ID"]]
    assert lines.meta["SNRTHR"] == 8.0 and lines.meta["MAXFALSE"] == -1 and "NFALSE" in lines.meta
    res = run_main(["detect", tmp_path / "a.fits", "-o", tmp_path / "c3.tsv", "--line-scan",
                    "--line-max-false", "many"], capfd)
    assert res.exit_code == 2 and "--line-max-false" in res.stderr and "'off'" in res.stderr
    res = run_main(["detect", tmp_path / "a.fits", "-o", tmp_path / "c2.tsv", "--lines", tmp_path / "l2.tsv"],
                   capfd)
    assert res.exit_code == 2 and "--line-scan" in res.stderr


# ------------------------------------------------------------- calibration on real-data traits
def _sky_residual_cube(path, seed, *, offset=0.6, red_boost=1.0):
    """Noise cube (sigma 1, STAT = 1) with one emitter at S/N ~ 9 (STAT) and, as on real MUSE
    cubes, a sky residual STAT does not know: a random offset per channel shared by every spaxel
    (rms *offset* sigma) and, with *red_boost*, extra noise in one quadrant of the red half."""
    from ifu_extract.synth import moffat_image

    rng = np.random.default_rng(seed)
    data, var, dq, hdr, _ = synth.make_cube([], shape=SHAPE, sigma=1.0, seed=seed)
    nz, ny, nx = data.shape
    data += (offset * rng.standard_normal(nz)).astype(data.dtype)[:, None, None]
    if red_boost > 1.0:
        red = slice(nz // 2, nz)
        extra = np.sqrt(red_boost ** 2 - 1.0)
        data[red, : ny // 2, : nx // 2] += (extra * rng.standard_normal((nz - nz // 2, ny // 2, nx // 2))
                                            ).astype(data.dtype)
    wave = 4750.0 + 1.25 * np.arange(nz)
    m = (synth.emission_line(wave, LINE, 1.5, 1.0)[:, None, None]
         * moffat_image((ny, nx), 28.0, 28.0, 0.7 / 0.2, 2.8)[None])
    snr1 = float(np.sqrt(np.sum(m * m)))
    data += (9.0 / snr1 * m).astype(data.dtype)
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)


def test_sky_residual_shared_by_the_field_is_removed(tmp_path):
    """A residual a channel shares over the field (0.6 sigma rms per spaxel; a PSF-sized filter
    adds it up coherently) makes every spaxel's S/N noisier along wavelength; removing the median
    residual of the faint spaxels gives the emitter back its S/N.  Without the correction its
    calibrated S/N is lower by the spaxel spread the residual causes."""
    path = tmp_path / "sky.fits"
    _sky_residual_cube(path, seed=5)
    with open_cube(path) as cube:
        # The plain PSF filter: the compensated one (background_box) removes much of a residual
        # flat over the field by itself; this is the sky-residual step's own effect.
        on = scan_lines(cube, config=ScanConfig(fwhm=0.7, max_false=None, background_box=0.0))
        off = scan_lines(cube, config=ScanConfig(fwhm=0.7, max_false=None, background_box=0.0,
                                                 sky_residual=False))

    def emitter_snr(scan):
        t = scan.lines
        hit = (np.hypot(t["X"] - 28.0, t["Y"] - 28.0) < 2) & (np.abs(t["LINE_WAVE"] - LINE) < 3)
        return float(np.max(t["SNR"][hit])) if hit.any() else 0.0

    s_on, s_off = emitter_snr(on), emitter_snr(off)
    print(f"\nemitter S/N: {s_on:.2f} corrected, {s_off:.2f} not; spaxel spread "
          f"{np.median(on.spaxel_spread):.2f} vs {np.median(off.spaxel_spread):.2f}")
    assert np.median(on.spaxel_spread) < 1.1 < 1.4 < np.median(off.spaxel_spread)
    assert s_on > 1.3 * s_off and s_on > 6.0
    # The calibrated S/N of the noise has unit spread again: the negated pass finds what
    # Gaussian noise gives at the threshold in this cube (0-3 lines), no more.
    print(f"false lines: {list(on.false_lines['SNR'])} corrected, {list(off.false_lines['SNR'])} not")
    assert on.n_false <= 3 and np.all(on.false_lines["SNR"] < 5.5)


def test_spaxel_spread_in_wavelength_blocks(tmp_path):
    """Noise that one part of the field has only in the red (1.8 x STAT in one quadrant, red
    half) is calibrated where it is: the spaxel spread measured in blocks of wavelength is ~1.8
    there and ~1 in the blue, and no false line comes from that quadrant's red.  (Blocks of 150
    Angstrom here: the cube spans 600; the default is 1000.)"""
    path = tmp_path / "red.fits"
    _sky_residual_cube(path, seed=6, offset=0.0, red_boost=1.8)
    with open_cube(path) as cube:
        blocks = scan_lines(cube, config=ScanConfig(fwhm=0.7, max_false=None, spread_block=150))
        whole = scan_lines(cube, config=ScanConfig(fwhm=0.7, max_false=None, spread_block=0))
        nz = cube.nwave
        wave = cube.wave
    sp = blocks.spaxel_spread
    q = (slice(4, 16), slice(4, 16))               # inside the noisy quadrant, away from its edge
    first, last = sp[0][q], sp[-1][q]
    print(f"\nblocks: {sp.shape[0]}; quadrant spread blue {np.median(first):.2f}, red "
          f"{np.median(last):.2f}; whole range {np.median(whole.spaxel_spread[0][q]):.2f}")
    assert sp.shape[0] >= 2 and whole.spaxel_spread.shape[0] == 1
    assert np.median(first) < 1.15 and 1.5 < np.median(last) < 2.1
    red = wave[nz // 2]

    def quadrant_red(t):
        return int(np.sum((t["X"] < 20) & (t["Y"] < 20) & (t["LINE_WAVE"] > red)))

    assert quadrant_red(blocks.lines) + quadrant_red(blocks.false_lines) <= 1
    assert quadrant_red(whole.lines) + quadrant_red(whole.false_lines) >= 3


def test_threshold_raised_to_the_false_lines_asked(minicube):
    """``max_false``: the threshold is the lowest S/N >= ``snr`` at which the negated cube holds at
    most that many lines; the same lines as a fixed threshold there, and None keeps ``snr``."""
    cube, data, var, ArrayCube = minicube
    base = dict(fwhm=0.7, snr=3.5, wave_range=(6000.0, 9000.0))
    free = scan_lines(ArrayCube(data, var, cube), config=ScanConfig(max_false=None, **base))
    capped = scan_lines(ArrayCube(data, var, cube), config=ScanConfig(max_false=2, **base))
    fs = np.sort(np.asarray(free.false_lines["SNR"]))[::-1]
    print(f"\n{len(fs)} false lines at S/N 3.5; threshold for <= 2: {capped.threshold}")
    assert free.threshold == 3.5 and len(fs) > 2
    assert capped.n_false <= 2 and capped.threshold == pytest.approx(fs[2] + 0.001, abs=1e-6)
    assert capped.lines.meta["SNRTHR"] == capped.threshold and capped.lines.meta["MAXFALSE"] == 2
    keep = np.asarray(free.lines["SNR"]) >= capped.threshold
    assert np.allclose(np.sort(capped.lines["SNR"]), np.sort(np.asarray(free.lines["SNR"])[keep]))

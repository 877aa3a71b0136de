"""``contsub``: per-spaxel continuum subtraction (library, CLI, outputs), against known truth.

The synthetic field holds three galaxies whose continua differ in level, slope and curvature,
one with absorption features, two with emission lines, under a Moffat PSF whose width changes
with wavelength, with noise whose variance rises at four sky lines, 0.3 % NaN voxels, an empty
spaxel and a spaxel with only three usable channels.  The truth is known voxel by voxel: the
smooth continuum, the line-only and the absorption-only parts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from conftest import run_cli, run_main

from ifu_extract import synth
from ifu_extract.contsub import (
    fit_continuum,
    polyfit_continuum_reference,
    subtract_continuum,
)
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import InputError

N_WAVE, NY, NX = 1200, 24, 24
WAVE0, DWAVE = 4750.0, 2.5
SKY_LINES = (5577.0, 6300.0, 6864.0, 7340.0)
SOURCES = {
    # name: continuum level (total flux density), slope, curvature, absorption (centre, sigma,
    # depth), emission lines (centre, sigma, flux), position (x, y), kind
    "red": dict(level=300.0, slope=0.8, curv=-0.3,
                dips=[(5175.0, 10.0, 0.20), (5890.0, 6.0, 0.25), (7200.0, 15.0, 0.15)],
                lines=[], pos=(7.3, 8.1), kind="sersic"),
    "blue": dict(level=120.0, slope=-0.5, curv=0.2, dips=[],
                 lines=[(5400.0, 3.0, 4000.0), (6100.0, 3.0, 6000.0), (7000.0, 4.0, 3000.0)],
                 pos=(16.6, 15.2), kind="point"),
    "faint": dict(level=40.0, slope=0.0, curv=0.0, dips=[(6000.0, 8.0, 0.30)],
                  lines=[(6400.0, 2.5, 800.0)], pos=(18.2, 5.4), kind="point"),
}
EMPTY_SPAXEL, SPARSE_SPAXEL = (0, 0), (0, 1)   # (y, x): all NaN; 3 usable channels


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """The synthetic field on disk, with its truth cubes (n_wave, ny, nx)."""
    wave = WAVE0 + DWAVE * np.arange(N_WAVE)
    u = (wave - wave.mean()) / (0.5 * (wave[-1] - wave[0]))
    srcs, parts = [], {}
    for name, s in SOURCES.items():
        curv = 1.0 + s["curv"] * u**2
        smooth = synth.continuum_spectrum(wave, s["level"], s["slope"]) * curv
        cont = synth.continuum_spectrum(wave, s["level"], s["slope"], s["dips"]) * curv
        lines = sum((synth.emission_line(wave, c, sg, f) for c, sg, f in s["lines"]),
                    np.zeros_like(wave))
        srcs.append(synth.SynthSource(name, *s["pos"], cont + lines, kind=s["kind"],
                                      re_arcsec=0.5))
        parts[name] = (smooth, cont - smooth, lines)
    sigma = 1.0 + sum(1.5 * np.exp(-0.5 * ((wave - c) / 3.0) ** 2) for c in SKY_LINES)
    data, var, dq, header, truth = synth.make_cube(
        srcs, shape=(N_WAVE, NY, NX), wave0=WAVE0, dwave=DWAVE, sigma=sigma, nan_fraction=0.003,
        seed=7, keep_models=True)
    smooth = np.zeros(data.shape)
    dips = np.zeros(data.shape)
    lines = np.zeros(data.shape)
    for src in srcs:
        psf = truth.models[src.id] / src.spectrum[:, None, None]
        smooth += parts[src.id][0][:, None, None] * psf
        dips += parts[src.id][1][:, None, None] * psf
        lines += parts[src.id][2][:, None, None] * psf
    for (y, x), n_keep in ((EMPTY_SPAXEL, 0), (SPARSE_SPAXEL, 3)):
        data[n_keep:, y, x] = np.nan
        var[n_keep:, y, x] = np.nan
        dq[n_keep:, y, x] = 1
    path = tmp_path_factory.mktemp("contsub") / "field.fits"
    synth.cube_hdulist(data, var, dq, header).writeto(path)
    return dict(path=path, wave=wave, data=data, var=var, smooth=smooth, dips=dips,
                lines=lines, header=header)


def _aperture(name, half=3):
    x, y = SOURCES[name]["pos"]
    xi, yi = int(round(x)), int(round(y))
    return slice(None), slice(yi - half, yi + half + 1), slice(xi - half, xi + half + 1)


def _band_sum(cube, var, good, name, centre, width):
    """Sum over the source aperture and |wave - centre| < width, times the channel width."""
    wave = WAVE0 + DWAVE * np.arange(N_WAVE)
    ap = _aperture(name)
    chans = np.abs(wave - centre) < width
    sel = (good[ap][chans])
    total = np.sum(np.where(sel, cube[ap][chans], 0.0)) * DWAVE
    err = np.sqrt(np.sum(np.where(sel, var[ap][chans], 0.0))) * DWAVE
    return total, err


@pytest.fixture(scope="module")
def poly_out(field, tmp_path_factory):
    out = tmp_path_factory.mktemp("poly") / "sub.fits"
    cont = out.with_name("cont.fits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1767225600")   # as conftest does for each test
        result = subtract_continuum(field["path"], out, continuum_path=cont, degree=5)
    return out, cont, result


# ------------------------------------------------------------------------- science vs truth
def test_poly_continuum_residual_consistent_with_noise(field, poly_out):
    """The fitted continuum differs from the true smooth continuum by its statistical error only.

    For a weighted least-squares polynomial with p = degree + 1 terms, the fitted curve's errors
    satisfy E[sum_i (c_i - t_i)**2 / sigma_i**2] = p over a spectrum, so
    Q = mean_i((c_i - t_i)**2 / sigma_i**2) * n / p is 1 on average (chi2_p / p per spaxel).
    Tolerances: the mean of Q over the ~570 spaxels is 1 +- 0.03 from noise alone; the
    absorption features, which a degree-5 curve partly follows (below), add a few per cent:
    mean Q <= 1.25; 99th percentile <= 4 (chi2_6 / 6 has its 99th percentile at 2.8).  Bias:
    the mean signed error over each source's 49 brightest spaxels is < 0.1 sigma.
    """
    out, cont_path, result = poly_out
    cont = fits.getdata(cont_path, "DATA").astype(float)
    sigma = np.sqrt(field["var"])
    err = (cont - field["smooth"]) / sigma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # the empty and the sparse spaxel
        q = np.nanmean(err**2, axis=0) * N_WAVE / 6
    has_data = np.isfinite(q)
    assert has_data.sum() == NY * NX - 2
    print(f"poly continuum: mean Q = {q[has_data].mean():.3f}, "
          f"99th pct = {np.percentile(q[has_data], 99):.2f}")
    assert q[has_data].mean() <= 1.25
    assert np.percentile(q[has_data], 99) <= 4.0
    for name in SOURCES:
        bias = np.nanmean(err[_aperture(name)])
        print(f"poly continuum bias on {name}: {bias:+.3f} sigma")
        assert abs(bias) < 0.1
    assert result.n_failed == 1 and result.n_spaxels == NY * NX - 1


def test_poly_preserves_lines_and_reports_absorption_leakage(field, poly_out):
    """Emission lines (clipped out of the fit) keep their flux; absorption dips mostly do.

    Lines: |measured - true| <= 3 sigma_stat + 2 % (sigma_stat: noise of the summed voxels;
    2 %: what unclipped line wings can pull into the fit).  Dips are not deep enough per voxel
    to be clipped, so a degree-5 curve absorbs about p * window / range of them (6 x 80 /
    3000 ~ 16 %): kept within 40 % here, and within 3 sigma + 2 % when their windows are masked.
    """
    out, _, _ = poly_out
    sub = fits.getdata(out, "DATA").astype(float)
    var = field["var"]
    good = np.isfinite(sub)
    for name, s in SOURCES.items():
        for centre, sig, _ in s["lines"]:
            meas, err = _band_sum(sub, var, good, name, centre, 5 * sig)
            true, _ = _band_sum(field["lines"], var, good, name, centre, 5 * sig)
            print(f"{name} line {centre:g}: {meas:.0f} vs {true:.0f} +- {err:.0f}")
            assert abs(meas - true) <= 3 * err + 0.02 * true
        for centre, sig, _ in s["dips"]:
            meas, err = _band_sum(sub, var, good, name, centre, 4 * sig)
            true, _ = _band_sum(field["dips"], var, good, name, centre, 4 * sig)
            print(f"{name} dip {centre:g}: {meas:.0f} vs {true:.0f} +- {err:.0f}")
            assert abs(meas - true) <= 3 * err + 0.4 * abs(true)
    windows = [(c - 4 * sg, c + 4 * sg) for s in SOURCES.values() for c, sg, _ in s["dips"]]
    fit = fit_continuum(field["data"], field["var"], field["wave"], degree=5,
                        mask_windows=windows)
    masked = field["data"] - fit.continuum
    for name, s in SOURCES.items():
        for centre, sig, _ in s["dips"]:
            meas, err = _band_sum(masked, var, good, name, centre, 4 * sig)
            true, _ = _band_sum(field["dips"], var, good, name, centre, 4 * sig)
            assert abs(meas - true) <= 3 * err + 0.02 * abs(true)


def test_median_continuum_and_lines(field):
    """Running median: error near its noise floor; lines kept (within 3 sigma + 2 % when masked).

    A median of k channels has variance ~ pi / (2 k) sigma**2: mean((c - t)**2 / sigma**2) must
    stay below 1.5 times that (curvature and dips add a little).  Unmasked, a line's channels
    pull the window median up by a fraction of the noise, losing up to 15 % of the flux here.
    """
    wave, var = field["wave"], field["var"]
    k = 2 * round(150.0 / (2 * DWAVE)) + 1
    fit = fit_continuum(field["data"], var, wave, method="median", median_width=150.0)
    err2 = np.nanmean((fit.continuum - field["smooth"]) ** 2 / var)
    print(f"median continuum: mean err^2 = {err2:.4f} sigma^2 (noise floor {np.pi / (2 * k):.4f})")
    assert err2 <= 1.5 * np.pi / (2 * k)
    line_windows = [(c - 5 * sg, c + 5 * sg) for s in SOURCES.values() for c, sg, _ in s["lines"]]
    masked = fit_continuum(field["data"], var, wave, method="median", median_width=150.0,
                           mask_windows=line_windows)
    good = np.isfinite(field["data"])
    for name, s in SOURCES.items():
        for centre, sig, _ in s["lines"]:
            true, _ = _band_sum(field["lines"], var, good, name, centre, 5 * sig)
            meas, err = _band_sum(field["data"] - masked.continuum, var, good, name, centre,
                                  5 * sig)
            assert abs(meas - true) <= 3 * err + 0.02 * true
            meas, err = _band_sum(field["data"] - fit.continuum, var, good, name, centre, 5 * sig)
            assert abs(meas - true) <= 3 * err + 0.15 * true
    assert fit.failed.sum() == 0                  # the sparse spaxel still has a median
    assert np.isnan(fit.continuum[:, EMPTY_SPAXEL[0], EMPTY_SPAXEL[1]]).all()


def test_median_is_exact_nan_aware_running_median():
    """Fast path + exact path = brute-force nanmedian of every truncated window."""
    rng = np.random.default_rng(5)
    n, nspax = 157, 23
    wave = 6000.0 + 1.25 * np.arange(n)
    data = rng.normal(10.0, 2.0, (n, nspax)).astype(np.float32)
    data[rng.random((n, nspax)) < 0.05] = np.nan
    data[40:90, 3] = np.nan                               # a gap wider than the window
    data[:, 4] = np.nan                                   # an empty spaxel
    width = 30.0                                          # 25 channels
    h = 12
    for windows in ([], [(6120.0, 6170.0)]):              # the second masks > one window
        fit = fit_continuum(data, None, wave, method="median", median_width=width,
                            mask_windows=windows)
        usable = data.astype(np.float64)
        for lo, hi in windows:
            usable[(wave >= lo) & (wave <= hi)] = np.nan
        expected = np.full((n, nspax), np.nan)
        for j in range(nspax):
            for i in range(n):
                win = usable[max(i - h, 0):i + h + 1, j]
                if np.isfinite(win).any():
                    expected[i, j] = np.nanmedian(win)
        np.testing.assert_allclose(fit.continuum, expected, rtol=1e-6, atol=0)
        assert np.array_equal(np.isnan(fit.continuum), np.isnan(expected))
        # Failed: finite data left without continuum (only where a mask is wider than the
        # window; a NaN gap has no data to subtract from).
        assert fit.failed.sum() == (nspax - 1 if windows else 0) and not fit.failed[4]


# ------------------------------------------------------------------------- same as polyfit
@pytest.mark.parametrize("with_var", [True, False])
def test_poly_matches_per_spaxel_numpy_polyfit(with_var):
    """Vectorised fit == one numpy.polyfit per spaxel and clipping round, to float32 precision."""
    wave = WAVE0 + 2.0 * np.arange(300)
    srcs = [synth.SynthSource("a", 2.2, 3.1, synth.continuum_spectrum(wave, 200.0, 0.9)
                              + synth.emission_line(wave, 5000.0, 2.0, 3000.0)),
            synth.SynthSource("b", 5.0, 2.0, synth.continuum_spectrum(wave, 80.0, -0.6,
                                                                      [(5100.0, 6.0, 0.3)]))]
    sigma = 1.0 + 2.0 * np.exp(-0.5 * ((wave - 5200.0) / 4.0) ** 2)
    data, var, _, _, _ = synth.make_cube(srcs, shape=(300, 6, 7), wave0=WAVE0, dwave=2.0,
                                         sigma=sigma, nan_fraction=0.01, seed=3)
    data[4:, 5, 6] = np.nan                               # 4 usable channels < degree + 1
    var = var if with_var else None
    opts = dict(degree=5, clip_sigma=2.5, clip_iters=5, mask_windows=[(5290.0, 5300.0)])
    fast = fit_continuum(data, var, wave, **opts)
    slow = polyfit_continuum_reference(data, var, wave, **opts)
    scale = np.nanmax(np.abs(slow.continuum))
    np.testing.assert_allclose(fast.continuum, slow.continuum, rtol=0,
                               atol=4 * np.finfo(np.float32).eps * scale)
    assert np.array_equal(np.isnan(fast.continuum), np.isnan(slow.continuum))
    assert np.array_equal(fast.n_used, slow.n_used)
    assert np.array_equal(fast.failed, slow.failed) and fast.failed[5, 6]
    assert (fast.n_used[fast.n_used > 0] < 290).any()     # clipping did reject voxels
    # The reference is numpy.polyfit: one spectrum, no clipping, weights 1/sigma.
    one = polyfit_continuum_reference(data[:, 2, 2], var[:, 2, 2] if with_var else None, wave,
                                      degree=5, clip_iters=0)
    ok = np.isfinite(data[:, 2, 2])
    x = 2 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1
    w = 1 / np.sqrt(var[ok, 2, 2]) if with_var else None
    direct = np.polyval(np.polyfit(x[ok], data[ok, 2, 2].astype(float), 5, w=w), x)
    np.testing.assert_allclose(one.continuum, direct, rtol=1e-6)


# ------------------------------------------------------------------------- outputs
def test_outputs_keep_wcs_units_variance_and_verify(field, poly_out):
    out, cont_path, _ = poly_out
    with open_cube(field["path"]) as src, open_cube(out) as sub, open_cube(cont_path) as cont:
        assert sub.layout == "MUSE" and sub.shape == src.shape == cont.shape
        np.testing.assert_array_equal(sub.wave, src.wave)
        assert sub.wcs.wcs.compare(src.wcs.wcs) and cont.wcs.wcs.compare(src.wcs.wcs)
        assert sub.unit_string == src.unit_string
        d_src, v_src = src.window(0, NX, 0, NY)
        d_sub, v_sub = sub.window(0, NX, 0, NY)
        d_cont, _ = cont.window(0, NX, 0, NY, with_var=False)
    both = np.isfinite(d_sub)
    np.testing.assert_allclose(d_sub[both] + d_cont[both], d_src[both], rtol=0, atol=2e-4)
    np.testing.assert_array_equal(v_sub[both], v_src[both])
    assert np.isnan(d_sub[:, SPARSE_SPAXEL[0], SPARSE_SPAXEL[1]]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)   # a bad checksum warns
        with fits.open(out, checksum=True) as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT"]
            assert hdul["DATA"].data.dtype == np.dtype(">f4")
            assert hdul["STAT"].data.dtype == np.dtype(">f4")
            assert hdul[0].header["IFXTOOL"] == "contsub"
            assert hdul[0].header["DATE"] == "2026-01-01T00:00:00"
            assert hdul["DATA"].header["CONTDEG"] == 5
            assert hdul["DATA"].header["CONTNFAI"] == 1
    # The checksum check does bite: flip one data byte.
    broken = out.with_name("broken.fits")
    raw = bytearray(out.read_bytes())
    raw[-4000] ^= 0xFF
    broken.write_bytes(bytes(raw))
    with pytest.warns(AstropyUserWarning, match="verification failed"):
        with fits.open(broken, checksum=True) as hdul:
            hdul["STAT"].data.sum()


def test_blocks_and_threads_do_not_change_the_result(field, poly_out, tmp_path):
    """One row per block, three threads: the same file content as the default blocks."""
    out, _, _ = poly_out
    small = tmp_path / "rows.fits"
    subtract_continuum(field["path"], small, degree=5, block_spaxels=1, threads=3)
    for ext in ("DATA", "STAT"):
        np.testing.assert_array_equal(fits.getdata(small, ext), fits.getdata(out, ext))
    with fits.open(small, checksum=True) as a, fits.open(out) as b:
        assert a["DATA"].header["DATASUM"] == b["DATA"].header["DATASUM"]


def test_wave_range_writes_the_selected_channels(field, tmp_path):
    out = tmp_path / "part.fits"
    res = run_cli(["contsub", field["path"], "-o", out, "--wave-range", 5500, 6500,
                   "--degree", 3, "--clip-iters", 2])
    assert res.exit_code == 0, res.output
    with open_cube(field["path"]) as src, open_cube(out) as sub:
        z0, z1 = src.channel_range(5500, 6500)
        assert sub.nwave == z1 - z0 == _channels_reported(res)
        np.testing.assert_allclose(sub.wave, src.wave[z0:z1])
    assert fits.getheader(out, "DATA")["CONTDEG"] == 3


def _channels_reported(result) -> int:
    """Channel count from the CLI's summary line."""
    return int(result.output.split(" channels")[0].split()[-1])


def test_manga_layout_input_gives_muse_layout_output(tmp_path):
    wave = WAVE0 + 2.0 * np.arange(200)
    src = synth.SynthSource("g", 4.0, 4.0, synth.continuum_spectrum(wave, 100.0, 0.5))
    data, var, dq, header, _ = synth.make_cube([src], shape=(200, 9, 9), wave0=WAVE0,
                                               dwave=2.0, sigma=0.5, nan_fraction=0.01, seed=2)
    cube = tmp_path / "manga.fits"
    synth.cube_hdulist(data, var, dq, header, layout="MaNGA").writeto(cube)
    out = tmp_path / "sub.fits"
    subtract_continuum(cube, out, method="median", median_width=40.0)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT"]
        stat = hdul["STAT"].data
        ok = np.isfinite(stat)
        np.testing.assert_allclose(stat[ok], var[ok], rtol=1e-6)
        assert np.isnan(hdul["DATA"].data[~np.isfinite(var)]).all()
        assert hdul["DATA"].header["CONTMETH"] == "median"


# ------------------------------------------------------------------------- bad input
def test_degree_above_channel_count_is_one_line_and_no_output(tmp_path, minicube, capfd):
    out = tmp_path / "never.fits"
    res = run_main(["contsub", minicube, "-o", out, "--degree", 4000], capfd)
    assert res.exit_code == 1
    assert len(res.err_lines) == 1
    line = res.err_lines[0]
    # the library names its parameter ("degree"), the command the option that sets it
    assert line.startswith("ifu-extract: error: --degree: degree 4000 is above the channel count")
    assert "3681" in line
    assert list(tmp_path.iterdir()) == []                # no output, no temporary file
    with pytest.raises(InputError, match="above the channel count") as err:
        fit_continuum(np.ones((4, 3)), None, np.arange(4.0), degree=4)
    assert err.value.path == "degree"
    # the step says the same, before anything is written
    from ifu_extract.contsub import ContsubConfig
    from ifu_extract.steps.contsub import run_contsub

    with pytest.raises(InputError, match="above the channel count") as err:
        run_contsub(minicube, out, config=ContsubConfig(degree=4000))
    assert err.value.path == "degree" and err.value.params == ("degree",)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--method", "median", "--median-width", "1"], "--median-width: 1 Angstrom spans fewer than 3 channels"),
    (["--mask-window", "6000", "5000"], "--mask-window: window 6000 5000 is empty"),
    (["--wave-range", "5000", "5004", "--degree", "5"], "--degree: degree 5 is above the channel count"),
])
def test_other_bad_options_are_one_line(tmp_path, minicube, capfd, args, words):
    res = run_main(["contsub", minicube, "-o", tmp_path / "never.fits", *args], capfd)
    assert res.exit_code == 1
    assert len(res.err_lines) == 1 and words in res.err_lines[0]
    assert list(tmp_path.iterdir()) == []


def test_output_over_input_is_refused(tmp_path, field):
    cube = tmp_path / "c.fits"
    cube.write_bytes(field["path"].read_bytes())
    with pytest.raises(InputError, match="is the input cube"):
        subtract_continuum(cube, cube)


# ------------------------------------------------------------------------- real MUSE data
def test_minicube_end_to_end_readable_by_mpdaf(minicube, tmp_path):
    from mpdaf.obj import Cube as MpdafCube

    out, cont = tmp_path / "sub.fits", tmp_path / "cont.fits"
    res = run_cli(["contsub", minicube, "-o", out, "--continuum", cont])
    assert res.exit_code == 0, res.output
    orig, sub, model = MpdafCube(str(minicube)), MpdafCube(str(out)), MpdafCube(str(cont))
    assert sub.shape == orig.shape == (3681, 40, 40)
    assert sub.wcs.isEqual(orig.wcs) and sub.wave.isEqual(orig.wave)
    assert sub.unit == orig.unit and sub.var is not None
    np.testing.assert_array_equal(sub.var.filled(np.nan), orig.var.filled(np.nan))
    a, s, c = (x.data.filled(np.nan) for x in (orig, sub, model))
    np.testing.assert_allclose(s + c, a, rtol=0, atol=1e-4, equal_nan=True)
    # The continuum is gone: in the brightest 10 % of spaxels the median residual is < 3 % of
    # the white-light level (the weighted fit sits ~1 % under the median because of the
    # galaxies' absorption lines), where the input's median is 100 % of it.
    white = np.nanmean(a, axis=0)
    bright = white > np.percentile(white, 90)
    ratio = np.nanmedian(s, axis=0)[bright] / white[bright]
    print(f"minicube: median residual / white light, brightest spaxels: {np.median(ratio):.4f}")
    assert np.all(np.abs(ratio) < 0.03)

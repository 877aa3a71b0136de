"""The ``xcorr`` step: cross-correlation maps (AutoSpec's method, made sound) and their spectra.

The blend benchmark (XCOR and XCOR_CONTSUB next to DEBLEND) is in ``test_deblend.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main
from ifu_extract import synth
from ifu_extract.contsub import fit_continuum
from ifu_extract.cubeio import open_cube
from ifu_extract.sourcefile import read_source_spectrum
from ifu_extract.xcorr import XcorConfig, correlation_map, xcorr_object


def test_correlation_map_is_the_weighted_amplitude():
    """A_p = Σ r d / v / Σ r² / v: unbiased amplitude of the reference in every spaxel, with the
    variance 1 / Σ r² / v, NaN voxels left out of both sums."""
    rng = np.random.default_rng(3)
    nz, ny, nx = 400, 12, 14
    wave = 4750.0 + 1.25 * np.arange(nz)
    ref = synth.continuum_spectrum(wave, 10.0, 0.5, [(4900, 5, 0.5)]) + synth.emission_line(wave, 5000, 3, 200)
    amp = rng.uniform(0.0, 2.0, (ny, nx))
    sigma = rng.uniform(1.0, 3.0, (nz, 1, 1)) * np.ones((1, ny, nx))
    data = amp[None] * ref[:, None, None] + rng.standard_normal((nz, ny, nx)) * sigma
    var = sigma**2
    data[rng.random(data.shape) < 0.05] = np.nan
    data[:, 0, 0] = np.nan  # a spaxel without data
    a, v = correlation_map(data, var, ref)
    assert np.isnan(a[0, 0]) and np.isnan(v[0, 0])
    chi = ((a - amp) / np.sqrt(v)).ravel()[1:]
    assert abs(np.mean(chi)) < 0.2 and 0.85 < np.std(chi) < 1.15
    use = np.ones((ny, nx), bool)
    use[3, 4] = False
    a2, _ = correlation_map(data, var, ref, use)
    assert np.isnan(a2[3, 4]) and a2[5, 5] == a[5, 5]


def _blob_cube(seed=0, nz=300):
    """One galaxy (continuum + line) and a neighbour with another spectrum, on a small grid."""
    wave = 4750.0 + 1.25 * np.arange(nz)
    s1 = synth.continuum_spectrum(wave, 20.0, 0.5, [(4900, 5, 0.4)]) + synth.emission_line(wave, 5000, 2.5, 400)
    s2 = synth.continuum_spectrum(wave, 60.0, -0.5, [(5020, 6, 0.5)])
    srcs = [synth.SynthSource("1", 10.0, 10.0, s1), synth.SynthSource("2", 15.0, 10.5, s2)]
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=(nz, 21, 25), sigma=1.0, seed=seed,
                                                nan_fraction=0.001, keep_models=True)
    return data, var, wave, s1, s2, truth


def test_xcorr_object_contsub_map_follows_own_lines():
    """The CONTSUB map follows the object's own spectral features: the neighbour (another
    spectrum) falls near zero there while it dominates the plain map; iterations converge."""
    data, var, wave, s1, s2, truth = _blob_cube()
    yy, xx = np.mgrid[0:21, 0:25]
    obj = (xx - 10) ** 2 + (yy - 10) ** 2 <= 9
    res = xcorr_object(data, var, wave, s1, None, obj)
    assert set(res.spectra) == {"XCOR", "XCOR_CONTSUB"}
    assert res.xcor.converged and res.xcor_contsub.converged
    assert 1 < res.xcor.n_iter <= XcorConfig().max_iter
    plain, cont = res.xcor.amplitude, res.xcor_contsub.amplitude
    own = truth.models["1"].sum(axis=0)
    true_ratio = own[10, 15] / own[10, 10]  # the object's own wing at the neighbour's centre (4 %)
    # There the plain map sees the (3 times brighter) neighbour; the CONTSUB map sees the
    # object's lines only (its own wing, plus noise): AutoSpec's deblending effect.
    assert plain[10, 15] / plain[10, 10] > 20 * true_ratio
    assert cont[10, 15] / cont[10, 10] < 3 * true_ratio
    # The CONTSUB spectrum (extracted from the original cube with that map) is the object's.
    sp = res.spectra["XCOR_CONTSUB"]
    k = np.nansum(sp.flux * s1) / np.nansum(s1 * s1)
    resid = sp.flux - k * s1
    assert np.nanstd(resid / np.sqrt(sp.var)) < 1.6  # some neighbour light, no gross mixing
    # Iteration rounds: a single pass is AutoSpec's (never "converged").
    one = xcorr_object(data, var, wave, s1, None, obj, config=XcorConfig(max_iter=1))
    assert one.xcor.n_iter == 1 and not one.xcor.converged


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Four separated objects (absorption lines, an emission line, an extended galaxy with a
    feature, a featureless one) through detect -> mask -> extract (CLI)."""
    from click.testing import CliRunner

    from conftest import write_synth
    from ifu_extract.cli import cli
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image
    from ifu_extract.wcsutil import pixel_to_world

    tmp = tmp_path_factory.mktemp("xcorr")
    wave = 4750.0 + 1.25 * np.arange(300)
    absorb = [(4800, 6, .6), (4861, 5, .5), (4960, 6, .5), (5050, 5, .6)]
    srcs = [synth.SynthSource("1", 10.3, 11.7, synth.continuum_spectrum(wave, 40.0, 0.8, absorb)),
            synth.SynthSource("2", 29.6, 12.2, synth.continuum_spectrum(wave, 15.0, -0.3)
                              + synth.emission_line(wave, 4950.0, 2.0, 600.0)),
            synth.SynthSource("3", 12.1, 30.4, synth.continuum_spectrum(wave, 90.0, 0.0, absorb),
                              kind="sersic", re_arcsec=0.5, n=1.0, q=0.7, pa_deg=30.0),
            synth.SynthSource("4", 29.2, 29.5, synth.continuum_spectrum(wave, 30.0, 0.2))]
    cube = tmp / "cube.fits"
    truth = write_synth(cube, srcs, shape=(300, 40, 40), sigma=1.0, nan_fraction=0.001, seed=11)
    with open_cube(cube) as c:
        wl = band_image(c)
        det = detect_sources(wl)
        fits.PrimaryHDU(det.segmap, wl.wcs.to_header()).writeto(tmp / "seg.fits")
        xs = np.array([s_.x for s_ in srcs])
        ys = np.array([s_.y for s_ in srcs])
        ra, dec = pixel_to_world(c.wcs, xs, ys)
    (tmp / "cat.txt").write_text("ID RA DEC\n" + "".join(f"{i} {r:.9f} {d:.9f}\n" for i, r, d in
                                                       zip("1234", ra, dec)))
    runner = CliRunner()
    for args in (["mask", cube, tmp / "cat.txt", "--segmap", tmp / "seg.fits", "-o", tmp / "masks.fits"],
                 ["extract", cube, tmp / "cat.txt", "--masks", tmp / "masks.fits", "-o", tmp / "out"]):
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return cube, truth, tmp


def _tsv(path):
    tab = Table.read(path, format="ascii.tab")
    for col in ("CONVERGED", "CONVERGED_CONTSUB"):
        tab[col] = [str(v) == "True" for v in tab[col]]
    return tab


def _copy_out(tmp, dest):
    import shutil

    shutil.copytree(tmp / "out", dest)
    return dest


def test_cli_adds_spectra_maps_and_summary(extracted, tmp_path, capfd):
    cube, truth, tmp = extracted
    out = _copy_out(tmp, tmp_path / "out")
    res = run_main(["xcorr", cube, tmp / "cat.txt", "--masks", tmp / "masks.fits", "--reference", "muse_white",
                    "-o", out], capfd)
    assert res.exit_code == 0, res.stderr
    tab = _tsv(out / "xcorr.tsv")
    assert list(tab["STATUS"]) == ["ok"] * 4 and all(tab["CONVERGED"])
    assert list(tab["CONVERGED_CONTSUB"]) == [True, True, True, False]
    # The featureless object has no XCOR_CONTSUB, and says why (one line).
    notes = [ln for ln in res.err_lines if ln.startswith("warning:")]
    assert len(notes) == 1 and "object 4" in notes[0] and "no significant feature" in notes[0]
    for i in "1234":
        with fits.open(out / "sources" / f"{i}.fits") as h:
            names = {x.name for x in h}
            assert {"SPE_XCOR_DATA", "SPE_XCOR_STAT", "SPE_XCOR_SKYSUB_DATA", "IMA_XCOR_DATA",
                    "IMA_XCOR_STAT", "SPE_MUSE_WHITE_DATA"} <= names
            assert ({"SPE_XCOR_CONTSUB_DATA", "IMA_XCOR_CONTSUB_DATA"} <= names) == (i != "4")
            assert h[0].header["XCREF"] == "MUSE_WHITE"
            assert h["IMA_XCOR_DATA"].data.shape == h["IMA_MUSE_WHITE_DATA"].data.shape
            assert h["SPE_XCOR_DATA"].header["XCCONV"] is True
    # The emission-line object's CONTSUB map peaks on it.
    from astropy.wcs import WCS

    with fits.open(out / "sources" / "2.fits") as h:
        m = h["IMA_XCOR_CONTSUB_DATA"].data
        py, px = np.unravel_index(np.nanargmax(m), m.shape)
        ox, oy = WCS(h["IMA_XCOR_CONTSUB_DATA"].header).world_to_pixel_values(h[0].header["RA"], h[0].header["DEC"])
    assert np.hypot(px - ox, py - oy) < 1.5
    # Source 1 (a point source with a red continuum): XCOR is its spectrum times the share of
    # its flux in the map's region (which grows as the PSF narrows to the red: a linear trend
    # here), with the variance of that estimate.
    wave, flux, var, *_ = read_source_spectrum(out / "sources" / "1.fits", "XCOR")
    t = truth.sources[0].spectrum
    u = (wave - wave.mean()) / np.ptp(wave)
    A = np.column_stack([t, t * u]) / np.sqrt(var)[:, None]
    (k0, k1), *_ = np.linalg.lstsq(A, flux / np.sqrt(var), rcond=None)
    assert 0.6 < k0 < 1.0 and 0 < k1 < 0.5
    chi = (flux - (k0 + k1 * u) * t) / np.sqrt(var)
    assert 0.85 < np.std(chi) < 1.15
    # Optimal weights beat the plain sum over the mask.
    _, ftot, vtot, *_ = read_source_spectrum(out / "sources" / "1.fits", "MUSE_TOT")
    assert np.median(flux / np.sqrt(var)) > np.median(ftot / np.sqrt(vtot))


def test_bad_reference_missing_file_and_tag(extracted, tmp_path, capfd):
    """A reference tag that does not exist: one line per object, others go on."""
    cube, truth, tmp = extracted
    out = _copy_out(tmp, tmp_path / "out")
    res = run_main(["xcorr", cube, tmp / "cat.txt", "--masks", tmp / "masks.fits", "--reference", "NOPE",
                    "-o", out], capfd)
    assert res.exit_code == 1
    warns = [ln for ln in res.err_lines if ln.startswith("warning:")]
    assert len(warns) == 4 and all("tag NOPE is not in" in ln for ln in warns)
    assert "no object could be processed" in res.err_lines[-1]
    # Object 2's file lacks the tag, object 3 has no file: objects 1 is still processed.
    p2 = out / "sources" / "2.fits"
    with fits.open(p2) as h:
        kept = fits.HDUList([x.copy() for x in h if not x.name.startswith("SPE_MUSE_WHITE")])
        kept.writeto(p2, overwrite=True)
    (out / "sources" / "3.fits").unlink()
    res = run_main(["xcorr", cube, tmp / "cat.txt", "--masks", tmp / "masks.fits", "-o", out], capfd)
    assert res.exit_code == 0, res.stderr
    warns = [ln for ln in res.err_lines if ln.startswith("warning:")]
    assert len([ln for ln in warns if "object 2" in ln]) == 1
    assert len([ln for ln in warns if "object 3" in ln]) == 1
    assert any("object 2" in ln and "MUSE_WHITE is not in" in ln for ln in warns)
    assert any("object 3" in ln and "not found" in ln for ln in warns)
    tab = _tsv(out / "xcorr.tsv")
    assert tab["STATUS"][0] == "ok" and tab["STATUS"][3] == "ok"
    assert tab["STATUS"][1].startswith("no_reference") and tab["STATUS"][2].startswith("no_source_file")


def test_contsub_cube_gives_the_same_maps(extracted, tmp_path, capfd):
    """A cube from 'ifu-extract contsub' (same continuum model) gives what the per-stamp fit
    gives."""
    cube, truth, tmp = extracted
    res = run_main(["contsub", cube, "-o", tmp_path / "cs.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    a = _copy_out(tmp, tmp_path / "a")
    b = _copy_out(tmp, tmp_path / "b")
    for out, extra in ((a, []), (b, ["--contsub-cube", tmp_path / "cs.fits"])):
        res = run_main(["xcorr", cube, tmp / "cat.txt", "--masks", tmp / "masks.fits", "-o", out, *extra], capfd)
        assert res.exit_code == 0, res.stderr
    for i in "123":  # (4 has no CONTSUB map)
        fa = fits.getdata(a / "sources" / f"{i}.fits", "SPE_XCOR_CONTSUB_DATA")
        fb = fits.getdata(b / "sources" / f"{i}.fits", "SPE_XCOR_CONTSUB_DATA")
        assert np.allclose(fa, fb, rtol=2e-3, atol=1e-3 * np.nanmax(np.abs(fa)))


def test_reference_continuum_is_removed():
    """The CONTSUB reference is the reference minus its own fitted continuum."""
    wave = 4750.0 + 1.25 * np.arange(200)
    ref = synth.continuum_spectrum(wave, 10.0, 1.0)
    fit = fit_continuum(ref[:, None], None, wave, degree=5)
    assert np.allclose(ref - fit.continuum[:, 0], 0.0, atol=1e-3)
    # A reference without features gives an empty CONTSUB map: reported, not crashed.
    data = np.broadcast_to(ref[:, None, None], (200, 5, 5)).copy()
    data += np.random.default_rng(0).standard_normal(data.shape) * 1e-6
    obj = np.zeros((5, 5), bool)
    obj[2, 2] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = xcorr_object(data, np.full(data.shape, 1e-12), wave, ref, None, obj)
    assert "XCOR" in res.spectra


# ------------------------------------------------------------------------- explicit files (Galaxy)
def _xcorr_args(extra):
    from conftest import TEST_DATA

    return ["xcorr", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt", "--masks",
            TEST_DATA / "gx_masks.fits", "--max-iter", 2, *extra]


def test_explicit_files_write_what_the_folder_form_writes(tmp_path, capfd, monkeypatch):
    """--source F... --summary S --sources-out D (the wrapper's form: inputs left as they are,
    matched by their ID keyword whatever their names) writes the same bytes as -o OUTDIR on the
    folder layout of extract."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")   # same DATE in both runs
    from conftest import TEST_DATA

    folder = tmp_path / "folder"
    (folder / "sources").mkdir(parents=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for oid in ("1", "3"):
        (folder / "sources" / f"{oid}.fits").write_bytes((TEST_DATA / f"gx_source_{oid}.fits").read_bytes())
        # Galaxy's dataset names say nothing of the object
        (inputs / f"dataset_{oid}{oid}.dat").write_bytes((TEST_DATA / f"gx_source_{oid}.fits").read_bytes())
    res = run_main(_xcorr_args(["-o", folder]), capfd)
    assert res.exit_code == 0, res.stderr
    given = sorted(inputs.iterdir())
    before = [p.read_bytes() for p in given]
    res = run_main(_xcorr_args([a for p in given for a in ("--source", p)]
                               + ["--summary", tmp_path / "x.tsv", "--sources-out", tmp_path / "out"]), capfd)
    assert res.exit_code == 0, res.stderr
    assert [p.read_bytes() for p in given] == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1.fits", "3.fits"]
    for oid in ("1", "3"):
        assert (tmp_path / "out" / f"{oid}.fits").read_bytes() == (folder / "sources" / f"{oid}.fits").read_bytes()
    summary = Table.read(tmp_path / "x.tsv", format="ascii.tab")
    assert list(summary["STATUS"]) == ["ok", "ok"]
    # FILE is relative to the summary's folder, as in the folder form
    assert list(summary["FILE"]) == ["out/1.fits", "out/3.fits"]
    assert (folder / "xcorr.tsv").read_text().replace("sources/", "out/") == (tmp_path / "x.tsv").read_text()


def test_explicit_files_object_without_file_and_bad_source(tmp_path, capfd):
    """An object whose Source file is not given gets a status naming that; a FITS file without
    an ID keyword is refused in one line naming it, before anything is written."""
    from conftest import TEST_DATA

    res = run_main(_xcorr_args(["--source", TEST_DATA / "gx_source_1.fits", "--summary", tmp_path / "x.tsv",
                                "--sources-out", tmp_path / "out"]), capfd)
    assert res.exit_code == 0, res.stderr
    rows = Table.read(tmp_path / "x.tsv", format="ascii.tab")
    assert rows["STATUS"][1] == "no_source_file: no Source file was given for it"
    bad = tmp_path / "noid.fits"
    fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(bad)
    res = run_main(_xcorr_args(["--source", bad, "--summary", tmp_path / "y.tsv",
                                "--sources-out", tmp_path / "out2"]), capfd)
    assert res.exit_code == 1
    assert res.err_lines == [f"ifu-extract: error: {bad}: has no ID keyword, so it is not a Source file; "
                             "give the Source files of extract or run"]
    assert not (tmp_path / "y.tsv").exists() and not (tmp_path / "out2").exists()


def test_folder_and_explicit_forms_are_exclusive(tmp_path, capfd):
    from conftest import TEST_DATA

    res = run_main(_xcorr_args(["-o", tmp_path, "--source", TEST_DATA / "gx_source_1.fits"]), capfd)
    assert res.exit_code == 2 and "-o/--output is exclusive with --source" in res.stderr
    res = run_main(_xcorr_args(["--source", TEST_DATA / "gx_source_1.fits"]), capfd)
    assert res.exit_code == 2 and "give --source (one or more) and --summary" in res.stderr

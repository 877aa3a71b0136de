"""Extraction science against known truth, and the extract/run outputs on real MUSE data."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main
from ifu_extract import synth
from ifu_extract.estimators import ExtractConfig, ObjectRegion, aperture_tag, extract_object
from ifu_extract.psf import PSFModel

PIX = 0.2
BETA = 2.8
FWHM = (0.85, 0.60)  # arcsec at the blue and red ends (MUSE-like)


def _psf_truth(wave):
    slope = (FWHM[1] - FWHM[0]) / (wave[-1] - wave[0])
    return PSFModel("moffat", (slope, FWHM[0] - slope * wave[0]), (BETA,), "given")


@pytest.fixture(scope="module")
def isolated():
    """A point source on a 31 x 31 field, 600 channels of 7.5 A over 4750-9243 A: the noise-free
    model and 100 noise draws share one geometry."""
    nw, ny, nx = 600, 31, 31
    wave = 4750.0 + 7.5 * np.arange(nw)
    spec = synth.continuum_spectrum(wave, 40.0, 0.5, features=[(6563.0, 15.0, 0.4), (8500, 40.0, 0.3)])
    src = synth.SynthSource("1", 15.3, 14.6, spec)
    model, _, _, _, truth = synth.make_cube([src], shape=(nw, ny, nx), wave0=wave[0], dwave=7.5,
                                            fwhm=FWHM, beta=BETA, sigma=0.0, seed=0)
    yy, xx = np.indices((ny, nx))
    r2 = (xx - 15.3) ** 2 + (yy - 14.6) ** 2
    region = ObjectRegion("1", 0.0, 0.0, 15.3, 14.6, (0, nx, 0, ny), obj_mask=r2 <= 4.0**2,
                          sky_mask=r2 >= 11.0**2)
    return wave, spec, model.astype(np.float64), region, truth


def _draws(model, n, sigma, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (model + rng.standard_normal(model.shape) * sigma).astype(np.float32)


def test_psf_spectrum_recovers_total_flux(isolated):
    wave, spec, model, region, _ = isolated
    cfg = ExtractConfig(apertures=(), psf=_psf_truth(wave))
    # Per-channel S/N ~ 40 (sigma_opt = sigma / sqrt(sum P^2) ~ 0.86), so a 100 A bin (13
    # channels) is measured to ~0.7 %: the 5 % bound tests the flux scale, not the noise.
    var = np.full(model.shape, 0.01, np.float32)
    data = next(_draws(model, 1, 0.1))
    res = extract_object(data, var, wave, PIX, region, cfg)
    psf = res.spectra["MUSE_PSF"].flux
    # Integrated over the band: within 2 %.
    assert psf.sum() / spec.sum() == pytest.approx(1.0, abs=0.02)
    # Per 100 A bin: within 5 %.
    edges = np.arange(wave[0], wave[-1], 100.0)
    idx = np.digitize(wave, edges)
    for b in np.unique(idx):
        sel = idx == b
        if sel.sum() >= 10:
            assert psf[sel].sum() / spec[sel].sum() == pytest.approx(1.0, abs=0.05)


def test_psf_snr_near_optimum_and_variances_match_scatter(isolated):
    wave, spec, model, region, truth = isolated
    sigma = 1.5
    cfg = ExtractConfig(apertures=(), psf=_psf_truth(wave))
    var = np.full(model.shape, sigma**2, np.float32)
    results = [extract_object(d, var, wave, PIX, region, cfg) for d in _draws(model, 100, sigma)]
    for tag in ("MUSE_PSF", "MUSE_PSF_SKYSUB", "MUSE_TOT", "MUSE_WHITE_SKYSUB"):
        flux = np.array([r.spectra[tag].flux for r in results])
        pred = np.array([r.spectra[tag].var for r in results]).mean(axis=0)
        ratio = pred / flux.var(axis=0, ddof=1)
        # 100 draws: the scatter of a sample variance is sqrt(2/99) = 14 % per channel; the
        # median over 600 channels is compared at 10 % (its own scatter is < 1 %).
        assert np.median(ratio) == pytest.approx(1.0, abs=0.10), tag
    # Theoretical optimum: S/N of the matched filter with the true PSF over the whole field.
    fwhm_pix = truth.fwhm_arcsec / PIX
    opt = np.array([np.sqrt((synth.moffat_image(model.shape[1:], 15.3, 14.6, f, BETA) ** 2).sum())
                    for f in fwhm_pix]) / sigma
    snr = spec / np.sqrt(results[0].spectra["MUSE_PSF"].var)
    assert np.median(snr / (spec * opt)) >= 0.90


def test_aperture_exact_equals_enclosed_energy(isolated):
    wave, spec, model, region, truth = isolated
    r = 3 * FWHM[0]
    cfg = ExtractConfig(apertures=(r,), aperture_method="exact", psf=None, skysub=False, white=False)
    res = extract_object(model.astype(np.float32), np.ones(model.shape, np.float32), wave, PIX, region, cfg)
    got = res.spectra[aperture_tag(r)].flux / spec
    alpha = synth.moffat_alpha(truth.fwhm_arcsec, BETA)
    ee = 1.0 - (1.0 + (r / alpha) ** 2) ** (1.0 - BETA)
    np.testing.assert_allclose(got, ee, rtol=0.01)


def test_white_weighting_estimates_flux_in_mask(isolated):
    wave, spec, model, region, _ = isolated
    cfg = ExtractConfig(apertures=(), psf=None, skysub=False)
    data = model.astype(np.float32)
    res = extract_object(data, np.ones_like(data), wave, PIX, region, cfg)
    tot = res.spectra["MUSE_TOT"].flux
    white = res.spectra["MUSE_WHITE"].flux
    # Noise-free: calibrated on the white-light image, the estimate equals the mask sum for the
    # band-averaged profile, so the band totals agree to 1 %...
    assert white.sum() / tot.sum() == pytest.approx(1.0, abs=0.01)
    # ...while per channel the PSF's colour dependence (FWHM 0.85" -> 0.60") moves flux in and
    # out of the weights by up to ~10 % at the band ends (the reason MUSE_PSF exists).
    np.testing.assert_allclose(white, tot, rtol=0.12)
    assert white[0] < tot[0] and white[-1] > tot[-1]


def test_nan_voxels_do_not_bias_psf_flux(isolated):
    wave, spec, model, region, _ = isolated
    rng = np.random.default_rng(3)
    data = model.astype(np.float32)
    data[rng.random(data.shape) < 0.05] = np.nan
    var = np.ones_like(data)
    res = extract_object(data, var, wave, PIX, region, ExtractConfig(apertures=(), psf=_psf_truth(wave)))
    assert np.nansum(res.spectra["MUSE_PSF"].flux) / spec.sum() == pytest.approx(1.0, abs=0.005)


def test_minicube_aperture_matches_mpdaf(minicube):
    """Same pixel rule (centres inside, NaNs ignored) -> same spectrum as Cube.aperture.

    MPDAF centres its circle on the centre of a snapped sub-cube (floor(x) + 0.5 for an even box
    width), up to half a spaxel from the requested position; ours uses the exact position.  The
    test asks both for a position on a half-integer pixel, where the two coincide.
    """
    from mpdaf.obj import Cube

    from ifu_extract.cubeio import open_cube
    from ifu_extract.estimators import aperture_weights
    from ifu_extract.wcsutil import pixel_to_world

    x, y, radius = 14.5, 14.5, 1.0
    with open_cube(minicube) as cube:
        ra, dec = pixel_to_world(cube.wcs, x, y)
        data, var = cube.window(0, cube.nx, 0, cube.ny)
    ref = Cube(str(minicube)).aperture((dec, ra), radius)
    w = aperture_weights((40, 40), x, y, radius / 0.2, "center")
    assert w.sum() == 80
    ours = np.nansum(data * w, axis=(1, 2))
    good = ~np.ma.getmaskarray(ref.data)
    assert good.mean() > 0.99
    np.testing.assert_allclose(ours[good], ref.data.data[good], rtol=1e-3,
                               atol=1e-6 * np.nanmedian(np.abs(ours)))


@pytest.fixture(scope="module")
def minicube_run(tmp_path_factory, minicube):
    """ifu-extract run on the minicube with mpdaf's cat.txt plus one bad row."""
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("run")
    cat = base / "cat.txt"
    text = (minicube.parent / "cat.txt").read_text()
    cat.write_text(text + "99 not-a-number 10.4650000 -- -- --\n")
    out = base / "out"
    env = {"SOURCE_DATE_EPOCH": "1767225600", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "ifu_extract.cli", "run", str(minicube), str(cat), "-o",
                           str(out), "--fwhm", "0.75", "--aperture", "0.5", "--aperture", "1.0",
                           "--no-plots"], capture_output=True, text=True, env=env)
    return proc, out, cat


def test_run_with_bad_row_writes_the_others(minicube_run):
    proc, out, _ = minicube_run
    assert proc.returncode == 0, proc.stderr
    assert "object 99: bad_coordinates" in proc.stderr
    summary = Table.read(out / "summary.tsv", format="ascii.tab")
    assert summary["ID"].dtype.kind in "iU"
    bad = summary[np.asarray(summary["ID"]).astype(str) == "99"][0]
    assert bad["STATUS"].startswith("bad_coordinates")
    assert np.ma.is_masked(bad["FILE"]) or not str(bad["FILE"]).strip()
    good = summary[np.asarray(summary["ID"]).astype(str) != "99"]
    assert len(good) >= 8
    assert all((out / f).exists() for f in good["FILE"])


def test_sources_open_in_mpdaf_and_specutils(minicube_run):
    from mpdaf.sdetect import Source
    from specutils import Spectrum

    import ifu_extract.specio  # noqa: F401  (registers the specutils reader)

    _, out, _ = minicube_run
    files = sorted((out / "sources").glob("*.fits"))
    assert len(files) >= 8
    n_sky = {str(r["ID"]): int(r["N_SKY"]) for r in Table.read(out / "summary.tsv", format="ascii.tab")}
    assert sum(v > 0 for v in n_sky.values()) >= 6
    for path in files:
        src = Source.from_file(str(path))
        assert {"MUSE_TOT", "MUSE_PSF", "MUSE_WHITE", "MUSE_APER_0.5", "MUSE_APER_1.0"} <= set(src.spectra)
        # The central galaxy fills the field: boxes that hold no unlabelled spaxel have no sky.
        if n_sky[str(src.header["ID"])] > 0:
            assert {"MUSE_SKY", "MUSE_PSF_SKYSUB"} <= set(src.spectra)
        assert {"MUSE_WHITE", "MASK_UNION", "MASK_INTER", "MASK_SKY"} <= set(src.images)
        assert src.header["FROM"] == "ifu-extract" and src.header["CUBE"] == "minicube.fits"
        sp = src.spectra["MUSE_TOT"]
        assert sp.shape == (3681,) and sp.wave.get_start() == pytest.approx(4749.890625)
        assert src.images["MASK_UNION"].data.sum() == fits.getheader(path, 0)["NSPAX"]
        spec = Spectrum.read(path)  # auto-identified
        assert spec.spectral_axis.unit == "Angstrom" and spec.uncertainty is not None
        # The best spectrum: PSF-weighted, sky-subtracted when the box has sky.
        has_sky = n_sky[str(src.header["ID"])] > 0
        assert spec.meta["tag"] == ("MUSE_PSF_SKYSUB" if has_sky else "MUSE_PSF")
        assert str(spec.flux.unit) == "1e-20 erg / (Angstrom s cm2)"


def test_galaxy_spectrum_shows_its_lines(minicube_run):
    """Object 1 (z = 0.086, an Abell 478 member): its H-alpha/[NII] region is above the continuum."""
    from ifu_extract.sourcefile import read_source_spectrum

    _, out, _ = minicube_run
    wave, flux, var, *_ = read_source_spectrum(out / "sources" / "1.fits", "MUSE_TOT_SKYSUB")
    assert np.isfinite(flux).mean() > 0.95
    # Mg b / Na D absorption of the red-sequence member: the Na D trough at 5893*(1+z) is below
    # the nearby continuum.
    nad = 5893.0 * 1.086
    trough = np.nanmedian(flux[np.abs(wave - nad) < 6])
    cont = np.nanmedian(flux[(np.abs(wave - nad) > 20) & (np.abs(wave - nad) < 60)])
    assert trough < 0.95 * cont


def test_rerun_is_byte_identical(minicube_run, tmp_path):
    import subprocess
    import sys

    proc, out, cat = minicube_run
    out2 = tmp_path / "again"
    env = {"SOURCE_DATE_EPOCH": "1767225600", "PATH": "/usr/bin:/bin"}
    from conftest import MPDAF_DATA

    subprocess.run([sys.executable, "-m", "ifu_extract.cli", "run", str(MPDAF_DATA / "minicube.fits"), str(cat),
                    "-o", str(out2), "--fwhm", "0.75", "--aperture", "0.5", "--aperture", "1.0", "--no-plots"],
                   capture_output=True, text=True, env=env, check=True)
    for path in sorted((out / "sources").glob("*.fits")):
        a = hashlib.sha256(path.read_bytes()).hexdigest()
        b = hashlib.sha256((out2 / "sources" / path.name).read_bytes()).hexdigest()
        assert a == b, path.name
    assert (out / "summary.tsv").read_bytes() == (out2 / "summary.tsv").read_bytes()


def test_resume_keeps_written_objects(minicube_run, tmp_path, capfd, minicube):
    import shutil

    _, out, cat = minicube_run
    work = tmp_path / "resume"
    shutil.copytree(out, work)
    victim = work / "sources" / "3.fits"
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (work / "sources").glob("*.fits")}
    res = run_main(["extract", minicube, work / "catalog.tsv", "--masks", work / "masks.fits", "-o", work,
                    "--fwhm", "0.75", "--aperture", "0.5", "--aperture", "1.0", "--resume"], capfd)
    assert res.exit_code == 0, res.stderr
    assert victim.exists()
    after = {p.name: p.stat().st_mtime_ns for p in (work / "sources").glob("*.fits")}
    assert all(after[k] == v for k, v in before.items())
    # The resumed summary is the clean run's, byte for byte (FLUX_UNIT, NOTES and STATUS of the
    # kept objects come back from their Source files whole).
    assert (work / "summary.tsv").read_bytes() == (out / "summary.tsv").read_bytes()


def test_marz_export(minicube_run, tmp_path, capfd, minicube):
    _, out, _ = minicube_run
    marz = tmp_path / "marz.fits"
    res = run_main(["extract", minicube, out / "catalog.tsv", "--masks", out / "masks.fits", "-o",
                    tmp_path / "o", "--fwhm", "0.75", "--marz", marz], capfd)
    assert res.exit_code == 0, res.stderr
    with fits.open(marz) as h:
        assert h[0].data.shape[1] == 3681 and h[0].header["VACUUM"] is False
        assert h["VARIANCE"].data.shape == h[0].data.shape
        assert h["WAVELENGTH"].data[0] == pytest.approx(4749.890625)
        names = list(h["FIBRES"].data["NAME"])
        assert "1" in names and h["SKY"].data.shape == h[0].data.shape


@pytest.mark.parametrize("sky_radius, thin", [(11.0, False), (20.5, True)])
def test_thin_sky_annulus_gets_a_note(isolated, sky_radius, thin):
    """A sky mask much smaller than the object (here 8 spaxels in the field corners for 51
    object spaxels) dominates the _SKYSUB noise: the object keeps its status but gets a note."""
    wave, _spec, model, region, _ = isolated
    ny, nx = model.shape[1:]
    yy, xx = np.indices((ny, nx))
    r2 = (xx - region.x) ** 2 + (yy - region.y) ** 2
    region = ObjectRegion("1", 0.0, 0.0, region.x, region.y, region.box, obj_mask=region.obj_mask,
                          sky_mask=r2 >= sky_radius**2)
    cfg = ExtractConfig(apertures=(), psf=None)
    res = extract_object(model.astype(np.float32), np.ones(model.shape, np.float32), wave, PIX,
                         region, cfg)
    notes = [n for n in res.notes if n.startswith("thin sky")]
    n_obj = int(region.obj_mask.sum())
    assert res.n_sky == int(region.sky_mask.sum())
    if thin:
        assert res.n_sky < n_obj / 4
        assert notes == [f"thin sky: {res.n_sky} sky for {n_obj} object spaxels"]
    else:
        assert res.n_sky > n_obj and notes == []


def test_cube_name_is_recorded_and_titles_the_report(tmp_path, capfd):
    """Galaxy hands the cube over as ``dataset_<uuid>.dat``: ``--cube-name`` gives the Source
    files (CUBE) and the QA report the dataset's name; without it they name the file."""
    from conftest import TEST_DATA, run_main
    from ifu_extract.report import INDEX_NAME

    cube = tmp_path / "dataset_0b6e.dat"
    cube.write_bytes((TEST_DATA / "gx_minicube.fits").read_bytes())
    common = [cube, TEST_DATA / "gx_catalog.txt", "--masks", TEST_DATA / "gx_masks.fits",
              "--fwhm", "0.75"]
    named, plain = tmp_path / "named", tmp_path / "plain"
    assert run_main(["extract", *common, "-o", named, "--cube-name", "Abell 478 (MUSE) é"],
                    capfd).exit_code == 0
    assert run_main(["extract", *common, "-o", plain], capfd).exit_code == 0
    # Non-ASCII letters are spelled out (FITS cards are ASCII); the rest is kept as given.
    assert fits.getheader(named / "sources" / "1.fits")["CUBE"].startswith("Abell 478 (MUSE) ")
    assert fits.getheader(plain / "sources" / "1.fits")["CUBE"] == "dataset_0b6e.dat"
    assert run_main(["report", named, "--no-plots"], capfd).exit_code == 0
    page = (named / INDEX_NAME).read_text()
    assert "QA report: Abell 478 (MUSE)" in page and "dataset_0b6e" not in page

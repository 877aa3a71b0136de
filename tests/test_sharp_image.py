"""A sharp ancillary image for the deblending: its finer grid aligned with the cube's, and the
synthetic truth the sharp-image benchmark is judged on (issue 15, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.image import read_image
from ifu_extract.psfmodel import moffat_image
from ifu_extract.wcsutil import finer_wcs
from ifu_extract.weights import fine_scale, model_images


def _wcs(scale_arcsec=0.2, crpix=16.0):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [crpix, crpix]
    w.wcs.cd = [[-scale_arcsec / 3600, 0], [0, scale_arcsec / 3600]]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.set()
    return w


def test_finer_wcs_pixels_divide_the_spaxels():
    """Fine pixel i (0-based) of a grid 4 times finer is centred at spaxel (i + 0.5)/4 - 0.5."""
    coarse = _wcs()
    fine = finer_wcs(coarse, 4)
    i = np.array([0.0, 1.0, 3.0, 4.0, 61.0, 123.0])
    ra, dec = fine.all_pix2world(i, i, 0)
    x, y = coarse.all_world2pix(ra, dec, 0)
    np.testing.assert_allclose(x, (i + 0.5) / 4 - 0.5, atol=1e-8)
    np.testing.assert_allclose(y, (i + 0.5) / 4 - 0.5, atol=1e-8)


def test_model_images_fine_and_coarse_agree(tmp_path):
    """An image on a 4x finer grid aligned with the cube: it is kept as it is for the fine grid,
    and its spaxel means are the cube-grid image (the same surface brightness scale)."""
    rng = np.random.default_rng(3)
    srcs = [synth.SynthSource("a", 10.3, 12.7, np.ones(8))]
    data, var, dq, hdr, _ = synth.make_cube(srcs, shape=(8, 31, 31), sigma=0.1, seed=1)
    cube_path = tmp_path / "cube.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(cube_path)
    with open_cube(cube_path) as cube:
        fine_wcs = finer_wcs(cube.wcs, 4)
        img = rng.random((124, 124)).astype(np.float32)
        fits.PrimaryHDU(img, fine_wcs.to_header()).writeto(tmp_path / "hst.fits")
        image = read_image(tmp_path / "hst.fits")
        assert fine_scale(image, cube) == 4
        coarse, fine = model_images(image, cube)
        assert fine.shape == (124, 124)
        np.testing.assert_allclose(fine, img)
        np.testing.assert_allclose(coarse, img.reshape(31, 4, 31, 4).mean(axis=(1, 3)), rtol=2e-5)
        assert model_images(image, cube, fine=False)[1] is None


def test_exact_sersic_truth():
    """``make_cube(exact=True)``: the Sérsic profile is convolved with the whole Moffat on its
    fine sampling, then integrated over spaxels once.  A compact profile then equals the
    spaxel-integrated Moffat at its position; the default renderer (spaxel-integrated profile
    convolved with a spaxel-sampled PSF truncated at 4 FWHM) moves its light to the spaxel
    centre and keeps the PSF's far wings inside 4 FWHM."""
    wave_flux = np.ones(4)
    src = synth.SynthSource("g", 15.2, 14.6, wave_flux, kind="sersic", re_arcsec=0.01, n=1.0)
    kw = dict(shape=(4, 31, 31), fwhm=(0.7, 0.7), beta=2.5, sigma=0.0, keep_models=True, seed=0)
    exact = synth.make_cube([src], exact=True, **kw)[4].models["g"][0]
    default = synth.make_cube([src], **kw)[4].models["g"][0]
    point = moffat_image((31, 31), 15.2, 14.6, 0.7 / 0.2, 2.5)
    assert abs(exact.sum() - point.sum()) < 1e-4
    assert np.max(np.abs(exact - point)) < 1e-3 * point.max()
    assert np.max(np.abs(default - point)) > 0.1 * point.max()


def test_template_fit_reports_chi2_and_flags_a_poor_model(tmp_path, capfd):
    """With a sharp image (the template solver), each DEBLEND spectrum's header records the
    fit's χ²/dof and the poor-model flag, as the joint fit's do (issue 15, item 5).  On the
    workflow's synthetic blend (noise as STAT says) and its HST-like image: χ²/dof 0.98 and
    1.00, not poor.  The same cube with STAT 4 times too small (noise underestimated by 2):
    χ²/dof about 4, flagged ``DBPOOR`` and noted.  Before, the template path wrote neither."""
    from conftest import TEST_DATA, run_main

    cube, cat = TEST_DATA / "wf_blend_cube.fits", TEST_DATA / "wf_blend_catalog.txt"
    low = tmp_path / "lowvar.fits"
    with fits.open(cube) as h:
        h["STAT"].data = h["STAT"].data / 4.0
        h.writeto(low)
    chi2 = {}
    for name, path in (("ok", cube), ("low", low)):
        res = run_main(["run", path, cat, "-o", tmp_path / name, "--deblend", "--deblend-image",
                        TEST_DATA / "wf_blend_image.fits", "--deblend-image-fwhm", "0.1",
                        "--no-plots"], capfd)
        assert res.exit_code == 0, res.stderr
        for i in ("1", "2"):
            with fits.open(tmp_path / name / "sources" / f"{i}.fits") as s:
                hdr = s["SPE_DEBLEND_DATA"].header
                assert hdr["DBSOLVER"] == "template"
                chi2[name, i] = (hdr["DBCHI2"], hdr["DBPOOR"], hdr["DBGCHI2"])
    for i in ("1", "2"):
        assert 0.85 < chi2["ok", i][0] < 1.15 and chi2["ok", i][1] is False
        assert 3.4 < chi2["low", i][0] < 4.6 and chi2["low", i][1] is True
        assert chi2["low", i][2] == pytest.approx(4 * chi2["ok", i][2], rel=1e-3)
    summary = (tmp_path / "low" / "deblend.tsv").read_text()
    assert "poor model: chi2/dof" in (tmp_path / "low" / "summary.tsv").read_text() + summary


@pytest.mark.parametrize("use_cube", [True, False], ids=["cube-model", "image-template"])
def test_member_faint_in_the_image_is_modelled_on_the_cube(tmp_path, monkeypatch, use_cube):
    """A galaxy the sharp image does not see (below a shallow image's noise, as the faint
    cluster members of the real minicube are in its 600 s WFPC2 cut-out: S/N 0-3 against 20 in
    the cube) gets its model from the cube's white light, not a template of image noise.

    ``easy-0.9`` with an extended faint galaxy (r_e 0.4″) absent from the image, S/N 30, seed
    2.  Modelled on the cube (default): flux scale a = 0.78, contamination -2.3 %, χ²/dof 7.6
    on its spaxels.  Its image template instead (``IMAGE_MIN_SNR`` 0, the old behaviour): a =
    0.65, contamination -11.2 %, χ²/dof 28.  Seeds 0-4: cube model a 0.77-0.78, -2.1..-6.9 %,
    χ² 4.9-7.6; image template a 0.65-0.78, -1.9..-14.2 %, χ² 6.4-28 (as good on seeds 0-1
    only, where the image's noise happens to leave the template round)."""
    import blend_scenes
    from dataclasses import replace

    import ifu_extract.deblend.driver as driver
    from ifu_extract.catalog import read_catalog
    from ifu_extract.deblend import DeblendConfig, deblend_catalog, resolve_psf
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image
    from ifu_extract.weights import model_images

    if not use_cube:
        monkeypatch.setattr(driver, "IMAGE_MIN_SNR", 0.0)
    scene = replace({s.name: s for s in blend_scenes.SCENES}["easy-0.9"], faint_re=0.4)
    built = blend_scenes.build(scene, 2, tmp_path, nwave=200, peak_snr=30.0, image=True, image_faint=0.0)
    with open_cube(built.cube) as c:
        table = read_catalog(built.catalog)
        image, fine = model_images(read_image(built.image), c)
        res = deblend_catalog(c, table, resolve_psf(c), image=image, image_is_cube=False, image_fine=fine,
                              segmap=detect_sources(band_image(c)).segmap,
                              config=DeblendConfig(image_fwhm=blend_scenes.HST_FWHM))
    faint = res.sources[1]
    a, _, contamination = blend_scenes.score(faint.spectrum.flux, built.t_faint, built.t_bright)
    chi2 = faint.spectrum.meta["DBCHI2"][0]
    noted = any("modelled on the cube's white light" in n for n in faint.notes)
    print(f"\na={a:.3f} contamination={contamination:+.4f} chi2/dof={chi2:.2f} notes={faint.notes}", end="")
    good = a > 0.72 and abs(contamination) < 0.06 and chi2 < 10
    assert good == use_cube and noted == use_cube


def test_template_fit_has_no_deep_negative_channels_on_the_minicube(minicube, muselet_cat, tmp_path, capfd):
    """Issue 15, item 5, with a sharp image: on the real minicube (Abell 478, cat.txt,
    6900-7400 Å over the cluster's Hα/[N II]/[S II]) with the cube's white light given as the
    model image (``--image-fwhm 0.55``: the template solver), no DEBLEND spectrum has more than
    0.2 % of its channels below -5σ of its own STAT.  Before the template solver refitted
    those channels with fluxes >= 0 (as the joint fit does), objects 2 and 8 had 3.5 % each."""
    from conftest import run_main

    white = tmp_path / "white.fits"
    assert run_main(["image", minicube, "-o", white], capfd).exit_code == 0
    res = run_main(["deblend", minicube, muselet_cat, "--image", white, "--image-fwhm", "0.55", "--fwhm", "0.7",
                    "--wave-range", "6900", "7400", "--sources-out", tmp_path / "src", "--summary",
                    tmp_path / "deblend.tsv"], capfd)
    assert res.exit_code == 0, res.stderr
    worst, clipped = 0.0, 0
    for path in sorted((tmp_path / "src").glob("*.fits")):
        with fits.open(path) as h:
            s, v = h["SPE_DEBLEND_DATA"].data, h["SPE_DEBLEND_STAT"].data
            assert h["SPE_DEBLEND_DATA"].header["DBSOLVER"] == "template"
            clipped += h["SPE_DEBLEND_DATA"].header["DBNCLIP"]
        ok = np.isfinite(s) & np.isfinite(v) & (v > 0)
        worst = max(worst, float(np.mean(s[ok] < -5 * np.sqrt(v[ok]))))
    assert worst <= 0.002 and clipped > 0


@pytest.mark.parametrize("shrink", [True, False], ids=["shrunk", "raw-pixels"])
def test_image_noise_is_not_shared_into_the_faint_member(tmp_path, shrink):
    """The templates share the image's pixels out in proportion to the members' smooth models;
    the image's noise in the bright galaxy's template then becomes its light in the faint
    member's spectrum.  ``easy-0.7`` (a point-like galaxy 0.7″ from one 20 times brighter),
    noise-free cube, the HST-like image at its peak S/N of 200, seed 0: the faint galaxy's
    contamination is +1.6 % with the departures from the smooth models kept only where
    significant on the cube's PSF scale (``image_shrink``, default; the binned cube prefers
    them here), +3.8 % with the image's pixels as they are (+1.9 % with a noise-free image)."""
    import blend_scenes

    from ifu_extract.catalog import read_catalog
    from ifu_extract.deblend import DeblendConfig, deblend_catalog, resolve_psf
    from ifu_extract.deblend.config import RESID_SHRINK
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image

    scene = {s.name: s for s in blend_scenes.SCENES}["easy-0.7"]
    built = blend_scenes.build(scene, 0, tmp_path, nwave=200, peak_snr=1000.0, image=True)
    with open_cube(built.cube) as c:
        image, fine = model_images(read_image(built.image), c)
        res = deblend_catalog(c, read_catalog(built.catalog), resolve_psf(c), image=image, image_is_cube=False,
                              image_fine=fine, segmap=detect_sources(band_image(c)).segmap,
                              config=DeblendConfig(image_fwhm=blend_scenes.HST_FWHM,
                                                   image_shrink=RESID_SHRINK if shrink else 0.0))
    _, _, contamination = blend_scenes.score(res.sources[1].spectrum.flux, built.t_faint, built.t_bright)
    print(f"\ncontamination {contamination:+.4f}", end="")
    assert (abs(contamination) <= 0.025) == shrink


def _group_chi2(minicube, muselet_cat, hst_cutout, out, capfd):
    from conftest import run_main

    res = run_main(["deblend", minicube, muselet_cat, "--image", hst_cutout, "--image-fwhm", "0.1", "--fwhm", "0.7",
                    "--wave-range", "7500", "8500", "--sources-out", out, "--summary", out / "deblend.tsv"], capfd)
    assert res.exit_code == 0, res.stderr
    chi2 = {}
    for path in out.glob("*.fits"):
        with fits.open(path) as h:
            head = h["SPE_DEBLEND_DATA"].header
            assert head["DBSOLVER"] == "template"
            chi2[head["DBGROUP"]] = head["DBGCHI2"]
    return chi2


def test_real_image_departures_are_kept(minicube, muselet_cat, hst_cutout, tmp_path, monkeypatch, capfd):
    """Shrinking the image's departures from the smooth models must not throw away the real
    image's structure: on the minicube with its own WFPC2 F814W cut-out (shallow, one
    exposure), every group's chi2/dof over 7500-8500 Å is no worse (1 %) than with the
    image's pixels as they are.  A per-pixel 2σ threshold (the first version) removed the
    BCG's faint but coherent envelope (up to 4.31 against 1.96); thresholded on the cube's PSF
    scale alone it still lost in some groups (2.37 against 1.96), hence the choice per group
    by the binned cube."""
    import ifu_extract.deblend.models as models

    chosen = _group_chi2(minicube, muselet_cat, hst_cutout, tmp_path / "chosen", capfd)
    monkeypatch.setattr(models, "_shrink_residual", lambda sky, *args: sky)
    raw = _group_chi2(minicube, muselet_cat, hst_cutout, tmp_path / "raw", capfd)
    print(f"\nDBGCHI2 chosen {chosen} raw {raw}", end="")
    assert chosen.keys() == raw.keys() and len(raw) > 1
    assert all(chosen[g] <= 1.01 * raw[g] for g in raw)

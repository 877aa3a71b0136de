"""The fast paths of the white-light sums and of the PSF node images, against plain references."""

import numpy as np
import pytest

from ifu_extract import image, synth
from ifu_extract.cubeio import open_cube
from ifu_extract.psf import PSFModel


def _reference_sums(data, var):
    """Straightforward NaN-aware sums over axis 0 of ``(n_wave, ny, nx)`` arrays (float64)."""
    good = np.isfinite(data)
    if var is not None:
        good &= np.isfinite(var)
    total = np.where(good, data, 0.0).sum(axis=0, dtype=np.float64)
    vsum = None if var is None else np.where(good, var, 0.0).sum(axis=0, dtype=np.float64)
    return total, vsum, good.sum(axis=0)


@pytest.fixture
def dirty_cube(tmp_path):
    """A small MUSE-layout cube with every kind of bad voxel the sums must skip."""
    shape = (41, 9, 11)
    wave = 4750 + 1.25 * np.arange(shape[0])
    src = synth.SynthSource("a", 5.2, 4.7, synth.continuum_spectrum(wave, 10.0))
    data, var, dq, hdr, _ = synth.make_cube([src], shape=shape, sigma=0.5, nan_fraction=0.03, seed=7)
    data[:, 0, :] = np.nan          # a border row with no data at all
    data[3:9, 4, 6] = np.nan        # a few channels of one spaxel (not flagged in DQ)
    var[10:12, 2, 3] = np.nan       # variance missing where the data are finite
    var[20, 6, 8] = np.inf          # infinite variance: skipped like a NaN
    data[30, 7, 2] = np.inf         # infinite data
    path = tmp_path / "dirty.fits"
    synth.cube_hdulist(data, var, dq, hdr, layout="MUSE").writeto(path)
    return path


@pytest.mark.parametrize("block_bytes", [4e6, 3 * 9 * 11 * 4, 1.0])
def test_accumulate_matches_masked_sums(dirty_cube, monkeypatch, block_bytes):
    # One block, blocks of 3 channels (the last one short), and one channel per block.
    monkeypatch.setattr(image, "_BLOCK_BYTES", block_bytes)
    with open_cube(dirty_cube) as cube:
        d, v = cube.window(0, cube.nx, 0, cube.ny)
        for z0, z1 in ((0, cube.nwave), (5, 23)):
            total, vsum, count = image._accumulate(cube, z0, z1)
            ref_t, ref_v, ref_n = _reference_sums(d[z0:z1], v[z0:z1])
            assert count.dtype == np.int64 and np.array_equal(count, ref_n)
            # Same voxels summed in float64: equal to rounding of the grouping (1e-12 relative).
            np.testing.assert_allclose(total, ref_t, rtol=1e-12, atol=1e-12 * np.abs(ref_t).max())
            np.testing.assert_allclose(vsum, ref_v, rtol=1e-12)
    assert (count == 0).any() and (count < count.max()).sum() > 1 + cube.nx  # the dirty cases ran


def test_accumulate_without_variance(dirty_cube, tmp_path):
    from astropy.io import fits

    with open_cube(dirty_cube) as cube:
        d, _ = cube.window(0, cube.nx, 0, cube.ny)
        hdr = cube.data_header.copy()
    path = tmp_path / "novar.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(d, hdr, name="DATA")]).writeto(path)
    with open_cube(path) as cube:
        assert not cube.has_var
        total, vsum, count = image._accumulate(cube, 0, cube.nwave)
        img = image.band_image(cube)
    ref_t, _, ref_n = _reference_sums(d, None)
    assert vsum is None and img.var is None
    assert np.array_equal(count, ref_n)
    np.testing.assert_allclose(total, ref_t, rtol=1e-12, atol=1e-12 * np.abs(ref_t).max())
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(img.data, (ref_t / ref_n).astype(np.float32), rtol=1e-6)


def test_band_image_is_the_masked_mean(dirty_cube):
    with open_cube(dirty_cube) as cube:
        d, v = cube.window(0, cube.nx, 0, cube.ny)
        img = image.band_image(cube)
    ref_t, ref_v, ref_n = _reference_sums(d, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ref_n > 0, ref_t / ref_n, np.nan)
        var = np.where(ref_n > 0, ref_v / ref_n.astype(float) ** 2, np.nan)
    assert np.array_equal(np.isnan(img.data), ref_n == 0)
    np.testing.assert_allclose(img.data, mean.astype(np.float32), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(img.var, var.astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("shape, x0, y0", [((25, 25), 12.3, 11.7), ((13, 31), 20.61, 3.05),
                                           ((70, 64), 31.5, 40.2)])
def test_moffat_images_equal_moffat_image(shape, x0, y0):
    # 70 x 64 takes several groups of FWHM; β varies per FWHM as with MUSE FSF polynomials.
    fwhm = np.linspace(2.9, 4.4, 24)
    beta = np.linspace(2.4, 3.1, 24)
    got = synth.moffat_images(shape, x0, y0, fwhm, beta)
    ref = np.array([synth.moffat_image(shape, x0, y0, f, b) for f, b in zip(fwhm, beta)])
    assert got.shape == (24, *shape)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    one = synth.moffat_images(shape, x0, y0, 3.3, 2.8)  # scalars: one image
    np.testing.assert_allclose(one[0], synth.moffat_image(shape, x0, y0, 3.3, 2.8), rtol=1e-12)


def test_node_images_equal_per_node_rendering():
    wave = np.linspace(4750.0, 9350.0, 3681)
    psf = PSFModel("moffat", (2.4e-9, -6e-5, 1.2), (1e-5, 2.7), "header")
    imgs, i0, frac = psf.node_images(wave, (27, 23), 11.4, 13.8, 0.2)
    fwhm_pix = psf.fwhm(wave) / 0.2
    grid = np.linspace(fwhm_pix.min(), fwhm_pix.max(), 24)
    beta = np.interp(grid, np.sort(fwhm_pix), psf.beta(wave)[np.argsort(fwhm_pix)])
    ref = np.array([synth.moffat_image((27, 23), 11.4, 13.8, f, b) for f, b in zip(grid, beta)])
    np.testing.assert_allclose(imgs, ref, rtol=1e-12, atol=0)
    # And the per-channel stamps interpolate those nodes.
    k = np.arange(0, len(wave), 500)
    st = psf.stamps(wave, (27, 23), 11.4, 13.8, 0.2)[k]
    np.testing.assert_allclose(st, ref[i0[k]] * (1 - frac[k, None, None]) + ref[i0[k] + 1] * frac[k, None, None],
                               rtol=1e-12)


def _fsf_cube_header(cards):
    from astropy.io import fits
    hdr = fits.Header()
    for k, v in cards.items():
        hdr[k] = v
    return hdr


@pytest.mark.parametrize("cards", [
    {"FSFMODE": "MOFFAT1", "FSF01BET": 2.8, "FSF01FWA": 0.862, "FSF01FWB": -3.46e-05},
    {"FSFMODE": 2, "FSFLB1": 5000, "FSFLB2": 9000, "FSF00FNC": 3, "FSF00F00": 0.02,
     "FSF00F01": -0.21, "FSF00F02": 0.71, "FSF00BNC": 2, "FSF00B00": 0.3, "FSF00B01": 2.5},
])
def test_native_fsf_reader_matches_mpdaf(cards):
    from mpdaf.MUSE import FSFModel

    from ifu_extract.psfmodel import _muse_fsf

    hdr = _fsf_cube_header(cards)
    field = int(next(k for k in cards if k[3:5].isdigit())[3:5])
    wave = np.linspace(4750.0, 9350.0, 32)
    fw, be = _muse_fsf(hdr, field)(wave)
    model = FSFModel.read(hdr, field=field, pixstep=0.2)
    np.testing.assert_allclose(fw, model.get_fwhm(wave), rtol=1e-13)
    np.testing.assert_allclose(be, np.atleast_1d(model.get_beta(wave)) * np.ones_like(wave), rtol=1e-13)
    assert fw.std() > 0 and (cards["FSFMODE"] == "MOFFAT1" or be.std() > 0)


def test_native_fsf_reader_declines_what_it_does_not_know():
    from ifu_extract.psfmodel import _muse_fsf

    assert _muse_fsf(_fsf_cube_header({"FSFMODE": "MOFFAT1", "FSF01BET": 2.8}), 1) is None
    assert _muse_fsf(_fsf_cube_header({"FSFMODE": 3, "FSF01BET": 2.8}), 1) is None
    assert _muse_fsf(_fsf_cube_header({"FSFMODE": "MOFFAT1"}), None) is None


def test_psf_from_mosaic_header_without_mpdaf_import(mosaic, monkeypatch):
    """The mosaic's FSF keywords give the same PSF as through mpdaf, without importing it."""
    import sys

    from mpdaf.MUSE import FSFModel

    from ifu_extract import psf as psfmod

    with open_cube(mosaic) as cube:
        hdr = cube.primary_header.copy()
        hdr.update({k: v for k, v in cube.data_header.items() if k.startswith("FSF")})
        wave = np.linspace(cube.wave[0], cube.wave[-1], 32)
        ref = FSFModel.read(hdr, field=1, pixstep=cube.pixscale)
        monkeypatch.setitem(sys.modules, "mpdaf.MUSE", None)  # any import of it now fails
        model = psfmod.psf_from_cube(cube)
    np.testing.assert_allclose(model.fwhm(wave), ref.get_fwhm(wave), rtol=1e-9)
    np.testing.assert_allclose(model.beta(wave), np.atleast_1d(ref.get_beta(wave)) * np.ones(32), rtol=1e-9)

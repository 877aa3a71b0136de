"""The line scan: continuum-subtracted narrow bands slid through the cube, detections merged into
emitters, their narrow-band images as extraction weights (issue 4, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from ifu_extract import synth
from ifu_extract.contsub import subtract_continuum
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import InputError
from ifu_extract.linescan import (DEFAULT_SKY_WINDOWS, ScanConfig, emitter_image, extract_emitter,
                                  merge_emitters, scan_lines)
from ifu_extract.psf import psf_from_cube
from ifu_extract.wcsutil import pixel_to_world

SHAPE = (480, 40, 40)           # 4750-5349 Angstrom, 8" x 8"
LINE, LINE_SIGMA = 5100.0, 1.5  # Angstrom
EMITTER = (22.3, 17.6)


def _galaxy(wave):
    """A bright continuum galaxy with absorption features and a break (never a line emitter)."""
    return synth.continuum_spectrum(wave, 25.0, 0.6, [(4861, 5, .4), (5175, 8, .35), (5270, 6, .2)]) * (
        0.7 + 0.3 / (1 + np.exp(-(wave - 5000) / 20)))


def _cube(path, seed, *, line_snr=10.0, with_emitter=True, sky_line=False):
    """Noise sigma 1; the emitter's line flux set so that its expected matched-filter S/N in
    the 5 Angstrom band centred on the line is *line_snr*."""
    wave = 4750.0 + 1.25 * np.arange(SHAPE[0])
    srcs = [synth.SynthSource("G", 10.2, 30.1, _galaxy(wave), kind="sersic", re_arcsec=0.5, n=1.0)]
    flux = 0.0
    if with_emitter:
        unit = synth.emission_line(wave, LINE, LINE_SIGMA, 1.0)
        _, _, _, _, t1 = synth.make_cube([synth.SynthSource("E", *EMITTER, unit)], shape=SHAPE, sigma=0.0,
                                         keep_models=True)
        band = (wave >= LINE - 2.5) & (wave < LINE + 2.5)
        nb = t1.models["E"][band].mean(axis=0)          # noise-free band image of unit flux
        # side bands (2 x 20 Angstrom) add their noise to the band's; matched filter = profile.
        sig_nb = np.sqrt(1.0 / band.sum() + 0.5 / 16.0)
        p = nb / nb.sum()
        snr_unit = (p * nb).sum() / sig_nb / np.sqrt((p * p).sum())
        flux = line_snr / snr_unit
        srcs.append(synth.SynthSource("E", *EMITTER, unit * flux))
    sky = None
    if sky_line:  # a sky-subtraction residual at [O I] 5577 would be out of range: use 5300
        sky = synth.emission_line(wave, 5300.0, 1.5, 30.0)
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=SHAPE, sigma=1.0, seed=seed, nan_fraction=1e-4,
                                                sky=sky)
    synth.cube_hdulist(data, var, dq, hdr).writeto(path, overwrite=True)
    return flux, truth


def test_line_emitter_found_and_flux_recovered(tmp_path):
    """A line-only emitter at S/N 10 in its narrow band is found, at its wavelength, and its
    MUSE_NB spectrum holds >= 80 % of the line flux; the continuum galaxy is not an emitter."""
    path = tmp_path / "cube.fits"
    flux, truth = _cube(path, seed=4)
    with open_cube(path) as cube:
        psf = psf_from_cube(cube)
        scan = scan_lines(cube, psf=psf)
        cat = scan.catalog
        print(f"\nline scan: {len(cat)} emitter(s), {len(scan.bands)} bands "
              f"({scan.skipped} skipped); expected S/N 10")
        print(cat["ID", "X", "Y", "LBDA", "SNR", "NLINES", "NBANDS"])
        assert len(cat) == 1
        e = cat[0]
        assert np.hypot(e["X"] - EMITTER[0], e["Y"] - EMITTER[1]) < 1.0
        assert abs(e["LBDA"] - LINE) <= 2.5 and e["NLINES"] == 1
        assert 6.0 < e["SNR"] < 15.0
        img = emitter_image(cube, e["LBDA"], scan.config)
        assert img.shape == (40, 40) and img.wcs is not None and img.var is not None
        assert np.unravel_index(np.nanargmax(img.data), img.shape) in [(17, 22), (18, 22), (17, 23), (18, 23)]
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
    print(f"\npure noise: {len(scan.catalog)} false detection(s) in {len(scan.bands)} bands")
    assert len(scan.catalog) <= 1
    data = synth.make_cube([], shape=SHAPE, sigma=1.0, seed=21)
    synth.cube_hdulist(*data[:4]).writeto(tmp_path / "flat.fits")
    with open_cube(tmp_path / "flat.fits") as cube:
        assert len(scan_lines(cube, psf=psf_from_cube(cube)).catalog) <= 1


def test_sky_windows_are_skipped(tmp_path):
    """No band touches a sky window: a line inside one is not reported (the built-in list holds
    the bright night-sky lines; any window can be given)."""
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
    assert len(plain.catalog) == 1 and len(scan.catalog) == 0
    assert scan.skipped > plain.skipped == 0
    centre = scan.bands.mean(axis=1)
    inside = (centre > window[0]) & (centre < window[1])
    assert inside.sum() >= 4 and not scan.scanned[inside].any() and plain.scanned.all()


def test_merge_catalog_ids_win(tmp_path):
    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        scan = scan_lines(cube, psf=psf_from_cube(cube))
        ra, dec = pixel_to_world(cube.wcs, np.array([10.2, EMITTER[0] + 1.0]), np.array([30.1, EMITTER[1]]))
        cat = Table({"ID": ["gal", "near"], "RA": ra, "DEC": dec, "STATUS": ["ok", "ok"]})
        merged = merge_emitters(cat, scan.catalog, cube, radius=0.6)
        assert list(merged["ID"]) == ["gal", "near"]          # matched within 0.6": no new row
        assert np.isnan(merged["LINE_WAVE"][0]) and abs(merged["LINE_WAVE"][1] - LINE) < 3
        far = merge_emitters(cat[:1], scan.catalog, cube, radius=0.6)
        assert list(far["ID"]) == ["gal", "L1"] and list(far["ORIGIN"]) == ["catalog", "linescan"]
        assert far["STATUS"][1] == "ok"


def test_scan_on_a_contsub_cube_and_bad_options(tmp_path):
    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    subtract_continuum(path, tmp_path / "cs.fits", method="median", median_width=100.0)
    with open_cube(path) as cube, open_cube(tmp_path / "cs.fits") as cs:
        scan = scan_lines(cube, contsub=cs, psf=psf_from_cube(cube), config=ScanConfig(side_width=0.0))
        assert len(scan.catalog) == 1 and abs(scan.catalog["LBDA"][0] - LINE) <= 2.5
        with pytest.raises(InputError, match="narrower than one channel"):
            scan_lines(cube, config=ScanConfig(window=0.5))
        with pytest.raises(InputError, match="empty"):
            scan_lines(cube, config=ScanConfig(sky_windows=((5000.0, 4990.0),)))


def test_scan_catalog_and_emitter_images_round_trip(tmp_path):
    """What ``detect --line-scan`` writes: the merged catalogue and the emitters' narrow-band
    images (WCS, band, variance), which give the same MUSE_NB spectrum when read back."""
    from ifu_extract.linescan import read_emitter_images, scan_catalog, write_emitter_images

    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        psf = psf_from_cube(cube)
        merged, scan = scan_catalog(cube, None, psf=psf)
        assert list(merged["ID"]) == ["L1"] and merged["ORIGIN"][0] == "linescan"
        write_emitter_images(tmp_path / "nb.fits", cube, scan, inputs={"cube": path})
        images = read_emitter_images(tmp_path / "nb.fits")
        assert set(images) == {"L1"}
        img = images["L1"]
        direct = emitter_image(cube, scan.catalog["LBDA"][0], scan.config)
        assert np.allclose(img.data, direct.data, equal_nan=True) and img.var is not None
        assert img.wcs is not None and abs(img.meta["LINEWAVE"][0] - scan.catalog["LBDA"][0]) < 1.3
        e = scan.catalog[0]
        a = extract_emitter(cube, e["X"], e["Y"], img, psf=psf)
        b = extract_emitter(cube, e["X"], e["Y"], direct, psf=psf)
        assert np.allclose(a.flux, b.flux, equal_nan=True)


def test_merge_into_a_detect_catalogue(tmp_path):
    """A catalogue from ``detect`` (integer IDs, many columns) takes the emitters as new rows."""
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image

    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        det = detect_sources(band_image(cube)).catalog
        scan = scan_lines(cube, psf=psf_from_cube(cube))
        merged = merge_emitters(det, scan.catalog, cube)
    assert len(merged) == len(det) + 1
    assert merged["ID"][-1] == "L1" and merged["ORIGIN"][-1] == "linescan"
    assert [str(v) for v in merged["ID"][:-1]] == [str(v) for v in det["ID"]]
    assert np.isnan(merged["flux"][-1]) and abs(merged["LINE_WAVE"][-1] - LINE) < 3

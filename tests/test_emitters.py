"""The line emitters: merged into catalogues (catalogue IDs win), their narrow-band images
(written, read back) and MUSE_NB spectra (issues 4 and 16)."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ifu_extract.cubeio import open_cube
from ifu_extract.emitters import emitter_image, extract_emitter, merge_emitters
from ifu_extract.linescan import scan_lines
from ifu_extract.psf import psf_from_cube
from ifu_extract.wcsutil import pixel_to_world
from linescan_helpers import EMITTER, LINE, make_cube as _cube


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


def test_scan_catalog_and_emitter_images_round_trip(tmp_path):
    """What ``detect --line-scan`` writes: the merged catalogue and the emitters' narrow-band
    images (WCS, band, variance), which give the same MUSE_NB spectrum when read back."""
    from ifu_extract.emitters import read_emitter_images, scan_catalog, write_emitter_images

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
        from astropy.io import fits
        with fits.open(tmp_path / "nb.fits") as hdul:  # the calibration travels with the images
            assert hdul[0].header["SNRTHR"] == 5.5 and hdul[0].header["NFALSE"] == scan.n_false
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

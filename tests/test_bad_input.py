"""Whole-input problems: one stderr line naming the file, exit 1 (2 for usage), no traceback,
no output file.  Row problems: a status and a warning, the batch goes on."""

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main, write_synth
from ifu_extract import synth


@pytest.fixture(scope="module")
def good_cube(tmp_path_factory):
    wave = 4750 + 1.25 * np.arange(40)
    path = tmp_path_factory.mktemp("good") / "good.fits"
    write_synth(path, [synth.SynthSource("1", 10, 10, synth.continuum_spectrum(wave, 5.0))],
                shape=(40, 20, 20), sigma=0.2, seed=5)
    return path


def _one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.stderr
    assert len(res.err_lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


def test_not_fits(tmp_path, capfd):
    p = tmp_path / "notes.fits"
    p.write_text("this is not a cube\n")
    out = tmp_path / "img.fits"
    res = run_main(["image", p, "-o", out], capfd)
    _one_line_error(res, str(p), "not a FITS file")
    assert not out.exists()


def test_no_3d_hdu(tmp_path, capfd):
    p = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((5, 5), np.float32))]).writeto(p)
    res = run_main(["info", p], capfd)
    _one_line_error(res, "no 3-D image extension", "--data-ext")


def test_no_celestial_wcs(tmp_path, capfd):
    p = tmp_path / "nowcs.fits"
    h = fits.Header({"CTYPE3": "AWAV", "CUNIT3": "Angstrom", "CRVAL3": 5000.0, "CDELT3": 1.25,
                     "CRPIX3": 1.0})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((5, 4, 4), np.float32), h, name="DATA")]).writeto(p)
    res = run_main(["info", p], capfd)
    _one_line_error(res, "no celestial WCS")


def test_all_nan_cube(tmp_path, capfd, good_cube):
    p = tmp_path / "nan.fits"
    with fits.open(good_cube) as hdul:
        hdul["DATA"].data[:] = np.nan
        hdul.writeto(p)
    out = tmp_path / "w.fits"
    res = run_main(["image", p, "-o", out], capfd)
    _one_line_error(res, "no finite data value")
    assert not out.exists()


def test_wrong_data_ext(capfd, good_cube, tmp_path):
    res = run_main(["image", good_cube, "-o", tmp_path / "x.fits", "--data-ext", "SCI"], capfd)
    _one_line_error(res, "no extension 'SCI'", "1:DATA")


def test_truncated_fits(tmp_path, capfd, good_cube):
    p = tmp_path / "trunc.fits"
    raw = good_cube.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "w.fits"
    res = run_main(["image", p, "-o", out], capfd)
    _one_line_error(res, "truncated")
    assert not out.exists()


def test_unwritable_output(tmp_path, capfd, good_cube):
    res = run_main(["image", good_cube, "-o", tmp_path / "no" / "such" / "dir" / "w.fits"], capfd)
    _one_line_error(res, "output folder does not exist")
    target = tmp_path / "ro"
    target.mkdir()
    (target / "w.fits").mkdir()  # a folder where the file should go: cannot be replaced
    res = run_main(["image", good_cube, "-o", target / "w.fits"], capfd)
    assert res.exit_code in (1, 2) and "Traceback" not in res.stderr
    assert not any(p.name.startswith(".w.fits") for p in target.iterdir())


def test_usage_error_exit_2(capfd, good_cube):
    res = run_main(["image", good_cube], capfd)
    _one_line_error(res, "Missing option", code=2)


def test_catalog_missing_columns(tmp_path, capfd, good_cube):
    cat = tmp_path / "cat.dat"
    cat.write_text("ID X Y\n1 3 4\n")
    res = run_main(["cutout", good_cube, cat, "-o", tmp_path / "co"], capfd)
    _one_line_error(res, str(cat), "no RA/DEC column")


def test_catalog_non_numeric_ra(tmp_path, capfd, good_cube):
    cat = tmp_path / "cat.dat"
    cat.write_text("ID RA DEC\n1 foo bar\n")
    res = run_main(["cutout", good_cube, cat, "-o", tmp_path / "co"], capfd)
    _one_line_error(res, "no row with a valid ID, RA and DEC")


def test_rows_outside_field_reported_others_go_on(tmp_path, capfd, good_cube):
    with fits.open(good_cube) as h:
        from ifu_extract.wcsutil import celestial_from_header

        wcs = celestial_from_header(h["DATA"].header)
    ra, dec = wcs.all_pix2world([10, 500], [10, 500], 0)
    cat = tmp_path / "cat.dat"
    cat.write_text(f"ID RA DEC\n1 {ra[0]} {dec[0]}\n2 {ra[1]} {dec[1]}\n3 nan 2\n")
    res = run_main(["cutout", good_cube, cat, "-o", tmp_path / "co", "--size", "2"], capfd)
    assert res.exit_code == 0
    assert "object 2: RA/DEC" in res.stderr and "outside the cube" in res.stderr
    assert "object 3: bad_coordinates" in res.stderr
    assert (tmp_path / "co" / "1.fits").exists() and not (tmp_path / "co" / "2.fits").exists()
    # Only off-field objects: nothing processed -> exit 1.
    cat.write_text(f"ID RA DEC\n2 {ra[1]} {dec[1]}\n")
    res = run_main(["cutout", good_cube, cat, "-o", tmp_path / "co2"], capfd)
    assert res.exit_code == 1 and "no object could be processed" in res.stderr

"""Cut-outs equal the cube's values and WCS exactly; info and image on real MUSE data."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main
from ifu_extract.cubeio import open_cube
from ifu_extract.wcsutil import quiet_wcs


def _world(path, ext, pix):
    """World coordinates (N, 3) of 0-based (x, y, z) pixel rows *pix* (N, 3)."""
    hdr = fits.getheader(path, ext)
    return np.array(quiet_wcs(hdr).all_pix2world(pix, 0))


def test_cutouts_equal_cube_values_and_wcs(point_field, tmp_path, capfd):
    path, truth = point_field
    cat = tmp_path / "cat.tsv"
    cat.write_text("ID\tRA\tDEC\n" + "".join(f"{s.id}\t{truth.ra[s.id]}\t{truth.dec[s.id]}\n"
                                           for s in truth.sources))
    out = tmp_path / "co"
    res = run_main(["cutout", path, cat, "-o", out, "--size", "2.2", "--wave-range", "4800", "4900"], capfd)
    assert res.exit_code == 0, res.stderr
    summary = Table.read(out / "cutouts.tsv", format="ascii.tab")
    assert list(summary["STATUS"]) == ["ok", "ok", "ok"]
    with fits.open(path) as parent:
        pdata, pstat = parent["DATA"].data, parent["STAT"].data
        for row in summary:
            with fits.open(out / row["FILE"]) as sub:
                z0 = sub[0].header["Z0"]
                x0, y0 = row["X0"], row["Y0"]
                d = sub["DATA"].data
                assert d.shape == (81, 11, 11)  # 2.2"/0.2" = 11 spaxels; 4800-4900 A = 81 channels
                ref = pdata[z0:z0 + 81, y0:y0 + 11, x0:x0 + 11]
                np.testing.assert_array_equal(d, ref)
                np.testing.assert_array_equal(sub["STAT"].data, pstat[z0:z0 + 81, y0:y0 + 11, x0:x0 + 11])
            # Same sky position and wavelength for the same voxel, to 1e-9 deg / 1e-6 A.
            pts = np.array([[0, 0, 0], [10, 10, 80], [3, 5, 40]], dtype=float)  # (x, y, z) rows
            sub_w = _world(out / row["FILE"], "DATA", pts)
            par_w = _world(path, "DATA", pts + [x0, y0, z0])
            np.testing.assert_allclose(sub_w[:, :2], par_w[:, :2], rtol=0, atol=1e-9)
            np.testing.assert_allclose(sub_w[:, 2], par_w[:, 2], rtol=0, atol=1e-12)
            # The object's sky position lands on the stamp's central spaxel.
            x, y = quiet_wcs(fits.getheader(out / row["FILE"], "DATA")).celestial.all_world2pix(
                [row["RA"]], [row["DEC"]], 0)
            assert abs(x[0] - 5) <= 0.5 and abs(y[0] - 5) <= 0.5


def test_edge_cutout_padded_and_flagged(minicube, tmp_path, capfd, muselet_cat):
    out = tmp_path / "co"
    res = run_main(["cutout", minicube, muselet_cat, "-o", out, "--size", "3"], capfd)
    assert res.exit_code == 0, res.stderr
    summary = Table.read(out / "cutouts.tsv", format="ascii.tab")
    row = summary[summary["ID"] == 4][0]  # 2 spaxels from the bottom edge
    assert row["STATUS"] == "edge_partial"
    with fits.open(out / "4.fits") as sub:
        d = sub["DATA"].data
        assert sub[0].header["STATUS"] == "edge_partial"
        assert np.isnan(d[:, : -row["Y0"], :]).all()  # rows below the cube are padding
        assert np.isfinite(d[:, -row["Y0"]:, :]).mean() > 0.9


def test_info_minicube_and_mosaic_fsf(minicube, mosaic, capfd):
    res = run_main(["info", minicube, "--json"], capfd)
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["layout"] == "MUSE"
    assert info["extensions"] == {"data": "1:DATA", "variance": "2:STAT (var)", "quality": "3:DQ"}
    assert info["shape"] == {"nwave": 3681, "ny": 40, "nx": 40}
    assert info["spaxel_arcsec"] == pytest.approx(0.2)
    assert info["wavelength"]["min"] == pytest.approx(4749.89, abs=0.01)
    assert info["wavelength"]["max"] == pytest.approx(9349.89, abs=0.01)
    assert info["instrument"] == "MUSE"
    res = run_main(["info", mosaic, "--json"], capfd)
    fsf = json.loads(res.stdout)["fsf"]
    assert fsf["mode"] == "MOFFAT1" and fsf["nfields"] == 9
    # FSF01: FWHM = 0.862 - 3.46e-5 * lambda  (MOFFAT1 convention, lambda in Angstrom)
    assert fsf["fields"][0]["fwhm_arcsec"][0] == pytest.approx(0.862 - 3.46e-5 * 4750.0, abs=1e-3)
    assert fsf["fields"][0]["beta"] == [2.8, 2.8]


def test_white_image_matches_mpdaf(minicube, tmp_path, capfd):
    from mpdaf.obj import Cube

    out = tmp_path / "white.fits"
    res = run_main(["image", minicube, "-o", out], capfd)
    assert res.exit_code == 0
    ours = fits.getdata(out, "DATA")
    ref = Cube(str(minicube)).mean(axis=0)
    np.testing.assert_allclose(ours, ref.data.filled(np.nan), rtol=1e-5, atol=1e-5)
    hdr = fits.getheader(out, "DATA")
    assert hdr["CTYPE1"] == "RA---TAN" and hdr["BUNIT"]
    assert fits.getheader(out, 0)["IFXTOOL"] == "image"


def test_narrowband_recovers_line(tmp_path, capfd):
    from conftest import write_synth
    from ifu_extract import synth

    wave = 4750 + 1.25 * np.arange(300)
    spec = synth.continuum_spectrum(wave, 30.0, 0.5) + synth.emission_line(wave, 4950.0, 2.0, 2000.0)
    path = tmp_path / "nb.fits"
    write_synth(path, [synth.SynthSource("1", 12.0, 12.0, spec)], shape=(300, 25, 25), sigma=0.05, seed=2)
    out = tmp_path / "nb_img.fits"
    res = run_main(["image", path, "-o", out, "--line", "4950", "--width", "20"], capfd)
    assert res.exit_code == 0, res.stderr
    img = fits.getdata(out, "DATA")
    # Mean flux density over the 20 A band x 20 A = line flux (continuum removed), summed over
    # the field: within 3 % (PSF wings beyond the 5" field and the sloped continuum's curvature).
    n_chan = np.count_nonzero(np.abs(wave - 4950) <= 10)
    total = np.nansum(img) * n_chan * 1.25
    assert total == pytest.approx(2000.0, rel=0.03)
    with open_cube(path) as cube:
        assert cube.nwave == 300

"""extract: the same rows and header as MPDAF's PixTable.extract, in both layouts and both
coordinate conventions, with float64 boundaries; bad selections fail in one line."""

import warnings

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main
from ifu_extract.errors import InputError
from ifu_extract.pixtable.extract import extract
from ifu_extract.pixtable.header import COLUMNS, ccd_to_sky_slice
from ifu_extract.pixtable.reader import PixTable
from ifu_extract.pixtable.select import Selection, run_selection
from ifu_extract.pixtable.sky import SkyRegion
from pixtable_helpers import RA0, DEC0, mpdaf_pixtable, offset, selected_rows, table

# MPDAF extract() keyword arguments -> our Selection; sky tuples are MPDAF's (dec, ra, size, shape)
CASES = {
    "circle+wave": dict(sky=[(DEC0 + 0.3 / 3600, RA0, 2.0, "C")], lbda=[(6000.0, 6100.0)]),
    "two-apertures": dict(sky=[(offset(6, 2)[1], offset(6, 2)[0], 3.0, "S"),
                               (offset(-12, -3)[1], offset(-12, -3)[0], 1.5, "C")]),
    "ifu": dict(ifu=[2]),
    "ifus+slices": dict(ifu=[1, 3], sl=[5, 6, 40]),
    "pixels": dict(xpix=[(100, 300), (500, 520)], ypix=[(50, 70)]),
    "or": dict(ifu=[2], lbda=[(6000.0, 6100.0), (8000.0, 8003.0)], method="or"),
}


def _selection(kw, **extra):
    kw = dict(kw)
    return Selection(regions=tuple(SkyRegion(r[1], r[0], r[2], r[3]) for r in kw.get("sky", [])),
                     wave=tuple(kw.get("lbda", [])), ifus=tuple(kw.get("ifu", [])),
                     slices=tuple(kw.get("sl", [])), xpix=tuple(kw.get("xpix", [])),
                     ypix=tuple(kw.get("ypix", [])), exposures=tuple(kw.get("exp", [])),
                     method=kw.get("method", "and"), **extra)


def _mpdaf_extract(path, kw, filename):
    mp = mpdaf_pixtable(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mp.extract(filename=str(filename), **kw)


def _pixtable_keywords(path):
    h = fits.getheader(path)
    return {k: h[k] for k in h if k.startswith("ESO DRS MUSE PIXTABLE")}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_extract_same_rows_and_header_as_mpdaf(case, convention, tmp_path):
    path, _, _ = table(convention=convention)
    ours = tmp_path / "ours.fits"
    with PixTable(path, chunk_rows=10_000) as pt:  # many chunks: boundaries must not matter
        res = extract(pt, _selection(CASES[case]), ours)
    theirs = tmp_path / "mpdaf.fits"
    mp_out = _mpdaf_extract(path, CASES[case], theirs)
    assert res.nrows == mp_out.nrows > 0
    a, b = mpdaf_pixtable(ours), mpdaf_pixtable(theirs)  # ours opens in MPDAF
    for name in COLUMNS:
        np.testing.assert_array_equal(a.get_column(name), b.get_column(name))
    assert _pixtable_keywords(ours) == _pixtable_keywords(theirs)


def test_extract_table_layout_in_and_out(tmp_path):
    path, _, _ = table(layout="table", convention="projected")
    kw = CASES["circle+wave"]
    out = tmp_path / "t.fits"
    with PixTable(path) as pt:
        extract(pt, _selection(kw), out, layout="table")
    with fits.open(out) as hdul:
        hdul.verify("exception")
        assert hdul[1].header["XTENSION"] == "BINTABLE"
        assert hdul[1].columns.names == list(COLUMNS)
    mine = mpdaf_pixtable(out)
    ref = _mpdaf_extract(path, kw, tmp_path / "ref.fits")
    assert not mine.ima and mine.nrows == ref.nrows
    np.testing.assert_array_equal(mine.get_data(), ref.get_data())
    assert str(mine.wcs) == "rad" and mine.projection == "projected"


def test_exposure_selection_renumbers_like_mpdaf(tmp_path):
    path, _, _ = table(n_exp=3, nrows=90_000)
    kw = dict(exp=[2, 3], lbda=[(5000.0, 5600.0)])
    with PixTable(path, chunk_rows=7_000) as pt:
        extract(pt, _selection(kw), tmp_path / "ours.fits")
    _mpdaf_extract(path, kw, tmp_path / "mpdaf.fits")
    mine = _pixtable_keywords(tmp_path / "ours.fits")
    assert mine == _pixtable_keywords(tmp_path / "mpdaf.fits")
    assert mine["ESO DRS MUSE PIXTABLE COMBINED"] == 2
    assert "ESO DRS MUSE PIXTABLE EXP3 FIRST" not in mine


def test_wavelength_bounds_compared_in_float64():
    """Bounds between two float32 values: a float32 comparison of the rounded bound would
    differ from MPDAF's float64 one; ours does not."""
    path, _, _ = table()
    mp = mpdaf_pixtable(path)
    with PixTable(path) as pt:
        lam = pt.read("lambda")
        v = lam[12_345]
        below = np.nextafter(v, np.float32(-np.inf))
        n_at = int(np.count_nonzero(lam == v))
        bounds = [float(v), (float(v) + float(below)) / 2, float(v) + 1e-9,
                  float(np.nextafter(np.float64(v), -np.inf))]
        for lo in bounds:
            for hi in bounds:
                for ranges in ([(lo, 9000.0)], [(4000.0, hi)], [(lo, 9000.0), (4000.0, hi)]):
                    ours = selected_rows(run_selection(pt, Selection(wave=tuple(ranges))))
                    theirs = np.flatnonzero(mp.select_lambda(ranges))
                    np.testing.assert_array_equal(ours, theirs)
        # the row at v is in [v, ...) and not in [v + 1e-9, ...)
        with_v = selected_rows(run_selection(pt, Selection(wave=((float(v), float(v) + 1),))))
        without = selected_rows(run_selection(pt, Selection(wave=((float(v) + 1e-9,
                                                                    float(v) + 1),))))
        assert with_v.size - without.size == n_at


@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_sky_aperture_boundary_rows_as_mpdaf(convention):
    """Radii equal to the distance of given rows: those rows sit on the boundary (MPDAF's
    test is a strict '<' in float64); the float32 pre-selection must keep them."""
    path, _, _ = table(convention=convention)
    mp = mpdaf_pixtable(path)
    ra, dec = mp.get_pos_sky()
    d = np.sqrt(((ra - RA0) * 3600 * np.cos(np.deg2rad(DEC0))) ** 2 + ((dec - DEC0) * 3600) ** 2)
    with PixTable(path, chunk_rows=30_000) as pt:
        for row in (17, 5_000, 77_777):
            for shape in ("C", "S"):
                for size in (d[row], np.nextafter(d[row], np.inf), np.nextafter(d[row], 0)):
                    sel = Selection(regions=(SkyRegion(RA0, DEC0, float(size), shape),))
                    ours = selected_rows(run_selection(pt, sel))
                    theirs = np.flatnonzero(mp.select_sky([(DEC0, RA0, float(size), shape)]))
                    np.testing.assert_array_equal(ours, theirs)


def test_stacks_have_twelve_slices_mpdaf_drops_two():
    """MPDAF's select_stacks iterates range(1 + 12*(st-1), 12*st - 1): SKY slices 12st-1 and
    12st are missing from each stack.  Ours has all 12; otherwise the rows agree."""
    path, _, _ = table()
    mp = mpdaf_pixtable(path)
    with PixTable(path) as pt:
        origin = pt.read("origin")
        sky = ccd_to_sky_slice(origin & 0x3F)
        for st in (1, 3):
            ours = selected_rows(run_selection(pt, Selection(stacks=(st,))))
            theirs = np.flatnonzero(mp.select_stacks([st]))
            assert np.array_equal(ours, np.flatnonzero((sky > 12 * (st - 1)) & (sky <= 12 * st)))
            missing = np.setdiff1d(ours, theirs)
            assert np.all(np.isin(sky[missing], [12 * st - 1, 12 * st]))
            assert np.array_equal(np.setdiff1d(ours, missing), theirs)


def test_extract_cli_matches_library(tmp_path, capfd):
    path, _, _ = table()
    out = tmp_path / "cli.fits"
    res = run_main(["pixtable", "extract", path, "-o", out, "--circle", RA0, DEC0 + 0.3 / 3600,
                    2.0, "--wave-range", 6000, 6100, "--threads", 2, "--chunk-rows", 65536],
                   capfd)
    assert res.exit_code == 0, res.stderr
    ref = _mpdaf_extract(path, CASES["circle+wave"], tmp_path / "ref.fits")
    mine = mpdaf_pixtable(out)
    np.testing.assert_array_equal(mine.get_origin(), ref.get_origin())
    assert f"{ref.nrows} rows" in res.stderr
    h = fits.getheader(out)
    assert h["IFXTOOL"] == "pixtable extract" and h["ORIGIN"] == "ifu-extract"


def test_no_matching_row_is_an_input_error(tmp_path):
    path, _, _ = table()
    out = tmp_path / "none.fits"
    with PixTable(path) as pt, pytest.raises(InputError, match="no row matches"):
        extract(pt, Selection(wave=((100.0, 200.0),)), out)
    assert not out.exists()
    with PixTable(path) as pt, pytest.raises(InputError, match="exposure"):
        extract(pt, Selection(exposures=(1,)), out)

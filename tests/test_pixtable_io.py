"""Pixel tables: the synthetic generator, both layouts, header conventions, info."""

import logging

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main
from ifu_extract.pixtable.header import (COLUMNS, KEYWORD, ccd_to_sky_slice, read_meta,
                                         sky_to_ccd_slice, stack_ccd_slices)
from ifu_extract.pixtable.info import format_info, table_info
from ifu_extract.pixtable.origin import decode, xoffset_lut
from ifu_extract.pixtable.reader import PixTable
from pixtable_helpers import mpdaf_pixtable, table


@pytest.mark.parametrize("layout", ["image", "table"])
@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_synth_tables_open_in_mpdaf_with_same_columns(layout, convention):
    path, geo, spec = table(layout=layout, convention=convention)
    with fits.open(path) as hdul:
        hdul.verify("exception")  # a valid FITS file
        assert (hdul[1].header["XTENSION"] == "IMAGE") == (layout == "image")
    mp = mpdaf_pixtable(path)
    assert mp.nrows == spec.nrows == 120_000
    assert mp.ima == (layout == "image")
    assert mp.nifu == 4 and mp.fluxcal and mp.projection == convention
    assert str(mp.wcs) == ("deg" if convention == "positioned" else "rad")
    with PixTable(path, chunk_rows=50_000) as pt:
        assert pt.layout == layout and pt.nrows == spec.nrows
        for name in COLUMNS:
            ours = pt.read(name)
            theirs = mp.get_column(name)
            assert ours.dtype == (np.int32 if name in ("dq", "origin") else np.float32)
            np.testing.assert_array_equal(ours.astype(theirs.dtype), theirs)
        assert (pt.meta.xc, pt.meta.yc) == (mp.xc, mp.yc)


def test_both_layouts_hold_the_same_rows():
    img, _, _ = table(layout="image")
    tab, _, _ = table(layout="table")
    with PixTable(img) as a, PixTable(tab) as b:
        for name in COLUMNS:
            np.testing.assert_array_equal(a.read(name, 1000, 9000), b.read(name, 1000, 9000))
        # the binary-table column is a strided view of the mapped file, not a copy
        assert b.raw("lambda").strides == (28,)
        assert not b.raw("lambda").flags.owndata


def test_synth_layout_is_realistic():
    path, geo, spec = table()
    with PixTable(path) as pt:
        origin = pt.read("origin")
        dq = pt.read("dq")
        lam = pt.read("lambda")
        dec = decode(origin, xoffset_lut(pt.meta))
        # every IFU has its 48 slices, rows are IFU-ordered as in a pipeline table
        assert set(np.unique(dec.ifu)) == {1, 2, 3, 4}
        assert set(np.unique(dec.slice)) == set(range(1, 49))
        assert np.all(np.diff(dec.ifu.astype(int)) >= 0)
        # a few % of flagged pixels
        assert 0.02 < np.mean(dq > 0) < 0.045
        # wavelengths increase along a detector column by about dlambda per pixel
        col = lam[:geo.n_lambda]
        assert np.all(np.diff(col) > 0)
        assert np.median(np.diff(col)) == pytest.approx(geo.dlambda, rel=1e-3)
        # detector x within the slice fits the 7 origin bits; XOFFSET keywords present
        xrel = (origin >> 24) & 0x7F
        assert xrel.min() == 1 and xrel.max() == geo.width
        assert np.array_equal(np.unique(dec.xpix[dec.ifu == 2]),
                              np.unique(geo.xoffset[2, 1:, None] + np.arange(geo.width)))
        # header limits agree with the data
        h = pt.header
        assert h[f"{KEYWORD} LIMITS LAMBDA LOW"] == float(lam.min())
        assert h[f"{KEYWORD} LIMITS X HIGH"] == float(pt.read("xpos").max())
        assert h[f"{KEYWORD} LIMITS IFU HIGH"] == 4


def test_combined_table_exposure_keywords():
    path, geo, spec = table(n_exp=3, nrows=90_000)
    meta = read_meta(fits.getheader(path))
    n = geo.per_exp  # rows of a full exposure; the last one is cut at nrows
    assert meta.exposures == [(0, n - 1), (n, 2 * n - 1), (2 * n, 89_999)]
    mp = mpdaf_pixtable(path)
    np.testing.assert_array_equal(mp.get_exp(), np.repeat([1, 2, 3], [n, n, 90_000 - 2 * n]))


def test_slice_numbering_round_trip():
    ccd = np.arange(1, 49)
    assert np.array_equal(sky_to_ccd_slice(ccd_to_sky_slice(ccd)), ccd)
    # MPDAF's Slicer table (VLT-TRE-MUSE-14670-0657)
    from mpdaf.MUSE import Slicer

    assert [int(ccd_to_sky_slice(c)) for c in ccd] == [Slicer.ccd2sky(int(c)) for c in ccd]
    assert stack_ccd_slices(1) == sorted(Slicer.sky2ccd(s) for s in range(1, 13))


def test_info_prints_mpdaf_lines(caplog):
    path, _, _ = table(convention="projected")
    mp = mpdaf_pixtable(path)
    with caplog.at_level(logging.INFO, logger="mpdaf.drs.pixtable"):
        mp.info()
    theirs = [r.getMessage() for r in caplog.records][:3]
    with PixTable(path) as pt:
        info = table_info(pt)
    text = format_info(info)
    for line in theirs:  # "4 merged IFUs ...", "... flux-calibrated", "projected (...) (...)"
        assert line in text
    assert "rows: 120000" in text and "layout: image" in text
    assert info["columns"]["origin"] == {"type": "int32", "unit": None}
    assert info["center_deg"] == [pytest.approx(53.1625), pytest.approx(-27.7914)]


def test_info_cli_json(capfd):
    import json

    path, _, _ = table(n_exp=3, nrows=90_000)
    res = run_main(["pixtable", "info", path, "--json"], capfd)
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["rows"] == 90_000 and info["merged_ifus"] == 4
    assert len(info["exposures"]) == 3 and info["exposures"][-1][1] == 89_999
    assert info["limits"]["ifu"] == [1, 4]

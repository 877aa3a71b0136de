"""origin and detimage: decoded origins identical to MPDAF's origin2coords; detector images
identical to MPDAF's reconstruct_det_image (which fails on numpy 2, see below)."""

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main
from ifu_extract.errors import InputError
from ifu_extract.pixtable.detimage import reconstruct
from ifu_extract.pixtable.header import KEYWORD
from ifu_extract.pixtable.origin import decode, encode, xoffset_lut
from ifu_extract.pixtable.reader import PixTable
from ifu_extract.pixtable.select import Selection
from pixtable_helpers import mpdaf_pixtable, table


@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_decode_matches_mpdaf_origin2coords(convention):
    path, geo, _ = table(convention=convention)
    mp = mpdaf_pixtable(path)
    with PixTable(path) as pt:
        origin = pt.read("origin")
        dec = decode(origin, xoffset_lut(pt.meta))
    ifu, sli, ypix, xpix = mp.origin2coords(mp.get_origin())
    for ours, theirs in ((dec.ifu, ifu), (dec.slice, sli), (dec.ypix, ypix), (dec.xpix, xpix)):
        np.testing.assert_array_equal(ours.astype(np.int64), theirs)
    # and the truth of the generator: column XOFFSET + x inside the slice
    xcol = np.arange(origin.size) // geo.n_lambda % geo.width
    np.testing.assert_array_equal(dec.xpix, geo.xoffset[dec.ifu, dec.slice] + xcol)
    assert np.array_equal(encode(dec.ifu, dec.slice, dec.ypix, dec.xpix,
                                 geo.xoffset[dec.ifu, dec.slice]), origin)


def test_origin_cli_writes_decoded_table(tmp_path, capfd):
    path, _, _ = table()
    out = tmp_path / "origin.fits"
    res = run_main(["pixtable", "origin", path, "-o", out, "--ifu", 3, "--wave-range", 7000,
                    7100], capfd)
    assert res.exit_code == 0, res.stderr
    mp = mpdaf_pixtable(path)
    sel = mp.select_ifus([3]) & mp.select_lambda([(7000.0, 7100.0)])
    ifu, sli, ypix, xpix = mp.origin2coords(mp.get_origin()[sel])
    with fits.open(out) as hdul:
        t = hdul["ORIGIN"].data
        np.testing.assert_array_equal(t["ROW"], np.flatnonzero(sel))
        np.testing.assert_array_equal(t["IFU"], ifu)
        np.testing.assert_array_equal(t["SLICE"], sli)
        np.testing.assert_array_equal(t["YPIX"], ypix)
        np.testing.assert_array_equal(t["XPIX"], xpix)
    assert f"3:{int(sel.sum())}" in res.stderr


def test_missing_xoffset_keyword_is_one_line(tmp_path, capfd):
    path, _, _ = table()
    bad = tmp_path / "noxoff.fits"
    with fits.open(path) as hdul:
        del hdul[0].header[f"{KEYWORD} EXP0 IFU02 SLICE07 XOFFSET"]
        hdul.writeto(bad)
    out = tmp_path / "o.fits"
    res = run_main(["pixtable", "origin", bad, "-o", out], capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1, res.stderr
    assert "EXP0 IFU02 SLICE07 XOFFSET" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_detimage_matches_mpdaf_which_fails_on_numpy2(monkeypatch, tmp_path):
    """MPDAF's reconstruct_det_image builds its canvas with ``np.NaN``, removed in numpy 2:
    it raises AttributeError.  With np.NaN restored, its image equals ours."""
    path, _, _ = table()
    mp_ifu = mpdaf_pixtable(path).extract(ifu=2, lbda=(6500.0, 8000.0))
    if not hasattr(np, "NaN"):
        with pytest.raises(AttributeError):
            mp_ifu.reconstruct_det_image()
        monkeypatch.setattr(np, "NaN", np.nan, raising=False)
    theirs = mp_ifu.reconstruct_det_image()
    theirs_wave = mp_ifu.reconstruct_det_waveimage()
    with PixTable(path, chunk_rows=20_000) as pt:
        img = reconstruct(pt, 2, Selection(wave=((6500.0, 8000.0),)))
    np.testing.assert_array_equal(img.data, theirs.data.filled(np.nan).astype(np.float32))
    assert (img.ystart, img.xstart) == tuple(int(v) for v in theirs.wcs.get_start())
    # MPDAF's wavelength image has 0 where no row falls; ours has NaN there
    w = theirs_wave.data.filled(0.0)
    filled = np.isfinite(img.wave)
    np.testing.assert_array_equal(img.wave[filled], w[filled].astype(np.float32))
    assert np.all(w[~filled] == 0) and (~filled).any()


def test_detimage_cli_fits_and_png(tmp_path, capfd):
    path, geo, _ = table()
    out, png = tmp_path / "det.fits", tmp_path / "det.png"
    res = run_main(["pixtable", "detimage", path, "--ifu", 3, "-o", out, "--png", png], capfd)
    assert res.exit_code == 0, res.stderr
    with fits.open(out) as hdul:
        data, wave = hdul["DATA"].data, hdul["LAMBDA"].data
        xstart = hdul["DATA"].header["CRVAL1"]
        # every pixel of the 48 slices is filled, the gaps between slices are not
        assert np.isfinite(data).sum() == 48 * geo.width * geo.n_lambda
        assert xstart == geo.xoffset[3, 1]
        assert np.all(np.diff(wave[:, 0][np.isfinite(wave[:, 0])]) > 0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detimage_needs_one_ifu(tmp_path):
    path, _, _ = table()
    with PixTable(path) as pt, pytest.raises(InputError, match="holds 4 IFUs"):
        reconstruct(pt)


def test_decode_rows_whole_table_and_selection():
    from ifu_extract.pixtable.extract import decode_rows
    from ifu_extract.pixtable.select import run_selection

    path, _, _ = table(convention="projected", layout="table")
    mp = mpdaf_pixtable(path)
    with PixTable(path, chunk_rows=16_384, threads=2) as pt:
        dec = decode_rows(pt)
        ref = mp.origin2coords(mp.get_origin())
        for ours, theirs in zip((dec.ifu, dec.slice, dec.ypix, dec.xpix), ref):
            np.testing.assert_array_equal(ours.astype(np.int64), theirs)
        part = decode_rows(pt, run_selection(pt, Selection(slices=(3, 30), ifus=(1, 4))))
        keep = mp.select_slices([3, 30]) & mp.select_ifus([1, 4])
        ref = mp.origin2coords(mp.get_origin()[keep])
        for ours, theirs in zip((part.ifu, part.slice, part.ypix, part.xpix), ref):
            np.testing.assert_array_equal(ours.astype(np.int64), theirs)


def test_decode_rows_in_any_row_order(tmp_path):
    """Pipeline tables come in runs of one IFU and slice (decoded run by run); a shuffled
    table takes the gather path: same result as MPDAF either way."""
    from ifu_extract.pixtable.extract import decode_rows
    from ifu_extract.pixtable.header import COLUMNS
    from ifu_extract.pixtable.writer import PixTableWriter

    path, _, _ = table()
    order = np.random.default_rng(5).permutation(120_000)
    shuffled = tmp_path / "shuffled.fits"
    with PixTable(path) as pt:
        header = pt.header.copy()
        w = PixTableWriter(shuffled, header, pt.nrows,
                           units={c: pt.columns[c].unit for c in COLUMNS})
        w.write_block(0, {c: pt.read(c)[order] for c in COLUMNS})
        w.finish(header)
    mp = mpdaf_pixtable(shuffled)
    with PixTable(shuffled, chunk_rows=16_384) as pt:
        dec = decode_rows(pt)
    for ours, theirs in zip((dec.ifu, dec.slice, dec.ypix, dec.xpix),
                            mp.origin2coords(mp.get_origin())):
        np.testing.assert_array_equal(ours.astype(np.int64), theirs)
    broken = tmp_path / "broken.fits"
    with fits.open(shuffled) as hdul:
        del hdul[0].header[f"{KEYWORD} EXP0 IFU03 SLICE11 XOFFSET"]
        hdul.writeto(broken)
    with PixTable(broken) as pt, pytest.raises(InputError, match="IFU03 SLICE11 XOFFSET"):
        decode_rows(pt)

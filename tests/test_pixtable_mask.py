"""mask: the per-row object mask identical to MPDAF's mask_column, for any mask WCS, with the
fast sky-to-pixel transform checked against astropy on every row and on boundary rows."""

import warnings

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main
from ifu_extract.errors import InputError
from ifu_extract.pixtable.extract import extract
from ifu_extract.pixtable.maskcol import MaskColumn, MaskFromImage, write_mask_column
from ifu_extract.pixtable.reader import PixTable
from ifu_extract.pixtable.select import Selection, run_selection
from ifu_extract.pixtable.sky import CellGrid
from pixtable_helpers import mask_file, mpdaf_pixtable, selected_rows, table

MASKS = {
    "aligned": dict(radius=1.5),
    "rotated-coarse-offset": dict(radius=2.0, shape=(150, 200), pixscale=0.37, rotation_deg=17.0,
                                  center_offset=(3.3, -2.1)),
    "fine-partial": dict(radius=1.0, shape=(200, 240), pixscale=0.05, rotation_deg=-5.0,
                         center_offset=(2.0, 1.0)),
    "primary-hdu": dict(radius=1.2, primary_only=True, rotation_deg=90.0),
}


def _mpdaf_maskcol(path, mask):
    mp = mpdaf_pixtable(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mp.mask_column(str(mask)).maskcol


@pytest.mark.parametrize("kind", sorted(MASKS))
@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_mask_column_identical_to_mpdaf(kind, convention, tmp_path):
    from mpdaf.drs import PixTableMask

    path, _, spec = table(convention=convention)
    mask = mask_file(f"mask_{kind}.fits", spec, **MASKS[kind])
    out = tmp_path / "maskcol.fits"
    with PixTable(path, chunk_rows=25_000) as pt:
        info = write_mask_column(pt, mask, out)
    theirs = _mpdaf_maskcol(path, mask)
    ours = PixTableMask(str(out)).maskcol  # MPDAF reads our file
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < info["masked"] == int(theirs.sum()) < spec.nrows
    assert info["degree"] == 2 and info["tolerance"] < 1e-3


@pytest.mark.parametrize("convention", ["positioned", "projected"])
def test_fast_transform_equals_exact_chain_on_every_row(convention):
    path, _, spec = table(convention=convention)
    mask = mask_file("mask_rotated-coarse-offset.fits", spec,
                     **MASKS["rotated-coarse-offset"])
    with PixTable(path) as pt:
        src = MaskFromImage(mask, pt)
        x, y = pt.read("xpos"), pt.read("ypos")
        ix, iy = src.projector.index(x, y)
        ex, ey = src.projector.exact_index(x, y)
        np.testing.assert_array_equal(ix, ex)
        np.testing.assert_array_equal(iy, ey)
        # the coarse grid only vouches for cells whose every pixel agrees
        status = src.grid.lookup(x, y)
        truth = src.flat[ey * src.nx + ex]
        assert np.all(truth[status == CellGrid.SURE1])
        assert not np.any(truth[status == CellGrid.SURE0])
        assert src.grid.mixed_fraction < 0.2


def test_rows_on_pixel_boundaries(tmp_path):
    """Shift the mask WCS so that chosen rows land on x.5 / y.5 (within 1e-12 pixel): the
    polynomial cannot decide them, the exact chain must, and the result is MPDAF's."""
    from ifu_extract.pixtable.sky import load_mask_image

    path, _, spec = table()
    base = mask_file("mask_aligned.fits", spec, **MASKS["aligned"])
    with PixTable(path) as pt:
        x, y = pt.read("xpos"), pt.read("ypos")
        _, wcs = load_mask_image(base)
        src = MaskFromImage(base, pt)
        rows = [101, 40_404, 99_999]
        px, py = src.projector.exact_pixel_float(x[rows], y[rows])
        for k, row in enumerate(rows):
            with fits.open(base) as hdul:
                h = hdul["DATA"].header
                h["CRPIX1"] += np.floor(px[k]) + 0.5 - px[k]
                h["CRPIX2"] += np.floor(py[k]) + 0.5 - py[k]
                shifted = tmp_path / f"shift{k}.fits"
                hdul.writeto(shifted)
            src2 = MaskFromImage(shifted, pt)
            qx, qy = src2.projector.exact_pixel_float(x[row:row + 1], y[row:row + 1])
            assert abs(qx[0] % 1 - 0.5) < 1e-9 and abs(qy[0] % 1 - 0.5) < 1e-9
            fx, fy = src2.projector.index(x[row:row + 1], y[row:row + 1])
            ex, ey = src2.projector.exact_index(x[row:row + 1], y[row:row + 1])
            assert (fx[0], fy[0]) == (ex[0], ey[0])
            out = tmp_path / f"mc{k}.fits"
            write_mask_column(pt, shifted, out)
            with fits.open(out) as hdul:
                np.testing.assert_array_equal(hdul["MASKCOL"].data[:, 0].astype(bool),
                                              _mpdaf_maskcol(path, shifted))


def test_nan_and_negative_mask_pixels_count_as_masked_like_mpdaf(tmp_path):
    path, _, spec = table()
    base = mask_file("mask_aligned.fits", spec, **MASKS["aligned"])
    with fits.open(base) as hdul:
        d = hdul["DATA"].data.astype(np.float32)
        d[150:170, 100:140] = np.nan
        d[100:110, 200:230] = -1
        d[0, :] = 0.25
        hdul["DATA"].data = d
        odd = tmp_path / "odd.fits"
        hdul.writeto(odd)
    out = tmp_path / "mc.fits"
    with PixTable(path) as pt:
        write_mask_column(pt, odd, out)
    with fits.open(out) as hdul:
        ours = hdul["MASKCOL"].data[:, 0].astype(bool)
    np.testing.assert_array_equal(ours, _mpdaf_maskcol(path, odd))


def test_mask_column_files_interoperate_with_mpdaf(tmp_path):
    path, _, spec = table()
    mask = mask_file("mask_aligned.fits", spec, **MASKS["aligned"])
    mp = mpdaf_pixtable(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = mp.mask_column(str(mask))
        pm.write(str(tmp_path / "mpdaf_maskcol.fits"))  # int32 column, MPDAF's own layout
    with PixTable(path) as pt:
        col = MaskColumn(tmp_path / "mpdaf_maskcol.fits", pt)
        np.testing.assert_array_equal(col.values(pt, 0, pt.nrows), pm.maskcol)
        # extract honours it: MPDAF's selection without the masked rows
        sel = Selection(ifus=(2, 3), mask=col, keep="unmasked")
        ours = selected_rows(run_selection(pt, sel))
        theirs = np.flatnonzero(mp.select_ifus([2, 3]) & ~pm.maskcol)
        np.testing.assert_array_equal(ours, theirs)
        sel = Selection(mask=MaskFromImage(mask, pt), keep="masked")
        np.testing.assert_array_equal(selected_rows(run_selection(pt, sel)),
                                      np.flatnonzero(pm.maskcol))
        res = extract(pt, sel, tmp_path / "objects.fits")
    assert res.nrows == int(pm.maskcol.sum())
    assert mpdaf_pixtable(tmp_path / "objects.fits").nrows == res.nrows


def test_mask_column_of_another_table_is_refused(tmp_path):
    path, _, spec = table()
    other, _, _ = table(convention="projected")
    mask = mask_file("mask_aligned.fits", spec, **MASKS["aligned"])
    out = tmp_path / "mc.fits"
    with PixTable(path) as pt:
        write_mask_column(pt, mask, out)
    with PixTable(other) as pt2, pytest.raises(InputError, match="another pixel table"):
        MaskColumn(out, pt2)
    small, _, _ = table(nrows=50_000)
    with PixTable(small) as pt3, pytest.raises(InputError, match="has 120000 rows"):
        MaskColumn(out, pt3)


def test_mask_cli_and_extract_with_mask(tmp_path, capfd):
    path, _, spec = table()
    mask = mask_file("mask_aligned.fits", spec, **MASKS["aligned"])
    col = tmp_path / "mc.fits"
    res = run_main(["pixtable", "mask", path, mask, "-o", col], capfd)
    assert res.exit_code == 0, res.stderr
    theirs = _mpdaf_maskcol(path, mask)
    assert f"{int(theirs.sum())} of 120000 rows masked" in res.stderr
    out = tmp_path / "sky.fits"
    res = run_main(["pixtable", "extract", path, "-o", out, "--wave-range", 6000, 7000,
                    "--mask-column", col], capfd)
    assert res.exit_code == 0, res.stderr
    mp = mpdaf_pixtable(path)
    keep = mp.select_lambda([(6000.0, 7000.0)]) & ~theirs
    np.testing.assert_array_equal(mpdaf_pixtable(out).get_origin(), mp.get_origin()[keep])
    assert fits.getheader(out)["IFXIN1"] == "mc.fits"


def test_rows_without_position_as_mpdaf(tmp_path):
    """NaN positions (never in pipeline tables, but possible after user edits): MPDAF casts
    NaN pixel positions to the clipped index 0, and never selects them in an aperture."""
    path, _, spec = table()
    bad = tmp_path / "nan.fits"
    rows = np.arange(0, 120_000, 997)
    with fits.open(path) as hdul:
        hdul["xpos"].data[rows[::2], 0] = np.nan
        hdul["ypos"].data[rows[1::2], 0] = np.nan
        hdul["lambda"].data[rows, 0] = np.nan
        hdul.writeto(bad)
    mask = mask_file("mask_rotated-coarse-offset.fits", spec,
                     **MASKS["rotated-coarse-offset"])
    out = tmp_path / "mc.fits"
    with PixTable(bad) as pt:
        write_mask_column(pt, mask, out)
        theirs = _mpdaf_maskcol(bad, mask)
        with fits.open(out) as hdul:
            np.testing.assert_array_equal(hdul["MASKCOL"].data[:, 0].astype(bool), theirs)
        mp = mpdaf_pixtable(bad)
        from ifu_extract.pixtable.sky import SkyRegion

        sel = Selection(regions=(SkyRegion(spec.ra, spec.dec, 20.0, "C"),),
                        wave=((5000.0, 9000.0),), method="or")
        ours = selected_rows(run_selection(pt, sel))
        ref = np.flatnonzero(mp.select_sky([(spec.dec, spec.ra, 20.0, "C")])
                             | mp.select_lambda([(5000.0, 9000.0)]))
        np.testing.assert_array_equal(ours, ref)
        assert not np.isin(rows, ours).any()

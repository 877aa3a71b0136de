"""Catalogue formats detected from content, validation, and round trips."""

import numpy as np
import pytest
from astropy.table import Table

from ifu_extract.catalog import read_catalog, write_catalog
from ifu_extract.errors import InputError

ROWS = [(7, 150.001, 2.0005), (12, 150.0022, 1.9991), (31, 149.9987, 2.0013)]


def _check(tab):
    assert list(tab["ID"]) == ["7", "12", "31"]
    np.testing.assert_allclose(tab["RA"], [r[1] for r in ROWS])
    np.testing.assert_allclose(tab["DEC"], [r[2] for r in ROWS])
    assert list(tab["STATUS"]) == ["ok"] * 3


def test_autospec_text_with_unit_line(tmp_path):
    p = tmp_path / "cat.dat"
    p.write_text("#ID     RA      DEC     SIZE   REF\n#(int)   (deg)   (deg)  (arcsec) (str)\n"
                 + "".join(f"{i} {ra} {dec} 4.0 MUSE_WHITE\n" for i, ra, dec in ROWS))
    tab = read_catalog(p)
    assert tab.meta["format"] == "autospec"
    _check(tab)
    assert list(tab["SIZE"]) == [4.0] * 3 and tab["REF"][0] == "MUSE_WHITE"


def test_autospec_uncommented_unit_line(tmp_path):
    p = tmp_path / "cat.txt"
    p.write_text("ID RA DEC SIZE REF\n(int) (deg) (deg) (arcsec) (str)\n"
                 + "".join(f"{i} {ra} {dec} 4.0 MUSE_WHITE\n" for i, ra, dec in ROWS))
    _check(read_catalog(p))


def test_muselet_cat_txt(muselet_cat):
    tab = read_catalog(muselet_cat)
    assert tab.meta["format"] == "muselet"
    assert len(tab) == 8 and tab["ID"][0] == "6"
    assert tab["Z"].mask[-1] and tab["Z"][0] == pytest.approx(0.086)
    assert (tab["STATUS"] == "ok").all()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "ecsv", "fits"])
def test_round_trip_formats_detected_from_content(tmp_path, fmt):
    t = Table(rows=ROWS, names=("ID", "RA", "DEC"))
    # Galaxy names every dataset .dat: the reader must not rely on the suffix.
    p = tmp_path / "catalog.dat"
    write_catalog(t, p, fmt)
    tab = read_catalog(p)
    assert tab.meta["format"] == fmt
    _check(tab)


def test_aliases_and_sexagesimal(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("NUMBER,ALPHA_J2000,DELTA_J2000\n1,10:00:00.24,+02:00:01.8\n2,150.0,2.0\n")
    tab = read_catalog(p)
    assert tab["RA"][0] == pytest.approx(150.001)
    assert tab["DEC"][0] == pytest.approx(2.0005)


def test_bad_row_kept_with_status(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("ID RA DEC\n1 150.0 2.0\n2 abc 2.0\n3 150.0 95.0\n")
    tab = read_catalog(p)
    assert list(tab["STATUS"]) == ["ok", "bad_coordinates: RA/DEC is not a number",
                                   "bad_coordinates: RA/DEC out of range (degrees expected)"]


def test_missing_columns(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("ID X Y\n1 2 3\n")
    with pytest.raises(InputError, match="no RA/DEC column"):
        read_catalog(p)


def test_non_numeric_ra(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("ID RA DEC\n1 foo 2.0\n2 bar 2.1\n")
    with pytest.raises(InputError, match="no row with a valid ID, RA and DEC"):
        read_catalog(p)


def test_duplicate_ids(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("ID RA DEC\n1 150 2\n1 150.1 2\n")
    with pytest.raises(InputError, match="duplicate IDs"):
        read_catalog(p)


def test_empty(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# ID RA DEC\n")
    with pytest.raises(InputError, match="no catalogue rows"):
        read_catalog(p)

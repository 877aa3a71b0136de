"""The FITS byte layer (ifu_extract.fitsio): cards, checksums, the streaming cube writer, sniffing."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from ifu_extract.errors import InputError
from ifu_extract.fitsio import (FITS_MAGIC, StreamingCubeWriter, card_image, compression,
                                cube_extension_header, decompress_command, file_head, file_kind,
                                header_checksum, image_hdu_bytes, is_fits, is_tiff,
                                primary_header_bytes, write_fast_fits)


def _primary() -> fits.Header:
    hdr = fits.Header()
    hdr["SIMPLE"] = (True, "conforms to FITS standard")
    hdr["BITPIX"] = (8, "array data type")
    hdr["NAXIS"] = (0, "number of array dimensions")
    hdr["EXTEND"] = True
    hdr["OBJECT"] = "test"
    return hdr


@pytest.mark.parametrize("by_rows", [False, True])
def test_streaming_cube_writer_checksums_and_data(tmp_path, by_rows):
    """Blocks written in any order (whole planes or rows) give the cube, and astropy accepts the
    CHECKSUM/DATASUM the writer computed while streaming."""
    rng = np.random.default_rng(7)
    shape = (5, 6, 7)
    data = rng.normal(size=shape).astype(np.float32)
    var = rng.uniform(1, 2, size=shape).astype(np.float32)
    base = fits.Header()
    base["BUNIT"] = "adu"
    ext = {"DATA": cube_extension_header(base, "DATA", shape),
           "STAT": cube_extension_header(base, "STAT", shape)}
    out = tmp_path / "cube.fits"
    writer = StreamingCubeWriter(out, _primary(), ext, shape)
    if by_rows:
        for y0 in (4, 0, 2):                       # out of order: the sum does not care
            writer.write("DATA", data[:, y0:y0 + 2].copy(), y0=y0)
            writer.write("STAT", var[:, y0:y0 + 2].astype(np.float64), y0=y0)
    else:
        for z0 in (3, 0):
            z1 = 5 if z0 == 3 else 3
            writer.write("DATA", data[z0:z1].copy(), z0=z0)
            writer.write("STAT", var[z0:z1].copy(), z0=z0)
    writer.close()
    with fits.open(out, checksum=True) as hdul:     # raises on a bad checksum
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT"]
        np.testing.assert_array_equal(hdul["DATA"].data, data)
        np.testing.assert_array_equal(hdul["STAT"].data, var)
        for hdu in hdul:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        assert hdul["DATA"].header["BUNIT"] == "adu"


def test_header_checksum_matches_astropy():
    """header_checksum is astropy's CHECKSUM for the same header and data."""
    hdu = fits.ImageHDU(np.arange(12, dtype=">f4").reshape(3, 4), name="X")
    hdu.add_checksum(when="fixed")
    expected = hdu.header["CHECKSUM"]
    datasum = int(hdu.header["DATASUM"])
    hdu.header["CHECKSUM"] = "0" * 16
    assert header_checksum(hdu.header.tostring().encode("ascii"), datasum) == expected


def test_fast_writer_reads_back(tmp_path):
    """Cards formatted by fitsio (long strings, HIERARCH, non-ASCII) read back through astropy."""
    cards = [("OBJECT", "x" * 100, "long"), ("LONGKEYWORD", 1.5, "hierarch"), ("NAME", "cübe", "")]
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = write_fast_fits(tmp_path / "f.fits", primary_header_bytes(cards),
                          [image_hdu_bytes("IMG", arr, [("BUNIT", "adu", "unit")])])
    with fits.open(out) as hdul:
        assert hdul[0].header["OBJECT"] == "x" * 100
        assert hdul[0].header["LONGKEYWORD"] == 1.5
        assert hdul[0].header["NAME"] == "c\\xfcbe"
        np.testing.assert_array_equal(hdul["IMG"].data, arr)
    assert len(card_image("A", 1.0, "c")) == 80


def test_sniffing(tmp_path):
    fits_file = tmp_path / "a.fits"
    fits.PrimaryHDU().writeto(fits_file)
    gz = tmp_path / "a.fits.gz"
    gz.write_bytes(gzip.compress(fits_file.read_bytes()))
    tif = tmp_path / "a.tif"
    tif.write_bytes(b"II*\x00" + b"\0" * 20)
    txt = tmp_path / "a.txt"
    txt.write_text("ID\tRA\n")
    assert file_head(fits_file) == FITS_MAGIC and is_fits(file_head(fits_file))
    assert [file_kind(file_head(p)) for p in (fits_file, gz, tif, txt)] == ["fits", "gzip", "tiff", "other"]
    assert is_tiff(file_head(tif)) and not is_tiff(file_head(fits_file))
    assert compression(file_head(gz)) == "gzip" and decompress_command("gzip") == "gunzip -k"
    with pytest.raises(InputError, match="cannot be read"):
        file_head(tmp_path)                       # a folder

"""Core I/O: cube layouts, variance kinds, DQ policy, units, windows, wavelength axes."""

import mmap

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import InputError
from ifu_extract.units import display_unit, parse_flux_unit


def _small_cube(seed=3, shape=(30, 12, 14)):
    wave = 4750 + 1.25 * np.arange(shape[0])
    src = synth.SynthSource("a", 6.2, 5.7, synth.continuum_spectrum(wave, 10.0))
    return synth.make_cube([src], shape=shape, sigma=0.5, nan_fraction=0.02, seed=seed)


@pytest.mark.parametrize("layout", ["MUSE", "MaNGA", "SCI/ERR", "primary"])
def test_layouts_read_same_values(tmp_path, layout):
    data, var, dq, hdr, _ = _small_cube()
    path = tmp_path / "cube.fits"
    synth.cube_hdulist(data, var, dq, hdr, layout=layout).writeto(path)
    with open_cube(path) as cube:
        assert cube.layout == layout
        assert cube.shape == data.shape
        d, v = cube.window(0, cube.nx, 0, cube.ny)
    good = dq == 0
    # MaNGA stores flagged voxels as 0 with a DONOTUSE bit: they must come back as NaN.
    if layout in ("MUSE", "MaNGA"):
        assert np.array_equal(np.isnan(d), ~good)
    np.testing.assert_allclose(d[good], data[good], rtol=1e-6)
    if layout == "primary":
        assert v is None
    else:
        np.testing.assert_allclose(v[good], var[good], rtol=1e-5)


def test_manga_units_and_vacuum(tmp_path):
    data, var, dq, hdr, _ = _small_cube()
    path = tmp_path / "manga.fits"
    synth.cube_hdulist(data, var, dq, hdr, layout="MaNGA").writeto(path)
    with open_cube(path) as cube:
        assert cube.medium == "vacuum"
        assert cube.var_kind == "ivar"
        assert cube.unit == 1e-17 * u.erg / u.s / u.cm**2 / u.AA
        assert cube.flux_unit.per_area == "spaxel"


def test_log_wavelength_axis(tmp_path):
    data, var, dq, hdr, _ = _small_cube()
    hdr["CTYPE3"] = "WAVE-LOG"
    hdr["CRVAL3"] = 3622.0
    hdr["CD3_3"] = 3622.0 * np.log(10) * 1e-4  # MaNGA LOGCUBE: constant d(log10 lambda) = 1e-4
    path = tmp_path / "log.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)
    with open_cube(path) as cube:
        expected = 3622.0 * 10 ** (1e-4 * np.arange(cube.nwave))
        np.testing.assert_allclose(cube.wave, expected, rtol=1e-9)


def test_surface_brightness_converted_to_per_spaxel(tmp_path):
    data, var, dq, hdr, _ = _small_cube()
    hdr["BUNIT"] = "1e-20 erg/s/cm2/Angstrom/arcsec2"
    path = tmp_path / "sb.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)
    with open_cube(path) as cube:
        area = cube.pixscale**2
        assert area == pytest.approx(0.04)
        d, v = cube.window(0, cube.nx, 0, cube.ny)
    good = dq == 0
    np.testing.assert_allclose(d[good], data[good] * 0.04, rtol=1e-6)
    np.testing.assert_allclose(v[good], var[good] * 0.04**2, rtol=1e-5)


def test_window_padding_and_values(minicube):
    with open_cube(minicube) as cube:
        assert (cube.nwave, cube.ny, cube.nx) == (3681, 40, 40)
        assert cube.layout == "MUSE" and cube.dq_ext == 3 and cube.var_kind == "var"
        assert cube.medium == "air"
        assert cube.wave[0] == pytest.approx(4749.890625)
        assert cube.wave[1] - cube.wave[0] == pytest.approx(1.25)
        d, v = cube.window(-3, 5, 36, 44, 100, 110)
        assert d.shape == (10, 8, 8)
        assert np.isnan(d[:, :, :3]).all() and np.isnan(d[:, 4:, :]).all()
        raw = fits.getdata(minicube, "DATA")[100:110, 36:40, 0:5]
        dq = fits.getdata(minicube, "DQ")[100:110, 36:40, 0:5]
        inner = d[:, :4, 3:]
        ok = dq == 0
        np.testing.assert_array_equal(inner[ok], raw[ok])
        assert np.isnan(inner[~ok]).all()


def test_minicube_dq_flags_become_nan(minicube):
    dq = fits.getdata(minicube, "DQ")
    with open_cube(minicube) as cube:
        d, v = cube.window(0, 40, 0, 40, 0, 400)
    flagged = dq[:400] != 0
    assert np.isnan(d[flagged]).all() and np.isnan(v[flagged]).all()


def test_window_reads_only_its_voxels(tmp_path, monkeypatch):
    """A window reads its own voxels from the memory-mapped file and nothing more.

    The cube is 2 x 10 MB (data and variance, 40 planes of 256 x 256); a 2 x 3-spaxel window
    reads 40 x 3 x 2 float32 per extension.  Every read of the file goes through ``Cube._read``
    (counted here, in bytes), and the extensions stay memory maps (nothing is loaded at open).
    """
    _, _, _, hdr, _ = _small_cube(shape=(40, 8, 8))
    shape = (40, 256, 256)
    data = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    path = tmp_path / "big.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, hdr, name="DATA"),
                  fits.ImageHDU(np.full(shape, 2.0, np.float32), hdr, name="STAT")]).writeto(path)
    with open_cube(path, require_finite=False) as cube:
        for ext in (cube.data_ext, cube.var_ext):
            base = cube.hdul[ext].data
            while base is not None and not isinstance(base, (np.memmap, mmap.mmap)):
                base = getattr(base, "base", None)
            assert base is not None, f"extension {ext} was loaded into memory"
        read = []
        plain_read = cube._read
        monkeypatch.setattr(cube, "_read", lambda ext, sl: read.append(plain_read(ext, sl)) or read[-1])
        d, v = cube.window(100, 102, 50, 53)
    assert [r.nbytes for r in read] == [40 * 3 * 2 * 4] * 2     # data, then variance
    np.testing.assert_array_equal(d, data[:, 50:53, 100:102])
    assert (v == 2.0).all()


@pytest.mark.parametrize("text,unit,area", [
    ("10**(-20)*erg/s/cm**2/Angstrom", 1e-20 * u.erg / u.s / u.cm**2 / u.AA, None),
    ("1E-17 erg/s/cm^2/Ang/spaxel", 1e-17 * u.erg / u.s / u.cm**2 / u.AA, "spaxel"),
    ("1e-16 erg/s/cm2/A/arcsec^2", 1e-16 * u.erg / u.s / u.cm**2 / u.AA, "arcsec2"),
    ("FLAM16", 1e-16 * u.erg / u.s / u.cm**2 / u.AA, None),
])
def test_flux_units(text, unit, area):
    parsed = parse_flux_unit(text)
    assert parsed.unit == unit
    assert parsed.per_area == area


@pytest.mark.parametrize("text,shown", [
    # what MPDAF writes back (astropy's FITS string) and what the MUSE pipeline writes
    ("10**-20 erg Angstrom-1 s-1 cm-2", "10⁻²⁰ erg s⁻¹ cm⁻² Å⁻¹"),
    ("10**(-20)*erg/s/cm**2/Angstrom", "10⁻²⁰ erg s⁻¹ cm⁻² Å⁻¹"),
    ("1E-17 erg/s/cm^2/Ang/spaxel", "10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹"),
    ("1e-16 erg/s/cm2/A/arcsec^2", "10⁻¹⁶ erg s⁻¹ cm⁻² Å⁻¹ arcsec⁻²"),
    ("erg/s/cm2/Hz", "erg s⁻¹ cm⁻² Hz⁻¹"),
    ("not a unit", "not a unit"),
    ("", ""),
])
def test_units_shown_as_astronomers_write_them(text, shown):
    assert display_unit(text) == shown


def test_override_extension(tmp_path):
    data, var, dq, hdr, _ = _small_cube()
    hdul = synth.cube_hdulist(data, var, dq, hdr)
    hdul[1].name = "FOO"
    hdul[2].name = "BAR_ERR"
    path = tmp_path / "odd.fits"
    hdul.writeto(path)
    with open_cube(path, data_ext="FOO", var_ext="BAR_ERR") as cube:
        assert cube.data_ext == 1 and cube.var_ext == 2
    with pytest.raises(InputError, match="no extension 'NOPE'"):
        open_cube(path, data_ext="NOPE")


def test_mosaic_reads(mosaic):
    with open_cube(mosaic) as cube:
        assert cube.shape == (500, 30, 30)
        assert cube.dq_ext is None

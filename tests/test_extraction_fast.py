"""The fast extraction paths give the spectra of the plain ones.

Extraction reads each window in cache-sized blocks of channels (``Cube.window_blocks``), reads
the union of neighbouring windows once (``extract_windows``), takes the λ-dependent PSF through
its node images, computes aperture overlaps in closed form, reads masks files without astropy's
per-HDU header parsing and writes Source files card by card.  Each is checked here against the
straightforward computation it replaces, on cubes with NaN voxels, DQ flags, windows across the
cube's edges, and the MaNGA (IVAR) and SCI/ERR layouts.

Tolerances: products are float32 matrix products (BLAS) in both paths, but summed in a different
order (blocks of channels, node images instead of per-channel profiles), so results agree to a
few float32 roundings: 2e-5 relative, plus 1e-6 of the spectrum's largest value for channels
whose sum nearly cancels.
"""

import numpy as np
import pytest
from astropy.io import fits

from conftest import write_synth
from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import InputError
from ifu_extract.estimators import (ExtractConfig, ObjectRegion, StampMatrices, circle_overlap, extract_object,
                                 extract_window, extract_windows)
from ifu_extract.psf import PSFModel


def _lam_psf(wave):
    slope = (0.60 - 0.85) / (wave[-1] - wave[0])
    return PSFModel("moffat", (slope, 0.85 - slope * wave[0]), (2.8,), "given")


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """A 120 x 36 x 36 field of overlapping point sources, 2 % NaN voxels flagged in DQ, in the
    MUSE, MaNGA and SCI/ERR layouts; in the MUSE cube, also voxels flagged in DQ only (finite
    data and variance) and a few zero variances."""
    wave = 4750.0 + 1.25 * np.arange(120)
    pos = [(6.2, 7.1), (12.8, 9.4), (20.5, 6.3), (30.9, 8.8), (9.7, 27.5), (17.1, 24.9), (33.4, 33.0)]
    srcs = [synth.SynthSource(str(i + 1), x, y, synth.continuum_spectrum(wave, 10.0 + 5 * i, 0.2))
            for i, (x, y) in enumerate(pos)]
    base = tmp_path_factory.mktemp("crowded")
    paths = {}
    for layout in ("MUSE", "MaNGA", "SCI/ERR"):
        paths[layout] = base / f"{layout.replace('/', '_')}.fits"
        write_synth(paths[layout], srcs, layout=layout, shape=(120, 36, 36), sigma=0.5, nan_fraction=0.02,
                    seed=5)
    with fits.open(paths["MUSE"], mode="update") as hdul:
        rng = np.random.default_rng(9)
        dq = hdul["DQ"].data
        dq[rng.random(dq.shape) < 0.01] = 4  # flagged, data and variance finite
        hdul["STAT"].data[:, 30:, :4] = 0.0  # in a corner: most windows have none
    return paths, pos


def _regions(pos, half=7):
    """Windows of 15 x 15 spaxels around each position (several cross the cube's edges)."""
    out = []
    for i, (x, y) in enumerate(pos):
        x0, y0 = int(round(x)) - half, int(round(y)) - half
        box = (x0, x0 + 2 * half + 1, y0, y0 + 2 * half + 1)
        yy, xx = np.indices((2 * half + 1, 2 * half + 1))
        r2 = (xx - (x - x0)) ** 2 + (yy - (y - y0)) ** 2
        neighbours = np.zeros(r2.shape, bool)
        neighbours[:2, :2] = True
        out.append(ObjectRegion(str(i + 1), 0.0, 0.0, x - x0, y - y0, box, obj_mask=r2 <= 2.5**2,
                                sky_mask=r2 >= 6.0**2, neighbours=neighbours))
    return out


def _assert_same(res, ref):
    assert sorted(res.spectra) == sorted(ref.spectra)
    assert res.notes == ref.notes and res.n_spaxels == ref.n_spaxels and res.n_sky == ref.n_sky
    for tag, sp in ref.spectra.items():
        got = res.spectra[tag]
        for a, b in ((got.flux, sp.flux), (got.var, sp.var)):
            assert np.array_equal(np.isnan(a), np.isnan(b)), tag
            ok = np.isfinite(b)
            if ok.any():
                np.testing.assert_allclose(a[ok], b[ok], rtol=2e-5, atol=1e-6 * np.abs(b[ok]).max(), err_msg=tag)
        assert got.meta == sp.meta, tag


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
@pytest.mark.parametrize("layout", ["MUSE", "MaNGA", "SCI/ERR"])
def test_group_extraction_equals_object_by_object(crowded, layout):
    paths, pos = crowded
    regions = _regions(pos)
    with open_cube(paths[layout]) as cube:
        wave = cube.wave
        cfg = ExtractConfig(apertures=(0.4, 0.8), psf=_lam_psf(wave))
        white = [np.nanmean(cube.window(*r.box)[0], axis=0) for r in regions]
        for z0, z1 in ((0, cube.nwave), (17, 95)):
            group = extract_windows(cube, z0, z1, [(r, w, None, {"HST": w * 2}) for r, w in zip(regions, white)],
                                    cfg)
            for r, w, res in zip(regions, white, group):
                data, var = cube.window(*r.box, z0, z1)
                ref = extract_object(data, var, wave[z0:z1], cube.pixscale, r, cfg, white=w,
                                     weight_images={"HST": w * 2})
                _assert_same(res, ref)
                _assert_same(extract_window(cube, z0, z1, r, cfg, white=w, weight_images={"HST": w * 2}), ref)


def test_voxels_flagged_in_dq_only(tmp_path):
    """Voxels flagged in DQ whose data and variance are finite are left out like NaN voxels."""
    wave = 4750.0 + 1.25 * np.arange(80)
    path = tmp_path / "dq.fits"
    write_synth(path, [synth.SynthSource("1", 10.2, 9.7, synth.continuum_spectrum(wave, 20.0, 0.1))],
                shape=(80, 20, 20), sigma=0.5, nan_fraction=0.0, seed=1)
    with fits.open(path, mode="update") as hdul:
        hdul["DQ"].data[np.random.default_rng(3).random(hdul["DQ"].data.shape) < 0.02] = 4
    region = _regions([(10.2, 9.7)])[0]
    with open_cube(path) as cube:
        cfg = ExtractConfig(apertures=(0.4,), psf=_lam_psf(cube.wave))
        data, var = cube.window(*region.box)
        assert np.isnan(data).any()
        ref = extract_object(data, var, cube.wave, cube.pixscale, region, cfg)
        _assert_same(extract_window(cube, 0, cube.nwave, region, cfg), ref)
        assert np.isfinite(ref.spectra["MUSE_PSF"].flux).all()


def test_group_extraction_reports_one_failure_per_object(crowded):
    paths, pos = crowded
    regions = _regions(pos[:3])
    bad = ObjectRegion("x", 0.0, 0.0, 3.0, 3.0, (0, 5, 0, 5), obj_mask=np.ones((4, 4), bool),
                       sky_mask=np.zeros((5, 5), bool))  # masks of the wrong shape
    with open_cube(paths["MUSE"]) as cube:
        cfg = ExtractConfig(apertures=(0.4,), psf=None)
        out = extract_windows(cube, 0, cube.nwave, [(r, None, None, None) for r in [regions[0], bad, regions[2]]],
                              cfg)
    assert isinstance(out[1], Exception)
    assert not isinstance(out[0], Exception) and not isinstance(out[2], Exception)
    assert "MUSE_WHITE" in out[0].spectra  # white light of the window computed when not given


def test_lambda_dependent_psf_products_equal_per_channel_profiles():
    """MUSE_PSF through node images equals Horne's estimator with one profile per channel."""
    rng = np.random.default_rng(2)
    nw, ny, nx = 300, 17, 19
    wave = 4750.0 + 15.0 * np.arange(nw)
    psf = _lam_psf(wave)
    data = rng.normal(5.0, 1.0, (nw, ny, nx)).astype(np.float32)
    var = rng.uniform(0.5, 2.0, (nw, ny, nx)).astype(np.float32)
    data[rng.random(data.shape) < 0.03] = np.nan
    var[rng.random(var.shape) < 0.01] = 0.0  # zero variance: usable in sums, not in weights
    obj = np.zeros((ny, nx), bool)
    obj[6:11, 7:12] = True
    region = ObjectRegion("1", 0, 0, 9.3, 8.6, (0, nx, 0, ny), obj, ~obj)
    cfg = ExtractConfig(apertures=(), psf=psf, psf_radius_fwhm=50.0, white=False, skysub=False)
    got = extract_object(data, var, wave, 0.2, region, cfg).spectra["MUSE_PSF"]
    prof = psf.stamps(wave, (ny, nx), 9.3, 8.6, 0.2)
    (flux, v), _ = StampMatrices(data, var).optimal(prof, np.ones((ny, nx), bool))
    np.testing.assert_allclose(got.flux, flux, rtol=2e-5, atol=1e-6 * np.nanmax(np.abs(flux)))
    np.testing.assert_allclose(got.var, v, rtol=2e-5)


def test_window_blocks_equal_window(crowded):
    paths, _ = crowded
    for layout, path in paths.items():
        with open_cube(path) as cube:
            for box in ((-4, 11, -3, 12, 0, None), (5, 20, 8, 23, 10, 90), (30, 45, 28, 43, 0, None),
                        (40, 50, 0, 10, 0, None)):
                data, var = cube.window(*box)
                blocks = [(zs, d.copy(), v.copy(), None if b is None else b.copy(), pos)
                          for zs, d, v, b, pos in cube.window_blocks(*box, block=13, with_flags=True)]
                z0 = box[4]
                assert [zs for zs, *_ in blocks] == list(range(z0, z0 + len(data), 13))
                np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), data, err_msg=layout)
                np.testing.assert_array_equal(np.concatenate([b[2] for b in blocks]), var, err_msg=layout)
                for _, d, v, bad, positive in blocks:
                    assert np.array_equal(np.isnan(d), np.zeros(d.shape, bool) if bad is None else bad)
                    assert positive == (bad is None and bool((v > 0).all()))


def test_circle_overlap_matches_photutils():
    from photutils.aperture import CircularAperture

    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 30, 2))
        x, y = rng.uniform(-5, 35, 2)
        r = float(rng.choice([rng.uniform(0.05, 1.0), rng.uniform(1.0, 20.0), 0.5, 2.0]))
        ref = CircularAperture((x, y), r).to_mask(method="exact").to_image(shape)
        ref = np.zeros(shape) if ref is None else ref
        got = circle_overlap(shape, x, y, r)
        np.testing.assert_allclose(got, ref, atol=1e-9)
        assert np.array_equal(got > 0, ref > 0)


def test_masks_file_reads_as_astropy_reads_it(tmp_path, crowded):
    """The masks of every object are its part of the MASKS image as astropy reads it (at the
    MASKOFF of its OBJECTS row), on the stamp WCS of the table's cube-grid WCS; a cut file is
    refused in one line."""
    from astropy.table import Table

    from ifu_extract.masks import make_masks, read_masks, write_masks
    from ifu_extract.wcsutil import celestial_from_header, pixel_to_world

    paths, pos = crowded
    with open_cube(paths["MUSE"]) as cube:
        ra, dec = pixel_to_world(cube.wcs, np.array([p[0] for p in pos]), np.array([p[1] for p in pos]))
        cat = Table({"ID": [str(i + 1) for i in range(len(pos))], "RA": ra, "DEC": dec})
        seg = np.zeros((cube.ny, cube.nx), np.int32)
        for i, (x, y) in enumerate(pos, start=1):
            seg[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = i
        result = make_masks(cube, cat, [seg], size=3.0, fwhm=0.7)
        cube_wcs = cube.wcs
    out = write_masks(result, tmp_path / "masks.fits")
    objects, masks = read_masks(out)
    table = Table.read(out, hdu="OBJECTS")
    with masks, fits.open(out) as hdul:
        table_wcs = celestial_from_header(hdul["OBJECTS"].header)
        for i in range(len(objects)):
            m = masks.get(i)
            ny, nx, off = table["NY"][i], table["NX"][i], table["MASKOFF"][i]
            stamp = hdul["MASKS"].data[:, off:off + ny * nx].reshape(3, ny, nx).astype(bool)
            np.testing.assert_array_equal(m.union, stamp[0])
            np.testing.assert_array_equal(m.sky, stamp[2])
            np.testing.assert_array_equal(m.union, result.stamps[i][0].astype(bool))
            # The stamp's pixel (0, 0) is cube pixel (X0, Y0), by the table's WCS and the cube's.
            for w in (table_wcs, cube_wcs):
                np.testing.assert_allclose(m.wcs.all_pix2world([0.0], [0.0], 0),
                                           w.all_pix2world([float(m.x0)], [float(m.y0)], 0), atol=1e-10)
        np.testing.assert_array_equal(masks.segmap(1), hdul["SEGMAP", 1].data)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(out.read_bytes()[:-3000])
    with pytest.raises(InputError, match="truncated"):
        read_masks(cut)


def test_source_file_cards_long_values(tmp_path):
    """Values that do not fit one card (CONTINUE), HIERARCH keywords and NaN values are written as
    astropy would, and MPDAF opens the file."""
    from mpdaf.sdetect import Source

    from ifu_extract.estimators import Spectrum1D
    from ifu_extract.sourcefile import write_source

    wcs_hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 2.0,
                           "CRPIX1": 3.0, "CRPIX2": 3.0, "CD1_1": -5.5e-5, "CD2_2": 5.5e-5,
                           "CUNIT1": "deg", "CUNIT2": "deg"})
    from astropy.wcs import WCS

    long_id = "object-" + "x" * 90
    path = write_source(tmp_path / "s.fits", obj_id=long_id, ra=10.0, dec=2.0, cube_name="c.fits",
                        cube_version="v" * 40, cube_checksum="abc",
                        spec_header=[("CTYPE1", "AWAV", ""), ("CRVAL1", 4750.0, ""), ("CRPIX1", 1.0, ""),
                                     ("CDELT1", 1.25, ""), ("CUNIT1", "Angstrom", "")],
                        flux_unit="10**(-20)*erg/s/cm**2/Angstrom",
                        spectra={"MUSE_TOT": Spectrum1D(np.arange(5.0), np.ones(5), {"APRADIUS": (0.5, "r")})},
                        images={"MUSE_WHITE": (np.ones((5, 5)), None)}, masks={"MASK_SKY": np.eye(5, dtype=bool)},
                        stamp_wcs=WCS(wcs_hdr), keywords={"NOTES": ("n" * 100, "long notes"),
                                                          "SNRMED": ("nan", "median S/N"),
                                                          "HIERARCH LONG KEYWORD": (1.5, "hierarch")})
    with fits.open(path) as hdul:
        hdul.verify("exception")
        h = hdul[0].header
        assert h["ID"] == long_id and h["NOTES"] == "n" * 100 and h["LONG KEYWORD"] == 1.5
        assert h["SNRMED"] == "nan"
        np.testing.assert_array_equal(hdul["SPE_MUSE_TOT_DATA"].data, np.arange(5.0))
    src = Source.from_file(str(path))
    assert "MUSE_TOT" in src.spectra and "MUSE_WHITE" in src.images

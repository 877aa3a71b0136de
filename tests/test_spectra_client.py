"""The Data Lab-shaped client on a local store: formats (Spectrum with units and uncertainties,
pandas, Table, FITS), stacked-image row order, id-list forms, spatial queries."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import InverseVariance
from matplotlib.image import imread

from spectra_helpers import MUSE_CTX, SDSS_CTX, shared_collection, shared_store

from ifu_extract.errors import InputError
from ifu_extract.spectra import client as client_module
from ifu_extract.spectra.client import SpecClient
from ifu_extract.spectra.skyindex import angular_distance
from ifu_extract.spectra.storefile import MASK_NODATA, Store


@pytest.fixture(scope="module")
def spec():
    with SpecClient(shared_store()) as c:
        yield c


def test_spectrum_objects_carry_units_and_uncertainties(spec):
    coll = shared_collection()
    sid = f"{MUSE_CTX}:104:MUSE_TOT"
    s = spec.getSpec(sid, fmt="Spectrum")
    assert s.flux.unit == u.Unit("1e-20 erg / (Angstrom s cm2)")
    assert s.spectral_axis.unit == u.AA
    assert isinstance(s.uncertainty, InverseVariance)
    assert s.uncertainty.unit == s.flux.unit ** -2
    t = coll.truth[sid]
    np.testing.assert_array_equal(s.flux.value, t.flux)
    np.testing.assert_allclose(s.uncertainty.array, 1 / t.var, rtol=1e-6)
    np.testing.assert_allclose(s.spectral_axis.value, t.wave)
    assert not s.mask.any()
    assert s.meta["medium"] == "air" and s.meta["z"] == pytest.approx(t.z)
    # SDSS: vacuum, its own unit, survey mask bits -> mask, sky and model in meta
    sdss_id = next(i for i in coll.truth if i.startswith(SDSS_CTX))
    s2 = spec.getSpec(sdss_id, fmt="Spectrum")
    assert s2.flux.unit == u.Unit("1e-17 erg / (Angstrom s cm2)") and s2.meta["medium"] == \
        "vacuum"
    np.testing.assert_array_equal(s2.mask, coll.truth[sdss_id].mask != 0)
    assert s2.meta["sky"].unit == s2.flux.unit
    # aligned: one 2-D Spectrum (spectrum, channel), padding masked with zero weight
    ids = [f"{MUSE_CTX}:500:MUSE_TOT", f"{MUSE_CTX}:100:MUSE_TOT"]
    s3 = spec.getSpec(ids, fmt="Spectrum", align=True)
    assert s3.flux.shape == (2, 200)
    assert s3.mask[0, :40].all() and (s3.uncertainty.array[0, :40] == 0).all()
    assert [m["specid"] for m in s3.meta["spectra"]] == ids


def test_table_and_pandas(spec):
    ids = [f"{MUSE_CTX}:100:MUSE_TOT", f"{MUSE_CTX}:100:MUSE_PSF"]
    tabs = spec.getSpec(ids, fmt="table", cutout="4800-4810")
    assert len(tabs) == 2 and len(tabs[0]) == 9
    assert tabs[0]["wavelength"].unit == u.AA
    assert tabs[0]["ivar"].unit == tabs[0]["flux"].unit ** -2
    assert tabs[1].meta["specid"] == ids[1]
    frames = spec.getSpec(ids, fmt="pandas")
    assert list(frames[0].columns) == ["wavelength", "flux", "ivar", "mask"]
    np.testing.assert_array_equal(frames[1]["flux"],
                                  np.nan_to_num(shared_collection().truth[ids[1]].flux))
    npy = spec.getSpec(ids[0])
    assert spec.to_pandas(npy).shape == (200, 4)
    assert len(client_module.to_Table(npy)) == 200


def test_numpy_aligned_rows_are_spectra(spec):
    ids = list(spec.query(constraint="nchan = 100"))
    data = spec.getSpec(ids, align=True)
    assert data.shape == (4, 100) and data.dtype.names == ("wavelength", "flux", "ivar", "mask")
    for i, sid in enumerate(ids):
        np.testing.assert_array_equal(data[i]["flux"], shared_collection().truth[sid].flux)
    arrays = spec.getSpec(ids, fmt="arrays", align=True)
    assert arrays["flux"].flags.c_contiguous and arrays["flux"].shape == (4, 100)
    with pytest.raises(ValueError, match="needs aligned"):
        spec.getSpec(ids, fmt="arrays")


def test_stacked_image_orders_rows_as_asked(spec):
    ids = list(spec.query(constraint="tag = 'MUSE_TOT' AND nchan = 200 ORDER BY z DESC"))
    z = spec.query(constraint="tag = 'MUSE_TOT' AND nchan = 200 ORDER BY z DESC",
                   fields="z")["z"]
    assert np.all(np.diff(z) <= 0) and len(ids) == 12
    img = spec.stackedImage(ids, fmt="numpy")
    truth = shared_collection().truth
    for i, sid in enumerate(ids):  # row 0 is the first id (the bottom row of the picture)
        np.testing.assert_array_equal(np.nan_to_num(img[i]), np.nan_to_num(truth[sid].flux))
    assert np.isnan(img[ids.index(f"{MUSE_CTX}:100:MUSE_TOT"), 7])  # the NaN channel
    flipped = spec.stackedImage(ids, fmt="numpy", yflip=True)
    np.testing.assert_array_equal(flipped, img[::-1])
    # the PNG: one pixel row per spectrum, first id at the bottom unless yflip
    bright = [f"{MUSE_CTX}:500:MUSE_TOT", f"{MUSE_CTX}:101:MUSE_TOT"]  # short first: padded
    png = imread(io.BytesIO(spec.stackedImage(bright, cutout="4760-4790")), format="png")
    assert png.shape[:2] == (2, 25)
    assert (png[1, :, :3] == 0).all()        # bottom row = first id = padding, black
    assert png[0, :, :3].mean() > 0.1       # top row = second id, data
    png = imread(io.BytesIO(spec.stackedImage(bright, cutout="4760-4790", yflip=True)),
                 format="png")
    assert (png[0, :, :3] == 0).all() and png[1, :, :3].mean() > 0.1


def test_preview_and_grid_pngs(spec):
    ids = list(spec.query())
    png = imread(io.BytesIO(spec.preview(ids[0])), format="png")
    assert png.shape[:2] == (250, 800)
    grid = imread(io.BytesIO(spec.plotGrid(ids, 4, 2, page=1)), format="png")
    assert grid.shape[:2] == (300, 960)
    assert spec.getGridPlot(ids, 4, 2, page=1) == spec.plotGrid(ids, 4, 2, page=1)


def test_fits_and_numpy_out_folders(spec, tmp_path):
    ids = [f"{MUSE_CTX}:100:MUSE_TOT", list(spec.query(context=SDSS_CTX))[0]]
    assert spec.getSpec(ids, fmt="fits", out=tmp_path / "f") == "OK"
    files = sorted((tmp_path / "f").iterdir())
    assert [f.name for f in files] == sorted(i.replace(":", "_") + ".fits" for i in ids)
    with fits.open(tmp_path / "f" / (ids[0].replace(":", "_") + ".fits")) as h:
        assert h[0].header["ID"] == "100" and h[0].header["TAG"] == "MUSE_TOT"
        assert h[0].header["IFXTOOL"] == "spectra get"
        assert h[1].columns["FLUX"].unit == "1e-20 erg / (Angstrom s cm2)"
        assert h[1].columns["WAVELENGTH"].unit == "Angstrom"
        np.testing.assert_array_equal(h[1].data["WAVELENGTH"],
                                      shared_collection().truth[ids[0]].wave)
    assert spec.getSpec(ids, out=tmp_path / "n") == "OK"
    arr = np.load(tmp_path / "n" / (ids[1].replace(":", "_") + ".npy"))
    assert set(arr.dtype.names) == {"wavelength", "flux", "ivar", "mask", "sky", "model"}


def test_id_list_forms(spec, tmp_path):
    ids = list(spec.query(constraint="id = '103'"))
    ref = spec.getSpec(ids)
    listing = tmp_path / "ids.txt"
    assert spec.query(constraint="id = '103'", out=listing) == "OK"
    for form in (listing, str(listing), "\n".join(ids), np.array(ids), tuple(ids),
                 spec.query(constraint="id = '103'", fields="specid,z")):
        got = spec.getSpec(form)
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a["flux"], b["flux"])


def test_cone_and_polygon_match_brute_force():
    with Store(shared_store()) as s:
        ra, dec = s.spectra["ra"], s.spectra["dec"]
        idx = s.sky_index()
        for c_ra, c_dec, r in ((150.05, 2.0, 0.03), (150.0, 2.0, 2.0), (151.04, 2.5, 0.0001),
                               (10.0, -30.0, 1.0), (150.1, 2.0, 180.0)):
            got = idx.cone(c_ra, c_dec, r)
            want = np.flatnonzero(angular_distance(c_ra, c_dec, ra, dec) <= r)
            np.testing.assert_array_equal(got, want)
        poly = [(150.015, 1.99), (150.205, 1.99), (150.205, 2.2), (150.015, 2.2)]
        got = idx.polygon(poly)
        want = np.flatnonzero((ra > 150.015) & (ra < 150.205) & (dec > 1.99) & (dec < 2.2))
        np.testing.assert_array_equal(got, want)
        with pytest.raises(InputError, match="at least 3"):
            idx.polygon([(1, 1), (2, 2)])
        with pytest.raises(InputError, match="Dec"):
            idx.cone(10, 95, 1)


def test_cone_across_ra_zero(tmp_path):
    from ifu_extract.spectra.skyindex import SkyIndex, hpx_of

    rng = np.random.default_rng(3)
    ra = rng.uniform(-2, 2, 5000) % 360
    dec = rng.uniform(-2, 2, 5000)
    idx = SkyIndex(hpx_of(ra, dec), np.arange(5000), ra, dec)
    got = idx.cone(0.2, 0.1, 1.0)
    want = np.flatnonzero(angular_distance(0.2, 0.1, ra, dec) <= 1.0)
    np.testing.assert_array_equal(got, want)
    tri = [(359.5, -1.0), (0.8, -1.0), (0.0, 1.0)]
    inside = idx.polygon(tri)
    assert len(inside) > 100 and ((ra[inside] > 359.4) | (ra[inside] < 0.9)).all()


def test_default_client_made_on_first_use(monkeypatch):
    monkeypatch.setattr(client_module, "_default", None)
    monkeypatch.setenv("IFU_EXTRACT_SPECTRA_STORE", str(shared_store()))
    ids = client_module.query(150.05, 2.0, 0.01)
    assert len(ids) > 0
    assert client_module.getSpec(ids[0])["flux"].shape == (200,)
    assert "mpdaf_air_linear_1p25" in client_module.list_contexts()
    assert client_module.stackedImage(ids, fmt="numpy").shape[0] == len(ids)
    monkeypatch.setattr(client_module, "_default", None)
    monkeypatch.delenv("IFU_EXTRACT_SPECTRA_STORE")
    monkeypatch.delenv("IFU_EXTRACT_SPECTRA_URL", raising=False)
    with pytest.raises(InputError, match="no store or service"):
        client_module.query()


def test_client_argument_checks(spec):
    with pytest.raises(InputError, match="either a store path or a service url"):
        SpecClient()
    with pytest.raises(InputError, match="needs a size"):
        spec.query(ra=150.0, dec=2.0)
    with pytest.raises(InputError, match="no plane 'sky'"):
        spec.getSpec([f"{MUSE_CTX}:100:MUSE_TOT"], values="flux,sky")
    assert spec.get_context() == "default" and spec.get_profile() == "default"
    assert (spec.getSpec([f"{MUSE_CTX}:500:MUSE_TOT"], align=True, cutout="4700-4900")["mask"][0]
            == MASK_NODATA).sum() == 40


def test_shipped_test_data_store_matches_its_inputs(tmp_path):
    from spectra_helpers import REPO_TEST_DATA as td

    ids = (td / "spectra_ids.txt").read_text().split()
    with SpecClient(td / "spectra_store.ifxs") as c:
        assert len(c.query()) == 6
        data = c.getSpec(ids, align=True)
        assert data.shape == (2, 70)  # 101: channels 0-59, 501: 40-69
        assert c.query(constraint="status = 'fallback'").tolist() == [
            f"{MUSE_CTX}:102:MUSE_TOT", f"{MUSE_CTX}:102:MUSE_PSF"]
    from ifu_extract.spectra.ingest import ingest

    inputs = [*sorted(td.glob("spectra_source_*.fits")), *td.glob("spectra_spec-*.fits"),
              td / "spectra_summary.tsv"]
    rep = ingest(inputs, tmp_path / "again.ifxs")
    assert rep.added == 6 and not rep.problems
    with SpecClient(tmp_path / "again.ifxs") as c:
        np.testing.assert_array_equal(c.getSpec(ids, align=True)["flux"], data["flux"])


def test_backend_sees_a_later_ingest(tmp_path):
    from ifu_extract.spectra.backend import LocalBackend
    from ifu_extract.spectra.ingest import ingest

    coll = shared_collection()
    path = tmp_path / "s.ifxs"
    ingest(coll.sources[:1], path)
    backend = LocalBackend(path, refresh_every=1e-6)
    before = backend.store
    assert len(backend.query()["ids"]) == 3
    ingest(coll.sources[1:2], path)
    assert len(backend.query()["ids"]) == 6
    assert backend.store is not before  # swapped whole: readers of the old one stay consistent

"""The spectra store: ingest (Source, SDSS, summary), contexts, idempotence, interrupted ingest,
alignment and cut-outs exact to the channel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spectra_helpers import (MUSE_CTX, MUSE_STEP, MUSE_START, SDSS_CTX, build_collection,
                             make_source, shared_collection, shared_store)

from ifu_extract.errors import InputError
from ifu_extract.spectra import access
from ifu_extract.spectra.grid import Grid, air_to_vacuum, parse_cutout, vacuum_to_air
from ifu_extract.spectra.ingest import ingest
from ifu_extract.spectra.storefile import (MASK_BAD, MASK_NODATA, Store, StoreWriter,
                                           UnknownIds)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store():
    with Store(shared_store()) as s:
        yield s


def test_ingest_every_tag_and_layout(store):
    coll = shared_collection()
    # 12 Sources x 3 tags + 4 short Sources x 1 tag + 5 SDSS coadds
    assert len(store) == 12 * 3 + 4 + 5
    assert sorted(store.specids(store.alive_rows)) == sorted(coll.truth)
    assert set(store.contexts) == {MUSE_CTX, SDSS_CTX}


def test_context_descriptors(store):
    muse = store.contexts[MUSE_CTX].to_dict()
    assert muse["grid"] == {"kind": "linear", "start": MUSE_START, "step": MUSE_STEP,
                            "medium": "air", "unit": "Angstrom"}
    assert muse["planes"] == ["flux", "ivar", "mask"]
    assert muse["layout"] == "mpdaf-source"
    assert muse["flux_unit"] == "1e-20 erg / (Angstrom s cm2)"
    assert (muse["kmin"], muse["kmax"]) == (0, 200)
    assert muse["tags"] == ["MUSE_APER_1.0", "MUSE_PSF", "MUSE_TOT"]
    sdss = store.contexts[SDSS_CTX].to_dict()
    assert sdss["grid"]["kind"] == "log10" and sdss["grid"]["medium"] == "vacuum"
    assert sdss["grid"]["step"] == pytest.approx(1e-4, rel=1e-12)
    assert sdss["planes"] == ["flux", "ivar", "mask", "sky", "model"]
    assert sdss["flux_unit"] == "1e-17 erg / (Angstrom s cm2)"


def test_catalogue_rows_carry_position_redshift_provenance(store):
    coll = shared_collection()
    rows = store.rows_for(list(coll.truth))
    for sid, r in zip(coll.truth, rows):
        t = coll.truth[sid]
        assert store.spectra["ra"][r] == pytest.approx(t.ra)
        assert store.spectra["dec"][r] == pytest.approx(t.dec)
        if np.isfinite(t.z):
            assert store.spectra["z"][r] == pytest.approx(t.z, rel=1e-6)
    src = access.column_values(store, "source", rows)
    assert src[0].startswith("source-") and src[-1].startswith("spec-")
    assert (store.spectra["hpx"][rows] >= 0).all()


def test_unaligned_spectra_equal_the_source_files(store):
    coll = shared_collection()
    ids = list(coll.truth)
    batch = access.fetch(store, ids)
    assert not batch.aligned
    for i, sid in enumerate(ids):
        t = coll.truth[sid]
        np.testing.assert_allclose(batch.wavelength(i), t.wave, rtol=1e-12)
        flux, ivar, mask = (batch.plane(p, i) for p in ("flux", "ivar", "mask"))
        if t.var is not None:  # MPDAF: ivar = 1/var; NaN flux -> 0 and flagged bad
            bad = ~np.isfinite(t.flux)
            np.testing.assert_array_equal(flux[~bad], t.flux[~bad])
            assert (flux[bad] == 0).all() and (mask[bad] == MASK_BAD).all()
            np.testing.assert_allclose(ivar[~bad], 1 / t.var[~bad], rtol=1e-6)
            assert (mask[~bad] == 0).all()
        else:  # SDSS: flux/ivar verbatim (ivar 0: flagged bad), and_mask kept, sky, model
            good = t.ivar > 0
            np.testing.assert_array_equal(flux[good], t.flux[good])
            assert (flux[~good] == 0).all()
            np.testing.assert_array_equal(ivar, t.ivar)
            np.testing.assert_array_equal(mask, t.mask)
            np.testing.assert_array_equal(batch.plane("sky", i), t.extra["sky"])
            np.testing.assert_array_equal(batch.plane("model", i), t.extra["model"])


def test_align_pads_to_the_context_grid_without_resampling(store):
    coll = shared_collection()
    full = f"{MUSE_CTX}:100:MUSE_TOT"
    short = f"{MUSE_CTX}:500:MUSE_TOT"  # channels 40..139 of the same lattice
    batch = access.fetch(store, [short, full], align=True)
    assert batch.words.shape == (3, 2, 200)  # plane, spectrum, channel
    np.testing.assert_array_equal(batch.wave, MUSE_START + MUSE_STEP * np.arange(200))
    flux, ivar, mask = (batch.plane(p) for p in ("flux", "ivar", "mask"))
    t = coll.truth[short]
    np.testing.assert_array_equal(flux[0, 40:140], t.flux)
    # padding: exactly the channels outside the short spectrum
    assert (mask[0, :40] == MASK_NODATA).all() and (mask[0, 140:] == MASK_NODATA).all()
    assert (mask[0, 40:140] & MASK_NODATA == 0).all()
    assert (flux[0, :40] == 0).all() and (ivar[0, 140:] == 0).all()
    assert batch.info["resampled"] == []
    # aligning short spectra alone spans their own range only
    only = access.fetch(store, [short], align=True)
    assert only.wave[0] == MUSE_START + 40 * MUSE_STEP and len(only.wave) == 100


@pytest.mark.parametrize("w0, w1, first, last", [
    (4800.0, 4850.0, 40, 80),          # bounds on channel centres: both included
    (4799.99, 4850.01, 40, 80),        # just outside the centres: same channels
    (4800.01, 4849.99, 41, 79),        # just inside: the boundary channels drop out
    (4700.0, 4751.0, 0, 0),            # clipped to the context coverage
    (4998.75, 5100.0, 199, 199),
])
def test_cutout_keeps_channels_whose_centre_is_inside(store, w0, w1, first, last):
    sid = f"{MUSE_CTX}:101:MUSE_PSF"
    batch = access.fetch(store, [sid], cutout=f"{w0}-{w1}")
    expect = MUSE_START + MUSE_STEP * np.arange(first, last + 1)
    np.testing.assert_array_equal(batch.wave, expect)
    assert (batch.wave >= w0).all() and (batch.wave <= w1).all()
    t = shared_collection().truth[sid]
    np.testing.assert_array_equal(batch.plane("flux")[0], t.flux[first:last + 1])


def test_cutout_pads_spectra_that_do_not_cover_it(store):
    short = f"{MUSE_CTX}:501:MUSE_TOT"
    batch = access.fetch(store, [short], cutout="4760-4810")  # short starts at 4800
    assert batch.wave[0] == 4760.0 and batch.wave[-1] == 4810.0
    mask = batch.plane("mask")[0]
    assert (mask[batch.wave < 4800] == MASK_NODATA).all()
    assert (mask[batch.wave >= 4800] & MASK_NODATA == 0).all()


def test_cutout_outside_data_and_bad_text_are_clear_errors(store):
    with pytest.raises(InputError, match="has no channel"):
        access.fetch(store, [f"{MUSE_CTX}:100:MUSE_TOT"], cutout="8000-9000")
    for bad in ("abc", "7200-6500", "1-2-3", "-5-10"):
        with pytest.raises(InputError, match="cutout"):
            parse_cutout(bad)
    assert parse_cutout("6500-7200") == (6500.0, 7200.0)
    assert parse_cutout((6500, 7200.5)) == (6500.0, 7200.5)


def test_mixing_grids_needs_resampling_on_request(store):
    coll = shared_collection()
    sdss_id = next(i for i in coll.truth if i.startswith(SDSS_CTX))
    ids = [f"{MUSE_CTX}:100:MUSE_TOT", sdss_id]
    with pytest.raises(InputError, match="different wavelength grids"):
        access.fetch(store, ids, align=True)
    batch = access.fetch(store, ids, align=True, resample=True)
    assert batch.info["resampled"] == [SDSS_CTX]
    assert batch.info["medium"] == "air"
    assert batch.planes == ("flux", "ivar", "mask", "sky", "model")
    np.testing.assert_allclose(np.diff(batch.wave), MUSE_STEP)  # on the MUSE lattice
    t = coll.truth[sdss_id]
    air = vacuum_to_air(t.wave)
    inside = (batch.wave >= air[0]) & (batch.wave <= air[-1])
    assert inside.sum() > 100
    mask = batch.plane("mask")[1]
    assert (mask[~inside] == MASK_NODATA).all()
    # linear interpolation of the SDSS flux (1e-17 units) converted to the MUSE unit (1e-20)
    expect = np.interp(batch.wave[inside], air, t.flux.astype(float)) * 1000
    good = (mask[inside] & MASK_BAD) == 0
    np.testing.assert_allclose(batch.plane("flux")[1][inside][good], expect[good], rtol=1e-5)
    assert batch.meta[1]["flux_unit"] == store.contexts[MUSE_CTX].flux_unit
    # MUSE channels are untouched
    np.testing.assert_array_equal(batch.plane("flux")[0][batch.wave >= MUSE_START],
                                  np.nan_to_num(coll.truth[ids[0]].flux))
    # two SDSS spectra with different starts share the lattice: padding, no resampling
    sdss = [i for i in coll.truth if i.startswith(SDSS_CTX)]
    assert access.fetch(store, sdss[:2], align=True).info["resampled"] == []


def test_unknown_ids_are_reported(store):
    with pytest.raises(UnknownIds, match="2 unknown spectrum id"):
        access.fetch(store, [f"{MUSE_CTX}:100:MUSE_TOT", "x:1:A", f"{MUSE_CTX}:999:MUSE_TOT"])


def test_summary_columns_join_spectra(store):
    rows = access.query_rows(store, constraint="status = 'fallback' AND tag = 'MUSE_TOT'")
    assert sorted(access.column_values(store, "id", rows)) == ["102", "106", "110"]
    assert access.catalogue_columns(store)["mag"] == "num"
    mags = access.column_values(store, "mag", rows)
    np.testing.assert_allclose(sorted(mags), [20.2, 20.6, 21.0])


def test_reingest_is_idempotent(tmp_path):
    coll = shared_collection()
    path = tmp_path / "s.ifxs"
    shutil.copy(shared_store(), path)
    size = path.stat().st_size
    rep = ingest(coll.all_files, path)
    assert (rep.added, rep.updated, rep.unchanged, rep.objects) == (0, 0, 45, 0)
    assert path.stat().st_size == size  # nothing written at all


def test_changed_spectrum_supersedes_the_stored_one(tmp_path):
    path = tmp_path / "s.ifxs"
    src = tmp_path / "source-00100.fits"
    make_source(src, 100, 150.0, 2.0, 0.1, seed=0, n=50)
    ingest([src], path)
    truth = make_source(src, 100, 150.0, 2.0, 0.2, seed=1, n=50)  # new content and z
    rep = ingest([src], path)
    assert (rep.added, rep.updated) == (0, 3)
    with Store(path) as s:
        assert len(s) == 3 and s.n_rows == 6
        sid = truth[0].specid.replace("ctx", MUSE_CTX)
        r = s.rows_for([sid])[0]
        assert s.spectra["z"][r] == pytest.approx(0.2)
        np.testing.assert_array_equal(access.fetch(s, [sid]).plane("flux", 0), truth[0].flux)


def test_ingest_killed_half_way_then_rerun_stores_every_spectrum_once(tmp_path):
    coll = shared_collection()
    files = [str(p) for p in coll.sources + coll.short]
    path = tmp_path / "s.ifxs"
    script = textwrap.dedent("""
        import os, signal, sys
        from ifu_extract.spectra import storefile
        from ifu_extract.spectra.ingest import ingest
        original = storefile.StoreWriter.commit
        calls = []
        def commit(self):
            calls.append(1)
            if len(calls) == 3:  # the 3rd batch's data is on disk, its commit is not
                self._fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self)
        storefile.StoreWriter.commit = commit
        ingest(sys.argv[2:], sys.argv[1], commit_every=3)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(path), *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with Store(path) as s:
        assert s.n_commits == 2 and len(s) == 6 * 3  # 2 commits x 3 files x 3 tags
        assert s.file_size > s.valid_end  # the uncommitted tail is there, and ignored
    rep = ingest(files, path, commit_every=3)
    assert rep.dropped_bytes > 0 and rep.unchanged == 18
    with Store(path) as s:
        ids = s.specids(s.alive_rows)
        assert len(ids) == len(set(ids)) == 12 * 3 + 4
        assert s.n_rows == len(ids)  # no duplicate rows, not even superseded ones
        expect = sorted(k for k in coll.truth if k.startswith(MUSE_CTX))
        assert sorted(ids) == expect
        batch = access.fetch(s, expect)
        for i, sid in enumerate(expect):
            t = coll.truth[sid]
            ok = np.isfinite(t.flux)
            np.testing.assert_array_equal(batch.plane("flux", i)[ok], t.flux[ok])


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "s.ifxs"
    with StoreWriter(path):
        with pytest.raises(InputError, match="another ingest"):
            StoreWriter(path)


def test_readers_ignore_a_torn_commit(tmp_path):
    path = tmp_path / "s.ifxs"
    shutil.copy(shared_store(), path)
    with Store(path) as s:
        n, end = len(s), s.valid_end
    with open(path, "ab") as fh:  # a partial segment, as left by a crash mid-write
        fh.write(b"SEG1COMT" + (10 ** 6).to_bytes(8, "little") + b"\0" * 100)
    with Store(path) as s:
        assert len(s) == n and s.valid_end == end


def test_not_a_store_and_bad_inputs_are_reported(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(InputError, match="not an ifu-extract spectra store"):
        Store(junk)
    with pytest.raises(InputError, match="no such spectra store"):
        Store(tmp_path / "missing.ifxs")
    text = tmp_path / "notes.txt"
    text.write_text("just words\n")
    rep = ingest([text, shared_collection().sources[0]], tmp_path / "s.ifxs")
    assert rep.added == 3 and len(rep.problems) == 1 and "neither" in rep.problems[0]
    with pytest.raises(InputError, match="not a valid context"):
        ingest([text], tmp_path / "t.ifxs", context="Bad Name")


def test_explicit_context_rejects_other_grids(tmp_path):
    coll = shared_collection()
    rep = ingest([coll.sources[0], coll.sdss[0]], tmp_path / "s.ifxs", context="muse")
    assert rep.added == 3 and len(rep.problems) == 1 and "does not fit context muse" in \
        rep.problems[0]


def test_phase_offset_grid_gets_its_own_context(tmp_path):
    a, b = tmp_path / "a.fits", tmp_path / "b.fits"
    make_source(a, 1, 10.0, 0.0, n=20, tags=("MUSE_TOT",))
    make_source(b, 2, 10.0, 0.0, n=20, tags=("MUSE_TOT",), start=MUSE_START + 0.5)
    ingest([a, b], tmp_path / "s.ifxs")
    with Store(tmp_path / "s.ifxs") as s:
        assert sorted(s.contexts) == [MUSE_CTX, f"{MUSE_CTX}_2"]


def test_grid_lattice_and_air_vacuum():
    g = Grid("linear", 4750.0, 1.25, "air")
    assert g.channels_inside(4800.0, 4850.0) == (40, 81)
    assert g.locate(4800.0, 1.25, "linear", "air") == 40
    assert g.same_lattice(Grid("linear", 4700.0, 1.25, "air")) == -40
    assert g.same_lattice(Grid("linear", 4700.5, 1.25, "air")) is None
    assert g.same_lattice(Grid("linear", 4750.0, 1.25, "vacuum")) is None
    lg = Grid("log10", 3.58, 1e-4, "vacuum")
    k0, k1 = lg.channels_inside(4000.0, 4100.0)
    w = lg.wave(np.arange(k0 - 1, k1 + 1))
    assert w[0] < 4000.0 <= w[1] and w[-2] <= 4100.0 < w[-1]
    vac = np.array([3000.0, 5000.0, 6564.61, 9000.0])
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(vac)), vac, rtol=1e-10)
    assert vacuum_to_air(6564.61) == pytest.approx(6562.80, abs=0.02)  # H-alpha


def test_build_collection_is_deterministic(tmp_path):
    a = build_collection(tmp_path / "a", n_muse=1, n_short=0, n_sdss=1)
    b = build_collection(tmp_path / "b", n_muse=1, n_short=0, n_sdss=1)
    for sid in a.truth:
        np.testing.assert_array_equal(a.truth[sid].flux, b.truth[sid].flux)


def test_store_file_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    coll = shared_collection()
    files = coll.sources[:3] + coll.sdss[:2] + [coll.summary]
    ingest(files, tmp_path / "a.ifxs")
    ingest(files, tmp_path / "b.ifxs")
    assert (tmp_path / "a.ifxs").read_bytes() == (tmp_path / "b.ifxs").read_bytes()
    assert os.path.getsize(tmp_path / "a.ifxs") < 200_000

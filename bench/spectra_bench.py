"""Benchmark of the spectra service (issue 9); not part of ``make test``.

1. Retrieval: N spectra (default 10 000) aligned and cut out (6500-7200 Angstrom) through the
   local store, side by side with the peer way, reading the same spectra from MPDAF Source
   FITS files one by one with astropy; then the same through the HTTP service (a separate
   ``ifu-extract spectra serve`` process on 127.0.0.1).  Results are checked equal.
2. Cone query: a 1 degree cone over a catalogue of 10^6 rows (dense field and all sky).
4. The real NOIRLab Data Lab client (``--datalab``, or alone with ``--datalab-only``):
   astro-datalab 2.24.0, unmodified, in its own venv and a loopback-only network namespace
   (tests/datalab_harness.py), ``getSpec(ids, align=True, cutout=...)`` of N ids and per-id
   ``getSpec(id)`` calls, side by side with the project's client over HTTP on the same store.
3. Load: C concurrent clients (default 50) x R requests (default 200) on 127.0.0.1 only, a mix
   of /query, /getSpec (10 ids, cut-out), /listSpan and /contexts; bounded in count and time;
   errors and latency percentiles.

Generated data goes to ``bench/out/spectra/`` (git-ignored); the big files are deleted at the
end unless ``--keep``.  Results: ``bench/out/spectra/results.json`` and a Markdown table on
stdout (copied to ``bench/README.md``).

Usage::

    .venv/bin/python bench/spectra_bench.py [--n-spectra 10000] [--rows 1000000]
                                            [--clients 50] [--requests 200] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "spectra"
CUTOUT = (6500.0, 7200.0)
NCHAN, START, STEP = 3681, 4750.0, 1.25  # the MUSE grid
TOKEN = "bench-token"


# -- inputs ---------------------------------------------------------------------------------------
def write_sources(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n MPDAF Source files (MUSE_TOT and MUSE_PSF spectra, 3681 channels each).

    The first file is written by mpdaf; the others are byte copies of it with the ID, RA, DEC
    cards, the Z table value and the spectra replaced in place (writing 10^4 files through
    mpdaf or astropy would take many minutes and test nothing more).
    """
    from mpdaf.obj import Spectrum, WaveCoord
    from mpdaf.sdetect import Source

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ra = 150.0 + rng.uniform(0, 1, n)
    dec = 2.0 + rng.uniform(0, 1, n)
    z = rng.uniform(0, 1.5, n)
    template = folder / "template.fits"
    src = Source.from_data(1, ra[0], dec[0], origin=("ifu-extract", "0.1.0", "cube.fits", "v"))
    wc = WaveCoord(cdelt=STEP, crval=START, cunit="Angstrom", ctype="AWAV", shape=NCHAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in ("MUSE_TOT", "MUSE_PSF"):
            src.spectra[tag] = Spectrum(data=np.ones(NCHAN), var=np.ones(NCHAN), wave=wc,
                                        unit="1e-20 erg/s/cm2/Angstrom")
        src.add_z("MUSE", 0.5)
        src.write(str(template))
    raw = bytearray(template.read_bytes())
    with fits.open(template) as tpl:
        h0 = tpl[0].header
        cards = {}
        for key in ("ID", "RA", "DEC"):
            image = h0.cards[key].image.encode()
            cards[key] = (raw.index(image), h0.comments[key])
        z_off = tpl["Z"].fileinfo()["datLoc"] + 20  # after Z_DESC (20A): Z is big-endian f8
        spectra = [(h.fileinfo()["datLoc"], h.name.endswith("_STAT")) for h in tpl[2:]]
    template.unlink()
    paths = []
    for i in range(n):
        for key, value in (("ID", i + 1), ("RA", float(ra[i])), ("DEC", float(dec[i]))):
            off, comment = cards[key]
            raw[off:off + 80] = fits.Card(key, value, comment).image.encode()
        raw[z_off:z_off + 8] = np.array([z[i]], ">f8").tobytes()
        for off, is_var in spectra:
            arr = (rng.uniform(0.5, 2, NCHAN) if is_var else 20 + rng.normal(0, 2, NCHAN))
            raw[off:off + 4 * NCHAN] = arr.astype(">f4").tobytes()
        path = folder / f"source-{i + 1:06d}.fits"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def fits_loop(paths, w0, w1):
    """The peer: open each Source file with astropy, cut out, align (same grid: stack)."""
    flux, ivar = [], []
    for p in paths:
        with fits.open(p) as h:
            d, s = h["SPE_MUSE_TOT_DATA"], h["SPE_MUSE_TOT_STAT"]
            hd = d.header
            wave = hd["CRVAL1"] + (np.arange(hd["NAXIS1"]) + 1 - hd["CRPIX1"]) * hd["CDELT1"]
            sel = (wave >= w0) & (wave <= w1)
            flux.append(np.asarray(d.data[sel], dtype=np.float32))
            ivar.append((1.0 / np.asarray(s.data[sel], dtype=np.float64)).astype(np.float32))
    return np.array(flux), np.array(ivar)


CPU_TIMES = {}


def timed(fn, repeat=3, name=None):
    """(median wall seconds, result of the last call); median CPU seconds of this process go
    to ``CPU_TIMES[name]`` (steadier than wall time on a shared machine)."""
    times, cpu, res = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if name:
        CPU_TIMES[name] = float(np.median(cpu))
    return float(np.median(times)), res


# -- HTTP service ----------------------------------------------------------------------------------
class Service:
    """``ifu-extract spectra serve`` in a subprocess on 127.0.0.1."""

    def __init__(self, store: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, IFU_EXTRACT_SPECTRA_TOKEN=TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ifu_extract.cli import main; main()", "-q", "spectra",
             "serve", "--store", str(store), "--port", str(self.port)], env=env)

    def __enter__(self):
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("service did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load_test(url, ids, ras, decs, clients, requests, deadline_s=900.0):
    """clients threads x requests each (a fixed mix), bounded; latencies in seconds."""
    import httpx

    lat, errors, lock = [], [], threading.Lock()
    stop = time.monotonic() + deadline_s
    rng_all = np.random.default_rng(7)
    seeds = rng_all.integers(0, 2 ** 31, clients)

    def worker(k):
        rng = np.random.default_rng(seeds[k])
        mine = []
        with httpx.Client(base_url=url, headers={"X-DL-AuthToken": TOKEN}, timeout=60) as h:
            for i in range(requests):
                if time.monotonic() > stop:
                    with lock:
                        errors.append("deadline")
                    break
                kind = i % 4
                j = int(rng.integers(0, len(ids)))
                t0 = time.perf_counter()
                try:
                    if kind == 0:
                        r = h.post("/query", json={"ra": float(ras[j]), "dec": float(decs[j]),
                                                   "size": 0.05,
                                                   "constraint": "tag = 'MUSE_TOT' AND z > 0.2"})
                    elif kind == 1:
                        sel = [ids[int(x)] for x in rng.integers(0, len(ids), 10)]
                        r = h.post("/getSpec", json={"id_list": sel, "cutout": "6500-7200"})
                    elif kind == 2:
                        sel = [ids[int(x)] for x in rng.integers(0, len(ids), 10)]
                        r = h.post("/listSpan", json={"id_list": sel})
                    else:
                        r = h.get("/contexts")
                    ok = r.status_code == 200 and len(r.content) > 0
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                dt = time.perf_counter() - t0
                mine.append(dt)
                if not ok:
                    with lock:
                        errors.append(str(getattr(r, "status_code", r))[:80])
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return np.array(lat), errors, wall


# -- cone query on 10^6 rows -----------------------------------------------------------------------
def big_catalogue(path: Path, rows: int, all_sky: bool, seed: int = 1):
    """A store of *rows* short spectra (8 channels), written block by block."""
    from ifu_extract.spectra.grid import Grid
    from ifu_extract.spectra.skyindex import hpx_of
    from ifu_extract.spectra.storefile import Context, StoreWriter, keys64

    rng = np.random.default_rng(seed)
    if path.exists():
        path.unlink()
    with StoreWriter(path) as w:
        ctx = Context(name="cat", grid=Grid("linear", START, STEP, "air"),
                      flux_unit="1e-20 erg / (Angstrom s cm2)", planes=("flux", "ivar", "mask"),
                      layout="mpdaf-source", kmin=0, kmax=8)
        w.define_context(ctx)
        per = 200_000
        for b0 in range(0, rows, per):
            m = min(per, rows - b0)
            if all_sky:
                ra = rng.uniform(0, 360, m)
                dec = np.degrees(np.arcsin(rng.uniform(-1, 1, m)))
            else:  # a dense 10 x 10 degree field
                ra = rng.uniform(140, 150, m)
                dec = rng.uniform(0, 10, m)
            obj = np.char.mod("%d", np.arange(b0, b0 + m))
            specid = np.char.add("cat:", np.char.add(obj, ":MUSE_TOT"))
            words = np.zeros((m, 3, 8), dtype="<u4")
            words[:, 0, :] = rng.normal(1, 0.1, (m, 8)).astype("<f4").view("<u4")
            cols = {"id": obj, "tag": np.full(m, "MUSE_TOT"), "specid": specid,
                    "key": keys64(specid.tolist()), "content": np.zeros(m, np.uint64),
                    "ra": ra, "dec": dec, "z": rng.uniform(0, 2, m), "hpx": hpx_of(ra, dec),
                    "k0": np.zeros(m, np.int64), "nchan": np.full(m, 8),
                    "wmin": np.full(m, START), "wmax": np.full(m, START + 7 * STEP),
                    "snr": np.full(m, 10.0), "source": np.full(m, "synthetic"),
                    "retire": np.full(m, -1)}
            w.add_block("cat", 0, words, cols)
            w.commit()


def cone_bench(path: Path, all_sky: bool, rows: int):
    from ifu_extract.spectra import access
    from ifu_extract.spectra.client import SpecClient
    from ifu_extract.spectra.storefile import Store

    t0 = time.perf_counter()
    big_catalogue(path, rows, all_sky)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = Store(path)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.sky_index()
    t_index = time.perf_counter() - t0
    rng = np.random.default_rng(11)
    centres = ([(rng.uniform(0, 360), rng.uniform(-60, 60)) for _ in range(30)] if all_sky
               else [(rng.uniform(141, 149), rng.uniform(1, 9)) for _ in range(30)])
    t_rows, t_client, t_constraint, counts = [], [], [], []
    client = SpecClient(store)
    for ra, dec in centres:
        t0 = time.perf_counter()
        r = access.query_rows(store, ra=ra, dec=dec, size=1.0)
        t_rows.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids = client.query(ra, dec, 1.0)
        t_client.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.query(ra, dec, 1.0, constraint="z > 0.5 AND snr > 5")
        t_constraint.append(time.perf_counter() - t0)
        counts.append(len(ids))
        assert len(ids) == len(r)
    res = {"rows": rows, "all_sky": all_sky, "write_s": t_write, "open_s": t_open,
           "index_build_s": t_index, "matches_median": float(np.median(counts)),
           "query_rows_ms": 1000 * float(np.median(t_rows)),
           "client_query_ms": 1000 * float(np.median(t_client)),
           "client_query_p95_ms": 1000 * float(np.percentile(t_client, 95)),
           "client_query_constraint_ms": 1000 * float(np.median(t_constraint)),
           "store_mb": path.stat().st_size / 2 ** 20}
    client.close()
    return res


# -- the real Data Lab client ----------------------------------------------------------------------
def synthetic_store(path: Path, n: int, seed: int = 3) -> list[str]:
    """A store of *n* MUSE-grid spectra (3681 channels, flux/ivar/mask), written directly
    (seconds, instead of writing and ingesting n Source files); returns their ids."""
    from ifu_extract.spectra.grid import Grid
    from ifu_extract.spectra.skyindex import hpx_of
    from ifu_extract.spectra.storefile import Context, StoreWriter, keys64

    rng = np.random.default_rng(seed)
    path.unlink(missing_ok=True)
    name = "mpdaf_air_linear_1p25"
    ids = []
    with StoreWriter(path) as w:
        w.define_context(Context(name=name, grid=Grid("linear", START, STEP, "air"),
                                 flux_unit="1e-20 erg / (Angstrom s cm2)",
                                 planes=("flux", "ivar", "mask"), layout="mpdaf-source",
                                 kmin=0, kmax=NCHAN))
        per = 1000
        for b0 in range(0, n, per):
            m = min(per, n - b0)
            ra, dec = rng.uniform(150, 151, m), rng.uniform(2, 3, m)
            obj = np.char.mod("%d", np.arange(b0 + 1, b0 + m + 1))
            specid = np.char.add(f"{name}:", np.char.add(obj, ":MUSE_TOT"))
            words = np.zeros((m, 3, NCHAN), dtype="<u4")
            words[:, 0] = (20 + rng.normal(0, 2, (m, NCHAN))).astype("<f4").view("<u4")
            words[:, 1] = rng.uniform(0.5, 2, (m, NCHAN)).astype("<f4").view("<u4")
            cols = {"id": obj, "tag": np.full(m, "MUSE_TOT"), "specid": specid,
                    "key": keys64(specid.tolist()), "content": np.zeros(m, np.uint64),
                    "ra": ra, "dec": dec, "z": rng.uniform(0, 1.5, m), "hpx": hpx_of(ra, dec),
                    "k0": np.zeros(m, np.int64), "nchan": np.full(m, NCHAN),
                    "wmin": np.full(m, START), "wmax": np.full(m, START + (NCHAN - 1) * STEP),
                    "snr": np.full(m, 10.0), "source": np.full(m, "synthetic"),
                    "retire": np.full(m, -1)}
            w.add_block(name, 0, words, cols)
            w.commit()
            ids.extend(specid.tolist())
    return ids


def datalab_bench(store: Path, ids: list, per_id: int = 300, repeat: int = 3) -> dict:
    """Spectra/s of the real Data Lab client and of the project's client over HTTP, same store,
    same ids (random order), aligned and cut out to 6500-7200 Angstrom; per-id calls."""
    sys.path.insert(0, str(REPO / "tests"))
    from datalab_harness import DATALAB_PIN, DATALAB_PORT, run_isolated, scratch_dir

    from ifu_extract.spectra.client import SpecClient
    from ifu_extract.spectra.storefile import Store

    cut = f"{CUTOUT[0]:g}-{CUTOUT[1]:g}"
    with Store(store) as s:
        rows = s.rows_for(ids)
        nums = s.specnums(rows).tolist()
    token = "bench.1000.1000.$1$" + "5e1f" * 8
    work = scratch_dir("ifx-datalab-bench-")
    try:
        plan = {"url": f"http://127.0.0.1:{DATALAB_PORT}", "token": token, "ids": nums,
                "cutout": cut, "repeat": repeat, "per_id": per_id}
        (work / "plan.json").write_text(json.dumps(plan))
        proc = run_isolated(REPO / "bench" / "datalab_client_bench.py",
                            [work / "plan.json", work / "out.json"], store=store, token=token,
                            workdir=work, serve_args=(), timeout=1800)
        if proc.returncode != 0 or not (work / "out.json").is_file():
            raise RuntimeError(f"Data Lab client bench failed: {proc.stderr[-3000:]}")
        real = json.loads((work / "out.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = len(ids)
    with Service(store) as svc, SpecClient(url=svc.url, token=TOKEN) as own:
        own.getSpec(ids[:100], align=True, cutout=cut)
        t, data = timed(lambda: own.getSpec(ids, align=True, cutout=cut), repeat=repeat)
        assert list(data.shape) == real["bulk_shape"]
        assert float(np.nansum(data["flux"], dtype=np.float64)) == real["bulk_flux_sum"]
        t0 = time.perf_counter()
        for sid in ids[:per_id]:
            own.getSpec(sid)
        t_per = time.perf_counter() - t0
    return {"client": DATALAB_PIN, "n": n, "channels": real["bulk_shape"][1],
            "datalab_bulk_s": real["bulk_s"], "datalab_bulk_spectra_per_s": n / real["bulk_s"],
            "own_bulk_s": t, "own_bulk_spectra_per_s": n / t,
            "datalab_per_id_spectra_per_s": real["per_id_n"] / real["per_id_s"],
            "own_per_id_spectra_per_s": per_id / t_per, "per_id_n": per_id,
            "per_id_channels": real["per_id_len"]}


def print_datalab(d, load):
    print(f"""
Data Lab client ({d['client']}) vs the project's client over HTTP, same store and ids; load
average {load[0]:.1f}:

| {d['n']:,} spectra, random order, `getSpec(align=True, cutout='6500-7200')` ({d['channels']} channels) | spectra/s | ratio |
| --- | ---: | ---: |
| project's client (`SpecClient(url=...)`) | {d['own_bulk_spectra_per_s']:,.0f} | 1x |
| Data Lab client (`specClient.getSpec`) | {d['datalab_bulk_spectra_per_s']:,.0f} | {d['own_bulk_spectra_per_s'] / d['datalab_bulk_spectra_per_s']:.2f}x slower |
| per-id `getSpec(id)`, {d['per_id_n']} ids ({d['per_id_channels']} channels): project's / Data Lab | {d['own_per_id_spectra_per_s']:,.0f} / {d['datalab_per_id_spectra_per_s']:,.0f} | |
""")


# -- main ---------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-spectra", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse Source files and store kept by an earlier --keep run")
    ap.add_argument("--datalab", action="store_true",
                    help="also time the real Data Lab client (astro-datalab, own venv)")
    ap.add_argument("--datalab-only", action="store_true",
                    help="only the Data Lab client part, on a synthetic store of N spectra")
    args = ap.parse_args(argv)
    if args.datalab_only:
        OUT.mkdir(parents=True, exist_ok=True)
        store = OUT / "datalab.ifxs"
        ids = synthetic_store(store, args.n_spectra)
        ids = [ids[i] for i in np.random.default_rng(5).permutation(len(ids))]
        load = os.getloadavg()
        d = datalab_bench(store, ids)
        d["load_average_start"] = load
        (OUT / "datalab_results.json").write_text(json.dumps(d, indent=2))
        if not args.keep:
            store.unlink(missing_ok=True)
        print_datalab(d, load)
        return

    from ifu_extract.spectra.client import SpecClient
    from ifu_extract.spectra.ingest import ingest

    OUT.mkdir(parents=True, exist_ok=True)
    results = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores, Python {platform.python_version()}",
               "load_average_start": os.getloadavg()}
    n = args.n_spectra
    src_dir = OUT / "sources"
    store = OUT / "bench.ifxs"
    paths = sorted(src_dir.glob("source-*.fits")) if src_dir.exists() else []
    if args.reuse and len(paths) == n and store.exists():
        print(f"reusing {n} Source files and {store}", flush=True)
        results["reused_inputs"] = True
    else:
        if src_dir.exists():
            shutil.rmtree(src_dir)
        t0 = time.perf_counter()
        paths = write_sources(src_dir, n)
        results["write_sources_s"] = time.perf_counter() - t0
        print(f"wrote {n} Source files in {results['write_sources_s']:.1f} s", flush=True)
        store.unlink(missing_ok=True)
        t0 = time.perf_counter()
        rep = ingest(paths, store, commit_every=1000)
        results["ingest_s"] = time.perf_counter() - t0
        results["ingest_spectra_per_s"] = rep.added / results["ingest_s"]
        print(rep.summary(), f"in {results['ingest_s']:.1f} s", flush=True)
    results["store_mb"] = store.stat().st_size / 2 ** 20

    rng = np.random.default_rng(5)
    order = rng.permutation(n)
    ids = [f"mpdaf_air_linear_1p25:{i + 1}:MUSE_TOT" for i in order]
    files = [paths[i] for i in order]
    cut = f"{CUTOUT[0]:g}-{CUTOUT[1]:g}"

    # the peer, page cache warm (a first pass reads the files once)
    fits_loop(files[:200], *CUTOUT)
    t_fits, (ref_flux, ref_ivar) = timed(lambda: fits_loop(files, *CUTOUT), repeat=1,
                                         name="fits")
    results["fits_loop_s"] = t_fits
    results["fits_loop_spectra_per_s"] = n / t_fits
    results["fits_loop_spectra_per_cpu_s"] = n / CPU_TIMES["fits"]
    print(f"astropy FITS loop: {n / t_fits:,.0f} spectra/s", flush=True)

    t0 = time.perf_counter()
    local = SpecClient(store)
    local.query(constraint="LIMIT 1")
    results["local_open_s"] = time.perf_counter() - t0
    for fmt in ("numpy", "arrays"):
        local.getSpec(ids[:100], fmt=fmt, cutout=cut)
        t, data = timed(lambda: local.getSpec(ids, fmt=fmt, cutout=cut), repeat=9,
                        name=f"local_{fmt}")
        flux = data["flux"]
        np.testing.assert_array_equal(flux, ref_flux)
        np.testing.assert_allclose(data["ivar"], ref_ivar, rtol=1e-6)
        results[f"local_{fmt}_s"] = t
        results[f"local_{fmt}_spectra_per_s"] = n / t
        results[f"local_{fmt}_spectra_per_cpu_s"] = n / CPU_TIMES[f"local_{fmt}"]
        print(f"local store fmt={fmt}: {n / t:,.0f} spectra/s ({t * 1000:.1f} ms)", flush=True)
    t, _ = timed(lambda: local.getSpec(sorted(ids), fmt="numpy", cutout=cut), repeat=5)
    results["local_numpy_sorted_spectra_per_s"] = n / t

    with Service(store) as svc:
        remote = SpecClient(url=svc.url, token=TOKEN)
        for fmt in ("numpy", "arrays"):
            remote.getSpec(ids[:100], fmt=fmt, cutout=cut)
            t, data = timed(lambda: remote.getSpec(ids, fmt=fmt, cutout=cut), repeat=5)
            np.testing.assert_array_equal(data["flux"], ref_flux)
            results[f"http_{fmt}_s"] = t
            results[f"http_{fmt}_spectra_per_s"] = n / t
            print(f"HTTP fmt={fmt}: {n / t:,.0f} spectra/s ({t * 1000:.1f} ms)", flush=True)
        remote.close()
        tab = local.query(fields="specid,ra,dec")
        lat, errors, wall = load_test(svc.url, list(tab["specid"]), np.array(tab["ra"]),
                                      np.array(tab["dec"]), args.clients, args.requests)
        results["load"] = {
            "clients": args.clients, "requests_per_client": args.requests,
            "requests": int(len(lat)), "errors": len(errors), "error_samples": errors[:5],
            "wall_s": wall, "req_per_s": len(lat) / wall,
            "p50_ms": 1000 * float(np.percentile(lat, 50)),
            "p95_ms": 1000 * float(np.percentile(lat, 95)),
            "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "max_ms": 1000 * float(lat.max())}
        print("load:", json.dumps(results["load"]), flush=True)
    local.close()
    if args.datalab:
        results["datalab"] = datalab_bench(store, ids)
        print("Data Lab client:", json.dumps(results["datalab"]), flush=True)

    results["cone_dense"] = cone_bench(OUT / "cone.ifxs", all_sky=False, rows=args.rows)
    print("cone (dense 10x10 deg field):", json.dumps(results["cone_dense"]), flush=True)
    results["cone_all_sky"] = cone_bench(OUT / "cone.ifxs", all_sky=True, rows=args.rows)
    print("cone (all sky):", json.dumps(results["cone_all_sky"]), flush=True)

    results["load_average_end"] = os.getloadavg()
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(src_dir, ignore_errors=True)
        for p in (store, OUT / "cone.ifxs"):
            p.unlink(missing_ok=True)
    print_markdown(results)
    if "datalab" in results:
        print_datalab(results["datalab"], results["load_average_start"])


def print_markdown(r):
    f = r["fits_loop_spectra_per_s"]
    ld = r["load"]
    cd, ca = r["cone_dense"], r["cone_all_sky"]
    print(f"""
Machine: {r['machine']}; load average {r['load_average_start'][0]:.1f} at start,
{r['load_average_end'][0]:.1f} at end (other jobs were running).

| what | result | vs astropy loop | target |
| --- | ---: | ---: | --- |
| astropy FITS loop (open each Source, cut out, stack) | {f:,.0f} spectra/s | 1x | peer |
| local store, `getSpec(fmt='numpy', cutout=...)` | {r['local_numpy_spectra_per_s']:,.0f} spectra/s | {r['local_numpy_spectra_per_s'] / f:,.0f}x | >= 100x |
| local store, `fmt='arrays'` | {r['local_arrays_spectra_per_s']:,.0f} spectra/s | {r['local_arrays_spectra_per_s'] / f:,.0f}x | |
| per CPU second: astropy loop / local numpy / local arrays | {r['fits_loop_spectra_per_cpu_s']:,.0f} / {r['local_numpy_spectra_per_cpu_s']:,.0f} / {r['local_arrays_spectra_per_cpu_s']:,.0f} spectra | 1x / {r['local_numpy_spectra_per_cpu_s'] / r['fits_loop_spectra_per_cpu_s']:,.0f}x / {r['local_arrays_spectra_per_cpu_s'] / r['fits_loop_spectra_per_cpu_s']:,.0f}x | |
| HTTP service, `fmt='numpy'` | {r['http_numpy_spectra_per_s']:,.0f} spectra/s | {r['http_numpy_spectra_per_s'] / f:,.0f}x | >= 10x |
| HTTP service, `fmt='arrays'` | {r['http_arrays_spectra_per_s']:,.0f} spectra/s | {r['http_arrays_spectra_per_s'] / f:,.0f}x | |
| 1 deg cone, 10^6 rows, dense field ({cd['matches_median']:,.0f} matches) | {cd['client_query_ms']:.1f} ms (p95 {cd['client_query_p95_ms']:.1f}) | | < 50 ms |
| 1 deg cone, 10^6 rows, all sky ({ca['matches_median']:,.0f} matches) | {ca['client_query_ms']:.2f} ms | | < 50 ms |
| load: {ld['clients']} clients x {ld['requests_per_client']} requests | {ld['errors']} errors, {ld['req_per_s']:,.0f} req/s; p50 {ld['p50_ms']:.1f} ms, p95 {ld['p95_ms']:.1f} ms, p99 {ld['p99_ms']:.1f} ms | | 0 errors |
""")


if __name__ == "__main__":
    main()

"""Benchmark: vectorised polynomial continuum subtraction vs a per-spaxel numpy.polyfit loop.

Builds a MUSE-sized synthetic cube (3681 x 300 x 300, DATA + STAT float32, ~2.65 GB) in
``bench/out/`` by streaming wavelength blocks to disk, then, each in a fresh process so that the
memory figures are its own:

1. ``ifu_extract.contsub.subtract_continuum`` on the whole cube, end to end (read, fit, write
   DATA + STAT), degree 5, 3-sigma clipping, 3 rounds, variance weights;
2. the same job spaxel by spaxel on a sample of rows spread over the field: the rows read with
   the same reader, one ``numpy.polyfit`` per spaxel and clipping round
   (``polyfit_continuum_reference``: same degree, weights and clipping), subtracted, written
   (DATA + STAT, astropy); timed and extrapolated to all spaxels with data.  The vectorised fit
   is also timed on the same rows (fit only), and both results are compared.

Both run with one BLAS thread (``OPENBLAS_NUM_THREADS=1``): on a busy machine, BLAS threads make
``numpy.polyfit`` several times slower.  Wall and CPU seconds are both reported; the CPU figure
is the one to trust when other jobs share the machine.

Peak anonymous memory is sampled from ``RssAnon`` in ``/proc/self/status`` every 10 ms.

Usage::

    .venv/bin/python bench/contsub_bench.py [--shape 3681 300 300] [--loop-rows 4] [--keep]

Results are printed as a Markdown table and saved to ``bench/out/contsub_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SEED = 2024


# ---------------------------------------------------------------------------------- memory
class RssAnonPeak:
    """Sample RssAnon (kB in /proc/self/status) in a thread; ``peak`` in bytes."""

    def __init__(self, interval=0.01):
        self.interval = interval
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


# ---------------------------------------------------------------------------------- the cube
def _sources(rng, ny, nx, wave, n_src=150):
    """Spatial profiles (K, ny*nx) and total spectra (n_wave, K) of a crowded field."""
    from ifu_extract import synth

    profiles, spectra = [], []
    for _ in range(n_src):
        x, y = rng.uniform(5, nx - 5), rng.uniform(5, ny - 5)
        fwhm = rng.uniform(3.0, 9.0)                          # pixels: stars to small galaxies
        box = int(4 * fwhm)
        x0, y0 = int(x) - box, int(y) - box
        stamp = synth.moffat_image((2 * box + 1, 2 * box + 1), x - x0, y - y0, fwhm, 2.8)
        img = np.zeros((ny, nx))
        ys = slice(max(y0, 0), min(y0 + 2 * box + 1, ny))
        xs = slice(max(x0, 0), min(x0 + 2 * box + 1, nx))
        img[ys, xs] = stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        profiles.append(img.ravel())
        level = 10 ** rng.uniform(1.0, 3.3)
        dips = [(rng.uniform(wave[0], wave[-1]), rng.uniform(4, 15), rng.uniform(0.05, 0.3))
                for _ in range(rng.integers(0, 5))]
        spec = synth.continuum_spectrum(wave, level, rng.uniform(-0.9, 0.9), dips)
        u = (wave - wave.mean()) / (0.5 * (wave[-1] - wave[0]))
        spec *= 1 + rng.uniform(-0.3, 0.3) * u**2
        for _ in range(rng.integers(0, 6)):
            spec += synth.emission_line(wave, rng.uniform(wave[0], wave[-1]), rng.uniform(1.5, 4),
                                        level * rng.uniform(5, 200))
        spectra.append(spec)
    return np.array(profiles), np.array(spectra).T


def make_cube(path: Path, shape, seed=SEED):
    """Write a MUSE-like DATA/STAT cube block by block (never whole in memory)."""
    from astropy.io import fits

    from ifu_extract import synth

    nw, ny, nx = shape
    wave = 4749.89 + 1.25 * np.arange(nw)
    rng = np.random.default_rng(seed)
    profiles, spectra = _sources(rng, ny, nx, wave)
    sky = np.ones(nw)
    for centre in rng.uniform(wave[0], wave[-1], 60):         # sky-line noise spikes
        sky += rng.uniform(1, 8) * np.exp(-0.5 * ((wave - centre) / 1.5) ** 2)
    sigma = 2.0 * sky                                        # per channel
    spatial = 1.0 + 0.2 * np.sqrt(profiles.sum(axis=0) / profiles.sum(axis=0).max())
    edge = np.zeros((ny, nx), bool)                          # MUSE-like empty border
    edge[:6, :] = edge[-6:, :] = edge[:, :6] = edge[:, -6:] = True
    edge = edge.ravel()
    header = synth.make_cube([], shape=(nw, 1, 1), wave0=wave[0], dwave=1.25)[3]
    header["CRPIX1"], header["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    for key in ("FSFMODE", "FSF00BET", "FSF00FWA", "FSF00FWB"):
        del header[key]
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "MUSE"
    prim.header["OBJECT"] = "contsub benchmark field"
    prim.writeto(path, overwrite=True)
    block = max(1, int(64e6 // (8 * ny * nx)))
    for name in ("DATA", "STAT"):
        hdr = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", -32), ("NAXIS", 3), ("NAXIS1", nx),
                           ("NAXIS2", ny), ("NAXIS3", nw), ("PCOUNT", 0), ("GCOUNT", 1),
                           ("EXTNAME", name)])
        hdr.extend(header)
        stream = fits.StreamingHDU(str(path), hdr)
        for b, z0 in enumerate(range(0, nw, block)):
            z1 = min(z0 + block, nw)
            noise_sd = sigma[z0:z1, None] * spatial[None, :]
            if name == "DATA":
                brng = np.random.default_rng([seed, b])
                values = spectra[z0:z1] @ profiles
                values += brng.standard_normal(values.shape) * noise_sd
                values[brng.random(values.shape) < 1e-3] = np.nan
            else:
                values = noise_sd**2
            values[:, edge] = np.nan
            stream.write(values.astype(np.float32).reshape(z1 - z0, ny, nx))
        stream.close()


# ---------------------------------------------------------------------------------- stages
def stage_vectorised(cube: Path, out: Path, threads: int) -> dict:
    from ifu_extract.contsub import subtract_continuum

    with RssAnonPeak() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        res = subtract_continuum(cube, out, degree=5, clip_sigma=3.0, clip_iters=3,
                                 threads=threads)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"threads": threads, "seconds": seconds, "cpu_seconds": cpu,
            "rss_anon_peak": mem.peak, "n_spaxels": res.n_spaxels, "n_failed": res.n_failed}


class _Clock:
    """Accumulate wall and CPU seconds of the ``with`` blocks."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._t, self._c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._t
        self.cpu += time.process_time() - self._c


def stage_loop(cube: Path, out: Path, n_rows: int) -> dict:
    """The same job, spaxel by spaxel, on *n_rows* rows: read, polyfit loop, subtract, write."""
    from astropy.io import fits

    from ifu_extract.contsub import fit_continuum, polyfit_continuum_reference
    from ifu_extract.cubeio import open_cube

    opts = dict(degree=5, clip_sigma=3.0, clip_iters=3)
    io, fit, ours = _Clock(), _Clock(), _Clock()
    n_fit, worst = 0, 0.0
    subs, variances = [], []
    with open_cube(cube) as c, fits.open(out, memmap=True) as done, RssAnonPeak() as mem:
        rows = np.linspace(c.ny * 0.15, c.ny * 0.85, n_rows).astype(int)
        for y in rows:
            with io:
                data, var = c.window(0, c.nx, y, y + 1)
            flat, vflat = data[:, 0, :], var[:, 0, :]
            with fit:
                ref = polyfit_continuum_reference(flat, vflat, c.wave, **opts)
                sub = flat - ref.continuum
            with ours:
                fit_continuum(flat, vflat, c.wave, **opts)
            subs.append(sub)
            variances.append(np.where(np.isfinite(sub), vflat, np.nan))
            n_fit += int(np.count_nonzero(ref.n_used))
            mine = np.asarray(done["DATA"].data[:, y, :], dtype=np.float64)
            both = np.isfinite(mine) & np.isfinite(sub)
            if both.any():
                scale = np.max(np.abs(ref.continuum[:, both.any(axis=0)]))
                worst = max(worst, float(np.max(np.abs(mine[both] - sub[both])) / scale))
        with io:
            hdus = fits.HDUList([fits.PrimaryHDU(),
                                 fits.ImageHDU(np.stack(subs, axis=1), name="DATA"),
                                 fits.ImageHDU(np.stack(variances, axis=1), name="STAT")])
            hdus.writeto(out.with_name("loop_rows.fits"), overwrite=True, checksum=True)
    out.with_name("loop_rows.fits").unlink()
    return {"io_seconds": io.wall, "io_cpu_seconds": io.cpu, "fit_seconds_loop": fit.wall,
            "fit_cpu_seconds_loop": fit.cpu, "fit_seconds_vectorised": ours.wall,
            "fit_cpu_seconds_vectorised": ours.cpu, "n_spaxels": n_fit, "rows": rows.tolist(),
            "rss_anon_peak": mem.peak, "max_rel_difference": worst}


def _child(stage: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, *map(str, args)]
    # One BLAS thread for every stage: numpy.polyfit's tiny SVDs are many times slower with
    # several BLAS threads on a busy machine, and our own parallelism is explicit (threads).
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs=3, type=int, default=(3681, 300, 300),
                    metavar=("NWAVE", "NY", "NX"))
    ap.add_argument("--loop-rows", type=int, default=4,
                    help="rows of spaxels fitted by the polyfit loop (then extrapolated)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="also time contsub with 2..THREADS threads")
    ap.add_argument("--keep", action="store_true", help="keep the cube and the output")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    opt = ap.parse_args(argv)
    if opt.stage == "vectorised":
        print(json.dumps(stage_vectorised(Path(opt.args[0]), Path(opt.args[1]),
                                          int(opt.args[2]))))
        return
    if opt.stage == "loop":
        print(json.dumps(stage_loop(Path(opt.args[0]), Path(opt.args[1]), int(opt.args[2]))))
        return

    nw, ny, nx = opt.shape
    OUT.mkdir(exist_ok=True)
    cube, out = OUT / "contsub_cube.fits", OUT / "contsub_out.fits"
    data_stat = 2 * 4 * nw * ny * nx
    need = 2 * data_stat * 1.05
    free = shutil.disk_usage(OUT).free
    if free < need:
        sys.exit(f"need {need / 1e9:.1f} GB free in {OUT}, have {free / 1e9:.1f} GB")
    try:
        t0 = time.perf_counter()
        make_cube(cube, (nw, ny, nx))
        print(f"cube {nw} x {ny} x {nx} written in {time.perf_counter() - t0:.0f} s "
              f"({cube.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
        runs = [_child("vectorised", cube, out, n) for n in range(1, opt.threads + 1)]
        loop = _child("loop", cube, out, opt.loop_rows)
    finally:
        if not opt.keep:
            for path in (cube, out):
                path.unlink(missing_ok=True)
    scale = runs[0]["n_spaxels"] / loop["n_spaxels"]      # extrapolation to the whole cube
    loop_wall = (loop["fit_seconds_loop"] + loop["io_seconds"]) * scale
    loop_cpu = (loop["fit_cpu_seconds_loop"] + loop["io_cpu_seconds"]) * scale
    result = {
        "shape": [nw, ny, nx], "data_stat_bytes": data_stat, "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(), "vectorised": runs, "loop_sample": loop,
        "loop_seconds_extrapolated": loop_wall, "loop_cpu_seconds_extrapolated": loop_cpu,
    }
    (OUT / "contsub_bench.json").write_text(json.dumps(result, indent=2))
    gb = 1e9
    lines = [f"| {nw} x {ny} x {nx}, degree 5, 3-sigma clipping x 3, variance weights: read, "
             "fit, subtract, write DATA+STAT | wall s | CPU s | speed-up wall (CPU) | "
             "RssAnon peak |", "|---|---:|---:|---:|---:|"]
    for run in runs:
        speedup = f"{loop_wall / run['seconds']:.0f}x ({loop_cpu / run['cpu_seconds']:.0f}x)"
        lines.append(f"| ifu-extract contsub, {run['threads']} thread(s), {run['n_spaxels']} "
                     f"spaxels | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | {speedup} | "
                     f"{run['rss_anon_peak'] / gb:.2f} GB |")
    lines.append(f"| numpy.polyfit loop ({loop['n_spaxels']} spaxels of {len(loop['rows'])} rows "
                 f"timed, extrapolated) | {loop_wall:.0f} | {loop_cpu:.0f} | 1x | "
                 f"{loop['rss_anon_peak'] / gb:.2f} GB (sample) |")
    fit_wall = loop["fit_seconds_loop"] / loop["fit_seconds_vectorised"]
    fit_cpu = loop["fit_cpu_seconds_loop"] / loop["fit_cpu_seconds_vectorised"]
    memory = ", ".join(f"{r['rss_anon_peak'] / data_stat:.2f} ({r['threads']} thr.)"
                       for r in runs)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        "",
        f"- fit only, the same {loop['n_spaxels']} spaxels one row at a time: "
        f"{fit_wall:.0f}x wall, {fit_cpu:.0f}x CPU",
        f"- RssAnon peak / DATA+STAT size ({data_stat / gb:.2f} GB): {memory}",
        "- largest difference between the two results, relative to the continuum peak: "
        f"{loop['max_rel_difference']:.1e}",
        f"- load average after the run: {load} on {os.cpu_count()} CPUs",
    ]
    print("\n".join(lines))

if __name__ == "__main__":
    main()

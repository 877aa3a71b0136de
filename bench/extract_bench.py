"""Extraction benchmark: ifu-extract side by side with a per-object mpdaf loop doing the same work.

Two fields:

1. the real MUSE minicube of the mpdaf wheel (3681 x 40 x 40) with its cat.txt;
2. a synthetic 300 x 300 x 3681 MUSE-like cube with N point sources (default 500), written
   once to ``bench/out/`` (2.6 GB for DATA+STAT; reused while it exists).

For each: seconds per object for ifu-extract (mask + extract with Source files; then the QA
figures) and for the mpdaf loop (per object: Source.from_data, add_white_image, add_image of the
segmentation, find_union_mask/find_sky_mask, extract_spectra with the same apertures and PSF,
Source.write: the core of AutoSpec's per-object work); peak anonymous memory (RssAnon, sampled
every 5 ms: memory-mapped cube pages are not the program's) of each, measured in one process
per tool.  Interpreter start and imports are excluded and reported separately.

Usage::

    python bench/extract_bench.py [--objects 500] [--mpdaf-objects 60] [--threads 1] [--no-big]
                                  [--no-mini] [--no-plots] [--output FILE]

Wall-clock and CPU time (user + system, which a loaded machine does not distort) are both
reported; ifu-extract writes to a fresh output folder each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


# ----------------------------------------------------------------------------- memory
class RssAnonPeak:
    """Sample RssAnon of a process (this one by default) every *interval* seconds."""

    def __init__(self, pid="self", interval=0.005):
        self.path = f"/proc/{pid}/status"
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()

    def _read(self):
        try:
            with open(self.path) as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1])
        except OSError:
            return 0
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self._read())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak_kb = self._read()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, self._read())

    @property
    def mb(self):
        return self.peak_kb / 1024.0


# ----------------------------------------------------------------------------- synthetic field
def make_big_cube(path: Path, nobj: int, shape=(3681, 300, 300), seed=42):
    """Write a MUSE-like cube of point sources block by block (bounded memory); return truth."""
    from astropy.io import fits

    from ifu_extract import synth
    from ifu_extract.fitsio import format_card
    from ifu_extract.psf import PSFModel

    nw, ny, nx = shape
    rng = np.random.default_rng(seed)
    wave = 4749.89 + 1.25 * np.arange(nw)
    xs = rng.uniform(13, nx - 14, nobj)  # stamps of +-12 spaxels stay inside
    ys = rng.uniform(13, ny - 14, nobj)
    levels = 10 ** rng.uniform(0.5, 2.0, nobj)
    slopes = rng.uniform(-0.5, 0.8, nobj)
    hdr = synth._header(shape, wave[0], 1.25, 0.2, 63.3554, 10.4656, (0.85, 0.60), 2.8, wave)
    slope = (0.60 - 0.85) / (wave[-1] - wave[0])
    psf = PSFModel("moffat", (slope, 0.85 - slope * wave[0]), (2.8,))
    sigma = 2.0 + 1.0 * (wave > 7000)  # noisier red part, as with MUSE sky residuals
    half = 12

    def card_block(name, extra):
        cards = [format_card("XTENSION", "IMAGE"), format_card("BITPIX", -32), format_card("NAXIS", 3),
                 format_card("NAXIS1", nx), format_card("NAXIS2", ny), format_card("NAXIS3", nw),
                 format_card("PCOUNT", 0), format_card("GCOUNT", 1), format_card("EXTNAME", name)]
        cards += [format_card(k, hdr[k]) for k in hdr if not k.startswith("FSF")]
        cards += [format_card(*c) for c in extra]
        cards.append(b"END".ljust(80))
        raw = b"".join(cards)
        return raw + b" " * (-len(raw) % 2880)

    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "MUSE"
    for k in ("FSFMODE", "FSF00BET", "FSF00FWA", "FSF00FWB"):
        prim.header[k] = hdr[k]
    prim.header["EXTEND"] = True
    tmp = path.with_suffix(".tmp")
    block = 128
    with open(tmp, "wb") as fh:
        fh.write(prim.header.tostring().encode())
        for ext in ("DATA", "STAT"):
            fh.write(card_block(ext, []))
            for z0 in range(0, nw, block):
                z1 = min(z0 + block, nw)
                if ext == "STAT":
                    arr = np.broadcast_to((sigma[z0:z1] ** 2)[:, None, None], (z1 - z0, ny, nx))
                else:
                    arr = (rng.standard_normal((z1 - z0, ny, nx)) * sigma[z0:z1, None, None]).astype(np.float32)
                    for i in range(nobj):
                        xi, yi = int(round(xs[i])), int(round(ys[i]))
                        st = psf.stamps(wave[z0:z1], (2 * half + 1, 2 * half + 1),
                                        xs[i] - xi + half, ys[i] - yi + half, 0.2, nodes=4)
                        spec = synth.continuum_spectrum(wave[z0:z1], levels[i], slopes[i])
                        arr[:, yi - half:yi + half + 1, xi - half:xi + half + 1] += (spec[:, None, None] * st)
                fh.write(np.ascontiguousarray(arr, dtype=">f4").tobytes())
            pad = (-(nw * ny * nx * 4)) % 2880
            fh.write(b"\0" * pad)
    os.replace(tmp, path)
    truth = {"x": xs.tolist(), "y": ys.tolist(), "level": levels.tolist()}
    path.with_suffix(".json").write_text(json.dumps(truth))
    return truth


def field_inputs(cube_path: Path, truth: dict, work: Path):
    """Catalogue and segmentation map (true positions; labels = disks of 1.2") for the field."""
    from astropy.io import fits
    from astropy.table import Table

    from ifu_extract.cubeio import open_cube
    from ifu_extract.wcsutil import pixel_to_world

    with open_cube(cube_path, require_finite=False) as cube:
        ra, dec = pixel_to_world(cube.wcs, np.array(truth["x"]), np.array(truth["y"]))
        seg = np.zeros((cube.ny, cube.nx), np.int32)
        yy, xx = np.indices(seg.shape)
        for i, (x, y) in enumerate(zip(truth["x"], truth["y"]), start=1):
            r = 6 if truth["level"][i - 1] > 30 else 4
            box = (slice(max(int(y) - r - 1, 0), int(y) + r + 2), slice(max(int(x) - r - 1, 0), int(x) + r + 2))
            sel = ((xx[box] - x) ** 2 + (yy[box] - y) ** 2 <= r * r) & (seg[box] == 0)
            seg[box][sel] = i
        fits.PrimaryHDU(seg, cube.wcs.to_header()).writeto(work / "segmap.fits", overwrite=True)
    Table({"ID": np.arange(1, len(ra) + 1), "RA": ra, "DEC": dec}).write(work / "catalog.tsv",
                                                                         format="ascii.tab", overwrite=True)
    return work / "catalog.tsv", work / "segmap.fits"


# ----------------------------------------------------------------------------- the two tools
OURS = r"""
import json, sys, time
t0 = time.time()
import numpy as np
from ifu_extract.catalog import read_catalog
from ifu_extract.cubeio import open_cube
from ifu_extract.catalog_extraction import extract_catalog
from ifu_extract.estimators import ExtractConfig
from ifu_extract.masks import make_masks, write_masks
from ifu_extract.psf import PSFModel
sys.path.insert(0, {here!r})
from extract_bench import RssAnonPeak
t_import = time.time() - t0
cube_path, cat_path, seg_path, work, threads, plots = {args!r}
from ifu_extract.image import band_image, write_image
import os, shutil
shutil.rmtree(work + "/ours", ignore_errors=True)  # a fresh OUTDIR, as a first run has
cat = read_catalog(cat_path)
with RssAnonPeak() as mem:
    cpu0 = os.times()
    t0 = time.time()
    with open_cube(cube_path) as cube:
        white = band_image(cube)  # once, as `run` does: mask and extract reuse it
        write_image(white, work + "/white.fits", "image")
    t_white = time.time() - t0
    t1 = time.time()
    with open_cube(cube_path) as cube:
        res = make_masks(cube, cat, [seg_path], size=5.0, fwhm=0.75, white=white.data)
        write_masks(res, work + "/masks.fits")
    t_mask = time.time() - t1
    t2 = time.time()
    cfg = ExtractConfig(apertures=(0.5, 1.0), psf=PSFModel("moffat", (0.75,), (2.8,)))
    rows = extract_catalog(cube_path, cat, work + "/masks.fits", work + "/ours", cfg, threads=threads,
                           white_path=work + "/white.fits")
    t_extract = time.time() - t2
    cpu1 = os.times()
    cpu_s = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4]))  # user + system, self + children
    t_plots = None
    if plots:
        try:
            from ifu_extract.steps.report import ReportConfig, run_report
            make_report = lambda d, threads: run_report(d, ReportConfig(threads=threads))
        except ImportError:   # a version before the step layer
            try:
                from ifu_extract.report import make_report
            except ImportError:
                make_report = None
        if make_report is not None:
            t3 = time.time()
            make_report(work + "/ours", threads=threads)
            t_plots = time.time() - t3
n = sum(bool(r["FILE"]) for r in rows)
print(json.dumps({{"n": n, "import_s": t_import, "white_s": t_white, "mask_s": t_mask, "extract_s": t_extract,
                  "cpu_s": cpu_s, "plots_s": t_plots, "rssanon_mb": mem.mb}}))
"""

PEER = r"""
import json, sys, time, warnings, logging
t0 = time.time()
import numpy as np
import astropy.units as u
from astropy.table import Table
from mpdaf.obj import Cube, Image
from mpdaf.sdetect import Source
sys.path.insert(0, {here!r})
from extract_bench import RssAnonPeak
t_import = time.time() - t0
logging.getLogger("mpdaf").setLevel(logging.ERROR)
warnings.simplefilter("ignore")
cube_path, cat_path, seg_path, work, nmax, plots = {args!r}
import os, shutil
shutil.rmtree(work + "/peer", ignore_errors=True)
os.makedirs(work + "/peer", exist_ok=True)
cat = Table.read(cat_path, format="ascii.tab") if cat_path.endswith(".tsv") else None
with RssAnonPeak() as mem:
    t1 = time.time()
    c1 = time.process_time()
    cube = Cube(cube_path)
    seg = Image(seg_path)
    n = 0
    for row in cat[:nmax]:
        src = Source.from_data(int(row["ID"]), float(row["RA"]), float(row["DEC"]),
                               origin=("bench", "0", os.path.basename(cube_path), "0"))
        src.add_white_image(cube, size=5.0)
        src.add_image(seg, "SEG", size=5.0, minsize=0, order=0)
        src.find_union_mask(["SEG"])
        src.find_sky_mask(["SEG"])
        fwhm = np.full(cube.shape[0], 0.75)
        src.extract_spectra(cube, obj_mask="MASK_UNION", sky_mask="MASK_SKY", skysub=True,
                            psf=fwhm, beta=2.8, apertures=[0.5, 1.0])
        if plots:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(1, 2, figsize=(10, 3))
            src.images["MUSE_WHITE"].plot(ax=ax[0])
            src.spectra["MUSE_TOT_SKYSUB"].plot(ax=ax[1])
            fig.savefig(work + "/peer/%d.png" % int(row["ID"]))
            plt.close(fig)
        src.write(work + "/peer/%d.fits" % int(row["ID"]))
        n += 1
    t_loop = time.time() - t1
    cpu_loop = time.process_time() - c1
print(json.dumps({{"n": n, "import_s": t_import, "loop_s": t_loop, "cpu_s": cpu_loop, "rssanon_mb": mem.mb}}))
"""


def run_script(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_field(name, cube_path, cat_tsv, seg_path, work: Path, threads, mpdaf_objects,
                plot_modes=(False, True)):
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for plots in plot_modes:
        load0 = os.getloadavg()[0]
        ours = run_script(OURS.format(here=str(HERE), args=(str(cube_path), str(cat_tsv), str(seg_path),
                                                             str(work), threads, plots)))
        peer = run_script(PEER.format(here=str(HERE), args=(str(cube_path), str(cat_tsv), str(seg_path),
                                                             str(work), mpdaf_objects, plots)))
        per_ours = (ours["white_s"] + ours["mask_s"] + ours["extract_s"] + (ours["plots_s"] or 0)) / ours["n"]
        per_peer = peer["loop_s"] / peer["n"]
        # CPU time (user + system) is what a loaded, shared machine does not distort; without
        # plots only (the figures' CPU time is not measured separately).
        cpu_ours = None if plots else ours["cpu_s"] / ours["n"]
        cpu_peer = peer["cpu_s"] / peer["n"]
        rows.append({"field": name, "plots": plots, "threads": threads, "objects": ours["n"],
                     "peer_objects": peer["n"],
                     "ours_ms_per_object": 1e3 * per_ours, "peer_ms_per_object": 1e3 * per_peer,
                     "speedup": per_peer / per_ours,
                     "ours_cpu_ms_per_object": None if cpu_ours is None else 1e3 * cpu_ours,
                     "peer_cpu_ms_per_object": 1e3 * cpu_peer,
                     "cpu_speedup": None if cpu_ours is None else cpu_peer / cpu_ours,
                     "ours_rssanon_mb": ours["rssanon_mb"],
                     "peer_rssanon_mb": peer["rssanon_mb"], "ours_import_s": ours["import_s"],
                     "peer_import_s": peer["import_s"], "ours_white_s": ours["white_s"], "ours_mask_s": ours["mask_s"],
                     "ours_extract_s": ours["extract_s"], "ours_plots_s": ours["plots_s"],
                     "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=500)
    ap.add_argument("--mpdaf-objects", type=int, default=60,
                    help="objects of the big field run through the mpdaf loop (time per object is "
                         "what is compared)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-big", action="store_true", help="skip the synthetic field")
    ap.add_argument("--no-mini", action="store_true", help="skip the minicube")
    ap.add_argument("--no-plots", action="store_true", help="only the rows without plots")
    ap.add_argument("--output", default=None, help="results JSON (default bench/out/extract_bench.json)")
    args = ap.parse_args(argv)
    plot_modes = (False,) if args.no_plots else (False, True)
    OUT.mkdir(exist_ok=True)
    import mpdaf

    results = []
    if not args.no_mini:
        mini = Path(mpdaf.__file__).parent / "data" / "sdetect" / "minicube.fits"
        work = OUT / "minicube"
        work.mkdir(parents=True, exist_ok=True)
        # Minicube: mpdaf's cat.txt objects, a segmentation map from our detect on the white light.
        from astropy.io import fits
        from astropy.table import Table

        from ifu_extract.catalog import read_catalog
        from ifu_extract.cubeio import open_cube
        from ifu_extract.detect import detect_sources
        from ifu_extract.image import band_image

        with open_cube(mini) as cube:
            det = detect_sources(band_image(cube))
            fits.PrimaryHDU(det.segmap, cube.wcs.to_header()).writeto(work / "segmap.fits", overwrite=True)
        cat = read_catalog(mini.parent / "cat.txt")
        Table({"ID": [int(i) for i in cat["ID"]], "RA": cat["RA"], "DEC": cat["DEC"]}).write(
            work / "catalog.tsv", format="ascii.tab", overwrite=True)
        results += bench_field("minicube 3681x40x40", mini, work / "catalog.tsv", work / "segmap.fits", work,
                               args.threads, 10**6, plot_modes)
    if not args.no_big:
        big = OUT / f"synthetic_{args.objects}.fits"
        if not big.exists():
            t = time.time()
            truth = make_big_cube(big, args.objects)
            print(f"made {big} in {time.time() - t:.0f} s", flush=True)
        truth = json.loads(big.with_suffix(".json").read_text())
        work = OUT / f"synthetic_{args.objects}"
        work.mkdir(parents=True, exist_ok=True)
        cat_tsv, seg = field_inputs(big, truth, work)
        results += bench_field(f"synthetic 3681x300x300, {args.objects} objects", big, cat_tsv, seg, work,
                               args.threads, args.mpdaf_objects, plot_modes)
    Path(args.output or OUT / "extract_bench.json").write_text(json.dumps(results, indent=1))
    print("\n| field | plots | threads | ifu-extract ms/object (CPU) | mpdaf loop ms/object (CPU) | speed-up (CPU) "
          "| ifu-extract RssAnon MB | mpdaf RssAnon MB | load average |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cpu = "" if r["ours_cpu_ms_per_object"] is None else f" ({r['ours_cpu_ms_per_object']:.1f})"
        cpu_x = "" if r["cpu_speedup"] is None else f" ({r['cpu_speedup']:.0f}x)"
        print(f"| {r['field']} | {'yes' if r['plots'] else 'no'} | {r['threads']} | {r['ours_ms_per_object']:.1f}{cpu} | "
              f"{r['peer_ms_per_object']:.0f} ({r['peer_cpu_ms_per_object']:.0f}) | {r['speedup']:.0f}x{cpu_x} | "
              f"{r['ours_rssanon_mb']:.0f} | {r['peer_rssanon_mb']:.0f} | "
              f"{r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")


if __name__ == "__main__":
    main()

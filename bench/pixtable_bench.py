"""Pixel-table benchmark: ifu-extract side by side with MPDAF's PixTable, in one process.

On a synthetic MUSE pixel table of 10^8 rows (image layout, written once to ``bench/out/``):

* extract: a 2" circle + a 100 A range (both write the new table to disk);
* extract by IFU (one IFU of 24, ~4x10^6 rows written);
* mask column from a source mask image with a TAN WCS (ours also writes the column file);
* origin decode of every row into IFU, slice, ypix, xpix (in memory).

Each operation is an in-process call on a warm page cache (the file is read once first);
interpreter start, imports and table opening are measured separately.  Peak anonymous memory is
RssAnon of /proc/self/status sampled every millisecond (pages of memory-mapped files are the
page cache's, not the program's), reported above the level before the call.  Results are checked
equal between the two tools.  Then ``mask`` and ``extract`` run on a 3x10^8-row table (a full
exposure) without MPDAF, which would need ~30 GB there.

Usage::

    python bench/pixtable_bench.py [--rows 1e8] [--big-rows 3e8] [--repeat 3] [--threads N]
                                   [--no-big] [--keep]

Generated tables are deleted at the end unless ``--keep``.  Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PY = sys.executable


# ----------------------------------------------------------------------------- measuring
class RssAnonPeak:
    """Highest RssAnon (kB) of this process while the context is open, sampled every *dt* s."""

    def __init__(self, dt: float = 0.001):
        self.dt = dt
        self.peak_kb = 0
        self.base_kb = 0
        self._stop = threading.Event()

    @staticmethod
    def now_kb() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.now_kb())
            time.sleep(self.dt)

    def __enter__(self):
        self.base_kb = self.peak_kb = self.now_kb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.now_kb())

    @property
    def delta_mb(self) -> float:
        return (self.peak_kb - self.base_kb) / 1024

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def timed(func, repeat: int):
    """Run *func* *repeat* times; (median wall s, median CPU s, max RssAnon delta MB, peak MB,
    last result)."""
    walls, cpus, deltas, peaks, result = [], [], [], [], None
    for _ in range(repeat):
        result = None
        with RssAnonPeak() as mem:
            c0, w0 = time.process_time(), time.perf_counter()
            result = func()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        deltas.append(mem.delta_mb)
        peaks.append(mem.peak_mb)
    return float(np.median(walls)), float(np.median(cpus)), max(deltas), max(peaks), result


def warm(path: Path) -> float:
    """Read *path* once so that its pages are in the page cache; returns the seconds."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(1 << 24)
        while fh.readinto(buf):
            pass
    return time.perf_counter() - t0


def start_and_import(module_code: str) -> tuple[float, float]:
    """(interpreter start s, import s) in a fresh process."""
    code = ("import time; t = time.perf_counter(); " + module_code
            + "; print(time.perf_counter() - t)")
    t0 = time.perf_counter()
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([PY, "-c", "pass"], check=True)
    bare = time.perf_counter() - t1
    return bare, float(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else total


def loadavg() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- data
RA0, DEC0 = 53.1625, -27.7914
OFFSETS = [(0.0, 0.3), (5.0, 2.0), (-12.0, -3.0), (20.0, 4.0), (-25.0, 7.5), (9.0, -6.0)]


def spec_for(nrows: int):
    from ifu_extract.pixtable.synth import SynthSource, SynthSpec

    cosd = np.cos(np.deg2rad(DEC0))
    sources = tuple(SynthSource(RA0 + dx / 3600 / cosd, DEC0 + dy / 3600, 50.0)
                    for dx, dy in OFFSETS)
    return SynthSpec(nrows=nrows, ra=RA0, dec=DEC0, sources=sources, seed=0)


def ensure_table(nrows: int, threads: int) -> tuple[Path, float | None]:
    from ifu_extract.pixtable.synth import write_pixtable

    path = OUT / f"pixtable_{nrows:.0e}.fits".replace("+", "")
    if path.exists():
        return path, None
    t0 = time.perf_counter()
    write_pixtable(path, spec_for(nrows), threads=threads)
    return path, time.perf_counter() - t0


def ensure_mask() -> Path:
    from ifu_extract.pixtable.synth import mask_image_hdulist

    path = OUT / "pixtable_mask.fits"
    if not path.exists():
        mask_image_hdulist(spec_for(1), radius=1.5, rotation_deg=3.0).writeto(path)
    return path


def _rm(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- runs
def bench_side_by_side(path: Path, mask: Path, repeat: int, threads: int) -> list[dict]:
    from mpdaf.drs import PixTable as MPixTable

    from ifu_extract.pixtable.extract import decode_rows, extract
    from ifu_extract.pixtable.maskcol import write_mask_column
    from ifu_extract.pixtable.reader import PixTable
    from ifu_extract.pixtable.select import Selection
    from ifu_extract.pixtable.sky import SkyRegion

    rows = []
    ours_out, mp_out = OUT / "bench_ours.fits", OUT / "bench_mpdaf.fits"
    w, c, d, p, ours = timed(lambda: PixTable(path, threads=threads), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w2, c2, d2, p2, mp = timed(lambda: MPixTable(str(path)), 3)
    rows.append(dict(op="open table", ours_s=w, ours_cpu=c, ours_mb=d, mpdaf_s=w2, mpdaf_cpu=c2,
                     mpdaf_mb=d2, check="-"))

    dec0 = DEC0 + 0.3 / 3600
    sel_sky = Selection(regions=(SkyRegion(RA0, dec0, 2.0, "C"),), wave=((6000.0, 6100.0),))
    sel_ifu = Selection(ifus=(7,))

    def ours_extract(sel):
        _rm(ours_out)
        return extract(ours, sel, ours_out).nrows

    def mpdaf_extract(**kw):
        _rm(mp_out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mp.extract(filename=str(mp_out), **kw).nrows

    cases = [
        ("extract 2\" circle + 100 A", lambda: ours_extract(sel_sky),
         lambda: mpdaf_extract(sky=(dec0, RA0, 2.0, "C"), lbda=(6000.0, 6100.0)),
         lambda a, b: a == b),
        ("extract one IFU", lambda: ours_extract(sel_ifu), lambda: mpdaf_extract(ifu=7),
         lambda a, b: a == b),
        ("mask column", lambda: (_rm(ours_out), write_mask_column(ours, mask, ours_out))[1],
         lambda: mp.mask_column(str(mask)).maskcol,
         lambda a, b: np.array_equal(_read_maskcol(ours_out), b)),
        ("origin decode", lambda: decode_rows(ours),
         lambda: mp.origin2coords(mp.get_origin()),
         lambda a, b: all(np.array_equal(x, y) for x, y in zip((a.ifu, a.slice, a.ypix, a.xpix),
                                                               b))),
    ]
    for name, ours_f, mp_f, same in cases:
        print(f"  {name} ...", flush=True)
        ow, oc, od, op_, ores = timed(ours_f, repeat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mw, mc, md, mpk, mres = timed(mp_f, max(1, min(repeat, 2)))
        ok = bool(same(ores, mres))
        rows.append(dict(op=name, ours_s=ow, ours_cpu=oc, ours_mb=od, ours_peak_mb=op_,
                         mpdaf_s=mw, mpdaf_cpu=mc, mpdaf_mb=md, mpdaf_peak_mb=mpk,
                         speedup=mw / ow, check="identical" if ok else "DIFFERENT"))
        print(f"    ours {ow:.3f} s ({od:.0f} MB)  mpdaf {mw:.3f} s ({md:.0f} MB)  "
              f"x{mw / ow:.1f}  {'identical' if ok else 'DIFFERENT'}", flush=True)
        del ores, mres
    _rm(ours_out, mp_out)
    ours.close()
    return rows


def _read_maskcol(path):
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        return hdul["MASKCOL"].data[:, 0].astype(bool)


def bench_big(path: Path, mask: Path, repeat: int, threads: int) -> list[dict]:
    from ifu_extract.pixtable.extract import extract
    from ifu_extract.pixtable.maskcol import write_mask_column
    from ifu_extract.pixtable.reader import PixTable
    from ifu_extract.pixtable.select import Selection
    from ifu_extract.pixtable.sky import SkyRegion

    out = OUT / "bench_big_out.fits"
    col = OUT / "bench_big_maskcol.fits"
    pt = PixTable(path, threads=threads)
    dec0 = DEC0 + 0.3 / 3600
    cases = [
        ("mask column", lambda: (_rm(col), write_mask_column(pt, mask, col))[1]["masked"]),
        ("extract 2\" circle + 100 A",
         lambda: (_rm(out), extract(pt, Selection(regions=(SkyRegion(RA0, dec0, 2.0, "C"),),
                                                  wave=((6000.0, 6100.0),)), out))[1].nrows),
        ("extract one IFU", lambda: (_rm(out), extract(pt, Selection(ifus=(7,)), out))[1].nrows),
        ("extract with mask column (sky rows of 2 IFUs)",
         lambda: (_rm(out), extract(pt, Selection(ifus=(7, 8), mask=_maskcol(col, pt)),
                                    out))[1].nrows),
    ]
    rows = []
    for name, f in cases:
        print(f"  {name} ...", flush=True)
        w, c, d, p, res = timed(f, repeat)
        rows.append(dict(op=name, ours_s=w, ours_cpu=c, ours_mb=d, ours_peak_mb=p, rows=res))
        print(f"    {w:.3f} s, RssAnon +{d:.0f} MB (peak {p:.0f} MB), result {res}", flush=True)
    _rm(out, col)
    pt.close()
    return rows


def _maskcol(path, table):
    from ifu_extract.pixtable.maskcol import MaskColumn

    return MaskColumn(path, table)


# ----------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    lines = [f"10^{np.log10(res['rows']):.1f}-row table ({res['size_gb']:.1f} GB, image layout), "
             f"{res['threads']} threads, load average {res['load_before']:.1f} before the run.", "",
             "| operation | ifu-extract s | MPDAF s | speed-up | ifu-extract RssAnon MB | "
             "MPDAF RssAnon MB | results |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["side_by_side"]:
        sp = f"{r['speedup']:.0f}x" if "speedup" in r else "-"
        lines.append(f"| {r['op']} | {r['ours_s']:.3f} | {r['mpdaf_s']:.3f} | {sp} | "
                     f"{r['ours_mb']:.0f} | {r['mpdaf_mb']:.0f} | {r['check']} |")
    if res.get("big"):
        lines += ["", f"3x10^8-row table ({res['big_size_gb']:.1f} GB), ifu-extract only:", "",
                  "| operation | s | RssAnon MB (above start) | RssAnon peak MB (process) |",
                  "|---|---:|---:|---:|"]
        for r in res["big"]:
            lines.append(f"| {r['op']} | {r['ours_s']:.3f} | {r['ours_mb']:.0f} | "
                         f"{r['ours_peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--big-rows", type=float, default=3e8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated tables")
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    from ifu_extract.pixtable.reader import default_threads

    threads = args.threads or default_threads()
    res = {"rows": int(args.rows), "threads": threads, "load_before": loadavg()}
    bare, imp_ours = start_and_import("import ifu_extract.pixtable.extract, "
                                      "ifu_extract.pixtable.maskcol")
    _, imp_mpdaf = start_and_import("import mpdaf.drs")
    res.update(python_start_s=bare, import_ours_s=imp_ours, import_mpdaf_s=imp_mpdaf)
    print(f"python start {bare:.2f} s; imports: ifu_extract.pixtable {imp_ours:.2f} s, "
          f"mpdaf.drs {imp_mpdaf:.2f} s", flush=True)

    path, gen = ensure_table(int(args.rows), threads)
    mask = ensure_mask()
    res.update(table=str(path), size_gb=path.stat().st_size / 1e9, generate_s=gen,
               warm_read_s=warm(path))
    print(f"table {path.name}: {res['size_gb']:.2f} GB (generated in {gen or 0:.0f} s), warm "
          f"read {res['warm_read_s']:.2f} s", flush=True)
    res["side_by_side"] = bench_side_by_side(path, mask, args.repeat, threads)
    if not args.keep:
        _rm(path)
    if not args.no_big:
        big, gen_big = ensure_table(int(args.big_rows), threads)
        res.update(big_table=str(big), big_size_gb=big.stat().st_size / 1e9,
                   big_generate_s=gen_big, big_warm_read_s=warm(big))
        print(f"table {big.name}: {res['big_size_gb']:.2f} GB (generated in {gen_big or 0:.0f} "
              f"s), warm read {res['big_warm_read_s']:.2f} s", flush=True)
        res["big"] = bench_big(big, mask, args.repeat, threads)
        if not args.keep:
            _rm(big)
    res["load_after"] = loadavg()
    (OUT / "pixtable_bench.json").write_text(json.dumps(res, indent=2))
    print()
    print(markdown(res))


if __name__ == "__main__":
    main()

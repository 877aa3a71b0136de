"""Diagnose the injections the default line scan misses (bench/linescan_bench.py's injections).

For every realisation (seed 1000 + r) the default scan is run (threshold from its own negated
pass); for each injection it lost, a scan at a low fixed floor with the line merging switched
off gives the best candidate within 0.8" and 5 Angstrom: its calibrated S/N, the per-channel
spread and the spaxel spread that divided it.  Also: the continuum S/N of the spaxel (median
DATA / sqrt(STAT)), the nearest line of the un-injected minicube within 1.5", and the default
lines within 1" and 12 Angstrom (those that could have swallowed it by merging).

Usage::

    PYTHONPATH=tools .venv/bin/python bench/linescan_misses.py [--realisations 50] [--min-snr 8]

Writes ``bench/out/linescan_misses.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from unittest import mock

import numpy as np

import linescan_bench as lb


def _unmerged(cube_like, fwhm, floor):
    """Every candidate (local maximum) at calibrated S/N >= floor, not merged, with the scan."""
    from ifu_extract import linescan
    from ifu_extract.linescan import ScanConfig, scan_lines

    def singletons(points, radius):
        return [np.array([i]) for i in range(len(points))]

    with mock.patch.object(linescan, "_fof", singletons):
        sc = scan_lines(cube_like, psf=None, config=ScanConfig(snr=floor, max_false=None, fwhm=fwhm))
    return sc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realisations", type=int, default=50)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--per-cube", type=int, default=30)
    ap.add_argument("--fwhm", type=float, default=0.7)
    ap.add_argument("--min-snr", type=float, default=8.0)
    ap.add_argument("--floor", type=float, default=2.5)
    ap.add_argument("--out", default=str(lb.OUT / "linescan_misses.json"))
    args = ap.parse_args(argv)
    from ifu_extract.linescan import DEFAULT_SKY_WINDOWS, ArrayCube, ScanConfig, scan_lines

    cube, data, var = lb.load_minicube()
    wave = cube.wave
    with np.errstate(invalid="ignore", divide="ignore"):
        white = np.nanmedian(data / np.sqrt(var), axis=0)
    real = scan_lines(ArrayCube(data, var, cube), psf=None,
                      config=ScanConfig(snr=5.0, max_false=None, fwhm=args.fwhm)).lines
    rl = np.column_stack([real["X"], real["Y"], real["LINE_WAVE"], real["SNR"]])
    rows = []
    for r in range(args.first, args.first + args.realisations):
        truth, model = lb.injections(cube, var, 1000 + r, args.per_cube, args.fwhm, DEFAULT_SKY_WINDOWS)
        d = data + model
        sc = scan_lines(ArrayCube(d, var, cube), psf=None, config=ScanConfig(fwhm=args.fwhm))
        t = sc.lines
        f = np.column_stack([t["X"], t["Y"], t["LINE_WAVE"], t["SNR"]]) if len(t) else np.zeros((0, 4))
        rec = lb.recovered(truth, f, cube.pixscale, -np.inf)
        miss = np.flatnonzero(~rec & (truth[:, 4] >= args.min_snr))
        if not miss.size:
            print(f"r {r}: no miss", file=sys.stderr, flush=True)
            continue
        un = _unmerged(ArrayCube(d, var, cube), args.fwhm, args.floor)
        u = un.lines
        uf = np.column_stack([u["X"], u["Y"], u["LINE_WAVE"], u["SNR"]])
        for i in miss:
            x, y, lam, lf, snr, flux = truth[i]
            zi = int(np.argmin(np.abs(wave - lam)))
            xi, yi = int(round(x)), int(round(y))
            dpos = np.hypot(uf[:, 0] - x, uf[:, 1] - y) * cube.pixscale
            near = np.flatnonzero((dpos <= lb.MATCH_ARCSEC) & (np.abs(uf[:, 2] - lam) <= lb.MATCH_ANGSTROM))
            best = near[np.argmax(uf[near, 3])] if near.size else None
            row = {"seed": 1000 + r, "x": x, "y": y, "wave": lam, "line_fwhm": lf, "snr_stat": snr,
                   "threshold": float(sc.threshold), "white_snr": float(white[yi, xi]),
                   "chan_spread": float(sc.spread[zi]), "found": best is not None}
            # Block of this channel (the scan's spaxel-spread blocks).
            span = abs(float(wave[-1] - wave[0]))
            nblock = max(1, int(np.floor(span / sc.config.spread_block + 0.5)))
            blk = min(int(abs(wave[zi] - wave[0]) / sc.config.spread_block), nblock - 1)
            row["spax_spread"] = float(sc.spaxel_spread[blk, yi, xi])
            if best is not None:
                bz = int(np.argmin(np.abs(wave - uf[best, 2])))
                row.update(cand_snr=float(uf[best, 3]), cand_x=float(uf[best, 0]), cand_y=float(uf[best, 1]),
                           cand_wave=float(uf[best, 2]), cand_chan_spread=float(un.spread[bz]),
                           cand_point=float(u["POINT"][best]))
            # A default line that could have swallowed it (within the merge distances).
            if len(f):
                dm = np.hypot(f[:, 0] - x, f[:, 1] - y) * cube.pixscale
                sw = np.flatnonzero((dm <= sc.config.merge_radius + 0.4)
                                    & (np.abs(f[:, 2] - lam) <= 2 * sc.config.line_fwhm + 4))
                row["swallowed_by"] = [list(map(float, f[k])) for k in sw]
            # Nearest real line of the minicube (in wavelength, within 1.5")
            dr = np.hypot(rl[:, 0] - x, rl[:, 1] - y) * cube.pixscale
            rr = np.flatnonzero(dr <= 1.5)
            if rr.size:
                k = rr[np.argmin(np.abs(rl[rr, 2] - lam))]
                row["real_near"] = [float(dr[k]), float(rl[k, 2] - lam), float(rl[k, 3])]
            rows.append(row)
        print(f"r {r}: {miss.size} misses", file=sys.stderr, flush=True)
    with open(args.out, "w") as fh:
        json.dump(rows, fh, indent=1)
    print("| seed | x | y | wave | STAT S/N | thr | cand S/N | chan spread | spax spread | white S/N | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for w in sorted(rows, key=lambda w: -w["snr_stat"]):
        note = []
        if w.get("swallowed_by"):
            note.append("near default line " + ";".join(f"({a:.1f},{b:.1f},{c:.1f},{s:.1f})"
                                                         for a, b, c, s in w["swallowed_by"]))
        if w.get("real_near") and abs(w["real_near"][1]) < 30:
            note.append("real line d=%.2f\" dλ=%.1f S/N %.1f" % tuple(w["real_near"]))
        cs = f"{w['cand_snr']:.2f}" if w["found"] else "-"
        print(f"| {w['seed']} | {w['x']:.1f} | {w['y']:.1f} | {w['wave']:.1f} | {w['snr_stat']:.1f} | "
              f"{w['threshold']:.2f} | {cs} | {w['chan_spread']:.2f} | {w['spax_spread']:.2f} | "
              f"{w['white_snr']:.2f} | {'; '.join(note)} |")


if __name__ == "__main__":
    main()

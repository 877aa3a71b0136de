"""ORIGIN on one cube, run by ``linescan_bench.py --origin`` in ORIGIN's own venv (``muse_origin``).

Usage (not meant to be run by hand)::

    ~/.cache/ifu-extract/origin-venv/bin/python bench/linescan_origin_worker.py CUBE.fits PSF.fits FWHM_PIX OUT.json \
        [--purity 0.5 0.8 ...] [--pairs T_GLR:STD ...]

Runs ORIGIN's standard steps (``step01_preprocessing`` ... ``step06_compute_purity_threshold``)
once with their default parameters (step06's ``bins``, its histogram binning, "fd", falls back
to 50, 100, 200 bins when "fd" leaves too few bins below the mode for its Gaussian fit), then
``step07_detection`` once per threshold pair: the pairs
ORIGIN derives from its own purity estimate for each ``--purity`` (``Compute_threshold_purity``
on this cube, as ``step06`` does), and the fixed pairs ``--pairs`` (threshold on T_GLR,
threshold on the STD cube).  Writes, per pair, the lines (x, y 0-based pixels, wavelength, the
statistic: T_GLR, or STD for lines found on the STD cube only) and the CPU times, as JSON.

Compatibility with the current stack (numpy 2.4, photutils 1.13): the NumPy aliases muse_origin
3.2 uses (``np.int`` ...) are set back to the builtins they were; photutils must be < 2 (1.13:
``from photutils import detect_sources, deblend_sources`` still works; ``make_source_mask``,
used only by ``compute_deblended_segmap``, outside these steps, does not); ``deblend_sources``
is given the segmentation array wrapped in a ``SegmentationImage`` (older photutils took the array).
``step08_compute_spectra`` fails with numpy 2 (``float()`` of a 1-element array in
``GridAnalysis``: "only 0-dimensional arrays can be converted to Python scalars"), so the lines
are step07's catalogue ``Cat1`` (after ORIGIN's spatio-spectral merging), not step09's
``Cat3_lines`` (which also merges lines of one source closer than 5 channels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cube")
    ap.add_argument("psf")
    ap.add_argument("fwhm_pix", type=float)
    ap.add_argument("out")
    ap.add_argument("--purity", type=float, nargs="*", default=[])
    ap.add_argument("--pairs", nargs="*", default=[])
    args = ap.parse_args()

    # muse_origin 3.2 still uses the aliases NumPy 1.24 removed (np.int ...): the builtins they were.
    for alias, typ in (("int", int), ("float", float), ("complex", complex), ("object", object), ("str", str)):
        if alias not in np.__dict__:
            setattr(np, alias, typ)
    # ... and calls photutils.deblend_sources with a plain array (photutils 1.13 wants a
    # SegmentationImage): the array wrapped, as older photutils did itself.
    import types

    import photutils
    from photutils.segmentation import SegmentationImage
    from photutils.segmentation import deblend_sources as _deblend

    def deblend_sources(data, segm, **kwargs):
        labels = np.asarray(getattr(segm, "data", segm)).astype(int)
        if not labels.any():
            return types.SimpleNamespace(data=labels)
        return _deblend(data, SegmentationImage(labels), progress_bar=False, **kwargs)

    photutils.deblend_sources = deblend_sources
    import muse_origin
    from muse_origin import ORIGIN
    from muse_origin.lib_origin import Compute_threshold_purity

    t0 = time.process_time()
    workdir = os.path.dirname(os.path.abspath(args.out))
    from astropy.io import fits

    nz = fits.getheader(args.cube, "DATA")["NAXIS3"]
    orig = ORIGIN.init(args.cube, name="bench", path=workdir, loglevel="WARNING", PSF=args.psf,
                       FWHM_PSF=np.array([args.fwhm_pix]), LBDA_FWHM_PSF=np.full(nz, args.fwhm_pix))
    steps = sorted({m for m in dir(orig) if m.startswith("step") and m[4:6].isdigit()})
    cpu = {}
    bins6 = "fd"
    for name in steps[:6]:
        t = time.process_time()
        if name.startswith("step06"):
            # The segmentation of the T_GLR max map fits a Gaussian to the histogram's bins below
            # its mode; on a 40 x 40 map numpy's "fd" bins can leave fewer than 3 of them
            # (scipy: "func input vector length N=3 must not exceed func output vector length").
            for bins6 in ("fd", 50, 100, 200):
                try:
                    getattr(orig, name)(bins=bins6)
                    break
                except (TypeError, ValueError):
                    continue
            else:
                raise RuntimeError("step06: no histogram binning gave a Gaussian fit")
        else:
            getattr(orig, name)()
        cpu[name] = time.process_time() - t
        print(f"{name}: {cpu[name]:.1f} s CPU", file=sys.stderr, flush=True)
    pairs = {}
    for p in args.purity:
        t1, _ = Compute_threshold_purity(p, orig.cube_local_max._data, orig.cube_local_min._data,
                                         segmap=orig.segmap_purity._data)
        t2, _ = Compute_threshold_purity(p, orig.cube_std_local_max._data, orig.cube_std_local_min._data)
        pairs[f"purity {p:g}"] = (float(t1), float(t2))
    for s in args.pairs:
        a, b = (float(v) for v in s.split(":"))
        pairs[s] = (a, b)
    out = {"version": muse_origin.__version__, "steps": steps, "cpu_steps_1_6": cpu,
           "step06_bins": bins6, "threshold": float(orig.param["threshold"]),
           "threshold_std": float(orig.param["threshold_std"]),
           "pairs": pairs, "lines": {}, "cpu_detection": {}}
    for key, (t1, t2) in pairs.items():
        t = time.process_time()
        orig.step07_detection(threshold=t1, threshold_std=t2)
        cat = orig.Cat1
        xs, ys = "x0", "y0"
        stat = np.where(np.asarray(cat["comp"]) == 1, np.asarray(cat["STD"], float),
                        np.asarray(cat["T_GLR"], float))
        out["lines"][key] = np.column_stack([np.asarray(cat[xs], float), np.asarray(cat[ys], float),
                                             np.asarray(cat["lbda"], float), stat]).tolist() if len(cat) else []
        out["cpu_detection"][key] = time.process_time() - t
    out["cpu_total"] = time.process_time() - t0
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

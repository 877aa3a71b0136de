"""Benchmark: splitting segments shared by several catalogue objects (``mask --split``).

Synthetic crowded fields with known truth, white light only (the masks are made on it):

* ``core``: a cluster-core group: a bright Sérsic galaxy (n = 4, r_e = 1″) and five companions
  0.8–2.8″ from it, 3 to 30 times fainter, half point-like, half small exponential discs
  (r_e 0.3–0.6″);
* ``deep``: a deep-field clump: six galaxies of comparable brightness (ratios up to 5,
  r_e 0.2–0.6″, n = 1–2.5), 0.8–2″ apart.

MUSE grid (0.2″ spaxels, 60 × 60), Moffat PSF (FWHM 0.7″, β 2.8), Gaussian noise (σ = peak /
300 for ``core``, peak / 100 for ``deep``).  Chain: SEP detection on the noisy white light
(``detect_sources``, defaults), then ``build_masks`` with the catalogue = the true positions,
for each method:

``none``      every claimant takes the whole shared segment (``--no-split``);
``voronoi``   the segment cut into Voronoi cells (``--voronoi``);
``watershed`` Meyer's watershed on the white light seeded by the catalogue, no cores
              (``split_label`` with a core radius of 0);
``split``     the default: PSF cores (radius FWHM), then the watershed;
``split-0.5``, ``split-1.5``  the same with cores of 0.5 and 1.5 FWHM (``split_label``).

Scored on the objects that SEP left in a shared segment (the only ones the methods treat
differently): ``own`` = share of the object's true light inside its footprint; ``contam`` =
the other objects' true light inside the footprint over the object's own light there.

Usage::

    .venv/bin/python bench/segmentation_bench.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.signal import fftconvolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from ifu_extract import synth  # noqa: E402
from ifu_extract.cubeio import open_cube  # noqa: E402
from ifu_extract.detect import DetectionWarning, detect_sources  # noqa: E402
from ifu_extract.image import Image  # noqa: E402
from ifu_extract.masks import build_masks, reframe  # noqa: E402
from ifu_extract.segmap import split_label  # noqa: E402
from ifu_extract.wcsutil import pixel_to_world  # noqa: E402

N = 60
PIX = 0.2
FWHM = 0.7
BETA = 2.8


def _profile(shape, x, y, re_pix, n, psf):
    if re_pix <= 0:
        return synth.moffat_image(shape, x, y, FWHM / PIX, BETA)
    return fftconvolve(synth.sersic_image(shape, x, y, re_pix, n=n), psf, mode="same")


def make_field(kind: str, seed: int):
    """(positions (k, 2), true images (k, N, N), noisy white light, sigma)."""
    rng = np.random.default_rng(seed)
    psf = synth.moffat_image((31, 31), 15, 15, FWHM / PIX, BETA)
    srcs = []
    if kind == "core":
        srcs.append((30 + rng.uniform(-1, 1), 30 + rng.uniform(-1, 1), 1.0, 5.0, 4.0))
        for _ in range(5):
            while True:
                r, t = rng.uniform(4, 14), rng.uniform(0, 2 * np.pi)
                x, y = 30 + r * np.cos(t), 30 + r * np.sin(t)
                if all(np.hypot(x - s[0], y - s[1]) > 4 for s in srcs):
                    break
            re_pix = 0.0 if rng.uniform() < 0.5 else rng.uniform(1.5, 3.0)
            srcs.append((x, y, 10 ** rng.uniform(np.log10(1 / 30), np.log10(1 / 3)), re_pix, 1.0))
    else:
        while len(srcs) < 6:
            x, y = rng.uniform(20, 40, 2)
            d = [np.hypot(x - s[0], y - s[1]) for s in srcs]
            if srcs and (min(d) < 4 or min(d) > 10):
                continue
            srcs.append((x, y, 10 ** rng.uniform(-0.7, 0), rng.uniform(1.0, 3.0), rng.uniform(1, 2.5)))
    truth = np.array([f * _profile((N, N), x, y, re, n, psf) for x, y, f, re, n in srcs])
    sigma = truth.sum(axis=0).max() / (300 if kind == "core" else 100)
    white = truth.sum(axis=0) + rng.normal(0, sigma, (N, N))
    return np.array([(s[0], s[1]) for s in srcs]), truth, white, sigma


def footprints(method, cube, wcs, pos, white, seg):
    """Per object, its full-frame footprint (bool (N, N))."""
    ra, dec = pixel_to_world(wcs, pos[:, 0], pos[:, 1])
    cat = Table({"ID": [str(i) for i in range(len(pos))], "RA": ra, "DEC": dec,
                 "STATUS": ["ok"] * len(pos)})
    kw = {"none": {"split": False}, "voronoi": {"voronoi": True}, "split": {}}
    cores = {"watershed": 0.0, "split-0.5": 0.5, "split-1.5": 1.5}
    if method in cores:
        labels = seg[np.floor(pos[:, 1] + 0.5).astype(int), np.floor(pos[:, 0] + 0.5).astype(int)]
        out = [seg == lab if lab else np.zeros_like(seg, bool) for lab in labels]
        for lab in set(labels.tolist()) - {0}:
            members = np.flatnonzero(labels == lab)
            if len(members) > 1:
                part = split_label(seg == lab, white, pos[members], cores[method] * FWHM / PIX)
                for m, i in enumerate(members):
                    out[i] = part == m + 1
        return out
    res = build_masks(cube, cat, [seg], white=white, size=12.0, fwhm=FWHM, warn=False, **kw[method])
    out = []
    for k, row in enumerate(res.objects):
        box = (int(row["X0"]), int(row["X0"] + row["NX"]), int(row["Y0"]), int(row["Y0"] + row["NY"]))
        out.append(reframe(res.stamps[k][0].astype(bool), box, (0, N, 0, N)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args(argv)
    methods = ("none", "voronoi", "watershed", "split-0.5", "split", "split-1.5")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.fits"
        data, var, dq, hdr, _ = synth.make_cube([], shape=(4, N, N), sigma=1.0, seed=0)
        synth.cube_hdulist(data, var, dq, hdr).writeto(path)
        with open_cube(path) as cube:
            wcs = cube.wcs
            for kind in ("core", "deep"):
                for seed in range(args.seeds):
                    pos, truth, white, sigma = make_field(kind, seed)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DetectionWarning)
                        img = Image(white.astype(np.float32), np.full((N, N), sigma**2, np.float32), None)
                        seg = detect_sources(img).segmap
                    labels = seg[np.floor(pos[:, 1] + 0.5).astype(int), np.floor(pos[:, 0] + 0.5).astype(int)]
                    shared = [i for i, lab in enumerate(labels) if lab and (labels == lab).sum() > 1]
                    total = truth.sum(axis=0)
                    for method in methods:
                        fps = footprints(method, cube, wcs, pos, white, seg)
                        for i in shared:
                            f = fps[i]
                            own_in = truth[i][f].sum()
                            rows.append((kind, method, seed, i, own_in / truth[i].sum(),
                                         (total[f].sum() - own_in) / max(own_in, 1e-30)))
    tab = Table(rows=rows, names=("kind", "method", "seed", "obj", "own", "contam"))
    print("| field | objects | method | own median | own worst | contam median | contam p90 |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("core", "deep"):
        for group, sel in (("companions", lambda t: t["obj"] > 0), ("host", lambda t: t["obj"] == 0)) \
                if kind == "core" else (("all", lambda t: t["obj"] >= 0),):
            for method in methods:
                t = tab[(tab["kind"] == kind) & (tab["method"] == method)]
                t = t[sel(t)]
                if not len(t):
                    continue
                print(f"| {kind} | {group} ({len(t)}) | {method} | {np.median(t['own']):.2f} | "
                      f"{np.min(t['own']):.2f} | {np.median(t['contam']):.2f} | "
                      f"{np.percentile(t['contam'], 90):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

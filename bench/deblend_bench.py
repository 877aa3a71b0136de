"""Deblending benchmark (issue 15): contamination of a faint neighbour's DEBLEND spectrum.

Blind-style scenes (``tests/blend_scenes.py``): a faint emission-line galaxy 0.7-0.9″ from a
galaxy 15-25 times brighter (Sérsic n = 4, r_e 0.5″, or in the harder case a red n = 4 core in
a blue exponential envelope), Moffat PSF with β 2.3-2.8 and FWHM 0.85-0.95″ → 0.60-0.70″,
exact MUSE FSF keywords; with and without an HST-like image.  Each configuration × seed is
scored with the issue's metric (``S = a·T_self + b·T_neighbour + c``; contamination
``b·ΣT_neighbour / (a·ΣT_self)``), for

* ``before``: the deblending of the previous release (``DeblendConfig(solver="image")``: the
  members' models fitted on the white light alone, or on the image with ``--image``);
* ``after``: the default now (joint fit of spectra and per-band morphology on the cube);
* ``oracle``: the fluxes fitted with the true spatial models (the noise's own share).

Segments come from SEP on the white light, as in ``run --deblend``.

Usage::

    python bench/deblend_bench.py [--seeds 5] [--nwave 1841] [--peak-snr 10] [--scenes a,b]
                                  [--methods before,after] [--image [--image-offset DX,DY]]
                                  [--output FILE]

``--image-offset``: the image's CRVAL moved by that many arcsec (a wrong astrometry); the
``after-reg`` method fits and removes it first (``register_image``, the step's default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import blend_scenes  # noqa: E402

from ifu_extract.catalog import read_catalog  # noqa: E402
from ifu_extract.cubeio import open_cube  # noqa: E402
from ifu_extract.deblend import DeblendConfig, deblend_catalog, resolve_psf  # noqa: E402
from ifu_extract.deblend.register import register_image, shift_image_wcs  # noqa: E402
from ifu_extract.detect import detect_sources  # noqa: E402
from ifu_extract.image import band_image, read_image  # noqa: E402
from ifu_extract.wcsutil import world_to_pixel  # noqa: E402
from ifu_extract.weights import model_images  # noqa: E402

METHODS = {
    "before": dict(solver="image", fit_centres=False),
    "after": dict(),
    # With --image: the joint multi-Gaussian fit of the previous session (no image templates),
    # and the image templates made on the cube's grid instead of the image's finer one.
    "joint": dict(image_templates=False),
    "after-coarse": dict(_coarse=True),
    # With --image: the image's offset to the cube fitted and removed first (register_image).
    "after-reg": dict(_register=True),
}


def run_method(built, method: str, *, use_image: bool) -> tuple:
    """(faint contamination, faint a, bright contamination, seconds, registration or None) of one
    method on one cube."""
    with open_cube(built.cube) as c, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = detect_sources(band_image(c)).segmap
        table = read_catalog(built.catalog)
        opts = dict(METHODS[method])
        coarse = opts.pop("_coarse", False)
        register = opts.pop("_register", False)
        image = fine = reg = None
        psf = resolve_psf(c)
        t0 = time.perf_counter()
        if use_image:
            img = read_image(built.image)
            if register:
                reg = register_image(img, c, psf, white=band_image(c), image_fwhm=blend_scenes.HST_FWHM,
                                     positions=world_to_pixel(c.wcs, table["RA"], table["DEC"]))
                if reg.applied:
                    img = shift_image_wcs(img, reg.dx, reg.dy)
            image, fine = model_images(img, c, fine=not coarse)
        cfg = DeblendConfig(**opts, image_fwhm=blend_scenes.HST_FWHM if use_image else 0.0)
        res = deblend_catalog(c, table, psf, image=image, image_is_cube=image is None,
                              image_fine=fine, segmap=seg, config=cfg)
        dt = time.perf_counter() - t0
    fb, ff = res.sources[0].spectrum.flux, res.sources[1].spectrum.flux
    a_f, _, c_f = blend_scenes.score(ff, built.t_faint, built.t_bright)
    _, _, c_b = blend_scenes.score(fb, built.t_bright, built.t_faint)
    return c_f, a_f, c_b, dt, reg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--nwave", type=int, default=1841)
    ap.add_argument("--peak-snr", type=float, default=10.0)
    ap.add_argument("--scenes", default="")
    ap.add_argument("--methods", default="before,after")
    ap.add_argument("--image", action="store_true", help="give the HST-like image (--image)")
    ap.add_argument("--image-offset", default="0,0", metavar="DX,DY",
                    help="error of the image's astrometry, arcsec (RA*cos(Dec), Dec)")
    ap.add_argument("--output", default=None, help="JSON file of all rows")
    args = ap.parse_args(argv)
    scenes = [s for s in blend_scenes.SCENES if not args.scenes or s.name in args.scenes.split(",")]
    methods = args.methods.split(",")
    offset = tuple(float(v) for v in args.image_offset.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            for seed in range(args.seeds):
                built = blend_scenes.build(scene, seed, Path(tmp) / f"{scene.name}-{seed}", nwave=args.nwave,
                                           peak_snr=args.peak_snr, image=args.image, oracle=True,
                                           image_offset=offset)
                _, _, c_o = blend_scenes.score(built.oracle[1], built.t_faint, built.t_bright)
                row = {"scene": scene.name, "seed": seed, "oracle": c_o}
                for m in methods:
                    c_f, a_f, c_b, dt, reg = run_method(built, m, use_image=args.image)
                    row.update({m: c_f, f"{m}_a": a_f, f"{m}_bright": c_b, f"{m}_s": dt})
                    if reg is not None:
                        row.update({"fit_dx": reg.dx, "fit_dy": reg.dy, "applied": reg.applied})
                rows.append(row)
                print(f"{scene.name:14s} seed {seed}  oracle {c_o:+.3f}  " +
                      "  ".join(f"{m} {row[m]:+.3f} (a {row[m + '_a']:.2f}, {row[m + '_s']:.1f} s)"
                                for m in methods) +
                      (f'  fitted ({row["fit_dx"]:+.3f}, {row["fit_dy"]:+.3f})" '
                       f'{"applied" if row["applied"] else "not applied"}' if "fit_dx" in row else ""), flush=True)
    print("\nworst case per configuration (max |contamination| over seeds)")
    print(f"{'scene':14s} {'oracle':>8s} " + " ".join(f"{m:>8s}" for m in methods))
    for scene in scenes:
        rs = [r for r in rows if r["scene"] == scene.name]
        print(f"{scene.name:14s} {max(abs(r['oracle']) for r in rs):8.3f} " +
              " ".join(f"{max(abs(r[m]) for r in rs):8.3f}" for m in methods))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

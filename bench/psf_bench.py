"""PSF fitted on the cube's own stars (issue 15 item 1) against the truth and against MPDAF.

For each noise seed, a synthetic MUSE-like cube (240 channels 4750-9250 A, 40 x 40 spaxels of
0.2", σ = 1 per voxel, Moffat β = 2.5, FWHM 0.90" -> 0.60" linear in λ, no FSF keywords) with two
stars (250 and 60 per channel) and two galaxies (an n = 1 disk and a compact n = 4 bulge):

- ``ours``: :func:`ifu_extract.psffit.fit_psf_from_stars` on the detections (no catalogue);
  maximum |FWHM/true - 1| over the band, β, reported 1σ FWHM error at mid band.
- ``mpdaf``: ``MoffatModel2.from_starfit`` on the bright star (20 slices, FWHM degree 2, β
  degree 0, as ours), with its default ``factor=1`` (Moffat sampled at pixel centres) and with
  ``factor=5`` (integrated over 5 x 5 subpixels, as ours): the same two numbers, and the largest
  |ours/mpdaf - 1|.
- ``capture``: MUSE_PSF flux of the bright star over its true flux, from ``extract`` with the
  fitted PSF (no --fwhm, masks of 1.2" disks).

Usage: ``python bench/psf_bench.py [--seeds N]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from mpdaf.MUSE import MoffatModel2
    from mpdaf.obj import Cube

    from ifu_extract.cubeio import open_cube
    from ifu_extract.psffit import fit_psf_from_stars
    from ifu_extract.sourcefile import read_source_spectrum
    from test_psffit import TRUE_BETA, _catalog, _cube, _field_sources, _segmap

    from ifu_extract.cli import main as cli

    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| seed | ours max FWHM err | ours beta | ours 1σ mid | mpdaf f=1 max FWHM err | mpdaf f=1 beta "
          "| ours vs mpdaf f=1 | mpdaf f=5 max FWHM err | mpdaf f=5 beta | ours vs mpdaf f=5 "
          "| MUSE_PSF / true flux | fit CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in range(1, args.seeds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            path, truth = _cube(tmp / "f.fits", _field_sources(240), seed=seed)
            lam = truth.wave
            t0 = time.process_time()
            with open_cube(path) as c:
                fit = fit_psf_from_stars(c)
            cpu = time.process_time() - t0
            ours = float(np.max(np.abs(fit.model.fwhm(lam) / truth.fwhm_arcsec - 1)))
            star = truth.sources[0]
            cols = []
            for factor in (1, 5):
                mp = MoffatModel2.from_starfit(Cube(str(path)), (truth.dec[star.id], truth.ra[star.id]),
                                               size=5, nslice=20, fwhmdeg=2, betadeg=0, factor=factor)
                theirs = float(np.max(np.abs(mp.get_fwhm(lam) / truth.fwhm_arcsec - 1)))
                vs = float(np.max(np.abs(fit.model.fwhm(lam) / mp.get_fwhm(lam) - 1)))
                cols.append(f"{theirs:.2%} | {float(np.atleast_1d(mp.get_beta(np.array([6000.0])))[0]):.2f} "
                            f"| {vs:.2%}")
            cat = _catalog(tmp / "cat.txt", truth)
            seg = _segmap(tmp, path, truth)
            try:
                cli(["--quiet", "mask", str(path), str(cat), "--segmap", str(seg), "-o", str(tmp / "m.fits")])
            except SystemExit:
                pass
            try:
                cli(["--quiet", "extract", str(path), str(cat), "--masks", str(tmp / "m.fits"), "-o", str(tmp / "o")])
            except SystemExit:
                pass
            _, flux, *_ = read_source_spectrum(tmp / "o" / "sources" / f"{star.id}.fits", "MUSE_PSF")
            cap = float(np.nansum(flux) / np.sum(star.spectrum))
            print(f"| {seed} | {ours:.2%} | {float(fit.model.beta(6000.0)):.2f} (true {TRUE_BETA}) | "
                  f"{float(fit.fwhm_err([lam[len(lam) // 2]])[0]):.3f}\" | {' | '.join(cols)} | {cap:.4f} | "
                  f"{cpu:.1f} |")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

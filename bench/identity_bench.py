"""Benchmark: cost of the product identity (``identity.cube_identity`` / ``check_product``).

Every product made from a cube (masks, continuum-subtracted cube) records the cube's shape,
sky grid and a data fingerprint (SHA-1 of 9 evenly spaced planes); every consumer recomputes the
fingerprint of the cube it is given.  This measures both on mpdaf's minicube (3681 x 40 x 40) and
on a MUSE-sized synthetic cube (3681 x 300 x 300, DATA + STAT float32, 2.65 GB, written to
``bench/out/`` and deleted after), warm (file in the page cache) and cold (pages dropped with
``posix_fadvise(DONTNEED)`` before each call), median of 5 calls, wall and CPU milliseconds.

Usage::

    .venv/bin/python bench/identity_bench.py [--keep]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import mpdaf
import numpy as np
from astropy.io import fits

from ifu_extract.cubeio import open_cube
from ifu_extract.identity import check_product, cube_identity

OUT = Path(__file__).resolve().parent / "out"


def make_big(path: Path, shape=(3681, 300, 300)) -> None:
    """Stream a DATA + STAT cube to *path*, one plane at a time."""
    nw, ny, nx = shape
    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                       "CRPIX1": nx / 2, "CRPIX2": ny / 2, "CD1_1": -0.2 / 3600, "CD2_2": 0.2 / 3600,
                       "CUNIT1": "deg", "CUNIT2": "deg", "CTYPE3": "AWAV", "CUNIT3": "Angstrom",
                       "CRVAL3": 4750.0, "CRPIX3": 1.0, "CD3_3": 1.25})
    plane = np.random.default_rng(1).normal(size=(ny, nx)).astype(">f4")
    with open(path, "wb") as fh:
        fh.write(fits.PrimaryHDU().header.tostring().encode())
        for name, value in (("DATA", plane), ("STAT", np.ones((ny, nx), ">f4"))):
            h = fits.ImageHDU(header=hdr.copy(), name=name).header
            h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"], h["NAXIS3"] = -32, 3, nx, ny, nw
            fh.write(h.tostring().encode())
            for z in range(nw):
                fh.write((value + np.float32(z * 1e-3)).astype(">f4").tobytes())
            fh.write(b"\0" * ((-nw * ny * nx * 4) % 2880))


def _drop(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def measure(path, cold: bool) -> tuple[float, float, float]:
    """Wall and CPU ms of cube_identity, and wall ms of check_product (which fingerprints again)."""
    with open_cube(path) as cube:
        if cold:
            _drop(path)
        t0, c0 = time.perf_counter(), time.process_time()
        ident = cube_identity(cube)
        t1, c1 = time.perf_counter(), time.process_time()
        if cold:
            _drop(path)
        t2 = time.perf_counter()
        check_product({k: v for k, (v, _) in ident.items()}, "masks.fits", cube, path)
        t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (c1 - c0) * 1e3, (t3 - t2) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep bench/out/identity_big.fits")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    big = OUT / "identity_big.fits"
    if not big.exists():
        make_big(big)
    mini = Path(mpdaf.__file__).parent / "data" / "sdetect" / "minicube.fits"
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| cube | size | cache | identity, ms (CPU) | check, ms |\n|---|---|---|---|---|")
    try:
        for name, path in (("minicube 3681x40x40", mini), ("synthetic 3681x300x300", big)):
            for cold in (False, True):
                wall, cpu, check = np.median([measure(path, cold) for _ in range(5)], axis=0)
                print(f"| {name} | {path.stat().st_size / 1e9:.2f} GB | {'cold' if cold else 'warm'} "
                      f"| {wall:.1f} ({cpu:.1f}) | {check:.1f} |")
    finally:
        if not args.keep:
            big.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Make the ``gx_*`` test files of the Galaxy wrapper tests (deterministic; rerun to regenerate).

``gx_minicube.fits``   a cut-down *real* MUSE cube: mpdaf's Abell 478 minicube, 160 channels
                       (7031-7230 Angstrom: H-alpha and [NII] of the cluster galaxies at z = 0.086)
                       x 20 x 20 spaxels around its brightest galaxy, DATA/STAT/DQ, full WCS
``gx_catalog.txt``     mpdaf's MUSELET catalogue (cat.txt) cut to the objects inside that field
``gx_white.fits``      its white-light image (``ifu-extract image``): DATA/STAT, celestial WCS
``gx_white.tiff``      the same DATA as a single-channel float32 TIFF (no WCS)
``gx_detections.tsv``  ``ifu-extract detect gx_white.fits`` catalogue, and
``gx_segmap.fits``     its segmentation map
``gx_masks.fits``      ``ifu-extract mask`` of gx_catalog.txt with gx_segmap.fits
``gx_kernel.txt``      a 3 x 3 detection filter for ``detect --filter-file``
``gx_source_1.fits``,  ``ifu-extract extract`` of gx_catalog.txt (PSF FWHM 0.75"): MPDAF Source
``gx_source_3.fits``   files of the two galaxies, and
``gx_summary.tsv``     its summary
``gx_part01_summary.tsv``, ``gx_part02_summary.tsv``  summaries of the same extraction run on the
                       two halves of the catalogue (``ifu-extract split -n 2``), for ``merge``
``gx_no_radec.tsv``    a catalogue without RA/DEC columns (for the expected-failure tests)

The derived files are made with the package's own command line, so they are what a Galaxy user
gets from the upstream tool.  Usage: ``python test-data/make_galaxy_data.py`` with the package
installed (writes next to this script).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

HERE = Path(__file__).resolve().parent
X0, X1, Y0, Y1 = 12, 32, 5, 25  # spaxel window (0-based, end excluded) of the 40 x 40 minicube
WAVE_START, NCHAN = 7030.0, 160  # first channel at or after this wavelength (Angstrom), count
PRIMARY_KEYS = ("ORIGIN", "TELESCOP", "INSTRUME", "RA", "DEC", "EQUINOX", "RADECSYS", "EXPTIME",
                "MJD-OBS", "DATE-OBS", "BUNIT", "OBJECT")


def minicube_paths() -> tuple[Path, Path]:
    import mpdaf

    base = Path(mpdaf.__file__).parent / "data" / "sdetect"
    return base / "minicube.fits", base / "cat.txt"


def cli(*args: str) -> None:
    """Run ``ifu-extract ARGS`` with this interpreter, in this folder, reproducibly."""
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", MPLBACKEND="Agg")
    subprocess.run([sys.executable, "-m", "ifu_extract.cli", "-q", *args], cwd=HERE, env=env,
                   check=True)


def make_cube(src: Path, dest: Path) -> WCS:
    with fits.open(src, memmap=True) as hdul:
        hdr = hdul["DATA"].header
        wave = hdr["CRVAL3"] + hdr["CD3_3"] * (np.arange(hdr["NAXIS3"]) + 1 - hdr["CRPIX3"])
        z0 = int(np.searchsorted(wave, WAVE_START))
        primary = fits.PrimaryHDU()
        for key in PRIMARY_KEYS:
            if key in hdul[0].header:
                primary.header[key] = (hdul[0].header[key], hdul[0].header.comments[key])
        primary.header["HISTORY"] = (f"cut from mpdaf minicube.fits: channels {z0}-{z0 + NCHAN - 1}, "
                                     f"x {X0}-{X1 - 1}, y {Y0}-{Y1 - 1} (0-based)")
        out = [primary]
        for name in ("DATA", "STAT", "DQ"):
            ext = hdul[name]
            data = np.ascontiguousarray(ext.section[z0:z0 + NCHAN, Y0:Y1, X0:X1])
            h = ext.header.copy()
            if "CRPIX1" in h:  # shift the WCS with the window
                h["CRPIX1"] -= X0
                h["CRPIX2"] -= Y0
                h["CRPIX3"] -= z0
            for key in ("CHECKSUM", "DATASUM"):
                h.remove(key, ignore_missing=True)
            out.append(fits.ImageHDU(data, h, name=name))
        fits.HDUList(out).writeto(dest, overwrite=True, checksum=False)
    with fits.open(dest) as hdul:
        return WCS(hdul["DATA"].header).celestial


def make_catalog(src: Path, dest: Path, wcs: WCS) -> None:
    """Keep the rows of cat.txt whose position falls inside the cut field (same text layout)."""
    table = Table.read(src, format="ascii")
    x, y = wcs.world_to_pixel_values(table["RA"], table["DEC"])
    inside = (x > -0.5) & (x < X1 - X0 - 0.5) & (y > -0.5) & (y < Y1 - Y0 - 0.5)
    lines = src.read_text().splitlines()
    keep = [lines[0]] + [line for line, ok in zip(lines[1:], inside) if ok]
    dest.write_text("\n".join(keep) + "\n")


def main() -> None:
    cube_src, cat_src = minicube_paths()
    wcs = make_cube(cube_src, HERE / "gx_minicube.fits")
    make_catalog(cat_src, HERE / "gx_catalog.txt", wcs)

    cli("image", "gx_minicube.fits", "-o", "gx_white.fits")
    with fits.open(HERE / "gx_white.fits") as hdul:
        white = np.nan_to_num(hdul["DATA"].data.astype(np.float32))
    tifffile.imwrite(HERE / "gx_white.tiff", white)
    cli("detect", "gx_white.fits", "-o", "gx_detections.tsv", "--segmap", "gx_segmap.fits")
    cli("mask", "gx_minicube.fits", "gx_catalog.txt", "--segmap", "gx_segmap.fits",
        "-o", "gx_masks.fits")

    with tempfile.TemporaryDirectory() as tmp:
        cli("extract", "gx_minicube.fits", "gx_catalog.txt", "--masks", "gx_masks.fits",
            "--fwhm", "0.75", "-o", f"{tmp}/all")
        for oid in (1, 3):
            shutil.copyfile(f"{tmp}/all/sources/{oid}.fits", HERE / f"gx_source_{oid}.fits")
        shutil.copyfile(f"{tmp}/all/summary.tsv", HERE / "gx_summary.tsv")
        cli("split", "gx_catalog.txt", "-n", "2", "-o", f"{tmp}/parts")
        for k in (1, 2):
            cli("extract", "gx_minicube.fits", f"{tmp}/parts/gx_catalog_part0{k}.txt", "--masks",
                "gx_masks.fits", "--fwhm", "0.75", "-o", f"{tmp}/part{k}")
            shutil.copyfile(f"{tmp}/part{k}/summary.tsv", HERE / f"gx_part0{k}_summary.tsv")

    (HERE / "gx_kernel.txt").write_text("1 2 1\n2 4 2\n1 2 1\n")
    (HERE / "gx_no_radec.tsv").write_text("ID\tX\tY\n1\t10.0\t9.0\n")

    for path in sorted(HERE.glob("gx_*")):
        size = path.stat().st_size
        assert size < 1_000_000, f"{path.name} is {size} bytes: test files stay well under 1 MB"
        print(f"{path.name:24s} {size:8d} bytes")


if __name__ == "__main__":
    main()

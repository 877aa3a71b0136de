#!/usr/bin/env python
"""Make the small ``detect_*`` test files (deterministic; rerun to regenerate them).

``detect_field.fits``       64 x 64 image, DATA + STAT + celestial WCS (0.2"/px, MUSE-like),
                            five point sources and one Sérsic galaxy, Gaussian noise σ = 1
``detect_field.tiff``       the same DATA as a single-channel float32 TIFF (no WCS)
``detect_field_truth.tsv``  ID, x, y (0-based, x fast axis), RA, DEC, FLUX of the injected sources
``detect_mask.fits``        uint8 mask (1 = masked) covering the source with ID 6
``detect_kernel.txt``       a 5 x 5 Gaussian filter kernel (FWHM 2 px) for ``--filter-file``

Usage: ``python test-data/make_detect_data.py`` (writes next to this script).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from ifu_extract import synth

HERE = Path(__file__).resolve().parent
SHAPE = (64, 64)
FWHM_PIX = 3.5  # MUSE white-light PSF, 0.7" at 0.2"/px
BETA = 2.8
SIGMA = 1.0
# id, x, y, total flux, kind
SOURCES = [
    (1, 12.3, 10.8, 400.0, "point"),
    (2, 47.6, 14.2, 250.0, "point"),
    (3, 30.1, 31.7, 900.0, "point"),
    (4, 9.8, 50.4, 150.0, "point"),
    (5, 53.2, 52.9, 300.0, "point"),
    (6, 31.4, 52.6, 600.0, "sersic"),
]


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crpix = [32.5, 32.5]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.cd = [[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]]
    w.wcs.radesys = "ICRS"
    return w


def main() -> None:
    rng = np.random.default_rng(20260101)
    model = np.zeros(SHAPE)
    for _, x, y, flux, kind in SOURCES:
        if kind == "point":
            model += flux * synth.moffat_image(SHAPE, x, y, FWHM_PIX, BETA)
        else:
            prof = synth.sersic_image(SHAPE, x, y, 2.5, n=1.0, q=0.6, pa_deg=35.0)
            kern = synth.moffat_image((21, 21), 10, 10, FWHM_PIX, BETA)
            model += flux * fftconvolve(prof, kern / kern.sum(), mode="same")
    data = (model + rng.normal(0.0, SIGMA, SHAPE)).astype(np.float32)
    stat = np.full(SHAPE, SIGMA**2, dtype=np.float32)
    wcs = _wcs()
    hdr = wcs.to_header()
    hdr["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    prim = fits.PrimaryHDU()
    prim.header["OBJECT"] = "ifu-extract detect test field"
    fits.HDUList([prim, fits.ImageHDU(data, hdr, name="DATA"),
                  fits.ImageHDU(stat, hdr, name="STAT")]).writeto(
        HERE / "detect_field.fits", overwrite=True)
    tifffile.imwrite(HERE / "detect_field.tiff", data)

    ra, dec = wcs.all_pix2world([s[1] for s in SOURCES], [s[2] for s in SOURCES], 0)
    truth = Table({"ID": [s[0] for s in SOURCES], "x": [s[1] for s in SOURCES],
                   "y": [s[2] for s in SOURCES], "RA": np.round(ra, 8), "DEC": np.round(dec, 8),
                   "FLUX": [s[3] for s in SOURCES]})
    truth.write(HERE / "detect_field_truth.tsv", format="ascii.tab", overwrite=True)

    mask = np.zeros(SHAPE, dtype=np.uint8)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    _, x6, y6, _, _ = SOURCES[5]
    mask[(xx - x6) ** 2 + (yy - y6) ** 2 <= 8.0**2] = 1
    mhdr = wcs.to_header()
    fits.PrimaryHDU(mask, mhdr).writeto(HERE / "detect_mask.fits", overwrite=True)

    half = 2
    g = np.exp(-0.5 * (np.arange(-half, half + 1) / (2.0 / 2.3548)) ** 2)
    kern = np.outer(g, g)
    np.savetxt(HERE / "detect_kernel.txt", kern / kern.max(), fmt="%.6f")


if __name__ == "__main__":
    main()

"""Make the small inputs of the ``mask`` tool's tests and Galaxy wrapper (deterministic).

Usage: ``python test-data/make_mask_data.py [OUTDIR]`` (default: this folder).  Writes:

``mask_cube.fits``        30 x 30 spaxels (0.2″), 20 channels, MUSE layout (DATA/STAT/DQ), with a
                          point source (1), a Sérsic galaxy (2), a blended pair (3, 4) and a
                          faint source below the detection threshold (5);
``mask_segmap.fits``      segmentation map on the cube grid (int32, cube WCS): the noise-free
                          white light above a threshold, one label per connected region, so the
                          pair 3+4 shares one label;
``mask_segmap_fine.fits`` the same scene, intrinsic (unconvolved) profiles, on a 4x finer grid
                          (0.05″, as an HST image): 3 and 4 get their own labels;
``mask_catalog.txt``      ID RA DEC of the five sources and one row outside the field (6).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from ifu_extract import synth

SHAPE = (20, 30, 30)
PIXSCALE = 0.2
FINE = 4
THRESH = 0.5  # noise-free white-light level of the segment edges (noise sigma per channel: 1)
SOURCES = [  # id, x, y, kind, level, re (arcsec)
    ("1", 8.2, 9.6, "point", 60.0, 0.0),
    ("2", 20.4, 19.1, "sersic", 50.0, 0.8),
    ("3", 7.0, 22.0, "point", 30.0, 0.0),
    ("4", 9.8, 23.1, "point", 25.0, 0.0),
    ("5", 23.0, 6.0, "point", 0.5, 0.0),
]


def _label_regions(image: np.ndarray, thresh: float) -> np.ndarray:
    labels, _ = ndimage.label(image >= thresh)
    return labels.astype(np.int32)


def make(outdir) -> dict:
    """Write the files into *outdir*; returns ``{name: path}``."""
    out = Path(outdir)
    nw, ny, nx = SHAPE
    wave = 4750.0 + 1.25 * np.arange(nw)
    srcs = [synth.SynthSource(i, x, y, synth.continuum_spectrum(wave, lev), kind=kind,
                              re_arcsec=re or 0.5, n=1.0, q=0.6, pa_deg=30.0)
            for i, x, y, kind, lev, re in SOURCES]
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=SHAPE, pixscale=PIXSCALE, sigma=1.0,
                                                seed=7, keep_models=True)
    paths = {}
    paths["cube"] = out / "mask_cube.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(paths["cube"], overwrite=True)
    wcs = WCS(hdr).celestial

    model = sum(m.mean(axis=0) for m in truth.models.values())
    seg = _label_regions(model, THRESH)
    paths["segmap"] = out / "mask_segmap.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(seg, wcs.to_header(), name="SEGMAP")]).writeto(
        paths["segmap"], overwrite=True)

    # 4x finer grid whose pixels tile the cube spaxels: crpix_f = 4 crpix - 1.5, CD / 4.
    fine_wcs = wcs.deepcopy()
    fine_wcs.wcs.crpix = FINE * wcs.wcs.crpix - (FINE - 1) / 2.0
    if fine_wcs.wcs.has_cd():
        fine_wcs.wcs.cd = wcs.wcs.cd / FINE
    else:
        fine_wcs.wcs.cdelt = wcs.wcs.cdelt / FINE
    fshape = (ny * FINE, nx * FINE)
    fine = np.zeros(fshape)
    for i, x, y, kind, lev, re in SOURCES:
        xf, yf = FINE * x + (FINE - 1) / 2.0, FINE * y + (FINE - 1) / 2.0
        if kind == "point":  # HST-like PSF, 0.1″ FWHM
            prof = synth.moffat_image(fshape, xf, yf, 0.1 / PIXSCALE * FINE, 2.8)
        else:
            prof = synth.sersic_image(fshape, xf, yf, re / PIXSCALE * FINE, 1.0, 0.6, 30.0)
        fine += lev * prof * FINE * FINE  # same surface brightness units as the cube grid
    seg_fine = _label_regions(fine, THRESH)
    paths["segmap_fine"] = out / "mask_segmap_fine.fits"
    fits.HDUList([fits.PrimaryHDU(seg_fine.astype(np.int32), fine_wcs.to_header())]).writeto(
        paths["segmap_fine"], overwrite=True)

    paths["catalog"] = out / "mask_catalog.txt"
    lines = ["ID RA DEC"]
    for src in srcs:
        lines.append(f"{src.id} {truth.ra[src.id]:.7f} {truth.dec[src.id]:.7f}")
    lines.append(f"6 {truth.ra['1'] + 0.01:.7f} {truth.dec['1']:.7f}")
    paths["catalog"].write_text("\n".join(lines) + "\n")
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for name, path in make(target).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")

#!/usr/bin/env python
"""Make the ``wf_*`` test files of the Galaxy workflow test (deterministic; rerun to regenerate).

``wf_cube.fits``     a cut-down *real* MUSE cube: mpdaf's Abell 478 minicube over its whole
                     40 x 40 spaxel field, 36 channels (about 7115-7160 Angstrom: H-alpha and
                     [NII] 6583 of the cluster galaxies at z = 0.086), DATA/STAT/DQ, full WCS
``wf_catalog.txt``   mpdaf's MUSELET catalogue (cat.txt) cut to the objects inside that field
                     (8 objects: enough for a 3-chunk split)
``wf_blend_cube.fits``     a synthetic blend with known truth (``make_blend``): a bright red
                     galaxy (point-like bulge and exponential disk, absorption features) and, 0.9
                     arcsec away, a galaxy 20 times fainter whose [O III] 5007 line is at
                     7010.0 Angstrom (air); 96 channels 6950-7069 Angstrom, 25 x 25 spaxels of
                     0.2 arcsec, Moffat PSF (beta 2.8, FWHM 0.73 arcsec here) with FSF keywords,
                     noise giving S/N 5 per channel in the bright galaxy's brightest spaxel
``wf_blend_catalog.txt``   their positions (ID 1 bright, ID 2 faint)
``wf_blend_image.fits``   an HST-like image of the blend (``tests/blend_scenes.hst_image``): the
                     three components' light in the 7000-7069 Angstrom band on a 0.05 arcsec
                     grid aligned with the cube's, Gaussian PSF of 0.1 arcsec FWHM, peak S/N 200

The cut reuses ``make_galaxy_data.make_cube`` with a wider window and fewer channels, so that the
workflow test has several objects while the file stays well under 1 MB.  Usage:
``python test-data/make_workflow_data.py`` with the package installed (writes next to this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_galaxy_data as gx  # noqa: E402  (same cutting code, other window)


#: Where the faint galaxy's [O III] 5007 line is, Angstrom (air): asserted by the workflow test.
BLEND_LINE = 7010.0


def make_blend(cube_path: Path, cat_path: Path, seed: int = 3, image_path: Path | None = None) -> None:
    """The synthetic blend of the workflow test (see the module docstring); with *image_path*,
    its HST-like image too."""
    import numpy as np

    from ifu_extract import synth
    from ifu_extract.wcsutil import pixel_to_world

    nwave, wave0, dwave = 96, 6950.0, 1.25
    wave = wave0 + dwave * np.arange(nwave)
    # The full MUSE range's PSF law (0.85 -> 0.60 arcsec over 4750-9350 A), at these channels.
    fwhm = tuple(float(np.interp(w, [4750.0, 9350.0], [0.85, 0.60])) for w in (wave[0], wave[-1]))
    absorb = [(6985.0, 4.0, 0.3), (7040.0, 5.0, 0.25)]
    bulge = synth.continuum_spectrum(wave, 60.0, 0.8, absorb)
    disk = synth.continuum_spectrum(wave, 40.0, 0.2, [(c, s, d / 2) for c, s, d in absorb])
    faint_total = (bulge + disk).sum() / 20.0
    cont = synth.continuum_spectrum(wave, 1.0, -0.3)
    line = synth.emission_line(wave, BLEND_LINE, 1.2, 1.0)
    faint = cont * (0.6 * faint_total / cont.sum()) + line * (0.4 * faint_total / line.sum())
    xb, yb = 11.2, 12.4
    ang = np.deg2rad(17.0)
    xf, yf = xb + 4.5 * np.cos(ang), yb + 4.5 * np.sin(ang)
    sources = [synth.SynthSource("bulge", xb, yb, bulge),
               synth.SynthSource("disk", xb, yb, disk, kind="sersic", re_arcsec=0.4, n=1.0, q=0.8,
                                 pa_deg=20.0),
               synth.SynthSource("faint", xf, yf, faint)]
    _, _, _, hdr, truth = synth.make_cube(sources, shape=(nwave, 25, 25), wave0=wave0, dwave=dwave,
                                          fwhm=fwhm, sigma=1.0, keep_models=True, seed=seed,
                                          ra0=63.40, dec0=10.45)
    model = sum(truth.models[k].astype(np.float64) for k in ("bulge", "disk", "faint"))
    sigma = float(np.median(model.reshape(nwave, -1).max(axis=1))) / 5.0
    rng = np.random.default_rng(seed)
    data = (model + rng.standard_normal(model.shape) * sigma).astype(np.float32)
    var = np.full(model.shape, sigma ** 2, dtype=np.float32)
    bad = rng.random(model.shape) < 1e-3  # a few bad voxels, flagged in DQ
    data[bad] = np.nan
    var[bad] = np.nan
    hdul = synth.cube_hdulist(data, var, bad.astype(np.uint8), hdr)
    hdul[0].header["OBJECT"] = "ifu-extract synthetic blend (test-data/make_workflow_data.py)"
    hdul.writeto(cube_path, overwrite=True, checksum=True)
    from astropy.wcs import WCS

    ra, dec = pixel_to_world(WCS(hdr).celestial, np.array([xb, xf]), np.array([yb, yf]))
    cat_path.write_text("ID RA DEC\n" + "".join(f"{i} {r:.7f} {d:.7f}\n"
                                                 for i, (r, d) in enumerate(zip(ra, dec), start=1)))
    if image_path is not None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        import blend_scenes

        img = blend_scenes.hst_image(sources, wave, hdr, np.random.default_rng(seed + 1), shape=25)
        img[0].header["OBJECT"] = "ifu-extract synthetic blend, HST-like image (test-data/make_workflow_data.py)"
        img.writeto(image_path, overwrite=True, checksum=True)


def main() -> None:
    gx.X0, gx.X1, gx.Y0, gx.Y1 = 0, 40, 0, 40
    gx.WAVE_START, gx.NCHAN = 7115.0, 36
    cube_src, cat_src = gx.minicube_paths()
    wcs = gx.make_cube(cube_src, HERE / "wf_cube.fits")
    gx.make_catalog(cat_src, HERE / "wf_catalog.txt", wcs)
    make_blend(HERE / "wf_blend_cube.fits", HERE / "wf_blend_catalog.txt",
               image_path=HERE / "wf_blend_image.fits")
    for path in sorted(HERE.glob("wf_*")):
        size = path.stat().st_size
        assert size < 1_000_000, f"{path.name} is {size} bytes: test files stay well under 1 MB"
        print(f"{path.name:24s} {size:8d} bytes")


if __name__ == "__main__":
    main()

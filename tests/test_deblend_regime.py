"""Deblending at the contamination limit (issue 15, items 3-5).

The regime of ``tests/blend_scenes.py``: a faint emission-line galaxy 0.8″ from a galaxy 20
times brighter (Sérsic n = 4, or a red n = 4 core in a blue exponential envelope), Moffat PSF
with exact MUSE FSF keywords, catalogue positions 0.1″ off the light (a catalogue from another
image or pipeline; the previous model, centred there, left half of the bright galaxy's
spectrum in the faint one's).  The faint galaxy's DEBLEND spectrum is scored with the issue's
metric and compared with an ORACLE fit with the true spatial models (the noise's own share,
about +-1 % at this S/N): it must stay within 10 % with the cube alone and with a sharp
HST-like image; without noise, the image's own light as the members' models leaves <= 2 % in
the harder (colour gradient) case.  The full table (eight configurations x five seeds) is
``bench/deblend_bench.py``'s, in ``bench/README.md``.

The real minicube (Abell 478): around Hα, [N II] and [S II] of the central galaxy, no DEBLEND
spectrum has more than 0.2 % of its channels below -5 sigma, and each carries the fit's χ²/dof.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import blend_scenes
from ifu_extract.catalog import read_catalog
from ifu_extract.cubeio import open_cube
from ifu_extract.deblend import DeblendConfig, deblend_catalog, resolve_psf
from ifu_extract.detect import detect_sources
from ifu_extract.image import band_image, read_image
from ifu_extract.weights import model_images

NWAVE = 921          # 5 Å channels over 4750-9350 Å: the regime's PSF change, a modest runtime
PEAK_SNR = 30.0
SCENES = {s.name: s for s in blend_scenes.SCENES}


def _deblend(built, *, image=False, **cfg):
    with open_cube(built.cube) as c, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = detect_sources(band_image(c)).segmap
        img, fine = model_images(read_image(built.image), c) if image else (None, None)
        if image:
            cfg.setdefault("image_fwhm", blend_scenes.HST_FWHM)
        res = deblend_catalog(c, read_catalog(built.catalog), resolve_psf(c), image=img,
                              image_is_cube=img is None, image_fine=fine, segmap=seg,
                              config=DeblendConfig(**cfg))
    return res


@pytest.mark.parametrize("name,seed", [("easy-0.8-off", 0), ("hard-0.8-off", 1)])
def test_faint_neighbour_contamination(tmp_path, name, seed):
    """Known PSF, catalogue 0.1″ off: contamination <= 10 % with the cube alone and with the
    sharp image; the previous model (``solver="image"``, no centre fit) leaks > 20 %."""
    built = blend_scenes.build(SCENES[name], seed, tmp_path, nwave=NWAVE, peak_snr=PEAK_SNR,
                               image=True, oracle=True)
    oracle = blend_scenes.score(built.oracle[1], built.t_faint, built.t_bright)[2]
    scores = {}
    for label, kw in (("cube", {}), ("image", {"image": True}),
                      ("before", {"solver": "image", "fit_centres": False})):
        res = _deblend(built, **kw)
        a, _, c = blend_scenes.score(res.sources[1].spectrum.flux, built.t_faint, built.t_bright)
        scores[label] = (a, c)
        meta = res.sources[1].spectrum.meta
        print(f"\n{name} seed {seed} {label:6s}: a {a:.3f} contamination {c:+.4f} (oracle {oracle:+.4f})"
              f" chi2/dof {meta.get('DBCHI2', ('-',))[0]}", end="")
    assert abs(scores["cube"][1]) <= 0.10 and 0.9 <= scores["cube"][0] <= 1.1
    assert abs(scores["image"][1]) <= 0.10 and 0.9 <= scores["image"][0] <= 1.1
    assert abs(scores["before"][1]) > 0.2  # what the centre fit and the joint fit remove


@pytest.mark.parametrize("name", ["hard-0.8-r15-off", "hard-0.7"])
def test_sharp_image_systematics(tmp_path, name):
    """Without noise (S/N 1000), colour gradient, faint galaxy 0.7-0.8″ away: the sharp image's
    own light, shared between the members and convolved with the cube's PSF on the image's
    finer grid, leaves <= 2 % of the bright galaxy in the faint one (the issue's goal is 5 %
    for this harder case).  The image's multi-Gaussian models refitted jointly on the cube
    (``image_templates=False``, the previous default) leave 2.5-2.6 %."""
    built = blend_scenes.build(SCENES[name], 0, tmp_path, nwave=200, peak_snr=1000.0, image=True)
    res = _deblend(built, image=True)
    a, _, c = blend_scenes.score(res.sources[1].spectrum.flux, built.t_faint, built.t_bright)
    print(f"\n{name} image templates: a {a:.3f} contamination {c:+.4f}", end="")
    assert abs(c) <= 0.02 and 0.97 <= a <= 1.03
    assert res.sources[0].spectrum.meta["DBSOLVER"][0] == "template"


def test_faint_centre_fitted(tmp_path):
    """Cube alone, no noise: a faint neighbour 15 times fainter whose catalogue position is
    0.05″ off its light gets its centre fitted (the previous rule left members more than 4
    times fainter than a neighbour where the catalogue put them: 14 % contamination)."""
    built = blend_scenes.build(SCENES["hard-0.8-r15-off"], 0, tmp_path, nwave=200, peak_snr=1000.0)
    res = _deblend(built)
    a, _, c = blend_scenes.score(res.sources[1].spectrum.flux, built.t_faint, built.t_bright)
    print(f"\nhard-0.8-r15-off cube: a {a:.3f} contamination {c:+.4f}", end="")
    assert abs(c) <= 0.05
    assert any("centre fitted" in n for n in res.sources[1].notes), res.sources[1].notes


def test_joint_fit_keywords_and_variance(tmp_path):
    """The DEBLEND header records χ²/dof (near 1 for a model that fits) and the poor-model
    flag; the variance is that of the estimate ((S - a·T)/σ has unit scatter)."""
    scene = dataclasses.replace(SCENES["hard-0.9"], cat_offset=(0.0, 0.0))
    built = blend_scenes.build(scene, 2, tmp_path, nwave=NWAVE, peak_snr=PEAK_SNR)
    res = _deblend(built)
    for src in res.sources:
        meta = src.spectrum.meta
        assert meta["DBSOLVER"][0] == "joint"
        # The bright n = 4 galaxy's model (a core and an envelope) leaves chi2/dof ~1.23 on its
        # own spaxels: under the 1.5 of the poor-model flag.
        assert 0.9 < meta["DBCHI2"][0] < 1.35 and meta["DBPOOR"][0] is False, meta
    # The faint galaxy's variance is that of its estimate.  (The bright one's DEBLEND spectrum
    # departs from a·T by its flux extrapolation beyond the group's footprint, which changes
    # with the PSF: 2x its noise here; not checked.)
    src = res.sources[1]
    a = blend_scenes.score(src.spectrum.flux, built.t_faint, built.t_bright)[0]
    chi = (src.spectrum.flux - a * built.t_faint) / np.sqrt(src.spectrum.var)
    assert 0.9 < np.nanstd(chi) < 1.2, np.nanstd(chi)


def test_minicube_no_deep_negative_lines(minicube, muselet_cat, tmp_path):
    """Abell 478 core, cat.txt, FWHM 0.7″, Hα/[N II]/[S II] of the central galaxy (6900-7400 Å):
    no DEBLEND spectrum has more than 0.2 % of its channels below -5 sigma of its own STAT (the
    previous model put the central galaxy's lines at -7 sigma in object 2's); every spectrum
    carries DBCHI2 and DBPOOR, and the objects whose model misses their light are flagged."""
    from ifu_extract.steps.deblend import DeblendStepConfig, run_deblend

    with open_cube(minicube) as c, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = detect_sources(band_image(c)).segmap
    from astropy.io import fits

    with open_cube(minicube) as c:
        fits.PrimaryHDU(seg, c.wcs.to_header()).writeto(tmp_path / "seg.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = run_deblend(minicube, read_catalog(muselet_cat), tmp_path / "out", segmap=tmp_path / "seg.fits",
                           config=DeblendStepConfig(fwhm=0.7, wave_range=(6900.0, 7400.0))).rows
    n_ok = 0
    for row in rows:
        if not row["FILE"]:
            continue
        n_ok += 1
        with fits.open(tmp_path / "out" / row["FILE"]) as h:
            flux = h["SPE_DEBLEND_DATA"].data.astype(float)
            var = h["SPE_DEBLEND_STAT"].data.astype(float)
            hdr = h["SPE_DEBLEND_DATA"].header
        assert np.isfinite(hdr["DBCHI2"]) and isinstance(hdr["DBPOOR"], bool)
        z = flux / np.sqrt(var)
        frac = np.mean(z[np.isfinite(z)] < -5)
        print(f"\nminicube {row['ID']}: {frac:.4%} of channels below -5 sigma, min {np.nanmin(z):.1f}"
              f" sigma; notes: {row['NOTES'][:120]}", end="")
        assert frac <= 0.002, row["ID"]
    assert n_ok >= 7

"""Synthetic cubes of the line-scan and emitter tests: a continuum galaxy and a line-only
emitter of known S/N (seeded)."""

from __future__ import annotations

import numpy as np

from ifu_extract import synth

SHAPE = (480, 40, 40)           # 4750-5349 Angstrom, 8" x 8"
LINE, LINE_SIGMA = 5100.0, 1.5  # Angstrom
EMITTER = (22.3, 17.6)


def _galaxy(wave):
    """A bright continuum galaxy with absorption features and a break (never a line emitter)."""
    return synth.continuum_spectrum(wave, 25.0, 0.6, [(4861, 5, .4), (5175, 8, .35), (5270, 6, .2)]) * (
        0.7 + 0.3 / (1 + np.exp(-(wave - 5000) / 20)))


def make_cube(path, seed, *, line_snr=10.0, with_emitter=True, sky_line=False):
    """Noise sigma 1; the emitter's line flux set so that its expected matched-filter S/N in
    the 5 Angstrom band centred on the line is *line_snr*."""
    wave = 4750.0 + 1.25 * np.arange(SHAPE[0])
    srcs = [synth.SynthSource("G", 10.2, 30.1, _galaxy(wave), kind="sersic", re_arcsec=0.5, n=1.0)]
    flux = 0.0
    if with_emitter:
        unit = synth.emission_line(wave, LINE, LINE_SIGMA, 1.0)
        _, _, _, _, t1 = synth.make_cube([synth.SynthSource("E", *EMITTER, unit)], shape=SHAPE, sigma=0.0,
                                         keep_models=True)
        band = (wave >= LINE - 2.5) & (wave < LINE + 2.5)
        nb = t1.models["E"][band].mean(axis=0)          # noise-free band image of unit flux
        # side bands (2 x 20 Angstrom) add their noise to the band's; matched filter = profile.
        sig_nb = np.sqrt(1.0 / band.sum() + 0.5 / 16.0)
        p = nb / nb.sum()
        snr_unit = (p * nb).sum() / sig_nb / np.sqrt((p * p).sum())
        flux = line_snr / snr_unit
        srcs.append(synth.SynthSource("E", *EMITTER, unit * flux))
    sky = None
    if sky_line:  # a sky-subtraction residual at [O I] 5577 would be out of range: use 5300
        sky = synth.emission_line(wave, 5300.0, 1.5, 30.0)
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=SHAPE, sigma=1.0, seed=seed, nan_fraction=1e-4,
                                                sky=sky)
    synth.cube_hdulist(data, var, dq, hdr).writeto(path, overwrite=True)
    return flux, truth

"""The quick-look emission-line finder (ifu_extract.lines): position, S/N and flux of an injected
line against the truth, false detections in pure noise, sky lines and NaNs."""

from __future__ import annotations

import numpy as np
import pytest

from ifu_extract import synth
from ifu_extract.lines import strongest_emission_line
from ifu_extract.skylines import sky_lines

WAVE = 4750.0 + 1.25 * np.arange(3681)   # MUSE
SIGMA_AA = 1.25                          # line sigma, Angstrom (FWHM 2.9)


def _continuum():
    # A red galaxy continuum with absorption features: they must not pull the line or the S/N.
    feats = [(c, 6.0, 0.3) for c in (5117.0, 6309.0, 6727.0, 7661.0, 8532.0)]
    return synth.continuum_spectrum(WAVE, 20.0, 0.5, feats)


def _expected_snr(amp, noise):
    """S/N of the matched filter for a Gaussian line of peak *amp* in white noise *noise*."""
    s = SIGMA_AA / 1.25
    k = np.exp(-0.5 * (np.arange(-8, 9) / s) ** 2)
    return amp * np.sqrt((k ** 2).sum()) / noise


def test_injected_line_position_snr_and_flux():
    rng = np.random.default_rng(7)
    centre, flux_true, noise = 7003.3, 60.0, 2.0
    amp = flux_true / (np.sqrt(2 * np.pi) * SIGMA_AA)
    clean = _continuum() + synth.emission_line(WAVE, centre, SIGMA_AA, flux_true)
    found = []
    for _ in range(100):
        spec = clean + rng.normal(0, noise, WAVE.size)
        line = strongest_emission_line(WAVE, spec, np.full(WAVE.size, noise ** 2))
        assert line is not None
        found.append((line.wave, line.snr, line.flux))
    waves, snrs, fluxes = np.array(found).T
    # Position: unbiased, with the scatter of the Cramer-Rao bound (about sigma / S/N * sqrt(2)
    # = 0.14 Angstrom here), not the channel quantisation (1.25 Angstrom).
    assert abs(np.median(waves) - centre) < 0.05
    assert np.std(waves) < 0.2
    assert np.all(np.abs(waves - centre) < 0.65)
    expect = _expected_snr(amp, noise)
    assert expect > 10
    assert abs(snrs.mean() / expect - 1) < 0.1          # the matched filter's S/N, unbiased
    # +-1 FWHM holds 98 % of a Gaussian; the running median removes a little line light.
    assert abs(np.median(fluxes) / flux_true - 0.97) < 0.05


def test_pure_noise_gives_almost_no_line():
    rng = np.random.default_rng(11)
    hits = sum(strongest_emission_line(WAVE, _continuum() + rng.normal(0, 1.0, WAVE.size),
                                       np.ones(WAVE.size)) is not None for _ in range(200))
    assert hits <= 2   # the maximum S/N of a noise spectrum is 3.3-4.5 (5-95 %); 6 is the default cut


def test_sky_line_is_skipped_and_nans_are_ignored():
    sky = [s.wave for s in sky_lines(6000, 7000)][0]
    spec = _continuum() + synth.emission_line(WAVE, sky, SIGMA_AA, 80.0) \
        + synth.emission_line(WAVE, 8100.0, SIGMA_AA, 40.0)
    var = np.full(WAVE.size, 0.25)
    spec[100:140] = np.nan
    var[2000] = np.nan
    line = strongest_emission_line(WAVE, spec, var)
    assert line.wave == pytest.approx(8100.0, abs=0.3)   # the sky residual is skipped
    line = strongest_emission_line(WAVE, spec, var, sky=False)
    assert line.wave == pytest.approx(sky, abs=0.3)      # the brighter one, when asked


def test_no_line_and_too_few_channels():
    var = np.ones(WAVE.size)
    assert strongest_emission_line(WAVE, _continuum(), var) is None
    assert strongest_emission_line(WAVE[:5], np.ones(5), np.ones(5)) is None
    with pytest.raises(ValueError):
        strongest_emission_line(WAVE[::-1], _continuum(), var)


def test_real_line_next_to_a_sky_line_keeps_its_position():
    # [O III] 5007 at z = 0.6 (8011.2 A) sits 2.9 A from the OH line at 8014.1 A.
    sky = min((s.wave for s in sky_lines(7900, 8100)), key=lambda w: abs(w - 8011.2))
    assert abs(sky - 8014.1) < 0.2
    spec = _continuum() + synth.emission_line(WAVE, 8011.2, 2.5, 200.0)
    line = strongest_emission_line(WAVE, spec, np.full(WAVE.size, 0.25))
    assert line.wave == pytest.approx(8011.2, abs=0.2)

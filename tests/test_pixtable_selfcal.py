"""selfcal: on a synthetic table that is not sky-subtracted (sky continuum and lines, noise,
flagged pixels, a few bright sources masked by a mask image) with per-slice, per-bin throughput
offsets of 1-3%, the slice levels measured on pixels the fit never used scatter < 0.2%."""

import numpy as np
import pytest
from astropy.io import fits

from conftest import run_main
from ifu_extract.errors import InputError
from ifu_extract.pixtable.reader import PixTable
from ifu_extract.pixtable.selfcal import compute_corrections
from pixtable_helpers import mask_file, offset, table
from ifu_extract.pixtable.synth import SynthSource

EDGES = (6120.0, 6440.0, 6678.0, 6931.0, 7211.0)  # four of the pipeline's sky segments
N_IFU = 2
_rng = np.random.default_rng(2024)
FACTORS = 1 + _rng.choice([-1, 1], (N_IFU, 48, 4)) * _rng.uniform(0.01, 0.03, (N_IFU, 48, 4))
# Bright sources, one of them extended: unmasked, it biases the slices it covers.
BRIGHT = (SynthSource(*offset(0.0, 0.4), peak=3000.0, fwhm=6.0),
          SynthSource(*offset(-7.5, -1.0), peak=4000.0, fwhm=1.6),
          SynthSource(*offset(16.0, 1.5), peak=4000.0, fwhm=1.6))
MASK_RADII = (8.0, 3.0, 3.0)
SPEC = dict(nrows=2_000_000, n_ifu=N_IFU, wave_range=(6130.0, 7200.0), slice_width=20,
            sky_level=2000.0, fluxcal=False, sources=BRIGHT, factors=FACTORS,
            factor_edges=EDGES, seed=11)


@pytest.fixture(scope="module")
def selfcal_run(tmp_path_factory):
    path, geo, spec = table(**SPEC)
    mask = mask_file("selfcal_mask.fits", spec, radius=MASK_RADII)
    out_dir = tmp_path_factory.mktemp("selfcal")
    return path, geo, spec, mask, out_dir


def _holdout_levels(path, mask_rows):
    """Independent check: median of unflagged, unmasked odd-row pixels per slice and bin."""
    with PixTable(path) as pt:
        o, lam, data, dq = (pt.read(c) for c in ("origin", "lambda", "data", "dq"))
    ypix = ((o >> 11) & 0x1FFF) - 1
    k = np.searchsorted(EDGES, lam, side="right") - 1
    keep = (dq == 0) & ~mask_rows & (ypix % 2 == 1) & (k >= 0) & (k < 4)
    g = ((((o >> 6) & 0x1F) - 1) * 48 + (o & 0x3F) - 1) * 4 + k
    g, v = g[keep], data[keep]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    starts = np.searchsorted(g, np.arange(N_IFU * 48 * 4))
    ends = np.searchsorted(g, np.arange(N_IFU * 48 * 4), side="right")
    med = np.array([np.median(v[a:b]) for a, b in zip(starts, ends)]).reshape(N_IFU * 48, 4)
    return med / np.median(med, axis=0) - 1


def test_selfcal_brings_slice_levels_below_0p2_percent(selfcal_run, capfd):
    path, geo, spec, mask, out_dir = selfcal_run
    out, corr = out_dir / "corrected.fits", out_dir / "corrections.fits"
    col = out_dir / "maskcol.fits"
    assert run_main(["pixtable", "mask", path, mask, "-o", col], capfd).exit_code == 0
    res = run_main(["pixtable", "selfcal", path, "-o", out, "--corrections", corr,
                    "--mask-column", col, "--bin-edges", ",".join(map(str, EDGES)),
                    "--fit-rows", "even", "--png", out_dir / "corr.png"], capfd)
    assert res.exit_code == 0, res.stderr
    with fits.open(col) as hdul:
        masked = hdul["MASKCOL"].data[:, 0].astype(bool)
    before = _holdout_levels(path, masked)
    after = _holdout_levels(out, masked)
    # tolerance of the issue: 0.2% rms on pixels not used by the fit (odd detector rows)
    assert 0.015 < before.std() < 0.03
    assert after.std() < 0.002
    with fits.open(corr) as hdul:
        h, t = hdul[0].header, hdul["AUTOCAL_FACTORS"].data
        assert h["SCATAFT"] < 0.002 < 0.015 < h["SCATBEF"]
        assert len(t) == 24 * 48 * 4 and h["HIERARCH ESO DRS MUSE LAMBDA1 MIN"] == EDGES[0]
        corr_tab = t["corr"].reshape(4, 24, 48)[:, :N_IFU].transpose(1, 2, 0)
    # the corrections undo the injected factors (up to one global scale per bin)
    ratio = corr_tab * FACTORS
    assert np.std(ratio / np.median(ratio, axis=(0, 1)) - 1) < 0.0015
    assert "hold-out slice-level scatter" in res.stderr
    # the corrected table is a valid pixel table with data and stat scaled together
    with PixTable(path) as a, PixTable(out) as b:
        f = b.read("data", 0, 50_000) / a.read("data", 0, 50_000)
        g = b.read("stat", 0, 50_000) / a.read("stat", 0, 50_000)
        np.testing.assert_allclose(g, f ** 2, rtol=1e-5)
        np.testing.assert_array_equal(a.read("origin"), b.read("origin"))


def test_mask_matters_and_mpdaf_can_merge_our_corrections(selfcal_run):
    from mpdaf.drs.pixtable import merge_autocal_factors

    path, _, _, mask, out_dir = selfcal_run
    from ifu_extract.pixtable.maskcol import MaskFromImage

    def truth_error(res):
        ratio = res.corr[:N_IFU] * FACTORS
        return np.std(ratio / np.median(ratio, axis=(0, 1)) - 1)

    with PixTable(path) as pt:
        masked = compute_corrections(pt, mask=MaskFromImage(mask, pt), edges=EDGES,
                                     fit_rows="even")
        bare = compute_corrections(pt, edges=EDGES, fit_rows="even")
    # without the mask the extended source drags the slices it covers (by several %)
    assert truth_error(masked) < 0.0015 and truth_error(bare) > 0.01
    corr = out_dir / "corrections.fits"
    if not corr.exists():
        pytest.fail("run after test_selfcal_brings_slice_levels_below_0p2_percent")
    merged = merge_autocal_factors([str(corr), str(corr)])
    with fits.open(corr) as hdul:
        t = hdul["AUTOCAL_FACTORS"].data
        present = t["npts"] > 0  # MPDAF turns slices without points into NaN
        np.testing.assert_allclose(merged["corr"][present], t["corr"][present])
        assert np.all(np.isnan(merged["corr"][~present]))


def test_selfcal_refuses_sky_subtracted_table():
    path, _, _ = table(nrows=60_000, skysub=True)
    with PixTable(path) as pt, pytest.raises(InputError, match="sky-subtracted"):
        compute_corrections(pt)

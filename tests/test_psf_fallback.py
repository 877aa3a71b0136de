"""The fallback PSF (``--fwhm-fallback``, issue 17): a PSF for cubes that give none, which never
replaces one they give.

Policy: ``--fwhm`` > the cube's FSF keywords > ``--psf-star`` > fitted on the field's stars >
``--fwhm-fallback`` > none.  A cube with FSF keywords keeps its PSF (the MUSE_PSF spectra of a run
with the option are those of a run without it); a cube with neither keywords nor stars (the
workflow's cut of mpdaf's Abell 478 minicube) gets exactly the spectra of ``--fwhm`` with the same
value, and every report of the PSF says it is the fallback; ``--fwhm`` still wins over everything.
"""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import TEST_DATA, run_main
from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import ParameterError
from ifu_extract.psf import DEFAULT_BETA, resolve_psf
from ifu_extract.sourcefile import read_source_spectrum

#: The workflow's test data: mpdaf's minicube cut to 36 channels (no FSF keywords, no star).
WF_CUBE, WF_CATALOG = TEST_DATA / "wf_cube.fits", TEST_DATA / "wf_catalog.txt"
TRUE_FWHM = (0.85, 0.60)  # arcsec, the synthetic cube's FSF keywords at its first and last channel


def _spectra(path) -> dict:
    """``{EXTNAME: data}`` of every SPE_* extension of a Source file."""
    with fits.open(path) as hdul:
        return {h.name: np.array(h.data) for h in hdul if h.name.startswith("SPE_")}


def _summary(out) -> Table:
    return Table.read(out / "summary.tsv", format="ascii.tab")


def _run(capfd, out, cube, catalog, *options):
    res = run_main(["run", cube, catalog, "-o", out, "--no-plots", *options], capfd)
    assert res.exit_code == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def fsf_field(tmp_path_factory):
    """A synthetic cube WITH MUSE FSF keywords (FWHM 0.85 -> 0.60"): a star and a galaxy."""
    base = tmp_path_factory.mktemp("fallback")
    wave = 4750.0 + 1.25 * np.arange(120)
    srcs = [synth.SynthSource("star", 12.3, 13.6, synth.continuum_spectrum(wave, 60.0, 0.2)),
            synth.SynthSource("gal", 27.5, 26.0, synth.continuum_spectrum(wave, 40.0, -0.1),
                              kind="sersic", re_arcsec=0.6, n=1.0)]
    data, var, dq, hdr, truth = synth.make_cube(srcs, shape=(120, 40, 40), fwhm=TRUE_FWHM, sigma=1.0, seed=5)
    path = base / "fsf.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)
    cat = base / "cat.txt"
    cat.write_text("ID RA DEC\n" + "".join(f"{s.id} {truth.ra[s.id]:.8f} {truth.dec[s.id]:.8f}\n" for s in srcs))
    return path, cat, truth


# ------------------------------------------------------------------------------- the policy
def test_policy_fallback_only_when_the_cube_gives_none(fsf_field):
    """resolve_psf: the keywords win over the fallback; without keywords or stars the fallback is
    the PSF --fwhm would give (same profile, FWHM and beta), its source 'fallback'; --fwhm wins
    over both; the value is checked like --fwhm's."""
    path, _, _ = fsf_field
    with open_cube(path) as c:
        own = resolve_psf(c)
        with_fallback = resolve_psf(c, fallback_fwhm=0.5)
        assert own.source == with_fallback.source == "header"
        assert with_fallback == own
        given = resolve_psf(c, fwhm=0.6, fallback_fwhm=0.9)
        assert given.source == "given" and np.allclose(given.fwhm(c.wave), 0.6)
    with open_cube(WF_CUBE) as c:
        details: dict = {}
        assert resolve_psf(c) is None  # the cube gives no PSF (no keywords, no usable star)
        fb = resolve_psf(c, fallback_fwhm=0.75, details=details)
        ref = resolve_psf(c, fwhm=0.75)
        assert fb.source == "fallback" and ref.source == "given"
        assert (fb.kind, fb.fwhm_coeffs, fb.beta_coeffs) == (ref.kind, ref.fwhm_coeffs, ref.beta_coeffs)
        assert fb.beta_coeffs == (DEFAULT_BETA,) and "no MUSE FSF keywords" in details["message"]
        assert resolve_psf(c, fwhm=0.6, fallback_fwhm=0.75).source == "given"
        assert resolve_psf(c, fallback_fwhm=0.75, required=True).source == "fallback"  # deblend's call
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(ParameterError):
                resolve_psf(c, fallback_fwhm=bad)


# ------------------------------------------------------------------- a cube with FSF keywords
def test_cube_with_fsf_keywords_keeps_its_psf(fsf_field, tmp_path, capfd):
    """run --fwhm-fallback 0.5 on a cube with FSF keywords: MUSE_PSF is the spectrum of a run
    without the option (PSFSRC 'header', median FWHM the keywords', not 0.5), the masks' FWHM is
    the header's, no psf.fits, no note of a fallback."""
    path, cat, truth = fsf_field
    plain, fallback = tmp_path / "plain", tmp_path / "fallback"
    _run(capfd, plain, path, cat, "--no-detect", "--segmap", _segmap(tmp_path, path, truth))
    res = _run(capfd, fallback, path, cat, "--no-detect", "--segmap", tmp_path / "seg.fits",
               "--fwhm-fallback", "0.5")
    assert "--fwhm-fallback" not in res.stderr and "psf         fallback" not in res.stderr
    true_median = float(np.median(truth.fwhm_arcsec))
    for sid in ("star", "gal"):
        src = fallback / "sources" / f"{sid}.fits"
        hdr = fits.getheader(src, "SPE_MUSE_PSF_DATA")
        assert hdr["PSFSRC"] == "header"
        assert fits.getheader(src)["PSFFWHM"] == pytest.approx(true_median, abs=0.01)
        _, flux, var, *_ = read_source_spectrum(src, "MUSE_PSF")
        _, flux0, var0, *_ = read_source_spectrum(plain / "sources" / f"{sid}.fits", "MUSE_PSF")
        np.testing.assert_array_equal(flux, flux0)
        np.testing.assert_array_equal(var, var0)
    masks = fits.getheader(fallback / "masks.fits")
    assert masks["FWHMSRC"] == "header" and masks["FWHM"] == pytest.approx(true_median, abs=0.01)
    assert not (fallback / "psf.fits").exists()
    assert not any("fallback" in str(n) for n in _summary(fallback)["NOTES"])


def _segmap(tmp_path, path, truth):
    """A segmentation map of discs of 4 spaxels around the synthetic sources (no detection)."""
    with open_cube(path) as c:
        hdr = c.wcs.to_header()
        ny, nx = c.ny, c.nx
    yy, xx = np.mgrid[:ny, :nx]
    seg = np.zeros((ny, nx), np.int32)
    for k, s in enumerate(truth.sources, start=1):
        seg[(xx - s.x) ** 2 + (yy - s.y) ** 2 <= 16] = k
    out = tmp_path / "seg.fits"
    fits.PrimaryHDU(seg, hdr).writeto(out, overwrite=True)
    return out


# ------------------------------------------------------- a cube with no keywords and no star
def test_fallback_gives_the_spectra_of_fwhm_and_says_it(tmp_path, capfd):
    """The minicube cut (no keywords, no star): run --fwhm-fallback 0.75 gives every spectrum and
    summary value of run --fwhm 0.75, but MUSE_PSF says PSFSRC 'fallback', every object's NOTES
    say it, masks.fits says FWHMSRC 'fallback', psf.fits is written with PSFSRC 'fallback' (FSF
    keywords mpdaf reads as 0.75", and why the cube gave none, without its path), and the log
    says it."""
    from mpdaf.MUSE import FSFModel

    given, fallback = tmp_path / "given", tmp_path / "fallback"
    _run(capfd, given, WF_CUBE, WF_CATALOG, "--fwhm", "0.75")
    res = _run(capfd, fallback, WF_CUBE, WF_CATALOG, "--fwhm-fallback", "0.75")
    assert "psf         fallback (moffat): FWHM 0.750" in res.stderr and "MUSE_PSF not computed" not in res.stderr
    sg, sf = _summary(given), _summary(fallback)
    assert list(sg["ID"]) == list(sf["ID"])
    for col in sg.colnames:
        if col != "NOTES":
            assert list(sg[col]) == list(sf[col]), col
    for ng, nf in zip(sg["NOTES"], sf["NOTES"]):
        assert "fallback FWHM 0.75" in str(nf) and "fallback" not in str(ng)
    n_psf = 0
    for name in sf["FILE"]:
        a, b = _spectra(given / name), _spectra(fallback / name)
        assert sorted(a) == sorted(b)
        for ext in a:
            np.testing.assert_array_equal(a[ext], b[ext], err_msg=f"{name} {ext}")
        assert fits.getheader(given / name, "SPE_MUSE_PSF_DATA")["PSFSRC"] == "given"
        assert fits.getheader(fallback / name, "SPE_MUSE_PSF_DATA")["PSFSRC"] == "fallback"
        n_psf += 1
    assert n_psf == len(sf) > 0
    masks = fits.getheader(fallback / "masks.fits")
    assert masks["FWHMSRC"] == "fallback" and masks["FWHM"] == pytest.approx(0.75)
    assert fits.getheader(given / "masks.fits")["FWHMSRC"] == "given"
    assert not (given / "psf.fits").exists()
    prim = fits.getheader(fallback / "psf.fits")
    assert prim["PSFSRC"] == "fallback" and prim["NSTARS"] == 0
    assert "no MUSE FSF keywords" in prim["PSFWHY"] and "/" not in prim["PSFWHY"]  # no file path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_cube(WF_CUBE) as c:
            lam = c.wave
        assert np.allclose(FSFModel.read(prim, pixstep=0.2).get_fwhm(lam), 0.75, atol=1e-6)


def test_deblend_takes_the_fallback(tmp_path, capfd):
    """deblend on the cube without a PSF: stops without one; with --fwhm-fallback 0.75 its
    DEBLEND spectra are those of --fwhm 0.75, PSFSRC 'fallback'."""
    res = run_main(["mask", WF_CUBE, WF_CATALOG, "-o", tmp_path / "masks.fits", "--fwhm-fallback", "0.75"], capfd)
    assert res.exit_code == 0, res.stderr
    assert fits.getheader(tmp_path / "masks.fits")["FWHMSRC"] == "fallback"
    masks = ["--masks", tmp_path / "masks.fits"]
    res = run_main(["deblend", WF_CUBE, WF_CATALOG, "-o", tmp_path / "none", *masks], capfd)
    assert res.exit_code == 1 and "--fwhm" in res.stderr
    runs = {}
    for name, opt in (("given", "--fwhm"), ("fallback", "--fwhm-fallback")):
        res = run_main(["deblend", WF_CUBE, WF_CATALOG, "-o", tmp_path / name, *masks, opt, "0.75"], capfd)
        assert res.exit_code in (0, 1), res.stderr  # 1: no object deblended (checked below)
        runs[name] = Table.read(tmp_path / name / "deblend.tsv", format="ascii.tab")
    files = [f for f in runs["fallback"]["FILE"] if str(f) not in ("", "--")]
    assert files and list(runs["given"]["FILE"]) == list(runs["fallback"]["FILE"])
    for f in files:
        a = fits.getdata(tmp_path / "given" / f, "SPE_DEBLEND_DATA")
        b = fits.getdata(tmp_path / "fallback" / f, "SPE_DEBLEND_DATA")
        np.testing.assert_array_equal(a, b)
        assert fits.getheader(tmp_path / "fallback" / f, "SPE_DEBLEND_DATA")["PSFSRC"] == "fallback"


def test_fwhm_wins_over_everything(fsf_field, tmp_path, capfd):
    """run --fwhm 0.6 --fwhm-fallback 0.9 on a cube with FSF keywords: the PSF is the given 0.6"
    (PSFSRC 'given', masks FWHMSRC 'given'), and MUSE_PSF is that of run --fwhm 0.6."""
    path, cat, truth = fsf_field
    seg = _segmap(tmp_path, path, truth)
    both, alone = tmp_path / "both", tmp_path / "alone"
    _run(capfd, both, path, cat, "--no-detect", "--segmap", seg, "--fwhm", "0.6", "--fwhm-fallback", "0.9")
    _run(capfd, alone, path, cat, "--no-detect", "--segmap", seg, "--fwhm", "0.6")
    for sid in ("star", "gal"):
        src = both / "sources" / f"{sid}.fits"
        assert fits.getheader(src, "SPE_MUSE_PSF_DATA")["PSFSRC"] == "given"
        assert fits.getheader(src)["PSFFWHM"] == pytest.approx(0.6)
        np.testing.assert_array_equal(_spectra(src)["SPE_MUSE_PSF_DATA"],
                                      _spectra(alone / "sources" / f"{sid}.fits")["SPE_MUSE_PSF_DATA"])
    assert fits.getheader(both / "masks.fits")["FWHMSRC"] == "given"


@pytest.mark.parametrize("verb,value", [("mask", "0"), ("extract", "-0.5"), ("deblend", "11"), ("run", "0")])
def test_fwhm_fallback_bounds_are_fwhms(verb, value, tmp_path, capfd):
    """The option has --fwhm's bounds in every verb (a usage error naming the bad value, exit 2)."""
    args = {"mask": ["-o", tmp_path / "m.fits"], "extract": ["--masks", tmp_path / "m.fits", "-o", tmp_path],
            "deblend": ["-o", tmp_path], "run": ["-o", tmp_path / "r"]}[verb]
    res = run_main([verb, WF_CUBE, WF_CATALOG, *args, "--fwhm-fallback", value], capfd)
    assert res.exit_code == 2 and "Invalid value for '--fwhm-fallback'" in res.stderr, res.stderr

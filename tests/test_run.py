"""The run pipeline: run.toml resolution, catalogue merging, outputs of the chain."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main
from ifu_extract.catalog import merge_catalogs, read_catalog


def test_merge_catalogs_catalog_wins(tmp_path):
    cat = tmp_path / "c.txt"
    cat.write_text("ID RA DEC Z\n7 150.0 2.0 0.5\n9 150.001 2.0 --\n")
    table = read_catalog(cat)
    det = Table({"RA": [150.00001, 150.002, 150.003], "DEC": [2.00001, 2.0, 2.001]})
    merged = merge_catalogs(table, det, radius_arcsec=0.6)
    # The first detection is 0.05" from object 7: it is that object.
    assert list(merged["ID"]) == ["7", "9", "10", "11"]
    assert list(merged["SOURCE"]) == ["catalog", "catalog", "detect", "detect"]
    assert merged["Z"][0] == pytest.approx(0.5) and np.ma.is_masked(merged["Z"][2])


def test_merge_catalogs_text_ids(tmp_path):
    cat = tmp_path / "c.txt"
    cat.write_text("ID RA DEC\ngal_a 150.0 2.0\n")
    merged = merge_catalogs(read_catalog(cat), Table({"RA": [150.01], "DEC": [2.0]}), 0.6)
    assert list(merged["ID"]) == ["gal_a", "D1"]


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory, point_field):
    path, truth = point_field
    base = tmp_path_factory.mktemp("run")
    cfg = base / "run.toml"
    cfg.write_text("[detect]\nthresh = 2.0\n\n[mask]\nsize = 3.0\n\n[extract]\naperture = [0.4, 0.8]\n"
                   "no-skysub = true\n")
    return path, truth, base, cfg


def test_run_toml_and_cli_precedence(synth_run, capfd):
    path, truth, base, cfg = synth_run
    out = base / "out"
    res = run_main(["run", path, "-o", out, "--config", cfg, "--aperture", "0.6", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    summary = Table.read(out / "summary.tsv", format="ascii.tab")
    assert len(summary) == 3 and all(str(s).startswith(("ok", "matched")) for s in summary["STATUS"])
    with fits.open(out / summary["FILE"][0]) as src:
        names = [h.name for h in src]
        # --aperture on the command line wins over [extract] aperture; no-skysub from the file.
        assert "SPE_MUSE_APER_0.6_DATA" in names and "SPE_MUSE_APER_0.4_DATA" not in names
        assert not any(n.endswith("_SKYSUB_DATA") for n in names)
        # [mask] size = 3.0 arcsec -> 15 x 15 spaxel stamps.
        assert src["IMA_MASK_UNION_DATA"].data.shape == (15, 15)
    # Every injected source was detected at its position: point sources within 0.05", the
    # faint inclined exponential disk (S/N ~ 4 per spaxel at its peak) within 0.2".
    cat = Table.read(out / "catalog.tsv", format="ascii.tab")
    for src in truth.sources:
        d = np.hypot((cat["RA"] - truth.ra[src.id]) * np.cos(np.radians(truth.dec[src.id])),
                     cat["DEC"] - truth.dec[src.id])
        assert d.min() * 3600 < (0.05 if src.kind == "point" else 0.2), src.id


def test_run_toml_bad_key(synth_run, capfd, tmp_path):
    path, _, _, _ = synth_run
    bad = tmp_path / "bad.toml"
    bad.write_text("[extract]\napertures_typo = 1\n")
    res = run_main(["run", path, "-o", tmp_path / "o", "--config", bad], capfd)
    assert res.exit_code == 1
    assert len(res.err_lines) == 1 and "unknown option 'apertures_typo'" in res.stderr and str(bad) in res.stderr


def test_run_toml_bad_value(synth_run, capfd, tmp_path):
    path, _, _, _ = synth_run
    bad = tmp_path / "bad.toml"
    bad.write_text("[detect]\nthresh = -2\n")
    res = run_main(["run", path, "-o", tmp_path / "o", "--config", bad], capfd)
    assert res.exit_code == 1 and "bad value for 'thresh'" in res.stderr


def test_run_full_chain_on_udf_mosaic(mosaic, tmp_path, capfd):
    """contsub -> detect + line scan -> mask -> extract -> xcorr -> deblend on two touching UDF
    galaxies (real MUSE data with FSF keywords)."""
    from mpdaf.sdetect import Source

    out = tmp_path / "mos"
    res = run_main(["run", mosaic, "-o", out, "--contsub", "--xcor", "--deblend", "--line-scan",
                    "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    summary = Table.read(out / "summary.tsv", format="ascii.tab")
    assert len(summary) >= 2 and all(bool(f) for f in summary["FILE"])
    cat = Table.read(out / "catalog.tsv", format="ascii.tab")
    for row in summary:
        src = Source.from_file(str(out / row["FILE"]))
        assert {"MUSE_TOT", "MUSE_PSF", "XCOR", "DEBLEND"} <= set(src.spectra), row["ID"]
        assert "XCOR" in src.images
    emitters = cat[np.asarray(cat["ORIGIN"]).astype(str) == "linescan"] if "ORIGIN" in cat.colnames else cat[:0]
    for row in emitters:
        src = Source.from_file(str(out / "sources" / f"{row['ID']}.fits"))
        assert "MUSE_NB" in src.spectra
        lam = float(src.header["LINEWAVE"])
        sp = src.spectra["MUSE_NB"]
        wave = sp.wave.coord()
        # The emitter's line is where the scan found it: the NB spectrum peaks within 5 A of it.
        near = np.abs(wave - lam) < 15
        assert abs(wave[near][np.nanargmax(sp.data.filled(np.nan)[near])] - lam) <= 5.0
    assert (out / "contsub.fits").exists() and (out / "xcorr.tsv").exists() and (out / "deblend.tsv").exists()


def test_detect_line_scan_cli(mosaic, tmp_path, capfd):
    out = tmp_path / "det.tsv"
    res = run_main(["detect", mosaic, "-o", out, "--line-scan", "--line-images", tmp_path / "nb.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    cat = Table.read(out, format="ascii.tab")
    assert "LINE_WAVE" in cat.colnames and "ORIGIN" in cat.colnames
    with fits.open(tmp_path / "nb.fits") as nb:
        names = [h.name for h in nb]
    n_emit = int((np.asarray(cat["ORIGIN"]).astype(str) == "linescan").sum())
    assert sum(n.startswith("NB_") and not n.endswith("_STAT") for n in names) >= n_emit
    # --line-scan on an image is a usage error.
    res = run_main(["detect", tmp_path / "nb.fits", "-o", tmp_path / "x.tsv", "--line-scan"], capfd)
    assert res.exit_code in (1, 2) and "Traceback" not in res.stderr


# ------------------------------------------------------------------ run's options and its plan
class _Stop(Exception):
    """Raised by a patched step: the test has what it wanted to see."""


def _request(args, monkeypatch, **env):
    from ifu_extract.commands import run as run_cmd

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    seen = {}
    monkeypatch.setattr(run_cmd, "run_run", lambda req: seen.setdefault("req", req))
    from click.testing import CliRunner

    res = CliRunner().invoke(run_cmd.cmd, [str(a) for a in args])
    return res, seen.get("req")


def test_run_options_are_the_verbs_options(monkeypatch, tmp_path):
    """run's options that set a verb's parameter are that verb's option: same bounds (no drift),
    and the value reaches every step that takes it."""
    from ifu_extract.commands.extract import cmd as extract_cmd
    from ifu_extract.commands.run import cmd as run_cmd

    mine = {p.name: p for p in run_cmd.params}
    theirs = {p.name: p for p in extract_cmd.params}
    for name in ("fwhm", "beta", "apertures", "wave_range", "threads"):
        assert repr(mine[name].type) == repr(theirs[name].type), name
    res, _ = _request(["c.fits", "-o", tmp_path / "o", "--beta", "0.5"], monkeypatch)
    assert res.exit_code == 2 and "0.5 is not in the range x>1" in res.output
    res, req = _request(["c.fits", "-o", tmp_path / "o", "--fwhm", "0.9", "--threads", "3",
                         "--contsub", "--deblend"], monkeypatch)
    assert res.exit_code == 0, res.output
    plan = req.plan
    assert plan.mask.fwhm == plan.extract.fwhm == plan.deblend.fwhm == 0.9
    assert plan.threads == plan.extract.threads == plan.report.threads == 3
    assert req.given["mask"] == {"fwhm": 0.9}


def test_run_toml_is_the_verbs_default_map(monkeypatch, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[detect]\nthresh = 2.5\nback-mask-sources = false\n\n[contsub]\ndegree = 3\n"
                   "\n[extract]\naperture = [0.4]\n")
    res, req = _request(["c.fits", "-o", tmp_path / "o", "--config", cfg, "--contsub",
                         "--aperture", "0.7"], monkeypatch, GALAXY_SLOTS="4")
    assert res.exit_code == 0, res.output
    plan = req.plan
    assert plan.detect.thresh == 2.5 and plan.detect.back_mask_sources is False
    assert plan.detect.minarea == 5                      # detect's own default
    assert plan.contsub.degree == 3 and plan.threads == 4
    assert plan.extract.apertures == (0.7,)             # the command line wins over the file


def test_fwhm_reaches_the_line_scan_and_threads_contsub(monkeypatch, tmp_path, point_field):
    """--fwhm is the PSF of the line scan too (it never was), fitted or given once for every
    step; --threads is contsub's number of workers."""
    import ifu_extract.steps.pipeline as pipeline
    from ifu_extract.commands.run import build_request
    from ifu_extract.steps.run import run_run

    cube, _ = point_field
    seen = {}

    def contsub(cube_path, output, *, threads, **kw):
        seen["threads"] = threads
        return _real_contsub(cube_path, output, threads=threads, **kw)

    def scan(cube_path, table, request, *, psf=None, **kw):
        seen["psf"] = psf
        raise _Stop

    _real_contsub = pipeline.run_contsub
    monkeypatch.setattr(pipeline, "run_contsub", contsub)
    monkeypatch.setattr(pipeline, "run_line_scan", scan)
    req = build_request(cube, None, tmp_path / "o", options={"fwhm": 0.9, "threads": 2},
                        flags={"contsub": True, "line_scan": True, "plots": False})
    with pytest.raises(_Stop):
        run_run(req)
    assert seen["threads"] == 2
    assert seen["psf"] is not None and seen["psf"].fwhm(6000.0) == pytest.approx(0.9)


def test_psf_resolved_once_and_given_to_extract(monkeypatch, tmp_path, point_field):
    import ifu_extract.steps.pipeline as pipeline
    from ifu_extract.commands.run import build_request
    from ifu_extract.steps.run import run_run

    cube, _ = point_field
    calls, seen = [], {}
    real = pipeline.resolve_psf

    def resolve(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    def extract(cube_path, catalog, masks, outdir, options, **kw):
        seen["psf"] = options.psf
        raise _Stop

    monkeypatch.setattr(pipeline, "resolve_psf", resolve)
    monkeypatch.setattr(pipeline, "run_extract", extract)
    req = build_request(cube, None, tmp_path / "o", options={"fwhm": 0.9, "beta": 3.0},
                        flags={"plots": False})
    with pytest.raises(_Stop):
        run_run(req)
    assert len(calls) == 1 and calls[0]["fwhm"] == 0.9
    assert seen["psf"].fwhm(6000.0) == pytest.approx(0.9) and seen["psf"].beta(6000.0) == 3.0


def test_merged_in_memory_or_from_the_file_the_same_catalogue(tmp_path):
    """detect --merge-catalog (the Galaxy workflow) merges the detections it has in memory; run
    merges them read back from detections.tsv: the same objects at the same positions, to the
    bit (a position rounded differently moves the exact apertures: other spectra)."""
    from conftest import TEST_DATA
    from ifu_extract.steps.detect import DetectConfig, DetectOutputs, run_detect

    white, cat = TEST_DATA / "gx_white.fits", TEST_DATA / "gx_catalog.txt"
    merged = tmp_path / "merged.tsv"
    run_detect(white, DetectOutputs(str(merged)), DetectConfig(), merge_catalog=cat)
    alone = tmp_path / "detections.tsv"
    run_detect(white, DetectOutputs(str(alone)), DetectConfig())
    step = read_catalog(merged)
    chain = merge_catalogs(read_catalog(cat), read_catalog(alone), 0.6)
    assert list(step["SOURCE"]).count("detect") >= 1          # a detection was added
    assert list(step["ID"]) == list(chain["ID"])
    for col in ("RA", "DEC"):
        assert np.array_equal(np.asarray(step[col], float), np.asarray(chain[col], float)), col

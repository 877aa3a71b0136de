"""The line emitters: merged into catalogues (catalogue IDs win), their narrow-band images
(written, read back) and MUSE_NB spectra (issues 4 and 16)."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ifu_extract.cubeio import open_cube
from ifu_extract.emitters import emitter_image, extract_emitter, merge_emitters
from ifu_extract.linescan import scan_lines
from ifu_extract.psf import psf_from_cube
from ifu_extract.wcsutil import pixel_to_world
from linescan_helpers import EMITTER, LINE, make_cube as _cube


def test_merge_catalog_ids_win(tmp_path):
    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        scan = scan_lines(cube, psf=psf_from_cube(cube))
        ra, dec = pixel_to_world(cube.wcs, np.array([10.2, EMITTER[0] + 1.0]), np.array([30.1, EMITTER[1]]))
        cat = Table({"ID": ["gal", "near"], "RA": ra, "DEC": dec, "STATUS": ["ok", "ok"]})
        merged = merge_emitters(cat, scan.catalog, cube, radius=0.6)
        assert list(merged["ID"]) == ["gal", "near"]          # matched within 0.6": no new row
        assert np.isnan(merged["LINE_WAVE"][0]) and abs(merged["LINE_WAVE"][1] - LINE) < 3
        far = merge_emitters(cat[:1], scan.catalog, cube, radius=0.6)
        assert list(far["ID"]) == ["gal", "L1"] and list(far["ORIGIN"]) == ["catalog", "linescan"]
        assert far["STATUS"][1] == "ok"


def test_scan_catalog_and_emitter_images_round_trip(tmp_path):
    """What ``detect --line-scan`` writes: the merged catalogue and the emitters' narrow-band
    images (WCS, band, variance), which give the same MUSE_NB spectrum when read back."""
    from ifu_extract.emitters import read_emitter_images, scan_catalog, write_emitter_images

    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        psf = psf_from_cube(cube)
        merged, scan = scan_catalog(cube, None, psf=psf)
        assert list(merged["ID"]) == ["L1"] and merged["ORIGIN"][0] == "linescan"
        write_emitter_images(tmp_path / "nb.fits", cube, scan, inputs={"cube": path})
        images = read_emitter_images(tmp_path / "nb.fits")
        assert set(images) == {"L1"}
        img = images["L1"]
        direct = emitter_image(cube, scan.catalog["LBDA"][0], scan.config)
        assert np.allclose(img.data, direct.data, equal_nan=True) and img.var is not None
        assert img.wcs is not None and abs(img.meta["LINEWAVE"][0] - scan.catalog["LBDA"][0]) < 1.3
        from astropy.io import fits
        with fits.open(tmp_path / "nb.fits") as hdul:  # the calibration travels with the images
            h = hdul[0].header
            assert h["SNRTHR"] == scan.threshold and h["SNRMIN"] == 5.0 and h["MAXFALSE"] == 5
            assert h["NFALSE"] == scan.n_false <= 5
        e = scan.catalog[0]
        a = extract_emitter(cube, e["X"], e["Y"], img, psf=psf)
        b = extract_emitter(cube, e["X"], e["Y"], direct, psf=psf)
        assert np.allclose(a.flux, b.flux, equal_nan=True)


def test_merge_into_a_detect_catalogue(tmp_path):
    """A catalogue from ``detect`` (integer IDs, many columns) takes the emitters as new rows."""
    from ifu_extract.detect import detect_sources
    from ifu_extract.image import band_image

    path = tmp_path / "cube.fits"
    _cube(path, seed=4)
    with open_cube(path) as cube:
        det = detect_sources(band_image(cube)).catalog
        scan = scan_lines(cube, psf=psf_from_cube(cube))
        merged = merge_emitters(det, scan.catalog, cube)
    assert len(merged) == len(det) + 1
    assert merged["ID"][-1] == "L1" and merged["ORIGIN"][-1] == "linescan"
    assert [str(v) for v in merged["ID"][:-1]] == [str(v) for v in det["ID"]]
    assert np.isnan(merged["flux"][-1]) and abs(merged["LINE_WAVE"][-1] - LINE) < 3


def test_workflow_chain_gives_runs_emitter_spectra(tmp_path, capfd):
    """The Galaxy workflow's chain ("Find line emitters" on: white light; detect on the cube
    with that white light and the line scan; mask; extract with --line-images) gives the
    detections of ``detect WHITE`` and the catalogue and the emitter's ``MUSE_NB`` spectrum
    that ``run --line-scan`` gives (one home: extract's --line-images)."""
    from conftest import run_main

    cube = tmp_path / "cube.fits"
    _cube(cube, seed=4)
    out = tmp_path / "run"
    res = run_main(["run", cube, "-o", out, "--line-scan", "--fwhm", "0.7", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    steps = [["image", cube, "-o", tmp_path / "white.fits"],
             ["detect", tmp_path / "white.fits", "-o", tmp_path / "det.tsv"],
             ["detect", cube, "--white", tmp_path / "white.fits", "-o", tmp_path / "cat.tsv",
              "--segmap", tmp_path / "seg.fits", "--line-scan", "--line-fwhm", "0.7",
              "--line-images", tmp_path / "nb.fits"],
             ["mask", cube, tmp_path / "cat.tsv", "--segmap", tmp_path / "seg.fits", "-o", tmp_path / "masks.fits",
              "--fwhm", "0.7"],
             ["extract", cube, tmp_path / "cat.tsv", "--masks", tmp_path / "masks.fits", "-o", tmp_path / "ex",
              "--fwhm", "0.7", "--line-images", tmp_path / "nb.fits"]]
    for args in steps:
        res = run_main(args, capfd)
        assert res.exit_code == 0, (args[0], res.stderr)
    det = Table.read(tmp_path / "det.tsv", format="ascii.tab")
    res = run_main(["detect", cube, "--white", tmp_path / "white.fits", "-o", tmp_path / "det2.tsv"], capfd)
    assert res.exit_code == 0 and "(cube," in res.stderr
    det2 = Table.read(tmp_path / "det2.tsv", format="ascii.tab")
    assert list(det["ID"]) == list(det2["ID"])
    assert np.allclose(det["x"], det2["x"]) and np.allclose(det["RA"], det2["RA"])
    cat = Table.read(tmp_path / "cat.tsv", format="ascii.tab")
    emit = [str(i) for i, o in zip(cat["ID"], cat["ORIGIN"]) if str(o) == "linescan"]
    assert emit == ["L1"]
    runcat = Table.read(out / "catalog.tsv", format="ascii.tab")
    assert list(cat["ID"]) == list(runcat["ID"]) and np.allclose(cat["RA"], runcat["RA"])
    with fits.open(out / "sources" / "L1.fits") as a, fits.open(tmp_path / "ex" / "sources" / "L1.fits") as b:
        # detect's catalogue has RA/DEC to 1e-7 deg (0.4 mas), run's in full: float32 rounding.
        for ext in ("SPE_MUSE_NB_DATA", "SPE_MUSE_NB_STAT"):
            scale = np.nanmax(np.abs(a[ext].data))
            assert np.allclose(a[ext].data, b[ext].data, equal_nan=True, rtol=1e-6, atol=1e-6 * scale), ext
    with fits.open(tmp_path / "ex" / "sources" / f"{det['ID'][0]}.fits") as c:
        assert "SPE_MUSE_NB_DATA" not in c               # not an emitter: no MUSE_NB
    # --white stands for a cube's white light: on an image input, or from another cube, refused.
    res = run_main(["detect", tmp_path / "white.fits", "--white", tmp_path / "white.fits",
                    "-o", tmp_path / "x.tsv"], capfd)
    assert res.exit_code == 1 and "is not a cube" in res.stderr and "--white" in res.stderr
    other = tmp_path / "other.fits"
    _cube(other, seed=5)
    res = run_main(["detect", other, "--white", tmp_path / "white.fits", "-o", tmp_path / "y.tsv"], capfd)
    assert res.exit_code == 1 and "white-light image" in res.stderr and not (tmp_path / "y.tsv").exists()


def test_line_scan_off_writes_files_holding_no_line(tmp_path, capfd):
    """``detect --no-line-scan --lines --line-images`` (the workflow's line-scan switch off):
    the catalogue of ``detect`` without the scan, a line table with no row and an images file
    with no image (``LINESCAN = F``), from which extract adds no ``MUSE_NB`` and gives the
    spectra it gives without ``--line-images``; without --line-scan or --no-line-scan the line
    files are refused, and a scan's own files say ``LINESCAN = T``."""
    from conftest import run_main

    cube = tmp_path / "cube.fits"
    _cube(cube, seed=4)
    res = run_main(["detect", cube, "-o", tmp_path / "plain.tsv"], capfd)
    assert res.exit_code == 0, res.stderr
    res = run_main(["detect", cube, "-o", tmp_path / "cat.tsv", "--segmap", tmp_path / "seg.fits",
                    "--no-line-scan", "--lines", tmp_path / "lines.ecsv", "--line-images", tmp_path / "nb.fits",
                    "--fwhm-fallback", "0.7"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "line scan off" in res.stderr
    assert (tmp_path / "cat.tsv").read_bytes() == (tmp_path / "plain.tsv").read_bytes()
    lines = Table.read(tmp_path / "lines.ecsv")
    assert len(lines) == 0 and lines.colnames[:3] == ["LINE_ID", "ID", "RA"]
    assert lines.meta["LINESCAN"] is False
    with fits.open(tmp_path / "nb.fits") as h:
        assert len(h) == 1 and h[0].header["LINESCAN"] is False and h[0].header["NEMIT"] == 0
    res = run_main(["mask", cube, tmp_path / "cat.tsv", "--segmap", tmp_path / "seg.fits",
                    "-o", tmp_path / "masks.fits", "--fwhm", "0.7"], capfd)
    assert res.exit_code == 0, res.stderr
    for name, extra in (("ex", ["--line-images", tmp_path / "nb.fits"]), ("ex0", [])):
        res = run_main(["extract", cube, tmp_path / "cat.tsv", "--masks", tmp_path / "masks.fits",
                        "-o", tmp_path / name,
                        "--fwhm", "0.7", *extra], capfd)
        assert res.exit_code == 0, res.stderr
    ids = [str(i) for i in Table.read(tmp_path / "cat.tsv", format="ascii.tab")["ID"]]
    assert ids
    for i in ids:
        with fits.open(tmp_path / "ex" / "sources" / f"{i}.fits") as a, \
                fits.open(tmp_path / "ex0" / "sources" / f"{i}.fits") as b:
            assert "SPE_MUSE_NB_DATA" not in a
            assert [h.name for h in a] == [h.name for h in b]
            for h in a[1:]:
                if h.data is not None:
                    assert np.array_equal(h.data, b[h.name].data, equal_nan=True), h.name
    res = run_main(["detect", cube, "-o", tmp_path / "x.tsv", "--line-images", tmp_path / "x.fits"], capfd)
    assert res.exit_code == 2 and "--no-line-scan" in res.stderr
    assert not (tmp_path / "x.tsv").exists() and not (tmp_path / "x.fits").exists()
    res = run_main(["detect", cube, "-o", tmp_path / "s.tsv", "--line-scan", "--line-fwhm", "0.7",
                    "--line-images", tmp_path / "s.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    with fits.open(tmp_path / "s.fits") as h:
        assert h[0].header["LINESCAN"] is True and h[0].header["NEMIT"] >= 1

"""The QA report (``ifu-extract report``) and the sky-line table, on real MUSE data.

The output folder is made once per module by the library on mpdaf's minicube (3681 channels,
real sky residuals) with mpdaf's ``cat.txt`` plus one object off the field, which must be listed
as failed.  ``masks.fits`` is kept in the folder, as ``ifu-extract run`` does, so that the report
draws the segmentation.
"""

from __future__ import annotations

import io
import shutil
import time
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from matplotlib import image as mpimg
from PIL import Image

from conftest import run_main
from ifu_extract import catalog_extraction, detect, estimators, masks, psf, skylines
from ifu_extract.catalog import read_catalog
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import ObjectWarning
from ifu_extract.image import band_image
from ifu_extract.report import FIGURES, clear_figure_cache, load_object, plot_spectrum, plot_stamps
from ifu_extract.report.cache import n_kept, png_bytes
from ifu_extract.report.figures import column_samples
from ifu_extract.steps.report import ReportConfig, run_report
from ifu_extract.summary import read_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OFF_FIELD_ID = "99"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def outdir(tmp_path_factory, minicube, muselet_cat) -> Path:
    """An extract output folder on the minicube: 8 objects of cat.txt and one off the field."""
    work = tmp_path_factory.mktemp("report")
    cat_path = work / "cat.txt"
    cat_path.write_text(Path(muselet_cat).read_text().rstrip("\n")
                        + f"\n{OFF_FIELD_ID} 63.5000000 10.6000000 0.1 -- --\n")
    out = work / "out"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        catalog = read_catalog(cat_path)
        with open_cube(minicube) as cube:
            det = detect.detect_sources(band_image(cube))
            seg_path = work / "segmap.fits"
            fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(det.segmap.astype(np.int32),
                                                           cube.wcs.to_header(), name="SEGMAP")]
                         ).writeto(seg_path)
            masks.write_masks(masks.make_masks(cube, catalog, [seg_path]), out / "masks.fits")
        cfg = estimators.ExtractConfig(apertures=(1.0,), psf=psf.PSFModel("moffat", (0.75,), (2.8,)))
        catalog_extraction.extract_catalog(minicube, catalog, out / "masks.fits", out, cfg)
    return out


@pytest.fixture(scope="module")
def reported(outdir):
    """The report of the folder, drawn with two worker processes."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_report(outdir, ReportConfig(threads=2))
    return result, time.perf_counter() - t0


class _Page(HTMLParser):
    """Rows, cells, links and scripts of index.html."""

    def __init__(self):
        super().__init__()
        self.rows, self.heads, self.links, self.scripts, self.stylesheets = [], [], [], [], []
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tbody" and "id" in a:   # one <tbody> per object: data row + figures row
            self._row = {"id": a["id"], "group": a.get("data-group"), "cells": [], "imgs": []}
            self.rows.append(self._row)
        elif tag == "th":
            self.heads.append(a)
        elif tag == "td" and self._row is not None:
            self._cell = {"value": a.get("data-value"), "class": a.get("class"), "text": ""}
            self._row["cells"].append(self._cell)
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "img":
            self.links.append(a["src"])
            if self._row is not None:
                self._row["imgs"].append(a["src"])
        elif tag == "script":
            self.scripts.append(a)
        elif tag == "link":
            self.stylesheets.append(a)

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tbody":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _page(outdir) -> _Page:
    return _page_file(Path(outdir) / "index.html")


def _page_file(path) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


# ----------------------------------------------------------------------------- index page
def test_index_lists_every_row_with_status_and_working_links(outdir, reported):
    result, _ = reported
    _, rows = read_summary(outdir / "summary.tsv")
    assert len(rows) == 9 and result.n_objects == 9
    page = _page(outdir)
    assert [r["id"] for r in page.rows] == [f"obj-{r['ID']}" for r in rows]  # catalogue order
    for row, html_row in zip(rows, page.rows):
        status_cell = next(c for c in html_row["cells"] if c["class"] == "status")
        assert status_cell["text"] == row["STATUS"]
        if row["FILE"]:
            assert html_row["imgs"] == [f"qa/{row['ID']}_stamps.png", f"qa/{row['ID']}_spectrum.png"]
    failed = next(r for r in page.rows if r["id"] == f"obj-{OFF_FIELD_ID}")
    off = next(r for r in rows if r["ID"] == OFF_FIELD_ID)
    assert off["FILE"] == "" and failed["group"] == "failed" and failed["imgs"] == []
    # Every link and image resolves to a file of the folder; nothing is fetched from elsewhere.
    assert page.links
    for href in page.links:
        assert "://" not in href and not href.startswith("/")
        assert (outdir / href).is_file(), href
    assert page.stylesheets == [] and all("src" not in s for s in page.scripts)
    # The inline scripts: the base for Galaxy's .../display URL (no trailing slash), the table's.
    assert len(page.scripts) == 2


def test_index_is_sortable_by_snr_and_status(outdir, reported):
    page = _page(outdir)
    names = [h.get("title", "") for h in page.heads]
    sort = {h.get("title", ""): h.get("data-sort") for h in page.heads}
    snr_col = next(i for i, n in enumerate(names) if n.startswith("median S/N"))
    status_col = next(i for i, n in enumerate(names) if n.startswith("ok, the fallback"))
    assert sort[names[snr_col]] == "num" and sort[names[status_col]] == "text"
    _, rows = read_summary(outdir / "summary.tsv")
    for row, html_row in zip(rows, page.rows):
        snr = html_row["cells"][snr_col]["value"]
        if np.isfinite(float(row["SNR_MEDIAN"])):
            assert float(snr) == pytest.approx(float(row["SNR_MEDIAN"]))
        else:
            assert snr == ""       # sorted last by the script
        # Status sorts failed first, then fallbacks, then ok.
        rank = html_row["cells"][status_col]["value"].split(":", 1)[0]
        assert rank == {"failed": "0", "flag": "1", "ok": "2"}[html_row["group"]]


def test_figures_are_pngs_of_fixed_size(outdir, reported):
    result, seconds = reported
    assert result.n_plotted == 8 and result.failures == {}
    assert Path(result.segmap).name == "masks.fits"
    for obj_id, plots in result.plots.items():
        assert set(plots.files) == set(FIGURES)
        for kind, rel in plots.files.items():
            raw = (outdir / rel).read_bytes()
            assert raw.startswith(PNG_MAGIC)
            assert b"Software" not in raw and b"matplotlib" not in raw  # no metadata chunks
            img = mpimg.imread(outdir / rel)
            # stamps: 2 panels (white light, masks) of 2.45 x 2.75 in + 1.45 in of keys; spectrum 10 x 3.9 in; 100 dpi
            assert img.shape[:2] == ((275, 635) if kind == "stamps" else (390, 1000))
            assert img[..., :3].std() > 0.05      # not blank
    # (Speed is in bench/README.md, not asserted here.)
    assert not list((outdir / "qa").glob(".*"))   # no temporary files left


def test_figures_are_deterministic(outdir, tmp_path):
    obj = load_object(outdir / "sources" / "1.fits")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_spectrum(obj, a)
    plot_spectrum(obj, b)
    assert a.read_bytes() == b.read_bytes()
    plot_stamps(obj, a)
    plot_stamps(obj, b)
    assert a.read_bytes() == b.read_bytes()


def test_reused_figures_do_not_depend_on_the_previous_object(outdir, tmp_path):
    """Figures are kept per layout and reused: an object drawn after others (with other
    panels, medium, redshift lines, segmentation) gives the bytes it gives in a fresh process."""
    from ifu_extract.segmap import read_segmap

    seg = read_segmap(outdir / "masks.fits")
    objs = [load_object(p, segmap=seg) for p in sorted((outdir / "sources").glob("*.fits"))]
    first = objs[0]

    def draw(obj, name):
        plot_stamps(obj, tmp_path / f"{name}_stamps.png")
        plot_spectrum(obj, tmp_path / f"{name}_spectrum.png")
        return [(tmp_path / f"{name}_{kind}.png").read_bytes() for kind in FIGURES]

    clear_figure_cache()
    fresh = draw(first, "fresh")
    for k, obj in enumerate(objs[1:]):
        draw(obj, f"other{k}")
    # One layout per figure kind for a whole cube, save the key line (with or without z).
    assert n_kept() <= 4
    odd = load_object(outdir / "sources" / "2.fits")
    odd.medium = "vacuum"
    odd.images["HST_F606W"] = odd.images["MUSE_WHITE"]
    odd.segmap = None
    odd.header["Z"] = 0.3
    draw(odd, "odd")
    assert draw(first, "again") == fresh
    clear_figure_cache()


def test_column_samples_keep_every_extreme_and_gap():
    """The thinned curve covers, in every pixel column, the range of the full one, and breaks
    where it breaks."""
    rng = np.random.default_rng(3)
    n = 3681
    y = rng.normal(0.0, 1.0, n)
    y[1000] = 50.0                       # a one-channel spike and dip
    y[2000] = -40.0
    y[[0, 1, 500, 501, 502, 3000, n - 1]] = np.nan
    px = 70.0 + np.arange(n) * (910.0 / n)          # ~4 channels per pixel column
    keep = column_samples(px, y)
    assert np.all(np.diff(keep) > 0) and keep.size < 0.6 * n
    col = np.floor(px).astype(int)
    for c in np.unique(col):
        full = y[col == c]
        thin = y[keep][col[keep] == c]
        if np.isfinite(full).any():
            assert np.nanmin(thin) == np.nanmin(full) and np.nanmax(thin) == np.nanmax(full)
    assert {1000, 2000} <= set(keep)
    # Every gap is still a gap: a NaN sits between the finite samples on either side.
    for gap in (0, 500, 3000, n - 1):
        assert gap in keep
    for i in (499, 503, 2999, 3001, 2, n - 2):
        assert i in keep                 # the ends of the finite runs
    # Fewer than three channels per column: nothing to thin.
    assert np.array_equal(column_samples(np.arange(10.0), np.ones(10)), np.arange(10))


def test_png_writer_round_trip():
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    data = png_bytes(rgba, 100)
    assert data.startswith(PNG_MAGIC)
    # Chunks: header, resolution, data, end; no text (date, software).
    kinds, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    assert kinds == [b"IHDR", b"pHYs", b"IDAT", b"IEND"]
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB" and img.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    np.testing.assert_array_equal(np.asarray(img), rgba[..., :3])


def test_spectrum_marks_sky_lines_in_range_air_and_vacuum(outdir, tmp_path):
    obj = load_object(outdir / "sources" / "1.fits")
    assert obj.medium == "air"
    info = plot_spectrum(obj, tmp_path / "s.png")
    lo, hi = info.xlim
    assert 4700 < lo < 4750 < 9350 < hi < 9400            # MUSE nominal range, 0.5% margins
    assert info.sky_lines and all(lo <= w <= hi for w in info.sky_lines)
    for line in (5577.338, 6300.304, 5889.950, 8344.602):
        assert line in info.sky_lines
    # Redshifted lines at the catalogue z = 0.086, in air: H-alpha lands near 7127 A.
    assert obj.z == pytest.approx(0.086)
    halpha = skylines.vacuum_to_air(6564.61 * 1.086)
    assert any(abs(w - halpha) < 0.01 for w in info.z_lines)
    assert all(lo <= w <= hi for w in info.z_lines)
    # The same data labelled vacuum get the lines converted to vacuum.
    obj.medium = "vacuum"
    vac = plot_spectrum(obj, tmp_path / "v.png")
    assert len(vac.sky_lines) == len(info.sky_lines)
    np.testing.assert_allclose(vac.sky_lines, skylines.air_to_vacuum(np.array(info.sky_lines)), atol=1e-9)
    assert 5578.8 < min(w for w in vac.sky_lines if w > 5570) < 5579.0


def test_stamps_draw_segmentation_and_masks(outdir, tmp_path):
    from ifu_extract.segmap import read_segmap

    seg = read_segmap(outdir / "masks.fits")
    obj = load_object(outdir / "sources" / "1.fits", segmap=seg)
    assert obj.segmap is not None and obj.segmap.shape == obj.masks["MASK_UNION"].shape
    # Object 1 sits on the big segment of the field: the union mask is that segment.
    assert obj.seglabel > 0
    assert np.array_equal(obj.segmap == obj.seglabel, obj.masks["MASK_UNION"] | (obj.segmap == obj.seglabel))
    info = plot_stamps(obj, tmp_path / "st.png")
    assert info.tag == "MUSE_WHITE,masks" and info.size == (635, 275)
    # A Source with another image (e.g. from xcorr or an ancillary image) gets a third panel.
    obj.images["HST_F606W"] = obj.images["MUSE_WHITE"]
    assert plot_stamps(obj, tmp_path / "st3.png").size == (880, 275)


def test_one_bad_object_does_not_stop_the_report(outdir, tmp_path):
    work = tmp_path / "out"
    shutil.copytree(outdir, work, ignore=shutil.ignore_patterns("qa", "index.html"))
    cols, rows = read_summary(work / "summary.tsv")
    # Keep three rows: a good one, one whose Source file is damaged, the off-field one.
    keep = [rows[0], rows[2], next(r for r in rows if r["ID"] == OFF_FIELD_ID)]
    (work / "summary.tsv").write_text("\t".join(cols) + "\n" + "".join(
        "\t".join(r[c] for c in cols) + "\n" for r in keep))
    bad = work / keep[1]["FILE"]
    bad.write_bytes(bad.read_bytes()[:5000])
    with pytest.warns(ObjectWarning, match=f"object {keep[1]['ID']}: QA figure failed"):
        result = run_report(work, ReportConfig(threads=1))
    assert set(result.failures) == {keep[1]["ID"]}
    assert result.n_plotted == 1
    page = _page(work)
    by_id = {r["id"]: r for r in page.rows}
    assert len(by_id) == 3
    assert len(by_id[f"obj-{keep[0]['ID']}"]["imgs"]) == 2
    bad_row = by_id[f"obj-{keep[1]['ID']}"]
    assert bad_row["imgs"] == []
    assert "figure failed" in next(c for c in bad_row["cells"] if c["class"] == "notes")["text"]


# ----------------------------------------------------------------------------- command line
def test_cli_report_without_plots(outdir, tmp_path, capfd):
    work = tmp_path / "out"
    shutil.copytree(outdir, work, ignore=shutil.ignore_patterns("qa", "index.html"))
    res = run_main(["report", work, "--no-plots", "--title", "Abell 478 <minicube>"], capfd)
    assert res.exit_code == 0, res.stderr
    assert not (work / "qa").exists()
    html = (work / "index.html").read_text()
    assert "<title>Abell 478 &lt;minicube&gt;</title>" in html
    assert "<img" not in html and len(_page(work).rows) == 9


def test_cli_report_from_files_equals_the_folder_report(outdir, reported, tmp_path, capfd):
    """Galaxy's way: the summary and the Source files as files with names that say nothing (the
    rows are matched by the IDs in the headers), the page and its assets where asked.  Same page
    and figures, byte for byte, as the report of the folder; the Source files copied next to the
    figures so that the page's links work."""
    data = tmp_path / "datasets"
    data.mkdir()
    shutil.copy(outdir / "summary.tsv", data / "dataset_1.dat")
    sources = []
    for k, src in enumerate(sorted((outdir / "sources").glob("*.fits")), start=2):
        sources += ["--source", shutil.copy(src, data / f"dataset_{k}.dat")]
    assets = tmp_path / "assets"
    res = run_main(["report", "--summary", data / "dataset_1.dat", *sources, "--html",
                    tmp_path / "page.html", "--assets-dir", assets, "--threads", "2",
                    "--segmap", outdir / "masks.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "page.html").read_bytes() == (outdir / "index.html").read_bytes()
    assert sorted(p.name for p in (assets / "qa").iterdir()) == sorted(p.name for p in (outdir / "qa").iterdir())
    for png in (outdir / "qa").iterdir():
        assert (assets / "qa" / png.name).read_bytes() == png.read_bytes(), png.name
    for src in (outdir / "sources").glob("*.fits"):
        assert (assets / "sources" / src.name).read_bytes() == src.read_bytes()
    assert not list(data.glob("*.png")) and not (data / "qa").exists()   # inputs untouched


def test_cli_report_from_files_lists_a_missing_source(outdir, tmp_path, capfd):
    """A row whose Source file is not among the --source files: listed, its figures failed."""
    first = sorted((outdir / "sources").glob("*.fits"))[0]
    res = run_main(["report", "--summary", outdir / "summary.tsv", "--source", first, "--html",
                    tmp_path / "page.html", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    page = _page_file(tmp_path / "page.html")
    linked = [h for h in page.links if h.startswith("sources/")]
    assert linked == [f"sources/{first.name}"]
    assert (tmp_path / "sources" / first.name).is_file() and len(page.rows) == 9


@pytest.mark.parametrize("case", ["no_summary", "no_folder", "bad_summary", "bad_segmap"])
def test_cli_report_bad_input_is_one_line(tmp_path, capfd, outdir, case):
    target = tmp_path / "folder"
    args = ["report", target]
    if case == "no_summary":
        target.mkdir()
        (target / "sources").mkdir()
    elif case == "bad_summary":
        target.mkdir()
        (target / "summary.tsv").write_text("a\tb\n1\t2\n")
    elif case == "bad_segmap":
        shutil.copytree(outdir, target, ignore=shutil.ignore_patterns("qa", "index.html"))
        (tmp_path / "seg.fits").write_text("not a FITS file")
        args += ["--segmap", tmp_path / "seg.fits"]
    res = run_main(args, capfd)
    assert res.exit_code == 1
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("ifu-extract: error: ")
    assert "Traceback" not in res.stderr
    expected = {"no_summary": "has no summary.tsv", "no_folder": "is not a folder",
                "bad_summary": "not an ifu-extract summary", "bad_segmap": "seg.fits"}[case]
    assert expected in res.err_lines[0]
    if target.exists():   # nothing written
        assert not (target / "index.html").exists() and not (target / "qa").exists()


def test_cli_report_usage_errors_exit_2(tmp_path, capfd):
    for args in (["--smooth", "0"], ["--threads", "0"], ["--dpi", "10"]):
        res = run_main(["report", tmp_path, *args], capfd)
        assert res.exit_code == 2 and "usage error" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- sky lines
def test_sky_line_table_and_conversions():
    waves = [line.wave for line in skylines.SKY_LINES]
    assert waves == sorted(waves) and len(set(waves)) == len(waves)
    assert all(4000 < w < 10000 for w in waves)
    # IAU air<->vacuum (Morton 2000): [OI] 5577.338 air = 5578.887 vacuum; round trip to 1e-6 A.
    assert skylines.air_to_vacuum(5577.338) == pytest.approx(5578.887, abs=2e-3)
    grid = np.linspace(3500, 10000, 50)
    np.testing.assert_allclose(skylines.vacuum_to_air(skylines.air_to_vacuum(grid)), grid, atol=1e-6)
    assert skylines.air_to_vacuum(1215.67) == 1215.67     # no conversion in the UV
    sel = skylines.sky_lines(6290, 6370)
    assert [round(s.wave, 3) for s in sel] == [6300.304, 6363.776] and sel[0].label == "[OI] 6300"
    assert all(s.strong for s in skylines.sky_lines(strong_only=True))
    vac = skylines.sky_lines(5578, 5580, medium="vacuum")
    assert len(vac) == 1 and vac[0].species == "[OI]"
    assert skylines.telluric_bands(7600, 7650) == [(7600, 7650, "O2 A")]
    with pytest.raises(ValueError, match="medium"):
        skylines.sky_lines(medium="water")

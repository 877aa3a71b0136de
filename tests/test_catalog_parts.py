"""``ifu-extract split`` / ``merge``: a catalogue processed in parts gives the same outputs as one run.

A small synthetic cube (80 channels, 40 x 40 spaxels, seven sources, two of them blended) is
extracted once whole and once in three parts; the masks are built once on the whole catalogue
(they depend on the neighbours), as the module documentation of :mod:`ifu_extract.catalog_parts`
says.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import run_main, write_synth
from ifu_extract import catalog_extraction, detect, estimators, masks, psf, synth
from ifu_extract.catalog import read_catalog, write_catalog
from ifu_extract.catalog_parts import split_catalog
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import ObjectWarning
from ifu_extract.image import band_image
from ifu_extract.steps.merge import MergeConfig, run_merge
from ifu_extract.steps.report import ReportConfig
from ifu_extract.summary import read_summary
from ifu_extract.wcsutil import pixel_to_world

POSITIONS = {"11": (8.2, 9.1), "12": (30.5, 8.7), "13": (20.3, 20.6), "14": (23.4, 21.9),
             "15": (9.6, 31.2), "16": (31.1, 30.4), "17": (19.8, 33.5)}
OFF_FIELD = "20"


def _extract(cube, catalog_path, masks_path, outdir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = estimators.ExtractConfig(apertures=(0.6,), psf=psf.PSFModel("moffat", (0.7,), (2.8,)))
        return catalog_extraction.extract_catalog(cube, read_catalog(catalog_path), masks_path, outdir, cfg)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """Cube, AutoSpec-style catalogue (comment and unit lines), whole-catalogue masks, one run."""
    work = tmp_path_factory.mktemp("chunks")
    wave = 4750.0 + 1.25 * np.arange(80)
    srcs = [synth.SynthSource(i, x, y, synth.continuum_spectrum(wave, 20.0 + 5 * k, 0.1))
            for k, (i, (x, y)) in enumerate(POSITIONS.items())]
    cube = work / "cube.fits"
    write_synth(cube, srcs, shape=(80, 40, 40), sigma=0.5, seed=3)
    with open_cube(cube) as c:
        wcs = c.wcs
        det = detect.detect_sources(band_image(c))
        seg = work / "segmap.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(det.segmap.astype(np.int32), wcs.to_header(),
                                                       name="SEGMAP")]).writeto(seg)
    lines = ["#ID RA DEC", "# (int) (deg) (deg)", "# synthetic field for the split/merge tests"]
    for obj_id, (x, y) in POSITIONS.items():
        ra, dec = pixel_to_world(wcs, x, y)
        lines.append(f"{obj_id}   {ra:.8f}  {dec:.8f}")
    lines.insert(6, f"{OFF_FIELD}   {ra + 0.05:.8f}  {dec:.8f}")     # off the field, mid-catalogue
    cat = work / "field.cat"
    cat.write_text("\n".join(lines) + "\n")
    masks_path = work / "masks.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_cube(cube) as c:
            masks.write_masks(masks.make_masks(c, read_catalog(cat), [seg]), masks_path)
    full = work / "full"
    _extract(cube, cat, masks_path, full)
    return {"work": work, "cube": cube, "cat": cat, "masks": masks_path, "full": full}


@pytest.fixture(scope="module")
def parts(field):
    """The catalogue split in three parts (library) and each part extracted on its own."""
    work = field["work"]
    pieces = split_catalog(field["cat"], 3, work / "parts")
    outs = []
    for k, piece in enumerate(pieces, start=1):
        out = work / f"out{k}"
        _extract(field["cube"], piece.path, field["masks"], out)
        outs.append(out)
    return outs


def _spectra(path):
    with fits.open(path) as hdul:
        return {h.name: np.array(h.data) for h in hdul[1:] if h.name.startswith(("SPE_", "IMA_"))}


# ----------------------------------------------------------------------------- split
def test_split_keeps_order_ids_and_text(field, tmp_path, capfd):
    res = run_main(["split", field["cat"], "-n", "3", "-o", tmp_path / "p"], capfd)
    assert res.exit_code == 0, res.stderr
    files = sorted((tmp_path / "p").iterdir())
    assert [f.name for f in files] == ["field_part01.cat", "field_part02.cat", "field_part03.cat"]
    src_lines = field["cat"].read_text().splitlines()
    preamble, rows = src_lines[:3], src_lines[3:]
    got_rows = []
    sizes = []
    for f in files:
        lines = f.read_text().splitlines()
        assert lines[:3] == preamble            # header, unit and comment lines in every part
        got_rows += lines[3:]
        sizes.append(len(lines) - 3)
        assert read_catalog(f).meta["format"] == "autospec"
    assert got_rows == rows                      # the rows' own text, in catalogue order
    assert sizes == [3, 3, 2]
    ids = [i for f in files for i in read_catalog(f)["ID"]]
    assert ids == list(read_catalog(field["cat"])["ID"])


@pytest.mark.parametrize("fmt", ["csv", "fits", "ecsv"])
def test_split_keeps_table_formats(field, tmp_path, fmt):
    table = read_catalog(field["cat"])
    table.remove_column("STATUS")
    table["MAG"] = np.arange(len(table), dtype=float) + 20.0
    src = write_catalog(table, tmp_path / f"cat.{fmt}", fmt)
    pieces = split_catalog(src, 4, tmp_path / "p")
    assert [p.n_rows for p in pieces] == [2, 2, 2, 2]
    assert all(p.path.suffix == f".{fmt}" for p in pieces)
    back = [read_catalog(p.path) for p in pieces]
    assert all(b.meta["format"] == fmt for b in back)
    assert [i for b in back for i in b["ID"]] == list(table["ID"])
    assert np.allclose(np.concatenate([b["MAG"] for b in back]), table["MAG"])
    assert [p.first_id for p in pieces] == [str(table["ID"][k]) for k in (0, 2, 4, 6)]


def test_split_converts_to_tsv(field, tmp_path):
    pieces = split_catalog(field["cat"], 2, tmp_path, output_format="tsv", prefix="chunk")
    assert [p.path.name for p in pieces] == ["chunk_part01.tsv", "chunk_part02.tsv"]
    tab = Table.read(pieces[0].path, format="ascii.tab")
    assert tab.colnames[:3] == ["ID", "RA", "DEC"] and "STATUS" not in tab.colnames
    assert [str(v) for v in tab["ID"]] == ["11", "12", "13", OFF_FIELD]


def test_split_suffix_names_the_parts(field, tmp_path, capfd):
    """--suffix: the parts named for Galaxy's collection (its datatype as the extension)."""
    res = run_main(["split", field["cat"], "-n", "2", "-o", tmp_path / "p", "--output-format", "tsv",
                    "--suffix", ".tabular"], capfd)
    assert res.exit_code == 0, res.stderr
    files = sorted((tmp_path / "p").iterdir())
    assert [f.name for f in files] == ["field_part01.tabular", "field_part02.tabular"]
    assert files[0].read_text().startswith("ID\tRA\tDEC")
    res = run_main(["split", field["cat"], "-n", "2", "-o", tmp_path / "q", "--suffix", "a/b"], capfd)
    assert res.exit_code == 2 and "--suffix" in res.stderr and not (tmp_path / "q").exists()


@pytest.mark.parametrize("args, code, text", [
    (["-n", "9"], 1, "has 8 catalogue rows, fewer than the 9 parts asked"),
    (["-n", "0"], 2, "usage error"),
    (["-n", "2", "--output-format", "xml"], 2, "usage error"),
])
def test_split_bad_parts_is_one_line(field, tmp_path, capfd, args, code, text):
    out = tmp_path / "p"
    res = run_main(["split", field["cat"], *args, "-o", out], capfd)
    assert res.exit_code == code
    assert len(res.err_lines) == 1 and text in res.err_lines[0]
    assert "Traceback" not in res.stderr
    assert not out.exists()                                  # no partial output


def test_split_bad_catalogue(tmp_path, capfd):
    bad = tmp_path / "bad.txt"
    bad.write_text("ID RA DEC\n1 2 3\n1 4 5\n")                # duplicate IDs
    res = run_main(["split", bad, "-n", "2", "-o", tmp_path / "p"], capfd)
    assert res.exit_code == 1 and "duplicate IDs" in res.err_lines[0] and len(res.err_lines) == 1
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- merge
def test_split_extract_merge_equals_one_run(field, parts, tmp_path, capfd):
    merged = tmp_path / "merged"
    res = run_main(["merge", *parts, "-o", merged, "--threads", "2"], capfd)
    assert res.exit_code == 0, res.stderr
    # Same summary, byte for byte (the off-field object included, in catalogue order).
    assert (merged / "summary.tsv").read_text() == (field["full"] / "summary.tsv").read_text()
    _, rows = read_summary(merged / "summary.tsv")
    assert [r["ID"] for r in rows] == ["11", "12", "13", OFF_FIELD, "14", "15", "16", "17"]
    assert next(r for r in rows if r["ID"] == OFF_FIELD)["FILE"] == ""
    # Same spectra and stamps, array for array.
    full_files = sorted(p.name for p in (field["full"] / "sources").glob("*.fits"))
    assert sorted(p.name for p in (merged / "sources").glob("*.fits")) == full_files
    assert len(full_files) == 7
    for name in full_files:
        a, b = _spectra(field["full"] / "sources" / name), _spectra(merged / "sources" / name)
        assert a.keys() == b.keys() and any(k.startswith("SPE_MUSE_PSF") for k in a)
        for key in a:
            assert np.array_equal(a[key], b[key], equal_nan=True), (name, key)
    # One report for all: every row listed, every object drawn.
    html = (merged / "index.html").read_text()
    for r in rows:
        assert f'id="obj-{r["ID"]}"' in html
    pngs = {p.name for p in (merged / "qa").glob("*.png")}
    assert pngs == {f"{r['ID']}_{k}.png" for r in rows if r["FILE"] for k in ("stamps", "spectrum")}


def test_merge_of_files_equals_merge_of_folders(field, parts, tmp_path, capfd):
    """Galaxy's way: each part's summary and all the Source files given as files, with names
    that say nothing and in any order (matched by the IDs in their headers); the report page
    and its assets where asked.  Same merged folder and page as from the folders."""
    data = tmp_path / "datasets"
    data.mkdir()
    args, k = [], 0
    for part in parts:
        k += 1
        args += ["--part-summary", shutil.copy(part / "summary.tsv", data / f"dataset_{k}.dat")]
    for src in sorted((p for part in parts for p in (part / "sources").glob("*.fits")), reverse=True):
        k += 1
        args += ["--part-sources", shutil.copy(src, data / f"dataset_{k}.dat")]
    res = run_main(["merge", *args, "-o", tmp_path / "from_files", "--html", tmp_path / "page.html",
                    "--assets-dir", tmp_path / "page" / "from_folders", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    res = run_main(["merge", *parts, "-o", tmp_path / "from_folders", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    a, b = tmp_path / "from_files", tmp_path / "from_folders"
    assert (a / "summary.tsv").read_bytes() == (b / "summary.tsv").read_bytes()
    names = sorted(p.name for p in (b / "sources").iterdir())
    assert sorted(p.name for p in (a / "sources").iterdir()) == names and len(names) == 7
    for name in names:
        assert (a / "sources" / name).read_bytes() == (b / "sources" / name).read_bytes()
    # (The page's default title names its assets folder, here named as the other.)
    assert (tmp_path / "page.html").read_bytes() == (b / "index.html").read_bytes()
    assert sorted(p.name for p in (tmp_path / "page" / "from_folders" / "sources").iterdir()) == names
    assert not (a / "index.html").exists()


def test_merge_of_files_refuses_two_different_sources_of_one_id(parts, tmp_path, capfd):
    twin = tmp_path / "11.fits"
    shutil.copy(parts[0] / "sources" / "11.fits", twin)
    with fits.open(twin, mode="update") as hdul:
        name = next(h.name for h in hdul if h.name.startswith("SPE_"))
        hdul[name].data = hdul[name].data * 1.01
    res = run_main(["merge", "--part-summary", parts[0] / "summary.tsv", "--part-sources",
                    parts[0] / "sources" / "11.fits", "--part-sources", twin, "-o", tmp_path / "m"],
                   capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1
    assert "ID 11: has two Source files with different results" in res.err_lines[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("case, text", [
    ("orphan", "is the Source file of ID 14, in none of the summary tables"),
    ("unreadable", "is not a readable FITS file"),
])
def test_merge_of_files_refuses_sources_of_no_summary(parts, tmp_path, capfd, case, text):
    if case == "orphan":
        extra = parts[1] / "sources" / "14.fits"
    else:
        extra = tmp_path / "dataset_9.dat"
        extra.write_text("not a FITS file")
    res = run_main(["merge", "--part-summary", parts[0] / "summary.tsv", "--part-sources",
                    parts[0] / "sources" / "11.fits", "--part-sources", extra, "-o", tmp_path / "m"],
                   capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1
    assert text in res.err_lines[0] and str(extra) in res.err_lines[0]
    assert not (tmp_path / "m").exists()


def test_merge_follows_the_catalogue_and_lists_missing_ids(field, parts, tmp_path):
    merged = tmp_path / "merged"
    with pytest.warns(ObjectWarning, match="in no merged output folder"):
        result = run_merge([parts[2], parts[0]], merged,
                           MergeConfig(catalog=field["cat"], link="hardlink",
                                       report_config=ReportConfig(plots=False))).merge
    _, rows = read_summary(merged / "summary.tsv")
    assert [r["ID"] for r in rows] == ["11", "12", "13", OFF_FIELD, "14", "15", "16", "17"]
    missing = [r["ID"] for r in rows if r["STATUS"].startswith("missing")]
    assert missing == result.missing == [OFF_FIELD, "14", "15"]      # the part left out
    assert all(r["FILE"] == "" for r in rows if r["ID"] in missing)
    assert result.n_sources == 5
    src = parts[0] / "sources" / "11.fits"
    assert (merged / "sources" / "11.fits").stat().st_ino == src.stat().st_ino   # hard link
    assert "<img" not in (merged / "index.html").read_text()


def test_merge_keeps_identical_duplicates_once(parts, tmp_path, capfd):
    twin = tmp_path / "twin"
    shutil.copytree(parts[0], twin)
    res = run_main(["merge", parts[0], twin, parts[1], "-o", tmp_path / "m", "--no-report"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "3 IDs found twice with identical results kept once" in res.stderr
    _, rows = read_summary(tmp_path / "m" / "summary.tsv")
    assert [r["ID"] for r in rows] == ["11", "12", "13", OFF_FIELD, "14", "15"]
    assert not (tmp_path / "m" / "index.html").exists()


def _tamper(src, dest, how):
    shutil.copytree(src, dest)
    first = sorted((dest / "sources").glob("*.fits"))[0]
    if how == "cube":
        with fits.open(first, mode="update") as hdul:
            hdul[0].header["CUBECSUM"] = "0123456789abcdef0123456789abcdef"
    elif how == "data":
        with fits.open(first, mode="update") as hdul:
            name = next(h.name for h in hdul if h.name.startswith("SPE_"))
            hdul[name].data = hdul[name].data * 1.01
    return dest


@pytest.mark.parametrize("case, text", [
    ("no_summary", "has no summary.tsv"),
    ("cube", "were made from different cubes"),
    ("data", "with different results"),
    ("same_out", "is also one of the folders to merge"),
    ("out_taken", "is not empty"),
])
def test_merge_bad_inputs_are_one_line(field, parts, tmp_path, capfd, case, text):
    out = tmp_path / "merged"
    inputs = [parts[0], parts[1]]
    if case == "no_summary":
        empty = tmp_path / "empty"
        (empty / "sources").mkdir(parents=True)
        inputs.append(empty)
    elif case == "cube":
        inputs.append(_tamper(parts[2], tmp_path / "other_cube", "cube"))
    elif case == "data":
        inputs.append(_tamper(parts[0], tmp_path / "rerun", "data"))
    elif case == "same_out":
        out = parts[0]
    elif case == "out_taken":
        out = field["full"]
    before = sorted(p.name for p in out.rglob("*")) if out.exists() else None
    res = run_main(["merge", *inputs, "-o", out], capfd)
    assert res.exit_code == 1
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("ifu-extract: error: ")
    assert text in res.err_lines[0] and "Traceback" not in res.stderr
    # Nothing written: a new folder is not created, an existing one is unchanged.
    assert (sorted(p.name for p in out.rglob("*")) if out.exists() else None) == before


def test_merge_failing_late_leaves_nothing(parts, tmp_path, monkeypatch):
    """A failure once writing has begun (here the report's page) removes the merged folder."""
    import ifu_extract.steps.report as step_report

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(step_report, "write_index", broken)
    out = tmp_path / "merged"
    with pytest.raises(OSError):
        run_merge(list(parts), out, MergeConfig(report_config=ReportConfig(plots=False)))
    assert not out.exists()
    out.mkdir()                                       # an empty folder given: kept, emptied
    with pytest.raises(OSError):
        run_merge(list(parts), out, MergeConfig(report_config=ReportConfig(plots=False)))
    assert out.is_dir() and not any(out.iterdir())


def test_merge_usage_errors_exit_2(parts, tmp_path, capfd):
    for args in (["merge", "-o", tmp_path / "m"], ["merge", parts[0], "-o", tmp_path / "m", "--link", "soft"]):
        res = run_main(args, capfd)
        assert res.exit_code == 2 and "usage error" in res.stderr
        assert not (tmp_path / "m").exists()

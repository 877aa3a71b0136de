"""Input-safety faults (issue 14, items 1, 2, 3, 4, 6, 8, 12), tried as a new user would.

Every case asserts the one-line message (not just "error:"), the exit code, that the inputs are
byte-identical afterwards, and that no output, half-written file or empty folder is left.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import TEST_DATA, run_main, write_synth
from ifu_extract import synth

WAVE = 4750 + 1.25 * np.arange(40)


# ------------------------------------------------------------------------------ helpers
def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Inputs:
    """Hashes of input files, to prove they were not touched."""

    def __init__(self, *paths):
        self.paths = [Path(p) for p in paths]
        self.before = {p: _sha(p) for p in self.paths}

    def unchanged(self):
        for p in self.paths:
            assert _sha(p) == self.before[p], f"{p} was modified"


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def _one_line(res, *needles, code=1):
    assert res.exit_code == code, res.stderr
    errors = [ln for ln in res.err_lines if "error" in ln]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    for n in needles:
        assert n in errors[0], res.stderr
    return errors[0]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A 40 x 20 x 20 MUSE-layout cube with two sources, its catalogue, segmap and masks."""
    from astropy.wcs import WCS
    from click.testing import CliRunner

    from ifu_extract.cli import cli
    from ifu_extract.cubeio import open_cube

    d = tmp_path_factory.mktemp("field")
    cube = d / "cube.fits"
    write_synth(cube, [synth.SynthSource("1", 6.2, 7.1, synth.continuum_spectrum(WAVE, 30.0)),
                       synth.SynthSource("2", 13.4, 12.8, synth.continuum_spectrum(WAVE, 20.0))],
                shape=(40, 20, 20), sigma=0.2, seed=3)
    with open_cube(cube) as c:
        ra, dec = c.wcs.pixel_to_world_values([6.2, 13.4], [7.1, 12.8])
    cat = d / "cat.txt"
    cat.write_text("ID RA DEC\n" + "".join(f"{i} {r:.7f} {e:.7f}\n"
                                           for i, r, e in zip((1, 2), ra, dec)))
    seg = np.zeros((20, 20), np.int32)
    seg[5:10, 4:9] = 1
    seg[11:15, 11:16] = 2
    segmap = d / "segmap.fits"
    with fits.open(cube) as h:
        hdr = WCS(h["DATA"].header).celestial.to_header()
    fits.PrimaryHDU(seg, hdr).writeto(segmap)
    masks = d / "masks.fits"
    res = CliRunner().invoke(cli, ["mask", str(cube), str(cat), "--segmap", str(segmap),
                                   "-o", str(masks)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return {"dir": d, "cube": cube, "cat": cat, "segmap": segmap, "masks": masks, "ra": ra, "dec": dec}


def _copy(field, tmp_path, *names):
    out = {}
    for n in names:
        out[n] = tmp_path / field[n].name
        shutil.copy(field[n], out[n])
    return out


def _variant(src: Path, dest: Path, edit) -> Path:
    """A copy of cube *src* with *edit(hdul)* applied (checksum cards dropped)."""
    with fits.open(src) as h:
        hdus = [h[0].copy()] + [fits.ImageHDU(x.data.copy(), x.header.copy(), name=x.name) for x in h[1:]]
    hdul = fits.HDUList(hdus)
    edit(hdul)
    hdul.writeto(dest)
    return dest


# ------------------------------------------------------------------ 1. output = input
@pytest.mark.parametrize("case", ["same", "symlink", "hardlink", "other-spelling"])
def test_image_output_is_the_cube_refused(field, tmp_path, capfd, case):
    f = _copy(field, tmp_path, "cube")
    cube = f["cube"]
    out = {"same": cube, "symlink": tmp_path / "link.fits", "hardlink": tmp_path / "hard.fits",
           "other-spelling": tmp_path / "." / "sub" / ".." / "cube.fits"}[case]
    if case == "symlink":
        out.symlink_to(cube)
    elif case == "hardlink":
        os.link(cube, out)
    elif case == "other-spelling":
        (tmp_path / "sub").mkdir()
    inputs = Inputs(cube)
    before = _files(tmp_path)
    res = run_main(["image", cube, "-o", out], capfd)
    line = _one_line(res, "--output is the same file as the CUBE", str(cube), "which it would overwrite")
    assert str(out) in line
    inputs.unchanged()
    assert _files(tmp_path) == before


@pytest.mark.parametrize("target", ["cat", "segmap", "cube"])
def test_mask_output_is_an_input_refused(field, tmp_path, capfd, target):
    f = _copy(field, tmp_path, "cube", "cat", "segmap")
    inputs = Inputs(*f.values())
    before = _files(tmp_path)
    res = run_main(["mask", f["cube"], f["cat"], "--segmap", f["segmap"], "-o", f[target]], capfd)
    label = {"cat": "CATALOG", "segmap": "--segmap", "cube": "CUBE"}[target]
    _one_line(res, f"--output is the same file as the {label}", str(f[target]))
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_detect_outputs_equal_to_input_refused(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube")
    inputs = Inputs(f["cube"])
    before = _files(tmp_path)
    res = run_main(["detect", f["cube"], "-o", tmp_path / "cat.tsv", "--segmap", f["cube"]], capfd)
    _one_line(res, "--segmap is the same file as the IMAGE_OR_CUBE")
    inputs.unchanged()
    assert _files(tmp_path) == before


@pytest.mark.parametrize("verb", ["extract", "mask", "origin", "detimage"])
def test_pixtable_output_is_the_table_refused(field, tmp_path, capfd, verb):
    table = tmp_path / "pixtable.fits"
    shutil.copy(field["cube"], table)  # the guard runs before the table is read
    args = {"extract": ["pixtable", "extract", table, "-o", table],
            "mask": ["pixtable", "mask", table, field["segmap"], "-o", table],
            "origin": ["pixtable", "origin", table, "-o", table],
            "detimage": ["pixtable", "detimage", table, "-o", tmp_path / "d.fits", "--png", table]}[verb]
    inputs = Inputs(table)
    before = _files(tmp_path)
    res = run_main(args, capfd)
    _one_line(res, "is the same file as the TABLE", "which it would overwrite")
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_run_product_is_an_input_refused(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube")
    out = tmp_path / "out"
    out.mkdir()
    cat = out / "catalog.tsv"  # the user's catalogue where run writes its merged one
    shutil.copy(field["cat"], cat)
    inputs = Inputs(f["cube"], cat)
    before = _files(tmp_path)
    res = run_main(["run", f["cube"], cat, "-o", out], capfd)
    _one_line(res, "the product catalog.tsv of -o is the same file as the CATALOG", str(cat),
              "choose another -o folder")
    assert "[1/5]" not in res.stderr
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_write_over_a_registered_input_refused_at_the_writer(field, tmp_path):
    """The second layer: atomic_path refuses any registered input, whatever the option."""
    from ifu_extract import pathguard
    from ifu_extract.errors import InputError
    from ifu_extract.fitsout import atomic_path

    f = _copy(field, tmp_path, "cube")
    inputs = Inputs(f["cube"])
    pathguard.register_inputs({"CUBE": f["cube"]})
    try:
        with pytest.raises(InputError, match="is the same file as the input CUBE"):
            with atomic_path(f["cube"]) as tmp:
                Path(tmp).write_bytes(b"x")
    finally:
        pathguard.clear_inputs()
    inputs.unchanged()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.fits"]


# ------------------------------------------------------- 2. products of another cube
def _cut(h):
    for x in h[1:]:
        x.data = x.data[:, :15, :15]


def _shift(h):
    h["DATA"].header["CRVAL1"] -= 10.0
    h["STAT"].header["CRVAL1"] -= 10.0


def _scale(h):
    h["DATA"].data = h["DATA"].data * 1.01


@pytest.mark.parametrize("kind, needle", [
    ("cut", "made for a cube of 20 x 20 spaxels and 40 channels, but"),
    ("shift", "made for a cube on another sky grid"),
    ("other", "made from other data than"),
])
def test_extract_masks_of_another_cube_refused(field, tmp_path, capfd, kind, needle):
    f = _copy(field, tmp_path, "cat", "masks")
    other = _variant(field["cube"], tmp_path / f"{kind}.fits",
                     {"cut": _cut, "shift": _shift, "other": _scale}[kind])
    inputs = Inputs(other, *f.values())
    before = _files(tmp_path)
    res = run_main(["extract", other, f["cat"], "--masks", f["masks"], "-o", tmp_path / "out"], capfd)
    line = _one_line(res, needle, str(f["masks"]), str(other))
    assert line.startswith(f"ifu-extract: error: {f['masks']}: this masks file")
    inputs.unchanged()
    assert _files(tmp_path) == before  # no output folder


def test_white_image_of_another_cube_refused(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube", "cat", "segmap")
    other = _variant(field["cube"], tmp_path / "other.fits", _scale)
    res = run_main(["image", other, "-o", tmp_path / "white_other.fits"], capfd)
    assert res.exit_code == 0, res.stderr
    inputs = Inputs(other, tmp_path / "white_other.fits", *f.values())
    before = _files(tmp_path)
    res = run_main(["mask", f["cube"], f["cat"], "--segmap", f["segmap"], "--white",
                    tmp_path / "white_other.fits", "-o", tmp_path / "m.fits"], capfd)
    _one_line(res, "this white-light image was made from other data than", str(f["cube"]))
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_masks_without_identity_accepted_with_a_warning(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube", "cat", "masks")
    with fits.open(f["masks"], mode="update") as h:
        for key in ("IFXCNAX", "IFXCRA0", "IFXCDE0", "IFXCRA1", "IFXCDE1", "IFXCSUM"):
            del h[0].header[key]
    res = run_main(["extract", f["cube"], f["cat"], "--masks", f["masks"], "-o", tmp_path / "out"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "does not record the cube it was made from" in res.stderr
    assert (tmp_path / "out" / "sources" / "1.fits").is_file()


def test_contsub_of_another_cube_refused(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube")
    res = run_main(["contsub", f["cube"], "-o", tmp_path / "cs.fits", "--degree", "1"], capfd)
    assert res.exit_code == 0, res.stderr
    other = _variant(field["cube"], tmp_path / "other.fits", _scale)
    inputs = Inputs(other, tmp_path / "cs.fits")
    before = _files(tmp_path)
    res = run_main(["detect", other, "--line-scan", "--contsub-cube", tmp_path / "cs.fits",
                    "-o", tmp_path / "det.tsv"], capfd)
    _one_line(res, "this continuum-subtracted cube was made from other data than", str(other))
    inputs.unchanged()
    assert _files(tmp_path) == before


# ------------------------------------------------------------- 3. truncated masks file
@pytest.mark.parametrize("where", ["hdu-boundary", "mid-hdu"])
def test_truncated_masks_refused(field, tmp_path, capfd, where):
    f = _copy(field, tmp_path, "cube", "cat")
    masks = tmp_path / "masks.fits"
    with fits.open(field["masks"]) as h:
        segmap = h["SEGMAP"].fileinfo()["hdrLoc"]               # the last HDU
        table = h["OBJECTS"].fileinfo()["datLoc"]
    raw = field["masks"].read_bytes()
    # At an HDU boundary the file still reads as FITS: the segmentation map is gone.  Inside
    # the OBJECTS table, the masks of the objects are cut.
    masks.write_bytes(raw[:segmap] if where == "hdu-boundary" else raw[:table + 100])
    inputs = Inputs(masks, *f.values())
    before = _files(tmp_path)
    res = run_main(["extract", f["cube"], f["cat"], "--masks", masks, "-o", tmp_path / "out"], capfd)
    needle = ("is truncated or incomplete: 1 of 1 segmentation maps (SEGMAP) are missing"
              if where == "hdu-boundary" else "is truncated (HDU OBJECTS needs")
    _one_line(res, str(masks), needle, "re-create it with 'ifu-extract mask'")
    inputs.unchanged()
    assert _files(tmp_path) == before


# ------------------------------------------------------------------------- 4. --size
@pytest.mark.parametrize("verb", ["mask", "cutout", "run"])
@pytest.mark.parametrize("value", ["nan", "0", "-3", "inf"])
def test_absurd_size_is_a_usage_error(field, tmp_path, capfd, verb, value):
    f = _copy(field, tmp_path, "cube", "cat", "segmap")
    args = {"mask": ["mask", f["cube"], f["cat"], "--segmap", f["segmap"], "-o", tmp_path / "m.fits"],
            "cutout": ["cutout", f["cube"], f["cat"], "-o", tmp_path / "co"],
            "run": ["run", f["cube"], f["cat"], "-o", tmp_path / "run"]}[verb]
    inputs = Inputs(*f.values())
    before = _files(tmp_path)
    res = run_main(args + ["--size", value], capfd)
    _one_line(res, "usage error: Invalid value for '--size'", code=2)
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_size_larger_than_the_cube_is_clipped(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube", "cat", "segmap")
    res = run_main(["mask", f["cube"], f["cat"], "--segmap", f["segmap"], "-o", tmp_path / "m.fits",
                    "--size", "1000"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "box side 1000 arcsec is larger than the field of cube.fits (4 arcsec); clipped to 4 " \
           "arcsec for 2 object(s)" in res.stderr
    objects = Table.read(tmp_path / "m.fits", hdu="OBJECTS")
    assert set(objects["NX"]) == {20} and set(objects["NY"]) == {20}
    res = run_main(["cutout", f["cube"], f["cat"], "-o", tmp_path / "co", "--size", "1e6"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "clipped to 4 arcsec" in res.stderr
    with fits.open(tmp_path / "co" / "1.fits") as h:
        assert h["DATA"].shape == (40, 20, 20)


def test_extract_refuses_stamps_larger_than_the_field(field, tmp_path, capfd, monkeypatch):
    """Masks made before --size was clipped (unbounded boxes) are refused, not read as windows."""
    from ifu_extract.cubeio import Cube

    f = _copy(field, tmp_path, "cube", "cat", "segmap")
    with monkeypatch.context() as m:
        m.setattr(Cube, "clip_box_sizes", lambda self, sizes, what="--size": np.asarray(sizes, float))
        res = run_main(["mask", f["cube"], f["cat"], "--segmap", f["segmap"], "-o", tmp_path / "m.fits",
                        "--size", "30"], capfd)
    assert res.exit_code == 0, res.stderr
    inputs = Inputs(tmp_path / "m.fits", *f.values())
    before = _files(tmp_path)
    res = run_main(["extract", f["cube"], f["cat"], "--masks", tmp_path / "m.fits", "-o", tmp_path / "out"],
                   capfd)
    _one_line(res, "has stamps of up to 150 x 150 spaxels for 2 objects, more than twice the field of",
              "(20 x 20)", "clips --size to the field")
    inputs.unchanged()
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------- 6. non-ASCII
def test_non_ascii_cube_name_and_ids(field, tmp_path, capfd):
    cube = tmp_path / "cübe.fits"
    shutil.copy(field["cube"], cube)
    cat = tmp_path / "catalogue.txt"
    cat.write_text(f"ID RA DEC\ngälaxy {field['ra'][0]:.7f} {field['dec'][0]:.7f}\n"
                   f"2 {field['ra'][1]:.7f} {field['dec'][1]:.7f}\n", encoding="utf-8")
    seg = tmp_path / "ségmap.fits"
    shutil.copy(field["segmap"], seg)
    inputs = Inputs(cube, cat, seg)
    res = run_main(["run", cube, cat, "--no-detect", "--segmap", seg, "-o", tmp_path / "out",
                    "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    summary = Table.read(tmp_path / "out" / "summary.tsv", format="ascii.tab")
    assert list(summary["ID"]) == ["gälaxy", "2"]
    assert list(summary["STATUS"]) == ["ok", "ok"]
    name = summary["FILE"][0]
    assert name.isascii() and name.startswith("sources/galaxy_")
    with fits.open(tmp_path / "out" / name) as h:
        assert h[0].header["IFXIN1"].startswith("c\\xfcbe.fits")
    inputs.unchanged()


# ----------------------------------------------------------------------- 8. variance
def _extract(cube, field, tmp_path, capfd, *extra):
    return run_main(["extract", cube, field["cat"], "--masks", tmp_path / "m.fits",
                     "-o", tmp_path / "out", *extra], capfd)


def _masks_for(cube, field, tmp_path, capfd, *extra):
    res = run_main(["mask", cube, field["cat"], "--segmap", field["segmap"], "-o", tmp_path / "m.fits",
                    *extra], capfd)
    assert res.exit_code == 0, res.stderr
    return res


@pytest.mark.parametrize("kind, warning, note", [
    ("zero", "variance extension STAT is all zero", "variance STAT all zero"),
    ("negative", "variance extension STAT has negative values", "variance STAT negative"),
    ("misspelt-ivar", "has no variance extension (looked for IVAR", "no variance"),
])
def test_unusable_variance_warned_and_noted(field, tmp_path, capfd, kind, warning, note):
    cube = tmp_path / f"{kind}.fits"
    if kind == "misspelt-ivar":
        data, var, dq, header, _ = synth.make_cube(
            [synth.SynthSource("1", 6.2, 7.1, synth.continuum_spectrum(WAVE, 30.0)),
             synth.SynthSource("2", 13.4, 12.8, synth.continuum_spectrum(WAVE, 20.0))],
            shape=(40, 20, 20), sigma=0.2, seed=3)
        hdul = synth.cube_hdulist(data, var, dq, header, layout="MaNGA")
        hdul["IVAR"].name = "IVRA"
        hdul.writeto(cube)
    else:
        def edit(h):
            if kind == "zero":
                h["STAT"].data[:] = 0
            else:
                h["STAT"].data[::2] *= -1  # every other plane: the rest is used
        _variant(field["cube"], cube, edit)
    inputs = Inputs(cube)
    _masks_for(cube, field, tmp_path, capfd)
    res = _extract(cube, field, tmp_path, capfd)
    assert warning in res.stderr
    assert sum(warning in ln for ln in res.err_lines) == 1  # said once
    summary = Table.read(tmp_path / "out" / "summary.tsv", format="ascii.tab")
    assert all(note in str(n) for n in summary["NOTES"]), summary["NOTES"]
    assert list(summary["STATUS"]) == ["ok", "ok"]  # the STATUS definitions are kept
    if kind != "negative":
        assert np.all(np.isnan(np.asarray(summary["SNR_MEDIAN"], float)))
    inputs.unchanged()


def test_all_negative_variance_named_as_such(field, tmp_path, capfd):
    cube = _variant(field["cube"], tmp_path / "neg.fits", lambda h: h["STAT"].data.__imul__(-1))
    inputs = Inputs(cube)
    before = _files(tmp_path)
    res = run_main(["image", cube, "-o", tmp_path / "w.fits"], capfd)
    line = _one_line(res, "has no usable voxel in the requested band: the variance extension STAT is "
                     "negative where the data are finite")
    assert "no finite value" not in line
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_quality_extension_as_variance_refused(field, tmp_path, capfd):
    f = _copy(field, tmp_path, "cube")
    inputs = Inputs(f["cube"])
    before = _files(tmp_path)
    res = run_main(["image", f["cube"], "-o", tmp_path / "w.fits", "--var-ext", "DQ"], capfd)
    _one_line(res, "extension 3 (DQ) holds data-quality flags (DQ), not a variance", "--var-ext")
    inputs.unchanged()
    assert _files(tmp_path) == before


# ------------------------------------------------------- 12. late or misleading messages
def test_gzip_cube_refused_with_the_decompress_command(field, tmp_path, capfd):
    gz = tmp_path / "cube.fits.gz"
    gz.write_bytes(gzip.compress(field["cube"].read_bytes()))
    inputs = Inputs(gz)
    before = _files(tmp_path)
    res = run_main(["image", gz, "-o", tmp_path / "w.fits"], capfd)
    line = _one_line(res, "is a gzip-compressed cube", "gunzip -k cube.fits.gz")
    assert "truncated" not in line
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_fpack_cube_refused_with_the_decompress_command(field, tmp_path, capfd):
    fz = tmp_path / "cube.fits.fz"
    with fits.open(field["cube"]) as h:
        fits.HDUList([h[0].copy(), fits.CompImageHDU(h["DATA"].data, h["DATA"].header, name="DATA"),
                      fits.CompImageHDU(h["STAT"].data, h["STAT"].header, name="STAT")]).writeto(fz)
    inputs = Inputs(fz)
    before = _files(tmp_path)
    res = run_main(["image", fz, "-o", tmp_path / "w.fits"], capfd)
    _one_line(res, "is tile-compressed (fpack)", "funpack cube.fits.fz")
    inputs.unchanged()
    assert _files(tmp_path) == before


@pytest.mark.parametrize("content, needle", [
    ("ID RA DEC\n", "has no catalogue rows"),
    ("ID RA DEC\n1 {ra0} {de0}\n1 {ra1} {de1}\n", "has duplicate IDs (1)"),
])
def test_run_catalogue_errors_before_any_file(field, tmp_path, capfd, content, needle):
    f = _copy(field, tmp_path, "cube")
    cat = tmp_path / "bad.txt"
    cat.write_text(content.format(ra0=field["ra"][0], de0=field["dec"][0], ra1=field["ra"][1],
                                  de1=field["dec"][1]))
    inputs = Inputs(f["cube"], cat)
    before = _files(tmp_path)
    res = run_main(["run", f["cube"], cat, "-o", tmp_path / "new" / "out"], capfd)
    _one_line(res, str(cat), needle)
    assert "[1/5]" not in res.stderr  # found before the first step
    inputs.unchanged()
    assert _files(tmp_path) == before  # no (empty) output folder


def test_failing_step_leaves_no_empty_folder(field, tmp_path, capfd):
    bad = tmp_path / "nan.fits"
    _variant(field["cube"], bad, lambda h: h["DATA"].data.fill(np.nan))
    before = _files(tmp_path)
    for args in (["run", bad, field["cat"], "-o", tmp_path / "run"],
                 ["extract", bad, field["cat"], "--masks", field["masks"], "-o", tmp_path / "ex"],
                 ["cutout", bad, field["cat"], "-o", tmp_path / "co"]):
        res = run_main(args, capfd)
        _one_line(res, "has no finite data value")
    assert _files(tmp_path) == before


def test_no_detect_counts_no_detections(field, tmp_path, capfd):
    res = run_main(["run", field["cube"], field["cat"], "--no-detect", "--segmap", field["segmap"],
                    "-o", tmp_path / "out", "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "catalogue: 2 objects (0 from detection)" in res.stderr


def test_merge_into_a_non_empty_folder_refused(field, tmp_path, capfd):
    res = run_main(["extract", field["cube"], field["cat"], "--masks", field["masks"],
                    "-o", tmp_path / "part"], capfd)
    assert res.exit_code == 0, res.stderr
    target = tmp_path / "merged"
    target.mkdir()
    (target / "notes.txt").write_text("mine\n")
    inputs = Inputs(target / "notes.txt", tmp_path / "part" / "summary.tsv")
    before = _files(tmp_path)
    res = run_main(["merge", tmp_path / "part", "-o", target], capfd)
    _one_line(res, f"{target}: is not empty", "choose a new or empty folder")
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_zero_wavelength_step_refused(field, tmp_path, capfd):
    bad = _variant(field["cube"], tmp_path / "cd33.fits",
                   lambda h: h["DATA"].header.update({"CD3_3": 0.0}))
    inputs = Inputs(bad)
    before = _files(tmp_path)
    res = run_main(["image", bad, "-o", tmp_path / "w.fits"], capfd)
    _one_line(res, "has no usable wavelength axis (CD3_3 = 0.0 is not a wavelength step)")
    inputs.unchanged()
    assert _files(tmp_path) == before


def test_outputs_galaxy_created_empty_are_written(tmp_path, capfd):
    """Galaxy creates every output dataset as an empty file before the job: none of them may be
    taken for an input by the output-path guard (detect's --lines was)."""
    outs = {name: tmp_path / f"dataset_{k}.dat" for k, name in enumerate(
        ("-o", "--segmap", "--background", "--rms", "--lines", "--line-images"))}
    for path in outs.values():
        path.touch()
    args = ["detect", TEST_DATA / "gx_minicube.fits", "--catalog-format", "tsv", "--line-scan",
            "--line-fwhm", "0.75"]
    for opt, path in outs.items():
        args += [opt, path]
    res = run_main(args, capfd)
    assert res.exit_code == 0, res.stderr
    assert all(path.stat().st_size > 0 for path in outs.values())
    assert outs["--lines"].read_text().startswith("LINE_ID\tID\tRA\tDEC")


def test_report_page_galaxy_created_empty_is_written(tmp_path, capfd):
    """The same for the QA report's page (``--html``, an output declared by its type, not in a
    list that has to be kept in step): Galaxy's empty dataset is replaced by the page."""
    from ifu_extract.commands._paths import is_output
    from ifu_extract.cli import COMMANDS, LazyGroup

    out = tmp_path / "ext"
    assert run_main(["extract", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt",
                     "--masks", TEST_DATA / "gx_masks.fits", "-o", out, "--fwhm", "0.75"],
                    capfd).exit_code == 0
    page, assets = tmp_path / "dataset_7.dat", tmp_path / "dataset_7_files"
    page.touch()
    res = run_main(["report", "--summary", out / "summary.tsv", "--source", out / "sources" / "1.fits",
                    "--source", out / "sources" / "3.fits", "--html", page, "--assets-dir", assets,
                    "--no-plots"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "<table" in page.read_text()
    # Every verb that writes an HTML page declares it an output.
    for verb in ("report", "merge", "run"):
        params = {p.name: p for p in LazyGroup._load(verb).params}
        assert is_output(params["html"]) and is_output(params["assets_dir"]), verb
    assert "run" in COMMANDS

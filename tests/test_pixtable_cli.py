"""The pixtable verbs end to end, and bad inputs: one clear stderr line, exit 1, no traceback,
no output file left behind."""

import numpy as np
from astropy.io import fits

from conftest import run_main
from ifu_extract.pixtable.header import KEYWORD
from pixtable_helpers import RA0, DEC0, mpdaf_pixtable, table
from pixtable_helpers import one_line_error as _one_line_error
from pixtable_helpers import rewrite as _rewrite


def test_missing_column(tmp_path, capfd):
    path, _, _ = table()
    bad = _rewrite(path, tmp_path / "nostat.fits", lambda h: h.pop(h.index_of("stat")))
    out = tmp_path / "out.fits"
    res = run_main(["pixtable", "extract", bad, "-o", out, "--ifu", 1], capfd)
    _one_line_error(res, "nostat.fits", "no 'stat' extension", "xpos, ypos, lambda")
    assert not out.exists()


def test_missing_column_binary_table(tmp_path, capfd):
    path, _, _ = table(layout="table")

    def drop_origin(hdul):
        cols = [c for c in hdul[1].columns if c.name != "origin"]
        hdul[1] = fits.BinTableHDU.from_columns(cols)

    bad = _rewrite(path, tmp_path / "noorigin.fits", drop_origin)
    res = run_main(["pixtable", "info", bad], capfd)
    _one_line_error(res, "no 'origin' column")


def test_unknown_wcs_convention(tmp_path, capfd):
    path, _, _ = table()

    def edit(hdul):
        hdul[0].header[f"{KEYWORD} WCS"] = "spherical (whatever)"

    bad = _rewrite(path, tmp_path / "weird.fits", edit)
    out = tmp_path / "out.fits"
    res = run_main(["pixtable", "extract", bad, "-o", out, "--circle", RA0, DEC0, 2], capfd)
    _one_line_error(res, "unknown WCS convention 'spherical (whatever)'", "positioned")
    assert not out.exists()
    # selections that need no sky coordinates still work on it
    res = run_main(["pixtable", "extract", bad, "-o", out, "--ifu", 2], capfd)
    assert res.exit_code == 0 and out.exists()


def test_mask_image_without_wcs(tmp_path, capfd):
    path, _, spec = table()
    nowcs = tmp_path / "nowcs.fits"
    from ifu_extract.pixtable.synth import mask_image_hdulist

    mask_image_hdulist(spec, with_wcs=False).writeto(nowcs)
    out = tmp_path / "mc.fits"
    res = run_main(["pixtable", "mask", path, nowcs, "-o", out], capfd)
    _one_line_error(res, "nowcs.fits", "no celestial WCS")
    assert not out.exists()
    res = run_main(["pixtable", "extract", path, "-o", out, "--ifu", 1, "--mask-image", nowcs],
                   capfd)
    _one_line_error(res, "no celestial WCS")
    assert not out.exists()


def test_region_outside_the_field(tmp_path, capfd):
    path, _, _ = table(convention="projected")
    out = tmp_path / "out.fits"
    res = run_main(["pixtable", "extract", path, "-o", out, "--circle", RA0, DEC0 + 0.05, 3],
                   capfd)
    _one_line_error(res, "sky region 1", "outside the field", "check the centre")
    assert not out.exists()
    res = run_main(["pixtable", "detimage", path, "-o", out, "--ifu", 1, "--square", RA0 + 1,
                    DEC0, 3], capfd)
    _one_line_error(res, "outside the field")
    assert not out.exists()


def test_not_a_pixel_table(tmp_path, capfd, minicube):
    res = run_main(["pixtable", "info", minicube], capfd)
    _one_line_error(res, "minicube.fits", "no 'xpos' extension")
    txt = tmp_path / "notes.fits"
    txt.write_text("hello")
    res = run_main(["pixtable", "info", txt], capfd)
    _one_line_error(res, "not a readable FITS pixel table")
    res = run_main(["pixtable", "info", tmp_path / "absent.fits"], capfd)
    _one_line_error(res, "no such file")


def test_truncated_table(tmp_path, capfd):
    path, _, _ = table()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    res = run_main(["pixtable", "extract", cut, "-o", tmp_path / "o.fits", "--ifu", 1], capfd)
    assert res.exit_code == 1 and len(res.err_lines) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_selfcal_failure_leaves_no_output(tmp_path, capfd):
    path, _, _ = table(nrows=60_000, skysub=True)
    out, corr = tmp_path / "c.fits", tmp_path / "corr.fits"
    res = run_main(["pixtable", "selfcal", path, "-o", out, "--corrections", corr], capfd)
    _one_line_error(res, "is sky-subtracted")
    assert not out.exists() and not corr.exists()
    res = run_main(["pixtable", "selfcal", path, "-o", out, "--corrections", corr,
                    "--bin-edges", "7000,abc"], capfd)
    _one_line_error(res, "--bin-edges")


def test_usage_errors_exit_2(tmp_path, capfd):
    path, _, _ = table()
    res = run_main(["pixtable", "extract", path, "-o", tmp_path / "o.fits", "--ifu", 25], capfd)
    assert res.exit_code == 2 and "1<=x<=24" in res.stderr


def test_extract_table_layout_and_plots(tmp_path, capfd):
    path, _, spec = table(n_exp=2, nrows=100_000)
    out = tmp_path / "sel.fits"
    res = run_main(["pixtable", "extract", path, "-o", out, "--exp", 2, "--stack", 2,
                    "--layout", "table"], capfd)
    assert res.exit_code == 0, res.stderr
    mp = mpdaf_pixtable(out)
    assert not mp.ima and mp.get_keyword("COMBINED") == 1
    sky = mp.origin2slice(mp.get_origin())
    from ifu_extract.pixtable.header import ccd_to_sky_slice

    assert set(np.unique(ccd_to_sky_slice(sky))) == set(range(13, 25))
    png = tmp_path / "sky.png"
    res = run_main(["pixtable", "plot", path, "-o", png, "--max-points", 5000], capfd)
    assert res.exit_code == 0, res.stderr
    assert png.read_bytes()[:4] == b"\x89PNG" and "5000 of 100000 rows" in res.stderr
    res = run_main(["pixtable", "plot", path, "--kind", "wave", "--ifu", 2, "-o",
                    tmp_path / "w.png"], capfd)
    assert res.exit_code == 0, res.stderr
    res = run_main(["pixtable", "plot", path, "--kind", "detector", "-o", tmp_path / "d.png"],
                   capfd)
    _one_line_error(res, "holds 4 IFUs", "--ifu")
    assert not (tmp_path / "d.png").exists()

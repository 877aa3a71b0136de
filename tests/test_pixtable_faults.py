"""Pixel tables that look valid but are not (issue 14, item 11): each is refused with one
line that names the file, the problem and the fix -- never a wrong answer with exit 0, never an
internal error."""

import os
import resource
import subprocess
import sys

import numpy as np
from astropy.io import fits

from conftest import run_main
from ifu_extract.pixtable.header import COLUMNS
from ifu_extract.pixtable.synth import mask_image_hdulist
from ifu_extract.pixtable.writer import PixTableWriter
from pixtable_helpers import DEC0, RA0, table
from pixtable_helpers import one_line_error as _one_line_error
from pixtable_helpers import rewrite as _rewrite


def test_xpos_without_unit_is_refused(tmp_path, capfd):
    """Without BUNIT, xpos was read as pixels: a 2" circle then selected rows all over the
    field (MPDAF refuses such a file)."""
    path, _, _ = table()
    res = run_main(["pixtable", "extract", path, "-o", tmp_path / "ok.fits", "--circle", RA0, DEC0, 2],
                   capfd)
    assert res.exit_code == 0, res.stderr           # the same table with its unit works
    bad = _rewrite(path, tmp_path / "nounit.fits", lambda h: h["xpos"].header.remove("BUNIT"))
    out = tmp_path / "out.fits"
    res = run_main(["pixtable", "extract", bad, "-o", out, "--circle", RA0, DEC0, 2], capfd)
    _one_line_error(res, "nounit.fits", "'xpos' has no unit", "'deg'")
    assert not out.exists()


def test_xpos_without_unit_binary_table(tmp_path, capfd):
    path, _, _ = table(layout="table")
    bad = _rewrite(path, tmp_path / "nounit.fits", lambda h: h[1].header.remove("TUNIT1"))
    res = run_main(["pixtable", "extract", bad, "-o", tmp_path / "o.fits", "--circle", RA0, DEC0, 2],
                   capfd)
    _one_line_error(res, "'xpos' has no unit", "TUNIT")


def test_missing_field_centre_is_refused(tmp_path, capfd):
    """Without CRVAL1/2 the centre was taken as RA 0, Dec 0: an all-zero mask column, exit 0."""
    path, _, spec = table()
    mask = tmp_path / "mask.fits"
    mask_image_hdulist(spec).writeto(mask)

    def drop_centre(hdul):
        for k in ("CRVAL1", "CRVAL2"):
            hdul[0].header.remove(k)

    bad = _rewrite(path, tmp_path / "nocentre.fits", drop_centre)
    out = tmp_path / "mc.fits"
    res = run_main(["pixtable", "mask", bad, mask, "-o", out], capfd)
    _one_line_error(res, "nocentre.fits", "no field centre", "CRVAL1/CRVAL2")
    assert not out.exists()
    res = run_main(["pixtable", "mask", path, mask, "-o", out], capfd)
    assert res.exit_code == 0, res.stderr
    with fits.open(out) as h:
        assert h["MASKCOL"].data.sum() > 0              # the good table has masked rows


def test_mask_of_another_field_is_refused(tmp_path, capfd):
    path, _, spec = table(convention="projected")
    far = tmp_path / "far.fits"
    mask_image_hdulist(spec, center_offset=(600.0, 0.0)).writeto(far)     # 10' east
    out = tmp_path / "mc.fits"
    res = run_main(["pixtable", "mask", path, far, "-o", out], capfd)
    _one_line_error(res, "far.fits", "does not cover the field", "mask image of this field")
    assert not out.exists()
    res = run_main(["pixtable", "extract", path, "-o", out, "--ifu", 1, "--mask-image", far], capfd)
    _one_line_error(res, "does not cover the field")
    # A mask that covers part of the field is fine (objects near its edge are kept).
    near = tmp_path / "near.fits"
    mask_image_hdulist(spec, center_offset=(40.0, 0.0)).writeto(near)
    res = run_main(["pixtable", "mask", path, near, "-o", out], capfd)
    assert res.exit_code == 0, res.stderr


def test_float_origin_column_is_refused(tmp_path, capfd):
    path, _, _ = table()

    def to_float(hdul):
        i = hdul.index_of("origin")
        hdul[i] = fits.ImageHDU(hdul[i].data.astype(np.float32), name="origin")

    bad = _rewrite(path, tmp_path / "forigin.fits", to_float)
    for verb in (["extract", bad, "-o", tmp_path / "o.fits", "--ifu", 1],
                 ["origin", bad, "-o", tmp_path / "o.fits"]):
        res = run_main(["pixtable", *verb], capfd)
        _one_line_error(res, "forigin.fits", "'origin' is floating point", "int32")


def test_float_origin_binary_table(tmp_path, capfd):
    path, _, _ = table(layout="table")

    def to_float(hdul):
        cols = [fits.Column(name=c.name, format="1E" if c.name == "origin" else c.format,
                            unit=c.unit, array=hdul[1].data[c.name]) for c in hdul[1].columns]
        hdul[1] = fits.BinTableHDU.from_columns(cols)

    bad = _rewrite(path, tmp_path / "forigin.fits", to_float)
    res = run_main(["pixtable", "info", bad], capfd)
    _one_line_error(res, "'origin' is floating point")


def test_table_cut_in_half_is_reported_truncated(tmp_path, capfd):
    """A file cut in the middle of its columns was reported as "has no 'dq' extension"."""
    path, _, _ = table()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    res = run_main(["pixtable", "extract", cut, "-o", tmp_path / "o.fits", "--ifu", 1], capfd)
    _one_line_error(res, "cut.fits", "is truncated", "copy or download the file again")
    assert "has no" not in res.stderr


def _limit_address_space(nbytes):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return set_limit


def test_huge_table_under_an_address_space_limit(tmp_path):
    """A 3e8-row table (8.4 GB, sparse on disk) under ``ulimit -v 4000000`` failed with an
    internal error (exit 3): now a one-line message that names the limit."""
    path, _, _ = table()
    with fits.open(path) as h:
        header = h[0].header.copy()
        units = {c: h[c].header.get("BUNIT") for c in COLUMNS if h[c].header.get("BUNIT")}
    big = tmp_path / "big.fits"
    writer = PixTableWriter(big, header, 300_000_000, layout="image", units=units)
    writer.finish(header)                               # headers only: the data stay sparse
    assert big.stat().st_size > 8e9
    proc = subprocess.run([sys.executable, "-c", "from ifu_extract.cli import main; main()",
                           "pixtable", "info", str(big)],
                          capture_output=True, text=True, preexec_fn=_limit_address_space(4_000_000 * 1024),
                          env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "big.fits" in lines[0] and "ulimit -v" in lines[0], proc.stderr
    assert "internal error" not in proc.stderr

"""The one all-or-nothing mechanism of multi-output steps (ifu_extract.steps._outputs)."""

from __future__ import annotations

import errno
import os

import pytest

from ifu_extract.errors import DiskFullError, InputError
from ifu_extract.steps._outputs import OutputError, OutputSet, check_writable


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_all_products_renamed_together(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.fits"
    with OutputSet() as outputs:
        ta = outputs.path(a, suffix=".tsv")
        tb = outputs.path(b)
        ta.write_text("x\n")
        tb.write_bytes(b"fits")
        assert not a.exists() and not b.exists()       # nothing in place before the end
    assert a.read_text() == "x\n" and b.read_bytes() == b"fits"
    assert _leftovers(tmp_path) == ["a.tsv", "b.fits"]
    assert oct(a.stat().st_mode & 0o777) == "0o644"


def test_failure_leaves_no_product(tmp_path):
    a, c = tmp_path / "a.tsv", tmp_path / "c.png"
    with pytest.raises(RuntimeError, match="plot failed"), OutputSet() as outputs:
        outputs.path(a).write_text("x\n")
        outputs.claim(c)
        c.write_bytes(b"png")                           # a writer that puts its file in place
        raise RuntimeError("plot failed")
    assert _leftovers(tmp_path) == []


def test_existing_files_are_not_deleted_on_failure(tmp_path):
    # Galaxy creates its outputs empty before the job: a failure must not remove them.
    c = tmp_path / "c.png"
    c.write_bytes(b"")
    with pytest.raises(RuntimeError), OutputSet() as outputs:
        outputs.claim(c)
        raise RuntimeError("boom")
    assert c.exists()


def test_failed_rename_removes_products_already_renamed(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    real = os.replace

    def replace(src, dst):
        if str(dst) == str(b):
            raise OSError(errno.EACCES, "denied")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(InputError, match="b.txt: cannot be written"), OutputSet() as outputs:
        outputs.path(a).write_text("a")
        outputs.path(b).write_text("b")
    assert _leftovers(tmp_path) == []


def test_full_disk_is_one_line_error(tmp_path):
    with pytest.raises(DiskFullError, match="no space left"), OutputSet() as outputs:
        outputs.path(tmp_path / "a.txt")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert _leftovers(tmp_path) == []


def test_check_writable_names_the_parameter(tmp_path):
    check_writable({"output": tmp_path / "ok.tsv", "segmap": None})
    with pytest.raises(OutputError) as info:
        check_writable({"segmap": tmp_path})
    err = info.value
    assert err.param == "segmap"
    assert err.oneline() == f"{tmp_path}: is a folder (segmap needs a file name); give a file path to segmap"
    assert err.relabel({"segmap": "--segmap"}).oneline().endswith("give a file path to --segmap")
    with pytest.raises(OutputError, match="the output folder does not exist; create it or "
                                          "choose another output"):
        check_writable({"output": tmp_path / "missing" / "x.tsv"})


def test_output_error_pickles(tmp_path):
    import pickle

    err = OutputError(tmp_path, "is a folder ({rms} needs a file name)", param="rms")
    relabelled = err.relabel({"rms": "--rms"})
    back = pickle.loads(pickle.dumps(relabelled))
    assert back.oneline() == relabelled.oneline() == f"{tmp_path}: is a folder (--rms needs a file name)"
    assert back.param == "rms" and isinstance(back, OutputError)

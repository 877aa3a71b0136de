"""Process faults of ``ifu-extract run`` (issue 14, items 5, 7, 9, 10).

``run`` is started in a subprocess of its own session (its process group is the job's), and
killed -- ``kill -9`` or ``SIGTERM`` -- at a seeded point: while a Source file is half written,
once K of them exist.  The point is made exact by a driver that wraps the Source-file writer
(test code only): when K files exist, the writer opens its temporary file, writes part of it,
signals the main process and waits.  Then:

* no process of the job's group is left (workers die with their parent);
* after SIGTERM the exit status is 143 and no temporary file is left; after ``kill -9`` the
  temporary files of the dead processes are removed at the next start;
* ``run --resume`` gives the folder of a clean run, byte for byte (SOURCE_DATE_EPOCH set).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from conftest import run_main, write_synth
from ifu_extract import synth

EPOCH = "1767225600"
N_SOURCES = 12

DRIVER = r'''
import os, signal, sys, time
from pathlib import Path

from ifu_extract import fitsout, sourcefile

K = int(os.environ["FAULT_AFTER"])
SIG = int(os.environ["FAULT_SIGNAL"])
MAIN = os.getpid()
real = sourcefile.write_fast_fits


def write_fast_fits(dest, primary, extensions):
    dest = Path(dest)
    if sum(not p.name.startswith(".") for p in dest.parent.glob("*.fits")) >= K:
        # Killed in the middle of a write: a temporary file holds part of the content.
        with fitsout.atomic_path(dest, suffix=".fits") as tmp:
            tmp.write_bytes(bytes(primary))
            os.kill(MAIN, SIG)
            if os.environ.get("FAULT_SWALLOW"):
                # Code that swallows the SIGTERM's exception (as a finalizer would), then
                # goes on for a long time: the worker must still end.
                try:
                    time.sleep(60)
                except BaseException:
                    pass
            time.sleep(60)
    return real(dest, primary, extensions)


sourcefile.write_fast_fits = write_fast_fits
from ifu_extract.cli import main

main(sys.argv[1:])
'''


def _env(**extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DATE_EPOCH": EPOCH,
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    env.update(extra)
    return env


def _cli(args, **kw):
    return subprocess.run([sys.executable, "-c", "from ifu_extract.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=_env(), **kw)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A 60 x 48 x 48 cube with 12 point sources on a grid, and their catalogue."""
    base = tmp_path_factory.mktemp("faults")
    wave = 4750.0 + 1.25 * np.arange(60)
    rng = np.random.default_rng(14)
    srcs = []
    for i, (y, x) in enumerate([(y, x) for y in (8.3, 23.6, 38.9) for x in (6.2, 17.7, 29.4, 40.8)]):
        srcs.append(synth.SynthSource(str(i + 1), x, y,
                                      synth.continuum_spectrum(wave, float(rng.uniform(10, 40)), 0.1)))
    cube = base / "cube.fits"
    truth = write_synth(cube, srcs, shape=(60, 48, 48), sigma=1.0, seed=3)
    cat = base / "cat.tsv"
    Table({"ID": [s.id for s in srcs], "RA": [truth.ra[s.id] for s in srcs],
           "DEC": [truth.dec[s.id] for s in srcs]}).write(cat, format="ascii.tab")
    clean = base / "clean"
    res = _cli(["run", cube, cat, "-o", clean, "--threads", "2", "--no-plots", "--fwhm", "0.7"])
    assert res.returncode == 0, res.stderr
    assert len(_sources(clean)) >= N_SOURCES
    return cube, cat, clean


def _tree(folder: Path) -> dict:
    """``{relative path: sha256}`` of every file under *folder*, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _sources(folder: Path) -> list[Path]:
    """The Source files of *folder* (pathlib's glob also matches hidden temporary files)."""
    return [p for p in (folder / "sources").glob("*.fits") if not p.name.startswith(".")]


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group *pgid*."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            out.append(int(stat.parent.name))
    return out


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _group_members(pgid)
        if not left:
            return []
        time.sleep(0.2)
    return _group_members(pgid)


def _killed_run(cube, cat, out, sig, k, threads, **env):
    """Start ``run`` in its own process group; the driver signals it once *k* Source files exist."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, "run", str(cube), str(cat), "-o", str(out),
                             "--threads", str(threads), "--no-plots", "--fwhm", "0.7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(FAULT_AFTER=str(k), FAULT_SIGNAL=str(int(sig)), **env),
                            start_new_session=True)
    return _finish(proc)


def _finish(proc, timeout: float = 300.0):
    """Exit status, stderr and the processes of its group still alive after it ended.

    Orphans hold the pipes open, so ``communicate`` may time out: the group is then reported
    (and killed, so that a failing test leaves nothing running).
    """
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        err = "(timed out: the pipes were still held open)"
    left = _wait_group_gone(proc.pid)
    if left or proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, err, left


# Seeded kill points: (signal, worker processes, seed of K).
CASES = [(signal.SIGKILL, 2, 1), (signal.SIGTERM, 2, 2), (signal.SIGKILL, 1, 3), (signal.SIGTERM, 1, 4)]


@pytest.mark.parametrize("sig,threads,seed", CASES,
                         ids=[f"{signal.Signals(s).name}-threads{t}-seed{k}" for s, t, k in CASES])
def test_kill_then_resume_equals_clean_run(field, tmp_path, sig, threads, seed):
    cube, cat, clean = field
    k = int(np.random.default_rng(seed).integers(2, N_SOURCES - 3))
    out = tmp_path / "out"
    code, err, left = _killed_run(cube, cat, out, sig, k, threads)
    assert not left, f"processes left running after {signal.Signals(sig).name}: {left}"
    n_written = len(_sources(out))
    assert k <= n_written < N_SOURCES, (k, n_written, err)
    assert not (out / "summary.tsv").exists()
    if sig == signal.SIGTERM:
        assert code == 143, err
        assert err.strip().splitlines()[-1] == "terminated", err
        assert _temps(out) == [], "SIGTERM must remove the temporary files"
    else:
        assert code == -signal.SIGKILL
        if threads == 1:
            # The main process was writing: its temporary file is left, named after it.
            stale = _temps(out)
            assert len(stale) == 1 and "ifxtmp" in stale[0].name, stale
    res = _cli(["run", cube, cat, "-o", out, "--threads", str(threads), "--no-plots", "--fwhm", "0.7",
                "--resume"])
    assert res.returncode == 0, res.stderr
    assert f"resume: {n_written} objects already extracted" in res.stderr
    assert _tree(out) == _tree(clean)            # byte for byte, no temporary file left


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_that_swallows_sigterm_still_ends(field, tmp_path, sig):
    """A worker whose task swallows the SIGTERM exception still ends once its parent is gone
    (watchdog) or stopped it (SIGKILL after the grace period)."""
    cube, cat, _ = field
    code, err, left = _killed_run(cube, cat, tmp_path / "out", sig, 3, 2, FAULT_SWALLOW="1")
    assert not left, f"workers left running: {left}"
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143), err


def test_stale_temp_files_of_dead_processes_are_removed(field, tmp_path):
    """Only temporary files whose owner is dead are removed (a live owner is writing)."""
    from ifu_extract.fitsout import temp_path

    cube, cat, clean = field
    out = tmp_path / "out"
    (out / "sources").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    live_tmp = temp_path(out / "sources" / "7.fits")          # this test process: alive
    dead_tmp = Path(str(live_tmp).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    dead_tmp.write_bytes(b"\0" * 2880)
    legacy = out / ".cs.fits.abc123.fits"                      # not ours: no owner in the name
    legacy.write_bytes(b"x")
    res = _cli(["run", cube, cat, "-o", out, "--threads", "2", "--no-plots", "--fwhm", "0.7"])
    assert res.returncode == 0, res.stderr
    assert not dead_tmp.exists()
    assert live_tmp.exists() and legacy.exists()
    live_tmp.unlink()
    legacy.unlink()
    assert _tree(out) == _tree(clean)


def test_sigterm_during_report_leaves_nothing_running(field, tmp_path):
    """SIGTERM while the QA figures are drawn by two workers: exit 143, group gone, no temp."""
    import shutil

    cube, cat, clean = field
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    driver = r'''
import os, signal, sys, time
from ifu_extract.report import figures
real = figures.write_png
MAIN = os.getpid()
K = int(os.environ["FAULT_AFTER"])
def slow(fig, path):
    if sum(not p.name.startswith(".") for p in path.parent.glob("*.png")) >= K:
        os.kill(MAIN, signal.SIGTERM)
        time.sleep(60)
    return real(fig, path)
figures.write_png = slow
from ifu_extract.cli import main
main(sys.argv[1:])
'''
    proc = subprocess.Popen([sys.executable, "-c", driver, "report", str(out), "--threads", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(FAULT_AFTER="4"), start_new_session=True)
    code, err, left = _finish(proc)
    assert not left and code == 143, (left, err)
    assert _temps(out) == []
    assert not (out / "index.html").exists()


def test_resume_with_changed_options_is_refused(field, tmp_path):
    """--resume with another --size: a one-line error naming the option, old and new values."""
    import shutil

    cube, cat, clean = field
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    before = _tree(out)
    res = _cli(["run", cube, cat, "-o", out, "--no-plots", "--fwhm", "0.7", "--size", "4", "--resume"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1, res.stderr
    assert lines[-1].startswith("ifu-extract: error:") and "run_options.json" in lines[-1]
    assert "--size was unset, now 4.0" in lines[-1] and "--force" in lines[-1]
    assert [ln for ln in lines if "error" in ln] == [lines[-1]]
    assert _tree(out) == before                          # nothing touched
    res = _cli(["run", cube, cat, "-o", out, "--no-plots", "--fwhm", "0.6", "--resume"])
    assert res.returncode == 1 and "--fwhm was 0.7, now 0.6" in res.stderr
    # --force: every object is extracted again with the new options.
    res = _cli(["run", cube, cat, "-o", out, "--no-plots", "--fwhm", "0.7", "--size", "4", "--resume",
                "--force"])
    assert res.returncode == 0, res.stderr
    assert "resume:" not in res.stderr
    from astropy.io import fits

    with fits.open(out / "sources" / "1.fits") as h:
        assert h["IMA_MASK_UNION_DATA"].data.shape == (20, 20)     # 4" at 0.2"/spaxel


# ----------------------------------------------------------------------------- disk full
@pytest.fixture
def small_disk(tmp_path):
    """A 5 MB tmpfs (root) mounted in *tmp_path*; unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)], check=True,
                   capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path, leave: int):
    """Fill *disk* so that about *leave* bytes stay free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("leave", [40_000, 400_000])
def test_report_on_a_full_disk(field, small_disk, leave):
    """No space for the figures (or only for some): one line, exit 1, and no half report."""
    import shutil

    cube, cat, clean = field
    out = small_disk / "out"
    out.mkdir()
    for name in ("summary.tsv", "masks.fits"):
        shutil.copy(clean / name, out / name)
    shutil.copytree(clean / "sources", out / "sources")
    _fill(small_disk, leave)
    res = _cli(["report", out, "--threads", "2"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("warning")]
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and "no space left on the device" in lines[0], res.stderr
    assert not (out / "index.html").exists()
    assert not (out / "qa").exists() or not any((out / "qa").iterdir())
    assert _temps(out) == []


def test_disk_full_stops_extraction(field, tmp_path, capfd, monkeypatch):
    """ENOSPC while writing a Source file stops the run (it is not one object's failure)."""
    from ifu_extract import sourcefile

    cube, cat, clean = field

    def full(dest, primary, extensions):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sourcefile, "write_fast_fits", full)
    out = tmp_path / "out"
    res = run_main(["run", cube, cat, "-o", out, "--no-plots", "--fwhm", "0.7"], capfd)
    assert res.exit_code == 1, res.stderr
    assert "no space left on the device" in res.err_lines[-1]
    assert not (out / "summary.tsv").exists()


def test_killed_contsub_leaves_no_temp_after_the_next_run(field, tmp_path):
    """kill -9 while contsub streams its cube: the GB-sized temporary file is removed by the
    next run in that folder (it was left forever, even after a successful rerun)."""
    cube, _, _ = field
    driver = r'''
import os, signal, sys
from ifu_extract import contsub
real = contsub._process_block
def block(*args):
    out = real(*args)
    os.kill(os.getpid(), signal.SIGKILL)    # half the cube written to the temporary file
    return out
contsub._process_block = block
from ifu_extract.cli import main
main(sys.argv[1:])
'''
    out = tmp_path / "cs.fits"
    proc = subprocess.run([sys.executable, "-c", driver, "contsub", str(cube), "-o", str(out)],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".cs.fits.")]
    assert len(stale) == 1 and not out.exists(), stale
    res = _cli(["contsub", cube, "-o", out])
    assert res.returncode == 0, res.stderr
    assert out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cs.fits"]

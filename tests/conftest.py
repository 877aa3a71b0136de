"""Shared fixtures: the real MUSE data shipped in the mpdaf wheel, and synthetic cubes."""

from __future__ import annotations

import os

# Single-threaded BLAS before numpy loads: tests run many small products, often next to other
# processes, where a threaded OpenBLAS is many times slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# The imports come after the BLAS variables on purpose (numpy reads them when it loads).
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

import mpdaf  # noqa: E402

from ifu_extract import synth  # noqa: E402
from ifu_extract.cli import cli  # noqa: E402

MPDAF_DATA = Path(mpdaf.__file__).parent / "data" / "sdetect"
REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "test-data"


@pytest.fixture(autouse=True)
def _reproducible_dates(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00


@pytest.fixture(scope="session")
def minicube() -> Path:
    """Abell 478 MUSE cube, 3681 x 40 x 40, DATA/STAT/DQ."""
    return MPDAF_DATA / "minicube.fits"


@pytest.fixture(scope="session")
def mosaic() -> Path:
    """Two touching UDF galaxies, 500 x 30 x 30, with MUSE FSF keywords."""
    return MPDAF_DATA / "subcub_mosaic.fits"


@pytest.fixture(scope="session")
def hst_cutout() -> Path:
    """HST image of Abell 478 covering the minicube (SCI/WHT/CTX)."""
    return MPDAF_DATA / "a478hst-cutout.fits"


@pytest.fixture(scope="session")
def muselet_cat() -> Path:
    """mpdaf's cat.txt: ID RA DEC Z Z_MIN Z_MAX with '--' for missing values."""
    return MPDAF_DATA / "cat.txt"


def run_cli(args, **kwargs):
    """Invoke the CLI in-process; returns the click Result (stderr kept apart)."""
    runner = CliRunner()
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


class MainResult:
    """Outcome of :func:`run_main`: exit code and the captured streams."""

    def __init__(self, code, out, err):
        self.exit_code, self.stdout, self.stderr = code, out, err

    @property
    def err_lines(self):
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_main(args, capfd):
    """Run the real entry point (error handling and exit codes included) in-process.

    Use with pytest's ``capfd`` fixture: ``res = run_main([...], capfd)``; then
    ``res.exit_code``, ``res.stderr``, ``res.err_lines``.
    """
    from ifu_extract.cli import main

    capfd.readouterr()
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capfd.readouterr()
    return MainResult(code, out, err)


def write_synth(path, sources, layout="MUSE", **kwargs):
    """Write a synthetic cube to *path*; returns its Truth."""
    data, var, dq, header, truth = synth.make_cube(sources, **kwargs)
    synth.cube_hdulist(data, var, dq, header, layout=layout).writeto(path, overwrite=True)
    return truth


@pytest.fixture(scope="session")
def point_field(tmp_path_factory):
    """A 200 x 40 x 40 cube with three isolated point sources of known spectra."""
    wave = 4750.0 + 1.25 * np.arange(200)
    srcs = [
        synth.SynthSource("1", 10.3, 12.7, synth.continuum_spectrum(wave, 40.0, 0.3)),
        synth.SynthSource("2", 28.6, 25.2, synth.continuum_spectrum(wave, 25.0, -0.2)
                          + synth.emission_line(wave, 4850.0, 2.0, 400.0)),
        synth.SynthSource("3", 14.1, 31.4, synth.continuum_spectrum(wave, 15.0, 0.0),
                          kind="sersic", re_arcsec=0.6, n=1.0, q=0.7, pa_deg=30.0),
    ]
    path = tmp_path_factory.mktemp("synth") / "point_field.fits"
    truth = write_synth(path, srcs, shape=(200, 40, 40), sigma=1.0, nan_fraction=0.001, seed=1)
    return path, truth

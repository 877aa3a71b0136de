"""Builders of spectra-service test inputs with known content.

* MPDAF ``Source`` files written with mpdaf itself (``Source.from_data`` + ``Spectrum`` +
  ``Source.write``), on a MUSE-like linear air grid of 1.25 Angstrom;
* SDSS ``spec-*`` files following the SDSS data model (HDU 1 ``COADD``: loglam flux ivar and_mask
  or_mask wdisp sky model; HDU 2 ``SPECOBJ``: PLATE MJD FIBERID PLUG_RA PLUG_DEC Z ... SPECOBJID);
* summary tables (``summary.tsv``: ID STATUS ... with a header).

Everything is seeded: the same call writes the same files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

REPO_TEST_DATA = Path(__file__).resolve().parents[1] / "test-data"
MUSE_UNIT = "1e-20 erg/s/cm2/Angstrom"
MUSE_START = 4750.0
MUSE_STEP = 1.25
SDSS_STEP = 1e-4


@dataclass
class Truth:
    """What a test input holds, for comparisons."""

    specid: str
    obj_id: str
    tag: str
    ra: float
    dec: float
    z: float
    wave: np.ndarray
    flux: np.ndarray
    var: np.ndarray | None = None
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def make_source(path, obj_id, ra, dec, z=None, *, start=MUSE_START, step=MUSE_STEP, n=200,
                tags=("MUSE_TOT", "MUSE_PSF", "MUSE_APER_1.0"), seed=0, nan_at=(),
                ctype="AWAV", context="ctx", unit=MUSE_UNIT) -> list[Truth]:
    """Write an MPDAF Source with one spectrum per tag; returns the truth per tag."""
    from mpdaf.obj import Spectrum, WaveCoord
    from mpdaf.sdetect import Source

    rng = np.random.default_rng(seed)
    wave = start + step * np.arange(n)
    src = Source.from_data(obj_id, ra, dec, origin=("ifu-extract", "0.1.0", "cube.fits", "v"))
    out = []
    for t, tag in enumerate(tags):
        flux = (10.0 + t + 0.01 * np.arange(n) + rng.normal(0, 1, n)).astype(np.float32)
        var = rng.uniform(0.5, 2.0, n).astype(np.float32)
        for i in nan_at:
            flux[i] = np.nan
        wc = WaveCoord(cdelt=step, crval=start, cunit="Angstrom", ctype=ctype, shape=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src.spectra[tag] = Spectrum(data=flux.copy(), var=var.copy(), wave=wc, unit=unit)
        out.append(Truth(f"{context}:{obj_id}:{tag}", str(obj_id), tag, ra, dec,
                         np.nan if z is None else z, wave, flux, var=var))
    if z is not None:
        src.add_z("MUSE", z, errz=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src.write(str(path))
    return out


def make_sdss(path, plate, mjd, fiber, ra, dec, z, *, coeff0=3.5800, n=300, seed=0,
              context="ctx") -> Truth:
    """Write an SDSS ``spec-PLATE-MJD-FIBER.fits`` following the SDSS data model."""
    rng = np.random.default_rng(seed)
    loglam64 = coeff0 + SDSS_STEP * np.arange(n)
    loglam = loglam64.astype(np.float32)
    flux = (5.0 + rng.normal(0, 1, n)).astype(np.float32)
    ivar = rng.uniform(0.5, 4.0, n).astype(np.float32)
    ivar[:3] = 0.0  # SDSS marks unusable pixels with ivar 0
    and_mask = np.zeros(n, dtype=np.int32)
    and_mask[5] = 1 << 23  # BRIGHTSKY
    and_mask[:3] = 1 << 16  # NOPLUG-like
    sky = rng.uniform(0, 3, n).astype(np.float32)
    model = (5.0 + 0.01 * np.arange(n)).astype(np.float32)
    specobjid = str((plate << 50) + (fiber << 38) + ((mjd - 50000) << 24))
    h0 = fits.Header()
    h0["TELESCOP"] = "SDSS 2.5-M"
    h0["PLATEID"] = plate
    h0["MJD"] = mjd
    h0["FIBERID"] = fiber
    h0["PLUG_RA"] = ra
    h0["PLUG_DEC"] = dec
    h0["COEFF0"] = (coeff0, "Center wavelength (log10) of first pixel")
    h0["COEFF1"] = (SDSS_STEP, "Log10 dispersion per pixel")
    h0["BUNIT"] = "1E-17 erg/cm^2/s/Ang"
    coadd = fits.BinTableHDU.from_columns([
        fits.Column(name="flux", format="E", array=flux),
        fits.Column(name="loglam", format="E", array=loglam),
        fits.Column(name="ivar", format="E", array=ivar),
        fits.Column(name="and_mask", format="J", array=and_mask),
        fits.Column(name="or_mask", format="J", array=and_mask),
        fits.Column(name="wdisp", format="E", array=np.ones(n, np.float32)),
        fits.Column(name="sky", format="E", array=sky),
        fits.Column(name="model", format="E", array=model),
    ], name="COADD")
    specobj = fits.BinTableHDU.from_columns([
        fits.Column(name="PLATE", format="J", array=[plate]),
        fits.Column(name="MJD", format="J", array=[mjd]),
        fits.Column(name="FIBERID", format="J", array=[fiber]),
        fits.Column(name="PLUG_RA", format="D", array=[ra]),
        fits.Column(name="PLUG_DEC", format="D", array=[dec]),
        fits.Column(name="CLASS", format="6A", array=["GALAXY"]),
        fits.Column(name="Z", format="E", array=[z]),
        fits.Column(name="Z_ERR", format="E", array=[1e-4]),
        fits.Column(name="SPECOBJID", format="19A", array=[specobjid]),
    ], name="SPECOBJ")
    fits.HDUList([fits.PrimaryHDU(header=h0), coadd, specobj]).writeto(path, overwrite=True)
    bad = ivar <= 0
    mask = and_mask.copy()
    mask[bad] |= 1 << 28
    return Truth(f"{context}:{specobjid}:COADD", specobjid, "COADD", ra, dec, float(
        np.float32(z)), 10 ** (coeff0 + SDSS_STEP * np.arange(n)), flux, ivar=ivar, mask=mask,
        extra={"sky": sky, "model": model})


def make_summary(path, rows: list[dict]) -> Path:
    """Write a tab-separated summary table with a header line."""
    cols = list(rows[0])
    lines = ["\t".join(cols)] + ["\t".join(str(r[c]) for c in cols) for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


@dataclass
class Collection:
    """A mixed test collection: MUSE, short-range MUSE and SDSS spectra plus a summary."""

    folder: Path
    sources: list
    short: list
    sdss: list
    summary: Path
    truth: dict  # specid -> Truth

    @property
    def all_files(self) -> list:
        return [*self.sources, *self.short, *self.sdss, self.summary]


MUSE_CTX = "mpdaf_air_linear_1p25"
SDSS_CTX = "sdss_vacuum_log10_0p0001"


def build_collection(folder, n_muse=12, n_short=4, n_sdss=5) -> Collection:
    """Write the standard mixed collection into *folder* (seeded)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    sources, short, sdss = [], [], []
    rng = np.random.default_rng(42)
    for i in range(n_muse):
        oid = 100 + i
        ra, dec = 150.0 + 0.01 * i, 2.0 + 0.005 * (i % 4)
        z = round(0.1 + 0.07 * ((i * 5) % n_muse), 4)
        path = folder / f"source-{oid:05d}.fits"
        for t in make_source(path, oid, ra, dec, z, seed=i, context=MUSE_CTX,
                             nan_at=(7,) if i == 0 else ()):
            truth[t.specid] = t
        sources.append(path)
    for i in range(n_short):  # same lattice, a shorter range starting 40 channels later
        oid = 500 + i
        path = folder / f"source-{oid:05d}.fits"
        for t in make_source(path, oid, 150.2 + 0.01 * i, 2.1, 0.3 + 0.01 * i, seed=100 + i,
                             start=MUSE_START + 40 * MUSE_STEP, n=100, tags=("MUSE_TOT",),
                             context=MUSE_CTX):
            truth[t.specid] = t
        short.append(path)
    for i in range(n_sdss):
        plate, mjd, fiber = 266, 51630, 10 + i
        path = folder / f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
        t = make_sdss(path, plate, mjd, fiber, 151.0 + 0.02 * i, 2.5, 0.05 * (i + 1),
                      coeff0=round(3.5800 + 0.0010 * i, 4), n=300 - 20 * i, seed=200 + i,
                      context=SDSS_CTX)
        truth[t.specid] = t
        sdss.append(path)
    statuses = ["ok", "ok", "fallback", "ok"]
    summary = make_summary(folder / "summary.tsv", [
        {"ID": 100 + i, "STATUS": statuses[i % 4], "MAG": round(20 + 0.1 * i, 2),
         "NPIX": int(rng.integers(10, 99))} for i in range(n_muse)])
    return Collection(folder, sources, short, sdss, summary, truth)


# -- shared, built once per test session ----------------------------------------------------------
_SHARED: dict = {}


def _tmpdir() -> Path:
    import atexit
    import shutil
    import tempfile

    if "dir" not in _SHARED:
        d = Path(tempfile.mkdtemp(prefix="ifx-spectra-tests-"))
        atexit.register(shutil.rmtree, d, True)
        _SHARED["dir"] = d
    return _SHARED["dir"]


def shared_collection() -> Collection:
    """The standard collection, written once per session (read-only for tests)."""
    if "coll" not in _SHARED:
        _SHARED["coll"] = build_collection(_tmpdir() / "collection")
    return _SHARED["coll"]


def shared_store() -> Path:
    """A store holding the standard collection, ingested once per session (read-only)."""
    if "store" not in _SHARED:
        from ifu_extract.spectra.ingest import ingest

        path = _tmpdir() / "collection.ifxs"
        rep = ingest(shared_collection().all_files, path, commit_every=5)
        assert not rep.problems, rep.problems
        _SHARED["store"] = path
    return _SHARED["store"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """uvicorn serving an app on 127.0.0.1 in a thread; ``with`` starts and stops it."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))

    def __enter__(self):
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=20)

"""Benchmark: line-emitter scan vs LSDCat's classic method (and MUSELET, ORIGIN) on the real minicube.

**Completeness.**  Point-like line emitters are injected into the real MUSE minicube shipped
with mpdaf (``mpdaf/data/sdetect/minicube.fits``, 3681 x 40 x 40 with STAT): a Moffat PSF
(FWHM ``--fwhm`` arcsec, β 2.8) times a Gaussian line of FWHM drawn in 2.5-6 Angstrom, at a
random position at least 2 spaxels from the edge and a random wavelength at least 6 Angstrom
from the sky windows and 30 Angstrom from the cube's ends.  Its flux is set so that the S/N of
its *optimal* flux estimate computed from STAT (the matched filter with the true template,
``F * sqrt(Σ m² / STAT)`` for the unit-flux model ``m``) is the asked one, S/N 5 to 20.  Each
realisation (one seed) holds ``--per-cube`` lines, each in its own wavelength slot (no two lines
closer than 50 Angstrom), two per S/N bin; ``--realisations`` seeds give the injections per bin.
A line is recovered when a detected line lies within 0.8 arcsec and 5 Angstrom of it.

**False detections.**  Every line found in the minicube with DATA negated is false (the real
cube's galaxies' absorption lines become emission there, as do noise peaks and residuals).

Both are measured for a grid of thresholds, so the completeness can be compared at equal false
counts.

Methods:

* ``ifu-extract``: :func:`ifu_extract.linescan.scan_lines` (3-D matched filter, STAT-weighted,
  calibrated S/N, EW cut), default options.
* ``LSDCat``: LSDCat's classic method reimplemented from Herenz & Wisotzki (2017, A&A 602,
  A111) (LSDCat is not on PyPI): median-filter continuum subtraction (151 channels), spatial
  convolution of DATA with the PSF and of STAT with its square, spectral convolution with a
  Gaussian of constant velocity FWHM (300 km/s) and its square, ``S/N = F / sqrt(V)``, voxels
  above the threshold labelled into clusters (6-connectivity), one detection per cluster at its
  S/N peak.  Not reimplemented: its variance from the data (``lsd_cc_*`` options), the
  LSDCat measurement step.
* ``MUSELET`` (``--muselet``): ``mpdaf.sdetect.muselet`` (mpdaf 3.6) with Debian's SExtractor
  (``source-extractor``, linked as ``sex`` in a temporary bin folder), on the first
  ``--muselet-realisations`` realisations (the same seeds, hence the same lines).  Its steps are
  called as ``muselet()`` calls them, minus the broad-band part (see :func:`muselet_lines`: on
  the negated cube ``muselet()`` finds no continuum object and fails writing that empty
  catalogue; the broad-band objects only group lines into objects): its narrow-band images
  once per cube, then per SExtractor ``DETECT_THRESH`` (``--muselet-thresh``, MUSELET's
  default 2.5) SExtractor on every narrow band, the 5-sigma / edge / weight cleaning and the
  merging into lines; its lines (``cat_lines.fit``) are the lines.  ``MEMORY_PIXSTACK`` is
  lowered to 30000 (15-20x less CPU, byte-identical catalogues and segmentation maps).  Rows
  ``MUSELET+cut``: the 5-sigma cleaning (S/N of the 1" aperture flux in the narrow band) made
  stricter (``--muselet-snr``), threshold "DETECT_THRESH/cut".  About 205 s CPU per cube for
  four thresholds.

* ``ORIGIN`` (``--origin``): ``muse_origin`` 3.2 (Mary et al. 2020, A&A 635, A194), installed
  in its own venv (``ORIGIN_PYTHON``, default ``~/.cache/ifu-extract/origin-venv/bin/python``: ``pip install
  muse_origin``, then ``photutils==1.13.0`` and ``scikit-image``), run per cube as a subprocess
  (``bench/linescan_origin_worker.py``; the cube written to a temporary FITS file) on the first
  ``--origin-realisations`` realisations (the same seeds, hence the same lines).  Its steps 1-6
  (DCT continuum, areas, PCA threshold, greedy PCA, GLR test, purity) with their defaults, once
  per cube, given the injections' PSF (Moffat ``--fwhm``, β 2.8, constant in wavelength), then
  its detection (step 7) per threshold pair (T_GLR, STD-cube threshold); its lines are step 7's
  catalogue ``Cat1`` (step 8 fails under numpy 2, see the worker's docstring).  The pairs are
  fixed, the same for every cube: rows ``ORIGIN``, the pairs ORIGIN's purity estimate gives on
  the minicube without injection for each purity ``--origin-purity`` (threshold = purity);
  rows ``ORIGIN T_GLR only``, thresholds ``--origin-tglr`` on T_GLR with the STD-cube detection
  off.  About 13 s CPU per cube.

**Speed** (``--speed``): :func:`scan_lines` on a synthetic 300 x 300 x 3681 float32 DATA+STAT
cube (Gaussian noise, a few line emitters), CPU seconds of the process (the negated-cube pass is
part of it), one thread.

Usage::

    .venv/bin/python bench/linescan_bench.py [--realisations 50] [--per-cube 30] [--speed]
    .venv/bin/python bench/linescan_bench.py --realisations 17 --muselet [--muselet-realisations 17]
    .venv/bin/python bench/linescan_bench.py --realisations 30 --origin [--origin-realisations 30]

Results are printed as Markdown and saved to ``bench/out/linescan_bench.json``
(``bench/out/linescan_muselet.json`` with ``--muselet``, ``bench/out/linescan_origin.json`` with
``--origin``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.signal import fftconvolve  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SNR_BINS = np.arange(5, 21)            # injected S/N: 2 per bin of width 1 per realisation
REPORT_BINS = np.array([5, 8, 11, 14, 17, 20])   # reported completeness bins
LINE_FWHM_RANGE = (2.5, 6.0)           # Angstrom
MATCH_ARCSEC, MATCH_ANGSTROM = 0.8, 5.0
MUSELET_SKYCLEAN = ((5573.5, 5578.8), (6297.0, 6300.5))   # muselet()'s defaults
MUSELET_PIXSTACK = 30000   # SExtractor's MEMORY_PIXSTACK: 15-20x less CPU than 4e6, same catalogues


def minicube_path() -> str:
    import mpdaf

    return os.path.join(os.path.dirname(mpdaf.__file__), "data", "sdetect", "minicube.fits")


def load_minicube():
    from ifu_extract.cubeio import open_cube

    cube = open_cube(minicube_path())
    data, var = cube.window(0, cube.nx, 0, cube.ny)
    return cube, data, var


# ---------------------------------------------------------------------------------- injections
def _psf_image(shape, x, y, fwhm_pix, beta=2.8):
    from ifu_extract.synth import moffat_image

    return moffat_image(shape, x, y, fwhm_pix, beta)


def injections(cube, var, seed, per_cube, fwhm, sky_windows, snr_values=None):
    """Truth of one realisation: rows (x, y, wave, line_fwhm, snr, flux) and the model cube."""
    rng = np.random.default_rng(seed)
    wave = cube.wave
    ny, nx = cube.ny, cube.nx
    lo, hi = wave[0] + 30.0, wave[-1] - 30.0
    edges = np.linspace(lo, hi, per_cube + 1)
    if snr_values is None:
        centres = 0.5 * (SNR_BINS[:-1] + SNR_BINS[1:])
        snr_values = np.resize(np.repeat(centres, 1), per_cube)
        snr_values = snr_values + rng.uniform(-0.5, 0.5, per_cube)
        rng.shuffle(snr_values)
    model = np.zeros((wave.size, ny, nx), dtype=np.float32)
    truth = []
    for k in range(per_cube):
        for _ in range(200):
            lam = rng.uniform(edges[k] + 25.0, edges[k + 1] - 25.0)
            if all(not (a - 6.0 <= lam <= b + 6.0) for a, b in sky_windows):
                break
        x, y = rng.uniform(2.0, nx - 3.0), rng.uniform(2.0, ny - 3.0)
        lf = rng.uniform(*LINE_FWHM_RANGE)
        s = lf / 2.3548
        z = np.flatnonzero(np.abs(wave - lam) < 5 * s)
        g = np.exp(-0.5 * ((wave[z] - lam) / s) ** 2) / (np.sqrt(2 * np.pi) * s)  # per Angstrom
        p = _psf_image((ny, nx), x, y, fwhm / cube.pixscale)
        m = g[:, None, None] * p[None]                       # unit line flux
        v = var[z]
        ok = np.isfinite(v) & (v > 0)
        snr1 = float(np.sqrt(np.sum(np.where(ok, m * m / np.where(ok, v, 1.0), 0.0))))
        flux = float(snr_values[k]) / snr1
        model[z] += (flux * m).astype(np.float32)
        truth.append((x, y, lam, lf, float(snr_values[k]), flux))
    return np.array(truth), model


def recovered(truth, found, pixscale, min_snr):
    """Per injected line: detected within MATCH_ARCSEC and MATCH_ANGSTROM at S/N >= min_snr."""
    out = np.zeros(len(truth), dtype=bool)
    if not len(found):
        return out
    f = found[found[:, 3] >= min_snr]
    for i, (x, y, lam, *_rest) in enumerate(truth):
        d = np.hypot(f[:, 0] - x, f[:, 1] - y) * pixscale
        out[i] = bool(np.any((d <= MATCH_ARCSEC) & (np.abs(f[:, 2] - lam) <= MATCH_ANGSTROM)))
    return out


# ---------------------------------------------------------------------------------- methods
def ifu_extract_lines(cube_like, fwhm, floor):
    """(x, y, wave, snr) of every line at calibrated S/N >= floor."""
    from ifu_extract.linescan import ScanConfig, scan_lines

    # A fixed threshold (the floor; the grid is applied afterwards), or the default (None):
    # the threshold raised until the negated cube holds at most 5 lines.
    cfg = ScanConfig(fwhm=fwhm) if floor is None else ScanConfig(snr=floor, max_false=None, fwhm=fwhm)
    scan = scan_lines(cube_like, psf=None, config=cfg)
    t = scan.lines
    return np.column_stack([t["X"], t["Y"], t["LINE_WAVE"], t["SNR"]]) if len(t) else np.zeros((0, 4))


def lsdcat_classic(data, var, wave, pixscale, fwhm, floor, velocity_fwhm=300.0, median_width=151):
    """LSDCat's classic detection (Herenz & Wisotzki 2017), as described in the module docstring.

    Returns (x, y, wave, snr) of the clusters' peaks with S/N >= floor.
    """
    from ifu_extract.contsub import fit_continuum

    dw = float(np.median(np.diff(wave)))
    cont = fit_continuum(data, None, wave, method="median", median_width=median_width * dw).continuum
    resid = np.where(np.isfinite(data), data - cont, 0.0).astype(np.float32)
    v = np.where(np.isfinite(var) & (var > 0), var, 0.0).astype(np.float32)
    # Spatial filter: the PSF at each wavelength (constant here: the injections' PSF).
    fpix = fwhm / pixscale
    h = int(np.ceil(2 * fpix)) + 1
    k = _psf_image((2 * h + 1, 2 * h + 1), h, h, fpix)
    k = (k / k.sum()).astype(np.float32)
    fs = fftconvolve(resid, k[None], mode="same", axes=(1, 2))
    vs = fftconvolve(v, (k * k)[None], mode="same", axes=(1, 2))
    # Spectral filter: Gaussian of constant velocity FWHM, its width following the wavelength.
    c = 299792.458
    f = np.empty_like(fs)
    vv = np.empty_like(vs)
    for z0 in range(0, wave.size, 256):
        z1 = min(z0 + 256, wave.size)
        sig = float(np.mean(wave[z0:z1])) * velocity_fwhm / c / 2.3548 / dw
        hh = int(np.ceil(4 * sig))
        g = np.exp(-0.5 * (np.arange(-hh, hh + 1) / sig) ** 2)
        g = (g / g.sum()).astype(np.float32)
        a, b = max(z0 - hh, 0), min(z1 + hh, wave.size)
        f[z0:z1] = ndimage.correlate1d(fs[a:b], g, axis=0, mode="constant")[z0 - a:z1 - a]
        vv[z0:z1] = ndimage.correlate1d(vs[a:b], g * g, axis=0, mode="constant")[z0 - a:z1 - a]
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(vv > 0, f / np.sqrt(vv), 0.0)
    lab, n = ndimage.label(snr >= floor)
    if n == 0:
        return np.zeros((0, 4))
    pos = ndimage.maximum_position(snr, lab, np.arange(1, n + 1))
    return np.array([(x, y, wave[z], snr[z, y, x]) for z, y, x in pos], dtype=float)


def _muselet_module():
    import importlib

    # ``mpdaf.sdetect.muselet`` is also the name of the function the package exports.
    return importlib.import_module("mpdaf.sdetect.muselet")


def muselet_setup(workdir: Path) -> None:
    """Put SExtractor on the PATH as ``sex`` (MUSELET's name for it), in *workdir*/bin."""
    import shutil

    sex = shutil.which("sex") or shutil.which("source-extractor")
    if sex is None:
        raise RuntimeError("SExtractor is not installed (apt-get install source-extractor)")
    bindir = workdir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    if not (bindir / "sex").exists():
        (bindir / "sex").symlink_to(sex)
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    logging.getLogger("mpdaf.sdetect.muselet").setLevel(logging.WARNING)


def muselet_lines(data, var, workdir, thresholds, snr_cuts=()):
    """MUSELET's line catalogue of the minicube with DATA, STAT replaced by *data*, *var*.

    MUSELET's own steps, as ``muselet()`` runs them (mpdaf 3.6), minus the broad-band part: its
    narrow-band images (``step1``, once), SExtractor on each of them at each DETECT_THRESH of
    *thresholds* (``run_sex_nb``), its catalogue loading, 5-sigma / edge / weight cleaning and
    merging into lines (``load_raw_catalog``, ``clean_raw_catalog``, ``find_lines``).  Skipped:
    SExtractor on the white-light and RGB images and ``find_objects``, which only group the
    lines into objects (on the negated cube no continuum object is found and ``muselet()``
    stops there: astropy cannot write the empty catalogue, ``ValueError: max() arg is an empty
    sequence``), and the source files.  On an injected cube the lines are those of
    ``muselet()``'s ``cat_lines.fit``, every column identical.

    *snr_cuts*: stricter versions of MUSELET's 5-sigma cleaning (``FLUX / FLUX_ERR >= 5``, the
    S/N of SExtractor's 1" aperture flux in the narrow band), applied to the cleaned detections
    before they are merged into lines, exactly as if that 5 were replaced.

    Returns ``{(thresh, cut): (n, 4) array of (x, y, wave, FLUX / FLUX_ERR)}`` (cut 5 is
    MUSELET's own), x, y 0-based pixels.
    """
    import contextlib
    import io

    from astropy.io import fits
    from mpdaf.obj import Cube

    mus = _muselet_module()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "cube.fits"
    with fits.open(minicube_path()) as hdul:
        hdul["DATA"].data = np.asarray(data, dtype=np.float32)
        hdul["STAT"].data = np.asarray(var, dtype=np.float32)
        hdul.writeto(path, overwrite=True)
    out = {}
    # MUSELET's progress counters write to stdout, which carries the Markdown tables.
    with contextlib.redirect_stdout(io.StringIO()):
        mus.step1(path, dir_=workdir, write_nbcube=False, n_cpu=1)
        mcube = Cube(str(path))
        radius = 4.0 * float(np.mean(mcube.wcs.get_step(unit="arcsec")))   # muselet(radius=4)
        for th in thresholds:
            for f in list((workdir / "nb").glob("cat*.dat")) + list((workdir / "nb").glob("seg*.fits")):
                f.unlink()
            mus.run_sex_nb(workdir, mcube, {"detect_thresh": th, "memory_pixstack": MUSELET_PIXSTACK})
            raw = mus.load_raw_catalog(workdir, mcube, MUSELET_SKYCLEAN)
            clean = mus.clean_raw_catalog(raw, workdir, 0.5)
            snr = np.asarray(clean["FLUX"] / clean["FLUX_ERR"], float)
            for cut in sorted({5.0, *map(float, snr_cuts)}):
                cat = clean[snr >= cut]
                if len(cat):
                    cat = mus.find_lines(cat, mcube, radius)
                out[float(th), cut] = (
                    np.column_stack([np.asarray(cat[c], float) for c in ("I_X", "I_Y", "WAVE")]
                                    + [np.asarray(cat["FLUX"] / cat["FLUX_ERR"], float)])
                    if len(cat) else np.zeros((0, 4)))
    return out


ORIGIN_PYTHON = os.environ.get("ORIGIN_PYTHON",
                               str(Path.home() / ".cache" / "ifu-extract" / "origin-venv" / "bin" / "python"))
ORIGIN_WORKER = HERE / "linescan_origin_worker.py"


def _write_minicube(path, data, var) -> None:
    """The minicube's FITS file with DATA, STAT replaced by *data*, *var*."""
    from astropy.io import fits

    with fits.open(minicube_path()) as hdul:
        hdul["DATA"].data = np.asarray(data, dtype=np.float32)
        hdul["STAT"].data = np.asarray(var, dtype=np.float32)
        hdul.writeto(path, overwrite=True)


def origin_psf(path, nz, fwhm_pix, size=25) -> None:
    """ORIGIN's PSF cube (*nz*, *size*, *size*): the injections' Moffat (β 2.8), unit sum."""
    from astropy.io import fits

    h = size // 2
    p = _psf_image((size, size), h, h, fwhm_pix)
    p = (p / p.sum()).astype(np.float32)
    fits.writeto(path, np.broadcast_to(p, (nz, size, size)).copy(), overwrite=True)


def origin_lines(data, var, workdir, psf, fwhm_pix, purities=(), pairs=()) -> dict:
    """ORIGIN's lines on the minicube with DATA, STAT replaced by *data*, *var*.

    Runs :mod:`linescan_origin_worker` in ORIGIN's venv (``ORIGIN_PYTHON``): ORIGIN's steps 1-6
    with their defaults once, then its detection (step 7) per threshold pair, the pairs ORIGIN
    derives from its purity estimate on this cube for each of *purities* and the fixed *pairs*
    ``(T_GLR threshold, STD threshold)``.  Returns the worker's JSON, its ``lines`` as
    ``{label: (n, 4) array of (x, y, wave, T_GLR or STD)}``, x, y 0-based pixels.
    """
    import subprocess

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "cube.fits"
    _write_minicube(path, data, var)
    cmd = [ORIGIN_PYTHON, str(ORIGIN_WORKER), str(path), str(psf), f"{fwhm_pix:.6g}", str(workdir / "origin.json")]
    if purities:
        cmd += ["--purity", *(f"{p:g}" for p in purities)]
    if pairs:
        cmd += ["--pairs", *(f"{a:.6g}:{b:.6g}" for a, b in pairs)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ORIGIN failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads((workdir / "origin.json").read_text())
    out["lines"] = {k: np.asarray(v, float).reshape(-1, 4) for k, v in out["lines"].items()}
    return out


def _cpu_with_children() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ---------------------------------------------------------------------------------- driver
def completeness_run(args):
    from ifu_extract.linescan import DEFAULT_SKY_WINDOWS, ArrayCube

    cube, data, var = load_minicube()
    from ifu_extract.linescan import ScanConfig, scan_lines

    thresholds = {"ifu-extract": np.round(np.arange(3.5, 7.01, 0.25), 2),
                  "LSDCat": np.round(np.arange(4.0, 12.01, 0.5), 2)}
    floors = {m: float(t.min()) for m, t in thresholds.items()}
    res = {m: {"false": {}, "rec": []} for m in thresholds}
    t0 = time.process_time()
    neg = -data
    found = {"ifu-extract": ifu_extract_lines(ArrayCube(neg, var, cube), args.fwhm, floors["ifu-extract"]),
             "LSDCat": lsdcat_classic(neg, var, cube.wave, cube.pixscale, args.fwhm, floors["LSDCat"])}
    for m, f in found.items():
        res[m]["false"] = {float(t): int((f[:, 3] >= t).sum()) for t in thresholds[m]}
    # The default (threshold from the negated pass, at most 5 false lines): its threshold on the
    # minicube, the false lines there (its negated pass), and the recovery of the default scan
    # of each realisation (each sets its own threshold, listed in "thresholds").
    d0 = scan_lines(ArrayCube(data, var, cube), psf=None, config=ScanConfig(fwhm=args.fwhm))
    dflt = float(d0.threshold)
    thresholds["ifu-extract default"] = np.array([dflt])
    res["ifu-extract default"] = {"false": {dflt: d0.n_false}, "rec": [], "thresholds": []}
    truth_all = []
    cpu = {m: 0.0 for m in thresholds}
    for r in range(args.realisations):
        truth, model = injections(cube, var, 1000 + r, args.per_cube, args.fwhm, DEFAULT_SKY_WINDOWS)
        d = data + model
        t = time.process_time()
        f1 = ifu_extract_lines(ArrayCube(d, var, cube), args.fwhm, floors["ifu-extract"])
        cpu["ifu-extract"] += time.process_time() - t
        t = time.process_time()
        f2 = lsdcat_classic(d, var, cube.wave, cube.pixscale, args.fwhm, floors["LSDCat"])
        cpu["LSDCat"] += time.process_time() - t
        for m, f in (("ifu-extract", f1), ("LSDCat", f2)):
            res[m]["rec"].append({float(th): recovered(truth, f, cube.pixscale, th).tolist()
                                  for th in thresholds[m]})
        sc = scan_lines(ArrayCube(d, var, cube), psf=None, config=ScanConfig(fwhm=args.fwhm))
        t = sc.lines
        f3 = np.column_stack([t["X"], t["Y"], t["LINE_WAVE"], t["SNR"]]) if len(t) else np.zeros((0, 4))
        res["ifu-extract default"]["rec"].append({dflt: recovered(truth, f3, cube.pixscale, -np.inf).tolist()})
        res["ifu-extract default"]["thresholds"].append(float(sc.threshold))
        truth_all.append(truth)
        print(f"realisation {r + 1}/{args.realisations} ({time.process_time() - t0:.0f} s CPU)",
              file=sys.stderr, flush=True)
        # Partial results after every realisation (a long run can be read before its end).
        (OUT / "linescan_bench.partial.json").write_text(json.dumps(
            _summary(args, r + 1, truth_all, res, thresholds, cpu)))
    return _summary(args, args.realisations, truth_all, res, thresholds, cpu)


def _summary(args, done, truth_all, res, thresholds, cpu):
    truth = np.concatenate(truth_all)
    out = {"conditions": {"realisations": done, "per_cube": args.per_cube,
                          "fwhm_arcsec": args.fwhm, "injections": int(len(truth)),
                          "cpu_s_per_scan": {m: c / max(done, 1) for m, c in cpu.items()},
                          "load": os.getloadavg()[0]},
           "snr": truth[:, 4].tolist(), "methods": {}}
    for m in thresholds:
        rec = {th: np.concatenate([np.asarray(rr[float(th)]) for rr in res[m]["rec"]]) for th in thresholds[m]}
        out["methods"][m] = {"false": res[m]["false"],
                             "rec": {float(th): v.tolist() for th, v in rec.items()}}
        if "thresholds" in res[m]:
            out["methods"][m]["thresholds"] = res[m]["thresholds"]
    return out


def muselet_run(args, out) -> None:
    """Add MUSELET to *out* (a :func:`completeness_run` result): its lines on the negated
    minicube and its recovery of the injections of the first ``--muselet-realisations``
    realisations (the same seeds, hence the same lines), for each ``--muselet-thresh``
    (method ``MUSELET``, MUSELET's own 5-sigma cleaning) and each ``--muselet-thresh`` and
    stricter cleaning ``--muselet-snr`` (method ``MUSELET+cut``, thresholds "DETECT_THRESH/cut")."""
    import shutil
    import tempfile

    import mpdaf

    from ifu_extract.linescan import DEFAULT_SKY_WINDOWS

    cube, data, var = load_minicube()
    ths = sorted({float(t) for t in args.muselet_thresh})
    nreal = min(args.muselet_realisations, out["conditions"]["realisations"])
    snr_all = np.asarray(out["snr"])
    root = Path(tempfile.mkdtemp(prefix="linescan_muselet_"))
    muselet_setup(root)
    cuts = sorted({float(c) for c in args.muselet_snr if c > 5})
    keys = [(t, c) for t in ths for c in [5.0, *cuts]]

    def method_key(k):
        return ("MUSELET", k[0]) if k[1] == 5.0 else ("MUSELET+cut", f"{k[0]:g}/{k[1]:g}")

    methods = ["MUSELET"] + (["MUSELET+cut"] if cuts else [])
    res = {m: {"false": {}, "rec": {}, "false_lines": {}} for m in methods}
    for k in keys:
        m, label = method_key(k)
        res[m]["rec"][label] = []
    cond = {"realisations": 0, "thresholds": ths, "snr_cuts": cuts, "memory_pixstack": MUSELET_PIXSTACK,
            "mpdaf": mpdaf.__version__, "date": time.strftime("%Y-%m-%d"),
            "load_start": os.getloadavg()}
    out["methods"].update(res)
    out["conditions"]["muselet"] = cond
    cpu = wall = 0.0
    try:
        c0, w0 = _cpu_with_children(), time.perf_counter()
        found = muselet_lines(-data, var, root / "cube", ths, cuts)
        cond["negated_cpu_s"] = _cpu_with_children() - c0
        for k in keys:
            m, label = method_key(k)
            res[m]["false"][label] = int(len(found[k]))
            res[m]["false_lines"][label] = found[k].tolist()
        print("MUSELET negated: " + ", ".join(f"{len(found[t, 5.0])} lines at {t:g}" for t in ths)
              + f" ({cond['negated_cpu_s']:.0f} s CPU, {time.perf_counter() - w0:.0f} s)",
              file=sys.stderr, flush=True)
        for r in range(nreal):
            truth, model = injections(cube, var, 1000 + r, args.per_cube, args.fwhm, DEFAULT_SKY_WINDOWS)
            if not np.array_equal(truth[:, 4], snr_all[r * args.per_cube:(r + 1) * args.per_cube]):
                raise RuntimeError("MUSELET's injections differ from the other methods'")
            shutil.rmtree(root / "cube", ignore_errors=True)
            c0, w0 = _cpu_with_children(), time.perf_counter()
            found = muselet_lines(data + model, var, root / "cube", ths, cuts)
            cpu += _cpu_with_children() - c0
            wall += time.perf_counter() - w0
            for k in keys:
                m, label = method_key(k)
                res[m]["rec"][label].extend(recovered(truth, found[k], cube.pixscale, -np.inf).tolist())
            _realisation_done("MUSELET", r, nreal, cpu, wall, cond, out, "linescan_muselet.partial.json")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _realisation_done(name, r, nreal, cpu, wall, cond, out, partial) -> None:
    """After a peer's realisation *r* (0-based): its costs into *cond*, one progress line, and
    the results so far saved to ``bench/out/<partial>`` (a long run can be read while it goes)."""
    cond.update(realisations=r + 1, cpu_s_per_realisation=cpu / (r + 1),
                wall_s_per_realisation=wall / (r + 1), load_end=os.getloadavg())
    print(f"{name} realisation {r + 1}/{nreal} ({cpu / (r + 1):.0f} s CPU, "
          f"{wall / (r + 1):.0f} s wall per realisation, load {os.getloadavg()[0]:.1f})",
          file=sys.stderr, flush=True)
    (OUT / partial).write_text(json.dumps(out))


def _pair_key(a, b) -> str:
    return f"{a:.6g}:{b:.6g}"


def origin_run(args, out) -> None:
    """Add ORIGIN to *out* (a :func:`completeness_run` result): its lines on the negated minicube
    and its recovery of the injections of the first ``--origin-realisations`` realisations (the
    same seeds, hence the same lines), at fixed threshold pairs (T_GLR, STD) applied alike to
    every cube: method ``ORIGIN``, the pairs ORIGIN derives from its purity estimate on the
    minicube itself (no injection) for each ``--origin-purity`` (threshold = that purity);
    method ``ORIGIN T_GLR only``, thresholds ``--origin-tglr`` on T_GLR with the detection on
    ORIGIN's STD cube switched off (its threshold 1e9)."""
    import shutil
    import tempfile

    from ifu_extract.linescan import DEFAULT_SKY_WINDOWS

    cube, data, var = load_minicube()
    nreal = min(args.origin_realisations, out["conditions"]["realisations"])
    snr_all = np.asarray(out["snr"])
    fpix = args.fwhm / cube.pixscale
    root = Path(tempfile.mkdtemp(prefix="linescan_origin_"))
    psf = root / "psf.fits"
    origin_psf(psf, data.shape[0], fpix)
    purities = sorted({float(p) for p in args.origin_purity})
    res = {m: {"false": {}, "rec": {}, "false_lines": {}} for m in ("ORIGIN", "ORIGIN T_GLR only")}
    cond = {"realisations": 0, "purities": purities, "date": time.strftime("%Y-%m-%d"),
            "load_start": os.getloadavg(), "python": ORIGIN_PYTHON, "own_thresholds": []}
    out["methods"].update(res)
    out["conditions"]["origin"] = cond
    cpu = wall = 0.0
    try:
        ref = origin_lines(data, var, root / "ref", psf, fpix, purities=purities)
        cond.update(version=ref["version"], steps=ref["steps"], step06_bins=ref["step06_bins"],
                    reference_pairs=ref["pairs"])
        rows = {}   # pair key -> (method, threshold label)
        for p in purities:
            a, b = ref["pairs"][f"purity {p:g}"]
            if np.isfinite(a) and np.isfinite(b):
                rows[_pair_key(a, b)] = ("ORIGIN", p)
        for t in sorted({float(t) for t in args.origin_tglr}):
            rows[_pair_key(t, 1e9)] = ("ORIGIN T_GLR only", t)
        pairs = [tuple(float(v) for v in k.split(":")) for k in rows]
        for m, th in rows.values():
            res[m]["rec"][th] = []
        c0, w0 = _cpu_with_children(), time.perf_counter()
        neg = origin_lines(-data, var, root / "neg", psf, fpix, purities=purities, pairs=pairs)
        cond["negated_cpu_s"] = _cpu_with_children() - c0
        cond["negated_own_thresholds"] = {k: v for k, v in neg["pairs"].items() if k.startswith("purity")}
        for k, (m, th) in rows.items():
            res[m]["false"][th] = int(len(neg["lines"][k]))
            res[m]["false_lines"][th] = neg["lines"][k].tolist()
        print(f"ORIGIN {ref['version']} negated: ({cond['negated_cpu_s']:.0f} s CPU, "
              f"{time.perf_counter() - w0:.0f} s)", file=sys.stderr, flush=True)
        for r in range(nreal):
            truth, model = injections(cube, var, 1000 + r, args.per_cube, args.fwhm, DEFAULT_SKY_WINDOWS)
            if not np.array_equal(truth[:, 4], snr_all[r * args.per_cube:(r + 1) * args.per_cube]):
                raise RuntimeError("ORIGIN's injections differ from the other methods'")
            c0, w0 = _cpu_with_children(), time.perf_counter()
            found = origin_lines(data + model, var, root / "inj", psf, fpix, purities=purities, pairs=pairs)
            cpu += _cpu_with_children() - c0
            wall += time.perf_counter() - w0
            cond["own_thresholds"].append({k: v for k, v in found["pairs"].items() if k.startswith("purity")})
            for k, (m, th) in rows.items():
                res[m]["rec"][th].extend(recovered(truth, found["lines"][k], cube.pixscale, -np.inf).tolist())
            _realisation_done("ORIGIN", r, nreal, cpu, wall, cond, out, "linescan_origin.partial.json")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _th_order(th):
    """Sort key of a threshold: a number, or "DETECT_THRESH/cut" (MUSELET+cut)."""
    return tuple(float(x) for x in str(th).split("/"))


def _th_label(th) -> str:
    return "/".join(f"{x:g}" for x in _th_order(th))


def report(out) -> str:
    snr = np.asarray(out["snr"])
    bins = REPORT_BINS
    idx = np.clip(np.digitize(snr, bins) - 1, 0, len(bins) - 2)
    lines = ["| method | threshold | false (negated) | "
             + " | ".join(f"S/N {a}-{b}" for a, b in zip(bins[:-1], bins[1:])) + " | S/N >= 8 |",
             "|" + "---|" * (len(bins) + 3)]
    for m, r in out["methods"].items():
        for th, false in sorted(r["false"].items(), key=lambda t: _th_order(t[0])):
            rec = np.asarray(r["rec"].get(th, []), dtype=bool)
            if rec.size == 0:
                continue
            s = snr[:rec.size]
            ii = idx[:rec.size]
            cells = [f"{rec[ii == k].mean():.2f}" if (ii == k).any() else "-" for k in range(len(bins) - 1)]
            lines.append(f"| {m} | {_th_label(th)} | {false} | " + " | ".join(cells)
                         + f" | {rec[s >= 8].mean():.3f} |")
    return "\n".join(lines)


def equal_false(out, ours="ifu-extract") -> str:
    """Completeness (S/N >= 8) of each method at the threshold whose false count is the largest
    not above each of ours: the comparison at equal false counts."""
    snr = np.asarray(out["snr"])

    def table(m):
        r = out["methods"][m]
        rows = []
        for th, false in r["false"].items():
            rec = np.asarray(r["rec"].get(th, []), dtype=bool)
            if rec.size:
                rows.append((int(false), _th_label(th), float(rec[snr[:rec.size] >= 8].mean())))
        return sorted(rows)

    mine = table(ours)
    lines = ["| false lines (negated) | " + " | ".join(f"{m} (threshold, S/N >= 8)" for m in out["methods"]) + " |",
             "|" + "---|" * (len(out["methods"]) + 1)]
    for false in sorted({f for f, _, _ in mine if f > 0}):
        cells = []
        for m in out["methods"]:
            cand = [(f, t, r) for f, t, r in table(m) if f <= false]
            best = max(cand, key=lambda c: c[2]) if cand else None
            cells.append(f"{best[2]:.3f} ({best[1]}, {best[0]} false)" if best else "-")
        lines.append(f"| <= {false} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def oracle_noise(args, n=6000, seed=0) -> dict:
    """Noise of the *optimal* line-flux estimate on the real minicube, in units of STAT's.

    The injections' exact template (Moffat ``--fwhm`` × Gaussian 4 Å FWHM, 1/STAT weights) is
    applied at *n* random positions and wavelengths (off the sky windows) of the minicube minus
    its running-median continuum (151 channels), with and without the per-channel median
    residual of the continuum-faint half of the spaxels removed (the scan's sky residual).  The
    robust spread of ``sum(m r / v) / sqrt(sum(m² / v))`` is 1 if STAT is the noise: an oracle
    that knows where a line is sees its STAT S/N divided by this spread.
    """
    from ifu_extract.contsub import fit_continuum
    from ifu_extract.linescan import DEFAULT_SKY_WINDOWS

    cube, data, var = load_minicube()
    wave = cube.wave
    dw = float(np.median(np.diff(wave)))
    resid = data - fit_continuum(data, None, wave, method="median", median_width=151 * dw).continuum
    white = np.nanmedian(data, axis=0)
    faint = white <= np.nanmedian(white)
    off = np.nanmedian(resid[:, faint], axis=1)
    rng = np.random.default_rng(seed)
    pulls = {"raw": [], "sky residual removed": []}
    bright = []
    s = 4.0 / 2.3548
    for _ in range(n):
        lam = rng.uniform(wave[0] + 30, wave[-1] - 30)
        if any(a - 6 <= lam <= b + 6 for a, b in DEFAULT_SKY_WINDOWS):
            continue
        x, y = rng.uniform(2, cube.nx - 3), rng.uniform(2, cube.ny - 3)
        z = np.flatnonzero(np.abs(wave - lam) < 5 * s)
        m = (np.exp(-0.5 * ((wave[z] - lam) / s) ** 2)[:, None, None]
             * _psf_image((cube.ny, cube.nx), x, y, args.fwhm / cube.pixscale)[None])
        v = var[z]
        for name, r in (("raw", resid[z]), ("sky residual removed", resid[z] - off[z][:, None, None])):
            ok = np.isfinite(r) & np.isfinite(v) & (v > 0)
            num = np.sum(np.where(ok, m * r / np.where(ok, v, 1), 0))
            den = np.sum(np.where(ok, m * m / np.where(ok, v, 1), 0))
            pulls[name].append(num / np.sqrt(den))
        bright.append(white[int(round(y)), int(round(x))] > np.nanmedian(white))
    bright = np.array(bright)

    def spread(a):
        a = np.asarray(a)
        return float(1.4826 * np.median(np.abs(a - np.median(a))))

    return {name: {"all": spread(p), "faint half": spread(np.asarray(p)[~bright]),
                   "bright half": spread(np.asarray(p)[bright]), "positions": len(p)}
            for name, p in pulls.items()}


def speed_run(args) -> dict:
    """CPU seconds of scan_lines on a synthetic (3681, 300, 300) float32 DATA+STAT cube."""
    from astropy.wcs import WCS

    from ifu_extract.linescan import ArrayCube, ScanConfig, scan_lines

    nz, ny, nx = args.speed_shape
    rng = np.random.default_rng(7)
    data = np.empty((nz, ny, nx), dtype=np.float32)
    for z0 in range(0, nz, 256):
        data[z0:z0 + 256] = rng.standard_normal((min(256, nz - z0), ny, nx), dtype=np.float32)
    var = np.ones_like(data)

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crval = [150.0, 2.0]

    class Like:
        wave = 4750.0 + 1.25 * np.arange(nz)
        dwave = np.full(nz, 1.25)
        pixscale = 0.2
        primary_header = data_header = {}
    Like.wcs = wcs

    t = time.process_time()
    w = time.perf_counter()
    scan = scan_lines(ArrayCube(data, var, Like), config=ScanConfig())
    return {"shape": [nz, ny, nx], "cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w,
            "lines": len(scan.lines), "false": scan.n_false, "load": os.getloadavg()[0]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--realisations", type=int, default=50)
    ap.add_argument("--per-cube", type=int, default=30)
    ap.add_argument("--fwhm", type=float, default=0.7, help="PSF FWHM of the injections and filters, arcsec")
    ap.add_argument("--muselet", action="store_true",
                    help="also MUSELET (slow: about 3 min per realisation for 4 thresholds)")
    ap.add_argument("--muselet-thresh", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0],
                    help="SExtractor DETECT_THRESH of MUSELET's narrow bands (its default: 2.5)")
    ap.add_argument("--muselet-realisations", type=int, default=17,
                    help="MUSELET on the first N realisations only")
    ap.add_argument("--muselet-snr", type=float, nargs="*", default=[7, 10, 15, 20, 30],
                    help="stricter cuts than MUSELET's 5-sigma cleaning, rows MUSELET+cut")
    ap.add_argument("--origin", action="store_true",
                    help="also ORIGIN (muse_origin, run in its own venv: ORIGIN_PYTHON)")
    ap.add_argument("--origin-realisations", type=int, default=50, help="ORIGIN on the first N realisations only")
    ap.add_argument("--origin-purity", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
                    help="purities whose thresholds ORIGIN derives on the minicube (its default: 0.9)")
    ap.add_argument("--origin-tglr", type=float, nargs="+", default=list(np.arange(5.0, 13.01, 0.5)),
                    help="T_GLR thresholds of the rows 'ORIGIN T_GLR only' (no STD-cube detection)")
    ap.add_argument("--speed", action="store_true", help="only the speed benchmark")
    ap.add_argument("--oracle-noise", action="store_true",
                    help="only the noise of the optimal estimate (true template) vs STAT's")
    ap.add_argument("--speed-shape", type=int, nargs=3, default=[3681, 300, 300])
    ap.add_argument("--report", type=Path, default=None, help="only print the table of a saved JSON")
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    if args.report:
        out = json.loads(args.report.read_text())
        print(json.dumps(out["conditions"], indent=1))
        print(report(out))
        print()
        print(equal_false(out))
        return
    if args.oracle_noise:
        out = oracle_noise(args)
        print(json.dumps(out, indent=1))
        (OUT / "linescan_oracle_noise.json").write_text(json.dumps(out, indent=1))
        return
    if args.speed:
        out = speed_run(args)
        print(json.dumps(out, indent=1))
        (OUT / "linescan_speed.json").write_text(json.dumps(out, indent=1))
        return
    out = completeness_run(args)
    name = "linescan_bench.json"
    if args.muselet:
        muselet_run(args, out)
        name = "linescan_muselet.json"
    if args.origin:
        origin_run(args, out)
        name = "linescan_origin.json"
    (OUT / name).write_text(json.dumps(out))
    print(json.dumps(out["conditions"], indent=1))
    print(report(out))
    print()
    print(equal_false(out))


if __name__ == "__main__":
    main()

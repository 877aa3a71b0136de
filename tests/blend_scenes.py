"""Blind-style blend scenes for the deblending tests and ``bench/deblend_bench.py`` (issue 15).

The regime: a faint emission-line galaxy 0.7-0.9″ from a galaxy about 20 times brighter
(Sérsic n = 4, r_e 0.5″); a Moffat PSF with β 2.3-2.8 and FWHM falling from 0.85-0.95″ to
0.60-0.70″ across 4750-9350 Å, on MUSE's 0.2″ spaxels; MUSE FSF keywords that match the PSF
exactly.  In the *harder* case the bright galaxy has a bluer envelope than its core: a red
n = 4 core and a blue exponential envelope, two Sérsic components with their own spectra.

A scene can also come with an HST-like image of the field: the sources' intrinsic light in one
broad band (their band fluxes, so a colour gradient shows), on a 0.05″ grid, with a 0.1″ FWHM
Gaussian PSF and a little noise, with a celestial WCS aligned with the cube's.

:func:`score` is the issue's metric: ``S = a·T_self + b·T_neighbour + c`` fitted over channels,
``contamination = b·ΣT_neighbour / (a·ΣT_self)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import gaussian_filter

from ifu_extract import synth

WAVE0, WAVE1 = 4750.0, 9350.0
PIXSCALE = 0.2
SHAPE = 31
#: FWHM (arcsec) of the HST-like image's Gaussian PSF (give it as the deblending's image_fwhm).
HST_FWHM = 0.1


@dataclass(frozen=True)
class Scene:
    """One configuration of the regime.

    Attributes
    ----------
    name : str
    sep : float
        Separation of the two galaxies, arcsec.
    ratio : float
        Total flux of the bright galaxy over that of the faint one.
    angle : float
        Position angle of the faint galaxy around the bright one, degrees from +x.
    gradient : bool
        Harder case: the bright galaxy is a red n = 4 core and a blue exponential envelope.
    beta : float
    fwhm : (float, float)
        PSF FWHM (arcsec) at 4750 and 9350 Å.
    cat_offset : (float, float)
        Error of the catalogue's x position of the bright and the faint galaxy, arcsec.
    faint_re : float
        Half-light radius of the faint galaxy (exponential), arcsec; 0 for a point source.
    z_faint : float
        Redshift of the faint galaxy's emission lines.
    """

    name: str
    sep: float = 0.8
    ratio: float = 20.0
    angle: float = 30.0
    gradient: bool = False
    beta: float = 2.5
    fwhm: tuple = (0.90, 0.65)
    faint_re: float = 0.15
    z_faint: float = 0.45
    cat_offset: tuple = (0.0, 0.0)


#: The configurations of the benchmark: easier (one n = 4 galaxy) and harder (colour gradient),
#: at the separations, flux ratios and PSFs of the regime.
SCENES = (
    Scene("easy-0.9", sep=0.9, ratio=20, angle=30, beta=2.8, fwhm=(0.85, 0.60)),
    Scene("easy-0.8-off", sep=0.8, ratio=20, angle=110, beta=2.5, fwhm=(0.90, 0.65),
          cat_offset=(0.08, 0.0)),
    Scene("easy-0.7", sep=0.7, ratio=20, angle=200, beta=2.3, fwhm=(0.95, 0.70), faint_re=0.0),
    Scene("easy-0.8-r25-off", sep=0.8, ratio=25, angle=300, beta=2.6, fwhm=(0.88, 0.62),
          cat_offset=(-0.1, 0.05)),
    Scene("hard-0.9", sep=0.9, ratio=20, angle=60, gradient=True, beta=2.8, fwhm=(0.85, 0.60)),
    Scene("hard-0.8-off", sep=0.8, ratio=20, angle=160, gradient=True, beta=2.5, fwhm=(0.92, 0.66),
          cat_offset=(0.1, 0.0)),
    Scene("hard-0.7", sep=0.7, ratio=20, angle=250, gradient=True, beta=2.3, fwhm=(0.95, 0.70),
          faint_re=0.0),
    Scene("hard-0.8-r15-off", sep=0.8, ratio=15, angle=330, gradient=True, beta=2.4, fwhm=(0.90, 0.68),
          cat_offset=(-0.06, -0.05)),
)


def wave_grid(nwave: int) -> np.ndarray:
    """``nwave`` channels spanning 4750-9350 Å (MUSE's range; 1.25 Å steps for 3681)."""
    return np.linspace(WAVE0, WAVE1, nwave)


def spectra(scene: Scene, wave: np.ndarray) -> dict:
    """True total spectra per component: ``core``, ``envelope`` (harder case) or ``bright``,
    and ``faint``; the faint one carries 1/ratio of the bright galaxy's summed flux."""
    z = 0.25  # the bright galaxy: 4000 Å break and absorption lines
    absorb = [(lam * (1 + z), s, d) for lam, s, d in (
        (3934, 5, .5), (3969, 5, .45), (4304, 8, .3), (4861, 6, .3), (5175, 8, .35), (5270, 6, .2),
        (5893, 6, .35), (6563, 6, .3))]
    brk = 1.0 / (1.0 + np.exp(-(wave - 4000 * (1 + z)) / 30.0))
    out = {}
    if scene.gradient:
        core = synth.continuum_spectrum(wave, 1.0, 0.9, absorb) * (0.4 + 0.6 * brk)
        env = synth.continuum_spectrum(wave, 1.0, -0.4, [(c, s, d / 2) for c, s, d in absorb]) * (0.8 + 0.2 * brk)
        out["core"] = core * 55.0 / core.mean()
        out["envelope"] = env * 45.0 / env.mean()
        bright = out["core"] + out["envelope"]
    else:
        b = synth.continuum_spectrum(wave, 1.0, 0.6, absorb) * (0.5 + 0.5 * brk)
        out["bright"] = bright = b * 100.0 / b.mean()
    zf = scene.z_faint  # [O II], Hβ, [O III], Hα, [N II]: 40 % of the faint galaxy's flux
    lines = sum(synth.emission_line(wave, lam * (1 + zf), 2.5, w) for lam, w in (
        (3727, 1.0), (4861, 0.5), (4959, 0.5), (5007, 1.5), (6563, 1.6), (6584, 0.4)))
    cont = synth.continuum_spectrum(wave, 1.0, -0.3)
    total = bright.sum() / scene.ratio
    out["faint"] = cont * (0.6 * total / cont.sum()) + lines * (0.4 * total / lines.sum())
    return out


def positions(scene: Scene) -> tuple:
    """0-based cube pixel positions of the bright and the faint galaxy."""
    xb, yb = 15.3, 14.8
    a = np.deg2rad(scene.angle)
    d = scene.sep / PIXSCALE
    return (xb, yb), (xb + d * np.cos(a), yb + d * np.sin(a))


def sources(scene: Scene, wave: np.ndarray) -> list:
    """The :class:`~ifu_extract.synth.SynthSource` list of the scene."""
    spec = spectra(scene, wave)
    pb, pf = positions(scene)
    if scene.gradient:
        out = [synth.SynthSource("core", *pb, spec["core"], kind="sersic", re_arcsec=0.35, n=4.0,
                                 q=0.85, pa_deg=25.0),
               synth.SynthSource("envelope", *pb, spec["envelope"], kind="sersic", re_arcsec=0.9,
                                 n=1.0, q=0.75, pa_deg=25.0)]
    else:
        out = [synth.SynthSource("bright", *pb, spec["bright"], kind="sersic", re_arcsec=0.5, n=4.0,
                                 q=0.8, pa_deg=25.0)]
    if scene.faint_re > 0:
        out.append(synth.SynthSource("faint", *pf, spec["faint"], kind="sersic",
                                     re_arcsec=scene.faint_re, n=1.0, q=0.9, pa_deg=70.0))
    else:
        out.append(synth.SynthSource("faint", *pf, spec["faint"]))
    return out


@dataclass
class Built:
    """A written scene: the cube, its catalogue, the true spectra and (optionally) an image."""

    cube: Path
    catalog: Path
    t_bright: np.ndarray
    t_faint: np.ndarray
    image: Path | None
    oracle: tuple | None


def build(scene: Scene, seed: int, outdir, *, nwave: int = 1841, peak_snr: float = 10.0,
          image: bool = False, oracle: bool = False, image_offset=(0.0, 0.0),
          image_faint: float = 1.0) -> Built:
    """Write the scene's cube (MUSE layout, exact FSF keywords), ``cat.txt`` and optionally the
    HST-like image.

    Parameters
    ----------
    nwave : int
        Channels over 4750-9350 Å.
    peak_snr : float
        S/N per channel of the bright galaxy's brightest spaxel (median over channels).
    image : bool
        Also write ``hst.fits`` (see the module docstring).
    image_offset : (float, float)
        Error of the image's astrometry, arcsec along RA·cos(Dec) and Dec: its CRVAL is moved by
        it, so every source lies that far from its cube position in the image's WCS.
    image_faint : float
        The faint galaxy's light in the image, relative to the cube's band (0: invisible there,
        e.g. below a shallow image's noise).
    oracle : bool
        Also return the fluxes fitted with the true spatial models (the noise's share of the
        score; see ``tests/test_deblend.py``).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    wave = wave_grid(nwave)
    srcs = sources(scene, wave)
    dw = float(wave[1] - wave[0])
    _, _, _, hdr, truth = synth.make_cube(srcs, shape=(nwave, SHAPE, SHAPE), wave0=WAVE0, dwave=dw,
                                          pixscale=PIXSCALE, fwhm=scene.fwhm, beta=scene.beta,
                                          sigma=0.0, keep_models=True, seed=seed, exact=True)
    model = sum(truth.models[s.id].astype(np.float64) for s in srcs)
    sigma = float(np.median(model.reshape(nwave, -1).max(axis=1))) / peak_snr
    rng = np.random.default_rng(7919 + seed)
    data = (model + rng.standard_normal(model.shape) * sigma).astype(np.float32)
    var = np.full(model.shape, sigma**2, dtype=np.float32)
    dq = np.zeros(model.shape, np.uint8)
    path = outdir / "cube.fits"
    synth.cube_hdulist(data, var, dq, hdr).writeto(path, overwrite=True)
    bright_ids = [s.id for s in srcs if s.id != "faint"]
    t_bright = sum(s.spectrum for s in srcs if s.id != "faint")
    t_faint = srcs[-1].spectrum
    pb, pf = positions(scene)
    from astropy.wcs import WCS

    wcs = WCS(hdr).celestial
    # The catalogue's positions may be off the truth (arcsec, bright then faint, along +x).
    ob, of = (o / PIXSCALE for o in scene.cat_offset)
    ra, dec = wcs.all_pix2world([pb[0] + ob, pf[0] + of], [pb[1], pf[1]], 0)
    cat = outdir / "cat.txt"
    cat.write_text("ID RA DEC\n" + "".join(f"{i} {r:.9f} {d:.9f}\n"
                                           for i, r, d in zip((1, 2), ra, dec)))
    img_path = None
    if image:
        img_path = outdir / "hst.fits"
        seen = [replace(s, spectrum=s.spectrum * image_faint) if s.id == "faint" else s for s in srcs]
        hst_image(seen, wave, hdr, rng, offset=image_offset).writeto(img_path, overwrite=True)
    orc = None
    if oracle:
        from ifu_extract.deblend import solve_layers

        units = [truth.models[s.id] / np.where(s.spectrum == 0, 1, s.spectrum)[:, None, None]
                 for s in srcs]
        f = np.empty((nwave, len(units)))
        for z0 in range(0, nwave, 512):
            z1 = min(z0 + 512, nwave)
            M = np.stack([u[z0:z1].reshape(z1 - z0, -1) for u in units], axis=1)
            f[z0:z1] = solve_layers(data[z0:z1].reshape(z1 - z0, -1), var[z0:z1].reshape(z1 - z0, -1), M)[0]
        orc = (f[:, :len(bright_ids)].sum(axis=1), f[:, -1])
    return Built(path, cat, t_bright, t_faint, img_path, orc)


def hst_image(srcs, wave, cube_header, rng, *, sub: int = 4, fwhm: float = HST_FWHM,
              band=(7000.0, 9000.0), snr: float = 200.0, offset=(0.0, 0.0),
              shape: int = SHAPE) -> fits.HDUList:
    """The sources' intrinsic light in one broad band on a grid *sub* times finer than the
    cube's (*shape* x *shape* spaxels of 0.2″, tangent point at the centre), with a Gaussian PSF
    of *fwhm* arcsec and noise (peak S/N *snr*), and a WCS aligned with the cube's (same
    tangent point; the grids share their outer edges), whose CRVAL is then moved by *offset*
    (arcsec, RA·cos(Dec) and Dec: a wrong astrometry)."""
    n = shape * sub
    inband = (wave >= band[0]) & (wave <= band[1])
    img = np.zeros((n, n))
    for s in srcs:
        flux = float(np.mean(s.spectrum[inband]))
        xf, yf = (s.x + 0.5) * sub - 0.5, (s.y + 0.5) * sub - 0.5
        if s.kind == "sersic":
            prof = synth.sersic_image((n, n), xf, yf, s.re_arcsec / PIXSCALE * sub, s.n, s.q, s.pa_deg)
        else:
            # Split over the 4 nearest pixels (bilinear): the point's centroid is its position,
            # not the nearest pixel's centre (up to 0.025″ off on this grid).
            prof = np.zeros((n, n))
            x0, y0 = int(np.floor(xf)), int(np.floor(yf))
            tx, ty = xf - x0, yf - y0
            prof[y0:y0 + 2, x0:x0 + 2] = np.outer([1 - ty, ty], [1 - tx, tx])
        img += flux * prof
    img = gaussian_filter(img, fwhm / (PIXSCALE / sub) / 2.3548, mode="constant")
    img += rng.standard_normal(img.shape) * img.max() / snr
    h = fits.Header()
    for key in ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "RADESYS"):
        h[key] = cube_header[key]
    h["CRVAL1"] = h["CRVAL1"] + offset[0] / 3600.0 / np.cos(np.deg2rad(h["CRVAL2"]))
    h["CRVAL2"] = h["CRVAL2"] + offset[1] / 3600.0
    h["CRPIX1"] = (n + 1) / 2.0
    h["CRPIX2"] = (n + 1) / 2.0
    h["CD1_1"] = cube_header["CD1_1"] / sub
    h["CD2_2"] = cube_header["CD2_2"] / sub
    h["CD1_2"] = h["CD2_1"] = 0.0
    h["BUNIT"] = "counts"
    return fits.HDUList([fits.PrimaryHDU(img.astype(np.float32), h)])


def score(S, t_self, t_other) -> tuple:
    """``(a, b, contamination)`` of ``S = a·T_self + b·T_other + c`` (least squares over the
    finite channels); contamination ``= b·ΣT_other / (a·ΣT_self)``."""
    S = np.asarray(S, float)
    ok = np.isfinite(S)
    A = np.column_stack([t_self[ok], t_other[ok], np.ones(ok.sum())])
    (a, b, _), *_ = np.linalg.lstsq(A, S[ok], rcond=None)
    return float(a), float(b), float(b * t_other.sum() / (a * t_self.sum()))

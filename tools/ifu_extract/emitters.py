"""Line emitters found by the line scan: their catalogue rows, images and spectra.

The line scan (:mod:`ifu_extract.linescan`) finds emission lines and groups them into objects.
This module does what follows:

* :func:`merge_emitters` (and :func:`scan_catalog`, scan then merge) adds the objects to a
  catalogue: catalogue IDs win within a matching radius, matched rows get the line wavelength,
  and the lines of catalogue objects are flagged ``catalog``;
* :func:`emitter_image` gives each object's continuum-subtracted narrow-band image around its
  strongest line (the same bands as the scan), its extraction weight;
  :func:`write_emitter_images` / :func:`read_emitter_images` keep them in one FITS file;
* :func:`extract_emitter` fits a Moffat profile (the PSF's beta, a free width no narrower than
  the PSF) to that image and extracts the optimally weighted spectrum with that profile
  (``MUSE_NB``); :func:`add_emitter_spectra` adds it to the emitters' Source files.

Images are ``(ny, nx)`` with x the fast axis, cubes ``(n_wave, ny, nx)``; pixel positions are
0-based.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

from .catalog import file_stem
from .cubeio import Cube
from .errors import OK, ParameterError
from .estimators import Spectrum1D, StampMatrices
from .image import Image
from .linescan import LineScan, ScanConfig, calibration_cards, scan_lines, sky_channels
from .psf import DEFAULT_BETA, FILTER_FWHM, PSFModel, moffat_image
from .wcsutil import world_to_pixel

#: Chi-square improvement a broader-than-PSF profile must bring to be preferred (3 sigma).
EXTENDED_DCHI2 = 9.0

__all__ = [
    "band_edges",
    "emitter_image",
    "merge_emitters",
    "scan_catalog",
    "emitter_profile",
    "extract_emitter",
    "write_emitter_images",
    "write_no_emitter_images",
    "read_emitter_images",
    "emitter_key",
    "add_emitter_spectra",
]


def band_edges(wave: np.ndarray, cfg: ScanConfig) -> tuple[np.ndarray, np.ndarray]:
    """Channel ranges and centres of narrow bands of ``cfg.window`` (for :func:`emitter_image`).

    Returns
    -------
    ranges : numpy.ndarray
        ``(n_bands, 6)`` int: ``l0 l1 b0 b1 r0 r1`` channel indices (empty ranges have
        ``x0 == x1``).
    centres : numpy.ndarray
        ``(n_bands,)`` band centres, Angstrom.
    """
    step = cfg.window / 2.0 if cfg.step is None else cfg.step
    gap = cfg.window / 2.0 if cfg.gap is None else cfg.gap
    lo = float(wave[0]) if cfg.wave_range is None else max(float(wave[0]), float(cfg.wave_range[0]))
    hi = float(wave[-1]) if cfg.wave_range is None else min(float(wave[-1]), float(cfg.wave_range[1]))
    half = cfg.window / 2.0
    centres = np.arange(lo + half, hi - half + 1e-9, step)
    idx = lambda w: np.searchsorted(wave, w, side="left")  # noqa: E731 - first channel >= w
    l0, l1 = idx(centres - half), idx(centres + half)
    sw = cfg.side_width
    b0, b1 = idx(centres - half - gap - sw), idx(centres - half - gap)
    r0, r1 = idx(centres + half + gap), idx(centres + half + gap + sw)
    if sw <= 0:
        b0 = b1 = r0 = r1 = np.zeros_like(l0)
    return np.stack([l0, l1, b0, b1, r0, r1], axis=1), centres


def _span(r) -> tuple[int, int]:
    """Channel range covering the non-empty line and side ranges of bands *r* ``(n, 6)``."""
    starts = [r[:, 0]] + [r[r[:, b] > r[:, a], a] for a, b in ((2, 3), (4, 5))]
    ends = [r[:, 1]] + [r[r[:, b] > r[:, a], b] for a, b in ((2, 3), (4, 5))]
    return int(np.concatenate(starts).min()), int(np.concatenate(ends).max())

def _band_images(data, var, ranges, z0, sky):
    """Narrow-band images of several bands from one block of channels (cumulative sums).

    Returns ``nb``, ``nb_var`` ``(n, ny, nx)`` (line mean minus side-band mean) and ``ok``
    ``(n,)`` (bands with line channels and, when side bands are asked for, at least one).
    """
    good = np.isfinite(data)
    if var is not None:
        good &= np.isfinite(var) & (var > 0)
    d = np.where(good, data, 0.0).astype(np.float64)
    v = np.where(good, var, 0.0).astype(np.float64) if var is not None else good.astype(np.float64)
    side_ok = good & ~sky[z0:z0 + data.shape[0], None, None]
    zero = np.zeros((1,) + data.shape[1:])
    cd = np.concatenate([zero, np.cumsum(d, axis=0)])
    cv = np.concatenate([zero, np.cumsum(v, axis=0)])
    cn = np.concatenate([zero, np.cumsum(good, axis=0)])
    cds = np.concatenate([zero, np.cumsum(np.where(side_ok, d, 0.0), axis=0)])
    cvs = np.concatenate([zero, np.cumsum(np.where(side_ok, v, 0.0), axis=0)])
    cns = np.concatenate([zero, np.cumsum(side_ok, axis=0)])
    r = ranges - z0
    l0, l1, b0, b1, r0, r1 = (r[:, i] for i in range(6))
    n_line = cn[l1] - cn[l0]
    with np.errstate(invalid="ignore", divide="ignore"):
        line = (cd[l1] - cd[l0]) / n_line
        line_v = (cv[l1] - cv[l0]) / n_line**2
        nb_blue = cns[b1] - cns[b0]
        nb_red = cns[r1] - cns[r0]
        blue = (cds[b1] - cds[b0]) / nb_blue
        red = (cds[r1] - cds[r0]) / nb_red
        blue_v = (cvs[b1] - cvs[b0]) / nb_blue**2
        red_v = (cvs[r1] - cvs[r0]) / nb_red**2
    has_b, has_r = nb_blue > 0, nb_red > 0
    nside = has_b.astype(float) + has_r
    use_sides = (ranges[:, 3] > ranges[:, 2]) | (ranges[:, 5] > ranges[:, 4])
    cont = np.where(has_b, blue, 0.0) + np.where(has_r, red, 0.0)
    cont_v = np.where(has_b, blue_v, 0.0) + np.where(has_r, red_v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cont = np.where(nside > 0, cont / nside, np.nan)
        cont_v = np.where(nside > 0, cont_v / nside**2, np.nan)
    nb = np.where(use_sides[:, None, None], line - cont, line)
    nb_v = np.where(use_sides[:, None, None], line_v + cont_v, line_v)
    nb = np.where(n_line > 0, nb, np.nan)
    ok = (n_line.max(axis=(1, 2)) > 0) & (~use_sides | (nside.max(axis=(1, 2)) > 0))
    if var is None:
        nb_v = np.full_like(nb, np.nan)
    return nb, nb_v, ok


def emitter_image(cube: Cube, lbda: float, config: ScanConfig | None = None, *,
                  contsub: Cube | None = None) -> Image:
    """The continuum-subtracted narrow-band image of the band centred on *lbda* (the weight
    image of an emitter), with the same band and side-band definitions as the scan.

    Returns
    -------
    Image
        ``(ny, nx)`` mean flux density in the band minus the side-band continuum, its variance,
        the cube's WCS; ``meta`` records the band.
    """
    cfg = config or ScanConfig()
    src = contsub if contsub is not None else cube
    one = ScanConfig(**{**cfg.__dict__, "wave_range": (lbda - cfg.window / 2.0, lbda + cfg.window / 2.0),
                        "step": cfg.window})
    ranges, centres = band_edges(src.wave, one)
    if len(centres) == 0:
        raise ParameterError(None, "{lbda}: " + f"no band of {cfg.window:g} Angstrom at {lbda:.1f}",
                             "check the wavelength", params=("lbda",))
    r = ranges[:1].copy()
    sky = sky_channels(src.wave, cfg.sky_windows)
    z0, z1 = _span(r)
    for a, b in ((2, 3), (4, 5)):
        if r[0, b] <= r[0, a]:
            r[0, a] = r[0, b] = z0
    data, var = src.window(0, src.nx, 0, src.ny, z0, z1)
    nb, nb_v, _ = _band_images(data, var, r, z0, sky)
    meta = {"IMGTYPE": ("narrowband", "continuum-subtracted narrow band (line scan)"),
            "LINEWAVE": (float(centres[0]), "[Angstrom] band centre"),
            "LINEWID": (float(cfg.window), "[Angstrom] band width"),
            "SIDEWID": (float(cfg.side_width), "[Angstrom] continuum side-band width"),
            "SIDEGAP": (float(cfg.window / 2.0 if cfg.gap is None else cfg.gap), "[Angstrom] gap")}
    return Image(nb[0].astype(np.float32), None if var is None else nb_v[0].astype(np.float32),
                 cube.wcs, cube.unit_string, meta)


def merge_emitters(catalog: Table, emitters: Table, cube: Cube, *, radius: float = 0.6) -> Table:
    """Add line emitters to a catalogue; catalogue objects win within *radius* arcsec.

    Parameters
    ----------
    catalog : astropy.table.Table
        ``ID``, ``RA``, ``DEC`` (deg) and any other columns (``STATUS``...).
    emitters : astropy.table.Table
        :attr:`ifu_extract.linescan.LineScan.catalog`.
    cube : Cube
        Gives the pixel grid on which distances are measured.
    radius : float
        Matching radius, arcsec.

    Returns
    -------
    astropy.table.Table
        The catalogue rows (in order, IDs unchanged) with ``LINE_WAVE`` (Angstrom, NaN when no
        emitter matched) and ``ORIGIN`` (``catalog`` or ``linescan``), then the unmatched emitters
        (``ID`` from the scan, ``STATUS`` ok).  An emitter ID already used by the catalogue gets
        a ``_L`` suffix.
    """
    out = catalog.copy(copy_data=True)
    n = len(out)
    if "ID" in out.colnames and out["ID"].dtype.kind != "U":
        out["ID"] = np.array([str(v) for v in out["ID"]], dtype=str) if n else np.array([], dtype="U8")
    line_wave = np.full(n, np.nan)
    ra = _degrees(out["RA"]) if n else np.zeros(0)
    dec = _degrees(out["DEC"]) if n else np.zeros(0)
    ok = np.isfinite(ra) & np.isfinite(dec)
    cx = np.full(n, np.nan)
    cy = np.full(n, np.nan)
    if ok.any():
        cx[ok], cy[ok] = world_to_pixel(cube.wcs, ra[ok], dec[ok])
    rpix = radius / cube.pixscale
    new = []
    ids = {}
    tree = cKDTree(np.column_stack([cx[ok], cy[ok]])) if ok.any() else None
    rows_ok = np.flatnonzero(ok)
    for e in emitters:
        hit = None
        if tree is not None:
            d, k = tree.query([float(e["X"]), float(e["Y"])])
            if d <= rpix:
                hit = rows_ok[k]
        if hit is not None:
            ids[str(e["ID"])] = str(out["ID"][hit])
            if not np.isfinite(line_wave[hit]):
                line_wave[hit] = float(e["LBDA"])
        else:
            new.append(e)
    out["LINE_WAVE"] = line_wave
    out["ORIGIN"] = np.array(["catalog"] * n, dtype="U8") if n else np.array([], dtype="U8")
    if "STATUS" not in out.colnames:
        out["STATUS"] = np.array([OK] * n, dtype=object).astype(str)
    used = {str(v) for v in out["ID"]}
    width = max([len(str(v)) for v in out["ID"]] + [len(str(e["ID"])) + 4 for e in new] + [1])
    out["ID"] = np.asarray(out["ID"], dtype=f"U{width}")
    for e in new:
        eid = str(e["ID"])
        while eid in used:
            eid += "_L"
        used.add(eid)
        ids[str(e["ID"])] = eid
        row = {c: None for c in out.colnames}
        row.update({"ID": eid, "RA": float(e["RA"]), "DEC": float(e["DEC"]), "STATUS": OK,
                    "LINE_WAVE": float(e["LBDA"]), "ORIGIN": "linescan"})
        out.add_row([_fill(out[c], row[c]) for c in out.colnames])
    out.meta["_emitter_ids"] = ids   # read (and removed) by scan_catalog
    return out


def _degrees(col) -> np.ndarray:
    return np.asarray(np.ma.filled(np.ma.asarray(col, dtype=float), np.nan), dtype=float)


def _fill(col, value):
    if value is not None:
        return value
    kind = col.dtype.kind
    return np.nan if kind == "f" else (0 if kind in "iu" else "")


def emitter_profile(image: Image, x: float, y: float, *, fwhm_pix: float, beta: float = DEFAULT_BETA,
                    radius_pix: float | None = None) -> tuple[np.ndarray, dict]:
    """A Moffat profile fitted to an emitter's narrow-band image, on the cube grid.

    The PSF's β is kept; the centre (within 1.5 spaxels) and the amplitude are fitted by
    variance-weighted least squares on a disk of *radius_pix* (default 2.5 PSF FWHM), with the
    PSF's FWHM, or with a free FWHM (up to 4 times the PSF's: extended emission such as
    Lyman-α haloes) when that improves the chi-square by more than :data:`EXTENDED_DCHI2`.

    Returns
    -------
    profile : numpy.ndarray
        ``(ny, nx)`` unit total flux over the infinite plane.
    info : dict
        ``x``, ``y``, ``fwhm_pix`` fitted, and ``fitted`` (False: the PSF at the position).
    """
    info = _fit_profile(image, x, y, fwhm_pix, beta, radius_pix)
    return moffat_image(image.shape, info["x"], info["y"], info["fwhm_pix"], beta), info


def _fit_profile(image: Image, x, y, fwhm_pix, beta, radius_pix=None) -> dict:
    data = np.asarray(image.data, dtype=np.float64)
    var = None if image.var is None else np.asarray(image.var, dtype=np.float64)
    ny, nx = data.shape
    R = radius_pix or 2.5 * fwhm_pix
    h = int(np.ceil(R)) + 1
    xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x0, x1, y0, y1 = max(xc - h, 0), min(xc + h + 1, nx), max(yc - h, 0), min(yc + h + 1, ny)
    sub = data[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    use = np.isfinite(sub) & ((xx - x) ** 2 + (yy - y) ** 2 <= R * R)
    w = np.ones_like(sub)
    if var is not None:
        v = var[y0:y1, x0:x1]
        use &= np.isfinite(v) & (v > 0)
        w = np.where(use, 1.0 / np.sqrt(np.where(use, v, 1.0)), 0.0)
    shape = sub.shape
    sub0 = np.where(use, sub, 0.0)

    def resid(p, fwhm=None):
        f = p[3] if fwhm is None else fwhm
        return ((p[0] * moffat_image(shape, p[1] - x0, p[2] - y0, f, beta) - sub0) * w)[use]

    amp0 = max(float(np.nansum(sub0)), 1e-30)
    info = {"x": float(x), "y": float(y), "fwhm_pix": float(fwhm_pix), "fitted": False}
    if use.sum() <= 6:
        return info
    try:
        # A point source (the PSF's width) unless a broader profile is significantly better:
        # a free width, bounded below by the PSF's, would only ever grow with the noise.
        lo, hi = [0.0, x - 1.5, y - 1.5], [np.inf, x + 1.5, y + 1.5]
        fixed = least_squares(lambda p: resid(p, fwhm_pix), [amp0, x, y], bounds=(lo, hi),
                              x_scale="jac", max_nfev=200)
        free = least_squares(resid, [*fixed.x, fwhm_pix * 1.2], x_scale="jac", max_nfev=200,
                             bounds=(lo + [fwhm_pix], hi + [4.0 * fwhm_pix]))
    except ValueError:
        return info
    best = fixed
    fwhm = float(fwhm_pix)
    if free.success and 2.0 * (fixed.cost - free.cost) > EXTENDED_DCHI2:
        best, fwhm = free, float(free.x[3])
    if best.success and best.x[0] > 0:
        info = {"x": float(best.x[1]), "y": float(best.x[2]), "fwhm_pix": fwhm, "fitted": True,
                "extended": best is free}
    return info


def extract_emitter(cube: Cube, x: float, y: float, image: Image, *, psf: PSFModel | None = None,
                    fwhm: float = FILTER_FWHM, wave_range=None, half_size: float = 2.5) -> Spectrum1D:
    """``MUSE_NB``: optimal spectrum of a line emitter, weighted by the profile fitted to its
    narrow-band image (an estimate of its total flux per channel).

    Parameters
    ----------
    cube : Cube
    x, y : float
        0-based cube pixel position of the emitter.
    image : Image
        Its narrow-band image (:func:`emitter_image`) on the cube grid.
    psf : PSFModel, optional
        Gives the narrowest FWHM and β at the image's wavelength (default: *fwhm*, β = 2.8).
    fwhm : float
        FWHM, arcsec, without *psf*.
    wave_range : (float, float), optional
        Angstrom.
    half_size : float
        Half side of the stamp, arcsec; the spectrum uses a disk of this radius.

    Returns
    -------
    Spectrum1D
        On the channels of *wave_range*; ``meta`` records the fitted profile.
    """
    lbda = float(image.meta.get("LINEWAVE", (np.mean(cube.wave), ""))[0])
    f_pix = (float(psf.fwhm(lbda)) if psf is not None else fwhm) / cube.pixscale
    beta = float(psf.beta(lbda)) if psf is not None and psf.kind == "moffat" else DEFAULT_BETA
    info = _fit_profile(image, x, y, f_pix, beta)
    h = int(np.ceil(half_size / cube.pixscale))
    xc, yc = int(np.floor(info["x"] + 0.5)), int(np.floor(info["y"] + 0.5))
    box = (xc - h, xc + h + 1, yc - h, yc + h + 1)
    z0, z1 = cube.channel_range(*(wave_range or (None, None)))
    data, var = cube.window(*box, z0, z1)
    stamp_prof = moffat_image((2 * h + 1, 2 * h + 1), info["x"] - box[0], info["y"] - box[2],
                              info["fwhm_pix"], beta)
    yy, xx = np.mgrid[0:2 * h + 1, 0:2 * h + 1]
    disk = (xx - (info["x"] - box[0])) ** 2 + (yy - (info["y"] - box[2])) ** 2 <= h * h
    st = StampMatrices(data, var)
    prof = np.broadcast_to(stamp_prof, data.shape)
    (flux, fvar), _ = st.optimal(np.ascontiguousarray(prof), disk)
    meta = {"NBWAVE": (round(lbda, 2), "[Angstrom] narrow band of the weights"),
            "NBFWHM": (round(info["fwhm_pix"] * cube.pixscale, 4), "[arcsec] fitted profile FWHM"),
            "NBFIT": (bool(info["fitted"]), "profile fitted on the narrow band")}
    return Spectrum1D(flux, fvar, meta)


def write_emitter_images(path, cube: Cube, scan: LineScan, *, contsub: Cube | None = None,
                         inputs: dict | None = None):
    """Write every emitter's narrow-band image (its extraction weight) to one FITS file.

    Extensions ``NB_<ID>`` (mean flux density in the band minus the continuum) and
    ``NB_<ID>_STAT`` (its variance), with the cube's celestial WCS and the band in the header
    (``LINEWAVE``, ``LINEWID``...); read back with :func:`read_emitter_images`.
    """
    from astropy.io import fits

    from .fitsout import add_provenance, write_hdulist

    prim = fits.PrimaryHDU()
    add_provenance(prim.header, "detect", inputs, {"line_window": scan.config.window,
                                                   "line_snr": scan.config.snr})
    prim.header["NEMIT"] = (len(scan.catalog), "line emitters")
    calibration_cards(prim.header, scan)
    hdus = [prim]
    for row in scan.catalog:
        img = emitter_image(cube, float(row["LBDA"]), scan.config, contsub=contsub)
        hdr = cube.wcs.to_header(relax=True)
        for key, value in img.meta.items():
            hdr[key] = value
        hdr["OBJ_ID"] = (str(row["ID"]), "emitter ID")
        hdr["X"] = (float(row["X"]), "[pix] 0-based cube x")
        hdr["Y"] = (float(row["Y"]), "[pix] 0-based cube y")
        if img.unit:
            hdr["BUNIT"] = img.unit
        hdus.append(fits.ImageHDU(img.data, hdr, name=f"NB_{row['ID']}"))
        if img.var is not None:
            hdus.append(fits.ImageHDU(img.var, hdr, name=f"NB_{row['ID']}_STAT"))
    return write_hdulist(fits.HDUList(hdus), path)


def write_no_emitter_images(path, *, inputs: dict | None = None):
    """Write the images file of a line scan that was off: one primary HDU, ``LINESCAN = F``,
    ``NEMIT = 0`` (:func:`read_emitter_images` reads no image from it)."""
    from astropy.io import fits

    from .fitsout import add_provenance, write_hdulist

    prim = fits.PrimaryHDU()
    add_provenance(prim.header, "detect", inputs, {"line_scan": False})
    prim.header["NEMIT"] = (0, "line emitters")
    prim.header["LINESCAN"] = (False, "line scan run (F: it was off; no line)")
    return write_hdulist(fits.HDUList([prim]), path)


def read_emitter_images(path) -> dict:
    """``{ID: Image}`` from a file written by :func:`write_emitter_images`."""
    from .cubeio import open_fits
    from .wcsutil import celestial_from_header

    out = {}
    with open_fits(path, "narrow-band image file") as hdul:
        names = [h.name for h in hdul]
        for h in hdul[1:]:
            if not h.name.startswith("NB_") or h.name.endswith("_STAT"):
                continue
            var = hdul[h.name + "_STAT"].data.astype(np.float32) if h.name + "_STAT" in names else None
            meta = {k: (h.header[k], h.header.comments[k]) for k in
                    ("LINEWAVE", "LINEWID", "SIDEWID", "SIDEGAP", "IMGTYPE") if k in h.header}
            out[str(h.header.get("OBJ_ID", h.name[3:]))] = Image(
                np.asarray(h.data, dtype=np.float32), var, celestial_from_header(h.header),
                str(h.header.get("BUNIT", "")), meta)
    return out


def scan_catalog(cube: Cube, catalog: Table | None, *, contsub: Cube | None = None,
                 psf: PSFModel | None = None, config: ScanConfig | None = None,
                 radius: float | None = None, progress=None) -> tuple[Table, LineScan]:
    """The ``detect --line-scan`` step: scan *cube*, then merge the emitters into *catalog*.

    Parameters
    ----------
    cube : Cube
    catalog : astropy.table.Table or None
        Detections (``ID``, ``RA``, ``DEC``...) to merge into; None: the emitters alone.
    contsub, psf, config, progress
        As in :func:`ifu_extract.linescan.scan_lines`.
    radius : float, optional
        Matching radius, arcsec (default ``config.merge_radius``).

    Returns
    -------
    merged : astropy.table.Table
        See :func:`merge_emitters` (with ``catalog`` None: the emitter catalogue with
        ``LINE_WAVE``, ``ORIGIN`` and ``STATUS``).
    scan : LineScan
    """
    scan = scan_lines(cube, contsub=contsub, psf=psf, config=config, progress=progress)
    if catalog is None:
        catalog = Table({"ID": np.array([], dtype="U8"), "RA": np.array([], float),
                         "DEC": np.array([], float), "STATUS": np.array([], dtype="U8")})
    r = scan.config.merge_radius if radius is None else radius
    merged = merge_emitters(catalog, scan.catalog, cube, radius=r)
    _flag_catalog_lines(scan, merged)
    return merged, scan


def _flag_catalog_lines(scan: LineScan, merged: Table) -> None:
    """Give the lines the IDs of their objects in *merged*; flag ``catalog`` the lines and
    objects that fell on a catalogue object."""
    ids = merged.meta.pop("_emitter_ids", {})
    if not len(scan.catalog):
        return
    new = {str(i) for i, o in zip(merged["ID"], merged["ORIGIN"]) if str(o) == "linescan"}
    known = {e for e, m in ids.items() if m not in new}

    def add(tab):
        out = [",".join(sorted(set(filter(None, str(f).split(","))) | {"catalog"})) if str(i) in known
               else str(f) for i, f in zip(tab["ID"], tab["FLAGS"])]
        tab["FLAGS"] = np.array(out, dtype=str)

    add(scan.catalog)
    if len(scan.lines):
        add(scan.lines)
        width = max(len(v) for v in list(ids.values()) + ["x"]) + 6
        obj = np.array([ids.get(str(i), str(i)) for i in scan.lines["ID"]], dtype=f"U{width}")
        line_id = np.array([f"{o}_{str(li).rsplit('_', 1)[-1]}" for o, li in zip(obj, scan.lines["LINE_ID"])],
                           dtype=f"U{width}")
        scan.lines["ID"], scan.lines["LINE_ID"] = obj, line_id


def emitter_key(obj_id: str, images: dict) -> str | None:
    """The narrow-band image key of a catalogue ID (``merge_emitters`` may append ``_L``)."""
    key = str(obj_id)
    while key not in images and key.endswith("_L"):
        key = key[:-2]
    return key if key in images else None


def add_emitter_spectra(outdir, cube: Cube, catalog: Table, images: dict, *,
                        psf: PSFModel | None = None, wave_range=None) -> int:
    """Add ``MUSE_NB`` (narrow-band-profile optimal spectrum) to the emitters' Source files.

    Parameters
    ----------
    outdir : str or os.PathLike
        Output folder of ``extract`` (``sources/<ID>.fits``).
    cube : Cube
    catalog : astropy.table.Table
        The merged catalogue (``ORIGIN`` = ``linescan`` marks the emitters).
    images : dict
        ``{ID: Image}`` from :func:`read_emitter_images`.
    psf : PSFModel, optional
    wave_range : (float, float), optional
        The extraction's wavelength range (the spectra share the Source file's grid).

    Returns
    -------
    int
        Number of Source files updated.
    """
    from pathlib import Path

    from .errors import warn_object
    from .sourcefile import update_source

    if "ORIGIN" not in catalog.colnames:
        return 0
    done = 0
    for row in catalog[np.asarray(catalog["ORIGIN"]).astype(str) == "linescan"]:
        obj_id = str(row["ID"])
        path = Path(outdir) / "sources" / f"{file_stem(obj_id)}.fits"
        key = emitter_key(obj_id, images)
        if key is None or not path.exists():
            continue
        try:
            x, y = world_to_pixel(cube.wcs, float(row["RA"]), float(row["DEC"]))
            spec = extract_emitter(cube, x, y, images[key], psf=psf, wave_range=wave_range)
            update_source(path, spectra={"MUSE_NB": spec},
                          keywords={"LINEWAVE": (float(row["LINE_WAVE"]), "[Angstrom] line found by the scan")},
                          tool="linescan")
            done += 1
        except Exception as exc:  # noqa: BLE001 - one emitter never stops the others
            warn_object(obj_id, f"MUSE_NB not computed ({type(exc).__name__}: {exc})")
    return done

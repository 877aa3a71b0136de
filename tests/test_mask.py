"""The ``mask`` microtool: object and sky masks from segmentation maps, and their file format.

Segmentation maps are made here (thresholded truth, SEP, or drawn by hand), never through the
``detect`` module, so that these tests stand on their own.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy import ndimage

from conftest import TEST_DATA, run_main, write_synth
from ifu_extract import synth
from ifu_extract.cubeio import open_cube
from ifu_extract.errors import ObjectWarning
from ifu_extract.masks import (build_masks, copy_masks, make_masks, object_mask, read_masks, reframe,
                               write_masks)
from ifu_extract.segmap import read_segmap, reproject_labels
from ifu_extract.box import stamp_box
from ifu_extract.wcsutil import celestial_from_header, pixel_to_world

PIX = 0.2  # arcsec per spaxel of every synthetic cube here


# ----------------------------------------------------------------------------- helpers
def _noise_cube(path, ny=40, nx=40, nwave=4, nan_box=None, seed=0):
    """A source-free cube (noise only) on a 0.2″ grid; *nan_box* (x0, x1, y0, y1) is all-NaN."""
    data, var, dq, hdr, _ = synth.make_cube([], shape=(nwave, ny, nx), sigma=1.0, seed=seed)
    if nan_box is not None:
        x0, x1, y0, y1 = nan_box
        data[:, y0:y1, x0:x1] = np.nan
        dq[:, y0:y1, x0:x1] = 1
    synth.cube_hdulist(data, var, dq, hdr).writeto(path)
    return WCS(hdr).celestial


def _write_seg(path, labels, wcs=None, name="SEGMAP"):
    hdr = wcs.to_header() if wcs is not None else fits.Header()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.asarray(labels, np.int32), hdr, name=name)]
                 ).writeto(path, overwrite=True)
    return path


def _write_cat(path, wcs, rows):
    """rows: (id, x, y) in 0-based cube pixels, or (id, 'nan', 'nan')."""
    lines = ["ID RA DEC"]
    for obj, x, y in rows:
        if isinstance(x, str):
            lines.append(f"{obj} {x} {y}")
        else:
            ra, dec = pixel_to_world(wcs, float(x), float(y))
            lines.append(f"{obj} {ra:.9f} {dec:.9f}")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def _table(wcs, rows):
    ids = [r[0] for r in rows]
    ra, dec = pixel_to_world(wcs, np.array([r[1] for r in rows], float), np.array([r[2] for r in rows], float))
    return Table({"ID": ids, "RA": ra, "DEC": dec, "STATUS": ["ok"] * len(rows)})


def _disc(shape, x, y, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def _stamp_of(arr, box, fill=0):
    """arr[box] padded with *fill* (box = (x0, x1, y0, y1))."""
    x0, x1, y0, y1 = box
    out = np.full((y1 - y0, x1 - x0), fill, dtype=arr.dtype)
    ny, nx = arr.shape
    cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny)
    out[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = arr[cy0:cy1, cx0:cx1]
    return out


def _one_line_error(res, *needles, code=1):
    assert res.exit_code == code, res.stderr
    assert len(res.err_lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


# ----------------------------------------------------------------------------- synthetic scene
@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Point and Sérsic sources with their noise-free models: the injected segments are known."""
    wave = 4750.0 + 1.25 * np.arange(60)
    srcs = [
        synth.SynthSource("1", 12.3, 14.6, synth.continuum_spectrum(wave, 60.0, 0.2)),
        synth.SynthSource("2", 33.2, 30.5, synth.continuum_spectrum(wave, 80.0), kind="sersic",
                          re_arcsec=0.8, n=1.0, q=0.6, pa_deg=30.0),
        synth.SynthSource("3", 36.0, 12.0, synth.continuum_spectrum(wave, 30.0)),
        synth.SynthSource("4", 14.5, 36.0, synth.continuum_spectrum(wave, 50.0), kind="sersic",
                          re_arcsec=0.5, n=2.0, q=0.8, pa_deg=-20.0),
    ]
    path = tmp_path_factory.mktemp("scene") / "scene.fits"
    truth = write_synth(path, srcs, shape=(60, 50, 50), sigma=1.0, nan_fraction=0.001, seed=11,
                        keep_models=True)
    models = np.array([truth.models[s.id].mean(axis=0) for s in srcs])  # (nsrc, ny, nx) white light
    total = models.sum(axis=0)
    sigma_white = 1.0 / np.sqrt(60)  # noise of the white light (mean of 60 channels, sigma 1)
    # Injected segments: where the noise-free white light exceeds 5 sigma, each spaxel going to
    # the source that puts the most flux in it.
    truth_seg = np.where(total >= 5 * sigma_white, models.argmax(axis=0) + 1, 0).astype(np.int32)
    with fits.open(path) as h:
        wcs = celestial_from_header(h["DATA"].header)
    cat = _write_cat(path.parent / "scene_cat.txt", wcs, [(s.id, s.x, s.y) for s in srcs])
    return {"path": path, "truth": truth, "srcs": srcs, "seg": truth_seg, "wcs": wcs,
            "cat": cat, "sigma_white": sigma_white}


def test_masks_equal_injected_segments(scene, tmp_path, capfd):
    seg_path = _write_seg(tmp_path / "truth_seg.fits", scene["seg"], scene["wcs"])
    out = tmp_path / "masks.fits"
    res = run_main(["mask", scene["path"], scene["cat"], "--segmap", seg_path, "-o", out,
                    "--size", "8"], capfd)
    assert res.exit_code == 0, res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert list(objects["STATUS"]) == ["ok"] * 4
        assert list(objects["MASKUSED"]) == ["union"] * 4
        for k, src in enumerate(scene["srcs"], start=1):
            m = masks.get(src.id)
            seg_k = scene["seg"] == k
            mine = _stamp_of(seg_k, m.box, False)
            # Each box (8″ = 40 spaxels) holds the whole segment; the mask is exactly it.
            assert mine.sum() == seg_k.sum()
            assert np.array_equal(m.obj, mine)
            # The sky touches no segment, not even grown by one spaxel (--sky-grow 1).
            grown = ndimage.binary_dilation(scene["seg"] > 0)
            assert not (m.sky & _stamp_of(grown, m.box, False)).any()
            assert m.sky.sum() > 500
            assert objects["N_UNION"][k - 1] == seg_k.sum() and objects["N_SKY"][k - 1] == m.sky.sum()
        assert np.array_equal(masks.segmap(1), scene["seg"])


def test_without_segmap_every_object_gets_a_psf_circle(scene, tmp_path, capfd):
    out = tmp_path / "masks.fits"
    res = run_main(["mask", scene["path"], scene["cat"], "-o", out, "--size", "8", "--fwhm", "0.8"],
                   capfd)
    assert res.exit_code == 0, res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert list(objects["MASKUSED"]) == ["circle"] * 4
        assert set(objects["STATUS"]) == {"no_segment_used_psf_circle"}
        for src in scene["srcs"]:
            m = masks.get(src.id)
            yy, xx = np.indices(m.obj.shape)
            x0, y0 = src.x - m.x0, src.y - m.y0
            # radius FWHM = 0.8" = 4 spaxels around the catalogue position, less the NaN spaxels
            # and the neighbours' circles
            disc = (xx - x0) ** 2 + (yy - y0) ** 2 <= 4.0**2 + 1e-6
            assert not (m.obj & ~disc).any() and m.obj.sum() >= 0.9 * disc.sum()
            assert m.obj[int(round(y0)), int(round(x0))]
    assert "(4 of 4 objects masked: 0 union, 0 inter, 4 PSF circle)" in res.stdout + res.stderr


def test_sep_segments_cover_injected_segments(scene, tmp_path):
    """A segmentation of the noisy white light (as detect would make) covers the truth."""
    with open_cube(scene["path"]) as cube:
        from ifu_extract.image import band_image

        white = band_image(cube)
        data = np.nan_to_num(white.data.astype(np.float64))
        objs, seg = sep.extract(data, 2.5, err=scene["sigma_white"], minarea=5,
                                segmentation_map=True, deblend_cont=0.005)
        assert len(objs) == 4
        cat = _table(scene["wcs"], [(s.id, s.x, s.y) for s in scene["srcs"]])
        with warnings.catch_warnings():
            warnings.simplefilter("error", ObjectWarning)
            result = build_masks(cube, cat, [seg.astype(np.int32)], white=white.data, size=8.0)
    coverage, leak = [], []
    for k, src in enumerate(scene["srcs"], start=1):
        x0, y0, nx, ny = (int(result.objects[c][k - 1]) for c in ("X0", "Y0", "NX", "NY"))
        mask = result.stamps[k - 1][0].astype(bool)
        truth_k = _stamp_of(scene["seg"] == k, (x0, x0 + nx, y0, y0 + ny), False)
        others = _stamp_of((scene["seg"] > 0) & (scene["seg"] != k), (x0, x0 + nx, y0, y0 + ny), False)
        coverage.append((mask & truth_k).sum() / truth_k.sum())
        leak.append((mask & others).sum() / mask.sum())
    # Detection at 2.5 sigma, truth isophote at 5 sigma: the masks must cover the injected
    # segments almost entirely (noise can flip a few edge spaxels) and never take a neighbour's.
    assert min(coverage) >= 0.97, coverage
    assert max(leak) <= 0.02, leak


def test_fwhm_from_fsf_header(scene, tmp_path):
    """No --fwhm: the circle radius comes from the cube's MUSE FSF keywords (0.85″ -> 0.60″)."""
    with open_cube(scene["path"]) as cube:
        cat = _table(scene["wcs"], [("far", 45.0, 3.0)])  # background: PSF circle
        r = build_masks(cube, cat, [scene["seg"]], warn=False)
        assert r.meta["FWHMSRC"][0] == "header"
        fwhm = r.meta["FWHM"][0]
        mid = np.interp(np.median(cube.wave), [cube.wave[0], cube.wave[-1]], [0.85, 0.60])
        assert abs(fwhm - mid) < 0.01
        assert r.objects["N_UNION"][0] == _disc((50, 50), 45.0, 3.0, fwhm / PIX).sum()


# ----------------------------------------------------------------------------- mask logic
@pytest.fixture()
def field(tmp_path):
    path = tmp_path / "field.fits"
    wcs = _noise_cube(path, 40, 40)
    return path, wcs


def test_union_intersection_and_fallbacks(field, tmp_path):
    path, wcs = field
    shape = (40, 40)
    a = np.zeros(shape, np.int32)
    b = np.zeros(shape, np.int32)
    a[_disc(shape, 10, 10, 4)] = 1
    b[_disc(shape, 12, 10, 4)] = 7          # the same object, seen shifted in another map
    a[_disc(shape, 30, 10, 3)] = 2          # only in map A
    a[_disc(shape, 24, 30, 3)] = 3          # an uncatalogued neighbour of object c
    rows = [("a", 10, 10), ("b", 30, 10), ("c", 19.0, 30.0)]
    with open_cube(path) as cube:
        res = {}
        for mode in ("union", "inter"):
            with pytest.warns(ObjectWarning) as rec:
                res[mode] = build_masks(cube, _table(wcs, rows), [a, b], mode=mode, fwhm=0.65,
                                        match_radius=0.0, sky_grow=1)
            res[mode + "_warnings"] = [str(w.message) for w in rec]
    inter, union = res["inter"], res["union"]
    t = inter.objects
    assert list(t["MASKUSED"]) == ["inter", "union", "circle"]
    assert list(t["STATUS"]) == ["ok", "inter_empty_used_union", "no_segment_used_psf_circle"]
    assert list(t["SEGLABEL"]) == ["1,7", "2,0", "0,0"]
    assert any("object b: the intersection of the maps is empty" in w for w in res["inter_warnings"])
    assert any("object c: no segment in any map" in w for w in res["inter_warnings"])
    # Object a: union and intersection of the two discs.
    box = stamp_box(10, 10, 5.0, PIX)
    u_a, i_a, _ = (s.astype(bool) for s in inter.stamps[0])
    assert np.array_equal(u_a, _stamp_of((a == 1) | (b == 7), box, False))
    assert np.array_equal(i_a, _stamp_of((a == 1) & (b == 7), box, False))
    # Union mode: no fallback for b, status ok.
    assert list(union.objects["MASKUSED"]) == ["union", "union", "circle"]
    assert list(union.objects["STATUS"])[:2] == ["ok", "ok"]
    # Object c: PSF circle (radius FWHM = 3.25 spaxels) minus the neighbour's spaxels; the sky
    # avoids the circle (grown by one spaxel) as it avoids every label.
    box_c = stamp_box(19.0, 30.0, 5.0, PIX)
    circ, _, sky_c = (s.astype(bool) for s in inter.stamps[2])
    disc_c = _stamp_of(_disc(shape, 19.0, 30.0, 3.25), box_c, False)
    neighbour = _stamp_of(a == 3, box_c, False)
    assert (disc_c & neighbour).any()                     # the circle does reach the neighbour
    assert np.array_equal(circ, disc_c & ~neighbour)
    assert not (sky_c & ndimage.binary_dilation(disc_c | neighbour)).any()
    assert t["N_UNION"][2] == t["N_INTER"][2] == circ.sum()


def test_neighbours_excluded_from_object_and_sky(field):
    path, wcs = field
    shape = (40, 40)
    a = np.zeros(shape, np.int32)
    a[_disc(shape, 15, 20, 5)] = 1
    a[_disc(shape, 23, 20, 4) & (a == 0)] = 2   # touching neighbour, catalogued
    a[_disc(shape, 14, 27, 2)] = 3              # uncatalogued neighbour
    b = np.zeros(shape, np.int32)
    b[_disc(shape, 17, 20, 7)] = 5              # a map where 1 and 2 are blended in one segment
    with open_cube(path) as cube:
        # Without splitting: each claimant of B's blend takes it whole, minus A's other labels.
        r = build_masks(cube, _table(wcs, [("1", 15, 20), ("2", 23, 20)]), [a, b], fwhm=0.6,
                        sky_grow=2, split=False)
    box = stamp_box(15, 20, 5.0, PIX)
    obj, _, sky = (s.astype(bool) for s in r.stamps[0])
    assert obj.any()
    assert not (obj & _stamp_of((a == 2) | (a == 3), box, False)).any()
    # What is left is map A's segment 1 and the part of B's blend that no other label claims.
    expect = ((a == 1) | (b == 5)) & ~((a == 2) | (a == 3))
    assert np.array_equal(obj, _stamp_of(expect, box, False))
    grown = ndimage.binary_dilation((a > 0) | (b > 0), iterations=2)
    assert not (sky & _stamp_of(grown, box, False)).any()
    assert sky.sum() == (_stamp_of(~grown, box, False)).sum()   # the rest of the box is sky
    assert r.objects["STATUS"][0] == "shared_segment: with 2 (segment not split)"


def test_voronoi_splits_a_shared_segment(field):
    path, wcs = field
    shape = (40, 40)
    yy, xx = np.mgrid[0:40, 0:40]
    seg = np.where(((xx - 20) / 9.0) ** 2 + ((yy - 20) / 4.0) ** 2 <= 1, 4, 0).astype(np.int32)
    rows = [("L", 15, 20), ("R", 25, 20)]
    with open_cube(path) as cube:
        plain = build_masks(cube, _table(wcs, rows), [seg], size=6.0, fwhm=0.6, split=False)
        vor = build_masks(cube, _table(wcs, rows), [seg], size=6.0, fwhm=0.6, voronoi=True)
    boxes = [stamp_box(x, y, 6.0, PIX) for _, x, y in rows]
    full = [np.zeros(shape, bool), np.zeros(shape, bool)]
    for k in range(2):
        x0, x1, y0, y1 = boxes[k]
        assert np.array_equal(plain.stamps[k][0].astype(bool), _stamp_of(seg > 0, boxes[k], False))
        full[k][y0:y1, x0:x1] = vor.stamps[k][0].astype(bool)
    assert all(s.startswith("shared_segment") for s in plain.objects["STATUS"])
    assert list(vor.objects["STATUS"]) == ["ok", "ok"]
    # The file records the cut made: both masks lost the half of the segment beyond the bisector.
    assert vor.meta["NVORCUT"][0] == 2 and plain.meta["NVORCUT"][0] == 0
    assert not (full[0] & full[1]).any()                          # disjoint
    assert np.array_equal(full[0] | full[1], seg > 0)             # together: the whole segment
    assert (xx[full[0]] <= 20).all() and (xx[full[1]] >= 20).all()  # split on the bisector
    assert abs(int(full[0].sum()) - int(full[1].sum())) <= int((seg[:, 20] > 0).sum())


def test_match_radius_takes_unclaimed_segments_only(field):
    path, wcs = field
    shape = (40, 40)
    seg = np.zeros(shape, np.int32)
    seg[_disc(shape, 10, 10, 3)] = 1          # object "own" sits 2 spaxels off its edge
    seg[_disc(shape, 28, 28, 4)] = 2          # claimed by object "big"
    rows = [("own", 15.0, 10.0), ("big", 28, 28), ("faint", 28, 34.5)]
    with open_cube(path) as cube:
        with pytest.warns(ObjectWarning):
            near = build_masks(cube, _table(wcs, rows), [seg], match_radius=0.6, fwhm=0.6)
        with pytest.warns(ObjectWarning):
            strict = build_masks(cube, _table(wcs, rows), [seg], match_radius=0.0, fwhm=0.6)
    assert list(near.objects["MASKUSED"]) == ["union", "union", "circle"]
    assert near.objects["STATUS"][0] == "matched_within_radius"
    assert near.objects["SEGLABEL"][0] == "1"
    # The faint object near a segment claimed by another object does not steal it.
    assert near.objects["SEGLABEL"][2] == "0"
    assert not (near.stamps[2][0].astype(bool)
                & _stamp_of(seg == 2, stamp_box(28, 34.5, 5.0, PIX), False)).any()
    assert list(strict.objects["MASKUSED"]) == ["circle", "union", "circle"]


def test_catalog_size_column_wins(field, tmp_path):
    path, wcs = field
    seg = np.zeros((40, 40), np.int32)
    seg[_disc((40, 40), 20, 20, 3)] = 1
    seg_path = _write_seg(tmp_path / "s.fits", seg, wcs)
    ra, dec = pixel_to_world(wcs, np.array([20.0, 10.0]), np.array([20.0, 30.0]))
    cat = tmp_path / "cat.txt"
    cat.write_text(f"#ID RA DEC SIZE\n1 {ra[0]:.9f} {dec[0]:.9f} 3.0\n2 {ra[1]:.9f} {dec[1]:.9f} nan\n")
    with open_cube(path) as cube:
        from ifu_extract.catalog import read_catalog

        r = make_masks(cube, read_catalog(cat), [seg_path], size=4.0, fwhm=0.6, warn=False)
    assert (r.objects["NX"][0], r.objects["NY"][0]) == (15, 15)   # SIZE 3″
    assert (r.objects["NX"][1], r.objects["NY"][1]) == (20, 20)   # default --size 4″


# ----------------------------------------------------------------------------- rows and statuses
def test_rows_off_field_no_data_and_bad_coordinates(tmp_path, capfd):
    path = tmp_path / "nan_corner.fits"
    wcs = _noise_cube(path, 40, 40, nan_box=(0, 8, 0, 8))
    seg = np.zeros((40, 40), np.int32)
    seg[_disc((40, 40), 14, 14, 3)] = 1
    seg_path = _write_seg(tmp_path / "s.fits", seg, wcs)
    cat = _write_cat(tmp_path / "cat.txt", wcs, [("in", 14, 14), ("out", 300, 20), ("nodata", 3, 3),
                                                 ("bad", "nan", "nan"), ("edge", 38.6, 20)])
    out = tmp_path / "masks.fits"
    res = run_main(["mask", path, cat, "--segmap", seg_path, "-o", out, "--fwhm", "0.6"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "warning: object out: outside the cube" in res.stderr
    assert "warning: object nodata: no valid data at its position" in res.stderr
    assert "warning: object bad: bad_coordinates" in res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert list(objects["STATUS"][:4]) == ["ok", "off_field", "no_data",
                                                "bad_coordinates: RA/DEC is not a number"]
        assert list(objects["MASKUSED"]) == ["union", "", "", "", "circle"]
        for k in (1, 2, 3):
            assert masks.get(k) is None
            assert not masks.has_masks(k)
        # The NaN corner is never sky; a box crossing the cube edge keeps its size, and its
        # spaxels outside the cube are in no mask.
        corner = np.zeros((40, 40), bool)
        corner[:8, :8] = True
        for obj in ("in", "edge"):
            m = masks.get(obj)
            assert not (m.sky & _stamp_of(corner, m.box, False)).any()
        m = masks.get("in")
        assert (_stamp_of(corner, m.box, False)).any()      # the box does reach the NaN corner
        e = masks.get("edge")
        assert e.shape == (25, 25)
        outside = np.arange(e.x0, e.x0 + 25)[None, :] >= 40
        assert not ((e.sky | e.obj) & outside).any() and e.sky.any()
    # Only unusable rows: exit 1 and no file.
    cat2 = _write_cat(tmp_path / "cat2.txt", wcs, [("out", 300, 20), ("nodata", 3, 3)])
    out2 = tmp_path / "masks2.fits"
    res = run_main(["mask", path, cat2, "--segmap", seg_path, "-o", out2], capfd)
    assert res.exit_code == 1 and "no object could be processed" in res.stderr
    assert not out2.exists()


# ----------------------------------------------------------------------------- reprojection
def _render(wcs, shape, ref_wcs, sources, sup=4):
    """Pixel-averaged surface brightness of elliptical exponential sources on any grid.

    Sources are ``(x, y, amp, scale, q, pa)`` in pixels of *ref_wcs* (the cube grid).
    """
    ny, nx = shape
    off = (np.arange(sup) + 0.5) / sup - 0.5
    yy, xx = np.mgrid[0:ny, 0:nx]
    px = (xx[:, :, None, None] + off[None, None, None, :]).repeat(sup, axis=2).ravel()
    py = (yy[:, :, None, None] + off[None, None, :, None]).repeat(sup, axis=3).ravel()
    ra, dec = wcs.all_pix2world(px, py, 0)
    rx, ry = ref_wcs.all_world2pix(ra, dec, 0)
    img = np.zeros(px.size)
    for x, y, amp, scale, q, pa in sources:
        t = np.deg2rad(pa)
        dx, dy = rx - x, ry - y
        u = dx * np.cos(t) + dy * np.sin(t)
        v = (-dx * np.sin(t) + dy * np.cos(t)) / q
        img += amp * np.exp(-np.hypot(u, v) / scale)
    return img.reshape(ny, nx, sup * sup).mean(axis=2)


def test_reprojected_fine_segmap_agrees_with_cube_grid_segmap(field):
    """A segmap made on a 4x finer, rotated grid, reprojected, matches one made on the cube grid."""
    _, wcs = field
    shape = (40, 40)
    sources = [(8.3, 9.1, 10.0, 1.2, 1.0, 0), (24.6, 12.2, 6.0, 2.0, 0.5, 35), (30.1, 30.4, 8.0, 1.6, 0.8, -50),
               (12.2, 28.7, 4.0, 2.5, 0.6, 80), (20.5, 21.0, 3.0, 1.0, 1.0, 0)]
    fine = wcs.deepcopy()
    rot = np.deg2rad(20.0)
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else np.diag(wcs.wcs.cdelt) @ wcs.wcs.get_pc()
    fine.wcs.cd = cd @ np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) / 4.0
    fine.wcs.crpix = [120.3, 119.6]
    fshape = (240, 240)   # 12″ x 12″ at 0.05″, covering the 8″ cube at any angle
    thresh = 0.6
    kw = dict(minarea=1, filter_kernel=None, deblend_cont=1.0, segmentation_map=True)
    _, seg_cube = sep.extract(_render(wcs, shape, wcs, sources), thresh, **kw)
    _, seg_fine = sep.extract(_render(fine, fshape, wcs, sources), thresh, **kw)
    rep, footprint = reproject_labels(seg_fine, fine, wcs, shape)
    assert footprint.min() == 1.0
    # Labels differ between the two maps: pair each cube label with its most overlapping one.
    mapping = {0: 0}
    for lab in np.unique(seg_cube[seg_cube > 0]):
        vals, counts = np.unique(rep[seg_cube == lab], return_counts=True)
        mapping[int(lab)] = int(vals[np.argmax(counts)])
    assert len(set(mapping.values()) - {0}) == len(sources)
    mapped = np.vectorize(mapping.get)(seg_cube)
    agree = mapped == rep
    labelled = (seg_cube > 0) | (rep > 0)
    frac_all = agree.mean()
    frac_labelled = agree[labelled].mean()
    # Edge spaxels differ (mean surface brightness vs area share of the isophote): >= 90 %.
    assert frac_labelled >= 0.90, frac_labelled
    assert frac_all >= 0.97, frac_all


def _aligned_fine_wcs(wcs, factor):
    """A grid *factor* times finer whose pixels tile the spaxels of *wcs* exactly."""
    fine = wcs.deepcopy()
    fine.wcs.crpix = factor * wcs.wcs.crpix - (factor - 1) / 2.0
    if fine.wcs.has_cd():
        fine.wcs.cd = wcs.wcs.cd / factor
    else:
        fine.wcs.cdelt = wcs.wcs.cdelt / factor
    return fine


def test_area_coverage_rule(field):
    _, wcs = field
    fine_wcs = _aligned_fine_wcs(wcs, 4)
    fine = np.zeros((40, 40), np.int32)          # covers cube spaxels 0..9 of a 10 x 10 grid
    fine[12:14, 12:14] = 1                       # 4/16 of spaxel (3, 3)
    fine[24:28, 24:27] = 2                       # 12/16 of spaxel (6, 6)
    fine[4:8, 20:22] = 3                         # spaxel (5, 1): half label 3 ...
    fine[4:8, 22:24] = 4                         # ... half label 4
    out_cube = wcs.deepcopy()
    lab, fp = reproject_labels(fine, fine_wcs, out_cube, (10, 10))
    assert lab[3, 3] == 0 and lab[6, 6] == 2 and lab[1, 5] == 3   # tie: the smaller label
    assert np.count_nonzero(lab) == 2
    lab25, _ = reproject_labels(fine, fine_wcs, out_cube, (10, 10), min_coverage=0.25)
    assert lab25[3, 3] == 1
    # A grid wider than the map: spaxels outside have no footprint and no label.
    big, fp_big = reproject_labels(fine, fine_wcs, out_cube, (12, 12))
    assert fp_big[:10, :10].min() == 1.0 and fp_big[10:, :].max() == 0.0
    # A map on the cube grid, shifted by half a spaxel: each spaxel straddles two map pixels.
    half = wcs.deepcopy()
    half.wcs.crpix = wcs.wcs.crpix + 0.5
    one = np.zeros((10, 10), np.int32)
    one[4, 4] = 9
    lab_half, _ = reproject_labels(one, half, out_cube, (10, 10))
    assert np.count_nonzero(lab_half) == 0       # 9 covers 1/4 of four spaxels
    lab_q, _ = reproject_labels(one, half, out_cube, (10, 10), min_coverage=0.25)
    assert np.count_nonzero(lab_q == 9) == 4


def test_hst_segmap_reprojected_onto_minicube(minicube, hst_cutout, muselet_cat, tmp_path, capfd):
    """SEP on the HST image of Abell 478 (0.1″ pixels), reprojected onto the MUSE minicube (0.2″)."""
    with fits.open(hst_cutout) as h:
        sci = h["SCI"].data.astype(np.float64)
        hst_wcs = celestial_from_header(h["SCI"].header)
    bkg = sep.Background(np.ascontiguousarray(sci), bw=32, bh=32, fw=3, fh=3)
    _, seg = sep.extract(sci - bkg.back(), 3.0, err=bkg.globalrms, minarea=8, segmentation_map=True)
    seg_path = tmp_path / "hst_seg.fits"
    fits.PrimaryHDU(seg.astype(np.int32), hst_wcs.to_header()).writeto(seg_path)
    assert read_segmap(seg_path).nlabels > 100
    out = tmp_path / "masks.fits"
    res = run_main(["mask", minicube, muselet_cat, "--segmap", seg_path, "-o", out, "--no-split"],
                   capfd)
    assert res.exit_code == 0, res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert masks.header["SEGHOW1"] == "reprojected" and masks.header["SEGCOV1"] == 1.0
        lab = masks.segmap(1)
    with open_cube(minicube) as cube:
        from ifu_extract.image import band_image

        white = band_image(cube).data
        mini_wcs = cube.wcs
    # Mechanics: each labelled spaxel carries the HST label found at its centre (the area rule
    # differs only along segment edges).
    yy, xx = np.nonzero(lab)
    ra, dec = mini_wcs.all_pix2world(xx, yy, 0)
    hx, hy = hst_wcs.all_world2pix(ra, dec, 0)
    at_centre = seg[np.floor(hy + 0.5).astype(int), np.floor(hx + 0.5).astype(int)]
    assert np.mean(at_centre == lab[yy, xx]) >= 0.9
    # Science: the brightest cluster galaxy fills the white light; its HST segment is the
    # largest label, covers the white-light peak and is much brighter than the unlabelled rest.
    # (This WFPC2 cutout is offset by ~1.3″ from the MUSE astrometry, as in MPDAF's alignment
    # tutorial, so the peak is checked in the smoothed white light, not to the spaxel.)
    labels, counts = np.unique(lab[lab > 0], return_counts=True)
    bcg = labels[np.argmax(counts)]
    smooth = ndimage.gaussian_filter(np.nan_to_num(white), 1.0)
    py, px = np.unravel_index(np.argmax(smooth), smooth.shape)
    assert lab[py, px] == bcg
    assert np.nanmean(white[lab == bcg]) > 1.5 * np.nanmean(white[lab == 0])
    # The catalogue objects on the BCG share its segment and say so.
    on_bcg = [s for s, sl in zip(objects["STATUS"], objects["SEGLABEL"]) if sl == str(bcg)]
    assert len(on_bcg) >= 3 and all(s.startswith("shared_segment") for s in on_bcg)
    assert (objects["MASKUSED"] != "").all()
    # By default the BCG's segment is split among them: disjoint footprints, each on its object.
    split = tmp_path / "split.fits"
    res = run_main(["mask", minicube, muselet_cat, "--segmap", seg_path, "-o", split], capfd)
    assert res.exit_code == 0, res.stderr
    objects_s, masks_s = read_masks(split)
    with masks_s:
        assert not any(s.startswith("shared_segment") for s in objects_s["STATUS"])
        owner = np.zeros((40, 40), int)
        for i, row in enumerate(objects_s):
            m = masks_s.get(i)
            assert m.obj[int(np.floor(row["Y"] + 0.5)) - m.y0, int(np.floor(row["X"] + 0.5)) - m.x0]
            full = reframe(m.obj, m.box, (0, 40, 0, 40))
            assert not (owner[full] > 0).any()
            owner[full] = i + 1


def test_segmap_without_wcs(field, tmp_path, capfd):
    path, wcs = field
    seg = np.zeros((40, 40), np.int32)
    seg[_disc((40, 40), 20, 20, 3)] = 5
    cat = _write_cat(tmp_path / "cat.txt", wcs, [("1", 20, 20)])
    same = _write_seg(tmp_path / "nowcs.fits", seg)                    # cube shape: used as is
    out = tmp_path / "m.fits"
    res = run_main(["mask", path, cat, "--segmap", same, "-o", out, "--fwhm", "0.6"], capfd)
    assert res.exit_code == 0, res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert objects["SEGLABEL"][0] == "5" and masks.header["SEGHOW1"] == "no WCS, same shape"
    other = _write_seg(tmp_path / "nowcs_big.fits", np.zeros((80, 80), np.int32) + 1)
    out2 = tmp_path / "m2.fits"
    res = run_main(["mask", path, cat, "--segmap", other, "-o", out2], capfd)
    _one_line_error(res, "nowcs_big.fits", "no celestial WCS", "(80, 80)")
    assert not out2.exists()


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture()
def small(tmp_path):
    path = tmp_path / "cube.fits"
    wcs = _noise_cube(path, 30, 30)
    seg = np.zeros((30, 30), np.int32)
    seg[_disc((30, 30), 15, 15, 3)] = 1
    return {"cube": path, "wcs": wcs, "seg": _write_seg(tmp_path / "seg.fits", seg, wcs),
            "cat": _write_cat(tmp_path / "cat.txt", wcs, [("1", 15, 15), ("2", 5, 25)])}


def test_bad_segmap_not_fits(small, tmp_path, capfd):
    bad = tmp_path / "seg.txt"
    bad.write_text("1 2 3\n")
    out = tmp_path / "m.fits"
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", bad, "-o", out], capfd)
    _one_line_error(res, str(bad), "not a FITS file")
    assert not out.exists()


def test_empty_segmap(small, tmp_path, capfd):
    empty = _write_seg(tmp_path / "empty.fits", np.zeros((30, 30), np.int32), small["wcs"])
    out = tmp_path / "m.fits"
    # The only map is empty: a wrong file or threshold, not a run of PSF circles.
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", empty, "-o", out], capfd)
    _one_line_error(res, "empty.fits", "no labelled pixel", "PSF circle")
    assert not out.exists()
    # One empty map among others: ignored with a warning, the others are used.
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", empty, "--segmap", small["seg"],
                    "-o", out, "--mode", "inter", "--fwhm", "0.6"], capfd)
    assert res.exit_code == 0, res.stderr
    assert "empty.fits: has no labelled pixel" in res.stderr and "ignored" in res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert masks.header["NSEGMAP"] == 1 and masks.header["SEGMAP1"] == "seg.fits"
        assert list(objects["MASKUSED"]) == ["inter", "circle"]


def test_segmap_that_is_an_image_or_elsewhere(small, tmp_path, capfd):
    img = tmp_path / "image.fits"
    fits.PrimaryHDU(np.random.default_rng(1).normal(size=(30, 30)).astype(np.float32),
                    small["wcs"].to_header()).writeto(img)
    out = tmp_path / "m.fits"
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", img, "-o", out], capfd)
    _one_line_error(res, "image.fits", "non-integer values", "not the image")
    far = small["wcs"].deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 1.0, far.wcs.crval[1]]
    elsewhere = _write_seg(tmp_path / "elsewhere.fits", np.ones((30, 30), np.int32), far)
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", elsewhere, "-o", out], capfd)
    _one_line_error(res, "elsewhere.fits", "does not overlap the cube")
    assert not out.exists()


def test_bad_cube_and_unwritable_output(small, tmp_path, capfd):
    notcube = tmp_path / "notcube.fits"
    notcube.write_text("SIMPLE? no\n")
    out = tmp_path / "m.fits"
    res = run_main(["mask", notcube, small["cat"], "--segmap", small["seg"], "-o", out], capfd)
    _one_line_error(res, "notcube.fits", "not a FITS file")
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", small["seg"],
                    "-o", tmp_path / "no" / "dir" / "m.fits"], capfd)
    _one_line_error(res, "output folder does not exist")
    assert not list(tmp_path.glob("**/.m.fits*"))
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", small["seg"], "-o", out,
                    "--mode", "both"], capfd)
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- file format
def test_file_format_and_reader(small, tmp_path, capfd):
    out = tmp_path / "MASKS.fits"
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", small["seg"], "-o", out,
                    "--fwhm", "0.6"], capfd)
    assert res.exit_code == 0, res.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # checksum failures are warnings in astropy
        with fits.open(out, checksum=True) as hdul:
            names = [(h.name, h.ver) for h in hdul]
            assert names == [("PRIMARY", 1), ("OBJECTS", 1), ("MASKS", 1), ("SEGMAP", 1)]
            prim = hdul[0].header
            assert (prim["CUBE"], prim["NOBJ"], prim["MASKMODE"], prim["IFXTOOL"], prim["MASKFMT"]) == \
                ("cube.fits", 2, "union", "mask", 2)
            tab = Table(hdul["OBJECTS"].data)
            assert tab.colnames == ["ID", "RA", "DEC", "X", "Y", "X0", "Y0", "NX", "NY", "STATUS",
                                    "MASKUSED", "N_UNION", "N_INTER", "N_SKY", "SEGLABEL", "MASKOFF"]
            stacked = hdul["MASKS"].data
            assert stacked.dtype == np.uint8 and set(np.unique(stacked)) <= {0, 1}
            assert [hdul["MASKS"].header[f"MASKROW{k}"] for k in (1, 2, 3)] == \
                ["MASK_UNION", "MASK_INTER", "MASK_SKY"]
            assert stacked.shape == (3, int(sum(tab["NX"] * tab["NY"])))
            for row in tab:
                # One stamp (3, NY, NX) per object, x fast, at MASKOFF in the stacked image.
                n = row["NX"] * row["NY"]
                stamp = stacked[:, row["MASKOFF"]:row["MASKOFF"] + n].reshape(3, row["NY"], row["NX"])
                assert [int(v) for v in stamp.sum(axis=(1, 2))] == [row["N_UNION"], row["N_INTER"], row["N_SKY"]]
            # The table's WCS is the cube grid's: a stamp's pixel (0, 0) is cube pixel (X0, Y0).
            tw = celestial_from_header(hdul["OBJECTS"].header)
            assert np.allclose(tw.all_pix2world([3.0], [4.0], 0), small["wcs"].all_pix2world([3.0], [4.0], 0))
            seg_hdu = hdul["SEGMAP"]
            assert seg_hdu.data.dtype.kind == "i" and seg_hdu.data.dtype.itemsize == 4
            assert celestial_from_header(seg_hdu.header) is not None
    # Same input, same output: a rerun is byte-identical (dates from SOURCE_DATE_EPOCH).
    again = tmp_path / "again.fits"
    time.sleep(1.1)
    res = run_main(["mask", small["cube"], small["cat"], "--segmap", small["seg"], "-o", again,
                    "--fwhm", "0.6"], capfd)
    assert res.exit_code == 0 and again.read_bytes() == out.read_bytes()
    objects, masks = read_masks(out)
    with masks:
        assert len(masks) == 2 and masks.n_segmaps == 1
        m1 = masks.get("1")
        assert np.array_equal(m1.union, masks.get(0).union)       # by ID or by row
        assert m1.box == stamp_box(15, 15, 5.0, PIX)
        assert object_mask(m1).dtype == bool and np.array_equal(m1.obj, m1.union)
        assert np.array_equal(object_mask(m1, "inter"), m1.inter)
        assert m1.wcs is not None
        got = m1.wcs.all_pix2world([0.0], [0.0], 0)
        assert np.allclose(got, small["wcs"].all_pix2world([float(m1.x0)], [float(m1.y0)], 0), atol=1e-10)
        assert m1.header["OBJ_ID"] == "1" and m1.header["BOXX0"] == m1.x0
        m2 = masks.get("2")
        assert m2.used == "circle" and np.array_equal(m2.obj, m2.union)
        # The same masks on another box (e.g. a cut-out of another size).
        x0, x1, y0, y1 = m1.box
        moved = m1.on_box((x0 - 3, x1 + 3, y0 + 2, y1 - 2))
        assert moved.shape == (y1 - y0 - 4, x1 - x0 + 6)
        assert moved.obj.sum() == m1.obj.sum()          # the object lies well inside both
        assert np.allclose(moved.wcs.all_pix2world([0.0], [0.0], 0),
                           small["wcs"].all_pix2world([float(x0 - 3)], [float(y0 + 2)], 0))
        with pytest.raises(KeyError):
            masks.get("nope")


def test_reads_format_version_1(tmp_path):
    """gx_masks.fits was written in format version 1 (one image HDU per mask, no MASKFMT): the
    reader gives what astropy reads in its HDUs, and the same masks written in the current
    format read back identical."""
    from ifu_extract.masks import BuiltMasks, GridSegmap, write_masks
    from ifu_extract.wcsutil import celestial_from_header as cfh

    old_path = TEST_DATA / "gx_masks.fits"
    objects, old = read_masks(old_path)
    with old, fits.open(old_path) as hdul:
        assert "MASKFMT" not in hdul[0].header and old.version == 1
        raw = Table(hdul["OBJECTS"].data)
        for name in objects.colnames:
            assert [str(v).strip() for v in raw[name]] == [str(v).strip() for v in objects[name]], name
        stamps = []
        for i in range(len(objects)):
            m = old.get(i)
            if m is None:
                stamps.append(None)
                continue
            for kind in ("union", "inter", "sky"):
                assert np.array_equal(getattr(m, kind), hdul[f"MASK_{kind.upper()}", i + 1].data.astype(bool))
            assert m.header["OBJ_ID"] == objects["ID"][i] and m.wcs is not None
            stamps.append(tuple(getattr(m, k).astype(np.uint8) for k in ("union", "inter", "sky")))
        assert sum(s is not None for s in stamps) == 2
        cube_wcs = cfh(hdul["SEGMAP"].header)
        built = BuiltMasks(objects, stamps, [GridSegmap(old.segmap(1), "gx_segmap.fits", "same grid")],
                           cube_wcs, "gx_minicube.fits", {})
        new_path = write_masks(built, tmp_path / "v2.fits")
        copied_objects, copied = read_masks(copy_masks(old, tmp_path / "copy.fits"))
        with copied:
            assert copied.version == 2 and copied.header["CUBE"] == old.header["CUBE"]
            for name in objects.colnames:
                assert list(objects[name]) == list(copied_objects[name]), name
            for i in range(len(objects)):
                assert np.array_equal(old.get(i).sky, copied.get(i).sky)
                assert old.get(i).header["CRPIX2"] == copied.get(i).header["CRPIX2"]
        new_objects, new = read_masks(new_path)
        with new:
            assert new.version == 2
            for name in objects.colnames:
                assert list(objects[name]) == list(new_objects[name]), name
            assert np.array_equal(old.segmap(1), new.segmap(1))
            for i in range(len(objects)):
                a, b = old.get(i), new.get(i)
                assert (a.box, a.used, a.status) == (b.box, b.used, b.status)
                for kind in ("union", "inter", "sky"):
                    assert np.array_equal(getattr(a, kind), getattr(b, kind))
                # The same stamp header, whichever format it was stored in.
                for key in ("OBJ_ID", "BOXX0", "BOXY0", "MASKKIND", "CRPIX1", "CRPIX2", "CRVAL1",
                            "CTYPE1", "CDELT2"):
                    assert a.header[key] == b.header[key], key


def test_extract_reads_a_format_1_file_once(tmp_path, capfd, monkeypatch):
    """Extraction in several blocks reads a format-1 masks file once, through a current-format
    copy it removes afterwards: the same files as one block reading the old file itself."""
    import ifu_extract.catalog_extraction as ce

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    copies = []
    monkeypatch.setattr(ce, "copy_masks", lambda masks, dest: copies.append(dest) or copy_masks(masks, dest))
    outs = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        res = run_main(["extract", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt", "--masks",
                        TEST_DATA / "gx_masks.fits", "--fwhm", "0.75", "--threads", str(threads), "-o", out], capfd)
        assert res.exit_code == 0, res.stderr
        outs[threads] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert len(copies) == 1 and not copies[0].exists()          # made for the two blocks, then removed
    assert outs[1] == outs[2] and len(outs[1]) == 3              # summary.tsv and two Source files


def test_truncated_and_future_files_are_refused(tmp_path, capfd):
    from ifu_extract.errors import InputError

    data = (TEST_DATA / "gx_masks.fits").read_bytes()
    cut = tmp_path / "cut_v1.fits"
    cut.write_bytes(data[:len(data) - 3 * 2880])          # the last object's stamps are gone
    with pytest.raises(InputError, match="truncated"):
        read_masks(cut)
    new_path = tmp_path / "m.fits"
    res = run_main(["mask", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt",
                    "--segmap", TEST_DATA / "gx_segmap.fits", "-o", new_path], capfd)
    assert res.exit_code == 0, res.stderr
    cut2 = tmp_path / "cut_v2.fits"
    cut2.write_bytes(new_path.read_bytes()[:2880 * 3])     # in the middle of the OBJECTS table
    with pytest.raises(InputError):
        read_masks(cut2)
    future = tmp_path / "future.fits"
    with fits.open(new_path) as hdul:
        hdul[0].header["MASKFMT"] = 3
        hdul.writeto(future)
    with pytest.raises(InputError, match="format version 3, newer than this program reads"):
        read_masks(future)
    res = run_main(["extract", TEST_DATA / "gx_minicube.fits", TEST_DATA / "gx_catalog.txt",
                    "--masks", future, "--fwhm", "0.75", "-o", tmp_path / "out"], capfd)
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (f"ifu-extract: error: {future}: is a masks file of format "
                                  "version 3, newer than this program reads (2); update ifu-extract")


def test_read_masks_refuses_other_files(small):
    from ifu_extract.errors import InputError

    with pytest.raises(InputError, match="no OBJECTS table"):
        read_masks(small["seg"])


def test_shipped_test_data(tmp_path, capfd):
    """The small inputs of the Galaxy wrapper: cube-grid map and a 4x finer map together."""
    out = tmp_path / "m.fits"
    res = run_main(["mask", TEST_DATA / "mask_cube.fits", TEST_DATA / "mask_catalog.txt",
                    "--segmap", TEST_DATA / "mask_segmap.fits",
                    "--segmap", TEST_DATA / "mask_segmap_fine.fits", "-o", out], capfd)
    assert res.exit_code == 0, res.stderr
    objects, masks = read_masks(out)
    with masks:
        assert masks.header["SEGHOW1"] == "same grid" and masks.header["SEGHOW2"] == "reprojected"
    st = dict(zip(objects["ID"], objects["STATUS"]))
    used = dict(zip(objects["ID"], objects["MASKUSED"]))
    assert st["1"] == "ok" and st["2"] == "ok"
    # The pair that the cube-grid map blends is split between them by default.
    assert st["3"] == "ok" and st["4"] == "ok"
    assert st["5"] == "no_segment_used_psf_circle" and used["5"] == "circle"
    assert st["6"] == "off_field" and used["6"] == ""
    # The fine map separates the pair; the cube-grid map's blend is split (labels recorded).
    lab3, lab4 = (objects["SEGLABEL"][i].split(",") for i in (2, 3))
    assert lab3[0] != lab4[0] and lab3[1] != lab4[1]
    # --voronoi splits the pair's shared segment between them.
    out_v = tmp_path / "mv.fits"
    res = run_main(["mask", TEST_DATA / "mask_cube.fits", TEST_DATA / "mask_catalog.txt",
                    "--segmap", TEST_DATA / "mask_segmap.fits", "-o", out_v, "--voronoi"], capfd)
    assert res.exit_code == 0, res.stderr
    objects_v, masks_v = read_masks(out_v)
    with masks_v:
        assert objects_v["STATUS"][2] == "ok" and objects_v["STATUS"][3] == "ok"
        m3, m4 = masks_v.get("3"), masks_v.get("4")
        assert not (m3.obj & m4.on_box(m3.box).obj).any()
        assert m3.obj.any() and m4.obj.any()
    # Regenerating the data gives the same files' content.
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_mask_data", TEST_DATA / "make_mask_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = mod.make(tmp_path)
    for key in ("segmap", "segmap_fine"):
        assert np.array_equal(read_segmap(fresh[key]).labels,
                              read_segmap(TEST_DATA / fresh[key].name).labels)
    assert fresh["catalog"].read_text() == (TEST_DATA / "mask_catalog.txt").read_text()


# ----------------------------------------------------------------------------- speed
def test_many_objects(tmp_path):
    """500 objects on 300 x 300 spaxels: every one masked, written and read back (timings are
    printed, not asserted: a loaded machine must not fail a test)."""
    rng = np.random.default_rng(5)
    path = tmp_path / "big.fits"
    wcs = _noise_cube(path, 300, 300, nwave=3, seed=2)
    xs, ys = rng.uniform(3, 297, 500), rng.uniform(3, 297, 500)
    seg = np.zeros((300, 300), np.int32)
    for k, (x, y) in enumerate(zip(xs, ys), start=1):
        r = rng.uniform(1.5, 4.0)
        x0, y0 = int(x - 5), int(y - 5)
        sub = seg[max(y0, 0):y0 + 11, max(x0, 0):x0 + 11]
        yy, xx = np.mgrid[max(y0, 0):max(y0, 0) + sub.shape[0], max(x0, 0):max(x0, 0) + sub.shape[1]]
        sub[((xx - x) ** 2 + (yy - y) ** 2 <= r * r) & (sub == 0)] = k
    keep = rng.random(500) < 0.9            # 10 % of the objects have no segment: PSF circles
    seg[~np.isin(seg, np.flatnonzero(keep) + 1)] = 0
    with open_cube(path) as cube:
        cat = _table(wcs, [(str(i + 1), x, y) for i, (x, y) in enumerate(zip(xs, ys))])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ObjectWarning)
            result = build_masks(cube, cat, [seg], fwhm=0.7, voronoi=True)
        t1 = time.perf_counter()
        write_masks(result, tmp_path / "masks.fits")
        t2 = time.perf_counter()
    objects, masks = read_masks(tmp_path / "masks.fits")
    with masks:
        got = [masks.get(i) for i in range(len(objects))]
    t3 = time.perf_counter()
    assert all(g is not None for g in got) and result.n_masked == 500
    assert set(objects["MASKUSED"]) == {"union", "circle"}
    assert [int(g.union.sum()) for g in got] == list(objects["N_UNION"])
    print(f"500 objects: build {t1 - t0:.3f} s, write {t2 - t1:.3f} s, read {t3 - t2:.3f} s")


# ----------------------------------------------------------------------------- crowded fields
def _crowded_white(shape=(40, 40)):
    """Noise-free white light of a blend: a bright n=4 galaxy, a faint point-like companion on
    its wing (1/15 of its flux, 1.3″ away) and a disc galaxy of a third of its flux (1.8″)."""
    psf = synth.moffat_image((25, 25), 12, 12, 3.5, 2.8)
    from scipy.signal import fftconvolve

    host = fftconvolve(synth.sersic_image(shape, 20.0, 20.0, 5.0, n=4.0), psf, mode="same")
    comp = synth.moffat_image(shape, 26.0, 23.0, 3.5, 2.8) / 15.0
    disc = fftconvolve(synth.sersic_image(shape, 11.0, 17.0, 2.5, n=1.0), psf, mode="same") / 3.0
    return np.array([host, comp, disc]) * 1e4


def test_split_shares_a_blend_by_the_light(field):
    """One segment holding three catalogue objects is shared among them: disjoint footprints
    that tile the segment and each hold their object; the faint companion keeps its PSF core
    and less of the galaxy's wing than a Voronoi cell would give it, and the bright galaxy keeps
    more of its own light than with Voronoi cells."""
    path, wcs = field
    models = _crowded_white()
    white = models.sum(axis=0)
    seg = (white > 2.0).astype(np.int32) * 7          # one SEP-like segment over the blend
    assert ndimage.label(seg)[1] == 1
    rows = [("host", 20.0, 20.0), ("comp", 26.0, 23.0), ("disc", 11.0, 17.0)]
    with open_cube(path) as cube:
        split = build_masks(cube, _table(wcs, rows), [seg], white=white, size=8.0, fwhm=0.7)
        vor = build_masks(cube, _table(wcs, rows), [seg], white=white, size=8.0, fwhm=0.7,
                          voronoi=True)
        plain = build_masks(cube, _table(wcs, rows), [seg], white=white, size=8.0, fwhm=0.7,
                            split=False)
    assert list(split.objects["STATUS"]) == ["ok"] * 3
    assert all(s.startswith("shared_segment") for s in plain.objects["STATUS"])
    assert split.meta["NSPLIT"][0] == 1

    def footprints(result):
        out = []
        for k, row in enumerate(result.objects):
            box = (int(row["X0"]), int(row["X0"] + row["NX"]), int(row["Y0"]), int(row["Y0"] + row["NY"]))
            out.append(reframe(result.stamps[k][0].astype(bool), box, (0, 40, 0, 40)))
        return out

    fs, fv = footprints(split), footprints(vor)
    owner = np.sum([f.astype(int) for f in fs], axis=0)
    assert owner.max() == 1                                     # disjoint
    assert np.array_equal(owner > 0, seg > 0)                   # together: the segment
    for f, (_, x, y) in zip(fs, rows):
        assert f[int(y), int(x)]                                # each holds its object
        assert ndimage.label(f)[1] == 1                         # in one piece
    # Each object keeps its PSF core: spaxels within one FWHM (3.5 spaxels) nearer to it.
    yy, xx = np.mgrid[0:40, 0:40]
    assert fs[1][(xx - 26) ** 2 + (yy - 23) ** 2 <= 3.5 ** 2].all()

    def own(f, k):
        return models[k][f].sum() / models[k].sum()

    def contamination(f, k):
        return (white[f].sum() - models[k][f].sum()) / models[k][f].sum()

    # The companion keeps most of its light (measured 0.86; 0.92 in its Voronoi cell) with a
    # third less of the galaxy's wing: neighbours' light 1.47 times its own, against 2.25.
    assert own(fs[1], 1) > 0.8
    assert contamination(fs[1], 1) < 0.75 * contamination(fv[1], 1)
    # The bright galaxy keeps more of its light than in its Voronoi cell (0.72 vs 0.64), and
    # the disc galaxy carries less of the others' light (0.31 vs 0.36 times its own).
    assert own(fs[0], 0) > own(fv[0], 0) + 0.05
    assert contamination(fs[2], 2) < contamination(fv[2], 2)
    # Splitting is deterministic: the same masks again.
    with open_cube(path) as cube:
        again = build_masks(cube, _table(wcs, rows), [seg], white=white, size=8.0, fwhm=0.7)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(split.stamps, again.stamps))

"""Segments, footprints and groups of overlapping sources; intrinsic shapes of members."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..psf import PSFModel, moffat_alpha
from .config import RESOLVED_SIGMA


def object_labels(seg: np.ndarray | None, x, y, radius_pix: float) -> np.ndarray:
    """Segment label of each object: under it, else the nearest labelled spaxel within radius."""
    n = len(x)
    out = np.zeros(n, dtype=np.int64)
    if seg is None:
        return out
    ny, nx = seg.shape
    r = int(np.ceil(radius_pix))
    for i in range(n):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        xc, yc = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if 0 <= xc < nx and 0 <= yc < ny and seg[yc, xc] > 0:
            out[i] = seg[yc, xc]
            continue
        if r <= 0:
            continue
        y0, y1, x0, x1 = max(yc - r, 0), min(yc + r + 1, ny), max(xc - r, 0), min(xc + r + 1, nx)
        if y1 <= y0 or x1 <= x0:
            continue
        win = seg[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d2 = (xx - x[i]) ** 2 + (yy - y[i]) ** 2
        ok = (win > 0) & (d2 <= radius_pix**2)
        if ok.any():
            out[i] = win[ok][np.argmin(d2[ok])]
    return out


def own_segments(seg, labels, x, y, rows) -> dict:
    """Spaxels of each object's segment; segments shared by several objects are split between
    them by nearest position (Voronoi)."""
    out = {}
    if seg is None:
        return out
    by_label: dict = {}
    for i in rows:
        if labels[i] > 0:
            by_label.setdefault(int(labels[i]), []).append(i)
    for lab, members in by_label.items():
        ys, xs = np.nonzero(seg == lab)
        if len(members) == 1:
            out[members[0]] = (ys, xs)
            continue
        d2 = np.stack([(xs - x[i]) ** 2 + (ys - y[i]) ** 2 for i in members])
        near = np.argmin(d2, axis=0)
        for j, i in enumerate(members):
            out[i] = (ys[near == j], xs[near == j])
    return out


def footprint_radius(psf: PSFModel, wave, pixscale: float, level: float) -> float:
    """Radius (spaxels) where the broadest PSF falls to *level* times its peak."""
    fwhm = float(np.max(psf.fwhm(wave))) / pixscale
    if psf.kind == "gaussian":
        s = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        return s * np.sqrt(-2.0 * np.log(level))
    beta = float(np.min(psf.beta(wave)))
    alpha = float(moffat_alpha(fwhm, beta))
    return alpha * np.sqrt(level ** (-1.0 / beta) - 1.0)


def find_groups(x, y, segments: dict, shape, radius_pix: float, rows) -> tuple[list, dict]:
    """Groups of objects whose footprints (segment or position, grown by *radius_pix*) touch.

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based cube pixel positions of every catalogue row.
    segments : dict
        ``{row: (ys, xs)}`` spaxels of each object's own segment.
    shape : (ny, nx)
        Cube grid.
    radius_pix : float
        Growth of each footprint, spaxels.
    rows : sequence of int
        Rows to group (placed objects).

    Returns
    -------
    groups : list of list of int
        Rows of each group, groups ordered by their first row, rows in catalogue order.
    footprints : dict
        ``{row: (ys, xs)}`` spaxels of each footprint (clipped to the cube grid).
    """
    ny, nx = shape
    r = int(np.ceil(radius_pix))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx**2 + yy**2) <= radius_pix**2
    foot = {}
    for i in rows:
        pts_y = [np.array([int(np.floor(y[i] + 0.5))])]
        pts_x = [np.array([int(np.floor(x[i] + 0.5))])]
        if i in segments:
            pts_y.append(segments[i][0])
            pts_x.append(segments[i][1])
        py, px = np.concatenate(pts_y), np.concatenate(pts_x)
        bx0, by0 = px.min() - r, py.min() - r
        local = np.zeros((py.max() - by0 + r + 1, px.max() - bx0 + r + 1), dtype=bool)
        local[py - by0, px - bx0] = True
        local = ndimage.binary_dilation(local, structure=disk)
        ly, lx = np.nonzero(local)
        gy, gx = ly + by0, lx + bx0
        inside = (gy >= 0) & (gy < ny) & (gx >= 0) & (gx < nx)
        foot[i] = (gy[inside], gx[inside])
    # Union-find over rows sharing a spaxel.
    parent = {i: i for i in rows}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner = np.full((ny, nx), -1, dtype=np.int64)
    for i in rows:
        gy, gx = foot[i]
        prev = np.unique(owner[gy, gx])
        for j in prev[prev >= 0]:
            a, b = find(int(j)), find(i)
            if a != b:
                parent[max(a, b)] = min(a, b)
        owner[gy, gx] = i
    groups: dict = {}
    for i in rows:
        groups.setdefault(find(i), []).append(i)
    ordered = sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])
    return ordered, foot


def weighted_covariance(img, x, y, s_w) -> np.ndarray | None:
    """Second-moment matrix of *img* with a circular Gaussian weight of sigma *s_w* at (x, y),
    corrected for the weight (exact for a Gaussian source): ``(M⁻¹ - I/s_w²)⁻¹``; None when the
    light is too faint or too narrow to measure."""
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    dx, dy = xx - x, yy - y
    w = np.exp(-0.5 * (dx * dx + dy * dy) / s_w**2) * np.nan_to_num(img)
    tot = w.sum()
    if not tot > 0:
        return None
    m = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                  [np.sum(w * dx * dy), np.sum(w * dy * dy)]]) / tot
    try:
        inv = np.linalg.inv(m) - np.eye(2) / s_w**2
        if np.any(np.linalg.eigvalsh(inv) <= 0):
            return None
        return np.linalg.inv(inv)
    except np.linalg.LinAlgError:
        return None


def intrinsic_shape(own, psf_img, x, y, s_w) -> tuple[float, float, float]:
    """Major-axis sigma (spaxels), axis ratio and angle (radians from +x) of a source's
    intrinsic light: weighted second moments of its own light minus those of the PSF."""
    src = weighted_covariance(own, x, y, s_w)
    ref = weighted_covariance(psf_img, x, y, s_w)
    if src is None or ref is None:
        return 0.0, 1.0, 0.0
    vals, vecs = np.linalg.eigh(src - ref)
    l2, l1 = vals
    if l1 <= RESOLVED_SIGMA**2:
        return 0.0, 1.0, 0.0
    q = float(np.clip(np.sqrt(max(l2, 0.0) / l1), 0.3, 1.0))
    theta = float(np.arctan2(vecs[1, 1], vecs[0, 1]))
    return float(np.sqrt(l1)), q, theta


def split_large_groups(groups, x, y, max_group: int) -> tuple[list, dict]:
    """Groups larger than *max_group* cut into parts of at most *max_group* members.

    In a crowded field the footprints chain every object into one group.  Such a group is cut
    in two at the median of its members' positions along the axis where they spread most, again
    until every part is small enough: parts stay as large as allowed, so most members are
    fitted with their neighbours and only those at a cut miss the light of the ones across it.

    Returns
    -------
    groups : list of list of int
        Ordered by first row, rows in catalogue order, as :func:`find_groups`.
    cut_from : dict
        ``{row: the group it was cut from}`` for the members of cut groups.
    """
    out, sizes = [], {}
    for g in groups:
        if len(g) <= max_group:
            out.append(g)
            continue
        for i in g:
            sizes[i] = tuple(g)
        pending = [list(g)]
        while pending:
            part = pending.pop()
            if len(part) <= max_group:
                out.append(sorted(part))
                continue
            px, py = np.asarray(x)[part], np.asarray(y)[part]
            key = px if np.ptp(px) >= np.ptp(py) else py
            order = [part[k] for k in np.lexsort((np.asarray(part), key))]
            half = len(order) // 2
            pending.extend([order[:half], order[half:]])
    return sorted(out, key=lambda g: g[0]), sizes


def cut_footprints(part, whole, foot, x, y) -> dict:
    """The footprints of the members of *part*, a part of the cut group *whole*, restricted to
    the spaxels nearer to one of them than to any other member of *whole*: a part is not fitted
    on its cut-away neighbours' light."""
    others = [j for j in whole if j not in set(part)]
    out = {}
    for i in part:
        gy, gx = foot[i]
        d_in = np.min([np.hypot(gx - x[j], gy - y[j]) for j in part], axis=0)
        d_out = np.min([np.hypot(gx - x[j], gy - y[j]) for j in others], axis=0)
        keep = d_in <= d_out
        out[i] = (gy[keep], gx[keep])
    return out

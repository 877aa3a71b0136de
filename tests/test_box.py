"""The one stamp geometry (ifu_extract.box): boxes, cutting and moving images between boxes."""

import numpy as np
import pytest

from ifu_extract.box import Box, reframe, stamp_box


def _plain_window(arr, box, fill):
    """Reference: loop over the box's pixels (what every copy of the padding rule did)."""
    x0, x1, y0, y1 = box
    out = np.full((y1 - y0, x1 - x0), fill, dtype=arr.dtype)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if 0 <= y < arr.shape[0] and 0 <= x < arr.shape[1]:
                out[y - y0, x - x0] = arr[y, x]
    return out


@pytest.mark.parametrize("box", [(2, 7, 3, 6), (-3, 4, -2, 5), (5, 14, 6, 12), (-4, 14, -3, 12),
                                 (12, 15, 0, 3), (-5, -1, 2, 4)])
def test_cut_pads_outside_the_array(box):
    arr = np.arange(10 * 9, dtype=np.int32).reshape(10, 9)
    got = Box(*box).cut(arr, -1)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _plain_window(arr, box, -1))
    f = Box(*box).cut(arr.astype(np.float64), np.nan, dtype=np.float32)
    assert f.dtype == np.float32
    ref = _plain_window(arr.astype(np.float32), box, np.nan)
    np.testing.assert_array_equal(f, ref)


def test_reframe_moves_between_boxes_and_back():
    rng = np.random.default_rng(3)
    src = (3, 11, -2, 5)
    mask = rng.random((7, 8)) > 0.5
    dst = (0, 6, 1, 9)
    moved = reframe(mask, src, dst, False)
    assert moved.shape == (8, 6) and moved.dtype == bool
    for y in range(1, 9):
        for x in range(0, 6):
            inside = 3 <= x < 11 and -2 <= y < 5
            assert moved[y - 1, x] == (mask[y + 2, x - 3] if inside else False)
    # Back on the source box: what the destination held, False elsewhere.
    back = reframe(moved, dst, src, False)
    common = Box(*src).overlap(dst)
    assert common == (3, 6, 1, 5)
    np.testing.assert_array_equal(back[3:7, 0:3], mask[3:7, 0:3])
    assert not back[:, 3:].any() and not back[:3].any()
    # Leading axes (a cube window) move with the image.
    cube = rng.random((4, 7, 8))
    np.testing.assert_array_equal(reframe(cube, src, dst, np.nan)[2], reframe(cube[2], src, dst, np.nan))


def test_around_is_the_stamp_geometry():
    # A 5-arcsec box of 0.2-arcsec spaxels: 25 spaxels centred on the spaxel holding (x, y).
    box = stamp_box(10.4, 20.6, 5.0, 0.2)
    assert box == Box.around(10.4, 20.6, 5.0, 0.2) == (-2, 23, 9, 34)
    assert (box.nx, box.ny, box.shape) == (25, 25, (25, 25))
    x0, x1, y0, y1 = box                        # still the tuple it replaces
    assert (x0, x1, y0, y1) == (-2, 23, 9, 34)
    assert not box.within((40, 40)) and Box(0, 40, 0, 40).within((40, 40))
    assert Box.around(3.0, 3.0, 0.01, 0.2).shape == (1, 1)   # never empty
    assert Box.centred(4.49, 7.5, 2) == (2, 7, 6, 11)
    assert Box(0, 3, 0, 3).overlap((3, 5, 0, 3)) is None

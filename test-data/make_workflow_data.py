#!/usr/bin/env python
"""Make the ``wf_*`` test files of the Galaxy workflow test (deterministic; rerun to regenerate).

``wf_cube.fits``     a cut-down *real* MUSE cube: mpdaf's Abell 478 minicube over its whole
                     40 x 40 spaxel field, 36 channels (about 7115-7160 Angstrom: H-alpha and
                     [NII] 6583 of the cluster galaxies at z = 0.086), DATA/STAT/DQ, full WCS
``wf_catalog.txt``   mpdaf's MUSELET catalogue (cat.txt) cut to the objects inside that field
                     (8 objects: enough for a 3-chunk split)

The cut reuses ``make_galaxy_data.make_cube`` with a wider window and fewer channels, so that the
workflow test has several objects while the file stays well under 1 MB.  Usage:
``python test-data/make_workflow_data.py`` with the package installed (writes next to this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_galaxy_data as gx  # noqa: E402  (same cutting code, other window)


def main() -> None:
    gx.X0, gx.X1, gx.Y0, gx.Y1 = 0, 40, 0, 40
    gx.WAVE_START, gx.NCHAN = 7115.0, 36
    cube_src, cat_src = gx.minicube_paths()
    wcs = gx.make_cube(cube_src, HERE / "wf_cube.fits")
    gx.make_catalog(cat_src, HERE / "wf_catalog.txt", wcs)
    for path in sorted(HERE.glob("wf_*")):
        size = path.stat().st_size
        assert size < 1_000_000, f"{path.name} is {size} bytes: test files stay well under 1 MB"
        print(f"{path.name:24s} {size:8d} bytes")


if __name__ == "__main__":
    main()

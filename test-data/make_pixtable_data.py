"""Write the small pixel tables used by the Galaxy tests of the pixtable tools.

    python test-data/make_pixtable_data.py

Deterministic (fixed seeds, SOURCE_DATE_EPOCH): rerunning gives the same files.

``pixtable_small.fits``        20000 rows, 2 IFUs, positioned (RA/Dec offsets), image layout,
                               not sky-subtracted, two sources
``pixtable_small_table.fits``  the same field, projected coordinates, binary-table layout
``pixtable_mask.fits``         source mask image (DATA extension, TAN WCS), 0.2" pixels
``pixtable_mask_nowcs.fits``   the same mask without WCS (a bad input)
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")

import numpy as np  # noqa: E402

from ifu_extract.pixtable.synth import (SynthSource, SynthSpec, mask_image_hdulist,  # noqa: E402
                                        write_pixtable)

HERE = Path(__file__).resolve().parent
RA0, DEC0 = 53.1625, -27.7914


def spec(convention: str) -> SynthSpec:
    cosd = np.cos(np.deg2rad(DEC0))
    sources = (SynthSource(RA0, DEC0 + 0.2 / 3600, 80.0),
               SynthSource(RA0 - 8.0 / 3600 / cosd, DEC0 - 1.0 / 3600, 50.0))
    return SynthSpec(nrows=20_000, n_ifu=2, convention=convention, ra=RA0, dec=DEC0,
                     sources=sources, seed=3)


def main() -> None:
    write_pixtable(HERE / "pixtable_small.fits", spec("positioned"), layout="image", threads=1)
    write_pixtable(HERE / "pixtable_small_table.fits", spec("projected"), layout="table",
                   threads=1)
    mask_image_hdulist(spec("positioned"), radius=1.5, shape=(80, 330)).writeto(
        HERE / "pixtable_mask.fits", overwrite=True)
    mask_image_hdulist(spec("positioned"), radius=1.5, shape=(80, 330), with_wcs=False).writeto(
        HERE / "pixtable_mask_nowcs.fits", overwrite=True)
    for name in ("pixtable_small.fits", "pixtable_small_table.fits", "pixtable_mask.fits",
                 "pixtable_mask_nowcs.fits"):
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()

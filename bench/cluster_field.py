"""The synthetic field of the cluster scaling benchmark (issue 19; `make cluster-bench`).

    python bench/cluster_field.py [--objects 2000] [--out bench/out/cluster]

Writes a MUSE-sized synthetic cube, 3681 x 300 x 300 (DATA + STAT float32, 2.65 GB), with N point
sources (Moffat PSF, random continua; ``extract_bench.make_big_cube``, seed 42, the same field
maker as the extraction benchmark, here with 2000 objects) and their catalogue (ID RA DEC, true
positions).  Kept while it exists with the same object count (the cube takes minutes to write).
Prints the two paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from extract_bench import make_big_cube  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "cluster")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cube = args.out / f"field_{args.objects}.fits"
    cat = args.out / f"field_{args.objects}_catalog.txt"
    truth_path = cube.with_suffix(".json")
    if cube.exists() and truth_path.exists():
        truth = json.loads(truth_path.read_text())
    else:
        truth = make_big_cube(cube, args.objects)
    if not cat.exists():
        from astropy.io import fits
        from astropy.wcs import WCS

        from ifu_extract.wcsutil import pixel_to_world

        wcs = WCS(fits.getheader(cube, "DATA")).celestial
        ra, dec = pixel_to_world(wcs, np.array(truth["x"]), np.array(truth["y"]))
        cat.write_text("ID RA DEC\n" + "".join(f"{i} {r:.7f} {d:.7f}\n"
                                               for i, (r, d) in enumerate(zip(ra, dec), start=1)))
    print(cube)
    print(cat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

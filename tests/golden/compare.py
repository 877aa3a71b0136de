"""Compare two output folders of ``run_golden.sh``: every file byte for byte.

``python tests/golden/compare.py BASE NEW [--ignore-cards CHECKSUM,DATASUM]``.  PNG files that
differ in bytes are compared by decoded pixels; FITS files that differ are re-compared with the
cards given to ``--ignore-cards`` removed (to show what changed, never to pass silently: they
are still listed).  Exit 0 only when nothing differs beyond "png-pixels-equal" entries.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _png_pixels_equal(a: Path, b: Path) -> bool:
    import numpy as np
    from PIL import Image

    with Image.open(a) as ia, Image.open(b) as ib:
        return ia.size == ib.size and ia.mode == ib.mode and np.array_equal(np.asarray(ia), np.asarray(ib))


def _fits_diff(a: Path, b: Path, ignore: list[str]) -> str:
    from astropy.io import fits

    try:
        d = fits.FITSDiff(str(a), str(b), ignore_keywords=ignore + ["DATE"], rtol=0, atol=0)
    except Exception as exc:  # noqa: BLE001 - a report tool: show what could not be read
        return f"unreadable: {exc}"
    return "identical except ignored cards" if d.identical else d.report().splitlines()[-1][:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--ignore-cards", default="CHECKSUM,DATASUM")
    ap.add_argument("--logs", action="store_true", help="also compare stdout/stderr logs")
    ap.add_argument("--subset", action="store_true",
                    help="NEW ran only some groups: files of BASE absent from NEW are not reported")
    args = ap.parse_args(argv)
    ignore = [c for c in args.ignore_cards.split(",") if c]

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "READY"
                and (args.logs or not str(p.relative_to(root)).startswith("logs/")
                     or p.suffix == ".rc")}

    fa, fb = files(args.base), files(args.new)
    if args.subset:
        fa &= fb
    bad = 0
    for rel in sorted(fa - fb):
        print(f"MISSING  {rel}"); bad += 1
    for rel in sorted(fb - fa):
        print(f"EXTRA    {rel}"); bad += 1
    same = 0
    for rel in sorted(fa & fb):
        a, b = args.base / rel, args.new / rel
        if _digest(a) == _digest(b):
            same += 1
            continue
        if rel.endswith(".png") and _png_pixels_equal(a, b):
            print(f"png-pixels-equal  {rel}")
            continue
        if rel.endswith((".fits", ".ifxs")) and rel.endswith(".fits"):
            print(f"DIFF     {rel}: {_fits_diff(a, b, ignore)}")
        else:
            print(f"DIFF     {rel}")
        bad += 1
    print(f"compare: {same} identical, {bad} differing/missing/extra of {len(fa | fb)} files")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The workflow's outputs through Slurm against the local runner's: the same bytes.

    python compare_bytes.py SLURM_RUN LOCAL_RUN

Both folders are downloads of tests/galaxy/workflow/run_workflow.py (summary.tsv, sources/*.fits)
of the same inputs, parameters and chunk count, with SOURCE_DATE_EPOCH set for the jobs.  Checks,
with the package's python (astropy):

- the same Source files, and in each the same SPE_* extensions whose data are the same bytes
  (not a tolerance: the same computation on the same bytes must give the same bytes);
- summary.tsv the same bytes;
- in each Source file every HDU's data the same bytes and every header card the same, except
  the provenance cards naming an input by its Galaxy file name (``dataset_<uuid>.dat``: each
  server stores its upload under its own name); any other difference (dates included) is printed
  and counts as a failure: nothing of the run may depend on where the job ran.

Prints one line per check; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits


GALAXY_FILE = re.compile(r"dataset_[0-9a-f-]+\.dat")


def file_diff(a: Path, b: Path) -> tuple[list[str], int]:
    """Differing data and header cards of two FITS files, and the number of provenance cards
    that differ only by the Galaxy file names in them."""
    out, provenance = [], 0
    with fits.open(a) as ha, fits.open(b) as hb:
        if len(ha) != len(hb):
            return [f"{len(ha)} vs {len(hb)} HDUs"], 0
        for i, (x, y) in enumerate(zip(ha, hb)):
            if (x.data is None) != (y.data is None) or (
                    x.data is not None and np.asarray(x.data).tobytes() != np.asarray(y.data).tobytes()):
                out.append(f"HDU {i} ({x.name}): data bytes differ")
            keys = [k for k in x.header if k not in ("CHECKSUM", "DATASUM")]
            if keys != [k for k in y.header if k not in ("CHECKSUM", "DATASUM")]:
                out.append(f"HDU {i}: different header keywords")
                continue
            for key in set(keys):
                va, vb = x.header.get(key), y.header.get(key)
                if va == vb:
                    continue
                if isinstance(va, str) and isinstance(vb, str) and GALAXY_FILE.search(va) and \
                        GALAXY_FILE.sub("", va) == GALAXY_FILE.sub("", vb):
                    provenance += 1
                else:
                    out.append(f"HDU {i} {key}: {va!r} vs {vb!r}")
    return out, provenance


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slurm_run", type=Path)
    ap.add_argument("local_run", type=Path)
    args = ap.parse_args()
    a, b = args.slurm_run, args.local_run
    bad = 0
    fa = sorted(p.name for p in (a / "sources").glob("*.fits"))
    fb = sorted(p.name for p in (b / "sources").glob("*.fits"))
    if fa != fb or not fa:
        print(f"FAIL Source files differ: {fa} vs {fb}")
        return 1
    n_spe = n_same = n_prov = 0
    for name in fa:
        pa, pb = a / "sources" / name, b / "sources" / name
        with fits.open(pa) as ha, fits.open(pb) as hb:
            sa = {h.name: h for h in ha if h.name.startswith("SPE_")}
            sb = {h.name: h for h in hb if h.name.startswith("SPE_")}
            if sorted(sa) != sorted(sb) or not sa:
                print(f"FAIL {name}: spectra {sorted(sa)} vs {sorted(sb)}")
                bad += 1
                continue
            for tag in sa:
                if sa[tag].data.tobytes() != sb[tag].data.tobytes():
                    print(f"FAIL {name} {tag}: data bytes differ")
                    bad += 1
                n_spe += 1
        if pa.read_bytes() != pb.read_bytes():
            diffs, prov = file_diff(pa, pb)
            n_prov += prov
            if diffs:
                print(f"FAIL {name}: " + "; ".join(diffs[:6]))
                bad += 1
        else:
            n_same += 1
    if not bad:
        print(f"ok  spectra: {n_spe} SPE_* arrays in {len(fa)} Source files, byte-identical; every "
              f"HDU's data and header identical ({n_same} files identical as a whole; elsewhere "
              f"only {n_prov} provenance cards naming the servers' own input file names differ)")
    if (a / "summary.tsv").read_bytes() != (b / "summary.tsv").read_bytes():
        print("FAIL summary.tsv differs")
        bad += 1
    else:
        print("ok  summary.tsv byte-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

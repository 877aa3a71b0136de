"""The workflow's outputs through Slurm against the local runner's: the same bytes.

    python compare_bytes.py SLURM_RUN LOCAL_RUN

Both folders are downloads of tests/galaxy/workflow/run_workflow.py (summary.tsv, sources/*.fits)
of the same inputs, parameters and chunk count, with SOURCE_DATE_EPOCH set for the jobs.  Checks,
with the package's python (astropy):

- the same Source files, and in each the same SPE_* extensions whose data are the same bytes
  (not a tolerance: the same computation on the same bytes must give the same bytes);
- summary.tsv the same bytes;
- each Source file as a whole the same bytes; where not, the header cards that differ are
  printed (and count as a failure: nothing of the run may depend on where the job ran).

Prints one line per check; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from astropy.io import fits


def header_diff(a: Path, b: Path) -> list[str]:
    out = []
    with fits.open(a) as ha, fits.open(b) as hb:
        for i, (x, y) in enumerate(zip(ha, hb)):
            for key in sorted(set(x.header) | set(y.header)):
                if x.header.get(key) != y.header.get(key):
                    out.append(f"HDU {i} {key}: {x.header.get(key)!r} vs {y.header.get(key)!r}")
        if len(ha) != len(hb):
            out.append(f"{len(ha)} vs {len(hb)} HDUs")
    return out


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
    n_spe = 0
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
            print(f"FAIL {name}: the files differ: " + "; ".join(header_diff(pa, pb)[:6]))
            bad += 1
    if not bad:
        print(f"ok  spectra: {n_spe} SPE_* arrays in {len(fa)} Source files, byte-identical")
    sum_a, sum_b = (a / "summary.tsv").read_bytes(), (b / "summary.tsv").read_bytes()
    if sum_a != sum_b:
        print("FAIL summary.tsv differs")
        bad += 1
    else:
        digest = hashlib.sha256(b"".join((a / "sources" / n).read_bytes() for n in fa)).hexdigest()
        print(f"ok  summary.tsv and all {len(fa)} Source files byte-identical (sha256 of the files "
              f"{digest[:16]})" if not bad else "ok  summary.tsv byte-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

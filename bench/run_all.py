"""Run every benchmark (not part of `make test`): each compares ifu-extract with its peer in one
run and prints a table; results are quoted in bench/README.md.

    python bench/run_all.py [--only extract contsub pixtable spectra segmentation]

The benchmarks write their inputs to bench/out/ (git-ignored; several GB for the big ones) and
take from minutes (spectra, contsub) to half an hour (extract with 500 objects, pixtable 3e8 rows).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "extract": ["extract_bench.py"],
    "contsub": ["contsub_bench.py"],
    "pixtable": ["pixtable_bench.py"],
    "spectra": ["spectra_bench.py"],
    "segmentation": ["segmentation_bench.py"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=sorted(BENCHES))
    args = ap.parse_args()
    failed = []
    for name in args.only:
        t0 = time.time()
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, str(HERE / BENCHES[name][0]), *BENCHES[name][1:]], cwd=HERE.parent)
        print(f"== {name}: exit {rc}, {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare two downloads of run_workflow.py: same objects, same spectra arrays, and the chunking.

    python compare_spectra.py RUN_A RUN_B [--chunks-a N] [--chunks-b N]

Runs with the package's venv (astropy).  Checks that the chunk collection of each run has as many
elements as chunks asked for and that every per-chunk step ran one job per chunk; that both runs
give the same summary objects (IDs, in order; STATUS notes naming neighbours in the chunk may
differ) and the same Source files; and that every SPE_* extension
holds the same array in both (NaN in the same places; values equal to float32 rounding, rtol 1e-6:
the chunks cut the same catalogue rows out of the same cube, so nothing but the job boundaries
differs).  Prints one line per check and exits 1 on the first difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

PER_CHUNK_TOOLS = ("ifu_extract_extract", "ifu_extract_xcorr")


def check_chunks(run: Path, chunks: int) -> None:
    info = json.loads((run / "run.json").read_text())
    elements = info["chunk_elements"]
    assert len(elements) == chunks, f"{run}: {len(elements)} chunk elements, expected {chunks}"
    for tool in PER_CHUNK_TOOLS:
        n = info["jobs_per_step"].get(tool, 0)
        assert n == chunks, f"{run}: {tool} ran {n} jobs, expected {chunks}"
    print(f"ok  {run.name}: {chunks} chunk elements ({', '.join(elements)}), {chunks} jobs per "
          f"per-chunk step, {info['n_sources']} Source files, {info['seconds']} s")


def rows(run: Path) -> list[tuple[str, str]]:
    with open(run / "summary.tsv", newline="") as fh:
        return [(r["ID"], r["STATUS"]) for r in csv.DictReader(fh, delimiter="\t")]


def spectra(path: Path) -> dict[str, np.ndarray]:
    with fits.open(path) as hdul:
        return {h.name: np.asarray(h.data) for h in hdul[1:] if h.name.startswith("SPE_")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--chunks-a", type=int)
    ap.add_argument("--chunks-b", type=int)
    args = ap.parse_args()
    try:
        if args.chunks_a:
            check_chunks(args.run_a, args.chunks_a)
        if args.chunks_b:
            check_chunks(args.run_b, args.chunks_b)
        ra, rb = rows(args.run_a), rows(args.run_b)
        assert [r[0] for r in ra] == [r[0] for r in rb], f"summary IDs differ:\n{ra}\n{rb}"
        print(f"ok  summaries: the same {len(ra)} objects in the same order")
        for (oid, sa), (_, sb) in zip(ra, rb):
            if sa != sb:  # notes name the neighbours of the same chunk: they may differ
                print(f"    note: object {oid} STATUS {sa!r} vs {sb!r}")
        fa = sorted(p.name for p in (args.run_a / "sources").glob("*.fits"))
        fb = sorted(p.name for p in (args.run_b / "sources").glob("*.fits"))
        assert fa == fb and fa, f"Source files differ: {fa} vs {fb}"
        n_arrays = 0
        for name in fa:
            sa, sb = spectra(args.run_a / "sources" / name), spectra(args.run_b / "sources" / name)
            assert sorted(sa) == sorted(sb), f"{name}: spectra {sorted(sa)} vs {sorted(sb)}"
            for tag in sa:
                a, b = sa[tag], sb[tag]
                assert a.shape == b.shape, f"{name} {tag}: shapes {a.shape} vs {b.shape}"
                assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name} {tag}: NaN differ"
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, equal_nan=True,
                                           err_msg=f"{name} {tag}")
                n_arrays += 1
        print(f"ok  spectra: {len(fa)} Source files, {n_arrays} SPE_* arrays identical")
    except AssertionError as exc:
        print(f"FAIL {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The workflow with its defaults gives what ``ifu-extract run`` gives: compare the two.

    python compare_run.py WORKFLOW_RUN RUN_OUTDIR

WORKFLOW_RUN is a download of run_workflow.py (summary.tsv, sources/); RUN_OUTDIR is the output
folder of ``ifu-extract run CUBE CATALOGUE -o RUN_OUTDIR --fwhm-fallback F`` on the same cube and
catalogue, F the default of the workflow's "PSF FWHM if the cube has no FSF keywords" (``fwhm``
prints it): the workflow gives it to mask, extract and deblend as their ``--fwhm-fallback``, so
that a cube's own PSF wins as it does in ``run``.  Runs with the package's
venv (astropy).  Checks that both summaries have the same columns and, object by object in the
same order, the same value in every column (ID, STATUS, NOTES, N_SPAXELS, N_SKY, the fluxes...),
and that every ``SPE_*`` array of run's Source files is in the workflow's Source file of the same
object with the same values (float32 rounding, rtol 1e-6; the workflow's Source files also hold
the XCOR and DEBLEND spectra, which run makes only when asked).  Prints one line per check and
exits 1 on the first difference.

    python compare_run.py fwhm WORKFLOW.ga    the workflow's fallback PSF FWHM default
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from compare_spectra import spectra

#: The label of the workflow's PSF input (run takes it as --fwhm-fallback).
PSF_LABEL = "PSF FWHM if the cube has no FSF keywords"


def psf_default(ga: Path) -> float:
    """The default of the workflow's fallback PSF FWHM input."""
    steps = json.loads(ga.read_text())["steps"].values()
    step = next(s for s in steps if s.get("label") == PSF_LABEL)
    return float(json.loads(step["tool_state"])["default"])


def table(run: Path) -> tuple[list[str], list[dict]]:
    with open(run / "summary.tsv", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def compare(wf: Path, run: Path) -> None:
    cols_w, rows_w = table(wf)
    cols_r, rows_r = table(run)
    assert cols_w == cols_r, f"summary columns differ:\n  workflow {cols_w}\n  run      {cols_r}"
    ids_w, ids_r = [r["ID"] for r in rows_w], [r["ID"] for r in rows_r]
    assert ids_w == ids_r, f"summary objects differ:\n  workflow {ids_w}\n  run      {ids_r}"
    diffs = [f"  object {a['ID']} {c}: workflow {a[c]!r}, run {b[c]!r}"
             for a, b in zip(rows_w, rows_r) for c in cols_r if a[c] != b[c]]
    assert not diffs, "summaries differ:\n" + "\n".join(diffs)
    statuses: dict = {}
    for r in rows_r:
        statuses[r["STATUS"]] = statuses.get(r["STATUS"], 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
    print(f"ok  summaries: {len(rows_r)} objects, {len(cols_r)} columns identical ({text})")
    names = sorted(p.name for p in (run / "sources").glob("*.fits"))
    assert names, f"{run}/sources: no Source file"
    n_arrays = 0
    for name in names:
        path_w = wf / "sources" / name
        assert path_w.exists(), f"{name}: in run's sources/, not in the workflow's"
        sr, sw = spectra(run / "sources" / name), spectra(path_w)
        missing = sorted(set(sr) - set(sw))
        assert not missing, f"{name}: the workflow's Source file lacks {missing}"
        for tag, a in sr.items():
            b = sw[tag]
            assert a.shape == b.shape, f"{name} {tag}: shapes run {a.shape} vs workflow {b.shape}"
            assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name} {tag}: NaN differ"
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=0, equal_nan=True,
                                       err_msg=f"{name} {tag} (workflow vs run)")
            n_arrays += 1
    print(f"ok  spectra: {len(names)} Source files, {n_arrays} SPE_* arrays of run identical in "
          "the workflow's")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "fwhm":
        print(psf_default(Path(argv[1])))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        compare(Path(argv[0]), Path(argv[1]))
    except AssertionError as exc:
        print(f"FAIL workflow vs run: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

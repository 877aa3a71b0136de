"""Summarise the cluster scaling runs (tests/galaxy/cluster/bench_runs.py) and extrapolate.

    python bench/cluster_scaling.py bench/out/cluster/scaling.json [--objects N] [--nodes 40]
                                    [--slots-per-node 2]

Per chunk count: the wall time of the invocation, the number of jobs, the tool commands' run time
(sum over jobs, ``runtime_seconds``), and the per-job overhead, in two parts measured on each job:

- ``in-job`` = (Galaxy's last update of the job - Slurm's start of its batch job) - the tool's own
  run time: the job script around the command, the collection of the outputs, Galaxy noticing
  the end (squeue poll) and finishing the job;
- ``dispatch`` = Slurm's submit time - Galaxy's creation of the job, for the jobs mapped over the
  chunk collection (created only once the collection exists, so with their inputs ready): Galaxy
  preparing the job folder and command, and sbatch.

Queueing for a free core (Slurm's start - submit) is not overhead and is reported apart.

Extrapolation: the steps on the whole cube or catalogue (white light, continuum subtraction,
detection, masks, split, merge, deblend, report) run once whatever the chunk count; the per-chunk
steps (extract, xcorr) cost ``c`` seconds of tool time per object (measured) plus ``o`` overhead
per job.  With P parts on S slots:
``T(P) = T_whole + ceil(P / S) * (n_steps * o + N / P * c)``.  Printed for --nodes nodes of
--slots-per-node slots.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

PER_CHUNK = ("ifu_extract_extract", "ifu_extract_xcorr")  # mapped over the parts (the .ga)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--slots-per-node", type=int, default=2)
    args = ap.parse_args(argv)
    data = json.loads(args.results.read_text())
    print("| parts | wall s | jobs run (reused) | tool run time s (sum) | per-chunk steps s (sum) | "
          "in-job overhead s (median) | dispatch s (median) | queued for a core s (median) |")
    print("|---|---|---|---|---|---|---|---|")
    model = {}
    for run in data["runs"]:
        # Jobs reused from an earlier invocation (Galaxy's job cache) ran no command: left out.
        jobs = [j for j in run["jobs"] if j["tool"] != "__DATA_FETCH__" and not j.get("reused")]
        tool_sum = sum(j["runtime"] or 0 for j in jobs)
        per_chunk = [j for j in jobs if j["tool"] in PER_CHUNK]
        chunk_sum = sum(j["runtime"] or 0 for j in per_chunk)
        in_job = [j["updated"] - j["starttime"] - j["runtime"] for j in jobs
                  if j.get("starttime") and j["runtime"] is not None]
        dispatch = [j["submittime"] - j["created"] for j in per_chunk if j.get("submittime")]
        queued = [j["starttime"] - j["submittime"] for j in jobs if j.get("starttime")]
        reused = sum(1 for j in run["jobs"] if j.get("reused") and j["tool"] != "__DATA_FETCH__")
        print(f"| {run['chunks']} | {run['wall']:.0f} | {len(jobs)} ({reused}) | {tool_sum:.0f} | {chunk_sum:.0f} | "
              f"{median(in_job):.1f} | {median(dispatch):.1f} | {median(queued):.1f} |")
        model[run["chunks"]] = {"whole": tool_sum - chunk_sum, "chunk": chunk_sum,
                                "overhead": median(in_job) + median(dispatch),
                                "steps": len({j["tool"] for j in per_chunk})}
    if not model:
        return 1
    # The model from the run with the most parts (its per-object cost includes the per-part
    # costs that grow with the chunk count, e.g. reading the cube once per part).
    p = max(model)
    m = model[p]
    c = m["chunk"] / args.objects
    o = m["overhead"]
    slots = args.nodes * args.slots_per_node
    print(f"\nper-chunk steps: {c * 1000:.0f} ms of tool time per object; overhead {o:.1f} s per job; "
          f"whole-cube steps {m['whole']:.0f} s (from the {p}-part run)")
    for parts in (1, 4, slots // 2, slots, 2 * slots):
        t = m["whole"] + math.ceil(parts / slots) * (m["steps"] * o + args.objects / parts * c)
        print(f"{args.nodes} nodes x {args.slots_per_node} slots, {parts} parts: {t:.0f} s "
              f"({m['whole']:.0f} s whole-cube steps + {t - m['whole']:.0f} s per-chunk)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

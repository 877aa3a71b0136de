"""Summarise the cluster scaling runs (tests/galaxy/cluster/bench_runs.py) and extrapolate.

    python bench/cluster_scaling.py bench/out/cluster/scaling_*.json [--objects N] [--nodes 40]
                                    [--slots-per-node 2]

Reads one or more result files (cluster_bench.sh writes one per chunk count, each from a fresh
Galaxy).  Per invocation: its wall time (invocation to the last Slurm job's end, and to the moment
every job was seen terminal), the load average at its start and end, and per step the Slurm job
walls and the tool commands' own walls (``tool_wall``: the jobs' ifu-extract, timed by the wrapper
of cluster_bench.sh).  Per job, the overhead in three parts:

- ``dispatch`` = Slurm's submit - Galaxy's creation of the job, for the jobs mapped over the
  chunk collection (created only once the collection exists, so with their inputs ready): Galaxy
  preparing the job folder and command, and sbatch;
- ``in-job`` = Slurm job wall - the tool command's wall: Galaxy's job script around the command
  (environment, setting the outputs' metadata in the job since there is no Celery, moving the
  outputs);
- ``finish`` = Galaxy's last update of the job - Slurm's end: Galaxy noticing the end (squeue poll)
  and collecting the outputs into the history.

Queueing for a free core (Slurm's start - submit) is not overhead and is reported apart.

Per-chunk steps (extract, xcorr): ``c``, the tool command's wall per object in the run with the
fewest parts (one job alone on the node; its fixed start-up counted per object, an upper bound),
and ``o``, the per-job cost around the command (median create -> submit + Slurm wall - command +
Slurm end -> Galaxy done).  A least-squares line through all jobs (wall against objects per part)
is printed too, but two jobs sharing the node's two cores and the load of other work make it
unreliable here.  Extrapolation with P parts on S slots (N objects):
``T(P) = T_rest + sum over the per-chunk steps of [(P - 1) * d + ceil(P / S) * (o + N / P * c)]``,
``d`` Galaxy's preparation of each further job of a step (the spread of a step's sbatch
submissions per job) and ``T_rest`` the measured wall time less the spans of the per-chunk steps
(first submission to last job done: the steps on the whole cube or catalogue, which run once
whatever P, and Galaxy's scheduling between steps).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

PER_CHUNK = ("ifu_extract_extract", "ifu_extract_xcorr")  # mapped over the parts (the .ga)
SHORT = {"__DATA_FETCH__": "fetch"}


def short(tool: str) -> str:
    return SHORT.get(tool, tool.removeprefix("ifu_extract_"))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def fit(points):
    """Least-squares line y = a + b x through (x, y) points; (a, b), or None with < 2 x values."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def span(jobs, start="submittime", end="updated"):
    starts = [j[start] for j in jobs if j.get(start) is not None]
    ends = [j[end] for j in jobs if j.get(end) is not None]
    return max(ends) - min(starts) if starts and ends else float("nan")


def rng(values, fmt="{:.0f}"):
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    lo, hi = fmt.format(values[0]), fmt.format(values[-1])
    return lo if lo == hi else f"{lo}-{hi}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=40)
    ap.add_argument("--slots-per-node", type=int, default=2)
    args = ap.parse_args(argv)
    runs = []
    for path in args.results:
        runs += json.loads(path.read_text())["runs"]
    runs.sort(key=lambda r: -r["chunks"])
    if not runs:
        return 1
    N = args.objects

    print("| parts | objects per part | wall s (to last Slurm end) | wall s (all jobs seen done) | "
          "jobs (not ok) | load 1-min start-end | per-chunk steps' span s | rest s |")
    print("|---|---|---|---|---|---|---|---|")
    rests, mapped, points, tool_points = [], [], {}, {}
    for run in runs:
        jobs = [j for j in run["jobs"] if not j.get("reused")]
        ends = [j["endtime"] for j in jobs if j.get("endtime")]
        to_end = max(ends) - run["invoked"] if ends and run.get("invoked") else float("nan")
        chunk_span = sum(span([j for j in jobs if j["tool"] == t]) for t in PER_CHUNK)
        rest = run["wall"] - chunk_span
        rests.append(rest)
        load = run.get("load_start"), run.get("load_end")
        load_txt = f"{load[0][0]:.1f}-{load[1][0]:.1f}" if all(load) else "-"
        print(f"| {run['chunks']} | {N / run['chunks']:.0f} | {to_end:.0f} | {run['wall']:.0f} | "
              f"{len(jobs)} ({run['failed']}) | {load_txt} | {chunk_span:.0f} | {rest:.0f} |")
        for j in jobs:
            if j["tool"] in PER_CHUNK:
                mapped.append(j)
                if j.get("starttime") and j.get("endtime"):
                    points.setdefault(j["tool"], []).append((N / run["chunks"], j["endtime"] - j["starttime"]))
                if j.get("tool_wall") is not None:
                    tool_points.setdefault(j["tool"], []).append((N / run["chunks"], j["tool_wall"]))

    print("\nPer step (Slurm job wall; the tool command's own wall in brackets), s:\n")
    print("| step | " + " | ".join(f"{r['chunks']} part(s)" for r in runs) + " |")
    print("|---|" + "---|" * len(runs))
    first = {}
    for run in runs:
        for j in run["jobs"]:
            first[j["tool"]] = min(first.get(j["tool"], j["created"] - run["invoked"]),
                                   j["created"] - run["invoked"])
    tools = sorted(first, key=first.get)  # in the order Galaxy created them
    for tool in tools:
        cells = []
        for run in runs:
            js = sorted((j for j in run["jobs"] if j["tool"] == tool and j.get("starttime")),
                        key=lambda j: j["starttime"])
            walls = ", ".join(f"{j['endtime'] - j['starttime']:.0f}"
                              + (f" ({j['tool_wall']:.0f})" if j.get("tool_wall") is not None else "")
                              for j in js)
            cells.append(walls or "-")
        print(f"| {short(tool)} | " + " | ".join(cells) + " |")

    print("\nTimeline, s after the invocation: a step's first Slurm start - its last job done in "
          "Galaxy:\n")
    print("| step | " + " | ".join(f"{r['chunks']} part(s)" for r in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for tool in tools:
        cells = []
        for run in runs:
            js = [j for j in run["jobs"] if j["tool"] == tool and j.get("starttime")]
            cells.append(f"{min(j['starttime'] for j in js) - run['invoked']:.0f}-"
                         f"{max(j['updated'] for j in js) - run['invoked']:.0f}" if js else "-")
        print(f"| {short(tool)} | " + " | ".join(cells) + " |")

    print("\nPer step, all runs (median over jobs, s): Slurm job wall, tool command, in-job "
          "overhead (wall - command), finish (Galaxy's update - Slurm end), Galaxy create to Slurm "
          "submit:\n")
    print("| step | jobs | Slurm wall | tool command | in-job | finish | create to submit |")
    print("|---|---|---|---|---|---|---|")
    for tool in tools:
        js = [j for r in runs for j in r["jobs"] if j["tool"] == tool and j.get("endtime")]
        if not js:
            continue
        timed = [j for j in js if j.get("tool_wall") is not None]
        print(f"| {short(tool)} | {len(js)} | {median([j['endtime'] - j['starttime'] for j in js]):.1f} | "
              f"{median([j['tool_wall'] for j in timed]):.1f} | "
              f"{median([j['endtime'] - j['starttime'] - j['tool_wall'] for j in timed]):.1f} | "
              f"{median([j['updated'] - j['endtime'] for j in js]):.1f} | "
              f"{median([j['submittime'] - j['created'] for j in js]):.1f} |")

    all_jobs = [j for r in runs for j in r["jobs"] if not j.get("reused")]
    in_job = [j["endtime"] - j["starttime"] - j["tool_wall"] for j in all_jobs
              if j.get("starttime") and j.get("tool_wall") is not None]
    finish = [j["updated"] - j["endtime"] for j in all_jobs if j.get("endtime")]
    dispatch = [j["submittime"] - j["created"] for j in mapped if j.get("submittime")]
    queued = [j["starttime"] - j["submittime"] for j in all_jobs if j.get("starttime")]
    split = [j for j in all_jobs if j["tool"] == "ifu_extract_split" and j.get("starttime")]
    print(f"\nPer-job overhead (all runs, median [range]): in-job {median(in_job):.1f} s "
          f"[{rng(in_job)}], finish {median(finish):.1f} s [{rng(finish)}], dispatch of mapped jobs "
          f"{median(dispatch):.1f} s [{rng(dispatch)}]; queued for a core {median(queued):.1f} s "
          f"[{rng(queued)}]")
    if split:
        print("split jobs (the whole catalogue): Slurm wall "
              + rng([j["endtime"] - j["starttime"] for j in split])
              + " s, tool command " + rng([j.get("tool_wall") for j in split], "{:.1f}") + " s")

    # Galaxy's finishing of a mapped job, and its preparation of each further job of a step (the
    # spread of the sbatch submissions of one step, per job after the first).
    # Galaxy's preparation of each further job of a step: the spread of the sbatch submissions of
    # one step, per job after the first.
    spreads = []
    for run in runs:
        for tool in PER_CHUNK:
            subs = [j["submittime"] for j in run["jobs"] if j["tool"] == tool and j.get("submittime")]
            if len(subs) > 1:
                spreads.append((max(subs) - min(subs)) / (len(subs) - 1))
    d = median(spreads) if spreads else 0.0
    print()
    for tool in PER_CHUNK:
        line, own = fit(points.get(tool, [])), fit(tool_points.get(tool, []))
        if line:
            own_txt = f"; tool command {own[0]:.1f} s + {own[1] * 1000:.1f} ms per object" if own else ""
            print(f"{short(tool)}, line through all jobs: Slurm job wall {line[0]:.1f} s + "
                  f"{line[1] * 1000:.1f} ms per object{own_txt} (confounded when two jobs share the "
                  "node's two cores and the load differs between runs)")
    # The model: per object, the tool command's wall in the run with the fewest parts (one job
    # alone on the node: its fixed start-up cost is counted per object, an upper bound); per job
    # of a step, Galaxy and Slurm around the command (create -> submit, Slurm wall - command,
    # Slurm end -> Galaxy done), medians over all runs.
    one = min(runs, key=lambda r: r["chunks"])
    model = {}
    for tool in PER_CHUNK:
        js = [j for j in one["jobs"] if j["tool"] == tool and j.get("tool_wall") is not None]
        every = [j for r in runs for j in r["jobs"] if j["tool"] == tool and j.get("endtime")
                 and j.get("tool_wall") is not None]
        if not js or not every:
            continue
        b = sum(j["tool_wall"] for j in js) / N
        o = (median([j["submittime"] - j["created"] for j in every])
             + median([j["endtime"] - j["starttime"] - j["tool_wall"] for j in every])
             + median([j["updated"] - j["endtime"] for j in every]))
        model[tool] = (o, b)
        print(f"{short(tool)}: c = {b * 1000:.1f} ms per object (the {one['chunks']}-part run), "
              f"o = {o:.1f} s per job (dispatch + in-job + finish)")
    if not model:
        return 0
    t_rest = median(rests)
    slots = args.nodes * args.slots_per_node
    print(f"\nExtrapolation: T(P) = T_rest + sum over {', '.join(short(t) for t in model)} of "
          f"[(P-1) * d + ceil(P/S) * (o + N/P * c)], T_rest = {t_rest:.0f} s (median of "
          f"{rng(rests)}), d = {d:.2f} s, N = {N}, S = {slots} ({args.nodes} nodes x "
          f"{args.slots_per_node} slots)")
    for parts in sorted({1, 2, 4, 10, 20, 40, slots // 2, slots}):
        per = sum((parts - 1) * d + math.ceil(parts / slots) * (o + N / parts * c)
                  for o, c in model.values())
        print(f"  {parts} parts: {t_rest + per:.0f} s ({per:.0f} s in the per-chunk steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

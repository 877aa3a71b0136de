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

Per-chunk steps (extract, xcorr): a least-squares line through their jobs, Slurm job wall against
the objects of the part, ``wall = a + b * n``: ``a`` the fixed cost of such a job (job script,
interpreter and imports, opening the cube, metadata), ``b`` the cost per object; the same for the
tool command alone.  Extrapolation with P parts on S slots (N objects):
``T(P) = T_rest + sum over the per-chunk steps of ceil(P / S) * (a + f + N / P * b)``, ``f`` the
median dispatch + finish of the mapped jobs and ``T_rest`` the measured wall time less the spans of
the per-chunk steps (the steps on the whole cube or catalogue, which run once whatever P).
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
        print("split jobs (2000 catalogue rows): Slurm wall "
              + rng([j["endtime"] - j["starttime"] for j in split])
              + " s, tool command " + rng([j.get("tool_wall") for j in split], "{:.1f}") + " s")

    f = median(d + fi for d, fi in zip(
        [j["submittime"] - j["created"] for j in mapped if j.get("submittime") and j.get("endtime")],
        [j["updated"] - j["endtime"] for j in mapped if j.get("submittime") and j.get("endtime")]))
    model = {}
    print()
    for tool in PER_CHUNK:
        line = fit(points.get(tool, []))
        own = fit(tool_points.get(tool, []))
        if line is None:
            print(f"{short(tool)}: fewer than two part sizes measured, no fit")
            continue
        a, b = line
        model[tool] = (a, b)
        own_txt = f"; tool command alone {own[0]:.1f} s + {own[1] * 1000:.1f} ms per object" if own else ""
        print(f"{short(tool)}: Slurm job wall = {a:.1f} s + {b * 1000:.1f} ms per object "
              f"({len(points[tool])} jobs){own_txt}")
    if not model:
        return 0
    t_rest = median(rests)
    slots = args.nodes * args.slots_per_node
    print(f"\nExtrapolation: T(P) = T_rest + sum over {', '.join(short(t) for t in model)} of "
          f"ceil(P/S) * (a + f + N/P * b), T_rest = {t_rest:.0f} s (median of {rng(rests)}), "
          f"f = {f:.1f} s, N = {N}, S = {slots} ({args.nodes} nodes x {args.slots_per_node} slots)")
    for parts in sorted({1, 2, 4, 10, 20, 40, slots // 2, slots}):
        per = sum(math.ceil(parts / slots) * (a + f + N / parts * b) for a, b in model.values())
        print(f"  {parts} parts: {t_rest + per:.0f} s ({per:.0f} s in the per-chunk steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scaling runs of the cluster benchmark: the workflow on one field in 1, 2, 4 ... parts (bioblend).

    python bench_runs.py URL ADMIN_KEY JOBCOMP_LOG --cube CUBE --catalogue CAT --chunks 4 2 1
                         --out RESULTS.json [--tool-times LOG] [--param NAME=VALUE ...] [--timeout S]

Runs with the planemo venv's interpreter.  The cube is linked into Galaxy from its path (admin
path paste, no copy of the 2.65 GB); the catalogue is uploaded.  Then, one after the other, one
invocation of the published workflow per chunk count in the same history, each waited for
(every job terminal).  Per invocation it records the wall time from invocation to the last job's
end, and per job: the tool, Galaxy's creation and last update times, the tool command's run time
(``runtime_seconds`` metric), GALAXY_SLOTS, and from the Slurm completion log the submit, start
and end times of its batch job, and with --tool-times (the log of cluster_bench.sh's wrapper of
the jobs' ifu-extract: subcommand, start, end, exit code, Slurm job id per call) the wall time of
the tool command itself.  The load average (/proc/loadavg) is recorded at the start and end of
each invocation.  Writes RESULTS.json and prints a summary per invocation.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bioblend.galaxy import GalaxyInstance

HERE = Path(__file__).resolve().parent
GA = HERE.parents[2] / "workflows" / "ifu-spectral-extraction" / "ifu-spectral-extraction.ga"
sys.path.insert(0, str(HERE.parent / "workflow"))
from run_workflow import workflow_inputs  # noqa: E402 - the one home of the workflow's input labels

# "paused": waiting on an input whose job failed, it never runs by itself.
TERMINAL = {"ok", "error", "failed", "deleted", "skipped", "paused"}


def jobcomp(path: Path) -> dict[str, dict]:
    out = {}
    for line in path.read_text().splitlines():
        f = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        if "JobId" in f:
            out[f["JobId"]] = f
    return out


def tool_times(path: Path | None) -> dict[str, float]:
    """Slurm job id -> summed wall time of its ifu-extract calls (``--version`` calls left out)."""
    out: dict[str, float] = {}
    if path is None or not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[0] == "--version":
            continue
        out[parts[4]] = out.get(parts[4], 0.0) + float(parts[2]) - float(parts[1])
    return out


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def slurm_epoch(text: str) -> float:
    """Slurm's times (local time of this machine, no zone) -> seconds since the epoch."""
    return datetime.fromisoformat(text).astimezone().timestamp()


def galaxy_epoch(text: str) -> float:
    """Galaxy's times (UTC, no zone) -> seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("jobcomp", type=Path)
    ap.add_argument("--cube", required=True, type=Path)
    ap.add_argument("--catalogue", required=True, type=Path)
    ap.add_argument("--chunks", type=int, nargs="+", default=[4, 2, 1])
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--tool-times", type=Path, default=None,
                    help="log of the jobs' ifu-extract calls (cluster_bench.sh's wrapper)")
    ap.add_argument("--reuse", action="store_true",
                    help="Galaxy's job cache: the steps whose inputs and parameters do not depend on "
                         "the chunk count (white light, contsub, detect, mask) run in the first "
                         "invocation only; later ones reuse their outputs (no job is run).  Needs "
                         "a PostgreSQL database: on SQLite Galaxy's job-cache search fails (no such "
                         "function: concat_ws)")
    args = ap.parse_args(argv)
    gi = GalaxyInstance(args.url, key=args.key)
    hid = gi.histories.create_history("ifu-extract cluster scaling")["id"]
    t0 = time.time()
    fetch = gi.tools._post({"history_id": hid, "targets": [{
        "destination": {"type": "hdas"},
        "elements": [{"src": "path", "path": str(args.cube.resolve()), "ext": "fits",
                      "link_data_only": True, "name": args.cube.name}]}]},
        url=gi.url + "/tools/fetch")
    cube = fetch["outputs"][0]["id"]
    cat = gi.tools.upload_file(str(args.catalogue), hid, file_type="txt")["outputs"][0]["id"]
    for ds in (cube, cat):
        gi.datasets.wait_for_dataset(ds, maxwait=args.timeout)
    t_inputs = time.time() - t0
    wf_id = gi.workflows.import_workflow_dict(json.loads(GA.read_text()))["id"]
    runs = []
    for chunks in args.chunks:
        inputs = workflow_inputs(cube, cat, chunks, args.param)
        t1 = time.time()
        load_start = loadavg()
        inv = gi.workflows.invoke_workflow(wf_id, inputs=inputs, history_id=hid, inputs_by="name",
                                           use_cached_job=args.reuse)
        gi.invocations.wait_for_invocation(inv["id"], maxwait=args.timeout)
        deadline = time.time() + args.timeout
        while True:
            jobs = gi.jobs.get_jobs(invocation_id=inv["id"])
            if jobs and {j["state"] for j in jobs} <= TERMINAL:
                break
            if time.time() > deadline:
                print(f"bench_runs: invocation with {chunks} chunks not done after {args.timeout} s")
                return 1
            time.sleep(5)
        wall = time.time() - t1
        load_end = loadavg()
        slurm = jobcomp(args.jobcomp)
        own = tool_times(args.tool_times)
        rows = []
        for j in jobs:
            full = gi.jobs.show_job(j["id"], full_details=True)
            metrics = {m["name"]: m.get("raw_value") for m in gi.jobs.get_metrics(j["id"])}
            rec = slurm.get(str(full.get("external_id") or ""), {})
            tool = j["tool_id"].rsplit("/", 2)[-2] if "/" in j["tool_id"] else j["tool_id"]
            row = {"tool": tool, "state": j["state"], "slurm_id": full.get("external_id"),
                   "created": galaxy_epoch(full["create_time"]),
                   "updated": galaxy_epoch(full["update_time"]),
                   "runtime": float(metrics["runtime_seconds"]) if "runtime_seconds" in metrics else None,
                   "slots": metrics.get("galaxy_slots"),
                   "reused": bool(full.get("copied_from_job_id")) or not full.get("external_id"),
                   "tool_wall": own.get(str(full.get("external_id") or ""))}
            for k in ("SubmitTime", "StartTime", "EndTime"):
                if rec.get(k):
                    row[k.lower()] = slurm_epoch(rec[k])
            rows.append(row)
        bad = [r for r in rows if r["state"] != "ok"]
        runs.append({"chunks": chunks, "wall": round(wall, 1), "jobs": rows, "failed": len(bad),
                     "invocation_id": inv["id"], "invoked": t1, "load_start": load_start,
                     "load_end": load_end})
        per_tool = {}
        for r in rows:
            per_tool.setdefault(r["tool"], []).append(r["runtime"] or 0.0)
        print(f"{chunks} chunk(s): {wall:.0f} s wall, {len(rows)} jobs ({len(bad)} not ok), load "
              f"{load_start[0]:.1f} -> {load_end[0]:.1f}; tool "
              "run times: " + ", ".join(f"{t} {len(v)}x {sum(v):.0f} s" for t, v in sorted(per_tool.items())),
              flush=True)
        args.out.write_text(json.dumps({"inputs_seconds": round(t_inputs, 1), "runs": runs}, indent=1))
    return 0 if all(r["failed"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

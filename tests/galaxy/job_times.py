"""Where a Galaxy job's time goes: queue, tool command, and the rest (start-up, metadata, collection).

    python job_times.py URL ADMIN_KEY [--limit N]

For each recent job: the tool, the state, the wall time from creation to the last update, and the
tool command's own run time (Galaxy's ``core`` job metric ``runtime_seconds``); their difference
is Galaxy's per-job overhead on this machine (job script start-up, metadata, output collection).
Standard library only, so any python runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import urllib.request
from datetime import datetime


def get(url: str, key: str, path: str):
    req = urllib.request.Request(url.rstrip("/") + path, headers={"x-api-key": key})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()

    jobs = get(args.url, args.key, f"/api/jobs?limit={args.limit}&order_by=create_time")
    rows, overheads = [], {}
    for job in jobs:
        created = datetime.fromisoformat(job["create_time"])
        updated = datetime.fromisoformat(job["update_time"])
        wall = (updated - created).total_seconds()
        metrics = get(args.url, args.key, f"/api/jobs/{job['id']}/metrics")
        runtime = next((float(m["raw_value"]) for m in metrics if m.get("name") == "runtime_seconds"), None)
        tool = job["tool_id"]
        rows.append((job["create_time"][11:19], tool, job["state"], wall, runtime))
        if runtime is not None:
            overheads.setdefault("upload" if tool == "__DATA_FETCH__" else "tool", []).append(wall - runtime)
    print(f"{'created':8s}  {'tool':34s} {'state':6s} {'wall s':>7s} {'command s':>9s}")
    for created, tool, state, wall, runtime in rows:
        rt = "" if runtime is None else f"{runtime:9.1f}"
        print(f"{created:8s}  {tool:34s} {state:6s} {wall:7.1f} {rt:>9s}")
    for kind, values in sorted(overheads.items()):
        print(f"{kind} jobs: {len(values)}, median overhead {statistics.median(values):.1f} s "
              f"(wall minus command)")


if __name__ == "__main__":
    main()

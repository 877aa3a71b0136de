"""Did every Galaxy job run through Slurm?  Galaxy's job records against Slurm's completion log.

    python check_slurm_jobs.py URL ADMIN_KEY JOBCOMP_LOG [--multi-core N] [--expect-error JOB_ID ...]

Standard library only (any python).  For every job of the Galaxy server (all users, admin view):

- Galaxy's record: the external id (the Slurm job id ``sbatch`` returned; Galaxy 26.1's API gives
  no ``job_runner_name`` for these jobs, it is checked when present) and, where the API shows the
  job's working folder in its command line (``.../jobs/000/<database id>/``: the uploads, not the
  tool jobs in 26.1), the database id;
- Slurm's record: the line of that job id in the job-completion log (``JobCompType=jobcomp/filetxt``),
  whose job name (``g<database id>_<tool>_<user>``, Galaxy's naming) must name the same job and
  tool, whose
  ``ProcCnt`` must be N for the multi-core tools (run, extract, merge, report) and 1 otherwise, and
  whose ``JobState`` must agree with Galaxy's state (``ok`` <-> ``COMPLETED``; ``error`` <-> any
  state, for the job script records the tool's exit code and the script itself may end well);
- Galaxy's ``galaxy_slots`` job metric (GALAXY_SLOTS the tool saw) must equal the cores Slurm gave.

The jobs named by ``--expect-error`` (encoded ids) must end in ``error`` (a failing job is seen as
failed through Slurm); every other job must end ``ok``.  Prints one line per job, then as the last line
``K of N jobs ran through Slurm``; exits 1 unless K == N and every check holds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

MULTI_CORE_TOOLS = ("ifu_extract_run", "ifu_extract_extract", "ifu_extract_merge",
                    "ifu_extract_report")


def get(url: str, key: str, path: str):
    req = urllib.request.Request(url.rstrip("/") + path, headers={"x-api-key": key})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def read_jobcomp(path: Path) -> dict[str, dict[str, str]]:
    """Slurm job id -> fields of its completion record (``Key=Value`` pairs of one line)."""
    records = {}
    for line in path.read_text().splitlines():
        fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def short_tool(tool_id: str) -> str:
    """``toolshed/.../ifu_extract_run/0.1`` or ``ifu_extract_run`` -> ``ifu_extract_run``."""
    return tool_id.rsplit("/", 2)[-2] if "/" in tool_id else tool_id


def check(url: str, key: str, jobcomp: Path, multi_core: int, expect_error: set[str]) -> int:
    slurm = read_jobcomp(jobcomp)
    jobs = get(url, key, "/api/jobs?limit=10000&order_by=create_time")
    through, problems = 0, 0
    print(f"{'tool':28s} {'galaxy':7s} {'job id':>6s} {'slurm id':>8s} {'slurm state':12s} "
          f"{'cores':>5s} {'slots':>5s}")
    for summary in jobs:
        job = get(url, key, f"/api/jobs/{summary['id']}?full=true")
        tool = short_tool(job["tool_id"])
        runner = job.get("job_runner_name") or ""
        ext = str(job.get("external_id") or "")
        rec = slurm.get(ext)
        metrics = {m["name"]: m.get("raw_value") for m in get(url, key, f"/api/jobs/{summary['id']}/metrics")}
        slots = metrics.get("galaxy_slots")
        want_state = "error" if summary["id"] in expect_error else "ok"
        db_id = re.search(r"/jobs/\d+/(\d+)(?:/|\b)", job.get("command_line") or "")
        why = []
        if runner and runner.split(":")[0] != "slurm":
            why.append(f"runner {runner!r}, not the Slurm CLI runner")
        if rec is None:
            why.append(f"external id {ext!r} not in the Slurm completion log")
        else:
            name = rec.get("Name", "")
            if not re.match(rf"g\d+_{re.escape(tool)}(_|$)", name):
                why.append(f"Slurm job {ext} is named {name!r}, not a job of {tool}")
            elif db_id and not name.startswith(f"g{db_id.group(1)}_"):
                why.append(f"Slurm job {ext} is named {name!r}, not Galaxy job {db_id.group(1)}")
            cores = 1 if tool not in MULTI_CORE_TOOLS else multi_core
            if rec.get("ProcCnt") != str(cores):
                why.append(f"Slurm gave {rec.get('ProcCnt')} cores, the configuration asks {cores}")
            if slots is not None and str(int(float(slots))) != rec.get("ProcCnt"):
                why.append(f"GALAXY_SLOTS {slots} but Slurm gave {rec.get('ProcCnt')} cores")
            if job["state"] == "ok" and rec.get("JobState") != "COMPLETED":
                why.append(f"Galaxy ok but Slurm {rec.get('JobState')}")
        if job["state"] != want_state:
            why.append(f"state {job['state']}, expected {want_state}")
        ran = rec is not None and not any("named" in w or "runner" in w for w in why)
        through += ran
        problems += bool(why)
        state = rec.get("JobState", "-") if rec else "-"
        cores = rec.get("ProcCnt", "-") if rec else "-"
        shown_slots = "-" if slots is None else str(int(float(slots)))
        print(f"{tool:28s} {job['state']:7s} {db_id.group(1) if db_id else '-':>6s} {ext or '-':>8s} {state:12s} "
              f"{cores:>5s} {shown_slots:>5s}" + ("" if not why else "  <- " + "; ".join(why)))
    if not jobs:
        print("no jobs on this Galaxy")
        problems += 1
    for job_id in sorted(expect_error - {j["id"] for j in jobs}):
        print(f"no job {job_id}, which was expected to fail")
        problems += 1
    print(f"{through} of {len(jobs)} jobs ran through Slurm")
    return 0 if jobs and through == len(jobs) and not problems else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("jobcomp", type=Path)
    ap.add_argument("--multi-core", type=int, default=2,
                    help="cores of the multi-core tools in the job configuration")
    ap.add_argument("--expect-error", action="append", default=[], metavar="JOB_ID",
                    help="encoded id of a job that must fail")
    args = ap.parse_args(argv)
    return check(args.url, args.key, args.jobcomp, args.multi_core, set(args.expect_error))


if __name__ == "__main__":
    sys.exit(main())

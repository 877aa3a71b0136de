"""The single-tool jobs of the cluster test, through the Galaxy API (bioblend, the planemo venv).

    python run_cluster_jobs.py URL API_KEY --cube CUBE --catalogue CAT --out DIR [--timeout S]

1. ``ifu_extract_run`` on CUBE and CAT: the job configuration sends it to the container
   destination on Slurm (``slurm_container_ifu``); must end ``ok``.  Its Source files are
   downloaded to DIR/run/ (check_container_job's IFXIMAGE marker proves the image ran it).
2. ``ifu_extract_image`` on CUBE with a band outside its wavelengths: the tool must fail (exit 1,
   one-line error), and Galaxy must see the Slurm job as failed (``error``).

Writes DIR/jobs.json (ids, states, the failing job's stderr) and exits 1 if either job does not
end as expected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bioblend.galaxy import GalaxyInstance

TERMINAL = {"ok", "error", "failed", "deleted", "skipped"}


def wait_job(gi: GalaxyInstance, job_id: str, timeout: float) -> dict:
    deadline = time.time() + timeout
    while True:
        job = gi.jobs.show_job(job_id, full_details=True)
        if job["state"] in TERMINAL:
            return job
        if time.time() > deadline:
            raise SystemExit(f"run_cluster_jobs: job {job_id} still {job['state']} after {timeout} s")
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("--cube", required=True, type=Path)
    ap.add_argument("--catalogue", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args(argv)
    (args.out / "run").mkdir(parents=True, exist_ok=True)
    gi = GalaxyInstance(args.url, key=args.key)
    hid = gi.histories.create_history("ifu-extract cluster test: single jobs")["id"]

    up = {}
    for name, path, ftype in (("cube", args.cube, "fits"), ("catalogue", args.catalogue, "txt")):
        up[name] = gi.tools.upload_file(str(path), hid, file_type=ftype)["outputs"][0]["id"]
    for ds in up.values():
        gi.datasets.wait_for_dataset(ds, maxwait=args.timeout, check=False)

    run = gi.tools.run_tool(hid, "ifu_extract_run", {"cube": {"src": "hda", "id": up["cube"]},
                                                     "catalog": {"src": "hda", "id": up["catalogue"]}})
    # The forms refuse a FITS file without a 3-D image (validators), so the job that must fail
    # passes them and fails in the tool: a band outside the cube's wavelengths.
    bad = gi.tools.run_tool(hid, "ifu_extract_image", {"cube": {"src": "hda", "id": up["cube"]},
                                                       "band|kind": "range",
                                                       "band|wave_range": "1000 1100"})
    run_job = wait_job(gi, run["jobs"][0]["id"], args.timeout)
    bad_job = wait_job(gi, bad["jobs"][0]["id"], args.timeout)

    status = 0
    print(f"ifu_extract_run: {run_job['state']}")
    if run_job["state"] != "ok":
        print((run_job.get("stderr") or "")[-1500:])
        status = 1
    else:
        for name, ref in sorted(run_job["outputs"].items()):
            meta = gi.datasets.show_dataset(ref["id"])
            if meta.get("extension") == "fits":
                gi.datasets.download_dataset(ref["id"], file_path=str(args.out / "run" / f"{name}.fits"),
                                             use_default_filename=False)
    stderr = (bad_job.get("tool_stderr") or bad_job.get("stderr") or "").strip()
    print(f"ifu_extract_image on a band outside the cube: {bad_job['state']} (exit code "
          f"{bad_job.get('exit_code')}): "
          f"{stderr.splitlines()[-1] if stderr else 'no stderr'}")
    if bad_job["state"] != "error":
        status = 1
    (args.out / "jobs.json").write_text(json.dumps({
        "history_id": hid,
        "run": {"id": run_job["id"], "state": run_job["state"], "external_id": run_job.get("external_id")},
        "failing": {"id": bad_job["id"], "state": bad_job["state"], "exit_code": bad_job.get("exit_code"),
                    "external_id": bad_job.get("external_id"), "stderr": stderr[-2000:]},
    }, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Run the published workflow on a Galaxy through its API and download what it made (bioblend).

    python run_workflow.py URL API_KEY --cube CUBE --catalogue CAT --chunks N --out DIR
                           [--workflow GA] [--param NAME=VALUE ...] [--timeout S]

Runs with the planemo venv's interpreter (bioblend comes with planemo).  Uploads the cube and the
catalogue into a new history, imports the workflow (this .ga, every time),
invokes it, waits for every job, and writes to DIR:
    summary.tsv, sources/<element>.fits   the merged outputs
    report.html                           the QA report
    run.json                              ids, timings, and per step the number of jobs and of
                                          elements of the chunk collection
Exits 1 if the invocation or any job fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bioblend.galaxy import GalaxyInstance

HERE = Path(__file__).resolve().parent
DEFAULT_GA = HERE.parents[2] / "workflows" / "ifu-spectral-extraction" / "ifu-spectral-extraction.ga"


#: The workflow's input labels (what a person reads on the run form).
CUBE, CATALOGUE, PARTS = "Datacube", "Catalogue", "Number of parts"


def workflow_inputs(cube_id: str, catalogue_id: str, parts: int, params=()) -> dict:
    """Invocation inputs by label: the two datasets, the number of parts and ``LABEL=VALUE``
    strings of *params* (e.g. ``"Continuum degree=1"``)."""
    inputs = {CUBE: {"src": "hda", "id": cube_id}, CATALOGUE: {"src": "hda", "id": catalogue_id},
              PARTS: parts}
    for item in params:
        name, _, value = item.partition("=")
        inputs[name] = parse_value(value)
    return inputs


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("--cube", required=True)
    ap.add_argument("--catalogue", required=True)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workflow", default=str(DEFAULT_GA))
    ap.add_argument("--param", action="append", default=[], metavar="LABEL=VALUE")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "sources").mkdir(parents=True, exist_ok=True)
    gi = GalaxyInstance(args.url, key=args.key)
    t0 = time.time()

    history = gi.histories.create_history(f"ifu-extract workflow, {args.chunks} chunk(s)")
    hid = history["id"]
    cube = gi.tools.upload_file(args.cube, hid, file_type="fits")["outputs"][0]["id"]
    cat_type = "fits" if args.catalogue.endswith(".fits") else "txt"
    cat = gi.tools.upload_file(args.catalogue, hid, file_type=cat_type)["outputs"][0]["id"]
    for ds in (cube, cat):
        gi.datasets.wait_for_dataset(ds, maxwait=args.timeout)

    ga = json.loads(Path(args.workflow).read_text())
    wf_id = gi.workflows.import_workflow_dict(ga)["id"]  # always this .ga, never an older copy
    inputs = workflow_inputs(cube, cat, args.chunks, args.param)
    invocation = gi.workflows.invoke_workflow(wf_id, inputs=inputs, history_id=hid,
                                              inputs_by="name")
    inv_id = invocation["id"]
    gi.invocations.wait_for_invocation(inv_id, maxwait=args.timeout)
    # Every job of the invocation must end green.
    deadline = time.time() + args.timeout
    while True:
        jobs = gi.jobs.get_jobs(invocation_id=inv_id)
        states = {j["state"] for j in jobs}
        if states <= {"ok", "error", "failed", "deleted", "skipped"} and jobs:
            break
        if time.time() > deadline:
            print(f"run_workflow: jobs still {sorted(states)} after {args.timeout} s", file=sys.stderr)
            return 1
        time.sleep(3)
    bad = [j for j in jobs if j["state"] != "ok"]
    inv = gi.invocations.show_invocation(inv_id)
    if bad or inv["state"] not in ("scheduled", "completed"):
        for j in bad:
            info = gi.jobs.show_job(j["id"], full_details=True)
            print(f"run_workflow: job {j['tool_id']} {j['state']}: {(info.get('stderr') or '')[-500:]}",
                  file=sys.stderr)
        print(f"run_workflow: invocation {inv['state']}", file=sys.stderr)
        return 1

    jobs_per_step = {}
    for j in jobs:
        tool = j["tool_id"].rsplit("/", 2)[-2] if "/" in j["tool_id"] else j["tool_id"]
        jobs_per_step[tool] = jobs_per_step.get(tool, 0) + 1
    outs = inv["outputs"]
    coll_outs = inv["output_collections"]
    chunks = gi.dataset_collections.show_dataset_collection(coll_outs["catalogue_chunks"]["id"])
    gi.datasets.download_dataset(outs["summary"]["id"], file_path=str(out / "summary.tsv"),
                                 use_default_filename=False)
    gi.datasets.download_dataset(outs["qa_report"]["id"], file_path=str(out / "report.html"),
                                 use_default_filename=False)
    sources = gi.dataset_collections.show_dataset_collection(coll_outs["source_files"]["id"])
    for el in sources["elements"]:
        gi.datasets.download_dataset(el["object"]["id"],
                                     file_path=str(out / "sources" / f"{el['element_identifier']}.fits"),
                                     use_default_filename=False)
    run = {"history_id": hid, "invocation_id": inv_id, "workflow_id": wf_id,
           "seconds": round(time.time() - t0, 1), "chunks": args.chunks,
           "chunk_elements": [e["element_identifier"] for e in chunks["elements"]],
           "jobs_per_step": jobs_per_step, "n_sources": len(sources["elements"])}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(json.dumps(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())

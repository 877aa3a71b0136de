"""Prove that Galaxy ran the jobs of containerised tools inside the ifu-extract image (issue 6).

Reads planemo's JSON reports, takes every successful test job of the given tool, downloads its
FITS outputs from Galaxy and checks the primary header card ``IFXIMAGE``: the package writes it
only when the environment variable ``IFU_EXTRACT_IMAGE`` is set, and only the image sets that
(``containers/Dockerfile``).  The card must equal ``ifu-extract:<version>``, the wrappers'
``@TOOL_VERSION@``.  Run with the package's python (astropy):

    python check_container_job.py URL ADMIN_KEY IMAGE TOOL_ID REPORT.json...

Exit 0 when every such job carries the marker, 1 otherwise (one line per job either way).
"""

from __future__ import annotations

import io
import json
import sys
import urllib.request
from pathlib import Path

from astropy.io import fits


def fetch(url: str, key: str) -> bytes:
    req = urllib.request.Request(url, headers={"x-api-key": key})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def fits_outputs(base: str, key: str, job: dict) -> dict[str, bytes]:
    """Name -> bytes of the job's FITS datasets (collection elements are listed separately)."""
    found = {}
    for name, ref in sorted((job.get("outputs") or {}).items()):
        if ref.get("src") != "hda":
            continue
        meta = json.loads(fetch(f"{base}/api/datasets/{ref['id']}", key))
        if meta.get("extension") == "fits":
            found[name] = fetch(f"{base}/api/datasets/{ref['id']}/display?preview=false", key)
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: check_container_job.py URL ADMIN_KEY IMAGE TOOL_ID REPORT.json...",
              file=sys.stderr)
        return 2
    base, key, image, tool_id, *reports = argv
    base = base.rstrip("/")
    jobs = []
    for report in reports:
        for test in json.loads(Path(report).read_text()).get("tests", []):
            data = test.get("data", {})
            job = data.get("job") or {}
            if job.get("tool_id") == tool_id and data.get("status") == "success" \
                    and job.get("exit_code") == 0:
                jobs.append((test["id"], job))
    if not jobs:
        print(f"container check: no successful job of {tool_id} in {', '.join(reports)}")
        return 1
    bad = 0
    for test_id, job in jobs:
        outputs = fits_outputs(base, key, job)
        marks = {name: fits.getheader(io.BytesIO(raw)).get("IFXIMAGE")
                 for name, raw in outputs.items()}
        ok = bool(marks) and all(value == image for value in marks.values())
        bad += not ok
        shown = ", ".join(f"{name}: {value!r}" for name, value in marks.items()) or "no FITS output"
        print(f"container check: {test_id} (job {job.get('id')}, runner "
              f"{job.get('job_runner_name')}): IFXIMAGE {shown} -> "
              f"{'ran in ' + image if ok else 'NOT in ' + image}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

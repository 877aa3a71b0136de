"""The tool forms refuse the wrong kind of FITS dataset (issue 17): a segmentation map or a masks
file offered as the cube, a segmentation map as the masks, a cube as a segmentation map.

Every FITS product has Galaxy's datatype ``fits``, so the forms cannot tell them apart by type;
the wrappers' validators (``wrappers/macros.xml``) read the HDU list Galaxy's fits datatype
keeps as metadata.  This uploads three test files as a user and asks Galaxy to build the forms
with each in each role (``/api/tools/<id>/build``, what the form does), then submits one wrong
job.  Run with planemo's python (bioblend):

    python check_validators.py URL ADMIN_KEY

Prints one line per check and ``N passed, N failed`` last; exit 1 when any check fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bioblend import ConnectionError as GalaxyError
from bioblend.galaxy import GalaxyInstance

sys.path.insert(0, str(Path(__file__).parent))
from galaxy_api import Galaxy  # noqa: E402

TEST_DATA = Path(__file__).resolve().parents[2] / "test-data"
# (tool, parameter, dataset, the start of the form's message or None when accepted)
CASES = [
    ("ifu_extract_info", "cube", "gx_minicube.fits", None),
    ("ifu_extract_info", "cube", "gx_segmap.fits", "Not a datacube"),
    ("ifu_extract_run", "cube", "gx_masks.fits", "Not a datacube"),
    ("ifu_extract_extract", "masks", "gx_masks.fits", None),
    ("ifu_extract_extract", "masks", "gx_segmap.fits", "Not a masks file"),
    ("ifu_extract_mask", "segmap", "gx_segmap.fits", None),
    ("ifu_extract_mask", "segmap", "gx_minicube.fits", "Not an image"),
]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_validators.py URL ADMIN_KEY", file=sys.stderr)
        return 2
    url, admin_key = argv[0].rstrip("/"), argv[1]
    gi = GalaxyInstance(url, key=Galaxy(url, admin_key).user_key("validators@example.org"))
    history = gi.histories.create_history("validators")["id"]
    ids = {}
    for name in sorted({case[2] for case in CASES}):
        out = gi.tools.upload_file(str(TEST_DATA / name), history, file_type="fits")
        ids[name] = out["outputs"][0]["id"]
    for dataset in ids.values():
        gi.datasets.wait_for_dataset(dataset, maxwait=600)
    passed = failed = 0
    for tool, param, name, expected in CASES:
        form = gi.make_post_request(f"{url}/api/tools/{tool}/build", payload={
            "history_id": history, "inputs": {param: {"values": [{"src": "hda", "id": ids[name]}]}}})
        errors = form.get("errors") or {}
        got = errors.get(param) if isinstance(errors, dict) else None
        ok = (got is None) if expected is None else (got is not None and expected in got)
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {tool} {param}={name}: {got or 'accepted'}")
    # A job submitted with the wrong dataset is refused, not run.
    try:
        gi.tools.run_tool(history, "ifu_extract_info", {"cube": {"src": "hda", "id": ids["gx_segmap.fits"]}})
        print("FAIL ifu_extract_info run with cube=gx_segmap.fits: accepted")
        failed += 1
    except GalaxyError:
        print("ok   ifu_extract_info run with cube=gx_segmap.fits: refused")
        passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

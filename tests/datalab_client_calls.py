"""The 15 calls of the unmodified NOIRLab Data Lab client, run by its own interpreter.

Usage: ``python datalab_client_calls.py PLAN.json OUT_DIR`` inside the namespaces of
tests/datalab_harness.py.  Imports nothing of ifu-extract: only ``dl.specClient`` as a user
would.  Each call's result is saved in OUT_DIR (``.npy``, ``.png`` as decoded pixels, text) and
its status in ``OUT_DIR/status.json``; the test compares them with the project's own client.
"""

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

plan = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
status = {}

from dl import specClient  # noqa: E402  (the import-time GET goes to the service)

specClient.set_svc_url(plan["url"])


def call(name, fn):
    try:
        fn()
        status[name] = "ok"
    except Exception as exc:  # a failed call is a result: the test reports it
        status[name] = f"{type(exc).__name__}: {exc}"[:400]
        traceback.print_exc()


def save(name, arr):
    np.save(out / f"{name}.npy", np.asarray(arr), allow_pickle=False)


def save_image(name, img):
    save(name, np.asarray(img.convert("RGB")))


cone, region = plan["cone"], plan["region"]
call("query_cone", lambda: save("query_cone", specClient.query(*cone)))
call("query_constraint", lambda: save("query_constraint", specClient.query(
    *cone, constraint=plan["constraint"])))
call("query_region", lambda: save("query_region", specClient.query(
    [tuple(v) for v in region])))
call("query_constraint_only", lambda: save("query_constraint_only", specClient.query(
    constraint=plan["constraint_only"])))
same = [int(i) for i in plan["ids_same_length"]]
mixed = [int(i) for i in plan["ids_mixed"]]
call("getSpec_single", lambda: save("getSpec_single", specClient.getSpec(np.int64(same[0]))))
call("getSpec_list", lambda: save("getSpec_list", specClient.getSpec(same)))
call("getSpec_align", lambda: save("getSpec_align", specClient.getSpec(mixed, align=True)))
call("getSpec_cutout", lambda: save("getSpec_cutout", specClient.getSpec(
    mixed, cutout=plan["cutout"])))


def pandas_call():
    frames = specClient.getSpec(mixed, fmt="pandas", align=True)
    for k, df in enumerate(frames):
        save(f"getSpec_pandas_{k}", df.to_records(index=False))
        (out / f"getSpec_pandas_{k}.columns").write_text(",".join(df.columns))


call("getSpec_pandas", pandas_call)
call("preview", lambda: save_image("preview", specClient.preview(np.int64(same[0]))))
call("plotGrid", lambda: save_image("plotGrid", specClient.plotGrid(mixed, 2, 2)))
call("stackedImage", lambda: save_image("stackedImage", specClient.stackedImage(mixed)))
call("catalogs", lambda: (out / "catalogs.txt").write_text(specClient.catalogs()))


def set_context_call():
    assert specClient.set_context(plan["context"]) == "OK"
    save("set_context_query", specClient.query(constraint="z > 0"))
    specClient.set_context("default")


call("set_context", set_context_call)


def list_contexts_call():
    (out / "list_contexts.txt").write_text(specClient.list_contexts())
    one = specClient.list_contexts(plan["context"])
    (out / "list_contexts_one.json").write_text(json.dumps(one))


call("list_contexts", list_contexts_call)
# beyond the 15: getSpec(fmt='fits'), list_profiles, and isAlive of the client object (the module-level isAlive
# passes a timeout its method does not take: a client bug, whatever the service)
call("getSpec_fits", lambda: (out / "getSpec_fits.fits").write_bytes(
    specClient.getSpec(np.int64(same[0]), fmt="fits")))
call("list_profiles", lambda: (out / "list_profiles.txt").write_text(
    str(specClient.list_profiles())))
call("isAlive", lambda: (out / "isAlive.txt").write_text(
    str(specClient.client.isAlive(plan["url"]))))

# Logged in (dl.conf + id_token.<user> in HOME): getSpec sends the token of the file
home = Path(os.environ["HOME"]) / ".datalab"


def login(token):
    home.mkdir(exist_ok=True)
    (home / "dl.conf").write_text("[login]\nstatus = loggedin\nuser = ifxtest\nauthtoken = \n")
    (home / "id_token.ifxtest").write_text(token)


def logged_in_call():
    login(plan["token"])
    save("logged_in_getSpec", specClient.getSpec(same, align=True))


call("logged_in", logged_in_call)


def wrong_token_call():
    login("ifxtest.1000.1000.$1$wrong")
    specClient.getSpec(same, align=True)  # a refused request cannot be decoded as .npy


call("wrong_token", wrong_token_call)
(out / "status.json").write_text(json.dumps(status, indent=1))

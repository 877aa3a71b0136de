"""Refresh the tool states of a workflow .ga against the wrappers a running Galaxy has loaded.

    python refresh_ga.py URL USER_API_KEY WORKFLOW.ga

For every tool step, Galaxy's workflow editor API (``/api/workflows/build_module``) rebuilds the
full tool state from the step's current values (sent as the
editor's form values): values the .ga sets are kept, parameters a wrapper
has gained get their defaults.  Connected inputs are written as ConnectedValue, unconnected
optional datasets as null, so the .ga runs without "step has upgrade messages".  Run it after a
wrapper gains or renames a parameter (standard library only).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request


def call(url: str, key: str, path: str, payload: dict) -> dict:
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(payload).encode(), method="POST",
                                 headers={"x-api-key": key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def plain(state):
    """RuntimeValue markers of unconnected inputs become null (optional datasets left empty)."""
    if isinstance(state, dict):
        if state.get("__class__") == "RuntimeValue":
            return None
        return {k: plain(v) for k, v in state.items()}
    if isinstance(state, list):
        return [plain(v) for v in state]
    return state


def flatten(state, prefix: str = "") -> dict:
    """The editor's form values: ``section|param`` keys, ``repeat_0|param`` for repeats."""
    flat = {}
    for key, value in state.items():
        if key.startswith("__"):
            continue
        name = prefix + key
        if isinstance(value, dict) and "__class__" in value:
            continue  # connected or runtime: comes from the connections
        if isinstance(value, dict):
            flat.update(flatten(value, name + "|"))
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}_{i}|"))
        elif value is not None:
            flat[name] = value
    return flat


def mark_connected(state: dict, key: str) -> None:
    node, parts = state, key.split("|")
    for part in parts[:-1]:
        repeat = re.fullmatch(r"(.+)_(\d+)", part)
        node = node[repeat.group(1)][int(repeat.group(2))] if part not in node and repeat else node[part]
    node[parts[-1]] = {"__class__": "ConnectedValue"}


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        raise SystemExit(__doc__)
    url, key, path = argv[1:]
    with open(path) as fh:
        workflow = json.load(fh)
    for step in workflow["steps"].values():
        if step["type"] != "tool":
            continue
        current = json.loads(step["tool_state"])
        built = call(url, key, "/api/workflows/build_module",
                     {"type": "tool", "content_id": step["tool_id"], "tool_version": step["tool_version"],
                      "inputs": flatten(current)})
        if built.get("errors"):
            print(f"refresh_ga: step {step['label']}: {built['errors']}", file=sys.stderr)
        state = plain(built["tool_state"])
        for name in step["input_connections"]:
            mark_connected(state, name)
        state["__page__"] = None
        state["__rerun_remap_job_id__"] = None
        step["tool_state"] = json.dumps(state)
    with open(path, "w") as fh:
        json.dump(workflow, fh, indent=4)
        fh.write("\n")
    print(f"refreshed {path}")


if __name__ == "__main__":
    main(sys.argv)

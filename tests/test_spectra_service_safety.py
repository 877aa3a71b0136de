"""Service safety (issue 14, item 13): NaN/Infinity bodies, request memory and the default
answer cap, the stacked-image row cap, LIKE patterns, the access log, the missing extra."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from spectra_helpers import MUSE_CTX, ThreadedServer, free_port, shared_store

from ifu_extract.cli import main
from ifu_extract.spectra.backend import Limits
from ifu_extract.spectra.constraint import (MAX_LIKE_WILDCARDS, ConstraintError, like_matcher,
                                            parse)
from ifu_extract.spectra.service import TOKEN_HEADER, create_app

TOKEN = "safety-token-3c1d"
HEAD = {TOKEN_HEADER: TOKEN}
CLI = str(Path(sys.executable).with_name("ifu-extract"))


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(create_app(shared_store(), TOKEN)) as srv:  # default limits
        yield srv


@pytest.mark.parametrize("path, body", [
    ("/query", b'{"ra": NaN, "dec": 2.0, "size": 0.1}'),
    ("/query", b'{"region": [[150.0, 2.0], [Infinity, 2.0], [150.1, 2.1]]}'),
    ("/query", b'{"ra": -Infinity, "dec": 2.0, "size": 0.1}'),
    ("/getSpec", b'{"id_list": [NaN]}'),
    ("/stackedImage", b'{"id_list": ["' + MUSE_CTX.encode() + b':100:MUSE_TOT"], "yflip": NaN}'),
])
def test_nan_or_infinity_in_json_is_a_4xx_and_the_connection_lives(server, path, body):
    with httpx.Client(base_url=server.url, headers=HEAD, timeout=30) as h:
        r = h.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]  # strict JSON: parsing it proves nothing non-finite came back
        assert "is not JSON" in detail and "\n" not in detail
        # the keep-alive connection still serves the next request
        ok = h.post("/query", json={"ra": 150.0, "dec": 2.0, "size": 0.1})
        assert ok.status_code == 200 and ok.json()["ids"]


def test_validation_errors_never_echo_the_value(server):
    with httpx.Client(base_url=server.url, headers=HEAD, timeout=30) as h:
        r = h.post("/query", json={"ra": 1e300, "dec": 2.0, "size": 0.1, "fields": "x" * 2000})
        assert r.status_code == 422
        text = r.text
        assert "1e+300" not in text and "xxxx" not in text
        assert all(set(d) == {"loc", "msg", "type"} for d in r.json()["detail"])


def _server_process(*args):
    port = free_port()
    proc = subprocess.Popen([CLI, "spectra", "serve", "--store", str(shared_store()), "--port",
                             str(port), "--token", TOKEN, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(400):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def _memory_kb(pid):
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            vals[line.split(":")[0]] = int(line.split()[1])
    return vals


def test_request_memory_at_most_three_times_the_answer():
    """One getSpec of 30 000 ids with a cut-out (the issue's case, scaled): the server's peak
    resident memory grows by at most 3x the answer, in the JSON and the Data Lab (.npy) forms."""
    proc, url = _server_process()
    try:
        ids = [f"{MUSE_CTX}:{100 + i % 12}:MUSE_TOT" for i in range(30_000)]
        with httpx.Client(base_url=url, headers=HEAD, timeout=120) as h:
            for form in ("json", "npy"):
                def ask(n):
                    if form == "json":
                        return h.post("/getSpec", json={"id_list": ids[:n], "cutout": "4800-4900"})
                    return h.post("/getSpec", data={"id_list": str(ids[:n]), "align": "True",
                                                    "cutout": "4800-4900"})
                assert ask(50).status_code == 200  # warm-up: lazy imports, code paths
                before = _memory_kb(proc.pid)["VmRSS"]
                r = ask(len(ids))
                assert r.status_code == 200
                grown = (_memory_kb(proc.pid)["VmHWM"] - before) * 1024
                assert len(r.content) > 20e6
                assert grown <= 3 * len(r.content), (form, grown / len(r.content))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_default_answer_cap_is_256_mib_and_checked_before_reading(server):
    assert Limits().max_words * 4 == 256 * 1024 * 1024
    # 100 000 x 200 channels: 3 planes (229 MiB) pass as a batch, but a .npy answer adds its
    # float64 wavelength column (381 MiB in all): refused before anything is read
    ids = [f"{MUSE_CTX}:{100 + i % 12}:MUSE_TOT" for i in range(100_000)]
    with httpx.Client(base_url=server.url, headers=HEAD, timeout=60) as h:
        r = h.post("/getSpec", data={"id_list": str(ids), "align": "True"})
        assert r.status_code == 413 and "256 MiB" in r.json()["detail"]


def test_stacked_image_is_capped_in_rows(server):
    assert Limits().max_stack_rows == 4096
    ids = [f"{MUSE_CTX}:{100 + i % 12}:MUSE_TOT" for i in range(4097)]
    with httpx.Client(base_url=server.url, headers=HEAD, timeout=60) as h:
        r = h.post("/stackedImage", json={"id_list": ids})
        assert r.status_code == 413 and "4096 rows" in r.json()["detail"]
        r = h.post("/stackedImage", data={"id_list": str(ids)})
        assert r.status_code == 413
        r = h.post("/stackedImage", json={"id_list": ids[:4096], "fmt": "numpy"})
        assert r.status_code == 200


def _like_reference(pattern, text):
    # SQL LIKE by translation to a glob: '%' -> '*', '_' -> '?' (no other specials here)
    return fnmatch.fnmatchcase(text, pattern.replace("%", "*").replace("_", "?"))


def test_like_matcher_agrees_with_a_reference_on_random_patterns():
    rng = np.random.default_rng(7)
    alphabet = list("ab%_")
    texts = ["".join(rng.choice(list("abc"), size=rng.integers(0, 9))) for _ in range(300)]
    for _ in range(400):
        pat = "".join(rng.choice(alphabet, size=rng.integers(0, 8)))
        if len(re.findall("%+", pat)) + pat.count("_") > MAX_LIKE_WILDCARDS:
            continue
        m = like_matcher(pat)
        for t in texts:
            assert m(t) == _like_reference(pat, t), (pat, t)


def test_like_patterns_are_limited_in_wildcards():
    cols = {"tag": "str"}
    parse("tag LIKE '" + "%_" * (MAX_LIKE_WILDCARDS // 2) + "'", cols)  # at the limit
    with pytest.raises(ConstraintError, match="wildcards"):
        like_matcher("%_" * 40 + "x")
    with httpx.Client(timeout=30) as h, ThreadedServer(create_app(shared_store(), TOKEN)) as srv:
        r = h.post(srv.url + "/query", headers=HEAD,
                   json={"constraint": "specid LIKE '" + "%_" * 40 + "x'"})
        assert r.status_code == 400 and "wildcards" in r.json()["detail"]


def test_pathological_like_pattern_is_matched_by_one_compiled_pass():
    # '%_%_..%x' on a long text without 'x': a backtracking matcher explores C(n, k) splits;
    # the compiled pattern commits to each segment's leftmost match (atomic groups), so the
    # regex engine's work is linear: checked by its answer on texts where it must fail late.
    m = like_matcher("%_" * 11 + "%x")
    assert not m("a" * 20000)
    assert m("a" * 20000 + "x")
    assert not m("a" * 10)  # fewer characters than the pattern needs


def test_access_log_logs_every_request():
    proc, url = _server_process("--access-log")
    try:
        httpx.get(url + "/")
        httpx.get(url + "/contexts", headers=HEAD)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert '"GET / HTTP/1.1" 200' in err
    assert '"GET /contexts HTTP/1.1" 200' in err


def test_serve_without_the_service_extra_names_the_pip_command(monkeypatch, capsys):
    for name in ("uvicorn", "fastapi"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as when not installed
    with pytest.raises(SystemExit) as exc:
        main(["spectra", "serve", "--store", str(shared_store()), "--token", TOKEN])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "pip install 'ifu-extract[service]'" in err
    assert "ModuleNotFoundError" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1

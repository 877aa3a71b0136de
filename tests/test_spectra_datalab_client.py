"""The real NOIRLab Data Lab client (astro-datalab 2.24.0 from PyPI, unmodified, in its own venv)
against ``ifu-extract spectra serve`` on loopback, in namespaces where only loopback exists:
15 calls, each compared with the project's own client on the same store (same ids, same values,
same pixels)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datalab_harness import DATALAB_PORT, run_isolated, scratch_dir
from spectra_helpers import MUSE_CTX, shared_store

from ifu_extract.spectra.client import SpecClient
from ifu_extract.spectra.storefile import Store

TOKEN = "ifxtest.1000.1000.$1$7f3a9c1e5b2d4680aa11bb22"
CALLS = ["query_cone", "query_constraint", "query_region", "query_constraint_only",
         "getSpec_single", "getSpec_list", "getSpec_align", "getSpec_cutout", "getSpec_pandas",
         "preview", "plotGrid", "stackedImage", "catalogs", "set_context", "list_contexts"]
PLAN = {"url": f"http://127.0.0.1:{DATALAB_PORT}", "token": TOKEN,
        "cone": [150.05, 2.005, 0.04], "constraint": "z > 0.3 ORDER BY z DESC",
        "region": [[150.015, 1.99], [150.115, 1.99], [150.115, 2.02], [150.015, 2.02]],
        "constraint_only": "tag = 'MUSE_TOT' AND z > 0.2 ORDER BY z", "context": MUSE_CTX,
        "cutout": "4800-4900"}
SAME = [f"{MUSE_CTX}:{100 + i}:MUSE_TOT" for i in (1, 3, 5, 7)]   # 200 channels each
MIXED = [f"{MUSE_CTX}:101:MUSE_PSF", f"{MUSE_CTX}:500:MUSE_TOT",  # 200 and 100 channels
         f"{MUSE_CTX}:102:MUSE_TOT", f"{MUSE_CTX}:502:MUSE_TOT"]


@pytest.fixture(scope="module")
def run():
    # The client runs anonymously (a fresh HOME) under the default rate limit: its ~36 anonymous
    # requests fit in the first burst of 40, so no request can be refused with 429.
    store = shared_store()
    with Store(store) as s:
        nums = dict(zip(s.specids(s.alive_rows).tolist(), s.specnums(s.alive_rows).tolist()))
    plan = dict(PLAN, ids_same_length=[nums[i] for i in SAME], ids_mixed=[nums[i] for i in MIXED])
    work = scratch_dir()
    try:
        (work / "plan.json").write_text(json.dumps(plan))
        script = Path(__file__).with_name("datalab_client_calls.py")
        proc = run_isolated(script, [work / "plan.json", work / "out"], store=store,
                            token=TOKEN, workdir=work, serve_args=("--anonymous",
                                                                    "--access-log"))
        status_file = work / "out" / "status.json"
        assert status_file.is_file(), (proc.returncode, proc.stderr[-3000:],
                                       (work / "server.log").read_text()[-2000:])
        yield {"status": json.loads(status_file.read_text()), "out": work / "out",
               "nums": nums, "log": proc.stderr, "server_log": (work / "server.log").read_text()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def own():
    with SpecClient(shared_store()) as c:
        yield c


def _load(run, name):
    return np.load(run["out"] / f"{name}.npy", allow_pickle=False)


def _png_pixels(png: bytes):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _same_records(a, b):
    assert a.dtype.names == b.dtype.names and a.shape == b.shape
    for n in a.dtype.names:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def test_all_fifteen_calls_succeed(run):
    failed = {k: v for k, v in run["status"].items() if v != "ok" and k in CALLS}
    assert set(CALLS) <= set(run["status"]), run["log"][-3000:]
    assert not failed, (failed, run["log"][-4000:])


def test_query_gives_the_ids_of_the_own_client(run, own):
    nums = run["nums"]
    cases = {"query_cone": dict(ra=PLAN["cone"][0], dec=PLAN["cone"][1], size=PLAN["cone"][2]),
             "query_constraint": dict(ra=PLAN["cone"][0], dec=PLAN["cone"][1],
                                      size=PLAN["cone"][2], constraint=PLAN["constraint"]),
             "query_region": dict(region=PLAN["region"]),
             "query_constraint_only": dict(constraint=PLAN["constraint_only"]),
             "set_context_query": dict(constraint="z > 0", context=MUSE_CTX)}
    for name, kw in cases.items():
        got = _load(run, name)
        want = own.query(**kw)
        assert len(want) > 0, name
        assert got.dtype.kind == "i", name  # integer ids, as the client expects
        assert got.tolist() == [nums[i] for i in want.tolist()], name  # same ids, same order
    assert len(_load(run, "query_cone")) > len(_load(run, "query_constraint"))
    assert len(_load(run, "set_context_query")) < len(nums)  # the context narrowed it


def test_getspec_values_equal_the_own_client(run, own):
    single = _load(run, "getSpec_single")
    _same_records(single, own.getSpec(SAME[0]))
    assert single.ndim == 1 and len(single) == 200
    _same_records(_load(run, "getSpec_list"), own.getSpec(SAME, align=True))
    aligned = _load(run, "getSpec_align")
    _same_records(aligned, own.getSpec(MIXED, align=True))
    assert aligned.shape == (4, 200)
    assert (aligned["mask"][1, :40] != 0).all()  # the short spectrum is padded, flagged
    cut = _load(run, "getSpec_cutout")
    want = own.getSpec(MIXED, cutout=PLAN["cutout"])
    _same_records(cut, want)
    assert cut["wavelength"][0, 0] >= 4800 and cut["wavelength"][0, -1] <= 4900
    for k in range(4):
        rec = _load(run, f"getSpec_pandas_{k}")
        assert (run["out"] / f"getSpec_pandas_{k}.columns").read_text().split(",") == \
            list(want.dtype.names)
        for n in want.dtype.names:
            np.testing.assert_array_equal(rec[n], own.getSpec(MIXED, align=True)[k][n])
    _same_records(_load(run, "logged_in_getSpec"), own.getSpec(SAME, align=True))


def test_images_equal_the_own_client(run, own):
    np.testing.assert_array_equal(_load(run, "preview"), _png_pixels(own.preview(SAME[0])))
    np.testing.assert_array_equal(_load(run, "plotGrid"), _png_pixels(own.plotGrid(MIXED, 2, 2)))
    stacked = _load(run, "stackedImage")
    np.testing.assert_array_equal(stacked, _png_pixels(own.stackedImage(MIXED)))
    assert stacked.shape[:2] == (4, 200)


def test_metadata_calls(run, own):
    text = (run["out"] / "catalogs.txt").read_text()
    assert "specnum (num)" in text and f"{MUSE_CTX}: spectra" in text
    listing = (run["out"] / "list_contexts.txt").read_text()
    names = [c["name"] for c in own.list_contexts(fmt="json")]
    assert len(names) == 2 and all(name in listing for name in names)
    one = json.loads((run["out"] / "list_contexts_one.json").read_text())
    assert one["id_main"] == "specnum" and one["catalog"] == "spectra"
    assert one["name"] == MUSE_CTX


def test_getspec_fits(run, own):
    from astropy.io import fits

    with fits.open(run["out"] / "getSpec_fits.fits") as got:
        want = own.getSpec(SAME[0], fmt="fits")
        assert got[0].header["SPECID"] == SAME[0] == want[0].header["SPECID"]
        for col in ("WAVELENGTH", "FLUX", "IVAR", "MASK"):
            np.testing.assert_array_equal(got["SPECTRUM"].data[col], want["SPECTRUM"].data[col])


def test_profiles_and_alive(run):
    assert (run["out"] / "list_profiles.txt").read_text().strip() == "default"
    assert (run["out"] / "isAlive.txt").read_text() == "True"


def test_tokens(run):
    # the logged-in client sent the service token; a wrong one in id_token is refused
    assert run["status"]["logged_in"] == "ok"
    assert run["status"]["wrong_token"] != "ok"
    assert '"POST /listSpan HTTP/1.1" 401' in run["server_log"]

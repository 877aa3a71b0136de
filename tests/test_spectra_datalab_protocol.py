"""The Data Lab wire protocol on the service, request by request (fast; the real client's run is
tests/test_spectra_datalab_client.py): id_list parsing without eval, q3c conditions through the
safe parser, CSV answers, .npy answers, anonymous access and its rate limit."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from spectra_helpers import MUSE_CTX, SDSS_CTX, ThreadedServer, free_port, shared_store

from ifu_extract.errors import InputError
from ifu_extract.spectra import datalab
from ifu_extract.spectra.backend import Limits
from ifu_extract.spectra.client import SpecClient
from ifu_extract.spectra.constraint import ConstraintError, parse
from ifu_extract.spectra.service import TOKEN_HEADER, create_app
from ifu_extract.spectra.storefile import Store

TOKEN = "dl.1.1.$1$protocol"
ANON = {TOKEN_HEADER: datalab.ANON_TOKEN}


@pytest.fixture(scope="module")
def server():
    limits = Limits(max_ids=500, max_region=8)
    with ThreadedServer(create_app(shared_store(), TOKEN, limits, anonymous=True,
                                   anonymous_rate=0)) as srv:
        yield srv


@pytest.fixture(scope="module")
def nums():
    with Store(shared_store()) as s:
        return dict(zip(s.specids(s.alive_rows).tolist(), s.specnums(s.alive_rows).tolist()))


@pytest.fixture(scope="module")
def own():
    with SpecClient(shared_store()) as c:
        yield c


def test_id_list_parsing_takes_literals_only():
    assert datalab.parse_id_list("[1, 2, 3]", 10) == ([1, 2, 3], False)
    assert datalab.parse_id_list("['a:1:T', \"b:2:T\"]", 10) == (["a:1:T", "b:2:T"], False)
    assert datalab.parse_id_list("a:1:T", 10) == (["a:1:T"], True)
    assert datalab.parse_id_list("123", 10) == ([123], True)
    for bad in ("[__import__('os').system('true')]", "[1, [2]]", "[[[1]]]", "[True]", "[1.5]",
                "[", "[{'a': 1}]", "None", ""):
        with pytest.raises(InputError, match="id_list"):
            datalab.parse_id_list(bad, 10)
    with pytest.raises(InputError, match="limit of 3"):  # counted before parsing
        datalab.parse_id_list("[" + "1, " * 5000 + "1]", 3)


def test_q3c_conditions_parse_safely():
    cols = {"ra": "num", "dec": "num", "z": "num"}
    q = parse("q3c_radial_query(ra,dec,150.000000,2.000000,0.100000) AND z > 0.2", cols)
    assert q.where.args[0].value == (150.0, 2.0, 0.1)
    q = parse("q3c_poly_query(ra,dec,ARRAY[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])", cols)
    assert q.where.value == ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))
    q = parse("q3c_poly_query(ra,dec,ARRAY[[0. 0.]\n [1. 0.]\n [0. 1.]])", cols)  # numpy repr
    assert len(q.where.value) == 3
    for bad in ("q3c_radial_query(z,dec,1,2,3)", "q3c_radial_query(ra,dec,1,2)",
                "q3c_radial_query(ra,dec,1,95,1)", "q3c_poly_query(ra,dec,ARRAY[1,2,3,4])",
                "q3c_poly_query(ra,dec,ARRAY[1,2,3,4,5,(select 1)])",
                "q3c_poly_query(ra,dec,ARRAY[1,2,3,4,5,6]); DROP TABLE x",
                "q3c_radial_query(ra,dec,1,2,3) OR pg_sleep(1) = 1"):
        with pytest.raises(ConstraintError):
            parse(bad, cols)


def _get(server, path, params, headers=None):
    with httpx.Client(base_url=server.url, timeout=60) as h:
        return h.get(path, params=params, headers=headers or ANON)


def _post_form(server, path, data, headers=None):
    with httpx.Client(base_url=server.url, timeout=60) as h:
        return h.post(path, data=data, headers=headers or ANON)


def test_query_answers_csv_like_the_own_client(server, own, nums):
    r = _get(server, "/query", {"id": "", "fields": "specnum", "catalog": "spectra",
                                "cond": "q3c_radial_query(ra,dec,150.050000,2.005000,0.040000)"
                                        " AND z > 0.3 ORDER BY z", "context": "default",
                                "profile": "default"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.split("\n")
    assert lines[0] == "specnum" and lines[-1] == ""
    want = own.query(150.05, 2.005, 0.04, constraint="z > 0.3 ORDER BY z")
    assert [int(x) for x in lines[1:-1]] == [nums[i] for i in want.tolist()] and len(want)
    # several fields, a context, one id (as the client's plot() asks for z)
    r = _get(server, "/query", {"fields": "specid,z,ra", "cond": "", "context": SDSS_CTX})
    rows = r.text.strip().split("\n")
    assert rows[0] == "specid,z,ra" and len(rows) == 1 + len(own.query(context=SDSS_CTX))
    sid = f"{MUSE_CTX}:101:MUSE_TOT"
    r = _get(server, "/query", {"id": str(nums[sid]), "fields": "z", "cond": ""})
    assert float(r.text.split("\n")[1:-1][0]) == pytest.approx(own.getSpec(
        sid, fmt="table").meta["z"])


@pytest.mark.parametrize("params, status", [
    ({"cond": "z > 0; DROP TABLE spectra"}, 400),
    ({"cond": "q3c_radial_query(ra,dec,1,2,3) UNION SELECT 1"}, 400),
    ({"catalog": "pg_catalog.pg_user"}, 400),
    ({"fields": "password"}, 400),
    ({"cond": "q3c_poly_query(ra,dec,ARRAY[" + ",".join(["1,1"] * 9) + "])"}, 413),
])
def test_query_refusals(server, params, status):
    r = _get(server, "/query", params)
    assert r.status_code == status, r.text
    assert "\n" not in r.json()["detail"]


def test_getspec_npy_single_list_aligned(server, own, nums):
    ids = [f"{MUSE_CTX}:101:MUSE_TOT", f"{MUSE_CTX}:500:MUSE_TOT"]
    form = {"id_list": str([nums[i] for i in ids]), "values": "all", "format": "numpy",
            "align": "True", "cutout": "None", "w0": "0.0", "w1": "0.0", "context": "default"}
    span = _post_form(server, "/listSpan", form).json()
    assert span["w0"] == pytest.approx(4750.0) and span["w1"] > span["w0"]
    arr = np.load(io.BytesIO(_post_form(server, "/getSpec", form).content), allow_pickle=False)
    want = own.getSpec(ids, align=True)
    assert arr.shape == want.shape and arr.dtype == want.dtype
    for n in want.dtype.names:
        np.testing.assert_array_equal(arr[n], want[n])
    one = np.load(io.BytesIO(_post_form(server, "/getSpec", dict(
        form, id_list=str(nums[ids[1]]), align="False")).content), allow_pickle=False)
    assert one.ndim == 1 and len(one) == 100  # a bare id: one spectrum, its own range
    np.testing.assert_array_equal(one["flux"], own.getSpec(ids[1])["flux"])
    r = _post_form(server, "/getSpec", dict(form, id_list=str(ids), align="False"))
    assert r.status_code == 400 and "different lengths" in r.json()["detail"]
    r = _post_form(server, "/getSpec", dict(form, id_list="[12345]"))
    assert r.status_code == 404


def test_contexts_profiles_catalogs_answers(server):
    r = _get(server, "/contexts", {"context": "None", "format": "text"})
    assert "{" not in r.text and MUSE_CTX in r.text and SDSS_CTX in r.text
    d = _get(server, "/contexts", {"context": "default", "format": "text"}).json()
    assert d["id_main"] == "specnum" and d["catalog"] == "spectra"
    d = _get(server, "/contexts", {"context": MUSE_CTX, "format": "json"}).json()
    assert d["name"] == MUSE_CTX and d["id_main"] == "specnum"
    assert _get(server, "/profiles", {"profile": "None", "format": "text"}).text == "default\n"
    text = _get(server, "/catalogs", {"context": "default", "profile": "default",
                                      "format": "text"}).text
    assert "{" not in text and "specnum (num)" in text
    assert _get(server, "/validate", {"what": "context", "value": "default"}, {}).text == "OK"
    assert _get(server, "/validate", {"what": "context", "value": "nope"}, {}).text == "Invalid"


def test_anonymous_preview_when_allowed(server, own, nums):
    sid = f"{MUSE_CTX}:101:MUSE_TOT"
    r = _get(server, "/preview", {"id": str(nums[sid]), "context": "default"}, {})
    assert r.status_code == 200 and r.content == own.preview(sid)


def test_anonymous_access_is_opt_in_and_rate_limited(nums):
    sid = str(nums[f"{MUSE_CTX}:101:MUSE_TOT"])
    with ThreadedServer(create_app(shared_store(), TOKEN)) as closed:
        assert _get(closed, "/preview", {"id": sid}, {}).status_code == 401
        assert _get(closed, "/preview", {"id": sid}, ANON).status_code == 401
        assert _get(closed, "/preview", {"id": sid}, {TOKEN_HEADER: TOKEN}).status_code == 200
        assert _get(closed, "/validate", {"what": "context", "value": MUSE_CTX},
                    {}).status_code == 200
    with ThreadedServer(create_app(shared_store(), TOKEN, anonymous=True,
                                   anonymous_rate=0.5)) as srv:
        ask = {"what": "context", "value": MUSE_CTX}
        assert _get(srv, "/validate", ask, {}).status_code == 200  # the burst: 1 request
        r = _get(srv, "/validate", ask, {})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert _get(srv, "/preview", {"id": sid}, {TOKEN_HEADER: TOKEN}).status_code == 200
        assert _get(srv, "/preview", {"id": sid}, {TOKEN_HEADER: "x.1.1.$1$bad"}).status_code \
            == 401


@pytest.mark.parametrize("field, value", [("xscale", "nan"), ("width", "inf"),
                                          ("thickness", "-Infinity"), ("height", "1e400"),
                                          ("cmap", "no_such_map"), ("inverse", "maybe")])
def test_stacked_form_values_are_checked(server, nums, field, value):
    ids = str([nums[f"{MUSE_CTX}:101:MUSE_TOT"], nums[f"{MUSE_CTX}:102:MUSE_TOT"]])
    r = _post_form(server, "/stackedImage", {"id_list": ids, field: value})
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"] or "form" in r.json()["detail"]


def test_a_generated_service_token_has_data_labs_shape():
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("ifu-extract"))
    proc = subprocess.Popen([cli, "spectra", "serve", "--store", str(shared_store()), "--port",
                             str(free_port())], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert line.startswith("token: ")
    token = line.split(": ", 1)[1].strip()
    assert datalab.is_datalab_token(token) and token.startswith("spectra.0.0.$1$")
    assert not datalab.is_datalab_token("plain-secret")

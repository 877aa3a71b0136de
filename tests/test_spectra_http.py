"""The HTTP service: same results as the local store, token authentication, request limits,
injection attempts stopped before any catalogue access, OpenAPI schema."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from spectra_helpers import MUSE_CTX, SDSS_CTX, ThreadedServer, shared_collection, shared_store

from ifu_extract.errors import InputError
from ifu_extract.spectra import access
from ifu_extract.spectra.backend import Limits
from ifu_extract.spectra.client import AuthError, SpecClient
from ifu_extract.spectra.service import TOKEN_HEADER, create_app
from ifu_extract.spectra.storefile import UnknownIds

TOKEN = "test-token-7f3a"
LIMITS = Limits(max_ids=200, max_rows=1000, max_words=100_000, max_body=20_000, max_region=8)


@pytest.fixture(scope="module")
def server():
    with ThreadedServer(create_app(shared_store(), TOKEN, LIMITS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def local():
    with SpecClient(shared_store()) as c:
        yield c


@pytest.fixture(scope="module")
def remote(server):
    with SpecClient(url=server.url, token=TOKEN) as c:
        yield c


def _same(a, b):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype.names:
            for n in a.dtype.names:
                np.testing.assert_array_equal(a[n], b[n])
        else:
            np.testing.assert_array_equal(a, b)
    else:
        assert a == b


QUERIES = [
    dict(args=(150.05, 2.0, 0.05)),
    dict(args=(150.05, 2.0, 0.05), constraint="tag = 'MUSE_TOT' ORDER BY z DESC"),
    dict(args=([(149.99, 1.99), (150.2, 1.99), (150.2, 2.2), (149.99, 2.2)],)),
    dict(constraint="status = 'fallback'"),
    dict(constraint="z > 0.2 ORDER BY z LIMIT 7", context=MUSE_CTX),
    dict(context=SDSS_CTX),
]


@pytest.mark.parametrize("kw", QUERIES)
def test_query_same_ids_locally_and_over_http(local, remote, kw):
    args = kw.pop("args", ())
    a, b = local.query(*args, **kw), remote.query(*args, **kw)
    kw["args"] = args
    assert len(a) > 0
    _same(a, b)


def test_query_by_skycoord_and_fields_table(local, remote):
    pos = SkyCoord(150.05, 2.0, unit="deg")
    _same(local.query(pos, 0.05), remote.query(pos, 0.05))
    ta = local.query(constraint="tag = 'MUSE_TOT'", fields="specid,ra,dec,z,status,mag,nchan")
    tb = remote.query(constraint="tag = 'MUSE_TOT'", fields="specid,ra,dec,z,status,mag,nchan")
    assert ta.colnames == tb.colnames == ["specid", "ra", "dec", "z", "status", "mag", "nchan"]
    for c in ta.colnames:
        np.testing.assert_array_equal(ta[c], tb[c])
    assert set(ta["status"]) == {"ok", "fallback", ""}  # short sources have no summary row


GETSPEC = [
    dict(),
    dict(align=True),
    dict(cutout="4800-4900"),
    dict(cutout=(4800, 4900), values="flux,mask"),
    dict(fmt="arrays", align=True),
]


@pytest.mark.parametrize("kw", GETSPEC)
def test_getspec_identical_locally_and_over_http(local, remote, kw):
    ids = list(local.query(context=MUSE_CTX))
    a, b = local.getSpec(ids, **kw), remote.getSpec(ids, **kw)
    if isinstance(a, dict):
        for k in ("flux", "ivar", "mask", "wavelength"):
            np.testing.assert_array_equal(a[k], b[k])
        assert a["ids"] == b["ids"] == ids and a["columns"] == b["columns"]
    else:
        _same(a, b)


def test_getspec_all_formats_identical(local, remote):
    ids = list(local.query(constraint="id IN ('100', '101', '500')")) + \
        list(local.query(context=SDSS_CTX))[:2]
    for fmt in ("pandas", "table", "Spectrum", "fits"):
        a, b = local.getSpec(ids, fmt=fmt), remote.getSpec(ids, fmt=fmt)
        assert len(a) == len(b) == len(ids)
        for x, y in zip(a, b):
            if fmt == "pandas":
                assert x.equals(y)
            elif fmt == "table":
                assert x.colnames == y.colnames and x.meta == y.meta
                for c in x.colnames:
                    assert x[c].unit == y[c].unit
                    np.testing.assert_array_equal(x[c], y[c])
            elif fmt == "Spectrum":
                np.testing.assert_array_equal(x.flux, y.flux)
                assert x.flux.unit == y.flux.unit
                np.testing.assert_array_equal(x.uncertainty.array, y.uncertainty.array)
                np.testing.assert_array_equal(x.mask, y.mask)
            else:
                np.testing.assert_array_equal(x[1].data["FLUX"], y[1].data["FLUX"])
                assert x[0].header["SPECID"] == y[0].header["SPECID"]


def test_single_id_returns_a_single_spectrum(local, remote):
    sid = f"{MUSE_CTX}:103:MUSE_PSF"
    a, b = local.getSpec(sid), remote.getSpec(sid)
    assert isinstance(a, np.ndarray) and a.ndim == 1 and len(a) == 200
    _same(a, b)
    t = shared_collection().truth[sid]
    np.testing.assert_array_equal(a["flux"], t.flux)
    np.testing.assert_array_equal(a["wavelength"], t.wave)


def test_plots_identical_and_png(local, remote):
    ids = list(local.query(constraint="tag = 'MUSE_TOT' ORDER BY z"))
    for name, args in (("preview", (ids[0],)), ("plotGrid", (ids, 3, 2)),
                       ("stackedImage", (ids,))):
        a = getattr(local, name)(*args)
        b = getattr(remote, name)(*args)
        assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b
    _same(local.stackedImage(ids, fmt="numpy", yflip=True),
          remote.stackedImage(ids, fmt="numpy", yflip=True))
    assert local.plotGrid(ids, 2, 2, page=3) == remote.plotGrid(ids, 2, 2, page=3)
    with pytest.raises(InputError, match="page 9 does not exist"):
        remote.plotGrid(ids, 2, 2, page=9)


def test_contexts_catalogs_span_validate(local, remote):
    assert local.list_contexts() == remote.list_contexts()
    assert local.list_contexts(fmt="json") == remote.list_contexts(fmt="json")
    assert local.catalogs(fmt="json") == remote.catalogs(fmt="json")
    assert "status (str)" in remote.catalogs()
    ids = list(local.query())
    assert local.listSpan(ids) == remote.listSpan(ids)
    assert remote.set_context(MUSE_CTX) == "OK"
    assert set(remote.query(constraint="tag = 'COADD'")) == set()
    remote.set_context("default")
    with pytest.raises(InputError, match="unknown context"):
        remote.set_context("nope")
    assert remote.isAlive() and local.isAlive()
    assert remote.isAlive(svc_url="http://127.0.0.1:9") is False


def test_errors_the_same_way(local, remote):
    for c in (local, remote):
        with pytest.raises(UnknownIds, match="1 unknown"):
            c.getSpec([f"{MUSE_CTX}:100:MUSE_TOT", f"{MUSE_CTX}:999:MUSE_TOT"])
        with pytest.raises(InputError, match="not a spectrum id"):
            c.getSpec(["../../etc/passwd"])
        with pytest.raises(InputError, match="different wavelength grids"):
            c.getSpec([f"{MUSE_CTX}:100:MUSE_TOT", list(c.query(context=SDSS_CTX))[0]],
                      align=True)


def _raw(server, path, body=None, token=TOKEN, method="post"):
    headers = {} if token is None else {TOKEN_HEADER: token}
    with httpx.Client(base_url=server.url, timeout=30) as h:
        if method == "get":
            return h.get(path, headers=headers, params=body)
        return h.post(path, headers=headers, json=body)


PROTECTED = [("get", "/contexts", None), ("get", "/catalogs", None),
             ("post", "/query", {}), ("get", "/query", {"cond": "z > 0"}),
             ("get", "/preview", {"id": f"{MUSE_CTX}:100:MUSE_TOT"}),
             ("post", "/listSpan", {"id_list": [f"{MUSE_CTX}:100:MUSE_TOT"]}),
             ("post", "/getSpec", {"id_list": [f"{MUSE_CTX}:100:MUSE_TOT"]}),
             ("post", "/preview", {"id": f"{MUSE_CTX}:100:MUSE_TOT"}),
             ("post", "/gridPlot", {"id_list": [f"{MUSE_CTX}:100:MUSE_TOT"]}),
             ("post", "/stackedImage", {"id_list": [f"{MUSE_CTX}:100:MUSE_TOT"]})]


@pytest.mark.parametrize("method, path, body", PROTECTED)
def test_missing_or_wrong_token_is_401(server, method, path, body):
    for token in (None, "", "wrong", TOKEN + "x", TOKEN.upper()):
        r = _raw(server, path, body, token=token, method=method)
        assert r.status_code == 401, (path, token)
        assert "X-DL-AuthToken" in r.json()["detail"]
    assert _raw(server, path, body, method=method).status_code == 200


@pytest.mark.parametrize("path, params", [("/profiles", None), ("/available", None),
                                          ("/validate", {"what": "context", "value": MUSE_CTX})])
def test_open_endpoints_take_no_token_but_refuse_a_wrong_one(server, path, params):
    # the Data Lab client calls /validate without any token: these endpoints hold no data
    for token in (None, "", "anonymous.0.0.anon_access", TOKEN):
        assert _raw(server, path, params, token=token, method="get").status_code == 200
    for token in ("wrong", TOKEN + "x"):
        assert _raw(server, path, params, token=token, method="get").status_code == 401


def test_alive_available_and_openapi_need_no_token(server):
    r = _raw(server, "/", token=None, method="get")
    assert r.status_code == 200 and r.text.startswith("Hello World")
    r = _raw(server, "/available", token=None, method="get")
    assert r.json()["spectra"] == 45
    schema = _raw(server, "/openapi.json", token=None, method="get").json()
    assert schema["openapi"].startswith("3.")
    for path in ("/", "/contexts", "/catalogs", "/query", "/listSpan", "/getSpec", "/preview",
                 "/gridPlot", "/stackedImage", "/validate", "/available"):
        assert path in schema["paths"], path
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("name") == TOKEN_HEADER and s.get("in") == "header"
               for s in schemes.values())


def test_request_size_limits(server):
    big = {"id_list": [f"{MUSE_CTX}:{i}:MUSE_TOT" for i in range(2000)]}
    r = _raw(server, "/getSpec", big)
    assert r.status_code == 413 and "larger than 20000 bytes" in r.json()["detail"]
    # chunked upload without Content-Length is counted too
    with httpx.Client(base_url=server.url) as h:
        data = json.dumps(big).encode()
        r = h.post("/getSpec", headers={TOKEN_HEADER: TOKEN, "content-type": "application/json"},
                   content=iter([data[:10000], data[10000:]]))
    assert r.status_code == 413
    r = _raw(server, "/getSpec", {"id_list": [f"{MUSE_CTX}:{i}:A" for i in range(300)]})
    assert r.status_code == 422  # more ids than the limit (200)
    r = _raw(server, "/getSpec", {"id_list": []})
    assert r.status_code == 422
    ids = [f"{MUSE_CTX}:{100 + i}:{t}" for i in range(12) for t in ("MUSE_TOT", "MUSE_PSF")]
    r = _raw(server, "/getSpec", {"id_list": ids * 8, "align": True})
    assert r.status_code == 413 and "exceed the limit" in r.json()["detail"]
    r = _raw(server, "/query", {"region": [[150, 2]] * 9})
    assert r.status_code == 422
    r = _raw(server, "/query", {"constraint": "z > 0 " * 400})
    assert r.status_code == 422
    r = _raw(server, "/query", {"ra": 150, "dec": 2, "size": 200})
    assert r.status_code == 422
    r = _raw(server, "/query", {"constraint": "1 = 1", "extra": "field"})
    assert r.status_code == 422
    r = _raw(server, "/gridPlot", {"id_list": ids, "nx": 11, "ny": 2})
    assert r.status_code == 422


INJECTIONS = ["z > 0; DROP TABLE spectra", "z > 0 -- ", "z IN (SELECT z FROM spectra)",
              "read_csv('/etc/passwd') = 'a'", "load_extension('x') = 1", "1=1 /* */",
              "z > 0 UNION SELECT * FROM objects", "pg_sleep(10) = 1"]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_rejected_before_touching_the_catalogue(server, remote, monkeypatch, text):
    touched = []
    real = access.column_values
    monkeypatch.setattr(access, "column_values",
                        lambda *a, **k: touched.append(a[1]) or real(*a, **k))
    monkeypatch.setattr(server.server.config.app.state.backend.store, "sky_index",
                        lambda: touched.append("sky"))
    r = _raw(server, "/query", {"ra": 150, "dec": 2, "size": 1, "constraint": text})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith("constraint: ") and "\n" not in detail
    with pytest.raises(InputError, match="constraint"):
        remote.query(150, 2, 1, constraint=text)
    assert touched == []  # parsing failed before any row, index or column was read


def test_auth_error_in_client(server):
    with SpecClient(url=server.url, token="bad") as c:
        with pytest.raises(AuthError, match="refused"):
            c.query()
        assert c.isAlive()  # the alive probe needs no token

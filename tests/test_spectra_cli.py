"""``ifu-extract spectra ingest|query|get|plot|serve`` from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from astropy.io import fits

from spectra_helpers import MUSE_CTX, free_port, shared_collection, shared_store

from ifu_extract.cli import main

EXE = [sys.executable, "-c", "from ifu_extract.cli import main; main()"]


def run(args, capsys):
    """Run the CLI in-process like the console script; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_ingest_query_get_plot(tmp_path, capsys):
    coll = shared_collection()
    store = tmp_path / "s.ifxs"
    code, out, err = run(["spectra", "ingest", coll.folder, "--store", store,
                          "--commit-every", "4"], capsys)
    assert code == 0, err
    assert "22 file(s): 45 spectra added" in err
    code, out, err = run(["spectra", "ingest", *coll.sources[:2], "--store", store], capsys)
    assert code == 0 and "0 spectra added" in err and "6 already stored" in err

    code, out, err = run(["spectra", "query", "--store", store, "--ra", 150.05, "--dec", 2.0,
                          "--radius", 0.02, "--constraint", "tag = 'MUSE_TOT' ORDER BY z"],
                         capsys)
    assert code == 0
    ids = out.split()
    assert ids and all(i.endswith(":MUSE_TOT") for i in ids)

    listing = tmp_path / "ids.txt"
    code, out, err = run(["spectra", "query", "--store", store, "--region",
                          "149.99,1.99 150.2,1.99 150.2,2.2 149.99,2.2", "--constraint",
                          "status = 'fallback'", "-o", listing], capsys)
    assert code == 0 and len(listing.read_text().split()) == 9

    code, out, err = run(["spectra", "query", "--store", store, "--constraint", "nchan = 100",
                          "--fields", "specid,z,wmin"], capsys)
    lines = out.strip().splitlines()
    assert lines[0] == "specid\tz\twmin" and len(lines) == 5 and "\t4800.0" in lines[1]

    code, out, err = run(["spectra", "get", "--store", store, "--ids-file", listing,
                          "--cutout", "4800-4850", "-o", tmp_path / "fits"], capsys)
    assert code == 0
    files = sorted((tmp_path / "fits").glob("*.fits"))
    assert len(files) == 9
    with fits.open(files[0]) as h:
        assert len(h[1].data) == 41 and h[1].data["WAVELENGTH"][0] == 4800.0

    tsv = tmp_path / "spec.tsv"
    code, out, err = run(["spectra", "get", "--store", store, f"{MUSE_CTX}:100:MUSE_TOT",
                          "--format", "tsv", "--values", "flux", "-o", tsv], capsys)
    rows = tsv.read_text().splitlines()
    assert rows[0] == "specid\twavelength\tflux" and len(rows) == 201
    assert rows[1].startswith(f"{MUSE_CTX}:100:MUSE_TOT\t4750.0\t")

    code, out, err = run(["spectra", "get", "--store", store, f"{MUSE_CTX}:101:MUSE_TOT",
                          "--format", "numpy", "-o", tmp_path / "npy"], capsys)
    arr = np.load(tmp_path / "npy" / f"{MUSE_CTX}_101_MUSE_TOT.npy")
    np.testing.assert_array_equal(arr["flux"], coll.truth[f"{MUSE_CTX}:101:MUSE_TOT"].flux)

    for kind in ("preview", "grid", "stacked"):
        png = tmp_path / f"{kind}.png"
        code, out, err = run(["spectra", "plot", "--store", store, "--ids-file", listing,
                              "--kind", kind, "--nx", 3, "--ny", 3, "-o", png], capsys)
        assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_list_columns(capsys):
    code, out, err = run(["spectra", "query", "--store", shared_store(), "--list-columns"],
                         capsys)
    assert code == 0 and "mpdaf_air_linear_1p25: 40 spectra" in out and "status (str)" in out


@pytest.mark.parametrize("args, message", [
    (["query", "--constraint", "z > 0; DROP TABLE spectra"], "';' is not allowed"),
    (["query", "--constraint", "read_csv('x') = 1"], "function 'read_csv' is not allowed"),
    (["get", "nope:1:X", "-o", "OUT"], "unknown spectrum id"),
    (["get", "bad id", "-o", "OUT"], "is not a spectrum id"),
    (["get", f"{MUSE_CTX}:100:MUSE_TOT", "--cutout", "9000-9100", "-o", "OUT"],
     "has no channel"),
])
def test_user_errors_are_one_line_exit_1(args, message, capsys, tmp_path):
    args = [a if a != "OUT" else tmp_path / "out" for a in args]
    code, out, err = run(["spectra", args[0], "--store", shared_store(), *args[1:]], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ifu-extract: error:") and message in lines[0]


def test_usage_errors_exit_2(capsys, tmp_path):
    code, out, err = run(["spectra", "query", "--ra", 10, "--dec", 0, "--radius", 1], capsys)
    assert code == 2 and "exactly one of --store and --url" in err
    code, out, err = run(["spectra", "query", "--store", shared_store(), "--ra", 10], capsys)
    assert code == 2 and "--ra, --dec and --radius" in err
    code, out, err = run(["spectra", "query", "--store", shared_store(), "--dec", 91, "--ra", 1,
                          "--radius", 1], capsys)
    assert code == 2
    code, out, err = run(["spectra", "serve", "--store", shared_store(), "--port", 70000],
                         capsys)
    assert code == 2
    code, out, err = run(["spectra", "ingest", tmp_path, "--store", tmp_path / "x.ifxs",
                          "--context", "Bad Name"], capsys)
    assert code == 1 and "not a valid context name" in err


def test_help_describes_every_option(capsys):
    for verb in ("ingest", "query", "get", "plot", "serve"):
        code, out, err = run(["spectra", verb, "--help"], capsys)
        assert code == 0
        assert "--store" in out
    code, out, err = run(["spectra", "serve", "--help"], capsys)
    assert "--max-ids" in out and "X-DL-AuthToken" in out


def test_serve_subprocess_with_token_file(tmp_path):
    token = tmp_path / "token.txt"
    token.write_text("cli-token-1\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "IFU_EXTRACT_SPECTRA_TOKEN"}
    proc = subprocess.Popen([*EXE, "spectra", "serve", "--store", str(shared_store()),
                             "--port", str(port), "--token-file", str(token),
                             "--max-ids", "10"], stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        assert httpx.get(url + "/contexts").status_code == 401
        r = httpx.get(url + "/contexts", headers={"X-DL-AuthToken": "cli-token-1"})
        assert r.status_code == 200 and len(r.json()) == 2
        # the CLI client against the service, with the limits given to serve
        out = subprocess.run([*EXE, "spectra", "query", "--url", url, "--token-file",
                              str(token), "--constraint", "id = '105'"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and len(out.stdout.split()) == 3
        r = httpx.post(url + "/getSpec", headers={"X-DL-AuthToken": "cli-token-1"},
                       json={"id_list": [f"{MUSE_CTX}:100:MUSE_TOT"] * 11})
        assert r.status_code == 422
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_ingest_explicit_files_names_and_previous(tmp_path, capsys):
    """Galaxy's form: --source/--source-names/--summary files and a --previous store, no
    staging; the previous store is left unchanged and the new one holds both."""
    coll = shared_collection()
    first = tmp_path / "first.ifxs"
    names = tmp_path / "names.txt"
    names.write_text("my_object.fits\n")
    code, out, err = run(["spectra", "ingest", "--store", first, "--source", coll.sources[0],
                          "--source-names", names], capsys)
    assert code == 0, err
    before = first.read_bytes()
    store = tmp_path / "second.ifxs"
    store.write_bytes(b"")                       # Galaxy creates its outputs empty
    code, out, err = run(["spectra", "ingest", "--store", store, "--previous", first,
                          "--source", coll.sources[1], "--summary", coll.summary], capsys)
    assert code == 0, err
    assert "2 file(s)" in err and "summary rows" in err
    assert first.read_bytes() == before
    code, out, err = run(["spectra", "query", "--store", store, "--fields", "specid,source"],
                         capsys)
    rows = out.strip().splitlines()[1:]
    assert any(r.endswith("\tmy_object.fits") for r in rows)
    assert any(r.endswith("\t" + coll.sources[1].name) for r in rows)
    # One name per --source file, or a one-line error naming the option.
    names.write_text("a\nb\n")
    code, out, err = run(["spectra", "ingest", "--store", tmp_path / "x.ifxs", "--source",
                          coll.sources[0], "--source-names", names], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == ("ifu-extract: error: --source-names: 2 names for 1 "
                                            "files; give one name per file, in the same order")

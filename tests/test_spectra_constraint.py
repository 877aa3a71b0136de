"""The safe constraint dialect: what it accepts, how it evaluates, what it rejects."""

from __future__ import annotations

import numpy as np
import pytest

from spectra_helpers import MUSE_CTX, shared_store

from ifu_extract.spectra import access
from ifu_extract.spectra.constraint import ConstraintError, evaluate, order_rows, parse
from ifu_extract.spectra.storefile import Store

COLS = {"z": "num", "ra": "num", "tag": "str", "status": "str", "mag": "num", "id": "str"}
DATA = {
    "z": np.array([0.1, 0.5, np.nan, 1.2, 0.5]),
    "ra": np.array([10.0, 11.0, 12.0, 13.0, 14.0]),
    "tag": np.array(["MUSE_TOT", "MUSE_PSF", "MUSE_TOT", "MUSE_TOT", "COADD"]),
    "status": np.array(["ok", "fallback", "ok", "", "ok"]),
    "mag": np.array([20.0, 21.0, 22.0, 23.0, 24.0]),
    "id": np.array(["a1", "b22", "a3", "c4", "A5"]),
}


def rows(text):
    q = parse(text, COLS)
    mask = evaluate(q, DATA.__getitem__, 5)
    idx = np.flatnonzero(mask)
    return idx[order_rows(q, lambda c: DATA[c][idx], len(idx))].tolist()


@pytest.mark.parametrize("text, expect", [
    ("", [0, 1, 2, 3, 4]),
    ("z > 0.4", [1, 3, 4]),
    ("z >= 0.5 AND tag = 'MUSE_TOT'", [3]),
    ("z < 0.2 OR status = 'fallback'", [0, 1]),
    ("NOT z > 0.4", [0]),                       # NULL z matches neither z > 0.4 nor NOT
    ("z IS NULL", [2]),
    ("status IS NULL", [3]),                     # empty text is NULL
    ("z IS NOT NULL AND status IS NOT NULL", [0, 1, 4]),
    ("z BETWEEN 0.1 AND 0.5", [0, 1, 4]),
    ("z NOT BETWEEN 0.1 AND 0.5", [3]),
    ("tag IN ('COADD', 'MUSE_PSF')", [1, 4]),
    ("tag NOT IN ('MUSE_TOT')", [1, 4]),
    ("id LIKE 'a%'", [0, 2]),
    ("id ILIKE 'a%'", [0, 2, 4]),
    ("id LIKE '_2%'", [1]),
    ("id NOT LIKE '%2%'", [0, 2, 3, 4]),
    ("mag - 2 * z > 21.5", [4]),                 # row 2: NULL arithmetic is NULL
    ("abs(z - 0.5) < 0.01", [1, 4]),
    ("log10(mag) > 1.35", [3, 4]),
    ("lower(tag) = 'coadd'", [4]),
    ("length(id) = 3", [1]),
    ("(z > 1 OR z < 0.2) AND NOT (tag = 'COADD')", [0, 3]),
    ("-z < -1", [3]),
    ("TRUE", [0, 1, 2, 3, 4]),
    ("ORDER BY mag DESC", [4, 3, 2, 1, 0]),
    ("z > 0 ORDER BY z DESC, mag ASC LIMIT 3", [3, 1, 4]),
    ("ORDER BY z", [0, 1, 4, 3, 2]),             # NULLs last
    ("LIMIT 2", [0, 1]),
    ("tag = 'MUSE_TOT' ORDER BY status", [0, 2, 3]),  # stable, NULL status last
])
def test_dialect_evaluates_like_sql(text, expect):
    assert rows(text) == expect


INJECTIONS = [
    ("z > 0; DROP TABLE spectra", "';' is not allowed"),
    ("z > 0 -- comment", "comments are not allowed"),
    ("z > 0 /* x */", "comments are not allowed"),
    ("z > 0 # x", "comments are not allowed"),
    ("z IN (SELECT z FROM spectra)", "subqueries"),
    ("EXISTS (SELECT 1)", "subqueries"),
    ("z > 0 UNION SELECT password FROM users", "subqueries"),
    ("read_csv('/etc/passwd') = 'x'", "function 'read_csv' is not allowed"),
    ("pg_read_file('/etc/passwd') = 'x'", "function 'pg_read_file' is not allowed"),
    ("load_extension('evil') = 1", "function 'load_extension' is not allowed"),
    ("tag = readfile('/etc/shadow')", "function 'readfile' is not allowed"),
    ("z > 0 AND 1 = 1; ATTACH DATABASE 'x' AS y", "';' is not allowed"),
    ("z > 0 OR ''=''", None),  # legal and harmless: a tautology over the known columns
    ("\"z\" > 0", "quoted identifiers"),
    ("`z` > 0", "quoted identifiers"),
    ("password = 'x'", "unknown column 'password'"),
    ("spectra.z > 0", "character '.' is not allowed"),
    ("z > 0 ' OR 1=1", "unterminated text"),
    ("tag = 'x' OR tag = 'y''; DROP TABLE t; --'", None),  # quotes stay inside the literal
    ("DROP TABLE spectra", "SQL keyword DROP"),
    ("z > CAST('1' AS REAL)", "SQL keyword CAST"),
    ("PRAGMA table_info(spectra)", "SQL keyword PRAGMA"),
    ("z > 0 \x00", "NUL"),
    ("z > $1", "character '$' is not allowed"),
    ("tag = 1", "compares text with a number"),
    ("z = 'a'", "compares text with a number"),
    ("z > 0 AND", "expected"),
    ("(" * 60 + "z > 0" + ")" * 60, "nested too deeply"),
    ("z > " + "1+" * 300 + "1", "too long"),
    ("z > 0 ORDER BY password", "ORDER BY takes known column names"),
    ("z > 0 LIMIT -1", "LIMIT takes a whole number"),
    ("z" * 3000, "too long"),
]


@pytest.mark.parametrize("text, message", INJECTIONS)
def test_injection_attempts_are_rejected_with_a_clear_error(text, message):
    if message is None:
        q = parse(text, COLS)  # parsed as data: a literal, never a statement
        assert q.where is not None
        return
    with pytest.raises(ConstraintError, match=message.replace("(", r"\(").replace("$", r"\$")):
        parse(text, COLS)


def test_errors_are_one_line_and_name_the_fix():
    with pytest.raises(ConstraintError) as exc:
        parse("nosuch > 1", COLS)
    msg = exc.value.oneline()
    assert "\n" not in msg and msg.startswith("constraint: unknown column 'nosuch'")
    assert "use one of:" in msg and "status" in msg


def test_like_with_many_wildcards_on_long_values():
    # A pattern a backtracking matcher takes exponential time on (its speed is in bench/).
    from ifu_extract.spectra.constraint import _like

    values = np.array(["a" * 60 + "b"] * 2000 + ["a" * 60 + "c"])
    out = _like(values, "%a%a%a%a%a%a%a%a%c", icase=False)
    assert not out[:-1].any() and out[-1]


def test_constraints_over_a_store_use_catalogue_and_summary_columns():
    with Store(shared_store()) as s:
        r = access.query_rows(s, constraint="tag = 'MUSE_TOT' AND status = 'ok' AND mag < 20.45 "
                                            "AND context = '" + MUSE_CTX + "' ORDER BY mag DESC")
        assert access.column_values(s, "id", r).tolist() == ["104", "103", "101", "100"]
        r = access.query_rows(s, constraint="snr > 0 AND nchan = 100")
        assert sorted(set(access.column_values(s, "id", r))) == ["500", "501", "502", "503"]
        r = access.query_rows(s, constraint="source LIKE 'spec-%' AND wmin < 3900")
        assert len(r) == 5
        with pytest.raises(ConstraintError, match="unknown column"):
            access.query_rows(s, constraint="flux > 1")

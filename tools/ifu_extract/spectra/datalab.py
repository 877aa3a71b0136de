"""The NOIRLab Data Lab spectroscopic-service wire protocol, as ``dl.specClient`` speaks it.

The real client (astro-datalab 2.24.0, ``from dl import specClient``) sends:

=============================  ==========================================================
``GET  /``                     alive: the answer must start with "Hello World"
``GET  /profiles``             ``profile=&format=text|json``: text, or JSON with a ``{``
``GET  /contexts``             ``context=X&format=``: a JSON dict with ``id_main`` and
                               ``catalog`` for one context; a text listing for ``None``
``GET  /catalogs``             ``context=&profile=&format=text``: text (the client would
                               fail on JSON)
``GET  /validate``             ``what=context|profile&value=``: ``OK`` (no token sent)
``GET  /query``                ``id=&fields=&catalog=&cond=&context=&profile=``: CSV with a
                               header line; ``cond`` holds ``q3c_radial_query(ra,dec,..)`` or
                               ``q3c_poly_query(ra,dec,ARRAY[..])``, ``AND`` a constraint
``POST /listSpan``, ``/getSpec``  form: ``id_list`` (a Python-literal list, or one bare id),
                               ``values``, ``format``, ``align``, ``cutout``, ``w0``, ``w1``;
                               ``/listSpan`` answers JSON ``{"w0", "w1"}``, ``/getSpec`` a
                               ``.npy`` structured array (``np.load(allow_pickle=False)``)
``GET  /preview``              ``id=&context=&profile=``: PNG (no token sent)
``POST /plotGrid``             form: ``id_list``, ``ncols``: PNG
``POST /stackedImage``         form: ``id_list``, ``xscale``, ``yscale``, ``thickness``,
                               ``cmap``, ``inverse``, ``width``, ``height``: PNG
=============================  ==========================================================

This module turns those parameters into the backend's (ids, flags, constraints) and its
answers into the client's encodings; :mod:`.service` routes the requests.  Nothing received is
evaluated: ``id_list`` goes through :func:`ast.literal_eval` (literals only) after size checks,
``cond`` through the safe constraint parser of :mod:`.constraint`.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import re
from urllib.parse import parse_qs

import numpy as np

from ..errors import InputError

__all__ = ["ANON_TOKEN", "ID_MAIN", "CATALOG", "DEFAULT_CONTEXT", "parse_form", "parse_id_list",
           "flag", "optional", "is_datalab_token", "context_entry", "default_entry",
           "contexts_text", "catalogs_text", "csv_table", "npy_header"]

#: The token the client sends when nobody is logged in.
ANON_TOKEN = "anonymous.0.0.anon_access"
#: Column of the ids the client asks for by default (integer, like SDSS ``specobjid``).
ID_MAIN = "specnum"
#: The one catalogue of a store.
CATALOG = "spectra"
#: The client's default context name: all contexts of the store.
DEFAULT_CONTEXT = "default"
_NONE = ("", "None", "none", "null")


def parse_form(body: bytes, max_fields: int = 40) -> dict[str, str]:
    """Fields of a form-encoded body (``application/x-www-form-urlencoded``); last one wins."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qs(text, keep_blank_values=True, strict_parsing=False,
                         max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError("form", f"unreadable form body ({exc})",
                         "send application/x-www-form-urlencoded fields") from None
    return {k: v[-1] for k, v in pairs.items()}


def optional(value: str | None) -> str | None:
    """A form/query value, with the client's ``'None'`` and empty text as None."""
    if value is None:
        return None
    value = value.strip()
    return None if value in _NONE else value


def flag(value, default: bool = False) -> bool:
    """A boolean form value (``True``/``False``/``1``/``0``/``yes``/``no``)."""
    v = optional(value if value is None else str(value))
    if v is None:
        return default
    low = v.lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise InputError("form", f"{v[:20]!r} is not a boolean", "send True or False")


def parse_id_list(text: str | None, max_ids: int | None) -> tuple[list, bool]:
    """Ids from the client's ``id_list`` field, without evaluating code.

    The client sends ``str(list_of_ids)`` (``"[123, 456]"`` or ``"['ctx:1:T', ...]"``) for a
    list and ``str(one_id)`` (``"123"`` or ``ctx:1:T``) per spectrum when not aligning.

    Returns
    -------
    ids : list of int or str
    single : bool
        True when one bare id was sent (the answer is then one spectrum, not a list).

    Raises
    ------
    InputError
        Empty, too many ids (checked before parsing), nested or non-literal content.
    """
    text = (text or "").strip()
    if not text or text in _NONE:
        raise InputError("id_list", "no spectrum id given", "give ids as returned by query()")
    if text[0] not in "[(":
        return [_one_id(text)], True
    if max_ids is not None and text.count(",") + 1 > max_ids + 1:  # before any parsing
        raise InputError("id_list", f"more than the limit of {max_ids} ids",
                         "split the list into several requests")
    if max(text.count("["), text.count("(")) > 2:
        raise InputError("id_list", "nested lists or tuples are not spectrum ids",
                         "send a flat list of ids")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError("id_list", f"{text[:60]!r} is not a list of ids",
                         "send a Python list of integers or quoted ids") from None
    if not isinstance(value, (list, tuple)):
        value = [value]
    ids = [_one_id(v) for v in value]
    if not ids:
        raise InputError("id_list", "no spectrum id given", "give ids as returned by query()")
    if max_ids is not None and len(ids) > max_ids:
        raise InputError("id_list", f"{len(ids)} ids, more than the limit of {max_ids}",
                         "split the list into several requests")
    return ids, False


def _one_id(v):
    if isinstance(v, bool):
        raise InputError("id_list", f"{v!r} is not a spectrum id", "send integers or ids")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        v = v.strip()
        if v.lstrip("-").isdigit() and len(v) < 21:
            return int(v)
        return v
    raise InputError("id_list", f"{str(v)[:40]!r} is not a spectrum id",
                     "send integers (specnum) or 'context:ID:TAG' ids")


#: Data Lab's token shape (``dl.Util.parse_auth_token``): user.uid.gid.$1$<22+ chars>, or a
#: special ``..._access`` token.
_TOKEN_RE = re.compile(r"[^/\s]+\.\d+\.\d+\.(?:\$1\$\S{22,}|\S+_access)")


def is_datalab_token(token: str) -> bool:
    """True for a token of Data Lab's shape (``user.uid.gid.$1$secret``), which its client
    accepts from ``~/.datalab/id_token.<user>`` and as a ``token=`` argument."""
    return _TOKEN_RE.fullmatch(token) is not None


def _entry_extra(name: str) -> dict:
    return {"id_main": ID_MAIN, "catalog": CATALOG, "redshift": "z", "rest_frame": "false",
            "context": name}


def context_entry(desc: dict) -> dict:
    """A context descriptor with the keys the client reads (``id_main``, ``catalog``...)."""
    out = dict(desc)
    out.update(_entry_extra(desc["name"]))
    return out


def default_entry(descs: list[dict]) -> dict:
    """The client's ``default`` context: every context of the store."""
    out = {"name": DEFAULT_CONTEXT, "description": "all contexts of this store",
           "contexts": [d["name"] for d in descs],
           "n_spectra": int(sum(d.get("n_spectra", 0) for d in descs))}
    out.update(_entry_extra(DEFAULT_CONTEXT))
    return out


def contexts_text(descs: list[dict]) -> str:
    """The text listing of ``list_contexts()`` (no braces: the client keeps it as text)."""
    lines = [f"{DEFAULT_CONTEXT:>28s}  all contexts of this store"]
    for d in descs:
        lines.append(f"{d['name']:>28s}  {d.get('n_spectra', 0)} spectra, "
                     f"{d.get('wmin', float('nan')):.2f}-{d.get('wmax', float('nan')):.2f} "
                     f"Angstrom, {d.get('description', '')}")
    return "\n".join(lines) + "\n"


def catalogs_text(cats: dict) -> str:
    """The text listing of ``catalogs()`` (no braces)."""
    lines = []
    for name, c in cats.items():
        cols = ", ".join(f"{k} ({v})" for k, v in c["columns"].items())
        lines.append(f"{name}: {c['catalog']} ({c['n_rows']} rows): {cols}")
    return "\n".join(lines) + "\n"


def csv_table(table: dict[str, np.ndarray]) -> str:
    """Query columns as CSV: a header line, one line per row, empty fields for missing values,
    a final newline (the client's ``plot()`` reads line 1 of ``split('\\n')[1:-1]``)."""
    names = list(table)
    cols = []
    for n in names:
        arr = np.asarray(table[n])
        if arr.dtype.kind == "f":
            cols.append(["" if not math.isfinite(x) else repr(x) for x in arr.tolist()])
        else:
            cols.append([str(x) for x in arr.tolist()])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    w.writerows(zip(*cols))
    return buf.getvalue()


def npy_header(arr: np.ndarray) -> bytes:
    """The ``.npy`` (format 1.0/2.0) header of *arr*, to send before its raw bytes."""
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    d = npformat.header_data_from_array_1_0(arr)
    try:
        npformat.write_array_header_1_0(buf, d)
    except ValueError:  # a header longer than 64 KiB (never for our dtypes)
        npformat.write_array_header_2_0(buf, d)
    return buf.getvalue()

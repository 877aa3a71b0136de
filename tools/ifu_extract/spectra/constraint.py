"""Safe query constraints: a small SQL ``WHERE`` dialect parsed into an expression tree.

A constraint such as ``z > 0.5 AND tag = 'MUSE_TOT' AND status IN ('ok', 'fallback')
ORDER BY z DESC LIMIT 100`` is tokenised and parsed here into a tree whose leaves are *known*
catalogue columns and literals; the tree is evaluated with NumPy over the catalogue arrays.  No
text is ever pasted into a database query, and anything outside the dialect is rejected with
an error that names it: statement separators (``;``), comments (``--``, ``/* */``), SQL
statements and subqueries (``SELECT``, ``DROP``, ``UNION``...), functions other than a few pure
ones (``read_csv``, ``pg_read_file``, ``load_extension`` are refused), unknown columns, quoted
identifiers, and type mismatches.

Dialect
-------
``expr``       ``expr OR expr`` | ``expr AND expr`` | ``NOT expr`` | ``( expr )`` | predicate
``predicate``  ``value op value`` (``= == != <> < <= > >=``), ``value [NOT] BETWEEN a AND b``,
               ``value [NOT] IN (literal, ...)``, ``value [NOT] LIKE|ILIKE 'pattern'``
               (``%`` any run, ``_`` one character), ``value IS [NOT] NULL``
``position``   ``q3c_radial_query(ra, dec, ra0, dec0, radius)`` (a cone, degrees) and
               ``q3c_poly_query(ra, dec, ARRAY[ra1, dec1, ra2, dec2, ...])`` (a polygon; the
               vertices may also be written as pairs ``ARRAY[(ra1, dec1), ...]``), as the NOIRLab
               Data Lab client sends them; evaluated with the store's sky index
``value``      column, number, ``'text'`` (``''`` for a quote), ``+ - * /``, unary ``-``,
               ``abs sqrt log10 ln exp`` (numbers), ``lower upper length`` (text)
``LIKE``       at most :data:`MAX_LIKE_WILDCARDS` ``%``/``_`` wildcards; matched by one compiled
               pattern (leftmost segments, no backtracking between them)
``suffix``     ``ORDER BY column [ASC|DESC], ...`` and/or ``LIMIT n``

Missing values (NaN numbers, empty text) are SQL ``NULL``: three-valued logic, so a row whose
``z`` is missing matches neither ``z > 1`` nor ``NOT z > 1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["ConstraintError", "Query", "parse", "evaluate", "order_rows", "split_position",
           "MAX_LENGTH", "MAX_LIKE_WILDCARDS", "like_matcher"]

#: Longest constraint accepted (characters).
MAX_LENGTH = 2000
_MAX_TOKENS = 400
_MAX_DEPTH = 40
_MAX_IN = 1000
#: Most wildcards (``%`` runs and ``_``) in one LIKE pattern.
MAX_LIKE_WILDCARDS = 24
_MAX_VERTICES = 1000
_POSITION_FUNCS = ("q3c_radial_query", "q3c_poly_query")

_NUM_FUNCS = {"abs": np.abs, "sqrt": np.sqrt, "log10": np.log10, "ln": np.log, "exp": np.exp}
_STR_FUNCS = {"lower", "upper", "length"}
_KEYWORDS = {"AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "ILIKE", "IS", "NULL", "TRUE", "FALSE",
             "ORDER", "BY", "ASC", "DESC", "LIMIT"}
_FORBIDDEN = {"SELECT", "FROM", "WHERE", "UNION", "INTERSECT", "EXCEPT", "INSERT", "UPDATE",
              "DELETE", "DROP", "CREATE", "ALTER", "ATTACH", "DETACH", "PRAGMA", "EXEC",
              "EXECUTE", "INTO", "JOIN", "WITH", "GRANT", "REVOKE", "COPY", "CALL", "LOAD",
              "INSTALL", "SET", "TRUNCATE", "REPLACE", "VACUUM", "EXISTS", "CASE", "CAST",
              "OFFSET", "HAVING", "GROUP", "RETURNING", "BEGIN", "COMMIT", "ROLLBACK", "DECLARE"}


class ConstraintError(InputError):
    """A constraint outside the safe dialect; the message says what and where."""

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__("constraint", problem, fix or "write one WHERE expression over the "
                         "catalogue columns, e.g. \"z > 0.5 AND tag = 'MUSE_TOT'\"")


@dataclass(frozen=True)
class Node:
    """One node of the expression tree (``op`` names the operation)."""

    op: str
    args: tuple = ()
    value: object = None


@dataclass(frozen=True)
class Query:
    """A parsed constraint: filter tree, sort keys and row limit."""

    where: Node | None
    order: tuple = ()  # ((column, descending), ...)
    limit: int | None = None

    def nodes(self, op: str):
        """The nodes of the WHERE tree whose operation is *op*."""
        stack = [self.where]
        while stack:
            n = stack.pop()
            if isinstance(n, Node):
                if n.op == op:
                    yield n
                stack.extend(n.args)
            elif isinstance(n, tuple):
                stack.extend(n)

    def columns(self) -> set[str]:
        """Column names the query reads."""
        out = {c for c, _ in self.order}

        def walk(n):
            if n is None:
                return
            if n.op == "col":
                out.add(n.value)
            if n.op in ("cone", "poly"):
                out.update(("ra", "dec"))
            for a in n.args:
                if isinstance(a, Node):
                    walk(a)
                elif isinstance(a, tuple):
                    for b in a:
                        if isinstance(b, Node):
                            walk(b)
        walk(self.where)
        return out


# -- tokeniser ---------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|==|[=<>+\-*/(),])
""", re.VERBOSE)


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ARRAY_CHARS = frozenset("0123456789eE+-.,() \t\r\n")


def _array_literal(text: str, pos: int):
    """``ARRAY[...]`` at *pos*: (numbers, end position).  Brackets and parentheses may group the
    numbers (``[(ra, dec), ...]``, numpy's ``[[ra dec] ...]``); nothing but numbers is allowed."""
    i = pos + len("ARRAY")
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "[":
        raise ConstraintError(f"ARRAY needs '[' (at character {pos + 1})",
                              "write ARRAY[ra1, dec1, ra2, dec2, ...] in degrees")
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "[":
            depth += 1
            if depth > 3:
                break
        elif c == "]":
            depth -= 1
            if depth == 0:
                return tuple(float(x) for x in _NUMBER.findall(text, i, j)), j + 1
        elif c not in _ARRAY_CHARS:
            break
        j += 1
    raise ConstraintError(f"ARRAY[...] holds numbers only (at character {pos + 1})",
                          "write ARRAY[ra1, dec1, ra2, dec2, ...] in degrees")


def _tokenise(text: str):
    if "\x00" in text:
        raise ConstraintError("NUL characters are not allowed")
    tokens, pos = [], 0
    while pos < len(text):
        if text.startswith("--", pos) or text.startswith("/*", pos) or text.startswith("#", pos):
            raise ConstraintError(f"comments are not allowed (at character {pos + 1})",
                                  "remove the comment")
        if text[pos] == ";":
            raise ConstraintError(f"';' is not allowed (at character {pos + 1}): a constraint is "
                                  "one expression, not a list of statements")
        if text[pos] == '"' or text[pos] == "`" or text[pos] == "[":
            raise ConstraintError(f"quoted identifiers are not allowed (at character {pos + 1})",
                                  "name columns bare and quote text with single quotes")
        m = _TOKEN.match(text, pos)
        if m is not None and m.lastgroup == "name" and m.group().upper() == "ARRAY":
            nums, pos_end = _array_literal(text, pos)
            tokens.append(("array", nums, pos + 1))
            pos = pos_end
            continue
        if m is None:
            if text[pos] == "'":
                raise ConstraintError(f"unterminated text literal at character {pos + 1}")
            raise ConstraintError(f"character {text[pos]!r} is not allowed (at character "
                                  f"{pos + 1})")
        kind = m.lastgroup
        if kind != "ws":
            val = m.group()
            if kind == "name":
                up = val.upper()
                if up in _FORBIDDEN:
                    what = ("subqueries and SQL statements are not allowed"
                            if up in ("SELECT", "WITH", "EXISTS", "FROM", "UNION") else
                            f"SQL keyword {up} is not allowed")
                    raise ConstraintError(f"{what} (at character {pos + 1})")
                if up in _KEYWORDS:
                    kind, val = "kw", up
            elif kind == "str":
                val = val[1:-1].replace("''", "'")
            tokens.append((kind, val, pos + 1))
            if len(tokens) > _MAX_TOKENS:
                raise ConstraintError(f"too long ({_MAX_TOKENS} tokens at most)")
        pos = m.end()
    return tokens


# -- parser ------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, tokens, columns: dict[str, str]):
        self.t = tokens
        self.i = 0
        self.columns = columns
        self.depth = 0

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else ("end", None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, kind, val=None):
        k, v, _ = self.peek()
        if k == kind and (val is None or v == val):
            self.i += 1
            return True
        return False

    def expect(self, kind, val, what):
        if not self.accept(kind, val):
            self.fail(f"expected {what}")

    def fail(self, msg):
        k, v, p = self.peek()
        where = "at the end" if k == "end" else f"at {v!r} (character {p})"
        raise ConstraintError(f"{msg} {where}")

    def nest(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ConstraintError(f"nested too deeply ({_MAX_DEPTH} levels at most)")

    # boolean level
    def expr(self):
        self.nest()
        node = self.and_expr()
        while self.accept("kw", "OR"):
            node = Node("or", (node, self.and_expr()))
        self.depth -= 1
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.accept("kw", "AND"):
            node = Node("and", (node, self.not_expr()))
        return node

    def not_expr(self):
        if self.accept("kw", "NOT"):
            self.nest()
            node = Node("not", (self.not_expr(),))
            self.depth -= 1
            return node
        return self.predicate()

    def predicate(self):
        # a parenthesised boolean expression, or a value expression followed by a comparison
        if self.peek()[0:2] == ("op", "(") and self._paren_is_boolean():
            self.take()
            node = self.expr()
            self.expect("op", ")", "')'")
            return node
        if self.peek()[0] == "kw" and self.peek()[1] in ("TRUE", "FALSE"):
            return Node("bool", value=self.take()[1] == "TRUE")
        k, v, p = self.peek()
        if k == "name" and v.lower() in _POSITION_FUNCS and self.peek(1)[0:2] == ("op", "("):
            return self.position(v.lower(), p)
        left = self.value()
        negate = self.accept("kw", "NOT")
        k, v, _ = self.peek()
        if k == "op" and v in ("=", "==", "!=", "<>", "<", "<=", ">", ">=") and not negate:
            self.take()
            right = self.value()
            op = {"==": "=", "<>": "!="}.get(v, v)
            self._same_type(left, right, f"'{v}'")
            return Node("cmp", (left, right), op)
        if self.accept("kw", "BETWEEN"):
            lo = self.value()
            self.expect("kw", "AND", "AND in BETWEEN ... AND ...")
            hi = self.value()
            self._same_type(left, lo, "BETWEEN")
            self._same_type(left, hi, "BETWEEN")
            return Node("between", (left, lo, hi), negate)
        if self.accept("kw", "IN"):
            self.expect("op", "(", "'(' after IN")
            items = [self.literal()]
            while self.accept("op", ","):
                items.append(self.literal())
                if len(items) > _MAX_IN:
                    raise ConstraintError(f"IN lists hold {_MAX_IN} values at most")
            self.expect("op", ")", "')' closing the IN list")
            for it in items:
                self._same_type(left, it, "IN")
            return Node("in", (left, tuple(items)), negate)
        if k == "kw" and v in ("LIKE", "ILIKE"):
            self.take()
            pat = self.literal()
            if pat.op != "str" or self._type(left) != "str":
                raise ConstraintError("LIKE compares a text column with a quoted pattern")
            return Node("like", (left, pat), (negate, v == "ILIKE"))
        if not negate and self.accept("kw", "IS"):
            neg = self.accept("kw", "NOT")
            self.expect("kw", "NULL", "NULL after IS")
            return Node("isnull", (left,), neg)
        self.fail("expected a comparison (=, <, >, BETWEEN, IN, LIKE, IS NULL)")

    def _paren_is_boolean(self):
        # look ahead to the matching ')' for a boolean keyword or comparison at depth 1
        depth, j = 0, self.i
        while j < len(self.t):
            k, v, _ = self.t[j]
            if k == "op" and v == "(":
                depth += 1
            elif k == "op" and v == ")":
                depth -= 1
                if depth == 0:
                    return False
            elif depth == 1 and k == "name" and v.lower() in _POSITION_FUNCS:
                return True
            elif depth == 1 and (k == "kw" and v in ("AND", "OR", "NOT", "BETWEEN", "IN", "LIKE",
                                                      "ILIKE", "IS", "TRUE", "FALSE")
                                 or k == "op" and v in ("=", "==", "!=", "<>", "<", "<=", ">",
                                                        ">=")):
                return True
            j += 1
        return False

    def position(self, name, pos):
        """``q3c_radial_query(ra, dec, ra0, dec0, r)`` or ``q3c_poly_query(ra, dec, ARRAY[..])``."""
        self.take()
        self.expect("op", "(", f"'(' after {name}")
        for col in ("ra", "dec"):
            k, v, p = self.take()
            if k != "name" or v.lower() != col:
                self.i -= 1
                self.fail(f"{name} takes the columns ra, dec first")
            self.expect("op", ",", "','")
        if name == "q3c_radial_query":
            nums = [self._signed_number()]
            for _ in range(2):
                self.expect("op", ",", "',' between the cone's centre and radius")
                nums.append(self._signed_number())
            self.expect("op", ")", f"')' closing {name}(")
            ra0, dec0, r = nums
            if not (-90 <= dec0 <= 90 and 0 <= r <= 180 and -360 <= ra0 <= 720):
                raise ConstraintError(f"{name}: centre ({ra0:g}, {dec0:g}) or radius {r:g} is not "
                                      "valid (degrees)", "use Dec -90..90 and a radius 0..180")
            return Node("cone", value=(ra0, dec0, r))
        k, v, p = self.take()
        if k != "array":
            self.i -= 1
            self.fail(f"{name} takes ARRAY[ra1, dec1, ...] after ra, dec")
        if len(v) % 2 or not 6 <= len(v) <= 2 * _MAX_VERTICES:
            raise ConstraintError(f"{name}: {len(v)} numbers do not make 3-{_MAX_VERTICES} "
                                  "(ra, dec) vertices")
        self.expect("op", ")", f"')' closing {name}(")
        return Node("poly", value=tuple(zip(v[0::2], v[1::2])))

    def _signed_number(self) -> float:
        sign = -1.0 if self.accept("op", "-") else 1.0
        if sign > 0:
            self.accept("op", "+")
        k, v, _ = self.take()
        if k != "num":
            self.i -= 1
            self.fail("expected a number")
        return sign * float(v)

    # value level
    def value(self):
        self.nest()
        node = self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            node = self._arith(op, node, self.term())
        self.depth -= 1
        return node

    def term(self):
        node = self.factor()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            node = self._arith(op, node, self.factor())
        return node

    def _arith(self, op, a, b):
        if self._type(a) != "num" or self._type(b) != "num":
            raise ConstraintError(f"'{op}' needs numbers on both sides")
        return Node("arith", (a, b), op)

    def factor(self):
        k, v, p = self.peek()
        if k == "op" and v == "-":
            self.take()
            inner = self.factor()
            if self._type(inner) != "num":
                raise ConstraintError("unary '-' needs a number")
            return Node("neg", (inner,))
        if k == "op" and v == "+":
            self.take()
            return self.factor()
        if k == "op" and v == "(":
            self.take()
            node = self.value()
            self.expect("op", ")", "')'")
            return node
        if k in ("num", "str") or (k == "kw" and v == "NULL"):
            return self.literal()
        if k == "name":
            self.take()
            if self.peek()[0:2] == ("op", "("):
                return self.function(v, p)
            if self.peek()[0:2] == ("op", ".") :  # pragma: no cover - '.' is not a token
                self.fail("qualified names are not allowed")
            name = v.lower()
            if name not in self.columns:
                known = ", ".join(sorted(self.columns))
                raise ConstraintError(f"unknown column {v!r} (at character {p})",
                                      f"use one of: {known}")
            return Node("col", value=name)
        self.fail("expected a column, a number or a quoted text")

    def function(self, name, pos):
        low = name.lower()
        if low not in _NUM_FUNCS and low not in _STR_FUNCS:
            allowed = ", ".join(sorted(_NUM_FUNCS) + sorted(_STR_FUNCS))
            raise ConstraintError(f"function {name!r} is not allowed (at character {pos})",
                                  f"only these pure functions are: {allowed}")
        self.expect("op", "(", "'('")
        arg = self.value()
        self.expect("op", ")", f"')' closing {name}(")
        want = "num" if low in _NUM_FUNCS else "str"
        if self._type(arg) != want:
            raise ConstraintError(f"{low}() takes {'a number' if want == 'num' else 'text'}")
        return Node("func", (arg,), low)

    def literal(self):
        k, v, _ = self.take()
        if k == "num":
            return Node("num", value=float(v))
        if k == "str":
            return Node("str", value=v)
        if k == "kw" and v == "NULL":
            return Node("null")
        if k == "op" and v == "-" and self.peek()[0] == "num":
            return Node("num", value=-float(self.take()[1]))
        self.i -= 1
        self.fail("expected a number or a quoted text")

    # typing
    def _type(self, n: Node) -> str:
        if n.op == "col":
            return self.columns[n.value]
        if n.op in ("num", "arith", "neg"):
            return "num"
        if n.op == "str":
            return "str"
        if n.op == "func":
            return "num" if n.value in _NUM_FUNCS or n.value == "length" else "str"
        return "null"

    def _same_type(self, a, b, where):
        ta, tb = self._type(a), self._type(b)
        if "null" in (ta, tb):
            raise ConstraintError(f"NULL cannot be compared with {where}", "use IS [NOT] NULL")
        if ta != tb:
            raise ConstraintError(f"{where} compares text with a number",
                                  "quote text values with single quotes, leave numbers bare")

    # suffix
    def suffix(self):
        order, limit = [], None
        if self.accept("kw", "ORDER"):
            self.expect("kw", "BY", "BY after ORDER")
            while True:
                k, v, p = self.take()
                if k != "name" or v.lower() not in self.columns:
                    self.i -= 1
                    self.fail("ORDER BY takes known column names")
                desc = False
                if self.accept("kw", "DESC"):
                    desc = True
                else:
                    self.accept("kw", "ASC")
                order.append((v.lower(), desc))
                if not self.accept("op", ","):
                    break
        if self.accept("kw", "LIMIT"):
            k, v, _ = self.take()
            if k != "num" or not float(v).is_integer() or float(v) < 0:
                self.i -= 1
                self.fail("LIMIT takes a whole number")
            limit = int(float(v))
        return tuple(order), limit


def parse(text: str | None, columns: dict[str, str]) -> Query:
    """Parse a constraint into a :class:`Query`.

    Parameters
    ----------
    text : str or None
        The constraint; empty means no filter.
    columns : dict
        Known column names (lower case) -> ``'num'`` or ``'str'``.

    Raises
    ------
    ConstraintError
        For anything outside the dialect (see the module documentation).
    """
    if text is None or not str(text).strip():
        return Query(None)
    text = str(text)
    if len(text) > MAX_LENGTH:
        raise ConstraintError(f"too long ({len(text)} characters, {MAX_LENGTH} at most)")
    p = _Parser(_tokenise(text), columns)
    where = None
    if p.peek()[0:2] not in (("kw", "ORDER"), ("kw", "LIMIT")):
        where = p.expr()
    order, limit = p.suffix()
    if p.peek()[0] != "end":
        p.fail("unexpected text")
    return Query(where, order, limit)


# -- evaluation --------------------------------------------------------------------------------
def _value(n: Node, get):
    """(values, null mask) of a value node."""
    if n.op == "col":
        vals = get(n.value)
        if vals.dtype.kind in "US":
            return vals, vals == vals.dtype.type()
        vals = vals.astype(np.float64, copy=False)
        return vals, np.isnan(vals)
    if n.op == "num":
        return np.float64(n.value), np.bool_(False)
    if n.op == "str":
        return np.str_(n.value), np.bool_(n.value == "")
    if n.op == "neg":
        v, m = _value(n.args[0], get)
        return -v, m
    if n.op == "arith":
        (a, ma), (b, mb) = _value(n.args[0], get), _value(n.args[1], get)
        with np.errstate(all="ignore"):
            r = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[n.value](a, b)
        r = np.asarray(r, dtype=np.float64)
        return r, ma | mb | ~np.isfinite(r)
    if n.op == "func":
        v, m = _value(n.args[0], get)
        if n.value in _NUM_FUNCS:
            with np.errstate(all="ignore"):
                r = np.asarray(_NUM_FUNCS[n.value](v), dtype=np.float64)
            return r, m | ~np.isfinite(r)
        if n.value == "length":
            return np.char.str_len(np.asarray(v, dtype=str)).astype(np.float64), m
        return getattr(np.char, n.value)(np.asarray(v, dtype=str)), m
    raise ConstraintError(f"cannot evaluate {n.op}")  # pragma: no cover


def like_matcher(pattern: str, icase: bool = False):
    """A compiled SQL LIKE matcher: ``match(text) -> bool``.

    The pattern is split at its ``%`` runs into segments (``_`` is one character); the first
    segment must match at the start, the last at the end, and each middle one is searched
    leftmost after the previous, which is exact for LIKE.  One regular expression does this
    with atomic groups, so the engine never backtracks into an earlier segment: a pattern such
    as ``'%_%_%_%_%_%x'`` costs a few passes over the text, not a combinatorial search.

    Raises
    ------
    ConstraintError
        More than :data:`MAX_LIKE_WILDCARDS` wildcards.
    """
    n_wild = len(re.findall("%+", pattern)) + pattern.count("_")
    if n_wild > MAX_LIKE_WILDCARDS:
        raise ConstraintError(f"the LIKE pattern has {n_wild} wildcards, more than "
                              f"{MAX_LIKE_WILDCARDS}", "use fewer '%' and '_' in the pattern")
    segs = re.split("%+", pattern)

    def rx(seg):
        return "".join("." if c == "_" else re.escape(c) for c in seg)

    if len(segs) == 1:
        body = rx(segs[0]) + r"\Z"
    else:
        middle = "".join(f"(?>.*?{rx(seg)})" for seg in segs[1:-1] if seg)
        body = rx(segs[0]) + middle + (f".*{rx(segs[-1])}\\Z" if segs[-1] else "")
    compiled = re.compile(body, re.DOTALL | (re.IGNORECASE if icase else 0))
    return lambda text: compiled.match(text) is not None


def _like(values, pattern: str, icase: bool) -> np.ndarray:
    """SQL LIKE over an array of text: each distinct value matched once by the compiled
    pattern of :func:`like_matcher`."""
    match = like_matcher(pattern, icase)
    uniq, inv = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return np.fromiter((match(u) for u in uniq.tolist()), dtype=bool, count=len(uniq))[inv]


def split_position(query: Query):
    """(position node, rest of the query): the cone or polygon predicate that the whole WHERE
    requires (a term of its top-level AND chain), so that it can be answered by the sky index;
    ``(None, query)`` when there is none."""
    terms, stack = [], [query.where]
    while stack:
        n = stack.pop()
        if n is not None and n.op == "and":
            stack.extend(reversed(n.args))
        elif n is not None:
            terms.append(n)
    for k, t in enumerate(terms):
        if t.op in ("cone", "poly"):
            rest = terms[:k] + terms[k + 1:]
            where = None
            for r in rest:
                where = r if where is None else Node("and", (where, r))
            return t, Query(where, query.order, query.limit)
    return None, query


def _truth(n: Node, get, nrows: int, pos=None):
    """(true mask, false mask) of a boolean node; rows in neither are unknown (NULL)."""
    if n.op == "bool":
        t = np.full(nrows, bool(n.value))
        return t, ~t
    if n.op == "and":
        (t1, f1), (t2, f2) = (_truth(n.args[0], get, nrows, pos),
                              _truth(n.args[1], get, nrows, pos))
        return t1 & t2, f1 | f2
    if n.op == "or":
        (t1, f1), (t2, f2) = (_truth(n.args[0], get, nrows, pos),
                              _truth(n.args[1], get, nrows, pos))
        return t1 | t2, f1 & f2
    if n.op == "not":
        t, f = _truth(n.args[0], get, nrows, pos)
        return f, t
    if n.op in ("cone", "poly"):
        if pos is None:
            raise ConstraintError(f"{n.op} searches need the sky index")  # pragma: no cover
        t = np.asarray(pos(n), dtype=bool)
        return t, ~t
    if n.op == "cmp":
        (a, ma), (b, mb) = _value(n.args[0], get), _value(n.args[1], get)
        ops = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
               ">": np.greater, ">=": np.greater_equal}
        with np.errstate(invalid="ignore"):
            r = np.broadcast_to(ops[n.value](a, b), (nrows,))
        known = np.broadcast_to(~(ma | mb), (nrows,))
        return known & r, known & ~r
    if n.op == "between":
        (x, mx), (lo, ml), (hi, mh) = (_value(a, get) for a in n.args)
        with np.errstate(invalid="ignore"):
            r = np.broadcast_to((x >= lo) & (x <= hi), (nrows,))
        known = np.broadcast_to(~(mx | ml | mh), (nrows,))
        t, f = known & r, known & ~r
        return (f, t) if n.value else (t, f)
    if n.op == "in":
        x, mx = _value(n.args[0], get)
        vals = [a.value for a in n.args[1] if a.op != "null"]
        r = np.broadcast_to(np.isin(x, np.asarray(vals)), (nrows,))
        known = np.broadcast_to(~mx, (nrows,))
        t, f = known & r, known & ~r
        return (f, t) if n.value else (t, f)
    if n.op == "like":
        x, mx = _value(n.args[0], get)
        negate, icase = n.value
        r = np.broadcast_to(_like(np.broadcast_to(x, (nrows,)), n.args[1].value, icase), (nrows,))
        known = np.broadcast_to(~mx, (nrows,))
        t, f = known & r, known & ~r
        return (f, t) if negate else (t, f)
    if n.op == "isnull":
        _, m = _value(n.args[0], get)
        m = np.broadcast_to(m, (nrows,))
        return (~m, m) if n.value else (m.copy(), ~m)
    raise ConstraintError(f"a {n.op} is not a condition")  # pragma: no cover


def evaluate(query: Query, get, nrows: int, pos=None) -> np.ndarray:
    """Boolean mask of the rows that satisfy ``query.where``.

    Parameters
    ----------
    query : Query
    get : callable
        ``get(column) -> numpy.ndarray`` of the *nrows* candidate rows (numbers or text).
    nrows : int
    pos : callable, optional
        ``pos(node) -> bool array`` of the candidate rows inside a ``cone`` node (``value``
        ``(ra0, dec0, r)``) or a ``poly`` node (``value`` the vertices), degrees.
    """
    if query.where is None:
        return np.ones(nrows, dtype=bool)
    t, _ = _truth(query.where, get, nrows, pos)
    return np.array(t, dtype=bool)


def order_rows(query: Query, get, nrows: int) -> np.ndarray:
    """Permutation applying ``ORDER BY`` (stable, NULLs last) then ``LIMIT``."""
    idx = np.arange(nrows)
    if query.order:
        keys = []
        for col, desc in reversed(query.order):
            vals = get(col)
            if vals.dtype.kind in "US":
                null = vals == vals.dtype.type()
                _, rank = np.unique(vals, return_inverse=True)
                rank = rank.astype(np.float64)
            else:
                rank = vals.astype(np.float64)
                null = np.isnan(rank)
            rank = np.where(null, 0.0, -rank if desc else rank)
            keys.extend([rank, null])  # lexsort: last key is primary, so null goes after rank
        idx = np.lexsort(keys)
    if query.limit is not None:
        idx = idx[:query.limit]
    return idx

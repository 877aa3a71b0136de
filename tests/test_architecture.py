"""The shape of the package, checked from its source (issue 13's targets).

- no import cycle between the package's modules (deferred imports count: they only hide one);
- no library module over :data:`MAX_LINES` lines;
- the library never imports the test-cube synthesiser, click, the commands or the steps;
  the steps never import click or the commands;
- no private name imported from another module;
- library errors name parameters, not command-line flags;
- commands never open a cube or write a product themselves (the steps do);
- wrappers only map parameters: no Cheetah staging (``#import re``, ``re.sub``, ``cp``);
- the declared dependencies are exactly the imported distributions;
- importing any module of the package changes no environment variable.

Each ``PENDING_*`` set lists what is known not to meet a target yet, with the work that removes
it (issue 13).  The sets are compared exactly: a fixed entry fails the test until it is removed
from its set, so that they can only shrink.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tools" / "ifu_extract"
#: Longest library module, lines: one a reader can walk through in one sitting.
MAX_LINES = 900
#: Modules that are the command line, not the library.
FRONT = ("ifu_extract.cli", "ifu_extract.commands")
#: The steps: plain functions between the library and the commands (no click).
STEPS = "ifu_extract.steps"

#: Library modules over MAX_LINES, being split.
PENDING_SPLIT: set = set()
#: Import cycles being broken.
PENDING_CYCLES: set = set()
#: (importing module, private name) pairs still to make public or move.
PENDING_PRIVATE: set = set()
#: Commands that still open cubes or write products themselves (moving into steps/).
PENDING_COMMAND_IO: set = set()
#: Library modules that import click.
PENDING_LIBRARY_CLICK: set = set()
#: Library modules whose errors still name command-line flags (``InputError("--thresh", ...)``)
#: instead of parameters (``ParameterError("{thresh}", ..., params=("thresh",))``).
PENDING_FLAG_ERRORS: set = set()
#: Wrappers that still stage files in Cheetah (explicit file options replace it).
PENDING_STAGING: set = set()

#: Calls that open a cube or read/write a FITS product, by the name they are called through.
_PRODUCT_IO = {"open", "writeto", "getdata", "getheader", "open_cube", "open_fits", "write_hdulist",
               "write_fast_fits", "atomic_path", "write_source", "update_source"}
#: Cheetah staging: a Python import, a regex rename, a copy into a staged folder.
_STAGING = re.compile(r"^\s*#import\b|\bre\.sub\(|(^|&&|;)\s*cp\s", re.MULTILINE)


# ----------------------------------------------------------------------------- source model
@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _type_checking_nodes(module: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skip = set()
    for node in ast.walk(module):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _base(name: str, node: ast.ImportFrom) -> str:
    """Absolute module of ``from <...> import`` in module *name*."""
    if node.level == 0:
        return node.module or ""
    parts = name.split(".")
    if modules()[name].name != "__init__.py":
        parts = parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def imports(name: str) -> tuple[tuple[str, str | None], ...]:
    """``(absolute module, imported name or None)`` of every import of *name*, deferred ones too."""
    module = tree(name)
    skip = _type_checking_nodes(module)
    out = []
    for node in ast.walk(module):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full, None) if full in modules() else (base, alias.name))
    return tuple(out)


def internal_edges(name: str) -> set[str]:
    """Modules of the package that *name* imports."""
    found = set()
    for target, _ in imports(name):
        while target and target not in modules():
            target = target.rpartition(".")[0]
        if target and target != name and target != "ifu_extract":
            found.add(target)
    return found


def is_front(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FRONT)


def is_step(name: str) -> bool:
    return name == STEPS or name.startswith(STEPS + ".")


def library() -> list[str]:
    """Modules of the library: everything but the command line, the steps and the synthesiser."""
    return [m for m in modules() if not is_front(m) and not is_step(m) and m != "ifu_extract.synth"]


def cycles() -> set[frozenset]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: internal_edges(m) for m in modules()}
    index, low, stack, on, found = {}, {}, [], set(), set()

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.add(frozenset(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _exact(found: set, pending: set, what: str) -> None:
    new, fixed = found - pending, pending - found
    assert not new, f"{what}: {sorted(map(str, new))}"
    assert not fixed, f"fixed, remove from the PENDING set of this test: {sorted(map(str, fixed))}"


# ----------------------------------------------------------------------------- the targets
def test_no_import_cycle():
    _exact(cycles(), PENDING_CYCLES, "import cycles")


def test_library_modules_fit_in_one_sitting():
    sizes = {m: len(modules()[m].read_text(encoding="utf-8").splitlines()) for m in library()}
    _exact({m for m, n in sizes.items() if n > MAX_LINES}, PENDING_SPLIT,
           f"library modules over {MAX_LINES} lines")


def test_library_never_imports_synth_commands_or_steps():
    bad = {(m, t) for m in library() for t, _ in imports(m)
           if t == "ifu_extract.synth" or is_front(t) or is_step(t)}
    assert not bad, sorted(bad)


def test_library_never_imports_click():
    found = {m for m in library() for t, _ in imports(m) if t.split(".")[0] == "click"}
    _exact(found, PENDING_LIBRARY_CLICK, "library modules importing click")


def test_steps_never_import_click_or_commands():
    bad = {(m, t) for m in modules() if is_step(m) for t, _ in imports(m)
           if t.split(".")[0] == "click" or is_front(t)}
    assert not bad, sorted(bad)


def _same_subpackage(a: str, b: str) -> bool:
    """Modules of one subpackage (``ifu_extract.masks.io`` and ``ifu_extract.masks.build``) may
    share private helpers; the package's top-level modules may not."""
    pa, pb = a.rpartition(".")[0], b.rpartition(".")[0]
    return pa == pb and pa != "ifu_extract"


def test_no_private_name_imported_from_another_module():
    found = {(m, name) for m in modules() for target, name in imports(m)
             if name and name.startswith("_") and not name.startswith("__")
             and target.startswith("ifu_extract") and target != m and not _same_subpackage(m, target)}
    _exact(found, PENDING_PRIVATE, "private names imported across modules")


def test_library_errors_name_parameters():
    """Errors raised by the library name parameters; each verb shows them as its options."""
    found = set()
    for m in library():
        for node in ast.walk(tree(m)):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Error") and node.args
                    and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))):
                first = node.args[0]
                text = first.value if isinstance(first, ast.Constant) else ast.unparse(first)[2:]
                if isinstance(text, str) and text.startswith("--"):
                    found.add(m)
    _exact(found, PENDING_FLAG_ERRORS, "library errors naming command-line flags")


def test_commands_do_no_product_io():
    """Commands parse options, call one step and report: no cube opened, no product written."""
    found = set()
    for m in modules():
        if not m.startswith("ifu_extract.commands."):
            continue
        for node in ast.walk(tree(m)):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
                # Builtin open() of text files (run.toml, lists) is not product I/O.
                if called in _PRODUCT_IO and not (called == "open" and owner in ("", "Path")):
                    found.add(m)
    _exact(found, PENDING_COMMAND_IO, "commands doing product I/O")


def test_wrappers_do_not_stage_files():
    found = {p.name for p in (REPO / "wrappers").glob("*.xml") if _STAGING.search(p.read_text(encoding="utf-8"))}
    _exact(found, PENDING_STAGING, "wrappers staging files in Cheetah")


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_declared_dependencies_are_the_imported_ones():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_dist(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])
                for d in project["dependencies"] + project["optional-dependencies"]["service"]}
    to_dist = packages_distributions()
    imported = set()
    for m in modules():
        for target, _ in imports(m):
            top = target.split(".")[0]
            if top and top != "ifu_extract" and top not in sys.stdlib_module_names:
                assert top in to_dist, f"{m} imports {top}, which no installed distribution provides"
                imported.update(_dist(d) for d in to_dist[top])
    assert imported == declared, (f"imported, not declared: {sorted(imported - declared)}; "
                                  f"declared, not imported: {sorted(declared - imported)}")


def test_import_changes_no_environment():
    """Importing every module of the package leaves os.environ as it was (BLAS included)."""
    code = (
        "import importlib, json, os, sys\n"
        "before = dict(os.environ)\n"
        f"for name in {sorted(modules())!r}:\n"
        "    importlib.import_module(name)\n"
        "after = dict(os.environ)\n"
        "print(json.dumps(sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=REPO, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []

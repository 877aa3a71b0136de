"""Check that every option of every verb is a parameter of its Galaxy tool, with the same bounds
and choices, and that @TOOL_VERSION@ is the package version.

    check_options.py dump OUT.json        (with the package's python: the click options)
    check_options.py compare OUT.json     (with planemo's python: the wrappers, macros expanded)

An option a wrapper deliberately leaves out is listed in NOT_WRAPPED with the reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Options that are no parameter of the tool, and why.
NOT_WRAPPED = {
    "--output": "the output datasets (or folder) are Galaxy's",
    "--help": "",
    "--threads": "set from GALAXY_SLOTS",
    "--resume": "Galaxy datasets are immutable: a job never resumes a previous output folder",
    "--force": "as --resume (it only lets --resume go on with changed options)",
    "--url": "the HTTP spectra service is for use outside Galaxy (the tools read store datasets)",
    "--token": "as --url",
    "--token-file": "as --url",
    "--store": "",  # checked as the store input (data parameter named store)
}
#: verb -> options written as output datasets chosen by a boolean (name differs from the option).
VERBS_WITHOUT_WRAPPER = {"demo": "runs on the data shipped with mpdaf; the run tool does it on yours",
                         "spectra serve": "a long-running HTTP service, not a job"}


def dump(out: str) -> None:
    import click

    from ifu_extract.cli import COMMANDS, LazyGroup

    result = {}

    def add(path: str, cmd: click.Command) -> None:
        opts = {}
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            name = max(p.opts, key=len)
            info = {"multiple": p.multiple, "nargs": p.nargs, "flag": p.is_flag}
            t = p.type
            if isinstance(t, click.Choice):
                info["choices"] = list(t.choices)
            if isinstance(t, (click.IntRange, click.FloatRange)):
                info["min"], info["max"] = t.min, t.max
                info["min_open"], info["max_open"] = t.min_open, t.max_open
            opts[name] = info
        result[path] = opts

    for verb in COMMANDS:
        cmd = LazyGroup._load(verb)
        if cmd is None:
            continue
        if isinstance(cmd, click.Group):
            for sub, subcmd in cmd.commands.items():
                add(f"{verb} {sub}", subcmd)
        else:
            add(verb, cmd)
    Path(out).write_text(json.dumps(result, indent=1))


def _tool_file(path: str) -> Path:
    return REPO / "wrappers" / (path.replace(" ", "_") + ".xml")


def compare(dumped: str) -> int:
    import re

    from galaxy.tool_util.parser import get_tool_source

    options = json.loads(Path(dumped).read_text())
    problems = []
    macros = (REPO / "wrappers" / "macros.xml").read_text()
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    token = re.search(r'<token name="@TOOL_VERSION@">([^<]+)</token>', macros).group(1)
    if token != version:
        problems.append(f"macros.xml: @TOOL_VERSION@ is {token}, the package version is {version}")

    for path, opts in sorted(options.items()):
        xml = _tool_file(path)
        if not xml.exists():
            if path not in VERBS_WITHOUT_WRAPPER:
                problems.append(f"{path}: no wrapper ({xml.relative_to(REPO)})")
            continue
        root = get_tool_source(str(xml)).root
        params = {}
        for el in root.iter("param"):
            arg = el.get("argument")
            if arg:
                params.setdefault(arg, []).append(el)
        from lxml import etree

        text = etree.tostring(root, encoding="unicode")  # macros and tokens expanded
        for name, info in opts.items():
            if name in NOT_WRAPPED:
                continue
            if name not in params:
                # Repeated or two-number options map to a repeat or a typed pair, named in the command.
                if re.search(re.escape(name) + r"(\s|$)", text):
                    continue
                problems.append(f"{path}: {name} has no parameter")
                continue
            for el in params[name]:
                if "choices" in info and el.get("type") == "select":
                    values = {o.get("value") for o in el.iter("option")}
                    missing = set(info["choices"]) - values
                    if "auto" not in values:
                        missing -= {"auto", "same"}
                    if missing and not (name == "--catalog-format" and path == "detect"):
                        problems.append(f"{path}: {name} lacks the choices {sorted(missing)}")
                for bound in ("min", "max"):
                    if info.get(bound) is not None and el.get(bound) is not None:
                        if float(el.get(bound)) != float(info[bound]):
                            problems.append(f"{path}: {name} {bound}={el.get(bound)}, click says {info[bound]}")
                    elif info.get(bound) is not None and el.get("type") in ("integer", "float"):
                        problems.append(f"{path}: {name} has no {bound} (click: {info[bound]})")
    for line in problems:
        print(f"check_options: {line}")
    n = sum(len(v) for v in options.values())
    print(f"check_options: {len(options)} commands, {n} options; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "compare"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "dump":
        dump(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))

"""Run the real NOIRLab Data Lab client (astro-datalab, pinned) against ``spectra serve``.

* :func:`datalab_python` makes (once, cached under ``~/.cache/ifu-extract``) a venv holding
  ``astro-datalab==2.24.0`` from PyPI and returns its interpreter; the client is never edited.
* :func:`run_isolated` runs the service and a client script inside a fresh network namespace
  (``unshare --net``): only loopback exists, with a default route through it, so nothing can
  leave the machine.  When imported, ``dl.specClient`` opens a UDP socket towards a public
  resolver (a route lookup through that default route, no packet) and GETs its default
  service's ``/contexts`` (``https://datalab.noirlab.edu/spec``).  The client's interpreter
  gets the pre-import shim ``tests/datalab_shim/sitecustomize.py`` on its PYTHONPATH, which
  sends requests for that public prefix to the service under test on loopback: the import-time
  GET gets an HTTP answer, and the client is not edited.  HOME is a temporary folder (the client
  writes ``$HOME/.datalab``).

Used by tests/test_spectra_datalab_client.py and bench/spectra_bench.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATALAB_PIN = "astro-datalab==2.24.0"
#: The service's port inside the namespace (any: the namespace has nothing else).
DATALAB_PORT = 6998
#: The client's default service URL (its import-time GET goes there).
PUBLIC_URL = "https://datalab.noirlab.edu/spec"
_SHIM = Path(__file__).resolve().with_name("datalab_shim")


def _base_python() -> str:
    """An interpreter the pinned client supports (Python 3.9-3.11)."""
    if (3, 9) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    for name in ("python3.11", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"{DATALAB_PIN} needs Python 3.9-3.11; install python3.11")


def datalab_python() -> Path:
    """The interpreter of the cached astro-datalab venv, created on first use."""
    base = _base_python()
    version = subprocess.run([base, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256(f"{DATALAB_PIN} {version}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ifu-extract"
    venv = cache / f"datalab-venv-{key}"
    stamp = venv / ".complete"
    py = venv / "bin" / "python"
    if stamp.is_file():
        return py
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"datalab-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator; the others wait and reuse it
        if stamp.is_file():
            return py
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        DATALAB_PIN], check=True)
        subprocess.run([str(py), "-c", "import pycurl, numpy, pandas, PIL, specutils"],
                       check=True)
        stamp.write_text(DATALAB_PIN + "\n")
    return py


def _ensure_tools() -> None:
    """``unshare`` (util-linux) and ``ip`` (iproute2), installed with apt-get when missing."""
    missing = [pkg for tool, pkg in (("unshare", "util-linux"), ("ip", "iproute2"))
               if shutil.which(tool) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


_NAMESPACE_SCRIPT = r"""
set -eu
ip link set lo up
ip route add default dev lo
"$IFX_CLI" spectra serve --store "$IFX_STORE" --port "$IFX_PORT" --token-file "$IFX_TOKEN_FILE" \
    $IFX_SERVE_ARGS > "$IFX_SERVER_LOG" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
up=0
for i in $(seq 400); do
    if (exec 3<>/dev/tcp/127.0.0.1/$IFX_PORT) 2>/dev/null; then up=1; break; fi
    kill -0 $server 2>/dev/null || break
    sleep 0.05
done
if [ $up != 1 ]; then echo "the service did not start:" >&2; cat "$IFX_SERVER_LOG" >&2; exit 90; fi
HOME="$IFX_HOME" PYTHONPATH="$IFX_SHIM" "$IFX_CLIENT_PY" "$@"
"""


def run_isolated(script: Path, args: list[str], *, store: Path, token: str, workdir: Path,
                 serve_args: tuple[str, ...] = ("--anonymous",), timeout: float = 600):
    """Run ``spectra serve`` on 127.0.0.1:6998 and ``<datalab python> script args`` in an
    isolated network namespace; returns the CompletedProcess (stdout/stderr as text).

    *workdir* receives ``home/`` (the client's HOME), ``token`` and ``server.log``.
    """
    _ensure_tools()
    py = datalab_python()
    workdir = Path(workdir)
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    cli = Path(sys.executable).parent / "ifu-extract"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PYTHONPATH", None)
    env.update(IFX_SHIM=str(_SHIM),
               IFX_DATALAB_REWRITE=f"{PUBLIC_URL}=http://127.0.0.1:{DATALAB_PORT}",
               IFX_CLI=str(cli),
               IFX_STORE=str(store), IFX_PORT=str(DATALAB_PORT), IFX_TOKEN_FILE=str(token_file),
               IFX_SERVE_ARGS=" ".join(serve_args), IFX_SERVER_LOG=str(workdir / "server.log"),
               IFX_HOME=str(home), IFX_CLIENT_PY=str(py), MPLBACKEND="Agg",
               PYTHONDONTWRITEBYTECODE="1")
    # as root a network namespace is enough; otherwise a user namespace makes us root in it
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return subprocess.run(["unshare", *userns, "--net", "--", "bash", "-c",
                           _NAMESPACE_SCRIPT, "ifx-datalab", str(script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def scratch_dir(prefix: str = "ifx-datalab-") -> Path:
    """A new temporary folder (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))

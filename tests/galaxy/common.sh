# Shared settings of the Galaxy test server and planemo (sourced by the other scripts).
#
# Nothing machine-specific is written into the repository: every path below is computed here, at
# run time, from the clone's location and the cache folder.
#
#   IFU_EXTRACT_CACHE   cache root            (default ${XDG_CACHE_HOME:-$HOME/.cache}/ifu-extract)
#   GALAXY_PYTHON       interpreter for the Galaxy and planemo venvs (default python3)
#   GALAXY_HOST/PORT    where Galaxy listens  (default 127.0.0.1, a free port for tests, 8080 for serve)
#   IFU_VENV            the package's venv whose ifu-extract the jobs run (default <clone>/.venv)

set -euo pipefail

GX_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$GX_HERE/../.." && pwd)"

GALAXY_VERSION=26.1.1
PLANEMO_VERSION=0.75.47
GALAXY_PYTHON="${GALAXY_PYTHON:-python3}"

CACHE_ROOT="${IFU_EXTRACT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ifu-extract}"
# Keys: the pins, the constraints and the interpreter; any change gives a new folder.
_py_tag="$("$GALAXY_PYTHON" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
_key() { { echo "$1"; echo "$_py_tag"; cat "$2"; } | sha256sum | cut -c1-12; }
GALAXY_KEY="$(_key "galaxy==$GALAXY_VERSION" "$REPO_ROOT/requirements/galaxy-constraints.txt")"
PLANEMO_KEY="$(_key "planemo==$PLANEMO_VERSION" "$REPO_ROOT/requirements/planemo-constraints.txt")"
GALAXY_HOME="$CACHE_ROOT/galaxy-$GALAXY_VERSION-$GALAXY_KEY"     # venv, seed database, galaxy_root shim
PLANEMO_HOME="$CACHE_ROOT/planemo-$PLANEMO_VERSION-$PLANEMO_KEY"  # venv
GALAXY_VENV="$GALAXY_HOME/venv"
PLANEMO_VENV="$PLANEMO_HOME/venv"
GALAXY_ROOT_SHIM="$GALAXY_HOME/root"
GALAXY_SEED_DB="$GALAXY_HOME/seed.sqlite"

# One running instance per clone: its state lives in the cache, under a hash of the clone's path.
_clone_id="$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-10)"
INSTANCE_DIR="${IFU_GALAXY_INSTANCE:-$CACHE_ROOT/instances/$_clone_id-$GALAXY_KEY}"

IFU_VENV="${IFU_VENV:-$REPO_ROOT/.venv}"
GALAXY_HOST="${GALAXY_HOST:-127.0.0.1}"

log() { printf '[galaxy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A stamp per install step, so that an interrupted install is redone rather than trusted.
stamp_ok() { [ -f "$1/.complete" ]; }

free_port() {
    "$GALAXY_PYTHON" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

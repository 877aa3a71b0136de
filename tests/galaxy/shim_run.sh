#!/usr/bin/env bash
# run.sh of the galaxy_root shim (copied there by install_galaxy.sh).  planemo's managed mode runs
# "<galaxy_root>/run.sh ..." with GALAXY_CONFIG_FILE set to the config it generated; a PyPI
# Galaxy has no run.sh, and Gravity (which run.sh would start) refuses to run as root, so start the
# web server (which also handles jobs) directly, on the bind address planemo wrote into its config.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091
source "$here/.venv/bin/activate"
: "${GALAXY_CONFIG_FILE:?planemo sets GALAXY_CONFIG_FILE}"
bind="$(python - "$GALAXY_CONFIG_FILE" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as fh:
    config = yaml.safe_load(fh) or {}
print(((config.get("gravity") or {}).get("gunicorn") or {}).get("bind") or "127.0.0.1:8080")
EOF
)"
export GALAXY_CONFIG_OVERRIDE_ENABLE_CELERY_TASKS=false
exec galaxy-web -c "$GALAXY_CONFIG_FILE" --bind "$bind"

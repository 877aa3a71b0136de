#!/usr/bin/env bash
# Install planemo==0.75.47 into its own venv in the cache (idempotent, keyed by the pins).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if stamp_ok "$PLANEMO_VENV"; then
    log "planemo $PLANEMO_VERSION venv cached: $PLANEMO_VENV"
    exit 0
fi
log "installing planemo $PLANEMO_VERSION into $PLANEMO_VENV"
t0=$SECONDS
rm -rf "$PLANEMO_VENV"
mkdir -p "$PLANEMO_HOME"
"$GALAXY_PYTHON" -m venv "$PLANEMO_VENV"
"$PLANEMO_VENV/bin/python" -m pip install --quiet --progress-bar off \
    -c "$REPO_ROOT/requirements/planemo-constraints.txt" "planemo==$PLANEMO_VERSION"
"$PLANEMO_VENV/bin/planemo" --version >/dev/null
touch "$PLANEMO_VENV/.complete"
log "planemo installed in $((SECONDS - t0)) s"

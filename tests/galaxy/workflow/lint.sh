#!/usr/bin/env bash
# planemo workflow_lint of a workflow folder, plain and with --iwc (IWC best practices); fails on
# any WARNING or ERROR line.
#
#   lint.sh [WORKFLOW_DIR]     default: workflows/ifu-spectral-extraction
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
DIR="${1:-$REPO_ROOT/workflows/ifu-spectral-extraction}"
stamp_ok "$PLANEMO_VENV" || die "planemo is not installed: run 'make galaxy'"
cd "$REPO_ROOT"
status=0
for opt in "" "--iwc"; do
    out="$("$PLANEMO_VENV/bin/planemo" workflow_lint $opt "$DIR" 2>&1)" || status=1
    echo "$out"
    if grep -qE 'WARNING|ERROR' <<<"$out"; then status=1; fi
done
[ $status = 0 ] && log "workflow_lint (plain and --iwc) clean: $DIR" || log "workflow_lint found problems: $DIR"
exit $status

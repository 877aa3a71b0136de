#!/usr/bin/env bash
# planemo lint of every wrapper (no warnings allowed), planemo shed_lint of .shed.yml, and
# check_options.py (each click option of each verb is a parameter of its tool).
#
# shed_lint skips one check, version_bumped: it asks the main Tool Shed which versions are
# published, and these machines reach no Tool Shed (the check crashes planemo when offline).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
stamp_ok "$PLANEMO_VENV" || die "planemo is not installed: run 'make galaxy'"
cd "$REPO_ROOT"
PLANEMO="$PLANEMO_VENV/bin/planemo"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

status=0
if "$PLANEMO" lint --fail_level warn wrappers/ >"$out" 2>&1; then
    log "planemo lint --fail_level warn wrappers/: clean ($(grep -c '^Linting tool' "$out") tools)"
else
    grep -E '^Linting tool|WARNING|ERROR|Failed' "$out" >&2 || cat "$out" >&2
    log "planemo lint: FAILED"
    status=1
fi
if "$PLANEMO" shed_lint --tools --fail_level warn --skip version_bumped . >"$out" 2>&1; then
    log "planemo shed_lint --tools: clean ($(grep -c '^Linting repository' "$out") repositories)"
else
    grep -E '^Linting|WARNING|ERROR|Failed' "$out" >&2 || cat "$out" >&2
    log "planemo shed_lint: FAILED"
    status=1
fi
# Every option of every verb is a parameter of its tool, with the click bounds and choices.
if "$IFU_VENV/bin/python" "$GX_HERE/check_options.py" dump "$out.json" &&
        "$PLANEMO_VENV/bin/python" "$GX_HERE/check_options.py" compare "$out.json" >"$out" 2>&1; then
    log "$(tail -n 1 "$out")"
else
    cat "$out" >&2
    log "check_options: FAILED"
    status=1
fi
rm -f "$out.json"
exit $status

#!/usr/bin/env bash
# planemo test of workflows/ifu-spectral-extraction against the running Galaxy of this clone
# (`make galaxy-start`, or tests/galaxy/galaxy.sh start), as its own Galaxy user.  Only the workflow
# is listed (planemo 0.75.47 crashes when tools come before workflows in one call); its tools are
# already on the server.
#
#   run_workflow_test.sh [WORKFLOW.ga]
#
# Reports (HTML, JSON, xUnit) go to $IFU_GALAXY_REPORTS (default: <instance>/workflow-reports).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

NAME="${IFU_GALAXY_NAME:-test}"
WF="${1:-$REPO_ROOT/workflows/ifu-spectral-extraction/ifu-spectral-extraction.ga}"
REPORTS="${IFU_GALAXY_REPORTS:-$INSTANCE_DIR/$NAME/workflow-reports}"
PLANEMO="$PLANEMO_VENV/bin/planemo"
stamp_ok "$PLANEMO_VENV" || die "planemo is not installed: run 'make galaxy'"
bash "$GX_HERE/galaxy.sh" status >/dev/null || die "Galaxy is not running: make galaxy-start"
url="$(bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(bash "$GX_HERE/galaxy.sh" key)"
key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key "planemo-workflow@example.org")"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
cd "$REPO_ROOT"
t0=$SECONDS
status=0
"$PLANEMO" test --engine external_galaxy --galaxy_url "$url" \
    --galaxy_admin_key "$admin_key" --galaxy_user_key "$key" \
    --test_timeout "${IFU_PLANEMO_TEST_TIMEOUT:-1200}" --summary compact \
    --test_output "$REPORTS/workflow.html" --test_output_json "$REPORTS/workflow.json" \
    --test_output_xunit "$REPORTS/workflow.xml" \
    "$WF" > "$REPORTS/workflow.log" 2>&1 || status=$?
"$GALAXY_VENV/bin/python" - "$REPORTS/workflow.json" "$((SECONDS - t0))" <<'PY' || status=1
import json, sys
path, elapsed = sys.argv[1], int(sys.argv[2])
try:
    tests = json.load(open(path)).get("tests", [])
except (OSError, ValueError):
    tests = []
ok = sum(t["data"].get("status") == "success" for t in tests)
for t in tests:
    if t["data"].get("status") != "success":
        d = t["data"]
        why = (d.get("output_problems") or [d.get("execution_problem") or ""])[0]
        print(f"  {t['id']}: {d.get('status')}: {str(why)[:400]}")
print(f"[workflow] planemo: {len(tests)} workflow tests in {elapsed} s: {ok} passed, {len(tests) - ok} failed")
sys.exit(0 if tests and ok == len(tests) else 1)
PY
if [ $status -ne 0 ]; then tail -c 3000 "$REPORTS/workflow.log" >&2; echo >&2; fi
exit $status

#!/usr/bin/env bash
# planemo test of the wrappers against the running Galaxy of this clone (galaxy.sh start), split
# over IFU_PLANEMO_SHARDS planemo processes (default 2, one per job worker), each with its own
# Galaxy user.  Fails if any test fails or errors; prints "N passed, N failed" last.
#
#   run_planemo.sh [WRAPPER.xml ...]        default: every wrappers/*.xml
#   run_planemo.sh --managed WRAPPER.xml    planemo starts its own Galaxy from the galaxy_root shim
#                                           (slow: one Galaxy per call; to check the shim)
#
# Reports (HTML for people, JSON, xUnit) go to $IFU_GALAXY_REPORTS (default: the instance folder).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SHARDS="${IFU_PLANEMO_SHARDS:-2}"
NAME="${IFU_GALAXY_NAME:-test}"
REPORTS="${IFU_GALAXY_REPORTS:-$INSTANCE_DIR/$NAME/reports}"
PLANEMO="$PLANEMO_VENV/bin/planemo"
stamp_ok "$PLANEMO_VENV" || die "planemo is not installed: run 'make galaxy' (tests/galaxy/install_planemo.sh)"

managed=0
if [ "${1:-}" = "--managed" ]; then managed=1; shift; fi
if [ $# -gt 0 ]; then
    tools=("$@")
else
    mapfile -t tools < <(ls "$REPO_ROOT"/wrappers/*.xml | grep -v '/macros\.xml$')
fi
[ ${#tools[@]} -gt 0 ] || die "no wrapper to test"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
cd "$REPO_ROOT"   # planemo looks for test-data/ in the working directory

if [ "$managed" = 1 ]; then
    stamp_ok "$GALAXY_ROOT_SHIM" || die "no galaxy_root shim: run 'make galaxy'"
    PATH="$IFU_VENV/bin:$PATH" GALAXY_CONFIG_OVERRIDE_ENABLE_CELERY_TASKS=false \
        GALAXY_CONFIG_OVERRIDE_TOOL_TEST_DATA_DIRECTORIES="$REPO_ROOT/test-data" \
        "$PLANEMO" test --galaxy_root "$GALAXY_ROOT_SHIM" --skip_venv \
        --no_dependency_resolution --no_conda_auto_init --test_data "$REPO_ROOT/test-data" \
        --test_output "$REPORTS/managed.html" --test_output_json "$REPORTS/managed.json" \
        "${tools[@]}"
    exit $?
fi

url="$(bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(bash "$GX_HERE/galaxy.sh" key)"
bash "$GX_HERE/galaxy.sh" status >/dev/null || die "Galaxy is not running: $GX_HERE/galaxy.sh start"

# Balance the shards by number of tests (largest first, each to the lightest shard).
mapfile -t shard_of < <(
    for t in "${tools[@]}"; do printf '%s %s\n' "$(grep -c '<test[ >]' "$t")" "$t"; done |
    sort -rn | awk -v n="$SHARDS" '{
        best = 0; for (i = 1; i < n; i++) if (load[i] < load[best]) best = i;
        load[best] += $1; print best, $2 }')

t0=$SECONDS
pids=()
for ((s = 0; s < SHARDS; s++)); do
    mine=()
    for line in "${shard_of[@]}"; do
        [ "${line%% *}" = "$s" ] && mine+=("${line#* }")
    done
    [ ${#mine[@]} -gt 0 ] || continue
    key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key "planemo-shard$s@example.org")"
    log "shard $s: ${#mine[@]} wrappers ($(basename -a "${mine[@]}" | tr '\n' ' '))"
    "$PLANEMO" test --engine external_galaxy --galaxy_url "$url" \
        --galaxy_admin_key "$admin_key" --galaxy_user_key "$key" \
        --test_timeout "${IFU_PLANEMO_TEST_TIMEOUT:-900}" --summary compact \
        --test_output "$REPORTS/shard$s.html" --test_output_json "$REPORTS/shard$s.json" \
        --test_output_xunit "$REPORTS/shard$s.xml" \
        "${mine[@]}" > "$REPORTS/shard$s.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
elapsed=$((SECONDS - t0))

# One verdict from the JSON reports (planemo's exit code says little about which test failed).
expected=0
for t in "${tools[@]}"; do expected=$((expected + $(grep -c '<test[ >]' "$t"))); done
"$GALAXY_VENV/bin/python" - "$REPORTS" "$elapsed" "${#tools[@]}" "$expected" <<'EOF'
import json, pathlib, sys
reports, elapsed, n_tools, expected = (pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                       int(sys.argv[4]))
counts, bad = {"success": 0, "failure": 0, "error": 0, "skip": 0}, []
for path in sorted(reports.glob("shard*.json")):
    for test in json.loads(path.read_text()).get("tests", []):
        status = test["data"].get("status", "error")
        counts[status] = counts.get(status, 0) + 1
        if status in ("failure", "error"):
            data = test["data"]
            why = (data.get("output_problems") or [data.get("execution_problem") or ""])[0]
            bad.append(f"  {test['id']}: {status}: {str(why).strip().splitlines()[0][:200] if why else ''}")
total = sum(counts.values())
print(f"[galaxy] planemo: {total} tests of {n_tools} wrappers in {elapsed} s "
      f"({elapsed // 60} min {elapsed % 60} s); reports in {reports}")
for line in bad:
    print(line)
failed = counts["failure"] + counts["error"]
if total < expected:  # a planemo process that died leaves its tests out of the reports
    print(f"  {expected - total} of the {expected} tests did not run (see the shard logs)")
    failed += expected - total
print(f"{counts['success']} passed, {failed} failed" + (f", {counts['skip']} skipped" if counts["skip"] else ""))
sys.exit(1 if failed or total == 0 else 0)
EOF
status=$?

# Tools the instance routes to its container (render_config.py --container-tool): prove from their
# FITS outputs that the jobs ran inside the image (the IFXIMAGE header card only the image sets).
job_conf="$INSTANCE_DIR/$NAME/config/job_conf.yml"
mapfile -t routed < <(awk '/^  - id: /{id=$3} /environment: container_ifu/{if (id) print id; id=""}' "$job_conf" 2>/dev/null)
for tool in "${routed[@]}"; do
    printf '%s\n' "${tools[@]}" | xargs -r grep -lq "<tool id=\"$tool\"" || continue
    version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/pyproject.toml" | head -n 1)"
    "$IFU_VENV/bin/python" "$GX_HERE/check_container_job.py" "$url" "$admin_key" \
        "ifu-extract:$version" "$tool" "$REPORTS"/shard*.json || status=1
done
# The forms refuse the wrong kind of FITS dataset (validators on the fits datatype's HDU list).
if [ ${#tools[@]} -gt 1 ] || [ "$(basename "${tools[0]}")" = info.xml ]; then
    "$PLANEMO_VENV/bin/python" "$GX_HERE/check_validators.py" "$url" "$admin_key" || status=1
fi
if [ $status -ne 0 ]; then
    for f in "$REPORTS"/shard*.log; do
        log "tail of $f:"
        tail -n 15 "$f" >&2
    done
fi
exit $status

#!/usr/bin/env bash
# The workflow scales out through Galaxy: run it on the running Galaxy of this clone with the
# catalogue in 3 chunks and in 1 chunk, and check that the 3-chunk run made 3 collection elements
# and 3 jobs per per-chunk step, and that both give the same spectra arrays (compare_spectra.py).
# Both runs take the workflow's defaults, so the 1-chunk run is the workflow as a user runs it
# with the form unchanged: it must give what `ifu-extract run CUBE CATALOGUE --fwhm-fallback F`
# gives, F the default of the workflow's "PSF FWHM if the cube has no FSF keywords" (`make demo` on
# the full cube): the same summary, column by column, and the same spectra (compare_run.py).
# A third run, in 2 chunks with "Find line emitters" on, must give what `run --line-scan` gives.
#
#   compare_chunks.sh [CUBE CATALOGUE]    default: test-data/wf_cube.fits test-data/wf_catalog.txt
#
# Downloads go to $IFU_WORKFLOW_OUT (default: <instance>/workflow-chunks).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/workflow"
NAME="${IFU_GALAXY_NAME:-test}"
CUBE="${1:-$REPO_ROOT/test-data/wf_cube.fits}"
CAT="${2:-$REPO_ROOT/test-data/wf_catalog.txt}"
OUT="${IFU_WORKFLOW_OUT:-$INSTANCE_DIR/$NAME/workflow-chunks}"
bash "$GX_HERE/galaxy.sh" status >/dev/null || die "Galaxy is not running: make galaxy-start"
url="$(bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(bash "$GX_HERE/galaxy.sh" key)"
key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key "workflow-chunks@example.org")"
rm -rf "$OUT"
mkdir -p "$OUT"
t0=$SECONDS
# The two runs go to Galaxy together: its two job workers interleave them.
"$PLANEMO_VENV/bin/python" "$HERE/run_workflow.py" "$url" "$key" --cube "$CUBE" --catalogue "$CAT" \
    --chunks 3 --out "$OUT/chunks3" > "$OUT/run3.log" 2>&1 &
p3=$!
"$PLANEMO_VENV/bin/python" "$HERE/run_workflow.py" "$url" "$key" --cube "$CUBE" --catalogue "$CAT" \
    --chunks 1 --out "$OUT/chunks1" > "$OUT/run1.log" 2>&1 &
p1=$!
"$PLANEMO_VENV/bin/python" "$HERE/run_workflow.py" "$url" "$key" --cube "$CUBE" --catalogue "$CAT" \
    --chunks 2 --param "Find line emitters=true" --out "$OUT/lines2" > "$OUT/runl.log" 2>&1 &
pl=$!
s3=0; s1=0; sl=0
wait $p3 || s3=$?
wait $p1 || s1=$?
wait $pl || sl=$?
if [ $s3 -ne 0 ] || [ $s1 -ne 0 ] || [ $sl -ne 0 ]; then
    tail -n 20 "$OUT/run3.log" "$OUT/run1.log" "$OUT/runl.log" >&2
    die "a workflow run failed"
fi
status=0
"$IFU_VENV/bin/python" "$HERE/compare_spectra.py" "$OUT/chunks3" "$OUT/chunks1" --chunks-a 3 --chunks-b 1 ||
    status=$?
log "3-chunk vs 1-chunk comparison in $((SECONDS - t0)) s"
# The workflow's defaults are run's: the 1-chunk run against a plain run (no report: seconds).
fwhm="$("$IFU_VENV/bin/python" "$HERE/compare_run.py" fwhm "$REPO_ROOT/workflows/ifu-spectral-extraction/ifu-spectral-extraction.ga")"
"$IFU_VENV/bin/ifu-extract" run "$CUBE" "$CAT" -o "$OUT/run" --fwhm-fallback "$fwhm" --no-plots > "$OUT/run.log" 2>&1 ||
    { tail -n 20 "$OUT/run.log" >&2; die "ifu-extract run failed"; }
"$IFU_VENV/bin/python" "$HERE/compare_run.py" "$OUT/chunks1" "$OUT/run" || status=1
# "Find line emitters" on is run --line-scan.
"$IFU_VENV/bin/ifu-extract" run "$CUBE" "$CAT" -o "$OUT/run-lines" --line-scan --fwhm-fallback "$fwhm" --no-plots \
    > "$OUT/run-lines.log" 2>&1 || { tail -n 20 "$OUT/run-lines.log" >&2; die "ifu-extract run --line-scan failed"; }
log "the workflow with 'Find line emitters' (2 chunks) against run --line-scan:"
"$IFU_VENV/bin/python" "$HERE/compare_run.py" "$OUT/lines2" "$OUT/run-lines" || status=1
exit $status

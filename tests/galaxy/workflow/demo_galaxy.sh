#!/usr/bin/env bash
# The slower check: the published workflow on mpdaf's full MUSE minicube (40 x 40 spaxels, 3681
# channels, 53 MB) with its 8-object MUSELET catalogue (merged with the detections) in 4 chunks, on the running Galaxy of this
# clone; downloads the summary, Source files and report to $IFU_WORKFLOW_OUT (default:
# <instance>/workflow-demo) and checks that every object has a Source file.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/workflow"
NAME="${IFU_GALAXY_NAME:-test}"
OUT="${IFU_WORKFLOW_OUT:-$INSTANCE_DIR/$NAME/workflow-demo}"
bash "$GX_HERE/galaxy.sh" status >/dev/null || die "Galaxy is not running: make galaxy-start"
sdetect="$("$IFU_VENV/bin/python" -c 'import mpdaf, os; print(os.path.join(os.path.dirname(mpdaf.__file__), "data", "sdetect"))')"
url="$(bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(bash "$GX_HERE/galaxy.sh" key)"
key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key "workflow-demo@example.org")"
rm -rf "$OUT"
t0=$SECONDS
"$PLANEMO_VENV/bin/python" "$HERE/run_workflow.py" "$url" "$key" --cube "$sdetect/minicube.fits" \
    --catalogue "$sdetect/cat.txt" --chunks "${IFU_DEMO_CHUNKS:-4}" --out "$OUT" --timeout 3600
n_rows=$(($(wc -l < "$OUT/summary.tsv") - 1))
n_src=$(ls "$OUT/sources" | wc -l)
# The 8 catalogue objects and the galaxies the detection adds to them, each with a Source file.
(( n_rows >= 8 )) && [ "$n_src" = "$n_rows" ] || die "expected at least the 8 catalogue objects, each with a Source file; got $n_rows objects and $n_src Source files"
log "demo-galaxy: $n_rows objects (8 from the catalogue), $n_src Source files, report $OUT/report.html, in $((SECONDS - t0)) s"

#!/usr/bin/env bash
# The scaling measurement of bench/README.md (issue 19): `make cluster-bench`.
#
#   cluster_bench.sh [CHUNKS...]     default: 4 2 1
#
# A synthetic MUSE-sized field (bench/cluster_field.py: 3681 x 300 x 300, $IFU_BENCH_OBJECTS = 2000
# point sources, seed 42; written once into bench/out/cluster, 2.65 GB) through the published
# workflow on a Galaxy whose every job goes to the one-node Slurm cluster of slurm.sh, once per
# chunk count, each in a fresh Galaxy (fresh database: one invocation's failure, or its thousands
# of datasets, do not weigh on the next; bench_runs.py).  Each part's jobs get
# $IFU_GALAXY_SLURM_CORES cores (default 1 here: the parts are the unit of parallelism, as on a
# cluster where each part gets its own slot).  The jobs' ifu-extract is wrapped so that every call
# logs its start, end and Slurm job id: the tool command's own wall time, against its Slurm job's.
# Results: bench/out/cluster/scaling_<chunks>.json (the load average at the start and end of each
# invocation in it) and a summary on stdout (bench/cluster_scaling.py).  No job reuse: Galaxy's
# job-cache search needs an SQL function (concat_ws) that the test server's SQLite lacks.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/cluster"
# A Galaxy and a Slurm cluster of its own (the cluster test's may run at the same time).
NAME="${IFU_CLUSTER_NAME:-cluster-bench}"
export IFU_SLURM_NAME="${IFU_SLURM_NAME:-slurm-bench}"
OBJECTS="${IFU_BENCH_OBJECTS:-2000}"
CORES="${IFU_GALAXY_SLURM_CORES:-1}"
# Workflow parameters (LABEL=VALUE, separated by ';').  Deblending off: the 2000 point sources on
# 300 x 300 spaxels chain into one overlap group of ~2000, more than deblend's --max-group (10), so
# the deblend step processes no object and fails, and the report never runs (measured 2026-12-07).
# Deblending has its own benchmark (bench/README.md, Deblending).
IFS=';' read -r -a PARAMS <<< "${IFU_BENCH_PARAMS-Deblending=false}"
param_args=()
for p in "${PARAMS[@]}"; do [ -n "$p" ] && param_args+=(--param "$p"); done
CHUNKS=("$@")
[ ${#CHUNKS[@]} -gt 0 ] || CHUNKS=(4 2 1)
OUT="$REPO_ROOT/bench/out/cluster"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1767225600}"
export IFU_GALAXY_CONTAINER="${IFU_GALAXY_CONTAINER:-auto}"
cleanup() {
    IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" stop 2>/dev/null || true
    bash "$HERE/slurm.sh" stop 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wrap_tool() {  # $1 = the instance's job-bin/ifu-extract link, $2 = the log of calls
    local bin=$1 times=$2 target
    target="$(readlink -f "$bin")"
    : > "$times"
    rm -f "$bin"
    cat > "$bin" <<EOF
#!/bin/sh
# Written by cluster_bench.sh: $target, each call logged (subcommand start end rc slurm-job).
s=\$(date +%s.%N)
'$target' "\$@"
rc=\$?
echo "\${1:-} \$s \$(date +%s.%N) \$rc \${SLURM_JOB_ID:-}" >> '$times'
exit \$rc
EOF
    chmod 755 "$bin"
}

mkdir -p "$OUT"
log "field: $OBJECTS objects (bench/cluster_field.py)"
mapfile -t field < <("$IFU_VENV/bin/python" "$REPO_ROOT/bench/cluster_field.py" --objects "$OBJECTS" --out "$OUT")
conf="$(bash "$HERE/slurm.sh" start)"
jobcomp="$(bash "$HERE/slurm.sh" jobcomp)"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; chunks ${CHUNKS[*]}, $CORES core(s) per part; ${PARAMS[*]}"
status=0
results=()
for chunks in "${CHUNKS[@]}"; do
    IFU_GALAXY_NAME="$NAME" IFU_GALAXY_SLURM_CONF="$conf" IFU_GALAXY_SLURM_CORES="$CORES" IFU_GALAXY_CELERY=0 \
        bash "$GX_HERE/galaxy.sh" start --fresh --owner-pid $$ >/dev/null
    url="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" url)"
    admin_key="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" key)"
    times="$INSTANCE_DIR/$NAME/tool_times.log"
    wrap_tool "$INSTANCE_DIR/$NAME/job-bin/ifu-extract" "$times"
    # A real user (the bootstrap key has none), an admin (admin_users): the cube is linked by path.
    key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key admin@example.org)"
    out="$OUT/scaling_$chunks.json"
    rm -f "$out"
    "$PLANEMO_VENV/bin/python" "$HERE/bench_runs.py" "$url" "$key" "$jobcomp" \
        --cube "${field[0]}" --catalogue "${field[1]}" --chunks "$chunks" --tool-times "$times" \
        "${param_args[@]}" --out "$out" || status=$?
    [ -f "$out" ] && results+=("$out")
    IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" stop 2>/dev/null || true
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ${#results[@]} -gt 0 ]; then
    "$IFU_VENV/bin/python" "$REPO_ROOT/bench/cluster_scaling.py" "${results[@]}" --objects "$OBJECTS" || status=1
else
    status=1
fi
exit $status

#!/usr/bin/env bash
# The scaling measurement of bench/README.md (issue 19): `make cluster-bench`.
#
#   cluster_bench.sh [CHUNKS...]     default: 4 2 1
#
# A synthetic MUSE-sized field (bench/cluster_field.py: 3681 x 300 x 300, $IFU_BENCH_OBJECTS = 2000
# point sources, seed 42; written once into bench/out/cluster, 2.65 GB) through the published
# workflow on a Galaxy whose every job goes to the one-node Slurm cluster of slurm.sh, once per
# chunk count, one after the other in one history (bench_runs.py).  Each part's jobs get
# $IFU_GALAXY_SLURM_CORES cores (default 1 here: the parts are the unit of parallelism, as on a
# cluster where each part gets its own slot).  Results: bench/out/cluster/scaling.json and a
# summary on stdout; the machine's load average is printed before and after.  IFU_BENCH_REUSE=1:
# the steps that do not depend on the chunk count run in the first invocation only (job cache).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/cluster"
# A Galaxy and a Slurm cluster of its own (the cluster test's may run at the same time).
NAME="${IFU_CLUSTER_NAME:-cluster-bench}"
export IFU_SLURM_NAME="${IFU_SLURM_NAME:-slurm-bench}"
OBJECTS="${IFU_BENCH_OBJECTS:-2000}"
CORES="${IFU_GALAXY_SLURM_CORES:-1}"
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

mkdir -p "$OUT"
log "field: $OBJECTS objects (bench/cluster_field.py)"
mapfile -t field < <("$IFU_VENV/bin/python" "$REPO_ROOT/bench/cluster_field.py" --objects "$OBJECTS" --out "$OUT")
conf="$(bash "$HERE/slurm.sh" start)"
IFU_GALAXY_NAME="$NAME" IFU_GALAXY_SLURM_CONF="$conf" IFU_GALAXY_SLURM_CORES="$CORES" IFU_GALAXY_CELERY=0 \
    bash "$GX_HERE/galaxy.sh" start --fresh --owner-pid $$ >/dev/null
url="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" key)"
# A real user (the bootstrap key has none), an admin (admin_users): the cube is linked by path.
key="$("$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$url" "$admin_key" user-key admin@example.org)"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; chunks ${CHUNKS[*]}, $CORES core(s) per part"
status=0
rm -f "$OUT/scaling.json"
"$PLANEMO_VENV/bin/python" "$HERE/bench_runs.py" "$url" "$key" "$(bash "$HERE/slurm.sh" jobcomp)" \
    --cube "${field[0]}" --catalogue "${field[1]}" --chunks "${CHUNKS[@]}" \
    --out "$OUT/scaling.json" ${IFU_BENCH_REUSE:+--reuse} || status=$?
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f "$OUT/scaling.json" ] && "$IFU_VENV/bin/python" "$REPO_ROOT/bench/cluster_scaling.py" "$OUT/scaling.json" --objects "$OBJECTS" || status=1
exit $status

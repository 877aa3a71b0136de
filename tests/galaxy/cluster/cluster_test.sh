#!/usr/bin/env bash
# Galaxy dispatches the workflow's jobs through Slurm (issue 19): `make cluster-test`.
#
#   cluster_test.sh [CUBE CATALOGUE]   default: test-data/wf_cube.fits test-data/wf_catalog.txt
#
# 1. a one-node Slurm cluster on this machine (slurm.sh: Debian's munge, slurmctld, slurmd,
#    installed when missing);
# 2. two Galaxy servers of this clone, neither of them the `test` server of galaxy-start (which
#    other targets of a `make test` share): `cluster`, whose every job goes to Slurm through the
#    CLI runner (cluster/job_conf_slurm.yml.in, ifu_extract_run on the container destination on
#    Slurm), and `cluster-local`, the usual local runner, for the reference run;
# 3. the published workflow on both, the catalogue split into $IFU_CLUSTER_CHUNKS (4) parts, with
#    SOURCE_DATE_EPOCH set; one ifu_extract_run job in the container through Slurm; one job that
#    must fail (ifu_extract_image on a band outside the cube);
# 4. checks: the Slurm run made 4 chunks and 4 jobs per per-chunk step (compare_spectra.py), its
#    spectra and Source files are byte-identical to the local runner's (compare_bytes.py), the
#    container job ran in the image (IFXIMAGE), and every Galaxy job of the `cluster` server ran
#    through Slurm (check_slurm_jobs.py: Galaxy's runner and external id against Slurm's
#    completion log, cores = GALAXY_SLOTS, the failing job failed);
# 5. stops both servers and the Slurm cluster (also on failure or Ctrl-C).
# The last line printed is `K of N jobs ran through Slurm`.  Outputs: <instance>/cluster/cluster-test.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/cluster"
NAME="${IFU_CLUSTER_NAME:-cluster}"
LOCAL_NAME="$NAME-local"
CUBE="${1:-$REPO_ROOT/test-data/wf_cube.fits}"
CAT="${2:-$REPO_ROOT/test-data/wf_catalog.txt}"
CHUNKS="${IFU_CLUSTER_CHUNKS:-4}"
CORES="${IFU_GALAXY_SLURM_CORES:-2}"
OUT="$INSTANCE_DIR/$NAME/cluster-test"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1767225600}"
# In the jobs of both servers (the local runner gives its jobs a clean environment; sbatch would
# pass the server's own): the same dates in the outputs of both.
export IFU_GALAXY_JOB_ENV="SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
export IFU_GALAXY_CONTAINER="${IFU_GALAXY_CONTAINER:-1}"
stamp_ok "$PLANEMO_VENV" || die "planemo is not installed: run 'make galaxy'"
[ -x "$IFU_VENV/bin/python" ] || die "$IFU_VENV missing: run 'make venv'"

clog() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() {
    IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" stop 2>/dev/null || true
    IFU_GALAXY_NAME="$LOCAL_NAME" bash "$GX_HERE/galaxy.sh" stop 2>/dev/null || true
    bash "$HERE/slurm.sh" stop 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
rm -rf "$OUT"
mkdir -p "$OUT"
conf="$(bash "$HERE/slurm.sh" start)"
export SLURM_CONF="$conf"
t_slurm=$((SECONDS - t0))

# Both servers stop with this script (--owner-pid); the first start of a machine makes the seed
# database, so then they start one after the other.
# The Slurm server runs without Celery: Galaxy 26.1 runs uploads (__DATA_FETCH__) and metadata as
# Celery tasks on the Galaxy host when Celery is on; off, they are jobs like any other, through Slurm.
start_galaxy() {  # $1 = instance name, $2 = slurm.conf or ""
    local celery=1
    [ -n "$2" ] && celery=0
    IFU_GALAXY_NAME="$1" IFU_GALAXY_SLURM_CONF="$2" IFU_GALAXY_SLURM_CORES="$CORES" IFU_GALAXY_CELERY=$celery \
        bash "$GX_HERE/galaxy.sh" start --fresh --owner-pid $$ > "$OUT/start-$1.log" 2>&1 ||
        { tail -n 30 "$OUT/start-$1.log" >&2; return 1; }
}
t1=$SECONDS
if [ -f "$GALAXY_SEED_DB" ]; then
    start_galaxy "$NAME" "$conf" & ps=$!
    start_galaxy "$LOCAL_NAME" "" & pl=$!
    s1=0; s2=0
    wait $ps || s1=$?
    wait $pl || s2=$?
    [ $s1 = 0 ] && [ $s2 = 0 ] || die "a Galaxy server did not start (logs: $OUT/start-*.log)"
else
    start_galaxy "$NAME" "$conf" || die "the Slurm Galaxy did not start"
    start_galaxy "$LOCAL_NAME" "" || die "the local Galaxy did not start"
fi
t_galaxy=$((SECONDS - t1))
url="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" url)"
admin_key="$(IFU_GALAXY_NAME="$NAME" bash "$GX_HERE/galaxy.sh" key)"
lurl="$(IFU_GALAXY_NAME="$LOCAL_NAME" bash "$GX_HERE/galaxy.sh" url)"
ladmin_key="$(IFU_GALAXY_NAME="$LOCAL_NAME" bash "$GX_HERE/galaxy.sh" key)"
api() { "$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$@"; }
key="$(api "$url" "$admin_key" user-key "cluster@example.org")"
lkey="$(api "$lurl" "$ladmin_key" user-key "cluster@example.org")"
clog "Slurm up in $t_slurm s, Galaxy servers in $t_galaxy s: $url (Slurm), $lurl (local runner)"

# The workflow on both servers at once, and the single jobs on the Slurm one.
t2=$SECONDS
wf() {  # $1 = url, $2 = key, $3 = output folder
    "$PLANEMO_VENV/bin/python" "$GX_HERE/workflow/run_workflow.py" "$1" "$2" --cube "$CUBE" \
        --catalogue "$CAT" --chunks "$CHUNKS" --param "Continuum degree=1" --out "$3" > "$3.log" 2>&1
}
wf "$url" "$key" "$OUT/slurm" & p1=$!
wf "$lurl" "$lkey" "$OUT/local" & p2=$!
"$PLANEMO_VENV/bin/python" "$HERE/run_cluster_jobs.py" "$url" "$key" --cube "$CUBE" \
    --catalogue "$CAT" --out "$OUT/jobs" > "$OUT/jobs.log" 2>&1 & p3=$!
s1=0; s2=0; s3=0
wait $p1 || s1=$?
wait $p2 || s2=$?
wait $p3 || s3=$?
t_runs=$((SECONDS - t2))
status=0
[ $s1 = 0 ] || { tail -n 20 "$OUT/slurm.log" >&2; log "the workflow through Slurm failed"; status=1; }
[ $s2 = 0 ] || { tail -n 20 "$OUT/local.log" >&2; log "the workflow on the local runner failed"; status=1; }
cat "$OUT/jobs.log"
[ $s3 = 0 ] || { log "the single jobs did not end as expected"; status=1; }

if [ $s1 = 0 ] && [ $s2 = 0 ]; then
    "$IFU_VENV/bin/python" "$GX_HERE/workflow/compare_spectra.py" "$OUT/slurm" "$OUT/local" \
        --chunks-a "$CHUNKS" --chunks-b "$CHUNKS" || status=1
    "$IFU_VENV/bin/python" "$HERE/compare_bytes.py" "$OUT/slurm" "$OUT/local" || status=1
fi
if [ $s3 = 0 ]; then
    version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/pyproject.toml" | head -n 1)"
    "$IFU_VENV/bin/python" - "$OUT/jobs/run" "ifu-extract:$version" <<'PY' || status=1
import sys
from pathlib import Path
from astropy.io import fits
folder, image = Path(sys.argv[1]), sys.argv[2]
marks = {p.name: fits.getheader(p).get("IFXIMAGE") for p in sorted(folder.glob("*.fits"))}
ok = bool(marks) and all(v == image for v in marks.values())
print(f"{'ok ' if ok else 'FAIL'} ifu_extract_run through Slurm ran in the image {image}: "
      + ", ".join(f"{k}: IFXIMAGE {v!r}" for k, v in marks.items()))
sys.exit(0 if ok else 1)
PY
fi
# Galaxy's job records against Slurm's completion log; its last line is the K of N line.
"$GALAXY_VENV/bin/python" "$HERE/check_slurm_jobs.py" "$url" "$admin_key" \
    "$(bash "$HERE/slurm.sh" jobcomp)" --multi-core "$CORES" \
    --expect-error "$("$GALAXY_VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["failing"]["id"])' "$OUT/jobs/jobs.json" 2>/dev/null || echo none)" \
    > "$OUT/slurm-jobs.txt" 2>&1 || status=1
head -n -1 "$OUT/slurm-jobs.txt"
# Stop everything now (not in the EXIT trap), so that the K of N line stays the last one.
cleanup > "$OUT/stop.log" 2>&1
trap - EXIT
clog "cluster test: Slurm $t_slurm s, Galaxy start $t_galaxy s, runs $t_runs s, total $((SECONDS - t0)) s" \
    "($([ $status = 0 ] && echo passed || echo FAILED); outputs: $OUT)"
tail -n 1 "$OUT/slurm-jobs.txt"
exit $status

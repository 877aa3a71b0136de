#!/usr/bin/env bash
# Start, stop and inspect the Galaxy server of this clone (installed by install_galaxy.sh).
#
#   galaxy.sh start [--fresh] [--owner-pid PID]  start in the background (or reuse a running one),
#                                                wait until it answers, print its URL
#   galaxy.sh stop                               stop it (and its jobs)
#   galaxy.sh serve                              run in the foreground for users (Ctrl-C stops it)
#   galaxy.sh status | url | key | log           what is running, its URL, admin key, log file
#
# Instances: "test" (fresh database each start, used by make galaxy-test and the other Galaxy tests)
# and "serve" (keeps its histories between runs); choose with IFU_GALAXY_NAME.  --owner-pid stops
# the server when that process ends (make passes its own pid: one server per `make test`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="${IFU_GALAXY_NAME:-test}"
# Celery worker for uploads and metadata (1) or none, every job setting its own metadata (0).
CELERY="${IFU_GALAXY_CELERY:-1}"
# ifu_extract_run in the container image (issue 6): 1 = required (make galaxy-start builds the
# image first), auto = when the image is built, 0 = never (every tool runs from the venv).
CONTAINER="${IFU_GALAXY_CONTAINER:-auto}"
CONTAINER_TOOLS=(ifu_extract_run)
# Every job through a Slurm cluster (issue 19): the slurm.conf of tests/galaxy/cluster/slurm.sh.
SLURM_CONF_FILE="${IFU_GALAXY_SLURM_CONF:-}"
SLURM_CORES="${IFU_GALAXY_SLURM_CORES:-2}"
DIR="$INSTANCE_DIR/$NAME"
PID_FILE="$DIR/galaxy.pid"
URL_FILE="$DIR/url"
LOG_FILE="$DIR/galaxy.log"
START_TIMEOUT="${GALAXY_START_TIMEOUT:-900}"

is_running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }
url() { cat "$URL_FILE"; }

answers() {  # the API answers (Galaxy has finished starting)
    "$GALAXY_VENV/bin/python" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/version", timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

prepare() {  # $1 = port; render the configuration, seed the database
    stamp_ok "$GALAXY_VENV" || die "Galaxy is not installed: run 'make galaxy' (tests/galaxy/install_galaxy.sh)"
    [ -x "$IFU_VENV/bin/ifu-extract" ] || die "$IFU_VENV/bin/ifu-extract missing: run 'make venv'"
    if [ "${FRESH:-0}" = 1 ]; then
        rm -rf "$DIR/data"
    fi
    mkdir -p "$DIR/data"
    local opts=()
    [ "$CELERY" = 1 ] && opts+=(--celery)
    local version image
    version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/pyproject.toml" | head -n 1)"
    image="ifu-extract:$version"
    case "$CONTAINER" in
    0) log "containers off (IFU_GALAXY_CONTAINER=0): every tool runs from $IFU_VENV" ;;
    1 | auto)
        if "$REPO_ROOT/containers/podman-galaxy.sh" image exists "$image" 2>/dev/null; then
            for t in "${CONTAINER_TOOLS[@]}"; do opts+=(--container-tool "$t"); done
            log "${CONTAINER_TOOLS[*]} run in the container $image (containers/podman-galaxy.sh)"
        elif [ "$CONTAINER" = 1 ]; then
            die "image $image is not built: run 'make image' (or IFU_GALAXY_CONTAINER=0 to run every tool from the venv)"
        else
            log "image $image not built ('make image'): every tool runs from $IFU_VENV"
        fi ;;
    *) die "IFU_GALAXY_CONTAINER must be 0, 1 or auto, not '$CONTAINER'" ;;
    esac
    # Extra variables in every job's environment (the cluster test: SOURCE_DATE_EPOCH=...).
    local kv
    for kv in ${IFU_GALAXY_JOB_ENV:-}; do opts+=(--job-env "$kv"); done
    if [ -n "$SLURM_CONF_FILE" ]; then
        [ -f "$SLURM_CONF_FILE" ] || die "IFU_GALAXY_SLURM_CONF=$SLURM_CONF_FILE: no such file (tests/galaxy/cluster/slurm.sh start)"
        opts+=(--slurm-conf "$SLURM_CONF_FILE" --slurm-cores "$SLURM_CORES")
        log "every job through Slurm ($SLURM_CONF_FILE), run/extract/merge/report on $SLURM_CORES cores"
    fi
    "$GALAXY_VENV/bin/python" "$GX_HERE/render_config.py" --instance "$DIR" --repo "$REPO_ROOT" \
        --ifu-venv "$IFU_VENV" --host "$GALAXY_HOST" --port "$1" "${opts[@]}"
    # A migrated empty database from the cache saves Galaxy creating one (about a minute).
    if [ ! -f "$DIR/data/galaxy.sqlite" ] && [ -f "$GALAXY_SEED_DB" ]; then
        cp "$GALAXY_SEED_DB" "$DIR/data/galaxy.sqlite"
    fi
}

save_seed() {  # keep the freshly created database as the seed of later instances
    [ -f "$GALAXY_SEED_DB" ] && return
    "$GALAXY_VENV/bin/python" - "$DIR/data/galaxy.sqlite" "$GALAXY_SEED_DB" <<'EOF'
import os, sqlite3, sys
src, dst = sys.argv[1:]
tmp = dst + ".tmp"
with sqlite3.connect(src) as a, sqlite3.connect(tmp) as b:
    a.backup(b)
os.replace(tmp, dst)
EOF
    log "database seed saved: $GALAXY_SEED_DB"
}

launch() {  # $1 = port; start galaxy-web in its own session, output to the log file
    export GALAXY_CONFIG_FILE="$DIR/config/galaxy.yml"
    if [ "$CELERY" = 1 ]; then
        unset GALAXY_CONFIG_OVERRIDE_ENABLE_CELERY_TASKS
    else
        export GALAXY_CONFIG_OVERRIDE_ENABLE_CELERY_TASKS=false
    fi
    # Jobs inherit this environment: no stray user site-packages, no GUI back end.
    export PYTHONNOUSERSITE=1 MPLBACKEND=Agg
    if [ -n "$SLURM_CONF_FILE" ]; then
        # sbatch/squeue/scancel of the Galaxy server find the cluster; the sacct of cluster/bin
        # answers from its job-completion log (no accounting database).
        export SLURM_CONF="$SLURM_CONF_FILE" PATH="$GX_HERE/cluster/bin:$PATH"
    fi
    echo "http://$GALAXY_HOST:$1" > "$URL_FILE"
    : > "$LOG_FILE"
    # One session (process group) for the web server, its jobs and the Celery worker: stop() ends
    # them together.  The worker is started first and the shell then becomes galaxy-web.
    local worker=""
    if [ "$CELERY" = 1 ]; then
        worker="celery --app galaxy.celery worker --pool threads --concurrency 2 \
            --queues celery,galaxy.internal,galaxy.external --loglevel INFO \
            >>'$DIR/celery.log' 2>&1 &"
    fi
    # shellcheck disable=SC1091
    (source "$GALAXY_VENV/bin/activate" && cd "$DIR" &&
        exec setsid bash -c "$worker exec galaxy-web -c '$GALAXY_CONFIG_FILE' --bind '$GALAXY_HOST:$1'" \
        >>"$LOG_FILE" 2>&1 </dev/null) &
    echo $! > "$PID_FILE"
}

wait_ready() {
    local u t0=$SECONDS
    u="$(url)"
    while ! answers "$u"; do
        if ! is_running; then
            tail -n 40 "$LOG_FILE" >&2 || true
            stop_group  # the Celery worker of that session, if it outlived the server
            die "Galaxy exited during start-up (log: $LOG_FILE)"
        fi
        if (( SECONDS - t0 > START_TIMEOUT )); then
            tail -n 40 "$LOG_FILE" >&2 || true
            stop
            die "Galaxy did not answer within $START_TIMEOUT s (log: $LOG_FILE)"
        fi
        sleep 2
    done
    log "Galaxy answers at $u after $((SECONDS - t0)) s"
    save_seed
}

stop_group() {  # end what is left of the session of a server that is gone
    [ -f "$PID_FILE" ] || return 0
    kill -TERM -- "-$(cat "$PID_FILE")" 2>/dev/null || true
    rm -f "$PID_FILE"
}

stop() {
    if ! is_running; then
        stop_group
        return 0
    fi
    local pid
    pid="$(cat "$PID_FILE")"
    log "stopping Galaxy (pid $pid)"
    # galaxy-web was started with setsid: its process group holds it and the jobs it runs.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
}

watch_owner() {  # stop Galaxy when process $1 (the make that started it) ends
    local owner=$1
    (
        trap '' HUP INT
        while kill -0 "$owner" 2>/dev/null && is_running; do sleep 3; done
        stop
    ) >/dev/null 2>&1 </dev/null &
    disown
}

cmd="${1:-status}"
shift || true
OWNER=""
FRESH=0
while [ $# -gt 0 ]; do
    case "$1" in
        --owner-pid) OWNER="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --port) GALAXY_PORT="$2"; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

case "$cmd" in
    start)
        if is_running && answers "$(url)"; then
            log "Galaxy already running at $(url)"
            url
            exit 0
        fi
        stop
        port="${GALAXY_PORT:-$(free_port)}"
        t0=$SECONDS
        prepare "$port"
        log "starting Galaxy $GALAXY_VERSION on $GALAXY_HOST:$port (instance $DIR)"
        launch "$port"
        [ -n "$OWNER" ] && watch_owner "$OWNER"
        wait_ready
        echo "$((SECONDS - t0))" > "$DIR/start_seconds"
        url
        ;;
    stop)
        stop
        ;;
    serve)
        if is_running; then
            die "a Galaxy of this clone is already running at $(url) (stop it: $0 stop)"
        fi
        port="${GALAXY_PORT:-8080}"
        prepare "$port"
        trap 'echo; stop; exit 0' INT TERM
        log "starting Galaxy $GALAXY_VERSION (log: $LOG_FILE)"
        launch "$port"
        wait_ready
        # The published workflow, in the Workflows list (Public workflows) of every user.
        "$GALAXY_VENV/bin/python" "$GX_HERE/galaxy_api.py" "$(url)" "$(cat "$DIR/admin_key")" \
            import-workflow admin@example.org \
            "$REPO_ROOT/workflows/ifu-spectral-extraction/ifu-spectral-extraction.ga" \
            || log "could not import the workflow (see $LOG_FILE)"
        cat <<EOF

  Galaxy with the ifu-extract tools (tool panel section "IFU extract") is running at

      $(url)

  Log: $LOG_FILE
  Press Ctrl-C to stop it.

EOF
        while is_running; do sleep 2; done
        die "Galaxy stopped unexpectedly (log: $LOG_FILE)"
        ;;
    status)
        if is_running; then echo "running at $(url) (pid $(cat "$PID_FILE"))"; else echo "stopped"; exit 1; fi
        ;;
    url) url ;;
    key) cat "$DIR/admin_key" ;;
    log) echo "$LOG_FILE" ;;
    *) die "unknown command $cmd (start, stop, serve, status, url, key, log)" ;;
esac

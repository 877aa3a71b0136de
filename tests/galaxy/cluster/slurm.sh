#!/usr/bin/env bash
# A one-node Slurm cluster on this machine for the Galaxy cluster test (issue 19), from Debian's
# packages: munged, slurmctld and slurmd run as root, without systemd or cgroups.
#
#   slurm.sh install   apt-get install slurmctld slurmd slurm-client munge when missing (idempotent)
#   slurm.sh start     write the configuration, start munged, slurmctld and slurmd, wait until the
#                      node is idle; prints the path of slurm.conf (export it as SLURM_CONF)
#   slurm.sh stop      stop the three daemons of this clone (by their pid files)
#   slurm.sh status | conf | jobcomp    sinfo, the path of slurm.conf, of the job-completion log
#
# Everything of it lives in the cache, per clone (<instance>/slurm, or <instance>/$IFU_SLURM_NAME):
# slurm.conf, a munge key of its own, the logs and the job-completion log
# (JobCompType=jobcomp/filetxt: no accounting database is needed to know which jobs Slurm ran and
# how they ended).  The daemons' sockets and
# spool live under a short folder in $TMPDIR (a UNIX socket path has at most 107 bytes).  The
# system's own munge and Slurm configuration (/etc/munge, /etc/slurm) are not used or changed.
# Ports are free ports chosen at each start, so two clones can run their clusters side by side.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

# IFU_SLURM_NAME: several clusters of one clone side by side (the benchmark's and the test's).
SLURM_NAME="${IFU_SLURM_NAME:-slurm}"
SLURM_DIR="$INSTANCE_DIR/$SLURM_NAME"
RUN_DIR="${TMPDIR:-/tmp}/ifx-$SLURM_NAME-$_clone_id"
CONF="$SLURM_DIR/slurm.conf"
JOBCOMP="$SLURM_DIR/jobcomp.log"
PACKAGES=(slurmctld slurmd slurm-client munge)
NODE="$(hostname -s)"
# Memory kept for Galaxy, its Celery worker and the system, MB (not offered to jobs).
RESERVED_MB="${IFU_SLURM_RESERVED_MB:-2048}"

slog() { printf '[slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

install() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "Slurm packages missing (${missing[*]}): install them as root (apt-get install ${missing[*]})"
    slog "installing ${missing[*]} (Debian packages)"
    # The packages' scripts must not start the system's daemons (no systemd here, and ours are
    # started by this script with their own configuration).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [ $made_policy = 1 ] && rm -f "$policy"
    return 0
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_line() {  # the node's real CPUs and memory, as slurmd sees them (slurmd -C)
    local line cpus mem
    line="$(slurmd -C | head -n 1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$line")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$line")"
    [ -n "$cpus" ] && [ -n "$mem" ] || die "slurmd -C gave no CPUs/RealMemory: $line"
    # Boards/sockets/cores/threads as detected, RealMemory less what Galaxy itself needs.
    local topo
    topo="$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$line" || true)"
    echo "NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus $topo RealMemory=$((mem - RESERVED_MB)) State=UNKNOWN"
}

write_conf() {
    local ctld_port=$1 slurmd_port=$2
    mkdir -p "$SLURM_DIR/state" "$RUN_DIR/spool"
    chmod 755 "$RUN_DIR" "$RUN_DIR/spool"
    cat > "$CONF.tmp" <<EOF
# One-node Slurm cluster of the ifu-extract cluster test (tests/galaxy/cluster/slurm.sh writes
# this file at each start; do not edit).  Root daemons without systemd or cgroups: process
# tracking by the process tree (proctrack/linuxproc), no task binding (task/none).
ClusterName=ifx
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN_DIR/munge.socket
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$RUN_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Which jobs ran and how they ended, one line each, without an accounting database.
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
MpiDefault=none
SwitchType=switch/none
# Cores and memory are consumable: several jobs share the node, each within what it asked for.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# Quick turn-around for a test cluster: poll and purge finished jobs fast.
SchedulerParameters=sched_interval=2
MinJobAge=60
KillWait=10
InactiveLimit=0
Waittime=0
$(node_line)
PartitionName=ifx Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    local key="$SLURM_DIR/munge.key"
    if [ ! -s "$key" ]; then
        # A key of this cluster only (1024 random bytes, as mungekey makes).
        (umask 077 && head -c 1024 /dev/urandom > "$key.tmp" && mv "$key.tmp" "$key")
    fi
    chmod 600 "$key"
    pid_alive "$RUN_DIR/munged.pid" && return 0
    munged --force --key-file="$key" --socket="$RUN_DIR/munge.socket" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$SLURM_DIR/munged.log" \
        --seed-file="$RUN_DIR/munged.seed" || die "munged did not start (log: $SLURM_DIR/munged.log)"
}

start() {
    install
    if pid_alive "$RUN_DIR/slurmctld.pid" && pid_alive "$RUN_DIR/slurmd.pid"; then
        slog "Slurm of this clone already running ($CONF)"
        echo "$CONF"
        return 0
    fi
    stop 2>/dev/null || true
    mkdir -p "$SLURM_DIR" "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    local p1 p2
    p1="$(free_port)"
    p2="$(free_port)"
    while [ "$p2" = "$p1" ]; do p2="$(free_port)"; done
    write_conf "$p1" "$p2"
    # The completion log holds this session's jobs only (the last one's is kept beside it).
    [ -f "$JOBCOMP" ] && mv -f "$JOBCOMP" "$JOBCOMP.prev"
    export SLURM_CONF="$CONF"
    start_munge
    # -i: ignore the saved state of an earlier run (jobs of a test cluster do not survive it).
    slurmctld -i -f "$CONF" || die "slurmctld did not start (log: $SLURM_DIR/slurmctld.log)"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start (log: $SLURM_DIR/slurmd.log)"
    local t0=$SECONDS state=""
    while (( SECONDS - t0 < 60 )); do
        state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)"
        case "$state" in idle* | mix* | alloc*) break ;; esac
        sleep 1
    done
    case "$state" in
        idle* | mix* | alloc*) ;;
        *) tail -n 20 "$SLURM_DIR/slurmctld.log" "$SLURM_DIR/slurmd.log" >&2 || true
           stop
           die "Slurm node $NODE not idle after 60 s (state '$state')" ;;
    esac
    slog "Slurm up in $((SECONDS - t0)) s: node $NODE $(sinfo -h -N -o '%c CPUs %m MB' | head -n 1), conf $CONF"
    echo "$CONF"
}

stop_pid() {  # $1 = pid file, $2 = name
    pid_alive "$1" || { rm -f "$1"; return 0; }
    local pid
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

stop() {
    # Jobs still on the node end with the cluster.
    if [ -f "$CONF" ] && pid_alive "$RUN_DIR/slurmctld.pid"; then
        SLURM_CONF="$CONF" scancel --full -u "$(id -un)" 2>/dev/null || true
    fi
    stop_pid "$RUN_DIR/slurmd.pid" slurmd
    stop_pid "$RUN_DIR/slurmctld.pid" slurmctld
    stop_pid "$RUN_DIR/munged.pid" munged
    slog "Slurm of this clone stopped"
}

cmd="${1:-status}"
case "$cmd" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    conf) echo "$CONF" ;;
    jobcomp) echo "$JOBCOMP" ;;
    status)
        if pid_alive "$RUN_DIR/slurmctld.pid"; then SLURM_CONF="$CONF" sinfo; else echo "stopped"; exit 1; fi ;;
    *) die "unknown command $cmd (install, start, stop, status, conf, jobcomp)" ;;
esac

#!/usr/bin/env bash
# podman with the project's own storage and configuration, speaking the docker CLI that Galaxy
# uses.  Galaxy's job destination points `docker_cmd` at this script; build.sh and image-test.sh
# use it too, so every podman call of the project sees the same images.
#
#   containers/podman-galaxy.sh run [docker run options] IMAGE [COMMAND...]
#   containers/podman-galaxy.sh inspect IMAGE      (Galaxy: is the image there?)
#   containers/podman-galaxy.sh pull IMAGE         (no-op if present; never fetches unless
#                                                   IFX_PODMAN_PULL=1: auto-pull is off)
#   containers/podman-galaxy.sh kill NAME | images | load | ...   (passed to podman)
#   containers/podman-galaxy.sh --print-env        (the CONTAINERS_* variables, for a shell)
#   containers/podman-galaxy.sh --print-ulimits    (--ulimit options at the host's hard limits)
#
# Facts about podman on these machines (issue 6): crun fails here (cgroups in hybrid mode), so
# runc; cgroupfs, events in a file; podman's default ulimits cannot be raised without
# CAP_SYS_RESOURCE, so they are set to the host's hard limits; containers get no network.
#
# Environment:
#   IFX_PODMAN_HOME  storage and configuration (default: ~/.cache/ifu-extract/podman)
#   IFX_PODMAN_RUN   run-time state, on tmpfs (default: /dev/shm/ifu-extract-podman-<hash>)
#   IFX_PODMAN_PULL  1 = let `pull` reach a registry (default 0)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
# Outside the checkout, per user: a fresh clone (CI) reuses the images already built.  The
# user's home comes from the password database, not $HOME: Galaxy gives each job its own HOME.
state=${IFX_PODMAN_HOME:-$(getent passwd "$(id -un)" | cut -d: -f6)/.cache/ifu-extract/podman}
mkdir -p "$state"
state=$(cd "$state" && pwd -P)
# Run-time state (runroot, locks, container state) belongs on tmpfs so that a reboot clears it,
# as /run does for a system podman; keyed by the storage folder so two checkouts do not mix.
run=${IFX_PODMAN_RUN:-/dev/shm/ifu-extract-podman-$(printf '%s' "$state" | sha256sum | cut -c1-12)}
etc=$state/etc

die() { echo "podman-galaxy: $*" >&2; exit 125; }

# Hard limits of this host: podman cannot raise a limit above them (no CAP_SYS_RESOURCE).
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
[[ $nofile == unlimited ]] && nofile=1048576
if [[ $nproc == unlimited ]] || (( nproc > pid_max )); then nproc=$pid_max; fi
ulimits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
# The --ulimit options of a Galaxy destination (tests/galaxy/render_config.py asks here: one rule).
if [[ ${1:-} == --print-ulimits ]]; then
    echo "${ulimits[*]}"
    exit 0
fi

command -v podman >/dev/null || die "podman is not installed (make image installs it: apt-get install podman runc)"

# Write a file only when its content changes, atomically (Galaxy may start several jobs at once).
put() {
    local file=$1 content=$2
    if [[ ! -f $file ]] || [[ $(<"$file") != "$content" ]]; then
        local tmp
        tmp=$(mktemp "$file.XXXXXX")
        printf '%s\n' "$content" >"$tmp"
        chmod 644 "$tmp"
        mv -f "$tmp" "$file"
    fi
}

mkdir -p "$etc" "$state/storage" "$run"
chmod 700 "$run"
put "$etc/storage.conf" "# written by containers/podman-galaxy.sh at run time: edits are lost
[storage]
driver = \"overlay\"
graphroot = \"$state/storage\"
runroot = \"$run/storage\"

[storage.options.overlay]
mountopt = \"nodev\""
put "$etc/containers.conf" "# written by containers/podman-galaxy.sh at run time: edits are lost
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]
netns = \"none\"
log_driver = \"k8s-file\"

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
events_logfile_path = \"$run/events.log\"
tmp_dir = \"$run/libpod\"
static_dir = \"$state/storage/libpod\"
volume_path = \"$state/storage/volumes\"
lock_type = \"file\"
image_default_transport = \"docker://\""
# Local images only by short name ("ifu-extract:0.1.0" is localhost/ifu-extract:0.1.0); no
# registry is searched for an unqualified name, so nothing is fetched by surprise.
put "$etc/registries.conf" "# written by containers/podman-galaxy.sh at run time: edits are lost
unqualified-search-registries = []
short-name-mode = \"permissive\""

export CONTAINERS_CONF=$etc/containers.conf
export CONTAINERS_STORAGE_CONF=$etc/storage.conf
export CONTAINERS_REGISTRIES_CONF=$etc/registries.conf
unset CONTAINERS_REGISTRIES_CONF_DIR 2>/dev/null || true
pod=(podman)

[[ $# -gt 0 ]] || die "usage: podman-galaxy.sh run|inspect|pull|kill|images|load|build|... ARGS"

# Galaxy writes `docker -H HOST ...` only when a docker_host is configured: refuse it plainly.
[[ $1 == -H || $1 == --host ]] && die "docker_host is not supported: podman runs locally"

verb=$1
shift
case $verb in
--print-env)
    printf 'export CONTAINERS_CONF=%q\nexport CONTAINERS_STORAGE_CONF=%q\nexport CONTAINERS_REGISTRIES_CONF=%q\n' \
        "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_REGISTRIES_CONF"
    ;;
run)
    # docker run options Galaxy writes (galaxy.tool_util.deps.docker_util.build_docker_run_command):
    # -e VAR=VALUE, --name, -v SRC:DST:MODE, --volumes-from, -m, --cpus, -w, --net, --rm,
    # extra arguments, --user UID:GID, IMAGE, COMMAND.  podman takes them as they are, except:
    #   -v      docker creates a missing host folder, podman refuses: created here;  a volume
    #           whose variable was empty (Galaxy's "$TMPDIR:rw" with TMPDIR unset) is dropped,
    #           and of two volumes on the same target the later wins, as in Galaxy's own
    #           preprocess_volumes (after the shell expanded $TMPDIR, $TMP, $TEMP to one path);
    #   --ulimit  the host's hard limits are added unless the destination gives its own.
    # Which options take a value, as this podman's own help says (cached per podman version), so
    # that the image is found whatever options the destination adds (docker_run_extra_arguments).
    valued_file=$etc/run-options-$(podman --version | tr -c 'a-zA-Z0-9.\n' _)
    if [[ ! -s $valued_file ]]; then
        tmp=$(mktemp "$valued_file.XXXXXX")
        { echo " --net "; podman run --help | sed -nE 's/^ +(-([a-zA-Z]), )?--([a-z0-9-]+) [^ ]+  .*/ -\2 --\3 /p' | sed 's/^ - / /'; } >"$tmp"
        mv -f "$tmp" "$valued_file"
    fi
    valued=$(tr -d '\n' <"$valued_file")
    args=() vols=() have_ulimit=0
    while [[ $# -gt 0 ]]; do
        case $1 in
        --ulimit|--ulimit=*) have_ulimit=1 ;;
        -v|--volume)
            [[ $# -ge 2 ]] || die "run: $1 needs a value"
            vols+=("$2"); shift 2; continue ;;
        --volume=*) vols+=("${1#--volume=}"); shift; continue ;;
        -*) ;;
        *) break ;;  # the image: the rest is the command
        esac
        if [[ $1 != *=* && $valued == *" $1 "* ]]; then
            [[ $# -ge 2 ]] || die "run: $1 needs a value"
            args+=("$1" "$2"); shift 2
        else
            args+=("$1"); shift
        fi
    done
    [[ $# -gt 0 ]] || die "run: no image given"
    (( have_ulimit )) || args=("${ulimits[@]}" "${args[@]}")
    declare -A target_of=()
    kept=()
    for (( i = ${#vols[@]} - 1; i >= 0; i-- )); do  # the later volume of a target wins
        IFS=: read -r src dst mode <<<"${vols[i]}"
        [[ -n $src ]] || continue
        if [[ -z $dst || $dst == ro || $dst == rw || $dst == z || $dst == Z || $dst == *default_ro ]]; then
            mode=$dst dst=$src  # SRC:MODE
        fi
        [[ -z ${target_of[$dst]:-} ]] || continue
        target_of[$dst]=1
        [[ $src != /* || -e $src ]] || mkdir -p "$src"
        [[ $mode == default_ro ]] && mode=ro
        kept=("$src:$dst${mode:+:$mode}" "${kept[@]}")
    done
    for v in "${kept[@]}"; do args+=(-v "$v"); done
    exec "${pod[@]}" run --pull=never "${args[@]}" "$@"
    ;;
pull)
    # Galaxy runs `inspect IMAGE || pull IMAGE` before every job.  Images are built here by
    # `make image`; a registry is reached only when asked for.
    [[ $# -gt 0 ]] || die "pull: no image given"
    image=${!#}
    if "${pod[@]}" image exists "$image"; then
        exit 0
    fi
    if [[ ${IFX_PODMAN_PULL:-0} == 1 ]]; then
        exec "${pod[@]}" pull "$@"
    fi
    die "image $image is not in the project's storage ($state/storage); build it with 'make image' (auto-pull is off; IFX_PODMAN_PULL=1 allows pulling)"
    ;;
inspect)
    exec "${pod[@]}" inspect "$@"
    ;;
*)
    # kill, images, load, logs, build, import, image, rmi, ps, info, ...: podman's CLI is docker's.
    exec "${pod[@]}" "$verb" "$@"
    ;;
esac

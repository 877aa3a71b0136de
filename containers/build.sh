#!/usr/bin/env bash
# Build the ifu-extract image with podman (`make image`): ifu-extract:<pyproject version>.
#
# Installs podman and runc (and debootstrap when needed) with apt if they are missing; keeps
# images and configuration in the project's cache folder (containers/podman-galaxy.sh: ~/.cache/ifu-extract/podman).
# The base image:
#   - IFX_BASE=IMAGE        use that image (e.g. docker.io/library/python:3.11-slim-bookworm);
#   - otherwise             the Dockerfile's default if a registry answers, else a Debian
#                           bookworm minbase + python3 made here with debootstrap from the mirror
#                           apt uses, imported as localhost/ifu-extract-base:bookworm, and remade
#                           only when its recipe (make_base below) changes.
# Re-running is cheap: podman reuses every layer whose inputs did not change.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
cd "$repo"
pg=$here/podman-galaxy.sh
# Outside the checkout, per user: a fresh clone (CI) reuses the images already built.  The
# user's home comes from the password database, not $HOME: Galaxy gives each job its own HOME.
state=${IFX_PODMAN_HOME:-$(getent passwd "$(id -un)" | cut -d: -f6)/.cache/ifu-extract/podman}

log() { printf '%s build.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: the project's podman set-up is rootful (see containers/README.md)"

apt_updated=0
need() {  # need COMMAND DEBIAN-PACKAGE...
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null && return 0
    log "installing $* (apt)"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$state"
    if (( ! apt_updated )); then
        apt-get update -q >"$state/apt.log" 2>&1 || { cat "$state/apt.log" >&2; die "apt-get update failed"; }
        apt_updated=1
    fi
    apt-get install -y -q --no-install-recommends "$@" >"$state/apt.log" 2>&1 \
        || { tail -n 20 "$state/apt.log" >&2; die "apt-get install $* failed"; }
}
need podman podman
need runc runc

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image=ifu-extract:$version
base_ref=localhost/ifu-extract-base:bookworm
default_base=$(sed -n 's/^ARG BASE=//p' "$here/Dockerfile")

# ---- the offline base -----------------------------------------------------------------------
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

# The Debian mirror apt is configured with (no host name is written into the repository).
apt_mirror() {
    local pass uri release component
    for pass in 1 2; do
        while read -r uri release component; do
            [[ $component == main ]] || continue
            if [[ $release == "$SUITE" ]]; then echo "${uri%/}"; return 0; fi
        done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null | sort -u)
        # Lists not fetched yet on a fresh machine: fetch them once and look again.
        (( pass == 1 )) && apt-get update -q >/dev/null
    done
    die "apt has no '$SUITE main' source to debootstrap from (apt-get indextargets)"
}

make_base() {  # the recipe: any change to this function remakes the base image
    local root=$1 mirror=$2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$state/debootstrap.log" 2>&1 \
        || { tail -20 "$state/debootstrap.log" >&2; die "debootstrap failed (log: $state/debootstrap.log)"; }
    # Nothing of this host in the image (mirror, DNS, host name), no apt lists or caches.
    rm -f "$root"/etc/apt/sources.list "$root"/etc/resolv.conf "$root"/etc/hostname
    : >"$root"/etc/resolv.conf
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/tmp/* \
        "$root/$(basename ~root)/.cache"  # the chroot's root home
    chmod 1777 "$root"/tmp
}

base_image() {
    local recipe mirror root
    recipe=$( { declare -f make_base; echo "$SUITE $PACKAGES"; } | sha256sum | cut -c1-16)
    if [[ $("$pg" image inspect --format '{{index .Labels "org.ifu-extract.base-recipe"}}' "$base_ref" 2>/dev/null) == "$recipe" ]]; then
        log "base $base_ref (recipe $recipe) is up to date"
        return 0
    fi
    need debootstrap debootstrap
    mirror=$(apt_mirror)
    root=$state/base-rootfs
    rm -rf "$root"
    mkdir -p "$root"
    log "making $base_ref: debootstrap --variant=minbase $SUITE + $PACKAGES from apt's mirror"
    local t0=$SECONDS
    make_base "$root" "$mirror"
    tar --numeric-owner -C "$root" -cf - . | "$pg" import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.ifu-extract.base-recipe=$recipe" \
        --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase with $PACKAGES (debootstrap)" \
        - "$base_ref" >/dev/null
    rm -rf "$root"
    log "base $base_ref made in $((SECONDS - t0)) s"
}

if [[ -n ${IFX_BASE:-} ]]; then
    base=$IFX_BASE
elif "$pg" image exists "$default_base" \
    || IFX_PODMAN_PULL=1 timeout 120 "$pg" pull -q "$default_base" >/dev/null 2>&1; then
    base=$default_base
else
    log "no registry reachable for $default_base: the base is made here with debootstrap"
    base_image
    base=$base_ref
fi

# ---- the image ------------------------------------------------------------------------------
# pip inside the build may go through a TLS-intercepting proxy: hand it the host's CA bundle as
# a build secret (mounted for the pip step only, never stored in a layer).
ca=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
[[ -s $ca ]] || die "no CA bundle at $ca (set PIP_CERT)"
source_url=$(git config --get remote.origin.url 2>/dev/null || true)
[[ $source_url == http* ]] || source_url=

old_id=$("$pg" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
log "building $image from $base"
t0=$SECONDS
"$pg" build \
    --network=host \
    --layers \
    --file "$here/Dockerfile" \
    --ignorefile "$here/Dockerfile.dockerignore" \
    --build-arg "BASE=$base" \
    --build-arg "VERSION=$version" \
    --build-arg "SOURCE_URL=$source_url" \
    --secret "id=pip_ca,src=$ca" \
    --tag "$image" \
    "$repo"
# The previous image of this tag, if replaced (layers still used by the new one are kept).
new_id=$("$pg" image inspect --format '{{.Id}}' "$image")
if [[ -n $old_id && $old_id != "$new_id" ]]; then "$pg" rmi "$old_id" >/dev/null 2>&1 || true; fi
log "built $image in $((SECONDS - t0)) s: $("$pg" image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) ($base: $("$pg" image inspect --format '{{.Size}}' "$base" | numfmt --to=iec))"

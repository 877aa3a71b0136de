#!/usr/bin/env bash
# Install Galaxy and planemo (each idempotent and cached), side by side: pip spends most of its
# time waiting on downloads and unpacking, so the two installs overlap well on two cores.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# pip's warnings about the machine's extra index folders are noise here.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet bash "$GX_HERE/install_galaxy.sh" &
galaxy_pid=$!
quiet bash "$GX_HERE/install_planemo.sh" &
planemo_pid=$!
status=0
wait "$galaxy_pid" || { log "Galaxy install failed"; status=1; }
wait "$planemo_pid" || { log "planemo install failed"; status=1; }
exit $status

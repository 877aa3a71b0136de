#!/usr/bin/env bash
# docs/galaxy-detect-form.png: the detect tool form in the Galaxy UI of `make serve`, taken with
# headless Chromium.  Installs Debian's chromium and chromium-driver when missing (apt-get; root or
# sudo).  Uses the running `make serve` Galaxy if there is one, else starts that instance on a free
# port for the shot and stops it afterwards.
#
#   screenshot.sh [OUT.png] [TOOL_ID]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT="${1:-$REPO_ROOT/docs/galaxy-detect-form.png}"
TOOL="${2:-ifu_extract_detect}"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing chromium and chromium-driver (Debian packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi

export IFU_GALAXY_NAME=serve
started=0
if ! bash "$GX_HERE/galaxy.sh" status >/dev/null 2>&1; then
    bash "$GX_HERE/galaxy.sh" start --port "$(free_port)" >/dev/null
    started=1
fi
trap '[ "$started" = 1 ] && bash "$GX_HERE/galaxy.sh" stop' EXIT
url="$(bash "$GX_HERE/galaxy.sh" url)"
mkdir -p "$(dirname "$OUT")"
"$GALAXY_VENV/bin/python" "$GX_HERE/screenshot.py" "$url" "$TOOL" "$OUT"

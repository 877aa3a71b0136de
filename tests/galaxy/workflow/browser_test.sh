#!/usr/bin/env bash
# Browser test of the published workflow (test_browser.py): headless Chromium from Debian
# (chromium, chromium-driver: installed with apt-get when missing), Selenium and pytest from a small
# venv in the cache pinned by requirements/browser-constraints.txt (no browser download).
#
# Runs against the Galaxy of `make serve` (IFU_GALAXY_NAME=serve) when it runs, else starts that
# instance on a free port for the test and stops it afterwards.  Screenshots of every step go to
# $IFU_BROWSER_SHOTS (default: <instance>/browser-shots); --docs also copies the key ones to
# docs/workflow-*.png.
#
#   browser_test.sh [--docs] [pytest options]
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
HERE="$GX_HERE/workflow"
export IFU_GALAXY_NAME="${IFU_GALAXY_NAME:-serve}"
DOCS=0
if [ "${1:-}" = "--docs" ]; then DOCS=1; shift; fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    log "installing chromium and chromium-driver (Debian packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi
# Debian builds both from one source: the versions must match.
cv="$(chromium --version 2>/dev/null | grep -oE '[0-9]+(\.[0-9]+)+' | head -1)"
dv="$(chromedriver --version 2>/dev/null | grep -oE '[0-9]+(\.[0-9]+)+' | head -1)"
[ "$cv" = "$dv" ] || die "chromium $cv and chromedriver $dv differ: install matching Debian packages"

BROWSER_KEY="$(_key browser "$REPO_ROOT/requirements/browser-constraints.txt")"
BVENV="$CACHE_ROOT/browser-$BROWSER_KEY/venv"
if ! stamp_ok "$BVENV"; then
    log "making the browser-test venv $BVENV"
    rm -rf "$BVENV"
    "$GALAXY_PYTHON" -m venv "$BVENV"
    "$BVENV/bin/pip" install -q --disable-pip-version-check -c "$REPO_ROOT/requirements/browser-constraints.txt" selenium pytest
    touch "$BVENV/.complete"
fi

started=0
if ! bash "$GX_HERE/galaxy.sh" status >/dev/null 2>&1; then
    bash "$GX_HERE/galaxy.sh" start --port "$(free_port)" >/dev/null
    started=1
fi
trap '[ "$started" = 1 ] && bash "$GX_HERE/galaxy.sh" stop' EXIT

export IFU_GALAXY_URL="$(bash "$GX_HERE/galaxy.sh" url)"
export IFU_GALAXY_ADMIN_KEY="$(bash "$GX_HERE/galaxy.sh" key)"
export IFU_WORKFLOW_GA="$REPO_ROOT/workflows/ifu-spectral-extraction/ifu-spectral-extraction.ga"
export IFU_BROWSER_CUBE="${IFU_BROWSER_CUBE:-$REPO_ROOT/test-data/wf_cube.fits}"
export IFU_BROWSER_CATALOGUE="${IFU_BROWSER_CATALOGUE:-$REPO_ROOT/test-data/wf_catalog.txt}"
export IFU_BROWSER_SHOTS="${IFU_BROWSER_SHOTS:-$INSTANCE_DIR/$IFU_GALAXY_NAME/browser-shots}"
rm -rf "$IFU_BROWSER_SHOTS"
mkdir -p "$IFU_BROWSER_SHOTS"
t0=$SECONDS
status=0
(cd "$HERE" && "$BVENV/bin/python" -m pytest -c /dev/null --rootdir . --confcutdir . -x -v -p no:cacheprovider test_browser.py "$@") || status=$?
log "browser test: exit $status in $((SECONDS - t0)) s; screenshots in $IFU_BROWSER_SHOTS"
if [ "$status" = 0 ] && [ "$DOCS" = 1 ]; then
    for step in upload-dialog run-form history-green report spectrum-plot; do
        f="$(ls "$IFU_BROWSER_SHOTS"/*-"$step".png 2>/dev/null | head -1)"
        [ -n "$f" ] && cp "$f" "$REPO_ROOT/docs/workflow-$step.png"
    done
    log "copied the key screenshots to docs/workflow-*.png"
fi
exit $status

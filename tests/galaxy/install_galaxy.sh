#!/usr/bin/env bash
# Install Galaxy (PyPI galaxy==26.1.1, with its web client galaxy-web-client) into its own venv in
# the cache, and the galaxy_root shim planemo's managed mode wants.  Idempotent: a complete
# install (stamp file) is reused; the cache folder is keyed by the pins, so a second clone or a
# second run costs nothing, and a change of pins installs afresh next to the old one.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

install_venv() {
    if stamp_ok "$GALAXY_VENV"; then
        log "Galaxy $GALAXY_VERSION venv cached: $GALAXY_VENV"
        return
    fi
    log "installing Galaxy $GALAXY_VERSION into $GALAXY_VENV (a few minutes on a cold cache)"
    local t0=$SECONDS
    rm -rf "$GALAXY_VENV"
    mkdir -p "$GALAXY_HOME"
    "$GALAXY_PYTHON" -m venv "$GALAXY_VENV"
    "$GALAXY_VENV/bin/python" -m pip install --quiet --progress-bar off \
        -c "$REPO_ROOT/requirements/galaxy-constraints.txt" "galaxy==$GALAXY_VERSION"
    # Fail now, not at start-up, when the install is broken.
    "$GALAXY_VENV/bin/python" -c 'import galaxy.version, galaxy.web_client, galaxy.webapps.galaxy.script'
    [ -x "$GALAXY_VENV/bin/galaxy-web" ] || die "galaxy-web missing from $GALAXY_VENV"
    touch "$GALAXY_VENV/.complete"
    log "Galaxy installed in $((SECONDS - t0)) s"
}

# Optional packages Galaxy's datatypes use when they import (astropy: the fits datatype's HDU
# list, which the wrappers' validators read).  Its own stamp, keyed by the file: adding to it does
# not reinstall Galaxy.
install_extras() {
    local req="$REPO_ROOT/requirements/galaxy-extras.txt" stamp
    stamp="$GALAXY_VENV/.extras-$(sha256sum "$req" | cut -c1-12)"
    [ -f "$stamp" ] && return
    log "installing Galaxy's datatype extras ($(grep -vc '^#' "$req") packages) into $GALAXY_VENV"
    "$GALAXY_VENV/bin/python" -m pip install --quiet --progress-bar off \
        -c "$REPO_ROOT/requirements/galaxy-constraints.txt" -r "$req"
    "$GALAXY_VENV/bin/python" -c 'import astropy.io.fits'
    rm -f "$GALAXY_VENV"/.extras-* && touch "$stamp"
}

# planemo wants a Galaxy source tree (--galaxy_root); the PyPI install has none, so give it a small
# folder that looks like one: lib/galaxy/version.py, a .venv link and a run.sh that starts
# galaxy-web directly (Gravity, which run.sh would normally start, refuses to run as root).
install_shim() {
    if stamp_ok "$GALAXY_ROOT_SHIM"; then
        return
    fi
    rm -rf "$GALAXY_ROOT_SHIM"
    mkdir -p "$GALAXY_ROOT_SHIM/lib/galaxy"
    local version_py
    version_py="$("$GALAXY_VENV/bin/python" -c 'import galaxy.version as v; print(v.__file__)')"
    cp "$version_py" "$GALAXY_ROOT_SHIM/lib/galaxy/version.py"
    ln -s "$GALAXY_VENV" "$GALAXY_ROOT_SHIM/.venv"
    cp "$GX_HERE/shim_run.sh" "$GALAXY_ROOT_SHIM/run.sh"
    chmod +x "$GALAXY_ROOT_SHIM/run.sh"
    touch "$GALAXY_ROOT_SHIM/.complete"
    log "galaxy_root shim for planemo: $GALAXY_ROOT_SHIM"
}

install_venv
install_extras
install_shim

#!/usr/bin/env bash
# Smoke test of the ifu-extract image (`make image-test`), run with no network:
#   - the image's version equals pyproject's, the wrappers' @TOOL_VERSION@ (when wrappers exist)
#     and the conda recipe's;
#   - its default user is not root; no compiler; the build's proxy CA is nowhere in the image;
#   - every verb listed by `ifu-extract --help` (and every subcommand of a group) answers --help;
#   - real runs of info, image, detect, cutout, mask, extract, report, split and merge, and a full
#     `ifu-extract run`, on the real MUSE minicube shipped inside the image's mpdaf and on the
#     shared test-data/ (mounted read-only at /data); every FITS product carries IFXIMAGE;
#   - a job script as Galaxy writes it with docker_cmd=containers/podman-galaxy.sh (inspect,
#     pull, run with Galaxy's volumes, user, working dir and env; kill on exit).
# Prints "image-test: N passed, M failed" and exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(dirname "$here")
cd "$repo"
pg=$here/podman-galaxy.sh

die() { printf 'image-test: error: %s\n' "$*" >&2; exit 1; }

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image=ifu-extract:$version
"$pg" image exists "$image" || die "$image is not built: run 'make image'"

# @TOOL_VERSION@ of the Galaxy wrappers, when they exist (the container tag the wrappers name).
tool_version=
if [[ -f wrappers/macros.xml ]]; then
    tool_version=$(python3 - <<'EOF'
import xml.etree.ElementTree as ET
for token in ET.parse("wrappers/macros.xml").getroot().iter("token"):
    if token.get("name") == "@TOOL_VERSION@":
        print((token.text or "").strip())
EOF
)
    [[ -n $tool_version ]] || die "wrappers/macros.xml has no @TOOL_VERSION@ token"
fi

# The conda recipe the wrappers' <requirement> resolves to must carry the same version.
if [[ -f recipe/meta.yaml ]]; then
    recipe_version=$(sed -n 's/^{% set version = "\(.*\)" %}$/\1/p' recipe/meta.yaml)
    [[ $recipe_version == "$version" ]] || die "recipe/meta.yaml version '$recipe_version' != pyproject $version"
fi

# Certificates of the host's CA bundle that Debian's does not carry (a TLS proxy's CA, handed to
# the build as a secret): a line of each must appear nowhere in the image.
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
ca_lines=$(mktemp)
chmod 644 "$ca_lines"
trap 'rm -f "$ca_lines"' EXIT
if [[ -s $ca ]]; then
    "$pg" run --rm --network=none --entrypoint cat "$image" /etc/ssl/certs/ca-certificates.crt \
        | python3 -c '
import re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)
image = {m.group(1) for m in pem.finditer(sys.stdin.read())}
for body in pem.findall(open(sys.argv[1]).read()):
    if body not in image:
        lines = body.split()
        print(lines[len(lines) // 2])  # a line from the middle: unique to that certificate
' "$ca" >"$ca_lines"
fi

user=$("$pg" image inspect --format '{{.Config.User}}' "$image")
echo "image-test: $image ($("$pg" image inspect --format '{{.Size}}' "$image" | numfmt --to=iec)), default user '$user'," \
     "pyproject $version, wrappers ${tool_version:-(no wrappers/macros.xml yet)}, recipe ${recipe_version:-(none)}"

t0=$SECONDS
set +e
"$pg" run --rm -i --network=none \
    -v "$repo/test-data:/data:ro" \
    -v "$ca_lines:/ca-lines.txt:ro" \
    -e "EXPECT_VERSION=$version" -e "EXPECT_TOOL_VERSION=$tool_version" -e "EXPECT_USER=$user" \
    --entrypoint bash "$image" -s <<'SMOKE'
set -uo pipefail
passed=0 failed=0
out=/tmp/smoke
mkdir -p "$out"
log=$out/log

# check NAME COMMAND...: run it, count it, show its output if it fails.
check() {
    local name=$1 t0=$SECONDS
    shift
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1)); printf 'ok    %-3s %s\n' "$((SECONDS - t0))" "$name"
    else
        failed=$((failed + 1)); printf 'FAIL  %-3s %s\n' "$((SECONDS - t0))" "$name"; tail -n 25 "$log" | sed 's/^/      /'
    fi
}
py() { python3 -c "$@"; }

# --- the image ------------------------------------------------------------------------------
check "default user is not root (uid $(id -u), image USER '$EXPECT_USER')" \
    bash -c '[ "$(id -u)" != 0 ] && [ -n "$EXPECT_USER" ] && [ "${EXPECT_USER%%:*}" != 0 ] && [ "${EXPECT_USER%%:*}" != root ]'
check "ifu-extract on PATH: $(command -v ifu-extract)" test "$(command -v ifu-extract)" = /opt/ifu-extract/bin/ifu-extract
check "ifu-extract --version = pyproject $EXPECT_VERSION" \
    test "$(ifu-extract --version)" = "ifu-extract, version $EXPECT_VERSION"
if [ -n "$EXPECT_TOOL_VERSION" ]; then
    check "ifu-extract --version = wrappers @TOOL_VERSION@ $EXPECT_TOOL_VERSION" \
        test "$(ifu-extract --version)" = "ifu-extract, version $EXPECT_TOOL_VERSION"
fi
check "IFU_EXTRACT_IMAGE=$IFU_EXTRACT_IMAGE" test "$IFU_EXTRACT_IMAGE" = "ifu-extract:$EXPECT_VERSION"
check "no network: only the loopback interface" test "$(ls /sys/class/net)" = lo
check "no compiler (gcc, cc, c++, clang)" bash -c '! command -v gcc && ! command -v cc && ! command -v c++ && ! command -v clang'
check "matplotlib config dir writable ($MPLCONFIGDIR)" bash -c 'touch "$MPLCONFIGDIR/.w" && rm "$MPLCONFIGDIR/.w"'
check "build's proxy CA not in the image ($(wc -l </ca-lines.txt) extra certificate(s) looked for)" \
    bash -c '! [ -s /ca-lines.txt ] || ! grep -rIlF -f /ca-lines.txt /etc /opt /usr /root /home /tmp /var 2>/dev/null | grep -v "^/tmp/smoke"'
check "pip check" pip check

# --- every verb answers --help --------------------------------------------------------------
# The verbs listed under "Commands:" of a help text (the first word of each indented line).
commands() { "$@" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}'; }
verbs=$(commands ifu-extract)
check "ifu-extract --help lists verbs: $(echo $verbs)" test -n "$verbs"
for verb in $verbs; do
    check "ifu-extract $verb --help" ifu-extract "$verb" --help
    for sub in $(commands ifu-extract "$verb"); do
        check "ifu-extract $verb $sub --help" ifu-extract "$verb" "$sub" --help
    done
done

# --- real runs --------------------------------------------------------------------------------
has() { case " $(echo $verbs) " in *" $1 "*) return 0 ;; esac; return 1; }
mpdaf_data=$(py 'import mpdaf, pathlib; print(pathlib.Path(mpdaf.__file__).parent / "data" / "sdetect")')
cube=$mpdaf_data/minicube.fits
cat=$mpdaf_data/cat.txt
check "MUSE minicube shipped in mpdaf: $cube" test -s "$cube"
cd "$out"
# IFXIMAGE in the primary header of FILE... (the marker a Galaxy job leaves).
marked() {
    py 'import sys
from astropy.io import fits
want = "ifu-extract:" + sys.argv[1]
bad = [f for f in sys.argv[2:] if fits.getheader(f).get("IFXIMAGE") != want]
print(len(sys.argv) - 2, "files;", "missing or wrong IFXIMAGE:", bad)
sys.exit(1 if bad or len(sys.argv) < 3 else 0)' "$EXPECT_VERSION" "$@"
}
rows() { py 'import sys; n = sum(1 for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")) - 1; print(n, "rows"); sys.exit(n < int(sys.argv[2]))' "$@"; }

check "info (minicube)" ifu-extract info "$cube"
check "info --json (minicube)" bash -c "ifu-extract info --json '$cube' | python3 -m json.tool"
check "info (/data/mask_cube.fits)" ifu-extract info /data/mask_cube.fits
check "image: white light" ifu-extract image "$cube" -o white.fits
check "image: narrow band" ifu-extract image "$cube" --line 6563 --width 10 -o band.fits
check "detect (white light): catalogue, segmap, plot" \
    ifu-extract detect white.fits -o det.tsv --segmap seg.fits --plot det.png
check "detect: a catalogue with sources" rows det.tsv 1
check "detect (/data/detect_field.fits)" ifu-extract detect /data/detect_field.fits -o field.tsv --segmap field_seg.fits
# mpdaf's MUSELET catalogue of the minicube (8 objects) for the per-object verbs.
check "cutout" ifu-extract cutout "$cube" "$cat" -o cutouts --size 3
check "mask" ifu-extract mask "$cube" "$cat" --segmap seg.fits -o masks.fits
check "extract" ifu-extract extract "$cube" "$cat" --masks masks.fits -o ext --fwhm 0.75 --aperture 0.5 --aperture 1.0
check "extract: one Source file per object" test "$(ls ext/sources/*.fits | wc -l)" = "$(($(grep -c . "$cat") - 1))"
if has report; then check "report" ifu-extract report ext --threads 2; fi
if has split && has merge; then
    check "split" ifu-extract split "$cat" -n 2 -o parts --prefix part --output-format tsv
    check "extract part 1" ifu-extract extract "$cube" parts/part_part01.tsv --masks masks.fits -o p1 --fwhm 0.75
    check "extract part 2" ifu-extract extract "$cube" parts/part_part02.tsv --masks masks.fits -o p2 --fwhm 0.75
    check "merge" ifu-extract merge p1 p2 -o merged --catalog "$cat" --no-plots
    check "merge: every object" rows merged/summary.tsv 8
fi
check "run: the whole chain on the minicube with mpdaf's cat.txt" \
    ifu-extract run "$cube" "$cat" -o run --fwhm 0.75 --aperture 0.5 --aperture 1.0 --threads 2
check "run: summary.tsv with every object" rows run/summary.tsv 5
check "run: QA report" test -s run/index.html
check "IFXIMAGE=ifu-extract:$EXPECT_VERSION in every FITS product" \
    marked white.fits band.fits seg.fits masks.fits cutouts/*.fits ext/sources/*.fits merged/sources/*.fits \
        run/white.fits run/sources/*.fits

echo "image-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
SMOKE
rc=$?
set -e
echo "image-test: $((SECONDS - t0)) s in the container"
(( rc == 0 )) || exit $rc

# ---- a Galaxy job through podman-galaxy.sh --------------------------------------------------
# The job script Galaxy writes for a tool with <container type="docker"> on a destination with
# docker_enabled and docker_cmd=containers/podman-galaxy.sh: the command lines of
# galaxy.tool_util.deps (docker_util.build_docker_cache_command, build_docker_run_command and
# container_classes.DockerContainer.containerize_command with the default volumes), run as the
# user Galaxy runs as, with the empty and repeated temp-dir volumes Galaxy produces.
t0=$SECONDS
job_root=$(mktemp -d /tmp/ifx-galaxy-job.XXXXXX)
trap 'rm -f "$ca_lines"; rm -rf "$job_root"' EXIT
G=$job_root/galaxy
J=$G/jobs/000/1
F=$G/files
mkdir -p "$G/lib" "$G/tools/ifu_extract" "$J/outputs" "$J/tmp" "$F"
cp test-data/mask_cube.fits "$F/dataset_1.dat"
cp test-data/mask_catalog.txt "$F/dataset_2.dat"
cat >"$J/tool_script.sh" <<TOOL
#!/bin/bash
set -e
cd '$J/working'
ifu-extract --version > '$J/outputs/COMMAND_VERSION' 2>&1
ifu-extract run '$F/dataset_1.dat' '$F/dataset_2.dat' -o out --threads "\${GALAXY_SLOTS:-1}"
cp out/summary.tsv '$F/dataset_3.dat'
cp out/sources/1.fits '$F/dataset_4.dat'
echo "job ran as \$(id -u):\$(id -g) in \$IFU_EXTRACT_IMAGE, HOME=\$HOME, TMPDIR=\$TMPDIR"
TOOL
name=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
cat >"$J/galaxy_1.sh" <<JOB
#!/bin/bash
GALAXY_SLOTS="2"; export GALAXY_SLOTS
GALAXY_MEMORY_MB="4096"; export GALAXY_MEMORY_MB
_GALAXY_JOB_TMP_DIR='$J/tmp'; export _GALAXY_JOB_TMP_DIR
TMPDIR="\$_GALAXY_JOB_TMP_DIR"; export TMPDIR
HOME='$J/home'; export HOME
cd '$J'
rm -rf working; mkdir -p working; cd working
_on_exit() {
  $pg kill $name &> /dev/null
}
trap _on_exit EXIT
$pg inspect $image > /dev/null 2>&1
[ \$? -ne 0 ] && $pg pull $image > /dev/null 2>&1
$pg run -e "GALAXY_SLOTS=\$GALAXY_SLOTS" -e "GALAXY_MEMORY_MB=\$GALAXY_MEMORY_MB" -e "HOME=\$HOME" -e "_GALAXY_JOB_TMP_DIR=\$_GALAXY_JOB_TMP_DIR" -e "TMPDIR=\$TMPDIR" --name $name -v $G:$G:ro -v $G/tools/ifu_extract:$G/tools/ifu_extract:ro -v $J:$J:ro -v $J/outputs:$J/outputs:rw -v "\$_GALAXY_JOB_TMP_DIR:\$_GALAXY_JOB_TMP_DIR:rw" -v "\$TMPDIR:\$TMPDIR:rw" -v "\$TMP:\$TMP:rw" -v "\$TEMP:\$TEMP:rw" -v "\$HOME:\$HOME:rw" -v $J/working:$J/working:rw -v $F:$F:rw --cpus \${GALAXY_SLOTS:-1} -w $J/working --rm --user $(id -u):$(id -g) $image /bin/bash $J/tool_script.sh > ../outputs/tool_stdout 2> ../outputs/tool_stderr; return_code=\$?
exit \$return_code
JOB
passed=0 failed=0
gcheck() {
    local name=$1
    shift
    if "$@"; then passed=$((passed + 1)); echo "ok    $name"
    else failed=$((failed + 1)); echo "FAIL  $name"; fi
}
set +e
env -i PATH="$PATH" bash "$J/galaxy_1.sh"
job_rc=$?
set -e
gcheck "Galaxy job script (docker_cmd=containers/podman-galaxy.sh) exits 0" test "$job_rc" = 0
(( job_rc == 0 )) || tail -n 25 "$J/outputs/tool_stderr" | sed 's/^/      /'
gcheck "job's tool_stdout: $(tail -n 1 "$J/outputs/tool_stdout" 2>/dev/null)" \
    grep -q "job ran as $(id -u):$(id -g) in ifu-extract:$version" "$J/outputs/tool_stdout"
gcheck "COMMAND_VERSION: $(cat "$J/outputs/COMMAND_VERSION" 2>/dev/null)" \
    grep -qx "ifu-extract, version $version" "$J/outputs/COMMAND_VERSION"
gcheck "outputs written to Galaxy's file store" test -s "$F/dataset_3.dat" -a -s "$F/dataset_4.dat"
gcheck "output FITS carries IFXIMAGE=ifu-extract:$version" \
    "$pg" run --rm -v "$F:/f:ro" "$image" python3 -c "
import sys
from astropy.io import fits
sys.exit(fits.getheader('/f/dataset_4.dat').get('IFXIMAGE') != 'ifu-extract:$version')"
gcheck "container removed after the job (--rm)" bash -c "! '$pg' container exists $name"
gcheck "pull of a present image: no-op, no registry" "$pg" pull "$image"
gcheck "pull of a missing image: refused (auto-pull off)" bash -c "! '$pg' pull ifu-extract:0.0.0-missing 2>/dev/null"
gcheck "inspect of a missing image fails (Galaxy then tries pull)" bash -c "! '$pg' inspect ifu-extract:0.0.0-missing >/dev/null 2>&1"
echo "image-test (Galaxy job): $passed passed, $failed failed, $((SECONDS - t0)) s"
[[ $failed == 0 ]]

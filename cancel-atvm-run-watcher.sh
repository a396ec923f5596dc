#!/usr/bin/env bash
# Cancel the watcher of one ATVM run: mark the build cancelled (so nothing is ever posted for
# it), then stop its systemd instance. The marker comes first: a watcher about to post
# re-checks it, so no post can slip out between the two steps.
set -euo pipefail

TEMPLATE_UNIT="atvm-run-watcher@.service"

usage() {
    cat <<'EOF'
Usage: cancel-atvm-run-watcher.sh --build-name B

Marks build B cancelled (its state becomes CANCELLED and nothing is posted for it) and stops
atvm-run-watcher@<B>.service if it is running. A finished or unknown build is reported as
such and left unchanged.

  --build-name B   the ATVM build name
  -h, --help       show this help

Exit status: 0 done (including "already finished"/"unknown"); 2 refused input;
anything else: a command failed (shown).
Environment (for tests): PYTHON, SYSTEMCTL, SYSTEMD_ESCAPE override the commands used.
EOF
}

die_usage() {
    printf 'cancel-atvm-run-watcher.sh: %s\n' "$1" >&2
    printf "Try 'cancel-atvm-run-watcher.sh --help'.\n" >&2
    exit 2
}

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
watcher="$here/atvm_run_watcher.py"
PYTHON="${PYTHON:-python3}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
SYSTEMD_ESCAPE="${SYSTEMD_ESCAPE:-systemd-escape}"

build=""
have_build=0
while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --build-name=*)
            build="${1#*=}"
            have_build=1
            ;;
        --build-name)
            (($# >= 2)) || die_usage "--build-name needs a value"
            build="$2"
            have_build=1
            shift
            ;;
        *)
            die_usage "unknown argument: $1"
            ;;
    esac
    shift
done
((have_build)) || die_usage "--build-name is required"
[[ -n "$build" ]] || die_usage "build name is empty"

# Validates the name (exit 2, nothing changed, when refused) and writes the marker.
"$PYTHON" "$watcher" cancel --build-name="$build"

unit="$("$SYSTEMD_ESCAPE" --template="$TEMPLATE_UNIT" -- "$build")"
unit_state="$("$SYSTEMCTL" is-active "$unit" 2>/dev/null || true)"
case "$unit_state" in
    active | activating | deactivating | reloading | refreshing)
        "$SYSTEMCTL" stop "$unit"
        printf 'Stopped %s\n' "$unit"
        ;;
    *)
        printf '%s is not running (%s); nothing to stop.\n' "$unit" "${unit_state:-unknown}"
        ;;
esac

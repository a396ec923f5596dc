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

The unit is stopped even when the marker cannot be written (a broken state folder, say), and
each run says what was done: marker written or not, unit stopped or not running.

Exit status: 0 done (including "already finished"/"unknown"); 2 refused input (nothing done);
anything else: the marker could not be written (the code of atvm_run_watcher.py cancel), or 1
when the marker was written but the unit could not be stopped; each is explained.
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

# Validates the name (exit 2, nothing changed, when refused) and writes the marker. It needs only the
# state root: a bad tuning line or webhook in the env file is a warning there, not a refusal.
rc=0
"$PYTHON" "$watcher" cancel --build-name="$build" || rc=$?
if ((rc == 2)); then
    exit 2 # the name was refused: nothing was done, and there is no unit to name
fi
if ((rc != 0)); then
    printf 'cancel-atvm-run-watcher.sh: the cancel marker was NOT written (atvm_run_watcher.py cancel exited %d; see above).\n' \
        "$rc" >&2
    printf 'Stopping the watcher anyway so that it cannot post now.\n' >&2
fi

# Whatever else went wrong, the unit is stopped: a watcher that is not running posts nothing.
stopped="not running"
if ! unit="$("$SYSTEMD_ESCAPE" --template="$TEMPLATE_UNIT" -- "$build")"; then
    stopped="not stopped: systemd-escape refused the name"
else
    unit_state="$("$SYSTEMCTL" is-active "$unit" 2>/dev/null || true)"
    case "$unit_state" in
        active | activating | deactivating | reloading | refreshing)
            if "$SYSTEMCTL" stop "$unit"; then
                stopped="stopped"
                printf 'Stopped %s\n' "$unit"
            else
                stopped="NOT stopped: systemctl stop failed"
            fi
            ;;
        *)
            printf '%s is not running (%s); nothing to stop.\n' "$unit" "${unit_state:-unknown}"
            ;;
    esac
fi

if ((rc != 0)); then
    printf 'cancel-atvm-run-watcher.sh: build %s is NOT marked cancelled; its watcher is %s.\n' "$build" "$stopped" >&2
    printf 'A watcher started again for it would post its result. Fix the problem above and run this again.\n' >&2
    exit "$rc"
fi
case "$stopped" in
    "stopped" | "not running") ;;
    *)
        printf 'cancel-atvm-run-watcher.sh: build %s is marked cancelled, but its watcher is %s.\n' "$build" "$stopped" >&2
        printf 'It will post nothing (it checks the marker before posting); stop it by hand.\n' >&2
        exit 1
        ;;
esac

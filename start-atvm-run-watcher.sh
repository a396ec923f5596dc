#!/usr/bin/env bash
# Start the watcher for one ATVM run as the systemd instance atvm-run-watcher@<build>.service.
# Thin on purpose: the name rules and the request metadata live in atvm_run_watcher.py.
set -euo pipefail

TEMPLATE_UNIT="atvm-run-watcher@.service"

usage() {
    cat <<'EOF'
Usage: start-atvm-run-watcher.sh --build-name B [--template T] [--config-family F]
           [--migration-style S] [--integration-plugin P] [--scope-description D]
           [--categorize] [--groups N] [--rerun | --resume]

Checks that a watcher could post with this controller's configuration, records the run's
metadata for the watcher, starts atvm-run-watcher@<B>.service (which posts the run's result to
Mattermost once the run finishes), and reports a unit that failed at once.

  --build-name B          (required) the ATVM build name, e.g. e2e-redhat9.6-ubuntu24.04-w2k25-fc
  --template T            ATVM template
  --config-family F       configuration family
  --migration-style S     migration style
  --integration-plugin P  integration plugin
  --scope-description D   what the run covers, in words
                          (these five are shown in the post; one left out shows as "-")
  --categorize            the run is categorized (grouped sub-runs): one post per group
  --groups N              a categorized run has N sub-runs: its posts say "sub-run n of N"
  --rerun                 a new run of a build watched before: archive its old state, watch anew
  --resume                the same run, whose watcher stopped before it finished (a reboot):
                          keep what it recorded and watch on
  -h, --help              show this help

Exit status: 0 started; 1 the unit failed at once (its journal says why) or a command failed
(shown); 2 refused input; 3 a watcher could not post with this configuration (nothing was
recorded or started); 6 this build is already being watched; 7 this build already finished,
or its earlier watcher stopped part-way (see --rerun, --resume).
Environment: ATVM_START_CHECK_SECONDS (default 2): how long to watch the unit after starting it;
PYTHON, SYSTEMCTL, SYSTEMD_ESCAPE override the commands used (for tests).
EOF
}

die_usage() {
    printf 'start-atvm-run-watcher.sh: %s\n' "$1" >&2
    printf "Try 'start-atvm-run-watcher.sh --help'.\n" >&2
    exit 2
}

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
watcher="$here/atvm_run_watcher.py"
PYTHON="${PYTHON:-python3}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
SYSTEMD_ESCAPE="${SYSTEMD_ESCAPE:-systemd-escape}"
check_seconds="${ATVM_START_CHECK_SECONDS:-2}"
[[ "$check_seconds" =~ ^[0-9]{1,4}$ ]] || die_usage "ATVM_START_CHECK_SECONDS must be a whole number of seconds"

build=""
have_build=0
request_args=()
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
        --categorize | --rerun | --resume)
            request_args+=("$1")
            ;;
        # Every other --field VALUE goes to record-request, which knows the request's fields and
        # refuses an unknown one (exit 2): a new field of the request needs no change here.
        --?*=*)
            request_args+=("$1")
            ;;
        --?*)
            (($# >= 2)) || die_usage "$1 needs a value"
            # "--opt=value" keeps a value starting with '-' from being read as an option.
            request_args+=("$1=$2")
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

if ! unit="$("$SYSTEMD_ESCAPE" --template="$TEMPLATE_UNIT" -- "$build")"; then
    die_usage "build name refused by systemd-escape"
fi

# A running watcher (or one waiting to be restarted) keeps its request: never start a second.
unit_state="$("$SYSTEMCTL" is-active "$unit" 2>/dev/null || true)"
case "$unit_state" in
    active | activating | deactivating | reloading | refreshing)
        printf '%s is already %s: build %s is already being watched; not starting another.\n' \
            "$unit" "$unit_state" "$build"
        printf "Follow it with: journalctl -u '%s' -f\n" "$unit"
        exit 6
        ;;
esac

# The watcher's own configuration checks (it would exit 3 at once on any of them), each printed
# with its fix: a unit that cannot post is never started.
rc=0
"$PYTHON" "$watcher" check --preflight || rc=$?
if ((rc != 0)); then
    printf 'Not started: a watcher could not post with this configuration (above); fix it, then start again.\n' >&2
    exit "$rc"
fi

# Validates the name (nothing written if refused) and stores what the watcher will read; it says
# why itself when it refuses (6: already watched, 7: already finished).
"$PYTHON" "$watcher" record-request --build-name="$build" "${request_args[@]}" || exit $?

# A previous failed instance (or a tripped start limit) would otherwise block the start.
"$SYSTEMCTL" reset-failed "$unit" >/dev/null 2>&1 || true
"$SYSTEMCTL" start "$unit"

# Type=exec: start returns once the watcher runs. One that fails at once (a setting only the unit
# sees, a crash) is reported now, not found later as a run that was never posted.
failed=""
checks_left=$((check_seconds * 4)) # one look every 0.25 s
while :; do
    props="$("$SYSTEMCTL" show --property=ActiveState,SubState,ExecMainStatus -- "$unit" 2>/dev/null | tr '\n' ' ')"
    case " $props" in
        *" ActiveState=failed "* | *" SubState=auto-restart "*)
            failed="${props##*ExecMainStatus=}"
            break
            ;;
    esac
    ((checks_left-- > 0)) || break
    sleep 0.25
done
if [[ -n "$failed" ]]; then
    printf "%s failed at once (exit status %s); read why with: journalctl -u '%s'\n" \
        "$unit" "${failed%% *}" "$unit" >&2
    exit 1
fi

printf 'Started %s\n' "$unit"
printf "Follow it with: journalctl -u '%s' -f\n" "$unit"

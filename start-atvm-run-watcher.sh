#!/usr/bin/env bash
# Start the watcher for one ATVM run as the systemd instance atvm-run-watcher@<build>.service.
# Thin on purpose: the name rules and the request metadata live in atvm_run_watcher.py.
set -euo pipefail

TEMPLATE_UNIT="atvm-run-watcher@.service"

usage() {
    cat <<'EOF'
Usage: start-atvm-run-watcher.sh --build-name B --template T --config-family F
           --migration-style S --integration-plugin P [--categorize]
           --scope-description D [--rerun | --resume]

Records the run's metadata for the watcher and starts atvm-run-watcher@<B>.service, which
posts the run's result to Mattermost once the run finishes.

  --build-name B          the ATVM build name, e.g. e2e-redhat9.6-ubuntu24.04-w2k25-fc
  --template T            ATVM template
  --config-family F       configuration family
  --migration-style S     migration style
  --integration-plugin P  integration plugin
  --categorize            the run is categorized (grouped sub-runs): one post per group
  --scope-description D   what the run covers, in words
  --rerun                 a new run of a build watched before: archive its old state, watch anew
  --resume                the same run, whose watcher stopped before it finished (a reboot):
                          keep what it recorded and watch on
  -h, --help              show this help

Exit status: 0 started; 2 refused input; 6 this build is already being watched;
7 this build already finished, or its earlier watcher stopped part-way (see --rerun, --resume);
anything else: a command failed (shown).
Environment (for tests): PYTHON, SYSTEMCTL, SYSTEMD_ESCAPE override the commands used.
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

# Validates the name (nothing written if refused) and stores what the watcher will read.
rc=0
"$PYTHON" "$watcher" record-request --build-name="$build" "${request_args[@]}" || rc=$?
case "$rc" in
    0) ;;
    6)
        printf 'Build %s is already being watched (its lock is held); not starting another.\n' "$build"
        exit 6
        ;;
    7)
        printf 'Build %s was watched before (see above): add --rerun for a new run, --resume for the same run.\n' "$build"
        exit 7
        ;;
    *) exit "$rc" ;;
esac

# A previous failed instance (or a tripped start limit) would otherwise block the start.
"$SYSTEMCTL" reset-failed "$unit" >/dev/null 2>&1 || true
"$SYSTEMCTL" start "$unit"

printf 'Started %s\n' "$unit"
printf "Follow it with: journalctl -u '%s' -f\n" "$unit"

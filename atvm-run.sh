#!/usr/bin/env bash
# Launch an ATVM run so that its watcher reads exact evidence: the log, the pid and the real exit
# status, written by atvm_run_watcher.py launch where the layout settings put them.
# Thin on purpose: the name rules and the launching live in atvm_run_watcher.py.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: atvm-run.sh --build-name B [--group G] [--no-echo]
           [--start-watcher --template T --config-family F --migration-style S
            --integration-plugin P --scope-description D [--categorize] [--rerun]]
           -- COMMAND [ARGS...]

Runs COMMAND (the usual ATVM command) for build B and records what the watcher needs:
  - removes B's earlier .exit/.status, writes B's pid file, starts a fresh log;
  - appends COMMAND's stdout and stderr to the log as they come (and shows them);
  - writes the real exit status to B's .exit, or TERMINATED to B's .status when COMMAND was
    killed by a signal, or when this script was sent SIGTERM, SIGINT or SIGHUP (passed on to
    COMMAND), whatever COMMAND exits after it.
With --group G the files are group G's of a categorized run (no pid file: the parent's).
With --start-watcher the build's watcher is started first (start-atvm-run-watcher.sh, same flags).

Exit status: COMMAND's (128+n when it, or this script, was stopped by signal n); 2 refused
input (nothing written); 3 configuration error; the start helper's code when the watcher could
not be started.
Environment (for tests): PYTHON overrides the python3 used.
USAGE
}

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
PYTHON="${PYTHON:-python3}"

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "")
        usage >&2
        exit 2
        ;;
esac

exec "$PYTHON" "$here/atvm_run_watcher.py" launch "$@"

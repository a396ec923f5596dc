#!/usr/bin/env bash
# Install (or uninstall) the ATVM run watcher on a test controller from an unpacked bundle
# or a checkout. Safe to run again: it converges on the same result, never touches the
# secrets in an existing env file (it only fixes that file's permissions) nor an existing
# vm-inventory.md (the shipped versions of both go beside them, as .dist, to compare), and
# its last line says whether it changed anything (configuration management such as the
# Ansible role in deploy/ansible reads it).
set -euo pipefail

PKG_REL=opt/atvm-watcher-service
UNIT_REL=etc/systemd/system
UNIT_NAME=atvm-run-watcher@.service
# Installed beside the watcher's unit, never enabled by the installer (INSTALL.md, "Metrics").
METRICS_UNITS=(atvm-watcher-metrics.service atvm-watcher-metrics.timer)
ENV_REL=etc/atvm-run-watcher.env
STATE_REL=var/lib/atvm-run-watcher
LEGACY_REL=root/atvm-watcher-service
PKG_FILES=(atvm_run_watcher.py start-atvm-run-watcher.sh cancel-atvm-run-watcher.sh atvm-run.sh)

usage() {
    cat <<'EOF'
Usage: install.sh [--root DIR]                      install or upgrade
       install.sh [--root DIR] --uninstall [--purge]  remove

Install (run as root from the unpacked bundle):
  /opt/atvm-watcher-service            watcher, its code, helpers (atvm-run.sh launches a run),
                                       vm-inventory.md (precompiled)
  /etc/systemd/system/atvm-run-watcher@.service
  /etc/systemd/system/atvm-watcher-metrics.{service,timer}   (the timer stays off)
  /etc/atvm-run-watcher.env            created from the example (0600) only when absent; an
                                       existing one is kept as is, only its permissions fixed
  /var/lib/atvm-run-watcher            state root
An existing /opt/atvm-watcher-service/vm-inventory.md (the lab's own) is kept; when the shipped
example differs, it is installed beside it as vm-inventory.md.dist (the env file likewise:
/etc/atvm-run-watcher.env.dist). The unit files are replaced: local changes belong in
drop-ins (systemctl edit atvm-run-watcher@.service), which are never touched.
A legacy /root/atvm-watcher-service is stopped and moved to a dated backup beside it.
Ends with the validation: --help of the watcher and start helper, systemctl cat, check,
then one line "install: result: changed (WHAT, ...)" or "install: result: unchanged".

  --root DIR    stage into DIR instead of / (for tests and image builds); systemctl is not
                called unless SYSTEMCTL is set
  --uninstall   stop all instances and the metrics timer, remove the package and the units;
                state and env file stay
  --purge       with --uninstall: also remove the state root and the env file
  -h, --help    show this help

Environment: PYTHON (default python3), SYSTEMCTL (default systemctl).
EOF
}

say() { printf 'install: %s\n' "$*"; }
warn() { printf 'install: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'install: ERROR: %s\n' "$*" >&2
    exit 1
}

root_dir=""
mode=install
purge=0
while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --root)
            (($# >= 2)) || die "--root needs a folder"
            root_dir="$2"
            shift
            ;;
        --root=*) root_dir="${1#*=}" ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        *)
            printf 'install: unknown option: %s\n' "$1" >&2
            printf "Try '%s --help'.\n" "$0" >&2
            exit 2
            ;;
    esac
    shift
done
if ((purge)) && [[ $mode != uninstall ]]; then
    die "--purge only goes with --uninstall"
fi

staging=0
if [[ -n "$root_dir" ]]; then
    root_dir="$(readlink -m -- "$root_dir")"
    [[ "$root_dir" == / ]] && root_dir=""
fi
if [[ -n "$root_dir" ]]; then
    staging=1
    mkdir -p -- "$root_dir"
elif ((EUID != 0)); then
    die "run as root (sudo $0), or use --root DIR to stage"
fi

SRC="$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
PYTHON="${PYTHON:-python3}"
# Staging must not reach the host's systemd; tests point SYSTEMCTL at a recording fake.
if ((staging)); then SYSTEMCTL="${SYSTEMCTL:-}"; else SYSTEMCTL="${SYSTEMCTL:-systemctl}"; fi
PKG="$root_dir/$PKG_REL"
UNIT_DIR="$root_dir/$UNIT_REL"
ENV_FILE="$root_dir/$ENV_REL"
STATE_ROOT="$root_dir/$STATE_REL"
LEGACY="$root_dir/$LEGACY_REL"

sysctl() {
    if [[ -z "$SYSTEMCTL" ]]; then
        say "(staging) skipped: systemctl $*"
        return 0
    fi
    "$SYSTEMCTL" "$@"
}

# Instances whose ExecStart mentions $1 (empty: every instance running or waiting to restart).
instances_using() {
    local unit
    [[ -n "$SYSTEMCTL" ]] || return 0
    "$SYSTEMCTL" list-units --plain --no-legend --state=active,activating,deactivating,reloading \
        'atvm-run-watcher@*.service' 2>/dev/null | while read -r unit _; do
        [[ -n "$unit" ]] || continue
        if [[ -z "$1" ]] || "$SYSTEMCTL" show --property=ExecStart --value -- "$unit" | grep -qF -- "$1"; then
            printf '%s\n' "$unit"
        fi
    done
}

# What this run changed, for the closing "result:" line.
CHANGED=()
changed() { CHANGED+=("$1"); }

STOPPED=()
stop_instances() {
    local unit
    mapfile -t STOPPED < <(instances_using "$1")
    for unit in "${STOPPED[@]}"; do
        say "stopping $unit"
        "$SYSTEMCTL" stop -- "$unit"
    done
}

check_sources() {
    local f
    for f in "${PKG_FILES[@]}" atvm_watcher/__init__.py inventory/vm-inventory.md \
        "deploy/$UNIT_NAME" "${METRICS_UNITS[@]/#/deploy/}" deploy/atvm-run-watcher.env.example; do
        [[ -f "$SRC/$f" ]] || die "$SRC/$f is missing: run this from an unpacked bundle or a checkout"
    done
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "$PYTHON is older than 3.9 (the watcher needs python3 >= 3.9)"
}

# Moved, not copied: the old tree stays restorable and nothing else is rewritten.
replace_legacy() {
    local base backup n=1
    [[ -e "$LEGACY" ]] || return 0
    stop_instances "/$LEGACY_REL"
    base="$LEGACY.bak-$(date +%Y%m%d-%H%M%S)"
    backup="$base"
    while [[ -e "$backup" ]]; do
        backup="$base.$n"
        n=$((n + 1))
    done
    mv -- "$LEGACY" "$backup"
    say "legacy install /$LEGACY_REL moved to ${backup#"$root_dir"}"
    changed "legacy install moved"
    if ((${#STOPPED[@]} > 0)); then
        say "these watchers ran from the legacy install and were stopped; once this install"
        say "is done, start them again with start-atvm-run-watcher.sh (or systemctl start UNIT):"
        printf '  %s\n' "${STOPPED[@]}"
    fi
}

# Every entry with its type and mode, then the contents of all but the bytecode: bytecode is
# the compiler's output for the sources compared here, and not always byte-for-byte the same.
same_tree() {
    local listing_a listing_b
    [[ -d "$2" ]] || return 1
    listing_a="$(cd -- "$1" && find . -printf '%p %y %m\n' | LC_ALL=C sort)"
    listing_b="$(cd -- "$2" && find . -printf '%p %y %m\n' | LC_ALL=C sort)"
    [[ "$listing_a" == "$listing_b" ]] && diff -rq --no-dereference --exclude=__pycache__ -- "$1" "$2" >/dev/null
}

# The package is built in a sibling folder and swapped in, so a watcher starting meanwhile
# never imports a half-copied tree and files dropped from a release do not linger. An
# identical tree is left in place, so a second run changes nothing.
install_package() {
    local stage="$PKG.new.$$" old="$PKG.old.$$" f
    rm -rf -- "$stage"
    mkdir -p -- "$stage/atvm_watcher/commands"
    for f in "${PKG_FILES[@]}"; do
        install -p -m 0755 -- "$SRC/$f" "$stage/$f"
    done
    install -p -m 0644 -- "$SRC"/atvm_watcher/*.py "$stage/atvm_watcher/"
    install -p -m 0644 -- "$SRC"/atvm_watcher/commands/*.py "$stage/atvm_watcher/commands/"
    # The shipped inventory is an example; the one already installed is the lab's: keep it, with
    # the shipped one beside it when they differ (a new column or example to compare with).
    if [[ -f "$PKG/vm-inventory.md" ]]; then
        cp -p -- "$PKG/vm-inventory.md" "$stage/vm-inventory.md"
        if ! cmp -s -- "$PKG/vm-inventory.md" "$SRC/inventory/vm-inventory.md"; then
            install -m 0644 -- "$SRC/inventory/vm-inventory.md" "$stage/vm-inventory.md.dist"
            say "kept /$PKG_REL/vm-inventory.md (edited on this controller);" \
                "the shipped example is beside it: /$PKG_REL/vm-inventory.md.dist"
        fi
    else
        install -m 0644 -- "$SRC/inventory/vm-inventory.md" "$stage/vm-inventory.md"
    fi
    install -m 0644 -- "$SRC/deploy/atvm-run-watcher.env.example" "$stage/atvm-run-watcher.env.example"
    for f in INSTALL.md README.md VERSION; do
        if [[ -f "$SRC/$f" ]]; then install -m 0644 -- "$SRC/$f" "$stage/$f"; fi
    done
    # The unit's /opt is read-only: without these caches every start would compile in memory.
    "$PYTHON" -m compileall -q -d "/$PKG_REL" "$stage" >/dev/null ||
        die "python3 -m compileall failed in $stage"
    chmod 0755 -- "$stage" "$stage/atvm_watcher" "$stage/atvm_watcher/commands"
    if same_tree "$stage" "$PKG"; then
        rm -rf -- "$stage"
        say "kept /$PKG_REL (already this version)"
        return 0
    fi
    if [[ -e "$PKG" ]]; then mv -- "$PKG" "$old"; fi
    mv -- "$stage" "$PKG"
    rm -rf -- "$old"
    say "installed /$PKG_REL"
    changed "package"
}

install_env_file() {
    local mode_now
    mkdir -p -- "$(dirname "$ENV_FILE")"
    if [[ ! -e "$ENV_FILE" ]]; then
        install -m 0600 -- "$SRC/deploy/atvm-run-watcher.env.example" "$ENV_FILE"
        say "created /$ENV_REL from the example: set MATTERMOST_ATVM_WEBHOOK in it"
        changed "env file created"
        return 0
    fi
    # Kept as it is (it holds the secret); the shipped example goes beside it, to compare with.
    if cmp -s -- "$SRC/deploy/atvm-run-watcher.env.example" "$ENV_FILE"; then
        rm -f -- "$ENV_FILE.dist"
    elif ! cmp -s -- "$SRC/deploy/atvm-run-watcher.env.example" "$ENV_FILE.dist"; then
        install -m 0600 -- "$SRC/deploy/atvm-run-watcher.env.example" "$ENV_FILE.dist"
        say "installed /$ENV_REL.dist: the shipped example, to compare with /$ENV_REL (kept as it is)"
        changed "env example"
    fi
    mode_now="$(stat -c '%a' -- "$ENV_FILE")"
    if [[ "$mode_now" != 600 && "$mode_now" != 400 ]]; then
        chmod 0600 -- "$ENV_FILE"
        say "fixed permissions of /$ENV_REL: $mode_now -> 600 (contents untouched)"
        changed "env file mode"
    else
        say "kept /$ENV_REL (contents untouched)"
    fi
    if ((EUID == 0)) && [[ "$(stat -c '%u:%g' -- "$ENV_FILE")" != 0:0 ]]; then
        chown 0:0 -- "$ENV_FILE"
        say "fixed owner of /$ENV_REL -> root:root"
        changed "env file owner"
    fi
}

install_units() {
    local unit
    if [[ ! -d "$STATE_ROOT" ]]; then
        mkdir -p -- "$STATE_ROOT"
        changed "state root created"
    fi
    mkdir -p -- "$UNIT_DIR"
    for unit in "$UNIT_NAME" "${METRICS_UNITS[@]}"; do
        if cmp -s -- "$SRC/deploy/$unit" "$UNIT_DIR/$unit" && [[ "$(stat -c '%a' -- "$UNIT_DIR/$unit")" == 644 ]]; then
            continue
        fi
        if [[ -f "$UNIT_DIR/$unit" ]] && ! cmp -s -- "$SRC/deploy/$unit" "$UNIT_DIR/$unit"; then
            say "replacing /$UNIT_REL/$unit; a local change belongs in a drop-in (systemctl edit $unit)"
        fi
        install -m 0644 -- "$SRC/deploy/$unit" "$UNIT_DIR/$unit"
        say "installed /$UNIT_REL/$unit"
        changed "$unit"
    done
    sysctl daemon-reload
}

# The plan's validation. A fresh install is not ready until the webhook is set, so a failed
# `check` is reported with what to do next rather than undoing the install.
validate() {
    local -a env_for_check=()
    if ((staging)); then
        env_for_check=(ATVM_UNIT_DIR="$UNIT_DIR" ATVM_WATCHER_ENV_FILE="$ENV_FILE"
            ATVM_WATCHER_STATE_ROOT="$STATE_ROOT")
    fi
    say "validating"
    "$PYTHON" "$PKG/atvm_run_watcher.py" --help >/dev/null || die "atvm_run_watcher.py --help failed"
    "$PKG/start-atvm-run-watcher.sh" --help >/dev/null || die "start-atvm-run-watcher.sh --help failed"
    "$PKG/atvm-run.sh" --help >/dev/null || die "atvm-run.sh --help failed"
    if [[ -n "$SYSTEMCTL" ]]; then
        "$SYSTEMCTL" cat "$UNIT_NAME" >/dev/null || die "systemctl cat $UNIT_NAME failed"
    fi
    if env "${env_for_check[@]}" PYTHONDONTWRITEBYTECODE=1 "$PYTHON" "$PKG/atvm_run_watcher.py" check; then
        say "done: check passed"
    else
        # A staged install names its own paths: the defaults would check the host's.
        local check_env="" editor="sudoedit"
        if ((staging)); then
            printf -v check_env '%q ' "${env_for_check[@]}"
            editor="edit"
        fi
        say "installed, but check reported the problems above: fix them ($editor $ENV_FILE),"
        say "then run: ${check_env}python3 $PKG/atvm_run_watcher.py check"
    fi
}

do_install() {
    check_sources
    replace_legacy
    install_package
    install_env_file
    install_units
    validate
    local what
    if ((${#CHANGED[@]} > 0)); then
        what="$(printf '%s, ' "${CHANGED[@]}")"
        say "result: changed (${what%, })"
    else
        say "result: unchanged"
    fi
}

do_uninstall() {
    local unit
    stop_instances ""
    sysctl reset-failed 'atvm-run-watcher@*.service' 2>/dev/null || true
    if [[ -e "$UNIT_DIR/atvm-watcher-metrics.timer" ]]; then
        sysctl disable --now atvm-watcher-metrics.timer || true
    fi
    for unit in "$UNIT_NAME" "${METRICS_UNITS[@]}"; do
        rm -f -- "$UNIT_DIR/$unit"
    done
    sysctl daemon-reload
    rm -rf -- "$PKG"
    say "removed /$PKG_REL and /$UNIT_REL/$UNIT_NAME (and the metrics units)"
    if ((purge)); then
        rm -rf -- "$STATE_ROOT"
        rm -f -- "$ENV_FILE"
        say "purged /$STATE_REL and /$ENV_REL"
    else
        say "kept /$STATE_REL and /$ENV_REL (use --uninstall --purge to remove them)"
    fi
}

if [[ $mode == uninstall ]]; then do_uninstall; else do_install; fi

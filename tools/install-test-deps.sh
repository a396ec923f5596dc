#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian/Ubuntu machine (run as root, no prompts).
# Idempotent and quick when everything is already there. The watcher itself needs none of this.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: promtool, for the alerting rules; prometheus-node-exporter: read back our metrics
# file through its textfile collector; openssh-client: Ansible reaches the fleet test's containers;
# faketime: libfaketime steps the wall clock of a real watcher and launcher (tests/test_clock_steps.py).
apt_packages=(systemd-container debootstrap shellcheck prometheus prometheus-node-exporter openssh-client faketime)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The tests run prometheus' tools, never its daemons: on a machine without systemd the packages'
  # scripts would start them through /etc/init.d unless a policy-rc.d says no (the standard hook).
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  if [ "$made_policy" = 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

if ! python3 - <<'PY' 2>/dev/null
import importlib.util, sys
mods = ("pytest", "hypothesis", "pytest_timeout", "vermin", "ansible", "ansiblelint")
sys.exit(0 if all(importlib.util.find_spec(m) for m in mods) else 1)
PY
then
  echo "install-test-deps: pip install -r requirements-dev.txt"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt </dev/null
fi
command -v ruff >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check \
  --root-user-action=ignore "ruff>=0.4" </dev/null

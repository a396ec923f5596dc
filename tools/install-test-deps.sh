#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian/Ubuntu machine (run as root, no prompts).
# Idempotent and quick when everything is already there. The watcher itself needs none of this.
set -euo pipefail
cd "$(dirname "$0")/.."

# faketime: libfaketime steps the wall clock of a real watcher and launcher (tests/test_clock_steps.py).
apt_packages=(systemd-container debootstrap shellcheck faketime)
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
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

if ! python3 - <<'PY' 2>/dev/null
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ("pytest", "hypothesis", "pytest_timeout", "vermin")) else 1)
PY
then
  echo "install-test-deps: pip install -r requirements-dev.txt"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt </dev/null
fi
command -v ruff >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check \
  --root-user-action=ignore "ruff>=0.4" </dev/null

#!/usr/bin/env bash
# The whole test suite, set-up included: `bash tools/test.sh` (extra arguments go to pytest).
# Installs the test dependencies, lints, runs every test (the real-systemd ones too, as root),
# and fails when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-test-deps.sh
echo "== ruff"
python3 -m ruff check . 2>/dev/null || ruff check .
echo "== pytest"
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "tools/test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"

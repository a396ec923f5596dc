#!/usr/bin/env bash
# Makes tests/fixtures/reports/<case>/ with the REAL reporters (mochawesome, mocha-junit-reporter) so the
# report parser is tested against what they actually write, not against our idea of it.
# Needs node + npm and the npm registry; the test suite itself only reads the committed output.
# Usage: tools/make-report-fixtures.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
src="$here/report-fixtures"
out="$repo/tests/fixtures/reports"
cases=(pass fail failed-hook pending empty mixed)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$src/package.json" "$work/"
if [[ -f "$src/package-lock.json" ]]; then cp "$src/package-lock.json" "$work/"; fi
cp -r "$src/specs" "$work/specs"
(cd "$work" && npm install --no-audit --no-fund --loglevel=error --omit-lockfile-registry-resolved)
# Keep the lock file the install resolved so the next run gets the same transitive versions.
cp "$work/package-lock.json" "$src/package-lock.json"

versions="$(cd "$work" && node -e '
  for (const p of ["mocha", "mochawesome", "mocha-junit-reporter", "mochawesome-report-generator"])
    console.log(p + "@" + require(p + "/package.json").version);')"

for c in "${cases[@]}"; do
  rm -rf "${out:?}/$c"
  mkdir -p "$out/$c"
  # mocha exits with the number of failures; a failing spec is the point here, so ignore its exit code.
  (cd "$work" && npx --no-install mocha "specs/$c.spec.js" --reporter mochawesome \
    --reporter-options "reportDir=$out/$c,reportFilename=mochawesome,json=true,html=false,quiet=true" \
    >/dev/null) || true
  (cd "$work" && npx --no-install mocha "specs/$c.spec.js" --reporter mocha-junit-reporter \
    --reporter-options "mochaFile=$out/$c/junit.xml" >/dev/null) || true
  for f in mochawesome.json junit.xml; do
    [[ -s "$out/$c/$f" ]] || { echo "reporter wrote no $c/$f" >&2; exit 1; }
  done
done

echo "made ${cases[*]} in $out with:"
while IFS= read -r line; do echo "  $line"; done <<<"$versions"
echo "  node@$(node --version | tr -d v) npm@$(npm --version)"

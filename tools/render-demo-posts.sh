#!/usr/bin/env bash
# Render the demo's two posts to PNG files for the README (a development tool, run by hand; the
# PNGs are committed, and tests/test_preview.py checks the HTML they come from without a browser).
#   tools/render-demo-posts.sh [OUT_DIR]        default OUT_DIR: docs/
# Needs Debian's chromium, and fonts-noto-color-emoji for the post's icon (apt-get install
# chromium fonts-noto-color-emoji). It runs `demo --preview`, which lays each post received out
# as Mattermost shows it (atvm_watcher/preview.py), then takes a screenshot of each page with
# headless Chromium.
set -euo pipefail

repo="$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
out="$(readlink -m -- "${1:-$repo/docs}")"
CHROMIUM="${CHROMIUM:-chromium}"
command -v "$CHROMIUM" >/dev/null || { echo "render-demo-posts: $CHROMIUM not found (apt-get install chromium)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
python3 "$repo/atvm_run_watcher.py" demo --speed 6 --preview "$work/html" >"$work/demo.out" 2>&1 ||
    { cat -- "$work/demo.out" >&2; exit 1; }
mkdir -p -- "$out"
for page in "$work"/html/post-*.html; do
    name="demo-$(basename "$page" .html).png"
    # The flags keep a root (CI, container) run of Chromium headless, offline and without a profile.
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
        --user-data-dir="$work/profile" --screenshot="$out/$name" --window-size=900,680 \
        "file://$page" >/dev/null 2>&1
    printf '%s\n' "$out/$name"
done

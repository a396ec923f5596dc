#!/usr/bin/env bash
# Build the release bundle: one tarball holding everything a controller needs (python3 and
# systemd are all it must already have: no pip, no network). Unpack it there and run
# `sudo ./deploy/install.sh` from the unpacked folder.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: tools/make-bundle.sh [--out DIR] [--version V]

Writes DIR/atvm-watcher-V.tar.gz (default DIR: dist/ in the checkout; default V:
`git describe --always --dirty`, or "snapshot" outside git) and prints its path last.
The files are taken from the working tree, so uncommitted edits are included.
EOF
}

repo="$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
out="$repo/dist"
version=""
while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --out)
            (($# >= 2)) || { usage >&2; exit 2; }
            out="$2"
            shift
            ;;
        --version)
            (($# >= 2)) || { usage >&2; exit 2; }
            version="$2"
            shift
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
    shift
done

cd "$repo"
if [[ -z "$version" ]]; then
    version="$(git describe --tags --always --dirty 2>/dev/null || echo snapshot)"
fi
[[ "$version" =~ ^[A-Za-z0-9._+-]+$ ]] || { echo "make-bundle: bad version '$version'" >&2; exit 2; }
# The commit time, not now: the same tree gives the same tarball.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

files=(atvm_run_watcher.py start-atvm-run-watcher.sh cancel-atvm-run-watcher.sh atvm-run.sh
    inventory/vm-inventory.md deploy/install.sh deploy/atvm-run-watcher@.service
    deploy/atvm-watcher-metrics.service deploy/atvm-watcher-metrics.timer
    deploy/atvm-run-watcher.env.example INSTALL.md README.md)
# The runtime package only: atvm_dev/ (the demo's simulated launcher and the tests' Mattermost
# double) stays in the checkout, so `demo` run from an installed bundle says it needs a checkout.
files+=(atvm_watcher/*.py atvm_watcher/commands/*.py)
if [[ -f LICENSE ]]; then files+=(LICENSE); fi
for f in "${files[@]}"; do
    [[ -f "$f" ]] || { echo "make-bundle: $repo/$f is missing" >&2; exit 1; }
done

name="atvm-watcher-$version"
work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
mkdir -p -- "$work/$name"
cp --parents -- "${files[@]}" "$work/$name/"
printf '%s\n' "$version" >"$work/$name/VERSION"
chmod -R u=rwX,go=rX -- "$work/$name"
chmod 0755 -- "$work/$name/atvm_run_watcher.py" "$work/$name"/*.sh "$work/$name/deploy/install.sh"

mkdir -p -- "$out"
tarball="$(readlink -f -- "$out")/$name.tar.gz"
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - "$name" | gzip -n -9 >"$tarball.tmp"
mv -- "$tarball.tmp" "$tarball"
printf '%s\n' "$tarball"

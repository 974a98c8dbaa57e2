#!/usr/bin/env bash
# Cross-builds a release of migrate into dist/ (or $DIST):
#   1. static linux agents (CGO_ENABLED=0) for amd64 and arm64:
#        dist/agents/migrate-linux-{amd64,arm64}
#   2. the CLIs for darwin and linux on amd64 and arm64, each carrying both
#      agents gzipped (build tag embedagents, remote/agents_embed.go):
#        dist/migrate-{darwin,linux}-{amd64,arm64}
#   3. dist/SHA256SUMS for all of them.
# The gzipped agents and their recorded sha256 live in a temporary directory
# that `go build -overlay` maps to remote/agents/: the source tree is not
# changed. VERSION defaults to `git describe --always --dirty`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
DIST=${DIST:-dist}
VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo unknown)}
ldflags="-s -w -X main.Version=$VERSION"
archs="amd64 arm64"

sha256() { if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$DIST/agents" "$DIST"/migrate-* "$DIST/SHA256SUMS"
mkdir -p "$DIST/agents"

echo "== agents (version $VERSION)"
overlay="{\"Replace\":{"
sep=""
for arch in $archs; do
  bin="$DIST/agents/migrate-linux-$arch"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o "$bin" ./cmd/migrate
  gzip -9 -n -c "$bin" > "$work/migrate-linux-$arch.gz"
  sha256 "$bin" | cut -d' ' -f1 > "$work/migrate-linux-$arch.sha256"
  for ext in gz sha256; do
    overlay+="$sep$(json_string "$root/remote/agents/migrate-linux-$arch.$ext"):$(json_string "$work/migrate-linux-$arch.$ext")"
    sep=","
  done
  echo "   $bin $(wc -c < "$bin") bytes, gzipped $(wc -c < "$work/migrate-linux-$arch.gz")"
done
printf '%s}}\n' "$overlay" > "$work/overlay.json"

echo "== CLIs with embedded agents"
for os in darwin linux; do
  for arch in $archs; do
    bin="$DIST/migrate-$os-$arch"
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -tags embedagents -overlay "$work/overlay.json" \
      -ldflags "$ldflags" -o "$bin" ./cmd/migrate
    echo "   $bin $(wc -c < "$bin") bytes"
  done
done

(cd "$DIST" && sha256 migrate-* agents/migrate-* > SHA256SUMS)
echo "== $DIST/SHA256SUMS"
cat "$DIST/SHA256SUMS"

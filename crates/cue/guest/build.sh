#!/usr/bin/env bash
# Builds the Pequod CUE guest to wasip1 (reactor / c-shared).
#
#   ./build.sh [OUTPUT]        (default OUTPUT: guest.wasm, relative to the caller's cwd)
#
# cuelang.org/go >= v0.14 does not compile for wasip1 as shipped:
# internal/robustio has no getFileID for it. We inject overlay/robustio_wasip1.go
# into that package with `go build -overlay`.
#
# The go command refuses overlays that replace files beneath GOMODCACHE
# ("Files beneath GOMODCACHE ... must not be replaced"), so the overlay cannot
# target the module cache directly. Instead the guest sources are copied to a
# temporary directory, its dependencies vendored there (`go mod vendor`, which
# only copies from the module cache), and the overlay targets the vendored
# robustio package. The overlay JSON needs absolute paths, so it is generated
# here as well. Nothing is written into the source tree except OUTPUT.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-guest.wasm}"
case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac

export GOTOOLCHAIN=local
cd "$here"

go mod download cuelang.org/go
cuedir="$(go list -m -f '{{.Dir}}' cuelang.org/go)"
if [[ -z "$cuedir" || ! -d "$cuedir/internal/robustio" ]]; then
  echo "build.sh: cannot find cuelang.org/go/internal/robustio (got '$cuedir')" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="$tmp/src"
mkdir "$src"
cp go.mod go.sum "$src/"
for f in *.go; do
  [[ "$f" == *_test.go ]] || cp "$f" "$src/"
done
(cd "$src" && go mod vendor)

robustio="$src/vendor/cuelang.org/go/internal/robustio"
if [[ ! -d "$robustio" ]]; then
  echo "build.sh: $robustio missing after go mod vendor" >&2
  exit 1
fi
target="$robustio/robustio_wasip1.go"
stub="$here/overlay/robustio_wasip1.go"
for p in "$target" "$stub"; do
  if [[ "$p" == *'"'* || "$p" == *'\'* ]]; then
    echo "build.sh: path not representable in overlay JSON: $p" >&2
    exit 1
  fi
done
printf '{"Replace":{"%s":"%s"}}\n' "$target" "$stub" >"$tmp/overlay.json"

(
  cd "$src"
  GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -mod=vendor \
    -buildmode=c-shared -trimpath -ldflags='-s -w' \
    -overlay="$tmp/overlay.json" \
    -o "$out" .
)

echo "built $out ($(wc -c <"$out") bytes)"

#!/usr/bin/env bash
# The full test suite, on a fresh machine: installs what it needs (versitygw
# into .tools/, Debian's sqlite3), starts versitygw on 127.0.0.1 with its posix
# backend, runs go vet, go test -race and a short run of every fuzz target,
# then stops the server by PID and removes its data, also when tests fail.
#
#   ./scripts/test.sh                 everything (race pass, heavy pass, fuzz)
#   ./scripts/test.sh ./wal/...       only these packages (vet, test, fuzz)
#   FUZZTIME=30s ./scripts/test.sh    longer fuzz runs (default 5s each)
#   BOP_SKIP_FUZZ=1 ./scripts/test.sh no fuzz runs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true
export GOFLAGS="${GOFLAGS:-}"
tools="$root/.tools/bin"
mkdir -p "$tools"

# --- tools ---------------------------------------------------------------
if [ ! -x "$tools/versitygw" ]; then
  echo "test.sh: installing versitygw v1.8.0 into .tools/bin (about 2 minutes cold)"
  GOBIN="$tools" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
if ! command -v sqlite3 >/dev/null 2>&1; then
  echo "test.sh: installing Debian's sqlite3"
  if [ "$(id -u)" = 0 ]; then sudo_=""; else sudo_="sudo"; fi
  $sudo_ apt-get install -y -q sqlite3 >/dev/null 2>&1 ||
    { $sudo_ apt-get update -q >/dev/null && $sudo_ apt-get install -y -q sqlite3 >/dev/null; } ||
    { echo "test.sh: could not install sqlite3" >&2; exit 1; }
fi

# --- S3 server -----------------------------------------------------------
data=$(mktemp -d "${TMPDIR:-/tmp}/bop-versitygw.XXXXXX")
vgw_pid=""
cleanup() {
  status=$?
  if [ -n "$vgw_pid" ]; then
    kill "$vgw_pid" 2>/dev/null || true
    wait "$vgw_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
  exit $status
}
trap cleanup EXIT INT TERM

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "test.sh: no free port found" >&2; return 1
}

port=$(free_port)
export BOP_S3_ACCESS_KEY="bop-test-access"
export BOP_S3_SECRET_KEY="bop-test-secret-$(date +%s)"
export BOP_S3_REGION="us-east-1"
export BOP_S3_BUCKET="bop-test"
export BOP_S3_ENDPOINT="http://127.0.0.1:$port"
export BOP_REQUIRE_S3=1
mkdir -p "$data/gw/$BOP_S3_BUCKET" "$data/meta"
ROOT_ACCESS_KEY="$BOP_S3_ACCESS_KEY" ROOT_SECRET_KEY="$BOP_S3_SECRET_KEY" \
  "$tools/versitygw" --port "127.0.0.1:$port" --health /health --quiet \
  posix --sidecar "$data/meta" "$data/gw" >"$data/versitygw.log" 2>&1 &
vgw_pid=$!

for i in $(seq 1 100); do
  if curl -fsS "$BOP_S3_ENDPOINT/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$vgw_pid" 2>/dev/null; then
    echo "test.sh: versitygw exited:" >&2; cat "$data/versitygw.log" >&2; exit 1
  fi
  if [ "$i" = 100 ]; then echo "test.sh: versitygw did not become healthy" >&2; exit 1; fi
  sleep 0.1
done
echo "test.sh: versitygw (pid $vgw_pid) at $BOP_S3_ENDPOINT, bucket $BOP_S3_BUCKET"

# --- tests ---------------------------------------------------------------
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

echo "test.sh: go vet"
go vet "${pkgs[@]}"
# docs/FORMAT.md and bench/RESULTS.md are generated from their fragments.
"$root/scripts/mergedocs.sh" -check
echo "test.sh: go test -race"
go test -race -timeout "${TEST_TIMEOUT:-90m}" "${pkgs[@]}"
# SQLite (wasm2go) runs ~20x slower under -race: tests named TestHeavy* skip
# there (testutil.Heavy) and run here, without the race detector.
echo "test.sh: heavy tests (no -race)"
go test -run '^TestHeavy' -timeout "${TEST_TIMEOUT:-90m}" "${pkgs[@]}"
# The VFS's capture reads pages back from the WAL (wal.CaptureOptions.
# ReadBack); the wal package's tests, written mostly without it, run once
# more with every capture reading back.
if go list "${pkgs[@]}" | grep -qx 'github.com/bopstore/bop/wal'; then
  echo "test.sh: wal tests with read-back (BOP_TEST_READBACK=1)"
  BOP_TEST_READBACK=1 go test -count=1 -timeout "${TEST_TIMEOUT:-90m}" ./wal/
fi

# fuzz_one runs one fuzz target. Go's fuzzer sometimes ends a run with
# "context deadline exceeded" when -fuzztime expires while its coordinator
# is busy with a new input (a toolchain artifact: no input failed, nothing
# is written to testdata). Such a run is repeated, up to twice; a real
# failure ("Failing input written to ...") or any other error fails at once.
fuzz_one() {
  local dir=$1 f=$2 out attempt
  for attempt in 1 2 3; do
    if out=$(cd "$dir" && go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" -fuzzminimizetime 100x . 2>&1); then
      echo "$out"
      return 0
    fi
    echo "$out"
    if ! grep -q 'context deadline exceeded' <<<"$out" || grep -q 'Failing input written' <<<"$out"; then
      return 1
    fi
    [ "$attempt" -lt 3 ] && echo "test.sh: $f stopped with the fuzzer's deadline artifact; running it again"
  done
  return 1
}

if [ "${BOP_SKIP_FUZZ:-}" != 1 ]; then
  fuzztime="${FUZZTIME:-5s}"
  for dir in $(go list -f '{{.Dir}}' "${pkgs[@]}"); do
    for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
      echo "test.sh: fuzz $f in ${dir#$root/} for $fuzztime"
      fuzz_one "$dir" "$f"
    done
  done
fi
echo "test.sh: all passed"

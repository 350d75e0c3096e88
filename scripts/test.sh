#!/bin/sh
# The whole test suite: Zig unit tests (native, assertions on), the same suite for aarch64
# under qemu-user, then the Deno tests against a fresh ReleaseFast build. Called by `./task test`
# (which has put the pinned deno and zig on PATH). Ends with one "N passed, N failed" line.
set -eu
cd "$(dirname "$0")/.."

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
zig_passed=0
failed=0

count_zig() { # $1 = log file; adds "a/b tests passed" from zig's build summary
  n=$(sed -n 's/.*; \([0-9]*\)\/\([0-9]*\) tests passed.*/\1/p' "$1" | tail -n 1)
  zig_passed=$((zig_passed + ${n:-0}))
}

echo "== zig unit tests (native, Debug)"
if zig build test --summary all >"$log/zig-native.txt" 2>&1; then
  tail -n 3 "$log/zig-native.txt"
  count_zig "$log/zig-native.txt"
else
  cat "$log/zig-native.txt"
  failed=$((failed + 1))
fi

echo "== zig unit tests (aarch64-linux-musl under qemu)"
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing qemu-user (Debian package) for the ARM64 tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user) \
      >"$log/apt.txt" 2>&1 || { cat "$log/apt.txt"; }
  elif command -v sudo >/dev/null 2>&1; then
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user) \
      >"$log/apt.txt" 2>&1 || { cat "$log/apt.txt"; }
  fi
fi
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "error: qemu-aarch64 is missing and could not be installed (apt-get install qemu-user)"
  failed=$((failed + 1))
elif zig build test -Dtarget=aarch64-linux-musl -fqemu --summary all >"$log/zig-arm.txt" 2>&1; then
  grep -v '^qemu: uncaught target signal 4' "$log/zig-arm.txt" | tail -n 3
  count_zig "$log/zig-arm.txt"
else
  cat "$log/zig-arm.txt"
  failed=$((failed + 1))
fi

echo "== build libkcoro (ReleaseFast)"
zig build

echo "== deno tests"
deno_passed=0
deno_failed=0
if NO_COLOR=1 deno test --allow-ffi --allow-read --allow-write --allow-env --allow-run tests/ 2>&1 |
  tee "$log/deno.txt"; then :; fi
deno_passed=$(sed -n 's/.*| \([0-9]*\) passed.*/\1/p' "$log/deno.txt" | tail -n 1)
deno_failed=$(sed -n 's/.*| \([0-9]*\) failed.*/\1/p' "$log/deno.txt" | tail -n 1)
if [ -z "$deno_passed" ] || ! grep -q '^.*ok.*| [0-9]* passed | 0 failed' "$log/deno.txt"; then
  failed=$((failed + ${deno_failed:-1}))
  [ "${deno_failed:-0}" -gt 0 ] || failed=$((failed + 1))
fi

total_passed=$((zig_passed + ${deno_passed:-0}))
echo
echo "kcoro: zig $zig_passed passed (native + aarch64), deno ${deno_passed:-0} passed"
echo "$total_passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/bin/sh
# The whole test suite: Zig unit tests (native, assertions on), the same suite for aarch64
# under qemu-user, then the Deno tests against a fresh ReleaseFast build. Called by `./task test`
# (which has put the pinned deno and zig on PATH). Ends with one "N passed, N failed" line.
set -eu
cd "$(dirname "$0")/.."

log=""
ahead_pid=""
stop_ahead() { # the compiles ahead (below), with the build runners and compilers they started
  [ -n "$ahead_pid" ] || return 0
  kill -- "-$ahead_pid" 2>/dev/null || kill "$ahead_pid" 2>/dev/null || :
  wait "$ahead_pid" 2>/dev/null || :
  ahead_pid=""
}
stage_pid=""
# A stage (stage, below) runs under `timeout`, which puts itself and what it runs in a process
# group of its own, numbered by its pid: the group is signalled, not timeout alone. timeout
# forwards a TERM to its child only once it has noted the child's pid; a TERM that came between
# its fork and that note ended timeout alone, and the stage ran on. (No such group yet: timeout
# has not reached its setpgid, so neither its fork: timeout alone.)
stop_stage() {
  [ -n "$stage_pid" ] || return 0
  kill -s TERM -- "-$stage_pid" 2>/dev/null || kill -s TERM "$stage_pid" 2>/dev/null || :
  wait "$stage_pid" 2>/dev/null || :
  stage_pid=""
}
tee_pid=""
tee_watch="" # the bound on the wait for tee (below): it ends once the log folder is gone
# At the exit (a signal's included). A signal that comes while it runs is ignored: a second
# Ctrl-C or TERM while stop_stage waited for the stage to end (up to timeout's grace, below) ran
# its trap's `exit` in this one, which ended the script there: the compiles ahead left running
# (minutes of CPU), the log folder left in TMPDIR.
cleanup() {
  trap '' HUP INT TERM
  stop_stage
  stop_ahead
  [ -z "$tee_pid" ] || kill "$tee_pid" 2>/dev/null || :
  [ -z "$log" ] || rm -rf "$log"
}
trap cleanup EXIT
# The EXIT trap runs then too. Each exits with the status of a death by that signal, at once,
# unless a stage (or the compiles ahead, or the Deno tests' tee) is being started: from its `&`
# until its pid is noted (stage_pid), a signal's exit would leave it running (stop_stage had no
# pid to end), so the status is noted instead and the script exits with it once the pid is there.
starting=""
interrupted=""
on_signal() {
  interrupted=$1
  [ -n "$starting" ] || exit "$1"
}
trap 'on_signal 129' HUP
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
# Made once the traps are set, as a stage's start: before, a signal between its mktemp and the
# traps left the folder in TMPDIR.
starting=1
log=$(mktemp -d)
starting=""
[ -z "$interrupted" ] || exit "$interrupted"
zig_passed=0
failed=0
t0=$(date +%s)
# The whole run's bound, in seconds: CI ends a job at 90 minutes, and one before its toolchain
# install and checkout are done with (minutes); a run takes 10 to 20 minutes on a loaded 2-CPU
# host. Each stage is bounded by what is left of it, at most 30 minutes: before, each of the four
# Zig stages had 30 minutes of its own (and the Deno tests none), two hours for hung ones, and CI
# cut the run off without its closing line.
budget=${KCORO_TEST_BUDGET_S:-4500}
case $budget in
'' | *[!0-9]*)
  echo "error: Cannot read KCORO_TEST_BUDGET_S: not a whole number of seconds, received '$budget'"
  exit 2
  ;;
esac
# Read as decimal: the shell's arithmetic took a leading 0 for octal ("09": dash's "Illegal
# number", and set -e ended the run there, without its closing line), and one past its 64-bit
# integers (from 19 digits) ended it so too or made the deadline negative. One of more than 9
# digits (31 years) is no bound at all: each stage still has its 30 minutes at most.
budget=${budget#"${budget%%[!0]*}"}
[ -n "$budget" ] || budget=0
[ "${#budget}" -le 9 ] || budget=999999999
deadline=$((t0 + budget))
# The grace, in seconds, that a stage's processes have after timeout's TERM before its KILL, and
# the Deno tests' output after deno test has ended (below): 10 unless KCORO_TEST_GRACE_S says
# (tests/task_test.ts runs these bounds in 1 s, not 10). From 1 (timeout reads a 0 as no KILL at
# all) to 600, read as decimal as the budget.
grace=${KCORO_TEST_GRACE_S:-10}
case $grace in
'' | *[!0-9]*) grace=x ;;
*)
  grace=${grace#"${grace%%[!0]*}"}
  if [ -z "$grace" ] || [ "${#grace}" -gt 3 ] || [ "$grace" -gt 600 ]; then grace=x; fi
  ;;
esac
if [ "$grace" = x ]; then
  echo "error: Cannot read KCORO_TEST_GRACE_S: not a whole number of seconds from 1 to 600, received '${KCORO_TEST_GRACE_S:-}'"
  exit 2
fi

since() { # seconds since $1 (date +%s)
  echo $(($(date +%s) - $1))
}

count_zig() { # $1 = log file; adds "a/b tests passed" from zig's build summary
  n=$(sed -n 's/.*; \([0-9]*\)\/\([0-9]*\) tests passed.*/\1/p' "$1" | tail -n 1)
  zig_passed=$((zig_passed + ${n:-0}))
}

# Runs a stage, "$@", in the background (`wait`, which a signal ends at once, waits for it: the
# shell ran a trap only once a command in the foreground had ended, and timeout puts the stage in
# a process group of its own, which a terminal's Ctrl-C never reaches, so a TERM or Ctrl-C of
# this script waited for the stage's end, minutes), its output into $out (the script's own when
# empty), bounded by `limit` seconds: what is left of the budget, at most 1800. Sets rc: the
# stage's status, 124 when it ran out of time (or none was left: it did not start), also when it
# ignored timeout's TERM and was killed `grace` seconds later (status 137, past its limit).
stage() {
  left=$((deadline - $(date +%s)))
  [ "$left" -le 1800 ] || left=1800
  limit=$left
  if [ "$left" -le 0 ]; then
    [ -z "$out" ] || : >"$out"
    rc=124
    return 0
  fi
  started=$(date +%s)
  starting=1
  if [ -n "$out" ]; then
    timeout -k "$grace" "$left" "$@" >"$out" 2>&1 &
  else
    timeout -k "$grace" "$left" "$@" &
  fi
  stage_pid=$!
  starting=""
  [ -z "$interrupted" ] || exit "$interrupted"
  rc=0
  wait "$stage_pid" || rc=$?
  stage_pid=""
  # A stage that ignored timeout's TERM is killed `grace` seconds on (-k): status 137, which read
  # as a crash, not as the timeout it was.
  if [ "$rc" -eq 137 ] && [ $(($(date +%s) - started)) -ge "$limit" ]; then rc=124; fi
}

# What a stage with status 124 (`stage`) says: $1 names it.
timed_out() {
  if [ "$limit" -le 0 ]; then
    echo "error: $1 did not run: the run's budget of $budget s (KCORO_TEST_BUDGET_S) was spent"
  else
    echo "error: $1 did not end within $limit s (at most 30 minutes a stage, $budget s in all: KCORO_TEST_BUDGET_S)"
  fi
}

run_zig() { # $1 = label, rest = extra zig build args
  label=$1
  shift
  echo "== zig unit tests ($label)"
  ts=$(date +%s)
  f="$log/zig-$(echo "$label" | tr -c 'a-zA-Z0-9' '_').txt"
  # Bounded (`stage`): a failed test that leaves a worker running can make the test binary hang
  # instead of failing (seen once under qemu); a step takes 2 to 10 minutes on a 2-CPU host. The
  # outer bound: the test runner's watchdog (zig-src/testing/runner.zig) ends a test that runs
  # past KCORO_TEST_TIMEOUT_S (default 300 s) first, and names it.
  out=$f
  stage zig build test --summary all "$@"
  if [ "$rc" -eq 0 ]; then
    # The trap tests kill a forked child with SIGILL on purpose; qemu reports each one.
    grep -v '^qemu: uncaught target signal 4' "$f" | grep 'tests passed' || true
    count_zig "$f"
    echo "   $(since "$ts") s"
  else
    cat "$f"
    [ "$rc" -ne 124 ] || timed_out "zig unit tests ($label)"
    failed=$((failed + 1))
  fi
}

# The later stages' programs and the library are compiled ahead, one after another, on the CPU
# the running stage leaves: `zig build test-exe` and `zig build` make the very compile steps
# that those stages' `zig build test` and the library build then find in .zig-cache (one still
# being compiled ahead is waited for on the cache's lock, not compiled twice). Before, each
# stage compiled, then ran, with one CPU idle either way, and a ReleaseSafe compile is about two
# minutes of one CPU: the suite took 9 to 10 minutes on CI's 2-CPU host. Only a cache warmer: a
# compile that fails ahead fails again in its stage, which reports it ($log/ahead.txt has its
# output here). In a process group of its own (setsid), so that stop_ahead ends the compilers
# too, not only the `zig` that started them; into a prefix of its own, as nothing of it is to be
# installed. Where there is no setsid, nothing is compiled ahead (the stages compile their own,
# as before): without a group of its own, the `zig build` then running ahead outlived the
# script, with its compilers. Each compile starts only while this script runs: one killed
# (SIGKILL, which no trap sees) left the rest of the list to compile, minutes of CPU, in a group
# nothing else ends.
# The build runner (build.zig's program, which every `zig build` below runs) is compiled here
# first, alone: on a fresh .zig-cache the first stage and the first compile ahead both compiled
# it at once, and one then failed to start it ("failed to spawn build runner ...: FileBusy",
# ETXTBSY: the other still had the file open for writing), failing that stage on a clean clone.
# Bounded as a stage (`stage`: what is left of the budget, at most 30 minutes): a compile that
# hung made the script wait for good, past the budget.
# Beside the library's compile (mostly one CPU's work, which its stage waits for), a C program
# linked with `zig cc`: its first link builds compiler_rt and the UBSan runtime into the global
# cache (~20 s of one CPU), which the Deno tests' own `zig cc` builds then find there. Before,
# the first of them (c_receiver_test.ts's) built them: 39 s of its 40 on a loaded host.
if command -v setsid >/dev/null 2>&1; then
  left=$((deadline - $(date +%s)))
  [ "$left" -le 1800 ] || left=1800
  [ "$left" -gt 0 ] || left=1 # none left: the stages say so
  started=$(date +%s)
  starting=1 # in a group of its own, ended by stop_ahead on a signal, as the compiles ahead
  setsid timeout -k "$grace" "$left" zig build --help >/dev/null 2>&1 &
  ahead_pid=$!
  starting=""
  [ -z "$interrupted" ] || exit "$interrupted"
  rc=0
  wait "$ahead_pid" || rc=$?
  ahead_pid=""
  # Named where it ran out of time (timeout's 124, or 137 past its limit: killed `grace` seconds
  # after its TERM, as `stage` reads it): before, it ended so without a word, and what came next
  # (each stage compiling it again, or none left to run) did not say why. Not a failure of its
  # own: each stage compiles it, and fails so, named, if it cannot.
  if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ $(($(date +%s) - started)) -ge "$left" ]; }; then
    echo "warning: the build runner's compile (zig build --help, first, alone) did not end within $left s (at most 30 minutes, $budget s in all: KCORO_TEST_BUDGET_S): ended"
  fi
  starting=1 # as a stage's start (`stage`): a signal before its pid is noted is acted on after
  setsid sh -c '
    for args in "test-exe -Dtest-optimize=ReleaseSafe" "test-exe -Dtarget=aarch64-linux-musl" \
      "test-exe -Dtarget=aarch64-linux-musl -Dtest-optimize=ReleaseSafe" ""; do
      kill -0 "$2" 2>/dev/null || exit 0
      if [ -z "$args" ]; then
        printf "int main(void) { return 0; }\n" >"$1/warm.c"
        zig cc "$1/warm.c" -o "$1/warm" >>"$1/ahead.txt" 2>&1 &
      fi
      zig build --prefix "$1/ahead" $args >>"$1/ahead.txt" 2>&1 || :
    done
    wait' compile-ahead "$log" "$$" &
  ahead_pid=$!
  starting=""
  [ -z "$interrupted" ] || exit "$interrupted"
fi

# Debug and ReleaseSafe both keep assertions; ReleaseSafe also runs the optimiser, which is
# where mistakes in naked asm functions (inlining, noreturn) show up.
run_zig "x86_64, Debug"
run_zig "x86_64, ReleaseSafe" -Dtest-optimize=ReleaseSafe

if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "installing qemu-user (Debian package) for the ARM64 tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    # A stage runs in a process group of its own, not the terminal's, where sudo cannot ask for a
    # password (a read of the terminal stops it): asked here, in the foreground, where one is
    # needed, then `sudo -n`, which never asks. Asked only where someone may be there to type it:
    # stdin a terminal, and not CI (which sets CI). Else sudo's prompt on a terminal that no one
    # reads (a CI runner that gives its job a pty) waited sudo's passwd_timeout, 5 minutes by
    # default, or for good where that is 0; without a terminal, sudo fails at once. No sudo at all
    # is named so, not as a password not asked for.
    sudo="sudo -n"
    if ! command -v sudo >/dev/null 2>&1; then
      echo "sudo is missing, and this is not root: apt-get cannot run (install qemu-user first, or run as root)"
    elif ! sudo -n true 2>/dev/null; then
      if [ -t 0 ] && [ -z "${CI:-}" ]; then
        sudo -v || :
      else
        echo "sudo needs a password, not asked for: stdin is no terminal, or CI is set (install qemu-user first, or give sudo NOPASSWD for apt-get)"
      fi
    fi
  fi
  # A stage (`stage`): in the foreground, a TERM or Ctrl-C of this script waited for apt's end.
  out="$log/apt.txt"
  stage sh -c '$1 apt-get update -qq && $1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user' \
    install-qemu "$sudo"
  if [ "$rc" -ne 0 ]; then
    cat "$log/apt.txt"
    [ "$rc" -ne 124 ] || timed_out "apt-get install qemu-user"
  fi
fi
if command -v qemu-aarch64 >/dev/null 2>&1; then
  # KCORO_TEST_QEMU: tests whose forked child starts threads skip (qemu-user aborts such a
  # child when the parent has another thread; see forkedThreadsOk in zig-src/sched/scheduler.zig).
  export KCORO_TEST_QEMU=1
  # KCORO_TEST_SKIP (zig-src/testing/runner.zig): the tests slowest under emulation that
  # exercise nothing of the architecture, skipped here. Each runs on one thread and counts what
  # many rounds leave in a table (free slots, handles, tickets, buffer growth): no context
  # switch, no race between threads, no stack depth, nothing an optimiser treats differently
  # for ARM64; they ran in both x86_64 stages above. 35 of the Debug stage's 165 s under qemu on a
  # loaded 2-CPU host, the first alone 23 s (1.3 s on x86_64).
  export KCORO_TEST_SKIP="kept lists that come and go beside 1,000 untaken ones|\
a freed slot waits behind reuse_after others|\
a growing bounded buffer: drop policies drop at its capacity|\
a ticket already handled is not handed out again for about a million operations|\
holds that come and go beside 1,000 kept ones"
  run_zig "aarch64 under qemu, Debug" -Dtarget=aarch64-linux-musl -fqemu
  run_zig "aarch64 under qemu, ReleaseSafe" -Dtarget=aarch64-linux-musl -fqemu -Dtest-optimize=ReleaseSafe
  unset KCORO_TEST_QEMU KCORO_TEST_SKIP
else
  echo "error: qemu-aarch64 is missing and could not be installed (apt-get install qemu-user)"
  failed=$((failed + 1))
fi

echo "== build libkcoro (ReleaseFast)"
ts=$(date +%s)
# A failed build ended the script here (set -e), without its closing line; and the Deno tests
# must not run against the library an earlier build left in zig-out/.
deno_passed=0
out=""
stage zig build
if [ "$rc" -ne 0 ]; then
  stop_ahead
  [ "$rc" -ne 124 ] || timed_out "zig build (ReleaseFast)"
  echo "error: zig build (ReleaseFast) failed (above): the Deno tests did not run"
  failed=$((failed + 1))
else
  echo "   $(since "$ts") s"
  # Done by now (the library build above waited for its compile): the deno tests have both CPUs.
  stop_ahead

  echo "== deno tests"
  # deno test's exit status decides, not a line of its output: a test's own output that read
  # like a summary ("ok | 9 passed | 0 failed" at the start of a line) passed a failed run. The
  # counts come from its closing line, "ok | N passed | N failed ..." or "FAILED | ...", whose
  # passed count may carry "(N steps)" (which a passing run failed on).
  # A stage as the Zig ones (`stage`), shown as it runs by a tee reading it through a FIFO: a
  # TERM to this script alone waited for the end of the foreground `deno test | tee`, minutes.
  ts=$(date +%s)
  mkfifo "$log/deno.fifo"
  starting=1 # as a stage's start (`stage`): a signal before its pid is noted is acted on after
  tee "$log/deno.txt" <"$log/deno.fifo" &
  tee_pid=$! # ended by the EXIT trap if its FIFO never opens for writing (a signal before)
  starting=""
  [ -z "$interrupted" ] || exit "$interrupted"
  out="$log/deno.fifo"
  # Type-checked once, all of it (tests/ with the Workers' modules in tests/fixtures, and the
  # code blocks of README.md and the JSDoc), then run unchecked: deno test checked each Worker's
  # module again as its first Worker started, a tsc program of its own over mod.ts's whole graph
  # for each (8 modules; 10 to 20 s each on a loaded host, one after another). That check used
  # Deno's Worker lib ("deno.worker", where a window's globals such as `alert` or `window` are
  # unknown), which the first `deno check` does not (the window's): the fixtures are checked
  # again under it, one tsc program more, as their Workers' starts did. A failed check fails the
  # stage (no summary line), its errors shown and named, and no test runs.
  printf '{ "compilerOptions": { "lib": ["deno.worker"] } }\n' >"$log/worker-lib.json"
  stage env NO_COLOR=1 sh -c 'worker=$1
    shift
    if deno check --doc "$@" && deno check --no-lock --config "$worker" tests/fixtures/; then
      exec deno test --no-check --allow-ffi --allow-read --allow-write --allow-env --allow-run --doc "$@"
    fi
    echo "error: the Deno tests failed their type check (deno check, above): none ran"
    exit 1' deno-tests "$log/worker-lib.json" tests/ README.md mod.ts src/
  # tee ends at its FIFO's end, once every writer has closed it: a process a test left running
  # (deno's output inherited) kept it open, and the script waited for it for good. So does a tee
  # that cannot write: this script's output, which a reader has stopped reading (deno test, its
  # FIFO full, then waited too: its stage's time limit ends it). Bounded either way, not told
  # apart (named both): `grace` seconds on, a watcher ends tee (a TERM ends a blocked write too),
  # and says so in $log/tee.ended; a failure, named. (This script's own lines then wait for that
  # reader, as any writer's.) The watcher ends by itself once tee has ($log/tee.done) or the log
  # folder is gone (the script's exit), not by a signal: a TERM right after its fork came while it
  # still had this script's traps, and was lost.
  starting=1
  sh -c 'i=0
    while [ "$i" -lt $(($3 * 10)) ]; do
      [ -d "$2" ] && [ ! -e "$2/tee.done" ] || exit 0
      sleep 0.1
      i=$((i + 1))
    done
    : >"$2/tee.ended" && kill "$1" 2>/dev/null' tee-watch "$tee_pid" "$log" "$grace" </dev/null >/dev/null 2>&1 &
  tee_watch=$!
  starting=""
  [ -z "$interrupted" ] || exit "$interrupted"
  wait "$tee_pid" || :
  tee_pid=""
  : >"$log/tee.done"
  wait "$tee_watch" || :
  tee_watch=""
  if [ -e "$log/tee.ended" ]; then
    echo "error: the Deno tests' output stayed open $grace s after deno test ended: a process a test started holds it, or this script's output is not being read (ended its reader, tee)"
    failed=$((failed + 1))
  fi
  [ "$rc" -ne 124 ] || timed_out "the deno tests"
  echo "   $(since "$ts") s"
  summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log/deno.txt" | tail -n 1 || true)
  deno_passed=$(printf '%s\n' "$summary" | sed -n 's/^[A-Za-z]* | \([0-9]*\) passed.*/\1/p')
  deno_failed=$(printf '%s\n' "$summary" | sed -n 's/.* | \([0-9]*\) failed.*/\1/p')
  if [ "$rc" -ne 0 ] || [ -z "$summary" ] || [ "${deno_failed:-0}" -gt 0 ]; then
    failed=$((failed + ${deno_failed:-0}))
    [ "${deno_failed:-0}" -gt 0 ] || failed=$((failed + 1))
  fi
fi

total_passed=$((zig_passed + ${deno_passed:-0}))
echo
echo "kcoro: zig $zig_passed passed (x86_64 + aarch64, Debug + ReleaseSafe), deno ${deno_passed:-0} passed"
echo "in $(since "$t0") s"
echo "$total_passed passed, $failed failed"
[ "$failed" -eq 0 ]

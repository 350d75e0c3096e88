// The Zig unit tests' runner (zig-src/testing/runner.zig) has a watchdog: a test that runs past
// KCORO_TEST_TIMEOUT_S seconds is named on stderr and the test binary ends (status 3), where a
// hung test ran into scripts/test.sh's 30-minute bound per step and the log did not say which
// test it was. zig-src/testing/hang_test.zig hangs on purpose; `-Dtest-hang=true` builds it
// instead of the unit tests. The bounds on the commands below are against a hang of the runner
// itself only (its watchdog not firing), generous for a first build on a loaded machine.
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url).pathname;
const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
const HUNG = "hang_test.test.hangs on purpose: joins a thread that never ends";
const RACED =
  "hang_test.test.races on purpose, then skips: two threads add to a plain word (KCORO_TEST_HANG=race)";
const FORKED =
  "hang_test.test.after the race, a forked child that exits 0 passes (KCORO_TEST_HANG=race)";

/** Runs `cmd` bounded by `limitMs`: at the bound, timeout(1) kills its whole process group. A
 * signal to `cmd` alone did not end the wait for a `zig build` whose watchdog did not fire:
 * the build runner and the hung test binary it started lived on, holding the output pipes, and
 * the test waited for them for good. */
async function run(cmd: string, args: string[], env: Record<string, string>, limitMs: number) {
  const out = await new Deno.Command("timeout", {
    args: ["-k", "5", `${Math.ceil(limitMs / 1000)}`, cmd, ...args],
    cwd: root,
    // Not inherited from a caller's shell: verbose output, the hang test's mode and the
    // watchdog's bound (the default one unless a case sets it) are set per case.
    env: {
      KCORO_TEST_VERBOSE: "0",
      KCORO_TEST_HANG: "",
      KCORO_TEST_TIMEOUT_S: "300",
      KCORO_TEST_SKIP: "",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

/** The hang test as a program of its own (the runner's terminal mode), in a temporary prefix. */
async function buildHangTest(dir: string): Promise<string> {
  const out = await run(
    zig,
    ["build", "test-exe", "-Dtest-hang=true", "--prefix", dir],
    {},
    600_000,
  );
  assert.equal(out.code, 0, out.text);
  // A name of its own: under the unit tests' name, a build without `--prefix` replaced
  // zig-out/bin/kcoro-test with the hang tests.
  assert.deepEqual(
    [...Deno.readDirSync(`${dir}/bin`)].map((e) => e.name),
    ["kcoro-hang-test"],
  );
  return `${dir}/bin/kcoro-hang-test`;
}

Deno.test("the Zig test runner's watchdog names a test that hangs and ends the binary with status 3", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const exe = await buildHangTest(dir);
    const t0 = performance.now();
    const out = await run(exe, [], { KCORO_TEST_TIMEOUT_S: "2", KCORO_TEST_VERBOSE: "1" }, 60_000);
    const ms = performance.now() - t0;
    assert.equal(out.code, 3, out.text);
    assert.match(out.text, /kcoro test 1\/4: hang_test\.test\.passes before the hang\n/);
    assert.ok(out.text.includes(`kcoro test 2/4: ${HUNG}\n`), out.text);
    assert.ok(out.text.includes(`kcoro test watchdog: ${HUNG} ran past 2s\n`), out.text);
    assert.ok(ms >= 2000, `ended after ${ms} ms, before its bound`);

    // Without KCORO_TEST_VERBOSE the start of each test is not announced; the watchdog still is.
    const quiet = await run(exe, [], { KCORO_TEST_TIMEOUT_S: "1" }, 60_000);
    assert.equal(quiet.code, 3, quiet.text);
    assert.doesNotMatch(quiet.text, /kcoro test 1\/4/);
    assert.ok(quiet.text.includes(`kcoro test watchdog: ${HUNG} ran past 1s\n`), quiet.text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the Zig test runner bounds the exit after the last test, its summary printed first", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const exe = await buildHangTest(dir);
    // Every test passes; an atexit handler that never returns hangs the exit instead.
    const out = await run(exe, [], { KCORO_TEST_TIMEOUT_S: "1", KCORO_TEST_HANG: "exit" }, 60_000);
    assert.equal(out.code, 3, out.text);
    const summary = out.text.indexOf("All 4 tests passed.");
    const named = out.text.indexOf(
      "kcoro test watchdog: the exit after the last test ran past 1s\n",
    );
    assert.ok(summary >= 0 && named > summary, out.text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the Zig test runner refuses a KCORO_TEST_TIMEOUT_S that is not a number of seconds above 0", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const exe = await buildHangTest(dir);
    for (const bad of ["0", "x", "-1", "1.5", "1_0", "+2", " 2", "", "99999999999"]) {
      const out = await run(exe, [], { KCORO_TEST_TIMEOUT_S: bad }, 60_000);
      assert.equal(out.code, 2, out.text);
      assert.ok(
        out.text.includes(
          `Cannot read KCORO_TEST_TIMEOUT_S: not a whole number of seconds above 0, received "${bad}"`,
        ),
        out.text,
      );
      assert.doesNotMatch(out.text, /hang_test/); // no test ran
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`zig build test` fails the step at the watchdog and names the hung test", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The same compile step as `zig build test`'s: compiled here, under the build's own bound,
    // so that the bound on the run below is the watchdog's failure alone (it was 600 s, and a
    // watchdog that did not fire then took 10 minutes to fail this test).
    await buildHangTest(dir);
    // The build runner's protocol (--listen=-), as scripts/test.sh runs the unit tests.
    const out = await run(zig, ["build", "test", "-Dtest-hang=true", "--summary", "all"], {
      KCORO_TEST_TIMEOUT_S: "2",
    }, 120_000);
    assert.notEqual(out.code, 0, out.text);
    assert.ok(out.text.includes(`kcoro test watchdog: ${HUNG} ran past 2s\n`), out.text);
    assert.ok(out.text.includes(`while executing test '${HUNG}'`), out.text);
    assert.match(out.text, /exited with code 3/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the Zig test runner skips, without running them, the tests KCORO_TEST_SKIP names by a part of their names", async () => {
  // scripts/test.sh skips so, under qemu, the slow tests that exercise nothing of the
  // architecture. Here the hung test is named: run, it would end the binary at the watchdog
  // (status 3, as above). An empty part and a part that names no test name none.
  const dir = await Deno.makeTempDir();
  try {
    await buildHangTest(dir);
    const skip = { KCORO_TEST_TIMEOUT_S: "2", KCORO_TEST_SKIP: "|no such test|hangs on purpose" };
    const out = await run(`${dir}/bin/kcoro-hang-test`, [], skip, 60_000);
    assert.equal(out.code, 0, out.text);
    assert.ok(out.text.includes(`2/4 ${HUNG}...SKIP\n`), out.text);
    assert.ok(out.text.includes("3 passed; 1 skipped; 0 failed."), out.text);
    // The build runner's protocol, as scripts/test.sh runs the unit tests.
    const built = await run(
      zig,
      ["build", "test", "-Dtest-hang=true", "--summary", "all"],
      skip,
      120_000,
    );
    assert.equal(built.code, 0, built.text);
    assert.match(built.text, /3\/4 tests passed; 1 skipped/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "under ThreadSanitizer the Zig test runner fails the test in which it reported, by name",
  // The sanitizer build is x86_64 Linux only (build.zig), and its first build compiles the
  // sanitizer's runtime (minutes of a 2-CPU machine: 6.5 min wall under load here), too much
  // for `./task test`'s 10-minute budget on a fresh CI machine. So it runs where the sanitizer
  // runs, by hand: KCORO_TEST_TSAN=1, as README's ThreadSanitizer paragraph says.
  ignore: Deno.build.os !== "linux" || Deno.build.arch !== "x86_64" ||
    Deno.env.get("KCORO_TEST_TSAN") !== "1",
  async fn() {
    // Before, a report only made the binary exit 66 once every test had passed, and a forked
    // child inherits the count: the first test to fail was a later one whose child exited 66.
    const dir = await Deno.makeTempDir();
    try {
      // Compiled first: the first time, the sanitizer's runtime too (minutes).
      const built = await run(
        zig,
        ["build", "test-exe", "-Dtest-hang=true", "-Dtsan=true", "--prefix", dir],
        {},
        900_000,
      );
      assert.equal(built.code, 0, built.text);
      const ran = await run(
        `${dir}/bin/kcoro-hang-test-tsan`,
        [],
        { KCORO_TEST_HANG: "race" },
        60_000,
      );
      assert.equal(ran.code, 66, ran.text); // the sanitizer's exit status
      assert.match(ran.text, /WARNING: ThreadSanitizer: data race/);
      const named = ran.text.indexOf(`3/4 ${RACED}...`);
      const charged = ran.text.indexOf(
        "kcoro test runner: ThreadSanitizer reported 1 warning(s) during this test (above)\n" +
          "FAIL (ThreadSanitizerReport)\n",
      );
      assert.ok(named >= 0 && charged > named, ran.text);
      // A child forked after the report exits 0, not with the sanitizer's 66 for its parent's
      // report (which failed every later test whose child exited).
      // (The child's exit still prints the sanitizer's count, the parent's report, in its line.)
      const forked = ran.text.indexOf(`4/4 ${FORKED}...`);
      assert.ok(forked > charged && ran.text.indexOf("OK\n", forked) > forked, ran.text);
      assert.ok(!ran.text.slice(forked).includes("FAIL"), ran.text);
      assert.ok(ran.text.includes("3 passed; 0 skipped; 1 failed."), ran.text);

      // The build runner's protocol, as `zig build test -Dtsan=true` runs the unit tests.
      const out = await run(zig, [
        "build",
        "test",
        "-Dtest-hang=true",
        "-Dtsan=true",
        "--summary",
        "all",
      ], {
        KCORO_TEST_HANG: "race",
      }, 120_000);
      assert.notEqual(out.code, 0, out.text);
      assert.ok(out.text.includes(`'${RACED}' failed`), out.text);
      // Failed, and not counted skipped too (the race test skips once it raced).
      assert.ok(out.text.includes("3/4 tests passed; 1 failed"), out.text);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ./task (the toolchain wrapper) and scripts/test.sh (./task test, which CI's .ci/run runs), each
// run in a throwaway checkout against a fake toolchain: stub `npm` and `python3` first on PATH
// record their calls and make fake `deno` and `zig` binaries, so install, no-op, recovery and the
// install lock are checked without network, in seconds. What the real registries do (npm's
// retries without a network, Debian's "externally managed" pip with --target) was checked by hand
// on real installs; the stubs only stand in for them.
import assert from "node:assert/strict";
import { until, within } from "./support.ts";

const repo = new URL("../", import.meta.url).pathname;
const DENO_VERSION = "2.9.6";
const ZIG_VERSION = "0.15.2";

/** `npm install ... --prefix P deno@V`: lays out the npm package `deno`'s binary under P. */
const FAKE_NPM = `#!/bin/sh
echo "npm $*" >>"$FAKE_LOG"
all=" $* "
echo "npm retries $npm_config_fetch_retry_mintimeout $npm_config_fetch_retry_maxtimeout" >>"$FAKE_LOG"
if [ "$1" = config ]; then echo "http://registry.invalid/"; exit 0; fi
prefix=
version=
while [ $# -gt 0 ]; do
  case $1 in
  --prefix) prefix=$2; shift ;;
  deno@*) version=\${1#deno@} ;;
  esac
  shift
done
if [ -n "\${FAKE_HOLD:-}" ]; then # stays in the install until the test says go (bounded)
  : >"$FAKE_HOLD.started"
  n=0
  until [ -f "$FAKE_HOLD.go" ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done
fi
if [ -n "\${FAKE_NPM_FAIL:-}" ]; then echo "npm error $FAKE_NPM_FAIL" >&2; exit 1; fi
# As npm: an omitted optional dependency (the binary) is installed only with --include=optional.
case $all in *" --include=optional "*) ;; *) [ "\${npm_config_omit:-}" != optional ] || exit 0 ;; esac
d=$prefix/node_modules/@deno/linux-x64-glibc
mkdir -p "$d"
cat >"$d/deno" <<EOF
#!/bin/sh
if [ -n "\\\${FAKE_DENO_BROKEN:-}" ]; then echo "deno: cannot execute binary file" >&2; exit 126; fi
if [ "\\$1" = --version ]; then echo "deno $version (stable, fake)"; exit 0; fi
echo "deno \\$*" >>"\\$FAKE_LOG"
echo "ran deno \\$* in [\\$PWD]"
echo "DENO_DIR=[\\$DENO_DIR]"
echo "ZIG_GLOBAL_CACHE_DIR=[\\$ZIG_GLOBAL_CACHE_DIR]"
echo "KCORO_ZIG=[\\$KCORO_ZIG]"
echo "zig on PATH: \\$(command -v zig)"
if (true >&9) 2>/dev/null; then echo "deno \\$* wrote this to fd 9" >&9; else echo "fd 9: closed"; fi
EOF
chmod +x "$d/deno"
# Killed once the binary is there, before npm returns (and so before ./task writes the stamp).
if [ -n "\${FAKE_NPM_KILLED:-}" ]; then kill -9 $$; fi
exit 0
`;

/** `python3 -m pip install ... --target T ziglang==V`: lays out the PyPI package `ziglang`. */
const FAKE_PYTHON = `#!/bin/sh
echo "python3 $*" >>"$FAKE_LOG"
[ "$1 $2" = "-m pip" ] || exit 2
if [ -n "\${FAKE_NO_PIP:-}" ]; then echo "$0: No module named pip" >&2; exit 1; fi
if [ "$3" = --version ]; then echo "pip 99.0 (fake)"; exit 0; fi
# As pip: a pip.conf or PIP_* setting of the caller's that refuses this install.
case \${PIP_USER:-} in 1 | true | yes | on) echo "ERROR: Can not combine '--user' and '--target'" >&2; exit 1 ;; esac
case \${PIP_REQUIRE_VIRTUALENV:-} in 1 | true | yes | on) echo "ERROR: Could not find an activated virtualenv (required)." >&2; exit 3 ;; esac
[ -z "\${PIP_PREFIX:-}" ] || { echo "ERROR: Cannot set --home and --prefix together" >&2; exit 1; }
target=
version=
while [ $# -gt 0 ]; do
  case $1 in
  --target) target=$2; shift ;;
  ziglang==*) version=\${1#ziglang==} ;;
  esac
  shift
done
# As pip: a root setting puts the install under it (real pip: <root>/tmp/pip-target-*/...), not
# in --target, and succeeds.
[ -z "\${PIP_ROOT:-}" ] || target=$PIP_ROOT$target
mkdir -p "$target/ziglang/lib/std"
cat >"$target/ziglang/zig" <<EOF
#!/bin/sh
if [ -n "\\\${FAKE_ZIG_BROKEN:-}" ]; then echo "zig: Exec format error" >&2; exit 126; fi
if [ "\\$1" = version ]; then echo "$version"; exit 0; fi
echo "zig \\$*" >>"\\$FAKE_LOG"
EOF
chmod +x "$target/ziglang/zig"
# Killed once the binary is there, before its standard library (and the stamp).
if [ -n "\${FAKE_PIP_KILLED:-}" ]; then kill -9 $$; fi
: >"$target/ziglang/lib/std/std.zig"
`;

/** A throwaway checkout holding only ./task, with the fake npm and python3 in `bin`. */
interface Checkout {
  /** The temporary folder that holds the checkout (`root`), the fakes and their log. */
  base: string;
  root: string;
  bin: string;
  /** The calls the stubs and fake binaries recorded since the last `reset`. */
  calls(): string[];
  reset(): void;
  /** The runs started in it (`start`): removeCheckout ends those still running first. */
  runs: Run[];
}

async function checkout(name = "kcoro task test "): Promise<Checkout> {
  const base = await Deno.makeTempDir({ prefix: name });
  const root = `${base}/checkout with space`;
  const bin = `${base}/fake bin`;
  await Deno.mkdir(root);
  await Deno.mkdir(bin);
  await Deno.copyFile(`${repo}task`, `${root}/task`);
  await Deno.chmod(`${root}/task`, 0o755);
  for (
    const [file, text] of [["npm", FAKE_NPM], ["python3", FAKE_PYTHON], ["python", FAKE_PYTHON]]
  ) {
    await Deno.writeTextFile(`${bin}/${file}`, text, { mode: 0o755 });
  }
  const log = `${base}/calls`;
  Deno.writeTextFileSync(log, "");
  return {
    base,
    root,
    bin,
    calls: () => Deno.readTextFileSync(log).split("\n").filter((l) => l !== ""),
    reset: () => Deno.writeTextFileSync(log, ""),
    runs: [],
  };
}

async function removeCheckout(c: Checkout): Promise<void> {
  // A run that a failed assertion left going (a ./task waiting on a lock) wrote into the
  // checkout as it was removed: the test failed with "Directory not empty", which hid the
  // assertion's message, and the run went on after its test.
  for (const run of c.runs) await run.stop();
  await Deno.remove(c.base, { recursive: true });
}

/** The system's commands, less `without` (a folder of links to them, for PATH). */
async function systemWithout(c: Checkout, without: string[]): Promise<string> {
  const dir = `${c.base}/system`;
  await Deno.mkdir(dir);
  for (const from of ["/usr/bin", "/bin"]) {
    for (const e of Deno.readDirSync(from)) {
      if (without.includes(e.name)) continue;
      try {
        Deno.symlinkSync(`${from}/${e.name}`, `${dir}/${e.name}`);
      } catch (err) {
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      }
    }
  }
  return dir;
}

/**
 * A script that runs `/bin/sh "$@"` as nobody (uid 65534, through setpriv: the test is root),
 * for `start`'s `task`. What the checkout holds is opened to nobody first, folders and files
 * alike: readable, and runnable where it is root's (the fakes, ./task); folders in `writable`
 * and the calls log writable too. Before, only the folders named were: under a umask of 077 the
 * others (the fakes' folder, scripts/, the checkout) stayed root's alone, and the run as nobody
 * failed.
 */
function asNobodyIn(c: Checkout, writable: string[]): string {
  const open = (path: string) => {
    for (const e of Deno.readDirSync(path)) {
      if (e.isSymlink) continue; // chmod would change what it points to (systemWithout's)
      const at = `${path}/${e.name}`;
      if (e.isDirectory) open(at);
      else Deno.chmodSync(at, (Deno.statSync(at).mode! & 0o100) ? 0o755 : 0o644);
    }
    Deno.chmodSync(path, writable.includes(path) ? 0o777 : 0o755);
  };
  open(c.base);
  Deno.chmodSync(`${c.base}/calls`, 0o666);
  const script = `${c.base}/as nobody`;
  Deno.writeTextFileSync(
    script,
    'exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh "$@"\n',
  );
  Deno.chmodSync(script, 0o755);
  return script;
}

interface Run {
  /** The shell's process id (to signal it). */
  pid: number;
  /** stdout and stderr so far. */
  text(): string;
  done: Promise<{ code: number; text: string }>;
  /** Kills the run and every process it started (what RUN_LIMIT_MS does). */
  kill(): void;
  /** Kills it as `kill` unless it has ended, then waits for its end. */
  stop(): Promise<void>;
}

/** How long one run may take: a ./task that waits for ever (a lock never given up) is killed. */
const RUN_LIMIT_MS = 30_000;

/**
 * Starts `/bin/sh <task> args` (dash on Debian) with only `env`, and PATH: the fakes, then the
 * system's. Killed after RUN_LIMIT_MS, saying so in its text, so a run that hangs fails the test
 * instead of hanging the suite: in a process group of its own (detached), all of which is killed,
 * as a `flock` it waits in (or any process it started) holds its output open, and `done` waited
 * for that output's end for ever when only the shell was killed.
 */
function start(
  c: Checkout,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; task?: string; path?: string } = {},
): Run {
  const child = new Deno.Command("/bin/sh", {
    args: [opts.task ?? `${c.root}/task`, ...args],
    cwd: opts.cwd ?? c.root,
    clearEnv: true, // ./task test sets DENO_DIR, KCORO_ZIG and the like: none of those here
    env: {
      PATH: `${c.bin}:${opts.path ?? "/usr/bin:/bin"}`,
      HOME: c.base,
      FAKE_LOG: `${c.base}/calls`,
      ...opts.env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  let text = "";
  const read = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  let killed = "";
  const kill = (why: string) => {
    killed ||= why;
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // the group has ended
    }
  };
  const limit = setTimeout(() => kill(`still running after ${RUN_LIMIT_MS} ms`), RUN_LIMIT_MS);
  const done = Promise.all([read(child.stdout), read(child.stderr), child.status]).then((
    [, , st],
  ) => ({ code: st.code, text: killed ? `${text}\n[killed: ${killed}]` : text }));
  let ended = false;
  const clear = () => {
    ended = true;
    clearTimeout(limit);
  };
  done.then(clear, clear);
  const run = {
    text: () => text,
    done,
    kill: () => kill("by the test"),
    stop: async () => {
      if (!ended) kill("by the test's end");
      await done.catch(() => {});
    },
    pid: child.pid,
  };
  c.runs.push(run);
  return run;
}

async function task(
  c: Checkout,
  args: string[],
  opts: Parameters<typeof start>[2] = {},
): Promise<{ code: number; text: string }> {
  return await start(c, args, opts).done;
}

const installs = (c: Checkout) =>
  c.calls().filter((l) => /^npm install|^python3 -m pip install/.test(l)).map((l) =>
    l.startsWith("npm") ? "npm" : "pip"
  );

Deno.test("./task installs both pins on first use and runs deno task with its arguments; a second run installs nothing", async () => {
  const c = await checkout();
  try {
    const first = await task(c, ["build", "--x", "a b"]);
    assert.equal(first.code, 0, first.text);
    assert.deepEqual(installs(c), ["npm", "pip"]);
    assert.ok(
      c.calls().some((l) =>
        l.startsWith("npm install ") && l.includes(" --loglevel=error ") &&
        l.endsWith(` --prefix ${c.root}/.toolchain/deno/npm deno@${DENO_VERSION}`)
      ),
      c.calls().join("\n"),
    );
    assert.ok(
      c.calls().some((l) =>
        l.endsWith(`--target ${c.root}/.toolchain/zig/py ziglang==${ZIG_VERSION}`)
      ),
    );
    assert.ok(c.calls().includes("deno task build --x a b"), c.calls().join("\n"));
    assert.equal(Deno.readTextFileSync(`${c.root}/.toolchain/deno/.version`), `${DENO_VERSION}\n`);
    assert.equal(Deno.readTextFileSync(`${c.root}/.toolchain/zig/.version`), `${ZIG_VERSION}\n`);
    c.reset();
    const second = await task(c, ["check"]);
    assert.equal(second.code, 0, second.text);
    assert.deepEqual(c.calls(), ["deno task check"], "the second run installed or probed again");
    assert.equal(second.text.includes("task:"), false, second.text);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: an install killed after its binary landed, before the stamp, is redone by the next run", async () => {
  const c = await checkout();
  try {
    let r = await task(c, ["build"], { env: { FAKE_NPM_KILLED: "1" } });
    assert.notEqual(r.code, 0, r.text);
    assert.ok(
      Deno.statSync(`${c.root}/.toolchain/deno/npm/node_modules/@deno/linux-x64-glibc/deno`),
    );
    r = await task(c, ["build"], { env: { FAKE_PIP_KILLED: "1" } });
    assert.notEqual(r.code, 0, r.text);
    assert.ok(Deno.statSync(`${c.root}/.toolchain/zig/py/ziglang/zig`));
    assert.deepEqual(
      c.calls().filter((l) => l.startsWith("deno task")),
      [],
      "a half-installed tool ran",
    );
    c.reset();
    r = await task(c, ["build"]);
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(
      installs(c),
      ["pip"],
      "deno was complete after the second run: only zig again",
    );
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: a stamp that matches but a binary that is missing, does not run or reports another version is installed again", async () => {
  const c = await checkout();
  try {
    assert.equal((await task(c, ["build"])).code, 0);
    const deno = `${c.root}/.toolchain/deno/npm/node_modules/@deno/linux-x64-glibc/deno`;
    const zig = `${c.root}/.toolchain/zig/py/ziglang/zig`;
    const breakings: [string, () => void, string[]][] = [
      ["deno does not run", () => Deno.writeTextFileSync(deno, "#!/bin/sh\nexit 1\n"), ["npm"]],
      ["deno is missing", () => Deno.removeSync(deno), ["npm"]],
      ["zig reports 0.14.1", () => Deno.writeTextFileSync(zig, "#!/bin/sh\necho 0.14.1\n"), [
        "pip",
      ]],
      [
        "zig's std is missing",
        () => Deno.removeSync(`${c.root}/.toolchain/zig/py/ziglang/lib/std`, { recursive: true }),
        ["pip"],
      ],
    ];
    for (const [what, breakIt, again] of breakings) {
      breakIt();
      c.reset();
      const r = await task(c, ["build"]);
      assert.equal(r.code, 0, `${what}: ${r.text}`);
      assert.deepEqual(installs(c), again, what);
      assert.match(
        r.text,
        /task: the (deno|zig) in \.toolchain\/\w+ is broken \(its stamp says [\d.]+, its binary reports [^)]+\): installing it again/,
        what,
      );
      assert.ok(c.calls().includes("deno task build"), what);
    }
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: a pin changed since the install is installed, saying so, not calling the old one broken", async () => {
  const c = await checkout();
  try {
    assert.equal((await task(c, ["build"])).code, 0);
    // What a pull that bumps the pin finds: a complete install of the version pinned before.
    const deno = `${c.root}/.toolchain/deno/npm/node_modules/@deno/linux-x64-glibc/deno`;
    Deno.writeTextFileSync(deno, '#!/bin/sh\necho "deno 2.9.5 (stable, fake)"\n');
    Deno.writeTextFileSync(`${c.root}/.toolchain/deno/.version`, "2.9.5\n");
    c.reset();
    const r = await task(c, ["build"]);
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(installs(c), ["npm"]);
    assert.match(
      r.text,
      /task: the deno pin changed: \.toolchain\/deno holds 2\.9\.5, \.\/task pins 2\.9\.6: installing 2\.9\.6\n/,
    );
    assert.doesNotMatch(r.text, /broken/);
    assert.equal(Deno.readTextFileSync(`${c.root}/.toolchain/deno/.version`), `${DENO_VERSION}\n`);
    // An empty stamp (an install killed as it wrote it) is one cut short, as a missing one: not
    // "holds , ./task pins 2.9.6".
    Deno.writeTextFileSync(`${c.root}/.toolchain/zig/.version`, "");
    c.reset();
    const empty = await task(c, ["build"]);
    assert.equal(empty.code, 0, empty.text);
    assert.deepEqual(installs(c), ["pip"]);
    assert.doesNotMatch(empty.text, /pin changed|broken/);
    assert.match(empty.text, /task: installing Zig 0\.15\.2 from PyPI into \.toolchain\/zig\n/);
  } finally {
    await removeCheckout(c);
  }
});

/**
 * Two first runs at once: the first holds its npm install until the second has either said it
 * waits for the lock or started an install of its own, which it did before the lock (both
 * emptied .toolchain/deno at once, and one failed).
 */
async function twoAtOnce(c: Checkout, path?: string): Promise<void> {
  const hold = `${c.base}/hold`;
  const first = start(c, ["check"], { env: { FAKE_HOLD: hold }, path });
  await until(
    () => existsSync(`${hold}.started`),
    () => `the first install to start: ${first.text()}`,
  );
  const second = start(c, ["demo"], { env: { FAKE_HOLD: hold }, path });
  await until(
    () => /waiting for another \.\/task/.test(second.text()) || installs(c).length > 1,
    () => `the second run to wait or install: ${second.text()}`,
  );
  Deno.writeTextFileSync(`${hold}.go`, "");
  const [a, b] = [await first.done, await second.done];
  assert.equal(a.code, 0, a.text);
  assert.equal(b.code, 0, b.text);
  assert.deepEqual(installs(c), ["npm", "pip"], "installed twice");
  assert.deepEqual(c.calls().filter((l) => l.startsWith("deno task")).sort(), [
    "deno task check",
    "deno task demo",
  ]);
}

/** The claims on a stale lock (.lock.break.<pid>, and the single .lock.break of before) there. */
function claims(c: Checkout): string[] {
  return [...Deno.readDirSync(`${c.root}/.toolchain`)].map((e) => e.name).filter((n) =>
    n.startsWith(".lock.break")
  ).sort();
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("./task: a second first run while one installs waits for it and installs nothing (flock)", async () => {
  const c = await checkout();
  try {
    await twoAtOnce(c);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("a run here that hangs is killed with what it started: a ./task waiting for good on an install lock (flock) ends its test", async () => {
  const c = await checkout();
  const lock = `${c.root}/.toolchain/.lock`;
  Deno.mkdirSync(`${c.root}/.toolchain`);
  // An install that never ends: the test's own flock holds the lock until its stdin closes.
  const holder = new Deno.Command("flock", {
    args: [lock, "-c", "cat >/dev/null"],
    stdin: "piped",
    stdout: "null",
  }).spawn();
  try {
    const held = () => new Deno.Command("flock", { args: ["-n", lock, "true"] }).outputSync();
    await until(() => held().code !== 0, "the test's flock to hold the lock");
    const run = start(c, ["build"]);
    await until(
      () => /waiting for another \.\/task/.test(run.text()),
      () => `./task to wait for the lock: ${run.text()}`,
    );
    run.kill();
    // Before, only the shell was killed: its `flock 9` kept the output open, and this waited for
    // good (RUN_LIMIT_MS's kill alike).
    const r = await within(run.done, 10_000, "the killed run's end");
    assert.notEqual(r.code, 0, r.text);
    assert.match(r.text, /\n\[killed: by the test\]$/);
    assert.deepEqual(installs(c), []);
  } finally {
    await holder.stdin.close();
    await holder.status;
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a lock directory serves, and one left by a process that is gone is removed", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    await twoAtOnce(c, path);
    assert.equal(existsSync(`${c.root}/.toolchain/.lock.d`), false, "the lock stayed");
    // A lock of a process that is gone (its pid: one that ended).
    const gone = new Deno.Command("/bin/sh", { args: ["-c", "echo $$"], stdout: "piped" })
      .outputSync();
    const pid = new TextDecoder().decode(gone.stdout).trim();
    Deno.mkdirSync(`${c.root}/.toolchain/.lock.d`);
    Deno.writeTextFileSync(`${c.root}/.toolchain/.lock.d/pid`, `${pid}\n`);
    Deno.removeSync(`${c.root}/.toolchain/deno/.version`);
    c.reset();
    const r = await task(c, ["build"], { path });
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      new RegExp(`removing a stale install lock \\(\\.toolchain/\\.lock\\.d\\) of pid ${pid}`),
    );
    assert.deepEqual(installs(c), ["npm"]);
    assert.equal(existsSync(`${c.root}/.toolchain/.lock.d`), false, "the lock stayed");
    // A lock whose pid file holds no pid is stale too: "self" (it named /proc/self, always
    // there) or "0" (`kill -0 0` signals the caller's own process group: before, the lock was
    // never stale, and ./task waited on it for good).
    for (const bad of ["self", "0"]) {
      Deno.mkdirSync(`${c.root}/.toolchain/.lock.d`);
      Deno.writeTextFileSync(`${c.root}/.toolchain/.lock.d/pid`, `${bad}\n`);
      Deno.removeSync(`${c.root}/.toolchain/deno/.version`);
      const r = await task(c, ["build"], { path });
      assert.equal(r.code, 0, r.text);
      assert.match(
        r.text,
        new RegExp(`removing a stale install lock \\(\\.toolchain/\\.lock\\.d\\) of pid ${bad},`),
      );
    }
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a lock without a pid is stale once it has had none for 10 s on end, not 10 s into a wait on an owner that ended", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    // The waiter's `sleep 1`, logged and short: its seconds, counted.
    Deno.writeTextFileSync(
      `${c.bin}/sleep`,
      '#!/bin/sh\necho "sleep $*" >>"$FAKE_LOG"\nexec /bin/sleep 0.01\n',
      { mode: 0o755 },
    );
    const sleeps = () => c.calls().filter((l) => l.startsWith("sleep ")).length;
    const lock = `${c.root}/.toolchain/.lock.d`;
    Deno.mkdirSync(lock, { recursive: true });
    Deno.writeTextFileSync(`${lock}/pid`, `${Deno.pid}\n`); // an owner that is running
    const run = start(c, ["build"], { path });
    await until(() => sleeps() >= 12, () => `a wait of 12 s on that owner: ${run.text()}`);
    // That owner finished, and another ./task took the lock and has not written its pid yet.
    Deno.removeSync(`${lock}/pid`);
    const from = sleeps();
    await until(
      () => sleeps() >= from + 5 || /removing a stale/.test(run.text()),
      () => `5 s more: ${run.text()}`,
    );
    // Before, the wait's 12 s counted: the new owner's lock was removed at once, and both ran.
    assert.doesNotMatch(run.text(), /removing a stale/);
    assert.ok(existsSync(lock), run.text());
    assert.deepEqual(installs(c), []);
    // Its owner never writes a pid (it died after the mkdir): stale 10 s on.
    const r = await run.done;
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      /removing a stale install lock \(\.toolchain\/\.lock\.d\) of pid \?, which is gone/,
    );
    assert.ok(sleeps() >= from + 9, `removed after ${sleeps() - from} s without a pid`);
    assert.deepEqual(installs(c), ["npm", "pip"]);
    assert.equal(existsSync(lock), false, "the lock stayed");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: two waiters that find a lock stale at once take it one at a time: the second does not remove the lock the first took since", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "cat"]);
    assert.equal((await task(c, ["build"], { path: `${path}:/usr/bin` })).code, 0);
    // The waiters' `sleep 1` between looks, short: the second waits on the first's claim, then
    // on its install (2 s of sleeps before).
    Deno.writeTextFileSync(`${c.bin}/sleep`, "#!/bin/sh\nexec /bin/sleep 0.01\n", { mode: 0o755 });
    // A lock of a process that is gone.
    const gone = new Deno.Command("/bin/sh", { args: ["-c", "echo $$"], stdout: "piped" })
      .outputSync();
    const dead = new TextDecoder().decode(gone.stdout).trim();
    Deno.mkdirSync(`${c.root}/.toolchain/.lock.d`);
    Deno.writeTextFileSync(`${c.root}/.toolchain/.lock.d/pid`, `${dead}\n`);
    Deno.removeSync(`${c.root}/.toolchain/deno/.version`);
    // A cat that holds the first two reads of the dead pid: the first until the second has
    // read it too (both waiters judged the lock stale), the second (3 s at most) until the lock
    // names another pid (the first waiter took it), so that its waiter acts on what it read. (It
    // returned once the pid was no longer the dead one: at the first's removal, before its take,
    // so the second's removal, if any, removed nothing.)
    const barrier = `${c.base}/barrier`;
    Deno.writeTextFileSync(
      `${c.bin}/cat`,
      `#!/bin/sh
out=$(/bin/cat "$@") || exit $?
case $1 in
*/.lock.d/pid)
  if [ "$out" = "$FAKE_DEAD" ]; then
    n=0
    if mkdir "$FAKE_BARRIER.1" 2>/dev/null; then
      until [ -d "$FAKE_BARRIER.2" ] || [ $n -ge 500 ]; do /bin/sleep 0.01; n=$((n + 1)); done
    elif mkdir "$FAKE_BARRIER.2" 2>/dev/null; then
      echo "second read of the dead pid" >>"$FAKE_LOG"
      until { p=$(/bin/cat "$1" 2>/dev/null) && [ -n "$p" ] && [ "$p" != "$FAKE_DEAD" ]; } || [ $n -ge 300 ]; do
        /bin/sleep 0.01; n=$((n + 1))
      done
    fi
  fi ;;
esac
printf '%s\n' "$out"
`,
      { mode: 0o755 },
    );
    c.reset();
    // The first to take the lock stays in its install until the other has acted on the pid it
    // read: waited (the lock now names the first), or (before) removed the lock and installed
    // as well. Else the first could finish before the other acted, and a removal of its lock
    // went unseen.
    const hold = `${c.base}/hold`;
    const env = { FAKE_DEAD: dead, FAKE_BARRIER: barrier, FAKE_HOLD: hold };
    const [a, b] = [start(c, ["check"], { path, env }), start(c, ["demo"], { path, env })];
    await until(
      () => /waiting for another/.test(a.text() + b.text()) || installs(c).length >= 2,
      () => `the second waiter's move: ${a.text()}\n${b.text()}`,
    );
    Deno.writeTextFileSync(`${hold}.go`, "");
    const [ra, rb] = [await a.done, await b.done];
    assert.equal(ra.code, 0, ra.text);
    assert.equal(rb.code, 0, rb.text);
    assert.ok(c.calls().includes("second read of the dead pid"), c.calls().join("\n"));
    // Before, each removed the lock and took it: both installed deno, at once.
    assert.deepEqual(installs(c), ["npm"], `${ra.text}\n${rb.text}`);
    assert.equal(existsSync(`${c.root}/.toolchain/.lock.d`), false, "the lock stayed");
    assert.deepEqual(claims(c), [], "a claim stayed");
    // A claim left by a waiter killed in it (its pid gone) is removed, then the stale lock.
    Deno.mkdirSync(`${c.root}/.toolchain/.lock.d`);
    Deno.writeTextFileSync(`${c.root}/.toolchain/.lock.d/pid`, `${dead}\n`);
    Deno.symlinkSync(dead, `${c.root}/.toolchain/.lock.break.${dead}`);
    Deno.removeSync(`${c.root}/.toolchain/deno/.version`);
    c.reset();
    const r = await task(c, ["build"], { path });
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      new RegExp(`removing a stale install lock \\(\\.toolchain/\\.lock\\.d\\) of pid ${dead}`),
    );
    assert.deepEqual(installs(c), ["npm"]);
    assert.equal(existsSync(`${c.root}/.toolchain/.lock.d`), false, "the lock stayed");
    assert.deepEqual(claims(c), [], "a claim stayed");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a waiter that finds another's claim on a stale lock waits for it (sleeping between looks), and leaves a live claimer's claim", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    assert.equal((await task(c, ["build"], { path })).code, 0);
    // The waiter's `sleep 1` and its claims (`ln -s`), logged; each sleep short.
    Deno.writeTextFileSync(
      `${c.bin}/sleep`,
      '#!/bin/sh\necho "sleep $*" >>"$FAKE_LOG"\nexec /bin/sleep 0.01\n',
      { mode: 0o755 },
    );
    Deno.writeTextFileSync(
      `${c.bin}/ln`,
      '#!/bin/sh\necho "ln $*" >>"$FAKE_LOG"\nexec /bin/ln "$@"\n',
      { mode: 0o755 },
    );
    const count = (word: string) => c.calls().filter((l) => l.startsWith(`${word} `)).length;
    const gone = new Deno.Command("/bin/sh", { args: ["-c", "echo $$"], stdout: "piped" })
      .outputSync();
    const dead = new TextDecoder().decode(gone.stdout).trim();
    const lock = `${c.root}/.toolchain/.lock.d`;
    const claim = `${c.root}/.toolchain/.lock.break.${Deno.pid}`;
    Deno.mkdirSync(lock);
    Deno.writeTextFileSync(`${lock}/pid`, `${dead}\n`);
    // Another waiter's claim on it, that waiter running (this test's process).
    Deno.symlinkSync(`${Deno.pid}`, claim);
    Deno.removeSync(`${c.root}/.toolchain/deno/.version`);
    c.reset();
    const run = start(c, ["build"], { path });
    await until(
      () => count("sleep") >= 3 || count("ln") >= 50 || /removing a stale/.test(run.text()),
      () => run.text(),
    );
    // Before, a waiter without the claim looked again at once: a loop of claims tried, with no
    // sleep between, for as long as the claimer took.
    assert.ok(count("ln") <= count("sleep") + 1, c.calls().join("\n"));
    assert.doesNotMatch(run.text(), /removing a stale/);
    assert.equal(Deno.readLinkSync(claim), `${Deno.pid}`, "the live claimer's claim was removed");
    assert.deepEqual(installs(c), []);
    Deno.removeSync(claim); // that waiter gave up its claim (the lock still stale)
    const r = await run.done;
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      new RegExp(`removing a stale install lock \\(\\.toolchain/\\.lock\\.d\\) of pid ${dead},`),
    );
    assert.deepEqual(installs(c), ["npm"]);
    assert.equal(existsSync(lock), false, "the lock stayed");
    assert.deepEqual(claims(c), [], "a claim stayed");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a lock of a zombie (a ./task killed, its parent reaping nothing) is stale", async () => {
  const c = await checkout();
  const parent = new Deno.Command("/bin/sh", {
    // The child ends once its parent has become a `sleep`, which never reaps it. (It ended at
    // once before: a shell may reap a child that ends before its exec, as bash does from its
    // SIGCHLD handler, and where /bin/sh is bash the test waited for a zombie that never came.)
    args: [
      "-c",
      `sh -c 'echo $$; i=0
        until grep -q "^Name:[[:space:]]*sleep$" /proc/$PPID/status || [ $i -ge 1000 ]; do
          sleep 0.01; i=$((i + 1))
        done' & exec sleep 60`,
    ],
    stdout: "piped",
  }).spawn();
  try {
    const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += value;
    }
    reader.releaseLock();
    const zombie = line.trim();
    const stat = () => {
      const ps = new Deno.Command("ps", { args: ["-o", "stat=", "-p", zombie] }).outputSync();
      return new TextDecoder().decode(ps.stdout).trim();
    };
    await until(() => stat().startsWith("Z"), () => `${zombie} a zombie: ${stat()}`);
    const path = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    Deno.mkdirSync(`${c.root}/.toolchain/.lock.d`, { recursive: true });
    Deno.writeTextFileSync(`${c.root}/.toolchain/.lock.d/pid`, `${zombie}\n`);
    const r = await task(c, ["build"], { path });
    // Before, `kill -0` succeeds on a zombie: the lock was never stale, and ./task waited on it
    // for good.
    assert.equal(r.code, 0, r.text);
    assert.match(
      r.text,
      new RegExp(`removing a stale install lock \\(\\.toolchain/\\.lock\\.d\\) of pid ${zombie},`),
    );
    assert.deepEqual(installs(c), ["npm", "pip"]);
  } finally {
    try {
      parent.kill("SIGKILL");
    } catch { /* ended already */ }
    await parent.stdout.cancel().catch(() => {});
    await parent.status;
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a ./task killed as it takes the lock leaves none without a pid: the next run takes it at once", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "mkdir"]);
    // A mkdir of a lock directory that kills its ./task once it made it: before, the lock was
    // that directory, its pid written next, so the next run found one without a pid and waited
    // 10 s on it.
    Deno.writeTextFileSync(
      `${c.bin}/mkdir`,
      `#!/bin/sh
/bin/mkdir "$@" || exit $?
case $* in
*/.toolchain/.lock*) [ -z "\${FAKE_MKDIR_KILLS:-}" ] || kill -9 $PPID ;;
esac
`,
      { mode: 0o755 },
    );
    const killed = await task(c, ["build"], { path, env: { FAKE_MKDIR_KILLS: "1" } });
    assert.notEqual(killed.code, 0, killed.text);
    assert.deepEqual(installs(c), [], "the killed run installed");
    const r = await task(c, ["build"], { path });
    assert.equal(r.code, 0, r.text);
    assert.doesNotMatch(r.text, /waiting for another|removing a stale/);
    assert.deepEqual(installs(c), ["npm", "pip"]);
    assert.equal(existsSync(`${c.root}/.toolchain/.lock.d`), false, "the lock stayed");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a second Ctrl-C as it gives up its lock at its exit still removes the lock", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "rm"]);
    // The exit's removal of the lock (\`rm -rf\` of the lock, renamed to .lock.old.<pid> first) is
    // interrupted by a Ctrl-C: its process group signalled, as a terminal does, before that rm
    // removes anything.
    // Before, the rm died of it, and the INT trap's \`exit\` ended ./task within its EXIT trap: the
    // lock stayed (for the next run to remove as stale, or to wait 10 s on, had the rm removed
    // only its pid).
    Deno.writeTextFileSync(
      `${c.bin}/rm`,
      `#!/bin/sh
case "$*" in
*/.lock.old.*) echo "rm at exit" >>"$FAKE_LOG"; kill -s INT 0 ;;
esac
exec /bin/rm "$@"
`,
      { mode: 0o755 },
    );
    const hold = `${c.base}/hold`;
    const run = start(c, ["build"], { path, env: { FAKE_HOLD: hold } });
    await until(() => existsSync(`${hold}.started`), () => `its install: ${run.text()}`);
    Deno.kill(-run.pid, "SIGINT"); // the first Ctrl-C: ./task and its npm
    const r = await run.done;
    assert.equal(r.code, 130, r.text);
    assert.ok(c.calls().includes("rm at exit"), c.calls().join("\n"));
    assert.deepEqual([...Deno.readDirSync(`${c.root}/.toolchain`)].map((e) => e.name).sort(), [
      ".lock",
      "deno",
    ]);
  } finally {
    await removeCheckout(c);
  }
});

/** The pid of a process that has ended. */
function deadPid(): string {
  const gone = new Deno.Command("/bin/sh", { args: ["-c", "echo $$"], stdout: "piped" })
    .outputSync();
  return new TextDecoder().decode(gone.stdout).trim();
}

Deno.test("./task without flock: what a ./task killed in its lock's steps left (a new lock, a lock it was removing, its claim) is removed once its pid is gone, an rm of it that fails no error; a live one's stays", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "rm"]);
    const tc = `${c.root}/.toolchain`;
    const dead = deadPid();
    // The removal of one, as another waiter removes it at the same moment: it is gone, and rm
    // says so with its status. Before, that status ended ./task there (set -e), with nothing
    // installed.
    Deno.writeTextFileSync(
      `${c.bin}/rm`,
      `#!/bin/sh
for last; do :; done
case $last in
*/.lock.old.$FAKE_DEAD)
  /bin/rm -rf "$last"
  echo "rm raced" >>"$FAKE_LOG"
  echo "rm: cannot remove '$last': No such file or directory" >&2
  exit 1 ;;
esac
exec /bin/rm "$@"
`,
      { mode: 0o755 },
    );
    Deno.mkdirSync(tc);
    for (const dir of [`.lock.new.${dead}`, `.lock.old.${dead}`, `.lock.new.${Deno.pid}`]) {
      Deno.mkdirSync(`${tc}/${dir}`);
      Deno.writeTextFileSync(`${tc}/${dir}/pid`, `${dir.split(".").at(-1)}\n`);
    }
    Deno.symlinkSync(dead, `${tc}/.lock.break.${dead}`);
    const r = await task(c, ["build"], { path, env: { FAKE_DEAD: dead } });
    assert.equal(r.code, 0, r.text);
    assert.ok(c.calls().includes("rm raced"), c.calls().join("\n"));
    assert.deepEqual(installs(c), ["npm", "pip"]);
    // Before, a SIGKILL right after its mkdir left .lock.new.<pid> there for good.
    assert.deepEqual(
      [...Deno.readDirSync(tc)].map((e) => e.name).filter((n) => n.startsWith(".lock")).sort(),
      [".lock", `.lock.new.${Deno.pid}`],
    );
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a claim on a stale lock is its waiter's own (.lock.break.<pid>): of claims made at once the lowest pid's holds, a gone waiter's is passed over, and no two waiters hold one", async () => {
  // Before, the claim was one name, .lock.break, and a gone waiter's was renamed aside, looked
  // at, and put back when another's: three waiters (one gone in its claim, one that removed it
  // and claimed, and this one, whose rename took that claim aside), and a fourth claim went into
  // the gap, which the put-back then replaced: two waiters held the claim, and both removed the
  // stale lock (the second the lock the first had taken since).
  const c = await checkout();
  const rivals: number[] = [];
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "ln", "sleep"]);
    const tc = `${c.root}/.toolchain`;
    // Each wait between looks logs the claims there. The first claim of a run (its `ln -s`) is
    // met by a rival's made at once, FAKE_RIVAL's ("new": a `sleep` started then, so a pid above
    // the run's), and by one of a waiter gone since.
    Deno.writeTextFileSync(
      `${c.bin}/sleep`,
      `#!/bin/sh
echo "sleep $* [$(cd "$FAKE_TC" && ls -A | grep '^\\.lock\\.break' | tr '\\n' ' ')]" >>"$FAKE_LOG"
exec /bin/sleep 0.01
`,
      { mode: 0o755 },
    );
    Deno.writeTextFileSync(
      `${c.bin}/ln`,
      `#!/bin/sh
/bin/ln "$@" || exit $?
for last; do :; done
case $last in
*/.lock.break*)
  if [ -n "\${FAKE_RIVAL:-}" ] && [ ! -e "$FAKE_LOG.rival" ]; then
    : >"$FAKE_LOG.rival"
    r=$FAKE_RIVAL
    if [ "$r" = new ]; then
      /bin/sleep 60 </dev/null >/dev/null 2>&1 &
      r=$!
    fi
    echo "rival $r" >>"$FAKE_LOG"
    /bin/ln -s "$r" "$FAKE_TC/.lock.break.$r"
    /bin/ln -s "$FAKE_DEAD" "$FAKE_TC/.lock.break.$FAKE_DEAD"
  fi ;;
esac
`,
      { mode: 0o755 },
    );
    assert.equal((await task(c, ["build"], { path })).code, 0);
    const dead = deadPid();
    for (const rival of ["1", "new"]) {
      Deno.mkdirSync(`${tc}/.lock.d`);
      Deno.writeTextFileSync(`${tc}/.lock.d/pid`, `${dead}\n`);
      Deno.removeSync(`${tc}/deno/.version`);
      try {
        Deno.removeSync(`${c.base}/calls.rival`);
      } catch { /* the first round */ }
      c.reset();
      const env = { FAKE_TC: tc, FAKE_RIVAL: rival, FAKE_DEAD: dead };
      const run = start(c, ["build"], { path, env });
      const sleeps = () => c.calls().filter((l) => l.startsWith("sleep "));
      await until(
        () => sleeps().length >= 3 || /removing a stale/.test(run.text()),
        () => run.text(),
      );
      const r = Number(c.calls().find((l) => l.startsWith("rival "))?.split(" ")[1]);
      if (rival === "new") rivals.push(r);
      assert.ok(r > 0, c.calls().join("\n"));
      // Before, a claim beside another live waiter's held: the stale lock was removed at once.
      assert.doesNotMatch(run.text(), /removing a stale/, `rival ${rival}`);
      assert.deepEqual(installs(c), []);
      // The gone waiter's claim: removed. The rival's: left. This run's own: given up while it
      // waits where the rival's pid is the lower (pid 1), kept where it is the higher (a `sleep`
      // started since: the higher unless pids wrapped around in between).
      const there = [`.lock.break.${r}`, ...(r > run.pid ? [`.lock.break.${run.pid}`] : [])];
      assert.deepEqual(
        sleeps().slice(0, 3),
        Array(3).fill(`sleep 1 [${there.sort().join(" ")} ]`), // ls's order (LC_ALL unset: C)
        `rival ${rival}`,
      );
      // That waiter is done: its claim gone (given up, or its pid).
      if (rival === "1") Deno.removeSync(`${tc}/.lock.break.1`);
      else Deno.kill(r, "SIGKILL");
      const done = await run.done;
      assert.equal(done.code, 0, done.text);
      assert.match(done.text, new RegExp(`removing a stale install lock .* of pid ${dead},`));
      assert.deepEqual(installs(c), ["npm"]);
      assert.deepEqual(claims(c), []);
      assert.equal(existsSync(`${tc}/.lock.d`), false, "the lock stayed");
    }
  } finally {
    for (const r of rivals) if (!gone(r)) Deno.kill(r, "SIGKILL");
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a signal while it holds a claim on a stale lock removes that claim at its exit", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "ln"]);
    const tc = `${c.root}/.toolchain`;
    // Its claim's `ln -s`, then a TERM to ./task (its parent): acted on once ln has ended, the
    // claim made. Before, its EXIT trap left the claim there (until the next run's sweep).
    Deno.writeTextFileSync(
      `${c.bin}/ln`,
      `#!/bin/sh
/bin/ln "$@" || exit $?
for last; do :; done
case $last in
*/.lock.break.*) echo "claimed $last" >>"$FAKE_LOG"; kill -s TERM "$PPID" ;;
esac
`,
      { mode: 0o755 },
    );
    const dead = deadPid();
    Deno.mkdirSync(`${tc}/.lock.d`, { recursive: true }); // a first run: nothing installed
    Deno.writeTextFileSync(`${tc}/.lock.d/pid`, `${dead}\n`);
    const r = await task(c, ["build"], { path });
    assert.equal(r.code, 143, r.text);
    assert.ok(c.calls().some((l) => l.startsWith("claimed ")), c.calls().join("\n"));
    assert.deepEqual(claims(c), [], "its claim stayed");
    // The stale lock is left as it was, for the next run.
    assert.equal(Deno.readTextFileSync(`${tc}/.lock.d/pid`), `${dead}\n`);
    assert.deepEqual(installs(c), []);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a waiter's new lock that lands in the lock as its owner removes it does not fail the owner's run, nor leave a lock", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "rm"]);
    // The first removal of the lock, by name (rm -rf .lock.d, as before) or renamed aside
    // (.lock.old.<pid>), into which a waiter's new lock (its mv, take_lock) lands once rm has
    // read the folder: its rmdir then fails. It lands in the renamed folder too: coreutils' mv
    // opens the lock (O_PATH) and renames into that folder, wherever it has gone since.
    Deno.writeTextFileSync(
      `${c.bin}/rm`,
      `#!/bin/sh
for last; do :; done
case $last in
*/.toolchain/.lock.d | */.toolchain/.lock.old.*)
  if [ -d "$last" ] && [ ! -e "$FAKE_LOG.landed" ]; then
    : >"$FAKE_LOG.landed"
    echo "rm of the lock as an entry lands: \${last##*/}" >>"$FAKE_LOG"
    /bin/rm -rf "$last/pid"
    /bin/mkdir "$last/.lock.new.999999999"
    exec /bin/rmdir "$last"
  fi ;;
esac
exec /bin/rm "$@"
`,
      { mode: 0o755 },
    );
    const r = await task(c, ["build"], { path });
    // Before, its drop of the lock failed ("Directory not empty"): ./task ended with an error
    // after its install (set -e), the lock (or, renamed, .lock.old.<pid>) left holding the
    // waiter's entry.
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(
      c.calls().filter((l) => l.startsWith("rm ")).map((l) => l.replace(/\d+$/, "N")),
      ["rm of the lock as an entry lands: .lock.old.N"],
    );
    assert.deepEqual(installs(c), ["npm", "pip"]);
    assert.deepEqual(
      [...Deno.readDirSync(`${c.root}/.toolchain`)].map((e) => e.name).filter((n) =>
        n.startsWith(".lock.")
      ),
      [],
    );
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a signal as it gives up its lock after its install does not remove the lock a waiter has taken since", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python", "rm"]);
    // As the lock, renamed aside, is removed: a waiter takes the lock (its new one renamed into
    // place, the name free), and a Ctrl-C comes, which kills that rm (its process group
    // signalled, as a terminal does) before it removes anything.
    Deno.writeTextFileSync(
      `${c.bin}/rm`,
      `#!/bin/sh
for last; do :; done
case $last in
*/.toolchain/.lock.old.*)
  if [ -d "$last" ] && [ ! -e "$FAKE_LOG.taken" ]; then
    : >"$FAKE_LOG.taken"
    echo "rm of the lock given up, a waiter's taken since" >>"$FAKE_LOG"
    /bin/mkdir "\${last%/*}/.lock.d" && echo "$FAKE_LIVE" >"\${last%/*}/.lock.d/pid"
    kill -s INT 0
  fi ;;
esac
exec /bin/rm "$@"
`,
      { mode: 0o755 },
    );
    const r = await task(c, ["build"], { path, env: { FAKE_LIVE: `${Deno.pid}` } });
    assert.equal(r.code, 130, r.text);
    assert.ok(c.calls().includes("rm of the lock given up, a waiter's taken since"), r.text);
    assert.deepEqual(installs(c), ["npm", "pip"]);
    // Before, the lock was still its own to the EXIT trap, which removed it by name: the
    // waiter's, which then installed beside whichever ./task came next.
    assert.equal(
      Deno.readTextFileSync(`${c.root}/.toolchain/.lock.d/pid`),
      `${Deno.pid}\n`,
      "the waiter's lock was removed",
    );
    // Its own, renamed aside, that the killed rm left: removed at its exit, not left to the next
    // run.
    assert.deepEqual(
      [...Deno.readDirSync(`${c.root}/.toolchain`)].map((e) => e.name).filter((n) =>
        n.startsWith(".lock.")
      ),
      [".lock.d"],
    );
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task without flock: a lock of another user's live process is not stale (kill -0's EPERM is no 'gone')", async () => {
  const c = await checkout();
  try {
    const path = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    Deno.writeTextFileSync(
      `${c.bin}/sleep`,
      '#!/bin/sh\necho "sleep $*" >>"$FAKE_LOG"\nexec /bin/sleep 0.01\n',
      { mode: 0o755 },
    );
    const sleeps = () => c.calls().filter((l) => l.startsWith("sleep ")).length;
    const lock = `${c.root}/.toolchain/.lock.d`;
    Deno.mkdirSync(lock, { recursive: true });
    // The owner: this test's process, seen by a ./task of another user (nobody, through
    // setpriv, as root here), or pid 1 (root's) where the test is not root.
    const id = new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync();
    const root = new TextDecoder().decode(id.stdout).trim() === "0";
    const owner = root ? Deno.pid : 1;
    Deno.writeTextFileSync(`${lock}/pid`, `${owner}\n`);
    let opts: Parameters<typeof start>[2] = { path };
    if (root) {
      const asNobody = asNobodyIn(c, [c.base, c.root, `${c.root}/.toolchain`, lock]);
      opts = { path, task: asNobody };
    }
    const run = start(c, root ? [`${c.root}/task`, "build"] : ["build"], opts);
    await until(() => sleeps() >= 3 || /removing a stale/.test(run.text()), () => run.text());
    // Before, kill -0's EPERM read as a process gone: the live owner's lock was removed.
    assert.doesNotMatch(run.text(), /removing a stale/);
    assert.match(run.text(), new RegExp(`waiting for another \\./task \\(pid ${owner}\\)`));
    assert.deepEqual(installs(c), []);
    Deno.removeSync(lock, { recursive: true }); // the owner finished
    const r = await run.done;
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(installs(c), ["npm", "pip"]);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task run through a link placed elsewhere (or a chain of them, relative or not) takes the script's own folder as the checkout", async () => {
  const c = await checkout();
  try {
    const bin = `${c.base}/home bin`;
    const more = `${c.base}/more/links`;
    Deno.mkdirSync(bin);
    Deno.mkdirSync(more, { recursive: true });
    Deno.symlinkSync(`${c.root}/task`, `${more}/task`); // absolute
    Deno.symlinkSync("../more/links/task", `${bin}/kcoro-task`); // relative, to a link
    const real = Deno.realPathSync(c.root);
    for (const link of [`${more}/task`, `${bin}/kcoro-task`]) {
      const r = await task(c, ["build"], { task: link, cwd: c.base });
      assert.equal(r.code, 0, `${link}: ${r.text}`);
      // Before, the link's folder was taken for the checkout: the toolchain was installed there,
      // and deno task ran there.
      assert.ok(r.text.includes(`ran deno task build in [${real}]\n`), `${link}: ${r.text}`);
    }
    assert.deepEqual([...Deno.readDirSync(bin)].map((e) => e.name), ["kcoro-task"]);
    assert.deepEqual([...Deno.readDirSync(more)].map((e) => e.name), ["task"]);
    assert.deepEqual(installs(c), ["npm", "pip"], "installed once, in the checkout");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: a fd 9 of the caller's (the install lock's number) is deno task's, with flock or without", async () => {
  const c = await checkout();
  try {
    // Before, the install took fd 9 for its lock and closed it: deno task ran without it.
    const withFd9 = `${c.base}/with fd 9`;
    Deno.writeTextFileSync(withFd9, 'exec 9>>"$FD9"\nexec /bin/sh "$@"\n');
    const fd9 = `${c.base}/fd 9`;
    const noFlock = await systemWithout(c, ["flock", "npm", "python3", "python"]);
    for (const path of [undefined, noFlock]) {
      await Deno.remove(`${c.root}/.toolchain`, { recursive: true }).catch(() => {});
      Deno.writeTextFileSync(fd9, "");
      c.reset();
      const r = await task(c, [`${c.root}/task`, "build"], {
        task: withFd9,
        env: { FD9: fd9 },
        path,
      });
      const how = path ? "without flock" : "with flock";
      assert.equal(r.code, 0, `${how}: ${r.text}`);
      assert.deepEqual(installs(c), ["npm", "pip"], how);
      assert.doesNotMatch(r.text, /fd 9: closed/, how);
      assert.equal(Deno.readTextFileSync(fd9), "deno task build wrote this to fd 9\n", how);
      assert.equal(Deno.readTextFileSync(`${c.root}/.toolchain/.lock`), "", how);
    }
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task runs from another directory, through a relative path that CDPATH also finds, in a path with spaces, and keeps a relative DENO_DIR, ZIG_GLOBAL_CACHE_DIR or KCORO_ZIG the caller's", async () => {
  const c = await checkout();
  try {
    const parent = c.base;
    // CDPATH made `cd` print where it went, read as part of the checkout's path: the root was
    // that path twice, newline-joined, and the toolchain went into a folder of that name (the
    // fake deno prints its directory in brackets, so a path with a newline in it shows).
    const r = await task(c, ["build"], {
      cwd: parent,
      task: "checkout with space/task",
      env: {
        CDPATH: parent,
        DENO_DIR: "caches/deno",
        ZIG_GLOBAL_CACHE_DIR: "caches/zig",
        KCORO_ZIG: "my zig/zig",
      },
    });
    assert.equal(r.code, 0, r.text);
    const real = Deno.realPathSync(c.root);
    const from = Deno.realPathSync(parent);
    assert.ok(r.text.includes(`ran deno task build in [${real}]\n`), r.text);
    assert.ok(existsSync(`${c.root}/.toolchain/deno/.version`), "installed elsewhere");
    assert.deepEqual(
      [...Deno.readDirSync(c.root)].map((e) => e.name).sort(),
      [".toolchain", "task"],
    );
    assert.ok(r.text.includes(`DENO_DIR=[${from}/caches/deno]\n`), r.text);
    assert.ok(r.text.includes(`ZIG_GLOBAL_CACHE_DIR=[${from}/caches/zig]\n`), r.text);
    assert.ok(r.text.includes(`KCORO_ZIG=[${from}/my zig/zig]\n`), r.text);
    const fromRoot = await task(c, ["build"], { cwd: "/", env: { KCORO_ZIG: "zig" } });
    assert.equal(fromRoot.code, 0, fromRoot.text);
    assert.ok(fromRoot.text.includes(`ran deno task build in [${real}]\n`), fromRoot.text);
    assert.ok(fromRoot.text.includes("KCORO_ZIG=[zig]\n"), "a name is for PATH, kept");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: the pinned deno and zig are used over others earlier on PATH, and a moved checkout keeps its toolchain", async () => {
  const c = await checkout();
  try {
    const other = `${c.base}/other`;
    Deno.mkdirSync(other);
    for (const tool of ["deno", "zig"]) {
      Deno.writeTextFileSync(`${other}/${tool}`, `#!/bin/sh\necho "1.0.0 (the other ${tool})"\n`, {
        mode: 0o755,
      });
    }
    const r = await task(c, ["build"], { path: `${other}:/usr/bin:/bin` });
    assert.equal(r.code, 0, r.text);
    assert.ok(c.calls().includes("deno task build"), r.text);
    assert.ok(r.text.includes(`zig on PATH: ${c.root}/.toolchain/zig/bin/zig\n`), r.text);
    assert.ok(r.text.includes(`KCORO_ZIG=[${c.root}/.toolchain/zig/bin/zig]\n`), r.text);
    // Its links were absolute: a moved checkout installed both again.
    const moved = `${c.base}/moved`;
    Deno.renameSync(c.root, moved);
    c.root = moved;
    c.reset();
    const again = await task(c, ["build"]);
    assert.equal(again.code, 0, again.text);
    assert.deepEqual(installs(c), [], again.text);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: npm or pip failing, or no pip, ends it at once with what to do, and a later run recovers", async () => {
  const c = await checkout();
  try {
    let r = await task(c, ["build"], { env: { FAKE_NPM_FAIL: "ECONNREFUSED 127.0.0.1:9" } });
    assert.equal(r.code, 1, r.text);
    assert.match(r.text, /npm error ECONNREFUSED/, "npm's own error is shown (--silent hid it)");
    assert.match(
      r.text,
      /task: error: npm install deno@2\.9\.6 failed \(above\): check that npm reaches its registry \(http:\/\/registry\.invalid\/\): the network, a proxy \(HTTPS_PROXY\), npm_config_registry; then run \.\/task again/,
    );
    // Retries seconds apart, not npm's 10 s then 60 s; the caller's own setting stays.
    assert.ok(c.calls().includes("npm retries 1000 5000"), c.calls().join("\n"));
    c.reset();
    r = await task(c, ["build"], {
      env: { FAKE_NO_PIP: "1", npm_config_fetch_retry_maxtimeout: "9" },
    });
    assert.equal(r.code, 1, r.text);
    assert.ok(c.calls().includes("npm retries 1000 9"), c.calls().join("\n"));
    assert.match(
      r.text,
      /task: error: .+\/python3 has no pip \('.+\/python3 -m pip' fails\), which installs Zig 0\.15\.2 \(PyPI package 'ziglang'\): install it \(Debian: apt-get install python3-pip\), then run \.\/task again/,
    );
    assert.deepEqual(installs(c), ["npm"], "no pip install was tried");
    // A pip `prefix` of the caller's (pip.conf or PIP_PREFIX; checked with the real pip), which
    // --target refuses: named, where only the network was.
    c.reset();
    r = await task(c, ["build"], { env: { PIP_PREFIX: `${c.base}/prefix` } });
    assert.equal(r.code, 1, r.text);
    assert.match(r.text, /ERROR: Cannot set --home and --prefix together\n/);
    assert.match(
      r.text,
      /task: error: pip install ziglang==0\.15\.2 failed \(above\): check that pip reaches its index: the network, a proxy \(HTTPS_PROXY\), PIP_INDEX_URL; and that no pip setting of yours refuses --target \(a 'prefix' in '.+\/python3 -m pip config list', PIP_PREFIX: 'Cannot set --home and --prefix together'\); then run \.\/task again\n/,
    );
    c.reset();
    r = await task(c, ["build"]);
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(installs(c), ["pip"]);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: an installed deno or zig that does not run is named, with what it printed, not an empty 'reports , expected' or an unnamed exit", async () => {
  const c = await checkout();
  try {
    let r = await task(c, ["build"], { env: { FAKE_DENO_BROKEN: "1" } });
    assert.equal(r.code, 1, r.text);
    assert.match(r.text, /deno: cannot execute binary file\n/);
    assert.match(
      r.text,
      /task: error: installed Deno reports nothing \(\.toolchain\/deno\/bin\/deno --version\), expected 2\.9\.6\n/,
    );
    // Zig's `version` failing ended ./task at once (set -e), status 126, no task: line.
    r = await task(c, ["build"], { env: { FAKE_ZIG_BROKEN: "1" } });
    assert.equal(r.code, 1, r.text);
    assert.match(r.text, /zig: Exec format error\n/);
    assert.match(
      r.text,
      /task: error: installed Zig reports nothing \(\.toolchain\/zig\/bin\/zig version\), expected 0\.15\.2\n/,
    );
    assert.equal(existsSync(`${c.root}/.toolchain/zig/.version`), false);
    assert.deepEqual(c.calls().filter((l) => l.startsWith("deno task")), []);
    c.reset();
    r = await task(c, ["build"]);
    assert.equal(r.code, 0, r.text);
    assert.deepEqual(installs(c), ["pip"]);
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: a caller's npm omit=optional and pip user or require-virtualenv settings do not stop its install", async () => {
  const c = await checkout();
  try {
    // npm left the binary (an optional dependency) out: "has no binary for this platform".
    // pip refused: "Can not combine '--user' and '--target'", "Could not find an activated
    // virtualenv (required)" (each checked with the real pip).
    const settings: Record<string, string>[] = [
      { npm_config_omit: "optional", PIP_USER: "1" },
      { PIP_REQUIRE_VIRTUALENV: "true" },
    ];
    for (const env of settings) {
      await Deno.remove(`${c.root}/.toolchain`, { recursive: true }).catch(() => {});
      c.reset();
      const r = await task(c, ["build"], { env });
      assert.equal(r.code, 0, `${JSON.stringify(env)}: ${r.text}`);
      assert.deepEqual(installs(c), ["npm", "pip"]);
      assert.ok(c.calls().includes("deno task build"), r.text);
    }
  } finally {
    await removeCheckout(c);
  }
});

Deno.test(".ci/run runs its own checkout's ./task test, whatever CDPATH finds, and exits with its status", async () => {
  const c = await checkout("kcoro ci run test ");
  try {
    // ./task stands in for the real one: says where it ran, and fails as a failed suite does.
    const stub = (who: string) => `#!/bin/sh\necho "${who} ran task $* in [$PWD]"\nexit 3\n`;
    Deno.writeTextFileSync(`${c.root}/task`, stub("this"), { mode: 0o755 });
    Deno.mkdirSync(`${c.root}/.ci`);
    Deno.copyFileSync(`${repo}.ci/run`, `${c.root}/.ci/run`);
    // Another checkout that CDPATH names: `cd .ci/..` went there, and ran its ./task.
    const other = `${c.base}/other`;
    Deno.mkdirSync(`${other}/.ci`, { recursive: true });
    Deno.writeTextFileSync(`${other}/task`, stub("other"), { mode: 0o755 });
    const out = await new Deno.Command("bash", {
      args: [".ci/run"],
      cwd: c.root,
      clearEnv: true,
      env: { PATH: "/usr/bin:/bin", CDPATH: other },
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(text, `this ran task test in [${c.root}]\n`);
    assert.equal(out.code, 3, "the suite's failure is .ci/run's");
  } finally {
    await removeCheckout(c);
  }
});

Deno.test("./task: a pip setting that moves the install elsewhere (root) is named, not a 'zig: not found' exit", async () => {
  const c = await checkout();
  try {
    const r = await task(c, ["build"], { env: { PIP_ROOT: `${c.base}/pip root` } });
    assert.equal(r.code, 1, r.text);
    assert.ok(existsSync(`${c.base}/pip root${c.root}/.toolchain/zig/py/ziglang/zig`), r.text);
    assert.match(
      r.text,
      /task: error: pip install ziglang==0\.15\.2 put no ziglang\/zig into \.toolchain\/zig\/py: a pip setting of yours \(a 'root' in '.+\/python3 -m pip config list', PIP_ROOT\) moved it; remove that setting, then run \.\/task again\n/,
    );
    assert.equal(existsSync(`${c.root}/.toolchain/zig/.version`), false);
    assert.deepEqual(c.calls().filter((l) => l.startsWith("deno task")), []);
  } finally {
    await removeCheckout(c);
  }
});

// scripts/test.sh (./task test) with a fake zig and deno: what it counts, and its exit status.

/** A fake's wait of 60 s at most, ended by a TERM, which it logs as "<what> stopped". Logs
 * "<what> started" once its trap is set, which is what the tests wait for before they signal:
 * before, each fake logged it before its trap, and a TERM in between ended the fake unlogged. */
const HOLD = (what: string) =>
  `trap 'echo "${what} stopped" >>"$FAKE_LOG"; exit 143' TERM
  echo "${what} started" >>"$FAKE_LOG"
  n=0
  while [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
  exit 0`;
async function testScript(
  denoOut: string,
  denoCode: number,
  opts: {
    zigFails?: boolean;
    noQemu?: boolean;
    buildFails?: boolean;
    /** Its `zig build test` stays (60 s at most) until a TERM, which it logs. */
    zigHolds?: boolean;
    /** Its `deno test` stays (60 s at most) until a TERM, which it logs. */
    denoHolds?: boolean;
    /** A `timeout` that a TERM ends alone, its child left running: as the real one is between
     * its fork and noting its child's pid. In a process group of its own, as the real one. */
    timeoutForgets?: boolean;
    /** Its `apt-get` stays (60 s at most) until a TERM, which it logs. */
    aptHolds?: boolean;
    /** Its `zig build test` ignores a TERM (60 s at most): timeout's KILL ends it. */
    zigIgnoresTerm?: boolean;
    /** Its `zig build --help` (the build runner's compile, first) stays (60 s at most) until a
     * TERM, which it logs. */
    zigHelpHolds?: boolean;
    /** Its `deno test` passes, leaving a `sleep 40` that holds its output ("leftover <pid>"). */
    denoLeaves?: boolean;
    /** Its output goes to a reader that reads none of it until the file `<log>.go` is there
     * (30 s at most); its `deno test` writes 510 KB ("deno floods" logged first), more than
     * the pipes between hold. Its status: the file `<log>.rc`. */
    readerStops?: boolean;
    /** Its `mktemp` makes the folder ("made <folder>"), then TERMs the script (its pid: the
     * file script.pid beside the log, which `during` writes). */
    mktempSignals?: boolean;
    /** Run as a user that is not root (nobody, through setpriv, where the test is root), with a
     * `sudo` that logs each call with its process group ("sudo <args> (pgid <n>)") and answers
     * `-n true` as one that needs a password would (status 1). */
    notRoot?: boolean;
    /** With `notRoot`: its sudo's `-v` (the password's prompt) stays (60 s at most) until a TERM,
     * as a prompt on a terminal that no one reads would, and logs "sudo -v started". */
    sudoAsks?: boolean;
    /** With `notRoot`: no `sudo` at all (none of the system's on its PATH, no fake). */
    noSudo?: boolean;
    /** Run in a terminal of its own (a pty, through util-linux's `script`), as from a terminal or
     * by a CI runner that gives its job one: its stdin a terminal. Its output's \r\n read as \n. */
    tty?: boolean;
    env?: Record<string, string>;
    /** Run while test.sh runs. */
    during?: (run: Run, c: Checkout) => Promise<void>;
  } = {},
): Promise<{ code: number; text: string; last: string; calls: string[] }> {
  const c = await checkout("kcoro test.sh test ");
  try {
    Deno.mkdirSync(`${c.root}/scripts`);
    Deno.copyFileSync(`${repo}scripts/test.sh`, `${c.root}/scripts/test.sh`);
    const fakes: [string, string][] = [
      [
        "zig",
        opts.zigFails
          ? '#!/bin/sh\n[ "$2" = test ] && echo "error: the following test command failed" && exit 1\nexit 0\n'
          : opts.zigIgnoresTerm
          ? `#!/bin/sh
if [ "$2" = test ]; then
  trap '' TERM
  echo "zig test started" >>"$FAKE_LOG"
  n=0
  while [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
fi
exit 0
`
          : opts.zigHelpHolds
          ? `#!/bin/sh
if [ "$2" = --help ]; then
  ${HOLD("zig build --help")}
fi
exit 0
`
          : opts.zigHolds
          ? `#!/bin/sh
if [ "$2" = test ]; then
  ${HOLD("zig test")}
fi
exit 0
`
          : '#!/bin/sh\n[ "$2" = test ] && echo "Build Summary: 3/3 steps succeeded; 7/7 tests passed"\n' +
            (opts.buildFails
              ? '[ "$*" = build ] && echo "error: the library failed to build" && exit 1\n'
              : "") +
            "exit 0\n",
      ],
      // It installs qemu-user with apt-get (through sudo unless root): here one that fails (no
      // apt-get runs for real), and a sudo that only runs it.
      [
        "apt-get",
        opts.aptHolds
          ? `#!/bin/sh\n${HOLD("apt-get")}`
          : '#!/bin/sh\necho "apt-get $*" >>"$FAKE_LOG"\necho "E: no network" >&2\nexit 100\n',
      ],
      [
        "sudo",
        opts.notRoot
          ? `#!/bin/sh
echo "sudo $* (pgid $(ps -o pgid= -p $$ | tr -d ' '))" >>"$FAKE_LOG"
[ "$*" != "-n true" ] || { echo "sudo: a password is required" >&2; exit 1; }
if [ "$*" = -v ]; then
  ${opts.sudoAsks ? HOLD("sudo -v") : "exit 0"}
fi
while [ "\${1#-}" != "$1" ]; do shift; done
exec "$@"
`
          : '#!/bin/sh\necho "sudo $*" >>"$FAKE_LOG"\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
      ],
      ...(opts.noQemu ? [] : [["qemu-aarch64", "#!/bin/sh\nexit 0\n"] as [string, string]]),
      [
        "deno",
        opts.denoHolds
          ? `#!/bin/sh\n${HOLD("deno test")}`
          : opts.denoLeaves
          ? `#!/bin/sh\ncat "$FAKE_DENO_OUT"\nsleep 40 &\necho "leftover $!" >>"$FAKE_LOG"\nexit 0\n`
          : opts.readerStops
          ? `#!/bin/sh\necho "deno floods" >>"$FAKE_LOG"\nyes "deno test output" | head -n 30000\ncat "$FAKE_DENO_OUT"\n`
          : `#!/bin/sh\necho "deno $*" >>"$FAKE_LOG"\ncat "$FAKE_DENO_OUT"\n` +
            // FAKE_DENO_FAILS: a call whose arguments hold it fails (status 1) whatever denoCode.
            `case "$*" in *"\${FAKE_DENO_FAILS:-//}"*) exit 1 ;; esac\nexit ${denoCode}\n`,
      ],
      ...(opts.mktempSignals
        ? [[
          "mktemp",
          `#!/bin/sh
d=$(/usr/bin/mktemp "$@") || exit $?
echo "made $d" >>"$FAKE_LOG"
pid="\${FAKE_LOG%/calls}/script.pid"
n=0
until [ -s "$pid" ] || [ $n -ge 1000 ]; do sleep 0.01; n=$((n + 1)); done
kill -s TERM "$(cat "$pid")"
echo "$d"
`,
        ] as [string, string]]
        : []),
      ...(opts.timeoutForgets
        ? [[
          "timeout",
          `#!/bin/sh\nshift 3 # -k <grace> <limit>\nexec setsid sh -c 'trap "exit 143" TERM; "$@" & wait $!' timeout "$@"\n`,
        ] as [string, string]]
        : []),
    ];
    for (const [name, text] of fakes) {
      if (opts.noSudo && name === "sudo") continue;
      Deno.writeTextFileSync(`${c.bin}/${name}`, text, { mode: 0o755 });
    }
    Deno.writeTextFileSync(`${c.base}/deno-out`, denoOut);
    const id = new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync();
    const asNobody = opts.notRoot && new TextDecoder().decode(id.stdout).trim() === "0";
    const without = [...(opts.noQemu ? ["qemu-aarch64"] : []), ...(opts.noSudo ? ["sudo"] : [])];
    const path = without.length > 0 ? await systemWithout(c, without) : undefined;
    const script = `${c.root}/scripts/test.sh`;
    let [task, args] = asNobody ? [asNobodyIn(c, []), [script]] : [script, []];
    if (opts.readerStops) {
      const stalled = `${c.base}/reader stops`;
      Deno.writeTextFileSync(
        stalled,
        `{ /bin/sh "$1"; echo $? >"$FAKE_LOG.rc"; } | {
  n=0
  until [ -e "$FAKE_LOG.go" ] || [ $n -ge 3000 ]; do sleep 0.01; n=$((n + 1)); done
  exec cat
}
`,
      );
      [task, args] = [stalled, [task, ...args]];
    }
    if (opts.tty) {
      // `script -c` takes one command line: the paths quoted (they hold spaces, no quote).
      const inPty = `${c.base}/in a pty`;
      Deno.writeTextFileSync(
        inPty,
        `exec script -q -e -c "/bin/sh '$1' \${2:+"'$2'"}" /dev/null\n`,
      );
      [task, args] = [inPty, [task, ...args]];
    }
    const run = start(c, args, {
      task,
      env: { FAKE_DENO_OUT: `${c.base}/deno-out`, ...opts.env },
      path,
    });
    try {
      await opts.during?.(run, c);
    } catch (e) {
      run.kill();
      await run.done;
      throw e;
    }
    const r = await run.done;
    if (opts.tty) r.text = r.text.replaceAll("\r\n", "\n");
    return { ...r, last: r.text.trimEnd().split("\n").at(-1)!, calls: c.calls() };
  } finally {
    await removeCheckout(c);
  }
}

Deno.test("scripts/test.sh: deno test's status decides, not a line a test printed; a passing run with steps passes", async () => {
  // Zig: 4 steps of 7 tests each.
  let r = await testScript("a ... ok\n\nok | 3 passed (2 steps) | 0 failed (3ms)\n", 0);
  assert.equal(r.code, 0, r.text);
  assert.equal(r.last, "31 passed, 0 failed");
  r = await testScript(
    "prints ...\nok | 9 passed | 0 failed (1ms)\nfails ... FAILED\n\nFAILED | 1 passed | 1 failed (4ms)\n",
    1,
  );
  assert.notEqual(r.code, 0, r.text);
  assert.equal(r.last, "29 passed, 1 failed");
  r = await testScript(
    "error: TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.\n",
    1,
  );
  assert.notEqual(r.code, 0, r.text);
  assert.equal(r.last, "28 passed, 1 failed");
  r = await testScript(
    "ok | 3 passed | 0 failed (3ms)\n\nerror: Promise resolution is still pending\n",
    1,
  );
  assert.notEqual(r.code, 0, r.text);
  assert.equal(r.last, "31 passed, 1 failed");
  r = await testScript("", 0); // ran nothing
  assert.notEqual(r.code, 0, r.text);
});

Deno.test("scripts/test.sh type-checks the Deno tests once, the Workers' modules and code blocks with them, and runs them unchecked; a failed check runs no test", async () => {
  // Before, deno test checked each Worker's module again as the Worker started (a tsc program
  // over mod.ts's graph each, 10 to 20 s on a loaded host), one after another in the tests' time.
  // That check was under Deno's Worker lib, which the window's check of tests/ is not: the
  // fixtures are checked again under it (a config of the log folder's). Without that second
  // check, a Worker's module using a window's global (`alert`) was checked by nothing.
  const where = "tests/ README.md mod.ts src/";
  const check = `deno check --doc ${where}`;
  const worker = /^deno check --no-lock --config \S+\/worker-lib\.json tests\/fixtures\/$/;
  const run = `deno test --no-check --allow-ffi --allow-read --allow-write --allow-env ` +
    `--allow-run --doc ${where}`;
  const named = "error: the Deno tests failed their type check (deno check, above): none ran";
  let r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0);
  assert.equal(r.code, 0, r.text);
  let denos = r.calls.filter((l) => l.startsWith("deno "));
  assert.equal(denos.length, 3, r.calls.join("\n"));
  assert.equal(denos[0], check);
  assert.match(denos[1], worker);
  assert.equal(denos[2], run);
  assert.equal(r.last, "31 passed, 0 failed");
  assert.ok(!r.text.includes(named), r.text);
  r = await testScript(
    "error: TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.\n",
    1,
  );
  assert.notEqual(r.code, 0, r.text);
  assert.deepEqual(r.calls.filter((l) => l.startsWith("deno ")), [check]);
  assert.match(r.text, /TS2322/);
  assert.ok(r.text.includes(named), r.text);
  assert.equal(r.last, "28 passed, 1 failed");
  // The Worker lib's check fails alone (the window's passed): no test runs either.
  r = await testScript(
    "TS2304 [ERROR]: Cannot find name 'alert'.\n",
    0,
    { env: { FAKE_DENO_FAILS: "worker-lib.json" } },
  );
  assert.notEqual(r.code, 0, r.text);
  denos = r.calls.filter((l) => l.startsWith("deno "));
  assert.equal(denos.length, 2, r.calls.join("\n"));
  assert.equal(denos[0], check);
  assert.match(denos[1], worker);
  assert.match(r.text, /TS2304/);
  assert.ok(r.text.includes(named), r.text);
  assert.equal(r.last, "28 passed, 1 failed");
});

Deno.test("scripts/test.sh: a failing zig step, or a qemu-aarch64 missing that cannot be installed, fails the run by name", async () => {
  const ok = "ok | 3 passed | 0 failed (3ms)\n";
  let r = await testScript(ok, 0, { zigFails: true });
  assert.notEqual(r.code, 0, r.text);
  assert.equal(r.last, "3 passed, 4 failed");
  r = await testScript(ok, 0, { noQemu: true });
  assert.notEqual(r.code, 0, r.text);
  assert.ok(r.calls.some((l) => l.startsWith("apt-get ")), "it tried to install qemu-user");
  const id = new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync();
  if (new TextDecoder().decode(id.stdout).trim() === "0") {
    // As root (CI's clean clone, whose image may have no sudo): apt-get itself, no sudo.
    assert.deepEqual(r.calls.filter((l) => l.startsWith("sudo ")), [], "root used sudo");
  }
  assert.match(r.text, /E: no network/, "apt-get's error is shown");
  assert.match(
    r.text,
    /error: qemu-aarch64 is missing and could not be installed \(apt-get install qemu-user\)/,
  );
  assert.equal(r.last, "17 passed, 1 failed");
});

Deno.test("scripts/test.sh: a failed library build fails the run with its closing line, and runs no Deno tests", async () => {
  // Before, set -e ended the script at the failed `zig build`: no "N passed, N failed" line.
  const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, { buildFails: true });
  assert.notEqual(r.code, 0, r.text);
  assert.match(r.text, /error: the library failed to build/);
  assert.match(
    r.text,
    /error: zig build \(ReleaseFast\) failed \(above\): the Deno tests did not run/,
  );
  assert.equal(r.last, "28 passed, 1 failed");
  assert.deepEqual(r.calls.filter((l) => l.startsWith("deno ")), [], "deno test ran");
});

Deno.test("scripts/test.sh: a TERM ends it at once, and its Zig stage with it, not once the stage has run", async () => {
  const r = await testScript("", 0, {
    zigHolds: true,
    during: async (run, c) => {
      await until(
        () => c.calls().includes("zig test started"),
        () => `the first Zig stage: ${run.text()}`,
      );
      Deno.kill(run.pid, "SIGTERM");
      // Before, the shell ran its trap once the stage in the foreground had ended (60 s here; a
      // real stage's minutes), and that stage, in timeout's process group, heard nothing.
      await within(run.done, 10_000, "test.sh's end after its TERM");
    },
  });
  assert.equal(r.code, 143, r.text);
  assert.ok(r.calls.includes("zig test stopped"), r.calls.join("\n"));
  assert.deepEqual(r.calls.filter((l) => l.startsWith("deno ")), [], "deno test ran");
});

Deno.test("scripts/test.sh: a TERM to it alone while the Deno tests run ends it at once, and deno test with it", async () => {
  const r = await testScript("", 0, {
    denoHolds: true,
    during: async (run, c) => {
      await until(
        () => c.calls().includes("deno test started"),
        () => `the Deno tests: ${run.text()}`,
      );
      Deno.kill(run.pid, "SIGTERM");
      // Before, `deno test | tee` ran in the foreground: the trap waited for its end (60 s here,
      // the Deno tests' minutes in a real run).
      await within(run.done, 10_000, "test.sh's end after its TERM");
      // The TERM reaches deno (in the stage's process group) as it reaches test.sh, but the
      // stage's shell, timeout's child, runs `deno check` before it execs `deno test`: while
      // the held call is the check, the stage ends with that shell, and deno's trap may write
      // its line a moment after test.sh's end (a loaded host's suite read the log first).
      await until(
        () => c.calls().includes("deno test stopped"),
        () => `deno's end after the TERM: ${c.calls().join("\n")}`,
      );
    },
  });
  assert.equal(r.code, 143, r.text);
});

Deno.test("scripts/test.sh: a TERM that ends a stage's timeout alone (before it noted its child) still ends the stage: its process group is signalled", async () => {
  const r = await testScript("", 0, {
    zigHolds: true,
    timeoutForgets: true,
    during: async (run, c) => {
      await until(
        () => c.calls().includes("zig test started"),
        () => `the first Zig stage: ${run.text()}`,
      );
      Deno.kill(run.pid, "SIGTERM");
      await within(run.done, 10_000, "test.sh's end after its TERM");
      // Before, the TERM went to timeout alone, and the stage ran on after the script.
      await until(
        () => c.calls().includes("zig test stopped"),
        () => `the stage's end: ${c.calls().join("\n")}`,
      );
    },
  });
  assert.equal(r.code, 143, r.text);
});

Deno.test("scripts/test.sh: a TERM while it installs qemu-user ends it at once, and apt-get with it", async () => {
  const r = await testScript("", 0, {
    noQemu: true,
    aptHolds: true,
    during: async (run, c) => {
      await until(() => c.calls().includes("apt-get started"), () => `apt-get: ${run.text()}`);
      Deno.kill(run.pid, "SIGTERM");
      // Before, apt-get ran in the foreground: the trap waited for its end (60 s here; a real
      // install's minutes).
      await within(run.done, 10_000, "test.sh's end after its TERM");
      await until(
        () => c.calls().includes("apt-get stopped"),
        () => `apt-get's end: ${c.calls().join("\n")}`,
      );
    },
  });
  assert.equal(r.code, 143, r.text);
});

Deno.test("scripts/test.sh not as root installs qemu-user through sudo: a password, where one is needed, asked for first in its own process group (the terminal's), then apt-get by sudo -n in the stage's", async () => {
  const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
    noQemu: true,
    notRoot: true,
    tty: true, // a person at a terminal: asked
  });
  assert.notEqual(r.code, 0, r.text);
  assert.match(r.text, /E: no network/, "apt-get's error is shown");
  const sudo = r.calls.filter((l) => l.startsWith("sudo ") || l.startsWith("apt-get "));
  // A stage runs in timeout's process group, where sudo's read of the terminal for a password
  // would stop it until the stage's time ran out: there, sudo -n never asks.
  const own = sudo[0]?.match(/^sudo -n true \(pgid (\d+)\)$/)?.[1];
  assert.ok(own, sudo.join("\n"));
  assert.equal(sudo[1], `sudo -v (pgid ${own})`);
  assert.match(sudo[2], /^sudo -n apt-get update -qq \(pgid (\d+)\)$/);
  assert.notEqual(sudo[2], `sudo -n apt-get update -qq (pgid ${own})`, "apt-get not in a stage");
  assert.deepEqual(sudo.slice(3), ["apt-get update -qq"]);
  assert.equal(r.last, "17 passed, 1 failed");
});

Deno.test("scripts/test.sh not as root asks no sudo password where no one is there to type it (stdin no terminal, or CI set): it says so, and apt-get by sudo -n fails at once", async () => {
  // sudo's prompt on a terminal that no one reads (a CI runner that gives its job a pty) waits
  // sudo's passwd_timeout, 5 minutes by default: here, for good (60 s).
  for (const [tty, env] of [[true, { CI: "true" }], [false, {}]] as const) {
    const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
      noQemu: true,
      notRoot: true,
      sudoAsks: true,
      tty,
      env,
      // Before, it waited on the prompt.
      during: (run) => within(run.done, 15_000, `test.sh's end (tty ${tty})`).then(() => {}),
    });
    assert.notEqual(r.code, 0, r.text);
    assert.deepEqual(r.calls.filter((l) => l.startsWith("sudo -v")), [], r.calls.join("\n"));
    assert.match(
      r.text,
      /\nsudo needs a password, not asked for: stdin is no terminal, or CI is set \(install qemu-user first, or give sudo NOPASSWD for apt-get\)\n/,
    );
    assert.ok(r.calls.some((l) => l.startsWith("sudo -n apt-get update")), r.calls.join("\n"));
    assert.equal(r.last, "17 passed, 1 failed");
  }
});

Deno.test("scripts/test.sh not as root, where there is no sudo at all, says so (not that sudo needs a password), and fails on qemu-user", async () => {
  const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
    noQemu: true,
    notRoot: true,
    noSudo: true,
  });
  assert.notEqual(r.code, 0, r.text);
  // Before, it said that sudo needed a password (no terminal here), which it did not.
  assert.doesNotMatch(r.text, /sudo needs a password/);
  assert.match(
    r.text,
    /\nsudo is missing, and this is not root: apt-get cannot run \(install qemu-user first, or run as root\)\n/,
  );
  assert.match(r.text, /error: qemu-aarch64 is missing and could not be installed/);
  assert.equal(r.last, "17 passed, 1 failed");
});

Deno.test("scripts/test.sh: a TERM as it makes its log folder (before, between its mktemp and its traps) leaves no folder behind", async () => {
  const r = await testScript("", 0, {
    mktempSignals: true,
    during: async (run, c) => {
      Deno.writeTextFileSync(`${c.base}/script.pid`, `${run.pid}`);
      await within(run.done, 10_000, "test.sh's end after its TERM");
    },
  });
  assert.equal(r.code, 143, r.text);
  const made = r.calls.find((l) => l.startsWith("made "))?.slice(5);
  assert.ok(made, r.calls.join("\n"));
  // Before, the TERM came before any trap was set: the script died, its folder left in TMPDIR.
  assert.equal(existsSync(made), false, `its log folder ${made} stayed`);
});

Deno.test("scripts/test.sh: a stage that ignores the TERM at its time limit is reported as out of time by name, not as a crash (status 137)", async () => {
  const r = await testScript("", 0, {
    zigIgnoresTerm: true,
    // Its KILL 1 s after its TERM (KCORO_TEST_GRACE_S), not 10.
    env: { KCORO_TEST_BUDGET_S: "2", KCORO_TEST_GRACE_S: "1" },
    during: (run) => within(run.done, 15_000, "test.sh's end within its budget").then(() => {}),
  });
  assert.notEqual(r.code, 0, r.text);
  // Before, timeout's KILL after its TERM gave status 137, reported as no timeout at all.
  assert.match(
    r.text,
    /error: zig unit tests \(x86_64, Debug\) did not end within [12] s \(at most 30 minutes a stage, 2 s in all: KCORO_TEST_BUDGET_S\)\n/,
  );
  assert.equal(r.last, "0 passed, 5 failed");
});

Deno.test("scripts/test.sh: a process a Deno test leaves holding deno's output ends its wait for tee KCORO_TEST_GRACE_S seconds on (10 by default, 1 here), named as a failure", async () => {
  let leftover = 0;
  try {
    const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
      denoLeaves: true,
      // 1 s on, not 10; read as decimal digits, as the budget ("01", named "1 s": a leading 0
      // kept made the watcher's bound octal, "09" no number at all to dash's arithmetic).
      env: { KCORO_TEST_GRACE_S: "01" },
      during: async (run, c) => {
        // Before, the script waited on tee until that process ended (40 s here; for good).
        await within(run.done, 15_000, "test.sh's end with a process holding deno's output");
        leftover = Number(c.calls().find((l) => l.startsWith("leftover "))?.split(" ")[1]);
      },
    });
    assert.notEqual(r.code, 0, r.text);
    assert.match(
      r.text,
      /error: the Deno tests' output stayed open 1 s after deno test ended: a process a test started holds it/,
    );
    assert.equal(r.last, "31 passed, 1 failed");
  } finally {
    if (leftover > 0 && !gone(leftover)) Deno.kill(leftover, "SIGKILL");
  }
});

Deno.test("scripts/test.sh: a reader of its output that stops reading holds tee (and so deno test) no longer than the stage's time and KCORO_TEST_GRACE_S seconds on, named as a failure", async () => {
  const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
    readerStops: true,
    // The Deno tests' stage ends at what is left of 2 s, tee 1 s on.
    env: { KCORO_TEST_BUDGET_S: "2", KCORO_TEST_GRACE_S: "1" },
    during: async (run, c) => {
      const tees = () => {
        const ps = new Deno.Command("ps", { args: ["-o", "comm=", "-g", `${run.pid}`] })
          .outputSync();
        return new TextDecoder().decode(ps.stdout).split("\n").filter((l) => l === "tee");
      };
      // deno test, then tee, blocked on output no one reads: ended, within their bounds.
      await until(() => c.calls().includes("deno floods"), () => `deno test: ${c.calls()}`);
      await until(() => tees().length === 0, "tee's end while its output is not read");
      Deno.writeTextFileSync(`${c.base}/calls.go`, ""); // the reader reads again
      await within(run.done, 10_000, "test.sh's end once its output is read");
      assert.equal(Deno.readTextFileSync(`${c.base}/calls.rc`), "1\n");
    },
  });
  assert.match(r.text, /error: the deno tests did not end within [12] s/);
  // Before, named as a process a test left, which there was not.
  assert.match(
    r.text,
    /error: the Deno tests' output stayed open 1 s after deno test ended: a process a test started holds it, or this script's output is not being read \(ended its reader, tee\)\n/,
  );
  assert.equal(r.last, "28 passed, 2 failed");
});

Deno.test("scripts/test.sh: its stages share one time budget (KCORO_TEST_BUDGET_S): a hung stage leaves the later ones what is left, or nothing, not 30 minutes each", async () => {
  // Before, each of the four Zig stages had 30 minutes (two hours when all hang, past CI's 90),
  // and the Deno tests no bound at all.
  const r = await testScript("", 0, {
    zigHolds: true,
    env: { KCORO_TEST_BUDGET_S: "2" },
    during: (run) => within(run.done, 20_000, "test.sh's end within its budget").then(() => {}),
  });
  assert.notEqual(r.code, 0, r.text);
  assert.ok(r.calls.includes("zig test stopped"), r.calls.join("\n"));
  assert.match(
    r.text,
    /error: zig unit tests \(x86_64, Debug\) did not end within [12] s \(at most 30 minutes a stage, 2 s in all: KCORO_TEST_BUDGET_S\)\n/,
  );
  assert.match(
    r.text,
    /error: zig unit tests \(aarch64 under qemu, ReleaseSafe\) did not run: the run's budget of 2 s \(KCORO_TEST_BUDGET_S\) was spent\n/,
  );
  assert.match(r.text, /error: zig build \(ReleaseFast\) did not run: the run's budget/);
  assert.deepEqual(r.calls.filter((l) => l.startsWith("deno ")), [], "deno test ran");
  assert.equal(r.last, "0 passed, 5 failed");
  const bad = await testScript("", 0, { env: { KCORO_TEST_BUDGET_S: "90m" } });
  assert.equal(bad.code, 2, bad.text);
  assert.equal(
    bad.last,
    "error: Cannot read KCORO_TEST_BUDGET_S: not a whole number of seconds, received '90m'",
  );
  // A leading 0 is no octal, and more digits than the shell's arithmetic holds are no bound at
  // all: before, dash's arithmetic ended the run at the budget's reading ("Illegal number: 09",
  // status 2), without its closing line.
  for (const budget of ["09", "99999999999999999999"]) {
    const ok = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
      env: { KCORO_TEST_BUDGET_S: budget },
    });
    assert.equal(ok.code, 0, `${budget}: ${ok.text}`);
    assert.equal(ok.last, "31 passed, 0 failed", `${budget}: ${ok.text}`);
  }
});

Deno.test("scripts/test.sh: a KCORO_TEST_GRACE_S that is no whole number of seconds from 1 to 600 ends the run at once, named", async () => {
  // 0 is timeout's "no KILL at all": a stage that ignored its TERM was never ended.
  for (const grace of ["0", "00", "1.5", "601", "99999999999999999999", "x"]) {
    const bad = await testScript("", 0, { env: { KCORO_TEST_GRACE_S: grace } });
    assert.equal(bad.code, 2, `${grace}: ${bad.text}`);
    assert.equal(
      bad.last,
      `error: Cannot read KCORO_TEST_GRACE_S: not a whole number of seconds from 1 to 600, received '${grace}'`,
    );
    assert.deepEqual(bad.calls, [], `${grace}: it ran something`);
  }
  const ok = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
    env: { KCORO_TEST_GRACE_S: "010" }, // decimal, as the budget
  });
  assert.equal(ok.code, 0, ok.text);
  assert.equal(ok.last, "31 passed, 0 failed");
});

Deno.test("scripts/test.sh: a TERM while its first compile, the build runner's, runs ends it at once, and that compile with it", async () => {
  const r = await testScript("", 0, {
    zigHelpHolds: true,
    during: async (run, c) => {
      await until(
        () => c.calls().includes("zig build --help started"),
        () => `the build runner's compile: ${run.text()}`,
      );
      Deno.kill(run.pid, "SIGTERM");
      // That compile runs under timeout, in setsid's process group: the group is signalled, and
      // timeout passes the TERM on.
      await within(run.done, 10_000, "test.sh's end after its TERM");
    },
  });
  assert.equal(r.code, 143, r.text);
  assert.ok(r.calls.includes("zig build --help stopped"), r.calls.join("\n"));
  assert.deepEqual(r.calls.filter((l) => l.startsWith("deno ")), [], "deno test ran");
});

Deno.test("scripts/test.sh: its first compile, the build runner's, is bounded by the run's budget as a stage, and named where it runs out of time", async () => {
  const r = await testScript("ok | 3 passed | 0 failed (3ms)\n", 0, {
    zigHelpHolds: true,
    env: { KCORO_TEST_BUDGET_S: "2", KCORO_TEST_GRACE_S: "1" },
    // Before, the script waited for that compile's end (60 s here; for good where it hung).
    during: (run) => within(run.done, 15_000, "test.sh's end within its budget").then(() => {}),
  });
  assert.ok(r.calls.includes("zig build --help stopped"), r.calls.join("\n"));
  assert.notEqual(r.code, 0, r.text);
  // Before, it ended so without a word.
  assert.match(
    r.text,
    /(^|\n)warning: the build runner's compile \(zig build --help, first, alone\) did not end within [12] s \(at most 30 minutes, 2 s in all: KCORO_TEST_BUDGET_S\): ended\n/,
  );
  assert.match(
    r.text,
    /error: zig unit tests \(x86_64, Debug\) did not run: the run's budget of 2 s \(KCORO_TEST_BUDGET_S\) was spent\n/,
  );
});

/** Ended: no such process, or a zombie (state Z; one whose parent died stays so where the
 * container's init reaps nothing). From ps: Deno reads no /proc without --allow-all. */
function gone(pid: number): boolean {
  const ps = new Deno.Command("ps", { args: ["-o", "stat=", "-p", `${pid}`] }).outputSync();
  return !/^[^Z]/.test(new TextDecoder().decode(ps.stdout).trim());
}

/** ps's line for `pid` (its parent, group and state), for a failure's message. */
function psOf(pid: number): string {
  const args = ["-o", "pid=,ppid=,pgid=,stat=,args=", "-p", `${pid}`];
  return new TextDecoder().decode(new Deno.Command("ps", { args }).outputSync().stdout).trim();
}

/**
 * scripts/test.sh (`start`ed by `body`, given the checkout's `start` options) with a fake zig
 * that runs the calls whose second word matches the `case` pattern `blocking` ("test": a stage,
 * "--prefix": a compile ahead) as a `sleep` that never ends, its pid recorded (`pids()`), and
 * passes the stages (the first after running `stage`). Each recorded process must have ended
 * after `body`; what a failure left running is killed.
 */
async function withSleepingZig(
  blocking: string,
  body: (c: Checkout, opts: Parameters<typeof start>[2], pids: () => number[]) => Promise<void>,
  path?: (c: Checkout) => Promise<string>,
  stage = ":",
): Promise<void> {
  const c = await checkout("kcoro test.sh processes test ");
  const file = `${c.base}/pids`;
  Deno.writeTextFileSync(file, "");
  const pids = () => Deno.readTextFileSync(file).split("\n").filter((l) => l !== "").map(Number);
  try {
    Deno.mkdirSync(`${c.root}/scripts`);
    Deno.copyFileSync(`${repo}scripts/test.sh`, `${c.root}/scripts/test.sh`);
    const zig = `#!/bin/sh
echo "zig $*" >>"$FAKE_LOG"
case "$2" in
${blocking}) echo "sleeping $2 $$ $PPID" >>"$FAKE_LOG"; echo $$ >>"$FAKE_PIDS"; exec sleep 600 ;;
test) [ -e "$FAKE_PIDS.staged" ] || { : >"$FAKE_PIDS.staged"; ${stage}; }
  echo "Build Summary: 3/3 steps succeeded; 7/7 tests passed" ;;
esac
`;
    const fakes: [string, string][] = [
      ["zig", zig],
      ["qemu-aarch64", "#!/bin/sh\nexit 0\n"],
      ["deno", '#!/bin/sh\necho "ok | 3 passed | 0 failed (3ms)"\n'],
    ];
    for (const [name, text] of fakes) {
      Deno.writeTextFileSync(`${c.bin}/${name}`, text, { mode: 0o755 });
    }
    await body(c, {
      task: `${c.root}/scripts/test.sh`,
      env: { FAKE_PIDS: file },
      path: path ? await path(c) : undefined,
    }, pids);
    for (const pid of pids()) {
      await until(() => gone(pid), () => `a fake zig's sleep still running: ${psOf(pid)}`);
    }
  } finally {
    for (const pid of pids().filter((pid) => !gone(pid))) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* ended since */ }
    }
    await removeCheckout(c);
  }
}

Deno.test("scripts/test.sh: an INT or a TERM ends it at once, the zig stage running and a compile ahead, neither left running", async () => {
  // `timeout` runs a zig stage in a process group of its own, which a Ctrl-C does not reach, and
  // the shell ran its trap only once that foreground stage had ended: the script, and the
  // compiles ahead with it, went on for the rest of the stage (minutes).
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await withSleepingZig("test | --prefix", async (c, opts, pids) => {
      const run = start(c, [], opts);
      await until(() => pids().length === 2, () => `the stage and a compile ahead: ${run.text()}`);
      // The signal once the script waits for the stage and timeout for its child (a kernel wait):
      // sent as either starts, it may come before stage_pid=$!, or before timeout has noted its
      // child's pid, and the stage is left running (a race of the script's, reported; not this
      // test's subject).
      const stage = c.calls().find((l) => l.startsWith("sleeping test "));
      const timeoutPid = Number(stage?.split(" ")[3]);
      const waiting = (pid: number) => {
        const ps = new Deno.Command("ps", { args: ["-o", "wchan=", "-p", `${pid}`] }).outputSync();
        return /^(sigsuspend|do_wait)/.test(new TextDecoder().decode(ps.stdout).trim());
      };
      await until(
        () => waiting(run.pid) && waiting(timeoutPid),
        () => `test.sh and timeout waiting: ${psOf(run.pid)}; ${psOf(timeoutPid)}`,
      );
      Deno.kill(run.pid, signal);
      const r = await within(run.done, 30_000, `test.sh after ${signal}: ${run.text()}`);
      assert.equal(r.code, signal === "SIGINT" ? 130 : 143, r.text);
    });
  }
});

Deno.test("scripts/test.sh: a second Ctrl-C, TERM or HUP while it stops its stage still ends the compiles ahead and removes its log folder", async () => {
  // The stage sends the second signal itself, as its TERM comes: that TERM is the script's exit
  // stopping it, which then waits for the stage's end. Before, that signal's trap ran `exit`
  // within the exit's: the script ended there, the compiles ahead left running (minutes of CPU),
  // its log folder left in TMPDIR. (The signal is pending before the stage ends, so the script
  // sees it within that wait or at once after it: no window for the test to hit.)
  const stage = `trap 'echo "stage stopping" >>"$FAKE_LOG"
      kill -s "$FAKE_SECOND" "$(cat "$FAKE_PIDS.script")" && echo "second signal sent" >>"$FAKE_LOG"
      exit 143' TERM
    echo "stage holds" >>"$FAKE_LOG"
    i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done`;
  // The first signal, then the second (a HUP: a terminal closed as the script stops).
  const pairs = [["SIGINT", "INT"], ["SIGTERM", "TERM"], ["SIGINT", "HUP"]] as const;
  for (const [signal, second] of pairs) {
    await withSleepingZig(
      "--prefix",
      async (c, opts, pids) => {
        const tmp = `${c.base}/tmp`;
        Deno.mkdirSync(tmp);
        const run = start(c, [], {
          ...opts,
          env: { ...opts?.env, TMPDIR: tmp, FAKE_SECOND: second },
        });
        Deno.writeTextFileSync(`${opts?.env?.FAKE_PIDS}.script`, `${run.pid}`);
        await until(
          () => pids().length === 1 && c.calls().includes("stage holds"),
          () => `the stage and a compile ahead: ${run.text()}`,
        );
        Deno.kill(run.pid, signal);
        // Its output's end: a compile ahead left running holds it open.
        const r = await within(
          run.done,
          30_000,
          `test.sh after ${signal}, ${second}: ${run.text()}`,
        );
        assert.equal(r.code, signal === "SIGINT" ? 130 : 143, r.text);
        assert.ok(c.calls().includes("second signal sent"), c.calls().join("\n"));
        assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), [], "its log folder");
        // withSleepingZig: the compile ahead's process has ended.
      },
      undefined,
      stage,
    );
  }
});

Deno.test("scripts/test.sh killed (SIGKILL) starts no further compile ahead once the one running ends", async () => {
  // No trap sees a SIGKILL, and the compiles ahead run in a group of their own (setsid), which a
  // kill of the script's group does not reach: the list's later compiles, minutes of CPU, ran on
  // after the script. The one running is left to end: here its sleep is killed, as its end, as
  // is the stage's (timeout's own group, bounded by its 30 minutes).
  await withSleepingZig("test | --prefix", async (c, opts, pids) => {
    const run = start(c, [], opts);
    await until(() => pids().length === 2, () => `the stage and a compile ahead: ${run.text()}`);
    Deno.kill(run.pid, "SIGKILL");
    // Reaped (no zombie left for the loop's check to find), then what it left ends.
    const ps = new Deno.Command("ps", { args: ["-o", "pid=", "-p", `${run.pid}`] });
    await until(() => ps.outputSync().stdout.length === 0, "test.sh reaped");
    // "sleeping <$2> <pid> <parent's pid>": the compile ahead's parent is the loop's shell.
    const ahead = () => c.calls().filter((l) => l.startsWith("sleeping --prefix "));
    const loop = Number(ahead()[0].split(" ")[3]);
    for (const pid of pids()) Deno.kill(pid, "SIGKILL");
    try {
      await until(() => gone(loop), () => `the loop of compiles ahead still running: ${ahead()}`);
    } finally {
      if (!gone(loop)) Deno.kill(loop, "SIGKILL"); // its next compile's sleep: killed after
    }
    assert.equal(ahead().length, 1, ahead().join("\n"));
    await within(run.done, 30_000, "test.sh's output closed");
  });
});

Deno.test("scripts/test.sh links a C program with zig cc ahead, beside the library's compile ahead, so that the Deno tests' zig cc finds compiler_rt built", async () => {
  // Before, the first Deno test file that ran `zig cc` (c_receiver_test.ts) built compiler_rt
  // and the UBSan runtime into the global cache: 39 s of the Deno stage on a loaded host.
  await withSleepingZig("__none__", async (c, opts) => {
    const r = await within(start(c, [], opts).done, 60_000, "test.sh");
    assert.equal(r.code, 0, r.text);
    const calls = c.calls();
    const cc = calls.findIndex((l) => /^zig cc \S+\/warm\.c -o \S+\/warm$/.test(l));
    const before = calls.findIndex((l) =>
      l.startsWith("zig build --prefix ") && l.endsWith("-Dtest-optimize=ReleaseSafe") &&
      l.includes("aarch64")
    );
    const lib = calls.findIndex((l) => /^zig build --prefix \S+\/ahead$/.test(l));
    assert.ok(cc !== -1 && before !== -1 && lib !== -1, calls.join("\n"));
    assert.ok(cc > before && lib > before, calls.join("\n"));
  });
});

Deno.test("scripts/test.sh without setsid compiles nothing ahead, and leaves nothing running after it", async () => {
  // Without a process group of its own, stop_ahead ended the loop's shell only: the `zig build`
  // it was running went on after the script, with its compilers. The first stage waits (at most
  // 5 s) for a compile ahead to start, so that one started is one the script has to end; only
  // where test.sh started one: a compile ahead is started before the first stage, so it is then a
  // child of test.sh's beside the stage's timeout (the stage's parent). Before, the stage waited
  // its 5 s every time, for the compile ahead that never comes.
  const stage = `script=$(ps -o ppid= -p $PPID | tr -d ' ')
    if [ "$(ps -A -o ppid= | grep -c "^ *$script\$")" -gt 1 ]; then
      i=0; until [ $i -ge 100 ] || grep -q -- "--prefix" "$FAKE_LOG"; do sleep 0.05; i=$((i + 1)); done
    fi`;
  await withSleepingZig(
    "--prefix",
    async (c, opts) => {
      const r = await within(start(c, [], opts).done, 60_000, "test.sh");
      assert.equal(r.code, 0, r.text);
      assert.deepEqual(c.calls().filter((l) => l.includes("--prefix")), [], "a compile ahead");
    },
    (c) => systemWithout(c, ["setsid"]),
    stage,
  );
});

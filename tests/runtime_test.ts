import assert from "node:assert/strict";
import {
  Channel,
  codecs,
  Context,
  KcoroError,
  library,
  NativeCoroutine,
  NativeScope,
  resolveNative,
  Runtime,
  runtime,
  ShutdownError,
  Status,
} from "../mod.ts";
import { librarySymbols } from "../ffi/load.ts";
import {
  abortListeners,
  afterTimers,
  evalScript,
  settled,
  shutdownScheduler,
  until,
  within,
} from "./support.ts";
import { generationOf, pinnedCountOf } from "../src/runtime.ts";

const root = new URL("../", import.meta.url).pathname;

/** Compiles `source` (C) into `${dir}/libplugin.so` with the pinned zig; returns that path. */
async function buildPlugin(dir: string, source: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/plugin.c`, source);
  const zig = Deno.env.get("KCORO_ZIG") ?? `${root}.toolchain/zig/bin/zig`;
  const cc = await new Deno.Command(zig, {
    args: ["cc", "-shared", "-fPIC", "-o", `${dir}/libplugin.so`, `${dir}/plugin.c`],
    stderr: "piped",
  }).output();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  return `${dir}/libplugin.so`;
}

Deno.test("runtime: spawn built-ins, drain, stats", async () => {
  const rt = runtime({ workers: 2 });
  assert.equal(rt.workers, 2);
  assert.equal(runtime(), rt); // the running one
  assert.throws(
    () => runtime({ workers: 3 }),
    /already running with 2 workers, received workers: 3/,
  );
  // The other options are compared too (before, they were ignored: slab stacks asked for were
  // silently guarded ones); what matches, or was not given, returns the running one.
  assert.throws(
    () => runtime({ slabStacks: true }),
    /already running with slabStacks false, received slabStacks: true/,
  );
  assert.throws(
    () => runtime({ fpControl: true }),
    /already running with fpControl false, received fpControl: true/,
  );
  assert.throws(
    () => runtime({ stackSize: 1 << 20 }),
    /already running with 65536-byte stacks, received stackSize: 1048576/,
  );
  assert.equal(runtime({ workers: 2, stackSize: 65536, slabStacks: false, fpControl: false }), rt);

  const sleepers = runtime().cells([5n, 0n]);
  for (let i = 0; i < 50; i++) rt.spawn("sleeper", sleepers);
  const sky = runtime().cells([10_000n, 0n]);
  rt.spawn("skynet", sky);
  const spin = runtime().cells([100_000n, 0n]);
  for (let i = 0; i < 8; i++) rt.spawn("spin", spin);
  await rt.drain();
  assert.equal(sleepers[1], 50n);
  assert.equal(sky[1], 49_995_000n);
  assert.equal(spin[1], 8n);

  const stats = rt.stats();
  assert.equal(stats.workers.length, 2);
  assert.equal(stats.busy, 0);
  assert.equal(stats.live, 0);
  assert.ok(stats.workers.reduce((n, w) => n + w.runs, 0) >= 50 + 11_111 + 8);
  await rt.shutdown();
});

Deno.test("runtime: bad arguments are named errors that say what was received", () => {
  const rt = runtime();
  // Lengths are named: "[object BigUint64Array]" alone did not say how many cells it had.
  // Too few cells is a length out of range: a RangeError (it was a TypeError), as rt.cells([]).
  assert.throws(() => rt.spawn("sleeper", new BigUint64Array(1)), {
    name: "RangeError",
    message:
      'Cannot spawn coroutine: "sleeper" needs a BigUint64Array of 2 cells, received [object BigUint64Array] of length 1',
  });
  assert.throws(() => rt.spawn("skynet", rt.cells(1)), RangeError);
  assert.throws(() => rt.spawn("sleeper", new Float64Array(2) as never), TypeError);
  assert.throws(() => rt.spawn("nope" as "sleeper", new BigUint64Array(2)), TypeError);
  assert.throws(() => rt.spawn("sleeper"), {
    name: "TypeError",
    message: /needs a BigUint64Array of 2 cells, received undefined/,
  });
  assert.throws(
    () => rt.spawn("sleeper", new BigUint64Array(1)),
    /received \[object BigUint64Array\]/,
  );
  assert.throws(() => rt.spawn({} as never), /received \[object Object\]/);
  // Objects FFI would refuse with its own TypeError: a "pointer" that is none, an arg likewise.
  assert.throws(
    () => rt.spawn({ pointer: {} } as never),
    /^TypeError: Cannot spawn coroutine: entry must be a built-in name or a NativeFunction/,
  );
  assert.throws(
    () => rt.spawn({ pointer: Deno.UnsafePointer.create(1n) } as never, {} as never),
    /^TypeError: Cannot spawn coroutine: arg must be a BigUint64Array or a pointer/,
  );
  // The engine's length and buffer count, not properties the caller shadowed or a Proxy's.
  const short = rt.cells(1);
  Object.defineProperty(short, "length", { value: 3 });
  assert.throws(() => rt.spawn("sleeper", short), {
    name: "RangeError",
    message: /needs a BigUint64Array of 2 cells/,
  });
  const proxy = new Proxy(rt.cells(2), {});
  assert.throws(() => rt.spawn("sleeper", proxy), {
    name: "TypeError",
    message: /needs a BigUint64Array of 2 cells/,
  });
  assert.throws(() => rt.spawn({ pointer: Deno.UnsafePointer.create(1n) } as never, proxy));
  // Memory JavaScript could free or move under the coroutine (a transfer after the spawn freed
  // the cells it went on writing into) is refused; native cells and SharedArrayBuffers are not.
  const growable = new BigUint64Array(new ArrayBuffer(16, { maxByteLength: 64 }));
  assert.throws(() => rt.spawn("sleeper", growable), /received a BigUint64Array on a resizable/);
  assert.throws(
    () => rt.spawn("sleeper", new BigUint64Array([1n, 0n])),
    /must be memory JavaScript cannot free or move under it: runtime\(\)\.cells\(n\)/,
  );
  const shared = new BigUint64Array(new SharedArrayBuffer(16));
  rt.spawn("sleeper", shared); // 0 ms
  // A bigint out of range is a RangeError (as the count's), a value of another type a TypeError:
  // both were TypeErrors.
  for (const [v, shown] of [[-1n, "-1n"], [1n << 64n, "18446744073709551616n"]] as const) {
    assert.throws(() => rt.cells([1n, v]), {
      name: "RangeError",
      message:
        `Cannot allocate cells: each value must be a bigint from 0 to 2^64 - 1, received ${shown}`,
    });
  }
  assert.throws(() => rt.cells([1] as never), { name: "TypeError", message: /received 1$/ });
  assert.throws(() => rt.cells([]), /received \[object Array\]/);
  assert.deepEqual([...rt.cells([3n, 4n])], [3n, 4n]);
  for (const n of [0, -1, 1.5, 2 ** 21]) {
    assert.throws(() => rt.cells(n), RangeError, `cells(${n})`);
  }
  // A wrong type is a TypeError, as everywhere else; only a number out of range a RangeError.
  assert.throws(() => rt.cells("2" as never), {
    name: "TypeError",
    message:
      'Cannot allocate cells: expected a count or an array of 1 to 1048576 bigints, received "2"',
  });
  assert.throws(() => runtime({ workers: "2" as never }), {
    name: "TypeError",
    message: 'Cannot start runtime: workers must be an integer from 0 to 1024, received "2"',
  });
  assert.throws(() => runtime({ workers: 2n as never }), TypeError);
  assert.throws(() => runtime({ workers: 1.5 }), RangeError);
  assert.throws(() => runtime({ stackSize: "64k" as never }), {
    name: "TypeError",
    message:
      'Cannot start runtime: stackSize must be 0 or an integer from 16384 to 268435456, received "64k"',
  });
  assert.throws(() => rt.cells(3.5), /a count or an array of 1 to 1048576 bigints, received 3.5/);
  assert.throws(() => runtime({ workers: -1 }), RangeError);
  assert.throws(() => runtime({ stackSize: 5 }), /stackSize .* received 5/);
  assert.throws(() => runtime(null as never), TypeError);
  assert.throws(
    () => runtime({ fpControl: "no" as never }),
    /fpControl must be a boolean, received "no"/,
  );
  assert.throws(() => runtime({ slabStacks: 1 as never }), /slabStacks must be a boolean/);
  assert.throws(() => resolveNative(1 as never, "x"), TypeError);
  // Before, C read each string up to its NUL: this found getpid in libc.so.6.
  assert.throws(
    () => resolveNative("libc.so.6\0x", "getpid"),
    /library must not contain a NUL character, received "libc.so.6\\u0000x"/,
  );
  assert.throws(() => resolveNative("libc.so.6", "getpid\0"), /symbol must not contain a NUL/);
  // An empty library path is dlopen's main program: before, this answered Deno's own `malloc` as
  // a NativeFunction of library "" (an unset variable's `?? ""` reached it).
  assert.throws(() => resolveNative("", "malloc"), {
    name: "TypeError",
    message: 'Cannot resolve native function: library must be a non-empty string, received ""',
  });
  assert.throws(() => resolveNative("libc.so.6", ""), {
    name: "TypeError",
    message: 'Cannot resolve native function: symbol must be a non-empty string, received ""',
  });
  assert.throws(
    () => resolveNative("/nonexistent/lib.so", "f"),
    (e: unknown) =>
      e instanceof KcoroError && e.code === "KC_EINVAL" &&
      /^Cannot resolve native function: the library does not load \(.*No such file.*\), received library "\/nonexistent\/lib\.so" and symbol "f" \(KC_EINVAL\)$/
        .test(e.message),
  );
  // A path over 4096 characters: dlerror's text names it whole, which the message quoted in full
  // (a path of 2**20 characters, a message as long); by its head and length now, as `received`.
  const long = `/tmp/${"a".repeat(2 ** 20)}`;
  const head = `/tmp/${"a".repeat(59)}`;
  assert.throws(
    () => resolveNative(long, "f"),
    (e: unknown) =>
      e instanceof KcoroError &&
      e.message.startsWith(
        `Cannot resolve native function: the library does not load (${head}… (a path of ${long.length} characters): `,
      ) &&
      e.message.endsWith(
        `received library "${head}"… (a string of ${long.length} characters) and symbol "f" (KC_EINVAL)`,
      ) && e.message.length < 500,
  );
});

Deno.test("runtime: a Runtime is made by runtime() only: new Runtime(...) is a named TypeError", () => {
  for (const key of [undefined, {}, Symbol("kcoro.Runtime")]) {
    assert.throws(
      () => new Runtime(key as never, library(), 2, 1n),
      (e) => e instanceof TypeError && /^Cannot construct Runtime: use runtime\(\)/.test(e.message),
    );
  }
});

Deno.test("NativeCoroutine, NativeScope and Context are made by their factories only: a constructor call is a named TypeError", async () => {
  // Their constructors are private to the type checker only. Before, JavaScript's
  // `new NativeScope()` made an object whose every call threw the engine's "Cannot read
  // properties of undefined (reading 'symbols')", a `new Context()` one whose reads threw, and a
  // `new NativeCoroutine()` one whose garbage collection threw an uncaught TypeError from its
  // finalizer.
  const made: [string, new (...a: unknown[]) => unknown, RegExp][] = [
    ["NativeCoroutine", NativeCoroutine as never, /use NativeCoroutine\.create\(\)/],
    ["NativeScope", NativeScope as never, /use NativeScope\.create\(\)/],
    ["Context", Context as never, /use Context\.empty and its with\(\)/],
  ];
  for (const [name, C, how] of made) {
    for (const key of [undefined, {}, Symbol(`kcoro.${name}`)]) {
      assert.throws(
        () => new C(key, library(), 1, null, null),
        (e) =>
          e instanceof TypeError && e.message.startsWith(`Cannot construct ${name}: `) &&
          how.test(e.message) && e.message.includes(", received "),
      );
    }
  }
  // The finalizer of one made so (collected in a child process, which must end cleanly).
  const res = await evalScript(
    `
    import { NativeCoroutine } from "./mod.ts";
    try { new NativeCoroutine(); } catch {}
    for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
    console.log("done");
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout, "done\n");
  assert.equal(res.stderr, "");
});

Deno.test("runtime: cells(values) stores the values it checked, each read once", () => {
  const rt = runtime(); // any worker count: the file's earlier tests may have started one
  // A getter that answers the check with a valid value and the store with another.
  const lying = (second: unknown) => {
    let reads = 0;
    return new Proxy([1n, 2n], {
      get: (t, k, r) => k === "0" ? (reads++ === 0 ? 1n : second) : Reflect.get(t, k, r),
    });
  };
  // Before, -1n was stored (wrapped to 2^64 - 1) and "x" threw the engine's SyntaxError.
  for (const second of [-1n, "x", 1n << 64n]) {
    const cells = rt.cells(lying(second) as unknown as bigint[]);
    assert.deepEqual([...cells], [1n, 2n]);
  }
});

Deno.test("runtime() after closeLibrary, while a Worker keeps the scheduler running, works", async () => {
  const res = await evalScript(`
    import { closeLibrary, runtime } from "./mod.ts";
    const before = runtime();
    const w = new Worker(new URL("./tests/fixtures/open_library_worker.ts", import.meta.url).href, {
      type: "module",
    });
    await new Promise((r) => (w.onmessage = r));
    closeLibrary(); // the Worker is still a host: the scheduler runs on
    const after = runtime();
    if (after === before) throw new Error("the Runtime of the closed library came back");
    if (!after.isRunning) throw new Error("not running");
    const cells = runtime().cells([1n, 0n]);
    after.spawn("sleeper", cells);
    await after.drain();
    if (cells[1] !== 1n) throw new Error("the coroutine did not run");
    w.terminate();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a drain waiting when closeLibrary() comes rejects with LibraryClosedError, as a channel's wait does", async () => {
  // Both ways the close ends it: another host keeps the scheduler running (the drain's slice
  // times out), or this was the last host (the close shuts the scheduler down).
  for (const keep of [true, false]) {
    const res = await evalScript(`
      import { Channel, closeLibrary, library, LibraryClosedError, openLibrary, runtime } from "./mod.ts";
      import { Bridge } from "./src/bridge.ts";
      import { until } from "./tests/support.ts";
      const other = ${keep} ? openLibrary() : null; // another host, as a Worker's copy would be
      const rt = runtime({ workers: 1 });
      rt.spawn("cancellable-sleeper", rt.cells([60000n, 0n, 0n])); // a minute: never drains
      const draining = rt.drain().then(() => "resolved", (e) => e);
      // A channel's wait meets the same close: both must fail the same way.
      const ch = new Channel(0);
      ch.share();
      const receiving = ch.receive().then(() => "received", (e) => e);
      // Both wait natively now: the drain from its call, the receive once queued (bounded).
      const bridge = Bridge.of(library());
      await until(() => bridge.pending === 1, "the receive queued natively");
      closeLibrary();
      const [d, r] = await Promise.all([draining, receiving]);
      if (!(r instanceof LibraryClosedError)) throw new Error("the receive: " + r);
      if (!(d instanceof LibraryClosedError)) throw new Error("the drain: " + d);
      if (!d.message.startsWith("Cannot drain runtime: the kcoro library is closed")) throw d;
      if (other !== null) {
        other.symbols("test").kc_sched_shutdown(0);
        other.close();
      }
    `);
    assert.equal(res.code, 0, `${keep ? "another host" : "the last host"}: ${res.stderr}`);
  }
});

Deno.test("runtime: a C function from another library runs as a native coroutine", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await buildPlugin(
      dir,
      `#include <stdint.h>
void add_one(void *arg) { __atomic_fetch_add((uint64_t *)arg + 1, 1, __ATOMIC_RELEASE); }`,
    );
    const addOne = resolveNative(`${dir}/libplugin.so`, "add_one");
    assert.throws(
      () => resolveNative(`${dir}/libplugin.so`, "missing"),
      (e: unknown) =>
        e instanceof KcoroError &&
        e.message.startsWith(
          `Cannot resolve native function: the library has no such symbol, received library "${dir}/libplugin.so" and symbol "missing"`,
        ),
    );
    const rt = runtime();
    const cells = runtime().cells(2);
    for (let i = 0; i < 100; i++) rt.spawn(addOne, cells);
    await rt.drain();
    assert.equal(cells[1], 100n);
    await rt.shutdown();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The plugin the native-scope cells tests launch, its cells [go, done, running]: `add_one` adds
 * to done; `wait_add` adds to running, waits for go, then adds to done.
 */
const WAIT_ADD_C = `#include <stdint.h>
void add_one(void *arg) { __atomic_fetch_add((uint64_t *)arg + 1, 1, __ATOMIC_RELEASE); }
void wait_add(void *arg) {
  __atomic_fetch_add((uint64_t *)arg + 2, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n((uint64_t *)arg, __ATOMIC_ACQUIRE)) {}
  __atomic_fetch_add((uint64_t *)arg + 1, 1, __ATOMIC_RELEASE);
}`;

/** WAIT_ADD_C built into a temporary directory for `body` (given the library's path), removed after. */
async function withWaitAdd(body: (lib: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(await buildPlugin(dir, WAIT_ADD_C));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("runtime: a NativeFunction's cells launched in a native scope are let go once the scope has no child, never before", async () => {
  await withWaitAdd(async (lib) => {
    const res = await evalScript(
      `
      import {
        Channel, closeLibrary, codecs, coroutineScope, NativeScope, nativeScope, openLibrary,
        resolveNative, runtime,
      } from "./mod.ts";
      import { pinnedCountOf } from "./src/runtime.ts";
      import { until } from "./tests/support.ts";
      const addOne = resolveNative("${lib}", "add_one");
      const waitAdd = resolveNative("${lib}", "wait_add");
      const rt = runtime({ workers: 2 });
      using ch = new Channel(0, { codec: codecs.u64 });
      rt.spawn("receiver", rt.cells([BigInt(ch.handle), 0n, 0n])); // parked: live never 0
      const gc = async () => {
        for (let i = 0; i < 3; i++) {
          globalThis.gc();
          await new Promise((r) => setTimeout(r, 1));
        }
      };
      // Launched, waited for, launched again: before, each launch's cells stayed pinned for
      // as long as any coroutine lived (here, the parked receiver: for good).
      await using ns = NativeScope.create();
      for (let i = 0; i < 200; i++) {
        ns.launch(addOne, rt.cells(2));
        await ns.wait();
      }
      if (pinnedCountOf(rt) > 5) throw new Error("still pinned: " + pinnedCountOf(rt));
      // A running child's cells stay, whatever else is launched meanwhile.
      let running;
      (() => {
        const cells = rt.cells(3);
        running = new WeakRef(cells);
        ns.launch(waitAdd, cells);
      })();
      ns.launch(addOne, rt.cells(2));
      await gc();
      const cells = running.deref();
      if (cells === undefined) throw new Error("a running child's cells were let go");
      cells[0] = 1n;
      await ns.wait();
      if (cells[1] !== 1n) throw new Error("the child did not finish");
      // closeLibrary while another copy keeps the scheduler (as a Worker's would): the owning
      // task fails, its native scope is destroyed, and the child runs on. Before, a closed
      // library counted as "no child left": the cells went, and the child wrote into freed
      // memory (a segfault in 5 runs of 5).
      await ch.send(1n); // the receiver ends
      const other = openLibrary();
      let onClosed;
      const owning = coroutineScope((scope) => {
        const c = rt.cells(3);
        onClosed = new WeakRef(c);
        nativeScope(scope).launch(waitAdd, c);
        return Promise.resolve();
      });
      await until(() => onClosed.deref()?.[2] === 1n, "the child to run"); // bounded
      closeLibrary();
      await owning.catch(() => {});
      await gc();
      const still = onClosed.deref();
      if (still === undefined) throw new Error("a running child's cells were let go at closeLibrary");
      still[0] = 1n;
      await until(() => still[1] === 1n, "the child to finish after the close"); // bounded
      other.symbols("test").kc_sched_shutdown(0);
      other.close();
      `,
      { v8Flags: ["--expose-gc"] },
    );
    assert.equal(res.code, 0, res.stderr);
  });
});

Deno.test("runtime: shutdown is idempotent, later calls are ShutdownError, restart works", async () => {
  const rt = runtime({ workers: 2 });
  const cells = runtime().cells([20n, 0n]);
  for (let i = 0; i < 10; i++) rt.spawn("sleeper", cells);
  await rt.shutdown("finish"); // the sleepers complete first
  assert.equal(cells[1], 10n);
  await rt.shutdown();
  assert.equal(rt.isRunning, false);
  assert.throws(() => rt.spawn("sleeper", cells), ShutdownError);
  assert.throws(() => rt.stats(), ShutdownError);
  await assert.rejects(() => rt.drain(), ShutdownError);
  const again = runtime({ workers: 1 });
  assert.notEqual(again, rt);
  assert.equal(again.workers, 1);
  await again.shutdown("cancel");
});

Deno.test("runtime: a second shutdown() on its helper thread neither stops nor refuses a runtime() started meanwhile", async () => {
  for (let i = 0; i < 20; i++) {
    const old = runtime({ workers: 1 });
    await old.shutdown();
    // Its generation is still the latest when it checks, so it goes to its helper thread; the
    // runtime() below starts the next scheduler meanwhile. Before, that thread shut down
    // whichever scheduler ran when it got there (nearly always the later one), or the start
    // found it counted as a shutdown in progress and threw ShutdownError.
    const again = old.shutdown();
    const later = runtime({ workers: 1 });
    await again;
    assert.equal(later.isRunning, true, `round ${i}`);
    await later.shutdown();
  }
});

Deno.test("runtime: pinned cells are per loaded library: another copy's shutdown keeps the cells this one's coroutines write into", async () => {
  // Two copies of the library loaded (another file), each with its scheduler: the pins were
  // module-wide, so the copy's shutdown (or drain, or prune: a handle of the first copy is
  // stale in the copy) let go of cells the first copy's coroutines went on writing into.
  const dir = await Deno.makeTempDir({ prefix: "kcoro-copy-" });
  try {
    const copyPath = `${dir}/${library().path.split("/").pop()}`;
    await Deno.copyFile(library().path, copyPath);
    const res = await evalScript(`
      import { closeLibrary, library, openLibrary, runtime } from "./mod.ts";
      import { pinnedCountOf } from "./src/runtime.ts";
      const a = runtime();
      const first = library().path;
      // A second host of the first copy: its scheduler outlives the close below.
      const hold = openLibrary({ path: first });
      const before = pinnedCountOf(a);
      a.spawn("sleeper", a.cells([60_000n, 0n])); // a minute: running throughout
      const r = { pinned: pinnedCountOf(a) - before };
      closeLibrary();
      Deno.env.set("KCORO_LIB", ${JSON.stringify(copyPath)});
      const b = runtime(); // the copy's own scheduler
      r.other = library().path !== first;
      await b.shutdown();
      r.kept = pinnedCountOf(a) - before;
      closeLibrary();
      Deno.env.delete("KCORO_LIB");
      await runtime().shutdown(); // the first copy's again: its sleeper abandoned
      hold.close();
      console.log(JSON.stringify(r));
    `);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), { pinned: 1, other: true, kept: 1 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime: another loaded copy's shutdown in progress does not make runtime() on this one throw", async () => {
  // Each loaded copy of the library (another file) counts its generations itself. The set of
  // shutdowns in progress was keyed by the generation alone: the copy's shutdown of its
  // generation N, still pending, made runtime() here throw ShutdownError ("a shutdown of the
  // runtime is still in progress") while this library's own generation N ran.
  const dir = await Deno.makeTempDir({ prefix: "kcoro-copy-" });
  try {
    const copyPath = `${dir}/${library().path.split("/").pop()}`;
    await Deno.copyFile(library().path, copyPath);
    const res = await evalScript(`
      import { closeLibrary, library, openLibrary, runtime } from "./mod.ts";
      import { generationOf } from "./src/runtime.ts";
      const a = runtime(); // this library's scheduler: running throughout
      const first = library().path;
      const holdA = openLibrary({ path: first }); // keeps it running past the close below
      closeLibrary();
      Deno.env.set("KCORO_LIB", ${JSON.stringify(copyPath)});
      const b = runtime(); // the copy's own scheduler
      const holdB = openLibrary({ path: library().path });
      const r = { other: library().path !== first, same: generationOf(b) === generationOf(a) };
      // A finishing shutdown drains a sleeper of a minute: pending until cancelled below.
      b.spawn("sleeper", b.cells([60_000n, 0n]));
      let ended = false;
      const stopping = b.shutdown("finish").then(() => ended = true);
      closeLibrary(); // the copy stays loaded (holdB), its shutdown still draining
      Deno.env.delete("KCORO_LIB");
      try {
        r.again = generationOf(runtime()) === generationOf(a); // this library's, still running
      } catch (e) {
        r.again = e.name + ": " + e.message;
      }
      r.pending = !ended;
      // Cuts the copy's drain short (a cancel while a finish drains).
      const rc = await holdB.symbols("cancel").kc_sched_shutdown_gen_async(0, generationOf(b));
      await stopping;
      r.rc = rc;
      await runtime().shutdown();
      holdA.close();
      holdB.close();
      console.log(JSON.stringify(r));
    `);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), {
      other: true,
      same: true,
      again: true,
      pending: true,
      rc: 0,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime: runtime() called right after shutdown() never hands out a Runtime of the scheduler shutting down", async () => {
  let before = 0, after = 0;
  for (let i = 0; i < 20; i++) {
    const rt = runtime();
    const stopping = rt.shutdown();
    // Before the native shutdown began (on its helper thread) the scheduler still read as
    // running, and runtime() handed out a Runtime of it, whose spawns the shutdown abandoned.
    // Now a ShutdownError (in progress), or, once it has ended natively, a later scheduler.
    let next: Runtime | undefined;
    try {
      next = runtime();
    } catch (e) {
      if (!(e instanceof ShutdownError)) throw e;
      assert.match(e.message, /a shutdown of the runtime is still in progress/);
    }
    if (next === undefined) before++;
    else {
      after++;
      assert.notEqual(generationOf(next), generationOf(rt), "a Runtime of the one shutting down");
    }
    await stopping;
  }
  assert.equal(before + after, 20);
});

/**
 * Spawns a sleeper of a minute on `rt` (running throughout a test), checks that its cells are
 * pinned, and answers `rt`'s pinned count with them.
 */
function spawnPinnedSleeper(rt: Runtime): number {
  const before = pinnedCountOf(rt);
  rt.spawn("sleeper", rt.cells([60_000n, 0n]));
  assert.equal(pinnedCountOf(rt), before + 1);
  return before + 1;
}

Deno.test("runtime: a shutdown that settles once a later runtime() runs keeps the cells that runtime's coroutines write into", async () => {
  // The cells of every built-in spawned are kept reachable (module-wide) until it can no longer
  // write. A shutdown let go of all of them when it settled, also of those of coroutines of a
  // later scheduler started before it settled, which then wrote into memory the collector
  // could free.
  // A second shutdown() of a Runtime shut down already goes to its helper thread (its
  // generation is still the latest), and settles after the runtime() started meanwhile.
  const old = runtime();
  await old.shutdown();
  const again = old.shutdown();
  const later = runtime();
  const pinned = spawnPinnedSleeper(later);
  await again;
  assert.equal(pinnedCountOf(later), pinned, "a second shutdown let go of a later runtime's cells");
  // A first shutdown whose native call ended before its promise settled: the thread held (no
  // turn of the event loop) until runtime() can start the next scheduler, which is spawned into
  // before the shutdown's promise settles.
  const stopping = later.shutdown();
  const bound = performance.now() + 30_000; // against a hang only
  let next: Runtime | undefined;
  while (next === undefined) {
    try {
      next = runtime();
    } catch (e) {
      if (!(e instanceof ShutdownError)) throw e; // a shutdown still in progress
      if (performance.now() > bound) throw new Error("the shutdown did not end");
    }
  }
  const pinnedNext = spawnPinnedSleeper(next);
  await stopping;
  assert.equal(pinnedCountOf(next), pinnedNext, "a shutdown let go of a later runtime's cells");
  await next.shutdown(); // the sleepers abandoned: now nothing writes
  assert.equal(pinnedCountOf(next), 0);
});

Deno.test('runtime: a one-worker runtime asked for more says "1 worker", not "1 workers"', async () => {
  await runtime().shutdown();
  const rt = runtime({ workers: 1 });
  try {
    assert.throws(
      () => runtime({ workers: 2 }),
      (e: unknown) =>
        e instanceof RangeError &&
        e.message ===
          "Cannot start runtime: it is already running with 1 worker, received workers: 2",
    );
  } finally {
    await rt.shutdown();
  }
});

Deno.test("runtime: a shutdown that settles while a later runtime's finishing shutdown still drains keeps that runtime's cells", async () => {
  // No scheduler *runs* then (kc_sched_info says so while one shuts down), but the later one's
  // finish still runs its coroutines, which write into their cells: they must stay pinned.
  const old = runtime();
  await old.shutdown();
  const again = old.shutdown(); // settles after what follows (a turn of the event loop)
  const later = runtime();
  const pinned = spawnPinnedSleeper(later); // the finish drains for it
  const finishing = later.shutdown("finish");
  // The finish has begun once runtime() says a shutdown is in progress (no turn of the loop).
  const bound = performance.now() + 30_000; // against a hang only
  for (;;) {
    try {
      runtime();
    } catch (e) {
      if (e instanceof ShutdownError) break;
      throw e;
    }
    if (performance.now() > bound) throw new Error("the finishing shutdown did not begin");
  }
  await again;
  assert.equal(pinnedCountOf(later), pinned, "a shutdown let go of a finishing runtime's cells");
  await later.shutdown("cancel"); // cuts the finish short: the sleeper abandoned
  await finishing;
  assert.equal(pinnedCountOf(later), 0);
});

Deno.test("runtime: a drain that ran dry as a finish elsewhere began keeps the cells that finish's coroutines write into", async () => {
  // A drain lets go of its library's pins when it reads no coroutine live. kc_sched_info reads
  // 0 too while no scheduler runs, also while a finish (another isolate's, C code's) still runs
  // coroutines, which write into their cells: a drain that ran dry just before such a finish
  // began let go of them. The drain's check of its generation (kc_sched_ended), the last native
  // call between its run-dry wait and that read, is where the finish is made to begin here.
  await runtime().shutdown();
  const rt = runtime({ workers: 1 });
  const sym = librarySymbols(library(), "test");
  const ended = sym.kc_sched_ended;
  // The FFI object's functions are plain properties: replaced for this test, put back after.
  const patch = sym as { kc_sched_ended: (generation: bigint) => number };
  let pinned = -1;
  let finishing: Promise<number> | undefined;
  let checks = 0;
  patch.kc_sched_ended = (generation: bigint) => {
    checks++;
    if (finishing === undefined) {
      pinned = spawnPinnedSleeper(rt); // the finish drains for it
      finishing = sym.kc_sched_shutdown_async(1);
      const bound = performance.now() + 30_000; // against a hang only
      while (rt.isRunning) {
        if (performance.now() > bound) throw new Error("the finish did not begin");
      }
    }
    return ended(generation);
  };
  let drained: Promise<unknown>;
  try {
    // Ran dry: nothing was spawned when it waited. Its outcome is taken at once (it settles
    // before the assertion below is reached).
    drained = rt.drain().then(() => "resolved", (e) => e);
    // Its slice's check (the finish begins there), then its read of what is live, after which
    // it goes on with that finish (settles with it) rather than let go of the cells.
    await until(() => checks >= 2, "the drain read what is live");
  } finally {
    patch.kc_sched_ended = ended;
  }
  assert.notEqual(finishing, undefined, "the drain never checked its generation");
  assert.equal(pinnedCountOf(rt), pinned, "a drain let go of a finishing scheduler's cells");
  assert.equal(await sym.kc_sched_shutdown_async(0), 0); // cuts the finish short
  assert.equal(await finishing, 0);
  // The drain settled with that finish, which a cancel cut short (README).
  assert.ok(await drained! instanceof ShutdownError);
  // Every scheduler has ended, but nothing of this isolate's ran since: still pinned (README).
  assert.equal(pinnedCountOf(rt), pinned, "let go of when the finish ended");
  await runtime().shutdown(); // settles with every scheduler ended: the sleeper's cells go now
  assert.equal(pinnedCountOf(rt), 0);
});

Deno.test("runtime: a Runtime shut down stays so once a later scheduler runs: its shutdown does not stop that one", async () => {
  const old = runtime({ workers: 2 });
  await old.shutdown();
  const later = runtime({ workers: 1, stackSize: 32 * 1024 });
  const cells = later.cells([60_000n, 0n]);
  later.spawn("sleeper", cells);
  // Before, the old Runtime drove whichever scheduler ran: its second shutdown stopped the
  // later one (cancelling its sleeper), and it spawned onto it, whose stacks may be smaller
  // than the code it spawns was started for.
  assert.equal(old.isRunning, false);
  await old.shutdown();
  assert.equal(later.isRunning, true);
  assert.equal(later.stats().live, 1);
  assert.throws(() => old.spawn("sleeper", cells), /a later one \(runtime\(\) returns it\)/);
  assert.throws(() => old.stats(), ShutdownError);
  await assert.rejects(() => old.drain(), ShutdownError);
  // Shut down and restarted behind this isolate's back (a Worker, C code): runtime() returns a
  // Runtime of the running scheduler, with its worker count, not the one it handed out before.
  const sym = library().symbols("test");
  assert.equal(await sym.kc_sched_shutdown_async(0), 0);
  assert.equal(sym.kc_sched_start(2, 0, 0), 0);
  const now = runtime();
  assert.notEqual(now, later);
  assert.equal(now.workers, 2);
  assert.equal(later.isRunning, false);
  await later.shutdown();
  assert.equal(now.isRunning, true);
  await now.shutdown();
});

Deno.test("runtime: a shutdown and restart elsewhere right before spawn's native call makes it a ShutdownError, not a spawn onto the later scheduler", async () => {
  const rt = runtime({ workers: 1 });
  const sym = librarySymbols(library(), "test");
  // The table every call reads its functions from, writable for the test.
  const table = sym as unknown as Record<string, (...args: unknown[]) => unknown>;
  const { kc_spawn, kc_spawn_gen } = table;
  // Another isolate (or C code) shuts the scheduler down and starts a later one, between
  // whatever spawn checked before its native call and that call: once, in the call's place.
  let restarted = false;
  const restartOnce = () => {
    if (restarted) return;
    restarted = true;
    assert.equal(sym.kc_sched_shutdown(0), 0);
    assert.equal(sym.kc_sched_start(1, 32 * 1024, 0), 0);
  };
  table.kc_spawn = (...args) => (restartOnce(), kc_spawn(...args));
  table.kc_spawn_gen = (...args) => (restartOnce(), kc_spawn_gen(...args));
  const cells = rt.cells([0n, 0n]);
  try {
    // Before, spawn checked the generation with kc_sched_info, then called kc_spawn: the
    // coroutine ran on the later scheduler, whose stacks may be smaller than it needs.
    assert.throws(() => rt.spawn("spin", cells), /a later one \(runtime\(\) returns it\)/);
  } finally {
    table.kc_spawn = kc_spawn;
    table.kc_spawn_gen = kc_spawn_gen;
  }
  assert.equal(restarted, true);
  const later = runtime();
  assert.notEqual(later, rt);
  await later.drain();
  assert.equal(cells[1], 0n); // it ran nowhere
  later.spawn("spin", cells);
  await later.drain();
  assert.equal(cells[1], 1n);
  await later.shutdown();
});

Deno.test("runtime: a cancel and restart elsewhere right before drain's native call is a ShutdownError, not the later scheduler's emptiness", async () => {
  const rt = runtime({ workers: 1 });
  const sym = librarySymbols(library(), "test");
  const table = sym as unknown as Record<string, (...args: unknown[]) => unknown>;
  const { kc_sched_drain_for } = table;
  // Another isolate (or C code) cancels the scheduler and starts a later one between what the
  // drain checked and its native call (a hop to a helper thread): once, in the call's place.
  let restarted = false;
  table.kc_sched_drain_for = (...args) => {
    if (!restarted) {
      restarted = true;
      assert.equal(sym.kc_sched_shutdown(0), 0);
      assert.equal(sym.kc_sched_start(1, 32 * 1024, 0), 0);
    }
    return kc_sched_drain_for(...args);
  };
  const cells = rt.cells([60_000n, 0n]); // a minute's sleeper: the cancel abandons it
  rt.spawn("sleeper", cells);
  let got: unknown;
  try {
    // Before, the later scheduler (empty) drained at once and the drain resolved, as if the
    // sleeper had run to its end.
    got = await rt.drain().then(() => "resolved", (e) => e);
  } finally {
    table.kc_sched_drain_for = kc_sched_drain_for;
  }
  assert.equal(restarted, true);
  assert.ok(got instanceof ShutdownError, String(got));
  assert.match((got as Error).message, /"cancel" elsewhere/);
  assert.equal(cells[1], 0n);
  const later = runtime();
  assert.notEqual(later, rt);
  await later.drain(); // its own: empty
  await later.shutdown();
});

Deno.test("runtime: a coroutine parked on a channel when shutdown cancels it leaves the channel usable", async () => {
  const rt = runtime({ workers: 1 });
  using ch = new Channel<bigint>("rendezvous", { codec: codecs.u64 });
  const cells = runtime().cells([BigInt(ch.handle), 0n, 0n]);
  rt.spawn("receiver", cells);
  await rt.drain(); // parked in its receive
  await rt.shutdown("cancel");
  // It never ran again; abandoned in its receive, it shows `done` with ESHUTDOWN (before,
  // `done` stayed 0 for good).
  assert.equal(cells[1], 1n);
  assert.equal(BigInt.asIntN(64, cells[2]), BigInt(Status.ESHUTDOWN));
  // Its stack is gone, and so is its waiter: a send finds no receiver (it used to write into
  // the freed stack and crash the process).
  assert.deepEqual(ch.trySend(1n), { state: "full" });
  const got = ch.receive();
  await ch.send(2n);
  assert.equal(await got, 2n);
});

Deno.test("runtime: a receiver left parked by a finish shutdown is abandoned as by a cancel: done with ESHUTDOWN", async () => {
  const rt = runtime({ workers: 1 });
  using ch = new Channel<bigint>("rendezvous", { codec: codecs.u64 });
  const cells = rt.cells([BigInt(ch.handle), 0n, 0n]);
  rt.spawn("receiver", cells);
  assert.equal((await rt.drain()).parked, 1); // parked in its receive: nothing sends
  // The finish drains (nothing runnable) and abandons what stays parked.
  assert.equal((await rt.shutdown("finish")).abandoned, 1);
  assert.equal(cells[1], 1n);
  assert.equal(BigInt.asIntN(64, cells[2]), BigInt(Status.ESHUTDOWN));
});

Deno.test("runtime: a cancellable-sleeper abandoned in its sleep by a cancel shutdown shows done with ESHUTDOWN; a sleeper's done stays", async () => {
  const rt = runtime({ workers: 1 });
  const csleeper = rt.cells([60_000n, 0n, 0n]); // a minute: asleep when the shutdown comes
  const sleeper = rt.cells([60_000n, 0n]);
  rt.spawn("cancellable-sleeper", csleeper);
  rt.spawn("sleeper", sleeper);
  // Both asleep (parked on their timers): a shutdown before either ran would abandon it with
  // no cleanup of its own pushed yet, and tell nothing.
  await until(() => rt.stats().workers[0].parks >= 2, "both built-ins asleep");
  await rt.shutdown("cancel");
  // Abandoned in its sleep: done = 1 with ESHUTDOWN, no status a finished sleep reports
  // (before, done stayed 0 for good).
  assert.equal(csleeper[1], 1n);
  assert.equal(BigInt.asIntN(64, csleeper[2]), BigInt(Status.ESHUTDOWN));
  // The two-cell sleeper has no status to say so: its done says it slept its time.
  assert.equal(sleeper[1], 0n);
});

Deno.test("runtime: a parked built-in's cells stay pinned across a drain until it can no longer write", async () => {
  const res = await evalScript(
    `
    import { Channel, codecs, runtime } from "./mod.ts";
    const rt = runtime({ workers: 1 });
    using ch = new Channel(0, { codec: codecs.u64 });
    let ref;
    (() => {
      const cells = runtime().cells([BigInt(ch.handle), 0n, 0n]);
      ref = new WeakRef(cells);
      rt.spawn("receiver", cells); // parks: nothing sent yet
    })();
    await rt.drain(); // parked ones do not count: this returns with the receiver parked
    for (let i = 0; i < 5; i++) {
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 1));
    }
    // The receiver still writes into its cells when a value comes: they must still exist.
    if (ref.deref() === undefined) throw new Error("the parked receiver's cells were collected");
    await ch.send(7n);
    await rt.drain();
    if (ref.deref()[1] !== 1n) throw new Error("the receiver did not finish");
    await rt.shutdown();
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a built-in's cells are let go once it finished, while others stay live", async () => {
  const res = await evalScript(
    `
    import { Channel, codecs, runtime } from "./mod.ts";
    import { pinnedCountOf } from "./src/runtime.ts";
    import { collectUntil } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    using ch = new Channel(0, { codec: codecs.u64 });
    let receiver, spun;
    (() => {
      const cells = runtime().cells([BigInt(ch.handle), 0n, 0n]);
      receiver = new WeakRef(cells);
      rt.spawn("receiver", cells); // stays live (parked) throughout
    })();
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 100; i++) {
        const cells = runtime().cells([1n, 0n]);
        if (round === 0 && i === 0) spun = new WeakRef(cells);
        rt.spawn("spin", cells);
      }
      await rt.drain(); // the spins finished; the receiver is parked, so live stays 1
    }
    if (pinnedCountOf(rt) > 130) throw new Error("still pinned: " + pinnedCountOf(rt));
    // A finished spin's cells collected, waited for (bounded; before, five collections, then
    // the check); the receiver's stay through every one.
    await collectUntil(() => spun.deref() === undefined, "a finished spin's cells to be let go");
    if (receiver.deref() === undefined) throw new Error("the parked receiver's cells were let go");
    await ch.send(7n);
    await rt.drain();
    if (receiver.deref()[1] !== 1n) throw new Error("the receiver did not finish");
    await rt.shutdown();
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: built-ins that never park take turns and stop at a shutdown: an echo on its own conflated channel, a chanSender to one, a long spin", async () => {
  // None of the three ever parks: the echo's receive always finds the value its send put back
  // (in = out, conflated), the chanSender's sends to a conflated channel never block and its
  // count never runs out, nor do the spin's rounds. Before, the first kept the one worker for
  // good: the marker queued behind them never ran, and shutdown() never resolved (the process
  // was killed at the bound). The spawns from here queue in order: the marker, last, runs only
  // once each of the others ran and gave the worker back.
  const res = await evalScript(
    `
    import { Channel, codecs, runtime } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    using ch = new Channel("conflated", { codec: codecs.u64 });
    using sink = new Channel("conflated", { codec: codecs.u64 });
    const h = BigInt(ch.handle); // native from here
    if (ch.trySend(42n).state !== "ok") throw new Error("the value did not go in");
    const max = 2n ** 64n - 1n;
    const echo = rt.cells([h, h, 0n, 0n]);
    const sender = rt.cells([BigInt(sink.handle), 0n, max, 0n, 0n]);
    const spin = rt.cells([max, 0n]);
    const marker = rt.cells([1n, 0n]);
    rt.spawn("echo", echo);
    rt.spawn("chanSender", sender);
    rt.spawn("spin", spin);
    rt.spawn("spin", marker); // one round: ends at its first run
    const ran = () => marker[1] === 1n && echo[2] > 0n && sender[3] > 0n;
    await until(ran, "the marker queued behind the built-ins to run", 30_000);
    await rt.shutdown();
    if (spin[1] !== 0n) throw new Error("the endless spin said it was done");
    // The echo stopped between values: the value is still in the channel.
    const got = ch.tryReceive();
    if (got.state !== "ok" || got.value !== 42n) throw new Error("the value is gone: " + got.state);
  `,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: built-ins saturate instead of wrapping: a huge sleep sleeps, chanSender stops at 2^64 - 1", async () => {
  const res = await evalScript(`
    import { Channel, codecs, runtime } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    const sleeper = runtime().cells([2n ** 62n, 0n]); // 2^62 ms: wrapped, it was 0 ns
    rt.spawn("sleeper", sleeper);
    using ch = new Channel(8, { codec: codecs.u64 });
    const max = 2n ** 64n - 1n;
    const sender = runtime().cells([BigInt(ch.handle), max - 1n, 5n, 0n, 0n]);
    rt.spawn("chanSender", sender);
    await until(() => sender[4] === 1n, () => "chanSender to end (sent " + sender[3] + ")");
    const got = [];
    for (let r = ch.tryReceive(); r.state === "ok"; r = ch.tryReceive()) got.push(r.value);
    if (got.length !== 2 || got[0] !== max - 1n || got[1] !== max || sender[3] !== 2n) {
      throw new Error("chanSender sent " + got + " (sent " + sender[3] + ")");
    }
    // A 20 ms sleep spawned after it ends first (before, 50 timers of 1 ms stood for that): a
    // wrapped sleep (0 ns) had ended long before.
    const short = runtime().cells([20n, 0n]);
    rt.spawn("sleeper", short);
    await until(() => short[1] !== 0n, "the 20 ms sleep to end");
    if (sleeper[1] !== 0n) throw new Error("the 2^62 ms sleep ended");
    await rt.shutdown(); // cancels the sleeper
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a chanSender to a channel whose elements are not 8 bytes sends nothing and ends, as README says", async () => {
  // A first-day mistake: the default codec's channel. Every send fails (its elements are not
  // u64s), so the sender stops at once: `done` with `sent` 0, nothing buffered. README documents
  // it beside the built-in; this pins that it neither hangs nor delivers garbage.
  const rt = runtime();
  using ch = new Channel<number>(8);
  const sender = rt.cells([BigInt(ch.handle), 1n, 5n, 0n, 0n]);
  rt.spawn("chanSender", sender);
  await until(() => sender[4] === 1n, () => `chanSender not done: ${sender}`);
  assert.equal(sender[3], 0n);
  assert.deepEqual(ch.tryReceive(), { state: "empty" });
  await shutdownScheduler();
});

/**
 * Guarded stacks the process may map at once: `(vm.max_map_count - 16384) / 2`, at least 1024
 * (zig-src/coro/stack.zig, `stackBudget`, which counts slabs too); 24,573 at Linux's default count.
 */
function guardedBudget(): number {
  let maxMaps = 65530; // the library's assumption where it cannot read the count
  // Read by `cat`: Deno lets only --allow-all read /proc (--allow-read got NotCapable, and the
  // default count, which sized the loop below a 16-core machine's budget of ~4 million).
  const out = new Deno.Command("cat", { args: ["/proc/sys/vm/max_map_count"] }).outputSync();
  if (out.success) maxMaps = Number(new TextDecoder().decode(out.stdout).trim()) || maxMaps;
  return Math.max(1024, Math.floor((maxMaps - 16384) / 2));
}

Deno.test({
  name: "runtime: running out of guarded stacks is KC_ENOMEM and leaves the process its mappings",
  // A machine whose vm.max_map_count is raised far past the default (some set 1M or more)
  // would need that many parked coroutines: too long for the suite.
  ignore: guardedBudget() > 150_000,
}, async () => {
  const res = await evalScript(`
    import { Channel, codecs, KcoroError, runtime } from "./mod.ts";
    const rt = runtime({ workers: 2 });
    const ch = new Channel(0, { codec: codecs.u64 });
    const cells = runtime().cells([BigInt(ch.handle), 0n, 0n]);
    let n = 0, err = null;
    try {
      // Past the budget (${guardedBudget()}): the spawn that would map one more fails.
      for (; n < ${
    guardedBudget() + 1000
  }; n++) rt.spawn("receiver", cells); // each parks, holding its stack
    } catch (e) {
      err = e;
    }
    if (!(err instanceof KcoroError) || err.code !== "KC_ENOMEM" || !/slabStacks/.test(err.message)) {
      throw new Error("after " + n + " spawns: " + err);
    }
    // The engine can still map its heap (it used to abort: "Fatal process out of memory").
    const keep = [];
    for (let i = 0; i < 1_000_000; i++) keep.push([i]);
    const big = [];
    for (let i = 0; i < 64; i++) big.push(new Uint8Array(1 << 20));
    ch.cancel(); // every receiver ends
    await rt.drain();
    if (rt.stats().live !== 0) throw new Error("live " + rt.stats().live);
    rt.spawn("receiver", cells); // the stacks came back
    await rt.shutdown();
    console.log(n, keep.length, big.length);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test({
  name:
    "runtime: slabs count against the same budget: a slab per stack runs out as KC_ENOMEM and leaves the process its mappings",
  // As above: a raised vm.max_map_count would need that many parked coroutines.
  ignore: guardedBudget() > 150_000,
}, async () => {
  // Stacks of 64 MiB take a slab each (two mappings, as a guarded stack). Before slabs counted
  // against the budget, the spawns went on until mmap failed (32,765 here), and the engine,
  // left no mapping for its heap, aborted the process. The message said only guarded stacks
  // stop there, and that slabStacks, in use already, held a million.
  const res = await evalScript(`
    import { Channel, codecs, KcoroError, runtime } from "./mod.ts";
    const rt = runtime({ workers: 2, slabStacks: true, stackSize: 64 * 1024 * 1024 });
    const ch = new Channel(0, { codec: codecs.u64 });
    const cells = runtime().cells([BigInt(ch.handle), 0n, 0n]);
    let n = 0, err = null;
    try {
      for (; n < ${guardedBudget() + 1000}; n++) rt.spawn("receiver", cells); // each parks
    } catch (e) {
      err = e;
    }
    if (
      !(err instanceof KcoroError) || err.code !== "KC_ENOMEM" || n > ${guardedBudget()} ||
      !/guarded stacks and slabs, 64 MiB of stacks each or one larger stack/.test(err.message)
    ) {
      throw new Error("after " + n + " spawns: " + err);
    }
    // The engine can still map its heap.
    const keep = [];
    for (let i = 0; i < 1_000_000; i++) keep.push([i]);
    const big = [];
    for (let i = 0; i < 64; i++) big.push(new Uint8Array(1 << 20));
    ch.cancel(); // every receiver ends
    await rt.drain();
    if (rt.stats().live !== 0) throw new Error("live " + rt.stats().live);
    rt.spawn("receiver", cells); // a free stack from the pool
    await rt.shutdown();
    console.log(n, keep.length, big.length);
  `);
  assert.equal(res.code, 0, res.stderr);
});

/**
 * A C coroutine for the shutdown tests below. Its cells: [go, done, running]. It runs until the
 * isolate says go, so a shutdown cannot stop it mid-loop and waits for its end in its join. Its
 * own bound (60 s) is against a hang only.
 */
const HOLD_C = `#include <stdint.h>
#include <time.h>
static time_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec; }
void hold(void *arg) {
  uint64_t *c = arg;
  __atomic_store_n(c + 2, 1, __ATOMIC_RELEASE);
  time_t end = now() + 60;
  while (!__atomic_load_n(c, __ATOMIC_ACQUIRE) && now() < end) {}
  __atomic_store_n(c + 1, 1, __ATOMIC_RELEASE);
}`;

Deno.test("runtime: shutdown waits for a running coroutine on a helper thread, not on the event loop", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // hold's cells: [go, done, running]. It runs until this isolate says go: a shutdown cannot
    // stop it mid-loop and waits for its end. Its own bound (60 s) is against a hang only: a
    // shutdown that froze the event loop returns then, the coroutine done.
    const lib = await buildPlugin(dir, HOLD_C);
    const res = await evalScript(`
      import { resolveNative, runtime } from "./mod.ts";
      import { settled, until } from "./tests/support.ts";
      const rt = runtime({ workers: 1 });
      const cells = rt.cells(3);
      rt.spawn(resolveNative("${lib}", "hold"), cells);
      await until(() => cells[2] === 1n, "the coroutine to run"); // bounded
      const shutdown = rt.shutdown(); // cannot stop it mid-loop: waits for its end
      // What the coroutine had done when the shutdown ended (and how it ended): a shutdown that
      // ended first, at once or on its helper thread while the coroutine ran, reads 0n.
      const doneAtEnd = shutdown.then(
        (v) => ({ v, done: cells[1] }),
        (e) => ({ e, done: cells[1] }),
      );
      // The native shutdown is under way (the scheduler no longer reads as running) and a
      // macrotask runs while it waits: the event loop is not frozen.
      await until(() => !rt.isRunning, "the shutdown under way natively"); // bounded
      await new Promise((r) => setTimeout(r, 0));
      if (cells[1] !== 0n) throw new Error("the event loop was frozen during the shutdown");
      if (await settled(shutdown)) throw new Error("the shutdown ended with the coroutine running");
      cells[0] = 1n; // go
      const end = await doneAtEnd;
      // It ran to its end, so the shutdown abandoned none (counted at the join, not as it
      // stopped, when it still ran).
      if (!("v" in end) || end.v?.abandoned !== 0 || end.done !== 1n) {
        throw new Error("the shutdown did not wait for the coroutine: " + Deno.inspect(end));
      }
    `);
    assert.equal(res.code, 0, res.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime: a second shutdown() while the first joins a running coroutine resolves after the join, with the same count", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // hold's cells: [go, done, running], as in the test above: it runs until this isolate says
    // go, so the first shutdown has stopped the run and waits in its join meanwhile.
    const lib = await buildPlugin(dir, HOLD_C);
    const res = await evalScript(`
      import { Channel, codecs, resolveNative, runtime } from "./mod.ts";
      import { settled, until } from "./tests/support.ts";
      const rt = runtime({ workers: 2 });
      const cells = rt.cells(3);
      rt.spawn(resolveNative("${lib}", "hold"), cells);
      await until(() => cells[2] === 1n, "the coroutine to run"); // bounded
      using empty = new Channel("rendezvous", { codec: codecs.u64 });
      rt.spawn("receiver", rt.cells([BigInt(empty.handle), 0n, 0n])); // parks: abandoned
      // Parked: live, not busy (hold, running, is the one busy).
      await until(() => {
        const s = rt.stats();
        return s.live === 2 && s.busy === 1;
      }, "the receiver to park"); // bounded
      const first = rt.shutdown();
      await until(() => !rt.isRunning, "the shutdown under way natively"); // bounded
      // Stopped, not joined: hold still runs. Before, this call's native shutdown found the
      // generation no longer running and returned at once, and it resolved with { abandoned: 0 }
      // (kc_sched_abandoned was KC_EBUSY: not joined yet) while the receiver was abandoned.
      const second = rt.shutdown();
      if (await settled(second)) throw new Error("the second call ended before the join");
      cells[0] = 1n; // go
      const got = [await first, await second];
      if (got[0].abandoned !== 1 || got[1].abandoned !== 1) {
        throw new Error("not the join's count: " + Deno.inspect(got));
      }
    `);
    assert.equal(res.code, 0, res.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime: a second shutdown() (a cancel that cut a finish short) resolves only once the first call's native shutdown returned, so that runtime() then starts a new scheduler", async () => {
  // The two calls' native shutdowns return on their helper threads in either order once the
  // workers are joined. Before, the second call resolved on its own's return, while the
  // first's could still be under way: runtime() right after `await rt.shutdown("cancel")` was
  // a ShutdownError ("still in progress; await its shutdown()", kc_sched_start's
  // KC_ESHUTDOWN), 3 runs in 5. The first call's return is held here (faked) until the
  // second's has come: the second must not resolve before it.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realGen = sym.kc_sched_shutdown_gen_async as (m: number, g: bigint) => Promise<number>;
  let calls = 0, returned = 0;
  let release: (() => void) | undefined;
  sym.kc_sched_shutdown_gen_async = (m: number, g: bigint) => {
    const held = calls++ === 0;
    return realGen(m, g).then((rc) => {
      returned++;
      return held ? new Promise<number>((r) => release = () => r(rc)) : rc;
    });
  };
  try {
    const rt = runtime({ workers: 1 });
    rt.spawn("sleeper", rt.cells([60_000n, 0n])); // a minute: the finish waits for it
    const finishing = rt.shutdown("finish");
    await until(() => !rt.isRunning, "the finish under way natively");
    // What runtime() does as the cancel's call resolves, before any other code runs.
    const next = rt.shutdown("cancel").then((r) => {
      try {
        runtime({ workers: 1 });
        return JSON.stringify(r);
      } catch (e) {
        return String(e);
      }
    });
    await until(() => returned === 2, "both native shutdowns to return");
    assert.equal(await settled(next), false, "resolved before the first call's shutdown returned");
    release!();
    assert.equal(await within(next, 10_000, "the cancel"), JSON.stringify({ abandoned: 1 }));
    assert.deepEqual(await finishing, { abandoned: 1 });
  } finally {
    sym.kc_sched_shutdown_gen_async = realGen;
  }
  await shutdownScheduler();
});

Deno.test("runtime: during a finishing shutdown, spawns fail at once and a cancel ends the drain", async () => {
  const res = await evalScript(`
    import { runtime, ShutdownError } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    const sleeper = rt.cells([60_000n, 0n]); // a minute: a finish would wait for it
    rt.spawn("sleeper", sleeper);
    const finish = rt.shutdown("finish");
    await until(() => !rt.isRunning, "the finish under way natively"); // a bounded wait
    try {
      rt.spawn("sleeper", rt.cells([1n, 0n]));
      throw new Error("spawned during a shutdown");
    } catch (e) {
      if (!(e instanceof ShutdownError)) throw e;
    }
    // The drain ends only with the sleeper: a call that waited for it found it done.
    if (sleeper[1] !== 0n) throw new Error("the spawn waited for the drain");
    try {
      runtime(); // not the one shutting down, and no start that waits for the drain
      throw new Error("runtime() during a shutdown");
    } catch (e) {
      if (!(e instanceof ShutdownError) || !/still in progress/.test(e.message)) throw e;
    }
    if (sleeper[1] !== 0n) throw new Error("runtime() waited for the drain");
    await rt.shutdown("cancel"); // stops the drain: the sleeper is abandoned
    await finish;
    if (sleeper[1] !== 0n) throw new Error("the cancel waited for the drain: the sleeper finished");
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a drain that meets a shutdown of its Runtime settles as that shutdown: resolved by a finish, a ShutdownError after a cancel", async () => {
  const res = await evalScript(`
    import { runtime, ShutdownError } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    const cells = rt.cells([1000n, 0n]); // a 1 s sleeper: the finish waits for it
    rt.spawn("sleeper", cells);
    const early = rt.drain(); // waiting when the shutdown comes
    const finish = rt.shutdown("finish");
    await until(() => !rt.isRunning, "the shutdown under way natively");
    // Called while it is in progress. Before, a ShutdownError or not, depending on how far
    // the shutdown had got.
    const during = rt.drain();
    await Promise.all([early, during, finish]);
    if (cells[1] !== 1n) throw new Error("the sleeper did not finish");
    // Called after it: a ShutdownError, as every call that needs the scheduler.
    const after = await rt.drain().then(() => "resolved", (e) => e);
    if (!(after instanceof ShutdownError)) throw new Error("after the shutdown: " + after);

    // A cancel ends a finishing shutdown's drain: the coroutines were abandoned.
    const rt2 = runtime({ workers: 1 });
    const long = rt2.cells([60_000n, 0n]);
    rt2.spawn("sleeper", long);
    const finishing = rt2.shutdown("finish");
    await until(() => !rt2.isRunning, "the second shutdown under way natively");
    const drained = rt2.drain().then(() => "resolved", (e) => e);
    await rt2.shutdown("cancel");
    await finishing;
    const got = await drained;
    if (!(got instanceof ShutdownError) || !/"cancel"/.test(got.message)) {
      throw new Error("drain during a cancelled finish: " + got);
    }
    if (long[1] !== 0n) throw new Error("the sleeper finished");
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a drain that meets another isolate's shutdown of its scheduler settles as that shutdown: resolved by a finish, a ShutdownError after a cancel", async () => {
  // The native shutdown called directly stands in for another isolate's (or C code's): this
  // isolate's Runtime knows nothing of it.
  const res = await evalScript(`
    import { library, runtime, ShutdownError } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const sym = library().symbols("test");
    const settled = (p) => p.then(() => "resolved", (e) => e);
    const rt = runtime({ workers: 1 });
    const cells = rt.cells([1500n, 0n]); // a 1.5 s sleeper: the finish waits for it
    rt.spawn("sleeper", cells);
    const early = settled(rt.drain()); // waiting when the shutdown comes
    const finish = sym.kc_sched_shutdown_async(1);
    await until(() => !rt.isRunning, "the finish under way natively");
    // Called while it drains. Before, a ShutdownError: a finish elsewhere looked like a cancel.
    const during = settled(rt.drain());
    const [a, b, f] = await Promise.all([early, during, finish]);
    if (a !== "resolved" || b !== "resolved") throw new Error("drains: " + a + ", " + b);
    if (f !== 0 || cells[1] !== 1n) throw new Error("the finish did not run the sleeper dry");
    // Called after it: a ShutdownError, as every call that needs the scheduler.
    if (!((await settled(rt.drain())) instanceof ShutdownError)) throw new Error("after the finish");

    // A cancel elsewhere abandons the coroutines: a ShutdownError that says so.
    const rt2 = runtime({ workers: 1 });
    const long = rt2.cells([60_000n, 0n]);
    rt2.spawn("sleeper", long);
    const drained = settled(rt2.drain());
    if ((await sym.kc_sched_shutdown_async(0)) !== 0) throw new Error("cancel");
    const got = await drained;
    if (!(got instanceof ShutdownError) || !/"cancel" elsewhere/.test(got.message)) {
      throw new Error("drain during a cancel elsewhere: " + got);
    }

    // A finish elsewhere that a cancel cuts short abandons them too.
    const rt3 = runtime({ workers: 1 });
    rt3.spawn("sleeper", rt3.cells([60_000n, 0n]));
    const finishing = sym.kc_sched_shutdown_async(1);
    await until(() => !rt3.isRunning, "the second finish under way natively");
    const cut = settled(rt3.drain());
    if ((await sym.kc_sched_shutdown_async(0)) !== 0 || (await finishing) !== 0) {
      throw new Error("shutdowns");
    }
    const got3 = await cut;
    if (!(got3 instanceof ShutdownError) || !/"cancel" elsewhere/.test(got3.message)) {
      throw new Error("drain during a finish cut short: " + got3);
    }
    if (long[1] !== 0n) throw new Error("the sleeper finished");
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a drain that meets its own Runtime's finish, cut short by a cancel elsewhere, is a ShutdownError", async () => {
  // The own finish is under way (the drain follows it: #afterShutdown) when another isolate's
  // (or C code's) cancel ends its drain and abandons the sleeper: the scheduler ended as a
  // cancel (kc_sched_ended), and the drain must not resolve as if everything ran to its end.
  const res = await evalScript(`
    import { library, runtime, ShutdownError } from "./mod.ts";
    import { generationOf } from "./src/runtime.ts";
    import { until } from "./tests/support.ts";
    const sym = library().symbols("test");
    const settled = (p) => p.then(() => "resolved", (e) => e);
    const rt = runtime({ workers: 1 });
    const gen = generationOf(rt);
    const long = rt.cells([60_000n, 0n]);
    rt.spawn("sleeper", long);
    const drained = settled(rt.drain());
    const finishing = settled(rt.shutdown("finish"));
    // The finish under way natively (it stopped the scheduler counting as running) before the
    // cancel comes: a bounded wait on that, not a sleep.
    await until(() => !rt.isRunning, "the finish under way natively");
    if ((await sym.kc_sched_shutdown_async(0)) !== 0) throw new Error("cancel");
    const f = await finishing;
    if (sym.kc_sched_ended(gen) !== 0) throw new Error("not ended as a cancel: " + sym.kc_sched_ended(gen));
    if (long[1] !== 0n) throw new Error("the sleeper finished");
    const got = await drained;
    if (!(got instanceof ShutdownError)) throw new Error("drain after a finish cut short: " + got + " (shutdown: " + f + ")");
  `);
  assert.equal(res.code, 0, res.stderr);
});

/**
 * Runs `code` as a script read from stdin by `deno run` (ffi, read and env allowed), killed
 * (SIGTERM) at a 20 s bound so that a process that does not exit by itself fails the test.
 */
async function runFromStdin(
  code: string,
  env?: Record<string, string>,
): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--allow-env", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env,
    signal: AbortSignal.timeout(20_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(code));
  await w.close();
  return await child.output();
}

/**
 * The exit tests' script: after `prelude`, 128 chanSenders that never end (a drop-oldest channel
 * never blocks them) write into its cells while it holds 50 000 buffers of the cells' size
 * (which the isolate's disposal frees as it frees a `SharedArrayBuffer`'s); then `beforeEnd`,
 * "end" printed, and `end`, the way the process ends. The cells are the caller's own
 * `SharedArrayBuffer`s (which the exit guard stops the scheduler for), or with `native`
 * `runtime().cells` (native memory, which the disposal leaves alone: no guard).
 */
function writersScript(
  end: string,
  { prelude = "", beforeEnd = "", native = false } = {},
): string {
  const cells = native
    ? "rt.cells(values)"
    : "(() => { const c = new BigUint64Array(new SharedArrayBuffer(40)); c.set(values); return c; })()";
  return `
    import { Channel, codecs, runtime } from "${root}mod.ts";
    ${prelude}
    const rt = runtime({ workers: 2 });
    for (let i = 0; i < 128; i++) {
      const ch = new Channel(1, { codec: codecs.u64, overflow: "drop-oldest" });
      const values = [BigInt(ch.handle), 0n, 1n << 40n, 0n, 0n];
      rt.spawn("chanSender", ${cells});
    }
    const junk = []; // buffers of the cells' size, which the disposal frees as it frees them
    for (let i = 0; i < 50_000; i++) junk.push(new SharedArrayBuffer(40));
    ${beforeEnd}
    console.log("end");
    ${end}
  `;
}

Deno.test("a process with a running runtime exits by itself", async () => {
  const code = `
    import { runtime } from "${root}mod.ts";
    const rt = runtime({ workers: 2 });
    const cells = runtime().cells([1n, 0n]);
    for (let i = 0; i < 100; i++) rt.spawn("sleeper", cells);
    await rt.drain();
    console.log("drained " + cells[1]);
  `;
  const res = await runFromStdin(code);
  assert.equal(res.signal, null, "killed at the 20 s bound: the process did not exit");
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  assert.equal(new TextDecoder().decode(res.stdout).trim(), "drained 100");
});

Deno.test("a process that ends while coroutines write into its cells exits cleanly, with its exit code, its unload listeners run", async () => {
  // Deno disposes the main isolate before the process exits, freeing its SharedArrayBuffer
  // cells while the scheduler's threads run on: chanSenders that never end (a drop-oldest
  // channel never blocks them) then wrote their counts into freed memory, and about three exits
  // in four of this script here ended in SIGABRT ("corrupted double-linked list"), SIGSEGV, or a
  // hang inside malloc. Not every exit meets it, so it runs a bounded number of times; each must
  // end by itself, with the code it set, after its own unload listener (added after the spawns,
  // so it runs before the one that ends the process).
  const script = (end: string) =>
    writersScript(end, { beforeEnd: `addEventListener("unload", () => console.log("unload"));` });
  for (let i = 0; i < 12; i++) {
    const [end, code] = i % 3 === 2 ? ["Deno.exit(5);", 5] : ["Deno.exitCode = 3;", 3];
    const res = await runFromStdin(script(end));
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(
      res.signal,
      null,
      `run ${i}: ended by ${res.signal} (SIGTERM: killed at the bound)`,
    );
    assert.equal(res.code, code, `run ${i}: ${stderr}`);
    assert.equal(new TextDecoder().decode(res.stdout), "end\nunload\n", `run ${i}`);
  }
});

Deno.test("a process ending by an uncaught error or an unhandled rejection while coroutines write into its cells exits with Deno's error, by no signal", async () => {
  // An uncaught error or unhandled rejection skips unload, and Deno disposed the isolate, its
  // SharedArrayBuffer cells included, under the running chanSenders: 7 runs in 12 of these ended
  // in SIGABRT, Deno's error message lost. The scheduler now stops when Deno reads the event's
  // defaultPrevented after the dispatch. A listener that prevents the error keeps the process
  // (and its coroutines) alive: that run's scheduler must still run afterwards.
  const ends = [
    [
      `setTimeout(() => { throw new Error("kcoro-uncaught"); }, 0);`,
      "Uncaught Error: kcoro-uncaught",
    ],
    [`Promise.reject(new Error("kcoro-rejected"));`, "Uncaught (in promise) Error: kcoro-rejected"],
  ] as const;
  for (let i = 0; i < 24; i++) {
    const [end, message] = ends[i % 2];
    const res = await runFromStdin(writersScript(end), { NO_COLOR: "1" });
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(
      res.signal,
      null,
      `run ${i}: ended by ${res.signal} (SIGTERM: killed at the bound): ${stderr}`,
    );
    assert.equal(res.code, 1, `run ${i}: ${stderr}`);
    assert.ok(stderr.includes(message), `run ${i}: ${stderr}`);
    assert.equal(new TextDecoder().decode(res.stdout), "end\n", `run ${i}`);
  }
});

Deno.test("a caller's Error.prepareStackTrace, a frozen Error, or a fatal event a caller's listener made non-extensible does not lose the stop at an uncaught error or an unhandled rejection", async () => {
  // The stop finds Deno's fatal dispatch in a captured stack; a caller's prepareStackTrace that
  // formats stacks its own way ran there and hid the frames (6 runs in 6 ended in SIGABRT); a
  // frozen Error made the stop throw its own TypeError there, in place of the caller's error, and
  // so did an event that a caller's earlier listener made non-extensible (the stop's getter could
  // not be defined on it: the process then ended by SIGABRT).
  const preludes = [
    "Error.prepareStackTrace = (e) => `custom: ${e}`; Error.stackTraceLimit = 1;",
    "Object.freeze(Error);",
    // Non-extensible, not frozen: a frozen event makes Deno's own dispatch throw a TypeError (it
    // writes its internal slots, symbol properties, to the event) in place of the caller's error,
    // with or without kcoro, whatever the listeners after it do.
    `addEventListener("error", (e) => Object.preventExtensions(e));
    addEventListener("unhandledrejection", (e) => Object.preventExtensions(e));`,
  ];
  const ends = [
    `setTimeout(() => { throw new Error("kcoro-uncaught"); }, 0);`,
    `Promise.reject(new Error("kcoro-rejected"));`,
  ];
  for (let i = 0; i < 12; i++) {
    const res = await runFromStdin(
      writersScript(ends[i % 2], { prelude: preludes[(i >> 1) % 3] }),
      { NO_COLOR: "1" },
    );
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.signal, null, `run ${i}: ended by ${res.signal}: ${stderr}`);
    assert.equal(res.code, 1, `run ${i}: ${stderr}`);
    assert.ok(stderr.includes(i % 2 ? "kcoro-rejected" : "kcoro-uncaught"), `run ${i}: ${stderr}`);
    assert.equal(new TextDecoder().decode(res.stdout), "end\n", `run ${i}`);
  }
});

Deno.test("a process ending in any way while coroutines write into runtime().cells exits cleanly, with no exit guard to depend on", async () => {
  // runtime().cells in the main isolate were a SharedArrayBuffer, which Deno frees as it
  // disposes the isolate, under the running chanSenders: only the exit guard (a stop at
  // `unload`, and at a fatal error found by Deno's frame names) kept those exits clean, and a
  // caller's listener before it that stops the event's propagation left the exit unguarded
  // (SIGABRT, SIGSEGV or a hang; 9 runs in 12 of these here). They are native memory now, which
  // the disposal leaves alone: each of these exits, the guard's listeners stopped every time,
  // ends by itself with Deno's own code and message.
  const prelude = ["unload", "error", "unhandledrejection"].map((type) =>
    `addEventListener("${type}", (e) => e.stopImmediatePropagation());`
  ).join("\n");
  const ends = [
    ["Deno.exitCode = 3;", 3, ""],
    [`setTimeout(() => { throw new Error("kcoro-uncaught"); }, 0);`, 1, "kcoro-uncaught"],
    [`Promise.reject(new Error("kcoro-rejected"));`, 1, "kcoro-rejected"],
  ] as const;
  for (let i = 0; i < 12; i++) {
    const [end, code, message] = ends[i % 3];
    const res = await runFromStdin(writersScript(end, { prelude, native: true }), {
      NO_COLOR: "1",
    });
    const stderr = new TextDecoder().decode(res.stderr);
    assert.equal(res.signal, null, `run ${i}: ended by ${res.signal}: ${stderr}`);
    assert.equal(res.code, code, `run ${i}: ${stderr}`);
    assert.ok(stderr.includes(message), `run ${i}: ${stderr}`);
    assert.equal(new TextDecoder().decode(res.stdout), "end\n", `run ${i}`);
  }
});

Deno.test("runtime().cells install no exit guard: only a caller's own SharedArrayBuffer cells do", async () => {
  // The guard's listeners stop the scheduler at an exit, found for fatal errors by Deno's frame
  // names; a program that uses only runtime().cells must not depend on it. Before, every spawn
  // or launch with cells installed it.
  const res = await evalScript(`
    import { coroutineScope, library, nativeScope, runtime } from "./mod.ts";
    import { _exitGuarded, _isNativeCells } from "./src/runtime.ts";
    const rt = runtime({ workers: 1 });
    const seen = [];
    const cells = rt.cells([1n, 0n]);
    seen.push(_isNativeCells(cells));
    rt.spawn("sleeper", cells);
    await coroutineScope(async (scope) => {
      nativeScope(scope).launch("cancellable-sleeper", rt.cells([1n, 0n, 0n]));
    });
    seen.push(_exitGuarded(library()));
    const own = new BigUint64Array(new SharedArrayBuffer(16));
    own[0] = 1n;
    seen.push(_isNativeCells(own));
    rt.spawn("sleeper", own);
    seen.push(_exitGuarded(library()));
    await rt.shutdown("finish");
    console.log(seen.join(" "));
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "true false false true");
});

/**
 * Runs `body` by evalScript with the collector exposed (`--expose-gc`): it must exit cleanly (no
 * signal), having printed only "ok".
 */
async function assertGcScriptOk(body: string): Promise<void> {
  const res = await evalScript(body, { v8Flags: ["--expose-gc"] });
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.signal, null, res.stderr);
  assert.equal(res.stdout.trim(), "ok");
}

Deno.test("runtime().cells in the main isolate are native memory, freed once unreachable, not while a coroutine may write into them", async () => {
  // Freed (the library's count of live blocks, kc_coro_stats' fourth, drops) once their buffer
  // is collected; a running sleeper's pin keeps its cells until the shutdown lets go of them.
  await assertGcScriptOk(
    `
    import { runtime } from "./mod.ts";
    import { collectUntil, liveCells } from "./tests/support.ts";
    const tick = () => new Promise((r) => setTimeout(r, 1));
    const rt = runtime({ workers: 1 });
    const base = liveCells();
    let idle = rt.cells(4);
    if (liveCells() !== base + 1n) throw new Error("not counted: " + liveCells());
    idle = null;
    await collectUntil(() => liveCells() === base, "unreachable cells were not freed");
    let busy = rt.cells([60000n, 0n]); // a minute's sleeper
    rt.spawn("sleeper", busy);
    busy = null;
    for (let i = 0; i < 20; i++) {
      globalThis.gc();
      await tick();
    }
    if (liveCells() !== base + 1n) throw new Error("freed while pinned");
    await rt.shutdown("cancel"); // nothing writes now: the pin goes
    await collectUntil(() => liveCells() === base, "the shut-down sleeper's cells were not freed");
    console.log("ok");
  `,
  );
});

Deno.test("runtime().cells outlive their first buffer when it is transferred (transfer(), a postMessage transfer list): no use-after-free, freed once the last buffer is unreachable and no coroutine writes", async () => {
  // A transfer moves the native memory into a new buffer; a FinalizationRegistry on the first
  // one freed the memory at its collection, under the new buffer still in use (and under a
  // coroutine still writing: the pin kept the first array, not the memory). The companion's
  // buffers release the block from V8's backing-store deleter, once no buffer views it, and
  // the native pin holds the free off while a coroutine may write. liveCells() proves the block
  // live; a freed one is also reused by the allocations below (the values would change).
  await assertGcScriptOk(
    `
    import { resolveNative, runtime } from "./mod.ts";
    import { _isNativeCells } from "./src/runtime.ts";
    import { collectUntil, liveCells, until } from "./tests/support.ts";
    const fail = (m) => { throw new Error(m); };
    const rounds = async (n) => {
      for (let i = 0; i < n; i++) {
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    const rt = runtime({ workers: 1 });
    const base = liveCells();
    // transfer(): the first buffer detached and dropped, the moved one read and written.
    let first = rt.cells([5n, 6n]);
    if (!_isNativeCells(first)) fail("not native");
    const firstRef = new WeakRef(first.buffer);
    const moved = new BigUint64Array(first.buffer.transfer());
    first = null;
    await collectUntil(() => firstRef.deref() === undefined, "the first buffer was not collected");
    await rounds(10);
    const churn = Array.from({ length: 64 }, () => rt.cells([0xdeadn, 0xdeadn])); // reuse a freed block
    if (liveCells() !== base + 1n + 64n) fail("freed under the moved buffer: " + liveCells());
    if (moved[0] !== 5n || moved[1] !== 6n) fail("moved read " + moved);
    moved[1] = 99n;
    // A postMessage transfer list: received by a port of this isolate.
    const { port1, port2 } = new MessageChannel();
    const got = new Promise((r) => port2.onmessage = (e) => r(e.data));
    let sent = rt.cells([7n, 8n]);
    port1.postMessage(sent.buffer, [sent.buffer]);
    sent = null;
    const received = new BigUint64Array(await got);
    port1.close();
    port2.close();
    await rounds(10);
    if (liveCells() !== base + 2n + 64n) fail("freed under the received buffer: " + liveCells());
    if (received[0] !== 7n || received[1] !== 8n) fail("received " + received);
    // Work launched and awaited meanwhile; a coroutine writing into cells whose buffer was
    // transferred and dropped keeps them (its pin) until its end.
    const sum = rt.cells([1000n, 0n]);
    rt.spawn("skynet", sum);
    await rt.drain();
    if (sum[1] !== 499500n) fail("skynet " + sum[1]);
    let threw = "";
    try { rt.spawn("sleeper", received); } catch (e) { threw = e.name; }
    if (threw !== "TypeError") fail("a moved buffer's cells spawned: " + threw);
    // The array left behind, its memory moved away and freed: no pin is taken on it.
    let left = rt.cells(2);
    const leftBase = liveCells();
    let leftMoved = left.buffer.transfer();
    leftMoved = null;
    await collectUntil(() => liveCells() === leftBase - 1n, "the moved-away block was not freed");
    const getpid = resolveNative("libc.so.6", "getpid");
    threw = "";
    try { rt.spawn(getpid, left); } catch (e) { threw = e.message; }
    if (!threw.includes("the cells' buffer was transferred")) fail("the left-behind array spawned: " + threw);
    left = null;
    const busy = rt.cells([60000n, 0n]);
    rt.spawn("sleeper", busy);
    let gone = busy.buffer.transfer();
    const goneRef = new WeakRef(gone);
    gone = null;
    await collectUntil(() => goneRef.deref() === undefined, "the sleeper's moved buffer was not collected");
    await rounds(10);
    const before = liveCells();
    if (before !== base + 2n + 64n + 2n) fail("the sleeper's block freed while pinned: " + before);
    await rt.shutdown("cancel"); // the sleeper's pin goes: its released block is freed then
    // (its deleter may also run a moment after the collection: bounded).
    await until(() => liveCells() === before - 1n, () => "the sleeper's block, unpinned, was not freed: " + liveCells());
    if (moved[1] !== 99n || received[1] !== 8n) fail("values changed");
    churn.length = 0;
    await collectUntil(() => liveCells() === base + 3n, () => "churn not freed: " + liveCells());
    console.log("ok");
  `,
  );
});

Deno.test("a Worker's runtime().cells are freed once unreachable, and a Worker terminated while a coroutine writes into its cells leaves them live, as it leaves cells it transferred out", async () => {
  // Before ABI 25 a Worker's cells were never freed. The companion's buffers are released by
  // their backing-store deleter, which also runs as a terminated Worker's isolate is disposed:
  // without the native pin it freed cells that a sleeper went on to write into. Cells the
  // Worker moved to the main isolate (a postMessage transfer list) go with their buffer.
  await assertGcScriptOk(
    `
    import { collectUntil, liveCells, until } from "./tests/support.ts";
    import { runtime } from "./mod.ts";
    const fail = (m) => { throw new Error(m); };
    const rt = runtime({ workers: 1 });
    const base = liveCells();
    const src = \`
      import { runtime } from "\${new URL("./mod.ts", "file://" + Deno.cwd() + "/").href}";
      const { collectUntil, liveCells } = await import("\${new URL("./tests/support.ts", "file://" + Deno.cwd() + "/").href}");
      const rt = runtime();
      const start = liveCells();
      let idle = rt.cells(3);
      idle = null;
      await collectUntil(() => liveCells() === start, "the Worker's idle cells were not freed");
      const cells = rt.cells([300n, 0n]); // done 300 ms from now
      rt.spawn("sleeper", cells);
      const sent = rt.cells([41n, 42n]); // moved to the main isolate, which outlives this one
      postMessage([Deno.UnsafePointer.value(Deno.UnsafePointer.of(cells)), sent.buffer], [sent.buffer]);
    \`;
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
    let received = await new Promise((r) => w.onmessage = (e) => r(e.data));
    w.onmessage = null; // its promise no longer holds the buffer
    const at = received[0];
    received = new BigUint64Array(received[1]);
    w.terminate();
    if (liveCells() !== base + 2n) fail("the busy and moved cells were not counted: " + liveCells());
    const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(at));
    // The disposal's deleter released the block (the header's state word, 32 bytes before the
    // cells: released in bit 32, the pins below), with the sleeper's pin held: not freed.
    // Before, a fixed 200 ms window watched for a free that might come later.
    await until(
      () => liveCells() !== base + 2n || (view.getBigUint64(-32) >> 32n & 1n) === 1n,
      "the terminated Worker's disposal to release the cells",
    );
    if (liveCells() !== base + 2n) fail("freed: " + liveCells());
    if ((view.getBigUint64(-32) & 0xffffffffn) !== 1n) fail("pins " + view.getBigUint64(-32));
    await until(() => view.getBigUint64(8) === 1n, "the sleeper's done");
    if (liveCells() !== base + 2n) fail("freed: " + liveCells());
    // The buffer moved out of the terminated Worker keeps its memory, freed once dropped.
    if (received[0] !== 41n || received[1] !== 42n) fail("received " + received);
    received = null;
    await collectUntil(() => liveCells() === base + 1n, () => "the moved cells were not freed: " + liveCells());
    await rt.shutdown("finish");
    console.log("ok");
  `,
  );
});

Deno.test("every pin of runtime().cells is a native pin, given back once: launched, spawned and pruned many ways, all are freed once dropped and done", async () => {
  // Each place that pins an array (a built-in's handle, pruned as the map doubles; the
  // free-standing list, once however often spawned; a native scope's set, moved to the list at
  // the scope's end, a second time there given back) takes one native pin and gives it back
  // once: a pin never given back kept the block for good, one given back twice is a miscount
  // kc_cells_pin refuses (this module throws).
  await assertGcScriptOk(
    `
    import { coroutineScope, nativeScope, resolveNative, runtime } from "./mod.ts";
    import { collectUntil, liveCells } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    const base = liveCells();
    const getpid = resolveNative("libc.so.6", "getpid");
    let shared = rt.cells(2);
    let spins = Array.from({ length: 150 }, () => rt.cells([10n, 0n]));
    // 150 handles: pruned at 64 and 128. An index, not a top-level for-of, whose last binding
    // the module's context keeps reachable.
    for (let i = 0; i < spins.length; i++) rt.spawn("spin", spins[i]);
    for (let i = 0; i < 3; i++) rt.spawn(getpid, shared); // the list: once
    await coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      ns.launch(getpid, shared); // its set, and again (once)
      ns.launch(getpid, shared);
      ns.launch("spin", spins[0]); // a built-in's handle, also launched
    });
    await rt.drain(); // nothing live: the list goes
    if (liveCells() !== base + 151n) throw new Error("counted " + liveCells());
    rt.spawn(getpid, shared); // pinned again after the drain let go
    await rt.shutdown("finish"); // every pin goes
    shared = null;
    spins = null;
    await collectUntil(() => liveCells() === base, () => "still held: " + (liveCells() - base));
    console.log("ok");
  `,
  );
});

Deno.test("a native scope's pin of runtime().cells is one native pin per array, however often launched while a child runs, and a shutdown gives back the pins of a scope never waited for", async () => {
  // pinScoped takes one native pin per array in a scope's set: a second launch of the same
  // array while the first child still runs (its set kept) must not take another, which nothing
  // gives back. unpinAll (a shutdown) gives back the pins of scopes not yet waited for or
  // destroyed: the scope's later destruction finds its pins made anew, empty. Either miss kept
  // the block for good.
  await withWaitAdd(async (lib) => {
    await assertGcScriptOk(
      `
      import { NativeScope, resolveNative, runtime } from "./mod.ts";
      import { collectUntil, liveCells, until } from "./tests/support.ts";
      const waitAdd = resolveNative("${lib}", "wait_add");
      const rt = runtime({ workers: 3 });
      const base = liveCells();
      const ns = NativeScope.create();
      let cells = rt.cells(3);
      ns.launch(waitAdd, cells);
      await until(() => cells[2] === 1n, "the first child to run");
      ns.launch(waitAdd, cells); // the first still runs: the scope's set keeps the array
      cells[0] = 1n;
      await until(() => cells[1] === 2n, "both children to finish");
      await rt.shutdown("finish"); // the scope never waited for: its pins go here
      cells = null;
      await collectUntil(() => liveCells() === base, () => "still held: " + (liveCells() - base));
      console.log("ok");
    `,
    );
  });
});

Deno.test("a built-in's pin of runtime().cells under a handle that comes back (its slot's generation wrapped) replaces the stale one's and gives its native pin back", async () => {
  // pinCells' `had` branch: a handle repeats only after its slot's 511 reuses, each behind
  // 1024 other frees of its kind (zig-src/handle.zig), and only while no prune since dropped the
  // finished one's entry. Brought about for real: raw spawns (kc_spawn, no pin) of a 0 ms
  // sleeper, ended a batch at a time, turn the table's free slots over (FIFO) until the stale
  // handle's slot is one generation short of it (~1M spawns, a few seconds); the slot comes back
  // one turn (its period, measured) later, to a Runtime.spawn. Without the give-back the replaced
  // array kept a native pin that no place held, and its block was never freed.
  await assertGcScriptOk(
    `
    import { library, runtime } from "./mod.ts";
    import { handleOut } from "./src/runtime.ts";
    import { collectUntil, liveCells, until } from "./tests/support.ts";
    const rt = runtime({ workers: 1 }); // one worker: the sleepers end, and free, in spawn order
    const base = liveCells();
    let first = rt.cells([1n, 0n]);
    rt.spawn("sleeper", first);
    const h = handleOut[0];
    const sym = library().symbols("test");
    await until(() => sym.kc_coro_state(h) < 0, "the sleeper's handle to go stale");
    // A handle is [kind:3][generation:9][index:20]; generations skip 0.
    const index = (v) => v & 0xfffff, gen = (v) => (v >>> 20) & 0x1ff;
    const short = gen(h) === 1 ? 511 : gen(h) - 1;
    // The slot's next reuse, one turn on, is the real spawn's: raw spawns up to a few before it.
    // What the raw sleepers read and write: the JS heap's, not a runtime().cells block (counted).
    const scratch = new BigUint64Array(2);
    const ended = (last) => until(() => sym.kc_coro_state(last) < 0, "the raw spawns to end");
    const bringRound = async () => {
      const fn = sym.kc_builtin_entry(4), out = new Uint32Array(1); // KC_BUILTIN_SLEEPER
      let step = 0, last = -1, period = 0, at = -1;
      const spawnRaw = async () => {
        if (sym.kc_spawn(fn, Deno.UnsafePointer.of(scratch), 0, out) !== 0) throw new Error("raw spawn " + step);
        step++;
        // At most 1024 live, so each spawn reuses a slot. Not rt.drain(): one that finds no
        // coroutine left lets go of every pin, the stale handle's entry too.
        if ((step & 1023) === 0) await ended(out[0]);
      };
      while (at < 0 && step < 1 << 21) {
        await spawnRaw();
        if (index(out[0]) !== index(h)) continue;
        if (last >= 0) period = step - last;
        last = step;
        if (gen(out[0]) === short) at = step;
      }
      if (at < 0) throw new Error("the slot not brought round in " + step + " spawns");
      while (step < at + period - 8) await spawnRaw();
      await ended(out[0]); // the slot freed, with every one before it
      return period;
    };
    const period = await bringRound();
    let second = rt.cells(2);
    handleOut[0] = 0; // h still, from the first spawn
    for (let i = 0; i < 16 && handleOut[0] !== h; i++) rt.spawn("sleeper", second);
    if (handleOut[0] !== h) throw new Error("no spawn got the handle back, period " + period);
    first = null;
    await collectUntil(() => liveCells() === base + 1n, () => "the replaced cells were kept: " + (liveCells() - base));
    await rt.shutdown("finish"); // the second's pins go
    second = null;
    await collectUntil(() => liveCells() === base, () => "still held: " + (liveCells() - base));
    console.log(scratch[0] === 0n ? "ok" : "scratch");
  `,
  );
});

Deno.test("a native scope destroyed while its NativeFunction children run moves its pins of runtime().cells to the free-standing list, giving back the second native pin where the list holds the array already", async () => {
  // unpinScope's move: a scope disposed after closeLibrary() (another host keeps the scheduler)
  // is destroyed without waiting, its children still running; its set goes to the free-standing
  // list, one array with its native pin, the other (which a Runtime.spawn put in the list
  // already) giving its second pin back. Each place holds one native pin: without the give-back
  // the block kept a pin nothing held, and without the move the other's pin was held by no
  // place; either block was never freed.
  await withWaitAdd(async (lib) => {
    await assertGcScriptOk(
      `
      import { closeLibrary, NativeScope, openLibrary, resolveNative, runtime } from "./mod.ts";
      import { collectUntil, liveCells, until } from "./tests/support.ts";
      const other = openLibrary(); // another host, as a Worker's copy would be
      const waitAdd = resolveNative("${lib}", "wait_add");
      const rt = runtime({ workers: 3 });
      const base = liveCells();
      let cells = rt.cells(3), own = rt.cells(3);
      rt.spawn(waitAdd, cells); // the free-standing list's pin
      const ns = NativeScope.create();
      ns.launch(waitAdd, cells); // the scope's set's pins
      ns.launch(waitAdd, own);
      await until(() => cells[2] === 2n && own[2] === 1n, "the children to run");
      closeLibrary();
      await ns[Symbol.asyncDispose](); // destroyed at once: its children still run
      cells[0] = 1n;
      own[0] = 1n;
      await until(() => cells[1] === 2n && own[1] === 1n, "the children to finish");
      await runtime().drain(); // nothing live: the list's pins go, one per array
      cells = null;
      own = null;
      await collectUntil(() => liveCells() === base, () => "still held: " + (liveCells() - base));
      other.symbols("test").kc_sched_shutdown(0);
      other.close();
      console.log("ok");
    `,
    );
  });
});

Deno.test("without the Node-API companion runtime().cells are as before ABI 25: a SharedArrayBuffer (with the exit guard) in the main isolate, never-freed native memory in a Worker", async () => {
  // In a process of its own, with a copy of the library in a folder without the companion.
  const res = await evalScript(
    `
    const dir = Deno.makeTempDirSync();
    try {
      Deno.copyFileSync("zig-out/lib/libkcoro.so", dir + "/libkcoro.so");
      Deno.env.set("KCORO_LIB", dir + "/libkcoro.so");
      const { library, runtime } = await import("./mod.ts");
      const { _exitGuarded, _isNativeCells } = await import("./src/runtime.ts");
      const { cellsBuffersProblem } = await import("./ffi/napi.ts");
      const { liveCells } = await import("./tests/support.ts");
      const fail = (m) => { throw new Error(m); };
      if (!library().path.startsWith(dir)) fail("opened " + library().path);
      const rt = runtime({ workers: 1 });
      const base = liveCells();
      const cells = rt.cells([1n, 0n]);
      if (!(cells.buffer instanceof SharedArrayBuffer) || _isNativeCells(cells)) fail("not a SharedArrayBuffer");
      if (liveCells() !== base) fail("a block was taken");
      rt.spawn("sleeper", cells);
      if (!_exitGuarded(library())) fail("no exit guard");
      await rt.drain();
      if (cells[1] !== 1n) fail("sleeper " + cells[1]);
      const src = \`
        const { runtime } = await import("\${new URL("./mod.ts", "file://" + Deno.cwd() + "/").href}");
        const { _isNativeCells } = await import("\${new URL("./src/runtime.ts", "file://" + Deno.cwd() + "/").href}");
        const c = runtime().cells(2);
        postMessage([_isNativeCells(c), c.buffer instanceof SharedArrayBuffer]);
      \`;
      const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
      const got = await new Promise((r) => w.onmessage = (e) => r(e.data));
      w.terminate();
      if (got[0] !== true || got[1] !== false) fail("worker " + got);
      if (liveCells() !== base + 1n) fail("the Worker's block: " + liveCells());
      await rt.shutdown("finish");
      console.log(cellsBuffersProblem());
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  `,
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(
    res.stdout,
    /^Cannot make cells buffers: cannot load the Node-API companion .*kcoro_napi\.node/,
  );
});

Deno.test("an exit the guard stops the scheduler for does not wait for good for a C coroutine that never yields", async () => {
  // The guard (a caller's own SharedArrayBuffer cells) shuts the scheduler down at unload and
  // joins its workers; a coroutine that never yields kept its worker, and that exit waited for
  // good (killed here at the 20 s bound). The join is bounded now (kc_sched_shutdown_timed, 2
  // s): the exit goes on with the worker still spinning. The spin writes nothing into its cells,
  // which the isolate's disposal then frees (runtime().cells would not be).
  const dir = await Deno.makeTempDir();
  try {
    await buildPlugin(
      dir,
      `void spin_forever(void *arg) { (void)arg; for (volatile unsigned long i = 0;; i++) {} }`,
    );
    // The third: an uncaught error while a finishing shutdown() of its own is in flight (on
    // its helper thread, draining): the guard's cancel ends that drain, and that shutdown
    // then joins the spinning worker holding the scheduler's lock, which the guard's shutdown
    // waited on for good (its bound covered only its own drain and join).
    const inFlight = `
        rt.shutdown("finish");
        const info = new BigUint64Array(7);
        const sym = symbolsToReleaseOf(library());
        // Until that shutdown began (the scheduler reads not running from then on).
        while (sym.kc_sched_info(info, 7), info[3] !== 0n) {
          await new Promise((r) => setTimeout(r, 0));
        }
        setTimeout(() => { throw new Error("kcoro-uncaught"); }, 0);`;
    for (
      const end of ["Deno.exitCode = 4;", `throw new Error("kcoro-uncaught");`, inFlight]
    ) {
      const t0 = performance.now();
      const res = await runFromStdin(
        `
        import { library, resolveNative, runtime } from "${root}mod.ts";
        import { symbolsToReleaseOf } from "${root}ffi/load.ts";
        const rt = runtime({ workers: 2 });
        const own = new BigUint64Array(new SharedArrayBuffer(16));
        rt.spawn(resolveNative("${dir}/libplugin.so", "spin_forever"), own);
        console.log("end");
        ${end}
      `,
        { NO_COLOR: "1" },
      );
      const stderr = new TextDecoder().decode(res.stderr);
      assert.equal(
        res.signal,
        null,
        `${end}: ended by ${res.signal} after ${performance.now() - t0} ms`,
      );
      assert.equal(res.code, end.startsWith("Deno.exitCode") ? 4 : 1, `${end}: ${stderr}`);
      assert.ok(end.startsWith("Deno.exitCode") || stderr.includes("kcoro-uncaught"), stderr);
      assert.equal(new TextDecoder().decode(res.stdout), "end\n", end);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("closeLibrary() does not wait for good for a C coroutine that never yields", async () => {
  // The last host's close shuts the scheduler down (cancel) and joins its workers; a coroutine
  // that never yields kept its worker, and closeLibrary() waited for good (killed here at the
  // 20 s bound), also after the exit guard had given up on that join. Bounded now
  // (kc_sched_shutdown_timed, 2 s): the close goes on with the worker still spinning, and the
  // process ends. The spin marks its first cell, once, so that the close meets it running.
  const dir = await Deno.makeTempDir();
  try {
    await buildPlugin(
      dir,
      `void spin_forever(void *arg) {
        __atomic_store_n((unsigned long long *)arg, 1ULL, __ATOMIC_RELEASE);
        for (volatile unsigned long i = 0;; i++) {}
      }`,
    );
    const t0 = performance.now();
    const res = await runFromStdin(`
      import { closeLibrary, library, resolveNative, runtime } from "${root}mod.ts";
      const rt = runtime({ workers: 1 });
      const cells = rt.cells([0n, 0n]);
      rt.spawn(resolveNative("${dir}/libplugin.so", "spin_forever"), cells);
      // Bounded well inside the child's 20 s: a spin that never ran fails with its own message,
      // not as a kill at the bound.
      const deadline = performance.now() + 10_000;
      while (Atomics.load(cells, 0) === 0n) {
        if (performance.now() > deadline) {
          throw new Error("spin_forever never marked its cell within 10 s: it did not run");
        }
        await new Promise((r) => setTimeout(r, 1));
      }
      const lib = library();
      closeLibrary();
      console.log("closed", lib.isOpen);
    `);
    assert.equal(res.signal, null, `ended by ${res.signal} after ${performance.now() - t0} ms`);
    assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
    assert.equal(new TextDecoder().decode(res.stdout), "closed false\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an uncaught error that a listener prevents, or a caller's own error event, leaves the scheduler running", async () => {
  // The stop at an uncaught error must not fire when the process lives on: a listener added
  // after the spawns prevents the error, and a dispatchEvent of the caller's own runs; the
  // coroutine spawned afterwards must still finish.
  const script = `
    import { Channel, codecs, runtime } from "${root}mod.ts";
    const rt = runtime({ workers: 2 });
    const ch = new Channel(1, { codec: codecs.u64, overflow: "drop-oldest" });
    rt.spawn("chanSender", rt.cells([BigInt(ch.handle), 0n, 1n << 40n, 0n, 0n]));
    addEventListener("error", (e) => e.preventDefault());
    addEventListener("unhandledrejection", (e) => e.preventDefault());
    dispatchEvent(new ErrorEvent("error", { error: new Error("own") }));
    setTimeout(() => { throw new Error("prevented"); }, 0);
    Promise.reject(new Error("prevented too"));
    setTimeout(async () => {
      const out = new Channel(1, { codec: codecs.u64 });
      rt.spawn("chanSender", rt.cells([BigInt(out.handle), 7n, 1n, 0n, 0n]));
      console.log("received", await out.receive());
      await rt.shutdown({ cancel: true });
      Deno.exit(0);
    }, 10);
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-read", "--allow-env", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(20_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(script));
  await w.close();
  const res = await child.output();
  const stderr = new TextDecoder().decode(res.stderr);
  assert.equal(res.signal, null, stderr);
  assert.equal(res.code, 0, stderr);
  assert.equal(new TextDecoder().decode(res.stdout), "received 7n\n", stderr);
});

Deno.test("deno test: a test file ending with coroutines running fails as it should, and the next file runs", async () => {
  // The first file ends with chanSenders writing into its cells and has a failing test. Its
  // module's unload stops the scheduler (a cancelling shutdown) before Deno disposes the
  // isolate; before, it called Deno.exit(0), which `deno test` turned into a note ("called
  // `Deno.exit(0)` from outside any test") and an isolate terminated mid-teardown.
  const dir = await Deno.makeTempDir({ prefix: "kcoro-unload-" });
  try {
    await Deno.writeTextFile(
      `${dir}/a_test.ts`,
      `import { Channel, codecs, runtime } from "${root}mod.ts";
      const rt = runtime({ workers: 2 });
      for (let i = 0; i < 64; i++) {
        const ch = new Channel(1, { codec: codecs.u64, overflow: "drop-oldest" });
        rt.spawn("chanSender", rt.cells([BigInt(ch.handle), 0n, 1n << 40n, 0n, 0n]));
      }
      Deno.test("a fails", () => { throw new Error("a failed"); });
      `,
    );
    await Deno.writeTextFile(
      `${dir}/b_test.ts`,
      `Deno.test("b passes", () => {});\n`,
    );
    const res = await new Deno.Command(Deno.execPath(), {
      args: [
        "test",
        "--no-check",
        "--allow-ffi",
        "--allow-read",
        "--allow-env",
        `${dir}/a_test.ts`,
        `${dir}/b_test.ts`,
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const out = new TextDecoder().decode(res.stdout) + new TextDecoder().decode(res.stderr);
    assert.equal(res.signal, null, out);
    assert.equal(res.code, 1, out);
    assert.ok(!out.includes("Deno.exit"), out);
    assert.match(out, /a fails \.\.\. FAILED/);
    assert.match(out, /b passes \.\.\. ok/);
    assert.match(out, /1 passed \| 1 failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runtime: a pending drain() or shutdown() keeps the process alive until it resolves", async () => {
  // Neither is awaited at the top level: only the pending native call holds the event loop.
  for (const call of ["drain()", 'shutdown("finish")']) {
    const res = await evalScript(`
      import { runtime } from "./mod.ts";
      const rt = runtime();
      const cells = rt.cells([200n, 0n]); // a 200 ms sleeper
      rt.spawn("sleeper", cells);
      rt.${call}.then(() => console.log("resolved", cells[1]));
    `);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), "resolved 1n", call);
  }
});

Deno.test("runtime: a drain of an idle scheduler that closeLibrary() meets resolves, also when the close shuts the scheduler down", async () => {
  // This isolate is the last host: the close shuts the scheduler down. Before, the drain
  // resolved or rejected (LibraryClosedError) by whether its slice, on a helper thread, ran
  // before the shutdown: about one in ten here. Now by what was left to run at the close.
  const res = await evalScript(`
    import { closeLibrary, runtime } from "./mod.ts";
    const got = {};
    for (let i = 0; i < 200; i++) {
      const rt = runtime({ workers: 1 });
      const draining = rt.drain().then(() => "resolved", (e) => e.name);
      if (i % 2 === 1) await new Promise((r) => setTimeout(r, 0)); // its slice under way
      closeLibrary();
      const d = await draining;
      got[d] = (got[d] ?? 0) + 1;
    }
    if (got.resolved !== 200) throw new Error("the drains: " + JSON.stringify(got));
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("runtime: a drain that ran dry as the library closed calls nothing of the closed library", async () => {
  // Another host keeps the scheduler (the close does not shut it down): the idle scheduler's
  // slice answers 0 on a helper thread while this turn closes the library. Before, the drain
  // then read kc_sched_info through the closed library.
  const res = await evalScript(`
    import { closeLibrary, library, openLibrary, runtime } from "./mod.ts";
    import { symbolsToReleaseOf } from "./ffi/load.ts";
    const other = openLibrary();
    for (let i = 0; i < 5; i++) {
      const rt = runtime({ workers: 1 });
      const sym = symbolsToReleaseOf(library());
      const info = sym.kc_sched_info;
      let closed = false, after = 0;
      sym.kc_sched_info = (...a) => (closed && after++, info(...a));
      const draining = rt.drain().then(() => "resolved", (e) => e.name);
      closeLibrary();
      closed = true;
      const d = await draining;
      if (d !== "resolved") throw new Error("the drain: " + d);
      if (after !== 0) throw new Error("kc_sched_info called " + after + " times after the close");
    }
    other.symbols("test").kc_sched_shutdown(0);
    other.close();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("using a Runtime (sync) is refused as it is declared, by name, telling to use await using", async () => {
  const made = runtime({ workers: 1 });
  let ran = false;
  assert.throws(
    () => {
      // @ts-expect-error: a Runtime is no Disposable (TypeScript refuses it too)
      using rt = made;
      ran = true;
      rt.spawn("sleeper", rt.cells([1n, 0n]));
    },
    {
      name: "TypeError",
      message: "Cannot dispose runtime synchronously: disposing a runtime shuts the scheduler " +
        "down, which waits for its coroutines, so declare it with `await using`, not `using`, " +
        "received a Runtime",
    },
  );
  assert.equal(ran, false); // refused before its block ran
  assert.equal(made.isRunning, true); // the refusal shut nothing down
  // Its look-alikes are named as such, as in every other refusal of Runtime's.
  assert.throws(
    () => Object.getOwnPropertyDescriptor(Runtime.prototype, Symbol.dispose)!.get!.call({}),
    {
      name: "TypeError",
      message: /^Cannot dispose runtime synchronously: .* received \[object Object\]$/,
    },
  );
  // `await using` never reads it: disposal shuts the scheduler down as before.
  {
    await using rt = made;
    const naps = rt.cells([1n, 0n]);
    rt.spawn("sleeper", naps);
  }
  assert.equal(made.isRunning, false);
});

Deno.test("`await using` a Runtime shuts it down by Runtime's own shutdown, not a `shutdown` a caller redefined on its prototype", async () => {
  const desc = Object.getOwnPropertyDescriptor(Runtime.prototype, "shutdown")!;
  const made = runtime();
  const called: unknown[] = [];
  try {
    Object.defineProperty(Runtime.prototype, "shutdown", {
      ...desc,
      value: (...args: unknown[]) => {
        called.push(args);
        return Promise.resolve({ abandoned: 0 });
      },
    });
    await made[Symbol.asyncDispose]();
  } finally {
    Object.defineProperty(Runtime.prototype, "shutdown", desc);
  }
  assert.deepEqual(called, []);
  assert.equal(made.isRunning, false);
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("every public member of Runtime and NativeCoroutine called on what is none of it (an object made from its prototype, a Proxy of one, a primitive) fails with a named TypeError, the async ones by a rejected promise", async () => {
  // Before, each threw (or rejected with) the engine's "Cannot read private member #lib" or
  // "Receiver must be an instance of class NativeCoroutine".
  const rt = runtime();
  using co = NativeCoroutine.create("fib", { arg: 3 });
  const stateBefore = co.state;
  type Call = [string, "throws" | "rejects", (self: unknown) => unknown];
  const member = (cls: { prototype: object }, k: PropertyKey, ...args: unknown[]) => {
    const d = Object.getOwnPropertyDescriptor(cls.prototype, k)!;
    return (self: unknown) => d.get ? d.get.call(self) : d.value.call(self, ...args);
  };
  const tables: [string, { prototype: object }, object, Call[]][] = [
    ["Runtime", Runtime, rt, [
      ["read runtime info", "throws", member(Runtime, "isRunning")],
      ["allocate cells", "throws", member(Runtime, "cells", 2)],
      ["spawn coroutine", "throws", member(Runtime, "spawn", "sleeper")],
      ["read runtime stats", "throws", member(Runtime, "stats")],
      ["drain runtime", "rejects", member(Runtime, "drain")],
      ["shut down runtime", "rejects", member(Runtime, "shutdown")],
      ["shut down runtime", "rejects", member(Runtime, Symbol.asyncDispose)],
    ]],
    ["NativeCoroutine", NativeCoroutine, co, [
      ["read coroutine handle", "throws", member(NativeCoroutine, "handle")],
      ["resume coroutine", "throws", member(NativeCoroutine, "resume")],
      ["unpark coroutine", "throws", member(NativeCoroutine, "unpark")],
      ["read coroutine state", "throws", member(NativeCoroutine, "state")],
      ["read coroutine value", "throws", member(NativeCoroutine, "value")],
      ["resume coroutine", "throws", member(NativeCoroutine, "values")],
      ["read coroutine state", "throws", member(NativeCoroutine, "destroyed")],
      ["destroy coroutine", "throws", member(NativeCoroutine, "destroy")],
      ["destroy coroutine", "throws", member(NativeCoroutine, Symbol.dispose)],
    ]],
  ];
  for (const [name, cls, real, calls] of tables) {
    const fakes: [unknown, string][] = [
      [Object.create(cls.prototype), `a ${name} look-alike`],
      [new Proxy(real, {}), `a ${name} look-alike`],
      [{}, "[object Object]"],
      [undefined, "undefined"],
    ];
    for (const [self, described] of fakes) {
      for (const [op, how, call] of calls) {
        const message = `Cannot ${op}: this is not a ${name}, received ${described}`;
        const check = (e: unknown) => {
          assert.ok(e instanceof TypeError, `${name} ${op} on ${described}: ${e}`);
          assert.equal(e.message, message);
          return true;
        };
        if (how === "throws") assert.throws(() => call(self), check);
        else await assert.rejects(call(self) as Promise<unknown>, check);
      }
    }
  }
  // Nothing reached the real ones: the scheduler runs, the coroutine is where it was.
  assert.equal(rt.isRunning, true);
  assert.equal(co.destroyed, false);
  assert.equal(co.state, stateBefore); // never resumed through a Proxy
});

Deno.test("runtime: drain resolves with how many coroutines are parked: a producer parked on a full channel is not finished", async () => {
  // The trap README warned of: drain() resolved (with nothing) while a chanSender waited on a
  // full channel, as if it had finished. It now says how many it left parked.
  // Its own scheduler: the file's shared one may hold coroutines an earlier test left parked
  // (which `parked` counts too, whoever spawned them).
  await shutdownScheduler();
  const rt = runtime({ workers: 2 });
  assert.equal(rt.stats().live, 0);
  using ch = new Channel<bigint>(2, { codec: codecs.u64 });
  const sender = rt.cells([BigInt(ch.handle), 0n, 10n, 0n, 0n]);
  rt.spawn("chanSender", sender);
  const first = await rt.drain();
  assert.deepEqual(first, { parked: 1 });
  assert.equal(sender[4], 0n, "the sender has not finished");
  assert.equal(sender[3], 2n, "it filled the buffer and parked on the third send");
  for (let i = 0n; i < 10n; i++) assert.equal(await ch.receive(), i);
  assert.deepEqual(await rt.drain(), { parked: 0 }); // it ran to its end
  assert.equal(sender[4], 1n);
  // Settled by a finishing shutdown: it counts what that finish left parked, none here.
  const during = rt.drain();
  assert.deepEqual(await rt.shutdown("finish"), { abandoned: 0 }); // none was left parked
  assert.deepEqual(await during, { parked: 0 });
});

/**
 * A runtime of `workers` whose "chanSender" filled a 2-slot channel (`full`) and, once `parked`
 * is awaited, parked on its third send (`sender` its cells); disposing it disposes the channel.
 * The set-up of the drain tests below.
 */
async function parkedSender(workers: number, parked: boolean) {
  const rt = runtime({ workers });
  const full = new Channel<bigint>(2, { codec: codecs.u64 });
  const sender = rt.cells([BigInt(full.handle), 0n, 10n, 0n, 0n]);
  rt.spawn("chanSender", sender); // fills the buffer, parks on its third send
  if (parked) await until(() => sender[3] === 2n && rt.stats().busy === 0, "the sender parked");
  return { rt, full, sender, [Symbol.dispose]: () => full[Symbol.dispose]() };
}

/**
 * Holds each slice of a drain (`kc_sched_drain_for`, faked on `sym`) until the test answers it
 * with a status (`slices[i](rc)`): where the drain is, and how many slices it asked for, is then
 * the test's to know, not a matter of timing. Disposing puts the real function back.
 */
function holdSlices(
  sym: Record<string, unknown>,
): { slices: ((rc: number) => void)[] } & Disposable {
  const real = sym.kc_sched_drain_for;
  const slices: ((rc: number) => void)[] = [];
  sym.kc_sched_drain_for = () => new Promise<number>((r) => slices.push(r));
  return { slices, [Symbol.dispose]: () => sym.kc_sched_drain_for = real };
}

/**
 * Starts `rt.drain(options)` with its first slice held ({@linkcode holdSlices}), the real
 * `kc_sched_drain_for` back for any later one: the test answers the held slice with
 * `release(rc)` once what the drain is to meet has happened.
 */
async function drainAtHeldSlice(
  sym: Record<string, unknown>,
  rt: Runtime,
  options?: { signal?: AbortSignal },
): Promise<{ during: Promise<unknown>; release: (rc: number) => void }> {
  using held = holdSlices(sym);
  const during = rt.drain(options);
  await until(() => held.slices.length === 1, "the drain's slice called");
  return { during, release: held.slices[0] };
}

/**
 * Fakes `kc_sched_info` on `sym` to read the scheduler as not running, the generation kept
 * (zeros in its first six counters), as after a C caller's `kc_sched_shutdown_timed` that gave
 * up with KC_EBUSY; `reads()` counts its calls. Disposing puts the real function back.
 */
function readNotRunning(sym: Record<string, unknown>): { reads: () => number } & Disposable {
  const real = sym.kc_sched_info as (out: BigUint64Array, n: number) => number;
  let reads = 0;
  sym.kc_sched_info = (out: BigUint64Array, n: number) => {
    const rc = real(out, n);
    out.fill(0n, 0, Math.min(n, 6));
    reads++;
    return rc;
  };
  return { reads: () => reads, [Symbol.dispose]: () => sym.kc_sched_info = real };
}

/**
 * The start of a child script (evalScript) for a drain test: parkedSender's set-up (`rt` of one
 * worker, `full`, `sender` parked on its third send) and `sym`, the symbols its fakes replace.
 * The script imports what else it uses itself.
 */
const PARKED_SENDER_SCRIPT = `
  import { Channel, codecs, library, runtime } from "./mod.ts";
  import { librarySymbols } from "./ffi/load.ts";
  import { until } from "./tests/support.ts";
  const rt = runtime({ workers: 1 });
  const full = new Channel(2, { codec: codecs.u64 });
  const sender = rt.cells([BigInt(full.handle), 0n, 10n, 0n, 0n]);
  rt.spawn("chanSender", sender);
  await until(() => sender[3] === 2n && rt.stats().busy === 0, "the sender parked");
  const sym = librarySymbols(library(), "test");
`;

Deno.test("runtime: a finishing shutdown resolves with how many coroutines it abandoned parked, a cancelling one with how many it abandoned", async () => {
  // A "finish" drains until nothing is runnable, running or sleeping, then stops: a producer
  // parked on a full channel that nothing receives from is abandoned, never run to its end.
  // Before, shutdown("finish") resolved with nothing, as if every coroutine had finished.
  await shutdownScheduler(); // its own scheduler: no coroutine an earlier test left counts
  using parked = await parkedSender(2, false);
  const { rt, sender } = parked;
  const naps = rt.cells([5n, 0n]);
  for (let i = 0; i < 3; i++) rt.spawn("sleeper", naps); // run to their end by the finish
  assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });
  assert.equal(naps[1], 3n, "the sleepers finished");
  assert.equal(sender[3], 2n, "the sender never sent more than the buffer took");
  // A second call (the scheduler stopped already) says the same of this Runtime's shutdown.
  assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });

  // A finish with nothing left parked abandons none.
  const rt2 = runtime({ workers: 2 });
  const naps2 = rt2.cells([1n, 0n]);
  rt2.spawn("sleeper", naps2);
  assert.deepEqual(await rt2.shutdown("finish"), { abandoned: 0 });
  assert.equal(naps2[1], 1n);

  // A cancel counts the coroutines it abandoned: here a receiver parked on an empty channel.
  const rt3 = runtime({ workers: 1 });
  using empty = new Channel<bigint>("rendezvous", { codec: codecs.u64 });
  const got = rt3.cells([BigInt(empty.handle), 0n, 0n]);
  rt3.spawn("receiver", got);
  assert.deepEqual(await rt3.drain(), { parked: 1 });
  assert.deepEqual(await rt3.shutdown("cancel"), { abandoned: 1 });
  // Once a later scheduler runs, this Runtime's shutdown still answers for its own.
  const rt4 = runtime({ workers: 1 });
  assert.deepEqual(await rt3.shutdown("cancel"), { abandoned: 1 });
  assert.deepEqual(await rt4.shutdown("finish"), { abandoned: 0 });
});

Deno.test("runtime: shutdown() after the library's close resolves with what the shutdown that stopped the scheduler abandoned, not 0", async () => {
  // Two ways: the close was the last host's (its own cancelling shutdown abandoned the sleeper),
  // or another host kept the scheduler running and shut it down later. Before, a Runtime whose
  // library was closed resolved { abandoned: 0 } either way: the library stays loaded, and its
  // record of the generation's end with it.
  const res = await evalScript(`
    import { closeLibrary, openLibrary, runtime } from "./mod.ts";
    import { generationOf } from "./src/runtime.ts";
    const got = {};
    {
      const rt = runtime({ workers: 1 });
      rt.spawn("sleeper", rt.cells([60_000n, 0n])); // a minute: abandoned by the close
      closeLibrary(); // the last host: a cancelling shutdown
      got.lastHost = await rt.shutdown();
    }
    {
      const other = openLibrary(); // another host, as a Worker's copy would be
      const rt = runtime({ workers: 1 });
      rt.spawn("sleeper", rt.cells([60_000n, 0n]));
      rt.spawn("sleeper", rt.cells([60_000n, 0n]));
      closeLibrary(); // the scheduler runs on for the other host
      got.running = await rt.shutdown(); // stops nothing: none abandoned yet
      got.stillRunning = runtime() !== rt && generationOf(runtime()) === generationOf(rt);
      got.byOther = await runtime().shutdown(); // the reopened library's Runtime of it
      got.after = await rt.shutdown();
      other.close();
    }
    console.log(JSON.stringify(got));
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), {
    lastHost: { abandoned: 1 },
    running: { abandoned: 0 },
    stillRunning: true,
    byOther: { abandoned: 2 },
    after: { abandoned: 2 },
  });
});

Deno.test("runtime: a drain settled by its Runtime's finishing shutdown resolves with the coroutines that finish left parked", async () => {
  // Before, { parked: 0 } whenever a finish settled the drain: a producer parked on a full
  // channel, which the finish abandoned, reported as if every coroutine had run to its end.
  await shutdownScheduler(); // its own scheduler: no coroutine an earlier test left counts
  using parked = await parkedSender(2, false);
  const { rt } = parked;
  const naps = rt.cells([5n, 0n]);
  for (let i = 0; i < 3; i++) rt.spawn("sleeper", naps); // run to their end by the finish
  const finishing = rt.shutdown("finish");
  const during = rt.drain(); // meets the finish in progress: settled by it
  assert.deepEqual(await finishing, { abandoned: 1 });
  assert.deepEqual(await during, { parked: 1 });
  assert.equal(naps[1], 3n, "the sleepers finished");
});

Deno.test("runtime: a drain already waiting when a finishing shutdown comes (its Runtime's, or C code's) resolves with the coroutines that finish left parked", async () => {
  // The drain's native slice held back (faked) until the finish has ended, so the drain meets
  // it while waiting (DRAIN_SETTLED), not as a call made during it. Before, that path resolved
  // { parked: 0 } though the finish abandoned a producer parked on a full channel.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  for (const by of ["its Runtime", "C code"]) {
    await shutdownScheduler(); // its own scheduler: no coroutine an earlier one left counts
    using parked = await parkedSender(1, true);
    const { rt } = parked;
    const { during, release } = await drainAtHeldSlice(sym, rt);
    if (by === "its Runtime") assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });
    else assert.equal((sym.kc_sched_shutdown as (mode: number) => number)(1), 0); // finish
    release(Status.ESHUTDOWN);
    assert.deepEqual(await during, { parked: 1 }, by);
  }
});

Deno.test("runtime: a drain whose slice ran dry just before its Runtime's finish stopped the scheduler resolves with what that finish left parked", async () => {
  // The window between the slice's answer (0: ran dry) with its check that the scheduler still
  // ran (kc_sched_ended: KC_EBUSY) and the read of what is live: a finish that stops the
  // scheduler in between. Held open by fakes: the slice answers once the finish has ended, and
  // the check sees it still running. Before, { parked: 0 } (no scheduler running at the read)
  // though the finish abandoned a producer parked on a full channel.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realEnded = sym.kc_sched_ended;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  const { during, release } = await drainAtHeldSlice(sym, rt);
  try {
    assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });
    let checks = 0;
    sym.kc_sched_ended = (g: bigint) =>
      checks++ === 0 ? Status.EBUSY : (realEnded as (g: bigint) => number)(g);
    release(0);
    assert.deepEqual(await during, { parked: 1 });
    assert.equal(checks >= 1, true, "the slice's check");
  } finally {
    sym.kc_sched_ended = realEnded;
  }
});

Deno.test("runtime: a drain whose slice ran dry before its Runtime's finish, still under way at the drain's read, resolves with what that finish left parked", async () => {
  // The window after the slice's answer (0: ran dry) and its check (kc_sched_ended: KC_EBUSY),
  // with this Runtime's finish begun but not ended at the read of what is live: no scheduler
  // reads as running (a shutdown in progress), and kc_sched_ended still says KC_EBUSY (the
  // finish drains or joins). Held open by fakes until the finish settles. Before, { parked: 0 }
  // though the finish then abandoned a producer parked on a full channel.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const [realEnded, realInfo] = [sym.kc_sched_ended, sym.kc_sched_info];
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  const { during, release } = await drainAtHeldSlice(sym, rt);
  try {
    let ended = false;
    const stop = rt.shutdown("finish").finally(() => ended = true);
    sym.kc_sched_ended = (g: bigint) =>
      ended ? (realEnded as (g: bigint) => number)(g) : Status.EBUSY;
    sym.kc_sched_info = (out: BigUint64Array, n: number) => {
      const rc = (realInfo as (out: BigUint64Array, n: number) => number)(out, n);
      if (!ended) out.fill(0n, 0, Math.min(n, 6)); // shutting down: none reads as running
      return rc;
    };
    release(0);
    assert.deepEqual(await during, { parked: 1 });
    assert.deepEqual(await stop, { abandoned: 1 });
  } finally {
    sym.kc_sched_ended = realEnded;
    sym.kc_sched_info = realInfo;
  }
});

Deno.test("runtime: a drain whose slice ran dry just before a cancel (its Runtime's, or C code's) stopped the scheduler resolves with what that cancel abandoned parked", async () => {
  // The window between the slice's answer (0: ran dry) with its check that the scheduler still
  // ran (kc_sched_ended: KC_EBUSY, faked once) and the read of what is live: a cancel that stops
  // the scheduler in between. Before, { parked: 0 } though the cancel abandoned a producer
  // parked on a full channel when the drain ran dry.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realEnded = sym.kc_sched_ended;
  for (const by of ["its Runtime", "C code"]) {
    await shutdownScheduler();
    using parked = await parkedSender(1, true);
    const { rt } = parked;
    const { during, release } = await drainAtHeldSlice(sym, rt);
    try {
      if (by === "its Runtime") assert.deepEqual(await rt.shutdown("cancel"), { abandoned: 1 });
      else assert.equal((sym.kc_sched_shutdown as (mode: number) => number)(0), 0); // cancel
      let checks = 0;
      sym.kc_sched_ended = (g: bigint) =>
        checks++ === 0 ? Status.EBUSY : (realEnded as (g: bigint) => number)(g);
      release(0);
      assert.deepEqual(await during, { parked: 1 }, by);
      assert.equal(checks >= 1, true, "the slice's check");
    } finally {
      sym.kc_sched_ended = realEnded;
    }
  }
});

Deno.test("runtime: a drain that ran dry while a C caller's timed shutdown gave up (KC_EBUSY) goes on draining, and resolves with the parked count once it can read it", async () => {
  // kc_sched_shutdown_timed's KC_EBUSY stops nothing: the scheduler runs on, but kc_sched_info
  // reads it not running (faked here: zeros but the generation) and kc_sched_ended still says
  // KC_EBUSY until the next shutdown. Before, the drain resolved { parked: 0 } at once though a
  // producer was parked on a full channel.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  let settled = false;
  let during: Promise<unknown>;
  {
    using info = readNotRunning(sym); // the timed shutdown's KC_EBUSY
    during = rt.drain().finally(() => settled = true);
    await until(() => info.reads() >= 5 || settled, "the drain's rounds");
    assert.equal(settled, false, "still draining");
  }
  // The next shutdown (C code's finish) goes on: the drain settles with what it left parked.
  assert.equal((sym.kc_sched_shutdown as (mode: number) => number)(1), 0);
  assert.deepEqual(await during, { parked: 1 });
});

Deno.test("runtime: a drain going on while its scheduler reads as not running pauses between its rounds, 1 ms doubling to 50 ms (it does not spin)", async () => {
  // kc_sched_info faked to read not running (a C caller's timed shutdown that gave up with
  // KC_EBUSY): each round's slice answers at once (ran dry), so without its pause the drain
  // would call into the library back to back. The pauses asked for are read from setTimeout,
  // stubbed once nothing else of the script's waits on a timer: no timing is measured.
  const res = await evalScript(`
    ${PARKED_SENDER_SCRIPT}
    const realInfo = sym.kc_sched_info;
    const realSetTimeout = globalThis.setTimeout;
    const pauses = [];
    globalThis.setTimeout = (f, ms, ...rest) => {
      // After the ninth pause the scheduler reads as running again: the next round ends it.
      if (pauses.push(ms) === 9) {
        sym.kc_sched_info = realInfo;
        globalThis.setTimeout = realSetTimeout;
      }
      return realSetTimeout(f, ms, ...rest);
    };
    let reads = 0;
    sym.kc_sched_info = (out, n) => {
      const rc = realInfo(out, n);
      out.fill(0n, 0, Math.min(n, 6));
      // A bound for a drain that does not pause (about 20 reads if it does): it ends then.
      if (++reads === 500) sym.kc_sched_info = realInfo;
      return rc;
    };
    const drained = rt.drain();
    console.log(JSON.stringify({ pauses, outcome: await drained }));
    await rt.shutdown();
  `);
  assert.equal(res.code, 0, res.stderr);
  // One pause after each round that read the scheduler as not running.
  assert.deepEqual(JSON.parse(res.stdout), {
    pauses: [1, 2, 4, 8, 16, 32, 50, 50, 50],
    outcome: { parked: 1 },
  });
});

Deno.test("runtime: a drain going on while its scheduler reads as not running is settled by its own Runtime's shutdown that comes during its rounds", async () => {
  // As above (kc_sched_info faked to read not running, as after a C caller's timed shutdown
  // that gave up with KC_EBUSY), but the shutdown that follows is this Runtime's, asked for while
  // the drain goes on in rounds (between them or in one): a finish settles it with what it left
  // parked (the producer on a full channel), a cancel makes it a ShutdownError (README).
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  for (const mode of ["finish", "cancel"] as const) {
    await shutdownScheduler();
    using parked = await parkedSender(1, true);
    const { rt } = parked;
    let settled = false;
    using info = readNotRunning(sym);
    const during = rt.drain().then((r) => r, (e) => e).finally(() => settled = true);
    await until(() => info.reads() >= 4 || settled, "the drain's rounds");
    assert.equal(settled, false, "still draining");
    assert.deepEqual(await rt.shutdown(mode), { abandoned: 1 }, mode);
    const outcome = await within(during, 5_000, `the drain after the ${mode}`);
    if (mode === "finish") assert.deepEqual(outcome, { parked: 1 });
    else assert.ok(outcome instanceof ShutdownError, String(outcome));
  }
});

Deno.test("runtime: a drain whose slice ran dry before its scheduler was replaced by a later one does not count the later one's coroutines", async () => {
  // The slice answers 0 and its check sees the scheduler still running (faked: KC_EBUSY once);
  // by the read of what is live, this Runtime's finish ended it (one producer parked) and a
  // later runtime() runs two of its own parked. Before, the drain counted the later
  // scheduler's ({ parked: 2 }): kc_sched_info's generation was not read.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realEnded = sym.kc_sched_ended;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  const { during, release } = await drainAtHeldSlice(sym, rt);
  try {
    assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });
    const later = runtime({ workers: 1 });
    using unbuffered = new Channel<bigint>(0, { codec: codecs.u64 });
    const a = later.cells([BigInt(unbuffered.handle), 0n, 1n, 0n, 0n]);
    const b = later.cells([BigInt(unbuffered.handle), 0n, 1n, 0n, 0n]);
    later.spawn("chanSender", a);
    later.spawn("chanSender", b);
    await until(
      () => later.stats().live === 2 && later.stats().busy === 0,
      "the later scheduler's senders parked",
    );
    let checks = 0;
    sym.kc_sched_ended = (g: bigint) =>
      checks++ === 0 ? Status.EBUSY : (realEnded as (g: bigint) => number)(g);
    release(0);
    assert.deepEqual(await during, { parked: 1 });
    assert.equal(checks >= 1, true, "the slice's check");
    await later.shutdown();
  } finally {
    sym.kc_sched_ended = realEnded;
  }
});

Deno.test("runtime: a drain settled by the library's close with nothing left to run resolves with the coroutines parked then, also after a finish elsewhere just before the close; after a cancel there it is a ShutdownError", async () => {
  // The drain's native slice held back (faked) until after the close, so the close's hook is
  // what settles it: nothing runnable, running or sleeping then, a producer parked on a full
  // channel. Before, { parked: 0 }, as if it had run to its end. A finish elsewhere (C code's)
  // done just before the close, its slice's answer not yet seen, settles it the same way (what
  // that finish left parked, and abandoned), as without the close its slice would have: before,
  // a LibraryClosedError, the hook reading a scheduler that no longer ran as one not run dry. A
  // cancel elsewhere just before the close abandoned what it waited on: a ShutdownError, as that
  // cancel settles a drain without the close (before, a LibraryClosedError).
  for (const before of ["", "finish", "cancel"]) {
    const res = await evalScript(`
      import { closeLibrary, LibraryClosedError, ShutdownError, Status } from "./mod.ts";
      ${PARKED_SENDER_SCRIPT}
      let release;
      const real = sym.kc_sched_drain_for;
      sym.kc_sched_drain_for = () => new Promise((r) => release = r);
      const during = rt.drain().then((r) => JSON.stringify(r), (e) =>
        e instanceof LibraryClosedError ? "LibraryClosedError"
        : e instanceof ShutdownError ? "ShutdownError" : String(e));
      await until(() => release !== undefined, "the drain's slice called");
      sym.kc_sched_drain_for = real;
      const mode = ${JSON.stringify(before)};
      if (mode !== "" && await sym.kc_sched_shutdown_async(mode === "finish" ? 1 : 0) !== 0) {
        throw new Error("the shutdown failed");
      }
      closeLibrary();
      release(Status.ETIME);
      console.log(await during);
    `);
    assert.equal(res.code, 0, `${before}: ${res.stderr}`);
    assert.equal(
      res.stdout.trim(),
      before === "cancel" ? "ShutdownError" : JSON.stringify({ parked: 1 }),
      before,
    );
  }
});

Deno.test("runtime: a drain going on while its scheduler reads as not running, met by the library's close (in a pause between rounds, or in a round), resolves as one that ran dry, with what the close abandoned, and is a ShutdownError after a cancel before the close (as that cancel settles a drain; it was a LibraryClosedError)", async () => {
  // kc_sched_info faked to read not running (a C caller's timed shutdown that gave up with
  // KC_EBUSY): the drain goes on in rounds, each of which ran dry, pausing between them. The
  // close comes in a pause (a timer queued at the round's read, before the pause's own), or
  // while a round's slice waits (held back, faked): either way the drain is settled as a running
  // drain whose scheduler had nothing left to run at the close is, resolved, with the producer
  // parked on a full channel that the close's shutdown (the last host's) abandoned. Before, a
  // LibraryClosedError, though the same state read as running resolved. (Without the check
  // after the pause, the next round called into the closed library.) A cancel (C code's) just
  // before the close abandoned what the drain was waiting on: a ShutdownError, in a pause as in
  // a round, as that cancel settles a drain without the close (its next round), and as a finish
  // just before the close settles it as that finish does. Before, a LibraryClosedError; before
  // that, one in a pause resolved, with the count of that cancel, and only one in a round rejected.
  for (const at of ["pause", "round"]) {
    for (const cancel of [false, true]) {
      const res = await evalScript(`
        import { closeLibrary, LibraryClosedError, ShutdownError } from "./mod.ts";
        ${PARKED_SENDER_SCRIPT}
        const realInfo = sym.kc_sched_info;
        const realDrain = sym.kc_sched_drain_for;
        const cancel = () => {
          if (${cancel} && sym.kc_sched_shutdown(0) !== 0) throw new Error("the cancel failed");
        };
        let reads = 0, release;
        sym.kc_sched_info = (out, n) => {
          const rc = realInfo(out, n);
          out.fill(0n, 0, Math.min(n, 6));
          if (++reads === 4) {
            if (${JSON.stringify(at)} === "pause") {
              setTimeout(() => { sym.kc_sched_info = realInfo; cancel(); closeLibrary(); }, 0);
            } else sym.kc_sched_drain_for = () => new Promise((r) => release = r);
          }
          return rc;
        };
        const outcome = rt.drain().then((r) => JSON.stringify(r), (e) =>
          e instanceof LibraryClosedError ? "LibraryClosedError"
          : e instanceof ShutdownError ? "ShutdownError: " + e.message : String(e));
        if (${JSON.stringify(at)} === "round") {
          await until(() => release !== undefined, "the next round's slice");
          sym.kc_sched_drain_for = realDrain;
          cancel();
          closeLibrary(); // its hook reads the scheduler as not running still
          sym.kc_sched_info = realInfo;
          release(0);
        }
        console.log(await outcome);
      `);
      const what = `${at}${cancel ? ", after a cancel" : ""}`;
      assert.equal(res.code, 0, `${what}: ${res.stderr}`);
      assert.equal(
        res.stdout.trim(),
        cancel
          ? 'ShutdownError: Cannot drain runtime: the runtime was shut down with "cancel" before ' +
            "the library closed, while the drain waited: unfinished coroutines never ran to their end " +
            "(KC_ESHUTDOWN)"
          : JSON.stringify({ parked: 1 }),
        what,
      );
    }
  }
});

Deno.test("runtime: a drain settled by a finish elsewhere (C code, another isolate) resolves with what that finish left parked once it has joined, not 0 before", async () => {
  // The finish elsewhere (C code's, on a helper thread) settles the drain, whose slice was
  // waiting as it came (held until the finish is done: the drain can neither run dry first nor
  // read the scheduler still running, as it could when a sleeper of 300 ms was to keep it
  // waiting), before the finish's join is done as far as the drain can tell: kc_sched_abandoned
  // says KC_EBUSY until then (faked for the first reads). Before, the drain resolved
  // { parked: 0 } then, though that finish abandoned a producer parked on a full channel.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realAbandoned = sym.kc_sched_abandoned as (g: bigint) => number;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  let reads = 0;
  sym.kc_sched_abandoned = (g: bigint) => ++reads <= 3 ? Status.EBUSY : realAbandoned(g);
  try {
    const { during, release } = await drainAtHeldSlice(sym, rt);
    assert.equal(await (sym.kc_sched_shutdown_async as (mode: number) => Promise<number>)(1), 0);
    release(Status.ETIME); // timed out as the finish came
    assert.deepEqual(await within(during, 10_000, "the drain"), { parked: 1 });
    assert.ok(reads > 3, `the drain read the count ${reads} times`);
  } finally {
    sym.kc_sched_abandoned = realAbandoned;
  }
});

Deno.test("runtime: drain({ signal }) rejects with the signal's reason, at once when aborted before, and while it waits (the coroutines keep running)", async () => {
  await shutdownScheduler();
  const rt = runtime({ workers: 1 });
  const long = rt.cells([60_000n, 0n]); // a minute: the drain would wait for it
  rt.spawn("sleeper", long);
  // Aborted before: rejected with the reason, nothing waited for. Before, drain took no
  // options, and waited out the sleeper.
  const before = new Error("before");
  await assert.rejects(rt.drain({ signal: AbortSignal.abort(before) }), (e) => e === before);
  const ac = new AbortController();
  const waiting = rt.drain({ signal: ac.signal });
  const reason = new Error("stop waiting");
  ac.abort(reason);
  await assert.rejects(within(waiting, 5_000, "the aborted drain"), (e) => e === reason);
  assert.equal(rt.stats().live, 1, "the sleeper runs on");
  assert.equal(long[1], 0n);
  // Bad options are named errors, rejected (README, Wrong input).
  await assert.rejects(rt.drain({ signal: 1 } as never), {
    name: "TypeError",
    message: /^Cannot drain runtime: signal must be an AbortSignal/,
  });
  await assert.rejects(rt.drain({ sigal: 1 } as never), {
    name: "TypeError",
    message: /^Cannot drain runtime: unknown option "sigal"/,
  });
  await assert.rejects(rt.drain(1 as never), { name: "TypeError" });
  assert.deepEqual(await rt.shutdown(), { abandoned: 1 });
  // Resolved: no listener left on a signal that never aborts, once the caller's code runs on
  // (before, it was removed a turn of microtasks later).
  const rt2 = runtime({ workers: 1 });
  const live = new AbortController();
  assert.deepEqual(await rt2.drain({ signal: live.signal }), { parked: 0 });
  assert.equal(abortListeners(live.signal), 0, "no listener left once resolved");
});

Deno.test("runtime: shutdown(mode, { signal }) rejects with the signal's reason, at once starting nothing when aborted before, and while it waits; the shutdown goes on", async () => {
  await shutdownScheduler();
  const rt = runtime({ workers: 1 });
  rt.spawn("sleeper", rt.cells([60_000n, 0n])); // a minute: a finish waits for it
  // Aborted before: rejected with the reason, and nothing shut down. Before, shutdown took no
  // options: a finish, however long its wait, could not be given up.
  const before = new Error("before");
  await assert.rejects(
    rt.shutdown("finish", { signal: AbortSignal.abort(before) }),
    (e) => e === before,
  );
  assert.equal(rt.isRunning, true, "not shut down");
  // Bad options are named errors, rejected, nothing shut down (README, Wrong input).
  await assert.rejects(rt.shutdown("cancel", { signal: 1 } as never), {
    name: "TypeError",
    message: /^Cannot shut down runtime: signal must be an AbortSignal/,
  });
  await assert.rejects(rt.shutdown("cancel", { sigal: 1 } as never), {
    name: "TypeError",
    message: /^Cannot shut down runtime: unknown option "sigal"/,
  });
  assert.equal(rt.isRunning, true, "not shut down");
  // A finish waiting for the sleeper, given up: the call rejects with the reason, its listener
  // gone; the shutdown goes on (runtime() refuses a scheduler still shutting down), and a
  // cancel cuts it short, abandoning the sleeper.
  const ac = new AbortController();
  const finishing = rt.shutdown("finish", { signal: ac.signal });
  finishing.catch(() => {}); // asserted below
  assert.equal(abortListeners(ac.signal), 1, "the waiting call listens");
  await until(() => !rt.isRunning, "the finish under way natively");
  const reason = new Error("stop waiting");
  ac.abort(reason);
  await assert.rejects(within(finishing, 5_000, "the given-up shutdown"), (e) => e === reason);
  assert.equal(abortListeners(ac.signal), 0, "no listener left");
  assert.throws(() => runtime(), ShutdownError);
  assert.deepEqual(await rt.shutdown("cancel"), { abandoned: 1 });
  // Resolved: no listener left on a signal that never aborts.
  const rt2 = runtime({ workers: 1 });
  const live = new AbortController();
  assert.deepEqual(await rt2.shutdown("cancel", { signal: live.signal }), { abandoned: 0 });
  assert.equal(abortListeners(live.signal), 0, "no listener left once resolved");
});

Deno.test("runtime: a shutdown given up (its signal aborted) that then ends by itself leaves nothing behind: runtime() starts a new scheduler, which the given-up Runtime's later shutdown() does not stop", async () => {
  // The given-up call's native shutdown is held (faked) before it begins until the test
  // releases it, so the state while it is under way and once it ended is the test's to know.
  // Meanwhile runtime() refuses (a shutdown in progress, the scheduler still reading as
  // running); once it ended, with no second call, its bookkeeping is done (not left "in
  // progress" for good because its caller gave up): runtime() starts afresh, and the given-up
  // Runtime's shutdown() is a later call of an ended generation, which resolves and does not
  // shut the new scheduler down.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realGen = sym.kc_sched_shutdown_gen_async as (m: number, g: bigint) => Promise<number>;
  let release: (() => void) | undefined;
  sym.kc_sched_shutdown_gen_async = (m: number, g: bigint) =>
    new Promise<number>((r) => release = () => r(realGen(m, g)));
  try {
    const rt = runtime({ workers: 1 });
    const ac = new AbortController();
    const given = rt.shutdown("cancel", { signal: ac.signal });
    given.catch(() => {}); // asserted below
    await until(() => release !== undefined, "the native shutdown asked for (held)");
    const reason = new Error("gave up");
    ac.abort(reason);
    await assert.rejects(within(given, 5_000, "the given-up shutdown"), (e) => e === reason);
    assert.equal(abortListeners(ac.signal), 0, "no listener left");
    assert.throws(() => runtime(), ShutdownError, "runtime() while it is under way");
    sym.kc_sched_shutdown_gen_async = realGen;
    release!();
    let next: Runtime | undefined;
    await until(() => {
      try {
        next = runtime({ workers: 1 });
        return true;
      } catch (e) {
        if (!(e instanceof ShutdownError)) throw e;
        return false;
      }
    }, "runtime() once the given-up shutdown ended");
    assert.notEqual(next, rt);
    assert.deepEqual(await rt.shutdown("cancel"), { abandoned: 0 });
    assert.equal(next!.isRunning, true, "the new scheduler runs on");
    assert.equal(runtime(), next, "and is the one runtime() returns");
  } finally {
    sym.kc_sched_shutdown_gen_async = realGen;
  }
  await shutdownScheduler();
});

Deno.test("runtime: a drain whose signal aborts starts no round or slice after it: not after a slice that timed out, nor after a pause between rounds on a scheduler that reads as not running", async () => {
  // Each slice (kc_sched_drain_for) is held until the test answers it, so the test knows where
  // the drain is, and the slices asked for count its rounds. Aborted during a slice that then
  // times out (the scheduler running, a coroutine busy): no next slice (before the slices'
  // check, a slice every 100 ms went on until something else ended the drain). Aborted during
  // a round's slice that then runs dry on a scheduler that reads as not running (kc_sched_info
  // faked, as after kc_sched_shutdown_timed's KC_EBUSY with no shutdown after it: the drain
  // goes on in rounds, README, and never settles by itself): no round after the pause that
  // follows (before the pause's check, a round every 50 ms at most, for good). Either way the
  // drain rejects with the reason at the abort. No window is watched: the next slice would be
  // asked for as the answer's microtasks run, or as the pause's timer fires (`afterTimers`).
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  for (const where of ["a slice that timed out", "a pause between rounds"]) {
    using held = holdSlices(sym);
    const { slices } = held;
    using _info = where === "a pause between rounds" ? readNotRunning(sym) : undefined;
    const ac = new AbortController();
    const during = rt.drain({ signal: ac.signal });
    during.catch(() => {}); // asserted below
    await until(() => slices.length === 1, `${where}: the first slice`);
    // A first slice that timed out, or a first round that ran dry, then its pause: the
    // drain goes on in either.
    slices[0](where === "a pause between rounds" ? 0 : Status.ETIME);
    await until(() => slices.length === 2, `${where}: the second slice`);
    const reason = new Error(`given up: ${where}`);
    ac.abort(reason);
    await assert.rejects(within(during, 5_000, "the aborted drain"), (e) => e === reason);
    slices[1](where === "a pause between rounds" ? 0 : Status.ETIME);
    await afterTimers(50); // DRAIN_PAUSE_MAX_MS
    assert.equal(slices.length, 2, `${where}: a slice after the abort`);
  }
  assert.deepEqual(await rt.shutdown("finish"), { abandoned: 1 });
});

Deno.test("runtime: a drain settled by a finish elsewhere whose signal aborts while it waits for that finish's join stops reading the count", async () => {
  // kc_sched_abandoned faked to say KC_EBUSY for good (C code's kc_sched_shutdown_timed that
  // ended with KC_ETIME leaves the join to a next shutdown, which may never come): the drain
  // re-reads it, pausing between reads; its signal's abort rejects it with the reason and ends
  // the reads (at most the one its pending pause leads to). Before the check, it read on every
  // 50 ms for good. No window is watched: two reads' pauses (`afterTimers`) would have run.
  await shutdownScheduler();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realAbandoned = sym.kc_sched_abandoned;
  using parked = await parkedSender(1, true);
  const { rt } = parked;
  let reads = 0;
  sym.kc_sched_abandoned = () => (reads++, Status.EBUSY);
  try {
    const ac = new AbortController();
    // As above: the finish comes as its slice waits.
    const { during, release } = await drainAtHeldSlice(sym, rt, { signal: ac.signal });
    during.catch(() => {}); // asserted below
    assert.equal(await (sym.kc_sched_shutdown_async as (mode: number) => Promise<number>)(1), 0);
    release(Status.ETIME);
    await until(() => reads >= 2, "the drain re-reading the count");
    const reason = new Error("given up");
    ac.abort(reason);
    await assert.rejects(within(during, 5_000, "the aborted drain"), (e) => e === reason);
    const at = reads;
    await afterTimers(50); // DRAIN_PAUSE_MAX_MS: the pause pending at the abort ran
    await afterTimers(50); // and the one after it, had there been one
    assert.ok(reads <= at + 1, `reads went on after the abort: ${at} -> ${reads}`);
  } finally {
    sym.kc_sched_abandoned = realAbandoned;
  }
  assert.deepEqual(await rt.shutdown(), { abandoned: 1 }, "the finish's count");
});

Deno.test("runtime: a drain settled by a finish elsewhere, waiting for that finish's join, is resolved once the library's close has waited out its bound (2 s) with what it reads then", async () => {
  // As above (kc_sched_abandoned faked to say KC_EBUSY for good: a join left to a shutdown that
  // never comes, as another host's that the close does not wait for), with no signal: the wait
  // ends 2 s after the close (a join that ends meanwhile gives its count: the next test), with
  // the count read then (0: not joined). Before the check, the drain read on for good, and
  // neither it nor the process ever ended.
  const res = await evalScript(
    `
    import { closeLibrary } from "./mod.ts";
    import { within } from "./tests/support.ts";
    ${PARKED_SENDER_SCRIPT}
    let reads = 0;
    sym.kc_sched_abandoned = () => (reads++, -16); // KC_EBUSY
    // Its slice held until the finish is done, as above.
    const realSlice = sym.kc_sched_drain_for;
    let release;
    sym.kc_sched_drain_for = () => new Promise((r) => release = r);
    const during = rt.drain();
    await until(() => release !== undefined, "the drain's slice");
    sym.kc_sched_drain_for = realSlice;
    if (await sym.kc_sched_shutdown_async(1) !== 0) throw new Error("the finish failed");
    release(-62); // KC_ETIME
    await until(() => reads >= 2, "the drain re-reading the count");
    closeLibrary();
    console.log(JSON.stringify(await within(during, 10_000, "the drain after the close")));
  `,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), JSON.stringify({ parked: 0 }));
});

Deno.test("runtime: a drain settled by a finish elsewhere, waiting for that finish's join when the library closes, goes on waiting for it (bounded) and resolves with what that finish left parked", async () => {
  // As above, the join ending a few reads after the close (kc_sched_abandoned says KC_EBUSY
  // until then): the drain resolves with the producer that finish left parked. Before, the
  // close ended the wait at once with { parked: 0 }. The one above (a join that never ends)
  // still resolves, with 0, once the bound (2 s) has passed.
  const res = await evalScript(
    `
    import { Channel, closeLibrary, codecs, library, runtime } from "./mod.ts";
    import { isLibraryOpen, librarySymbols } from "./ffi/load.ts";
    import { until, within } from "./tests/support.ts";
    const rt = runtime({ workers: 1 });
    const lib = library();
    const full = new Channel(2, { codec: codecs.u64 });
    const sender = rt.cells([BigInt(full.handle), 0n, 10n, 0n, 0n]);
    rt.spawn("chanSender", sender);
    await until(() => sender[3] === 2n && rt.stats().busy === 0, "the sender parked");
    const sym = librarySymbols(lib, "test");
    const realAbandoned = sym.kc_sched_abandoned;
    let reads = 0, afterClose = 0;
    sym.kc_sched_abandoned = (g) => {
      reads++;
      if (!isLibraryOpen(lib) && ++afterClose > 3) return realAbandoned(g);
      return -16; // KC_EBUSY: the finish's join not done
    };
    const realSlice = sym.kc_sched_drain_for;
    let release;
    sym.kc_sched_drain_for = () => new Promise((r) => release = r);
    const during = rt.drain();
    await until(() => release !== undefined, "the drain's slice");
    sym.kc_sched_drain_for = realSlice;
    if (await sym.kc_sched_shutdown_async(1) !== 0) throw new Error("the finish failed");
    release(-62); // KC_ETIME
    await until(() => reads >= 2, "the drain re-reading the count");
    closeLibrary();
    console.log(JSON.stringify(await within(during, 10_000, "the drain after the close")));
  `,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), JSON.stringify({ parked: 1 }));
});

Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

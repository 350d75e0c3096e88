// The whole public API against hostile arguments, in a child process so that a crash (a signal,
// an abort, a segfault) fails the test with the seed and the call that killed it. Seeded
// (KCORO_FUZZ_SEED, a fixed default) and time-bounded (KCORO_FUZZ_MS, 3 s by default). The
// child calls every exported function, constructor, method and getter with garbage: wrong
// types, out-of-range and negative-zero numbers, bigints, symbols, objects whose getters, traps
// or valueOf throw or re-enter kcoro (dispose, close, cancel, shut down mid-call), revoked
// proxies, frozen objects, detached, resizable and shared buffers, look-alikes of kcoro's
// objects, forged and stale share() objects and handles; then again after a runtime shutdown
// and after closeLibrary(). Every thrown or rejected error must be an Error with a message (an
// argument check's RangeError or TypeError worded "Cannot <op>: <reason>, received <x>"), a
// function or method that returns a Promise must reject instead of throwing, every promise must
// settle once the run ends its channels and scopes, no coroutine may be left live, and after
// each call two control channels the fuzzer never hands out must still carry exactly what they
// are given. Left out: what FFI cannot check (a NativeFunction's pointer, the
// raw symbols, the codecs' encode and decode of native slots; see README), the @ignore
// constructors of Runtime and Library. Every exported class's public members (and a scope's,
// a task's and an actor's) are called on its look-alikes, Proxies of its instances and garbage
// ("look-alike member").
import assert from "node:assert/strict";
import { callersJob, prng, shutdownScheduler, untilAborted } from "./support.ts";
import * as kc from "../mod.ts";
import {
  AbiMismatchError,
  actor,
  CancellationError,
  Channel,
  ClosedReceiveError,
  ClosedSendError,
  type Codec,
  codecs,
  CompletableDeferred,
  Context,
  CoroutineExceptionHandler,
  coroutineScope,
  coroutineStats,
  createContextKey,
  createScope,
  Deadline,
  delay,
  KcoroError,
  LibraryNotFoundError,
  NativeCoroutine,
  NativeScope,
  nativeScope,
  nonCancellable,
  openLibrary,
  produce,
  releaseBytes,
  releaseUnavailable,
  resolveNative,
  runtime,
  select,
  statusName,
  supervisorScope,
  undeliveredLost,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";
import { beforeClose, onClose } from "../ffi/load.ts";

const DEFAULT_SEED = 0x0a91_f022;

/** KCORO_FUZZ_SEED and KCORO_FUZZ_MS, checked (the same in parent and child). */
function settings(): { seed: number; ms: number } {
  const seed = Number(Deno.env.get("KCORO_FUZZ_SEED") ?? DEFAULT_SEED);
  const ms = Number(Deno.env.get("KCORO_FUZZ_MS") ?? 3_000);
  if (!Number.isSafeInteger(seed) || !(ms > 0 && ms <= 600_000)) {
    throw new RangeError(
      `Cannot fuzz: KCORO_FUZZ_SEED must be an integer and KCORO_FUZZ_MS from 1 to 600000, received ${
        Deno.env.get("KCORO_FUZZ_SEED")
      } and ${Deno.env.get("KCORO_FUZZ_MS")}`,
    );
  }
  return { seed, ms };
}

// ---------------------------------------------------------------------------------------------
// The parent: runs the child, and fails with its seed and last calls if it dies or complains.
// ---------------------------------------------------------------------------------------------

if (!import.meta.main) {
  Deno.test("every public function, constructor and method survives hostile arguments (child process)", async () => {
    const { seed, ms } = settings();
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-run",
        new URL(import.meta.url).pathname,
      ],
      env: { NO_COLOR: "1", KCORO_FUZZ_SEED: String(seed), KCORO_FUZZ_MS: String(ms) },
      stdout: "piped",
      stderr: "piped",
      // Killed at the bound: a hang fails the test instead of holding it.
      signal: AbortSignal.timeout(ms + 30_000),
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    const lines = stdout.trimEnd().split("\n");
    const failed = lines.filter((l) => l.startsWith("FAIL ")).slice(0, 10).join("\n");
    assert.ok(
      out.success && out.signal === null && /^fuzz ok /m.test(stdout),
      `api fuzz child (KCORO_FUZZ_SEED=${seed}) ended with code ${out.code}, signal ${out.signal}` +
        `\n-- failures:\n${failed}\n-- last calls:\n${lines.slice(-8).join("\n")}` +
        `\n-- stderr:\n${stderr.slice(-4_000)}`,
    );
    console.log(`${stdout.match(/^fuzz ok .*$/m)![0]} in ${Math.round(performance.now() - t0)} ms`);
  });

  // Last: no scheduler left running for the files after this one (tests/support.ts says why).
  // This process starts none itself (the child does), but a test added above might.
  Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);
}

// ---------------------------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------------------------

/** Thrown by the fuzzer's own code (a getter, a trap, valueOf, a callback). */
class CallerError extends Error {}

const enc = new TextEncoder();
function log(line: string): void {
  // Written at once: a crash must not lose the line naming the call that caused it.
  Deno.stdout.writeSync(enc.encode(line + "\n"));
}

/** A short, safe description of a value for the log (never runs its code). */
function show(x: unknown, depth = 0): string {
  try {
    if (typeof x === "string") return JSON.stringify(x.length > 40 ? x.slice(0, 40) + "…" : x);
    if (typeof x === "bigint") return `${x}n`;
    if (typeof x === "symbol") return "Symbol()";
    if (typeof x === "function") return "fn";
    if (typeof x === "number") return Object.is(x, -0) ? "-0" : String(x);
    if (x === null || typeof x !== "object") return String(x);
    if (labels.has(x)) return labels.get(x)!;
    if (depth > 1) return "{…}";
    if (Array.isArray(x)) return `[${x.slice(0, 4).map((v) => show(v, depth + 1)).join(",")}]`;
    const proto = Object.getPrototypeOf(x);
    const name = proto?.constructor?.name ?? "null-proto";
    if (name !== "Object") return name;
    return `{${
      Object.keys(x).slice(0, 8).map((k) => {
        const d = Object.getOwnPropertyDescriptor(x, k)!;
        return `${k}:${"value" in d ? show(d.value, depth + 1) : "getter"}`;
      }).join(",")
    }}`;
  } catch {
    return "<hostile>";
  }
}
const labels = new WeakMap<object, string>();
function label<T extends object>(x: T, name: string): T {
  labels.set(x, name);
  return x;
}

/** Errors the caller made itself: its own exceptions, and close/cancel causes it gave. */
const causes = new Set<unknown>();

/** What is wrong with error `e` thrown by `what`, or null if it is a proper named error. */
function complaint(e: unknown): string | null {
  if (causes.has(e) || e instanceof CallerError) return null;
  if (!(e instanceof Error)) return `not an Error: ${show(e)}`;
  if (typeof e.message !== "string" || e.message === "") return `${e.name} with no message`;
  // A revoked proxy or a throwing trap is the caller's object throwing.
  if (e instanceof TypeError && /on a proxy that has been revoked$/.test(e.message)) return null;
  if (e instanceof DOMException && e.name === "AbortError") return null; // a signal's reason
  if (
    e instanceof KcoroError || e instanceof CancellationError || e instanceof ClosedSendError ||
    e instanceof ClosedReceiveError || e instanceof LibraryNotFoundError ||
    e instanceof AbiMismatchError
  ) return null;
  if (e instanceof kc.CodecError && /^Cannot \w+: /.test(e.message)) return null;
  // A completion handler of the caller's threw: reported with what it threw as the cause.
  if (e instanceof kc.CompletionHandlerError) return complaint(e.cause);
  if (e instanceof TypeError || e instanceof RangeError) {
    return /^Cannot [^:]+: .+, received .+/s.test(e.message)
      ? null
      : `${e.name} not worded "Cannot <op>: <reason>, received <x>": ${e.message}`;
  }
  return `unexpected ${e.name}: ${e.message}`;
}

/** runtime(), once a shutdown a call began (re-entrantly, unawaited) has finished. */
async function runtimeNow(): Promise<kc.Runtime> {
  const end = performance.now() + 10_000;
  while (true) {
    try {
      return runtime();
    } catch (e) {
      if (!(e instanceof kc.ShutdownError) || performance.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

async function child(): Promise<void> {
  const { seed, ms } = settings();
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const failures: string[] = [];
  const fail = (what: string, why: string) => {
    if (failures.length < 20) failures.push(`${what}: ${why}`);
    log(`FAIL ${what}: ${why}`);
  };
  // A launched task's failure with no CoroutineExceptionHandler goes to reportError (the
  // caller's own error): checked like a thrown one, not the end of the process.
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    const c = complaint(ev.error);
    if (c !== null) {
      fail("reported error", c + (ev.error instanceof Error ? `\n${ev.error.stack}` : ""));
    }
  });
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    const c = complaint(ev.reason);
    if (c !== null) {
      fail("unhandled rejection", c + (ev.reason instanceof Error ? `\n${ev.reason.stack}` : ""));
    }
  });
  const stop = new AbortController();
  const pending = new Map<number, string>();
  let ids = 0;
  const watch = (what: string, p: unknown) => {
    if (!(p instanceof Promise)) return;
    const id = ids++;
    pending.set(id, what);
    p.then(() => {}, (e) => {
      const c = complaint(e);
      if (c !== null) fail(`${what} (rejected)`, c + (e instanceof Error ? `\n${e.stack}` : ""));
    }).finally(() => pending.delete(id));
  };

  const liveBefore = coroutineStats().live;
  // The control channels: never handed to a call; each must still carry exactly its values.
  const controlF64 = new Channel<number>(4, { codec: codecs.f64 });
  const controlAny = new Channel<unknown>(4);
  const controlHandles = new Set([controlF64.share().handle, controlAny.share().handle]);
  let tick = 0;
  const checkControl = (after: string) => {
    tick++;
    const a = controlF64.trySend(tick), b = controlAny.trySend({ tick, s: "x" });
    const ra = controlF64.tryReceive(), rb = controlAny.tryReceive();
    if (
      a.state !== "ok" || b.state !== "ok" || ra.state !== "ok" || ra.value !== tick ||
      rb.state !== "ok" || (rb.value as { tick: number }).tick !== tick
    ) {
      fail(after, `control channel corrupted: ${show([a, b, ra, rb])}`);
      throw new Error("control channel corrupted");
    }
  };

  // Pools of live objects the calls act on.
  const channels: Channel<unknown>[] = [];
  /** The native handles of channels that have one (for forged objects and built-ins' cells). */
  const handleOf = new WeakMap<Channel<unknown>, number>();
  const deadChannels: Channel<unknown>[] = []; // disposed
  const deferreds: CompletableDeferred<unknown>[] = [];
  const scopes: kc.Scope[] = [];
  const natives: NativeScope[] = [];
  const coros: NativeCoroutine[] = [];
  const libs: kc.Library[] = [];
  const key = createContextKey<number>("fuzz");

  const boom = () => {
    throw new CallerError("the caller's own code");
  };
  // A signal that aborts with `stop` whose own members throw a plain Error (a complaint) if kcoro
  // ever reads or calls them: it must use AbortSignal's own (tests/signal_test.ts). Not
  // `aborted`, which its controller's abort reads itself.
  const hostileStop = new AbortController();
  stop.signal.addEventListener("abort", () => hostileStop.abort(stop.signal.reason), {
    once: true,
  });
  for (const m of ["reason", "addEventListener", "removeEventListener", "throwIfAborted"]) {
    Object.defineProperty(hostileStop.signal, m, {
      get() {
        throw new Error(`kcoro used the signal's own ${m}`);
      },
    });
  }
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const { proxy: revokedFn, revoke: revokeFn } = Proxy.revocable(() => 1, {});
  revokeFn();
  const detached = new ArrayBuffer(16);
  structuredClone(detached, { transfer: [detached] });
  const resizable = new ArrayBuffer(16, { maxByteLength: 64 });
  const detachedView = new Uint8Array(new ArrayBuffer(8));
  structuredClone(detachedView.buffer, { transfer: [detachedView.buffer] });
  const detachedCells = new BigUint64Array(4);
  structuredClone(detachedCells.buffer, { transfer: [detachedCells.buffer] });

  /** The channel the current call is on: what a re-entrant getter most likely acts on. */
  let current: Channel<unknown> | undefined;
  /** Something a getter, trap or callback of the caller's does in the middle of a call. */
  const reenter = () => {
    const ch = rnd() < 0.7 ? current : any(channels);
    const r = rnd();
    try {
      if (r < 0.25) ch?.[Symbol.dispose]();
      else if (r < 0.4) ch?.close();
      else if (r < 0.5) ch?.cancel();
      else if (r < 0.6) ch?.trySend(1);
      else if (r < 0.7) ch?.tryReceive();
      else if (r < 0.75) ch?.share();
      else if (r < 0.8) any(scopes)?.cancel();
      else if (r < 0.85) any(natives)?.cancel();
      else if (r < 0.9) any(deferreds)?.complete(1);
      else if (r < 0.93) any(coros)?.destroy();
      else if (r < 0.96 && lastBytes !== null && !lastBytes.buffer.detached) {
        structuredClone(lastBytes.buffer, { transfer: [lastBytes.buffer] });
      } else if (r < 0.98) watch("re-entrant drain", runtime().drain());
      else if (r < 0.99) watch("re-entrant shutdown", runtime().shutdown());
      else if (closing) kc.closeLibrary();
    } catch (e) {
      const c = complaint(e);
      if (c !== null) fail("re-entrant call", c + (e instanceof Error ? `\n${e.stack}` : ""));
    }
  };
  let lastBytes: Uint8Array<ArrayBuffer> | null = null;
  let closing = false; // phase 3: a re-entrant closeLibrary() too
  const bytes = () => (lastBytes = new Uint8Array(pick([0, 8, 100, 20_000])).fill(3));
  const reentrant = (): unknown => {
    const r = rnd();
    const get = (v: unknown) => ({ get: () => (reenter(), v), enumerable: true });
    if (r < 0.2) {
      return label(Object.defineProperty({}, "signal", get(undefined)), "{get signal re-enters}");
    }
    if (r < 0.3) {
      return label(
        Object.defineProperty({ signal: stop.signal }, "timeout", get(1)),
        "{get timeout re-enters}",
      );
    }
    if (r < 0.4) return label(Object.defineProperty({}, "x", get(1)), "{get x re-enters}");
    if (r < 0.5) {
      return label(
        new Proxy({ a: 1 }, {
          get: (t, k) => (reenter(), Reflect.get(t, k)),
          ownKeys: (t) => (reenter(), Reflect.ownKeys(t)),
        }),
        "Proxy(re-enters)",
      );
    }
    if (r < 0.6) {
      return label(
        { capacity: 2, onUndeliveredElement: () => reenter() },
        "{onUndelivered re-enters}",
      );
    }
    if (r < 0.7) {
      return label(
        { valueOf: () => (reenter(), 1), toString: () => (reenter(), "x") },
        "{valueOf re-enters}",
      );
    }
    if (r < 0.8) return label(() => (reenter(), 1), "fn re-enters");
    if (r < 0.9) {
      return label(
        { context: Context.empty.with(CoroutineExceptionHandler, () => reenter()) },
        "{context: handler re-enters}",
      );
    }
    return label(bytes(), "Uint8Array(fresh)");
  };

  const primitives: unknown[] = [
    undefined,
    null,
    true,
    false,
    0,
    -0,
    -1,
    1,
    1.5,
    2,
    3,
    8,
    64,
    65_536,
    2 ** 31,
    2 ** 32,
    2 ** 32 - 1,
    2 ** 53,
    -(2 ** 53),
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    NaN,
    Infinity,
    -Infinity,
    "",
    "x",
    "0",
    "1",
    "-1",
    "NaN",
    "rendezvous",
    "buffered",
    "unlimited",
    "conflated",
    "drop-oldest",
    "cancel",
    "finish",
    "fib",
    "sleeper",
    "skynet",
    "receiver",
    "toString",
    "__proto__",
    "constructor",
    "\0",
    "a\0b",
    "x".repeat(10_000),
    0n,
    1n,
    -1n,
    2n ** 64n,
    2n ** 63n,
    Symbol("s"),
    Symbol.iterator,
  ];
  const hostiles = (): unknown[] => [
    label(
      Object.defineProperty({}, "capacity", { get: boom, enumerable: true }),
      "{get capacity throws}",
    ),
    label({ valueOf: boom, toString: boom, [Symbol.toPrimitive]: boom }, "{toPrimitive throws}"),
    label({ valueOf: () => 3, toString: () => "fib" }, "{valueOf 3}"),
    label(
      new Proxy({}, {
        get: boom,
        has: boom,
        ownKeys: boom,
        getOwnPropertyDescriptor: boom,
        getPrototypeOf: boom,
      }),
      "Proxy(throws)",
    ),
    label(new Proxy([1, 2], { get: boom }), "Proxy([1,2] get throws)"),
    label(new Proxy(new Uint8Array(4), {}), "Proxy(Uint8Array)"),
    label(new Proxy(() => 1, { apply: boom }), "Proxy(fn apply throws)"),
    revoked,
    revokedFn,
    label(Object.create(null), "Object.create(null)"),
    label(Object.freeze({ signal: undefined, timeout: 1 }), "frozen{timeout:1}"),
    label(Object.freeze([1n, 0n]), "frozen[1n,0n]"),
    label(Object.freeze([]), "frozen[]"),
    label(detached, "ArrayBuffer(detached)"),
    label(detachedView, "Uint8Array(detached)"),
    label(detachedCells, "BigUint64Array(detached)"),
    label(new Uint8Array(resizable), "Uint8Array(resizable)"),
    label(new BigUint64Array(resizable), "BigUint64Array(resizable)"),
    label(new Uint8Array(new SharedArrayBuffer(16)), "Uint8Array(SAB)"),
    label(new BigUint64Array(new SharedArrayBuffer(32)), "BigUint64Array(SAB 4)"),
    label(new BigUint64Array(new SharedArrayBuffer(8)), "BigUint64Array(SAB 1)"),
    label(new BigUint64Array(4), "BigUint64Array(4)"),
    label(new Float64Array([1, 2]), "Float64Array"),
    label(new DataView(new ArrayBuffer(8)), "DataView"),
    label({ length: 2 ** 32 }, "{length:2^32}"),
    label({ length: -1 }, "{length:-1}"),
    label(new Array(100_000), "Array(100000) holes"),
    label([1, 2, 3], "[1,2,3]"),
    label(["a", 1n, null], "[a,1n,null]"),
    label([1n, 2n, 3n, 4n, 5n], "[1n..5n]"),
    label([-1n, 2n ** 64n], "[-1n,2^64n]"),
    label({}, "{}"),
    label(new Date(0), "Date"),
    label(new Map([[1, 2]]), "Map"),
    label(new Error("an error"), "Error"),
    label(Promise.resolve(1), "Promise"),
    label({ then: boom }, "{then throws}"),
    label({ then: (r: (v: unknown) => void) => r(1) }, "thenable"),
    label(() => 1, "() => 1"),
    label(boom, "() => throw"),
    label(() => Promise.resolve(2), "() => Promise.resolve(2)"),
    label(() => new Promise((_, rej) => untilAborted(stop.signal).catch(rej)), "() => until stop"),
    label({ signal: stop.signal }, "{signal: stop}"),
    label({ signal: AbortSignal.abort() }, "{signal: aborted}"),
    label({ signal: {} }, "{signal: {}}"),
    label({ signal: hostileStop.signal }, "{signal: stop, its own members throw}"),
    label({ signal: new Proxy(stop.signal, {}) }, "{signal: Proxy of stop}"),
    label({ signal: stop.signal, timeout: pick([0, -1, NaN, 1, Infinity]) }, "{signal, timeout}"),
    label({ context: Context.empty.with(key, 1), supervisor: true }, "{context, supervisor}"),
    label({ context: {} }, "{context: {}}"),
    label({ capacity: 2, onUndeliveredElement: boom }, "{onUndelivered throws}"),
    label(
      { codec: pick(liveCodecs), overflow: pick(["drop-oldest", "drop-latest", "x", 1]) },
      "{codec, overflow}",
    ),
    label(
      { workers: pick([0, 1, 3, -1, 2 ** 32]), stackSize: pick([0, 1, 2 ** 20, 2 ** 40]) },
      "{workers, stackSize}",
    ),
    label({
      arg: pick([0, 5, -1, 2 ** 53, 1.5]),
      stackSize: pick([0, 16384, 1]),
      slabStack: pick([true, 1]),
    }, "{arg, stackSize}"),
    label({ parent: pick([...natives, {}, null]) }, "{parent}"),
    label(
      { path: pick(["/nonexistent", "/etc/hostname", "", "/dev/null"]), build: false },
      "{path}",
    ),
    label({ expectAbi: pick([-1, 1.5, 999, NaN]) }, "{expectAbi}"),
    Context.empty,
    key,
    Deadline,
    // Look-alikes: objects of the right prototype, proxies of real ones, duck-typed jobs and
    // scopes of the caller's own, options whose getters answer differently each time.
    // (Not a look-alike of a class with getters, as options: reading `signal` or `codec` from
    // Object.create(Channel.prototype) runs kcoro's getter on the wrong receiver, which throws
    // the engine's error as a method called on one does. Those go where a channel is expected.)
    label(Object.create(Context.prototype), "Object.create(Context.prototype)"),
    label(Object.create(NativeScope.prototype), "Object.create(NativeScope.prototype)"),
    label({ context: Object.create(Context.prototype) }, "{context: fake}"),
    label({ job: Object.create(CompletableDeferred.prototype) }, "{job: fake}"),
    label({ launch: () => pick([1, undefined, {}]) }, "{launch returns no Job}"),
    label({ launch: boom }, "{launch throws}"),
    label(callersJob(() => pick([1, undefined])), "fake job"),
    label({
      state: "completed",
      isCompleted: true,
      start: () => false,
      invokeOnCompletion: () => ({ [Symbol.dispose]() {} }),
      await: () => pick([5, Promise.resolve(6)]),
    }, "fake deferred"),
    label(
      toggling(
        pick([
          "signal",
          "context",
          "lazy",
          "supervisor",
          "capacity",
          "codec",
          "timeout",
          "path",
          "build",
          "workers",
        ]),
      ),
      "{getter toggles}",
    ),
  ];
  const liveCodecs = Object.values(codecs) as Codec<unknown>[];
  /** A channel's look-alike: of its prototype, or a Proxy of a real one. */
  const lookAlike = () =>
    channels.length > 0 && rnd() < 0.5
      ? label(new Proxy(pick(channels), {}), "Proxy(channel)")
      : label(Object.create(Channel.prototype), "Object.create(Channel.prototype)");
  /** Options whose `key` answers a valid-looking value first and garbage after. */
  const toggling = (k: string) => {
    let n = 0;
    return Object.defineProperty({}, k, {
      get: () => n++ === 0 ? undefined : pick([{}, "x", -1, 1]),
      enumerable: true,
    });
  };
  const forged = (): unknown => {
    const real = channels.length > 0 && rnd() < 0.5 ? pick(channels) : null;
    let shared: Record<string, unknown> = {
      kind: "kcoro.channel",
      version: 1,
      handle: 1,
      elemSize: 8,
      zeroCopy: false,
      codec: "u64",
      capacity: 4,
    };
    try {
      if (real !== null) shared = { ...real.share() };
    } catch { /* disposed */ }
    if (deadChannels.length > 0 && rnd() < 0.3) {
      shared.handle = handleOf.get(pick(deadChannels)) ?? shared.handle;
    }
    const field = pick(Object.keys(shared));
    shared[field] = pick([
      ...primitives.slice(0, 30),
      pick(["f64", "u64", "bytes", "string", "structured", "default"]),
    ]);
    return label(shared, `forged${show(shared)}`);
  };
  const garbage = (): unknown => {
    const r = rnd();
    if (r < 0.4) return pick(primitives);
    if (r < 0.65) return pick(hostiles());
    if (r < 0.75) return reentrant();
    if (r < 0.82) return forged();
    if (r < 0.88 && channels.length > 0) return pick(channels);
    if (r < 0.91 && deadChannels.length > 0) return pick(deadChannels);
    if (r < 0.94 && scopes.length > 0) return pick(scopes);
    if (r < 0.96 && deferreds.length > 0) return pick(deferreds);
    return pick(liveCodecs);
  };
  const cause = () => {
    const c = garbage();
    causes.add(c);
    return c;
  };
  const args = (n: number) => Array.from({ length: Math.floor(rnd() * (n + 1)) }, garbage);
  const any = <T>(xs: T[]): T | undefined => xs.length > 0 ? pick(xs) : undefined;

  const rt = () => runtime();
  /**
   * The cells of a built-in that count its work, which a "finish" shutdown waits for (a
   * "cancel" one stops a spin or chanSender at its next turn) and which takes the CPU the
   * loop's calls need meanwhile: spin's rounds, skynet's leaves, chanSender's count (a
   * drop-policy channel never blocks it). Before, a channel handle's value went there too
   * (~2^30: one spin of it ran ~40 s on a loaded 2-vCPU host, and the shutdown after the fuzz
   * loop waited for it, past the parent's bound, when built-ins took no turns), and so could a
   * number another built-in wrote into a shared cells array of the garbage (read-deadline's
   * deadline, a receiver's negative status).
   */
  const workCells: Record<string, number> = { spin: 0, skynet: 0, chanSender: 2 };
  /** Cells for built-in `name`: never naming a control channel; the times and work bounded. */
  const cellsFor = (name: unknown): unknown => {
    const work = typeof name === "string" && Object.hasOwn(workCells, name) ? workCells[name] : -1;
    // echo's `out` is never its `in`: one channel as both (a buffered one holding a u64) it
    // takes from and puts back into for ever, never parking, eating a worker's CPU, and a
    // "finish" shutdown waits for it for good (before built-ins took turns, the "cancel" one
    // after the loop did too: a scratch run, 54 million echoes, still waiting 10 s on).
    const echo = name === "echo";
    if (rnd() < 0.5) {
      const g = garbage();
      // Not `instanceof`, which runs a hostile Proxy's getPrototypeOf trap: isView runs nothing.
      if ((work < 0 && !echo) || !ArrayBuffer.isView(g)) return g; // cells it might run on: below
    }
    const n = pick([1, 2, 3, 4, 5, 8]);
    const handles = [...channels, ...deadChannels].map((c) => handleOf.get(c) ?? 0);
    const small = [0, 1, 2, 3, 5, 10, 100];
    const vals = Array.from(
      { length: n },
      (_, i) => BigInt(pick(i === work ? small : [...small, ...handles])),
    );
    for (const h of controlHandles) {
      for (let i = 0; i < n; i++) if (vals[i] === BigInt(h)) vals[i] = 0n;
    }
    if (echo && n > 1 && vals[1] === vals[0]) vals[1] = 0n; // no handle: its first send fails
    try {
      return rt().cells(vals);
    } catch {
      return new BigUint64Array(new SharedArrayBuffer(n * 8));
    }
  };
  const builtinName = () =>
    pick([
      "sleeper",
      "skynet",
      "spin",
      "cancellable-sleeper",
      "receiver",
      "cancel-scope",
      "chanSender",
      "read-deadline",
      "echo",
      garbage(),
    ]);

  /**
   * The exported classes whose every public method and getter is checked on a receiver that is
   * none of the class (the error classes have none of their own: Error's are the engine's), with a live
   * instance to put behind a Proxy: Channel's since they were named (a send on a look-alike threw
   * the engine's "Receiver must be an instance of class Channel" synchronously, its trySend
   * "Cannot read private member #at"); CompletableDeferred's, a scope's and a task's (the Job
   * members on every task's path), an Actor's, Library's and a select builder's since they were
   * too (with their fix reverted it fails at once). A scope's, an actor's and a builder's class is
   * not exported: their prototypes are a probe's, made here (the scope cancelled at once).
   */
  const probe = createScope();
  const scopeClass = { prototype: Object.getPrototypeOf(probe) as object };
  const taskClass = { prototype: Object.getPrototypeOf(probe.launch(() => {})) as object };
  const actorClass = { prototype: Object.getPrototypeOf(actor(probe, async () => {})) as object };
  probe.cancel();
  let builderProto: object | undefined; // the select builder's, its class not exported either
  await select((s) => {
    builderProto = Object.getPrototypeOf(s);
    s.onTimeout(0, () => 0);
  });
  const lookAlikeClasses: [string, { prototype: object }, () => object | undefined][] = [
    ["Channel", Channel, () => any(channels)],
    ["NativeScope", NativeScope, () => any(natives)],
    ["Context", Context, () => Context.empty.with(key, 1)],
    ["NativeCoroutine", NativeCoroutine, () => any(coros)],
    ["Runtime", kc.Runtime, () => {
      try {
        return rt();
      } catch {
        return undefined; // shut down by a call meanwhile
      }
    }],
    ["CompletableDeferred", CompletableDeferred, () => any(deferreds)],
    ["Scope", scopeClass, () => any(scopes)],
    ["Job", taskClass, () => any(scopes)?.launch(() => {})],
    ["Actor", actorClass, () => undefined],
    ["Library", kc.Library, () => any(libs)],
    ["SelectBuilder", { prototype: builderProto! }, () => undefined],
  ];
  /** The members that return a Promise: they must reject, never throw. */
  const asyncMembers = new Set<PropertyKey>([
    "send",
    "receive",
    "receiveCatching",
    "wait",
    "join",
    "await",
    "drain",
    "shutdown",
    Symbol.asyncDispose,
  ]);
  /** A class's public members: its prototypes' up to Object's, not `_` ones or constructor. */
  const membersOf = (proto: object): [PropertyKey, PropertyDescriptor][] => {
    const out: [PropertyKey, PropertyDescriptor][] = [];
    for (let p: object | null = proto; p !== null && p !== Object.prototype;) {
      for (const k of Reflect.ownKeys(p)) {
        if (k === "constructor" || (typeof k === "string" && k.startsWith("_"))) continue;
        if (out.some(([o]) => o === k)) continue;
        const d = Object.getOwnPropertyDescriptor(p, k)!;
        if (d.get !== undefined || typeof d.value === "function") out.push([k, d]);
      }
      p = Object.getPrototypeOf(p);
    }
    return out;
  };
  /** What a member of `cls` is called on: an object of its prototype, a Proxy of one, garbage. */
  const receiverFor = (
    name: string,
    cls: { prototype: object },
    live: () => object | undefined,
  ) => {
    const r = rnd();
    const real = r < 0.7 && r >= 0.5 ? live() : undefined;
    if (real !== undefined) return label(new Proxy(real, {}), `Proxy(${name})`);
    if (r < 0.5) return label(Object.create(cls.prototype), `Object.create(${name}.prototype)`);
    return rnd() < 0.5 ? pick(primitives) : pick(hostiles());
  };
  /** A public member of an exported class (async ones or the rest) called on no instance of it. */
  const callMember = (async: boolean, a: unknown[]): unknown => {
    const [name, cls, live] = pick(lookAlikeClasses);
    const members = membersOf(cls.prototype).filter(([k]) => asyncMembers.has(k) === async);
    if (members.length === 0) return;
    const [k, d] = pick(members);
    const self = receiverFor(name, cls, live);
    log(`  ${name}.${String(k)}${d.get !== undefined ? " (getter)" : ""} on ${show(self)}`);
    if (d.get !== undefined) return d.get.call(self);
    // A wait always ends: the stop signal as its options, now and then garbage.
    const opts = async && rnd() < 0.7 ? { signal: stop.signal } : a[1];
    const args = !async ? a : k === "send" ? [a[0], opts] : [opts];
    return (d.value as (...x: unknown[]) => unknown).apply(self, args);
  };

  type Op = [string, (argv: unknown[]) => unknown, () => unknown[]];
  const g = (n: number) => () => args(n);
  const ops: Op[] = [
    // Errors and statuses.
    ["statusName", (a) => statusName(a[0] as never), () => [garbage()]],
    // Channels.
    ["new Channel", (a) => {
      const ch = new Channel<unknown>(...(a as []));
      channels.push(ch);
      if (rnd() < 0.3) handleOf.set(ch, ch.share().handle); // native now
      if (channels.length > 24) {
        const old = channels.shift()!;
        handleOf.set(old, old.share().handle);
        old[Symbol.dispose]();
        deadChannels.push(old);
        if (deadChannels.length > 16) deadChannels.shift();
      }
    }, () => [garbage(), garbage()]],
    [
      "Channel.from",
      (a) => channels.push(Channel.from(a[0] as never)),
      () => [rnd() < 0.7 ? forged() : garbage()],
    ],
    [
      "Channel(native slot check)",
      (a) => new Channel(a[0] as never, { codec: a[1] as never })[Symbol.dispose](),
      () => [garbage(), garbage()],
    ],
    ...([
      "trySend",
      "send",
      "receive",
      "receiveCatching",
      "trySendMany",
      "tryReceiveMany",
      "tryReceive",
      "metrics",
      "share",
      "close",
      "cancel",
    ] as const).map((m): Op => [
      `channel.${m}`,
      (a) => {
        current = rnd() < 0.8 ? any(channels) : any(deadChannels);
        const ch = current as unknown as Record<string, (...x: unknown[]) => unknown>;
        if (ch === undefined) return;
        if ((m === "close" || m === "cancel") && rnd() < 0.7) return;
        if (m === "close" || m === "cancel") return ch[m](cause());
        if (m === "send" || m === "receive" || m === "receiveCatching") {
          // A wait always ends: the stop signal, or a hostile options object of the caller's.
          const opts = rnd() < 0.7 ? { signal: stop.signal, timeout: pick([0, 1, -1, NaN]) } : a[1];
          return m === "send" ? ch[m](a[0], opts) : ch[m](opts);
        }
        return ch[m](...a);
      },
      g(2),
    ]),
    ["channel getters", () => {
      const ch = any(rnd() < 0.7 ? channels : deadChannels);
      if (ch === undefined) return;
      return [ch.isClosedForSend, ch.isClosedForReceive, ch.codec, ch.handle];
    }, g(0)],
    ["channel iterate", () => {
      const ch = any(channels);
      if (ch === undefined) return;
      const it = ch[Symbol.asyncIterator]();
      return Promise.race([it.next(), new Promise((r) => setTimeout(r, 0))]).finally(() =>
        it.return?.()
      );
    }, g(0)],
    ["channel values", (a) => {
      const ch = any(rnd() < 0.8 ? channels : deadChannels);
      if (ch === undefined) return;
      const it = ch.values(rnd() < 0.6 ? { signal: stop.signal } : a[0] as never);
      const next = it.next();
      // Now and then released by return() while it waits, else after a turn.
      if (rnd() < 0.3) it.return?.();
      return Promise.race([next, new Promise((r) => setTimeout(r, 0))]).finally(() =>
        it.return?.()
      );
    }, g(1)],
    ["channel asyncDispose", () => {
      const ch = rnd() < 0.1 ? any(channels) : undefined;
      return ch?.[Symbol.asyncDispose]();
    }, g(0)],
    ["select", (a) =>
      select((s) => {
        const n = 1 + Math.floor(rnd() * 3);
        for (let i = 0; i < n; i++) {
          const c = rnd() < 0.6
            ? any(channels) ?? garbage()
            : rnd() < 0.2
            ? lookAlike()
            : garbage();
          const kind = Math.floor(rnd() * 6);
          log(
            `  clause ${kind} on ${show(c)}${
              c instanceof Channel ? ` #${channels.indexOf(c)}` : ""
            }`,
          );
          switch (kind) {
            case 0:
              s.onReceive(c as never, a[0] as never);
              break;
            case 1:
              s.onSend(c as never, a[0], () => 1);
              break;
            case 2:
              s.onTimeout(pick([0, -1, NaN, "0", undefined, 1.5]) as never, () => 3);
              break;
            case 3:
              s.onJoin((any(deferreds) ?? garbage()) as never, () => 1);
              break;
            case 4:
              s.onAwait((any(deferreds) ?? garbage()) as never, a[0] as never);
              break;
            default:
              s.onReceiveCatching(c as never, () => 1);
          }
        }
      }, rnd() < 0.7 ? { signal: stop.signal } : a[1] as never), () => [garbage(), garbage()]],
    ["select(garbage)", (a) => select(a[0] as never, a[1] as never), g(2)],
    // Every exported class's public members called on what is none of it (see `receiverFor`).
    ["look-alike member", (a) => callMember(false, a), g(2)],
    ["look-alike async member", (a) => callMember(true, a), g(2)],
    // Codecs (their check and pass; encode/decode take raw slots and symbols, like FFI).
    // The exported codec objects are frozen: an assignment throws, and changes nothing.
    ["codec field =", (a) => {
      const codec = pick(liveCodecs) as unknown as Record<string, unknown>;
      try {
        codec[pick(["elemSize", "zeroCopy", "name", "encode", "decode"])] = a[0];
      } catch (e) {
        if (!(e instanceof TypeError)) throw e;
      }
      using ch = new Channel(2, { codec: codec as never });
      ch.share();
      return [ch.trySend(pick([1, 1n, "s", new Uint8Array(3), {}])), ch.tryReceive()];
    }, () => [pick([1 << 20, 0, -1, true, "u64", boom, garbage()])]],
    ["codec.check", (a) => pick(liveCodecs).check(a[0]), g(1)],
    ["codec.pass", (a) => pick(liveCodecs).pass(a[0]), () => [garbage()]],
    // Explicit release of received bytes (the first call switches this isolate to releasable
    // chunk buffers): garbage, and values received here or from a live channel, in any order,
    // now and then twice (a RangeError) or after a transfer of their chunk's buffer.
    ["releaseBytes", (a) => releaseBytes(a[0] as never), () => [garbage()]],
    ["releaseBytes(received)", () => {
      using ch = new Channel<unknown>(4, { codec: pick([codecs.bytes, codecs.default]) });
      ch.share(); // native: pooled values are views of chunk buffers
      const n = 1 + Math.floor(rnd() * 3);
      for (let i = 0; i < n; i++) ch.trySend(new Uint8Array(pick([1, 100, 16_384, 20_000])));
      const got: unknown[] = [];
      for (let r = ch.tryReceive(); r.state === "ok"; r = ch.tryReceive()) got.push(r.value);
      const other = any(channels)?.tryReceive();
      if (other?.state === "ok") got.push(other.value);
      const out: unknown[] = [];
      while (got.length > 0) {
        const v = got.splice(Math.floor(rnd() * got.length), 1)[0];
        if (!(v instanceof Uint8Array)) continue;
        if (rnd() < 0.1) {
          try {
            const b = v.buffer as ArrayBuffer;
            structuredClone(b, { transfer: [b] });
          } catch {
            // Refused for a chunk buffer mapped before the switch (untransferable).
          }
        }
        out.push(releaseBytes(v));
        if (rnd() < 0.2) out.push(releaseBytes(v));
      }
      return out;
    }, g(0)],
    ["releaseUnavailable", () => releaseUnavailable(), g(0)],
    // The runtime.
    ["runtime", (a) => runtime(...(a as [])), () => rnd() < 0.5 ? [] : [garbage()]],
    ["runtime.cells", (a) => rt().cells(a[0] as never), () => [garbage()]],
    [
      "runtime.spawn",
      (a) => rt().spawn(a[0] as never, a[1] as never),
      () => {
        const name = builtinName();
        return [name, cellsFor(name)];
      },
    ],
    ["runtime.stats", () => rt().stats(), g(0)],
    ["runtime.isRunning", () => rt().isRunning, g(0)],
    ["runtime.drain", () => rnd() < 0.2 ? rt().drain() : undefined, g(0)],
    ["runtime.shutdown(garbage)", (a) => {
      // Only a wrong mode: a real shutdown comes in the second phase.
      if (a[0] === "cancel" || a[0] === "finish" || a[0] === undefined) return;
      return rt().shutdown(a[0] as never);
    }, () => [garbage()]],
    ["resolveNative", (a) => resolveNative(a[0] as never, a[1] as never), () => [
      pick(["libc.so.6", "/nonexistent.so", "", garbage(), "/etc/hostname"]),
      pick(["getpid", "", "no_such_symbol", garbage()]),
    ]],
    ["coroutineStats", () => coroutineStats(), g(0)],
    ["undeliveredLost", () => undeliveredLost(), g(0)],
    // Hand-driven coroutines.
    ["NativeCoroutine.create", (a) => {
      coros.push(NativeCoroutine.create(a[0] as never, a[1] as never));
      if (coros.length > 8) coros.shift()!.destroy();
    }, () => [pick(["fib", "yield-loop", "park-loop", garbage()]), garbage()]],
    ...(["resume", "unpark", "destroy", "state", "value", "handle", "destroyed"] as const).map((
      m,
    ): Op => [
      `coroutine.${m}`,
      () => {
        const co = any(coros);
        if (co === undefined) return;
        if (m === "destroy") return rnd() < 0.2 ? co.destroy() : undefined;
        const v = (co as unknown as Record<string, unknown>)[m];
        return typeof v === "function" ? v.call(co) : v;
      },
      g(0),
    ]),
    // Native scopes.
    ["NativeScope.create", (a) => {
      natives.push(NativeScope.create(a[0] as never));
      if (natives.length > 6) {
        watch("native scope dispose", natives.shift()![Symbol.asyncDispose]());
      }
    }, () => rnd() < 0.3 ? [] : [garbage()]],
    [
      "nativeScope.launch",
      (a) => any(natives)?.launch(a[0] as never, a[1] as never),
      () => {
        const name = builtinName();
        return [name, cellsFor(name)];
      },
    ],
    [
      "nativeScope.wait",
      (a) =>
        any(natives)?.wait(
          rnd() < 0.6 ? { signal: stop.signal, timeout: pick([0, 1, NaN, -1]) } : a[0] as never,
        ),
      () => [garbage()],
    ],
    ["nativeScope.cancel", () => rnd() < 0.3 ? any(natives)?.cancel() : undefined, g(0)],
    ["nativeScope.getters", () => {
      const s = any(natives);
      return s === undefined ? undefined : [s.handle, s.live, s.isCancelled];
    }, g(0)],
    [
      "nativeScope(scope)",
      (a) => nativeScope(a[0] as never),
      () => [rnd() < 0.5 ? any(scopes) ?? garbage() : garbage()],
    ],
    // Structured concurrency.
    ["createScope", (a) => {
      const opts = a[0];
      const sc = createScope(rnd() < 0.5 ? opts as never : { supervisor: true });
      scopes.push(sc);
      if (scopes.length > 6) watch("scope dispose", scopes.shift()![Symbol.asyncDispose]());
    }, () => {
      const r = rnd();
      if (r < 0.7) return [garbage()];
      // A parent: a scope, a deferred (each settles: the scopes are disposed, every deferred
      // completed), or garbage; a supervisor, sometimes.
      const parent = r < 0.85 ? any(scopes) : r < 0.95 ? any(deferreds) : garbage();
      return [rnd() < 0.3 ? { parent, supervisor: true } : { parent }];
    }],
    [
      "scope.launch",
      (a) => any(scopes)?.launch(a[0] as never, a[1] as never),
      () => [pick([() => 1, () => Promise.resolve(2), boom, garbage()]), garbage()],
    ],
    [
      "scope.async",
      (a) => any(scopes)?.async(a[0] as never, a[1] as never).await({ signal: stop.signal }),
      () => [pick([() => 1, () => Promise.resolve(2), boom, garbage()]), garbage()],
    ],
    ["scope.cancel", () => rnd() < 0.1 ? any(scopes)?.cancel(cause()) : undefined, g(0)],
    [
      "scope.join",
      (a) => any(scopes)?.join(a[0] as never),
      () => [pick([{ signal: stop.signal }, garbage()])],
    ],
    [
      "scope.invokeOnCompletion",
      (a) => any(scopes)?.invokeOnCompletion(a[0] as never),
      () => [pick([() => {}, garbage()])],
    ],
    ["scope getters", () => {
      const s = any(scopes);
      return s === undefined ? undefined : [
        s.state,
        s.isActive,
        s.isCancelled,
        s.isCompleted,
        s.children,
        s.context,
        s.signal,
        s.job,
        String(s),
      ];
    }, g(0)],
    [
      "coroutineScope",
      (a) => coroutineScope(a[0] as never, a[1] as never),
      () => [pick([() => 1, boom, garbage()]), garbage()],
    ],
    [
      "supervisorScope",
      (a) => supervisorScope(a[0] as never, a[1] as never),
      () => [pick([() => 1, boom, garbage()]), garbage()],
    ],
    [
      "nonCancellable",
      (a) => nonCancellable(a[0] as never, a[1] as never),
      () => [pick([() => 1, boom, garbage()]), garbage()],
    ],
    [
      "withTimeout",
      (a) => withTimeout(a[0] as never, a[1] as never, a[2] as never),
      () => [garbage(), pick([() => 1, boom, garbage()]), garbage()],
    ],
    [
      "withTimeoutOrNull",
      (a) => withTimeoutOrNull(a[0] as never, a[1] as never, a[2] as never),
      () => [garbage(), pick([() => 1, garbage()]), garbage()],
    ],
    ["delay", (a) => delay(a[0] as never, { signal: stop.signal }), () => [garbage()]],
    [
      "delay(options)",
      (a) => delay(a[0] as never, a[1] as never),
      () => [pick([0, -1, NaN, 1, "1"]), garbage()],
    ],
    [
      "produce",
      (a) => produce((any(scopes) ?? a[0]) as never, a[1] as never, a[2] as never),
      () => [garbage(), pick([() => 1, garbage()]), garbage()],
    ],
    ["actor", (a) => {
      const act = actor((any(scopes) ?? a[0]) as never, a[1] as never, a[2] as never);
      const r = act.trySend(garbage());
      watch("actor.send", act.send(garbage(), { signal: stop.signal }));
      act.close();
      return r;
    }, () => [garbage(), pick([() => 1, garbage()]), garbage()]],
    // Deferreds and contexts.
    ["new CompletableDeferred", (a) => {
      deferreds.push(new CompletableDeferred(a[0] as never));
      if (deferreds.length > 8) deferreds.shift()!.complete(0);
    }, () => {
      const r = rnd();
      if (r < 0.3) return [];
      if (r < 0.6) return [garbage()];
      // A parent: a scope, another deferred (each settles: the scopes are disposed, every
      // deferred completed), or garbage; a context, sometimes.
      const parent = r < 0.75 ? any(scopes) : r < 0.9 ? any(deferreds) : garbage();
      return [rnd() < 0.3 ? { parent, context: garbage() } : { parent }];
    }],
    ["deferred.complete", (a) => any(deferreds)?.complete(a[0]), g(1)],
    ["deferred.completeExceptionally", () => any(deferreds)?.completeExceptionally(cause()), g(0)],
    [
      "deferred.await",
      (a) => any(deferreds)?.await(rnd() < 0.6 ? { signal: stop.signal } : a[0] as never),
      g(1),
    ],
    [
      "deferred.join",
      (a) => any(deferreds)?.join(rnd() < 0.6 ? { signal: stop.signal } : a[0] as never),
      g(1),
    ],
    ["deferred.cancel", () => rnd() < 0.2 ? any(deferreds)?.cancel(cause()) : undefined, g(0)],
    [
      "deferred.invokeOnCompletion",
      (a) => any(deferreds)?.invokeOnCompletion(a[0] as never),
      () => [pick([() => {}, garbage()])],
    ],
    ["deferred.start", () => any(deferreds)?.start(), g(0)],
    ["createContextKey", (a) => createContextKey(a[0] as never), () => [garbage()]],
    [
      "Context.with",
      (a) => Context.empty.with(a[0] as never, a[1]),
      () => [pick([key, Deadline, CoroutineExceptionHandler, garbage()]), garbage()],
    ],
    ["Context.get/has/without", (a) => {
      const c = Context.empty.with(key, 1);
      return [
        c.get(a[0] as never),
        c.has(a[0] as never),
        c.without(a[0] as never),
        c.size,
        c.keys(),
        String(c),
      ];
    }, () => [pick([key, Deadline, garbage()])]],
    // The library.
    ["openLibrary", (a) => {
      const lib = openLibrary(a[0] as never);
      libs.push(lib);
      if (libs.length > 2) libs.shift()!.close();
    }, () => [pick([garbage(), {}])]],
    ["Library.symbols(op)", (a) => any(libs)?.symbols(a[0] as never), () => [garbage()]],
    // Internal (ffi/load.ts), no longer Library members: still no crash on garbage.
    ["onClose", (a) => onClose(any(libs) ?? (a[1] as never), a[0] as never), g(2)],
    ["beforeClose", (a) => beforeClose(any(libs) ?? (a[1] as never), a[0] as never), g(2)],
    ["Library.close", () => rnd() < 0.2 ? libs.pop()?.close() : undefined, g(0)],
  ];

  // Calls of a function or method that returns a Promise: they reject, never throw (bad
  // arguments and the caller's own throwing getters included), so `.catch()` and `await` see
  // every failure. Ops whose own code calls something synchronous first are not listed.
  const promised = new Set([
    "channel.send",
    "channel.receive",
    "channel.receiveCatching",
    "channel iterate",
    "channel asyncDispose",
    "select",
    "select(garbage)",
    "look-alike async member",
    "nativeScope.wait",
    "scope.join",
    "coroutineScope",
    "supervisorScope",
    "nonCancellable",
    "withTimeout",
    "withTimeoutOrNull",
    "delay",
    "delay(options)",
    "deferred.await",
    "deferred.join",
  ]);
  for (const name of promised) assert.ok(ops.some((o) => o[0] === name), name);
  const deadline = performance.now() + ms;
  let calls = 0, threw = 0;
  const step = async (phase: string, opsHere: Op[]) => {
    const [name, fn, mk] = pick(opsHere);
    const argv = mk();
    const what = `${phase} #${calls} ${name}(${argv.map((v) => show(v)).join(", ")})`;
    log(what);
    calls++;
    try {
      watch(what, fn(argv));
    } catch (e) {
      threw++;
      const c = complaint(e);
      if (c !== null) fail(what, c + (e instanceof Error ? `\n${e.stack}` : ""));
      else if (promised.has(name)) {
        fail(what, `threw synchronously (it returns a Promise: it must reject): ${show(e)}`);
      }
    }
    if (calls % 32 === 0) await new Promise((r) => setTimeout(r, 0));
  };

  // Phase 1: everything, with a running runtime and an open library.
  while (performance.now() < deadline) {
    await step("open", ops);
    checkControl(`after call #${calls - 1}`);
  }

  // Phase 2: after a runtime shutdown, every call again (the old Runtime's too).
  const oldRt = await runtimeNow();
  await oldRt.shutdown();
  for (let i = 0; i < 200; i++) {
    const [name, fn, mk] = pick(ops);
    if (name.startsWith("runtime") || name === "NativeScope.create") {
      const what = `after shutdown #${calls++} old ${name}`;
      log(what);
      try {
        if (name === "runtime.spawn") watch(what, oldRt.spawn(...(mk() as [never, never])));
        else if (name === "runtime.drain") watch(what, oldRt.drain());
        else if (name === "runtime.stats") oldRt.stats();
        else if (name === "runtime.cells") oldRt.cells(mk()[0] as never);
        else fn(mk());
      } catch (e) {
        const c = complaint(e);
        if (c !== null) fail(what, c);
      }
    } else await step("after shutdown", ops);
    checkControl(`after call #${calls - 1}`);
  }

  // Phase 3: after closeLibrary(), every call on the old objects and new ones.
  stop.abort();
  kc.closeLibrary();
  closing = true;
  for (let i = 0; i < 200; i++) await step("after close", ops);
  // Reopened by the calls; a fresh control channel must work.
  using fresh = new Channel<number>(2, { codec: codecs.f64 });
  assert.equal(fresh.trySend(7).state, "ok");
  assert.deepEqual(fresh.tryReceive(), { state: "ok", value: 7 });

  // Everything ends: every pending promise settles.
  for (const d of deferreds) d.complete(0);
  for (const s of scopes) watch("scope dispose", s[Symbol.asyncDispose]());
  for (const s of natives) watch("native scope dispose", s[Symbol.asyncDispose]());
  for (const ch of channels) {
    try {
      ch.cancel();
    } catch { /* closed library: its own error */ }
    ch[Symbol.dispose]();
  }
  for (const co of coros) co.destroy();
  for (const lib of libs) lib.close();
  // Ends the built-ins still sleeping (a channel handle in their cells is days of sleep), and
  // with them the drains and native-scope waits that wait for them.
  await (await runtimeNow()).shutdown();
  const end = performance.now() + 10_000;
  while (pending.size > 0 && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  if (pending.size > 0) {
    fail("end", `never settled: ${[...pending.values()].slice(0, 5).join("\n")}`);
  }
  // Every coroutine the run made is gone: destroyed, or freed by the shutdown.
  const liveAfter = coroutineStats().live;
  if (liveAfter !== liveBefore) fail("end", `${liveAfter} coroutines live, ${liveBefore} before`);
  if (failures.length > 0) {
    log(`fuzz failed (KCORO_FUZZ_SEED=${seed}):\n${failures.join("\n")}`);
    Deno.exit(1);
  }
  log(`fuzz ok seed ${seed}: ${calls} calls, ${threw} threw`);
  Deno.exit(0);
}

if (import.meta.main) {
  await child().catch((e) => {
    log(`FAIL the fuzzer itself threw: ${e instanceof Error ? e.stack : String(e)}`);
    Deno.exit(1);
  });
}

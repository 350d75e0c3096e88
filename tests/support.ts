// Helpers shared by the Deno tests (not a test file itself).

import assert from "node:assert/strict";
import {
  CancellationError,
  Channel,
  type Codec,
  type CodecName,
  codecs,
  CompletableDeferred,
  type CoroutineScope,
  coroutineScope,
  type Job,
  library,
  runtime,
  type SharedChannel,
} from "../mod.ts";
import type { Bridge } from "../src/bridge.ts";
import { giveSlot, takeSlot } from "../src/codec.ts";
import { symbolsToReleaseOf } from "../ffi/load.ts";

/**
 * Asserts that `actual` holds `expected`'s items, in order, each the same object (`Object.is`).
 * For lists of jobs, context keys or errors, which `assert.deepEqual` compares by their fields:
 * any two jobs of one scope, or two keys of one name, are deep-equal. A mismatch shows each item
 * as the index it has in `expected` (`#i`), or inspected when it is not there.
 */
export function assertSameItems(
  actual: readonly unknown[] | undefined,
  expected: readonly unknown[],
  message?: string,
): void {
  assert.ok(Array.isArray(actual), `${message ?? "items"}: not a list, received ${actual}`);
  const label = (x: unknown, i: number) => {
    if (i < expected.length && Object.is(x, expected[i])) return `#${i}`;
    const at = expected.findIndex((e) => Object.is(e, x));
    return at >= 0 ? `#${at}` : `not expected: ${Deno.inspect(x)}`;
  };
  assert.deepEqual(actual.map(label), expected.map((_, i) => `#${i}`), message);
}

/** Rejects with the signal's reason when it aborts: a task that runs until cancelled. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/**
 * A task busy with nothing else (not sending or receiving) until `signal` aborts: hands the
 * reason to `record` and throws it, as a block does when its task is cancelled.
 */
export async function busyUntilAborted(
  signal: AbortSignal,
  record: (reason: unknown) => void,
): Promise<never> {
  try {
    return await untilAborted(signal);
  } catch (e) {
    record(e);
    throw e;
  }
}

/**
 * Nests `depth` coroutineScopes under a root scope, each through its task's `signal` and
 * `context` as README says to nest a scope in a task (past 32 levels a scope's follow cancel
 * waits in a queue until the cancels above it return). `onBlock(s)` runs first in level `n`'s
 * block; `onParentAbort(s, n)` then runs for its scope `s` from a listener on the signal `s`
 * follows, added after `s`'s own follow listener (added when the scope was made). The innermost
 * task runs `leaf` (default: waits for its abort). Answers once every level has started: the
 * root, to cancel, and how it ends ("completed" or the name of its error).
 */
export async function nestThroughSignals(
  depth: number,
  onParentAbort: (s: CoroutineScope, n: number) => void,
  { onBlock, leaf = (task) => untilAborted(task.signal) }: {
    onBlock?: (s: CoroutineScope) => void;
    leaf?: (task: CoroutineScope) => Promise<void>;
  } = {},
): Promise<{ root: CoroutineScope; outcome: Promise<string> }> {
  let reached = 0;
  const nest = (task: CoroutineScope, n: number): Promise<void> => {
    reached++;
    if (n === 0) return leaf(task);
    const signal = task.signal;
    const inner = (s: CoroutineScope) => {
      onBlock?.(s);
      signal.addEventListener("abort", () => onParentAbort(s, n));
      return nest(s, n - 1);
    };
    return coroutineScope(inner, { signal, context: task.context });
  };
  let root!: CoroutineScope;
  const outcome = coroutineScope((s) => {
    root = s;
    return nest(s, depth);
  }).then(() => "completed", (e: Error) => e.name);
  await until(() => reached === depth + 1, "every level to start");
  return { root, outcome };
}

const root = new URL("../", import.meta.url).pathname;

/**
 * Runs `code` with `deno eval` in a child process at the repository root (so it can import
 * "./mod.ts") and reports how it ended and how long it took: for tests that a process exits
 * by itself.
 */
export async function evalScript(
  code: string,
  options: { v8Flags?: string[]; timeoutMs?: number } = {},
): Promise<{ code: number; ms: number; stderr: string; stdout: string; signal: string | null }> {
  const t0 = performance.now();
  const flags = options.v8Flags ? [`--v8-flags=${options.v8Flags.join(",")}`] : [];
  // Killed (SIGTERM) at the bound: a process that does not exit by itself fails the test
  // instead of hanging it.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", ...flags, code],
    env: { NO_COLOR: "1" },
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
  }).output();
  return {
    code: out.code,
    ms: performance.now() - t0,
    stderr: new TextDecoder().decode(out.stderr),
    stdout: new TextDecoder().decode(out.stdout),
    signal: out.signal,
  };
}

/**
 * How a child process (`evalScript`) reports a revoked Proxy that kcoro is handed to report (a
 * hook's or a Disposable's throw): `code` runs after `imports`, with `r` a revoked
 * `Proxy.revocable({}, {})` and every "error" event's error collected (its default prevented),
 * and sets `out` to what the test wants back. The script then reports an Error of its own, so
 * that `last` says whether later reports still reach their listeners. Answers `out`, whether the
 * first report was a TypeError carrying `r.proxy` (`carried`), its message, the last report's
 * message and the number of reports.
 */
export async function revokedProxyReports(imports: string, code: string): Promise<{
  out: unknown;
  carried: boolean;
  message: string | undefined;
  last: string | undefined;
  count: number;
}> {
  const res = await evalScript(`
    ${imports}
    const reported = [];
    addEventListener("error", (e) => { reported.push(e.error); e.preventDefault(); });
    const r = Proxy.revocable({}, {});
    r.revoke();
    let out;
    ${code}
    reportError(new Error("a later report"));
    console.log(JSON.stringify({
      out,
      carried: reported[0] instanceof TypeError && reported[0].cause === r.proxy,
      message: reported[0]?.message,
      last: reported.at(-1)?.message,
      count: reported.length,
    }));
  `);
  if (res.code !== 0) throw new Error(`the script failed (${res.code}): ${res.stderr}`);
  return JSON.parse(res.stdout);
}

/** What kcoro reports in place of a Proxy it was handed to report (`revokedProxyReports`). */
export const PROXY_REPORTED =
  "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy";

/** A promise's state without waiting for it: settles pending microtasks first. */
export async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => done = true, () => done = true);
  for (let i = 0; i < 10; i++) await Promise.resolve();
  return done;
}

/**
 * Waits (bounded) until `cond` holds, yielding to the event loop. `what` names what it waits
 * for; a function is called only at the timeout, so the error can report the state then.
 */
export async function until(
  cond: () => boolean,
  what: string | (() => string),
  ms = 20_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === "function" ? what() : what}`);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Resolves once every timer of at most `ms` set before the call (or by the microtasks pending
 * then) has fired, and the microtasks its callback queued have run: timers fire by deadline,
 * and those of one deadline in the order they were set, so one of `ms` set after them fires
 * after each. For asserting what a loop paced by such timers (a drain's pauses, 50 ms at most)
 * does next, or that it does nothing more, with no sleep guessed long enough: what it would do
 * after its pending pause has been done by then.
 */
export async function afterTimers(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, 0)); // the timers the pending microtasks set are set
  await new Promise((r) => setTimeout(r, ms));
  await new Promise((r) => setTimeout(r, 0)); // the microtasks of those timers' callbacks ran
}

/**
 * Runs the collector until `done` holds (bounded as {@linkcode until}, whose error it throws),
 * for a script run with `--expose-gc` (a child script of {@linkcode evalScript}: it imports this
 * from "./tests/support.ts"). Each collection runs in a task of its own and `done` in the next:
 * finalizers run between tasks, and a WeakRef's `deref()` keeps its target alive to the end of
 * the task it ran in, so a collection in the same task as a `deref()` could not collect it.
 */
export async function collectUntil(
  done: () => boolean,
  what: string | (() => string),
  ms = 20_000,
): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) {
    throw new TypeError(
      "Cannot collectUntil: the collector is not exposed (run with --expose-gc), received " +
        "no globalThis.gc",
    );
  }
  let collected = false; // a collection, then `done` a task later, then the next collection
  await until(
    () => {
      if (!collected) gc();
      collected = !collected;
      return !collected && done();
    },
    what,
    ms,
  );
}

/**
 * How long a test waits for a Worker to start (its first message). `deno test` type-checks a
 * Worker's module when the Worker is created, and with a cold DENO_DIR (a clean clone's, as
 * CI's) that check is most of the start: 19 s on a loaded 2-CPU machine for the stress test's
 * two Workers (which check their module at once), and over 20 s, its old bound, pinned to one
 * CPU. What the Workers do once started keeps the test's own, shorter bounds.
 */
export const workerStartMs = 120_000;

/** Rejects if `p` has not settled within `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * A Worker's messages in whichever order they come: `saying(pred)` resolves with (and takes) the
 * first message `pred` accepts, one already come or the next that does. Sets `w.onmessage`.
 */
export function workerMessages(w: Worker): (pred: (m: unknown) => boolean) => Promise<unknown> {
  const said: unknown[] = [];
  let wake = () => {};
  w.onmessage = (e) => {
    said.push(e.data);
    wake();
  };
  const saying = (pred: (m: unknown) => boolean): Promise<unknown> => {
    const i = said.findIndex(pred);
    if (i >= 0) return Promise.resolve(said.splice(i, 1)[0]);
    return new Promise((r) =>
      wake = () => {
        if (said.some(pred)) r(saying(pred));
      }
    );
  };
  return saying;
}

/**
 * Throws unless `e` is the CancellationError a copy answers once the isolate running a channel's
 * producer or actor ended while it ran (KC_WATCH_OWNED: src/produce.ts, src/actor.ts), naming
 * `role`, as the copy's `share()` object said (`SharedChannel.role`; none: "producer or actor").
 */
export function assertOwnerGone(
  what: string,
  e: unknown,
  role: "producer" | "actor" | "producer or actor",
): void {
  const ownerGone = `Channel was cancelled: the isolate running its ${role} ended (a Worker ` +
    "terminated or closed, or its library closed) while it ran";
  if (!(e instanceof CancellationError) || e.message !== ownerGone) {
    throw new Error(
      `${what}: not the owner-gone CancellationError: ${(e as Error)?.stack ?? String(e)}`,
    );
  }
}

/** A small seeded PRNG (mulberry32): a stress test replays the same schedule. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Shuts the process-wide native scheduler down (starting one first if none runs: harmless).
 * Every test file runs in one process, and a scheduler that one file leaves running, started
 * with the default of one worker per CPU, made a later `runtime({ workers: 2 })` a RangeError
 * on every machine whose CPU count is not 2. Each file that starts one ends with this.
 */
export async function shutdownScheduler(): Promise<void> {
  await runtime().shutdown();
}

/**
 * Catches what `reportError` reports (the global "error" event, kept from ending the process)
 * until disposed: `using reported = catchReported();`, then read `reported.errors`.
 */
export function catchReported(): { errors: unknown[] } & Disposable {
  const errors: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    errors.push(e.error);
    e.preventDefault();
  };
  globalThis.addEventListener("error", onError);
  return {
    errors,
    [Symbol.dispose]: () => globalThis.removeEventListener("error", onError),
  };
}

/**
 * Slots `scanChannels` asks about: the first 16 chunks of 4096 (zig-src/handle.zig). The table
 * has 2^20 - 1 slots, and all of them at 511 generations each take ~3 s a call at ~6 ns an FFI
 * call, ~0.2 s these do. A fresh slot is taken only while 1,024 or fewer are free (else a free
 * one is reused), so slots past this bound are handed out only to a process that held over
 * ~64,000 channels at once.
 */
export const CHANNEL_SLOTS_SCANNED = 16 * 4096;

/**
 * Waits (bounded by `ms`) until `liveChannels()` stayed the same for `quietMs` of looks, and
 * answers that count: a terminated Worker's or a collected channel's handles go a little after
 * (2 to 40 ms after a Worker's terminate on a loaded host), so a baseline is read once they
 * stopped moving. Before, two looks in a row that agreed: while each look was a scan of 33M
 * calls (a quarter second or more), that was as long; once `liveChannels` was one call, two looks
 * 1 ms apart, and a baseline read just after a Worker's terminate counted its handles.
 */
export async function steadyChannels(ms = 60_000, quietMs = 250): Promise<number> {
  let now = liveChannels(), since = performance.now();
  await until(
    () => {
      const n = liveChannels(), t = performance.now();
      if (n !== now) [now, since] = [n, t];
      return t - since >= quietMs;
    },
    () => `a steady channel count (${now} for ${Math.round(performance.now() - since)} ms)`,
    ms,
  );
  return now;
}

/**
 * Live channel handles of the process: the library's own count (kc_coro_stats' fifth figure,
 * kept where the handle table hands a handle out and frees it), one call. Before, every look was
 * {@linkcode scanChannels}'s 33M calls (a quarter second on an idle host, seconds on a loaded
 * one), and a loaded host's `until` loops got so few looks that leak_test's Worker churn timed
 * out; leak_test checks that the two agree.
 */
export function liveChannels(): number {
  const out = new BigUint64Array(5);
  assert.equal(symbolsToReleaseOf(library()).kc_coro_stats(out, 5), 5);
  return Number(out[4]);
}

/**
 * Live channel handles counted the slow way, without the library's count: every slot below
 * {@linkcode CHANNEL_SLOTS_SCANNED} asked for its status at every generation (kind 2: see
 * zig-src/handle.zig, `[kind:3][generation:9][index:20]`; a live handle answers >= 0).
 */
export function scanChannels(): number {
  const sym = library().symbols("test");
  let live = 0;
  for (let gen = 1; gen < 512; gen++) {
    const base = (2 << 29) | (gen << 20);
    for (let index = 1; index < CHANNEL_SLOTS_SCANNED; index++) {
      if (sym.kc_chan_status((base | index) >>> 0) >= 0) live++;
    }
  }
  return live;
}

/**
 * Blocks of cells the library holds now (`kc_cells_alloc`'s not yet freed: kc_coro_stats'
 * fourth figure, process-wide): what tells a `runtime().cells` block freed from one still live.
 */
export function liveCells(): bigint {
  const out = new BigUint64Array(4);
  assert.equal(symbolsToReleaseOf(library()).kc_coro_stats(out, 4), 4);
  return out[3];
}

/**
 * Wraps the functions `names` of `sym` (the library's internal symbols table, which every call
 * site reads: `librarySymbols(lib, op)` of ffi/load.ts; `lib.symbols(op)`'s is frozen) so that
 * each call is shown to `onCall` (its name and arguments) before it runs; the
 * Disposable puts the real functions back.
 */
export function spyCalls(
  sym: object,
  names: readonly string[],
  onCall: (name: string, args: readonly unknown[]) => void,
): Disposable {
  const table = sym as Record<string, (...args: unknown[]) => unknown>;
  const real = names.map((n) => table[n]);
  names.forEach((n, i) => {
    table[n] = (...args: unknown[]) => {
      onCall(n, args);
      return real[i](...args);
    };
  });
  return { [Symbol.dispose]: () => names.forEach((n, i) => table[n] = real[i]) };
}

/**
 * Wraps `bridge.settleWhere` so that its first call destroys this isolate's completion ring
 * (kc_ring_destroy, as a library close does) before it drains: that drain, and each after it,
 * fails, as where the ring is lost between a native completion and the settle of its record.
 * Answers a count of the calls so far.
 */
export function destroyRingAtFirstDrain(bridge: Bridge): () => number {
  const settleWhere = bridge.settleWhere.bind(bridge);
  let drains = 0;
  bridge.settleWhere = (pick, on, sends) => {
    if (drains++ === 0) library().symbols("test").kc_ring_destroy(bridge.ring);
    return settleWhere(pick, on, sends);
  };
  return () => drains;
}

/**
 * `bridge.pending` now and `outcome()` three microtasks later (no ring wait returns meanwhile:
 * what settled by then settled within the turn), as JSON `{"pending":…,"outcome":…}`, answered
 * once `op` has settled (10 s at most, named `what`).
 */
export async function afterMicrotasks(
  bridge: Bridge,
  outcome: () => unknown,
  op: Promise<unknown>,
  what: string,
): Promise<string> {
  const pending = bridge.pending;
  for (let i = 0; i < 3; i++) await null;
  const now = JSON.stringify({ pending, outcome: outcome() });
  await within(op, 10_000, what);
  return now;
}

/**
 * Ends `ch` (`end`: its close or its cancel) and aborts `ac`, whose signal a wait on `ch` was
 * given (`wait`), in one turn, the end first where `endFirst`: answers how `wait` settled and
 * the abort's reason (an Error naming `what`). The end comes through the channel's own method,
 * or `natively` through the C ABI (kc_chan_close, kc_chan_cancel: asserted to end it), as
 * another thread's or isolate's does.
 */
export async function endAndAbort<T>(
  ch: Channel<T>,
  { end, natively = false, endFirst }: {
    end: "close" | "cancel";
    natively?: boolean;
    endFirst: boolean;
  },
  ac: AbortController,
  wait: Promise<unknown>,
  what: string,
): Promise<{ got: PromiseSettledResult<unknown>; reason: Error }> {
  const reason = new Error(`stop: ${what}`);
  const sym = library().symbols("test");
  const endIt = () => {
    if (!natively) ch[end]();
    else if (end === "close") assert.equal(sym.kc_chan_close(ch.handle), 1, what);
    else assert.equal(sym.kc_chan_cancel(ch.handle), 0, what);
  };
  if (endFirst) endIt();
  ac.abort(reason);
  if (!endFirst) endIt();
  const [got] = await Promise.allSettled([wait]);
  return { got, reason };
}

/**
 * Makes a channel natively (kc_chan_create, as C code or another isolate's creator does: no
 * creator in this isolate) for `codec`'s values, of `capacity`: its handle.
 */
export function createNative(codec: Codec<unknown> = codecs.f64, capacity = 4): number {
  const out = new Uint32Array(1);
  const flags = codec.zeroCopy ? 2 : 0; // KC_CHAN_ZERO_COPY
  assert.equal(
    library().symbols("test").kc_chan_create(codec.elemSize, capacity, 0, flags, out),
    0,
  );
  return out[0];
}

/**
 * Objects made by `make` (channels: `handleOf` gives each one's handle value) that have the
 * values `handles`, destroyed channels' handles, by value: what a later channel gets once its
 * slot's 9-bit generation wraps. Slots are reused oldest first, behind 1,024 free ones, so that
 * takes ~523,000 channels: all but the last ~1,000 are made and destroyed natively here
 * (kc_chan_create, kc_chan_destroy), a few microseconds each where a `Channel` made and disposed
 * took ~35 (15 to 21 s a test). Each slot is so brought to one generation short of its value,
 * the channel in it kept until every slot is; those are destroyed, and `make` is called until
 * each value comes (about one round of the free slots), each object made that has none of them
 * disposed. The slots and generations are the table's own: the wrap is the one a program meets.
 */
export function channelsAt<C extends Disposable>(
  handles: number[],
  make: () => C,
  handleOf: (c: C) => number,
): Map<number, C> {
  const sym = library().symbols("test");
  const out = new Uint32Array(1);
  // A handle is [kind:3][generation:9][index:20] (zig-src/handle.zig); generations skip 0.
  const index = (h: number) => h & 0xfffff;
  const gen = (h: number) => (h >>> 20) & 0x1ff;
  const before = (h: number) => gen(h) === 1 ? 511 : gen(h) - 1;
  const short = new Map<number, number>(); // value → the native channel one generation short
  for (let i = 0; i < 1 << 21 && short.size < handles.length; i++) {
    assert.equal(sym.kc_chan_create(8, 1, 0, 0, out), 0);
    const h = out[0];
    const value = handles.find((v) => index(v) === index(h) && !short.has(v));
    if (value !== undefined && gen(h) === before(value)) short.set(value, h);
    else assert.equal(sym.kc_chan_destroy(h), 0);
  }
  assert.equal(short.size, handles.length, "slots brought to a generation short of the values");
  for (const h of short.values()) assert.equal(sym.kc_chan_destroy(h), 0);
  const got = new Map<number, C>();
  for (let i = 0; i < 1 << 16 && got.size < handles.length; i++) {
    const c = make();
    const h = handleOf(c);
    if (handles.includes(h) && !got.has(h)) got.set(h, c);
    else c[Symbol.dispose]();
  }
  assert.equal(got.size, handles.length, "objects made got the handles' values");
  return got;
}

/**
 * A share object built by hand for the channel at `handle` (`codec`'s values, of `capacity`),
 * as native code that made it would hand it over: Channel.from's input.
 */
export function describeNative<T>(
  handle: number,
  codec: Codec<unknown> = codecs.f64,
  capacity = 4,
): SharedChannel<T> {
  return {
    kind: "kcoro.channel",
    version: 1,
    handle,
    elemSize: codec.elemSize,
    zeroCopy: codec.zeroCopy,
    codec: codec.name as CodecName,
    capacity,
  };
}

/**
 * A channel C code made untyped (no codec tag: {@linkcode createNative} for codecs.default), of
 * `capacity`, to write under two codecs and read under one (a value the other codec wrote fails
 * to decode): `strings` and `other` are `Channel.from` copies of it under codecs.string and
 * codecs.default, and `open(codec)` opens one more. Its dispose disposes the copies it opened,
 * the last first, and then destroys the channel.
 */
export function untypedNative(capacity = 4): {
  handle: number;
  strings: Channel<unknown>;
  other: Channel<unknown>;
  open: (codec: "default" | "string") => Channel<unknown>;
} & Disposable {
  const handle = createNative(codecs.default, capacity); // untyped: no tag (bits 8..15) given
  const opened: Channel<unknown>[] = [];
  const open = (codec: "default" | "string") => {
    const ch = Channel.from<unknown>(describeNative(handle, codecs[codec], capacity));
    opened.push(ch);
    return ch;
  };
  return {
    handle,
    strings: open("string"),
    other: open("default"),
    open,
    [Symbol.dispose]: () => {
      for (const ch of opened.reverse()) ch[Symbol.dispose]();
      library().symbols("test").kc_chan_destroy(handle);
    },
  };
}

/**
 * A Proxy of an array whose `length` trap answers `length` and whose `get` trap answers 0 for
 * every index (`has` too): `reads` counts the elements read.
 */
export function lengthClaimingProxy(length: unknown): { proxy: unknown[]; reads: () => number } {
  let reads = 0;
  const proxy = new Proxy([1, 2, 3], {
    get(target, key, receiver) {
      if (key === "length") return length;
      if (typeof key === "string" && /^\d+$/.test(key)) {
        // A packer that loops to the claimed length (1e20: until memory ran out) stops here.
        if (++reads > 1_000) throw new Error("read past the bound");
        return 0;
      }
      return Reflect.get(target, key, receiver);
    },
    has: () => true,
  });
  return { proxy, reads: () => reads };
}

/**
 * A Job of the caller's own (an object of a Job's shape, not one of kcoro's): active and never
 * started, with the given `invokeOnCompletion`, through which a select's onJoin arms its handler.
 */
export function callersJob(invokeOnCompletion: (handler: () => void) => unknown): Job {
  const job = { state: "active", isCompleted: false, start: () => false, invokeOnCompletion };
  return job as unknown as Job;
}

/**
 * A `callersJob` whose arming of a select's handler first runs `act` (the caller's code that
 * completes one of the select's channel clauses natively: a send, a receive or a cancel of this
 * isolate meeting the select queued natively), then the handler, which loses to that clause
 * (KC_EBUSY) and leaves the record, still to come, to settle the select. Its Disposable does
 * nothing.
 */
export function jobArmedAfter(act: () => void): Job {
  return callersJob((handler) => {
    act();
    handler();
    return { [Symbol.dispose]() {} };
  });
}

/**
 * A native try-send of `value` (encoded by `codec`, codecs.f64's by default) to the channel
 * `handle` (`kc_chan_try_send`), as
 * another thread or isolate sends: not through this isolate's Channel objects, so a wait of this
 * isolate it completes (a receive, a select's receive clause) settles when the ring drains, in a
 * later turn, not before this returns, as a send of this isolate settles it. Its status (0:
 * sent). The channel must be outside (its `handle` read, or shared): the ring's wait then
 * drains the record.
 */
export function trySendNatively<T = number>(
  handle: number,
  value: T,
  codec: Codec<T> = codecs.f64 as unknown as Codec<T>,
): number {
  const sym = library().symbols("test");
  const slot = takeSlot();
  try {
    codec.encode(value, slot, sym);
    const rc = sym.kc_chan_try_send(handle, slot.ptr, codec.elemSize);
    if (rc !== 0) codec.discard(slot, sym); // not sent: its native buffer, if any, is freed
    return rc;
  } finally {
    giveSlot(slot);
  }
}

/**
 * A `jobArmedAfter` a send of `value` to `ch`, asserted to be taken: by the select's receive
 * clause on `ch`, queued natively, which so completes as the job's clause is armed. The send is
 * native (`trySendNatively`, as another thread's), so its record is still to come when the job
 * loses: a send of this isolate would settle the select before it returned. `ch`'s handle is
 * read now, before the select is made (the channel goes outside).
 */
export function jobSendingAsArmed(ch: Channel<number>, value: number): Job {
  const handle = ch.handle;
  return jobArmedAfter(() =>
    assert.equal(trySendNatively(handle, value), 0, "a send as the job is armed is taken")
  );
}

/**
 * How many abort listeners `signal` has, read from the engine's own record (the symbol-keyed
 * property a listen makes on a target): kcoro listens through EventTarget's own methods,
 * captured as it loads, so a spy on them would see nothing.
 */
export function abortListeners(signal: AbortSignal): number {
  const target = new EventTarget();
  const before = new Set(Object.getOwnPropertySymbols(target));
  target.addEventListener("x", () => {});
  const [key] = Object.getOwnPropertySymbols(target).filter((s) => !before.has(s));
  const record = (signal as unknown as Record<symbol, { listeners?: Record<string, unknown[]> }>)[
    key
  ];
  return record?.listeners?.abort?.length ?? 0;
}

/**
 * Asserts that `call(self)` ends in a TypeError with `message`: thrown where `how` is
 * "throws", otherwise returned as a rejected promise (never thrown). `where` names the case.
 */
export async function assertNotThisError(
  how: "throws" | "rejects",
  call: (self: unknown) => unknown,
  self: unknown,
  message: string,
  where: string,
): Promise<void> {
  const check = (e: unknown) => {
    assert.ok(e instanceof TypeError, `${where}: ${e}`);
    assert.equal(e.message, message, where);
    return true;
  };
  if (how === "throws") {
    assert.throws(() => call(self), check);
    return;
  }
  let p: unknown;
  assert.doesNotThrow(() => p = call(self), where); // rejected, never thrown
  await assert.rejects(p as Promise<unknown>, check);
}

/**
 * Asserts that each of `calls`, made on each of `fakes` (a value and how the message describes
 * it), throws "Cannot <op>: this is not <brand>, received <described>" as a TypeError.
 */
export function assertThrowsOnFakes(
  calls: [string, (self: unknown) => unknown][],
  fakes: [unknown, string][],
  brand: string,
): void {
  for (const [self, described] of fakes) {
    for (const [op, call] of calls) {
      assert.throws(() => call(self), {
        name: "TypeError",
        message: `Cannot ${op}: this is not ${brand}, received ${described}`,
      });
    }
  }
}

/** A public member of JobSupport's prototype that `withJobMembersRedefined` redefines. */
export type JobMember =
  | "cancel"
  | "invokeOnCompletion"
  | "start"
  | "join"
  | "await"
  | JobGetter;
/** The getters of JobSupport's prototype that `withJobMembersRedefined` redefines as getters. */
type JobGetter = "context" | "state" | "isActive" | "isCompleted" | "isCancelled" | "signal";
/** Every member `withJobMembersRedefined` can redefine: kcoro's own calls must run none. */
export const JOB_MEMBERS: readonly JobMember[] = [
  "cancel",
  "invokeOnCompletion",
  "start",
  "join",
  "await",
  "context",
  "state",
  "isActive",
  "isCompleted",
  "isCancelled",
  "signal",
];
const JOB_GETTERS: ReadonlySet<string> = new Set<JobGetter>([
  "context",
  "state",
  "isActive",
  "isCompleted",
  "isCancelled",
  "signal",
]);

/**
 * Runs `fn` with `names` redefined on JobSupport's prototype (every job's, reached from
 * `CompletableDeferred.prototype`, as a caller reaches it from any job) as members that record
 * their call and throw (`context`, `state`, `signal` and the `is` ones as getters), restored in `finally` however `fn` ends. kcoro's
 * own calls on its jobs (a launch's start, a scope's cancel, a producer's end) must run none: the
 * test asserts `calls` is empty. What `fn` returns or throws is handed on (its promise awaited
 * before the restore); code of the test's own inside `fn` must not call a redefined member.
 */
export async function withJobMembersRedefined<T>(
  names: readonly JobMember[],
  fn: () => T | Promise<T>,
): Promise<{ value: T; calls: string[] }> {
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const descs = names.map((n) => Object.getOwnPropertyDescriptor(proto, n)!);
  const calls: string[] = [];
  const steer = (name: JobMember) => () => {
    calls.push(name);
    throw new Error(`the ${name} redefined on JobSupport.prototype ran`);
  };
  try {
    for (const name of names) {
      Object.defineProperty(
        proto,
        name,
        JOB_GETTERS.has(name)
          ? { configurable: true, get: steer(name) }
          : { configurable: true, writable: true, value: steer(name) },
      );
    }
    return { value: await fn(), calls };
  } finally {
    names.forEach((n, i) => Object.defineProperty(proto, n, descs[i]));
  }
}

/**
 * Runs `f` while Array.prototype has a getter and a setter at indexes 0 to 3 that record their
 * calls (in a string: an array's own elements would meet them); answers what ran and `f`'s value.
 */
export function withIndexAccessors<T>(f: () => T): [string, T] {
  let ran = "";
  const elements = Array.prototype as unknown as Record<number, unknown>;
  for (let i = 0; i < 4; i++) {
    Object.defineProperty(elements, i, {
      configurable: true,
      get() {
        ran += `get ${i};`;
        return "planted";
      },
      set(_: unknown) {
        ran += `set ${i};`;
      },
    });
  }
  let got: T;
  try {
    got = f();
  } finally {
    for (let i = 0; i < 4; i++) delete elements[i];
  }
  return [ran, got];
}

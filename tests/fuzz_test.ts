// Garbage in, named errors out: seeded random calls of the public Channel and select API with
// wrong types, out-of-range numbers, forged `share()` objects, hostile objects (throwing
// getters, proxies, revoked proxies) and disposed channels. Every call must either work or fail
// with a named error (a TypeError or RangeError worded "Cannot <op>: ...", a KcoroError, a
// closed or cancellation error, or the caller's own exception), the process must not crash, and
// a channel the fuzzer never holds must come out intact.
import assert from "node:assert/strict";
import { prng, shutdownScheduler, until } from "./support.ts";
import {
  type Actor,
  actor,
  CancellationError,
  Channel,
  ClosedReceiveError,
  ClosedSendError,
  type Codec,
  codecs,
  CompletableDeferred,
  Context,
  coroutineScope,
  createContextKey,
  createScope,
  delay,
  KcoroError,
  NativeCoroutine,
  NativeScope,
  nonCancellable,
  produce,
  runtime,
  type Scope,
  select,
  type SelectBuilder,
  supervisorScope,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";

/** Thrown by the caller's own code (a getter, a proxy trap, a callback). */
class CallerError extends Error {}

/** Close and cancel causes the fuzzer gave: a later operation rethrows its channel's cause. */
const causes = new Set<unknown>();

/** What a bad call may throw or reject with. */
function named(e: unknown): boolean {
  if (causes.has(e)) return true; // the caller's own (first: it may be a revoked proxy)
  if (e instanceof CallerError) return true;
  // A revoked proxy throws the engine's TypeError at any touch: the caller's object did.
  if (e instanceof TypeError && /on a proxy that has been revoked$/.test(e.message)) return true;
  if (e instanceof DOMException && e.name === "AbortError") return true; // a signal's reason
  if (e instanceof KcoroError || e instanceof CancellationError) return true;
  if (e instanceof ClosedSendError || e instanceof ClosedReceiveError) return true;
  // Ours say "Cannot <op>: <reason>, received <x>"; an engine TypeError from a bug inside
  // ("Cannot read properties of undefined (reading ...)") has no colon after the operation.
  return (e instanceof TypeError || e instanceof RangeError) && /^Cannot [\w .]+: /.test(e.message);
}

function hostile(): unknown[] {
  const boom = () => {
    throw new CallerError("the caller's getter");
  };
  const trap = () => {
    throw new CallerError("the caller's proxy");
  };
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  return [
    Object.defineProperty({}, "capacity", { get: boom, enumerable: true }),
    Object.defineProperty({}, "codec", { get: boom, enumerable: true }),
    Object.defineProperty({}, "signal", { get: boom, enumerable: true }),
    Object.defineProperty({}, "kind", { get: boom, enumerable: true }),
    new Proxy({}, { get: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap }),
    revoked,
    Object.create(null),
    { [Symbol.toPrimitive]: boom, toString: boom, valueOf: boom },
  ];
}

function primitives(): unknown[] {
  return [
    undefined,
    null,
    true,
    false,
    0,
    -0,
    -1,
    1,
    1.5,
    3,
    64,
    65_536,
    65_537,
    2 ** 31,
    2 ** 32,
    2 ** 32 - 1,
    2 ** 53,
    -(2 ** 53),
    NaN,
    Infinity,
    -Infinity,
    "",
    "x",
    "rendezvous",
    "buffered",
    "unlimited",
    "conflated",
    "suspend",
    "drop-oldest",
    "drop-latest",
    0n,
    1n,
    -1n,
    2n ** 64n,
    Symbol("s"),
    "toString",
    "constructor",
    "__proto__",
    "hasOwnProperty",
  ];
}

const liveCodecs: Codec<unknown>[] = Object.values(codecs) as Codec<unknown>[];

/**
 * One seeded run: picks, the calls' outcomes (a failure is anything `named` refuses), and the
 * promises they left, which must all settle once the run's channels and scopes are ended.
 */
class Fuzzer {
  readonly rnd: () => number;
  readonly failures: string[] = [];
  readonly #pending: Promise<unknown>[] = [];
  readonly #unsettled = new Map<number, string>();
  #ids = 0;

  constructor(seed: number) {
    this.rnd = prng(seed);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }

  check(what: string, e: unknown): void {
    if (!named(e) && this.failures.length < 20) {
      this.failures.push(
        `${what}: ${e instanceof Error ? `${e.name}: ${e.message} ${e.stack}` : String(e)}`,
      );
    }
  }

  /** A call's result: a promise is kept until it settles, and its rejection checked. */
  watch(what: string, p: unknown): void {
    if (!(p instanceof Promise)) return;
    const id = this.#ids++;
    this.#unsettled.set(id, what);
    this.#pending.push(
      p.then(() => {}, (e) => this.check(what, e)).finally(() => this.#unsettled.delete(id)),
    );
  }

  /** Up to `steps` random calls of `ops` (4 s at most), yielding to the event loop now and then. */
  async run(
    ops: [string, () => unknown][],
    steps: number,
  ): Promise<{ worked: number; threw: number }> {
    const deadline = performance.now() + 4_000;
    let worked = 0, threw = 0;
    for (let step = 0; step < steps && performance.now() < deadline; step++) {
      const [what, op] = this.pick(ops);
      try {
        this.watch(what, op());
        worked++;
      } catch (e) {
        this.check(what, e);
        threw++;
      }
      if (step % 50 === 0) await new Promise((r) => setTimeout(r, 0)); // let waits settle natively
    }
    return { worked, threw };
  }

  /** Waits (bounded) until every watched promise settled; names the ones that did not. */
  async settled(ms: number): Promise<void> {
    let all = false;
    Promise.all(this.#pending).then(() => all = true);
    await until(() => all, "every pending operation to settle", ms).catch((e) => {
      throw new Error(`${e.message}: ${[...this.#unsettled.values()].join(", ")}`);
    });
  }
}

for (const seed of [0x5eed_f022, 7, 1_000_003]) {
  Deno.test(`random bad arguments get named errors; no crash; a channel not handed out stays intact (seed ${seed})`, () =>
    fuzz(seed));
}

async function fuzz(seed: number): Promise<void> {
  // The channel no call is given, though forged share() objects name its handle with a codec
  // that does not fit it: it must keep its eight numbers and its counts.
  using sentinel = new Channel<number>(16, { codec: codecs.f64 });
  const real = sentinel.share();
  for (let i = 1; i <= 8; i++) assert.equal(sentinel.trySend(i).state, "ok");

  const stop = new AbortController();
  const channels: Channel<unknown>[] = [];
  const f = new Fuzzer(seed);
  const rnd = f.rnd, pick = <T>(xs: readonly T[]) => f.pick(xs);
  const forged = (): unknown => {
    // The sentinel's handle only with a codec whose element size or kind does not fit it.
    const own = rnd() < 0.3;
    const codec = own ? pick(["bytes", "string", "structured", "default"]) : pick([
      "f64",
      "u64",
      "bytes",
      "default",
      "nope",
      undefined,
    ]);
    const handle = own ? real.handle : pick([
      0,
      -1,
      1,
      2,
      real.handle + 1,
      2 ** 32,
      1.5,
      NaN,
      "1",
      ...channels.slice(-4).map((c) => c.share().handle),
    ]);
    return {
      kind: pick(["kcoro.channel", "kcoro.channel", "other", undefined]),
      version: pick([1, 1, 2, "1"]),
      handle,
      elemSize: own ? 32 : pick([8, 32, 0, 7, "8"]),
      zeroCopy: own ? true : pick([true, false, 1, undefined]),
      codec,
      capacity: pick([0, 1, 64, -1, 2 ** 32, 1.5, undefined]),
    };
  };
  const garbage = (): unknown => {
    const r = rnd();
    if (r < 0.45) return pick(primitives());
    if (r < 0.55) return pick(hostile());
    if (r < 0.65) return forged();
    if (r < 0.75 && channels.length > 0) return pick(channels);
    if (r < 0.8) return pick(liveCodecs);
    if (r < 0.85) return { codec: pick(liveCodecs), overflow: pick(primitives()) };
    if (r < 0.9) return { signal: pick([AbortSignal.abort(), stop.signal, garbage, {}, 1]) };
    return pick([
      {},
      [],
      [1, 2, 3],
      ["a", 1n, null],
      new Uint8Array(4),
      new Uint8Array(0),
      new Float64Array(2),
      new ArrayBuffer(8),
      new Date(0),
      new Map([[1, 2]]),
      () => 1,
      () => {
        throw new CallerError("the caller's callback");
      },
    ]);
  };
  const cause = () => {
    const c = garbage();
    causes.add(c);
    return c;
  };
  const anyChannel = (): Channel<unknown> | undefined =>
    channels.length > 0 ? pick(channels) : undefined;

  type Op = () => unknown;
  const ops: [string, Op][] = [
    ["new Channel", () => {
      const ch = new Channel<unknown>(garbage() as never, garbage() as never);
      channels.push(ch);
      if (channels.length > 64) channels.shift()![Symbol.dispose]();
    }],
    ["Channel.from", () => channels.push(Channel.from(garbage() as never))],
    ["trySend", () => anyChannel()?.trySend(garbage())],
    ["tryReceive", () => anyChannel()?.tryReceive()],
    ["send", () => anyChannel()?.send(garbage(), garbage() as never)],
    ["receive", () => anyChannel()?.receive(garbage() as never)],
    ["receiveCatching", () => anyChannel()?.receiveCatching(garbage() as never)],
    ["trySendMany", () => anyChannel()?.trySendMany(garbage() as never)],
    ["trySendMany of values", () => anyChannel()?.trySendMany([garbage(), garbage()])],
    ["tryReceiveMany", () => anyChannel()?.tryReceiveMany(garbage() as never)],
    ["close", () => rnd() < 0.2 ? anyChannel()?.close(cause()) : undefined],
    ["cancel", () => rnd() < 0.1 ? anyChannel()?.cancel(cause()) : undefined],
    ["metrics", () => anyChannel()?.metrics()],
    ["share", () => anyChannel()?.share()],
    ["dispose", () => rnd() < 0.1 ? anyChannel()?.[Symbol.dispose]() : undefined],
    ["select", () => {
      const build = (s: SelectBuilder<unknown>) => {
        const n = 1 + Math.floor(rnd() * 3);
        for (let i = 0; i < n; i++) {
          const c = rnd() < 0.7 ? anyChannel() : garbage();
          switch (Math.floor(rnd() * 5)) {
            case 0:
              s.onReceive(c as never, garbage() as never);
              break;
            case 1:
              s.onReceiveCatching(c as never, () => 1);
              break;
            case 2:
              s.onSend(c as never, garbage(), () => 2);
              break;
            case 3:
              // A timer only as the immediate default: a long one would outlive the test.
              s.onTimeout(pick([0, -1, NaN, "0", undefined]) as never, () => 3);
              break;
            default:
              s.onReceive(c as never, () => 4);
          }
        }
      };
      const options = rnd() < 0.5
        ? { signal: stop.signal, unbiased: garbage() }
        : { signal: pick([stop.signal, AbortSignal.abort()]) };
      return select(rnd() < 0.9 ? build : garbage() as never, options as never);
    }],
  ];

  const { worked, threw } = await f.run(ops, 4_000);

  // Everything still waiting ends: the aborted selects, then the cancelled channels.
  stop.abort();
  for (const ch of channels) {
    try {
      ch.cancel(); // a Channel.from copy's cancel ends its channel for everyone too
    } catch (e) {
      f.check("cancel at the end", e); // one the fuzzer disposed
    }
    ch[Symbol.dispose]();
  }
  await f.settled(20_000);
  assert.deepEqual(f.failures, []);
  // Both kinds of outcome were exercised, many times over.
  assert.ok(worked > 500 && threw > 500, `worked ${worked}, threw ${threw}`);
  console.log(
    `fuzz ${seed}: ${worked} calls worked, ${threw} threw, ${channels.length} live channels`,
  );

  // The sentinel kept its values, in order, and its counts.
  assert.deepEqual(sentinel.tryReceiveMany(16), { state: "ok", values: [1, 2, 3, 4, 5, 6, 7, 8] });
  const m = sentinel.metrics();
  assert.equal(m.sends, 8);
  assert.equal(m.receives, 8);
}

for (const seed of [0xbad_5eed, 11]) {
  Deno.test(`random bad arguments to native coroutines, native scopes, scopes, produce, actor, timeouts and contexts get named errors (seed ${seed})`, () =>
    fuzzTasks(seed));
}

async function fuzzTasks(seed: number): Promise<void> {
  const f = new Fuzzer(seed);
  const rnd = f.rnd, pick = <T>(xs: readonly T[]) => f.pick(xs);
  const watch = (what: string, p: unknown) => f.watch(what, p);
  const stop = new AbortController();
  const coros: NativeCoroutine[] = [];
  const natives: NativeScope[] = [];
  const scopes: Scope[] = [];
  const actors: Actor<unknown>[] = [];
  const deferreds: CompletableDeferred<unknown>[] = [];
  const key = createContextKey<number>("fuzz");

  const garbage = (): unknown => {
    const r = rnd();
    if (r < 0.55) return pick(primitives());
    if (r < 0.65) return pick(hostile());
    if (r < 0.7) return { pointer: pick([{}, null, 1, "p"]), library: "x", symbol: "y" };
    if (r < 0.75) return { signal: pick([stop.signal, {}, 1]), timeout: pick(primitives()) };
    if (r < 0.8) return { context: pick([Context.empty, {}, 1]), supervisor: pick(primitives()) };
    if (r < 0.85) return { arg: pick(primitives()), stackSize: pick(primitives()) };
    if (r < 0.9 && scopes.length > 0) return pick(scopes);
    return pick([{}, [], new BigInt64Array(4), new Uint8Array(8), () => 1, Context.empty, key]);
  };
  /** A task body: quick ones that end by themselves, or garbage. */
  const block = (): unknown =>
    pick([() => 1, () => Promise.resolve(2), (s: { isActive: boolean }) => s.isActive, garbage()]);
  /** A scope argument: a live scope, or garbage. */
  const scopeArg = (): unknown => rnd() < 0.6 && scopes.length > 0 ? pick(scopes) : garbage();
  const cause = () => {
    const c = garbage();
    causes.add(c);
    return c;
  };

  const ops: [string, () => unknown][] = [
    ["NativeCoroutine.create", () => {
      const co = NativeCoroutine.create(
        pick(["fib", "yield-loop", "park-loop", garbage()]) as never,
        garbage() as never,
      );
      coros.push(co);
      if (coros.length > 16) coros.shift()!.destroy();
    }],
    ["coroutine.resume", () => coros.length > 0 ? pick(coros).resume() : undefined],
    ["coroutine.unpark", () => coros.length > 0 ? pick(coros).unpark() : undefined],
    ["coroutine.destroy", () => rnd() < 0.2 && coros.length > 0 ? pick(coros).destroy() : 0],
    // Never a BigUint64Array: nothing is actually spawned or launched natively.
    ["runtime().spawn", () => runtime().spawn(garbage() as never, garbage() as never)],
    ["NativeScope.create", () => {
      natives.push(NativeScope.create(garbage() as never));
      if (natives.length > 8) {
        watch("dispose native scope", natives.shift()![Symbol.asyncDispose]());
      }
    }],
    [
      "nativeScope.launch",
      () => natives.length > 0 ? pick(natives).launch(garbage() as never, garbage() as never) : 0,
    ],
    [
      "nativeScope.wait",
      () =>
        natives.length > 0
          ? pick(natives).wait({ ...(garbage() as object), signal: stop.signal } as never)
          : 0,
    ],
    [
      "nativeScope.wait (options)",
      () => natives.length > 0 ? pick(natives).wait(garbage() as never) : 0,
    ],
    ["createScope", () => {
      // Tasks' failures stay in their scope: supervisors (or whatever options the fuzzer made).
      const opts = garbage();
      const sc = createScope(
        typeof opts === "object" && opts !== null && rnd() < 0.5
          ? opts as never
          : { supervisor: true, context: Context.empty.with(key, 1) },
      );
      scopes.push(sc);
      if (scopes.length > 8) watch("dispose scope", scopes.shift()![Symbol.asyncDispose]());
    }],
    [
      "scope.launch",
      () => scopes.length > 0 ? pick(scopes).launch(block() as never, garbage() as never) : 0,
    ],
    [
      "scope.async",
      () =>
        scopes.length > 0 ? pick(scopes).async(block() as never, garbage() as never).await() : 0,
    ],
    ["scope.cancel", () => rnd() < 0.1 && scopes.length > 0 ? pick(scopes).cancel(cause()) : 0],
    ["produce", () => produce(scopeArg() as never, block() as never, garbage() as never)],
    ["actor", () => {
      const a = actor(scopeArg() as never, block() as never, garbage() as never);
      actors.push(a as Actor<unknown>);
      if (actors.length > 8) actors.shift();
    }],
    [
      "actor.send",
      () =>
        actors.length > 0
          ? pick(actors).send(garbage(), { ...(garbage() as object), signal: stop.signal } as never)
          : 0,
    ],
    [
      "actor.send (options)",
      () => actors.length > 0 ? pick(actors).send(garbage(), garbage() as never) : 0,
    ],
    ["actor.trySend", () => actors.length > 0 ? pick(actors).trySend(garbage()) : 0],
    ["actor.close", () => rnd() < 0.2 && actors.length > 0 ? pick(actors).close() : 0],
    ["select onJoin/onAwait", () =>
      select((s: SelectBuilder<unknown>) => {
        const j = rnd() < 0.5 && deferreds.length > 0 ? pick(deferreds) : garbage();
        if (rnd() < 0.5) s.onJoin(j as never, () => 1);
        else s.onAwait(j as never, garbage() as never);
        s.onTimeout(0, () => 0); // never waits: nothing to leave pending
      }, { signal: stop.signal })],
    ["coroutineScope", () => coroutineScope(block() as never, garbage() as never)],
    ["supervisorScope", () => supervisorScope(block() as never, garbage() as never)],
    ["nonCancellable", () => nonCancellable(block() as never, garbage() as never)],
    ["withTimeout", () => withTimeout(garbage() as never, block() as never, garbage() as never)],
    [
      "withTimeoutOrNull",
      () => withTimeoutOrNull(garbage() as never, block() as never, garbage() as never),
    ],
    // Always abortable, or a time that ends at once: a long timer would outlive the test.
    ["delay", () => delay(garbage() as never, { signal: stop.signal })],
    [
      "delay (options)",
      () => delay(pick([0, -1, NaN, "5", undefined]) as never, garbage() as never),
    ],
    ["Context.with", () => Context.empty.with(garbage() as never, garbage())],
    ["Context.get", () => Context.empty.with(key, 1).get(garbage() as never)],
    ["Context.without", () => Context.empty.without(garbage() as never)],
    ["createContextKey", () => createContextKey(garbage() as never)],
    ["new CompletableDeferred", () => {
      deferreds.push(new CompletableDeferred(garbage() as never));
      if (deferreds.length > 8) deferreds.shift()!.complete(0);
    }],
    ["deferred.complete", () => deferreds.length > 0 ? pick(deferreds).complete(garbage()) : 0],
    [
      "deferred.completeExceptionally",
      () => deferreds.length > 0 ? pick(deferreds).completeExceptionally(cause()) : 0,
    ],
    ["deferred.await", () => deferreds.length > 0 ? pick(deferreds).await() : 0],
  ];

  const { worked, threw } = await f.run(ops, 3_000);

  // Everything ends: aborted waits, cancelled scopes, completed deferreds, destroyed coroutines.
  stop.abort();
  for (const d of deferreds) d.complete(0);
  for (const sc of scopes) watch("dispose scope", sc[Symbol.asyncDispose]());
  for (const ns of natives) watch("dispose native scope", ns[Symbol.asyncDispose]());
  for (const co of coros) co.destroy();
  await f.settled(5_000);
  assert.deepEqual(f.failures, []);
  assert.ok(worked > 300 && threw > 300, `worked ${worked}, threw ${threw}`);
  console.log(`fuzz tasks ${seed}: ${worked} calls worked, ${threw} threw`);
}

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

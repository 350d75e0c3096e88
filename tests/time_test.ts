// delay, withTimeout, withTimeoutOrNull. The timers here are what is under test; waits are
// bounded by deadlines, and no test relies on one timer firing before another to synchronise.
import assert from "node:assert/strict";
import {
  evalScript,
  JOB_MEMBERS,
  untilAborted,
  within,
  withJobMembersRedefined,
} from "./support.ts";
import {
  CancellationError,
  Channel,
  CompletableDeferred,
  Context,
  coroutineScope,
  createContextKey,
  Deadline,
  delay,
  nonCancellable,
  TimeoutError,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";
import { msText } from "../src/time.ts";
import { contextOf, type JobSupport, signalOfJob } from "../src/job.ts";
import { liveDeadline, runningTimeout } from "../src/context.ts";

Deno.test("delay resolves after at least its time", async () => {
  const t0 = performance.now();
  await delay(20);
  assert.ok(performance.now() - t0 >= 19, `${performance.now() - t0} ms`);
});

Deno.test("delay of 0 or less resolves at once", async () => {
  const t0 = performance.now();
  await delay(0);
  await delay(-5);
  await delay(-Infinity);
  assert.ok(performance.now() - t0 < 1000);
  // At once means without a turn of the event loop (as documented: a loop awaiting delay(0)
  // runs no timer meanwhile), where delay(1) waits for one.
  let fired = false;
  setTimeout(() => fired = true, 0);
  for (let i = 0; i < 100; i++) await delay(0);
  assert.equal(fired, false);
  await delay(1);
  assert.equal(fired, true);
});

Deno.test("delay rejects with the signal's reason: aborted before, or while waiting", async () => {
  const reason = new Error("stop");
  await assert.rejects(delay(60_000, { signal: AbortSignal.abort(reason) }), (e) => e === reason);
  await assert.rejects(delay(0, { signal: AbortSignal.abort(reason) }), (e) => e === reason);
  const controller = new AbortController();
  const waiting = delay(60_000, { signal: controller.signal });
  controller.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
});

Deno.test("a long or infinite delay is cancellable and leaves no timer behind", async () => {
  // Deno's test sanitizer fails this test if a timer is left armed.
  for (const ms of [2 ** 31, Infinity]) {
    const controller = new AbortController();
    const waiting = delay(ms, { signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, { name: "AbortError" });
  }
});

/**
 * Awaits `wait` (an expression: `ch`, a local channel nothing else can complete a receive of, and
 * `never`, a CompletableDeferred nothing completes, are in scope) in a child process and asserts
 * that the process exits by itself, the wait unsettled (Deno's "never resolved"): no timer it
 * armed keeps the process alive. `what` names the wait in the assertions.
 */
async function assertExitsUnsettled(what: string, wait: string): Promise<void> {
  const res = await evalScript(
    `
    import {
      Channel, CompletableDeferred, Context, Deadline, delay, select, withTimeout, withTimeoutOrNull,
    } from "./mod.ts";
    const ch = new Channel(); // local: nothing else can complete its receive
    const never = new CompletableDeferred();
    await ${wait};
    console.log("settled");
  `,
    { timeoutMs: 30_000 },
  );
  assert.equal(res.signal, null, `${what}: killed at the bound, the process hung`);
  assert.notEqual(res.code, 0, what);
  assert.match(res.stderr, /never resolved/, what);
}

Deno.test("an infinite timeout arms no timer: a process whose only wait nothing can end exits (the promise never resolved) instead of hanging", async () => {
  // Before, timer(Infinity) chained setTimeout(2^31 - 1 ms) for good: each of these kept the
  // process alive for ever, where the wait alone ends it (a local channel's receive does).
  for (
    const [what, wait] of [
      ["withTimeout(Infinity)", "withTimeout(Infinity, () => ch.receive())"],
      ["withTimeoutOrNull(Infinity)", "withTimeoutOrNull(Infinity, () => ch.receive())"],
      ["delay(Infinity)", "delay(Infinity)"],
      [
        "a select's onTimeout(Infinity)",
        "select((s) => { s.onAwait(never, (v) => v); s.onTimeout(Infinity, () => 0); })",
      ],
    ]
  ) {
    await assertExitsUnsettled(what, wait);
  }
});

Deno.test("a timeout of 2^64 ns or more arms no timer, as Infinity: a process whose only wait nothing can end exits instead of hanging", async () => {
  // Before, withTimeout(1e300) re-armed setTimeout(2^31 - 1 ms) for good (1e300 - 2^31 is 1e300,
  // so it could never fire), and so did a withTimeout(Infinity) given a hand-set Deadline that
  // far ahead: each kept the process alive for ever, where the wait alone ends it.
  for (
    const [what, wait] of [
      ["withTimeout(1e300)", "withTimeout(1e300, () => ch.receive())"],
      [
        "withTimeout(Infinity) given a Deadline 1e300 ms ahead",
        "withTimeout(Infinity, () => ch.receive(), " +
        "{ context: Context.empty.with(Deadline, performance.now() + 1e300) })",
      ],
      ["delay(2 ** 64 / 1e6)", "delay(2 ** 64 / 1e6)"],
    ]
  ) {
    await assertExitsUnsettled(what, wait);
  }
});

Deno.test("a delay just short of 2^64 ns arms a timer (chained past setTimeout's limit); one of 2^64 ns arms none", async () => {
  // The timers armed are seen through setTimeout, restored before anything is awaited.
  const armed: (number | undefined)[] = [];
  const realSetTimeout = globalThis.setTimeout;
  const ms = 2 ** 64 / 1e6;
  const controller = new AbortController();
  let waits: Promise<unknown>[];
  globalThis.setTimeout = ((fn: () => void, delay?: number) => {
    armed.push(delay);
    return realSetTimeout(fn, delay);
  }) as typeof setTimeout;
  try {
    waits = [ms - 1, ms, 1e300].map((d) => delay(d, { signal: controller.signal }).catch(() => d));
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  assert.deepEqual(armed, [2 ** 31 - 1]); // the first link of the chain, for ms - 1 only
  controller.abort(); // clears it
  assert.deepEqual(await Promise.all(waits), [ms - 1, ms, 1e300]);
});

Deno.test("withTimeout returns the block's value when it finishes in time", async () => {
  assert.equal(await withTimeout(60_000, () => "done"), "done");
});

Deno.test("withTimeout rejects with TimeoutError, after its tasks have settled", async () => {
  let live = 0;
  const err = await withTimeout(10, async (scope) => {
    for (let i = 0; i < 3; i++) {
      scope.launch(async (t) => {
        live++;
        try {
          await untilAborted(t.signal);
        } finally {
          live--;
        }
      });
    }
    await untilAborted(scope.signal);
  }).catch((e) => e);
  assert.ok(err instanceof TimeoutError);
  assert.ok(err instanceof CancellationError); // a timeout is a cancellation
  assert.match(err.message, /Timed out waiting for 10 ms/);
  assert.equal(live, 0);
});

Deno.test("withTimeout of 0 or less fails at once without running the block", async () => {
  for (const ms of [0, -1, -Infinity]) {
    let ran = false;
    const err = await withTimeout(ms, () => {
      ran = true;
    }).catch((e) => e);
    assert.ok(err instanceof TimeoutError);
    // It says that nothing waited, not "Timed out waiting for -1 ms".
    assert.equal(
      err.message,
      `Timed out at once: a timeout of ${ms} ms (0 or less) expires before the block runs`,
    );
    assert.equal(ran, false);
  }
});

Deno.test("withTimeoutOrNull returns null for its own timeout", async () => {
  assert.equal(await withTimeoutOrNull(10, (scope) => untilAborted(scope.signal)), null);
  assert.equal(await withTimeoutOrNull(60_000, () => 5), 5);
});

Deno.test("withTimeoutOrNull of 0 or less returns null without running the block", async () => {
  let ran = false;
  assert.equal(
    await withTimeoutOrNull(0, () => {
      ran = true;
    }),
    null,
  );
  assert.equal(ran, false);
});

Deno.test("a timeout of 0 or less given a signal leaves no listener on it", async () => {
  const controller = new AbortController();
  const signal = controller.signal;
  let listeners = 0;
  const add = signal.addEventListener.bind(signal),
    remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (...args: Parameters<typeof add>) => (listeners++, add(...args));
  signal.removeEventListener = (
    ...args: Parameters<typeof remove>
  ) => (listeners--, remove(...args));
  for (let i = 0; i < 10; i++) {
    await assert.rejects(withTimeout(0, () => 1, { signal }), TimeoutError);
    assert.equal(await withTimeoutOrNull(-1, () => 1, { signal }), null);
  }
  assert.equal(listeners, 0);
  // A signal already aborted still wins over the timeout, as before.
  await assert.rejects(
    withTimeout(0, () => 1, { signal: AbortSignal.abort("gone") }),
    CancellationError,
  );
});

Deno.test("withTimeoutOrNull rethrows an inner withTimeout's TimeoutError (not its own)", async () => {
  await assert.rejects(
    withTimeoutOrNull(60_000, () => withTimeout(5, (inner) => untilAborted(inner.signal))),
    TimeoutError,
  );
  const foreign = new TimeoutError("someone else's");
  await assert.rejects(
    withTimeoutOrNull(60_000, () => Promise.reject(foreign)),
    (e) => e === foreign,
  );
});

Deno.test("a timeout that fired stays the cause when the block then throws another timeout's TimeoutError: withTimeoutOrNull null, withTimeout its own (the first cancellation wins)", async () => {
  // The block catches its own timeout's cancellation and throws some other TimeoutError (an
  // inner withTimeout's, one it kept): a cancellation after the first does not replace it, as
  // Kotlin's root cause is the first CancellationException unless a real failure comes. Kotlin's
  // getFinalRootCause does take a later TimeoutCancellationException over a first one, but for
  // the stack-trace-recovered copy of the same timeout's (its comment says so), which JavaScript
  // never makes: README says why kcoro keeps the first here.
  const foreign = new TimeoutError("someone else's");
  const block = async (scope: { signal: AbortSignal }) => {
    await untilAborted(scope.signal).catch(() => {});
    throw foreign;
  };
  assert.equal(await withTimeoutOrNull(5, block), null);
  await assert.rejects(
    withTimeout(5, block),
    (e) => e instanceof TimeoutError && e !== foreign && /5 ms/.test(e.message),
  );
});

Deno.test("withTimeoutOrNull rethrows failures and outside cancellations", async () => {
  const boom = new Error("boom");
  await assert.rejects(withTimeoutOrNull(60_000, () => Promise.reject(boom)), (e) => e === boom);
  const controller = new AbortController();
  const run = withTimeoutOrNull(60_000, (scope) => untilAborted(scope.signal), {
    signal: controller.signal,
  });
  controller.abort();
  await assert.rejects(run, (e) => e instanceof CancellationError && !(e instanceof TimeoutError));
});

Deno.test("a failure while timing out outranks the timeout", async () => {
  const cleanup = new Error("cleanup failed");
  await assert.rejects(
    withTimeoutOrNull(5, async (scope) => {
      await untilAborted(scope.signal).catch(() => {});
      throw cleanup;
    }),
    (e) => e === cleanup,
  );
});

Deno.test("a signal that passes instanceof AbortSignal but is none (made from its prototype) is refused by name: calls that return a Promise reject, never throw", async () => {
  // (A Proxy of a real signal is refused too, though the engine's brand checks see through it:
  // tests/signal_test.ts.)
  const fake = Object.create(AbortSignal.prototype) as AbortSignal;
  assert.ok(fake instanceof AbortSignal); // what the check looked at; reading `aborted` throws
  const o = { signal: fake };
  const refused = (op: string) => ({
    name: "TypeError",
    message: new RegExp(`^Cannot ${op}: signal must be an AbortSignal, received `),
  });
  // A synchronous throw fails here: the call runs before assert.rejects does.
  await assert.rejects(delay(5, o), refused("delay"));
  const d = new CompletableDeferred<number>();
  await assert.rejects(d.join(o), refused("join"));
  await assert.rejects(d.await(o), refused("await"));
  d.complete(1);
  await assert.rejects(withTimeout(5, async () => {}, o), refused("run withTimeout"));
  await assert.rejects(coroutineScope(async () => {}, o), refused("run coroutineScope"));
  using ch = new Channel<number>(1);
  await assert.rejects(ch.receive(o), refused("receive"));
  // values() is no Promise: its options are refused at the call, as any other bad option.
  assert.throws(() => ch.values(o), refused("iterate channel"));
});

Deno.test("NaN times are RangeErrors; times not numbers, bad blocks and options TypeErrors (rejected, never thrown)", async () => {
  // Each call returns a Promise, so it rejects: `.catch()` and `await` see every failure. A
  // synchronous throw fails the test here (the argument throws before assert.rejects runs).
  await assert.rejects(delay(NaN), {
    name: "RangeError",
    message: "Cannot delay: ms must be a number of milliseconds, received NaN",
  });
  await assert.rejects(delay("5" as never), { name: "TypeError", message: /received "5"/ });
  await assert.rejects(withTimeoutOrNull(5n as never, async () => {}), TypeError);
  await assert.rejects(
    delay(1, { signal: 1 as never }),
    /signal must be an AbortSignal, received 1/,
  );
  await assert.rejects(withTimeout(NaN, async () => {}), {
    name: "RangeError",
    message: "Cannot run withTimeout: ms must be a number of milliseconds, received NaN",
  });
  await assert.rejects(withTimeout("5" as never, async () => {}), {
    name: "TypeError",
    message: 'Cannot run withTimeout: ms must be a number of milliseconds, received "5"',
  });
  await assert.rejects(withTimeoutOrNull(NaN, async () => {}), RangeError);
  await assert.rejects(
    withTimeout(5, null as never),
    /Cannot run withTimeout: block must be a function/,
  );
  await assert.rejects(
    withTimeoutOrNull(5, async () => {}, 3 as never),
    /options must be an object/,
  );
  // The 0-or-less paths check their arguments too.
  await assert.rejects(withTimeout(0, null as never), /block must be a function, received null/);
  await assert.rejects(withTimeoutOrNull(-1, async () => {}, 3 as never), /options must be/);
  // A caller's throwing getter is a rejection with what it threw.
  const mine = new Error("the caller's getter");
  const hostile = Object.defineProperty({}, "signal", {
    get: () => {
      throw mine;
    },
  });
  await assert.rejects(delay(1, hostile as never), (e) => e === mine);
  await assert.rejects(withTimeout(5, async () => {}, hostile as never), (e) => e === mine);
});

Deno.test("nonCancellable inside a timed-out withTimeout does not inherit its expired Deadline", async () => {
  // Kotlin: withContext(NonCancellable) inside withTimeout runs to its end; the timeout is the
  // task's cancellation, not the cleanup's. Before, the cleanup's context kept the expired
  // Deadline, and native children launched for it failed at once with KC_ETIME.
  let inCleanup: number | undefined = -1;
  let inTask: number | undefined;
  await assert.rejects(
    withTimeout(5, async (task) => {
      inTask = task.context.get(Deadline);
      try {
        await untilAborted(task.signal);
      } finally {
        await nonCancellable((cleanup) => {
          inCleanup = cleanup.context.get(Deadline);
          return Promise.resolve();
        }, { context: task.context });
      }
    }),
    TimeoutError,
  );
  assert.equal(typeof inTask, "number");
  assert.equal(inCleanup, undefined);
});

Deno.test("await and join take the waiting task's signal: withTimeout around them times out", async () => {
  // Kotlin's await and join are cancelled with their caller. Before, neither took a signal, and a
  // withTimeout around an await of a deferred that never completes never settled.
  const reply = new CompletableDeferred<string>();
  await assert.rejects(withTimeout(5, (t) => reply.await({ signal: t.signal })), TimeoutError);
  assert.equal(reply.state, "active"); // the deferred itself is not cancelled
  assert.equal(await withTimeoutOrNull(5, (t) => reply.join({ signal: t.signal })), null);
  // Already aborted: join rejects at once, even for a final job (Kotlin's join checks its caller
  // first), while await of a final deferred gives its result (Kotlin's await returns it without
  // suspending, checking nothing); a deferred not final yet rejects.
  const done = new CompletableDeferred<number>();
  done.complete(1);
  const aborted = AbortSignal.abort(new CancellationError("gone"));
  assert.equal(await done.await({ signal: aborted }), 1);
  await assert.rejects(done.join({ signal: aborted }), CancellationError);
  const failed = new CompletableDeferred<number>();
  failed.completeExceptionally(new RangeError("bad"));
  await assert.rejects(failed.await({ signal: aborted }), RangeError);
  await assert.rejects(
    new CompletableDeferred<number>().await({ signal: aborted }),
    CancellationError,
  );
  // Not aborted: the value, and the listener is gone once it settles.
  const ctl = new AbortController();
  const later = new CompletableDeferred<number>();
  const got = later.await({ signal: ctl.signal });
  later.complete(7);
  assert.equal(await got, 7);
  await coroutineScope(async (scope) => {
    const child = scope.launch(() => Promise.resolve());
    await child.join({ signal: ctl.signal });
  });
  reply.complete("late");
  assert.equal(await reply.await(), "late");
  // Rejects (as every function that returns a Promise), never throws.
  await assert.rejects(reply.await({ signal: "no" as unknown as AbortSignal }), TypeError);
  await assert.rejects(reply.join({ signal: "no" as unknown as AbortSignal }), TypeError);
});

Deno.test("await({ signal }) that times out keeps nothing of the caller on a long-lived deferred", async () => {
  // Before, the wait was a reaction on the deferred's shared result promise: it held the signal
  // (and the timed-out scope) until the deferred completed, ~1.5 KB per timed-out wait.
  const res = await evalScript(
    `
    import { CompletableDeferred, withTimeoutOrNull } from "./mod.ts";
    import { collectUntil } from "./tests/support.ts";
    const reply = new CompletableDeferred();
    const refs = [];
    for (let i = 0; i < 20; i++) {
      await withTimeoutOrNull(1, (t) => {
        refs.push(new WeakRef(t.signal));
        return i % 2 ? reply.await({ signal: t.signal }) : reply.join({ signal: t.signal });
      });
    }
    // Collected, waited for (bounded; before, five collections, then the check).
    const held = () => refs.filter((r) => r.deref() !== undefined).length;
    await collectUntil(() => held() <= 2, () => held() + " timed-out signals of 20 still held");
    reply.complete(1);
    `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("join and await start a lazy job even for a caller already cancelled (Kotlin)", async () => {
  await coroutineScope(async (scope) => {
    let ran = 0;
    const job = scope.launch(() => {
      ran++;
      return Promise.resolve();
    }, { lazy: true });
    const deferred = scope.async(() => {
      ran++;
      return Promise.resolve(1);
    }, { lazy: true });
    const gone = AbortSignal.abort(new CancellationError("gone"));
    await assert.rejects(job.join({ signal: gone }), CancellationError);
    await assert.rejects(deferred.await({ signal: gone }), CancellationError);
    assert.notEqual(job.state, "new");
    assert.notEqual(deferred.state, "new");
    await job.join();
    assert.equal(await deferred.await(), 1);
    assert.equal(ran, 2);
  });
});

Deno.test("withTimeout given the context of a finished withTimeout ignores that timeout's stale Deadline", async () => {
  // Kotlin's timeouts are cancellations of the scopes they cover. Before, a context taken out of
  // a withTimeout that had finished kept its (earlier) Deadline in any later withTimeout given
  // it: the later scope claimed the old deadline, and its native children failed with KC_ETIME
  // long before their own timeout.
  const stale = await withTimeout(60, (scope) => scope.context);
  const key = createContextKey<string>("user");
  for (const context of [stale, stale.with(key, "ada")]) {
    const before = performance.now();
    const d = await withTimeout(60_000, (scope) => scope.context.get(Deadline), { context });
    assert.ok(d !== undefined && d >= before + 60_000, `deadline ${d}, now ${before}`);
    const n = await withTimeoutOrNull(60_000, (scope) => scope.context.get(Deadline), { context });
    assert.ok(n !== null && n !== undefined && n >= before + 60_000, `deadline ${n}`);
  }
  // A Deadline put in by hand is kept, as is that of a withTimeout still running around it.
  const own = performance.now() + 30_000;
  const kept = await withTimeout(60_000, (scope) => scope.context.get(Deadline), {
    context: stale.with(Deadline, own),
  });
  assert.equal(kept, own);
  await withTimeout(60_000, async (outer) => {
    const d = outer.context.get(Deadline);
    const inner = await withTimeout(120_000, (scope) => scope.context.get(Deadline), {
      context: outer.context,
      signal: outer.signal,
    });
    assert.equal(inner, d);
  });
});

Deno.test("withTimeout given a hand-set Deadline that has passed times out at once without running the block", async () => {
  // Go's context.WithTimeout keeps a parent's earlier deadline. Before, a Deadline set by hand with
  // Context.with was only read: withTimeout(60_000, block, { context }) ran the block for its full
  // time although the Deadline its context carried, and gave its native children, had passed.
  let ran = 0;
  const block = () => {
    ran++;
    return "ran";
  };
  for (const at of [performance.now() - 1, -Infinity]) {
    const context = Context.empty.with(Deadline, at);
    for (const ms of [60_000, Infinity]) {
      await assert.rejects(withTimeout(ms, block, { context }), (e) => {
        assert.ok(e instanceof TimeoutError, String(e));
        assert.match(e.message, /Timed out at once: the Deadline of its context passed/);
        // -Infinity is named as it is: it said "passed Infinity ms ago".
        if (at === -Infinity) {
          assert.equal(
            e.message,
            "Timed out at once: the Deadline of its context passed (it is -Infinity), before " +
              `its timeout of ${ms} ms; the block does not run`,
          );
        }
        return true;
      });
      assert.equal(await withTimeoutOrNull(ms, block, { context }), null);
    }
    // An aborted signal still wins, as it does over a timeout of 0 or less.
    const signal = AbortSignal.abort(new Error("stop"));
    await assert.rejects(withTimeout(60_000, block, { context, signal }), CancellationError);
    await assert.rejects(withTimeoutOrNull(60_000, block, { context, signal }), CancellationError);
  }
  assert.equal(ran, 0);
  // A hand-set Deadline later than the timeout is not the timeout's: its own wins.
  const later = Context.empty.with(Deadline, performance.now() + 120_000);
  await assert.rejects(withTimeout(5, (t) => untilAborted(t.signal), { context: later }), {
    name: "TimeoutError",
    message: "Timed out waiting for 5 ms",
  });
});

Deno.test("withTimeout given a hand-set Deadline ahead of its own times out at it, with its own TimeoutError, and owns it for timeouts nested in it", async () => {
  // No timed assertion: the timeouts' own times are Infinity or a minute, so only the Deadline
  // can end them. Before, withTimeout(Infinity) waited here for good. Each Deadline is made just
  // before the call, synchronously, a second ahead: it has not passed when the call reads it,
  // even on a host so loaded that the process stalls between two lines (100 ms could).
  const at = performance.now() + 1_000;
  const context = Context.empty.with(Deadline, at);
  let seen: number | undefined;
  let inner: unknown = "not settled";
  await assert.rejects(
    withTimeout(Infinity, async (scope) => {
      seen = scope.context.get(Deadline);
      // Nested in it: the outer timeout enforces the Deadline (as an outer withTimeout's), so
      // the inner withTimeoutOrNull rethrows the outer's TimeoutError rather than racing it to
      // a null of its own.
      inner = await withTimeoutOrNull(60_000, (t) => untilAborted(t.signal), {
        signal: scope.signal,
        context: scope.context,
      });
    }, { context }),
    (e) => {
      assert.ok(e instanceof TimeoutError, String(e));
      assert.match(e.message, /the Deadline of its context came before its timeout of Infinity ms/);
      return true;
    },
  );
  assert.equal(seen, at);
  assert.equal(inner, "not settled");
  // withTimeoutOrNull counts it as its own: null. So does one in a task of a coroutineScope given
  // the context (the scope itself arms no timer for it).
  const ahead = () => Context.empty.with(Deadline, performance.now() + 1_000);
  assert.equal(
    await withTimeoutOrNull(60_000, (t) => untilAborted(t.signal), { context: ahead() }),
    null,
  );
  const got = await coroutineScope(
    (task) =>
      withTimeoutOrNull(Infinity, (t) => untilAborted(t.signal), {
        signal: task.signal,
        context: task.context,
      }),
    { context: ahead().with(createContextKey<string>("user"), "ada") },
  );
  assert.equal(got, null);
});

Deno.test("a hand-set Deadline a withTimeout took on stays in force in the contexts of its scope after it finished: it was set by hand, not put in by that timeout", async () => {
  // No timed assertion: the Deadline is a minute ahead, and only which Deadline each scope sees is
  // asserted. Before, the end of the withTimeout that took it on made it stale in every context
  // derived from its scope's, as if that timeout had put it in: a later timeout given one ran to
  // its own time (Infinity here: no Deadline at all), and a nativeScope gave its children none.
  const at = performance.now() + 60_000;
  const user = createContextKey<string>("user");
  const kept = await withTimeout(120_000, (scope) => scope.context.with(user, "ada"), {
    context: Context.empty.with(Deadline, at),
  });
  assert.equal(kept.get(Deadline), at);
  const seen = (scope: { context: Context }) => scope.context.get(Deadline);
  assert.equal(await withTimeout(Infinity, seen, { context: kept }), at);
  assert.equal(await withTimeoutOrNull(120_000, seen, { context: kept }), at);
  // And in a task's context derived from it, as a hand-set one is.
  const inTask = await coroutineScope(
    (task) => withTimeout(Infinity, seen, { signal: task.signal, context: task.context }),
    { context: kept },
  );
  assert.equal(inTask, at);
  // A Deadline a withTimeout put in itself still goes stale with it.
  const own = await withTimeout(60_000, (scope) => scope.context);
  assert.equal(await withTimeout(Infinity, seen, { context: own }), Infinity);
});

Deno.test("a child given a context under withTimeout keeps the timeout's Deadline: an empty one, a later one or a stale one does not lift it, an earlier one wins", async () => {
  // A child's context is the scope's plus the given one (Kotlin's launch(context)). Before, the
  // given context replaced the scope's: a child given Context.empty had no Deadline (nor had the
  // native children it launched), and one given a later Deadline claimed that.
  const key = createContextKey<string>("user");
  const stale = await withTimeout(60, (scope) => scope.context);
  await withTimeout(60_000, async (scope) => {
    const d = scope.context.get(Deadline)!;
    const later = Context.empty.with(Deadline, d + 60_000);
    const earlier = Context.empty.with(Deadline, d - 30_000);
    for (
      const [name, own, want] of [
        ["empty", Context.empty, d],
        ["another key", Context.empty.with(key, "ada"), d],
        ["a later Deadline", later, d],
        ["a later Deadline and a key", later.with(key, "ada"), d],
        ["a finished withTimeout's", stale, d],
        ["an earlier Deadline", earlier, d - 30_000],
      ] as const
    ) {
      const seen = await scope.async((t) => t.context.get(Deadline), { context: own }).await();
      assert.equal(seen, want, name);
      const launched: (number | undefined)[] = [];
      await scope.launch((t) => {
        launched.push(t.context.get(Deadline)); // and its own children's
        return t.async((c) => c.context.get(Deadline)).await().then((v) => launched.push(v));
      }, { context: own }).join();
      assert.deepEqual(launched, [want, want], name);
    }
  });
});

Deno.test("a child given Context.empty under withTimeout times out with its scope, by its Deadline", async () => {
  const seen: unknown[] = [];
  let deadline: number | undefined;
  await assert.rejects(
    withTimeout(30, (scope) => {
      deadline = scope.context.get(Deadline);
      scope.launch(async (task) => {
        seen.push(task.context.get(Deadline));
        await untilAborted(task.signal).catch((e) => seen.push(e));
      }, { context: Context.empty });
    }),
    TimeoutError,
  );
  assert.ok(deadline !== undefined);
  assert.equal(seen[0], deadline); // before: undefined
  assert.ok(seen[1] instanceof CancellationError, String(seen[1]));
});

Deno.test("a hand-set Deadline less than 1 ms ahead or past is said as <1 ms, never 0 ms", async () => {
  // Before, Math.round said "Timed out waiting for 0 ms" for a Deadline 0.3 ms ahead, and
  // "passed 0 ms ago" for one just passed.
  assert.equal(msText(0), "<1 ms");
  assert.equal(msText(0.3), "<1 ms");
  assert.equal(msText(0.999), "<1 ms");
  assert.equal(msText(1), "1 ms");
  assert.equal(msText(1.4), "1 ms");
  assert.equal(msText(2.5), "3 ms");
  assert.equal(msText(60_000), "60000 ms");
  // Through withTimeout, its clock (performance.now) held still while the call reads the
  // Deadline: the Deadline is exactly 0.3 ms ahead, or now; only what the messages say is
  // asserted, no timing.
  const realNow = performance.now;
  const frozen = (ahead: number): Promise<unknown> => {
    const now = realNow.call(performance);
    performance.now = () => now; // an own property, over Performance.prototype's
    try {
      const context = Context.empty.with(Deadline, now + ahead);
      return withTimeout(60_000, (t) => untilAborted(t.signal), { context });
    } finally {
      delete (performance as { now?: unknown }).now;
    }
  };
  const settled = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => e);
  const soon = await settled(frozen(0.3));
  assert.ok(soon instanceof TimeoutError, String(soon));
  assert.equal(
    soon.message,
    "Timed out waiting for <1 ms: the Deadline of its context came before its timeout of " +
      "60000 ms",
  );
  const passed = await settled(frozen(0));
  assert.ok(passed instanceof TimeoutError, String(passed));
  assert.equal(
    passed.message,
    "Timed out at once: the Deadline of its context passed <1 ms ago, before its timeout of " +
      "60000 ms; the block does not run",
  );
  assert.equal(performance.now, realNow, "the clock given back");
});

Deno.test("withTimeout given a hand-set Deadline at its own timeout's moment says they came at the same moment, not that the Deadline came before it", async () => {
  // Its clock (performance.now) held still while the call reads the Deadline, set at exactly
  // its own deadline (now + 5): taken on as its own, as one before it is. Before, the message
  // said the Deadline "came before its timeout". Only the message is asserted, no timing.
  const realNow = performance.now;
  const now = realNow.call(performance);
  performance.now = () => now; // an own property, over Performance.prototype's
  let timed: Promise<unknown>;
  try {
    const context = Context.empty.with(Deadline, now + 5);
    timed = withTimeout(5, (t) => untilAborted(t.signal), { context });
  } finally {
    delete (performance as { now?: unknown }).now;
  }
  const e = await timed.then(() => "resolved", (e: unknown) => e);
  assert.ok(e instanceof TimeoutError, String(e));
  assert.equal(
    e.message,
    "Timed out waiting for 5 ms: the Deadline of its context came at the same moment as its " +
      "timeout of 5 ms",
  );
  assert.equal(performance.now, realNow, "the clock given back");
});

Deno.test("withTimeout given only the context of a running withTimeout that timed out fails at once with that one's TimeoutError, without running its block", async () => {
  // Go's context alone carries its deadline. Before, a withTimeout given the context (no signal)
  // of an outer one that had timed out ran its block for its own time (here it returned "ran"),
  // although the Deadline that context showed had passed. No timed assertion: the outer block
  // goes on after its cancellation, so its timer has fired before the inner ones are called.
  let ran = 0;
  const block = () => {
    ran++;
    return "ran";
  };
  const inner: unknown[] = [];
  const outerErr = await withTimeout(20, async (outer) => {
    await untilAborted(outer.signal).catch(() => {}); // timed out: its Deadline has passed
    const context = outer.context;
    for (const ms of [60_000, Infinity]) {
      inner.push(await withTimeout(ms, block, { context }).catch((e) => e));
      // Not its own timeout: rethrown, not null.
      inner.push(await withTimeoutOrNull(ms, block, { context }).catch((e) => e));
    }
    // A context derived from it (a key added) carries it too.
    const derived = context.with(createContextKey<string>("user"), "ada");
    inner.push(await withTimeout(60_000, block, { context: derived }).catch((e) => e));
  }).catch((e) => e);
  assert.ok(outerErr instanceof TimeoutError, String(outerErr));
  assert.equal(ran, 0);
  assert.equal(inner.length, 5);
  for (const e of inner) assert.equal(e, outerErr);
});

Deno.test("withTimeout given only the context of a running withTimeout ends at that one's Deadline, with its TimeoutError", async () => {
  // No timed assertion: the inner timeouts' own times are Infinity or a minute, and their blocks
  // wait (bounded, 20 s) for a cancellation only the outer's Deadline can bring. Before, with no
  // signal from the outer, they ran to their own time: each block returned "not cancelled".
  const wait = (t: { signal: AbortSignal }) =>
    delay(20_000, { signal: t.signal }).then(() => "not cancelled");
  const inner: unknown[] = [];
  const outerErr = await withTimeout(50, async (outer) => {
    const context = outer.context;
    const settled = await Promise.allSettled([
      withTimeout(Infinity, wait, { context }),
      withTimeoutOrNull(60_000, wait, { context }),
      // Nested twice: the middle one has no Deadline of its own to give, the outer's still ends both.
      withTimeout(Infinity, (mid) => withTimeoutOrNull(Infinity, wait, { context: mid.context }), {
        context,
      }),
    ]);
    for (const s of settled) inner.push(s.status === "rejected" ? s.reason : s.value);
    // Their timers may fire before the outer's own: wait for it, so the outer rejects too.
    await untilAborted(outer.signal);
  }).catch((e) => e);
  assert.ok(outerErr instanceof TimeoutError, String(outerErr));
  assert.match(outerErr.message, /Timed out waiting for 50 ms/);
  assert.equal(inner.length, 3);
  for (const e of inner) assert.equal(e, outerErr);
});

Deno.test("withTimeoutOrNull given only the context of a withTimeout that took on a hand-set Deadline rethrows that one's TimeoutError", async () => {
  // The outer took the Deadline on as its own: the inner ends by it with the outer's error, not a
  // null of its own. Before, it ran to its own time (a minute; its block returned at 20 s).
  const at = performance.now() + 1_000;
  let inner: unknown = "not settled";
  const outerErr = await withTimeout(Infinity, async (scope) => {
    inner = await withTimeoutOrNull(
      60_000,
      (t) => delay(20_000, { signal: t.signal }).then(() => "not cancelled"),
      { context: scope.context },
    ).catch((e) => e);
  }, { context: Context.empty.with(Deadline, at) }).catch((e) => e);
  assert.ok(outerErr instanceof TimeoutError, String(outerErr));
  assert.match(outerErr.message, /the Deadline of its context came before its timeout/);
  assert.equal(inner, outerErr);
});

Deno.test("a withTimeout given only the context of a running withTimeout that it outlives still ends by that one's Deadline", async () => {
  // Not awaited by the outer block, the inner one outlives the outer scope, which finishes at
  // once, long before its Deadline: the inner one still ends by it, with the outer's kind of
  // TimeoutError. No timed assertion: its own time is Infinity and its block waits (bounded,
  // 20 s) for a cancellation only that Deadline can bring. Before, it returned "not cancelled".
  let inner: Promise<unknown> | undefined;
  const context = await withTimeout(50, (outer) => {
    inner = withTimeout(
      Infinity,
      (t) => delay(20_000, { signal: t.signal }).then(() => "not cancelled"),
      { context: outer.context },
    ).catch((e) => e);
    return outer.context;
  });
  const err = await inner;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 50 ms");
  // The outer's Deadline is stale now: a timeout given its context later runs to its own time.
  assert.equal(await withTimeout(60_000, () => "own time", { context }), "own time");
});

Deno.test("a timeout that outlives the withTimeout it is nested in keeps that one's Deadline in its context: a withTimeout given it after the outer has finished ends by it too", async () => {
  // The nested one is not awaited by the outer block, which returns at once, long before its
  // Deadline; only after the outer has finished does the nested block give its own context to two
  // more timeouts. The first ends by that Deadline, with the outer's TimeoutError, and so does the
  // nested one (its hand-over timer); the second, given the context once that Deadline has come,
  // fails at once without running its block. Before, the nested scope's context was the outer's,
  // stale as soon as the outer had finished: the first ran to its own time (Infinity; its block
  // returned "not cancelled" at 20 s) and the second ran its block. No timed assertion: a
  // cancellation only that Deadline can bring is waited for (bounded, 20 s).
  const outerOver = new CompletableDeferred<void>();
  let later: unknown = "not settled";
  let last: unknown = "not settled";
  let ran = false;
  let nested: Promise<unknown> | undefined;
  await withTimeout(50, (outer) => {
    nested = withTimeout(Infinity, async (inner) => {
      await outerOver.await();
      const context = inner.context;
      later = await withTimeout(
        Infinity,
        (t) => delay(20_000, { signal: t.signal }).then(() => "not cancelled"),
        { context },
      ).catch((e) => e);
      last = await withTimeoutOrNull(60_000, () => ran = true, { context }).catch((e) => e);
    }, { context: outer.context }).catch((e) => e);
  });
  outerOver.complete();
  const err = await nested;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 50 ms");
  assert.equal(later, err);
  assert.equal(last, err, "rethrown at once: the outer's, not its own timeout");
  assert.equal(ran, false);
});

Deno.test("the context of a timeout nested in a withTimeout keeps that one's Deadline after the nested one has finished, for as long as that one runs", async () => {
  // The nested one has a Deadline record of its own, done as it finishes; its context's Deadline
  // is still the outer's, in force while the outer runs (as when its context was the outer's):
  // a timeout given it then is nested in the outer and ends by the outer's Deadline. Once the
  // outer has finished too, it is stale. No timed assertion: the inner block waits (bounded,
  // 20 s) for a cancellation only the outer's Deadline can bring.
  let context: Context | undefined;
  let inner: unknown = "not settled";
  const outerErr = await withTimeout(50, async (outer) => {
    context = await withTimeout(Infinity, (nested) => nested.context, { context: outer.context });
    inner = await withTimeout(
      Infinity,
      (t) => delay(20_000, { signal: t.signal }).then(() => "not cancelled"),
      { context },
    ).catch((e) => e);
  }).catch((e) => e);
  assert.ok(outerErr instanceof TimeoutError, String(outerErr));
  assert.equal(outerErr.message, "Timed out waiting for 50 ms");
  assert.equal(inner, outerErr);
  assert.equal(await withTimeout(60_000, () => "own time", { context }), "own time");
});

/**
 * Runs `start` (it starts an outer withTimeout of 10 minutes) with that 600 000 ms timer taken out
 * of setTimeout (other timers are set as usual), and returns what it started: `fireOuter` fires
 * the outer's timer when the test says, so no timed assertion, and what it ends is checked
 * synchronously after it.
 */
function withOuterTimerTaken<T>(start: () => T): { outer: T; fireOuter: () => void } {
  const realSetTimeout = globalThis.setTimeout;
  let fire: (() => void) | undefined;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    if (ms !== 600_000) return realSetTimeout(fn, ms);
    fire = fn;
    return 0;
  }) as typeof setTimeout;
  let outer: T;
  try {
    outer = start();
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  const fireOuter = () => {
    assert.ok(fire !== undefined, "the outer's timer");
    fire();
  };
  return { outer, fireOuter };
}

Deno.test("20,000 timeouts nested each in the one before end by the outer's Deadline: its timer ends the chain without overflowing the stack", async () => {
  // Each is given only the context of the one before, so each is nested in that one's record,
  // and the outer's timer ends them all, depth first. A recursive walk threw "Maximum call stack
  // size exceeded" inside the timer (from about 10,000 deep), an uncaught error that ended the
  // process. The outer's timer is taken out of setTimeout and fired by the test once the chain
  // is built: no timed assertion, and the chain is whole when it fires (the innermost block waits,
  // bounded, 20 s, for the cancellation only that timer can bring).
  const depth = 20_000;
  const built = new CompletableDeferred<void>();
  let reached = 0;
  const nest = (left: number, context: Context): Promise<unknown> =>
    withTimeout(Infinity, (t) => {
      reached++;
      if (left > 0) return nest(left - 1, t.context);
      built.complete();
      return delay(20_000, { signal: t.signal }).then(() => "not cancelled");
    }, { context });
  const { outer, fireOuter } = withOuterTimerTaken(() =>
    withTimeout(600_000, async (scope) => {
      const chain = nest(depth - 1, scope.context);
      await built.await();
      return await chain;
    }).catch((e) => e)
  );
  await built.await();
  assert.equal(reached, depth);
  fireOuter();
  const err = await outer;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 600000 ms");
});

Deno.test("a timeout nested in one that finishes before their outer rejoins the outer's set: the outer's timer ends it in its own walk, after the outer's scope, and a timeout given its context then fails at once", async () => {
  // The middle one is nested in the outer (given only its context) and returns at once, leaving
  // the inner one (given only the middle's context, not awaited) running: the inner one rejoins
  // the outer's set, as the outer still runs with the same Deadline. Before, it got a timer of its
  // own for the rest of the time: the outer's timer did not reach it (it was cancelled a macrotask
  // later, or sooner, by a timer of its own), and a timeout given its context meanwhile nested in
  // it and ran its block though the Deadline had come. The outer's timer is taken out of
  // setTimeout and fired by the test: no timed assertion, and everything it ends is checked
  // synchronously after it. The set holds nothing once the inner one has finished.
  const order: string[] = [];
  const middleOver = new CompletableDeferred<void>();
  let innerScope: { signal: AbortSignal; context: Context } | undefined;
  let inner: Promise<unknown> | undefined;
  let outerContext: Context | undefined;
  const { outer, fireOuter } = withOuterTimerTaken(() =>
    withTimeout(600_000, async (o) => {
      outerContext = o.context;
      o.signal.addEventListener("abort", () => order.push("outer"));
      await withTimeout(Infinity, (middle) => {
        inner = withTimeout(Infinity, (t) => {
          innerScope = t;
          t.signal.addEventListener("abort", () => order.push("inner"));
          return delay(20_000, { signal: t.signal }).then(() => "not cancelled");
        }, { context: middle.context }).catch((e) => e);
      }, { context: o.context });
      middleOver.complete();
      await untilAborted(o.signal);
    }).catch((e) => e)
  );
  await middleOver.await();
  const record = runningTimeout(outerContext!)!;
  fireOuter();
  assert.deepEqual(order, ["outer", "inner"], "in the outer's walk, after its scope");
  let ran = false;
  const late = withTimeoutOrNull(900_000, () => ran = true, { context: innerScope!.context });
  const err = await outer;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 600000 ms");
  assert.equal(await inner, err);
  assert.equal(await late.catch((e) => e), err, "at once, with the outer's TimeoutError");
  assert.equal(ran, false);
  assert.equal(record.nested?.size ?? 0, 0);
});

Deno.test("a nested timeout that a cancel in the outer's walk finishes before the walk reaches it hands its own nested ones to that walk", async () => {
  // Both nested in the outer (given its context); the second also follows the first's signal,
  // and its block returns at once, leaving a lazy child nobody starts and a third timeout nested
  // in it (given its context alone). The outer's walk cancels the first, whose signal cancels the
  // second, which finishes at once (its lazy child ends with it), before the walk reaches it:
  // the third joins the outer's set, still being walked, and is ended there. Before, the third
  // got a timer of its own (for the rest of the outer's time: 10 minutes, as the test fires the
  // outer's timer early), and was not cancelled by the outer's.
  const order: string[] = [];
  const started = new CompletableDeferred<void>();
  const waits: Promise<unknown>[] = [];
  const { outer, fireOuter } = withOuterTimerTaken(() =>
    withTimeout(600_000, (o) => {
      o.signal.addEventListener("abort", () => order.push("outer"));
      let first: AbortSignal | undefined;
      waits.push(
        withTimeout(Infinity, (a) => {
          first = a.signal;
          a.signal.addEventListener("abort", () => order.push("first"));
          return untilAborted(a.signal);
        }, { context: o.context }).catch((e) => e),
      );
      waits.push(
        withTimeout(Infinity, (b) => {
          b.signal.addEventListener("abort", () => order.push("second"));
          waits.push(
            withTimeout(Infinity, (c) => {
              c.signal.addEventListener("abort", () => order.push("third"));
              return delay(20_000, { signal: c.signal }).then(() => "not cancelled");
            }, { context: b.context }).catch((e) => e),
          );
          b.launch(() => {}, { lazy: true });
        }, { context: o.context, signal: first }).catch((e) => e),
      );
      started.complete();
      return untilAborted(o.signal);
    }).catch((e) => e)
  );
  await started.await();
  fireOuter();
  assert.deepEqual(order, ["outer", "first", "second", "third"]);
  const err = await outer;
  assert.ok(err instanceof TimeoutError, String(err));
  for (const e of await Promise.all(waits)) assert.equal(e, err);
});

Deno.test("a timeout that rejoined the set of the outer it is nested in leaves it as it finishes", async () => {
  // The middle one finishes first, the inner one joins the outer's set, then finishes before
  // the outer: it leaves that set, not the middle's (or the outer keeps its record until it ends).
  const gate = new CompletableDeferred<string>();
  await withTimeout(600_000, async (o) => {
    const record = runningTimeout(o.context)!;
    let inner: Promise<unknown> | undefined;
    await withTimeout(Infinity, (middle) => {
      inner = withTimeout(Infinity, () => gate.await(), { context: middle.context });
    }, { context: o.context });
    assert.equal(record.nested?.size, 1, "the inner one, in the outer's set");
    gate.complete("done");
    assert.equal(await inner, "done");
    assert.equal(record.nested?.size ?? 0, 0, "it left the outer's set");
  });
});

Deno.test("the context of a withTimeout whose own time came first keeps the later Deadline it replaced once it has finished: a timeout given it then nests in the outer still running", async () => {
  // The inner one's own time (5 minutes) comes before the outer's (10): its scope's context holds
  // its own Deadline. Once it (and a timeout nested in it) has finished, their contexts' Deadline
  // is the outer's again, in force while the outer runs: a timeout given either is nested in the
  // outer and ends by its timer. Before, both contexts had no Deadline at all once the inner one
  // had finished (stale), so such a timeout ran to its own time (Infinity) under the outer. The
  // outer's timer is taken out of setTimeout and fired by the test: no timed assertion.
  const aborted: string[] = [];
  const deadlines: [number | undefined, number | undefined][] = [];
  const started = new CompletableDeferred<void>();
  const waits: Promise<unknown>[] = [];
  const { outer, fireOuter } = withOuterTimerTaken(() =>
    withTimeout(600_000, async (o) => {
      const contexts = await withTimeout(300_000, async (inner) => {
        const nested = await withTimeout(Infinity, (n) => n.context, { context: inner.context });
        return [inner.context, nested];
      }, { context: o.context });
      for (const [i, context] of contexts.entries()) {
        deadlines.push([liveDeadline(context), liveDeadline(o.context)]);
        waits.push(
          withTimeout(Infinity, (t) => {
            t.signal.addEventListener("abort", () => aborted.push(`given context ${i}`));
            return delay(20_000, { signal: t.signal }).then(() => "not cancelled");
          }, { context }).catch((e) => e),
        );
      }
      started.complete();
      await untilAborted(o.signal);
    }).catch((e) => e)
  );
  await started.await();
  for (const [i, [live, outerLive]] of deadlines.entries()) {
    assert.ok(live !== undefined && live === outerLive, `context ${i}: ${live}, ${outerLive}`);
  }
  fireOuter();
  assert.deepEqual(aborted, ["given context 0", "given context 1"]);
  const err = await outer;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 600000 ms");
  for (const e of await Promise.all(waits)) assert.equal(e, err);
});

Deno.test("the context of a withTimeout whose own time came before a hand-set Deadline keeps that Deadline once it has finished", async () => {
  // The hand-set Deadline (10 minutes ahead) comes after the inner timeout's own time (5), which
  // a timeout nested in it takes too: once both have finished their contexts hold the hand-set
  // one again, as the context they were given does, so a withTimeout given either takes it as its
  // own (its scope's context holds it). Before, they held no Deadline (stale): that withTimeout
  // had none but its own (Infinity).
  const at = performance.now() + 600_000;
  const hand = Context.empty.with(Deadline, at);
  const contexts = await withTimeout(300_000, async (inner) => {
    const nested = await withTimeout(Infinity, (n) => n.context, { context: inner.context });
    return [inner.context, nested];
  }, { context: hand });
  for (const [i, context] of contexts.entries()) {
    assert.equal(liveDeadline(context), at, `context ${i}`);
    const own = await withTimeout(Infinity, (t) => t.context.get(Deadline), { context });
    assert.equal(own, at, `context ${i}`);
  }
});

Deno.test("timeouts given each the last one's context, each with its own earlier time, keep only the Deadline's source: the contexts between are collected", async () => {
  // Each inner timeout's own time (5 minutes) comes before the outer's Deadline (10), in force in
  // the last one's context (its record has finished: the outer's, through the one it replaced).
  // Each keeps the context it had that Deadline from, not the context it was given: a loop of them
  // chained every context it made (kept alive, and walked by every read of the Deadline).
  const res = await evalScript(
    `
    import { withTimeout } from "./mod.ts";
    import { liveDeadline } from "./src/context.ts";
    import { collectUntil } from "./tests/support.ts";
    const refs = [];
    await withTimeout(600_000, async (outer) => {
      let context = outer.context;
      for (let i = 0; i < 30; i++) {
        context = await withTimeout(300_000, (t) => t.context, { context });
        if (i >= 10 && i < 20) refs.push(new WeakRef(context));
      }
      // (collectUntil derefs in a job apart from its collections: a deref keeps its target for
      // the rest of the job.)
      const left = () => refs.filter((r) => r.deref() !== undefined).length;
      await collectUntil(() => left() === 0, () => "the contexts between, " + left() + " still live");
      if (liveDeadline(context) !== liveDeadline(outer.context)) throw new Error("Deadline lost");
    });
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a withTimeout that finishes inside its own timer's cancel still ends the timeouts nested in it", async () => {
  // The outer block returns at once, leaving a nested timeout running (given only its context)
  // and a lazy child nobody starts: the timer's cancel ends that child at once and with it the
  // outer scope, inside the cancel. Before the nested ones were cancelled after the scope, its
  // finishing emptied their set first: the inner one ran on (its block returned at 20 s).
  let inner: Promise<unknown> | undefined;
  const outerErr = await withTimeout(50, (outer) => {
    inner = withTimeout(
      Infinity,
      (t) => delay(20_000, { signal: t.signal }).then(() => "not cancelled"),
      { context: outer.context },
    ).catch((e) => e);
    outer.launch(() => {}, { lazy: true });
  }).catch((e) => e);
  assert.ok(outerErr instanceof TimeoutError, String(outerErr));
  assert.equal(await inner, outerErr);
});

Deno.test("timeouts nested in a running withTimeout leave its set as they finish: 100,000 under one outer keep nothing of theirs", async () => {
  // Each timeout given only the outer's context joins the outer's set of nested timeouts (its
  // timer cancels them); each must leave it as it finishes, however it finishes, or the set (and
  // each scope it holds) grows for as long as the outer runs.
  await withTimeout(600_000, async (outer) => {
    const context = outer.context;
    // No set until one nests: a withTimeout makes none for nothing.
    assert.equal(runningTimeout(context)?.nested, null, "none before the first");
    const record = runningTimeout(context)!;
    assert.ok(record !== null, "the outer's record");
    for (let i = 0; i < 100_000; i++) await withTimeout(Infinity, () => i, { context });
    assert.equal(record.nested?.size ?? 0, 0, "after 100,000 in turn");
    await Promise.all(
      Array.from(
        { length: 1_000 },
        (_, i) => withTimeoutOrNull(60_000, () => delay(0).then(() => i), { context }),
      ),
    );
    assert.equal(record.nested?.size ?? 0, 0, "after 1,000 at once");
    const boom = new Error("boom");
    await assert.rejects(
      withTimeout(Infinity, () => Promise.reject(boom), { context }),
      (e) => e === boom,
    );
    await assert.rejects(
      withTimeoutOrNull(Infinity, () => {
        throw boom;
      }, { context }),
      (e) => e === boom,
    );
    // Refused before a scope is made: never joins.
    await assert.rejects(withTimeout(Infinity, () => 1, { context, signal: AbortSignal.abort() }));
    await assert.rejects(withTimeout(Infinity, 5 as never, { context }), TypeError);
    // Cancelled by its own signal while it runs (it is in the set meanwhile).
    const controller = new AbortController();
    const running = withTimeout(Infinity, (t) => untilAborted(t.signal), {
      context,
      signal: controller.signal,
    });
    assert.equal(record.nested?.size ?? 0, 1, "one running");
    controller.abort();
    await assert.rejects(running, CancellationError);
    assert.equal(record.nested?.size ?? 0, 0, "after the failures and cancellations");
  });
});

Deno.test(
  "the timer a nested timeout gets when the outer withTimeout finishes first is cleared when it finishes before the Deadline: no timer is left behind",
  {
    sanitizeOps: true, // what it checks: a timer left armed fails the test as a leaking op
  },
  async () => {
    // The outer returns at once, a minute before its Deadline, leaving the nested timeouts running
    // (given only its context): each gets a timer for the rest of that minute, which must go when
    // it finishes first, or it keeps the process alive until the Deadline.
    const gate = new CompletableDeferred<string>();
    const inner: Promise<unknown>[] = [];
    await withTimeout(60_000, (outer) => {
      const context = outer.context;
      inner.push(withTimeout(Infinity, () => gate.await(), { context }));
      inner.push(withTimeoutOrNull(120_000, () => gate.await(), { context }));
    });
    gate.complete("done");
    assert.deepEqual(await Promise.all(inner), ["done", "done"]);
  },
);

Deno.test("an outer withTimeout cancelled by its caller does not end the timeouts nested in it by context alone: they end by its Deadline, with its TimeoutError", async () => {
  // The context carries only the Deadline (the outer's other cancellations reach a scope given
  // its signal). The outer's caller cancels it at once: the nested one is still running when the
  // outer has settled (no timer can run between the two), and ends by the outer's Deadline.
  // Before nesting, it ran to its own time (Infinity; its block returned at 20 s).
  const caller = new AbortController();
  const cause = new Error("the caller gave up");
  let innerSignal: AbortSignal | undefined;
  let inner: Promise<unknown> | undefined;
  const outerErr = await withTimeout(200, (outer) => {
    inner = withTimeout(Infinity, (t) => {
      innerSignal = t.signal;
      return delay(20_000, { signal: t.signal }).then(() => "not cancelled");
    }, { context: outer.context }).catch((e) => e);
    caller.abort(cause);
    return untilAborted(outer.signal);
  }, { signal: caller.signal }).catch((e) => e);
  assert.ok(
    outerErr instanceof CancellationError && !(outerErr instanceof TimeoutError),
    String(outerErr),
  );
  assert.equal(outerErr.cause, cause);
  assert.equal(innerSignal?.aborted, false, "the caller's cancellation did not reach it");
  const err = await inner;
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(err.message, "Timed out waiting for 200 ms");
});

Deno.test("withTimeoutOrNull nested by context alone in a withTimeoutOrNull rethrows the outer's TimeoutError, and the outer resolves null for it", async () => {
  // The outer block awaits the inner one (not given its signal): the outer's timer ends it with
  // the outer's TimeoutError, which it rethrows (not its own timeout), and the outer takes it as
  // its own timeout. Before nesting, the inner ran to its own end (its block returned at 20 s).
  let innerErr: unknown = "not settled";
  const wait = (t: { signal: AbortSignal }) =>
    delay(20_000, { signal: t.signal }).then(() => "not cancelled");
  const got = await withTimeoutOrNull(50, async (outer) => {
    try {
      return await withTimeoutOrNull(Infinity, wait, { context: outer.context });
    } catch (e) {
      innerErr = e;
      throw e;
    }
  });
  assert.equal(got, null);
  assert.ok(innerErr instanceof TimeoutError, String(innerErr));
  assert.equal((innerErr as Error).message, "Timed out waiting for 50 ms");
  // Once the outer's timer has fired, one nested in it fails at once with that error, and the
  // outer still resolves null.
  let ran = false;
  innerErr = "not settled";
  const late = await withTimeoutOrNull(20, async (outer) => {
    await untilAborted(outer.signal).catch(() => {});
    try {
      return await withTimeoutOrNull(60_000, () => ran = true, { context: outer.context });
    } catch (e) {
      innerErr = e;
      throw e;
    }
  });
  assert.equal(late, null);
  assert.equal(ran, false);
  assert.ok(innerErr instanceof TimeoutError, String(innerErr));
  assert.equal((innerErr as Error).message, "Timed out waiting for 20 ms");
});

/**
 * Starts `count` timeouts, each given only the last one's context (the first, `context`), the
 * i-th of `ms(i)`, each waiting on a gate of its own; `check(i, next, last)` runs as each has
 * started (`next` its context, `last` the one it was given). Answers the innermost's context,
 * each one's record, and `finish()`: it completes them innermost first, waiting for each.
 */
function timeoutChain(
  count: number,
  context: Context,
  ms: (i: number) => number,
  check?: (i: number, next: Context, last: Context) => void,
) {
  const gates: CompletableDeferred<void>[] = [];
  const waits: Promise<unknown>[] = [];
  const records: NonNullable<ReturnType<typeof runningTimeout>>[] = [];
  for (let i = 0; i < count; i++) {
    const gate = new CompletableDeferred<void>();
    let next: Context | undefined;
    waits.push(withTimeout(ms(i), (t) => {
      next = t.context;
      return gate.await();
    }, { context }));
    check?.(i, next!, context);
    context = next!;
    records.push(runningTimeout(context)!);
    gates.push(gate);
  }
  return {
    innermost: context,
    records,
    finish: async () => {
      for (let i = count - 1; i >= 0; i--) {
        gates[i].complete();
        await waits[i];
      }
    },
  };
}

Deno.test("a read of a Deadline points the finished nested timeouts it walks past at the one in force: the walk does not grow with every one finished, and they are let go", async () => {
  // A chain of 50 timeouts, each given only the last one's context (nested in the outer, each in
  // the one before), finished innermost first while the outer runs: each finished record named
  // the one it was nested in, running as it finished, so a read of the innermost's context
  // walked all 50 (and kept each alive) for as long as that context lived. The first read now
  // points each of them at the outer's record, and at nothing once the outer has finished.
  let innermost: Context | undefined;
  const records: NonNullable<ReturnType<typeof runningTimeout>>[] = [];
  await withTimeout(600_000, async (o) => {
    const outer = runningTimeout(o.context)!;
    const chain = timeoutChain(50, o.context, () => Infinity);
    records.push(...chain.records);
    innermost = chain.innermost;
    assert.equal(new Set(records).size, 50, "a record each");
    assert.ok(records.every((r) => r !== outer), "none is the outer's");
    await chain.finish();
    assert.ok(records.every((r) => r.done), "all finished");
    assert.equal(liveDeadline(innermost), liveDeadline(o.context), "the outer's, in force");
    for (const [i, r] of records.entries()) assert.equal(r.under, outer, `record ${i}`);
    assert.equal(runningTimeout(innermost), outer, "a timeout given it nests in the outer");
  });
  assert.equal(liveDeadline(innermost!), undefined, "stale once the outer has finished");
  assert.equal(records[49].under, null, "it keeps nothing");
});

Deno.test("a read of a Deadline points the finished timeouts whose own earlier time replaced it at the context where it is in force: the walk does not grow with every one finished", async () => {
  // A chain of 30 timeouts, each given only the last one's context with a time of its own before
  // its Deadline (so each keeps the last one's context as the one it replaced), finished
  // innermost first while the outer runs: a read of the innermost's context stepped back through
  // all 30. The first read now points each at the outer's context, and at nothing once the outer
  // has finished. Each one's time is 15 s short of the last one's (the first's 100 s short of the
  // outer's), so that a stall of the host between two of them does not make one nested instead.
  let innermost: Context | undefined;
  const records: NonNullable<ReturnType<typeof runningTimeout>>[] = [];
  await withTimeout(600_000, async (o) => {
    const chain = timeoutChain(30, o.context, (i) => 500_000 - i * 15_000, (i, next, last) => {
      assert.equal(runningTimeout(next)!.replaced, last, `${i}: the last one's context`);
    });
    records.push(...chain.records);
    innermost = chain.innermost;
    await chain.finish();
    assert.equal(liveDeadline(innermost), liveDeadline(o.context), "the outer's, in force");
    for (const [i, r] of records.entries()) assert.equal(r.replaced, o.context, `record ${i}`);
    assert.equal(runningTimeout(innermost), runningTimeout(o.context), "a timeout nests in it");
  });
  assert.equal(liveDeadline(innermost!), undefined, "stale once the outer has finished");
  assert.equal(records[29].replaced, null, "it keeps nothing");
});

Deno.test("withTimeout starts its scope and cancels it, and the timeouts nested in it, at the deadline by JobSupport's own start and cancel, not ones a caller redefined on a job's prototype", async () => {
  // Before, runTimed ran `scope.start()` and the expiry `scope.cancel(error)`, the prototype's at
  // that call: a redefined `start` made withTimeout throw it, a redefined `cancel` left an
  // expired scope (and each nested one) running past its deadline.
  const log: string[] = [];
  const { calls } = await withJobMembersRedefined(JOB_MEMBERS, async () => {
    const outer = withTimeout(20, async (task) => {
      // Nested by its context (read by kcoro's `contextOf`: the test's own read of the redefined
      // getter would throw): the outer's expiry cancels it, in the same walk.
      await withTimeout(10_000, async (inner) => {
        log.push("nested");
        await untilAborted(signalOfJob(inner as unknown as JobSupport<unknown>)); // not the getter
      }, { context: contextOf(task as unknown as JobSupport<unknown>) });
    });
    await assert.rejects(within(outer, 10_000, "the timeout to expire"), TimeoutError);
    assert.equal(await withTimeoutOrNull(10_000, () => 1), 1);
  });
  assert.deepEqual(calls, []);
  assert.deepEqual(log, ["nested"]);
});

// TypeScript scopes owning native scopes: cancellation from the TypeScript side reaching native
// coroutines (sleeps and channel waits fail with KC_EINTR), cancellation from the native side
// reaching the TypeScript scope and its JavaScript tasks, and no scope completing before its
// native children. Native children are built-ins that report through their cells; nothing
// here waits on a sleep for synchronisation.
import assert from "node:assert/strict";
import {
  abortListeners,
  catchReported,
  evalScript,
  JOB_MEMBERS,
  nestThroughSignals,
  shutdownScheduler,
  until,
  untilAborted,
  within,
  withJobMembersRedefined,
} from "./support.ts";
import { isCancelledJob, type JobSupport, signalOfJob } from "../src/job.ts";
import {
  CancellationError,
  Channel,
  codecs,
  CompletableDeferred,
  Context,
  type CoroutineScope,
  coroutineScope,
  createScope,
  Deadline,
  InvalidHandleError,
  KcoroError,
  library,
  NativeScope,
  nativeScope,
  produce,
  runtime,
  Status,
  TimeoutError,
  withTimeout,
} from "../mod.ts";
import { librarySymbols } from "../ffi/load.ts";

const MINUTE = 60_000n;

/** Cells of a three-cell built-in: [arg, done, status]. */
function cells(arg: bigint | number): BigUint64Array {
  return runtime().cells([BigInt(arg), 0n, 0n]);
}
const done = (c: BigUint64Array) => c[1] === 1n;
const status = (c: BigUint64Array) => Number(BigInt.asIntN(64, c[2]));

/** A few turns of the event loop (for asserting that something has not happened yet). */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r));
}

runtime();
const liveBefore = () => runtime().stats().live;

Deno.test("cancelling a TypeScript scope reaches its native children: sleeps and channel waits end with KC_EINTR", async () => {
  using ch = new Channel<bigint>(0, { codec: codecs.u64 });
  const sleeper = cells(MINUTE), receiver = cells(ch.handle);
  let jsTask: unknown;
  const before = liveBefore();
  await assert.rejects(
    coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      ns.launch("cancellable-sleeper", sleeper);
      ns.launch("receiver", receiver);
      scope.launch((task) => untilAborted(task.signal).catch((e) => jsTask = e));
      assert.equal(ns.live, 2);
      await null;
      scope.cancel();
    }),
    CancellationError,
  );
  // The scope settled after both native children had finished, each interrupted.
  for (const c of [sleeper, receiver]) {
    assert.equal(done(c), true);
    assert.equal(status(c), Status.EINTR);
  }
  assert.ok(jsTask instanceof CancellationError, String(jsTask));
  assert.equal(jsTask.message, "Cancelled"); // the scope's cancel(), given no reason
  // No native coroutine outlived its scope: each had returned when the scope settled; the
  // scheduler counts one out just after it lets the scope know (its stack going back).
  await until(() => liveBefore() === before, "the children's stacks to go back", 5_000);
  // The receive was withdrawn, not left queued: a value sent now stays in the channel.
  assert.deepEqual(ch.trySend(1n), { state: "full" });
});

Deno.test("cancelling a TypeScript scope ends its native echo on its own conflated channel and chanSender to one, whose channel operations never wait", async () => {
  // Neither ever waits (the echo's receive always finds the value its send put back, the
  // chanSender's sends never block), so neither sees KC_EINTR in a channel operation: they
  // look at the scope's cancellation at their turn, every 256 values. Before, both ran on in
  // the cancelled scope, and the scope never settled (the bound below failed the test).
  using ch = new Channel("conflated", { codec: codecs.u64 });
  using sink = new Channel("conflated", { codec: codecs.u64 });
  assert.equal(ch.trySend(42n).state, "ok");
  const max = 2n ** 64n - 1n;
  const echo = runtime().cells([BigInt(ch.handle), BigInt(ch.handle), 0n, 0n]);
  const sender = runtime().cells([BigInt(sink.handle), 0n, max, 0n, 0n]);
  const scoped = coroutineScope(async (scope) => {
    const ns = nativeScope(scope);
    ns.launch("echo", echo);
    ns.launch("chanSender", sender);
    // Past a turn each: running, then cancelled.
    await until(() => echo[2] > 256n && sender[3] > 256n, "the echo and the chanSender to run");
    scope.cancel();
  });
  await assert.rejects(within(scoped, 60_000, "the cancelled scope to settle"), CancellationError);
  assert.equal(echo[3], 1n); // done
  assert.equal(sender[4], 1n);
  // The echo stopped between values (nothing in hand): the value is still in the channel.
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 42n });
});

Deno.test("String() of a scope's native children job prints kcoro's own state: a `state` getter the caller put on it does not run", async () => {
  // It printed `this.state`: a getter that throws threw out of String(job), and one that
  // answered a string of 2**28 characters printed it whole.
  const spin = runtime().cells([2n ** 64n - 1n, 0n]);
  // deno-lint-ignore require-await -- a block as a caller writes one; nothing in it to wait for
  const scoped = coroutineScope(async (scope) => {
    nativeScope(scope).launch("spin", spin);
    const [children] = scope.job.children;
    assert.equal(String(children), "NativeChildren(active)");
    for (
      const get of [() => "x".repeat(2 ** 28), () => {
        throw new Error("the caller's state getter");
      }]
    ) {
      Object.defineProperty(children, "state", { get, configurable: true });
      assert.equal(String(children), "NativeChildren(active)");
    }
    scope.cancel();
  });
  await assert.rejects(within(scoped, 60_000, "the cancelled scope to settle"), CancellationError);
});

Deno.test("cancelling a TypeScript scope ends its native spin at its next turn, done as it was", async () => {
  // Its rounds never run out (2^64 - 1) and it never waits: it sees the cancellation at its
  // turn, every 2^20 rounds. Before, that turn looked only for a shutdown: the spin ran on in
  // the cancelled scope, which never settled (the bound below failed the test).
  const spin = runtime().cells([2n ** 64n - 1n, 0n]);
  const scoped = coroutineScope(async (scope) => {
    nativeScope(scope).launch("spin", spin);
    await null;
    scope.cancel();
  });
  await assert.rejects(within(scoped, 60_000, "the cancelled scope to settle"), CancellationError);
  assert.equal(spin[1], 0n); // the work not done: done as it was
});

/**
 * Launches, into `scope`'s native scope, the loops that never wait: an echo on its own conflated
 * channel, a chanSender to a conflated channel and an endless spin. Their cells, and a check of
 * how they ended once the scope has settled: each stopped at a turn (the echo with nothing in
 * hand, the spin's work not done).
 */
function launchEndlessLoops(scope: CoroutineScope, disposer: DisposableStack): () => void {
  const ch = disposer.use(new Channel("conflated", { codec: codecs.u64 }));
  const sink = disposer.use(new Channel("conflated", { codec: codecs.u64 }));
  assert.equal(ch.trySend(42n).state, "ok");
  const max = 2n ** 64n - 1n;
  const echo = runtime().cells([BigInt(ch.handle), BigInt(ch.handle), 0n, 0n]);
  const sender = runtime().cells([BigInt(sink.handle), 0n, max, 0n, 0n]);
  const spin = runtime().cells([max, 0n]);
  const ns = nativeScope(scope);
  ns.launch("echo", echo);
  ns.launch("chanSender", sender);
  ns.launch("spin", spin);
  return () => {
    assert.equal(echo[3], 1n); // done
    assert.equal(sender[4], 1n);
    assert.equal(spin[1], 0n); // the work not done: done as it was
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 42n });
  };
}

Deno.test("a withTimeout's deadline ends the native loops that never wait of a scope it does not cancel (given only its context)", async () => {
  // The scope is given the timeout's context, not its signal: the timer cancels the timeout's
  // own scope, not this one, whose native children carry the Deadline (README: native children
  // end by it). None of them ever waits, so none sees it as a channel operation's KC_ETIME: they
  // look at it at their turn. Before, they looked there only for a cancellation and ran on
  // past it, and the scope never settled (the bound below failed the test).
  using disposer = new DisposableStack();
  let scoped: Promise<void> | undefined;
  let check: (() => void) | undefined;
  await assert.rejects(
    withTimeout(50, async (outer) => {
      scoped = coroutineScope((scope) => {
        check = launchEndlessLoops(scope, disposer);
      }, { context: outer.context });
      await untilAborted(outer.signal);
    }),
    TimeoutError,
  );
  // It completes (nothing cancelled it): its children stopped at the deadline.
  await within(scoped!, 60_000, "the scope whose deadline passed to settle");
  check!();
});

Deno.test("a Deadline set by hand ends the native loops that never wait of the scope given it, which it does not cancel", async () => {
  // Nothing arms a timer for a hand-set Deadline (README): the native children's turns were the
  // only stop, and before they looked there only for a cancellation (the bound below failed).
  using disposer = new DisposableStack();
  let check: (() => void) | undefined;
  const context = Context.empty.with(Deadline, performance.now() + 50);
  const scoped = coroutineScope((scope) => {
    check = launchEndlessLoops(scope, disposer);
  }, { context });
  await within(scoped, 60_000, "the scope whose deadline passed to settle");
  check!();
});

Deno.test("a TypeScript scope does not complete before its native children", async () => {
  using ch = new Channel<bigint>(0, { codec: codecs.u64 });
  const receiver = cells(ch.handle);
  let settled = false;
  const scope = createScope();
  nativeScope(scope).launch("receiver", receiver);
  const joined = scope.join().then(() => settled = true); // no JavaScript task at all
  await turns();
  assert.equal(settled, false);
  assert.equal(scope.state, "completing");
  assert.equal(scope.children.length, 1); // the job standing for the native children
  await ch.send(7n); // the native receiver takes it and finishes
  await joined;
  assert.equal(done(receiver), true);
  assert.equal(status(receiver), 0);
  assert.equal(scope.state, "completed");
  assert.equal(scope.children.length, 0);
});

Deno.test("createScope({ parent }) of the job standing for a scope's native children: a failed launch in it is reported once, by that job", async () => {
  // That job (among its owner's children) reports its own failure where its owner takes none
  // (a free-standing scope): a scope made its child must take its launches' failures, or the
  // launch reported one that the job reported again.
  using reported = catchReported();
  using ch = new Channel<bigint>(0, { codec: codecs.u64 });
  const receiver = cells(ch.handle);
  const owner = createScope();
  nativeScope(owner).launch("receiver", receiver);
  const [natives] = owner.children;
  assert.ok(natives !== undefined, "the job standing for the native children");
  const boom = new Error("in a scope under the native children's job");
  const child = createScope({ parent: natives });
  child.launch(() => Promise.reject(boom));
  await owner.join(); // the failure cancels the native receiver, then the owner
  assert.equal(status(receiver), Status.EINTR);
  assert.equal(natives.state, "cancelled");
  assert.equal(child.state, "cancelled");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors, [boom]);
});

Deno.test("a task's native children keep the task, and so its scope, running", async () => {
  using ch = new Channel<bigint>(0, { codec: codecs.u64 });
  const receiver = cells(ch.handle);
  const order: string[] = [];
  const result = coroutineScope(async (scope) => {
    const task = scope.launch((t) => {
      nativeScope(t).launch("receiver", receiver);
      order.push("task body returned");
    });
    await turns();
    assert.equal(task.state, "completing"); // body done, native child running
    order.push("sending");
    await ch.send(1n);
    await task.join();
    order.push("task joined");
  });
  await result;
  assert.deepEqual(order, ["task body returned", "sending", "task joined"]);
  assert.equal(status(receiver), 0);
});

Deno.test("a native child cancelling its own native scope cancels the TypeScript scope and its tasks", async () => {
  const sleeper = cells(MINUTE), canceller = cells(0);
  let jsTask: unknown;
  await assert.rejects(
    coroutineScope((scope) => {
      const ns = nativeScope(scope);
      scope.launch((task) => untilAborted(task.signal).catch((e) => jsTask = e));
      ns.launch("cancellable-sleeper", sleeper);
      ns.launch("cancel-scope", canceller); // as C code calling kc_scope_cancel would
    }),
    (e) => e instanceof CancellationError && /native scope was cancelled/.test(e.message),
  );
  assert.equal(status(canceller), 1);
  assert.equal(status(sleeper), Status.EINTR);
  assert.ok(jsTask instanceof CancellationError, String(jsTask));
  assert.equal(jsTask.message, "Cancelled: the native scope was cancelled"); // the native cancel's
});

Deno.test("kc_scope_cancel on the handle, from outside TypeScript, cancels the owning scope", async () => {
  const sleeper = cells(MINUTE);
  const scope = createScope();
  const ns = nativeScope(scope);
  ns.launch("cancellable-sleeper", sleeper);
  const sym = library().symbols("test");
  assert.equal(sym.kc_scope_cancel(ns.handle), 1); // what C code holding the handle would do
  await scope.join();
  assert.equal(scope.state, "cancelled");
  assert.equal(status(sleeper), Status.EINTR);
  assert.throws(() => nativeScope(scope), CancellationError); // completed
  assert.throws(() => ns.launch("cancellable-sleeper", cells(1)), InvalidHandleError);
});

Deno.test("a task's cancel still cancels its native scope after an \"abort\" Event dispatched on the task's signal, which aborts nothing", async () => {
  // The native scope listened to the task's signal with `once`: the event dropped its listener
  // (which changes nothing while the signal has not aborted), and the cancel then left the
  // sleeper running: the scope waited out its minute.
  const sleeper = cells(MINUTE);
  const scope = createScope();
  const ns = nativeScope(scope);
  ns.launch("cancellable-sleeper", sleeper);
  scope.signal.dispatchEvent(new Event("abort"));
  assert.equal(ns.isCancelled, false, "no abort: the native scope runs on");
  scope.cancel();
  await within(scope.join(), 30_000, "the cancelled scope to settle");
  assert.equal(scope.state, "cancelled");
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("a native cancellation with no child running reaches the scope at the next launch", async () => {
  const scope = createScope();
  const ns = nativeScope(scope);
  assert.equal(ns.cancel(), true);
  assert.equal(ns.isCancelled, true);
  assert.equal(scope.isActive, true); // nothing was watching: no child ran
  assert.throws(() => ns.launch("cancellable-sleeper", cells(1)), CancellationError);
  assert.equal(scope.isCancelled, true);
  await scope.join();
});

/**
 * `nestThroughSignals(depth, …, { onBlock })`, cancelling the root: `inGap` runs, from an abort
 * listener on the signal it follows, for each level whose cancel waits in the queue there (its
 * signal not aborted yet). Resolves with how many levels `inGap` ran for, once the root has
 * settled.
 */
async function cancelThroughQueue(
  depth: number,
  onBlock: (s: CoroutineScope) => void,
  inGap: (s: CoroutineScope) => void,
): Promise<number> {
  let gaps = 0;
  const { root, outcome } = await nestThroughSignals(depth, (s) => {
    if (s.signal.aborted) return; // cancelled at once: no gap
    gaps++;
    inGap(s);
  }, { onBlock });
  root.cancel();
  assert.equal(await outcome, "CancellationError");
  return gaps;
}

/**
 * Launches a sleeper on the task's native scope (`nativeScope(s)`) in every gap of
 * `cancelThroughQueue(40, onBlock, …)`, and asserts that some gap came, that each launch threw
 * CancellationError, and that no native child ran or was left.
 */
async function assertLaunchInGapCancelled(onBlock: (s: CoroutineScope) => void): Promise<void> {
  const launched: BigUint64Array[] = [];
  const outcomes: string[] = [];
  const before = liveBefore();
  const gaps = await cancelThroughQueue(40, onBlock, (s) => {
    const ns = nativeScope(s);
    const c = cells(MINUTE);
    launched.push(c);
    try {
      ns.launch("cancellable-sleeper", c);
      outcomes.push("launched");
    } catch (e) {
      outcomes.push((e as Error).name);
    }
  });
  assert.ok(gaps > 0, "some level's cancel waited in the queue");
  assert.deepEqual(outcomes, Array(gaps).fill("CancellationError"));
  assert.deepEqual(launched.filter(done), [], "no native child ran");
  await until(() => liveBefore() === before, "no native coroutine left");
}

Deno.test("a task's native scope made while the task's follow cancel waits in the queue is made cancelled: a launch on it throws CancellationError and runs nothing", async () => {
  // README: in that gap the scope reads cancelling (isCancelled true), as a shallow tree's
  // scope, already cancelled there, does; its native scope is then made cancelled, and a
  // launch on it throws, as a launch or async on the scope is cancelled at once. Before, it
  // read isCancelled false: the native scope was made live and the child ran until the queued
  // cancel aborted the scope's signal.
  await assertLaunchInGapCancelled(() => {});
});

Deno.test("a launch on a task's native scope, made before, while the task's follow cancel waits in the queue throws CancellationError and runs nothing", async () => {
  // As on a native scope made in that gap (above), and as in a shallow tree, where the scope's
  // cancel has cancelled its native scope by then. Before, the native scope was cancelled only
  // when the queued cancel aborted the scope's signal: the launch started a child of a scope
  // that reads cancelling.
  await assertLaunchInGapCancelled((s) => void nativeScope(s));
});

Deno.test("a timeout reaches native children like any cancellation", async () => {
  const sleeper = cells(MINUTE);
  await assert.rejects(
    withTimeout(5, (scope) => {
      nativeScope(scope).launch("cancellable-sleeper", sleeper);
    }),
    TimeoutError,
  );
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("native scopes nest: a parent's cancellation reaches a child scope's coroutines", async () => {
  await using parent = NativeScope.create();
  await using child = NativeScope.create({ parent });
  const sleeper = cells(MINUTE);
  child.launch("cancellable-sleeper", sleeper);
  assert.equal(child.isCancelled, false);
  parent.cancel();
  assert.equal(child.isCancelled, true);
  await child.wait();
  assert.equal(status(sleeper), Status.EINTR);
  assert.throws(() => child.launch("cancellable-sleeper", cells(1)), CancellationError);
});

Deno.test("NativeScope.wait: a timeout and an aborted signal reject, the children run on", async () => {
  const sleeper = cells(MINUTE);
  const scope = NativeScope.create();
  scope.launch("cancellable-sleeper", sleeper);
  await assert.rejects(scope.wait({ timeout: 2 }), {
    name: "TimeoutError",
    message: "Timed out waiting for native children after 2 ms",
  });
  // 0 or less looks once; the message said "after -1 ms", a wait that never happened.
  for (const [t, shown] of [[0, "0"], [-1, "-1"], [-0, "-0"]] as const) {
    await assert.rejects(scope.wait({ timeout: t }), {
      name: "TimeoutError",
      message: `Timed out at once waiting for native children: a timeout of ${shown} ms ` +
        "(0 or less) lets the wait look only once",
    });
  }
  const ac = new AbortController();
  const waiting = scope.wait({ signal: ac.signal });
  ac.abort(new Error("stop waiting"));
  await assert.rejects(waiting, /stop waiting/);
  assert.equal(scope.live, 1);
  assert.equal(done(sleeper), false);
  await scope[Symbol.asyncDispose](); // cancels, waits, destroys
  assert.equal(status(sleeper), Status.EINTR);
  assert.throws(() => scope.live, InvalidHandleError);
  // Not a number: a TypeError (it was a RangeError); NaN: a RangeError, as delay's. Rejected,
  // never thrown: wait returns a Promise.
  await assert.rejects(scope.wait({ timeout: "1" as never }), {
    name: "TypeError",
    message: 'Cannot wait for native scope: timeout must be a number of milliseconds, received "1"',
  });
  await assert.rejects(scope.wait({ timeout: NaN }), {
    name: "RangeError",
    message: "Cannot wait for native scope: timeout must be a number of milliseconds, received NaN",
  });
  await assert.rejects(scope.wait(), InvalidHandleError); // disposed: rejected too
  assert.throws(() => NativeScope.create({ parent: {} as never }), TypeError);
  // One that inherits from NativeScope.prototype but is none: before, the engine's "Receiver
  // must be an instance of class NativeScope".
  assert.throws(
    () => NativeScope.create({ parent: Object.create(NativeScope.prototype) }),
    /Cannot create native scope: parent must be a NativeScope, received a NativeScope look-alike/,
  );
  assert.throws(() => nativeScope({} as never), TypeError);
});

Deno.test("NativeScope.wait({ signal }): its listener goes before the wait settles, resolved or rejected", async () => {
  // A signal that never aborts: once `await` returns (no child; a child that ended; a timeout's
  // TimeoutError), the wait listens no more, as a drain's and every other wait's. Before, its
  // listener was removed a turn of microtasks after the wait settled (a `finally`): the code
  // after the `await` found it still there.
  await using scope = NativeScope.create();
  const live = new AbortController();
  await scope.wait({ signal: live.signal }); // no child
  assert.equal(abortListeners(live.signal), 0, "no child: no listener left");
  const quick = cells(1); // 1 ms
  scope.launch("cancellable-sleeper", quick);
  await scope.wait({ signal: live.signal });
  assert.equal(done(quick), true);
  assert.equal(abortListeners(live.signal), 0, "a child that ended: no listener left");
  scope.launch("cancellable-sleeper", cells(MINUTE));
  await assert.rejects(scope.wait({ signal: live.signal, timeout: 1 }), TimeoutError);
  assert.equal(abortListeners(live.signal), 0, "timed out: no listener left");
});

/**
 * Holds a native scope wait's first slice (`kc_scope_wait` replaced) until `resolve()`, then
 * lets it run out (KC_ETIME) as a real slice can just as the children end; later slices are the
 * real call's. `restore()` puts the real call back.
 */
function holdFirstWaitSlice(): { resolve(): void; restore(): void } {
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const real = sym.kc_scope_wait as (handle: number, deadline: bigint) => Promise<number>;
  const gate = Promise.withResolvers<void>();
  let hold = true;
  sym.kc_scope_wait = (handle: number, deadline: bigint) => {
    if (!hold) return real(handle, deadline);
    hold = false;
    return gate.promise.then(() => Status.ETIME);
  };
  return { resolve: () => gate.resolve(), restore: () => sym.kc_scope_wait = real };
}

Deno.test("NativeScope.wait: a dispose that destroys the scope between two of a wait's slices resolves the wait, its children done", async () => {
  const scope = NativeScope.create();
  const sleeper = cells(MINUTE);
  scope.launch("cancellable-sleeper", sleeper);
  // The wait's first slice is held until the dispose (which cancels, waits on its own, and
  // destroys the handle) has ended, then runs out: where a real slice can run out just as the
  // children end, and the dispose's wait settle first.
  const gate = holdFirstWaitSlice();
  try {
    const waiting = scope.wait();
    await scope[Symbol.asyncDispose]();
    gate.resolve();
    // It rejected with an InvalidHandleError: its next slice went to the destroyed handle.
    await waiting;
  } finally {
    gate.restore();
  }
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("NativeScope.wait: a dispose that met its children abandoned by a shutdown and destroyed the scope between two of a wait's slices rejects the wait as abandoned", async () => {
  const scope = NativeScope.create();
  scope.launch("cancellable-sleeper", cells(MINUTE));
  const gate = holdFirstWaitSlice();
  try {
    const waiting = scope.wait();
    await shutdownScheduler(); // abandons the sleeper
    runtime(); // a later one runs: the scope's children were abandoned, not finished
    await scope[Symbol.asyncDispose](); // its own wait a ShutdownError, which it swallows
    gate.resolve();
    // Not resolved as if the children had finished.
    await assert.rejects(waiting, { name: "ShutdownError", message: /abandoned/ });
  } finally {
    gate.restore();
  }
});

Deno.test("NativeScope.create under a disposed parent says it is the parent that was destroyed", async () => {
  const parent = NativeScope.create();
  const handle = parent.handle;
  await parent[Symbol.asyncDispose]();
  // It said "the native scope was destroyed", as if of the scope being made, with no "received".
  assert.throws(() => NativeScope.create({ parent }), {
    name: "InvalidHandleError",
    message: new RegExp(
      `^Cannot create native scope: the parent native scope was destroyed, received a ` +
        `destroyed NativeScope \\(handle ${handle}\\)`,
    ),
  });
});

Deno.test("a process whose scope owns an idle native scope exits by itself", async () => {
  const code = `
    import { createScope, nativeScope, runtime } from "./mod.ts";
    const scope = createScope(); // never disposed
    const ns = nativeScope(scope);
    const cells = runtime().cells([1n, 0n, 0n]);
    ns.launch("cancellable-sleeper", cells);
    await ns.wait();
    if (cells[1] !== 1n) throw new Error("the child did not finish");
  `;
  const { code: exit, ms, stderr } = await evalScript(code);
  assert.equal(exit, 0, stderr);
  assert.ok(ms < 5000, `exited after ${ms} ms`);
});

Deno.test("withTimeout's deadline reaches native children through the scope's native scope", async () => {
  const sym = library().symbols("test");
  const cells = runtime().cells(3);
  const before = sym.kc_now_ns();
  await withTimeout(60_000, async (scope) => {
    // A nested, later timeout keeps the outer deadline.
    await withTimeout(120_000, async (inner) => {
      nativeScope(inner).launch("read-deadline", cells);
      await nativeScope(inner).wait();
    }, { context: scope.context, signal: scope.signal });
  });
  const after = sym.kc_now_ns();
  assert.equal(cells[1], 1n); // done
  const deadline = cells[0];
  assert.ok(deadline >= before + 59_000_000_000n, `deadline ${deadline} too early`);
  assert.ok(deadline <= after + 60_000_000_000n, `deadline ${deadline} too late`);
  // Without a timeout there is none.
  const none = runtime().cells(3);
  await coroutineScope(async (scope) => {
    nativeScope(scope).launch("read-deadline", none);
    await nativeScope(scope).wait();
  });
  assert.equal(none[1], 1n);
  assert.equal(none[0], 0n);
});

Deno.test("a child given its own context under withTimeout gives its native children the timeout's deadline, never a later one", async () => {
  // Before, the given context replaced the scope's: the native children of a task given
  // Context.empty had no deadline, and those of one given a later Deadline got that.
  const sym = library().symbols("test");
  const before = sym.kc_now_ns();
  const got: [string, BigUint64Array][] = [];
  await withTimeout(60_000, async (scope) => {
    const d = scope.context.get(Deadline)!;
    for (
      const [name, own] of [
        ["empty", Context.empty],
        ["a later Deadline", Context.empty.with(Deadline, d + 60_000)],
      ] as const
    ) {
      const c = runtime().cells(3);
      got.push([name, c]);
      await scope.launch(async (task) => {
        nativeScope(task).launch("read-deadline", c);
        await nativeScope(task).wait();
      }, { context: own }).join();
    }
  });
  const after = sym.kc_now_ns();
  for (const [name, c] of got) {
    assert.equal(c[1], 1n, `done (${name})`);
    assert.ok(c[0] >= before + 59_000_000_000n, `${name}: deadline ${c[0]} too early`);
    assert.ok(c[0] <= after + 60_000_000_000n, `${name}: deadline ${c[0]} too late`);
  }
});

Deno.test("a native scope ignores the Deadline of a finished withTimeout whose context its owner was given", async () => {
  // Before, the stale Deadline reached the native children: their channel waits ended with
  // KC_ETIME at the old timeout's end, although their own scope had no timeout or a later one.
  const sym = library().symbols("test");
  const stale = await withTimeout(60, (scope) => scope.context);
  const none = runtime().cells(3);
  await coroutineScope(async (scope) => {
    nativeScope(scope).launch("read-deadline", none);
    await nativeScope(scope).wait();
  }, { context: stale });
  assert.equal(none[1], 1n);
  assert.equal(none[0], 0n);
  const later = runtime().cells(3);
  const before = sym.kc_now_ns();
  await withTimeout(60_000, async (scope) => {
    nativeScope(scope).launch("read-deadline", later);
    await nativeScope(scope).wait();
  }, { context: stale });
  assert.equal(later[1], 1n);
  assert.ok(later[0] >= before + 59_000_000_000n, `deadline ${later[0]}, now ${before}`);
});

Deno.test("a native scope given the context of a finished withTimeout whose own time came first gets the Deadline that one replaced", async () => {
  // The inner withTimeout's own time (30 s) came before the outer's (60 s): once it has finished,
  // its context's Deadline is the outer's again (the outer still runs), and a scope given it passes
  // that one to its native children. Before, that context had no Deadline at all (stale): they got
  // none (0).
  const sym = library().symbols("test");
  const c = runtime().cells(3);
  const before = sym.kc_now_ns();
  await withTimeout(60_000, async (outer) => {
    const context = await withTimeout(30_000, (inner) => inner.context, { context: outer.context });
    await coroutineScope(async (scope) => {
      nativeScope(scope).launch("read-deadline", c);
      await nativeScope(scope).wait();
    }, { context });
  });
  const after = sym.kc_now_ns();
  assert.equal(c[1], 1n);
  assert.ok(c[0] >= before + 59_000_000_000n, `deadline ${c[0]} too early (before ${before})`);
  assert.ok(c[0] <= after + 60_000_000_000n, `deadline ${c[0]} too late (after ${after})`);
});

Deno.test("a native scope made in a timeout that outlives the withTimeout it is nested in gets that one's Deadline", async () => {
  // The nested timeout (given only the outer's context, not awaited) makes its native scope only
  // after the outer has finished, a minute before the outer's Deadline: its native children get
  // that Deadline, which still ends the nested scope. Before, the nested scope's context was the
  // outer's, stale once the outer had finished: the native children got no deadline (0).
  const sym = library().symbols("test");
  const c = runtime().cells(3);
  const outerOver = new CompletableDeferred<void>();
  const before = sym.kc_now_ns();
  let nested: Promise<unknown> | undefined;
  await withTimeout(60_000, (outer) => {
    nested = withTimeout(Infinity, async (inner) => {
      await outerOver.await();
      nativeScope(inner).launch("read-deadline", c);
      await nativeScope(inner).wait();
      return "done";
    }, { context: outer.context });
  });
  outerOver.complete();
  assert.equal(await nested, "done");
  const after = sym.kc_now_ns();
  assert.equal(c[1], 1n);
  assert.ok(c[0] >= before + 59_000_000_000n, `deadline ${c[0]} too early (before ${before})`);
  assert.ok(c[0] <= after + 60_000_000_000n, `deadline ${c[0]} too late (after ${after})`);
});

Deno.test("a deadline of -Infinity in the context is a deadline already passed, not none", async () => {
  const sym = library().symbols("test");
  const c = runtime().cells(3);
  const before = sym.kc_now_ns();
  await coroutineScope(async (scope) => {
    nativeScope(scope).launch("read-deadline", c);
    await nativeScope(scope).wait();
  }, { context: Context.empty.with(Deadline, -Infinity) });
  assert.equal(c[1], 1n);
  assert.ok(c[0] !== 0n && c[0] <= sym.kc_now_ns(), `deadline ${c[0]} (before ${before})`);
});

Deno.test("an endless or huge timeout gives native children no deadline (or one in the future)", async () => {
  const sym = library().symbols("test");
  for (const ms of [Infinity, 2 ** 64 / 1e6, 1e20, 1e13]) {
    const c = runtime().cells(3);
    const before = sym.kc_now_ns();
    await withTimeout(ms, async (scope) => {
      nativeScope(scope).launch("read-deadline", c);
      await nativeScope(scope).wait();
    });
    assert.equal(c[1], 1n, `done (${ms})`);
    if (ms === 1e13) assert.ok(c[0] > before + 9_000_000_000_000_000_000n, `deadline ${c[0]}`);
    else assert.equal(c[0], 0n, `no deadline for ${ms} ms, got ${c[0]}`);
  }
  // NativeScope.wait with such a timeout waits as without one.
  const ns = NativeScope.create();
  const c = cells(1);
  ns.launch("cancellable-sleeper", c);
  await ns.wait({ timeout: 1e20 });
  assert.ok(done(c));
  await ns[Symbol.asyncDispose]();
});

Deno.test("the 2^64 ns bound counts from now for a timeout's timer and its native children alike: just short of it both get one, at or past it neither", async () => {
  // A native deadline is a kc_now_ns value, counted from the clock's origin (boot): the bound was
  // past what 64 bits hold, 2^64 ns less the time since boot from now, so a withTimeout just
  // short of 2^64 ns armed a timer while its native children got no deadline (0). Now one that
  // arms a timer gives them a deadline (2^64 - 2 ns, the latest the native clock takes, where
  // its own lies past it), and one of 2^64 ns or more is no timeout, as Infinity: its Deadline is
  // Infinity, no timer, no native deadline (before, exactly 2^64 ns armed none but its Deadline,
  // read a moment later, was just short of the bound).
  const sym = library().symbols("test");
  const bound = 2 ** 64 / 1e6;
  const realSetTimeout = globalThis.setTimeout;
  for (const ms of [bound - 1, bound, 1e300]) {
    const c = runtime().cells(3);
    const armed: (number | undefined)[] = [];
    const before = sym.kc_now_ns();
    let deadline: number | undefined;
    // The timers the withTimeout arms, seen through setTimeout: it arms its own (the first link of
    // the chain past setTimeout's limit) as it starts, before anything is awaited.
    globalThis.setTimeout = ((fn: () => void, delay?: number) => {
      if (delay !== undefined && delay >= 2 ** 31 - 1) {
        armed.push(delay);
        return 0;
      }
      return realSetTimeout(fn, delay);
    }) as typeof setTimeout;
    let wait: Promise<void>;
    try {
      wait = withTimeout(ms, async (scope) => {
        deadline = scope.context.get(Deadline);
        nativeScope(scope).launch("read-deadline", c);
        await nativeScope(scope).wait();
      });
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
    await wait;
    assert.equal(c[1], 1n, `done (${ms})`);
    if (ms < bound) {
      assert.deepEqual(armed, [2 ** 31 - 1], `a timer for ${ms} ms`);
      assert.ok(deadline !== undefined && Number.isFinite(deadline), `Deadline ${deadline}`);
      assert.ok(c[0] !== 0n && c[0] >= before, `a native deadline for ${ms} ms, got ${c[0]}`);
      if (before + BigInt(Math.floor(ms)) * 1_000_000n >= 2n ** 64n) {
        assert.equal(c[0], 2n ** 64n - 2n);
      }
    } else {
      assert.deepEqual(armed, [], `no timer for ${ms} ms`);
      assert.equal(deadline, Infinity, `no Deadline for ${ms} ms`);
      assert.equal(c[0], 0n, `no native deadline for ${ms} ms, got ${c[0]}`);
    }
  }
});

Deno.test("a hand-set Deadline 2^64 ns or more from now gives native children no deadline, as it arms no timer; just short of it, the latest the native clock takes", async () => {
  // The bound counts from now for a hand-set Deadline too (README, Deadline): one that far ahead
  // is no deadline. deadlineNs refused only Infinity and clamped the rest to 2^64 - 2 ns, so a
  // native child under a hand-set Deadline 1e20 ms ahead read a deadline of 2^64 - 2 (a
  // withTimeout of that length never got there: its Deadline is Infinity).
  const sym = library().symbols("test");
  const bound = 2 ** 64 / 1e6;
  for (const ahead of [bound * 2, 1e20, Number.MAX_VALUE, bound / 2]) {
    const c = runtime().cells(3);
    const before = sym.kc_now_ns();
    const context = Context.empty.with(Deadline, performance.now() + ahead);
    await coroutineScope(async (scope) => {
      nativeScope(scope).launch("read-deadline", c);
      await nativeScope(scope).wait();
    }, { context });
    assert.equal(c[1], 1n, `done (${ahead})`);
    if (ahead >= bound) assert.equal(c[0], 0n, `no native deadline ${ahead} ms ahead, got ${c[0]}`);
    else {
      // Within a minute of it (float rounding, the time the read took), well short of 2^64.
      const expected = before + BigInt(Math.floor(ahead)) * 1_000_000n;
      assert.ok(c[0] > expected - MINUTE * 1_000_000n && c[0] < 2n ** 64n - 2n, `${c[0]}`);
    }
  }
});

Deno.test("a scope whose native children were abandoned (shutdown, library closed) rejects, never reports success", async () => {
  for (const end of ["runtime().shutdown()", "closeLibrary()"]) {
    const res = await evalScript(`
      import { closeLibrary, coroutineScope, nativeScope, runtime, ShutdownError } from "./mod.ts";
      import { until } from "./tests/support.ts";
      const cells = runtime().cells([60000n, 0n, 0n]); // a minute
      let returned = false;
      const scope = coroutineScope(async (scope) => {
        nativeScope(scope).launch("cancellable-sleeper", cells);
        returned = true;
        return "block returned";
      });
      const outcome = scope.then((v) => "resolved " + v, (e) => e.name);
      // The end comes once the block has returned and its native child sleeps (it ran and parked
      // on its timer): the scope waits for it then. Before, a 20 ms timer stood for that.
      const parks = () => runtime().stats().workers.reduce((n, w) => n + w.parks, 0);
      await until(() => returned && parks() >= 1, "the native child asleep");
      ${end};
      const got = await outcome;
      // A closed library as a channel's wait meets it (before, a ShutdownError for both).
      const want = ${
      JSON.stringify(end === "closeLibrary()" ? "LibraryClosedError" : "ShutdownError")
    };
      if (got !== want) throw new Error("the scope: " + got);
    `);
    assert.equal(res.code, 0, `${end}: ${res.stderr}`);
  }
});

Deno.test("a native wait for children that answers a positive result no wait gives fails the scope with an internal error naming the result received", async () => {
  // The watch's answer faked (kc_scope_watch answers 0 or a negative status). Before, the
  // message ended "answered a result no wait gives (KC_RESULT)", the result itself not said.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const real = sym.kc_scope_watch;
  sym.kc_scope_watch = () => Promise.resolve(7);
  const sleeper = cells(MINUTE);
  let scope: Promise<unknown>;
  try {
    scope = coroutineScope((scope) => {
      nativeScope(scope).launch("cancellable-sleeper", sleeper);
    });
    await assert.rejects(scope, (e: unknown) => {
      assert.ok(e instanceof KcoroError, String(e));
      assert.equal(e.status, 7);
      assert.equal(
        e.message,
        "Cannot wait for native children: internal error, the native wait answered a result no " +
          "wait gives, received 7 (KC_RESULT)",
      );
      return true;
    });
  } finally {
    sym.kc_scope_watch = real;
  }
  // The failure cancelled the scope and so its native child: it ends, interrupted.
  await until(() => done(sleeper), "the sleeper to end", 10_000);
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("a scope whose watch of its native children fails (KC_ENOMEM) settles only once they have ended, failed with that error", async () => {
  // The watch's answer faked, and the native cancel held back so that the child runs on past
  // the failure (a C function that does not look at its cancellation would). Before, the scope
  // failed at once and completed, destroying its native scope under the running child.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const [realWatch, realCancel, realWait] = [
    sym.kc_scope_watch,
    sym.kc_scope_cancel,
    sym.kc_scope_wait,
  ];
  const sleeper = cells(MINUTE);
  let handle = 0;
  let waits = 0;
  let outcome: unknown = "pending";
  sym.kc_scope_watch = () => Promise.resolve(Status.ENOMEM);
  sym.kc_scope_cancel = () => 1;
  sym.kc_scope_wait = (...args: unknown[]) => {
    waits++;
    return (realWait as (...a: unknown[]) => Promise<number>)(...args);
  };
  try {
    const scope = coroutineScope((scope) => {
      const ns = nativeScope(scope);
      handle = ns.handle;
      ns.launch("cancellable-sleeper", sleeper);
    });
    scope.then(() => outcome = "resolved", (e) => outcome = e);
    await until(() => waits > 0 || outcome !== "pending", "the wait that follows the watch");
    assert.equal(outcome, "pending", "settled while its native child still ran");
    assert.equal(done(sleeper), false);
    assert.equal(runtime().stats().live >= 1, true);
    sym.kc_scope_cancel = realCancel;
    (realCancel as (h: number) => number)(handle); // now the child ends (interrupted)
    await assert.rejects(scope, (e: unknown) => {
      assert.ok(e instanceof KcoroError, String(e));
      assert.equal(e.status, Status.ENOMEM);
      assert.equal(done(sleeper), true, "settled after its child had ended");
      return true;
    });
  } finally {
    sym.kc_scope_watch = realWatch;
    sym.kc_scope_cancel = realCancel;
    sym.kc_scope_wait = realWait;
  }
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("a scope whose watch of its native children fails (KC_ENOMEM) cancels them itself, then fails with that error", async () => {
  // Only the watch faked: nothing else cancels the scope (its block returned, the owner waits
  // for its children), so a child that sleeps a minute ends early only if the failed watch
  // cancels the native scope before it waits for the children.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const realWatch = sym.kc_scope_watch;
  const sleeper = cells(MINUTE);
  let outcome: unknown = "pending";
  sym.kc_scope_watch = () => Promise.resolve(Status.ENOMEM);
  try {
    const scope = coroutineScope((scope) => {
      nativeScope(scope).launch("cancellable-sleeper", sleeper);
    });
    scope.then(() => outcome = "resolved", (e) => outcome = e);
    await until(() => outcome !== "pending", "the scope settled (its child cancelled)");
  } finally {
    sym.kc_scope_watch = realWatch;
  }
  assert.ok(outcome instanceof KcoroError, String(outcome));
  assert.equal(outcome.status, Status.ENOMEM);
  assert.equal(done(sleeper), true, "settled after its child had ended");
  assert.equal(status(sleeper), Status.EINTR);
});

Deno.test("disposing a native scope whose wait for its children fails (KC_ENOMEM) keeps the scope while they run: a KcoroError, and a second dispose waits for them", async () => {
  // The wait's answer faked, and the cancel held back so that the child runs on past it (a C
  // function that does not look at its cancellation would). Before, the dispose destroyed the
  // scope under its running child (and let go of its C functions' children's cells) and
  // rethrew the wait's own error.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const [realWait, realCancel] = [sym.kc_scope_wait, sym.kc_scope_cancel];
  const sleeper = cells(MINUTE);
  const ns = NativeScope.create();
  ns.launch("cancellable-sleeper", sleeper);
  sym.kc_scope_wait = () => Promise.resolve(Status.ENOMEM);
  sym.kc_scope_cancel = () => 1;
  try {
    await assert.rejects(ns[Symbol.asyncDispose](), (e: unknown) => {
      assert.ok(e instanceof KcoroError, String(e));
      assert.equal(e.status, Status.ENOMEM);
      assert.equal(
        e.message,
        "Cannot dispose native scope: the wait for its children failed, so the scope is kept " +
          "(cancelled, not destroyed under 1 running child: dispose it again to wait for them), " +
          `received ${Status.ENOMEM} from the wait (KC_ENOMEM)`,
      );
      assert.ok(e.cause instanceof KcoroError);
      return true;
    });
  } finally {
    sym.kc_scope_wait = realWait;
    sym.kc_scope_cancel = realCancel;
  }
  // Kept: its handle still names it, and its child still runs.
  assert.equal(ns.live, 1);
  assert.equal(done(sleeper), false);
  await ns[Symbol.asyncDispose](); // cancels now, waits for the child, destroys the scope
  assert.equal(done(sleeper), true);
  assert.equal(status(sleeper), Status.EINTR);
  assert.throws(() => ns.live, InvalidHandleError);
  // With no child running, the failed wait leaves nothing to keep the scope for: destroyed, and
  // the wait's own error.
  const empty = NativeScope.create();
  sym.kc_scope_wait = () => Promise.resolve(Status.ENOMEM);
  try {
    await assert.rejects(empty[Symbol.asyncDispose](), (e: unknown) => {
      assert.ok(e instanceof KcoroError, String(e));
      assert.equal(e.status, Status.ENOMEM);
      assert.ok(!e.message.startsWith("Cannot dispose native scope"), e.message);
      return true;
    });
  } finally {
    sym.kc_scope_wait = realWait;
  }
  assert.throws(() => empty.live, InvalidHandleError);
});

Deno.test("abandoned native children fail a supervisorScope too, and a free-standing scope reports them (a supervisor isolated them as a child's failure: success reported)", async () => {
  const res = await evalScript(`
    import { createScope, nativeScope, runtime, supervisorScope } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const reported = [];
    addEventListener("error", (e) => { reported.push(e.error?.name); e.preventDefault(); });
    const a = runtime().cells([60000n, 0n, 0n]); // a minute
    const b = runtime().cells([60000n, 0n, 0n]);
    const sup = supervisorScope(async (scope) => {
      nativeScope(scope).launch("cancellable-sleeper", a);
      return "block returned";
    }).then((v) => "resolved " + v, (e) => e.name);
    const free = createScope({ supervisor: true });
    nativeScope(free).launch("cancellable-sleeper", b);
    const joined = free.join();
    // The shutdown comes once both native children sleep (each ran and parked on its timer),
    // both scopes waiting for them. Before, a 20 ms timer stood for that.
    const parks = () => runtime().stats().workers.reduce((n, w) => n + w.parks, 0);
    await until(() => parks() >= 2, "both native children asleep");
    const stopped = runtime().shutdown();
    const got = await sup;
    await joined;
    await stopped;
    if (got !== "ShutdownError") throw new Error("the supervisorScope: " + got);
    if (free.state !== "cancelled") throw new Error("the free-standing scope: " + free.state);
    if (reported.join() !== "ShutdownError") throw new Error("reported: " + reported.join());
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a scope waits for the coroutines of native scopes created below its own", async () => {
  const c = cells(100); // sleeps 100 ms
  let child!: NativeScope;
  await coroutineScope((scope) => {
    child = NativeScope.create({ parent: nativeScope(scope) });
    child.launch("cancellable-sleeper", c);
    assert.equal(nativeScope(scope).live, 1); // counted in the scope above too
    return Promise.resolve();
  });
  assert.ok(done(c), "the scope completed before its grandchild");
  assert.equal(status(c), 0, "the grandchild finished, not cancelled by the scope's completion");
  await child[Symbol.asyncDispose]();
});

Deno.test("cells stay reachable while children run, also when their NativeScope is dropped", async () => {
  const res = await evalScript(
    `
    import { NativeScope, runtime } from "./mod.ts";
    import { collectUntil } from "./tests/support.ts";
    const rt = runtime({ workers: 2 });
    const collected = [];
    const reg = new FinalizationRegistry((what) => collected.push(what));
    (() => {
      for (let i = 0; i < 50; i++) {
        const scope = NativeScope.create(); // dropped, never waited
        // Sleeps a minute (till the shutdown below ends it, writing cells 1 and 2).
        const cells = rt.cells([60_000n, 0n, 0n]);
        scope.launch("cancellable-sleeper", cells);
        reg.register(cells.buffer, "cells");
      }
      reg.register({}, "dropped"); // collected by the first collection
    })();
    // Until a collection took the dropped object and this registry's finaliser ran: one that
    // took a cells buffer too ran for it as well. Before, ten collections of 1 ms each were
    // hoped to show it, and to end within the sleepers' 200 ms (after which their cells may go).
    await collectUntil(() => collected.includes("dropped"), "the dropped object's finaliser");
    const early = collected.filter((what) => what === "cells").length;
    await rt.shutdown("cancel"); // the sleepers end: each writes its cells
    if (early !== 0) throw new Error(early + " cells buffers were collected under their sleepers");
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a native scope whose children a shutdown abandoned takes no new ones after a restart", async () => {
  const res = await evalScript(`
    import { NativeScope, runtime, ShutdownError } from "./mod.ts";
    const ns = NativeScope.create();
    ns.launch("cancellable-sleeper", runtime().cells([60000n, 0n, 0n]));
    await runtime().shutdown(); // abandons the sleeper
    runtime(); // a new scheduler
    try {
      ns.launch("cancellable-sleeper", runtime().cells([1n, 0n, 0n]));
      throw new Error("launched into an abandoned scope");
    } catch (e) {
      if (!(e instanceof ShutdownError)) throw e;
      // The runtime runs: the message must say why, not that it is not running.
      if (!/belongs to a runtime that was shut down/.test(e.message)) {
        throw new Error("launch said: " + e.message);
      }
    }
    try {
      await ns.wait();
      throw new Error("wait resolved on an abandoned scope");
    } catch (e) {
      if (!(e instanceof ShutdownError) || !/abandoned/.test(e.message)) {
        throw new Error("wait said: " + e);
      }
    }
    await ns[Symbol.asyncDispose](); // cleanup: resolves, the children being gone
    // A new scope works.
    const fresh = NativeScope.create();
    const cells = runtime().cells([1n, 0n, 0n]);
    fresh.launch("cancellable-sleeper", cells);
    await fresh.wait();
    if (cells[1] !== 1n) throw new Error("the new scope's child did not run");
    await runtime().shutdown();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("using a NativeScope (sync) is refused as it is declared, by name, telling to use await using", async () => {
  const made = NativeScope.create();
  let ran = false;
  assert.throws(
    () => {
      // @ts-expect-error: a NativeScope is no Disposable (TypeScript refuses it too)
      using ns = made;
      ran = true;
      ns.cancel();
    },
    {
      name: "TypeError",
      message: "Cannot dispose native scope synchronously: disposing a native scope waits for " +
        "its children, so declare it with `await using`, not `using`, received a NativeScope",
    },
  );
  assert.equal(ran, false); // refused before its block ran
  await made[Symbol.asyncDispose](); // the one the using refused: still disposable
  // `await using` never reads it.
  {
    await using ns = NativeScope.create();
    assert.equal(ns.isCancelled, false);
  }
});

Deno.test("leaving an await using block of a NativeScope whose children a shutdown or a library close abandoned does not throw: the dispose is cleanup, wait() tells", async () => {
  // Kotlin's scope cancelled from outside completes cancelled; its cleanup does not rethrow the
  // cancellation. The dispose rejected with the wait's ShutdownError (or LibraryClosedError),
  // so the block threw on its way out, after the work it guarded had ended.
  const res = await evalScript(`
    import { closeLibrary, LibraryClosedError, NativeScope, openLibrary, runtime, ShutdownError } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const sleeper = () => runtime().cells([60000n, 0n, 0n]); // a minute, ended only by a cancel
    const parks = () => runtime().stats().workers.reduce((n, w) => n + w.parks, 0);
    for (const restart of [false, true]) {
      let scope;
      {
        await using ns = NativeScope.create();
        scope = ns;
        ns.launch("cancellable-sleeper", sleeper());
        await runtime().shutdown(); // abandons the sleeper
        if (restart) runtime();
        const waited = await ns.wait().then(() => "resolved", (e) => e);
        if (!(waited instanceof ShutdownError)) throw new Error("wait: " + waited);
      } // threw the same ShutdownError here before
      if (!Deno.inspect(scope).includes("[[destroyed]]: true")) throw new Error("restart " + restart + ": not destroyed");
    }
    // The runtime gone, or the library closed, while the dispose waits (a child that ignores
    // the cancel: the plain sleeper).
    for (const end of ["shutdown", "closeLibrary"]) {
      openLibrary();
      const ns = NativeScope.create();
      const before = parks(); // this scheduler's, started for the scope
      ns.launch("sleeper", runtime().cells([60000n, 0n]));
      const disposed = ns[Symbol.asyncDispose]().then(() => "resolved", (e) => e);
      // The end comes once the sleeper sleeps (it ran and parked on its timer), the dispose's
      // wait under way since its call. Before, a 20 ms timer stood for that.
      await until(() => parks() > before, "the sleeper asleep");
      if (end === "shutdown") runtime().shutdown();
      else closeLibrary();
      const got = await disposed;
      if (got !== "resolved") throw new Error(end + " during the dispose: " + got);
      if (!Deno.inspect(ns).includes("[[destroyed]]: true")) throw new Error(end + ": not destroyed");
    }
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a native scope made before a runtime shutdown takes no launch after a restart, even with no child at the shutdown", async () => {
  const res = await evalScript(`
    import { coroutineScope, NativeScope, nativeScope, runtime, ShutdownError } from "./mod.ts";
    const free = NativeScope.create(); // no child when the runtime shuts down
    const child = NativeScope.create({ parent: free });
    let owned;
    const scope = coroutineScope(async (s) => {
      owned = nativeScope(s);
      await new Promise((r) => setTimeout(r, 0));
      return await new Promise(() => {}); // held open until the end
    }).catch(() => {});
    await new Promise((r) => setTimeout(r, 0));
    await runtime().shutdown();
    runtime({ stackSize: 32768 }); // a later runtime, with other stacks
    for (const [name, ns] of [["free", free], ["child", child], ["owned", owned]]) {
      const cells = runtime().cells([1n, 0n, 0n]);
      try {
        ns.launch("cancellable-sleeper", cells);
        throw new Error(name + ": launched onto the later runtime");
      } catch (e) {
        if (!(e instanceof ShutdownError)) throw e;
        if (!/belongs to a runtime that was shut down/.test(e.message)) {
          throw new Error(name + " said: " + e.message);
        }
      }
      if (cells[1] !== 0n) throw new Error(name + ": the child ran");
    }
    try {
      NativeScope.create({ parent: free });
      throw new Error("a child scope made under a scope of the old runtime");
    } catch (e) {
      if (!(e instanceof ShutdownError) || !/belongs to a runtime that was shut down/.test(e.message)) {
        throw new Error("create said: " + e);
      }
    }
    await free.wait(); // nothing ran in it: nothing to wait for
    await free[Symbol.asyncDispose]();
    await runtime().shutdown();
    Deno.exit(0); // the held-open scope
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a shutdown and restart elsewhere right before NativeScope.create's native call makes it a ShutdownError, not a scope on the later scheduler", async () => {
  const res = await evalScript(`
    import { library, NativeScope, runtime, ShutdownError } from "./mod.ts";
    import { librarySymbols } from "./ffi/load.ts";
    const rt = runtime({ workers: 1 });
    const sym = librarySymbols(library(), "test");
    // The table every call reads its functions from, writable for the test.
    const table = sym;
    const { kc_scope_create, kc_scope_create_gen } = table;
    // Another isolate (or C code) shuts the scheduler down and starts a later one, between
    // create's runtime() and its native call: once, in the call's place.
    let restarted = false;
    const restartOnce = () => {
      if (restarted) return;
      restarted = true;
      if (sym.kc_sched_shutdown(0) !== 0) throw new Error("shutdown");
      if (sym.kc_sched_start(1, 32 * 1024, 0) !== 0) throw new Error("start");
    };
    table.kc_scope_create = (...args) => (restartOnce(), kc_scope_create(...args));
    table.kc_scope_create_gen = (...args) => (restartOnce(), kc_scope_create_gen(...args));
    try {
      // Before, create called runtime(), then kc_scope_create: the scope was made on the later
      // scheduler, whose stacks may be smaller than its children were meant for.
      NativeScope.create();
      throw new Error("a scope made on the later scheduler");
    } catch (e) {
      if (!(e instanceof ShutdownError) || !/a later one \\(runtime\\(\\) returns it\\)/.test(e.message)) {
        throw e;
      }
    } finally {
      table.kc_scope_create = kc_scope_create;
      table.kc_scope_create_gen = kc_scope_create_gen;
    }
    if (!restarted) throw new Error("no restart");
    if (rt.isRunning) throw new Error("the old runtime runs");
    // The runtime running now takes scopes, made on it.
    await using scope = NativeScope.create();
    const cells = runtime().cells([1n, 0n, 0n]);
    scope.launch("cancellable-sleeper", cells);
    await scope.wait();
    if (cells[1] !== 1n) throw new Error("the child did not run");
    await runtime().shutdown();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a child scope refused for its parent's shut-down runtime starts no runtime", async () => {
  const res = await evalScript(`
    import { library, NativeScope, runtime, ShutdownError } from "./mod.ts";
    const parent = NativeScope.create();
    await runtime().shutdown();
    try {
      NativeScope.create({ parent });
      throw new Error("a child scope made under a scope of a shut-down runtime");
    } catch (e) {
      if (!(e instanceof ShutdownError)) throw e;
    }
    const info = new BigUint64Array(4);
    library().symbols("test").kc_sched_info(info, 4);
    if (info[3] !== 0n) throw new Error("the refused create started a runtime");
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a Worker terminated while it waits for native children leaves no thread behind", async () => {
  // Before, NativeScope.wait without a signal and a TypeScript scope's watch of its native
  // children made one unsliced native wait each, which held a thread of Deno's blocking pool
  // (and two fds) for as long as the children ran: for good here, where they never end.
  const res = await evalScript(`
    import { Channel, codecs, runtime } from "./mod.ts";
    import { until } from "./tests/support.ts";
    const rt = runtime({ workers: 2 });
    using ch = new Channel(0, { codec: codecs.u64 }); // nobody sends: the children wait for good
    const threads = () => [...Deno.readDirSync("/proc/self/task")].length;
    const cycle = async (mode) => {
      const w = new Worker(new URL("./tests/fixtures/native_wait_worker.ts", "file://" + Deno.cwd() + "/"), {
        type: "module",
      });
      const ready = new Promise((r) => w.onmessage = r);
      w.postMessage({ mode, handle: ch.handle });
      await ready;
      w.terminate();
    };
    await cycle("wait");
    await cycle("owned");
    const base = threads();
    for (let i = 0; i < 16; i++) await cycle(i % 2 ? "owned" : "wait");
    await until(
      () => threads() <= base + 4,
      () => "the threads to end: " + threads() + " after 16 Workers, " + base + " before",
      10_000,
    );
    ch.close(); // the children end
    await rt.shutdown();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a free-standing NativeScope dropped undisposed is destroyed once collected, its children left to finish", async () => {
  const res = await evalScript(
    `
    import { Channel, codecs, library, NativeScope, runtime, Status } from "./mod.ts";
    import { collectUntil, until, within } from "./tests/support.ts";
    const rt = runtime({ workers: 2 });
    const sym = library().symbols("test");
    // Its destroy by the collector's finalizer, waited for (bounded). Before, one gc() and one
    // macrotask per round were taken for the finalisers' runs.
    const destroyed = (hs, what) => collectUntil(
      () => hs.every((h) => sym.kc_scope_live(h) === Status.EBADH),
      () => what + ": " + hs.filter((h) => sym.kc_scope_live(h) !== Status.EBADH).length + " live",
    );
    // A dropped scope whose child still waits: not cancelled by the collection.
    using ch = new Channel(0, { codec: codecs.u64 });
    const cells = rt.cells([BigInt(ch.handle), 0n, 0n]);
    let droppedRef;
    const dropped = (() => {
      const ns = NativeScope.create();
      droppedRef = new WeakRef(ns);
      ns.launch("receiver", cells);
      return ns.handle;
    })();
    for (let round = 0; round < 4; round++) {
      const hs = [];
      for (let i = 0; i < 500; i++) hs.push(NativeScope.create().handle);
      await destroyed(hs, "round " + round);
    }
    await collectUntil(() => droppedRef.deref() === undefined, "the dropped scope's collection");
    // Its child still waits to receive (bounded: a collection that cancelled it, KC_EINTR, left
    // this send waiting for good, the test ending only at evalScript's bound).
    await within(ch.send(5n), 10_000, "the dropped scope's child to take the value");
    await until(() => cells[1] === 1n, "the dropped scope's child to end", 10_000);
    if (cells[2] !== 0n) throw new Error("the child ended with " + cells[2]);
    // (Collected while its child ran, it waits among the orphans, destroyed at a later look.)
    if (sym.kc_scope_live(dropped) !== 0) throw new Error("the dropped scope: not idle");
    // Before, every one stayed: a new scope's handle took the 2,002nd slot of the table.
    const probe = NativeScope.create();
    const slot = probe.handle & 0xfffff;
    if (slot > 1000) throw new Error("handle slot " + slot + ": the dropped scopes were kept");
    await rt.shutdown();
    `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("NativeScope.wait pending across closeLibrary rejects with LibraryClosedError (as a channel's wait), not Deno's BadResource", async () => {
  const res = await evalScript(`
    import { closeLibrary, LibraryClosedError, NativeScope, openLibrary, runtime } from "./mod.ts";
    const other = openLibrary(); // another host keeps the scheduler, as a Worker's close leaves it
    const rt = runtime({ workers: 1 });
    const ns = NativeScope.create();
    ns.launch("cancellable-sleeper", rt.cells([300n, 0n, 0n]));
    const waiting = ns.wait();
    closeLibrary();
    // Before, its next slice called into the closed library: a raw BadResource error.
    // Before this, a ShutdownError("the library was closed"), where a channel's wait gave a
    // LibraryClosedError.
    const e = await waiting.then(() => null, (e) => e);
    if (!(e instanceof LibraryClosedError)) throw new Error("rejected with " + e);
    if (!e.message.startsWith("Cannot wait for native scope: the kcoro library is closed")) throw e;
    other.symbols("test").kc_sched_shutdown(0);
    other.close();
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a NativeScope disposed, collected or whose owner completes after closeLibrary() is destroyed", async () => {
  const res = await evalScript(
    `
    import { closeLibrary, coroutineScope, nativeScope, NativeScope, openLibrary, runtime, Status } from "./mod.ts";
    import { collectUntil, until } from "./tests/support.ts";
    // Another host: keeps the scheduler running across the closes (as a Worker would) and
    // looks at the native scopes. The library stays loaded once opened, and every native
    // scope with it: before, none of these was ever destroyed.
    const other = openLibrary();
    runtime({ workers: 1 });
    const sym = other.symbols("test");
    const gone = (h, what) => {
      const rc = sym.kc_scope_live(h);
      if (rc !== Status.EBADH) throw new Error(what + ": kc_scope_live says " + rc + ", not destroyed");
    };
    // A dropped scope's destroy (by the collector's finalizer), waited for (bounded) as each
    // collection runs. Before, four collections 10 ms apart, then the check: too few on a
    // loaded machine.
    const destroyed = (hs, what, lib = other) => collectUntil(
      () => hs.every((h) => lib.symbols("test").kc_scope_live(h) === Status.EBADH),
      () => what + ": kc_scope_live says " + hs.map((h) => lib.symbols("test").kc_scope_live(h)),
    );
    const tick = () => new Promise((r) => setTimeout(r, 5));
    // Disposed after the close: destroyed, which cancels its child (nothing can wait for it).
    {
      const ns = NativeScope.create();
      const cells = runtime().cells([60000n, 0n, 0n]);
      ns.launch("cancellable-sleeper", cells);
      closeLibrary();
      await ns[Symbol.asyncDispose]();
      await ns[Symbol.asyncDispose](); // once only
      gone(ns.handle, "disposed after close");
      await until(() => cells[1] === 1n, "the destroyed scope's child to end", 10_000);
      if (BigInt.asIntN(64, cells[2]) !== BigInt(Status.EINTR)) throw new Error("child: " + cells[2]);
    }
    // Dropped, collected after the close.
    {
      let h = 0;
      (() => { h = NativeScope.create().handle; })();
      closeLibrary();
      await destroyed([h], "collected after close");
    }
    // Owned by a TypeScript scope that completes after the close.
    {
      let h = 0;
      const done = coroutineScope(async (scope) => {
        h = nativeScope(scope).handle;
        await tick();
      });
      closeLibrary();
      await done;
      gone(h, "owner completed after close");
    }
    // Dropped while children ran, the close in between: destroyed once they ended, when the
    // orphans are looked at again (before, a closed library's orphan was forgotten).
    {
      const first = [];
      const rt = runtime();
      const cells = [];
      // Each dropped scope's collection, seen by a registry of the test's own (kcoro's finalizer
      // is told in the same collection): all 16 before the close.
      let dropped = 0;
      const drops = new FinalizationRegistry(() => dropped++);
      for (let i = 0; i < 16; i++) {
        const c = rt.cells([100n, 0n, 0n]);
        cells.push(c);
        (() => {
          const ns = NativeScope.create();
          first.push(ns.handle);
          drops.register(ns, i);
          ns.launch("cancellable-sleeper", c);
        })();
      }
      await collectUntil(() => dropped === 16, () => "the 16 dropped scopes' collection: " + dropped);
      closeLibrary();
      await until(() => cells.every((c) => c[1] === 1n), "the orphans' children to end", 10_000);
      const more = runtime().cells([60000n, 0n, 0n]);
      for (let i = 0; i < 16; i++) (() => NativeScope.create().launch("cancellable-sleeper", more))();
      await destroyed(first, "orphans of a closed library");
    }
    // The last host's close shuts the scheduler down: a scope dropped then is destroyed too.
    {
      sym.kc_sched_shutdown(0);
      other.close();
      let h = 0;
      (() => {
        const ns = NativeScope.create();
        h = ns.handle;
        ns.launch("cancellable-sleeper", runtime().cells([60000n, 0n, 0n]));
      })();
      closeLibrary(); // abandons the child
      // Opened after the last host's close (which shut the scheduler down), only to look.
      const probe = openLibrary();
      await destroyed([h], "abandoned", probe);
      probe.close();
    }
    `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("nativeScope refuses a job made from a job's prototype with a named TypeError: it passed instanceof, then threw the engine's 'Cannot read private member'", () => {
  const proto = Object.getPrototypeOf(Object.getPrototypeOf(new CompletableDeferred()));
  for (const job of [Object.create(proto), Object.create(CompletableDeferred.prototype)]) {
    assert.throws(() => nativeScope({ job } as never), {
      name: "TypeError",
      message: /^Cannot get native scope: scope.job must be a Job, received a Job look-alike$/,
    });
  }
});

Deno.test("nativeScope({ job: x }) with x no kcoro Job names the `job` in its TypeError: it said 'scope must be a CoroutineScope, received [object Object]', of an object as asked", () => {
  const cases: [unknown, string][] = [
    [{ job: 5 }, "scope.job must be a Job, received 5"],
    [{ job: null }, "scope.job must be a Job, received null"],
    [{ job: {} }, "scope.job must be a Job, received [object Object]"],
    [{ job: "x" }, 'scope.job must be a Job, received "x"'],
    // No `job` at all, or no object: the scope is what is wrong, as before.
    [{}, "scope must be a CoroutineScope, received [object Object]"],
    [5, "scope must be a CoroutineScope, received 5"],
    [null, "scope must be a CoroutineScope, received null"],
  ];
  for (const [scope, reason] of cases) {
    assert.throws(() => nativeScope(scope as never), {
      name: "TypeError",
      message: `Cannot get native scope: ${reason}`,
    });
  }
});

Deno.test("nativeScope(x) whose `job` cannot be read (a getter or a Proxy trap that throws) throws a named TypeError with that error as its cause: the getter's own error came out unnamed", () => {
  const thrown = new Error("the caller's getter");
  const cases: [unknown, string][] = [
    [{
      get job(): never {
        throw thrown;
      },
    }, "[object Object]"],
    [
      new Proxy({}, {
        get: () => {
          throw thrown;
        },
      }),
      "an object that cannot be described (its tag threw)", // describe reads its tag: a trap
    ],
  ];
  for (const [scope, described] of cases) {
    assert.throws(() => nativeScope(scope as never), (e: unknown) => {
      assert.ok(e instanceof TypeError, String(e));
      assert.equal(
        e.message,
        `Cannot get native scope: scope.job cannot be read, received ${described}`,
      );
      assert.equal(e.cause, thrown);
      return true;
    });
  }
});

Deno.test("an error message names an object made from a kcoro class's prototype, or a Proxy of an instance, as that class's look-alike; other objects by their tag, as before", async () => {
  // describe() said "[object Object]" for each (the class's Symbol.toStringTag names an instance
  // only), which named nothing the caller could look for.
  using ch = new Channel<number>(1);
  await using scope = NativeScope.create();
  const fakes: [unknown, string][] = [
    [Object.create(NativeScope.prototype), "a NativeScope look-alike"],
    [new Proxy(scope, {}), "a NativeScope look-alike"],
    [Object.create(Object.create(NativeScope.prototype)), "a NativeScope look-alike"],
    [Object.create(Channel.prototype), "a Channel look-alike"],
    [new Proxy(ch, {}), "a Channel look-alike"],
    [Object.create(CompletableDeferred.prototype), "a Job look-alike"],
    // Not kcoro's, or not to be asked: the tag, as before.
    [{}, "[object Object]"],
    [Object.create(null), "[object Object]"],
    [
      new Proxy({}, {
        getPrototypeOf: () => {
          throw new Error("trap");
        },
      }),
      "[object Object]",
    ],
  ];
  for (const [parent, described] of fakes) {
    assert.throws(() => NativeScope.create({ parent: parent as never }), {
      name: "TypeError",
      message: `Cannot create native scope: parent must be a NativeScope, received ${described}`,
    });
  }
  // Instances are named by their class (it said "received [object Channel]", their tag).
  assert.throws(() => NativeScope.create({ parent: ch as never }), {
    name: "TypeError",
    message: "Cannot create native scope: parent must be a NativeScope, received a Channel",
  });
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("a NativeScope method called on an object that is not one (produce given Object.create(NativeScope.prototype)) throws a named TypeError, not the engine's", async () => {
  const fake = Object.create(NativeScope.prototype) as NativeScope;
  // Named as what it is: it said "received [object Object]", which named nothing to look for.
  const named = (op: string) => (e: unknown) =>
    e instanceof TypeError &&
    e.message === `Cannot ${op}: this is not a NativeScope, received a NativeScope look-alike`;
  assert.throws(() => fake.launch(null as never), named("launch native coroutine"));
  assert.throws(() => fake.cancel(), named("cancel native scope"));
  assert.throws(() => fake.live, named("read native scope"));
  assert.throws(() => fake.isCancelled, named("read native scope"));
  assert.throws(() => fake.handle, named("read native scope"));
  await assert.rejects(fake.wait(), named("wait for native scope"));
  // Rejected, as the dispose's other failures are (it rejected with the engine's "Cannot read
  // private member #destroyed").
  await assert.rejects(fake[Symbol.asyncDispose](), named("dispose native scope"));
  // The api fuzz's seed 30: produce launches on the scope it is given, as on a CoroutineScope.
  assert.throws(
    () => produce(fake as unknown as CoroutineScope, async () => {}),
    named("launch native coroutine"),
  );
});

Deno.test("a CompletableDeferred owning native children takes their failure, as Kotlin's CompletableDeferred takes a child's: it completes exceptionally with it, and nothing is reported", async () => {
  // The watch's answer faked (as in "a native wait for children that answers a positive
  // result"), so the children's job fails at once. Before, the CompletableDeferred failed and
  // the failure went to reportError as well (it did not take its children's failures).
  using reported = catchReported();
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const real = sym.kc_scope_watch;
  sym.kc_scope_watch = () => Promise.resolve(7);
  const sleeper = cells(MINUTE);
  const owner = new CompletableDeferred<number>();
  try {
    nativeScope({ job: owner } as unknown as CoroutineScope).launch("cancellable-sleeper", sleeper);
    await assert.rejects(owner.await(), (e: unknown) => e instanceof KcoroError && e.status === 7);
  } finally {
    sym.kc_scope_watch = real;
  }
  assert.equal(owner.state, "cancelled");
  // The failure cancelled the native scope and so its child: it ends, interrupted.
  await until(() => done(sleeper), "the sleeper to end", 10_000);
  assert.equal(status(sleeper), Status.EINTR);
  await turns(); // a report would come from a completion handler already run; let any land
  assert.deepEqual(reported.errors, []);
});

Deno.test("NativeScope has no public _own: it handed any job a second native scope of its own, besides the one nativeScope keeps, or one for a job already final", async () => {
  assert.equal(Object.getOwnPropertyNames(NativeScope).includes("_own"), false);
  assert.equal("_own" in NativeScope, false);
  const gate = Promise.withResolvers<void>();
  await using scope = createScope();
  const task = scope.launch(() => gate.promise);
  const done = scope.launch(() => {});
  await done.join();
  try {
    const own = (NativeScope as unknown as { _own(job: unknown): NativeScope })._own;
    assert.equal(own, undefined);
    // The misuse, tried through the old name: it throws, and makes no scope.
    for (const job of [task, done]) {
      assert.throws(
        () => (NativeScope as unknown as { _own(job: unknown): NativeScope })._own(job),
        TypeError,
      );
    }
    // nativeScope keeps one per job; a final one gets none.
    const ns = nativeScope(task as unknown as CoroutineScope);
    assert.equal(nativeScope(task as unknown as CoroutineScope), ns);
    assert.throws(() => nativeScope(done as unknown as CoroutineScope), CancellationError);
  } finally {
    gate.resolve();
  }
  await task.join();
});

Deno.test("a native scope has no public _childrenDone: given the job standing for its children (in its owner's children), it made the next launch start a second one, the first still watching", async () => {
  const a = cells(MINUTE), b = cells(MINUTE);
  await assert.rejects(
    coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      assert.equal("_childrenDone" in ns, false);
      ns.launch("cancellable-sleeper", a);
      assert.equal(scope.job.children.length, 1);
      const standing = scope.job.children[0];
      assert.throws(
        () => (ns as unknown as { _childrenDone(j: unknown): void })._childrenDone(standing),
        TypeError,
      );
      ns.launch("cancellable-sleeper", b);
      // One job still stands for both children.
      assert.deepEqual(scope.job.children, [standing]);
      await null;
      scope.cancel();
    }),
    CancellationError,
  );
  assert.equal(status(a), Status.EINTR);
  assert.equal(status(b), Status.EINTR);
});

Deno.test("a native scope has no public _lib, _destroyed or _abandoned: its children's watch reads them module-privately, as _own and _childrenDone are", async () => {
  const members = ["_lib", "_destroyed", "_abandoned"];
  await using free = NativeScope.create();
  for (const m of members) assert.equal(m in free, false, m);
  for (const m of members) assert.equal(m in NativeScope.prototype, false, m);
  // The watch that reads them still settles the owner as before: the children's end completes
  // it, and a dispose of the owned scope, which destroys it, cancels it.
  const a = cells(0);
  await coroutineScope((scope) => {
    const ns = nativeScope(scope);
    for (const m of members) assert.equal(m in ns, false, m);
    ns.launch("cancellable-sleeper", a);
    return Promise.resolve();
  });
  assert.equal(status(a), 0);
  const b = cells(MINUTE);
  await assert.rejects(
    coroutineScope(async (scope) => {
      await using ns = nativeScope(scope);
      ns.launch("cancellable-sleeper", b);
    }),
    CancellationError,
  );
  assert.equal(status(b), Status.EINTR);
});

Deno.test("disposing a TypeScript scope's own native scope cancels the scope and leaves it destroyed, as README says", async () => {
  // A first-hour idiom, `await using ns = nativeScope(scope)`, ends the owner. Before, whether
  // the owner was cancelled depended on its watch of the children seeing the cancel before the
  // destroy, and the watch's next native call on the destroyed handle failed the owner with an
  // InvalidHandleError ("Cannot wait for native children: the handle is stale ..."), by chance.
  // Rounds, as the race went either way.
  for (let round = 0; round < 40; round++) {
    const withChild = round % 4 !== 3; // and with none running: the owner was never told
    const sleeper = cells(round % 2); // 0 ms or 1 ms: done before or after the dispose's cancel
    let relaunch: unknown;
    await assert.rejects(
      coroutineScope(async (scope) => {
        {
          await using ns = nativeScope(scope);
          if (withChild) ns.launch("cancellable-sleeper", sleeper);
        }
        assert.equal(Deno.inspect(nativeScope(scope)), "NativeScope { [[destroyed]]: true }");
        assert.equal(scope.isActive, false, `round ${round}: the owner is cancelled at once`);
        try {
          nativeScope(scope).launch("cancellable-sleeper", cells(1));
        } catch (e) {
          relaunch = e;
        }
      }),
      (e) => {
        assert.ok(e instanceof CancellationError, `round ${round}: ${e}`);
        return true;
      },
    );
    assert.ok(relaunch instanceof InvalidHandleError, String(relaunch));
    assert.match((relaunch as Error).message, /the native scope was destroyed/);
    if (withChild) assert.ok(done(sleeper));
  }
});

Deno.test("disposing a TypeScript scope's own native scope whose children a shutdown abandoned fails the scope with a ShutdownError, not a cancellation", async () => {
  // The watch of the children is held (its first slice answers only once the dispose has
  // ended) so that it finds the scope destroyed, as it does when the dispose's own wait settles
  // first. It settled such a scope as if its children had finished: the owner, cancelled by the
  // dispose, rejected with a CancellationError, and the abandoned work went unreported.
  const sym = librarySymbols(library(), "test") as unknown as Record<string, unknown>;
  const real = sym.kc_scope_watch as (handle: number, deadline: bigint) => Promise<number>;
  const gate = Promise.withResolvers<void>();
  let held = 0;
  sym.kc_scope_watch = (handle: number, deadline: bigint) =>
    held++ === 0 ? gate.promise.then(() => Status.ETIME) : real(handle, deadline);
  try {
    await assert.rejects(
      coroutineScope(async (scope) => {
        const ns = nativeScope(scope);
        ns.launch("cancellable-sleeper", cells(MINUTE));
        assert.equal(held, 1, "the watch started");
        await shutdownScheduler(); // abandons the sleeper
        runtime(); // a later one runs: the children were abandoned, not finished
        await ns[Symbol.asyncDispose](); // its own wait a ShutdownError, which it swallows
        // (its abandoned mark is module-private since af2a342: the ShutdownError below says it)
        gate.resolve();
      }),
      { name: "ShutdownError", message: /abandoned/ },
    );
  } finally {
    gate.resolve();
    sym.kc_scope_watch = real;
  }
});

Deno.test("disposing a TypeScript scope's own native scope once the library is closed cancels the scope too", async () => {
  // That dispose only destroys the handle; it left the owner running, its native scope
  // destroyed for good (no child was running, so no watch told the owner).
  const res = await evalScript(`
    import { closeLibrary, coroutineScope, nativeScope } from "./mod.ts";
    const got = await coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      closeLibrary();
      await ns[Symbol.asyncDispose]();
      if (!Deno.inspect(ns).includes("[[destroyed]]: true")) throw new Error("not destroyed");
      if (scope.isActive) throw new Error("the owner is still active");
    }).then(() => "resolved", (e) => e.name + ": " + e.message);
    if (got !== "CancellationError: Cancelled: the native scope was cancelled") throw new Error(got);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("disposing a TypeScript scope's own native scope once the library is closed cancels the scope by JobSupport's own cancel and state, not ones a caller redefined on a job's prototype", async () => {
  // The dispose's closed-library path: before, `owner.isCancelled` and `owner.cancel(...)`, the
  // prototype's at that call, whose throw came out of the dispose, the owner left running.
  const res = await evalScript(`
    import { closeLibrary, CompletableDeferred, coroutineScope, nativeScope } from "./mod.ts";
    const proto = Object.getPrototypeOf(CompletableDeferred.prototype);
    const calls = [];
    const got = await coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      closeLibrary();
      const descs = ["cancel", "isCancelled"].map((n) => [n, Object.getOwnPropertyDescriptor(proto, n)]);
      Object.defineProperty(proto, "cancel", {
        configurable: true, writable: true,
        value() { calls.push("cancel"); throw new Error("the redefined cancel ran"); },
      });
      Object.defineProperty(proto, "isCancelled", {
        configurable: true,
        get() { calls.push("isCancelled"); throw new Error("the redefined isCancelled ran"); },
      });
      try {
        await ns[Symbol.asyncDispose]();
      } finally {
        for (const [n, d] of descs) Object.defineProperty(proto, n, d);
      }
    }).then(() => "resolved", (e) => e.name + ": " + e.message);
    if (calls.length !== 0) throw new Error("ran: " + calls.join(", ") + " (" + got + ")");
    if (got !== "CancellationError: Cancelled: the native scope was cancelled") throw new Error(got);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("disposing a TypeScript scope's own native scope once the library is closed, its children running: the scope fails with LibraryClosedError, not the dispose's cancellation", async () => {
  // The close abandoned the child; the dispose that follows in the same turn (the library
  // closed: it cancels the owner and destroys the handle) ends before the owner's watch of its
  // children returns, which then finds the scope destroyed. The owner fails as where no dispose
  // came (the test above), not with the dispose's cancellation: its work never finished.
  const res = await evalScript(`
    import { closeLibrary, coroutineScope, nativeScope, runtime } from "./mod.ts";
    const cells = runtime().cells([60000n, 0n, 0n]); // a minute
    const got = await coroutineScope(async (scope) => {
      const ns = nativeScope(scope);
      ns.launch("cancellable-sleeper", cells);
      closeLibrary(); // abandons the child
      await ns[Symbol.asyncDispose]();
      if (!Deno.inspect(ns).includes("[[destroyed]]: true")) throw new Error("not destroyed");
    }).then(() => "resolved", (e) => e.name);
    if (got !== "LibraryClosedError") throw new Error(got);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a task's cancel reaches its native scope through kcoro's own members: not a redefined NativeScope.prototype.cancel, nor an addEventListener set on the task's signal", async () => {
  // Before, the task's abort listener called `ns.cancel()` (the prototype's member) and listened
  // by `signal.addEventListener`: a caller who redefined either left the native children of a
  // timed-out task running to their end (each sleep here: its whole minute, KC_OK). A minute, not
  // a short sleep: the sleeper sleeps until the cancel reaches it, so an event-loop stall on a
  // loaded host (the 20 ms timer firing seconds late) cannot let it end by itself first (KC_OK
  // with a 2 s sleep); a cancel that never reaches it still fails the test, after that minute.
  const desc = Object.getOwnPropertyDescriptor(NativeScope.prototype, "cancel")!;
  const called: string[] = [];
  for (const steer of ["NativeScope.prototype.cancel", "the signal's addEventListener"]) {
    const sleeper = cells(MINUTE);
    try {
      if (steer === "NativeScope.prototype.cancel") {
        Object.defineProperty(NativeScope.prototype, "cancel", {
          ...desc,
          value: () => {
            called.push(steer);
            return false;
          },
        });
      }
      await assert.rejects(
        withTimeout(20, (scope) => {
          if (steer === "the signal's addEventListener") {
            for (const name of ["addEventListener", "removeEventListener"]) {
              Object.defineProperty(scope.signal, name, { value: () => called.push(steer) });
            }
          }
          nativeScope(scope).launch("cancellable-sleeper", sleeper);
        }),
        TimeoutError,
      );
    } finally {
      Object.defineProperty(NativeScope.prototype, "cancel", desc);
    }
    assert.equal(status(sleeper), Status.EINTR, steer);
  }
  assert.deepEqual(called, []);
});

Deno.test("a native scope's `await using` and a task already cancelled at its nativeScope(task) cancel by the scope's own cancel and wait, not members a caller redefined on NativeScope's prototype", async () => {
  // Before, the dispose ran `this.cancel()` and `this.wait()`, and a task already cancelled ran
  // `ns.cancel()` (the prototype's at that call): a redefinition left the children running (each
  // sleep here: its whole 2 s, KC_OK) or made the dispose run the caller's wait.
  const names = ["cancel", "wait"] as const;
  const descs = names.map((n) => Object.getOwnPropertyDescriptor(NativeScope.prototype, n)!);
  const called: string[] = [];
  const steer = () => {
    for (const name of names) {
      Object.defineProperty(NativeScope.prototype, name, {
        configurable: true,
        writable: true,
        value: () => {
          called.push(name);
          return name === "wait" ? Promise.resolve() : false;
        },
      });
    }
  };
  const restore = () =>
    names.forEach((n, i) => Object.defineProperty(NativeScope.prototype, n, descs[i]));
  const disposed = cells(2_000);
  try {
    steer();
    {
      await using ns = NativeScope.create();
      ns.launch("cancellable-sleeper", disposed);
    }
  } finally {
    restore();
  }
  assert.ok(done(disposed), "the dispose waited for its child");
  assert.equal(status(disposed), Status.EINTR);
  // A task already cancelled: its native scope is cancelled as it is made, so a launch into it
  // is refused (with the steered cancel it launched, the sleeper running its whole sleep).
  const late = cells(2_000);
  let refused: unknown = "not run";
  try {
    steer();
    await coroutineScope(async (scope) => {
      await scope.launch((task) => {
        task.cancel();
        try {
          nativeScope(task).launch("cancellable-sleeper", late);
          refused = "launched";
        } catch (e) {
          refused = e;
        }
      }).join();
    });
  } finally {
    restore();
  }
  assert.ok(refused instanceof CancellationError, String(refused));
  assert.ok(!done(late));
  assert.deepEqual(called, []);
});

Deno.test("a task's native scope reads its owner's context and state, watches its end, starts its children's job and cancels its owner by JobSupport's own members, not ones a caller redefined on a job's prototype", async () => {
  // Before, nativeScope(task) read `owner.context` and ran `owner.invokeOnCompletion(...)`, the
  // job standing for its children read `owner.context` and ran `this.start()`, and an owned
  // scope's dispose `owner.cancel(...)`: the prototype's at that call, so a redefinition made
  // nativeScope(task) or its first launch throw, or left the owner running after the dispose.
  const disposed = cells(2_000);
  // Sleeps until the timeout's cancel reaches it (a minute at most): a 2 s sleep ended by itself
  // (KC_OK) where the host stalled the event loop past it before the 50 ms timer fired.
  const timed = cells(MINUTE);
  let ownerCancelled: unknown = "not run";
  // The test's own reads of a task's state and signal by kcoro's functions: the getters are
  // redefined too.
  const job = (task: unknown) => task as JobSupport<unknown>;
  const { calls } = await withJobMembersRedefined(
    JOB_MEMBERS,
    async () => {
      await coroutineScope((scope) => {
        scope.launch(async (task) => {
          // Its `job` getter too (Coroutine's, on the task's prototype): nativeScope(task) finds
          // the task itself without it.
          const proto = Object.getPrototypeOf(task) as object;
          const jobDesc = Object.getOwnPropertyDescriptor(proto, "job")!;
          Object.defineProperty(proto, "job", {
            ...jobDesc,
            get: () => {
              throw new Error("the job getter redefined on the task's prototype ran");
            },
          });
          let ns: NativeScope;
          try {
            ns = nativeScope(task);
          } finally {
            Object.defineProperty(proto, "job", jobDesc);
          }
          ns.launch("cancellable-sleeper", disposed);
          await ns[Symbol.asyncDispose](); // cancels and waits for the child, then the owner
          ownerCancelled = isCancelledJob(job(task));
        });
      });
      // Under a withTimeout: the native scope takes its owner's deadline.
      await assert.rejects(
        withTimeout(50, async (task) => {
          nativeScope(task).launch("cancellable-sleeper", timed);
          await untilAborted(signalOfJob(job(task)));
        }),
        TimeoutError,
      );
    },
  );
  assert.deepEqual(calls, []);
  assert.equal(ownerCancelled, true);
  assert.ok(done(disposed) && done(timed));
  assert.equal(status(disposed), Status.EINTR);
  assert.equal(status(timed), Status.EINTR);
});

Deno.test("a launch refused by a task's native scope cancelled natively cancels its owner by JobSupport's own cancel and state, not ones a caller redefined on a job's prototype", async () => {
  // The launch's ECANCELED path: before, `owner.isCancelled` and `owner.cancel(...)`, the
  // prototype's at that call, whose throw came out of the launch in place of its
  // CancellationError, the owner left running.
  let ownerCancelled: unknown = "not run";
  const { calls } = await withJobMembersRedefined(JOB_MEMBERS, async () => {
    await coroutineScope((scope) => {
      scope.launch((task) => {
        const ns = nativeScope(task);
        ns.cancel(); // the native scope's own cancel: its owner learns of it at the next launch
        assert.throws(
          () => ns.launch("cancellable-sleeper", cells(2_000)),
          (e: unknown) => e instanceof CancellationError && /was cancelled/.test(String(e)),
        );
        ownerCancelled = isCancelledJob(task as unknown as JobSupport<unknown>);
      });
    });
  });
  assert.deepEqual(calls, []);
  assert.equal(ownerCancelled, true);
});

Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

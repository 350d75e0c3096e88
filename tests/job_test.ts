// Job states and Kotlin's flag table, join/await, cancel, start, invokeOnCompletion: one test per
// rule. Tasks wait on gates (promises the test resolves), never on sleeps.
import assert from "node:assert/strict";
import {
  assertNotThisError,
  assertSameItems,
  catchReported,
  evalScript,
  JOB_MEMBERS,
  settled,
  until,
  untilAborted,
  withJobMembersRedefined,
} from "./support.ts";
import { addFinalizer as addScopeFinalizer, follow as followSignal } from "../src/scope.ts";
import {
  attachTo,
  completeBody,
  handlerCountOf,
  JobSupport,
  stoppedWalksCount,
} from "../src/job.ts";
import {
  CancellationError,
  Channel,
  codecs,
  CompletableDeferred,
  CompletionHandlerError,
  Context,
  CoroutineExceptionHandler,
  type CoroutineScope,
  coroutineScope,
  createContextKey,
  createScope,
  delay,
  type Job,
  type JobState,
  supervisorScope,
} from "../mod.ts";
import { atDepth } from "./stack_edge.ts";

/** The flags of `job` as Kotlin's table writes them. */
function flags(job: Job): [JobState, boolean, boolean, boolean] {
  return [job.state, job.isActive, job.isCompleted, job.isCancelled];
}

/** Lets queued microtasks and a macrotask run (bounded; not a sleep used as synchronisation). */
const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("job state new: a lazy job is not active, completed or cancelled", async () => {
  await coroutineScope(async (scope) => {
    let ran = false;
    const job = scope.launch(() => {
      ran = true;
    }, { lazy: true });
    assert.deepEqual(flags(job), ["new", false, false, false]);
    await tick();
    assert.equal(ran, false); // a lazy job does not start by itself
    job.start();
  });
});

Deno.test("job state active: a running job is active only", async () => {
  await coroutineScope((scope) => {
    const gate = Promise.withResolvers<void>();
    const job = scope.launch(() => gate.promise);
    assert.deepEqual(flags(job), ["active", true, false, false]);
    gate.resolve();
  });
});

Deno.test("job state completing: body done, a child still running, still active", async () => {
  await coroutineScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const parent = scope.launch((task) => {
      task.launch(() => gate.promise);
    }); // a synchronous block: its body is done when launch returns
    assert.deepEqual(flags(parent), ["completing", true, false, false]);
    gate.resolve();
    await parent.join();
    assert.deepEqual(flags(parent), ["completed", false, true, false]);
  });
});

Deno.test("job state after a cancel while completing: cancelling, then cancelled, the body's value dropped (Kotlin)", async () => {
  // Kotlin's makeCancelling on a Finishing state not yet sealed: a job whose body returned but
  // whose children still run is cancelled, ends cancelled, and await throws, not the value.
  await coroutineScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const causes: unknown[] = [];
    const d = scope.async((task) => {
      task.launch(() => gate.promise); // ignores its signal: keeps d completing, then cancelling
      return 42;
    });
    d.invokeOnCompletion((cause) => causes.push(cause));
    assert.deepEqual(flags(d), ["completing", true, false, false]);
    d.cancel();
    assert.deepEqual(flags(d), ["cancelling", false, false, true]);
    assert.equal(d.start(), false);
    gate.resolve();
    await d.join();
    assert.deepEqual(flags(d), ["cancelled", false, true, true]);
    const thrown = await d.await().then(() => undefined, (e) => e);
    assert.ok(thrown instanceof CancellationError);
    assert.deepEqual(causes, [thrown]);
    assert.equal(scope.isActive, true); // a cancelled child is no failure
  });
  // A child failing while its parent completes fails the parent with that error.
  const boom = new Error("boom");
  await supervisorScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const d = scope.async((task) => {
      task.launch(async () => {
        await gate.promise;
        throw boom;
      });
      return 42;
    });
    assert.equal(d.state, "completing");
    gate.resolve();
    await assert.rejects(d.await(), (e) => e === boom);
    assert.deepEqual(flags(d), ["cancelled", false, true, true]);
  });
});

Deno.test("job state completed: final, not active, not cancelled", async () => {
  await coroutineScope(async (scope) => {
    const job = scope.launch(async () => {});
    await job.join();
    assert.deepEqual(flags(job), ["completed", false, true, false]);
  });
});

Deno.test("job state cancelling: cancelled while its body still runs", async () => {
  await coroutineScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const job = scope.launch(() => gate.promise); // ignores its signal on purpose
    job.cancel();
    assert.deepEqual(flags(job), ["cancelling", false, false, true]);
    gate.resolve();
    await job.join();
    assert.deepEqual(flags(job), ["cancelled", false, true, true]);
  });
});

Deno.test("job state cancelled: a cancelled job ends cancelled even if its body returns", async () => {
  await coroutineScope(async (scope) => {
    const job = scope.async(async (task) => {
      await untilAborted(task.signal).catch(() => {});
      return "ignored";
    });
    job.cancel();
    await job.join();
    assert.deepEqual(flags(job), ["cancelled", false, true, true]);
    await assert.rejects(job.await(), CancellationError);
  });
});

Deno.test("job state of a failed job: cancelled, isCancelled true (Kotlin)", async () => {
  const err = new Error("failed");
  await supervisorScope(async (scope) => {
    const job = scope.async(() => Promise.reject(err));
    await job.join();
    assert.deepEqual(flags(job), ["cancelled", false, true, true]);
  });
});

Deno.test("start(): true only when it starts a new job", async () => {
  await coroutineScope(async (scope) => {
    let runs = 0;
    const lazy = scope.launch(() => {
      runs++;
    }, { lazy: true });
    assert.equal(lazy.start(), true);
    assert.equal(lazy.start(), false);
    await lazy.join();
    assert.equal(runs, 1);
    assert.equal(scope.launch(async () => {}).start(), false); // already active
  });
});

Deno.test("join() and await() start a lazy job", async () => {
  await coroutineScope(async (scope) => {
    const a = scope.launch(async () => {}, { lazy: true });
    await a.join();
    assert.equal(a.state, "completed");
    const b = scope.async(() => 7, { lazy: true });
    assert.equal(await b.await(), 7);
  });
});

Deno.test("cancelling a lazy job before start: cancelled at once, block never runs", async () => {
  await coroutineScope(async (scope) => {
    let ran = false;
    const job = scope.launch(() => {
      ran = true;
    }, { lazy: true });
    job.cancel();
    assert.deepEqual(flags(job), ["cancelled", false, true, true]);
    assert.equal(job.start(), false);
    await job.join();
    assert.equal(ran, false);
  });
});

Deno.test("join waits for any outcome and never rejects", async () => {
  await supervisorScope(async (scope) => {
    const failed = scope.async(() => Promise.reject(new Error("x")));
    const cancelled = scope.launch((task) => untilAborted(task.signal));
    const completed = scope.launch(async () => {});
    cancelled.cancel();
    await Promise.all([failed.join(), cancelled.join(), completed.join()]);
    assert.equal(failed.state, "cancelled");
    assert.equal(cancelled.state, "cancelled");
    assert.equal(completed.state, "completed");
    await failed.await().catch(() => {});
  });
});

Deno.test("await returns the value, or rethrows the same error every time", async () => {
  const err = new Error("same");
  await supervisorScope(async (scope) => {
    const ok = scope.async(() => ({ n: 1 }));
    const value = await ok.await();
    assert.equal(await ok.await(), value);
    const bad = scope.async(async () => {
      await null;
      throw err;
    });
    const before = bad.await(); // waiting before it fails
    await assert.rejects(before, (e) => e === err);
    await assert.rejects(bad.await(), (e) => e === err); // after it failed
    await assert.rejects(bad.await(), (e) => e === err);
  });
});

Deno.test("cancel(cause): a CancellationError is kept, anything else wrapped as its cause", async () => {
  await coroutineScope(async (scope) => {
    const mine = new CancellationError("mine");
    const a = scope.async((task) => untilAborted(task.signal));
    a.cancel(mine);
    await assert.rejects(a.await(), (e) => e === mine);

    const reason = new Error("shutting down");
    const b = scope.async((task) => untilAborted(task.signal));
    b.cancel(reason);
    await assert.rejects(
      b.await(),
      (e) =>
        e instanceof CancellationError && e.cause === reason && /shutting down/.test(e.message),
    );
  });
});

Deno.test("cancel(cause) of a string over 4096 characters: its message names its head and length, its cause is whole", async () => {
  // The message describes a cause that is no Error as error messages do (`describe`): quoted
  // whole, a huge string made the message longer than V8 allows, and cancel() threw the
  // engine's RangeError "Invalid string length" instead of cancelling.
  const short = new CompletableDeferred<number>();
  short.cancel("r".repeat(4096));
  await assert.rejects(short.await(), { message: `Cancelled: "${"r".repeat(4096)}"` });
  const reason = "r".repeat(4097);
  const long = new CompletableDeferred<number>();
  long.cancel(reason);
  await assert.rejects(
    long.await(),
    (e) =>
      e instanceof CancellationError && e.cause === reason &&
      e.message === `Cancelled: "${"r".repeat(64)}"… (a string of 4097 characters)`,
  );
});

Deno.test("cancel(cause) of a real Error given a null prototype: the message is the Error's own, as any Error's", async () => {
  // It is no `instanceof Error`: toCancellation described it as an object, "Cancelled: [object
  // Error]", its message lost (Error.isError says it is one, as codec's isError asks).
  const reason = new Error("gone");
  Object.setPrototypeOf(reason, null);
  const job = new CompletableDeferred<number>();
  job.cancel(reason);
  await assert.rejects(
    job.await(),
    (e) => e instanceof CancellationError && e.cause === reason && e.message === "Cancelled: gone",
  );
});

Deno.test("cancel(cause) of an Error whose message is over 4096 characters: the message names its head and length, the job is cancelled", async () => {
  // Its message was put in whole: one of 2**29 - 24 characters (V8's longest string) made
  // "Cancelled: <message>" longer than V8 allows, and cancel() threw the engine's RangeError
  // "Invalid string length", the job not cancelled.
  const whole = new Error("m".repeat(4096));
  const short = new CompletableDeferred<number>();
  short.cancel(whole);
  await assert.rejects(short.await(), { message: `Cancelled: ${"m".repeat(4096)}` });
  const reason = new Error("m".repeat(4097));
  const long = new CompletableDeferred<number>();
  long.cancel(reason);
  assert.equal(long.isCancelled, true);
  await assert.rejects(
    long.await(),
    (e) =>
      e instanceof CancellationError && e.cause === reason &&
      e.message === `Cancelled: ${"m".repeat(64)}… (a message of 4097 characters)`,
  );
});

Deno.test("cancel is idempotent and does nothing after completion", async () => {
  await coroutineScope(async (scope) => {
    const first = new CancellationError("first");
    const job = scope.async((task) => untilAborted(task.signal));
    job.cancel(first);
    job.cancel(new CancellationError("second"));
    await assert.rejects(job.await(), (e) => e === first);
    const done = scope.async(() => 1);
    await done.join();
    done.cancel();
    assert.equal(done.state, "completed");
    assert.equal(await done.await(), 1);
  });
});

Deno.test("a job's signal aborts on cancel, with the CancellationError as reason", async () => {
  await coroutineScope(async (scope) => {
    let signal: AbortSignal | undefined;
    const job = scope.launch((task) => {
      signal = task.signal;
      return untilAborted(task.signal);
    });
    assert.equal(signal!.aborted, false);
    const cause = new CancellationError("stop");
    job.cancel(cause);
    assert.equal(signal!.aborted, true);
    assert.equal(signal!.reason, cause);
    await job.join();
    // A signal first asked for after cancellation is born aborted.
    const late = scope.async(async () => {}, { lazy: true });
    late.cancel(cause);
    assert.equal((late as unknown as { signal: AbortSignal }).signal.reason, cause);
  });
});

Deno.test("invokeOnCompletion: called once with the outcome; at once on a finished job", async () => {
  const err = new Error("failed");
  await supervisorScope(async (scope) => {
    const seen: unknown[] = [];
    const ok = scope.launch(async () => {});
    ok.invokeOnCompletion((c) => seen.push(["ok", c]));
    const cancelled = scope.launch((task) => untilAborted(task.signal));
    cancelled.invokeOnCompletion((c) => seen.push(["cancelled", c]));
    const failed = scope.async(() => Promise.reject(err));
    failed.invokeOnCompletion((c) => seen.push(["failed", c]));
    cancelled.cancel();
    await Promise.all([ok.join(), cancelled.join(), failed.join()]);
    assert.equal(seen.length, 3);
    assert.deepEqual(seen.find((s) => (s as unknown[])[0] === "ok"), ["ok", undefined]);
    assert.ok(
      (seen.find((s) => (s as unknown[])[0] === "cancelled") as unknown[])[1] instanceof
        CancellationError,
    );
    assert.deepEqual(seen.find((s) => (s as unknown[])[0] === "failed"), ["failed", err]);
    let now: unknown = "not called";
    ok.invokeOnCompletion((c) => now = c); // already completed: synchronously
    assert.equal(now, undefined);
    await failed.await().catch(() => {});
  });
});

Deno.test("invokeOnCompletion: disposing the result removes the handler", async () => {
  await coroutineScope(async (scope) => {
    let calls = 0;
    const gate = Promise.withResolvers<void>();
    const job = scope.launch(() => gate.promise);
    const registration = job.invokeOnCompletion(() => calls++);
    {
      using _kept = job.invokeOnCompletion(() => calls++);
    } // removed here
    registration[Symbol.dispose]();
    registration[Symbol.dispose](); // twice is harmless
    job.invokeOnCompletion(() => calls += 10);
    gate.resolve();
    await job.join();
    assert.equal(calls, 10);
  });
});

Deno.test("invokeOnCompletion: a handler disposed by another handler while the job completes does not run", async () => {
  await coroutineScope(async (scope) => {
    const calls: string[] = [];
    const gate = Promise.withResolvers<void>();
    const job = scope.launch(() => gate.promise);
    job.invokeOnCompletion(() => {
      calls.push("first");
      second[Symbol.dispose](); // runs at completion, after second is set
    });
    const second = job.invokeOnCompletion(() => calls.push("second"));
    job.invokeOnCompletion(() => calls.push("third"));
    gate.resolve();
    await job.join();
    assert.deepEqual(calls, ["first", "third"]);
  });
});

Deno.test("handler exceptions surface as CompletionHandlerError; other handlers still run", async () => {
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const boom = new Error("handler bug");
  let second = false;
  await coroutineScope((scope) => {
    const job = scope.launch(async () => {});
    job.invokeOnCompletion(() => {
      throw boom;
    });
    job.invokeOnCompletion(() => second = true);
  }, { context });
  assert.equal(second, true);
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof CompletionHandlerError);
  assert.equal((reported[0] as Error).cause, boom);
  assert.match((reported[0] as Error).message, /completion handler of Job\(completed\)/);
});

Deno.test("the exceptions of a job's completion handlers are reported once, after all of them ran: the first as the CompletionHandlerError's cause, the others suppressed (Kotlin's notifyHandlers)", async () => {
  // Before, each throw was reported on its own, as it came, before the later handlers ran.
  const reported: unknown[] = [];
  const ran: string[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => {
    ran.push("reported");
    reported.push(e);
  });
  const first = new Error("first"), second = new RangeError("second");
  await coroutineScope((scope) => {
    const job = scope.launch(async () => {});
    job.invokeOnCompletion(() => {
      ran.push("a");
      throw first;
    });
    job.invokeOnCompletion(() => ran.push("b"));
    job.invokeOnCompletion(() => {
      ran.push("c");
      throw second;
    });
    job.invokeOnCompletion(() => {
      ran.push("d");
      throw first; // the same error again: kept, as Java's addSuppressed keeps it
    });
  }, { context });
  assert.deepEqual(ran, ["a", "b", "c", "d", "reported"]);
  assert.equal(reported.length, 1);
  const error = reported[0] as CompletionHandlerError & { suppressed?: unknown[] };
  assert.ok(error instanceof CompletionHandlerError);
  assert.equal(error.cause, first);
  assertSameItems(error.suppressed, [second, first]);
  assert.equal(Object.keys(error).includes("suppressed"), false); // not enumerable
  // A CompletableDeferred's too, reported where it has no handler (an uncaught exception).
  using uncaught = catchReported();
  const d = new CompletableDeferred<number>();
  d.invokeOnCompletion(() => {
    throw first;
  });
  d.invokeOnCompletion(() => {
    throw second;
  });
  d.complete(1);
  assert.equal(uncaught.errors.length, 1);
  const e = uncaught.errors[0] as CompletionHandlerError & { suppressed?: unknown[] };
  assert.equal(e.cause, first);
  assertSameItems(e.suppressed, [second]);
});

Deno.test("a supervisor's failing child: its failure, then its handler's exception, reach the handler; the supervisor and its other children go on (Kotlin)", async () => {
  // Kotlin's order: handleJobException (the failure no parent takes) while finalizing, then the
  // completion handlers, whose exception goes to handleCoroutineException; neither cancels the
  // supervisor, and the handler sees the failure as its cause.
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const failure = new Error("child failed");
  const bug = new Error("handler bug");
  const causes: unknown[] = [];
  const result = await supervisorScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const sibling = scope.async(async () => {
      await gate.promise;
      return "sibling done";
    });
    const job = scope.launch(async () => {
      await null;
      throw failure;
    });
    job.invokeOnCompletion((cause) => {
      causes.push(cause);
      throw bug;
    });
    await job.join();
    assert.equal(scope.isActive, true);
    gate.resolve();
    return sibling.await();
  }, { context });
  assert.equal(result, "sibling done");
  assert.deepEqual(causes.length, 1);
  assert.equal(causes[0], failure);
  assert.equal(reported.length, 2);
  assert.equal(reported[0], failure);
  assert.ok(reported[1] instanceof CompletionHandlerError);
  assert.equal((reported[1] as Error).cause, bug);
});

Deno.test("handler exceptions without an exception handler reach reportError (uncaught)", () => {
  // Caught, or Deno exits: a reported error is an uncaught exception.
  using reported = catchReported();
  const events = reported.errors;
  const d = new CompletableDeferred<number>();
  d.invokeOnCompletion(() => {
    throw new RangeError("not swallowed");
  });
  d.complete(1);
  assert.equal(events.length, 1);
  assert.ok(events[0] instanceof CompletionHandlerError);
  assert.ok((events[0] as Error).cause instanceof RangeError);
  // A handler added to a finished job runs at once and throws to its caller.
  assert.throws(() =>
    d.invokeOnCompletion(() => {
      throw new Error("to the caller");
    }), /to the caller/);
});

Deno.test("a throwing CoroutineExceptionHandler is reported with the error it was handling", async () => {
  // Caught, or Deno exits: a reported error is an uncaught exception.
  using reported = catchReported();
  const events = reported.errors;
  const original = new Error("task failed");
  const context = Context.empty.with(CoroutineExceptionHandler, () => {
    throw new Error("handler failed too");
  });
  await supervisorScope((scope) => {
    scope.launch(() => Promise.reject(original));
  }, { context });
  assert.equal(events.length, 1);
  assert.ok(events[0] instanceof AggregateError);
  assert.equal((events[0] as AggregateError).errors[0], original);
});

Deno.test("CompletableDeferred: complete, completeExceptionally, cancel; first one wins", async () => {
  const a = new CompletableDeferred<string>();
  assert.deepEqual(flags(a), ["active", true, false, false]);
  assert.equal(a.complete("x"), true);
  assert.equal(a.complete("y"), false);
  assert.equal(await a.await(), "x");

  const b = new CompletableDeferred<string>();
  const err = new Error("no");
  assert.equal(b.completeExceptionally(err), true);
  assert.equal(b.complete("late"), false);
  assert.deepEqual(flags(b), ["cancelled", false, true, true]);
  await assert.rejects(b.await(), (e) => e === err);

  const c = new CompletableDeferred<string>();
  const waiting = c.await();
  c.cancel();
  assert.equal(c.state, "cancelled"); // no body to wait for
  assert.equal(c.complete("late"), false);
  await assert.rejects(waiting, CancellationError);

  // completeExceptionally with a CancellationError cancels rather than fails.
  const d = new CompletableDeferred<void>();
  d.completeExceptionally(new CancellationError("stop"));
  await assert.rejects(d.await(), CancellationError);
});

Deno.test("CompletableDeferred.complete refuses a thenable by name, leaving the deferred active: await() could not return it, so the state said completed while await() adopted it", async () => {
  // A promise's resolve adopts a thenable, so await() can never give one back, and Kotlin's
  // complete(value) completes with the value itself, at once. Before, complete(thenable) said
  // true, the state "completed" and completion handlers "completed", while await() waited on the
  // thenable and rejected with its failure (or never settled with it).
  const message = /^Cannot complete: value must not be a thenable .*, received \[object Promise\]$/;
  const d = new CompletableDeferred<unknown>();
  const ended: unknown[] = [];
  d.invokeOnCompletion((cause) => ended.push(cause));
  const boom = new Error("boom");
  const rejected = Promise.reject(boom);
  rejected.catch(() => {});
  assert.throws(() => d.complete(rejected), { name: "TypeError", message });
  assert.throws(() => d.complete({ then: () => {} }), { message: /received \[object Object\]$/ });
  assert.throws(() => d.complete(Object.assign(() => 1, { then: () => {} })), {
    message: /received a function$/,
  });
  // One whose `then` cannot be read would make await() reject with what the read throws.
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  assert.throws(() => d.complete(proxy), {
    name: "TypeError",
    message: /^Cannot complete: value's then cannot be read .*, received .+$/,
  });
  assert.equal(d.state, "active");
  assert.deepEqual(ended, []);
  // A non-thenable object (a `then` that is no function) is the value itself.
  const value = { then: 1 };
  assert.equal(d.complete(value), true);
  assert.equal(await d.await(), value);
  assert.deepEqual(ended, [undefined]);
  // Refused also once settled: bad input is refused whatever the state.
  assert.throws(() => d.complete(rejected), { name: "TypeError", message });
});

Deno.test("CompletableDeferred.complete reads a value's then once: a getter answering a function to that read is refused, one answering otherwise completes with the value", async () => {
  // README: the one read decides; a later read (a promise's resolve, in await()) is the
  // engine's own, which no read here can stand in for.
  const counting = (answers: (n: number) => unknown) => {
    const o = { reads: 0, value: {} };
    Object.defineProperty(o.value, "then", { get: () => answers(++o.reads) });
    return o;
  };
  const refused = counting((n) => n === 1 ? () => {} : undefined);
  const d = new CompletableDeferred<unknown>();
  assert.throws(() => d.complete(refused.value), { name: "TypeError" });
  assert.equal(refused.reads, 1, "read once, refused");
  assert.equal(d.state, "active");
  const plain = counting(() => undefined);
  assert.equal(d.complete(plain.value), true);
  assert.equal(plain.reads, 1, "read once, completed");
  assert.equal(d.state, "completed");
  assert.equal(await d.await(), plain.value);
});

Deno.test("a block's thenable resolving with another thenable is adopted through it, as a promise's: its failure fails the task", async () => {
  // A thenable of the caller's own may hand its onFulfilled another thenable; Promise.resolve
  // adopts it in turn. Before, the task completed with it at once: its state said completed and
  // its scope went on while await() adopted it and rejected with its failure.
  const boom = new Error("boom");
  let handBack!: (v: unknown) => void;
  const outer = { then: (ok: (v: unknown) => void) => handBack = ok };
  let inner!: (e: unknown) => void;
  const pending = new Promise((_, reject) => inner = reject);
  let task!: Job;
  const outcome = coroutineScope((scope) => {
    task = scope.async(() => outer as unknown as PromiseLike<unknown>);
    handBack(pending);
    assert.equal(task.state, "active", "waits for the thenable handed back");
    inner(boom);
  });
  await assert.rejects(outcome, (e) => e === boom);
  assert.equal(task.state, "cancelled");
  // A thenable calling back twice, or then throwing, counts once, the first call (Promise's
  // resolve functions): a later value, failure or throw while the first is adopted is ignored.
  const twice = {
    then(ok: (v: unknown) => void, fail: (e: unknown) => void) {
      ok(Promise.resolve("first"));
      ok("second");
      fail(new Error("late"));
      throw new Error("later");
    },
  };
  assert.equal(
    await coroutineScope((s) => s.async(() => twice as PromiseLike<string>).await()),
    "first",
  );
});

Deno.test("a block's thenables handing back one another synchronously, 10,000 deep, are adopted through: the stack overflowed and the body never ended", async () => {
  // Each `then` calls back at once with the next thenable, so each adoption ran inside the one
  // before. Before, the stack ran out near 2,000 levels and a level whose thenable had already
  // called back dropped the RangeError: the task stayed active and its scope never settled.
  const chain = (depth: number, last: unknown): PromiseLike<unknown> => {
    let level = 0;
    const next = (): PromiseLike<unknown> => ({
      then: (ok: (v: unknown) => void) => ok(++level < depth ? next() : last),
    } as PromiseLike<unknown>);
    return next();
  };
  const outcomes: unknown[] = [];
  using _ = catchReported(); // the launch's failure, under a supervisor
  const failing = {
    then: (_ok: unknown, fail: (e: unknown) => void) => fail(new Error("failed deep")),
  };
  const runs = [
    coroutineScope(() => chain(10_000, "scope")),
    coroutineScope((s) => s.async(() => chain(10_000, "async")).await()),
    supervisorScope((s) => {
      s.launch(() => chain(10_000, failing) as Promise<void>)
        .invokeOnCompletion((cause) => outcomes.push((cause as Error).message));
    }).then(() => "launch"),
  ].map((p) => p.then((v) => outcomes.push(v)));
  await until(() => outcomes.length === 4, () => `every run settled: ${outcomes}`, 10_000);
  await Promise.all(runs);
  assert.deepEqual(outcomes.toSorted(), ["async", "failed deep", "launch", "scope"]);
});

Deno.test("a failure whose name getter cancels its task or scope still fails them, as a failure after a cancel does: the task was made final in the getter and the failure dropped", async () => {
  // The failure's `name` is read to tell an AbortError; a getter of the caller's there runs
  // while the task's body is ending. Before, the body was marked done first, so a cancel of the
  // task in the getter finished it, cancelled, and the failure found it final: a coroutineScope
  // resolved, or rejected with the CancellationError, and nothing was reported.
  const reentering = (act: () => void) => {
    const e = new Error("reentered");
    Object.defineProperty(e, "name", {
      get() {
        act();
        return "Error";
      },
    });
    return e;
  };
  const cancelsItself = coroutineScope((scope) => {
    const task: Job = scope.launch(async () => {
      await null;
      throw reentering(() => task.cancel());
    });
  });
  await assert.rejects(cancelsItself, { message: "reentered" });
  const cancelsScope = coroutineScope((scope) => {
    scope.launch(async () => {
      await null;
      throw reentering(() => scope.cancel());
    });
  });
  await assert.rejects(cancelsScope, { message: "reentered" });
  // Under a supervisor the failure is reported, not dropped.
  using reported = catchReported();
  let task!: Job;
  await supervisorScope((scope) => {
    task = scope.launch(async () => {
      await null;
      throw reentering(() => task.cancel());
    });
  });
  assert.deepEqual(reported.errors.map((e) => (e as Error).message), ["reentered"]);
  assert.equal(task.state, "cancelled");
  // The same as a task that cancels itself and then fails, with no getter.
  await assert.rejects(
    coroutineScope((scope) => {
      const plain: Job = scope.launch(async () => {
        await null;
        plain.cancel();
        throw new Error("after its cancel");
      });
    }),
    { message: "after its cancel" },
  );
});

Deno.test("an AbortError whose name getter cancels its task is that task's cancellation, not a failure: the job state was read before the getter ran, so the task failed its scope with the AbortError", async () => {
  const cancellingAbort = (act: () => void) => {
    const e = new Error("aborted by the getter");
    Object.defineProperty(e, "name", {
      get() {
        act();
        return "AbortError";
      },
    });
    return e;
  };
  // The scope completes (a cancelled child is no failure), nothing is reported.
  using reported = catchReported();
  let task!: Job;
  await coroutineScope((scope) => {
    task = scope.launch(async () => {
      await null;
      throw cancellingAbort(() => task.cancel());
    });
  });
  assert.equal(task.state, "cancelled");
  await supervisorScope((scope) => {
    task = scope.launch(async () => {
      await null;
      throw cancellingAbort(() => task.cancel(new CancellationError("mine")));
    });
  });
  assert.equal(task.state, "cancelled");
  let cause: unknown;
  task.invokeOnCompletion((c) => cause = c);
  assert.ok(cause instanceof CancellationError, String(cause));
  assert.equal((cause as Error).message, "mine"); // the cancel's own error stays the cause
  // A deferred whose completeExceptionally gets one: cancelled, its await rejects with the cancel's.
  const d = new CompletableDeferred<void>();
  d.completeExceptionally(cancellingAbort(() => d.cancel(new CancellationError("by getter"))));
  assert.equal(d.state, "cancelled");
  await assert.rejects(d.await(), { name: "CancellationError", message: "by getter" });
  assert.deepEqual(reported.errors, []);
});

Deno.test("completeExceptionally(undefined) fails with a TypeError naming completeExceptionally", async () => {
  const d = new CompletableDeferred<void>();
  assert.equal(d.completeExceptionally(undefined), true);
  assert.equal(d.state, "cancelled");
  // The operation the caller made, not the "fail task" of a task's body that threw undefined.
  await assert.rejects(d.await(), {
    name: "TypeError",
    message: "Cannot completeExceptionally: its error must not be undefined (to completion " +
      "handlers that means completed), received undefined",
  });
});

Deno.test("a job that fails with a value whose prototype cannot be read still finishes", async () => {
  // A revoked proxy throws at `instanceof`: telling a cancellation from a failure used to throw
  // halfway through finishing, and the job (and any scope waiting for it) never finished.
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  // (assert.rejects would touch the proxy, and so would resolving a promise with it: whether
  // the promise rejected with it is decided inside the handler.)
  const rejectsWith = (p: Promise<unknown>, x: unknown) => p.then(() => false, (e) => e === x);
  const d = new CompletableDeferred<void>();
  assert.equal(d.completeExceptionally(proxy), true);
  assert.ok(await rejectsWith(d.await(), proxy));
  assert.equal(d.state, "cancelled");
  const failing = coroutineScope(() => {
    throw proxy;
  });
  assert.ok(await rejectsWith(failing, proxy));
  // As a cancellation cause it is carried, and described safely.
  const job = createScope();
  job.cancel(proxy);
  await job.join();
  assert.equal(job.state, "cancelled");
});

Deno.test("children lists the unfinished children, oldest first (Kotlin's attachment order)", async () => {
  // Before, newest first (c, b, a). Compared by identity: deepEqual of two jobs compares their
  // enumerable fields, which every job of a scope shares (it passed [b, a] for [a, b]).
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const first = Promise.withResolvers<void>();
  const a = scope.launch(() => gate.promise);
  const b = scope.launch(() => first.promise);
  const c = scope.async(() => gate.promise, { lazy: true }); // unstarted ones count too
  const names = new Map<Job, string>([[a, "a"], [b, "b"], [c, "c"]]);
  const children = () => scope.children.map((j) => names.get(j) ?? String(j));
  assert.deepEqual(children(), ["a", "b", "c"]);
  first.resolve();
  await b.join();
  assert.deepEqual(children(), ["a", "c"]); // a finished one leaves, the order stays
  names.set(scope.launch(() => gate.promise), "d");
  assert.deepEqual(children(), ["a", "c", "d"]);
  gate.resolve();
  await Promise.all(scope.children.map((j) => j.join()));
  assert.deepEqual(children(), []);
});

Deno.test("a final job has left its parent's children when its completion handlers run (Kotlin unregisters from the parent first); its exception handler runs before, the job cancelling and still listed", async () => {
  // Kotlin's completeStateFinalization disposes the parent handle, then invokes the completion
  // handlers; its exception handler runs before that (handleJobException), the job not final
  // yet, as kcoro's does now ("a CoroutineExceptionHandler sees the failed job cancelling").
  // Before, the child was unlinked after its handlers: each of these saw it in `children`.
  const seen: string[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, () => {
    seen.push(`reported: ${failing.state} ${scope.children.includes(failing)}`);
  });
  await using scope = createScope({ supervisor: true, context });
  const gate = Promise.withResolvers<void>(), last = Promise.withResolvers<void>();
  const other = scope.launch(() => last.promise); // oldest: the others leave from behind it
  const done = scope.launch(() => gate.promise);
  const cancelled = scope.launch(() => gate.promise);
  const failing = scope.launch(async () => {
    await gate.promise;
    throw new Error("fails");
  });
  const lazy = scope.launch(() => {}, { lazy: true });
  for (const [name, job] of [["done", done], ["cancelled", cancelled], ["lazy", lazy]] as const) {
    job.invokeOnCompletion(() =>
      seen.push(`${name}: ${job.state} ${scope.children.includes(job)}`)
    );
  }
  failing.invokeOnCompletion(() => seen.push(`failing: ${scope.children.includes(failing)}`));
  lazy.cancel(); // final at once, on the caller's stack
  cancelled.cancel(); // final once its block ends
  gate.resolve();
  await Promise.all([done.join(), cancelled.join(), failing.join()]);
  assert.deepEqual(seen.sort(), [
    "cancelled: cancelled false",
    "done: completed false",
    "failing: false",
    "lazy: cancelled false",
    "reported: cancelling true",
  ]);
  assertSameItems(scope.children, [other]);
  last.resolve();
});

Deno.test("a parent already waiting for its children finishes after its last child's completion handlers, one whose own part ends in them at once (Kotlin's ChildCompletion)", async () => {
  // Kotlin: a parent whose body is done waits for a child through a completion handler of the
  // child's (ChildCompletion), so a cancel from the child's earlier handler makes it cancelling,
  // and it completes only at that node; a parent still running whose body ends in the handler
  // finds no child left (the child has unregistered) and completes at once. Before, the child
  // leaving its parent's children first let a waiting parent cancelled in its handler finish
  // there, before the child's later handlers ran.
  for (const how of ["cancel", "close"] as const) {
    const seen: string[] = [];
    const scope = createScope();
    const gate = Promise.withResolvers<void>();
    const child = scope.launch(() => gate.promise);
    scope.job.invokeOnCompletion(() => seen.push(`scope: ${scope.job.state}`));
    child.invokeOnCompletion(() => {
      seen.push("first");
      if (how === "cancel") scope.cancel();
      else void scope.join(); // its own part ends here: no child left to wait for
    });
    child.invokeOnCompletion(() => seen.push(`second: scope ${scope.job.state}`));
    if (how === "cancel") void scope.join(); // waiting for the child from now on
    gate.resolve();
    await child.join();
    await scope.job.join();
    assert.deepEqual(
      seen,
      how === "cancel"
        ? ["first", "second: scope cancelling", "scope: cancelled"]
        : ["first", "scope: completed", "second: scope completed"],
      how,
    );
  }
});

Deno.test("a parent waiting for its last child finishes after all of that child's completion handlers, also one added after the parent began waiting (where Kotlin's ChildCompletion, added as the parent began waiting, runs before it)", async () => {
  // README, "Structured concurrency": kcoro's waiting parent finishes once the child's handlers
  // have all run (`#leaving`), where Kotlin's finishes at its ChildCompletion node, appended to
  // the child's handlers as the parent began waiting (tryWaitForChild): a handler added after
  // that runs there after the parent completed. Pinned, as documented.
  const seen: string[] = [];
  const scope = createScope();
  const gate = Promise.withResolvers<void>();
  const child = scope.launch(() => gate.promise);
  scope.job.invokeOnCompletion(() => seen.push(`scope: ${scope.job.state}`));
  child.invokeOnCompletion(() => seen.push(`early: scope ${scope.job.state}`));
  const joined = scope.join(); // the scope waits for its child from now on
  child.invokeOnCompletion(() => seen.push(`late: scope ${scope.job.state}`));
  gate.resolve();
  await joined;
  // Kotlin: ["early: scope completing", "scope: completed", "late: scope completed"].
  assert.deepEqual(seen, [
    "early: scope completing",
    "late: scope completing",
    "scope: completed",
  ]);
});

Deno.test("bad arguments are TypeErrors that say what was received", async () => {
  await coroutineScope((scope) => {
    assert.throws(() => scope.launch(42 as never), {
      name: "TypeError",
      message: "Cannot launch: block must be a function, received 42",
    });
    assert.throws(
      () => scope.async("x" as never),
      /Cannot run async: block must be a function, received "x"/,
    );
    assert.throws(
      () => scope.launch(() => {}, 5 as never),
      /options must be an object, received 5/,
    );
    assert.throws(
      () => scope.launch(() => {}, { lazy: 1 as never }),
      /lazy must be a boolean, received 1/,
    );
    assert.throws(
      () => scope.launch(() => {}, { context: {} as never }),
      /context must be a Context, received \[object Object\]/,
    );
    const job = scope.launch(async () => {});
    assert.throws(
      () => job.invokeOnCompletion(null as never),
      /handler must be a function, received null/,
    );
    assert.throws(() => new CompletableDeferred(null as never), TypeError);
  });
});

Deno.test("a job's, deferred's and scope's brand checks and internal readers are out of reach: replacing JobSupport._is, CompletableDeferred._isDeferred or Coroutine._isScope with () => true made kcoro take any object for one", async () => {
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const launched = scope.launch(() => gate.promise);
  try {
    forgeBrands(launched, scope);
  } finally {
    gate.resolve(); // also on a failure: the scope's disposal waits for it
  }
  await launched.join();
});

/** The checks of the test above, on `launched`, a running launch of `scope`. */
function forgeBrands(launched: Job, scope: CoroutineScope): void {
  const deferred = new CompletableDeferred<number>();
  const jobClass = Object.getPrototypeOf(CompletableDeferred) as Record<string, unknown>;
  // Public statics and getters before (`_is`, `_isDeferred`, `_isScope`, `_failure`,
  // `_handlerCount`), reachable from any job: now module functions (src/job.ts, src/scope.ts).
  const owners: [object, string][] = [
    [jobClass, "_is"],
    [CompletableDeferred, "_isDeferred"],
    [scope.constructor, "_isScope"],
    [deferred, "_failure"],
    [deferred, "_handlerCount"],
  ];
  for (const [o, k] of owners) assert.equal(k in o, false, k);
  // Where each was (the class that owns it, a static inherited by every subclass), replaced by
  // one that says yes to anything; restored after.
  const ownerOf = (o: object, k: string): object => {
    for (let p: object | null = o; p !== null; p = Object.getPrototypeOf(p)) {
      if (Object.hasOwn(p, k)) return p;
    }
    return o;
  };
  const patched = owners.slice(0, 3).map(([o, k]) => {
    const at = ownerOf(o, k) as Record<string, unknown>;
    const had = Object.getOwnPropertyDescriptor(at, k);
    Object.defineProperty(at, k, { value: () => true, configurable: true, writable: true });
    return () => had === undefined ? delete at[k] : Object.defineProperty(at, k, had);
  });
  try {
    // A CompletableDeferred's member completed a running launch's job from outside its block.
    assert.throws(
      () => CompletableDeferred.prototype.complete.call(launched as never, 5),
      {
        name: "TypeError",
        message: "Cannot complete: this is not a CompletableDeferred, received a Job",
      },
    );
    assert.equal(launched.isActive, true);
    // Any object passed for a parent job: the engine's "Cannot read private member" escaped.
    assert.throws(
      () => createScope({ parent: {} as Job }),
      {
        name: "TypeError",
        message: "Cannot create scope: parent must be a Job, received [object Object]",
      },
    );
    // And a deferred for a scope: a scope's member run on it threw the engine's TypeError.
    const launch = Object.getPrototypeOf(scope).launch as CoroutineScope["launch"];
    assert.throws(
      () => launch.call(deferred as never, () => {}),
      {
        name: "TypeError",
        message: "Cannot launch: this is not a CoroutineScope, received a CompletableDeferred",
      },
    );
  } finally {
    for (const restore of patched) restore();
  }
}

Deno.test("invokeOnCompletion: disposing a handler frees its slot (a select loop on a long-lived job stays flat)", () => {
  const job = new CompletableDeferred<void>();
  const count = () => handlerCountOf(job);
  const seen: number[] = [];
  using _first = job.invokeOnCompletion(() => seen.push(1));
  // Before, each disposed handler kept a slot for as long as the job lived.
  for (let i = 0; i < 1000; i++) job.invokeOnCompletion(() => seen.push(-1))[Symbol.dispose]();
  using _last = job.invokeOnCompletion(() => seen.push(2));
  assert.equal(count(), 2);
  job.complete();
  assert.deepEqual(seen, [1, 2]); // in registration order, disposed ones not called
  assert.equal(count(), 0);
});

Deno.test("a later failure while the first cannot be looked at is reported, not thrown", async () => {
  // The first failure is a revoked proxy: keeping the second in its `suppressed` list threw
  // (Object.isExtensible) out of the state machine, an unhandled rejection that killed Deno.
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const second = new Error("second");
  const failing = coroutineScope((scope) => {
    const gate = Promise.withResolvers<void>();
    scope.launch(async () => {
      await gate.promise;
      throw proxy;
    });
    scope.launch(async () => {
      await gate.promise;
      await null;
      throw second;
    });
    gate.resolve();
  }, { context });
  assert.equal(await failing.then(() => false, (e) => e === proxy), true);
  assertSameItems(reported, [second]);
});

Deno.test("jobs cancelling together complete only once all are cancelling, innermost first (Kotlin completes after notifyCancelling)", async () => {
  // A child `c` fails: it, its parent `p` (whose body returned: completing) and the root `g`
  // start cancelling together. `c`'s walk comes first and cancels its lazy child `d`, the last
  // thing `c` waited for, and `c` then waited only for `p`'s and `g`'s cancel. Kotlin completes
  // a job after its notifyCancelling returns, which tells its parent first (cancelParent), so
  // `p`'s signal aborts before `c` completes. Before, walked outermost first, the root's walk (a
  // listener on its signal cancelling `d`) finished `c` and `p` before their own walks, their
  // signals aborting only then; walked innermost first without holding them, `c` completed
  // before `p`'s signal aborted.
  const seen: string[] = [];
  const watch = (name: string, job: Job, signal: AbortSignal) => {
    signal.addEventListener("abort", () => seen.push(`${name} abort (${job.state})`));
    job.invokeOnCompletion(() => seen.push(`${name} done (aborted: ${signal.aborted})`));
  };
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const failure = new Error("boom");
  await assert.rejects(
    coroutineScope((g) => {
      let d: Job | undefined;
      g.signal.addEventListener("abort", () => d!.cancel());
      g.launch((p) => {
        watch("p", p.job, p.signal);
        p.launch(async (c) => {
          watch("c", c.job, c.signal);
          d = c.launch(() => {}, { lazy: true });
          watch("d", d, new AbortController().signal);
          await gate;
          throw failure;
        });
      }); // p's body returned: p is completing, waiting for c
      release();
    }),
    (e) => e === failure,
  );
  assert.deepEqual(seen, [
    "c abort (cancelling)",
    "d done (aborted: false)", // its own signal was never read: d is cancelled in c's walk
    "p abort (cancelling)",
    "c done (aborted: true)",
    "p done (aborted: true)",
  ]);
});

Deno.test("a failure cancels innermost first: the failing job's subtree, then its parent's other children, up to the root (Kotlin's notifyCancelling)", async () => {
  // root ── a ── a1 ── f (fails), a1s, a1z (lazy)
  //      │    └─ a2
  //      └─ b ── b1, bz (lazy)
  // Kotlin's notifyCancelling cancels a job's own children before it tells its parent
  // (cancelParent), so the failing `f`'s subtree goes first, then `a1`'s other children, then
  // `a`'s, then the root's: the path from `f` up, each job's signal, then its other children
  // oldest first, each one's subtree before the next. Jobs on that path complete only once every
  // one of them is cancelling (Kotlin completes a job after its notifyCancelling returns),
  // innermost first. Before, the root's walk ran first and the failing job's last: outermost
  // first, so signals aborted, `finally` blocks ran and subtrees completed in the reverse order.
  const log: string[] = [];
  const watch = (name: string, task: CoroutineScope) => {
    task.signal.addEventListener("abort", () => log.push(`abort ${name}`));
    task.job.invokeOnCompletion(() => log.push(`done ${name}`));
  };
  const lazy = (task: CoroutineScope, name: string) =>
    task.launch(() => {}, { lazy: true }).invokeOnCompletion(() => log.push(`done ${name}`));
  const wait = async (name: string, task: CoroutineScope) => {
    try {
      await untilAborted(task.signal);
    } finally {
      log.push(`finally ${name}`);
    }
  };
  const go = new CompletableDeferred<void>();
  const failure = new Error("boom");
  await assert.rejects(
    coroutineScope((root) => {
      watch("root", root);
      root.launch((a) => {
        watch("a", a);
        a.launch((a1) => {
          watch("a1", a1);
          a1.launch(async (f) => {
            watch("f", f);
            await go.await();
            throw failure;
          });
          a1.launch((a1s) => (watch("a1s", a1s), wait("a1s", a1s)));
          lazy(a1, "a1z");
          return wait("a1", a1);
        });
        a.launch((a2) => (watch("a2", a2), wait("a2", a2)));
        return wait("a", a);
      });
      root.launch((b) => {
        watch("b", b);
        b.launch((b1) => (watch("b1", b1), wait("b1", b1)));
        lazy(b, "bz");
        return wait("b", b);
      });
      go.complete();
      return wait("root", root);
    }),
    (e) => e === failure,
  );
  const walk = [
    "abort f",
    "abort a1",
    "abort a1s",
    "done a1z",
    "abort a",
    "abort a2",
    "abort root",
    "abort b",
    "abort b1",
    "done bz",
  ];
  // f's body had ended (it threw): it completes as soon as every job on its path is cancelling.
  assert.deepEqual(log.slice(0, walk.length + 1), [...walk, "done f"]);
  // Each `finally` runs a microtask after its signal's abort, so in the same order; then each
  // job completes once its body and children have, innermost first.
  assert.deepEqual(log.filter((s) => s.startsWith("finally")), [
    "finally a1",
    "finally a1s",
    "finally a",
    "finally a2",
    "finally root",
    "finally b",
    "finally b1",
  ]);
  assert.deepEqual(log.filter((s) => s.startsWith("done") && !s.endsWith("z")), [
    "done f",
    "done a1s",
    "done a1",
    "done a2",
    "done a",
    "done b1",
    "done b",
    "done root",
  ]);
});

Deno.test("a failure's parents stay active while the failing job's subtree is cancelled, and become cancelling at their own turn (Kotlin's cancelParent)", async () => {
  // root ── p ── f (fails) ── fz (lazy)
  //      └─ s
  // Kotlin's notifyCancelling runs a job's handlers (its children's cancel among them) before it
  // tells its parent (cancelParent), and the parent becomes cancelling only then: code that runs
  // during f's walk (f's abort listener, the completion handler of f's lazy child) sees p and the
  // root still active, their signals not aborted; p's own listener sees the root still active.
  // Before, every job on the path was made cancelling before the first walk, so f's walk read
  // p and the root as cancelling with their signals not aborted yet, and a cancel of p there
  // was a no-op.
  const log: string[] = [];
  const look = (who: string, name: string, job: Job, signal: AbortSignal) =>
    log.push(
      `${who}: ${name} ${job.state} isActive=${job.isActive} isCancelled=${job.isCancelled} ` +
        `aborted=${signal.aborted}`,
    );
  const go = new CompletableDeferred<void>();
  const failure = new Error("boom");
  const cause = new CancellationError("p cancelled during f's walk");
  await assert.rejects(
    coroutineScope((root) => {
      root.launch((p) => {
        p.signal.addEventListener("abort", () => {
          log.push(`p aborted: ${p.signal.reason === cause}`);
          look("p's listener", "root", root.job, root.signal);
        });
        p.launch(async (f) => {
          f.launch(() => {}, { lazy: true }).invokeOnCompletion(() => {
            look("fz's handler", "p", p.job, p.signal);
            look("fz's handler", "root", root.job, root.signal);
            p.cancel(cause); // p is active: this cancels it, before f's failure reaches it
          });
          f.signal.addEventListener("abort", () => look("f's listener", "p", p.job, p.signal));
          await go.await();
          throw failure;
        });
        return untilAborted(p.signal);
      });
      root.launch((s) =>
        untilAborted(s.signal).catch(() => {
          look("s's finally", "root", root.job, root.signal);
        })
      );
      root.signal.addEventListener(
        "abort",
        () => look("root's listener", "root", root.job, root.signal),
      );
      go.complete();
      return untilAborted(root.signal);
    }),
    (e) => e === failure, // f's failure still wins over p's cancellation (Kotlin's root cause)
  );
  assert.deepEqual(log, [
    "f's listener: p active isActive=true isCancelled=false aborted=false",
    "fz's handler: p active isActive=true isCancelled=false aborted=false",
    "fz's handler: root active isActive=true isCancelled=false aborted=false",
    "p aborted: true", // fz's handler cancelled p: p's walk ran then, with that cause
    "p's listener: root active isActive=true isCancelled=false aborted=false",
    "root's listener: root cancelling isActive=false isCancelled=true aborted=true",
    "s's finally: root cancelling isActive=false isCancelled=true aborted=true",
  ]);
});

Deno.test("a job's own signal aborts before its children are cancelled, so what a child's cancel runs sees its parent's signal agree with its state", async () => {
  // kcoro's rule, pinned: a job's signal stands for its state (`ensureActive()` is
  // `signal.throwIfAborted()`), and Kotlin turns a job's state (isActive, what ensureActive
  // reads) before it runs any cancelling handler, its children's among them; so the signal
  // aborts as the state turns, before the first child. Kotlin's own cancelling handlers (a
  // suspended block's, invokeOnCompletion(onCancelling = true)) share a list with its children,
  // in registration order; kcoro has none but the signal's listeners. Children first, a child's
  // listener read its parent as cancelling with its signal not aborted yet. By a cancel, and
  // within each job's turn of a failure's walk.
  const log: string[] = [];
  const look = (who: string, parent: CoroutineScope) =>
    log.push(`${who}: ${parent.job.state} aborted=${parent.signal.aborted}`);
  for (const how of ["cancel", "failure"] as const) {
    const go = new CompletableDeferred<void>();
    await assert.rejects(
      coroutineScope((root) => {
        root.launch((p) => {
          p.signal.addEventListener("abort", () => log.push(`${how}: p's own listener`));
          p.launch((c) => {
            c.signal.addEventListener("abort", () => look(`${how}: c's listener`, p));
            return untilAborted(c.signal);
          });
          p.launch(() => {}, { lazy: true }).invokeOnCompletion(() =>
            look(`${how}: z's handler`, p)
          );
          if (how === "failure") {
            p.launch(async () => {
              await go.await();
              throw new Error("boom");
            });
          }
          return untilAborted(p.signal);
        });
        if (how === "cancel") root.launch(async () => (await go.await(), root.cancel()));
        go.complete();
      }),
      how === "cancel" ? CancellationError : /boom/,
    );
  }
  const turn = (how: string) => [
    `${how}: p's own listener`,
    `${how}: c's listener: cancelling aborted=true`,
    `${how}: z's handler: cancelling aborted=true`,
  ];
  assert.deepEqual(log, [...turn("cancel"), ...turn("failure")]);
});

Deno.test("a lazy job that a completion handler starts during a failure's inner walk runs, then is cancelled (Kotlin: the root is told after)", async () => {
  // root ── p ── f (fails), z (lazy, its handler starts `late`)
  //      └─ late (lazy)
  // f's failure cancels p's subtree first: z, never started, completes there, and its handler
  // starts `late`, which the root's walk has not reached (Kotlin's root is told only after p's
  // children, by cancelParent). So `late`'s block runs and is then cancelled by the root's walk.
  // Before (outermost first), the root's walk cancelled `late` unstarted and the start was a
  // no-op: its block never ran. The structured-concurrency model fuzz found it (seed 420).
  const go = new CompletableDeferred<void>();
  const failure = new Error("boom");
  const log: string[] = [];
  let late: Job | undefined;
  await assert.rejects(
    coroutineScope((root) => {
      late = root.launch(async (t) => {
        log.push(`late runs (${t.job.state})`);
        await untilAborted(t.signal).catch(() => log.push("late aborted"));
      }, { lazy: true });
      root.launch((p) => {
        p.launch(async () => {
          await go.await();
          throw failure;
        });
        p.launch(() => {}, { lazy: true }).invokeOnCompletion(() => late!.start());
      });
      go.complete();
    }),
    (e) => e === failure,
  );
  assert.deepEqual(log, ["late runs (active)", "late aborted"]);
  assert.equal(late!.state, "cancelled");
});

Deno.test("jobs held while a failure's path is walked all complete, whatever the walk's listeners do", async () => {
  // root ── a ── f (fails), lz (lazy, throws at once)
  //      └─ b ── x
  // f's failure holds f until a's and root's walks have run (`#holdFinal`). The listeners on
  // those signals meanwhile: fail b through a child that throws at once, a second failure path
  // with a hold of its own, nested in the first, which reaches the root (still active: f's
  // failure goes on up only after f's subtree, Kotlin's cancelParent) and cancels a; start a
  // lazy job whose block throws at once from a's listener (a third failure, reaching a before
  // f's does); end a's and root's bodies at once (thenables the test settles); cancel jobs of
  // the tree again; launch into the cancelling root; throw. Every job must still complete: a
  // hold never let go leaves one cancelling for good. The root fails with the failure that
  // reached it first, `second`; a with `lazy`, which reached it first, so f's is kept there
  // (Kotlin's root cause rule: the first failure to reach a job wins).
  using reported = catchReported();
  const go = new CompletableDeferred<void>();
  const failure = new Error("boom");
  const second = new Error("second");
  const lazy = new Error("lazy");
  const listener = new Error("listener");
  const jobs: Job[] = [];
  const ends: (() => void)[] = [];
  const ended = () => ({ then: (r: () => void) => ends.push(r) }) as unknown as Promise<void>;
  await assert.rejects(
    coroutineScope((root) => {
      jobs.push(root.job);
      let b: CoroutineScope | undefined;
      root.launch((a) => {
        jobs.push(a.job);
        const lz = a.launch(() => {
          throw lazy;
        }, { lazy: true });
        jobs.push(lz);
        a.signal.addEventListener("abort", () => {
          lz.start();
          throw listener;
        });
        a.launch(async (f) => {
          jobs.push(f.job);
          f.signal.addEventListener("abort", () => {
            jobs.push(b!.launch(() => {
              throw second;
            }));
            for (const end of ends) end();
            root.cancel();
            a.cancel();
            jobs.push(root.launch(() => {}));
          });
          await go.await();
          throw failure;
        });
        return ended();
      });
      root.launch((bb) => {
        b = bb;
        jobs.push(bb.job);
        bb.launch((x) => (jobs.push(x.job), untilAborted(x.signal)));
        return untilAborted(bb.signal);
      });
      go.complete();
      return ended();
    }),
    (e) => e === second,
  );
  assert.equal(jobs.length, 8);
  for (const j of jobs) assert.equal(j.state, "cancelled", String(j));
  const suppressed = (e: Error) => (e as Error & { suppressed: unknown[] }).suppressed;
  assert.deepEqual(suppressed(second), [lazy]);
  assert.deepEqual(suppressed(lazy), [failure]);
  assertSameItems(reported.errors, [listener]);
});

Deno.test("a job already cancelling whose body then fails does not complete before the root is cancelling, even when its last child ends during a parent's walk", async () => {
  // root ── p ── j (cancelled, then its body fails) ── c (its block's thenable, settled below)
  //              └─ s (its abort listener settles c's thenable)
  // j is cancelling already, so its failure does not walk it again; p's walk (the failure's
  // first) runs s's listener, which ends c's body at once and so j's last child. j must still
  // wait for the root to be cancelling (none of the jobs on a failure's path completes before
  // all are cancelling): it completed there, its handler reading the root active, when only the
  // first job walked (p) was held and j, not walked, was not.
  const log: string[] = [];
  const failure = new Error("boom");
  await assert.rejects(
    coroutineScope((root) => {
      root.launch((p) => {
        let endC = () => {};
        const j = p.launch(async (j) => {
          j.launch(() => ({ then: (ok: (v: unknown) => void) => endC = () => ok(undefined) }));
          try {
            await untilAborted(j.signal);
          } catch {
            throw failure; // after j's cancel: j is cancelling, not failed
          }
        });
        j.invokeOnCompletion(() => log.push(`j completed: root ${root.job.state}`));
        p.launch((s) => {
          s.signal.addEventListener("abort", () => {
            log.push(`s aborted: root ${root.job.state}`);
            endC();
          });
          return untilAborted(s.signal);
        });
        j.cancel();
        return untilAborted(p.signal);
      });
      return untilAborted(root.signal);
    }),
    (e) => e === failure,
  );
  assert.deepEqual(log, ["s aborted: root active", "j completed: root cancelling"]);
});

Deno.test("a failure whose walk throws (an engine error) still cancels its parents, and the throw is not swallowed", async () => {
  // root ── p ── f (fails; its signal's abort throws, as a stack overflow there would)
  //      └─ s
  // Listeners' and handlers' throws are reported, never thrown, so only an engine error leaves
  // a walk. The failure must still reach the root: when its walk threw, f's parents stayed
  // active and f's failure, marked as taken by p, was lost (the scope resolved).
  const rejections: unknown[] = [];
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    rejections.push(e.reason);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  const abort = AbortController.prototype.abort;
  const overflow = new RangeError("simulated: Maximum call stack size exceeded");
  let throwFor: AbortSignal | null = null;
  AbortController.prototype.abort = function (this: AbortController, reason?: unknown) {
    if (this.signal === throwFor) {
      throwFor = null;
      throw overflow;
    }
    return abort.call(this, reason);
  };
  const failure = new Error("boom");
  const jobs: Job[] = [];
  try {
    const go = new CompletableDeferred<void>();
    await assert.rejects(
      coroutineScope((root) => {
        jobs.push(root.launch((p) => {
          jobs.push(p.launch(async (f) => {
            throwFor = f.signal;
            await go.await();
            throw failure;
          }));
          return untilAborted(p.signal);
        }));
        jobs.push(root.launch((s) => untilAborted(s.signal)));
        go.complete();
        return untilAborted(root.signal);
      }),
      (e) => e === failure,
    );
    await until(() => rejections.length > 0, "the overflow's unhandled rejection");
  } finally {
    AbortController.prototype.abort = abort;
    globalThis.removeEventListener("unhandledrejection", onRejection);
  }
  for (const j of jobs) assert.equal(j.state, "cancelled", String(j));
  assert.deepEqual(rejections, [overflow]); // from failBody, in the body's promise reaction
});

Deno.test("every public member of a job, deferred or scope called on what is none of it (an object made from its prototype, a Proxy of one, a primitive) fails with a named TypeError, the async ones by a rejected promise, and touches no job", async () => {
  // Before, each threw the engine's "Cannot read private member #state" or "Receiver must be an
  // instance of class Coroutine", join and await synchronously; a scope's follow() listened
  // first, and its listener threw from the signal's dispatch once that aborted.
  const deferred = new CompletableDeferred<number>();
  await using scope = createScope();
  const task = scope.launch((t) => untilAborted(t.signal)); // until the dispose
  type Call = [string, "throws" | "rejects", (self: unknown) => unknown];
  const member = (proto: object, k: PropertyKey, ...args: unknown[]) => {
    for (let p: object | null = proto; p !== null; p = Object.getPrototypeOf(p)) {
      const d = Object.getOwnPropertyDescriptor(p, k);
      if (d !== undefined) {
        return (self: unknown) => d.get ? d.get.call(self) : d.value.call(self, ...args);
      }
    }
    throw new Error(`no ${String(k)}`);
  };
  const jobCalls = (proto: object): Call[] => [
    ["read job state", "throws", member(proto, "state")],
    ["read job state", "throws", member(proto, "isActive")],
    ["read job state", "throws", member(proto, "isCompleted")],
    ["read job state", "throws", member(proto, "isCancelled")],
    ["read job children", "throws", member(proto, "children")],
    ["read job signal", "throws", member(proto, "signal")],
    ["start job", "throws", member(proto, "start")],
    ["cancel job", "throws", member(proto, "cancel", new Error("cause"))],
    ["invoke on completion", "throws", member(proto, "invokeOnCompletion", () => {})],
    ["convert job to string", "throws", member(proto, "toString")],
    ["join", "rejects", member(proto, "join")],
    ["await", "rejects", member(proto, "await")],
  ];
  const deferredProto = CompletableDeferred.prototype;
  const scopeProto = Object.getPrototypeOf(scope); // StandaloneScope's, under Coroutine's
  const tables: [string, string, object, object, Call[]][] = [
    ["Job", "Job", deferredProto, deferred, jobCalls(deferredProto)],
    ["CompletableDeferred", "Job", deferredProto, deferred, [
      ["complete", "throws", member(deferredProto, "complete", 1)],
      ["completeExceptionally", "throws", member(deferredProto, "completeExceptionally", 1)],
    ]],
    ["Job", "Job", Object.getPrototypeOf(task), task, jobCalls(Object.getPrototypeOf(task))],
    ["Job", "Job", scopeProto, scope, jobCalls(scopeProto)],
    ["CoroutineScope", "Job", scopeProto, scope, [
      ["launch", "throws", member(scopeProto, "launch", () => {})],
      ["run async", "throws", member(scopeProto, "async", () => 1)],
      ["dispose scope", "rejects", member(scopeProto, Symbol.asyncDispose)],
    ]],
  ];
  for (const [name, lookAlike, proto, real, calls] of tables) {
    const fakes: [unknown, string][] = [
      [Object.create(proto), `a ${lookAlike} look-alike`],
      [new Proxy(real, {}), `a ${lookAlike} look-alike`],
      [{}, "[object Object]"],
      [undefined, "undefined"],
    ];
    for (const [self, described] of fakes) {
      for (const [op, how, call] of calls) {
        const message = `Cannot ${op}: this is not a ${name}, received ${described}`;
        await assertNotThisError(how, call, self, message, `${name} ${op} on ${described}`);
      }
    }
  }
  // Nothing reached the real ones. (A scope's follow(), addFinalizer(), close() and the follow
  // queue's members were on this list too: they are internal members keyed by symbols now.)
  assert.equal(deferred.state, "active");
  assert.equal(task.state, "active");
  assert.equal(scope.state, "active");
  assert.deepEqual(scope.children, [task]);
  assert.equal(deferred.complete(3), true);
  assert.equal(await deferred.await(), 3);
});

Deno.test("a scope's follow() refuses an op that is no string and a signal that is no AbortSignal by name, listening to nothing; addFinalizer refuses a non-function at once", async () => {
  // follow() with no arguments said "Cannot undefined: signal must be one that can be listened
  // to"; addFinalizer(1) threw only once the scope ended, from inside its finalization. Both are
  // internal, module functions of src/scope.ts that mod.ts does not export (reached here from src).
  await using scope = createScope();
  const follow = (...a: unknown[]) => followSignal(scope, a[0], a[1]);
  assert.throws(() => follow(), {
    name: "TypeError",
    message: "Cannot follow signal: op must be a string, received undefined",
  });
  assert.throws(() => follow("x"), {
    name: "TypeError",
    message: "Cannot follow signal: signal must be an AbortSignal, received undefined",
  });
  assert.throws(() => follow("x", {}), {
    name: "TypeError",
    message: "Cannot follow signal: signal must be an AbortSignal, received [object Object]",
  });
  const addFinalizer = (fn: unknown) => addScopeFinalizer(scope, fn);
  assert.throws(() => addFinalizer(1), {
    name: "TypeError",
    message: "Cannot add scope finalizer: fn must be a function, received 1",
  });
  // The scope is intact: it follows a real signal, and ends when it aborts.
  const controller = new AbortController();
  follow("follow", controller.signal);
  controller.abort(new Error("stop"));
  assert.equal(scope.isCancelled, true);
  await scope.join().catch(() => {});
  assert.equal(scope.isCompleted, true);
});

Deno.test("CompletableDeferred's complete and completeExceptionally refuse a job of another kind as `this` by name, finishing no launched task's job from outside", async () => {
  // Before, their brand check was the shared job one: `complete.call(launchedJob, v)` completed a
  // task's job while its body still ran, and `completeExceptionally` failed it.
  const { complete, completeExceptionally } = CompletableDeferred.prototype;
  await using scope = createScope();
  const task = scope.launch((t) => untilAborted(t.signal)); // until the dispose
  const deferred = scope.async((t) => untilAborted(t.signal));
  const other = new CompletableDeferred<number>();
  // Named by kind, as every other message names a job ("a task's or scope's Job" here before).
  const jobs: [Job, string][] = [
    [task, "a Job"],
    [scope, "a CoroutineScope"],
    [deferred, "a Deferred"],
  ];
  for (const [self, said] of jobs) {
    assert.throws(() => complete.call(self as CompletableDeferred<unknown>, 1), {
      name: "TypeError",
      message: `Cannot complete: this is not a CompletableDeferred, received ${said}`,
    });
    assert.throws(
      () => completeExceptionally.call(self as CompletableDeferred<unknown>, new Error("x")),
      {
        name: "TypeError",
        message:
          `Cannot completeExceptionally: this is not a CompletableDeferred, received ${said}`,
      },
    );
  }
  assert.equal(task.state, "active");
  assert.equal(deferred.state, "active");
  assert.equal(scope.state, "active");
  // A CompletableDeferred's own methods still work on any CompletableDeferred.
  assert.equal(complete.call(other, 7), true);
  assert.equal(await other.await(), 7);
});

Deno.test("a scope's state getters called on a CompletableDeferred name the class they expect and the receiver's kind", async () => {
  // Before: "Cannot read job state: this is not a Job, received [object Job]", where it is a Job.
  await using scope = createScope();
  const deferred = new CompletableDeferred<number>();
  const proto = Object.getPrototypeOf(scope);
  for (const k of ["state", "isActive", "isCancelled"]) {
    let get: (() => unknown) | undefined;
    for (let p = proto; p !== null && get === undefined; p = Object.getPrototypeOf(p)) {
      get = Object.getOwnPropertyDescriptor(p, k)?.get;
    }
    assert.throws(() => get!.call(deferred), {
      name: "TypeError",
      message:
        "Cannot read job state: this is not a CoroutineScope, received a CompletableDeferred",
    }, k);
  }
  assert.equal(deferred.state, "active");
});

Deno.test("a job's hooks for its subclasses (completeBody, failBody, attachTo, onStart, onFinal, completionWaits) are not reachable from JavaScript: `task.completeBody(v)` completed a launched task from outside its block", async () => {
  const hooks = [
    "completeBody",
    "failBody",
    "attachTo",
    "onStart",
    "onFinal",
    "completionWaits",
  ] as const;
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const task = scope.launch(() => gate.promise);
  const deferred = scope.async(async () => {
    await gate.promise;
    return 1;
  });
  const free = createScope();
  const completable = new CompletableDeferred<number>();
  const jobs: [string, Job][] = [
    ["a launched task", task],
    ["a deferred", deferred],
    ["a scope", free],
    ["a CompletableDeferred", completable],
  ];
  for (const [what, job] of jobs) {
    for (const hook of hooks) {
      assert.equal(hook in job, false, `${what}: ${hook}`);
      assert.equal(
        (job as unknown as Record<string, unknown>)[hook],
        undefined,
        `${what}: ${hook}`,
      );
    }
    assert.equal(job.state, "active", `${what}: untouched`);
  }
  // Nor scope.ts's for `CompletableDeferred({ parent })`, the signal a scope's queued follow
  // cancel waits on: a static `Coroutine._queuedBy` read it for any scope, through any scope's
  // or task's `constructor`.
  for (const [what, job] of jobs) {
    assert.equal("_queuedBy" in job.constructor, false, `${what}'s constructor`);
  }
  gate.resolve();
  assert.equal(await deferred.await(), 1);
  await task.join();
  free.cancel();
  completable.complete(2);
  assert.equal(await completable.await(), 2);
});

Deno.test("a job's internal statics (the producer's hooks onOwnCancel and onUnhandledFailure, flagsOf) are not reachable from JavaScript through its constructor: `task.constructor._onUnhandledFailure(task, () => true)` kept a failure from the exception handler", async () => {
  // Public statics of JobSupport (an @ignore hid them from the docs only) were inherited by
  // every job's class, so any caller holding a job could reach them: hook a job's cancel(), keep
  // its failure from being reported, read its flags. Module functions mod.ts does not export
  // now, as the subclass hooks (symbols) and Context's statics (module functions) are.
  const statics = ["_onOwnCancel", "_onUnhandledFailure", "_flagsOf"];
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const task = scope.launch(() => gate.promise);
  const deferred = scope.async(() => gate.promise);
  const jobs: [string, Job][] = [
    ["a launched task", task],
    ["a deferred", deferred],
    ["a scope", scope],
    ["a CompletableDeferred", new CompletableDeferred<void>()],
  ];
  try {
    for (const [what, job] of jobs) {
      // Each class up the chain, JobSupport's included (a static is inherited by `extends`).
      for (
        let c = (job as unknown as { constructor: unknown }).constructor;
        typeof c === "function" && c !== Function.prototype;
        c = Object.getPrototypeOf(c)
      ) {
        for (const name of statics) {
          assert.equal(Object.hasOwn(c, name), false, `${what}: ${c.name}.${name}`);
        }
      }
      const ctor = (job as unknown as { constructor: object }).constructor;
      for (const name of statics) assert.equal(name in ctor, false, `${what}: ${name}`);
    }
  } finally {
    gate.resolve();
  }
  await task.join();
  await deferred.await();
});

Deno.test("a scope's internals (close, queueCancel, runQueuedCancel, follow, addFinalizer) are not reachable from JavaScript: `deferred.close()` completed an async deferred with undefined, its block still running; a finalizer that threw ended the process", async () => {
  const gate = Promise.withResolvers<void>();
  const scope = createScope();
  const deferred = scope.async(async () => {
    await gate.promise;
    return 42;
  });
  const task = scope.launch(() => gate.promise);
  try {
    const jobs: [string, object][] = [
      ["a deferred", deferred],
      ["a launched task", task],
      ["a scope", scope],
    ];
    for (const [what, job] of jobs) {
      for (const member of ["close", "queueCancel", "runQueuedCancel", "follow", "addFinalizer"]) {
        assert.equal(member in job, false, `${what}: ${member}`);
      }
    }
    // What each did, tried through the names they had: nothing happens.
    const { signal } = new AbortController();
    assert.throws(() => (deferred as unknown as { close(): void }).close(), TypeError);
    assert.throws(
      () => (task as unknown as { queueCancel(s: AbortSignal): void }).queueCancel(signal),
      TypeError,
    );
    // A finalizer of the caller's that throws escaped the task's finalization: its join never
    // settled, and the error, uncaught, ended the process.
    assert.throws(
      () =>
        (task as unknown as { addFinalizer(fn: () => void): void }).addFinalizer(() => {
          throw new Error("from a finalizer");
        }),
      TypeError,
    );
    assert.equal(deferred.state, "active");
    assert.equal(task.state, "active");
  } finally {
    gate.resolve(); // also when an assertion failed: the tasks end, the scope can
  }
  assert.equal(await deferred.await(), 42);
  await task.join();
  await scope.join(); // createScope's join still completes it
  assert.equal(scope.state, "completed");
});

Deno.test("an error message naming a kcoro object passed where something else belongs names its class: a Job, a Deferred, a CoroutineScope, a Channel, not its tag", async () => {
  // Before: "received [object Job]" for a task's Job, a Deferred and a scope alike.
  const gate = Promise.withResolvers<void>();
  await using scope = createScope();
  const task = scope.launch(() => gate.promise);
  const deferred = scope.async(() => gate.promise);
  const completable = new CompletableDeferred<void>();
  using ch = new Channel<number>(1);
  let root: unknown = null;
  await coroutineScope((s) => root = s);
  const cases: [unknown, string][] = [
    [task, "a Job"],
    [deferred, "a Deferred"],
    [scope, "a CoroutineScope"],
    [root, "a CoroutineScope"],
    [completable, "a CompletableDeferred"],
    [ch, "a Channel"],
    [Context.empty, "a Context"],
    [createContextKey("user"), "a ContextKey"],
    [codecs.f64, "a Codec"],
    // Not kcoro's: an object of the caller's claiming the tag keeps it.
    [{ [Symbol.toStringTag]: "Job" }, "[object Job]"],
    [Object.create(Channel.prototype), "a Channel look-alike"],
  ];
  for (const [x, said] of cases) {
    await assert.rejects(delay(x as number), {
      name: "TypeError",
      message: `Cannot delay: ms must be a number of milliseconds, received ${said}`,
    }, said);
  }
  gate.resolve();
  await task.join();
  await deferred.await();
});

Deno.test("an engine error out of a failure's report (before the job is final) still makes the job final and takes it from its parent's children; the throw is not swallowed", async () => {
  // The report runs before the job is final (Kotlin's handleJobException), so only an engine
  // error (a stack overflow) in it, which `handleCoroutineException` does not catch where it
  // calls `reportError`, left the job `cancelling` for good: never final, still among its
  // parent's children, its join pending, the parent never finishing.
  const rejections: unknown[] = [];
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    rejections.push(e.reason);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  const reportError = globalThis.reportError;
  const overflow = new RangeError("simulated: Maximum call stack size exceeded");
  const boom = new Error("boom");
  const reported: unknown[] = [];
  globalThis.reportError = (e: unknown) => {
    reported.push(e);
    if (e === boom) throw overflow;
  };
  const scope = createScope({ supervisor: true }); // takes no child's failure: it is reported
  const gate = Promise.withResolvers<void>();
  const job = scope.launch(async () => {
    await gate.promise;
    throw boom;
  });
  try {
    gate.resolve();
    await until(() => rejections.length > 0, "the overflow's unhandled rejection");
  } finally {
    globalThis.reportError = reportError;
    globalThis.removeEventListener("unhandledrejection", onRejection);
  }
  assert.deepEqual(reported, [boom]);
  assert.equal(job.state, "cancelled");
  assert.equal(scope.children.includes(job), false);
  assert.equal(await settled(job.join()), true);
  scope.cancel();
  assert.equal(await settled(scope.join()), true);
  assert.deepEqual(rejections, [overflow]); // from failBody, in the body's promise reaction
});

Deno.test("a CoroutineExceptionHandler sees the failed job cancelling, not final, and still among its parent's children, as Kotlin's handleJobException runs before the job completes", async () => {
  // Before: it saw the job "cancelled" (isCompleted true) and gone from `children`.
  const seen: unknown[] = [];
  const boom = new Error("boom");
  const handler = (e: unknown) =>
    seen.push({
      e,
      state: job.state,
      isActive: job.isActive,
      isCancelled: job.isCancelled,
      isCompleted: job.isCompleted,
      listed: scope.children.includes(job),
    });
  await using scope = createScope({
    supervisor: true,
    context: Context.empty.with(CoroutineExceptionHandler, handler),
  });
  const job = scope.launch(async () => {
    await null;
    throw boom;
  });
  let after: string | undefined;
  job.invokeOnCompletion(() => after = job.state); // completion handlers: final, as before
  await job.join();
  assert.deepEqual(seen, [{
    e: boom,
    state: "cancelling",
    isActive: false,
    isCancelled: true,
    isCompleted: false,
    listed: true,
  }]);
  assert.equal(after, "cancelled");
  assert.equal(job.state, "cancelled");
  assert.equal(scope.children.includes(job), false);
});

// CompletableDeferred({ parent }): Kotlin's CompletableDeferred(parent) is a child of `parent`.
// Before, `parent` was an unknown option, ignored: the deferred stayed active after its parent's
// cancel, its failure failed nothing, and its parent completed without waiting for it.

Deno.test("CompletableDeferred({ parent }): the parent's cancel cancels it, with the parent's CancellationError", async () => {
  const scope = createScope();
  const d = new CompletableDeferred<number>({ parent: scope.job });
  const waiting = d.await();
  const cause = new CancellationError("stop");
  scope.cancel(cause);
  assert.deepEqual(flags(d), ["cancelled", false, true, true]); // nothing to wait for
  await assert.rejects(waiting, (e) => e === cause);
  assert.equal(d.signal.aborted, true);
  assert.equal(d.complete(1), false);
  await scope.join();

  // A task's job and another CompletableDeferred are parents too.
  await coroutineScope(async (outer) => {
    const task = outer.launch((t) => untilAborted(t.signal));
    const onTask = new CompletableDeferred<void>({ parent: task });
    const root = new CompletableDeferred<void>({ parent: outer.job });
    const onDeferred = new CompletableDeferred<void>({ parent: root });
    task.cancel();
    assert.equal(onTask.state, "cancelled");
    assert.equal(onDeferred.state, "active");
    root.cancel();
    assert.equal(root.state, "cancelled");
    assert.equal(onDeferred.state, "cancelled");
    await task.join();
  });
});

Deno.test("CompletableDeferred({ parent }): a failure (completeExceptionally with no cancellation) fails its parent and cancels its siblings", async () => {
  const boom = new Error("boom");
  let sibling: unknown;
  await assert.rejects(
    coroutineScope(async (scope) => {
      scope.launch((t) => untilAborted(t.signal).catch((e) => sibling = e));
      const d = new CompletableDeferred<number>({ parent: scope.job });
      assert.equal(d.completeExceptionally(boom), true);
      assert.equal(scope.job.isCancelled, true);
      await untilAborted(scope.signal);
    }),
    (e) => e === boom,
  );
  assert.ok(sibling instanceof CancellationError);
  assert.equal((sibling as Error).cause, boom);

  // Through a task's job and a parent deferred, up to the root; the parent deferred fails with it.
  const deep = new Error("deep");
  let parentDeferred: CompletableDeferred<void> | undefined;
  await assert.rejects(
    coroutineScope((scope) => {
      scope.launch(async (task) => {
        parentDeferred = new CompletableDeferred<void>({ parent: task.job });
        new CompletableDeferred<void>({ parent: parentDeferred }).completeExceptionally(deep);
        await untilAborted(task.signal);
      });
    }),
    (e) => e === deep,
  );
  assert.equal(parentDeferred!.state, "cancelled");
  await assert.rejects(parentDeferred!.await(), (e) => e === deep);
});

Deno.test("CompletableDeferred({ parent }): a cancellation, its own cancel or completeExceptionally with a CancellationError, leaves its parent active", async () => {
  await coroutineScope((scope) => {
    const a = new CompletableDeferred<void>({ parent: scope.job });
    const b = new CompletableDeferred<void>({ parent: scope.job });
    assertSameItems(scope.job.children, [a, b]);
    a.cancel();
    b.completeExceptionally(new CancellationError("only b"));
    assert.equal(scope.isActive, true);
    assertSameItems(scope.job.children, []);
  });
});

Deno.test("CompletableDeferred({ parent }): under a supervisor its failure cancels nothing and is reported nowhere (await has it)", async () => {
  using reported = catchReported();
  const boom = new Error("boom");
  let d: CompletableDeferred<number> | undefined;
  const result = await supervisorScope(async (scope) => {
    const sibling = scope.async(async () => {
      await delay(1);
      return "sibling";
    });
    d = new CompletableDeferred<number>({ parent: scope.job });
    assertSameItems(scope.job.children, [sibling, d]);
    d.completeExceptionally(boom);
    assert.equal(scope.isActive, true);
    assertSameItems(scope.job.children, [sibling]);
    return await sibling.await();
  });
  assert.equal(result, "sibling");
  await assert.rejects(d!.await(), (e) => e === boom);
  await tick();
  assert.deepEqual(reported.errors, []);
});

Deno.test("CompletableDeferred({ parent }): the parent lists it among its children and does not complete before it", async () => {
  const scope = createScope();
  const d = new CompletableDeferred<number>({ parent: scope });
  assertSameItems(scope.job.children, [d]);
  const joined = scope.join();
  assert.equal(await settled(joined), false);
  assert.equal(scope.job.state, "completing");
  assert.equal(d.complete(7), true);
  await joined;
  assert.equal(scope.job.state, "completed");
  assertSameItems(scope.job.children, []);

  // A coroutineScope whose block has returned waits for it too.
  let late: CompletableDeferred<string> | undefined;
  const outcome = coroutineScope((s) => {
    late = new CompletableDeferred<string>({ parent: s.job });
    return "block";
  });
  assert.equal(await settled(outcome), false);
  late!.complete("done");
  assert.equal(await outcome, "block");

  // A deferred whose child is unfinished is `completing` after its complete(), and its await
  // waits for that child (Kotlin's makeCompleting).
  const parent = new CompletableDeferred<number>();
  const child = new CompletableDeferred<void>({ parent });
  assert.equal(parent.complete(1), true);
  assert.equal(parent.state, "completing");
  assert.equal(parent.complete(2), false);
  const value = parent.await();
  assert.equal(await settled(value), false);
  child.complete();
  assert.equal(await value, 1);
});

Deno.test("CompletableDeferred({ parent }): a lazy parent is started (Kotlin's initParentJob) once it is attached, so a block that returns at once waits for it", async () => {
  await coroutineScope(async (scope) => {
    let ran = false;
    const lazy = scope.launch(() => {
      ran = true;
    }, { lazy: true });
    const d = new CompletableDeferred<void>({ parent: lazy });
    assert.equal(ran, true); // its block ran, on the constructor's stack, after the attach
    assert.equal(lazy.state, "completing");
    assertSameItems(lazy.children, [d]);
    d.complete();
    await lazy.join();
    assert.equal(lazy.state, "completed");

    // JobSupport's own start: a `start` set on the job itself is not run.
    const shadowed = scope.launch(() => {}, { lazy: true });
    Object.defineProperty(shadowed, "start", {
      value: () => {
        throw new Error("not this one");
      },
    });
    new CompletableDeferred<void>({ parent: shadowed }).complete();
    assert.notEqual(shadowed.state, "new");
  });
});

Deno.test("CompletableDeferred({ parent }): a parent already cancelled, failed or completed cancels it at once", async () => {
  const cancelled = createScope();
  const cause = new CancellationError("gone");
  cancelled.cancel(cause);
  const a = new CompletableDeferred<void>({ parent: cancelled });
  assert.deepEqual(flags(a), ["cancelled", false, true, true]);
  await assert.rejects(a.await(), (e) => e === cause);
  assert.equal(a.signal.aborted, true);

  const failed = new CompletableDeferred<void>();
  const boom = new Error("boom");
  failed.completeExceptionally(boom);
  const b = new CompletableDeferred<void>({ parent: failed });
  assert.equal(b.state, "cancelled");
  await assert.rejects(b.await(), (e) => e instanceof CancellationError && e.cause === boom);

  const completed = createScope();
  await completed.join();
  const done = new CompletableDeferred<number>();
  done.complete(1);
  // Its cancellation names the parent as what it is: a deferred is no scope (it said "the scope
  // has already completed" for a completed deferred parent too).
  for (
    const [parent, message] of [
      [completed.job, "Cancelled: the scope has already completed"],
      [done, "Cancelled: its parent has already completed"],
    ] as [Job, string][]
  ) {
    const c = new CompletableDeferred<number>({ parent });
    assert.equal(c.state, "cancelled");
    assert.equal(c.complete(2), false);
    await assert.rejects(c.await(), { name: "CancellationError", message });
    assertSameItems(parent.children, []);
  }
});

Deno.test("CompletableDeferred({ parent }): a parent that is not a kcoro Job is refused by name, making nothing", () => {
  const job = new CompletableDeferred<void>();
  const lookAlike = Object.create(CompletableDeferred.prototype);
  const message = (received: string) =>
    `Cannot create CompletableDeferred: parent must be a Job, received ${received}`;
  for (
    const [parent, received] of [
      [null, "null"],
      [5, "5"],
      [{}, "[object Object]"],
      [{ job }, "[object Object]"], // a scope of the caller's own: pass its job
      [lookAlike, "a Job look-alike"],
      [new Proxy(job, {}), "a Job look-alike"],
    ] as [unknown, string][]
  ) {
    assert.throws(
      () => new CompletableDeferred({ parent: parent as Job }),
      { name: "TypeError", message: message(received) },
    );
  }
  assertSameItems(job.children, []);
  // Read once: a getter answering a job to a check and garbage after it cannot get past.
  let reads = 0;
  const options = {
    get parent() {
      return reads++ === 0 ? job : 5;
    },
  };
  const d = new CompletableDeferred<void>(options as never);
  assert.equal(reads, 1);
  assertSameItems(job.children, [d]);
});

Deno.test("CompletableDeferred({ parent }): its context is its parent's, with a context given added to it; completion handlers' throws go to that context's handler", async () => {
  const seen: unknown[] = [];
  const key = createContextKey<string>("key");
  const other = createContextKey<string>("other");
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => seen.push(e)).with(key, "p");
  await using scope = createScope({ context });
  const d = new CompletableDeferred<void>({ parent: scope });
  assert.equal(d.context.get(key), "p");
  const own = new CompletableDeferred<void>({
    parent: scope,
    context: Context.empty.with(key, "own").with(other, "o"),
  });
  assert.equal(own.context.get(key), "own");
  assert.equal(own.context.get(other), "o");
  assert.equal(typeof own.context.get(CoroutineExceptionHandler), "function");
  const thrown = new Error("handler");
  d.invokeOnCompletion(() => {
    throw thrown;
  });
  d.complete();
  own.complete();
  assert.equal(seen.length, 1);
  assert.ok(seen[0] instanceof CompletionHandlerError);
  assert.equal((seen[0] as Error).cause, thrown);
});

Deno.test("a job's context is read-only: assigning it throws in strict mode and changes nothing, so later launches, async blocks and CompletableDeferreds parented by it still run with it", async () => {
  // Before, `context` was a plain own field (TypeScript's `readonly` only): `scope.context = 5`
  // took, and the next launch threw the engine's TypeError from the context merge.
  const key = createContextKey<string>("who");
  await using scope = createScope({ context: Context.empty.with(key, "scope") });
  const task = scope.launch(() => {});
  const completable = new CompletableDeferred<void>();
  // A launched task's Job is the task itself: its context is there too, untyped.
  for (const job of [scope, task, completable] as unknown as { context: Context }[]) {
    const before = job.context;
    assert.throws(() => {
      (job as unknown as { context: unknown }).context = 5;
    }, TypeError);
    assert.equal(job.context, before);
    assert.equal(Object.hasOwn(job, "context"), false);
  }
  assert.equal(
    await scope.async((t) => t.context.get(key), { context: Context.empty }).await(),
    "scope",
  );
  const seen: (string | undefined)[] = [];
  await scope.launch((t) => {
    seen.push(t.context.get(key));
  }).join();
  const child = new CompletableDeferred<void>({ parent: scope.job });
  assert.equal(child.context.get(key), "scope");
  child.complete();
  assert.deepEqual(seen, ["scope"]);
  // What is no job gets the house TypeError, not the engine's "Cannot read private member".
  const getter = Object.getOwnPropertyDescriptor(
    Object.getPrototypeOf(Object.getPrototypeOf(completable)),
    "context",
  )!.get!;
  assert.throws(() => getter.call({}), {
    name: "TypeError",
    message: /^Cannot read job context: this is not a Job, received /,
  });
});

Deno.test("await() is a Deferred's: on a launch's Job or a scope it rejects with a TypeError naming it (it resolved undefined, and started a lazy launch), while async's, CompletableDeferred's and the scope functions' results still come", async () => {
  await using scope = createScope();
  const task = scope.launch(() => {});
  const lazy = scope.launch(() => {}, { lazy: true });
  let inner: unknown;
  const seven = await coroutineScope((s) => {
    inner = s;
    return 7;
  });
  assert.equal(seven, 7);
  const refused: [unknown, string][] = [[task, "a Job"], [lazy, "a Job"], [
    scope,
    "a CoroutineScope",
  ], [
    inner,
    "a CoroutineScope",
  ]];
  for (const [job, named] of refused) {
    const message = `Cannot await: this is not a Deferred, received ${named}`;
    const wait = (job as { await(o?: { signal?: AbortSignal }): Promise<unknown> }).await;
    await assert.rejects(wait.call(job), { name: "TypeError", message });
    await assert.rejects(wait.call(job, { signal: new AbortController().signal }), {
      name: "TypeError",
      message,
    });
  }
  // The lazy launch was not started by the refused call.
  assert.equal(lazy.state, "new");
  lazy.cancel();
  // A Deferred's await gives its result; the scope functions give their block's.
  assert.equal(await scope.async(() => 8).await(), 8);
  const completable = new CompletableDeferred<number>();
  completable.complete(9);
  assert.equal(await completable.await(), 9);
  assert.equal(await supervisorScope(() => 10), 10);
});

/**
 * The members of `x` (itself and its prototypes up to Object's) that reflection finds and the
 * public API does not name: symbol keys other than well-known and registered ones, and names
 * starting with `_`.
 */
function hiddenMembersOf(x: object): PropertyKey[] {
  const wellKnown = new Set<unknown>(
    Object.getOwnPropertyNames(Symbol).map((k) =>
      (Symbol as unknown as Record<string, unknown>)[k]
    ),
  );
  const out: PropertyKey[] = [];
  for (let p: object | null = x; p !== null && p !== Object.prototype;) {
    for (const k of Reflect.ownKeys(p)) {
      const hidden = typeof k === "symbol"
        ? !wellKnown.has(k) && Symbol.keyFor(k) === undefined
        : k.startsWith("_");
      if (hidden && !out.includes(k)) out.push(k);
    }
    p = Object.getPrototypeOf(p);
  }
  return out;
}

/** Calls (or reads) each of `x`'s `hiddenMembersOf` with forged arguments; what it throws is ignored. */
function forgeHiddenMembers(x: object): PropertyKey[] {
  const members = hiddenMembersOf(x);
  const aborted = AbortSignal.abort(new Error("forged"));
  const forgeries: unknown[][] = [
    [],
    ["forged"],
    [new Error("forged")],
    [new CancellationError("forged")],
    ["forged", aborted],
    [aborted],
    [() => {}],
    [x],
    [undefined, "forged"],
  ];
  for (const k of members) {
    for (const args of forgeries) {
      try {
        const v = (x as Record<PropertyKey, unknown>)[k];
        if (typeof v === "function") v.apply(x, args);
      } catch {
        // refused: what counts is that nothing changed
      }
    }
  }
  return members;
}

Deno.test("a job's, a deferred's and a scope's internals are out of reach of reflection: members keyed by unexported symbols (found by Object.getOwnPropertySymbols) or named with `_`, called with forged arguments, change no state", async () => {
  // Before, job.ts's and scope.ts's hooks were methods keyed by symbols mod.ts did not export:
  // `job[Object.getOwnPropertySymbols(...)[k]]("forged")` (COMPLETE_BODY) on a running launch
  // reported it completed, with its block still running; QUEUE_CANCEL left a scope cancelling.
  await using scope = createScope();
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const job = scope.launch(() => gate);
  const deferred = scope.async(async () => {
    await gate;
    return 7;
  });
  const completable = new CompletableDeferred<number>();
  const inner = createScope();
  const subjects: [string, Job][] = [
    ["launch", job],
    ["async", deferred],
    ["CompletableDeferred", completable],
    ["createScope", inner],
  ];
  const hidden = subjects.flatMap(([name, j]) =>
    hiddenMembersOf(j).filter((k) => typeof k === "symbol").map((k) => `${name}: ${String(k)}`)
  );
  try {
    const changed: string[] = [];
    for (const [name, j] of subjects) {
      forgeHiddenMembers(j);
      if (j.state !== "active" || j.isCancelled) changed.push(`${name}: ${j.state}`);
    }
    assert.deepEqual({ changed, hidden }, { changed: [], hidden: [] });
  } finally {
    // Each still ends as its own code says, and no other way (and, on a failure, the gate opens
    // so the scopes' disposal does not wait for ever).
    release();
  }
  await job.join();
  assert.equal(job.state, "completed");
  assert.equal(await deferred.await(), 7);
  assert.equal(completable.complete(3), true);
  assert.equal(await completable.await(), 3);
  await inner[Symbol.asyncDispose]();
  assert.equal(inner.state, "cancelled");
});

Deno.test("a job's hooks are fixed as it is made: src/job.ts exports no function that sets them on a live job", async () => {
  // They were set after `super()` by an exported `setJobHooks(job, hooks)`: any module importing
  // src/job.ts could give a running launch a CompletableDeferred's hooks (its block's start and
  // its scope's finalizers never run) or the reverse. Now JobSupport's constructor takes them.
  const jobModule: Record<string, unknown> = await import("../src/job.ts");
  assert.deepEqual(Object.keys(jobModule).filter((k) => /hooks/i.test(k)), []);
  // And a launch still runs its own block, through the hooks its constructor gave.
  await using scope = createScope();
  let ran = false;
  await scope.launch(() => {
    ran = true;
  }).join();
  assert.equal(ran, true);
});

Deno.test("a failure that is a Proxy (a revoked one, one whose getPrototypeOf throws, or an object made from one) is reported in a TypeError carrying it: Deno's reportError threw on it, losing it, failing a supervisorScope, and making every later report of the process fatal", async () => {
  // A child process: without the fix Deno's reportError is left broken for the whole process.
  const res = await evalScript(`
    import { Context, CoroutineExceptionHandler, createScope, supervisorScope } from "./mod.ts";
    const reported = [];
    addEventListener("error", (e) => { reported.push(e.error); e.preventDefault(); });
    const revoked = () => { const r = Proxy.revocable({}, {}); r.revoke(); return r.proxy; };
    const trapping = new Proxy({}, { getPrototypeOf() { throw new Error("trap"); } });
    const failures = [revoked(), trapping, Object.create(revoked())];
    const out = [];
    for (const f of failures) {
      out.push(await supervisorScope((s) => { s.launch(() => { throw f; }); }).then(
        () => "resolved",
        (e) => "rejected: " + String(e?.message),
      ));
    }
    const free = createScope({ supervisor: true });
    free.launch(() => { throw failures[0]; });
    await free.join();
    // A handler that throws one: the AggregateError carries both, and is reported.
    const context = Context.empty.with(CoroutineExceptionHandler, () => { throw revoked(); });
    await supervisorScope((s) => { s.launch(() => { throw failures[0]; }); }, { context });
    reportError(new Error("a later report"));
    console.log(JSON.stringify({
      out,
      causes: reported.slice(0, 4).map((e, i) => e instanceof TypeError && e.cause === failures[i % 3]),
      messages: reported.slice(0, 4).map((e) => e.message),
      aggregate: reported[4] instanceof AggregateError && reported[4].errors[0] === failures[0],
      last: reported[5]?.message,
      count: reported.length,
    }));
  `);
  assert.equal(res.code, 0, res.stderr);
  const got = JSON.parse(res.stdout);
  assert.deepEqual(got.out, ["resolved", "resolved", "resolved"]);
  assert.deepEqual(got.causes, [true, true, true, true]);
  assert.deepEqual(got.messages, [
    "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy",
    "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy",
    "Cannot report error as it is: reporting it would run a Proxy's traps, received an object with a Proxy among its prototypes",
    "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy",
  ]);
  assert.equal(got.aggregate, true);
  assert.equal(got.last, "a later report");
  assert.equal(got.count, 6);
});

Deno.test("completion handlers that end other jobs run nested, in Kotlin's order, on small chains and trees: the ended job's handlers before the rest of the handler that ended it", () => {
  const order: string[] = [];
  const d = Array.from({ length: 4 }, () => new CompletableDeferred<void>());
  const child = new CompletableDeferred<void>({ parent: d[3] });
  child.invokeOnCompletion(() => order.push("child"));
  for (let i = 0; i < 4; i++) {
    d[i].invokeOnCompletion(() => {
      order.push(`d${i} first`);
      if (i + 1 < 4) d[i + 1].cancel();
      order.push(`d${i} after`);
    });
    d[i].invokeOnCompletion(() => order.push(`d${i} second`));
  }
  d[0].cancel();
  assert.deepEqual(order, [
    "d0 first",
    "d1 first",
    "d2 first",
    "child", // d3's cancel cancels its child first, whose handler runs before d3's
    "d3 first",
    "d3 after",
    "d3 second",
    "d2 after",
    "d2 second",
    "d1 after",
    "d1 second",
    "d0 after",
    "d0 second",
  ]);
  assert.equal(child.state, "cancelled");
});

Deno.test("a 100,000-job chain of completion handlers, each cancelling or completing the next job, ends every job in order without overflowing the stack (it overflowed at ~1,000, a CompletionHandlerError carrying a RangeError)", () => {
  using reported = catchReported();
  const N = 100_000;
  for (const end of ["cancel", "complete"] as const) {
    const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
    const ended: number[] = [];
    for (let i = 0; i < N; i++) {
      d[i].invokeOnCompletion(() => {
        ended.push(i);
        if (i + 1 < N) d[i + 1][end]();
      });
    }
    d[0][end]();
    assert.equal(d[N - 1].state, end === "cancel" ? "cancelled" : "completed");
    assert.equal(ended.length, N);
    assert.ok(ended.every((v, i) => v === i), "each job's handler ran once, in chain order");
  }
  assert.deepEqual(reported.errors, []);
});

Deno.test("a 100,000-deep parent/child tree whose completion handlers cancel the next job down cancels, and one completed from the leaf completes, every job without overflowing the stack; each parent finishes after its child's handlers", async () => {
  using reported = catchReported();
  const N = 100_000;
  const tree = () => {
    const d = [new CompletableDeferred<void>()];
    for (let i = 1; i < N; i++) d.push(new CompletableDeferred<void>({ parent: d[i - 1] }));
    return d;
  };
  // Cancelled from the root, through handlers too: each job's handler cancels a sibling chain.
  const d = tree();
  const side = Array.from({ length: N }, () => new CompletableDeferred<void>());
  let sideEnded = 0;
  for (let i = 0; i < N; i++) {
    side[i].invokeOnCompletion(() => sideEnded++);
    d[i].invokeOnCompletion(() => side[i].cancel());
  }
  for (let i = 0; i + 1 < N; i++) side[i].invokeOnCompletion(() => side[i + 1].cancel());
  d[0].cancel();
  assert.equal(d[N - 1].state, "cancelled");
  assert.equal(d[0].state, "cancelled");
  assert.equal(sideEnded, N);
  // Completed: every body done, then the leaf; each parent finishes after its child's handlers.
  const c = tree();
  const finishedBefore: boolean[] = [];
  for (let i = 1; i < N; i++) {
    c[i].invokeOnCompletion(() => finishedBefore.push(c[i - 1].isCompleted));
  }
  for (let i = 0; i + 1 < N; i++) c[i].complete();
  assert.equal(c[0].state, "completing");
  c[N - 1].complete();
  assert.equal(c[0].state, "completed");
  assert.equal(finishedBefore.length, N - 1);
  assert.ok(finishedBefore.every((b) => !b), "no parent finished before its child's handlers");
  await c[0].join();
  assert.deepEqual(reported.errors, []);
});

Deno.test("a job ended past 32 nested handlers (its handlers deferred) runs them before a handler added once it reads final, which still runs at once, and before a join or await made then: Kotlin's had all run by the time it read final", async () => {
  // Each job's first handler completes the next job, then (by the job's index, each the first
  // look at it) adds a handler to it, joins it or awaits it; every job was joined before the
  // chain began. Before, past 32 levels the added handler ran at once while the job's own
  // handlers waited, so it ran before them, and the later join or await resumed before the
  // earlier join.
  using reported = catchReported();
  const N = 40;
  const d = Array.from({ length: N }, () => new CompletableDeferred<number>());
  const order: string[] = [];
  const resumed: string[] = [];
  const waits: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    waits.push(d[i].join().then(() => resumed.push(`early ${i}`)));
    d[i].invokeOnCompletion(() => {
      order.push(`own ${i}`);
      if (i + 1 === N) return;
      const next = d[i + 1], n = i + 1;
      next.complete(n);
      assert.equal(next.isCompleted, true);
      if (n % 3 === 0) {
        let ran = false;
        next.invokeOnCompletion(() => {
          ran = true;
          order.push(`added ${n}`);
        });
        assert.equal(ran, true, `the handler added to job ${n} ran at once`);
      } else if (n % 3 === 1) waits.push(next.join().then(() => resumed.push(`late ${n}`)));
      else waits.push(next.await().then(() => resumed.push(`late ${n}`)));
    });
    d[i].invokeOnCompletion(() => order.push(`own second ${i}`));
  }
  d[0].complete(0);
  await Promise.all(waits);
  for (let n = 1; n < N; n++) {
    if (n % 3 === 0) {
      const own = order.indexOf(`own ${n}`), second = order.indexOf(`own second ${n}`);
      const added = order.indexOf(`added ${n}`);
      assert.ok(own >= 0 && own < second && second < added, `job ${n}: ${order.join(", ")}`);
    } else {
      const early = resumed.indexOf(`early ${n}`), late = resumed.indexOf(`late ${n}`);
      assert.ok(early >= 0 && early < late, `job ${n}: ${resumed.join(", ")}`);
    }
  }
  assert.deepEqual(reported.errors, []);
});

Deno.test("a 100,000-job chain whose handlers each end the next job and add a handler to it ends every job, each one's own handlers before the added one, without overflowing the stack", () => {
  // The added handler runs the job's deferred handlers first, on the stack (as Kotlin's had
  // run), only so deep (64 levels); deeper it waits behind them. Unbounded, this chain of
  // handlers would nest a level per job, and overflow.
  using reported = catchReported();
  const N = 100_000;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  const own = new Int32Array(N).fill(-1), added = new Int32Array(N).fill(-1);
  let step = 0;
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      own[i] = step++;
      if (i + 1 === N) return;
      d[i + 1].cancel();
      d[i + 1].invokeOnCompletion(() => added[i + 1] = step++);
    });
  }
  d[0].cancel();
  assert.equal(d[N - 1].state, "cancelled");
  for (let i = 1; i < N; i++) {
    assert.ok(own[i] >= 0 && own[i] < added[i], `job ${i}: own ${own[i]}, added ${added[i]}`);
  }
  assert.deepEqual(reported.errors, []);
});

Deno.test("a reportError that throws as a job's handlers end, 32 handlers deep, leaves none of the deeper jobs' handlers waiting: they run before the throw reaches the caller", () => {
  // Job 31's second handler throws; its report (reportError, replaced by one that throws)
  // throws out of its handlers, as it does at any depth. Before, the handlers deferred meanwhile
  // (job 32's, which end the rest of the chain) were left waiting for some unrelated job's end:
  // jobs 33 on stayed active, job 32 read cancelled with its handlers unrun.
  const N = 40;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  let ran = 0;
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      ran++;
      if (i + 1 < N) d[i + 1].cancel();
    });
    if (i === 31) {
      d[i].invokeOnCompletion(() => {
        throw new Error("job 31's handler");
      });
    }
  }
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  globalThis.reportError = () => {
    throw broken;
  };
  try {
    assert.throws(() => d[0].cancel(), (e) => e === broken);
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(ran, N, "every job's handler ran");
  assert.deepEqual(d.filter((j) => j.state !== "cancelled").length, 0);
});

Deno.test("a failure handed to the exception handler finds it by Context's own get, not a `get` a caller redefined on Context's prototype", () => {
  // Before, handleCoroutineException called `context.get(CoroutineExceptionHandler)`, the
  // prototype's member at that call: a redefinition steered every failure kcoro handed on (here
  // its throw came out of `complete`, the handler never called).
  const desc = Object.getOwnPropertyDescriptor(Context.prototype, "get")!;
  const handled: unknown[] = [];
  const calls: string[] = [];
  const failure = new Error("the deferred's completion handler failed");
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => handled.push(e));
  using reported = catchReported();
  try {
    Object.defineProperty(Context.prototype, "get", {
      ...desc,
      value: () => {
        calls.push("get");
        throw new Error("redefined get ran");
      },
    });
    const d = new CompletableDeferred<number>({ context });
    d.invokeOnCompletion(() => {
      throw failure;
    });
    d.complete(1);
  } finally {
    Object.defineProperty(Context.prototype, "get", desc);
  }
  assert.deepEqual(calls, []);
  assert.equal(handled.length, 1);
  assert.ok(handled[0] instanceof CompletionHandlerError && handled[0].cause === failure);
  assert.deepEqual(reported.errors, []);
});

Deno.test("a reportError that throws out of a deferred job's handlers run ahead of the drain (a handler added, a join, an await) reaches the chain's caller, as the drain's would: the added handler still runs at once, the join and await still settle", async () => {
  // Job 32 ends 32 handlers deep (its handlers deferred); one of them throws, and reportError,
  // replaced, throws on its report. Job 31's second handler then adds a handler to job 32, joins
  // it or awaits it: that runs job 32's handlers first (`#handlersRan`). Before, their report's
  // throw came out of that call: the added handler was never run nor added (job 32 final, so
  // never), and join and await threw instead of returning a promise.
  for (const call of ["invokeOnCompletion", "join", "await"] as const) {
    const N = 40;
    const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
    let ran = 0, added = 0;
    let outcome: unknown = "none";
    let waited: Promise<unknown> | undefined;
    for (let i = 0; i < N; i++) {
      d[i].invokeOnCompletion(() => {
        ran++;
        if (i + 1 < N) d[i + 1].cancel();
      });
      if (i === 32) {
        d[i].invokeOnCompletion(() => {
          throw new Error("job 32's handler");
        });
      }
      if (i === 31) {
        d[i].invokeOnCompletion(() => {
          try {
            if (call === "invokeOnCompletion") {
              d[32].invokeOnCompletion(() => added++);
              outcome = added === 1 ? "ran at once" : "not run";
            } else {
              waited = call === "join" ? d[32].join() : d[32].await();
              outcome = "returned";
            }
          } catch (e) {
            outcome = e;
          }
        });
      }
    }
    const report = globalThis.reportError;
    const broken = new Error("reportError throws");
    globalThis.reportError = () => {
      throw broken;
    };
    try {
      assert.throws(() => d[0].cancel(), (e) => e === broken, call);
    } finally {
      globalThis.reportError = report;
    }
    assert.equal(outcome, call === "invokeOnCompletion" ? "ran at once" : "returned", call);
    assert.equal(ran, N, `${call}: every job's handler ran`);
    assert.equal(d.filter((j) => j.state !== "cancelled").length, 0, call);
    if (call === "join") await waited;
    if (call === "await") await assert.rejects(waited!, CancellationError);
  }
});

Deno.test("a deferred job whose handlers a join ran ahead of the drain lets its parent finish once: the drain does not run them again (its parent's hold was released twice, and the parent never finished)", async () => {
  // Job 32 of the chain is a child of `parent` (whose body is done), as is `other`; job 31's
  // handler ends job 32 (deferred, 32 handlers deep), then joins it, which runs its handlers
  // and ends its hold on the parent. A drain that ran them again ended that hold twice: the
  // parent, then waiting for `other` alone, never finished once `other` completed.
  using reported = catchReported();
  const N = 40;
  const parent = new CompletableDeferred<void>();
  const other = new CompletableDeferred<void>({ parent });
  const d = Array.from(
    { length: N },
    (_, i) => new CompletableDeferred<void>(i === 32 ? { parent } : undefined),
  );
  parent.complete();
  let ownRuns = 0;
  d[32].invokeOnCompletion(() => ownRuns++);
  const joins: Promise<void>[] = [];
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 1 < N) d[i + 1].complete();
      if (i === 31) joins.push(d[32].join());
    });
  }
  d[0].complete();
  assert.equal(d[N - 1].state, "completed");
  assert.equal(ownRuns, 1);
  assert.equal(parent.state, "completing", "the parent waits for other");
  other.complete();
  assert.equal(parent.state, "completed");
  await Promise.all(joins);
  await parent.join();
  assert.deepEqual(reported.errors, []);
});

Deno.test("a deferred job's handlers and its parent's report, both thrown out of by a reportError that throws, throw on the handlers' error, the first, as before the drain's runs were shared", async () => {
  // `c`, a child of launch `p` (its body done, so waiting for it), fails 32 handlers deep: its
  // handlers and `p`'s finish are deferred. Its handler throws; reportError, replaced, throws on
  // that report (report 1), then on `p`'s failure's (report 2). The drain ran both in one
  // `finally`, so report 2 was thrown on, not the first; job 31's handler, through which it
  // passes, is reported with it as the cause.
  await using scope = createScope({ supervisor: true });
  let c!: CompletableDeferred<void>;
  const p = scope.launch((task) => {
    c = new CompletableDeferred<void>({ parent: task.job });
  });
  await until(() => p.state === "completing", "p to wait for its child");
  const N = 32;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 1 < N) d[i + 1].complete();
      else c.completeExceptionally(new Error("boom"));
    });
  }
  c.invokeOnCompletion(() => {
    throw new Error("c's handler");
  });
  const seen: unknown[] = [];
  const thrownBy: Error[] = [];
  const report = globalThis.reportError;
  globalThis.reportError = (e) => {
    seen.push(e);
    const error = new Error(`report ${seen.length}`);
    thrownBy.push(error);
    throw error;
  };
  try {
    assert.throws(() => d[0].complete());
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(p.state, "cancelled");
  assert.ok(seen[0] instanceof CompletionHandlerError);
  assert.equal((seen[0].cause as Error).message, "c's handler");
  assert.equal((seen[1] as Error).message, "boom", "p's failure, reported second");
  assert.ok(seen[2] instanceof CompletionHandlerError, "job 31's handler, through which it threw");
  assert.equal(seen[2].cause, thrownBy[0], "the first report's throw");
});

Deno.test("a failure handed to the exception handler reads the job's own context, not a `context` getter a caller redefined on the job's prototype", () => {
  // Before, #notify (and cancel's hook, a late failure, an unhandled one) read `this.context`,
  // the prototype's getter at that call: a redefined one steered the failure elsewhere, or threw
  // out of `complete` after the handlers had run.
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const desc = Object.getOwnPropertyDescriptor(proto, "context")!;
  const handled: unknown[] = [];
  const calls: string[] = [];
  const failure = new Error("the deferred's completion handler failed");
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => handled.push(e));
  using reported = catchReported();
  try {
    Object.defineProperty(proto, "context", {
      ...desc,
      get: () => {
        calls.push("context");
        throw new Error("redefined context getter ran");
      },
    });
    const d = new CompletableDeferred<number>({ context });
    d.invokeOnCompletion(() => {
      throw failure;
    });
    d.complete(1);
  } finally {
    Object.defineProperty(proto, "context", desc);
  }
  assert.deepEqual(calls, []);
  assert.equal(handled.length, 1);
  assert.ok(handled[0] instanceof CompletionHandlerError && handled[0].cause === failure);
  assert.deepEqual(reported.errors, []);
});

Deno.test("a CompletableDeferred's parent, a lazy job's join and await, and a join given a signal, a complete() and a completeExceptionally() run JobSupport's own start, cancel, invokeOnCompletion, context and state, not ones a caller redefined on the job's prototype", async () => {
  // Before, the constructor read `parent.context`, ran `this.start()` and
  // `JobSupport.prototype.start` as it was at that call, join and await ran `this.start()` and a
  // join given a signal `this.invokeOnCompletion(...)`: a redefinition threw out of each.
  const log: string[] = [];
  // All but join and await, which the test calls itself.
  const names = JOB_MEMBERS.filter((n) => n !== "join" && n !== "await");
  const { calls } = await withJobMembersRedefined(
    names,
    async () => {
      await coroutineScope(async (scope) => {
        const lazy = scope.launch(() => void log.push("lazy parent started"), { lazy: true });
        const child = new CompletableDeferred<number>({ parent: lazy });
        assert.equal(child.complete(1), true);
        await lazy.join();
        const joined = scope.launch(() => void log.push("lazy joined"), { lazy: true });
        await joined.join();
        const awaited = scope.async(() => 2, { lazy: true });
        assert.equal(await awaited.await(), 2);
        const d = new CompletableDeferred<number>();
        const waiting = d.join({ signal: new AbortController().signal });
        d.complete(3);
        await waiting;
        log.push("joined with a signal");
        // completeExceptionally reads the deferred's own state too (not `isCancelled`).
        const failed = new CompletableDeferred<number>();
        const boom = new Error("boom");
        assert.equal(failed.completeExceptionally(boom), true);
        await assert.rejects(failed.await(), (e) => e === boom);
      });
    },
  );
  assert.deepEqual(calls, []);
  assert.deepEqual(log, ["lazy parent started", "lazy joined", "joined with a signal"]);
});

Deno.test("a reportError that throws out of a child's handlers still lets its parent, already waiting for it, finish: the throw reaches the child's caller, the parent completes", () => {
  // `child`'s handler throws; its report (reportError, replaced) throws out of `#leave`. That
  // throw cut `#tryFinalize`'s walk up short: `parent` (its body done, waiting for `child`)
  // stayed `completing` for good, its join never resolving.
  const parent = new CompletableDeferred<void>();
  const child = new CompletableDeferred<void>({ parent });
  const grand = new CompletableDeferred<void>();
  const top = new CompletableDeferred<void>({ parent: grand });
  grand.complete();
  parent.complete();
  assert.equal(parent.state, "completing");
  let parentHandler = 0;
  parent.invokeOnCompletion(() => {
    parentHandler++;
    top.complete(); // its parent, `grand`, finishes in turn
  });
  child.invokeOnCompletion(() => {
    throw new Error("child's handler");
  });
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  globalThis.reportError = () => {
    throw broken;
  };
  try {
    assert.throws(() => child.complete(), (e) => e === broken);
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(child.state, "completed");
  assert.equal(parent.state, "completed", "the parent finished");
  assert.equal(parentHandler, 1);
  assert.equal(grand.state, "completed");
});

Deno.test("a job whose failure's report and whose handlers' report both throw (a reportError that throws) throws on the first, the report's, the handlers' kept in its `suppressed`", async () => {
  // `p`, a launch under a supervisor waiting for its child `c`, fails with `c`; its report throws
  // (report 1), then its handlers' report throws (report 2) out of `#leave`. `#finalize`'s
  // `catch (e) { this.#leave(state); throw e; }` let report 2 replace report 1.
  await using scope = createScope({ supervisor: true });
  let c!: CompletableDeferred<void>;
  const p = scope.launch((task) => {
    c = new CompletableDeferred<void>({ parent: task.job });
  });
  await until(() => p.state === "completing", "p to wait for its child");
  p.invokeOnCompletion(() => {
    throw new Error("p's handler");
  });
  const seen: unknown[] = [];
  const thrownBy: Error[] = [];
  const report = globalThis.reportError;
  globalThis.reportError = (e) => {
    seen.push(e);
    const error = new Error(`report ${seen.length}`);
    thrownBy.push(error);
    throw error;
  };
  let thrown: unknown;
  try {
    c.completeExceptionally(new Error("boom"));
  } catch (e) {
    thrown = e;
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(p.state, "cancelled");
  assert.equal((seen[0] as Error).message, "boom", "p's failure, reported first");
  assert.ok(seen[1] instanceof CompletionHandlerError, "p's handler's, second");
  assert.equal(thrown, thrownBy[0], "the first report's throw");
  assert.deepEqual((thrown as { suppressed?: unknown[] }).suppressed, [thrownBy[1]]);
  assert.deepEqual(scope.job.children, [], "p left its scope");
});

Deno.test("a deferred job's handlers pulled ahead of the drain run after those of the jobs deferred before it (oldest first, as Kotlin's run in completion order)", () => {
  // Job 31's handler (32 deep) ends job 32, then `x`: both deferred, 32 first. It then adds a
  // handler to `x`, which runs x's waiting handlers first (`#handlersRan`). Before, only x's
  // ran: x's handlers ahead of job 32's, which ended first.
  for (const call of ["invokeOnCompletion", "join", "await"] as const) {
    const N = 33;
    const log: string[] = [];
    const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
    const x = new CompletableDeferred<void>();
    x.invokeOnCompletion(() => log.push("x"));
    for (let i = 0; i < N; i++) {
      d[i].invokeOnCompletion(() => {
        if (i >= 31) log.push(String(i));
        if (i + 1 < N) d[i + 1].complete();
        if (i === 31) {
          x.complete();
          if (call === "invokeOnCompletion") x.invokeOnCompletion(() => log.push("added"));
          else if (call === "join") x.join();
          else x.await();
          log.push("asked");
        }
      });
    }
    d[0].complete();
    const added = call === "invokeOnCompletion" ? ["added"] : [];
    assert.deepEqual(log, ["31", "32", "x", ...added, "asked"], call);
  }
});

Deno.test("two deferred jobs' handlers whose report throws (a reportError that throws) throw the first to the call that ended the chain, the second kept in its `suppressed`", () => {
  // Job 31's handler (32 deep) ends x and y: both deferred, their handlers run by the drain
  // (from job 31's end, job 30's handler's call), each throwing, each report throwing. Before,
  // the drain kept the first and dropped the second.
  const N = 32;
  let caught: unknown;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  const x = new CompletableDeferred<void>();
  const y = new CompletableDeferred<void>();
  for (const j of [x, y]) {
    j.invokeOnCompletion(() => {
      throw new Error(`${j}'s handler`);
    });
  }
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 2 < N) d[i + 1].complete();
      else if (i + 1 < N) {
        try {
          d[i + 1].complete();
        } catch (e) {
          caught = e;
        }
      } else {
        x.complete();
        y.complete();
      }
    });
  }
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  const later = new Error("reportError throws again");
  let calls = 0;
  globalThis.reportError = () => {
    throw calls++ === 0 ? broken : later;
  };
  try {
    d[0].complete();
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(caught, broken, "thrown to job 31's end");
  assert.equal(calls, 2, "both handlers' reports ran");
  assert.deepEqual((broken as Error & { suppressed?: unknown[] }).suppressed, [later]);
  assert.ok([x, y].every((j) => j.state === "completed"));
});

Deno.test("a deferred job's handler and its parent's, each report throwing (a reportError that throws), throw the first to the call that ended the chain, the second kept in its `suppressed`", () => {
  // Job 31's handler (32 deep) ends x, whose parent q waits for it: x deferred, the drain runs
  // x's handler (throws, its report throws), then q's finish (its handler throws, its report
  // throws). Before, #runLeave kept x's throw and dropped q's.
  const N = 32;
  let caught: unknown;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  const q = new CompletableDeferred<void>();
  const x = new CompletableDeferred<void>({ parent: q });
  q.complete(); // completing: waits for x
  for (const j of [x, q]) {
    j.invokeOnCompletion(() => {
      throw new Error(`${j}'s handler`);
    });
  }
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 2 < N) d[i + 1].complete();
      else if (i + 1 < N) {
        try {
          d[i + 1].complete();
        } catch (e) {
          caught = e;
        }
      } else x.complete();
    });
  }
  const report = globalThis.reportError;
  const thrown: Error[] = [];
  globalThis.reportError = () => {
    const e = new Error(`reportError throws (${thrown.length})`);
    thrown.push(e);
    throw e;
  };
  try {
    d[0].complete();
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(thrown.length, 2, "both handlers' reports ran");
  assert.equal(caught, thrown[0], "thrown to job 31's end");
  assert.deepEqual((thrown[0] as Error & { suppressed?: unknown[] }).suppressed, [thrown[1]]);
  assert.ok([x, q].every((j) => j.state === "completed"));
});

Deno.test("the throws a job's end gathers (its handlers', the drain's, those of handlers pulled ahead), each a report that throws, throw the first, the rest kept in its `suppressed`", () => {
  // Job 31's handler (32 deep) ends x and y (both deferred), then, by case: throws (its report
  // throws first, the drain's x after it: #leave); adds a handler to x, pulling x's ahead, and
  // throws (the pull's throw first, then #leave's own: before, #leave's was thrown, the earlier
  // pull's kept after it); adds one to y, pulling x's and y's (#handlersRan, two throws). Before,
  // each of these dropped the second.
  for (const kind of ["drain", "pulled", "pulled twice"] as const) {
    const N = 32;
    let caught: unknown;
    const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
    const x = new CompletableDeferred<void>();
    const y = new CompletableDeferred<void>();
    x.invokeOnCompletion(() => {
      throw new Error("x's handler");
    });
    if (kind === "pulled twice") {
      y.invokeOnCompletion(() => {
        throw new Error("y's handler");
      });
    }
    for (let i = 0; i < N; i++) {
      d[i].invokeOnCompletion(() => {
        if (i + 2 < N) d[i + 1].complete();
        else if (i + 1 < N) {
          try {
            d[i + 1].complete();
          } catch (e) {
            caught = e;
          }
        } else {
          x.complete();
          y.complete();
          if (kind === "pulled") x.invokeOnCompletion(() => {});
          if (kind === "pulled twice") y.invokeOnCompletion(() => {});
          if (kind !== "pulled twice") throw new Error("job 31's handler");
        }
      });
    }
    const report = globalThis.reportError;
    const thrown: Error[] = [];
    globalThis.reportError = () => {
      const e = new Error(`reportError throws (${thrown.length})`);
      thrown.push(e);
      throw e;
    };
    try {
      d[0].complete();
    } finally {
      globalThis.reportError = report;
    }
    assert.equal(thrown.length, 2, `${kind}: both reports ran`);
    // In the order they were thrown: the first thrown on, the second kept in its `suppressed`.
    // (Before, a pull's throw was set aside until the end's own, which was thrown first.)
    const [first, second] = thrown;
    assert.equal(caught, first, `${kind}: thrown to job 31's end`);
    assert.deepEqual((first as Error & { suppressed?: unknown[] }).suppressed, [second], kind);
    assert.ok([x, y].every((j) => j.state === "completed"), kind);
  }
});

Deno.test("an engine error out of a job's abort (a stack overflow in the dispatch, as abort listeners that each cancel the next job reach ~500 deep) leaves no job half-cancelled: thrown to the canceller, the walk goes on a microtask later", async () => {
  // p ── a ── a1        a's abort throws (before or after it aborts a's signal), as a stack
  //   └─ b              overflow in its dispatch does. Before, the walk stopped there for good:
  // a stayed `cancelling` (its signal maybe never aborted), a1 and b were never cancelled, and p
  // never finished.
  for (const when of ["before", "after"] as const) {
    const abort = AbortController.prototype.abort;
    const overflow = new RangeError("simulated: Maximum call stack size exceeded");
    const p = new CompletableDeferred<void>();
    const a = new CompletableDeferred<void>({ parent: p });
    const a1 = new CompletableDeferred<void>({ parent: a });
    const b = new CompletableDeferred<void>({ parent: p });
    const jobs = [p, a, a1, b];
    for (const j of jobs) void j.signal; // made, so each has an abort to throw from
    const throwFor = a.signal;
    AbortController.prototype.abort = function (this: AbortController, reason?: unknown) {
      if (this.signal !== throwFor) return abort.call(this, reason);
      if (when === "after") abort.call(this, reason);
      throw overflow;
    };
    try {
      assert.throws(() => p.cancel(), (e) => e === overflow, when);
    } finally {
      AbortController.prototype.abort = abort;
    }
    assert.equal(a.state, "cancelling", `${when}: a waits for the rest of its walk`);
    await until(() => jobs.every((j) => j.state === "cancelled"), `${when}: every job cancelled`);
    for (const j of jobs) assert.ok(j.signal.aborted, `${when}: ${j}'s signal aborted`);
  }
});

Deno.test("a cancel begun at each depth of an all but full stack (a real RangeError, wherever it comes) leaves no job half-cancelled: the rest of the walk goes on a microtask later", async () => {
  // p ── a ── a1       p cancelled, or a1 failed (the failure's path to p held, then finished)
  //   └─ b
  // Scanned over the last frames the stack has room for, so the overflow comes at each call of
  // the cancel in turn: before its state changed (the tree left active, the cancel not begun),
  // in the walk, at a finish, or at the call of the walk itself (p `cancelling`, the walk never
  // begun). Before, p stayed `cancelling` for good where the walk never began. (On Deno 2.9.6
  // every cancel left part done is that last kind, p `cancelling`, the rest `active`: 37 to 150
  // of them a run, so that is what `halfway` counts and what fails without the fix.)
  const rec = (n: number, f: () => void): void => {
    if (n === 0) f();
    else rec(n - 1, f);
  };
  const begun: CompletableDeferred<void>[][] = [];
  let halfway = 0; // cancels an overflow stopped with some job cancelling, not cancelled
  // One cancel (or failure) `n` frames and `k` arguments deep (each a stack slot: finer steps
  // than a frame): "no room" where the overflow came before the call, else "threw" or "ran".
  function bottom(this: () => void) {
    this();
  }
  const trial = (n: number, k: number, fail: boolean): "no room" | "threw" | "ran" => {
    const p = new CompletableDeferred<void>();
    const a = new CompletableDeferred<void>({ parent: p });
    const a1 = new CompletableDeferred<void>({ parent: a });
    const b = new CompletableDeferred<void>({ parent: p });
    const jobs = [p, a, a1, b];
    for (const j of jobs) void j.signal; // made, so each has an abort to overflow in
    let called = false, threw = false;
    const args = new Array(k).fill(0);
    try {
      rec(n, () =>
        Reflect.apply(bottom, () => {
          called = true;
          try {
            if (fail) a1.completeExceptionally(new Error("a1 failed"));
            else p.cancel();
          } catch {
            threw = true; // the overflow, thrown to the canceller
          }
        }, args));
    } catch {
      threw = true; // overflowed before the cancel was called, or in the catch above
    }
    if (!jobs.every((j) => j.state === "active")) { // begun: to be gone on with
      begun.push(jobs);
      if (jobs.some((j) => j.state !== "cancelled")) halfway++;
    }
    return !called ? "no room" : threw ? "threw" : "ran";
  };
  // Rounds (the JIT changes the frames' sizes as it goes): from a depth with no room for the
  // call down to 10 depths in a row whose cancel and failure ran at each padding. A first round
  // misses where the frames shrink while it scans (tier-up finishing later on a loaded host: 3
  // of 8 runs beside 3 others, and with a small --stack-size); a later one, warm, reaches it.
  // Up to 20 rounds (each well under a second): they stop at the first that reaches one.
  // Capped at SCAN_MS too (a bounded loop, no sleep): 20 rounds took up to a minute on a loaded
  // 2-CPU host.
  const deadline = performance.now() + SCAN_MS;
  let rounds = 0;
  for (; rounds < 20 && halfway === 0 && performance.now() < deadline; rounds++) {
    let n = 1000;
    while (trial(n, 0, false) !== "no room") n += 1000;
    for (; trial(n, 0, false) === "no room"; n -= 100);
    n += 100; // back to no room: the overflows lie between
    for (let ran = 0; ran < 10 && n > 0 && performance.now() < deadline; n--) {
      let all = true;
      for (let k = 0; k < 12; k++) {
        if (trial(n, k, false) !== "ran" || trial(n, k, true) !== "ran") all = false;
      }
      ran = all ? ran + 1 : 0;
    }
  }
  assert.ok(halfway > 0, `the scan reached a cancel stopped part way (${rounds} rounds)`);
  await until(
    () => begun.every((t) => t.every((j) => j.state === "cancelled" && j.signal.aborted)),
    () =>
      `every begun cancel to end: ${
        begun.filter((t) => !t.every((j) => j.state === "cancelled")).map((t) =>
          t.map((j) => j.state).join(",")
        ).join(" | ")
      }`,
  );
});

Deno.test("a failure whose path up walks two levels, each walk's finish throwing (a reportError that throws), throws the first, the second kept in its `suppressed`", () => {
  // p ── a ── a1 (fails)     a's walk ends a2, p's ends b: each one's handler throws, and each
  //   │    └─ a2             report of it throws. The path (#cancelWith) kept the first walk's
  //   └─ b                   throw and dropped the second's.
  const p = new CompletableDeferred<void>();
  const a = new CompletableDeferred<void>({ parent: p });
  const a1 = new CompletableDeferred<void>({ parent: a });
  const a2 = new CompletableDeferred<void>({ parent: a });
  const b = new CompletableDeferred<void>({ parent: p });
  for (const j of [a2, b]) {
    j.invokeOnCompletion(() => {
      throw new Error(`${j}'s handler`);
    });
  }
  const report = globalThis.reportError;
  const thrown: Error[] = [];
  globalThis.reportError = () => {
    const e = new Error(`reportError throws (${thrown.length})`);
    thrown.push(e);
    throw e;
  };
  try {
    assert.throws(() => a1.completeExceptionally(new Error("a1 failed")), (e) => e === thrown[0]);
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(thrown.length, 2, "both handlers' reports ran");
  assert.deepEqual((thrown[0] as Error & { suppressed?: unknown[] }).suppressed, [thrown[1]]);
  for (const j of [p, a, a1, a2, b]) assert.equal(j.state, "cancelled", `${j} cancelled`);
});

Deno.test("a reportError that throws out of a child's handlers during a cancel's walk leaves no sibling uncancelled: thrown to the canceller once the walk is done", () => {
  // p ── a (its handler throws; reportError, replaced, throws on that report)
  //   └─ b ── b1 (its handler throws too: kept in the first throw's `suppressed`)
  //   └─ c
  // Before, the throw left the walk at a's finish for good: b was never cancelled, and p stayed
  // `cancelling`; then the rest of the walk waited for a microtask, b and c still active when
  // the cancel returned, and b1's throw went to the microtask's report.
  const p = new CompletableDeferred<void>();
  const a = new CompletableDeferred<void>({ parent: p });
  const b = new CompletableDeferred<void>({ parent: p });
  const b1 = new CompletableDeferred<void>({ parent: b });
  const c = new CompletableDeferred<void>({ parent: p });
  a.invokeOnCompletion(() => {
    throw new Error("a's handler");
  });
  b1.invokeOnCompletion(() => {
    throw new Error("b1's handler");
  });
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  const later = new Error("reportError throws again");
  let calls = 0;
  globalThis.reportError = () => {
    throw calls++ === 0 ? broken : later;
  };
  try {
    assert.throws(() => p.cancel(), (e) => e === broken);
  } finally {
    globalThis.reportError = report;
  }
  for (const j of [p, a, b, b1, c]) {
    assert.equal(j.state, "cancelled", `${j} cancelled when the cancel returns`);
    assert.ok(j.signal.aborted);
  }
  assert.deepEqual((broken as Error & { suppressed?: unknown[] }).suppressed, [later]);
});

/**
 * How long a scan of the stack's edge may run (a deadline on its rounds, not a sleep): 20 rounds
 * took 54 s (a cancel's) and 79 s (a failure's) on a loaded 2-CPU host where a round target was
 * not met. Its tests assert that no case reached is stuck, and say how many were reached.
 */
const SCAN_MS = 15_000;

/**
 * Runs `trial` over the last frames the stack has room for (from a depth with no room down to 10
 * depths in a row where it ran at each of 12 paddings), so that the overflow comes at each call
 * of what it does in turn; then `after` (awaited), until `done`, 20 rounds (the JIT changes the
 * frames' sizes as it goes: a later round, warm, reaches what a first one missed) or `SCAN_MS`.
 * Returns the rounds begun.
 */
async function scanStackEdge(
  trial: (n: number, k: number) => "no room" | "threw" | "ran",
  after: () => Promise<void>,
  done: () => boolean,
): Promise<number> {
  await null; // every trial from a microtask's stack, as after each `after`
  const deadline = performance.now() + SCAN_MS;
  let round = 0;
  for (; round < 20 && !done() && performance.now() < deadline; round++) {
    let n = 1000;
    while (trial(n, 0) !== "no room") n += 1000;
    for (; trial(n, 0) === "no room"; n -= 100);
    n += 100; // back to no room: the overflows lie between
    for (let ran = 0; ran < 10 && n > 0 && performance.now() < deadline; n--) {
      let all = true;
      for (let k = 0; k < 12; k++) {
        if (trial(n, k) !== "ran") all = false;
        await after();
      }
      ran = all ? ran + 1 : 0;
    }
  }
  return round;
}

/** Lets the microtasks queued so far run, and those they queue, 3 deep (no timing, no sleep). */
async function microtasksLater(): Promise<void> {
  for (let i = 0; i < 3; i++) await null;
}

Deno.test("a cancel whose walk's finish, or the queueing of the rest of its walk, the stack had no room for ends a microtask later, with no later cancel to pick it up", async () => {
  // p ── a ── a1       No signals: the walk's deepest calls are its finishes (#tryFinalize,
  //   └─ b             #finalize, #leave), so the overflow comes there, or at the queueing of
  // the rest of the walk as it leaves the outermost #cancelWith. Each begun cancel must end
  // once the microtasks queued meanwhile have run, with no other cancel between: before, a
  // finish whose call overflowed was tried again only by the walk's own retry (none pinned it),
  // and a walk whose queueing overflowed at the outermost cancel waited for the next cancel.
  let partway = 0; // cancels an overflow stopped with some job cancelling, not cancelled
  let unfinished = 0; // of those, walks done with no job finished
  const stuck: string[] = []; // cancels not ended a microtask later
  let jobs: CompletableDeferred<void>[] = [];
  const states = () => jobs.map((j) => j.state).join(",");
  const rounds = await scanStackEdge(
    (n, k) => {
      const p = new CompletableDeferred<void>();
      const a = new CompletableDeferred<void>({ parent: p });
      const a1 = new CompletableDeferred<void>({ parent: a });
      const b = new CompletableDeferred<void>({ parent: p });
      jobs = [p, a, a1, b];
      return atDepth(n, k, () => p.cancel());
    },
    async () => {
      if (jobs.every((j) => j.state === "active" || j.state === "cancelled")) return;
      partway++;
      // The walk done, no finish: the overflow came at the walk's calls of #tryFinalize (one
      // frame deep each, so each overflowed), which only the walk's own retry tries again.
      if (jobs.every((j) => j.state === "cancelling")) unfinished++;
      await microtasksLater();
      if (!jobs.every((j) => j.state === "cancelled")) stuck.push(states());
      jobs = [];
    },
    () => partway >= 400,
  );
  assert.ok(partway > 0, `the scan reached a cancel stopped part way (${rounds} rounds)`);
  // Not asserted: whether the scan reaches a walk whose every finish call overflowed depends on
  // the frames V8 gives the walk's calls, which change with what ran before (JIT tiers, inlining):
  // run alone it does (~100 of 400); after the rest of this file it did in one run and not in
  // the next (`unfinished > 0` failed the file, with the same src/job.ts).
  assert.deepEqual(
    stuck,
    [],
    `of ${partway} cancels stopped part way (${unfinished} unfinished, ${rounds} rounds)`,
  );
});

Deno.test("a cancel's walk stopped by an engine error after a finish threw (a reportError that throws) throws the finish's error, the engine error kept in its `suppressed`", async () => {
  // p ── a (its handler throws; reportError, replaced, throws on that report)
  //   └─ b (its abort overflows the stack: a real RangeError, out of a recursion in the patch)
  // The walk goes on past a's finish, stops at b's abort, and throws the first error, the
  // finish's; the overflow was kept in its `suppressed` (no test failed without that).
  const p = new CompletableDeferred<void>();
  const a = new CompletableDeferred<void>({ parent: p });
  const b = new CompletableDeferred<void>({ parent: p });
  a.invokeOnCompletion(() => {
    throw new Error("a's handler");
  });
  const throwFor = b.signal;
  let overflow: unknown;
  const abort = AbortController.prototype.abort;
  AbortController.prototype.abort = function (this: AbortController, reason?: unknown) {
    if (this.signal !== throwFor) return abort.call(this, reason);
    const deeper = (n: number): number => deeper(n + 1) + 1;
    try {
      deeper(0);
    } catch (e) {
      overflow = e;
    }
    AbortController.prototype.abort = abort; // once: the walk's rest aborts it a microtask later
    throw overflow;
  };
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  globalThis.reportError = () => {
    throw broken;
  };
  try {
    assert.throws(() => p.cancel(), (e) => e === broken);
  } finally {
    globalThis.reportError = report;
    AbortController.prototype.abort = abort;
  }
  assert.ok(overflow instanceof RangeError, "a real overflow");
  assert.deepEqual((broken as Error & { suppressed?: unknown[] }).suppressed, [overflow]);
  assert.equal(a.state, "cancelled");
  await until(() => [p, a, b].every((j) => j.state === "cancelled"), "every job cancelled");
  assert.ok(b.signal.aborted);
});

Deno.test("a body that ends with the stack all but full (its finish's call overflowing) still finishes, and lets its waiting parent finish, once the next cancel's microtask runs", async () => {
  // p (its own part done, waiting) ── d, completed `n` frames deep: the overflow comes at each
  // call of d's end in turn (#tryFinalize, #finalize, #leave, then p's). Before, a finish whose
  // call overflowed left d `completing` for good, and p with it: nothing tried it again. (A
  // body's end does not queue that microtask itself: the cancel of an unrelated job does.)
  let partway = 0; // ends an overflow stopped with d or p not final
  const stuck: string[] = [];
  let jobs: CompletableDeferred<void>[] = [];
  const rounds = await scanStackEdge(
    (n, k) => {
      const p = new CompletableDeferred<void>();
      const d = new CompletableDeferred<void>({ parent: p });
      p.complete(); // waits for d
      jobs = [p, d];
      return atDepth(n, k, () => d.complete());
    },
    async () => {
      if (jobs.every((j) => j.state === "completed") || jobs[1].state === "active") return;
      partway++;
      new CompletableDeferred<void>().cancel(); // queues the run of what overflows stopped
      await microtasksLater();
      if (!jobs.every((j) => j.state === "completed")) {
        stuck.push(jobs.map((j) => j.state).join(","));
      }
      jobs = [];
    },
    () => partway >= 100,
  );
  assert.ok(partway > 0, `the scan reached an end stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} ends stopped part way (${rounds} rounds)`);
});

Deno.test("a launch whose thenable calls back with the stack all but full (resolving it, or failing it, cancelled first or not) still ends: the end lost at its call is ended again a microtask later", async () => {
  // scope (a supervisor, its failures reported) ── t, whose block returns a thenable of the
  // test's: resolved `n` frames deep, or rejected so (t cancelled first, waiting for its body,
  // or not: then its failure is reported).
  // Before, an overflow at the callback's call of #adopt or failBody, once the callback had
  // marked itself called (a second call ignored), lost the body's end: t `active` or
  // `cancelling` for good.
  const reported: unknown[] = [];
  const scope = createScope({
    supervisor: true,
    context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
  });
  let partway = 0; // ends an overflow stopped, t not final when the trial returned
  // Of the resolved ones (no cancel to run what stopped), those ended with no cancel after: by
  // the call back's own queueing of the run, where the stack had room for it.
  let selfEnded = 0;
  // Of the ones failed active (no cancel first, which would have queued the run) and left so,
  // their failBody not begun (nor its own queueing), those ended with no cancel after: by the
  // reject call back's catch's queueing.
  let selfFailed = 0;
  const stuck: string[] = [];
  let t: Job | null = null;
  let end = () => {};
  let fail = false;
  let kind = 0; // 0: resolved; 1: failed, t cancelled first; 2: failed, t active
  let untouched = false;
  let rounds = 0;
  try {
    rounds = await scanStackEdge(
      (n, k) => {
        let resolve!: (v: unknown) => void, reject!: (e: unknown) => void;
        t = scope.launch(() => ({
          then(ok: (v: unknown) => void, bad: (e: unknown) => void) {
            resolve = ok;
            reject = bad;
          },
        }));
        kind = (kind + 1) % 3;
        fail = kind !== 0;
        if (kind === 1) t.cancel(); // waits for its body, which then fails
        const error = new Error("t's late failure");
        end = fail ? () => reject(error) : () => resolve(1);
        const r = atDepth(n, k, end);
        untouched = t.state === "active"; // for a failure: its failBody never began
        return r;
      },
      async () => {
        const job = t!;
        const state = (): JobState => job.state; // read anew after each await
        const ended = fail ? "cancelled" : "completed";
        if (state() === ended) return;
        if (kind !== 1) {
          await microtasksLater(); // no cancel first: the run the call back queued
          if (state() === ended && kind === 0) selfEnded++;
          if (state() === ended && kind === 2 && untouched) selfFailed++;
        }
        new CompletableDeferred<void>().cancel(); // queues the run of what overflows stopped
        await microtasksLater();
        if (state() === ended) partway++;
        else {
          end(); // no room to begin (nothing marked called): ended now, else ignored
          await microtasksLater();
          if (state() !== ended) stuck.push(`${fail ? "failed" : "resolved"}: ${state()}`);
        }
        t = null;
      },
      () => partway >= 100,
    );
  } finally {
    scope.cancel();
  }
  assert.ok(partway > 0, `the scan reached an end stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} ends stopped part way (${rounds} rounds)`);
  assert.ok(selfEnded > 0, `a resolved one ended with no cancel to run it (of ${partway} stopped)`);
  assert.ok(selfFailed > 0, `a failed one ended with no cancel to run it (of ${partway} stopped)`);
});

Deno.test("a job that ends with the stack all but full, its handlers' run overflowing, still settles its join and runs each handler once, before its waiting parent finishes", async () => {
  // p (its own part done, waiting) ── d (joined, two handlers), completed or cancelled `n`
  // frames deep: the overflow comes at #leave's call of d's handlers (#notify), or among them.
  // Before, they were lost: d final, its join never settled, its handlers never run. A handler
  // whose call overflowed (at its entry, or in its getter's call) threw that RangeError: it is
  // reported (d's CompletionHandlerError), as any handler's throw is, and counts as called.
  let partway = 0; // ends an overflow stopped with d final and its handlers not all run
  // Completed ones (no cancel to run what stopped) right once the microtasks ran, with no cancel
  // after: by #leave's own queueing of the run, where the stack had room for it.
  let selfEnded = 0, stopped = false;
  const stuck: string[] = [];
  let check: () => string | null = () => null;
  let redo = () => {};
  let cancel = false;
  const rounds = await scanStackEdge(
    (n, k) => {
      const p = new CompletableDeferred<void>();
      const thrown: unknown[] = []; // what d's handlers threw, as reported
      const context = Context.empty.with(CoroutineExceptionHandler, (e) => {
        if (e instanceof CompletionHandlerError) {
          thrown.push(e.cause, ...((e as { suppressed?: unknown[] }).suppressed ?? []));
        } else thrown.push(e);
      });
      const d = new CompletableDeferred<void>({ parent: p, context });
      p.complete(); // waits for d
      let joined = false, ran = 0, pFirst = false;
      d.join().then(() => joined = true);
      d.invokeOnCompletion(() => ran++);
      d.invokeOnCompletion(() => {
        ran++;
        if (p.isCompleted) pFirst = true; // the parent must wait for d's handlers
      });
      const end = cancel ? () => d.cancel() : () => void d.complete();
      cancel = !cancel;
      redo = () => {
        if (d.isActive) end(); // no room to begin: ended now
      };
      check = () => {
        const overflows = thrown.filter((e) => e instanceof RangeError).length;
        const ok = p.state === "completed" && d.isCompleted && joined && !pFirst &&
          overflows === thrown.length && ran <= 2 && ran + overflows >= 2;
        return ok ? null : `${p.state},${d.state} joined ${joined}, ran ${ran}, p first ${pFirst}` +
          `, threw ${thrown.map(String)}`;
      };
      const r = atDepth(n, k, end);
      stopped = d.isCompleted && ran < 2;
      if (stopped) partway++;
      return r;
    },
    async () => {
      if (cancel && stopped) { // a complete (`cancel` is the next case's)
        await microtasksLater(); // no cancel first: the run #leave queued
        if (check() === null) selfEnded++;
      }
      new CompletableDeferred<void>().cancel(); // queues the run of what overflows stopped
      await microtasksLater();
      redo();
      await microtasksLater();
      const wrong = check();
      if (wrong !== null) stuck.push(wrong);
      check = () => null;
      redo = () => {};
    },
    () => partway >= 100,
  );
  assert.ok(partway > 0, `the scan reached handlers stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} ends whose handlers stopped (${rounds} rounds)`);
  assert.ok(
    selfEnded > 0,
    `a completed one went on with no cancel to run it (of ${partway} stopped)`,
  );
});

Deno.test("a failure begun with the stack all but full, whose parent's finish (its report) overflows after the child's, still finishes that parent a microtask later", async () => {
  // scope (a supervisor) ── t (a launch, its block returned: waiting) ── d, failed `n` frames
  // deep. d's failure cancels t, which reports it (no parent takes it) as it finishes, after d's
  // finish, deeper than d's: the overflow comes in t's finish, inside #tryFinalize's walk up
  // from d. Before, only the first job of that walk (d, final by then) was tried again, and t
  // stayed `cancelling` for good.
  const reported: unknown[] = [];
  const scope = createScope({
    supervisor: true, // a child's failure cancels no other
    context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
  });
  let partway = 0;
  const stuck: string[] = [];
  let jobs: Job[] = [];
  let rounds = 0;
  try {
    rounds = await scanStackEdge(
      (n, k) => {
        let d!: CompletableDeferred<void>;
        const t = scope.launch((task) => {
          d = new CompletableDeferred<void>({ parent: task.job });
        });
        jobs = [t, d];
        return atDepth(n, k, () => d.completeExceptionally(new Error("d failed")));
      },
      async () => {
        if (
          jobs.every((j) => j.state === "cancelled") || jobs[1].state !== "cancelled" &&
            jobs[1].state !== "cancelling"
        ) return;
        partway++;
        await microtasksLater();
        if (!jobs.every((j) => j.state === "cancelled")) {
          stuck.push(jobs.map((j) => j.state).join(","));
        }
        jobs = [];
      },
      () => partway >= 100,
    );
  } finally {
    scope.cancel();
  }
  assert.ok(partway > 0, `the scan reached a failure stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} failures stopped part way (${rounds} rounds)`);
});

Deno.test("a failure begun with the stack all but full, whose call of the cancel overflowed before it ran, still fails the job and its waiting parent a microtask later", async () => {
  // p (its own part done, waiting) ── d, which fails `n` frames deep. Where #failBody's call of
  // #cancelWith itself overflowed, nothing of it ran: d, its body marked done, stayed `active` for
  // good (a second completeExceptionally answered false), and p `completing` with it. Now d is
  // kept for the microtask the failure queued as it began. (Without that, the scan also saw d
  // left `cancelling` and p then completing as if d had not failed: 'completed,cancelled'.)
  let partway = 0; // ends an overflow stopped with d not final or p not final
  let kept = 0; // of those, d left active (the call overflowed) until the microtask
  const stuck: string[] = [];
  let jobs: CompletableDeferred<void>[] = [];
  const rounds = await scanStackEdge(
    (n, k) => {
      const p = new CompletableDeferred<void>();
      const d = new CompletableDeferred<void>({ parent: p });
      p.complete(); // waits for d
      jobs = [p, d];
      return atDepth(n, k, () => d.completeExceptionally(new Error("d failed")));
    },
    async () => {
      const d = jobs[1];
      const ended = "cancelled,cancelled"; // d's failure cancels p
      const states = () => jobs.map((j) => j.state).join(",");
      if (states() === ended) return;
      const active = d.state === "active";
      await microtasksLater();
      if (d.state === "active") {
        // Nothing changed (the trial had no room to begin): it ends now.
        if (!d.completeExceptionally(new Error("again"))) stuck.push("active, its body done");
      } else {
        partway++;
        if (active) kept++;
        if (states() !== ended) stuck.push(states());
      }
      jobs = [];
    },
    () => partway >= 300,
  );
  assert.ok(partway > 0, `the scan reached a failure stopped part way (${rounds} rounds)`);
  assert.deepEqual(
    stuck,
    [],
    `of ${partway} failures stopped part way (${kept} left active, ${rounds} rounds)`,
  );
});

Deno.test("where the engine has no Error.isError, a failure whose prototype chain holds a Proxy with a throwing trap still fails the deferred: the trap's throw is not thrown out of completeExceptionally", async () => {
  // errorKind rethrows what its read threw for an `e` that is no Proxy (only the engine's error,
  // a stack overflow, can come there), but without `Error.isError` it asks `instanceof`, which
  // runs the traps of a Proxy among a plain object's prototypes. Before, that trap's throw came
  // out of completeExceptionally, the deferred left active. A child process: `Error.isError`
  // deleted before kcoro's modules load (they read it once).
  const mod = new URL("../mod.ts", import.meta.url).href;
  const code = `
    delete Error.isError;
    const { CompletableDeferred } = await import(${JSON.stringify(mod)});
    const trap = new Error("the trap's");
    const e = Object.create(new Proxy({}, { getPrototypeOf() { throw trap; } }));
    const d = new CompletableDeferred();
    let threw = "nothing";
    try {
      d.completeExceptionally(e);
    } catch (x) {
      threw = x === trap ? "the trap's error" : String(x);
    }
    let cause = "none";
    try {
      await d.await();
    } catch (x) {
      cause = x === e ? "e" : String(x);
    }
    console.log(JSON.stringify({ threw, state: d.state, cause }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000), // a hang fails the test
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
  assert.deepEqual(JSON.parse(text.trim().split("\n").at(-1)!), {
    threw: "nothing",
    state: "cancelled",
    cause: "e",
  });
});

Deno.test("a lazy launch started with the stack all but full, its block throwing a cancellation, ends cancelled a microtask later: never stuck active, never failed by it", async () => {
  // scope (a supervisor, its failures reported) ── t (lazy: its block throws a CancellationError
  // at once), started `n` frames deep. Before, an overflow at the start's hook left t `active`,
  // its block never run (a second start() answered false); one at the cancellation's brand read
  // (errorKind, deepest of #failBody's calls) failed t with it, reported to the supervisor's
  // handler; one at failBody's call (or, with the read's overflow thrown on, the read's) left t
  // `active` for good, its block run and its end lost. Now the start is tried again (WALK_START)
  // and the lost end ended again (lostBodyEnds), a microtask later. (An overflow at the
  // block's own call fails t with the RangeError: reported.)
  const reported: unknown[] = [];
  const scope = createScope({
    supervisor: true,
    context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
  });
  const cancellation = new CancellationError("t's block");
  let runs = 0; // of t's block
  let partway = 0; // starts an overflow stopped, t not final when the trial returned
  // Every other start stopped before its block ran is left alone, not cancelled: of those, the
  // ones cancelled once the microtasks ran, with no cancel after (start()'s own queueing).
  let leave = false, selfEnded = 0;
  const stuck: string[] = [];
  let t: Job | null = null;
  let rounds = 0;
  try {
    rounds = await scanStackEdge(
      (n, k) => {
        t = scope.launch(() => {
          runs++;
          throw cancellation;
        }, { lazy: true });
        const job = t;
        return atDepth(n, k, () => void job.start());
      },
      async () => {
        const job = t!;
        if (job.state === "cancelled") return;
        // Its block not run yet, the start stopped: cancelled now, it never runs (as a start
        // deferred past the nesting bound, `#startLater`). Before, the retry ran it.
        if (job.state === "active" && runs === 0 && (leave = !leave)) {
          await microtasksLater(); // no cancel first: the retry start() queued
          if ((job.state as JobState) === "cancelled") selfEnded++;
        }
        const cancelledFirst = job.state === "active" && runs === 0;
        if (cancelledFirst) job.cancel();
        // Queues the run of what overflows stopped, should the start's own queueing not fit.
        new CompletableDeferred<void>().cancel();
        await microtasksLater();
        const state = (): JobState => job.state; // read anew after each await
        if (state() === "new") job.start(); // no room to begin: started now
        else partway++;
        await microtasksLater();
        if (state() !== "cancelled") stuck.push(state());
        if (cancelledFirst && runs !== 0) stuck.push("its block run after its cancel");
        t = null;
        runs = 0;
      },
      () => partway >= 100,
    );
  } finally {
    scope.cancel();
  }
  const wrong = reported.filter((e) => !(e instanceof RangeError));
  assert.ok(partway > 0, `the scan reached a start stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} starts stopped part way (${rounds} rounds)`);
  assert.deepEqual(wrong, [], "only overflows reported, never the cancellation");
  assert.ok(
    selfEnded > 0,
    `a stopped start went on with no cancel to run it (of ${partway} stopped)`,
  );
});

Deno.test("a lazy launch started with the stack all but full, its block returning a value, ends completed a microtask later: the value lost at #adopt's call is adopted again", async () => {
  // scope (a supervisor, its failures reported) ── t (lazy: its block returns 1, or an object
  // with no `then`, at once), started `n` frames deep. Before, the overflow at #run's call of
  // #adopt lost the block's value, and the start's retry (WALK_START) found the block taken (a
  // no-op): t `active` for good. Now it is kept (lostBodyEnds), t completed a microtask later.
  // (An overflow at the block's own call, the block not run, fails t with the RangeError.)
  const reported: unknown[] = [];
  const scope = createScope({
    supervisor: true,
    context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
  });
  let partway = 0; // starts an overflow stopped, t not final when the trial returned
  const stuck: string[] = [];
  let t: Job | null = null;
  let ran = false; // t's block
  let object = false;
  let rounds = 0;
  try {
    rounds = await scanStackEdge(
      (n, k) => {
        object = !object;
        const value = object ? { v: 1 } : 1;
        t = scope.launch(() => {
          ran = true;
          return value;
        }, { lazy: true });
        const job = t;
        return atDepth(n, k, () => void job.start());
      },
      async () => {
        const job = t!;
        t = null;
        const state = (): JobState => job.state; // read anew after each await
        const ended = () => state() === "completed" || (!ran && state() === "cancelled");
        const what = () => `${object ? "object" : "primitive"}: ${state()}`;
        if (state() === "completed" || state() === "cancelled") {
          if (!ended()) stuck.push(what());
        } else {
          new CompletableDeferred<void>().cancel(); // queues the run, should no queueing fit
          await microtasksLater();
          if (state() === "new") job.start(); // no room to begin: started now
          else partway++;
          await microtasksLater();
          if (!ended()) stuck.push(what());
        }
        ran = false;
      },
      () => partway >= 100,
    );
  } finally {
    scope.cancel();
  }
  const wrong = reported.filter((e) => !(e instanceof RangeError));
  assert.ok(partway > 0, `the scan reached a start stopped part way (${rounds} rounds)`);
  assert.deepEqual(stuck, [], `of ${partway} starts stopped part way (${rounds} rounds)`);
  assert.deepEqual(wrong, [], "only overflows reported");
});

Deno.test("a launch whose thenable's then throws, the failure's report throwing (a reportError that throws), calls that then once: a body's end kept to adopt again is not adopted once the body ended", async () => {
  // scope (a supervisor, no handler: t's failure goes to reportError) ── t (lazy), its block
  // returning a thenable whose `then` throws: t fails with it, and the report's throw comes out
  // of start(). Before, #run's catch (kept for an overflow at its call of #adopt) kept the
  // thenable to adopt again, and that run, a microtask later, called its `then` a second time,
  // t long failed (a thenable's `then` is called once, as Promise's resolve calls it).
  const scope = createScope({ supervisor: true });
  const failure = new Error("the thenable's then");
  let calls = 0;
  const t = scope.launch(() => ({
    then() {
      calls++;
      throw failure;
    },
  }), { lazy: true });
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  globalThis.reportError = () => {
    throw broken;
  };
  try {
    assert.throws(() => t.start(), (e) => e === broken);
  } finally {
    globalThis.reportError = report;
  }
  await microtasksLater();
  scope.cancel();
  assert.equal(calls, 1, "the thenable's then called once");
  assert.equal(t.state, "cancelled");
});

Deno.test("a deferred job's handler that pulls another's ahead of the drain, both reports throwing, throws the pull's first (the first thrown), its own kept in its `suppressed`", () => {
  // Job 31's handler (32 deep) ends x and y (both deferred). The drain runs x's handler, which
  // adds one to y (pulling y's handler, whose report throws first), then throws (its report
  // throws second). Before, the drain threw x's, the earlier pull's kept after it.
  const N = 32;
  let caught: unknown;
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  const x = new CompletableDeferred<void>();
  const y = new CompletableDeferred<void>();
  y.invokeOnCompletion(() => {
    throw new Error("y's handler");
  });
  x.invokeOnCompletion(() => {
    y.invokeOnCompletion(() => {}); // pulls y's handlers ahead of the drain
    throw new Error("x's handler");
  });
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 2 < N) d[i + 1].complete();
      else if (i + 1 < N) {
        try {
          d[i + 1].complete();
        } catch (e) {
          caught = e;
        }
      } else {
        x.complete();
        y.complete();
      }
    });
  }
  const report = globalThis.reportError;
  const thrown: Error[] = [];
  globalThis.reportError = (e: unknown) => {
    const error = new Error(`reportError throws (${thrown.length})`, { cause: e });
    thrown.push(error);
    throw error;
  };
  try {
    d[0].complete();
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(thrown.length, 2, "both reports ran");
  assert.equal(((thrown[0].cause as Error).cause as Error).message, "y's handler", "y's first");
  assert.equal(caught, thrown[0], "the first thrown is thrown");
  assert.deepEqual((thrown[0] as Error & { suppressed?: unknown[] }).suppressed, [thrown[1]]);
  assert.ok([x, y].every((j) => j.state === "completed"));
});

Deno.test("a failure, a cancel and a body's end begun at each depth of an all but full stack, the overflow thrown at a loop's back-edge (V8 without its optimizing tiers, a child process), leave no job stuck", async () => {
  // tests/fixtures/stack_edge_scan.ts's modes, each in a child process: without the optimizing
  // tiers, and with a tier-up budget of one call (so V8 checks the stack at nearly every loop
  // back-edge and return), the overflow comes inside #cancelWith's, #walkDown's and
  // #tryFinalize's loops, not only at their calls, which this process's warm JIT mostly does
  // not reach. "fail-up": scope (a supervisor) ── t (waiting) ── d, which fails. Before, an
  // overflow at #cancelWith's back-edge left the path before t, the hold on d let go: d ended
  // `cancelled` (its failure marked handled: not reported) and t `completed` (1,249 cases in).
  // "cancel-wide": p ── 4 × (a ── a1), p cancelled. Before, an overflow at #walkDown's back-edge
  // between p's children lost the next child: the walk went on past them, p `cancelling` and its
  // children `active` for good (1,273 cases in). "complete-chain": 5 deferreds each the parent of
  // the next, the 4 outer waiting, the innermost completed (#tryFinalize's back-edge: not reached
  // before its fix either, kept to guard it). "cancel-given": p (waiting) ── d, given a
  // CancellationError. Before, the overflow of its brand's read (errorKind's catch) was taken for
  // "no brand": d failed with it and cancelled p ('cancelled,cancelled', 1,249 cases in).
  // "abort-given": the same, the cancellation carried as an AbortError's `cause`. Before,
  // cancellationOf asked about it inside its `try`, whose catch took the read's overflow for a
  // failure ('cancelled,cancelled', 1,273 cases in). "handlers-once": p (waiting) ── d, with 4
  // handlers, completed: the overflow inside #notify's loop stops it between handlers. Without
  // #notify's marking each handler run as it calls it, the retry ran the first again ('runs
  // 2111', 1,395 cases in).
  // Each mode stops at its first stuck case or its deadline (the child well under 10 s; later
  // where it has reached no case stopped part way yet: the fixture's `lateDeadline`, from one
  // allowance of 15 s for all the modes together, so that a loaded host adds 15 s at most).
  const flags = [
    "--max-opt=0",
    "--stack-size=200", // shallower: each case's frames cost less
    "--invocation-count-for-maglev=1",
    "--invocation-count-for-turbofan=1",
  ].join(",");
  const fixture = new URL("./fixtures/stack_edge_scan.ts", import.meta.url).pathname;
  const modes = [
    ["fail-up", 6000],
    ["cancel-wide", 3000],
    ["complete-chain", 2000],
    ["cancel-given", 3000],
    ["abort-given", 2500],
    ["handlers-once", 2500],
  ];
  let allowance = 15_000; // what the modes may scan past their budgets, all together
  for (const [mode, ms] of modes) {
    const args = [fixture, String(ms), String(mode), String(allowance)];
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", `--v8-flags=${flags}`, "--allow-all", ...args],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(Number(ms) + allowance + 30_000), // a hang fails the test
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `${mode}: ${text}${new TextDecoder().decode(out.stderr)}`);
    const { cases, partway, stuck, late } = JSON.parse(text.trim().split("\n").at(-1)!);
    allowance = Math.max(0, allowance - late);
    assert.ok(partway > 0, `${mode}: the scan reached a case stopped part way (of ${cases})`);
    assert.deepEqual(stuck, [], `${mode}: of ${partway} cases stopped part way (${cases} cases)`);
  }
});

Deno.test("a reportError that keeps throwing, with no cancel to run what overflows stopped, keeps nothing for a finish it threw out of: the job was final by then", () => {
  // Each job's end throws (its handler's throw reported, the report throwing): before, each kept a
  // retry of its finish in `stoppedWalks` (a no-op, the job final), run only by the next cancel's
  // or failure's microtask, so the list grew by one a job while none came.
  const report = globalThis.reportError;
  const broken = new Error("reportError throws");
  globalThis.reportError = () => {
    throw broken;
  };
  const before = stoppedWalksCount();
  try {
    for (let i = 0; i < 100; i++) {
      const d = new CompletableDeferred<void>();
      d.invokeOnCompletion(() => {
        throw new Error("d's handler");
      });
      assert.throws(() => d.complete(), (e) => e === broken);
      assert.equal(d.state, "completed");
    }
  } finally {
    globalThis.reportError = report;
  }
  assert.equal(stoppedWalksCount() - before, 0, "nothing kept for 100 finishes that threw");
});

Deno.test("a later failure reported in place of being kept (the first a primitive), the report throwing, is reported once: nothing kept to go on with", async () => {
  // p fails with "first" (a primitive: no `suppressed` to keep t's later failure in), so t's
  // failure, reaching p, is reported; the first report throws. Before, that throw out of
  // #cancelWith's loop was taken for an overflow stopping the path at p: a retry kept for a
  // microtask later reported t's failure a second time.
  const p = new CompletableDeferred<void>();
  const scope = createScope({ parent: p });
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const second = new Error("t's failure, after p's");
  const t = scope.launch(async () => {
    try {
      await gate;
    } finally {
      // deno-lint-ignore no-unsafe-finally -- the failure after the cancel
      throw second;
    }
  });
  await tick();
  p.completeExceptionally("first");
  const broken = new Error("reportError throws");
  const calls: unknown[] = [];
  const report = globalThis.reportError;
  const rejected: unknown[] = [];
  const onRejection = (e: PromiseRejectionEvent) => {
    rejected.push(e.reason);
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.reportError = (e: unknown) => {
    calls.push(e);
    if (calls.length === 1) throw broken;
  };
  try {
    release();
    await until(() => p.state === "cancelled" && t.state === "cancelled", "p and t final");
    await tick();
  } finally {
    globalThis.reportError = report;
    globalThis.removeEventListener("unhandledrejection", onRejection);
  }
  assert.deepEqual(calls, [second], "t's failure reported once");
});

Deno.test("a job's completion handlers run by the Set iterator as kcoro loaded: a patched one is never called, the handler runs at once (it threw, and the run was retried a microtask later for ever, no timer running)", async () => {
  // Bounded where the bug is present: the patch lifts itself after LIMIT throws, and is lifted
  // by the test after a few microtasks (the retry loop ran one a turn).
  const setIterProto = Object.getPrototypeOf(new Set().values());
  const originalNext = setIterProto.next;
  const LIMIT = 1_000;
  let throws = 0, armed = false;
  setIterProto.next = function (this: unknown) {
    if (armed && ++throws < LIMIT) throw new Error("a caller's patched Set iterator");
    return originalNext.call(this);
  };
  using reported = catchReported();
  const d = new CompletableDeferred<number>();
  let ran = 0;
  d.invokeOnCompletion(() => ran++);
  let threw: unknown;
  try {
    armed = true;
    try {
      d.complete(1);
    } catch (e) {
      threw = e;
    }
    for (let i = 0; i < 10; i++) await null; // the retries' microtasks, were there any
  } finally {
    armed = false;
    setIterProto.next = originalNext;
  }
  assert.equal(throws, 0);
  assert.equal(threw, undefined);
  assert.equal(ran, 1);
  assert.equal(d.state, "completed");
  assert.deepEqual(reported.errors, []);
});

Deno.test("a job whose handlers' run throws what is no overflow is retried once, that throw reported once, and its waiting parent released (it was retried a microtask later for ever, reported on every pass, the parent never finishing)", async () => {
  // A finalizer hook that always throws (kcoro's own code; a patched Set iterator did so before
  // `#notify` called the built-ins as loaded). Lifts itself after LIMIT calls, so that the test
  // ends where the bug is present.
  const LIMIT = 1_000;
  let calls = 0;
  const hooks = {
    onStart() {},
    onFinal() {
      if (++calls < LIMIT) throw new Error("a finalizer that throws");
    },
    completionWaits: () => false,
  };
  using reported = catchReported();
  const parent = new CompletableDeferred<number>();
  const job = new JobSupport(Context.empty, 0, hooks);
  attachTo(job, parent);
  job.start();
  parent.complete(0); // its body done: it waits for the job
  assert.equal(parent.state, "completing");
  assert.throws(() => completeBody(job, 1), /a finalizer that throws/);
  await until(() => parent.state !== "completing" || calls >= LIMIT, "the parent to finish");
  assert.equal(calls, 2); // the first call, then one retry
  assert.equal(parent.state, "completed");
  assert.equal(reported.errors.length, 1);
  assert.match((reported.errors[0] as Error).message, /a finalizer that throws/);
});

Deno.test("a launch's block whose failure's end throws what is no overflow, its retry too, fails the job once (it stayed active for good, its scope never completing)", async () => {
  // `queueMicrotask` of the caller's that throws, which a failure's start calls (`#armStopped`):
  // the block's end is kept (as for an overflow) and tried again, which throws the same.
  const original = globalThis.queueMicrotask;
  using reported = catchReported();
  let threw: unknown;
  let outcome = "running";
  const done = coroutineScope((scope) => {
    globalThis.queueMicrotask = () => {
      throw new Error("a caller's queueMicrotask");
    };
    try {
      scope.launch(() => {
        throw new Error("boom");
      });
    } catch (e) {
      threw = e;
    }
    // Lifted once the retry (a microtask later) has run: below.
  }).then(() => "completed", (e) => `rejected: ${(e as Error).message}`);
  void done.then((o) => outcome = o);
  try {
    for (let i = 0; i < 10; i++) await null; // the retry's microtask
  } finally {
    globalThis.queueMicrotask = original;
  }
  await until(() => outcome !== "running", "the scope to end", 5_000);
  assert.equal(outcome, "rejected: boom");
  assert.match(String(threw), /a caller's queueMicrotask/);
  assert.equal(reported.errors.length, 1);
  assert.match(String(reported.errors[0]), /a caller's queueMicrotask/);
});

Deno.test("without Error.isError, a block that throws an object with a Proxy among its prototypes fails its scope with it, no trap run (instanceof ran the trap, whose throw left the scope running for good)", async () => {
  const res = await evalScript(
    `
    delete Error.isError;
    const { coroutineScope } = await import("./mod.ts");
    const reported = [];
    addEventListener("error", (e) => { reported.push(String(e.error)); e.preventDefault(); });
    let traps = 0;
    const trapped = new Proxy(Object.create(Error.prototype), {
      getPrototypeOf() { traps++; throw new Error("the caller's getPrototypeOf trap"); },
    });
    const thrown = Object.create(trapped);
    let outcome = "running";
    coroutineScope((scope) => { scope.launch(() => { throw thrown; }); }).then(
      () => outcome = "completed",
      (e) => outcome = e === thrown ? "rejected with it" : "rejected: " + String(e),
    );
    const deadline = performance.now() + 5000;
    while (outcome === "running" && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1));
    }
    console.log(JSON.stringify({ outcome, traps, reported }));
  `,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  const got = JSON.parse(res.stdout);
  assert.deepEqual(got, { outcome: "rejected with it", traps: 0, reported: [] });
});

Deno.test("a completion handler's throw is reported also where a later handler of the job disposes it (kept on its node until all have run)", () => {
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const d = new CompletableDeferred<void>({ context });
  const first = new Error("the first handler's");
  const a = d.invokeOnCompletion(() => {
    throw first;
  });
  let ran = 0;
  d.invokeOnCompletion(() => {
    ran++;
    a[Symbol.dispose](); // called already: changes nothing
  });
  d.complete();
  assert.equal(ran, 1);
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof CompletionHandlerError);
  assert.equal((reported[0] as Error).cause, first);
});

Deno.test("a failure's class is read by Object's reads as kcoro loaded: a caller's Object.getPrototypeOf or getOwnPropertyDescriptor that throws is never called (its throw left completeExceptionally, the deferred active)", () => {
  const { getPrototypeOf, getOwnPropertyDescriptor } = Object;
  let calls = 0;
  const failures: [string, unknown][] = [];
  for (const key of ["getPrototypeOf", "getOwnPropertyDescriptor"] as const) {
    const d = new CompletableDeferred<void>();
    const err = new Error("the failure");
    (Object as unknown as Record<string, unknown>)[key] = () => {
      calls++;
      throw new Error(`a caller's Object.${key}`);
    };
    try {
      d.completeExceptionally(err);
    } catch (e) {
      failures.push([key, e]);
    } finally {
      Object.getPrototypeOf = getPrototypeOf;
      Object.getOwnPropertyDescriptor = getOwnPropertyDescriptor;
    }
    assert.equal(d.state, "cancelled", key);
  }
  assert.deepEqual(failures, []);
  assert.equal(calls, 0);
});

Deno.test("a completion handler's throw is wrapped with the job named by its state, no toString of the caller's run (its throw was reported in place of the handler's)", () => {
  const proto = CompletableDeferred.prototype as { toString(): string };
  const own = Object.getOwnPropertyDescriptor(proto, "toString");
  let calls = 0;
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const d = new CompletableDeferred<void>({ context });
  const first = new Error("the handler's");
  d.invokeOnCompletion(() => {
    throw first;
  });
  Object.defineProperty(proto, "toString", {
    value() {
      calls++;
      throw new Error("a caller's toString");
    },
    configurable: true,
    writable: true,
  });
  try {
    d.complete();
  } finally {
    if (own === undefined) delete (proto as { toString?: unknown }).toString;
    else Object.defineProperty(proto, "toString", own);
  }
  assert.equal(calls, 0);
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof CompletionHandlerError, String(reported[0]));
  assert.equal((reported[0] as Error).cause, first);
  assert.match((reported[0] as Error).message, /completion handler of Job\(completed\)/);
});

Deno.test("completion handlers' later throws are kept in the first's suppressed by built-ins as kcoro loaded: a caller's Array.prototype.push or Object.defineProperty that throws is never called", () => {
  const { push } = Array.prototype;
  const { defineProperty } = Object;
  let calls = 0;
  const reported: unknown[] = [];
  // No push here: the test replaces it.
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => {
    reported[reported.length] = e;
  });
  const d = new CompletableDeferred<void>({ context });
  const thrown = [new Error("a"), new Error("b"), new Error("c")];
  for (const t of thrown) {
    d.invokeOnCompletion(() => {
      throw t;
    });
  }
  Array.prototype.push = function () {
    calls++;
    throw new Error("a caller's push");
  };
  Object.defineProperty = () => {
    calls++;
    throw new Error("a caller's defineProperty");
  };
  try {
    d.complete();
  } finally {
    Array.prototype.push = push;
    Object.defineProperty = defineProperty;
  }
  assert.equal(calls, 0);
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof CompletionHandlerError, String(reported[0]));
  assert.equal((reported[0] as Error).cause, thrown[0]);
  assert.deepEqual((reported[0] as { suppressed?: unknown[] }).suppressed, thrown.slice(1));
});

Deno.test("a job's completion handlers run where the caller made the Set iterator's built-ins getters (throwing, a RangeError, or the built-in on every other read, else nothing or a throw): each handler once, nothing thrown or reported (the getter's throw lost them, a RangeError's was retried each microtask, an empty iterator skipped them)", async () => {
  const setIterProto = Object.getPrototypeOf(new Set().values());
  const targets: [object, PropertyKey][] = [
    [Set.prototype, Symbol.iterator],
    [setIterProto, "next"],
  ];
  const LIMIT = 1_000; // reads after which a getter answers the built-in: the test ends
  const results: string[] = [];
  for (const [target, key] of targets) {
    const own = Object.getOwnPropertyDescriptor(target, key)!;
    const builtin = own.value;
    const empty = key === "next"
      ? () => ({ done: true, value: undefined })
      : () => [][Symbol.iterator]();
    // "every-other": the built-in to the check, an empty iterator to `for...of`; "then-throws":
    // the built-in to the check, a throw to `for...of`; "then-range-error": a RangeError there
    // (taken for an overflow: thrown out of complete(), as one is, and gone on from a microtask
    // later by the built-ins as loaded).
    for (
      const mode of [
        "throws",
        "range-error",
        "every-other",
        "then-throws",
        "then-range-error",
      ]
    ) {
      using reported = catchReported();
      const d = new CompletableDeferred<number>();
      let ran = 0, reads = 0;
      d.invokeOnCompletion(() => ran++);
      let threw: unknown;
      Object.defineProperty(target, key, {
        configurable: true,
        get() {
          if (++reads > LIMIT) return builtin;
          if (mode === "throws") throw new Error("a caller's getter");
          if (mode === "range-error") throw new RangeError("a caller's getter");
          if (reads % 2 === 1) return builtin;
          if (mode === "then-throws") throw new Error("a caller's getter");
          if (mode === "then-range-error") throw new RangeError("a caller's getter");
          return empty;
        },
      });
      try {
        try {
          d.complete(1);
        } catch (e) {
          threw = e;
        }
        for (let i = 0; i < 10; i++) await null; // the retries' microtasks, were there any
      } finally {
        Object.defineProperty(target, key, own);
      }
      const got = `ran ${ran}, threw ${threw}, reported ${reported.errors.length}, ${d.state}`;
      results.push(`${String(key)} ${mode}: ${got}`);
    }
  }
  assert.deepEqual(results, [
    "Symbol(Symbol.iterator) throws: ran 1, threw undefined, reported 0, completed",
    "Symbol(Symbol.iterator) range-error: ran 1, threw undefined, reported 0, completed",
    "Symbol(Symbol.iterator) every-other: ran 1, threw undefined, reported 0, completed",
    "Symbol(Symbol.iterator) then-throws: ran 1, threw undefined, reported 0, completed",
    "Symbol(Symbol.iterator) then-range-error: ran 1, threw RangeError: a caller's getter, reported 0, completed",
    "next throws: ran 1, threw undefined, reported 0, completed",
    "next range-error: ran 1, threw undefined, reported 0, completed",
    "next every-other: ran 1, threw undefined, reported 0, completed",
    "next then-throws: ran 1, threw undefined, reported 0, completed",
    "next then-range-error: ran 1, threw RangeError: a caller's getter, reported 0, completed",
  ]);
});

Deno.test("where the engine has no Error.isError, a cancellation's class read overflowing at each depth of an all but full stack is not taken for a failure (a child process; errorKind answered undefined there, the deferred and its parent cancelled)", async () => {
  // tests/fixtures/stack_edge_scan.ts's "cancel-given" and "abort-given" (see the back-edge
  // scan above), with Error.isError deleted before kcoro loads (--preload). Before, errorKind
  // threw the read's overflow on only where Error.isError was there (10f74e90: without it,
  // `instanceof` ran a Proxy's traps; isEngineError's walk runs none since 3d2e3730), so here
  // the overflow was taken for "no brand": 'cancelled,cancelled', 1,249 cases in.
  const flags = [
    "--max-opt=0",
    "--stack-size=200",
    "--invocation-count-for-maglev=1",
    "--invocation-count-for-turbofan=1",
  ].join(",");
  const fixture = new URL("./fixtures/stack_edge_scan.ts", import.meta.url).pathname;
  const preload = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      preload,
      "delete (Error as { isError?: unknown }).isError;\n" +
        'if ("isError" in Error) throw new Error("Error.isError still there");\n',
    );
    let allowance = 10_000;
    for (const [mode, ms] of [["cancel-given", 2000], ["abort-given", 2000]] as const) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          `--v8-flags=${flags}`,
          "--allow-all",
          `--preload=${preload}`,
          fixture,
          String(ms),
          mode,
          String(allowance),
        ],
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(ms + allowance + 30_000), // a hang fails the test
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, `${mode}: ${text}${new TextDecoder().decode(out.stderr)}`);
      const { cases, partway, stuck, late } = JSON.parse(text.trim().split("\n").at(-1)!);
      allowance = Math.max(0, allowance - late);
      assert.ok(partway > 0, `${mode}: the scan reached a case stopped part way (of ${cases})`);
      assert.deepEqual(stuck, [], `${mode}: of ${partway} cases stopped part way (${cases} cases)`);
    }
  } finally {
    await Deno.remove(preload);
  }
});

Deno.test("a launch's block whose failure's end throws a RangeError of the caller's, its retry too, fails the job once (taken for an overflow a later run retries, it was dropped: the job active for good)", async () => {
  // As the test above, the caller's `queueMicrotask` throwing a RangeError (no overflow: the
  // retry runs on a microtask's fresh stack). Nothing kept the entry for another retry.
  const original = globalThis.queueMicrotask;
  using reported = catchReported();
  let threw: unknown;
  let outcome = "running";
  const done = coroutineScope((scope) => {
    globalThis.queueMicrotask = () => {
      throw new RangeError("a caller's queueMicrotask");
    };
    try {
      scope.launch(() => {
        throw new Error("boom");
      });
    } catch (e) {
      threw = e;
    }
  }).then(() => "completed", (e) => `rejected: ${(e as Error).message}`);
  void done.then((o) => outcome = o);
  try {
    for (let i = 0; i < 10; i++) await null; // the retry's microtask
  } finally {
    globalThis.queueMicrotask = original;
  }
  await until(() => outcome !== "running", "the scope to end", 5_000);
  assert.equal(outcome, "rejected: boom");
  assert.ok(threw instanceof RangeError, String(threw));
  assert.equal(reported.errors.length, 1);
  assert.match(String(reported.errors[0]), /RangeError: a caller's queueMicrotask/);
});

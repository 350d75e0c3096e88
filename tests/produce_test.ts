// produce and actor: Kotlin's rules, one test per rule, every task counted so that none
// outlives its scope; cancellation reaching a Worker-side receiver of a produced channel. Tasks
// wait on channels, gates or their signal, never on sleeps.
import assert from "node:assert/strict";
import {
  abortListeners,
  assertNotThisError,
  assertSameItems,
  busyUntilAborted,
  callersJob,
  catchReported,
  evalScript,
  JOB_MEMBERS,
  settled,
  until,
  untilAborted,
  within,
  withJobMembersRedefined,
  workerStartMs,
} from "./support.ts";
import {
  type Actor,
  actor,
  CancellationError,
  Channel,
  ClosedReceiveError,
  ClosedSendError,
  CodecError,
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
  InvalidHandleError,
  type Job,
  library,
  produce,
  select,
  supervisorScope,
  type WaitOptions,
} from "../mod.ts";
import { _testWrapLibrarySymbols, librarySymbols } from "../ffi/load.ts";
import { Bridge } from "../src/bridge.ts";
import { encodeCause } from "../src/codec.ts";
import { closedResultOf, destroyedSeenOf, hookChannel } from "../src/channel.ts";
import { producerJobOf } from "../src/produce.ts";
import { handlerCountOf, jobStateOf, type JobSupport, signalOfJob } from "../src/job.ts";

/** A child process (evalScript) that exited by itself, with status 0, having printed "ok". */
function assertPrintedOk(
  res: { signal: string | null; code: number; stdout: string; stderr: string },
) {
  assert.equal(res.signal, null, `the process did not exit by itself: ${res.stderr}`);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "ok", res.stderr);
}

/**
 * Runs `body`, a script against a Worker of tests/fixtures/`fixture` (producer_owner_worker.ts,
 * actor_owner_worker.ts), in a child process (evalScript: the Worker's end must not touch this
 * process's channels, nor its closeLibrary this process's library), and asserts that it printed
 * "ok" and exited by itself. `body` sees `Channel`, `CancellationError`, support.ts's
 * `assertOwnerGone`, `settled`, `until`, `within` and `workerMessages`, and the script's own:
 * - `startWorker(how, what = "the share")`: a Worker of the fixture, sent `how`, once it has
 *   shared its channel: `{ w, saying, share }`, `saying` its messages in whichever order they
 *   come (workerMessages), `share` its first `{ share }` message's (`what` names that wait);
 * - `steadyHandles()` and `handlesBack(before)`: the live channel handles once steady, and a
 *   throw unless they are back to `before` (bounded wait).
 */
async function runWorkerScript(fixture: string, body: string, timeoutMs: number): Promise<void> {
  const res = await evalScript(
    `
    import { CancellationError, Channel } from "./mod.ts";
    import {
      assertOwnerGone, liveChannels, settled, steadyChannels, until, within, workerMessages, workerStartMs,
    } from "./tests/support.ts";
    const url = new URL("./tests/fixtures/${fixture}", "file://" + Deno.cwd() + "/");
    async function startWorker(how, what = "the share") {
      const w = new Worker(url, { type: "module" });
      const saying = workerMessages(w);
      w.postMessage(how);
      const { share } = await within(saying((m) => m?.share !== undefined), workerStartMs, what);
      return { w, saying, share };
    }
    async function steadyHandles() {
      const before = await steadyChannels();
      return before;
    }
    async function handlesBack(before) {
      let now = -1;
      await until(() => (now = liveChannels()) <= before, "channel handles back").catch(() => {});
      if (now !== before) throw new Error("live channel handles: " + now + ", before " + before);
    }
    ${body}
    console.log("ok");
  `,
    { timeoutMs },
  );
  assertPrintedOk(res);
}

/**
 * The end of a scope (`done`, its coroutineScope's promise) in the tests that end a producer's
 * channel under it: `settled(what)` waits (bounded) until it settled and for what it reports
 * later (`laterReports`), and answers "resolved" or its rejection; `cleanUp(scope)`, for a
 * finally, cancels the scope if it has not settled and waits for it.
 */
function watchEnd(done: Promise<unknown>): {
  settled(what: string): Promise<unknown>;
  cleanUp(scope: CoroutineScope | null): Promise<void>;
} {
  let ended = false;
  let outcome: unknown = "resolved";
  done.then(() => ended = true, (e) => {
    outcome = e;
    ended = true;
  });
  return {
    async settled(what) {
      await until(() => ended, what, 10_000);
      await laterReports();
      return outcome;
    },
    async cleanUp(scope) {
      if (ended) return;
      scope?.cancel();
      await done.catch(() => {});
    },
  };
}

/** Live tasks: every producer and actor body in this file is wrapped by `counted`. */
let live = 0;
function counted<A extends unknown[]>(
  block: (...args: A) => unknown,
): (...args: A) => Promise<unknown> {
  return async (...args: A) => {
    live++;
    try {
      return await block(...args);
    } finally {
      live--;
    }
  };
}

/**
 * Lets what a task's end queued run before a test checks that nothing was reported: every abort
 * listener and completion handler of kcoro's runs synchronously as its task ends, before its
 * scope settles, so a report of theirs is made by then; a few turns of 0 ms timers (fired in the
 * order set) also run what they queued (microtasks, 0 ms timers: a hook's later batch). A
 * bounded number of event-loop turns, not a wait for time (it was a 10 ms timer).
 */
async function laterReports(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
}

async function drain<T>(ch: Channel<T>): Promise<T[]> {
  const got: T[] = [];
  for await (const v of ch) got.push(v);
  return got;
}

// --- produce ----------------------------------------------------------------------------------

Deno.test("produce: the channel is closed when the block returns; sent values stay receivable", async () => {
  const got = await coroutineScope(async (scope) => {
    using ch = produce<number>(
      scope,
      counted(async (out: Channel<number>) => {
        for (const v of [1, 2, 3]) await out.send(v);
      }),
      { capacity: 8 },
    );
    // Let the producer run to its end first.
    await until(() => ch.isClosedForSend, "the producer to end (its channel closed for send)");
    assert.equal(ch.isClosedForReceive, false); // 3 values still buffered
    const values = await drain(ch);
    await assert.rejects(ch.receive(), ClosedReceiveError);
    return values;
  });
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(live, 0);
});

Deno.test("produce: the channel is closed when the task completes, after children still sending once the block returned", async () => {
  const got = await coroutineScope(async (scope) => {
    using ch = produce<number>(
      scope,
      counted((out: Channel<number>, task: CoroutineScope) => {
        task.launch(counted(async () => {
          for (const v of [1, 2, 3]) await out.send(v); // after the block has returned
        }));
      }),
    );
    return await drain(ch);
  });
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(live, 0);
});

Deno.test("produce: a failing block closes the channel with its error as cause and fails the scope", async () => {
  const boom = new Error("boom");
  const received: number[] = [];
  let seen: unknown;
  await assert.rejects(
    coroutineScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>) => {
          await out.send(1);
          await out.send(2);
          throw boom;
        }),
        { capacity: 4 },
      );
      // Values sent before the failure are still delivered, then the cause.
      try {
        for await (const v of ch) received.push(v);
      } catch (e) {
        seen = e;
      }
    }),
    (e) => e === boom,
  );
  assert.deepEqual(received, [1, 2]);
  assert.equal(seen, boom);
  assert.equal(live, 0);
});

Deno.test("produce: a block that throws undefined closes the channel with the TypeError its task fails with (it was closed with no cause: receivers saw a clean end)", async () => {
  const received: number[] = [];
  let seen: unknown;
  let failure: unknown;
  await assert.rejects(
    coroutineScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>) => {
          await out.send(1);
          throw undefined;
        }),
        { capacity: 4 },
      );
      try {
        for await (const v of ch) received.push(v);
      } catch (e) {
        seen = e;
      }
    }),
    (e) => {
      failure = e;
      return e instanceof TypeError && /must not be undefined/.test(e.message);
    },
  );
  assert.deepEqual(received, [1]);
  assert.equal(seen, failure); // the failure itself, as for any other error
  assert.equal(live, 0);
});

Deno.test("produce: a child of the task failing closes the channel with that failure itself, as the block's own failure does (Kotlin's ProducerCoroutine.onCancelled)", async () => {
  const boom = new Error("child failed");
  for (const when of ["while the block runs", "after the block returned"]) {
    const gate = Promise.withResolvers<void>();
    let ch!: Channel<number>;
    await assert.rejects(
      coroutineScope(async (scope) => {
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            await out.send(1); // buffered
            task.launch(counted(async () => {
              await gate.promise;
              throw boom;
            }));
            if (when === "while the block runs") await untilAborted(task.signal);
          }),
          { capacity: 4 },
        );
        assert.equal(await ch.receive(), 1);
        gate.resolve();
      }),
      (e) => e === boom,
      when,
    );
    // Before, a CancellationError with the failure as its cause: the task's signal's reason.
    await assert.rejects(ch.receive(), (e) => e === boom, when);
    const got = await ch.receiveCatching();
    assert.equal(got.state, "closed");
    assert.equal((got as { cause?: unknown }).cause, boom, when);
    ch[Symbol.dispose]();
  }
  assert.equal(live, 0);
});

Deno.test("produce: a sibling's failure cancels the task: the channel is closed with the CancellationError (its cause the failure), as Kotlin closes it with the parent's cancellation", async () => {
  const boom = new Error("sibling failed");
  let ch!: Channel<number>;
  await assert.rejects(
    coroutineScope(async (scope) => {
      ch = produce<number>(
        scope,
        counted((_out: Channel<number>, task: CoroutineScope) => untilAborted(task.signal)),
      );
      await null;
      scope.launch(counted(() => Promise.reject(boom)));
    }),
    (e) => e === boom,
  );
  await assert.rejects(ch.receive(), (e) => e instanceof CancellationError && e.cause === boom);
  ch[Symbol.dispose]();
  assert.equal(live, 0);
});

Deno.test("produce: cancelling the scope closes the channel with the cancellation, waking the producer; sent values stay receivable", async () => {
  let producerSaw: unknown;
  const ready = Promise.withResolvers<void>();
  let ch!: Channel<number>;
  const scope = coroutineScope(async (s) => {
    ch = produce<number>(
      s,
      counted(async (out: Channel<number>) => {
        await out.send(1); // buffered
        ready.resolve();
        try {
          await out.send(2); // full: waits until the task's cancellation wakes it
        } catch (e) {
          producerSaw = e;
          throw e;
        }
      }),
      { capacity: 1 },
    );
    await ready.promise;
    s.cancel();
  });
  await assert.rejects(scope, CancellationError);
  assert.ok(producerSaw instanceof CancellationError, String(producerSaw));
  // Closed, not cancelled (Kotlin's ProducerCoroutine): the buffered value is still there, the
  // aborted send's value never arrives, then receivers get the cancellation as the cause.
  assert.equal(ch.isClosedForSend, true);
  assert.equal(ch.isClosedForReceive, false);
  assert.equal(await ch.receive(), 1);
  await assert.rejects(ch.receive(), (e) => e === producerSaw);
  assert.equal(live, 0);
  ch[Symbol.dispose]();
});

Deno.test("produce: a task cancelled after its block returned, while a child of it still runs, closes the channel at once", async () => {
  const gate = Promise.withResolvers<void>();
  await assert.rejects(
    coroutineScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted((_out: Channel<number>, task: CoroutineScope) => {
          task.launch(counted(() => gate.promise)); // ignores the cancellation until let go
        }),
        { capacity: 4 },
      );
      try {
        const task = scope.job.children[0];
        for (let i = 0; i < 100 && task.state !== "completing"; i++) await null;
        assert.equal(task.state, "completing"); // the block has returned; the task waits for the child
        scope.cancel();
        // Closed at once with the cancellation (the rule), not once the child has ended: a
        // receiver waiting meanwhile would wait on a producer that will never send.
        assert.equal(ch.isClosedForSend, true);
        const got = ch.tryReceive();
        assert.equal(got.state, "closed");
        assert.ok((got as { cause?: unknown }).cause instanceof CancellationError);
      } finally {
        gate.resolve();
      }
    }),
    CancellationError,
  );
  assert.equal(live, 0);
});

Deno.test("produce: the order of the close: a return and a failure (the block's or a child's) close the channel once the task is final, its children done, as Kotlin's onCompleted and onCancelled do; a cancellation closes it at once, while children of the task still run", async () => {
  // README, "Producers, actors and native scopes from TypeScript": the order, as documented.
  // Before, a failure closed it at once too: a receiver saw the block's error while the task
  // still read active, a child's while it was cancelling, its other children still running.
  for (const how of ["return", "block fails", "child fails", "cancelled"] as const) {
    const gate = Promise.withResolvers<void>(); // holds a child that ignores the cancellation
    const boom = new Error(how);
    let lingering = true;
    const seen: string[] = [];
    const outcome = coroutineScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted((_out: Channel<number>, task: CoroutineScope) => {
          task.launch(counted(async () => {
            await gate.promise;
            lingering = false;
          }));
          if (how === "child fails") task.launch(counted(() => Promise.reject(boom)));
          if (how === "block fails") throw boom;
        }),
        { capacity: 4 },
      );
      const job = scope.job.children[0];
      const settled = ch.receiveCatching().then((r) => {
        // Final for a return or a failure; cancelling for a cancellation.
        const state = job.isCompleted ? job.state : "not final";
        const cause = r.state === "closed" && r.cause === boom ? " with the failure" : "";
        seen.push(`${r.state}${cause} while ${state}${lingering ? ", a child still running" : ""}`);
      });
      // Bounded turns: the block has returned or failed, the task waits for its lingering child.
      for (let i = 0; i < 100 && job.state === "active"; i++) await null;
      if (how === "cancelled") job.cancel();
      for (let i = 0; i < 100 && seen.length === 0; i++) await null;
      gate.resolve();
      await settled;
      await job.join();
      assert.equal(job.state, how === "return" ? "completed" : "cancelled", how);
    });
    if (how === "return" || how === "cancelled") await outcome;
    else await assert.rejects(outcome, (e) => e === boom, how);
    assert.deepEqual(
      seen,
      [
        how === "return"
          ? "closed while completed"
          : how === "cancelled"
          ? "closed while not final, a child still running"
          : "closed with the failure while cancelled", // a failed job reads cancelled
      ],
      how,
    );
  }
  assert.equal(live, 0);
});

Deno.test("produce: cancelled by its scope and then failing (a child of the task fails while it is cancelling), the task ends with the failure (the first failure wins over a cancellation), but its channel keeps the cancellation it closed with at once: receivers get that CancellationError, where Kotlin's, after a cancel of its scope, get the failure", async () => {
  // README, "Producers, actors and native scopes from TypeScript": where kcoro differs from
  // Kotlin, whose ProducerCoroutine.onCancelled closes the channel at completion with the job's
  // final cause (JobSupport's root cause: the first exception that is no cancellation). The
  // producer's own job.cancel() cancels the channel instead (the test after this one).
  const gate = Promise.withResolvers<void>(); // holds a child that ignores the cancellation
  const boom = new Error("a child failed while the producer was cancelling");
  let launched = false;
  const got: unknown[] = [];
  let cause: unknown = "not final";
  await assert.rejects(
    coroutineScope(async (scope) => {
      // This block waits on no signal of the scope's: it runs on through the scope's cancel.
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>, task: CoroutineScope) => {
          await out.send(1);
          task.launch(counted(async () => {
            await gate.promise;
            throw boom;
          }));
          launched = true;
        }),
        { capacity: 4 },
      );
      const job = scope.job.children[0];
      for (let i = 0; i < 100 && !launched; i++) await null; // bounded turns
      scope.cancel();
      // Closed at once, the child still running: what was sent, then the cancellation.
      got.push(await ch.receive());
      const last = await ch.receiveCatching();
      got.push(last.state, last.state === "closed" ? last.cause : undefined);
      assert.equal(job.state, "cancelling", "its child still runs");
      gate.resolve();
      await job.join();
      job.invokeOnCompletion((c) => cause = c);
      // A receive after the failure: still the cancellation.
      const again = await ch.receiveCatching();
      got.push(again.state === "closed" ? again.cause === got[2] : again.state);
    }),
    (e) => e === boom,
  );
  assert.equal(cause, boom, "the task's cause is the failure");
  assert.equal(got[0], 1);
  assert.equal(got[1], "closed");
  assert.ok(got[2] instanceof CancellationError, String(got[2]));
  assert.equal(got[3], true, "the same CancellationError after the failure");
  assert.equal(live, 0);
});

Deno.test("produce: the producer's own job.cancel() cancels its channel at once, as Kotlin's ChannelCoroutine.cancelInternal: buffered values go to onUndeliveredElement, receivers reject with the very CancellationError the task ends with, also after its block returned while a child still runs; its scope's cancel closes it instead, keeping them", async () => {
  // README, "Producers, actors and native scopes from TypeScript". Before, both closed it: the
  // producer's own cancel() left its buffer receivable.
  for (const when of ["block running", "block returned, a child running"] as const) {
    for (const how of ["job.cancel()", "job.cancel(cause)", "task.cancel()", "scope's cancel"]) {
      const what = `${how}, ${when}`;
      const gate = Promise.withResolvers<void>(); // holds the block or the child
      const dropped: number[] = [];
      let sent = false;
      let taskCause: unknown = "not final";
      let got: unknown;
      await coroutineScope(async (scope) => {
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            await out.send(1);
            await out.send(2);
            if (how === "task.cancel()") {
              task.launch(counted(async () => {
                await gate.promise;
              }));
              sent = true;
              task.cancel();
              return;
            }
            if (when === "block returned, a child running") {
              task.launch(counted(async () => {
                await gate.promise;
              }));
            } else {
              sent = true;
              await gate.promise;
            }
            sent = true;
          }),
          { capacity: 4, onUndeliveredElement: (v) => dropped.push(v) },
        );
        const job = scope.job.children[0];
        job.invokeOnCompletion((c) => taskCause = c);
        await until(() => sent, `${what}: sent`);
        if (how === "job.cancel()") job.cancel();
        else if (how === "job.cancel(cause)") job.cancel(new Error("stop"));
        else if (how === "scope's cancel") scope.cancel();
        got = await ch.receiveCatching();
        gate.resolve();
        await job.join();
        if (how === "scope's cancel") {
          // Closed: what was sent stays receivable, then the cancellation.
          assert.deepEqual(dropped, [], what);
          assert.equal((got as { value?: number }).value, 1, what);
          assert.equal(await ch.receive(), 2, what);
          const last = await ch.receiveCatching();
          assert.ok(last.state === "closed" && last.cause instanceof CancellationError, what);
          return;
        }
        // Cancelled: nothing receivable; the one error everywhere.
        assert.deepEqual(dropped, [1, 2], what);
        const r = got as { state: string; cause?: unknown };
        assert.equal(r.state, "closed", what);
        assert.ok(r.cause instanceof CancellationError, `${what}: ${String(r.cause)}`);
        assert.equal(r.cause, taskCause, `${what}: the task's own cancellation`);
        if (how === "job.cancel(cause)") {
          assert.equal(((r.cause as Error).cause as Error).message, "stop", what);
        }
        const later = await ch.receive().then(() => "received", (e) => e);
        assert.equal(later, taskCause, `${what}: a later receive`);
      }).catch((e) => {
        // The scope's cancel cancels the scope itself too.
        if (how !== "scope's cancel" || !(e instanceof CancellationError)) throw e;
      });
      assert.ok(taskCause instanceof CancellationError, what);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce: after the block's failure, while the channel stays open for a child of the task, that child's send rejects with the cancellation even with room in the buffer, its value to onUndeliveredElement (Kotlin's send, which does not check for cancellation when it does not suspend, would buffer it)", async () => {
  // README, "Producers, actors and native scopes from TypeScript": a send made once the task was
  // cancelled, as documented there, where kcoro differs from Kotlin.
  const gate = Promise.withResolvers<void>(); // holds a child that ignores the cancellation
  const boom = new Error("block fails");
  const dropped: number[] = [];
  let childSend: unknown = "not made";
  const got: string[] = [];
  await assert.rejects(
    coroutineScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>, task: CoroutineScope) => {
          task.launch(counted(async () => {
            await gate.promise;
            childSend = await out.send(2).then(() => "sent", (e) => e);
          }));
          await out.send(1); // buffered: room for 3 more
          throw boom;
        }),
        { capacity: 4, onUndeliveredElement: (v) => dropped.push(v) },
      );
      const job = scope.job.children[0];
      for (let i = 0; i < 100 && job.state === "active"; i++) await null; // bounded turns
      got.push(`task ${job.state}`, `channel closed ${ch.isClosedForSend}`);
      gate.resolve();
      for (let i = 0; i < 100 && childSend === "not made"; i++) await null;
      for (;;) {
        const r = await ch.receiveCatching();
        if (r.state === "ok") got.push(`received ${r.value}`);
        else {
          got.push(`closed${r.cause === boom ? " with the failure" : ""}`);
          break;
        }
      }
    }),
    (e) => e === boom,
  );
  assert.deepEqual(got, [
    "task cancelling",
    "channel closed false",
    "received 1",
    "closed with the failure",
  ]);
  assert.ok(childSend instanceof CancellationError, `child's send: ${childSend}`);
  assert.deepEqual(dropped, [2]);
  assert.equal(live, 0);
});

Deno.test("produce: sends by children of the task are bound to it too, also after the block returned: its cancellation wakes them (the scope hung)", async () => {
  // Kotlin's `produce { launch { send(x) } }`: the child's send is cancelled with the producer.
  let state = "pending";
  let childSaw: unknown;
  let sending = false;
  const go = Promise.withResolvers<void>();
  let ch!: Channel<number>;
  const outcome = coroutineScope(async (scope) => {
    ch = produce<number>(
      scope,
      counted((out: Channel<number>, task: CoroutineScope) => {
        task.launch(counted(async () => {
          await go.promise;
          try {
            sending = true;
            await out.send(1); // rendezvous: no receiver will ever take it
          } catch (e) {
            childSaw = e;
            throw e;
          }
        }));
      }),
    );
    const task = scope.job.children[0];
    for (let i = 0; i < 100 && task.state !== "completing"; i++) await null;
    go.resolve(); // the block has returned (unless the loop ran out: state says so below)
    for (let i = 0; i < 100 && !sending; i++) await null;
    await null;
    scope.cancel();
  }).then(() => state = "resolved", (e) => state = e?.name ?? String(e));
  try {
    await until(() => state !== "pending", "the scope to settle", 5_000);
  } finally {
    ch[Symbol.dispose](); // (disposing cancels the channel, which would wake the send too)
    await outcome;
  }
  assert.equal(state, "CancellationError");
  assert.ok(childSaw instanceof CancellationError, String(childSaw));
  assert.equal(live, 0);
});

Deno.test("produce: a send with a signal of its own is woken by either signal", async () => {
  const own = new AbortController();
  const seen: unknown[] = [];
  const gate = Promise.withResolvers<void>();
  await coroutineScope(async (scope) => {
    using ch = produce<number>(
      scope,
      counted(async (out: Channel<number>) => {
        await out.send(1);
        try {
          await out.send(2, { signal: own.signal }); // rendezvous: nobody receives it
        } catch (e) {
          seen.push(e);
        }
        gate.resolve();
        await out.send(3, {}); // options without a signal: still bound to the task
      }),
    );
    assert.equal(await ch.receive(), 1);
    own.abort(new Error("own"));
    await gate.promise;
    assert.equal(await ch.receive(), 3);
  });
  assert.equal((seen[0] as Error).message, "own");
  await assert.rejects(
    coroutineScope(async (scope) => {
      using ch = produce<number>(scope, async (out) => {
        await out.send(1, 7 as never); // malformed options still get send's own TypeError
      });
      await ch.receive();
    }),
    /Cannot send: options must be an object, received 7/,
  );
  assert.equal(live, 0);
});

Deno.test("produce: the producer's send checks the caller's options as a Channel's send does (inherited ones too)", async () => {
  // Before, it checked a copy of them (`{ ...options, signal }`), which lost what they inherit:
  // options inheriting an index were sent with, where a Channel's send refuses them, and the
  // caller's `signal` getter ran twice. Now both sends answer the same.
  const cases: [string, () => object][] = [
    ["an inherited index", () => Object.create([1])],
    ["an unknown option of its own", () => ({ bogus: 1 })],
    ["an inherited signal that is none", () => Object.create({ signal: 1 })],
  ];
  const outcome = (p: Promise<void>) => p.then(() => "sent", (e) => `${e.name}: ${e.message}`);
  for (const [what, make] of cases) {
    using plain = new Channel<number>(1);
    const expected = await outcome(plain.send(1, make() as WaitOptions));
    assert.notEqual(expected, "sent", what);
    let got: string | undefined;
    await coroutineScope(async (scope) => {
      using ch = produce<number>(scope, async (out) => {
        got = await outcome(out.send(1, make() as WaitOptions));
      }, { capacity: 1 }); // a send that goes through does not wait
      await until(() => got !== undefined, "the producer's send to settle", 5_000);
      ch.tryReceive();
    });
    assert.equal(got, expected, what);
  }
  // An inherited signal counts, and the caller's `signal` getter runs once, as on a Channel.
  const own = new AbortController();
  let reads = 0;
  const options = Object.create(Object.defineProperty({}, "signal", {
    get: () => (reads++, own.signal),
  })) as WaitOptions;
  let seen: unknown;
  await coroutineScope(async (scope) => {
    using ch = produce<number>(scope, async (out) => {
      seen = await out.send(1, options).then(() => "sent", (e) => e); // rendezvous: nobody receives
    });
    await until(() => reads > 0, "the producer's send to read its signal", 5_000);
    own.abort(new Error("own"));
    await until(() => seen !== undefined, "the producer's send to settle", 5_000);
    ch.tryReceive();
  });
  assert.equal((seen as Error).message, "own");
  assert.equal(reads, 1);
});

Deno.test("produce: the producer's send rejects, never throws, when the caller's options throw (a getter, a proxy trap)", async () => {
  // Its send returns a Promise: what the caller's own options throw is a rejection, as a
  // Channel's send rejects. Before, the producer's send read `options.signal` and copied the
  // options outside any try, and threw at the call.
  const mine = new Error("the caller's getter");
  const getter = Object.defineProperty({}, "signal", {
    get: () => {
      throw mine;
    },
  });
  const trap = new Proxy({ signal: undefined }, {
    ownKeys: () => {
      throw mine;
    },
  });
  const outcomes: unknown[] = [];
  await coroutineScope(async (scope) => {
    using ch = produce<number>(scope, async (out) => {
      for (const options of [getter, trap]) {
        let p: Promise<void> | undefined;
        try {
          p = out.send(1, options as never);
        } catch (e) {
          outcomes.push(["threw", e]);
        }
        if (p !== undefined) await p.catch((e) => outcomes.push(["rejected", e]));
      }
    });
    for await (const _ of ch) assert.fail("nothing is sent");
  });
  assert.deepEqual(outcomes, [["rejected", mine], ["rejected", mine]]);
});

Deno.test("produce: the producer's send refuses a signal made from AbortSignal's prototype as a Channel's send does: the named TypeError, rejected", async () => {
  // It passed the producer's instanceof, and AbortSignal.any's own TypeError (no "Cannot send")
  // was the rejection, where a Channel's send rejects with the named one.
  const fake = Object.create(AbortSignal.prototype) as AbortSignal;
  const outcomes: unknown[] = [];
  await coroutineScope(async (scope) => {
    using ch = produce<number>(scope, async (out) => {
      await out.send(1, { signal: fake }).catch((e) => outcomes.push(e));
    });
    for await (const _ of ch) assert.fail("nothing is sent");
  });
  assert.equal(outcomes.length, 1);
  assert.ok(outcomes[0] instanceof TypeError);
  assert.match(
    (outcomes[0] as Error).message,
    /^Cannot send: signal must be an AbortSignal, received /,
  );
});

Deno.test("produce: sends given signals of their own hold nothing once settled, a fresh signal per send too", async () => {
  // A combined signal per send (AbortSignal.any) stayed alive until the macrotask ended, and a
  // producer and consumer trading values in microtasks never ended it; one per caller signal
  // (the next fix) still kept each alive while the task's signal lived (Deno's any() keeps what
  // it made while a source lives): a fresh signal per send held ~0.9 KB each, for as long as
  // the producer ran. No AbortSignal.any now, and the heap does not grow.
  const any = AbortSignal.any;
  let made = 0;
  AbortSignal.any = (signals: AbortSignal[]) => {
    made++;
    return any.call(AbortSignal, signals);
  };
  try {
    const own = new AbortController();
    await coroutineScope(async (scope) => {
      using ch = produce<number>(scope, async (out) => {
        for (let i = 0; i < 100; i++) await out.send(i, { signal: own.signal });
        for (let i = 0; i < 100; i++) {
          await out.send(i, { signal: new AbortController().signal });
        }
      }, { capacity: 4 });
      let sum = 0;
      for await (const v of ch) sum += v;
      assert.equal(sum, 2 * 4950);
    });
  } finally {
    AbortSignal.any = any;
  }
  assert.equal(made, 0);
  const res = await evalScript(
    `
    import { coroutineScope, produce } from "./mod.ts";
    const heap = () => { globalThis.gc(); globalThis.gc(); return Deno.memoryUsage().heapUsed; };
    await coroutineScope(async (scope) => {
      const n = 30_000;
      const ch = produce(scope, async (out) => {
        for (let i = 0; i < n + 1_000; i++) await out.send(i, { signal: new AbortController().signal });
      }, { capacity: 16 });
      for (let i = 0; i < 1_000; i++) await ch.receive();
      const before = heap();
      for (let i = 0; i < n; i++) await ch.receive();
      const grew = heap() - before;
      // ~26 MiB before; a bound far above noise.
      if (grew > 6 * 2 ** 20) throw new Error("30,000 sends grew the heap by " + grew + " bytes");
    });
  `,
    { v8Flags: ["--expose-gc"], timeoutMs: 120_000 },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("produce: a send given its own signal and left unawaited reports its rejection as unhandled, as any send's", async () => {
  // The send settled its signal listeners with handlers on the promise it returned, which made
  // that promise's rejection handled: a producer's fire-and-forget send failed silently.
  const unhandled: unknown[] = [];
  const onUnhandled = (ev: PromiseRejectionEvent) => {
    ev.preventDefault();
    unhandled.push(ev.reason);
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    const own = new AbortController();
    const reason = new Error("own abort");
    await coroutineScope(async (scope) => {
      let sending = false;
      using ch = produce<number>(scope, async (out) => {
        void out.send(1, { signal: own.signal }); // nobody receives: it waits until the abort
        sending = true;
        await untilAborted(own.signal).catch(() => {});
      });
      await until(() => sending, "the producer's send to wait", 5_000);
      own.abort(reason);
      await ch.receiveCatching();
    });
    await until(() => unhandled.length > 0, "the unhandled rejection", 5_000);
    assertSameItems(unhandled, [reason]);
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
});

Deno.test("produce: cancelling the channel cancels the producer, which is not a failure", async () => {
  // The producer gets the channel's CancellationError, which carries a cause that is not one
  // (its receivers' error: the next test), not a job-made "Cancelled: consumer is done".
  const cause = new Error("consumer is done");
  let cancelled: unknown;
  await coroutineScope((scope) => {
    const ch = produce<number>(
      scope,
      counted(async (_out: Channel<number>, task: CoroutineScope) => {
        try {
          await untilAborted(task.signal);
        } catch (e) {
          cancelled = e;
          throw e;
        }
      }),
    );
    ch.cancel(cause);
  }); // resolves: the producer's cancellation does not fail the scope
  assert.ok(cancelled instanceof CancellationError);
  assert.equal((cancelled as Error).message, "Channel was cancelled");
  assert.equal((cancelled as Error).cause, cause);
  assert.equal(live, 0);
});

Deno.test("produce: a cancel of its channel cancels the producer with the very error the channel's receivers get, with or without a cause, by its consumer or a copy's cancel (the watch)", async () => {
  // Kotlin's ProducerCoroutine is cancelled with its channel's cancellation exception, as an
  // actor's task is with its mailbox's. Before, the task was cancelled with the raw cause: a
  // cancel() without one gave the producer "Cancelled" and one with a plain Error "Cancelled:
  // <message>", while receivers got "Channel was cancelled".
  const hows = ["cancel()", "cancel(Error)", "cancel(CancellationError)", "copy.cancel()"];
  for (const how of hows) {
    const given = how === "cancel(Error)"
      ? new Error("consumer is done")
      : new CancellationError("stop");
    let reason: unknown = undefined;
    let signalReason: unknown = undefined;
    let received: unknown = undefined;
    let receivedByCopy: unknown = undefined;
    await within(
      coroutineScope(async (scope) => {
        let ready = false;
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            if (how === "copy.cancel()") out.share(); // escaped: watched from here on
            ready = true;
            try {
              await untilAborted(task.signal); // busy, not sending
            } catch (e) {
              reason = e;
              signalReason = task.signal.reason;
              throw e;
            }
          }),
          { capacity: 1 },
        );
        await until(() => ready, `${how}: the producer's start`, 10_000);
        // A receive waiting at the cancel, and one after it: both get the channel's one error.
        const waiting = ch.receive().then(() => "received", (e) => e);
        if (how === "copy.cancel()") {
          using copy = Channel.from(ch.share());
          copy.cancel();
          receivedByCopy = await copy.receive().then(() => "received", (e) => e);
        } else if (how === "cancel()") ch.cancel();
        else ch.cancel(given);
        received = await waiting;
        const after = await ch.receive().then(() => "received", (e) => e);
        assert.equal(after, received, `${how}: a receive after the cancel`);
      }),
      20_000,
      `${how}: the scope`,
    ); // resolves: a cancelled producer is no failure
    assert.ok(received instanceof CancellationError, `${how}: ${String(received)}`);
    assert.equal(reason, received, `${how}: the producer's error is the receivers' one`);
    assert.equal(signalReason, received, `${how}: the task's signal's reason`);
    if (how === "copy.cancel()") assert.equal(receivedByCopy, received, how);
    if (how === "cancel(CancellationError)") assert.equal(received, given, how);
    if (how === "cancel(Error)") assert.equal((received as Error).cause, given, how);
  }
  assert.equal(live, 0);
});

/**
 * A task's cancel `reason` when a cancel(`cancelCause`) was its cancel: the cause itself when a
 * CancellationError, else a "Channel was cancelled" carrying it (or none).
 */
function assertCancelledBy(reason: unknown, cancelCause: unknown, what: string): void {
  if (cancelCause instanceof CancellationError) assert.equal(reason, cancelCause, what);
  else {
    assert.equal((reason as Error).message, "Channel was cancelled", what);
    assert.equal((reason as Error).cause, cancelCause, what);
  }
}

/**
 * What a receive answers on a channel closed (with `closeCause`, or none) and cancelled after:
 * the close's outcome, as Kotlin's first cause stays (a cancel after a close only drops the
 * buffered values): the close cause itself, or a ClosedReceiveError.
 */
function assertKeepsClose(received: unknown, closeCause: unknown, what: string): void {
  if (closeCause === undefined) {
    assert.ok(received instanceof ClosedReceiveError, `${what}: ${String(received)}`);
  } else assert.equal(received, closeCause, what);
}

Deno.test("produce: a cancel of a channel closed before (by its producer, with a cause or not, locally, shared, or by a copy) cancels the producer with the consumer's cause, as Kotlin's ChannelCoroutine.cancel does; receivers keep the close's cause", async () => {
  // Kotlin's `ChannelCoroutine.cancel(cause)` cancels the coroutine with the consumer's cause
  // whatever the channel's state (`cancelInternal`). Before, a channel closed first gave the
  // producer the receivers' error: the close cause wrapped (or none), the consumer's cause lost.
  const closes = ["close()", "close(Error)", "close(CancellationError)", "copy.close(Error)"];
  const cancels = ["cancel()", "cancel(Error)", "cancel(CancellationError)"];
  for (const shared of [false, true]) {
    for (const closing of closes) {
      if (closing === "copy.close(Error)" && !shared) continue;
      for (const cancelling of cancels) {
        const what = `${shared ? "shared" : "local"}, ${closing} then ${cancelling}`;
        const closeCause = closing === "close()"
          ? undefined
          : closing === "close(CancellationError)"
          ? new CancellationError("producer stops")
          : new Error("producer is done");
        const cancelCause = cancelling === "cancel()"
          ? undefined
          : cancelling === "cancel(Error)"
          ? new Error("consumer is done")
          : new CancellationError("consumer stops");
        let reason: unknown = undefined;
        let signalReason: unknown = undefined;
        let received: unknown = undefined;
        await within(
          coroutineScope(async (scope) => {
            let closed = false;
            using ch = produce<number>(
              scope,
              counted(async (out: Channel<number>, task: CoroutineScope) => {
                if (closing === "copy.close(Error)") {
                  using copy = Channel.from<number>(out.share());
                  copy.close(closeCause);
                } else {
                  if (shared) out.share(); // escaped: a native channel, watched
                  out.close(closeCause);
                }
                closed = true;
                try {
                  await untilAborted(task.signal); // busy after its close, not sending
                } catch (e) {
                  reason = e;
                  signalReason = task.signal.reason;
                  throw e;
                }
              }),
              { capacity: 1 },
            );
            await until(() => closed, `${what}: the producer's close`, 10_000);
            ch.cancel(cancelCause);
            received = await ch.receive().then(() => "received", (e) => e);
          }),
          20_000,
          `${what}: the scope`,
        ); // resolves: a cancelled producer is no failure
        assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
        assert.equal(signalReason, reason, `${what}: the task's signal's reason`);
        // The consumer's cause: itself when a CancellationError, else carried.
        assertCancelledBy(reason, cancelCause, what);
        // Receivers keep what the close left (the first cause wins, as Kotlin's): its cause
        // itself, or a ClosedReceiveError. Before, a CancellationError carrying it.
        assertKeepsClose(received, closeCause, what);
      }
    }
  }
  assert.equal(live, 0);
});

/**
 * The cases of the tests of a cancel made elsewhere (native code's) before the task's own
 * cancel(cause) in the same turn: each native end, then a cancel with no cause, an Error
 * (`error`, its message) or a CancellationError (`cancellation`, its message).
 */
function firstCancelCases(error: string, cancellation: string) {
  return (["kc_chan_cancel", "kc_chan_destroy", "kc_chan_close"] as const).flatMap((native) =>
    ([
      ["cancel()", undefined],
      ["cancel(Error)", new Error(error)],
      ["cancel(CancellationError)", new CancellationError(cancellation)],
    ] as [string, Error | undefined][]).map(([cancelling, cancelCause]) => ({
      native,
      what: `${native} then ${cancelling}`,
      cancelCause,
    }))
  );
}

/** Native code's `native` (kc_chan_cancel, kc_chan_destroy or kc_chan_close) of handle `h`. */
function endNatively(
  native: "kc_chan_cancel" | "kc_chan_destroy" | "kc_chan_close",
  h: number,
  what: string,
): void {
  const sym = library().symbols("test");
  if (native === "kc_chan_cancel") assert.equal(sym.kc_chan_cancel(h), 0, what);
  else if (native === "kc_chan_destroy") assert.equal(sym.kc_chan_destroy(h), 0, what);
  else assert.equal(sym.kc_chan_close(h), 1, what);
}

/**
 * The task's cancel `reason` and a receive's error after native code's `native` then the task's
 * own cancel(`cancelCause`): a native cancel or destroy is the first cancel (its error, the
 * receivers', no cause stored); after a native close the task's cancel is (its
 * CancellationError, or one whose cause is `cancelCause`).
 */
function assertFirstCancel(
  native: string,
  cancelCause: unknown,
  reason: unknown,
  received: unknown,
  what: string,
): void {
  assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
  // After a native close the receivers keep the close's outcome (no cause: ClosedReceiveError).
  if (native === "kc_chan_close") assertKeepsClose(received, undefined, what);
  else assert.ok(received instanceof CancellationError, `${what}: ${String(received)}`);
  if (native !== "kc_chan_close") {
    // The first cancel's error, the receivers' (native code stored no cause).
    assert.equal(reason, received, what);
    assert.equal((received as Error).cause, undefined, what);
  } else assertCancelledBy(reason, cancelCause, what);
}

Deno.test("produce: a cancel made elsewhere (native code's kc_chan_cancel or kc_chan_destroy) that the watch has not told yet, before the consumer's cancel, is the first: the producer gets the channel's error, its receivers' one; native code's close before it is no cancel, and the producer gets the consumer's cause", async () => {
  // Kotlin's coroutine is cancelled by the first cancel of its channel; a later cancel(cause) does
  // nothing. The consumer's cancel in the same turn as native code's (its record in the ring, not
  // drained) read the channel as closed only, and gave the producer the consumer's cause while
  // its receivers got the native cancel's error.
  for (
    const { native, what, cancelCause } of firstCancelCases("consumer is done", "consumer stops")
  ) {
    let reason: unknown = undefined;
    let received: unknown = undefined;
    await within(
      coroutineScope(async (scope) => {
        const ready = Promise.withResolvers<void>();
        using ch = produce<number>(
          scope,
          counted(async (_out: Channel<number>, task: CoroutineScope) => {
            ready.resolve();
            await busyUntilAborted(task.signal, (e) => reason = e); // busy, not sending
          }),
          { capacity: 1 },
        );
        await ready.promise;
        endNatively(native, ch.handle, what); // escaped: native, watched
        ch.cancel(cancelCause); // the same turn: the watch has not told it yet
        received = await ch.receive().then(() => "received", (e) => e);
      }),
      20_000,
      `${what}: the scope`,
    ); // resolves: a cancelled producer is no failure
    assertFirstCancel(native, cancelCause, reason, received, what);
  }
  assert.equal(live, 0);
});

Deno.test("produce: a block cancelling (or disposing) its own channel before its first await cancels its task too: the task is known from its start, not only once launch returned", async () => {
  // The scope's launch runs the block at once, and the producer's job was set only after launch
  // returned: the block's cancel before its first await cancelled the channel and not the task,
  // which, busy elsewhere, ran on, and the scope waited for it for good.
  for (const how of ["cancel(cause)", "cancel()", "dispose"] as const) {
    const given = new CancellationError("stop");
    let reason: unknown = undefined;
    let ch!: Channel<number>;
    await within(
      coroutineScope((scope) => {
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            if (how === "cancel(cause)") out.cancel(given);
            else if (how === "cancel()") out.cancel();
            else out[Symbol.dispose]();
            await busyUntilAborted(task.signal, (e) => reason = e); // busy, not sending
          }),
          { capacity: 1 },
        );
      }),
      10_000,
      `${how}: the producer's end`,
    ); // resolves: a cancelled producer is no failure
    assert.ok(reason instanceof CancellationError, `${how}: ${String(reason)}`);
    if (how === "cancel(cause)") assert.equal(reason, given, how);
    if (how !== "dispose") {
      assert.equal(ch.isClosedForReceive, true, how);
      ch[Symbol.dispose]();
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce: disposing the channel cancels a producer still sending, without failing the scope", async () => {
  let sent = 0;
  const first = await coroutineScope(async (scope) => {
    using ch = produce<number>(
      scope,
      counted(async (out: Channel<number>) => {
        for (let i = 0;; i++) {
          await out.send(i);
          sent++;
        }
      }),
    );
    return await ch.receive();
  }); // `using` disposed the channel before the scope waited for the producer
  assert.equal(first, 0);
  assert.ok(sent <= 1, `sent ${sent}`);
  assert.equal(live, 0);
});

Deno.test("produce: in a cancelled scope the block never runs and the channel is closed with the cancellation", async () => {
  await using scope = createScope();
  scope.cancel();
  let ran = false;
  using ch = produce<number>(scope, () => {
    ran = true;
  });
  assert.equal(ran, false);
  assert.equal(ch.isClosedForSend, true);
  await assert.rejects(ch.receive(), CancellationError);
  assert.equal(ch.close(), false); // already closed: by the task's end, not left open
});

Deno.test("produce: a failing producer under a supervisor still closes its channel with the cause, which its receivers get and nothing reports; one whose channel was closed before reports it", async () => {
  // Kotlin's produce exposes its failure to its consumer, as async does: ProducerCoroutine's
  // onCancelled(cause, handled) reports it only when its channel's close was not processed (the
  // channel closed before). Before, kcoro reported it too, as a launch's.
  for (const closedFirst of [false, true]) {
    const what = closedFirst ? "closed by the block first" : "open";
    const boom = new Error(`only this one: ${what}`);
    using reported = catchReported();
    await supervisorScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted((out: Channel<number>) => {
          if (closedFirst) out.close();
          return Promise.reject(boom);
        }),
      );
      const r = await ch.receiveCatching();
      assert.equal(r.state, "closed", what);
      assert.equal(r.cause, closedFirst ? undefined : boom, what);
    });
    await laterReports();
    assertSameItems(reported.errors, closedFirst ? [boom] : [], what);
  }
  assert.equal(live, 0);
});

Deno.test("produce: a failure no parent takes, left to its channel, is reported where the channel was closed, cancelled or disposed before the task's end closed it with the failure (a completion handler of the block's): never lost", async () => {
  // The failure is kept from the exception handler as the task is final (its channel open then),
  // and the channel is closed with it by the producer's completion handler, after the ones the
  // block added before its first await. One of those that closed the channel (cleanly) left the
  // failure nowhere: receivers read a clean close and nothing was reported. Kotlin checks and
  // closes in one step (ProducerCoroutine.onCancelled: reported where the close was not processed).
  const ends: [string, (out: Channel<number>) => void][] = [
    ["closed", (out) => out.close()],
    ["cancelled", (out) => out.cancel()],
    ["disposed", (out) => out[Symbol.dispose]()],
  ];
  for (const [what, endIt] of ends) {
    const boom = new Error(`reported: ${what}`);
    using reported = catchReported();
    const gate = Promise.withResolvers<void>();
    await supervisorScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>, task: CoroutineScope) => {
          task.job.invokeOnCompletion(() => endIt(out));
          await gate.promise;
          throw boom;
        }),
      );
      gate.resolve();
      const r = await ch.receiveCatching().catch((e) => ({ state: "rejected", e }));
      assert.notEqual(r.state, "ok", what);
      assert.notEqual("cause" in r ? r.cause : "e" in r ? r.e : undefined, boom, what);
    });
    await laterReports();
    assertSameItems(reported.errors, [boom], what);
  }
  assert.equal(live, 0);
});

Deno.test("produce: cancelling the scope reaches a Worker-side receiver of the channel", async () => {
  const worker = new Worker(new URL("./fixtures/scope_worker.ts", import.meta.url), {
    type: "module",
  });
  const messages: Record<string, unknown>[] = [];
  const next = () =>
    new Promise<Record<string, unknown>>((resolve) => {
      worker.onmessage = (e) => {
        messages.push(e.data);
        resolve(e.data);
      };
    });
  try {
    await assert.rejects(
      coroutineScope(async (scope) => {
        const ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            await out.send(42);
            await untilAborted(task.signal);
          }),
        );
        let reply = next();
        worker.postMessage(ch.share());
        assert.deepEqual(await reply, { first: 42, waiting: true });
        reply = next();
        scope.cancel(); // the Worker's pending receive must reject
        const end = await reply;
        assert.equal(end.error, "CancellationError", JSON.stringify(end));
        ch[Symbol.dispose]();
      }),
      CancellationError,
    );
  } finally {
    worker.terminate();
  }
  assert.equal(live, 0);
});

Deno.test("produce: a Worker cancelling its copy of the channel cancels the producer at once, waiting in a delay or on task.signal, with the channel's CancellationError carrying the cause: the one a receive there rejects with, and like the Worker's (name, message, cause)", async () => {
  // Before, the cancel reached the producer only at its next send: one waiting elsewhere (a
  // delay, a fetch) went on waiting, and its scope with it.
  for (const wait of ["delay", "signal"] as const) {
    const worker = new Worker(new URL("./fixtures/cancel_worker.ts", import.meta.url), {
      type: "module",
    });
    let caught: unknown = undefined;
    let finallyRan = false;
    let scopeRef: CoroutineScope | null = null;
    let ch: Channel<number> | null = null;
    let ended = false;
    let done: Promise<void> | null = null;
    let replied = false;
    try {
      done = coroutineScope(async (scope) => {
        scopeRef = scope;
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            try {
              await out.send(1);
              if (wait === "delay") await delay(600_000, { signal: task.signal });
              else await untilAborted(task.signal);
            } catch (e) {
              caught = e;
              throw e;
            } finally {
              finallyRan = true;
            }
          }),
        );
        const reply = new Promise((resolve) => worker.onmessage = (e) => resolve(e.data));
        worker.postMessage(ch.share());
        const got = await reply;
        replied = true;
        assert.deepEqual(got, {
          first: 1,
          cancelled: true,
          after: {
            name: "CancellationError",
            message: "Channel was cancelled",
            cause: ["RangeError", "consumer gone"],
          },
        });
        // Not disposed here: the consumer's own dispose cancels the producer too.
      });
      done.then(() => ended = true, () => ended = true);
      // The Worker's start (its module type-checked on first use: ~10 s on a loaded host) is not
      // bounded here; the scope's end after the Worker's cancel is.
      await until(() => replied || ended, `the Worker's reply (producer in a ${wait})`, 120_000);
      await until(() => ended, `the scope to complete (producer in a ${wait})`, 10_000);
      await done;
      assert.ok(finallyRan, "the producer's finally ran");
      assert.ok(caught instanceof CancellationError, String(caught));
      // The channel's CancellationError, as the Worker's receive got it (name, message, cause),
      // and the very object a receive here rejects with: before, the job's own "Cancelled:
      // consumer gone" (the watch cancelled the task with the raw cause).
      assert.equal((caught as CancellationError).message, "Channel was cancelled");
      const cause = (caught as CancellationError).cause;
      assert.ok(cause instanceof RangeError, `the cause: ${String(cause)}`);
      assert.equal((cause as RangeError).message, "consumer gone");
      const here = await (ch as Channel<number> | null)!.receive().then(() => "a value", (e) => e);
      assert.equal(here, caught, "a receive in the producer's isolate");
    } finally {
      if (!ended) {
        (scopeRef as CoroutineScope | null)?.cancel(); // failed: end the producer
        await (done as Promise<void> | null)?.catch(() => {});
      }
      (ch as Channel<number> | null)?.[Symbol.dispose]();
      worker.terminate();
    }
  }
  assert.equal(live, 0);
});

/** Each owner (a producer, an actor) with each close its block makes (a fresh cause, or none). */
function* closedOwners() {
  for (const owner of ["produce", "actor"] as const) {
    for (const closing of ["close(Error)", "close()"] as const) {
      const closeCause = closing === "close()" ? undefined : new Error("producer is done");
      yield { owner, closing, closeCause };
    }
  }
}

/**
 * Runs a producer (or actor) of capacity 1 whose block shares its channel (escaped: a native
 * channel, watched), closes it with `closeCause` and stays busy after its close (its `finally`,
 * say) until its task is cancelled. `act` gets the closed channel (the producer's, or the actor's
 * mailbox) and cancels it some way; then the run waits (bounded) for the task's cancel and, for a
 * producer, unless `receive` is false, receives once and disposes of the channel: a producer's
 * channel is the consumer's, and its receive here answers as the close left it (an actor's
 * mailbox is disposed of as its task ends). Resolves, with the task's cancel and what that
 * receive answered, once the scope does: a cancelled producer or actor is no failure.
 */
async function cancelAfterClose(
  owner: "produce" | "actor",
  closeCause: Error | undefined,
  what: string,
  act: (ch: Channel<number>) => void | Promise<void>,
  options: { scopeMs?: number; receive?: boolean } = {},
): Promise<{ reason: unknown; received: unknown }> {
  let reason: unknown = undefined;
  let received: unknown = undefined;
  const closed = Promise.withResolvers<Channel<number>>();
  const block = counted(async (out: Channel<number>, task: CoroutineScope) => {
    out.share();
    out.close(closeCause);
    closed.resolve(out);
    await busyUntilAborted(task.signal, (e) => reason = e);
  });
  await within(
    coroutineScope(async (scope) => {
      if (owner === "produce") produce<number>(scope, block, { capacity: 1 });
      else actor<number>(scope, block, { capacity: 1 });
      const ch = await closed.promise;
      await act(ch);
      await until(() => reason !== undefined, `${what}: the task's cancel`, 20_000);
      if (owner === "produce" && options.receive !== false) {
        received = await ch.receive().then(() => "received", (e) => e);
        ch[Symbol.dispose]();
      }
    }),
    options.scopeMs ?? 20_000,
    `${what}: the scope`,
  );
  return { reason, received };
}

/**
 * The task's cancel is the channel's CancellationError ("Channel was cancelled") carrying the
 * cancel's cause: a `type` with `message` whose own cause deep-equals `causeCause`.
 */
function assertCancelledWithCause(
  reason: unknown,
  what: string,
  type: ErrorConstructor | SyntaxErrorConstructor | RangeErrorConstructor,
  message: string,
  causeCause: unknown,
) {
  assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
  assert.equal(reason.message, "Channel was cancelled", what);
  const cause = reason.cause;
  assert.ok(cause instanceof type, `${what}: the cause ${String(cause)}`);
  assert.equal(cause.message, message, what);
  assert.deepEqual(cause.cause, causeCause, what);
}

/**
 * The task's cancel carries the cause of a cancel made after the close, as
 * fixtures/late_cancel_worker.ts and the same-isolate copy make it: a RangeError("consumer gone",
 * { cause: { id: 9 } }) wrapped in the channel's CancellationError, a CancellationError("consumer
 * stops") itself (a copy of it: kcoro's class kept across), or none at all: never the close's
 * (before: the close's Error, wrapped).
 */
function assertCancelledByCopy(
  reason: unknown,
  cancelling: "Error" | "CancellationError" | "none",
  what: string,
) {
  if (cancelling === "Error") {
    assertCancelledWithCause(reason, what, RangeError, "consumer gone", { id: 9 });
    return;
  }
  assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
  if (cancelling === "CancellationError") {
    assert.equal(reason.message, "consumer stops", what);
  } else {
    assert.equal(reason.message, "Channel was cancelled", what);
    assert.equal(reason.cause, undefined, what);
  }
}

/**
 * A producer's receivers keep what the close left (the first cause wins, as Kotlin's): its
 * cause itself, or a ClosedReceiveError.
 */
function assertReceiversKeepClose(
  owner: "produce" | "actor",
  received: unknown,
  closeCause: Error | undefined,
  what: string,
) {
  if (owner === "actor") return; // its mailbox was disposed of as its task ended
  assertKeepsClose(received, closeCause, what);
}

/** The cancel native code makes after the close, as another isolate's copy does. */
function cancelNatively(ch: Channel<number>, message: string, what = "") {
  const bytes = encodeCause(new SyntaxError(message, { cause: [1, 2] }))!;
  assert.equal(
    library().symbols("test").kc_chan_close_cause(ch.handle, bytes, bytes.length, 1),
    0,
    what,
  );
}

Deno.test("produce, actor: a Worker's copy cancelling the channel its producer (or actor) closed cancels the task with the Worker's cause, not the close's (kc_chan_cancel_cause, ABI 23); receivers here keep the close's", async () => {
  // The same rule as a cancel in the producer's isolate (Kotlin's ChannelCoroutine.cancel(cause)
  // cancels the coroutine with it whatever its channel's state). Before ABI 23 native code kept
  // only the first closer's cause, so the producer's watch told the task the close's cause
  // wrapped (or none), the Worker's cause lost.
  const worker = new Worker(new URL("./fixtures/late_cancel_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    for (const { owner, closing, closeCause } of closedOwners()) {
      for (const cancelling of ["Error", "CancellationError", "none"] as const) {
        const what = `${owner}: ${closing}, then the Worker's cancel(${cancelling})`;
        const { reason, received } = await cancelAfterClose(owner, closeCause, what, async (ch) => {
          const reply = new Promise((resolve, reject) => {
            worker.onmessage = (e) => resolve(e.data);
            worker.onerror = (e) => reject(e);
          });
          worker.postMessage({ ch: ch.share(), cause: cancelling });
          // The Worker's start (its module type-checked on first use) is not bounded here.
          assert.equal(await within(reply, workerStartMs, `${what}: the reply`), "cancelled");
        }, { scopeMs: workerStartMs });
        assertCancelledByCopy(reason, cancelling, what);
        assertReceiversKeepClose(owner, received, closeCause, what);
      }
    }
  } finally {
    worker.terminate();
  }
  assert.equal(live, 0);
});

Deno.test("produce, actor: a Channel.from copy in the same isolate cancelling the channel its producer (or actor) closed cancels the task with the copy's cause, not the close's; receivers keep the close's", async () => {
  // As a Worker's copy does (above). The copy shares this isolate's state of the channel, which
  // reads as closed already: its cancel stored no cause natively (only a first closer's was
  // kept), so the watch told the task none (the close had one) or the close's error.
  for (const { owner, closing, closeCause } of closedOwners()) {
    for (const cancelling of ["Error", "CancellationError", "none"] as const) {
      const what = `${owner}: ${closing}, then a copy's cancel(${cancelling})`;
      const { reason, received } = await cancelAfterClose(owner, closeCause, what, (ch) => {
        using copy = Channel.from<number>(ch.share());
        if (cancelling === "Error") {
          copy.cancel(new RangeError("consumer gone", { cause: { id: 9 } }));
        } else if (cancelling === "CancellationError") {
          copy.cancel(new CancellationError("consumer stops"));
        } else copy.cancel();
      });
      assertCancelledByCopy(reason, cancelling, what);
      assertReceiversKeepClose(owner, received, closeCause, what);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce, actor: the consumer's own cancel that finds a cancel made after the close elsewhere, not told yet, cancels the task with that first cancel's cause, not its own", async () => {
  // Native code (another isolate, as the Worker's copy above) cancels the closed channel with a
  // cause, and in the same turn, before the watch's record is drained, the consumer here cancels
  // with another: the first cancel wins (Kotlin's job keeps its first cancel), its cause read
  // natively (kc_chan_cancel_cause); receivers keep the close's.
  const sym = library().symbols("test");
  for (const { owner, closing, closeCause } of closedOwners()) {
    const what = `${owner}: ${closing}`;
    // The channel is the producer's, or the actor's mailbox.
    const { reason, received } = await cancelAfterClose(owner, closeCause, what, (ch) => {
      cancelNatively(ch, "elsewhere first", what);
      assert.equal(sym.kc_chan_status(ch.handle) & 8, 8, what); // cancelled after a close
      ch.cancel(new RangeError("mine, later")); // the watch has not told the first yet
    });
    assertCancelledWithCause(reason, what, SyntaxError, "elsewhere first", [1, 2]);
    assertReceiversKeepClose(owner, received, closeCause, what);
  }
  assert.equal(live, 0);
});

Deno.test("produce, actor: disposing of the producer's channel (or the actor's mailbox) after a cancel made after the close elsewhere, not told yet, cancels the task with that cancel's cause, as the watch would", async () => {
  // The dispose withdraws the watch first, which answers that a cancel came untold: the task is
  // cancelled with it after, as the watch tells it (kc_chan_cancel_cause), not with the close's.
  for (const { owner, closing, closeCause } of closedOwners()) {
    const what = `${owner}: ${closing}`;
    const { reason } = await cancelAfterClose(owner, closeCause, what, (ch) => {
      cancelNatively(ch, "elsewhere first", what);
      ch[Symbol.dispose](); // the watch has not told the cancel yet
    }, { receive: false });
    assertCancelledWithCause(reason, what, SyntaxError, "elsewhere first", [1, 2]);
  }
  assert.equal(live, 0);
});

/**
 * Runs `run` with kc_chan_status and kc_chan_cancel_cause wrapped so that, once `arm(ch)` has
 * marked a channel, the first such read of it inside Channel's `#cancelAfterClose` (the watch's,
 * or the task's cancel's) is followed by a kc_chan_destroy of it: another thread's destroy, its
 * causes freed. Inside is told by `librarySymbols(lib, "read cancel cause")` (ffi/load.ts), which
 * only `#cancelAfterClose` asks for, as it begins, until the next microtask (it reads
 * synchronously).
 * Restores what it wrapped; resolves with whether that destroy happened. (It wrapped
 * `_cancelAfterClose` itself, a public member then. Wrapping only the cancel cause's read, armed
 * from `arm` on, would not fail were the status read first again, the bug these tests pin.)
 */
async function destroyWhileCausesRead(
  run: (arm: (ch: Channel<number>) => void) => Promise<void>,
): Promise<boolean> {
  const lib = library();
  const sym = librarySymbols(lib, "test");
  const table = sym as unknown as Record<string, (...a: unknown[]) => unknown>;
  const real = { status: table.kc_chan_status, cancelCause: table.kc_chan_cancel_cause };
  let marked = 0; // the handle `arm` marked
  let armed = 0; // that handle while inside `#cancelAfterClose`
  let destroyed = false;
  const after = (v: unknown, h: unknown) => {
    if (armed !== 0 && h === armed && !destroyed) {
      destroyed = true;
      assert.equal(sym.kc_chan_destroy(armed), 0);
    }
    return v;
  };
  const arm = (ch: Channel<number>) => {
    marked = ch.handle;
  };
  // kcoro's calls read the table with `librarySymbols`: wrapped, and restored below.
  const unwrap = _testWrapLibrarySymbols((read) => (l, op) => {
    const got = read(l, op);
    if (op === "read cancel cause" && marked !== 0 && !destroyed) {
      armed = marked;
      queueMicrotask(() => armed = 0);
    }
    return got;
  });
  table.kc_chan_status = (...a: unknown[]) => after(real.status(...a), a[0]);
  table.kc_chan_cancel_cause = (...a: unknown[]) => after(real.cancelCause(...a), a[0]);
  try {
    await run(arm);
  } finally {
    unwrap();
    table.kc_chan_status = real.status;
    table.kc_chan_cancel_cause = real.cancelCause;
  }
  return destroyed;
}

/**
 * Runs a shared producer (capacity 1, watched) busy until its task is cancelled; `act` gets its
 * channel, open, and cancels it some way, then the run waits (bounded) for the task's cancel.
 * Resolves, with the task's cancel and the channel, once the scope does; with `scopeCancelled`,
 * a scope ending in a CancellationError is no failure.
 */
async function cancelSharedProducer(
  act: (ch: Channel<number>) => void,
  options: { scopeCancelled?: boolean } = {},
): Promise<{ reason: unknown; channel: Channel<number> }> {
  let reason: unknown = undefined;
  let channel: Channel<number> | undefined;
  const shared = Promise.withResolvers<Channel<number>>();
  const block = counted(async (out: Channel<number>, task: CoroutineScope) => {
    out.share();
    channel = out;
    shared.resolve(out);
    await busyUntilAborted(task.signal, (e) => reason = e);
  });
  const scope = coroutineScope(async (scope) => {
    produce<number>(scope, block, { capacity: 1 });
    act(await shared.promise);
    await until(() => reason !== undefined, "the task's cancel");
  });
  await within(
    options.scopeCancelled
      ? scope.catch((e) => {
        if (!(e instanceof CancellationError)) throw e;
      })
      : scope,
    20_000,
    "the scope",
  );
  return { reason, channel: channel! };
}

/**
 * cancelSharedProducer with its channel armed for destroyWhileCausesRead before `act` runs:
 * resolves with the task's cancel, the channel, and whether the destroy happened.
 */
async function cancelSharedProducerWhileDestroyed(
  act: (ch: Channel<number>) => void,
  options: { scopeCancelled?: boolean } = {},
): Promise<{ destroyed: boolean; reason: unknown; channel: Channel<number> }> {
  let run: { reason: unknown; channel: Channel<number> } | undefined;
  const destroyed = await destroyWhileCausesRead(async (arm) => {
    run = await cancelSharedProducer((ch) => {
      arm(ch);
      act(ch);
    }, options);
  });
  return { destroyed, ...run! };
}

/** What the channel's receivers get once it is closed (src/channel.ts's `closedResultOf`). */
function closedResult(channel: Channel<number>): { cause?: unknown } {
  return closedResultOf(channel);
}

Deno.test("produce: a destroy of the channel on another thread while the watch reads a cancel made after the close does not lose that cancel's cause", async () => {
  // The watch tells a cancel after the close (made natively, as another isolate's copy does);
  // `#cancelAfterClose` reads what it needs, and the channel is destroyed (its causes freed)
  // right after its first read of the status or the cancel's cause, as another thread's destroy
  // can. Before, it read the status first (bit 3), then the cause from the dead handle: the task
  // got "Channel was cancelled" without the cancel's cause. Now both causes come before the status.
  const what = "produce: close(Error), then a destroy while the watch reads";
  let reason: unknown = undefined;
  const destroyed = await destroyWhileCausesRead(async (arm) => {
    const closeCause = new Error("producer is done");
    ({ reason } = await cancelAfterClose("produce", closeCause, what, (ch) => {
      arm(ch);
      cancelNatively(ch, "elsewhere");
    }, { receive: false }));
  });
  assert.ok(destroyed, "destroyed while the watch read");
  assertCancelledWithCause(reason, what, SyntaxError, "elsewhere", [1, 2]);
  assert.equal(live, 0);
});

Deno.test("produce: a destroy of the channel on another thread while the watch reads a native first cancel's cause gives the task the receivers' error (the same bytes for both causes: no cancel after a close)", async () => {
  // A cancel made natively that closes the channel (one entry: close cause and cancel cause
  // alike); `#cancelAfterClose` reads both causes, then another thread destroys the channel
  // (its causes freed) before the status read, which cannot tell bit 3 any more. The same
  // bytes say that cancel was the close, no cancel after one: the task gets the receivers'
  // error itself (`closedResultOf`), as with the handle alive, not a second "Channel was
  // cancelled" made for a cancel after a close.
  const sym = library().symbols("test");
  const { destroyed, reason, channel } = await cancelSharedProducerWhileDestroyed((ch) => {
    const bytes = encodeCause(new SyntaxError("elsewhere", { cause: [1, 2] }))!;
    assert.equal(sym.kc_chan_close_cause(ch.handle, bytes, bytes.length, 1), 1); // the first close
  });
  assert.ok(destroyed, "destroyed while the watch read");
  assert.ok(reason instanceof CancellationError, String(reason));
  assert.equal((reason as Error).message, "Channel was cancelled");
  const cause = (reason as Error).cause;
  assert.ok(cause instanceof SyntaxError, `the cause ${String(cause)}`);
  assert.equal(cause.message, "elsewhere");
  assert.deepEqual(cause.cause, [1, 2]);
  const own = closedResult(channel);
  assert.equal(reason, own.cause, "the receivers' error itself");
  assert.equal(live, 0);
});

Deno.test("produce: a cancel here after a close and a cancel made elsewhere, the channel destroyed on another thread while the task's cancel reads the causes, keeps the close cause it read for this isolate's receivers", async () => {
  // Closed natively with one cause, cancelled natively with another (the watch's record not
  // yet drained), then cancelled here: the native cancel answers 0, so this isolate forgets its
  // own cause and reads the channel's. `#cancelAfterClose` reads both causes, then another
  // thread destroys the channel (its causes freed) before the status read. The close cause
  // read before the destroy is the channel's here: the error its receivers get carries it.
  // Before, those bytes were dropped and the close cause read again from the dead handle
  // (nothing, and never looked for again): a "Channel was cancelled" without a cause.
  const sym = library().symbols("test");
  const { destroyed, reason, channel } = await cancelSharedProducerWhileDestroyed((ch) => {
    const h = ch.handle;
    const closeBytes = encodeCause(new SyntaxError("closed elsewhere"))!;
    assert.equal(sym.kc_chan_close_cause(h, closeBytes, closeBytes.length, 0), 1);
    const cancelBytes = encodeCause(new RangeError("cancelled elsewhere"))!;
    assert.equal(sym.kc_chan_close_cause(h, cancelBytes, cancelBytes.length, 1), 0);
    ch.cancel(new Error("cancelled here")); // before the watch's record is drained
  }, { scopeCancelled: true });
  assert.ok(destroyed, "destroyed while the task's cancel read");
  assert.ok(reason instanceof CancellationError, String(reason));
  assert.ok((reason as Error).cause instanceof RangeError, `the task's ${String(reason)}`);
  const own = closedResult(channel);
  assert.ok(own.cause instanceof CancellationError, String(own.cause));
  const cause = (own.cause as Error).cause;
  assert.ok(cause instanceof SyntaxError, `the receivers' cause ${String(cause)}`);
  assert.equal(cause.message, "closed elsewhere");
  assert.equal(live, 0);
});

Deno.test("produce: native code destroying the channel before the task began cancels the producer at once with a CancellationError saying so (its watch found the handle gone and watched nothing)", async () => {
  // The handle escaped before the block ran (a scope of the caller's own that starts it later),
  // and native code destroyed the channel meanwhile: the watch, set as the block begins, gets
  // KC_EBADH. Before, it watched nothing: a producer waiting on its task's signal waited for
  // good, and its scope with it (one sending would have learnt it from an InvalidHandleError).
  const sym = library().symbols("test");
  const gate = Promise.withResolvers<void>();
  let caught: unknown = undefined;
  let ch: Channel<number> | null = null;
  let scopeRef: CoroutineScope | null = null;
  const done = coroutineScope((scope) => {
    scopeRef = scope;
    const later = {
      context: scope.context,
      launch: (block: (task: CoroutineScope) => unknown) =>
        scope.launch(async (task) => {
          await gate.promise;
          return await block(task);
        }),
    } as unknown as CoroutineScope;
    ch = produce<number>(
      later,
      counted(async (_out: Channel<number>, task: CoroutineScope) => {
        try {
          await untilAborted(task.signal);
        } catch (e) {
          caught = e;
          throw e;
        }
      }),
    );
    assert.equal(sym.kc_chan_destroy(ch.handle), 0);
    gate.resolve();
  });
  const end = watchEnd(done);
  try {
    const outcome = await end.settled("the scope to complete (the producer cancelled)");
    // A cancellation of the producer, not a failure of the scope.
    assert.equal(outcome, "resolved", String(outcome));
    assert.ok(caught instanceof CancellationError, String(caught));
    assert.equal(
      (caught as Error).message,
      "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
    );
  } finally {
    await end.cleanUp(scopeRef); // failed: end the producer
    // Its owner's dispose of a destroyed handle: nothing to end, nothing thrown (it threw
    // its cancel's InvalidHandleError before).
    (ch as Channel<number> | null)?.[Symbol.dispose]();
  }
  assert.equal(live, 0);
});

Deno.test("produce: native code destroying the channel while its watch is on cancels the producer, and the task's end closes nothing: no uncaught InvalidHandleError, no CompletionHandlerError", async () => {
  // The handle is read while the block runs (the watch begins: `ESCAPED`), then native code
  // destroys the channel: its cancel tells the watch, which cancels the task, whose end closed the
  // dead handle (`_end`): an InvalidHandleError out of the abort listener, uncaught, and again
  // out of the completion handler (a CompletionHandlerError). Both ends: cancelled, and failed
  // by the block's own error after the cancel (that error still reaches the scope).
  const sym = library().symbols("test");
  for (const end of ["cancelled", "failed"] as const) {
    using reported = catchReported();
    const started = Promise.withResolvers<void>();
    let caught: unknown = undefined;
    let ch: Channel<number> | null = null;
    let scopeRef: CoroutineScope | null = null;
    const done = coroutineScope(async (scope) => {
      scopeRef = scope;
      ch = produce<number>(
        scope,
        counted(async (_out: Channel<number>, task: CoroutineScope) => {
          started.resolve();
          try {
            await untilAborted(task.signal);
          } catch (e) {
            caught = e;
            if (end === "failed") throw new Error("the block's own");
            throw e;
          }
        }),
      );
      await started.promise;
      assert.equal(sym.kc_chan_destroy(ch.handle), 0, end); // reading the handle: the watch
    });
    const watched = watchEnd(done);
    try {
      const outcome = await watched.settled(`the scope to complete (${end})`);
      assert.ok(caught instanceof CancellationError, `${end}: ${String(caught)}`);
      if (end === "failed") {
        assert.ok(outcome instanceof Error, `${end}: ${String(outcome)}`);
        assert.equal((outcome as Error).message, "the block's own", end);
      } else assert.equal(outcome, "resolved", end);
    } finally {
      await watched.cleanUp(scopeRef); // failed: end the producer
      // Its owner's dispose of a destroyed handle: nothing thrown (as above).
      (ch as Channel<number> | null)?.[Symbol.dispose]();
    }
    // After the dispose above, which `reported` still catches (checked before it, what it
    // reported went unseen).
    assert.deepEqual(reported.errors.map((e) => String(e)), [], `${end}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("produce: a send racing native code's destroy of the channel ends the producer as cancelled, whichever comes first (the send's failure or the watch's cancel): the scope resolves, nothing reported", async () => {
  // The block reads the handle (the watch begins), native code destroys the channel, then the
  // block sends: before the destroy's cancel reaches the watch, the send met the dead handle
  // and its InvalidHandleError failed the block, and so the scope; once the watch has
  // cancelled the task, a trySend (not bound to the task's signal) did the same. Now the send
  // rejects as on a cancelled channel (the trySend answers `closed` with that cause, which the
  // block throws), a CancellationError saying native code destroyed it, which ends the task.
  const sym = library().symbols("test");
  for (const order of ["send first", "watch first"] as const) {
    for (const op of ["send", "trySend"] as const) {
      const label = `${order}, ${op}`;
      using reported = catchReported();
      let ch: Channel<number> | null = null;
      let caught: unknown = undefined;
      let signalAborted: boolean | undefined;
      let scopeRef: CoroutineScope | null = null;
      let jobCause: unknown = "not completed";
      const done = coroutineScope((scope) => {
        scopeRef = scope;
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            assert.equal(sym.kc_chan_destroy(out.handle), 0, label); // the handle: the watch
            if (order === "watch first") {
              await until(() => task.signal.aborted, `${label}: the watch's cancel`, 10_000);
            }
            signalAborted = task.signal.aborted;
            try {
              if (op === "send") await out.send(1);
              else {
                const r = out.trySend(1);
                assert.equal(r.state, "closed", label);
                throw (r as { cause: unknown }).cause;
              }
            } catch (e) {
              caught = e;
              throw e;
            }
          }),
        );
        producerJobOf(ch)!
          .invokeOnCompletion((c) => jobCause = c);
      });
      const end = watchEnd(done);
      try {
        const outcome = await end.settled(`${label}: the scope to complete`);
        assert.equal(signalAborted, order === "watch first", `${label}: the order`);
        assert.ok(caught !== undefined, `${label}: the send failed`);
        assert.equal(outcome, "resolved", `${label}: ${String(outcome)}`);
        assert.ok(jobCause instanceof CancellationError, `${label}: ${String(jobCause)}`);
        if (order === "send first") {
          // The send's own error, the channel's cause: the task ends with it.
          assert.equal(
            (jobCause as Error).message,
            "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
            label,
          );
          assert.equal(jobCause, caught, `${label}: the send's error`);
        }
      } finally {
        await end.cleanUp(scopeRef);
        (ch as Channel<number> | null)?.[Symbol.dispose]();
      }
      // After the dispose above, which `reported` still catches (checked before it, what it
      // reported went unseen).
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce: native code destroying the channel its producer closed with a cause, learnt by the producer's own call, cancels the producer with the channel's CancellationError, the one its receivers and that call get: not the job's 'Cancelled: <cause>'", async () => {
  // The producer's own call meeting the dead handle (`LEARNT_DESTROYED`, a microtask after it,
  // before the watch could tell anything) cancelled the task with the channel's raw cause: a
  // close cause that is no CancellationError gave the producer the job's "Cancelled: C", while
  // the call and every receive got "Channel was cancelled" carrying C.
  const sym = library().symbols("test");
  for (const given of [new Error("C"), undefined]) {
    const what = given === undefined ? "closed without a cause" : "closed with an Error";
    let reason: unknown = undefined;
    let tried: unknown = undefined;
    let received: unknown = undefined;
    await within(
      coroutineScope(async (scope) => {
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            const handle = out.handle; // escaped: watched
            out.close(given);
            assert.equal(sym.kc_chan_destroy(handle), 0, what);
            const r = out.trySend(1); // meets the dead handle: learns the destroy
            assert.equal(r.state, "closed", what);
            tried = (r as { cause: unknown }).cause;
            await busyUntilAborted(task.signal, (e) => reason = e);
          }),
          { capacity: 4 },
        );
        received = await ch.receive().then(() => "a value", (e) => e);
      }),
      10_000,
      `${what}: the scope`,
    ); // resolves: a cancelled producer is no failure
    // The receivers and the trySend keep the close's outcome (the first cause wins, as
    // Kotlin's; the destroy cancelled it after the close); the producer is cancelled with the
    // channel's CancellationError, carrying the close cause.
    assertKeepsClose(received, given, what);
    if (given === undefined) assert.ok(tried instanceof ClosedSendError, `${what}: ${tried}`);
    else assert.equal(tried, given, `${what}: the trySend's cause`);
    assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
    assert.equal((reason as Error).message, "Channel was cancelled", what);
    assert.equal((reason as Error).cause, given, what);
  }
  assert.equal(live, 0);
});

Deno.test("produce: native code destroying the channel, learnt first by a Channel.from copy of the producer's isolate opened from the handle's value (not share()'s object), cancels the producer in that turn with the channel's CancellationError, as the producer's own call would", async () => {
  // The copy tells the channel's creator through the isolate's entry (`Shared.owner`, set as
  // the channel was made native), which runs `LEARNT_DESTROYED` in a microtask. Before, only
  // share() registered the creator for that: such a copy told no one, and the producer went on
  // until the watch's record of the destroy's cancel was drained in a later turn, or its own
  // next call on the channel (here the block returns instead, failing the check below).
  const sym = librarySymbols(library(), "test");
  for (const how of ["handle", "select"] as const) {
    let abortedInTurn: boolean | undefined;
    let tried: unknown = undefined;
    let reason: unknown = undefined;
    let ch: Channel<number> | null = null;
    await within(
      coroutineScope((scope) => {
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            let h: number;
            if (how === "handle") h = out.handle; // escaped: watched
            else {
              let made: Uint32Array | undefined;
              const real = sym.kc_chan_create;
              const table = sym as unknown as Record<string, unknown>;
              table.kc_chan_create = (...args: Parameters<typeof real>) => {
                made = args[4] as Uint32Array;
                return real(...args);
              };
              try {
                const got = await select<string>((s) => {
                  s.onReceive(out, () => "received");
                  s.onTimeout(0, () => "none");
                });
                assert.equal(got, "none", how);
              } finally {
                table.kc_chan_create = real;
              }
              h = made![0];
            }
            using copy = Channel.from<number>({
              kind: "kcoro.channel",
              version: 1,
              handle: h,
              elemSize: codecs.default.elemSize,
              zeroCopy: codecs.default.zeroCopy,
              codec: "default",
              capacity: 4,
            });
            assert.equal(sym.kc_chan_destroy(h), 0, how);
            const r = copy.trySend(1); // meets the dead handle: learns the destroy
            assert.equal(r.state, "closed", how);
            tried = (r as { cause: unknown }).cause;
            for (let i = 0; i < 10; i++) await Promise.resolve(); // microtasks only: this turn
            abortedInTurn = task.signal.aborted;
            if (!abortedInTurn) return; // not told: ends the test, failed below
            await busyUntilAborted(task.signal, (e) => reason = e);
          }),
          { capacity: 4 },
        );
        // Nothing consumes: the scope waits for the producer alone.
      }),
      10_000,
      `${how}: the scope`,
    ).finally(() => (ch as Channel<number> | null)?.[Symbol.dispose]()); // resolves: a cancelled producer is no failure
    assert.equal(abortedInTurn, true, `${how}: cancelled in the copy's turn`);
    assert.ok(tried instanceof CancellationError, `${how}: ${String(tried)}`);
    assert.equal(
      (tried as Error).message,
      "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
      how,
    );
    assert.equal(reason, tried, `${how}: the producer's error is the copy's trySend's cause`);
  }
  assert.equal(live, 0);
});

/**
 * An InvalidHandleError of a channel of the block's own, which it disposed (a bug of the block's):
 * `other.trySend` on it throws "Cannot trySend: the channel was disposed".
 */
function foreignHandleError(): unknown {
  const other = new Channel<number>(1);
  other[Symbol.dispose]();
  try {
    other.trySend(1);
  } catch (e) {
    assert.ok(e instanceof InvalidHandleError, String(e));
    return e;
  }
  assert.fail("a disposed channel's trySend threw nothing");
}

Deno.test("produce: an InvalidHandleError of another channel that the block lets out after native code destroyed its channel fails the producer and the scope with it, as any failure; its channel's own still ends it cancelled", async () => {
  // Before, any InvalidHandleError the block let out once its channel was destroyed ended the
  // producer as cancelled: a bug of the block's own (a disposed channel of its, here) went
  // unreported, the scope resolved. Only one raised by an operation on `out` counts (Kotlin: a
  // coroutine being cancelled that fails with another exception reports it). Both orders (the
  // error before the destroy's cancel reached the watch, and after); `out`'s own by a trySend,
  // a send and a select with a clause on it.
  const sym = library().symbols("test");
  for (const order of ["before the watch", "after the watch"] as const) {
    for (
      const whose of ["another channel's", "trySend", "send", "select", "handle", "share"] as const
    ) {
      const label = `${order}, ${whose}`;
      using reported = catchReported();
      let ch: Channel<number> | null = null;
      let copy: Channel<number> | null = null;
      let caught: unknown = undefined;
      let signalAborted: boolean | undefined;
      let scopeRef: CoroutineScope | null = null;
      let jobCause: unknown = "not completed";
      const done = coroutineScope((scope) => {
        scopeRef = scope;
        ch = produce<number>(
          scope,
          counted(async (out: Channel<number>, task: CoroutineScope) => {
            // The handle: the watch. For "handle", a copy's, so that `out`'s own read of it
            // after the destroy asks for it natively.
            if (whose === "handle") copy = Channel.from<number>(out.share());
            const h = whose === "handle" ? copy!.handle : out.handle;
            assert.equal(sym.kc_chan_destroy(h), 0, label);
            if (order === "after the watch") {
              await until(() => task.signal.aborted, `${label}: the watch's cancel`, 10_000);
            }
            signalAborted = task.signal.aborted;
            try {
              if (whose === "another channel's") throw foreignHandleError();
              // Closed, as on a cancelled channel: its cause let out.
              if (whose === "trySend") throw (out.trySend(1) as { cause: unknown }).cause;
              else if (whose === "send") await out.send(1);
              else if (whose === "handle") void out.handle;
              else if (whose === "share") out.share(); // handed out the dead handle before
              else await select((s) => s.onSend(out, 1, () => "sent"));
            } catch (e) {
              caught = e;
              throw e;
            }
            assert.fail(`${label}: nothing failed`);
          }),
        );
        producerJobOf(ch)!
          .invokeOnCompletion((c) => jobCause = c);
      });
      const end = watchEnd(done);
      try {
        const outcome = await end.settled(`${label}: the scope to complete`);
        assert.equal(signalAborted, order === "after the watch", `${label}: the order`);
        assert.ok(caught !== undefined, `${label}: the block's error`);
        if (whose === "another channel's") {
          // That very error: the producer's failure, and so the scope's.
          assert.equal(outcome, caught, `${label}: the scope: ${String(outcome)}`);
          assert.equal(jobCause, caught, `${label}: the job: ${String(jobCause)}`);
        } else {
          // `out`'s own (a signal-bound send may reject with the cancel itself, watch first).
          assert.ok(
            caught instanceof InvalidHandleError || caught instanceof CancellationError,
            `${label}: ${String(caught)}`,
          );
          assert.equal(outcome, "resolved", `${label}: ${String(outcome)}`);
          assert.ok(jobCause instanceof CancellationError, `${label}: ${String(jobCause)}`);
        }
      } finally {
        await end.cleanUp(scopeRef);
        (ch as Channel<number> | null)?.[Symbol.dispose]();
        (copy as Channel<number> | null)?.[Symbol.dispose]();
      }
      // After the dispose above, which `reported` still catches (checked before it, what it
      // reported went unseen).
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce: a child task of the producer whose send meets native code's destroy of the channel ends cancelled, not failed, and the scope resolves; another channel's InvalidHandleError the child lets out still fails it", async () => {
  // Kotlin: a cancelled channel's send throws a CancellationException, which ends the child
  // coroutine cancelled (its parent and scope go on). Before, the child's send rejected with the
  // channel's InvalidHandleError, which only the block's own catch took as the channel's end
  // (`isOwnError`): a child letting it out failed, and so did the producer and the scope.
  // The child sends right after the destroy, before the destroy's cancel reaches the watch
  // (which then cancels the producer), and once more after.
  const sym = library().symbols("test");
  const CAUSE = "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)";
  for (const whose of ["send", "trySend", "another channel's"] as const) {
    const label = whose;
    using reported = catchReported();
    let ch: Channel<number> | null = null;
    let caught: unknown = undefined;
    let childCause: unknown = "not completed";
    let jobCause: unknown = "not completed";
    let scopeRef: CoroutineScope | null = null;
    const done = coroutineScope((scope) => {
      scopeRef = scope;
      ch = produce<number>(
        scope,
        counted((out: Channel<number>, task: CoroutineScope) => {
          const child = task.launch(counted(async () => {
            assert.equal(sym.kc_chan_destroy(out.handle), 0, label); // the handle: the watch
            try {
              if (whose === "another channel's") throw foreignHandleError();
              if (whose === "send") await out.send(1);
              else throw (out.trySend(1) as { cause: unknown }).cause;
            } catch (e) {
              caught = e;
              throw e;
            }
          }));
          child.invokeOnCompletion((c) => childCause = c);
        }),
      );
      producerJobOf(ch)!
        .invokeOnCompletion((c) => jobCause = c);
    });
    const end = watchEnd(done);
    try {
      const outcome = await end.settled(`${label}: the scope to complete`);
      assert.ok(caught !== undefined, `${label}: the child's error`);
      if (whose === "another channel's") {
        // That very error: the child's failure, and so the producer's and the scope's.
        assert.equal(childCause, caught, `${label}: the child: ${String(childCause)}`);
        assert.equal(outcome, caught, `${label}: the scope: ${String(outcome)}`);
      } else {
        // The channel's cause, which ends the child cancelled; the producer is cancelled (by
        // the watch, or as its child ended so), the scope resolves.
        assert.ok(caught instanceof CancellationError, `${label}: ${String(caught)}`);
        assert.equal((caught as Error).message, CAUSE, label);
        assert.equal(childCause, caught, `${label}: the child`);
        assert.equal(outcome, "resolved", `${label}: the scope: ${String(outcome)}`);
        assert.ok(jobCause instanceof CancellationError, `${label}: ${String(jobCause)}`);
        // The consumer's receive: the cancelled channel's cause.
        await assert.rejects(ch!.receive(), (e) => e === caught, label);
      }
    } finally {
      await end.cleanUp(scopeRef);
      (ch as Channel<number> | null)?.[Symbol.dispose]();
    }
    // After the dispose above, which `reported` still catches (checked before it, what it
    // reported went unseen).
    assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("produce: an InvalidHandleError of another channel that the block lets out after its consumer disposed its channel fails the scope with it; a send or a `handle` read of its own on the disposed channel still ends it cancelled", async () => {
  // Before, any InvalidHandleError the block let out once its consumer had disposed of the
  // channel (the task cancelled) ended it as cancelled: the block's own bug went unreported.
  // `out`'s own by a trySend and by a read of its `handle` (never read before: the channel,
  // still local, is made native for it, and the disposed channel's error comes from there).
  for (const whose of ["another channel's", "out's own", "out's handle"] as const) {
    using reported = catchReported();
    const started = Promise.withResolvers<void>();
    let caught: unknown = undefined;
    let ch: Channel<number> | null = null;
    let scopeRef: CoroutineScope | null = null;
    let jobCause: unknown = "not completed";
    const done = coroutineScope(async (scope) => {
      scopeRef = scope;
      ch = produce<number>(
        scope,
        counted(async (out: Channel<number>, task: CoroutineScope) => {
          started.resolve();
          await untilAborted(task.signal).catch(() => {}); // the consumer's dispose
          try {
            if (whose === "another channel's") throw foreignHandleError();
            if (whose === "out's handle") void out.handle;
            else out.trySend(1);
          } catch (e) {
            caught = e;
            throw e;
          }
          assert.fail(`${whose}: nothing failed`);
        }),
      );
      producerJobOf(ch)!
        .invokeOnCompletion((c) => jobCause = c);
      await started.promise;
      ch[Symbol.dispose]();
    });
    const end = watchEnd(done);
    try {
      const outcome = await end.settled(`${whose}: the scope to complete`);
      assert.ok(caught instanceof InvalidHandleError, `${whose}: ${String(caught)}`);
      if (whose === "another channel's") {
        assert.equal(outcome, caught, `${whose}: the scope: ${String(outcome)}`);
        assert.equal(jobCause, caught, `${whose}: the job: ${String(jobCause)}`);
      } else {
        const op = whose === "out's handle" ? "get handle" : "trySend";
        assert.equal(
          (caught as Error).message,
          `Cannot ${op}: the channel was disposed (KC_EBADH)`,
          whose,
        );
        assert.equal(outcome, "resolved", `${whose}: ${String(outcome)}`);
        assert.ok(jobCause instanceof CancellationError, `${whose}: ${String(jobCause)}`);
      }
    } finally {
      await end.cleanUp(scopeRef);
      (ch as Channel<number> | null)?.[Symbol.dispose]();
    }
    // After the dispose above, which `reported` still catches (checked before it, what it
    // reported went unseen).
    assert.deepEqual(reported.errors.map(String), [], `${whose}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("a channel's InvalidHandleError carries no more than any other: its origin (isOwnError) shows in no key of it nor of its structured clone", () => {
  // `isOwnError` keeps the origin aside (a WeakMap in channel.ts), by the error's identity.
  const e = foreignHandleError() as Error;
  const plain = new InvalidHandleError("Cannot trySend: the channel was disposed");
  assert.deepEqual(Reflect.ownKeys(e).sort(), Reflect.ownKeys(plain).sort());
  const clone = structuredClone(e);
  assert.deepEqual(Reflect.ownKeys(clone).sort(), Reflect.ownKeys(structuredClone(plain)).sort());
});

Deno.test("produce: a shared producer's cancel watch does not keep the process alive; the watch goes when the task ends", async () => {
  // The producer waits on a promise nothing resolves (no timer, no operation): the process
  // exits by itself with the watch queued, as with an idle channel. And a producer that ends
  // withdraws its watch: a later cancel of its channel tells nothing (no error, exit 0).
  const res = await evalScript(
    `
    import { coroutineScope, produce, Channel } from "./mod.ts";
    void coroutineScope(async (scope) => {
      const ch = produce(scope, async (out, task) => {
        await new Promise(() => {});
      });
      ch.share();
    });
    let shared;
    await coroutineScope(async (scope) => {
      const ch = produce(scope, async (out) => { await out.send(1); }, { capacity: 1 });
      shared = ch.share();
    });
    Channel.from(shared).cancel(); // after the task ended: its watch is gone
    console.log("ended");
  `,
    { timeoutMs: 20_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.signal, null, "killed at the bound: the watch kept the process alive");
  assert.equal(res.stdout.trim(), "ended");
  assert.ok(res.ms < 20_000, `exited after ${res.ms} ms`);
});

Deno.test("produce: a shared producer's cancel watch stops the bridge's poll timer as the task ends, not at the timer's next tick", async () => {
  // The watch's poll timer (unref'd, every 20 ms) went only at its next tick after the last
  // watch was withdrawn: a program or test ending right after its producer found an interval
  // of kcoro's still running. Observed through the timer globals the bridge calls.
  type Id = ReturnType<typeof setInterval>;
  const started: Id[] = [];
  const cleared = new Set<Id>();
  const realSet = globalThis.setInterval;
  const realClear = globalThis.clearInterval;
  globalThis.setInterval = ((fn: () => void, ms?: number) => {
    const id = realSet(fn, ms);
    started.push(id);
    return id;
  }) as unknown as typeof setInterval;
  globalThis.clearInterval = ((id?: Id) => {
    if (id !== undefined) cleared.add(id);
    realClear(id);
  }) as unknown as typeof clearInterval;
  let ch: Channel<number> | null = null;
  try {
    const gate = Promise.withResolvers<void>();
    await coroutineScope((scope) => {
      ch = produce<number>(scope, counted(async () => await gate.promise));
      ch.share(); // escaped while the task runs: it watches for a cancel from elsewhere
      assert.equal(started.length, 1, "the watch started the poll timer");
      gate.resolve(); // the block returns: the task ends, withdrawing its watch
    });
    assert.deepEqual(started.filter((id) => !cleared.has(id)), [], "a poll timer still runs");
  } finally {
    globalThis.setInterval = realSet;
    globalThis.clearInterval = realClear;
    for (const id of started) realClear(id);
    (ch as Channel<number> | null)?.[Symbol.dispose]();
  }
  assert.equal(live, 0);
});

// --- actor ------------------------------------------------------------------------------------

Deno.test("actor: postMessage or structuredClone of one is a DataCloneError that says what to send instead", async () => {
  // It cloned as { job: { context: {} } } without an error: a Worker got an object of nothing.
  await coroutineScope((scope) => {
    const a = actor<number>(scope, async (mailbox) => {
      for await (const _ of mailbox);
    });
    const port = new MessageChannel();
    try {
      for (const clone of [() => structuredClone({ a }), () => port.port1.postMessage(a)]) {
        assert.throws(clone, (e: unknown) => {
          assert.ok(e instanceof DOMException && e.name === "DataCloneError", String(e));
          assert.match(e.message, /Cannot clone an actor: .*share\(\)/);
          return true;
        });
      }
    } finally {
      port.port1.close();
      port.port2.close();
      a.close();
    }
  });
});

Deno.test("actor: processes the messages queued before close(), then onDone(undefined) once", async () => {
  const processed: number[] = [];
  const done: unknown[] = [];
  await coroutineScope((scope) => {
    const a = actor<number>(
      scope,
      counted(async (mailbox: Channel<number>) => {
        for await (const m of mailbox) processed.push(m);
      }),
      { capacity: 8, onDone: (cause) => done.push(cause) },
    );
    for (const m of [1, 2, 3, 4, 5]) assert.deepEqual(a.trySend(m), { state: "ok" });
    assert.equal(a.close(), true);
    assert.equal(a.close(), false);
    assert.equal(processed.length < 5, true); // nothing has run yet: all five are queued
  });
  assert.deepEqual(processed, [1, 2, 3, 4, 5]);
  assert.deepEqual(done, [undefined]);
  assert.equal(live, 0);
});

Deno.test("actor: stops at once when its scope is cancelled; queued messages are dropped", async () => {
  const processed: number[] = [];
  const done: unknown[] = [];
  const first = Promise.withResolvers<void>();
  let a!: ReturnType<typeof actor<number>>;
  await assert.rejects(
    coroutineScope(async (scope) => {
      a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
          for await (const m of mailbox) {
            processed.push(m);
            first.resolve();
            await untilAborted(task.signal); // busy with the first message until cancelled
          }
        }),
        { capacity: 8, onDone: (cause) => done.push(cause) },
      );
      await a.send(1);
      await first.promise;
      for (const m of [2, 3, 4]) a.trySend(m);
      scope.cancel();
    }),
    CancellationError,
  );
  // 2..4 were queued when the scope was cancelled: none was processed.
  assert.deepEqual(processed, [1]);
  assert.equal(done.length, 1);
  assert.ok(done[0] instanceof CancellationError);
  assert.deepEqual(a.trySend(5).state, "closed");
  await assert.rejects(a.send(6), ClosedSendError);
  assert.equal(a.job.state, "cancelled");
  assert.equal(live, 0);
});

Deno.test("actor: cancelling its mailbox (the handler's object, a Channel.from copy of its share(), or the handler itself at its start) cancels the actor while its handler is busy elsewhere: its signal aborts with the mailbox's CancellationError, onDone gets that one error, the scope resolves (Kotlin's actor is a ChannelCoroutine)", async () => {
  // Before, only the mailbox ended: a handler not receiving (busy on its signal, a delay, a
  // fetch) ran on, the actor never ended and its scope waited for good.
  for (const how of ["cancel(cause)", "cancel()", "copy", "self"] as const) {
    using reported = catchReported();
    const given = new CancellationError("stop");
    const started = Promise.withResolvers<Channel<number>>();
    const done: unknown[] = [];
    let reason: unknown = undefined;
    let a!: ReturnType<typeof actor<number>>;
    let waiting: Promise<unknown> | null = null;
    await coroutineScope(async (scope) => {
      a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
          if (how === "self") mailbox.cancel(given); // before its first await
          started.resolve(mailbox);
          await busyUntilAborted(task.signal, (e) => reason = e); // busy, not receiving
        }),
        { capacity: 2, onDone: (cause) => done.push(cause) },
      );
      const box = await started.promise;
      if (how !== "self") {
        for (const m of [1, 2]) assert.equal(a.trySend(m).state, "ok", how);
        waiting = a.send(3).then(() => "delivered", (e) => e); // the mailbox full: it waits
        assert.equal(await settled(waiting), false, `${how}: the send did not wait`);
      }
      if (how === "cancel(cause)") box.cancel(given);
      else if (how === "cancel()") box.cancel();
      else if (how === "copy") {
        using copy = Channel.from(box.share()); // as a Worker's would, through the watch
        copy.cancel(given);
      }
      await within(a.job.join(), 10_000, `${how}: the actor's end`);
    }); // resolves: a cancelled actor is no failure
    assert.ok(reason instanceof CancellationError, `${how}: ${String(reason)}`);
    if (how === "cancel()") {
      assert.equal(reason, await waiting, `${how}: the waiting send's error`);
    } else {
      assert.equal(reason, given, how);
      if (waiting !== null) assert.equal(await waiting, given, `${how}: the waiting send`);
    }
    assertSameItems(done, [reason], `${how}: onDone`);
    assert.equal(a.job.state, "cancelled", how);
    assert.equal(a.trySend(4).state, "closed", how);
    await laterReports();
    assert.deepEqual(reported.errors, [], `${how}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("actor: a cancel of its mailbox closed before (by the handler, with a cause or not, or by actor.close(), locally or shared) cancels the actor with the cancel's cause, as Kotlin's ChannelCoroutine.cancel does; the mailbox's receivers keep the close's cause", async () => {
  // Kotlin's actor is a ChannelCoroutine: `cancel(cause)` cancels the coroutine with the cause
  // whatever its channel's state (`cancelInternal`), as `produce`'s does. Before, a mailbox
  // closed first gave the task the mailbox's error: the close cause wrapped (or none), the
  // cancel's cause lost.
  const closes = ["close()", "close(Error)", "close(CancellationError)", "actor.close()"];
  const cancels = ["cancel()", "cancel(Error)", "cancel(CancellationError)"];
  for (const shared of [false, true]) {
    for (const closing of closes) {
      for (const cancelling of cancels) {
        const what = `${shared ? "shared" : "local"}, ${closing} then ${cancelling}`;
        using reported = catchReported();
        const closeCause = closing === "close(Error)"
          ? new Error("handler is done")
          : closing === "close(CancellationError)"
          ? new CancellationError("handler stops")
          : undefined;
        const cancelCause = cancelling === "cancel()"
          ? undefined
          : cancelling === "cancel(Error)"
          ? new Error("stop the actor")
          : new CancellationError("actor stops");
        const started = Promise.withResolvers<Channel<number>>();
        const done: unknown[] = [];
        let reason: unknown = undefined;
        let signalReason: unknown = undefined;
        let received: unknown = undefined;
        let a!: ReturnType<typeof actor<number>>;
        await within(
          coroutineScope(async (scope) => {
            a = actor<number>(
              scope,
              counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
                if (shared) mailbox.share(); // escaped: a native channel, watched
                if (closing !== "actor.close()") mailbox.close(closeCause);
                started.resolve(mailbox);
                try {
                  await untilAborted(task.signal); // busy, not receiving
                } catch (e) {
                  reason = e;
                  signalReason = task.signal.reason;
                  throw e;
                }
              }),
              { capacity: 2, onDone: (cause) => done.push(cause) },
            );
            const box = await started.promise;
            if (closing === "actor.close()") assert.equal(a.close(), true, what);
            box.cancel(cancelCause);
            received = await box.receive().then(() => "received", (e) => e);
            await a.job.join();
          }),
          20_000,
          `${what}: the scope`,
        ); // resolves: a cancelled actor is no failure
        assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
        assert.equal(signalReason, reason, `${what}: the task's signal's reason`);
        // The cancel's cause: itself when a CancellationError, else carried.
        assertCancelledBy(reason, cancelCause, what);
        assertSameItems(done, [reason], `${what}: onDone`);
        assert.equal(a.job.state, "cancelled", what);
        // The mailbox's receivers keep what the close left (the first cause wins, as
        // Kotlin's): its cause itself, or a ClosedReceiveError.
        assertKeepsClose(received, closeCause, what);
        await laterReports();
        assert.deepEqual(reported.errors, [], `${what}: nothing reported`);
      }
    }
  }
  assert.equal(live, 0);
});

Deno.test("actor: a cancel made elsewhere (native code's kc_chan_cancel or kc_chan_destroy) that the watch has not told yet, before the handler's mailbox.cancel(cause), is the first: the task gets the mailbox's error, its receivers' one; native code's close before it is no cancel, and the task gets the cause", async () => {
  // As a producer's (Kotlin's coroutine keeps its first cancel): the handler's cancel in the
  // same turn as native code's read the mailbox as closed only.
  for (const { native, what, cancelCause } of firstCancelCases("stop the actor", "actor stops")) {
    const done: unknown[] = [];
    let reason: unknown = undefined;
    let received: unknown = undefined;
    await within(
      coroutineScope((scope) => {
        actor<number>(
          scope,
          counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
            endNatively(native, mailbox.handle, what); // escaped: native, watched
            mailbox.cancel(cancelCause); // the same turn: the watch has not told it yet
            received = await mailbox.receive().then(() => "received", (e) => e);
            await busyUntilAborted(task.signal, (e) => reason = e);
          }),
          { capacity: 1, onDone: (cause) => done.push(cause) },
        );
      }),
      20_000,
      `${what}: the scope`,
    ); // resolves: a cancelled actor is no failure
    assertFirstCancel(native, cancelCause, reason, received, what);
    assertSameItems(done, [reason], `${what}: onDone`);
  }
  assert.equal(live, 0);
});

Deno.test("actor: a handler disposing its escaped mailbox (`using mailbox`) does not cancel the actor: its task runs on and ends as it would otherwise", async () => {
  // The mailbox's own cancel (the dispose's) is not a cancel of the actor, nor is the owned
  // watch's report of it: withdrawn before the dispose cancels. The handler then waits natively
  // on another channel, which native code then sends into: the ring's records are taken in
  // order, so a report of the watch would have cancelled the task before that receive resolved.
  const sym = library().symbols("test");
  using other = new Channel<number>(0, { codec: codecs.f64 });
  const h = other.handle; // escaped: its receive waits natively
  const bridge = Bridge.of(library());
  const before = bridge.pending;
  const done: unknown[] = [];
  const disposed = Promise.withResolvers<void>();
  let abortedAfter: boolean | null = null;
  let a!: ReturnType<typeof actor<number>>;
  await coroutineScope(async (scope) => {
    a = actor<number>(
      scope,
      counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
        {
          using _m = mailbox;
          mailbox.share(); // escaped: the owned watch is on
        }
        disposed.resolve();
        assert.equal(await other.receive({ signal: task.signal }), 7);
        abortedAfter = task.signal.aborted;
      }),
      { onDone: (cause) => done.push(cause) },
    );
    await disposed.promise;
    // Or the actor ended (cancelled: what this test is against) before its receive queued.
    const queued = () => bridge.pending > before || a.job.state !== "active";
    await until(queued, "the handler's receive queued natively");
    const seven = new Float64Array([7]);
    if (a.job.state === "active") {
      assert.equal(sym.kc_chan_try_send(h, Deno.UnsafePointer.of(seven), 8), 0);
    }
  });
  assert.deepEqual(done.map(String), ["undefined"], "onDone: the handler returned");
  assert.equal(abortedAfter, false);
  assert.equal(a.job.state, "completed");
  assert.equal(live, 0);
});

Deno.test("actor: a cancel of its mailbox made elsewhere (a copy's, native code's) just before the handler disposes of it still cancels the actor: the dispose withdraws the watch, but not a cancel it had not told yet", async () => {
  // The dispose withdraws the owned watch so that its own cancel does not cancel the actor. A
  // cancel made before it (here in the same turn: its record is in the ring, not drained) was
  // dropped with the watch, and the handler, busy elsewhere, ran on and its scope waited for
  // good.
  const sym = library().symbols("test");
  for (const how of ["copy", "native"] as const) {
    const given = new CancellationError("stop");
    const done: unknown[] = [];
    let reason: unknown = undefined;
    let a!: ReturnType<typeof actor<number>>;
    await within(
      coroutineScope((scope) => {
        a = actor<number>(
          scope,
          counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
            if (how === "copy") {
              using copy = Channel.from(mailbox.share()); // the watch is on from here
              copy.cancel(given);
            } else {
              assert.equal(sym.kc_chan_cancel(mailbox.handle), 0); // the same, by its handle
            }
            mailbox[Symbol.dispose]();
            await busyUntilAborted(task.signal, (e) => reason = e); // busy, not receiving
          }),
          { onDone: (cause) => done.push(cause) },
        );
      }),
      10_000,
      `${how}: the actor's end`,
    ); // resolves: a cancelled actor is no failure
    assert.ok(reason instanceof CancellationError, `${how}: ${String(reason)}`);
    if (how === "copy") assert.equal(reason, given, how);
    assertSameItems(done, [reason], `${how}: onDone`);
    assert.equal(a.job.state, "cancelled", how);
  }
  assert.equal(live, 0);
});

Deno.test("actor: a handler's failure fails the scope; onDone and later senders get the error", async () => {
  const boom = new Error("bad message");
  const done: unknown[] = [];
  let a!: ReturnType<typeof actor<string>>;
  await assert.rejects(
    coroutineScope(async (scope) => {
      a = actor<string>(
        scope,
        counted(async (mailbox: Channel<string>) => {
          for await (const m of mailbox) if (m === "bad") throw boom;
        }),
        { onDone: (cause) => done.push(cause) },
      );
      await a.send("good");
      await a.send("bad");
    }),
    (e) => e === boom,
  );
  assertSameItems(done, [boom]);
  await assert.rejects(a.send("late"), (e) => e instanceof ClosedSendError && e.cause === boom);
  assert.equal(live, 0);
});

Deno.test("actor: its mailbox is cancelled as soon as its task is cancelling, also while a child of the task still runs", async () => {
  // Kotlin's ActorCoroutine cancels its channel on entering `cancelling`: a message sent to an
  // actor that has failed or been cancelled must not be accepted (and then silently dropped).
  for (const how of ["handler fails", "child fails", "job cancelled after the handler returned"]) {
    const gate = Promise.withResolvers<void>();
    const boom = new Error("handler failed");
    const seen: { state?: string; trySend?: string; send?: unknown } = {};
    const cancelled = how === "job cancelled after the handler returned";
    const outcome = coroutineScope(async (scope) => {
      const a = actor<number>(
        scope,
        counted((_m: Channel<number>, task: CoroutineScope) => {
          task.launch(counted(() => gate.promise)); // ignores the cancellation until let go
          if (how === "child fails") task.launch(counted(() => Promise.reject(boom)));
          if (how === "handler fails") throw boom;
        }),
        { capacity: 4 },
      );
      try {
        const ended = cancelled ? "completing" : "cancelling";
        for (let i = 0; i < 100 && a.job.state !== ended; i++) await null;
        if (a.job.state !== ended) return; // seen.state says so below
        if (cancelled) a.job.cancel();
        seen.state = a.job.state; // the handler has ended; the task waits for the child
        seen.trySend = a.trySend(1).state;
        seen.send = await a.send(2).then(() => "sent", (e) => e);
      } finally {
        gate.resolve();
      }
    });
    // Looked at out here: an assertion failing in the block would only be suppressed by boom.
    if (!cancelled) await assert.rejects(outcome, (e) => e === boom);
    else await outcome; // a cancelled child is no failure
    assert.equal(seen.state, "cancelling", how);
    assert.equal(seen.trySend, "closed", how);
    assert.ok(seen.send instanceof CancellationError, `${how}: send ${seen.send}`);
    assert.equal(live, 0);
  }
});

Deno.test("actor: after its handler returned, its mailbox stays open while a child of the task runs (the child may receive from it), and is cancelled as the task completes, what is queued dropped (Kotlin's onCancelling(null) at completion)", async () => {
  const gate = Promise.withResolvers<void>();
  const dropped: number[] = [];
  const childGot: number[] = [];
  let a!: Actor<number>;
  await coroutineScope(async (scope) => {
    a = actor<number>(
      scope,
      counted((mailbox: Channel<number>, task: CoroutineScope) => {
        task.launch(counted(async () => {
          childGot.push(await mailbox.receive()); // the mailbox outlives the handler's return
          await gate.promise;
        }));
      }),
      { capacity: 4, onUndeliveredElement: (m) => dropped.push(m) },
    );
    for (let i = 0; i < 100 && a.job.state !== "completing"; i++) await null;
    assert.equal(a.job.state, "completing");
    assert.equal(a.trySend(1).state, "ok"); // the child takes it
    for (let i = 0; i < 100 && childGot.length === 0; i++) await null;
    assert.equal(a.trySend(2).state, "ok"); // queued: nobody receives it
    assert.deepEqual(dropped, []);
    gate.resolve();
  });
  assert.equal(a.job.state, "completed");
  assert.deepEqual(childGot, [1]);
  assert.deepEqual(dropped, [2]); // dropped as the task completed
  assert.equal(a.trySend(3).state, "closed");
  assert.equal(live, 0);
});

Deno.test("actor: an onDone that throws is reported, also when it runs inside actor() itself", async () => {
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  await assert.rejects(
    coroutineScope((scope) => {
      scope.cancel(); // the actor's job is final at once: onDone runs inside actor()
      const a = actor(scope, async () => {}, {
        onDone: () => {
          throw new Error("onDone threw");
        },
      });
      assert.equal(a.job.state, "cancelled");
      return Promise.resolve();
    }, { context }),
    CancellationError,
  );
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof CompletionHandlerError);
  assert.equal(((reported[0] as Error).cause as Error).message, "onDone threw");
});

Deno.test("actor: an onDone that throws is folded into its job's one CompletionHandlerError, beside the job's other handlers' exceptions (Kotlin's onCompletion is a completion handler)", async () => {
  // Before, onDone's exception was reported on its own, and the job's other handlers' in a second
  // CompletionHandlerError.
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const onDoneError = new Error("onDone threw");
  const handlerError = new Error("handler threw");
  await coroutineScope(async (scope) => {
    const a = actor(scope, async () => {}, {
      onDone: () => {
        throw onDoneError;
      },
    });
    a.job.invokeOnCompletion(() => {
      throw handlerError;
    });
    await a.job.join();
  }, { context });
  assert.equal(reported.length, 1, String(reported));
  const e = reported[0] as CompletionHandlerError & { suppressed?: unknown[] };
  assert.ok(e instanceof CompletionHandlerError);
  assert.equal(e.cause, onDoneError); // onDone's handler was the job's first
  assert.deepEqual(e.suppressed, [handlerError]);
});

Deno.test("actor: under a Job of another kind whose invokeOnCompletion calls its handlers with more than the cause, an onDone that throws is reported as a CompletionHandlerError, not thrown into that Job's code", async () => {
  // Before, the handler given such a Job took a second argument (`fold`): `h(cause, job)` folded,
  // and onDone's throw reached the Job's own code, reported nowhere.
  const reported: unknown[] = [];
  const context = Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e));
  const onDoneError = new Error("onDone threw");
  let fire: (() => void) | null = null;
  await coroutineScope((real) => {
    const scope = {
      context: real.context,
      launch: (block: (task: CoroutineScope) => unknown) => {
        // The block's task names no kcoro Job: only the returned Job ends the actor.
        real.launch((t) =>
          block({ context: t.context, signal: t.signal } as unknown as CoroutineScope)
        );
        const job = {
          invokeOnCompletion: (h: (cause: unknown, job: unknown) => void) => {
            fire = () => h(undefined, job);
            return { [Symbol.dispose]() {} };
          },
          state: "active",
          isActive: true,
          isCompleted: false,
          isCancelled: false,
          join: () => Promise.resolve(),
          cancel() {},
        };
        return job;
      },
    } as unknown as CoroutineScope;
    actor<number>(scope, async () => {}, {
      onDone: () => {
        throw onDoneError;
      },
    });
  }, { context });
  (fire as (() => void) | null)!(); // the Job of another kind completes: throws nothing
  assert.equal(reported.length, 1, String(reported));
  assert.ok(reported[0] instanceof CompletionHandlerError);
  assert.equal((reported[0] as Error).message, "Exception in an actor's onDone");
  assert.equal((reported[0] as Error).cause, onDoneError);
});

Deno.test("actor: onDone's throw on a CoroutineScope of the caller's own whose context is no Context is reported by reportError, nothing of that context read, nothing thrown out of the Job's completion handler", async () => {
  // Before, handleCoroutineException ran Context's own `get` on it, whose "this must be a
  // Context" TypeError came out of the handler the Job of another kind called, in place of
  // onDone's error (`context.get` threw the engine's TypeError for `undefined` before that).
  const onDoneError = new Error("onDone threw");
  const read: string[] = [];
  const duck = {
    get(_key: unknown) {
      read.push("get");
      return () => read.push("handler");
    },
  };
  for (const context of [undefined, null, 7, duck] as unknown[]) {
    let fire: (() => void) | null = null;
    await coroutineScope((real) => {
      const scope = {
        context,
        launch: (block: (task: CoroutineScope) => unknown) => {
          // The block's task names no kcoro Job: only the returned Job ends the actor.
          real.launch((t) =>
            block({ context: t.context, signal: t.signal } as unknown as CoroutineScope)
          );
          const job = {
            invokeOnCompletion: (h: (cause: unknown) => void) => {
              fire = () => h(undefined);
              return { [Symbol.dispose]() {} };
            },
            cancel() {},
          };
          return job;
        },
      } as unknown as CoroutineScope;
      actor<number>(scope, async () => {}, {
        onDone: () => {
          throw onDoneError;
        },
      });
    });
    using reported = catchReported();
    (fire as (() => void) | null)!(); // the Job of another kind completes: throws nothing
    assert.equal(reported.errors.length, 1, `${String(context)}: ${reported.errors}`);
    const error = reported.errors[0];
    assert.ok(error instanceof CompletionHandlerError);
    assert.equal(error.message, "Exception in an actor's onDone");
    assert.equal(error.cause, onDoneError);
  }
  assert.deepEqual(read, []);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose Job's invokeOnCompletion throws: the call throws that error, and the producer or actor launch started is cancelled, its channel released, onDone run once", async () => {
  // Before, the throw came out of produce() and actor() past any cleanup: the block ran on
  // (here for good), its channel never released, onDone never ran.
  await using scope = createScope();
  const mine = new Error("the caller's invokeOnCompletion");
  const started: Job[] = [];
  const theirs = {
    context: scope.context,
    launch: (block: never) => {
      started.push(scope.launch(block));
      return {
        invokeOnCompletion() {
          throw mine;
        },
        cancel() {},
      };
    },
  } as unknown as CoroutineScope;
  assert.throws(() => produce(theirs, (_, task) => untilAborted(task.signal)), (e) => e === mine);
  const done: unknown[] = [];
  assert.throws(
    () =>
      actor(theirs, async (mailbox) => {
        for await (const _ of mailbox) { /* never sent to */ }
      }, { onDone: (cause) => done.push(cause) }),
    (e) => e === mine,
  );
  assert.equal(started.length, 2);
  await until(() => started.every((j) => j.isCompleted), "the started tasks to end");
  assert.ok(started.every((j) => j.isCancelled));
  assert.equal(done.length, 1);
  assert.ok(done[0] instanceof CancellationError);
});

Deno.test("actor: senders waiting on a full mailbox reject when the actor is cancelled", async () => {
  await using scope = createScope();
  const a = actor<number>(
    scope,
    counted(async (_m: Channel<number>, task: CoroutineScope) => {
      await untilAborted(task.signal); // never receives
    }),
  );
  const waiting = a.send(1); // rendezvous, nobody receiving: waits
  a.job.cancel();
  await assert.rejects(waiting, CancellationError);
  await a.job.join();
  assert.equal(live, 0);
});

Deno.test("actor: its handler's receive and a waiting sender fail with the task's cancellation itself, not a CancellationError wrapping it", async () => {
  // The mailbox is cancelled with the task's CancellationError, which a cancelled channel's
  // operations now throw as it is (Kotlin's cancel(cause)): before, a new "Channel was
  // cancelled" carried it as its cause.
  const why = new CancellationError("shutting down");
  const entered = Promise.withResolvers<void>();
  let reason: unknown;
  let received: unknown;
  let sent: unknown;
  await assert.rejects(
    coroutineScope(async (scope) => {
      actor<number>(
        scope,
        counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
          entered.resolve();
          received = await mailbox.receive().then(() => "received", (e) => e);
          reason = task.signal.reason;
        }),
      );
      const idle = actor<number>(
        scope,
        counted((_m: Channel<number>, task: CoroutineScope) => untilAborted(task.signal)),
      );
      await entered.promise; // the handler waits in receive (called before it resolved)
      const sending = idle.send(1).then(() => "sent", (e) => e); // rendezvous: waits
      await null;
      scope.cancel(why);
      sent = await sending;
    }),
    (e) => e === why,
  );
  assert.equal(reason, why); // the task's cancellation is the scope's
  assert.equal(received, why);
  assert.equal(sent, why);
  assert.equal(live, 0);
});

Deno.test("actor: a send after the actor finished hands its message to onUndeliveredElement, as a Channel's send on a closed channel does", async () => {
  // Kotlin's onClosedSend: the refused send's element goes to the hook, whether the actor
  // returned, failed or was cancelled; trySend answers closed and keeps it the caller's.
  const boom = new Error("handler failed");
  for (const end of ["returned", "failed", "cancelled"] as const) {
    const got: unknown[] = [];
    let a!: ReturnType<typeof actor<{ n: number }>>;
    const ended = await coroutineScope((scope) => {
      a = actor<{ n: number }>(
        scope,
        counted(async (_m: Channel<{ n: number }>, task: CoroutineScope) => {
          if (end === "failed") throw boom;
          if (end === "cancelled") await untilAborted(task.signal);
        }),
        { onUndeliveredElement: (m) => got.push(m) },
      );
      if (end === "cancelled") a.job.cancel();
    }).then(() => "ok", (e) => e);
    assert.equal(ended, end === "failed" ? boom : "ok");
    assert.equal(a.job.state, end === "returned" ? "completed" : "cancelled");
    const late = { n: 1 };
    await assert.rejects(a.send(late), ClosedSendError);
    assert.equal(got.length, 1, end);
    assert.equal(got[0], late, "the caller's message itself");
    assert.equal(a.trySend({ n: 2 }).state, "closed");
    // Bad options are still a TypeError (the message not hooked), and an aborted send rejects
    // with its reason, its message hooked as a Channel's aborted send's is (Kotlin: a send
    // cancelled before it sent, or refused by a closed channel, hands it to the hook).
    await assert.rejects(a.send({ n: 3 }, 5 as never), TypeError);
    const aborted = { n: 4 };
    await assert.rejects(
      a.send(aborted, { signal: AbortSignal.abort("stop") }),
      (e) => e === "stop",
    );
    assert.equal(got.length, 2);
    assert.equal(got[1], aborted);
  }
  // A hook that throws is reported; the send still rejects with ClosedSendError.
  using reported = catchReported();
  await using scope = createScope();
  const hookError = new Error("hook");
  const a = actor<number>(scope, counted(() => {}), {
    onUndeliveredElement: () => {
      throw hookError;
    },
  });
  await a.job.join();
  await assert.rejects(a.send(1), ClosedSendError);
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  await scope[Symbol.asyncDispose]();
  assertSameItems(reported.errors, [hookError]);
  assert.equal(live, 0);
});

Deno.test("produce and actor hand the values they drop to onUndeliveredElement (they were lost: no way to release what they held)", async () => {
  // produce: the consumer cancels the channel with values buffered.
  const fromProduce: number[] = [];
  const filled = Promise.withResolvers<void>();
  await coroutineScope((scope) => {
    const ch = produce<number>(
      scope,
      counted(async (out: Channel<number>, task: CoroutineScope) => {
        for (const v of [1, 2, 3]) await out.send(v);
        filled.resolve();
        await untilAborted(task.signal);
      }),
      { capacity: 4, onUndeliveredElement: (v) => fromProduce.push(v) },
    );
    return filled.promise.then(() => ch.cancel());
  });
  // actor: cancelled with messages queued.
  const fromActor: number[] = [];
  await coroutineScope((scope) => {
    const a = actor<number>(
      scope,
      counted((_m: Channel<number>, task: CoroutineScope) => untilAborted(task.signal)),
      { capacity: 4, onUndeliveredElement: (v) => fromActor.push(v) },
    );
    for (const m of [4, 5, 6]) assert.equal(a.trySend(m).state, "ok");
    a.job.cancel();
  });
  await until(() => fromProduce.length + fromActor.length === 6, "the dropped values", 5_000);
  assert.deepEqual(fromProduce.sort(), [1, 2, 3]);
  assert.deepEqual(fromActor.sort(), [4, 5, 6]);
  assert.equal(live, 0);
  // A hook that is not a function is refused, named.
  await using scope = createScope();
  assert.throws(() => produce(scope, () => {}, { onUndeliveredElement: 1 as never }), {
    name: "TypeError",
    message: /^Cannot produce: onUndeliveredElement must be a function, received /,
  });
  assert.throws(() => actor(scope, () => {}, { onUndeliveredElement: 1 as never }), {
    name: "TypeError",
    message: /^Cannot start actor: onUndeliveredElement must be a function, received /,
  });
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose launch returns no Job throw a named TypeError (it was the engine's 'job.invokeOnCompletion is not a function')", () => {
  const own = new Error("the caller's launch");
  for (const returned of [1, undefined, {}, { invokeOnCompletion: () => ({}) }]) {
    const scope = { launch: () => returned } as never;
    const message = /^Cannot (produce|start actor): scope.launch must return a Job, received /;
    assert.throws(() => produce(scope, () => {}), { name: "TypeError", message });
    assert.throws(() => actor(scope, () => {}), { name: "TypeError", message });
  }
  const throwing = {
    launch: () => {
      throw own;
    },
  } as never;
  assert.throws(() => produce(throwing, () => {}), (e) => e === own);
  assert.throws(() => actor(throwing, () => {}), (e) => e === own);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose launch runs the block at once and then throws or returns no Job cancel the task it started: it does not run on", async () => {
  // The actor's cleanup only disposed of its mailbox, whose dispose is not a cancel of the actor:
  // a handler busy elsewhere ran on, and the scope under the caller's launch waited for it for
  // good. The producer's dispose cancels its task (`task.job`, known from its start).
  const own = new Error("the caller's launch");
  for (const how of ["throws", "returns no Job"] as const) {
    for (const which of ["produce", "actor"] as const) {
      const what = `${which}, launch ${how}`;
      let signal: AbortSignal | null = null;
      let reason: unknown = undefined;
      await within(
        coroutineScope((real) => {
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) => {
              real.launch(block); // runs the block at once, to its first await
              if (how === "throws") throw own;
              return 1;
            },
          } as unknown as CoroutineScope;
          const body = counted(async (_ch: Channel<number>, task: CoroutineScope) => {
            signal = task.signal;
            await busyUntilAborted(task.signal, (e) => reason = e); // busy, not receiving or sending
          });
          assert.throws(
            () => which === "produce" ? produce<number>(scope, body) : actor<number>(scope, body),
            how === "throws" ? (e) => e === own : {
              name: "TypeError",
              message: /^Cannot (produce|start actor): scope.launch must return a Job, received 1/,
            },
            what,
          );
          assert.ok(signal !== null, `${what}: the block began`);
          assert.equal((signal as AbortSignal).aborted, true, `${what}: the task was cancelled`);
        }),
        10_000,
        `${what}: the real scope's end (the task started under it cancelled)`,
      ); // resolves: the task was cancelled, no failure
      assert.ok(reason instanceof CancellationError, `${what}: ${String(reason)}`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch defers the start and then throws or returns no Job: the block never runs on the freed channel, the task ends cancelled, the real scope does not fail", async () => {
  // produce()'s cleanup disposed of the channel, and the start the caller made later ran the
  // block on it: its first send's InvalidHandleError failed the real scope (as an actor's
  // handler did, 769b7e5).
  const own = new Error("the caller's launch");
  for (const how of ["throws", "returns no Job"] as const) {
    let ran = false;
    let job!: ReturnType<CoroutineScope["launch"]>;
    await within(
      coroutineScope(async (real) => {
        let deferred: ((task: CoroutineScope) => unknown) | null = null;
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) => {
            deferred = block;
            if (how === "throws") throw own;
            return 1;
          },
        } as unknown as CoroutineScope;
        assert.throws(
          () =>
            produce<number>(
              scope,
              counted(async (out: Channel<number>) => {
                ran = true;
                await out.send(1);
              }),
            ),
          how === "throws" ? (e) => e === own : { name: "TypeError" },
          how,
        );
        job = real.launch(deferred!); // the caller's launch starts it late
        await job.join();
      }),
      10_000,
      `${how}: the real scope's end`,
    ); // resolves: the task was cancelled, no failure
    assert.equal(ran, false, `${how}: the block never ran on the freed channel`);
    assert.equal(job.state, "cancelled", how);
  }
  assert.equal(live, 0);
});

Deno.test("actor on a CoroutineScope of the caller's own whose launch throws or returns no Job runs onDone once, with the task's cancellation, as Kotlin's onCompletion runs however the actor completes: started at once, or deferred (its handler then never runs)", async () => {
  // actor() threw before attaching onDone to the job launch returned: the started task was
  // cancelled and onDone never ran. A deferred start ran the handler on the freed mailbox, and
  // its receive's InvalidHandleError failed the real scope.
  const own = new Error("the caller's launch");
  for (const start of ["at once", "deferred"] as const) {
    for (const how of ["throws", "returns no Job"] as const) {
      const what = `start ${start}, launch ${how}`;
      const done: unknown[] = [];
      let reason: unknown = undefined;
      let ran = false;
      await within(
        coroutineScope(async (real) => {
          let deferred: ((task: CoroutineScope) => unknown) | null = null;
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) => {
              if (start === "at once") real.launch(block); // runs the block to its first await
              else deferred = block;
              if (how === "throws") throw own;
              return 1;
            },
          } as unknown as CoroutineScope;
          const handler = counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
            ran = true;
            await busyUntilAborted(task.signal, (e) => reason = e); // busy, not receiving
            await mailbox.receive();
          });
          assert.throws(
            () => actor<number>(scope, handler, { onDone: (cause) => done.push(cause) }),
            how === "throws" ? (e) => e === own : { name: "TypeError" },
            what,
          );
          // Started at once: onDone runs as the task ends. Deferred (not begun): at once, with
          // the launch's error, as a launch that never runs the block gives it nothing else.
          assert.equal(done.length, start === "at once" ? 0 : 1, `${what}: onDone's runs`);
          if (deferred !== null) {
            const job = real.launch(deferred); // the caller's launch starts it late
            await job.join();
            assert.equal(job.isCancelled, true, `${what}: the task ended cancelled`);
          }
        }),
        10_000,
        `${what}: the real scope's end`,
      ); // resolves: the task was cancelled, no failure
      assert.equal(done.length, 1, `${what}: onDone ran once: ${done.length}`);
      if (start === "at once") {
        assert.ok(done[0] instanceof CancellationError, `${what}: ${String(done[0])}`);
        assert.equal(ran, true, `${what}: the handler began`);
        assert.equal(done[0], reason, `${what}: onDone gets the task's cancellation`);
      } else {
        assert.equal(ran, false, `${what}: the handler never ran on the freed mailbox`);
        if (how === "throws") assert.equal(done[0], own, what);
        else assert.ok(done[0] instanceof TypeError, `${what}: ${String(done[0])}`);
      }
    }
  }
  assert.equal(live, 0);
});

Deno.test("actor whose deferred block starts after the actor ended (its launch failed, or the Job it returned completed) leaves no abort listener on the task's signal", async () => {
  // src/actor.ts: the late block watched its task's signal (`cancelOnAbort`) before it found the
  // actor ended, and nothing withdrew that listener (`finish` had run already): a long-lived
  // signal of the caller's kept it, and the freed mailbox with it, until it aborted.
  for (const how of ["throws", "returns a completed Job"] as const) {
    const what = `launch ${how}`;
    const done: unknown[] = [];
    let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
    const own = new Error("the caller's launch");
    const scope = {
      context: Context.empty,
      launch: (block: (task: CoroutineScope) => Promise<void>) => {
        deferred = block; // started later
        if (how === "throws") throw own;
        return Object.assign(
          callersJob((handler) => {
            handler(); // completed already: the actor ends at once
            return { [Symbol.dispose]() {} };
          }),
          { cancel() {} },
        );
      },
    } as unknown as CoroutineScope;
    let ran = false;
    try {
      actor<number>(scope, () => {
        ran = true;
      }, { onDone: (cause) => done.push(cause) });
      assert.notEqual(how, "throws", what);
    } catch (e) {
      assert.equal(e, own, what);
    }
    assert.equal(done.length, 1, `${what}: onDone ran as the actor ended`);
    const stop = new AbortController(); // the task's signal: a long-lived one of the caller's
    const task = { job: null, context: Context.empty, signal: stop.signal };
    await assert.rejects(
      deferred!(task as unknown as CoroutineScope),
      CancellationError,
      what,
    );
    assert.equal(ran, false, `${what}: the handler never ran`);
    assert.equal(done.length, 1, `${what}: onDone ran once`);
    assert.equal(abortListeners(stop.signal), 0, `${what}: no listener left on the task's signal`);
    stop.abort(); // nothing of the ended actor's runs
    assert.equal(done.length, 1, what);
  }
});

Deno.test("produce whose deferred block starts after the producer ended (its launch failed, the Job it returned completed, or its consumer cancelled the channel and so that Job) leaves no abort listener on the task's signal", async () => {
  // src/produce.ts: as an actor's (f01e1bb), the late block must not watch its task's signal
  // (`closeOnCancel`) once the producer ended: `end` had run its `detach`, and a long-lived signal
  // of the caller's would keep the listener, and the channel's state with it, until it aborted.
  // Guarded by the `abandoned` check and `closeOnCancel`'s `ended` check, both before the listen.
  for (
    const how of [
      "throws",
      "returns a completed Job",
      "returns a Job the consumer cancels",
    ] as const
  ) {
    const what = `launch ${how}`;
    let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
    const own = new Error("the caller's launch");
    let complete: (() => void) | null = null;
    const scope = {
      context: Context.empty,
      launch: (block: (task: CoroutineScope) => Promise<void>) => {
        deferred = block; // started later
        if (how === "throws") throw own;
        return Object.assign(
          callersJob((handler) => {
            complete = handler;
            if (how === "returns a completed Job") handler(); // the producer ends at once
            return { [Symbol.dispose]() {} };
          }),
          { cancel: () => complete?.() },
        );
      },
    } as unknown as CoroutineScope;
    let ran = false;
    let ch: ReturnType<typeof produce<number>> | null = null;
    try {
      // deno-lint-ignore require-await
      ch = produce<number>(scope, async () => {
        ran = true;
      });
      assert.notEqual(how, "throws", what);
    } catch (e) {
      assert.equal(e, own, what);
    }
    if (how === "returns a Job the consumer cancels") ch!.cancel(); // completes the Job: ended
    const stop = new AbortController(); // the task's signal: a long-lived one of the caller's
    const task = { job: null, context: Context.empty, signal: stop.signal };
    try {
      await deferred!(task as unknown as CoroutineScope);
    } catch (e) {
      assert.ok(e instanceof CancellationError, `${what}: ${e}`);
    }
    assert.equal(ran, false, `${what}: the block never ran`);
    assert.equal(abortListeners(stop.signal), 0, `${what}: no listener left on the task's signal`);
    stop.abort(); // nothing of the ended producer's runs
  }
});

Deno.test("produce whose deferred block starts after the Job its launch returned completed never runs its block: the task ends cancelled, as an actor's, and the channel's receivers saw that end", async () => {
  // src/produce.ts: the late block ran the caller's block on the closed channel, whose first send
  // rejected with the close's cause (or ClosedSendError after a clean end, failing the task and
  // its scope), where an actor in the same situation ends cancelled (`ENDED_FIRST` in
  // src/actor.ts).
  await using real = createScope();
  const hows = [
    "a kcoro Job cancelled",
    "a Job of the caller's completed with a cancellation",
    "a Job of the caller's completed without a cause",
  ] as const;
  for (const how of hows) {
    const what = `launch returns ${how}`;
    let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
    const cause = new CancellationError("the Job launch returned was cancelled");
    let complete: (() => Promise<void>) | null = null;
    const scope = {
      context: Context.empty,
      launch: (block: (task: CoroutineScope) => Promise<void>) => {
        deferred = block; // started later
        if (how === "a kcoro Job cancelled") {
          const job = real.launch((task) => untilAborted(task.signal));
          complete = () => {
            job.cancel(cause);
            return job.join(); // completed: the producer ended
          };
          return job;
        }
        return Object.assign(
          callersJob((handler) => {
            complete = () => {
              const end = handler as (c?: unknown) => void;
              if (how === "a Job of the caller's completed without a cause") end();
              else end(cause);
              return Promise.resolve();
            };
            return { [Symbol.dispose]() {} };
          }),
          { cancel() {} },
        );
      },
    } as unknown as CoroutineScope;
    let ran = false;
    const ch = produce<number>(scope, async (out) => {
      ran = true;
      await out.send(1);
    });
    const waiting = ch.receive(); // a receiver waiting as the producer ends
    await complete!();
    // A clean end closes the channel; a cancellation closes it with its cause.
    const saw = (e: unknown) =>
      how === "a Job of the caller's completed without a cause"
        ? e instanceof ClosedReceiveError
        : e === cause;
    await assert.rejects(waiting, saw, `${what}: the receiver sees the producer's end`);
    const task = { job: null, context: Context.empty, signal: new AbortController().signal };
    await assert.rejects(
      deferred!(task as unknown as CoroutineScope),
      (e) => {
        assert.ok(e instanceof CancellationError, `${what}: ${e}`);
        assert.equal(
          e.message,
          "Producer was cancelled: a Job it ends with completed before its block began",
          what,
        );
        return true;
      },
      `${what}: the late block ends cancelled`,
    );
    assert.equal(ran, false, `${what}: the block never ran`);
    await assert.rejects(ch.receive(), saw, `${what}: receivers still see it`);
  }
});

Deno.test("produce and actor whose deferred block starts after the kcoro Job their launch returned was cancelled, not completed yet, never run it: the task ends cancelled with that cancellation as its cause, before its signal is listened to", async () => {
  // src/produce.ts and src/actor.ts, `CANCELLED_FIRST`: the late block ran the caller's block
  // (handler) though its Job's cancel had closed the channel (cancelled the mailbox): what it did
  // before its first send (receive) went on past that cancel, all of it in a block that never
  // sends. kcoro's own task cancelled before its deferred start never runs its block.
  await using real = createScope();
  for (const which of ["produce", "actor"] as const) {
    const what = which;
    let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
    const cause = new CancellationError("the Job launch returned was cancelled");
    const hold = new CompletableDeferred<void>(); // keeps the cancelled Job from completing
    const job = real.launch(() => hold.await());
    const scope = {
      context: Context.empty,
      launch: (block: (task: CoroutineScope) => Promise<void>) => {
        deferred = block; // started later
        return job;
      },
    } as unknown as CoroutineScope;
    let ran = false;
    const done: unknown[] = [];
    try {
      let ch: Channel<number> | null = null;
      let waiting: Promise<unknown> | null = null;
      if (which === "produce") {
        ch = produce<number>(
          scope,
          counted(() => {
            ran = true; // sends nothing: only its task's cancel would end it
          }),
        );
        waiting = ch.receive(); // a receiver waiting as the producer is cancelled
      } else {
        actor<number>(
          scope,
          counted(() => {
            ran = true; // receives nothing
          }),
          { onDone: (c) => done.push(c) },
        );
      }
      job.cancel(cause);
      assert.equal(job.state, "cancelling", `${what}: cancelled, not completed yet`);
      if (waiting !== null) {
        await assert.rejects(waiting, (e) => e === cause, `${what}: the receiver sees the cancel`);
      }
      const stop = new AbortController(); // the task's signal: a long-lived one of the caller's
      const task = { job: null, context: Context.empty, signal: stop.signal };
      await assert.rejects(
        deferred!(task as unknown as CoroutineScope),
        (e) => {
          assert.ok(e instanceof CancellationError, `${what}: ${e}`);
          assert.equal(
            e.message,
            which === "produce"
              ? "Producer was cancelled: a Job it ends with was cancelled before its block began"
              : "Actor was cancelled: a Job it ends with was cancelled before its handler began",
            what,
          );
          assert.equal(e.cause, cause, `${what}: the Job's cancellation is its cause`);
          return true;
        },
        `${what}: the late block ends cancelled`,
      );
      assert.equal(ran, false, `${what}: the block never ran`);
      assert.equal(abortListeners(stop.signal), 0, `${what}: no listener on the task's signal`);
      if (ch !== null) await assert.rejects(ch.receive(), (e) => e === cause, what);
      assert.deepEqual(done, [], `${what}: onDone waits for the Job to complete`);
    } finally {
      hold.complete(); // also where an assertion failed: the real scope ends
    }
    await job.join();
    if (which === "actor") assert.deepEqual(done, [cause], `${what}: onDone ran once, with it`);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor whose deferred block starts after the Job their launch returned, the task's own kcoro Job, was cancelled say so alike: 'a Job it ends with was cancelled before its block (handler) began', that cancellation its cause", async () => {
  // src/actor.ts, `CANCELLED_FIRST`: the check before the listen looks at the Job `launch`
  // returned also where its signal is the task's own (that Job runs the block), as a producer's
  // does. For a while an actor's looked past its task's own signal there, and its late handler
  // ended with SIGNAL_FIRST instead ("its task's signal aborted before its handler began"), a
  // task of the caller's own's wording, where a producer in its place said CANCELLED_FIRST.
  for (const which of ["produce", "actor"] as const) {
    const what = which;
    const gate = Promise.withResolvers<void>(); // holds the block's start past the cancel
    const cause = new CancellationError(`${what}: the Job launch returned was cancelled`);
    let ran = false;
    let ended: unknown;
    const done: unknown[] = [];
    await within(
      coroutineScope(async (real) => {
        let task!: ReturnType<CoroutineScope["launch"]>;
        const scope = {
          context: real.context,
          // Returns the task's own Job, and starts the block on it later.
          launch: (block: (task: CoroutineScope) => unknown) =>
            task = real.launch(async (t) => {
              await gate.promise;
              try {
                await block(t);
              } catch (e) {
                ended = e;
                throw e;
              }
            }),
        } as unknown as CoroutineScope;
        const body = counted(() => {
          ran = true; // sends (receives) nothing
        });
        if (which === "produce") produce<number>(scope, body);
        else actor<number>(scope, body, { onDone: (c) => done.push(c) });
        task.cancel(cause);
        gate.resolve();
        await task.join();
        assert.equal(task.state, "cancelled", what);
      }),
      10_000,
      what,
    );
    assert.equal(ran, false, `${what}: the block never ran`);
    assert.ok(ended instanceof CancellationError, `${what}: ${ended}`);
    assert.equal(
      ended.message,
      which === "produce"
        ? "Producer was cancelled: a Job it ends with was cancelled before its block began"
        : "Actor was cancelled: a Job it ends with was cancelled before its handler began",
      what,
    );
    assert.equal(ended.cause, cause, `${what}: the Job's cancellation is its cause`);
    if (which === "actor") assert.deepEqual(done, [cause], `${what}: onDone ran once, with it`);
  }
  assert.equal(live, 0);
});

Deno.test("produce whose Job it ends with (one its task names, or the kcoro Job launch returned) completes while the block runs ends the block as cancelled: a send waiting on the full buffer rejects, and one made after; an actor's handler ends as cancelled too", async () => {
  // src/produce.ts, `ENDED_WHILE`: that completion closed the channel but left the block's sends
  // bound to nothing that ended: one waiting on the full buffer waited for good (its task and
  // scope with it), and one made after rejected with the close's ClosedSendError, failing the task
  // and its scope. A cancel of that Job already ended them (`closeOnCancel`).
  await using real = createScope();
  for (const ends of ["named", "returned"] as const) {
    for (const where of ["waiting in a send", "between sends", "actor"] as const) {
      if (where === "actor" && ends === "returned") continue;
      const what = `${ends}, ${where}`;
      const other = new CompletableDeferred<void>();
      let task: Job | null = null;
      const scope = {
        context: Context.empty,
        launch: (block: (t: CoroutineScope) => Promise<void>) => {
          const job = real.launch(async (t) => {
            await null; // a deferred start
            const job = ends === "named" ? other : null;
            return block(
              { context: t.context, signal: t.signal, job } as unknown as CoroutineScope,
            );
          });
          task = job;
          return ends === "returned" ? other : job;
        },
      } as unknown as CoroutineScope;
      let sent = 0;
      let busy = false;
      let seen: unknown = null;
      const step = Promise.withResolvers<void>();
      const undelivered: number[] = [];
      let ch: Channel<number> | null = null;
      if (where === "actor") {
        actor<number>(scope, async (mailbox) => {
          busy = true;
          for await (const _ of mailbox) { /* none come */ }
        });
      } else {
        ch = produce<number>(scope, async (out) => {
          await out.send(++sent); // fills the buffer: nobody receives
          if (where === "between sends") await step.promise;
          try {
            await out.send(++sent);
          } catch (e) {
            seen = e;
            throw e;
          }
        }, { capacity: 1, onUndeliveredElement: (v) => undelivered.push(v) });
      }
      try {
        await until(() => busy || sent === (where === "between sends" ? 1 : 2), `${what}: begun`);
        other.complete();
        step.resolve();
        await within(task!.join(), 5_000, `${what}: the task's end`);
        assert.equal(task!.state, "cancelled", what);
        if (ch !== null) {
          assert.ok(seen instanceof CancellationError, `${what}: ${seen}`);
          assert.equal(
            seen.message,
            "Producer was cancelled: a Job it ends with completed while its block ran",
            what,
          );
          assert.deepEqual(undelivered, [2], `${what}: the value sent goes to the hook`);
          assert.equal(await ch.receive(), 1, `${what}: what was sent before stays`);
          await assert.rejects(ch.receive(), ClosedReceiveError, `${what}: then a clean close`);
        }
      } finally {
        task!.cancel(); // where an assertion failed: the real scope ends
        step.resolve();
      }
    }
  }
  assert.equal(real.job.state, "active", "no failure reached the scope");
});

Deno.test("produce whose caller's launch returns a Job of another kind (not kcoro's) that completes while the block waits in a send ends that send as cancelled, at once and deferred, not waiting for good", async () => {
  // src/produce.ts, `jobEnds`: that Job's completion ends the producer (`end`), which ends the
  // block's sends by aborting `sendsEnd` (`ENDED_WHILE`); but a Job of another kind was taken for
  // one that never ends them, so a send made after `launch` returned listened to the task's
  // signal alone: it waited on the full buffer for good, its task and scope with it.
  for (const start of ["at once", "deferred"] as const) {
    const what = start;
    const completions: ((cause?: unknown) => void)[] = [];
    const foreign = {
      invokeOnCompletion(handler: (cause?: unknown) => void) {
        completions.push(handler);
        return { dispose() {}, [Symbol.dispose]() {} };
      },
      cancel() {},
    };
    let task!: Job;
    let sent = 0;
    let seen: unknown = null;
    const undelivered: number[] = [];
    await within(
      coroutineScope(async (real) => {
        const go = Promise.withResolvers<void>();
        const scope = {
          context: real.context,
          launch: (block: (t: CoroutineScope) => unknown) => {
            task = real.launch(async (t) => {
              if (start === "deferred") await go.promise;
              return block(t);
            });
            return foreign;
          },
        } as unknown as CoroutineScope;
        const ch = produce<number>(scope, async (out) => {
          await null; // sends after `launch` returned, also at once
          await out.send(++sent); // fills the buffer: nobody receives
          try {
            await out.send(++sent);
          } catch (e) {
            seen = e;
            throw e;
          }
        }, { capacity: 1, onUndeliveredElement: (v) => undelivered.push(v) });
        go.resolve();
        try {
          await until(() => sent === 2, `${what}: waiting in its second send`);
          for (const complete of completions) complete();
          await within(task.join(), 5_000, `${what}: the task's end`);
        } finally {
          task.cancel(); // where an assertion failed: the scope ends
        }
        assert.equal(task.state, "cancelled", what);
        assert.ok(seen instanceof CancellationError, `${what}: ${seen}`);
        assert.equal(
          seen.message,
          "Producer was cancelled: a Job it ends with completed while its block ran",
          what,
        );
        assert.deepEqual(undelivered, [2], `${what}: the value sent goes to the hook`);
        assert.equal(await ch.receive(), 1, `${what}: what was sent before stays`);
        await assert.rejects(ch.receive(), ClosedReceiveError, `${what}: then a clean close`);
      }),
      10_000,
      what,
    );
  }
  assert.equal(live, 0);
});

Deno.test("produce whose named Job completed while its block runs on past the rejected send: native code's destroy of the channel learnt after that end cancels no task (the producer has ended), as before the end's sends binding", async () => {
  // src/produce.ts, `#learntDestroyed` checks `live`: the end (`ENDED_WHILE`) leaves the running
  // block's sends bound to its aborted signal (`bound`), which the destroy's hook took for a live
  // producer and cancelled the task with the destroy, where the end had unbound it before.
  await using real = createScope();
  const sym = library().symbols("test");
  const named = new CompletableDeferred<void>();
  const gate = Promise.withResolvers<void>();
  let task: Job | null = null;
  const scope = {
    context: Context.empty,
    launch: (block: (t: CoroutineScope) => Promise<void>) =>
      task = real.launch(async (t) => {
        await null; // a deferred start
        return block(
          { context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope,
        );
      }),
  } as unknown as CoroutineScope;
  let seen: unknown = null;
  let sent = 0;
  const ch = produce<number>(scope, async (out) => {
    await out.send(++sent); // fills the buffer
    try {
      await out.send(++sent);
    } catch (e) {
      seen = e; // goes on past it
    }
    await gate.promise;
  }, { capacity: 1 });
  try {
    const handle = ch.handle; // escaped: the watch is on until the end
    await until(() => sent === 2, "waiting in its second send");
    named.complete();
    await until(() => seen !== null, "the send rejected with the end");
    assert.equal(sym.kc_chan_destroy(handle), 0);
    ch.tryReceive(); // learns the destroy; its hook runs in a microtask
    await new Promise((r) => setTimeout(r, 0)); // past that microtask
    assert.equal(task!.state, "active", "the block still runs, not cancelled by the destroy");
  } finally {
    gate.resolve();
  }
  await within(task!.join(), 5_000, "the task's end");
  assert.equal(task!.state, "completed");
  ch[Symbol.dispose]();
});

Deno.test("produce and actor whose block starts at once (inside launch) under a task naming a kcoro Job that completed or is cancelling never run it, as a deferred start: the task ends cancelled, the channel closed (the actor's onDone run once)", async () => {
  // src/produce.ts and src/actor.ts: `endWithTask` and `watchNamed` waited for the Job `launch`
  // returns, so a block started inside `launch` ran under a named Job that had ended (or was
  // cancelling): a producer's sends filled the buffer of a channel then closed, and (completed)
  // the next one failed with ClosedSendError, failing the task and its scope; an actor's handler
  // ran on its mailbox. A deferred start is refused (`ENDED_FIRST`, `CANCELLED_FIRST`).
  for (const which of ["produce", "actor"] as const) {
    for (const how of ["completed", "cancelling"] as const) {
      const what = `${which}, named Job ${how}`;
      await using real = createScope();
      const hold = new CompletableDeferred<void>();
      let named: Job;
      if (how === "completed") {
        const d = new CompletableDeferred<void>();
        d.complete();
        named = d;
      } else {
        named = real.launch(() => hold.await()); // a child keeps it cancelling
        named.cancel(new CancellationError("named"));
      }
      let task: Job | null = null;
      const scope = {
        context: Context.empty,
        launch: (block: (t: CoroutineScope) => Promise<void>) =>
          task = real.launch((t) =>
            block({ context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope)
          ),
      } as unknown as CoroutineScope;
      let ran = false;
      const done: unknown[] = [];
      try {
        let ch: Channel<number> | null = null;
        if (which === "produce") {
          ch = produce<number>(scope, async (out) => {
            ran = true;
            await out.send(1);
            await out.send(2);
          }, { capacity: 4 });
        } else {
          actor<number>(scope, async (mailbox) => {
            ran = true;
            for await (const _ of mailbox) { /* none come */ }
          }, { onDone: (c) => done.push(c) });
        }
        await within(task!.join(), 5_000, `${what}: the task's end`);
        assert.equal(ran, false, `${what}: the block never ran`);
        assert.equal(task!.state, "cancelled", what);
        if (ch !== null) {
          const saw = how === "completed" ? ClosedReceiveError : /named/;
          await assert.rejects(ch.receive(), saw, what);
        } else assert.equal(done.length, 1, `${what}: onDone ran once`);
        assert.equal(real.job.state, "active", `${what}: no failure reached the scope`);
      } finally {
        hold.complete();
      }
    }
  }
});

Deno.test("produce and actor whose block starts at once under a task naming a long-lived kcoro Job, where the launch then throws: no completion handler nor abort listener left on that Job", async () => {
  // src/produce.ts, `abandon`: the at-once watch of the named Job (`endWithTask(true)`, its
  // signal's `closeOnCancel`) is undone only by `end`, which runs at the completion of the Job
  // `launch` returns: a launch that threw returned none, so a producer left both on the caller's
  // long-lived Job until it completed, one each per such call.
  for (const which of ["produce", "actor"] as const) {
    const what = which;
    const holder = createScope();
    const gate = Promise.withResolvers<void>();
    holder.launch(counted(() => gate.promise)); // keeps the named Job from completing
    const named = holder.job;
    const handlers = () => handlerCountOf(named as JobSupport);
    const listeners = () => abortListeners(signalOfJob(named as JobSupport));
    const before = [handlers(), listeners()];
    const boom = new Error(`${what}: the launch threw`);
    await within(
      coroutineScope(async (real) => {
        let task!: ReturnType<CoroutineScope["launch"]>;
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) => {
            task = real.launch((t) =>
              block(
                { context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope,
              )
            );
            throw boom;
          },
        } as unknown as CoroutineScope;
        const body = counted(async (ch: Channel<number>, t: CoroutineScope) => {
          if (which === "produce") await ch.send(1).catch(() => {});
          await untilAborted(t.signal).catch(() => {});
        });
        assert.throws(
          () =>
            which === "produce"
              ? produce<number>(scope, body, { capacity: 1 })
              : actor<number>(scope, body),
          (e) => e === boom,
          what,
        );
        task.cancel(); // the task the launch began runs on: nobody else knows of it
        await task.join();
      }),
      10_000,
      `${what}: the real scope's end`,
    );
    assert.deepEqual([handlers(), listeners()], before, `${what}: nothing left on the named Job`);
    holder.cancel();
    gate.resolve();
    await within(named.join(), 10_000, `${what}: the holder's end`);
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch returns the Job running the block, its task naming that Job with no signal, or naming a long-lived one beside its signal: the block's failure closes the channel with that failure as the task completes, at once and deferred alike", async () => {
  // src/produce.ts, `closeOnCancel`'s check of the Job running the block (`st.job`): a block
  // started at once watches the Job its task names before `launch` returned it, as a Job that runs
  // no block (no owner: its failure closes the channel at once with its signal's reason). Where
  // `launch` then returns that same Job, it is the one running the block, whose failure closes the
  // channel with the failure itself as it completes (as deferred). For a while, at once, receivers
  // got the signal's CancellationError. (f066c29c's per-signal owners fixed it first; 3b56c8e6's
  // `st.job` check covers it, and RR4 removed the owners: this fails without that check.)
  const longLived = createScope();
  for (const names of ["its own, no signal", "a long-lived one"] as const) {
    for (const start of ["at once", "deferred"] as const) {
      const what = `${names}, ${start}`;
      const boom = new Error(`${what}: the block failed`);
      const reported: unknown[] = [];
      const holder = createScope({
        context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
      });
      let task!: Job;
      const go = Promise.withResolvers<void>();
      const scope = {
        context: Context.empty,
        launch: (block: (t: CoroutineScope) => unknown) =>
          task = holder.launch(async (t) => {
            if (start === "deferred") await go.promise;
            return block(
              (names === "a long-lived one"
                ? { context: t.context, signal: t.signal, job: longLived.job }
                : { context: t.context, job: t }) as unknown as CoroutineScope,
            );
          }),
      } as unknown as CoroutineScope;
      const ch = produce<number>(scope, async (out) => {
        await out.send(1);
        throw boom;
      }, { capacity: 1 });
      go.resolve();
      await within(task.join(), 5_000, `${what}: the task's end`);
      assert.equal(task.state, "cancelled", what); // failed: a Job reads "cancelled"
      assert.equal(await ch.receive(), 1, what);
      await assert.rejects(ch.receive(), (e) => e === boom, `${what}: closed with the failure`);
      await within(holder.job.join(), 5_000, `${what}: the holder's end`);
      assert.deepEqual(reported, [boom], `${what}: reported once, by its scope`);
    }
  }
  longLived.cancel();
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose task names the scope's own Job (its parent): the block's failure closes the channel with that failure, not with the parent's cancellation it caused, at once and deferred", async () => {
  // src/produce.ts, `closeOnCancel`: the named Job's abort closes the channel at once (no owner,
  // `watchNamed`, 370f126f), but here it aborts because the task failed: the channel waits for
  // the task's completion, which closes it with the failure, as kcoro's own scope does. For a
  // while receivers got the parent's "Cancelled: a task in the scope failed" (at once, always).
  for (const start of ["at once", "deferred"] as const) {
    const what = start;
    const boom = new Error(`${what}: the block failed`);
    let ch!: Channel<number>;
    await assert.rejects(
      within(
        coroutineScope((real) => {
          const go = Promise.withResolvers<void>();
          const scope = {
            context: real.context,
            launch: (block: (t: CoroutineScope) => unknown) =>
              real.launch(async (t) => {
                if (start === "deferred") await go.promise;
                return block(
                  {
                    context: t.context,
                    signal: t.signal,
                    job: real.job,
                  } as unknown as CoroutineScope,
                );
              }),
          } as unknown as CoroutineScope;
          ch = produce<number>(scope, async (out) => {
            await out.send(1);
            throw boom;
          }, { capacity: 1 });
          go.resolve();
        }),
        10_000,
        what,
      ),
      (e) => e === boom,
      `${what}: the scope fails with it`,
    );
    assert.equal(await ch.receive(), 1, what);
    await assert.rejects(ch.receive(), (e) => e === boom, `${what}: closed with the failure`);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor whose task of the caller's own has an aborted signal as the block starts never run it: the task ends cancelled with the signal's reason as its cause, the channel closed (mailbox cancelled) with it; started at once or late, the launch returning a kcoro Job, one of the caller's, or throwing", async () => {
  // src/produce.ts and src/actor.ts, `SIGNAL_FIRST`: the block (handler) ran though its task's
  // signal had aborted, which closed the channel (cancelled the mailbox): what it did before its
  // first send (receive) went on past that abort, all of it in a block that never sends.
  // kcoro's own scope never runs a block launched into it cancelled.
  await using real = createScope();
  const launches = ["returns a kcoro Job", "returns a Job of the caller's", "throws"] as const;
  for (const which of ["produce", "actor"] as const) {
    for (const start of ["at once", "late"] as const) {
      for (const how of launches) {
        if (how === "throws" && start === "late") continue; // a launch that threw ran nothing
        const what = `${which}, started ${start}, its launch ${how}`;
        const reason = new Error(`stop: ${what}`);
        const task = {
          job: null,
          context: Context.empty,
          signal: AbortSignal.abort(reason),
        } as unknown as CoroutineScope;
        const hold = new CompletableDeferred<void>(); // keeps the kcoro Job from completing
        let kcoroJob: Job | null = null;
        let endCallers: (() => void) | null = null;
        let started: Promise<void> | null = null;
        let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
        const launchFailed = new Error("launch failed");
        const scope = {
          context: Context.empty,
          launch: (block: (task: CoroutineScope) => Promise<void>) => {
            if (start === "at once") started = block(task);
            else deferred = block;
            if (how === "throws") throw launchFailed;
            if (how === "returns a kcoro Job") return kcoroJob = real.launch(() => hold.await());
            return Object.assign(
              callersJob((handler) => {
                endCallers = () => (handler as (c?: unknown) => void)();
                return { [Symbol.dispose]() {} };
              }),
              { cancel() {} },
            );
          },
        } as unknown as CoroutineScope;
        let ran = false;
        const done: unknown[] = [];
        let ch: Channel<number> | null = null;
        const make = () => {
          if (which === "produce") {
            ch = produce<number>(
              scope,
              counted(() => {
                ran = true; // sends nothing: only its task's cancel would end it
              }),
            );
          } else {
            actor<number>(
              scope,
              counted(() => {
                ran = true; // receives nothing
              }),
              { onDone: (c) => done.push(c) },
            );
          }
        };
        if (how === "throws") assert.throws(make, (e) => e === launchFailed, what);
        else make();
        try {
          const ended = start === "at once" ? started! : deferred!(task);
          await assert.rejects(
            ended,
            (e) => {
              assert.ok(e instanceof CancellationError, `${what}: ${e}`);
              assert.equal(
                e.message,
                which === "produce"
                  ? "Producer was cancelled: its task's signal aborted before its block began"
                  : "Actor was cancelled: its task's signal aborted before its handler began",
                what,
              );
              assert.equal(e.cause, reason, `${what}: the signal's reason is its cause`);
              return true;
            },
            `${what}: the block ends cancelled`,
          );
          assert.equal(ran, false, `${what}: the block never ran`);
          // Closed with the abort's reason at once, as the signal was listened to.
          const out = ch as Channel<number> | null; // assigned in `make`
          if (out !== null) await assert.rejects(out.receive(), (e) => e === reason, what);
        } finally {
          hold.complete(); // also where an assertion failed: the real scope ends
          (endCallers as (() => void) | null)?.();
        }
        await (kcoroJob as Job | null)?.join();
        if (which === "actor") assert.equal(done.length, 1, `${what}: onDone ran once`);
      }
    }
  }
  assert.equal(live, 0);
});

Deno.test("actor on a CoroutineScope of the caller's own whose launch throws or returns no Job before running the block (and never runs it) runs onDone once, with the launch's error: eager or lazy", async () => {
  // src/actor.ts `abandon`: only the block's start ran onDone on that path, so an actor whose
  // block never began never ran it, and what onDone releases leaked.
  const own = new Error("the caller's launch");
  await using real = createScope();
  for (const lazy of [false, true]) {
    for (
      const how of ["throws", "returns no Job", "returns a Job whose invokeOnCompletion throws"]
    ) {
      const what = `lazy ${lazy}, launch ${how}`;
      const done: unknown[] = [];
      const options: unknown[] = [];
      const hooked = new Error("the caller's invokeOnCompletion");
      const scope = {
        context: real.context,
        launch: (_block: unknown, opts?: unknown) => {
          options.push(opts); // the block is dropped: never run
          if (how === "throws") throw own;
          if (how === "returns no Job") return 1;
          return {
            cancel() {},
            invokeOnCompletion() {
              throw hooked;
            },
          };
        },
      } as unknown as CoroutineScope;
      let handlerRan = false;
      let thrown: unknown;
      try {
        actor<number>(scope, () => {
          handlerRan = true;
        }, { lazy, onDone: (cause) => done.push(cause) });
      } catch (e) {
        thrown = e;
      }
      if (how === "throws") assert.equal(thrown, own, what);
      else if (how === "returns no Job") {
        assert.ok(thrown instanceof TypeError, `${what}: ${String(thrown)}`);
      } else assert.equal(thrown, hooked, what);
      assert.equal(done.length, 1, `${what}: onDone ran once: ${done.length}`);
      assert.equal(done[0], thrown, `${what}: onDone gets the error actor() throws`);
      assert.equal(handlerRan, false, what);
      if (lazy) assert.deepEqual(options, [{ lazy: true }], `${what}: launched lazily`);
    }
  }
});

Deno.test("actor on a CoroutineScope of the caller's own whose launch throws or returns no Job: what onDone throws is reported exactly once, on each abandoned path (started at once or deferred; a task with a kcoro Job or none)", async () => {
  // src/actor.ts: an abandoned actor's end runs `finish` from the block (a task naming no kcoro
  // Job: at its start, or as its handler ends) or from a completion handler on the task's Job
  // (the cleanup's, or the deferred start's): onDone's throw goes to its own report
  // (`runCompletionHandler`), never a second time through a Job's handlers, never lost.
  const own = new Error("the caller's launch");
  for (const start of ["at once", "deferred"] as const) {
    for (const task of ["kcoro's", "one naming no Job"] as const) {
      for (const how of ["throws", "returns no Job"] as const) {
        const what = `start ${start}, task ${task}, launch ${how}`;
        const thrown = new Error(`onDone: ${what}`);
        let calls = 0;
        using reported = catchReported();
        await within(
          coroutineScope(async (real) => {
            let deferred: ((task: CoroutineScope) => unknown) | null = null;
            const run = (block: (task: CoroutineScope) => unknown) =>
              real.launch((t) =>
                block(
                  task === "kcoro's"
                    ? t
                    : { context: t.context, signal: t.signal } as unknown as CoroutineScope,
                )
              );
            const scope = {
              context: real.context,
              launch: (block: (task: CoroutineScope) => unknown) => {
                if (start === "at once") run(block); // runs the block to its first await
                else deferred = block;
                if (how === "throws") throw own;
                return 1;
              },
            } as unknown as CoroutineScope;
            assert.throws(
              () =>
                actor<number>(
                  scope,
                  counted(async (mailbox: Channel<number>) => {
                    await mailbox.receive(); // the cleanup cancels the mailbox
                  }),
                  {
                    onDone: () => {
                      calls++;
                      throw thrown;
                    },
                  },
                ),
              how === "throws" ? (e) => e === own : { name: "TypeError" },
              what,
            );
            if (deferred !== null) await run(deferred).join();
          }),
          10_000,
          `${what}: the real scope's end`,
        ); // resolves: the task was cancelled, no failure
        await until(() => calls > 0, `${what}: onDone ran`);
        await laterReports();
        assert.equal(calls, 1, `${what}: onDone ran once`);
        assert.equal(reported.errors.length, 1, `${what}: reported ${reported.errors.length}`);
        const [error] = reported.errors;
        const got = error instanceof CompletionHandlerError ? error.cause : error;
        assert.equal(got, thrown, `${what}: ${String(error)}`);
      }
    }
  }
  assert.equal(live, 0);
});

/**
 * What a task that a CoroutineScope of the caller's own gives the block may hold as its `signal`:
 * kcoro's tasks always have an AbortSignal, the caller's may have none, one that is none (also
 * one of its prototype, whose methods throw "Illegal invocation"), or a getter that throws.
 */
/**
 * A producer's block whose send waits when its job is cancelled: it sends 1 (kept in the
 * buffer) where `capacity` is 1, then 2, which waits (on the full buffer, or for a receiver).
 * `options` gives 2 to `dropped` as undelivered. `cancelled(ch, cancel)` waits (bounded turns)
 * for that send, cancels, and reports what it saw: the send's outcome, what was dropped, what
 * was received, and how the channel ended; `expected` is what a send woken by the cancel shows.
 */
function sendCancelledWhileWaiting(capacity: 1 | "rendezvous") {
  const dropped: number[] = [];
  let sending = false;
  let outcome: unknown = "waiting";
  return {
    block: counted(async (out: Channel<number>) => {
      if (capacity === 1) await out.send(1); // buffered
      sending = true;
      await out.send(2).then(() => (outcome = "sent"), (e) => {
        outcome = e;
        throw e;
      });
    }),
    options: { capacity, onUndeliveredElement: (v: number) => dropped.push(v) },
    async cancelled(ch: Channel<number>, cancel: () => void): Promise<unknown[]> {
      for (let i = 0; i < 100 && !sending; i++) await null; // bounded turns
      cancel();
      for (let i = 0; i < 100 && outcome === "waiting"; i++) await null;
      const got = [
        outcome instanceof CancellationError ? "send rejected with the CancellationError" : outcome,
        `dropped [${dropped}]`,
      ];
      if (capacity === 1) got.push(`received ${await ch.receive()}`); // sent before: kept
      const last = await ch.receiveCatching();
      const withIt = last.state === "closed" && last.cause instanceof CancellationError;
      got.push(`${last.state}${withIt ? " with it" : ""}`);
      return got;
    },
    expected: [
      "send rejected with the CancellationError",
      "dropped [2]",
      ...(capacity === 1 ? ["received 1"] : []),
      "closed with it",
    ],
  };
}

const TASK_SIGNALS = [
  "an AbortSignal",
  "none",
  "not an AbortSignal",
  "an object of AbortSignal's prototype",
  "a getter that throws",
] as const;

/**
 * A CoroutineScope of the caller's own whose launch runs the block on a real task of `real`,
 * giving it a task of the caller's own with that task's context and signal, whose `job` getter
 * answers `jobOf(the real task)` at each read.
 */
function launchingTasksWithJob(
  real: CoroutineScope,
  jobOf: (task: CoroutineScope) => unknown,
): CoroutineScope {
  return {
    context: real.context,
    launch: (block: (task: CoroutineScope) => unknown) =>
      real.launch((task) =>
        block({
          context: task.context,
          signal: task.signal,
          get job() {
            return jobOf(task);
          },
        } as unknown as CoroutineScope)
      ),
  } as unknown as CoroutineScope;
}

/**
 * A CoroutineScope of the caller's own whose launch runs the block on a real task of `real`,
 * giving it a task of the caller's own (`foreignTask(sig, signal)`, its job none of kcoro's);
 * `launched` gets the kcoro Job that launch returns, before it returns it.
 */
function launchingForeignTasks(
  real: CoroutineScope,
  sig: typeof TASK_SIGNALS[number],
  signal: AbortSignal,
  launched: (job: ReturnType<CoroutineScope["launch"]>) => void,
): CoroutineScope {
  return {
    context: real.context,
    launch: (block: (task: CoroutineScope) => unknown) => {
      const job = real.launch(() => block(foreignTask(sig, signal, { state: "active" })));
      launched(job);
      return job;
    },
  } as unknown as CoroutineScope;
}

/** A task of the caller's own: `job` (none of kcoro's Jobs), and a signal of kind `sig`. */
function foreignTask(
  sig: typeof TASK_SIGNALS[number],
  signal: AbortSignal,
  job: unknown,
): CoroutineScope {
  const task = { job, context: Context.empty };
  if (sig === "an AbortSignal") Object.assign(task, { signal });
  if (sig === "not an AbortSignal") Object.assign(task, { signal: { aborted: false } });
  if (sig === "an object of AbortSignal's prototype") {
    Object.assign(task, { signal: Object.create(AbortSignal.prototype) });
  }
  if (sig === "a getter that throws") {
    Object.defineProperty(task, "signal", {
      get() {
        throw new Error("no signal here");
      },
    });
  }
  return task as unknown as CoroutineScope;
}

/**
 * One produce() or actor() call on a CoroutineScope of the caller's own, for
 * `eachForeignLaunch`: `call` makes it (it throws, as the launch fails), `ran` says whether its
 * block's body began, and `ended` asserts what more the block's end (`cause`) must bring.
 */
interface ForeignLaunchCase {
  call: (scope: CoroutineScope) => unknown;
  ran: () => boolean;
  /** `thrown`: what the call threw where the block began only after it (deferred), else null. */
  ended?: (cause: unknown, what: string, thrown: unknown) => void;
}

/**
 * Runs a case (`make` builds a fresh one each time) on a CoroutineScope of the caller's own
 * whose launch gives the block a task whose job is not a kcoro Job (`foreignTask`, with each of
 * `TASK_SIGNALS`), starts it at once or defers it, and then throws or returns no Job. The call
 * throws the launch's error (a TypeError for no Job); the block ends cancelled, its `body`
 * began only if started at once, and the task's signal, the caller's, stays unaborted.
 */
async function eachForeignLaunch(
  body: "handler" | "block",
  make: () => ForeignLaunchCase,
): Promise<void> {
  const own = new Error("the caller's launch");
  for (const start of ["at once", "deferred"] as const) {
    for (const how of ["throws", "returns no Job"] as const) {
      for (const sig of TASK_SIGNALS) {
        const what = `start ${start}, launch ${how}, signal ${sig}`;
        const c = make();
        const stop = new AbortController();
        // A task of the caller's own: its signal (or none), a job that is none of kcoro's.
        const foreign = foreignTask(sig, stop.signal, { state: "active" });
        let started: Promise<unknown> | null = null;
        let deferred: ((task: CoroutineScope) => unknown) | null = null;
        const scope = {
          context: Context.empty,
          launch: (block: (task: CoroutineScope) => unknown) => {
            if (start === "at once") started = block(foreign) as Promise<unknown>; // to its first await
            else deferred = block;
            if (how === "throws") throw own;
            return 1;
          },
        } as unknown as CoroutineScope;
        let thrown: unknown = null;
        assert.throws(
          () => c.call(scope),
          (e) => {
            thrown = e;
            return how === "throws" ? e === own : e instanceof TypeError;
          },
          what,
        );
        if (deferred === null) thrown = null;
        if (deferred !== null) {
          started = (deferred as (t: CoroutineScope) => unknown)(foreign) as Promise<unknown>; // started late
        }
        const [ended] = await within(
          Promise.allSettled([started!]),
          10_000,
          `${what}: the block's end`,
        );
        assert.equal(ended.status, "rejected", what);
        const cause = (ended as PromiseRejectedResult).reason;
        assert.ok(cause instanceof CancellationError, `${what}: ${String(cause)}`);
        c.ended?.(cause, what, thrown);
        assert.equal(
          c.ran(),
          start === "at once",
          `${what}: the ${body} ran only if started at once`,
        );
        assert.equal(stop.signal.aborted, false, what); // the task is the caller's: not kcoro's to cancel
      }
    }
  }
}

Deno.test("actor on a CoroutineScope of the caller's own whose launch gives the block a task whose job is not a kcoro Job, then throws or returns no Job: onDone still runs once, with the cancellation the block ends with where started at once (deferred, with the launch's error), also when the task has no signal", async () => {
  // onDone was attached to the task's job (`_job`) only when that job was a kcoro Job: under a
  // task of the caller's own, nothing attached it, and it never ran. A task with no signal (or
  // one that is no AbortSignal) threw a TypeError at its addEventListener, ahead of the check
  // for the abandoned launch: the block ended with it, and onDone never ran.
  await eachForeignLaunch("handler", () => {
    const done: unknown[] = [];
    let ran = false;
    const handler = counted(async (mailbox: Channel<number>) => {
      ran = true;
      await mailbox.receive(); // rejects: the cleanup cancelled the mailbox
    });
    return {
      call: (scope) => actor<number>(scope, handler, { onDone: (cause) => done.push(cause) }),
      ran: () => ran,
      ended: (cause, what, thrown) => {
        assert.equal(done.length, 1, `${what}: onDone ran once: ${done.length}`);
        // Deferred: the block had not begun as the launch failed, so onDone ran then, with the
        // error actor() threw, and not again as the block ended.
        if (thrown !== null) {
          assert.equal(done[0], thrown, `${what}: onDone gets the launch's error`);
        } else {assert.equal(
            done[0],
            cause,
            `${what}: onDone gets the cancellation the block ends with`,
          );}
      },
    };
  });
  assert.equal(live, 0);
});

Deno.test("actor on a CoroutineScope of the caller's own whose launch gives the handler a task with no AbortSignal (or one the job's cancel does not abort) and returns a kcoro Job: that job's cancellation cancels the mailbox at once, as a task's does (Kotlin's onCancelling), while the handler still runs", async () => {
  // README, "Producers, actors and native scopes from TypeScript": cancelling the actor's scope
  // stops it at once. Before, such a task was unwatched: its mailbox took messages until the
  // task completed, and dropped them only then.
  for (const sig of TASK_SIGNALS) {
    const what = `signal ${sig}`;
    const stop = new AbortController();
    const gate = Promise.withResolvers<void>(); // the handler, unaware of the cancel, waits on it
    const dropped: number[] = [];
    const done: unknown[] = [];
    let job!: ReturnType<CoroutineScope["launch"]>;
    const seen = await within(
      coroutineScope((real) => {
        const scope = launchingForeignTasks(real, sig, stop.signal, (j) => (job = j));
        const a = actor<number>(scope, counted(() => gate.promise), {
          capacity: 4,
          onUndeliveredElement: (m) => dropped.push(m),
          onDone: (cause) => done.push(cause),
        });
        const got: string[] = [a.trySend(1).state]; // queued
        job.cancel();
        got.push(a.trySend(2).state, `dropped [${dropped}]`, `done ${done.length}`);
        gate.resolve();
        return got;
      }),
      10_000,
      `${what}: the real scope's end`,
    );
    assert.deepEqual(seen, ["ok", "closed", "dropped [1]", "done 0"], what); // 1 dropped at once
    assert.equal(job.state, "cancelled", what);
    assert.equal(done.length, 1, what);
    assert.ok(done[0] instanceof CancellationError, `${what}: onDone ${done[0]}`);
    assert.equal(stop.signal.aborted, false, what); // the caller's: not kcoro's to abort
  }
  assert.equal(live, 0);
});

Deno.test("actor on a CoroutineScope of the caller's own whose launch runs the block at once under a task not kcoro's, then fails: a handler that throws before its first await still gets onDone, once", async () => {
  // A handler that is no async function and throws at once ended the block before the launch
  // failed (nothing abandoned yet), and the launch's failure then found no job to attach
  // onDone to: it never ran.
  const own = new Error("the caller's launch");
  for (const how of ["throws", "returns no Job"] as const) {
    const done: unknown[] = [];
    const stop = new AbortController();
    const foreign = { signal: stop.signal, job: { state: "active" } } as unknown as CoroutineScope;
    let started: Promise<unknown> | null = null;
    const scope = {
      context: Context.empty,
      launch: (block: (task: CoroutineScope) => unknown) => {
        started = block(foreign) as Promise<unknown>;
        if (how === "throws") throw own;
        return 1;
      },
    } as unknown as CoroutineScope;
    const failure = new Error("the handler's own");
    assert.throws(
      () =>
        actor<number>(scope, () => {
          throw failure;
        }, { onDone: (cause) => done.push(cause) }),
      how === "throws" ? (e) => e === own : { name: "TypeError" },
      how,
    );
    const [ended] = await within(Promise.allSettled([started!]), 10_000, `${how}: the block's end`);
    assert.equal(ended.status, "rejected", how);
    assert.equal(done.length, 1, `${how}: onDone ran once: ${done.length}`);
    assert.equal(done[0], (ended as PromiseRejectedResult).reason, how);
    assert.equal(stop.signal.aborted, false, how);
  }
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch gives the block a task whose job is not a kcoro Job, then throws or returns no Job: the block ends cancelled, started at once or deferred, also when the task has no signal", async () => {
  // A task with no signal (or one that is no AbortSignal, or a getter that throws) threw a
  // TypeError (or the getter's error) at its addEventListener, out of the block, as an actor's
  // did (3d67f74): the producer ended failed with it, not cancelled.
  await eachForeignLaunch("block", () => {
    let ran = false;
    const body = counted(async (out: Channel<number>) => {
      ran = true;
      await out.send(1); // rejects: the cleanup freed the channel
    });
    return { call: (scope) => produce<number>(scope, body), ran: () => ran };
  });
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch gives the block a task with no AbortSignal and returns a Job: the producer runs unwatched, its channel closed as the task completes, and its consumer's cancel still cancels the task", async () => {
  // Its addEventListener threw a TypeError (or the getter's error) out of the block: the producer
  // failed before its first send, and the real scope with it.
  for (const sig of TASK_SIGNALS) {
    for (const end of ["completes", "consumer cancels"] as const) {
      const what = `signal ${sig}, ${end}`;
      const stop = new AbortController();
      let job!: ReturnType<CoroutineScope["launch"]>;
      const got = await within(
        coroutineScope(async (real) => {
          // A task of the caller's own (its job none of kcoro's) run by a real one.
          const scope = launchingForeignTasks(real, sig, stop.signal, (j) => (job = j));
          using ch = produce<number>(
            scope,
            counted(async (out: Channel<number>) => {
              // The consumer's cancel rejects a waiting send, its dispose a later one.
              for (let i = 1; end === "consumer cancels" || i <= 3; i++) await out.send(i);
            }),
            { capacity: 1 },
          );
          if (end === "completes") return await drain(ch); // ends: closed as the task completed
          const first = await ch.receive();
          ch.cancel();
          return [first];
        }),
        10_000,
        `${what}: the real scope's end`,
      ); // resolves: no failure
      if (end === "completes") {
        assert.deepEqual(got, [1, 2, 3], what);
        assert.equal(job.state, "completed", what);
      } else {
        assert.deepEqual(got, [1], what);
        assert.equal(job.state, "cancelled", what); // cancelled, not failed with the dispose's error
      }
      assert.equal(stop.signal.aborted, false, what); // the caller's signal: not kcoro's to abort
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch gives the block a task with no AbortSignal (or one the job's cancel does not abort) and returns a kcoro Job: that job's cancellation closes the channel at once, as a task's does, while the block still runs", async () => {
  // README, "Producers, actors and native scopes from TypeScript": a cancellation closes the
  // channel at once. Before, such a task was unwatched: its channel closed only as the task
  // completed, its receivers waiting on a block that did not know it was cancelled.
  for (const sig of TASK_SIGNALS) {
    const stop = new AbortController();
    const gate = Promise.withResolvers<void>(); // the block, unaware of the cancel, waits on it
    let blockRunning = true;
    let job!: ReturnType<CoroutineScope["launch"]>;
    const seen = await within(
      coroutineScope(async (real) => {
        const scope = launchingForeignTasks(real, sig, stop.signal, (j) => (job = j));
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>) => {
            await out.send(1); // buffered
            await gate.promise;
            blockRunning = false;
          }),
          { capacity: 4 },
        );
        const got: string[] = [`received ${await ch.receive()}`];
        job.cancel();
        const settled = ch.receiveCatching().then((r) => {
          const cause = r.state === "closed" && r.cause instanceof CancellationError
            ? " with the CancellationError"
            : "";
          got.push(`${r.state}${cause}${blockRunning ? " while the block runs" : ""}`);
        });
        for (let i = 0; i < 100 && got.length === 1; i++) await null; // bounded turns
        gate.resolve();
        await settled;
        return got;
      }),
      10_000,
      `signal ${sig}: the real scope's end`,
    );
    assert.deepEqual(
      seen,
      ["received 1", "closed with the CancellationError while the block runs"],
      `signal ${sig}`,
    );
    assert.equal(job.state, "cancelled", `signal ${sig}`);
    assert.equal(stop.signal.aborted, false, `signal ${sig}`); // the caller's: not kcoro's to abort
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch gives the block a task with no AbortSignal (or one the job's cancel does not abort) and returns a kcoro Job: a send of the block's waiting on the full buffer is woken by that job's cancellation, its value to onUndeliveredElement, as a task's bound send is, also one made before launch returned", async () => {
  // README, "Producers, actors and native scopes from TypeScript": `out.send` is bound to the
  // task. Before, such a task's sends were bound to nothing (or to the caller's signal only):
  // the cancel closed the channel, but a send waiting on the full buffer waited on (a close
  // fails no waiting send), and with nobody receiving, the cancelled task and its scope hung.
  // Rendezvous: the block's first send, made as the launch runs it, before it returned the Job.
  for (const [sig, capacity] of TASK_SIGNALS.flatMap((s) => [[s, 1], [s, "rendezvous"]] as const)) {
    const what = `signal ${sig}, capacity ${capacity}`;
    const stop = new AbortController();
    const send = sendCancelledWhileWaiting(capacity);
    let job!: ReturnType<CoroutineScope["launch"]>;
    const seen = await within(
      coroutineScope(async (real) => {
        const scope = launchingForeignTasks(real, sig, stop.signal, (j) => (job = j));
        // Its dispose, as the block returns, frees a send still waiting: looked at before.
        using ch = produce<number>(scope, send.block, send.options);
        return await send.cancelled(ch, () => job.cancel());
      }),
      10_000,
      `${what}: the real scope's end`,
    );
    assert.deepEqual(seen, send.expected, what);
    assert.equal(job.state, "cancelled", what);
    assert.equal(stop.signal.aborted, false, what); // the caller's: not kcoro's to abort
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch gives the block a task of any signal and returns a kcoro Job: a send of the block's with a signal of its own, waiting on the full buffer, is woken by that job's cancellation, its value to onUndeliveredElement, and leaves no listener on its own signal nor the task's", async () => {
  // The send listens to its own signal, the task's (an AbortSignal the job's cancel does not
  // abort, one the caller made) and the Job's end, and removes each listener as it settles.
  for (const sig of TASK_SIGNALS) {
    const what = `signal ${sig}`;
    const stop = new AbortController();
    const mine = new AbortController();
    const dropped: number[] = [];
    let sending = false;
    let outcome: unknown = "waiting";
    let listenedTo = -1;
    let job!: ReturnType<CoroutineScope["launch"]>;
    await within(
      coroutineScope(async (real) => {
        const scope = launchingForeignTasks(real, sig, stop.signal, (j) => (job = j));
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>) => {
            await out.send(1); // buffered
            sending = true;
            await out.send(2, { signal: mine.signal }).then(() => (outcome = "sent"), (e) => {
              outcome = e;
              throw e;
            });
          }),
          { capacity: 1, onUndeliveredElement: (v) => dropped.push(v) },
        );
        for (let i = 0; i < 100 && !sending; i++) await null; // bounded turns
        listenedTo = abortListeners(mine.signal);
        job.cancel();
        for (let i = 0; i < 100 && outcome === "waiting"; i++) await null;
        assert.equal(await ch.receive(), 1, what); // sent before: kept
      }),
      10_000,
      `${what}: the real scope's end`,
    );
    assert.equal(listenedTo, 1, `${what}: the send listens to its own signal`);
    assert.ok(outcome instanceof CancellationError, `${what}: ${outcome}`);
    assert.deepEqual(dropped, [2], what);
    assert.equal(job.state, "cancelled", what);
    assert.equal(stop.signal.aborted, false, what); // the caller's: not kcoro's to abort
    assert.equal(abortListeners(mine.signal), 0, `${what}: none left on its own signal`);
    assert.equal(abortListeners(stop.signal), 0, `${what}: none left on the task's signal`);
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose launch runs the block as a kcoro task and returns another kcoro Job: a send of the block's waiting on the full buffer is woken by that Job's cancellation, its value to onUndeliveredElement, also one made before launch returned", async () => {
  // That Job's cancel closes the channel at once (its signal is watched), so its sends end with
  // it too, as under a task of the caller's own. Before, the sends stayed bound to the task's own
  // signal alone, which that cancel does not abort: the send waited on (a close fails no waiting
  // send) and its value was received after the close; with nobody receiving, the task and its
  // scope hung.
  for (const start of ["at once", "deferred"] as const) {
    for (const capacity of [1, "rendezvous"] as const) {
      const what = `start ${start}, capacity ${capacity}`;
      const other = new CompletableDeferred<void>(); // no task's
      const send = sendCancelledWhileWaiting(capacity);
      let task!: ReturnType<CoroutineScope["launch"]>;
      const seen = await within(
        coroutineScope(async (real) => {
          let deferred: ((task: CoroutineScope) => unknown) | null = null;
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) => {
              if (start === "at once") task = real.launch(block); // runs it to its first await
              else deferred = block;
              return other;
            },
          } as unknown as CoroutineScope;
          using ch = produce<number>(scope, send.block, send.options);
          if (deferred !== null) task = real.launch(deferred); // the caller's launch starts it late
          return await send.cancelled(ch, () => other.cancel());
        }),
        10_000,
        `${what}: the real scope's end`,
      );
      assert.deepEqual(seen, send.expected, what);
      assert.equal(other.state, "cancelled", what);
      assert.equal(task.state, "cancelled", `${what}: the block let the cancellation out`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose launch runs the block at once and then throws: a block that did not watch its signal and then uses its channel (freed by that cleanup) ends cancelled, not failed with the freed channel's InvalidHandleError", async () => {
  // The cleanup cancels the task and frees the channel while the block still runs. A producer's
  // send on it then ended the task as cancelled (its consumer's dispose rule), but an actor's
  // receive let out "Cannot receive: the channel was disposed", which failed the real scope.
  const own = new Error("the caller's launch");
  for (const which of ["produce", "actor"] as const) {
    const gate = Promise.withResolvers<void>();
    let signal: AbortSignal | null = null;
    let used: unknown = undefined;
    await within(
      coroutineScope((real) => {
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) => {
            real.launch(block); // runs the block at once, to its first await
            throw own;
          },
        } as unknown as CoroutineScope;
        const body = counted(async (ch: Channel<number>, task: CoroutineScope) => {
          signal = task.signal;
          await gate.promise; // busy elsewhere, its signal not watched
          try {
            if (which === "produce") await ch.send(1);
            else await ch.receive();
          } catch (e) {
            used = e;
            throw e;
          }
        });
        assert.throws(
          () => which === "produce" ? produce<number>(scope, body) : actor<number>(scope, body),
          (e) => e === own,
          which,
        );
        assert.equal((signal as AbortSignal | null)?.aborted, true, `${which}: cancelled`);
        gate.resolve();
      }),
      10_000,
      `${which}: the real scope's end`,
    ); // resolves: the task ended cancelled, no failure
    assert.ok(used instanceof Error, `${which}: the channel's operation failed: ${String(used)}`);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor take a task of the caller's own whose job getter throws as naming no kcoro Job, as a signal getter that throws is no signal: the block runs and ends as under such a task", async () => {
  // Before, the getter's throw failed the block (and so the scope), where a throwing `signal`
  // getter left the task unwatched (`taskSignal`).
  for (const which of ["produce", "actor"] as const) {
    const seen = await within(
      coroutineScope(async (real) => {
        const scope = launchingTasksWithJob(real, () => {
          throw new Error("no job here");
        });
        if (which === "produce") {
          using ch = produce<number>(
            scope,
            counted(async (out: Channel<number>) => {
              await out.send(1);
            }),
            { capacity: 1 },
          );
          return [await ch.receive(), (await ch.receiveCatching()).state];
        }
        const got: number[] = [];
        const a = actor<number>(
          scope,
          counted(async (mailbox: Channel<number>) => {
            for await (const m of mailbox) got.push(m);
          }),
        );
        await a.send(1);
        a.close();
        await a.job.join();
        return [got[0], a.job.state];
      }),
      10_000,
      which,
    );
    assert.deepEqual(seen, which === "produce" ? [1, "closed"] : [1, "completed"], which);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor read the job of a task of the caller's own once: a getter for it ran five times (a producer's) or twice (an actor's)", async () => {
  // The task given the block is the real one but for `job`, a getter that counts its reads and
  // answers the real task's Job (whose signal is the task's: the producer's sends are bound to
  // it, and its cancel reaches the channel).
  for (const which of ["produce", "actor"] as const) {
    let reads = 0;
    const seen = await within(
      coroutineScope(async (real) => {
        const scope = launchingTasksWithJob(real, (task) => {
          reads++;
          return task.job;
        });
        if (which === "produce") {
          using ch = produce<number>(
            scope,
            counted(async (out: Channel<number>) => {
              await out.send(1);
            }),
            { capacity: 1 },
          );
          return [await ch.receive(), (await ch.receiveCatching()).state];
        }
        const a = actor<number>(
          scope,
          counted(async (mailbox: Channel<number>) => {
            for await (const _ of mailbox) break;
          }),
        );
        await a.send(1);
        await a.job.join();
        return [1, a.job.state];
      }),
      10_000,
      `${which}: the real scope's end`,
    );
    assert.deepEqual(seen, [1, which === "produce" ? "closed" : "completed"], which);
    assert.equal(reads, 1, `${which}: the task's job was read ${reads} times`);
  }
  assert.equal(live, 0);
});

/**
 * Runs `body` under a coroutineScope (`real`), handing it a CoroutineScope of the caller's own
 * whose launch runs the block on `real` under a task naming a long-lived Job of the caller's (no
 * task's) as its job, and `task()`, the Job that launch returned. `deferred`: that Job is made at
 * the launch, its block run only at `run()` (a no-op otherwise). Then asserts, for `label`, that
 * the named Job is still active: it is not the actor's to cancel.
 */
async function underScopeNamingJob(
  label: string,
  deferred: boolean,
  body: (
    scope: CoroutineScope,
    task: () => ReturnType<CoroutineScope["launch"]>,
    run: () => void,
  ) => Promise<void>,
): Promise<void> {
  const named = new CompletableDeferred<void>(); // long-lived, and no task's
  await within(
    coroutineScope(async (real) => {
      let task!: ReturnType<CoroutineScope["launch"]>;
      let later: (() => void) | null = null;
      const scope = {
        context: real.context,
        launch: (block: (task: CoroutineScope) => unknown) => {
          const run = (t: CoroutineScope) =>
            block(
              { context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope,
            );
          if (!deferred) return task = real.launch(run);
          // Deferred: the Job returned is made now, its block run later.
          task = real.launch(async (t) => {
            await new Promise<void>((r) => later = r);
            return run(t);
          });
          return task;
        },
      } as unknown as CoroutineScope;
      await body(scope, () => task, () => (later as (() => void) | null)?.());
    }),
    10_000,
    label,
  );
  assert.equal(named.state, "active", `${label}: the named Job is not the actor's to cancel`);
  named.complete();
}

Deno.test("actor on a CoroutineScope of the caller's own whose task names a long-lived Job: the actor's end cancels its mailbox, not that Job", async () => {
  // README: the first of the two Jobs to complete ends the actor (its mailbox cancelled, onDone
  // run); the other is not the actor's to cancel. Before, the mailbox's cancel at the actor's end
  // cancelled the Job its task named (`Mailbox.cancel` → `_job`): a long-lived Job of the
  // caller's, not the task that ran the handler, ended cancelled with it.
  for (const start of ["at once", "deferred"] as const) {
    const done: unknown[] = [];
    await underScopeNamingJob(start, start === "deferred", async (scope, task, run) => {
      const a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>) => {
          for await (const _ of mailbox) break;
        }),
        { onDone: (cause) => done.push(cause) },
      );
      run();
      await a.send(1);
      await task().join();
      assert.equal(task().state, "completed", start);
      assert.deepEqual(done, [undefined], `${start}: onDone ran as the task completed`);
      assert.equal(a.trySend(2).state, "closed", `${start}: the mailbox takes no more`);
    });
  }
  assert.equal(live, 0);
});

Deno.test("actor on a CoroutineScope of the caller's own: the mailbox's cancel cancels the Job that runs the handler, never a long-lived Job the task merely names", async () => {
  // README: the mailbox's cancel cancels the task's own kcoro Job (kcoro's task itself, or a Job
  // whose signal is the task's), else the Job `launch` returned. Before, it cancelled whatever
  // Job the task named: a cancel of the returned Job (the task running the handler) reached the
  // mailbox through the task's signal and cancelled the caller's long-lived Job with it.
  for (const how of ["the returned Job's cancel", "the handler's mailbox.cancel()"] as const) {
    const done: unknown[] = [];
    await underScopeNamingJob(how, false, async (scope, task) => {
      const started = Promise.withResolvers<void>();
      const a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>) => {
          await null; // past launch's return
          started.resolve();
          if (how === "the handler's mailbox.cancel()") mailbox.cancel();
          for await (const _ of mailbox) { /* none */ }
        }),
        { onDone: (cause) => done.push(cause) },
      );
      await started.promise;
      if (how === "the returned Job's cancel") task().cancel();
      await task().join();
      assert.equal(task().state, "cancelled", `${how}: the task that ran the handler`);
      assert.equal(done.length, 1, `${how}: onDone ran once`);
      assert.ok(done[0] instanceof CancellationError, how);
      assert.equal(a.trySend(1).state, "closed", `${how}: the mailbox takes no more`);
    });
  }
  assert.equal(live, 0);
});

Deno.test("actor: a mailbox cancel cancels the task's own kcoro Job, on kcoro's own scope and where a scope of the caller's own returns another Job", async () => {
  // The task's own Job (its signal the task's) is the Job that runs the handler: the mailbox's
  // cancel cancels it, not the Job `launch` returned (here a long-lived one of the caller's). On
  // kcoro's own scope the two are one Job, cancelled as ever.
  for (const where of ["kcoro's own scope", "a scope returning another Job"] as const) {
    const other = new CompletableDeferred<void>(); // returned: long-lived, no task's
    await within(
      coroutineScope(async (real) => {
        let own!: ReturnType<CoroutineScope["launch"]>;
        const scope = where === "kcoro's own scope" ? real : {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) => {
            own = real.launch((t) =>
              block(
                { context: t.context, signal: t.signal, job: t.job } as unknown as CoroutineScope,
              )
            );
            return other;
          },
        } as unknown as CoroutineScope;
        const a = actor<number>(
          scope,
          counted(async (mailbox: Channel<number>) => {
            await null;
            mailbox.cancel();
            for await (const _ of mailbox) { /* none */ }
          }),
        );
        if (where === "kcoro's own scope") own = a.job as ReturnType<CoroutineScope["launch"]>;
        await own.join();
        assert.equal(own.state, "cancelled", `${where}: the task's own Job`);
        assert.equal(a.trySend(1).state, "closed", where);
      }),
      10_000,
      where,
    );
    assert.equal(other.state, "active", `${where}: the returned Job is not the handler's`);
    other.complete();
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own: only the task's own kcoro Job (the task itself, or the Job whose signal is the task's) is the producer's own, whose cancel() cancels the channel; a distinct Job the task names, with a signal of its own, or the Job launch returned, closes it; the consumer's dispose never cancels the named Job", async () => {
  // src/produce.ts: a Job is judged the task's own by identity or by its signal being the task's,
  // and no two kcoro Jobs share a signal (each its own controller), so a long-lived Job the task
  // merely names is never taken for the one running the block. Before, the producer took any
  // kcoro Job its task named as its own (`_job`): the consumer's dispose, after the producer
  // ended, cancelled that long-lived Job.
  const cases = [
    ["the task names the running Job, its cancel()", "own", "cancelled"],
    ["the task names a long-lived Job, the returned Job's cancel()", "returned", "closed"],
    // Its completion ends the producer (the first of the two to complete does): closed.
    ["the task names a long-lived Job, that Job's cancel()", "named", "closed"],
  ] as const;
  for (const [what, cancel, expected] of cases) {
    const named = new CompletableDeferred<void>(); // long-lived, no task's; a signal of its own
    const dropped: number[] = [];
    const gate = Promise.withResolvers<void>();
    let sent = false;
    let seen: string | undefined;
    await within(
      coroutineScope(async (real) => {
        let running!: ReturnType<CoroutineScope["launch"]>;
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) =>
            running = real.launch((t) =>
              block(
                {
                  context: t.context,
                  signal: t.signal,
                  job: cancel === "own" ? t : named,
                } as unknown as CoroutineScope,
              )
            ),
        } as unknown as CoroutineScope;
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>) => {
            await out.send(1);
            sent = true;
            await gate.promise;
          }),
          { capacity: 2, onUndeliveredElement: (v) => dropped.push(v) },
        );
        await until(() => sent, `${what}: sent`);
        if (cancel === "named") named.cancel();
        else running.cancel();
        const r = ch.tryReceive();
        seen = r.state === "ok"
          ? (ch.isClosedForSend ? "closed" : "open")
          : r.state === "closed" && dropped.length === 1
          ? "cancelled"
          : `${r.state}, dropped [${dropped}]`;
        gate.resolve();
        await running.join();
      }),
      10_000,
      what,
    );
    assert.equal(seen, expected, what);
    if (cancel !== "named") assert.equal(named.state, "active", `${what}: not the named Job's`);
    named.complete();
  }
  assert.equal(live, 0);
});

/**
 * A CoroutineScope of the caller's own (on `real`) whose launch keeps the block and returns
 * `returned`, as one that defers the start; `start()` then runs the kept block on a task naming
 * `job`, with `signal`.
 */
function keptLaunch(
  real: CoroutineScope,
  returned: unknown,
  job: unknown,
  signal: AbortSignal,
): { scope: CoroutineScope; start: () => unknown } {
  let kept: ((task: CoroutineScope) => unknown) | null = null;
  const scope = {
    context: real.context,
    launch: (block: (task: CoroutineScope) => unknown) => {
      kept = block;
      return returned;
    },
  } as unknown as CoroutineScope;
  const task = { context: real.context, signal, job } as unknown as CoroutineScope;
  return { scope, start: () => kept!(task) };
}

Deno.test("actor started late under a task of the caller's own naming a Job completed already ends at once: its handler never runs on the freed mailbox, and the task ends cancelled, not failing the scope", async () => {
  // Before, the task's named Job, completed, ended the actor at once (its mailbox freed, onDone
  // run), and the handler then ran on the freed mailbox: its receive's InvalidHandleError failed
  // the task and the scope.
  const named = new CompletableDeferred<void>();
  named.complete(); // the task names a Job completed before its handler starts
  const other = new CompletableDeferred<void>(); // what the launch returns: long-lived
  const controller = new AbortController(); // the task's signal, the caller's
  const done: unknown[] = [];
  let ran = false;
  let task!: ReturnType<CoroutineScope["launch"]>;
  let a!: ReturnType<typeof actor<number>>;
  let thrown: unknown;
  await within(
    coroutineScope(async (real) => {
      const { scope, start } = keptLaunch(real, other, named, controller.signal);
      a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>) => {
          ran = true;
          for await (const _ of mailbox) break;
        }),
        { onDone: (cause) => done.push(cause) },
      );
      task = real.launch(async () => {
        try {
          await start();
        } catch (e) {
          thrown = e;
          throw e;
        }
      });
      await task.join();
    }),
    10_000,
    "the real scope's end",
  );
  assert.equal(ran, false, "the handler never ran on the freed mailbox");
  assert.equal(task.state, "cancelled");
  assert.ok(thrown instanceof CancellationError, String(thrown));
  assert.equal(
    (thrown as Error).message,
    "Actor was cancelled: a Job it ends with completed before its handler began",
  );
  assert.deepEqual(done, [undefined], "onDone ran once, as the named Job completed");
  assert.equal(a.trySend(1).state, "closed");
  assert.equal(abortListeners(controller.signal), 0, "no listener left on the task's signal");
  assert.equal(abortListeners(other.signal), 0, "nor on the returned Job's");
  other.complete();
  assert.equal(live, 0);
});

Deno.test("produce started late under a task of the caller's own naming a Job completed already ends at once, its block never run, and leaves no listener on the task's signal", async () => {
  // Before, `endWithTask` ended the producer at once, and the block then listened to the task's
  // signal (`closeOnCancel`) after `end` had run its removals: the listener stayed for good.
  // Then the block ran on the closed channel (src/produce.ts, `ended`): the task now ends
  // cancelled without running it, as an actor's.
  const named = new CompletableDeferred<void>();
  named.complete(); // the task names a Job completed before its block starts
  const other = new CompletableDeferred<void>(); // what the launch returns: long-lived
  const controller = new AbortController(); // the task's signal, the caller's
  let ran = false;
  await within(
    coroutineScope(async (real) => {
      const { scope, start } = keptLaunch(real, other, named, controller.signal);
      using ch = produce<number>(
        scope,
        counted(() => {
          ran = true;
        }),
        { capacity: 1 },
      );
      const task = real.launch(() => start());
      await task.join();
      assert.equal(ran, false, "the block never ran");
      assert.equal(task.isCancelled, true, "the task ended cancelled");
      assert.equal(ch.isClosedForSend, true, "the producer ended with the named Job");
      assert.equal(abortListeners(controller.signal), 0, "no listener left on the task's signal");
      assert.equal(abortListeners(other.signal), 0, "nor on the returned Job's");
    }),
    10_000,
    "the real scope's end",
  );
  other.complete();
  assert.equal(live, 0);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose launch returns a kcoro Job other than the task's: the task completing first ends the producer (its channel closes) or the actor (onDone runs), and leaves no listener on that Job's signal nor completion handler on it", async () => {
  // Before, only the returned Job's completion ended them: the task's completion left the
  // channel open (its receivers waiting), the mailbox taking messages, onDone waiting, and a
  // listener and a completion handler on that Job until it completed too: a leak on a
  // long-lived one (a scope's, say), one of each per call.
  for (const which of ["produce", "actor"] as const) {
    for (const start of ["at once", "deferred"] as const) {
      const what = `${which}, start ${start}`;
      const other = new CompletableDeferred<void>(); // long-lived, and no task's
      const handlers = () => handlerCountOf(other);
      const done: unknown[] = [];
      await within(
        coroutineScope(async (real) => {
          let deferred: ((task: CoroutineScope) => unknown) | null = null;
          let task!: ReturnType<CoroutineScope["launch"]>;
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) => {
              if (start === "at once") task = real.launch(block); // runs it to its first await
              else deferred = block;
              return other;
            },
          } as unknown as CoroutineScope;
          const body = counted(async (ch: Channel<number>) => {
            if (which === "produce") await ch.send(1);
          });
          using ch = which === "produce" ? produce<number>(scope, body, { capacity: 1 }) : null;
          const a = which === "actor"
            ? actor<number>(scope, body, { onDone: (cause) => done.push(cause) })
            : null;
          // The probes see what this call left (or they would pass whatever it did not).
          assert.equal(abortListeners(other.signal), 1, `${what}: the Job's signal is watched`);
          assert.equal(handlers(), 1, `${what}: a completion handler on the Job`);
          if (deferred !== null) task = real.launch(deferred); // the caller's launch starts it late
          await task.join();
          assert.equal(task.state, "completed", what);
          assert.equal(abortListeners(other.signal), 0, `${what}: no listener left on its signal`);
          assert.equal(handlers(), 0, `${what}: no completion handler left on it`);
          if (ch !== null) {
            assert.equal(ch.isClosedForSend, true, `${what}: the channel closed`);
            assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, what);
            const last = ch.tryReceive();
            assert.equal(last.state, "closed", what);
            assert.equal((last as { cause?: unknown }).cause, undefined, `${what}: a clean end`);
          } else {
            assert.deepEqual(done, [undefined], `${what}: onDone ran, as the task completed`);
            assert.equal(a!.trySend(2).state, "closed", `${what}: the mailbox takes no more`);
          }
          assert.equal(other.isActive, true, what);
        }),
        10_000,
        `${what}: the real scope's end`,
      );
      other.complete();
      assert.deepEqual(done, which === "actor" ? [undefined] : [], `${what}: onDone ran once`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose launch returns a Job of another kind than kcoro's, the task's own kcoro's: the task's completion ends them (the channel closes, onDone runs), and that Job's later completion changes nothing", async () => {
  // Before, only the returned Job's completion ended them: the channel stayed open, the
  // mailbox took messages and onDone waited until the caller's Job completed, whenever that was.
  // That Job's handle is not disposed (a Job of another kind's dispose is the caller's code).
  for (const which of ["produce", "actor"] as const) {
    for (const start of ["at once", "deferred"] as const) {
      const what = `${which}, start ${start}`;
      const handlers: ((cause: unknown) => void)[] = [];
      let disposed = 0;
      const other = {
        invokeOnCompletion(handler: (cause: unknown) => void) {
          handlers.push(handler);
          return { [Symbol.dispose]: () => disposed++ };
        },
        cancel() {},
      };
      const done: unknown[] = [];
      await within(
        coroutineScope(async (real) => {
          let deferred: ((task: CoroutineScope) => unknown) | null = null;
          let task!: ReturnType<CoroutineScope["launch"]>;
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) => {
              if (start === "at once") task = real.launch(block);
              else deferred = block;
              return other;
            },
          } as unknown as CoroutineScope;
          const body = counted(async (ch: Channel<number>) => {
            if (which === "produce") await ch.send(1);
          });
          using ch = which === "produce" ? produce<number>(scope, body, { capacity: 1 }) : null;
          const a = which === "actor"
            ? actor<number>(scope, body, { onDone: (cause) => done.push(cause) })
            : null;
          assert.equal(handlers.length, 1, what);
          if (deferred !== null) task = real.launch(deferred);
          await task.join();
          assert.equal(task.state, "completed", what);
          if (ch !== null) {
            assert.equal(ch.isClosedForSend, true, `${what}: the channel closed`);
            assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, what);
            assert.deepEqual(ch.tryReceive(), { state: "closed" }, `${what}: a clean end`);
          } else {
            assert.deepEqual(done, [undefined], `${what}: onDone ran, as the task completed`);
            assert.equal(a!.trySend(2).state, "closed", `${what}: the mailbox takes no more`);
          }
        }),
        10_000,
        `${what}: the real scope's end`,
      );
      for (const handler of handlers) handler(new CancellationError("the caller's Job, later"));
      assert.deepEqual(done, which === "actor" ? [undefined] : [], `${what}: onDone ran once`);
      assert.equal(disposed, 0, what);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose task's job is a long-lived kcoro Job other than the one launch returns: the returned Job completing first ends them, and leaves no completion handler on the task's", async () => {
  // The other way round from the test before the one above: the first of the two to complete
  // ends the producer or the actor, and the handler left on the other goes, whichever it is.
  for (const which of ["produce", "actor"] as const) {
    const what = which;
    // The task's job, as its getter answers: a scope's, kept from completing by a child that
    // waits on a gate, so that it keeps its handlers (a completion would have run and dropped
    // them). The actor's end cancels its mailbox only, not that Job, which the task merely names
    // (it did before: `Mailbox.cancel` cancelled it); it stays active.
    const holder = createScope();
    const gate = Promise.withResolvers<void>();
    holder.launch(counted(() => gate.promise));
    const longLived = holder.job;
    const handlers = () => handlerCountOf(longLived as JobSupport);
    const before = handlers();
    const done: unknown[] = [];
    await within(
      coroutineScope(async (real) => {
        let task!: ReturnType<CoroutineScope["launch"]>;
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) =>
            task = real.launch((t) =>
              block(
                {
                  context: t.context,
                  signal: t.signal,
                  job: longLived,
                } as unknown as CoroutineScope,
              )
            ),
        } as unknown as CoroutineScope;
        const body = counted(async (ch: Channel<number>) => {
          if (which === "produce") await ch.send(1);
        });
        using ch = which === "produce" ? produce<number>(scope, body, { capacity: 1 }) : null;
        if (which === "actor") actor<number>(scope, body, { onDone: (c) => done.push(c) });
        assert.equal(handlers(), before + 1, `${what}: a completion handler on the task's job`);
        await task.join();
        assert.equal(handlers(), before, `${what}: none left on it`);
        assert.equal(longLived.state, "active", `${what}: not cancelled by the end`);
        if (ch !== null) {
          assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, what);
          assert.deepEqual(ch.tryReceive(), { state: "closed" }, `${what}: a clean end`);
        } else assert.deepEqual(done, [undefined], `${what}: onDone ran`);
      }),
      10_000,
      `${what}: the real scope's end`,
    );
    holder.cancel();
    gate.resolve();
    await within(longLived.join(), 10_000, `${what}: the holder's end`);
    assert.deepEqual(done, which === "actor" ? [undefined] : [], `${what}: onDone ran once`);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor on a CoroutineScope of the caller's own whose task names a long-lived kcoro Job: that Job's cancel stops them at once, not only its completion (the channel closed and a waiting send woken, the mailbox cancelled), at once and deferred", async () => {
  // src/produce.ts and src/actor.ts, `watchNamed`: the named Job's signal is watched as the
  // returned Job's. Before, only its completion ended them: cancelled while it waited for a
  // child, it left the producer waiting in its send on the full buffer (nobody receiving) and the
  // actor taking messages, until that Job completed (here: never, while the test waits).
  for (const which of ["produce", "actor"] as const) {
    for (const start of ["at once", "deferred"] as const) {
      const what = `${which}, ${start}`;
      // The named Job: a scope's, kept cancelling (not completed) by a child waiting on a gate.
      const holder = createScope();
      const gate = Promise.withResolvers<void>();
      holder.launch(counted(() => gate.promise));
      const named = holder.job;
      const listening = () => abortListeners(signalOfJob(named as JobSupport));
      const before = listening();
      const done: unknown[] = [];
      await within(
        coroutineScope(async (real) => {
          let task!: ReturnType<CoroutineScope["launch"]>;
          const go = Promise.withResolvers<void>(); // a deferred block's start
          const scope = {
            context: real.context,
            launch: (block: (task: CoroutineScope) => unknown) =>
              task = real.launch(async (t) => {
                if (start === "deferred") await go.promise;
                return block(
                  { context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope,
                );
              }),
          } as unknown as CoroutineScope;
          let sent = 0;
          let receiving = false;
          const body = counted(async (ch: Channel<number>) => {
            if (which === "produce") { for (;;) await ch.send(++sent); }
            receiving = true;
            for await (const _ of ch) { /* none sent */ }
          });
          using ch = which === "produce" ? produce<number>(scope, body, { capacity: 1 }) : null;
          const a = which === "actor"
            ? actor<number>(scope, body, { onDone: (c) => done.push(c) })
            : null;
          go.resolve();
          if (ch !== null) await until(() => sent === 2, `${what}: waiting in its second send`);
          else await until(() => receiving, `${what}: the handler receiving`);
          holder.cancel();
          assert.equal(named.state, "cancelling", `${what}: cancelled, not completed`);
          await within(task.join(), 5_000, `${what}: the task ends at the named Job's cancel`);
          assert.equal(task.state, "cancelled", what);
          assert.equal(named.state, "cancelling", `${what}: still not completed`);
          if (ch !== null) {
            const seen = [ch.tryReceive().state, ch.tryReceive().state];
            assert.deepEqual(seen, ["ok", "closed"], `${what}: what was sent, then the close`);
          } else {
            assert.equal(done.length, 1, `${what}: onDone ran`);
            assert.ok(done[0] instanceof CancellationError, `${what}: ${done[0]}`);
            assert.equal(a!.trySend(1).state, "closed", `${what}: the mailbox takes no more`);
          }
          assert.equal(listening(), before, `${what}: no listener left on the named Job`);
        }),
        10_000,
        what,
      );
      gate.resolve();
      await within(named.join(), 10_000, `${what}: the holder's end`);
      assert.equal(done.length, which === "actor" ? 1 : 0, `${what}: onDone ran once`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("produce on a CoroutineScope of the caller's own whose task names a long-lived kcoro Job: that Job's failure (its children still running) closes the channel at once with its cancellation, as its cancel does, at once and deferred", async () => {
  // src/produce.ts, `watchNamed`: the named Job never runs the block, so its failure reaches the
  // producer as a cancellation (its signal's reason), as an actor's mailbox is cancelled with it.
  // For a while it was taken for the failure of the Job running the block, whose completion
  // closes the channel with it (`closeOnCancel`): the sends ended, but the channel stayed open,
  // and a block that went on past its rejected send left it open until the task completed, then
  // closed it cleanly, its receivers never told.
  for (const start of ["at once", "deferred"] as const) {
    const what = start;
    const reported: unknown[] = [];
    const holder = createScope({
      context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
    });
    const gate = Promise.withResolvers<void>();
    holder.launch(counted(() => gate.promise)); // keeps the failed Job from completing
    const named = holder.job;
    const boom = new Error(`${what}: the named Job's child failed`);
    await within(
      coroutineScope(async (real) => {
        let task!: ReturnType<CoroutineScope["launch"]>;
        const go = Promise.withResolvers<void>(); // a deferred block's start
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) =>
            task = real.launch(async (t) => {
              if (start === "deferred") await go.promise;
              return block(
                { context: t.context, signal: t.signal, job: named } as unknown as CoroutineScope,
              );
            }),
        } as unknown as CoroutineScope;
        let sent = 0;
        let rejected: unknown;
        const goOn = Promise.withResolvers<void>();
        using ch = produce<number>(
          scope,
          counted(async (out: Channel<number>) => {
            try {
              for (;;) await out.send(++sent);
            } catch (e) {
              rejected = e; // goes on past it, and returns
            }
            await goOn.promise;
          }),
          { capacity: 1 },
        );
        try {
          go.resolve();
          await until(() => sent === 2, `${what}: waiting in its second send`);
          holder.launch(counted(() => Promise.reject(boom)));
          await until(() => rejected !== undefined, `${what}: the send rejected`);
          assert.equal(named.state, "cancelling", `${what}: failed, not completed`);
          const reason = signalOfJob(named as JobSupport).reason;
          assert.ok(reason instanceof CancellationError, `${what}: ${reason}`);
          assert.equal(rejected, reason, `${what}: the send rejected with it`);
          assert.equal(ch.tryReceive().state, "ok", `${what}: what was sent stays receivable`);
          const closed = ch.tryReceive();
          assert.equal(closed.state, "closed", `${what}: closed at once, the task still running`);
          assert.equal((closed as { cause?: unknown }).cause, reason, `${what}: with it`);
          assert.equal(task.state, "active", what);
        } finally {
          goOn.resolve(); // also where an assertion failed: the block returns, the scope ends
        }
        await task.join();
        assert.equal(task.state, "completed", what);
      }),
      10_000,
      what,
    );
    gate.resolve();
    await within(named.join(), 10_000, `${what}: the holder's end`);
    assert.deepEqual(reported, [boom], `${what}: the failure reported once, by its scope`);
  }
  assert.equal(live, 0);
});

/**
 * A real signal whose next listen first runs the caller's code (`arm(run)`), once: an accessor
 * of its own for the engine's listeners property (a symbol-keyed property a listen makes on a
 * target, looked up through the prototypes until then) on a prototype under the signal.
 */
function listenRuns(): { signal: AbortSignal; arm(run: () => void): void } {
  const target = new EventTarget();
  const before = new Set(Object.getOwnPropertySymbols(target));
  target.addEventListener("x", () => {});
  const [key] = Object.getOwnPropertySymbols(target).filter((s) => !before.has(s));
  let store: unknown = undefined;
  let armed: (() => void) | null = null;
  const signal = new AbortController().signal;
  Object.setPrototypeOf(
    signal,
    Object.create(AbortSignal.prototype, {
      [key]: {
        get() {
          const run = armed;
          armed = null;
          run?.();
          return store;
        },
        set(v) {
          store = v;
        },
      },
    }),
  );
  return { signal, arm: (run) => armed = run };
}

Deno.test("produce and actor whose deferred start runs the caller's code that ends them or cancels the Job their launch returned (the task's signal getter, the listen of that signal) never run their block, and leave no listener on that signal", async () => {
  // src/produce.ts and src/actor.ts: the checks that keep a late block from running
  // (`ENDED_FIRST`, `CANCELLED_FIRST`) came before the task's `signal` getter (a producer's) and
  // the listen of that signal, which may run the caller's code; they are made again after. Before,
  // the block ran: on the closed channel (its first send's ClosedSendError failed the task and
  // the scope) or on the freed mailbox (its receive's InvalidHandleError did), or, the returned
  // Job cancelled, on a closed channel its sends rejected on (`bindSends` found that Job's signal
  // aborted: its one way in), what it did before going on past that cancel. And the actor's
  // watch (`cancelOnAbort`), listening as the actor ended, kept its listener on the caller's
  // signal after `finish` (the producer's, `closeOnCancel`, likewise), holding the freed mailbox.
  const cases = [
    ["produce", "listen", "complete"],
    ["produce", "listen", "cancel"],
    ["produce", "getter", "complete"],
    ["produce", "getter", "cancel"],
    ["actor", "listen", "complete"],
    ["actor", "listen", "cancel"],
  ] as const;
  for (const [which, where, how] of cases) {
    const what = `${which}, ${how} in the ${where}`;
    const hold = Promise.withResolvers<void>();
    let ran = false;
    const done: unknown[] = [];
    let thrown: unknown;
    await within(
      coroutineScope(async (real) => {
        // What the launch returns: a kcoro Job that completes at once (`complete`), or one that
        // its cancel leaves cancelling until `hold` resolves.
        const other = how === "complete"
          ? new CompletableDeferred<void>()
          : real.launch(() => hold.promise);
        let kept: ((task: CoroutineScope) => unknown) | null = null;
        const scope = {
          context: real.context,
          launch: (block: (task: CoroutineScope) => unknown) => {
            kept = block; // started later
            return other;
          },
        } as unknown as CoroutineScope;
        const body = counted(async (ch: Channel<number>) => {
          ran = true;
          if (which === "produce") await ch.send(1);
          else for await (const _ of ch) { /* none */ }
        });
        if (which === "produce") produce<number>(scope, body, { capacity: 4 });
        else actor<number>(scope, body, { onDone: (c) => done.push(c) });
        const act = () =>
          how === "complete" ? (other as CompletableDeferred<void>).complete() : other.cancel();
        const { signal, arm } = listenRuns();
        const task = { context: real.context, job: null, signal };
        if (where === "listen") arm(act);
        else {
          Object.defineProperty(task, "signal", {
            get: () => {
              act();
              return signal;
            },
          });
        }
        try {
          await kept!(task as unknown as CoroutineScope);
        } catch (e) {
          thrown = e;
        }
        assert.equal(ran, false, `${what}: the block never ran`);
        assert.ok(thrown instanceof CancellationError, `${what}: ${thrown}`);
        hold.resolve();
        await other.join();
        assert.equal(abortListeners(signal), 0, `${what}: no listener left on the task's signal`);
      }),
      10_000,
      what,
    );
    if (which === "actor") assert.equal(done.length, 1, `${what}: onDone ran once`);
  }
  assert.equal(live, 0);
});

Deno.test("produce and actor name themselves for a bad capacity (it said 'Cannot create channel', a call the caller never made), and start no task", async () => {
  await using scope = createScope();
  const cases: [unknown, string, string][] = [
    [-1, "RangeError", "capacity must be an integer from 0 to 2147483648, received -1"],
    [1.5, "RangeError", "capacity must be an integer from 0 to 2147483648, received 1.5"],
    [
      "big",
      "TypeError",
      'capacity must be a number, "rendezvous", "buffered", "conflated" or "unlimited", received "big"',
    ],
    [
      null, // produce took it for the default
      "TypeError",
      'capacity must be a number, "rendezvous", "buffered", "conflated" or "unlimited", received null',
    ],
  ];
  for (const [capacity, name, reason] of cases) {
    assert.throws(() => produce(scope, () => {}, { capacity: capacity as never }), {
      name,
      message: `Cannot produce: ${reason}`,
    });
    assert.throws(() => actor(scope, () => {}, { capacity: capacity as never }), {
      name,
      message: `Cannot start actor: ${reason}`,
    });
  }
  assert.equal(scope.children.length, 0); // refused before a task was launched
  // Good ones still work, under their names as under a Channel's.
  using squares = produce<number>(scope, async (out) => await out.send(4), {
    capacity: "buffered",
  });
  assert.equal(await squares.receive(), 4);
});

Deno.test("produce and actor whose task ends after closeLibrary() settle their scope with the task's own outcome: the close or cancel of their channel threw LibraryClosedError out of an abort listener and ended the process", async () => {
  // The producer's and the actor's abort listeners and completion handlers closed or cancelled
  // their channel, which throws LibraryClosedError once the library is closed (as any
  // operation on it does; its waits were rejected by the close): the scope's cancellation, a
  // failing block or the task's end then threw it uncaught. A child process: closing the
  // library in this one would close it under the other tests.
  const res = await evalScript(`
    import { actor, closeLibrary, coroutineScope, delay, produce } from "./mod.ts";
    const reported = [];
    globalThis.addEventListener("error", (e) => { reported.push(String(e.error)); e.preventDefault(); });
    const outcome = (p) => p.then((v) => "resolved " + v, (e) => "rejected " + e.name + ": " + e.message);
    const results = {};
    for (const kind of ["produce", "actor"]) {
      for (const shared of [false, true]) {
        for (const end of ["cancel", "fail", "return"]) {
          results[kind + (shared ? " shared " : " local ") + end] = await outcome(coroutineScope(async (scope) => {
            let closed, started;
            const gate = new Promise((r) => closed = r);
            const ready = new Promise((r) => started = r);
            const body = async (ch, task) => {
              if (shared) ch.share();
              started();
              await gate;
              if (end === "fail") throw new Error("the block's own");
              if (end === "cancel") await delay(60_000, { signal: task.signal });
            };
            if (kind === "produce") produce(scope, (out, task) => body(out, task));
            else actor(scope, (mailbox, task) => body(mailbox, task));
            await ready; // the task runs, waiting at its gate (was a 1 ms timer)
            closeLibrary();
            closed();
            if (end === "cancel") scope.cancel();
            return end;
          }));
        }
      }
    }
    // Nothing more to come: every abort listener and completion handler that could report ran
    // synchronously, as its task ended, before its scope settled (awaited above). A few turns of
    // 0 ms timers (fired in the order set) also run whatever those queued, microtasks and 0 ms
    // timers, before the check: a bounded number of event-loop turns, not a wait for time.
    for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
    console.log(JSON.stringify({ results, reported }));
  `);
  assert.equal(res.code, 0, res.stderr);
  const { results, reported } = JSON.parse(res.stdout);
  assert.deepEqual(reported, []);
  for (const kind of ["produce", "actor"]) {
    for (const where of ["local", "shared"]) {
      assert.equal(results[`${kind} ${where} cancel`], "rejected CancellationError: Cancelled");
      assert.equal(results[`${kind} ${where} fail`], "rejected Error: the block's own");
      assert.equal(results[`${kind} ${where} return`], "resolved return");
    }
  }
});

Deno.test("actor: a handler that disposes its mailbox (`using mailbox`) ends its task as it would otherwise: the task's end cancelled the disposed mailbox, and InvalidHandleError was reported (a CompletionHandlerError), ending the process", async () => {
  // The mailbox is the handler's channel; disposing it (a `using`, as channels are) left the
  // actor's abort listener and completion handler to cancel a disposed channel, which throws.
  using reported = catchReported();
  const outcome = (p: Promise<unknown>) =>
    p.then((v) => `resolved ${v}`, (e) => `rejected ${e.name}: ${e.message}`);
  const got: Record<string, string> = {};
  for (const end of ["return", "cancel", "fail"]) {
    got[end] = await outcome(coroutineScope(async (scope) => {
      let disposed = false;
      const a = actor<number>(scope, async (mailbox, task) => {
        {
          using mb = mailbox;
          for await (const m of mb) if (m === 2) break;
        }
        disposed = true;
        if (end === "fail") throw new Error("the handler's own");
        if (end === "cancel") await untilAborted(task.signal);
      });
      await a.send(1);
      await a.send(2);
      await until(() => disposed, "the handler to dispose its mailbox", 5_000);
      if (end === "cancel") scope.cancel();
      await a.job.join();
      await assert.rejects(a.send(4), ClosedSendError);
      return end;
    }));
  }
  // Nothing more to come (see `laterReports`): the reports checked below were made as each task
  // ended, before its scope settled.
  await laterReports();
  assert.deepEqual(got, {
    return: "resolved return",
    cancel: "rejected CancellationError: Cancelled",
    fail: "rejected Error: the handler's own",
  });
  assert.deepEqual(reported.errors, []);
});

Deno.test("actor: a send refused once the actor finished calls onUndeliveredElement as a Channel does: a plain call (this undefined), never from inside itself (a send the hook makes waits its turn)", async () => {
  // Before, the actor called its hook as a method (`this` the Actor), and a hook that sent to
  // the finished actor again was called inside itself, as deep as that chain went.
  await using scope = createScope();
  const got: number[] = [];
  const thisSeen: unknown[] = [];
  let depth = 0;
  let deepest = 0;
  const a = actor<number>(scope, counted(() => {}), {
    onUndeliveredElement: function (this: unknown, m: number) {
      thisSeen.push(this);
      deepest = Math.max(deepest, ++depth);
      got.push(m);
      // The refused send's hook call waits until this one returned.
      if (m < 3) a.send(m + 1).catch(() => {});
      depth--;
    },
  });
  await a.job.join();
  await assert.rejects(a.send(1), ClosedSendError);
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(deepest, 1, "never called from inside itself");
  assert.deepEqual(thisSeen, [undefined, undefined, undefined]);
});

Deno.test("actor: a send refused once the actor finished, or once its handler disposed of its mailbox, checks its message by the codec first, as a send into the closed mailbox does: one it cannot carry rejects with the CodecError and never reaches onUndeliveredElement", async () => {
  // Before, the message went to the hook unchecked (a function, which the mailbox's codec cannot
  // clone) and the send rejected with ClosedSendError, where a send into the closed mailbox of a
  // running actor rejects with the CodecError (as a producer's send after its cancel does).
  await using scope = createScope();
  const hooked: unknown[] = [];
  const closedErr = await (async () => {
    const gate = new CompletableDeferred<void>();
    const running = actor<unknown>(scope, () => gate.await());
    running.close();
    const e = await running.send(() => 1).then(() => null, (e) => e);
    gate.complete();
    await running.job.join();
    return e;
  })();
  assert.ok(closedErr instanceof CodecError, `${closedErr}`);
  for (const how of ["finished", "disposed"] as const) {
    const gate = new CompletableDeferred<void>();
    const disposed = new CompletableDeferred<void>();
    const a = actor<unknown>(scope, async (mailbox) => {
      if (how === "disposed") {
        mailbox[Symbol.dispose]();
        disposed.complete();
      }
      await gate.await();
    }, { onUndeliveredElement: (m) => hooked.push(m) });
    if (how === "finished") {
      gate.complete();
      await a.job.join();
    } else await disposed.await();
    const late = await a.send(() => 1).then(() => "sent", (e) => e);
    assert.ok(late instanceof CodecError, `${how}: ${late}`);
    assert.equal((late as Error).message, (closedErr as Error).message, how);
    await assert.rejects(a.send(2), ClosedSendError); // one it can carry still reaches the hook
    assert.deepEqual(hooked, [2], how);
    hooked.length = 0;
    gate.complete();
    await a.job.join();
  }
});

Deno.test("actor: trySend once the actor finished (done, failed or cancelled), or once its handler disposed of its mailbox, checks its message by the codec first, as a closed Channel's trySend does: one it cannot carry throws the CodecError; one it can answers closed", async () => {
  // Before, it answered `closed` for any message there, where the closed mailbox of a running
  // actor (a Channel's trySend) throws the CodecError for a function.
  await using scope = createScope();
  const gate = new CompletableDeferred<void>();
  const running = actor<unknown>(scope, () => gate.await());
  running.close();
  const closedErr = (() => {
    try {
      running.trySend(() => 1);
    } catch (e) {
      return e;
    }
  })();
  gate.complete();
  await running.job.join();
  assert.ok(closedErr instanceof CodecError, `${closedErr}`);
  for (const how of ["finished", "failed", "cancelled", "disposed"] as const) {
    const gate = new CompletableDeferred<void>();
    const disposed = new CompletableDeferred<void>();
    const hooked: unknown[] = [];
    const reported: unknown[] = []; // the failed actor's error, its scope's to report
    await using child = createScope({
      context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
    });
    const a = actor<unknown>(child, async (mailbox) => {
      if (how === "disposed") {
        mailbox[Symbol.dispose]();
        disposed.complete();
      }
      await gate.await();
      if (how === "failed") throw new Error("boom");
    }, { onUndeliveredElement: (m) => hooked.push(m) });
    if (how === "disposed") await disposed.await();
    else {
      if (how === "cancelled") child.cancel();
      gate.complete();
      await a.job.join();
      assert.equal(reported.length, how === "failed" ? 1 : 0, how);
    }
    assert.equal(
      a.job.state,
      how === "disposed" ? "active" : how === "finished" ? "completed" : "cancelled",
      how,
    );
    assert.throws(
      () => a.trySend(() => 1),
      (e: unknown) => e instanceof CodecError && e.message === (closedErr as Error).message,
      how,
    );
    assert.equal(a.trySend(2).state, "closed", how);
    assert.deepEqual(hooked, [], `${how}: a trySend's message stays the caller's`);
    gate.complete();
    await a.job.join();
  }
});

Deno.test("actor: send and trySend of a message its mailbox's codec cannot carry name their own call in the CodecError, whether the actor runs, its mailbox is closed, or it finished", async () => {
  // Before, trySend's said "Cannot send: ...", as if send had been called (a Channel's trySend
  // too), while its errors about the call said "Cannot trySend".
  await using scope = createScope();
  const gate = new CompletableDeferred<void>();
  const a = actor<unknown>(scope, async (mailbox) => {
    await gate.await();
    for await (const _ of mailbox);
  }, { capacity: 4 });
  const reason = /^the value cannot be structured-cloned, received a function/;
  const named = (op: string) => (e: unknown) =>
    e instanceof CodecError && e.message.startsWith(`Cannot ${op}: `) &&
    reason.test(e.message.slice(`Cannot ${op}: `.length));
  for (const how of ["running", "closed", "finished"] as const) {
    if (how === "closed") a.close();
    if (how === "finished") {
      gate.complete();
      await a.job.join();
    }
    assert.throws(() => a.trySend(() => 1), named("trySend"), how);
    await assert.rejects(a.send(() => 1), named("send"), how);
  }
  assert.equal(a.job.state, "completed");
});

Deno.test("actor: once its handler disposed of its mailbox, while the task runs on, send rejects with ClosedSendError (the message to the hook), trySend is closed and close() a no-op; before, InvalidHandleError", async () => {
  for (const capacity of ["rendezvous", 4] as const) {
    const undelivered: number[] = [];
    const disposed = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    await coroutineScope(async (scope) => {
      const a = actor<number>(scope, async (mailbox, task) => {
        {
          using mb = mailbox;
          assert.equal(await mb.receive(), 1);
        }
        disposed.resolve();
        // The task runs on without its mailbox (until the gate, or a failed check's cancel).
        await Promise.race([gate.promise, untilAborted(task.signal)]);
      }, { capacity, onUndeliveredElement: (m) => undelivered.push(m) });
      await a.send(1);
      await disposed.promise;
      assert.equal(a.job.state, "active");
      await assert.rejects(a.send(2), {
        name: "ClosedSendError",
        message: "Cannot send: the actor's handler disposed of its mailbox",
      });
      assert.deepEqual(undelivered, [2]); // as a send on a closed channel hands it
      // Its cause what a send rejects with (before: no cause), naming the call made (it said
      // "Cannot send: ...", as if a send had been called).
      const refused = a.trySend(3);
      assert.deepEqual(refused, {
        state: "closed",
        cause: new ClosedSendError("Cannot trySend: the actor's handler disposed of its mailbox"),
      });
      assert.equal(
        (refused as { cause: Error }).cause.message,
        "Cannot trySend: the actor's handler disposed of its mailbox",
      );
      assert.equal(a.close(), false);
      assert.equal(a.close(), false); // idempotent
      // A bad signal is still refused as such, before the mailbox is looked at.
      await assert.rejects(a.send(4, { signal: 1 as never }), TypeError);
      gate.resolve();
      await a.job.join();
      // After the task's end: as for any finished actor.
      await assert.rejects(a.send(5), {
        name: "ClosedSendError",
        message: "Cannot send: the actor has finished",
      });
      // A trySend's closed result carries the same (before: no cause), naming trySend.
      const finished = a.trySend(6);
      assert.deepEqual(finished, {
        state: "closed",
        cause: new ClosedSendError("Cannot trySend: the actor has finished"),
      });
      assert.equal(
        (finished as { cause: Error }).cause.message,
        "Cannot trySend: the actor has finished",
      );
      assert.equal(a.close(), false);
    });
    assert.deepEqual(undelivered, [2, 5]);
  }
});

Deno.test("actor: a send waiting in a full mailbox when the handler disposes of it rejects with the ClosedSendError a later send gets, its message to the hook once; before, the dispose's CancellationError", async () => {
  for (const capacity of ["rendezvous", 1] as const) {
    for (const shared of [false, true]) {
      const what = `capacity ${capacity}, ${shared ? "shared" : "local"}`;
      const undelivered: number[] = [];
      const start = Promise.withResolvers<void>();
      const gate = Promise.withResolvers<void>();
      await coroutineScope(async (scope) => {
        const a = actor<number>(scope, async (mailbox, task) => {
          if (shared) mailbox.share();
          await start.promise;
          {
            using _mb = mailbox; // disposed here, a send waiting in it
          }
          await Promise.race([gate.promise, untilAborted(task.signal)]);
        }, { capacity, onUndeliveredElement: (m) => undelivered.push(m) });
        if (capacity === 1) await a.send(0); // the mailbox is full: the next send waits
        const waiting = a.send(1);
        assert.equal(await settled(waiting), false, `${what}: the send waits`);
        start.resolve();
        await assert.rejects(waiting, {
          name: "ClosedSendError",
          message: "Cannot send: the actor's handler disposed of its mailbox",
        }, what);
        // The waiting send's message once (and the queued one, dropped by the dispose's cancel).
        assert.deepEqual(undelivered, capacity === 1 ? [0, 1] : [1], what);
        await assert.rejects(a.send(2), ClosedSendError, what); // as a send after the dispose
        assert.equal(a.job.state, "active", what);
        gate.resolve();
      });
      assert.deepEqual(undelivered, capacity === 1 ? [0, 1, 2] : [1, 2], what);
    }
  }
});

Deno.test("produce: a consumer disposing the channel after closeLibrary() cancels the producer, as open: the dispose skipped the cancel, and a scope whose block returned waited for the producer for good", async () => {
  // A creator's dispose cancels its channel, which for a produced channel cancels the producer
  // (`ProducerChannel.cancel`); once the library is closed the dispose only releases the native
  // side, so the producer ran on, and `using out = produce(...)` left the scope waiting.
  const res = await evalScript(
    `
    import { closeLibrary, coroutineScope, produce } from "./mod.ts";
    const results = [];
    for (const shared of [false, true]) {
      results.push(await coroutineScope(async (scope) => {
        using out = produce(scope, async (o, task) => {
          await o.send(1);
          await new Promise((_, reject) => task.signal.addEventListener("abort", () => reject(task.signal.reason)));
        });
        if (shared) out.share();
        await out.receive();
        closeLibrary();
        return "returned";
      }).then((v) => v, (e) => "rejected " + e.name));
    }
    console.log(JSON.stringify(results));
  `,
    { timeoutMs: 30_000 },
  );
  assert.equal(res.signal, null, "the scope never settled: " + res.stderr);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), ["returned", "returned"]);
});

Deno.test("actor: native code destroying its mailbox (the handle read by its handler) ends the actor as cancelled, nothing reported; its senders get a closed or cancelled answer, never a hang", async () => {
  // Before: the handler's receive failed with the dead handle's InvalidHandleError, which failed
  // the actor and its scope; the task's end cancelled the mailbox, an InvalidHandleError
  // ('Cannot cancel channel') out of the abort listener (uncaught) and out of the completion
  // handler (a CompletionHandlerError); a send after the destroy rejected with
  // InvalidHandleError. Three ways: the handler destroys it and then receives; destroys it while
  // its receive waits natively (from outside: the handle handed out); with `using mailbox`.
  const sym = library().symbols("test");
  for (const how of ["then receives", "while it waits", "using mailbox"] as const) {
    using reported = catchReported();
    const undelivered: number[] = [];
    const done: unknown[] = [];
    let caught: unknown = undefined;
    let outcome: unknown = "pending";
    let waitingSend: unknown = "pending";
    const handle = Promise.withResolvers<number>();
    const go = Promise.withResolvers<void>();
    const bridge = Bridge.of(library());
    const before = bridge.pending;
    const finished = coroutineScope(async (scope) => {
      const a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>) => {
          using _m = how === "using mailbox" ? mailbox : undefined;
          const h = mailbox.handle;
          if (how === "while it waits") handle.resolve(h);
          else {
            await go.promise; // a send waits first
            assert.equal(sym.kc_chan_destroy(h), 0, how);
          }
          try {
            for await (const m of mailbox) undelivered.push(-m); // never: nothing arrives
          } catch (e) {
            caught = e;
            throw e;
          }
        }),
        {
          capacity: 1,
          onDone: (cause) => done.push(cause),
          onUndeliveredElement: (m) => undelivered.push(m),
        },
      );
      if (how === "while it waits") {
        const h = await handle.promise;
        await until(() => bridge.pending > before, `${how}: the receive queued natively`);
        assert.equal(sym.kc_chan_destroy(h), 0, how);
        // Before the actor has seen it (its receive's record comes later): refused as closed.
        const early = a.send(5);
        await assert.rejects(early, (e) =>
          e instanceof ClosedSendError &&
          e.message ===
            "Cannot send: native code destroyed the actor's mailbox (kc_chan_destroy)");
        assert.deepEqual(undelivered, [5], `${how}: the refused send's message to the hook`);
        assert.equal(a.trySend(6).state, "closed", how);
      } else {
        // A send waiting at the destroy (the mailbox full), when the destroy is the handler's.
        assert.deepEqual(a.trySend(1), { state: "ok" }, how);
        const waiting = a.send(2).then(() => "delivered", (e) => e);
        go.resolve();
        waitingSend = await within(waiting, 10_000, `${how}: the waiting send`);
      }
      await a.job.join();
      await assert.rejects(a.send(3), ClosedSendError, how);
      assert.equal(a.trySend(4).state, "closed", how);
      assert.equal(a.close(), false, how);
    });
    finished.then(() => outcome = "resolved", (e) => outcome = e);
    await until(() => outcome !== "pending", `${how}: the scope to settle`, 10_000);
    await laterReports();
    assert.equal(outcome, "resolved", `${how}: ${String(outcome)}`);
    assert.ok(caught instanceof CancellationError || caught instanceof Error, how);
    assert.equal(done.length, 1, how);
    assert.ok(done[0] instanceof CancellationError, `${how}: onDone(${String(done[0])})`);
    if (how !== "while it waits") {
      assert.ok(
        waitingSend instanceof CancellationError || waitingSend instanceof ClosedSendError,
        `${how}: the waiting send: ${String(waitingSend)}`,
      );
    }
    assert.ok(undelivered.includes(3), `${how}: the refused send's message to the hook`);
    // Each message once: the one buffered at the destroy and the waiting send's too (the
    // destroy dropped both to the kept list; the buffered one stayed there for good before).
    assert.deepEqual(
      [...undelivered].sort(),
      how === "while it waits" ? [3, 5] : [1, 2, 3],
      `${how}: the hook`,
    );
    assert.deepEqual(reported.errors.map(String), [], `${how}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("actor: native code's destroy of its mailbox, told by the watch, cancels the task with the mailbox's one CancellationError: the handler's receive, its task's signal and onDone get the same error, whether the receive waited natively or began after", async () => {
  // Before, the watch told a new CancellationError saying native code destroyed the mailbox:
  // the task's signal and `onDone` got it, the handler's receive the mailbox's own (the
  // destroy's cancel's, "Channel was cancelled", when it waited natively), two errors for one
  // end, where README says `onDone` gets the one the handler lets out.
  const sym = library().symbols("test");
  for (const how of ["receive waits natively", "busy, then receives"] as const) {
    using reported = catchReported();
    const done: unknown[] = [];
    let caught: unknown = "none";
    let reason: unknown = "none";
    const handle = Promise.withResolvers<number>();
    const bridge = Bridge.of(library());
    const before = bridge.pending;
    await within(
      coroutineScope(async (scope) => {
        const a = actor<number>(
          scope,
          counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
            handle.resolve(mailbox.handle); // escaped: the watch is on
            try {
              if (how === "busy, then receives") {
                await untilAborted(task.signal).catch(() => {}); // cancelled by the watch
              }
              await mailbox.receive();
            } catch (e) {
              caught = e;
              throw e;
            } finally {
              reason = task.signal.reason;
            }
          }),
          { onDone: (cause) => done.push(cause) },
        );
        const h = await handle.promise;
        if (how === "receive waits natively") {
          await until(() => bridge.pending > before, `${how}: the receive queued natively`);
        }
        assert.equal(sym.kc_chan_destroy(h), 0, how);
        await a.job.join();
      }),
      10_000,
      how,
    );
    await laterReports();
    assert.ok(caught instanceof CancellationError, `${how}: ${String(caught)}`);
    assert.equal(reason, caught, `${how}: the signal's reason: ${String(reason)}`);
    assert.deepEqual(done, [caught], `${how}: onDone(${String(done[0])})`);
    assert.deepEqual(reported.errors.map(String), [], `${how}: nothing reported`);
  }
  assert.equal(live, 0);
});

Deno.test("actor: the handler's mailbox.cancel() once it learnt native code destroyed the mailbox cancels the actor with the mailbox's CancellationError, the one its receive rejects with: onDone gets that one", async () => {
  // Before, the cancel (a no-op on the destroyed mailbox) cancelled the task with no cause: its
  // signal's reason and `onDone` got a CancellationError of the job's own, not the mailbox's,
  // which its receive rejected with and the handler let out.
  const sym = library().symbols("test");
  using reported = catchReported();
  const done: unknown[] = [];
  let caught: unknown = "none";
  let reason: unknown = "none";
  await within(
    coroutineScope((scope) => {
      actor<number>(
        scope,
        counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
          assert.equal(sym.kc_chan_destroy(mailbox.handle), 0);
          assert.equal(mailbox.trySend(1).state, "closed"); // learns it
          mailbox.cancel(); // nothing to cancel: the actor only
          reason = task.signal.reason;
          try {
            await mailbox.receive();
          } catch (e) {
            caught = e;
            throw e;
          }
        }),
        { onDone: (cause) => done.push(cause) },
      );
    }),
    10_000,
    "the scope",
  );
  await laterReports();
  assert.ok(caught instanceof CancellationError, String(caught));
  assert.equal(reason, caught, `the signal's reason: ${String(reason)}`);
  assert.deepEqual(done, [caught], `onDone(${String(done[0])})`);
  assert.deepEqual(reported.errors.map(String), []);
  assert.equal(live, 0);
});

Deno.test("actor: a trySend that learns native code destroyed the mailbox answers closed with the ClosedSendError a send rejects with, not the mailbox's CancellationError; later ones too", async () => {
  // The first call to meet the destroy is the trySend (nothing here knew of it): its mailbox's
  // try-send answers closed with the cancelled channel's CancellationError, which read as the
  // sender's own cancellation. Nothing covered it (the other tests' trySend came after a send
  // had learnt it).
  const sym = library().symbols("test");
  using reported = catchReported();
  const handle = Promise.withResolvers<number>();
  const go = Promise.withResolvers<void>();
  const undelivered: number[] = [];
  // Naming the call made: it said "Cannot send: ...", as if a send had been called.
  const DESTROYED = "Cannot trySend: native code destroyed the actor's mailbox (kc_chan_destroy)";
  await within(
    coroutineScope(async (scope) => {
      const a = actor<number>(
        scope,
        counted(async (mailbox: Channel<number>) => {
          handle.resolve(mailbox.handle);
          await go.promise;
          await mailbox.receive(); // the destroyed mailbox's: the actor ends cancelled
        }),
        { capacity: 4, onUndeliveredElement: (m) => undelivered.push(m) },
      );
      assert.equal(sym.kc_chan_destroy(await handle.promise), 0);
      const got = [a.trySend(1), a.trySend(2)]; // the first learns it
      go.resolve();
      for (const [i, r] of got.entries()) {
        assert.equal(r.state, "closed", `${i}`);
        const cause = (r as { cause: unknown }).cause;
        assert.ok(cause instanceof ClosedSendError, `${i}: ${String(cause)}`);
        assert.equal(cause.message, DESTROYED, `${i}`);
      }
      assert.deepEqual(undelivered, [], "a trySend's message stays the caller's");
      await a.job.join();
    }),
    10_000,
    "the scope",
  );
  await laterReports();
  assert.deepEqual(reported.errors.map(String), []);
  assert.equal(live, 0);
});

Deno.test("actor: an InvalidHandleError of another channel that the handler lets out after native code destroyed its mailbox fails the actor and its scope with it (onDone gets it); its mailbox's own still ends it cancelled", async () => {
  // Before, any InvalidHandleError the handler let out once its mailbox was destroyed ended the
  // actor as cancelled: a bug of the handler's own (a disposed channel of its, here) went
  // unreported, the scope resolved. Both before the handler saw the destroy and after (its
  // receive rejected first); its mailbox's own: a trySend's closed cause and a receive's
  // rejection (the cancelled mailbox's CancellationError), and its share()'s InvalidHandleError
  // (no live channel to hand out).
  const sym = library().symbols("test");
  for (const seen of ["unseen", "seen"] as const) {
    for (const whose of ["another channel's", "trySend", "receive", "share"] as const) {
      const label = `${seen}, ${whose}`;
      using reported = catchReported();
      const done: unknown[] = [];
      let caught: unknown = undefined;
      let outcome: unknown = "pending";
      const finished = coroutineScope((scope) => {
        actor<number>(
          scope,
          counted(async (mailbox: Channel<number>) => {
            assert.equal(sym.kc_chan_destroy(mailbox.handle), 0, label);
            if (seen === "seen") {
              await assert.rejects(mailbox.receive(), CancellationError, label);
              assert.ok(destroyedSeenOf(mailbox), label);
            }
            try {
              if (whose === "another channel's") throw foreignHandleError();
              if (whose === "trySend") throw (mailbox.trySend(1) as { cause: unknown }).cause;
              else if (whose === "share") mailbox.share();
              else await mailbox.receive();
            } catch (e) {
              caught = e;
              throw e;
            }
            assert.fail(`${label}: nothing failed`);
          }),
          { onDone: (cause) => done.push(cause) },
        );
      });
      finished.then(() => outcome = "resolved", (e) => outcome = e);
      await until(() => outcome !== "pending", `${label}: the scope to settle`, 10_000);
      await laterReports();
      assert.ok(
        whose === "trySend" || whose === "receive"
          ? caught instanceof CancellationError
          : caught instanceof InvalidHandleError,
        `${label}: ${String(caught)}`,
      );
      assert.equal(done.length, 1, label);
      if (whose === "another channel's") {
        assert.equal(outcome, caught, `${label}: the scope: ${String(outcome)}`);
        assert.equal(done[0], caught, `${label}: onDone(${String(done[0])})`);
      } else {
        assert.equal(outcome, "resolved", `${label}: ${String(outcome)}`);
        assert.ok(done[0] instanceof CancellationError, `${label}: onDone(${String(done[0])})`);
      }
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
  assert.equal(live, 0);
});

Deno.test("actor: a send whose signal was aborted with another channel's InvalidHandleError, just after native code destroyed the mailbox, rejects with that reason as any aborted send does, not refused as closed", async () => {
  // Before, the send's rejection (the signal's reason, an InvalidHandleError) was taken for the
  // destroyed mailbox's own: refused as closed (a ClosedSendError, the message to the hook).
  const sym = library().symbols("test");
  using reported = catchReported();
  const undelivered: number[] = [];
  const handle = Promise.withResolvers<number>();
  const go = Promise.withResolvers<void>();
  let outcome: unknown = "pending";
  const finished = coroutineScope(async (scope) => {
    const a = actor<number>(
      scope,
      counted(async (mailbox: Channel<number>) => {
        handle.resolve(mailbox.handle);
        await go.promise;
        await mailbox.receive(); // the destroyed mailbox's own: the actor ends cancelled
      }),
      { onUndeliveredElement: (m) => undelivered.push(m) },
    );
    assert.equal(sym.kc_chan_destroy(await handle.promise), 0);
    // In the same turn: nothing here has seen the destroy yet.
    const reason = foreignHandleError();
    const sent = a.send(5, { signal: AbortSignal.abort(reason) }).then(() => "sent", (e) => e);
    go.resolve(); // the handler's receive: the actor ends, whatever the send answered
    assert.equal(await sent, reason, "rejected with the signal's reason");
    // The message to the hook once, as any aborted send's.
    await until(() => undelivered.length > 0, "the aborted send's message at the hook");
    assert.deepEqual(undelivered, [5], "to the hook once, as any aborted send's");
    // Its own end still refuses as closed.
    await a.job.join();
    await assert.rejects(a.send(6), ClosedSendError);
  });
  finished.then(() => outcome = "resolved", (e) => outcome = e);
  await until(() => outcome !== "pending", "the scope to settle", 10_000);
  assert.equal(outcome, "resolved", String(outcome));
  await laterReports();
  assert.deepEqual(reported.errors.map(String), []);
  assert.equal(live, 0);
});

Deno.test("produce: a Worker whose producer runs when it ends (terminated, or self.close()) or closes the library cancels the channel: the main isolate's consumer rejects with a CancellationError that says so, the buffer is dropped, the process exits, no handle is left", async () => {
  // Before, the Worker's ring only withdrew the producer's watch: the channel stayed open, the
  // consumer's for-await waited for ever, and its native wait kept the process alive.
  await runWorkerScript(
    "producer_owner_worker.ts",
    `
    const check = (what, e) => assertOwnerGone(what, e, "producer");
    const handles = await steadyHandles();
    for (const how of ["full", "close", "library"]) {
      // Its messages, in whichever order they come: { share } and (how "full") "full".
      const { w, saying, share } = await startWorker(how, how + ": the share");
      {
        using c = Channel.from(share);
        const got = [];
        let err;
        const consume = async () => {
          try {
            for await (const v of c) {
              got.push(v);
              if (how !== "full" && got.length === 3) {
                w.postMessage(how === "close" ? "end" : "closeLibrary");
              }
            }
          } catch (e) {
            err = e;
          }
        };
        if (how === "full") {
          // The buffer full (0..3) and a send waiting: terminated there, nothing received.
          await within(saying((m) => m === "full"), 20_000, "full: the buffer full");
          w.terminate();
          await until(() => c.isClosedForSend, "full: the channel cancelled", 20_000);
          await within(consume(), 20_000, "full: the consumer's end");
          if (got.length !== 0) throw new Error("full: buffered values received: " + got);
        } else {
          // The consumer waiting in its for-await when the Worker closes itself (or the library).
          await within(consume(), 20_000, how + ": the consumer's end");
          if (got.join() !== got.map((_, i) => i).join() || got.length < 3) {
            throw new Error(how + ": received " + got);
          }
        }
        check(how + ": for await", err);
        const again = await c.receive().then(() => "a value", (e) => e);
        check(how + ": a receive after", again);
        if (again !== err) throw new Error(how + ": not the channel's one error");
        if (!c.isClosedForReceive) throw new Error(how + ": not closed for receive");
      }
      if (how === "library") w.terminate(); // it lives on after its closeLibrary()
    }
    await handlesBack(handles);
  `,
    240_000,
  );
});

Deno.test("produce: a Worker whose producer finished (its channel closed, values buffered) and then ends leaves the channel closed, not cancelled: the main isolate receives every value and a clean end", async () => {
  // The owned watch goes with the task (and a ring's going away cancels no channel closed
  // already): a finished producer's channel is what its close made it, whatever its Worker does
  // after.
  await runWorkerScript(
    "producer_owner_worker.ts",
    `
    const { w, saying, share } = await startWorker("done");
    const { marker } = await within(saying((m) => m?.marker !== undefined), 20_000, "the marker");
    {
      using c = Channel.from(share);
      using mk = Channel.from(marker);
      await within(saying((m) => m === "done"), 20_000, "the producer's end");
      if (!c.isClosedForSend) throw new Error("not closed by its producer's end");
      w.terminate();
      // The marker's producer still ran: its channel is cancelled by the Worker's ring going away,
      // in the same pass that would have cancelled the finished one's.
      await until(() => mk.isClosedForSend, "the Worker's ring gone", 20_000);
      const got = [];
      for await (const v of c) got.push(v);
      if (got.join() !== "0,1,2,3") throw new Error("received " + got);
      const st = c.metrics();
      if (st.dropped !== 0) throw new Error("dropped " + st.dropped);
    }
  `,
    180_000,
  );
});

Deno.test("produce: a Worker that ends after share() but before the producer's task first ran (a lazy launch, never started) cancels the channel: the main isolate's waiting receive rejects with the owner-gone CancellationError, the process exits", async () => {
  // The watch was taken only once the task ran: a Worker terminated (or closing itself) between
  // the share and the task's start left the channel open, and the main isolate's receive waited
  // for ever, its native wait keeping the process alive.
  await runWorkerScript(
    "producer_owner_worker.ts",
    `
    for (const end of ["terminate", "close"]) {
      const { w, saying, share } = await startWorker("lazy", end + ": the share");
      {
        using c = Channel.from(share);
        const receiving = c.receive().then(() => "a value", (e) => e);
        if (await settled(receiving)) throw new Error(end + ": the receive did not wait");
        if (end === "terminate") w.terminate();
        else w.postMessage("end");
        const err = await within(receiving, 20_000, end + ": the waiting receive's end");
        assertOwnerGone(end + ": the waiting receive", err, "producer");
        if (!c.isClosedForSend) throw new Error(end + ": not closed for send");
      }
      // Its messages come in order: "ran" would have come before the share.
      if (await settled(saying((m) => m === "ran"))) throw new Error(end + ": the lazy task ran");
    }
  `,
    240_000,
  );
});

Deno.test("produce: a Worker terminated after the producer's block returned while a child of its task still runs cancels the channel, not closes it: the task is not complete until its children are (Kotlin's), so the consumer gets the owner-gone CancellationError, the buffer dropped", async () => {
  await runWorkerScript(
    "producer_owner_worker.ts",
    `
    const { w, saying, share } = await startWorker("children");
    {
      using c = Channel.from(share);
      await within(saying((m) => m === "returned"), 20_000, "the block's return");
      if (c.isClosedForSend) throw new Error("closed while a child of the task runs");
      w.terminate();
      await until(() => c.isClosedForSend, "the channel cancelled", 20_000);
      const got = [];
      let err;
      try {
        for await (const v of c) got.push(v);
      } catch (e) {
        err = e;
      }
      assertOwnerGone("for await", err, "producer");
      if (got.length !== 0) throw new Error("received " + got);
      if (c.metrics().dropped !== 1) throw new Error("dropped " + c.metrics().dropped);
    }
  `,
    180_000,
  );
});

Deno.test("actor: a Worker whose actor runs when it ends (terminated, self.close(), or its library closed) cancels the mailbox it shared: the main isolate's waiting send rejects with a CancellationError that says so, later sends fail, the process exits, no handle is left", async () => {
  // Before, the actor held no watch on its mailbox: the Worker's end left it open, the main
  // isolate's send waited for ever (its native wait keeping the process alive), and later sends
  // went into a mailbox nobody would ever read.
  await runWorkerScript(
    "actor_owner_worker.ts",
    `
    const check = (what, e) => assertOwnerGone(what, e, "actor");
    const handles = await steadyHandles();
    for (const how of ["terminate", "close", "library"]) {
      const { w, share } = await startWorker(how, how + ": the share");
      {
        using c = Channel.from(share);
        // A 1-slot mailbox: its slot filled first; rendezvous: the handler never receives.
        if (how === "terminate" && c.trySend(0).state !== "ok") {
          throw new Error("terminate: the slot not free");
        }
        const sending = c.send(1).then(() => "delivered", (e) => e);
        if (await settled(sending)) throw new Error(how + ": the send did not wait");
        if (how === "terminate") w.terminate();
        else w.postMessage(how === "close" ? "end" : "closeLibrary");
        const err = await within(sending, 20_000, how + ": the waiting send's end");
        check(how + ": the waiting send", err);
        const again = await c.send(2).then(() => "delivered", (e) => e);
        check(how + ": a send after", again);
        if (again !== err) throw new Error(how + ": not the mailbox's one error");
        const tried = c.trySend(3);
        if (tried.state !== "closed" || tried.cause !== err) {
          throw new Error(how + ": trySend after: " + tried.state);
        }
      }
      if (how === "library") w.terminate(); // it lives on after its closeLibrary()
    }
    await handlesBack(handles);
  `,
    240_000,
  );
});

Deno.test("actor: the main isolate cancelling its copy of a Worker's mailbox cancels the Worker's busy actor: its signal aborts with the cause, onDone gets that one error, the Worker's scope resolves", async () => {
  // Before, the cancel ended the mailbox only: the handler, busy and not receiving, ran on, and
  // the Worker's actor and scope never ended.
  await runWorkerScript(
    "actor_owner_worker.ts",
    `
    const { w, saying, share } = await startWorker("cancel");
    {
      using c = Channel.from(share);
      c.cancel(new CancellationError("stop from main"));
    }
    const { aborted } = await within(saying((m) => m?.aborted !== undefined), 20_000, "the abort");
    const { done } = await within(saying((m) => m?.done !== undefined), 20_000, "onDone");
    const { scope } = await within(saying((m) => m?.scope !== undefined), 20_000, "the scope");
    w.terminate();
    const expect = JSON.stringify({ name: "CancellationError", message: "stop from main", same: true });
    if (JSON.stringify(aborted) !== expect) throw new Error("aborted: " + JSON.stringify(aborted));
    if (JSON.stringify(done) !== expect) throw new Error("onDone: " + JSON.stringify(done));
    if (scope !== "resolved") throw new Error("scope: " + JSON.stringify(scope));
  `,
    180_000,
  );
});

Deno.test("produce: the owner-gone message follows the role known when it is read: a copy opened without a role says 'producer or actor', and once a copy of the same isolate is opened from share() with its role, every read says 'producer' (the errors handed out before keep theirs)", async () => {
  // The message was made at the first look and kept: a copy given the role later (the same
  // isolate's entry) still answered "its producer or actor".
  await runWorkerScript(
    "producer_owner_worker.ts",
    `
    const { w, saying, share } = await startWorker("full");
    if (share.role !== "producer") throw new Error("role: " + share.role);
    const { role: _, ...bare } = share; // made by hand: no role
    {
      using first = Channel.from(bare);
      await within(saying((m) => m === "full"), 20_000, "the buffer full");
      w.terminate();
      await until(() => first.isClosedForSend, "the channel cancelled", 20_000);
      const before = await first.receive().then(() => "a value", (e) => e);
      assertOwnerGone("the first copy, no role known", before, "producer or actor");
      {
        using second = Channel.from(share); // the role, learnt now
        const after = await second.receive().then(() => "a value", (e) => e);
        assertOwnerGone("a copy opened with the role", after, "producer");
        const again = await first.receive().then(() => "a value", (e) => e);
        assertOwnerGone("the first copy, the role known", again, "producer");
        if (again !== after) throw new Error("not the channel's one error from now on");
        const tried = first.tryReceive();
        if (tried.state !== "closed" || tried.cause !== after) throw new Error("tryReceive: " + tried.state);
        if (second.share().role !== "producer") throw new Error("the copy's share() lost the role");
      }
      assertOwnerGone("the error handed out before keeps its message", before, "producer or actor");
    }
  `,
    180_000,
  );
});

Deno.test("produce and actor name their role in share() (SharedChannel.role), and a copy's share() passes it on; a plain channel's has none", async () => {
  // The owner-gone CancellationError of a copy names it (the Worker tests above): one status bit
  // cannot say producer or actor, and said both.
  await coroutineScope(async (scope) => {
    using out = produce<number>(scope, () => {}, { capacity: 1 });
    const shared = out.share();
    assert.equal(shared.role, "producer");
    {
      using copy = Channel.from(structuredClone(shared));
      assert.equal(copy.share().role, "producer");
    }
    const got = Promise.withResolvers<unknown>();
    const a = actor<number>(scope, (mailbox) => {
      got.resolve(mailbox.share().role);
    });
    assert.equal(await got.promise, "actor");
    await a.job.join();
  });
  using plain = new Channel<number>(1);
  assert.equal(Object.hasOwn(plain.share(), "role"), false);
});

Deno.test("a send the producer makes once its task was cancelled hands its value to onUndeliveredElement, as a send into a closed or cancelled channel does: consumer's dispose, cancel, the scope's cancel; local and shared, with a signal of its own too", async () => {
  // The producer sent again in the turn after its consumer's `break` and dispose, before it
  // learnt of its cancellation: the task's aborted signal rejected that send first, and its
  // value reached no hook (every other value of the producer did: buffered ones at the cancel).
  for (const shared of [false, true]) {
    for (const how of ["dispose", "cancel", "scope cancel"] as const) {
      // An own signal aborted too still makes a send after the cancel (it was rejected with the
      // task's cancellation and kept its value).
      for (const ownSignal of ["", "own signal", "own signal aborted"]) {
        const label = `${shared ? "shared" : "local"}, ${how}, ${ownSignal}`;
        const hooked: number[] = [];
        const gate = new CompletableDeferred<void>();
        let late: unknown = "not sent";
        await coroutineScope(async (scope) => {
          const out = produce<number>(scope, async (out) => {
            await out.send(1);
            await out.send(2); // buffered at the cancel (to the hook) or close (receivable)
            await gate.await();
            try {
              await (ownSignal === "" ? out.send(3) : out.send(3, {
                signal: ownSignal === "own signal"
                  ? new AbortController().signal
                  : AbortSignal.abort(new Error("mine")),
              }));
              late = "sent";
            } catch (e) {
              late = e;
              throw e;
            }
          }, { capacity: 4, onUndeliveredElement: (v) => hooked.push(v) });
          if (shared) out.share();
          assert.equal(await out.receive(), 1);
          if (how === "dispose") out[Symbol.dispose]();
          if (how === "cancel") out.cancel();
          if (how === "scope cancel") scope.cancel();
          gate.complete();
        }).catch((e) => assert.ok(e instanceof CancellationError, label));
        assert.ok(late instanceof CancellationError, `${label}: ${late}`);
        assert.ok(
          hooked.includes(3),
          `${label}: the late send's value reached the hook: ${hooked}`,
        );
        assert.equal(hooked.filter((v) => v === 3).length, 1, label);
      }
    }
  }
});

Deno.test("a send the producer makes once its task was cancelled checks its value by the codec first, as a send into a closed channel does: a value it cannot carry rejects with the codec's error and never reaches onUndeliveredElement", async () => {
  // Before, the value went to the hook unchecked (a function, which a produce channel's default
  // codec cannot clone) and the send rejected with the cancellation, where a send into a closed
  // channel rejects with the CodecError.
  using closed = new Channel<unknown>(1);
  closed.close();
  const expected = await closed.send(() => 1).then(() => null, (e) => e);
  assert.ok(expected instanceof CodecError, `${expected}`);
  for (const shared of [false, true]) {
    for (const how of ["dispose", "cancel"] as const) {
      const label = `${shared ? "shared" : "local"}, ${how}`;
      const hooked: unknown[] = [];
      const gate = new CompletableDeferred<void>();
      let late: unknown = "not sent";
      await coroutineScope(async (scope) => {
        const out = produce<unknown>(scope, async (out) => {
          await out.send(1);
          await gate.await();
          late = await out.send(() => 1).then(() => "sent", (e) => e);
          await out.send(2).catch(() => {}); // one it can carry still reaches the hook
        }, { capacity: 4, onUndeliveredElement: (v) => hooked.push(v) });
        if (shared) out.share();
        assert.equal(await out.receive(), 1);
        if (how === "dispose") out[Symbol.dispose]();
        else out.cancel();
        gate.complete();
      }).catch((e) => assert.ok(e instanceof CancellationError, label));
      assert.ok(late instanceof CodecError, `${label}: ${late}`);
      assert.equal((late as Error).message, expected.message, label);
      assert.deepEqual(hooked, [2], label);
    }
  }
});

Deno.test("a producer's send waiting when its task is cancelled hands its value to onUndeliveredElement, once, as a send made after the cancel does, and so does one its own signal aborts: local and shared, waiting in JavaScript or queued natively", async () => {
  // The send the task's cancellation woke rejected with the same CancellationError as one made
  // a turn later, but kept its value where that one's went to the hook: the block could not tell
  // whether to release the value itself (Kotlin's cancelled send hands it to the hook).
  const pending = () => Bridge.of(library()).pending;
  const hows = ["scope cancel", "scope cancel, own signal", "consumer cancel", "own abort"];
  for (const shared of [false, true]) {
    for (const queued of [false, true]) {
      for (const how of hows) {
        const label = `${shared ? "shared" : "local"}, ${queued ? "queued" : "at once"}, ${how}`;
        const hooked: number[] = [];
        const own = new AbortController();
        let waiting = false;
        let outcome: unknown = "pending";
        await coroutineScope(async (scope) => {
          const out = produce<number>(scope, async (out) => {
            waiting = true;
            try {
              await (how.includes("own") ? out.send(7, { signal: own.signal }) : out.send(7));
              outcome = "sent";
            } catch (e) {
              outcome = e;
              if (how !== "own abort") throw e;
            }
          }, { onUndeliveredElement: (v) => hooked.push(v) }); // rendezvous: nobody receives
          if (shared) out.share();
          const before = pending();
          for (let i = 0; i < 100 && !waiting; i++) await null; // the block's first turn
          assert.ok(waiting, label);
          if (queued && shared) {
            await until(() => pending() > before, `${label}: the send queued natively`);
          }
          if (how.startsWith("scope cancel")) scope.cancel();
          if (how === "consumer cancel") out.cancel();
          if (how === "own abort") own.abort(new Error("mine"));
        }).catch((e) => assert.ok(e instanceof CancellationError, `${label}: ${e}`));
        if (how === "own abort") {
          assert.match(String(outcome), /mine/, label);
          // Cancelled before it sent, by its own signal: hooked once too (Kotlin), where it
          // kept its value before.
          assert.deepEqual(hooked, [7], `${label}: the aborted send's value, hooked once`);
        } else {
          assert.ok(outcome instanceof CancellationError, `${label}: ${outcome}`);
          assert.deepEqual(hooked, [7], `${label}: the cancelled send's value, hooked once`);
        }
      }
    }
  }
});

Deno.test("a producer's send made after its consumer disposed the shared channel hands its value to the hook with no native call on the dead handle", async () => {
  // The value went through the channel's undelivered path as a live channel's does: it read the
  // native kept list (kc_chan_take_undelivered) and reported its count (kc_chan_add_metrics) with
  // the disposed channel's handle, whose value a later channel may hold by then.
  const sym = librarySymbols(library(), "test");
  type Fn = (...args: never[]) => unknown;
  const patchable = sym as unknown as Record<string, Fn>;
  const names = Object.keys(patchable).filter((n) => typeof patchable[n] === "function");
  const real = new Map(names.map((n) => [n, patchable[n]]));
  using reported = catchReported();
  const hooked: number[] = [];
  const calls: string[] = [];
  const gate = new CompletableDeferred<void>();
  let late: unknown = "not sent";
  await coroutineScope(async (scope) => {
    const out = produce<number>(scope, async (out) => {
      await out.send(1);
      await gate.await();
      try {
        await out.send(2);
        late = "sent";
      } catch (e) {
        late = e;
        throw e;
      }
    }, { capacity: 4, onUndeliveredElement: (v) => hooked.push(v) });
    out.share();
    assert.equal(await out.receive(), 1);
    const h = out.handle;
    out[Symbol.dispose]();
    for (const n of names) {
      patchable[n] = (...args: never[]) => {
        if ((args as unknown[]).includes(h)) calls.push(n);
        return real.get(n)!(...args);
      };
    }
    try {
      gate.complete();
      for (let i = 0; i < 100 && late === "not sent"; i++) await null;
      // The end of the turn, where a count made now is reported (kc_chan_add_metrics).
      await new Promise((r) => setTimeout(r, 0));
    } finally {
      for (const n of names) patchable[n] = real.get(n)!;
    }
  }).catch((e) => assert.ok(e instanceof CancellationError, String(e)));
  assert.ok(late instanceof CancellationError, String(late));
  assert.deepEqual(hooked, [2]);
  assert.deepEqual(calls, [], "no call on the dead handle");
  assert.deepEqual(reported.errors.map(String), []);
});

Deno.test("a producer whose block lets out an AbortError carrying a cancellation ends cancelled: its channel closes with that cancellation, not the AbortError as a failure", async () => {
  // A Node API given a signal rejects with a new AbortError carrying the signal's reason; the
  // job takes it as that cancellation (src/job.ts, `cancellationOf`). Before, produce closed
  // its channel with the AbortError as the failure cause first, while the task ended cancelled.
  const elsewhere = new CancellationError("another job's");
  const carried = Object.assign(new Error("aborted", { cause: elsewhere }), { name: "AbortError" });
  const outcome = await coroutineScope(async (scope) => {
    using ch = produce<number>(scope, async (out) => {
      await out.send(1);
      throw carried;
    }, { capacity: 1 });
    assert.equal(await ch.receive(), 1);
    await assert.rejects(ch.receive(), (e) => e === elsewhere);
    return "not failed";
  });
  assert.equal(outcome, "not failed");
});

Deno.test("actor: its members called on what is no Actor (an object made from its prototype, a Proxy of one, a primitive) fail with a named TypeError, send's by a rejected promise, and reach no actor", async () => {
  // Before, each threw the engine's "Receiver must be an instance of class ActorImpl" (send
  // synchronously), and toString "Cannot read properties of undefined (reading 'state')".
  await using scope = createScope();
  const got: number[] = [];
  const a = actor<number>(scope, async (mailbox) => {
    for await (const m of mailbox) got.push(m);
  }, { capacity: 4 });
  const proto = Object.getPrototypeOf(a) as Record<PropertyKey, (...x: unknown[]) => unknown>;
  type Call = [string, "throws" | "rejects", (self: unknown) => unknown];
  const calls: Call[] = [
    ["send", "rejects", (self) => proto.send.call(self, 1)],
    ["trySend", "throws", (self) => proto.trySend.call(self, 1)],
    ["close actor", "throws", (self) => proto.close.call(self)],
    ["convert actor to string", "throws", (self) => proto.toString.call(self)],
  ];
  const fakes: [unknown, string][] = [
    [Object.create(proto), "an Actor look-alike"],
    [new Proxy(a, {}), "an Actor look-alike"],
    [{}, "[object Object]"],
    [undefined, "undefined"],
  ];
  for (const [self, described] of fakes) {
    for (const [op, how, call] of calls) {
      const message = `Cannot ${op}: this is not an Actor, received ${described}`;
      await assertNotThisError(how, call, self, message, `${op} on ${described}`);
    }
  }
  // The Proxy's calls reached no actor: it is open, and takes what is sent to it.
  assert.equal(String(a), "Actor(active)");
  await a.send(7);
  assert.equal(a.close(), true);
  await a.job.join();
  assert.deepEqual(got, [7]);
});

Deno.test("produce: the channel's internal hooks (_cancelByTask, _open) are not reachable from JavaScript: `ch._cancelByTask(e)` cancelled the channel and left its producer active, to complete as if nothing had happened", async () => {
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  let ranOn = false;
  const ch = produce<number>(scope, async (out) => {
    await out.send(1);
    await gate.promise;
    ranOn = true;
  });
  try {
    for (const member of ["_cancelByTask", "_open"]) {
      assert.equal(member in ch, false, member);
    }
    // What the first did, tried through its old name: nothing happens to the channel.
    assert.throws(
      () =>
        (ch as unknown as { _cancelByTask(e: CancellationError): void })._cancelByTask(
          new CancellationError("from outside"),
        ),
      TypeError,
    );
    assert.equal(ch.isClosedForReceive, false);
    assert.equal(await ch.receive(), 1);
  } finally {
    gate.resolve();
  }
  await until(() => ch.isClosedForReceive, "the producer to close its channel");
  assert.equal(ranOn, true);
  // The consumer's own cancel still cancelling the producer (through the hook, now a module
  // function) is pinned by "cancelling the channel cancels the producer" above.
});

/**
 * The symbol keys of `x` and its prototypes up to Object's that are neither well-known symbols
 * (`Symbol.dispose`, ...) nor registered ones (`Symbol.for("Deno.customInspect")`).
 */
function ownSymbolsOf(x: object): symbol[] {
  const wellKnown = new Set<unknown>(
    Object.getOwnPropertyNames(Symbol).map((k) =>
      (Symbol as unknown as Record<string, unknown>)[k]
    ),
  );
  const out: symbol[] = [];
  for (let p: object | null = x; p !== null && p !== Object.prototype;) {
    for (const k of Object.getOwnPropertySymbols(p)) {
      if (!wellKnown.has(k) && Symbol.keyFor(k) === undefined) out.push(k);
    }
    p = Object.getPrototypeOf(p);
  }
  return out;
}

Deno.test("produce and actor: the channel's hooks for them (_learntDestroyed, _escaped, _abortDrops) are not reachable from JavaScript, by name or by a symbol key: a consumer's `ch._learntDestroyed(x)`, then `ch[learntDestroyed](x)` (a symbol found by Object.getOwnPropertySymbols), cancelled the producer with x", async () => {
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  let ranOn = false;
  const ch = produce<number>(scope, async (out) => {
    await out.send(1);
    await gate.promise;
    ranOn = true;
  });
  let inMailbox: string[] = [];
  let mailboxSymbols: symbol[] = [];
  const a = actor<number>(scope, async (mailbox) => {
    inMailbox = ["_learntDestroyed", "_escaped", "_abortDrops"].filter((m) => m in mailbox);
    mailboxSymbols = ownSymbolsOf(mailbox);
    for await (const _ of mailbox) { /* drained */ }
  });
  try {
    for (const member of ["_learntDestroyed", "_escaped", "_abortDrops"]) {
      assert.equal(member in ch, false, member);
      assert.equal(member in a, false, member);
    }
    // What the first did, tried through its old name: nothing happens to the producer.
    assert.throws(
      () =>
        (ch as unknown as { _learntDestroyed(c: unknown): void })._learntDestroyed(new Error("x")),
      TypeError,
    );
    // Nor by a symbol key its prototypes hold: none but well-known and registered ones.
    const symbols = ownSymbolsOf(ch);
    for (const k of symbols) {
      const m = (ch as unknown as Record<symbol, unknown>)[k];
      if (typeof m === "function") m.call(ch, new Error("x"));
    }
    assert.deepEqual(symbols.map(String), []);
    assert.deepEqual(ownSymbolsOf(Channel.prototype).map(String), []);
    await Promise.resolve(); // the hook ran in a microtask after its caller
    assert.equal(producerJobOf(ch)?.state, "active");
    assert.equal(ch.isClosedForReceive, false);
    assert.equal(await ch.receive(), 1);
  } finally {
    gate.resolve();
  }
  await until(() => ch.isClosedForReceive, "the producer to close its channel");
  assert.equal(ranOn, true);
  assert.equal(producerJobOf(ch)?.state, "completed");
  await a.send(1);
  assert.equal(a.close(), true);
  await a.job.join();
  assert.deepEqual(inMailbox, []);
  assert.deepEqual(mailboxSymbols.map(String), []);
  // The producer and actor still learning of a destroy and an escape through the hooks (now
  // symbol-keyed) is pinned by the "destroyed by native code" tests above.
});

Deno.test("produce: the channel's state (_job, _gone, _bound, _sendsEnd, _unwatch, _live) and its hooks (_watch, _cancelTask, _end) are not reachable from JavaScript: `ch._gone = true` made its dispose cancel nothing, the producer running on", async () => {
  await using scope = createScope();
  let cancelled: unknown;
  const ch = produce<number>(scope, async (_out, task) => {
    try {
      await untilAborted(task.signal);
    } catch (e) {
      cancelled = e;
      throw e;
    }
  });
  const members = ["_job", "_gone", "_bound", "_sendsEnd", "_unwatch", "_live"];
  for (const member of [...members, "_watch", "_cancelTask", "_end"]) {
    assert.equal(member in ch, false, member);
  }
  // Now an own property that nothing reads: the dispose still cancels the producer.
  (ch as unknown as { _gone: boolean })._gone = true;
  ch[Symbol.dispose]();
  await until(() => cancelled !== undefined, "the dispose to cancel the producer");
  assert.ok(cancelled instanceof CancellationError);
  assert.equal(producerJobOf(ch)?.state, "cancelled");
});

Deno.test("actor: its mailbox's state (_job, _running, _unwatch, _inDispose, _disposedWith) and hooks (_watch, _cancelTask, _stopWatching) are not reachable from its handler: `mailbox._job = null` made a cancel of the mailbox leave the actor running", async () => {
  await using scope = createScope();
  let seen: string[] = [];
  let cancelled: unknown;
  const a = actor<number>(scope, async (mailbox, task) => {
    // Once actor() has returned (it sets the Job it knows then, had the handler's change come
    // before): the handler waits for the first message.
    await mailbox.receive();
    const members = ["_job", "_running", "_unwatch", "_inDispose", "_disposedWith"];
    seen = [...members, "_watch", "_cancelTask", "_stopWatching"].filter((m) => m in mailbox);
    // Each old name, tried: now an own property that nothing reads.
    for (const m of members) (mailbox as unknown as Record<string, unknown>)[m] = null;
    mailbox.cancel();
    try {
      await untilAborted(task.signal);
    } catch (e) {
      cancelled = e;
      throw e;
    }
  });
  await a.send(1);
  // Before, the handler waited on its signal for good: the mailbox's cancel found no Job.
  await until(() => cancelled !== undefined, "the mailbox's cancel to cancel the actor");
  assert.deepEqual(seen, []);
  assert.ok(cancelled instanceof CancellationError);
  await a.job.join();
  assert.equal(a.job.state, "cancelled");
});

Deno.test("actor: its job is read-only and it has no public _finish: `a.job = x` changed what it reports, and `a._finish()` freed the mailbox of an actor still running, its next receive failing it", async () => {
  const { promise: failed, resolve: fail } = Promise.withResolvers<unknown>();
  await using scope = createScope({
    context: Context.empty.with(CoroutineExceptionHandler, (e) => fail(e)),
  });
  const got: number[] = [];
  const a = actor<number>(scope, async (mailbox) => {
    for await (const m of mailbox) got.push(m);
  });
  const job = a.job;
  assert.equal("_finish" in a, false);
  assert.equal(Object.hasOwn(a, "job"), false);
  assert.throws(() => {
    (a as unknown as { job: unknown }).job = 5;
  }, TypeError);
  assert.equal(a.job, job);
  assert.throws(
    () => (a as unknown as { _finish(c: unknown): void })._finish(undefined),
    TypeError,
  );
  // Still running, its mailbox taking messages.
  await a.send(1);
  assert.equal(a.close(), true);
  await a.job.join();
  assert.equal(a.job.state, "completed");
  assert.deepEqual(got, [1]);
  assert.equal(await Promise.race([failed, "nothing reported"]), "nothing reported");
  // On what is no Actor: the house TypeError.
  const getter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(a), "job")!.get!;
  assert.throws(() => getter.call({}), {
    name: "TypeError",
    message: "Cannot read actor job: this is not an Actor, received [object Object]",
  });
});

Deno.test("produce's channel and an actor's mailbox: send, cancel and dispose called on what is none (an object made from the prototype, a Proxy of one) end in Channel's named TypeError, send's rejected, not the engine's for their private state", async () => {
  await using scope = createScope();
  const ch = produce<number>(scope, async (out) => {
    await out.send(1);
  });
  let box: Channel<number> | undefined;
  const a = actor<number>(scope, async (mailbox) => {
    box = mailbox;
    for await (const _ of mailbox);
  });
  await until(() => box !== undefined, "the actor's handler to start");
  for (const real of [ch, box!] as object[]) {
    const proto = Object.getPrototypeOf(real);
    const members = proto as Record<PropertyKey, (...x: unknown[]) => unknown>;
    type Call = [string, "throws" | "rejects", (self: unknown) => unknown];
    const calls: Call[] = [
      ["send", "rejects", (self) => members.send.call(self, 1)],
      ["cancel channel", "throws", (self) => members.cancel.call(self)],
      ["dispose channel", "throws", (self) => members[Symbol.dispose].call(self)],
    ];
    const fakes: [unknown, string][] = [
      [Object.create(proto), "a Channel look-alike"],
      [{}, "[object Object]"],
      [undefined, "undefined"],
      [new Proxy(real, {}), "a Channel look-alike"],
    ];
    for (const [self, described] of fakes) {
      for (const [op, how, call] of calls) {
        const message = `Cannot ${op}: this is not a Channel, received ${described}`;
        await assertNotThisError(how, call, self, message, `${op} on ${described}`);
      }
    }
  }
  // Nothing reached the real ones: the producer's value is there, the actor takes messages.
  assert.equal(await ch.receive(), 1);
  await a.send(2);
  assert.equal(a.close(), true);
  await a.job.join();
});

Deno.test("a producer's channel hooked a second time: hookChannel's assertion names the channel it was given (', received a Channel'), as every kcoro TypeError does", async () => {
  await using scope = createScope();
  const ch = produce<number>(scope, () => {});
  assert.throws(
    () => hookChannel(ch, {} as never), // refused before the hooks are read
    {
      name: "TypeError",
      message: "Cannot hook channel: it has its hooks already, received a Channel",
    },
  );
  assert.equal((await ch.receiveCatching()).state, "closed"); // its own hooks still work
});

Deno.test("actor: `lazy` launches its task new (Kotlin's start = LAZY): its first send, trySend or close, or its job's start or join, starts the handler; cancelled before, the handler never runs and onDone gets the cancellation", async () => {
  // Kotlin's `actor(start = CoroutineStart.LAZY)` is a LazyActorCoroutine: `send`, `trySend`
  // and `close` start it, as `start()` and `join()` do. Before, actor() refused the option
  // (`unknown option "lazy"`): an actor always started at once.
  for (const by of ["send", "trySend", "close", "start", "join"] as const) {
    const log: unknown[] = [];
    await coroutineScope(async (scope) => {
      const a = actor<number>(scope, async (mailbox) => {
        log.push("started");
        for await (const m of mailbox) log.push(m);
      }, { lazy: true, capacity: 2, onDone: (cause) => log.push(`done ${cause}`) });
      await settled(new Promise(() => {})); // microtask turns pass: nothing started it
      assert.equal(a.job.state, "new", by);
      assert.deepEqual(log, [], by);
      if (by === "send") await a.send(1);
      else if (by === "trySend") assert.equal(a.trySend(1).state, "ok", by);
      else if (by === "close") assert.equal(a.close(), true, by);
      else if (by === "start") assert.equal(a.job.start(), true, by);
      else {
        const joined = a.job.join();
        assert.equal(a.job.state, "active", by);
        a.close();
        await joined;
      }
      assert.equal(log[0], "started", by);
      a.close();
      await a.job.join();
    });
    const messages = by === "send" || by === "trySend" ? [1] : [];
    assert.deepEqual(log, ["started", ...messages, "done undefined"], by);
  }
  // Cancelled before anything started it: the handler never runs; onDone gets the cancellation,
  // and a send is refused as to any finished actor.
  const log: unknown[] = [];
  let cause: unknown = undefined;
  const undelivered: number[] = [];
  await supervisorScope(async (outer) => {
    const inner = createScope({ parent: outer.job });
    const a = actor<number>(inner, () => {
      log.push("ran");
    }, { lazy: true, onDone: (c) => cause = c, onUndeliveredElement: (m) => undelivered.push(m) });
    inner.cancel();
    await a.job.join();
    assert.equal(a.job.state, "cancelled");
    await assert.rejects(a.send(7), ClosedSendError);
  });
  assert.deepEqual(log, []);
  assert.ok(cause instanceof CancellationError, String(cause));
  assert.deepEqual(undelivered, [7]);
  // Not lazy (false, or left out): started at once, as before.
  await coroutineScope(async (scope) => {
    for (const lazy of [false, undefined]) {
      const a = actor<number>(scope, async () => {}, { lazy });
      assert.notEqual(a.job.state, "new");
      await a.job.join();
    }
  });
});

Deno.test("produce and actor: `context` adds entries to their task's context (Kotlin's produce(context), actor(context)), over the scope's; one that is no Context is refused by name", async () => {
  // Kotlin's `produce` and `actor` take a CoroutineContext, as `launch` does. Before, both
  // refused the option (`unknown option "context"`): a producer or an actor ran with its
  // scope's context only.
  const requestId = createContextKey<string>("requestId");
  const attempt = createContextKey<number>("attempt");
  const seen: Record<string, unknown[]> = {};
  await coroutineScope(async (scope) => {
    const context = Context.empty.with(attempt, 2);
    using out = produce<number>(scope, async (o, task) => {
      seen.produce = [task.context.get(requestId), task.context.get(attempt)];
      await o.send(1);
    }, { context });
    assert.equal(await out.receive(), 1);
    const a = actor<number>(scope, async (mailbox, task) => {
      seen.actor = [task.context.get(requestId), task.context.get(attempt)];
      for await (const _ of mailbox) { /* drained */ }
    }, { context, lazy: true });
    a.close(); // starts it (lazy) and ends it
    await a.job.join();
    // A context of the caller's own, given alone: unchanged, the scope's.
    using plain = produce<number>(scope, (_, task) => {
      seen.plain = [task.context.get(requestId), task.context.get(attempt)];
    });
    for await (const _ of plain) { /* drained */ }
  }, { context: Context.empty.with(requestId, "r1") });
  assert.deepEqual(seen, {
    produce: ["r1", 2],
    actor: ["r1", 2],
    plain: ["r1", undefined],
  });
  await coroutineScope((scope) => {
    const block = () => {};
    for (const bad of [{}, "context", 1]) {
      assert.throws(() => produce(scope, block, { context: bad as never }), {
        name: "TypeError",
        message: new RegExp("^Cannot produce: context must be a Context, received "),
      });
      assert.throws(() => actor(scope, block, { context: bad as never }), {
        name: "TypeError",
        message: new RegExp("^Cannot start actor: context must be a Context, received "),
      });
    }
  });
});

Deno.test("actor: an onDone that throws is reported in the task's context, its `context` option's CoroutineExceptionHandler first, also when its job was final inside actor() (its scope cancelled)", async () => {
  // A kcoro Job reports its completion handlers' throws in its own context (Kotlin's
  // `handleOnCompletionException`), where `launch` put the option's entries. Before, onDone run
  // on its own (the job final at once, in a cancelled scope) was reported in the scope's
  // context: to the scope's handler, where the same actor in an active scope reported to its own.
  for (const cancelled of [false, true]) {
    const own: unknown[] = [];
    const scopes: unknown[] = [];
    const scope = createScope({
      context: Context.empty.with(CoroutineExceptionHandler, (e) => scopes.push(e)),
    });
    if (cancelled) scope.cancel();
    const onDoneError = new Error("onDone threw");
    const a = actor<number>(scope, async (mailbox) => {
      for await (const _ of mailbox) { /* drained */ }
    }, {
      context: Context.empty.with(CoroutineExceptionHandler, (e) => own.push(e)),
      onDone: () => {
        throw onDoneError;
      },
    });
    assert.equal(a.job.isCompleted, cancelled, `cancelled ${cancelled}`);
    a.close();
    await a.job.join();
    scope.cancel();
    await scope.job.join();
    assert.equal(own.length, 1, `cancelled ${cancelled}: ${own}`);
    assert.ok(own[0] instanceof CompletionHandlerError, String(own[0]));
    assert.equal((own[0] as Error).cause, onDoneError);
    assert.deepEqual(scopes, [], `cancelled ${cancelled}`);
  }
});

Deno.test("actor: on a CoroutineScope of the caller's own whose context is no Context, an onDone that throws is reported to its `context` option's CoroutineExceptionHandler, nothing of the scope's context read", async () => {
  // The report context is the option's entries over the scope's context; where that is no
  // Context, over nothing. Before, the option was ignored there: onDone's throw went to
  // reportError, past the handler the caller gave the actor.
  const onDoneError = new Error("onDone threw");
  const read: string[] = [];
  const duck = {
    get(_key: unknown) {
      read.push("get");
      return () => read.push("handler");
    },
  };
  for (const scopeContext of [undefined, null, 7, duck] as unknown[]) {
    const own: unknown[] = [];
    let fire: (() => void) | null = null;
    await coroutineScope((real) => {
      const scope = {
        context: scopeContext,
        launch: (block: (task: CoroutineScope) => unknown) => {
          // The block's task names no kcoro Job: only the returned Job ends the actor, whose
          // onDone then runs on its own (not folded into a kcoro Job's handlers).
          real.launch((t) =>
            block({ context: t.context, signal: t.signal } as unknown as CoroutineScope)
          );
          return {
            invokeOnCompletion: (h: (cause: unknown) => void) => {
              fire = () => h(undefined);
              return { [Symbol.dispose]() {} };
            },
            cancel() {},
          };
        },
      } as unknown as CoroutineScope;
      actor<number>(scope, async () => {}, {
        context: Context.empty.with(CoroutineExceptionHandler, (e) => own.push(e)),
        onDone: () => {
          throw onDoneError;
        },
      });
    });
    using reported = catchReported();
    (fire as (() => void) | null)!();
    const label = String(scopeContext);
    assert.deepEqual(reported.errors, [], label);
    assert.equal(own.length, 1, `${label}: ${own}`);
    assert.ok(own[0] instanceof CompletionHandlerError, `${label}: ${own[0]}`);
    assert.equal((own[0] as Error).message, "Exception in an actor's onDone");
    assert.equal((own[0] as Error).cause, onDoneError);
  }
  assert.deepEqual(read, []);
});

Deno.test("actor: on a CoroutineScope of the caller's own whose `context` getter throws, onDone still runs, its throw reported as on a scope whose context is no Context, and that getter is read only once onDone has thrown", async () => {
  // Before, the report context was read ahead of onDone: the getter's throw left the completion
  // handler in onDone's place, so onDone never ran (what it releases leaked) and what it threw
  // was not reported; the getter ran on every actor's end, onDone's throw or none.
  const onDoneError = new Error("onDone threw");
  for (const withOption of [false, true]) {
    for (const throws of [false, true]) {
      const label = `option ${withOption}, onDone throws ${throws}`;
      const own: unknown[] = [];
      let reads = 0, ran = 0;
      let fire: (() => void) | null = null;
      await coroutineScope((real) => {
        const scope = {
          get context() {
            reads++;
            throw new Error("the caller's context getter");
          },
          launch: (block: (task: CoroutineScope) => unknown) => {
            // A task naming no kcoro Job: onDone runs on its own when the returned Job ends.
            real.launch((t) =>
              block({ context: t.context, signal: t.signal } as unknown as CoroutineScope)
            );
            return {
              invokeOnCompletion: (h: (cause: unknown) => void) => {
                fire = () => h(undefined);
                return { [Symbol.dispose]() {} };
              },
              cancel() {},
            };
          },
        } as unknown as CoroutineScope;
        actor<number>(scope, async () => {}, {
          ...(withOption
            ? { context: Context.empty.with(CoroutineExceptionHandler, (e) => own.push(e)) }
            : {}),
          onDone: () => {
            ran++;
            if (throws) throw onDoneError;
          },
        });
      });
      using reported = catchReported();
      (fire as (() => void) | null)!(); // before: threw the getter's error, onDone not run
      assert.equal(ran, 1, label);
      assert.equal(reads, throws ? 1 : 0, label);
      const errors = withOption ? own : reported.errors;
      assert.equal(withOption ? reported.errors.length : own.length, 0, label);
      assert.equal(errors.length, throws ? 1 : 0, `${label}: ${errors}`);
      if (throws) {
        assert.ok(errors[0] instanceof CompletionHandlerError, `${label}: ${errors[0]}`);
        assert.equal((errors[0] as Error).cause, onDoneError, label);
      }
    }
  }
});

Deno.test("produce and actor on a CoroutineScope of the caller's own: `lazy` and `context` reach its launch as its second argument (none given: the block alone), and a lazy actor's send, trySend or close starts no Job of another kind that it returns", async () => {
  // README: under a scope of the caller's own, `{ lazy: true }` and `context` go to its launch,
  // and a Job of another kind is not started by the actor (its `start` is the caller's code).
  const key = createContextKey<number>("key");
  const context = Context.empty.with(key, 1);
  await coroutineScope(async (real) => {
    const calls: unknown[][] = [];
    const scope = {
      context: real.context,
      launch(...args: unknown[]) {
        calls.push(args.slice(1));
        return real.launch(...(args as [never, never]));
      },
    } as unknown as CoroutineScope;
    using plain = produce<number>(scope, () => {});
    using given = produce<number>(scope, () => {}, { context });
    const a = actor<number>(scope, async (mailbox, task) => {
      assert.equal(task.context.get(key), 1);
      for await (const _ of mailbox) { /* drained */ }
    }, { lazy: true, context });
    assert.deepEqual(calls, [[], [{ context }], [{ lazy: true, context }]]);
    // The very Context given, not a copy.
    for (const at of [1, 2]) assert.equal((calls[at][0] as { context: Context }).context, context);
    assert.equal(a.job.state, "new"); // kcoro's Job, launched lazily: the close starts it
    assert.equal(a.close(), true);
    await a.job.join();
    for await (const _ of plain) { /* drained */ }
    for await (const _ of given) { /* drained */ }
  });
  // A Job of another kind (the caller's launch runs the block on a kcoro task of its own).
  for (const by of ["send", "trySend", "close"] as const) {
    let started = 0;
    const got: number[] = [];
    await coroutineScope(async (real) => {
      const scope = {
        context: real.context,
        launch: (block: (task: CoroutineScope) => unknown) => {
          real.launch((t) => block(t));
          return {
            invokeOnCompletion: () => ({ [Symbol.dispose]() {} }),
            start: () => {
              started++;
              return true;
            },
            state: "active",
            isActive: true,
            isCompleted: false,
            isCancelled: false,
            join: () => Promise.resolve(),
            cancel() {},
          };
        },
      } as unknown as CoroutineScope;
      const a = actor<number>(scope, async (mailbox) => {
        for await (const m of mailbox) got.push(m);
      }, { lazy: true, capacity: 2 });
      if (by === "send") await a.send(1);
      else if (by === "trySend") assert.equal(a.trySend(1).state, "ok");
      a.close();
    });
    assert.equal(started, 0, by);
    assert.deepEqual(got, by === "close" ? [] : [1], by);
  }
});

Deno.test("actor: a lazy actor's send refused for its options (a signal that is no AbortSignal) starts nothing; a good one's options are read once", async () => {
  // Before, the send started the actor (its handler ran) and then rejected with the TypeError: a
  // call refused for what it was passed changed something.
  const log: unknown[] = [];
  await coroutineScope(async (scope) => {
    const a = actor<number>(scope, async (mailbox) => {
      log.push("started");
      for await (const m of mailbox) log.push(m);
    }, { lazy: true, capacity: 1 });
    for (const bad of [{ signal: 5 }, { signal: null }, { timeout: 1 }, 7]) {
      await assert.rejects(a.send(1, bad as never), {
        name: "TypeError",
        message: /^Cannot send: /,
      });
    }
    assert.equal(a.job.state, "new");
    assert.deepEqual(log, []);
    let reads = 0;
    const signal = new AbortController().signal;
    await a.send(2, {
      get signal() {
        reads++;
        return signal;
      },
    });
    assert.equal(reads, 1);
    assert.equal(a.job.state, "active");
    a.close();
  });
  assert.deepEqual(log, ["started", 2]);
});

Deno.test("actor: a lazy actor's close() closes, then starts (Kotlin's LazyActorCoroutine): its handler begins on a closed mailbox; its first send or trySend of a message the codec cannot carry is refused with the CodecError before anything starts", async () => {
  // Before, close() started the handler first (it began on an open mailbox), and a send or
  // trySend of a function started the handler, then rejected or threw the CodecError: a call
  // refused for what it was passed changed something.
  const log: unknown[] = [];
  await coroutineScope(async (scope) => {
    const a = actor<unknown>(scope, async (mailbox) => {
      log.push(`started, closed for send: ${mailbox.isClosedForSend}`);
      for await (const m of mailbox) log.push(m);
    }, { lazy: true, capacity: 2 });
    assert.equal(a.close(), true);
    await a.job.join();
  });
  assert.deepEqual(log, ["started, closed for send: true"]);
  const seen: unknown[] = [];
  await coroutineScope(async (scope) => {
    const a = actor<unknown>(scope, async (mailbox) => {
      seen.push("started");
      for await (const m of mailbox) seen.push(m);
    }, { lazy: true, capacity: 2 });
    const fn = () => {};
    await assert.rejects(
      a.send(fn),
      (e) => e instanceof CodecError && /^Cannot send: /.test(e.message),
    );
    assert.throws(
      () => a.trySend(fn),
      (e) => e instanceof CodecError && /^Cannot trySend: /.test(e.message),
    );
    assert.equal(a.job.state, "new");
    assert.deepEqual(seen, []);
    assert.equal(a.trySend(1).state, "ok"); // a message it can carry starts it
    assert.equal(a.job.state, "active");
    a.close();
  });
  assert.deepEqual(seen, ["started", 1]);
});

Deno.test("produce and actor run Channel's own close, cancel, dispose, send and trySend on their channels, not members a caller redefined on Channel's prototype or the channel's own", async () => {
  // Before, an actor's `close()` ran `Channel.prototype.close`, its `send` and `trySend` the
  // prototype's, its end `mailbox.cancel` and `[Symbol.dispose]` (the mailbox's prototype's,
  // whose override ran `super.cancel`, Channel.prototype's at that call), a producer's end
  // `out.close`, a `using` channel's dispose `this.cancel()`: a redefinition steered them all.
  const proto = Channel.prototype as unknown as Record<PropertyKey, unknown>;
  const names: PropertyKey[] = ["close", "cancel", "send", "trySend", Symbol.dispose];
  const called: string[] = [];
  const saved = new Map<object, Map<PropertyKey, PropertyDescriptor | undefined>>();
  const steer = (target: object, which = names) => {
    const kept = new Map<PropertyKey, PropertyDescriptor | undefined>();
    for (const name of which) {
      kept.set(name, Object.getOwnPropertyDescriptor(target, name));
      Object.defineProperty(target, name, {
        configurable: true,
        writable: true,
        value: () => {
          called.push(String(name));
          throw new Error(`redefined ${String(name)} ran`);
        },
      });
    }
    saved.set(target, kept);
  };
  const log: unknown[] = [];
  let sent: Promise<unknown> | undefined;
  try {
    steer(proto);
    await coroutineScope(async (scope) => {
      // An actor: its send, trySend and close, and its end's cancel and dispose of its mailbox.
      let box: Channel<number> | undefined;
      const a = actor<number>(scope, async (mailbox) => {
        box = mailbox;
        for await (const m of mailbox) log.push(m);
      }, { capacity: 4 });
      await a.send(1);
      assert.deepEqual(a.trySend(2), { state: "ok" });
      await until(() => box !== undefined, "the handler to start");
      // The mailbox's own class's members too (the handler's `send` is its own call: left).
      steer(Object.getPrototypeOf(box), ["close", "cancel", Symbol.dispose]);
      assert.equal(a.close(), true);
      await a.job.join();
      // A producer: its sends, its end's close, and its consumer's dispose cancelling it.
      const out = produce<number>(scope, async (ch) => {
        await ch.send(3);
        await ch.send(4);
      });
      steer(Object.getPrototypeOf(out), ["close", "cancel"]); // the block's `send`: its own
      for await (const v of out) log.push(v);
      const stuck = produce<number>(scope, async (ch) => {
        await ch.send(5);
        sent = ch.send(6); // waits: rendezvous, nobody receives it
        await sent;
      });
      const first = await stuck.receive();
      log.push(first);
      await until(() => sent !== undefined, "the producer's second send to wait");
      // `using`'s dispose: the producer's own, which cancels the producer.
      (stuck as unknown as Disposable)[Symbol.dispose].call(stuck);
      await assert.rejects(sent!, CancellationError);
      // A plain channel's dispose cancels its waits by Channel's own cancel.
      const plain = new Channel<number>();
      const waiting = plain.receive();
      const dispose = saved.get(proto)!.get(Symbol.dispose)!.value as () => void;
      dispose.call(plain);
      await assert.rejects(waiting, CancellationError);
      // Its `[Symbol.asyncDispose]` runs Channel's own dispose, not the prototype's.
      const awaited = new Channel<number>();
      const waitingToo = awaited.receive();
      await awaited[Symbol.asyncDispose]();
      await assert.rejects(waitingToo, CancellationError);
      // A lazy actor's close(): closes its mailbox by Channel's own close, then starts it.
      const lazy = actor<number>(scope, async (mailbox) => {
        for await (const m of mailbox) log.push(m);
      }, { lazy: true });
      assert.equal(lazy.close(), true);
      await lazy.job.join();
      // A producer's send given a signal of the caller's (merged with the task's): Channel's own.
      const signalled = produce<number>(scope, async (ch) => {
        await ch.send(6, { signal: new AbortController().signal });
      });
      for await (const v of signalled) log.push(v);
      // The producer's own cancel cancels its channel by Channel's own cancel (`cancelByTask`):
      // its buffered value dropped, a receive rejected.
      let taskCancelled = false;
      const cancelled = produce<number>(scope, async (ch, task) => {
        await ch.send(7);
        task.cancel();
        taskCancelled = true;
      }, { capacity: 2 });
      await until(() => taskCancelled, "the producer to cancel its task");
      const end = await cancelled.receiveCatching();
      assert.equal(end.state, "closed");
      assert.ok((end as { cause?: unknown }).cause instanceof CancellationError);
    });
  } finally {
    for (const [target, kept] of saved) {
      for (const [name, d] of kept) {
        if (d === undefined) delete (target as Record<PropertyKey, unknown>)[name];
        else Object.defineProperty(target, name, d);
      }
    }
  }
  assert.deepEqual(log, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(called, []);
});

Deno.test("produce and actor start, cancel and watch their tasks' jobs by JobSupport's own members, not ones a caller redefined on a job's prototype", async () => {
  // Before, produce() and actor() ran `job.invokeOnCompletion(...)`, a producer's consumer's
  // dispose and a mailbox's cancel `job.cancel(...)`, a lazy actor's send `job.start()`: the
  // prototype's at that call. A redefinition made produce() and actor() throw, or left the
  // task running after its channel was cancelled.
  const log: unknown[] = [];
  const { calls } = await withJobMembersRedefined(
    JOB_MEMBERS.filter((n) => n !== "join"), // the test's own join
    async () => {
      await coroutineScope(async (scope) => {
        // A producer whose consumer disposes of its channel: the producer is cancelled.
        let sent: Promise<void> | undefined;
        const out = produce<number>(scope, async (ch) => {
          await ch.send(1);
          sent = ch.send(2); // waits: rendezvous, nobody receives it
          await sent;
        });
        log.push(await out.receive());
        await until(() => sent !== undefined, "the producer's second send to wait");
        out[Symbol.dispose]();
        await assert.rejects(sent!, CancellationError);
        // A lazy actor started by its send, whose handler's cancel of its mailbox ends its task.
        const a = actor<number>(scope, async (mailbox) => {
          for await (const m of mailbox) {
            log.push(m);
            mailbox.cancel();
          }
        }, { lazy: true });
        await a.send(3);
        await within(a.job.join(), 10_000, "the actor's task to end");
        log.push(jobStateOf(a.job as JobSupport)); // not the redefined getter
      });
    },
  );
  assert.deepEqual(calls, []);
  assert.deepEqual(log, [1, 3, "cancelled"]);
});

Deno.test("produce: a failure its channel's close did not take is reported through the task's own context, not a `context` getter a caller redefined on a job's prototype", async () => {
  // The end's report of a failure kept from the exception handler whose channel a completion
  // handler of the block's closed first (1425049): before, `delivering.context`, the prototype's
  // getter at that call, whose throw left the producer's end (from a completion handler:
  // reported in the failure's place, the failure itself lost).
  const boom = new Error("reported through the task's own context");
  using reported = catchReported();
  const { calls } = await withJobMembersRedefined(["context"], async () => {
    const gate = Promise.withResolvers<void>();
    await supervisorScope(async (scope) => {
      using ch = produce<number>(
        scope,
        counted(async (out: Channel<number>, task: CoroutineScope) => {
          task.job.invokeOnCompletion(() => out.close());
          await gate.promise;
          throw boom;
        }),
      );
      gate.resolve();
      assert.equal((await ch.receiveCatching()).state, "closed");
    });
    await laterReports();
  });
  assert.deepEqual(calls, []);
  assertSameItems(reported.errors, [boom]);
  assert.equal(live, 0);
});

Deno.test("produce and actor on a scope of the caller's own that wraps kcoro's launch watch, cancel and report through the task's kcoro Job by JobSupport's own members, not ones a caller redefined on a job's prototype", async () => {
  // The paths JL's tests do not reach (each hunk of f57ca8b reverted left them passing): a scope
  // of the caller's own whose launch runs kcoro's but returns another Job (the task's own Job
  // ends the producer or actor: `endWithTask`), one whose task is an object of its own naming
  // the kcoro task as its `job` (`read.signal`), one that returns no Job (`abandon`: the task
  // cancelled and watched), one that starts the task only after returning no Job (the block's
  // abandoned path), and an actor's onDone throwing on a cancelled scope (`reportContext`).
  using reported = catchReported();
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as { start(): boolean };
  const ownStart = proto.start;
  const log: unknown[] = [];
  const boom = new Error("onDone threw");
  const tasks: Job[] = [];
  const { calls } = await withJobMembersRedefined(JOB_MEMBERS, async () => {
    await coroutineScope(async (kscope) => {
      type Launch = (block: (task: CoroutineScope) => unknown) => unknown;
      const wrap = (launch: Launch) => ({ launch }) as unknown as CoroutineScope;
      // Another Job returned: the task's own Job ends them.
      const other = new CompletableDeferred<void>();
      const returnsOther = wrap((block) => {
        kscope.launch(block);
        return other;
      });
      const out = produce<number>(returnsOther, async (ch) => {
        await ch.send(1);
      });
      log.push(await out.receive());
      log.push((await out.receiveCatching()).state);
      const a = actor<number>(returnsOther, async (mailbox) => {
        for await (const m of mailbox) log.push(m);
      });
      await a.send(2);
      a.close();
      // A task of the caller's own whose `job` is the kcoro task.
      const ownTask = wrap((block) =>
        kscope.launch((t) =>
          block({ job: t, signal: signalOfJob(t as unknown as JobSupport) } as never)
        )
      );
      const out2 = produce<number>(ownTask, async (ch) => {
        await ch.send(3);
      });
      log.push(await out2.receive());
      const a2 = actor<number>(ownTask, async (mailbox) => {
        for await (const m of mailbox) log.push(m);
      });
      await a2.send(4);
      a2.close();
      // No Job returned: the task, started or not yet, is cancelled and watched.
      const noJob = wrap((block) => {
        tasks.push(kscope.launch(block));
        return 5;
      });
      const later = wrap((block) => {
        const j = kscope.launch(block, { lazy: true });
        tasks.push(j);
        queueMicrotask(() => ownStart.call(j));
        return 5;
      });
      for (const scope of [noJob, later]) {
        assert.throws(() => actor<number>(scope, async () => {}), TypeError);
        assert.throws(() => produce<number>(scope, async () => {}), TypeError);
      }
      await until(
        () => tasks.every((t) => jobStateOf(t as unknown as JobSupport) === "cancelled"),
        "the abandoned tasks to end cancelled",
      );
      other.complete();
    });
    // An actor whose job is final inside actor() (its scope cancelled): onDone's throw is
    // reported in the scope's own context.
    const gone = createScope({ signal: AbortSignal.abort() });
    actor<number>(gone, async () => {}, {
      onDone: () => {
        throw boom;
      },
    });
    await laterReports();
  });
  assert.deepEqual(calls, []);
  assert.deepEqual(log, [1, "closed", 2, 3, 4]);
  assert.equal(reported.errors.length, 1);
  assert.equal((reported.errors[0] as Error).cause, boom);
});

Deno.test("produce: a cancel made elsewhere before the consumer's cancel cancels the task by JobSupport's own cancel, not one a caller redefined on a job's prototype", async () => {
  // `#cancelTask` (the consumer's cancel after native code's, the watch not told yet): before,
  // `job.cancel(...)`, the prototype's at that call, whose throw came out of the consumer's
  // cancel, the producer left running.
  let reason: unknown = undefined;
  const { calls } = await withJobMembersRedefined(
    JOB_MEMBERS.filter((n) => n !== "join"),
    async () => {
      await within(
        coroutineScope(async (scope) => {
          const ready = Promise.withResolvers<void>();
          using ch = produce<number>(
            scope,
            counted(async (_out: Channel<number>, task: CoroutineScope) => {
              ready.resolve();
              const signal = signalOfJob(task as unknown as JobSupport); // not the getter
              await busyUntilAborted(signal, (e) => reason = e);
            }),
            { capacity: 1 },
          );
          await ready.promise;
          endNatively("kc_chan_cancel", ch.handle, "the native cancel");
          ch.cancel(); // the same turn: the watch has not told it yet
        }),
        20_000,
        "the scope",
      );
    },
  );
  assert.deepEqual(calls, []);
  assert.ok(reason instanceof CancellationError, String(reason));
  assert.equal(live, 0);
});

Deno.test("actor: a cancel of its mailbox made elsewhere just before the handler disposes of it cancels the actor by JobSupport's own cancel, not one a caller redefined on a job's prototype", async () => {
  // The mailbox's dispose (`cancelledFirst`): before, `this.#s.job?.cancel(...)`, the
  // prototype's at that call, whose throw came out of the handler's dispose.
  let reason: unknown = undefined;
  const { calls } = await withJobMembersRedefined(
    JOB_MEMBERS.filter((n) => n !== "join"),
    async () => {
      await within(
        coroutineScope((scope) => {
          actor<number>(
            scope,
            counted(async (mailbox: Channel<number>, task: CoroutineScope) => {
              endNatively("kc_chan_cancel", mailbox.handle, "the native cancel");
              mailbox[Symbol.dispose]();
              const signal = signalOfJob(task as unknown as JobSupport); // not the getter
              await busyUntilAborted(signal, (e) => reason = e); // busy, not receiving
            }),
          );
        }),
        10_000,
        "the actor's end",
      );
    },
  );
  assert.deepEqual(calls, []);
  assert.ok(reason instanceof CancellationError, String(reason));
  assert.equal(live, 0);
});

Deno.test("produce and actor take the Job a launch returned for a kcoro Job by its brand, not by an invokeOnCompletion or cancel a caller redefined on a job's prototype", async () => {
  // launchChecked's check of what `launch` returned read `invokeOnCompletion` and `cancel`
  // through the job's prototype, though produce and actor run JobSupport's own: a getter there
  // that threw came out of produce() and actor() (the channel released, the task cancelled), one
  // answering no function refused kcoro's own launch's Job ("scope.launch must return a Job").
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const names = ["invokeOnCompletion", "cancel"];
  const descs = names.map((n) => Object.getOwnPropertyDescriptor(proto, n)!);
  const read: string[] = [];
  const log: unknown[] = [];
  await coroutineScope(async (kscope) => {
    // A scope of the caller's own that returns kcoro's launch's Job.
    const theirs = {
      launch: (block: Parameters<CoroutineScope["launch"]>[0]) => kscope.launch(block),
    };
    try {
      for (const name of names) {
        Object.defineProperty(proto, name, {
          configurable: true,
          get: () => {
            read.push(name);
            throw new Error(`the ${name} getter redefined on JobSupport.prototype ran`);
          },
        });
      }
      for (const scope of [kscope, theirs as unknown as CoroutineScope]) {
        const out = produce<number>(scope, async (ch) => {
          await ch.send(1);
        });
        log.push(await out.receive());
        const a = actor<number>(scope, async (mailbox) => {
          for await (const m of mailbox) log.push(m);
        });
        await a.send(2);
        a.close();
      }
    } finally {
      names.forEach((n, i) => Object.defineProperty(proto, n, descs[i]));
    }
  });
  assert.deepEqual(read, []);
  assert.deepEqual(log, [1, 2, 1, 2]);
});

Deno.test("produce and actor launch on kcoro's own scope by Coroutine's own launch and find its task's Job without its `job` getter, not a launch or getter a caller redefined on the scope's prototype", async () => {
  // Before, each ran `scope.launch(...)`, the prototype's at that call: a redefinition that threw
  // made produce() and actor() throw it, and one returning another Job had it taken for the
  // producer's own (its cancel cancelling the channel).
  const log: unknown[] = [];
  const called: string[] = [];
  await coroutineScope(async (scope) => {
    const proto = Object.getPrototypeOf(scope) as object;
    const desc = Object.getOwnPropertyDescriptor(proto, "launch")!;
    const jobDesc = Object.getOwnPropertyDescriptor(proto, "job")!;
    // A getter: produce's and actor's check of a scope (`checkScope`) reads no `launch` of a
    // kcoro scope's either.
    Object.defineProperty(proto, "launch", {
      configurable: true,
      get: () => {
        called.push("launch");
        throw new Error("the launch redefined on the scope's prototype ran");
      },
    });
    // And its `job` getter, through which they found the task's own Job (`taskJobOf`).
    Object.defineProperty(proto, "job", {
      ...jobDesc,
      get: () => {
        called.push("job");
        throw new Error("the job getter redefined on the scope's prototype ran");
      },
    });
    try {
      const out = produce<number>(scope, async (ch) => {
        await ch.send(1);
      });
      for await (const v of out) log.push(v);
      const a = actor<number>(scope, async (mailbox) => {
        for await (const m of mailbox) log.push(m);
      });
      await a.send(2);
      a.close();
      await within(a.job.join(), 10_000, "the actor to end");
    } finally {
      Object.defineProperty(proto, "launch", desc);
      Object.defineProperty(proto, "job", jobDesc);
    }
  });
  assert.deepEqual(called, []);
  assert.deepEqual(log, [1, 2]);
});

Deno.test("produce and actor on kcoro's own scope take the Job its own launch returned without reading its `cancel` or `invokeOnCompletion` through the job's prototype: a throwing getter or a non-function there changes nothing", async () => {
  // Before, launchChecked looked at the launched Job's `invokeOnCompletion` and `cancel` through
  // its prototype (the check for a Job of a caller's own launch) after Coroutine's own launch:
  // a getter redefined there that threw made produce() and actor() throw it, and one redefined
  // as no function refused kcoro's own Job ("scope.launch must return a Job, received a Job").
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  for (const name of ["cancel", "invokeOnCompletion"]) {
    for (const kind of ["a throwing getter", "no function"]) {
      const label = `${name} as ${kind}`;
      const desc = Object.getOwnPropertyDescriptor(proto, name)!;
      const log: unknown[] = [];
      let reads = 0;
      try {
        Object.defineProperty(
          proto,
          name,
          kind === "no function" ? { configurable: true, writable: true, value: 5 } : {
            configurable: true,
            get() {
              reads++;
              throw new Error(`the ${name} getter redefined on JobSupport.prototype ran`);
            },
          },
        );
        await coroutineScope(async (scope) => {
          const out = produce<number>(scope, async (ch) => {
            await ch.send(1);
          });
          for await (const v of out) log.push(v);
          const a = actor<number>(scope, async (mailbox) => {
            for await (const m of mailbox) log.push(m);
          });
          await a.send(2);
          a.close();
          await within(a.job.join(), 10_000, `${label}: the actor to end`);
        });
      } finally {
        Object.defineProperty(proto, name, desc);
      }
      assert.equal(reads, 0, label);
      assert.deepEqual(log, [1, 2], label);
    }
  }
});

Deno.test("actor: a lazy actor's first send or trySend of an object copies it once (its getters run once, as a started actor's do); a function is still refused before the start, an object only its copy refuses after it", async () => {
  // Before, the first send of a lazy actor checked the message by copying it (the codec's
  // check, for the CodecError before the start), then the send copied it again: a getter of
  // the message ran twice, its structured clone was made twice. Only a message that is no
  // object (a function, a symbol, a primitive) is checked before the start now, which runs
  // nothing of the caller's; an object is told by the send's one copy, after the start, as
  // Kotlin's LazyActorCoroutine starts before its send looks at the element.
  for (const call of ["send", "trySend"] as const) {
    for (const lazy of [false, true]) {
      let reads = 0;
      const message = {
        get x() {
          reads++;
          return 1;
        },
      };
      const got: unknown[] = [];
      await coroutineScope(async (scope) => {
        const a = actor<unknown>(scope, async (mailbox) => {
          for await (const m of mailbox) got.push(m);
        }, { lazy, capacity: 2 });
        if (call === "send") await a.send(message);
        else assert.equal(a.trySend(message).state, "ok");
        a.close();
      });
      assert.equal(reads, 1, `${call}, lazy ${lazy}: the getter ran once`);
      assert.deepEqual(got, [{ x: 1 }]);
    }
  }
  // A function inside an object is refused by the copy, after the start (the handler ran).
  const seen: string[] = [];
  await coroutineScope(async (scope) => {
    const a = actor<unknown>(scope, async (mailbox) => {
      seen.push("started");
      for await (const _ of mailbox) seen.push("message");
    }, { lazy: true, capacity: 2 });
    await assert.rejects(a.send({ f() {} }), CodecError);
    assert.equal(a.job.state, "active");
    a.close();
  });
  assert.deepEqual(seen, ["started"]);
});

// Scopes and Kotlin's propagation rules, one test per rule, with every task counted so that
// none outlives its scope. Tasks wait on gates or on their signal, never on sleeps.
import assert from "node:assert/strict";
import { EventEmitter, once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import {
  assertSameItems,
  catchReported,
  evalScript,
  JOB_MEMBERS,
  nestThroughSignals,
  settled,
  until,
  untilAborted,
  within,
  withJobMembersRedefined,
} from "./support.ts";
import { jobStateOf, type JobSupport, signalOfJob } from "../src/job.ts";
import { moduleCopy } from "./fixtures/module_copy.ts";
import {
  type Block,
  CancellationError,
  CompletableDeferred,
  Context,
  CoroutineExceptionHandler,
  type CoroutineScope,
  coroutineScope,
  createContextKey,
  createScope,
  delay,
  type Job,
  nonCancellable,
  supervisorScope,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";

/**
 * A scope or task, what the follow queue holds beside the signals, by members each has (the
 * queue's own members are module symbols now, out of reach).
 */
function isScopeLike(x: object): boolean {
  return "launch" in x && "async" in x && "job" in x;
}

/** Live tasks: every block in this file is wrapped by `counted`. */
let live = 0;
function counted<T>(block: Block<T>): Block<T> {
  return async (scope) => {
    live++;
    try {
      return await block(scope);
    } finally {
      live--;
    }
  };
}

/** Collects what reaches CoroutineExceptionHandler. */
function collecting(): { context: Context; reported: unknown[] } {
  const reported: unknown[] = [];
  return {
    context: Context.empty.with(CoroutineExceptionHandler, (e) => reported.push(e)),
    reported,
  };
}

Deno.test("a scope returns only when its block and all children are done", async () => {
  const order: string[] = [];
  const gate = Promise.withResolvers<void>();
  const result = coroutineScope(counted((scope) => {
    scope.launch(counted(async () => {
      await gate.promise;
      order.push("child");
    }));
    order.push("block");
    return "value";
  }));
  // The block has returned but the child waits on the gate: the scope has not.
  let settled = false;
  result.then(() => settled = true);
  await null;
  await null;
  assert.equal(settled, false);
  gate.resolve();
  assert.equal(await result, "value");
  assert.deepEqual(order, ["block", "child"]);
  assert.equal(live, 0);
});

Deno.test("a child failure cancels its siblings and the scope rethrows it", async () => {
  const boom = new Error("boom");
  const reasons: unknown[] = [];
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      for (let i = 0; i < 3; i++) {
        scope.launch(counted((task) =>
          untilAborted(task.signal).catch((e) => {
            reasons.push(e);
            throw e;
          })
        ));
      }
      scope.launch(counted(async () => {
        await null;
        throw boom;
      }));
      await untilAborted(scope.signal).catch(() => {});
    })),
    (e) => e === boom,
  );
  assert.equal(reasons.length, 3);
  for (const r of reasons) {
    assert.ok(r instanceof CancellationError);
    assert.equal(r.cause, boom); // siblings see a cancellation caused by the failure
  }
  assert.equal(live, 0);
});

Deno.test("an async child's failure cancels the scope too", async () => {
  const boom = new Error("async boom");
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      scope.async(counted(() => Promise.reject(boom))); // never awaited
      await untilAborted(scope.signal);
    })),
    (e) => e === boom,
  );
  assert.equal(live, 0);
});

Deno.test("the block's own failure cancels the children and is rethrown", async () => {
  const boom = new Error("block failed");
  let childCancelled = false;
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      scope.launch(counted((task) =>
        untilAborted(task.signal).catch((e) => {
          childCancelled = e instanceof CancellationError;
        })
      ));
      await null;
      throw boom;
    })),
    (e) => e === boom,
  );
  assert.equal(childCancelled, true);
  assert.equal(live, 0);
});

Deno.test("cancellation is not a failure: a cancelled child leaves siblings and scope alone", async () => {
  const value = await coroutineScope(counted(async (scope) => {
    const victim = scope.launch(counted((task) => untilAborted(task.signal)));
    const sibling = scope.async(counted(async () => {
      await victim.join();
      return "sibling finished";
    }));
    victim.cancel();
    assert.equal(scope.isActive, true);
    return await sibling.await();
  }));
  assert.equal(value, "sibling finished");
  assert.equal(live, 0);
});

Deno.test("a child throwing CancellationError itself is cancelled, not failed", async () => {
  const value = await coroutineScope(counted(async (scope) => {
    const child = scope.launch(counted(() => Promise.reject(new CancellationError("gave up"))));
    await child.join();
    assert.equal(child.state, "cancelled");
    return scope.isActive;
  }));
  assert.equal(value, true);
  assert.equal(live, 0);
});

Deno.test("a CancellationError that is not its job's own (made by the block, or another job's) ends the job cancelled wherever it is let out, as Kotlin's", async () => {
  const { context, reported } = collecting();
  const mine = () => new CancellationError("the block's own");
  // A coroutineScope's block: the scope rejects with it, cancelled.
  const own = mine();
  await assert.rejects(coroutineScope(() => Promise.reject(own)), (e) => e === own);
  // Under a supervisor: the launch is cancelled, nothing reported; the async's await rethrows
  // it; the scope goes on.
  const sameError = await supervisorScope(
    counted(async (scope) => {
      const launched = scope.launch(counted(() => Promise.reject(mine())));
      const error = mine();
      const deferred = scope.async(counted(() => Promise.reject(error)));
      await launched.join();
      await assert.rejects(deferred.await(), (e) => e === error);
      assert.deepEqual([launched.state, deferred.state, scope.isActive], [
        "cancelled",
        "cancelled",
        true,
      ]);
      return true;
    }),
    { context },
  );
  assert.equal(sameError, true);
  // Another job's cancellation, awaited and let out: the awaiting task is cancelled, its
  // siblings and its scope go on.
  const other = createScope();
  const gone = other.async(counted((task) => untilAborted(task.signal)));
  other.cancel();
  const states = await coroutineScope(counted(async (scope) => {
    const sibling = scope.async(counted(() => "sibling"));
    const waiter = scope.launch(counted(() => gone.await()));
    await waiter.join();
    return [waiter.state, await sibling.await(), scope.isActive];
  }));
  assert.deepEqual(states, ["cancelled", "sibling", true]);
  assert.deepEqual(reported, []);
  assert.equal(live, 0);
});

Deno.test("an AbortError from a Node API given the task's signal ends the task cancelled, not failed", async () => {
  // Node's APIs given a signal reject with a new AbortError: node:timers/promises' one carries
  // the signal's reason as its `cause`, Deno's events.once' carries nothing. Kotlin's suspending
  // calls throw the cancellation itself. Before, such a task failed: a cancelled scope rejected
  // with the AbortError, a timeout's withTimeoutOrNull too instead of resolving null, a
  // supervisor reported it, and a scope failing for another reason kept it in its failure's
  // `suppressed`.
  const emitter = new EventEmitter();
  const waits = {
    "events.once": (task: CoroutineScope) => once(emitter, "never", { signal: task.signal }),
    "timers/promises": (task: CoroutineScope) => sleep(60_000, undefined, { signal: task.signal }),
  };
  for (const [api, waitAborted] of Object.entries(waits)) {
    const { context, reported } = collecting();
    let cancelled!: Job;
    const cancel = coroutineScope(counted(async (scope) => {
      cancelled = scope.launch(counted(waitAborted));
      await null;
      scope.cancel();
    }));
    await assert.rejects(cancel, (e) => e instanceof CancellationError, api);
    assert.equal(cancelled.state, "cancelled", api);

    assert.equal(await withTimeoutOrNull(1, counted(waitAborted)), null, api);

    const boom = new Error("boom");
    await assert.rejects(
      coroutineScope(counted(async (scope) => {
        scope.launch(counted(waitAborted));
        await null;
        throw boom;
      })),
      (e) => e === boom,
    );
    assert.equal(Object.hasOwn(boom, "suppressed"), false, `${api}: no second failure`);

    await supervisorScope(
      counted(async (scope) => {
        const job = scope.launch(counted(waitAborted));
        await null;
        job.cancel();
        await job.join();
      }),
      { context },
    );
    assert.deepEqual(reported, [], api);
  }
  // One carrying another job's cancellation, let out by a task that is not cancelled: that
  // cancellation, as when the task lets out the CancellationError itself.
  const elsewhere = new CancellationError("another job's");
  const carried = Object.assign(new Error("aborted", { cause: elsewhere }), { name: "AbortError" });
  await coroutineScope(counted(async (scope) => {
    const deferred = scope.async(counted(() => Promise.reject(carried)));
    await assert.rejects(deferred.await(), (e) => e === elsewhere);
    assert.equal(deferred.state, "cancelled");
  }));
  // One that carries no cancellation, from a task not cancelled, is a failure, as any error.
  const plain = Object.assign(new Error("aborted by hand"), { name: "AbortError" });
  await assert.rejects(coroutineScope(() => Promise.reject(plain)), (e) => e === plain);
  assert.equal(live, 0);
});

Deno.test("a DOMException AbortError (another signal's reason) let out of a cancelling task is a failure, as Kotlin's other exception in a cancelled coroutine", async () => {
  // fetch, delay and Deno's APIs reject with their signal's reason as it is: given the task's
  // signal, its CancellationError. A DOMException named AbortError is the reason of a signal
  // aborted with none, not the task's: here a wait of the task's cleanup, given a controller of
  // the caller's that aborts. Kotlin fails a cancelled coroutine whose `finally` throws another
  // exception. Before, a task already cancelling took it as its cancellation: the supervisor
  // reported nothing, and the coroutineScope rejected with its CancellationError.
  const cleanup = async (task: CoroutineScope) => {
    try {
      await untilAborted(task.signal);
    } finally {
      const mine = new AbortController();
      const wait = delay(60_000, { signal: mine.signal }); // as a fetch given that signal
      mine.abort();
      await wait;
    }
  };
  const { context, reported } = collecting();
  let failed!: Job;
  await supervisorScope(
    counted(async (scope) => {
      failed = scope.launch(counted(cleanup));
      await null;
      failed.cancel();
      await failed.join();
    }),
    { context },
  );
  assert.equal(reported.length, 1);
  assert.ok(reported[0] instanceof DOMException && reported[0].name === "AbortError");
  assert.equal(failed.state, "cancelled"); // a failed job is cancelled with a failure's cause

  const rejected = await coroutineScope(counted(async (scope) => {
    scope.launch(counted(cleanup));
    await null;
    scope.cancel();
  })).then(() => null, (e: unknown) => e);
  assert.ok(rejected instanceof DOMException && rejected.name === "AbortError", String(rejected));
  assert.equal(live, 0);
});

Deno.test("a Node AbortError carrying another signal's reason (node:timers/promises given a controller of the caller's) let out of a cancelling task is a failure, as a DOMException", async () => {
  // Node's APIs carry their signal's reason as the AbortError's `cause`: a task's signal's is
  // its CancellationError, so any other cause is another signal's reason. Before, a task
  // already cancelling took such an AbortError as its cancellation, where `delay` or `fetch`
  // aborted by the same controller failed it: the supervisor reported nothing.
  for (const reason of [undefined, new Error("mine")]) {
    const cleanup = async (task: CoroutineScope) => {
      try {
        await untilAborted(task.signal);
      } finally {
        const mine = new AbortController();
        const wait = sleep(60_000, undefined, { signal: mine.signal });
        mine.abort(reason);
        await wait;
      }
    };
    const isMine = (e: unknown) =>
      e instanceof Error && e.name === "AbortError" && !(e instanceof DOMException) &&
      (reason === undefined ? e.cause instanceof DOMException : e.cause === reason);
    const { context, reported } = collecting();
    await supervisorScope(
      counted(async (scope) => {
        const failed = scope.launch(counted(cleanup));
        await null;
        failed.cancel();
        await failed.join();
      }),
      { context },
    );
    assert.equal(reported.length, 1, `reason ${reason}: reported`);
    assert.ok(isMine(reported[0]), String(reported[0]));
    const rejected = await coroutineScope(counted(async (scope) => {
      scope.launch(counted(cleanup));
      await null;
      scope.cancel();
    })).then(() => null, (e: unknown) => e);
    assert.ok(isMine(rejected), String(rejected));
  }
  assert.equal(live, 0);
});

Deno.test("a Node AbortError carrying nothing (events.once) is the task's cancellation only while the task is cancelling: nothing in it tells which signal aborted", async () => {
  // README's rule, pinned: given another job's signal, cancelled while the task is not,
  // events.once' AbortError fails the task, where node:timers/promises' (carrying that job's
  // CancellationError) ends it cancelled; given a controller of the caller's, aborted while the
  // task is cancelling, events.once' ends it cancelled.
  const emitter = new EventEmitter();
  const other = new CompletableDeferred<void>();
  const waits = {
    "events.once": () => once(emitter, "never", { signal: other.signal }),
    "timers/promises": () => sleep(60_000, undefined, { signal: other.signal }),
  };
  const outcomes: Record<string, string> = {};
  await supervisorScope(async (scope) => {
    const jobs = Object.entries(waits).map(([api, wait]) => [api, scope.async(wait)] as const);
    await null;
    other.cancel();
    for (const [api, job] of jobs) {
      outcomes[api] = await job.await().then(() => "completed", (e: Error) => e.name);
      assert.equal(job.state, "cancelled", api); // a failed job is cancelled too
    }
  });
  assert.deepEqual(outcomes, {
    "events.once": "AbortError", // its failure
    "timers/promises": "CancellationError",
  });
  const { context, reported } = collecting();
  await supervisorScope(async (scope) => {
    const job = scope.launch(async (task) => {
      try {
        await untilAborted(task.signal);
      } finally {
        const mine = new AbortController();
        const wait = once(emitter, "never", { signal: mine.signal });
        mine.abort(new Error("mine"));
        await wait;
      }
    });
    await null;
    job.cancel();
    await job.join();
  }, { context });
  assert.deepEqual(reported, [], "taken as the task's cancellation");
});

Deno.test("cancelling a job cancels its whole subtree", async () => {
  const states: string[] = [];
  await coroutineScope(counted(async (scope) => {
    const parent = scope.launch(counted((task) => {
      for (let i = 0; i < 2; i++) {
        task.launch(counted((t) => {
          t.launch(counted((g) => untilAborted(g.signal)));
          return untilAborted(t.signal);
        }));
      }
      return untilAborted(task.signal);
    }));
    const all = () => [parent, ...parent.children, ...parent.children.flatMap((c) => c.children)];
    const jobs = all();
    assert.equal(jobs.length, 5);
    parent.cancel();
    await parent.join();
    for (const j of jobs) states.push(j.state);
  }));
  assert.deepEqual(states, Array(5).fill("cancelled"));
  assert.equal(live, 0);
});

Deno.test("cancelling a scope cancels its children oldest first, each subtree before the next", async () => {
  // Kotlin's order: a job notifies its children in the order they were attached, and each
  // child's cancellation reaches its own children before the next sibling's. Before, newest
  // first (c, b, a, a2, a1; the lazy ones' handlers z, y, x).
  const aborted: string[] = [];
  const completed: string[] = [];
  const watch = (name: string, t: CoroutineScope) => {
    t.signal.addEventListener("abort", () => aborted.push(name), { once: true });
    return untilAborted(t.signal);
  };
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      scope.launch(counted((a) => {
        a.launch(counted((a1) => watch("a1", a1)));
        a.launch(counted((a2) => watch("a2", a2)));
        return watch("a", a);
      }));
      scope.launch(counted((b) => watch("b", b)));
      for (const name of ["x", "y", "z"]) {
        // Lazy, never started: cancelling one completes it at once, so its handler runs in
        // the walk's order.
        scope.launch(() => {}, { lazy: true }).invokeOnCompletion(() => completed.push(name));
      }
      scope.launch(counted((c) => watch("c", c)));
      await null;
      scope.cancel();
    })),
    CancellationError,
  );
  assert.deepEqual(aborted, ["a", "a1", "a2", "b", "c"]);
  assert.deepEqual(completed, ["x", "y", "z"]);
  assert.equal(live, 0);
});

Deno.test("cancelling reaches every child even when cancelling one finishes a sibling", async () => {
  // Cancelling a child runs code (a lazy child's completion handler, an abort listener) that
  // may finish the sibling the walk was about to visit next (the walk goes oldest first).
  for (const how of ["handler", "listener"] as const) {
    let youngest = false;
    await assert.rejects(
      coroutineScope(async (scope) => {
        // The oldest finishes `lazy` (declared below, read only once the scope is cancelled).
        if (how === "handler") {
          scope.launch(() => {}, { lazy: true }).invokeOnCompletion(() => lazy.cancel());
        } else {
          scope.launch((t) => {
            t.signal.addEventListener("abort", () => lazy.cancel());
            return untilAborted(t.signal);
          });
        }
        const lazy = scope.launch(() => {}, { lazy: true });
        scope.launch(async (t) => {
          await untilAborted(t.signal).catch(() => youngest = true);
        });
        await null;
        scope.cancel();
      }),
      CancellationError,
    );
    assert.ok(youngest, `${how}: the youngest child was cancelled`);
  }
});

Deno.test("cancelling reaches every child once, in order, when each child's cancel finishes the next", async () => {
  // Running children, each followed by a lazy one that its abort listener cancels: the walk's
  // next child leaves the list under it every time. The walk used to restart from the head then
  // (O(N^2), ~9 s for 40,000 pairs against ~0.4 s now); it keeps its place through #walk, which
  // #finalize moves past a leaving child. Speed is not asserted here (the brief keeps speed in
  // benchmarks); the order and the count say the walk still reaches every child once, and
  // "cancelling reaches every child even when cancelling one finishes a sibling" above fails
  // without the move.
  const pairs = 4_000;
  const aborted: number[] = [];
  const lazies: Job[] = [];
  await assert.rejects(
    coroutineScope(async (scope) => {
      for (let i = 0; i < pairs; i++) {
        scope.launch((t) =>
          new Promise<void>((resolve) => {
            t.signal.addEventListener("abort", () => {
              aborted.push(i);
              lazies[i].cancel();
              resolve();
            }, { once: true });
          })
        );
        lazies.push(scope.launch(() => {}, { lazy: true }));
      }
      await null;
      scope.cancel();
    }),
    CancellationError,
  );
  assert.equal(aborted.length, pairs);
  assert.ok(aborted.every((v, i) => v === i), "the running children aborted oldest first");
  assert.ok(lazies.every((j) => j.state === "cancelled"));
});

Deno.test("a block returning a thenable whose then throws fails, never escaping launch", async () => {
  const bad = {
    then() {
      throw new Error("then threw");
    },
  };
  const badGetter = {
    get then() {
      throw new Error("then getter threw");
    },
  };
  for (const [value, message] of [[bad, "then threw"], [badGetter, "then getter threw"]] as const) {
    await assert.rejects(
      coroutineScope((scope) => {
        scope.launch(() => value as never); // returns normally; the child fails
        return Promise.resolve("block done");
      }),
      { message },
    );
  }
  // A non-callable then is a plain value.
  assert.deepEqual(await coroutineScope(() => ({ then: 5 })), { then: 5 });
});

Deno.test("a grandchild's failure travels up and cancels every other branch", async () => {
  const boom = new Error("deep");
  let uncleCancelled = false;
  await assert.rejects(
    coroutineScope(counted((scope) => {
      scope.launch(counted((task) => {
        task.launch(counted(async () => {
          await null;
          throw boom;
        }));
        return untilAborted(task.signal);
      }));
      scope.launch(counted((task) =>
        untilAborted(task.signal).catch(() => {
          uncleCancelled = true;
        })
      ));
    })),
    (e) => e === boom,
  );
  assert.equal(uncleCancelled, true);
  assert.equal(live, 0);
});

Deno.test("the first failure wins; later ones are not reported twice", async () => {
  const first = new Error("first");
  const second = new Error("second");
  const { context, reported } = collecting();
  await assert.rejects(
    coroutineScope(
      counted((scope) => {
        scope.launch(counted(async (task) => {
          await untilAborted(task.signal).catch(() => {});
          throw second; // fails again while cancelling
        }));
        scope.launch(counted(async () => {
          await null;
          throw first;
        }));
      }),
      { context },
    ),
    (e) => e === first,
  );
  assert.deepEqual(reported, []); // coroutineScope rethrows; nothing is left to report
  assert.equal(live, 0);
  // The later failure is not lost: it is the first's suppressed (as Kotlin's addSuppressed).
  assertSameItems((first as Error & { suppressed?: unknown[] }).suppressed, [second]);
  assert.ok(!Object.keys(first).includes("suppressed")); // not enumerable
  // A first failure that cannot keep it (a string): the later one is reported instead.
  const other = collecting();
  await assert.rejects(
    coroutineScope((scope) => {
      scope.launch(async (task) => {
        await untilAborted(task.signal).catch(() => {});
        throw second;
      });
      scope.launch(async () => {
        await null;
        throw "first, a string";
      });
      return Promise.resolve();
    }, { context: other.context }),
    (e) => e === "first, a string",
  );
  assertSameItems(other.reported, [second]);
});

Deno.test("a first failure that is not extensible (Object.preventExtensions, not frozen) keeps no suppressed list: a later failure is reported instead", async () => {
  // The rule is extensibility (Object.isExtensible), not frozenness: README said "frozen", and an
  // error only made non-extensible, its own properties still writable, was no exception there.
  for (const how of ["preventExtensions", "seal"] as const) {
    const { context, reported } = collecting();
    const first = new Error(`first, ${how}`);
    if (how === "seal") Object.seal(first);
    else Object.preventExtensions(first);
    assert.equal(Object.isFrozen(first), false, how); // its message is still writable
    const second = new Error("second");
    await assert.rejects(
      coroutineScope((scope) => {
        scope.launch(counted(async (task: CoroutineScope) => {
          await untilAborted(task.signal).catch(() => {});
          throw second;
        }));
        scope.launch(counted(async () => {
          await null;
          throw first;
        }));
        return Promise.resolve();
      }, { context }),
      (e) => e === first,
      how,
    );
    assertSameItems(reported, [second]);
    assert.equal(Object.hasOwn(first, "suppressed"), false, how);
  }
  assert.equal(live, 0);
});

Deno.test("a long suppressed list keeps each later failure once, in order", async () => {
  // Past a few entries the duplicate check uses a Set beside the list (a scan per failure was
  // quadratic); what the list holds, and in which order, must not change.
  /** One child per error, all released together: the first fails the scope, the rest follow. */
  const failAll = async (errors: unknown[], context = collecting().context) => {
    const gate = Promise.withResolvers<void>();
    let thrown: unknown;
    await coroutineScope((scope) => {
      for (const e of errors) {
        scope.launch(counted(async () => {
          await gate.promise;
          throw e;
        }));
      }
      gate.resolve();
    }, { context }).catch((e) => thrown = e);
    return thrown as Error & { suppressed?: unknown[] };
  };
  const errors = Array.from({ length: 20 }, (_, i) => new Error(`e${i}`));
  const shared = errors[12];
  // Two children throw `shared` (both after the list is long) and one the first failure again.
  const thrown = [...errors.slice(0, 15), shared, errors[0], ...errors.slice(15)];
  const first = await failAll(thrown);
  assert.equal(first, errors[0]);
  assertSameItems(first.suppressed, errors.slice(1));
  assert.equal(live, 0);

  // A long list the first failure already had: its entries count as kept.
  const old = Array.from({ length: 10 }, (_, i) => new Error(`old${i}`));
  const head: Error & { suppressed?: unknown[] } = new Error("head");
  Object.defineProperty(head, "suppressed", { value: [...old], writable: true });
  const fresh = new Error("fresh");
  await failAll([head, old[3], fresh, old[9], fresh]);
  assertSameItems(head.suppressed, [...old, fresh]);

  // A frozen long list: a failure it holds is kept already; one it does not is reported.
  const frozen: Error & { suppressed?: unknown[] } = new Error("frozen");
  Object.defineProperty(frozen, "suppressed", { value: Object.freeze([...old]) });
  const { context, reported } = collecting();
  await failAll([frozen, old[5], fresh], context);
  assertSameItems(reported, [fresh]);
  assertSameItems(frozen.suppressed, old);
});

Deno.test("a suppressed list of the caller's own that is sparse (length 2^32 - 2, no element) takes a later failure at once: reading it index by index held the event loop for minutes", async () => {
  // A child process, killed at the bound: without the fix its event loop is held.
  const res = await evalScript(
    `
    import { coroutineScope, delay } from "./mod.ts";
    const list = [];
    list.length = 2 ** 32 - 2;
    const first = Object.defineProperty(new Error("first"), "suppressed", { value: list });
    const second = new Error("second");
    const thrown = await coroutineScope((scope) => {
      scope.launch(async (task) => {
        await delay(60_000, { signal: task.signal }).catch(() => {});
        throw second;
      });
      scope.launch(async () => {
        await delay(1);
        throw first;
      });
    }).catch((e) => e);
    console.log(JSON.stringify({
      first: thrown === first,
      kept: list[2 ** 32 - 2] === second,
      length: list.length,
    }));
  `,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.signal, null, "killed at the bound: the event loop was held");
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), {
    first: true,
    kept: true,
    length: 2 ** 32 - 1,
  });
});

Deno.test("a first failure that is a SuppressedError keeps its suppressed error; a later failure is reported instead", async () => {
  // A `using` block whose dispose throws while an error is in flight throws a SuppressedError,
  // whose own `suppressed` is the error it replaced: adding to it as a list would lose that.
  const { context, reported } = collecting();
  const second = new Error("second");
  let first: unknown;
  await coroutineScope((scope) => {
    scope.launch(counted(async () => {
      await null;
      await using _resource = {
        [Symbol.asyncDispose]: () => Promise.reject(new Error("dispose failed")),
      };
      throw new Error("body failed");
    }));
    scope.launch(counted(async (task) => {
      await untilAborted(task.signal).catch(() => {}); // fails once the first failure cancels it
      throw second;
    }));
    return Promise.resolve();
  }, { context }).catch((e) => first = e);
  assert.ok(first instanceof SuppressedError, `the first failure: ${first}`);
  assert.equal((first.suppressed as Error).message, "body failed");
  assert.equal((first.error as Error).message, "dispose failed");
  assertSameItems(reported, [second]);
  assert.equal(live, 0);
});

Deno.test("a task that throws undefined fails (its handlers are not told it completed)", async () => {
  const causes: unknown[] = [];
  await supervisorScope(async (scope) => {
    const d = scope.async(() => Promise.reject(undefined));
    d.invokeOnCompletion((cause) => causes.push(cause));
    await d.join();
    assert.equal(d.state, "cancelled");
    await assert.rejects(d.await(), /error must not be undefined/);
  }, { context: collecting().context });
  assert.equal(causes.length, 1);
  assert.ok(causes[0] instanceof Error, "a cause, not undefined");
});

Deno.test("a failure during cancellation becomes the cause (it outranks a cancellation)", async () => {
  const cleanup = new Error("cleanup failed");
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      scope.launch(counted(async (task) => {
        await untilAborted(task.signal).catch(() => {});
        throw cleanup;
      }));
      await null;
      scope.cancel();
    })),
    (e) => e === cleanup,
  );
  assert.equal(live, 0);
});

Deno.test("scope.cancel() from its block: the scope rejects with the CancellationError", async () => {
  const cause = new CancellationError("enough");
  await assert.rejects(
    coroutineScope(counted((scope) => {
      scope.launch(counted((task) => untilAborted(task.signal)));
      scope.cancel(cause);
      return "ignored";
    })),
    (e) => e === cause,
  );
  assert.equal(live, 0);
});

Deno.test("launching into a cancelled scope: the child is cancelled and never runs", async () => {
  let ran = false;
  await assert.rejects(
    coroutineScope(counted((scope) => {
      scope.cancel();
      const job = scope.launch(() => {
        ran = true;
      });
      assert.equal(job.state, "cancelled");
    })),
    CancellationError,
  );
  assert.equal(ran, false);
});

Deno.test("supervisorScope: a failing launch leaves its siblings running and is reported", async () => {
  const boom = new Error("isolated");
  const { context, reported } = collecting();
  const value = await supervisorScope(
    counted(async (scope) => {
      const bad = scope.launch(counted(async () => {
        await null;
        throw boom;
      }));
      const good = scope.async(counted(async () => {
        await bad.join();
        return "still here";
      }));
      return await good.await();
    }),
    { context },
  );
  assert.equal(value, "still here");
  assertSameItems(reported, [boom]);
  assert.equal(live, 0);
});

Deno.test("supervisorScope: a failing async keeps its error for await, unreported", async () => {
  const boom = new Error("kept");
  const { context, reported } = collecting();
  await supervisorScope(
    counted(async (scope) => {
      const d = scope.async(counted(() => Promise.reject(boom)));
      await assert.rejects(d.await(), (e) => e === boom);
    }),
    { context },
  );
  assert.deepEqual(reported, []);
});

Deno.test("supervisorScope: its block's own failure cancels every child", async () => {
  const boom = new Error("supervisor block");
  let cancelled = 0;
  await assert.rejects(
    supervisorScope(counted(async (scope) => {
      for (let i = 0; i < 2; i++) {
        scope.launch(counted((t) => untilAborted(t.signal).catch(() => void cancelled++)));
      }
      await null;
      throw boom;
    })),
    (e) => e === boom,
  );
  assert.equal(cancelled, 2);
  assert.equal(live, 0);
});

Deno.test("a child of a supervisor's child is not supervised: it cancels its parent", async () => {
  const boom = new Error("inner");
  const { context, reported } = collecting();
  await supervisorScope(async (scope) => {
    const parent = scope.launch(counted((task) => {
      task.launch(counted(async () => {
        await null;
        throw boom;
      }));
      return untilAborted(task.signal);
    }));
    await parent.join();
    assert.equal(parent.state, "cancelled");
  }, { context });
  assertSameItems(reported, [boom]); // reported once, by the supervisor's direct child
  assert.equal(live, 0);
});

Deno.test("an outside signal cancels the scope; it rejects once every task has settled", async () => {
  const controller = new AbortController();
  const reason = new Error("user pressed stop");
  const started = Promise.withResolvers<void>();
  const run = coroutineScope(
    counted(async (scope) => {
      for (let i = 0; i < 5; i++) scope.launch(counted((t) => untilAborted(t.signal)));
      started.resolve();
      await untilAborted(scope.signal);
    }),
    { signal: controller.signal },
  );
  await started.promise;
  assert.equal(live, 6);
  controller.abort(reason);
  await assert.rejects(run, (e) => e instanceof CancellationError && e.cause === reason);
  assert.equal(live, 0);
});

Deno.test("an already aborted signal fails the scope at once without running the block", async () => {
  let ran = false;
  const reason = new CancellationError("already");
  await assert.rejects(
    coroutineScope(() => {
      ran = true;
    }, { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  assert.equal(ran, false);
});

Deno.test("scope.signal goes out: it aborts when the scope is cancelled", async () => {
  let seen: AbortSignal | undefined;
  await assert.rejects(
    coroutineScope(async (scope) => {
      seen = scope.signal;
      const wait = delay(60_000, { signal: scope.signal }); // any API that takes a signal
      scope.cancel();
      await wait;
    }),
    CancellationError,
  );
  assert.equal(seen!.aborted, true);
  assert.ok(seen!.reason instanceof CancellationError);
});

Deno.test("a lazy child keeps its scope waiting until someone starts it", async () => {
  const order: string[] = [];
  await coroutineScope(counted((scope) => {
    const lazy = scope.launch(
      counted(() => {
        order.push("lazy ran");
      }),
      { lazy: true },
    );
    scope.launch(counted(async () => {
      await null;
      order.push("starter");
      lazy.start();
    }));
  }));
  assert.deepEqual(order, ["starter", "lazy ran"]);
  assert.equal(live, 0);
});

Deno.test("await using createScope(): leaving the block cancels and awaits every task", async () => {
  let cancelled = 0;
  {
    await using scope = createScope();
    for (let i = 0; i < 10; i++) {
      scope.launch(counted((t) =>
        untilAborted(t.signal).catch((e) => {
          if (e instanceof CancellationError) cancelled++;
        })
      ));
    }
    assert.equal(live, 10);
  }
  assert.equal(live, 0);
  assert.equal(cancelled, 10);
});

Deno.test("createScope().join(): waits for the tasks, then the scope is completed", async () => {
  const scope = createScope();
  const gate = Promise.withResolvers<void>();
  let done = 0;
  for (let i = 0; i < 3; i++) {
    scope.launch(counted(async () => {
      await gate.promise;
      done++;
    }));
  }
  const joined = scope.join();
  assert.equal(scope.state, "completing");
  gate.resolve();
  await joined;
  assert.equal(done, 3);
  assert.equal(scope.state, "completed");
  let ran = false;
  const late = scope.launch(() => {
    ran = true;
  });
  assert.equal(late.state, "cancelled"); // a completed scope takes no new work
  assert.equal(ran, false);
  assert.equal(live, 0);
});

Deno.test("createScope(): a failed launch cancels the scope and is reported", async () => {
  const boom = new Error("standalone");
  const { context, reported } = collecting();
  await using scope = createScope({ context });
  const other = scope.launch(counted((t) => untilAborted(t.signal)));
  scope.launch(counted(() => Promise.reject(boom)));
  await other.join();
  assert.equal(scope.isCancelled, true);
  assertSameItems(reported, [boom]);
});

Deno.test("createScope({ supervisor: true }): a failed launch cancels nothing", async () => {
  const { context, reported } = collecting();
  await using scope = createScope({ context, supervisor: true });
  const bad = scope.launch(counted(() => Promise.reject(new Error("x"))));
  await bad.join();
  assert.equal(scope.isActive, true);
  assert.equal(reported.length, 1);
});

Deno.test("createScope({ signal }): an outside signal cancels it", async () => {
  const controller = new AbortController();
  const scope = createScope({ signal: controller.signal });
  const job = scope.launch(counted((t) => untilAborted(t.signal)));
  controller.abort();
  await job.join();
  assert.equal(job.state, "cancelled");
  assert.equal(scope.state, "cancelled");
  assert.equal(createScope({ signal: AbortSignal.abort() }).state, "cancelled");
});

/** The cause a job's completion handlers get (undefined: completed), once it is final. */
function causeOf(job: Job): Promise<unknown> {
  return new Promise((resolve) => job.invokeOnCompletion(resolve));
}

Deno.test("createScope({ parent }): the parent waits for the scope until it completes, and lists it among its children", async () => {
  const gate = Promise.withResolvers<void>();
  let child: ReturnType<typeof createScope> | undefined;
  let settledBeforeChild = false;
  const outer = coroutineScope(counted((scope) => {
    child = createScope({ parent: scope.job });
    assert.deepEqual([...scope.job.children], [child]);
    child.launch(counted(() => gate.promise));
  }));
  outer.then(() => settledBeforeChild = child!.isCompleted === false);
  await until(() => live === 1, "the block to return, leaving the scope's task");
  gate.resolve();
  await until(() => child!.children.length === 0, "the task to end");
  // Its task is done, but the scope is open (no `join()`): the parent still waits for it.
  assert.equal(await settled(outer), false);
  await child!.join();
  await outer;
  assert.equal(settledBeforeChild, false);
  assert.equal(child!.state, "completed");
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): a scope disposed, cancelled or joined before its parent leaves the parent's children, and the parent completes", async () => {
  // A cancellation of the scope is no failure: the parent is not cancelled, and keeps nothing of
  // the scope once it is final (a parent that made many such scopes holds none).
  const parent = createScope();
  const disposed = createScope({ parent });
  disposed.launch(counted((t) => untilAborted(t.signal)));
  await disposed[Symbol.asyncDispose]();
  assert.equal(disposed.state, "cancelled");
  const cancelled = createScope({ parent });
  const gate = Promise.withResolvers<void>();
  cancelled.launch(counted(() => gate.promise)); // ignores the cancel: keeps it cancelling
  cancelled.cancel();
  assert.deepEqual(parent.children, [cancelled]); // waited for until its task ends
  gate.resolve();
  await cancelled.join();
  for (let i = 0; i < 100; i++) {
    const joined = createScope({ parent });
    joined.launch(counted(() => {}));
    await joined.join();
  }
  assert.deepEqual(parent.children, []);
  assert.equal(parent.isActive, true);
  await parent.join();
  assert.equal(parent.state, "completed");
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): the parent's cancel cancels the scope and its tasks", async () => {
  const outer = createScope();
  const child = createScope({ parent: outer });
  const task = child.launch(counted((t) => untilAborted(t.signal)));
  outer.cancel(new CancellationError("outer went"));
  await task.join();
  assert.equal(task.state, "cancelled");
  assert.equal(child.state, "cancelled");
  assert.equal(outer.state, "cancelled");
  assert.equal(((await causeOf(child)) as Error).message, "outer went");
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): a failed launch fails a coroutineScope parent, which rethrows it, reported nowhere", async () => {
  const boom = new Error("in the child scope");
  const { context, reported } = collecting();
  let sibling: Job | undefined;
  await assert.rejects(
    coroutineScope(
      counted(async (scope) => {
        sibling = scope.launch(counted((t) => untilAborted(t.signal)));
        const child = createScope({ parent: scope.job });
        child.launch(counted(() => Promise.reject(boom)));
        await untilAborted(scope.signal);
      }),
      { context },
    ),
    (e) => e === boom,
  );
  assert.equal(sibling!.state, "cancelled"); // the failure cancelled the parent's other child
  assert.deepEqual(reported, []); // rethrown by the parent: not reported too (Kotlin's handled)
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): under a supervisor the scope's failure stays with it, reported once", async () => {
  const boom = new Error("isolated");
  const { context, reported } = collecting();
  const result = await supervisorScope(
    counted(async (scope) => {
      const sibling = scope.async(counted(() => "sibling"));
      const child = createScope({ parent: scope.job });
      child.launch(counted(() => Promise.reject(boom)));
      await until(() => child.isCompleted, "the child scope to end");
      assert.equal(child.state, "cancelled");
      assert.equal(scope.isActive, true); // the supervisor was not cancelled
      return await sibling.await();
    }),
    { context },
  );
  assert.equal(result, "sibling");
  assertSameItems(reported, [boom]);
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): a failure through a parent that reports nothing itself is reported once, by the launch; a CompletableDeferred parent takes it", async () => {
  // A parent that takes no child's failure as its own (createScope's without a parent): the
  // launch reports it. A CompletableDeferred takes it (its await rejects with it), as Kotlin's
  // does: the launch reports nothing more.
  const boom = new Error("reported by the launch");
  const { context, reported } = collecting();
  const root = createScope({ context });
  const child = createScope({ parent: root });
  child.launch(counted(() => Promise.reject(boom)));
  await root.join();
  assert.equal(root.state, "cancelled");
  assert.equal(child.state, "cancelled");
  const deferred = new CompletableDeferred<void>({ context });
  const other = createScope({ parent: deferred });
  other.launch(counted(() => Promise.reject(boom)));
  await assert.rejects(deferred.await(), (e) => e === boom);
  assertSameItems(reported, [boom]);
  // A launched task's parent takes it: the task fails with it and, under a plain createScope,
  // reports it, once.
  const { context: c2, reported: r2 } = collecting();
  const top = createScope({ context: c2 });
  const task = top.launch(counted(async (t) => {
    const inner = createScope({ parent: t.job });
    inner.launch(counted(() => Promise.reject(boom)));
    await untilAborted(t.signal);
  }));
  await task.join();
  assert.equal(task.state, "cancelled");
  assertSameItems(r2, [boom]);
  await top.join();
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }) of a CompletableDeferred whose own parent takes failures: a failed launch is seen once, where that parent sees it", async () => {
  // The deferred takes the scope's failure and, failing, passes it on to its parent (a task, a
  // coroutineScope), which reports or rethrows it: the launch must not report it too. Before, a
  // deferred took no child's failure, so the launch reported it and the task reported it again,
  // or the coroutineScope rethrew what was also reported.
  const boom = new Error("through a deferred");
  const { context, reported } = collecting();
  const top = createScope({ context });
  let deferred: CompletableDeferred<void> | undefined;
  const task = top.launch(counted(async (t) => {
    deferred = new CompletableDeferred<void>({ parent: t.job });
    const inner = createScope({ parent: deferred });
    inner.launch(counted(() => Promise.reject(boom)));
    await untilAborted(t.signal);
  }));
  await task.join();
  assert.equal(task.state, "cancelled");
  await assert.rejects(deferred!.await(), (e) => e === boom);
  assertSameItems(reported, [boom]); // by the task, once
  await top.join();
  const { context: c2, reported: r2 } = collecting();
  await assert.rejects(
    coroutineScope(
      counted(async (scope) => {
        const d = new CompletableDeferred<void>({ parent: scope.job });
        createScope({ parent: d }).launch(counted(() => Promise.reject(boom)));
        await untilAborted(scope.signal);
      }),
      { context: c2 },
    ),
    (e) => e === boom,
  );
  assert.deepEqual(r2, []); // rethrown: not reported too
  // Under a supervisor the deferred's failure stops there: the deferred took it (its await
  // rejects with it), as Kotlin's CompletableDeferred does, so nothing reports it.
  const { context: c3, reported: r3 } = collecting();
  await supervisorScope(
    counted(async (scope) => {
      const d = new CompletableDeferred<void>({ parent: scope.job });
      createScope({ parent: d }).launch(counted(() => Promise.reject(boom)));
      await assert.rejects(d.await(), (e) => e === boom);
    }),
    { context: c3 },
  );
  assert.deepEqual(r3, []);
  assert.equal(live, 0);
});

Deno.test("a CompletableDeferred parent nobody awaits takes a child's failure and reports it nowhere, as Kotlin's: its other children are cancelled and it ends cancelled, with no report and no unhandled rejection", async () => {
  // Kotlin's CompletableDeferredImpl handles a child's exception (childCancelled answers true)
  // and reports none of its own (handleJobException is JobSupport's false): the failure is in
  // its await() alone. Before D's change the failing launch reported it (its parent took none).
  const boom = new Error("in the deferred alone");
  const { context, reported } = collecting();
  using unhandled = catchReported();
  const deferred = new CompletableDeferred<number>({ context });
  const sibling = new CompletableDeferred<number>({ parent: deferred });
  const scope = createScope({ parent: deferred });
  const waiting = scope.launch(counted((t) => untilAborted(t.signal)));
  scope.launch(counted(() => Promise.reject(boom)));
  await scope.join();
  assert.equal(waiting.state, "cancelled");
  assert.equal(sibling.state, "cancelled");
  assert.equal(deferred.state, "cancelled");
  assert.deepEqual(reported, []);
  assert.deepEqual(unhandled.errors, []);
  // The failure is there for whoever awaits it.
  await assert.rejects(deferred.await(), (e) => e === boom);
  assert.equal(live, 0);
});

Deno.test("createScope({ parent, supervisor: true }): a failed launch cancels neither the scope nor its parent", async () => {
  const boom = new Error("supervised");
  const { context, reported } = collecting();
  const value = await coroutineScope(
    counted(async (scope) => {
      const child = createScope({ parent: scope.job, supervisor: true });
      const bad = child.launch(counted(() => Promise.reject(boom)));
      await bad.join();
      assert.equal(child.isActive, true);
      assert.equal(scope.isActive, true);
      await child.join();
      return "done";
    }),
    { context },
  );
  assert.equal(value, "done");
  assertSameItems(reported, [boom]);
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): a parent completed or cancelling makes the scope start cancelled, running nothing", async () => {
  const done = createScope();
  await done.join();
  const late = createScope({ parent: done });
  assert.equal(late.state, "cancelled");
  assert.equal(
    ((await causeOf(late)) as Error).message,
    "Cancelled: the scope has already completed",
  );
  const cancelling = createScope();
  cancelling.launch(counted(async (t) => {
    try {
      await untilAborted(t.signal);
    } catch {
      await null; // keeps the parent cancelling a moment
    }
  }));
  cancelling.cancel(new CancellationError("going"));
  assert.equal(cancelling.state, "cancelling");
  const onCancelling = createScope({ parent: cancelling });
  assert.equal(onCancelling.isActive, false);
  let ran = false;
  const task = onCancelling.launch(() => {
    ran = true;
  });
  assert.equal(task.state, "cancelled");
  assert.equal(ran, false);
  assert.equal(((await causeOf(onCancelling)) as Error).message, "going");
  assert.equal(cancelling.children.includes(onCancelling), false); // never attached
  await cancelling.join();
  assert.equal(live, 0);
});

Deno.test("createScope({ parent }): a lazy parent is started, and waits for the scope", async () => {
  await coroutineScope(counted(async (scope) => {
    let ran = false;
    const lazy = scope.launch(() => {
      ran = true;
    }, { lazy: true });
    assert.equal(lazy.state, "new");
    const child = createScope({ parent: lazy });
    assert.equal(ran, true);
    assert.equal(lazy.state, "completing"); // its block is done; it waits for the scope
    await child.join();
    assert.equal(lazy.state, "completed");
  }));
});

Deno.test("createScope({ parent }): the scope's context is the parent's with its own added; a signal cancels it too", async () => {
  const a = createContextKey<string>("a"), b = createContextKey<string>("b");
  const parent = createScope({ context: Context.empty.with(a, "parent").with(b, "parent") });
  const child = createScope({ parent, context: Context.empty.with(b, "own") });
  assert.equal(child.context.get(a), "parent");
  assert.equal(child.context.get(b), "own");
  const plain = createScope({ parent });
  assert.equal(plain.context, parent.context);
  const controller = new AbortController();
  const followed = createScope({ parent, signal: controller.signal });
  controller.abort();
  assert.equal(followed.state, "cancelled");
  assert.equal(parent.isActive, true); // a cancellation, not a failure
  assert.equal(createScope({ parent, signal: AbortSignal.abort() }).state, "cancelled");
  await child.join();
  const joined = parent.join();
  assert.equal(await settled(joined), false); // `plain` is still open: the parent waits for it
  await plain.join();
  await joined;
  assert.equal(parent.state, "completed");
});

Deno.test("createScope({ parent }): a parent that is no Job is a named TypeError, leaving no scope", () => {
  const job = createScope();
  const fakes: [unknown, string][] = [
    [{}, "[object Object]"],
    [null, "null"],
    [42, "42"],
    [new AbortController().signal, "[object AbortSignal]"],
    [new Proxy(job, {}), ""],
    [Object.create(job), ""],
  ];
  for (const [fake, said] of fakes) {
    assert.throws(
      () => createScope({ parent: fake as never }),
      (e) =>
        e instanceof TypeError &&
        e.message.startsWith("Cannot create scope: parent must be a Job, received ") &&
        e.message.endsWith(said),
      String(said),
    );
  }
  assert.deepEqual(job.children, []);
});

Deno.test("using a scope (sync) is refused as it is declared, by name, telling to use await using", async () => {
  const made = createScope();
  let ran = false;
  assert.throws(
    () => {
      // @ts-expect-error: a Scope is no Disposable (TypeScript refuses it too)
      using scope = made;
      ran = true;
      scope.launch(() => {});
    },
    {
      name: "TypeError",
      message: "Cannot dispose scope synchronously: disposing a scope waits for its tasks, so " +
        "declare it with `await using`, not `using`, received a CoroutineScope",
    },
  );
  assert.equal(ran, false); // refused before its block ran
  await made.join(); // the one the using refused: still usable
  // `await using` never reads it: disposal cancels and awaits as before.
  let cancelled = false;
  {
    await using scope = createScope();
    scope.launch(counted((t) => untilAborted(t.signal).catch(() => cancelled = true)));
  }
  assert.equal(cancelled, true);
  assert.equal(live, 0);
});

Deno.test("nonCancellable: cleanup after cancellation runs to its end, with a live signal", async () => {
  const log: string[] = [];
  await assert.rejects(
    coroutineScope(counted(async (scope) => {
      scope.launch(counted(async (task) => {
        try {
          await untilAborted(task.signal);
        } finally {
          assert.equal(task.signal.aborted, true);
          await nonCancellable(
            counted(async (cleanup) => {
              assert.equal(cleanup.signal.aborted, false);
              await delay(1, { signal: cleanup.signal });
              const flushed = cleanup.async(counted(() => "flushed"));
              log.push(await flushed.await());
            }),
            { context: task.context },
          );
        }
      }));
      await null;
      scope.cancel();
    })),
    CancellationError,
  );
  assert.deepEqual(log, ["flushed"]);
  assert.equal(live, 0);
});

Deno.test("a nested coroutineScope given the task's signal is cancelled with it", async () => {
  let innerCancelled = false;
  await coroutineScope(counted(async (scope) => {
    const job = scope.launch(counted((task) =>
      coroutineScope(
        counted(async (inner) => {
          await untilAborted(inner.signal).catch(() => {
            innerCancelled = true;
          });
        }),
        { signal: task.signal, context: task.context },
      )
    ));
    await null;
    job.cancel();
  }));
  assert.equal(innerCancelled, true);
  assert.equal(live, 0);
});

Deno.test("no task outlives its scope: random trees with failures and cancellations", async () => {
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const grow = (depth: number): Block<void> =>
    counted(async (scope: CoroutineScope) => {
      const n = depth > 0 ? Math.floor(random() * 4) : 0;
      for (let i = 0; i < n; i++) {
        const supervise = random() < 0.2;
        if (supervise) {
          scope.launch(counted((s) =>
            supervisorScope(grow(depth - 1), { signal: s.signal, context: s.context })
          ));
        } else scope.launch(grow(depth - 1));
      }
      const r = random();
      if (r < 0.1) {
        throw new Error(`failure at depth ${depth}`);
      }
      if (r < 0.2) {
        scope.cancel();
      }
      if (r < 0.5) {
        await delay(random() < 0.5 ? 0 : 1, { signal: scope.signal });
      }
    });
  const { context } = collecting();
  for (let round = 0; round < 50; round++) {
    await coroutineScope(grow(4), { context }).catch(() => {});
    assert.equal(live, 0, `round ${round}`);
  }
});

Deno.test("bad arguments to scope functions are TypeErrors naming what was received (rejected, never thrown)", async () => {
  // coroutineScope, supervisorScope and nonCancellable return a Promise: they reject.
  await assert.rejects(coroutineScope(42 as never), {
    name: "TypeError",
    message: "Cannot run coroutineScope: block must be a function, received 42",
  });
  await assert.rejects(
    supervisorScope(() => {}, "x" as never),
    /options must be an object, received "x"/,
  );
  await assert.rejects(
    coroutineScope(() => {}, { signal: {} as never }),
    /signal must be an AbortSignal, received \[object Object\]/,
  );
  // createScope returns a Scope, not a Promise: it throws.
  assert.throws(() => createScope({ supervisor: "yes" as never }), /supervisor must be a boolean/);
  await assert.rejects(nonCancellable(null as never), /block must be a function, received null/);
  await assert.rejects(
    nonCancellable(() => {}, { context: 1 as never }),
    /Cannot run nonCancellable: .*received 1/,
  );
});

Deno.test("AbortSignal.timeout's DOMException (named TimeoutError) is wrapped, not taken as one", async () => {
  const err = await coroutineScope((scope) => delay(60_000, { signal: scope.signal }), {
    signal: AbortSignal.timeout(1),
  }).catch((e) => e);
  assert.ok(err instanceof CancellationError);
  assert.ok(err.cause instanceof DOMException);
  assert.equal(err.cause.name, "TimeoutError");
});

Deno.test("createScope().join with bad options rejects with a TypeError and leaves the scope open", async () => {
  const scope = createScope();
  await assert.rejects(scope.join(5 as never), TypeError);
  // Before, the failed call had closed it to new work: this launch came back cancelled.
  const job = scope.launch(() => Promise.resolve());
  await job.join();
  assert.equal(job.state, "completed");
  await scope.join();
});

Deno.test("createScope().join reads its options' signal once: a getter answering a bad one the second time cannot close the scope and then reject", async () => {
  const scope = createScope();
  let reads = 0;
  const options = {
    get signal() {
      reads++;
      return reads === 1 ? undefined : 5;
    },
  };
  // Before, the check read `undefined`, the scope closed, and the join's own read of 5 rejected
  // it with a TypeError: the call failed, yet the scope was closed to new work.
  await scope.join(options as never);
  assert.equal(reads, 1);
  assert.equal(scope.state, "completed");
});

Deno.test("10,000 nested tasks complete, fail and cancel without overflowing the stack", async () => {
  const depth = 10_000;
  // Each level launches the next after a tick (no recursion while building), so the chain
  // finishes, fails or is cancelled all at once: the state machine must not recurse per level.
  async function chain(outcome: "complete" | "fail" | "cancel"): Promise<unknown> {
    let leafDone!: () => void;
    const leafStarted = new Promise<void>((resolve) => leafDone = resolve);
    const run = coroutineScope(async (scope) => {
      const nest = async (s: CoroutineScope, n: number): Promise<void> => {
        await null;
        if (n > 0) {
          s.launch((c) => nest(c, n - 1));
          return;
        }
        leafDone();
        if (outcome === "fail") throw new Error("deep");
        if (outcome === "cancel") await untilAborted(s.signal);
      };
      scope.launch((c) => nest(c, depth));
      await leafStarted;
      if (outcome === "cancel") scope.cancel();
      return "done";
    });
    return await run.catch((e: Error) => `${e.name}: ${e.message}`);
  }
  assert.equal(await chain("complete"), "done");
  assert.equal(await chain("fail"), "Error: deep");
  assert.equal(await chain("cancel"), "CancellationError: Cancelled");
});

Deno.test("10,000 blocks launched from blocks synchronously do not overflow or hang", async () => {
  // Each block launches the next before any await: started at once, every level ran on the
  // stack of the one above, overflowed near 2,000 levels between a job's start and its body,
  // and the scope never finished.
  let ran = 0;
  const nest = (s: CoroutineScope, n: number): void => {
    ran++;
    if (n > 0) s.launch((c) => nest(c, n - 1));
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the scope hung")), 10_000);
  });
  try {
    await Promise.race([coroutineScope((s) => nest(s, 10_000)), hung]);
  } finally {
    clearTimeout(timer);
  }
  assert.equal(ran, 10_001);
  // A level that starts later and is cancelled before then never runs its block.
  const jobs: ReturnType<CoroutineScope["launch"]>[] = [];
  let deepestRan = false;
  await coroutineScope((s) => {
    const down = (c: CoroutineScope, n: number): void => {
      if (n === 0) {
        deepestRan = true;
        return;
      }
      jobs.push(c.launch((d) => down(d, n - 1)));
    };
    down(s, 1_000);
    assert.ok(jobs.length < 1_000, "the deeper levels start later");
    jobs.at(-1)!.cancel();
  });
  assert.equal(deepestRan, false);
  assert.equal(jobs.at(-1)!.state, "cancelled");
});

Deno.test("10,000 scopes nested through their task's signal are cancelled from the root without overflowing the stack", async () => {
  // Nested as README says to nest a scope in a task (its `signal` and `context`), alternately a
  // coroutineScope and a supervisorScope. Each level's cancel came from the abort of the signal
  // of the level above, inside that one's cancel: ~500 levels overflowed the stack, the
  // RangeError escaped from an abort listener (reported, uncaught: the process ended) and the
  // levels below were never cancelled, so the root never settled.
  using reported = catchReported();
  const depth = 10_000;
  const aborted: number[] = [];
  let reached = 0;
  let leafEnded = false;
  const nest = (task: CoroutineScope, n: number): Promise<void> => {
    reached++;
    task.signal.addEventListener("abort", () => aborted.push(n));
    if (n === 0) return untilAborted(task.signal).finally(() => leafEnded = true);
    const options = { signal: task.signal, context: task.context };
    const inner = (s: CoroutineScope) => nest(s, n - 1);
    return n % 2 === 0 ? coroutineScope(inner, options) : supervisorScope(inner, options);
  };
  let root!: CoroutineScope;
  let outcome = "pending";
  coroutineScope((s) => {
    root = s;
    return nest(s, depth);
  }).then(() => outcome = "completed", (e: Error) => outcome = e.name);
  await until(() => reached === depth + 1, "every level to start");
  root.cancel();
  // Every level is cancelled before the root's cancel returns, outermost first, as below the
  // depth where the stack ran out.
  assert.equal(aborted.length, depth + 1);
  assert.ok(aborted.every((n, i) => n === depth - i), "outermost first");
  await until(() => outcome !== "pending", "the root to settle");
  assert.equal(outcome, "CancellationError");
  assert.equal(leafEnded, true);
  assert.deepEqual(reported.errors, []);
});

Deno.test("a tree of scopes nested through their tasks' signals, deeper than 32 levels, is cancelled depth first, in the order a shallow tree's scopes are", async () => {
  // Past 32 nested follow cancels the next ones wait in a queue until the first level returns.
  // Before, the queue ran first come first served: at the depth limit, the sibling scopes waiting
  // in it were cancelled before each other's deeper scopes (breadth first), and a scope reached
  // after one had queued (a sibling at the limit, or higher up) was cancelled at once, ahead of
  // the nests queued before it; the order a shallow tree gives is depth first, outermost first
  // along each path, each scope's whole nest before its next sibling's.
  using reported = catchReported();
  /**
   * A tree `depth` levels deep of scopes nested as README says (the task's `signal` and
   * `context`), alternately coroutineScopes and supervisorScopes: two in each scope of a level in
   * `forks` (the first nested in the scope's own block, the second in a task it launches), one
   * elsewhere. Cancels its root; answers the order the scopes' signals aborted in, and the
   * tree's scopes depth first.
   */
  const cancelTree = async (depth: number, forks: number[]) => {
    const aborted: string[] = [];
    let started = 0, ended = 0;
    const nested = (signal: AbortSignal, context: Context, path: string, n: number) => {
      const inner = (s: CoroutineScope) => level(s, path, n);
      return (n % 2 === 0 ? coroutineScope : supervisorScope)(inner, { signal, context })
        .finally(() => ended++);
    };
    const level = (scope: CoroutineScope, path: string, n: number): Promise<unknown> => {
      started++;
      scope.signal.addEventListener("abort", () => aborted.push(path));
      if (n === depth) return untilAborted(scope.signal);
      const inners = [nested(scope.signal, scope.context, `${path}.0`, n + 1)];
      if (forks.includes(n)) {
        scope.launch((task) => nested(task.signal, task.context, `${path}.1`, n + 1));
      }
      return Promise.allSettled(inners);
    };
    const depthFirst: string[] = [];
    const walk = (path: string, n: number) => {
      depthFirst.push(path);
      if (n === depth) return;
      walk(`${path}.0`, n + 1);
      if (forks.includes(n)) walk(`${path}.1`, n + 1);
    };
    walk("r", 0);
    let root!: CoroutineScope;
    const outcome = coroutineScope((s) => {
      root = s;
      return level(s, "r", 0);
    }).then(() => "completed", (e: Error) => e.name);
    await until(() => started === depthFirst.length, "every scope to start");
    root.cancel();
    const order = [...aborted]; // as the root's cancel returns: every scope is cancelled
    await until(() => ended === depthFirst.length - 1, "every nested scope to end");
    assert.equal(await outcome, "CancellationError");
    return { order, depthFirst };
  };
  // Shallow (under 32 nested follow cancels): the order with no queue.
  const shallow = await cancelTree(8, [0, 3, 4]);
  assert.deepEqual(shallow.order, shallow.depthFirst, "a shallow tree: depth first");
  // Forks at the top, about the first limit (the scopes at levels 32 and 33 are reached by the
  // 32nd and 33rd nested cancels) and the next (a queued scope starts a fresh 32 levels).
  const deep = await cancelTree(70, [0, 31, 32, 33, 63, 64, 65]);
  assert.equal(deep.order.length, deep.depthFirst.length, "every scope is cancelled");
  assert.deepEqual(deep.order, deep.depthFirst, "a deep tree: depth first, as a shallow one");
  assert.deepEqual(reported.errors, []);
});

Deno.test("a scope nested through its task's signal deeper than 32 levels, whose cancel waits in the queue, reads inactive and cancels a task launched on it, as a shallow one does", async () => {
  // Past 32 nested follow cancels a scope's cancel waits until the first level returns. Code
  // run by the abort of the signal it follows, after its follow listener, read it active and a
  // launch on it ran the task's block; a shallow scope is cancelling there, so the task is
  // cancelled at once. Each level's listener checks both, at every depth.
  using reported = catchReported();
  const depth = 40;
  const seen: { n: number; active: boolean; job: Job; lazy: Job }[] = [];
  const ran: number[] = [];
  const { root, outcome } = await nestThroughSignals(depth, (s, n) => {
    const active = s.isActive;
    const job = s.launch(() => void ran.push(n));
    const lazy = s.async(() => ran.push(-n), { lazy: true });
    seen.push({ n, active, job, lazy });
  });
  root.cancel();
  assert.equal(seen.length, depth, "every level's listener ran");
  assert.deepEqual(seen.filter((x) => x.active).map((x) => x.n), [], "read active");
  assert.deepEqual(ran, [], "a task launched in the listener ran");
  for (const { n, job, lazy } of seen) {
    assert.equal(job.state, "cancelled", `level ${n}'s launch`);
    assert.equal(lazy.state, "cancelled", `level ${n}'s lazy async`);
  }
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(ran, []);
  assert.deepEqual(reported.errors, []);
});

Deno.test("a CompletableDeferred made with a scope whose follow cancel waits in the queue as its parent is cancelled at once, as a task launched on it is and as under a shallow tree's cancelling scope", async () => {
  // The scope reads cancelling in that gap; a deferred attached to it read active (and was
  // among its children) until the queued cancel ran. Each level's listener checks, at every
  // depth: the levels past 32 are the ones whose cancel waited.
  using reported = catchReported();
  const depth = 40;
  const seen: { n: number; parent: string; state: string; listed: boolean }[] = [];
  const deferreds: CompletableDeferred<void>[] = [];
  const { root, outcome } = await nestThroughSignals(depth, (s, n) => {
    const d = new CompletableDeferred<void>({ parent: s.job });
    deferreds.push(d);
    seen.push({ n, parent: s.job.state, state: d.state, listed: s.job.children.includes(d) });
  });
  root.cancel();
  assert.equal(seen.length, depth, "every level's listener ran");
  for (const x of seen) {
    assert.equal(x.parent, "cancelling", `level ${x.n}: its scope`);
    assert.equal(x.state, "cancelled", `level ${x.n}: the deferred`);
    assert.equal(x.listed, false, `level ${x.n}: the deferred among its children`);
  }
  for (const d of deferreds) await assert.rejects(d.await(), CancellationError);
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

Deno.test("createScope({ parent }) with a scope whose follow cancel waits in the queue starts cancelled, unattached, as a CompletableDeferred made with it does", async () => {
  // Past 32 levels the parent reads cancelling while its cancel waits: a scope attached to it
  // then read active, among its children, until the queued cancel ran.
  using reported = catchReported();
  const depth = 40;
  const seen: { n: number; parent: string; state: string; listed: boolean }[] = [];
  const { root, outcome } = await nestThroughSignals(depth, (s, n) => {
    const child = createScope({ parent: s.job });
    seen.push({
      n,
      parent: s.job.state,
      state: child.state,
      listed: s.job.children.includes(child),
    });
  });
  root.cancel();
  assert.equal(seen.length, depth, "every level's listener ran");
  for (const x of seen) {
    assert.equal(x.parent, "cancelling", `level ${x.n}: its scope`);
    assert.equal(x.state, "cancelled", `level ${x.n}: the scope made on it`);
    assert.equal(x.listed, false, `level ${x.n}: the scope among its children`);
  }
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

Deno.test("a scope nested through its task's signal deeper than 32 levels, whose cancel waits in the queue, reads cancelling (isCancelled, state) as it reads inactive; its signal aborts when its cancel runs", async () => {
  // In the gap between its cancel being queued and run, the scope read isActive false but
  // isCancelled false and state "active": no state of the table has that. It reads as a shallow
  // tree's scope does there, cancelling, except for its signal, which aborts only when its
  // cancel runs (an abort as it is queued would run the nested scopes' follow listeners, one
  // inside another: the recursion the queue avoids).
  using reported = catchReported();
  const depth = 40;
  type Seen = {
    n: number;
    active: boolean;
    cancelled: boolean;
    state: string;
    printed: string;
    aborted: boolean;
  };
  const seen: Seen[] = [];
  const signals: AbortSignal[] = [];
  const { root, outcome } = await nestThroughSignals(depth, (s, n) => {
    const job = s.job;
    seen.push({
      n,
      active: s.isActive,
      cancelled: job.isCancelled,
      state: job.state,
      printed: Deno.inspect(job), // prints the state its getter reads (`jobStateOf`)
      aborted: s.signal.aborted,
    });
    signals.push(s.signal);
  });
  root.cancel();
  assert.equal(seen.length, depth, "every level's listener ran");
  for (const x of seen) {
    const at = `level ${x.n}`;
    assert.equal(x.active, false, `${at}: isActive`);
    assert.equal(x.cancelled, true, `${at}: isCancelled`);
    assert.equal(x.state, "cancelling", `${at}: state`);
    assert.match(x.printed, /^CoroutineScope \{ state: "cancelling", /, `${at}: printed`);
  }
  // The levels whose cancel waited: their signal had not aborted yet (the test reaches the gap).
  const waited = seen.filter((x) => !x.aborted).map((x) => x.n);
  assert.ok(waited.length > 0, "some level's cancel waited in the queue");
  assert.ok(waited.every((n) => n <= depth - 32), `only past 32 levels: ${waited}`);
  // Every one has aborted by the time the outermost cancel returned.
  assert.deepEqual(signals.filter((x) => !x.aborted), [], "a signal left unaborted");
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

Deno.test("a scope whose follow cancel waits in the queue does not complete there: its last child ending then leaves it cancelling, and it ends cancelled, as a shallow tree's", async () => {
  // The innermost of `depth` scopes nested through their task's signal has returned from its
  // block and waits only for a lazy child; an abort listener on the signal it follows, run
  // while its cancel waits in the queue, cancels that child, its last. In a shallow tree the
  // scope is cancelling by then and ends cancelled. Before, it completed there, resolving with
  // its block's value, while it read cancelling (isCancelled true, state cancelling) until
  // then. Depths around the queue's bound, so that the innermost one's cancel waits in some.
  using reported = catchReported();
  let gaps = 0;
  for (let depth = 28; depth <= 40; depth++) {
    let reached = 0;
    let innermost: Promise<string> | null = null;
    const states: string[] = [];
    const nest = (task: CoroutineScope, n: number): Promise<unknown> => {
      reached++;
      const signal = task.signal;
      if (n > 1) return coroutineScope((s) => nest(s, n - 1), { signal, context: task.context });
      innermost = coroutineScope((s) => {
        const lazy = s.launch(counted(async () => {}), { lazy: true });
        signal.addEventListener("abort", () => {
          if (s.signal.aborted) return; // cancelled at once: no gap
          gaps++;
          lazy.cancel(); // its last child: done
          states.push(s.job.state);
        });
        return "value";
      }, { signal, context: task.context }).then((v) => v, (e: Error) => e.name);
      return untilAborted(signal);
    };
    let root!: CoroutineScope;
    const outcome = coroutineScope((s) => {
      root = s;
      return nest(s, depth);
    }).then(() => "completed", (e: Error) => e.name);
    await until(() => reached === depth && innermost !== null, "every level to start");
    root.cancel();
    assert.deepEqual(states, states.length === 0 ? [] : ["cancelling"], `depth ${depth}`);
    assert.equal(await innermost, "CancellationError", `depth ${depth}: the innermost scope`);
    assert.equal(await outcome, "CancellationError", `depth ${depth}`);
  }
  assert.ok(gaps > 0, "some innermost scope's cancel waited in the queue");
  assert.deepEqual(reported.errors, []);
  assert.equal(live, 0);
});

Deno.test("an engine error that leaves the run of the queued follow cancels loses none of them: each scope still ends cancelled, and the error is reported as it is", async () => {
  // An engine error (a stack overflow) can come anywhere, the run's own steps included, where
  // nothing catches it: simulated by the run's first take of a queued cancel off its stack
  // (Array.prototype.pop, once) throwing. It leaves the run and the first level's cancel, to
  // the abort's dispatch, which reports it. Before, the queued cancels were dropped with it:
  // the scopes past 32 levels read cancelling for good and never completed, nor did the root.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const depth = 40;
  const { root, outcome } = await nestThroughSignals(depth, () => {});
  let ended: string | undefined;
  void outcome.then((e) => ended = e);
  const pop = Array.prototype.pop;
  let fired = 0;
  try {
    Array.prototype.pop = function <T>(this: T[]): T | undefined {
      const n = this.length, top = this[n - 1], below = this[n - 2];
      if (
        fired === 0 && n >= 2 && top instanceof AbortSignal &&
        typeof below === "object" && below !== null && isScopeLike(below)
      ) {
        fired++;
        throw engine;
      }
      return pop.call(this) as T | undefined;
    };
    root.cancel();
  } finally {
    Array.prototype.pop = pop;
  }
  assert.equal(fired, 1, "the queued cancels' run took one off its stack (the stub fired)");
  assertSameItems(reported.errors, [engine], "the engine error is reported, as it is");
  await until(() => ended !== undefined, "the root to end (every level ended)");
  assert.equal(ended, "CancellationError");
  assertSameItems(reported.errors, [engine]);
});

Deno.test("an engine error between the takes of a queued follow cancel's scope and signal loses neither: the scope still ends cancelled, and nothing else is reported", async () => {
  // The run takes each queued cancel's pair (a scope, its signal) off its stack. An engine
  // error after the signal was taken and before the scope was (simulated: the take of the
  // scope, Array.prototype.pop on the same stack right after it gave the signal, once) left
  // the scope on top without its signal: the run on a fresh stack paired it with the entry
  // below, reporting a TypeError for each misread pair, and never cancelled it, so it read
  // cancelling for good and never completed, nor did the root.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const { root, outcome } = await nestThroughSignals(40, () => {});
  let ended: string | undefined;
  void outcome.then((e) => ended = e);
  const pop = Array.prototype.pop;
  let fired = 0, pairTakes = 0, last: { from: unknown[]; took: unknown } | null = null;
  try {
    Array.prototype.pop = function <T>(this: T[]): T | undefined {
      const top = this[this.length - 1];
      if (
        fired === 0 && last !== null && last.from === this && last.took instanceof AbortSignal &&
        typeof top === "object" && top !== null && isScopeLike(top)
      ) {
        fired++;
        throw engine;
      }
      const took = pop.call(this) as T | undefined;
      const under = this[this.length - 1];
      // A pair's signal taken, its scope below it: the take the run makes of each queued cancel.
      if (
        took instanceof AbortSignal && typeof under === "object" && under !== null &&
        isScopeLike(under)
      ) pairTakes++;
      last = { from: this, took };
      return took;
    };
    root.cancel();
  } finally {
    Array.prototype.pop = pop;
  }
  // Exact: the run took its queued pairs through pop (the stub saw them: it is not left checking
  // nothing), and never took a scope by a second pop after its signal, the call where the error
  // came. Before, `fired <= 1` passed as well had the stub never seen the run at all.
  assert.ok(pairTakes > 0, "the run took its queued cancels' signals through pop");
  assert.equal(fired, 0, "a second pop took the scope after its signal");
  assert.deepEqual(reported.errors, [], "nothing reported");
  await until(() => ended !== undefined, "the root to end (every level ended)");
  assert.equal(ended, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

Deno.test("an engine error in the later run of left follow cancels, once it has run one, loses none of what is left", async () => {
  // 80 levels: the first level's run of the queued cancels runs level 33's, which queues
  // level 65's. The run's take of a queued cancel off its stack (Array.prototype.pop) throws
  // on the first take (in the first level's run, leaving level 33's for a microtask) and on
  // the third (in that microtask's run, once it has run level 33's, leaving level 65's): what
  // the microtask's error left, after it ran one, is run again, not dropped nor left waiting.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const { root, outcome } = await nestThroughSignals(80, () => {});
  let ended: string | undefined;
  void outcome.then((e) => ended = e);
  const pop = Array.prototype.pop;
  let takes = 0;
  try {
    Array.prototype.pop = function <T>(this: T[]): T | undefined {
      const n = this.length, top = this[n - 1], below = this[n - 2];
      if (
        n >= 2 && top instanceof AbortSignal &&
        typeof below === "object" && below !== null && isScopeLike(below)
      ) {
        takes++;
        if (takes === 1 || takes === 3) throw engine;
      }
      return pop.call(this) as T | undefined;
    };
    root.cancel();
    await until(() => takes >= 3, "the microtask's run to throw");
  } finally {
    Array.prototype.pop = pop;
  }
  await until(() => ended !== undefined, "the root to end (every level ended)");
  assert.equal(ended, "CancellationError");
  assertSameItems(reported.errors, [engine, engine]);
});

Deno.test("queued follow cancels that an engine error left twice, the second time before any ran, run at the next follow cancel", async () => {
  // The run a microtask later (of what an engine error left) is not queued again when its own
  // error came before it ran any cancel: what is left runs at the next follow cancel, a first
  // level at depth 0, which runs at once and runs them too. Simulated by the run's move of a
  // queued cancel from the queue onto its stack (Array.prototype.push of a scope and its
  // signal onto another array than the queuing's) throwing twice: in the first level's run,
  // then in the microtask's, leaving it in the queue. Were the next cancel queued behind it
  // (the queue not empty), nothing would run either: both scopes would read cancelling for good.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const { root, outcome } = await nestThroughSignals(40, () => {});
  let ended: string | undefined;
  void outcome.then((e) => ended = e);
  const push = Array.prototype.push;
  let fired = 0, queue: unknown[] | null = null;
  try {
    Array.prototype.push = function (this: unknown[], ...items: unknown[]): number {
      const [scope, by] = items;
      if (
        items.length === 2 && by instanceof AbortSignal &&
        typeof scope === "object" && scope !== null && isScopeLike(scope)
      ) {
        queue ??= this;
        if (this !== queue && fired < 2) {
          fired++;
          throw engine;
        }
      }
      return push.apply(this, items);
    };
    root.cancel();
    await until(() => fired === 2, "the microtask's run to throw too");
  } finally {
    Array.prototype.push = push;
  }
  await until(() => reported.errors.length === 2, "both errors to be reported");
  assertSameItems(reported.errors, [engine, engine]);
  assert.equal(ended, undefined, "a level's cancel waits still");
  const ac = new AbortController();
  const other = createScope({ signal: ac.signal });
  ac.abort(new Error("the next follow cancel"));
  assert.equal(other.isCancelled, true, "the next follow cancel ran at once");
  await until(() => ended !== undefined, "the root to end (every level ended)");
  assert.equal(ended, "CancellationError");
  await other.join();
  assertSameItems(reported.errors, [engine, engine]);
});

Deno.test("an engine error that stops the queuing of the later run of left follow cancels too is not what is reported, and a later error's leftovers still get their run", async () => {
  // The first level, where an engine error (a stack overflow) stopped the run of the queued
  // cancels, is where the stack ran out: the queuing of the later run (queueMicrotask) can
  // throw there too (simulated, once, with the first take of a queued cancel off the run's
  // stack, Array.prototype.pop). The first error is the one reported, and what is left runs at
  // the next follow cancel. Before, the queuing's error left the first level in its place,
  // and the run was marked queued before the call: no later error's leftovers were ever
  // queued again, and those scopes read cancelling until some follow cancel came.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const queuing = new RangeError("simulated: Maximum call stack size exceeded (queuing)");
  const stubTake = (): () => void => {
    const pop = Array.prototype.pop;
    let fired = false;
    Array.prototype.pop = function <T>(this: T[]): T | undefined {
      const n = this.length, top = this[n - 1], below = this[n - 2];
      if (
        !fired && n >= 2 && top instanceof AbortSignal &&
        typeof below === "object" && below !== null && isScopeLike(below)
      ) {
        fired = true;
        throw engine;
      }
      return pop.call(this) as T | undefined;
    };
    return () => Array.prototype.pop = pop;
  };
  const first = await nestThroughSignals(40, () => {});
  let firstEnded: string | undefined;
  void first.outcome.then((e) => firstEnded = e);
  const queue = globalThis.queueMicrotask;
  let restoreTake = stubTake();
  try {
    globalThis.queueMicrotask = (callback: VoidFunction) => {
      if (callback.name === "runLeftFollows") {
        globalThis.queueMicrotask = queue;
        throw queuing;
      }
      queue(callback);
    };
    first.root.cancel();
  } finally {
    restoreTake();
    globalThis.queueMicrotask = queue;
  }
  assertSameItems(reported.errors, [engine], "the first error, as it is");
  const ac = new AbortController();
  const other = createScope({ signal: ac.signal });
  ac.abort(new Error("the next follow cancel"));
  await until(() => firstEnded !== undefined, "the first root to end (every level ended)");
  assert.equal(firstEnded, "CancellationError");
  await other.join();
  // A later error's leftovers are queued to run a microtask later, as the first's would be.
  const second = await nestThroughSignals(40, () => {});
  let secondEnded: string | undefined;
  void second.outcome.then((e) => secondEnded = e);
  restoreTake = stubTake();
  try {
    second.root.cancel();
  } finally {
    restoreTake();
  }
  await until(() => secondEnded !== undefined, "the second root to end (every level ended)");
  assert.equal(secondEnded, "CancellationError");
  assertSameItems(reported.errors, [engine, engine]);
});

Deno.test("an engine error as a follow cancel is queued leaves that scope unmarked, not cancelling for good: its work done, it ends", async () => {
  // The queuing of the first cancel past 32 levels throws (simulated: its push onto the queue,
  // once), out of that scope's follow listener, to the abort's dispatch, which reports it. The
  // cancel is lost with it, so nothing below is cancelled, as for any listener an engine error
  // stops; but the scope must not read cancelling with no cancel to come. Before, it was
  // marked first: once its block and children were done it stayed completing for good
  // (`completionWaits`), and so did the root.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  const leaf = (task: CoroutineScope) => Promise.race([untilAborted(task.signal), released]);
  const scopes: CoroutineScope[] = [];
  const { root, outcome } = await nestThroughSignals(40, (s) => void scopes.push(s), { leaf });
  let ended: string | undefined;
  void outcome.then((e) => ended = e);
  const push = Array.prototype.push;
  let fired = 0;
  try {
    Array.prototype.push = function (this: unknown[], ...items: unknown[]): number {
      const [scope, by] = items;
      if (
        fired === 0 && items.length === 2 && by instanceof AbortSignal &&
        typeof scope === "object" && scope !== null && isScopeLike(scope)
      ) {
        fired++;
        throw engine;
      }
      return push.apply(this, items);
    };
    root.cancel();
  } finally {
    Array.prototype.push = push;
  }
  assert.equal(fired, 1, "a follow cancel was queued (the stub fired)");
  assertSameItems(reported.errors, [engine], "the engine error is reported, as it is");
  assert.ok(scopes.some((s) => !s.signal.aborted), "the lost cancel left scopes uncancelled");
  release(); // the innermost task returns: every uncancelled level's work is done
  await until(() => ended !== undefined, "the root to end (every level ended)");
  assert.equal(ended, "CancellationError");
  assertSameItems(reported.errors, [engine]);
});

Deno.test("a reportError that throws while the queued follow cancels run loses none of them, and its throw is reported", async () => {
  // root ... level 32 ─┬─ a (nested in its block; its signal's abort throws, an engine error)
  //                    └─ b (nested in a task it launches)
  // Both of level 33's cancels wait in the queue; a's cancel throws, and so does reportError
  // when given that. Before, the throw left the queue's run at once and b was never cancelled.
  using reported = catchReported();
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  const fromReport = new Error("reportError threw");
  const abort = AbortController.prototype.abort;
  const report = globalThis.reportError;
  let throwFor: AbortSignal | null = null;
  const ends: Record<string, string> = {};
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let reached = 0;
  const leaf = (name: string) => (s: CoroutineScope) => {
    reached++;
    if (name === "a") throwFor = s.signal;
    return Promise.race([untilAborted(s.signal), released]);
  };
  const nested = (task: CoroutineScope, name: string, block: Block<unknown>) =>
    coroutineScope(block, { signal: task.signal, context: task.context })
      .then(() => ends[name] = "completed", (e: Error) => ends[name] = e.name);
  const nest = (task: CoroutineScope, n: number): Promise<unknown> => {
    reached++;
    if (n < 32) return nested(task, `${n + 1}`, (s) => nest(s, n + 1));
    task.launch((t) => nested(t, "b", leaf("b")));
    return nested(task, "a", leaf("a"));
  };
  let root!: CoroutineScope;
  const outcome = coroutineScope((s) => {
    root = s;
    return nest(s, 0);
  }).then(() => "completed", (e: Error) => e.name);
  await until(() => reached === 33 + 2, "every scope to start");
  try {
    AbortController.prototype.abort = function (this: AbortController, reason?: unknown) {
      if (this.signal === throwFor) {
        throwFor = null;
        throw engine;
      }
      return abort.call(this, reason);
    };
    globalThis.reportError = () => {
      throw fromReport;
    };
    root.cancel();
  } finally {
    AbortController.prototype.abort = abort;
    globalThis.reportError = report;
  }
  await until(() => ends["b"] !== undefined, "b to end");
  assert.equal(ends["b"], "CancellationError", "b was cancelled");
  assertSameItems(reported.errors, [fromReport], "reportError's throw is reported");
  release();
  assert.equal(await outcome, "CancellationError");
  assert.equal(ends["a"], "CancellationError");
});

Deno.test("a revoked Proxy thrown while the queued follow cancels run is reported in kcoro's form (a TypeError carrying it), the rest still cancelled: the raw reportError threw on it, and left every later report of the process fatal", async () => {
  // As the test above, in a child process (the raw report broke Deno's for good): a's cancel
  // throws a revoked Proxy where an engine error would come, past 32 nested levels.
  const res = await evalScript(`
    import { coroutineScope } from "./mod.ts";
    const reported = [];
    addEventListener("error", (e) => { reported.push(e.error); e.preventDefault(); });
    const r = Proxy.revocable({}, {}); r.revoke(); const revoked = r.proxy;
    const abort = AbortController.prototype.abort;
    let throwFor = null, reached = 0, release;
    const released = new Promise((resolve) => release = resolve);
    const ends = {};
    const until = (signal) => new Promise((_, reject) =>
      signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
    const leaf = (name) => (s) => {
      reached++;
      if (name === "a") throwFor = s.signal;
      return Promise.race([until(s.signal), released]);
    };
    const nested = (task, name, block) =>
      coroutineScope(block, { signal: task.signal, context: task.context })
        .then(() => ends[name] = "completed", (e) => ends[name] = e.name);
    const nest = (task, n) => {
      reached++;
      if (n < 32) return nested(task, String(n + 1), (s) => nest(s, n + 1));
      task.launch((t) => nested(t, "b", leaf("b")));
      return nested(task, "a", leaf("a"));
    };
    let root;
    const outcome = coroutineScope((s) => { root = s; return nest(s, 0); })
      .then(() => "completed", (e) => e.name);
    while (reached !== 35) await new Promise((r) => setTimeout(r, 0));
    AbortController.prototype.abort = function (reason) {
      if (this.signal === throwFor) { throwFor = null; throw revoked; }
      return abort.call(this, reason);
    };
    try { root.cancel(); } finally { AbortController.prototype.abort = abort; }
    for (let i = 0; i < 1000 && ends.b === undefined; i++) await new Promise((r) => setTimeout(r, 0));
    release();
    const out = await outcome;
    reportError(new Error("a later report"));
    console.log(JSON.stringify({
      b: ends.b, out,
      first: reported[0] instanceof TypeError && reported[0].cause === revoked,
      message: reported[0]?.message,
      last: reported.at(-1)?.message,
      count: reported.length,
    }));
  `);
  assert.equal(res.code, 0, res.stderr);
  const got = JSON.parse(res.stdout);
  assert.equal(got.b, "CancellationError", "b was cancelled");
  assert.equal(got.out, "CancellationError");
  assert.equal(got.first, true, got.message);
  assert.equal(
    got.message,
    "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy",
  );
  assert.equal(got.last, "a later report");
  assert.equal(got.count, 2);
});

Deno.test("a revoked Proxy thrown in the later run of left follow cancels (runLeftFollows, a microtask on) is reported in kcoro's form (a TypeError carrying it), and what is left still runs: the raw reportError threw on it", async () => {
  // As "an engine error in the later run of left follow cancels ..." above (80 levels; the run's
  // take of a queued cancel off its stack, Array.prototype.pop, throws on the first take, in the
  // first level's run, and on the third, in the microtask's), the third a revoked Proxy: the
  // microtask reports it once its leftovers ran. In a child process: the raw reportError threw
  // on it (its traps), out of the microtask, and left every later report of the process fatal.
  const res = await evalScript(`
    import { nestThroughSignals, until } from "./tests/support.ts";
    const reported = [];
    addEventListener("error", (e) => { reported.push(e.error); e.preventDefault(); });
    const r = Proxy.revocable({}, {}); r.revoke(); const revoked = r.proxy;
    const engine = new RangeError("simulated: Maximum call stack size exceeded");
    const { root, outcome } = await nestThroughSignals(80, () => {});
    let ended;
    void outcome.then((e) => ended = e);
    const isScopeLike = (x) => "launch" in x && "async" in x && "job" in x;
    const pop = Array.prototype.pop;
    let takes = 0;
    try {
      Array.prototype.pop = function () {
        const n = this.length, top = this[n - 1], below = this[n - 2];
        if (
          n >= 2 && top instanceof AbortSignal &&
          typeof below === "object" && below !== null && isScopeLike(below)
        ) {
          takes++;
          if (takes === 1) throw engine;
          if (takes === 3) throw revoked;
        }
        return pop.call(this);
      };
      root.cancel();
      await until(() => takes >= 3, "the microtask's run to throw");
    } finally {
      Array.prototype.pop = pop;
    }
    await until(() => ended !== undefined, "the root to end (every level ended)");
    reportError(new Error("a later report"));
    console.log(JSON.stringify({
      ended,
      first: reported[0] === engine,
      wrapped: reported[1] instanceof TypeError && reported[1].cause === revoked,
      message: reported[1]?.message,
      last: reported.at(-1)?.message,
      count: reported.length,
    }));
  `);
  assert.equal(res.code, 0, res.stderr);
  const got = JSON.parse(res.stdout);
  assert.equal(got.ended, "CancellationError", "every level ended");
  assert.equal(got.first, true, "the first level's engine error, as it is");
  assert.equal(got.wrapped, true, got.message);
  assert.equal(
    got.message,
    "Cannot report error as it is: reporting it would run a Proxy's traps, received a Proxy",
  );
  assert.equal(got.last, "a later report");
  assert.equal(got.count, 3);
});

Deno.test("an object made from Context.prototype is refused as a context: it passed instanceof, and its first read threw the engine's error inside the scope (a supervisorScope never settled)", async () => {
  const fake = Object.create(Context.prototype) as Context;
  const message = /^Cannot [\w ]+: context must be a Context, received a Context look-alike$/;
  const failing = (s: CoroutineScope) => {
    s.launch(() => {
      throw new Error("a child");
    });
  };
  for (
    const call of [
      () => createScope({ context: fake }),
      () => coroutineScope(() => 1, { context: fake }),
      () => supervisorScope(failing, { context: fake }),
      () => withTimeout(1_000, () => 1, { context: fake }),
      () => withTimeoutOrNull(1_000, () => 1, { context: fake }),
      () => nonCancellable(() => 1, { context: fake }),
      () => new CompletableDeferred({ context: fake }),
      () => coroutineScope((s) => s.launch(() => 1, { context: fake }).join()),
    ]
  ) {
    let result: unknown;
    try {
      result = call();
    } catch (e) {
      result = Promise.reject(e);
    }
    await assert.rejects(Promise.resolve(result), { name: "TypeError", message });
  }
});

Deno.test("scope options are read once: a getter that answered undefined to the check and {} after it left a failing supervisorScope unsettled, and threw the engine's errors elsewhere", async () => {
  /** Options whose `key` answers undefined the first time and `{}` after; counts its reads. */
  const toggling = (key: string) => {
    const o = { reads: 0, options: {} };
    Object.defineProperty(o.options, key, { get: () => o.reads++ === 0 ? undefined : {} });
    return o;
  };
  const failing = (s: CoroutineScope) => {
    s.launch(() => {
      throw new Error("a child");
    });
  };
  const reported = collecting();
  // The supervisorScope's failing child has no handler in its (empty) context: reportError.
  const uncaught: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    uncaught.push(e.error);
  };
  const cases: [string, (options: never) => unknown][] = [
    ["context", (o) => supervisorScope(failing, o)],
    ["signal", (o) => supervisorScope(() => 1, o)],
    ["context", (o) => coroutineScope(() => 1, o)],
    ["signal", (o) => coroutineScope(() => 1, o)],
    ["context", (o) => withTimeout(1_000, () => 1, o)],
    ["signal", (o) => withTimeoutOrNull(1_000, () => 1, o)],
    ["context", (o) => nonCancellable(() => 1, o)],
    ["context", (o) => createScope(o).join()],
    ["signal", (o) => createScope(o).join()],
    ["supervisor", (o) => createScope(o).join()],
    ["parent", (o) => createScope(o).join()],
    ["context", (o) => coroutineScope((s) => s.launch(() => 1, o).join())],
    ["lazy", (o) => coroutineScope((s) => s.launch(() => 1, o).join())],
  ];
  globalThis.addEventListener("error", onError);
  try {
    for (const [key, call] of cases) {
      const t = toggling(key);
      await coroutineScope(async () => {
        await call(t.options as never);
      }, { context: reported.context });
      assert.equal(t.reads, 1, `${key} of ${call}`);
    }
  } finally {
    globalThis.removeEventListener("error", onError);
  }
  assert.deepEqual(uncaught.map((e) => (e as Error).message), ["a child"]);
  assert.deepEqual(reported.reported, []);
});

Deno.test("a child failing with another copy of kcoro's CancellationError is cancelled, not failed; an error class of the caller's own named so fails the scope", async () => {
  const copy = await moduleCopy(); // mod.ts again, through another URL: classes of its own
  const theirs = new copy.CancellationError("from another copy");
  assert.ok(!(theirs instanceof CancellationError));
  let job: Job | undefined;
  const went = await coroutineScope(async (scope) => {
    job = scope.launch(() => Promise.reject(theirs));
    await job.join();
    return "went on";
  });
  assert.equal(went, "went on", "the scope was not cancelled by its child's cancellation");
  assert.equal(job!.isCancelled, true);
  // By kcoro's brand, not by its class's name (before, any class named CancellationError).
  const Mine = class CancellationError extends Error {};
  const mine = new Mine("mine");
  await assert.rejects(
    coroutineScope((scope) => {
      scope.launch(() => Promise.reject(mine));
      return untilAborted(scope.signal);
    }),
    (e) => e === mine,
  );
});

Deno.test("scopes start, cancel and join their jobs and read their contexts and states by JobSupport's own members, not ones a caller redefined on a job's prototype", async () => {
  // Before, a launch read `this.context` and ran `child.start()`, createScope read
  // `parent.context` and ran `scope.start()` and `JobSupport.prototype.start` as it was then, a
  // signal's abort ran `scope.cancel(...)` and a scope's `await using` ran `this.cancel(...)` and
  // `super.join()`: each the prototype's at that call, so a redefinition threw out of kcoro's own
  // calls (a launch refused, a scope's cancel lost, its tasks running on).
  const Key = createContextKey<string>("scope test key");
  const log: string[] = [];
  const following = new AbortController();
  // The test's own reads of a job's signal by kcoro's `signalOfJob`: the getter is redefined too.
  const signal = (job: unknown) => signalOfJob(job as JobSupport<unknown>);
  const { calls } = await withJobMembersRedefined(
    JOB_MEMBERS,
    async () => {
      await coroutineScope(async (scope) => {
        scope.launch(() => void log.push("launched"));
        scope.launch(() => void log.push("with a context"), {
          context: Context.empty.with(Key, "k"),
        });
        // A child of the running scope: its context, the start of its parent.
        await using child = createScope({ parent: scope as unknown as Job });
        child.launch(async (task) => {
          log.push("child's task");
          await untilAborted(signal(task));
        });
        // An aborted signal: the scope is started, then cancelled at once.
        const gone = createScope({ signal: AbortSignal.abort() });
        gone.launch(() => void log.push("never"));
      }); // `await using`: the child's own cancel and join end its task
      // A signal the scope follows, aborted while its block waits: its own cancel ends it.
      const followed = coroutineScope(async (scope) => {
        log.push("following");
        await untilAborted(signal(scope));
      }, { signal: following.signal });
      following.abort(new Error("stop"));
      await assert.rejects(within(followed, 10_000, "the followed scope to end"), Error);
      // createScope's `join` (it closes the scope, then waits by JobSupport's own join, not
      // `super.join`, which reads the prototype's at the call).
      const closing = createScope();
      closing.launch(() => void log.push("closing's task"));
      await within(closing.join(), 10_000, "the closed scope's join");
    },
  );
  assert.deepEqual(calls, []);
  assert.deepEqual(log, [
    "launched",
    "with a context",
    "child's task",
    "following",
    "closing's task",
  ]);
});

Deno.test("a launch, createScope and a CompletableDeferred on a scope whose follow cancel waits in the queue are cancelled at once by JobSupport's own cancel and start, not ones a caller redefined on a job's prototype", async () => {
  // The queued-cancel paths JL's scope test does not reach: past 32 nested levels a launch on the
  // scope (`#child`), a createScope({ parent }) and a CompletableDeferred({ parent }) made on it
  // are cancelled unattached, each by kcoro's own cancel. Before, `child.cancel(...)`,
  // `this.cancel(...)` and the deferred's `this.cancel(...)` ran the prototype's, whose throw
  // came out of the launch or the constructor (in the abort's listener: reported).
  using reported = catchReported();
  const depth = 40;
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const names = ["cancel", "start", "invokeOnCompletion"] as const;
  const descs = names.map((n) => Object.getOwnPropertyDescriptor(proto, n)!);
  const own = descs.map((d) => d.value as (this: unknown, ...a: unknown[]) => unknown);
  const calls: string[] = [];
  const made: { n: number; launched: Job; scope: Job; deferred: Job }[] = [];
  const { root, outcome } = await nestThroughSignals(depth, (s, n) => {
    const parent = s as unknown as Job;
    made.push({
      n,
      launched: s.launch(() => {}),
      scope: createScope({ parent }),
      deferred: new CompletableDeferred<void>({ parent }),
    });
  });
  try {
    for (const name of names) {
      Object.defineProperty(proto, name, {
        configurable: true,
        writable: true,
        value: () => {
          calls.push(name);
          throw new Error(`the ${name} redefined on JobSupport.prototype ran`);
        },
      });
    }
    own[0].call(root); // the test's own cancel of the root: JobSupport's own
  } finally {
    names.forEach((n, i) => Object.defineProperty(proto, n, descs[i]));
  }
  assert.deepEqual(calls, []);
  assert.equal(made.length, depth, "every level's listener ran");
  for (const m of made) {
    for (
      const [what, job] of [["launch", m.launched], ["scope", m.scope], ["deferred", m.deferred]]
    ) {
      assert.equal(
        jobStateOf(job as JobSupport<unknown>),
        "cancelled",
        `level ${m.n}: the ${what}`,
      );
    }
  }
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

Deno.test("a block whose start was put off (launched from blocks 100 deep) and cancelled meanwhile is found cancelled by its own state, not an isCancelled a caller redefined on a job's prototype", async () => {
  // `#startLater`: before, `this.isCancelled`, Coroutine's getter, which reads JobSupport's
  // through `super` at the call: a redefinition threw out of the microtask (uncaught).
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as { cancel(): void };
  const ownCancel = proto.cancel; // the test's own cancel, JobSupport's
  const jobs: Job[] = [];
  let deepestRan = false;
  const { calls } = await withJobMembersRedefined(
    ["isCancelled", "isCompleted", "isActive", "state"],
    () =>
      coroutineScope((s) => {
        const down = (c: CoroutineScope, n: number): void => {
          if (n === 0) {
            deepestRan = true;
            return;
          }
          jobs.push(c.launch((d) => down(d, n - 1)));
        };
        down(s, 200);
        assert.ok(jobs.length < 200, "the deeper levels start later");
        ownCancel.call(jobs.at(-1));
      }),
  );
  assert.deepEqual(calls, []);
  assert.equal(deepestRan, false);
  assert.equal(jobStateOf(jobs.at(-1) as unknown as JobSupport<unknown>), "cancelled");
});

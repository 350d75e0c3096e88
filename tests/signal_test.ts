// A caller's AbortSignal whose own members throw (an `aborted` or `reason` getter, an
// `addEventListener`, `removeEventListener` or `throwIfAborted` of its own or of a prototype put
// under it) never leaves a job, scope or wait stuck, nor throws where a Promise is returned:
// kcoro reads and listens to a signal only through AbortSignal's and EventTarget's own members,
// captured as it loads (src/errors.ts), so those overrides never run. A Proxy, which would run
// the caller's traps at each read, is refused by name.
import assert from "node:assert/strict";
import {
  actor,
  CancellationError,
  Channel,
  ClosedSendError,
  codecs,
  CompletableDeferred,
  Context,
  type CoroutineScope,
  coroutineScope,
  createScope,
  delay,
  type Job,
  NativeScope,
  nativeScope,
  produce,
  runtime,
  type Scope,
  select,
  supervisorScope,
  TimeoutError,
  type WaitOptions,
  withTimeout,
  withTimeoutOrNull,
} from "../mod.ts";
import {
  abortListeners,
  catchReported,
  evalScript,
  jobSendingAsArmed,
  settled,
  shutdownScheduler,
  trySendNatively,
  untilAborted,
  within,
  withJobMembersRedefined,
} from "./support.ts";
import { handlerCountOf, jobStateOf, type JobSupport } from "../src/job.ts";
import { _testFollowCancelFault } from "../src/scope.ts";

const MEMBERS = [
  "aborted",
  "reason",
  "addEventListener",
  "removeEventListener",
  "throwIfAborted",
] as const;
/** Each member alone on the signal itself, then all of them on a prototype put under it. */
const KINDS = [...MEMBERS, "all, on a prototype under it"] as const;
type Kind = typeof KINDS[number];

const abortedOf = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "aborted")!.get!;

/**
 * The caller's own scope: it runs a block under `scope`'s task (kcoro's), but hands it a task
 * whose signal is `signal`.
 */
function withTaskSignal(scope: CoroutineScope, signal: AbortSignal): CoroutineScope {
  return {
    context: Context.empty,
    launch: (block: (task: CoroutineScope) => unknown) =>
      scope.launch((task) =>
        block({ signal, context: task.context, job: task.job } as unknown as CoroutineScope)
      ),
  } as unknown as CoroutineScope;
}

/**
 * A real signal whose `kind` members throw when read (a method: when looked up to be called),
 * and `abort(reason)`, which aborts it: its controller's abort reads the signal's `aborted`
 * itself, once, before the listeners run (Deno's own code): that one read answers.
 */
function hostile(kind: Kind) {
  const controller = new AbortController();
  const signal = controller.signal;
  const ran: string[] = [];
  let controllers = 0;
  const throwing = (m: string): PropertyDescriptor => ({
    get() {
      if (m === "aborted" && controllers > 0) {
        controllers--;
        return abortedOf.call(signal);
      }
      ran.push(m);
      throw new Error(`the caller's ${m}`);
    },
    configurable: true,
  });
  if (kind === "all, on a prototype under it") {
    const descriptors: PropertyDescriptorMap = {};
    for (const m of MEMBERS) descriptors[m] = throwing(m);
    Object.setPrototypeOf(signal, Object.create(AbortSignal.prototype, descriptors));
  } else {
    Object.defineProperty(signal, kind, throwing(kind));
  }
  const abort = (reason: unknown) => {
    controllers = 1; // read by the abort (where `aborted` is the signal's own), or by nobody
    controller.abort(reason);
    controllers = 0;
  };
  return { abort, signal, ran };
}

/** The reason itself, or a CancellationError caused by it (what a scope fails with). */
function byReason(reason: Error) {
  return (e: unknown) => e === reason || (e instanceof CancellationError && e.cause === reason);
}

/**
 * An entry point that takes a signal: `completes` settles by itself (resolving `value`);
 * `waits` waits until the signal aborts. Each returns its promise and what to end afterwards.
 */
interface Entry {
  name: string;
  completes(signal: AbortSignal): Promise<unknown>;
  value: unknown;
  waits(signal: AbortSignal): Promise<unknown>;
}

/**
 * An entry point that waits for a CompletableDeferred (`wait`): it completes once the deferred is
 * completed with 7 in a later task, resolving `value`; it waits on one never completed.
 */
function awaitingDeferred(
  name: string,
  wait: (d: CompletableDeferred<number>, signal: AbortSignal) => Promise<unknown>,
  value: unknown,
): Entry {
  return {
    name,
    completes: (signal) => {
      const d = new CompletableDeferred<number>();
      const p = wait(d, signal);
      setTimeout(() => d.complete(7), 0);
      return p;
    },
    value,
    waits: (signal) => wait(new CompletableDeferred<number>(), signal),
  };
}

/**
 * An entry point that receives from a channel (`receive`): it completes on a rendezvous channel
 * once a send comes (waiting first, so its listener goes as it settles), resolving `value` (7
 * sent); it waits on an empty channel of capacity 1.
 */
function receiving(
  name: string,
  receive: (ch: Channel<number>, signal: AbortSignal) => Promise<unknown>,
  value: unknown,
): Entry {
  return {
    name,
    completes: async (signal) => {
      using ch = new Channel<number>("rendezvous");
      const p = receive(ch, signal);
      await ch.send(7);
      return await p;
    },
    value,
    waits: async (signal) => {
      using ch = new Channel<number>(1);
      return await receive(ch, signal);
    },
  };
}

const ENTRIES: Entry[] = [
  {
    name: "delay",
    completes: (signal) => delay(1, { signal }),
    value: undefined,
    waits: (signal) => delay(60_000, { signal }),
  },
  {
    name: "coroutineScope",
    completes: (signal) => coroutineScope(() => 7, { signal }),
    value: 7,
    waits: (signal) => coroutineScope((s) => untilAborted(s.signal), { signal }),
  },
  {
    name: "supervisorScope",
    completes: (signal) => supervisorScope(() => 7, { signal }),
    value: 7,
    waits: (signal) => supervisorScope((s) => untilAborted(s.signal), { signal }),
  },
  {
    name: "withTimeout",
    completes: (signal) => withTimeout(60_000, () => 7, { signal }),
    value: 7,
    waits: (signal) => withTimeout(60_000, (s) => untilAborted(s.signal), { signal }),
  },
  {
    name: "withTimeoutOrNull",
    completes: (signal) => withTimeoutOrNull(60_000, () => 7, { signal }),
    value: 7,
    waits: (signal) => withTimeoutOrNull(60_000, (s) => untilAborted(s.signal), { signal }),
  },
  {
    name: "createScope's join",
    completes: async (signal) => {
      const scope = createScope({ signal });
      scope.launch(() => delay(1));
      await scope.join();
      return scope.job.state;
    },
    value: "completed",
    waits: async (signal) => {
      const scope = createScope({ signal });
      const d = scope.async((task) => untilAborted(task.signal));
      await scope.join();
      return await d.await(); // the scope's cancellation, once its signal aborted
    },
  },
  awaitingDeferred("Deferred's await", (d, signal) => d.await({ signal }), 7),
  awaitingDeferred("Job's join", (d, signal) => d.join({ signal }), undefined),
  receiving("Channel's receive", (ch, signal) => ch.receive({ signal }), 7),
  receiving(
    "Channel's receiveCatching",
    (ch, signal) => ch.receiveCatching({ signal }),
    { state: "ok", value: 7 },
  ),
  {
    name: "Channel's send",
    completes: async (signal) => {
      using ch = new Channel<number>("rendezvous");
      const p = ch.send(7, { signal });
      assert.equal(await ch.receive(), 7);
      return await p;
    },
    value: undefined,
    waits: async (signal) => {
      using ch = new Channel<number>("rendezvous");
      return await ch.send(7, { signal });
    },
  },
  {
    name: "Channel's values()",
    completes: async (signal) => {
      using ch = new Channel<number>(1);
      const p = ch.values({ signal }).next();
      await ch.send(7);
      return await p;
    },
    value: { done: false, value: 7 },
    waits: async (signal) => {
      using ch = new Channel<number>(1);
      return await ch.values({ signal }).next();
    },
  },
  receiving(
    "select",
    (ch, signal) => select<number>((s) => s.onReceive(ch, (v) => v), { signal }),
    7,
  ),
  {
    name: "a producer's send with a signal of its own",
    completes: (signal) =>
      coroutineScope(async (scope) => {
        using ch = produce<number>(scope, (out) => out.send(7, { signal }));
        return (await ch.receive());
      }),
    value: 7,
    waits: (signal) =>
      coroutineScope((scope) => {
        const ch = produce<number>(scope, (out) => out.send(7, { signal }));
        // The send's rejection fails the producer, and so the scope; the channel then is done.
        return untilAborted(scope.signal).finally(() => ch[Symbol.dispose]());
      }),
  },
  {
    name: "a NativeScope's wait",
    completes: async (signal) => {
      await using ns = NativeScope.create();
      return await ns.wait({ signal }); // no child: resolves, and its listener goes
    },
    value: undefined,
    waits: async (signal) => {
      await using ns = NativeScope.create();
      ns.launch("cancellable-sleeper", runtime().cells([60_000n, 0n, 0n])); // a minute
      return await ns.wait({ signal }); // its dispose then cancels the child and waits
    },
  },
  {
    name: "a Runtime's drain",
    completes: (signal) => runtime().drain({ signal }).then(() => 7), // parked ones may count
    value: 7,
    waits: async (signal) => {
      // In a native scope, whose dispose cancels the sleeper: later drains do not wait for it.
      await using ns = NativeScope.create();
      ns.launch("cancellable-sleeper", runtime().cells([60_000n, 0n, 0n])); // a minute
      return await runtime().drain({ signal });
    },
  },
  {
    name: "a Runtime's shutdown",
    // Nothing left running: resolves with no coroutine abandoned, and its listener goes.
    completes: (signal) => runtime().shutdown("cancel", { signal }),
    value: { abandoned: 0 },
    waits: async (signal) => {
      // A finish waiting for a sleeper of a minute, given up; the cancel after it (a second
      // call, which cuts the finish's drain short) ends that shutdown before the next case.
      const rt = runtime();
      rt.spawn("sleeper", rt.cells([60_000n, 0n]));
      try {
        return await rt.shutdown("finish", { signal });
      } finally {
        await rt.shutdown("cancel");
      }
    },
  },
];

for (const entry of ENTRIES) {
  Deno.test(`${entry.name}: a signal whose own members throw (each, or a prototype's) is read and listened to by AbortSignal's own, so the call completes, aborts, and refuses an aborted signal as with any signal`, async () => {
    using reported = catchReported();
    for (const kind of KINDS) {
      const what = `${entry.name}, ${kind}`;
      // Completes by itself: before, the `aborted` read threw (at the call, or a rejection),
      // `addEventListener` rejected the call, `removeEventListener` threw out of the job's
      // finalizer (a scope never settled, or threw at the call), out of a delay's timer (an
      // uncaught error ending the process), out of a join's completion handler (it never
      // settled).
      const one = hostile(kind);
      assert.deepEqual(await entry.completes(one.signal), entry.value, what);
      // Aborted while it waits: rejects with the reason (a scope with a CancellationError
      // caused by it). Before, reading `reason` in the abort listener threw there.
      const two = hostile(kind);
      const waiting = entry.waits(two.signal);
      waiting.catch(() => {}); // asserted below
      assert.equal(await settled(waiting), false, `${what}: waits`);
      const reason = new Error(`stop ${what}`);
      two.abort(reason);
      await assert.rejects(waiting, byReason(reason), what);
      // Aborted before the call: refused up front with the reason, as any aborted signal.
      const three = hostile(kind);
      const before = new Error(`before ${what}`);
      three.abort(before);
      await assert.rejects(entry.waits(three.signal), byReason(before), `${what}: aborted before`);
      for (const h of [one, two, three]) {
        assert.deepEqual(h.ran, [], `${what}: none of its own ran`);
      }
    }
    assert.deepEqual(reported.errors, [], "nothing reported");
  });
}

Deno.test("createScope: a signal whose own members throw never throws at the call nor stops the scope's end", async () => {
  for (const kind of KINDS) {
    const { abort, signal, ran } = hostile(kind);
    const before = hostile(kind);
    before.abort(new Error("stop"));
    // Before, its `aborted` getter or `addEventListener` threw at the call.
    const cancelled = createScope({ signal: before.signal });
    assert.equal(cancelled.job.isCancelled, true, kind);
    await cancelled.join();
    const scope = createScope({ signal });
    scope.launch(() => {});
    // Before, its `removeEventListener` threw out of the scope's finalizer: join threw.
    await scope.join();
    assert.equal(scope.job.state, "completed", kind);
    abort(new Error("late")); // after its end: nothing listens
    assert.deepEqual([...ran, ...before.ran], [], kind);
  }
});

Deno.test("a producer's and an actor's task signal (a scope of the caller's own) whose own members throw: watched by AbortSignal's own members, so its abort ends them and their end detaches", async () => {
  for (const kind of KINDS) {
    for (const which of ["produce", "actor"] as const) {
      const what = `${which}, ${kind}`;
      const { abort, signal, ran } = hostile(kind);
      const reason = new Error(`stop ${what}`);
      let ended: unknown = "still waiting";
      await coroutineScope(async (scope) => {
        const theirs = withTaskSignal(scope, signal); // the hostile one
        if (which === "produce") {
          using ch = produce<number>(theirs, async (out) => {
            await out.send(1); // bound to the task's signal
            // Waits for a receive that never comes, until the task's signal aborts.
            await out.send(2).catch((e) => ended = e);
          });
          assert.equal(await ch.receive(), 1);
          abort(reason);
          // Closed with the reason: nothing more to receive.
          await assert.rejects(ch.receive(), what);
        } else {
          const a = actor<number>(theirs, async (mailbox) => {
            try {
              for (;;) await mailbox.receive();
            } catch (e) {
              ended = e; // the mailbox cancelled with the reason, as the task's signal aborted
            }
          });
          await a.send(1);
          abort(reason);
          await a.job.join();
        }
      });
      // The producer's waiting send rejects with the reason (its channel closed with it); the
      // actor's receive with its cancelled mailbox's CancellationError.
      if (which === "produce") assert.equal(ended, reason, what);
      else assert.ok(ended instanceof CancellationError, `${what}: ${String(ended)}`);
      assert.deepEqual(ran, [], `${what}: none of its own ran`);
    }
  }
});

Deno.test("a Proxy of a signal, or a signal with a Proxy among its prototypes, is refused by name: its traps never run", async () => {
  const trapped: string[] = [];
  const handler: ProxyHandler<AbortSignal> = {
    get(target, key) {
      trapped.push(`get ${String(key)}`);
      return Reflect.get(target, key, target);
    },
    getPrototypeOf(target) {
      trapped.push("getPrototypeOf");
      return Reflect.getPrototypeOf(target);
    },
  };
  const proxy = new Proxy(new AbortController().signal, handler);
  const under = new AbortController().signal;
  Object.setPrototypeOf(under, new Proxy(AbortSignal.prototype, handler as ProxyHandler<object>));
  const cases: [AbortSignal, string][] = [
    [proxy, "a Proxy"],
    [under, "an object with a Proxy among its prototypes"],
  ];
  for (const [signal, said] of cases) {
    const refused = (op: string) => ({
      name: "TypeError",
      message: `Cannot ${op}: signal must be an AbortSignal, received ${said}`,
    });
    const o = { signal };
    await assert.rejects(delay(1, o), refused("delay"));
    await assert.rejects(coroutineScope(() => {}, o), refused("run coroutineScope"));
    await assert.rejects(withTimeout(5, () => {}, o), refused("run withTimeout"));
    assert.throws(() => createScope(o), refused("create scope"));
    const d = new CompletableDeferred<number>();
    await assert.rejects(d.join(o), refused("join"));
    await assert.rejects(d.await(o), refused("await"));
    d.complete(1);
    using ch = new Channel<number>(1);
    await assert.rejects(ch.send(1, o), refused("send"));
    await assert.rejects(ch.receive(o), refused("receive"));
    assert.throws(() => ch.values(o), refused("iterate channel"));
    await assert.rejects(select((s) => s.onReceive(ch, () => {}), o), refused("select"));
    await using ns = NativeScope.create();
    await assert.rejects(ns.wait(o), refused("wait for native scope"));
    await assert.rejects(runtime().drain(o), refused("drain runtime"));
    await assert.rejects(runtime().shutdown("cancel", o), refused("shut down runtime"));
  }
  assert.deepEqual(trapped, [], "no trap ran");
});

Deno.test("a signal passed once is still checked for a Proxy put under it later", async () => {
  // The check remembers the signals it passed (a private mark), but only while AbortSignal's
  // prototype is right under them: one changed since is looked at again.
  const { signal } = hostile("aborted");
  await delay(0, { signal });
  let trapped = 0;
  Object.setPrototypeOf(
    signal,
    new Proxy(AbortSignal.prototype, {
      getPrototypeOf: (t) => {
        trapped++;
        return Reflect.getPrototypeOf(t);
      },
    }),
  );
  await assert.rejects(delay(0, { signal }), {
    name: "TypeError",
    message:
      "Cannot delay: signal must be an AbortSignal, received an object with a Proxy among its prototypes",
  });
  assert.equal(trapped, 0);
});

/**
 * A real signal that passes the check but whose listening throws: the engine keeps a target's
 * listeners under a symbol-keyed property that it makes on the first listen, looked up through
 * the prototypes until then, and a caller can find that symbol (an EventTarget's own symbols
 * after a listen) and put an accessor for it on a prototype under the signal. AbortSignal's own
 * `addEventListener` then runs the caller's code, and throws.
 */
function listenThrows(): AbortSignal {
  const target = new EventTarget();
  const before = new Set(Object.getOwnPropertySymbols(target));
  target.addEventListener("x", () => {});
  const made = Object.getOwnPropertySymbols(target).filter((s) => !before.has(s));
  assert.ok(made.length > 0, "the engine keeps listeners under a symbol-keyed property");
  const fail = (): never => {
    throw new Error("the caller's listeners property");
  };
  const descriptors: PropertyDescriptorMap = {};
  for (const s of made) descriptors[s] = { get: fail, set: fail };
  const signal = new AbortController().signal;
  Object.setPrototypeOf(signal, Object.create(AbortSignal.prototype, descriptors));
  return signal;
}

/**
 * Asserts the named error of a call whose signal's listening throws (`listenThrows`): a
 * TypeError under the call's own name, the listen's error its cause.
 */
function unlistenable(op: string): (e: unknown) => true {
  return (e: unknown) => {
    assert.ok(e instanceof TypeError, `${op}: ${String(e)}`);
    assert.equal(
      e.message,
      `Cannot ${op}: signal must be one that can be listened to, received an AbortSignal whose listening throws`,
    );
    assert.equal((e.cause as Error).message, "the caller's listeners property", op);
    return true;
  };
}

/**
 * Asserts that a wait on the rendezvous channel `ch` that ended without a value left nothing
 * queued there: after a send's (`side` "send"), the next receive gets the next send's value, not
 * the withdrawn one; after a receive's, a select's or another wait's, the next send's value goes
 * to the next receive.
 */
async function assertNothingQueued(
  ch: Channel<number>,
  side: "send" | "receive",
  what: string,
): Promise<void> {
  if (side === "send") {
    const next = ch.send(2);
    assert.equal(await ch.receive(), 2, `${what}: the next receive gets the next send's value`);
    await next;
  } else {
    const next = ch.receive();
    await ch.send(7);
    assert.equal(await next, 7, `${what}: the next receive gets the value`);
  }
}

Deno.test("a channel wait or a select whose signal's listening throws rejects by name and leaves nothing queued: the next send or receive is not taken by it", async () => {
  using reported = catchReported();
  const waits = [
    ["receive", "receive"],
    ["receiveCatching", "receiveCatching"], // it said "Cannot receive"
    ["values", "iterate channel"],
    ["send", "send"],
    ["select", "select"],
  ] as const;
  for (const [which, op] of waits) {
    using ch = new Channel<number>("rendezvous");
    const signal = listenThrows();
    // Before, the receive threw (where a Promise is returned) leaving its waiter queued, whose
    // promise the channel's dispose later rejected unhandled (ending the process). A select
    // withdraws what `#start` queued before it throws (select.ts, `run`): pinned here too.
    // Then each rejected with the listen's raw error, where createScope refuses such a signal
    // by name.
    let call: Promise<unknown> | undefined;
    assert.doesNotThrow(() => {
      call = which === "receive"
        ? ch.receive({ signal })
        : which === "receiveCatching"
        ? ch.receiveCatching({ signal })
        : which === "values"
        ? ch.values({ signal }).next()
        : which === "send"
        ? ch.send(1, { signal })
        : select<number>((s) => s.onReceive(ch, (v) => v), { signal });
    }, which);
    await assert.rejects(call!, unlistenable(op), which);
    // Withdrawn: a send's value is never delivered.
    await assertNothingQueued(ch, which === "send" ? "send" : "receive", which);
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a signal passed once whose engine state the caller then redefines (a getter that throws) is refused by name as before it passed: calls that return a Promise reject, never throw", async () => {
  // The engine keeps a signal's reason under a configurable symbol-keyed property of its own.
  const broken = () => {
    const signal = new AbortController().signal;
    const keys = Object.getOwnPropertySymbols(signal);
    assert.ok(keys.length > 0, "the engine keeps a signal's state under symbol-keyed properties");
    const breakIt = () => {
      for (const k of keys) {
        Object.defineProperty(signal, k, {
          get() {
            throw new Error("the caller's redefined state");
          },
        });
      }
    };
    return { signal, breakIt };
  };
  const calls: [string, (signal: AbortSignal) => Promise<unknown>][] = [
    ["delay", (signal) => delay(60_000, { signal })],
    ["join", (signal) => new CompletableDeferred<number>().join({ signal })],
    ["await", (signal) => new CompletableDeferred<number>().await({ signal })],
  ];
  for (const [op, call] of calls) {
    // Said as what it is: before, as an object merely made from AbortSignal's prototype (which
    // is still said of one, below).
    const refused = {
      name: "TypeError",
      message:
        `Cannot ${op}: signal must be an AbortSignal, received an AbortSignal whose state cannot be read`,
    };
    await assert.rejects(call(Object.create(AbortSignal.prototype)), {
      name: "TypeError",
      message:
        `Cannot ${op}: signal must be an AbortSignal, received an object of its prototype that is none`,
    }, `${op}: a made-up one`);
    const fresh = broken();
    fresh.breakIt();
    await assert.rejects(call(fresh.signal), refused, `${op}: never passed`);
    const marked = broken();
    await delay(0, { signal: marked.signal }); // passes the check, which remembers it
    marked.breakIt();
    // Before, the remembered signal skipped the check, and its `aborted` read threw at the call.
    let p: Promise<unknown> | undefined;
    assert.doesNotThrow(() => p = call(marked.signal), op);
    await assert.rejects(p!, refused, `${op}: passed before`);
  }
});

Deno.test(
  "delay and a native scope's wait whose signal's listening throws reject by name, the delay leaving no timer running",
  { sanitizeOps: true }, // what it checks: a timer left armed fails the test as a leaking op
  async () => {
    // Before, its timer was armed first: it kept the process up for the whole delay after the
    // delay had rejected. Then it rejected with the listen's raw error.
    await assert.rejects(delay(60_000, { signal: listenThrows() }), unlistenable("delay"));
    // Before, with the listen's raw error.
    await using ns = NativeScope.create();
    let waited: Promise<void> | undefined;
    assert.doesNotThrow(() => waited = ns.wait({ signal: listenThrows() }));
    await assert.rejects(waited!, unlistenable("wait for native scope"));
  },
);

Deno.test("an actor's send after its end with a signal whose own members throw: refused as any send, by AbortSignal's own members", async () => {
  for (const kind of KINDS) {
    await coroutineScope(async (scope) => {
      const a = actor<number>(scope, () => {}); // ends at once: its mailbox is gone
      await a.job.join();
      const live = hostile(kind);
      // Not aborted: refused as a send on a closed channel.
      let p: Promise<void> | undefined;
      assert.doesNotThrow(() => p = a.send(1, { signal: live.signal }), kind);
      await assert.rejects(p!, ClosedSendError, kind);
      // Aborted: its reason, first. Before, its `aborted` getter threw at the call, its
      // `reason` getter's error was the rejection.
      const aborted = hostile(kind);
      const reason = new Error(`stop ${kind}`);
      aborted.abort(reason);
      assert.doesNotThrow(() => p = a.send(1, { signal: aborted.signal }), kind);
      await assert.rejects(p!, (e) => e === reason, kind);
      assert.deepEqual([...live.ran, ...aborted.ran], [], `${kind}: none of its own ran`);
    });
  }
});

Deno.test("an actor's waiting send whose signal cannot be listened to rejects by name, as every wait, leaving nothing queued and nothing handed to onUndeliveredElement; one whose own addEventListener throws waits as any", async () => {
  // AbortSignal's own `addEventListener` reaching an accessor of the caller's that throws
  // (`listenThrows`): the named TypeError every wait rejects with, under the send's name, its
  // message still the caller's (a wait's withdrawn value is never hooked). An `addEventListener`
  // of the signal's own never runs.
  using reported = catchReported();
  const undelivered: number[] = [];
  const got: number[] = [];
  const own = hostile("addEventListener");
  await coroutineScope(async (scope) => {
    const gate = Promise.withResolvers<void>();
    const a = actor<number>(scope, async (mailbox) => {
      await gate.promise; // not receiving yet: a send to the rendezvous mailbox waits
      for await (const m of mailbox) got.push(m);
    }, { onUndeliveredElement: (m) => undelivered.push(m) });
    const refused = a.send(1, { signal: listenThrows() });
    await assert.rejects(refused, unlistenable("send"));
    const waiting = a.send(2, { signal: own.signal });
    gate.resolve();
    await waiting;
    await a.send(3);
    a.close();
    await a.job.join();
  });
  assert.deepEqual(got, [2, 3], "the refused send was not delivered");
  assert.deepEqual(undelivered, [], "nor hooked");
  assert.deepEqual(own.ran, [], "none of its own ran");
  assert.deepEqual(reported.errors, []);
});

Deno.test("withTimeout and withTimeoutOrNull of 0 ms (no scope made) read a signal whose own members throw by AbortSignal's own members", async () => {
  for (const kind of KINDS) {
    // Not aborted: the timeout, at once (null for withTimeoutOrNull).
    const live = hostile(kind);
    await assert.rejects(withTimeout(0, () => 7, { signal: live.signal }), TimeoutError, kind);
    assert.equal(await withTimeoutOrNull(0, () => 7, { signal: live.signal }), null, kind);
    // Aborted: its reason comes first. Before, its `aborted` or `reason` getter's error was the
    // rejection.
    const aborted = hostile(kind);
    const reason = new Error(`stop ${kind}`);
    aborted.abort(reason);
    for (const call of [withTimeout, withTimeoutOrNull]) {
      await assert.rejects(call(0, () => 7, { signal: aborted.signal }), byReason(reason), kind);
    }
    assert.deepEqual([...live.ran, ...aborted.ran], [], `${kind}: none of its own ran`);
  }
});

Deno.test("a long-lived signal (a controller's, AbortSignal.any's, AbortSignal.timeout's) keeps none of kcoro's listeners once its waits settle, however many", async () => {
  const timeout = AbortSignal.timeout(3_600_000);
  const signals: [string, AbortSignal][] = [
    ["a controller's", new AbortController().signal],
    ["AbortSignal.any's", AbortSignal.any([new AbortController().signal, timeout])],
    ["AbortSignal.timeout's", timeout],
  ];
  for (const [what, signal] of signals) {
    const base = abortListeners(signal); // AbortSignal.any's own, on its sources: not on it
    // The probe sees a wait's listener (or it would pass whatever kcoro left).
    using ch = new Channel<number>("rendezvous");
    const waiting = ch.receive({ signal });
    assert.equal(abortListeners(signal), base + 1, `${what}: a waiting receive listens`);
    await ch.send(1);
    await waiting;
    for (let round = 0; round < 20; round++) {
      for (const entry of ENTRIES) {
        assert.deepEqual(await entry.completes(signal), entry.value, `${what}, ${entry.name}`);
      }
    }
    assert.equal(abortListeners(signal), base, `${what}: none left`);
  }
  // Its timer, which nothing else clears (Deno unrefs it).
  assert.equal(timeout.aborted, false);
});

/** The symbol key under which the engine keeps a target's listeners (made on its first listen). */
function listenersKey(): symbol {
  const target = new EventTarget();
  const before = new Set(Object.getOwnPropertySymbols(target));
  target.addEventListener("x", () => {});
  const [key] = Object.getOwnPropertySymbols(target).filter((s) => !before.has(s));
  return key;
}

Deno.test("join and await whose signal's listening throws reject by name and leave no completion handler on the job", async () => {
  const d = new CompletableDeferred<number>();
  const handlers = () => handlerCountOf(d);
  // Before, each call's handler stayed registered until the job ended: one per call on a
  // long-lived job. Then they rejected with the listen's raw error.
  for (let i = 0; i < 3; i++) {
    await assert.rejects(d.join({ signal: listenThrows() }), unlistenable("join"), "join");
    await assert.rejects(d.await({ signal: listenThrows() }), unlistenable("await"), "await");
  }
  assert.equal(handlers(), 0, "no handler left");
  // The probe sees a waiting call's handler (or it would pass whatever was left).
  const waiting = d.await({ signal: new AbortController().signal });
  assert.equal(handlers(), 1, "a waiting await has one");
  d.complete(7);
  assert.equal(await waiting, 7);
});

Deno.test("createScope whose signal's listening throws is refused by name, before any scope starts", async () => {
  // Before, the listen's raw error was thrown after the scope had started: a started scope
  // that nobody held.
  assert.throws(() => createScope({ signal: listenThrows() }), unlistenable("create scope"));
  // A signal that can be listened to still makes a scope that follows it.
  const controller = new AbortController();
  const scope = createScope({ signal: controller.signal });
  assert.equal(abortListeners(controller.signal), 1, "the scope listens");
  const reason = new Error("stop");
  controller.abort(reason);
  assert.equal(scope.job.isCancelled, true);
  await scope.join();
});

Deno.test("createScope({ parent }) whose signal's listening throws is refused by name, leaving the parent nothing to wait for", async () => {
  // The scope was attached to its parent as it was made, before the refused listen: the parent
  // listed a scope nobody held, never started, and waited for it for ever (its join() never
  // settled). Refused before the attach now, as without a parent.
  const parent = createScope();
  assert.throws(
    () => createScope({ parent, signal: listenThrows() }),
    unlistenable("create scope"),
  );
  assert.deepEqual(parent.children, []);
  await parent.join();
  assert.equal(parent.state, "completed");
  // Nor is a lazy parent started by the refused call.
  await coroutineScope((scope) => {
    const lazy = scope.launch(() => {}, { lazy: true });
    assert.throws(
      () => createScope({ parent: lazy, signal: listenThrows() }),
      unlistenable("create scope"),
    );
    assert.equal(lazy.state, "new");
    lazy.cancel();
  });
});

Deno.test("createScope({ parent, signal }) that its parent makes cancelled leaves no listener on the signal", async () => {
  // Followed after the attach had cancelled it (a parent completed or cancelling), the scope
  // was final already, so the finalizer that unlistens never ran: the listener stayed on the
  // caller's signal, holding the scope, one per call.
  const done = createScope();
  await done.join();
  const cancelling = createScope();
  const gate = Promise.withResolvers<void>();
  cancelling.launch(() => gate.promise); // ignores its cancel: keeps the scope cancelling
  cancelling.cancel();
  assert.equal(cancelling.state, "cancelling");
  for (const parent of [done, cancelling]) {
    const controller = new AbortController();
    const scope = createScope({ parent, signal: controller.signal });
    assert.equal(scope.state, "cancelled", parent.state);
    assert.equal(abortListeners(controller.signal), 0, parent.state);
  }
  // One its parent holds listens until it ends, then no more.
  const parent = createScope();
  const controller = new AbortController();
  const scope = createScope({ parent, signal: controller.signal });
  assert.equal(abortListeners(controller.signal), 1);
  await scope.join();
  assert.equal(abortListeners(controller.signal), 0);
  gate.resolve();
  await cancelling.join();
  await parent.join();
});

Deno.test("a producer's send with a signal of its own, whose own or task signal's listening throws, rejects by name and leaves no listener on its own signal", async () => {
  for (const which of ["task", "own"] as const) {
    const own = which === "own" ? listenThrows() : new AbortController().signal;
    const signal = new AbortController().signal; // the task's, from a scope of the caller's own
    let sent: unknown = "still sending";
    await coroutineScope(async (scope) => {
      const theirs = withTaskSignal(scope, signal);
      const ch = produce<number>(theirs, async (out) => {
        // The producer listens to the task's signal already (its watch): its listening throws
        // from here on.
        const fail = (): never => {
          throw new Error("the caller's listeners property");
        };
        if (which === "task") {
          Object.defineProperty(signal, listenersKey(), {
            get: fail,
            set: fail,
            configurable: true,
          });
        }
        sent = await out.send(1, { signal: own }).then(() => "sent", (e) => e);
      });
      await assert.rejects(ch.receive()); // closed once the block returned
      ch[Symbol.dispose]();
    });
    // Before, with the listen's raw error.
    unlistenable("send")(sent);
    // Before, the listener added to the caller's signal first stayed on it until it aborted.
    if (which === "task") assert.equal(abortListeners(own), 0, "none left on its own signal");
  }
});

/**
 * A signal whose listening, once `arm()` was called, runs the caller's code (an accessor of its
 * own on the engine's listeners property) that aborts it with `reason` before the listener is
 * in: the next listen after `arm()` only (earlier ones, a producer's watch, listen as any).
 * `abort()` aborts it with `reason` at once.
 */
function abortsWhenArmed(
  reason: unknown,
): { signal: AbortSignal; arm(): void; abort(): void } {
  const controller = new AbortController();
  let store: unknown = undefined;
  let armed = false;
  const proto = Object.create(AbortSignal.prototype, {
    [listenersKey()]: {
      get() {
        if (armed) {
          armed = false;
          controller.abort(reason);
        }
        return store;
      },
      set(v) {
        store = v;
      },
    },
  });
  Object.setPrototypeOf(controller.signal, proto);
  return {
    signal: controller.signal,
    arm: () => armed = true,
    abort: () => controller.abort(reason),
  };
}

/**
 * A signal whose listening runs the caller's code (an accessor of its own on the engine's
 * listeners property) that aborts it, with `reason`, before the listener is in: the listen
 * neither throws nor runs that listener (`abortsWhenArmed`, armed from the start).
 */
function abortsWhileListening(reason: unknown): AbortSignal {
  const probe = abortsWhenArmed(reason);
  probe.arm(); // its first listen, the first to read the engine's listeners property
  return probe.signal;
}

Deno.test("createScope whose signal aborts while it is being listened to makes a cancelled scope that keeps no listener", async () => {
  // Before, the scope stayed active, following a signal that had aborted.
  const reason = new Error("aborted while listened to");
  const signal = abortsWhileListening(reason);
  const scope = createScope({ signal });
  assert.equal(signal.aborted, true, "the probe aborts it");
  assert.equal(scope.job.isCancelled, true, "the scope is cancelled");
  await scope.job.join();
  assert.equal(abortListeners(signal), 0, "the scope left no listener");
});

Deno.test("createScope({ parent }) whose signal aborts while it is being listened to makes a cancelled scope its parent does not wait for", async () => {
  // The scope follows its signal before it is attached (222ec06): one cancelled by that follow
  // is final already, and attached then it would stay among its parent's children for good.
  const parent = createScope();
  const signal = abortsWhileListening(new Error("aborted while listened to"));
  const scope = createScope({ parent, signal });
  assert.equal(scope.state, "cancelled");
  assert.deepEqual(parent.children, []);
  assert.equal(abortListeners(signal), 0, "the scope left no listener");
  await parent.join();
  assert.equal(parent.state, "completed");
});

Deno.test("a scope whose follow cancel throws (an engine error) as its signal aborts during the listen throws that error, not the named listen TypeError", async () => {
  // The cancel a scope's follow runs for a signal aborted during the listen can throw only an
  // engine error (a stack overflow): simulated by the scopes' `cancel` throwing once. Before,
  // the whole follow was wrapped, so that error was named "signal must be one that can be
  // listened to", the listen blamed for it.
  // By the scopes' follow-cancel test hook: kcoro's follow cancels run JobSupport's own cancel,
  // not one redefined on a scope's prototype (which this test patched before).
  const engine = new RangeError("simulated: Maximum call stack size exceeded");
  let armed = false;
  _testFollowCancelFault(() => {
    if (armed) {
      armed = false;
      throw engine;
    }
  });
  try {
    const calls: [string, (signal: AbortSignal) => unknown][] = [
      ["create scope", (signal) => createScope({ signal })],
      ["run coroutineScope", (signal) => coroutineScope(() => 1, { signal })],
      ["run supervisorScope", (signal) => supervisorScope(() => 1, { signal })],
      ["run withTimeout", (signal) => withTimeout(60_000, () => 1, { signal })],
      ["run withTimeoutOrNull", (signal) => withTimeoutOrNull(60_000, () => 1, { signal })],
    ];
    for (const [op, call] of calls) {
      const signal = abortsWhileListening(new Error("aborted while listened to"));
      armed = true;
      // README: createScope throws it; the calls that return a promise reject with it, never
      // throwing synchronously (as for a bad argument).
      let outcome: unknown, how = "returned";
      try {
        const made = call(signal);
        if (made instanceof Promise) {
          how = "rejected";
          outcome = await made;
          how = "resolved";
        }
      } catch (e) {
        if (how === "returned") how = "thrown";
        outcome = e;
      }
      assert.equal(armed, false, `${op}: the cancel ran`);
      assert.equal(how, op === "create scope" ? "thrown" : "rejected", op);
      assert.equal(outcome, engine, `${op}: ${String(outcome)}`);
      assert.equal(abortListeners(signal), 0, `${op}: no listener left`);
    }
  } finally {
    _testFollowCancelFault(null);
  }
  // The listen's own throw is still named.
  assert.throws(() => createScope({ signal: listenThrows() }), unlistenable("create scope"));
});

/**
 * Asserts that `call` (a coroutineScope, a withTimeout: a call that makes a scope to run `block`)
 * with a signal that aborts while it is being listened to (`abortsWhileListening`) rejects at
 * once as for an aborted signal, a CancellationError whose cause is the signal's reason, never
 * running its block and keeping no listener.
 */
async function assertCancelledBeforeBlock(
  call: (block: () => void, signal: AbortSignal) => Promise<unknown>,
): Promise<void> {
  const reason = new Error("aborted while listened to");
  const signal = abortsWhileListening(reason);
  let ran = false;
  const outcome = call(() => {
    ran = true;
  }, signal);
  assert.equal(await settled(outcome), true, "settled");
  await assert.rejects(
    outcome,
    (e: unknown) => e instanceof CancellationError && e.cause === reason,
  );
  assert.equal(ran, false, "the block never ran");
  assert.equal(abortListeners(signal), 0, "the scope left no listener");
}

Deno.test("coroutineScope whose signal aborts while it is being listened to rejects as for an aborted signal, never running its block, keeping no listener", async () => {
  // Before, its block ran on, its scope following a signal that had aborted.
  await assertCancelledBeforeBlock((block, signal) => coroutineScope(block, { signal }));
});

Deno.test("coroutineScope and createScope whose signal aborts while it is being listened to, inside scopes nested 40 deep being cancelled, are cancelled before the block runs, at every level", async () => {
  // Past 32 nested follow cancels the next ones wait until the first level returns: the scope
  // following a signal that aborted during its listen had its cancel queued so, and its block ran
  // (the coroutineScope's), or it was handed back active (the createScope's).
  using reported = catchReported();
  const depth = 40;
  const reason = new Error("aborted while listened to");
  const blocksRan: number[] = [];
  const activeScopes: number[] = [];
  const outcomes: Promise<unknown>[] = []; // the coroutineScopes'
  const scopes: Scope[] = []; // the createScopes'
  const probes: AbortSignal[] = [];
  let reached = 0;
  const nest = (task: CoroutineScope, n: number): Promise<void> => {
    reached++;
    task.signal.addEventListener("abort", () => {
      // Runs inside this level's cancel, nested in those of the levels above it.
      const signal = abortsWhileListening(reason), other = abortsWhileListening(reason);
      probes.push(signal, other);
      outcomes.push(
        coroutineScope(() => {
          blocksRan.push(n);
        }, { signal }).then(() => "completed", (e) => e),
      );
      const scope = createScope({ signal: other });
      if (!scope.job.isCancelled) activeScopes.push(n);
      scopes.push(scope);
    });
    if (n === 0) return untilAborted(task.signal);
    const options = { signal: task.signal, context: task.context };
    const inner = (s: CoroutineScope) => nest(s, n - 1);
    return n % 2 === 0 ? coroutineScope(inner, options) : supervisorScope(inner, options);
  };
  let root!: CoroutineScope;
  const outcome = coroutineScope((s) => {
    root = s;
    return nest(s, depth);
  }).catch((e: Error) => e.name);
  for (let i = 0; i < 1_000 && reached < depth + 1; i++) await null;
  assert.equal(reached, depth + 1, "every level started");
  root.cancel();
  assert.equal(outcomes.length, depth + 1, "every level's listener ran");
  // Each scope was cancelled before its call returned. (By now, the root's cancel returned, every
  // one would be cancelled, queued or not: only its block or its being active tell.)
  assert.deepEqual(blocksRan, [], "levels whose coroutineScope ran its block");
  assert.deepEqual(activeScopes, [], "levels whose createScope was handed back active");
  for (const p of outcomes) {
    const e = await p;
    assert.ok(e instanceof CancellationError && e.cause === reason, `rejected so: ${e}`);
  }
  for (const scope of scopes) {
    await scope.join();
    assert.equal(scope.job.state, "cancelled");
  }
  assert.ok(probes.every((s) => abortListeners(s) === 0), "no listener left");
  assert.equal(await outcome, "CancellationError");
  assert.deepEqual(reported.errors, []);
});

for (
  const [name, run] of [["withTimeout", withTimeout], [
    "withTimeoutOrNull",
    withTimeoutOrNull,
  ]] as const
) {
  Deno.test(
    `${name} whose signal aborts while it is being listened to rejects as for an aborted signal, never running its block, arming no timer`,
    {
      sanitizeOps: true, // what it checks too: a timer left armed fails the test as a leaking op
    },
    async () => {
      // Before, its scope, cancelled and final before it started, still got the timer of its
      // timeout, never cleared (its finalizer was added after the scope had finished): the
      // process was kept alive for the whole minute.
      await assertCancelledBeforeBlock((block, signal) => run(60_000, block, { signal }));
    },
  );
}

Deno.test("join and await whose signal aborts while it is being listened to reject with its reason, leaving no handler nor listener", async () => {
  // Before, they stayed pending until the job ended.
  const reason = new Error("aborted while listened to");
  const d = new CompletableDeferred<number>();
  const handlers = () => handlerCountOf(d);
  for (const op of ["join", "await"] as const) {
    const signal = abortsWhileListening(reason);
    const wait = d[op]({ signal });
    assert.equal(await settled(wait), true, `${op}: settled`);
    await assert.rejects(wait, (e: unknown) => e === reason, op);
    assert.equal(handlers(), 0, `${op}: no handler left`);
    assert.equal(abortListeners(signal), 0, `${op}: no listener left`);
  }
  d.complete(1);
});

Deno.test("a producer's send with a signal of its own that aborts while it is being listened to rejects with its reason, leaving no listener on it", async () => {
  // Before, the send waited on (for a receiver) though its signal had aborted.
  const reason = new Error("aborted while listened to");
  const signal = abortsWhileListening(reason);
  let outcome: unknown = "not sent yet";
  const ended = Promise.withResolvers<void>();
  await coroutineScope(async (scope) => {
    const ch = produce<number>(scope, async (out) => {
      const wait = out.send(1, { signal });
      outcome = await settled(wait) ? await wait.then(() => "sent", (e) => e) : "pending";
      ended.resolve();
    });
    await ended.promise;
    ch[Symbol.dispose]();
  });
  assert.equal(outcome, reason);
  assert.equal(abortListeners(signal), 0, "none left on its signal");
});

Deno.test("a channel's receive or send whose signal aborts while it is being listened to rejects with its reason, withdrawn: nothing is delivered to it, and it keeps no listener", async () => {
  using reported = catchReported();
  const reason = new Error("aborted while listened to");
  for (const which of ["receive", "send"] as const) {
    using ch = new Channel<number>("rendezvous");
    const signal = abortsWhileListening(reason);
    // Before, the wait stayed queued: the receive took the next value (lost to its caller, who
    // had seen its signal abort), and the send's value was delivered.
    const wait = which === "receive" ? ch.receive({ signal }) : ch.send(1, { signal });
    assert.equal(signal.aborted, true, `${which}: the probe aborts it`);
    assert.equal(await settled(wait), true, `${which}: settled`);
    await assert.rejects(wait, (e: unknown) => e === reason, which);
    assert.equal(abortListeners(signal), 0, `${which}: no listener left`);
    await assertNothingQueued(ch, which, which);
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a select whose signal aborts while it is being listened to rejects with its reason, having armed nothing: the next send is not taken by it", async () => {
  using reported = catchReported();
  const reason = new Error("aborted while listened to");
  using ch = new Channel<number>("rendezvous");
  const signal = abortsWhileListening(reason);
  // Before, it waited on for a clause, and took the next value.
  const wait = select<number>((s) => s.onReceive(ch, (v) => v), { signal });
  assert.equal(await settled(wait), true, "settled");
  await assert.rejects(wait, (e: unknown) => e === reason);
  assert.equal(abortListeners(signal), 0, "no listener left");
  await assertNothingQueued(ch, "receive", "the select");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a delay whose signal aborts while it is being listened to rejects with its reason, arming no timer", async () => {
  // Before, it waited out its timer (an hour here), then resolved.
  const reason = new Error("aborted while listened to");
  const signal = abortsWhileListening(reason);
  const wait = delay(3_600_000, { signal });
  assert.equal(await settled(wait), true, "settled");
  await assert.rejects(wait, (e: unknown) => e === reason);
  assert.equal(abortListeners(signal), 0, "no listener left");
  // No timer left: the test's sanitizer would fail it.
});

Deno.test("a native scope's wait whose signal aborts while it is being listened to rejects with its reason", async () => {
  // Before, the wait ran, and (no child) resolved as if its signal had not aborted.
  const reason = new Error("aborted while listened to");
  await using ns = NativeScope.create();
  const signal = abortsWhileListening(reason);
  const wait = ns.wait({ signal });
  assert.equal(await settled(wait), true, "settled");
  await assert.rejects(wait, (e: unknown) => e === reason);
  assert.equal(abortListeners(signal), 0, "no listener left");
});

Deno.test("a producer whose task signal (a scope of the caller's own) aborts while it is being listened to, or before, closes its channel with the reason at once, keeping no listener, and never runs its block", async () => {
  using reported = catchReported();
  for (const when of ["while listened to", "before"] as const) {
    const reason = new Error(`aborted ${when}`);
    const signal = when === "before" ? AbortSignal.abort(reason) : abortsWhileListening(reason);
    const release = Promise.withResolvers<void>();
    let outcome: unknown = "pending";
    let ran = false;
    await coroutineScope(async (scope) => {
      try {
        using ch = produce<number>(withTaskSignal(scope, signal), () => {
          ran = true;
          return release.promise;
        });
        // Before, the channel stayed open (its receive waited) until the block returned.
        const wait = ch.receive();
        outcome = await settled(wait) ? await wait.then(() => "received", (e) => e) : "pending";
      } finally {
        release.resolve();
      }
    });
    assert.equal(signal.aborted, true, `${when}: the probe aborts it`);
    assert.equal(outcome, reason, when);
    // Its task's signal aborted before its block began (src/produce.ts, `SIGNAL_FIRST`): before,
    // the block ran on the closed channel until its first send.
    assert.equal(ran, false, `${when}: the block never ran`);
    assert.equal(abortListeners(signal), 0, `${when}: no listener left`);
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("an actor whose task signal (a scope of the caller's own) aborts while it is being listened to, or before, cancels its mailbox at once, keeping no listener, and never runs its handler", async () => {
  using reported = catchReported();
  const STOP = -1;
  for (const when of ["while listened to", "before"] as const) {
    const reason = new Error(`aborted ${when}`);
    const signal = when === "before" ? AbortSignal.abort(reason) : abortsWhileListening(reason);
    let ran = false;
    let outcome: unknown = "pending";
    let cancelled: boolean | undefined;
    await coroutineScope(async (scope) => {
      const a = actor<number>(withTaskSignal(scope, signal), async (mailbox) => {
        ran = true;
        while (await mailbox.receive() !== STOP);
      });
      // Before, the mailbox took it: the handler ran on (stopped here, so that the scope ends).
      outcome = await a.send(1).then(() => "sent", (e) => e);
      if (outcome === "sent") await a.send(STOP);
      await a.job.join();
      cancelled = a.job.isCancelled;
    });
    assert.equal(signal.aborted, true, `${when}: the probe aborts it`);
    assert.ok(outcome instanceof CancellationError, `${when}, the send: ${String(outcome)}`);
    // Its task's signal aborted before its handler began (src/actor.ts, `SIGNAL_FIRST`): before,
    // the handler ran on the cancelled mailbox until its first receive.
    assert.equal(ran, false, `${when}: the handler never ran`);
    assert.equal(cancelled, true, `${when}: the actor ends cancelled, as for an abort after`);
    assert.equal(abortListeners(signal), 0, `${when}: no listener left`);
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("coroutineScope, supervisorScope, withTimeout and withTimeoutOrNull whose signal's listening throws are refused by name, as createScope", async () => {
  // Before, they rejected with the listen's raw error.
  const calls: [string, (signal: AbortSignal) => Promise<unknown>][] = [
    ["run coroutineScope", (signal) => coroutineScope(() => 1, { signal })],
    ["run supervisorScope", (signal) => supervisorScope(() => 1, { signal })],
    ["run withTimeout", (signal) => withTimeout(60_000, () => 1, { signal })],
    ["run withTimeoutOrNull", (signal) => withTimeoutOrNull(60_000, () => 1, { signal })],
  ];
  for (const [op, call] of calls) {
    await assert.rejects(call(listenThrows()), unlistenable(op));
  }
});

Deno.test("a producer's send whose task signal aborts during the call (while it is being listened to, or by a getter of the send's options) hands its value to onUndeliveredElement, as a send made once the task was cancelled", async () => {
  using reported = catchReported();
  for (const when of ["while listened to", "by an options getter"] as const) {
    const reason = new Error(`task aborted ${when}`);
    const probe = abortsWhenArmed(reason);
    const own = new AbortController().signal;
    const undelivered: number[] = [];
    let sent: unknown = "not sent yet";
    await coroutineScope(async (scope) => {
      using ch = produce<number>(withTaskSignal(scope, probe.signal), async (out) => {
        // The task's listen (a send with a signal of its own), or the read of the options'
        // `signal` (a getter that answers none), runs the caller's code that aborts the task's
        // signal. (A getter of an option the send does not know no longer runs: the options are
        // checked by name first, as a Channel's send checks them, and refused.)
        let options: WaitOptions = { signal: own };
        if (when === "while listened to") probe.arm();
        else {
          options = {
            get signal() {
              probe.abort();
              return undefined;
            },
          };
        }
        sent = await out.send(1, options).then(() => "sent", (e) => e);
      }, { onUndeliveredElement: (v) => undelivered.push(v) });
      await ch.receiveCatching();
    });
    assert.equal(probe.signal.aborted, true, `${when}: the probe aborts it`);
    // Before, the send rejected with the reason and its value reached no hook: the block, told
    // the task's reason as a send made once the task was cancelled is told, could not know
    // whether to release the value itself.
    assert.equal(sent, reason, when);
    assert.deepEqual(undelivered, [1], `${when}: the value goes to onUndeliveredElement`);
    assert.equal(abortListeners(own), 0, `${when}: no listener left on its own signal`);
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a producer's send without a signal of its own, under a task of the caller's own whose AbortSignal is not its kcoro Job's, listens to that signal itself: a listen that throws rejects it by name, one that aborts the signal hands its value to onUndeliveredElement", async () => {
  // The task's Job is kcoro's (the real scope's), so its cancel ends the sends too (they are
  // bound to it as well), but the task's own signal is still listened to by each send, as a
  // kcoro task's is. Before, such a task's sends were bound to the Job's end alone: the throwing
  // listen went unseen and the send was delivered; the signal aborted by its listen never
  // aborted (nothing listened to it) and the send was delivered as well.
  using reported = catchReported();
  for (const when of ["its listen throws", "it aborts while listened to"] as const) {
    for (const options of [undefined, {}] as const) {
      const what = `${when}, options ${options === undefined ? "none" : "{}"}`;
      const reason = new Error(`task aborted: ${what}`);
      const probe = abortsWhenArmed(reason);
      const undelivered: number[] = [];
      let sent: unknown = "not sent yet";
      await coroutineScope(async (scope) => {
        using ch = produce<number>(withTaskSignal(scope, probe.signal), async (out) => {
          // The producer listens to the task's signal already (its watch): from here on, its
          // next listen aborts it, or every listen throws.
          if (when === "it aborts while listened to") probe.arm();
          else {
            const fail = (): never => {
              throw new Error("the caller's listeners property");
            };
            Object.defineProperty(probe.signal, listenersKey(), {
              get: fail,
              set: fail,
              configurable: true,
            });
          }
          sent = await out.send(1, options).then(() => "sent", (e) => e);
        }, { onUndeliveredElement: (v) => undelivered.push(v) });
        await ch.receiveCatching();
      });
      if (when === "its listen throws") {
        unlistenable("send")(sent);
        assert.deepEqual(undelivered, [], `${what}: the value is the caller's`);
      } else {
        assert.equal(probe.signal.aborted, true, `${what}: the probe aborts it`);
        assert.equal(sent, reason, what);
        assert.deepEqual(undelivered, [1], `${what}: the value goes to onUndeliveredElement`);
      }
    }
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

type ListenerEntry = { callback: () => void };

/**
 * Puts the caller's code on `signal`'s listener list for "abort" (a proxy of its own on the
 * engine's list, under an accessor for its listeners property on a prototype under the signal):
 * `onLength(list, length)` runs each time the list's length is set, once it is (as a listen puts
 * a listener in, and as the dispatch or a removal takes one out); without `onLength` the list is
 * the engine's own. `entries()`: the list's entries now (none before the first listen).
 */
function watchListeners(
  signal: AbortSignal,
  onLength?: (list: ListenerEntry[], length: number) => void,
): { entries(): ListenerEntry[] } {
  let store: { listeners: Record<string, ListenerEntry[]> } | undefined = undefined;
  const list = (a: ListenerEntry[]) =>
    new Proxy(a, {
      set(target, key, value) {
        target[key as unknown as number] = value;
        if (key === "length") onLength!(target, value);
        return true;
      },
    });
  const proto = Object.create(AbortSignal.prototype, {
    [listenersKey()]: {
      get: () => store,
      set(v: { listeners: Record<string, ListenerEntry[]> }) {
        if (onLength) {
          v.listeners = new Proxy(v.listeners, {
            set(target, key, value) {
              target[key as string] = key === "abort" ? list(value) : value;
              return true;
            },
          });
        }
        store = v;
      },
    },
  });
  Object.setPrototypeOf(signal, proto);
  return { entries: () => store?.listeners.abort ?? [] };
}

/**
 * A signal whose listening runs the caller's code that aborts it, with `reason`, once kcoro's
 * listener is in, before the listen returns (`watchListeners`): the engine calls that listener,
 * and then `listenAbortNamed`, finding the signal aborted, calls it again. With `thenThrows`, the
 * listen then throws (the wait settled with the reason already). `heard()`: how many listeners
 * the list held as it aborted.
 */
function abortsOnceListenerIn(
  reason: unknown,
  thenThrows = false,
): { signal: AbortSignal; heard(): number } {
  const controller = new AbortController();
  let armed = true;
  let heard = -1;
  watchListeners(controller.signal, (list, length) => {
    // At the push's length: the listener is in, and the dispatch may remove it.
    if (!armed || length !== 1) return;
    armed = false;
    heard = list.length;
    controller.abort(reason);
    if (thenThrows) throw new Error("the caller's listeners property");
  });
  return { signal: controller.signal, heard: () => heard };
}

/** The waits a signal can end, each made by `startWait`. */
const WAITS = ["receive", "send", "select", "delay", "native wait", "join", "await"] as const;

/**
 * Starts the wait `which` with `signal`: a receive, a send (of 1) or a select (receiving) on the
 * rendezvous channel `ch`, a delay of an hour (no timer may be left: the sanitizer would fail the
 * test), `ns`'s wait, or a join or an await of `d`.
 */
function startWait(
  which: typeof WAITS[number],
  signal: AbortSignal,
  ch: Channel<number>,
  ns: NativeScope,
  d: CompletableDeferred<number>,
): Promise<unknown> {
  return which === "receive"
    ? ch.receive({ signal })
    : which === "send"
    ? ch.send(1, { signal })
    : which === "select"
    ? select<number>((s) => s.onReceive(ch, (v) => v), { signal })
    : which === "delay"
    ? delay(3_600_000, { signal })
    : which === "native wait"
    ? ns.wait({ signal })
    : d[which]({ signal });
}

Deno.test("a wait whose signal aborts during the listen once kcoro's listener is in (called by the engine, then by listenAbortNamed) settles once, with its reason, delivering nothing", async () => {
  // listenAbortNamed calls a listener the engine may have called already: each must be idempotent.
  using reported = catchReported();
  const reason = new Error("aborted once listened to");
  const d = new CompletableDeferred<number>();
  const handlers = () => handlerCountOf(d);
  for (const which of WAITS) {
    using ch = new Channel<number>("rendezvous");
    await using ns = NativeScope.create();
    const probe = abortsOnceListenerIn(reason);
    const signal = probe.signal;
    const wait = startWait(which, signal, ch, ns, d);
    assert.equal(probe.heard(), 1, `${which}: aborted with kcoro's listener in`);
    assert.equal(await settled(wait), true, `${which}: settled`);
    await assert.rejects(wait, (e: unknown) => e === reason, which);
    assert.equal(abortListeners(signal), 0, `${which}: no listener left`);
    assert.equal(handlers(), 0, `${which}: no handler left on the job`);
    await assertNothingQueued(ch, which === "send" ? "send" : "receive", which);
  }
  d.complete(1);
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a select whose signal's listen aborts it once kcoro's listener is in, then throws, rejects with its reason and reports nothing", async () => {
  using reported = catchReported();
  const reason = new Error("aborted once listened to");
  using ch = new Channel<number>("rendezvous");
  const { signal } = abortsOnceListenerIn(reason, true);
  const wait = select<number>((s) => s.onReceive(ch, (v) => v), { signal });
  assert.equal(signal.aborted, true, "the probe aborts it");
  assert.equal(await settled(wait), true, "settled");
  await assert.rejects(wait, (e: unknown) => e === reason);
  await assertNothingQueued(ch, "receive", "the select");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  // Before, the listen's error went to reportError: an error event nobody handles, which ends
  // the process.
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a select whose channel clause won as a Job of the caller's own was armed, and whose signal's listening throws, rejects by name and gives the value back, reporting nothing", async () => {
  using reported = catchReported();
  using ch = new Channel<number>(0, { codec: codecs.f64 });
  // As its clause is armed: the channel clause completes natively (a send of this isolate,
  // meeting the select queued natively), then the job runs its handler, which loses (KC_EBUSY):
  // the select listens to its signal until the record is taken.
  const job = jobSendingAsArmed(ch, 5);
  const outcome = select<string>((s) => {
    s.onReceive(ch, (v) => `got ${v}`);
    s.onJoin(job, () => "joined");
  }, { signal: listenThrows() });
  // Before, the listen's error went to reportError (an error event nobody handles, which ends
  // the process), and the receive clause fired; then the select rejected with that raw error.
  await assert.rejects(outcome, unlistenable("select"));
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }, "the value is back, not lost");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a select whose signal's listen completes one of its channel clauses (a send to it) and then throws rejects by name and gives the value back, reporting nothing", async () => {
  using reported = catchReported();
  using ch = new Channel<number>(0, { codec: codecs.f64 });
  // The listen runs the caller's accessor for the engine's listeners property: once the select
  // is queued natively, it sends (meeting the select's receive clause natively) and throws. The
  // select's withdrawal then answers KC_EBUSY: the record, still to come, settles it.
  const thrown = new Error("the caller's listeners property");
  let sent: unknown = "not sent";
  // A native send, as another thread's: a send of this isolate would settle the select before
  // it returned, before the throw (the select then keeps that outcome).
  const handle = ch.handle;
  const act = (): never => {
    if (sent === "not sent") sent = trySendNatively(handle, 5);
    throw thrown;
  };
  const signal = new AbortController().signal;
  Object.setPrototypeOf(
    signal,
    Object.create(AbortSignal.prototype, { [listenersKey()]: { get: act, set: act } }),
  );
  const outcome = select<string>((s) => s.onReceive(ch, (v) => `got ${v}`), { signal });
  assert.equal(sent, 0, "the accessor's send met the select");
  // Before, the error was reported (an error event nobody handles, which ends the process);
  // then the select rejected with that raw error.
  await assert.rejects(outcome, (e: unknown) => {
    unlistenable("select")(e);
    assert.equal((e as Error).cause, thrown);
    return true;
  });
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }, "the value is back, not lost");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors, [], "nothing reported");
});

/**
 * A signal whose abort listeners the caller's code reaches (`watchListeners`) and calls without
 * aborting it: `during`, each one as the listen puts it in; `callAll()`, those in at that time, and says
 * how many. `abort(reason)` aborts it.
 */
function listenersCalled(
  during: boolean,
): { signal: AbortSignal; callAll(): number; abort(reason: unknown): void } {
  const controller = new AbortController();
  const listeners = watchListeners(
    controller.signal,
    during
      ? (list, length) => {
        if (length > 0) list[length - 1].callback();
      }
      : undefined,
  );
  const callAll = () => {
    const entries = [...listeners.entries()];
    for (const e of entries) e.callback();
    return entries.length;
  };
  return { signal: controller.signal, callAll, abort: (reason) => controller.abort(reason) };
}

Deno.test("a wait whose abort listener the caller's code calls while its signal has not aborted (during the listen, or later) ignores the call: it waits on, and the signal's abort still ends it", async () => {
  using reported = catchReported();
  const d = new CompletableDeferred<number>();
  for (const when of ["during the listen", "later"] as const) {
    for (const which of WAITS) {
      const what = `${which}, ${when}`;
      using ch = new Channel<number>("rendezvous");
      await using ns = NativeScope.create();
      const probe = listenersCalled(when === "during the listen");
      const signal = probe.signal;
      const wait = startWait(which, signal, ch, ns, d);
      if (when === "later") assert.equal(probe.callAll(), 1, `${what}: one listener called`);
      // Before, each rejected with undefined (a delay armed its timer all the same, a channel
      // wait or a select was withdrawn, a join or an await left its handler).
      if (which === "native wait") {
        // No child: it resolves, as with a signal nobody touches.
        assert.equal(await wait, undefined, what);
        await settled(wait); // its listener goes a few microtasks after it resolved
        assert.equal(abortListeners(signal), 0, `${what}: no listener left`);
        continue;
      }
      assert.equal(await settled(wait), false, `${what}: waits on`);
      assert.equal(abortListeners(signal), 1, `${what}: still listening`);
      const reason = new Error(what);
      probe.abort(reason);
      assert.equal(await settled(wait), true, `${what}: settled by the abort`);
      await assert.rejects(wait, (e: unknown) => e === reason, what);
      assert.equal(abortListeners(signal), 0, `${what}: no listener left`);
    }
  }
  d.complete(1);
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a scope, a producer (its watch, its send with a signal of its own), an actor and a task's native scope whose abort listener the caller's code calls while the signal has not aborted ignore the call", async () => {
  using reported = catchReported();
  for (const when of ["during the listen", "later"] as const) {
    const call = (probe: { callAll(): number }, what: string) => {
      if (when === "later") assert.ok(probe.callAll() >= 1, `${what}: a listener called`);
    };
    // createScope: before, the call cancelled it.
    {
      const probe = listenersCalled(when === "during the listen");
      const scope = createScope({ signal: probe.signal });
      call(probe, `createScope, ${when}`);
      assert.equal(scope.job.isActive, true, `createScope, ${when}: still active`);
      const reason = new Error("stop");
      probe.abort(reason);
      assert.equal(scope.job.isCancelled, true, `createScope, ${when}: the abort cancels it`);
      await scope.join();
    }
    // coroutineScope: before, its block's wait was cancelled.
    {
      const probe = listenersCalled(when === "during the listen");
      const gate = Promise.withResolvers<void>();
      const run = coroutineScope(async () => {
        await gate.promise;
        return 5;
      }, { signal: probe.signal });
      call(probe, `coroutineScope, ${when}`);
      gate.resolve();
      assert.equal(await run, 5, `coroutineScope, ${when}`);
    }
    // A producer whose task signal (a scope of the caller's own) is called, and its send with a
    // signal of its own (which listens to the task's too): before, the channel was closed with
    // undefined (a clean end), and the send rejected with undefined.
    {
      const probe = listenersCalled(when === "during the listen");
      const own = listenersCalled(when === "during the listen");
      const got: number[] = [];
      let sent: unknown = "not yet";
      await coroutineScope(async (scope) => {
        using ch = produce<number>(withTaskSignal(scope, probe.signal), async (out) => {
          await out.send(1);
          const p = out.send(2, { signal: own.signal });
          call(own, `a producer's send, ${when}`);
          call(probe, `a producer, ${when}`);
          sent = await p.then(() => "sent", (e) => e);
        });
        for await (const v of ch) got.push(v);
      });
      assert.deepEqual(got, [1, 2], `a producer, ${when}`);
      assert.equal(sent, "sent", `a producer's send, ${when}`);
    }
    // An actor whose task signal (a scope of the caller's own) is called: before, its mailbox
    // was cancelled, and so the actor.
    {
      const probe = listenersCalled(when === "during the listen");
      const got: number[] = [];
      await coroutineScope(async (scope) => {
        const a = actor<number>(withTaskSignal(scope, probe.signal), async (mailbox) => {
          for (let i = 0; i < 2; i++) got.push(await mailbox.receive());
        });
        await a.send(1);
        call(probe, `an actor, ${when}`);
        await a.send(2);
        await a.job.join();
        assert.equal(a.job.isCancelled, false, `an actor, ${when}: not cancelled`);
      });
      assert.deepEqual(got, [1, 2], `an actor, ${when}`);
    }
  }
  // A task's native scope listens to the task's own signal, whose listeners the caller's code
  // can reach as well: before, the call cancelled the native scope, and so the task.
  await coroutineScope((scope) => {
    const ns = nativeScope(scope);
    const record = (scope.signal as unknown as Record<
      symbol,
      { listeners: Record<string, { callback: () => void }[]> }
    >)[listenersKey()];
    const entries = [...record.listeners.abort];
    assert.ok(entries.length >= 1, "the native scope listens");
    for (const e of entries) e.callback();
    assert.equal(ns.isCancelled, false, "the native scope is not cancelled");
    assert.equal(scope.job.isCancelled, false, "nor the task");
  });
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a producer or an actor whose task signal (a scope of the caller's own) cannot be listened to fails its task by name, with the listen's error as the cause", async () => {
  for (const which of ["produce", "start actor"] as const) {
    let ran = false;
    let received: unknown = "not received";
    const run = coroutineScope(async (scope) => {
      const theirs = withTaskSignal(scope, listenThrows());
      if (which === "produce") {
        using ch = produce<number>(theirs, () => {
          ran = true;
        });
        received = await ch.receive().then((v) => v, (e) => e);
      } else {
        actor<number>(theirs, () => {
          ran = true;
        });
      }
    });
    // Before, the task failed with the listen's raw error.
    const named = unlistenable(which);
    await assert.rejects(run, named);
    assert.equal(ran, false, `${which}: its block never ran`);
    if (which === "produce") named(received);
  }
});

Deno.test("a producer's or an actor's block whose start a caller's launch deferred, then threw or returned a Job that completed first (or a kcoro Job cancelled, not completed yet), ends cancelled (its channel closed, its mailbox freed or cancelled) before its task signal is listened to, also one that cannot be listened to", async () => {
  // README: such a task never runs the block and ends cancelled (`onDone` ran first). Its signal
  // is not listened to then: one whose listen throws does not fail it by name instead (the
  // `abandoned` and `ended` checks in src/produce.ts, the `finished` check in src/actor.ts, each
  // before the listen), nor keeps a listener (produce_test: "leaves no abort listener"). A
  // producer whose returned Job completed first ran its block (src/produce.ts, `ended`); an actor
  // whose task names a kcoro Job completed first listened to its signal before it found itself
  // ended (src/actor.ts), so one whose listen throws failed it by name. A kcoro Job cancelled,
  // not completed yet (`CANCELLED_FIRST`, before the listen too): it ran the block, and where its
  // task's signal cannot be listened to failed it by name instead of ending it cancelled.
  await using real = createScope();
  const completed = real.launch(() => {});
  await completed.join();
  const hows = [
    "throws",
    "returns a completed Job",
    "returns a Job, its task naming a completed one",
    "returns a kcoro Job cancelled, not completed yet",
  ];
  for (const how of hows) {
    for (const which of ["produce", "actor"] as const) {
      const what = `${which}, launch ${how}`;
      let deferred: ((task: CoroutineScope) => Promise<void>) | null = null;
      const own = new Error("the caller's launch");
      const hold = new CompletableDeferred<void>(); // keeps the cancelled kcoro Job completing
      let kcoroJob: Job | null = null;
      const scope = {
        context: Context.empty,
        launch: (block: (task: CoroutineScope) => Promise<void>) => {
          deferred = block; // started later
          if (how === "throws") throw own;
          if (how === "returns a kcoro Job cancelled, not completed yet") {
            return kcoroJob = real.launch(() => hold.await());
          }
          const live = how !== "returns a completed Job";
          const job = {
            state: "active",
            isCompleted: false,
            start: () => false,
            cancel() {},
            invokeOnCompletion(handler: (cause?: unknown) => void) {
              if (!live) handler(); // completed already: the producer or the actor ends at once
              return { [Symbol.dispose]() {} };
            },
          };
          return job;
        },
      } as unknown as CoroutineScope;
      let ran = false;
      const done: unknown[] = [];
      const start = () => {
        if (which === "produce") {
          produce<number>(scope, () => {
            ran = true;
          });
        } else {
          actor<number>(scope, () => {
            ran = true;
          }, { onDone: (cause) => done.push(cause) });
        }
      };
      if (how === "throws") assert.throws(start, (e) => e === own, what);
      else start();
      const cancel = new CancellationError(`cancelled: ${what}`);
      (kcoroJob as Job | null)?.cancel(cancel);
      // A task naming a kcoro Job completed first: the first of the two to complete ends it.
      const named = how === "returns a Job, its task naming a completed one" ? completed : null;
      const task = { job: named, context: Context.empty, signal: listenThrows() };
      try {
        const ended = await deferred!(task as unknown as CoroutineScope).then(
          () => "fulfilled",
          (e) => e,
        );
        assert.ok(ended instanceof CancellationError, `${what}: ${String(ended)}`);
        assert.equal(ran, false, `${what}: its block never ran`);
      } finally {
        hold.complete(); // also where an assertion failed: the real scope ends
      }
      await (kcoroJob as Job | null)?.join();
      if (which === "actor") {
        const expected = how === "throws" ? own : kcoroJob !== null ? cancel : undefined;
        assert.deepEqual(done, [expected], `${what}: onDone ran once`);
      }
    }
  }
});

Deno.test("aborting many waits on one signal removes no listener from the aborted signal: the abort does work linear in the waits", async () => {
  // Each wait an abort settled removed its listener (`unlistenAbort`), which the abort's dispatch
  // had dropped already (`once`): a scan of the signal's list of the waits still listening, so
  // aborting N waits on one signal took N^2/2 steps (20,000 receives: over a second inside
  // `abort()`). Counted, not timed: in a child, whose EventTarget.prototype.removeEventListener
  // counts its calls on an aborted signal before kcoro captures it (src/errors.ts).
  const res = await evalScript(`
    const real = EventTarget.prototype.removeEventListener;
    const aborted = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "aborted").get;
    let onAborted = 0;
    EventTarget.prototype.removeEventListener = function (...args) {
      if (this instanceof AbortSignal && aborted.call(this)) onAborted++;
      return real.apply(this, args);
    };
    const { Channel, delay, select } = await import("./mod.ts");
    const ac = new AbortController();
    const signal = ac.signal;
    const waits = [];
    for (const shared of [false, true]) {
      const a = new Channel(0), b = new Channel(0);
      if (shared) { a.share(); b.share(); }
      for (let i = 0; i < 50; i++) {
        waits.push(a.receive({ signal }), b.send(i, { signal }), a.values({ signal }).next());
        waits.push(select((s) => { s.onReceive(a, (v) => v); s.onSend(b, i, () => i); }, { signal }));
      }
    }
    waits.push(delay(1e6, { signal }));
    await delay(0); // the channels' waits queued natively too
    ac.abort("stop");
    const outcomes = await Promise.allSettled(waits);
    const rejected = outcomes.filter((o) => o.status === "rejected" && o.reason === "stop").length;
    console.log(JSON.stringify({ waits: waits.length, rejected, onAborted }));
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), { waits: 401, rejected: 401, onAborted: 0 });
});

Deno.test('an "abort" Event dispatched on a signal that has not aborted leaves its waits listening: the real abort later settles each', async () => {
  // Each wait listened with `once`, so the caller's `signal.dispatchEvent(new Event("abort"))`
  // called its listener (which changes nothing while the signal has not aborted) and the engine
  // dropped it: the wait kept no listener, and the real abort left it pending for ever.
  for (const shared of [false, true]) {
    const ac = new AbortController();
    const signal = ac.signal;
    using a = new Channel<number>(0), b = new Channel<number>(0), c = new Channel<number>(0);
    if (shared) { for (const ch of [a, b, c]) ch.share(); }
    const waits = {
      receive: a.receive({ signal }),
      receiveCatching: a.receiveCatching({ signal }),
      send: b.send(1, { signal }),
      next: a.values({ signal }).next(),
      select: select((s) => {
        s.onReceive(c, (v) => v);
        s.onSend(c, 2, () => 2);
      }, { signal }),
      delay: delay(1e9, { signal }),
      withTimeout: withTimeout(1e9, (s) => untilAborted(s.signal), { signal }),
      coroutineScope: coroutineScope((scope) => untilAborted(scope.signal), { signal }),
    };
    for (const w of Object.values(waits)) w.catch(() => {});
    for (const [name, w] of Object.entries(waits)) assert.equal(await settled(w), false, name);
    signal.dispatchEvent(new Event("abort")); // no abort: the signal has not aborted
    for (const [name, w] of Object.entries(waits)) assert.equal(await settled(w), false, name);
    ac.abort("stop");
    for (const [name, w] of Object.entries(waits)) {
      // A scope's signal cancels it: a CancellationError carrying the reason.
      const byReason = (e: unknown) =>
        e === "stop" || (e instanceof CancellationError && e.cause === "stop");
      // Bounded: before, none of them settled (a failure, not a hang of the file).
      await assert.rejects(within(w, 10_000, name), byReason, `${name}, shared ${shared}`);
    }
    assert.equal(abortListeners(signal), 0);
  }
});

Deno.test('every entry point given a signal, and a producer and an actor following their task\'s, still hears the real abort after an "abort" Event that is no abort', async () => {
  // Each listener listens with `once`: the caller's `signal.dispatchEvent(new Event("abort"))`
  // calls it and the engine drops it, so each must listen again itself (`abortHeard`): one that
  // did not kept no listener, and the real abort left it waiting (a join, a Deferred's await, a
  // producer's send, a native scope's wait, a drain) or running (a producer's channel open, an
  // actor's mailbox taking messages).
  using reported = catchReported();
  for (const entry of ENTRIES) {
    const ac = new AbortController();
    const waiting = entry.waits(ac.signal);
    waiting.catch(() => {}); // asserted below
    assert.equal(await settled(waiting), false, `${entry.name}: waits`);
    ac.signal.dispatchEvent(new Event("abort"));
    assert.equal(await settled(waiting), false, `${entry.name}: no abort, waits on`);
    const reason = new Error(`stop ${entry.name}`);
    ac.abort(reason);
    await assert.rejects(within(waiting, 10_000, entry.name), byReason(reason), entry.name);
    assert.equal(abortListeners(ac.signal), 0, `${entry.name}: no listener left`);
  }
  {
    // A producer's channel closes with the reason.
    const ac = new AbortController();
    const reason = new Error("stop producer");
    await coroutineScope(async (scope) => {
      const release = Promise.withResolvers<void>();
      try {
        using ch = produce<number>(withTaskSignal(scope, ac.signal), () => release.promise);
        const wait = ch.receive();
        wait.catch(() => {}); // asserted below
        ac.signal.dispatchEvent(new Event("abort"));
        assert.equal(await settled(wait), false, "producer: no abort, its channel open");
        ac.abort(reason);
        const got = await within(wait.then(() => "received", (e) => e), 10_000, "producer");
        assert.equal(got, reason, "producer");
      } finally {
        release.resolve();
      }
    });
    assert.equal(abortListeners(ac.signal), 0, "producer: no listener left");
  }
  {
    // An actor's mailbox is cancelled: its handler's receive fails, the actor ends cancelled.
    const ac = new AbortController();
    let ended: unknown = "still waiting";
    await coroutineScope(async (scope) => {
      const a = actor<number>(withTaskSignal(scope, ac.signal), async (mailbox) => {
        try {
          for (;;) await mailbox.receive();
        } catch (e) {
          ended = e;
        }
      });
      ac.signal.dispatchEvent(new Event("abort"));
      await a.send(1); // no abort: the mailbox takes it
      assert.equal(await settled(a.job.join()), false, "actor: no abort, runs on");
      ac.abort(new Error("stop actor"));
      await within(a.job.join(), 10_000, "actor");
      assert.equal(a.job.isCancelled, true, "actor: ends cancelled");
    });
    assert.ok(ended instanceof CancellationError, `actor, the receive: ${String(ended)}`);
    assert.equal(abortListeners(ac.signal), 0, "actor: no listener left");
  }
  assert.deepEqual(reported.errors, [], "nothing reported");
});

Deno.test("a long-lived signal keeps no listener after 10,000 settled waits, each of which a dispatched fake abort (no abort) made listen again", async () => {
  // Each listener listens again itself when a dispatched "abort" Event is no abort (`abortHeard`):
  // one re-added after its wait settled, or twice, would stay on the signal, one per wait. Each
  // round's waits park (a receive, a select, a scope's join, a send; a delay in the first 100
  // rounds: a timer each), hear the event, then settle by their partner or their end.
  const signal = new AbortController().signal;
  using rv = new Channel<number>("rendezvous");
  using buf = new Channel<number>(1);
  using other = new Channel<number>(1);
  using gate = new Channel<number>(1);
  for (let round = 0; round < 10_000; round++) {
    const received = rv.receive({ signal });
    const selected = select<number>((s) => {
      s.onReceive(buf, (v) => v);
      s.onReceive(other, (v) => v);
    }, { signal });
    const scoped = coroutineScope(() => gate.receive(), { signal });
    const slept = round < 100 ? delay(1, { signal }) : Promise.resolve();
    for (const w of [received, selected, scoped, slept]) w.catch(() => {}); // asserted below
    const listening = round < 100 ? 4 : 3;
    assert.equal(abortListeners(signal), listening, `round ${round}: the waits listen`);
    signal.dispatchEvent(new Event("abort"));
    assert.equal(abortListeners(signal), listening, `round ${round}: each listens again`);
    buf.trySend(round);
    gate.trySend(round);
    const sent = rv.send(round, { signal });
    assert.deepEqual(
      await within(
        Promise.all([received, selected, scoped, slept, sent]),
        10_000,
        `round ${round}`,
      ),
      [round, round, round, undefined, undefined],
    );
  }
  assert.equal(abortListeners(signal), 0, "none left");
});

Deno.test("a listener of the caller's that stops an \"abort\" Event that is no abort before a wait's leaves the wait listening: the real abort settles it", async () => {
  // The engine drops a `once` listener only as it calls it: one the event never reached stays
  // in, and is not added twice (README: the real abort, so stopped, would leave the wait pending).
  const ac = new AbortController();
  const signal = ac.signal;
  signal.addEventListener("abort", (e) => {
    if (!e.isTrusted) e.stopImmediatePropagation();
  });
  using ch = new Channel<number>("rendezvous");
  const received = ch.receive({ signal });
  const slept = delay(1e9, { signal });
  const waits: Promise<unknown>[] = [received, slept];
  for (const w of waits) w.catch(() => {}); // asserted below
  assert.equal(abortListeners(signal), 3);
  signal.dispatchEvent(new Event("abort"));
  assert.equal(abortListeners(signal), 3, "ours, not reached, stay in");
  assert.equal(await settled(received), false);
  ac.abort("stop");
  for (const w of waits) {
    await assert.rejects(within(w, 10_000, "the wait"), (e) => e === "stop");
  }
});

Deno.test("a wait's abort listener that the caller's code calls after the wait settled listens to nothing: the long-lived signal keeps none", async () => {
  // The caller's code can reach kcoro's listeners through the engine's listeners property and
  // call one at any time. Called while its signal has not aborted it changes nothing; before, one
  // called after its wait settled took itself for one a fake "abort" Event had dropped and
  // listened again (`abortHeard`): it stayed on the signal, holding its wait, until the signal
  // aborted, one per such call.
  const signal = new AbortController().signal;
  const key = listenersKey();
  type Listeners = { listeners?: { abort?: { callback: unknown }[] } };
  const listening = () =>
    ((signal as unknown as Record<symbol, Listeners>)[key]?.listeners?.abort ?? []).map((l) =>
      l.callback as (event?: unknown) => void
    );
  const callAll = (listeners: Iterable<(event?: unknown) => void>, what: string) => {
    for (const listener of listeners) {
      listener();
      listener(new Event("abort")); // an Event, not the engine's dispatch of it on the signal
    }
    assert.equal(abortListeners(signal), 0, `${what}: none listening`);
  };
  // Waits that park: each one's listener taken while it waits.
  using rv = new Channel<number>("rendezvous");
  using buf = new Channel<number>(1);
  using gate = new Channel<number>(1);
  const parked: [string, () => Promise<unknown>, () => unknown, unknown][] = [
    ["receive", () => rv.receive({ signal }), () => rv.trySend(1), 1],
    ["send", () => rv.send(2, { signal }), () => rv.tryReceive(), undefined],
    [
      "select",
      () => select((s) => s.onReceive(buf, (v) => v), { signal }),
      () => buf.trySend(3),
      3,
    ],
    [
      "coroutineScope",
      () => coroutineScope(() => gate.receive(), { signal }),
      () => gate.trySend(4),
      4,
    ],
  ];
  for (const [what, wait, settle, value] of parked) {
    const waiting = wait();
    const listeners = listening();
    assert.equal(listeners.length, 1, `${what}: listens`);
    settle();
    assert.deepEqual(await within(waiting, 10_000, what), value, what);
    assert.equal(abortListeners(signal), 0, `${what}: none left as it settled`);
    callAll(listeners, what);
  }
  // Every entry point: what its listeners are seen while it runs (microtask by microtask).
  for (const entry of ENTRIES) {
    const seen = new Set<(event?: unknown) => void>();
    let done = false;
    const completing = entry.completes(signal).finally(() => done = true);
    while (!done) {
      // Microtasks first (a listener may live only that long), then a turn for the timers.
      for (let i = 0; i < 10 && !done; i++) {
        for (const listener of listening()) seen.add(listener);
        await null;
      }
      if (!done) await new Promise((r) => setTimeout(r, 0));
    }
    assert.deepEqual(await completing, entry.value, entry.name);
    assert.equal(abortListeners(signal), 0, `${entry.name}: none left as it settled`);
    callAll(seen, entry.name);
  }
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("a scope whose signal aborts while it is being listened to is cancelled by JobSupport's own cancel, not one a caller redefined on a job's prototype", async () => {
  // The follow's cancel for a signal that aborted during its listen (scope.ts `follow`, after
  // the listen): before, `this.cancel(...)`, the prototype's at that call, whose throw came out
  // of createScope and rejected coroutineScope with it.
  const reason = new Error("aborted while listened to");
  const { value, calls } = await withJobMembersRedefined(["cancel"], async () => {
    const scope = createScope({ signal: abortsWhileListening(reason) });
    const ran: string[] = [];
    await assert.rejects(
      coroutineScope(() => void ran.push("block"), { signal: abortsWhileListening(reason) }),
      (e: unknown) => e instanceof CancellationError && e.cause === reason,
    );
    return { scope: jobStateOf(scope as unknown as JobSupport<unknown>), ran };
  });
  assert.deepEqual(calls, []);
  assert.equal(value.scope, "cancelled");
  assert.deepEqual(value.ran, []);
});

Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

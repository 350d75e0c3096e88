// select() through the TypeScript API: DESIGN.md section 5's select rules one per test,
// fairness, at most one clause firing, a seeded stress mixed with plain sends and receives,
// abort signals and timeouts.
import assert from "node:assert/strict";
import {
  assertSameItems,
  assertThrowsOnFakes,
  callersJob,
  catchReported,
  endAndAbort,
  evalScript,
  JOB_MEMBERS,
  jobArmedAfter,
  jobSendingAsArmed,
  prng,
  PROXY_REPORTED,
  revokedProxyReports,
  settled,
  shutdownScheduler,
  spyCalls,
  trySendNatively,
  until,
  untypedNative,
  within,
  withJobMembersRedefined,
} from "./support.ts";
import {
  actor,
  CancellationError,
  Channel,
  ClosedReceiveError,
  ClosedSendError,
  CodecError,
  codecs,
  CompletableDeferred,
  coroutineScope,
  createScope,
  library,
  runtime,
  select,
  type SelectBuilder,
} from "../mod.ts";
import { librarySymbols } from "../ffi/load.ts";
import { Bridge } from "../src/bridge.ts";
import { _ENDED_HANDLE, _testRefusalFault, selectHandleOf, sharedStateOf } from "../src/channel.ts";

const pending = () => Bridge.of(library()).pending;

Deno.test("a select builder's clause list, channel count and sealed flag are not reachable from its block: `s.sealed = false` let a clause in after the select was built, `s.clauses.push(null)` threw the engine's TypeError from inside select", async () => {
  using ch = new Channel<number>(2);
  await ch.send(1);
  await ch.send(2);
  let kept: SelectBuilder<number> | undefined;
  const got = await within(
    select<number>((s) => {
      for (const m of ["clauses", "channels", "sealed"]) assert.equal(m in s, false, m);
      s.onReceive(ch, (v) => v);
      // Now own properties that nothing reads.
      const o = s as unknown as Record<string, unknown>;
      o.channels = -5;
      o.clauses = [];
      kept = s;
    }),
    5_000,
    "the select",
  );
  assert.equal(got, 1);
  // Built: a late clause is refused, whatever the block set.
  (kept as unknown as Record<string, unknown>).sealed = false;
  assert.throws(() => kept!.onReceive(ch, (v) => v), /the select was built already/);
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 2 });
});

Deno.test("an async builder that awaits before its first clause: the select rejects saying so, and the late clause's TypeError does not end the process", async () => {
  // Its clause came after the select was built: the select rejected saying no clause was
  // added ("received none"), and the late onReceive's TypeError rejected the builder's promise,
  // which nobody awaited: an unhandled rejection, which ends a Deno process (here, the test).
  using ch = new Channel<number>(1);
  ch.trySend(1);
  const late = new CompletableDeferred<unknown>();
  await assert.rejects(
    select<number>(async (s) => {
      await null;
      try {
        s.onReceive(ch, (v) => v);
      } catch (e) {
        late.complete(e);
        throw e;
      }
    }),
    {
      name: "TypeError",
      message: "Cannot select: build must add its clauses before it returns (an async " +
        "builder's clauses after its first await come too late), received a promise and no clause",
    },
  );
  assert.match(String(await late.await()), /the select was built already/);
  await new Promise((r) => setTimeout(r, 0)); // an unhandled rejection would surface by now
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }); // the late clause took nothing
  // A builder that adds its clauses first and only then awaits still selects, as before; one
  // returning something else, or nothing, and adding none is the plain error.
  assert.equal(
    await select<number>(async (s) => {
      s.onTimeout(0, () => 7);
      await null;
    }),
    7,
  );
  await assert.rejects(select(() => 5 as never), /a select needs at least one clause/);
  const badThen = {
    get then() {
      throw new Error("then");
    },
  };
  await assert.rejects(select(() => badThen as never), /a select needs at least one clause/);
});

Deno.test("an async builder that adds a clause after an await, having added others before: the select, still waiting, rejects with the late clause's TypeError, its clauses withdrawn; once a clause won, the late one's error does not end the process", async () => {
  // The builder's promise rejected with the late clause's "built already", which nobody awaited
  // (only a select with no clause at all handled it): an unhandled rejection, which ends a Deno
  // process (here, the test) while the select waited on, or had resolved with, its first clause.
  using reported = catchReported();
  for (const shared of [false, true]) {
    for (const queued of [false, true]) {
      const label = `${shared ? "shared" : "local"}, ${queued ? "queued natively" : "at once"}`;
      using ch = new Channel<number>(1);
      using other = new Channel<number>(1);
      if (shared) ch.share();
      const before = pending();
      const waited = select<number>(async (s) => {
        s.onReceive(ch, (v) => v);
        // A macrotask: the select's channel clause queues natively meanwhile (shared).
        if (queued) await new Promise((r) => setTimeout(r, 0));
        else await null;
        if (shared && queued) assert.ok(pending() > before, `${label}: queued natively`);
        s.onReceive(other, (v) => v + 100);
      });
      await assert.rejects(waited, {
        name: "TypeError",
        message: /Cannot add onReceive clause: the select was built already/,
      }, label);
      // Withdrawn: the next value is the channel's, not a rejected select's.
      assert.deepEqual(ch.trySend(1), { state: "ok" }, label);
      assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, label);
      // Ready at once: the select resolves, and the late clause's rejection is dropped.
      ch.trySend(2);
      assert.equal(
        await select<number>(async (s) => {
          s.onReceive(ch, (v) => v);
          await null;
          s.onReceive(other, (v) => v + 100);
        }),
        2,
        label,
      );
    }
  }
  // Failing after its await for a reason of its own, or none, rejects the waiting select too.
  using idle = new Channel<number>(1);
  await assert.rejects(
    select<number>(async (s) => {
      s.onReceive(idle, (v) => v);
      await null;
      throw new Error("builder failed");
    }),
    /builder failed/,
  );
  await assert.rejects(
    select<number>(async (s) => {
      s.onReceive(idle, (v) => v);
      await null;
      throw undefined;
    }),
    { name: "TypeError", message: /build's promise rejected with no reason, received undefined/ },
  );
  // A signal aborted already: the select rejects with its reason, the late clause's error handled.
  await assert.rejects(
    select<number>(async (s) => {
      s.onReceive(idle, (v) => v);
      await null;
      s.onReceive(idle, (v) => v);
    }, { signal: AbortSignal.abort(new Error("gone")) }),
    /gone/,
  );
  await new Promise((r) => setTimeout(r, 0)); // an unhandled rejection would surface by now
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  idle[Symbol.dispose]();
  assert.deepEqual(reported.errors.map(String), []);
});

Deno.test("bad arguments reject with TypeError/RangeError naming what was received", async () => {
  await assert.rejects(select(() => {}), {
    name: "TypeError",
    message: "Cannot select: a select needs at least one clause, received none",
  });
  await assert.rejects(select(5 as never), /build must be a function, received 5/);
  await assert.rejects(
    select((s) => s.onReceive({} as never, () => 1)),
    /Cannot add onReceive clause: expected a Channel, received \[object Object\]/,
  );
  // An actor is no Channel (README says so; Kotlin's is a SendChannel): refused by name.
  const scope = createScope();
  const mailbox = actor<number>(scope, async (m) => {
    for await (const _ of m);
  });
  await assert.rejects(select((s) => s.onSend(mailbox as never, 1, () => 1)), {
    name: "TypeError",
    message: "Cannot add onSend clause: expected a Channel, received an Actor",
  });
  scope.cancel();
  await scope.join();
  using ch = new Channel<number>(1);
  await assert.rejects(
    select((s) => s.onSend(ch, 1, "no" as never)),
    /the handler must be a function, received "no"/,
  );
  await assert.rejects(select((s) => s.onTimeout("1" as never, () => 1)), {
    name: "TypeError",
    message: 'Cannot add onTimeout clause: ms must be a number of milliseconds, received "1"',
  });
  // NaN is a number out of range, as delay's and withTimeout's (it was a TypeError).
  await assert.rejects(select((s) => s.onTimeout(NaN, () => 1)), {
    name: "RangeError",
    message: "Cannot add onTimeout clause: ms must be a number of milliseconds, received NaN",
  });
  await assert.rejects(select((s) => s.onJoin(ch as never, () => 1)), /expected a Job/);
  await assert.rejects(
    select((s) => {
      for (let i = 0; i < 17; i++) s.onReceive(ch, () => i);
    }),
    {
      name: "RangeError",
      message:
        "Cannot add onReceive clause: a select takes at most 16 channel clauses, received 17",
    },
  );
  // A failed build sent nothing.
  await assert.rejects(
    select((s) => {
      s.onSend(ch, 1, () => 1);
      throw new Error("build failed");
    }),
    /build failed/,
  );
  assert.deepEqual(ch.tryReceive(), { state: "empty" });
});

Deno.test("biased: the first ready clause in clause order fires, the others stay untouched", async () => {
  using a = new Channel<number>(4);
  using b = new Channel<number>(4);
  using c = new Channel<number>(4);
  b.trySend(20);
  c.trySend(30);
  for (let i = 0; i < 20; i++) {
    const got = await select<string>((s) => {
      s.onReceive(a, (v) => `a${v}`);
      s.onReceive(b, (v) => `b${v}`);
      s.onReceive(c, (v) => `c${v}`);
    });
    assert.equal(got, "b20");
    b.trySend(20);
  }
  assert.deepEqual(c.tryReceive(), { state: "ok", value: 30 });
  assert.deepEqual(b.tryReceive(), { state: "ok", value: 20 });
  assert.deepEqual(b.tryReceive(), { state: "empty" });
});

Deno.test("unbiased: a completed deferred is drawn among ready channel clauses, each within 10 sigma of a third; an immediate default among them never fires", async () => {
  // The clauses are shuffled before the JavaScript-side ones are looked at: a ready onAwait
  // competes with the ready channel clauses (neither always first), and onTimeout(0), a default,
  // fires only when none of them is ready, wherever the shuffle put it. Biased, clause order wins.
  using a = new Channel<number>(1, { codec: codecs.f64 });
  using b = new Channel<number>(1, { codec: codecs.f64 });
  const done = new CompletableDeferred<number>();
  done.complete(3);
  a.trySend(1);
  b.trySend(2);
  const n = 900;
  const wins = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const won = await select<string>((s) => {
      s.onTimeout(0, () => "default");
      s.onReceive(a, () => "a");
      s.onAwait(done, () => "deferred");
      s.onReceive(b, () => "b");
    }, { unbiased: true });
    wins.set(won, (wins.get(won) ?? 0) + 1);
    if (won === "a") a.trySend(1);
    else if (won === "b") b.trySend(2);
  }
  assert.equal(wins.get("default"), undefined, `the default fired: ${[...wins]}`);
  const sigma = Math.sqrt(n * (1 / 3) * (2 / 3));
  for (const clause of ["a", "b", "deferred"]) {
    const k = wins.get(clause) ?? 0;
    assert.ok(Math.abs(k - n / 3) < 10 * sigma, `${clause} fired ${k} of ${n}: ${[...wins]}`);
  }
  // Biased: the first ready clause in order, the deferred before the channel or after it.
  assert.equal(
    await select<string>((s) => {
      s.onAwait(done, () => "deferred");
      s.onReceive(a, () => "a");
    }),
    "deferred",
  );
  assert.equal(
    await select<string>((s) => {
      s.onTimeout(0, () => "default");
      s.onReceive(a, () => "a");
      s.onAwait(done, () => "deferred");
    }),
    "a",
  );
  assert.deepEqual(a.tryReceive(), { state: "empty" }); // taken by the clause that fired
  assert.deepEqual(b.tryReceive(), { state: "ok", value: 2 });
});

Deno.test("unbiased: two always-ready clauses each fire within 10 sigma of half", async () => {
  using a = new Channel<number>(1, { codec: codecs.f64 });
  using b = new Channel<number>(1, { codec: codecs.f64 });
  a.trySend(1);
  b.trySend(2);
  const n = 2000;
  let first = 0;
  for (let i = 0; i < n; i++) {
    const v = await select<number>((s) => {
      s.onReceive(a, (v) => v);
      s.onReceive(b, (v) => v);
    }, { unbiased: true });
    if (v === 1) {
      first++;
      a.trySend(1);
    } else b.trySend(2);
  }
  const sigma = Math.sqrt(n) / 2;
  assert.ok(Math.abs(first - n / 2) < 10 * sigma, `a fired ${first} of ${n}`);
  // Biased, the same setup always takes the first.
  for (let i = 0; i < 50; i++) {
    assert.equal(
      await select<number>((s) => {
        s.onReceive(a, (v) => v);
        s.onReceive(b, (v) => v);
      }),
      1,
    );
    a.trySend(1);
  }
});

Deno.test("onTimeout(0) is an immediate default: it fires only when nothing else is ready", async () => {
  using ch = new Channel<number>(1);
  // Nothing ready: the default fires at once, and nothing stays queued.
  assert.equal(
    await select<string>((s) => {
      s.onTimeout(0, () => "default");
      s.onReceive(ch, () => "recv");
    }),
    "default",
  );
  assert.equal(pending(), 0);
  assert.deepEqual(ch.trySend(5), { state: "ok" }); // no select receiver took it
  // Ready: the channel clause wins even though the default is listed first.
  assert.equal(
    await select<string>((s) => {
      s.onTimeout(-1, () => "default");
      s.onReceive(ch, (v) => `recv ${v}`);
    }),
    "recv 5",
  );
  // A full channel: onSend is not ready, the default fires and the value is not sent.
  ch.trySend(1);
  assert.equal(
    await select<string>((s) => {
      s.onSend(ch, 2, () => "sent");
      s.onTimeout(0, () => "default");
    }),
    "default",
  );
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 });
  assert.deepEqual(ch.tryReceive(), { state: "empty" });
});

Deno.test("onTimeout(ms) fires after ms when nothing is ready, and withdraws the channel clauses", async () => {
  using ch = new Channel<number>();
  const t0 = performance.now();
  const got = await select<string>((s) => {
    s.onReceive(ch, () => "recv");
    s.onTimeout(30, () => "late");
    s.onTimeout(20, () => "timeout");
  });
  const ms = performance.now() - t0;
  assert.equal(got, "timeout");
  assert.ok(ms >= 19, `fired after ${ms} ms`);
  assert.equal(pending(), 0);
  assert.deepEqual(ch.trySend(1), { state: "full" }); // the select's receiver is gone
  // A clause that becomes ready first wins; the timer is cleared.
  const s = select<string>((s) => {
    s.onReceive(ch, (v) => `recv ${v}`);
    s.onTimeout(10_000, () => "timeout");
  });
  await ch.send(7);
  assert.equal(await s, "recv 7");
});

Deno.test("onTimeout past setTimeout's largest delay (2^31 ms, Infinity) does not fire early", async () => {
  for (const ms of [2 ** 31, 30 * 24 * 3600 * 1000, Infinity]) {
    using ch = new Channel<number>(1);
    const s = select<string>((s) => {
      s.onReceive(ch, (v) => `recv ${v}`);
      s.onTimeout(ms, () => "timeout");
    });
    // A timer setTimeout clamped to 1 ms would fire before this one.
    setTimeout(() => ch.trySend(1), 10);
    assert.equal(await s, "recv 1", `onTimeout(${ms})`);
  }
});

Deno.test("onReceive on a closed channel rejects; onReceiveCatching fires with the closed result", async () => {
  using a = new Channel<number>(2);
  a.trySend(1);
  a.close();
  // Buffered values stay receivable through select.
  assert.equal(await select<number>((s) => s.onReceive(a, (v) => v)), 1);
  await assert.rejects(select((s) => s.onReceive(a, () => 0)), ClosedReceiveError);
  assert.deepEqual(
    await select<unknown>((s) => s.onReceiveCatching(a, (r) => r)),
    { state: "closed" },
  );
  using b = new Channel<number>();
  const cause = new Error("done");
  b.close(cause);
  await assert.rejects(select((s) => s.onReceive(b, () => 0)), (e) => e === cause);
  assert.deepEqual(
    await select<unknown>((s) => s.onReceiveCatching(b, (r) => r)),
    { state: "closed", cause },
  );
  // Closed while the select waits.
  using c = new Channel<number>();
  const waiting = select((s) => s.onReceive(c, () => 0));
  const catching = select<unknown>((s) => s.onReceiveCatching(c, (r) => r));
  assert.equal(await settled(waiting), false);
  c.close();
  await assert.rejects(waiting, ClosedReceiveError);
  assert.deepEqual(await catching, { state: "closed" });
  // Cancelled while waiting: CancellationError.
  using d = new Channel<number>();
  const cancelled = select((s) => s.onReceive(d, () => 0));
  assert.equal(await settled(cancelled), false);
  d.cancel();
  await assert.rejects(cancelled, CancellationError);
  assert.equal(pending(), 0);
});

Deno.test("a cancel(cause) with a CancellationError fails select clauses with that very error", async () => {
  const why = new CancellationError("consumer left");
  using waited = new Channel<number>();
  using full = new Channel<number>(1);
  full.trySend(0);
  // Waiting when cancelled: a receive clause, and a send clause on a full channel.
  const receiving = select((s) => s.onReceive(waited, () => 0)).catch((e) => e);
  const sending = select((s) => s.onSend(full, 1, () => 0)).catch((e) => e);
  assert.equal(await settled(receiving), false);
  assert.equal(await settled(sending), false);
  waited.cancel(why);
  full.cancel(why);
  assert.equal(await receiving, why);
  assert.equal(await sending, why);
  // A clause on the channel cancelled already, shared or local, fails at once with it too.
  using local = new Channel<number>();
  local.cancel(why);
  for (const ch of [waited, full, local]) {
    await assert.rejects(select((s) => s.onReceive(ch, () => 0)), (e) => e === why);
    await assert.rejects(select((s) => s.onSend(ch, 2, () => 0)), (e) => e === why);
    assert.deepEqual(
      await select<unknown>((s) => s.onReceiveCatching(ch, (r) => r)),
      { state: "closed", cause: why },
    );
  }
});

Deno.test("onSend to a closed channel rejects and sends nothing anywhere", async () => {
  using closed = new Channel<number>(1);
  closed.close();
  await assert.rejects(select((s) => s.onSend(closed, 1, () => 0)), ClosedSendError);
  const cause = new Error("shut");
  using withCause = new Channel<number>(1);
  withCause.close(cause);
  await assert.rejects(select((s) => s.onSend(withCause, 1, () => 0)), (e) => e === cause);
  // Closed while waiting: rejects; the other clause's value was not sent.
  using full = new Channel<number>(1);
  using other = new Channel<number>();
  full.trySend(0);
  const waiting = select((s) => {
    s.onSend(full, 1, () => "full");
    s.onSend(other, 2, () => "other");
  });
  assert.equal(await settled(waiting), false);
  full.close();
  // A sender already waiting when close happens still delivers (section 5): a receiver makes
  // room, the select's value moves into the buffer, its clause fires.
  assert.deepEqual(full.tryReceive(), { state: "ok", value: 0 });
  assert.equal(await waiting, "full");
  assert.deepEqual(full.tryReceive(), { state: "ok", value: 1 });
  assert.deepEqual(full.tryReceive(), { state: "closed" });
  assert.deepEqual(other.tryReceive(), { state: "empty" });
});

Deno.test("a failed clause never corrupts the other queues", async () => {
  using a = new Channel<number>();
  using b = new Channel<number>();
  using c = new Channel<number>(1);
  // Waiting on three channels; `a` is closed: the select rejects, b and c keep no stale waiter.
  c.trySend(1);
  const waiting = select((s) => {
    s.onReceive(b, () => "b");
    s.onReceive(a, () => "a");
    s.onSend(c, 9, () => "c"); // not ready: c is full
  });
  assert.equal(await settled(waiting), false);
  a.close();
  await assert.rejects(waiting, ClosedReceiveError);
  assert.deepEqual(b.trySend(1), { state: "full" }); // no receiver left on b
  assert.deepEqual(c.tryReceive(), { state: "ok", value: 1 });
  assert.deepEqual(c.tryReceive(), { state: "empty" }); // 9 was never sent
  // b and c still work with ordinary waits.
  const r = b.receive();
  await b.send(4);
  assert.equal(await r, 4);
  assert.equal(pending(), 0);
});

Deno.test("at most one clause fires, even when every clause becomes ready in the same turn", async () => {
  for (let round = 0; round < 50; round++) {
    using a = new Channel<number>();
    using b = new Channel<number>();
    using c = new Channel<number>(1);
    c.trySend(0); // c full: onSend(c) waits for room
    const fired: string[] = [];
    const waiting = select<string>((s) => {
      s.onReceive(a, (v) => (fired.push(`a${v}`), "a"));
      s.onReceive(b, (v) => (fired.push(`b${v}`), "b"));
      s.onSend(c, 1, () => (fired.push("c"), "c"));
    });
    assert.equal(await settled(waiting), false);
    // Three partners at once: exactly one of them finds the select.
    const results = [a.trySend(1).state, b.trySend(2).state, c.tryReceive().state];
    const winner = await waiting;
    assert.deepEqual(fired, [winner === "c" ? "c" : `${winner}${winner === "a" ? 1 : 2}`]);
    assert.equal(winner, "a"); // a's trySend ran first and found the select waiting
    assert.deepEqual(results, ["ok", "full", "ok"]);
    assert.deepEqual(c.tryReceive(), { state: "empty" }); // the select did not send 1
  }
  assert.equal(pending(), 0);
});

Deno.test("select meets plain waits of the same isolate, both ways", async () => {
  using ch = new Channel<string>();
  // A plain receive waits; a select's send finds it.
  const r = ch.receive();
  assert.equal(await select<string>((s) => s.onSend(ch, "to receive", () => "sent")), "sent");
  assert.equal(await r, "to receive");
  // A plain send waits; a select's receive takes its value.
  const sent = ch.send("from send");
  assert.equal(await select<string>((s) => s.onReceive(ch, (v) => v)), "from send");
  await sent;
  // A select waits; plain operations complete it.
  const sel = select<string>((s) => s.onReceive(ch, (v) => `got ${v}`));
  await ch.send("x");
  assert.equal(await sel, "got x");
  const sel2 = select<string>((s) => s.onSend(ch, "y", () => "done"));
  assert.equal(await ch.receive(), "y");
  assert.equal(await sel2, "done");
  // Two selects meet each other.
  const rx = select<string>((s) => s.onReceive(ch, (v) => v));
  const tx = select<string>((s) => s.onSend(ch, "z", () => "ok"));
  assert.deepEqual([await rx, await tx], ["z", "ok"]);
  assert.equal(pending(), 0);
});

Deno.test("abort signals: reject with the reason, leave every channel intact, never deliver; each onSend value to its channel's hook", async () => {
  using a = new Channel<string>();
  const hookedB: string[] = [];
  using b = new Channel<string>(1, { onUndeliveredElement: (v) => hookedB.push(v) });
  b.trySend("full");
  const ac = new AbortController();
  const waiting = select((s) => {
    s.onSend(a, "never", () => "a");
    s.onSend(b, "never either", () => "b");
    s.onTimeout(60_000, () => "timeout");
  }, { signal: ac.signal });
  assert.equal(await settled(waiting), false);
  ac.abort(new Error("stop"));
  await assert.rejects(waiting, /stop/);
  assert.equal(pending(), 0);
  assert.deepEqual(a.tryReceive(), { state: "empty" }); // never delivered
  assert.deepEqual(b.tryReceive(), { state: "ok", value: "full" });
  assert.deepEqual(b.tryReceive(), { state: "empty" });
  // Cancelled: the onSend values went to their hooks (b's; a has none), as aborted sends'.
  assert.deepEqual(hookedB, ["never either"]);
  // Already aborted: rejects at once, nothing sent even where there is room (the value hooked).
  await assert.rejects(
    select((s) => s.onSend(b, "no", () => 0), { signal: AbortSignal.abort("pre") }),
    (e) => e === "pre",
  );
  assert.deepEqual(b.tryReceive(), { state: "empty" });
  assert.deepEqual(hookedB, ["never either", "no"]);
  // Aborted while a clause's value was encoded (a getter ran the caller's code): rejects.
  using any = new Channel<unknown>();
  const mid = new AbortController();
  const value = {
    get x() {
      mid.abort("mid");
      return 1;
    },
  };
  await assert.rejects(
    select((s) => s.onSend(any, value, () => "sent"), { signal: mid.signal }),
    (e) => e === "mid",
  );
  assert.equal(pending(), 0);
  assert.deepEqual(any.tryReceive(), { state: "empty" }); // never delivered
  // Aborted after the select fired: nothing changes.
  const late = new AbortController();
  const r = select<string>((s) => s.onReceive(a, (v) => v), { signal: late.signal });
  await a.send("v");
  assert.equal(await r, "v");
  late.abort();
  // Still usable.
  const rr = a.receive();
  await a.send("w");
  assert.equal(await rr, "w");
  b.cancel(); // nothing more of the aborted selects reaches onUndeliveredElement
  assert.deepEqual(hookedB, ["never either", "no"]);
});

Deno.test("onJoin and onAwait: jobs and deferreds as clauses", async () => {
  using ch = new Channel<number>();
  const d = new CompletableDeferred<number>();
  const waiting = select<string>((s) => {
    s.onReceive(ch, () => "ch");
    s.onAwait(d, (v) => `await ${v}`);
  });
  assert.equal(await settled(waiting), false);
  d.complete(42);
  assert.equal(await waiting, "await 42");
  assert.deepEqual(ch.trySend(1), { state: "full" }); // the channel clause was withdrawn
  assert.equal(pending(), 0);
  // A completed job wins at once when it comes first; a ready channel after it stays untouched.
  using buf = new Channel<number>(1);
  buf.trySend(5);
  assert.equal(
    await select<string>((s) => {
      s.onJoin(d, () => "joined");
      s.onReceive(buf, () => "buf");
    }),
    "joined",
  );
  assert.deepEqual(buf.tryReceive(), { state: "ok", value: 5 });
  // A failed deferred rejects the select; onJoin fires whatever the outcome.
  const failed = new CompletableDeferred<number>();
  const onAwait = select((s) => s.onAwait(failed, () => "value"));
  const onJoin = select<string>((s) => s.onJoin(failed, () => "joined"));
  failed.completeExceptionally(new Error("boom"));
  await assert.rejects(onAwait, /boom/);
  assert.equal(await onJoin, "joined");
  // A channel clause that wins first leaves the deferred's later completion without effect.
  const later = new CompletableDeferred<number>();
  const sel = select<string>((s) => {
    s.onAwait(later, () => "await");
    s.onReceive(ch, (v) => `ch ${v}`);
  });
  await ch.send(3);
  assert.equal(await sel, "ch 3");
  later.complete(1);
  assert.equal(pending(), 0);
});

Deno.test("handlers: the select resolves with the awaited result; a throwing handler rejects", async () => {
  using ch = new Channel<number>(2);
  ch.trySend(1);
  ch.trySend(2);
  assert.equal(
    await select<number>((s) => s.onReceive(ch, (v) => Promise.resolve(v * 10))),
    10,
  );
  await assert.rejects(
    select((s) =>
      s.onReceive(ch, () => {
        throw new Error("handler");
      })
    ),
    /handler/,
  );
  assert.deepEqual(ch.tryReceive(), { state: "empty" }); // the clause fired: 2 was received
});

Deno.test("values travel through each channel's codec; unsent values are freed, not dropped", async () => {
  const dropped: unknown[] = [];
  using bytes = new Channel<Uint8Array>(0, { codec: codecs.bytes });
  using any = new Channel<unknown>(0, { onUndeliveredElement: (v) => dropped.push(v) });
  using nums = new Channel<bigint>(1, { codec: codecs.u64 });
  const r = bytes.receive();
  const got = await select<string>((s) => {
    s.onSend(any, { big: "object" }, () => "any");
    s.onSend(bytes, new Uint8Array([1, 2, 3]), () => "bytes");
    s.onSend(nums, 2n ** 64n - 1n, () => "nums");
  });
  assert.equal(got, "bytes");
  assert.deepEqual(await r, new Uint8Array([1, 2, 3]));
  assert.deepEqual(nums.tryReceive(), { state: "empty" });
  const rs = select<unknown>((s) => {
    s.onReceive(any, (v) => v);
    s.onReceive(bytes, (v) => v);
  });
  await any.send({ structured: [1, "two"] });
  assert.deepEqual(await rs, { structured: [1, "two"] });
  any.cancel();
  assert.deepEqual(dropped, []);
});

Deno.test("seeded stress: selects mixed with plain sends and receives, every value exactly once", async () => {
  for (const seed of [0x5e1ec7, 7, 2024]) await stress(seed);
});

async function stress(seed: number): Promise<void> {
  const rand = prng(seed);
  const chans = [new Channel<number>(0), new Channel<number>(2), new Channel<number>(0)];
  try {
    const producers = 4, per = 400, consumers = 3;
    const total = producers * per;
    const seen = new Map<number, number>();
    let received = 0;
    const producer = async (p: number) => {
      for (let i = 0; i < per; i++) {
        const v = p * per + i;
        if (rand() < 0.5) {
          await chans[Math.floor(rand() * chans.length)].send(v);
        } else {
          const a = Math.floor(rand() * chans.length), b = Math.floor(rand() * chans.length);
          await select((s) => {
            s.onSend(chans[a], v, () => {});
            s.onSend(chans[b], v, () => {});
          }, { unbiased: rand() < 0.5 });
        }
      }
    };
    const take = (v: number) => {
      seen.set(v, (seen.get(v) ?? 0) + 1);
      received++;
    };
    const stop = new AbortController();
    const loop = async (step: () => Promise<unknown>) => {
      try {
        while (received < total) await step();
      } catch (e) {
        if (!stop.signal.aborted) throw e;
      }
      stop.abort(); // the last value is in: wake every other consumer
    };
    // One plain receiver per channel (so no producer waits forever) and selecting receivers.
    const plain = (c: Channel<number>) =>
      loop(async () => take(await c.receive({ signal: stop.signal })));
    const selecting = () =>
      loop(() =>
        select<void>((s) => {
          for (const c of chans) s.onReceive(c, take);
          if (rand() < 0.2) s.onTimeout(rand() < 0.5 ? 0 : 1, () => {});
        }, { signal: stop.signal, unbiased: rand() < 0.5 })
      );
    await Promise.all([
      ...Array.from({ length: producers }, (_, p) => producer(p)),
      ...chans.map(plain),
      ...Array.from({ length: consumers }, selecting),
    ]);
    assert.equal(received, total);
    for (let v = 0; v < total; v++) assert.equal(seen.get(v), 1, `value ${v}`);
    for (const c of chans) assert.deepEqual(c.tryReceive(), { state: "empty" });
    await until(() => pending() === 0, "no pending ring operations");
  } finally {
    for (const c of chans) c[Symbol.dispose]();
  }
}

Deno.test("a job clause that wins while select registers leaves no later timer armed", async () => {
  // Clause 2 starts a lazy job whose body completes clause 1's deferred at once: clause 1 wins
  // inside the registration loop. Before, the loop went on and armed clause 3's timer after the
  // select's cleanup (it kept the process alive for its whole length), and added the abort
  // listener after that too. Timers are counted through the globals src/time.ts calls.
  const armed = new Set<unknown>();
  const realSet = globalThis.setTimeout, realClear = globalThis.clearTimeout;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    const id = realSet(() => {
      armed.delete(id);
      fn();
    }, ms);
    armed.add(id);
    return id;
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((id?: number) => {
    armed.delete(id);
    realClear(id);
  }) as typeof clearTimeout;
  try {
    const ctl = new AbortController();
    const r = await coroutineScope(async (scope) => {
      const d = new CompletableDeferred<string>();
      const lazy = scope.launch(async () => {
        d.complete("from lazy");
        await null;
      }, { lazy: true });
      return await select<string>((s) => {
        s.onAwait(d, (v) => v);
        s.onJoin(lazy, () => "joined");
        s.onTimeout(60_000, () => "timeout");
      }, { signal: ctl.signal });
    });
    assert.equal(r, "from lazy");
    assert.equal(armed.size, 0);
  } finally {
    globalThis.setTimeout = realSet;
    globalThis.clearTimeout = realClear;
    for (const id of armed) realClear(id as number);
  }
});

Deno.test("onAwait takes a Deferred only, as Kotlin's: a launch's Job or a scope is refused with a TypeError naming it (the clause fired with undefined); onJoin waits for them", async () => {
  await using scope = createScope();
  const task = scope.launch(() => {});
  await task.join();
  let inner: unknown;
  await coroutineScope((s) => {
    inner = s;
  });
  const refused = [[task, "a Job"], [scope, "a CoroutineScope"], [inner, "a CoroutineScope"]];
  for (const [job, named] of refused) {
    await assert.rejects(
      select((s) => s.onAwait(job as never, (v) => v)),
      {
        name: "TypeError",
        message: `Cannot add onAwait clause: expected a Deferred, received ${named}`,
      },
    );
  }
  // onJoin is the clause for them; async's and CompletableDeferred's deferreds still await.
  assert.equal(await select((s) => s.onJoin(task, () => "joined")), "joined");
  const d = scope.async(() => 7);
  const completable = new CompletableDeferred<number>();
  completable.complete(8);
  assert.equal(await select((s) => s.onAwait(d, (v) => v)), 7);
  assert.equal(await select((s) => s.onAwait(completable, (v) => v)), 8);
});

Deno.test("select starts a lazy job of onJoin/onAwait only when no clause before it is ready (Kotlin)", async () => {
  await coroutineScope(async (scope) => {
    using ch = new Channel<string>(1);
    ch.trySend("cached");
    let started = 0;
    const fetch = scope.async(() => {
      started++;
      return Promise.resolve("fetched");
    }, { lazy: true });
    // Before, every job clause's lazy job was started before any clause was looked at.
    const r = await select<string>((s) => {
      s.onReceive(ch, (v) => v);
      s.onAwait(fetch, (v) => v);
    });
    assert.equal(r, "cached");
    assert.equal(started, 0);
    assert.equal(fetch.state, "new");
    // Nothing ready before it: it starts, and wins once it completes.
    const r2 = await select<string>((s) => {
      s.onReceive(ch, (v) => v);
      s.onAwait(fetch, (v) => v);
    });
    assert.equal(r2, "fetched");
    assert.equal(started, 1);
  });
});

Deno.test("select: an onTimeout(0) before a lazy onAwait wins without starting the job (Kotlin)", async () => {
  await coroutineScope(async (scope) => {
    let started = 0;
    const fetch = scope.async(() => {
      started++;
      return new Promise<string>(() => {}); // never completes
    }, { lazy: true });
    // Kotlin selects onTimeout(0) while registering and registers nothing after it; before, the
    // lazy job was started (its body ran) and left running.
    const r = await select<string>((s) => {
      s.onTimeout(0, () => "default");
      s.onAwait(fetch, (v) => v);
    });
    assert.equal(r, "default");
    assert.equal(started, 0);
    assert.equal(fetch.state, "new");
    fetch.cancel();
  });
});

Deno.test("a select begun while the library closes (by an onUndeliveredElement hook) fails with LibraryClosedError", async () => {
  // In a process of its own: it closes the library.
  const res = await evalScript(`
    import { Channel, closeLibrary, codecs, library, LibraryClosedError, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until, within } from "./tests/support.ts";
    const target = new Channel(0, { codec: codecs.bytes });
    target.share();
    const outcomes = [];
    // Closing withdraws the waiting send and hands its value to this hook, which starts a
    // select that queues natively after the bridge's withdrawals: the bridge settles it only
    // after the close. Before, that rejected with an InvalidHandleError.
    const a = new Channel(1, {
      onUndeliveredElement: () => {
        outcomes.push(select((s) => s.onSend(target, new Uint8Array(64), () => "sent")).then(
          () => "resolved",
          (e) => e instanceof LibraryClosedError ? "closed" : e.name + ": " + e.message,
        ));
      },
    });
    a.share();
    a.trySend(0);
    const send = a.send(1).catch((e) => e.name);
    const bridge = Bridge.of(library());
    await until(() => bridge.pending >= 1, "the send queued natively");
    if (bridge.pending !== 1) throw new Error(bridge.pending + " operations queued, not 1");
    closeLibrary();
    if ((await send) !== "LibraryClosedError") throw new Error("send: " + (await send));
    const got = await within(Promise.all(outcomes), 10_000, "the outcomes");
    if (JSON.stringify(got) !== '["closed"]') throw new Error("select: " + JSON.stringify(got));
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a creator that receives through select takes the values another isolate's sends dropped, as a receive does", async () => {
  for (const how of ["ready", "queued"] as const) {
    const dropped: number[] = [];
    using ch = new Channel<number>("conflated", {
      codec: codecs.f64,
      onUndeliveredElement: (v) => dropped.push(v),
    });
    using writer = Channel.from<number>(ch.share()); // stands for a Worker's copy
    let got: Promise<number>;
    if (how === "ready") {
      for (const v of [1, 2, 3]) assert.equal(writer.trySend(v).state, "ok");
      got = select<number>((s) => s.onReceive(ch, (v) => v));
    } else {
      got = select<number>((s) => s.onReceive(ch, (v) => v)); // waits natively
      await until(() => pending() > 0, "the select queued natively");
      // Native sends, as the Worker's are: a send of this isolate (the copy's) would settle the
      // select before it returned, before the next two sends dropped anything.
      for (const v of [1, 2, 3]) assert.equal(trySendNatively(writer.handle, v), 0);
      // The first value went to the select; conflation dropped the second for the third.
    }
    const v = await within(got, 10_000, "the select");
    // Before, nothing: values dropped elsewhere reached the hook only at the creator's next
    // plain send or receive, or its dispose (kept natively, without bound, meanwhile).
    assert.deepEqual(dropped, how === "ready" ? [1, 2] : [2], how);
    assert.equal(v, how === "ready" ? 3 : 1, how);
  }
});

/** Starts `start`'s select and returns the operation it queued on the ring (the bridge's `track`). */
function queuedSelect(start: () => Promise<unknown>): {
  outcome: Promise<unknown>;
  op: { complete(status: number, index: number): void };
} {
  const bridge = Bridge.of(library());
  const track = bridge.track;
  let op: { complete(status: number, index: number): void } | undefined;
  bridge.track = (o) => {
    op = o;
    track.call(bridge, o);
  };
  let outcome: Promise<unknown>;
  try {
    outcome = start();
  } finally {
    bridge.track = track;
  }
  assert.ok(op !== undefined, "the select queued natively");
  return { outcome, op };
}

Deno.test("a ring record naming no clause of a waiting select (another's) withdraws it: nothing is sent, each send value reaches its hook", async () => {
  const dropped: number[][] = [];
  using a = new Channel<number>(0, { codec: codecs.f64 });
  using b = new Channel<Uint8Array>(0, {
    codec: codecs.bytes,
    onUndeliveredElement: (v) => dropped.push([...v]),
  });
  const before = pending();
  const { outcome, op } = queuedSelect(() =>
    select((s) => {
      s.onReceive(a, (v) => v);
      s.onSend(b, new Uint8Array([1, 2, 3]), () => "sent");
    })
  );
  op.complete(0, 99); // a record for clause 99 of a two-clause select
  await assert.rejects(outcome, {
    name: "InvalidHandleError",
    message:
      /^Cannot select: the completion record names no clause of this select, received clause 99/,
  });
  // Before, it stayed queued: a receiver took the value of the select that had failed.
  assert.equal(pending(), before);
  assert.deepEqual(b.tryReceive(), { state: "empty" });
  assert.deepEqual(a.trySend(1), { state: "full" }); // no receive clause left either
  assert.deepEqual(dropped, [[1, 2, 3]]);
});

Deno.test("a closed completion reported for a clause the select lacks fails it, and hands each send value to its hook once", async () => {
  const dropped: number[][] = [];
  using a = new Channel<number>(0, { codec: codecs.f64 });
  using b = new Channel<Uint8Array>(0, {
    codec: codecs.bytes,
    onUndeliveredElement: (v) => dropped.push([...v]),
  });
  const { outcome, op } = queuedSelect(() =>
    select((s) => {
      s.onReceive(a, (v) => v);
      s.onSend(b, new Uint8Array([4, 5]), () => "sent");
    })
  );
  const complete = op.complete;
  op.complete = (status, _index) => complete.call(op, status, 7); // the record, corrupted
  a.close(); // the receive clause completes closed: nothing changed hands
  await assert.rejects(outcome, {
    name: "InvalidHandleError",
    message:
      /^Cannot select: the completion record names no clause of this select, received clause 7/,
  });
  // Before, the value's native copy leaked and no hook saw it.
  assert.deepEqual(dropped, [[4, 5]]);
  assert.deepEqual(b.tryReceive(), { state: "empty" });
});

Deno.test("a clause that throws while it is armed, after the channel clauses were queued, withdraws them: nothing is sent", async () => {
  using ch = new Channel<Uint8Array>(0, { codec: codecs.bytes });
  ch.share(); // its clause is queued natively
  const job = callersJob(() => {
    throw new Error("cannot watch");
  });
  await assert.rejects(
    select((s) => {
      s.onSend(ch, new Uint8Array(100).fill(9), () => "sent");
      s.onJoin(job, () => "joined");
    }),
    /cannot watch/,
  );
  // Before, the send stayed queued with its value freed, and this received it.
  assert.equal(pending(), 0);
  assert.deepEqual(ch.tryReceive(), { state: "empty" });
});

Deno.test("a select withdrawn as the library closes hands each send clause's value to its channel's onUndeliveredElement, once", async () => {
  // In a process of its own: it closes the library.
  const res = await evalScript(`
    import { Channel, closeLibrary, library, LibraryClosedError, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until, within } from "./tests/support.ts";
    const got = [];
    const hook = (name) => (v) => got.push(name + " " + JSON.stringify(v));
    const a = new Channel(0, { onUndeliveredElement: hook("a") });
    const b = new Channel(0, { onUndeliveredElement: hook("b") });
    const plain = new Channel(0); // no hook: its value is only freed
    for (const ch of [a, b, plain]) ch.share();
    const outcome = select((s) => {
      s.onSend(a, { n: 1 }, () => "a");
      s.onSend(b, 2, () => "b");
      s.onSend(a, "again", () => "a again");
      s.onSend(plain, 3, () => "plain");
    }).then(() => "resolved", (e) => e instanceof LibraryClosedError ? "closed" : e.name + ": " + e.message);
    const bridge = Bridge.of(library());
    await until(() => bridge.pending >= 1, "the select queued natively");
    closeLibrary();
    const settled = await within(outcome, 10_000, "the select");
    if (settled !== "closed") throw new Error("select: " + settled);
    // As a plain send withdrawn by the close hands its value to the hook. Before, the select
    // freed its values and no hook saw them.
    got.sort();
    const want = ['a "again"', 'a {"n":1}', "b 2"];
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error("hooks got " + JSON.stringify(got));
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a hook that a close's settle runs (a select's onSend value) and that closes another channel or the library settles the close's other waits first, as closed", async () => {
  // A close of this isolate settles its waits before it returns (Bridge.settleWhere); the
  // select's settle hands its onSend value to that channel's hook, which closes another channel
  // (a nested settle) or the library. Before, the nested close settled its newer wait before
  // the first close's later ones, and after closeLibrary() those settled with LibraryClosedError
  // though the close had failed them.
  const script = (how: string) => `
    import { Channel, closeLibrary, library, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until, within } from "./tests/support.ts";
    const order = [];
    const d = new Channel(0);
    const c = new Channel(0, {
      onUndeliveredElement: (v) => {
        order.push("hook " + v);
        ${how};
      },
    });
    const s = new Channel(0);
    s.share();
    d.share();
    const log = (n, p) => p.then(() => order.push(n + " ok"), (e) => order.push(n + " " + e.name));
    const bridge = Bridge.of(library());
    const pending = bridge.pending;
    const all = [
      log("select", select((k) => {
        k.onReceive(s, (v) => v);
        k.onSend(c, 1, () => 0);
      })),
      log("receive 1", s.receive()),
      log("receive 2", s.receive()),
      log("receive d", d.receive()),
    ];
    await until(() => bridge.pending === pending + 4, "the waits queued natively");
    s.close();
    await within(Promise.all(all), 10_000, "the waits");
    console.log(JSON.stringify(order));
  `;
  for (
    const [how, last] of [["d.close()", "ClosedReceiveError"], [
      "closeLibrary()",
      "LibraryClosedError",
    ]]
  ) {
    const res = await evalScript(script(how));
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), [
      "hook 1",
      "select ClosedReceiveError",
      "receive 1 ClosedReceiveError",
      "receive 2 ClosedReceiveError",
      `receive d ${last}`,
    ], how);
  }
});

Deno.test("a shared cancel whose settle runs a hook that closes the library still hands the cancel's dropped values to the channel's hook", async () => {
  // The cancel leaves its channel's onUndeliveredElement to the end of its settles (every wait
  // rejected first); a select's settle there hands its other send clause's value to another
  // channel's hook, which closes the library. Before, the cancel's own dropped values (a waiting
  // send's, the select's send clause on it) then stayed in the native list: #collect takes
  // nothing once the library closed, and no hook saw them until the channel's dispose.
  const res = await evalScript(`
    import { Channel, closeLibrary, library, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until, within } from "./tests/support.ts";
    const order = [];
    const c = new Channel(0, {
      onUndeliveredElement: (v) => {
        order.push("c hook " + v);
        closeLibrary();
      },
    });
    const s = new Channel(0, { onUndeliveredElement: (v) => order.push("s hook " + v) });
    s.share();
    const t = new Channel(0);
    t.share();
    const log = (n, p) => p.then(() => order.push(n + " ok"), (e) => order.push(n + " " + e.name));
    const bridge = Bridge.of(library());
    const pending = bridge.pending;
    const all = [log("send 5", s.send(5))];
    await until(() => bridge.pending === pending + 1, "the send queued natively");
    all.push(log("select", select((k) => {
      k.onReceive(t, (v) => v);
      k.onSend(c, 1, () => 0);
      k.onSend(s, 6, () => 0);
    })));
    await until(() => bridge.pending === pending + 2, "the select queued natively");
    s.cancel();
    console.log(JSON.stringify(order));
    await within(Promise.all(all), 10_000, "the waits");
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), ["c hook 1", "s hook 5", "s hook 6"]);
});

Deno.test("a select whose queued send clause native code cancels rejects before onUndeliveredElement runs for its value", async () => {
  // As a plain send's (channel_test): the select rejects, then the hook runs. Before, the hook
  // ran first, so a close of another channel it made settled that channel's receive first.
  const lib = library();
  const bridge = Bridge.of(lib);
  const sym = lib.symbols("test");
  const order: string[] = [];
  using b = new Channel<number>();
  using a = new Channel<number>(0, {
    codec: codecs.f64,
    onUndeliveredElement: (v) => {
      order.push(`hook ${v}`);
      b.close();
    },
  });
  a.share();
  const pending = bridge.pending;
  const log = (n: string, p: Promise<unknown>) =>
    p.then(() => order.push(`${n} ok`), (e) => order.push(`${n} ${e.name}`));
  const all = [
    log("select", select((k) => k.onSend(a, 1, () => 0))),
    log("receive b", b.receive()),
  ];
  await until(() => bridge.pending === pending + 1, "the select queued natively");
  assert.equal(sym.kc_chan_cancel(a.handle), 0);
  await within(Promise.all(all), 10_000, "the waits");
  assert.deepEqual(order, ["hook 1", "select CancellationError", "receive b ClosedReceiveError"]);
});

Deno.test("an aborted select counts a cancelled failure on each of its channels, as an aborted plain wait does; a lost select none", async () => {
  const cancelled = (ch: Channel<number>) => ch.metrics().failures.cancelled;
  using a = new Channel<number>(0, { codec: codecs.f64 });
  using b = new Channel<number>(0, { codec: codecs.f64 });
  const ac = new AbortController();
  // Two clauses on `a`: one failure per channel, as a native select given up by its token.
  const waiting = select((s) => {
    s.onReceive(a, () => "a");
    s.onSend(b, 1, () => "b");
    s.onReceiveCatching(a, () => "a again");
  }, { signal: ac.signal });
  assert.equal(await settled(waiting), false);
  ac.abort(new Error("stop"));
  await assert.rejects(waiting, /stop/);
  // Before, 0: the select's native withdraw counted nothing.
  assert.deepEqual([cancelled(a), cancelled(b)], [1, 1]);
  // A select that a JavaScript clause won counts no cancelled failure: its channel clauses
  // lost, as to another channel clause (an onTimeout win counts a timeout failure instead).
  assert.equal(
    await select((s) => {
      s.onReceive(a, () => "a");
      s.onSend(b, 1, () => "b");
      s.onTimeout(1, () => "timeout");
    }),
    "timeout",
  );
  const done = new CompletableDeferred<number>();
  const joined = select((s) => {
    s.onReceive(a, () => "a");
    s.onAwait(done, () => "done");
  });
  assert.equal(await settled(joined), false);
  done.complete(1);
  assert.equal(await joined, "done");
  assert.deepEqual([cancelled(a), cancelled(b)], [1, 1]);
  assert.equal(pending(), 0);
});

Deno.test("a select won by onTimeout counts a timeout failure on each of its channels, as a native select given up at its deadline does", async () => {
  const failures = (ch: Channel<number>) => ch.metrics().failures;
  using a = new Channel<number>(0, { codec: codecs.f64 }); // local until the select
  using b = new Channel<number>(2);
  b.share(); // shared before it
  // Two clauses on `a`: one failure per channel.
  assert.equal(
    await select((s) => {
      s.onReceive(a, () => "a");
      s.onReceive(b, () => "b");
      s.onReceiveCatching(a, () => "a again");
      s.onTimeout(1, () => "timeout");
    }),
    "timeout",
  );
  // Before, 0 and 0: only a native deadline counted.
  assert.deepEqual([failures(a).timeout, failures(b).timeout], [1, 1]);
  // An immediate default (onTimeout(0)) is a poll, which counts none natively either.
  assert.equal(
    await select((s) => {
      s.onReceive(a, () => "a");
      s.onTimeout(0, () => "default");
    }),
    "default",
  );
  assert.deepEqual(failures(a), { full: 0, closed: 0, timeout: 1, cancelled: 0 });
  assert.equal(pending(), 0);
});

Deno.test("a select whose values were encoded when the library closed (a value's getter closed it) frees them and hands them to the hook", async () => {
  // In a process of its own: it closes the library.
  const res = await evalScript(`
    import { Channel, closeLibrary, codecs, library, LibraryClosedError, select } from "./mod.ts";
    import { symbolsToReleaseOf } from "./ffi/load.ts";
    const raw = symbolsToReleaseOf(library()); // the symbols every call goes through
    let made = 0, freed = 0;
    for (const n of ["kc_desc_make", "kc_desc_make_at"]) {
      const f = raw[n];
      raw[n] = (...a) => (made++, f(...a));
    }
    for (const n of ["kc_desc_free", "kc_buf_free"]) {
      const f = raw[n];
      raw[n] = (...a) => (freed++, f(...a));
    }
    const dropped = [];
    const ch = new Channel(0, { codec: codecs.structured, onUndeliveredElement: (v) => dropped.push(v) });
    ch.share();
    const big = "x".repeat(200); // in a native buffer
    const second = { get x() { closeLibrary(); return big; } };
    const outcome = await select((s) => {
      s.onSend(ch, big, () => "first");
      s.onSend(ch, second, () => "second");
    }).then(() => "resolved", (e) => e instanceof LibraryClosedError ? "closed" : e.name + ": " + e.message);
    if (outcome !== "closed") throw new Error("select: " + outcome);
    // Before, neither native copy was freed (the library was closed, so none was), and
    // neither value reached the hook, as a plain send's does (its wait fails as the close's).
    if (made !== 2 || freed !== 2) throw new Error(made + " native values made, " + freed + " freed");
    if (dropped.length !== 2 || dropped[0] !== big || dropped[1] !== second) {
      throw new Error("hook got " + JSON.stringify(dropped));
    }
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a Job of the caller's own whose invokeOnCompletion returns a CoroutineScope, a Runtime or an object whose Symbol.dispose throws rejects the select with its named TypeError: it rejected with the scope's 'Cannot dispose ... synchronously'", async () => {
  await using scope = createScope();
  const thrown = new Error("the getter's own");
  const cases: [unknown, RegExp][] = [
    [scope, /received a CoroutineScope$/],
    [runtime(), /received a Runtime/],
    [{
      get [Symbol.dispose]() {
        throw thrown;
      },
    }, /received \[object Object\]$/],
    [
      new Proxy({}, {
        get() {
          throw thrown;
        },
      }),
      /received an object that cannot be described/,
    ],
  ];
  for (const [returned, received] of cases) {
    const job = callersJob(() => returned);
    const outcome = select((s) => {
      s.onJoin(job, () => "joined");
      s.onTimeout(60_000, () => "timed out");
    });
    const e = await within(outcome, 5_000, "the select").then(() => undefined, (e) => e);
    assert.ok(e instanceof TypeError, String(e));
    assert.match(
      e.message,
      /^Cannot select: a job's invokeOnCompletion must return a Disposable, received /,
    );
    assert.match(e.message, received);
    // What the read threw is kept: the class's refusal, or the caller's own error.
    if (returned === scope || returned === runtime()) {
      assert.ok(e.cause instanceof TypeError, String(e.cause));
      assert.match((e.cause as Error).message, /^Cannot dispose .* synchronously/);
    } else assert.equal(e.cause, thrown);
  }
});

Deno.test("a Job of the caller's own whose invokeOnCompletion returns no Disposable rejects the select (it never settled), and a Deferred whose await() returns a plain value or throws settles it", async () => {
  using ch = new Channel<Uint8Array>(0, { codec: codecs.bytes });
  ch.share(); // its clause is queued natively, then withdrawn
  for (const returned of [1, undefined, {}]) {
    const job = callersJob(() => returned);
    const outcome = select((s) => {
      s.onSend(ch, new Uint8Array(100).fill(9), () => "sent");
      s.onJoin(job, () => "joined");
      s.onTimeout(1, () => "timed out");
    });
    // Before, the timeout's cleanup threw at the returned value before its handler ran.
    await assert.rejects(within(outcome, 5_000, "the select"), {
      name: "TypeError",
      message: /^Cannot select: a job's invokeOnCompletion must return a Disposable, received /,
    });
    assert.equal(pending(), 0);
    assert.deepEqual(ch.tryReceive(), { state: "empty" });
  }
  const completed = (awaited: () => unknown) => ({
    state: "completed",
    isCompleted: true,
    start: () => false,
    invokeOnCompletion: () => ({ [Symbol.dispose]() {} }),
    await: awaited,
  });
  assert.equal(await select((s) => s.onAwait(completed(() => 5) as never, (v) => v)), 5);
  await assert.rejects(
    select((s) =>
      s.onAwait(
        completed(() => {
          throw new Error("the caller's await");
        }) as never,
        (v) => v,
      )
    ),
    /the caller's await/,
  );
});

Deno.test("a Job of the caller's own that runs its handler at once, then returns no Disposable or throws: the clause it ran wins, the error is dropped, nothing reported", async () => {
  for (const how of ["returns nothing", "throws"] as const) {
    using reported = catchReported();
    let disposed = 0;
    const other = callersJob(() => ({ [Symbol.dispose]: () => void disposed++ }));
    // Active when the select looks, complete by the time it arms its handler.
    const job = callersJob((handler) => {
      handler();
      if (how === "throws") throw new Error("the caller's invokeOnCompletion");
      return 1;
    });
    const outcome = select((s) => {
      s.onJoin(other, () => "other");
      s.onJoin(job, () => "joined");
    });
    // Before, the select rejected with the TypeError after the win had cleaned up (the other
    // job's Disposable disposed twice); then the error was reported: an error event nobody
    // handles, which ends the process.
    assert.equal(await within(outcome, 5_000, "the select"), "joined", how);
    assert.equal(disposed, 1, how);
    assert.deepEqual(reported.errors, [], how);
  }
});

Deno.test("a select whose Job of the caller's own lost to a channel clause as it was armed still listens to its signal: an abort before the record is taken rejects, the received value goes back", async () => {
  using reported = catchReported();
  using ch = new Channel<number>(0, { codec: codecs.f64 });
  // As its clause is armed: the channel clause completes natively (a send of this isolate,
  // meeting the select queued natively), then the job runs its handler, which loses (KC_EBUSY).
  const job = jobSendingAsArmed(ch, 5);
  const ctl = new AbortController();
  const reason = new Error("given up");
  const outcome = select<string>((s) => {
    s.onReceive(ch, (v) => `got ${v}`);
    s.onJoin(job, () => "joined");
  }, { signal: ctl.signal });
  ctl.abort(reason); // the record is not taken yet
  // Before, the select never listened to the signal: the receive clause fired.
  await assert.rejects(within(outcome, 5_000, "the select"), (e) => e === reason);
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }); // back, not lost
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors, []);
  assert.equal(pending(), 0);
});

Deno.test("a select whose Job of the caller's own let a channel clause complete and then failed its arming (threw, or returned no Disposable, having run its handler or not) rejects with that error, reporting nothing: a received value goes back, a closed channel's end moved nothing, a delivered send fires", async () => {
  const hows = [
    "throws",
    "returns nothing",
    "runs its handler, throws",
    "runs its handler, returns nothing",
  ] as const;
  const partners = ["a send", "a close", "a receive"] as const;
  for (const how of hows) {
    for (const partner of partners) {
      const what = `${how}, ${partner}`;
      using reported = catchReported();
      const dropped: number[] = [];
      using ch = new Channel<number>(0, {
        codec: codecs.f64,
        onUndeliveredElement: (v) => dropped.push(v),
      });
      const thrown = new Error("arming failed");
      let got: unknown = "nothing received";
      // As its clause is armed: the channel clause completes natively (a native send, as
      // another thread's, or a close or a receive of this isolate, meeting the select queued
      // natively), then the arming fails: the select's withdrawal (or the handler's) answers
      // KC_EBUSY, and the record, still to come, settles it. A send of this isolate would settle
      // the select before it returned, as the close and the receive do.
      const handle = partner === "a send" ? ch.handle : 0;
      const job = callersJob((handler) => {
        if (partner === "a send") assert.equal(trySendNatively(handle, 5), 0, what);
        else if (partner === "a close") ch.close();
        else got = ch.tryReceive();
        if (how.startsWith("runs its handler")) handler();
        if (how.endsWith("throws")) throw thrown;
        return 1;
      });
      const outcome = select<string>((s) => {
        if (partner === "a receive") s.onSend(ch, 9, () => "sent");
        else s.onReceive(ch, (v) => `got ${v}`);
        s.onJoin(job, () => "joined");
      });
      if (partner === "a receive") {
        // Delivered: it fires (the value is the receiver's), as a send clause that won before
        // an abort does.
        assert.equal(await within(outcome, 5_000, "the select"), "sent", what);
        assert.deepEqual(got, { state: "ok", value: 9 }, what);
        assert.deepEqual(dropped, [], what);
      } else if (partner === "a close") {
        // The close, this isolate's own, settled the select before it returned (README's abort
        // paragraph): closed before the arming failed, so that outcome stands and the arming's
        // error is dropped, as for a clause that won before the throw. Before, its record was
        // left to the ring's drain, and the arming's error won over it.
        await assert.rejects(within(outcome, 5_000, "the select"), ClosedReceiveError, what);
      } else {
        // Before, the error was reported (an error event nobody handles, which ends the
        // process), and the receive clause fired (or rejected as closed).
        await assert.rejects(
          within(outcome, 5_000, "the select"),
          how.endsWith("throws") ? (e) => e === thrown : {
            name: "TypeError",
            message:
              /^Cannot select: a job's invokeOnCompletion must return a Disposable, received 1$/,
          },
          what,
        );
        if (partner === "a send") {
          assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }, what); // back, not lost
        }
      }
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors, [], what);
      assert.equal(pending(), 0, what);
    }
  }
});

Deno.test("a select that this isolate's close settled while its job clause was armed disposes of that clause's Disposable", async () => {
  // The close, run by the job's invokeOnCompletion, settles the select before it returns (its
  // cleanup runs then), and the Disposable comes after. Before, it was kept and never disposed:
  // the job kept the select's handler.
  using ch = new Channel<number>();
  let disposed = 0;
  const job = callersJob(() => {
    ch.close();
    return { [Symbol.dispose]: () => disposed++ };
  });
  const outcome = select<unknown>((s) => {
    s.onReceive(ch, (v) => v);
    s.onJoin(job, () => "joined");
  });
  await assert.rejects(within(outcome, 5_000, "the select"), ClosedReceiveError);
  assert.equal(disposed, 1);
  assert.equal(pending(), 0);
});

Deno.test("a select whose job clause lost to a completed channel clause, then ended before the record was taken by its async builder's failure or its Channel.from copy's dispose, rejects with that error as an abort does: the received value goes back", async () => {
  for (const how of ["builder failed", "copy disposed"] as const) {
    using ch = new Channel<number>(0, { codec: codecs.f64 });
    const copy = Channel.from<number>(ch.share());
    // As its clause is armed: the channel clause completes natively (a send of this isolate,
    // meeting the select queued natively), then the job runs its handler, which loses (KC_EBUSY).
    const job = jobSendingAsArmed(ch, 5);
    const outcome = select<string>(async (s) => {
      s.onReceive(how === "copy disposed" ? copy : ch, (v) => `got ${v}`);
      s.onJoin(job, () => "joined");
      await null;
      // Its rejection reaches the select in a microtask: before the ring's record is drained.
      if (how === "builder failed") s.onTimeout(0, () => "late");
    });
    if (how === "copy disposed") copy[Symbol.dispose](); // the record is not taken yet
    // Before, the ending was ignored: the receive clause fired with the value.
    await assert.rejects(
      within(outcome, 5_000, "the select"),
      how === "builder failed"
        ? { name: "TypeError", message: /the select was built already/ }
        : { name: "InvalidHandleError", message: /^Cannot select: the channel was disposed/ },
      how,
    );
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }, how); // back, not lost
    copy[Symbol.dispose]();
    assert.equal(pending(), 0);
  }
});

// Model fuzz seed 723 (given-back mode, step 7): the model left the first select's abort window
// open after a send of this isolate on the channel had settled the records of this isolate's
// receives there (`#settleReceivers` takes a select's too, oldest first): README's select
// section, "settles the select before it returns", and the order bullet's "oldest first".
Deno.test("a receive another thread completed natively settles when a send of this isolate on that channel settles its own select: an abort after finds it settled, the value kept", async () => {
  for (const first of ["select", "receive"] as const) {
    using ch = new Channel<number>(0, { codec: codecs.f64 });
    const copy = Channel.from<number>(ch.share());
    const ctl = new AbortController();
    const taken = first === "select"
      ? select<number>((s) => s.onReceive(copy, (v) => v), { signal: ctl.signal })
      : copy.receive({ signal: ctl.signal });
    // Queued natively: a select queues at its call, a receive at the end of its turn.
    if (first === "receive") await until(() => pending() === 1, "the receive queued natively");
    const second = select<number>((s) => s.onReceive(ch, (v) => v));
    // As another thread's send: completes the oldest, `taken`, its record left on the ring.
    assert.equal(trySendNatively(ch.handle, 3), 0, first);
    // This isolate's send completes `second` natively and settles it before it returns, and
    // with it the older record of this channel: `taken`'s.
    assert.deepEqual(ch.trySend(4), { state: "ok" }, first);
    ctl.abort(new Error("too late"));
    assert.equal(await within(taken, 5_000, "the first"), 3, first); // not given back
    assert.equal(await within(second, 5_000, "the second"), 4, first);
    assert.deepEqual(ch.tryReceive(), { state: "empty" }, first);
    copy[Symbol.dispose]();
    assert.equal(pending(), 0, first);
  }
});

Deno.test("a select given up for one reason, then for another before its raced record is taken, rejects with the first: an abort that lost to the completion, or a copy's dispose after a job clause lost", async () => {
  // One rule for every give-up (`#giveUp`): the first reason stays, whichever way the select
  // learnt that a channel clause had won (its own abort answered KC_EBUSY, or a job clause's).
  for (const first of ["abort", "copy disposed"] as const) {
    using ch = new Channel<number>(0, { codec: codecs.f64 });
    const copy = Channel.from<number>(ch.share());
    const ctl = new AbortController();
    const aborted = new Error("aborted first");
    const outcome = select<string>((s) => {
      s.onReceive(copy, (v) => `got ${v}`);
      // "copy disposed": the receive clause completes natively as the job clause is armed, and
      // the job loses (KC_EBUSY). "abort": no job; the clause completes below.
      if (first === "copy disposed") s.onJoin(jobSendingAsArmed(ch, 5), () => "joined");
    }, { signal: ctl.signal });
    if (first === "abort") {
      // A native send (as another thread's) meets the select queued natively: its record is
      // written, not taken; the abort's withdrawal then answers KC_EBUSY. A send of this isolate
      // would settle the select before it returned.
      assert.equal(trySendNatively(ch.handle, 5), 0);
      ctl.abort(aborted);
      copy[Symbol.dispose]();
    } else {
      copy[Symbol.dispose]();
      ctl.abort(aborted);
    }
    await assert.rejects(
      within(outcome, 5_000, "the select"),
      first === "abort" ? (e) => e === aborted : {
        name: "InvalidHandleError",
        message: /^Cannot select: the channel was disposed/,
      },
      first,
    );
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 }, first); // back, not lost
    assert.equal(pending(), 0, first);
  }
});

Deno.test("a select whose onSend completed natively as its job clause lost, then aborted before the record was taken, accounts for the value once: delivered, it fires; cancelled, it keeps its CancellationError and the hook has the value", async () => {
  for (const how of ["delivered", "cancelled"] as const) {
    const dropped: number[] = [];
    using ch = new Channel<number>(0, {
      codec: codecs.f64,
      onUndeliveredElement: (v) => dropped.push(v),
    });
    let got: unknown;
    // As its clause is armed: the send clause completes natively (a receive of this isolate, or
    // the channel's cancel), then the job runs its handler, which loses (KC_EBUSY).
    const job = jobArmedAfter(() => {
      if (how === "delivered") got = ch.tryReceive();
      else ch.cancel();
    });
    const ctl = new AbortController();
    const outcome = select<string>((s) => {
      s.onSend(ch, 9, () => "sent");
      s.onJoin(job, () => "joined");
    }, { signal: ctl.signal });
    ctl.abort(new Error("given up")); // the record is not taken yet
    if (how === "delivered") {
      assert.equal(await within(outcome, 5_000, "the select"), "sent");
      assert.deepEqual(got, { state: "ok", value: 9 });
      assert.deepEqual(dropped, []);
    } else {
      await assert.rejects(within(outcome, 5_000, "the select"), { name: "CancellationError" });
      assert.deepEqual(dropped, [9]);
    }
    assert.equal(pending(), 0);
  }
});

Deno.test("a Job of the caller's own whose Disposable throws still lets the select settle: the error is reported, the winner's handler runs", async () => {
  using reported = catchReported();
  const thrown = new Error("the caller's dispose");
  const job = callersJob(() => ({
    [Symbol.dispose]() {
      throw thrown;
    },
  }));
  // Won by a channel clause, in the ring's drain (a send made natively, as another thread's).
  using ch = new Channel<number>(0, { codec: codecs.f64 });
  const handle = ch.handle;
  const received = select<number>((s) => {
    s.onReceive(ch, (v) => v);
    s.onJoin(job, () => -1);
    s.onTimeout(60_000, () => -2);
  });
  await until(() => pending() === 1, "the select queued natively");
  const x = new Float64Array([42]);
  assert.equal(
    library().symbols("test").kc_chan_send(handle, new Uint8Array(x.buffer), 8, 0n, 0, 1),
    0,
  );
  // Before, the dispose threw out of the select's cleanup: it never settled (and its timer
  // kept the process alive for the minute).
  assert.equal(await within(received, 5_000, "the select won by its channel clause"), 42);
  // Won in JavaScript (its timeout).
  const timedOut = select<string>((s) => {
    s.onReceive(ch, () => "received");
    s.onJoin(job, () => "joined");
    s.onTimeout(1, () => "timed out");
  });
  assert.equal(await within(timedOut, 5_000, "the select won by its timeout"), "timed out");
  assert.equal(pending(), 0);
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  // Each as it was thrown, the very object (reportUncaught wraps only a Proxy).
  assertSameItems(reported.errors, [thrown, thrown]);
});

Deno.test("a Proxy of a channel or an object made from Channel.prototype is refused with a named TypeError, not the engine's", async () => {
  using ch = new Channel<number>(1);
  for (const fake of [new Proxy(ch, {}), Object.create(Channel.prototype)]) {
    await assert.rejects(select((s) => s.onReceive(fake, (v) => v)), {
      name: "TypeError",
      message: /^Cannot add onReceive clause: expected a Channel, received a Channel look-alike$/,
    });
    await assert.rejects(select((s) => s.onSend(fake, 1, () => 1)), {
      name: "TypeError",
      message: /^Cannot add onSend clause: expected a Channel, received /,
    });
  }
  assert.equal(ch.trySend(1).state, "ok");
  assert.equal(await select<number>((s) => s.onReceive(ch, (v) => v)), 1);
});

Deno.test("select's unbiased option must be a boolean, as every flag option is: 'yes' or 0 was taken as whatever it coerced to", async () => {
  for (const unbiased of ["yes", 0, 1, null, {}]) {
    await assert.rejects(select((s) => s.onTimeout(0, () => 1), { unbiased } as never), {
      name: "TypeError",
      message: /^Cannot select: unbiased must be a boolean, received /,
    });
  }
  assert.equal(await select((s) => s.onTimeout(0, () => 1), { unbiased: true }), 1);
});

Deno.test("a select waiting on a channel is served before a send or receive of the same isolate that began after it", async () => {
  // Before, a send handed its value in JavaScript to a receive of this isolate that began
  // waiting after the select (in JavaScript, or queued natively behind it), passing over the
  // select, which the native queue had first; likewise a receive took a later send's value.
  // The select is a waiter queued natively, as another thread's is: the channel's waiting byte
  // sends the send through the native queue (`#handOff`; skipped, the select waits for ever),
  // and the ready byte makes the receive try natively first (`#poll`; skipped, it takes 2).
  for (const capacity of ["rendezvous", "conflated"] as const) {
    using ch = new Channel<number>(capacity);
    ch.share();
    const picked = select<string>((s) => s.onReceive(ch, (v) => `select ${v}`));
    const later = ch.receive(); // in JavaScript this turn, then queued natively
    for (const turn of ["this turn", "next turn"]) {
      if (turn === "next turn") await new Promise((r) => setTimeout(r, 0));
      assert.equal(await settled(picked), false, `${capacity}, ${turn}: the select waits`);
    }
    assert.deepEqual(ch.trySend(1), { state: "ok" });
    assert.equal(await within(picked, 5_000, "the select"), "select 1", capacity);
    assert.equal(await settled(later), false, `${capacity}: the later receive still waits`);
    assert.deepEqual(ch.trySend(2), { state: "ok" });
    assert.equal(await within(later, 5_000, "the receive"), 2, capacity);
  }
  using ch = new Channel<number>();
  ch.share();
  const offered = select<string>((s) => s.onSend(ch, 1, () => "sent"));
  const later = ch.send(2);
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }); // the select's, first
  assert.equal(await within(offered, 5_000, "the select"), "sent");
  assert.equal(await settled(later), false, "the later send still waits");
  assert.deepEqual(ch.tryReceive(), { state: "ok", value: 2 });
  await within(later, 5_000, "the send");
});

Deno.test("a receive takes the value of a send of the isolate waiting in JavaScript while a select that completed natively awaits its record", async () => {
  // A fresh channel (its bytes not mapped yet, so its first native try-receive is made): the
  // select was served (natively, by the trySend or by its other channel) and the send began
  // after it; until the select's record is drained it was still counted on the channel, and the
  // receive's hand-off queued that send natively and answered empty, though the send was there
  // to take. tryReceive and tryReceiveMany said empty, with a sender of this isolate waiting.
  for (const via of ["its channel", "another channel"] as const) {
    for (const take of ["tryReceive", "tryReceiveMany"] as const) {
      const what = `${via}, ${take}`;
      using ch = new Channel<number>();
      using other = new Channel<number>(1);
      ch.share();
      other.share();
      const picked = select<string>((s) => {
        s.onReceive(ch, (v) => `ch ${v}`);
        s.onReceive(other, (v) => `other ${v}`);
      });
      const win = via === "its channel" ? ch : other;
      assert.deepEqual(win.trySend(1), { state: "ok" }, `${what}: the select is served`);
      const later = ch.send(2); // waits in JavaScript: no receiver is queued now
      const got = take === "tryReceive"
        ? ch.tryReceive()
        : ch.tryReceiveMany(4) as { state: string; value?: unknown; values?: number[] };
      const want = take === "tryReceive" ? { state: "ok", value: 2 } : { state: "ok", values: [2] };
      assert.deepEqual(got, want, what);
      await within(later, 5_000, `${what}: the send`);
      assert.equal(
        await within(picked, 5_000, `${what}: the select`),
        via === "its channel" ? "ch 1" : "other 1",
      );
    }
  }
});

/** Uses `ch` past MAP_AFTER (channel.ts): its try-paths then read the mapped flag bytes. */
function mapFlags(ch: Channel<number>): void {
  for (let i = 0; i < 20; i++) assert.equal(ch.tryReceive().state, "empty");
}

Deno.test("a select waiting in the same turn is served before a receive of the isolate that began after it, on every kind of channel", async () => {
  // The select-order rule with the later receive still in JavaScript when the send comes (the
  // test above lets a turn pass, so that receive is queued natively by then): the select's
  // receive clause sets the channel's waiting byte, and the send goes through the native queue
  // (`#handOff`), on a fresh channel (bytes mapped there and then) as on a mapped one. Checked
  // in session 33 with the waiting-byte branch skipped while a select of the isolate waited on
  // the channel: it failed (the later receive took 1, and the select waited on).
  for (const capacity of ["rendezvous", 2, "conflated", "unlimited"] as const) {
    for (const fresh of [true, false]) {
      for (const how of ["trySend", "send", "trySendMany"] as const) {
        const what = `${capacity}, ${fresh ? "fresh" : "mapped"}, ${how}`;
        using ch = new Channel<number>(capacity);
        ch.share();
        if (!fresh) mapFlags(ch);
        const picked = select<string>((s) => s.onReceive(ch, (v) => `select ${v}`));
        const later = ch.receive(); // in JavaScript: this turn has not ended
        if (how === "trySend") assert.deepEqual(ch.trySend(1), { state: "ok" }, what);
        else if (how === "send") await within(ch.send(1), 5_000, `${what}: the send`);
        else assert.deepEqual(ch.trySendMany([1]), { state: "ok", sent: 1 }, what);
        assert.equal(await within(picked, 5_000, `${what}: the select`), "select 1", what);
        assert.equal(await settled(later), false, `${what}: the later receive still waits`);
        assert.deepEqual(ch.trySend(2), { state: "ok" }, what);
        assert.equal(await within(later, 5_000, `${what}: the receive`), 2, what);
      }
    }
  }
});

Deno.test("a select that the sent value's getter begins is served before a receive that the getter begins after it", async () => {
  // The send looked for a receiver queued natively (the waiting byte) before it copied the
  // value for a receiver of this isolate waiting in JavaScript; the copy ran the value's getter,
  // which gave that receiver up, began a select on the channel (queued natively) and then a
  // receive (in JavaScript, behind the select). Before, the send handed its value to that later
  // receive, passing the select over: the byte was not read again after the caller's code ran
  // (trySend and send; trySendMany reads its values before it looks for a receiver).
  for (const fresh of [true, false]) {
    for (const how of ["trySend", "send", "trySendMany"]) {
      const what = `${fresh ? "fresh" : "mapped"}, ${how}`;
      using ch = new Channel<{ x: number }>();
      ch.share();
      if (!fresh) {
        for (let i = 0; i < 20; i++) assert.equal(ch.tryReceive().state, "empty");
      }
      const ctl = new AbortController();
      const first = ch.receive({ signal: ctl.signal });
      let picked: Promise<string> | undefined;
      let later: Promise<{ x: number }> | undefined;
      let reads = 0;
      const value = {
        get x() {
          if (reads++ === 0) {
            ctl.abort(new Error("given up"));
            picked = select<string>((s) => s.onReceive(ch, (v) => `select ${v.x}`));
            later = ch.receive();
          }
          return 1;
        },
      };
      if (how === "trySend") assert.deepEqual(ch.trySend(value), { state: "ok" }, what);
      else if (how === "send") await within(ch.send(value), 5_000, `${what}: the send`);
      else assert.deepEqual(ch.trySendMany([value]), { state: "ok", sent: 1 }, what);
      assert.equal(reads, 1, `${what}: the value is read once`);
      await assert.rejects(first, { message: "given up" });
      assert.equal(await settled(later!), false, `${what}: the later receive took the value`);
      assert.equal(await within(picked!, 5_000, `${what}: the select`), "select 1", what);
      assert.deepEqual(ch.trySend({ x: 2 }), { state: "ok" }, what);
      assert.deepEqual(await within(later!, 5_000, `${what}: the receive`), { x: 2 }, what);
    }
  }
});

Deno.test("a select with a receive clause and a send clause on two channels meets the isolate's later operations on both in order, whichever clause wins", async () => {
  // A select queued natively with a receive clause on `a` and a send clause on `b`, then a
  // receive on `a` and sends on `b` of this isolate, waiting in JavaScript. Whichever clause
  // wins, the other stays queued, stale, until the select's record is drained: the later
  // operations there go on in their order, and a try-operation there still meets this
  // isolate's waiting partner. Before bd7391f, while that record was not drained, a receive
  // on `b` queued this isolate's senders natively and answered empty (on channels whose bytes
  // were not mapped yet).
  for (const fresh of [true, false]) {
    for (const wins of ["send clause", "receive clause"] as const) {
      for (const take of ["tryReceive", "tryReceiveMany"] as const) {
        const what = `${fresh ? "fresh" : "mapped"}, the ${wins} wins, ${take}`;
        using a = new Channel<number>();
        using b = new Channel<number>();
        a.share();
        b.share();
        if (!fresh) {
          mapFlags(a);
          mapFlags(b);
        }
        const picked = select<string>((s) => {
          s.onReceive(a, (v) => `a ${v}`);
          s.onSend(b, 10, () => "sent");
        });
        const ra = a.receive();
        const sb = [b.send(20), b.send(21)];
        // What `take` gets from `b` now: `values`, in order (of three tryReceives, then empty).
        const assertFromB = (values: number[]) => {
          if (take === "tryReceiveMany") {
            assert.deepEqual(b.tryReceiveMany(5), { state: "ok", values }, what);
            return;
          }
          const ok = values.map((value) => ({ state: "ok", value }));
          assert.deepEqual(
            [b.tryReceive(), b.tryReceive(), b.tryReceive()],
            [...ok, { state: "empty" }].slice(0, 3),
            what,
          );
        };
        if (wins === "send clause") {
          assertFromB([10, 20, 21]);
          assert.deepEqual(a.trySend(1), { state: "ok" }, what);
          assert.equal(await within(picked, 5_000, `${what}: the select`), "sent", what);
          assert.equal(await within(ra, 5_000, `${what}: the receive`), 1, what);
        } else {
          assert.deepEqual(a.trySend(1), { state: "ok" }, what);
          assertFromB([20, 21]);
          assert.deepEqual(a.trySend(2), { state: "ok" }, what);
          assert.equal(await within(picked, 5_000, `${what}: the select`), "a 1", what);
          assert.equal(await within(ra, 5_000, `${what}: the receive`), 2, what);
        }
        await within(Promise.all(sb), 5_000, `${what}: the sends`);
      }
    }
  }
});

Deno.test("a select with a receive and a send clause on one channel is served in its place among the isolate's operations there", async () => {
  // Neither of its clauses meets the other. A send of this isolate that began after it meets
  // its receive clause (the send's native try-send), a receive that began after it takes its
  // send clause's value (`#poll`: the ready byte), and the operations after those meet each
  // other. Before bd7391f, with the select served by the receive and its record not drained,
  // the tryReceive said empty with the send of 20 waiting (a fresh channel).
  for (const fresh of [true, false]) {
    for (const first of ["send", "receive"] as const) {
      const what = `${fresh ? "fresh" : "mapped"}, a ${first} first`;
      using ch = new Channel<number>();
      ch.share();
      if (!fresh) mapFlags(ch);
      const picked = select<string>((s) => {
        s.onReceive(ch, (v) => `got ${v}`);
        s.onSend(ch, 10, () => "sent");
      });
      if (first === "send") {
        const sent = ch.send(20);
        const got = ch.receive();
        assert.deepEqual(ch.trySend(1), { state: "ok" }, what);
        assert.equal(await within(picked, 5_000, `${what}: the select`), "got 20", what);
        await within(sent, 5_000, `${what}: the send`);
        assert.equal(await within(got, 5_000, `${what}: the receive`), 1, what);
      } else {
        const got = ch.receive();
        const sent = ch.send(20);
        assert.deepEqual(ch.tryReceive(), { state: "ok", value: 20 }, what);
        assert.equal(await within(picked, 5_000, `${what}: the select`), "sent", what);
        assert.equal(await within(got, 5_000, `${what}: the receive`), 10, what);
        await within(sent, 5_000, `${what}: the send`);
      }
    }
  }
});

Deno.test("a select on a Channel.from copy of this isolate orders the operations on the original as its own", async () => {
  // The copy and the original share the channel's waiters in this isolate and its flag bytes:
  // the select is served before the operations on the original that began after it, and once
  // served (its record not yet drained) it holds back none of them. Before bd7391f the second
  // tryReceive said empty with the send of 4 waiting (a fresh channel).
  for (const fresh of [true, false]) {
    const what = fresh ? "fresh" : "mapped";
    using ch = new Channel<number>();
    using copy = Channel.from<number>(ch.share());
    if (!fresh) mapFlags(ch);
    const picked = select<string>((s) => s.onReceive(copy, (v) => `select ${v}`));
    const later = ch.receive();
    assert.deepEqual(ch.trySend(1), { state: "ok" }, what);
    assert.deepEqual(ch.trySend(2), { state: "ok" }, what);
    assert.equal(await within(picked, 5_000, `${what}: the select`), "select 1", what);
    assert.equal(await within(later, 5_000, `${what}: the receive`), 2, what);
    const offered = select<string>((s) => s.onSend(copy, 3, () => "sent"));
    const sent = ch.send(4);
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 3 }, what);
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 4 }, what);
    assert.equal(await within(offered, 5_000, `${what}: the select`), "sent", what);
    await within(sent, 5_000, `${what}: the send`);
  }
});

Deno.test("onTimeout(0), the immediate default, fires without a turn of the event loop (as documented)", async () => {
  // A loop polling with it runs no timer meanwhile (README, Select from TypeScript): a sender on
  // a timer is never heard from until the loop awaits something else.
  for (const shared of [false, true]) {
    using ch = new Channel<number>(1);
    if (shared) ch.share();
    let fired = false;
    const timer = setTimeout(() => {
      fired = true;
      ch.trySend(1);
    }, 0);
    for (let i = 0; i < 100; i++) {
      const r = await select<number | null>((s) => {
        s.onReceive(ch, (v) => v);
        s.onTimeout(0, () => null);
      });
      assert.equal(r, null);
    }
    assert.equal(fired, false, `shared ${shared}`);
    clearTimeout(timer);
  }
});

Deno.test("a select whose value's getter disposes its local channel, or closes the library, names the select in its error, and a disposed local channel's handle names the read: not a share the caller never made", async () => {
  // Each makes the local channel native (a select after encoding its values): that step said
  // "Cannot share channel: the channel was disposed".
  const disposed = new Channel<number>(1);
  disposed[Symbol.dispose]();
  assert.throws(() => disposed.handle, {
    name: "InvalidHandleError",
    message: "Cannot get handle: the channel was disposed (KC_EBADH)",
  });
  const ch = new Channel<unknown>(1);
  const value = {
    get x() {
      ch[Symbol.dispose]();
      return 1;
    },
  };
  await assert.rejects(select((s) => s.onSend(ch, value, () => "sent")), {
    name: "InvalidHandleError",
    message: "Cannot select: the channel was disposed (KC_EBADH)",
  });
  // In a process of its own: it closes the library.
  const res = await evalScript(`
    import { Channel, closeLibrary, select } from "./mod.ts";
    const ch = new Channel(1);
    const value = { get x() { closeLibrary(); return 1; } };
    await select((s) => s.onSend(ch, value, () => "sent")).then(
      () => console.log("resolved"),
      (e) => console.log(e.name + ": " + e.message),
    );
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(
    res.stdout.trim(),
    "LibraryClosedError: Cannot select: the kcoro library is closed (KC_ESHUTDOWN)",
  );
});

Deno.test("an aborted select whose clause's channel another thread closed or cancelled in the same turn, before its record drained, rejects with the abort's reason; a send clause a cancel failed keeps its CancellationError", async () => {
  const bridge = Bridge.of(library());
  for (const end of ["close", "cancel"] as const) {
    for (const clause of ["onReceive", "onReceiveCatching", "onSend"] as const) {
      for (const order of ["end first", "abort first"] as const) {
        // "native": the end comes through the C ABI, as another thread's or isolate's does;
        // "shared" and "local" (native once in a select) end it through the channel itself.
        for (const mode of ["native", "shared", "local"] as const) {
          const what = `${clause}, ${end}, ${order}, ${mode}`;
          const dropped: number[] = [];
          using ch = new Channel<number>(clause === "onSend" ? 1 : 0, {
            codec: codecs.f64,
            onUndeliveredElement: (v) => dropped.push(v),
          });
          if (mode !== "local") ch.share();
          if (clause === "onSend") await ch.send(1);
          const before = bridge.pending;
          const ac = new AbortController();
          const p = select((s) => {
            if (clause === "onSend") s.onSend(ch, 2, () => "sent");
            else if (clause === "onReceive") s.onReceive(ch, () => "received");
            else s.onReceiveCatching(ch, (r) => r.state);
          }, { signal: ac.signal });
          await until(() => bridge.pending > before, `${what}: queued natively`);
          const natively = mode === "native", endFirst = order === "end first";
          const { got, reason } = await endAndAbort(ch, { end, natively, endFirst }, ac, p, what);
          if (mode !== "native" && order === "end first" && clause !== "onSend") {
            // The isolate's own end settles the select before it returns (README's abort
            // paragraph): the abort after it finds it done, as closed or cancelled.
            if (clause === "onReceiveCatching") {
              assert.deepEqual(got, { status: "fulfilled", value: "closed" }, what);
            } else {
              assert.equal(got.status, "rejected", what);
              const e = (got as PromiseRejectedResult).reason;
              assert.ok(
                end === "close" ? e instanceof ClosedReceiveError : e instanceof CancellationError,
                `${what}: ${e}`,
              );
              const message = end === "close" ? "Channel was closed" : "Channel was cancelled";
              assert.equal(e.message, message, what);
            }
            assert.deepEqual(dropped, [], what);
            continue;
          }
          assert.equal(got.status, "rejected", what);
          const r = (got as PromiseRejectedResult).reason;
          if (clause === "onSend" && end === "cancel" && order === "end first") {
            // The cancel dropped the clause's value to the hook: that outcome stands.
            assert.ok(r instanceof CancellationError, `${what}: ${r}`);
            assert.equal(r.message, "Channel was cancelled", what);
            assert.deepEqual(dropped.sort(), [1, 2], what);
            continue;
          }
          assert.equal(r, reason, what);
          // Another thread's cancel: what it dropped reaches the hook at the isolate's next
          // operation on the channel (README's cancel paragraph).
          if (mode === "native" && end === "cancel") ch.tryReceive();
          // A send clause's value was not sent: the abort cancelled it, so it went to the hook
          // (before, it stayed the caller's), once, with what a cancel dropped (the buffered 1).
          const expected = clause !== "onSend" ? [] : end === "cancel" ? [1, 2] : [2];
          assert.deepEqual(dropped.sort(), expected, what);
        }
      }
    }
  }
});

/** A channel whose onUndeliveredElement records what it gets. */
function hooked(capacity: number) {
  const got: unknown[] = [];
  const ch = new Channel<unknown>(capacity, { onUndeliveredElement: (v) => got.push(v) });
  return { ch, got };
}

Deno.test("a select that a channel's end fails hands every onSend clause's value to its own channel's hook, once (Kotlin disposes the other clauses)", async () => {
  // Both channels cancelled while the select waits, in one turn: the first cancel fails the
  // select (its clause's value to its hook), the second finds it completed. Before, the second
  // clause's value was freed and reached no hook: the caller, told only "cancelled", could not
  // know which of its values a hook had.
  {
    const a = hooked(0), b = hooked(0);
    const waiting = select((s) => {
      s.onSend(a.ch, "A", () => "a");
      s.onSend(b.ch, "B", () => "b");
      s.onSend(a.ch, "A2", () => "a again");
    });
    assert.equal(await settled(waiting), false);
    a.ch.cancel();
    b.ch.cancel();
    await assert.rejects(waiting, CancellationError);
    assert.deepEqual([a.got, b.got], [["A", "A2"], ["B"]], "both cancelled, in clause order");
    a.ch[Symbol.dispose]();
    b.ch[Symbol.dispose]();
    assert.deepEqual([a.got, b.got], [["A", "A2"], ["B"]], "once");
  }
  // Only one cancelled: the other clause's value goes to its (open) channel's hook too, not
  // to its receivers.
  {
    const a = hooked(0), b = hooked(1);
    b.ch.trySend("full");
    const waiting = select((s) => {
      s.onSend(a.ch, { n: 1 }, () => "a");
      s.onSend(b.ch, { n: 2 }, () => "b");
      s.onSend(b.ch, { n: 3 }, () => "b again");
    });
    assert.equal(await settled(waiting), false);
    a.ch.cancel();
    await assert.rejects(waiting, CancellationError);
    assert.deepEqual([a.got, b.got], [[{ n: 1 }], [{ n: 2 }, { n: 3 }]], "one cancelled");
    assert.deepEqual(b.ch.tryReceive(), { state: "ok", value: "full" });
    assert.deepEqual(b.ch.tryReceive(), { state: "empty" });
    a.ch[Symbol.dispose]();
    b.ch[Symbol.dispose]();
    assert.deepEqual(b.got, [{ n: 2 }, { n: 3 }]);
  }
  // Found ended at once (the probe), and a receive clause's closed channel: the same.
  {
    const a = hooked(0), b = hooked(0);
    a.ch.close();
    await assert.rejects(
      select((s) => {
        s.onSend(a.ch, "A", () => "a");
        s.onSend(b.ch, "B", () => "b");
      }),
      ClosedSendError,
    );
    assert.deepEqual([a.got, b.got], [["A"], ["B"]], "found closed");
    using r = new Channel<number>();
    r.close();
    await assert.rejects(
      select((s) => {
        s.onSend(b.ch, "B2", () => "b");
        s.onReceive(r, () => "r");
      }),
      ClosedReceiveError,
    );
    assert.deepEqual(b.got, ["B", "B2"], "a receive clause's channel closed");
    a.ch[Symbol.dispose]();
    b.ch[Symbol.dispose]();
  }
  // Unchanged: a select that a clause won hands no value of a losing clause to a hook (they
  // stay the caller's). One that its signal aborted is cancelled: each onSend value goes to its
  // own channel's hook, as an aborted send's does (before, it stayed the caller's).
  {
    const a = hooked(0), b = hooked(1);
    const got = select<string>((s) => {
      s.onSend(a.ch, "A", () => "a");
      s.onSend(b.ch, "B", () => "b");
    });
    assert.equal(await got, "b");
    assert.deepEqual([a.got, b.got], [[], []]);
    const ac = new AbortController();
    const aborted = select((s) => s.onSend(a.ch, "A2", () => "a"), { signal: ac.signal });
    ac.abort("stop");
    await assert.rejects(aborted, (e) => e === "stop");
    assert.deepEqual([a.got, b.got], [["A2"], []]);
    a.ch[Symbol.dispose]();
    b.ch[Symbol.dispose]();
    assert.deepEqual([a.got, b.got], [["A2"], ["B"]]); // b's buffered value, at its dispose
  }
  assert.equal(pending(), 0);
});

Deno.test("a select failed by a channel's end still refuses every later onSend clause's value when one clause's refusal throws: none left encoded, none lost to its hook", async () => {
  // Nothing throws there in practice; patched to. Before, the loop stopped at the throwing
  // clause, the later ones' `encoded` flags already cleared: their values leaked natively and
  // reached no hook.
  using reported = catchReported();
  const a = hooked(0), b = hooked(0), c = hooked(0);
  for (const x of [a, b, c]) x.ch.share(); // the select waits natively
  const boom = new Error("refusal failed");
  // Its refusal throws (`_testRefusalFault`, where this test patched `_refusedSettled`).
  _testRefusalFault((ch) => {
    if (ch === b.ch) throw boom;
  });
  using _fault = { [Symbol.dispose]: () => _testRefusalFault(null) };
  const waiting = select((s) => {
    s.onSend(a.ch, "A", () => "a");
    s.onSend(b.ch, "B", () => "b");
    s.onSend(c.ch, "C", () => "c");
  });
  assert.equal(await settled(waiting), false);
  a.ch.cancel();
  await assert.rejects(waiting, CancellationError);
  await until(() => reported.errors.length > 0, "the refusal's error reported");
  assertSameItems(reported.errors, [boom]);
  assert.deepEqual([a.got, b.got, c.got], [["A"], [], ["C"]]);
  for (const x of [a, b, c]) x.ch[Symbol.dispose]();
  assert.deepEqual(c.got, ["C"], "once");
  // Checked again after the disposes, which `reported` still catches (and hides).
  assert.deepEqual(reported.errors, [boom], "the disposes reported nothing");
  assert.equal(pending(), 0);
});

Deno.test("a select that a cancel fails hands the onSend values to one hook shared by their channels: the failing clause's first when the channel was cancelled before, last when cancelled while it waits", async () => {
  // README (Select from TypeScript): the failing clause's value, then the others' in clause
  // order; a cancel that finds the select waiting hands its clause's value over with the rest of
  // what it dropped, once the waits it failed settled, after the others'.
  for (const shared of [false, true]) {
    for (const when of ["before", "while it waits"] as const) {
      const got: string[] = [];
      const make = (name: string) => {
        const ch = new Channel<number>(0, { onUndeliveredElement: (v) => got.push(name + v) });
        if (shared) ch.share();
        return ch;
      };
      using a = make("a"), b = make("b"), c = make("c");
      if (when === "before") b.cancel();
      const failed = select((s) => {
        s.onSend(a, 1, () => "a");
        s.onSend(b, 2, () => "b");
        s.onSend(c, 3, () => "c");
      });
      if (when === "while it waits") {
        assert.equal(await settled(failed), false);
        b.cancel();
      }
      await assert.rejects(failed, CancellationError);
      assert.deepEqual(
        got,
        when === "before" ? ["b2", "a1", "c3"] : ["a1", "c3", "b2"],
        `shared ${shared}, cancelled ${when}`,
      );
    }
  }
});

Deno.test("a losing onSend value refused on a channel still open reaches its hook after what a copy dropped there before it", async () => {
  // The copy's drop-oldest trySend drops 1 natively, kept for the creator's hook; nothing of the
  // creator's looks at that list before the select. The select fails on `a` (closed, first in
  // clause order), and its clause on `b` is refused: `b`'s hook must get 1 before "B", in drop
  // order. Before (without `#refused` emptying the kept list first), "B" came first and 1 only
  // at `b`'s next operation or dispose.
  const got: unknown[] = [];
  const b = new Channel<unknown>(1, {
    overflow: "drop-oldest",
    onUndeliveredElement: (v) => got.push(v),
  });
  const copy = Channel.from(b.share());
  using a = new Channel<unknown>(0);
  a.close();
  assert.equal(copy.trySend(1).state, "ok");
  assert.equal(copy.trySend(2).state, "ok"); // drops 1, kept natively for b's hook
  assert.deepEqual(got, []);
  await assert.rejects(
    select((s) => {
      s.onSend(a, "A", () => "a");
      s.onSend(b, "B", () => "b");
    }),
    ClosedSendError,
  );
  assert.deepEqual(got, [1, "B"]);
  copy[Symbol.dispose]();
  b[Symbol.dispose]();
  assert.deepEqual(got, [1, "B", 2]); // the value buffered, at the creator's dispose
  assert.equal(pending(), 0);
});

/**
 * Records, until disposed, the kc_chan_drop and kc_chan_unhold calls given `handle` (set it: by
 * name, or by `copyOf`) or the ended-handle marker (`<name> (ended)`), in `calls`, oldest first.
 * `copyOf(capacity)` starts over (`calls` emptied) on a new `hooked` channel `b`, shared, whose
 * handle it records, and a `Channel.from` copy `bc` of it.
 */
function dropsAndUnholds(): {
  calls: string[];
  handle: number;
  copyOf(capacity: number): { b: ReturnType<typeof hooked>; bc: Channel<unknown> };
} & Disposable {
  const calls: string[] = [];
  const drops = {
    calls,
    handle: -1,
    copyOf(capacity: number) {
      calls.length = 0;
      const b = hooked(capacity);
      drops.handle = b.ch.share().handle;
      return { b, bc: Channel.from<unknown>(b.ch.share()) };
    },
  };
  const spy = spyCalls(
    librarySymbols(library(), "test"),
    ["kc_chan_drop", "kc_chan_unhold"],
    (n, args) => {
      if (args[0] === drops.handle) calls.push(n);
      if (args[0] === _ENDED_HANDLE) calls.push(`${n} (ended)`);
    },
  );
  return Object.assign(drops, { [Symbol.dispose]: () => spy[Symbol.dispose]() });
}

Deno.test("a losing onSend value refused on a Channel.from copy a hook disposed meanwhile reaches the creator's hook: the copy's hold is given back only once the select settled", async () => {
  // `a`'s end fails the waiting select, and the copy `bc` is disposed: by `a`'s hook, which
  // `a.cancel()` runs (after it drained the select's record: the losing clause on `bc` is refused
  // first), or, with `a` cancelled natively (as another thread would), before the select's
  // record drains: the select completed natively keeps `bc`'s hold (`channelDisposed`), and the
  // losing clause on `bc` is refused through it. Before, the dispose had given the copy's hold
  // back (its handle dead if it was the last holder): the refusal called kc_chan_drop on the
  // ended-handle marker, which refused it, and the value was freed, reaching no hook and counted
  // nowhere. (Only the native cancel reaches that: since `cancel()` drains first, the hook's
  // dispose comes after the refusal.)
  using drops = dropsAndUnholds();
  for (const by of ["a's hook", "a native cancel"] as const) {
    const { b, bc } = drops.copyOf(0);
    const gotA: unknown[] = [];
    const a = new Channel<unknown>(0, {
      onUndeliveredElement: (v) => {
        gotA.push(v);
        if (by === "a's hook") bc[Symbol.dispose]();
      },
    });
    const ha = a.share().handle;
    const waiting = select((s) => {
      s.onSend(a, "A", () => "a");
      s.onSend(bc, "B", () => "b");
    });
    assert.equal(await settled(waiting), false, by);
    if (by === "a's hook") a.cancel();
    else {
      assert.equal(library().symbols("test").kc_chan_cancel(ha), 0, by);
      bc[Symbol.dispose](); // the select's record not drained yet
      assert.deepEqual(drops.calls, [], `${by}: the hold kept at the dispose`);
    }
    await assert.rejects(waiting, CancellationError);
    assert.deepEqual(drops.calls, ["kc_chan_drop", "kc_chan_unhold"], `${by}: dropped while held`);
    a[Symbol.dispose]();
    b.ch[Symbol.dispose](); // what the copy dropped, kept natively, goes to the hook
    assert.deepEqual([gotA, b.got], [["A"], ["B"]], by);
    assert.equal(pending(), 0, by);
  }
});

Deno.test("a losing onSend value refused on a Channel.from copy that a hook the select's own settling ran disposed reaches the creator's hook: the hold is kept until the select settled", async () => {
  // `f` is closed before the select (it fails at once) or cancelled under it (it waits): settling,
  // the select refuses the other clauses' values in clause order, and `a`'s hook, run by the
  // refusal of `a`'s, disposes the copy `bc` before its clause's value is refused. Before, no
  // select kept the hold (the settling one had stopped watching `bc`, or never watched it) and
  // the dispose gave it back: the refusal was given the ended-handle marker, and the value was
  // freed, reaching no hook.
  using drops = dropsAndUnholds();
  for (const how of ["closed before", "cancelled while it waits"] as const) {
    const { b, bc } = drops.copyOf(0);
    const f = hooked(0);
    f.ch.share();
    const gotA: unknown[] = [];
    using a = new Channel<unknown>(0, {
      onUndeliveredElement: (v) => {
        gotA.push(v);
        bc[Symbol.dispose]();
      },
    });
    a.share();
    if (how === "closed before") f.ch.close();
    const waiting = select((s) => {
      s.onSend(f.ch, "F", () => "f");
      s.onSend(a, "A", () => "a");
      s.onSend(bc, "B", () => "b");
    });
    if (how === "cancelled while it waits") {
      assert.equal(await settled(waiting), false, how);
      f.ch.cancel();
    }
    await assert.rejects(waiting, how === "closed before" ? ClosedSendError : CancellationError);
    // Dropped while still held, and the hold given back once (after the drop).
    assert.deepEqual(drops.calls, ["kc_chan_drop", "kc_chan_unhold"], how);
    f.ch[Symbol.dispose]();
    b.ch[Symbol.dispose](); // what the copy dropped, kept natively, goes to the hook
    assert.deepEqual([f.got, gotA, b.got], [["F"], ["A"], ["B"]], how);
  }
  // A copy that no hook disposed keeps its own hold past the select: nothing given back.
  const { b, bc: copy } = drops.copyOf(1);
  using bc = copy;
  using f = new Channel<unknown>(0);
  f.close();
  await assert.rejects(
    select((s) => {
      s.onSend(f, "F", () => "f");
      s.onSend(bc, "B", () => "b");
    }),
    ClosedSendError,
  );
  assert.deepEqual(drops.calls, ["kc_chan_drop"], "not disposed");
  assert.deepEqual(bc.trySend("C"), { state: "ok" }, "the copy still holds the channel");
  b.ch[Symbol.dispose]();
  assert.deepEqual(b.got, ["B", "C"]);
  assert.equal(pending(), 0);
});

Deno.test("a select that a channel clause fails at once does not reach an onSend clause after an onAwait or onJoin whose job is complete or lazy: its value stays the caller's", async () => {
  // The select stops at the failing clause (Kotlin registers no clause after a selected one):
  // the clauses after the job's are not looked at, so no hook gets their values (README).
  for (const job of ["complete", "lazy"] as const) {
    const a = hooked(0), b = hooked(0);
    a.ch.close();
    await coroutineScope(async (scope) => {
      const lazy = scope.launch(() => {}, { lazy: true });
      const done = new CompletableDeferred<number>();
      done.complete(1);
      await assert.rejects(
        select((s) => {
          s.onSend(a.ch, "A", () => "a");
          if (job === "lazy") s.onJoin(lazy, () => "joined");
          else s.onAwait(done, () => "awaited");
          s.onSend(b.ch, "B", () => "b");
        }),
        ClosedSendError,
      );
      assert.equal(lazy.state, "new", `${job}: the lazy job was not started`);
      lazy.cancel();
    });
    assert.deepEqual([a.got, b.got], [["A"], []], job);
    a.ch[Symbol.dispose]();
    b.ch[Symbol.dispose]();
    assert.deepEqual(b.got, [], job);
  }
  assert.equal(pending(), 0);
});

Deno.test("a losing onSend value refused on a channel a hook disposed meanwhile reaches its hook with no call on the dead handle", async () => {
  // `a`'s cancel fails the waiting select; `a`'s hook (run by that cancel, before the select's
  // record drains) disposes `b`. The losing clause on `b` is then refused: its value goes to
  // `b`'s hook, and nothing may call `b`'s dead handle, whose value a later channel may have
  // by then. Before, the refusal took from its undelivered list (kc_chan_take_undelivered) and
  // counted the drop on it (kc_chan_add_metrics at the end of the turn).
  const names = ["kc_chan_take_undelivered", "kc_chan_add_metrics", "kc_chan_drop"];
  const onDead: string[] = [];
  let dead = -1;
  using _ = spyCalls(librarySymbols(library(), "test"), names, (n, args) => {
    if (args[0] === dead) onDead.push(n);
  });
  const b = hooked(0);
  const handle = b.ch.share().handle;
  const gotA: unknown[] = [];
  using a = new Channel<unknown>(0, {
    onUndeliveredElement: (v) => {
      gotA.push(v);
      b.ch[Symbol.dispose]();
      dead = handle;
    },
  });
  a.share();
  const waiting = select((s) => {
    s.onSend(a, "A", () => "a");
    s.onSend(b.ch, "B", () => "b");
  });
  assert.equal(await settled(waiting), false);
  a.cancel();
  await assert.rejects(waiting, CancellationError);
  assert.deepEqual([gotA, b.got], [["A"], ["B"]]);
  await new Promise((r) => setTimeout(r, 0)); // the end of the turn's count flush
  assert.deepEqual(onDead, [], "calls on b's dead handle");
  assert.equal(pending(), 0);
});

Deno.test("a send clause's value whose release throws as the select ends: the select settles as it would have, the error reported", async () => {
  // `#freeValues` frees the send clauses' values that were not sent, and threw the first error
  // a release threw once all were freed. Where it ran before the select settled, the throw cut
  // the settling off: an immediate default lost to the error (the select rejected with it), a
  // channel clause that had sent did too, its handler never run, a start that failed rejected
  // with the release's error rather than its own, and an abort left the select pending for
  // ever (the error thrown into the abort listener). No release throws in practice (the
  // codecs are the library's own and onUndeliveredElement's errors are reported): one is made
  // to here, the native free throwing once after it freed.
  using reported = catchReported();
  const lib = library();
  const table = librarySymbols(lib, "test") as unknown as Record<
    string,
    (...a: unknown[]) => unknown
  >;
  const names = ["kc_desc_free", "kc_buf_free"];
  const real = names.map((n) => table[n]);
  let armed = false;
  const boom = new Error("release failed");
  names.forEach((n, i) => {
    table[n] = (...args: unknown[]) => {
      const r = real[i](...args);
      if (armed) {
        armed = false;
        throw boom;
      }
      return r;
    };
  });
  try {
    const bytes = () => new Channel<Uint8Array>(0, { codec: codecs.bytes });
    const value = new Uint8Array(64).fill(7);

    // An immediate default wins: the send clause's value is freed before it fires.
    {
      using ch = bytes();
      armed = true;
      const got = await select((s) => {
        s.onSend(ch, value, () => "sent");
        s.onTimeout(0, () => "default");
      });
      assert.equal(got, "default", "default");
      assert.equal(armed, false, "default: a release ran");
    }

    // A channel clause wins at once: the other send clause's value is freed before it fires.
    {
      using full = bytes();
      using room = new Channel<Uint8Array>(1, { codec: codecs.bytes });
      armed = true;
      const got = await select((s) => {
        s.onSend(full, value, () => "full");
        s.onSend(room, value, () => "room");
      });
      assert.equal(got, "room", "channel win");
      assert.equal(armed, false, "channel win: a release ran");
      assert.deepEqual(room.tryReceive(), { state: "ok", value }, "channel win: sent");
    }

    // Its start fails (a later clause's value cannot be encoded): the earlier value is freed.
    {
      using ch = bytes();
      using f64 = new Channel<number>(0, { codec: codecs.f64 });
      armed = true;
      await assert.rejects(
        select((s) => {
          s.onSend(ch, value, () => "sent");
          s.onSend(f64, "not a number" as unknown as number, () => "f64");
        }),
        (e) => e !== boom && e instanceof TypeError,
        "start failed",
      );
      assert.equal(armed, false, "start failed: a release ran");
    }

    // Aborted while it waits: its value is freed, and it rejects with the signal's reason.
    {
      using ch = bytes();
      const abort = new AbortController();
      const waiting = select((s) => s.onSend(ch, value, () => "sent"), { signal: abort.signal });
      assert.equal(await settled(waiting), false, "aborted: waits");
      armed = true;
      const reason = new Error("stop");
      abort.abort(reason);
      assert.equal(await within(waiting.catch((e) => e), 10_000, "aborted select"), reason);
      assert.equal(armed, false, "aborted: a release ran");
    }
  } finally {
    armed = false;
    names.forEach((n, i) => table[n] = real[i]);
  }
  assertSameItems(reported.errors, [boom, boom, boom, boom]);
  assert.equal(pending(), 0);
});

Deno.test("a select on local channels that nothing completes lets the process end, as a local receive does", async () => {
  // Only this isolate could complete it (the channels' handles never left its JavaScript), so
  // it keeps no ring wait outstanding: Deno ends the program and reports the unresolved
  // top-level await (Go's "all goroutines are asleep"). Before, the select made the channels
  // native and the isolate's ring wait kept the process alive until killed at the bound.
  const res = await evalScript(
    `
    import { Channel, select } from "./mod.ts";
    const a = new Channel(), b = new Channel(4);
    await select((s) => {
      s.onReceive(a, (v) => v);
      s.onSend(a, 1, () => 0);
      s.onReceive(b, (v) => v);
    });
  `,
    { timeoutMs: 20_000 },
  );
  assert.equal(res.signal, null, "killed at the bound: the select kept the process alive");
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /never resolved/);
  // The same for a plain wait on a channel a select made native (its waits queue natively).
  const later = await evalScript(
    `
    import { Channel, library, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until } from "./tests/support.ts";
    const a = new Channel();
    if (await select((s) => { s.onReceive(a, (v) => v); s.onTimeout(0, () => "none"); }) !== "none") {
      throw new Error("not the default");
    }
    const r = a.receive(); // queued natively at the end of this turn
    await until(() => Bridge.of(library()).pending === 1, "the receive queued natively");
    await r;
  `,
    { timeoutMs: 20_000 },
  );
  assert.equal(later.signal, null, "killed at the bound: the native receive kept it alive");
  assert.notEqual(later.code, 0);
  assert.match(later.stderr, /never resolved/);
});

Deno.test("a select on a channel whose handle leaves it, before or while it waits, keeps the process alive until completed", async () => {
  // A Worker or native code may complete it: the ring wait keeps the process alive, as a
  // pending timer does, until the send that comes from a timer that does not itself keep it
  // alive. The handle read (or shared) after the select began: the wait starts then.
  const cases = [
    ["ch.handle", ""],
    ["ch.share()", ""],
    ["", "ch.share()"], // shared before the select: outside from the start
  ];
  for (const [during, before] of cases) {
    const res = await evalScript(
      `
      import { Channel, library, select } from "./mod.ts";
      import { Bridge } from "./src/bridge.ts";
      const ch = new Channel(), other = new Channel();
      ${before};
      const p = select((s) => { s.onReceive(ch, (v) => v); s.onReceive(other, (v) => v); });
      const bridge = Bridge.of(library());
      if (bridge.pending !== 1) throw new Error("not queued natively");
      if (bridge.pendingOutside !== ${before === "" ? 0 : 1}) throw new Error("wrongly counted");
      ${during};
      if (bridge.pendingOutside !== 1) throw new Error("still inside");
      Deno.unrefTimer(setTimeout(() => Channel.from(ch.share()).trySend("late"), 300));
      console.log(await p);
    `,
      { timeoutMs: 20_000 },
    );
    assert.equal(res.code, 0, `${during || before}: ${res.stderr}`);
    assert.equal(res.stdout.trim(), "late");
  }
});

/** Makes `ch` native: a select's clause on it, given up by a timeout of 0. */
async function makeNative(ch: Channel<number>): Promise<void> {
  await select((s) => {
    s.onReceive(ch, () => 0);
    s.onTimeout(0, () => 0);
  });
}

/**
 * Waits until `count` waits are queued natively with no ring wait outstanding, and asserts that
 * none is queued outside (inside: each completed by this isolate's own code).
 */
async function queuedInside(bridge: Bridge, count: number, what: string): Promise<void> {
  await until(() => bridge.pending >= count && !bridge.waiting, `${what}: queued natively`);
  assert.equal(bridge.pendingOutside, 0, `${what}: inside`);
}

/**
 * Runs `act` from a timer's callback (this isolate's own later code); resolves then with
 * whether a ring wait was outstanding as it ran.
 */
function later(bridge: Bridge, act: () => void): Promise<boolean> {
  return new Promise((resolve) =>
    setTimeout(() => {
      const waiting = bridge.waiting;
      act();
      resolve(waiting);
    }, 0)
  );
}

Deno.test("a select on local channels is completed by this isolate's own later code with no ring wait outstanding", async () => {
  const bridge = Bridge.of(library());
  // Each case: a select on channels whose handles never left this isolate, completed from a
  // timer's callback by `act`. No wait is outstanding then (asserted), so the record the
  // completing call writes into the ring is drained after it (`Bridge.touch`); without that
  // drain the select never settles (the bound below fails it).
  const run = async <R>(
    what: string,
    start: (a: Channel<number>, b: Channel<number>) => Promise<R>,
    act: (a: Channel<number>, b: Channel<number>) => unknown,
  ): Promise<R> => {
    using a = new Channel<number>(), b = new Channel<number>(1);
    const p = start(a, b);
    await queuedInside(bridge, 1, what);
    const waitingThen = later(bridge, () => void act(a, b));
    const got = await within(p, 20_000, what);
    assert.equal(await waitingThen, false, `${what}: a ring wait was outstanding`);
    return got;
  };
  const either = (a: Channel<number>, b: Channel<number>) =>
    select<string>((s) => {
      s.onReceive(a, (v) => `a ${v}`);
      s.onReceiveCatching(b, (r) => r.state === "ok" ? `b ${r.value}` : `b ${r.state}`);
    });
  assert.equal(await run("trySend", either, (_, b) => b.trySend(1)), "b 1");
  assert.equal(await run("send", either, (a) => void a.send(2)), "a 2");
  assert.equal(await run("close", either, (_, b) => b.close()), "b closed");
  await assert.rejects(run("cancel", either, (a) => a.cancel()), CancellationError);
  // Another select, whose probe meets this one's queued clause.
  const selects: Promise<string>[] = [];
  assert.equal(
    await run("a select", either, (a) => selects.push(select((s) => s.onSend(a, 3, () => "s")))),
    "a 3",
  );
  assert.equal(await selects[0], "s");
  // A send clause, taken by a tryReceive.
  const sending = (a: Channel<number>) => select<string>((s) => s.onSend(a, 4, () => "sent"));
  let took: unknown;
  assert.equal(await run("tryReceive", sending, (a) => took = a.tryReceive()), "sent");
  assert.deepEqual(took, { state: "ok", value: 4 });
  // A plain receive on a channel a select made native: queued natively, inside (no ring wait),
  // and completed by a trySend of this isolate (which withdraws it and hands the value over in
  // JavaScript: no record to drain).
  const plain = async (a: Channel<number>) => {
    await makeNative(a);
    return a.receive();
  };
  assert.equal(await run("plain receive", plain, (a) => a.trySend(5)), 5);
});

Deno.test("a value given back to a local channel reaches this isolate's next receive waiting natively, with no ring wait outstanding", async () => {
  const bridge = Bridge.of(library());
  // A receive queued natively on a channel a select made native (inside: no ring wait) takes a
  // value and is aborted before its record is drained: the value goes back to the channel
  // (`Bridge.giveBack`), where the next receive, queued natively too, takes it at once. Its
  // record lands during that give-back, which runs in the drain of the first one's record:
  // without a drain after the give-back, it waited for ever (the bound below fails it).
  for (const aborted of ["receive", "select"]) {
    using a = new Channel<number>(0, { codec: codecs.f64 });
    await makeNative(a);
    // Its handle as the select reads it (`selectHandleOf`): read through `handle`, the channel
    // would go outside, and a ring wait would be outstanding.
    const handle = selectHandleOf(a);
    const ac = new AbortController();
    const first = aborted === "receive"
      ? a.receive({ signal: ac.signal })
      : select<number>((s) => s.onReceive(a, (v) => v), { signal: ac.signal });
    const next = a.receive();
    await queuedInside(bridge, 2, aborted);
    let sent: number | undefined;
    const waitingThen = later(bridge, () => {
      // A native send (as C code on this thread sends; a drain is queued after it, as after a
      // call of this isolate on an inside channel: `Bridge.touch`) completes `first` natively
      // (its record in the ring); the abort then loses to it (KC_EBUSY), and the value goes
      // back as the record is drained. A send of this isolate (a select's onSend, before)
      // settles `first` before it returns, so the abort would find it done.
      bridge.touch();
      sent = trySendNatively(handle, 7);
      ac.abort(new Error("given up"));
    });
    await assert.rejects(within(first, 20_000, `${aborted}: the first`), /given up/);
    assert.equal(await within(next, 20_000, `${aborted}: the next receive`), 7);
    assert.equal(sent, 0);
    assert.equal(await waitingThen, false, `${aborted}: a ring wait was outstanding`);
  }
});

Deno.test("a value this isolate gives back to a shared channel settles its own receive or select that it reaches before the give-back's drain ends: an abort later in the turn finds it settled", async () => {
  // README's abort paragraph: a wait of this isolate that its own call completes natively
  // settles before that call returns. A give-back (an aborted receive's or select's value going
  // back as its record drains, `Bridge.giveBack`) is this isolate's call too: the value goes
  // straight to the next receive waiting natively (a select's receive clause too), which
  // settles in that drain. Before, it settled at the ring's next wake, after the first one's
  // rejection handler ran: its abort there rejected the second too, and 7 went back again.
  for (const capacity of [0, 1]) {
    for (const first of ["receive", "select"]) {
      for (const second of ["receive", "select"]) {
        const how = `capacity ${capacity}, ${first} then ${second}`;
        using ch = new Channel<number>(capacity, { codec: codecs.f64 });
        const handle = ch.handle; // outside: only the ring's wait drains its records
        const wait = (signal: AbortSignal, which: string) =>
          which === "receive"
            ? ch.receive({ signal })
            : select<number>((s) => s.onReceive(ch, (v) => v), { signal });
        const ac1 = new AbortController(), ac2 = new AbortController();
        const one = wait(ac1.signal, first);
        const two = wait(ac2.signal, second);
        await until(() => pending() === 2, `${how}: both queued natively`);
        // As another thread sends: completes `one` natively, its record not drained yet.
        assert.equal(trySendNatively(handle, 7), 0, how);
        const reason = new Error("given up");
        ac1.abort(reason); // loses to the completion: 7 goes back as the record drains
        const late = new Error("too late");
        const rejected = one.then(
          () => assert.fail(`${how}: the first resolved`),
          (e) => {
            assert.equal(e, reason, how);
            ac2.abort(late); // the first microtask after the give-back's drain
          },
        );
        assert.equal(await within(two, 10_000, `${how}: the second`), 7, how);
        await rejected;
        assert.deepEqual(ch.tryReceive(), { state: "empty" }, how); // not given back twice
        assert.equal(pending(), 0, how);
      }
    }
  }
});

Deno.test("a receive or select given up after another thread's send completed it is not settled by a send of this isolate that settles its other receive: its value goes back when the ring drains as usual, to the hook once this isolate's close came first", async () => {
  // `#settleReceivers` settles the records of this isolate's receives on the channel that its
  // send may have completed, not one given up (`gaveUp`): that one's record gives its value
  // back when the ring drains as usual, after the turn's close has returned (README's abort
  // paragraph), so the value reaches onUndeliveredElement. Settled with the send, the value
  // went back before the close, and stayed receivable on the closed channel instead.
  for (const first of ["receive", "select"]) {
    for (const close of [false, true]) {
      const how = `${first}${close ? ", then close" : ""}`;
      const undelivered: number[] = [];
      using ch = new Channel<number>(0, {
        codec: codecs.f64,
        onUndeliveredElement: (v) => void undelivered.push(v),
      });
      const handle = ch.handle; // outside: only the ring's wait drains its records
      const ac = new AbortController();
      const one = first === "receive"
        ? ch.receive({ signal: ac.signal })
        : select<number>((s) => s.onReceive(ch, (v) => v), { signal: ac.signal });
      const oneFailed = one.then(() => assert.fail(`${how}: the first resolved`), (e) => e);
      const two = ch.receive();
      await until(() => pending() === 2, `${how}: both queued natively`);
      // As another thread sends: completes `one` natively, its record not drained yet.
      assert.equal(trySendNatively(handle, 7), 0, how);
      const reason = new Error("given up");
      ac.abort(reason); // loses to the completion: `one` gave up, its record still to come
      // Meets `two`, queued natively: settles its record before it returns, not `one`'s, whose
      // value is not back yet (asserted with no await in between: the ring's wait, which may
      // return in any microtask, drains it as usual).
      assert.deepEqual(ch.trySend(8), { state: "ok" }, how);
      assert.equal(pending(), 1, `${how}: settled with the send`);
      if (close) ch.close();
      else assert.deepEqual(ch.tryReceive(), { state: "empty" }, `${how}: given back already`);
      assert.equal(await within(two, 10_000, `${how}: the second`), 8, how);
      assert.equal(await within(oneFailed, 10_000, `${how}: the first`), reason, how);
      if (close) {
        assert.deepEqual(undelivered, [7], how); // back after the close: nothing left to receive
        assert.equal(ch.tryReceive().state, "closed", how);
      } else {
        assert.deepEqual(undelivered, [], how);
        assert.deepEqual(ch.tryReceive(), { state: "ok", value: 7 }, how); // back, not lost
      }
      assert.equal(pending(), 0, how);
    }
  }
});

Deno.test("a receive a hook aborts after this isolate's send picked its record gives its value back to the next receive, which settles before the send returns: an abort in the first one's rejection handler finds it settled", async () => {
  // `Bridge.settleWhere` (a send of this isolate that completes its own receive: `#settleReceivers`)
  // picks the records of this isolate's receives on the channel, then settles them in order. A
  // select's receive clause among them collects what other isolates' sends dropped
  // (`afterReceiveOf`): the hook runs there, and here aborts `r2`, picked but not settled yet,
  // which another thread's send completed. Its abort wins (its record not settled), and its
  // value goes back as it settles, to `r4`, waiting natively: `r4` settles before the send
  // returns, as a value given back in a ring drain settles the receive it reaches (README's
  // abort paragraph). Before, it settled at the ring's next wake, and `r2`'s rejection handler
  // aborted it first: it rejected too, and 11 went back a second time.
  const ac2 = new AbortController(), ac4 = new AbortController();
  const inHook = new Error("in the hook");
  const dropped: number[] = [];
  using ch = new Channel<number>(1, {
    codec: codecs.f64,
    overflow: "drop-latest",
    onUndeliveredElement: (v) => {
      dropped.push(v);
      ac2.abort(inHook);
    },
  });
  const handle = ch.handle; // outside: only the ring's wait drains its records
  // As another isolate's send and receive: 1 buffered and taken, so that receives wait.
  assert.equal(trySendNatively(handle, 1), 0);
  const out = new Float64Array(1);
  const sym = library().symbols("test");
  assert.equal(sym.kc_chan_try_recv(handle, Deno.UnsafePointer.of(out), 8), 0);
  assert.equal(out[0], 1);
  const s1 = select<number>((s) => s.onReceive(ch, (v) => v));
  const r2 = ch.receive({ signal: ac2.signal }).then(() => assert.fail("r2 resolved"), (e) => e);
  const r3 = ch.receive().then((v) => v, (e) => e);
  const r4 = ch.receive({ signal: ac4.signal }).then((v) => v, (e) => e);
  await until(() => pending() === 4, "all four queued natively");
  // As another isolate's dropped send, once the receives wait: 2 kept natively for this
  // isolate's hook. Dropped before they waited, a drop policy's receive would hand it to the
  // hook before its wait (README: drop policies), not s1's settle.
  out[0] = 2;
  assert.equal(sym.kc_chan_drop(handle, Deno.UnsafePointer.of(out), 8), 1, "kept");
  assert.deepEqual(dropped, [], "the drop not collected yet");
  // As another thread sends: completes s1, then r2, their records not drained yet.
  assert.equal(trySendNatively(handle, 10), 0);
  assert.equal(trySendNatively(handle, 11), 0);
  const late = new Error("too late");
  const handled = r2.then(() => ac4.abort(late)); // the first microtask after r2 rejects
  // Completes r3 natively: s1, r2 and r3 settle before it returns, s1's hook aborting r2.
  assert.deepEqual(ch.trySend(12), { state: "ok" });
  assert.deepEqual(dropped, [2]);
  assert.equal(pending(), 0, "r4 settled before the send returned");
  await handled;
  assert.equal(await within(s1, 10_000, "s1"), 10);
  assert.equal(await within(r2, 10_000, "r2"), inHook);
  assert.equal(await within(r3, 10_000, "r3"), 12);
  assert.equal(await within(r4, 10_000, "r4"), 11);
  assert.deepEqual(ch.tryReceive(), { state: "empty" }); // not given back twice
});

Deno.test("a plain wait queued natively on a channel a select made native keeps the process alive once its handle is read", async () => {
  // README: the waits already queued natively on a channel whose handle is read while they
  // wait keep the process alive, as a select on it does (`Bridge.reconsider`, `Waiter.inside`).
  // Without that, the process ended before the send that comes from a timer that does not
  // itself keep it alive.
  const res = await evalScript(
    `
    import { Channel, library, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until } from "./tests/support.ts";
    const ch = new Channel();
    await select((s) => { s.onReceive(ch, (v) => v); s.onTimeout(0, () => 0); });
    const bridge = Bridge.of(library());
    const p = ch.receive(); // queued natively at the end of this turn
    await until(() => bridge.pending === 1, "the receive queued natively"); // bounded
    if (bridge.pendingOutside !== 0) throw new Error("not queued inside");
    ch.handle;
    if (bridge.pendingOutside !== 1) throw new Error("still inside");
    Deno.unrefTimer(setTimeout(() => Channel.from(ch.share()).trySend("late"), 300));
    console.log(await p);
  `,
    { timeoutMs: 20_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "late");
});

Deno.test("a select whose first clause is on a shared channel meets a receive of this isolate that its probe queued natively on a local channel: the receive settles", async () => {
  // The probe makes `a` native (inside: its handle never left this isolate) and queues the
  // receive waiting there in JavaScript natively (`Channel.#submit`, through `flushLocalOf`).
  // No wait is outstanding for such an inside receive, and no call went through `a`'s symbols
  // before it was native (the first clause's channel is outside: the probe calls through its
  // symbols), so two things settle it:
  // - the select's own send clause, firing in the probe, completes it natively: the select
  //   settles it before select() returns (`settleMetOf`, `#fireNativeNow`), before its own
  //   handler runs; without that it settled in a later microtask (the drain below);
  // - anything else that completes it natively once it is queued (C code here, as on this
  //   thread, with no call of this isolate after it): the drain that `#submit` schedules as it
  //   queues it on an inside channel (`Bridge.touch`) settles it. Without that it waited for
  //   ever (the bound below fails it). First: a drain the other case leaves scheduled (the
  //   bridge's idle check) could drain the ring in its place.
  for (const by of ["C code after the select", "the select's send clause"] as const) {
    using x = new Channel<number>(1), a = new Channel<number>();
    void x.handle; // outside
    // Waits in JavaScript (`a` is local); its outcome held, so that a failure below, whose
    // dispose cancels it, is the one reported.
    const r = a.receive().then((v) => v, (e) => e);
    const clauseSends = by === "the select's send clause";
    // C code's case: `x` holds a value, so the select fires its receive clause in the probe,
    // after the probe queued the receive natively (its clause on `a` flushed it).
    if (!clauseSends) assert.deepEqual(x.trySend(1), { state: "ok" });
    const before = pending();
    const sel = select<string>((s) => {
      s.onReceive(x, () => "x"); // biased (the default): probed first
      if (clauseSends) s.onSend(a, 5, () => "sent");
      else s.onReceive(a, () => "a");
    });
    if (clauseSends) assert.equal(pending(), before, `${by}: settled before select() returned`);
    else {
      assert.equal(pending(), before + 1, `${by}: the receive queued natively, the select not`);
      assert.equal(
        trySendNatively(selectHandleOf(a), 5, a.codec),
        0,
        `${by}: the receive takes it`,
      );
    }
    assert.equal(await within(sel, 20_000, `${by}: the select`), clauseSends ? "sent" : "x");
    assert.equal(await within(r, 20_000, `${by}: the receive`), 5, by);
    assert.equal(pending(), before, by);
  }
});

Deno.test("a select's send clause on a shared channel whose value a try-receive of this isolate takes natively settles before the next turn, as a plain send queued there does", async () => {
  for (const many of [false, true]) {
    for (const capacity of [0, 1]) {
      const what = `${many ? "tryReceiveMany" : "tryReceive"}, capacity ${capacity}`;
      using ch = new Channel<number>(capacity);
      ch.share(); // outside: its waits queue natively, and only the ring's wait would drain them
      // Full: the clause waits for room, which the try makes and the clause's value moves into.
      if (capacity === 1) assert.deepEqual(ch.trySend(1), { state: "ok" });
      const take = () =>
        many
          ? ch.tryReceiveMany(10)
          : [ch.tryReceive(), ...(capacity === 1 ? [ch.tryReceive()] : [])];
      const took = (...values: number[]) =>
        many ? { state: "ok", values } : values.map((value) => ({ state: "ok", value }));
      // The plain send, queued natively at its turn's end: the receive that takes it settles it.
      const before = pending();
      const sent = ch.send(2);
      await until(() => pending() > before, `${what}: the plain send queued natively`);
      assert.deepEqual(take(), capacity === 1 ? took(1, 2) : took(2), what);
      assert.equal(await settled(sent), true, `${what}: the plain send`);
      if (capacity === 1) assert.deepEqual(ch.trySend(3), { state: "ok" });
      const chosen = select((s) => s.onSend(ch, 4, () => "sent"));
      assert.equal(pending(), before + 1, `${what}: the select queued natively (kc_select_async)`);
      assert.deepEqual(take(), capacity === 1 ? took(3, 4) : took(4), what);
      // Microtasks only, no turn of the event loop: the ring's wait cannot wake in between.
      // Before, the clause's record waited for that wake, a turn after the receive (and
      // tryReceiveMany took a buffered channel's values in one native call, which settles none).
      assert.equal(await settled(chosen), true, `${what}: the select`);
      assert.equal(await chosen, "sent");
    }
  }
});

Deno.test("a send of this isolate that completes a waiting select's receive clause settles the select before it returns: an abort later in that turn finds it settled", async () => {
  // trySend (a mapped codecs.f64 channel's inlined path too), send, trySendMany (one call for
  // the batch) and a select's onSend, on a channel the waiting select made native (inside) and on
  // a shared one. Before, the select settled when the ring drained: the abort rejected it and
  // the value went back into the channel, though the send had answered ok (resolved, fired).
  const senders = ["trySend", "send", "trySendMany", "onSend"] as const;
  for (const shared of [false, true]) {
    for (const mapped of [false, true]) {
      for (const how of senders) {
        const what = `${shared ? "shared" : "inside"}, ${mapped ? "mapped" : "unmapped"}, ${how}`;
        // trySendMany goes in one native call only into a buffer (`#batchesNatively`).
        using ch = new Channel<number>(how === "trySendMany" ? 4 : 0, { codec: codecs.f64 });
        if (shared) ch.share();
        // Past its 16th use the bytes are mapped, and trySend may take its inlined path.
        if (mapped) {
          for (let i = 0; i < 20; i++) {
            assert.equal(ch.trySend(i).state, how === "trySendMany" ? "ok" : "full", what);
            if (how === "trySendMany") ch.tryReceive();
          }
        }
        const ctl = new AbortController();
        const reason = new Error("too late");
        const outcome = select<number>((s) => s.onReceive(ch, (v) => v), { signal: ctl.signal });
        let sent: Promise<unknown>;
        if (how === "trySend") sent = Promise.resolve(ch.trySend(7));
        else if (how === "trySendMany") sent = Promise.resolve(ch.trySendMany([7]));
        else if (how === "send") sent = ch.send(7).then(() => "sent");
        else sent = select((s) => s.onSend(ch, 7, () => "sent"));
        ctl.abort(reason); // the same turn
        assert.equal(await within(outcome, 5_000, what), 7, what);
        assert.deepEqual(
          await sent,
          how === "trySend"
            ? { state: "ok" }
            : how === "trySendMany"
            ? { state: "ok", sent: 1 }
            : "sent",
          what,
        );
        assert.deepEqual(ch.tryReceive(), { state: "empty" }, `${what}: not put back`);
        assert.equal(pending(), 0, what);
      }
    }
  }
});

Deno.test("a receive of this isolate that completes a waiting select's send clause settles the select before it returns, as it settles a send queued natively", async () => {
  // tryReceive (a mapped codecs.f64 channel's inlined path too), receive, tryReceiveMany (one
  // call for a buffered channel's batch) and a select's onReceive, on a shared channel: the
  // select's handler runs in the microtasks right after. Before, it settled when the ring's wait
  // woke, a later turn of the event loop.
  const receivers = ["tryReceive", "receive", "tryReceiveMany", "onReceive"] as const;
  for (const capacity of [0, 2]) {
    for (
      const [mapped, how] of [false, true].flatMap((m) => receivers.map((h) => [m, h] as const))
    ) {
      const what = `capacity ${capacity}, ${mapped ? "mapped" : "unmapped"}, ${how}`;
      using ch = new Channel<number>(capacity, { codec: codecs.f64 });
      ch.share();
      // Past its 16th use the bytes are mapped, and tryReceive may take its inlined path.
      if (mapped) {
        for (let i = 0; i < 20; i++) assert.equal(ch.tryReceive().state, "empty", what);
      }
      // A buffered channel's send clause waits while the buffer is full; the receive makes room.
      for (let i = 0; i < capacity; i++) assert.equal(ch.trySend(100 + i).state, "ok", what);
      const outcome = select<string>((s) => s.onSend(ch, 7, () => "sent"));
      assert.equal(pending(), 1, `${what}: the select queued natively`);
      let got: unknown;
      if (how === "tryReceive") got = ch.tryReceive();
      else if (how === "tryReceiveMany") got = ch.tryReceiveMany(1);
      else if (how === "receive") got = await ch.receive();
      else got = await select<number>((s) => s.onReceive(ch, (v) => v));
      const first = capacity === 0 ? 7 : 100;
      assert.deepEqual(
        got,
        how === "tryReceive"
          ? { state: "ok", value: first }
          : how === "tryReceiveMany"
          ? { state: "ok", values: [first] }
          : first,
        what,
      );
      assert.equal(await settled(outcome), true, `${what}: settled`);
      assert.equal(await outcome, "sent", what);
      if (capacity > 0) assert.deepEqual(ch.tryReceiveMany(4), { state: "ok", values: [101, 7] });
      assert.equal(pending(), 0, what);
    }
  }
});

Deno.test("a select whose onSend completes a receive of this isolate queued natively settles that receive before the select's handler runs: an abort later in that turn finds it settled", async () => {
  // On a channel the select finds local (its probe queues the receive natively), and on a
  // shared one, the receive queued natively by the probe or at the end of an earlier turn.
  // Before, the receive settled when the ring drained: the abort rejected it and the value went
  // back, though the select had fired for the send.
  for (const [shared, earlier] of [[false, false], [true, false], [true, true]]) {
    const what = `${shared ? "shared" : "local"}, ${earlier ? "an earlier turn" : "this turn"}`;
    using ch = new Channel<number>(0, { codec: codecs.f64 });
    if (shared) ch.share();
    const ctl = new AbortController();
    const received = ch.receive({ signal: ctl.signal });
    received.catch(() => {}); // awaited below; a failed assertion before leaves it to dispose
    if (earlier) await until(() => pending() === 1, `${what}: the receive queued natively`);
    const sent = select<string>((s) => s.onSend(ch, 7, () => "sent"));
    ctl.abort(new Error("too late"));
    assert.equal(await within(received, 5_000, what), 7, what);
    assert.equal(await sent, "sent", what);
    assert.deepEqual(ch.tryReceive(), { state: "empty" }, `${what}: not put back`);
    assert.equal(pending(), 0, what);
  }
});

Deno.test("a try-receive that takes a select's send clause of its own isolate when the ring is gone fails that select at once, as a plain send's", async () => {
  // As for a plain send queued natively (channel_test.ts, "a receive that takes a queued send
  // of its own isolate when the ring is gone"): the native try-receive takes the clause's value,
  // its record cannot be drained (the ring destroyed by hand, here between the two), so the
  // select fails before tryReceive returns, as `RingOp.lost` fails it, and is tracked no more.
  // Before, `#settleSenders` failed only the plain sends: the select went on waiting until the
  // ring's wait found the ring gone, a turn or more later.
  const res = await evalScript(`
    import { Channel, codecs, InvalidHandleError, library, select } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { afterMicrotasks, destroyRingAtFirstDrain } from "./tests/support.ts";
    const lib = library();
    const bridge = Bridge.of(lib);
    const a = new Channel(0, { codec: codecs.f64 });
    a.share();
    let outcome = "pending";
    const chosen = select((s) => s.onSend(a, 1, () => "sent")).then((v) => outcome = v, (e) => outcome = e instanceof InvalidHandleError && /^Cannot select: the wait was lost with this isolate's completion ring/.test(e.message) ? "lost" : String(e));
    if (bridge.pending !== 1) throw new Error("the select is not queued natively: " + bridge.pending);
    const destroyed = destroyRingAtFirstDrain(bridge);
    const got = JSON.stringify(a.tryReceive());
    if (got !== '{"state":"ok","value":1}') throw new Error("tryReceive: " + got);
    if (destroyed() !== 1) throw new Error("the ring was not drained after the native receive: " + destroyed());
    const now = await afterMicrotasks(bridge, () => outcome, chosen, "the select settled");
    if (now !== '{"pending":0,"outcome":"lost"}') throw new Error(now + ", then " + outcome);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a select's receive clause that takes a send of this isolate queued natively settles that send before the select's handler runs, as a try-receive does", async () => {
  // The native select's probe is this isolate's receive: the send it takes (a plain send, or
  // another select's send clause) or moves into the room it made writes its record to the ring,
  // settled before the clause's handler runs, as `#poll` settles it for a try-receive. Before,
  // it settled at the ring wait's next wake, a turn after the select had returned the value.
  for (const capacity of [0, 1]) {
    using ch = new Channel<number>(capacity);
    ch.share(); // outside: only the ring's wait would drain the records otherwise
    if (capacity === 1) assert.deepEqual(ch.trySend(1), { state: "ok" }); // full
    const before = pending();
    const sender = select((s) => s.onSend(ch, 4, () => "sent"));
    assert.equal(pending(), before + 1, "the send clause queued natively");
    const first = capacity === 1 ? 1 : 4;
    assert.equal(await select<number>((s) => s.onReceive(ch, (v) => v)), first);
    // The select's handler ran in a microtask: no turn of the event loop in between.
    assert.equal(await settled(sender), true, `capacity ${capacity}: the select's send clause`);
    assert.equal(await sender, "sent");
    if (capacity === 1) assert.deepEqual(ch.tryReceive(), { state: "ok", value: 4 });
    if (capacity === 1) assert.deepEqual(ch.trySend(1), { state: "ok" });
    const sent = ch.send(5);
    await until(() => pending() > before, `capacity ${capacity}: the plain send queued natively`);
    assert.equal(
      await select<number>((s) => s.onReceiveCatching(ch, (r) => r.state === "ok" ? r.value : -1)),
      capacity === 1 ? 1 : 5,
    );
    assert.equal(await settled(sent), true, `capacity ${capacity}: the plain send`);
    if (capacity === 1) assert.deepEqual(ch.tryReceive(), { state: "ok", value: 5 });
  }
});

Deno.test("a select's channel clauses count on their channels only while it waits natively: every way it ends uncounts them, once", async () => {
  // `Shared.countSelect`: counted as the select queues natively, uncounted at its cleanup. A
  // count left behind would keep the channel's inlined try paths off (`D_SELECTS`) and make
  // every later send or receive there drain the ring; one taken twice would go negative, and a
  // later select's clause would not be settled by the send or receive that completes it.
  const D_SELECTS = 32;
  const counts = (ch: Channel<number>) => {
    const s = sharedStateOf(ch);
    return [s.selectReceives, s.selectSends, s.detour & D_SELECTS];
  };
  const ends = [
    "abort",
    "onTimeout",
    "onAwait",
    "a native send",
    "a native send, then an abort",
    "this isolate's trySend",
    "this isolate's tryReceive",
    "close",
    "native cancel",
    "a copy's dispose",
    "an arming throw",
  ] as const;
  for (const end of ends) {
    // `r` for the receive clause, `w` for the send clause: shared rendezvous channels.
    using r = new Channel<number>(0, { codec: codecs.f64 });
    using w = new Channel<number>(0, { codec: codecs.f64 });
    r.share();
    w.share();
    using copy = Channel.from<number>(r.share());
    const ctl = new AbortController();
    const deferred = new CompletableDeferred<number>();
    const outcome = select<unknown>((s) => {
      s.onReceive(end === "a copy's dispose" ? copy : r, (v) => v);
      s.onSend(w, 9, () => "sent");
      if (end === "onTimeout") s.onTimeout(1, () => "timeout");
      if (end === "onAwait") s.onAwait(deferred, (v) => v);
      if (end === "an arming throw") {
        s.onJoin(
          callersJob(() => {
            throw new Error("arming");
          }),
          () => "joined",
        );
      }
    }, { signal: ctl.signal });
    outcome.catch(() => {}); // awaited below
    if (end !== "an arming throw") {
      assert.equal(pending(), 1, `${end}: queued natively`);
      assert.deepEqual([counts(r), counts(w)], [[1, 0, D_SELECTS], [0, 1, D_SELECTS]], end);
    }
    if (end === "abort") ctl.abort();
    else if (end === "onAwait") deferred.complete(4);
    else if (end === "a native send") assert.equal(trySendNatively(r.handle, 5), 0, end);
    else if (end === "a native send, then an abort") {
      assert.equal(trySendNatively(r.handle, 5), 0, end);
      ctl.abort(); // too late: the select gives up, its record still to come gives 5 back
    } else if (end === "this isolate's trySend") assert.equal(r.trySend(5).state, "ok", end);
    else if (end === "this isolate's tryReceive") {
      assert.deepEqual(w.tryReceive(), { state: "ok", value: 9 }, end);
    } else if (end === "close") r.close();
    else if (end === "native cancel") {
      assert.equal(library().symbols("test").kc_chan_cancel(r.handle), 0, end);
    } else if (end === "a copy's dispose") copy[Symbol.dispose]();
    await within(outcome.then(() => {}, () => {}), 10_000, end);
    assert.deepEqual([counts(r), counts(w)], [[0, 0, 0], [0, 0, 0]], `${end}: uncounted`);
    if (end === "a native send, then an abort") {
      assert.deepEqual(r.tryReceive(), { state: "ok", value: 5 }, `${end}: given back`);
    }
    assert.equal(pending(), 0, end);
  }
  // Ready as it probes: never queued natively, never counted.
  using ch = new Channel<number>(1, { codec: codecs.f64 });
  ch.share();
  ch.trySend(1);
  assert.equal(await select<number>((s) => s.onReceive(ch, (v) => v)), 1);
  assert.deepEqual(counts(ch), [0, 0, 0], "fired at its probe");
});

Deno.test("a select's channel clauses are uncounted when the library's close withdraws it and when its ring is lost", async () => {
  // As the test above, in a process of its own for each (the library closes; the ring is
  // destroyed by hand, as the ring tests do: the ring's wait then finds it gone).
  for (const end of ["library close", "ring lost"]) {
    const res = await evalScript(`
      import { Channel, closeLibrary, codecs, library, select } from "./mod.ts";
      import { Bridge } from "./src/bridge.ts";
      import { sharedStateOf } from "./src/channel.ts";
      import { within } from "./tests/support.ts";
      const end = ${JSON.stringify(end)};
      const bridge = Bridge.of(library());
      const r = new Channel(0, { codec: codecs.f64 }), w = new Channel(0, { codec: codecs.f64 });
      r.share();
      w.share();
      const counts = () => JSON.stringify([r, w].map((c) => [sharedStateOf(c).selectReceives, sharedStateOf(c).selectSends, sharedStateOf(c).detour & 32]));
      const outcome = select((s) => {
        s.onReceive(r, (v) => v);
        s.onSend(w, 9, () => "sent");
      });
      if (bridge.pending !== 1) throw new Error("the select did not queue natively");
      if (counts() !== "[[1,0,32],[0,1,32]]") throw new Error("counted: " + counts());
      if (end === "library close") closeLibrary();
      else library().symbols("test").kc_ring_destroy(bridge.ring);
      const got = await within(outcome.then(() => "resolved", (e) => e.name), 10_000, "the select");
      const want = end === "library close" ? "LibraryClosedError" : "InvalidHandleError";
      if (got !== want) throw new Error("select: " + got);
      if (counts() !== "[[0,0,0],[0,0,0]]") throw new Error("left counted: " + counts());
    `);
    assert.equal(res.code, 0, `${end}: ${res.stderr}`);
  }
});

Deno.test("a tryReceiveMany whose batch fails to decode a value still settles, before it throws, the select whose send clause the room it made took in", async () => {
  // A channel C code made untyped, written under two codecs and read under one of them (as
  // channel_test's decode-failure test): the batch's values after the foreign one are taken out
  // with it, the select's too. Without the settle on that path (`tryReceiveMany`'s throw), the
  // select waited for the ring's next wake, a turn after the throw.
  using ch = untypedNative();
  const { strings, other } = ch;
  strings.trySend("a");
  other.trySend(1.5);
  strings.trySend("c");
  strings.trySend("d");
  const outcome = select<string>((s) => s.onSend(strings, "e", () => "sent"));
  assert.equal(pending(), 1, "the select queued natively: the buffer is full");
  assert.throws(() => strings.tryReceiveMany(8), (e: unknown) => {
    assert.ok(e instanceof CodecError);
    assert.deepEqual(Reflect.get(e, "received"), ["a", "c", "d", "e"]);
    return true;
  });
  assert.equal(await settled(outcome), true, "settled before the next turn");
  assert.equal(await outcome, "sent");
  assert.equal(pending(), 0);
});

Deno.test("a tryReceive whose value fails to decode still settles, before it throws, the select's send clause or the send queued natively that the room it made took in", async () => {
  // As the tryReceiveMany test above, one value at a time (`#poll`): the native try took the
  // foreign value out, and the waiting send's value moved into the room. Before, the decode's
  // throw skipped the settle, and the send waited for the ring's next wake, a turn after it.
  for (const by of ["select", "send"] as const) {
    using ch = untypedNative(1);
    const { strings, other } = ch;
    other.trySend(1.5);
    const outcome = by === "select"
      ? select<string>((s) => s.onSend(strings, "e", () => "sent"))
      : strings.send("e").then(() => "sent");
    await until(() => pending() === 1, `${by}: queued natively (the buffer is full)`);
    assert.throws(() => strings.tryReceive(), CodecError, by);
    assert.equal(await settled(outcome), true, `${by}: settled before the next turn`);
    assert.equal(await outcome, "sent", by);
    assert.deepEqual(strings.tryReceive(), { state: "ok", value: "e" }, by);
    assert.equal(pending(), 0, by);
  }
});

Deno.test("a select builder's clause methods called on what is no builder (an object made from its prototype, a Proxy of one, a primitive) throw a named TypeError before any argument is read", async () => {
  // Before, onReceive, onReceiveCatching and onSend threw the engine's "Receiver must be an
  // instance of class Builder"; onTimeout, onJoin and onAwait checked their arguments first.
  using ch = new Channel<number>(1);
  const d = new CompletableDeferred<number>();
  let builder: object | undefined;
  assert.equal(
    await select<number>((s) => {
      builder = s;
      s.onReceive(ch, (v) => v);
      ch.trySend(4);
    }),
    4,
  );
  const proto = Object.getPrototypeOf(builder) as Record<string, (...a: unknown[]) => unknown>;
  let reads = 0;
  const arg = new Proxy({}, { get: () => void reads++ }); // counts what reads an argument
  const calls: [string, (self: unknown) => unknown][] = [
    ["add onReceive clause", (self) => proto.onReceive.call(self, ch, () => 1)],
    ["add onReceiveCatching clause", (self) => proto.onReceiveCatching.call(self, ch, () => 1)],
    ["add onSend clause", (self) => proto.onSend.call(self, ch, 1, () => 1)],
    ["add onTimeout clause", (self) => proto.onTimeout.call(self, arg, () => 1)],
    ["add onJoin clause", (self) => proto.onJoin.call(self, d, () => 1)],
    ["add onAwait clause", (self) => proto.onAwait.call(self, arg, () => 1)],
  ];
  const fakes: [unknown, string][] = [
    [Object.create(proto), "a SelectBuilder look-alike"],
    [new Proxy(builder!, {}), "a SelectBuilder look-alike"],
    [{}, "[object Object]"],
    [undefined, "undefined"],
  ];
  assertThrowsOnFakes(calls, fakes, "a SelectBuilder");
  assert.equal(reads, 0);
  // The sealed builder behind the Proxy took no clause: the channel is as it was.
  assert.deepEqual(ch.tryReceive(), { state: "empty" });
});

Deno.test("a Job of the caller's own whose Disposable throws a revoked Proxy: the select settles, the Proxy is reported in a TypeError carrying it, and the process's later reports still reach their listeners", async () => {
  // A child process: without the fix Deno's reportError threw on the Proxy (asking its
  // prototype), out of the select's cleanup, and left every later report fatal.
  const got = await revokedProxyReports(
    `import { select } from "./mod.ts"; import { callersJob } from "./tests/support.ts";`,
    `const job = callersJob(() => ({ [Symbol.dispose]() { throw r.proxy; } }));
    out = await select((s) => {
      s.onJoin(job, () => "joined");
      s.onTimeout(1, () => "timed out");
    }).catch((e) => "rejected: " + String(e));`,
  );
  assert.deepEqual(got, {
    out: "timed out",
    carried: true,
    message: PROXY_REPORTED,
    last: "a later report",
    count: 2,
  });
});

Deno.test("select encodes and decodes a native channel's values by its own codec, not a `codec` getter a caller redefined on Channel's prototype", async () => {
  // Before, select read `ch.codec`: a redefined getter steered (here: failed) its native clauses.
  const desc = Object.getOwnPropertyDescriptor(Channel.prototype, "codec")!;
  using ch = new Channel<number>(1, { codec: codecs.f64 });
  void ch.handle; // native from here on: select's clauses go through the codec
  const reads: string[] = [];
  try {
    Object.defineProperty(Channel.prototype, "codec", {
      ...desc,
      get() {
        reads.push("codec");
        throw new Error("redefined codec getter ran");
      },
    });
    assert.equal(await select<number>((s) => s.onSend(ch, 1.5, () => 1)), 1);
    assert.equal(await select<number>((s) => s.onReceive(ch, (v) => v)), 1.5);
  } finally {
    Object.defineProperty(Channel.prototype, "codec", desc);
  }
  assert.deepEqual(reads, []);
});

Deno.test("select's onJoin and onAwait start a kcoro job, read its state, wait for it and take its result by JobSupport's own members, not ones a caller redefined on a job's prototype; a Job of the caller's own by its own", async () => {
  // Before, each clause ran `job.start()` and `job.invokeOnCompletion(...)`, the prototype's at
  // that call: a redefinition rejected the select with what it threw.
  const armed: string[] = [];
  const { value, calls } = await withJobMembersRedefined(
    JOB_MEMBERS,
    () =>
      coroutineScope(async (scope) => {
        const lazy = scope.launch(() => {}, { lazy: true });
        const joined = await select<string>((s) => s.onJoin(lazy, () => "joined"));
        const later = new CompletableDeferred<number>();
        const awaiting = select<string>((s) => s.onAwait(later, (v) => `awaited ${v}`));
        later.complete(7);
        // A Job of the caller's own is still armed by its own invokeOnCompletion.
        const theirs = callersJob((handler) => {
          armed.push("theirs");
          handler();
          return { [Symbol.dispose]() {} };
        });
        const own = await select<string>((s) => s.onJoin(theirs, () => "theirs joined"));
        return [joined, await awaiting, own];
      }),
  );
  assert.deepEqual(calls, []);
  assert.deepEqual(value, ["joined", "awaited 7", "theirs joined"]);
  assert.deepEqual(armed, ["theirs"]);
});

Deno.test("onJoin on a job that reads final with its handlers still waiting (ended 32 handlers deep) fires after them, as join does: a join made before the job ended resumes first", async () => {
  // Job 31's handler (32 deep) ends `x`, whose handlers wait for the drain, then selects onJoin
  // on it. Before, the clause was ready at once (`isCompleted`) and its handler queued ahead of
  // x's handlers, so it ran before the join made while x was still active resumed: in Kotlin, x's
  // handlers (that join's resume among them) have run by the time x reads final.
  const N = 33;
  const log: string[] = [];
  const d = Array.from({ length: N }, () => new CompletableDeferred<void>());
  const x = new CompletableDeferred<void>();
  const joined = x.join().then(() => log.push("join"));
  let selected: Promise<unknown> | undefined;
  for (let i = 0; i < N; i++) {
    d[i].invokeOnCompletion(() => {
      if (i + 1 < N) d[i + 1].complete();
      if (i === 31) {
        x.complete();
        selected = select((s) => s.onJoin(x, () => log.push("select")));
      }
    });
  }
  d[0].complete();
  await Promise.all([joined, selected]);
  assert.deepEqual(log, ["join", "select"]);
});

Deno.test("select's onJoin and onAwait take a kcoro job by its brand, not by the start, invokeOnCompletion or await a caller redefined on its prototype (a throwing getter or no function, one or all of them); a Job of the caller's own is still looked at by its members", async () => {
  // Before, the clause's check for a Job read `start` and `invokeOnCompletion` (onAwait's
  // `await` too) through the job's prototype, the check meant for a Job of the caller's own,
  // though the clause runs JobSupport's own members: a getter there that threw came out of onJoin
  // and onAwait, and one answering no function refused kcoro's own job ("expected a Job,
  // received a CompletableDeferred").
  const proto = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const names = ["start", "invokeOnCompletion", "await"];
  const descs = names.map((n) => Object.getOwnPropertyDescriptor(proto, n)!);
  await coroutineScope(async (scope) => {
    for (const redefined of [...names.map((n) => [n]), names]) {
      for (const kind of ["a throwing getter", "no function"]) {
        const label = `${redefined.join(", ")} as ${kind}`;
        const lazy = scope.launch(() => {}, { lazy: true });
        const done = new CompletableDeferred<number>();
        done.complete(7);
        const later = new CompletableDeferred<number>();
        const reads: string[] = [];
        let got: unknown[];
        try {
          for (const name of redefined) {
            Object.defineProperty(
              proto,
              name,
              kind === "no function" ? { configurable: true, writable: true, value: 5 } : {
                configurable: true,
                get() {
                  reads.push(name);
                  throw new Error(`the ${name} getter redefined on JobSupport.prototype ran`);
                },
              },
            );
          }
          got = [
            await select<unknown>((s) => s.onJoin(lazy, () => "lazy joined")), // started
            await select<unknown>((s) => s.onJoin(done, () => "joined")),
            await select<unknown>((s) => s.onAwait(done, (v) => v)),
          ];
          const waiting = select<unknown>((s) => s.onAwait(later, (v) => `later ${v}`));
          later.complete(8);
          got.push(await waiting);
          // One of the caller's own without a `start` is still refused by name.
          const theirs = { invokeOnCompletion: () => ({ [Symbol.dispose]() {} }) };
          await assert.rejects(
            select((s) => s.onJoin(theirs as never, () => 1)),
            /Cannot add onJoin clause: expected a Job/,
            label,
          );
        } finally {
          names.forEach((n, i) => Object.defineProperty(proto, n, descs[i]));
        }
        assert.deepEqual(reads, [], label);
        assert.deepEqual(got, ["lazy joined", "joined", 7, "later 8"], label);
      }
    }
    // A kcoro job that is no Deferred is still refused by onAwait.
    const plain = scope.launch(() => {});
    await assert.rejects(
      select((s) => s.onAwait(plain as never, () => 1)),
      /Cannot add onAwait clause: expected a Deferred, received a Job/,
    );
  });
});

// runtime() above (the Runtime whose dispose is refused) starts the scheduler (tests/test_order_test.ts).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

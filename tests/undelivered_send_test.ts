// onUndeliveredElement and sends that fail on a closed or cancelled channel, as Kotlin's
// BufferedChannel (1.7+) does: a suspending `send` (and a select's `onSend`) that fails because
// the channel is closed or cancelled hands its element to the hook before it throws
// (`onClosedSend`, `onClosedSelectOnSend`); `trySend` does not (it returns the closed result).
// A `Channel.from` copy has no hook of its own: the creator's is the channel's.
import assert from "node:assert/strict";
import { CancellationError, Channel, ClosedSendError, codecs, library, select } from "../mod.ts";
import { Bridge } from "../src/bridge.ts";
import { catchReported, evalScript, settled, trySendNatively, until, within } from "./support.ts";
import { selectHandleOf } from "../src/channel.ts";

type Box = { n: number };

/**
 * Resolves once `wait`, made in this turn, is no longer only in JavaScript: on a shared channel,
 * once it is queued natively (the bridge's pending count grew past `before`); on a local one
 * (queued in the call: a local wait has nothing more to do), once the microtasks its call left
 * have run, asserting that it still waits. Before, a local one waited a `setTimeout(0)`.
 */
async function afterItQueued(
  shared: boolean,
  before: number,
  wait: Promise<unknown>,
): Promise<void> {
  if (shared) await until(() => Bridge.of(library()).pending > before, "the wait queued natively");
  else assert.equal(await settled(wait), false, "the wait settled before its abort");
}

/** A channel whose hook records what it gets; `shared` makes it native (share()). */
function hooked<T>(capacity: number, shared: boolean) {
  const got: T[] = [];
  const ch = new Channel<T>(capacity, { onUndeliveredElement: (v) => got.push(v) });
  const handle = shared ? ch.share() : undefined;
  return { ch, got, handle };
}

for (const shared of [false, true]) {
  const kind = shared ? "shared" : "local";
  for (const how of ["close", "cancel"] as const) {
    const error = how === "close" ? ClosedSendError : CancellationError;
    Deno.test(`${kind}, ${how === "close" ? "closed" : "cancelled"}: send() hands its value to the hook, trySend does not`, async () => {
      const { ch, got } = hooked<Box | number>(1, shared);
      ch[how]();
      const box = { n: 1 };
      await assert.rejects(ch.send(box), error);
      await assert.rejects(ch.send(2), error);
      assert.equal(ch.trySend(3).state, "closed");
      assert.deepEqual(got, [box, 2]);
      assert.equal(got[0], box, "the caller's value itself, as Kotlin hands the element");
      assert.equal(ch.metrics().dropped, 2);
      ch[Symbol.dispose]();
      assert.deepEqual(got, [box, 2]);
    });

    Deno.test(`${kind}, ${how === "close" ? "closed" : "cancelled"}: a select's onSend hands its value to the hook`, async () => {
      const { ch, got } = hooked<Box>(1, shared);
      ch[how]();
      const box = { n: 1 };
      await assert.rejects(select((s) => s.onSend(ch, box, () => "sent")), error);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0], box);
      ch[Symbol.dispose]();
      assert.equal(got.length, 1);
    });
  }
}

for (const how of ["close", "cancel"] as const) {
  const error = how === "close" ? ClosedSendError : CancellationError;
  Deno.test(`a copy's send to a ${how === "close" ? "closed" : "cancelled"} channel: the value reaches the creator's hook`, async () => {
    const { ch, got, handle } = hooked<Box | number>(1, true);
    const copy = Channel.from<Box | number>(handle!);
    ch[how]();
    await assert.rejects(copy.send({ n: 1 }), error);
    await assert.rejects(copy.send(2), error);
    assert.equal(copy.trySend(3).state, "closed");
    await assert.rejects(select((s) => s.onSend(copy, { n: 4 }, () => "sent")), error);
    copy[Symbol.dispose]();
    assert.equal(ch.metrics().dropped, 3);
    // Kept natively for the creator: collected as it disposes (or cancels) the channel.
    ch[Symbol.dispose]();
    assert.deepEqual(got, [{ n: 1 }, 2, { n: 4 }]);
  });
}

for (const copy of [false, true]) {
  Deno.test(`${copy ? "a copy's" : "a creator's"} send waiting in JavaScript when native code closes the channel: the value reaches the hook`, async () => {
    const { ch, got, handle } = hooked<Box>(0, true);
    const sender = copy ? Channel.from<Box>(handle!) : ch;
    const box = { n: 1 };
    const sending = sender.send(box); // rendezvous, nobody receives: waits in JavaScript this turn
    // Closed natively (as another isolate would): the wait finds it closed as it queues.
    assert.equal(library().symbols("test").kc_chan_close(selectHandleOf(ch)), 1);
    await assert.rejects(sending, ClosedSendError);
    if (copy) sender[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], box);
  });
}

for (const shared of [false, true]) {
  Deno.test(`${shared ? "shared" : "local"}: a send waiting when close() comes still delivers, one waiting when cancel() comes reaches the hook once`, async () => {
    const { ch, got } = hooked<Box>(0, shared);
    const delivered = ch.send({ n: 1 });
    await Promise.resolve();
    ch.close();
    assert.deepEqual(await ch.receive(), { n: 1 });
    await delivered;
    assert.deepEqual(got, []);
    ch[Symbol.dispose]();

    const c2 = hooked<Box>(0, shared);
    const dropped = c2.ch.send({ n: 2 });
    await Promise.resolve();
    c2.ch.cancel();
    await assert.rejects(dropped, CancellationError);
    assert.deepEqual(c2.got, [{ n: 2 }]);
    c2.ch[Symbol.dispose]();
    assert.equal(c2.got.length, 1);
  });
}

Deno.test("a hook that throws: reported, the send still rejects with the close", async () => {
  const ch = new Channel<number>(1, {
    onUndeliveredElement: () => {
      throw new Error("hook");
    },
  });
  ch.close();
  {
    using reported = catchReported();
    await assert.rejects(ch.send(1), ClosedSendError);
    assert.equal(reported.errors.length, 1);
    assert.equal((reported.errors[0] as Error).message, "hook");
  }
  ch[Symbol.dispose]();
});

Deno.test("a hook that throws, in every path that calls it: each value's error reported once, the call goes on as without it", async () => {
  // README ("Channels from TypeScript"): what a throwing hook does in each path. Nothing throws
  // out of trySend, cancel or dispose, and one value's error does not keep the rest from it.
  const messages = (errors: unknown[]) => errors.map((e) => (e as Error).message);
  for (const shared of [false, true]) {
    const open = <T>(capacity: number, overflow?: "drop-latest" | "drop-oldest") => {
      const ch = new Channel<T>(capacity, {
        overflow,
        onUndeliveredElement: (v) => {
          throw new Error(`hook ${v}`);
        },
      });
      if (shared) ch.share();
      return ch;
    };
    using reported = catchReported();
    const take = () => messages(reported.errors.splice(0));
    {
      using latest = open<number>(1, "drop-latest");
      latest.trySend(1);
      assert.deepEqual(latest.trySend(2), { state: "ok" }, "a dropped trySend answers ok");
      assert.deepEqual(take(), ["hook 2"]);
      await latest.send(3); // a dropped send resolves
      assert.deepEqual(take(), ["hook 3"]);
      using oldest = open<number>(1, "drop-oldest");
      oldest.trySend(4);
      assert.deepEqual(oldest.trySend(5), { state: "ok" });
      assert.deepEqual(take(), ["hook 4"]);
    }
    // Disposed last first: each hands its buffered value over.
    assert.deepEqual(take(), ["hook 5", "hook 1"]);
    {
      using closed = open<number>(1);
      closed.close();
      await assert.rejects(closed.send(6), ClosedSendError);
      await assert.rejects(select((s) => s.onSend(closed, 7, () => 0)), ClosedSendError);
      // No hook: the value is the caller's.
      assert.deepEqual(closed.trySend(8), { state: "closed", cause: new ClosedSendError() });
      assert.deepEqual(take(), ["hook 6", "hook 7"]);
    }
    {
      // A send or select its signal cancelled (waiting, or aborted before the call): each value's
      // error reported once, the call still rejects with the signal's reason.
      using aborted = open<number>(0);
      const ctl = new AbortController();
      const waiting = aborted.send(14, { signal: ctl.signal });
      ctl.abort("stop");
      await assert.rejects(waiting, (e) => e === "stop");
      await assert.rejects(
        aborted.send(15, { signal: AbortSignal.abort("stop") }),
        (e) => e === "stop",
      );
      const sel = new AbortController();
      const selecting = select((s) => s.onSend(aborted, 16, () => 0), { signal: sel.signal });
      sel.abort("stop");
      await assert.rejects(selecting, (e) => e === "stop");
      assert.deepEqual(take(), ["hook 14", "hook 15", "hook 16"], `shared: ${shared}`);
    }
    const ch = open<number>(2);
    ch.trySend(9);
    ch.trySend(10);
    const bridge = Bridge.of(library()), before = bridge.pending;
    const waiting = ch.send(11);
    // Queued natively, if shared (bounded; a local channel's send waits at once).
    await until(() => !shared || bridge.pending === before + 1, "the send queued natively");
    ch.cancel(); // does not throw
    await assert.rejects(waiting, CancellationError);
    assert.deepEqual(take().sort(), ["hook 10", "hook 11", "hook 9"], `shared: ${shared}`);
    ch[Symbol.dispose]();
    const full = open<number>(2);
    full.trySend(12);
    full.trySend(13);
    full[Symbol.dispose](); // does not throw
    assert.deepEqual(take(), ["hook 12", "hook 13"]);
  }
});

Deno.test("the creator sees the channel cancelled by a copy: what the cancel dropped reaches the hook then", async () => {
  for (const via of ["receive", "send", "tryReceive", "trySend", "select"] as const) {
    const { ch, got, handle } = hooked<Box>(2, true);
    const copy = Channel.from<Box>(handle!);
    assert.equal(ch.trySend({ n: 1 }).state, "ok");
    copy.cancel();
    copy[Symbol.dispose]();
    if (via === "receive") await assert.rejects(ch.receive(), CancellationError);
    else if (via === "send") await assert.rejects(ch.send({ n: 2 }), CancellationError);
    else if (via === "tryReceive") assert.equal(ch.tryReceive().state, "closed");
    else if (via === "trySend") assert.equal(ch.trySend({ n: 2 }).state, "closed");
    else await assert.rejects(select((s) => s.onReceive(ch, () => 0)), CancellationError);
    // Before any dispose of the creator's: the buffered value the copy's cancel dropped.
    assert.deepEqual(got[0], { n: 1 }, via);
    ch[Symbol.dispose]();
  }
});

Deno.test("a creator's receive waiting when native code cancels: the kept values reach the hook then", async () => {
  const got: number[] = [];
  using ch = new Channel<number>(0, {
    codec: codecs.f64,
    onUndeliveredElement: (v) => got.push(v),
  });
  ch.share();
  const waiting = ch.receive();
  await Promise.resolve(); // queued natively at the end of the turn that began it
  const sym = library().symbols("test");
  const seven = new Float64Array([7]);
  const h = selectHandleOf(ch);
  assert.equal(sym.kc_chan_drop(h, Deno.UnsafePointer.of(seven), 8), 1); // kept for the hook
  sym.kc_chan_cancel(h);
  await assert.rejects(waiting, CancellationError);
  assert.deepEqual(got, [7]);
});

Deno.test("the creator sees the channel closed: values copies' refused sends left reach the hook then", async () => {
  const { ch, got, handle } = hooked<Box>(1, true);
  using copy = Channel.from<Box>(handle!);
  copy.close();
  await assert.rejects(copy.send({ n: 3 }), ClosedSendError);
  assert.deepEqual(got, []); // kept natively for the creator's isolate
  assert.equal((await ch.receiveCatching()).state, "closed");
  assert.deepEqual(got, [{ n: 3 }]);
  ch[Symbol.dispose]();
  assert.equal(got.length, 1);
});

Deno.test("a hook that closes the library while a refused send's own value waits for it: that value still reaches the hook (send, select)", async () => {
  // The creator's refused send (or select onSend) first collects what a copy's cancel dropped:
  // the hook for that closes the library. Before, handing the send's own value on then threw
  // LibraryClosedError (reported): its encoding was never freed, the hook never got it.
  const res = await evalScript(`
    import { CancellationError, Channel, closeLibrary, select } from "./mod.ts";
    const errors = [];
    addEventListener("error", (e) => { errors.push(String(e.error)); e.preventDefault(); });
    for (const via of ["send", "select"]) {
      const got = [];
      const ch = new Channel(2, {
        onUndeliveredElement: (v) => { got.push(v.n); if (v.n === 1) closeLibrary(); },
      });
      const copy = Channel.from(ch.share());
      ch.trySend({ n: 1 });
      copy.cancel(); // drops { n: 1 }, kept natively for the creator's hook
      const p = via === "send" ? ch.send({ n: 2 }) : select((s) => s.onSend(ch, { n: 2 }, () => 0));
      const how = await p.then(() => "resolved", (e) => e instanceof CancellationError ? "cancelled" : String(e));
      if (how !== "cancelled") throw new Error(via + ": " + how);
      if (JSON.stringify(got) !== "[1,2]") throw new Error(via + ": hook got " + JSON.stringify(got));
    }
    if (errors.length !== 0) throw new Error("reported: " + errors.join("; "));
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a refused send counts as dropped whether or not a hook takes its value: from the creator, local or shared, and from a copy", async () => {
  // As native code counts it: kc_chan_drop (the undelivered path) counts the value it is
  // offered, also when no hook takes it and it stays the caller's to free.
  for (const hook of [false, true]) {
    for (const from of ["local creator", "shared creator", "copy"] as const) {
      const got: unknown[] = [];
      const ch = new Channel<Box | number>(
        1,
        hook ? { onUndeliveredElement: (v) => got.push(v) } : {},
      );
      const copy = from === "copy" ? Channel.from<Box | number>(ch.share()) : undefined;
      if (from === "shared creator") ch.share();
      const sender = copy ?? ch;
      ch.close();
      await assert.rejects(sender.send({ n: 1 }), ClosedSendError);
      await assert.rejects(sender.send(2), ClosedSendError); // a primitive: encoded for the copy
      await assert.rejects(select((s) => s.onSend(sender, { n: 3 }, () => 0)), ClosedSendError);
      assert.equal(sender.trySend(4).state, "closed"); // not dropped: still the caller's
      const what = `${from}, ${hook ? "a hook" : "no hook"}`;
      assert.equal(ch.metrics().dropped, 3, what);
      if (copy !== undefined) assert.equal(copy.metrics().dropped, 3, what);
      copy?.[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.equal(got.length, hook ? 3 : 0, what);
    }
  }
});

Deno.test("a hook that uses its own channel runs once per value, one call after the other, as a plain function: local and shared channels alike, on cancel, drop-oldest and dispose", () => {
  // A shared channel's hook that sent, received or closed on its channel took the next kept value
  // inside that call, so its calls nested (the last value's finishing first), and it ran with the
  // Channel as `this`; a local channel's calls follow one another, `this` undefined.
  for (const how of ["cancel", "drop-oldest", "dispose"] as const) {
    const logs: string[][] = [];
    for (const shared of [false, true]) {
      const log: string[] = [];
      const ch: Channel<number> = new Channel<number>(3, {
        overflow: how === "drop-oldest" ? "drop-oldest" : "suspend",
        onUndeliveredElement: function (this: unknown, v) {
          log.push(`start ${v} ${this === undefined ? "plain" : typeof this}`);
          if (how !== "dispose") {
            ch.close(); // first: a drop-oldest send would drop again, for ever
            ch.trySend(100 + v); // closed: the value stays the hook's, which drops it
            ch.tryReceive();
          }
          log.push(`end ${v}`);
        },
      });
      if (shared) ch.share();
      for (let i = 1; i <= 3; i++) ch.trySend(i);
      if (how === "cancel") ch.cancel();
      if (how === "drop-oldest") ch.trySend(4);
      ch[Symbol.dispose](); // "dispose" drops all three here; the others, what is still buffered
      logs.push(log);
    }
    const [local, native] = logs;
    assert.deepEqual(native, local, how);
    for (let i = 0; i < local.length; i += 2) {
      assert.match(local[i], /^start \d+ plain$/, `${how}: ${local}`);
      assert.equal(local[i + 1], `end ${local[i].split(" ")[1]}`, `${how}: ${local}`);
    }
  }
});

// A send cancelled before it had a chance to send hands its value to onUndeliveredElement, as
// Kotlin's does ("the send operation threw an exception because it was cancelled before it had
// a chance to actually send the element": BufferedChannel's cancellation handler of a suspended
// sender, `SenderWithOnUndeliveredElementCancellationHandler`): in kcoro a send's cancellation is
// its `signal`'s abort (a `withTimeout`'s, a task's). Before, its value stayed the caller's.
for (const shared of [false, true]) {
  const kind = shared ? "shared" : "local";
  for (const when of ["in the same turn", "after it queued"] as const) {
    Deno.test(`${kind}: a send waiting when its signal aborts ${when} hands its value to the hook once, counted as dropped`, async () => {
      const { ch, got } = hooked<Box>(0, shared);
      const ctl = new AbortController();
      const box = { n: 1 };
      const before = Bridge.of(library()).pending;
      const sending = ch.send(box, { signal: ctl.signal });
      if (when === "after it queued") await afterItQueued(shared, before, sending);
      const reason = new Error("stop");
      ctl.abort(reason);
      await assert.rejects(sending, (e) => e === reason);
      assert.equal(got.length, 1);
      // A local wait holds the copy the send took (a cancel's waiting sender hands that too).
      assert.deepEqual(got[0], box);
      assert.deepEqual(ch.tryReceive(), { state: "empty" }, "never delivered");
      assert.equal(ch.metrics().dropped, 1);
      ch[Symbol.dispose]();
      assert.equal(got.length, 1, "hooked once");
    });
  }

  Deno.test(`${kind}: a send whose signal aborted before the call hands its value to the hook and rejects with the reason`, async () => {
    const { ch, got } = hooked<Box | number>(1, shared);
    const box = { n: 1 };
    await assert.rejects(ch.send(box, { signal: AbortSignal.abort("stop") }), (e) => e === "stop");
    // Also where the buffer has room: the send did not happen.
    await assert.rejects(ch.send(2, { signal: AbortSignal.abort("stop") }), (e) => e === "stop");
    assert.equal(got[0], box);
    assert.deepEqual(got, [box, 2]);
    assert.deepEqual(ch.tryReceive(), { state: "empty" });
    assert.equal(ch.metrics().dropped, 2);
    // A value the codec cannot carry is its error, not hooked (as a closed channel's send).
    await assert.rejects(
      ch.send((() => {}) as unknown as number, { signal: AbortSignal.abort("stop") }),
      (e) => e !== "stop",
    );
    assert.equal(got.length, 2);
    ch[Symbol.dispose]();
    assert.equal(got.length, 2);
  });

  Deno.test(`${kind}: a send under withTimeout that times out hands its value to the hook; a trySend that finds no room does not`, async () => {
    const { withTimeout, withTimeoutOrNull, TimeoutError } = await import("../mod.ts");
    const { ch, got } = hooked<Box>(0, shared);
    const a = { n: 1 }, b = { n: 2 };
    await assert.rejects(withTimeout(5, (t) => ch.send(a, { signal: t.signal })), TimeoutError);
    assert.equal(await withTimeoutOrNull(5, (t) => ch.send(b, { signal: t.signal })), null);
    assert.deepEqual(ch.trySend({ n: 3 }), { state: "full" });
    assert.deepEqual(got, [a, b]);
    ch[Symbol.dispose]();
    assert.deepEqual(got, [a, b]);
  });
}

Deno.test("a send or select whose signal aborted before the call, on a channel this isolate disposed of already (the creator's, a copy's), rejects with the reason and hands nothing to a hook", async () => {
  // The channel is gone for this isolate: nothing was cancelled that it could still have sent
  // (a plain send there throws InvalidHandleError, unhooked). tests/fixtures/chaos.ts counts a
  // detached copy's pre-aborted sends as not sent on this.
  for (const via of ["creator", "copy"] as const) {
    const { ch, got, handle } = hooked<Box>(1, true);
    const copy = Channel.from<Box>(handle!);
    const gone = via === "creator" ? ch : copy;
    gone[Symbol.dispose]();
    await assert.rejects(
      gone.send({ n: 1 }, { signal: AbortSignal.abort("stop") }),
      (e) => e === "stop",
      via,
    );
    await assert.rejects(
      select((s) => s.onSend(gone, { n: 2 }, () => 0), { signal: AbortSignal.abort("stop") }),
      (e) => e === "stop",
      via,
    );
    if (via === "copy") assert.equal(ch.metrics().dropped, 0, via);
    assert.deepEqual(got, [], via);
    copy[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.deepEqual(got, [], via);
  }
});

Deno.test("a copy's send aborted while it waits (in JavaScript, and queued natively): the value reaches the creator's hook", async () => {
  const { ch, got, handle } = hooked<Box | number>(0, true);
  const copy = Channel.from<Box | number>(handle!);
  const c1 = new AbortController(), c2 = new AbortController();
  const first = copy.send({ n: 1 }, { signal: c1.signal });
  c1.abort("one"); // still in the copy's JavaScript
  await assert.rejects(first, (e) => e === "one");
  const before = Bridge.of(library()).pending;
  const second = copy.send(2, { signal: c2.signal });
  await afterItQueued(true, before, second);
  c2.abort("two");
  await assert.rejects(second, (e) => e === "two");
  await assert.rejects(copy.send(3, { signal: AbortSignal.abort("three") }), (e) => e === "three");
  copy[Symbol.dispose]();
  // Kept natively for the creator: its metrics() hands them over before it counts.
  assert.equal(ch.metrics().dropped, 3);
  assert.deepEqual(got, [{ n: 1 }, 2, 3]);
  ch[Symbol.dispose]();
  assert.deepEqual(got, [{ n: 1 }, 2, 3]);
});

Deno.test("an aborted send that completed first is delivered, never hooked; one that did not is hooked, never delivered", async () => {
  const { ch, got } = hooked<number>(0, false);
  const ctl = new AbortController();
  const sending = ch.send(1, { signal: ctl.signal });
  assert.equal(await ch.receive(), 1); // taken from the waiting send: it settled, delivered
  ctl.abort("late");
  await sending;
  assert.deepEqual(got, []);
  ch[Symbol.dispose]();
  assert.deepEqual(got, []);
});

Deno.test("a send (or select onSend) queued natively that another thread's receive took before its abort is delivered, never hooked: the abort loses", async () => {
  // The abort's withdrawal answers busy (completed, its record not drained): the send resolves
  // as delivered, and its value reaches no hook, also not at the dispose.
  const bridge = Bridge.of(library());
  const sym = library().symbols("test");
  for (const via of ["send", "select"] as const) {
    const got: number[] = [];
    const ch = new Channel<number>(0, {
      codec: codecs.f64,
      onUndeliveredElement: (v) => got.push(v),
    });
    const handle = ch.handle; // outside: only the ring's wait drains its records
    const ctl = new AbortController();
    const before = bridge.pending;
    const sending = via === "send"
      ? ch.send(5, { signal: ctl.signal })
      : select((s) => s.onSend(ch, 5, () => "sent"), { signal: ctl.signal });
    await until(() => bridge.pending === before + 1, `${via}: queued natively`);
    // As another thread: takes the queued value natively, its record left on the ring.
    const out = new Float64Array(1);
    assert.equal(sym.kc_chan_try_recv(handle, Deno.UnsafePointer.of(out), 8), 0, via);
    assert.equal(out[0], 5, via);
    ctl.abort("late");
    assert.equal(await within(sending, 10_000, via), via === "send" ? undefined : "sent", via);
    assert.deepEqual(got, [], `${via}: delivered, never hooked`);
    assert.equal(ch.metrics().dropped, 0, via);
    ch[Symbol.dispose]();
    assert.deepEqual(got, [], `${via}: nor at the dispose`);
  }
});

// A select whose signal aborts is cancelled: each onSend clause's value, not sent, goes to its own
// channel's undelivered path (Kotlin's cancelled select disposes its clauses, each waiting onSend
// handing its element to its channel's hook). A select that a clause won leaves the other
// clauses' values with the caller (a deliberate difference: README, "Select from TypeScript").
for (const shared of [false, true]) {
  const kind = shared ? "shared" : "local";
  for (const when of ["in the same turn", "after it queued", "before it began"] as const) {
    Deno.test(`${kind}: a select whose signal aborts ${when} hands each onSend value to its own channel's hook, once`, async () => {
      const a = hooked<Box>(0, shared), b = hooked<Box>(0, shared);
      using idle = new Channel<number>();
      const ctl = new AbortController();
      if (when === "before it began") ctl.abort("stop");
      const x = { n: 1 }, y = { n: 2 };
      const before = Bridge.of(library()).pending;
      const waiting = select((s) => {
        s.onSend(a.ch, x, () => "a");
        s.onReceive(idle, () => "idle");
        s.onSend(b.ch, y, () => "b");
      }, { signal: ctl.signal });
      // A select is native.
      if (when === "after it queued") await afterItQueued(true, before, waiting);
      ctl.abort("stop");
      await assert.rejects(waiting, (e) => e === "stop");
      assert.deepEqual(a.got, [x]);
      assert.deepEqual(b.got, [y]);
      assert.deepEqual(a.ch.tryReceive(), { state: "empty" }, "never delivered");
      assert.deepEqual(b.ch.tryReceive(), { state: "empty" }, "never delivered");
      assert.equal(a.ch.metrics().dropped, 1);
      assert.equal(b.ch.metrics().dropped, 1);
      a.ch[Symbol.dispose]();
      b.ch[Symbol.dispose]();
      assert.deepEqual(a.got, [x], "hooked once");
      assert.deepEqual(b.got, [y], "hooked once");
    });
  }

  Deno.test(`${kind}: a select that another clause won leaves its onSend values with the caller, unhooked`, async () => {
    const a = hooked<Box>(0, shared);
    using other = new Channel<number>(1);
    other.trySend(5);
    assert.equal(
      await select((s) => {
        s.onSend(a.ch, { n: 1 }, () => "sent");
        s.onReceive(other, (v) => `got ${v}`);
      }),
      "got 5",
    );
    assert.equal(
      await select((s) => {
        s.onSend(a.ch, { n: 2 }, () => "sent");
        s.onTimeout(1, () => "timeout");
      }),
      "timeout",
    );
    assert.deepEqual(a.got, []);
    assert.equal(a.ch.metrics().dropped, 0);
    a.ch[Symbol.dispose]();
    assert.deepEqual(a.got, []);
  });
}

// The abort that loses to a native completion (another thread's send taking the receive clause,
// or its close or cancel failing it) before the record drains: the select still rejects with the
// reason (README's abort paragraph), so it was cancelled and its onSend values, none sent, go to
// their hooks as where the abort won (src/select.ts `complete`, `cancelled`). The first give-up
// decides: a copy's dispose before the abort leaves them the caller's, as a dispose does.
for (const shared of [false, true]) {
  Deno.test(`${shared ? "shared" : "local"}: a select whose abort lost to another thread's completion of its receive clause hands each onSend value to its hook once; given up first by its copy's dispose, it leaves them the caller's`, async () => {
    const bridge = Bridge.of(library());
    const sym = library().symbols("test");
    for (const end of ["a value", "close", "cancel"] as const) {
      for (const first of ["abort", "copy disposed"] as const) {
        const what = `${end}, ${first} first`;
        using a = new Channel<number>(0, { codec: codecs.f64 });
        const copy = Channel.from<number>(a.share());
        const b = hooked<number>(0, shared);
        const ctl = new AbortController();
        const reason = new Error(`stop: ${what}`);
        const before = bridge.pending;
        const outcome = select<string>((s) => {
          s.onReceive(copy, (v) => `got ${v}`);
          s.onSend(b.ch, 9, () => "sent");
        }, { signal: ctl.signal }).then(() => "resolved", (e) => e);
        assert.equal(bridge.pending, before + 1, `${what}: queued natively at its call`);
        // As another thread: completes the receive clause natively, its record not drained.
        if (end === "a value") assert.equal(trySendNatively(a.handle, 7), 0, what);
        else if (end === "close") assert.equal(sym.kc_chan_close(a.handle), 1, what);
        else assert.equal(sym.kc_chan_cancel(a.handle), 0, what);
        if (first === "abort") {
          ctl.abort(reason); // loses (KC_EBUSY): gives up, the record to settle it
          copy[Symbol.dispose]();
        } else {
          copy[Symbol.dispose]();
          ctl.abort(reason);
        }
        const r = await within(outcome, 10_000, what);
        if (first === "abort") assert.equal(r, reason, what);
        else assert.equal((r as Error).name, "InvalidHandleError", `${what}: ${r}`);
        const hookedNow = first === "abort" ? [9] : [];
        assert.deepEqual(b.got, hookedNow, what);
        assert.equal(b.ch.metrics().dropped, hookedNow.length, what);
        assert.deepEqual(b.ch.tryReceive(), { state: "empty" }, `${what}: never delivered`);
        if (end === "a value") {
          assert.deepEqual(a.tryReceive(), { state: "ok", value: 7 }, `${what}: back`);
        }
        b.ch[Symbol.dispose]();
        assert.deepEqual(b.got, hookedNow, `${what}: hooked at most once`);
        assert.equal(bridge.pending, before, what);
      }
    }
  });
}

Deno.test("a copy's select whose signal aborts: its onSend value reaches the creator's hook", async () => {
  const { ch, got, handle } = hooked<Box>(0, true);
  const copy = Channel.from<Box>(handle!);
  const ctl = new AbortController();
  const before = Bridge.of(library()).pending;
  const waiting = select((s) => s.onSend(copy, { n: 1 }, () => "sent"), { signal: ctl.signal });
  await afterItQueued(true, before, waiting);
  ctl.abort("stop");
  await assert.rejects(waiting, (e) => e === "stop");
  await assert.rejects(
    select((s) => s.onSend(copy, { n: 2 }, () => "sent"), { signal: AbortSignal.abort("stop") }),
    (e) => e === "stop",
  );
  copy[Symbol.dispose]();
  assert.equal(ch.metrics().dropped, 2);
  assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
  ch[Symbol.dispose]();
  assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
});

Deno.test("an actor's send waiting on its full mailbox when its signal aborts hands the message to the hook once; a producer's send its own signal aborts, too", async () => {
  const { actor, createScope, produce } = await import("../mod.ts");
  await using scope = createScope();
  const hooked: Box[] = [];
  const release = Promise.withResolvers<void>();
  const a = actor<Box>(scope, async (mailbox) => {
    await release.promise; // takes nothing until the end
    for await (const _ of mailbox) { /* drain */ }
  }, { capacity: 1, onUndeliveredElement: (m) => hooked.push(m) });
  await a.send({ n: 1 }); // buffered
  const ctl = new AbortController();
  const waiting = a.send({ n: 2 }, { signal: ctl.signal }); // the mailbox is full: waits
  ctl.abort("stop");
  await assert.rejects(waiting, (e) => e === "stop");
  assert.deepEqual(hooked, [{ n: 2 }]);
  release.resolve();
  a.close();
  await a.job.join();
  assert.deepEqual(hooked, [{ n: 2 }], "hooked once, the buffered one delivered");

  const got: number[] = [];
  const own = new AbortController();
  let outcome: unknown = "pending";
  let sending = false;
  const out = produce<number>(scope, async (out) => {
    sending = true;
    await out.send(1, { signal: own.signal }).then(() => outcome = "sent", (e) => outcome = e);
  }, { onUndeliveredElement: (v) => got.push(v) }); // rendezvous: nobody receives
  await until(() => sending, "the producer's send to begin");
  own.abort("mine");
  await until(() => outcome !== "pending", "the producer's send to settle");
  assert.equal(outcome, "mine");
  assert.deepEqual(got, [1]);
  out[Symbol.dispose]();
  assert.deepEqual(got, [1]);
});

/**
 * Child-script text (evalScript) for the closed-library actor tests: for an actor still running,
 * then one finished, each beside a rendezvous Channel (both hooks push to `got`, the channel's
 * values marked "channel"), closes the library and sets `results[${key}]` to the values of
 * `calls` (array items over the actor `a` and the channel `ch`) and `got` after them. The script
 * declares `results` and what `calls` uses, and imports actor, Channel, closeLibrary and
 * coroutineScope.
 */
function actorsThroughClosedLibrary(key: string, calls: string): string {
  return `
    for (const when of ["running", "finished"]) {
      const got = [];
      await coroutineScope(async (scope) => {
        let release;
        const gate = new Promise((r) => release = r);
        const a = actor(scope, async () => { await gate; }, { onUndeliveredElement: (m) => got.push(m) });
        const ch = new Channel(0, { onUndeliveredElement: (m) => got.push("channel " + m) });
        if (when === "finished") {
          release();
          await a.job.join();
        }
        closeLibrary();
        results[${key}] = [${calls}, got];
        release();
      });
    }
  `;
}

Deno.test("an actor's send whose signal aborted before the call, through a closed library, rejects with the reason and hands nothing to the hook, the actor running or finished (as a Channel's)", async () => {
  // A Channel's pre-aborted send through a closed library is not hooked (README, "Not hooked
  // either"), nor was a running actor's (its mailbox's send); a finished actor's handed the
  // message to onUndeliveredElement all the same. A child process: closing the library here
  // would close it under the other tests.
  const actors = actorsThroughClosedLibrary(
    "when",
    `await how(a.send("m", { signal: AbortSignal.abort("stop") })),
     await how(ch.send("c", { signal: AbortSignal.abort("stop") }))`,
  );
  const res = await evalScript(`
    import { actor, Channel, closeLibrary, coroutineScope } from "./mod.ts";
    const results = {};
    const how = (p) => p.then(() => "resolved", (e) => e === "stop" ? "stop" : String(e));
    ${actors}
    console.log(JSON.stringify(results));
  `);
  assert.equal(res.code, 0, res.stderr);
  const results = JSON.parse(res.stdout);
  for (const when of ["running", "finished"]) {
    assert.deepEqual(results[when], ["stop", "stop", []], when);
  }
});

Deno.test("through a closed library a producer's send after its task's cancel rejects with the cancellation, and a finished actor's send, trySend and close throw LibraryClosedError, hooking nothing (as a Channel's)", async () => {
  // A Channel's send through a closed library rejects with LibraryClosedError, or with the reason
  // of a signal aborted before the call, and hands nothing to onUndeliveredElement (README, "Not
  // hooked either"); so did a running actor's (its mailbox's). A producer's send made once its
  // task was cancelled (a send "cancelled before it sent") handed its value to the hook there
  // all the same, and a finished actor's plain send did, rejecting with ClosedSendError; its
  // trySend answered `closed` and its close false, where the running actor's threw. A child
  // process: closing the library here would close it under the other tests.
  const actors = actorsThroughClosedLibrary(
    '"actor " + when',
    `await how(a.send("m")), call(() => a.trySend("t")), call(() => a.close()),
     await how(ch.send("c")), call(() => ch.trySend("t")), call(() => ch.close())`,
  );
  const res = await evalScript(`
    import { actor, Channel, closeLibrary, coroutineScope } from "./mod.ts";
    import { produce } from "./src/produce.ts";
    const how = (p) => p.then(() => "resolved", (e) => e?.name ?? String(e));
    const call = (f) => { try { const r = f(); return typeof r === "object" ? r.state : String(r); } catch (e) { return e.name; } };
    const results = {};
    // The producer's task cancelled by its consumer's cancel, or by its scope's.
    for (const by of ["consumer", "scope"]) {
      const got = [];
      let release, sent;
      const gate = new Promise((r) => release = r);
      const done = new Promise((r) => sent = r);
      let started, aborted;
      const running = new Promise((r) => started = r);
      const cancelled = new Promise((r) => aborted = r);
      const scoped = coroutineScope(async (scope) => {
        const out = produce(scope, async (o, task) => {
          task.signal.addEventListener("abort", aborted);
          started();
          await gate; // cancelled, then the library closed, meanwhile
          sent([await how(o.send(1)), await how(o.send(2, { signal: new AbortController().signal }))]);
        }, { onUndeliveredElement: (v) => got.push(v) });
        await running;
        if (by === "consumer") out.cancel(); else scope.cancel();
      }).catch(() => {});
      await cancelled; // the task's signal aborted: its sends are ones made after the cancel
      closeLibrary();
      release();
      results["producer " + by] = [...await done, got];
      await scoped;
    }
    ${actors}
    console.log(JSON.stringify(results));
  `);
  assert.equal(res.code, 0, res.stderr);
  const results = JSON.parse(res.stdout);
  for (const by of ["consumer", "scope"]) {
    assert.deepEqual(
      results[`producer ${by}`],
      ["CancellationError", "CancellationError", []],
      `producer, ${by}`,
    );
  }
  const closed = "LibraryClosedError";
  for (const when of ["running", "finished"]) {
    assert.deepEqual(
      results[`actor ${when}`],
      [closed, closed, closed, closed, closed, closed, []],
      `actor ${when}`,
    );
  }
});

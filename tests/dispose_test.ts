// What a channel's dispose does to the waits still pending on it (review 21): a `Channel.from`
// copy's dispose ends its own waits and leaves the channel to its other holders; an owner's
// dispose cancels the channel, and so every wait on it.
import assert from "node:assert/strict";
import {
  CancellationError,
  Channel,
  type Codec,
  CodecError,
  codecs,
  InvalidHandleError,
  library,
  select,
} from "../mod.ts";
import { librarySymbols } from "../ffi/load.ts";
import { Bridge } from "../src/bridge.ts";
import { encodeCause, giveSlot, takeSlot } from "../src/codec.ts";
import {
  _ENDED_HANDLE,
  _sharedEntries,
  _testRekeyEntry,
  isOwnError,
  selectHandleOf,
  sharedStateOf,
} from "../src/channel.ts";
import { Status } from "../src/errors.ts";
import {
  callersJob,
  catchReported,
  channelsAt,
  createNative,
  describeNative,
  evalScript,
  spyCalls,
  until,
  within,
} from "./support.ts";

// The whole message, status included (every KcoroError's message ends with " (KC_…)"): a wait
// ended with the wrong status fails the comparison.
const outcome = (p: Promise<unknown>): Promise<string> =>
  p.then(
    (v) => `resolved ${JSON.stringify(v)}`,
    (e) => `${e instanceof InvalidHandleError ? "InvalidHandleError" : e?.name}: ${e?.message}`,
  );

/** What `outcome` reads for a wait that a dispose of its channel object ended. */
const disposed = (op: string) =>
  `InvalidHandleError: Cannot ${op}: the channel was disposed (KC_EBADH)`;

Deno.test("a Channel.from copy's dispose rejects its pending waits (queued natively or not), delivers nothing, and leaves the channel open", async () => {
  const bridge = Bridge.of(library());
  for (const queued of [false, true]) {
    using rx = new Channel<{ n: number }>(0);
    using tx = new Channel<{ n: number }>(0);
    const copyRx = Channel.from<{ n: number }>(rx.share());
    const copyTx = Channel.from<{ n: number }>(tx.share());
    const before = bridge.pending;
    const ctl = new AbortController();
    const waits = [
      outcome(copyRx.receive()),
      outcome(copyRx.receive({ signal: ctl.signal })),
      outcome(copyRx.receiveCatching()),
      outcome(copyRx[Symbol.asyncIterator]().next()),
      outcome(copyTx.send({ n: 1 })),
      outcome(copyTx.send({ n: 2 }, { signal: ctl.signal })),
    ];
    if (queued) await until(() => bridge.pending >= before + 6, "6 waits queued natively");
    copyRx[Symbol.dispose]();
    copyTx[Symbol.dispose]();
    const got = await within(Promise.all(waits), 10_000, `the waits (queued: ${queued})`);
    const recv = disposed("receive");
    // receiveCatching's names it, and the iterator's next() "iterate channel", as its signal's
    // errors do (each said "Cannot receive").
    const catching = disposed("receiveCatching");
    const iterating = disposed("iterate channel");
    const send = disposed("send");
    assert.deepEqual(got, [recv, recv, catching, iterating, send, send], `queued: ${queued}`);
    assert.equal(bridge.pending, before, "nothing left on the ring");
    ctl.abort(); // their listeners went with them: nothing happens
    // Nothing of theirs is left in the channels: a value sent now finds no receiver, and no
    // sender waits.
    assert.deepEqual(rx.trySend({ n: 3 }), { state: "full" });
    assert.deepEqual(tx.tryReceive(), { state: "empty" });
    // The channels stay open for their other holders.
    assert.equal(rx.isClosedForSend, false);
    const other = Channel.from<{ n: number }>(rx.share());
    const r = other.receive();
    await rx.send({ n: 4 });
    assert.deepEqual(await r, { n: 4 });
    other[Symbol.dispose]();
  }
});

Deno.test("a Channel.from copy's dispose rejects only its own waits, not another object's on the same channel", async () => {
  using ch = new Channel<number>(0);
  const shared = ch.share();
  const a = Channel.from<number>(shared);
  using b = Channel.from<number>(shared);
  const pa = outcome(a.receive());
  const pb = outcome(b.receive());
  const po = outcome(ch.receive());
  a[Symbol.dispose]();
  assert.equal(
    await within(pa, 10_000, "the disposed copy's receive"),
    disposed("receive"),
  );
  await ch.send(1);
  await ch.send(2);
  assert.deepEqual([await pb, await po].sort(), ["resolved 1", "resolved 2"]);
});

Deno.test("a select waiting on a Channel.from copy ends with the copy's dispose; the channel stays open", async () => {
  const bridge = Bridge.of(library());
  using ch = new Channel<number>(0);
  using other = new Channel<number>(0);
  const copy = Channel.from<number>(ch.share());
  const before = bridge.pending;
  const sel = outcome(select<number>((s) => {
    s.onReceive(other, (v) => v);
    s.onReceive(copy, (v) => v);
    s.onSend(copy, 5, () => -1);
  }));
  await until(() => bridge.pending > before, "the select queued natively");
  copy[Symbol.dispose]();
  assert.equal(
    await within(sel, 10_000, "the select"),
    disposed("select"),
  );
  assert.equal(bridge.pending, before);
  assert.deepEqual(ch.trySend(1), { state: "full" }, "no receive clause waits");
  assert.deepEqual(ch.tryReceive(), { state: "empty" }, "no send clause waits");
  assert.deepEqual(other.trySend(1), { state: "full" });
  // A select that ended first is not touched by a later dispose.
  const copy2 = Channel.from<number>(ch.share());
  const done = select<number>((s) => s.onTimeout(0, () => 7));
  assert.equal(await done, 7);
  copy2[Symbol.dispose]();
});

Deno.test("an owner's dispose cancels the channel: every wait on it rejects with CancellationError, its copies' and selects' too", async () => {
  for (const share of [false, true]) {
    // Receivers wait on one channel, senders on another (on one channel they would meet).
    const rx = new Channel<number>(0);
    const tx = new Channel<number>(0);
    const copyRx = share ? Channel.from<number>(rx.share()) : undefined;
    const copyTx = share ? Channel.from<number>(tx.share()) : undefined;
    const bridge = Bridge.of(library());
    const before = bridge.pending;
    const waits = [
      rx.receive(),
      tx.send(1),
      select((s) => s.onReceive(rx, (v) => v)),
      select((s) => s.onSend(tx, 2, () => 0)),
      ...(share ? [copyRx!.receive(), copyTx!.send(3)] : []),
    ];
    // Each queued natively, if shared (before, a setTimeout(0) stood for that).
    if (share) {
      await until(
        () => bridge.pending === before + waits.length,
        () => `the waits queued natively: ${bridge.pending - before} of ${waits.length}`,
      );
    }
    rx[Symbol.dispose]();
    tx[Symbol.dispose]();
    for (const [i, p] of waits.entries()) {
      await assert.rejects(
        within(p, 10_000, `wait ${i}`),
        (e) => e instanceof CancellationError,
        `share: ${share}, wait ${i}`,
      );
    }
    copyRx?.[Symbol.dispose]();
    copyTx?.[Symbol.dispose]();
  }
});

Deno.test("a wait on a disposed copy does not keep the process alive", async () => {
  const res = await evalScript(
    `
    import { Channel, library } from "./mod.ts";
    import { Bridge } from "./src/bridge.ts";
    import { until } from "./tests/support.ts";
    const ch = new Channel(0);
    ch.share(); // never disposed: its holders are this object and the copy
    const copy = Channel.from(ch.share());
    const got = copy.receive().then(() => "resolved", (e) => e.name);
    // Queued natively: the ring wait is outstanding.
    await until(() => Bridge.of(library()).pendingOutside === 1, "the wait queued natively");
    copy[Symbol.dispose]();
    console.log(await got);
  `,
    { timeoutMs: 30_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "InvalidHandleError");
});

/**
 * True when a trySend on `b` is handed in JavaScript to a receive of `a` begun this turn: the
 * two objects share the isolate's one record of the channel (`Shared`). With a second record,
 * the receive (not queued natively before the end of the turn) is not seen: "full".
 */
function oneRecord(a: Channel<number>, b: Channel<number>): boolean {
  const r = a.receive();
  const sent = b.trySend(1).state === "ok";
  if (!sent) a.trySend(1); // the receive ends either way
  void r;
  return sent;
}

Deno.test("a dispose run again from inside itself (a select's job Disposable, an onUndeliveredElement hook) returns: the first one finishes, once", async () => {
  // A copy: its dispose ends a select waiting on it, whose job Disposable disposes it again.
  // Before, both ran in full and each took the copy's reference from the isolate's record of
  // the channel: the owner's went with it, and a later copy made a second record.
  using ch = new Channel<number>(0);
  const copy = Channel.from<number>(ch.share());
  const job = callersJob(() => ({
    [Symbol.dispose]: () => {
      copy[Symbol.dispose]();
      late = outcome(copy.receive()); // begun inside the dispose
    },
  }));
  let late: Promise<string> | undefined;
  const sel = outcome(select((s) => {
    s.onReceive(copy, (v) => v);
    s.onJoin(job, () => "joined");
  }));
  copy[Symbol.dispose]();
  assert.equal(await sel, disposed("select"));
  // Before, it queued natively with the dispose's flush and took the value sent next.
  const taken = ch.send(2).then(() => "taken");
  assert.equal(
    await within(late!, 10_000, "the receive begun inside the dispose"),
    disposed("receive"),
  );
  assert.deepEqual(await ch.receive(), 2, "the value sent is still there");
  assert.equal(await taken, "taken");
  using later = Channel.from<number>(ch.share());
  assert.ok(oneRecord(ch, later), "the owner and a later copy share one record");
  // An owner: its cancel hands a buffered value to its hook, which disposes it again. Before,
  // the second dispose destroyed the channel and took the owner's reference too.
  let calls = 0;
  const owner: Channel<number> = new Channel<number>(1, {
    onUndeliveredElement: () => {
      calls++;
      owner[Symbol.dispose]();
    },
  });
  const copy2 = Channel.from<number>(owner.share());
  owner.trySend(7);
  owner[Symbol.dispose]();
  assert.equal(calls, 1);
  // The channel is gone (no later copy can be made): the record's count says it.
  assert.equal(sharedStateOf(copy2).refs, 1, "copy2's reference is left, the owner's went once");
  copy2[Symbol.dispose]();
});

/** What the later operations of a copy whose channel ended answer, and the cause they carry. */
async function endedAnswers(copy: Channel<number>): Promise<unknown[]> {
  const causes: unknown[] = [];
  const closed = (r: { state: string; cause?: unknown }) => {
    assert.equal(r.state, "closed");
    causes.push(r.cause);
  };
  const rejects = async (p: Promise<unknown>) => {
    await assert.rejects(p, (e) => {
      causes.push(e);
      return e instanceof CancellationError;
    });
  };
  closed(copy.trySend(1));
  closed(copy.tryReceive());
  closed(copy.trySendMany([1, 2]));
  closed(copy.tryReceiveMany(2));
  await rejects(copy.send(1));
  await rejects(copy.receive());
  closed(await copy.receiveCatching());
  await rejects(copy[Symbol.asyncIterator]().next());
  await rejects(select((s) => s.onReceive(copy, (v) => v)));
  await rejects(select((s) => s.onSend(copy, 1, () => 0)));
  closed(await select<{ state: string }>((s) => s.onReceiveCatching(copy, (r) => r)));
  assert.equal(copy.isClosedForSend, true);
  assert.equal(copy.isClosedForReceive, true);
  assert.equal(copy.close(), false, "closed already: cancelled");
  copy.cancel(new Error("late")); // a no-op: cancelled already
  assert.equal(typeof copy.metrics().takenNs, "number");
  closed(copy.trySend(3)); // the late cancel's cause is not the cause
  return causes;
}

Deno.test("a Channel.from copy whose creator (this isolate's) disposed the channel answers as a cancelled channel; its own dispose stays InvalidHandleError", async () => {
  for (const queued of [false, true]) {
    const bridge = Bridge.of(library());
    const owner = new Channel<number>(0);
    const copy = Channel.from<number>(owner.share());
    const before = bridge.pending;
    const other = Channel.from<number>(owner.share());
    const waits = [copy.receive(), other.receive()];
    if (queued) await until(() => bridge.pending >= before + 2, "the waits queued natively");
    owner[Symbol.dispose]();
    const reasons = (await Promise.allSettled(waits)).map((r) =>
      r.status === "rejected" ? r.reason : r.value
    );
    assert.ok(reasons[0] instanceof CancellationError, `queued: ${queued}`);
    assert.equal(reasons[1], reasons[0], "one error for the waits the dispose ended");
    const causes = await endedAnswers(copy);
    // One cause, every operation: the error the pending waits got.
    for (const c of causes) assert.equal(c, reasons[0], `queued: ${queued}`);
    assert.match((causes[0] as Error).message, /^Channel was cancelled/);
    copy[Symbol.dispose]();
    assert.throws(() => copy.close(), InvalidHandleError, "use after its own dispose");
    assert.throws(() => copy.trySend(1), InvalidHandleError);
    assert.throws(() => Channel.from(owner.share()), InvalidHandleError); // disposed owner
    other[Symbol.dispose]();
  }
});

Deno.test("a Channel.from copy whose channel was destroyed elsewhere finds out at its next call: waits still in JavaScript fail with one CancellationError, later ones answer as cancelled", async () => {
  // The channel's creator is not in this isolate (made and destroyed by C code, as another
  // isolate's creator's dispose destroys it): the copy learns of it from a native call.
  const sym = library().symbols("test");
  for (const how of ["waits in JavaScript", "waits natively", "mapped", "select"]) {
    const h = createNative();
    const entries = _sharedEntries();
    const copy = Channel.from<number>(describeNative(h));
    assert.equal(_sharedEntries(), entries + 1);
    const bridge = Bridge.of(library());
    const before = bridge.pending;
    if (how === "mapped") {
      // Past the 16th use the try-operations go by the mapped handle word.
      for (let i = 0; i < 40; i++) {
        assert.deepEqual(copy.trySend(i), { state: "ok" });
        assert.deepEqual(copy.tryReceive(), { state: "ok", value: i });
      }
    }
    const wait = how === "waits in JavaScript" || how === "waits natively"
      ? copy.receive().then(() => "resolved", (e) => e)
      : undefined;
    if (how === "waits natively") await until(() => bridge.pending > before, "queued natively");
    assert.equal(sym.kc_chan_destroy(h), 0);
    let first: unknown;
    if (how === "select") {
      await assert.rejects(
        select((s) => s.onReceive(copy, (v) => v)),
        (e) => (first = e) instanceof CancellationError,
      );
    } else if (how === "mapped") {
      const r = copy.tryReceive();
      assert.equal(r.state, "closed");
      first = (r as { cause: unknown }).cause;
    } else {
      // The wait (in JavaScript: failed as the call sees the end; queued: by its record).
      assert.equal(copy.isClosedForSend, true, how);
      first = await within(wait!, 10_000, how);
    }
    assert.ok(first instanceof CancellationError, how);
    // The isolate's entry for the handle is gone: a later channel given the handle's value
    // (its slot reused) gets an entry of its own through Channel.from, not this ended one.
    assert.equal(_sharedEntries(), entries, how);
    const causes = await endedAnswers(copy);
    for (const c of causes) assert.equal(c, first, `${how}: one cause`);
    assert.equal(bridge.pending, before, `${how}: nothing left on the ring`);
    // New channels (the channel's memory reused; its handle's slot only once 1,024 others are
    // free, as the tests below force): the copy must not reach them.
    const fresh = Array.from({ length: 4 }, () => new Channel<number>(4, { codec: codecs.f64 }));
    for (const f of fresh) f.trySend(7);
    assert.equal(copy.trySend(1).state, "closed");
    assert.equal(copy.tryReceive().state, "closed");
    for (const f of fresh) {
      assert.deepEqual(f.tryReceive(), { state: "ok", value: 7 });
      f[Symbol.dispose]();
    }
    copy[Symbol.dispose]();
    assert.throws(() => copy.tryReceive(), InvalidHandleError);
  }
});

/**
 * An f64 channel of capacity 4 whose objects here a test then destroys with C code, no call here
 * since: by "copy", a Channel.from copy of a channel C code made; else its creator in this
 * isolate, made native (a select's way, `selectHandleOf`) and never shared.
 */
function deadChannelBy(by: string): { dead: Channel<number>; h: number } {
  if (by === "copy") {
    const h = createNative();
    return { dead: Channel.from<number>(describeNative(h)), h };
  }
  const dead = new Channel<number>(4, { codec: codecs.f64 });
  return { dead, h: selectHandleOf(dead) };
}

/**
 * `copy`, opened with the handle value of `dead`'s entry (its channel destroyed unseen), got an
 * entry of its own (`entries`: the count before it was opened, the dead one's among them, which
 * left): `dead` learnt the end (closed, with a CancellationError), and `copy` works.
 */
function assertOwnEntry(
  copy: Channel<number>,
  dead: Channel<number>,
  entries: number,
  by: string,
) {
  assert.notEqual(sharedStateOf(copy), sharedStateOf(dead), by);
  assert.equal(_sharedEntries(), entries, `${by}: the dead entry left, the copy's came`);
  const r = dead.trySend(1);
  assert.equal(r.state, "closed", by);
  assert.ok((r as { cause: unknown }).cause instanceof CancellationError, by);
  assert.deepEqual(copy.trySend(2), { state: "ok" }, by);
  assert.deepEqual(copy.tryReceive(), { state: "ok", value: 2 }, by);
}

Deno.test("a Channel.from copy opened with a handle value whose entry here is a channel destroyed unseen (its slot's generation wrapped since) gets an entry of its own when the shapes differ; the dead channel's objects learn the end", () => {
  const sym = library().symbols("test");
  for (const by of ["copy", "creator"]) {
    // Each destroyed by C code with no call here since.
    const { dead, h } = deadChannelBy(by);
    assert.equal(sym.kc_chan_destroy(h), 0);
    // A later channel of another shape, given (as the wrap would) the value the entry is under.
    const later = createNative(codecs.f64, 8);
    _testRekeyEntry(dead as Channel<unknown>, later);
    const entries = _sharedEntries();
    const copy = Channel.from<number>(describeNative(later, codecs.f64, 8));
    assertOwnEntry(copy, dead, entries, by); // before: it joined the dead channel's entry
    dead[Symbol.dispose]();
    assert.ok(
      sym.kc_chan_status(later) >= 0,
      `${by}: the dead one's dispose left the later channel`,
    );
    copy[Symbol.dispose](); // the later channel's only holder
    assert.equal(sym.kc_chan_status(later), Status.EBADH, by); // ended
  }
});

Deno.test("a Channel.from copy opened with a handle value whose entry here is a channel destroyed unseen gets an entry of its own also when the later channel given the value has the dead one's shape (kc_chan_serial tells them apart)", () => {
  const sym = library().symbols("test");
  for (const by of ["copy", "creator"]) {
    const out = new Uint32Array(1);
    const { dead, h } = deadChannelBy(by);
    const info = new Uint32Array(4);
    assert.equal(sym.kc_chan_info(h, info), 0);
    const shape = [...info];
    assert.equal(sym.kc_chan_destroy(h), 0);
    // A later channel made as the dead one was, given (as the wrap would) its handle value:
    // kc_chan_info cannot tell them apart.
    assert.equal(sym.kc_chan_create(info[0], info[1], info[2], info[3], out), 0);
    const later = out[0];
    assert.equal(sym.kc_chan_info(later, info), 0);
    assert.deepEqual([...info], shape, by);
    _testRekeyEntry(dead as Channel<unknown>, later);
    const entries = _sharedEntries();
    const copy = Channel.from<number>(describeNative(later));
    // Before: it joined the dead channel's entry (the shapes compared equal).
    assertOwnEntry(copy, dead, entries, by);
    // A second copy joins the later channel's entry (its serial filed as the first was made).
    const again = Channel.from<number>(describeNative(later));
    assert.equal(sharedStateOf(again), sharedStateOf(copy), by);
    again[Symbol.dispose]();
    dead[Symbol.dispose]();
    assert.ok(sym.kc_chan_status(later) >= 0, `${by}: the dead one's dispose left the later one`);
    copy[Symbol.dispose](); // the later channel's only holder
    assert.equal(sym.kc_chan_status(later), Status.EBADH, by); // ended
  }
});

Deno.test("the inlined try-operations of a mapped copy whose channel another thread destroyed unseen (Shared.detour still 0) answer closed, never reaching the later channel that reuses its memory and handle word", () => {
  // The inlined paths (trySend and tryReceive's codecs.f64 and codecs.bytes branches) pass
  // `#handleValue` past the gate, trusting `Shared.detour` 0: a destroy by another thread (here
  // C code, as it would be) between that read and the call is not seen here. The mapped call
  // compares the handle word with the handle: the later channel, given the destroyed one's
  // memory (registry entries are recycled at once), has a handle of its own there.
  const sym = library().symbols("test");
  const wordOf = (h: number) => {
    const out = new BigUint64Array(1);
    assert.notEqual(sym.kc_chan_ready_flag(h, out), null);
    return out[0];
  };
  for (const codec of [codecs.f64, codecs.bytes] as Codec<unknown>[]) {
    const value = codec === codecs.f64 ? 42 : new Uint8Array([42]);
    const other = codec === codecs.f64 ? 7 : new Uint8Array([7]);
    const h = createNative(codec);
    const copy = Channel.from<unknown>(describeNative(h, codec));
    // Past the 16th use the try-operations go by the mapped handle word.
    for (let i = 0; i < 40; i++) {
      assert.deepEqual(copy.trySend(value), { state: "ok" });
      assert.equal(copy.tryReceive().state, "ok");
    }
    const word = wordOf(h);
    assert.equal(sym.kc_chan_destroy(h), 0);
    // A later channel in the same memory, a value buffered (its ready byte set, its blocked
    // byte clear: both inlined paths' conditions hold).
    const later = createNative(codec);
    assert.notEqual(later, h);
    assert.equal(wordOf(later), word, `${codec.name}: the later channel reuses the memory`);
    const laterCh = Channel.from<unknown>(describeNative(later, codec));
    assert.deepEqual(laterCh.trySend(other), { state: "ok" });
    assert.equal(sharedStateOf(copy).detour, 0, `${codec.name}: the copy has not seen the destroy`);
    const got = copy.tryReceive();
    assert.equal(got.state, "closed", codec.name);
    assert.ok((got as { cause: unknown }).cause instanceof CancellationError, codec.name);
    assert.equal(copy.trySend(value).state, "closed", codec.name);
    // The later channel holds its own value only.
    assert.deepEqual(laterCh.tryReceive(), { state: "ok", value: other }, codec.name);
    assert.deepEqual(laterCh.tryReceive(), { state: "empty" }, codec.name);
    copy[Symbol.dispose]();
    laterCh[Symbol.dispose](); // its only holder: the later channel ends with it
    assert.equal(sym.kc_chan_status(later), Status.EBADH, codec.name); // ended
  }
});

Deno.test("a Channel.from copy whose creator disposed the channel never reaches a later channel given the handle's value (its slot's generation wrapped): mapped try-operations and select answer as cancelled", async () => {
  for (const codec of [codecs.f64, codecs.bytes] as Codec<unknown>[]) {
    const owner = new Channel<unknown>(4, { codec });
    const copy = Channel.from<unknown>(owner.share());
    const value = codec === codecs.f64 ? 42 : new Uint8Array([42]);
    // Past the 16th use the copy's try-operations go by the mapped handle word.
    for (let i = 0; i < 40; i++) {
      assert.deepEqual(copy.trySend(value), { state: "ok" });
      assert.equal(copy.tryReceive().state, "ok");
    }
    const h = selectHandleOf(owner);
    owner[Symbol.dispose](); // this isolate's copies know: `Shared.ended`
    // Channels are made and destroyed until one gets the dead handle's value (the slot's 9-bit
    // generation wraps: `channelsAt`).
    const later = channelsAt([h], () => new Channel<unknown>(4, { codec }), selectHandleOf).get(h)!;
    assert.deepEqual(later.trySend(value), { state: "ok" });
    // Before, the copy's mapped try-receive took the later channel's value, its try-send and
    // select's clauses reached it too.
    assert.equal(copy.tryReceive().state, "closed");
    assert.equal(copy.trySend(value).state, "closed");
    assert.equal(
      (await select<{ state: string }>((s) => s.onReceiveCatching(copy, (r) => r))).state,
      "closed",
    );
    await assert.rejects(select((s) => s.onSend(copy, value, () => 0)), CancellationError);
    // No hold forever taken on the later channel (before: it was, or the dead handle's
    // 'stale, destroyed or not a kcoro handle').
    assert.throws(() => copy.handle, /Cannot get handle: .* names no live channel/);
    assert.deepEqual(later.tryReceive(), { state: "ok", value });
    assert.deepEqual(later.tryReceive(), { state: "empty" });
    later[Symbol.dispose]();
    copy[Symbol.dispose]();
  }
});

/** A Channel made later that has `h`, a destroyed channel's handle value (`channelsAt`). */
function channelAt(h: number): Channel<number> {
  return channelsAt([h], () => new Channel<number>(4), selectHandleOf).get(h)!;
}

Deno.test("the hold of a Channel.from copy whose creator disposed the channel is not given back against a later channel given the handle's value: disposed or collected, the copy leaves that one alive", async () => {
  // The hold's record is per thread and handle value: a later channel's hold there replaced
  // the ended one's, and the ended copy's unhold then gave back one of the later channel's
  // holds (its copy's leaving destroyed it under its live owner).
  const x = new Channel<number>(4);
  const ended = Channel.from<number>(x.share());
  const h = selectHandleOf(x);
  x[Symbol.dispose]();
  const later = channelAt(h);
  const copy = Channel.from<number>(later.share());
  ended[Symbol.dispose]();
  copy[Symbol.dispose]();
  assert.deepEqual(later.trySend(1), { state: "ok" }); // before: InvalidHandleError
  assert.deepEqual(later.tryReceive(), { state: "ok", value: 1 });
  later[Symbol.dispose]();

  // The same for a copy collected without dispose (its hold given back by a finalizer).
  const res = await evalScript(
    `
    import { Channel } from "./mod.ts";
    import { _testCopyHoldGone, selectHandleOf } from "./src/channel.ts";
    import { channelsAt, collectUntil } from "./tests/support.ts";
    const gone = [];
    _testCopyHoldGone((handle) => gone.push(handle));
    const x = new Channel(4);
    const h = selectHandleOf(x);
    (() => { Channel.from(x.share()).trySend(1); })(); // a copy, dropped
    x[Symbol.dispose](); // ended: this isolate's copies know
    const later = channelsAt([h], () => new Channel(4), selectHandleOf).get(h);
    const copy = Channel.from(later.share());
    // The dropped copy's finalizer (seen to run: before, five collections were hoped to run
    // it, and the test passed whether or not it had), then the live copy's leaving.
    await collectUntil(() => gone.length > 0, () => "the dropped copy's finalizer");
    if (gone.length !== 1 || gone[0] !== h) throw new Error("finalizers ran for " + gone);
    copy[Symbol.dispose]();
    if (later.trySend(2).state !== "ok") throw new Error("the later channel refused a send");
    later[Symbol.dispose]();
  `,
    { v8Flags: ["--expose-gc"], timeoutMs: 60_000 },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("a Channel.from copy whose first call after its channel's destroy is cancel(cause) finds it cancelled already: the late cause is not the channel's, nor its waits'", async () => {
  const sym = library().symbols("test");
  const late = new Error("late");
  for (const waits of [false, true]) {
    const h = createNative();
    const copy = Channel.from<number>(describeNative(h));
    // A receive still waiting in JavaScript (queued natively at the end of this turn).
    const wait = waits ? copy.receive().then(() => "resolved", (e) => e) : undefined;
    assert.equal(sym.kc_chan_destroy(h), 0);
    copy.cancel(late); // a no-op, as on any cancelled channel
    const r = copy.trySend(1);
    assert.equal(r.state, "closed");
    const cause = (r as { cause?: unknown }).cause;
    assert.ok(cause instanceof CancellationError, `waits: ${waits}`);
    assert.notEqual(cause.cause, late, `waits: ${waits}: the late cancel's cause`);
    if (wait !== undefined) {
      const e = await within(wait, 10_000, "the wait");
      assert.ok(e instanceof CancellationError);
      assert.notEqual((e as Error).cause, late, "the wait's error");
    }
    copy[Symbol.dispose]();
  }
});

Deno.test("an owner whose channel native code destroyed through its handle: its dispose (a `using`) returns and reports nothing, ends the channel here (its entry gone, this isolate's copies cancelled); its calls answer as on a cancelled channel, share() throws InvalidHandleError", async () => {
  // Before, the dispose's cancel threw InvalidHandleError ('Cannot cancel channel: the handle is
  // stale, destroyed or not a kcoro handle') out of the `using` at its block's end, and the
  // object stayed undisposed, its entry in the isolate's table; its calls said the handle was
  // "stale, destroyed or not a kcoro handle", leaving the caller to guess which.
  const sym = library().symbols("test");
  const bridge = Bridge.of(library());
  for (const codec of [codecs.f64, codecs.bytes] as Codec<unknown>[]) {
    for (const how of ["alone", "buffered, a hook", "a wait queued natively", "a copy"]) {
      const label = `${codec.name}, ${how}`;
      using reported = catchReported();
      const value = codec === codecs.f64 ? 1 : new Uint8Array([1]);
      const entries = _sharedEntries();
      const before = bridge.pending;
      let wait: Promise<unknown> | undefined;
      let copy: Channel<unknown> | undefined;
      const dropped: unknown[] = [];
      let h = 0;
      {
        using ch = new Channel<unknown>(
          4,
          how === "buffered, a hook"
            ? { codec, onUndeliveredElement: (v) => dropped.push(v) }
            : { codec },
        );
        h = ch.handle; // escaped: native from here on, as native code's use makes it
        if (how === "buffered, a hook") assert.deepEqual(ch.trySend(value), { state: "ok" });
        if (how === "a wait queued natively") {
          wait = ch.receive().then(() => assert.fail(`${label}: a value`), (e) => e);
          await until(() => bridge.pending > before, `${label}: queued natively`);
        }
        if (how === "a copy") copy = Channel.from<unknown>(ch.share());
        assert.equal(sym.kc_chan_destroy(h), 0, label);
        // The channel's one cause: the CancellationError its wait got from the destroy's cancel
        // (its record says so), else one saying native code destroyed it.
        let cause: unknown = undefined;
        if (wait !== undefined) {
          cause = await within(wait, 10_000, label);
          assert.ok(cause instanceof CancellationError, `${label}: ${String(cause)}`);
          assert.equal(cause.message, "Channel was cancelled", label);
        }
        const r = ch.trySend(value);
        assert.equal(r.state, "closed", label);
        cause ??= (r as { cause: unknown }).cause;
        if (wait === undefined) {
          assert.ok(cause instanceof CancellationError, `${label}: ${String(cause)}`);
          assert.equal(
            cause.message,
            "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
            label,
          );
        }
        assert.deepEqual(r, { state: "closed", cause }, label);
        assert.deepEqual(ch.tryReceive(), { state: "closed", cause }, label);
        assert.equal(ch.close(), false, label);
        ch.cancel();
        assert.equal(ch.isClosedForSend, true, label);
        await assert.rejects(ch.receive(), (e) => e === cause, label);
        // Before, an object naming the dead handle, which `Channel.from` refused.
        assert.throws(() => ch.share(), {
          name: "InvalidHandleError",
          message:
            `Cannot share channel: native code destroyed it (kc_chan_destroy), so handle ${h} ` +
            "names no live channel (KC_EBADH)",
        }, label);
      } // the dispose: before, 'Cannot cancel channel: ...' thrown here
      // The value the destroy dropped went to the hook, not left in the handle's native list
      // for good (the dispose took nothing through the dead handle before).
      assert.deepEqual(dropped, how === "buffered, a hook" ? [value] : [], `${label}: hook`);
      assert.equal(sym.kc_chan_take_undelivered(h, new Uint8Array(32), codec.elemSize), 0, label);
      assert.equal(_sharedEntries(), entries, `${label}: the isolate's entry`);
      assert.equal(bridge.pending, before, `${label}: nothing left on the ring`);
      if (copy !== undefined) {
        // Cancelled, as when its creator disposed of it (this isolate's copies know at once).
        assert.equal(copy.trySend(value).state, "closed", label);
        await assert.rejects(copy.receive(), CancellationError, label);
        copy[Symbol.dispose]();
      }
      await new Promise((r) => setTimeout(r, 0)); // a report queued by the dispose, if any
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

Deno.test("an owner whose channel native code destroyed answers each call as on a cancelled channel, as its copies do, whichever call learns it first: one cause saying so, the values the destroy dropped to its hook once, a send's value too, share() an InvalidHandleError", async () => {
  // Before, every call of the owner's (but close() and cancel()) threw InvalidHandleError
  // ("Cannot send: the channel was destroyed by native code ..."), where its `Channel.from`
  // copies answered as on a cancelled channel: `produce` and `actor` had to tell the channel's
  // own such error from another channel's, and a producer's child task whose send met the
  // destroy failed its scope.
  const sym = library().symbols("test");
  const CAUSE = "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)";
  type Call = (ch: Channel<number>, h: number, isCause: (e: unknown) => boolean) => unknown;
  const closed = (r: unknown, isCause: (e: unknown) => boolean) => {
    assert.equal((r as { state: string }).state, "closed");
    assert.ok(isCause((r as { cause: unknown }).cause), String((r as { cause: unknown }).cause));
  };
  // Each call, with what it answers; `sends`, how many values it hands the hook (refused).
  const calls: Record<string, { call: Call; sends?: number; learns?: false }> = {
    isClosedForSend: { call: (ch) => assert.equal(ch.isClosedForSend, true) },
    isClosedForReceive: { call: (ch) => assert.equal(ch.isClosedForReceive, true) },
    trySend: { call: (ch, _, is) => closed(ch.trySend(7), is) },
    trySendMany: { call: (ch, _, is) => closed(ch.trySendMany([7, 8]), is) },
    tryReceive: { call: (ch, _, is) => closed(ch.tryReceive(), is) },
    tryReceiveMany: { call: (ch, _, is) => closed(ch.tryReceiveMany(4), is) },
    send: { call: (ch, _, is) => assert.rejects(ch.send(7), is), sends: 1 },
    "send of an object": {
      call: (ch, _, is) => assert.rejects((ch as Channel<unknown>).send({ n: 7 }), is),
      sends: 1,
    },
    receive: { call: (ch, _, is) => assert.rejects(ch.receive(), is) },
    receiveCatching: { call: async (ch, _, is) => closed(await ch.receiveCatching(), is) },
    "for await": {
      call: (ch, _, is) =>
        assert.rejects(async () => {
          for await (const v of ch) assert.fail(`received ${v}`);
        }, is),
    },
    "values()": { call: (ch, _, is) => assert.rejects(ch.values().next(), is) },
    onReceive: {
      call: (ch, _, is) => assert.rejects(select((s) => s.onReceive(ch, (v) => v)), is),
    },
    onReceiveCatching: {
      call: async (ch, _, is) => closed(await select((s) => s.onReceiveCatching(ch, (r) => r)), is),
    },
    onSend: {
      call: (ch, _, is) => assert.rejects(select((s) => s.onSend(ch, 7, () => 0)), is),
      sends: 1,
    },
    close: {
      call: (ch) => {
        assert.equal(ch.close(), false);
        assert.equal(ch.close(new Error("late")), false);
      },
    },
    cancel: { call: (ch) => assert.equal(ch.cancel(new Error("late")), undefined) },
    metrics: {
      call: (ch) => {
        const m = ch.metrics();
        assert.equal(m.sends, 0); // the counters went with the channel
        assert.ok(m.takenNs > 0);
      },
    },
    share: {
      call: (ch, h) =>
        assert.throws(() => ch.share(), {
          name: "InvalidHandleError",
          message: `Cannot share channel: native code destroyed it (kc_chan_destroy), so handle ` +
            `${h} names no live channel (KC_EBADH)`,
        }),
    },
    // Read before the destroy (for it): kept, as a copy's read before its channel ended.
    handle: { call: (ch, h) => assert.equal(ch.handle, h), learns: false },
    // Prints what it knows, learning nothing (its status read marks nothing).
    inspect: {
      call: (ch) =>
        assert.match(Deno.inspect(ch), /isClosedForSend: true,\s+isClosedForReceive: true/),
      learns: false,
    },
  };
  for (const [firstName, first] of Object.entries(calls)) {
    if (first.learns === false) continue;
    const label = `${firstName} first`;
    using reported = catchReported();
    const dropped: unknown[] = [];
    let h = 0;
    let size = 0;
    {
      using ch = new Channel<number>(4, { onUndeliveredElement: (v) => dropped.push(v) });
      h = ch.handle; // escaped: native code's to destroy
      size = ch.codec.elemSize;
      assert.deepEqual(ch.trySend(1), { state: "ok" }, label);
      assert.equal(sym.kc_chan_destroy(h), 0, label);
      // The call that learns it (a status read), then every call: one cause, the same each time.
      let cause: unknown = undefined;
      const isCause = (e: unknown) => {
        cause ??= e;
        return e === cause && e instanceof CancellationError && e.message === CAUSE;
      };
      let sends = 0;
      for (const [name, c] of [[firstName, first], ...Object.entries(calls)] as const) {
        try {
          await c.call(ch, h, isCause);
        } catch (e) {
          throw new Error(`${label}, then ${name}: ${String(e)}`, { cause: e });
        }
        sends += c.sends ?? 0;
        // The value the destroy dropped went to the hook as the first call learnt it, once.
        assert.deepEqual(dropped[0], 1, `${label}, then ${name}: the hook`);
      }
      // Then a refused send's each (7, an object's { n: 7 }), as on any cancelled channel.
      assert.equal(dropped.length, 1 + sends, label);
      assert.ok(
        dropped.slice(1).every((v) => v === 7 || (v as { n: number }).n === 7),
        `${label}: ${Deno.inspect(dropped)}`,
      );
    } // the dispose: nothing more to the hook, nothing thrown
    assert.equal(
      dropped.length,
      1 + [first, ...Object.values(calls)].reduce(
        (n, c) => n + (c.sends ?? 0),
        0,
      ),
      `${label}: the dispose`,
    );
    assert.equal(sym.kc_chan_take_undelivered(h, new Uint8Array(size), size), 0, label);
    await new Promise((r) => setTimeout(r, 0)); // a report queued by the dispose, if any
    assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
  }
});

Deno.test("an owner whose channel native code destroyed, learning it while its sends still wait in JavaScript: each rejects as cancelled and its value goes to onUndeliveredElement once, after the values the destroy dropped", async () => {
  // A cancel hands a waiting sender's value to the hook (Kotlin's onUndeliveredElement); so
  // does the destroy's, for the owner's sends not queued natively yet (they wait in JavaScript
  // until the end of their turn). A copy's stay the caller's (no hook of its own).
  const sym = library().symbols("test");
  using reported = catchReported();
  const dropped: unknown[] = [];
  using ch = new Channel<unknown>(1, { onUndeliveredElement: (v) => dropped.push(v) });
  const h = ch.handle;
  assert.deepEqual(ch.trySend(1), { state: "ok" });
  const waits = [ch.send(2), ch.send({ n: 3 })].map((p) =>
    p.then(() => "resolved", (e: unknown) => e)
  );
  assert.equal(sym.kc_chan_destroy(h), 0);
  assert.equal(ch.isClosedForSend, true); // learns it, in the waits' turn
  assert.deepEqual(dropped, [1, 2, { n: 3 }]);
  const cause = (ch.trySend(4) as { cause: unknown }).cause;
  assert.ok(cause instanceof CancellationError, String(cause));
  for (const e of await Promise.all(waits)) assert.equal(e, cause);
  assert.deepEqual(dropped, [1, 2, { n: 3 }], "once");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors.map(String), []);
});

Deno.test("an owner whose channel native code destroyed, seen first by a copy of its isolate while the owner's sends still wait in JavaScript: each value goes to the owner's onUndeliveredElement once, after the values the destroy dropped, as when the owner learns it itself", async () => {
  // The copy's call marks the channel ended for the isolate; the owner's waits still in
  // JavaScript fail then. Before, their values were freed there, never handed to the hook
  // (the owner's own learning hands them over), and what the destroy dropped reached the hook
  // only at the owner's dispose, after a later send's value.
  const sym = library().symbols("test");
  using reported = catchReported();
  const dropped: unknown[] = [];
  using ch = new Channel<unknown>(1, { onUndeliveredElement: (v) => dropped.push(v) });
  using copy = Channel.from<unknown>(ch.share());
  assert.deepEqual(ch.trySend(1), { state: "ok" });
  const waits = [ch.send(2), ch.send({ n: 3 })].map((p) =>
    p.then(() => "resolved", (e: unknown) => e)
  );
  assert.equal(sym.kc_chan_destroy(copy.handle), 0);
  assert.equal(copy.isClosedForSend, true); // the copy learns it, in the waits' turn
  assert.deepEqual(dropped, [1, 2, { n: 3 }]);
  const cause = (ch.trySend(4) as { cause: unknown }).cause;
  assert.ok(cause instanceof CancellationError, String(cause));
  for (const e of await Promise.all(waits)) assert.equal(e, cause);
  await assert.rejects(ch.send(5), (e) => e === cause);
  assert.deepEqual(dropped, [1, 2, { n: 3 }, 5], "once each");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  copy[Symbol.dispose]();
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors.map(String), []);
});

Deno.test("close() that learns of native code's destroy from its flush of the waits still in JavaScript makes no close call on the dead handle: an owner's and a Channel.from copy's", async () => {
  // close() queues the waits still in JavaScript natively first; the first one's queueing meets
  // the dead handle, and the owner (or copy) learns of the destroy there. Before, close() then
  // called kc_chan_close with the dead handle all the same (a later channel given the handle's
  // value would have been closed), answering false only from its KC_EBADH.
  const sym = librarySymbols(library(), "test");
  // The library's one symbols object (every call site reads it): its close, counted.
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  for (const who of ["owner", "copy"] as const) {
    using reported = catchReported();
    const dropped: unknown[] = [];
    using ch = new Channel<number>(1, { onUndeliveredElement: (v) => dropped.push(v) });
    using copy = Channel.from<number>(ch.share());
    const caller = who === "owner" ? ch : copy;
    assert.deepEqual(ch.trySend(1), { state: "ok" });
    const waiting = caller.send(2).then(() => "resolved", (e: unknown) => e);
    const h = ch.handle;
    assert.equal(sym.kc_chan_destroy(h), 0, who);
    const calls: string[] = [];
    {
      using _ = recordCalls(patchable, ["kc_chan_close"], h, calls);
      assert.equal(caller.close(), false, who);
    }
    assert.deepEqual(calls, [], `${who}: no kc_chan_close on the dead handle`);
    const e = await waiting;
    assert.ok(e instanceof CancellationError, `${who}: ${String(e)}`);
    assert.equal(ch.isClosedForSend, true, who);
    assert.deepEqual(dropped, who === "owner" ? [1, 2] : [1], who);
    // Disposed first: `reported` still catches (and hides) what a later dispose reports.
    copy[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], `${who}: nothing reported`);
  }
});

/**
 * Wraps `names` of the library's symbols object so that each call given the handle `dead` (as
 * any argument) is pushed to `calls` by name; the returned object's dispose puts the real
 * functions back. A call given another handle is not recorded: a Channel passes
 * `ENDED_HANDLE`, which names no channel, once it knows its channel ended.
 */
function recordCalls(
  patchable: Record<string, (...args: never[]) => unknown>,
  names: readonly string[],
  dead: number,
  calls: string[],
): Disposable {
  return spyCalls(patchable, names, (n, args) => {
    if (args.includes(dead)) calls.push(n);
  });
}

Deno.test("a try-operation that learns of the channel's end from the waits still in JavaScript ahead of it makes no call of its own on the dead handle: an owner's and a Channel.from copy's trySend and tryReceive", async () => {
  // The waits ahead of it try natively first (oldest first); the first one's try meets the dead
  // handle and the object learns of the end there. Before, the try-operation then made its own
  // native try with the dead handle all the same (a later channel given the handle's value
  // would have been sent to or received from), answering closed only from its KC_EBADH.
  const sym = librarySymbols(library(), "test");
  // The library's one symbols object (every call site reads it): its try-operations, counted.
  type Fn = (...args: never[]) => number;
  const patchable = sym as unknown as Record<string, Fn>;
  const names = [
    "kc_chan_try_send",
    "kc_chan_try_send_at",
    "kc_chan_try_recv",
    "kc_chan_try_recv_at",
  ];
  for (const op of ["trySend", "tryReceive"] as const) {
    for (const who of ["owner", "copy"] as const) {
      const label = `${who}'s ${op}`;
      using reported = catchReported();
      using ch = new Channel<number>(1);
      using copy = Channel.from<number>(ch.share());
      const caller = who === "owner" ? ch : copy;
      for (let i = 0; i < 40; i++) { // past the 16th use: the mapped try-path too
        assert.deepEqual(caller.trySend(i), { state: "ok" }, label);
        assert.deepEqual(caller.tryReceive(), { state: "ok", value: i }, label);
      }
      if (op === "trySend") assert.deepEqual(ch.trySend(1), { state: "ok" }, label); // full
      // Waits ahead of it, in JavaScript until the turn's end.
      const waiting = (op === "trySend" ? caller.send(2) : caller.receive()).then(
        () => "resolved",
        (e: unknown) => e,
      );
      const h = ch.handle;
      assert.equal(sym.kc_chan_destroy(h), 0, label);
      const calls: string[] = [];
      let r: { state: string };
      {
        using _ = recordCalls(patchable, names, h, calls);
        r = op === "trySend" ? caller.trySend(3) : caller.tryReceive();
      }
      assert.equal(r.state, "closed", label);
      // The wait's own try (a receive's is a try-receive), which learns it; none after it.
      const learning = op === "tryReceive" ? ["kc_chan_try_recv"] : [];
      assert.deepEqual(calls, learning, `${label}: no try of its own on the dead handle`);
      const e = await waiting;
      assert.ok(e instanceof CancellationError, `${label}: ${String(e)}`);
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      copy[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

Deno.test("a trySend whose value's getter, run as the value is encoded, learns of native code's destroy makes no try-send on the dead handle: trySend and trySendMany answer closed", () => {
  // Encoding an object runs the caller's code (its getters), which may call the channel: here
  // the owner's isClosedForSend, its first call after the destroy, which learns it. Before, the
  // try-send went on to native code with the dead handle all the same, answering closed only
  // from its KC_EBADH (a later channel given the handle's value would have been sent to).
  const sym = librarySymbols(library(), "test");
  type Fn = (...args: never[]) => number;
  const patchable = sym as unknown as Record<string, Fn>;
  const names = ["kc_chan_try_send", "kc_chan_try_send_at", "kc_chan_try_send_n"];
  for (const op of ["trySend", "trySendMany"] as const) {
    using reported = catchReported();
    const dropped: unknown[] = [];
    using ch = new Channel<unknown>(4, { onUndeliveredElement: (v) => dropped.push(v) });
    const h = ch.handle;
    assert.equal(sym.kc_chan_destroy(h), 0, op);
    let learnt: boolean | undefined;
    const value = {
      get n() {
        learnt ??= ch.isClosedForSend;
        return 1;
      },
    };
    const calls: string[] = [];
    let r: { state: string };
    {
      using _ = recordCalls(patchable, names, h, calls);
      r = op === "trySend" ? ch.trySend(value) : ch.trySendMany([value, 2]);
    }
    assert.equal(learnt, true, `${op}: the getter learnt it`);
    assert.equal(r.state, "closed", op);
    assert.deepEqual(calls, [], `${op}: no try-send on the dead handle`);
    assert.deepEqual(dropped, [], `${op}: a try-send's value stays the caller's`);
    // Disposed first: `reported` still catches (and hides) what a later dispose reports.
    ch[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], `${op}: nothing reported`);
  }
});

Deno.test("the end one object of this isolate learns closes the gate of each of its objects for the channel: an owner whose copy was opened from its handle (no share()), and a second copy of the handle, make no try-send on the dead handle; a third copy's dispose closes only its own", () => {
  // The gate (`Channel.#handle`) is a field of each object: the object that learns of the end
  // sets it on the others of this isolate (`Shared.owner`, `Shared.copies`). Here a copy's
  // isClosedForSend, run by the value's getter as the caller's trySend encodes it, learns of
  // native code's destroy; the caller's try-send, given its own gate after the encoding, must
  // not reach the dead handle (a later channel given its value would be sent to).
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = ["kc_chan_try_send", "kc_chan_try_send_at"];
  for (const who of ["owner", "copy"] as const) {
    using reported = catchReported();
    using ch = new Channel<unknown>(4);
    const h = ch.handle; // read, not shared: the copies below are opened from it
    const opened = () => Channel.from<unknown>(describeNative(h, codecs.default));
    using first = opened();
    using second = opened();
    // A copy's dispose leaves the channel, and the other objects' gates, as they were.
    opened()[Symbol.dispose]();
    assert.deepEqual(second.trySend(1), { state: "ok" }, who);
    assert.deepEqual(ch.trySend(2), { state: "ok" }, who);
    assert.deepEqual(first.tryReceive(), { state: "ok", value: 1 }, who);
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 2 }, who);
    assert.equal(sym.kc_chan_destroy(h), 0, who);
    const caller = who === "owner" ? ch : second;
    let learnt: boolean | undefined;
    const value = {
      get n() {
        learnt ??= first.isClosedForSend;
        return 1;
      },
    };
    const calls: string[] = [];
    let r: { state: string };
    {
      using _ = recordCalls(patchable, names, h, calls);
      r = caller.trySend(value);
    }
    assert.equal(learnt, true, `${who}: the getter learnt it`);
    assert.equal(r.state, "closed", who);
    assert.deepEqual(calls, [], `${who}: no try-send on the dead handle`);
    // Disposed first: `reported` still catches (and hides) what a later dispose reports.
    second[Symbol.dispose]();
    first[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], `${who}: nothing reported`);
  }
});

Deno.test("the end a Channel.from copy learns mid-call closes the gate of an owner of this isolate whose handle never left it (made native by a select, the copy opened from a share object built with the handle's value): its trySend, close(cause), cancel(cause) and select make no call on the dead handle", async () => {
  // The gate (`Channel.#handle`) of each object of this isolate for the channel is closed by
  // the one that learns of the end (`#markEnded`, through `Shared.owner` and `Shared.copies`).
  // An owner's handle need not leave it through `handle` or `share()` for a copy of this
  // isolate to exist: a share object built with the handle's value opens one all the same (the
  // value is taken here from kc_chan_create's result, as native code or a guess would know it).
  // Here the copy learns of native code's destroy from the caller's code the owner's call runs
  // (a value's or a cause's getter, as it is encoded; a select's clause value too). Before, such
  // an owner was not reachable from the entry: the copy's end left its gate open, and its call
  // went on to the dead handle (a later channel given its value, once the slot's generation
  // wrapped, would have been sent to, closed, cancelled or selected on).
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = [
    "kc_chan_try_send",
    "kc_chan_try_send_at",
    "kc_chan_close_cause",
    "kc_chan_close",
    "kc_chan_cancel",
  ];
  // A select's native calls take the handles in its clauses (the first one's here).
  const selects = ["kc_select", "kc_select_async"];
  for (const op of ["trySend", "close", "cancel", "select"] as const) {
    using reported = catchReported();
    using ch = new Channel<unknown>(4);
    let out: Uint32Array | undefined;
    {
      using _ = spyCalls(sym, ["kc_chan_create"], (_n, args) => out = args[4] as Uint32Array);
      // A select makes it native (its handle does not leave it).
      const got = await select<string>((s) => {
        s.onReceive(ch, () => "received");
        s.onTimeout(0, () => "none");
      });
      assert.equal(got, "none", op);
    }
    assert.ok(out !== undefined, `${op}: made native by the select`);
    const h = out[0];
    using copy = Channel.from<unknown>(describeNative(h, codecs.default));
    assert.deepEqual(copy.trySend(1), { state: "ok" }, op);
    assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, op);
    let learnt: boolean | undefined;
    const learn = () => {
      if (learnt !== undefined) return;
      assert.equal(sym.kc_chan_destroy(h), 0, op);
      learnt = copy.isClosedForSend;
    };
    const calls: string[] = [];
    const value = {
      get n() {
        learn();
        return 1;
      },
    };
    {
      using _ = recordCalls(patchable, names, h, calls);
      using _s = spyCalls(sym, selects, (n, args) => {
        const clauses = args[0] as Uint8Array;
        if (new Uint32Array(clauses.buffer, clauses.byteOffset, 1)[0] === h) calls.push(n);
      });
      if (op === "trySend") assert.equal(ch.trySend(value).state, "closed", op);
      else if (op === "select") {
        // Ready as on a cancelled channel: its send clause rejects, its value not delivered.
        await assert.rejects(select((s) => s.onSend(ch, value, () => 0)), CancellationError, op);
      } else {
        const cause = new Error("why");
        Object.defineProperty(cause, "message", {
          get() {
            learn();
            return "why";
          },
        });
        if (op === "close") assert.equal(ch.close(cause), false, op);
        else assert.equal(ch.cancel(cause), undefined, op);
      }
    }
    assert.equal(learnt, true, `${op}: the getter learnt it`);
    assert.deepEqual(calls, [], `${op}: no call on the dead handle`);
    // Disposed first: `reported` still catches (and hides) what a later dispose reports.
    copy[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], `${op}: nothing reported`);
  }
});

Deno.test("Channel.from copies of this isolate dropped undisposed are collected while another copy of the channel lives on (the gate keeps them weakly): their holds given back, the last copy's dispose ends the channel", async () => {
  const res = await evalScript(
    `
    import { Channel, library } from "./mod.ts";
    import { collectUntil, until } from "./tests/support.ts";
    const sym = library().symbols("test");
    const out = new Uint32Array(1);
    if (sym.kc_chan_create(8, 4, 0, 0, out) !== 0) throw new Error("no channel");
    const h = out[0]; // native code's: no owner here
    const shared = { kind: "kcoro.channel", version: 1, handle: h, elemSize: 8, zeroCopy: false, codec: "f64", capacity: 4 };
    const kept = Channel.from(shared);
    const dropped = [];
    (() => {
      for (let i = 0; i < 100; i++) {
        const c = Channel.from(shared);
        if (i % 2 === 0) c.trySend(i); // used, not only made
        else c.tryReceive();
        dropped.push(new WeakRef(c));
      }
    })();
    // (collectUntil derefs in a task apart from its collections: a deref() keeps its target
    // alive to the end of its task.)
    const left = () => dropped.filter((r) => r.deref() !== undefined).length;
    await collectUntil(() => left() === 0, () => "the dropped copies, " + left() + " still reachable");
    if (sym.kc_chan_status(h) < 0) throw new Error("the channel ended while a copy held it");
    kept[Symbol.dispose](); // the last holder, once the dropped ones' finalizers all ran
    await until(() => sym.kc_chan_status(h) < 0, "the dropped copies' holds to be given back");
  `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("the handle a channel's native calls are given once it ended under its object is refused by every channel call with KC_EBADH: the mapped ones too, given the word of a live channel or of a destroyed one", () => {
  // What the gate (`Channel.#handle`) relies on: no handle table hands out its value, and no
  // channel's handle word holds it (a destroyed one's holds 0: its `dead` flag refuses a call
  // given 0 there too, but with this value the word's compare fails first). A pin on the native
  // side's rules, which the gate's tests above do not reach: they record the calls given the
  // dead handle, not what the calls given this one answer.
  const sym = library().symbols("test");
  const E = _ENDED_HANDLE;
  const buf = new Uint8Array(64);
  const p = Deno.UnsafePointer.of(buf);
  const words = new BigUint64Array(2);
  const bridge = Bridge.of(library());
  const slot = takeSlot();
  // It copies the value first (a failed send leaves the copy the caller's): freed at once.
  const sendCopy = (at: Deno.PointerValue) => {
    const rc = sym.kc_chan_try_send_copy(at, E, buf, 3, 17, p);
    sym.kc_desc_free(p);
    return rc;
  };
  // One select clause (select.ts's layout: handle, kind, size, 0, then the value's address), a
  // receive given E: a select's `#fill` gives an ended channel's clause E.
  const clause = new Uint8Array(24);
  new Uint32Array(clause.buffer).set([E, 1, 8, 0]);
  new BigUint64Array(clause.buffer)[2] = BigInt(Deno.UnsafePointer.value(p));
  const index = new Uint32Array(1), ticket = new Uint32Array(1);
  const answers = (label: string) => {
    const rcs = {
      status: sym.kc_chan_status(E),
      close: sym.kc_chan_close(E),
      cancel: sym.kc_chan_cancel(E),
      closeCause: sym.kc_chan_close_cause(E, buf, 1, 0),
      hold: sym.kc_chan_hold(E, 0),
      trySend: sym.kc_chan_try_send(E, p, 8),
      retrySend: sym.kc_chan_retry_send(E, p, 8),
      tryRecv: sym.kc_chan_try_recv(E, p, 8),
      trySendN: sym.kc_chan_try_send_n(E, buf, 8, 1),
      tryRecvN: sym.kc_chan_try_recv_n(E, buf, 8, 1),
      cause: sym.kc_chan_cause(E, buf, 8),
      cancelCause: sym.kc_chan_cancel_cause(E, buf, 8),
      snapshot: sym.kc_chan_snapshot(E, words, 1),
      // A codecs.bytes try-send unmapped, a copy's refused value, a wait's queueing (send and
      // receive) and a close watch: the calls the gate's paths also make with `#handle`.
      trySendCopy: sendCopy(null),
      drop: sym.kc_chan_drop(E, p, 8),
      sendAsync: bridge.submit(false, E, slot, 8),
      recvAsync: bridge.submit(true, E, slot, 8),
      watch: bridge.watch(E, true),
      // A select's probe and its queueing (nothing queued: every handle is looked up first).
      select: sym.kc_select(clause, 1, 0n, 0, 1, index),
      selectAsync: sym.kc_select_async(clause, 1, 0, bridge.ring, ticket, index),
    };
    for (const [call, rc] of Object.entries(rcs)) {
      assert.equal(rc, Status.EBADH, `${label}: ${call}`);
    }
    assert.equal(sym.kc_chan_ready_flag(E, null), null, label);
    assert.equal(sym.kc_chan_blocked_flag(E), null, label);
    assert.equal(sym.kc_chan_waiting_flag(E), null, label);
  };
  answers("no channel");
  using ch = new Channel<number>(4, { codec: codecs.f64 });
  const h = ch.handle;
  assert.notEqual(sym.kc_chan_ready_flag(h, new Uint8Array(words.buffer)), null);
  const word = Deno.UnsafePointer.create(words[0]);
  new Float64Array(buf.buffer, 0, 1)[0] = 7;
  assert.equal(sym.kc_chan_try_send(h, p, 8), 0); // one value, for a receive to find
  for (const label of ["live", "destroyed"]) {
    if (label === "destroyed") assert.equal(sym.kc_chan_destroy(h), 0);
    answers(label);
    assert.equal(sym.kc_chan_try_send_at(word, E, p, 8), Status.EBADH, `${label}: send at`);
    assert.equal(sym.kc_chan_try_recv_at(word, E, p, 8), Status.EBADH, `${label}: recv at`);
    assert.equal(sendCopy(word), Status.EBADH, `${label}: send copy at`);
  }
  // A select with a clause on a live channel holding a value ahead of one given E: KC_EBADH,
  // the value not taken (the one after it takes it). Its caller (select.ts's `#firedEnded`)
  // then probes the clauses ahead of the ended one itself.
  using live = new Channel<number>(4, { codec: codecs.f64 });
  const two = new Uint8Array(48);
  two.set(clause, 24);
  new Uint32Array(two.buffer).set([live.handle, 1, 8, 0]);
  new BigUint64Array(two.buffer)[2] = BigInt(Deno.UnsafePointer.value(p));
  assert.deepEqual(live.trySend(5), { state: "ok" });
  assert.equal(sym.kc_select(two, 2, 0n, 0, 1, index), Status.EBADH, "live, then E");
  assert.equal(sym.kc_select_async(two, 2, 0, bridge.ring, ticket, index), Status.EBADH);
  assert.deepEqual(live.tryReceive(), { state: "ok", value: 5 });
  giveSlot(slot);
  assert.equal(ch.close(), false); // the owner learns of the destroy: cancelled
});

Deno.test("a close(cause) or cancel(cause) whose cause's getter, run as the cause is encoded for other isolates, learns of native code's destroy makes no close or cancel call on the dead handle: an owner's and a Channel.from copy's", async () => {
  // Encoding the cause runs the caller's code (its getters): here one that destroys the channel
  // natively, as another thread's kc_chan_destroy could, then reads a copy's isClosedForSend,
  // which meets the destroy. Before, the close or cancel went on to kc_chan_close_cause with
  // the dead handle all the same (a later channel given the handle's value would have been
  // closed or cancelled, this cause stored as its), answering as cancelled only from its
  // KC_EBADH.
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = ["kc_chan_close_cause", "kc_chan_close", "kc_chan_cancel"];
  for (const op of ["close", "cancel"] as const) {
    for (const who of ["owner", "copy"] as const) {
      const label = `${who}'s ${op}(cause)`;
      using reported = catchReported();
      using ch = new Channel<number>(1);
      using copy = Channel.from<number>(ch.share());
      const other = Channel.from<number>(ch.share()); // the one whose call learns it
      const caller = who === "owner" ? ch : copy;
      const h = ch.handle;
      let learnt: boolean | undefined;
      const cause = new Error("why");
      Object.defineProperty(cause, "message", {
        get() {
          if (learnt === undefined) {
            assert.equal(sym.kc_chan_destroy(h), 0, label);
            learnt = other.isClosedForSend;
          }
          return "why";
        },
      });
      const calls: string[] = [];
      {
        using _ = recordCalls(patchable, names, h, calls);
        if (op === "close") assert.equal(caller.close(cause), false, label);
        else assert.equal(caller.cancel(cause), undefined, label);
      }
      assert.equal(learnt, true, `${label}: the getter learnt it`);
      assert.deepEqual(calls, [], `${label}: no close or cancel call on the dead handle`);
      // Cancelled, as any channel destroyed under its objects.
      const r = caller.trySend(1);
      assert.equal(r.state, "closed", label);
      assert.ok((r as { cause?: unknown }).cause instanceof CancellationError, label);
      other[Symbol.dispose]();
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      copy[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
  await Promise.resolve();
});

Deno.test("cancel() that meets another thread's destroy between its status read and its flush of the waits still in JavaScript makes no cancel call on the dead handle: an owner's and a Channel.from copy's, with a cause and without", async () => {
  // cancel() reads the channel's status first (has it ended?), then queues the waits still in
  // JavaScript natively; a destroy in between (made certain here: kc_chan_status patched to
  // destroy the channel right after its read, as another thread could) is met by the first
  // queueing, and the object learns the end there. Before, cancel() went on to kc_chan_cancel
  // (kc_chan_close_cause with a cause) with the dead handle all the same: once its slot is
  // reused, that cancels whatever later channel has the handle's value.
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = ["kc_chan_cancel", "kc_chan_close_cause", "kc_chan_close"];
  const realStatus = sym.kc_chan_status;
  for (const withCause of [false, true]) {
    for (const who of ["owner", "copy"] as const) {
      const label = `${who}'s cancel(${withCause ? "cause" : ""})`;
      using reported = catchReported();
      const dropped: unknown[] = [];
      using ch = new Channel<number>(1, { onUndeliveredElement: (v) => dropped.push(v) });
      using copy = Channel.from<number>(ch.share());
      const caller = who === "owner" ? ch : copy;
      assert.deepEqual(ch.trySend(1), { state: "ok" }, label);
      // A send waiting in JavaScript (the buffer is full) until the turn's end.
      const waiting = caller.send(2).then(() => "resolved", (e: unknown) => e);
      const h = ch.handle;
      let destroyed = false;
      const calls: string[] = [];
      try {
        patchable.kc_chan_status = (x: number) => {
          const rc = realStatus(x);
          if (x === h && !destroyed) {
            destroyed = true;
            assert.equal(sym.kc_chan_destroy(h), 0, label);
          }
          return rc;
        };
        using _ = recordCalls(patchable, names, h, calls);
        assert.equal(caller.cancel(withCause ? new Error("late") : undefined), undefined, label);
      } finally {
        patchable.kc_chan_status = realStatus;
      }
      assert.equal(destroyed, true, `${label}: destroyed after the status read`);
      assert.deepEqual(calls, [], `${label}: no cancel call on the dead handle`);
      const e = await waiting;
      assert.ok(e instanceof CancellationError, `${label}: ${String(e)}`);
      assert.equal(caller.isClosedForSend, true, label);
      assert.equal(copy.trySend(3).state, "closed", label);
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      copy[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

Deno.test("a close(cause) or cancel(cause) whose cause's getter disposes the object it is called on makes no close or cancel call with its handle: an owner with no copies (its dispose destroyed the channel), and a Channel.from copy (the channel stays as it was); an owner with copies answers as on the cancelled channel", () => {
  // Encoding the cause runs the caller's code (its getters): here one that disposes the caller.
  // An owner with no copies: its dispose cancels and destroys the channel, and (no copy to tell)
  // does not mark it ended (`Shared.ended`), so the close or cancel went on to
  // kc_chan_close_cause with the dead handle (a later channel given its value would have been
  // closed or cancelled). A copy: its dispose gave its hold back, and the close or cancel then
  // acted on a channel it no longer held. Each throws what a call after the dispose throws.
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = ["kc_chan_close_cause", "kc_chan_close", "kc_chan_cancel"];
  for (const op of ["close", "cancel"] as const) {
    for (const who of ["owner", "copy", "owner with a copy"] as const) {
      const label = `${who}'s ${op}(cause)`;
      using reported = catchReported();
      using ch = new Channel<number>(1);
      const copy = who === "owner" ? undefined : Channel.from<number>(ch.share());
      const caller = who === "copy" ? copy! : ch;
      const h = ch.handle; // native (escaped)
      let disposed = false;
      const calls: string[] = [];
      const cause = new Error("why");
      Object.defineProperty(cause, "message", {
        get() {
          if (!disposed) {
            disposed = true;
            caller[Symbol.dispose]();
            calls.length = 0; // the dispose's own (its cancel, while the channel was live)
          }
          return "why";
        },
      });
      let thrown: unknown;
      {
        using _ = recordCalls(patchable, names, h, calls);
        try {
          if (op === "close") assert.equal(caller.close(cause), false, label);
          else caller.cancel(cause);
        } catch (e) {
          thrown = e;
        }
      }
      assert.equal(disposed, true, `${label}: the getter disposed it`);
      assert.deepEqual(calls, [], `${label}: no close or cancel call with the handle`);
      if (who === "owner with a copy") {
        // Its dispose ended the channel for its copies (`Shared.ended`): cancelled, so closed
        // already, as the call answers on any cancelled channel.
        assert.equal(thrown, undefined, `${label}: ${String(thrown)}`);
        assert.equal(copy!.trySend(1).state, "closed", label);
        copy![Symbol.dispose]();
        continue;
      }
      assert.ok(thrown instanceof InvalidHandleError, `${label}: ${String(thrown)}`);
      assert.match(thrown.message, new RegExp(`^Cannot ${op} channel: the channel was disposed`));
      if (who === "copy") {
        // Not closed nor cancelled by the disposed copy: the owner's channel is as it was.
        assert.equal(ch.isClosedForSend, false, label);
        assert.deepEqual(ch.trySend(1), { state: "ok" }, label);
        assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1 }, label);
        // Nor does this isolate take it as closed or cancelled: the owner's cancel is the
        // first, its cause the channel's.
        const mine = new Error("mine");
        ch.cancel(mine);
        const r = ch.trySend(1) as { state: string; cause?: unknown };
        assert.equal(r.state, "closed", label);
        assert.ok(r.cause instanceof CancellationError, `${label}: ${String(r.cause)}`);
        assert.equal(r.cause.cause, mine, label);
      }
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

/**
 * A value whose check by a codec runs the caller's code, which disposes `copy`: an object whose
 * getter the encoding reads (codecs.default's and codecs.structured's). `disposed()` counts the
 * checks run. (codecs.bytes's check runs none of the caller's code: it asks the engine's tag,
 * codec_test. It was `instanceof Uint8Array`, which ran an own Symbol.hasInstance of
 * Uint8Array's, and these tests gave it one; nothing is left to restore since.)
 */
function disposingValue(copy: Channel<unknown>): { value: unknown; disposed: () => number } {
  let disposed = 0;
  const value: unknown = {
    get x() {
      disposed++;
      copy[Symbol.dispose]();
      return 1;
    },
  };
  return { value, disposed: () => disposed };
}

Deno.test("a Channel.from copy whose channel ended: a send or trySend whose value's check disposes the copy throws what a call after the dispose throws, as on a live channel; a value the codec cannot carry throws its CodecError", async () => {
  // The ended path (`#sendEnded`) checks the value by its codec with no native call. Before, a
  // check that ran the caller's code disposing the copy (a getter; an own Symbol.hasInstance of
  // Uint8Array's for codecs.bytes) answered `closed` (send: the cancelled channel's
  // CancellationError), where the same value on a channel that had not ended threw the
  // dispose's InvalidHandleError.
  for (const codec of [codecs.default, codecs.structured] as Codec<unknown>[]) {
    for (const op of ["trySend", "send"] as const) {
      for (const ended of [false, true]) {
        const label = `${codec.name} ${op}, ${ended ? "ended" : "live"}`;
        using reported = catchReported();
        const owner = new Channel<unknown>(0, { codec });
        const copy = Channel.from<unknown>(owner.share());
        const bad = Channel.from<unknown>(owner.share());
        if (ended) owner[Symbol.dispose]();
        const check = disposingValue(copy);
        const value = check.value;
        let thrown: unknown;
        try {
          if (op === "trySend") thrown = copy.trySend(value);
          else await copy.send(value).then((v) => thrown = v, (e) => thrown = e);
        } catch (e) {
          thrown = e;
        }
        assert.ok(check.disposed() > 0, `${label}: the check disposed the copy`);
        assert.ok(thrown instanceof InvalidHandleError, `${label}: ${String(thrown)}`);
        assert.match(thrown.message, new RegExp(`^Cannot ${op}: the channel was disposed`), label);
        // A value the codec cannot carry: its CodecError, whatever the channel's state.
        const fn = () => 1;
        if (op === "trySend") assert.throws(() => bad.trySend(fn), CodecError, label);
        else await assert.rejects(bad.send(fn), CodecError, label);
        // Disposed first: `reported` still catches (and hides) what a later dispose reports.
        bad[Symbol.dispose]();
        if (!ended) owner[Symbol.dispose]();
        assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
      }
    }
  }
});

Deno.test("a Channel.from copy whose channel ended: a send or trySend whose value's getter closes the library throws LibraryClosedError, as on a live channel", async () => {
  // The library closed in a child process: this one's stays open for the other tests. Before,
  // trySend answered `closed` and send rejected with the cancelled channel's CancellationError.
  const res = await evalScript(`
    import { Channel, closeLibrary } from "./mod.ts";
    const out = [];
    for (const op of ["trySend", "send"]) {
      for (const ended of [false, true]) {
        const owner = new Channel(0);
        const copy = Channel.from(owner.share());
        if (ended) owner[Symbol.dispose]();
        const value = { get x() { closeLibrary(); return 1; } };
        let got;
        try {
          got = op === "trySend" ? copy.trySend(value).state : await copy.send(value);
        } catch (e) {
          got = e.name;
        }
        out.push(op + " " + ended + " " + got);
      }
    }
    console.log(out.join("\\n"));
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(res.stdout.trim().split("\n"), [
    "trySend false LibraryClosedError",
    "trySend true LibraryClosedError",
    "send false LibraryClosedError",
    "send true LibraryClosedError",
  ]);
});

Deno.test("an owner's dispose after closeLibrary() ends the channel for its Channel.from copies of this isolate, as open: a copy opened after the library was opened again answers as on a cancelled channel ('its creator disposed of it') with no call on the dead handle; one opened before gives no hold back on it; the entry leaves the isolate's table", async () => {
  // The library closed in a child process: this one's stays open for the other tests. The
  // library stays loaded once opened, so the one opened again is the same loaded library: the
  // handle names the same channel there, and a copy opened from the owner's share() object then
  // joins the owner's entry. Before, the closed library's dispose destroyed the channel and left
  // the entry as it was: the later copy's trySend went to the dead handle (whose value may name
  // a later channel) and, its creator of this isolate, said native code destroyed it; the
  // earlier copy's dispose gave a hold back on the dead handle; the entry stayed in the table.
  const res = await evalScript(`
    import { CancellationError, Channel, closeLibrary, library } from "./mod.ts";
    import { librarySymbols } from "./ffi/load.ts";
    import { _sharedEntries } from "./src/channel.ts";
    import { spyCalls } from "./tests/support.ts";
    const calls = [];
    const spyAll = (sym, h) =>
      spyCalls(sym, Object.keys(sym).filter((n) => n.startsWith("kc_")), (n, args) => {
        if (args.includes(h)) calls.push(n);
      });
    const oldSym = librarySymbols(library(), "test");
    const entries = _sharedEntries();
    const owner = new Channel(4);
    const info = owner.share();
    const h = info.handle;
    const before = Channel.from(info); // of the library about to close
    closeLibrary();
    const after = Channel.from(info); // opens the library again (the same loaded one)
    const out = { entries: _sharedEntries() - entries };
    {
      owner[Symbol.dispose]();
      using _a = spyAll(librarySymbols(library(), "test"), h);
      using _b = spyAll(oldSym, h);
      out.entriesEnded = _sharedEntries() - entries;
      before[Symbol.dispose]();
      out.beforeDispose = calls.splice(0);
      const r = after.trySend(1);
      out.trySend = r.state + ": " + r.cause?.message;
      out.closedForSend = after.isClosedForSend;
      // The class too: a look-alike named CancellationError is not one.
      out.receive = await after.receive().then(
        () => "a value",
        (e) => (e instanceof CancellationError ? "" : "not a CancellationError: ") + String(e),
      );
      out.copyCalls = calls.splice(0);
      after[Symbol.dispose]();
      out.afterDispose = calls.splice(0);
    }
    out.entriesAfter = _sharedEntries() - entries;
    console.log(JSON.stringify(out));
  `);
  assert.equal(res.code, 0, res.stderr);
  const cause = "Channel was cancelled: its creator disposed of it";
  assert.deepEqual(JSON.parse(res.stdout), {
    entries: 1, // the owner's, which both copies joined
    entriesEnded: 0, // out of the table at the owner's dispose
    beforeDispose: [],
    trySend: `closed: ${cause}`,
    closedForSend: true,
    receive: `CancellationError: ${cause}`,
    copyCalls: [],
    afterDispose: [],
    entriesAfter: 0,
  });
});

Deno.test("after closeLibrary(), a library opened again from another file (another loaded copy, whose handle values repeat the closed one's) keeps its channels' entries apart from the closed one's: the closed one's owner's dispose does not end a copy of the new one's channel given the same handle value, and the copy's learning of its channel's destroy does not end that owner's", async () => {
  // The isolate's entries are keyed by the handle's value and the loaded library (`sharedKey`).
  // Keyed by the value alone, the copy joined the owner's entry: the owner's dispose ended the
  // copy's live channel here (trySend closed, "its creator disposed of it"), and the copy's
  // destroy, learnt, ended the owner's channel here, which its dispose then did not destroy.
  const dir = await Deno.makeTempDir({ prefix: "kcoro-copy-" });
  try {
    const copyPath = `${dir}/${library().path.split("/").pop()}`;
    await Deno.copyFile(library().path, copyPath);
    const res = await evalScript(`
      import { Channel, closeLibrary, library } from "./mod.ts";
      import { _sharedEntries } from "./src/channel.ts";
      const out = {};
      for (const learns of ["owner's dispose", "copy's destroy"]) {
        const entries = _sharedEntries();
        const oldSym = library().symbols("test");
        const owner = new Channel(4);
        const info = owner.share();
        const shape = new Uint32Array(4);
        oldSym.kc_chan_info(info.handle, shape);
        closeLibrary();
        Deno.env.set("KCORO_LIB", ${JSON.stringify(copyPath)});
        const lib = library(); // the other file: another loaded library
        const sym = lib.symbols("test");
        // A channel of the new library made by native code, as the owner's was made.
        const made = new Uint32Array(4);
        sym.kc_chan_create(info.elemSize, info.capacity, 0, shape[3], made);
        const r = { sameValue: made[0] === info.handle };
        const copy = Channel.from({ ...info, handle: made[0], library: lib.path });
        r.entries = _sharedEntries() - entries;
        if (learns === "owner's dispose") {
          owner[Symbol.dispose]();
          r.trySend = copy.trySend(1).state;
          r.tryReceive = JSON.stringify(copy.tryReceive());
          r.ownerDestroyed = oldSym.kc_chan_status(info.handle) < 0;
          copy[Symbol.dispose]();
          sym.kc_chan_destroy(made[0]);
        } else {
          sym.kc_chan_destroy(made[0]);
          r.trySend = copy.trySend(1).state;
          owner[Symbol.dispose]();
          r.ownerDestroyed = oldSym.kc_chan_status(info.handle) < 0;
          copy[Symbol.dispose]();
        }
        r.entriesAfter = _sharedEntries() - entries;
        out[learns] = r;
        closeLibrary();
        Deno.env.delete("KCORO_LIB");
      }
      console.log(JSON.stringify(out));
    `);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), {
      "owner's dispose": {
        sameValue: true, // the two tables' first channels
        entries: 2,
        trySend: "ok",
        tryReceive: JSON.stringify({ state: "ok", value: 1 }),
        ownerDestroyed: true,
        entriesAfter: 0,
      },
      "copy's destroy": {
        sameValue: true,
        entries: 2,
        trySend: "closed",
        ownerDestroyed: true,
        entriesAfter: 0,
      },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a select's onSend clause whose value's check disposes its channel (a Channel.from copy, its channel ended or not; an owner with a copy) rejects with what a select after the dispose throws, with no native select; closing the library, LibraryClosedError", async () => {
  // As send and trySend do (`#sendEnded`). Before, on a copy whose channel had ended the select
  // answered as on the cancelled channel (its CancellationError) when a clause came before the
  // send clause, and on a live copy a ready clause before it fired (the native select was given
  // the disposed copy's dead-handle marker).
  const sym = librarySymbols(library(), "test");
  for (const codec of [codecs.default] as Codec<unknown>[]) {
    for (const ended of [false, true]) {
      for (const before of ["none", "empty", "ready"] as const) {
        const label = `${codec.name}, ${ended ? "ended" : "live"}, clause before: ${before}`;
        using reported = catchReported();
        const hooked: unknown[] = [];
        using other = new Channel<number>(1);
        other.share(); // its clause is native too
        if (before === "ready") await other.send(7);
        const owner = new Channel<unknown>(0, {
          codec,
          onUndeliveredElement: (v) => hooked.push(v),
        });
        const copy = Channel.from<unknown>(owner.share());
        if (ended) owner[Symbol.dispose]();
        const check = disposingValue(copy);
        const value = check.value;
        const selects: unknown[] = [];
        let got: string;
        {
          using _spy = spyCalls(sym, ["kc_select", "kc_select_async"], (n) => selects.push(n));
          got = await outcome(select<string>((s) => {
            if (before !== "none") s.onReceive(other, (v) => `received ${v}`);
            s.onSend(copy, value, () => "sent");
          }));
        }
        assert.ok(check.disposed() > 0, `${label}: the check disposed the copy`);
        assert.equal(got, disposed("select"), label);
        assert.deepEqual(selects, [], `${label}: no native select`);
        assert.deepEqual(
          other.tryReceive(),
          before === "ready" ? { state: "ok", value: 7 } : { state: "empty" },
          `${label}: the other clause's channel as it was`,
        );
        assert.deepEqual(hooked, [], `${label}: the value stays the caller's`);
        // Disposed first: `reported` still catches (and hides) what a later dispose reports.
        other[Symbol.dispose]();
        if (!ended) owner[Symbol.dispose]();
        assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
      }
    }
  }
  // An owner with a copy, whose dispose ends the channel under the copy: the same. Before, as
  // on the cancelled channel its dispose ended (the CancellationError).
  {
    using other = new Channel<number>(1);
    other.share();
    const owner = new Channel<unknown>(0);
    const copy = Channel.from<unknown>(owner.share());
    const value = {
      get x() {
        owner[Symbol.dispose]();
        return 1;
      },
    };
    assert.equal(
      await outcome(select<string>((s) => {
        s.onReceive(other, () => "received");
        s.onSend(owner, value, () => "sent");
      })),
      disposed("select"),
    );
    copy[Symbol.dispose]();
  }
  // The library closed by the getter: LibraryClosedError, ended or not (in a child process).
  const res = await evalScript(`
    import { Channel, closeLibrary, select } from "./mod.ts";
    const out = [];
    for (const ended of [false, true]) {
      const other = new Channel(1);
      other.share();
      const owner = new Channel(0);
      const copy = Channel.from(owner.share());
      if (ended) owner[Symbol.dispose]();
      const value = { get x() { closeLibrary(); return 1; } };
      out.push(ended + " " + await select((s) => {
        s.onReceive(other, () => "received");
        s.onSend(copy, value, () => "sent");
      }).then((v) => v, (e) => e.name));
    }
    console.log(out.join("\\n"));
  `);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(res.stdout.trim().split("\n"), [
    "false LibraryClosedError",
    "true LibraryClosedError",
  ]);
});

Deno.test("an owner's dispose with a send queued natively: the send's record, drained after the dispose, makes no call with the dead handle (no take of the dropped values, which the dispose took)", async () => {
  // The dispose cancels (the queued send's value dropped to the kept list), destroys, and takes
  // every value kept for the hook. The send's record comes after, and settling a send a cancel
  // failed collects the kept values: before, through the dead handle's value
  // (kc_chan_take_undelivered), which names a later channel once its slot is reused, whose
  // kept values this disposed owner's hook would then have taken.
  const sym = librarySymbols(library(), "test");
  const patchable = sym as unknown as Record<string, (...args: never[]) => number>;
  const names = ["kc_chan_take_undelivered", "kc_chan_cause", "kc_chan_status"];
  using reported = catchReported();
  const dropped: unknown[] = [];
  const ch = new Channel<number>(1, { onUndeliveredElement: (v) => dropped.push(v) });
  const h = ch.handle; // native (escaped), no copy
  assert.deepEqual(ch.trySend(1), { state: "ok" });
  // Waits (full): the dispose's cancel queues it natively first, then fails it there.
  const sent = ch.send(2).then(() => "resolved", (e: unknown) => e);
  const calls: string[] = [];
  {
    using _ = recordCalls(patchable, names, h, calls);
    ch[Symbol.dispose]();
    calls.length = 0; // the dispose's own (its cancel, its status read guarding its take)
    const e = await sent;
    assert.ok(e instanceof CancellationError, String(e));
  }
  assert.deepEqual(calls, [], "no call with the dead handle after the dispose");
  assert.deepEqual(dropped, [1, 2], "each value to the hook, once");
  assert.deepEqual(reported.errors.map(String), [], "nothing reported");
});

Deno.test("a Channel.from copy's send settled by its record drained after the copy's dispose leaves the channel's cause unread for this isolate's other objects: the owner's next call reads the cause native code cancelled it with", async () => {
  // Native code cancels the channel with a cause while the copy's send is queued natively, and
  // the copy is disposed before the record is drained: its withdrawal fails (the record came),
  // and the record settles the send after the dispose. Its rejection looks for the close cause
  // (`#lookCause`), which a disposed object does not read (no native call on its handle): the
  // look must stay to be made, else this isolate's entry says it was made and the owner's
  // answers lose the cause.
  const sym = library().symbols("test");
  const bridge = Bridge.of(library());
  using reported = catchReported();
  using ch = new Channel<number>(1);
  const copy = Channel.from<number>(ch.share());
  assert.deepEqual(ch.trySend(1), { state: "ok" });
  const before = bridge.pending;
  const sent = copy.send(2).then(() => "resolved", (e: unknown) => e);
  await until(() => bridge.pending > before, "the copy's send queued natively");
  const bytes = encodeCause(new Error("native's"))!;
  assert.equal(sym.kc_chan_close_cause(ch.handle, bytes, bytes.length, 1), 1);
  copy[Symbol.dispose]();
  const e = await sent;
  assert.ok(e instanceof CancellationError, String(e));
  const r = ch.trySend(3) as { state: string; cause?: { cause?: unknown } };
  assert.equal(r.state, "closed");
  assert.ok(r.cause instanceof CancellationError, String(r.cause));
  assert.equal(String(r.cause.cause), "Error: native's", "the cause native code stored");
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors.map(String), [], "nothing reported");
});

/**
 * Gives Error.prototype an accessor `name` that runs `onRead` (the caller's code) with the Error
 * read, then answers "Error" as the data property did: an Error's encoding (node:v8 reads its
 * `name` through the prototype) runs it. The Disposable puts the data property back (`using`, so
 * that a failing test restores it).
 */
function namingErrors(onRead: (e: unknown) => void): Disposable {
  const real = Object.getOwnPropertyDescriptor(Error.prototype, "name")!;
  Object.defineProperty(Error.prototype, "name", {
    configurable: true,
    get() {
      onRead(this);
      return real.value;
    },
    set(v: unknown) {
      Object.defineProperty(this, "name", { value: v, writable: true, configurable: true });
    },
  });
  return { [Symbol.dispose]: () => Object.defineProperty(Error.prototype, "name", real) };
}

Deno.test("a send waiting in JavaScript whose value's encoding at its native queueing or try runs the caller's code that settles it: its native copy is freed, its slot not written once given back, and it is neither queued nor delivered", async () => {
  // A local channel's send waits holding its value as passed (the codec's copy), encoded only
  // when it queues natively at the turn's end (`#submit`) or tries natively (`#tryNow`, a
  // trySend behind it), once the channel escaped. Encoding an Error runs the caller's code:
  // node:v8 reads its `name` through its prototype, here an accessor of Error.prototype's that
  // settles that send. (1) It learns of native code's destroy (another copy's isClosedForSend):
  // the send fails (its value to the owner's hook) and its slot is given back mid-encoding; a
  // send on another channel that must wait takes that slot for its own encoded value. Before
  // (2a6b4ad), the encoding went on into the slot: that send delivered the first one's value,
  // its own copy leaked, and so did the first one's. (2) It aborts the send's signal: the send
  // rejects with the abort's reason. Before, it was queued natively all the same, and a receive
  // took its value. (codecs.bytes's encoding ran an own Symbol.hasInstance of Uint8Array's, which
  // this test used before that encoding stopped running the caller's code.)
  const sym = librarySymbols(library(), "test");
  const isValue = (v: unknown) =>
    Error.isError(v) && Object.getOwnPropertyDescriptor(v, "message")?.value === "the value";
  const said = (v: unknown) => Error.isError(v) ? (v as Error).message : v;
  for (const at of ["queueing", "try"] as const) {
    for (const by of ["end", "abort"] as const) {
      const label = `${by} at its ${at}`;
      using reported = catchReported();
      const dropped: unknown[] = [];
      using ch = new Channel<unknown>(1, { onUndeliveredElement: (v) => dropped.push(said(v)) });
      using b = new Channel<unknown>(1);
      assert.deepEqual(ch.trySend(0), { state: "ok" }, label);
      const ac = new AbortController();
      // Waits in JavaScript (the local buffer is full), its value not encoded.
      const sent = ch.send(new Error("the value"), { signal: ac.signal }).then(
        () => "resolved",
        (e: unknown) => e,
      );
      const other = Channel.from<unknown>(ch.share()); // escapes: native from now on
      assert.deepEqual(b.trySend(8), { state: "ok" }, label);
      b.share(); // native too: a send that must wait holds its value encoded in a slot
      let bSent: Promise<unknown> | undefined;
      let acted = false;
      if (by === "end") assert.equal(sym.kc_chan_destroy(ch.handle), 0, label);
      {
        using _names = namingErrors((v) => {
          if (!acted && isValue(v)) {
            acted = true;
            if (by === "end") assert.equal(other.isClosedForSend, true, label);
            else ac.abort();
            bSent = b.send(new Error("other")).then(() => "resolved", (e: unknown) => e);
          }
        });
        if (at === "try") ch.trySend(5);
        else await Promise.resolve(); // its queueing, at the end of this turn
        await until(() => acted, `${label}: the encoding ran`);
      }
      const e = await sent;
      if (by === "end") {
        assert.ok(e instanceof CancellationError, `${label}: ${String(e)}`);
        // The buffered value the destroy dropped, then the send's: once each.
        assert.deepEqual(dropped, [0, "the value"], `${label}: its value to the hook, once`);
      } else {
        assert.equal(e, ac.signal.reason, `${label}: ${String(e)}`);
        assert.deepEqual(ch.tryReceive(), { state: "ok", value: 0 }, `${label}: the buffered 0`);
        assert.deepEqual(ch.tryReceive(), { state: "empty" }, `${label}: the aborted send's value`);
      }
      assert.equal(await b.receive(), 8, label);
      assert.equal(said(await b.receive()), "other", `${label}: the other send's own value`);
      assert.equal(await bSent, "resolved", label);
      other[Symbol.dispose]();
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      b[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

Deno.test("an owner whose channel native code destroyed, seen first by a copy of its isolate opened from the handle's value (read by `handle`, or kc_chan_create's for an owner a select made native) while the owner's sends still wait in JavaScript: the owner learns it then, its onUndeliveredElement given each value once, as with a copy from share()", async () => {
  // The copy finds the creator through the isolate's entry (`Shared.owner`, set as the channel
  // was made native). Before, only `share()` registered the creator for that: a copy opened from
  // a share object built with the handle's value told no one, the owner's sends' values were
  // freed as they failed (never handed to the hook), and what the destroy dropped reached the
  // hook only at the owner's dispose.
  const sym = librarySymbols(library(), "test");
  for (const how of ["handle", "select"] as const) {
    using reported = catchReported();
    const dropped: unknown[] = [];
    using ch = new Channel<unknown>(1, { onUndeliveredElement: (v) => dropped.push(v) });
    let h: number;
    if (how === "handle") h = ch.handle;
    else {
      let out: Uint32Array | undefined;
      {
        using _ = spyCalls(sym, ["kc_chan_create"], (_n, args) => out = args[4] as Uint32Array);
        const got = await select<string>((s) => {
          s.onReceive(ch, () => "received");
          s.onTimeout(0, () => "none");
        });
        assert.equal(got, "none", how);
      }
      h = out![0];
    }
    using copy = Channel.from<unknown>(describeNative(h, codecs.default, 1));
    assert.deepEqual(ch.trySend(1), { state: "ok" }, how);
    const waits = [ch.send(2), ch.send({ n: 3 })].map((p) =>
      p.then(() => "resolved", (e: unknown) => e)
    );
    assert.equal(sym.kc_chan_destroy(h), 0, how);
    assert.equal(copy.isClosedForSend, true, how); // the copy learns it, in the waits' turn
    assert.deepEqual(dropped, [1, 2, { n: 3 }], how);
    const cause = (ch.trySend(4) as { cause: unknown }).cause;
    assert.ok(cause instanceof CancellationError, `${how}: ${String(cause)}`);
    assert.equal(
      (cause as Error).message,
      "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
      how,
    );
    for (const e of await Promise.all(waits)) assert.equal(e, cause, how);
    await assert.rejects(ch.send(5), (e) => e === cause, how);
    assert.deepEqual(dropped, [1, 2, { n: 3 }, 5], `${how}: once each`);
    // Disposed first: `reported` still catches (and hides) what a later dispose reports.
    copy[Symbol.dispose]();
    ch[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], how);
  }
});

Deno.test("an owner whose channel native code destroyed through a copy's handle: its own first read of `handle` throws the InvalidHandleError that says so, as its share() does", () => {
  // The owner shared the channel (held, its handle not read); a copy of its isolate read the
  // handle, which native code destroyed. The owner's read takes its hold then, on the dead handle:
  // before, 'Cannot get handle: the handle is stale, destroyed or not a kcoro handle', which
  // left the caller to guess which (and `produce` took it for its block's own failure).
  const sym = library().symbols("test");
  using reported = catchReported();
  using ch = new Channel<number>(1);
  using copy = Channel.from<number>(ch.share());
  assert.equal(sym.kc_chan_destroy(copy.handle), 0);
  const h = copy.handle;
  assert.throws(() => ch.handle, {
    name: "InvalidHandleError",
    message:
      `Cannot get handle: native code destroyed it (kc_chan_destroy), so handle ${h} names no ` +
      "live channel (KC_EBADH)",
  });
  // Its share() too (it handed out an object naming the dead handle).
  assert.throws(() => ch.share(), {
    name: "InvalidHandleError",
    message:
      `Cannot share channel: native code destroyed it (kc_chan_destroy), so handle ${h} names ` +
      "no live channel (KC_EBADH)",
  });
  // Its other calls answer as on a cancelled channel.
  assert.equal(ch.isClosedForSend, true);
  // Disposed first: `reported` still catches (and hides) what a later dispose reports.
  copy[Symbol.dispose]();
  ch[Symbol.dispose]();
  assert.deepEqual(reported.errors.map(String), []);
});

Deno.test("an owner whose channel native code destroyed: close() answers false and cancel() does nothing, as on a cancelled channel (Kotlin's), whichever comes first, the late cause not the channel's; its other calls and its copies answer cancelled", async () => {
  // Before, both threw InvalidHandleError ('Cannot close channel: the channel was destroyed by
  // native code ...'), so its dispose, actor and produce each caught it around them.
  const sym = library().symbols("test");
  const late = new Error("late");
  for (const first of ["close", "cancel", "cancel(cause)"] as const) {
    using reported = catchReported();
    const dropped: number[] = [];
    let h = 0;
    {
      using ch = new Channel<number>(4, { onUndeliveredElement: (v) => dropped.push(v) });
      h = ch.handle;
      assert.deepEqual(ch.trySend(1), { state: "ok" });
      using copy = Channel.from<number>(ch.share());
      assert.equal(sym.kc_chan_destroy(h), 0, first);
      for (let i = 0; i < 2; i++) {
        const calls = first === "close" ? ["close", "cancel"] : [first, "close"];
        for (const call of calls) {
          if (call === "close") assert.equal(ch.close(), false, `${first}: ${call}`);
          else if (call === "cancel") assert.equal(ch.cancel(), undefined, `${first}: ${call}`);
          else assert.equal(ch.cancel(late), undefined, `${first}: ${call}`);
        }
      }
      // Its other calls answer as on a cancelled channel, the late cause not the channel's.
      const own = ch.trySend(2);
      assert.equal(own.state, "closed", first);
      const ownCause = (own as { cause?: unknown }).cause;
      assert.ok(ownCause instanceof CancellationError, first);
      assert.equal(
        ownCause.message,
        "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)",
        first,
      );
      // So does a copy, the same cause.
      assert.equal(copy.close(), false, first);
      const r = copy.trySend(2);
      assert.equal(r.state, "closed", first);
      const cause = (r as { cause?: unknown }).cause;
      assert.ok(cause instanceof CancellationError, first);
      assert.notEqual(cause, late, first);
      assert.notEqual(cause.cause, late, first);
      assert.equal(cause, ownCause, first);
    } // the dispose
    // The value the destroy dropped reached the hook once (a cancel's collect, or the dispose).
    assert.deepEqual(dropped, [1], first);
    assert.equal(sym.kc_chan_take_undelivered(h, new Uint8Array(8), 8), 0, first);
    await new Promise((r) => setTimeout(r, 0)); // a report queued by the dispose, if any
    assert.deepEqual(reported.errors.map(String), [], `${first}: nothing reported`);
  }
});

Deno.test("a select on an owner's channel that native code destroyed: its clause is ready as on a cancelled channel, as a copy's is, whether the select or the owner learns it first", async () => {
  // Before: the select rejected with InvalidHandleError ("Cannot select: the channel was
  // destroyed by native code ..."), where a clause on a copy whose channel ended is ready as on
  // a cancelled channel.
  const sym = library().symbols("test");
  const CAUSE = "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)";
  for (const learns of ["the select", "the owner"] as const) {
    for (const clause of ["onReceive", "onReceiveCatching", "onSend", "second clause"] as const) {
      const label = `${learns} first, ${clause}`;
      using reported = catchReported();
      const dropped: number[] = [];
      using ch = new Channel<number>(2, { onUndeliveredElement: (v) => dropped.push(v) });
      using other = new Channel<number>(0); // escaped, never ready
      other.share();
      assert.equal(sym.kc_chan_destroy(ch.handle), 0, label);
      if (learns === "the owner") assert.equal(ch.isClosedForReceive, true, label);
      const sel = select<unknown>((s) => {
        if (clause === "onReceive") s.onReceive(ch, (v) => v);
        else if (clause === "onReceiveCatching") s.onReceiveCatching(ch, (r) => r);
        else if (clause === "onSend") s.onSend(ch, 1, () => "sent");
        else {
          s.onReceive(other, (v) => v);
          s.onReceive(ch, (v) => v);
        }
      });
      const got = await within(sel.then((v) => ({ v }), (e) => ({ e })), 10_000, label);
      const cause = clause === "onReceiveCatching"
        ? ("v" in got ? (got.v as { cause?: unknown }).cause : got.e)
        : "e" in got
        ? got.e
        : got.v;
      assert.ok(cause instanceof CancellationError, `${label}: ${String(cause)}`);
      assert.equal(cause.message, CAUSE, label);
      if (clause === "onReceiveCatching") assert.deepEqual(got, { v: { state: "closed", cause } });
      // A send clause's value, not sent, goes to the hook, as a send's on a cancelled channel.
      assert.deepEqual(dropped, clause === "onSend" ? [1] : [], label);
      // The owner's own calls say the same.
      assert.deepEqual(ch.tryReceive(), { state: "closed", cause }, label);
      // Disposed first: `reported` still catches (and hides) what a later dispose reports.
      other[Symbol.dispose]();
      ch[Symbol.dispose]();
      assert.deepEqual(reported.errors.map(String), [], `${label}: nothing reported`);
    }
  }
});

Deno.test("an owner whose channel native code destroyed, seen first by a copy of its isolate: the values the destroy dropped go to its onUndeliveredElement once, leaving none kept natively", () => {
  // Before, the dispose skipped its collect once the channel was marked ended (here by the
  // copy's call): the buffered value stayed in the handle's native list for good, the hook
  // never called. The copy's call now makes the owner learn it, which takes them then; the
  // dispose finds none left.
  const sym = library().symbols("test");
  for (const codec of [codecs.f64, codecs.bytes] as Codec<unknown>[]) {
    using reported = catchReported();
    const value = codec === codecs.f64 ? 1 : new Uint8Array([1]);
    const dropped: unknown[] = [];
    let h = 0;
    {
      using ch = new Channel<unknown>(4, { codec, onUndeliveredElement: (v) => dropped.push(v) });
      h = ch.handle;
      assert.deepEqual(ch.trySend(value), { state: "ok" });
      using copy = Channel.from<unknown>(ch.share());
      assert.equal(sym.kc_chan_destroy(h), 0, codec.name);
      assert.equal(copy.trySend(value).state, "closed", codec.name); // marks it ended here
      assert.deepEqual(dropped, [value], codec.name); // the owner learnt it, took them
    }
    assert.deepEqual(dropped, [value], `${codec.name}: hook, once`);
    assert.equal(
      sym.kc_chan_take_undelivered(h, new Uint8Array(32), codec.elemSize),
      0,
      codec.name,
    );
    assert.deepEqual(reported.errors.map(String), [], `${codec.name}: nothing reported`);
  }
});

Deno.test("a Channel.from copy that finds its channel ended says what ended it where it can tell: native code's destroy when its creator is of this isolate and did not dispose of it, the creator's dispose when it did, else both", () => {
  // Before, every copy that found the end first said "its creator disposed of it", also when
  // native code had destroyed the channel under a creator that still held it.
  const sym = library().symbols("test");
  const expect = {
    "creator here, native destroy": "Channel was cancelled: native code destroyed it " +
      "(kc_chan_destroy: KC_EBADH)",
    "creator here, its dispose": "Channel was cancelled: its creator disposed of it",
    "creator elsewhere": "Channel was cancelled: its creator disposed of it or native code " +
      "destroyed it (kc_chan_destroy)",
  };
  for (const [how, message] of Object.entries(expect)) {
    let owner: Channel<number> | undefined;
    let handle = 0;
    if (how === "creator elsewhere") {
      // Made by C (as by another isolate's creator): no creator in this isolate.
      const out = new Uint32Array(1);
      assert.equal(sym.kc_chan_create(8, 4, 0, 0, out), 0);
      handle = out[0];
    } else {
      owner = new Channel<number>(4);
      handle = owner.handle;
    }
    const copy = Channel.from<number>(
      owner?.share() ?? describeNative(handle),
    );
    if (how === "creator here, its dispose") owner![Symbol.dispose]();
    else assert.equal(sym.kc_chan_destroy(handle), 0, how);
    const r = copy.trySend(1); // its first call after the end
    assert.equal(r.state, "closed", how);
    const cause = (r as { cause?: unknown }).cause;
    assert.ok(cause instanceof CancellationError, how);
    assert.equal(cause.message, message, how);
    copy[Symbol.dispose]();
    if (how === "creator here, native destroy") owner![Symbol.dispose]();
  }
});

Deno.test("a Channel.from copy called by its creator's onUndeliveredElement while the creator's dispose hands over what its destroy dropped says its creator disposed of it, not native code", () => {
  // A dispose of more than one batch (65,536) of kept values hands the rest to the hook after
  // its destroy. Before, the copies of its isolate were marked ended only after that: a copy's
  // call from the hook met the dead handle first and, its creator of this isolate, said
  // "native code destroyed it", which no native code did.
  const n = 65_536 + 8;
  const expected = "Channel was cancelled: its creator disposed of it";
  for (const op of ["trySend", "tryReceive", "close"] as const) {
    using reported = catchReported();
    let copy: Channel<number> | undefined;
    let calls = 0;
    const seen: string[] = [];
    {
      using ch = new Channel<number>(n, {
        codec: codecs.f64,
        onUndeliveredElement: () => {
          if (++calls !== n) return; // the last value: the dispose's, after its destroy
          if (op === "close") {
            seen.push(`close ${copy!.close()}`);
            return;
          }
          const r = op === "trySend" ? copy!.trySend(1) : copy!.tryReceive();
          if (r.state !== "closed") return void seen.push(r.state);
          const cause = (r as { cause?: unknown }).cause;
          // The class and the whole message: a look-alike or another message fails.
          seen.push(
            `${cause instanceof CancellationError ? "" : "not a CancellationError: "}${cause}`,
          );
        },
      });
      copy = Channel.from<number>(ch.share());
      for (let i = 0; i < n; i++) assert.deepEqual(ch.trySend(i), { state: "ok" }, op);
    } // the dispose: a batch at its cancel, the rest after its destroy
    assert.equal(calls, n, op);
    const r = copy.trySend(2);
    assert.equal(r.state, "closed", op);
    const cause = (r as { cause?: unknown }).cause;
    assert.ok(cause instanceof CancellationError, op);
    assert.equal(cause.message, expected, op);
    if (op !== "close") assert.deepEqual(seen, [`CancellationError: ${expected}`], op);
    else assert.deepEqual(seen, ["close false"], op);
    copy[Symbol.dispose]();
    assert.deepEqual(reported.errors.map(String), [], `${op}: nothing reported`);
  }
});

Deno.test("share() of a Channel.from copy whose creator ended the channel throws InvalidHandleError at once, instead of an object Channel.from refuses", () => {
  for (const how of ["creator's dispose", "native kc_chan_destroy"] as const) {
    const ch = new Channel<number>(2);
    const handle = ch.handle;
    const copy = Channel.from(ch.share());
    if (how === "creator's dispose") ch[Symbol.dispose]();
    else assert.equal(library().symbols("test").kc_chan_destroy(handle), 0, how);
    // Before: share() returned { handle, ... }, and Channel.from of it threw "Cannot open
    // shared channel: handle ... names no live channel".
    assert.throws(() => copy.share(), {
      name: "InvalidHandleError",
      message:
        `Cannot share channel: its creator disposed of it or native code destroyed it, so handle ${handle} names no live channel (KC_EBADH)`,
    }, how);
    // The copy's own error (isOwnError), as every InvalidHandleError its calls raise about
    // it; before, the one such error not recorded. Not its creator's.
    let e: unknown;
    try {
      copy.share();
    } catch (x) {
      e = x;
    }
    assert.ok(isOwnError(copy, e), `${how}: the copy's own`);
    assert.ok(!isOwnError(ch, e), `${how}: not its creator's`);
    // The copy still answers as a cancelled channel.
    assert.equal(copy.trySend(1).state, "closed", how);
    copy[Symbol.dispose]();
    try {
      ch[Symbol.dispose]();
    } catch {
      // destroyed natively: the creator's handle is dead
    }
  }
});

Deno.test("an escaped channel's dispose hands every value it dropped to onUndeliveredElement, exactly once, however many: more than one batch of 65,536 included", async () => {
  // A collect hands at most 65,536 kept values at once and the rest a macrotask later; its
  // timer stopped once the channel was disposed, so a dispose (or a cancel then a dispose in
  // the same turn) of more than 65,536 buffered values left the rest in the handle's native
  // list for good, never at the hook.
  const sym = library().symbols("test");
  const n = 65_536 + 1_000;
  for (const how of ["dispose", "cancel, then dispose", "native kc_chan_destroy, then dispose"]) {
    using reported = catchReported();
    const seen = new Uint8Array(n);
    let got = 0;
    let h = 0;
    {
      using ch = new Channel<number>(n, {
        codec: codecs.f64,
        onUndeliveredElement: (v) => {
          seen[v]++;
          got++;
        },
      });
      h = ch.handle; // escaped: the values are kept natively
      for (let i = 0; i < n; i++) assert.deepEqual(ch.trySend(i), { state: "ok" }, how);
      if (how === "cancel, then dispose") ch.cancel();
      if (how === "native kc_chan_destroy, then dispose") {
        assert.equal(sym.kc_chan_destroy(h), 0, how);
      }
    }
    await until(() => got >= n, `${how}: ${n} values at the hook (${got} so far)`, 10_000);
    // A few more macrotasks: nothing comes twice.
    for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
    assert.equal(got, n, how);
    assert.ok(seen.every((c) => c === 1), `${how}: each value once`);
    assert.equal(sym.kc_chan_take_undelivered(h, new Uint8Array(8), 8), 0, `${how}: none left`);
    assert.deepEqual(reported.errors.map(String), [], `${how}: nothing reported`);
  }
});

Deno.test("an owner that learnt native code destroyed its channel makes no call on the dead handle: a later channel given the handle's value (its slot's generation wrapped) is not closed, cancelled, sent to, received from, collected from or selected on by it", async () => {
  // Before, its close(), cancel(), sends, receives and selects called native code on the handle
  // first and only then read KC_EBADH as the destroy: once a later channel had the handle's
  // value, close() closed that channel (true), cancel() cancelled it and took the values it
  // dropped, trySend sent into it, and a wait still in JavaScript queued on it.
  const sym = library().symbols("test");
  const dropped: number[] = [];
  const a = new Channel<number>(4, { onUndeliveredElement: (v) => dropped.push(v) });
  const ha = a.handle; // escaped, as native code's use makes it
  for (let i = 0; i < 40; i++) { // past the 16th use: the mapped try-path
    assert.deepEqual(a.trySend(i), { state: "ok" });
    assert.deepEqual(a.tryReceive(), { state: "ok", value: i });
  }
  assert.deepEqual(a.trySend(1), { state: "ok" });
  // A second owner with a receive still waiting in JavaScript (queued natively at the turn's
  // end) when it learns of the destroy.
  const w = new Channel<number>(4);
  const hw = w.handle;
  const pending = w.receive().then(
    (v) => `resolved ${v}`,
    (e) => `${e instanceof CancellationError ? "" : "not a CancellationError: "}${e}`,
  );
  assert.equal(sym.kc_chan_destroy(ha), 0);
  assert.equal(sym.kc_chan_destroy(hw), 0);
  // Its first call after the destroy learns it (a status read), and hands the value the destroy
  // dropped to the hook then; from then on it answers as on a cancelled channel.
  const CAUSE = "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)";
  const first = a.trySend(2);
  assert.equal(first.state, "closed");
  const cause = (first as { cause: unknown }).cause;
  assert.ok(cause instanceof CancellationError);
  assert.equal(cause.message, CAUSE);
  assert.deepEqual(dropped, [1]);
  assert.equal(w.isClosedForSend, true);
  // Channels are made and destroyed until two get the dead handles' values (`channelsAt`).
  const laterDropped: number[] = [];
  const later = channelsAt(
    [ha, hw],
    () => new Channel<number>(4, { onUndeliveredElement: (v) => laterDropped.push(v) }),
    selectHandleOf,
  );
  using b = later.get(ha)!;
  using bw = later.get(hw)!;
  assert.deepEqual(b.trySend(10), { state: "ok" });
  assert.deepEqual(b.trySend(11), { state: "ok" });
  assert.deepEqual(bw.trySend(20), { state: "ok" });
  const before = b.metrics();

  const closed = { state: "closed", cause };
  const isCause = (e: unknown) => e === cause;
  assert.equal(a.close(), false, "close()");
  assert.equal(a.close(new Error("late")), false, "close(cause)");
  assert.equal(a.cancel(), undefined, "cancel()");
  assert.equal(a.cancel(new Error("late")), undefined, "cancel(cause)");
  assert.deepEqual(a.trySend(3), closed, "trySend");
  assert.deepEqual(a.tryReceive(), closed, "tryReceive");
  assert.deepEqual(a.trySendMany([3, 4]), closed, "trySendMany");
  assert.deepEqual(a.tryReceiveMany(4), closed, "tryReceiveMany");
  await assert.rejects(a.send(3), isCause, "send");
  await assert.rejects(a.receive(), isCause, "receive");
  assert.deepEqual(await a.receiveCatching(), closed, "receiveCatching");
  await assert.rejects(a[Symbol.asyncIterator]().next(), isCause, "for-await next()");
  await assert.rejects(a.values().next(), isCause, "values() next()");
  await assert.rejects(select((s) => s.onReceive(a, (v) => v)), isCause, "onReceive");
  await assert.rejects(select((s) => s.onSend(a, 3, () => 0)), isCause, "onSend");
  assert.equal(a.isClosedForSend, true, "isClosedForSend");
  assert.equal(a.metrics().sends, 0, "metrics");
  assert.throws(() => a.share(), InvalidHandleError, "share");
  a[Symbol.dispose]();
  // The wait begun before: failed as on the cancelled channel, not queued on the later channel.
  assert.equal(
    await within(pending, 10_000, "the pending receive"),
    `CancellationError: ${CAUSE}`,
  );
  w[Symbol.dispose]();

  // The later channels are as they were: open, their values there, nothing dropped or counted.
  assert.equal(b.isClosedForSend, false);
  assert.deepEqual(laterDropped, []);
  assert.deepEqual(b.tryReceive(), { state: "ok", value: 10 });
  assert.deepEqual(b.tryReceive(), { state: "ok", value: 11 });
  assert.deepEqual(b.tryReceive(), { state: "empty" });
  assert.deepEqual(bw.tryReceive(), { state: "ok", value: 20 });
  const after = b.metrics();
  assert.equal(after.sends, before.sends);
  assert.equal(after.failures.closed + after.failures.cancelled, 0);
  // The destroyed owner's hook: its own value, once, and the two sends' values (refused as on a
  // cancelled channel), none of the later channel's.
  assert.deepEqual(dropped, [1, 3, 3], "the destroyed owner's hook");
});

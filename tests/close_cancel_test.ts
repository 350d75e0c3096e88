// A close followed by a cancel keeps the close's outcome, as Kotlin's channels keep their first
// cause (`BufferedChannel.closeOrCancelImpl`: the close cause is set only if none was): later
// operations answer the close cause (or ClosedReceiveError / ClosedSendError for a plain close),
// the cancel only drops the buffered values (to onUndeliveredElement). The other way round, a
// cancel's CancellationError stays and a later close returns false.
import assert from "node:assert/strict";
import {
  CancellationError,
  Channel,
  ClosedReceiveError,
  ClosedSendError,
  codecs,
  library,
  select,
} from "../mod.ts";
import { librarySymbols } from "../ffi/load.ts";
import { encodeCause } from "../src/codec.ts";
import { within, workerStartMs } from "./support.ts";

/** A local channel, or a shared one (`share()` makes it native), with `dropped` as its hook. */
function make(shared: boolean, dropped: unknown[]): Channel<number> {
  const ch = new Channel<number>(4, {
    codec: codecs.f64,
    onUndeliveredElement: (v) => dropped.push(v),
  });
  if (shared) ch.share();
  return ch;
}

for (const shared of [false, true]) {
  const kind = shared ? "shared" : "local";

  Deno.test(`${kind}: close(cause) then cancel() keeps the close cause, the buffer dropped`, async () => {
    const dropped: unknown[] = [];
    using ch = make(shared, dropped);
    ch.trySend(1);
    ch.trySend(2);
    const boom = new Error("boom");
    assert.equal(ch.close(boom), true);
    ch.cancel(new Error("later"));
    assert.deepEqual(dropped, [1, 2]);
    assert.equal(ch.isClosedForReceive, true);
    await assert.rejects(ch.receive(), (e) => e === boom);
    await assert.rejects(ch.send(3), (e) => e === boom);
    assert.deepEqual(await ch.receiveCatching(), { state: "closed", cause: boom });
    assert.deepEqual(ch.tryReceive(), { state: "closed", cause: boom });
    assert.deepEqual(ch.trySend(4), { state: "closed", cause: boom });
    await assert.rejects(
      (async () => {
        for await (const _ of ch) { /* nothing left */ }
      })(),
      (e) => e === boom,
    );
    await assert.rejects(select((s) => s.onReceive(ch, (v) => v)), (e) => e === boom);
    assert.equal(ch.close(), false);
  });

  Deno.test(`${kind}: close(cause) then cancel(): select's onReceiveCatching and onSend, tryReceiveMany and trySendMany answer the close cause`, async () => {
    // The closed result a select's clause and the many-operations answer is the close's too,
    // not the later cancel's CancellationError (Kotlin's onReceiveCatching: closed(closeCause)).
    using ch = make(shared, []);
    ch.trySend(1);
    const boom = new Error("boom");
    ch.close(boom);
    ch.cancel(new Error("later"));
    assert.deepEqual(await select((s) => s.onReceiveCatching(ch, (r) => r)), {
      state: "closed",
      cause: boom,
    });
    await assert.rejects(select((s) => s.onSend(ch, 2, () => 0)), (e) => e === boom);
    assert.deepEqual(ch.tryReceiveMany(3), { state: "closed", cause: boom });
    assert.deepEqual(ch.trySendMany([3]), { state: "closed", cause: boom });
  });

  Deno.test(`${kind}: close() then cancel() answers as closed: ClosedReceiveError, ClosedSendError, done`, async () => {
    const dropped: unknown[] = [];
    using ch = make(shared, dropped);
    ch.trySend(1);
    ch.close();
    ch.cancel();
    assert.deepEqual(dropped, [1]);
    await assert.rejects(ch.receive(), ClosedReceiveError);
    await assert.rejects(ch.send(3), ClosedSendError);
    assert.deepEqual(await ch.receiveCatching(), { state: "closed" });
    const got: number[] = [];
    for await (const v of ch) got.push(v);
    assert.deepEqual(got, []);
  });

  Deno.test(`${kind}: cancel(cause) then close(other): the cancel's error stays, close returns false`, async () => {
    const dropped: unknown[] = [];
    using ch = make(shared, dropped);
    ch.trySend(1);
    const why = new CancellationError("stop");
    ch.cancel(why);
    assert.equal(ch.close(new Error("too late")), false);
    assert.deepEqual(dropped, [1]);
    await assert.rejects(ch.receive(), (e) => e === why);
    await assert.rejects(ch.send(3), (e) => e === why);
    assert.deepEqual(await ch.receiveCatching(), { state: "closed", cause: why });
  });
}

Deno.test("a copy whose creator was disposed after close(cause) answers the close cause", async () => {
  const creator = new Channel<number>(2, { codec: codecs.f64 });
  using copy = Channel.from<number>(creator.share());
  const boom = new Error("boom");
  creator.close(boom);
  creator[Symbol.dispose]();
  await assert.rejects(copy.receive(), (e) => e === boom);
  await assert.rejects(copy.send(1), (e) => e === boom);
  assert.deepEqual(await copy.receiveCatching(), { state: "closed", cause: boom });
  assert.equal(copy.isClosedForReceive, true);
});

Deno.test("a copy whose creator was disposed after a plain close() answers as closed", async () => {
  const creator = new Channel<number>(2, { codec: codecs.f64 });
  using copy = Channel.from<number>(creator.share());
  creator.close();
  creator[Symbol.dispose]();
  await assert.rejects(copy.receive(), ClosedReceiveError);
  await assert.rejects(copy.send(1), ClosedSendError);
  assert.deepEqual(await copy.receiveCatching(), { state: "closed" });
});

Deno.test("Workers: close(cause) then cancel() in one isolate: the other answers the close cause", async () => {
  using ch = new Channel<number>(2, { codec: codecs.f64 });
  const shared = ch.share();
  ch.trySend(5);
  ch.close(new TypeError("boom"));
  ch.cancel(new Error("later"));
  const worker = new Worker(new URL("./fixtures/close_cancel_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const got = within(
      new Promise<unknown>((resolve) => worker.onmessage = (e) => resolve(e.data)),
      workerStartMs,
      "the Worker's report",
    );
    worker.postMessage({ input: shared });
    const closed = { name: "TypeError", message: "boom", cancellation: false };
    assert.deepEqual(await got, {
      receive: closed,
      send: closed,
      receiveCatching: closed,
      closedForReceive: true,
    });
  } finally {
    worker.terminate();
  }
});

Deno.test("native code's close (with a cause or none) then this isolate's cancel: the close's outcome (kc_chan_status bit 3)", async () => {
  // This isolate never saw the close as its own (no closedFirst of its close): it learns from
  // bit 3 that a close came before its cancel. Without it, a CancellationError.
  const sym = librarySymbols(library(), "test");
  for (const withCause of [false, true]) {
    const what = withCause ? "kc_chan_close_cause" : "kc_chan_close";
    using ch = make(true, []);
    ch.trySend(1);
    if (withCause) {
      const bytes = encodeCause(new TypeError("native"))!;
      assert.equal(sym.kc_chan_close_cause(ch.handle, bytes, bytes.length, 0), 1, what);
    } else assert.equal(sym.kc_chan_close(ch.handle), 1, what);
    ch.cancel(new Error("later"));
    const received = await ch.receive().then(() => "value", (e) => e);
    const sent = await ch.send(2).then(() => "sent", (e) => e);
    const r = await ch.receiveCatching();
    if (withCause) {
      for (const e of [received, sent, (r as { cause?: unknown }).cause]) {
        assert.ok(e instanceof TypeError && e.message === "native", `${what}: ${String(e)}`);
      }
    } else {
      assert.ok(received instanceof ClosedReceiveError, `${what}: ${String(received)}`);
      assert.ok(sent instanceof ClosedSendError, `${what}: ${String(sent)}`);
      assert.deepEqual(r, { state: "closed" }, what);
    }
  }
});

// releaseBytes: an explicit release of received pooled Uint8Arrays (src/codec.ts; README,
// "Small buffers share pooled chunks"). This module's isolate switches to releasable chunk
// buffers at its first line, before it receives anything: every chunk buffer it maps is one.
import assert from "node:assert/strict";
import {
  CancellationError,
  Channel,
  CodecError,
  codecs,
  library,
  releaseBytes,
  releaseUnavailable,
  select,
} from "../mod.ts";
import { intact, type ReleaseResult, seeded } from "./fixtures/release_worker.ts";
import { evalScript, until } from "./support.ts";
import { Bridge } from "../src/bridge.ts";
import { checkSliceAlign, POOL_SLICE_ALIGN } from "../src/codec.ts";

assert.equal(releaseBytes(new Uint8Array(0)), false); // the switch

const sym = library().symbols("test");
const info = new BigUint64Array(4);
const inUse = () => (sym.kc_pool_info(info), Number(info[3]));
const CHUNK = (sym.kc_pool_info(info), Number(info[2]));

/** A native (shared) zero-copy channel of this isolate. */
function native(capacity = 64): Channel<Uint8Array> {
  const ch = new Channel<Uint8Array>(capacity, { codec: codecs.bytes });
  ch.share();
  return ch;
}

/** Sends `v` through `ch` and receives it back (a pooled view for up to 16 KiB). */
function roundTrip(ch: Channel<Uint8Array>, v: Uint8Array): Uint8Array {
  assert.deepEqual(ch.trySend(v), { state: "ok" });
  const r = ch.tryReceive();
  assert.equal(r.state, "ok");
  return (r as { value: Uint8Array }).value;
}

/** Values through `ch` until one comes from another chunk buffer than `v`'s; released. */
function moveOn(ch: Channel<Uint8Array>, v: Uint8Array): void {
  const buffer = v.buffer;
  for (let i = 0; i < 2 * CHUNK / 16384 + 2; i++) {
    const w = roundTrip(ch, new Uint8Array(16384));
    const other = w.buffer !== buffer;
    assert.equal(releaseBytes(w), true);
    if (other) return;
  }
  throw new Error("no value from another chunk");
}

/**
 * Round-trips (and releases) 1 KiB values until one starts a new chunk, so that the next few
 * values share one chunk whatever earlier tests left of the current one (a value that lands at a
 * chunk's end puts the next in another: "one chunk buffer" failed so in a clean-clone run).
 */
function freshChunk(ch: Channel<Uint8Array>): void {
  let prev = roundTrip(ch, new Uint8Array(1024));
  assert.equal(releaseBytes(prev), true);
  for (let i = 0; i < 2 * CHUNK / 1024 + 2; i++) {
    const w = roundTrip(ch, new Uint8Array(1024));
    assert.equal(releaseBytes(w), true);
    if (w.buffer !== prev.buffer) return;
    prev = w;
  }
  throw new Error("no value from a new chunk");
}

/** The Worker's report; a failed one cancels `ch`, which ends the sender's loop. */
function reported(w: Worker, ch: Channel<Uint8Array>): Promise<ReleaseResult> {
  return new Promise((resolve) =>
    w.onmessage = (e: MessageEvent<ReleaseResult>) => {
      if (!e.data.ok) ch.cancel(); // rejects a waiting send (a close lets it wait to deliver)
      resolve(e.data);
    }
  );
}

/** Sends `n` seeded values; stops without an error when the channel was cancelled. */
async function sendAll(ch: Channel<Uint8Array>, n: number, seed: number, len: number) {
  try {
    for (let i = 0; i < n; i++) await ch.send(seeded(seed, i, len));
  } catch (e) {
    if (!(e instanceof CancellationError)) throw e;
  }
}

function worker(): Worker {
  return new Worker(new URL("./fixtures/release_worker.ts", import.meta.url), { type: "module" });
}

/** Streams `n` seeded values of `len` bytes to a fresh Worker that checks (and releases) each. */
async function stream(
  opts: {
    n: number;
    len: number;
    seed: number;
    release: boolean;
    spin: boolean;
    switched?: boolean;
  },
): Promise<ReleaseResult> {
  using ch = native(64);
  const w = worker();
  try {
    const done = reported(w, ch);
    w.postMessage({ ch: ch.share(), ...opts });
    await sendAll(ch, opts.n, opts.seed, opts.len);
    return await done;
  } finally {
    w.terminate();
  }
}

Deno.test("the companion library loads here (the rest of this file needs it)", () => {
  using ch = native();
  const v = roundTrip(ch, new Uint8Array(100).fill(7));
  assert.equal(releaseUnavailable(), null);
  assert.equal(releaseBytes(v), true);
});

Deno.test("a stream released as it is received: every value intact, chunks in use stay few; without release they pile up", async () => {
  const seed = 0x5eed;
  const n = 20_000, len = 1000; // ~150 chunks' worth
  const before = inUse();
  const with_ = await stream({ n, len, seed, release: true, spin: true });
  assert.ok(with_.ok, with_.error);
  assert.equal(with_.released, n);
  await until(() => inUse() <= before + 2, "the released stream's chunks to come back");
  const without = await stream({ n, len, seed: seed + 1, release: false, spin: true });
  assert.ok(without.ok, without.error);
  // Released: the chunk the sender carves, the one the Worker reads, a few more in between.
  assert.ok(with_.most <= before + 16, `${with_.most - before} chunks in use with release`);
  // Not released, in a loop that never yields: every chunk stays pinned until it ends.
  assert.ok(without.most >= before + 100, `${without.most - before} chunks in use without`);
});

Deno.test("a switched Worker that receives 200,000 values in a loop that never yields and releases none: chunks in use stay within PINNED_MAX, every value intact", async () => {
  const n = 200_000, len = 1024; // ~1,600 chunks' worth
  const PINNED_MAX = 1024; // src/codec.ts
  const perChunk = CHUNK / len;
  const before = inUse();
  const r = await stream({ n, len, seed: 6, release: false, switched: true, spin: true });
  assert.ok(r.ok, r.error); // each value checked byte for byte as it came
  assert.equal(r.released, 0);
  // Nothing the Worker dropped comes back while it spins (its chunk buffers are kept to the end
  // of the job), so it may pin PINNED_MAX chunks; besides, the sender's chunk being carved and
  // the channel's 64 values (a chunk or two). Without the cap on releasable chunks: ~1,563.
  assert.ok(r.most <= before + PINNED_MAX + 4, `${r.most - before} chunks in use`);
  // Past the cap values come as copies, the first PINNED_MAX chunks' values as views.
  assert.ok(r.copies > 0, "no copies");
  assert.ok(r.copies <= n - (PINNED_MAX - 4) * perChunk, `${r.copies} copies`);
  await until(() => inUse() <= before + 2, "the Worker's chunks to come back");
});

/**
 * The start of a pinned-chunk-cap script run in a process of its own (`evalScript`): the isolate
 * switched to releasable chunks, the pool's chunks in use (`inUse`) and chunk size, and `rt`, a
 * round trip through a shared bytes channel.
 */
const capProbe = `
    import { Channel, codecs, library, releaseBytes } from "./mod.ts";
    import { intact, seeded } from "./tests/fixtures/release_worker.ts";
    import { collectUntil } from "./tests/support.ts";
    releaseBytes(new Uint8Array(0));
    const sym = library().symbols("test");
    const info = new BigUint64Array(4);
    const inUse = () => (sym.kc_pool_info(info), Number(info[3]));
    const CHUNK = (sym.kc_pool_info(info), Number(info[2]));
    const fail = (m) => { console.error(m); Deno.exit(1); };
    const ch = new Channel(64, { codec: codecs.bytes });
    ch.share();
    const rt = (v) => (ch.trySend(v), ch.tryReceive().value);
`;

Deno.test("releasable chunks leave the pinned-chunk cap as they are retired or collected: a released stream past the cap stays views, and views resume once dropped ones are collected", async () => {
  // In a process of its own, for --expose-gc and a count of pinned chunks of its own.
  const res = await evalScript(
    `${capProbe}
    const len = 1024, n = 200000; // ~1,600 chunks' worth, more than the cap's 1,024
    const before = inUse();
    // Released as received, never yielding: each chunk retired leaves the cap.
    for (let i = 0; i < n; i++) {
      const v = rt(seeded(1, i, len));
      if (!intact(v, 1, i, len)) fail("released value " + i + " not intact");
      if (v.buffer.byteLength !== CHUNK) fail("released value " + i + " is a copy");
      if (releaseBytes(v) !== true) fail("released value " + i + " not released");
    }
    // Dropped unreleased, never yielding: the cap, then copies.
    let copies = 0;
    for (let i = 0; i < n; i++) {
      const v = rt(seeded(2, i, len));
      if (!intact(v, 2, i, len)) fail("dropped value " + i + " not intact");
      if (v.buffer.byteLength !== CHUNK) copies++;
    }
    if (copies === 0) fail("no copies past the cap");
    // Collected once the loop yields: they leave the cap, and values are views again.
    await collectUntil(
      () => inUse() <= before + 2,
      () => "the dropped values' chunks to come back: " + (inUse() - before) + " still in use",
    );
    for (let i = 0; i < 4 * CHUNK / len; i++) {
      const v = rt(seeded(3, i, len));
      if (!intact(v, 3, i, len)) fail("value " + i + " after the yield not intact");
      if (v.buffer.byteLength !== CHUNK) fail("value " + i + " after the yield is a copy");
    }
    console.log("ok", copies);
  `,
    { v8Flags: ["--expose-gc"], timeoutMs: 120_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^ok \d+/);
});

Deno.test("a releasable chunk released only after the isolate moved on from it leaves the pinned-chunk cap once, not again when its buffer is collected", async () => {
  // In a process of its own, for --expose-gc and a count of pinned chunks of its own.
  const res = await evalScript(
    `${capProbe}
    const len = 1024, per = CHUNK / len, n = 200000;
    const before = inUse();
    // 300 chunks, each one's first value kept until a value of the next came, then released:
    // each chunk is retired after the isolate moved on from it (watched for its collection).
    let first = null;
    for (let i = 0; i < 300 * per; i++) {
      const v = rt(seeded(1, i, len));
      if (!intact(v, 1, i, len)) fail("value " + i + " not intact");
      if (first === null) first = v;
      else if (v.buffer !== first.buffer) {
        if (releaseBytes(first) !== true || first.length !== 0) fail("first value not retired");
        first = v;
      } else if (releaseBytes(v) !== true) fail("value " + i + " not released");
    }
    // Their buffers collected: counted out of the cap a second time, the cap would let more
    // than 1,024 chunks be pinned below.
    for (let round = 0; round < 5 || inUse() > before + 2; round++) {
      if (round > 2000) fail(inUse() - before + " chunks still in use");
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 0));
    }
    let copies = 0;
    for (let i = 0; i < n; i++) {
      const v = rt(seeded(2, i, len));
      if (!intact(v, 2, i, len)) fail("dropped value " + i + " not intact");
      if (v.buffer.byteLength !== CHUNK) copies++;
    }
    if (copies < n - 1028 * per) fail(copies + " copies: more than 1,028 chunks pinned");
    console.log("ok", copies);
  `,
    { v8Flags: ["--expose-gc"], timeoutMs: 120_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^ok \d+/);
});

Deno.test("a chunk first met past the pinned-chunk cap gives releasable values once the count falls back under it while the chunk is current", async () => {
  // In a process of its own, for a count of pinned chunks of its own.
  const res = await evalScript(
    `${capProbe}
    import { chunkBuffers } from "./ffi/napi.ts";
    const len = 16384, per = CHUNK / len; // 8 values a chunk
    const before = inUse();
    // Keeps each chunk's first value (\`first\`: one kept already) and releases the rest, so
    // every chunk met stays pinned, until a value comes as a copy: the first of a chunk met
    // with the cap reached. Returns the kept values and the seed's next index.
    const fill = (seed, first) => {
      const kept = first === undefined ? [] : [first];
      for (let i = 0; i < 1100 * per; i++) {
        const v = rt(seeded(seed, i, len));
        if (!intact(v, seed, i, len)) fail("value " + i + " of seed " + seed + " not intact");
        if (v.buffer.byteLength !== CHUNK) return { kept, next: i + 1 };
        if (kept.length !== 0 && kept.at(-1).buffer === v.buffer) {
          if (releaseBytes(v) !== true) fail("value " + i + " of seed " + seed + " not released");
        } else kept.push(v);
      }
      fail("no copy past the cap");
    };
    const one = fill(1);
    if (one.kept.length !== 1024) fail(one.kept.length + " chunks pinned before the first copy");
    // Released: each kept chunk is retired (the isolate is past it) and leaves the cap, while
    // the copied value's chunk is still the current one.
    for (const k of one.kept) {
      if (releaseBytes(k) !== true || k.length !== 0) fail("a kept value not retired");
    }
    // The rest of that chunk: views of one releasable buffer (ordinary views before).
    const rest = [];
    for (let i = one.next; i < one.next + per - 1; i++) {
      const v = rt(seeded(1, i, len));
      if (!intact(v, 1, i, len)) fail("value " + i + " after the cap not intact");
      if (v.buffer.byteLength !== CHUNK) fail("value " + i + " after the cap is a copy");
      if (rest.length !== 0 && v.buffer !== rest[0].buffer) fail("value " + i + " in another buffer");
      if (releaseBytes(v) !== true) fail("value " + i + " after the cap not released");
      rest.push(v);
    }
    // A value of the next chunk, kept: that chunk is retired as the isolate moves on.
    const d = rt(seeded(1, one.next + per - 1, len));
    if (d.buffer === rest[0].buffer) fail("no value of the next chunk");
    if (rest.some((v) => v.length !== 0)) fail("the chunk after the cap not retired");
    // The cap counted it exactly: again 1,024 chunks pinned (d's included) before a copy.
    const two = fill(2, d);
    if (two.kept.length !== 1024) fail(two.kept.length + " chunks pinned the second time");
    for (const k of two.kept) {
      if (releaseBytes(k) !== true || k.length !== 0) fail("a kept value not retired");
    }
    // Every chunk came back, each count given once (a miscount is a refused release).
    if (inUse() > before + 2) fail(inUse() - before + " chunks still in use");
    const refused = chunkBuffers(sym).stats[1];
    if (refused !== 0) fail(refused + " releases refused");
    console.log("ok");
  `,
    { timeoutMs: 120_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "ok");
});

Deno.test("a released value reads as empty once its chunk is retired; an unreleased one of that chunk keeps it", () => {
  using ch = native();
  freshChunk(ch);
  const a = roundTrip(ch, new Uint8Array(1024).fill(1));
  const b = roundTrip(ch, new Uint8Array(1024).fill(2));
  assert.equal(a.buffer, b.buffer, "one chunk buffer");
  assert.equal(releaseBytes(a), true);
  moveOn(ch, b);
  assert.equal(a.length, 1024, "b is not released: the chunk stays");
  assert.deepEqual(a, new Uint8Array(1024).fill(1), "a keeps its bytes");
  assert.equal(releaseBytes(b), true); // the last of its chunk, and the isolate moved on
  assert.equal(a.length, 0);
  assert.equal(b.length, 0);
  assert.equal(a.buffer.byteLength, 0, "detached");
});

Deno.test("a chunk buffer is detached by the engine's transfer, whatever the buffer's prototype or ArrayBuffer.prototype.transfer say", () => {
  using ch = native();
  freshChunk(ch);
  // A buffer the caller gave another prototype: its retire, in the receive that moves on.
  const a = roundTrip(ch, new Uint8Array(1024).fill(1));
  Object.setPrototypeOf(a.buffer, null);
  assert.equal(releaseBytes(a), true);
  moveOn(ch, a); // threw "buffer.transfer is not a function" from tryReceive, the value lost
  assert.equal(a.length, 0, "retired");
  // A patched ArrayBuffer.prototype.transfer: the retire in releaseBytes itself.
  const b = roundTrip(ch, new Uint8Array(1024).fill(2));
  const c = roundTrip(ch, new Uint8Array(1024).fill(3));
  assert.equal(releaseBytes(b), true);
  moveOn(ch, c);
  const transfer = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "transfer")!;
  let called = 0;
  Object.defineProperty(ArrayBuffer.prototype, "transfer", {
    ...transfer,
    value() {
      called++;
      throw new Error("a patched transfer");
    },
  });
  try {
    assert.equal(releaseBytes(c), true); // the last of its chunk: retired here
  } finally {
    Object.defineProperty(ArrayBuffer.prototype, "transfer", transfer);
  }
  assert.equal(called, 0);
  assert.equal(b.length, 0, "retired");
  assert.equal(c.length, 0, "retired");
});

Deno.test("a released value sent once its chunk is retired is a CodecError that says releaseBytes detached it, not that it was transferred", async () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(1024).fill(1));
  assert.equal(releaseBytes(a), true);
  moveOn(ch, a);
  assert.equal(a.length, 0, "retired");
  // Each names its call (trySend's said "Cannot send").
  const why = (op: string) =>
    new RegExp(
      `^Cannot ${op}: the Uint8Array's buffer was detached as releaseBytes gave its chunk back ` +
        String.raw`\(every value of the chunk was released\): it has no bytes to send, received ` +
        String.raw`\[object Uint8Array\] of length 0$`,
    );
  for (const codec of [codecs.default, codecs.bytes]) {
    for (const shared of [false, true]) {
      using to = new Channel<unknown>(4, { codec: codec as never });
      if (shared) to.share();
      assert.throws(
        () => to.trySend(a),
        (e: Error) => e instanceof CodecError && why("trySend").test(e.message),
      );
      await assert.rejects(
        to.send(a),
        (e: Error) => e instanceof CodecError && why("send").test(e.message),
      );
    }
  }
  // A buffer the caller transferred is still said to be one.
  const b = roundTrip(ch, new Uint8Array(1024).fill(2));
  (b.buffer as ArrayBuffer).transfer();
  assert.throws(() => ch.trySend(b), /detached \(transferred\)/);
});

Deno.test("the chunk is retired as the isolate moves on, once every value of it was released", () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(1024).fill(1));
  assert.equal(releaseBytes(a), true);
  assert.equal(a.length, 1024, "its chunk is still the isolate's current one");
  moveOn(ch, a);
  assert.equal(a.length, 0);
});

Deno.test("a value of a chunk whose buffer the caller transferred comes whole, in a new buffer of that chunk", () => {
  using ch = native();
  const a = roundTrip(ch, seeded(3, 0, 1000));
  const b = roundTrip(ch, seeded(3, 1, 1000));
  assert.equal(a.buffer, b.buffer, "one chunk buffer");
  const off = b.byteOffset;
  const start = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b))) - off;
  const moved = (b.buffer as ArrayBuffer).transfer(); // a and b read as empty now; b's chunk is still the last
  assert.equal(b.length, 0);
  // The receive's common case (a value of the last chunk) meets the detached buffer: the value
  // must not be lost to the view's TypeError, nor read as empty.
  const c = roundTrip(ch, seeded(3, 2, 1000));
  const at = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(c)));
  assert.ok(at >= start && at < start + CHUNK, "c from b's chunk");
  assert.ok(intact(c, 3, 2, 1000));
  assert.notEqual(c.buffer, moved);
  assert.ok(intact(new Uint8Array(moved, off, 1000), 3, 1, 1000), "the moved buffer keeps b");
  assert.equal(releaseBytes(c), true);
  assert.equal(releaseBytes(a), false, "a view of the transferred buffer");
});

Deno.test("releasing a value twice is a RangeError, before and after its chunk is retired", () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(1024));
  assert.equal(releaseBytes(a), true);
  assert.throws(() => releaseBytes(a), {
    name: "RangeError",
    message:
      "Cannot release bytes: this value was released already, received [object Uint8Array] of length 1024",
  });
  moveOn(ch, a);
  assert.throws(() => releaseBytes(a), RangeError);
});

Deno.test("once a chunk is retired, every view of its buffer is a RangeError, also one that never was a received value (false before the retire)", () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(1024).fill(1));
  const b = roundTrip(ch, new Uint8Array(1024).fill(2));
  assert.equal(a.buffer, b.buffer, "one chunk buffer");
  // Never received values: views that start inside a and inside b.
  const inside = a.subarray(16);
  const other = new Uint8Array(b.buffer, b.byteOffset + 512, 16);
  assert.equal(releaseBytes(inside), false);
  assert.equal(releaseBytes(other), false);
  assert.equal(releaseBytes(a), true);
  assert.equal(releaseBytes(b), true);
  moveOn(ch, b); // retired: the buffer is detached, its views read as empty
  assert.equal(inside.length, 0);
  const retired = {
    name: "RangeError",
    message:
      "Cannot release bytes: every value of its chunk was released, received [object Uint8Array] of length 0",
  };
  // A detached view no longer says where it started: each is answered as a released value.
  for (const v of [inside, other, a, b]) {
    assert.throws(() => releaseBytes(v), retired);
  }
});

Deno.test("once the caller transferred a chunk's buffer, releasing its values is false, released before or not", () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(64).fill(1));
  const b = roundTrip(ch, new Uint8Array(64).fill(2));
  assert.equal(a.buffer, b.buffer, "one chunk buffer");
  assert.equal(releaseBytes(a), true);
  const at = b.byteOffset;
  const moved = (b.buffer as ArrayBuffer).transfer();
  // Both read as empty now, and a detached view no longer says where it started.
  assert.equal(releaseBytes(a), false);
  assert.equal(releaseBytes(b), false);
  assert.ok(new Uint8Array(moved, at, 64).every((x) => x === 2), "the moved buffer keeps b");
});

Deno.test("POOL_SLICE_ALIGN's load-time check: 16 passes, any other alignment is a RangeError in the house form", () => {
  // Before, it said "kcoro: POOL_SLICE_ALIGN must be 1 << 4 as ..." (a plain Error).
  checkSliceAlign(POOL_SLICE_ALIGN);
  checkSliceAlign(16);
  for (const [align, shown] of [[32, "32"], [8, "8"], [NaN, "NaN"]] as const) {
    assert.throws(() => checkSliceAlign(align), {
      name: "RangeError",
      message: "Cannot load kcoro's codecs: POOL_SLICE_ALIGN must be 16 (1 << 4), as " +
        `receivedAt and releaseBytes shift by 4, received ${shown}`,
    });
  }
});

Deno.test("the pool's slices start POOL_SLICE_ALIGN bytes apart, a bitmap slot each: adjacent 1-byte values release one by one", () => {
  using ch = native(64);
  // Sent in a row by this thread: consecutive slices of its stripe's chunk, each a 1-byte value
  // rounded up to the native slice step (zig-src/bridge/pool.zig `carve_step`), unless a chunk
  // ends between.
  for (let i = 0; i < 48; i++) assert.deepEqual(ch.trySend(new Uint8Array([i])), { state: "ok" });
  const got: Uint8Array[] = [];
  for (let i = 0; i < 48; i++) {
    const r = ch.tryReceive();
    assert.equal(r.state, "ok");
    got.push((r as { value: Uint8Array }).value);
  }
  const at = got.map((v) => Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(v))));
  let step = Infinity;
  for (let i = 0; i < got.length; i++) {
    assert.equal(got[i].buffer.byteLength, CHUNK, `value ${i} is a view of a chunk`);
    assert.equal(got[i][0], i);
    assert.equal(at[i] % POOL_SLICE_ALIGN, 0, `value ${i} starts on a slot`);
    if (i > 0 && at[i] > at[i - 1]) step = Math.min(step, at[i] - at[i - 1]);
  }
  // ReleaseFast (the default library): the native slice alignment is src/codec.ts's. A Debug or
  // ReleaseSafe build of the library rounds slices to four times it (pool.zig `carve_step`: each
  // carving of a chunk starts 0, 16, 32 or 48 bytes in, in turn, `carve_phases`), still one slot
  // each; before, this asserted 16 alone, then 16 or 32 (two phases), and failed against such a
  // build (KCORO_LIB=... a ReleaseSafe libkcoro.so).
  assert.ok(
    step === POOL_SLICE_ALIGN || step === 4 * POOL_SLICE_ALIGN,
    `the native slice step is src/codec.ts's alignment (four times it in a safe build), received ${step}`,
  );
  // One bit each: none is taken for another's (a shared bit would be "released already").
  for (const v of got) assert.equal(releaseBytes(v), true);
  for (const v of got) assert.throws(() => releaseBytes(v), RangeError);
});

Deno.test("only received values are released: not copies, arrays the caller made, nor views that do not start at one", async () => {
  using ch = native();
  assert.equal(releaseBytes(new Uint8Array(1024)), false, "made by the caller");
  const a = roundTrip(ch, new Uint8Array(1024).fill(3));
  const b = roundTrip(ch, new Uint8Array(1024).fill(4));
  assert.equal(releaseBytes(a.subarray(16)), false, "a view inside a value");
  assert.equal(releaseBytes(b.subarray(1)), false, "a view off the 16-byte grid");
  assert.equal(releaseBytes(new Uint8Array(a.buffer, a.byteOffset + 512, 16)), false);
  assert.equal(releaseBytes(a.slice()), false, "a copy");
  const big = roundTrip(ch, new Uint8Array(16 * 1024 + 1));
  assert.equal(releaseBytes(big), false, "over 16 KiB: a copy");
  using local = new Channel<Uint8Array>(4, { codec: codecs.bytes });
  local.trySend(new Uint8Array(1024));
  const r = local.tryReceive();
  assert.equal(r.state, "ok");
  assert.equal(releaseBytes((r as { value: Uint8Array }).value), false, "a local channel");
  // A send of this isolate meeting a receive of it that waits on the shared channel within the
  // turn hands the value over in JavaScript (the codec's copy): not a view of a chunk. Once the
  // receive queued natively (a turn later) the send meets it there, as it would an older
  // receiver of another thread (FIFO per channel), and the receive gets a chunk's view: released.
  const bridge = Bridge.of(library());
  for (const turns of [0, 1]) {
    const before = bridge.pending;
    const waiting = ch.receive();
    // Queued natively, past the turn (bounded), not a timer's turn, which is not ordered
    // against the bridge's flush (a setImmediate).
    if (turns === 1) {
      await until(() => bridge.pending === before + 1, "the receive queued natively");
    }
    assert.deepEqual(ch.trySend(new Uint8Array(64).fill(5)), { state: "ok" });
    const handed = await waiting;
    assert.deepEqual(handed, new Uint8Array(64).fill(5));
    assert.equal(releaseBytes(handed), turns === 1, `a same-isolate hand-off (${turns} turns)`);
  }
  // The values themselves still are, once each.
  assert.equal(releaseBytes(a), true);
  assert.equal(releaseBytes(b), true);
});

Deno.test("an empty view at the very end of a chunk buffer is no received value: false every time, and the chunk's unreleased values stay whole", () => {
  using ch = native();
  const a = roundTrip(ch, new Uint8Array(100).fill(1));
  const b = roundTrip(ch, new Uint8Array(100).fill(2));
  const c = roundTrip(ch, new Uint8Array(100).fill(3));
  assert.equal(a.buffer, c.buffer, "one chunk buffer");
  assert.equal(releaseBytes(a), true);
  // Offset CHUNK: its slot is one past the chunk's last, whose bit was read from the second
  // bitmap (a's "released" bit), so it answered true every time and counted releases that
  // never were: the chunk was retired with b and c unreleased, which then read as empty.
  const end = new Uint8Array(a.buffer, a.buffer.byteLength);
  assert.equal(end.byteOffset, CHUNK);
  for (let i = 0; i < 3; i++) assert.equal(releaseBytes(end), false);
  moveOn(ch, c);
  assert.deepEqual(b, new Uint8Array(100).fill(2));
  assert.deepEqual(c, new Uint8Array(100).fill(3));
  assert.equal(releaseBytes(b), true);
  assert.equal(releaseBytes(c), true);
});

Deno.test("releaseBytes refuses what is not a Uint8Array with a TypeError", () => {
  const bad: unknown[] = [
    undefined,
    null,
    1024,
    "bytes",
    new ArrayBuffer(8),
    new Uint16Array(4),
    new DataView(new ArrayBuffer(8)),
    Object.create(Uint8Array.prototype),
    new Proxy(new Uint8Array(4), {}),
    { buffer: new ArrayBuffer(8), byteOffset: 0 },
  ];
  for (const x of bad) {
    assert.throws(() => releaseBytes(x as Uint8Array), (e: Error) => {
      assert.ok(e instanceof TypeError, String(e));
      assert.match(e.message, /^Cannot release bytes: the value is not a Uint8Array, received /);
      return true;
    });
  }
});

Deno.test("values from tryReceiveMany, select and a values() iteration are releasable", async () => {
  using ch = native();
  for (let i = 0; i < 4; i++) ch.trySend(new Uint8Array(64).fill(i));
  const many = ch.tryReceiveMany(4);
  assert.equal(many.state, "ok");
  for (const v of (many as { values: Uint8Array[] }).values) assert.equal(releaseBytes(v), true);
  ch.trySend(new Uint8Array(64).fill(9));
  const picked = await select<Uint8Array>((s) => s.onReceive(ch, (v) => v));
  assert.equal(picked[0], 9);
  assert.equal(releaseBytes(picked), true);
  ch.trySend(new Uint8Array(64).fill(10));
  for await (const v of ch.values()) {
    assert.equal(v[0], 10);
    assert.equal(releaseBytes(v), true);
    break;
  }
});

Deno.test("a releasable chunk buffer the caller transfers keeps its bytes while other chunks are recycled, and comes back once garbage", async () => {
  // In a process of its own, for --expose-gc.
  const res = await evalScript(
    `
    import { Channel, codecs, library, releaseBytes } from "./mod.ts";
    import { intact, seeded } from "./tests/fixtures/release_worker.ts";
    import { collectUntil } from "./tests/support.ts";
    releaseBytes(new Uint8Array(0));
    const sym = library().symbols("test");
    const info = new BigUint64Array(4);
    const inUse = () => (sym.kc_pool_info(info), Number(info[3]));
    const fail = (m) => { console.error(m); Deno.exit(1); };
    const ch = new Channel(64, { codec: codecs.bytes });
    ch.share();
    const rt = (v) => (ch.trySend(v), ch.tryReceive().value);
    const before = inUse();
    const len = 1000;
    const a = rt(seeded(1, 0, len)), b = rt(seeded(1, 1, len));
    if (a.buffer !== b.buffer) fail("a and b in two chunks");
    if (releaseBytes(a) !== true) fail("a not released");
    const at = [a.byteOffset, b.byteOffset];
    let moved = a.buffer.transfer(); // the caller's: every view of the old buffer is empty now
    if (a.length !== 0 || b.length !== 0) fail("views of the transferred buffer not empty");
    if (releaseBytes(b) !== false) fail("b released after the transfer");
    // A stream through the pool, released as it goes: its chunks are recycled many times.
    for (let i = 0; i < 20000; i++) {
      const v = rt(seeded(2, i, len));
      if (!intact(v, 2, i, len)) fail("stream value " + i + " not intact");
      if (releaseBytes(v) !== true) fail("stream value " + i + " not released");
    }
    if (!intact(new Uint8Array(moved, at[0], len), 1, 0, len)) fail("the moved buffer's a changed");
    if (!intact(new Uint8Array(moved, at[1], len), 1, 1, len)) fail("the moved buffer's b changed");
    if (inUse() < before + 1) fail("the moved buffer's chunk was given back while it lived");
    const held = inUse();
    moved = undefined;
    await collectUntil(
      () => inUse() < held,
      () => "the moved buffer's chunk back: " + inUse() + " in use, " + held + " with it",
    );
    console.log("ok");
  `,
    { v8Flags: ["--expose-gc"], timeoutMs: 120_000 },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "ok");
});

Deno.test("a Worker terminated with releasable chunks it did not release gives them back", async () => {
  const before = inUse();
  using ch = native(1024);
  const w = worker();
  const n = 1000, len = 1000; // ~8 chunks held by the Worker
  const started = reported(w, ch);
  w.postMessage({ ch: ch.share(), n, len, seed: 3, release: true, spin: false, hang: true });
  await sendAll(ch, n, 3, len);
  const r = await started;
  assert.ok(r.ok, r.error);
  // Counted by the Worker itself: the pool's count minus \`before\` also moves with chunks that
  // earlier tests' garbage gives back meanwhile (it read 6 in 3 runs of 12).
  assert.ok((r.chunks ?? 0) >= 7, `${r.chunks} chunks held by the Worker`);
  w.terminate();
  await until(() => inUse() <= before + 1, "the terminated Worker's chunks to come back");
});

Deno.test("the main isolate and a Worker both releasing: every value intact, chunks in use stay few", async () => {
  const n = 10_000, len = 1000;
  const before = inUse();
  using toWorker = native(64);
  using self = native(64);
  const w = worker();
  try {
    const done = reported(w, toWorker);
    w.postMessage({ ch: toWorker.share(), n, len, seed: 4, release: true, spin: false });
    let most = 0, released = 0;
    for (let i = 0; i < n; i++) {
      if (toWorker.isClosedForSend) break; // the Worker failed (cancelled): its report says why
      await toWorker.send(seeded(4, i, len)).catch((e) => {
        if (!(e instanceof CancellationError)) throw e;
      });
      const v = roundTrip(self, seeded(5, i, len));
      assert.ok(intact(v, 5, i, len), `value ${i} here`);
      if (releaseBytes(v)) released++;
      if ((i & 255) === 0) most = Math.max(most, inUse());
    }
    const r = await done;
    assert.ok(r.ok, r.error);
    assert.equal(r.released, n);
    assert.equal(released, n);
    most = Math.max(most, r.most);
    assert.ok(most <= before + 24, `${most - before} chunks in use`);
  } finally {
    w.terminate();
  }
});

Deno.test("without the companion library releaseBytes releases nothing, says why, and values come as before", async () => {
  // In a process of its own, with a copy of the library in a folder without the companion.
  const res = await evalScript(
    `
    const dir = Deno.makeTempDirSync();
    try {
      Deno.copyFileSync("zig-out/lib/libkcoro.so", dir + "/libkcoro.so");
      Deno.env.set("KCORO_LIB", dir + "/libkcoro.so");
      const { Channel, codecs, library, releaseBytes, releaseUnavailable } = await import("./mod.ts");
      const fail = (m) => { throw new Error(m); };
      if (!library().path.startsWith(dir)) fail("opened " + library().path);
      if (releaseBytes(new Uint8Array(0)) !== false) fail("the switch released");
      const ch = new Channel(64, { codec: codecs.bytes });
      ch.share();
      for (let i = 0; i < 300; i++) {
        ch.trySend(new Uint8Array(1000).fill(i & 255));
        const v = ch.tryReceive().value;
        if (v.length !== 1000 || v[999] !== (i & 255)) fail("value " + i);
        if (releaseBytes(v) !== false) fail("value " + i + " released");
        if (i === 299) {
          let threw = false;
          try { v.buffer.transfer(); } catch { threw = true; }
          if (!threw) fail("a chunk buffer of the collector's kind was transferred");
        }
      }
      console.log(releaseUnavailable());
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  `,
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /cannot load the Node-API companion .*kcoro_napi\.node/);
});

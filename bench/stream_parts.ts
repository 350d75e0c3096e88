// Where the main -> Worker stream of 1 KiB Uint8Arrays (bench/worker_bench.ts) spends its time:
// the same shared codecs.bytes channel (capacity 1024) with each end played in turn by
// JavaScript or by a native thread, for 1 KiB and for 16-byte values (is it the bytes or the
// channel?). The cases, one row each:
//
// - native -> native: a native thread try-sends (kc_chan_try_send_copy: the copy into the
//   buffer pool and the send in one call, what a codecs.bytes trySend calls), another
//   try-receives; the sender retries at once on a full buffer, the receiver after ~2 µs on an
//   empty one (see stream_parts.zig: polling at the sender's heels slows every send). No
//   JavaScript. The receiver
//   frees each value's buffer at once ("frees at once": the sender's copies cycle through a few
//   chunks, in cache), or a chunk's buffers together `--lag` chunks after the chunk's last value
//   (kc_pool_release), as a receiving isolate's collector does ("frees late": the copies cycle
//   through about that many chunks of 128 KiB, memory no longer in cache; the JavaScript
//   receiver keeps 150-400 in use here).
// - JS main -> native: the main isolate's trySend loop of worker_bench.ts (awaiting send when
//   full), a native thread receiving, freeing at once or late.
// - native -> JS Worker: a native thread sending, the Worker's tryReceive loop of
//   worker_bench.ts (awaiting receive when empty), its views of pooled chunks freed when its
//   collector frees them.
// - JS main -> JS Worker: the stream itself.
// - JS Worker alone: the Worker's loop on a channel filled beforehand (by a native thread),
//   timed in the Worker: the receiver's own cost, no sender beside it.
// - JS main alone: the main isolate's trySend loop into a channel with room for all its values,
//   drained and freed afterwards: the sender's own cost, each copy into memory not in cache
//   (64 MiB of pool memory in a row). Both take at most 65,536 values.
//
// Every case runs once per pass, the cases taking turns, after a warm-up pass (a tenth of the
// work); each row prints the range of ns per value over the passes (and the median), and how
// many pool chunks (128 KiB) were in use at most, sampled during the stream (the pool is the
// process's: chunks still pinned by the Worker's views from an earlier case count too). The
// native halves are bench/native/stream_parts.zig, built here into a temporary directory with
// the pinned Zig (KCORO_ZIG, .toolchain/zig/bin/zig, or zig on PATH) and called as nonblocking
// FFI functions (each on a thread of Deno's).
//
//   deno run --allow-ffi --allow-read --allow-write --allow-env --allow-run bench/stream_parts.ts
//     [--passes 4] [--n 200000] [--lag 256] [--only SUBSTRING]
//
// Not part of `./task bench`: an investigation tool; session 21's figures are in its report
// (CHANGELOG). The native-only floors without FFI are in the native bench:
// `zig build bench -- --only "descriptor stream"`.
/// <reference lib="deno.worker" />
import { Channel, codecs, type SharedChannel } from "../mod.ts";
import { library } from "../ffi/load.ts";

type Start = { ch: SharedChannel; n: number; alone?: boolean };

if ("WorkerGlobalScope" in globalThis) {
  // The receiving loop of worker_bench.ts's "stream-chan", a function of its own.
  const receive = async (shared: SharedChannel, n: number) => {
    self.postMessage("ready");
    const ch = Channel.from<unknown>(shared);
    for (let i = 0; i < n; i++) {
      const r = ch.tryReceive();
      if (r.state !== "ok") await ch.receive();
    }
    self.postMessage("done");
  };
  // The same loop on values buffered beforehand, timed here: ns per value.
  const alone = (shared: SharedChannel, n: number) => {
    const ch = Channel.from<unknown>(shared);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      if (ch.tryReceive().state !== "ok") throw new Error("stream_parts: a value is missing");
    }
    self.postMessage((performance.now() - t0) * 1e6 / n);
  };
  self.onmessage = (e: MessageEvent<Start>) =>
    e.data.alone ? alone(e.data.ch, e.data.n) : receive(e.data.ch, e.data.n);
} else {
  await main();
}

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 && i + 1 < Deno.args.length ? Number(Deno.args[i + 1]) : fallback;
}

/** Builds the native halves; the opened library. */
async function helper() {
  const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
  const zig = Deno.env.get("KCORO_ZIG") ??
    (await Deno.stat(`${root}.toolchain/zig/bin/zig`).then(() => true, () => false)
      ? `${root}.toolchain/zig/bin/zig`
      : "zig");
  const dir = await Deno.makeTempDir({ prefix: "kcoro-stream-parts-" });
  const so = `${dir}/libstream_parts.so`;
  const built = await new Deno.Command(zig, {
    args: [
      "build-lib",
      "-dynamic",
      "-OReleaseFast",
      "-lc",
      `${root}bench/native/stream_parts.zig`,
      `-femit-bin=${so}`,
    ],
    cwd: dir,
  }).output();
  if (!built.success) throw new Error(new TextDecoder().decode(built.stderr));
  const lib = Deno.dlopen(so, {
    kcsp_init: { parameters: ["buffer"], result: "i32" },
    kcsp_feed: { parameters: ["u32", "u32", "u32", "u32"], result: "i32", nonblocking: true },
    kcsp_drain: { parameters: ["u32", "u32", "u32"], result: "i32", nonblocking: true },
  });
  const path = new TextEncoder().encode(library().path + "\0");
  if (lib.symbols.kcsp_init(path) !== 0) throw new Error("stream_parts: libkcoro not found");
  return { lib, dir };
}

async function main(): Promise<void> {
  const passes = arg("--passes", 4);
  const n = arg("--n", 200_000);
  const lag = arg("--lag", 256);
  const oi = Deno.args.indexOf("--only");
  const only = oi >= 0 ? Deno.args[oi + 1] : undefined;
  const T_BYTES = 17; // codecs.bytes's descriptor tag (src/codec.ts)
  const { lib, dir } = await helper();
  const sym = library().symbols("stream parts");
  const info = new BigUint64Array(4);
  let peak = 0;
  const sample = () => {
    sym.kc_pool_info(info);
    peak = Math.max(peak, Number(info[3]));
  };
  const worker = new Worker(import.meta.url, { type: "module" });
  const next = () =>
    new Promise<unknown>((resolve) =>
      worker.addEventListener("message", (e) => resolve(e.data), { once: true })
    );

  /** The main isolate's send loop of worker_bench.ts, sampling the pool every 4096 values. */
  async function jsSend(ch: Channel<unknown>, value: Uint8Array, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      if (ch.trySend(value).state !== "ok") await ch.send(value);
      if ((i & 4095) === 0) sample();
    }
  }

  /** Starts the Worker receiving `count` values; `done` resolves once it has them all. */
  async function jsReceive(
    ch: Channel<unknown>,
    count: number,
  ): Promise<{ done: Promise<unknown> }> {
    const ready = next();
    worker.postMessage({ ch: ch.share(), n: count } satisfies Start);
    if (await ready !== "ready") throw new Error("worker not ready");
    return { done: next() };
  }

  /** Samples the pool every millisecond while `p` runs (the main isolate idle meanwhile). */
  async function sampled<T>(p: Promise<T>): Promise<T> {
    const timer = setInterval(sample, 1);
    try {
      return await p;
    } finally {
      clearInterval(timer);
    }
  }

  const ok = (rc: number) => {
    if (rc !== 0) throw new Error(`stream_parts: native half failed with ${rc}`);
  };

  // Each case: ns per value (null: time the whole run).
  type Case = (ch: Channel<unknown>, len: number, count: number) => Promise<number | null>;
  const native = (late: boolean): Case => async (ch, len, count) => {
    const h = ch.share().handle;
    const drain = lib.symbols.kcsp_drain(h, count, late ? lag : 0);
    const feed = lib.symbols.kcsp_feed(h, count, len, T_BYTES);
    const [a, b] = await sampled(Promise.all([feed, drain]));
    ok(a), ok(b);
    return null;
  };
  const jsToNative = (late: boolean): Case => async (ch, len, count) => {
    const drain = lib.symbols.kcsp_drain(ch.share().handle, count, late ? lag : 0);
    await jsSend(ch, new Uint8Array(len).fill(7), count);
    ok(await drain);
    return null;
  };
  const cases: [string, Case, "big" | "small"][] = [
    ["native -> native, frees at once", native(false), "small"],
    ["native -> native, frees late", native(true), "small"],
    ["JS main -> native, frees at once", jsToNative(false), "small"],
    ["JS main -> native, frees late", jsToNative(true), "small"],
    ["native -> JS Worker", async (ch, len, count) => {
      const { done } = await jsReceive(ch, count);
      ok(await sampled(lib.symbols.kcsp_feed(ch.share().handle, count, len, T_BYTES)));
      await done;
      return null;
    }, "small"],
    ["JS main -> JS Worker", async (ch, len, count) => {
      const { done } = await jsReceive(ch, count);
      await jsSend(ch, new Uint8Array(len).fill(7), count);
      await done;
      return null;
    }, "small"],
    ["JS Worker alone (values buffered)", async (ch, len, count) => {
      ok(await lib.symbols.kcsp_feed(ch.share().handle, count, len, T_BYTES));
      sample();
      const got = next();
      worker.postMessage({ ch: ch.share(), n: count, alone: true } satisfies Start);
      return await got as number;
    }, "big"],
    ["JS main alone (room for all)", async (ch, len, count) => {
      const value = new Uint8Array(len).fill(7);
      // Shared first: a channel never shared is local, its values copied in JavaScript.
      const h = ch.share().handle;
      const t0 = performance.now();
      for (let i = 0; i < count; i++) {
        if (ch.trySend(value).state !== "ok") throw new Error("stream_parts: no room");
      }
      const ns = (performance.now() - t0) * 1e6 / count;
      sample();
      ok(await lib.symbols.kcsp_drain(h, count, 0));
      return ns;
    }, "big"],
  ];

  const rows = new Map<string, { ns: number[]; chunks: number[] }>();
  for (let pass = 0; pass <= passes; pass++) {
    for (const len of [1024, 16]) {
      for (const [name, run, size] of cases) {
        const key = `${len === 1024 ? "1 KiB" : "16 B"}: ${name}`;
        if (only !== undefined && !key.includes(only)) continue;
        // The cases alone hold all their values at once: at most 65,536 (512 chunks of 1 KiB
        // values, half the cap on chunks a receiving isolate's views may pin, past which it
        // copies each value instead: src/codec.ts, PINNED_MAX).
        const count = Math.min(size === "big" ? 65_536 : Infinity, pass === 0 ? n / 10 : n);
        using ch = new Channel<Uint8Array>(size === "big" ? count : 1024, {
          codec: codecs.bytes,
        });
        peak = 0;
        // The timed interval includes starting the native halves, as the stream's includes the
        // Worker's first message back: both are a few tens of microseconds against 30+ ms.
        const t0 = performance.now();
        const own = await run(ch as Channel<unknown>, len, count);
        const ns = own ?? (performance.now() - t0) * 1e6 / count;
        if (pass === 0) continue;
        const row = rows.get(key) ?? { ns: [], chunks: [] };
        row.ns.push(ns);
        row.chunks.push(peak);
        rows.set(key, row);
      }
    }
  }
  worker.terminate();
  lib.close();
  await Deno.remove(dir, { recursive: true });

  const fmt = (xs: number[], digits: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return `${s[0].toFixed(digits)}-${s[s.length - 1].toFixed(digits)} (median ${
      s[s.length >> 1].toFixed(digits)
    })`;
  };
  console.log(
    `${n} values a pass, ${passes} passes, frees late: ${lag} chunks later; ns per value, ` +
      "pool chunks in use at most",
  );
  for (const [key, row] of rows) {
    console.log(`${key.padEnd(48)} ${fmt(row.ns, 1).padEnd(32)} chunks ${fmt(row.chunks, 0)}`);
  }
}

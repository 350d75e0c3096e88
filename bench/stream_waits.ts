// Where the main → Worker streams' time goes: the streams of bench/worker_bench.ts (numbers:
// codecs.f64, capacity 4096; `--bytes`: 1 KiB Uint8Arrays, codecs.bytes, capacity 1024; one
// trySend / tryReceive per value, awaiting send / receive when that fails), counting how often
// each side had to wait and how long those waits took in all, optionally after spinning on the
// try-operation for up to `--spin` microseconds first. Prints one line per round.
//
//   deno run --allow-ffi --allow-read --allow-env bench/stream_waits.ts [--bytes] [--spin 300]
//     [--n 2000000] [--rounds 4]
//
// Not part of `./task bench`: an investigation tool. Session 9 found 33–926 waits of the sender
// and 48–529 of the receiver per run of 1–2 million numbers without spinning, and 0–75 with a
// 300 µs spin, the stream costing 52–157 ns per value either way: the cost is the cache lines
// crossing the cores, not the wake-ups. Session 20 (alternating passes on 2 vCPUs) found the
// same for both streams, and a spin before parking not worth having:
// - numbers: 27–1,050 waits of the sender and 120–960 of the receiver per 2,000,000 values
//   (1,000–4,400 each while the host is slow); 22–47 ns per value (medians of passes) with or
//   without a 300 µs spin.
// - 1 KiB: 15–500 waits of the sender (few, but long: 20 µs to milliseconds each, together
//   1–80 ms of a 30–190 ms run) and 400–1,600 of the receiver per 200,000 values (1,000–4,700
//   and 2,400–7,400 while the host is slow, the stream then 2–4 times as slow). Spinning
//   300 µs cut them to 29–331 and made the stream slower (468–1,370 ns per value against
//   214–460), most likely because a side that spins takes one of the two vCPUs from the side
//   doing the work, and a receiver at the sender's heels contends for the lines it writes.
// - A spin inside the library (an experiment: up to 2 or 5 µs on the mapped ready / blocked
//   byte before queueing a shared receive or send) changed neither stream beyond the host's
//   noise with 2 µs (1 KiB medians 135–552 ns against 170–341) and slowed the 1 KiB one with
//   5 µs (323–427): the receiver's spins then succeeded 97% of the time and kept it in lockstep
//   with the sender. A sender's spin found room in 1–30% of its waits; an idle round trip's
//   spins succeeded in under 1% (its waits last 30–100 µs).
/// <reference lib="deno.worker" />
import { Channel, codecs, type SharedChannel } from "../mod.ts";

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 && i + 1 < Deno.args.length ? Number(Deno.args[i + 1]) : fallback;
}

const BYTES = Deno.args.includes("--bytes");
const N = arg("--n", BYTES ? 200_000 : 2_000_000);
const SPIN_MS = arg("--spin", 0) / 1000;
const ROUNDS = arg("--rounds", 4);

type Start = { ch: SharedChannel; n: number; spinMs: number };
type Report = { waits: number; waitMs: number };

if ("WorkerGlobalScope" in globalThis) {
  self.onmessage = async (e: MessageEvent<Start>) => {
    const { n, spinMs } = e.data;
    const ch = Channel.from<unknown>(e.data.ch);
    let waits = 0, waitMs = 0;
    self.postMessage("ready");
    for (let i = 0; i < n; i++) {
      let r = ch.tryReceive();
      if (r.state !== "ok" && spinMs > 0) {
        const end = performance.now() + spinMs;
        while (r.state !== "ok" && performance.now() < end) r = ch.tryReceive();
      }
      if (r.state !== "ok") {
        waits++;
        const t = performance.now();
        await ch.receive();
        waitMs += performance.now() - t;
      }
    }
    ch[Symbol.dispose]();
    self.postMessage({ waits, waitMs } satisfies Report);
  };
} else {
  const worker = new Worker(import.meta.url, { type: "module", name: "stream-waits" });
  const inbox: unknown[] = [];
  let wake: (() => void) | null = null;
  worker.onmessage = (e) => {
    inbox.push(e.data);
    wake?.();
  };
  const next = async (): Promise<unknown> => {
    while (inbox.length === 0) await new Promise<void>((r) => wake = r);
    wake = null;
    return inbox.shift();
  };
  const value: unknown = BYTES ? new Uint8Array(1024).fill(7) : 1.5;
  const open = (): Channel<unknown> =>
    BYTES
      ? new Channel<Uint8Array>(1024, { codec: codecs.bytes }) as Channel<unknown>
      : new Channel<number>(4096, { codec: codecs.f64 }) as Channel<unknown>;
  for (let round = 0; round < ROUNDS; round++) {
    using ch = open();
    worker.postMessage({ ch: ch.share(), n: N, spinMs: SPIN_MS } satisfies Start);
    await next(); // ready
    let waits = 0, waitMs = 0;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      let r = ch.trySend(value);
      if (r.state !== "ok" && SPIN_MS > 0) {
        const end = performance.now() + SPIN_MS;
        while (r.state !== "ok" && performance.now() < end) r = ch.trySend(value);
      }
      if (r.state !== "ok") {
        waits++;
        const t = performance.now();
        await ch.send(value);
        waitMs += performance.now() - t;
      }
    }
    const receiver = await next() as Report;
    const ms = performance.now() - t0;
    console.log(
      `round ${round}: ${(ms * 1e6 / N).toFixed(1)} ns/value (${ms.toFixed(0)} ms); waits: ` +
        `sender ${waits} (${waitMs.toFixed(1)} ms), receiver ${receiver.waits} ` +
        `(${receiver.waitMs.toFixed(1)} ms)`,
    );
  }
  worker.terminate();
}

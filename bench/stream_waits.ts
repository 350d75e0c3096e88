// Where the main → Worker number stream's time goes: the stream of bench/worker_bench.ts
// (codecs.f64, capacity 4096, one trySend / tryReceive per value, awaiting send / receive when
// that fails), counting how often each side had to wait, optionally after spinning on the
// try-operation for up to `--spin` microseconds first. Prints one line per round.
//
//   deno run --allow-ffi --allow-read --allow-env bench/stream_waits.ts [--spin 300] [--n 2000000]
//
// Not part of `./task bench`: an investigation tool. Session 9 found 33–926 waits of the sender
// and 48–529 of the receiver per run of 1–2 million values without spinning, and 0–75 with a
// 300 µs spin, the stream costing 52–157 ns per value either way: the cost is the cache lines
// crossing the cores, not the wake-ups.
/// <reference lib="deno.worker" />
import { Channel, codecs, type SharedChannel } from "../mod.ts";

function arg(name: string, fallback: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 && i + 1 < Deno.args.length ? Number(Deno.args[i + 1]) : fallback;
}

const N = arg("--n", 2_000_000);
const SPIN_MS = arg("--spin", 0) / 1000;
const ROUNDS = 4;

type Start = { ch: SharedChannel; n: number; spinMs: number };

if ("WorkerGlobalScope" in globalThis) {
  self.onmessage = async (e: MessageEvent<Start>) => {
    const { n, spinMs } = e.data;
    const ch = Channel.from<number>(e.data.ch);
    let waits = 0;
    self.postMessage("ready");
    for (let i = 0; i < n; i++) {
      let r = ch.tryReceive();
      if (r.state !== "ok" && spinMs > 0) {
        const end = performance.now() + spinMs;
        while (r.state !== "ok" && performance.now() < end) r = ch.tryReceive();
      }
      if (r.state !== "ok") {
        waits++;
        await ch.receive();
      }
    }
    ch[Symbol.dispose]();
    self.postMessage(waits);
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
  for (let round = 0; round < ROUNDS; round++) {
    using ch = new Channel<number>(4096, { codec: codecs.f64 });
    worker.postMessage({ ch: ch.share(), n: N, spinMs: SPIN_MS } satisfies Start);
    await next(); // ready
    let waits = 0;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      let r = ch.trySend(1.5);
      if (r.state !== "ok" && SPIN_MS > 0) {
        const end = performance.now() + SPIN_MS;
        while (r.state !== "ok" && performance.now() < end) r = ch.trySend(1.5);
      }
      if (r.state !== "ok") {
        waits++;
        await ch.send(1.5);
      }
    }
    const receiverWaits = await next();
    const ns = (performance.now() - t0) * 1e6 / N;
    console.log(
      `round ${round}: ${
        ns.toFixed(1)
      } ns/value; waits: sender ${waits}, receiver ${receiverWaits}`,
    );
  }
  worker.terminate();
}

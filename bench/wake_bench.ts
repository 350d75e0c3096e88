// Waking an idle isolate from another thread: the two ways Deno offers, on the same completion
// ring, the same channels and the same native partner (issue 5, part 2). Prints one JSON line
// per figure: {name, value, unit}.
//
// Each round trip: the isolate queues a receive on `pong` natively (kc_chan_recv_async on a
// ring), sends a value on `ping` (a synchronous try-send), and goes idle until the record of its
// receive arrives: a native echo coroutine (the "echo" built-in) takes the value from `ping` and
// sends it to `pong`, which completes the queued receive and appends the record. Only the wake-up
// differs:
// - poll: one `kc_ring_wait` outstanding as a `nonblocking` FFI call (Deno runs it on its
//   blocking thread pool and resolves the promise on the event loop): what src/bridge.ts does;
// - callback: a notifier thread of the library's own (kc_ring_notify) calls an
//   `UnsafeCallback.threadSafe` (Deno queues the call to the event loop and blocks the thread
//   until it ran), which drains the ring.
//
// Run by `./task bench` (bench/run.ts, suite "wake"), or alone:
//   deno run --allow-ffi --allow-read --allow-env bench/wake_bench.ts [--quick]
import { Channel, codecs, library, runtime } from "../mod.ts";

const quick = Deno.args.includes("--quick");
const ROUNDS = quick ? 300 : 2_000;
const PASSES = quick ? 2 : 4;

const lib = library();
const sym = lib.symbols("wake bench");
runtime();
// One slot: a round's value is always taken by the echo before it answers, so the next round's
// try-send finds room whether or not the echo is back in its receive yet.
const ping = new Channel<bigint>(1, { codec: codecs.u64 });
const pong = new Channel<bigint>("rendezvous", { codec: codecs.u64 });
const cells = runtime().cells([BigInt(ping.handle), BigInt(pong.handle), 0n, 0n]);
runtime().spawn("echo", cells);

const slot = new Uint8Array(8);
const ticketOut = new Uint32Array(1);
const records = new Uint32Array(4 * 16);

function newRing(): number {
  const out = new Uint32Array(1);
  if (sym.kc_ring_create(out) !== 0) throw new Error("kc_ring_create failed");
  return out[0];
}

/** Queues the receive on `pong`, then sends `i` on `ping`: true if the record must be awaited. */
function start(ring: number, i: number): boolean {
  const rc = sym.kc_chan_recv_async(pong.handle, slot, 8, ring, ticketOut);
  if (rc < 0) throw new Error(`kc_chan_recv_async: ${rc}`);
  const sent = ping.trySend(BigInt(i));
  if (sent.state !== "ok") throw new Error(`the echo did not take the last value: ${sent.state}`);
  return rc === 1;
}

/** Takes the record of the one queued receive, if it has come: true when it had. */
function finish(ring: number): boolean {
  const n = sym.kc_ring_drain(ring, records, 16);
  if (n <= 0) return false;
  if (n !== 1 || records[0] !== ticketOut[0]) throw new Error("unexpected ring record");
  if (sym.kc_ring_take(ring, ticketOut[0], slot, 8) !== 0) throw new Error("kc_ring_take failed");
  return true;
}

async function poll(): Promise<number> {
  const ring = newRing();
  try {
    const t0 = performance.now();
    for (let i = 0; i < ROUNDS; i++) {
      if (!start(ring, i)) continue;
      while (!finish(ring)) await sym.kc_ring_wait(ring, 1_000_000_000n);
    }
    return (performance.now() - t0) * 1e3 / ROUNDS;
  } finally {
    sym.kc_ring_destroy(ring);
  }
}

async function callback(): Promise<number> {
  const ring = newRing();
  let woken: (() => void) | null = null;
  const cb = Deno.UnsafeCallback.threadSafe(
    { parameters: [], result: "void" } as const,
    () => woken?.(),
  );
  const done = new Uint32Array(1);
  if (sym.kc_ring_notify(ring, cb.pointer, done) !== 0) throw new Error("kc_ring_notify failed");
  try {
    const t0 = performance.now();
    for (let i = 0; i < ROUNDS; i++) {
      if (!start(ring, i)) continue;
      while (!finish(ring)) await new Promise<void>((r) => woken = r);
      woken = null;
    }
    return (performance.now() - t0) * 1e3 / ROUNDS;
  } finally {
    sym.kc_ring_destroy(ring);
    // The notifier may be on its way into the callback: keep it until the thread has ended.
    const deadline = performance.now() + 10_000;
    while (Atomics.load(done, 0) === 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1));
    }
    cb.close();
  }
}

let bestPoll = Infinity, bestCallback = Infinity;
for (let pass = 0; pass < PASSES; pass++) { // alternate, so that drift hits both alike
  bestPoll = Math.min(bestPoll, await poll());
  bestCallback = Math.min(bestCallback, await callback());
}
console.log(JSON.stringify({
  name: "wake an idle isolate: nonblocking kc_ring_wait (poll)",
  value: bestPoll,
  unit: "us/round trip",
}));
console.log(JSON.stringify({
  name: "wake an idle isolate: threadSafe callback from a notifier thread",
  value: bestCallback,
  unit: "us/round trip",
}));
ping.close();
pong.close();
ping[Symbol.dispose]();
pong[Symbol.dispose]();
await runtime().shutdown();

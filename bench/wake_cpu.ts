// What an idle isolate's wake-up costs in CPU time (not in latency: bench/wake_bench.ts and
// worker_bench.ts's idle round trip measure that). Prints one JSON line per figure: {name, value,
// unit}, like the other bench scripts; not part of bench/run.ts's suites nor the README table.
//
// Each mode runs ROUNDS iterations, one per 1 ms timer (Deno fires those after ~2 ms or more:
// `msPerIteration` in the JSON says how long they took), and reports the process's CPU
// time (user + system, all threads: process.cpuUsage) per iteration, then the same split by
// thread (/proc/<pid>/task/*/schedstat: the main thread, the Worker's, Deno's blocking pools
// "tokio-runtime-w", the channel counters' clock ticker "kcoro-clock", V8's platform threads, the
// rest), with each group's voluntary context
// switches per iteration (how many times its threads went to sleep: each is a wake-up paid).
// - timer: the main isolate awaits a 1 ms setTimeout, again and again. The floor: what a wake-up
//   from the event loop's own timer costs.
// - ring-timeout: the main isolate awaits a `kc_ring_wait` with a 1 ms timeout on an empty ring
//   (nonblocking: a blocking-pool thread sleeps in the futex, then the event loop is woken). The
//   bridge's wake path with no partner: one blocking-pool hop more than the timer.
// - worker-recv: a Worker awaits `receive()` on a shared channel; the main isolate sends a value
//   after each 1 ms timer (trySend, which completes the Worker's queued receive natively and
//   wakes its ring). The whole wake-up of an idle receiver, both sides.
// - worker-post: the same with postMessage (the peer): a Worker woken by a message.
// The modes take turns over PASSES passes (the host's drift hits them alike); each figure's
// lowest and highest pass are printed (`min`, `max` in the JSON: the spread is the point here).
//
//   deno run -A bench/wake_cpu.ts [--quick] [--threads]
// --threads also prints each mode's split by thread group (CPU µs and sleeps per iteration);
// --only=<mode> runs one mode (under strace, say).
/// <reference lib="deno.worker" />
import process from "node:process";
import { Channel, library, type SharedChannel } from "../mod.ts";

type Msg = { mode: "recv"; ch: SharedChannel; n: number } | { mode: "post"; n: number };

const inWorker = typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !==
  "undefined";

if (inWorker) {
  let left = 0; // postMessage values still to come (mode "post")
  self.onmessage = async (e: MessageEvent<Msg | number>) => {
    const m = e.data;
    if (typeof m === "number") {
      if (--left === 0) self.postMessage("done");
    } else if (m.mode === "recv") {
      const ch = Channel.from<number>(m.ch);
      self.postMessage("ready");
      for (let i = 0; i < m.n; i++) await ch.receive();
      self.postMessage("done");
    } else {
      left = m.n;
      self.postMessage("ready");
    }
  };
} else {
  await main();
}

/** Per live thread (by id): its group, CPU ns and voluntary context switches so far. */
type Sample = Map<string, { group: string; ns: number; sleeps: number }>;

function sample(): Sample {
  const out: Sample = new Map();
  const self = String(Deno.pid);
  for (const t of Deno.readDirSync(`/proc/${self}/task`)) {
    let comm: string, sched: string, status: string;
    try {
      comm = Deno.readTextFileSync(`/proc/${self}/task/${t.name}/comm`).trim();
      sched = Deno.readTextFileSync(`/proc/${self}/task/${t.name}/schedstat`);
      status = Deno.readTextFileSync(`/proc/${self}/task/${t.name}/status`);
    } catch {
      continue; // ended meanwhile
    }
    const group = t.name === self ? "main" : comm.startsWith("worker-") // Deno names a Worker's thread so
      ? "worker"
      : comm === "kcoro-clock" // the channel counters' clock ticker (zig-src/chan/clock.zig)
      ? "kcoro clock"
      : comm.startsWith("tokio-runtime")
      ? "blocking pool"
      : comm.startsWith("V8 ")
      ? "V8 platform"
      : "other";
    const ns = Number(sched.split(" ")[0]);
    const sleeps = Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
    out.set(t.name, { group, ns, sleeps });
  }
  return out;
}

/**
 * Per group: CPU ns and sleeps between two samples, over the threads alive at the second (a
 * thread that ended in between is left out: its time shows in the process's total only).
 */
function delta(s0: Sample, s1: Sample): Map<string, { ns: number; sleeps: number }> {
  const out = new Map<string, { ns: number; sleeps: number }>();
  for (const [tid, v1] of s1) {
    const v0 = s0.get(tid);
    const g = out.get(v1.group) ?? { ns: 0, sleeps: 0 };
    g.ns += v1.ns - (v0?.ns ?? 0);
    g.sleeps += v1.sleeps - (v0?.sleeps ?? 0);
    out.set(v1.group, g);
  }
  return out;
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function main(): Promise<void> {
  const quick = Deno.args.includes("--quick");
  const threads = Deno.args.includes("--threads");
  const ROUNDS = quick ? 300 : 1_000;
  const PASSES = quick ? 2 : 5;
  const sym = library().symbols("wake cpu bench");
  const out = new Uint32Array(1);
  if (sym.kc_ring_create(out) !== 0) throw new Error("kc_ring_create failed");
  const ring = out[0];

  const worker = new Worker(import.meta.url, { type: "module" });
  const next = () =>
    new Promise<unknown>((resolve) =>
      worker.addEventListener("message", (e) => resolve(e.data), { once: true })
    );
  const tick = () => new Promise<void>((r) => setTimeout(r, 1));
  const ch = new Channel<number>("rendezvous");

  const modes: Record<string, () => Promise<void>> = {
    "timer": async () => {
      for (let i = 0; i < ROUNDS; i++) await tick();
    },
    "ring-timeout": async () => {
      for (let i = 0; i < ROUNDS; i++) {
        if (await sym.kc_ring_wait(ring, 1_000_000n) !== 0) throw new Error("a record came");
      }
    },
    "worker-recv": async () => {
      const ready = next();
      worker.postMessage({ mode: "recv", ch: ch.share(), n: ROUNDS } satisfies Msg);
      await ready;
      const done = next();
      for (let i = 0; i < ROUNDS; i++) {
        await tick();
        // The Worker's receive is queued by now (a millisecond went by): trySend hands it over.
        if (ch.trySend(i).state !== "ok") await ch.send(i);
      }
      await done;
    },
    "worker-post": async () => {
      const ready = next();
      worker.postMessage({ mode: "post", n: ROUNDS } satisfies Msg);
      await ready;
      const done = next();
      for (let i = 0; i < ROUNDS; i++) {
        await tick();
        worker.postMessage(i);
      }
      await done;
    },
  };

  const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7);
  if (only !== undefined) {
    for (const name of Object.keys(modes)) if (name !== only) delete modes[name];
  }
  const results = new Map<
    string,
    { cpu: number[]; wall: number[]; groups: Map<string, number[][]> }
  >();
  for (let pass = -1; pass < PASSES; pass++) { // pass -1: warm-up, not counted
    for (const [name, run] of Object.entries(modes)) {
      const s0 = sample();
      const c0 = cpuUs();
      const t0 = performance.now();
      await run();
      const t1 = performance.now();
      const c1 = cpuUs();
      const s1 = sample();
      if (pass < 0) continue;
      const r = results.get(name) ??
        { cpu: [] as number[], wall: [] as number[], groups: new Map() };
      r.cpu.push((c1 - c0) / ROUNDS);
      r.wall.push((t1 - t0) / ROUNDS);
      for (const [g, d] of delta(s0, s1)) {
        const list = r.groups.get(g) ?? [];
        list.push([d.ns / 1e3 / ROUNDS, d.sleeps / ROUNDS]);
        r.groups.set(g, list);
      }
      results.set(name, r);
    }
  }
  worker.terminate();
  ch.close();
  ch[Symbol.dispose]();
  sym.kc_ring_destroy(ring);

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  for (const [name, r] of results) {
    console.log(JSON.stringify({
      name: `idle wake-up CPU: ${name}`,
      value: median(r.cpu),
      unit: "us CPU/iteration",
      min: Math.min(...r.cpu),
      max: Math.max(...r.cpu),
      msPerIteration: median(r.wall), // a 1 ms setTimeout takes ~2 ms or more in Deno
    }));
    if (!threads) continue;
    for (const [g, list] of r.groups) {
      const ns = list.map((x) => x[0]), sl = list.map((x) => x[1]);
      console.log(JSON.stringify({
        name: `idle wake-up CPU: ${name}: ${g} thread(s)`,
        value: median(ns),
        unit: "us CPU/iteration",
        min: Math.min(...ns),
        max: Math.max(...ns),
        sleeps: median(sl),
      }));
    }
  }
}

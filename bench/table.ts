// The README's table of figures, from the last `./task bench` run's `bench/results/*.json`:
// every row names the result it reads, so the table is that run and nothing else. bench/run.ts
// writes it to bench/results/table.md at the end of a run; alone:
//   deno run --allow-read bench/table.ts
// A figure missing from the results (Boost or valgrind not installed, a suite that failed)
// leaves its cell as "n/a".

import { ACTOR_DEADLINE, ACTOR_PLAIN } from "./common.ts";

/** One figure of a run, as bench/run.ts writes it to `bench/results/<suite>.json`. */
export interface Figure {
  name: string;
  value: number;
  unit: string;
  peer: string | null;
  peer_value: number | null;
  ratio: number | null;
}

const root = new URL("..", import.meta.url);
const suites = ["switch", "sched", "chan", "ffi", "channel", "worker", "wake", "scope"];

/** Every figure of the run, by suite. */
export async function load(): Promise<Map<string, Figure[]>> {
  const all = new Map<string, Figure[]>();
  for (const s of suites) {
    try {
      const text = await Deno.readTextFile(new URL(`bench/results/${s}.json`, root));
      all.set(s, JSON.parse(text) as Figure[]);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      all.set(s, []);
    }
  }
  return all;
}

/** A number as the README writes it: three significant digits, thousands separated. */
export function num(v: number): string {
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** A ratio: three decimals under 0.1, two up to 10, then three significant digits. */
export function ratio(r: number): string {
  if (r < 0.1) return r.toFixed(3);
  if (r < 10) return r.toFixed(2);
  return num(r);
}

/**
 * Operations in the loop that callgrind counts (bench/run.ts runs bench/native/bench.zig's
 * counters figure with --quick: 3 passes of 20,000 rounds of 100 sends and 100 receives).
 */
const COUNTED_OPS = 3 * 20_000 * 200;

interface Row {
  label: string;
  kcoro: string;
  peer: string;
  ratio: string;
}

/** Builds the rows from the run's figures. */
export function rows(all: Map<string, Figure[]>): Row[] {
  const find = (suite: string, name: string, peer?: string): Figure | undefined =>
    all.get(suite)?.find((f) =>
      f.name === name && (peer === undefined || f.peer?.startsWith(peer) === true)
    );
  const out: Row[] = [];
  /** A row for one figure: `show` formats kcoro's value, `peerShow` the peer's cell. */
  const row = (
    label: string,
    f: Figure | undefined,
    show: (f: Figure) => string,
    peerShow: (f: Figure) => string = () => "",
    withRatio = true,
  ) => {
    out.push({
      label,
      kcoro: f === undefined ? "n/a" : show(f),
      peer: f === undefined ? "" : peerShow(f),
      ratio: f === undefined || !withRatio || f.ratio === null ? "" : ratio(f.ratio),
    });
  };
  const ns = (f: Figure) => `${num(f.value)} ns`;
  const peerNs = (label: string) => (f: Figure) =>
    f.peer_value === null ? "" : `${label} ${num(f.peer_value)} ns`;

  // The context switch (switch.json).
  row(
    "context switch",
    find("switch", "switch (callee-saved regs, jmp back)"),
    ns,
    peerNs("Boost.Context `jump_fcontext`"),
  );
  row(
    "context switch + FP control state (`fp_control`)",
    find("switch", "switch + FP control state (fp_control)"),
    ns,
    peerNs("Boost `jump_fcontext` (also saves it)"),
  );
  row(
    "switch returning with `ret` (rejected design)",
    find("switch", "switch returning with ret (not used)"),
    ns,
    peerNs("kcoro's jmp switch"),
  );
  row(
    "resume + yield round trip (Zig API, hand-driven)",
    find("switch", "coroutine resume + yield round trip"),
    ns,
  );
  row(
    "create + run + destroy (Zig API, pooled stack)",
    find("switch", "coroutine create + run + destroy"),
    ns,
  );
  row(
    "1,000,000 live parked coroutines (slab, 16 KiB stacks)",
    find("switch", "live parked coroutines (slab, 16 KiB stacks)"),
    (f) => `${num(f.value)} bytes each (${(f.value * 1e6 / 2 ** 30).toFixed(1)} GiB)`,
  );

  // The scheduler (sched.json).
  row(
    "spawn + run to completion, 2 workers",
    find("sched", "sched: spawn + run to completion (2 workers)"),
    ns,
    peerNs("Go `CreateGoroutines`"),
  );
  row(
    "yield round trip, two coroutines on one worker",
    find("sched", "sched: yield round trip, two coroutines on one worker"),
    ns,
    peerNs("Go `PingPongHog`"),
  );
  row(
    "park/unpark ping-pong on one worker",
    find("sched", "sched: park/unpark ping-pong on one worker"),
    ns,
    peerNs("Go `PingPongHog`"),
  );
  row(
    "skynet, 1,000,000 coroutines, 2 workers",
    find("sched", "sched: skynet, 1,000,000 coroutines (2 workers)"),
    (f) => `${num(f.value)} ms`,
    (f) => `Go skynet (channels) ${num(f.peer_value!)} ms`,
  );
  row(
    "1,000,000 parked scheduled coroutines",
    find("sched", "sched: parked coroutines, resident memory"),
    (f) => `${num(f.value)} bytes each`,
    (f) => `Go: ${num(f.peer_value!)} bytes per goroutine`,
  );
  row(
    "CPU fan-out, 64 tasks, 2 workers",
    find("sched", "sched: CPU fan-out, 64 tasks, 2 workers"),
    (f) => `${num(f.value)} ms`,
    (f) => `Go ${num(f.peer_value!)} ms`,
  );
  row(
    "parallel speedup, 2 workers over 1",
    find("sched", "sched: parallel speedup, 2 workers over 1"),
    (f) => `${f.value.toFixed(2)}x`,
    (f) => `Go ${f.peer_value!.toFixed(2)}x`,
    false,
  );
  // The native actor (no Go equivalent), and what a context deadline costs it.
  row(
    "actor message (self-fed conflated mailbox, 1 worker)",
    find("sched", ACTOR_PLAIN),
    ns,
  );
  row(
    "actor message with a context deadline, against without",
    find("sched", ACTOR_DEADLINE),
    ns,
    (f) => f.peer_value === null ? "" : `${num(f.peer_value)} ns without a deadline`,
  );

  // Native channels against Go's runtime benchmarks (chan.json).
  const go = (label: string, name: string, unit: "ns" | "µs" = "ns") =>
    row(
      label,
      find("chan", `chan: ${name}`),
      (f) => unit === "ns" ? ns(f) : `${num(f.value / 1000)} µs`,
      (f) => unit === "ns" ? `Go ${num(f.peer_value!)} ns` : `Go ${num(f.peer_value! / 1000)} µs`,
    );
  go("ChanNonblocking (try-receive on an empty channel)", "ChanNonblocking (try-receive, empty)");
  go(
    "ChanUncontended (100 sends + 100 receives)",
    "ChanUncontended (100 sends + 100 receives)",
  );
  go("ChanSync (rendezvous, 2 coroutines)", "ChanSync (rendezvous, 2 coroutines)");
  go("ChanProdCons0", "ChanProdCons0");
  go("ChanProdCons10", "ChanProdCons10");
  go("ChanProdCons100", "ChanProdCons100");
  go("ChanCreation", "ChanCreation");
  go("ChanSem", "ChanSem");
  go("SelectUncontended", "SelectUncontended");
  go(
    "ChanPopular (1,000 selects sharing one channel)",
    "ChanPopular (1000 selects on one channel)",
    "µs",
  );
  row(
    "send or receive with counters, against without (1 thread)",
    find("chan", "chan: send or receive, counters on (1 thread, capacity 100)"),
    ns,
    (f) => `${num(f.peer_value!)} ns without counters`,
    true,
  );
  row(
    "the same, in instructions (callgrind)",
    find("chan", "chan: send or receive, counters on, instructions"),
    (f) => `${num(f.value / COUNTED_OPS)} per operation`,
    (f) => `${num(f.peer_value! / COUNTED_OPS)} without counters`,
  );
  row(
    "zero-copy channel, 1 MiB buffers, 2 workers",
    find("chan", "chan: zero-copy throughput, 1 MiB buffers (2 workers)"),
    (f) => `${num(f.value)} GB/s (*)`,
    (f) => `copying channel, 1 MiB elements: ${num(f.peer_value!)} GB/s`,
  );

  // Deno: the FFI, channels from TypeScript (ffi.json, channel.json).
  row(
    "Deno FFI call floor (`kc_abi_version`)",
    find("ffi", "ffi call floor: kc_abi_version()"),
    ns,
  );
  row(
    "resume + yield of a native coroutine from JS",
    find("ffi", "ffi: kc_coro_resume (resume + yield of a native coroutine)"),
    ns,
    () => "FFI floor",
  );
  row(
    "TypeScript `trySend` + `tryReceive` pair (`codecs.f64`)",
    find("channel", "trySend + tryReceive pair, codecs.f64 (local against shared)"),
    (f) => `${num(f.value)} ns (local)`,
    (f) => `the same on a shared channel ${num(f.peer_value!)} ns`,
  );
  {
    const n = find("channel", "trySend + tryReceive pair, default codec (number)");
    const s = find("channel", "trySend + tryReceive pair, default codec (16-char string)");
    out.push({
      label: "same, default codec (a number / a 16-char string)",
      kcoro: n && s ? `${num(n.value)} / ${num(s.value)} ns` : "n/a",
      peer: "",
      ratio: "",
    });
  }
  row(
    "the 16-char string on a shared channel (UTF-8, native memory)",
    find(
      "channel",
      "trySend + tryReceive pair, default codec (16-char string), shared channel (native)",
    ),
    ns,
    peerNs("the local pair"),
  );
  row(
    "a `{ id, Map, Float64Array }` record on a shared channel (packed)",
    find(
      "channel",
      "trySend + tryReceive pair, default codec ({ Map, Float64Array }), shared channel (native)",
    ),
    ns,
    peerNs("`node:v8` serialize + deserialize"),
  );
  row(
    "`select`, 2 channel clauses, one ready (shared channels)",
    find("channel", "select, 2 channel clauses, one ready (shared channels)"),
    ns,
    peerNs("shared try pair"),
  );
  row(
    "create + dispose a channel",
    find("channel", "create + dispose a channel (local)"),
    (f) => `${num(f.value)} ns (local)`,
    peerNs("made native (`share`)"),
  );
  {
    const pp = find("channel", "ping-pong round trip, rendezvous, await send + receive", "npm");
    const call = find(
      "channel",
      "ping-pong round trip, rendezvous, await send + receive (against an async call)",
    );
    const floor = find(
      "channel",
      "ping-pong round trip, rendezvous, await send + receive (against the floor)",
    );
    row(
      "same-isolate `await send` / `await receive` ping-pong",
      pp,
      ns,
      (f) => `npm \`medium\` ${num(f.peer_value!)} ns`,
    );
    row(
      "the same, against an async call + await / the pure-JS floor",
      call,
      (f) => `${ratio(f.ratio!)}x / ${floor ? ratio(floor.ratio!) : "n/a"}x`,
      (f) =>
        `async call + await ${num(f.peer_value!)} ns; floor ${
          floor ? num(floor.peer_value!) : "n/a"
        } ns`,
      false,
    );
  }

  // Between isolates (worker.json, wake.json).
  const perValue = (f: Figure) => `${num(f.value)} ns / value`;
  const post = (f: Figure) => `\`postMessage\` ${num(f.peer_value!)} ns`;
  row(
    "main → Worker stream of numbers",
    find("worker", "channel stream: numbers (f64), main -> Worker"),
    perValue,
    post,
  );
  row(
    "the same, default codec (tagged; a zero-copy channel)",
    find("worker", "channel stream: numbers (default codec), main -> Worker"),
    perValue,
    post,
  );
  row(
    "the same, received in batches (`tryReceiveMany`)",
    find(
      "worker",
      "channel stream: numbers (f64), main -> Worker, received in batches (tryReceiveMany)",
    ),
    perValue,
    post,
  );
  row(
    "the same, both sides in batches (`trySendMany`, `tryReceiveMany`)",
    find(
      "worker",
      "channel stream: numbers (f64), main -> Worker, both sides in batches (trySendMany, tryReceiveMany)",
    ),
    perValue,
    post,
  );
  row(
    "main → Worker stream of small objects (default codec, packed)",
    find("worker", "channel stream: small objects (default codec), main -> Worker"),
    perValue,
    post,
  );
  row(
    "main → Worker stream of 1 KiB `Uint8Array`s",
    find("worker", "channel stream: 1 KiB Uint8Array, main -> Worker", "postMessage"),
    perValue,
    post,
  );
  row(
    "the same, each value released as received (`releaseBytes`)",
    find(
      "worker",
      "channel stream: 1 KiB Uint8Array, main -> Worker, each released (releaseBytes)",
      "postMessage",
    ),
    perValue,
    post,
  );
  row(
    "the same, released: median of the run's rounds (above: the best)",
    find(
      "worker",
      "channel stream: 1 KiB Uint8Array, main -> Worker, each released (releaseBytes) (median of rounds)",
      "postMessage",
    ),
    perValue,
    post,
  );
  row(
    "its one copy: 1 KiB into native memory not in cache",
    find(
      "worker",
      "copying a 1 KiB value into native memory (kc_desc_make, memory not in cache)",
    ),
    perValue,
    peerNs("the stream"),
  );
  row(
    "a fresh 1 KiB `Uint8Array` per value in the Worker (no channel)",
    find("worker", "a fresh 1 KiB Uint8Array per value, in the Worker (no channel)"),
    perValue,
    post,
  );
  const us = (f: Figure) => `${num(f.value / 1000)} µs`;
  const postUs = (f: Figure) => `\`postMessage\` ${num(f.peer_value! / 1000)} µs`;
  row(
    "main ↔ Worker round trip, both busy",
    find("worker", "channel round trip, both isolates busy (tryReceive between work units)"),
    us,
    postUs,
  );
  row(
    "main ↔ Worker round trip, both idle (`await`)",
    find("worker", "channel round trip, both isolates idle (await send + receive)"),
    us,
    postUs,
  );
  {
    const poll = find("wake", "wake an idle isolate: nonblocking kc_ring_wait (poll)");
    const cb = find("wake", "wake an idle isolate: threadSafe callback from a notifier thread");
    out.push({
      label: "wake an idle isolate: `kc_ring_wait` (kept)",
      kcoro: poll ? `${num(poll.value)} µs` : "n/a",
      peer: cb ? `threadSafe callback ${num(cb.value)} µs` : "",
      ratio: poll && cb ? ratio(poll.value / cb.value) : "",
    });
  }

  // Structured concurrency from TypeScript (scope.json).
  {
    const effect = find("scope", "scope: launch + join of a trivial task", "Effect");
    const effection = find("scope", "scope: launch + join of a trivial task", "effection");
    row(
      "`launch` + `join` of a trivial task",
      effect,
      ns,
      (f) =>
        `Effect ${num(f.peer_value! / 1000)} µs; effection ${
          effection ? num(effection.peer_value! / 1000) : "n/a"
        } µs`,
    );
    const ce = find("scope", "scope: cancel a scope of 100000 tasks, to settled", "Effect");
    const cn = find("scope", "scope: cancel a scope of 100000 tasks, to settled", "effection");
    row(
      "cancel a scope of 100,000 tasks, to settled",
      ce,
      (f) => `${num(f.value)} ms`,
      (f) => `Effect ${num(f.peer_value!)} ms; effection ${cn ? num(cn.peer_value!) : "n/a"} ms`,
    );
    const d = find("scope", "scope: 100000 tasks each awaiting a deferred, total");
    const c = find("scope", "scope: 100000 tasks each awaiting a channel, total");
    out.push({
      label: "100,000 tasks each awaiting a deferred / a channel",
      kcoro: d && c ? `${num(d.value)} ms / ${num(c.value)} ms` : "n/a",
      peer: "",
      ratio: "",
    });
    const he = find("scope", "scope: heap per waiting task (100000 tasks)", "Effect");
    const hn = find("scope", "scope: heap per waiting task (100000 tasks)", "effection");
    const hc = find("scope", "scope: heap per channel-waiting task (100000 tasks)");
    out.push({
      label: "heap per waiting task (deferred / channel)",
      kcoro: he && hc ? `${num(he.value)} / ${num(hc.value)} bytes` : "n/a",
      peer: he && hn
        ? `Effect ${num(he.peer_value!)}; effection ${num(hn.peer_value!)} (10,000 each)`
        : "",
      ratio: he ? ratio(he.ratio!) : "",
    });
  }
  return out;
}

/** The rows as a Markdown table, columns padded as `deno fmt` pads them. */
export function markdown(rs: Row[]): string {
  const head: Row = { label: "figure", kcoro: "kcoro", peer: "peer (same run)", ratio: "ratio" };
  const width = (k: keyof Row) => Math.max(...[head, ...rs].map((r) => [...r[k]].length));
  const pad = (s: string, w: number, right: boolean) => {
    const fill = " ".repeat(w - [...s].length);
    return right ? fill + s : s + fill;
  };
  const w = { label: width("label"), kcoro: width("kcoro"), peer: width("peer"), ratio: 5 };
  w.ratio = Math.max(w.ratio, width("ratio"));
  const line = (r: Row) =>
    `| ${pad(r.label, w.label, false)} | ${pad(r.kcoro, w.kcoro, true)} | ${
      pad(r.peer, w.peer, false)
    } | ${pad(r.ratio, w.ratio, true)} |`;
  const rule = `| ${"-".repeat(w.label)} | ${"-".repeat(w.kcoro - 1)}: | ${"-".repeat(w.peer)} | ${
    "-".repeat(w.ratio - 1)
  }: |`;
  return [line(head), rule, ...rs.map(line)].join("\n") + "\n";
}

/** The scaling figures (bench/scaling.ts): each kcoro figure and Go's program of the same shape. */
export const scalingPairs: readonly { kcoro: string; go: string; label: string }[] = [
  {
    kcoro: "scaling: spawn + run to completion",
    go: "CreateGoroutines",
    label: "spawn + run to completion (ns per spawn)",
  },
  { kcoro: "scaling: skynet, 1,000,000 coroutines", go: "Skynet", label: "skynet (ms)" },
  { kcoro: "scaling: CPU fan-out, 64 tasks", go: "FanOut", label: "CPU fan-out, 64 tasks (ms)" },
  {
    kcoro: "scaling: ChanUncontended",
    go: "ChanUncontended",
    label: "ChanUncontended (a channel each, ns)",
  },
  { kcoro: "scaling: ChanSync", go: "ChanSync", label: "ChanSync (two coroutines, ns)" },
  {
    kcoro: "scaling: ChanProdCons100",
    go: "ChanProdCons100",
    label: "ChanProdCons100 (a pair per worker, ns)",
  },
  { kcoro: "scaling: ChanSem", go: "ChanSem", label: "ChanSem (one channel, all workers, ns)" },
];

/**
 * The scaling table: one row per figure, a column per worker count ("kcoro / Go" at that many
 * workers and GOMAXPROCS), and each side's speedup at the most workers over its own 1-worker
 * run (time at 1 / time at N: every figure here is a time).
 */
export function scalingMarkdown(figures: Figure[]): string {
  const at = (name: string) => {
    const m = /^(.*) \((\d+) workers?\)$/.exec(name);
    return m === null ? null : { prefix: m[1], workers: Number(m[2]) };
  };
  const counts = [...new Set(figures.map((f) => at(f.name)?.workers ?? 0))]
    .filter((w) => w > 0).sort((a, b) => a - b);
  const cols = counts.length > 0 ? counts : [1, 2, 4, 8, 16];
  const top = cols[cols.length - 1];
  const head = ["figure", ...cols.map((w) => `${w} (kcoro / Go)`), `speedup at ${top}`];
  const body = scalingPairs.map((p) => {
    const byW = new Map<number, Figure>();
    for (const f of figures) {
      const a = at(f.name);
      if (a !== null && a.prefix === p.kcoro) byW.set(a.workers, f);
    }
    const cell = (w: number) => {
      const f = byW.get(w);
      if (f === undefined) return "n/a";
      return `${num(f.value)} / ${f.peer_value === null ? "n/a" : num(f.peer_value)}`;
    };
    const one = byW.get(1), last = byW.get(top);
    const speed = (a: number | null | undefined, b: number | null | undefined) =>
      a == null || b == null ? "n/a" : `${(a / b).toFixed(2)}x`;
    return [
      p.label,
      ...cols.map(cell),
      `${speed(one?.value, last?.value)} / ${speed(one?.peer_value, last?.peer_value)}`,
    ];
  });
  const rowsAll = [head, ...body];
  const width = head.map((_, i) => Math.max(...rowsAll.map((r) => [...r[i]].length)));
  const line = (r: string[]) =>
    `| ${
      r.map((c, i) =>
        i === 0
          ? c + " ".repeat(width[i] - [...c].length)
          : " ".repeat(width[i] - [...c].length) + c
      ).join(" | ")
    } |`;
  const rule = `| ${
    width.map((w, i) => i === 0 ? "-".repeat(w) : "-".repeat(w - 1) + ":").join(" | ")
  } |`;
  return [line(head), rule, ...body.map(line)].join("\n") + "\n";
}

if (import.meta.main) {
  console.log(markdown(rows(await load())));
}

/**
 * How low can a promise-based same-isolate rendezvous ping-pong go here? Issue 5's target for
 * kcoro's ping-pong (bench/channel_bench.ts, group "pingpong") is 2x an async call + await;
 * this measures hand-written rendezvous of decreasing generality beside kcoro's own rows, each
 * variant in a process of its own (no variant's code shapes another's), round-robin over the
 * variants `rounds` times, each process's best of `reps` batches of `n` round trips in CPU time
 * (process.cpuUsage: a shared machine's time slices to other processes do not count), and
 * prints each variant's median over the rounds beside the async call's. Not part of
 * `./task bench`; run by hand:
 *   deno run --allow-all bench/pingpong_floors.ts [rounds] [n] [reps]
 * Every variant sends one number and awaits its send and its receive, as the bench does:
 * - `async call + await`: the target's unit (bench/channel_bench.ts's `identity`);
 * - `one-slot`: one waiter per side at most, no queue, nothing else: not a channel;
 * - `fifo list`: any number of waiters, an intrusive FIFO list of small wait objects: the least
 *   a channel needs;
 * - `array floor`: bench/channel_bench.ts's MinimalRendezvous (arrays, push and shift);
 * - `+ for-await`: the partner loops `for await` over an iterator of its receives, as the
 *   bench's kcoro rows do, where the others loop on `receive()`;
 * - `kcoro ...`: a local Channel (codecs.f64 rendezvous; "buffered" with the default codec).
 */
import process from "node:process";
import { Channel, codecs } from "../mod.ts";

type Rendezvous = { send(v: number): Promise<void>; receive(): Promise<number> };

/** One waiting receiver and one waiting sender per side at most. */
class OneSlot implements Rendezvous {
  receiver: ((v: number) => void) | null = null;
  sender: (() => void) | null = null;
  value = 0;
  send(v: number): Promise<void> {
    const r = this.receiver;
    if (r !== null) {
      this.receiver = null;
      r(v);
      return Promise.resolve();
    }
    this.value = v;
    return new Promise<void>((done) => this.sender = done);
  }
  receive(): Promise<number> {
    const s = this.sender;
    if (s !== null) {
      this.sender = null;
      s();
      return Promise.resolve(this.value);
    }
    return new Promise<number>((res) => this.receiver = res);
  }
  /** An iterator's next(): the result object made where the value is handed over. */
  next(): Promise<IteratorResult<number>> {
    const s = this.sender;
    if (s !== null) {
      this.sender = null;
      s();
      return Promise.resolve({ value: this.value, done: false });
    }
    return new Promise((res) => this.receiver = (value) => res({ value, done: false }));
  }
}

/** A wait in a FifoList. */
class Wait {
  value = 0;
  receiver: ((v: number) => void) | null = null;
  sender: (() => void) | null = null;
  next: Wait | null = null;
}

/** Any number of waiters, oldest first, in an intrusive list. */
class FifoList implements Rendezvous {
  receivers: Wait | null = null;
  lastReceiver: Wait | null = null;
  senders: Wait | null = null;
  lastSender: Wait | null = null;
  send(v: number): Promise<void> {
    const r = this.receivers;
    if (r !== null) {
      this.receivers = r.next;
      if (r.next === null) this.lastReceiver = null;
      r.receiver!(v);
      return Promise.resolve();
    }
    const w = new Wait();
    w.value = v;
    const p = new Promise<void>((done) => w.sender = done);
    if (this.lastSender === null) this.senders = w;
    else this.lastSender.next = w;
    this.lastSender = w;
    return p;
  }
  #take(): Wait | null {
    const s = this.senders;
    if (s !== null) {
      this.senders = s.next;
      if (s.next === null) this.lastSender = null;
      s.sender!();
    }
    return s;
  }
  #queue(w: Wait): void {
    if (this.lastReceiver === null) this.receivers = w;
    else this.lastReceiver.next = w;
    this.lastReceiver = w;
  }
  receive(): Promise<number> {
    const s = this.#take();
    if (s !== null) return Promise.resolve(s.value);
    const w = new Wait();
    const p = new Promise<number>((res) => w.receiver = res);
    this.#queue(w);
    return p;
  }
  next(): Promise<IteratorResult<number>> {
    const s = this.#take();
    if (s !== null) return Promise.resolve({ value: s.value, done: false });
    const w = new Wait();
    const p = new Promise<IteratorResult<number>>((res) =>
      w.receiver = (value) => res({ value, done: false })
    );
    this.#queue(w);
    return p;
  }
}

/** bench/channel_bench.ts's floor. */
class ArrayFloor implements Rendezvous {
  #receivers: ((v: number) => void)[] = [];
  #senders: { v: number; done: () => void }[] = [];
  send(v: number): Promise<void> {
    const r = this.#receivers.shift();
    if (r !== undefined) {
      r(v);
      return Promise.resolve();
    }
    return new Promise<void>((done) => this.#senders.push({ v, done }));
  }
  receive(): Promise<number> {
    const s = this.#senders.shift();
    if (s !== undefined) {
      s.done();
      return Promise.resolve(s.v);
    }
    return new Promise<number>((res) => this.#receivers.push(res));
  }
}

/** The partner: receives on `ping` and sends each value back on `pong`, forever. */
function echo(ping: Rendezvous, pong: Rendezvous): void {
  (async () => {
    for (;;) await pong.send(await ping.receive());
  })().catch(() => {});
}
/** As `echo`, looping `for await` over `ping`. */
function echoIterating(ping: AsyncIterable<number>, pong: Rendezvous): void {
  (async () => {
    for await (const v of ping) await pong.send(v);
  })().catch(() => {});
}
/** `x` as an async iterable of its `next()`. */
function iterable(x: { next(): Promise<IteratorResult<number>> }): AsyncIterable<number> {
  return { [Symbol.asyncIterator]: () => ({ next: () => x.next() }) };
}

async function identity(x: number): Promise<number> {
  return await x;
}

const VARIANTS: Record<string, () => (n: number) => Promise<void>> = {
  "async call + await": () => async (n) => {
    for (let i = 0; i < n; i++) await identity(1);
  },
  "one-slot": () => pair(new OneSlot(), new OneSlot(), echo),
  "one-slot + for-await": () => {
    const a = new OneSlot(), b = new OneSlot();
    echoIterating(iterable(a), b);
    return loop(a, b);
  },
  "fifo list": () => pair(new FifoList(), new FifoList(), echo),
  "fifo list + for-await": () => {
    const a = new FifoList(), b = new FifoList();
    echoIterating(iterable(a), b);
    return loop(a, b);
  },
  "array floor": () => pair(new ArrayFloor(), new ArrayFloor(), echo),
  "kcoro rendezvous f64": () => pair(f64(), f64(), echo),
  "kcoro rendezvous f64 + for-await": () => pair(f64(), f64(), echoIterating),
  "kcoro buffered default codec": () => pair(buffered(), buffered(), echo),
  "kcoro buffered default codec + for-await": () => pair(buffered(), buffered(), echoIterating),
};

function f64(): Channel<number> {
  return new Channel<number>("rendezvous", { codec: codecs.f64 });
}
function buffered(): Channel<number> {
  return new Channel<number>("buffered");
}
function pair<R extends Rendezvous>(
  a: R,
  b: R,
  partner: (a: R, b: R) => void,
): (n: number) => Promise<void> {
  partner(a, b);
  return loop(a, b);
}
function loop(a: Rendezvous, b: Rendezvous): (n: number) => Promise<void> {
  return async (n) => {
    for (let i = 0; i < n; i++) {
      await a.send(1);
      await b.receive();
    }
  };
}

const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

if (Deno.args[0] === "--one") {
  // A child: one variant, its best batch's CPU ns per round trip.
  const [, name, n, reps] = Deno.args;
  const run = VARIANTS[name]();
  await run(Number(n)); // optimized before it is timed
  let best = Infinity;
  for (let r = 0; r < Number(reps); r++) {
    const c0 = process.cpuUsage();
    await run(Number(n));
    const c = process.cpuUsage(c0);
    best = Math.min(best, (c.user + c.system) * 1000 / Number(n));
  }
  console.log(JSON.stringify({ name, ns: best }));
  Deno.exit(0); // the partners wait forever
}

const [rounds = 5, n = 200_000, reps = 5] = Deno.args.map(Number);
const got = new Map<string, number[]>(Object.keys(VARIANTS).map((k) => [k, []]));
for (let r = 0; r < rounds; r++) {
  for (const name of Object.keys(VARIANTS)) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", import.meta.filename!, "--one", name, `${n}`, `${reps}`],
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`Cannot measure ${name}: its process failed`);
    got.get(name)!.push(JSON.parse(new TextDecoder().decode(out.stdout)).ns);
  }
}
const unit = median(got.get("async call + await")!);
for (const [name, ns] of got) {
  const m = median(ns);
  console.log(
    `${name.padEnd(42)} ${m.toFixed(1).padStart(6)} ns  ${(m / unit).toFixed(2)}x  [${
      ns.map((x) => x.toFixed(0)).join(" ")
    }]`,
  );
}

// Channel<T> from TypeScript: the try-operation pair against the FFI floor, and a same-isolate
// await send/receive ping-pong against a plain async call + await, the npm CSP library
// `medium`, and an array-based minimal rendezvous (not the floor: bench/pingpong_floors.ts), all
// measured in the same run.
// Run by `./task bench` (bench/run.ts, suite "channel"), or alone:
//   deno bench --allow-ffi --allow-read --allow-env bench/channel_bench.ts
import { Channel, codecs, library, select } from "../mod.ts";
import medium from "medium"; // npm:medium, pinned in deno.json
import { PINGPONG_ROUNDS } from "./constants.ts";
import { Bridge } from "../src/bridge.ts";

const sym = library().symbols("bench");

Deno.bench("ffi call floor: kc_abi_version()", { group: "try" }, () => {
  sym.kc_abi_version();
});

const f64 = new Channel<number>(64, { codec: codecs.f64 });
Deno.bench("trySend + tryReceive pair, codecs.f64", { group: "try", baseline: true }, () => {
  f64.trySend(1);
  f64.tryReceive();
});

// The same pair through the native channel: a channel whose handle left its isolate (here by
// share(); a Worker or native code could now use it) keeps its values natively.
const f64Shared = new Channel<number>(64, { codec: codecs.f64 });
f64Shared.share();
Deno.bench(
  "trySend + tryReceive pair, codecs.f64, shared channel (native)",
  { group: "try" },
  () => {
    f64Shared.trySend(1);
    f64Shared.tryReceive();
  },
);

const tagged = new Channel<unknown>(64);
Deno.bench("trySend + tryReceive pair, default codec (number)", { group: "try" }, () => {
  tagged.trySend(1);
  tagged.tryReceive();
});

Deno.bench("trySend + tryReceive pair, default codec (16-char string)", { group: "try" }, () => {
  tagged.trySend("sixteen chars..!");
  tagged.tryReceive();
});

// Creating a channel: a local one is made in JavaScript (its native channel only when it
// escapes), against one made native at once.
Deno.bench("create + dispose a channel (local)", { group: "create", baseline: true }, () => {
  new Channel<number>(8, { codec: codecs.f64 })[Symbol.dispose]();
});
Deno.bench("create + dispose a channel made native (share)", { group: "create" }, () => {
  const c = new Channel<number>(8, { codec: codecs.f64 });
  c.share();
  c[Symbol.dispose]();
});

// The made-native row again, 1,000 cycles a run (timed: those alone, per 1000), with 0 and with
// 1,000 other shared channels alive (made before and disposed after, untimed). Each share holds
// its channel on this thread's record (kc_chan_hold) and the dispose gives the hold back: each
// give-back left a tombstone in the record's table, and with 1,000 holds alive the table soon had
// no free slot, so each later hold walked all 2,048 slots (2 -> 9 us a cycle; `removeTidy`).
for (const alive of [0, 1000]) {
  Deno.bench(
    `1000 creates + disposes made native (share), ${alive} shared channels alive`,
    { group: "hold", baseline: alive === 0 },
    (b) => {
      const kept: Channel<number>[] = [];
      for (let i = 0; i < alive; i++) {
        const c = new Channel<number>("rendezvous", { codec: codecs.f64 });
        c.share();
        kept.push(c);
      }
      b.start();
      for (let i = 0; i < 1000; i++) {
        const c = new Channel<number>(8, { codec: codecs.f64 });
        c.share();
        c[Symbol.dispose]();
      }
      b.end();
      for (const c of kept) c[Symbol.dispose]();
    },
  );
}

async function identity(x: number): Promise<number> {
  return await x;
}
Deno.bench("async call + await (floor of a promise API)", { group: "pingpong" }, async () => {
  for (let i = 0; i < PINGPONG_ROUNDS; i++) await identity(1);
});

function partner(ping: Channel<number>, pong: Channel<number>) {
  (async () => {
    for await (const v of ping) await pong.send(v);
  })().catch(() => {}); // disposed at unload: the loop ends with a CancellationError
}

const ping = new Channel<number>("rendezvous", { codec: codecs.f64 });
const pong = new Channel<number>("rendezvous", { codec: codecs.f64 });
partner(ping, pong);
Deno.bench(
  "ping-pong round trip, rendezvous, await send + receive",
  { group: "pingpong", baseline: true },
  async () => {
    for (let i = 0; i < PINGPONG_ROUNDS; i++) {
      await ping.send(1);
      await pong.receive();
    }
  },
);

// The same with a signal on each wait (never aborting): what a task's waits pay to be
// cancellable (the signal's check at the call, and its abort listener added and removed).
const gping = new Channel<number>("rendezvous", { codec: codecs.f64 });
const gpong = new Channel<number>("rendezvous", { codec: codecs.f64 });
partner(gping, gpong);
const live = { signal: new AbortController().signal };
Deno.bench(
  "ping-pong round trip, rendezvous, send + receive with a signal",
  { group: "pingpong" },
  async () => {
    for (let i = 0; i < PINGPONG_ROUNDS; i++) {
      await gping.send(1, live);
      await gpong.receive(live);
    }
  },
);

// The rows above never park a wait given the signal (each one given it finds its partner
// waiting), so they add no abort listener: they missed a 9x slower parked wait (a wrapper and a
// WeakMap entry per listen). Here every wait given the signal parks, listening, and its partner
// completes it, the listener removed: the twin without a signal is the floor.
const parkRecv = new Channel<number>("rendezvous", { codec: codecs.f64 });
for (const signalled of [false, true]) {
  const opts = signalled ? live : undefined;
  Deno.bench(
    `a receive that parks${signalled ? " with a signal" : ""}, then a send completes it`,
    { group: "pingpong" },
    async () => {
      for (let i = 0; i < PINGPONG_ROUNDS; i++) {
        const got = parkRecv.receive(opts);
        await parkRecv.send(1);
        await got;
      }
    },
  );
}

// A ping-pong in which both waits given the signal park: the partner's receive (waiting before
// each ping) and this side's receive (made before the ping, so before the pong is sent).
for (const signalled of [false, true]) {
  const opts = signalled ? live : undefined;
  const pping = new Channel<number>("rendezvous", { codec: codecs.f64 });
  const ppong = new Channel<number>("rendezvous", { codec: codecs.f64 });
  (async () => {
    for (;;) await ppong.send(await pping.receive(opts));
  })().catch(() => {}); // disposed at unload: the loop ends with a CancellationError
  Deno.bench(
    `ping-pong round trip, rendezvous, both receives park${signalled ? " with a signal" : ""}`,
    { group: "pingpong" },
    async () => {
      for (let i = 0; i < PINGPONG_ROUNDS; i++) {
        const pong = ppong.receive(opts);
        await pping.send(1);
        await pong;
      }
    },
  );
}

const bping = new Channel<number>("buffered");
const bpong = new Channel<number>("buffered");
partner(bping, bpong);
Deno.bench("ping-pong round trip, buffered, default codec", { group: "pingpong" }, async () => {
  for (let i = 0; i < PINGPONG_ROUNDS; i++) {
    await bping.send(1);
    await bpong.receive();
  }
});

const sping = new Channel<number>("rendezvous", { codec: codecs.f64 });
const spong = new Channel<number>("rendezvous", { codec: codecs.f64 });
sping.share();
spong.share();
partner(sping, spong);
Deno.bench("ping-pong round trip, rendezvous, shared channels", { group: "pingpong" }, async () => {
  for (let i = 0; i < PINGPONG_ROUNDS; i++) {
    await sping.send(1);
    await spong.receive();
  }
});

/**
 * A minimal promise-based rendezvous: a send waits for a receiver and each side awaits once per
 * hop (two pending promises and four awaits per round trip), with no native memory, codec,
 * cancellation or cross-isolate support. Not a product, and not the least such a rendezvous
 * can cost: an intrusive FIFO list of waits in place of its arrays (push, shift) measured ~60
 * ns less per round trip, one waiter per side and no queue ~2x an async call
 * (bench/pingpong_floors.ts, 2026-12-06). Kept as it is: README's figures compare to it.
 */
class MinimalRendezvous<T> {
  #receivers: ((v: T) => void)[] = [];
  #senders: { v: T; done: () => void }[] = [];
  send(v: T): Promise<void> {
    const r = this.#receivers.shift();
    if (r !== undefined) {
      r(v);
      return Promise.resolve();
    }
    return new Promise<void>((done) => this.#senders.push({ v, done }));
  }
  receive(): Promise<T> {
    const s = this.#senders.shift();
    if (s !== undefined) {
      s.done();
      return Promise.resolve(s.v);
    }
    return new Promise<T>((res) => this.#receivers.push(res));
  }
}
const fping = new MinimalRendezvous<number>(), fpong = new MinimalRendezvous<number>();
(async () => {
  for (;;) await fpong.send(await fping.receive());
})();
Deno.bench(
  "floor: minimal pure-JS rendezvous ping-pong round trip",
  { group: "pingpong" },
  async () => {
    for (let i = 0; i < PINGPONG_ROUNDS; i++) {
      await fping.send(1);
      await fpong.receive();
    }
  },
);

const mping = medium.chan(), mpong = medium.chan();
medium.go(async () => {
  for (;;) await medium.put(mpong, await medium.take(mping));
});
Deno.bench("npm medium: ping-pong round trip, unbuffered", { group: "pingpong" }, async () => {
  for (let i = 0; i < PINGPONG_ROUNDS; i++) {
    await medium.put(mping, 1);
    await medium.take(mpong);
  }
});

globalThis.addEventListener("unload", () => {
  for (const c of [f64, f64Shared, tagged, ping, pong, bping, bpong, sping, spong]) {
    c[Symbol.dispose]();
  }
});

// Last in the file: benches that bring more of the channel code into play (a shared tagged
// channel's strings, select) run after the groups above, so they cannot change the code V8
// made for those (deno bench runs them in file order).
// A shared channel's string goes through native memory: UTF-8 into a pooled buffer and back.
const taggedShared = new Channel<unknown>(64);
taggedShared.share();
Deno.bench(
  "trySend + tryReceive pair, default codec (16-char string), shared channel (native)",
  { group: "try" },
  () => {
    taggedShared.trySend("sixteen chars..!");
    taggedShared.tryReceive();
  },
);

// A select over two shared channels, one of them ready: the probe (one kc_select call), the
// winning value decoded, the handler run in a microtask.
const selA = new Channel<number>(4, { codec: codecs.f64 });
const selB = new Channel<number>(4, { codec: codecs.f64 });
selA.share();
selB.share();
Deno.bench(
  "select, 2 channel clauses, one ready (shared channels)",
  { group: "select" },
  async () => {
    selA.trySend(1);
    await select<number>((s) => {
      s.onReceive(selB, (v) => v);
      s.onReceive(selA, (v) => v);
    });
  },
);

// The same select given options (`{ signal }`, never aborting): what its options' check
// (`checkOptionNames`) and the signal's abort listener, added and removed, cost a select.
const selLive = { signal: new AbortController().signal };
Deno.bench(
  "select, 2 channel clauses, one ready (shared channels), given { signal }",
  { group: "select" },
  async () => {
    selA.trySend(1);
    await select<number>((s) => {
      s.onReceive(selB, (v) => v);
      s.onReceive(selA, (v) => v);
    }, selLive);
  },
);

// A select that parks (both channels empty) and a trySend then completes: its listen and
// unlisten given the signal (the rows above find a clause ready and listen to nothing).
const selParkA = new Channel<number>(4, { codec: codecs.f64 });
const selParkB = new Channel<number>(4, { codec: codecs.f64 });
for (const signalled of [false, true]) {
  const opts = signalled ? selLive : undefined;
  Deno.bench(
    `select, 2 channel clauses, parks${signalled ? " given { signal }" : ""}, then a trySend`,
    { group: "select" },
    async () => {
      const won = select<number>((s) => {
        s.onReceive(selParkB, (v) => v);
        s.onReceive(selParkA, (v) => v);
      }, opts);
      selParkA.trySend(1);
      await won;
    },
  );
}

// A drop policy's channel whose creator has onUndeliveredElement: each of its sends and receives
// hands the hook what the channel dropped (`Channel.#collectAfter`), the try pair's extra cost.
const dropPair = new Channel<number>(64, {
  codec: codecs.f64,
  overflow: "drop-oldest",
  onUndeliveredElement: () => {},
});
dropPair.share();
Deno.bench(
  "trySend + tryReceive pair, codecs.f64, drop-oldest with onUndeliveredElement, shared channel",
  { group: "drop", baseline: true },
  () => {
    dropPair.trySend(1);
    dropPair.tryReceive();
  },
);

// The same channel's empty try-receive while 1000 receives of this isolate wait on it natively
// (queued at the end of the turn they began in): its hand-over of the dropped values must not
// look at each of them (it asks only whether one still waits in JavaScript).
const dropWaited = new Channel<number>(64, {
  codec: codecs.f64,
  overflow: "drop-oldest",
  onUndeliveredElement: () => {},
});
dropWaited.share();
for (let i = 0; i < 1000; i++) dropWaited.receive().catch(() => {}); // rejected at the dispose
await new Promise((r) => setTimeout(r, 0)); // the turn ended: they are queued natively
Deno.bench(
  "tryReceive of an empty drop-oldest channel, 1000 receives of this isolate queued natively",
  { group: "drop" },
  () => {
    dropWaited.tryReceive();
  },
);

// 1000 trySends into the same kind of channel, each completing one of 1000 receives of this
// isolate queued natively (in the turn before): each send settles its receive's record before
// it returns (`Bridge.settleWhere`), which must not look at the others queued (timed: the sends
// alone, per 1000).
const dropQueued = new Channel<number>(64, {
  codec: codecs.f64,
  overflow: "drop-oldest",
  onUndeliveredElement: () => {},
});
dropQueued.share();
Deno.bench(
  "1000 trySends to a drop-oldest channel, each to one of 1000 receives queued natively",
  { group: "drop" },
  async (b) => {
    const got: Promise<number>[] = [];
    for (let i = 0; i < 1000; i++) got.push(dropQueued.receive());
    await new Promise((r) => setTimeout(r, 0)); // the turn ended: they are queued natively
    b.start();
    for (let i = 0; i < 1000; i++) dropQueued.trySend(i);
    b.end();
    await Promise.all(got);
  },
);

// 1000 trySends to 1000 channels, each with a record held: a native send (as another thread's)
// completed each channel's first receive of this isolate, and a send on another channel drained
// those records and held them (`Bridge.settleWhere`); each trySend completes its channel's
// second receive and takes the held record first. Each must look at its own channel's held
// record only, not at those of the channels held before it (timed: the sends alone, per 1000).
// Made at the row's first run, not at the module's load, so the rows before it run beside no
// extra shared channels (1,001 alive made the "made native" row 2 -> 10 us until a thread's hold
// table was tidied on removal: the "hold" rows).
const heldChans: Channel<number>[] = [];
let heldTrigger: Channel<number> | undefined;
const heldBridge = Bridge.of(library());
const heldSlot = new Float64Array([1]);
const heldPtr = Deno.UnsafePointer.of(heldSlot);
Deno.bench(
  "1000 trySends to 1000 shared channels, each taking its channel's held record",
  { group: "held" },
  async (b) => {
    if (heldTrigger === undefined) {
      for (let i = 0; i < 1000; i++) {
        const c = new Channel<number>("rendezvous", { codec: codecs.f64 });
        c.share();
        heldChans.push(c);
      }
      heldTrigger = new Channel<number>("rendezvous", { codec: codecs.f64 });
      heldTrigger.share();
    }
    const got: Promise<number>[] = [];
    const before = heldBridge.pending; // dropWaited's receives too
    for (const c of heldChans) got.push(c.receive(), c.receive());
    got.push(heldTrigger.receive());
    // Queued natively at the end of the turn (a setImmediate, which a timer may run before):
    // until then a native send finds no receive, and the second one would wait for ever.
    while (heldBridge.pending < before + 2001) await new Promise((r) => setTimeout(r, 0));
    for (const c of heldChans) sym.kc_chan_try_send(c.handle, heldPtr, 8);
    heldTrigger.trySend(0); // drains the 1000 records, holds them
    b.start();
    for (const c of heldChans) c.trySend(2);
    b.end();
    await Promise.all(got);
  },
);

globalThis.addEventListener("unload", () => {
  for (const c of [dropPair, dropWaited, dropQueued, ...heldChans]) c[Symbol.dispose]();
  heldTrigger?.[Symbol.dispose]();
});

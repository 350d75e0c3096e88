// Resources a long-lived process must get back: native handles and threads after Workers that
// waited on shared channels were terminated mid-wait. Live channel handles are counted exactly by
// the library (kc_coro_stats' fifth figure, `liveChannels` of tests/support.ts), which a test
// here checks against asking every generation of every slot below 65,536 for its status (a call
// that changes nothing; a live handle answers >= 0). A churn of channels, rings and Workers
// measured this way (session 19) came back to its baseline in every area; this test keeps the
// Worker case, the one that crosses isolates, from regressing.
import assert from "node:assert/strict";
import { Channel, codecs, coroutineStats, library, Status } from "../mod.ts";
import {
  evalScript,
  liveChannels,
  steadyChannels,
  until,
  within,
  workerStartMs,
} from "./support.ts";

const workerUrl = new URL("./fixtures/churn_worker.ts", import.meta.url);

/** Threads of this process (a terminated Worker's thread must go). Read by `cat`: Deno lets only
 * `--allow-all` read `/proc` itself. */
function threads(): number {
  const out = new Deno.Command("cat", { args: [`/proc/${Deno.pid}/status`] }).outputSync();
  const m = /^Threads:\s+(\d+)$/m.exec(new TextDecoder().decode(out.stdout));
  assert.ok(m !== null, "/proc/self/status has a Threads line");
  return Number(m[1]);
}

async function cycle(): Promise<void> {
  using empty = new Channel<Uint8Array>(0);
  using full = new Channel<Uint8Array>(1);
  full.trySend(new Uint8Array(16));
  const w = new Worker(workerUrl, { type: "module" });
  try {
    const said = new Promise((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(e);
    });
    w.postMessage({ empty: empty.share(), full: full.share() });
    // Its first message: the first Worker's start type-checks its module (`workerStartMs`).
    assert.equal(await within(said, workerStartMs, "the Worker waiting"), "waiting");
  } finally {
    w.terminate();
  }
}

Deno.test("Workers terminated while they wait on shared channels leave no channel handle or thread behind (30 cycles)", async () => {
  await cycle(); // a warm-up: what the first Worker starts for good (pools, the runtime's threads)
  const before = await steadyChannels();
  const threadsBefore = threads();
  for (let i = 0; i < 30; i++) await cycle();
  // A terminated Worker's thread ends, and its ring gives back its channels' holds, a little after
  // terminate() returns: wait (bounded) for the counts to come back.
  let now = -1;
  await until(
    () => (now = liveChannels()) <= before,
    `channel handles back to ${before} (now ${now})`,
  ).catch(() => {});
  assert.equal(now, before, "live channel handles after 30 Workers");
  let t = -1;
  await until(() => (t = threads()) <= threadsBefore, "threads back").catch(() => {});
  assert.ok(t <= threadsBefore, `threads: ${t} after, ${threadsBefore} before`);
});

Deno.test("liveChannels (the library's count) agrees with a scan of every slot below 65,536, past the first chunk of 4,096 slots and at a later generation", async () => {
  // In a process of its own: a fresh handle table hands out fresh slots while 1,024 or fewer
  // are free, so 5,000 channels at once take slots 1 to 5,000; 2,000 of them destroyed and made
  // again reuse slots at their second generation. The scan once asked only slots below 4,096:
  // a leak past them (a process that once held ~3,000 channels) went uncounted.
  const res = await evalScript(`
    import { library } from "./mod.ts";
    import { liveChannels, scanChannels } from "./tests/support.ts";
    const sym = library().symbols("test");
    const agree = (what) => {
      const fast = liveChannels(), slow = scanChannels();
      if (fast !== slow) throw new Error(what + ": counted " + fast + ", scanned " + slow);
      return fast;
    };
    const before = agree("before");
    const out = new Uint32Array(1), handles = [];
    const make = () => {
      if (sym.kc_chan_create(8, 0, 0, 0, out) !== 0) throw new Error("create failed");
      return out[0];
    };
    for (let i = 0; i < 5000; i++) handles.push(make());
    const top = Math.max(...handles.map((h) => h & 0xfffff));
    if (top < 4096) throw new Error("the slots stayed below 4096: " + top);
    if (agree("5000 made") - before !== 5000) throw new Error("not 5000 more");
    for (let i = 0; i < 2000; i++) sym.kc_chan_destroy(handles[i]);
    // The library's count alone where the scan adds nothing (each scan takes seconds loaded).
    if (liveChannels() - before !== 3000) throw new Error("not 3000 more");
    for (let i = 0; i < 2000; i++) handles[i] = make();
    if (!handles.some((h) => (h >>> 20 & 511) > 1)) throw new Error("no slot reused");
    if (agree("2000 made again") - before !== 5000) throw new Error("not 5000 more again");
    for (const h of handles) sym.kc_chan_destroy(h);
    if (liveChannels() !== before) throw new Error("not back to " + before);
  `);
  assert.equal(res.code, 0, res.stderr);
});

Deno.test("steadyChannels answers a count that stayed a while: a handle that goes a little later (as a terminated Worker's) is not in the baseline", async () => {
  // A terminated Worker's handles went 2 to 40 ms after terminate() here, and steadyChannels
  // answered the count of two looks in a row that agreed: 1 ms apart once liveChannels was one
  // call, not 33M, so a baseline read 1 to 18 ms after a Worker's terminate counted its handles.
  // Such a baseline hid a leak of as many handles in the test that read it, or failed it when
  // they had gone by its last look. A destroy 30 ms on stands for them here: its timer fires
  // before any look that steadyChannels' quiet time (longer) sets after it.
  const before = await steadyChannels();
  const ch = new Channel<number>(1);
  ch.share(); // native: a handle of its own
  assert.equal(liveChannels(), before + 1);
  const late = new Promise<void>((resolve) =>
    setTimeout(() => {
      ch[Symbol.dispose]();
      resolve();
    }, 30)
  );
  try {
    assert.equal(await steadyChannels(), before, "the handle that went 30 ms on is not counted");
  } finally {
    await late;
  }
  assert.equal(liveChannels(), before);
});

Deno.test("channels a Worker made native by a select and never disposed end with its thread, terminated or closed", async () => {
  // A Worker's finalizers never run once it has ended, so the garbage collector's destroy of a
  // channel dropped without dispose never came: each stayed, handle and native channel, for the
  // life of the process.
  const url = new URL("./fixtures/select_local_worker.ts", import.meta.url);
  const before = await steadyChannels();
  for (const how of ["terminate", "close"] as const) {
    const w = new Worker(url, { type: "module" });
    try {
      const said = new Promise((resolve, reject) => {
        w.onmessage = (e) => resolve(e.data);
        w.onerror = (e) => reject(e);
      });
      w.postMessage({ n: 40, how });
      assert.equal(await within(said, workerStartMs, "the Worker's selects"), "done");
    } finally {
      if (how === "terminate") w.terminate();
    }
    let now = -1;
    await until(() => (now = liveChannels()) <= before, `channel handles back to ${before}`)
      .catch(() => {});
    assert.equal(now, before, `live channel handles after a Worker's ${how}`);
  }
});

Deno.test("native coroutines and scopes a Worker made and never destroyed end with its thread, terminated or closed; a scope whose child runs, uncancelled, once the child ends", async () => {
  // A Worker's finalizers never run once it has ended, so the garbage collector's destroy of a
  // coroutine or free-standing scope dropped undestroyed never came: each stayed, a coroutine's
  // stack mapped, for the life of the process (20 of each per Worker here).
  const url = new URL("./fixtures/native_drop_worker.ts", import.meta.url);
  const sym = library().symbols("test");
  using ch = new Channel<bigint>(0, { codec: codecs.u64 });
  const chan = ch.handle; // native: the busy scope's child receives from it
  let before = 0;
  await until(() => (before = coroutineStats().live) === coroutineStats().live, "a steady count");
  for (const how of ["terminate", "close"] as const) {
    const w = new Worker(url, { type: "module" });
    let made: { coros: number[]; scopes: number[]; busy: number };
    try {
      const said = new Promise<typeof made>((resolve, reject) => {
        w.onmessage = (e) => resolve(e.data);
        w.onerror = (e) => reject(e);
      });
      w.postMessage({ n: 20, how, chan });
      made = await within(said, workerStartMs, "the Worker's coroutines and scopes");
    } finally {
      if (how === "terminate") w.terminate();
    }
    const gone = (hs: number[], f: (h: number) => number) =>
      hs.map(f).filter((rc) => rc !== Status.EBADH).length;
    const coroState = (h: number) => sym.kc_coro_state(h);
    const scopeLive = (h: number) => sym.kc_scope_live(h);
    await until(() => gone(made.coros, coroState) + gone(made.scopes, scopeLive) === 0, "the end")
      .catch(() => {});
    assert.equal(gone(made.coros, coroState), 0, `coroutines left after a Worker's ${how}`);
    assert.equal(gone(made.scopes, scopeLive), 0, `scopes left after a Worker's ${how}`);
    // Its end did not cancel the scope whose child runs: the child still waits, and the scope
    // goes once it ends.
    assert.equal(scopeLive(made.busy), 1);
    await within(ch.send(7n), 20_000, "the busy scope's child receiving");
    let now = -1;
    await until(
      () => scopeLive(made.busy) === Status.EBADH && (now = coroutineStats().live) <= before,
      "the busy scope's end",
    )
      .catch(() => {});
    assert.equal(scopeLive(made.busy), Status.EBADH, `the busy scope after a Worker's ${how}`);
    assert.equal(now, before, `live coroutines after a Worker's ${how}`);
  }
});

// The Node-API companion (zig-src/napi/addon.zig, ffi/napi.ts): chunk buffers whose V8
// backing-store deleter gives a pool chunk's counted views back exactly when no ArrayBuffer
// reaches the chunk any more: at once on a detach (`transfer(0)`), only once a moved buffer is
// garbage after a user's `transfer()`, and as a terminated Worker ends.
import assert from "node:assert/strict";
import { evalScript, liveCells } from "./support.ts";
import { library } from "../ffi/load.ts";
import {
  addonPathFor,
  bindAddon,
  bindCellsAddon,
  cellsBuffersFor,
  cellsBuffersProblem,
  chunkBuffers,
  chunkBuffersFor,
  chunkBuffersProblem,
} from "../ffi/napi.ts";
import { chunksInUse, FILL, fullChunk } from "./fixtures/napi_chunk.ts";

const SLOTS = 65536;
// stats words (ffi/napi.ts ChunkBuffers.stats)
const RELEASED = 0, REFUSED = 1, FINALISED = 2, IN_USE = 3;

function buffers() {
  const sym = library().symbols("test");
  const cb = chunkBuffers(sym);
  assert.ok(cb !== null, chunkBuffersProblem() ?? "no reason");
  return { sym, cb };
}

Deno.test("a chunk buffer detached with transfer(0) gives its chunk back at once, with the views counted", () => {
  const { sym, cb } = buffers();
  const full = fullChunk(sym);
  // 16 KiB values in a 128 KiB chunk: 8, or 7 past a safe build's phase offset.
  assert.equal(full.values, Math.floor((full.size - full.offset) / (16 * 1024)));
  const made = cb.create(full.address, full.size);
  assert.ok(made !== null);
  assert.equal(made.buffer.byteLength, full.size);
  const view = new Uint8Array(made.buffer, full.offset, 16);
  assert.deepEqual([...view], new Array(16).fill(FILL)); // the chunk's own bytes
  cb.counts[made.slot] += full.values; // one per value viewed, as the receiver counts
  const before = chunksInUse(sym), released = cb.stats[RELEASED], slots = cb.stats[IN_USE];
  made.buffer.transfer(0);
  // Synchronously, inside transfer(0): the chunk is free again, its slot too.
  assert.equal(chunksInUse(sym), before - 1);
  assert.equal(cb.stats[RELEASED], released + 1);
  assert.equal(cb.stats[REFUSED], 0);
  assert.equal(cb.stats[IN_USE], slots - 1);
  assert.equal(cb.counts[made.slot], 0);
  assert.equal(view.length, 0); // every view of it reads empty
});

Deno.test("a chunk buffer with no views counted releases nothing when it goes; its slot comes back", () => {
  const { sym, cb } = buffers();
  const full = fullChunk(sym);
  const made = cb.create(full.address, full.size)!;
  const before = chunksInUse(sym);
  const released = cb.stats[RELEASED], finalised = cb.stats[FINALISED];
  made.buffer.transfer(0);
  assert.equal(cb.stats[FINALISED], finalised + 1);
  assert.equal(cb.stats[RELEASED], released); // no kc_pool_release(chunk, 0)
  assert.equal(cb.stats[REFUSED], 0);
  assert.equal(chunksInUse(sym), before);
  // The values are still out: freed here, the chunk comes back.
  assert.equal(
    sym.kc_pool_release(Deno.UnsafePointer.create(BigInt(full.address)), full.values),
    0,
  );
  assert.equal(chunksInUse(sym), before - 1);
});

Deno.test("create refuses a range outside one pool chunk (null), and the table's slots stay free", () => {
  const { sym, cb } = buffers();
  const info = new BigUint64Array(4);
  sym.kc_pool_info(info);
  const base = Number(info[0]), size = Number(info[2]);
  const slots = cb.stats[IN_USE];
  for (
    const [at, len] of [
      [base - 1, 16], // below the region
      [base + Number(info[1]), 16], // past it
      [base + size - 8, 16], // across two chunks
      [base, size + 1], // longer than a chunk
      [base, 0], // empty
      [base + 0.5, 16], // not an address
      [NaN, 16],
      [-base, 16],
      [base, Infinity],
    ]
  ) {
    assert.equal(cb.create(at, len), null, `create(${at}, ${len})`);
  }
  // deno-lint-ignore no-explicit-any
  const loose = cb.create as (...args: any[]) => unknown;
  assert.equal(loose(String(base), 16), null);
  assert.equal(loose(), null);
  assert.equal(cb.stats[IN_USE], slots);
});

Deno.test("a full slot table: create gives null (the caller falls back) until a buffer goes, whose slot is reused", () => {
  const { sym, cb } = buffers();
  const info = new BigUint64Array(4);
  sym.kc_pool_info(info);
  const base = Number(info[0]);
  const made: { buffer: ArrayBuffer; slot: number }[] = [];
  const start = cb.stats[IN_USE];
  try {
    for (let i = 0; i <= SLOTS; i++) {
      const m = cb.create(base, 16); // no views counted: nothing to release
      if (m === null) break;
      made.push(m);
    }
    assert.equal(made.length, SLOTS - start);
    assert.equal(cb.stats[IN_USE], SLOTS);
    assert.equal(new Set(made.map((m) => m.slot)).size, made.length, "each slot once");
    assert.equal(cb.create(base, 16), null);
    const gone = made.pop()!;
    gone.buffer.transfer(0);
    const again = cb.create(base, 16);
    assert.ok(again !== null);
    assert.equal(again.slot, gone.slot);
    made.push(again);
  } finally {
    for (const m of made) m.buffer.transfer(0);
  }
  assert.equal(cb.stats[IN_USE], start);
  assert.equal(cb.stats[REFUSED], 0);
});

Deno.test("a user's transfer() moves the chunk with the buffer: it comes back only once the moved buffer is garbage", async () => {
  // In a process of its own, for --expose-gc (and --single-threaded-gc: each gc() marks and
  // sweeps on the calling thread, so a collection's freed backing stores are freed by the time
  // it returns, with no background task the loaded machine may run late). The moved buffer and
  // the view that checks its bytes are made in a function: once it returns nothing of the
  // script reaches them, so the collector must find them garbage. Before, they were top-level
  // bindings of the script, which a collection found dead only by V8's liveness of the
  // module's registers across its awaits, and the wait was 20 s of wall time (it ran out once
  // under load); now it is a bounded number of collections.
  const res = await evalScript(
    `
    import { library } from "./ffi/load.ts";
    import { chunkBuffers } from "./ffi/napi.ts";
    import { chunksInUse, FILL, fullChunk } from "./tests/fixtures/napi_chunk.ts";
    const sym = library().symbols("test");
    const cb = chunkBuffers(sym);
    const full = fullChunk(sym);
    /** Moves a chunk buffer with transfer() and checks it; what it made is garbage once it returns. */
    function moveAndCheck() {
      const made = cb.create(full.address, full.size);
      cb.counts[made.slot] += full.values;
      const before = chunksInUse(sym), released = cb.stats[0];
      const moved = made.buffer.transfer();
      if (!made.buffer.detached || moved.byteLength !== full.size) throw new Error("not moved");
      if (chunksInUse(sym) !== before || cb.stats[0] !== released) {
        throw new Error("the chunk went back while the moved buffer still reaches it");
      }
      // More chunks carved and freed meanwhile never reuse the moved one's memory.
      const desc = new BigUint64Array(4), data = new Uint8Array(16384).fill(1);
      for (let i = 0; i < 64; i++) {
        sym.kc_desc_make(data, data.length, 17, desc);
        const at = Number(desc[0]);
        if (at >= full.address && at < full.address + full.size) throw new Error("chunk reused");
        sym.kc_buf_free(Deno.UnsafePointer.create(desc[0]));
      }
      const bytes = new Uint8Array(moved);
      for (let i = full.offset; i < full.offset + full.values * 16384; i++) {
        if (bytes[i] !== FILL) throw new Error("moved bytes changed at " + i);
      }
      if (cb.stats[0] !== released) throw new Error("the chunk went back while still reachable");
      return { before, released };
    }
    const { before, released } = moveAndCheck();
    // A bounded number of full collections, each given a macrotask turn: the first one after
    // the function returned finds the moved buffer garbage and frees its backing store.
    const ROUNDS = 200;
    let rounds = 0;
    while (cb.stats[0] === released) {
      if (rounds++ === ROUNDS) {
        throw new Error("the moved buffer's chunk never came back, after " + ROUNDS + " collections");
      }
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 0));
    }
    if (cb.stats[1] !== 0) throw new Error("a release was refused");
    if (chunksInUse(sym) >= before) throw new Error("in use: " + chunksInUse(sym) + " >= " + before);
    console.log("ok", rounds);
    `,
    { v8Flags: ["--expose-gc", "--single-threaded-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout.trim(), /^ok \d+$/, res.stderr);
});

Deno.test("a Worker terminated with live chunk buffers gives their chunks back as it ends", async () => {
  // In a process of its own: the chunks in use are this process's alone.
  const res = await evalScript(
    `
    import { library } from "./ffi/load.ts";
    import { chunkBuffers } from "./ffi/napi.ts";
    import { chunksInUse } from "./tests/fixtures/napi_chunk.ts";
    import { until } from "./tests/support.ts";
    const sym = library().symbols("test");
    const cb = chunkBuffers(sym);
    const w = new Worker(new URL("./tests/fixtures/napi_worker.ts", "file://" + Deno.cwd() + "/"), {
      type: "module",
    });
    const chunks = 3;
    const r = await new Promise((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(e.message);
      w.postMessage({ chunks });
    });
    if (r.error) throw new Error(r.error);
    if (r.kept !== chunks) throw new Error("kept " + r.kept);
    w.terminate();
    await until(
      () => chunksInUse(sym) <= r.inUse - chunks && cb.stats[0] >= r.released + chunks,
      () => "the chunks back: " + chunksInUse(sym) + " in use after the Worker ended, " + r.inUse +
        " before; releases " + cb.stats[0] + ", " + r.released + " before",
    );
    if (cb.stats[1] !== 0) throw new Error("a release was refused");
    console.log("ok");
    `,
  );
  assert.equal(res.code, 0, res.stderr);
  assert.equal(res.stdout.trim(), "ok", res.stderr);
});

Deno.test("slots from isolates and collector threads at once: each held by one holder at a time, all back after", async () => {
  // In a process of its own (--expose-gc): four Workers make and drop chunk buffers in
  // seeded rounds, by detach and by collection, while the main isolate collects.
  const seed = 0x5107;
  const res = await evalScript(
    `
    import { library } from "./ffi/load.ts";
    import { chunkBuffers } from "./ffi/napi.ts";
    import { collectUntil } from "./tests/support.ts";
    const cb = chunkBuffers(library().symbols("test"));
    const url = new URL("./tests/fixtures/napi_slots_worker.ts", "file://" + Deno.cwd() + "/");
    const workers = [0, 1, 2, 3].map(() => new Worker(url, { type: "module" }));
    const results = await Promise.all(workers.map((w, id) => new Promise((resolve, reject) => {
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => reject(e.message);
      w.postMessage({ id, ops: 20000, seed: ${seed} + id });
    })));
    for (const w of workers) w.terminate();
    for (const r of results) if (!r.ok) throw new Error(r.error);
    // Buffers the Workers dropped are finalised by their collections or as they end.
    await collectUntil(() => cb.stats[3] === 0, () => "the slots back: " + cb.stats[3] + " still in use");
    if (cb.stats[1] !== 0) throw new Error("a release was refused");
    console.log("ok", results.map((r) => r.made).join(","), cb.stats[2]);
    `,
    { v8Flags: ["--expose-gc"] },
  );
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^ok \d+,\d+,\d+,\d+ \d+/, res.stderr);
});

Deno.test("bind: the library Deno.dlopen'd only, once per process; each refusal named", async () => {
  // A process of its own: binding is process-wide and done once.
  const res = await evalScript(
    `
    import process from "node:process";
    import { findLibrary } from "./ffi/load.ts";
    import { addonPathFor, chunkBuffersFor, chunkBuffersProblem } from "./ffi/napi.ts";
    const path = findLibrary();
    const m = { exports: {} };
    process.dlopen(m, addonPathFor(path));
    const addon = m.exports;
    const out = [];
    out.push(["create before bind", addon.create(0, 16)]);
    out.push(["empty", addon.bind("")]);
    out.push(["number", addon.bind(42)]);
    out.push(["none", addon.bind()]);
    out.push(["nul", addon.bind(path + "\\0x")]);
    out.push(["too long", addon.bind("/" + "x".repeat(5000))]);
    out.push(["not loaded yet", addon.bind(path)]); // nothing Deno.dlopen'd it
    out.push(["missing file", addon.bind("/nonexistent/libkcoro.so")]);
    out.push(["no symbol", addon.bind("libc.so.6")]);
    const lib = Deno.dlopen(path, { kc_abi_version: { parameters: [], result: "u32" } });
    out.push(["bound", addon.bind(path)]);
    out.push(["again", addon.bind(path)]);
    const dir = path.slice(0, path.lastIndexOf("/"));
    out.push(["same file, other name", addon.bind(dir + "/./" + path.slice(dir.length + 1))]);
    const copy = Deno.makeTempFileSync({ suffix: ".so" });
    Deno.copyFileSync(path, copy);
    const other = Deno.dlopen(copy, { kc_abi_version: { parameters: [], result: "u32" } });
    out.push(["another copy", addon.bind(copy)]);
    // chunkBuffersFor loads the companion next to the library: beside the copy, a copy of
    // it, with a table of its own, bound to the copy (each library's pool its own companion).
    const mine = chunkBuffersFor(path);
    Deno.copyFileSync(addonPathFor(path), addonPathFor(copy));
    try {
      const theirs = chunkBuffersFor(copy);
      theirs.counts[7] = 1;
      out.push(["beside the copy", theirs !== null, mine.counts[7], chunkBuffersProblem()]);
      theirs.counts[7] = 0;
    } finally {
      Deno.removeSync(addonPathFor(copy));
      Deno.removeSync(copy);
    }
    console.log(JSON.stringify(out));
    lib.close();
    other.close();
    `,
  );
  assert.equal(res.code, 0, res.stderr);
  const got = new Map(
    (JSON.parse(res.stdout) as [string, unknown, string?][]).map(([k, ...v]) => [k, v]),
  );
  assert.deepEqual(got.get("create before bind"), [-2]);
  for (const k of ["empty", "number", "none", "nul", "too long"]) {
    assert.deepEqual(got.get(k), [-1], k);
  }
  assert.deepEqual(got.get("not loaded yet"), [-2]);
  assert.deepEqual(got.get("missing file"), [-2]);
  assert.deepEqual(got.get("no symbol"), [-3]);
  assert.deepEqual(got.get("bound"), [0]);
  assert.deepEqual(got.get("again"), [0]);
  assert.deepEqual(got.get("same file, other name"), [0]);
  assert.deepEqual(got.get("another copy"), [-5]);
  assert.deepEqual(got.get("beside the copy"), [true, 0, null]);
});

Deno.test("bindCells: the companion's cells asks the library's registry first, unbound it copies each header out; another copy's blocks and refusals hold either way", async () => {
  // A process of its own: the cells binding is process-wide and done once. Unbound, cells()
  // copied every header out with process_vm_readv (a system call each, though nearly every
  // block is the library's own); bound (cellsBuffersFor binds it), kc_cells_pin(address, 0)
  // answers from the registry, copying out only another copy's header.
  const res = await evalScript(
    `
    import process from "node:process";
    import { findLibrary } from "./ffi/load.ts";
    import { addonPathFor } from "./ffi/napi.ts";
    const path = findLibrary();
    const m = { exports: {} };
    process.dlopen(m, addonPathFor(path));
    const addon = m.exports;
    const syms = {
      kc_cells_alloc: { parameters: ["u32"], result: "pointer" },
      kc_cells_release: { parameters: ["pointer"], result: "void" },
      kc_coro_stats: { parameters: ["buffer", "u32"], result: "i32" },
    };
    const at = (p) => Number(Deno.UnsafePointer.value(p));
    const live = (l) => {
      const out = new BigUint64Array(4);
      l.symbols.kc_coro_stats(out, 4);
      return Number(out[3]);
    };
    const out = [];
    out.push(["empty", addon.bindCells("")]);
    out.push(["number", addon.bindCells(42)]);
    out.push(["none", addon.bindCells()]);
    out.push(["not loaded yet", addon.bindCells(path)]); // nothing Deno.dlopen'd it
    out.push(["no symbol", addon.bindCells("libc.so.6")]);
    const lib = Deno.dlopen(path, syms);
    const copy = Deno.makeTempFileSync({ suffix: ".so" });
    Deno.copyFileSync(path, copy);
    const other = Deno.dlopen(copy, syms);
    // Each state: a block of the library's own and one of another copy's, each viewed, then
    // released by its deleter into the copy that allocated it; refused: an address inside a
    // block, and the start of a mapping (no header readable before it).
    const libc = Deno.dlopen("libc.so.6", {
      mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "isize"], result: "pointer" },
      munmap: { parameters: ["pointer", "usize"], result: "i32" },
    });
    const m2 = libc.symbols.mmap(null, 8192n, 3, 0x22, -1, 0n);
    libc.symbols.munmap(m2, 4096n); // the page before the address
    const start = at(m2) + 4096;
    const round = (label) => {
      for (const [who, l] of [["own", lib], ["other copy", other]]) {
        const before = live(l);
        const p = l.symbols.kc_cells_alloc(4);
        const buf = addon.cells(at(p), 32);
        const made = buf instanceof ArrayBuffer && buf.byteLength === 32;
        const inside = addon.cells(at(p) + 16, 16);
        buf.transfer(0); // the deleter: the block's own copy's release
        out.push([label + ", " + who, made, inside, live(l) - before]);
      }
      out.push([label + ", mapping start", addon.cells(start, 8)]);
    };
    round("unbound");
    out.push(["bound", addon.bindCells(path)]);
    out.push(["again", addon.bindCells(path)]);
    out.push(["another copy", addon.bindCells(copy)]);
    round("bound");
    // A header copied from a live block to memory no kc_cells_alloc returned (its check word
    // made for the new address): the registry does not list it, and a header with this
    // library's own destroy is no other copy's either. Read in place, unbound, it passed.
    const real = lib.symbols.kc_cells_alloc(4);
    const mem = new Uint8Array(256);
    const base = at(Deno.UnsafePointer.of(mem));
    const forged = base + 48 + (16 - ((base + 48) % 16)) % 16; // 16-byte aligned, as cells are
    mem.set(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(at(real) - 48)), 48)), forged - 48 - base);
    const dv = new DataView(mem.buffer);
    dv.setBigUint64(forged - base - 24, 0x6b63656c6c732500n ^ BigInt(forged), true); // check
    dv.setBigUint64(forged - base - 32, 0n, true); // state: neither viewed nor released
    out.push(["forged", addon.cells(forged, 8)]);
    lib.symbols.kc_cells_release(real);
    Deno.removeSync(copy);
    console.log(JSON.stringify(out));
    `,
  );
  assert.equal(res.code, 0, res.stderr);
  const got = new Map(
    (JSON.parse(res.stdout) as [string, unknown][]).map(([k, ...v]) => [k, v]),
  );
  for (const k of ["empty", "number", "none"]) assert.deepEqual(got.get(k), [-1], k);
  assert.deepEqual(got.get("not loaded yet"), [-2]);
  assert.deepEqual(got.get("no symbol"), [-3]);
  assert.deepEqual(got.get("bound"), [0]);
  assert.deepEqual(got.get("again"), [0]);
  assert.deepEqual(got.get("another copy"), [-5]);
  for (const state of ["unbound", "bound"]) {
    // Made, the address inside refused (bad_range), and freed by its own copy's release.
    assert.deepEqual(got.get(`${state}, own`), [true, -3, 0], state);
    assert.deepEqual(got.get(`${state}, other copy`), [true, -3, 0], state);
    assert.deepEqual(got.get(`${state}, mapping start`), [-3], state);
  }
  assert.deepEqual(got.get("forged"), [-3]);
});

Deno.test("cellsBuffersFor binds the companion's cells to the library it is asked for (bindCells), so a runtime's cells() asks that library's registry", async () => {
  // A process of its own (the binding is process-wide, once). Once runtime().cells() has made
  // a buffer, the companion is bound to the runtime's library: binding it again to that one is
  // 0, to another copy other_library (-5). Unbound, that copy's bind would have been 0.
  const res = await evalScript(
    `
    import process from "node:process";
    import { library, runtime } from "./mod.ts";
    import { addonPathFor } from "./ffi/napi.ts";
    const path = library().path;
    const cells = runtime().cells(4);
    const m = { exports: {} };
    process.dlopen(m, addonPathFor(path));
    const copy = Deno.makeTempFileSync({ suffix: ".so" });
    Deno.copyFileSync(path, copy);
    const other = Deno.dlopen(copy, { kc_cells_pin: { parameters: ["pointer", "i32"], result: "i32" } });
    const got = [cells instanceof BigUint64Array, m.exports.bindCells(copy), m.exports.bindCells(path)];
    other.close();
    Deno.removeSync(copy);
    await runtime().shutdown();
    console.log(JSON.stringify(got));
    `,
  );
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), [true, -5, 0]);
});

Deno.test("chunkBuffers is null, with the reason, where the companion cannot be loaded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(chunkBuffersFor(`${dir}/libkcoro.so`), null);
    assert.match(
      chunkBuffersProblem()!,
      // The house form ("Cannot <op>: <reason>, received <x>"); it said "kcoro: no chunk buffers:".
      new RegExp(
        `^Cannot make chunk buffers: cannot load the Node-API companion ${dir}/kcoro_napi\\.node ` +
          "\\(built by `zig build` next to the library; needs --allow-ffi and --allow-read\\), " +
          "received [A-Za-z]+: ",
      ),
    );
    // deno-lint-ignore no-explicit-any
    assert.equal(chunkBuffersFor(42 as any), null);
    assert.equal(
      chunkBuffersProblem(),
      "Cannot make chunk buffers: the library path must be a non-empty string, received 42",
    );
    assert.equal(chunkBuffersFor(""), null);
    assert.match(chunkBuffersProblem()!, /non-empty string, received ""/);
    assert.equal(chunkBuffers({}), null);
    assert.equal(
      chunkBuffersProblem(),
      "Cannot make chunk buffers: these symbols are not an open kcoro library's, received " +
        "[object Object]",
    );
    assert.equal(addonPathFor("/a/b/libkcoro.so"), "/a/b/kcoro_napi.node");
    assert.equal(addonPathFor("libkcoro.so"), "kcoro_napi.node");
    // The one that works: the same object each call, in this isolate.
    const sym = library().symbols("test");
    assert.equal(chunkBuffers(sym), chunkBuffers(sym));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a module that is not kcoro's companion, or a bind the companion refuses, is null with the reason in the house form: the module's exports, the bind's status", async () => {
  // Unit-level: no real module exports these. Before, these two messages were untested, and
  // said "received exports a, b" (what was received is the module) and "received -2".
  const file = "/x/kcoro_napi.node", lib = "/x/libkcoro.so";
  const fake = (bind: unknown) => ({
    bind,
    create: () => 0,
    counts: new Uint32Array(1),
    out: new Int32Array(1),
    stats: new Uint32Array(4),
  });
  const not = `Cannot make chunk buffers: ${file} is not kcoro's Node-API companion`;
  const all = "bind, create, counts, out and stats";
  const { out: _, ...noOut } = fake(() => 0);
  const { bind: _b, stats: _s, ...noBindStats } = fake(() => 0);
  // Which export is missing or of the wrong kind, and what it was: it said "it lacks bind,
  // create, counts, out or stats", received the module's exports, also for an `out` that was
  // there as a Uint32Array.
  const modules: [unknown, string][] = [
    [{}, `(it lacks ${all}), received a module exporting nothing`],
    [{ hello: 1 }, `(it lacks ${all}), received a module exporting hello`],
    [noOut, "(it lacks out), received a module exporting bind, create, counts, stats"],
    [noBindStats, "(it lacks bind and stats), received a module exporting create, counts, out"],
    [
      { ...fake(() => 0), out: new Uint32Array(1) },
      "(its out must be an Int32Array), received a module whose out is [object Uint32Array] of " +
      "length 1",
    ],
    [fake(1), "(its bind must be a function), received a module whose bind is 1"],
    [
      { ...fake(() => 0), create: "create" },
      '(its create must be a function), received a module whose create is "create"',
    ],
    [
      { ...fake(() => 0), counts: [0] },
      "(its counts must be a Uint32Array), received a module whose counts is [object Array] of " +
      "length 1",
    ],
    [
      { ...fake(() => 0), stats: null },
      "(its stats must be a Uint32Array), received a module whose stats is null",
    ],
  ];
  for (const [module, why] of modules) {
    assert.equal(bindAddon(file, lib, module as never), `${not} ${why}`);
  }
  const cannot = `Cannot make chunk buffers: cannot bind ${file} to ${lib}: `;
  assert.equal(
    bindAddon(file, lib, fake(() => -2) as never),
    `${cannot}the library is not loaded in this process, received bind status -2`,
  );
  assert.equal(
    bindAddon(file, lib, fake(() => -5) as never),
    `${cannot}this process bound the companion to another copy of the library already, ` +
      "received bind status -5",
  );
  assert.equal(
    bindAddon(file, lib, fake(() => 7) as never),
    `${cannot}an error bind does not name, received bind status 7`,
  );
  // Only bind's own statuses name one: not a key Object.prototype has.
  assert.equal(
    bindAddon(file, lib, fake(() => "constructor") as never),
    `${cannot}an error bind does not name, received bind status "constructor"`,
  );
  const bound: string[] = [];
  const ok = bindAddon(file, lib, fake((p: string) => (bound.push(p), 0)) as never);
  assert.ok(typeof ok === "object" && ok.counts.length === 1, String(ok));
  assert.deepEqual(bound, [lib]);

  // The real companion, beside a library path this process has not loaded: bind refuses it
  // (-2), as chunkBuffersProblem says. A process of its own: the companion's copy stays loaded.
  const res = await evalScript(`
    import { findLibrary } from "./ffi/load.ts";
    import { addonPathFor, chunkBuffersFor, chunkBuffersProblem } from "./ffi/napi.ts";
    const dir = Deno.makeTempDirSync();
    try {
      Deno.copyFileSync(addonPathFor(findLibrary()), dir + "/kcoro_napi.node");
      console.log(JSON.stringify([dir, chunkBuffersFor(dir + "/libkcoro.so"), chunkBuffersProblem()]));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  `);
  assert.equal(res.code, 0, res.stderr);
  const [dir, got, problem] = JSON.parse(res.stdout) as [string, unknown, string];
  assert.equal(got, null);
  assert.equal(
    problem,
    `Cannot make chunk buffers: cannot bind ${dir}/kcoro_napi.node to ${dir}/libkcoro.so: the ` +
      "library is not loaded in this process, received bind status -2",
  );
});

Deno.test("a module whose bind or bindCells throws is no companion: null with the reason in the house form, not the module's raw error", async () => {
  // Unit-level: kcoro's companion returns a status from each, never throws. Before, the throw
  // left chunkBuffersFor and cellsBuffersFor (and runtime().cells()) as it was.
  const file = "/x/kcoro_napi.node", lib = "/x/libkcoro.so";
  const boom = () => {
    throw new RangeError("boom");
  };
  const chunks = {
    bind: boom,
    create: () => 0,
    counts: new Uint32Array(1),
    out: new Int32Array(1),
    stats: new Uint32Array(4),
  };
  assert.equal(
    bindAddon(file, lib, chunks as never),
    `Cannot make chunk buffers: ${file} is not kcoro's Node-API companion (its bind threw), ` +
      "received RangeError: boom",
  );
  const not = `Cannot make cells buffers: ${file} is not kcoro's Node-API companion`;
  assert.equal(
    bindCellsAddon(file, lib, { cells: () => 0, bindCells: boom } as never),
    `${not} (its bindCells threw), received RangeError: boom`,
  );
  assert.equal(
    bindCellsAddon(file, lib, {
      cells: () => 0,
      bindCells: () => {
        throw 7;
      },
    } as never),
    `${not} (its bindCells threw), received 7`,
  );
  assert.equal(
    bindCellsAddon(file, lib, { cells: 1 } as never),
    `${not} (its cells must be a function), received a module whose cells is 1`,
  );
  // Bound to the library asked for; a status other than 0 only leaves the headers copied out.
  const bound: string[] = [];
  const make = bindCellsAddon(file, lib, {
    cells: (address: number, length: number) => address === 8 ? new ArrayBuffer(length) : -1,
    bindCells: (p: string) => (bound.push(p), -5),
  } as never);
  assert.ok(typeof make === "function", String(make));
  assert.deepEqual(bound, [lib]);
  assert.equal(make(8, 16)!.byteLength, 16);
  assert.equal(make(16, 16), null);

  // The real companion made to throw from bindCells (in a process of its own: loading and
  // binding are once per process): cellsBuffersFor is null with the reason, and cells() falls
  // back to a SharedArrayBuffer, as without the companion.
  const res = await evalScript(`
    import process from "node:process";
    import { library, runtime } from "./mod.ts";
    import { cellsBuffersFor, cellsBuffersProblem } from "./ffi/napi.ts";
    const dlopen = process.dlopen;
    process.dlopen = (m, f) => {
      dlopen.call(process, m, f);
      m.exports = { ...m.exports, bindCells() { throw new RangeError("boom"); } };
    };
    const got = [cellsBuffersFor(library().path), cellsBuffersProblem()];
    const cells = runtime().cells(4);
    got.push(cells.buffer instanceof SharedArrayBuffer);
    await runtime().shutdown();
    console.log(JSON.stringify(got));
  `);
  assert.equal(res.code, 0, res.stderr);
  const [got, problem, shared] = JSON.parse(res.stdout) as [unknown, string, boolean];
  assert.equal(got, null);
  assert.match(
    problem,
    /^Cannot make cells buffers: \S+kcoro_napi\.node is not kcoro's Node-API companion \(its bindCells threw\), received RangeError: boom$/,
  );
  assert.equal(shared, true);
});

Deno.test("without --allow-ffi the companion is not loaded and the reason says what it needs", async () => {
  const root = new URL("../", import.meta.url).pathname;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      file,
      `import { chunkBuffersFor, chunkBuffersProblem } from "${root}ffi/napi.ts";
      console.log(chunkBuffersFor("${root}zig-out/lib/libkcoro.so"), chunkBuffersProblem());`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", "--allow-read", file],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(
      text,
      /^null Cannot make chunk buffers: cannot load .*needs --allow-ffi.*, received NotCapable: Requires ffi access/,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("a relative library path is taken from the current directory at the call: the companion is loaded by an absolute path, and a chdir later makes the same string name another library", async () => {
  // Before, chunkBuffersFor("libkcoro.so") loaded "./kcoro_napi.node" from the directory of the
  // first call, and its entry answered for that string wherever the process went after.
  const res = await evalScript(`
    import { library } from "./mod.ts";
    import { chunkBuffersFor, chunkBuffersProblem } from "./ffi/napi.ts";
    const lib = library();
    Deno.chdir(lib.path.slice(0, lib.path.lastIndexOf("/")));
    const here = chunkBuffersFor("libkcoro.so");
    const out = [here !== null, chunkBuffersProblem()];
    out.push(chunkBuffersFor(lib.path) === here); // one entry: the same library
    Deno.chdir("/");
    out.push(chunkBuffersFor("libkcoro.so"), chunkBuffersProblem());
    // Where the current directory cannot be read (removed), nothing is loaded relative to it.
    const gone = Deno.makeTempDirSync();
    Deno.chdir(gone);
    Deno.removeSync(gone);
    out.push(chunkBuffersFor("libkcoro.so"), chunkBuffersProblem());
    console.log(JSON.stringify(out));
  `);
  assert.equal(res.code, 0, res.stderr);
  const [found, none, same, there, why, gone, refused, ...rest] = JSON.parse(res.stdout);
  assert.deepEqual([found, none, same, there, gone, rest], [true, null, true, null, null, []]);
  assert.ok(
    why.startsWith(
      "Cannot make chunk buffers: cannot load the Node-API companion /kcoro_napi.node ",
    ),
    why,
  );
  assert.equal(
    refused,
    "Cannot make chunk buffers: the library path must be absolute (the current directory to " +
      'resolve it against cannot be read), received "libkcoro.so"',
  );
});

Deno.test("a cells buffer (runtime().cells') is released by its deleter: freed at a detach when unpinned, at the last unpin when pinned; anything but a block's address is refused", async () => {
  const make = cellsBuffersFor(library().path);
  assert.ok(make !== null, cellsBuffersProblem() ?? "no reason");
  const sym = library().symbols("test");
  const base = liveCells();
  const at = (p: Deno.PointerObject) => Number(Deno.UnsafePointer.value(p));
  // Unpinned: transfer(0) detaches, and the deleter frees the block inside it.
  const p = sym.kc_cells_alloc(4)!;
  const buf = make(at(p), 32)!;
  assert.ok(buf instanceof ArrayBuffer);
  assert.equal(buf.byteLength, 32);
  new BigUint64Array(buf)[3] = 7n;
  assert.equal(new Deno.UnsafePointerView(p).getBigUint64(24), 7n); // the block's own memory
  assert.equal(liveCells(), base + 1n);
  buf.transfer(0);
  assert.equal(liveCells(), base);
  // Pinned (a coroutine may write): the detach leaves it, the last unpin frees it.
  const q = sym.kc_cells_alloc(2)!;
  assert.equal(sym.kc_cells_pin(q, 2), 0);
  make(at(q), 16)!.transfer(0);
  assert.equal(liveCells(), base + 1n);
  assert.equal(sym.kc_cells_pin(q, -1), 0);
  assert.equal(liveCells(), base + 1n);
  assert.equal(sym.kc_cells_pin(q, -2), -22); // more than it holds: KC_EINVAL, nothing changed
  assert.equal(sym.kc_cells_pin(null, 1), -22);
  assert.equal(sym.kc_cells_pin(q, -1), 0);
  assert.equal(liveCells(), base);
  // Refused (null): no block's cells there by the header's check, misaligned, no whole number
  // of cells, out of range, not a number. The block stays the caller's.
  const r = sym.kc_cells_alloc(8)!;
  try {
    for (
      const [address, length] of [
        [at(r) + 32, 16], // inside the block: its cells are no header
        [at(r) + 8, 16],
        [at(r), 12],
        [at(r), 0],
        [at(r), 72], // past the block's 8 cells: a view over whatever memory follows
        [at(r) + 16, 16], // inside the block, where the header's check word is a cell
        [0, 8],
        [16, 8],
        [-16, 8],
        [2 ** 60, 8],
        ["1", 8],
      ] as const
    ) {
      assert.equal(make(address as number, length), null, `${address}, ${length}`);
    }
    assert.equal(liveCells(), base + 1n);
  } finally {
    sym.kc_cells_release(r);
  }
  assert.equal(liveCells(), base);
  // At the start of a mapping (the page before it unmapped: where a header would be), refused,
  // never read in place: before, the companion read the header there and the process crashed.
  const libc = Deno.dlopen("libc.so.6", {
    mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "isize"], result: "pointer" },
    munmap: { parameters: ["pointer", "usize"], result: "i32" },
    getpagesize: { parameters: [], result: "i32" },
  });
  try {
    const page = libc.symbols.getpagesize();
    // PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS.
    const m = libc.symbols.mmap(null, BigInt(2 * page), 3, 0x22, -1, 0n);
    assert.ok(m !== null && at(m) !== 2 ** 64 - 1, "mmap failed");
    assert.equal(libc.symbols.munmap(m, BigInt(page)), 0); // the page before the address
    const start = Deno.UnsafePointer.create(BigInt(at(m) + page))!;
    try {
      assert.equal(make(at(start), 8), null);
      assert.equal(make(at(start) + 48, 8), null); // its header readable: no block's check
    } finally {
      libc.symbols.munmap(start, BigInt(page));
    }
  } finally {
    libc.close();
  }
  // One view per block: a second (another call for the same address) would give the block a
  // second deleter, whose release after the first's freed it twice.
  const v = sym.kc_cells_alloc(8)!;
  const once = make(at(v), 64)!;
  assert.ok(once instanceof ArrayBuffer);
  assert.equal(once.byteLength, 64);
  assert.equal(make(at(v), 64), null);
  assert.equal(make(at(v), 8), null);
  assert.equal(liveCells(), base + 1n);
  once.transfer(0); // its deleter: the one release
  assert.equal(liveCells(), base);
  // Where the companion cannot be loaded: null, and why.
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(cellsBuffersFor(`${dir}/libkcoro.so`), null);
    assert.match(
      cellsBuffersProblem()!,
      new RegExp(
        `^Cannot make cells buffers: cannot load the Node-API companion ${dir}/kcoro_napi\\.node `,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

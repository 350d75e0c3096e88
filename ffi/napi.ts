/**
 * kcoro's Node-API companion (`kcoro_napi.node`, built from zig-src/napi/addon.zig beside the
 * library): ArrayBuffers over buffer-pool chunks that give the chunk back to the pool when no
 * ArrayBuffer can reach its memory any more (a V8 backing-store deleter, which Deno exposes
 * only through Node-API). Detaching such a buffer (`buffer.transfer(0)`) gives the chunk back
 * at once; a user's same-length `transfer()` moves the chunk with the backing store, and it
 * comes back when the moved buffer is garbage.
 *
 * Loaded lazily (first call) and once per isolate, with `process.dlopen`: it needs
 * `--allow-ffi` and `--allow-read` (as the library does), and works in Workers. When it cannot
 * be loaded (not built, no permission, another platform), {@linkcode chunkBuffers} is null and
 * {@linkcode chunkBuffersProblem} says why. Internal (mod.ts does not export it).
 *
 * @module
 */
import process from "node:process";
import { absolutePath, libraryPathOf } from "./load.ts";
import { describe } from "../src/errors.ts";

/** The companion's file name, installed next to the library (zig-out/lib). */
export const ADDON_FILE_NAME = "kcoro_napi.node";

/**
 * Chunk buffers of one library's pool. `counts` is shared by every isolate of the process: add
 * 1 to `counts[slot]` for each pooled value viewed through that slot's buffer (plain writes, from
 * this isolate only, while the buffer is attached); when the buffer's backing store is freed,
 * that many of the chunk's slices are given back (`kc_pool_release`) and the entry zeroed.
 */
export interface ChunkBuffers {
  /**
   * An ArrayBuffer over `[address, address + length)`, which must lie within one chunk of the
   * pool, and its slot; null when the process-wide table of 65,536 slots is full (or the
   * range is not in one chunk): make the buffer another way.
   */
  create(address: number, length: number): { buffer: ArrayBuffer; slot: number } | null;
  /** Views counted per slot (65,536 entries, process-wide). */
  readonly counts: Uint32Array;
  /**
   * Process-wide counters, for tests: [0] finaliser releases that succeeded, [1] releases the
   * pool refused (a miscount), [2] finalisers run, [3] slots in use.
   */
  readonly stats: Uint32Array;
}

/** What the addon's module exports (zig-src/napi/addon.zig). */
export interface Addon {
  bind(path: string): number;
  create(address: number, length: number): ArrayBuffer | number;
  counts: Uint32Array;
  out: Int32Array;
  stats: Uint32Array;
  /** Cells buffers (`cellsBuffersFor`); not checked by `bindAddon`, which chunk buffers use. */
  cells?(address: number, length: number): ArrayBuffer | number;
  /**
   * Makes `cells` ask the library's registry of live blocks first (`cellsBuffersFor`): 0, or a
   * negative `bind` status. Absent from a companion older than it.
   */
  bindCells?(path: string): number;
}

/** The companion's exports, in `Addon`'s order: each's name, its kind as said, its check. */
const ADDON_EXPORTS: readonly (readonly [
  key: keyof Addon,
  kind: string,
  ok: (x: unknown) => boolean,
])[] = [
  ["bind", "a function", (x) => typeof x === "function"],
  ["create", "a function", (x) => typeof x === "function"],
  ["counts", "a Uint32Array", (x) => x instanceof Uint32Array],
  ["out", "an Int32Array", (x) => x instanceof Int32Array],
  ["stats", "a Uint32Array", (x) => x instanceof Uint32Array],
];

/** Per library path: this isolate's chunk buffers, or why there are none. */
const byPath = new Map<string, ChunkBuffers | string>();
let problem: string | null = null;

/** `bind`'s negative results (BindError in addon.zig), as the reason. */
const BIND_ERRORS: Record<number, string> = {
  [-1]: "the library path is empty, too long or holds a NUL",
  [-2]: "the library is not loaded in this process",
  [-3]: "the library lacks kc_pool_release or kc_pool_info",
  [-4]: "the library has no buffer pool",
  [-5]: "this process bound the companion to another copy of the library already",
};

/**
 * The chunk buffers of the library whose `symbols()` object is `sym` (see
 * {@linkcode chunkBuffersFor}); null if it is not a library's or the companion is unavailable.
 */
export function chunkBuffers(sym: object): ChunkBuffers | null {
  const path = libraryPathOf(sym);
  if (path === undefined) {
    // The house form, "Cannot <op>: <reason>, received <x>" (it said "kcoro: no chunk
    // buffers: ...").
    problem = "Cannot make chunk buffers: these symbols are not an open kcoro library's, " +
      `received ${describe(sym)}`;
    return null;
  }
  return chunkBuffersFor(path);
}

/**
 * The chunk buffers of the library opened (`Deno.dlopen`, already) from `libraryPath`: the
 * companion next to it, loaded into this isolate and bound to that library on the first call.
 * A relative `libraryPath` is taken from the current directory now, as `Library.path` is made
 * absolute when the library is opened: the companion is loaded by an absolute path, and a
 * `Deno.chdir` later makes the same string name another library, not this one's entry again.
 * Null, with the reason in {@linkcode chunkBuffersProblem}, when it cannot be loaded or bound.
 */
export function chunkBuffersFor(libraryPath: string): ChunkBuffers | null {
  // Before, "libkcoro.so" loaded "./kcoro_napi.node" from wherever the process was at the
  // first call, and its entry answered for that string in any directory after.
  const path = typeof libraryPath === "string" && libraryPath !== ""
    ? absolutePath(libraryPath)
    : libraryPath;
  let got = byPath.get(path);
  if (got === undefined) {
    got = load(path);
    byPath.set(path, got);
  }
  if (typeof got === "string") {
    problem = got;
    return null;
  }
  return got;
}

/** Why the last {@linkcode chunkBuffers} or {@linkcode chunkBuffersFor} call gave null. */
export function chunkBuffersProblem(): string | null {
  return problem;
}

/** The companion's path next to the library at `libraryPath`. */
export function addonPathFor(libraryPath: string): string {
  const cut = Math.max(libraryPath.lastIndexOf("/"), libraryPath.lastIndexOf("\\"));
  return cut < 0 ? ADDON_FILE_NAME : libraryPath.slice(0, cut + 1) + ADDON_FILE_NAME;
}

function load(libraryPath: string): ChunkBuffers | string {
  const mod = loadModule(libraryPath, "chunk buffers");
  if (typeof mod === "string") return mod;
  return bindAddon(addonPathFor(libraryPath), libraryPath, mod);
}

/**
 * Per absolute library path: the companion's exports loaded beside it into this isolate, or
 * why not (a reason that `loadModule` words for the chunk buffers' or the cells' operation).
 * Loaded once per isolate: each load runs the module's registration again.
 */
const modules = new Map<string, Partial<Addon> | Unloaded>();

/** Why the companion could not be loaded (`modules`), without the operation's words. */
class Unloaded {
  constructor(readonly why: string) {}
}

/** The companion's module beside `libraryPath` (absolute), loaded at the first call. */
function loadModule(libraryPath: string, what: string): Partial<Addon> | string {
  let got = modules.get(libraryPath);
  if (got === undefined) {
    got = loadModuleNow(libraryPath);
    if (typeof libraryPath === "string" && libraryPath !== "") modules.set(libraryPath, got);
  }
  return got instanceof Unloaded ? `Cannot make ${what}: ${got.why}` : got;
}

function loadModuleNow(libraryPath: string): Partial<Addon> | Unloaded {
  if (typeof libraryPath !== "string" || libraryPath === "") {
    return new Unloaded(
      `the library path must be a non-empty string, received ${describe(libraryPath)}`,
    );
  }
  const file = addonPathFor(libraryPath);
  if (!(Deno.build.os === "windows" ? /^([A-Za-z]:)?[\\/]/ : /^\//).test(file)) {
    // absolutePath left it relative: the current directory could not be read. A relative one
    // is resolved against wherever the process is when the system loads it, so refused.
    return new Unloaded(
      `the library path must be absolute (the current directory to resolve it against ` +
        `cannot be read), received ${describe(libraryPath)}`,
    );
  }
  const mod = { exports: {} as Partial<Addon> };
  try {
    process.dlopen(mod, file);
  } catch (e) {
    return new Unloaded(
      `cannot load the Node-API companion ${file} (built by \`zig build\` next to the ` +
        `library; needs --allow-ffi and --allow-read), received ${
          e instanceof Error ? `${e.name}: ${e.message}` : describe(e)
        }`,
    );
  }
  return mod.exports;
}

/**
 * Makes an ArrayBuffer over `length` bytes of cells `kc_cells_alloc` returned at `address`,
 * whose V8 backing-store deleter calls `kc_cells_release`: once no ArrayBuffer views the memory,
 * the original or one it was transferred to (a same-length `transfer()` or a `postMessage`
 * transfer list moves the backing store), also at the isolate's disposal; the block's pins
 * (`kc_cells_pin`) hold the free off while a coroutine may write. Null when the companion did
 * not make one (the caller releases the block itself).
 */
export type CellsBuffers = (address: number, length: number) => ArrayBuffer | null;

/** Per absolute library path: this isolate's cells buffers, or why there are none. */
const cellsByPath = new Map<string, CellsBuffers | string>();
let cellsProblem: string | null = null;

/**
 * The cells buffers for cells of the library opened from `libraryPath`, the companion loaded
 * beside it (a block's header names its release; `bindCells` only makes the check of an
 * address cheaper); null, with the reason in
 * {@linkcode cellsBuffersProblem}, when it cannot be loaded (not built, no permission, Windows)
 * or is not kcoro's (it lacks `cells`).
 */
export function cellsBuffersFor(libraryPath: string): CellsBuffers | null {
  const path = typeof libraryPath === "string" && libraryPath !== ""
    ? absolutePath(libraryPath)
    : libraryPath;
  let got = cellsByPath.get(path);
  if (got === undefined) {
    const mod = loadModule(path, "cells buffers");
    got = typeof mod === "string" ? mod : bindCellsAddon(addonPathFor(path), path, mod);
    if (typeof path === "string" && path !== "") cellsByPath.set(path, got);
  }
  if (typeof got === "string") {
    cellsProblem = got;
    return null;
  }
  return got;
}

/**
 * @ignore The cells buffers of `addon`, the exports of the module loaded from `file`, bound to
 * the library at `libraryPath` where it can be (`bindCells`, optional: a status it returns only
 * leaves the headers copied out); else why not, in the house form: a module that is not kcoro's
 * companion (its `cells` no function, its `bindCells` one that throws). Apart from
 * `cellsBuffersFor` so that tests/napi_test.ts can give it exports no real module has.
 */
export function bindCellsAddon(
  file: string,
  libraryPath: string,
  addon: Partial<Addon>,
): CellsBuffers | string {
  const not = `Cannot make cells buffers: ${file} is not kcoro's Node-API companion`;
  const make = addon.cells;
  if (typeof make !== "function") {
    return `${not} (its cells must be a function), received a module whose cells is ${
      describe(make)
    }`;
  }
  // Its own blocks (nearly all) looked up in the library's registry, not copied out with a
  // system call each (process_vm_readv: that stays for another copy's blocks). Bound once per
  // process, to the first library asked for; a failure (a companion without it, one bound to
  // another library) leaves every header copied out, as before: slower, as right. A throw is
  // no companion's (kcoro's returns a status): before, it left cellsBuffersFor, and
  // runtime().cells(), with the module's raw error.
  try {
    const bind = addon.bindCells;
    if (typeof bind === "function") bind.call(addon, libraryPath);
  } catch (e) {
    return `${not} (its bindCells threw), received ${thrown(e)}`;
  }
  return (address, length) => {
    const r = make.call(addon, address, length);
    return typeof r === "number" ? null : r;
  };
}

/** A thrown value in a message: an Error's name and message, anything else described. */
function thrown(e: unknown): string {
  try {
    return e instanceof Error ? `${e.name}: ${e.message}` : describe(e);
  } catch {
    return "a value whose description threw";
  }
}

/** Why the last {@linkcode cellsBuffersFor} call gave null. */
export function cellsBuffersProblem(): string | null {
  return cellsProblem;
}

/**
 * @ignore The chunk buffers of `addon`, the exports of the module loaded from `file`, bound to
 * the library at `libraryPath`; else why not, in the house form: a module that is not kcoro's
 * companion (the exports it lacks named, else the first of the wrong kind and what it is), or a
 * bind it refused (its status named). Apart from `load` so that tests/napi_test.ts can give it
 * exports no real module has.
 */
export function bindAddon(
  file: string,
  libraryPath: string,
  addon: Partial<Addon>,
): ChunkBuffers | string {
  // Each export read once, and named when it is missing or of the wrong kind: the message said
  // "it lacks bind, create, counts, out or stats" also for an `out` that was a Uint32Array.
  const got = ADDON_EXPORTS.map(([key]) => (addon as Record<string, unknown>)[key]);
  const not = `Cannot make chunk buffers: ${file} is not kcoro's Node-API companion`;
  const missing = ADDON_EXPORTS.filter((_, i) => got[i] === undefined).map(([key]) => key);
  if (missing.length > 0) {
    // What was received is the module: named by its exports (it said "received exports a, b").
    const lacks = missing.length === 1
      ? missing[0]
      : `${missing.slice(0, -1).join(", ")} and ${missing.at(-1)}`;
    return `${not} (it lacks ${lacks}), received a module exporting ${
      Object.keys(addon).join(", ") || "nothing"
    }`;
  }
  const wrong = ADDON_EXPORTS.findIndex(([, , ok], i) => !ok(got[i]));
  if (wrong >= 0) {
    const [key, kind] = ADDON_EXPORTS[wrong];
    return `${not} (its ${key} must be ${kind}), received a module whose ${key} is ${
      describe(got[wrong])
    }`;
  }
  const [bind, make, counts, out, stats] = got as [
    Addon["bind"],
    Addon["create"],
    Uint32Array,
    Int32Array,
    Uint32Array,
  ];
  let rc: number;
  try {
    rc = bind.call(addon, libraryPath); // as the module's method, as before
  } catch (e) {
    // No companion's (kcoro's returns a status): before, the module's raw error left
    // chunkBuffersFor.
    return `${not} (its bind threw), received ${thrown(e)}`;
  }
  if (rc !== 0) {
    // Own keys only: a status is no key of Object.prototype's ("constructor").
    const why = Object.hasOwn(BIND_ERRORS, rc) ? BIND_ERRORS[rc] : "an error bind does not name";
    return `Cannot make chunk buffers: cannot bind ${file} to ${libraryPath}: ${why}, ` +
      `received bind status ${describe(rc)}`;
  }
  return {
    create(address: number, length: number): { buffer: ArrayBuffer; slot: number } | null {
      const buffer = make(address, length);
      return typeof buffer === "number" ? null : { buffer, slot: out[0] };
    },
    counts,
    stats,
  };
}

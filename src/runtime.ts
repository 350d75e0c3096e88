/**
 * The native scheduler: worker threads running native coroutines, shared by every isolate in
 * the process. `runtime()` starts it (or returns the running one); `spawn` runs a native
 * C-ABI function or a built-in on it; `drain` resolves when nothing is runnable, running or
 * sleeping; `shutdown` stops it.
 *
 * @module
 */
import {
  beforeClose,
  inWorker,
  isLibraryOpen,
  type Library,
  library,
  librarySymbols,
  loadedIdOf,
  symbolsToReleaseOf,
} from "../ffi/load.ts";
import {
  checkOptionNames,
  checkReadable,
  checkStackSize,
  cutShort,
  describe,
  givenUpBy,
  isAborted,
  isRevoked,
  KcoroError,
  LibraryClosedError,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  refuseSyncDispose,
  ShutdownError,
  signalOf,
  Status,
  unwrap,
} from "./errors.ts";
import { isDetached, onResizable, typedBuffer, typedLength } from "./pack.ts";
import { cellsBuffersFor } from "../ffi/napi.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";

/** How long one native wait of `drain()` may block before it looks again. */
const DRAIN_SLICE_NS = 100_000_000n;
/**
 * The longest pause of `drain()` between rounds on a scheduler that ran dry but reads as not
 * running while still its own (another host's finish under way, a C caller's timed shutdown
 * that gave up with `KC_EBUSY`).
 */
const DRAIN_PAUSE_MAX_MS = 50;
/**
 * How long a drain settled by a finish elsewhere goes on waiting for that finish's join once the
 * library closed (`#parkedOnceJoined`): as long as the close's own shutdown waits for its
 * workers (ffi/load.ts, `CLOSE_JOIN_NS`, 2 s).
 */
const JOIN_AFTER_CLOSE_MS = 2_000;

/** Options for {@linkcode runtime}. */
export interface RuntimeOptions {
  /** Worker threads, at most 1024 (0, the default: one per CPU). */
  workers?: number;
  /** Stack size of every spawned coroutine in bytes: 0 for 64 KiB, else 16 KiB to 256 MiB. */
  stackSize?: number;
  /** Save FP control state on every switch of spawned coroutines. */
  fpControl?: boolean;
  /** Take stacks from shared slabs (a million coroutines fit; see README, Stacks). */
  slabStacks?: boolean;
}
/** RuntimeOptions' names: any other own key is refused (`checkOptionNames`). */
const RUNTIME_OPTIONS = optionNames<RuntimeOptions>({
  workers: true,
  stackSize: true,
  fpControl: true,
  slabStacks: true,
});

/** kcoro.h's KC_SHUTDOWN_CANCEL and KC_SHUTDOWN_FINISH: kc_sched_shutdown's modes, and what
 * kc_sched_ended says a scheduler run ended as. */
const SHUTDOWN_CANCEL = 0, SHUTDOWN_FINISH = 1;

/** How {@linkcode Runtime.shutdown} treats unfinished coroutines. */
export type ShutdownMode = "cancel" | "finish";

/**
 * Built-in scheduled entries. Each takes a `BigUint64Array` of cells:
 * - `"sleeper"`: `[milliseconds, done]`: sleeps, then adds 1 to `done` (abandoned by a
 *   `"cancel"` shutdown, `done` stays as it was: it did not sleep its time);
 * - `"skynet"`: `[leaves, result]`: a 10-ary tree of coroutines summing `0..leaves-1`
 *   (`leaves` a power of 10; for another count each node splits its integer tenth ten ways,
 *   a smaller tree's sum); one whose spawns a shutdown meets (or that runs out of stacks)
 *   stops spawning and leaves `result` as it was, a short sum being none;
 * - `"spin"`: `[rounds, done]`: CPU-bound work, then adds 1 to `done`;
 * - `"cancellable-sleeper"`: `[milliseconds, done, status]`: sleeps, ending early when the
 *   native scope it runs in is cancelled; then `status` = 0 or `Status.EINTR` (read it with
 *   `BigInt.asIntN(64, cells[2])`) and `done` = 1; abandoned in its sleep by a `"cancel"`
 *   shutdown, `status` = `Status.ESHUTDOWN` and `done` = 1;
 * - `"receiver"`: `[channel handle, done, status]`: receives one value (discarded) from a
 *   channel that is not zero-copy (e.g. `codecs.u64`); `status` 0, `Status.EINTR` (its native
 *   scope was cancelled), `EPIPE`, `ECANCELED` or `EBADH`, then `done` = 1; abandoned in its
 *   receive by a shutdown (a `"cancel"`, or a `"finish"` that leaves it parked), `ESHUTDOWN`
 *   (and `done` = 1);
 * - `"cancel-scope"`: `[unused, done, status]`: cancels the native scope it runs in, as C code
 *   calling `kc_scope_cancel` would; `status` 1 if it did, 0 if it was cancelled already;
 * - `"read-deadline"`: `[deadline, done, status]`: writes the deadline its native scope's
 *   context carries (`kc_now_ns` clock; 0 for none) into cell 0;
 * - `"chanSender"`: `[channel handle, first, count, sent, done]`: sends the u64 values
 *   `first .. first+count-1` (at most up to 2^64 - 1) to a channel of 8-byte elements
 *   (`codecs.u64`), adding 1 to `sent` for each, stopping at the first send that fails (the
 *   channel closed or destroyed, a handle that names no channel, or a channel whose elements
 *   are not 8 bytes: a default-codec one refuses every send, so `sent` stays 0); then adds 1 to
 *   `done`, also when a `"cancel"` shutdown abandons it;
 * - `"echo"`: `[in channel, out channel, echoed, done]`: receives each value of `in` (8-byte
 *   elements) and sends it to `out`, adding 1 to `echoed`, until either fails; then `done` = 1.
 *   The value it holds when its send to `out` fails goes to `out`'s undelivered path once
 *   (counted as dropped there). Abandoned by a `"cancel"` shutdown (in a wait or at a turn),
 *   `done` = 1 too once the shutdown has settled.
 *
 * `"spin"`, `"chanSender"` and `"echo"`, whose loops may never park (an echo whose `in` is its
 * own conflated `out`, a chanSender to a drop-policy channel), yield to the scheduler now and
 * then (a spin every 2^20 rounds, the others every 256 values), so other coroutines get their
 * turn, and stop there once a cancelling shutdown has begun (a `"finish"` one's drain waits
 * for them, as for any coroutine, until a `"cancel"` cuts it short): a spin leaves `done` as it
 * was, the others end as when a send fails (the echo with no value in hand), or are abandoned
 * at the yield. A chanSender or echo launched into a native scope also ends so there once the
 * scope is cancelled (its channel operations that never wait do not see the cancellation), and
 * a spin stops there, `done` as it was; all three stop there the same way once their context
 * deadline (a `withTimeout`'s, a hand-set `Deadline`) has passed.
 */
export type ScheduledBuiltin =
  | "sleeper"
  | "skynet"
  | "spin"
  | "cancellable-sleeper"
  | "receiver"
  | "cancel-scope"
  | "chanSender"
  | "read-deadline"
  | "echo";

/** Each built-in's id (`KC_BUILTIN_*`) and how many cells it needs. */
const builtinIds: Record<ScheduledBuiltin, readonly [number, number]> = {
  "sleeper": [4, 2],
  "skynet": [5, 2],
  "spin": [6, 2],
  "cancellable-sleeper": [7, 3],
  "receiver": [8, 3],
  "cancel-scope": [9, 3],
  "chanSender": [10, 5],
  "read-deadline": [11, 3],
  "echo": [12, 4],
};

/**
 * The cells native coroutines write into, kept reachable here (not by a Runtime or NativeScope
 * object, which may be dropped while its coroutines run):
 * - a built-in's by the handle of the coroutine writing into them, let go once that handle is
 *   stale (a built-in writes only from its own coroutine), checked whenever the map doubles;
 * - a `NativeFunction`'s launched in a native scope by that scope's handle, let go once the
 *   scope has no child left (it counts every coroutine its children `kc_spawn`, which may have
 *   been handed the cells), checked before the scope's next NativeFunction launch, whenever the
 *   map doubles, and when the scope is destroyed;
 * - a `NativeFunction`'s spawned free-standing (`Runtime.spawn`) until a drain finds no
 *   coroutine live (a parked one may still write into its cells when it is woken, and one it
 *   spawned after it returned, which nothing tracks) or shutdown: once each, however often
 *   spawned.
 */
interface Pins {
  list: Set<BigUint64Array>;
  byHandle: Map<number, BigUint64Array>;
  pruneAt: number;
  byScope: Map<number, Set<BigUint64Array>>;
  scopesPruneAt: number;
}

/**
 * The pins, per loaded library (`loadedIdOf`, the same for each open of one file): a
 * handle names a coroutine or scope of its own library only, and each copy has its scheduler.
 * They were module-wide: with two copies loaded (another file, a second `KCORO_LIB`), one's
 * shutdown or drain let go of the cells the other's coroutines wrote into, and its prune read
 * the other's handles as stale.
 */
const pinsByLib = new Map<number, Pins>();

/** The pins of `lib`'s loaded library, made at first use (and anew after `unpinAll`). */
function pinsOf(lib: Library): Pins {
  let pins = pinsByLib.get(loadedIdOf(lib));
  if (pins === undefined) {
    pins = {
      list: new Set(),
      byHandle: new Map(),
      pruneAt: PRUNE_MIN,
      byScope: new Map(),
      scopesPruneAt: PRUNE_MIN,
    };
    pinsByLib.set(loadedIdOf(lib), pins);
  }
  return pins;
}

/**
 * Before `cells` is pinned for a coroutine of `lib`: the exit guard, for cells the isolate's
 * disposal frees (a caller's own `SharedArrayBuffer`) only. `runtime().cells` are native
 * memory, which the disposal leaves alone: a program using only those never installs the
 * guard, nor depends on its detection of Deno's fatal dispatch by frame names.
 */
function guardCells(lib: Library, cells: BigUint64Array): void {
  if (!nativeCells.has(typedBuffer(cells))) guardExit(lib);
}

/** @ignore Whether the exit guard watches `lib` (`guardExit`; tests). */
export function _exitGuarded(lib: Library): boolean {
  return exitGuarded.has(lib);
}

/** @ignore Where `kc_spawn` / `kc_scope_launch` write a built-in's coroutine handle. */
export const handleOut = new Uint32Array(1);

/** @ignore Keeps `cells` reachable for coroutine `handle` (0: a NativeFunction's; above). */
export function pinCells(lib: Library, handle: number, cells: BigUint64Array): void {
  guardCells(lib, cells);
  const pins = pinsOf(lib);
  if (handle === 0) {
    listPin(lib, pins, cells);
    return;
  }
  // A finished coroutine's, not pruned yet, whose handle came back (its slot's generation wrapped,
  // after ~523,000 frees of its kind: zig-src/handle.zig): replaced, its native pin given back.
  const had = pins.byHandle.get(handle);
  pins.byHandle.set(handle, cells);
  pinNative(lib, cells, 1);
  if (had !== undefined) pinNative(lib, had, -1);
  if (pins.byHandle.size < pins.pruneAt) return;
  const sym = librarySymbols(lib, "spawn coroutine");
  for (const [h, c] of pins.byHandle) {
    const state = sym.kc_coro_state(h);
    if (state < 0 || state === FINISHED) {
      pins.byHandle.delete(h);
      pinNative(lib, c, -1);
    }
  }
  pins.pruneAt = Math.max(PRUNE_MIN, 2 * pins.byHandle.size);
}

/** @ignore Keeps a NativeFunction's `cells` reachable while native scope `scope` has children. */
export function pinScoped(lib: Library, scope: number, cells: BigUint64Array): void {
  guardCells(lib, cells);
  const pins = pinsOf(lib);
  let set = pins.byScope.get(scope);
  if (set === undefined) pins.byScope.set(scope, set = new Set());
  if (!set.has(cells)) {
    set.add(cells);
    pinNative(lib, cells, 1);
  }
  if (pins.byScope.size < pins.scopesPruneAt) return;
  const sym = librarySymbols(lib, "launch native coroutine");
  for (const h of [...pins.byScope.keys()]) scopeDone(lib, pins, h, sym.kc_scope_live(h));
  pins.scopesPruneAt = Math.max(PRUNE_MIN, 2 * pins.byScope.size);
}

/**
 * @ignore Before a NativeFunction launch into `scope`: what it pinned goes if no child of it
 * runs now (a scope launched into, waited for, and launched into again keeps one launch's cells).
 */
export function unpinIdleScope(lib: Library, scope: number): void {
  const pins = pinsOf(lib);
  const set = pins.byScope.get(scope);
  if (set === undefined || set.size === 0) return;
  scopeDone(lib, pins, scope, librarySymbols(lib, "launch native coroutine").kc_scope_live(scope));
}

/**
 * @ignore Native scope `scope` is about to be destroyed: its pins go if it has no child left,
 * else to the free-standing list (its handle goes stale, and its children may still run).
 */
export function unpinScope(lib: Library, scope: number): void {
  const pins = pinsOf(lib);
  if (!pins.byScope.has(scope)) return;
  // Also once the library was closed (it stays loaded): its children may run on then only if
  // another isolate keeps the scheduler, and the count says so.
  scopeDone(lib, pins, scope, symbolsToReleaseOf(lib).kc_scope_live(scope));
  const left = pins.byScope.get(scope);
  if (left === undefined) return;
  // Each moves with its native pin; one the list holds already gives its second pin back.
  for (const cells of left) {
    if (pins.list.has(cells)) pinNative(lib, cells, -1);
    else pins.list.add(cells);
  }
  pins.byScope.delete(scope);
}

/** Lets a scope's pins go when `live` (its kc_scope_live) says no child is left. */
function scopeDone(lib: Library, pins: Pins, scope: number, live: number): void {
  // Negative: a stale handle, destroyed by other code while children may run: kept.
  if (live !== 0) return;
  const set = pins.byScope.get(scope);
  pins.byScope.delete(scope);
  if (set !== undefined) { for (const cells of set) pinNative(lib, cells, -1); }
}

/** Lets go of every pin of `lib`'s loaded library (nothing of its scheduler writes now). */
function unpinAll(lib: Library): void {
  const pins = pinsByLib.get(loadedIdOf(lib));
  // The next pinsOf makes them anew, with the prune sizes at their least.
  pinsByLib.delete(loadedIdOf(lib));
  if (pins === undefined) return;
  for (const cells of pins.list) pinNative(lib, cells, -1);
  for (const cells of pins.byHandle.values()) pinNative(lib, cells, -1);
  for (const set of pins.byScope.values()) for (const cells of set) pinNative(lib, cells, -1);
}

/** `pins.list` holds `cells` from now on (once, however often spawned), with a native pin. */
function listPin(lib: Library, pins: Pins, cells: BigUint64Array): void {
  if (pins.list.has(cells)) return;
  pins.list.add(cells);
  pinNative(lib, cells, 1);
}

/**
 * Adds `delta` to the native pins (`kc_cells_pin`) of the block under `cells`, if it is one the
 * companion's buffers release (`nativeCells`): each place of `Pins` that holds an array holds
 * one pin of its block, so that a release by the buffer's backing-store deleter (which also runs
 * at the isolate's disposal, and after the buffer was transferred and dropped) never frees cells
 * a coroutine may still write into. Keyed by the array's own buffer: a detached one (its memory
 * transferred) is still the key. `symbolsToReleaseOf`: also once the library was closed (it stays
 * loaded); any loaded copy's call does (the block's header names its own free).
 */
function pinNative(lib: Library, cells: BigUint64Array, delta: number): void {
  const block = nativeCells.get(typedBuffer(cells));
  if (block === undefined || block === null) return;
  const rc = symbolsToReleaseOf(lib).kc_cells_pin(block, delta);
  // An unpin of a pin never taken, or 2^32 - 1 pins: this module's own miscount.
  if (rc !== 0) throw new Error(`kcoro: kc_cells_pin(${delta}) failed (${rc}): a miscount`);
}

/** @ignore Whether `lib`'s scheduler runs (kc_sched_info's running flag). */
export function schedulerRunning(lib: Library): boolean {
  if (!isLibraryOpen(lib)) return false;
  const info = new BigUint64Array(4);
  librarySymbols(lib, "read runtime info").kc_sched_info(info, 4);
  return info[3] === 1n;
}

/**
 * Whether every scheduler `lib` started has ended: none runs, and the latest is not still
 * shutting down (kc_sched_info reads "not running" then, while a finish still runs its
 * coroutines, which write into their cells: a shutdown of an older Runtime settling then let go
 * of them). Also once the library was closed (it stays loaded, and another isolate may keep
 * its scheduler).
 */
function allEnded(lib: Library): boolean {
  const sym = symbolsToReleaseOf(lib);
  const info = new BigUint64Array(7);
  sym.kc_sched_info(info, 7);
  return info[3] === 0n && sym.kc_sched_ended(info[6]) !== Status.EBUSY;
}

/**
 * The libraries whose coroutines this isolate pinned a caller's `SharedArrayBuffer` cells for
 * (the main isolate's only: `guardExit`).
 */
const exitGuarded = new Set<Library>();

/** Whether a `beforeunload` was dispatched: the event loop ran out of work (`guardExit`). */
let loopEnded = false;

/**
 * In the main isolate, once it pinned a caller's own `SharedArrayBuffer` cells for `lib`'s
 * coroutines (`guardCells`; `runtime().cells` are native memory, which needs none of this): a
 * process whose event loop ran out of work while `lib`'s scheduler still runs shuts it down
 * (cancel) at `unload`, after every other `unload` listener (`exitAtUnload`). Deno disposes the
 * main isolate before it exits, which frees its heap, the `SharedArrayBuffer` cells included, while
 * the scheduler's threads run on, so a coroutine still running wrote into freed memory: the C
 * library's heap corrupted, and the exit ended in SIGABRT or SIGSEGV, or hung in `malloc` for good
 * (running `"chanSender"`s, about one exit in five here). `Deno.exit()` ends the process without
 * that disposal, so a process ending by the caller's own `Deno.exit()` needs nothing
 * (`beforeunload` is not dispatched then, and the listener leaves the exit to it). A Worker takes
 * native cells only, so a Worker needs none of this. An uncaught error or unhandled rejection
 * ends the process through the disposal without an `unload`: `exitAtFatal` stops the schedulers
 * there (README, "The scheduler from TypeScript").
 */
function guardExit(lib: Library): void {
  if (inWorker || exitGuarded.has(lib)) return;
  if (exitGuarded.size === 0) {
    // Put back last at each `beforeunload` (dispatched before `unload`), so that the listeners
    // added after the first spawn run too: `Deno.exit()` ends the dispatch.
    addEventListener("beforeunload", () => {
      loopEnded = true;
      removeEventListener("unload", exitAtUnload);
      addEventListener("unload", exitAtUnload);
    });
    addEventListener("unload", exitAtUnload);
    // An uncaught error or unhandled rejection skips `unload`: Deno reads the event's
    // `defaultPrevented` after its listeners ran and, when false, ends the process through the
    // same disposal (`exitAtFatal`).
    addEventListener("error", exitAtFatal);
    addEventListener("unhandledrejection", exitAtFatal);
  }
  exitGuarded.add(lib);
}

/** `Event.prototype`'s `defaultPrevented` getter, which `exitAtFatal`'s own getter reads. */
const realDefaultPrevented = Object.getOwnPropertyDescriptor(
  Event.prototype,
  "defaultPrevented",
)!.get!;

/**
 * Deno's own frames that dispatch an event whose default action ends the process: the uncaught
 * error's (and `reportError`'s) and the unhandled rejection's (Deno 2.9.6, ext:deno_web and
 * ext:runtime_main). A caller's own `dispatchEvent` of an `error` event has neither.
 */
const FATAL_DISPATCH = /\bat (?:reportException|processUnhandledPromiseRejection) \(ext:/;

/**
 * `guardExit`'s `error` and `unhandledrejection` listener. A listener cannot know whether one
 * after it calls `preventDefault()` (which keeps the process alive), and nothing it queues runs
 * before the exit (no microtask, no timer), so it gives the event its own `defaultPrevented`
 * getter instead: Deno reads it once the dispatch is done (`eventPhase` back to NONE), and when
 * the event was not prevented and Deno's own dispatch reads it, the process is about to end
 * through the isolate's disposal, so the schedulers stop first, as at `unload`. A caller's
 * listener that reads `defaultPrevented` during the dispatch, or a caller's own `dispatchEvent`,
 * stops nothing. A listener before it that calls `stopImmediatePropagation()` leaves the exit
 * unguarded (README, "The scheduler from TypeScript").
 */
function exitAtFatal(ev: Event): void {
  if (Object.hasOwn(ev, "defaultPrevented")) return;
  const get = function (this: Event): boolean {
    const prevented = realDefaultPrevented.call(this) as boolean;
    if (!prevented && this.eventPhase === Event.NONE && fatalDispatch()) stopSchedulers();
    return prevented;
  };
  // `Reflect`, not `Object.defineProperty`: a caller's earlier listener that made the event
  // non-extensible (`Object.preventExtensions`, `Object.seal`; a frozen one makes Deno's own
  // dispatch throw) made the definition throw here, inside the dispatch, in place of the
  // caller's error, and the stop was lost (SIGABRT). Such an event gets the getter on its
  // prototype instead, for that event only and until Deno's read after the dispatch; where that
  // fails too (a frozen prototype: a lockdown), the exit goes unguarded.
  if (Reflect.defineProperty(ev, "defaultPrevented", { configurable: true, get })) return;
  const proto: object | null = Object.getPrototypeOf(ev);
  if (proto === null || Object.hasOwn(proto, "defaultPrevented")) return;
  Reflect.defineProperty(proto, "defaultPrevented", {
    configurable: true,
    get(this: Event): boolean {
      if (this !== ev) return realDefaultPrevented.call(this) as boolean;
      if (this.eventPhase === Event.NONE) Reflect.deleteProperty(proto, "defaultPrevented");
      return get.call(this);
    },
  });
}

/** Whether Deno's own fatal dispatch is on the stack (`FATAL_DISPATCH`). */
function fatalDispatch(): boolean {
  // A caller's `Error.prepareStackTrace` would run here, inside Deno's fatal path, and its text
  // need not name the frames (the stop was lost: 6 runs in 6 ended in SIGABRT): Deno's own
  // formatting is used for this one capture. `Reflect` and not assignments: a caller's frozen
  // `Error` (a lockdown) made the assignment throw here, in place of the caller's error.
  const limit = Error.stackTraceLimit;
  const had = Object.hasOwn(Error, "prepareStackTrace");
  const prepare = Reflect.get(Error, "prepareStackTrace");
  Reflect.set(Error, "stackTraceLimit", 16); // the caller's may hide the frames (4 deep here)
  Reflect.set(Error, "prepareStackTrace", undefined);
  try {
    return FATAL_DISPATCH.test(String(new Error().stack ?? ""));
  } finally {
    Reflect.set(Error, "stackTraceLimit", limit);
    if (had) Reflect.set(Error, "prepareStackTrace", prepare);
    else Reflect.deleteProperty(Error, "prepareStackTrace");
  }
}

/** `guardExit`'s `unload` listener: stops the schedulers still running before the disposal. */
function exitAtUnload(): void {
  if (!loopEnded) return; // the caller's Deno.exit(), which disposes nothing
  stopSchedulers();
}

/** Shuts down (cancel, synchronous) the guarded schedulers still running (`guardExit`). */
function stopSchedulers(): void {
  let running = false;
  for (const lib of exitGuarded) {
    try {
      running ||= !allEnded(lib);
    } catch {
      running = true; // unknown: the safe side
    }
  }
  if (!running) return;
  // Stop the schedulers before Deno disposes the isolate, keeping Deno's own teardown (its
  // exit code, later `unload` listeners, Node's `process.on("exit")`, and under `deno test`
  // the next test file): a cancelling shutdown, synchronous, since the event loop no longer
  // runs and the cells must outlive the join of the workers (kc_sched_ended, which allEnded
  // reads, is known before that join, while a worker may still run a coroutine's last slice).
  // Bounded (`EXIT_JOIN_NS`): a coroutine that never yields (C code of the caller's) kept the
  // exit waiting for good; past the bound the scheduler is stopped but that worker not joined
  // (kc_sched_shutdown_timed's KC_ETIME), and the exit goes on (README, "The scheduler from
  // TypeScript"). Past KC_EBUSY too (another thread's short call stayed inside past the bound:
  // nothing stopped), as the process ends with the worker threads running either way.
  for (const lib of exitGuarded) {
    try {
      symbolsToReleaseOf(lib).kc_sched_shutdown_timed(SHUTDOWN_CANCEL, EXIT_JOIN_NS);
    } catch { /* a library closed meanwhile: closing shut its scheduler down */ }
  }
}

/**
 * How long the exit guard's shutdown waits, all its waits together (one deadline): for another
 * shutdown in progress (a `shutdown()` in flight), then for the workers to stop, all of them (a
 * coroutine's last slice, not a drain: a cancel), before the exit goes on without them.
 */
const EXIT_JOIN_NS = 2_000_000_000n;

/** The map of a built-in's cells is pruned at this size first. */
const PRUNE_MIN = 64;
/** `kc_coro_state`'s finished (coro/coroutine.zig's State). */
const FINISHED = 5;

/**
 * The buffers of cells made by `Runtime.cells` on native memory (`kc_cells_alloc`), each with
 * its block: one the Node-API companion made (ffi/napi.ts, `cellsBuffersFor`), whose V8
 * backing-store deleter releases the block (`kc_cells_release`) once no ArrayBuffer views it
 * (the original or one it was transferred to), freed then unless pinned (`pinNative`); or null
 * for a Worker's without the companion, never freed.
 *
 * A FinalizationRegistry on the buffer freed them (ABI 25 as first merged): a transferred buffer
 * (`transfer()`, a `postMessage` transfer list) keeps the memory, which the original's collection
 * then freed under it, a use-after-free from plain JavaScript.
 */
const nativeCells = new WeakMap<ArrayBufferLike, Deno.PointerObject | null>();

/** @ignore Whether `cells` is on native memory from `Runtime.cells` (tests). */
export function _isNativeCells(cells: BigUint64Array): boolean {
  return nativeCells.has(typedBuffer(cells));
}

/** Whether `x` is a revoked Proxy (of an object or a function): `isRevoked`, for any value. */
function unreadable(x: unknown): boolean {
  return (typeof x === "object" || typeof x === "function") && x !== null && isRevoked(x);
}

/**
 * The entry pointer and argument pointer for `entry` and `arg`, checked; `pin` is the array the
 * coroutine writes into, to keep reachable until it finishes. Internal (NativeScope uses it).
 */
export function nativeEntry(
  op: string,
  lib: Library,
  entry: ScheduledBuiltin | NativeFunction,
  arg: BigUint64Array | Deno.PointerValue | undefined,
): { fn: Deno.PointerValue; arg: Deno.PointerValue; pin: BigUint64Array | null } {
  let fn: Deno.PointerValue;
  // A revoked Proxy as `arg` (or `entry`) is refused below by name (`unreadable`): `instanceof`
  // (its getPrototypeOf) and `in` (its has) threw the engine's bare "... on a proxy that has been
  // revoked" out of spawn and a native scope's launch.
  if (typeof entry === "string") {
    if (!Object.hasOwn(builtinIds, entry)) {
      throw new TypeError(
        `Cannot ${op}: entry must be one of ${
          Object.keys(builtinIds).join(", ")
        } or a NativeFunction, received ${describe(entry)}`,
      );
    }
    const [id, cells] = builtinIds[entry];
    // The engine's length: the built-in writes `cells` cells, whatever `length` says.
    const real = !unreadable(arg) && arg instanceof BigUint64Array && isReal(arg);
    if (!real || typedLength(arg) < cells) {
      // Too few cells in a real BigUint64Array: a length out of range, a RangeError (as an
      // empty `cells([])` and `trySendMany([])` are); anything else a TypeError. Both were
      // TypeErrors.
      throw new (real ? RangeError : TypeError)(
        `Cannot ${op}: "${entry}" needs a BigUint64Array of ${cells} cells, received ${
          describe(arg)
        }`,
      );
    }
    fn = librarySymbols(lib, op).kc_builtin_entry(id);
  } else if (
    typeof entry === "object" && entry !== null && !isRevoked(entry) && "pointer" in entry &&
    typeof entry.pointer === "object" && entry.pointer !== null && isPointer(entry.pointer)
  ) {
    fn = entry.pointer;
  } else {
    throw new TypeError(
      `Cannot ${op}: entry must be a built-in name or a NativeFunction, received ${
        describe(entry)
      }`,
    );
  }
  if (!unreadable(arg) && arg instanceof BigUint64Array) {
    if (!isReal(arg)) {
      throw new TypeError(
        `Cannot ${op}: arg must be a BigUint64Array or a pointer, received ${describe(arg)}`,
      );
    }
    const buffer = typedBuffer(arg);
    // runtime().cells whose buffer was transferred away (`buffer.transfer()`, a `postMessage`
    // transfer list): the array left behind is detached, its pointer null, and the memory may be
    // freed already (the moved buffer, collected, released it): a pin taken on it wrote into
    // freed memory. The moved buffer is a plain ArrayBuffer to this module (refused below).
    if (nativeCells.has(buffer) && isDetached(buffer as ArrayBuffer)) {
      throw new TypeError(
        `Cannot ${op}: the cells' buffer was transferred, and the memory went with it (a moved ` +
          `buffer is no runtime().cells), received a BigUint64Array on a detached ArrayBuffer`,
      );
    }
    if (inWorker && !nativeCells.has(buffer)) {
      throw new TypeError(
        `Cannot ${op}: in a Worker the cells a native coroutine writes into must come from ` +
          `runtime().cells(n), which outlive the Worker (terminated while the coroutine runs, it ` +
          `would leave it writing into freed memory), received a BigUint64Array on the heap`,
      );
    }
    // Memory JavaScript cannot free or move under the coroutine: an ArrayBuffer can be
    // transferred, detached or resized (`buffer.transfer()` after a spawn freed the cells the
    // coroutine went on writing into); a SharedArrayBuffer cannot, nor can native cells.
    if (!nativeCells.has(buffer) && !(buffer instanceof SharedArrayBuffer)) {
      throw new TypeError(
        `Cannot ${op}: the cells a native coroutine writes into must be memory JavaScript cannot ` +
          `free or move under it: runtime().cells(n) (or a BigUint64Array on a ` +
          `SharedArrayBuffer); an ArrayBuffer can be transferred, detached or resized, received ` +
          `a BigUint64Array on ${onResizable(arg) ? "a resizable ArrayBuffer" : "an ArrayBuffer"}`,
      );
    }
    return { fn, arg: Deno.UnsafePointer.of(arg), pin: arg };
  }
  if (arg !== undefined && arg !== null && (typeof arg !== "object" || !isPointer(arg))) {
    throw new TypeError(
      `Cannot ${op}: arg must be a BigUint64Array or a pointer, received ${describe(arg)}`,
    );
  }
  // A pointer or none (a BigUint64Array returned above: `unreadable` hides that from the types).
  return { fn, arg: (arg ?? null) as Deno.PointerValue, pin: null };
}

/**
 * @ignore `unwrap` for a call that makes a coroutine: out of memory there is most often out
 * of stacks, and the message says what to do about it.
 */
export function unwrapSpawn(status: number, op: string, handDriven = false): number {
  if (status === Status.ENOMEM) {
    // The remedy differs: the scheduler's stacks are chosen when it starts, a hand-driven
    // coroutine's by its own create.
    // Slabs count against the same budget as guarded stacks (zig-src/coro/stack.zig): the
    // remedy is slabs of many stacks each, which stacks of 64 MiB or more are not.
    const remedy = handDriven
      ? "NativeCoroutine.create(entry, { slabStack: true }) carves one from a shared slab instead"
      : "runtime({ slabStacks: true }) carves them from shared slabs instead";
    throw new KcoroError(
      status,
      `Cannot ${op}: out of memory, handles or stacks (guarded stacks and slabs, 64 MiB of ` +
        `stacks each or one larger stack, take two memory mappings each and stop at ` +
        `(vm.max_map_count - 16384) / 2 per process, ` +
        `24,573 at Linux's default count; ${remedy}: a million 64 KiB stacks take ~1,000 slabs)`,
    );
  }
  return unwrap(status, op);
}

/** A typed array the engine made, not a Proxy of one (whose length and buffer could lie). */
function isReal(array: BigUint64Array): boolean {
  try {
    typedLength(array);
    return true;
  } catch {
    return false;
  }
}

/** A Deno pointer object (what FFI takes as a pointer), not just any object. */
function isPointer(p: object): boolean {
  try {
    Deno.UnsafePointer.value(p as Deno.PointerObject); // a TypeError for anything else
    return true;
  } catch {
    return false;
  }
}

/** A C-ABI function `void f(void *arg)` found by {@linkcode resolveNative}. */
export interface NativeFunction {
  /** The shared library's path, as given to {@linkcode resolveNative}. */
  readonly library: string;
  /** The function's name in that library. */
  readonly symbol: string;
  /** The function's address (valid for good: the library stays loaded). */
  readonly pointer: Deno.PointerObject;
}

/** One worker's counters. */
export interface WorkerStats {
  /** Coroutine runs on this worker since the scheduler started (each to a yield, park or end). */
  runs: number;
  /** Times this worker took work (half a queue at once) from another worker's queue. */
  steals: number;
  /** Times a coroutine this worker ran parked (to wait for a channel, a timer, an unpark). */
  parks: number;
  /**
   * Runnable coroutines queued on this worker when the snapshot was taken: its stealable queue
   * and its next-to-run slot (not the coroutines that yielded and wait for their turn).
   */
  queueDepth: number;
}

/** A snapshot of the scheduler. */
export interface RuntimeStats {
  /** One entry per worker thread, in worker order. */
  workers: WorkerStats[];
  /**
   * Spawned coroutines that have not finished: a built-in is counted out before it writes `done`,
   * a native scope's child before the scope can be seen done (unlike `coroutineStats().live`,
   * which counts handles, freed a moment later).
   */
  live: number;
  /** Runnable + running coroutines + armed timers (0 when drained). */
  busy: number;
}

/** Options for {@linkcode Runtime.drain}. */
export interface DrainOptions {
  /**
   * Aborting it rejects the drain with the signal's reason (the coroutines keep running): a
   * drain that waits for good (a coroutine that never parks, a C caller's timed shutdown that
   * gave up with `KC_EBUSY` and no shutdown after it) can be given up.
   */
  signal?: AbortSignal;
}

/** What {@linkcode Runtime.drain} found when it resolved. */
export interface DrainResult {
  /**
   * Native coroutines still live (spawned and not finished, by any isolate or C code) right
   * after the scheduler ran dry: with nothing runnable, running or sleeping left, these are
   * parked, on a full or empty channel, in a scope's wait, on a park of their own. A producer
   * parked on a full channel that nothing receives from counts here, so 0 says that every
   * coroutine spawned ran to its end. A drain settled by a `"finish"` shutdown counts the
   * coroutines it left parked (and abandoned: its `abandoned`), known once its workers were
   * joined (which the drain waits for: another isolate's shutdown may still be joining them as
   * the drain meets it; before, 0 then), and so does one that ran dry
   * just before a `"cancel"` stopped the scheduler (those it left parked, which the cancel
   * abandoned; before, 0); one settled by the library's
   * close, those live at the close (its scheduler had nothing left to run then; for one going on
   * in rounds on a scheduler that read as not running, what the close's shutdown abandoned, 0
   * while another host keeps the scheduler running; for one whose scheduler a finish elsewhere
   * ended just before the close, what that finish abandoned). Before, 0
   * whenever a shutdown or the close settled the drain.
   */
  readonly parked: number;
}

/** Options for {@linkcode Runtime.shutdown}. */
export interface ShutdownOptions {
  /**
   * Aborting it rejects the call with the signal's reason: a shutdown that waits for good (for
   * a coroutine of C code's that never yields) can be given up. The shutdown itself goes on
   * (native code cannot stop a running coroutine): the scheduler stays shutting down until it
   * ends, `runtime()` meanwhile a ShutdownError, and a second call with `"cancel"` still cuts
   * a finish's drain short.
   */
  signal?: AbortSignal;
}

/** What {@linkcode Runtime.shutdown} found when it resolved. */
export interface ShutdownResult {
  /**
   * Native coroutines the shutdown of this Runtime's scheduler abandoned: those (spawned by any
   * isolate or C code) that never finished, counted once its workers were joined (one running
   * as it stopped that then ran to its end is not one). After a `"finish"` whose drain ran dry,
   * the parked ones (on a full or empty channel, in a scope's wait, on a park of their own): 0
   * says that every coroutine ran to its end. After a `"cancel"` (also one that cut a finish
   * short), every one unfinished. Also once this Runtime's library was closed: the count of the
   * shutdown that stopped it (the close's, as the last host, or another host's), 0 while none
   * has (another host keeps the scheduler running: a closed library's shutdown stops nothing).
   * Before, 0 whenever the library was closed. Before that, a finish abandoned its parked
   * coroutines without a count (`kc_sched_abandoned`).
   */
  readonly abandoned: number;
}

const encoder = new TextEncoder();
function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, bytes);
  return bytes;
}

/** A scheduler's kc_sched_info: [workers, live, busy, running, stack size, flags, generation]. */
function schedInfo(lib: Library, op: string, info = new BigUint64Array(7)): BigUint64Array {
  librarySymbols(lib, op).kc_sched_info(info, 7);
  return info;
}

/**
 * `schedInfo`'s buffer for the checks that read it at once and keep nothing (`isRunning`'s,
 * `drain`'s each slice): no allocation per call. Nothing between the fill and the reads can fill
 * it again.
 */
const checkInfo = new BigUint64Array(7);

/**
 * A `drain` waiting: `drained` is set as the library closes if its scheduler had run dry, and
 * `parked` to how many coroutines were live (parked) then, or -1 when that is read after the
 * close (a `paused` one: its last round ran dry on a scheduler that read as not running; one
 * whose scheduler a finish elsewhere ended: what that finish abandoned).
 */
interface DrainWait {
  generation: bigint;
  paused: boolean;
  drained: boolean;
  parked: number;
  /** A `"cancel"` (any host's, C code's) had stopped its scheduler before the close. */
  cancelled: boolean;
}

/** `Runtime.#drainSlices`: a shutdown met meanwhile resolved the drain. */
const DRAIN_SETTLED = 1;
/** `Runtime.#drainSlices`: the drain's signal aborted (its caller has rejected). */
const DRAIN_GIVEN_UP = 2;
/**
 * What a drain whose signal aborted ends with: never seen (`drain` rejected with the reason as
 * the signal aborted), so that the drain's slices and pauses stop once it is given up.
 */
const GIVEN_UP: DrainResult = Object.freeze({ parked: 0 });

/** The drains waiting on each library, settled at its close (`drainsOf`). */
const drainsWaiting = new WeakMap<Library, Set<DrainWait>>();

/**
 * The drains waiting on `lib`. Its close, while still open, decides each one's outcome by what
 * its scheduler has left to run then: nothing runnable, running or sleeping (kc_sched_info's
 * busy count 0, its own scheduler still the one running) resolves it, as a drain that ran dry;
 * anything else makes it a LibraryClosedError. One close hook per library and open, not one
 * per drain (a hook stays until the close).
 */
function drainsOf(lib: Library): Set<DrainWait> {
  let drains = drainsWaiting.get(lib);
  if (drains === undefined) {
    const set = drains = new Set();
    drainsWaiting.set(lib, set);
    beforeClose(lib, () => {
      drainsWaiting.delete(lib);
      if (set.size === 0) return;
      const info = schedInfo(lib, "drain runtime");
      for (const d of set) {
        d.drained = info[3] === 1n && info[6] === d.generation && info[2] === 0n;
        // Live with nothing runnable, running or sleeping: parked, as a drain that ran dry
        // says. Before, such a drain resolved with `parked: 0`, a producer parked on a full
        // channel reported as finished.
        if (d.drained) d.parked = Number(info[1]);
        else {
          const ended = librarySymbols(lib, "drain runtime").kc_sched_ended(d.generation);
          // Its scheduler ended by a finish (another host's, C code's) whose end the drain's
          // slice had not yet answered: that finish ran it dry, as the drain's next look would
          // have found (DRAIN_SETTLED): resolved, with what that finish abandoned (read after
          // the close: -1; 0 until it joined). Before, a LibraryClosedError.
          // A paused drain (in a round or in a pause between two: its last round ran dry, the
          // scheduler still its own but read as not running: a C caller's timed shutdown that
          // gave up with KC_EBUSY, another host's finish under way): nothing more can be read
          // of it, and it had nothing left to run when last read: resolved as a drain that ran
          // dry, with the count the close's shutdown abandons (read after it: -1). Not after a
          // cancel, which abandoned what was left. Before, a LibraryClosedError, though a drain
          // whose scheduler was readable resolved for the same state.
          if (
            ended === SHUTDOWN_FINISH ||
            (d.paused && info[3] !== 1n && ended !== SHUTDOWN_CANCEL)
          ) {
            d.drained = true;
            d.parked = -1;
          }
          // A cancel that stopped it before the close (the drain had not seen it yet): settled
          // as that cancel settles a drain, a ShutdownError, as a finish there settles it as
          // that finish does (above). Before, a LibraryClosedError.
          d.cancelled = ended === SHUTDOWN_CANCEL;
        }
      }
    }, "the settling of waiting drains");
  }
  return drains;
}

/**
 * The buffer of `count` cells for `Runtime.cells`. Native memory (`kc_cells_alloc`) in a buffer
 * of the Node-API companion's, whose backing-store deleter releases it once no ArrayBuffer views
 * it, at the isolate's disposal too (`nativeCells`; the pins keep cells a coroutine may still
 * write into: the main isolate's exit and a Worker's termination leave those). So JavaScript
 * cannot free it under a coroutine, nor can the disposal, and no exit guard is needed. Without
 * the companion (not built, no permission, Windows), what came before ABI 25: in the main
 * isolate a SharedArrayBuffer (an exit with coroutines writing into it depends on the exit
 * guard, `guardExit`), in a Worker native memory that is never freed (a Worker terminated while
 * its coroutines run would otherwise leave them writing into its freed heap).
 */
function nativeBuffer(lib: Library, op: string, count: number): ArrayBufferLike {
  const sym = librarySymbols(lib, op); // a closed library is an error, also for a SharedArrayBuffer
  const make = cellsBuffersFor(lib.path);
  if (make === null && !inWorker) return new SharedArrayBuffer(count * 8);
  const p = sym.kc_cells_alloc(count);
  if (p === null) unwrap(Status.ENOMEM, op);
  const buffer = make?.(Number(Deno.UnsafePointer.value(p)), count * 8) ?? null;
  if (buffer !== null) {
    nativeCells.set(buffer, p!);
    return buffer;
  }
  // Without the companion in a Worker, or the companion refused the buffer (Node-API refused
  // it, or it could not read the block's header: process_vm_readv refused and no pipe to copy
  // it through, as with no file descriptors left): the block is never released there, and goes
  // back at once here in the main isolate.
  if (make !== null && !inWorker) {
    sym.kc_cells_release(p);
    return new SharedArrayBuffer(count * 8);
  }
  const never = Deno.UnsafePointerView.getArrayBuffer(p!, count * 8);
  nativeCells.set(never, null);
  return never;
}

/**
 * @ignore kc_sched_info's generation of `rt`'s scheduler (NativeScope makes its scopes there).
 * Module functions set in Runtime's static block, not members: as the public `_generation`,
 * `_is` and `_pinnedCount` any caller reached them and could redefine them on the prototype
 * (`Runtime.prototype._is = () => false` made every `runtime()` answer a new Runtime).
 */
export let generationOf: (rt: Runtime) => bigint;
/** True if `rt` drives `lib`'s scheduler of `generation` (`runtime()`'s look at its last one). */
let drives: (rt: Runtime, lib: Library, generation: bigint) => boolean;
/** @ignore How many arrays spawns and launches keep reachable now (tests). See `generationOf`. */
export let pinnedCountOf: (rt: Runtime) => number;

/** Only this module makes a {@linkcode Runtime}. */
const MAKE: unique symbol = Symbol("kcoro.Runtime");

/** What a structured clone of a Runtime fails on (`Runtime._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a Runtime: the scheduler is the process's; call runtime() in the Worker",
);

/**
 * The process-wide native scheduler, one run of it: from the {@linkcode runtime} call that
 * started it (or found it running) to its shutdown. Get it with {@linkcode runtime}.
 */
export class Runtime {
  /**
   * @ignore First of the fields structured cloning sees: `postMessage` or `structuredClone` of
   * one throws a DataCloneError with this symbol's description as its message. It cloned as
   * `{ workers }`.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  readonly #lib: Library;
  /** kc_sched_info's generation of the scheduler this Runtime stands for. */
  readonly #generation: bigint;
  /** How many worker threads the scheduler runs. */
  readonly workers: number;
  /** @ignore Use {@linkcode runtime}. */
  constructor(key: typeof MAKE, lib: Library, workers: number, generation: bigint) {
    // Exported for its type and instanceof: made by runtime() only (a Runtime over anything else
    // threw the engine's errors at its first call).
    if (key !== MAKE) {
      throw new TypeError(`Cannot construct Runtime: use runtime(), received ${describe(key)}`);
    }
    this.#lib = lib;
    this.workers = workers;
    this.#generation = generation;
    Object.freeze(this); // `_notCloneable` fixed (errors.ts, `refuseAsValue`)
  }

  static {
    generationOf = (rt) => rt.#generation;
    drives = (rt, lib, generation) => rt.#lib === lib && rt.#generation === generation;
    pinnedCountOf = (rt) => {
      const pins = pinsOf(rt.#lib);
      let scoped = 0;
      for (const set of pins.byScope.values()) scoped += set.size;
      return pins.list.size + pins.byHandle.size + scoped;
    };
  }

  /**
   * Whether `info` (kc_sched_info) is of this Runtime's scheduler, running. One shut down and
   * replaced by a later one (another `runtime()` call, here or in a Worker) is not: its
   * `workers` and stack size may differ, and its `shutdown` must not stop the later one.
   */
  #mine(info: BigUint64Array): boolean {
    return info[3] === 1n && info[6] === this.#generation;
  }

  /**
   * Throws a TypeError naming `op` unless `self` (a method's `this`) is a Runtime: a brand check
   * on `Object(self)`, which runs no Proxy trap. A method called on an object made from the
   * prototype, a Proxy of a runtime or a primitive threw the engine's "Cannot read private member
   * #lib" (a drain or shutdown rejected with it).
   */
  static #checkThis(self: unknown, op: string): void {
    if (!(#lib in Object(self))) {
      throw new TypeError(`Cannot ${op}: this is not a Runtime, received ${describe(self)}`);
    }
  }

  /** Throws ShutdownError for `op` unless this Runtime's scheduler runs. */
  #check(op: string): void {
    const info = schedInfo(this.#lib, op, checkInfo);
    if (this.#mine(info)) return;
    if (info[3] === 1n) {
      throw new ShutdownError(
        op,
        "this runtime was shut down, and the one running now is a later one (runtime() returns it)",
      );
    }
    unwrap(Status.ESHUTDOWN, op);
  }

  /**
   * True until {@linkcode Runtime.shutdown} (or the library closed), also one made by another
   * isolate: false for a Runtime whose scheduler a later one replaced.
   */
  get isRunning(): boolean {
    Runtime.#checkThis(this, "read runtime info");
    return isLibraryOpen(this.#lib) &&
      this.#mine(schedInfo(this.#lib, "read runtime info", checkInfo));
  }

  /**
   * `Runtime`, the name it prints with (`[customInspect]`): `String(x)` and template literals say
   * `[object Runtime]` instead of `[object Object]`; error messages name an argument of the wrong
   * kind that is one "a Runtime" (`describe`, by this brand check). Only on an instance: an object
   * made from the prototype (`Object.create`) stays `[object Object]`, so a message does not call
   * it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #lib in Object(this) ? "Runtime" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a runtime:
   * `Runtime { workers: 4, isRunning: true }` (a closed library's answers false).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#lib in Object(this))) return notA("Runtime");
    const facts = { workers: this.workers, isRunning: this.isRunning };
    return inspectAs("Runtime", facts, inspect, options);
  }

  /**
   * Cells for a native coroutine to read and write (`spawn`, `NativeScope.launch`): `count`
   * zeroed ones, or as many as `values` holds, set to them. They are native memory, which
   * JavaScript cannot free under the coroutine writing into them, nor can the isolate's disposal
   * (the exit, a Worker's termination): freed once no ArrayBuffer views them, the one returned
   * or one it was transferred to (`transfer()`, a `postMessage` transfer list), and no coroutine
   * may still write into them (a spawn or launch pins them until then; pinned at the disposal,
   * they are left to the process's end). Without the Node-API companion (not built, no
   * permission, Windows): a SharedArrayBuffer in the main isolate, never-freed native memory in
   * a Worker (README, "The scheduler from TypeScript").
   *
   * @example
   * ```ts
   * import { runtime } from "../mod.ts";
   * import assert from "node:assert/strict";
   * const rt = runtime();
   * const cells = rt.cells([1n, 0n]); // sleep 1 ms, then count 1 in cell 1
   * rt.spawn("sleeper", cells);
   * await rt.drain();
   * assert.equal(cells[1], 1n);
   * ```
   */
  cells(countOrValues: number | readonly bigint[]): BigUint64Array {
    Runtime.#checkThis(this, "allocate cells");
    const op = "allocate cells";
    // A copy, read once: what is checked is what is stored. A Proxy (or getters) of the array
    // answered 1n to the check and -1n to the store, which wrapped it to 2^64 - 1, or a string,
    // which threw the engine's SyntaxError.
    // A revoked Proxy: refused below as neither (`Array.isArray` threw the engine's error).
    // (`typeof` a revoked Proxy of a function is "function": `Array.isArray` throws for it too.)
    const revoked = unreadable(countOrValues);
    const values = !revoked && Array.isArray(countOrValues) ? Array.from(countOrValues) : null;
    const count = values === null ? countOrValues : values.length;
    if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 1 << 20) {
      // Neither a number nor an array ("4"): a TypeError; a count out of range, a RangeError.
      throw new (typeof count === "number" ? RangeError : TypeError)(
        `Cannot ${op}: expected a count or an array of 1 to 1048576 bigints, received ${
          describe(countOrValues)
        }`,
      );
    }
    if (values !== null) {
      for (const v of values) {
        if (typeof v !== "bigint" || v < 0n || v >= 1n << 64n) {
          // Not a bigint (1, "1"): a TypeError; a bigint out of range (-1n, 2n ** 64n): a
          // RangeError, as the count's (both were TypeErrors).
          throw new (typeof v === "bigint" ? RangeError : TypeError)(
            `Cannot ${op}: each value must be a bigint from 0 to 2^64 - 1, received ${describe(v)}`,
          );
        }
      }
    }
    const cells = new BigUint64Array(nativeBuffer(this.#lib, op, count));
    if (values !== null) cells.set(values);
    return cells;
  }

  /**
   * Runs `entry` as a native coroutine on the scheduler. `entry` is a built-in (whose `cells`
   * it reads and writes) or a function from {@linkcode resolveNative}, called with `arg`.
   *
   * @example
   * ```ts
   * import { runtime } from "../mod.ts";
   * import assert from "node:assert/strict";
   * const rt = runtime();
   * const cells = rt.cells([1000n, 0n]); // skynet over 1000 leaves
   * rt.spawn("skynet", cells);
   * await rt.drain();
   * assert.equal(cells[1], 499500n);
   * ```
   */
  spawn(entry: ScheduledBuiltin | NativeFunction, cells?: BigUint64Array): void;
  /**
   * Runs the function `entry` from {@linkcode resolveNative} as a native coroutine, called with
   * `arg` (a pointer; null by default) as its `void *arg`. Nothing keeps what `arg` points to
   * alive or in place: it must outlive the coroutine's use of it.
   */
  spawn(entry: NativeFunction, arg?: Deno.PointerValue): void;
  spawn(entry: ScheduledBuiltin | NativeFunction, arg?: BigUint64Array | Deno.PointerValue): void {
    Runtime.#checkThis(this, "spawn coroutine");
    const op = "spawn coroutine";
    const e = nativeEntry(op, this.#lib, entry, arg);
    const sym = librarySymbols(this.#lib, op);
    // Not onto a later scheduler (its stacks may be smaller than the code spawned needs):
    // kc_spawn_gen checks the generation where a restart cannot come in between. A check with
    // kc_sched_info before kc_spawn cost a call per spawn, and a shutdown and restart by another
    // isolate between the two still spawned onto the later scheduler.
    const handled = e.pin !== null && typeof entry === "string";
    const rc = sym.kc_spawn_gen(e.fn, e.arg, 0, handled ? handleOut : null, this.#generation);
    if (rc === Status.ESHUTDOWN) this.#check(op); // says whether a later one runs
    unwrapSpawn(rc, op);
    if (e.pin !== null) pinCells(this.#lib, handled ? handleOut[0] : 0, e.pin);
  }

  /**
   * Resolves when no native coroutine is runnable, running or sleeping (parked ones do not
   * count), with how many are parked ({@linkcode DrainResult}): a producer parked on a full
   * channel has not finished. Waits on a helper thread: the event loop keeps running. Meeting a
   * shutdown of its scheduler (this Runtime's {@linkcode Runtime.shutdown}, or another isolate's),
   * called during it or waiting when it came, it settles with it: resolves after a `"finish"` whose
   * drain ran dry (every coroutine ran to its end or to a park; the parked ones were abandoned with
   * the scheduler: the shutdown's `abandoned` counts them, and the drain resolves once that
   * shutdown has joined the workers, which is when the count is known), rejects with ShutdownError
   * after a `"cancel"`. When the library is
   * closed while it waits, it settles by what its scheduler had left to run at the close:
   * resolves if nothing (as a drain that ran dry), else rejects with a LibraryClosedError (as a
   * channel's wait does). Run dry on its scheduler while that reads as not running though still
   * its own (a C caller's `kc_sched_shutdown_timed` that gave up with `KC_EBUSY`, which stops
   * nothing; another isolate's finish still under way), it goes on until that shutdown settles it
   * or the scheduler reads as running again; the library's close meanwhile (in a round or a
   * pause between two) resolves it, as a drain that ran dry, with the count the close's shutdown
   * abandoned. A cancel that stopped the scheduler before the close, unseen by the drain, makes it
   * a ShutdownError, as that cancel settles a drain (before, a LibraryClosedError). Aborting
   * `signal` rejects it with the signal's reason (the coroutines keep running), also in those
   * waits.
   */
  drain(options?: DrainOptions): Promise<DrainResult> {
    const op = "drain runtime";
    let signal: AbortSignal | undefined;
    try {
      Runtime.#checkThis(this, op);
      signal = signalOf(op, options);
    } catch (e) {
      return Promise.reject(e); // rejects, as the rest of an async call
    }
    return givenUpBy(op, signal, () => this.#drain(op, signal));
  }

  /** `drain`, its options checked: it gives up (`GIVEN_UP`) once `signal` aborted. */
  async #drain(op: string, signal: AbortSignal | undefined): Promise<DrainResult> {
    const sym = librarySymbols(this.#lib, op);
    // A shutdown of this Runtime in progress: the drain's outcome is the shutdown's. Before,
    // it depended on how far the shutdown had got (a ShutdownError, or a drain that resolved).
    if (this.#stopping?.inProgress) {
      await this.#afterShutdown();
      return await this.#parkedOnceJoined(signal);
    }
    // Shut down already (here or elsewhere): a ShutdownError. One that another isolate (or C
    // code) is still shutting down, whose finish still drains it, is drained with it.
    if (
      !this.#mine(schedInfo(this.#lib, op, checkInfo)) &&
      sym.kc_sched_ended(this.#generation) !== Status.EBUSY
    ) this.#check(op);
    // In slices, as a native scope's wait: a Worker terminated while it drains gives its
    // helper thread back within a slice. A drain in one piece held one of Deno's blocking-pool
    // threads until the whole process's scheduler drained (for good if it never did), one per
    // terminated Worker.
    let rc: number;
    // Between rounds of a drain that ran dry on a scheduler still ours but not readable (below).
    let pauseMs = 1;
    // In those rounds: the last one ran dry, on a scheduler that read as not running.
    let paused = false;
    for (;;) {
      // Settled by the library's close, if it comes first (`drainsOf`).
      const wait: DrainWait = {
        generation: this.#generation,
        paused,
        drained: false,
        parked: 0,
        cancelled: false,
      };
      const drains = drainsOf(this.#lib);
      drains.add(wait);
      try {
        rc = await this.#drainSlices(sym, op, signal);
      } finally {
        drains.delete(wait);
      }
      if (rc === DRAIN_SETTLED) return await this.#parkedOnceJoined(signal);
      // Closed (closeLibrary) while it waited: resolved if its scheduler had nothing left to
      // run at the close, else a LibraryClosedError, as a channel's wait that meets the close.
      // Before, it hung on whether its slice ran dry before the close (on a helper thread):
      // resolved if so, else rejected, for the same scheduler state.
      if (!isLibraryOpen(this.#lib)) return this.#settledByClose(wait, op);
      if (rc === DRAIN_GIVEN_UP) return GIVEN_UP;
      unwrap(rc, op);
      // Parked coroutines do not hold up a drain but may still write into their cells: only
      // none live lets go. kc_sched_info reads 0 live too while no scheduler runs, also while a
      // finish (another isolate's, C code's, begun since the drain ran dry) still runs
      // coroutines that write into their cells: then only once every scheduler has ended
      // (`allEnded`). Before, such a finish's cells were let go.
      const info = schedInfo(this.#lib, op, checkInfo);
      if (info[3] === 1n ? info[1] === 0n : allEnded(this.#lib)) unpinAll(this.#lib);
      // Live once nothing is runnable, running or sleeping: parked. Before, the drain resolved
      // with nothing, and a producer parked on a full channel looked like one that had finished
      // (only a stats() read after it told them apart). Read in the same call as the unpin's
      // check, and only while its scheduler is this Runtime's: before, a later one's (ours shut
      // down and another started since the slice's check, by a Worker, another host) coroutines
      // were counted as this drain's parked ones.
      if (this.#mine(info)) return { parked: Number(info[1]) };
      // Ran dry as a shutdown (this Runtime's, another host's) stopped the scheduler, after the
      // slice's check above. A finish: the coroutines parked then are what it abandoned, counted
      // once its workers are joined, as a drain that meets the finish in its loop reports. This
      // Runtime's own shutdown is awaited first: also one still draining or joining (no
      // scheduler reads as running, kc_sched_ended still KC_EBUSY), which before resolved the
      // drain with { parked: 0 } though that finish then abandoned coroutines parked then.
      // Another host's: its join is waited for (`#parkedOnceJoined`).
      // Read as `#parkedAtFinish` reads: also once a close (a hook of that shutdown) came
      // meanwhile.
      if (this.#stopping !== undefined) await this.#stopping.done.then(() => {}, () => {});
      const ended = symbolsToReleaseOf(this.#lib).kc_sched_ended(this.#generation);
      // A cancel too: the coroutines parked when the drain ran dry are among what it abandoned
      // (kc_sched_abandoned of this generation), counted as for a finish. Before, { parked: 0 },
      // as if each had run to its end.
      if (ended === SHUTDOWN_FINISH || ended === SHUTDOWN_CANCEL) {
        return await this.#parkedOnceJoined(signal);
      }
      // Still ours (KC_EBUSY) though none reads as running and no shutdown of this Runtime's is
      // under way: another host's finish still drains it (the drain settles with it, as one that
      // meets it in its slices), or a C caller's kc_sched_shutdown_timed gave up with KC_EBUSY
      // (nothing stopped: the scheduler runs on, kc_sched_info reads it not running until the
      // next shutdown). What is parked cannot be read then: the drain goes on (a later slice meets
      // that shutdown, or finds the scheduler readable again), pausing between rounds, as a slice
      // on a scheduler that ran dry answers at once. Before, { parked: 0 }.
      if (ended !== Status.EBUSY || this.#stopping !== undefined || !isLibraryOpen(this.#lib)) {
        return { parked: 0 };
      }
      paused = true;
      // The library's close settles it in the pause as in a round (`drainsOf`): its last round
      // ran dry, so resolved, with what the close's shutdown abandoned (the last host's; 0
      // while another host keeps the scheduler running, which reads as not running still),
      // unless a cancel came first (a LibraryClosedError, as in a round; before, resolved with
      // that cancel's count). Before, a LibraryClosedError, though a drain whose scheduler was
      // readable then resolved for the same state. Its symbols may be gone after the close.
      const pause: DrainWait = {
        generation: this.#generation,
        paused,
        drained: false,
        parked: 0,
        cancelled: false,
      };
      const pauses = drainsOf(this.#lib);
      pauses.add(pause);
      try {
        await new Promise<void>((r) => setTimeout(r, pauseMs));
      } finally {
        pauses.delete(pause);
      }
      if (!isLibraryOpen(this.#lib)) return this.#settledByClose(pause, op);
      if (signal !== undefined && isAborted(signal)) return GIVEN_UP;
      pauseMs = Math.min(pauseMs * 2, DRAIN_PAUSE_MAX_MS);
    }
  }

  /**
   * A drain's `wait` (a round's, a pause's) that the library's close met, as its close hook
   * settled it (`drainsOf`): resolved with the count read at the close, or with what the
   * close's shutdown abandoned (`parked` -1: a paused drain, read after the close), else a
   * LibraryClosedError.
   */
  #settledByClose(wait: DrainWait, op: string): DrainResult {
    if (!wait.drained && wait.cancelled) {
      throw new ShutdownError(
        op,
        'the runtime was shut down with "cancel" before the library closed, while the drain waited: unfinished coroutines never ran to their end',
      );
    }
    if (!wait.drained) throw new LibraryClosedError(op);
    return wait.parked >= 0 ? { parked: wait.parked } : this.#parkedAtFinish();
  }

  /**
   * A drain settled by a `"finish"` shutdown of its scheduler (which ran it dry): the
   * coroutines parked then, which that finish abandoned (`kc_sched_abandoned` of this
   * generation), also after a cancel or the library's close (what that abandoned). Known once
   * the workers are joined: 0 until then (`#parkedOnceJoined` waits for it). Read also once the
   * library was closed (it stays loaded, `symbolsToReleaseOf`). Before, such a drain always
   * resolved with `parked: 0`, a producer left parked on a full channel reported as finished.
   */
  #parkedAtFinish(): DrainResult {
    const n = symbolsToReleaseOf(this.#lib).kc_sched_abandoned(this.#generation);
    return { parked: n >= 0 ? n : 0 };
  }

  /**
   * `#parkedAtFinish` once the shutdown that settled the drain has joined the workers
   * (kc_sched_abandoned no longer KC_EBUSY): this Runtime's own has when the drain gets here;
   * another isolate's (or C code's) may still be joining them, and is waited for, pausing 1 ms
   * doubling to 50 ms between reads (no native call says when another's join ends). Before, 0
   * then, though that finish abandoned coroutines. Once the library closed it goes on reading
   * (the count stays readable: the library stays loaded) for `JOIN_AFTER_CLOSE_MS` more, as long
   * as a close's own shutdown waits for its workers, and then gives up with 0 (another host's
   * shutdown whose join does not end: a coroutine of C code's that never yields). Before, it
   * gave up with 0 at the close, though that join ended a moment later. Gives up at once once
   * `signal` aborted (the caller has rejected).
   */
  async #parkedOnceJoined(signal: AbortSignal | undefined): Promise<DrainResult> {
    let pauseMs = 1;
    let closedAt = -1;
    for (;;) {
      const n = symbolsToReleaseOf(this.#lib).kc_sched_abandoned(this.#generation);
      if (n !== Status.EBUSY) return { parked: n >= 0 ? n : 0 };
      if (signal !== undefined && isAborted(signal)) return { parked: 0 };
      if (!isLibraryOpen(this.#lib)) {
        if (closedAt < 0) closedAt = performance.now();
        else if (performance.now() - closedAt >= JOIN_AFTER_CLOSE_MS) return { parked: 0 };
      }
      await new Promise<void>((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(pauseMs * 2, DRAIN_PAUSE_MAX_MS);
    }
  }

  /**
   * `drain`'s slices until one ends it: the last slice's status (0 ran dry, else an error),
   * also once the library closed (the caller settles that), DRAIN_GIVEN_UP once `signal` aborted
   * after a slice that timed out, or DRAIN_SETTLED when a shutdown
   * met meanwhile settled the drain as resolved (it throws when it settles it as rejected).
   */
  async #drainSlices(
    sym: ReturnType<Library["symbols"]>,
    op: string,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    let rc: number;
    for (;;) {
      rc = await sym.kc_sched_drain_for(DRAIN_SLICE_NS);
      if (!isLibraryOpen(this.#lib)) break;
      // A 0 says that whichever scheduler ran when the call got there (on a helper thread) ran
      // dry: ours if it still runs (or a finish still drains it: no later one can start before
      // it ended). Else ours was shut down before the call got there and a later one started,
      // whose emptiness says nothing of ours: settled below as that shutdown ended. Before, the
      // drain resolved, also after a cancel that abandoned its coroutines.
      if (rc === 0 && sym.kc_sched_ended(this.#generation) === Status.EBUSY) break;
      // Shut down meanwhile by this Runtime's shutdown(): its outcome is the drain's.
      if (this.#stopping !== undefined) {
        await this.#afterShutdown();
        return DRAIN_SETTLED;
      }
      // Shut down meanwhile elsewhere (another isolate, C code): its outcome is the drain's
      // too. A finish ran every coroutine to its end or to a park, which is what the drain
      // waits for; a cancel abandoned them. Before, a ShutdownError either way.
      const ended = sym.kc_sched_ended(this.#generation);
      if (ended === SHUTDOWN_FINISH) return DRAIN_SETTLED;
      if (ended === SHUTDOWN_CANCEL) {
        throw new ShutdownError(
          op,
          'the runtime was shut down with "cancel" elsewhere (another isolate, or C code) while the drain waited: unfinished coroutines never ran to their end',
        );
      }
      // Shut down too long ago to be remembered (64 restarts within a slice): as before.
      if (ended !== Status.EBUSY) this.#check(op);
      // Still running (or draining for a finish): a slice that timed out goes on, unless the
      // drain's signal aborted (its caller has rejected: the slices stop).
      if (rc !== Status.ETIME) break;
      if (signal !== undefined && isAborted(signal)) return DRAIN_GIVEN_UP;
    }
    return rc;
  }

  /**
   * This Runtime's shutdown, once asked for in this isolate: whether a cancel was asked for
   * (by either call), its native call's promise, and whether that is still in progress.
   */
  #stopping: { cancel: boolean; done: Promise<void>; inProgress: boolean } | undefined = undefined;

  /**
   * A drain that met this Runtime's shutdown (called during it, or waiting when it came):
   * resolves when a `"finish"` shutdown's drain has run dry (every coroutine to its end or to a
   * park: it abandons the parked ones, `ShutdownResult`); a cancel (asked for
   * in this isolate, also one that ends a finishing shutdown's drain) is a ShutdownError, as
   * coroutines were abandoned.
   */
  async #afterShutdown(): Promise<void> {
    const stopping = this.#stopping!;
    await stopping.done;
    // Its own finish ended as a cancel when another isolate's (or C code's) cancel cut its
    // drain short (kc_sched_ended): the coroutines were abandoned as after a cancel here.
    if (
      stopping.cancel ||
      (isLibraryOpen(this.#lib) &&
        librarySymbols(this.#lib, "drain runtime").kc_sched_ended(this.#generation) ===
          SHUTDOWN_CANCEL)
    ) {
      throw new ShutdownError(
        "drain runtime",
        'the runtime was shut down with "cancel" while the drain waited: unfinished coroutines never ran to their end',
      );
    }
  }

  /** Counters per worker, and the numbers of live and busy coroutines. */
  stats(): RuntimeStats {
    Runtime.#checkThis(this, "read runtime stats");
    const sym = librarySymbols(this.#lib, "read runtime stats");
    const info = schedInfo(this.#lib, "read runtime stats");
    if (!this.#mine(info)) this.#check("read runtime stats");
    const workers: WorkerStats[] = [];
    const out = new BigUint64Array(4);
    for (let i = 0; i < Number(info[0]); i++) {
      unwrap(sym.kc_sched_stats(i, out, 4), "read runtime stats");
      workers.push({
        runs: Number(out[0]),
        steals: Number(out[1]),
        parks: Number(out[2]),
        queueDepth: Number(out[3]),
      });
    }
    return { workers, live: Number(info[1]), busy: Number(info[2]) };
  }

  /**
   * Stops the workers and frees every stack. `"cancel"` (default): unfinished coroutines never
   * run again. `"finish"`: drains first; a second call with `"cancel"` while it drains cuts it
   * short (what is left never runs; a `drain()` waiting then is a ShutdownError, and both calls
   * resolve once the workers are joined and the first call's native shutdown has returned, so
   * that `runtime()` then starts a new scheduler). Any other second call does nothing (it resolves
   * with the first, with the same `abandoned`), also once a later
   * `runtime()` started another scheduler (this does not stop that one). Scheduling is cooperative:
   * a coroutine that is running when the shutdown comes (a CPU-bound loop) is not stopped, and
   * the shutdown waits for it to park, yield or end (the built-ins yield now and then, and stop
   * at a cancelling shutdown: {@linkcode ScheduledBuiltin}). The wait is on a helper thread: the
   * event loop keeps running meanwhile. Resolves with how many coroutines the shutdown abandoned
   * ({@linkcode ShutdownResult}): a finish's drain runs until nothing is runnable, running or
   * sleeping, and the coroutines still parked then (a producer on a full channel nothing
   * receives from) are abandoned with the scheduler, not run to their end. Aborting `signal`
   * rejects the call with the signal's reason (at once, starting nothing, if aborted before);
   * the shutdown it began goes on ({@linkcode ShutdownOptions}).
   */
  shutdown(mode: ShutdownMode = "cancel", options?: ShutdownOptions): Promise<ShutdownResult> {
    const op = "shut down runtime";
    let signal: AbortSignal | undefined;
    try {
      Runtime.#checkThis(this, op);
      if (mode !== "cancel" && mode !== "finish") {
        throw new TypeError(
          `Cannot ${op}: mode must be "cancel" or "finish", received ${describe(mode)}`,
        );
      }
      signal = signalOf(op, options);
    } catch (e) {
      return Promise.reject(e); // rejects, as the rest of an async call
    }
    return givenUpBy(op, signal, () => this.#shutdown(mode));
  }

  /** `shutdown`, its arguments checked. */
  async #shutdown(mode: ShutdownMode): Promise<ShutdownResult> {
    // Closed: nothing to stop from here (another host may keep the scheduler running for its
    // coroutines), but the count of its shutdown, if it had one (the close's, as the last host,
    // or another host's), is known. Before, `{ abandoned: 0 }` whatever the shutdown abandoned.
    if (!isLibraryOpen(this.#lib)) return this.#abandoned();
    const sym = librarySymbols(this.#lib, "shut down runtime");
    if (schedInfo(this.#lib, "shut down runtime")[6] !== this.#generation) {
      // Shut down already, and a later scheduler started: someone else's to stop. (While this
      // one shuts down, a cancel still goes through: it ends a finishing shutdown's drain.)
      if (current === this) current = null;
      return this.#abandoned();
    }
    // At once, not after the wait: runtime() must not hand out the runtime shutting down.
    if (current === this) current = null;
    // On a helper thread: joining a worker that runs a long coroutine froze the event loop.
    // This generation's only: the check above is no guard once the call is on its thread. A
    // shutdown of one already shut down (a second call) stopped a runtime() started meanwhile,
    // here or in a Worker, or made it fail as a shutdown in progress.
    const done = (async () => {
      unwrap(
        await sym.kc_sched_shutdown_gen_async(
          mode === "cancel" ? SHUTDOWN_CANCEL : SHUTDOWN_FINISH,
          this.#generation,
        ),
        "shut down runtime",
      );
    })();
    // What a drain meeting this shutdown follows (`#afterShutdown`): the first call's
    // promise (a cancel ends a finishing one's drain, so both end together), and a cancel
    // asked for by either.
    const stopping = this.#stopping ??= { cancel: false, done, inProgress: true };
    if (mode === "cancel" && stopping.inProgress) stopping.cancel = true; // not once finished
    // Until the native call has begun the scheduler still reads as running: runtime() handed
    // out a Runtime of the generation shutting down (`current` is null), whose spawns this
    // shutdown then abandoned. It throws as for a shutdown in progress instead.
    const first = stopping.done === done;
    if (first) shuttingDown.add(shutdownKey(this.#lib, this.#generation));
    try {
      await done;
    } finally {
      if (first) {
        stopping.inProgress = false;
        shuttingDown.delete(shutdownKey(this.#lib, this.#generation));
      }
    }
    // A second call (a cancel cutting a finish short) also waits for the first call's native
    // shutdown: the two return on their helper threads in either order once the workers are
    // joined, and until the first's has, kc_sched_start refuses (KC_ESHUTDOWN). Awaited after
    // the first call's own await of it (registered first), so that call's bookkeeping above has
    // run too. Before, `await rt.shutdown("cancel")` could resolve with the first still under
    // way, and a runtime() right after it was a ShutdownError (3 runs in 5). Its error is the
    // first call's to report.
    if (!first) await stopping.done.then(() => {}, () => {});
    // Only while no scheduler runs or still shuts down: a later one may have started before
    // this settled (a second call's native call ends after the runtime() that followed it, a
    // first one's before a turn of the event loop that started one), and the cells its
    // coroutines write into were let go with the rest. What stays goes as a drain or spawn finds
    // it done with.
    if (allEnded(this.#lib)) unpinAll(this.#lib);
    if (current === this) current = null;
    return this.#abandoned();
  }

  /**
   * How many coroutines the shutdown of this Runtime's generation abandoned, once its workers
   * were joined (`kc_sched_abandoned`), also once the library was closed (it stays loaded, and
   * its record of each generation's end with it: `symbolsToReleaseOf`): the close's own shutdown
   * (the last host's), or another host's. 0 while none has joined it (a closed library whose
   * scheduler runs on for another host, a close that gave up on a coroutine that never yields),
   * or for a generation that ended too long ago to be remembered (64 restarts). Before, 0
   * whenever the library was closed, also after a close that abandoned coroutines.
   */
  #abandoned(): ShutdownResult {
    const n = symbolsToReleaseOf(this.#lib).kc_sched_abandoned(this.#generation);
    return { abandoned: n >= 0 ? n : 0 };
  }

  /**
   * `shutdown("cancel")`, for `await using`. The scheduler is the process's: this stops it for
   * every isolate that uses it.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    Runtime.#checkThis(this, "shut down runtime");
    // Runtime's own shutdown, not the prototype's `shutdown`, which a caller may redefine
    // (before, a redefined one made `await using rt` run it in place of the shutdown).
    await runtimeShutdown.call(this, "cancel");
  }
}

/** Runtime's own `shutdown`, captured as the module loads (`[Symbol.asyncDispose]`). */
const runtimeShutdown = Runtime.prototype.shutdown;

let current: Runtime | null = null;

/** The generations a first `shutdown()` call in this isolate is shutting down now. */
const shuttingDown = new Set<string>();

/**
 * A `shuttingDown` entry: the generation of one loaded library's scheduler (each loaded copy of
 * the library counts its generations itself: a generation number alone named another copy's).
 */
function shutdownKey(lib: Library, generation: bigint): string {
  return `${loadedIdOf(lib)}:${generation}`;
}

/** What `runtime()` says while a shutdown of the scheduler is in progress. */
const SHUTTING_DOWN =
  "a shutdown of the runtime is still in progress; await its shutdown(), then call runtime()";

/**
 * Starts the native scheduler with `options`, or returns the running one. Passing options that
 * contradict the running scheduler (a different worker count or stack size, or a different
 * `fpControl` or `slabStacks` given explicitly) is a `RangeError`.
 */
export function runtime(options: RuntimeOptions = {}): Runtime {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot start runtime: options must be an object, received ${describe(options)}`,
    );
  }
  checkReadable("start runtime", options); // a revoked Proxy: named, not the engine's error
  const { workers = 0, stackSize = 0, fpControl = false, slabStacks = false } = options;
  checkOptionNames("start runtime", options, RUNTIME_OPTIONS);
  for (const [name, v] of [["fpControl", fpControl], ["slabStacks", slabStacks]] as const) {
    if (typeof v !== "boolean") {
      throw new TypeError(
        `Cannot start runtime: ${name} must be a boolean, received ${describe(v)}`,
      );
    }
  }
  // Not a number at all ("2"): a TypeError, as every option of the wrong type; out of range, a
  // RangeError.
  if (typeof workers !== "number" || !Number.isInteger(workers) || workers < 0 || workers > 1024) {
    throw new (typeof workers === "number" ? RangeError : TypeError)(
      `Cannot start runtime: workers must be an integer from 0 to 1024, received ${
        describe(workers)
      }`,
    );
  }
  const stack = checkStackSize("start runtime", stackSize);
  const lib = library();
  const sym = librarySymbols(lib, "start runtime");
  let info = schedInfo(lib, "start runtime");
  if (info[3] === 1n) {
    if (shuttingDown.has(shutdownKey(lib, info[6]))) {
      throw new ShutdownError("start runtime", SHUTTING_DOWN);
    }
    const running = Number(info[0]);
    if (workers !== 0 && workers !== running) {
      throw new RangeError(
        `Cannot start runtime: it is already running with ${running} worker${
          running === 1 ? "" : "s"
        }, received workers: ${workers}`,
      );
    }
    // Before, only the worker count was compared: a caller asking for slab stacks (to hold a
    // million coroutines) silently got the running scheduler's guarded ones.
    const runningStack = Number(info[4]), runningFlags = Number(info[5]);
    if (stack !== 0 && stack !== runningStack) {
      throw new RangeError(
        `Cannot start runtime: it is already running with ${runningStack}-byte stacks, received stackSize: ${stackSize}`,
      );
    }
    for (
      const [name, given, bit] of [
        ["fpControl", options.fpControl, 1],
        ["slabStacks", options.slabStacks, 2],
      ] as const
    ) {
      const on = (runningFlags & bit) !== 0;
      if (given !== undefined && given !== on) {
        throw new RangeError(
          `Cannot start runtime: it is already running with ${name} ${on}, received ${name}: ${given}`,
        );
      }
    }
    // A Runtime of a library closed since (closeLibrary while a Worker kept the scheduler
    // running) is replaced by one of the library open now, and one of a scheduler shut down
    // since (by a Worker, which then started another) by one of the running scheduler.
    if (current === null || !drives(current, lib, info[6])) {
      current = new Runtime(MAKE, lib, running, info[6]);
    }
    return current;
  }
  const flags = (fpControl ? 1 : 0) | (slabStacks ? 2 : 0);
  // `+ 0`: -0 as 0 (FFI refuses a negative zero where it takes an integer).
  const rc = sym.kc_sched_start(workers + 0, stack, flags);
  if (rc === Status.ESHUTDOWN) {
    throw new ShutdownError("start runtime", SHUTTING_DOWN);
  }
  unwrap(rc, "start runtime");
  info = schedInfo(lib, "start runtime");
  current = new Runtime(MAKE, lib, Number(info[0]), info[6]);
  return current;
}

/**
 * Finds `symbol` (a C-ABI function `void symbol(void *arg)`) in the shared library at
 * `libraryPath`, for {@linkcode Runtime.spawn}. The library stays loaded. Throws
 * `KcoroError` (`KC_EINVAL`) if the library or the symbol cannot be found; its message says which
 * (with the loader's reason for a library that does not load).
 */
export function resolveNative(libraryPath: string, symbol: string): NativeFunction {
  if (typeof libraryPath !== "string" || typeof symbol !== "string") {
    throw new TypeError(
      `Cannot resolve native function: library and symbol must be strings, received ${
        describe(libraryPath)
      } and ${describe(symbol)}`,
    );
  }
  // C reads each up to its first NUL: "libc.so.6\0x" found getpid in libc.so.6, and the
  // NativeFunction said it came from another library. An empty library path is dlopen's main
  // program, whose global scope holds every library loaded with RTLD_GLOBAL: "" (an unset
  // variable's `?? ""`) found `malloc` in Deno's process and called it "" (openLibrary refuses
  // an empty path as well); an empty symbol names nothing.
  for (const [name, v] of [["library", libraryPath], ["symbol", symbol]] as const) {
    if (v === "") {
      throw new TypeError(
        `Cannot resolve native function: ${name} must be a non-empty string, received ""`,
      );
    }
    if (v.includes("\0")) {
      throw new TypeError(
        `Cannot resolve native function: ${name} must not contain a NUL character, received ${
          describe(v)
        }`,
      );
    }
  }
  const sym = librarySymbols(library(), "resolve native function");
  const pointer = sym.kc_resolve(cString(libraryPath), cString(symbol));
  if (pointer === null) {
    throw new KcoroError(
      Status.EINVAL,
      // In the form of every other bad argument (it said "Cannot resolve native function f in
      // lib.so: ...", with no "received").
      `Cannot resolve native function: ${whyUnresolved(libraryPath)}, received library ${
        describe(libraryPath)
      } and symbol ${describe(symbol)}`,
    );
  }
  return { library: libraryPath, symbol, pointer: pointer! };
}

/**
 * Why kc_resolve found nothing: the loader's own reason when the library does not load (Deno's
 * dlopen error carries dlerror's text: no such file, a wrong ELF class, a missing dependency),
 * else the symbol is missing. Only on the failure path: one more dlopen, closed at once.
 */
function whyUnresolved(libraryPath: string): string {
  try {
    Deno.dlopen(libraryPath, {}).close();
  } catch (e) {
    // Deno words it "Could not open library: Could not open library: <dlerror>".
    const why = (e instanceof Error ? e.message : String(e)).replace(
      /^(Could not open library: )+/,
      "",
    );
    // dlerror names the library whole ("<path>: cannot open shared object file: File name too
    // long"): a path over 4096 characters by its head and length, as `received` names it, and the
    // rest cut so too (a path of 2**20 characters made a message as long).
    const said = why.startsWith(`${libraryPath}: `)
      ? `${cutShort(libraryPath, "path")}${why.slice(libraryPath.length)}`
      : why;
    return `the library does not load (${cutShort(said, "reason")})`;
  }
  return "the library has no such symbol";
}

refuseAsValue(Runtime, "a Runtime", "call `runtime()` where it is needed", NOT_CLONEABLE);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(Runtime.prototype, "Runtime");

// `using rt = runtime()` (sync) is refused by name, as a CoroutineScope's is: its disposal shuts
// the scheduler down, which waits on a helper thread; one that only began the shutdown would let
// the block's code after it meet a scheduler still shutting down, its outcome unseen.
refuseSyncDispose(
  Runtime.prototype,
  "runtime",
  "disposing a runtime shuts the scheduler down, which waits for its coroutines",
);

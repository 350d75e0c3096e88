/**
 * Native scopes from TypeScript: {@linkcode NativeScope} over `kc_scope_*`, and the native scope
 * a TypeScript scope owns ({@linkcode nativeScope}).
 *
 * A native scope owns native coroutines (built-ins or C-ABI functions from
 * {@linkcode resolveNative}) launched through it, and every coroutine they `kc_spawn`. Each child
 * runs with the scope's native context: its `job` key names the scope and its `cancellation`
 * key the scope's token, so a channel operation, select or `kc_sleep_ns` that waits inside a
 * child fails with `KC_EINTR` when the scope is cancelled, and `kc_cancelled()` turns 1.
 *
 * `nativeScope(scope)` gives the native scope that a TypeScript scope (or task) owns, made on
 * first use. The two are one scope seen from two sides:
 * - cancelling the TypeScript scope (or its failure, a timeout, its parent's cancellation)
 *   cancels the native scope, so every native child sees it through its context's token;
 * - cancelling the native scope natively (`kc_scope_cancel` from C, a child calling it, a parent
 *   native scope) cancels the TypeScript scope with a CancellationError, heard while native
 *   children run (a `kc_scope_watch` off the JavaScript thread) or at the next launch;
 * - the TypeScript scope completes only when its native children have finished too: while they
 *   run, a job standing for them is among the scope's children.
 *
 * While native children run, one nonblocking FFI call per owning scope waits for them (it keeps
 * the process alive, as any unfinished task does); a scope with no native child running waits
 * on nothing, so an idle process exits.
 *
 * @module
 */
import {
  inWorker,
  isLibraryOpen,
  type Library,
  library,
  librarySymbols,
  symbolsToReleaseOf,
} from "../ffi/load.ts";
import {
  abortHeard,
  abortReason,
  CancellationError,
  checkOptionNames,
  checkOptions,
  checkSignal,
  describe,
  givenUpBy,
  InvalidHandleError,
  isAborted,
  KcoroError,
  LibraryClosedError,
  listenAbortNamed,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  refuseSyncDispose,
  reportUncaught,
  ShutdownError,
  Status,
  TimeoutError,
  unlistenAbort,
  unwrap,
} from "./errors.ts";
import {
  attachTo,
  cancelJob,
  completeBody,
  contextOf,
  failBody,
  isCancelledJob,
  isCompletedJob,
  isJob,
  type Job,
  type JobHooks,
  jobStateOf,
  JobSupport,
  onJobCompletion,
  PARENTS_OWN,
  REPORTS_FAILURE,
  scopeOwnJob,
  signalOfJob,
  startJob,
} from "./job.ts";
import { liveDeadline } from "./context.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";
import {
  generationOf,
  handleOut,
  nativeEntry,
  type NativeFunction,
  pinCells,
  pinScoped,
  runtime,
  type ScheduledBuiltin,
  schedulerRunning,
  unpinIdleScope,
  unpinScope,
  unwrapSpawn,
} from "./runtime.ts";
import type { CoroutineScope } from "./scope.ts";
import { checkMs, NEVER_MS } from "./time.ts";

/** Options for {@linkcode NativeScope.create}. */
export interface NativeScopeOptions {
  /** A native parent: cancelling it cancels this scope (and everything below). */
  parent?: NativeScope;
}
/** NativeScopeOptions' names: any other own key is refused (`checkOptionNames`). */
const CREATE_OPTIONS = optionNames<NativeScopeOptions>({ parent: true });

/** Options for {@linkcode NativeScope.wait}. */
export interface NativeWaitOptions {
  /** Aborting it rejects the wait with the signal's reason (the children keep running). */
  signal?: AbortSignal;
  /**
   * Milliseconds; past them the wait rejects with a TimeoutError (a CancellationError). Not a
   * number is a TypeError, NaN a RangeError (as `delay`'s).
   */
  timeout?: number;
}
/** NativeWaitOptions' names: any other own key is refused (`checkOptionNames`). */
const WAIT_OPTIONS = optionNames<NativeWaitOptions>({ signal: true, timeout: true });

/** Why waiting for a scope whose children a runtime shutdown cancelled fails. */
const ABANDONED =
  "a runtime shutdown abandoned this scope's coroutines before they finished (the runtime " +
  "running now is a later one)";

/** Why a launch into (or a child scope of) a scope of a runtime shut down since fails. */
const OLD_RUNTIME = "belongs to a runtime that was shut down (the runtime running now is a " +
  "later one: launch into a NativeScope.create() made on it)";

/**
 * How long one native wait blocks before looking at the signal again. Every wait is sliced,
 * with a signal or not: a nonblocking call holds a thread of Deno's blocking pool until it
 * returns, and a Worker terminated during an unsliced wait left that thread (and two fds) behind
 * for as long as the children ran, for good if they never end.
 */
const SLICE_NS = 100_000_000n;

/** How long a failed wait for native children (`NativeChildren`'s) pauses before the next. */
const RETRY_MS = 10;

/**
 * The monotonic nanosecond `ms` milliseconds after `now` (kc_now_ns), at least 1 ns after it;
 * 0n (no deadline) for `ms` of 2^64 ns or more (`NEVER_MS`, also Infinity), the bound from now
 * at which a timer arms nothing (src/time.ts `timer`). Below it, a time past what 64 bits of the
 * native clock hold is `LAST_NS`, which it never reaches: the bound was
 * counted from the clock's origin, 2^64 ns less the time since boot from now, so a withTimeout
 * just short of 2^64 ns armed a timer while its native children got no deadline.
 */
function deadlineNs(now: bigint, ms: number): bigint {
  if (Number.isNaN(ms) || ms >= NEVER_MS) return 0n;
  // Past (also -Infinity): a microsecond from now, which has passed by the time it is read.
  const at = now + BigInt(Math.max(1, Math.ceil(Math.max(0, ms) * 1e3))) * 1000n;
  return at < LAST_NS ? at : LAST_NS;
}

/**
 * The latest deadline a native scope takes: one the clock never reaches. Not 2^64 - 1, the native
 * context's reserved value (its tombstone), which `kc_scope_set_deadline` refuses (KC_EINVAL):
 * where a Deadline came to exactly that, getting the native scope threw.
 */
const LAST_NS = 2n ** 64n - 2n;

/** The native scopes owned by TypeScript jobs. */
const owned = new WeakMap<JobSupport<unknown>, NativeScope>();

/**
 * Makes the native scope `owner` owns: cancelled with it, destroyed when it completes. Only
 * `nativeScope` calls it, once per job (`owned`). Set by a static block of NativeScope.
 */
let ownScope: (owner: JobSupport<unknown>) => NativeScope;

/**
 * Called by NativeChildren once the children it stood for are gone: `ns` makes a new one for
 * its next launch. Set by a static block of NativeScope.
 */
let childrenDone: (ns: NativeScope, children: NativeChildren) => void;

/**
 * What NativeChildren's watch reads of its native scope: its library, whether it is destroyed,
 * and whether its dispose found the children abandoned (a shutdown, the library closed). Set by
 * a static block of NativeScope. Before, public getters (`_lib`, `_destroyed`, `_abandoned`),
 * read by any caller as members of every native scope, which the others (`_own`,
 * `_childrenDone`) had stopped being.
 */
let libOf: (ns: NativeScope) => Library;
/** See `libOf`. */
let destroyedOf: (ns: NativeScope) => boolean;
/** See `libOf`. */
let abandonedOf: (ns: NativeScope) => boolean;
/**
 * A native scope's own cancel and handle (`cancel()`, `handle`), for kcoro's own calls: not the
 * prototype's members, which a caller may redefine (`NativeScope.prototype.cancel = ...`). Before,
 * such a redefinition steered a task's cancel of its native scope and NativeChildren's watch.
 */
let cancelOf: (ns: NativeScope) => boolean;
/** See `cancelOf`. */
let handleOf: (ns: NativeScope) => number;

function nativeCancellation(): CancellationError {
  return new CancellationError("Cancelled: the native scope was cancelled");
}

/** A free-standing scope's native side, for the finaliser of a scope dropped undisposed. */
interface Dropped {
  lib: Library;
  handle: number;
}

/**
 * Free-standing scopes collected undisposed whose children still ran: destroyed once none does
 * (looked at again whenever the list doubles). Destroying one cancels it, so it waits for its
 * children to end by themselves first: dropping a scope object must not cancel what it runs.
 */
let orphans: Dropped[] = [];
let orphansAt = 16;

/**
 * Destroys `d` if none of its children runs; true if it is gone. Also once its library was
 * closed (`symbolsToReleaseOf`): the library stays loaded, and every native scope with it, so a
 * scope dropped then and never destroyed stayed for good. Its children have ended then unless
 * another host keeps the scheduler running, in which case it waits for them as it would open.
 */
function destroyIfIdle(d: Dropped): boolean {
  const sym = symbolsToReleaseOf(d.lib);
  const live = sym.kc_scope_live(d.handle);
  if (live > 0) return false;
  unpinScope(d.lib, d.handle);
  sym.kc_scope_destroy(d.handle); // a stale handle (C code destroyed it) only says so
  return true;
}

const droppedScopes = new FinalizationRegistry<Dropped>((d) => {
  try {
    if (destroyIfIdle(d)) return;
    orphans.push(d);
    if (orphans.length < orphansAt) return;
    orphans = orphans.filter((o) => !destroyIfIdle(o));
    orphansAt = Math.max(16, 2 * orphans.length);
  } catch (e) {
    reportUncaught(e); // a finalizer must not throw; nothing here should
  }
});

/** What a structured clone of a NativeScope fails on (`NativeScope._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a NativeScope: it lives in its isolate; send its handle to native code, or make " +
    "one in the Worker",
);

/** The key only this module holds (NativeScope's constructor's guard). */
const MAKE: unique symbol = Symbol("kcoro.NativeScope");

/**
 * A native scope (`kc_scope_*`): launches native coroutines as its children, cancels them all,
 * and waits for them. Make a free-standing one with {@linkcode NativeScope.create} (dispose it
 * with `await using`), or get the one a TypeScript scope owns with {@linkcode nativeScope}. One
 * a Worker made and did not dispose goes once the Worker has ended and its children are done.
 *
 * @example
 * ```ts
 * import { NativeScope, runtime, Status } from "../mod.ts";
 * import assert from "node:assert/strict";
 * await using scope = NativeScope.create();
 * const cells = runtime().cells([60_000n, 0n, 0n]); // sleep a minute
 * scope.launch("cancellable-sleeper", cells);
 * assert.equal(scope.live, 1);
 * await assert.rejects(scope.wait({ timeout: 1 }), { name: "TimeoutError" });
 * assert.equal(scope.cancel(), true); // the sleep ends at once with KC_EINTR
 * await scope.wait();
 * assert.equal(BigInt.asIntN(64, cells[2]), BigInt(Status.EINTR));
 * ```
 */
export class NativeScope implements AsyncDisposable {
  /**
   * @ignore First of the fields structured cloning sees: `postMessage` or `structuredClone` of
   * one throws a DataCloneError with this symbol's description as its message. It cloned as `{}`.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  readonly #lib: Library;
  readonly #handle: number;
  readonly #owner: JobSupport<unknown> | null;
  #destroyed = false;
  /** How a dispose's wait found the children, when they did not finish (`#settleDestroyed`). */
  #abandoned: "shutdown" | "closed" | null = null;
  /** The job standing for the running native children of an owned scope. */
  #children: NativeChildren | null = null;

  private constructor(
    key: typeof MAKE,
    lib: Library,
    handle: number,
    owner: JobSupport<unknown> | null,
    parent: NativeScope | null,
  ) {
    // Made by create() (or a scope's own) only: a `new NativeScope()` from JavaScript (the
    // constructor is private to the type checker only) threw the engine's errors at each call.
    if (key !== MAKE) {
      throw new TypeError(
        `Cannot construct NativeScope: use NativeScope.create(), received ${describe(key)}`,
      );
    }
    this.#lib = lib;
    this.#handle = handle;
    this.#owner = owner;
    this.#parent = parent;
    Object.freeze(this); // `_notCloneable` fixed (errors.ts, `refuseAsValue`)
  }

  /** The native scope this one was created under (`parent`), if any. */
  readonly #parent: NativeScope | null;

  /**
   * A free-standing native scope, which belongs to the runtime running now (started with default
   * options if none runs), or a child of `parent`, on its runtime: a ShutdownError once that one
   * is shut down (also when another isolate shuts the runtime down and starts a later one while
   * the scope is made: it is never made on a runtime other than the one it was meant for).
   */
  static create(options: NativeScopeOptions = {}): NativeScope {
    const op = "create native scope";
    checkOptions(op, options);
    const parent = options.parent;
    checkOptionNames(op, options, CREATE_OPTIONS);
    // The private field, not instanceof: Object.create(NativeScope.prototype) passed that, and
    // reading its handle threw the engine's "Receiver must be an instance of class NativeScope".
    if (parent !== undefined && !NativeScope.#isScope(parent)) {
      throw new TypeError(
        `Cannot ${op}: parent must be a NativeScope, received ${describe(parent)}`,
      );
    }
    return NativeScope.#make(op, parent ?? null, null);
  }

  static #isScope(x: unknown): x is NativeScope {
    return typeof x === "object" && x !== null && #handle in x;
  }

  /**
   * `self` (a method's `this`) is a NativeScope, else a named TypeError: a method called on
   * another object (`Object.create(NativeScope.prototype)`, which `instanceof` takes, given as
   * the scope of `produce`) threw the engine's "Receiver must be an instance of class".
   */
  static #check(self: unknown, op: string): void {
    if (!NativeScope.#isScope(self)) {
      throw new TypeError(`Cannot ${op}: this is not a NativeScope, received ${describe(self)}`);
    }
  }

  static #make(
    op: string,
    parent: NativeScope | null,
    owner: JobSupport<unknown> | null,
  ): NativeScope {
    // Named as the parent: "the native scope was destroyed" read as the scope being made.
    if (parent !== null && parent.#destroyed) {
      throw new InvalidHandleError(
        `Cannot ${op}: the parent native scope was destroyed, received a destroyed NativeScope ` +
          `(handle ${parent.#handle})`,
      );
    }
    const parentHandle = parent === null ? 0 : parent.#open(op);
    // A child scope belongs to its parent's runtime: none is started for it (one refused for a
    // parent of a runtime shut down started a runtime it could not use).
    const rt = parent === null ? runtime() : null;
    const lib = library();
    const out = new Uint32Array(1);
    const sym = librarySymbols(lib, op);
    // A free-standing scope goes onto the runtime just returned, checked where no restart can
    // come in between (kc_scope_create_gen). Before, another isolate's shutdown and restart
    // between runtime() and kc_scope_create made the scope on the later scheduler, whose stacks
    // may be smaller than what its children were meant for.
    const rc = rt === null
      ? sym.kc_scope_create(parentHandle, out)
      : sym.kc_scope_create_gen(0, out, generationOf(rt));
    if (rc === Status.ESHUTDOWN && schedulerRunning(lib)) {
      // The runtime runs, but the parent belongs to one shut down: so would its child.
      if (parent !== null) throw new ShutdownError(op, `the parent native scope ${OLD_RUNTIME}`);
      throw new ShutdownError(
        op,
        "the runtime was shut down while the scope was made, and the one running now is a later one (runtime() returns it)",
      );
    }
    unwrap(rc, op);
    // In a Worker the scope is also held by the Worker's thread, whose end destroys it once no
    // child of it runs (kc_scope_hold; not cancelled, as the collector's destroy would not):
    // `droppedScopes`, and an owner's completion, never come once the Worker has ended (its
    // finalizers and callbacks never run again), so each scope it had not disposed stayed, for
    // the life of the process. `#destroy` forgets the hold (kc_scope_destroy on this thread).
    if (inWorker) {
      const hrc = sym.kc_scope_hold(out[0]);
      if (hrc < 0) {
        sym.kc_scope_destroy(out[0]);
        unwrap(hrc, op);
      }
    }
    const ns = new NativeScope(MAKE, lib, out[0], owner, parent);
    // A free-standing scope dropped without dispose is destroyed once collected and idle, as a
    // dropped Channel is: 80,000 such scopes held 40 MB and counted towards the handle table's
    // limit for good. An owned one goes with its owner.
    if (owner === null) droppedScopes.register(ns, { lib, handle: out[0] }, ns);
    return ns;
  }

  // The body of `ownScope` (below, its doc): inside the class for its private members, not a
  // public static `_own` of it, through which any caller made a second native scope for a job
  // (`NativeScope._own(task)`, besides the one `nativeScope(task)` keeps), or one for a job
  // already final, whose completion handler then destroyed it at once.
  // So is `childrenDone`'s: as a public `_childrenDone`, `ns._childrenDone(job)` with the job
  // that stands for its children (listed in its owner's `children`) made the next launch start a
  // second one, the first still watching.
  static {
    ownScope = (owner) => NativeScope.#own(owner);
    childrenDone = (ns, children) => {
      if (ns.#children === children) ns.#children = null;
    };
    libOf = (ns) => ns.#lib;
    destroyedOf = (ns) => ns.#destroyed;
    abandonedOf = (ns) => ns.#abandoned !== null;
    cancelOf = (ns) => ns.#cancel();
    handleOf = (ns) => ns.#handle;
  }

  static #own(owner: JobSupport<unknown>): NativeScope {
    const ns = NativeScope.#make("get native scope", null, owner);
    // The owner's deadline (withTimeout) goes into the native children's context.
    // Not that of a withTimeout already finished, whose context the owner was given.
    const deadline = liveDeadline(contextOf(owner)); // its own, not a redefined getter's
    if (deadline !== undefined) {
      const sym = librarySymbols(ns.#lib, "get native scope");
      const at = deadlineNs(sym.kc_now_ns(), deadline - performance.now());
      // None past what 64 bits of nanoseconds hold (Infinity: no timeout): the owner's own
      // timer still cancels the scope, and with it the native children.
      if (at !== 0n) {
        try {
          unwrap(sym.kc_scope_set_deadline(ns.#handle, at), "get native scope");
        } catch (e) {
          ns.#destroy();
          throw e;
        }
      }
    }
    if (isCancelledJob(owner)) { // the owner's own state and signal, not redefined getters
      ns.#cancel();
    } else {
      const signal = signalOfJob(owner);
      // The library may have closed meanwhile (the native scope went with it). Only once the
      // signal aborted: a call before (the caller's code that reached the listener through the
      // engine's listeners property of the task's signal) changes nothing. Before, it cancelled
      // the native scope of a task still active. An "abort" Event the caller dispatched on the
      // task's signal, which aborts nothing, drops this `once` listener: it listens again
      // (`abortHeard`). Before, the task's cancel later left the native scope running, and the
      // task waited for its children (a sleeper: its whole sleep).
      const onAbort = (event?: Event) => {
        if (abortHeard(signal, onAbort, event) && isLibraryOpen(ns.#lib)) ns.#cancel();
      };
      // Listened to by EventTarget's own members (`listenAbortNamed`, `unlistenAbort`), as every
      // wait listens: not the signal's `addEventListener`, which a caller may redefine on it or
      // on EventTarget's prototype (before, such a redefinition left the native scope deaf to
      // the task's cancel, its children running on).
      try {
        listenAbortNamed("get native scope", signal, onAbort);
      } catch (e) {
        ns.#destroy();
        throw e;
      }
      onJobCompletion(owner, () => unlistenAbort(signal, onAbort));
    }
    // JobSupport's own invokeOnCompletion (`onJobCompletion`): one a caller redefined on the
    // job's prototype would leave the native scope undestroyed at the owner's end.
    onJobCompletion(owner, () => ns.#destroy());
    return ns;
  }

  #open(op: string): number {
    if (this.#destroyed) {
      throw new InvalidHandleError(`Cannot ${op}: the native scope was destroyed`);
    }
    return this.#handle;
  }

  /** The native handle (for the C ABI: pass it to C code that calls `kc_scope_*`). */
  get handle(): number {
    NativeScope.#check(this, "read native scope");
    return this.#handle;
  }

  /** How many children have not finished. */
  get live(): number {
    const op = "read native scope";
    NativeScope.#check(this, op);
    return unwrap(librarySymbols(this.#lib, op).kc_scope_live(this.#open(op)), op);
  }

  /** True once the scope is cancelled, from either side. */
  get isCancelled(): boolean {
    const op = "read native scope";
    NativeScope.#check(this, op);
    return librarySymbols(this.#lib, op).kc_scope_poll(this.#open(op), 1n) === Status.EINTR;
  }

  /**
   * Runs `entry` as a child: a built-in (given its `BigUint64Array` of cells) or a function
   * from {@linkcode resolveNative} (given a pointer, or cells). The child and everything it
   * spawns see the scope's cancellation. Throws a CancellationError once the scope is cancelled,
   * or an owned scope's owner is cancelling (nothing starts then); in an owned scope that also
   * cancels the owner, if a native cancellation had not reached it yet. Throws a ShutdownError
   * once the runtime the scope was made on is shut down, also after {@linkcode runtime} started
   * a later one.
   */
  launch(entry: ScheduledBuiltin | NativeFunction, cells?: BigUint64Array): void;
  /**
   * Runs the function `entry` from {@linkcode resolveNative} as a child, called with `arg` (a
   * pointer; null by default) as its `void *arg`. Nothing keeps what `arg` points to alive or
   * in place: it must outlive the child's use of it. Throws as the other overload does.
   */
  launch(entry: NativeFunction, arg?: Deno.PointerValue): void;
  launch(entry: ScheduledBuiltin | NativeFunction, arg?: BigUint64Array | Deno.PointerValue): void {
    const op = "launch native coroutine";
    NativeScope.#check(this, op);
    const handle = this.#open(op);
    const e = nativeEntry(op, this.#lib, entry, arg);
    // An owner already cancelling whose cancel has not reached this scope yet (a scope whose
    // follow cancel waits in the queue, reading cancelling; the owner's signal listeners ahead
    // of this scope's): cancelled now, so that the launch is refused below as on a cancelled
    // scope, as a launch on the owner is. Before, it started a child there. Under this call's
    // name, as the launch's own call (a closed library's error names the launch).
    if (this.#owner !== null && isCancelledJob(this.#owner)) {
      unwrap(librarySymbols(this.#lib, op).kc_scope_cancel(handle), op);
    }
    const builtin = typeof entry === "string" && e.pin !== null;
    if (!builtin && e.pin !== null) unpinIdleScope(this.#lib, handle);
    const rc = librarySymbols(this.#lib, op).kc_scope_launch(
      handle,
      e.fn,
      e.arg,
      0,
      builtin ? handleOut : null,
    );
    if (rc === Status.ECANCELED) {
      const owner = this.#owner;
      if (owner !== null && !isCancelledJob(owner)) cancelJob(owner, nativeCancellation());
      throw new CancellationError(`Cannot ${op}: the native scope was cancelled`);
    }
    // The runtime runs, but it is a later one than this scope's (whose children, if any ran
    // at the shutdown, were abandoned): the scope takes no more.
    if (rc === Status.ESHUTDOWN && schedulerRunning(this.#lib)) {
      throw new ShutdownError(op, `this native scope ${OLD_RUNTIME}`);
    }
    unwrapSpawn(rc, op);
    // Module-level, not on this object: a scope dropped while its children run must not let
    // their cells be collected (a SharedArrayBuffer freed under a sleeper crashed the process).
    // A built-in's by its coroutine, a NativeFunction's by this scope (its children may hand
    // them to coroutines they spawn, which the scope counts too).
    if (e.pin !== null) {
      if (builtin) pinCells(this.#lib, handleOut[0], e.pin);
      else pinScoped(this.#lib, handle, e.pin);
    }
    // This scope's owner, and the owner of every native scope above it, waits for the child:
    // a native scope counts its descendants' children as its own.
    this.#watchChildren();
    for (let s = this.#parent; s !== null; s = s.#parent) s.#watchChildren();
  }

  /** An owned scope with children to wait for: its owner waits for them (NativeChildren). */
  #watchChildren(): void {
    if (this.#owner !== null && this.#children === null && !this.#destroyed) {
      this.#children = new NativeChildren(this, this.#owner);
    }
  }

  /** Cancels every child (they see KC_EINTR in their waits); true the first time only. */
  cancel(): boolean {
    NativeScope.#check(this, "cancel native scope");
    return this.#cancel();
  }

  /** `cancel`'s body, which kcoro's own calls run (`cancelOf`), not the prototype's member. */
  #cancel(): boolean {
    const op = "cancel native scope";
    if (this.#destroyed) return false;
    return unwrap(librarySymbols(this.#lib, op).kc_scope_cancel(this.#handle), op) === 1;
  }

  /**
   * Resolves when every child has finished. Rejects with a TimeoutError after `timeout` ms, or
   * with the signal's reason when it aborts; the children keep running either way. Rejects with
   * a LibraryClosedError when the library is closed while it waits (as a channel's wait does),
   * a ShutdownError when the runtime shut down abandoned the children.
   */
  wait(options: NativeWaitOptions = {}): Promise<void> {
    try {
      NativeScope.#check(this, "wait for native scope");
      return this.#wait(options);
    } catch (e) {
      return Promise.reject(e); // bad options, a destroyed scope: rejects, never throws
    }
  }

  #wait(options: NativeWaitOptions): Promise<void> {
    const op = "wait for native scope";
    checkOptions(op, options);
    const { signal, timeout } = options;
    checkOptionNames(op, options, WAIT_OPTIONS);
    checkSignal(op, signal);
    // Not a number: a TypeError; NaN: a RangeError, as delay's (a string was a RangeError).
    if (timeout !== undefined) checkMs(op, timeout, "timeout");
    const handle = this.#open(op);
    if (signal !== undefined && isAborted(signal)) return Promise.reject(abortReason(signal));
    const sym = librarySymbols(this.#lib, op);
    const end = timeout === undefined ? 0n : deadlineNs(sym.kc_now_ns(), Math.max(0, timeout));
    const loop = async () => {
      while (true) {
        // In slices: an abort ends the native wait soon too, and a terminated Worker's wait
        // gives its pool thread back (see SLICE_NS).
        let deadline = end;
        // Closed (closeLibrary) between slices: as a channel's wait that meets the close.
        if (!isLibraryOpen(this.#lib)) throw new LibraryClosedError(op);
        // Destroyed between slices (a dispose that waited too, an owner completing): its
        // children are gone; settled as the dispose found them. Before, the next slice went to
        // the stale handle and rejected with an InvalidHandleError.
        if (this.#destroyed) return this.#settleDestroyed(op);
        const slice = sym.kc_now_ns() + SLICE_NS;
        if (deadline === 0n || slice < deadline) deadline = slice;
        const rc = await sym.kc_scope_wait(handle, deadline);
        if (rc === 0) return;
        if (!isLibraryOpen(this.#lib)) throw new LibraryClosedError(op);
        if (this.#destroyed) return this.#settleDestroyed(op); // during the slice
        if (rc === Status.ESHUTDOWN && schedulerRunning(this.#lib)) {
          throw new ShutdownError(op, ABANDONED);
        }
        if (rc !== Status.ETIME) unwrap(rc, op);
        if (signal !== undefined && isAborted(signal)) return;
        if (end !== 0n && sym.kc_now_ns() >= end) {
          // A timeout of 0 or less looks once (withTimeout's words for it): "after -1 ms"
          // named a wait that never happened.
          throw new TimeoutError(
            timeout! > 0
              ? `Timed out waiting for native children after ${timeout} ms`
              : `Timed out at once waiting for native children: a timeout of ${
                describe(timeout)
              } ms (0 or less) lets the wait look only once`,
          );
        }
      }
    };
    // The listener goes before the wait settles (`givenUpBy`), as a drain's and every other
    // wait's. Before, it was removed a turn of microtasks after (`finally`): still listening as
    // `await` returned.
    return givenUpBy(op, signal, loop);
  }

  /**
   * Cancels the scope, waits for every child, and destroys the handle. An owned scope's
   * (`nativeScope(scope)`) cancels its owner too: `nativeScope(scope)` stays destroyed for the
   * rest of the owner's life, so take it with `const`, not `await using`. Once the library is
   * closed it only destroys the handle (which cancels the scope natively), and cancels an owned
   * scope's owner: nothing can wait any more, but the native scope outlives the close (the library
   * stays loaded) and would stay for good.
   *
   * Cleanup, so it does not reject because the children were abandoned: a runtime shutdown
   * (also one that came while it waited, a later runtime started or not) or a library close
   * while it waits leaves no child to wait for, and the dispose then only destroys the handle,
   * as a Kotlin scope cancelled from outside completes cancelled without its cleanup rethrowing
   * the cancellation. `wait()` still rejects (`ShutdownError`, `LibraryClosedError`) for a caller
   * who must learn the work did not finish. Before, an `await using` block threw on leaving.
   *
   * A wait that fails otherwise (`KC_ENOMEM`) while children still run rejects the dispose with a
   * KcoroError and keeps the scope, cancelled: a second dispose (or `wait()`) waits for them.
   * Before, the scope was destroyed under its running children: its handle died, and nothing
   * could wait for them any more.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    // Rejected with the named TypeError on what is no NativeScope (it rejected with the engine's
    // "Cannot read private member #destroyed").
    NativeScope.#check(this, "dispose native scope");
    if (this.#destroyed) return;
    // An owned scope's dispose ends its owner too, now: the two are one scope, and the
    // owner's native scope is gone for good. Before, the owner learnt of the cancel only
    // if its watch of running children saw it before the destroy (else never). Also once the
    // library is closed: that dispose, which only destroys the handle, left the owner running
    // with a destroyed native scope.
    const owner = this.#owner;
    if (!isLibraryOpen(this.#lib)) {
      if (owner !== null && !isCancelledJob(owner)) cancelJob(owner, nativeCancellation());
      this.#destroy();
      return;
    }
    let kept = false;
    try {
      this.#cancel(); // not the prototype's `cancel` or `wait`, which a caller may redefine
      if (owner !== null && !isCancelledJob(owner)) cancelJob(owner, nativeCancellation());
      await this.#wait({});
    } catch (e) {
      // Abandoned (the runtime gone, the library closed): nothing is left running to wait for.
      if (e instanceof ShutdownError || e instanceof LibraryClosedError) {
        this.#abandoned = e instanceof ShutdownError ? "shutdown" : "closed";
        return;
      }
      // The wait failed otherwise (KC_ENOMEM) with children still running: the scope is kept,
      // cancelled, for a later dispose or wait (or, dropped, the collector once it is idle; an
      // owned one goes as its owner completes, after them). Destroyed, its handle died under
      // them: nothing could wait for them or read their count any more, and the dispose, which
      // stands for "every child has ended", left them running unobserved.
      const live = symbolsToReleaseOf(this.#lib).kc_scope_live(this.#handle);
      if (live <= 0) throw e;
      kept = true;
      if (!(e instanceof KcoroError)) throw e;
      throw new KcoroError(
        e.status,
        `Cannot dispose native scope: the wait for its children failed, so the scope is kept ` +
          `(cancelled, not destroyed under ${live} running ${live === 1 ? "child" : "children"}: ` +
          `dispose it again to wait for them), received ${e.status} from the wait`,
        { cause: e },
      );
    } finally {
      if (!kept) this.#destroy();
    }
  }

  /**
   * A wait that finds the scope destroyed meanwhile: resolved, as its children are gone (a
   * dispose waited for them, an owner completes only after them), unless the dispose found them
   * abandoned: then rejected as that dispose's own wait was.
   */
  #settleDestroyed(op: string): void {
    if (this.#abandoned === "closed") throw new LibraryClosedError(op);
    if (this.#abandoned === "shutdown") throw new ShutdownError(op, ABANDONED);
  }

  #destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    droppedScopes.unregister(this);
    unpinScope(this.#lib, this.#handle);
    // Also once the library was closed (an owner completing after closeLibrary(), a dispose
    // then): the native scope outlives the close, and nothing else would ever destroy it.
    symbolsToReleaseOf(this.#lib).kc_scope_destroy(this.#handle);
  }

  /**
   * `NativeScope`, the name it prints with (`[customInspect]`): `String(x)` and template literals
   * say `[object NativeScope]` instead of `[object Object]`; error messages name an argument of the
   * wrong kind that is one "a NativeScope" (`describe`, by this brand check). Only on an instance:
   * an object made from the prototype (`Object.create`) stays `[object Object]`, so a message does
   * not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #handle in Object(this) ? "NativeScope" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a native scope:
   * `NativeScope { handle, [[owned]], live }`, or `[[destroyed]]: true` (`[[...]]`: no property of
   * it, `inspectAs`). `live` is a native read left out
   * when it fails (a closed library, a stale handle); it never throws.
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#destroyed in Object(this))) return notA("NativeScope");
    if (this.#destroyed) {
      return inspectAs("NativeScope", { "[[destroyed]]": true }, inspect, options);
    }
    const facts: Record<string, unknown> = {
      handle: this.#handle,
      "[[owned]]": this.#owner !== null,
    };
    if (!isLibraryOpen(this.#lib)) facts["[[libraryClosed]]"] = true;
    else {
      const live = librarySymbols(this.#lib, "inspect native scope").kc_scope_live(this.#handle);
      if (live >= 0) facts.live = live;
    }
    return inspectAs("NativeScope", facts, inspect, options);
  }
}

/**
 * A child job of the owning TypeScript scope that stands for the native children while they
 * run, so the scope completes only after them. It watches the native scope off-thread: when
 * the last child finishes it completes; when the native scope is cancelled it cancels the owner
 * (if the cancellation came from the native side) and completes once the children are gone.
 */
class NativeChildren extends JobSupport<void> {
  readonly #scope: NativeScope;
  readonly #owner: JobSupport<unknown>;

  constructor(scope: NativeScope, owner: JobSupport<unknown>) {
    // Abandoned children fail the owner even when it is a supervisor: they are its own work,
    // not a child's failure to isolate (a supervisorScope resolved as if they had finished).
    // Reported when no parent takes it (a free-standing scope, whose join never rejects).
    super(contextOf(owner), PARENTS_OWN | REPORTS_FAILURE, NativeChildren.#hooks);
    this.#scope = scope;
    this.#owner = owner;
    attachTo(this, owner);
    startJob(this); // JobSupport's own start, not one redefined on its prototype
  }

  /** Its JobSupport hooks: `onStart` starts the watch (a private method: see job.ts's JobHooks). */
  static readonly #hooks: JobHooks = Object.freeze({
    onStart: (job: JobSupport<unknown>) => (job as NativeChildren).#onStart(),
    onFinal() {},
    completionWaits: () => false,
  });

  #onStart(): void {
    this.#watch().then((rc) => this.#settle(rc, undefined), (e) => this.#settle(-1, e));
  }

  /**
   * `#finish`, once no child runs. A watch that failed (`KC_ENOMEM`, an answer no wait gives, a
   * throw), not one that saw the children end or abandoned, left them running: they are
   * cancelled and waited for first (`#outlive`). Before, the owner failed at once and then
   * completed (its other children done), which destroyed the native scope under the children
   * still running: the scope owned a native scope's children only until its watch failed.
   */
  async #settle(rc: number, error: unknown): Promise<void> {
    if (error !== undefined || (rc !== 0 && rc !== Status.ESHUTDOWN)) {
      try {
        await this.#outlive();
      } catch {
        // Nothing left to wait with (the library closed, the handle gone): settled as it is.
      }
    }
    this.#finish(rc, error);
  }

  /**
   * Cancels the native scope and waits, in slices, until none of its children runs (or it is
   * destroyed, its children abandoned, the library closed). A slice that fails (the watch's
   * failure again) is followed by the next after a short pause, not at once: a failing native
   * wait comes back at once.
   */
  async #outlive(): Promise<void> {
    const ns = this.#scope;
    const lib = libOf(ns);
    const op = "wait for native children";
    let cancelled = false;
    while (!destroyedOf(ns) && isLibraryOpen(lib)) {
      const sym = librarySymbols(lib, op);
      if (sym.kc_scope_live(handleOf(ns)) <= 0) return; // none left, or the handle went stale
      if (!cancelled) {
        cancelOf(ns);
        cancelled = true;
      }
      const rc = await sym.kc_scope_wait(handleOf(ns), sym.kc_now_ns() + SLICE_NS);
      if (rc === 0 || rc === Status.ESHUTDOWN) return;
      if (rc !== Status.ETIME) await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  /** 0 once the children are gone; else the status that ended the watch. */
  async #watch(): Promise<number> {
    const ns = this.#scope;
    const lib = libOf(ns);
    const sym = librarySymbols(lib, "wait for native children");
    // Each native wait in slices (SLICE_NS: a terminated Worker's must give its thread back).
    const slice = () => sym.kc_now_ns() + SLICE_NS;
    while (!destroyedOf(ns)) {
      let rc = await sym.kc_scope_watch(handleOf(ns), slice());
      // Destroyed during the slice: settled below. Before, the stale handle's KC_EBADH (or the
      // next slice's, sent to it) failed the owner with "Cannot wait for native children: the
      // handle is stale, destroyed or not a kcoro handle", by chance.
      if (destroyedOf(ns)) break;
      if (rc === Status.ETIME && isLibraryOpen(lib)) continue;
      if (rc === Status.EINTR) {
        if (!isCancelledJob(this.#owner)) cancelJob(this.#owner, nativeCancellation());
        if (!isLibraryOpen(lib)) return Status.ESHUTDOWN;
        rc = await sym.kc_scope_wait(handleOf(ns), slice());
        while (rc === Status.ETIME && isLibraryOpen(lib) && !destroyedOf(ns)) {
          rc = await sym.kc_scope_wait(handleOf(ns), slice());
        }
        if (destroyedOf(ns)) break;
      }
      if (!isLibraryOpen(lib)) return Status.ESHUTDOWN;
      // Done, unless a launch came in between the native answer and this turn.
      if (rc !== 0 || ns.live === 0) return rc;
    }
    // Destroyed: by a dispose of the owned scope (`await using ns = nativeScope(scope)`), which
    // cancelled it and waited for its children first, so they are gone; settled as that dispose
    // found them (abandoned by a shutdown or the library's close: the owner fails), as a
    // NativeScope's own wait() settles then.
    return !isLibraryOpen(lib) || abandonedOf(ns) ? Status.ESHUTDOWN : 0;
  }

  /**
   * The watch ended: the children are gone (`rc` 0), or they were abandoned (the runtime shut
   * down, the library closed): that fails the owner, which must not report success for work
   * that never finished.
   */
  #finish(rc: number, error: unknown): void {
    childrenDone(this.#scope, this);
    if (rc === 0) {
      completeBody(this as NativeChildren, undefined);
      return;
    }
    if (error === undefined && rc === Status.ESHUTDOWN) {
      const op = "wait for native children";
      if (!isLibraryOpen(libOf(this.#scope))) error = new LibraryClosedError(op);
      else if (schedulerRunning(libOf(this.#scope))) error = new ShutdownError(op, ABANDONED);
    }
    if (error === undefined) {
      try {
        unwrap(rc, "wait for native children");
        // A positive answer no wait gives: the library's fault, named as such (it was an
        // InvalidHandleError saying only "status N", about no handle), in the house form: the
        // answer received (its status name, KC_RESULT, says only that it was positive).
        error = new KcoroError(
          rc,
          "Cannot wait for native children: internal error, the native wait answered a result no " +
            `wait gives, received ${rc}`,
        );
      } catch (e) {
        error = e;
      }
    }
    failBody(this, error);
  }

  /**
   * `NativeChildren(active)`: kcoro's own state (`jobStateOf`), as a job's `toString` reads it.
   * It ran `this.state`, a getter the caller may put on the job (it is one of its owner's
   * `children`): what that threw escaped `String(job)`, and a string it answered printed whole.
   */
  override toString(): string {
    return `NativeChildren(${jobStateOf(this)})`;
  }
}

/**
 * The native scope owned by `scope` (a TypeScript scope or task), made on first use: cancelling
 * either cancels both, and `scope` completes only when the native children launched through it
 * have finished. The children see the scope's cancellation through their native context (its
 * `job` and `cancellation` keys), as they would in any native scope. Throws a
 * CancellationError for a scope that has completed.
 *
 * @example
 * ```ts
 * import { coroutineScope, nativeScope, runtime, Status } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const cells = runtime().cells([60_000n, 0n, 0n]);
 * await assert.rejects(
 *   coroutineScope(async (scope) => {
 *     nativeScope(scope).launch("cancellable-sleeper", cells); // a native child
 *     await null;
 *     scope.cancel(); // reaches the native sleep at once
 *   }),
 *   { name: "CancellationError" },
 * );
 * // The scope settled only after its native child had finished:
 * assert.equal(cells[1], 1n);
 * assert.equal(BigInt.asIntN(64, cells[2]), BigInt(Status.EINTR));
 * ```
 */
export function nativeScope(scope: CoroutineScope): NativeScope {
  // kcoro's own scope: itself (`scopeOwnJob`), not its `job` getter, which a caller may redefine.
  let job: Job | undefined = scopeOwnJob(scope) ?? undefined;
  if (job === undefined && typeof scope === "object" && scope !== null) {
    // A `job` getter of the caller's (or a Proxy's trap) that throws: a named TypeError, its
    // error the cause, as a `then` that cannot be read is (CompletableDeferred's `complete`).
    // Before, the getter's own error came out of the call unnamed.
    try {
      job = scope.job;
    } catch (e) {
      throw new TypeError(
        `Cannot get native scope: scope.job cannot be read, received ${describe(scope)}`,
        { cause: e },
      );
    }
  }
  if (!isJob(job)) {
    // An object with a `job` that is no kcoro Job (`{ job: 5 }`, a Job look-alike) is told so by
    // that name: before, the message named the scope, which was an object as asked.
    const what = job === undefined
      ? `scope must be a CoroutineScope, received ${describe(scope)}`
      : `scope.job must be a Job, received ${describe(job)}`;
    throw new TypeError(`Cannot get native scope: ${what}`);
  }
  if (isCompletedJob(job)) {
    throw new CancellationError("Cannot get native scope: the scope has already completed");
  }
  let ns = owned.get(job);
  if (ns === undefined) {
    ns = ownScope(job);
    owned.set(job, ns);
  }
  return ns;
}

refuseAsValue(NativeScope, "a NativeScope", "send its `handle` to native code", NOT_CLONEABLE);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(NativeScope.prototype, "NativeScope");

// `using ns = NativeScope.create()` (sync) is refused by name, as a CoroutineScope's is: its
// disposal waits for its children; one that only cancelled them would leave them running past the
// block, the handle never destroyed.
refuseSyncDispose(
  NativeScope.prototype,
  "native scope",
  "disposing a native scope waits for its children",
);

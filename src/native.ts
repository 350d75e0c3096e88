/**
 * Native coroutines driven from TypeScript through the C ABI.
 *
 * A {@linkcode NativeCoroutine} runs one of the built-in entries on its own stack (a C-ABI
 * function of your own runs on the scheduler instead: `Runtime.spawn`); TypeScript resumes it
 * and reads what it yields. The JavaScript
 * side never runs on the coroutine's stack: `resume()` is a synchronous FFI call that returns
 * when the coroutine yields, parks or finishes.
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
  checkOptionNames,
  checkOptions,
  checkStackSize,
  describe,
  InvalidHandleError,
  KcoroError,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  Status,
  unwrap,
} from "./errors.ts";
import { unwrapSpawn } from "./runtime.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";

/** The states of a native coroutine (`KC_STATE_*`). */
export type CoroutineState = "created" | "ready" | "running" | "suspended" | "parked" | "finished";

const stateNames: readonly CoroutineState[] = [
  "created",
  "ready",
  "running",
  "suspended",
  "parked",
  "finished",
];
const PARKED = stateNames.indexOf("parked");
const FINISHED = stateNames.indexOf("finished");

/**
 * Built-in native entry functions (`KC_BUILTIN_*`): `"fib"` yields the first `arg` Fibonacci
 * numbers (from 0n), modulo 2^64 (the 94th, F(93), is the last that fits; later ones wrap);
 * `"yield-loop"` yields 1n, 2n, 3n, ... for ever and ignores `arg` (a
 * `[...co.values()]` over it never ends); `"park-loop"` parks `arg` times, then finishes.
 */
export type Builtin = "fib" | "yield-loop" | "park-loop";

const builtinIds: Record<Builtin, number> = { "fib": 1, "yield-loop": 2, "park-loop": 3 };

/** Options for {@linkcode NativeCoroutine.create}. */
export interface NativeCoroutineOptions {
  /**
   * Integer argument passed to the entry (`fib`: how many numbers; `park-loop`: how many parks;
   * `yield-loop` ignores it and yields for ever).
   */
  arg?: number;
  /** Stack size in bytes: 0 for the default (64 KiB), else 16 KiB to 256 MiB. */
  stackSize?: number;
  /** Save and restore the FP control state across switches (default false). */
  fpControl?: boolean;
  /** Take the stack from a shared slab (canary check, no guard page) instead of its own mapping. */
  slabStack?: boolean;
}
/** NativeCoroutineOptions' names: any other own key is refused (`checkOptionNames`). */
const COROUTINE_OPTIONS = optionNames<NativeCoroutineOptions>({
  arg: true,
  stackSize: true,
  fpControl: true,
  slabStack: true,
});

/** A coroutine's native side, for the finaliser of one dropped undestroyed. */
interface Dropped {
  lib: Library;
  handle: number;
}

/** The key only this module's create() holds (the constructor's guard). */
const MAKE: unique symbol = Symbol("kcoro.NativeCoroutine");

/**
 * Destroys a coroutine whose object was collected without `destroy()`: it held its handle and
 * its stack (a guarded stack: two of `vm.max_map_count`'s mappings) for good, so one created per
 * request and dropped ran the process out of stacks. It cannot be running (`resume()` is a
 * synchronous call of this thread); parked or suspended, destroying it is what `destroy()` does.
 * Also once the library was closed, as `destroy()` then.
 */
const droppedCoroutines = new FinalizationRegistry<Dropped>((d) => {
  // A stale handle (never, as only the object held it) only says so.
  symbolsToReleaseOf(d.lib).kc_coro_destroy(d.handle);
});

/** What a structured clone of a NativeCoroutine fails on (its `_notCloneable`): the message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a NativeCoroutine: it runs on this isolate's calls; create it in the Worker",
);

/**
 * A native coroutine, named by a handle; `destroy()` (or `using`) frees it, as its garbage
 * collection does if neither ran, and, for one a Worker made, the Worker's end.
 */
export class NativeCoroutine implements Disposable {
  /**
   * @ignore First of the fields structured cloning sees: `postMessage` or `structuredClone` of
   * one throws a DataCloneError with this symbol's description as its message. It cloned as `{}`.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  readonly #lib: Library;
  readonly #handle: number;
  #destroyed = false;
  static readonly #u64 = new BigUint64Array(1);

  private constructor(key: typeof MAKE, lib: Library, handle: number) {
    // Made by create() only: a `new NativeCoroutine()` from JavaScript (the constructor is
    // private to the type checker only) threw the engine's errors at its first call, and its
    // garbage collection threw an uncaught TypeError from the finalizer (no library).
    if (key !== MAKE) {
      throw new TypeError(
        `Cannot construct NativeCoroutine: use NativeCoroutine.create(), received ${describe(key)}`,
      );
    }
    this.#lib = lib;
    this.#handle = handle;
    droppedCoroutines.register(this, { lib, handle }, this);
    Object.freeze(this); // `_notCloneable` fixed (errors.ts, `refuseAsValue`)
  }

  /**
   * Creates a coroutine running a built-in entry function.
   *
   * @example
   * ```ts
   * import { NativeCoroutine } from "../mod.ts";
   * import assert from "node:assert/strict";
   * using co = NativeCoroutine.create("fib", { arg: 5 });
   * assert.deepEqual([...co.values()], [0n, 1n, 1n, 2n, 3n]);
   * ```
   */
  static create(entry: Builtin, options: NativeCoroutineOptions = {}): NativeCoroutine {
    if (typeof entry !== "string" || !Object.hasOwn(builtinIds, entry)) {
      throw new TypeError(
        `Cannot create coroutine: entry must be one of ${
          Object.keys(builtinIds).join(", ")
        }, received ${describe(entry)}`,
      );
    }
    checkOptions("create coroutine", options);
    // Absent only when undefined, as each option of `runtime()`'s: `?? 0` took a null `arg` or
    // `stackSize` (a wrong type, which fpControl's and slabStack's checks refuse) for the default.
    const given = options.arg;
    checkOptionNames("create coroutine", options, COROUTINE_OPTIONS);
    const arg = given === undefined ? 0 : given;
    if (typeof arg !== "number" || !Number.isSafeInteger(arg) || arg < 0) {
      // Not a number (a bigint, "5"): a TypeError, as every option of the wrong type.
      throw new (typeof arg === "number" ? RangeError : TypeError)(
        `Cannot create coroutine: arg must be a non-negative safe integer, received ${
          describe(arg)
        }`,
      );
    }
    const stackGiven = options.stackSize;
    const stackSize = checkStackSize("create coroutine", stackGiven === undefined ? 0 : stackGiven);
    // Each read once: a getter answered undefined to the check and "yes" to the flags after it.
    let flags = 0;
    for (const [key, bit] of [["fpControl", 1], ["slabStack", 2]] as const) {
      const v = options[key];
      if (v !== undefined && typeof v !== "boolean") {
        throw new TypeError(
          `Cannot create coroutine: ${key} must be a boolean, received ${describe(v)}`,
        );
      }
      if (v === true) flags |= bit;
    }
    const lib = library();
    const sym = librarySymbols(lib, "create coroutine");
    const fn = sym.kc_builtin_entry(builtinIds[entry]);
    const out = new Uint32Array(1);
    unwrapSpawn(
      sym.kc_coro_create(fn, BigInt(arg), stackSize, flags, out),
      "create coroutine",
      true,
    );
    // In a Worker the coroutine is also held by the Worker's thread, whose end destroys it
    // (kc_coro_hold): `droppedCoroutines` never runs once the Worker has ended, so each
    // coroutine it had not destroyed stayed, stack mapped, for the life of the process.
    // `destroy()` and the collector forget the hold (kc_coro_destroy on this thread).
    if (inWorker) {
      const hrc = sym.kc_coro_hold(out[0]);
      if (hrc < 0) {
        sym.kc_coro_destroy(out[0]);
        unwrap(hrc, "create coroutine");
      }
    }
    return new NativeCoroutine(MAKE, lib, out[0]);
  }

  /**
   * Throws a TypeError naming `op` unless `self` (a method's `this`) is a NativeCoroutine: a
   * brand check on `Object(self)`, which runs no Proxy trap, next to the native call each
   * member makes. On an object made from the prototype, a Proxy of a coroutine or a primitive,
   * each threw the engine's "Receiver must be an instance of class NativeCoroutine" or "Cannot
   * read private member", and `values()` returned a generator that did at its first step.
   */
  static #checkThis(self: unknown, op: string): void {
    if (!(#handle in Object(self))) {
      throw new TypeError(
        `Cannot ${op}: this is not a NativeCoroutine, received ${describe(self)}`,
      );
    }
  }

  /** The native handle (for diagnostics and tests). */
  get handle(): number {
    NativeCoroutine.#checkThis(this, "read coroutine handle");
    return this.#handle;
  }

  /**
   * Runs the coroutine until it yields, parks or finishes; returns the state it is then in.
   * Throws `KcoroError` (`KC_EBUSY`) if it is parked and not yet unparked, or finished, and
   * `InvalidHandleError` once destroyed.
   */
  resume(): CoroutineState {
    NativeCoroutine.#checkThis(this, "resume coroutine");
    return this.#resume();
  }

  /**
   * `resume`'s body, which `values()` runs: not the prototype's `resume` (nor `value`, `destroy`
   * for `using`), which a caller may redefine. Before, a redefined `resume` or `value` steered
   * `co.values()`, a redefined `destroy` what `using co` did.
   */
  #resume(): CoroutineState {
    const op = "resume coroutine";
    const sym = this.#sym(op);
    const rc = sym.kc_coro_resume(this.#handle);
    if (rc === Status.EBUSY) {
      // Why it cannot run: "not allowed in the object's current state" left the caller to
      // find out which state that was.
      const now = sym.kc_coro_state(this.#handle);
      const why = now === FINISHED
        ? "it has finished"
        : now === PARKED
        ? "it is parked until unpark() lets it continue"
        : "it is running";
      throw new KcoroError(rc, `Cannot ${op}: ${why}`);
    }
    return stateNames[unwrap(rc, op)];
  }

  /**
   * Lets a parked coroutine continue; true if it was parked (it is now ready), false if it was
   * not (a permit is left for its next park) or it has finished. Throws `InvalidHandleError`
   * once destroyed.
   */
  unpark(): boolean {
    NativeCoroutine.#checkThis(this, "unpark coroutine");
    const op = "unpark coroutine";
    return unwrap(this.#sym(op).kc_coro_unpark(this.#handle), op) === 1;
  }

  /** The coroutine's current state. */
  get state(): CoroutineState {
    NativeCoroutine.#checkThis(this, "read coroutine state");
    const op = "read coroutine state";
    return stateNames[unwrap(this.#sym(op).kc_coro_state(this.#handle), op)];
  }

  /** The last word the coroutine yielded (its transfer word). */
  get value(): bigint {
    NativeCoroutine.#checkThis(this, "read coroutine value");
    return this.#value();
  }

  /** `value`'s body (`#resume`'s rule). */
  #value(): bigint {
    const op = "read coroutine value";
    const u64 = NativeCoroutine.#u64;
    unwrap(this.#sym(op).kc_coro_transfer(this.#handle, u64), op);
    return u64[0];
  }

  /**
   * The library's symbols for `op`; once `destroy()` ran, an InvalidHandleError that says so
   * (the native call said "the handle is stale, destroyed or not a kcoro handle").
   */
  #sym(op: string) {
    if (this.#destroyed) {
      throw new InvalidHandleError(`Cannot ${op}: the coroutine was destroyed`);
    }
    return librarySymbols(this.#lib, op);
  }

  /**
   * Resumes the coroutine while it yields, yielding each value it yields (`value` after each
   * resume). It ends when the coroutine finishes, and also when it parks (`"park-loop"`): then
   * `state` is `"parked"`, and after `unpark()` another `values()` goes on. Over a coroutine
   * that finished already it throws what `resume()` throws (a `KcoroError`, `KC_EBUSY`).
   */
  values(): Generator<bigint, void, void> {
    // Checked now, not at the first next() (a generator's body runs only then).
    NativeCoroutine.#checkThis(this, "resume coroutine");
    return this.#values();
  }

  *#values(): Generator<bigint, void, void> {
    while (this.#resume() === "suspended") yield this.#value();
  }

  /** True once `destroy()` ran. */
  get destroyed(): boolean {
    NativeCoroutine.#checkThis(this, "read coroutine state");
    return this.#destroyed;
  }

  /**
   * Frees the coroutine and recycles its stack. A second call does nothing. Also once the
   * library was closed: it stays loaded, and the coroutine (its stack mapping too) with it.
   */
  destroy(): void {
    NativeCoroutine.#checkThis(this, "destroy coroutine");
    this.#destroy();
  }

  /** `destroy`'s body (`#resume`'s rule). */
  #destroy(): void {
    if (this.#destroyed) return;
    // The release symbols: also after closeLibrary(), which left the coroutine alive for good
    // (a hand-driven coroutine is no scheduler's, so no shutdown frees it).
    unwrap(symbolsToReleaseOf(this.#lib).kc_coro_destroy(this.#handle), "destroy coroutine");
    this.#destroyed = true;
    droppedCoroutines.unregister(this);
  }

  /** `destroy()`, for `using`. */
  [Symbol.dispose](): void {
    NativeCoroutine.#checkThis(this, "destroy coroutine");
    this.#destroy(); // not the prototype's `destroy` (`#resume`)
  }

  /**
   * `NativeCoroutine`, the name it prints with (`[customInspect]`): `String(x)` and template
   * literals say `[object NativeCoroutine]` instead of `[object Object]`; error messages name an
   * argument of the wrong kind that is one "a NativeCoroutine" (`describe`, by this brand check).
   * Only on an instance: an object made from the prototype (`Object.create`) stays
   * `[object Object]`, so a message does not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #handle in Object(this) ? "NativeCoroutine" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a coroutine:
   * `NativeCoroutine { handle, state: "suspended" }`, or `destroyed: true` (its `destroyed`). The
   * state is a native read left out when it fails (a closed library, a stale handle); it never
   * throws.
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#destroyed in Object(this))) return notA("NativeCoroutine");
    if (this.#destroyed) return inspectAs("NativeCoroutine", { destroyed: true }, inspect, options);
    const facts: Record<string, unknown> = { handle: this.#handle };
    if (!isLibraryOpen(this.#lib)) facts["[[libraryClosed]]"] = true;
    else {
      const s = librarySymbols(this.#lib, "inspect coroutine").kc_coro_state(this.#handle);
      if (s >= 0 && s < stateNames.length) facts.state = stateNames[s];
    }
    return inspectAs("NativeCoroutine", facts, inspect, options);
  }
}

/** Process-wide counts of native coroutine resources. */
export interface CoroutineStats {
  /**
   * Native coroutine handles not yet freed: hand-driven coroutines until destroyed, built-ins from
   * `Runtime.spawn` until their worker frees the handle after their entry returned (a C function
   * spawned there has none: never counted here). Not the running count: a built-in whose `done`
   * shows may still count here a moment longer, while `runtime().stats().live` counted it out
   * before its `done`.
   */
  live: number;
  /** Free stacks kept for reuse. */
  pooledStacks: number;
  /** Stack mappings held (each costs two of `vm.max_map_count`). */
  mappings: number;
  /**
   * Blocks of native cells (`runtime().cells`, `kc_cells_alloc`) not yet freed: a block is freed
   * once no ArrayBuffer views it and no coroutine may write into it, so a count that only grows
   * is cells kept reachable (or pinned by coroutines that never end). Those of this library file
   * (`KCORO_LIB`), whoever allocated them. Cells that are a `SharedArrayBuffer` (where the
   * Node-API companion cannot be loaded, or a caller's own) never count here.
   */
  cellsBlocks: number;
}

/** Reads the process-wide coroutine counters. */
export function coroutineStats(): CoroutineStats {
  const out = new BigUint64Array(4);
  unwrap(
    librarySymbols(library(), "read coroutine stats").kc_coro_stats(out, 4),
    "read coroutine stats",
  );
  return {
    live: Number(out[0]),
    pooledStacks: Number(out[1]),
    mappings: Number(out[2]),
    cellsBlocks: Number(out[3]),
  };
}

refuseAsValue(
  NativeCoroutine,
  "a NativeCoroutine",
  "it runs on this isolate's calls",
  NOT_CLONEABLE,
);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(NativeCoroutine.prototype, "NativeCoroutine");

/**
 * Finds, builds if need be, opens and checks libkcoro.
 *
 * Where the library comes from, in order:
 * 1. `options.path`, if given;
 * 2. the `KCORO_LIB` environment variable (read only with `--allow-env`);
 * 3. the local build, `zig-out/lib/libkcoro.so` beside this module's checkout;
 * 4. a build from source with the pinned Zig (`KCORO_ZIG`, `.toolchain/zig/bin/zig`, or `zig`
 *    on PATH if nothing is at that pinned path: one there that cannot be run is named in the
 *    error instead), which needs `--allow-run`;
 * otherwise a {@linkcode LibraryNotFoundError} that says what to do.
 *
 * Right after `dlopen` the library's ABI version is compared with {@linkcode ABI_VERSION};
 * a mismatch closes it again and throws {@linkcode AbiMismatchError}. Without `--allow-ffi` the
 * first open throws a {@linkcode LibraryNotFoundError} that says so (importing needs no
 * permission: modules defer their FFI work to it, `beforeFirstOpen`).
 *
 * @module
 */
import { type Symbols, symbols } from "./symbols.ts";
import { customInspect, inspectAs, notA } from "../src/inspect.ts";
import {
  AbiMismatchError,
  checkFunction,
  checkOptionNames,
  checkReadable,
  CloseHooksError,
  describe,
  InvalidHandleError,
  LibraryClosedError,
  LibraryNotFoundError,
  LibraryPermissionError,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  reportUncaught,
} from "../src/errors.ts";

/** The C ABI version this module is written against (`KC_ABI_VERSION` in include/kcoro.h). */
export const ABI_VERSION = 26;

/**
 * This isolate is a Worker's: its thread ends with it, and its finalizers never run after (so
 * what it made natively for its own use is held by its thread), while native coroutines it
 * started may run on. Internal (mod.ts does not export it).
 * @ignore
 */
export const inWorker: boolean = "WorkerGlobalScope" in globalThis;

/**
 * The file each Library's symbols objects (its internal table, `librarySymbols`, and the frozen
 * one `symbols()` returns) were opened from, for what must find the same loaded library natively
 * (ffi/napi.ts binds its companion to it).
 */
const libraryPaths = new WeakMap<object, string>();

/**
 * @ignore The path the library whose symbols object (either) is `sym` was opened from (as given to
 * `Deno.dlopen`), or undefined for any other object. Internal (mod.ts does not export it).
 */
export function libraryPathOf(sym: object): string | undefined {
  return libraryPaths.get(sym);
}

/**
 * The number of each library loaded in this process (`loadedIdOf`), by the address of its
 * clock word (kc_clock_word, a global of the library's own): a library opened again from the
 * same file is the same loaded library (it stays loaded once opened) and gets its number again;
 * another file (a copy elsewhere) is another loaded library, with a handle table of its own.
 */
const loadedIds = new Map<number | bigint, number>();

/**
 * @ignore The number of the loaded library `lib` opened (see `loadedIds`), the same for each
 * open of one file: its handles name the same objects (a channel's shared-state key, a
 * runtime's pins). Module functions set in Library's static block, not members: as the public
 * getter `_loadedId`, `_symbolsToRelease` and static `_is` any caller reached them and could
 * redefine them on the prototype (or the class) for every library: a `_loadedId` redefined gave
 * a `Channel.from` copy another shared state than its owner's of the same isolate, a
 * `_symbolsToRelease` redefined took a copy's release of its hold (`kc_chan_unhold`) away from
 * native code, and `_symbolsToRelease` handed the raw symbols to any caller after the close
 * (tests/load_test.ts, "Library's internals").
 */
export let loadedIdOf: (lib: Library) => number;
/**
 * @ignore `lib`'s raw symbols, also once closed, only to release what an isolate owned or held
 * (a channel hold, a native scope, an owned channel, a hand-driven coroutine) when its object
 * is disposed or collected, and to read what that release needs (a scope's live count), and
 * what the native state says of a scheduler that ended (a Runtime's `kc_sched_abandoned`): the
 * library stays loaded once opened (`kc_lib_retain_thread` pins it, since its key destructor
 * is its code), so the native state outlives a close, and so would anything nobody released.
 * Each caller releases a handle its object still owns, once (its own disposed flag), so the
 * handle is live or went stale by other means (generations): never one a reopened library
 * handed out to someone else. For kcoro's modules (and tests), not exported by mod.ts; see
 * `loadedIdOf`.
 */
export let symbolsToReleaseOf: (lib: Library) => Deno.DynamicLibrary<Symbols>["symbols"];
/**
 * @ignore `lib`'s internal symbols table, the one every kcoro call goes through: as
 * `lib.symbols(op)` was (a {@linkcode LibraryClosedError} for `op` once closed). Internal (mod.ts
 * does not export it), for kcoro's modules and for tests, which patch a function of it to make a
 * native call fail (restored after). `Library.symbols(op)` hands callers a frozen copy (the same
 * functions): before, it handed out this table, and a caller's
 * `lib.symbols("x").kc_chan_send = f` changed what every channel of the isolate did
 * (tests/load_test.ts, "Library.symbols()'s object is frozen").
 */
export let librarySymbols: (lib: Library, op: string) => Deno.DynamicLibrary<Symbols>["symbols"];
/**
 * @ignore `lib`'s internal symbols table while it is open, null once it is closed (the moment
 * `#lib` is): one object for each library, which a Channel keeps, so that its `#sym` reads the
 * table with two field loads, not a call of `librarySymbols` (~0.5 ns more a try pair), nor
 * through `isOpen`, a getter of the prototype any caller can redefine.
 */
export let openTableOf: (lib: Library) => OpenTable;
/**
 * @ignore Whether `lib` is open (its private state, as `isOpen` reads it): what kcoro's own
 * modules ask, not the public getter. As that getter of the prototype any caller could redefine
 * it for every library, and steer kcoro's decisions: a getter saying "open" after the close made
 * a closed channel's dispose throw LibraryClosedError; one saying "closed" while open made a
 * select skip a ready channel (tests/load_test.ts, "kcoro reads a Library's state").
 */
export let isLibraryOpen: (lib: Library) => boolean;
/**
 * `lib.close()`'s work, for `closeLibrary()`: as `close()` redefined on the prototype, a caller
 * took the process-wide library's close (and its shutdown of the scheduler) away from kcoro.
 */
let closeOf: (lib: Library) => void;
/** See {@linkcode openTableOf}. */
export interface OpenTable {
  table: Deno.DynamicLibrary<Symbols>["symbols"] | null;
}
/**
 * @ignore Tests: makes `librarySymbols` the function `wrap` returns (given the real one), until the
 * returned function puts the real one back: to tell which operation asks for the table (its
 * `op`), as tests did by redefining `Library.prototype.symbols`, which kcoro's calls no longer
 * read. A module binding reassigned, so that the calls pay nothing for it.
 */
export function _testWrapLibrarySymbols(
  wrap: (real: typeof librarySymbols) => typeof librarySymbols,
): () => void {
  const real = librarySymbols;
  librarySymbols = wrap(real);
  return () => {
    librarySymbols = real;
  };
}
/**
 * @ignore Runs `hook` when `lib.close()` begins, while the library is still open (to withdraw
 * what waits natively); once only. One registered while `close()` runs these runs after them
 * (in the next round; past `MAX_CLOSE_ROUNDS` rounds, close() throws a
 * {@linkcode CloseHooksError} that names the hooks by `what`, else by their function's name).
 * A module function, not a member: as the public `Library.prototype.beforeClose` any caller
 * could call it or redefine it for every library (tests/load_test.ts, "close hooks").
 */
export let beforeClose: (lib: Library, hook: () => void, what?: string) => void;
/**
 * @ignore Runs `hook` once `lib` is closed (after it is), e.g. to settle operations that were
 * waiting natively: no completion will come for them; at once if it is closed already. A module
 * function, as `beforeClose`.
 */
export let onClose: (lib: Library, hook: () => void) => void;

/** Only this module makes a {@linkcode Library}. */
const MAKE: unique symbol = Symbol("kcoro.Library");

/** What a structured clone of a Library fails on (`Library._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a Library: it is this isolate's open library; call library() in the Worker",
);

/**
 * True if `x` is a Library (a brand check, which runs no Proxy trap). Set by a static block of
 * Library: as the public static `Library._is`, replaced by `() => true`, it made a Library member
 * called on what is none throw the engine's "Cannot read private member #lib" where it throws a
 * named TypeError (`libraryThrown`).
 */
let isLibrary: (x: unknown) => x is Library;

/**
 * An open libkcoro. `close()` is idempotent; calls after it throw `LibraryClosedError`.
 * `using lib = openLibrary()` closes it at the end of the block (`[Symbol.dispose]`).
 */
export class Library {
  /**
   * @ignore First of the fields structured cloning sees: `postMessage` or `structuredClone` of
   * one throws a DataCloneError with this symbol's description as its message. It cloned as
   * `{ path, abiVersion }`.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  /**
   * The file it was opened from, absolute (a relative `KCORO_LIB` or `options.path` resolved
   * against the current directory when it was opened; README.md, "Permissions", says where it
   * looks).
   */
  readonly path: string;
  /** The ABI version the library reported when it was opened (`kc_abi_version`). */
  readonly abiVersion: number;
  #lib: Deno.DynamicLibrary<Symbols> | null;
  #symbols: Deno.DynamicLibrary<Symbols>["symbols"];
  /** `#symbols` until the close, then null (see `openTableOf`). */
  readonly #open: OpenTable;
  /** What `symbols()` hands callers: `#symbols`'s functions, frozen (see `librarySymbols`). */
  readonly #frozen: Readonly<Deno.DynamicLibrary<Symbols>["symbols"]>;
  readonly #loadedId: number;

  /** @ignore Use {@linkcode openLibrary} or {@linkcode library}. */
  constructor(
    key: typeof MAKE,
    lib: Deno.DynamicLibrary<Symbols>,
    path: string,
    abiVersion: number,
  ) {
    // Exported for its type and instanceof: made by openLibrary only (a Library over anything
    // else threw the engine's errors at its first call).
    if (key !== MAKE) {
      throw new TypeError(
        `Cannot construct Library: use openLibrary() or library(), received ${describe(key)}`,
      );
    }
    this.#lib = lib;
    // A copy: a property read from Deno's own symbols object costs ~0.6 ns more per call
    // (measured on the try pair, bench/channel_bench.ts).
    this.#symbols = { ...lib.symbols };
    this.#frozen = Object.freeze({ ...lib.symbols });
    this.#open = { table: this.#symbols };
    libraryPaths.set(this.#symbols, path);
    libraryPaths.set(this.#frozen, path); // a caller's codec call with it finds its pool too
    this.path = path;
    this.abiVersion = abiVersion;
    // Read here, as it is opened: the address needs --allow-ffi (for all paths, which the first
    // open checked), which may be revoked once it is open.
    const at = Deno.UnsafePointer.value(lib.symbols.kc_clock_word());
    let id = loadedIds.get(at);
    if (id === undefined) loadedIds.set(at, id = loadedIds.size);
    this.#loadedId = id;
    // One more host of the process-wide scheduler (see close), counted out when this isolate's
    // thread ends if close() never runs (a terminated Worker).
    lib.symbols.kc_lib_retain_thread();
    Object.freeze(this); // `_notCloneable` fixed (errors.ts, `refuseAsValue`)
  }

  /** True until `close()`. */
  get isOpen(): boolean {
    // On what is no Library (an object made from its prototype, a Proxy of one), the engine's
    // "Cannot read private member #lib": named (`libraryThrown`), checked only in the catch,
    // since every channel call reads it.
    try {
      return this.#lib !== null;
    } catch (e) {
      throw libraryThrown(this, "read library state", e);
    }
  }

  /** Throws `notLibrary` unless `self` is a Library (a brand check, which runs no Proxy trap). */
  static #check(self: unknown, op: string): void {
    if (!(#lib in Object(self))) throw notLibrary(self, op);
  }

  static {
    loadedIdOf = (lib) => lib.#loadedId;
    isLibrary = (x): x is Library => typeof x === "object" && x !== null && #lib in x;
    symbolsToReleaseOf = (lib) => lib.#symbols;
    openTableOf = (lib) => lib.#open;
    isLibraryOpen = (lib) => lib.#lib !== null;
    closeOf = (lib) => lib.#close();
    librarySymbols = (lib, op) => {
      try {
        if (lib.#lib === null) throw new LibraryClosedError(op);
        return lib.#symbols;
      } catch (e) {
        throw libraryThrown(lib, "read library symbols", e); // as isOpen's
      }
    };
    beforeClose = (lib, hook, what) => {
      // Checked here: a non-function failed only inside close(), reported as an uncaught
      // "hook is not a function", which ends the process.
      Library.#check(lib, "register a close hook");
      checkFunction("register a close hook", "hook", hook);
      if (what !== undefined && typeof what !== "string") {
        throw new TypeError(
          `Cannot register a close hook: what must be a string, received ${describe(what)}`,
        );
      }
      if (lib.#lib !== null) lib.#beforeClose.push(what === undefined ? hook : { hook, what });
    };
    onClose = (lib, hook) => {
      Library.#check(lib, "register a close hook");
      checkFunction("register a close hook", "hook", hook); // as beforeClose
      if (lib.#lib === null) hook();
      else lib.#onClose.push(hook);
    };
  }

  /**
   * `Library`, the name it prints with (`[customInspect]`): `String(x)` and template literals say
   * `[object Library]` instead of `[object Object]`; error messages name an argument of the wrong
   * kind that is one "a Library" (`describe`, by this brand check). Only on an instance: an object
   * made from the prototype (`Object.create`) stays `[object Object]`, so a message does not call
   * it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #lib in Object(this) ? "Library" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a library:
   * `Library { path, abiVersion, isOpen }` (JavaScript state only).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#lib in Object(this))) return notA("Library");
    // Its state, not through the getter (a caller's redefinition of it is the caller's to print).
    const facts = { path: this.path, abiVersion: this.abiVersion, isOpen: this.#lib !== null };
    return inspectAs("Library", facts, inspect, options);
  }

  /**
   * The raw FFI functions (see {@linkcode Symbols}), to call libkcoro directly. `op` names the
   * operation in the error (`Cannot <op>: the kcoro library is closed`): a
   * {@linkcode LibraryClosedError} once the library is closed. The object is frozen and shared
   * (read-only): writing one of its functions throws a TypeError, and kcoro's own calls never go
   * through it, so no caller can change what the isolate's channels call.
   */
  symbols(op: string): Readonly<Deno.DynamicLibrary<Symbols>["symbols"]> {
    try {
      if (this.#lib === null) throw new LibraryClosedError(op);
      return this.#frozen;
    } catch (e) {
      throw libraryThrown(this, "read library symbols", e); // as isOpen's
    }
  }

  /**
   * Closes the library. A second call does nothing. The native scheduler is process-wide: the
   * last open copy of the library (in any isolate) shuts it down first, cancelling coroutines
   * that have not finished; closing any other copy (a Worker's, a second `openLibrary()`)
   * leaves it running for the others. (Its threads never run unmapped code: a library that
   * started threads stays mapped until the process ends.)
   */
  close(): void {
    // A close already in progress (a hook below, e.g. an onUndeliveredElement given a
    // withdrawn send's value, called close again) finishes by itself: closing here would make
    // the hooks still to run withdraw the other waits through a closed library.
    Library.#check(this, "close library");
    this.#close();
  }

  /** `close()` on a Library (`closeOf`): never through a member a caller can redefine. */
  #close(): void {
    if (this.#lib === null || this.#closing) return;
    this.#closing = true;
    // While still open: what waits natively is withdrawn (or settled, if it completed first),
    // so that nothing is delivered after its operation was reported failed.
    // Hooks registered while these run (a bridge's second pass over what they began, the unmap
    // of a channel a hook mapped first) run too, after them, round after round until a round
    // registers none. A bound, so that hooks that each register another cannot keep the library
    // open for ever: past it the close goes on and then throws, naming what kept registering
    // (before, the hooks of a 9th round were dropped silently: such a channel stayed mapped,
    // its try-operations reaching the closed library's code without a LibraryClosedError).
    let left: CloseHook[] = [];
    try {
      for (let round = 0; this.#beforeClose.length > 0; round++) {
        if (round === MAX_CLOSE_ROUNDS) {
          left = this.#beforeClose;
          break;
        }
        const before = this.#beforeClose;
        this.#beforeClose = [];
        runHooks(before);
      }
    } finally {
      this.#closing = false;
      this.#beforeClose = [];
    }
    const lib = this.#lib;
    if (lib === null) return;
    this.#lib = null;
    this.#open.table = null; // with #lib: a Channel's `#sym` says closed from here on
    // The last host: shut the scheduler down (cancel), bounded (`CLOSE_JOIN_NS`). A coroutine
    // that never yields (C code of the caller's) kept its worker, and the close waited for good;
    // past the bound the scheduler is stopped but that worker not joined, what it would free
    // left allocated (kc_sched_shutdown_timed's KC_ETIME; never freed under it), and the close
    // goes on. It goes on past KC_EBUSY too (another thread's spawn or kc_sched_info stayed
    // inside past the bound): nothing stopped then, the scheduler runs on refusing calls from
    // outside (a later `runtime()` throws ShutdownError), and the next shutdown goes on from there.
    if (lib.symbols.kc_lib_release_thread() === 0) {
      lib.symbols.kc_sched_shutdown_timed(0, CLOSE_JOIN_NS);
    }
    lib.close();
    const hooks = this.#onClose;
    this.#onClose = [];
    runHooks(hooks);
    if (left.length > 0) throw new CloseHooksError(MAX_CLOSE_ROUNDS, left.length, namesOf(left));
  }

  /**
   * `close()`, for `using lib = openLibrary()`: the close is synchronous (its shutdown of the
   * scheduler is bounded, `CLOSE_JOIN_NS`), so a plain `using` closes it at the block's end, and
   * `await using` does the same (it falls back to this). Before, `using` threw the engine's
   * TypeError (no `Symbol.dispose`) at the declaration.
   */
  [Symbol.dispose](): void {
    // Checked first: on a Proxy of one, the named TypeError, with no trap run (`this.close`).
    Library.#check(this, "close library");
    this.#close();
  }

  #onClose: CloseHook[] = [];
  #closing = false;
  #beforeClose: CloseHook[] = [];
}

/**
 * How many rounds of hooks `close()` runs at most before the library closes (each round those
 * the round before registered). Each level of a chain of reactions to the close (a withdrawn
 * send's value handed to an onUndeliveredElement that sends it on, whose wait is withdrawn in
 * turn) takes a round: far more than any such chain, the bound stops only hooks that register
 * another for ever.
 */
const MAX_CLOSE_ROUNDS = 1000;

/**
 * How long `close()`'s shutdown of the scheduler (the last host's) waits, all its waits together,
 * for the workers to stop before the close goes on without them: as the exit guard (2 s).
 */
const CLOSE_JOIN_NS = 2_000_000_000n;

/** A close hook, with what registered it when it said (`beforeClose`'s `what`). */
type CloseHook = (() => void) | { hook: () => void; what: string };

/**
 * Runs each of `hooks`; one that throws is reported and the others still run. Reported as every
 * other throw of the caller's code kcoro runs (`reportUncaught`): a Proxy is reported in a
 * TypeError carrying it. Before, Deno's `reportError` ran its traps, and a revoked one's throw
 * left the close (the hooks after it unrun) and every later report of the process was fatal.
 */
function runHooks(hooks: CloseHook[]): void {
  for (const h of hooks) {
    try {
      if (typeof h === "function") h();
      else h.hook();
    } catch (e) {
      reportUncaught(e);
    }
  }
}

/** `fn`'s name for an error, as it reads without running a caller's code (a getter). */
function functionName(fn: () => void): string {
  const d = Object.getOwnPropertyDescriptor(fn, "name");
  const name = d !== undefined && "value" in d ? d.value : undefined;
  return typeof name === "string" && name !== "" ? `hook ${name}` : "an anonymous hook";
}

/** What `hooks` are, for an error: each kind once, with its count, the first five kinds. */
function namesOf(hooks: CloseHook[]): string {
  const counts = new Map<string, number>();
  for (const h of hooks) {
    const name = typeof h === "function" ? functionName(h) : h.what;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const kinds = [...counts].map(([name, n]) => n === 1 ? name : `${name} (x${n})`);
  return kinds.length <= 5 ? kinds.join(", ") : `${kinds.slice(0, 5).join(", ")}, ...`;
}

/** How to find and check the library. */
export interface OpenOptions {
  /** Open exactly this file (skips the search). */
  path?: string;
  /** The ABI version to demand (default {@linkcode ABI_VERSION}); for tests. */
  expectAbi?: number;
  /** Build from source when no library is found (default true). */
  build?: boolean;
}
/** OpenOptions' names: any other own key is refused (`checkOptionNames`). */
const OPEN_OPTIONS = optionNames<OpenOptions>({ path: true, expectAbi: true, build: true });

/** The platform's file name for the library. */
export function libraryFileName(os: typeof Deno.build.os = Deno.build.os): string {
  if (os === "windows") return "kcoro.dll";
  if (os === "darwin") return "libkcoro.dylib";
  return "libkcoro.so";
}

/**
 * The checkout a module at `url` (this file's `import.meta.url`, `ffi/load.ts` in it) is in, as
 * a path of `os`'s that ends with its separator; null for a URL that is no file's. On Windows a
 * drive's (`file:///C:/kcoro/ffi/load.ts`) is `C:\kcoro\`, a share's
 * (`file://server/share/...`) `\\server\share\...`: it was the URL's path, `/C:/kcoro/`,
 * which names no file there, so the local build was "no file there" and no build was tried
 * ("there is no /C:/kcoro/build.zig"), the list of places tried naming places that are none.
 * Internal (mod.ts does not export it).
 * @ignore
 */
export function checkoutOf(
  url: string,
  os: typeof Deno.build.os = Deno.build.os,
): string | null {
  if (!url.startsWith("file:")) return null;
  const dir = new URL("../", url);
  let path = dir.pathname;
  try {
    path = decodeURIComponent(path);
  } catch {
    // A path the URL itself encoded is never malformed; as it is, if it were.
  }
  if (os !== "windows") return path;
  const local = /^\/[A-Za-z]:\//.test(path)
    ? path.slice(1)
    : dir.hostname !== ""
    ? `//${dir.hostname}${path}`
    : path;
  return local.replaceAll("/", "\\");
}

/** The path separator of this system (`checkoutOf`'s). */
const SEP = Deno.build.os === "windows" ? "\\" : "/";

const checkout: string | null = checkoutOf(import.meta.url);

/** `parts` joined under the checkout, with the system's separator (`checkoutOf`). */
function inCheckout(dir: string, ...parts: string[]): string {
  return dir + parts.join(SEP);
}

function envVar(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Why whether a path is a file could not be told: `why` for a list of places tried (`reason`,
 * then Deno's error in parentheses: "received" belongs to the message's first line, and it said
 * "<reason>, received <error>" mid-entry), `reason` and `error` apart for a message that ends
 * with the path received (the house form says "received" once), and `refused`, Deno's NotCapable
 * when it was `--allow-read` not granted for it (a {@linkcode LibraryPermissionError} then),
 * null when the system refused (PermissionDenied: no flag fixes that).
 */
interface Unreadable {
  why: string;
  reason: string;
  error: Error;
  refused: Error | null;
}

/** `kindAt`'s answer when `stat` threw `error`: `reason` why, for the error. */
function unreadable(reason: string, error: Error, refused: Error | null): Unreadable {
  return { why: `${reason} (${error.name}: ${error.message})`, reason, error, refused };
}

/**
 * The error for a path given by `what` (`options.path` or `KCORO_LIB`, as `given`, `path` once
 * made absolute) that the system refused to stat (PermissionDenied: a directory on its way
 * without search permission), in the house form, "received" once: the path as given. Before,
 * KCORO_LIB's said "received" twice (Deno's error, then the path), and options.path's ended with
 * Deno's error, not the path. Not exported: tests/load_test.ts pins it through `library()` and
 * `openLibrary()` in a child the system refuses the path to.
 */
function unreadableError(
  what: string,
  given: string,
  path: string,
  found: { reason: string; error: Error },
): LibraryNotFoundError {
  const resolved = path === given ? "" : ` (resolved against the current directory: ${path})`;
  return new LibraryNotFoundError(
    `Cannot open library: ${what} cannot be read${resolved}: ${found.reason} ` +
      `(${found.error.name}: ${found.error.message}), received ${describe(given)}`,
    { cause: found.error },
  );
}

/**
 * What is at `path` (through symbolic links): a file, nothing, a directory or another kind
 * (a device, a pipe, a socket), or, where that could not be told, why, for the error:
 * `--allow-read` not granted for it (Deno's NotCapable), the system refusing it
 * (PermissionDenied), a loop of symbolic links (FilesystemLoop), or any other error of the
 * system's but nothing there (NotFound, or NotADirectory: a file on the way). Before, each read
 * as "no file" and the error listed the path as tried.
 */
function kindAt(path: string): "file" | "nothing" | "directory" | "special" | Unreadable {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    return statFailed(e);
  }
  return info.isFile ? "file" : info.isDirectory ? "directory" : "special";
}

/**
 * What `stat`'s error `e` says is at the path: nothing (NotFound, or NotADirectory: a file on
 * the way), or why what is there could not be told. The one classification of `kindAt` (the
 * library's places) and `unusable` (the pinned Zig): they differed, the pinned Zig's saying "it
 * cannot be read" for the system's refusal, and taking a file on the way for something there.
 */
function statFailed(e: unknown): "nothing" | Unreadable {
  if (e instanceof Deno.errors.NotCapable) {
    return unreadable("--allow-read is not granted for it", e, e);
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    return unreadable("the system refused to read it", e, null);
  }
  // A loop of symbolic links (ELOOP): something is there, which no open can follow. It read
  // as "no file there", the links unnamed; so did any other error of the system's.
  if (e instanceof Deno.errors.FilesystemLoop) {
    return unreadable("it is a symbolic link loop", e, null);
  }
  if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
    return "nothing";
  }
  return unreadable("the system could not tell what is there", e as Error, null);
}

/** Whether there is a file at `path`: true or false, or why that could not be told (`kindAt`). */
function fileAt(path: string): boolean | Unreadable {
  const kind = kindAt(path);
  return typeof kind === "object" ? kind : kind === "file";
}

/**
 * What is at a place of the search that is no file but something, for its entry of the list of
 * places tried ("<path> is <it>"): a directory there was "no file there" (a build.zig that is
 * one, "there is no build.zig"), as if nothing were.
 */
function notAFile(kind: "directory" | "special"): string {
  return kind === "directory" ? "a directory" : "a special file (a device, a pipe or a socket)";
}

/**
 * The error for `path` (what it is in the search: `what`) that `--allow-read` does not cover:
 * which flag to run with, and Deno's answer.
 */
function readRefused(path: string, what: string, refused: Error): LibraryPermissionError {
  return new LibraryPermissionError(
    "read",
    `Cannot open the kcoro library: --allow-read is not granted for ${path} (${what}); run ` +
      `with --allow-read (or --allow-read=${path}), received ${refused.name}: ${refused.message}`,
    { cause: refused },
  );
}

function canRun(): boolean {
  try {
    return Deno.permissions.querySync({ name: "run" }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * `path` made absolute against the current directory, now: what is opened or run from it later
 * must not depend on a `Deno.chdir` since (the Node-API companion is loaded from the library's
 * directory at the first releaseBytes, ffi/napi.ts; zig runs in the checkout). `.` segments
 * are dropped, `..` kept (the system resolves it through symbolic links, as it would have).
 * Unchanged when the current directory cannot be read (without `--allow-read`, where nothing
 * is found anyway), and on Windows for a path with a drive letter (`C:lib.dll` too).
 * Internal (ffi/napi.ts resolves a library path given to it the same way; mod.ts does not
 * export it).
 * @ignore
 */
export function absolutePath(path: string): string {
  const windows = Deno.build.os === "windows";
  if (windows ? /^([A-Za-z]:|[\\/])/.test(path) : path.startsWith("/")) return path;
  let cwd: string;
  try {
    cwd = Deno.cwd();
  } catch {
    return path;
  }
  const sep = windows ? "\\" : "/";
  const dot = windows ? /^(\.[\\/]+)+|(?<=[\\/])(\.[\\/]+)+/g : /^(\.\/+)+|(?<=\/)(\.\/+)+/g;
  return (cwd.endsWith(sep) ? cwd : cwd + sep) + path.replace(dot, "");
}

/**
 * The Zig to build with: `KCORO_ZIG`, else the checkout's pinned `.toolchain/zig/bin/zig`, else
 * `zig` on PATH, but only when nothing is at the pinned path: a pinned one that is there and
 * cannot be run is `{ pinned, why }`, not skipped for PATH's (another version may build a
 * library that does not match, or fail in ways that do not name the pinned one).
 */
function findZig(): string | { pinned: string; why: string } {
  const fromEnv = envVar("KCORO_ZIG");
  // A path (not a name looked up on PATH) from where the caller is: the build runs in the
  // checkout, and a relative program path is taken from the new process's directory.
  if (fromEnv) return /[\\/]/.test(fromEnv) ? absolutePath(fromEnv) : fromEnv;
  if (checkout !== null) {
    const pinned = inCheckout(checkout, ".toolchain", "zig", "bin", "zig");
    const why = unusable(pinned);
    if (why === null) return pinned;
    if (why !== ABSENT) return { pinned, why };
  }
  return "zig";
}

/** `unusable`'s answer for a path where nothing is (not even a link). */
const ABSENT: unique symbol = Symbol("absent");

/**
 * Why the program at `path` cannot be run (for an entry of the error's list of places tried,
 * with what Deno answered in parentheses), null if it looks runnable (a file with an execute
 * bit; where the system reports no mode, a file), or `ABSENT` if nothing is there (as `kindAt`
 * tells it: `statFailed`; a file on the way is nothing there). Unreadable (`--allow-read` not
 * granted, or the system refusing), a link to nothing, not a file, or not executable:
 * something is there, so not ABSENT.
 */
function unusable(path: string): string | null | typeof ABSENT {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    const failed = statFailed(e);
    if (failed !== "nothing") return failed.why;
    if (!(e instanceof Deno.errors.NotFound)) return ABSENT;
    try {
      Deno.lstatSync(path); // a link whose target is missing
    } catch {
      return ABSENT;
    }
    return `it is a symbolic link to nothing (NotFound: ${e.message})`;
  }
  if (!info.isFile) {
    return `it is not a file (a ${info.isDirectory ? "directory" : "special file"})`;
  }
  if (info.mode !== null && (info.mode & 0o111) === 0) {
    return `it is not executable (mode 0${(info.mode & 0o7777).toString(8)})`;
  }
  return null;
}

/** What a search found out, for its error. */
interface Search {
  /** One line per place tried, `<what was tried>: <why it failed>`. */
  tried: string[];
  /**
   * Whether a place the library may be at could not be looked at (the system refused to stat
   * it): the error's first line then cannot say that there is no file at any place searched.
   */
  unsure: boolean;
}

/**
 * Builds the library from the checkout's source, if it can: its path once built, else null
 * with why pushed to `search.tried` (one line, `<what was tried>: <why it failed>`, as each
 * entry of the error's list).
 */
function buildFromSource(search: Search): string | null {
  const { tried } = search;
  if (checkout === null) {
    // Named, as every place looked at: the list said nothing of a build for a module loaded
    // from a URL (no source to build, and no checkout to build it in). The URL without a user
    // and password (http://user:password@host/): an error's text is logged and shown, and it
    // named them.
    const from = new URL("../", import.meta.url);
    from.username = "";
    from.password = "";
    tried.push(
      `build from source: not tried, the module is not in a checkout (it was loaded from ` +
        `${from.href})`,
    );
    return null;
  }
  const buildZig = inCheckout(checkout, "build.zig");
  const source = kindAt(buildZig);
  if (typeof source === "object") {
    tried.push(`build from source: skipped, ${buildZig} cannot be read: ${source.why}`);
    return null;
  }
  if (source === "nothing") {
    // Named, as every place looked at (the list said nothing of a build: a copy of the module
    // without its sources).
    tried.push(`build from source: skipped, there is no ${buildZig}`);
    return null;
  }
  if (source !== "file") {
    // A directory there said "there is no build.zig".
    tried.push(`build from source: skipped, ${buildZig} is ${notAFile(source)}`);
    return null;
  }
  if (!canRun()) {
    tried.push("build from source: skipped, it needs --allow-run");
    return null;
  }
  const zig = findZig();
  if (typeof zig === "object") {
    tried.push(
      `build from source: skipped, the pinned Zig ${zig.pinned} cannot be used: ${zig.why}; ` +
        `fix it, remove it to build with the zig on PATH, or set KCORO_ZIG to a Zig to use`,
    );
    return null;
  }
  let out: Deno.CommandOutput;
  try {
    out = new Deno.Command(zig, {
      args: ["build"],
      cwd: checkout,
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
  } catch (e) {
    const { name, message } = e as Error;
    tried.push(`build from source with ${zig}: it could not be run (${name}: ${message})`);
    return null;
  }
  if (!out.success) {
    // Its last lines, on the entry's one line (`oneLine`; they were lines of their own).
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
    const how = out.signal !== null ? `signal ${out.signal}` : `exit code ${out.code}`;
    tried.push(
      `build from source with ${zig}: it failed (${how})${err === "" ? "" : `, ending: ${err}`}`,
    );
    return null;
  }
  const built = inCheckout(checkout, "zig-out", "lib", libraryFileName());
  const found = kindAt(built);
  if (found === "file") return built;
  // A build that succeeded and left no file there is named too: the list left it out, as if no
  // build had been tried. One that left a directory there said it left no file.
  if (typeof found === "object") search.unsure = true;
  tried.push(
    `build from source with ${zig}: it succeeded, but ` +
      (found === "nothing"
        ? `left no file at ${built}`
        : typeof found === "object"
        ? `${built} cannot be read: ${found.why}`
        : `${built} is ${notAFile(found)}`),
  );
  return null;
}

/**
 * `text` on one line, for an entry of the list of places tried: each line break (with the blank
 * lines and indentation around it) becomes " | ". A failed build's last lines of output, or a
 * message of Deno's with a line break, made entries of several lines, the list hard to read.
 */
function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, " | ");
}

/** Returns the path of the library to open, building it if allowed; see the module doc. */
export function findLibrary(options: OpenOptions = {}): string {
  // A relative path is made absolute here, once: the library is opened from it, and the
  // Node-API companion loaded from beside it later (a chdir since must not change which).
  if (options.path !== undefined) {
    const path = absolutePath(options.path);
    const found = fileAt(path);
    if (found === true) return path;
    const what = `options.path${path === options.path ? "" : ` ${options.path}`}`;
    // Named as every bad argument is ("Cannot <op>: <reason>, received <x>"): it said
    // "kcoro: no library at <path> (options.path)", and a directory or device there the same.
    if (found === false) {
      const resolved = path === options.path
        ? ""
        : ` (resolved against the current directory: ${path})`;
      throw new LibraryNotFoundError(
        `Cannot open library: options.path names no file${resolved}, received ${
          describe(options.path)
        }`,
      );
    }
    if (found.refused !== null) throw readRefused(path, what, found.refused);
    throw unreadableError("options.path", options.path, path, found);
  }
  const search: Search = { tried: [], unsure: false };
  const { tried } = search;
  const fromEnv = envVar("KCORO_LIB");
  if (fromEnv !== undefined) {
    const path = absolutePath(fromEnv);
    const found = fileAt(path);
    if (found === true) return path;
    if (typeof found === "object" && found.refused !== null) {
      throw readRefused(path, `KCORO_LIB${path === fromEnv ? "" : ` ${fromEnv}`}`, found.refused);
    }
    // The house form, as options.path's errors above (it said "kcoro: KCORO_LIB is set to ...").
    const resolved = path === fromEnv ? "" : ` (resolved against the current directory: ${path})`;
    if (found !== false) throw unreadableError("KCORO_LIB", fromEnv, path, found);
    throw new LibraryNotFoundError(
      `Cannot open library: KCORO_LIB names no file${resolved}; unset it or set it to the ` +
        `library's path, received ${describe(fromEnv)}`,
    );
  }
  tried.push("KCORO_LIB: unset, or not readable without --allow-env");
  // Deno's NotCapable if --allow-read was refused for the local build: the search could not
  // look there, and its error is a LibraryPermissionError.
  let refused: { local: string; e: Error } | null = null;
  if (checkout !== null) {
    const local = inCheckout(checkout, "zig-out", "lib", libraryFileName());
    const found = kindAt(local);
    if (found === "file") return local;
    if (typeof found === "object") {
      if (found.refused !== null) refused = { local, e: found.refused };
      else search.unsure = true;
    }
    // "<path>: <why>", as every entry (a path without a reason was the path with no file; a
    // directory there was "no file there" too).
    const why = typeof found === "object"
      ? found.why
      : found === "nothing"
      ? "no file there"
      : `it is ${notAFile(found)}`;
    tried.push(`${local} (the local build): ${why}`);
  }
  if (options.build ?? true) {
    const built = buildFromSource(search);
    if (built !== null) return built;
  } else {
    // Named, as every step of the search (the list said nothing of a build).
    tried.push("build from source: not tried, options.build is false");
  }
  // One line per place tried: what it was, then why it failed (`<what>: <why>`).
  const list = `Tried:\n  - ${tried.map(oneLine).join("\n  - ")}\n`;
  // Not in a checkout (loaded from a URL) it said "in the kcoro checkout", where there is none:
  // the library is built in one, and KCORO_LIB is how this module finds it.
  const build = checkout === null
    ? `uild it with \`./task build\` in a kcoro checkout (this module is in none: it was ` +
      `loaded from a URL), and set KCORO_LIB to the zig-out/lib/${libraryFileName()} it leaves ` +
      `there (and run with --allow-env).`
    : `uild it with \`./task build\` in the kcoro checkout, or set KCORO_LIB to its path ` +
      `(and run with --allow-env).`;
  if (refused !== null) {
    throw new LibraryPermissionError(
      "read",
      `Cannot find the kcoro library: --allow-read is not granted for ${refused.local} (the ` +
        `local build); run with --allow-read (for the paths below), received ${refused.e.name}: ` +
        `${refused.e.message}. ${list}Or b${build}`,
      { cause: refused.e },
    );
  }
  // As the LibraryPermissionError above says it (it said "kcoro: cannot find libkcoro"). Where
  // the system refused to stat a place, a file may be there: it said "no file" all the same.
  const none = search.unsure
    ? "no library could be opened at any place searched"
    : "no file at any place searched";
  throw new LibraryNotFoundError(`Cannot find the kcoro library: ${none}. ${list}B${build}`);
}

/** Opens a new instance of the library and checks its ABI version. */
export function openLibrary(options: OpenOptions = {}): Library {
  const op = "open library";
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object, received ${describe(options)}`);
  }
  checkReadable(op, options); // a revoked Proxy: named, not the engine's bare error
  const { path: given, expectAbi, build } = options;
  checkOptionNames(op, options, OPEN_OPTIONS);
  if (given !== undefined && (typeof given !== "string" || given === "")) {
    throw new TypeError(
      `Cannot ${op}: path must be a non-empty string, received ${describe(given)}`,
    );
  }
  // A path with NUL names no file (the system's paths end at one): it was stat's TypeError
  // taken for an unreadable place ("options.path cannot be read: the system could not tell what
  // is there"), a LibraryNotFoundError for a bad argument.
  if (given !== undefined && given.includes("\0")) {
    throw new TypeError(
      `Cannot ${op}: path must not contain a NUL character, received ${describe(given)}`,
    );
  }
  if (expectAbi !== undefined && (!Number.isInteger(expectAbi) || expectAbi < 0)) {
    // Not a number at all ("12"): a TypeError; a number out of range (-1, 1.5, NaN): a
    // RangeError, as every other numeric option says (it was a TypeError for both).
    throw new (typeof expectAbi === "number" ? RangeError : TypeError)(
      `Cannot ${op}: expectAbi must be a non-negative integer, received ${describe(expectAbi)}`,
    );
  }
  if (build !== undefined && typeof build !== "boolean") {
    throw new TypeError(`Cannot ${op}: build must be a boolean, received ${describe(build)}`);
  }
  // Before the search: it needs --allow-ffi as dlopen does, so a script without it learns that
  // here, not after a search (or a build) for a library it cannot open.
  runFirstOpen();
  // What was checked, not `options` again: a getter answered undefined to the check and a
  // non-string path or a truthy "yes" for build (which ran a build) to a second read.
  const path = findLibrary({ path: given, expectAbi, build });
  let lib: Deno.DynamicLibrary<Symbols>;
  try {
    lib = Deno.dlopen(path, symbols);
  } catch (e) {
    // Revoked since this isolate's first open (Deno.permissions.revoke), which runFirstOpen
    // checked; or a prompt answered no.
    if (e instanceof Deno.errors.NotCapable) throw ffiRefused(e, ` for ${path}`);
    // A file that is no library, or another library (no kc_* symbols), or one whose own
    // dependencies do not load. It said "(scripts need --allow-ffi)" here, which a script
    // without the flag never reaches (NotCapable above): the advice sent users after a flag
    // they had given.
    throw new LibraryNotFoundError(
      `Cannot open library: ${path} does not load as the kcoro library, received ${
        (e as Error).name
      }: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const expected = expectAbi ?? ABI_VERSION;
  const found = lib.symbols.kc_abi_version();
  if (found !== expected) {
    lib.close();
    throw new AbiMismatchError(path, found, expected);
  }
  return new Library(MAKE, lib, path, found);
}

/**
 * What modules deferred from their import to this isolate's first `openLibrary` (FFI work that
 * needs `--allow-ffi`: taking a module-lifetime slot's address); null once they all ran.
 */
let firstOpen: (() => void)[] | null = [];

/**
 * @ignore Runs `hook` before this isolate first opens a library (at once if it did already),
 * for FFI work that would make importing the module need `--allow-ffi` (Deno's NotCapable at
 * load): nothing native can be called before a library is open. Until every hook ran without
 * throwing, each open runs them all again, so a hook must be idempotent. Internal.
 */
export function beforeFirstOpen(hook: () => void): void {
  if (firstOpen === null) hook();
  else firstOpen.push(hook);
}

/** Runs the `beforeFirstOpen` hooks, once; a NotCapable from them names `--allow-ffi`. */
function runFirstOpen(): void {
  if (firstOpen === null) return;
  try {
    for (const hook of firstOpen) hook();
  } catch (e) {
    // Deno.UnsafePointer.of needs --allow-ffi for all paths: one scoped to the library's file
    // (--allow-ffi=<path>) is refused here too.
    if (e instanceof Deno.errors.NotCapable) {
      throw ffiRefused(e, " (for all paths: --allow-ffi=<path> is not enough)");
    }
    throw e;
  }
  firstOpen = null;
}

/** The error for FFI refused by Deno's permissions (`e`, a NotCapable), `where` said after it. */
function ffiRefused(e: Error, where: string): LibraryPermissionError {
  return new LibraryPermissionError(
    "ffi",
    `Cannot open the kcoro library: --allow-ffi is not granted${where}; run with --allow-ffi, ` +
      `received ${e.name}: ${e.message}`,
    { cause: e },
  );
}

let shared: Library | null = null;

/** The process-wide library, opened on first use (with default options). */
export function library(): Library {
  if (shared === null || !isLibraryOpen(shared)) shared = openLibrary();
  return shared;
}

/**
 * @ignore The process-wide library, for what lives in the library opened from `path` (a shared
 * channel's, the sharing isolate's absolute `Library.path`): opened from `path` when this
 * isolate has none open, instead of searching again (a relative `KCORO_LIB` is resolved against
 * the directory current at the search: in a Worker started after a `Deno.chdir`, another
 * directory). Null when the one open here is another file (its handles name nothing of that
 * one's); an `InvalidHandleError` when `path` names nothing this isolate can look at
 * (`sameFile`). A failure to open it names `path` as the channel's library. Internal.
 */
export function libraryAt(path: string, op: string): Library | null {
  if (shared !== null && isLibraryOpen(shared)) return ifSameFile(shared, path, op);
  // Opened from the path only when it is an absolute path to a file named as a kcoro library
  // (`libkcoro.so`, `kcoro.dll`, `libkcoro-2.so`: "kcoro" in the name and the platform's
  // extension): the path comes from message data, and opening a library runs its code before
  // the ABI check could refuse it. Anything else searches, as an object without the field does.
  if (!fromData(path)) {
    return ifSameFile(library(), path, op);
  }
  try {
    shared = openLibrary({ path });
  } catch (e) {
    if (!(e instanceof LibraryNotFoundError)) throw e;
    const message = `Cannot ${op}: it lives in the library at ${path}, which this isolate ` +
      `cannot open, received ${e.message}`;
    throw e instanceof LibraryPermissionError
      ? new LibraryPermissionError(e.permission, message, { cause: e })
      : new LibraryNotFoundError(message, { cause: e });
  }
  return shared;
}

/** Whether `path` (from a shared channel's data) may be opened: see `libraryAt`. */
function fromData(path: string): boolean {
  const name = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
  const ext = libraryFileName().slice(libraryFileName().lastIndexOf("."));
  const absolute = path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path);
  // The extension last, or before a version (`libkcoro.so.1`): not `libkcoro.so.bak`.
  const at = name.lastIndexOf(ext);
  const version = name.slice(at + ext.length);
  return absolute && name.includes("kcoro") && at > 0 && /^(\.[0-9]+)*$/.test(version);
}

/**
 * `lib` if `path` (a shared channel's library) names its file, null if another (`sameFile`);
 * where `path` names nothing this isolate can look at, an `InvalidHandleError` saying why.
 */
function ifSameFile(lib: Library, path: string, op: string): Library | null {
  const same = sameFile(lib.path, path);
  if (typeof same === "string") {
    throw new InvalidHandleError(
      `Cannot ${op}: its library is not ${lib.path}, which this isolate opened: ${same}, ` +
        `received ${describe(path)}`,
    );
  }
  return same ? lib : null;
}

/**
 * Whether `a` (this isolate's library) and `b` (a shared channel's) name the same file: the
 * same string, or the same device and inode (a link, `..`); true where that cannot be told (no
 * `--allow-read` for one, a system that reports no inode, this isolate's own file gone since it
 * was opened), leaving the handle check to the library. Where `b` names nothing (no file there,
 * a file on the way) or what is there cannot be told for a reason of the system's (it refused,
 * a loop of symbolic links: `statFailed`), why, for the refusal: `Library.path` is absolute and
 * its file was there when it was opened, so only a forged field names nothing. Before, every
 * path it could not stat was the same file, and such a field was accepted.
 */
function sameFile(a: string, b: string): boolean | string {
  if (a === b) return true;
  let y: Deno.FileInfo;
  try {
    y = Deno.statSync(b);
  } catch (e) {
    const failed = statFailed(e);
    if (failed === "nothing") {
      return `no file there (${(e as Error).name}: ${(e as Error).message})`;
    }
    return failed.refused !== null ? true : failed.why; // refused: no --allow-read for it
  }
  try {
    const x = Deno.statSync(a);
    if (x.ino === null || y.ino === null) return true;
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return true;
  }
}

/** Closes the process-wide library, if open. Idempotent. */
export function closeLibrary(): void {
  const lib = shared;
  try {
    // The private close, not the member (`closeOf`): closed also when it throws (close hooks that
    // kept registering).
    if (lib !== null) closeOf(lib);
  } finally {
    // Unless a hook run by the close opened a new one (library()), which stays the shared one;
    // and unless `lib` is still open: a call from one of its close hooks, which returns at once
    // (the close in progress finishes by itself), forgets nothing. Before, it forgot the library
    // while it was closing, and a later hook's library() opened a second one, which stayed open.
    if (shared === lib && (lib === null || !isLibraryOpen(lib))) shared = null;
  }
}

refuseAsValue(Library, "a Library", "call `library()` where it is needed", NOT_CLONEABLE);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(Library.prototype, "Library");

/**
 * The TypeError of a Library member called on what is none (a look-alike, another object, a
 * primitive): "Cannot close library: this is not a Library, received a Library look-alike".
 * Before, the engine's "Cannot read private member #lib".
 */
function notLibrary(self: unknown, op: string): TypeError {
  return new TypeError(`Cannot ${op}: this is not a Library, received ${describe(self)}`);
}

/** What a hot member's catch throws: `e` on a Library; `notLibrary` on what is none. */
function libraryThrown(self: unknown, op: string, e: unknown): unknown {
  return isLibrary(self) ? e : notLibrary(self, op);
}

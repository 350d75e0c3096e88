/**
 * kcoro's named errors. Every error kcoro throws is one of these (or a plain `RangeError` /
 * `TypeError` for a bad argument), each with `name` set, and a brand (`ERROR_BRAND`) by which
 * kcoro recognises its errors across copies of this module, where `instanceof` does not work.
 *
 * This module is a leaf: it imports nothing of kcoro's, so both `ffi/` and `src/` may use it.
 *
 * @module
 */

import { isProxy } from "node:util/types";

/**
 * String's and BigInt's prototype methods, `parseInt` and `Math.clz32` as the module loaded, for
 * `headOf`, `cutShort` and a bigint's `describe`, which a print (src/inspect.ts) calls: a caller's
 * replacement (`String.prototype.slice = ...`, `BigInt.prototype.toString = ...`) never runs there.
 */
const callOf = Function.prototype.call;
const stringSlice = callOf.bind(String.prototype.slice) as (
  s: string,
  a: number,
  b?: number,
) => string;
const charCodeAt = callOf.bind(String.prototype.charCodeAt) as (s: string, i: number) => number;
const bigintText = callOf.bind(BigInt.prototype.toString) as (x: bigint, radix: number) => string;
const parseInteger = parseInt;
const clz32 = Math.clz32;

/** Native status codes (`include/kcoro.h`): 0 is success, negative values are errors. */
export const Status = {
  OK: 0,
  ENOTCORO: -1,
  EINTR: -4,
  EBADH: -9,
  EAGAIN: -11,
  ENOMEM: -12,
  EBUSY: -16,
  EINVAL: -22,
  EPIPE: -32,
  ETIME: -62,
  ESHUTDOWN: -108,
  ECANCELED: -125,
} as const;
// Frozen: it is exported, and the module compares native results against it (a changed code
// would turn one status into another).
Object.freeze(Status);

/** By code; a null prototype, so that no inherited name ("toString") passes for one. */
const statusNames: Record<number, string> = Object.assign(
  Object.create(null),
  Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, `KC_${k}`])),
);

/**
 * How an error message names a received value: strings quoted, bigints with `n`, -0 as `-0`,
 * objects by their tag. Internal (not re-exported from mod.ts).
 */
export function describe(x: unknown): string {
  // A string over 4096 characters by its head and length (`quotedBounded`): quoted whole, a huge
  // one made the message longer than V8 allows (the engine's RangeError came instead of the named
  // error). Up to 4096 whole, so that a path (PATH_MAX) is named as given. A symbol's description
  // and an object's tag alike, and a bigint of more digits by its size (`bigintBounded`).
  if (typeof x === "string") return quotedBounded(x, "string", WHOLE_CHARS);
  if (typeof x === "bigint") return bigintBounded(x);
  // A function's own toString may be anything (its whole source, or a throw): its kind only.
  if (typeof x === "function") return "a function";
  // -0 as written: String(-0) is "0", which read as a value the check accepts (a count of 0).
  if (Object.is(x, -0)) return "-0";
  if (typeof x === "symbol") {
    // By Symbol.prototype's own getter, as the module loaded: a caller's redefinition never runs.
    const about: string | undefined = symbolDescription.call(x);
    if (about === undefined || about.length <= WHOLE_CHARS) return String(x);
    return `Symbol(${headOf(about)}…) (a description of ${about.length} characters)`;
  }
  if (x === null || typeof x !== "object") return String(x);
  let tag: string;
  try {
    tag = Object.prototype.toString.call(x); // reads Symbol.toStringTag: a getter, a proxy
  } catch {
    return "an object that cannot be described (its tag threw)"; // keep the message we meant
  }
  // A tag (the caller's Symbol.toStringTag) over 4096 characters, as a string is.
  if (tag.length > WHOLE_CHARS + 9) {
    const own = tag.slice(8, -1); // "[object " and "]"
    return `[object ${headOf(own)}…] (a tag of ${own.length} characters)`;
  }
  if (tag === "[object Object]") {
    const name = lookAlikeName(x);
    if (name !== undefined) return `${/^[AEIOU]/.test(name) ? "an" : "a"} ${name} look-alike`;
  } else {
    // An instance of a kcoro class, by its brand (`nameInstances`): "a Job", "a Channel". Before,
    // its tag: "received [object Job]", for a Deferred and a scope too.
    const named = /^\[object (\w+)\]$/.exec(tag);
    const own = named === null ? undefined : instances.get(named[1]);
    if (own !== undefined) {
      try {
        const said = own(x);
        if (said !== undefined) return said;
      } catch {
        // the tag alone (a brand check throws only on an engine error)
      }
    }
  }
  // Arrays and typed arrays say how long they are: "[object Array]" alone does not tell a
  // caller which limit it crossed (a batch, a cell count).
  try {
    // A typed array as the engine knows it (its tag getter answers undefined for anything else,
    // a DataView too, running no code of the caller's), whatever its prototype says. It was
    // `ArrayBuffer.isView` and not `instanceof DataView`, which read the prototype: a typed
    // array given DataView.prototype was described without its length, and a `DataView`'s own
    // `Symbol.hasInstance` (the caller's) ran inside an error's message.
    if (typedTag.call(x) !== undefined) {
      return `${tag} of length ${typedLength.call(x)}`; // the engine's, not an own `length`
    }
    if (Array.isArray(x)) {
      const n = (x as unknown[]).length; // a Proxy's trap may run: its answer, or nothing
      if (typeof n === "number") return `${tag} of length ${n}`;
    }
  } catch {
    // a detached buffer or a trap that threw: the tag alone
  }
  return tag;
}

/**
 * kcoro's classes by prototype (`nameLookAlikes`): an object that inherits from one but is none
 * of it, whose tag is `[object Object]` (each class's Symbol.toStringTag getter names an instance
 * only, so that a message does not call it what it is not), is described as "a Channel
 * look-alike": an object made from the prototype (`Object.create(NativeScope.prototype)`), a
 * Proxy of an instance (its private fields are the instance's, not the Proxy's). Before, the
 * message of a method called on one, or of an argument check refusing one, said
 * "received [object Object]", which named nothing the caller could look for.
 */
const lookAlikes = new Map<object, string>();

/** Internal. `proto` is class `name`'s prototype: its look-alikes are described as such. */
export function nameLookAlikes(proto: object, name: string): void {
  lookAlikes.set(proto, name);
  // Its instances as "a <name>", where the class's own tag getter (a brand check that runs no
  // code of the caller's) says it is one: not an object of the caller's whose tag says so.
  const tag = Object.getOwnPropertyDescriptor(proto, Symbol.toStringTag)?.get;
  if (tag !== undefined && !instances.has(name)) {
    nameInstances(name, (x) => tag.call(x) === name ? article(name) : undefined);
  }
}

/**
 * Internal. Refuses a sync `using` of `proto`'s instances by name, as it is declared, before its
 * block runs: their disposal waits (`why`), which a sync disposal cannot, and one that did not
 * wait would let what it ends outlive the block unawaited. A getter, so that the `using`
 * declaration, which reads it, throws; `await using` reads `Symbol.asyncDispose` and never this.
 * Defined on the prototype, outside the class: as a class member it would be in the class's type,
 * and TypeScript would accept the `using` it refuses. Before, the engine's TypeError ("... is not
 * a function") came. For a CoroutineScope, a NativeScope and a Runtime.
 */
export function refuseSyncDispose(proto: object, what: string, why: string): void {
  Object.defineProperty(proto, Symbol.dispose, {
    get(this: unknown): never {
      throw new TypeError(
        `Cannot dispose ${what} synchronously: ${why}, so declare it with \`await using\`, ` +
          `not \`using\`, received ${describe(this)}`,
      );
    },
    configurable: true,
    enumerable: false,
  });
}

/**
 * How `describe` names an instance of a kcoro class whose `Symbol.toStringTag` is the key: the
 * function answers its description ("a Job", "a Deferred"), or undefined for an object that only
 * claims the tag (the caller's), described by the tag then.
 */
const instances = new Map<string, (x: object) => string | undefined>();

/** Internal. Instances tagged `name` are described by `describeOne` (see `instances`). */
export function nameInstances(name: string, describeOne: (x: object) => string | undefined): void {
  instances.set(name, describeOne);
}

/** `name` with its indefinite article: "a Job", "an Actor". */
export function article(name: string): string {
  return `${/^[AEIOU]/.test(name) ? "an" : "a"} ${name}`;
}

/**
 * The name of the kcoro class `x` inherits from, found up its prototype chain (at most 32 steps:
 * a Proxy's getPrototypeOf trap may answer a fresh Proxy each time); undefined if none, or when
 * a trap threw or a revoked Proxy was met (the tag alone then, as before).
 */
function lookAlikeName(x: object): string | undefined {
  try {
    let p: object | null = x;
    for (let i = 0; i < 32 && p !== null; i++) {
      p = Object.getPrototypeOf(p);
      if (p === null) return undefined;
      const name = lookAlikes.get(p);
      if (name !== undefined) return name;
    }
  } catch {
    // a trap that threw, a revoked Proxy: the caller's object, described by its tag
  }
  return undefined;
}

const symbolDescription = Object.getOwnPropertyDescriptor(Symbol.prototype, "description")!.get!;

const typedLength = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  "length",
)!.get!;
const typedTag = Object.getOwnPropertyDescriptor(
  Object.getPrototypeOf(Uint8Array.prototype),
  Symbol.toStringTag,
)!.get!;

/**
 * Throws "Cannot <op>: options must be an object" unless `options` is a non-null object, and
 * `optionsUnreadable`'s TypeError for one that cannot be read at all (a revoked Proxy).
 */
export function checkOptions(op: string, options: unknown): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object, received ${describe(options)}`);
  }
  checkReadable(op, options);
}

/**
 * Throws "Cannot <op>: options could not be read, received <x>", a TypeError whose `cause` is the
 * engine's error, for options the engine cannot read at all: a revoked Proxy (or a Proxy over
 * one), every read of which throws the engine's bare TypeError ("Cannot perform 'get' on a proxy
 * that has been revoked"), which came out of every call given one before. Internal: every call
 * that reads an options object calls it (through `checkOptions`, or itself where it checks the
 * object its own way) before its first read.
 *
 * Told by `Array.isArray`, which runs none of the caller's code (on a Proxy it asks its target,
 * no trap) and throws only for a revoked one: ~0.4 ns on an ordinary object, which `signalOf`
 * (every wait given `{ signal }`) saves by asking only once its read threw. What the caller's own
 * code throws while its options are read (a getter, a live Proxy's trap) is not this: it is the
 * caller's, and goes through unchanged (README, "Wrong input").
 */
export function checkReadable(op: string, options: object): void {
  try {
    Array.isArray(options);
  } catch (e) {
    throw new TypeError(
      `Cannot ${op}: options could not be read, received ${describe(options)}`,
      { cause: e },
    );
  }
}

/** `Array.isArray` as the module loaded (`isRevoked`, which a print calls). */
const arrayIsArray = Array.isArray;

/**
 * Whether `x` is a revoked Proxy (or a Proxy over one): `checkReadable`'s test, no trap run.
 * Internal: for the readers of a value (not an options object) that would read it first.
 */
export function isRevoked(x: object): boolean {
  try {
    arrayIsArray(x); // as the module loaded: a caller's `globalThis.Array` never runs (a print)
    return false;
  } catch {
    return true;
  }
}

/**
 * The names of an options type, each listed once as `{ name: true }`: a literal TypeScript holds
 * to the type both ways (a name the type lacks is an excess property, one left out a missing
 * one), so that a list of `checkOptionNames` cannot fall behind the options it checks. Frozen.
 */
export function optionNames<O extends object>(names: Record<keyof O, true>): readonly string[] {
  return Object.freeze(Object.keys(names));
}

/**
 * Throws a TypeError for the first own enumerable string key of `options` that `known` does not
 * name: "Cannot <op>: unknown option "slabStack" (known: workers, stackSize, fpControl,
 * slabStacks; did you mean "slabStacks"?), received { slabStack: true }". A misspelt option was
 * silently ignored before, and so the default taken (README, "Wrong input"). Internal; called
 * once per options object by the function that reads it, just after its first read of an option
 * and before it checks their values (see "Cheap" below).
 *
 * Inherited keys are not looked at (only those `for...in` finds that are the object's own): an
 * options object made with `Object.create(defaults)` still reads its inherited options, and a
 * key someone added to `Object.prototype` does not fail every call. Symbol keys and
 * non-enumerable ones are not either (no option is one; `for...in` skips them). An index 0, own
 * or inherited (a non-empty array, typed array or String object), is refused before any key is
 * listed (see below), and so is a non-empty array without one. It reads no value (no getter
 * runs) unless it throws; a Proxy's `has`, `ownKeys`, `getOwnPropertyDescriptor` and
 * `getPrototypeOf` traps run (and an array's `get` of `length`), and what they throw is thrown,
 * as a throwing `get` trap's is at the read of an option.
 *
 * Cheap: `for...in` over a literal walks V8's enum cache, without an array made, and `0 in` is
 * an inline cache's answer; the common one-key case is one comparison, against a `known` that
 * lists it first. Called after a read of an option, that is: the read tells V8 the object's
 * shape, which then answers `0 in` too (called before any read, a channel's creation cost ~15 ns
 * more, bench/channel_bench.ts; after one, nothing measurable). A wait given `{ signal }` has a
 * copy of its own (`checkSignalOptionNames`: `signalOf`, a producer's send).
 */
export function checkOptionNames(op: string, options: object, known: readonly string[]): void {
  // An index is no option, and `for...in` would list every index up front, a key string each:
  // a typed array or a String object holds a byte or a character per index (a 100 MB
  // Uint8Array passed as options was a hundred million keys, gigabytes, before the first was
  // looked at). Index 0, own or inherited (a Proxy's `has` trap answers), is refused first.
  if (0 in options) throw unknownOption(op, options, "0", known);
  // A non-empty array without its index 0 (deleted, or never set): a holey array's indices are
  // 8 bytes each, their key strings ten times that (an array of ten million made 730 MB more and
  // took seconds, before its "1" was refused). Its length (a Proxy's `get` trap answers).
  if (Array.isArray(options) && (options as unknown[]).length !== 0) {
    throw new TypeError(
      `Cannot ${op}: options must be an object of named options, not an array, received ${
        describe(options)
      }`,
    );
  }
  for (const key in options) {
    if (key !== known[0] && !known.includes(key) && Object.hasOwn(options, key)) {
      throw unknownOption(op, options, key, known);
    }
  }
}

/** `checkOptionNames`'s error, built only when it throws. */
function unknownOption(op: string, options: object, key: string, known: readonly string[]) {
  const near = nearestName(key, known);
  const hint = near === undefined ? "" : `; did you mean ${JSON.stringify(near)}?`;
  // The value by its descriptor, so that a getter of the caller's does not run (a Proxy's trap
  // does, and one that throws leaves the value out).
  let value: string;
  try {
    const d = Object.getOwnPropertyDescriptor(options, key);
    value = d === undefined
      ? "an inherited value"
      : !("value" in d)
      ? "a getter"
      : typeof d.value === "string"
      ? quotedBounded(d.value, "string") // as its key: 64 characters whole at most
      : describe(d.value);
  } catch {
    value = "a value that cannot be read";
  }
  const quoted = quotedBounded(key, "key");
  const name = key.length <= SHOWN_CHARS && /^[A-Za-z_$][\w$]*$/.test(key) ? key : quoted;
  const list = known.join(", ");
  return new TypeError(
    `Cannot ${op}: unknown option ${quoted} (known: ${list}${hint}), received { ${name}: ${value} }`,
  );
}

/** How many characters of a string cut short (`quotedBounded`) a message shows. */
const SHOWN_CHARS = 64;

/** The longest string `describe` quotes whole (a path's PATH_MAX), and the longest tag it shows. */
const WHOLE_CHARS = 4096;

/**
 * Internal. `s` as it is up to 4096 characters, else its first 64, an ellipsis and its length:
 * `xxxx… (a message of 5000 characters)`, for text a message holds unquoted (an Error's message),
 * as `describe` bounds a string it quotes.
 */
export function cutShort(s: string, what: string): string {
  return s.length <= WHOLE_CHARS ? s : `${headOf(s)}… (a ${what} of ${s.length} characters)`;
}

/**
 * Internal. `s`'s first SHOWN_CHARS (64) characters, one fewer where the last would split a
 * surrogate pair.
 */
export function headOf(s: string): string {
  const last = charCodeAt(s, SHOWN_CHARS - 1); // a high surrogate: its pair is left out whole
  return stringSlice(s, 0, last >= 0xd800 && last <= 0xdbff ? SHOWN_CHARS - 1 : SHOWN_CHARS);
}

/** The least bigint of more than 4094 digits: one under it (and over its negation) prints whole. */
const BIGINT_WHOLE = 10n ** 4094n;

/**
 * `x` as `123n` up to 4094 digits (its text 4096 characters at most, as `describe`'s strings), a
 * larger one by its size: `a bigint of 1048577 bits` (`a negative bigint of ...`). Its decimal
 * text costs more than linear time in its size: ~4 s for one of 2**24 bits (5 million digits),
 * ~0.8 s for 2**22, minutes for the engine's largest (2**30 bits), the thread held for an error
 * message. Its bits are counted from its hex text (linear, a power of two's radix): ~0.5 s for
 * one of 2**29 bits.
 */
function bigintBounded(x: bigint): string {
  if (x > -BIGINT_WHOLE && x < BIGINT_WHOLE) return `${x}n`;
  const hex = bigintText(x, 16);
  const first = x < 0n ? 1 : 0; // its "-"
  const bits = (hex.length - first - 1) * 4 + 32 - clz32(parseInteger(hex[first], 16));
  return `${x < 0n ? "a negative" : "a"} bigint of ${bits} bits`;
}

/**
 * `s` quoted as JSON, or, when longer than `whole` characters, its first SHOWN_CHARS (not cut
 * inside a surrogate pair) quoted, an ellipsis and its length: `"xxxx"… (a key of 268435456
 * characters)`. Printed whole, a huge string built a message longer than V8's longest (~2**29
 * characters): the engine's RangeError "Invalid string length" came instead of the named error,
 * after copying the string over (an unknown option's key of 45 million control characters, each
 * six as JSON and named twice, was enough; a capacity name of 2**28 quotes, each two, too).
 */
function quotedBounded(s: string, what: string, whole = SHOWN_CHARS): string {
  if (s.length <= whole) return JSON.stringify(s);
  return `${JSON.stringify(headOf(s))}… (a ${what} of ${s.length} characters)`;
}

/**
 * The name in `known` nearest to `key` (edit distance, case ignored), when it is near enough to be
 * a misspelling of it: at most a third of its letters (at least one) apart. Undefined otherwise.
 */
function nearestName(key: string, known: readonly string[]): string | undefined {
  // A key longer than any name by more than 3 is near none (`editDistance`): not copied lowered.
  if (key.length > SHOWN_CHARS) return undefined;
  const k = key.toLowerCase();
  let best: string | undefined = undefined, bestDistance = Infinity;
  for (const name of known) {
    const d = editDistance(k, name.toLowerCase());
    if (d < bestDistance && d <= Math.max(1, Math.floor(name.length / 3))) {
      best = name;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance, an adjacent swap counting one edit (optimal string alignment). */
function editDistance(a: string, b: string): number {
  // Long keys are no misspelling of a short name: bounded, so that a huge key costs nothing.
  if (Math.abs(a.length - b.length) > 3) return Infinity;
  let before: number[] = [], prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      let d = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, before[j - 2] + 1);
      }
      row.push(d);
    }
    before = prev;
    prev = row;
  }
  return prev[b.length];
}

/** The option names of a call whose only option is `signal` (`signalOf`). */
const SIGNAL_ONLY = optionNames<{ signal?: AbortSignal }>({ signal: true });

/**
 * `checkOptionNames` for the options of a call whose only option is `signal` (`signalOf`, a
 * producer's send), in a copy of its own: V8 keeps what a check met per function, and the shared
 * one meets every options object's shape, where this sees `{ signal }`. Any other own key: the
 * shared one says what. Still ~7 ns a wait given `{ signal }`, `for...in`'s
 * (bench/channel_bench.ts, "ping-pong round trip, rendezvous, send + receive with a signal", two
 * such waits a round trip: minima 216-230 ns before, 231-245 ns after). Measured and not kept
 * (session 41, alternating runs, minima a round trip): `Object.keys` with a one-key fast path,
 * 227-233 ns against this loop's 226-236, and the loop's body moved to a function of its own, 231;
 * without the loop, 213-215 (the whole price: ~8-11 ns a wait, `for...in`'s enumeration). A cache
 * of the last object checked would be sound only for a frozen one (another may gain a key), and
 * would keep a caller's object (and its signal) alive: a `{ signal }` literal is not frozen.
 */
export function checkSignalOptionNames(op: string, options: object): void {
  if (0 in options || Array.isArray(options)) checkOptionNames(op, options, SIGNAL_ONLY);
  // Only an own key: the shared check lists every key again, so that calling it on each
  // inherited one took time quadratic in their number (an options object whose prototype is an
  // array of 10,000 elements, `Object.create(array)`, took ~9 s a call before it was sent).
  for (const key in options) {
    if (key !== "signal" && Object.hasOwn(options, key)) checkOptionNames(op, options, SIGNAL_ONLY);
  }
}

/**
 * The `signal` of a waiting call's optional options, checked: options undefined or an object
 * with no other own key (`checkOptionNames`), signal undefined or an AbortSignal (else a
 * TypeError saying which and what was received).
 */
export function signalOf(op: string, options: unknown): AbortSignal | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== "object" || options === null) checkOptions(op, options); // throws
  // `checkReadable` only once the read threw (a revoked Proxy throws at the first): every wait
  // given `{ signal }` comes here, and its `Array.isArray` up front cost ~0.4 ns a call
  // (minima of 1000 calls, alternating: 5.5-5.9 µs before, 6.1 µs with it), a try nothing.
  let signal: unknown;
  try {
    signal = (options as { signal?: unknown }).signal;
  } catch (e) {
    checkReadable(op, options as object);
    throw e; // the caller's own getter's or trap's: theirs, as it is
  }
  checkSignalOptionNames(op, options as object);
  checkSignal(op, signal);
  return signal as AbortSignal | undefined;
}

/*
 * A caller's signal is read and listened to only through AbortSignal's and EventTarget's own
 * members, captured here as the module loads, never through the signal's: an `aborted` or
 * `reason` getter, an `addEventListener` or `removeEventListener` set on the signal, on a
 * prototype put under it or on a subclass's never runs (before, one that threw escaped a job's
 * finalizer partway, leaving it and its parent unfinished, a `delay`'s timer and so the process,
 * or a call that must reject as a synchronous throw). With `isAbortSignal` refusing a Proxy,
 * kcoro runs none of a signal's own code; its abort listeners are the only code of kcoro's the
 * signal runs.
 */
const abortedOf = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "aborted")!.get!;
const reasonGetter = Object.getOwnPropertyDescriptor(AbortSignal.prototype, "reason")!.get!;
const addListener = EventTarget.prototype.addEventListener;
const currentTargetOf = Object.getOwnPropertyDescriptor(Event.prototype, "currentTarget")!.get!;
const removeListener = EventTarget.prototype.removeEventListener;
const SIGNAL_PROTOTYPE = AbortSignal.prototype;
const ONCE: AddEventListenerOptions = Object.freeze({ once: true });
/**
 * The symbol keys under which the engine keeps a signal's own state (its brand, its reason),
 * each an own property of every real signal and of no object merely made from its prototype:
 * `signalDescription` tells the two apart by them, reading no value (no getter of the caller's).
 */
const SIGNAL_STATE_KEYS = Object.getOwnPropertySymbols(new AbortController().signal);

/** `signal.aborted` by AbortSignal's own getter (`isAbortSignal` passed it). Internal. */
export function isAborted(signal: AbortSignal): boolean {
  return abortedOf.call(signal);
}

/** `signal.reason` by AbortSignal's own getter (`isAbortSignal` passed it). Internal. */
export function abortReason(signal: AbortSignal): unknown {
  return reasonGetter.call(signal);
}

/**
 * `listenAbortNamed`'s listen without its call of `listener`: adds it unless the signal is aborted,
 * and answers whether it is aborted once the listen is done (then keeping no listener). Throws
 * what the listen or the read after it throws, keeping no listener.
 */
function listenOnly(signal: AbortSignal, listener: () => void): boolean {
  if (abortedOf.call(signal)) return true;
  addListener.call(signal, "abort", listener, ONCE);
  let aborted: boolean;
  try {
    aborted = abortedOf.call(signal);
  } catch (e) {
    removeAbortListener(signal, listener);
    throw e;
  }
  // Aborted during the listen: the engine never calls a listener added after the abort, nor
  // drops it, so it goes here (`unlistenAbort` leaves an aborted signal's listeners alone).
  if (aborted) removeAbortListener(signal, listener);
  return aborted;
}

/**
 * What each listener `listenAbortNamed` added asks first, passing itself and the `event` it was
 * called with: whether `signal` has aborted. Internal. When it has not, the call was no abort
 * and the listener must change nothing: an "abort" Event the caller dispatched
 * (`signal.dispatchEvent(new Event("abort"))`), or the caller's code that reached the listener
 * through the engine's listeners property and called it. Such an event dropped the `once`
 * listener all the same, so it is added again here for the real abort (the engine calls no
 * listener added during a dispatch in that dispatch, and adds none twice: one still listening
 * stays one). Before, the wait kept no listener after such an event, and the real abort left it
 * pending for ever. Only a call of the engine's dispatch on `signal` (the event's own
 * `currentTarget`, read by Event's own getter, is `signal`) listens again: a call of the
 * caller's after the wait settled, its listener removed, added it back before, and it stayed on
 * the signal, holding its wait, until the signal aborted (one per such call). Done here, not by
 * a wrapper around each listener: a closure and a WeakMap entry from listener to wrapper per
 * wait made every wait given a signal ~1.2 µs slower (a receive that waits: ~160 ns before), the
 * WeakMap's short-lived keys costing the garbage collector that much.
 */
export function abortHeard(signal: AbortSignal, listener: () => void, event: unknown): boolean {
  if (abortedOf.call(signal)) return true;
  let dispatched: boolean;
  try {
    dispatched = currentTargetOf.call(event) === signal;
  } catch {
    dispatched = false; // no Event (a call of the caller's with none, or with anything else)
  }
  if (!dispatched) return false;
  try {
    addListener.call(signal, "abort", listener, ONCE);
  } catch {
    // only a signal whose engine state the caller redefined after the listen: unheard
  }
  return false;
}

/**
 * `run()`'s promise, or, given a `signal`, one that its abort rejects with the signal's reason
 * first (what `run` began goes on: `Runtime.drain`, `Runtime.shutdown`, `NativeScope.wait`).
 * Aborted before: rejected at once, `run` never called. The signal is read by AbortSignal's own
 * members (`isAborted`) and listened to as every wait's (`listenAbortNamed`: one that aborts during
 * the listen rejects, `run` never called); the listener goes before the call settles (the abort
 * removes it too: `once`), so none is left once the caller's code after it runs. Before, a drain's
 * was removed a turn of microtasks after it resolved.
 */
export function givenUpBy<T>(
  op: string,
  signal: AbortSignal | undefined,
  run: () => Promise<T>,
): Promise<T> {
  if (signal === undefined) return run();
  if (isAborted(signal)) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    // Only once the signal aborted: a call before (the caller's code that reached the listener
    // through the engine's listeners property) changes nothing.
    // `abortHeard`: a fake "abort" Event (no abort) has it listen again.
    const onAbort = (event?: Event) => {
      if (abortHeard(signal, onAbort, event)) reject(abortReason(signal));
    };
    if (listenAbortNamed(op, signal, onAbort)) return;
    run().then((v) => {
      unlistenAbort(signal, onAbort);
      resolve(v);
    }, (e) => {
      unlistenAbort(signal, onAbort);
      reject(e);
    });
  });
}

/**
 * Adds `listener` for the signal's abort, once, by EventTarget's own method, and answers whether
 * the signal is aborted once the listen is done. Internal: the one way each wait listens to a
 * caller's signal (a channel's send and receive, a select, a `delay`, a `join`, an `await`, a
 * native scope's wait, a producer's send, a scope following its `signal`).
 *
 * The one rule for an abort that comes before the listener could hear it: a signal aborted
 * before the listen gets no listener, and one that aborted during it loses the listener again
 * (the engine's listen may run the caller's code, an accessor of its own for the engine's
 * symbol-keyed listeners property on a prototype under the signal, that aborts it before the
 * listener is in, and the engine never calls it then); either way `listener` is called here,
 * once, and this answers true: every caller goes on as for an abort after the listen, the wait
 * given up by its own listener. Before, each caller asked again on its own (a scope's, a job's
 * and a producer's send did; a channel wait, a select, a `delay`, an actor's and a producer's
 * watch and a native scope's wait did not, and waited on, or delivered a value to a receive
 * whose signal had aborted).
 *
 * Every listener passed here must be idempotent (a second call finds its wait given up and
 * changes nothing): the engine calls it too when the caller's code aborts the signal after the
 * listener is in but before the listen returns. And each must ask
 * `abortHeard(signal, itself, event)` first, changing nothing while the signal has not aborted
 * (`abortHeard` listens again then, where the engine's dispatch called it): a
 * caller's code that holds the engine's listeners property holds the listener and may call it at
 * any time, during the listen too (before, a `delay` so called rejected with undefined and still
 * armed its timer), and an "abort" Event the caller dispatches calls it.
 *
 * A listen that throws (only a signal whose engine state the caller redefined) is thrown as the
 * named error `unlistenableSignal(op, error)`, keeping no listener, and then nothing is called:
 * each wait rejects with the same error under its own name, as createScope refuses such a
 * signal. Before, they rejected with the listen's raw error. Only the listen's error is named
 * so: what the call of `listener` for a signal aborted by then throws is thrown as it is (a
 * scope's follow listener cancels the scope, where only an engine error, a stack overflow, can
 * throw; before, that was named "cannot be listened to", the listen blamed).
 */
export function listenAbortNamed(op: string, signal: AbortSignal, listener: () => void): boolean {
  let aborted: boolean;
  try {
    aborted = listenOnly(signal, listener);
  } catch (e) {
    throw unlistenableSignal(op, e);
  }
  if (aborted) listener();
  return aborted;
}

/**
 * The named error for a listen that throws (only a signal whose engine state the caller
 * redefined), its error as the cause: "Cannot <op>: signal must be one that can be listened
 * to". Internal: createScope and the root scopes refuse such a signal with it, a producer's or
 * an actor's task fails with it when its task signal is such a one, and every wait rejects with
 * it (`listenAbortNamed`).
 */
export function unlistenableSignal(op: string, cause: unknown): TypeError {
  return new TypeError(
    `Cannot ${op}: signal must be one that can be listened to, received an AbortSignal whose listening throws`,
    { cause },
  );
}

/**
 * Removes what `listenAbortNamed` added, by EventTarget's own method. Internal. It never throws:
 * its callers are finalizers and settlements, which must run to their end (only a signal whose
 * engine-internal symbol-keyed properties the caller redefined could make it throw).
 */
export function unlistenAbort(signal: AbortSignal, listener: () => void): void {
  // An aborted signal is left alone: every listener `listenOnly` kept on it was added before the
  // abort, with `once`, so the abort's dispatch calls it and drops it itself (one still to come
  // in that dispatch finds its wait settled: each listener is idempotent), and the removal,
  // which scans the signal's list of listeners, would only find it gone. Before, it was asked
  // for: every wait an abort settled scanned the list of the waits still listening, so aborting
  // N waits on one signal took N^2/2 steps (20,000 receives: seconds inside `abort()`).
  let aborted: boolean;
  try {
    aborted = abortedOf.call(signal);
  } catch {
    aborted = false; // its engine state redefined: the removal says what it says
  }
  if (!aborted) removeAbortListener(signal, listener);
}

/** Removes `listener` by EventTarget's own method; never throws (`unlistenAbort`). */
function removeAbortListener(signal: AbortSignal, listener: () => void): void {
  try {
    removeListener.call(signal, "abort", listener);
  } catch {
    // the listener stays: it finds its wait settled, as any late abort does
  }
}

/**
 * Marks the signals `isAbortSignal` passed with a private field (a base class whose constructor
 * returns the object it is given puts a subclass's field on any object): `#checked in x` runs
 * none of x's code, a Proxy's included, and costs nothing, where asking whether x is a Proxy is
 * an op call (~10 ns) per wait. Invisible to the caller (no property, no symbol).
 */
class Stamp {
  constructor(x: object) {
    return x as Stamp;
  }
}
class CheckedSignal extends Stamp {
  #checked = true;
  static has(x: object): boolean {
    return #checked in x;
  }
  static mark(x: object): void {
    try {
      new CheckedSignal(x);
    } catch {
      // an engine that refuses private fields on a non-extensible object: checked each time
    }
  }
}

/**
 * True if `x` is an AbortSignal. Internal. instanceof alone passes an object made from
 * `AbortSignal.prototype`, whose `aborted` read then threw "Illegal invocation" later: outside
 * the try of a call that must reject (delay, join), or at values()'s first next()
 * (AbortSignal.any refuses it). A Proxy is none, nor a signal with a Proxy among its prototypes
 * below `AbortSignal.prototype`: the engine's brand checks see through one, but its traps would
 * run the caller's code at each read and listen (a throw there escaped as the overrides did). A
 * signal whose prototype the caller changed to one below AbortSignal's (a subclass's) is one.
 */
export function isAbortSignal(x: unknown): x is AbortSignal {
  if (typeof x !== "object" || x === null) return false;
  // Passed before, and its prototype still AbortSignal's own (a Proxy is never marked): no
  // Proxy to look for, but the getter is still asked. The engine keeps its state in
  // configurable symbol-keyed properties of the signal that a caller may redefine after the
  // mark (one that throws); before, a marked signal skipped the getter, and its first read
  // threw outside the try of a call that must reject (delay, join), where an unmarked one was
  // refused by name here.
  const marked = CheckedSignal.has(x);
  if (!(marked && Object.getPrototypeOf(x) === SIGNAL_PROTOTYPE)) {
    if (isProxy(x)) return false;
    // Ordinary objects' prototypes run no code; each is checked before it is asked for its own.
    for (let p = Object.getPrototypeOf(x); p !== SIGNAL_PROTOTYPE; p = Object.getPrototypeOf(p)) {
      if (p === null || isProxy(p)) return false;
    }
  }
  try {
    abortedOf.call(x);
  } catch {
    return false;
  }
  if (!marked) CheckedSignal.mark(x);
  return true;
}

/**
 * `task.signal` where it is an AbortSignal (`isAbortSignal`), else null: a task that a
 * CoroutineScope of the caller's own gives a block (produce's, an actor's) may have none, one
 * that is not an AbortSignal, or a getter that throws; kcoro's tasks always have one. Its users
 * leave such a task unwatched: its `addEventListener` threw a TypeError out of the block.
 */
export function taskSignal(task: { readonly signal?: unknown }): AbortSignal | null {
  try {
    const signal: unknown = task.signal;
    return isAbortSignal(signal) ? signal : null;
  } catch {
    return null; // the caller's getter: unwatched, as with none
  }
}

/**
 * `reportError(error)` for a failure kcoro reports as uncaught (a job's no parent took, a
 * `CoroutineExceptionHandler`'s throw, what an `onUndeliveredElement` hook, a job's Disposable
 * or any other code of the caller's that kcoro runs and must not let stop it throws): a Proxy,
 * or an object with one among its prototypes, is reported in a `TypeError` that carries it as
 * its `cause`, found without running any of its traps (`isProxy`). Deno's `reportError` asks
 * `Error.prototype.isPrototypeOf` of what it reports, which runs a Proxy's `getPrototypeOf`
 * trap: one that throws (a revoked Proxy's always does) threw out of `reportError` before any
 * `error` listener ran, so the failure was reported nowhere, and the throw escaped into the
 * job's end (a `supervisorScope` rejected with it, a launch threw it). Worse, Deno's count of
 * nested reports was left raised, so that every later `reportError` of the process (any error
 * kcoro or anyone reports) ended it, its `error` listeners never asked. Deno still reads the
 * TypeError's `cause` to print it (as any Error's, and an AggregateError's `errors`), which may
 * run the Proxy's traps (`getPrototypeOf`, and its inspection's `get`, `has`, ...), but there it
 * catches what they throw and the report goes on (tests/job_test.ts, a trap that throws).
 * Ordinary prototypes run no code; the walk stops at the first Proxy, never asking it. Internal.
 */
export function reportUncaught(error: unknown): void {
  globalThis.reportError(reportable(error));
}

/** `error`, or the TypeError that `reportUncaught` reports in its place (its `cause`). */
function reportable(error: unknown): unknown {
  if ((typeof error !== "object" && typeof error !== "function") || error === null) return error;
  for (let p: object | null = error; p !== null; p = Object.getPrototypeOf(p)) {
    if (isProxy(p)) {
      const what = p === error ? "a Proxy" : "an object with a Proxy among its prototypes";
      return new TypeError(
        `Cannot report error as it is: reporting it would run a Proxy's traps, received ${what}`,
        { cause: error },
      );
    }
  }
  return error;
}

/** Throws "Cannot <op>: signal must be an AbortSignal" unless `signal` is undefined or one. */
export function checkSignal(op: string, signal: unknown): void {
  if (signal === undefined) return;
  if (!isAbortSignal(signal)) {
    throw new TypeError(
      `Cannot ${op}: signal must be an AbortSignal, received ${signalDescription(signal)}`,
    );
  }
}

/**
 * What `checkSignal` says it received, running none of its code (a Proxy's traps, a getter of
 * the caller's: the engine's state is looked for as own keys, never read). A real signal whose
 * engine state the caller redefined so that reading it throws is one whose state cannot be read;
 * before, it was described as an object merely made from AbortSignal's prototype.
 */
function signalDescription(x: unknown): string {
  if (typeof x !== "object" || x === null) return describe(x);
  if (isProxy(x)) return "a Proxy";
  for (let p = Object.getPrototypeOf(x); p !== null; p = Object.getPrototypeOf(p)) {
    if (p === SIGNAL_PROTOTYPE) {
      return SIGNAL_STATE_KEYS.some((k) => Object.hasOwn(x, k))
        ? "an AbortSignal whose state cannot be read"
        : "an object of its prototype that is none";
    }
    if (isProxy(p)) return "an object with a Proxy among its prototypes";
  }
  return describe(x);
}

/** Throws "Cannot <op>: scope must be a CoroutineScope" unless `scope` looks like one. */
export function checkScope(op: string, scope: unknown): void {
  let launch: unknown;
  if (typeof scope === "object" && scope !== null) {
    try {
      launch = (scope as { launch?: unknown }).launch;
    } catch (e) {
      // A revoked Proxy (`checkReadable`'s test): the named TypeError, the engine's error its
      // cause. Before, the engine's bare "Cannot perform 'get' on a proxy that has been revoked"
      // came out of `produce` and `actor`. A getter or trap of the caller's: theirs, as it is.
      if (isRevoked(scope)) {
        throw new TypeError(
          `Cannot ${op}: scope must be a CoroutineScope, received ${describe(scope)}`,
          { cause: e },
        );
      }
      throw e;
    }
  }
  if (typeof launch !== "function") {
    throw new TypeError(
      `Cannot ${op}: scope must be a CoroutineScope, received ${describe(scope)}`,
    );
  }
}

/**
 * @ignore job.ts's brand check (`isJob`), for `launchChecked`: errors.ts imports no module of
 * kcoro's. `() => false` until job.ts, which imports this module, has loaded.
 */
let isKcoroJob: (x: unknown) => boolean = () => false;
/** @ignore Set by job.ts as it loads. */
export function _setJobBrand(check: (x: unknown) => boolean): void {
  isKcoroJob = check;
}

/**
 * `scope.launch(block)` for `op` (produce, actor) on a scope that may be the caller's own
 * CoroutineScope: what it returns must be a Job (a kcoro Job by its brand, reading none of its
 * members, which a caller may redefine on its prototype; another by its invokeOnCompletion and
 * cancel), else a TypeError; `cleanup` runs when it throws or returns anything else, given the
 * error `launchChecked` then throws (an actor's `onDone` gets it where its block never began).
 * `options` (`lazy` for an actor, a `context` given), where given, are `launch`'s second argument;
 * else it gets the block alone. `own` (kcoro's own scope: Coroutine's own launch, `launchOwn`),
 * where given, launches instead of the scope's `launch`, which a caller may have redefined on its
 * prototype.
 */
export function launchChecked<J>(
  op: string,
  scope: { launch(block: never): unknown },
  block: unknown,
  cleanup: (error: unknown) => void,
  options?: { lazy?: true; context?: unknown },
  own?: (block: unknown, options?: unknown) => unknown,
): J {
  let job: unknown;
  try {
    job = own !== undefined
      ? own(block, options)
      : options === undefined
      ? scope.launch(block as never)
      : (scope.launch as (block: never, options: unknown) => unknown)(block as never, options);
  } catch (e) {
    cleanup(e);
    throw e;
  }
  const j = job as { invokeOnCompletion?: unknown; cancel?: unknown } | null;
  const notJob = (cause?: unknown) =>
    new TypeError(
      `Cannot ${op}: scope.launch must return a Job, received ${describe(job)}`,
      cause === undefined ? undefined : { cause },
    );
  let isJob: boolean;
  try {
    // A kcoro Job by its brand: produce and actor watch and cancel it by JobSupport's own members
    // (`onJobCompletion`, `cancelJob`). Before, its `invokeOnCompletion` and `cancel` were read
    // through its prototype: a getter a caller redefined there threw out of produce() and actor(),
    // the channel released, and one that is no function refused kcoro's own launch's Job.
    isJob = isKcoroJob(j) ||
      typeof j === "object" && j !== null && typeof j.invokeOnCompletion === "function" &&
        typeof j.cancel === "function";
  } catch (e) {
    // Its reads threw: a revoked Proxy (named, the engine's error its cause) or a getter or trap
    // of the caller's (theirs, as it is). `cleanup` runs either way: before, it did not, and the
    // channel and the task the launch had started were left behind (a producer's or an actor's
    // block running on, its channel never released).
    const error = isRevoked(j as object) ? notJob(e) : e;
    cleanup(error);
    throw error;
  }
  if (!isJob) {
    const error = notJob();
    cleanup(error);
    throw error;
  }
  return job as J;
}

/** Throws "Cannot <op>: <name> must be a function" unless `fn` is one. */
export function checkFunction(op: string, name: string, fn: unknown): void {
  if (typeof fn !== "function") {
    throw new TypeError(`Cannot ${op}: ${name} must be a function, received ${describe(fn)}`);
  }
}

/** Smallest and largest coroutine stack sizes the native side accepts (0 means its default). */
export const MIN_STACK = 16 * 1024;
export const MAX_STACK = 256 * 1024 * 1024;

/**
 * Checks a `stackSize` option: 0 (the default) or an integer from MIN_STACK to MAX_STACK.
 * Internal. Throws a TypeError (not a number) or RangeError naming `op` and what was received.
 */
export function checkStackSize(op: string, stackSize: unknown): number {
  if (
    typeof stackSize !== "number" || !Number.isInteger(stackSize) ||
    (stackSize !== 0 && (stackSize < MIN_STACK || stackSize > MAX_STACK))
  ) {
    // Not a number ("64k"): a TypeError, as every option of the wrong type; else a RangeError.
    throw new (typeof stackSize === "number" ? RangeError : TypeError)(
      `Cannot ${op}: stackSize must be 0 or an integer from ${MIN_STACK} to ${MAX_STACK}, received ${
        describe(stackSize)
      }`,
    );
  }
  return stackSize + 0; // -0 as 0: FFI refuses a negative zero where it takes an integer
}

/**
 * The `KC_*` name of a native status code, e.g. `"KC_EBADH"`; `"KC_RESULT"` for a positive
 * integer (a successful call's result, as `kc_status_name` names it).
 */
export function statusName(status: number): string {
  // Only a number or a string is looked up and shown as it is: a symbol threw the engine's
  // "Cannot convert a Symbol value to a string", and an object ran its own toString (which may
  // throw) as the property key.
  if (typeof status !== "number" && typeof status !== "string") {
    return `KC_EUNKNOWN(${describe(status)})`;
  }
  if (Number.isInteger(status) && status > 0) return "KC_RESULT";
  return statusNames[status] ?? `KC_EUNKNOWN(${status})`;
}

/** An error reported by the native library: `status` is the code, `code` its `KC_*` name. */
export class KcoroError extends Error {
  /** The native status code (negative). */
  readonly status: number;
  /** The status code's name, e.g. `"KC_EBUSY"`. */
  readonly code: string;

  /**
   * An error for native status `status` (a negative `KC_*` code); the message is `message`
   * followed by the status name, e.g. `Cannot resume coroutine: ... (KC_EBUSY)`.
   */
  constructor(status: number, message: string, options?: ErrorOptions) {
    super(`${message} (${statusName(status)})`, options);
    this.name = "KcoroError";
    this.status = status;
    this.code = statusName(status);
  }
}

/** A handle that is stale, destroyed, forged, or names an object of another kind. */
export class InvalidHandleError extends KcoroError {
  /** Status `KC_EBADH`; `message` (`Cannot <op>: ...`) names the operation and the handle. */
  constructor(message: string) {
    super(Status.EBADH, message);
    this.name = "InvalidHandleError";
  }
}

/** The native library could not be found, built or opened. The message says what to do. */
export class LibraryNotFoundError extends Error {
  /**
   * `message` lists the places tried and what to do; `options.cause` is the error of a `dlopen`
   * that failed.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LibraryNotFoundError";
  }
}

/**
 * The library could not be opened or found because a Deno permission was not granted:
 * `--allow-ffi` (to open it; Deno's `NotCapable`), or `--allow-read` for the path it would be
 * read from. A {@linkcode LibraryNotFoundError}, so a check for that one catches it too. Named
 * apart from Deno's own `Deno.errors.PermissionDenied` and `Deno.errors.NotCapable` (what Deno
 * answered is the `cause`, and ends the message).
 */
export class LibraryPermissionError extends LibraryNotFoundError {
  /** The permission not granted, as Deno names it (`Deno.permissions.query({ name })`). */
  readonly permission: "ffi" | "read";

  /**
   * `message` says which flag to run with (`Cannot open the kcoro library: --allow-ffi is not
   * granted ...; run with --allow-ffi, received NotCapable: ...`); `options.cause` is Deno's
   * error, when there was one.
   */
  constructor(permission: "ffi" | "read", message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LibraryPermissionError";
    this.permission = permission;
  }
}

/**
 * `Library.close()` (or `closeLibrary()`) closed the library, but its close hooks kept
 * registering new ones (callbacks the close ran, an `onUndeliveredElement` that sends again
 * each time, say) for as many rounds as it runs: those of the last round did not run. Not a bad
 * argument, so not a plain RangeError as before; a subclass of one, so checks for that still
 * hold. The message names what kept registering.
 */
export class CloseHooksError extends RangeError {
  /** The rounds of hooks the close ran before it gave up (1,000). */
  readonly rounds: number;
  /** How many hooks the last round registered, which did not run. */
  readonly notRun: number;

  /**
   * `Cannot close the kcoro library cleanly: its close hooks kept registering new ones for
   * <rounds> rounds (...), received <what registered them>`.
   */
  constructor(rounds: number, notRun: number, names: string) {
    super(
      `Cannot close the kcoro library cleanly: its close hooks kept registering new ones for ` +
        `${rounds} rounds (it is closed; the ${notRun} registered in the last round did not ` +
        `run), received ${names}`,
    );
    this.name = "CloseHooksError";
    this.rounds = rounds;
    this.notRun = notRun;
  }
}

/** The native library's ABI version is not the one this module was written against. */
export class AbiMismatchError extends Error {
  /** ABI version the library reports. */
  readonly found: number;
  /** ABI version this module expects. */
  readonly expected: number;

  /**
   * The library at `path` reports ABI version `found`, this module expects `expected`; the
   * message says how to rebuild it or point `KCORO_LIB` at a matching build.
   */
  constructor(path: string, found: number, expected: number) {
    // The house form, "Cannot <op>: <reason>, received <x>" (it said "kcoro: ABI mismatch: ...").
    super(
      `Cannot open library: this module expects ABI version ${expected}; rebuild the library ` +
        `with \`./task build\` or point KCORO_LIB at a matching build, received ${path} with ` +
        `ABI version ${found}`,
    );
    this.name = "AbiMismatchError";
    this.found = found;
    this.expected = expected;
  }
}

/**
 * The library was closed before the call, or while the operation waited: a channel operation, a
 * select, a native scope's `wait()` (or a scope waiting for its native children), a runtime's
 * `drain()`. A runtime that is not running is a {@linkcode ShutdownError}.
 */
export class LibraryClosedError extends KcoroError {
  /** `Cannot <op>: the kcoro library is closed`, status `KC_ESHUTDOWN`. */
  constructor(op: string) {
    // `op` may come from a caller (`Library.symbols(op)`): a symbol or an object would make the
    // template throw the engine's conversion error instead of this one, and a string near V8's
    // longest the engine's RangeError ("Invalid string length"): over 4096 characters, its head.
    const what = typeof op === "string" ? cutShort(op, "name") : describe(op);
    super(Status.ESHUTDOWN, `Cannot ${what}: the kcoro library is closed`);
    this.name = "LibraryClosedError";
  }
}

/** The native runtime is not running: never started, or shut down. */
export class ShutdownError extends KcoroError {
  /**
   * `Cannot <op>: <reason>`, status `KC_ESHUTDOWN`; `reason` says why when it is more than the
   * runtime not running (a shutdown in progress, one that abandoned a scope's coroutines).
   */
  constructor(
    op: string,
    reason = "the kcoro runtime is not running (shut down or never started)",
  ) {
    super(Status.ESHUTDOWN, `Cannot ${op}: ${reason}`);
    this.name = "ShutdownError";
  }
}

/** Sending to a channel that is closed for send. */
export class ClosedSendError extends Error {
  /**
   * What a send to a channel closed without a cause rejects with (one closed with a cause
   * rejects with the cause itself).
   */
  constructor(message = "Channel was closed", options?: ErrorOptions) {
    super(message, options);
    this.name = "ClosedSendError";
  }
}

/** Receiving from a channel that is closed and drained. */
export class ClosedReceiveError extends Error {
  /**
   * What a receive from a channel closed without a cause and drained rejects with (one closed
   * with a cause rejects with the cause itself).
   */
  constructor(message = "Channel was closed", options?: ErrorOptions) {
    super(message, options);
    this.name = "ClosedReceiveError";
  }
}

/** A coroutine, job or operation was cancelled. Cancellation is not a failure. */
export class CancellationError extends Error {
  /**
   * A cancellation; `options.cause` holds the reason when it is not itself a CancellationError:
   * what `Job.cancel(cause)` wrapped, or the failure that cancelled a scope's tasks.
   */
  constructor(message = "Cancelled", options?: ErrorOptions) {
    super(message, options);
    this.name = "CancellationError";
  }
}

/** A timeout expired (a kind of cancellation). */
export class TimeoutError extends CancellationError {
  /** A timeout; kcoro's messages say what waited how long, e.g. `Timed out waiting for 50 ms`. */
  constructor(message = "Timed out", options?: ErrorOptions) {
    super(message, options);
    this.name = "TimeoutError";
  }
}

/**
 * An `invokeOnCompletion` handler threw. The handler's error is the `cause`, and the errors of the
 * job's handlers that threw after it are in its `suppressed` list (one report per completion, as
 * Kotlin's `notifyHandlers`); kcoro reports this error to the job's `CoroutineExceptionHandler`
 * (or `reportError`) instead of swallowing it (Kotlin's `CompletionHandlerException`).
 */
export class CompletionHandlerError extends Error {
  /**
   * `message` says whose handlers threw: the job's (`Exception in completion handler of
   * Job(cancelled)`), or a handler kcoro runs itself (`Exception in an actor's onDone`);
   * `options.cause` is what the first threw.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CompletionHandlerError";
  }
}

/**
 * The key of the brand every kcoro error class carries on its prototype: the class's name, a
 * non-enumerable, read-only property. `Symbol.for`, so that it is the same key in every copy of
 * this module in an isolate (one imported by another URL, or another version), where
 * `instanceof` sees unrelated classes: the codec carries another copy's CancellationError to
 * other isolates as one (`encodeCause`), and a job, scope or channel takes it for a
 * cancellation (`isCancellation`), not a failure. Internal.
 */
export const ERROR_BRAND: symbol = Symbol.for("kcoro.error");

/**
 * The kcoro class `e` is an instance of, by its brand (`ERROR_BRAND`), in any copy of this
 * module: `"CancellationError"`, `"TimeoutError"`, ...; undefined for anything else (an Error
 * of the caller's own, even one named so, or a value whose brand cannot be read). A subclass
 * of the caller's own has its kcoro base class's brand. Only an Error as the engine knows it
 * (`Error.isError`, as the codec asks: `isEngineError`) has one: before, `instanceof` took a
 * plain object made from the prototype (`Object.create(CancellationError.prototype)`) for a
 * cancellation here, while a close cause crossed to other isolates as the plain object it is
 * (a failure there), and a real Error given the prototype by `Object.setPrototypeOf` crosses as
 * the class, and is one here too. The brand is read as the codec reads it (`brandOf`), so that a
 * cause is a cancellation here exactly when it crosses to other isolates as one. Throws only the
 * engine's error (a stack overflow) for an `e` that is no Proxy; for a Proxy, nothing. Internal.
 */
export function errorKind(e: unknown): string | undefined {
  try {
    return isEngineError(e) ? brandOf(e as Error) : undefined;
  } catch (error) {
    // Only a Proxy `e` runs code of the caller's here (its traps: `instanceof`, `brandOf`'s
    // prototype read): a revoked one, or a trap that throws, is not ours. Anything else can throw
    // only the engine's error (a stack overflow, the read begun with the stack all but full),
    // thrown on so that the caller's overflow recovery runs: before, it answered undefined, and
    // a cancellation whose brand read overflowed was taken for a failure (`#failBody`). Also
    // where the engine has no `Error.isError`: `isEngineError`'s walk then runs no trap of a
    // Proxy among `e`'s prototypes (10f74e90 answered undefined there, for `instanceof` ran
    // them; with the walk, that only took such an overflow for a failure again).
    if (!isProxy(e)) throw error;
    return undefined;
  }
}

/** How many prototypes `brandOf` walks up an Error's chain (as the codec's `CAUSE_DEPTH`). */
const BRAND_DEPTH = 1_000;

/**
 * The brand (`ERROR_BRAND`) `e` reads, as `e[ERROR_BRAND]` finds it (the nearest own property
 * up its prototype chain, `e`'s own first) but by own data properties alone: a string there is
 * the class; anything else found first (another value, an accessor, whose getter is not run)
 * is none, as is a chain with a Proxy in it past `e` (its traps are not run) or longer than
 * `BRAND_DEPTH`. A Proxy `e` is asked for its prototype once (its trap answering), not for its
 * own properties. What `errorKind` (here: `isCancellation`) and the codec's class byte
 * (`classIndexOf`, other isolates) both read. Before, here read `e[ERROR_BRAND]` (running an
 * accessor, or a Proxy's `get` trap, up the chain) and the codec skipped past what was no
 * string brand (an accessor, a subclass's own brand of `undefined`) to its base class's, and
 * asked a Proxy in the chain for its descriptor: a cause that was no cancellation here crossed
 * as one, and the reverse. Throws what a Proxy `e`'s trap throws. Internal.
 */
export function brandOf(e: object): string | undefined {
  let p: object | null = isProxy(e) ? getPrototypeOf(e) : e;
  for (let depth = 0; p !== null && depth <= BRAND_DEPTH; depth++) {
    if (isProxy(p)) return undefined;
    const d = ownDescriptor(p, ERROR_BRAND);
    if (d !== undefined) return typeof d.value === "string" ? d.value : undefined;
    p = getPrototypeOf(p);
  }
  return undefined;
}

/**
 * `Object`'s reads as the module loaded (`brandOf`, `isEngineError`): a caller's replacement
 * (`Object.getPrototypeOf = ...`) never runs there, so that `errorKind` runs no code of the
 * caller's for an `e` that is no Proxy (it throws on what it throws there: the engine's alone).
 */
const getPrototypeOf = Object.getPrototypeOf;
const ownDescriptor = Object.getOwnPropertyDescriptor;
const ERROR_PROTO: object = Error.prototype;
const RANGE_ERROR_PROTO: object = RangeError.prototype;

/**
 * Whether `e` is an Error as the engine knows it (`Error.isError`: made by an Error constructor,
 * whatever its prototype now), as the codec decides what crosses as an Error (`isError` in
 * codec.ts); a Proxy by `instanceof`, its traps answering, as there (its stand-in crosses as the
 * prototype its trap gives). Where the engine has no `Error.isError`, whether `Error.prototype`
 * is up `e`'s chain, read as `instanceof` reads it but with no trap run: false at a Proxy met
 * first, as `brandOf` stops there. Before, that fallback asked `instanceof`, which ran the
 * `getPrototypeOf` trap of a Proxy up the chain of an `e` that is none, and `errorKind` threw
 * on the trap's error as if it were the engine's: the block that threw such an `e` never
 * ended, its scope running for good. Throws what a Proxy `e`'s trap throws.
 */
function isEngineError(e: unknown): boolean {
  if (isProxy(e)) return e instanceof Error;
  if (engineIsError !== undefined) return engineIsError(e);
  if ((typeof e !== "object" && typeof e !== "function") || e === null) return false;
  for (let p = getPrototypeOf(e); p !== null; p = getPrototypeOf(p)) {
    if (isProxy(p)) return false;
    if (p === ERROR_PROTO) return true;
  }
  return false;
}

/**
 * Whether `e` is the engine's RangeError (a stack overflow's: made by an Error constructor, its
 * prototype `RangeError.prototype` as the module loaded), reading no code of the caller's: what
 * kcoro's overflow recoveries retry (a job's handlers, `WALK_NOTIFY`; a body's end lost at its
 * call, `lostBodyEnds`). Anything else thrown there is no overflow: a retry would throw it again,
 * so it is reported once, never retried for ever. Internal.
 */
export function isEngineRangeError(e: unknown): boolean {
  return typeof e === "object" && e !== null && !isProxy(e) &&
    getPrototypeOf(e) === RANGE_ERROR_PROTO && isEngineError(e);
}
const engineIsError = (Error as { isError?: (v: unknown) => boolean }).isError;

/**
 * The kcoro class whose prototype `proto` is, by its own brand (`ERROR_BRAND`), in any copy of
 * this module; undefined for any other prototype (a subclass of the caller's own too, which
 * inherits the brand: `brandOf` walks the chain). Internal.
 */
export function ownErrorKind(proto: unknown): string | undefined {
  try {
    if (proto === null || typeof proto !== "object") return undefined;
    const d = Object.getOwnPropertyDescriptor(proto, ERROR_BRAND);
    return typeof d?.value === "string" ? d.value : undefined;
  } catch {
    return undefined; // a proxy's trap threw: not ours
  }
}

// Each class's name as a string, not `cls.name`, which a minifier may change.
for (
  const [cls, name] of [
    [KcoroError, "KcoroError"],
    [InvalidHandleError, "InvalidHandleError"],
    [LibraryNotFoundError, "LibraryNotFoundError"],
    [LibraryPermissionError, "LibraryPermissionError"],
    [AbiMismatchError, "AbiMismatchError"],
    [CloseHooksError, "CloseHooksError"],
    [LibraryClosedError, "LibraryClosedError"],
    [ShutdownError, "ShutdownError"],
    [ClosedSendError, "ClosedSendError"],
    [ClosedReceiveError, "ClosedReceiveError"],
    [CancellationError, "CancellationError"],
    [TimeoutError, "TimeoutError"],
    [CompletionHandlerError, "CompletionHandlerError"],
  ] as const
) Object.defineProperty(cls.prototype, ERROR_BRAND, { value: name });

/**
 * Turns a native status into a value or a named error. `op` names the operation for the
 * message ("resume coroutine", ...). Non-negative statuses are returned unchanged.
 */
export function unwrap(status: number, op: string): number {
  if (status >= 0) return status;
  switch (status) {
    case Status.EBADH:
      throw new InvalidHandleError(
        `Cannot ${op}: the handle is stale, destroyed or not a kcoro handle`,
      );
    case Status.ESHUTDOWN:
      throw new ShutdownError(op);
    case Status.EBUSY:
      throw new KcoroError(status, `Cannot ${op}: not allowed in the object's current state`);
    case Status.EINVAL:
      throw new KcoroError(status, `Cannot ${op}: invalid argument`);
    case Status.ENOMEM:
      throw new KcoroError(status, `Cannot ${op}: out of memory or handles`);
    default:
      throw new KcoroError(status, `Cannot ${op}`);
  }
}

/** The named error `unwrap(status, op)` throws for a negative `status`, as a value. */
export function statusError(status: number, op: string): unknown {
  try {
    unwrap(status, op);
  } catch (e) {
    return e;
  }
  return new KcoroError(status, `Cannot ${op}`); // not negative: not an error status
}

/**
 * A value a channel's codec cannot carry (a function or symbol in a structured-clone value,
 * a non-number for `codecs.f64`, ...): nothing was sent. Also what a receive throws for a value
 * its codec cannot read (sent with another codec, by C code with an unknown tag, or bytes that
 * are not the encoding their tag names), which is freed. `cause`, when set, holds the underlying
 * error (e.g. the structured clone's).
 */
export class CodecError extends TypeError {
  /** The codec's name, e.g. `"default"` or `"f64"`. */
  readonly codec: string;

  /**
   * An error of codec `codec`; `message` is `Cannot send: ...` (`Cannot trySendMany: ...` through
   * it) or `Cannot receive: ...`.
   */
  constructor(codec: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CodecError";
    this.codec = codec;
  }
}
Object.defineProperty(CodecError.prototype, ERROR_BRAND, { value: "CodecError" });

/**
 * kcoro's own classes whose objects live in their isolate (a channel's queues, a job's
 * children, a context's keys, which compare by identity): a structured clone of one is a plain
 * object of its own fields, without its methods or state. By prototype, with what to send
 * instead, for the codecs' CodecError (`refusedClass`).
 */
const notValues = new Map<object, readonly [string, string]>();

/**
 * The same, by the description of the symbol in each object's `_notCloneable` field: node:v8
 * refuses that symbol wherever it meets the object ("Symbol(<description>) could not be
 * cloned."), which names the class for `refusedByClone`.
 */
const notCloneables = new Map<string, readonly [string, string]>();

/**
 * @ignore Registers `cls` (by its prototype, and by `notCloneable`, the symbol its objects hold in
 * their `_notCloneable` field) as a class a codec refuses to copy: `what` names one with its
 * article ("a Channel"), `instead` says what to send.
 *
 * The field is a plain own one, writable: `x._notCloneable = 1` (or a delete) let
 * `structuredClone(x)` post a plain object. A Context, a context key, a codec, a Runtime, a
 * Library, a NativeScope, a NativeCoroutine and an actor are frozen by their constructors, their
 * state in private fields (which a freeze leaves writable). Jobs, channels and select builders
 * are not: a freeze costs ~30 ns an object (launch + join measured 92 -> 120 us per 1,000, a
 * local channel's create + dispose 135-152 -> 174-184 ns), a read-only `defineProperty` of the
 * field ~210 ns, a WeakMap subclass ~17 ns (its clone error names only the class, no advice), and
 * what costs nothing is not seen by structured cloning (a private field, a symbol key, a
 * non-enumerable field, the prototype). kcoro's own functions refuse such a copy by brand check.
 */
export function refuseAsValue(
  cls: { prototype: object },
  what: string,
  instead: string,
  notCloneable: symbol,
): void {
  notValues.set(cls.prototype, [what, instead]);
  refuseCloneOf(what, instead, notCloneable);
}

/**
 * @ignore `refuseAsValue` for objects without a class of their own (the built-in codecs, plain
 * frozen objects): only by the description of `notCloneable`, the symbol in their
 * `_notCloneable` field, which node:v8 fails on wherever it meets one (`refusedByClone`).
 */
export function refuseCloneOf(what: string, instead: string, notCloneable: symbol): void {
  if (notCloneable.description !== undefined) {
    notCloneables.set(notCloneable.description, [what, instead]);
  }
}

/**
 * @ignore What `refusedClass` would say of the kcoro object that made node:v8's copy fail with
 * `e` (the symbol of its `_notCloneable` field), wherever in the value it sat; undefined when
 * something else did.
 */
export function refusedByClone(e: unknown): readonly [string, string] | undefined {
  const m = e instanceof Error
    ? /^Symbol\(([\s\S]*)\) could not be cloned\.$/.exec(e.message)
    : null;
  return m === null ? undefined : notCloneables.get(m[1]);
}

/**
 * @ignore What `value` is and what to send instead, when it is an object of one of the classes
 * `refuseAsValue` registered (a subclass too); undefined otherwise.
 */
export function refusedClass(value: unknown): readonly [string, string] | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  try {
    for (let p = Object.getPrototypeOf(value); p !== null; p = Object.getPrototypeOf(p)) {
      const found = notValues.get(p);
      if (found !== undefined) return found;
    }
  } catch {
    // A Proxy whose getPrototypeOf throws: node:v8 will say what it says.
  }
  return undefined;
}

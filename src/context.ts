/**
 * The coroutine context: an immutable, persistent map from typed keys to values that every task
 * inherits from the scope that launched it (Kotlin's `CoroutineContext` elements, Go's
 * `context.WithValue`).
 *
 * A {@linkcode Context} never changes: {@linkcode Context.with} and {@linkcode Context.without}
 * return a new context and leave the old one as it was, so a context can be shared by any number
 * of tasks without copying or locking. Keys come from {@linkcode createContextKey} and compare by
 * identity, so two libraries that both name a key `"requestId"` never collide.
 *
 * This module is a leaf: it imports nothing but errors.ts.
 *
 * @module
 */
import {
  cutShort,
  describe,
  nameInstances,
  nameLookAlikes,
  refuseAsValue,
  type TimeoutError,
} from "./errors.ts";
import { customInspect, cutQuoted, inspectAs, notA } from "./inspect.ts";

declare const valueType: unique symbol;

/**
 * A key for values of type `V` in a {@linkcode Context}. Made by {@linkcode createContextKey};
 * keys compare by identity, never by name.
 */
export interface ContextKey<V> {
  /** The name given to {@linkcode createContextKey}, for messages and debugging only. */
  readonly name: string;
  /**
   * Phantom field carrying the value type; never present at run time. Its key is a type-only
   * symbol, so it is left out of the documentation.
   *
   * @ignore
   */
  readonly [valueType]?: V;
}

/** What a structured clone of a context key fails on (`Key._notCloneable`): its message. */
const KEY_NOT_CLONEABLE = Symbol(
  "Cannot clone a context key: keys compare by identity; send the value and set it under a key " +
    "of the Worker's own",
);

/** Set by Key's static block: `checkKey`'s test, by its private field. */
let isKey: (x: unknown) => x is Key<unknown>;
/** Set by Key's static block: a key's hash (`Entries`). */
let hashOf: (key: ContextKey<unknown>) => number;
/** How many keys were made (`Key`'s hash), mod 2**32. */
let keysMade = 0;

class Key<V> implements ContextKey<V> {
  declare readonly [valueType]?: V;
  /**
   * First of the fields structured cloning sees: a DataCloneError with its description as the
   * message. A key cloned as `{ name, check: null }` (kcoro's own failed on `check`, printing
   * its source).
   */
  readonly _notCloneable: symbol = KEY_NOT_CLONEABLE;
  /** kcoro's own keys: what a value must be, checked by `Context.with` ("must be ..."). */
  readonly check: ((value: unknown) => string | null) | null;
  /** A real key (see `[Symbol.toStringTag]`). */
  readonly #brand = true;
  /** Its hash in a context's trie (`Entries`): the count of keys made before it, mod 2**32. */
  readonly #hash: number = (keysMade = (keysMade + 1) >>> 0);
  constructor(readonly name: string, check: ((value: unknown) => string | null) | null = null) {
    this.check = check;
    Object.freeze(this);
  }
  /**
   * `ContextKey(user)`: its name, one over 4096 characters by its first 64 and its length
   * (`cutShort`), as error messages name one. A name of 2**28 characters printed whole (a string as
   * long; two such keys in a `Context.toString` past the engine's limit, its RangeError).
   */
  toString(): string {
    return `ContextKey(${cutShort(this.name, "name")})`;
  }
  /**
   * `ContextKey`, the name it prints with (`[customInspect]`): `Object.prototype.toString` says
   * `[object ContextKey]` (`String(x)` is its `toString()`, `ContextKey(user)`); error
   * messages name an argument of the wrong kind that is one "a ContextKey" (`describe`). Only on an
   * instance: an object made from the prototype (`Object.create`) stays `[object Object]`, so a
   * message does not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #brand in Object(this) ? "ContextKey" : undefined;
  }

  /** @ignore How `console.log` / `Deno.inspect` print a key: `ContextKey { name: "user" }`. */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#brand in Object(this))) return notA("ContextKey");
    // A name over 4096 characters cut short (`cutQuoted`), as `toString` prints it: Deno prints a
    // string of 10,000 characters at most, a hook called without Deno's inspect whole. Its first
    // 64 quoted, the ellipsis and length after the quote (before, inside it, as if the name's).
    return inspectAs("ContextKey", { name: cutQuoted(this.name, "name") }, inspect, options);
  }

  static {
    // `in` on a primitive throws (caught: no key), where a `typeof x === "object" && x !== null`
    // guard before it cost a Context.get about 15% in a micro-bench; this one matched the
    // `instanceof` it replaces.
    hashOf = (key) => (key as Key<unknown>).#hash; // every key in a context is one (`checkKey`)
    isKey = (x: unknown): x is Key<unknown> => {
      try {
        return #brand in (x as object);
      } catch {
        return false;
      }
    };
  }
}

/**
 * Makes a new context key; `name` is only for messages. Two calls with the same name make two
 * different keys.
 *
 * @example
 * ```ts
 * import { Context, createContextKey } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const user = createContextKey<string>("user");
 * const other = createContextKey<string>("user");
 * const ctx = Context.empty.with(user, "ada");
 * assert.equal(ctx.get(user), "ada");
 * assert.equal(ctx.get(other), undefined); // same name, different key
 * ```
 */
export function createContextKey<V>(name: string): ContextKey<V> {
  if (typeof name !== "string") {
    throw new TypeError(
      `Cannot create context key: name must be a string, received ${describe(name)}`,
    );
  }
  return new Key<V>(name);
}

/**
 * Refuses anything but a key `createContextKey` made, by its private field (as `isContext`), not
 * `instanceof`: that passed `Object.create(Key.prototype)` (a key with no name), and a Proxy whose
 * `getPrototypeOf` trap threw let the trap's error out. The brand check runs no trap and reads no
 * prototype chain: one lookup, as cheap as the `instanceof` it replaces (see `isKey`).
 */
function checkKey(op: string, key: unknown): asserts key is Key<unknown> {
  if (!isKey(key)) {
    throw new TypeError(
      `Cannot ${op}: key must come from createContextKey, received ${describe(key)}`,
    );
  }
}

/**
 * @ignore A scope a {@linkcode Timeout} ends: a withTimeout's own (a Coroutine of src/scope.ts;
 * this module imports nothing of it).
 */
export interface TimedScope {
  cancel(cause: unknown): void;
}

/**
 * @ignore A running `withTimeout`, as its contexts see it: `done` once its scope has finished.
 * Each withTimeout that runs its block has one of its own, also one nested in another's (whose
 * Deadline, error and `adopted` it copies): its scope's context carries its own record, so that
 * Deadline stays in force there for as long as it runs, also after the one it is nested in has
 * finished (a timeout or native scope given that context then still ends by it), and for as long
 * as that one runs, also after this one has finished (`under`).
 */
export interface Timeout {
  done: boolean;
  /**
   * The timeout it is nested in (whose Deadline it carries), or null: its own Deadline. Once this
   * one is done, its contexts' Deadline is that one's while that one runs (`inForce`). Set again
   * when that one finishes first while one it is nested in still runs: this one rejoins the
   * nearest such (the same Deadline), so that one's expiry ends it in its walk. Once this one is
   * done, `inForce` points it past the finished records it leads to (it then names the one in
   * force, or null), so a walk does not grow with every nested timeout finished since.
   */
  under: Timeout | null;
  /** Its Deadline (the `performance.now()` clock). */
  readonly at: number;
  /** What its scope is cancelled with at the Deadline, and so is each of `nested`. */
  readonly error: TimeoutError;
  /** Set as its Deadline is reached: a timeout given one of its contexts then fails at once. */
  fired: boolean;
  /** Its scope while it runs (set as it starts, null again once it has finished). */
  scope: TimedScope | null;
  /**
   * The running timeouts given one of its contexts whose own time ends later (Go's
   * `WithDeadline` under an earlier parent deadline is the parent's child, with no timer of its
   * own), in the order they came (one that rejoins comes then); null until the first comes (most
   * timeouts nest none). When its Deadline is reached its scope is cancelled with `error`, then
   * each of these, and in turn the ones nested in each, with or without its scope's signal; each
   * leaves the set as it finishes. If this one finishes first (not fired), each still running
   * joins the set of the nearest timeout it is nested in that still runs (`under`), or where none
   * does, gets a timer of its own for the rest of the time to `at`.
   */
  nested: Set<Timeout> | null;
  /**
   * True where the Deadline was set by hand and this timeout took it on as its own (it came
   * first), or is nested in one that did: once `done` it is in force again as hand-set, not
   * stale, since no timeout put it in.
   */
  adopted: boolean;
  /**
   * The context it was given, where its own time came before that one's Deadline in force (a
   * running withTimeout's, or one set by hand), which its own replaced in its scope's context;
   * else null (a nested one has that of the one it is nested in). Once this one is done (and the
   * ones it is nested in), its contexts' Deadline is that context's, in force as it is there:
   * before, they had none, so a timeout or native scope given one after this one had finished
   * escaped the Deadline of the withTimeout (or the hand-set one) around it. Once this one is
   * stale (done, and so are the ones it is nested in), a read of the Deadline points it at the
   * context where that walk ends (`sourceOf`), or null: one step from then on.
   */
  replaced: Context | null;
}

/**
 * @ignore The record that enforces `timeout`'s Deadline now: it while it runs, else the nearest
 * timeout still running that it is nested in (the same Deadline); null when all have finished.
 * Exported for src/time.ts (where a finished timeout's nested ones go).
 */
export function inForce(timeout: Timeout | null): Timeout | null {
  let t = timeout;
  while (t !== null && t.done) t = t.under;
  // Each finished record passed now points at the one found (path compression, as a
  // union-find's): the next read from any of them takes one step, where it walked every record
  // finished since, and the ones stepped over can be collected. The same answer for ever: a
  // record never runs again once done, and only a running one's `under` is set again (rejoin),
  // so every later walk from them passes through `t` (or ends at null, all of them done).
  for (let s = timeout; s !== t;) {
    const next: Timeout | null = s!.under;
    s!.under = t;
    s = next;
  }
  return t;
}

/** A key of any value type, as a context's entries hold it. */
type AnyKey = ContextKey<unknown>;

/**
 * A context's entries: a persistent map from keys to values, which `setEntry` and `deleteEntry`
 * leave as it was. Up to 16 entries (`SMALL`) a `Map`, copied whole by each change (a context's
 * handful of keys: a `get` is one hash lookup, a copy of a few entries cheap); past that a hash
 * array mapped trie (`Trie`, Bagwell's HAMT: 32 ways a level, by each key's `hashOf`), each change
 * copying the nodes on one path, of 32 slots each: O(log n) (a 9,000-key context's trie is 3
 * levels deep). A trie stays one as `without` shrinks it, also to 16 entries or fewer (`with` on
 * it copies a path, ~0.25 µs, where a `Map` copy of 8 entries took ~1 µs; a `get` walks it, ~20
 * ns, a `Map`'s ~13 ns). Before, each `with` and `without` copied a `Map` of every entry: ~1 ms
 * at 8,000 keys, seconds to build such a context one `with` at a time (bench/context_bench.ts).
 */
type Entries = ReadonlyMap<AnyKey, unknown> | Trie;

/** The most entries a `Map` holds (`Entries`); one more makes a `Trie`. */
const SMALL = 16;

/**
 * Entries and trie slots copied so far (`contextCopyWork`): what a test counts to tell a `with`
 * that copies one path from one that copies every entry, without timing it.
 */
let copyWork = 0;

/** `entries` with `key` set to `value` (`entries` unchanged). */
function setEntry(entries: Entries, key: AnyKey, value: unknown): Entries {
  if (entries instanceof Trie) return entries.set(key, value);
  if (entries.size >= SMALL && !entries.has(key)) {
    let trie = EMPTY_TRIE;
    for (const [k, v] of entries) trie = trie.set(k, v);
    return trie.set(key, value);
  }
  copyWork += entries.size;
  const copy = new Map(entries);
  copy.set(key, value);
  return copy;
}

/** `entries` without `key`'s entry (`entries` unchanged; itself where it has none). */
function deleteEntry(entries: Entries, key: AnyKey): Entries {
  if (entries instanceof Trie) return entries.delete(key);
  if (!entries.has(key)) return entries;
  copyWork += entries.size;
  const copy = new Map(entries);
  copy.delete(key);
  return copy;
}

/**
 * `parent`'s entries with `own`'s set on them (their values win), and `deadline`, if given, as
 * the Deadline's (`childContext`). Two Maps whose entries fit one are copied once, as before.
 */
function mergeEntries(parent: Entries, own: Entries, deadline: number | undefined): Entries {
  if (!(parent instanceof Trie) && !(own instanceof Trie) && parent.size + own.size < SMALL) {
    copyWork += parent.size + own.size;
    const copy = new Map(parent);
    for (const [k, v] of own) copy.set(k, v);
    if (deadline !== undefined) copy.set(Deadline, deadline);
    return copy;
  }
  let entries = parent;
  for (const [k, v] of listEntries(own)) entries = setEntry(entries, k, v);
  return deadline === undefined ? entries : setEntry(entries, Deadline, deadline);
}

/** The entries in the order their keys were first set (as a `Map` iterates). */
function listEntries(entries: Entries): [AnyKey, unknown][] {
  return entries instanceof Trie ? entries.list() : [...entries];
}

/**
 * A trie's node, of one shape (so that V8's reads of it stay monomorphic): a branch (its `slots`,
 * 32, one for each value of the 5 bits of a hash at its depth, `undefined` where none) or an
 * entry (`slots` null): its key, value, hash and `seq`, which orders the entries as their keys
 * were first set (`Trie.list`), and in `more` the other entries whose keys' hashes are equal to
 * its (only past 2**32 keys made: `hashOf` wraps), else null.
 */
class TrieNode {
  constructor(
    readonly slots: readonly (TrieNode | undefined)[] | null,
    readonly key: AnyKey | null,
    readonly hash: number,
    readonly value: unknown,
    readonly seq: number,
    readonly more: readonly TrieNode[] | null,
  ) {}
}

/** The entry node of `key` (its hash `hash`) under `node`, or undefined. */
function find(node: TrieNode, key: AnyKey, hash: number): TrieNode | undefined {
  for (let shift = 0; node.slots !== null; shift += 5) {
    const next: TrieNode | undefined = node.slots[(hash >>> shift) & 31];
    if (next === undefined) return undefined;
    node = next;
  }
  if (node.key === key) return node;
  return node.more === null ? undefined : node.more.find((m) => m.key === key);
}

/**
 * A branch's 32 slots, none taken: an array of `undefined`s without holes (a read of a holey
 * array's element checks the prototype chain for one), copied by each new branch.
 */
const NO_SLOTS: readonly (TrieNode | undefined)[] = Array.from({ length: 32 }, () => undefined);

/** A branch of the 32 `slots` (their array, copied by the caller, is not). */
const branch = (slots: (TrieNode | undefined)[]) =>
  new TrieNode(slots, null, 0, undefined, 0, null);

/** `node` with `entry` in it (in place of its key's entry if there is one): a copy of one path. */
function insert(node: TrieNode | undefined, entry: TrieNode, shift: number): TrieNode {
  if (node === undefined) return entry;
  if (node.slots !== null) {
    const i = (entry.hash >>> shift) & 31;
    copyWork += 32;
    const slots = node.slots.slice();
    slots[i] = insert(slots[i], entry, shift + 5);
    return branch(slots);
  }
  if (node.key === entry.key && node.more === null) return entry;
  if (node.hash === entry.hash) {
    // The same key, or every bit of the two hashes equal: one entry holds the others in `more`.
    const others = [alone(node), ...(node.more ?? [])].filter((m) => m.key !== entry.key);
    return withMore(entry, others);
  }
  // Two entries whose hashes differ from here down: a branch for them (more, where they agree).
  const slots = NO_SLOTS.slice();
  slots[(node.hash >>> shift) & 31] = node;
  return insert(branch(slots), entry, shift);
}

/** `entry` holding `more` (equal hashes), or alone where `more` is empty. */
function withMore(entry: TrieNode, more: readonly TrieNode[]): TrieNode {
  return new TrieNode(
    null,
    entry.key,
    entry.hash,
    entry.value,
    entry.seq,
    more.length ? more : null,
  );
}

/** `entry` without the entries it holds in `more`. */
function alone(entry: TrieNode): TrieNode {
  return entry.more === null ? entry : withMore(entry, []);
}

/** `node` without `key`'s entry (undefined: nothing left); `node` itself when it has none. */
function remove(node: TrieNode, key: AnyKey, hash: number, shift: number): TrieNode | undefined {
  if (node.slots !== null) {
    const i = (hash >>> shift) & 31;
    const under = node.slots[i];
    if (under === undefined) return node;
    const left = remove(under, key, hash, shift + 5);
    if (left === under) return node;
    copyWork += 32;
    const slots = node.slots.slice();
    slots[i] = left;
    return slots.every((x) => x === undefined) ? undefined : branch(slots);
  }
  // An entry, and the others of its hash.
  const all = [node, ...(node.more ?? [])];
  const rest = all.filter((m) => m.key !== key);
  if (rest.length === all.length) return node;
  return rest.length === 0 ? undefined : withMore(rest[0], rest.slice(1).map(alone));
}

/** Over `SMALL` entries: a hash array mapped trie (`Entries`). */
class Trie {
  constructor(
    readonly root: TrieNode,
    readonly size: number,
    /** The `seq` of the next key first set. */
    readonly next: number,
  ) {}
  get(key: AnyKey): unknown {
    // `find`, inlined: a context's `get` is a hot path.
    const hash = hashOf(key);
    let node = this.root;
    for (let shift = 0; node.slots !== null; shift += 5) {
      const next: TrieNode | undefined = node.slots[(hash >>> shift) & 31];
      if (next === undefined) return undefined;
      node = next;
    }
    if (node.key === key) return node.value;
    return node.more === null ? undefined : node.more.find((m) => m.key === key)?.value;
  }
  has(key: AnyKey): boolean {
    return find(this.root, key, hashOf(key)) !== undefined;
  }
  set(key: AnyKey, value: unknown): Trie {
    const hash = hashOf(key);
    const had = find(this.root, key, hash);
    const seq = had === undefined ? this.next : had.seq;
    const root = insert(this.root, new TrieNode(null, key, hash, value, seq, null), 0);
    return had === undefined
      ? new Trie(root, this.size + 1, this.next + 1)
      : new Trie(root, this.size, this.next);
  }
  delete(key: AnyKey): Entries {
    const root = remove(this.root, key, hashOf(key), 0);
    if (root === this.root) return this;
    if (root === undefined) return NO_ENTRIES; // (`without` answers Context.empty before)
    return new Trie(root, this.size - 1, this.next);
  }
  list(): [AnyKey, unknown][] {
    const entries: TrieNode[] = [];
    const walk = (node: TrieNode | undefined): void => {
      if (node === undefined) return;
      if (node.slots !== null) node.slots.forEach(walk);
      else entries.push(alone(node), ...(node.more ?? []));
    };
    walk(this.root);
    return entries.sort((a, b) => a.seq - b.seq).map((e) => [e.key!, e.value]);
  }
}

/** The empty entries (`Context.empty`'s). */
const NO_ENTRIES: Entries = new Map();
/** A trie with nothing in it, which `setEntry` fills with a full `Map`'s entries and one more. */
const EMPTY_TRIE: Trie = new Trie(branch(NO_SLOTS.slice()), 0, 0);

/** What a structured clone of a Context fails on (`Context._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a Context: its keys compare by identity; send the values it holds and rebuild it " +
    "in the Worker",
);

/** The key only this module holds (Context's constructor's guard). */
const MAKE: unique symbol = Symbol("kcoro.Context");

/** Set by Context's static block: `timedContext`'s body, which reads its private fields. */
let makeTimed: (context: Context, deadline: number, timeout: Timeout) => Context;
/** Set by Context's static block: `isContext`'s body. */
let brand: (x: unknown) => x is Context;
/** Set by Context's static block: `liveDeadline`'s body. */
let deadlineInForce: (context: Context) => number | undefined;
/** Set by Context's static block: `deadlineContext`'s body. */
let sourceOf: (context: Context) => Context | null;
/** Set by Context's static block: `runningTimeout`'s body. */
let running: (context: Context) => Timeout | null;
/** Set by Context's static block: `childContext`'s body. */
let makeChild: (parent: Context, own: Context) => Context;

/**
 * @ignore `context` with `deadline` as the Deadline of the running timeout `timeout`
 * (`withTimeout`'s scope context, src/time.ts). A function of this module that mod.ts does not
 * export, not a static of Context: as `Context._timed` it was reachable from any caller, and built
 * a Context with any value as its Deadline (past `with`'s check) and a timeout record of the
 * caller's own.
 */
export function timedContext(context: Context, deadline: number, timeout: Timeout): Context {
  return makeTimed(context, deadline, timeout);
}

/**
 * @ignore True if `x` is a Context this module made: by its private field, not `instanceof`,
 * which `Object.create(Context.prototype)` passes (its every read then threw the engine's
 * "Cannot read private member", inside a scope's machinery: a supervisorScope never settled).
 * Functions of this module that mod.ts does not export, as `timedContext`, not statics of Context
 * (`Context._is` and the others below were public to any caller, and threw the engine's error
 * given anything but a Context).
 */
export function isContext(x: unknown): x is Context {
  return brand(x);
}

/**
 * @ignore The Deadline in force: none when the withTimeout that put it in has finished (the
 * context outlived its scope), else the Deadline entry.
 */
export function liveDeadline(context: Context): number | undefined {
  return deadlineInForce(context);
}

/**
 * @ignore The context whose Deadline entry is the one in force in `context`: it, or the one its
 * finished timeout replaced (in turn), or null where that is stale. What a timeout that replaces
 * `context`'s Deadline with an earlier one of its own keeps (`Timeout.replaced`): the source, not
 * `context`, so that a loop of such timeouts, each given the last one's context, does not chain
 * every context it made (kept alive, and walked by each read).
 */
export function deadlineContext(context: Context): Context | null {
  return sourceOf(context);
}

/**
 * @ignore The running withTimeout whose Deadline is in force in `context` (it put it in, or
 * took on a hand-set one), or null: no Deadline, one set by hand, or one a finished timeout put
 * in (stale) or took on (hand-set again).
 */
export function runningTimeout(context: Context): Timeout | null {
  return running(context);
}

/**
 * @ignore The context of a child that was given `own` under a parent whose context is `parent`
 * (Kotlin's `parentContext + context`): the parent's entries, then `own`'s on top (its values
 * win per key), but the {@linkcode Deadline} in force is the earlier of the two live ones, so a
 * child never escapes its parent's timeout (a stale one, of a withTimeout already finished,
 * counts as none). Keeps whichever Deadline it chose with the timeout that put it in.
 */
export function childContext(parent: Context, own: Context): Context {
  return makeChild(parent, own);
}

/** How long `Context.toString`'s text grows before it counts the entries left (65,536). */
const PRINT_CHARS = 65_536;

/**
 * An immutable, persistent map from {@linkcode ContextKey}s to values. Start from
 * {@linkcode Context.empty}; `with` and `without` return new contexts and never change the one
 * they are called on. A scope's context is inherited by every task launched in it and is
 * readable from each task's own scope (`scope.context`).
 *
 * Up to 16 entries a `with`/`without` copies them (a `get` is one hash lookup); a larger context
 * (and one `without` shrinks from such) is a hash array mapped trie, which a `with`/`without`
 * copies one path of (O(log n): ~1 µs at 8,000 keys, where a copy of every entry took ~1 ms) and
 * a `get` walks (3 levels at 8,000 keys).
 *
 * @example
 * ```ts
 * import { Context, createContextKey } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const traceId = createContextKey<number>("traceId");
 * const a = Context.empty.with(traceId, 7);
 * const b = a.with(traceId, 8);
 * assert.equal(a.get(traceId), 7); // a is unchanged
 * assert.equal(b.get(traceId), 8);
 * assert.equal(b.without(traceId).has(traceId), false);
 * assert.equal(a.get(traceId), 7);
 * ```
 */
export class Context {
  /**
   * @ignore First (and only) field structured cloning sees: `postMessage` or `structuredClone`
   * of a Context (or of a job, whose `context` it is) throws a DataCloneError with this symbol's
   * description as its message. It cloned as `{}`.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  /** The context with no entries. */
  static readonly empty: Context = new Context(MAKE, NO_ENTRIES);

  readonly #entries: Entries;
  /**
   * The timeout whose `withTimeout` put this context's {@linkcode Deadline} in, or null (no
   * Deadline, or one set by hand). Kept through `with`/`without` of other keys, so a context
   * derived from a timed scope's still tells when that timeout is over (`liveDeadline`).
   */
  readonly #timeout: Timeout | null;

  private constructor(
    key: typeof MAKE,
    entries: Entries,
    timeout: Timeout | null = null,
  ) {
    // Made by this class only: a `new Context()` from JavaScript (the constructor is private to
    // the type checker only) made a context whose every read threw the engine's errors.
    if (key !== MAKE) {
      throw new TypeError(
        `Cannot construct Context: use Context.empty and its with(), received ${describe(key)}`,
      );
    }
    this.#entries = entries;
    this.#timeout = timeout;
    Object.freeze(this);
  }

  /**
   * The entries of `x`, the receiver of a method of this class (`this`), refused with the house
   * TypeError when it is no Context this module made: `Context.prototype.get.call({}, key)`, or
   * a method of `Object.create(Context.prototype)`, threw the engine's "Cannot read private
   * member #entries from an object whose class did not declare it". The field read's own brand
   * check is the test, its error caught: nothing is added to a Context's call (a `#entries in x`
   * check before the read was one more per call).
   */
  static #entriesOf(x: unknown, op: string): Entries {
    try {
      return (x as Context).#entries;
    } catch {
      throw new TypeError(`Cannot ${op}: this must be a Context, received ${describe(x)}`);
    }
  }

  // The bodies of this module's functions that read its private fields (`timedContext`,
  // `isContext`, `liveDeadline`, `runningTimeout`, `childContext`): inside the class for those
  // fields, not statics of it. As public statics (`Context._is`, `_liveDeadline`,
  // `_handSetDeadline`, `_child`; an @ignore hid them from the docs only) they were reachable from
  // any caller, and given anything but a Context threw the engine's "Cannot read private member".
  static {
    makeTimed = (context, deadline, timeout) => {
      return new Context(MAKE, setEntry(context.#entries, Deadline, deadline), timeout);
    };
    brand = (x: unknown): x is Context => typeof x === "object" && x !== null && #entries in x;
    sourceOf = (context) => {
      // Stale once the timeouts that enforce it have finished (then the one it replaced is in
      // force, where there was one); one a withTimeout took on from a hand-set Deadline stays in
      // force after it (it was hand-set). A `replaced` is a source itself when kept
      // (`deadlineContext`), so this takes one step per such timeout finished since, not one per
      // context the Deadline went through.
      let c: Context | null = context;
      for (;;) {
        const timeout: Timeout | null = c.#timeout;
        if (timeout === null || timeout.adopted || inForce(timeout) !== null) break;
        c = timeout.replaced;
        if (c === null) break;
      }
      // Each stale timeout passed now names where the walk ended (as `inForce` re-points the
      // finished records it passes): a chain of such timeouts, each nested in the last with an
      // earlier time of its own and finished innermost first, was walked in full by each read.
      // The same answer for ever: a stale timeout never runs again, so every later walk from one
      // passes through `c` (or ends at null).
      for (let d: Context | null = context; d !== c;) {
        const timeout: Timeout = d!.#timeout!;
        d = timeout.replaced;
        timeout.replaced = c;
      }
      return c;
    };
    deadlineInForce = (context) => {
      const c = sourceOf(context);
      return c === null ? undefined : c.#entries.get(Deadline) as number | undefined;
    };
    running = (context) => {
      const c = sourceOf(context);
      return c !== null && c.#entries.has(Deadline) ? inForce(c.#timeout) : null;
    };
    makeChild = (parent, own) => {
      if (own === parent || own.#entries.size === 0) return parent;
      if (parent.#entries.size === 0) return own;
      const p = deadlineInForce(parent), o = deadlineInForce(own);
      const parents = p !== undefined && !(o !== undefined && o < p);
      const entries = mergeEntries(parent.#entries, own.#entries, parents ? p : undefined);
      let timeout: Timeout | null;
      if (parents) timeout = parent.#timeout; // its Deadline: own's is later, stale or absent
      else if (own.#entries.has(Deadline)) timeout = own.#timeout; // own's, the earlier live one
      else timeout = parent.#timeout; // the parent's stale one, or none at all
      return new Context(MAKE, entries, timeout);
    };
  }

  /** A context with every entry of this one and `key` set to `value`; this one is unchanged. */
  with<V>(key: ContextKey<V>, value: V): Context {
    const own = Context.#entriesOf(this, "set context value");
    checkKey("set context value", key);
    const wrong = key.check?.(value);
    if (wrong) {
      // A Deadline of NaN is a number out of range: a RangeError, as delay's and withTimeout's
      // NaN (it was a TypeError, the error of a wrong type: "soon", null, 5n).
      const range = key === Deadline && typeof value === "number";
      throw new (range ? RangeError : TypeError)(
        `Cannot set context value: ${key.name} must be ${wrong}, received ${describe(value)}`,
      );
    }
    // A Deadline set by hand is nobody's timeout: it stays in force.
    const timeout = key === Deadline ? null : this.#timeout;
    if (own.has(key) && Object.is(own.get(key), value) && timeout === this.#timeout) return this;
    return new Context(MAKE, setEntry(own, key, value), timeout);
  }

  /** The value under `key`, or undefined when there is none. */
  get<V>(key: ContextKey<V>): V | undefined {
    const own = Context.#entriesOf(this, "get context value");
    checkKey("get context value", key);
    return own.get(key) as V | undefined;
  }

  /** Whether `key` has an entry (an entry may hold `undefined`). */
  has(key: ContextKey<unknown>): boolean {
    const own = Context.#entriesOf(this, "look up context key");
    checkKey("look up context key", key);
    return own.has(key);
  }

  /** A context with every entry of this one except `key`'s; this one is unchanged. */
  without(key: ContextKey<unknown>): Context {
    const own = Context.#entriesOf(this, "remove context value");
    checkKey("remove context value", key);
    if (!own.has(key)) return this;
    const entries = deleteEntry(own, key);
    const timeout = key === Deadline ? null : this.#timeout;
    return entries.size === 0 ? Context.empty : new Context(MAKE, entries, timeout);
  }

  /** How many entries this context holds. */
  get size(): number {
    return Context.#entriesOf(this, "read context size").size;
  }

  /** The keys with an entry, in the order they were first set. */
  keys(): ContextKey<unknown>[] {
    const entries = Context.#entriesOf(this, "list context keys");
    return entries instanceof Trie ? entries.list().map(([k]) => k) : [...entries.keys()];
  }

  /**
   * The entries for debugging, e.g. `Context(user="ada", deadline=1500.5)`: each key's name and
   * its value in short form (a string quoted, one over 4096 characters by its first 64 and its
   * length, as error messages name one: `describe`; an object by its tag only; a name as long
   * cut so too, `cutShort`). Entries past the first 65,536 characters are counted, not listed:
   * `Context(a=1, …, 9000 entries in all)`. Before, a name of 2**28 characters printed whole, and
   * two such keys (or enough long entries) went past the engine's string limit (its RangeError).
   */
  toString(): string {
    const entries = Context.#entriesOf(this, "print context");
    let text = "";
    let listed = 0;
    for (const [k, v] of listEntries(entries)) {
      if (text.length > PRINT_CHARS) break;
      text += `${listed === 0 ? "" : ", "}${cutShort(k.name, "name")}=${describe(v)}`;
      listed++;
    }
    if (listed < entries.size) text += `, …, ${entries.size} entries in all`;
    return `Context(${text})`;
  }

  /**
   * `Context`, the name it prints with (`[customInspect]`): `Object.prototype.toString` says
   * `[object Context]` (`String(x)` is its `toString()`, `Context(user="ada")`); error
   * messages name an argument of the wrong kind that is one "a Context" (`describe`). Only on an
   * instance: an object made from the prototype (`Object.create`) stays `[object Object]`, so a
   * message does not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #entries in Object(this) ? "Context" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a context: `Context { [[keys]]: ["user"] }`,
   * its keys' names (the values can be large; `get` reads them; `[[...]]`: no property of it,
   * `inspectAs`).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    // Inspection never throws: a receiver that is no Context (`Object.create(Context.prototype)`,
    // the method called on another object) prints as what it is not, where it threw the house
    // TypeError ("Cannot inspect context") out of `console.log`.
    if (!brand(this)) return notA("Context");
    // Each name over 4096 characters cut short (`cutQuoted`), as `toString` prints it.
    const keys = listEntries(this.#entries).map(([k]) => cutQuoted(k.name, "name"));
    return inspectAs("Context", { "[[keys]]": keys }, inspect, options);
  }
}

/**
 * The deadline `withTimeout` / `withTimeoutOrNull` put in their scope's context, on the
 * `performance.now()` clock (ms); the earliest of nested timeouts wins. While that withTimeout
 * runs, a timeout given its context (or one derived from it), even without its scope's signal,
 * ends by that Deadline too, with that withTimeout's TimeoutError (Go's context carries its
 * deadline alone). A context can outlive its scope: once the withTimeout that put a Deadline in
 * has finished, a later timeout or native scope given that context (or one derived from it)
 * ignores its Deadline, and keeps the one in force in the context that withTimeout was given
 * (later than its own), if any. A timeout nested so carries the Deadline in its own scope's
 * context for as long as it runs, and as long as the one it is nested in runs, also when the
 * other has finished.
 *
 * One set by hand (`context.with(Deadline, performance.now() + 30)`) stays in force, and is
 * enforced by what reads it: a `withTimeout` / `withTimeoutOrNull` given that context (or one
 * derived from it, a task's) whose own timeout ends later times out at that Deadline instead,
 * with its own TimeoutError (or null), and at once without running its block if the Deadline has
 * passed, as Go's `context.WithTimeout` keeps a parent's earlier deadline; once that timeout has
 * finished it is in force again, hand-set, in the contexts of its scope. A `coroutineScope`,
 * `launch` or `delay` arms no timer for it: a scope given it is not cancelled by it, and only
 * reads it (its tasks through `scope.context`).
 *
 * A native scope owned by a scope (`nativeScope`) gives the Deadline in force, timed or hand-set,
 * to its native children (`kc_scope_set_deadline`), whose channel waits then end by it
 * (`KC_ETIME`) and which read it with `kc_deadline`.
 *
 * @example
 * ```ts
 * import { Deadline, withTimeout } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const left = await withTimeout(
 *   1_000,
 *   async (scope) => scope.context.get(Deadline)! - performance.now(),
 * );
 * assert.ok(left > 0 && left <= 1_000);
 * ```
 */
export const Deadline: ContextKey<number> = new Key<number>(
  "deadline",
  (v) => typeof v === "number" && !Number.isNaN(v) ? null : "a number (performance.now() ms)",
);

/**
 * @ignore For tests: the keys made from now on are hashed as if `n` keys had been made (mod
 * 2**32), so that a test can make keys whose hashes equal earlier keys' (`Entries`' `more`).
 */
export function keyHashesFrom(n: number): void {
  keysMade = n >>> 0;
}

/**
 * @ignore For tests: how many entries (of a `Map`) and trie slots contexts have copied so far, a
 * count of work that tells a copy of one path from a copy of every entry without a clock.
 */
export function contextCopyWork(): number {
  return copyWork;
}

/** @ignore A context key of kcoro's own, whose values `Context.with` checks. */
export function checkedContextKey<V>(
  name: string,
  check: (value: unknown) => string | null,
): ContextKey<V> {
  return new Key<V>(name, check);
}

refuseAsValue(
  Context,
  "a Context",
  "its keys compare by identity: send the values it holds",
  NOT_CLONEABLE,
);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(Context.prototype, "Context");
// A key by its brand, as "a ContextKey" (`describe`; its tag getter runs no code of the caller's).
const keyTag = Object.getOwnPropertyDescriptor(Key.prototype, Symbol.toStringTag)!.get!;
nameInstances("ContextKey", (x) => keyTag.call(x) === "ContextKey" ? "a ContextKey" : undefined);

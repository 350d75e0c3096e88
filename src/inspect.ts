/**
 * How kcoro's objects print in `console.log` and `Deno.inspect`: each public class has a
 * `[Symbol.for("Deno.customInspect")]` method on its prototype that prints its class name and a
 * few facts read from JavaScript state (or a native read that returns a status, never one that
 * throws), so a disposed channel or a closed library prints too. The `_notCloneable` field that
 * makes structured cloning fail with advice stays an own enumerable field; it is only not shown.
 *
 * Deno calls the method as `obj[customInspect](inspect, options)`: `inspect` is Deno.inspect,
 * `options` the call's options (colors, depth, ...), which we pass on so that the facts print in
 * the caller's style. A method only, on the prototype: nothing on any other path.
 * @module
 */

import {
  isAnyArrayBuffer,
  isArgumentsObject,
  isAsyncFunction,
  isBigIntObject,
  isBoxedPrimitive,
  isDataView,
  isDate,
  isGeneratorFunction,
  isGeneratorObject,
  isMap,
  isMapIterator,
  isModuleNamespaceObject,
  isNativeError,
  isPromise,
  isProxy,
  isRegExp,
  isSet,
  isSetIterator,
  isTypedArray,
  isWeakMap,
  isWeakSet,
} from "node:util/types";
import { cutShort, describe, headOf, isRevoked } from "./errors.ts";

/**
 * The built-ins the walk (`printable`, `stringOf`) and the hand print call, as this module loaded:
 * a caller's later replacement of one (`globalThis.Map = class ...`, `Object.defineProperty =
 * ...`, a patched Map iterator's `next`) never runs, as no code of the caller's may run in a print.
 * Before, `new Map()`, `new Error()` and the statics were read from the globals at each call.
 */
const NativeArray = Array;
const NativeError = Error;
const NativeMap = Map;
const NativeSet = Set;
const toText = String;
const jsonStringify = JSON.stringify;
const isArray = Array.isArray;
const ownKeys = Reflect.ownKeys;
const descriptorOf = Reflect.getOwnPropertyDescriptor;
const getPrototypeOf = Object.getPrototypeOf;
const setPrototypeOf = Object.setPrototypeOf;
/**
 * `o`'s own property `k`'s descriptor, with no prototype: the engine's has Object.prototype's,
 * so that `"value" in d` and `d.value` read a key put there (`Object.prototype.value`, a getter
 * of the caller's: it ran, and an accessor printed as its text), and `defineProperty(copy, k,
 * d)` read a missing `get` or `value` there (a polluted one threw: the fact printed by hand).
 */
function ownDescriptor(o: object, k: PropertyKey): PropertyDescriptor | undefined {
  const d = descriptorOf(o, k);
  if (d !== undefined) setPrototypeOf(d, null);
  return d;
}
const defineProperty = Object.defineProperty;
const deleteProperty = Reflect.deleteProperty;
/** `f` as a plain function of its receiver and arguments: no `call` is looked up when it runs. */
// deno-lint-ignore no-explicit-any
const uncurry = <F extends (this: any, ...a: any[]) => any>(f: F) =>
  Function.prototype.call.bind(f) as (
    self: ThisParameterType<F>,
    ...a: Parameters<F>
  ) => ReturnType<F>;
const objectTag = uncurry(Object.prototype.toString);
const sourceOf = uncurry(Function.prototype.toString) as (f: unknown) => string;
const mapGet = uncurry(Map.prototype.get);
const mapSet = uncurry(Map.prototype.set);
const setHas = uncurry(Set.prototype.has);
const setAdd = uncurry(Set.prototype.add);
const mapEntries = uncurry(Map.prototype.entries);
const setEntries = uncurry(Set.prototype.entries);
const mapIteratorNext = uncurry(getPrototypeOf(new Map().entries()).next) as (
  it: unknown,
) => IteratorResult<[unknown, unknown]>;
const setIteratorNext = uncurry(getPrototypeOf(new Set().entries()).next) as typeof mapIteratorNext;
const sizeOfMap = uncurry(ownDescriptor(Map.prototype, "size")!.get!) as (m: unknown) => number;
const sizeOfSet = uncurry(ownDescriptor(Set.prototype, "size")!.get!) as (m: unknown) => number;
/**
 * String's, RegExp's and Array's prototype methods a print calls, as the module loaded, and
 * `Object.entries`: a caller's `String.prototype.slice = ...`, `RegExp.prototype.exec = ...` (which
 * `test` calls) or `Array.prototype.push = ...` never runs in a print, nor an array iterator's
 * (no destructuring of arrays here: it iterates). Before, each ran, as did `JSON.stringify`'s.
 */
const slice = uncurry(String.prototype.slice);
const indexOf = uncurry(String.prototype.indexOf);
const regexpExec = uncurry(RegExp.prototype.exec) as (r: RegExp, s: string) => unknown;
const join = uncurry(Array.prototype.join) as (a: readonly string[], by: string) => string;
const objectEntries = Object.entries;

/** The symbol Deno's console and `Deno.inspect` look for (a registered symbol, any realm's). */
export const customInspect: unique symbol = Symbol.for("Deno.customInspect");

/**
 * `name { ...facts }` in Deno's style: `inspect` and `options` are what Deno passed to the custom
 * inspect method, each fact's value printed with them (without an `inspect` function, a caller of
 * its own, by Deno's `Deno.inspect` with its default options: `showPlain`). A fact's key is a
 * property of the object printed, with the value that
 * property reads (`isRunning: true`, `codec: Codec { name: "default" }`), so that what a user reads
 * is what a user can write; a fact no property gives is keyed `[[name]]`, the notation of the
 * spec's internal slots (`[[capacity]]: 4`), which no property read can name. Before, a Runtime
 * printed `running: true` (its property is `isRunning`; `rt.running` is undefined) and a Channel
 * `closed: false, native: false`, neither of them a property of it.
 */
export function inspectAs(
  name: string,
  facts: Record<string, unknown>,
  inspect: unknown,
  options: unknown,
): string {
  const show = typeof inspect === "function"
    ? (v: unknown) => showWith(inspect as (v: unknown, o: unknown) => unknown, v, options)
    : showPlain;
  const entries = objectEntries(facts);
  const parts: string[] = new NativeArray(entries.length);
  for (let i = 0; i < entries.length; i++) {
    putAt(parts, i, `${entries[i][0]}: ${show(entries[i][1])}`);
  }
  return parts.length === 0 ? `${name} {}` : `${name} { ${join(parts, ", ")} }`;
}

/**
 * What Deno's inspect prints in place of a value whose printing threw below its top (a getter, a
 * Proxy trap or a `[Deno.customInspect]` of the caller's inside it, a revoked Proxy inside it),
 * followed by the error's stack: file paths and lines of the caller's code and Deno's.
 */
const FORMAT_ERROR = "[Internal Formatting Error]";

/**
 * A fact's value printed by the `inspect` Deno passed the hook, with its `options`; where that
 * throws (the value itself a revoked Proxy, or one whose `[Deno.customInspect]` throws) or prints
 * Deno's `[Internal Formatting Error]` and a stack (such a value inside it), by hand
 * (`showByHand`), cut as the plain path cuts (`cutPrint`). Before, the throw left the hook, and
 * Deno printed the whole kcoro object as `[Internal Formatting Error]` and the stack, or the
 * fact's text held that stack, its file paths too. A bigint past 4094 digits by its size
 * (`boundedBigint`), also one nested in the value, and an Error without its stack (`printable`);
 * a value too big to check by hand.
 */
function showWith(inspect: (v: unknown, o: unknown) => unknown, v: unknown, options: unknown) {
  const big = boundedBigint(v);
  if (big !== undefined) return big;
  try {
    const text = toText(inspect(printable(v, options), options));
    if (!formatErrorIn(text)) return text;
  } catch {
    // the value's own printing threw (its stack is not shown), or it is too big to check
    // (`printable`): by hand below
  }
  return cutByHand(v);
}

/**
 * `[a bigint of 16610 bits]` for a bigint of more than 4094 digits (`describe`'s bound, as an
 * error message names one), else undefined (Deno prints it). Printed whole, its decimal text took
 * more than linear time (minutes for the engine's largest, the thread held for a print), and was
 * as long as its digits in `console.log` (`Actor { [[state]]: 1000…0n }`, 1,000,000 digits).
 */
function boundedBigint(v: unknown): string | undefined {
  // A BigInt wrapper (`Object(10n ** 10_000_000n)`) too, as Deno names one (`[BigInt: 12n]`):
  // `[BigInt: a bigint of 16610 bits]`. Before, Deno printed its whole decimal text (~0.7 s and
  // 1.2 million characters for one of 2**22 bits), as `String(actor)` converted it (`toString`).
  const big = typeof v === "bigint" ? v : wrappedBigint(v);
  if (big === undefined) return undefined;
  const said = describe(big); // `123n`, or `a bigint of 16610 bits` (`a negative bigint of ...`)
  if (slice(said, -5) !== " bits") return undefined;
  return typeof v === "bigint" ? `[${said}]` : `[BigInt: ${said}]`;
}

/**
 * What a bigint or a BigInt wrapper past 4094 digits prints as, by its size (`boundedBigint`), and
 * its text in `String` (`a bigint of 16610 bits`); undefined for anything else.
 */
function hugeBigint(v: unknown): Printed | undefined {
  // A BigInt wrapper by the engine's own check, not `wrappedBigint`'s throw for each object.
  if (typeof v !== "bigint" && (typeof v !== "object" || v === null || !isBigIntObject(v))) {
    return undefined;
  }
  const print = boundedBigint(v);
  if (print === undefined) return undefined;
  return new Printed(print, describe(typeof v === "bigint" ? v : wrappedBigint(v)));
}

/**
 * A value that prints as its `print` (`[a bigint of 16610 bits]`), and converts to its `text` in
 * `String` and `Array.prototype.join` (`printable`'s stand-in for what Deno would print whole).
 */
class Printed {
  constructor(
    readonly print: string | ((inspect: unknown, options: unknown) => string),
    readonly text: string,
  ) {}
  [customInspect](inspect: unknown, options: unknown): string {
    return typeof this.print === "string" ? this.print : this.print(inspect, options);
  }
  toString(): string {
    return this.text;
  }
  toJSON(): string {
    return this.text;
  }
}

/**
 * `String(v)`, an array's bigints and BigInt wrappers past 4094 digits (nested arrays' too, as
 * `Array.prototype.join` converts each) by their size, `a bigint of 16610 bits`: `String([big])`
 * converted it whole (~0.2 s for 2**22 bits), only to be cut. Those among its first 10,000 values
 * in `join`'s order (JOIN_LOOKS, read by their own data properties: no getter runs); past them
 * (an array state of 20,000 numbers) as `String` converts them, as before: no scan may cost more
 * than the conversion, which reads each element anyway. Nothing else is replaced: an Error in it
 * converts by its own `toString`. Before, `printable`'s walk, which copied each Error (a
 * `toString` that reads a private field threw on the copy: `Actor`) and gave up past 10,000
 * values (`Actor` for an array state of 10,001 numbers, where `String` printed its head).
 */
export function stringOf(v: unknown): string {
  if (!isArray(v) || !joinsHuge(v, new NativeSet(), { left: JOIN_LOOKS })) return toText(v);
  return toText(joinable(v, new NativeMap(), { left: JOIN_COPIES }));
}

/** The most values `joinsHuge` looks at: past them, `String` as it is. */
const JOIN_LOOKS = 10_000;

/** The most values `joinable` copies (about 0.1 s): past them, TOO_BIG (`Actor`). */
const JOIN_COPIES = 100_000;

/**
 * Whether the array `a` or an array it holds (not a Proxy: no trap runs) holds a bigint or a
 * BigInt wrapper past 4094 digits among the first `look.left` values in `join`'s order.
 */
function joinsHuge(a: unknown[], seen: Set<object>, look: { left: number }): boolean {
  if (isProxy(a) || setHas(seen, a)) return false;
  setAdd(seen, a);
  for (let i = 0; i < a.length; i++) {
    if (--look.left < 0) return false;
    const d = ownDescriptor(a, i);
    if (d === undefined || !("value" in d)) continue;
    const x: unknown = d.value;
    if (hugeBigint(x) !== undefined || isArray(x) && joinsHuge(x, seen, look)) return true;
  }
  return false;
}

/** The own properties besides elements that `String` of an array may call (kept on a copy). */
const JOIN_CALLS: readonly PropertyKey[] = ["join", "toString", "valueOf", Symbol.toPrimitive];

/**
 * A copy of the array `a` (its prototype, its elements and JOIN_CALLS, getters copied, not run)
 * with its huge bigints and wrappers replaced (`Printed`: `a bigint of 16610 bits`), each array it
 * holds copied too, once (`made`: a cycle converts as `join` converts the original's); more than
 * `copies.left` elements in all throw TOO_BIG.
 */
function joinable(a: unknown[], made: Map<object, unknown[]>, copies: { left: number }): unknown[] {
  const done = mapGet(made, a);
  if (done !== undefined) return done;
  const copy = new NativeArray(a.length);
  setPrototypeOf(copy, getPrototypeOf(a));
  mapSet(made, a, copy);
  const own = (k: PropertyKey) => {
    const d = ownDescriptor(a, k);
    if (d === undefined) return;
    if ("value" in d) {
      const x: unknown = d.value;
      d.value = hugeBigint(x) ??
        (isArray(x) && !isProxy(x) ? joinable(x, made, copies) : x);
    }
    defineProperty(copy, k, d);
  };
  for (let i = 0; i < a.length; i++) {
    if (--copies.left < 0) throw TOO_BIG;
    own(i);
  }
  for (let i = 0; i < JOIN_CALLS.length; i++) own(JOIN_CALLS[i]);
  return copy;
}

/**
 * A fact's value printed by the caller's name cut short: `s` itself up to 4096 characters, else a
 * value that prints as its first 64 quoted as a string (Deno's inspect, as it prints `s`), an
 * ellipsis after the closing quote and its length, `"xxxx"… (a name of 5000 characters)`, and
 * converts to `xxxx… (a name of 5000 characters)` (`cutShort`). Before, the cut string itself:
 * `"xxxx… (a name of 5000 characters)"`, the ellipsis and length read as the name's own.
 */
export function cutQuoted(s: string, what: string): unknown {
  const cut = cutShort(s, what);
  if (cut === s) return s;
  const head = headOf(s);
  const rest = slice(cut, head.length);
  return new Printed((inspect, options) => {
    const quoted = typeof inspect === "function"
      ? toText((inspect as (v: unknown, o: unknown) => unknown)(head, options))
      : denoInspect?.(head) ?? jsonStringify(head);
    return quoted + rest;
  }, cut);
}

/**
 * The most elements and entries `printable` copies in one fact beyond those Deno prints (an
 * array's, a Map's or a Set's past its first `iterableLimit`, which a copy holds for its length
 * and size). What it looks at and copies otherwise is what Deno prints, each object once: no more
 * than Deno's own print of the value costs. Before, 10,000 values checked in all, whether or not
 * the fact held anything to replace: a 100 by 100 array, or an object of 10,001 properties,
 * printed by hand, as JSON, where Deno printed it.
 */
const EXTRA_COPIES = 10_000;

/** What `printable` throws past EXTRA_COPIES: the fact is printed by hand (`cutByHand`). */
const TOO_BIG = Object.freeze({ tooBig: true });

/**
 * The hooks Deno's inspect calls besides `Deno.customInspect`: Node's, and the one Deno's own
 * classes print by (`CustomEvent`, `TextDecoder`, `MessageChannel`...), which reads their private
 * fields: on a copy (`copied`) it threw, and the whole fact printed by hand, as JSON (`[{},{}]`).
 */
const nodeHook = Symbol.for("nodejs.util.inspect.custom");
const denoHook = Symbol.for("Deno.privateCustomInspect");

/**
 * Whether `o` or its prototype chain is a Proxy or has an inspect hook of its own (`kindOf`): the
 * chain read object by object first (`getPrototypeOf` runs no trap of a non-Proxy), as `in`
 * ran a Proxy prototype's `has` trap, the caller's code, for each object the walk met.
 */
function hooked(o: object): boolean {
  return proxied(o) || hookOf(o, customInspect) || hookOf(o, nodeHook) || hookOf(o, denoHook);
}

/** Whether `o` or an object up its prototype chain is a Proxy (no trap runs: the first stops). */
function proxied(o: object): boolean {
  for (let p: object | null = o; p !== null; p = getPrototypeOf(p)) {
    if (isProxy(p)) return true;
  }
  return false;
}

/**
 * Where `o`'s chain (no Proxy in it: `hooked`) has a hook under `key` that Deno's inspect calls,
 * the object whose own property it is; else undefined. A hook is what Deno calls: the first
 * `key` up the chain holding a function (or an accessor, whose value only its code tells).
 * Before, any `key` was (`key in o`), one holding `1` or `undefined` too: such an object, which
 * Deno prints as any other, was not looked into, and an Error in it printed its stack.
 */
function hookHolder(o: object, key: symbol): object | undefined {
  // No such key up the chain (most objects): `in` runs no trap where there is no Proxy, and is
  // twice as fast as an own look at each object.
  if (!(key in o)) return undefined;
  for (let p: object | null = o; p !== null; p = getPrototypeOf(p)) {
    const d = ownDescriptor(p, key);
    if (d === undefined) continue;
    return !("value" in d) || typeof d.value === "function" ? p : undefined;
  }
  return undefined;
}

/** Whether `o`'s chain (no Proxy in it) has a hook under `key` (`hookHolder`). */
function hookOf(o: object, key: symbol): boolean {
  return hookHolder(o, key) !== undefined;
}

/** DOMException.prototype as the module loaded (undefined where there is none). */
const DOM_PROTO: object | undefined = (globalThis as { DOMException?: { prototype: object } })
  .DOMException?.prototype;

/** DOMException.prototype's own getters, as the module loaded (none where there is none). */
const domGetters = (() => {
  const get = (k: string) => {
    const g = DOM_PROTO === undefined ? undefined : ownDescriptor(DOM_PROTO, k)?.get;
    return g === undefined ? undefined : uncurry(g as (this: object) => unknown);
  };
  const [message, name, code] = [get("message"), get("name"), get("code")];
  return message && name && code ? { message, name, code } : undefined;
})();

/**
 * Whether `o` (no Proxy in its chain: `hooked`) prints by Deno's own DOMException hook: its chain
 * holds DOMException.prototype's, and no hook of the caller's before it (a `Deno.customInspect`
 * or Node's, which Deno calls first). A real DOMException (an abort's reason, a subclass's) or
 * one only made from its prototype (`Object.create(DOMException.prototype)`).
 */
function domHooked(o: object): boolean {
  return DOM_PROTO !== undefined && domGetters !== undefined &&
    hookHolder(o, denoHook) === DOM_PROTO && !hookOf(o, customInspect) && !hookOf(o, nodeHook);
}

/** Whether `o` is a real DOMException (DOMException's own getter, its brand check, passes). */
function domBranded(o: object): boolean {
  try {
    domGetters!.name(o);
    return true;
  } catch {
    return false;
  }
}

/**
 * The prototype of a stand-in that Deno prints as `Name { ... }`: a class's of that name (as the
 * module loaded for `DOMException`, made for another: a subclass's, printed by its own name).
 */
function shapeOf(name: string): object {
  if (name === "DOMException") return DOM_SHAPE;
  const shape = class {};
  defineProperty(shape, "name", { __proto__: null, value: name } as PropertyDescriptor);
  return shape.prototype;
}

/** The prototype of a DOMException's stand-in: Deno prints what has it `DOMException { ... }`. */
const DOM_SHAPE: object = (() => {
  class DOMException {}
  return DOMException.prototype;
})();

/**
 * The class name Deno prints a DOMException `o` by (a subclass's own, `Sub { ... }`), read
 * without running the caller's code (`constructorName`: own data properties only).
 */
function domName(o: object): string {
  try {
    return constructorName(o) ?? "DOMException";
  } catch {
    return "DOMException";
  }
}

/**
 * For a real DOMException `o` (`domHooked`, `domBranded`), which Deno prints by its own hook
 * with its stack, file paths and lines (an abort's reason: `AbortSignal.abort().reason`): a
 * stand-in that Deno prints as that hook prints one without a stack, `DOMException { message:
 * "m", name: "AbortError", code: 20 }` (a subclass's by its class's name, `Sub { ... }`, as
 * Deno's does), read by DOMException.prototype's own getters (Deno's, as the module loaded).
 */
function domStandIn(o: object): object {
  const copy = {};
  setPrototypeOf(copy, shapeOf(domName(o)));
  defineProperty(copy, "message", field(domGetters!.message(o)));
  defineProperty(copy, "name", field(domGetters!.name(o)));
  defineProperty(copy, "code", field(domGetters!.code(o)));
  return copy;
}

/** A read-only enumerable data property's descriptor holding `value`, with no prototype. */
function field(value: unknown): PropertyDescriptor {
  return { __proto__: null, value, enumerable: true } as PropertyDescriptor;
}

/**
 * How far `printable` looks: Deno's `depth` and `iterableLimit`, and the copies left
 * (EXTRA_COPIES).
 */
interface Walk {
  readonly depth: number;
  readonly limit: number;
  left: number;
  /** The indexes past the first `limit` that `namedKeys` may still list (NAMED_LISTS). */
  listed: number;
  /**
   * Deno's `showHidden`: an object's own properties that are not enumerable are printed too (in
   * brackets, `[e]: ...`), so they are looked into as the enumerable ones are. Before, they were
   * not: an Error there printed its stack, file paths and lines.
   */
  readonly hidden: boolean;
}

/**
 * `v` as a fact prints it, or, where it holds what Deno's inspect prints at a cost or with file
 * paths, a copy of it with that replaced: a bigint or a BigInt wrapper past 4094 digits by its
 * size (`[a bigint of 16610 bits]`: its decimal text took ~0.2 s and 1.2 million characters for
 * one of 2**22 bits, inside `{ a: big }` too), and an Error (a native one) without its stack:
 * `[Error: boom] { [cause]: [TypeError: inner] }`, as Deno prints one that has none, its name,
 * message, cause and own properties (before, `Error: boom\n    at file:///...`, the stack's file
 * paths and lines, its cause's too). It looks as deep and as wide as Deno prints (`depth` 4,
 * the first `iterableLimit`, 100, elements and entries of an array, a Map and a Set; an error's
 * own properties at any depth) into arrays, Maps, Sets, errors and ordinary objects (a class's
 * too), never into a Proxy, a function, another built-in's object (a Date, a typed array...) or
 * an object with an inspect hook of its own (which prints it); it reads data properties only (no
 * getter runs) and copies those it looks into only if it finds such a value (a clean value prints
 * as it is). Where a copy would hold more than 10,000 elements and entries Deno does not print
 * (EXTRA_COPIES: an array of 20,000), it throws TOO_BIG: the fact is printed by hand, bounded.
 */
function printable(v: unknown, options: unknown): unknown {
  // A primitive as it is (a huge bigint was printed by its size before: `boundedBigint`), and a
  // function (not looked into), without a walk: most facts are strings, numbers and booleans.
  if (typeof v !== "object" || v === null) return v;
  const o = typeof options === "object" && options !== null
    ? options as { depth?: unknown; iterableLimit?: unknown; showHidden?: unknown }
    : {};
  const depth = typeof o.depth === "number" ? o.depth : o.depth === null ? Infinity : 4;
  const limit = typeof o.iterableLimit === "number" ? o.iterableLimit : 100;
  // Deno's test is truthiness (`showHidden: 1` shows them too): before, only `true` was looked
  // into, and under `1` an Error in a property not enumerable printed its stack.
  const hidden = !!o.showHidden;
  const walk: Walk = { depth, limit, left: EXTRA_COPIES, listed: NAMED_LISTS, hidden };
  if (!finds(v, 0, walk, new NativeMap())) return v;
  const least = new NativeMap<object, number>();
  walk.listed = NAMED_LISTS; // `levels` looks where `finds` did, whatever `finds` spent
  levels(v, 0, walk, least);
  return copied(v, walk, new NativeMap(), least);
}

/**
 * What `printable` looks into; undefined: printed as it is (see there). "dom": a real
 * DOMException (`domStandIn`); "domlike": an object made from DOMException's prototype, which
 * Deno's hook throws on (its getters' brand check) and is printed as an object of that class.
 */
type Kind = "error" | "dom" | "domlike" | "array" | "map" | "set" | "object";

function kindOf(o: object): Kind | undefined {
  // Neither a Proxy nor what has a Proxy in its prototype chain, whose traps are the caller's code.
  // What Deno prints by a hook: by Deno's DOMException's, a stand-in (`domHooked`).
  if (hooked(o)) {
    if (proxied(o) || !domHooked(o)) return undefined;
    return domBranded(o) ? "dom" : "domlike";
  }
  if (isNativeError(o)) return "error";
  if (isArray(o)) return "array";
  if (isMap(o)) return "map";
  if (isSet(o)) return "set";
  const builtIn = isDate(o) || isRegExp(o) || isTypedArray(o) || isAnyArrayBuffer(o) ||
    isDataView(o) || isPromise(o) || isBoxedPrimitive(o) || isWeakMap(o) || isWeakSet(o) ||
    isMapIterator(o) || isSetIterator(o) || isGeneratorObject(o) || isModuleNamespaceObject(o) ||
    isArgumentsObject(o);
  return builtIn ? undefined : "object";
}

/** Whether `v` holds (or is) what `printable` replaces, within its walk's bounds. */
function finds(v: unknown, level: number, walk: Walk, seen: Map<object, number>): boolean {
  if (hugeBigint(v) !== undefined) return true;
  if (typeof v !== "object" || v === null) return false;
  const kind = kindOf(v);
  if (kind === undefined) return false;
  if (kind === "error") return true; // printed without its stack
  // Likewise a DOMException, and one made from its prototype, on which Deno's hook throws.
  if (kind === "dom" || kind === "domlike") return true;
  if (level > walk.depth) return false; // Deno prints `[Object]`
  // Each object once at the least level it is met at (a cycle: `[Circular]`): one met first
  // deeper is looked at again where met higher, as Deno prints it there deeper (before, not:
  // `{ a: { b: { c: { d: o } } }, o }` printed the digits and stacks below `o.p`).
  const at = mapGet(seen, v);
  if (at !== undefined && at <= level) return false;
  mapSet(seen, v, level);
  const next = level + 1;
  if (kind === "map" || kind === "set") {
    let n = 0;
    const found = someEntry(v, kind, (k, x) => {
      if (n++ >= walk.limit) return false; // the rest are not printed (no `break` here)
      return finds(k, next, walk, seen) || finds(x, next, walk, seen);
    });
    if (found) return true;
  }
  const look = (k: PropertyKey) => {
    const d = ownDescriptor(v, k);
    return d !== undefined && "value" in d && (d.enumerable === true || walk.hidden) &&
      finds(d.value, next, walk, seen);
  };
  if (kind === "array") {
    // The indexes of its first `limit` elements (Deno prints no more), and its named properties.
    const length = (v as unknown[]).length;
    for (let i = 0; i < length && i < walk.limit; i++) if (look(i)) return true;
    const named = namedKeys(v as unknown[], walk);
    for (let i = 0; i < named.length; i++) if (look(named[i])) return true;
    return false;
  }
  const keys = ownKeys(v);
  for (let i = 0; i < keys.length; i++) if (look(keys[i])) return true;
  return false;
}

/**
 * Calls `f` on each of a Map's or a Set's entries (a Set's as `v, v`) in order, by the engine's
 * own iterator and its `next` as the module loaded (`for...of` looked `next` up on the iterator's
 * prototype, which a caller may patch), until `f` answers true; whether it did.
 */
function someEntry(
  o: object,
  kind: "map" | "set",
  f: (k: unknown, x: unknown) => boolean,
): boolean {
  const map = kind === "map";
  const it = map ? mapEntries(o as Map<unknown, unknown>) : setEntries(o as Set<unknown>);
  const next = map ? mapIteratorNext : setIteratorNext;
  for (let r = next(it); !r.done; r = next(it)) {
    if (f(r.value[0], r.value[1])) return true;
  }
  return false;
}

/**
 * The least level each array, Map, Set, error and ordinary object `copied` looks into is met at in
 * `v` (`least`): as `finds` looks, each again where met higher, and wholly (`finds` stops at the
 * first value it finds). Errors at any level; the others no deeper than Deno prints into.
 */
function levels(v: unknown, level: number, walk: Walk, least: Map<object, number>): void {
  if (typeof v !== "object" || v === null) return;
  const kind = kindOf(v);
  const always = kind === "error" || kind === "domlike"; // copied at any level: `copied`
  if (kind === undefined || kind === "dom" || !always && level > walk.depth) return;
  const at = mapGet(least, v);
  if (at !== undefined && at <= level) return;
  mapSet(least, v, level);
  const next = level + 1;
  if (kind === "map" || kind === "set") {
    let n = 0;
    someEntry(v, kind, (k, x) => {
      if (n++ >= walk.limit) return true; // the rest are not printed
      levels(k, next, walk, least);
      levels(x, next, walk, least);
      return false;
    });
  }
  const look = (k: PropertyKey) => {
    const d = ownDescriptor(v, k);
    if (d !== undefined && "value" in d && (kind === "error" || d.enumerable || walk.hidden)) {
      levels(d.value, next, walk, least);
    }
  };
  if (kind === "array") {
    const length = (v as unknown[]).length;
    for (let i = 0; i < length && i < walk.limit; i++) look(i);
    const named = namedKeys(v as unknown[], walk);
    for (let i = 0; i < named.length; i++) look(named[i]);
    return;
  }
  const keys = ownKeys(v);
  for (let i = 0; i < keys.length; i++) if (keys[i] !== "stack" || kind !== "error") look(keys[i]);
}

/**
 * `v` with what `printable` replaces replaced, each array, Map, Set, error and ordinary object it
 * looks into copied once (`made`), for the least level it is met at (`least`, `levels`), so that
 * the copy holds one object wherever the original holds one, and its print refers to each as
 * Deno's print of the original does (`<ref *1>`, `[Circular *1]`): same prototype, same own
 * properties (getters copied, not run), an error without its stack. Before, an object met first
 * deeper was copied again where met higher, and each copy was numbered apart (`<ref *2>` where
 * Deno printed `<ref *1>`), and one met past Deno's depth was left the original, so that a copy
 * holding itself there printed `[Object]` where Deno printed `[Circular *1]`.
 */
function copied(
  v: unknown,
  walk: Walk,
  made: Map<object, object>,
  least: Map<object, number>,
): unknown {
  const big = hugeBigint(v);
  if (big !== undefined) return big;
  if (typeof v !== "object" || v === null) return v;
  const done = mapGet(made, v);
  if (done !== undefined) return done;
  const kind = kindOf(v);
  if (kind === "dom") {
    const standIn = domStandIn(v);
    mapSet(made, v, standIn);
    return standIn;
  }
  // Not looked into (`levels`): Deno prints it as it is.
  if (kind === undefined || mapGet(least, v) === undefined) return v;
  // One made from DOMException's prototype: its class's name and its own properties, as Deno
  // prints any other object (its hook threw on it: before, printed by hand, `{}`).
  const proto = kind === "domlike" ? shapeOf(domName(v)) : getPrototypeOf(v);
  let copy: object;
  let shown = (_k: string | symbol) => true; // the own properties whose values are looked into
  let skip = (_k: string | symbol) => false; // the own properties left out
  if (kind === "error") {
    copy = new NativeError();
    skip = (k) => k === "stack"; // set below, undefined: Deno prints `[Name: message]`
  } else if (kind === "array") {
    const length = (v as unknown[]).length;
    beyond(walk, length); // before `ownKeys` lists them all
    copy = new NativeArray(length);
    skip = (k) => k === "length";
    shown = (k) => !isIndex(k) || +(k as string) < walk.limit; // as `namedKeys` tells them
  } else if (kind === "map" || kind === "set") {
    const size = (kind === "map" ? sizeOfMap : sizeOfSet)(v);
    beyond(walk, size);
    copy = kind === "map" ? new NativeMap() : new NativeSet();
    mapSet(made, v, copy);
    let n = 0;
    someEntry(v, kind, (k, x) => {
      const look = n++ < walk.limit;
      const key = look ? copied(k, walk, made, least) : k;
      if (kind === "set") setAdd(copy as Set<unknown>, key);
      else mapSet(copy as Map<unknown, unknown>, key, look ? copied(x, walk, made, least) : x);
      return false;
    });
  } else copy = {};
  setPrototypeOf(copy, proto);
  mapSet(made, v, copy);
  const keys = ownKeys(v);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (skip(k)) continue;
    const d = ownDescriptor(v, k)!;
    if ("value" in d && (kind === "error" || d.enumerable || walk.hidden) && shown(k)) {
      d.value = copied(d.value, walk, made, least);
    }
    defineProperty(copy, k, d);
  }
  if (kind === "error") noStackLike(copy, ownDescriptor(v, "stack"));
  return copy;
}

/**
 * Gives an error's `copy` a `stack` that reads undefined (Deno prints `[Name: message]`) of the
 * original's kind (`was`, its own descriptor): an accessor (the engine's, Deno's `showHidden`
 * prints `[stack]: [Getter/Setter]`), a data property, or none. Before, always a data property:
 * `[stack]: undefined` under `showHidden`, where Deno prints the original's `[Getter/Setter]`.
 */
function noStackLike(copy: object, was: PropertyDescriptor | undefined): void {
  if (was === undefined) deleteProperty(copy, "stack");
  else if ("value" in was) {
    defineProperty(copy, "stack", {
      __proto__: null,
      value: undefined,
      writable: true,
      configurable: true,
    } as PropertyDescriptor);
  } else {
    const set = was.set === undefined ? undefined : noStack;
    defineProperty(copy, "stack", {
      __proto__: null,
      get: noStack,
      set,
      configurable: true,
    } as PropertyDescriptor);
  }
}

/** The stack a copied error reads (and its setter, which keeps nothing). */
const noStack = (): undefined => undefined;

/**
 * The most indexes past the first `iterableLimit` of each array that `namedKeys` lists in one
 * fact: an array of 10,000 costs `Reflect.ownKeys` ~0.3 ms, where Deno prints its first 100.
 */
const NAMED_LISTS = 10_000;

/**
 * The own keys of the array `a` besides its indexes and `length` (Deno prints them after its
 * elements: `[ 1, code: [Error: e] ]`). Only `Reflect.ownKeys`, which lists each index too, tells
 * them (Deno's print asks the engine for them alone), so an array no longer than `limit` always
 * (Deno prints each element), a longer one while the fact's NAMED_LISTS last (a fact of 100 arrays
 * of 10,000 listed them all in 5 times Deno's print), none after. Before, none at all: an Error
 * there printed its stack, its file paths and lines, a huge bigint its digits.
 */
function namedKeys(a: unknown[], walk: Walk): (string | symbol)[] {
  const past = a.length - walk.limit;
  if (past > 0) {
    if (past > walk.listed) return [];
    walk.listed -= past;
  }
  const keys = ownKeys(a);
  const named: (string | symbol)[] = [];
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (k !== "length" && !isIndex(k)) {
      defineProperty(named, named.length, { __proto__: null, value: k } as PropertyDescriptor);
    }
  }
  return named;
}

/** Whether `k` is an array index: a canonical number from 0 to 2**32 - 2. */
function isIndex(k: string | symbol): boolean {
  if (typeof k !== "string") return false;
  const n = +k;
  return n >>> 0 === n && n !== 4294967295 && `${n}` === k;
}

/**
 * Counts the elements or entries past the first `walk.limit` of `n` (EXTRA_COPIES): TOO_BIG past
 * it.
 */
function beyond(walk: Walk, n: number): void {
  if (n > walk.limit) walk.left -= n - walk.limit;
  if (walk.left < 0) throw TOO_BIG;
}

/** BigInt.prototype's own valueOf, as the module loaded (`wrappedBigint`). */
const bigintValueOf = uncurry(BigInt.prototype.valueOf) as (x: unknown) => bigint;

/**
 * The bigint a BigInt wrapper object holds (by BigInt.prototype's own valueOf: no code of the
 * caller's runs); undefined for anything else, a Proxy too.
 */
export function wrappedBigint(x: unknown): bigint | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  try {
    return bigintValueOf(x); // throws a TypeError on what has no [[BigIntData]]
  } catch {
    return undefined;
  }
}

/**
 * `text` as it is up to 4096 characters (`cutShort`), else its first 64, an ellipsis and its
 * length, `"ssss"… (a print of 10031 characters)`: where the cut falls inside a quoted string (as
 * Deno quotes one, `opensString`; in `json`, the hand print's JSON, at any `"`), the quote is
 * closed first, an escape the cut splits (`\x1`) left out. Before, the quote was left open:
 * `"ssss… (a print of 10031 characters) }` read as if the ellipsis and the rest were the string's.
 */
function cutPrint(text: string, json = false): string {
  const cut = cutShort(text, "print");
  if (cut === text) return text;
  const head = headOf(text);
  return closeQuote(head, json) + slice(cut, head.length);
}

/**
 * The hand print (`showByHand`) cut as `cutPrint` cuts: its JSON's strings open at every `"`
 * outside one (JSON quotes nothing else, and escapes its own), and its other prints (a function's
 * tag, a symbol, `[object Tag]`) hold no string, whatever quotes their names hold.
 */
function cutByHand(v: unknown): string {
  const printed = handPrint(v);
  const text = printed[0], json = printed[1];
  return json ? cutPrint(text, true) : cutShort(text, "print");
}

/**
 * `head` (the start of a print by Deno's inspect, or of JSON: `json`) with the quoted string it
 * ends inside closed: its quote appended, after an escape left out that the end split. A quote
 * opens a string where Deno's would (`opensString`); one inside a name (`Symbol(a"b)`,
 * `[Function: a "b]`) or a regular expression (`/[,"]/`) opens none.
 */
function closeQuote(head: string, json: boolean): string {
  const { quote, escape } = readQuotes(head, head.length, json, { quote: "", escape: -1, at: 0 });
  if (quote === "") return head;
  // An escape the end split (`\x1`, `\u00`, a lone `\`): left out, not half printed.
  const split = escape >= 0 && escape + escapeLength(head, escape) > head.length;
  return (split ? slice(head, 0, escape) : head) + quote;
}

/** Where `readQuotes` is in a print: the open string's quote, where its last escape began. */
interface Quotes {
  /** The open string's quote, "" outside one. */
  quote: string;
  /** Where the open string's last escape began (-1: none). */
  escape: number;
  /** How far it has read (past `end` where an escape runs on past it). */
  at: number;
}

/** `from`, read on to `text[end]` (`closeQuote`'s reading, see there). */
function readQuotes(text: string, end: number, json: boolean, from: Quotes): Quotes {
  let { quote, escape, at: i } = from;
  for (; i < end; i++) {
    const c = text[i];
    if (quote === "") {
      if (json ? c === '"' : (c === '"' || c === "'" || c === "`") && opensString(text, i)) {
        quote = c;
      }
    } else if (c === "\\") {
      escape = i;
      i += escapeLength(text, i) - 1;
    } else if (c === quote) quote = "";
  }
  return { quote, escape, at: i };
}

/**
 * Whether `text`, a print by Deno's inspect, holds its `[Internal Formatting Error]` (and a stack)
 * where a value is printed, outside a quoted string (as `closeQuote` reads them); inside one it is
 * a string's own text (`{ s: "[Internal Formatting Error] x" }`), which before made the fact
 * print by hand (JSON) where Deno's print showed nothing amiss. Deno's own never starts inside a
 * string; a name with a quote in it that reads as one opening (`closeQuote`'s heuristic) may hide
 * one that follows it, whose stack is then printed.
 */
function formatErrorIn(text: string): boolean {
  let quotes: Quotes = { quote: "", escape: -1, at: 0 };
  for (let i = indexOf(text, FORMAT_ERROR); i >= 0; i = indexOf(text, FORMAT_ERROR, i + 1)) {
    if (quotes.at <= i) quotes = readQuotes(text, i, false, quotes);
    if (quotes.quote === "" && quotes.at === i) return true;
  }
  return false;
}

/**
 * Whether the quote at `head[i]` opens a string where Deno prints one, a value or a key: at the
 * start, just after a line break or a symbol's `Symbol(` (Deno quotes a description that is no
 * name: `Symbol("a b")`), or after spaces that follow the start, a line break (an indented key or
 * value), an opening bracket, or one of `,`, `:` (`[String: "s"]`) and `>` (`=>`): Deno prints a
 * space after each of those before a value. Not just after another bracket, `,` or `:`, as
 * nothing Deno prints puts a string there but a name's or a regular expression's own text
 * (`[Function: a,"b]`, `/[,"]/`, `[Function: f("b]`): before, such a quote opened a string there,
 * which the next string's opening quote closed, so the string the cut fell in was left open. A
 * name whose own text reads so (a symbol key's description `a: "b`, `"b`) still opens one: a
 * heuristic.
 */
function opensString(head: string, i: number): boolean {
  let j = i - 1;
  if (j < 0 || head[j] === "\n" || (i >= 7 && slice(head, i - 7, i) === "Symbol(")) return true;
  if (head[j] !== " ") return false;
  while (j >= 0 && head[j] === " ") j--;
  return j < 0 || indexOf("\n[({,:>", head[j]) >= 0;
}

/**
 * How long the escape at `s[i]` (a backslash) is: `\n` 2, `\x1b` 4, `\u00e9` 6, `\u{1f600}` to its
 * brace.
 */
function escapeLength(s: string, i: number): number {
  const kind = s[i + 1];
  if (kind === "x") return 4;
  if (kind !== "u") return 2;
  if (s[i + 2] !== "{") return 6;
  const end = indexOf(s, "}", i + 3);
  return end < 0 ? s.length - i + 1 : end - i + 1; // unclosed: past the end (split)
}

/**
 * Deno's `Deno.inspect`, as this module loaded (a caller's later replacement never runs), or
 * undefined where there is none (another runtime).
 */
const denoInspect: ((v: unknown) => string) | undefined = (() => {
  const deno = (globalThis as { Deno?: { inspect?: unknown } }).Deno;
  const f = deno?.inspect;
  if (typeof f !== "function") return undefined;
  const call = uncurry(f as (v: unknown) => unknown);
  return (v: unknown) => toText(call(deno, v));
})();

/**
 * A fact's value printed without the `inspect` Deno passes (a caller who calls the hook with none
 * of its own): by `Deno.inspect` with its default options, as `console.log` prints it, an output
 * over 4096 characters by its head and length (`cutShort`: Deno prints a name or a key whole, a
 * function named by a 2**28-character string a string as long). Before, it printed JSON and a few
 * kinds by hand, unlike Deno: no `[Tag]` (Symbol.toStringTag) after a function, a class's own
 * static properties and a function's own properties left out, a `name` getter not read, a Proxy
 * of a class `[Function: X]` (only Deno sees a Proxy's target), NaN and -0 inside an object
 * `null` and `0`, as JSON has them. Where Deno's inspect throws (a caller's getter that throws,
 * the engine's string limit) or there is none, `showByHand`: never a throw. A nested huge bigint
 * and an Error as `showWith` prints them (`printable`).
 */
function showPlain(v: unknown): string {
  const big = boundedBigint(v);
  if (big !== undefined) return big;
  if (denoInspect !== undefined) {
    try {
      const text = denoInspect(printable(v, undefined));
      // Deno's `[Internal Formatting Error]` and a stack, with file paths: by hand instead.
      if (!formatErrorIn(text)) return cutPrint(text);
    } catch {
      // A getter or a Proxy trap of the caller's threw, or the text is past the engine's limit.
    }
  }
  return cutByHand(v);
}

/**
 * @ignore A fact's value printed without any `inspect` (`showPlain`'s fallback; exported for
 * tests): as JSON, and what JSON has no text for as Deno prints it: a function `[Function: name]`
 * (`[Function (anonymous)]`, `[AsyncFunction: name]`, a class `[class Name]`), a bigint `1n`, a
 * symbol `Symbol(q)`, `undefined`. Before, `String(v)` printed a function's whole source, and a
 * bigint, which JSON refuses, `[object BigInt]`. Never a throw: what JSON refuses (a cycle, a
 * `toJSON` that throws, an object holding a bigint) prints its tag (`[object Object]`), and where
 * reading that tag throws too (a getter or a Proxy trap of the caller's), `[object]`.
 */
export function showByHand(v: unknown): string {
  return handPrint(v)[0];
}

/** `showByHand`'s print, and whether it is JSON (else it holds no string: `cutByHand`). */
function handPrint(v: unknown): [text: string, json: boolean] {
  // Nothing of a revoked Proxy can be read (Deno's inspect throws on it): named as what it is.
  // Before, `[object]` (its tag's read threw), or `[Function (anonymous)]` for a function's.
  if ((typeof v === "object" && v !== null || typeof v === "function") && isRevoked(v)) {
    return ["[revoked Proxy]", false];
  }
  if (typeof v === "function") return [functionTag(v), false];
  // As Deno prints them: JSON has no text for NaN and the infinities (`null`), nor for -0 (`0`).
  if (typeof v === "number") return [v === 0 && 1 / v < 0 ? "-0" : toText(v), false];
  if (typeof v === "bigint") return [`${v}n`, false];
  if (typeof v === "symbol" || v === undefined) return [toText(v), false];
  // An Error as `printable` prints one (Deno's print of an error without a stack), where JSON
  // printed `{}`: its name, message and cause, no stack.
  if (typeof v === "object" && v !== null && isNativeError(v) && !isProxy(v)) {
    return [errorByHand(v, 0), false];
  }
  // A channel's codec is an object: its tag, should JSON refuse it (never a throw).
  try {
    const json = jsonStringify(v);
    return json === undefined ? [objectTag(v), false] : [json, true];
  } catch {
    try {
      return [objectTag(v), false];
    } catch {
      return ["[object]", false]; // a Proxy whose Symbol.toStringTag trap throws
    }
  }
}

/**
 * `[TypeError: boom] { [cause]: ... }` by hand (`handPrint`): its name, the first data `name` up
 * its prototype chain (32 objects at most), its message and cause own data properties (no getter
 * runs), each over 4096 characters by its head and length (`cutShort`); a cause printed by hand
 * too, 4 causes deep at most (an error may be its own cause), deeper `[cause]: [Error]`.
 */
function errorByHand(e: Error, depth: number): string {
  const dom = domByHand(e);
  if (dom !== undefined) return dom;
  let name = "Error";
  let message = "";
  let cause = "";
  try {
    for (let p: object | null = e, n = 0; p !== null && n < 32; p = getPrototypeOf(p), n++) {
      if (isProxy(p)) break; // its traps are the caller's code: none runs
      const d = ownDescriptor(p, "name");
      if (d === undefined) continue;
      if ("value" in d && typeof d.value === "string") name = cutShort(d.value, "name");
      break;
    }
    const m = ownDescriptor(e, "message");
    if (m !== undefined && "value" in m && typeof m.value === "string") {
      message = cutShort(m.value, "message");
    }
    const c = ownDescriptor(e, "cause");
    if (c !== undefined && "value" in c) {
      const v: unknown = c.value;
      const nested = typeof v === "object" && v !== null && isNativeError(v) && !isProxy(v);
      const printed = !nested
        ? cutShort(handPrint(v)[0], "print")
        : depth < 3
        ? errorByHand(v as Error, depth + 1)
        : "[Error]";
      cause = ` { [cause]: ${printed} }`;
    }
  } catch {
    // A Proxy's trap in its prototype chain that threw: what was read so far.
  }
  return `[${name}${message === "" ? "" : `: ${message}`}]${cause}`;
}

/**
 * A real DOMException (`domHooked`, `domBranded`) by hand as Deno prints one without a stack
 * (`domStandIn`): `DOMException { message: "m", name: "AbortError", code: 20 }`, its strings
 * quoted as JSON, each over 4096 characters by its head quoted, an ellipsis and its length
 * (`"xxxx"… (a string of 5000 characters)`, not inside the quotes, where they read as its own
 * text); undefined for anything else. Before, `errorByHand` printed one `[Error]`: its `name`
 * and `message` are getters of DOMException's prototype, which it does not run.
 */
function domByHand(e: object): string | undefined {
  if (domGetters === undefined || proxied(e) || !domHooked(e) || !domBranded(e)) return undefined;
  const quoted = (x: unknown) => {
    if (typeof x !== "string") return toText(x);
    const cut = cutShort(x, "string");
    if (cut === x) return jsonStringify(x) as string;
    const head = headOf(x);
    return jsonStringify(head) + slice(cut, head.length);
  };
  return `${cutShort(domName(e), "name")} { message: ${quoted(domGetters.message(e))}, name: ${
    quoted(domGetters.name(e))
  }, code: ${quoted(domGetters.code(e))} }`;
}

/** The prototypes of the function kinds Deno names apart (`[AsyncFunction: f]`): a Proxy's. */
const FUNCTION_KINDS: readonly [object, string][] = [
  [getPrototypeOf(async function () {}), "AsyncFunction"],
  [getPrototypeOf(function* () {}), "GeneratorFunction"],
  [getPrototypeOf(async function* () {}), "AsyncGeneratorFunction"],
];

/**
 * `[Function: name]` as Deno prints a function (`[AsyncFunction: name]`, `[GeneratorFunction:
 * name]`, `[AsyncGeneratorFunction: name]`, `[Function (null prototype): name]`; a class `[class
 * Name]`, `[class B extends A]`, `[class N extends [null prototype]]`), read without running the
 * function's code: its `name` (and its superclass's) by an own data property only (a getter of the
 * caller's is not run), its source (to tell a class) by `Function.prototype.toString`, which a
 * Proxy or a bound function answers without a trap, its kind by the engine's own checks (by its
 * prototype for a Proxy, whose target no script can see: its `getPrototypeOf` trap runs); a
 * Proxy's trap that throws (its `getOwnPropertyDescriptor` or `getPrototypeOf`) leaves what was
 * read so far. Before, a class that extends another printed `[class B]` and a function with a null
 * prototype `[Function: f]`, where Deno prints `[class B extends A]` and `[Function (null
 * prototype): f]`. A function whose prototype chain names another kind than its own
 * (`constructorName`) is followed by that name, as Deno does: a bound async function
 * `[Function: bound f] AsyncFunction` (its kind the engine's, its prototype its target's), a
 * class whose prototype is an async function `[class C [AsyncFunction] extends f]`.
 */
function functionTag(f: object): string {
  let name = "";
  let kind = "Function";
  let isClass = false;
  let extended = ""; // a class's " extends A"; a function's " (null prototype)"
  let made = ""; // a class's " [AsyncFunction]"; a function's " AsyncFunction" (`constructorName`)
  try {
    name = cutShort(ownName(f), "name"); // a name of 2**29 characters: past the engine's limit
    isClass = regexpExec(/^class\b/, sourceOf(f)) !== null;
    const proto = getPrototypeOf(f);
    if (isClass) {
      // Deno's: the name of what it extends, if that has one (a class that extends nothing
      // extends Function.prototype, whose name is "").
      if (proto === null) extended = " extends [null prototype]";
      else {
        const by = constructorName(f);
        if (by !== undefined && by !== "Function" && by !== "Object") made = ` [${by}]`;
        const base = cutShort(ownName(proto), "name");
        if (base !== "") extended = ` extends ${base}`;
      }
    } else {
      if (proto === null) extended = " (null prototype)";
      if (isProxy(f)) {
        for (let i = 0; i < FUNCTION_KINDS.length; i++) {
          if (FUNCTION_KINDS[i][0] === proto) kind = FUNCTION_KINDS[i][1];
        }
      } else {
        kind = `${isAsyncFunction(f) ? "Async" : ""}${
          isGeneratorFunction(f) ? "Generator" : ""
        }Function`;
        const by = proto === null ? undefined : constructorName(f);
        if (by !== undefined && by !== kind && by !== "Object") made = ` ${by}`;
      }
    }
  } catch {
    // A Proxy's trap that threw: what was read so far.
  }
  if (isClass) return `[class ${name === "" ? "(anonymous)" : name}${made}${extended}]`;
  const head = name === "" ? `[${kind}${extended} (anonymous)]` : `[${kind}${extended}: ${name}]`;
  return head + made;
}

/**
 * The name Deno gives what made `f`: that of the first own `constructor` up its prototype chain
 * (`f` itself first, 32 objects at most: a Proxy's `getPrototypeOf` trap may answer a fresh one
 * each time) that is a data property holding a function with an own data `name` other than "",
 * whose own data `prototype` is one of `f`'s prototypes (Deno's check; no `Symbol.hasInstance` is
 * called). Undefined when none is. Where it is none or `Object` (a function made from a plain
 * object's prototype), Deno prints no function tag at all but the object's braces (`{}`): the tag
 * is printed here, without that name. Reads no getter (Deno's runs a `name` getter, and prints a
 * `Symbol.toStringTag` it reads, which this leaves out); a Proxy's traps run, and what they throw
 * is thrown (`functionTag`).
 */
function constructorName(f: object): string | undefined {
  const chain: object[] = [];
  for (let p: object | null = f; p !== null && chain.length < 32; p = getPrototypeOf(p)) {
    putAt(chain, chain.length, p);
  }
  for (let i = 0; i < chain.length; i++) {
    const d = ownDescriptor(chain[i], "constructor");
    if (d === undefined || !("value" in d) || typeof d.value !== "function") continue;
    const name = ownName(d.value);
    const made = ownDescriptor(d.value, "prototype");
    if (
      name !== "" && made !== undefined && "value" in made && made.value !== f &&
      inList(chain, made.value)
    ) return cutShort(name, "name");
  }
  return undefined;
}

/**
 * `a[i] = v` as `a`'s own element, defined: an assignment (or `push`) where `a` has none runs a
 * setter an index of Array.prototype has (`Object.defineProperty(Array.prototype, 0, ...)`, the
 * caller's code), and `join` then read its getter: a fact printed as the caller's text. The
 * codec's decode defines its lists' elements by it too (there, an element assigned so was not
 * `a`'s own: `ownField` found none, each ref to that Error "bad"). Internal.
 */
export function putAt(a: unknown[], i: number, v: unknown): void {
  defineProperty(
    a,
    i,
    {
      __proto__: null,
      value: v,
      writable: true,
      enumerable: true,
      configurable: true,
    } as PropertyDescriptor,
  );
}

/** Whether `list` holds `x` (`Array.prototype.includes`, run by no caller's replacement). */
function inList(list: readonly unknown[], x: unknown): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === x) return true;
  return false;
}

/** `o`'s own `name` if it is a data property holding a string, else "" (no getter is run). */
function ownName(o: object): string {
  const d = ownDescriptor(o, "name");
  return d !== undefined && "value" in d && typeof d.value === "string" ? d.value : "";
}

/**
 * What a hook prints for a receiver that is none of its class (an object made from the prototype
 * with `Object.create`, a Proxy of an instance, the hook called on another value or a primitive):
 * `Channel <not a Channel>`, `Actor <not an Actor>`, as `Context`'s does. Inspection never throws;
 * the hook's first private read threw the engine's TypeError ("Cannot read private member ...") out
 * of `console.log`. Each hook tells its own by a private brand check on `Object(this)` (an object
 * is itself, a primitive a wrapper with no private field, `null`/`undefined` a fresh `{}`), which
 * runs no Proxy trap.
 */
export function notA(name: string): string {
  return `${name} <not ${indexOf("AEIOU", name[0]) >= 0 ? "an" : "a"} ${name}>`;
}

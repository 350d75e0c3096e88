/**
 * @ignore A compact encoding of plain data for values that cross isolates through native
 * memory: what structured clone copies of undefined, null, booleans, numbers, strings, bigints,
 * Dates, RegExps, plain objects, dense arrays, Maps, Sets, ArrayBuffers, typed arrays and
 * DataViews, with shared and circular references kept. It is written by hand into one reused
 * buffer: `node:v8`'s `serialize` costs ~5 µs for `{ a: 1 }` on these machines and allocates for
 * every value (a round trip of `{ m: Map, f: Float64Array }` ~19 µs), this ~0.1 µs. Anything
 * else (a class instance, a subclass of a built-in, an array with holes or properties of its
 * own, a resizable or shared buffer, an Error, ...) makes `pack` answer -1, and the codec
 * serialises the value with `node:v8` instead. A value packed here is read back only by
 * `unpack`: its descriptor has a tag of its own.
 *
 * Format: one tag byte per value, then (little-endian) INT int32; DBL float64; STR, BIG (hex
 * digits, "-" first when negative) and object keys a uint32 byte count and UTF-8; OBJ a
 * uint32 key count, then each key and its value; ARR a uint32 length, then the elements; DATE
 * float64 time; REGEXP its source and flags as strings; MAP a uint32 entry count, then each
 * key and value; SET a uint32 count, then the values; ABUF a uint32 byte length and the bytes;
 * VIEW a kind byte (`VIEWS`), its buffer (an ABUF or a REF to one), a uint32 byte offset and a
 * uint32 length (elements; bytes for a DataView); REF a uint32 index of an earlier object,
 * array, Date, RegExp, Map, Set, ArrayBuffer or view (in the order they began). As structured
 * clone does, a view takes its whole buffer along, and views of one buffer come back sharing
 * one.
 *
 * Unlike structured clone, a Proxy of a plain object is copied through its traps (structured
 * clone refuses it), and a getter that runs before `pack` gives up runs again in `node:v8`,
 * unless it gave up at a function or symbol (`refusedLeaf`): the value is refused then, node:v8
 * asked about that one alone.
 *
 * @module
 */

import { types } from "node:util";
import { describe } from "./errors.ts";

const UNDEF = 0, NUL = 1, TRUE = 2, FALSE = 3, INT = 4, DBL = 5, STR = 6, OBJ = 7, ARR = 8;
const BIG = 9, DATE = 10, REF = 11, REGEXP = 12, MAP = 13, SET = 14, ABUF = 15, VIEW = 16;

/** The view kinds VIEW names, by index (Float16Array where the runtime has it). */
type ViewCtor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => ArrayBufferView;
const VIEWS: ViewCtor[] = [
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
  DataView,
];
const float16 = (globalThis as { Float16Array?: ViewCtor }).Float16Array;
if (float16 !== undefined) VIEWS.push(float16);
const DATA_VIEW = VIEWS.indexOf(DataView);
/** A view's kind by its exact prototype (a subclass, Node's Buffer say, is left to node:v8). */
const viewKinds = new Map<object, number>(VIEWS.map((c, i) => [c.prototype, i]));
/** Each kind's name, as the engine's `Symbol.toStringTag` of a typed array says it. */
const viewNames = VIEWS.map((c) => c.name);
/** Bytes per element of each kind. */
const viewSizes = VIEWS.map((c) =>
  (c as unknown as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1
);

/** The built-ins' own accessors, taken once: they read internal slots (a Proxy or an object
 * that only inherits from the prototype throws), which is what structured clone reads too. */
function getter(proto: object, name: string): (this: unknown) => unknown {
  return Object.getOwnPropertyDescriptor(proto, name)!.get!;
}
const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype);
const taBuffer = getter(typedArrayProto, "buffer") as (this: unknown) => ArrayBuffer;
const taOffset = getter(typedArrayProto, "byteOffset") as (this: unknown) => number;
const taLength = getter(typedArrayProto, "length") as (this: unknown) => number;
const taTag = Object.getOwnPropertyDescriptor(typedArrayProto, Symbol.toStringTag)!.get! as (
  this: unknown,
) => string | undefined;

/**
 * @ignore A Uint8Array's length as the engine knows it: an own `length` property (or a
 * Proxy) cannot make native code read past the bytes. Throws a TypeError for anything that is
 * not a real typed array.
 */
export function bytesLength(bytes: Uint8Array): number {
  return taLength.call(bytes);
}

/** @ignore As {@linkcode bytesLength}, for any typed array. */
export function typedLength(array: ArrayBufferView): number {
  return taLength.call(array);
}

/** @ignore Whether an ArrayBuffer was detached or transferred (engine getters only). */
export function isDetached(buffer: ArrayBuffer): boolean {
  return abDetached !== undefined ? abDetached.call(buffer) : abLength.call(buffer) === 0;
}

/** @ignore Whether a typed array is on a resizable ArrayBuffer (engine getters only). */
export function onResizable(array: ArrayBufferView): boolean {
  const buffer = taBuffer.call(array);
  return buffer instanceof ArrayBuffer && abResizable.call(buffer);
}

/** @ignore A typed array's buffer as the engine knows it (not an own `buffer` property). */
export function typedBuffer(array: ArrayBufferView): ArrayBufferLike {
  return taBuffer.call(array);
}
const dvBuffer = getter(DataView.prototype, "buffer") as (this: unknown) => ArrayBuffer;
const dvOffset = getter(DataView.prototype, "byteOffset") as (this: unknown) => number;
const dvLength = getter(DataView.prototype, "byteLength") as (this: unknown) => number;
const abLength = getter(ArrayBuffer.prototype, "byteLength") as (this: unknown) => number;
const abResizable = getter(ArrayBuffer.prototype, "resizable") as (this: unknown) => boolean;
const abDetached = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "detached")?.get as
  | ((this: unknown) => boolean)
  | undefined;
const reSource = getter(RegExp.prototype, "source") as (this: unknown) => string;
const reFlags = getter(RegExp.prototype, "flags") as (this: unknown) => string;
const mapForEach = Map.prototype.forEach;
const mapSize = getter(Map.prototype, "size");
const setSize = getter(Set.prototype, "size");
const setForEach = Set.prototype.forEach;
const hasOwn = Object.prototype.hasOwnProperty;

/** Thrown inside `pack` for a value it does not copy. */
const UNPACKABLE = Symbol("unpackable");

/** The buffer `pack` writes into; shrunk back after a value that grew it past `KEEP`. */
let buf = new Uint8Array(1024);
let pos = 0;
/** Doubles go through these (a DataView per buffer cost more than the copy). */
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const KEEP = 1 << 20;
/** Objects (of every kind REF names) met so far in this value: their indices, for REF. */
const ids = new Map<object, number>();
const encoder = new TextEncoder();
/**
 * `ignoreBOM`: a string that begins with U+FEFF keeps it. TextEncoder writes it as EF BB BF, and
 * a decoder that does not ignore the BOM takes those bytes for one and drops them: such a string
 * sent on a shared channel (codecs.string, the default codec, a packed string) arrived without
 * its first character.
 */
/** @ignore UTF-8 decoding for every string receive; keeps a leading U+FEFF (`ignoreBOM`). */
export const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * The most bytes one `TextDecoder.decode` call takes: V8's longest string (2^29 - 24 units on
 * 64-bit), which Deno's decode checks the input's byte length against ("buffer exceeds maximum
 * length"). A string of two-byte UTF-8 characters half that long encodes to more.
 */
export const DECODE_MAX = 2 ** 29 - 24;

/**
 * @ignore The byte length past which a string receive decodes in pieces, and the pieces' size:
 * `DECODE_MAX`, lowered only by tests (`setDecodePiece`), so that a channel receive takes the
 * long-string path (`decodeUtf8` in pieces, codec.ts's `decodeLong`) without gigabytes.
 */
export let decodePiece: number = DECODE_MAX;

/**
 * @ignore For tests: sets `decodePiece` (a positive integer up to `DECODE_MAX`; a larger one
 * would let one `TextDecoder` call meet bytes it refuses) and returns what it was.
 */
export function setDecodePiece(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > DECODE_MAX) {
    throw new RangeError(
      `Cannot set the decode piece: it must be an integer from 1 to ${DECODE_MAX}, received ${
        describe(n)
      }`,
    );
  }
  const was = decodePiece;
  decodePiece = n;
  return was;
}

/**
 * @ignore UTF-8 bytes as a string, in pieces of `DECODE_MAX` when there are more (a streaming
 * decoder joins a character split between two). Before, a string whose UTF-8 encoding was longer
 * than that (268,435,445 "é"s: 536,870,890 bytes) was sent, and every receive of it threw the
 * engine's TypeError, the value lost; a local channel's structured value holding one failed its
 * send so. Bytes that decode to a longer string than the engine holds (C code's) throw its
 * RangeError, which the caller names. `piece` is for tests (tests/pack_test.ts decodes in small
 * pieces what would otherwise take a 256 MiB string).
 */
export function decodeUtf8(b: Uint8Array, piece: number = decodePiece): string {
  if (b.length <= piece) return decoder.decode(b);
  const pieces = new TextDecoder("utf-8", { ignoreBOM: true });
  let s = "";
  for (let at = 0; at < b.length; at += piece) {
    s += pieces.decode(b.subarray(at, at + piece), { stream: at + piece < b.length });
  }
  return s;
}

function room(n: number): void {
  if (pos + n <= buf.length) return;
  const bigger = new Uint8Array(Math.max(2 * buf.length, pos + n));
  bigger.set(buf.subarray(0, pos));
  buf = bigger;
}

/** Writes `n` (an int32 or uint32) at `at`, little-endian. */
function set32(at: number, n: number): void {
  buf[at] = n;
  buf[at + 1] = n >>> 8;
  buf[at + 2] = n >>> 16;
  buf[at + 3] = n >>> 24;
}

function putU32(tag: number, n: number): void {
  room(5);
  buf[pos] = tag;
  set32(pos + 1, n);
  pos += 5;
}

/** A tag and a float64 (little-endian: the machines this runs on are). */
function putF64(tag: number, v: number): void {
  room(9);
  buf[pos] = tag;
  f64[0] = v;
  buf.set(f64Bytes, pos + 1);
  pos += 9;
}

/** A uint32 byte count and the UTF-8 of `s` (short ASCII strings by hand). */
function putText(s: string): void {
  const n = s.length;
  room(4 + 3 * n);
  const at = pos + 4;
  let i = 0;
  if (n <= 32) {
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[at + i] = c;
    }
  }
  if (i !== n && !s.isWellFormed()) throw UNPACKABLE; // UTF-8 has no lone surrogates
  const len = i === n ? n : encoder.encodeInto(s, buf.subarray(at)).written;
  set32(pos, len);
  pos = at + len;
}

function put(v: unknown): void {
  switch (typeof v) {
    case "undefined":
      room(1);
      buf[pos++] = UNDEF;
      return;
    case "boolean":
      room(1);
      buf[pos++] = v ? TRUE : FALSE;
      return;
    case "number":
      if ((v | 0) === v && !Object.is(v, -0)) putU32(INT, v);
      else putF64(DBL, v);
      return;
    case "string":
      room(1);
      buf[pos++] = STR;
      putText(v);
      return;
    case "bigint":
      room(1);
      buf[pos++] = BIG;
      putText(v.toString(16));
      return;
    case "object":
      if (v === null) {
        room(1);
        buf[pos++] = NUL;
        return;
      }
      putObject(v);
      return;
  }
  // Functions and symbols: node:v8 refuses them too, and names the error. The codec asks it of
  // this one alone (`refusedLeaf`), not of the whole value again, whose getters would run twice.
  leaf = v;
  hasLeaf = true;
  throw UNPACKABLE;
}

function putObject(v: object): void {
  const id = ids.get(v);
  if (id !== undefined) return putU32(REF, id);
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    // An array, typed array or DataView given Object.prototype or null by `Object.setPrototypeOf`
    // is one still to structured clone: node:v8 copies it as such (both checks are engine
    // intrinsics that TurboFan inlines, no slower than the prototype read). Packed as a plain
    // object, it came back as one (`{ 0: 1, 1: 2 }` for `[1, 2]`, `{}` for a DataView: the
    // typed-array tag this checked before is undefined for a DataView). The other kinds with
    // internal slots (a Map, Date, ArrayBuffer, Error, ...) have no check this cheap (node:util's
    // `types.isMap` and the like cost ~15 ns each per plain object): README, "Structured values",
    // says they come back as the plain object they then look like, but for an Error without
    // properties of its own (`realError`, after the loop).
    if (Array.isArray(v) || ArrayBuffer.isView(v)) throw UNPACKABLE;
    ids.set(v, ids.size);
    // As structured clone copies it: the own enumerable string keys it had before the first read,
    // each read (`[[Get]]`) if it is still own when its turn comes, even where its own getter
    // deletes it (undefined then), and left out if not (a getter on the way deleted it), even where
    // Object.prototype has it. Two loops do that, for speed. `for-in` lists those keys (and
    // enumerable inherited ones, which `hasOwn` leaves out), and V8 compiles its `hasOwn` and read
    // to a map check and a field load while the object has fast properties: `Object.keys` and a
    // `hasOwn` before each indexed read (HTML's shape) cost 25-50% more on small, nested and 10-key
    // objects, 90% more on a 30-key one from JSON.parse. An object in dictionary mode has no enum
    // cache: `for-in` collects its keys in the runtime and checks each again (a lookup more per
    // key), 6-21% slower than `Object.keys` there. An object of a null prototype is in dictionary
    // mode (Object.create(null), `{ __proto__: null }`: 11-17% faster so) and is told apart for
    // free: it takes `Object.keys` (one given a null prototype by Object.setPrototypeOf keeps fast
    // properties, and pays 30% there instead; rarer). One a key was deleted from, or of hundreds of
    // keys added one by one, is not told from a fast one without a cost of its own (counting keys
    // with `Object.keys` first, more than 16 taking its loop, made the 30-key object 1.9x slower
    // and a key-deleted one 25%): it stays on `for-in`, 10-20% slower than `Object.keys`. (Least
    // and median ns per pack, passes taking turns in one process on a loaded 2-vCPU host, session
    // 35; pack_test's getter table and seeded test cover both loops.) A Proxy's traps run as
    // `for-in`, or `Object.keys` where its prototype is null, and `hasOwn` run them. The count is
    // written after the properties, as the keys left out are not known before.
    putU32(OBJ, 0);
    const at = pos - 4;
    let n = 0;
    if (proto === null) {
      const keys = Object.keys(v);
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        if (!hasOwn.call(v, k)) continue;
        putText(k);
        put((v as Record<string, unknown>)[k]);
        n++;
      }
    } else {
      for (const k in v) {
        if (!hasOwn.call(v, k)) continue;
        putText(k);
        put((v as Record<string, unknown>)[k]);
        n++;
      }
    }
    // No own enumerable property: it may be a real Error given Object.prototype or null (its
    // message, stack and cause are not enumerable), which structured clone copies as an Error
    // (node:v8 does): it came back `{}`. Asked of the engine only here (`Error.isError`, one
    // call), never of an object with properties: ~7 ns a pack of `{}` (74 -> 81), a local
    // trySend + tryReceive of `{}` 3-6% slower (~203 -> ~209 ns), a shared one 2-3% (~276 ->
    // ~282); objects with properties unchanged (least ns, old and new taking turns on a loaded
    // 2-vCPU host, session 43).
    // The other kinds with internal slots are left as they were: the six node:util checks more
    // made a send of `{}` 25-30% slower (README, "Structured values").
    if (n === 0 && realError(v)) throw UNPACKABLE;
    set32(at, n);
    return;
  }
  if (proto === Array.prototype && Array.isArray(v)) {
    const n = arrayLength(v);
    ids.set(v, ids.size);
    putU32(ARR, n);
    for (let i = 0; i < n; i++) {
      const e = v[i];
      if (e === undefined && !(i in v)) throw UNPACKABLE; // a hole
      put(e);
    }
    if (Object.keys(v).length !== n) throw UNPACKABLE; // properties of its own
    return;
  }
  const kind = viewKinds.get(proto);
  if (kind !== undefined) return putView(v, kind);
  if (proto === Map.prototype) return putEntries(v, MAP);
  if (proto === Set.prototype) return putEntries(v, SET);
  if (proto === ArrayBuffer.prototype) return putBuffer(v);
  if (proto === RegExp.prototype) {
    let source: string, flags: string;
    try {
      source = reSource.call(v);
      flags = reFlags.call(v);
    } catch {
      throw UNPACKABLE; // not a RegExp, only inheriting from one
    }
    ids.set(v, ids.size);
    room(1);
    buf[pos++] = REGEXP;
    putText(source);
    putText(flags);
    return;
  }
  if (proto === Date.prototype) {
    let t: number;
    try {
      t = Date.prototype.getTime.call(v);
    } catch {
      throw UNPACKABLE; // not a Date, only inheriting from one
    }
    ids.set(v, ids.size);
    putF64(DATE, t);
    return;
  }
  gaveUpAt = new WeakRef(v);
  throw UNPACKABLE;
}

const engineIsError = (Error as { isError?: (v: unknown) => boolean }).isError;

/**
 * Whether `v` is an Error as the engine knows it, whatever its prototype: `Error.isError` (or
 * node:util's `types.isNativeError` where the runtime has none), which reads no property and
 * runs no Proxy trap (a Proxy is no Error to either).
 */
function realError(v: object): boolean {
  return engineIsError !== undefined ? engineIsError(v) : types.isNativeError(v);
}

/** @ignore The most bytes a structured value takes: a descriptor's length is a uint32. */
export const PACK_MAX = 0xffff_ffff;

/** The bytes the current `pack` may write (its `max`), which its arrays' lengths are held to. */
let limit = PACK_MAX;

/**
 * Past this many elements, an array that is a Proxy must list as many keys (`arrayLength`).
 * `types.isProxy` (~40 ns) is asked of longer arrays only: nothing next to their elements.
 */
const PROVEN_LENGTH = 1 << 16;

/** `pack`'s own errors (its length checks), which a codec names as they are (`packError`). */
const ownErrors = new WeakSet<Error>();

/** @ignore Whether `e` is one of `pack`'s own errors (a bad array length), not a getter's. */
export function packError(e: unknown): e is Error {
  return e instanceof Error && ownErrors.has(e);
}

/**
 * An array's length, read once (a Proxy's trap answers what it likes each time): one that
 * cannot be encoded is refused before any element is read. The loop over the elements ran to
 * the length whatever it was: a Proxy of an array whose `length` trap answered 1e20 (a `get`
 * trap answering for every index) packed until memory ran out, in a send or in `close(cause)`.
 * A length that is no integer from 0 to 2^32-1 (no real array has one) is a TypeError; one
 * whose elements (a byte each at least, after the 5 of the array's tag and length) cannot fit
 * in the bytes left to the value (`limit`) a RangeError when it is a Proxy's (a real array so
 * long is sparse: left to node:v8); and a Proxy claiming over `PROVEN_LENGTH` elements must
 * list that many keys (the check after the loop, made first): else it is left to node:v8,
 * which refuses a Proxy. So the loop runs at most once per element the caller really holds (a
 * Proxy's keys are an array of its own). Holes need no check here: the loop gives up at the
 * first one (`new Array(1e9)` at once).
 */
function arrayLength(v: unknown[]): number {
  const n = v.length;
  // `typeof` first: `>>>` converts, and a symbol or bigint (a Proxy's answer) threw the engine's
  // TypeError, an object's valueOf ran.
  if (typeof n !== "number" || n >>> 0 !== n) {
    throw own(
      new TypeError(
        `Cannot send: an array's length must be an integer up to 2^32-1, received ${describe(n)}`,
      ),
    );
  }
  if (n > limit - pos - 5) {
    // A real array this long has holes (no memory holds its elements): node:v8 writes those
    // it has, as it writes `new Array(2 ** 32 - 1)`. A Proxy claims what it likes.
    if (!types.isProxy(v)) throw UNPACKABLE;
    throw own(
      new RangeError(
        `Cannot send: an array of ${n} elements cannot fit in the ${limit} bytes a value may ` +
          `take, received ${describe(v)}`,
      ),
    );
  }
  if (n > PROVEN_LENGTH && types.isProxy(v) && Object.keys(v).length !== n) throw UNPACKABLE;
  return n;
}

function own(e: Error): Error {
  ownErrors.add(e);
  return e;
}

/**
 * The entries of the Maps and Sets being packed, each one's taken before any is written (a
 * stack: a Map inside one pushes its own above them and takes them off when written).
 */
const entries: unknown[] = [];

/**
 * A Map's entries or a Set's values as they were when it was met, as structured clone copies
 * them: a getter met on the way that adds or deletes entries changes nothing written. They
 * were written as `forEach` met them, which visits entries added on the way and skips those
 * deleted: a getter that added an entry whose value adds another (a counter's) packed until
 * memory ran out, where structured clone copies the one entry.
 */
function putEntries(v: object, tag: number): void {
  try {
    (tag === MAP ? mapSize : setSize).call(v);
  } catch {
    throw UNPACKABLE; // a Proxy, or an object that only inherits from Map or Set
  }
  ids.set(v, ids.size);
  const base = entries.length;
  // No code of the caller's runs in these (the engine's forEach, our callbacks).
  if (tag === MAP) {
    mapForEach.call(v, (value: unknown, key: unknown) => entries.push(key, value));
  } else setForEach.call(v, (value: unknown) => entries.push(value));
  const end = entries.length;
  putU32(tag, tag === MAP ? (end - base) / 2 : end - base);
  for (let i = base; i < end; i++) put(entries[i]);
  entries.length = base;
}

/** An ArrayBuffer: its bytes. Resizable, detached and foreign ones are left to node:v8. */
function putBuffer(v: object): void {
  let len: number;
  try {
    if (abResizable.call(v) || abDetached?.call(v)) throw UNPACKABLE;
    len = abLength.call(v);
  } catch {
    throw UNPACKABLE;
  }
  ids.set(v, ids.size);
  putU32(ABUF, len);
  room(len);
  buf.set(new Uint8Array(v as ArrayBuffer, 0, len), pos);
  pos += len;
}

/** A typed array or DataView of kind `kind`: its buffer (all of it), offset and length. */
function putView(v: object, kind: number): void {
  let buffer: ArrayBuffer, offset: number, length: number;
  const dv = kind === DATA_VIEW;
  try {
    buffer = (dv ? dvBuffer : taBuffer).call(v);
    offset = (dv ? dvOffset : taOffset).call(v);
    length = (dv ? dvLength : taLength).call(v);
  } catch {
    throw UNPACKABLE; // not a view, only inheriting from one
  }
  // The kind is the prototype's, which `Object.setPrototypeOf` can give any typed array: one whose
  // engine type is another (a Float64Array given Uint8Array's prototype) goes to node:v8, which
  // writes its engine type, as structured clone does. Packed under the prototype's kind, with its
  // own element count, it came back as another array (the Float64Array as 2 of its bytes) or
  // failed to unpack ("a view outside its buffer"), the value lost.
  if (!dv && taTag.call(v) !== viewNames[kind]) throw UNPACKABLE;
  if (Object.getPrototypeOf(buffer) !== ArrayBuffer.prototype) throw UNPACKABLE; // shared
  ids.set(v, ids.size);
  room(2);
  buf[pos++] = VIEW;
  buf[pos++] = kind;
  put(buffer); // an ABUF the first time, a REF after (views of one buffer share it)
  room(8);
  set32(pos, offset);
  set32(pos + 4, length);
  pos += 8;
}

/**
 * Packs `value` into the shared buffer (`packed()`): its length in bytes, or -1 when the value
 * holds something this encoding does not copy. Rethrows what a getter threw; throws its own
 * TypeError or RangeError (`packError`) for an array whose length cannot be encoded in `max`
 * bytes (`arrayLength`).
 */
export function pack(value: unknown, max: number = PACK_MAX): number {
  // A getter met while packing may send a value itself: that one goes to node:v8 (this
  // value's buffer and references are in use).
  if (packing) return -1;
  packing = true;
  pos = 0;
  limit = max;
  gaveUpAt = undefined;
  hasLeaf = false;
  leaf = undefined;
  try {
    put(value);
    return pos;
  } catch (e) {
    if (e === UNPACKABLE) return -1;
    throw e;
  } finally {
    packing = false;
    ids.clear();
    entries.length = 0; // a getter's error or UNPACKABLE left a Map's entries on it
    // Keep the bytes until the caller took them (`packed`), and shrink then.
    if (buf.length > KEEP) shrink = true;
  }
}

let packing = false, shrink = false;

/**
 * The object (a class instance, the first one met) that made the last `pack` return -1, if it
 * was one; weakly, as the value it came from is the caller's. A codec names it in its error
 * when node:v8 would copy it into a lifeless plain object (one of kcoro's own, say).
 */
let gaveUpAt: WeakRef<object> | undefined;

/**
 * The function or symbol the last `pack` gave up at (`hasLeaf`), which node:v8 refuses wherever
 * it meets one: the value is refused, and the codec asks node:v8 for its error of that one alone
 * (`refusedLeaf`). Held until taken or the next `pack`.
 */
let leaf: unknown, hasLeaf = false;

/**
 * @ignore The function or symbol the last `pack` that returned -1 gave up at, in a box, and
 * forgotten (so that it is held no longer); undefined when it gave up at something else (or was
 * taken). node:v8 refuses a value holding one with the same error as that one alone ("Symbol(x)
 * could not be cloned."), without reading the value again: its getters, which the packer ran on
 * the way, ran twice per send before (the packer's walk, then node:v8's), where a value the
 * codec refuses now runs them once.
 */
export function refusedLeaf(): { leaf: unknown } | undefined {
  if (!hasLeaf) return undefined;
  const box = { leaf };
  hasLeaf = false;
  leaf = undefined;
  return box;
}

/** The object the last `pack` that returned -1 gave up at, if it gave up at a class instance. */
export function unpackedObject(): object | undefined {
  return gaveUpAt?.deref();
}

/** The bytes of the last `pack` (the first `pack(...)` of them). */
export function packed(): Uint8Array {
  const b = buf;
  if (shrink) {
    shrink = false;
    buf = new Uint8Array(1024);
  }
  return b;
}

// --- reading -------------------------------------------------------------------------------

const NONE: Uint8Array = new Uint8Array(0);
let rbuf: Uint8Array = NONE;
let rpos = 0;
/** Objects, arrays, Dates, RegExps, Maps, Sets, buffers and views read so far, for REF. */
const seen: unknown[] = [];

/** A bigint as `pack` writes it: hex digits, "-" first when negative. */
const BIG_TEXT = /^-?[0-9a-f]+$/;

/** Each of `bad`'s errors, to its reason: `malformedReason`. */
const reasons = new WeakMap<Error, string>();

/**
 * Malformed bytes' TypeError, in the house form: what was received is how many bytes (it said
 * "Cannot receive: a packed value is malformed (<why>)", with no "received"). Its reason is kept
 * apart too (`malformedReason`).
 */
function bad(why: string): never {
  const reason = `a packed value is malformed (${why})`;
  const e = new TypeError(`Cannot receive: ${reason}, received ${rbuf.length} bytes`);
  reasons.set(e, reason);
  throw e;
}

/**
 * The reason of `unpack`'s TypeError for malformed bytes ("a packed value is malformed (<why>)"),
 * without what was received; undefined for any other error. For a caller that says what it
 * received itself (codec.ts's `readStructured`): it took the reason back off the message with a
 * regular expression.
 */
export function malformedReason(e: unknown): string | undefined {
  return e instanceof TypeError ? reasons.get(e) : undefined;
}

/** The int32 at rpos (`>>> 0` for a uint32). */
function get32(): number {
  const at = rpos;
  if (at + 4 > rbuf.length) bad("truncated");
  rpos += 4;
  const b = rbuf;
  return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24;
}

function getU32(): number {
  return get32() >>> 0;
}

function getF64(): number {
  if (rpos + 8 > rbuf.length) bad("truncated");
  for (let i = 0; i < 8; i++) f64Bytes[i] = rbuf[rpos + i];
  rpos += 8;
  return f64[0];
}

/** `len` (1 to 16) ASCII bytes at `at` as a string, without TextDecoder (~150 ns a call). */
function ascii(b: Uint8Array, at: number, len: number): string {
  switch (len) {
    case 1:
      return String.fromCharCode(b[at]);
    case 2:
      return String.fromCharCode(b[at], b[at + 1]);
    case 3:
      return String.fromCharCode(b[at], b[at + 1], b[at + 2]);
    case 4:
      return String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);
    case 5:
      return String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4]);
    case 6:
      return String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]);
    case 7:
      return String.fromCharCode(
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
      );
    case 8:
      return String.fromCharCode(
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
      );
  }
  return ascii(b, at, 8) + ascii(b, at + 8, len - 8);
}

function getText(): string {
  const len = getU32();
  const at = rpos;
  if (at + len > rbuf.length) bad("truncated string");
  rpos += len;
  if (len === 0) return "";
  if (len <= 64) {
    const b = rbuf;
    let high = 0;
    for (let i = 0; i < len; i++) high |= b[at + i];
    if (high < 0x80) return ascii(b, at, len);
  }
  return decodeUtf8(rbuf.subarray(at, at + len));
}

/**
 * Object keys met lately, by a hash of their bytes: a key comes back as the same string object,
 * which V8 has made a property key already (a new string per key cost ~50 ns a property).
 */
const keys: (string | undefined)[] = new Array(512);
/**
 * The last key `getKey` met that `Object.prototype` has (`plainKey` false), which `o[k] = v`
 * must not set: `__proto__` would set the prototype, an accessor put there (a library's, or
 * prototype pollution) would run with the received value and make no property, and a frozen
 * `Object.prototype` (a hardened realm) makes the assignment throw (`{ toString: 1 }` was then
 * lost). Structured clone makes a data property in each case; so does `defineProperty`. Such keys
 * are never cached in `keys`, so each one comes by here again: a key equal to `oddKey` is one.
 * (Whether a key is plain is decided when it is cached: a property added to `Object.prototype`
 * later, under a key already cached, goes unnoticed.) One comparison per key, no store.
 */
let oddKey: string | undefined;

/** A key that no property of `Object.prototype` (own or inherited) shadows. */
function plainKey(k: string): boolean {
  return !(k in Object.prototype);
}

function getKey(): string {
  const start = rpos;
  const len = getU32();
  const at = rpos;
  if (len === 0 || len > 32 || at + len > rbuf.length) {
    rpos = start;
    const k = getText();
    if (!plainKey(k)) oddKey = k;
    return k;
  }
  const b = rbuf;
  let h = len, high = 0;
  for (let i = 0; i < len; i++) {
    const c = b[at + i];
    high |= c;
    h = (h * 31 + c) | 0;
  }
  if (high >= 0x80) {
    rpos = start;
    const k = getText();
    if (!plainKey(k)) oddKey = k;
    return k;
  }
  rpos += len;
  const slot = h & 511;
  const k = keys[slot];
  if (k !== undefined && k.length === len) {
    let i = 0;
    while (i < len && k.charCodeAt(i) === b[at + i]) i++;
    if (i === len) return k;
  }
  const fresh = ascii(b, at, len);
  if (!plainKey(fresh)) return oddKey = fresh; // not cached (see `oddKey`)
  return keys[slot] = fresh;
}

function get(): unknown {
  if (rpos >= rbuf.length) bad("truncated");
  const tag = rbuf[rpos++];
  switch (tag) {
    case UNDEF:
      return undefined;
    case NUL:
      return null;
    case TRUE:
      return true;
    case FALSE:
      return false;
    case INT:
      return get32();
    case DBL:
      return getF64();
    case STR:
      return getText();
    case BIG: {
      const hex = getText();
      // What `pack` writes, nothing else: `BigInt` throws a SyntaxError for other text (and
      // takes some, whitespace around the digits say, that `pack` never writes).
      if (!BIG_TEXT.test(hex)) bad("bigint");
      return hex[0] === "-" ? -BigInt("0x" + hex.slice(1)) : BigInt("0x" + hex);
    }
    case OBJ: {
      const o: Record<string, unknown> = {};
      seen.push(o);
      for (let n = getU32(); n > 0; n--) {
        const k = getKey();
        const odd = k === oddKey; // before `get`, which reads keys of its own
        const v = get();
        // A data property, as structured clone makes (see `oddKey`).
        if (odd) {
          Object.defineProperty(o, k, {
            value: v,
            writable: true,
            enumerable: true,
            configurable: true,
          });
        } else o[k] = v;
      }
      return o;
    }
    case ARR: {
      const n = getU32();
      if (n > rbuf.length - rpos) bad("array longer than its bytes");
      const a = new Array(n);
      seen.push(a);
      for (let i = 0; i < n; i++) a[i] = get();
      return a;
    }
    case DATE: {
      const d = new Date(getF64());
      seen.push(d);
      return d;
    }
    case REGEXP: {
      const source = getText(), flags = getText();
      let r: RegExp;
      try {
        r = new RegExp(source, flags);
      } catch {
        return bad("regular expression");
      }
      seen.push(r);
      return r;
    }
    case MAP: {
      const m = new Map<unknown, unknown>();
      seen.push(m);
      for (let n = getU32(); n > 0; n--) {
        const k = get();
        m.set(k, get());
      }
      return m;
    }
    case SET: {
      const set = new Set<unknown>();
      seen.push(set);
      for (let n = getU32(); n > 0; n--) set.add(get());
      return set;
    }
    case ABUF: {
      const len = getU32();
      if (len > rbuf.length - rpos) bad("buffer longer than its bytes");
      const b = rbuf.slice(rpos, rpos + len).buffer;
      rpos += len;
      seen.push(b);
      return b;
    }
    case VIEW: {
      if (rpos >= rbuf.length) bad("truncated");
      const kind = rbuf[rpos++];
      if (kind >= VIEWS.length) bad(`view kind ${kind}`);
      const at = seen.length;
      seen.push(undefined); // its index, taken before its buffer's (as pack numbered them)
      const buffer = get();
      const offset = getU32(), length = getU32();
      if (!(buffer instanceof ArrayBuffer)) return bad("a view of something else than a buffer");
      const size = viewSizes[kind];
      if (offset % size !== 0 || offset + length * size > buffer.byteLength) {
        bad("a view outside its buffer");
      }
      return seen[at] = new VIEWS[kind](buffer, offset, length);
    }
    case REF: {
      const i = getU32();
      if (i >= seen.length) bad(`reference ${i} to nothing`);
      return seen[i];
    }
  }
  return bad(`tag ${tag}`);
}

/** The value `pack` wrote into `bytes`. */
export function unpack(bytes: Uint8Array): unknown {
  rbuf = bytes;
  rpos = 0;
  try {
    const v = get();
    if (rpos !== bytes.length) bad("bytes left over");
    return v;
  } finally {
    seen.length = 0;
    rbuf = NONE; // not holding the received bytes
  }
}

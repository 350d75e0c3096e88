/**
 * @internal A compact encoding of plain data for values that cross isolates through native
 * memory: what structured clone copies of undefined, null, booleans, numbers, strings, bigints,
 * Dates, plain objects and dense arrays, with shared and circular references kept. It is
 * written by hand into one reused buffer: `node:v8`'s `serialize` costs ~5 µs for `{ a: 1 }` on
 * these machines and allocates for every value, this ~0.1 µs. Anything else (a Map, a Set, a
 * typed array, a class instance, an array with holes or properties of its own, ...) makes
 * `pack` answer -1, and the codec serialises the value with `node:v8` instead. A value packed
 * here is read back only by `unpack`: its descriptor has a tag of its own.
 *
 * Format: one tag byte per value, then (little-endian) INT int32; DBL float64; STR, BIG (hex
 * digits, "-" first when negative) and object keys a uint32 byte count and UTF-8; OBJ a
 * uint32 key count, then each key and its value; ARR a uint32 length, then the elements; DATE
 * float64 time; REF a uint32 index of an earlier object, array or Date (in the order they
 * began).
 *
 * Unlike structured clone, a Proxy of a plain object is copied through its traps (structured
 * clone refuses it), and a getter that runs before `pack` gives up runs again in `node:v8`.
 *
 * @module
 */

const UNDEF = 0, NUL = 1, TRUE = 2, FALSE = 3, INT = 4, DBL = 5, STR = 6, OBJ = 7, ARR = 8;
const BIG = 9, DATE = 10, REF = 11;

/** Thrown inside `pack` for a value it does not copy. */
const UNPACKABLE = Symbol("unpackable");

/** The buffer `pack` writes into; shrunk back after a value that grew it past `KEEP`. */
let buf = new Uint8Array(1024);
let pos = 0;
/** Doubles go through these (a DataView per buffer cost more than the copy). */
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const KEEP = 1 << 20;
/** Objects, arrays and Dates met so far in this value: their indices, for REF. */
const ids = new Map<object, number>();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

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
  throw UNPACKABLE; // functions and symbols: node:v8 names the error
}

function putObject(v: object): void {
  const id = ids.get(v);
  if (id !== undefined) return putU32(REF, id);
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    ids.set(v, ids.size);
    const keys = Object.keys(v);
    putU32(OBJ, keys.length);
    for (let i = 0; i < keys.length; i++) {
      putText(keys[i]);
      put((v as Record<string, unknown>)[keys[i]]);
    }
    return;
  }
  if (proto === Array.prototype && Array.isArray(v)) {
    ids.set(v, ids.size);
    const n = v.length;
    putU32(ARR, n);
    for (let i = 0; i < n; i++) {
      const e = v[i];
      if (e === undefined && !(i in v)) throw UNPACKABLE; // a hole
      put(e);
    }
    if (Object.keys(v).length !== n) throw UNPACKABLE; // properties of its own
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
  throw UNPACKABLE;
}

/**
 * Packs `value` into the shared buffer (`packed()`): its length in bytes, or -1 when the value
 * holds something this encoding does not copy. Rethrows what a getter threw.
 */
export function pack(value: unknown): number {
  // A getter met while packing may send a value itself: that one goes to node:v8 (this
  // value's buffer and references are in use).
  if (packing) return -1;
  packing = true;
  pos = 0;
  try {
    put(value);
    return pos;
  } catch (e) {
    if (e === UNPACKABLE) return -1;
    throw e;
  } finally {
    packing = false;
    ids.clear();
    // Keep the bytes until the caller took them (`packed`), and shrink then.
    if (buf.length > KEEP) shrink = true;
  }
}

let packing = false, shrink = false;

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
/** Objects, arrays and Dates read so far in this value, for REF. */
const seen: unknown[] = [];

function bad(why: string): never {
  throw new TypeError(`Cannot receive: a packed value is malformed (${why})`);
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
  return decoder.decode(rbuf.subarray(at, at + len));
}

/**
 * Object keys met lately, by a hash of their bytes: a key comes back as the same string object,
 * which V8 has made a property key already (a new string per key cost ~50 ns a property).
 */
const keys: (string | undefined)[] = new Array(512);

function getKey(): string {
  const start = rpos;
  const len = getU32();
  const at = rpos;
  if (len === 0 || len > 32 || at + len > rbuf.length) {
    rpos = start;
    return getText();
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
    return getText();
  }
  rpos += len;
  const slot = h & 511;
  const k = keys[slot];
  if (k !== undefined && k.length === len) {
    let i = 0;
    while (i < len && k.charCodeAt(i) === b[at + i]) i++;
    if (i === len) return k;
  }
  return keys[slot] = ascii(b, at, len);
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
      return hex[0] === "-" ? -BigInt("0x" + hex.slice(1)) : BigInt("0x" + hex);
    }
    case OBJ: {
      const o: Record<string, unknown> = {};
      seen.push(o);
      for (let n = getU32(); n > 0; n--) {
        const k = getKey();
        const v = get();
        // A data property, as structured clone makes: `o.__proto__ = v` would set the prototype.
        if (k === "__proto__") {
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

/**
 * Codecs: how a {@linkcode Channel}'s values become the bytes of a native channel slot.
 *
 * - `codecs.f64` (numbers) and `codecs.u64` (bigints 0 .. 2^64-1) travel as 8 raw bytes in a
 *   copying channel: no tag, no allocation.
 * - `codecs.bytes` (Uint8Array), `codecs.string` (UTF-8) and `codecs.structured` (what
 *   structured clone copies: plain data packed by `src/pack.ts`, anything else serialised with
 *   `node:v8`) travel in zero-copy channels: the value's bytes are copied once into native memory
 *   (`kc_desc_make`; up to 16 KiB into the buffer pool) and the 32-byte descriptor moves through
 *   the channel. A received Uint8Array is a view of that native memory (no second copy; a pooled
 *   one shares its chunk's ArrayBuffer), freed when no view is left; strings and structured
 *   values are decoded from the view, then freed.
 * - `codecs.default` tags each value: numbers, bigints in the signed 64-bit range, booleans,
 *   null and undefined travel in the descriptor itself; strings as UTF-8; Uint8Array zero-copy;
 *   anything else structured-cloned.
 *
 * @example
 * ```ts
 * import { Channel, codecs } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using ch = new Channel<number>(4, { codec: codecs.f64 });
 * ch.trySend(1.5);
 * assert.deepEqual(ch.tryReceive(), { state: "ok", value: 1.5 });
 * assert.equal(codecs.f64.name, "f64");
 * ```
 *
 * @module
 */
import v8 from "node:v8";
import { types } from "node:util";
import { markAsUntransferable } from "node:worker_threads";
import type { Library } from "../ffi/load.ts";
import { type ChunkBuffers, chunkBuffers, chunkBuffersProblem } from "../ffi/napi.ts";
import { customInspect, inspectAs, notA, putAt } from "./inspect.ts";
import {
  brandOf,
  CancellationError,
  ClosedReceiveError,
  ClosedSendError,
  CodecError,
  CompletionHandlerError,
  describe,
  headOf,
  nameInstances,
  ownErrorKind,
  refuseCloneOf,
  refusedByClone,
  refusedClass,
  Status,
  statusName,
  TimeoutError,
} from "./errors.ts";
import {
  bytesLength,
  decodePiece,
  decoder as utf8,
  decodeUtf8,
  isDetached,
  malformedReason,
  pack,
  PACK_MAX,
  packed,
  packError,
  refusedLeaf,
  typedBuffer,
  unpack,
  unpackedObject,
} from "./pack.ts";

type Sym = ReturnType<Library["symbols"]>;

/** The names of the built-in codecs (what `share()` records). */
export type CodecName = "default" | "f64" | "u64" | "bytes" | "string" | "structured";

/**
 * How a channel carries its values. Use one of {@linkcode codecs}; the methods are internal
 * (they are called with a slot of the channel and the library's symbols).
 */
export interface Codec<T> {
  /** The codec's name, e.g. `"f64"`. */
  readonly name: CodecName;
  /** Bytes per native slot: 8, or 32 (a `struct kc_desc`). */
  readonly elemSize: 8 | 32;
  /** True when the channel carries descriptors (KC_CHAN_ZERO_COPY). */
  readonly zeroCopy: boolean;
  /**
   * @ignore Writes `value` into `slot` (may allocate a native buffer). `op` names the call in its
   * errors ("Cannot <op>: ..."), a value the codec cannot carry, too large or with no native
   * memory for it: a batch's (`trySendMany`); a send's when absent.
   */
  encode(value: T, slot: Slot, sym: Sym, op?: string): void;
  /** @ignore Reads the value in `slot`, taking ownership of its native buffer. */
  decode(slot: Slot, sym: Sym): T;
  /** @ignore Frees the native buffer of a slot that was encoded but never sent. */
  discard(slot: Slot, sym: Sym): void;
  /**
   * @ignore The value a same-isolate receiver gets without a native round trip. `op` names the
   * call in the error of a value the codec cannot carry, as `encode`'s.
   */
  pass(value: T, op?: string): T;
  /**
   * @ignore Throws what `encode` would throw for `value` and answers true, without native
   * memory, where that can be told cheaply; false where only encoding can tell (a structured
   * value). A send that fails anyway (full) then copies nothing into native memory. `op` names
   * the call in its errors, as `encode`'s.
   */
  check(value: T, op?: string): boolean;
}

/** @ignore A native slot (32 bytes) with views of its words. */
export class Slot {
  readonly u8: Uint8Array<ArrayBuffer>;
  /**
   * The slot's address, for a slot that lives as long as its module (`pinned`, or `pin()`
   * later), else null: a typed array as an FFI argument costs ~20 ns per call, taking its
   * address once ~0.4 µs.
   */
  readonly ptr: Deno.PointerValue | null = null;
  /** `ptr` as a number for a native struct field (0n when not pinned). */
  readonly addr: bigint = 0n;
  #u32?: Uint32Array<ArrayBuffer>;
  #f64?: Float64Array<ArrayBuffer>;
  #i64?: BigInt64Array<ArrayBuffer>;
  #u64?: BigUint64Array<ArrayBuffer>;

  constructor(buffer: ArrayBuffer = new ArrayBuffer(32), pinned = false) {
    this.u8 = new Uint8Array(buffer);
    if (pinned) this.pin();
  }

  /**
   * Takes the slot's address (`ptr`, `addr`) if it has none yet: needs `--allow-ffi` (a
   * NotCapable without it), so a slot made at a module's load is pinned only once the library
   * is first opened (`beforeFirstOpen` in ffi/load.ts), never at import.
   */
  pin(): void {
    if (this.ptr !== null) return;
    // An ArrayBuffer's backing store never moves once it has been handed out by address.
    const ptr = Deno.UnsafePointer.of(this.u8);
    const addr = BigInt(Deno.UnsafePointer.value(ptr));
    // Set once, here: readonly to everything else.
    (this as { addr: bigint }).addr = addr;
    (this as { ptr: Deno.PointerValue | null }).ptr = ptr;
  }

  get u32(): Uint32Array<ArrayBuffer> {
    return this.#u32 ??= new Uint32Array(this.u8.buffer);
  }
  get f64(): Float64Array<ArrayBuffer> {
    return this.#f64 ??= new Float64Array(this.u8.buffer);
  }
  get i64(): BigInt64Array<ArrayBuffer> {
    return this.#i64 ??= new BigInt64Array(this.u8.buffer);
  }
  get u64(): BigUint64Array<ArrayBuffer> {
    return this.#u64 ??= new BigUint64Array(this.u8.buffer);
  }
}

/**
 * Pinned slots, reused from one wait (or select) to the next: a fresh one costs ~1 µs (a new
 * ArrayBuffer handed to native code) and taking its address ~0.4 µs. Native code only reads or
 * writes a slot during a call (a queued operation keeps its own copy), so a slot is free again
 * once its owner is done with what it holds: `giveSlot`, at most once per `takeSlot`.
 */
const freeSlots: Slot[] = [];
const FREE_SLOTS_MAX = 256;

/** @ignore How many slots `takeSlot` had to make (for tests). */
export const slotsMade = { count: 0 };

/** @ignore A pinned slot from the free list, or a new one. */
export function takeSlot(): Slot {
  const slot = freeSlots.pop();
  if (slot !== undefined) return slot;
  slotsMade.count++;
  return new Slot(new ArrayBuffer(32), true);
}

/** @ignore Gives back a slot from `takeSlot` that nothing reads or writes any more. */
export function giveSlot(slot: Slot): void {
  if (freeSlots.length < FREE_SLOTS_MAX) freeSlots.push(slot);
}

// Descriptor words (struct kc_desc): 0 ptr, 1 len, 2 release (always 0 here), 3 ctx. The forms
// include/kcoro.h documents for C receivers ("What TypeScript sends"):
// - a buffer descriptor: ptr, len, ctx = its tag (T_STRING, T_BYTES: KC_TAG_STRING and
//   KC_TAG_BYTES there; T_STRUCTURED, T_PACKED: KC_TAG_STRUCTURED and KC_TAG_PACKED, opaque to C);
// - an empty string or bytes (`putEmpty`): no buffer, len 0, ctx = T_STRING or T_BYTES, as
//   kc_desc_make of 0 bytes makes it;
// - the default codec's inline values (`putInline`): no buffer, len = their kind (T_NUMBER ..
//   T_UNDEFINED, never 0: not a length), ctx = the payload (0 for the kinds without one).
// The native side counts 0 bytes for a descriptor without a buffer. Until ABI 23 an empty string
// or bytes was inline too (kind 7 or 8), which a C receiver read as 7 or 8 bytes at NULL.
const T_NUMBER = 1, T_BIGINT = 2, T_TRUE = 3, T_FALSE = 4, T_NULL = 5, T_UNDEFINED = 6;
const T_STRING = 16, T_BYTES = 17, T_STRUCTURED = 18, T_PACKED = 19;

const I64_MIN = -(2n ** 63n), I64_MAX = 2n ** 63n - 1n, U64_MAX = 2n ** 64n - 1n;

const encoder = new TextEncoder();
/**
 * One function per codec for every string receive (a closure per call would be made each
 * time): up to `decodePiece` bytes (pack.ts's `DECODE_MAX`; tests lower it) one `TextDecoder`
 * call, with no try and no further call on the common path. Longer bytes go in pieces
 * (`decodeUtf8`); past the engine's longest string a CodecError, not its RangeError (C code's
 * bytes: a string sent from JavaScript decodes).
 */
const decodeText = (codec: string) => (b: Uint8Array): string =>
  b.length <= decodePiece ? utf8.decode(b) : decodeLong(codec, b);

/** `decodeText`'s bytes longer than one `TextDecoder` call takes. */
function decodeLong(codec: string, b: Uint8Array): string {
  try {
    return decodeUtf8(b);
  } catch (e) {
    throw new CodecError(
      codec,
      `Cannot receive: the string's UTF-8 bytes make a longer string than the engine holds (${
        e instanceof Error ? e.message : String(e)
      }), received ${b.length} bytes`,
      { cause: e },
    );
  }
}
const decodeString = decodeText("string"), decodeDefault = decodeText("default");

/**
 * An isolate's ArrayBuffer over one chunk of the library's buffer pool (`kc_pool_info`), and
 * how many received values are views of it: when the ArrayBuffer is garbage (no view of it is
 * left) those are freed at once (`kc_pool_release`).
 */
interface ChunkHold {
  sym: Sym;
  chunk: Deno.PointerValue;
  /** The chunk's index in the pool (its entry in `PoolView.counts`). */
  index: number;
  /** The chunk's address as a number (`receiveAt` takes a value's offset in it). */
  start: number;
  views: number;
  pool: PoolView;
  /**
   * A releasable chunk buffer's (made by the Node-API companion once `releaseBytes` was called,
   * see there): the companion's counts and this buffer's entry in them (its finaliser gives
   * back what the entry counts), and over the chunk's 16-byte slots (`POOL_SLICE_ALIGN`) two
   * bitmaps, the values received at each slot (words `0 .. n/2`) and those released
   * (`n/2 .. n`). Null and -1 for a buffer the collector's `chunkHolds` finaliser gives back.
   */
  counts: Uint32Array | null;
  slot: number;
  bits: Uint32Array | null;
  /** Views of a releasable buffer released (`releaseBytes`); when all are, it is retired. */
  released: number;
  /** A releasable buffer's hold registered in `releasableHolds` (the isolate moved on from it). */
  watched: boolean;
}

/**
 * @ignore The buffer pool's slice alignment (zig-src/bridge/pool.zig `slice_align`, whose
 * comptime assertion names this): every pooled value starts at a multiple of it in its chunk, so
 * a releasable hold's bitmaps keep one bit per slot of this many bytes. The shifts by 4 in
 * `receivedAt` and `releaseBytes` are its log2, literal there (`releaseBytes` stays small enough
 * for V8 to inline). tests/release_test.ts compares it with the native step between two slices.
 */
export const POOL_SLICE_ALIGN = 16;

/**
 * @ignore Throws unless `align` is what the literal shifts and masks (4, 15) below take it to
 * be: their log2 and mask. Run on `POOL_SLICE_ALIGN` at load, so that a change to it alone fails
 * there instead of releasing the wrong slots. In the house form ("Cannot <op>: <reason>,
 * received <x>"); it said "kcoro: POOL_SLICE_ALIGN must be ...". Exported for
 * tests/release_test.ts.
 */
export function checkSliceAlign(align: number): void {
  if (align === 1 << 4) return;
  throw new RangeError(
    "Cannot load kcoro's codecs: POOL_SLICE_ALIGN must be 16 (1 << 4), as receivedAt and " +
      `releaseBytes shift by 4, received ${describe(align)}`,
  );
}
checkSliceAlign(POOL_SLICE_ALIGN);

const chunkHolds = new FinalizationRegistry<ChunkHold>((hold) => {
  if (hold.views === 0) return;
  hold.pool.pinned--;
  // The thread's table first: a Worker terminated between the two steps then strands these
  // views (as before the table) instead of having its thread's end free them a second time.
  const counts = hold.pool.counts;
  if (counts !== null) counts[hold.index] -= hold.views;
  try {
    if (hold.sym.kc_pool_release(hold.chunk, hold.views) !== 0 && counts !== null) {
      counts[hold.index] += hold.views; // not freed (a count it could not hold)
    }
  } catch {
    // The library was closed: these views cannot be freed through it. Counted again, so that
    // at least a Worker's thread end frees them.
    if (counts !== null) counts[hold.index] += hold.views;
  }
});

/**
 * The most chunks (128 KiB each) an isolate's received views may pin at once. Chunks come back
 * only when the finalisation callbacks run, between tasks: an isolate that receives in a loop
 * that never yields would otherwise pin every chunk it meets, then the whole pool, then malloc'd
 * buffers without end. Past this many, a received value is copied into JavaScript memory (a
 * view of a slab, `slabCopy`, which the collector frees by itself) and its slice freed at once.
 * A stream that yields now and then pins far fewer (tens to hundreds here). Releasable chunk
 * buffers count too, from their making to their retire or collection (`releasableHolds`): their
 * finaliser runs on the collector's threads, but one that is dropped unreleased in a loop that
 * never yields is not collected before the loop yields either.
 */
const PINNED_MAX = 1024;

/** The buffer pool's region as one library reports it, with this isolate's chunk buffers. */
interface PoolView {
  readonly base: number;
  readonly size: number;
  readonly chunk: number;
  /** Per chunk: its ArrayBuffer, held weakly (the views hold it), and that buffer's hold. */
  readonly buffers: (WeakRef<ArrayBuffer> | undefined)[];
  readonly holds: (ChunkHold | undefined)[];
  /** Chunks this isolate's views pin now (holds with views whose buffer was not collected). */
  pinned: number;
  /**
   * This thread's view counts per chunk in native memory (`kc_pool_views`), kept beside the
   * holds' counts: when a Worker terminates its finalisers never run, and the library frees
   * what this table still counts as its thread ends, so those chunks are carved again. Null if
   * the table could not be made (the chunks are then stranded, as before it).
   */
  readonly counts: Uint32Array | null;
  /**
   * Where releasable chunk buffers come from once this isolate called `releaseBytes`: the
   * Node-API companion bound to this pool's library (undefined: not loaded yet, null: it could
   * not be, see `releaseUnavailable`).
   */
  releasable: ChunkBuffers | null | undefined;
  /** The chunk of the last value viewed (-1: none), its buffer and hold. */
  lastChunk: number;
  lastBuffer: ArrayBuffer | undefined;
  lastHold: ChunkHold | undefined;
}

/**
 * Each library's pool, and each pool by its base. A library reopened (closeLibrary, then
 * library()) is the same loaded library (it stays loaded once opened) with the same pool: one
 * view of it, not one per `Library`. Before, the view of a closed library lived on with the
 * chunk buffer it kept (`lastBuffer`), which stranded that chunk for good, once per close.
 */
const pools = new WeakMap<Sym, PoolView | null>();
const poolsByBase = new Map<number, PoolView>();
let lastSym: Sym | undefined, lastPool: PoolView | null = null;

/** The pool of the library `sym` belongs to (null: it has none, every buffer is malloc'd). */
function poolOf(sym: Sym): PoolView | null {
  if (sym === lastSym) return lastPool;
  let pool = pools.get(sym);
  if (pool === undefined) {
    const out = new BigUint64Array(4);
    pool = sym.kc_pool_info(out) !== 0 ? null : poolsByBase.get(Number(out[0])) ?? {
      base: Number(out[0]),
      size: Number(out[1]),
      chunk: Number(out[2]),
      buffers: [],
      holds: [],
      pinned: 0,
      counts: viewCounts(sym, Number(out[1]) / Number(out[2])),
      releasable: undefined,
      lastChunk: -1,
      lastBuffer: undefined,
      lastHold: undefined,
    };
    pools.set(sym, pool);
    if (pool !== null) poolsByBase.set(pool.base, pool);
  }
  lastSym = sym;
  return lastPool = pool;
}

/** This thread's table of view counts per pool chunk (`kc_pool_views`), null if none. */
function viewCounts(sym: Sym, chunks: number): Uint32Array | null {
  const out = new BigUint64Array(1);
  if (sym.kc_pool_views(out) !== 0 || out[0] === 0n) return null;
  const at = Deno.UnsafePointer.create(out[0]);
  return new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(at!, chunks * 4));
}

/**
 * A view of the `len` bytes at address `at` if they lie in the buffer pool (counted as one more
 * view of their chunk's buffer when `counted`), else null. Counted past `PINNED_MAX` pinned
 * chunks, a copy of them, their slice freed.
 */
function poolView(sym: Sym, at: number, len: number, counted: boolean): Uint8Array | null {
  const pool = poolOf(sym);
  if (pool === null) return null;
  const off = at - pool.base;
  if (off < 0 || off >= pool.size) return null;
  const c = Math.floor(off / pool.chunk);
  let buffer: ArrayBuffer | undefined, hold: ChunkHold;
  let mapped = false; // a new buffer over the chunk in this call
  if (c === pool.lastChunk && !isDetached(pool.lastBuffer!)) {
    // Most values follow one from the same chunk: its buffer is held until another chunk's
    // value comes (one chunk per isolate stays mapped a little longer).
    buffer = pool.lastBuffer!;
    hold = pool.lastHold!;
  } else {
    buffer = pool.buffers[c]?.deref();
    // A chunk buffer the caller transferred or detached (`value.buffer.transfer()`): a new one
    // for the values to come, which would otherwise be lost to a TypeError.
    if (buffer !== undefined && isDetached(buffer)) buffer = undefined;
    if (buffer === undefined) {
      // Past PINNED_MAX pinned, the collector's kind, which copies each value (see below): a
      // releasable buffer no value was released from pins its chunk until it is collected,
      // and in a loop that never yields that is never (a WeakRef's target, and a `deref()`'s,
      // is kept alive to the end of the job, whatever else reaches it).
      const made = releasing && pool.pinned < PINNED_MAX ? releasableBuffer(pool, sym, c) : null;
      buffer = mapChunk(pool, sym, c, made);
      hold = pool.holds[c]!;
      mapped = true;
    } else hold = pool.holds[c]!;
    const prev = pool.lastHold, prevBuffer = pool.lastBuffer;
    pool.lastChunk = c;
    pool.lastBuffer = buffer;
    pool.lastHold = hold;
    if (prev !== undefined && prev !== hold && prev.bits !== null) {
      // The isolate moved on from a releasable chunk: retired if it released every value it
      // received from it, else pinned until its buffer is collected.
      if (prev.views !== 0 && prev.released === prev.views) retire(prev, prevBuffer!);
      else if (!prev.watched) {
        prev.watched = true;
        releasableHolds.register(prevBuffer!, prev, prev);
      }
    }
  }
  if (counted) {
    if (
      hold.views === 0 && hold.bits === null && releasing && !mapped && pool.pinned < PINNED_MAX
    ) {
      // A buffer of the collector's kind that no received value is a view of: met past the cap
      // (its values so far came as copies, their slices freed) or by an uncounted read, in an
      // isolate that asked for releasable values. It pins nothing and counts nothing (not in
      // `pinned`, the thread's table or a finaliser's count: `chunkHolds`' does nothing for no
      // views), so a releasable buffer over the whole chunk takes its place for this value and
      // the chunk's next ones; offsets stay the chunk's, as for every chunk buffer. The old one
      // is left to the collector (no value reaches it: copies are not its views). Without this,
      // a chunk met past the cap that is still the current one when the count falls back
      // under it gave ordinary views, which `releaseBytes` cannot release, to its end.
      const made = releasableBuffer(pool, sym, c);
      if (made !== null) {
        buffer = mapChunk(pool, sym, c, made);
        hold = pool.holds[c]!;
        pool.lastBuffer = buffer;
        pool.lastHold = hold;
      }
    }
    if (hold.bits !== null) {
      // Releasable: counted in `PINNED_MAX` from its buffer's making to its retire or collection
      // (the companion's finaliser gives the views back whenever it runs).
      hold.views++;
      receivedAt(hold, off - c * pool.chunk);
      return new Uint8Array(buffer, off - c * pool.chunk, len);
    }
    if (hold.views === 0) {
      if (pool.pinned >= PINNED_MAX) {
        // A new chunk to pin, with PINNED_MAX pinned already: a copy in JavaScript memory
        // instead, and the slice freed at once (no view of it counts).
        const copy = slabCopy(len);
        copy.set(new Uint8Array(buffer, off - c * pool.chunk, len));
        sym.kc_pool_release(hold.chunk, 1);
        return copy;
      }
      pool.pinned++;
    }
    hold.views++;
    if (pool.counts !== null) pool.counts[c]++;
  }
  return new Uint8Array(buffer, off - c * pool.chunk, len);
}

/**
 * Maps chunk `c` of `pool`: a new buffer over it and its hold, set in `pool.buffers[c]` and
 * `pool.holds[c]`; returns the buffer. `made`: a releasable buffer from the companion, or null
 * for one of the collector's kind.
 */
function mapChunk(
  pool: PoolView,
  sym: Sym,
  c: number,
  made: { buffer: ArrayBuffer; slot: number } | null,
): ArrayBuffer {
  const chunk = Deno.UnsafePointer.create(BigInt(pool.base + c * pool.chunk));
  let buffer: ArrayBuffer;
  // One shape of hold for both kinds (a releasable one has counts, slot and bits).
  const hold: ChunkHold = {
    sym,
    chunk,
    index: c,
    start: pool.base + c * pool.chunk,
    views: 0,
    pool,
    counts: made === null ? null : pool.releasable!.counts,
    slot: made === null ? -1 : made.slot,
    // Two bitmaps of a bit per slot, in 32-bit words.
    bits: made === null
      ? null
      : freeBits.pop() ?? staleBits(pool, c) ?? new Uint32Array(pool.chunk / POOL_SLICE_ALIGN / 16),
    released: 0,
    watched: false,
  };
  if (made !== null) {
    // Releasable (see `releaseBytes`): the companion's finaliser, a deleter of the buffer's
    // backing store, gives back what counts[slot] counts exactly when no ArrayBuffer can
    // reach the chunk any more, so a transfer of it is safe (the moved buffer keeps the
    // chunk). Neither `chunkHolds` nor the thread's table: the finaliser also runs as a
    // Worker's thread ends, and would free a second time what the table counts.
    buffer = made.buffer;
    ReleasableHold.attach(buffer, hold);
    // Pinned until `retire` gives the chunk back or the buffer is collected (watched from
    // when the isolate moves on from it unretired: the last buffer is held by `pool`).
    pool.pinned++;
  } else {
    buffer = Deno.UnsafePointerView.getArrayBuffer(chunk!, pool.chunk);
    // A transfer would move the chunk out from under its hold, which the finaliser of this
    // (then detached) buffer releases: the moved one would alias the recycled chunk, other
    // channels' values included. Refused instead (`transfer()` and postMessage throw).
    markAsUntransferable(buffer);
    chunkHolds.register(buffer, hold);
  }
  pool.buffers[c] = new WeakRef(buffer);
  pool.holds[c] = hold;
  return buffer;
}

// --- Explicit release of received pooled values (`releaseBytes`). ------------------------------

/** This isolate called `releaseBytes`: chunk buffers made from now on are releasable. */
let releasing = false;
/** Returns the object it is given: a subclass's fields are then added to that object. */
class Stamped {
  constructor(target: object) {
    return target;
  }
}

/**
 * Each releasable chunk buffer's hold, as a private field of the buffer: null once `retire`
 * detached it, undefined once a buffer the caller transferred was forgotten (and on every other
 * ArrayBuffer, which lacks the field). A private field, not a WeakMap: the map's insert of a
 * new key and its second set at the retire cost ~500 ns per chunk (~4 ns per 1 KiB value of a
 * stream), the field's add ~nothing; nothing outside this class can see or change it, it is not
 * cloned nor moved by a transfer, and it goes with the buffer.
 */
class ReleasableHold extends Stamped {
  #hold: ChunkHold | null | undefined;

  private constructor(buffer: ArrayBuffer, hold: ChunkHold) {
    super(buffer);
    this.#hold = hold;
  }

  /** Gives `buffer`, a releasable chunk buffer just made, its hold. */
  static attach(buffer: ArrayBuffer, hold: ChunkHold): void {
    new ReleasableHold(buffer, hold);
  }

  /** `buffer`'s hold: undefined if it is not a releasable chunk buffer or was forgotten. */
  static of(buffer: ArrayBuffer): ChunkHold | null | undefined {
    return #hold in buffer ? (buffer as unknown as ReleasableHold).#hold : undefined;
  }

  /** Sets a releasable chunk buffer's hold (null: retired; undefined: forgotten). */
  static set(buffer: ArrayBuffer, hold: null | undefined): void {
    (buffer as unknown as ReleasableHold).#hold = hold;
  }
}
/**
 * Releasable chunk buffers the isolate moved on from unretired: each is one of `PoolView.pinned`
 * until `retire` or its collection. Only the count: the companion's finaliser gives the chunk's
 * views back. Registered only then, so that a stream released as it goes, each chunk retired
 * as the isolate moves on, registers none (a registration and its removal per chunk).
 */
const releasableHolds = new FinalizationRegistry<ChunkHold>((hold) => {
  hold.pool.pinned--;
});
/** Bitmaps of retired holds, cleared, for the next releasable buffers. */
const freeBits: Uint32Array[] = [];
/** Why releasable chunk buffers cannot be made here (the companion's load error), or null. */
let unavailable: string | null = null;

/** Counts one more view of a releasable hold's buffer, the value at chunk offset `off`. */
function receivedAt(hold: ChunkHold, off: number): void {
  const s = off >>> 4; // its slot (POOL_SLICE_ALIGN bytes)
  hold.bits![s >>> 5] |= 1 << (s & 31);
  hold.counts![hold.slot]++;
}

/**
 * The bitmaps of chunk `c`'s previous releasable hold if its buffer was collected (no value can
 * reach them), cleared; else null. A hold stays in `pool.holds` until its chunk is mapped again,
 * so this bounds the bitmaps of holds never released to one per chunk ever mapped.
 */
function staleBits(pool: PoolView, c: number): Uint32Array | null {
  const old = pool.holds[c];
  if (old === undefined || old.bits === null || pool.buffers[c]?.deref() !== undefined) return null;
  const bits = old.bits;
  old.bits = null;
  return bits.fill(0);
}

/** A releasable buffer over chunk `c` from the Node-API companion, or null (use the other). */
function releasableBuffer(
  pool: PoolView,
  sym: Sym,
  c: number,
): { buffer: ArrayBuffer; slot: number } | null {
  if (pool.releasable === undefined) loadReleasable(pool, sym);
  if (pool.releasable === null) return null;
  // Null when the companion's table of buffers is full: the collector's kind then.
  return pool.releasable!.create(pool.base + c * pool.chunk, pool.chunk);
}

function loadReleasable(pool: PoolView, sym: Sym): void {
  let made: ChunkBuffers | null = null;
  try {
    made = chunkBuffers(sym);
  } catch (e) {
    unavailable = e instanceof Error ? e.message : String(e);
  }
  if (made === null && unavailable === null) unavailable = chunkBuffersProblem() ?? "unknown";
  pool.releasable = made;
}

/**
 * Detaches a releasable chunk buffer whose received values were all released: the companion's
 * finaliser runs inside `transfer(0)` and gives the chunk's views back at once (the chunk is
 * carved again while its memory is still in cache). Every view of the buffer reads as empty
 * from then on. A buffer the caller detached already (a `transfer()` of it) is only forgotten:
 * the moved buffer's finaliser gives the views back when it is collected.
 */
function retire(hold: ChunkHold, buffer: ArrayBuffer): void {
  const pool = hold.pool;
  if (pool.holds[hold.index] === hold) {
    pool.buffers[hold.index] = undefined;
    pool.holds[hold.index] = undefined;
  }
  if (pool.lastHold === hold) {
    pool.lastChunk = -1;
    pool.lastBuffer = undefined;
    pool.lastHold = undefined;
  }
  pool.pinned--; // counted since its buffer was made (`poolView`)
  if (hold.watched) {
    hold.watched = false;
    releasableHolds.unregister(hold);
  }
  hold.views = 0;
  hold.released = 0;
  const bits = hold.bits!;
  hold.bits = null;
  bits.fill(0);
  freeBits.push(bits);
  if (isDetached(buffer)) {
    ReleasableHold.set(buffer, undefined);
    return;
  }
  ReleasableHold.set(buffer, null);
  // The engine's transfer, not the buffer's: the caller may have given the buffer (a received
  // value's `.buffer`) another prototype, or patched ArrayBuffer.prototype.transfer; either
  // made this throw in the receive that moved on (the value taken, then lost) or in
  // releaseBytes, with the buffer left attached and its hold already cleared.
  abTransfer.call(buffer, 0);
}

/** ArrayBuffer.prototype.transfer as the engine made it (see `retire`). */
const abTransfer = ArrayBuffer.prototype.transfer;

const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype);
const typedTag = Object.getOwnPropertyDescriptor(typedArrayProto, Symbol.toStringTag)!.get!;
const typedOffset = Object.getOwnPropertyDescriptor(typedArrayProto, "byteOffset")!.get!;

/**
 * Says that this isolate is done with `value`, a `Uint8Array` it received from a channel
 * (`codecs.bytes`, or a `Uint8Array` through `codecs.default`), so that the pool chunk it shares
 * with other received values can be carved again at once, while its memory is still in cache,
 * instead of when the garbage collector finds the chunk's buffer unreachable (hundreds of
 * chunks later in a stream).
 *
 * The first call switches this isolate to releasable chunk buffers (made by kcoro's Node-API
 * companion library, `kcoro_napi.node`, beside libkcoro; it needs `--allow-ffi` and
 * `--allow-read`): values received from chunks mapped from then on can be released. Once every
 * value this isolate received from a chunk buffer is released and a value from another chunk
 * came since, that buffer is detached: every view of it, the released values included, reads as
 * empty from then on. So release a value only once nothing reads it any more. A value never
 * released keeps its chunk as before, until it is garbage.
 *
 * Returns true when `value` was released; false when it is not a value this isolate received
 * as a view of a releasable chunk buffer:
 * - a copy: a value over 16 KiB, one from a local channel, one that came while this isolate's
 *   views pinned 1,024 chunks (the cap, see the README; once the count is back under it, even a
 *   chunk met past it gives releasable views), a `slice()`;
 * - an array the caller made, or a view that does not start where a received value starts (a
 *   view that does counts as that value) while kcoro has not detached its buffer (below);
 * - a value of a chunk buffer that held a received value before the first call (as do its
 *   later values while that buffer lives: it is not replaced under values that use it), or one
 *   made while the companion's table of 65,536 live buffers was full;
 * - a view of a buffer the caller transferred (below);
 * - any value when the companion cannot be loaded (then `releaseUnavailable()` says why).
 *
 * A releasable chunk's buffer can be transferred (`value.buffer.transfer()`, a `postMessage`
 * transfer): the moved buffer keeps the chunk until it is garbage, and this isolate's other
 * values of that chunk read as empty (they were views of the transferred buffer); releasing
 * one of them then returns false, released before or not (a detached view no longer says
 * where it started).
 *
 * Once kcoro detached a chunk's buffer (every value received from it released), every view of
 * that buffer, released value or not, is a RangeError: a view that never was a received value
 * (false before) can no longer be told from one that was, as a detached view reads as empty at
 * offset 0. Telling them apart would cost a mark on every value released.
 *
 * @throws {TypeError} `value` is not a Uint8Array.
 * @throws {RangeError} `value` was released already, or is any view of a chunk buffer kcoro
 * detached (every value received from it released).
 * @example
 * ```ts
 * import { Channel, codecs, releaseBytes } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using ch = new Channel<Uint8Array>(4, { codec: codecs.bytes });
 * ch.share(); // a native channel (a local one hands over the value itself)
 * releaseBytes(new Uint8Array(0)); // switches this isolate to releasable chunks: false
 * ch.trySend(new Uint8Array([1, 2, 3]));
 * const got = ch.tryReceive();
 * assert.equal(got.state, "ok");
 * if (got.state === "ok") {
 *   assert.deepEqual([...got.value], [1, 2, 3]);
 *   releaseBytes(got.value); // true where the companion library loads
 * }
 * ```
 */
export function releaseBytes(value: Uint8Array): boolean {
  if (typeof value !== "object" || value === null || typedTag.call(value) !== "Uint8Array") {
    throw new TypeError(
      `Cannot release bytes: the value is not a Uint8Array, received ${describe(value)}`,
    );
  }
  if (!releasing) {
    releasing = true;
    // The companion loaded now for the pool in use, so that `releaseUnavailable` can say why
    // it cannot be; values received so far stay as they are.
    if (lastPool !== null && lastPool.releasable === undefined) loadReleasable(lastPool, lastSym!);
    return false;
  }
  const buffer = typedBuffer(value) as ArrayBuffer;
  // Most values are released soon after their receive, while their chunk is the last mapped:
  // its hold then without the WeakMap's lookup (a hash of the buffer, ~10 ns). A releasable
  // hold's buffer has that hold (`ReleasableHold`) while its bits are not null.
  const pool = lastPool;
  const last = pool !== null && buffer === pool.lastBuffer ? pool.lastHold! : undefined;
  const hold = last !== undefined && last.bits !== null ? last : ReleasableHold.of(buffer);
  if (hold === undefined) return false;
  if (hold === null) {
    // Detached by `retire`: every value of the buffer was released. Its views read as empty and
    // say nothing of where they started, so a view that never was a value (false before the
    // retire) is answered as a released one: telling them apart would cost a mark per value.
    throw new RangeError(
      `Cannot release bytes: every value of its chunk was released, received ${describe(value)}`,
    );
  }
  // An element read (no user code runs for a real Uint8Array, whatever its prototype or own
  // properties) gives the optimiser the value's map, so that the engine's byteOffset getter
  // below is inlined instead of called. That getter answers 0 for a view of a detached buffer:
  // only a value at offset 0 can be one, and only then is the buffer's detached getter read.
  void value[0];
  const off = typedOffset.call(value) as number;
  if (hold.bits === null || (off === 0 && isDetached(buffer))) {
    // The caller transferred the buffer: the moved one gives the chunk back when collected.
    if (hold.bits !== null) retire(hold, buffer);
    return false;
  }
  if ((off & 15) !== 0) return false; // POOL_SLICE_ALIGN - 1, and its log2 below
  const s = off >>> 4, word = s >>> 5, bit = 1 << (s & 31), bits = hold.bits;
  const done = bits.length >>> 1;
  // An empty view at the chunk's end (offset = its length) has the slot one past its last: its
  // word is the second bitmap's first, so a released value's bit there said a value started at
  // the end, and each call counted a release that never was (the chunk then retired under
  // values still unreleased, which read as empty).
  if (word >= done) return false;
  if ((bits[word] & bit) === 0) return false; // no received value starts here
  if ((bits[done + word] & bit) !== 0) {
    throw new RangeError(
      `Cannot release bytes: this value was released already, received ${describe(value)}`,
    );
  }
  bits[done + word] |= bit;
  hold.released++;
  if (hold.released === hold.views && hold !== hold.pool.lastHold) retire(hold, buffer);
  return true;
}

/**
 * Why `releaseBytes` cannot release values in this isolate (the Node-API companion library
 * could not be loaded: not built beside libkcoro, or no `--allow-ffi`/`--allow-read`), or null
 * when it can, or has not tried yet (it tries at its first call).
 */
export function releaseUnavailable(): string | null {
  return unavailable;
}

/**
 * Where copies of pooled values go past `PINNED_MAX`: one ArrayBuffer carved into many values,
 * as Node's `Buffer` pool does. A `new Uint8Array(len)` per value cost 1–2.5 µs in a receive
 * loop that never yields (an ArrayBuffer of its own each, with the collector counting its
 * memory), a view of a slab ~30 ns; the collector frees a slab once no view of it is left,
 * without a finaliser.
 */
const SLAB = 64 * 1024;
let slab = new ArrayBuffer(0);
let slabUsed = 0;

/**
 * @ignore A new Uint8Array of `len` bytes (at most a pooled slice's) in the current slab, at an
 * offset that is a multiple of `POOL_SLICE_ALIGN`, as a pooled value's is (a caller's
 * Float64Array over the value's bytes works on a copy as on a view). Exported for tests only.
 */
export function slabCopy(len: number): Uint8Array {
  if (slabUsed + len > slab.byteLength) {
    slab = new ArrayBuffer(SLAB);
    slabUsed = 0;
  }
  const at = slabUsed;
  // Rounded up to the pool's alignment (a power of two, checked at load).
  slabUsed += (len + POOL_SLICE_ALIGN - 1) & -POOL_SLICE_ALIGN;
  return new Uint8Array(slab, at, len);
}

/** The descriptor's buffer pointer as a number (0: none, an empty or inline value). */
function ptrOf(slot: Slot): number {
  return slot.u32[0] + slot.u32[1] * 0x1_0000_0000;
}

/**
 * @ignore The bytes an encoded descriptor counts in the native metrics: its buffer's length, 0
 * for a value without one (empty or inline).
 */
export function descBytes(slot: Slot): number {
  return ptrOf(slot) === 0 ? 0 : slot.u32[2];
}

function pointer(slot: Slot): Deno.PointerValue {
  return Deno.UnsafePointer.create(slot.u64[0]);
}

function view(slot: Slot, ptr: Deno.PointerValue): ArrayBuffer {
  return Deno.UnsafePointerView.getArrayBuffer(ptr!, slot.u32[2]);
}

/**
 * Copies the first `len` bytes of `bytes` into a native buffer that `slot` describes. `op` names
 * the call in its errors (`Codec.encode`'s): trySendMany's said "Cannot send" too. So do the
 * codecs' checks of what they carry (`checkNumber`, `checkString`, ..., `serialise`): through
 * trySendMany they said "Cannot send: codecs.f64 carries numbers, ...".
 */
function putBuffer(
  slot: Slot,
  bytes: Uint8Array,
  tag: number,
  sym: Sym,
  codec: string,
  op = "send",
  // The engine's length, not a property a caller may have shadowed: native code copies `len`.
  // Callers that pass `len` took it from the engine, or wrote that many bytes themselves.
  len = bytesLength(bytes),
): void {
  fitsValue(codec, op, len);
  const rc = slot.ptr !== null
    ? sym.kc_desc_make_at(bytes, len, tag, slot.ptr)
    : sym.kc_desc_make(bytes, len, tag, slot.u8);
  if (rc !== 0) throw noRoomFor(noMemoryFor(codec, op, len, rc));
}

/**
 * The most bytes one value's native buffer may take (its length is a uint32 in the descriptor):
 * `PACK_MAX`, lowered only by tests (`setValueBytesMax`), so that a value too large is refused
 * without gigabytes.
 */
let valueBytesMax = PACK_MAX;

/**
 * @ignore For tests: sets `valueBytesMax` (an integer from 0 to `PACK_MAX`; a larger one would
 * pass native code a length its uint32 cannot hold) and returns what it was.
 */
export function setValueBytesMax(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > PACK_MAX) {
    throw new RangeError(
      `Cannot set the value bytes limit: it must be an integer from 0 to ${PACK_MAX}, received ${
        describe(n)
      }`,
    );
  }
  const was = valueBytesMax;
  valueBytesMax = n;
  return was;
}

/**
 * The CodecError for a value of `len` bytes, over `valueBytesMax`, in the house form: it said
 * "Cannot send: a value of <n> bytes is too large", the limit unsaid and no "received".
 */
function tooLarge(codec: string, op: string, len: number): CodecError {
  return new CodecError(
    codec,
    `Cannot ${op}: a value may take at most ${valueBytesMax} bytes, received ${len} bytes`,
  );
}

/**
 * The CodecError for a value of `len` bytes that native code found no memory for, answering
 * `rc` (KC_ENOMEM): in the house form, the status received (it had no "received" part).
 */
function noMemoryFor(codec: string, op: string, len: number, rc: number): CodecError {
  return new CodecError(
    codec,
    `Cannot ${op}: no native memory for ${len} bytes, received ${statusName(rc)}`,
  );
}

/**
 * The size check of encoding (`putBuffer`, `trySendBytes`) and of a value's copy on a local
 * channel (a codec's `pass`), which refuses what encoding refuses for its size: `len` bytes over
 * `valueBytesMax` are `tooLarge`'s error, marked as a no-room error (`noRoom`).
 * Before, a local channel took such a value, and when the channel escaped (`share()`) its
 * encoding failed there: the value was lost, its error reported (an uncaught error, which ends
 * a process with no "error" listener).
 */
function fitsValue(codec: string, op: string | undefined, len: number): void {
  if (len > valueBytesMax) throw noRoomFor(tooLarge(codec, op ?? "send", len));
}

/**
 * As `fitsValue`, for a string encoding would carry as UTF-8 (`codec`'s, well-formed), or, with
 * a lone surrogate, through node:v8 (the default codec). Its bytes are counted only where its
 * length could pass the limit (3 bytes per unit at most): never under the default limit, which no
 * string reaches.
 */
function fitsString(s: string, codec: string, op: string | undefined): void {
  if (s.length * 3 <= valueBytesMax) return;
  fitsValue(
    codec,
    op,
    s.isWellFormed() ? encoder.encode(s).length : serialise(s, codec, op).length,
  );
}

/**
 * `putBuffer`'s errors and `trySendBytes`': a value the codec carries, too large or with no
 * native memory for it (`noRoom`).
 */
const noRoomErrors = new WeakSet<CodecError>();

function noRoomFor(e: CodecError): CodecError {
  noRoomErrors.add(e);
  return e;
}

/**
 * @ignore Whether `e` says a value the codec carries found no native memory (or is too large
 * for it): a value's own send failing, which ends a batch as a short write once values went
 * (`trySendMany`), where a value the codec cannot carry fails the whole batch.
 */
export function noRoom(e: unknown): boolean {
  return e instanceof CodecError && noRoomErrors.has(e);
}

/** Strings of up to this many UTF-16 units are encoded into `text`, longer ones on their own. */
const TEXT_MAX = 64 * 1024;
/** Where strings are encoded (`putString`); grown as needed, up to 3 bytes per unit. */
let text = new Uint8Array(256);

/**
 * A string's UTF-8 bytes into a native buffer. `encodeInto` a reused buffer: `encode` makes a
 * fresh Uint8Array per string, which costs ~1 µs on these machines.
 */
function putString(slot: Slot, s: string, sym: Sym, codec: string, op?: string): void {
  if (s.length > TEXT_MAX) return putBuffer(slot, encoder.encode(s), T_STRING, sym, codec, op);
  if (s.length * 3 > text.length) {
    text = new Uint8Array(Math.min(3 * TEXT_MAX, Math.max(2 * text.length, s.length * 3)));
  }
  const { written } = encoder.encodeInto(s, text);
  putBuffer(slot, text, T_STRING, sym, codec, op, written);
}

/**
 * A default codec's value in the descriptor: no buffer, `kind` (T_NUMBER .. T_UNDEFINED) in the
 * len word, ctx 0 (the caller writes a number's or bigint's payload there after): a kind without
 * a payload reads the same in C whatever the slot held before.
 */
function putInline(slot: Slot, kind: number): void {
  slot.u32[0] = 0;
  slot.u32[1] = 0;
  slot.u32[2] = kind;
  slot.u32[3] = 0;
  slot.u32[4] = 0;
  slot.u32[5] = 0;
  slot.u32[6] = 0;
  slot.u32[7] = 0;
}

/**
 * An empty string or bytes: no buffer, len 0, the tag (T_STRING or T_BYTES) in ctx, as C code's
 * `kc_desc_make` of 0 bytes writes it, so that C reads "ptr/len are the bytes, ctx is the tag"
 * of what TypeScript sends too (`isEmpty` reads it back).
 */
function putEmpty(slot: Slot, tag: number): void {
  slot.u32[0] = 0;
  slot.u32[1] = 0;
  slot.u32[2] = 0;
  slot.u32[3] = 0;
  slot.u32[4] = 0;
  slot.u32[5] = 0;
  slot.u32[6] = tag;
  slot.u32[7] = 0;
}

/** Frees the native buffer `slot` describes, if any. */
function freeSlot(slot: Slot, sym: Sym): void {
  // By the slot's address when it has one: a pointer made from the descriptor's word costs a
  // BigInt and a pointer object (~90 ns).
  if (slot.ptr !== null) sym.kc_desc_free(slot.ptr);
  else if (ptrOf(slot) !== 0) sym.kc_buf_free(pointer(slot));
}

/** Reads a buffer descriptor's bytes as a view of native memory and frees them after `use`. */
function withBytes<R>(slot: Slot, sym: Sym, use: (bytes: Uint8Array) => R): R {
  try {
    return use(
      poolView(sym, ptrOf(slot), slot.u32[2], false) ??
        new Uint8Array(view(slot, pointer(slot))),
    );
  } finally {
    freeSlot(slot, sym);
  }
}

/**
 * A received Uint8Array. A pooled buffer (up to 16 KiB) is a view that shares one ArrayBuffer
 * with the other values of its chunk (`.buffer` is the chunk, as with Node's `Buffer` pool); the
 * chunk's values are freed together when no view of it is left. Past `PINNED_MAX` chunks pinned
 * by this isolate, a value from another chunk is copied into a buffer of its own instead. A
 * larger buffer is copied into an ArrayBuffer this isolate owns and its native memory freed at
 * once: a view of malloc'd memory freed by a finaliser would not survive a transfer of its
 * `.buffer` (the moved buffer kept pointing at memory freed under it).
 */
function receiveBytes(slot: Slot, sym: Sym): Uint8Array {
  const at = ptrOf(slot);
  if (at === 0) return new Uint8Array(0);
  return receiveAt(slot, sym, at, slot.u32[2]);
}

/** `receiveBytes` of a buffer descriptor: `len` bytes at address `at` (not 0). */
function receiveAt(slot: Slot, sym: Sym, at: number, len: number): Uint8Array {
  // The common case first, small enough for V8 to inline (`poolView` is not): a value in the
  // chunk of the one before it, a chunk its views pin already. The rest as `poolView` does.
  const pool = lastPool;
  if (sym === lastSym && pool !== null && pool.lastHold !== undefined) {
    const hold = pool.lastHold;
    const off = at - hold.start;
    if (off >= 0 && off < pool.chunk && hold.views !== 0) {
      // The view first, then the counts: its constructor's TypeError says that the caller
      // transferred the buffer (detached), as `isDetached` did at ~3 ns more per value; the
      // value then takes `poolView`'s path, which maps the chunk again.
      let view: Uint8Array | undefined;
      try {
        view = new Uint8Array(pool.lastBuffer!, off, len);
      } catch {
        view = undefined;
      }
      if (view !== undefined) {
        hold.views++;
        if (hold.bits !== null) receivedAt(hold, off);
        else if (pool.counts !== null) pool.counts[hold.index]++;
        return view;
      }
    }
  }
  const pooled = poolView(sym, at, len, true);
  if (pooled !== null) return pooled;
  const ptr = pointer(slot);
  const copy = new Uint8Array(len);
  Deno.UnsafePointerView.copyInto(ptr!, copy);
  sym.kc_buf_free(ptr);
  return copy;
}

/**
 * A structured value into a native buffer: plain data in the packed encoding (src/pack.ts),
 * anything else serialised with `node:v8`.
 */
function putStructured(
  slot: Slot,
  value: unknown,
  sym: Sym,
  codec: string,
  op?: string,
): void {
  let n: number;
  try {
    n = pack(value);
  } catch (e) {
    throw packFailed(e, value, codec, op);
  }
  if (n >= 0) putBuffer(slot, packed(), T_PACKED, sym, codec, op, n);
  else putBuffer(slot, serialise(value, codec, op, refusedLeaf()), T_STRUCTURED, sym, codec, op);
}

/**
 * The CodecError for what `pack` threw: its own (an array length it cannot encode) says so,
 * with a TypeError or RangeError of its class and message as the cause, both naming the call
 * made (`op`: pack's own says "Cannot send:", which the cause of a trySend's said too); a
 * getter's is the cause of a "cannot be structured-cloned" one, as it threw it.
 */
function packFailed(e: unknown, value: unknown, codec: string, op = "send"): CodecError {
  if (packError(e)) {
    const message = e.message.replace(/^Cannot send:/, `Cannot ${op}:`);
    const cause = op === "send"
      ? e
      : new (e instanceof RangeError ? RangeError : TypeError)(message);
    return new CodecError(codec, message, { cause });
  }
  const message = `Cannot ${op}: the value cannot be structured-cloned, received ${
    describe(value)
  }`;
  return new CodecError(codec, message, { cause: e });
}

/** kcoro's errors a decoded cause gets its class back for (`node:v8` keeps only `Error`'s). */
const ERROR_CLASSES: readonly { prototype: Error }[] = [
  CancellationError,
  TimeoutError,
  ClosedSendError,
  ClosedReceiveError,
  CompletionHandlerError,
];

/**
 * The class of `ERROR_CLASSES` numbered `c` (1 up, as `classIndexOf` numbers them); undefined
 * for 0 (none) and any other. Only the list's own elements are read: `ERROR_CLASSES[c - 1]`
 * read Array.prototype's and Object.prototype's keys for the rest, "-1" for each plain Error
 * decoded, so that `Object.prototype[-1] = X` (a library's) made every decoded Error an X.
 */
function errorClassAt(c: unknown): { prototype: Error } | undefined {
  return typeof c === "number" && c >= 1 && c <= ERROR_CLASSES.length && c % 1 === 0
    ? ERROR_CLASSES[c - 1]
    : undefined;
}

/**
 * Which of `ERROR_CLASSES` `e` crosses as (its index + 1; 0 for none): the kcoro class of its
 * brand (`ERROR_BRAND`) as `brandOf` reads it, the nearest up its prototype chain, itself first,
 * as `errorKind` reads it where `e` was made (`isCancellation`). So a subclass of the caller's own
 * of CancellationError is a cancellation in other isolates too, as it is here: before, only the
 * class's own prototype was asked, and such a subclass arrived as a plain Error so named, a
 * failure there. Own data properties only: no getter runs, nor a trap of a Proxy in the chain
 * (a Proxy `e` is asked for its prototype once, as before; throws what that trap throws).
 */
function classIndexOf(e: Error): number {
  const kind = brandOf(e);
  return kind === undefined
    ? 0
    : ERROR_CLASSES.findIndex((c) => ownErrorKind(c.prototype) === kind) + 1;
}

/** How many Errors down a cause's `cause` chain keep their class and name (`encodeCause`). */
const CAUSE_CHAIN = 16;

/**
 * How many Errors down a cause's `cause` chain `node:v8` is given to copy as they are. Its
 * serializer recurses once per Error: a chain of ~10,000 overflowed the stack, and Deno printed a
 * "Failed to create JsStackFrame" warning for each frame of the RangeError (twice per cause: the
 * stand-in tried the rest of the chain again). A longer chain crosses as its stand-in, whose
 * `CAUSE_CHAIN` Errors are followed by a string saying how deep it was (`standIn`).
 */
const CAUSE_DEPTH = 1_000;

/**
 * @ignore A close cause as bytes other isolates can read (kc_chan_close_cause, which keeps them
 * as they are): a kind byte (1 packed, 2 node:v8, 3 an Error, 4 an Error whose `cause` chain
 * holds more) and the encoding. An Error down whose chain is an AggregateError, a
 * SuppressedError or an own field node:v8 leaves behind (`needsRich`) has its rich encoding
 * after its kind 3 or 4 bytes (`withRich`), which a decoder that knows it reads instead: an
 * older copy of this module reads the kind 3 or 4 bytes as it always did (node:v8 stops at the
 * end of its value), so it still sees the failure, where a kind of its own (5, before) read as
 * no cause there, the channel closed cleanly. Kinds 3 and 4 describe each Error down the chain
 * (kind 3: the cause alone; kind 4: a count byte first, up to `CAUSE_CHAIN`): which of kcoro's
 * classes it is (0: none), its name's length and UTF-8 bytes (cut to 255: `headName`); then
 * node:v8 of the whole. A cause neither can copy (a function, a symbol, an object holding one,
 * an Error whose `cause` is one) is encoded as its stand-in (`standIn`), so other isolates still
 * see a failure; null only if the stand-in cannot be encoded either, and the cause then stays in
 * its own isolate. An Error keeps its `name` (node:v8 keeps only the built-in ones), and one of
 * kcoro's own errors its class: a `CancellationError` cause stays one in a Worker, and so does one
 * in its cause chain (a cancelled channel's copy in another isolate is the same error as its own:
 * `Channel.cancel`). The class goes by its brand (`ERROR_BRAND`, on the class's own prototype), not
 * by name: another copy of this module's CancellationError (imported by another URL, or another
 * version) is one too (before, only this copy's classes were, by identity, and another's arrived as
 * a plain Error), while a `TimeoutError` of the caller's own (or a DOMException named so) stays a
 * failure, not a cancellation. A subclass of the caller's own of one of kcoro's classes crosses as
 * that class (its brand is inherited: `classIndexOf`), its name kept, as it is one where it was
 * made: before, it arrived as a plain Error, a cancellation here and a failure there.
 */
export function encodeCause(cause: unknown): Uint8Array | null {
  // Its own reads: the caller's code that encoding runs may close another shared channel, whose
  // cause is encoded meanwhile.
  const outer = errorReads;
  errorReads = new Map();
  try {
    return encodeCauseOnce(cause);
  } finally {
    errorReads = outer;
  }
}

/**
 * What the `encodeCause` in progress read of each Error (`readOnce`: its `cause`, `name`,
 * `message`, `stack`; each value, or what reading it threw); null outside one. The encoding walks
 * a cause's chain several times (whether each Error's message and cause are its own data, whether
 * the rich encoding is needed, the heads, the stand-in, the rich records): a getter there (an own
 * accessor, an Error class's `get cause()`, a DOMException's `message`) ran once per walk, a
 * `cause` getter two or three times per close, a `name` getter up to six, and one that answered
 * otherwise the second time made the walks disagree. Read once now, as a sent value's getters are.
 */
let errorReads: Map<object, Partial<Record<ErrorPart, Read>>> | null = null;

/** The parts of an Error `readOnce` reads. */
type ErrorPart = "cause" | "name" | "message" | "stack";

/** A read of the caller's: its value, or what it threw. */
type Read = { value: unknown } | { threw: unknown };

/** `e[key]`, read once per `encodeCause` (`errorReads`); what the read threw, every time. */
function readOnce(e: Error, key: ErrorPart): unknown {
  const reads = errorReads;
  if (reads === null) return e[key];
  let own = reads.get(e);
  if (own === undefined) reads.set(e, own = {});
  const got = own[key];
  if (got !== undefined) {
    if ("threw" in got) throw got.threw;
    return got.value;
  }
  let value: unknown;
  try {
    value = e[key];
  } catch (x) {
    own[key] = { threw: x };
    throw x;
  }
  own[key] = { value };
  return value;
}

/** `e.cause`, read once per `encodeCause` (`readOnce`). */
function causeOf(e: Error): unknown {
  return readOnce(e, "cause");
}

function encodeCauseOnce(cause: unknown): Uint8Array | null {
  // `instanceof` inside needsRich's try: a revoked Proxy's prototype read throws, and close()
  // threw it (the channel left open) before the other encodings' stand-in could see to it.
  // Too large is `encodeSized`'s answer, not a flag of the module's: the caller's code that
  // encoding runs (a getter, a Proxy's trap, a Symbol.toStringTag that `describe` reads) may
  // close another shared channel, whose cause is encoded meanwhile.
  const exact = ownData(cause) && endFits(cause) ? encodeSized(cause) : null;
  // Too large as it is: a cause that is no Error is only its size, said in the house form (its
  // stand-in would say less); an Error keeps what its stand-in keeps, where that fits.
  if (exact === OVER && !isError(cause)) return encodeTooLarge(cause);
  let base = exact === OVER ? null : exact;
  if (base === null) {
    // The stand-in's own size, not that of a value it left out.
    const copy = encodeSized(standIn(cause, 0));
    if (copy === OVER) return encodeTooLarge(cause);
    base = copy;
  }
  if (base === null || (base[0] !== 3 && base[0] !== 4) || !needsRich(cause)) return base;
  const rich = encodeRich(cause as Error);
  // Its trailer too must fit (`causeBytesMax`): else the cause as node:v8 copies it, as past
  // `RICH_BYTES_MAX`.
  return rich === null || base.length + rich.length + RICH_TRAILER > causeBytesMax
    ? base
    : withRich(base, rich);
}

/**
 * The rich encoding's version, its trailer's last byte (`withRich`): a decoder reads no other.
 * Never 46, the byte node:v8 ends an Error with (what kind 3 and 4 bytes end with otherwise).
 */
const RICH_VERSION = 1;

/** The byte before `RICH_VERSION` in a rich trailer ("k"). */
const RICH_MARK = 0x6b;

/** The bytes after a rich encoding: its length (4, little-endian), `RICH_MARK`, the version. */
const RICH_TRAILER = 6;

/**
 * `base` (kind 3 or 4 bytes) followed by the rich encoding `body` (`encodeRich`) and its
 * trailer (`RICH_TRAILER`): the kind 3 or 4 reader's node:v8 ignores what follows its value.
 */
function withRich(base: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(base.length + body.length + RICH_TRAILER);
  out.set(base, 0);
  out.set(body, base.length);
  const end = base.length + body.length;
  new DataView(out.buffer).setUint32(end, body.length, true);
  out[end + 4] = RICH_MARK;
  out[end + 5] = RICH_VERSION;
  return out;
}

/**
 * The cause a rich trailer (`withRich`) at the end of kind 3 or 4 `bytes` describes, boxed;
 * undefined when there is none, or it is of another version or not readable (the kind 3 or 4
 * bytes before it are read then: a failure still, as an older copy reads it).
 */
function readRich(bytes: Uint8Array): { cause: unknown } | undefined {
  const n = bytes.length;
  if (n < 3 + RICH_TRAILER || bytes[n - 1] !== RICH_VERSION || bytes[n - 2] !== RICH_MARK) {
    return undefined;
  }
  const len = new DataView(bytes.buffer, bytes.byteOffset, n).getUint32(n - RICH_TRAILER, true);
  const start = n - RICH_TRAILER - len;
  if (start < 3) return undefined;
  try {
    return { cause: decodeRich(bytes.subarray(start, n - RICH_TRAILER)) };
  } catch {
    return undefined;
  }
}

/**
 * How many bytes the values a rich encoding copies (`encodeRich`, each once) may take in all:
 * past it, the cause is encoded as if it had nothing node:v8 leaves behind.
 */
const RICH_BYTES_MAX = 64 * 1024 * 1024;

/**
 * How many elements of one array the rich encoding carries (`encodeRich`): past them, one
 * string saying how many more were not copied. Before, an array over 1,000 long went to node:v8
 * as it was, which formats the stack of every Error in it: an AggregateError of 100,000 fresh
 * Errors took seconds inside close(), where node:v8 alone (before the rich encoding) dropped its
 * `errors`.
 */
const RICH_ELEMENTS = 1_000;

/**
 * How many array elements one cause's rich encoding carries in all (`encodeRich`): past them,
 * each array is its note alone. Each Error's arrays are walked on their own, so 1,000 Errors
 * holding one 1,000-element array each made a million elements (seconds to encode and decode)
 * of 1,000 the caller had.
 */
const RICH_ELEMENTS_ALL = 10_000;

/**
 * What one Error inside a value given to node:v8 whole counts for (`valueParts`): node:v8 formats
 * its stack (tens of µs each), so `RICH_ELEMENTS_ALL` holds as many of them as the records
 * (`CAUSE_DEPTH`).
 */
const ERROR_PARTS = RICH_ELEMENTS_ALL / CAUSE_DEPTH;

const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, "size")!.get!;
const setSize = Object.getOwnPropertyDescriptor(Set.prototype, "size")!.get!;

/**
 * How many parts `value` gives node:v8 to copy where the rich encoding hands it over whole (a
 * field's value, or an element, that is neither an Error nor a field's own array): each element
 * of an array, own enumerable property of an object, entry of a Map and value of a Set, and
 * `ERROR_PARTS` for each Error, down all it holds (each object once, as node:v8 copies it once);
 * `over` once past `budget`, where the walk stops (`parts`: those walked). Before, such a value
 * went to node:v8 however large: a field holding `{ list }` of 100,000 Errors, or an element of
 * `errors` that is an array of them, took seconds inside close(), where node:v8 alone left that
 * field behind. One part each, not walked: a Proxy (node:v8 refuses one), a getter's property
 * (its answer is the caller's code's, not data), a typed array or buffer (its bytes count
 * against `RICH_BYTES_MAX`), a boxed primitive. An array, Map or Set longer than what is left
 * stops the walk before it is walked. Reads only own data properties: runs none of the
 * caller's code.
 */
function valueParts(value: unknown, budget: number): { parts: number; over: boolean } {
  const seen = new Set<object>();
  const pending: unknown[] = [value];
  let parts = 0;
  try {
    while (pending.length > 0) {
      const v = pending.pop();
      if (typeof v !== "object" || v === null || seen.has(v)) continue;
      seen.add(v);
      if (
        types.isProxy(v) || ArrayBuffer.isView(v) || types.isAnyArrayBuffer(v) ||
        types.isBoxedPrimitive(v)
      ) {
        parts += 1;
      } else if (types.isMap(v)) {
        const n = 2 * mapSize.call(v);
        if (parts + n > budget) return { parts, over: true }; // not walked
        parts += n;
        Map.prototype.forEach.call(v, (x: unknown, key: unknown) => pending.push(key, x));
      } else if (types.isSet(v)) {
        const n = setSize.call(v);
        if (parts + n > budget) return { parts, over: true };
        parts += n;
        Set.prototype.forEach.call(v, (x: unknown) => pending.push(x));
      } else if (types.isNativeError(v)) {
        // node:v8 copies its name, message, stack and own data `cause`: no other field.
        parts += ERROR_PARTS;
        const inner = Object.getOwnPropertyDescriptor(v, "cause");
        if (inner !== undefined && "value" in inner) pending.push(inner.value);
      } else {
        // An array's length first: its keys listed only once it fits (a million-element
        // array made a million strings).
        if (Array.isArray(v) && parts + v.length > budget) return { parts, over: true };
        const keys = Object.keys(v);
        parts += keys.length;
        if (parts > budget) return { parts, over: true };
        for (const key of keys) {
          const d = Object.getOwnPropertyDescriptor(v, key);
          if (d !== undefined && "value" in d) pending.push(d.value);
        }
      }
      if (parts > budget) return { parts, over: true };
    }
  } catch {
    // An object none of this can read (a namespace's binding before its module ran): node:v8
    // meets it too and fails, so the value is one that cannot be copied.
  }
  return { parts, over: false };
}

/**
 * Own properties of an Error that the rich encoding carries even when not enumerable: an
 * AggregateError's `errors`, a SuppressedError's `error` and `suppressed`, and the `suppressed`
 * list a job or scope keeps on its first failure (src/job.ts), all defined so. `richError` reads
 * the list by index (no Set iterator of the caller's runs in the decode).
 */
const CARRIED_KEYS: readonly string[] = Object.freeze(["errors", "error", "suppressed"]);
const CARRIED = new Set(CARRIED_KEYS);

/** Own properties each Error's record carries already (or, `stack`, reads through a getter). */
const RECORDED = new Set(["name", "message", "stack", "cause"]);

/** The classes node:v8 keeps, by an Error's name, as its deserializer makes them. */
const V8_CLASSES = new Set([
  "Error",
  "EvalError",
  "RangeError",
  "ReferenceError",
  "SyntaxError",
  "TypeError",
  "URIError",
]);

/**
 * Whether `proto` is up `o`'s prototype chain (as `instanceof` asks, without its
 * `Symbol.hasInstance`), read by the engine's own `Object.getPrototypeOf` as the module loaded,
 * which runs no code of a non-Proxy: false where a Proxy is met first (its traps are the
 * caller's code: not run).
 */
function inherits(o: object, proto: object): boolean {
  for (let p: object | null = o; p !== null;) {
    if (types.isProxy(p)) return false;
    p = prototypeOf(p);
    if (p === proto) return true;
  }
  return false;
}
const prototypeOf = Object.getPrototypeOf;

/** AggregateError's and SuppressedError's prototypes, as the module loaded (`builtinOf`). */
const AGGREGATE_PROTO: object = AggregateError.prototype;
/**
 * AggregateError as the module loaded, which `richError` makes one by: before, by the global,
 * so that a replacement of the caller's (`globalThis.AggregateError = class ...`) ran at each.
 */
const AGGREGATE_CLASS = AggregateError;

/**
 * The constructors of `V8_CLASSES`, as the module loaded: a decoded Error is made by the
 * engine's, where it was read from `globalThis` by name, running a replacement of the caller's
 * (`globalThis.RangeError = class ...`) for each one decoded.
 */
const V8_CONSTRUCTORS = new Map<unknown, ErrorConstructor>([
  ["Error", Error],
  ["EvalError", EvalError],
  ["RangeError", RangeError],
  ["ReferenceError", ReferenceError],
  ["SyntaxError", SyntaxError],
  ["TypeError", TypeError],
  ["URIError", URIError],
]);

/** `SuppressedError` where the engine has one (V8 12.x and later); else undefined. */
const suppressedClass:
  | (new (error: unknown, suppressed: unknown, message?: string) => Error)
  | undefined =
    (globalThis as { SuppressedError?: new (e: unknown, s: unknown, m?: string) => Error })
      .SuppressedError;
const SUPPRESSED_PROTO: object | undefined = suppressedClass?.prototype;

/**
 * The built-in class an Error crosses as: AggregateError or SuppressedError by its prototype
 * chain (`inherits`: a subclass of the caller's own too, its `errors` mean what they meant),
 * else the one node:v8 would make, by its name (a `RangeError`-named Error is one there;
 * "MyError", an Error). Not by `instanceof`, which ran a `Symbol.hasInstance` of the caller's on
 * AggregateError or SuppressedError, and a Proxy's `getPrototypeOf` trap, at each Error of a
 * close cause: a Proxy's class is told by its name alone.
 */
function builtinOf(e: Error): string {
  if (inherits(e, AGGREGATE_PROTO)) return "AggregateError";
  if (SUPPRESSED_PROTO !== undefined && inherits(e, SUPPRESSED_PROTO)) return "SuppressedError";
  const name = errorName(e);
  return V8_CLASSES.has(name) ? name : "Error";
}

/**
 * How many own fields (`extraKeys`, not those `CARRIED` names) the rich encoding carries in all
 * the Errors of one cause: past them, the rest are left out, as node:v8 leaves them all out.
 * Before, every field was carried, each its own encoding (a pack, a Uint8Array, a walk of what
 * it holds; a property defined on the copy): an Error with a million own fields took ~11 s in
 * close(), and as long again where it was read.
 */
const RICH_FIELDS = 10_000;

/**
 * The own properties of `e` that node:v8 leaves behind and the rich encoding carries: its data
 * properties `CARRIED` names (those not enumerable first), and every other enumerable
 * string-keyed data property (a `code`), not those `RECORDED` names, the first `max` of those
 * (in property order) only. An accessor is not read (a getter of the caller's may throw, or
 * answer differently each time), as structured clone copies none. Listed by `Object.keys`, not
 * `Object.getOwnPropertyNames`, which V8 makes ~3 times slower for an object of many properties
 * (~2.5 µs each for a million: the most of what a million fields cost once they were bounded).
 */
function extraKeys(e: Error, max: number): string[] {
  const keys: string[] = [];
  for (const key of CARRIED) {
    const d = Object.getOwnPropertyDescriptor(e, key);
    if (d !== undefined && "value" in d && !d.enumerable) keys.push(key);
  }
  let own = 0;
  for (const key of Object.keys(e)) {
    if (RECORDED.has(key)) continue;
    const carried = CARRIED.has(key);
    if (!carried && own >= max) continue; // its descriptor not even read
    const d = Object.getOwnPropertyDescriptor(e, key);
    if (d !== undefined && "value" in d) {
      keys.push(key);
      if (!carried) own++;
    }
  }
  return keys;
}

/**
 * Whether an Error down `cause`'s chain (`CAUSE_DEPTH` of them at most, a cycle's once) has
 * what node:v8 would lose and the rich encoding carries: a class of AggregateError or
 * SuppressedError, or `extraKeys`. False for a cause that is no Error, and when reading it
 * throws (even whether it is an Error: a revoked Proxy): the other encodings see to it.
 */
function needsRich(cause: unknown): boolean {
  const seen = new Set<unknown>();
  try {
    for (let e: unknown = cause; isError(e) && !seen.has(e); e = causeOf(e)) {
      if (seen.size === CAUSE_DEPTH) return false;
      seen.add(e);
      const b = builtinOf(e);
      if (b === "AggregateError" || b === "SuppressedError" || extraKeys(e, 1).length > 0) {
        return true;
      }
      // Its head holds the name cut (`headName`): the rich encoding, all of it.
      if (encoder.encode(errorName(e)).length > HEAD_NAME_MAX) return true;
    }
  } catch {
    // A hostile Error down the chain: the stand-in's encoding.
  }
  return false;
}

/**
 * What the rich encoding refers to: an Error by its index in the records, any other value by
 * its own encoding (`encodeExact`: never a rich trailer).
 */
type RichRef = number | Uint8Array;

/**
 * One Error of the rich encoding: its class of kcoro's (`c`, as a head's class byte), built-in
 * class (`b`, `builtinOf`), name, message (`m`, absent if it has none), stack (`s`, absent if
 * no string), cause (`k`, absent if it has none) and its `extraKeys` (`f`: each key, its flags
 * (1 enumerable, 2 an array of refs, one per element) and what it holds).
 */
type RichRecord = {
  c: number;
  b: string;
  n: string;
  m?: string;
  s?: string;
  k?: RichRef | typeof NO_FIELD;
  f: [string, number, RichRef | RichRef[]][];
};

/**
 * The rich encoding of `encodeCause` (`withRich` puts it after the kind 3 or 4 bytes): an
 * Error some of which node:v8 would lose (`needsRich`), as node:v8 of `{ r, e }`: `r` refers to
 * the cause, `e` holds a record for each Error it reaches (`RichRecord`), through a `cause`, an
 * `errors`, `error` or `suppressed`, an element of a property's array, or any other own field,
 * so that an AggregateError's errors keep their classes, names and fields as the cause does. Walked
 * breadth first, each Error once (a cycle refers back to its record), `CAUSE_DEPTH` Errors at
 * most (one past those is a string saying so), so neither a cycle nor a deep graph recurses or
 * hangs. A value that cannot be copied (a function) is left out where it is a field of the
 * caller's own, as node:v8 leaves out all of them, and is a string saying what it was where it
 * is a cause, an `error`, or an element of `errors` or `suppressed` (an element's place kept).
 * An array is carried element by element (`errors: [e1, e2]`: each Error its record), its
 * first `RICH_ELEMENTS` (`RICH_ELEMENTS_ALL` in all the arrays of the cause), then a string
 * saying how many more were not copied: neither close() nor the decoder does work past those,
 * however long the array. Any other value (an element too) goes to node:v8 whole when what it
 * holds fits in the elements left (`valueParts`), else is a string saying so; the cause of an
 * Error down the cause's own chain whole while it fits in `RICH_ELEMENTS_ALL` on its own (its kind
 * 3 or 4 bytes hold it already), else a string, as there (`endFits`). An element whose read throws
 * is a string saying so, in its place, as one that cannot be copied is, and a field whose array's
 * read throws (a Proxy's trap) is what one that cannot be copied is, and an Error in it whose read
 * throws (a getter of its `message`, a Proxy's trap) an Error saying so. Null when reading the
 * cause itself throws, or when the values it copies would take over `RICH_BYTES_MAX`: `encodeCause`
 * sends the kind 3 or 4 bytes alone.
 */
function encodeRich(cause: Error): Uint8Array | null {
  try {
    const index = new Map<Error, number>();
    const queue: Error[] = [];
    const exact = new Map<unknown, Uint8Array | null>();
    let size = 0;
    const text = (s: string) => encodeExact(s)!;
    let elements = 0;
    let fields = 0; // own fields carried so far (`RICH_FIELDS`)
    // The Errors down the cause's own chain, whose kind 3 or 4 bytes node:v8 wrote whole.
    // A `cause` whose read throws ends it (the record says so).
    const chain = new Set<unknown>();
    try {
      for (let e: unknown = cause; isError(e) && !chain.has(e); e = causeOf(e)) {
        if (chain.size === CAUSE_DEPTH) break;
        chain.add(e);
      }
    } catch {
      // The chain so far.
    }
    const ref = (v: unknown, keep: boolean, whole = false): RichRef | undefined => {
      // A revoked Proxy's prototype read throws: not an Error (`isError`), and node:v8 cannot
      // copy it, so a string saying what it was (or left out).
      if (isError(v)) {
        const e = v as Error; // not asked again: a Proxy's trap may answer otherwise
        const at = index.get(e);
        if (at !== undefined) return at;
        if (queue.length === CAUSE_DEPTH) {
          return text(
            `${describeCause(e)} (past ${CAUSE_DEPTH} Errors in one cause: ${NOT_COPIED})`,
          );
        }
        index.set(e, queue.length);
        queue.push(e);
        return queue.length - 1;
      }
      // An object or string met again is its first encoding, the same Uint8Array, which
      // node:v8 writes once (a back-reference after) and `decodeRich` decodes once: one copy,
      // as structured clone makes. Each reference encoded on its own took 1,000 times the
      // bytes for an AggregateError whose 1,000 errors were one object.
      const memo = (typeof v === "object" && v !== null) || typeof v === "string";
      const met = memo ? exact.get(v) : undefined;
      let bytes = met;
      if (bytes === undefined) {
        // A value past the elements left to the cause (`valueParts`) is a string saying so,
        // where node:v8 copied it however large; not the cause of an Error of the cause's own
        // chain that fits on its own, which its kind 3 or 4 bytes hold already.
        // What a walk that did not fit went over is spent too: distinct values holding one
        // large object (an Error's `{ response }` each) walked it once each, its keys listed.
        const { parts, over } = whole
          ? { parts: 0, over: false }
          : valueParts(v, RICH_ELEMENTS_ALL - elements);
        elements = Math.min(RICH_ELEMENTS_ALL, elements + parts);
        bytes = over
          ? text(
            `${describeCause(v)} (past ${RICH_ELEMENTS_ALL} elements in one cause: ${NOT_COPIED})`,
          )
          : encodeExact(v);
        if (memo) exact.set(v, bytes);
        // Distinct objects each holding one large value (which node:v8 of the whole would
        // write once) are each encoded in full: past the bound, the Error as node:v8 copies it.
        size += bytes === null ? 0 : bytes.length;
        if (size > RICH_BYTES_MAX) throw new RangeError("over RICH_BYTES_MAX");
      }
      if (bytes !== null) return bytes;
      return keep ? text(`${describeCause(v)} (${NOT_COPIED})`) : undefined;
    };
    /** `e`'s record: throws when reading it throws. */
    const richRecord = (e: Error): RichRecord => {
      const record: RichRecord = {
        c: classIndexOf(e),
        b: builtinOf(e),
        n: errorName(e),
        f: [],
      };
      const message = errorMessage(e);
      if (Object.hasOwn(e, "message") || message !== "") record.m = message;
      const stack = readOnce(e, "stack");
      if (typeof stack === "string") record.s = stack;
      if ("cause" in e) {
        let inner: unknown;
        let threw = false;
        try {
          inner = causeOf(e);
        } catch {
          threw = true;
        }
        // Whole (node:v8's kind 3 or 4 bytes hold it already) only where it fits the budget on
        // its own (`endFits`): else the base holds the stand-in's string, and so does this.
        record.k = threw
          ? text(`a cause whose read threw (${NOT_COPIED})`)
          : ref(inner, true, chain.has(e) && endValueFits(inner));
      }
      for (const key of extraKeys(e, RICH_FIELDS - fields)) {
        const d = Object.getOwnPropertyDescriptor(e, key)!;
        const keep = CARRIED.has(key);
        if (!keep) fields++;
        const flags = d.enumerable ? 1 : 0;
        const v: unknown = d.value;
        // Its length read once: an element's getter that adds another (or a Proxy answering a
        // larger length after this check) made the walk go on past the bound, unbounded: a hang.
        // A read that throws (a Proxy's trap) is the field's alone: before, it lost every field.
        let length = NaN;
        let threw = false;
        try {
          if (Array.isArray(v)) length = Number(v.length);
        } catch {
          threw = true;
        }
        if (threw) {
          if (keep) record.f.push([key, flags, text(`a value whose read threw (${NOT_COPIED})`)]);
        } else if (Number.isSafeInteger(length) && length >= 0) {
          const a = v as unknown[];
          const refs: RichRef[] = [];
          const take = Math.min(length, RICH_ELEMENTS, RICH_ELEMENTS_ALL - elements);
          elements += take;
          for (let j = 0; j < take; j++) {
            // A getter that throws is its element alone, a string in its place as one that
            // cannot be copied is: before, the throw lost the rich encoding, every field.
            let element: unknown;
            try {
              element = a[j];
            } catch {
              refs.push(text(`an element whose read threw (${NOT_COPIED})`));
              continue;
            }
            refs.push(ref(element, true)!);
          }
          if (take < length) refs.push(text(`… and ${length - take} more elements (not copied)`));
          record.f.push([key, flags | 2, refs]);
        } else {
          const r = ref(v, keep);
          if (r !== undefined) record.f.push([key, flags, r]);
        }
      }
      return record;
    };
    const root = ref(cause, true)!;
    const records: RichRecord[] = [];
    for (let i = 0; i < queue.length; i++) {
      try {
        records.push(richRecord(queue[i]));
      } catch (error) {
        // An Error whose read throws (its `message`'s or `name`'s getter, a Proxy's trap) is an
        // Error saying so, in its place: before, it lost the whole rich encoding, every other
        // Error and field with it. The cause itself (its kind 3 or 4 bytes say more), or values
        // past `RICH_BYTES_MAX`: none.
        if (i === 0 || size > RICH_BYTES_MAX) throw error;
        records.push({
          c: 0,
          b: "Error",
          n: "Error",
          m: `an Error whose read threw (${NOT_COPIED})`,
          f: [],
        });
      }
    }
    return serialize({ r: root, e: records });
  } catch {
    return null;
  }
}

/**
 * `encodeRich`'s body back into the cause: every Error made first (its class, name, message
 * and stack), then each one's cause and fields filled in, so that a cycle closes on the same
 * copies. Throws for bytes that are not one (`decodeCause` answers none for them), and for
 * those holding more parts than bytes (only back-references make that: the encoder writes none)
 * or more Errors than `CAUSE_DEPTH`. Hostile bytes still make an Error per few bytes of records
 * up to that: the work stays linear in the bytes.
 */
function decodeRich(body: Uint8Array): unknown {
  // Each part read as node:v8 made it, an own data property (`ownField`): `rec.m`, `"k" in rec`
  // read Object.prototype's where a record has none (no message, no cause), so that a key the
  // caller (or a library) put there changed every decoded cause: `Object.prototype.k = 0` gave
  // each Error itself as its cause, `.m` its message, `.s` its stack.
  const top = deserialize(body);
  const r = ownField(top, "r") as RichRef;
  const list = ownField(top, "e");
  if (!isArray(list)) throw new TypeError("not a rich cause");
  // The encoder writes `CAUSE_DEPTH` records at most: more (a few bytes each, node:v8's
  // back-references to one record) made an Error each, a stack captured for every one.
  if (list.length > CAUSE_DEPTH) throw new RangeError("more Errors than the encoder writes");
  // A hole in the records (no record there: hostile bytes) makes no Error, as before.
  const records: (RichRecord | undefined)[] = [];
  const made: (Error | undefined)[] = [];
  for (let i = 0; i < list.length; i++) {
    const rec = hasOwn(list, i) ? ownRecord(ownField(list, i)) : undefined;
    putAt(records, i, rec);
    putAt(made, i, rec === undefined ? undefined : richError(rec));
  }
  // Bytes met again (a value the cause held in several places: `encodeRich`) are one copy.
  const decoded = new NativeMap<Uint8Array, unknown>();
  const value = (x: RichRef): unknown => {
    if (typeof x === "number") {
      // A hole in the records (no Error made there) is no ref either; nor is an index past them,
      // read as an own element only (`made[x]` read Array.prototype's there).
      const e = isInteger(x) ? ownField(made, x) : undefined;
      if (e === undefined) throw new RangeError("bad ref");
      return e;
    }
    // The engine's tag, not `instanceof`, which ran an own Symbol.hasInstance of Uint8Array's (the
    // receiving isolate's code) at each value the cause held.
    if (!isBytes(x)) throw new TypeError("bad ref");
    if (mapHas(decoded, x)) return mapGet(decoded, x);
    const got = decodeWith(x, false);
    if (!got.ok) throw new TypeError("bad ref");
    mapSet(decoded, x, got.cause);
    return got.cause;
  };
  // The work bounded by the bytes: each record, field and element `encodeRich` writes takes
  // bytes of its own (2 at least). Bytes that refer to one field list or array again (node:v8's
  // back-reference, a few bytes), which it never writes, made a million element reads of 30 KB.
  let budget = body.length - records.length;
  const spend = (n: number) => {
    budget -= n;
    if (!(budget >= 0)) throw new RangeError("more parts than bytes");
  };
  for (let i = 0; i < records.length; i++) {
    const rec = records[i];
    const e = made[i];
    if (rec === undefined || e === undefined) continue;
    if (rec.k !== NO_FIELD) ownValue(e, "cause", value(rec.k as RichRef));
    const fields = rec.f;
    if (!isArray(fields)) throw new TypeError("not a rich cause");
    spend(fields.length);
    for (let j = 0; j < fields.length; j++) {
      const field = ownField(fields, j);
      const key = ownField(field, 0), flags = ownField(field, 1) as number;
      const held = ownField(field, 2);
      let got: unknown;
      if ((flags & 2) !== 0) {
        if (!isArray(held)) throw new TypeError("not a rich cause");
        spend(held.length);
        const values: unknown[] = [];
        for (let k = 0; k < held.length; k++) putAt(values, k, value(ownField(held, k) as RichRef));
        got = values;
      } else got = value(held as RichRef);
      defineOwn(e, toText(key), dataField(got, (flags & 1) !== 0));
    }
  }
  return value(r);
}

/** A record's `k` where it has none (no cause): `ownRecord`. */
const NO_FIELD: unique symbol = Symbol("no field");

/**
 * A rich record as node:v8 made it (`decodeRich`): each part its own data property, `k`
 * NO_FIELD where it has none (an Error without a cause); never one of Object.prototype's.
 */
function ownRecord(x: unknown): RichRecord {
  return {
    c: ownField(x, "c") as number,
    b: ownField(x, "b") as string,
    n: ownField(x, "n") as string,
    m: ownField(x, "m") as string | undefined,
    s: ownField(x, "s") as string | undefined,
    k: typeof x === "object" && x !== null && hasOwn(x, "k")
      ? ownField(x, "k") as RichRef
      : NO_FIELD,
    f: ownField(x, "f") as RichRecord["f"],
  };
}

/**
 * `o[key]` where it is an own data property of `o` (what node:v8's deserialize makes), else
 * undefined: nothing is read from a prototype (Object.prototype's or Array.prototype's, a hole's).
 */
function ownField(o: unknown, key: string | number): unknown {
  if (typeof o !== "object" || o === null) return undefined;
  const d = ownDescriptorOf(o, key);
  // Its own `value` (an accessor has none): `"value" in d` read Object.prototype's.
  return d !== undefined && hasOwn(d, "value") ? d.value : undefined;
}
const ownDescriptorOf = Object.getOwnPropertyDescriptor;
const isArray = Array.isArray as (x: unknown) => x is unknown[];
// What the decode (`decodeRich`, `richError`, `nameAs`, `decodeWith`'s heads) calls, as the
// module loaded: read from the globals at each decode, a replacement of the caller's
// (`Object.hasOwn = ...`, `Map.prototype.get`, a Set iterator's `next`) ran there, once per
// decoded Error, field or value.
const hasOwn = Object.hasOwn;
const defineOwn = Object.defineProperty;
const deleteOwn = Reflect.deleteProperty;
const setPrototype = Object.setPrototypeOf;
const isInteger = Number.isInteger;
const isProxy = types.isProxy;
const toText = String;
const NativeMap = Map;
const NativeError = Error;
const callOf = Function.prototype.call;
const mapGet = callOf.bind(Map.prototype.get) as (m: Map<unknown, unknown>, k: unknown) => unknown;
const mapHas = callOf.bind(Map.prototype.has) as (m: Map<unknown, unknown>, k: unknown) => boolean;
const mapSet = callOf.bind(Map.prototype.set) as (
  m: Map<unknown, unknown>,
  k: unknown,
  v: unknown,
) => void;

/**
 * The errors a decoded AggregateError is made with (none: its carried `errors` are defined
 * after), an iterable of its own: the constructor iterates what it is given, and `[]` ran
 * Array.prototype[Symbol.iterator] and the array iterator's `next`, a caller's replacement too.
 */
const NO_ERRORS: Iterable<never> = Object.freeze({
  [Symbol.iterator]: () => ({ next: () => ({ done: true, value: undefined as never }) }),
});

/** A record's Error (`RichRecord`), without its cause and fields. */
function richError(rec: RichRecord): Error {
  const m = rec.m === undefined ? undefined : toText(rec.m);
  const e = rec.b === "AggregateError"
    ? new AGGREGATE_CLASS(NO_ERRORS, m)
    : rec.b === "SuppressedError" && suppressedClass !== undefined
    ? new suppressedClass(undefined, undefined, m)
    : new ((mapGet(V8_CONSTRUCTORS, rec.b) as ErrorConstructor | undefined) ?? NativeError)(m);
  // Only the fields the record carries: a SuppressedError is made with both of its own.
  for (let i = 0; i < CARRIED_KEYS.length; i++) deleteOwn(e, CARRIED_KEYS[i]);
  if (typeof rec.s === "string") ownValue(e, "stack", rec.s);
  else deleteOwn(e, "stack");
  const c = errorClassAt(rec.c);
  if (c !== undefined) setPrototype(e, c.prototype);
  nameAs(e, toText(rec.n));
  return e;
}

/**
 * Names `e`, an Error decoded in this isolate, `name`, unless what it reads already says so: an
 * own data property then, as `e.name = name` makes one. Told by data properties alone
 * (`dataName`), and defined, not assigned: `e.name` ran a getter of this isolate's (an accessor
 * on Error.prototype, the receiving isolate's code), and the assignment its setter, which could
 * keep the name (a CancellationError arrived named "Error") or, with none, threw, and the whole
 * cause read as none (the channel closed cleanly there).
 */
function nameAs(e: Error, name: string): void {
  if (dataName(e) === name) return;
  defineOwn(e, "name", dataField(name, true));
}

/**
 * `e.name` where only data properties answer it, up the prototype chain; undefined where an
 * accessor or a Proxy would (their code is not run), or past `CAUSE_DEPTH` prototypes.
 */
function dataName(e: object): unknown {
  let p: object | null = e;
  for (let depth = 0; p !== null && depth < CAUSE_DEPTH; depth++) {
    if (isProxy(p)) return undefined;
    const d = ownDescriptorOf(p, "name");
    if (d !== undefined) return hasOwn(d, "value") ? d.value : undefined;
    p = prototypeOf(p);
  }
  return undefined;
}

/**
 * Whether every Error down `cause`'s chain (as `errorHeads` walks it, `CAUSE_DEPTH` deep at
 * most) carries its message and its cause as its own data properties, the only ones node:v8
 * copies. A DOMException's message comes from its class (a getter): it crossed with an empty
 * message (`AbortSignal.timeout()`'s reason arrived as a TimeoutError saying ""); a `cause` that
 * is a getter (an Error class's `get cause()`) crossed as no cause at all, the rest of the chain
 * lost. Such a chain goes as its stand-in, whose messages and causes are its own, and so does
 * one deeper than `CAUSE_DEPTH`. True when reading it throws: `encodeExact` and the stand-in
 * see to that.
 */
function ownData(cause: unknown): boolean {
  const seen = new Set<unknown>();
  try {
    for (let e = cause; isError(e) && !seen.has(e); e = causeOf(e)) {
      if (seen.size === CAUSE_DEPTH) return false;
      seen.add(e);
      const own = Object.getOwnPropertyDescriptor(e, "message");
      if ((own === undefined || !("value" in own)) && errorMessage(e) !== "") return false;
      const inner = Object.getOwnPropertyDescriptor(e, "cause");
      if ((inner === undefined || !("value" in inner)) && "cause" in e) return false;
    }
  } catch {
    // A hostile Error down the chain: as it is.
  }
  return true;
}

/**
 * Whether what ends `cause`'s chain (the `cause` of its last Error, when that is no Error) fits
 * in `RICH_ELEMENTS_ALL` parts (`valueParts`), which node:v8 copies whole with the chain.
 * Before, nothing bounded it: `new Error("x", { cause: { list } })` with 100,000 fresh Errors
 * in `list` took ~10 s inside close() (node:v8 formats each one's stack), where the same value
 * as an Error's field crossed as a string saying it was past the bound. Such a cause crosses
 * as its stand-in, whose chain ends in that string. True for a cause that is no Error, a chain
 * ending in a cycle or past `CAUSE_DEPTH`, and when reading it throws (the other checks and the
 * stand-in see to those).
 */
function endFits(cause: unknown): boolean {
  const seen = new Set<unknown>();
  try {
    for (let e = cause; isError(e) && !seen.has(e); e = causeOf(e)) {
      if (seen.size === CAUSE_DEPTH) return true;
      seen.add(e);
      const inner = causeOf(e);
      if (!isError(inner) && "cause" in e) {
        return !valueParts(inner, RICH_ELEMENTS_ALL).over;
      }
    }
  } catch {
    // A hostile Error down the chain: as it is.
  }
  return true;
}

/**
 * Whether `inner`, the cause of an Error down a close cause's own chain, may cross whole in the
 * rich encoding (`encodeRich`'s `ref`): an Error always (its own record: `ref` does not ask),
 * any other value while it fits in `RICH_ELEMENTS_ALL` parts on its own (`endFits`). Before,
 * an Error was measured too, and `valueParts` of an Error walks the rest of the chain: a chain
 * of 999 Errors took ~500,000 property reads (~100 ms inside close()), each Error's record a few.
 */
function endValueFits(inner: unknown): boolean {
  try {
    if (isError(inner)) return true;
  } catch {
    // A revoked Proxy (its prototype read throws): measured as any value (one part).
  }
  return !valueParts(inner, RICH_ELEMENTS_ALL).over;
}

/**
 * Whether `cause`'s chain holds more than `CAUSE_DEPTH` Errors (a cycle counts each once); a
 * read that throws (a revoked Proxy down it) ends the chain there, as `errorHeads` ends it.
 */
function tooDeep(cause: unknown): boolean {
  const seen = new Set<unknown>();
  try {
    for (let e = cause; isError(e) && !seen.has(e); e = causeOf(e)) {
      if (seen.size === CAUSE_DEPTH) return true;
      seen.add(e);
    }
  } catch {
    // The chain so far.
  }
  return false;
}

/**
 * Whether `v` is an Error as the engine knows it (`Error.isError`: made by an Error constructor,
 * whatever its prototype now), not as its prototype chain says (`instanceof`): a plain object
 * given `Error.prototype` (`Object.setPrototypeOf`, `Object.create`) crossed isolates as an
 * Error (kind 3, the decoder making one of node:v8's plain copy), where structured clone copies
 * it as the plain object it is, and a real Error given `Object.prototype` or null crossed as
 * `{}`, or as a plain object of its enumerable fields. A Proxy is asked as before, by
 * `instanceof`, its traps answering (an Error's Proxy crosses as its stand-in, read through its
 * traps): false when asking throws (a revoked Proxy's prototype read does, of an Error or not:
 * nothing can tell, its target is out of reach), and so may a trap. `instanceof` alone where the
 * engine has no `Error.isError`.
 */
function isError(v: unknown): v is Error {
  try {
    return askError(v);
  } catch {
    return false;
  }
}

/** `isError`, throwing what asking a Proxy throws (`standIn` says that reading it threw). */
function askError(v: unknown): v is Error {
  if (engineIsError !== undefined && !types.isProxy(v)) return engineIsError(v);
  return v instanceof Error;
}
const engineIsError = (Error as { isError?: (v: unknown) => boolean }).isError;

/**
 * An Error's name as it crosses (`errorHeads`, the rich record, the stand-in): `String(name)`,
 * "Error" where it has none (`undefined`), as `Error.prototype.toString` and node:v8 say. A real
 * Error given `Object.prototype` or null (`isError`) has none: it crossed named "undefined".
 */
function errorName(e: Error): string {
  const name = readOnce(e, "name");
  return name === undefined ? "Error" : String(name);
}

/**
 * An Error's message as it crosses (the rich record, the stand-in, `ownData`'s check): its
 * `String(message)`, "" where it has none (`undefined`, and not an own data property), as
 * `Error.prototype.toString` says and structured clone copies it (node:v8 reads an own message
 * only). A real Error given `Object.prototype` or null (`isError`) without a message of its own
 * (`new Error()`) has none: it crossed saying "undefined". An own data `message` of `undefined`
 * (`e.message = undefined`) is one: node:v8 and structured clone write `String` of it,
 * "undefined", and so do these (read "" here, it crossed saying "" in the rich encoding and the
 * stand-in, "undefined" where node:v8 alone copied it). Its descriptor is read only for
 * `undefined`.
 */
function errorMessage(e: Error): string {
  const message = readOnce(e, "message");
  if (message !== undefined) return String(message);
  const own = Object.getOwnPropertyDescriptor(e, "message");
  return own !== undefined && "value" in own ? "undefined" : "";
}

/** What a cause that cannot be copied, or the part of one that cannot, says instead. */
const NOT_COPIED = "cannot be copied to another isolate";

/**
 * What other isolates get for a close cause `encodeExact` cannot copy. Before, they got none,
 * and a channel closed with it read there as closed cleanly: a Worker's `for await` over a
 * failed producer's channel ended as if the stream were complete, its failure lost, when the
 * producer threw `new Error("upstream failed", { cause: { retry: () => {} } })`. An Error
 * keeps its class, name, message and stack, down its `cause` chain (`CAUSE_CHAIN` deep), where
 * a `cause` that cannot be copied (or whose read throws) becomes a string saying what it was;
 * anything else becomes an Error saying so. `copies`: each Error copied so far in this chain, its
 * copy's. Past `CAUSE_CHAIN`, the rest of the chain crosses as it is where node:v8 copies it as
 * it is (`ownData`); else (`rest`) each Error in it is copied too, so that it keeps its message
 * and cause: a DOMException's message (its class's getter, which node:v8 does not read) arrived
 * as "" past the 16th Error, where above it the copy kept it. Never throws (a hostile cause: an
 * Error saying that much).
 */
function standIn(
  cause: unknown,
  depth: number,
  copies = new Map<Error, Error>(),
  rest = false,
): unknown {
  try {
    if (!askError(cause)) {
      return new Error(
        `The channel's close or cancel cause ${NOT_COPIED}: ${describeCause(cause)}`,
      );
    }
    const copy = new Error(errorMessage(cause));
    // A cycle down the chain (an Error that is its own cause, or a getter answering with an
    // Error met already) is one in the copy too, as node:v8 copies one: unrolled, the chain
    // went as CAUSE_CHAIN copies of the same Errors.
    copies.set(cause, copy);
    // Its class (the prototype errorHeads reads) and name, as the Error itself would carry them.
    // The name is the copy's own: read through the class, a getter that checks it is given one
    // of its real instances throws on the copy (a DOMException's name), and a DOMException
    // with a cause it cannot copy became an Error saying reading it threw, its name and message
    // lost. node:v8 reads the own name as it read the class's.
    Object.setPrototypeOf(copy, Object.getPrototypeOf(cause));
    Object.defineProperty(copy, "name", {
      value: errorName(cause),
      writable: true,
      configurable: true,
    });
    // Its stack when it has one (a string, as node:v8 copies it); else none, as the Error
    // itself crosses: the copy's own (standIn's, in this module) read as where it was thrown.
    // Own data properties, defined, not assigned: with the class's prototype, an assignment
    // meets a getter of the class's (`get cause()`, `get stack()`) and throws when it has no
    // setter, and such a cause became an Error saying reading it threw. node:v8 copies only
    // own data properties.
    const stack = readOnce(cause, "stack");
    if (typeof stack === "string") ownValue(copy, "stack", stack);
    else Reflect.deleteProperty(copy, "stack");
    if ("cause" in cause) {
      // A `get cause()` that throws takes only the cause: the Error itself, whose message
      // node:v8 alone would copy, became an Error saying reading it threw.
      let inner: unknown;
      try {
        inner = causeOf(cause);
      } catch {
        ownValue(copy, "cause", `a cause whose read threw (${NOT_COPIED})`);
        return copy;
      }
      // Asked once, false when asking throws: a revoked Proxy (of an Error or not: its target
      // cannot be reached) is a value that cannot be copied, a string in its place, as the rich
      // encoding makes it (`encodeRich`'s `ref`). Before, the throw took the whole copy: an
      // Error whose cause was one crossed as "reading it threw", its message and class lost.
      const error = isError(inner);
      const met = error ? copies.get(inner as Error) : undefined;
      ownValue(
        copy,
        "cause",
        met !== undefined
          ? met
          : error && (rest || depth + 1 < CAUSE_CHAIN)
          ? standIn(inner, depth + 1, copies, rest)
          : error && tooDeep(inner)
          ? `${describeCause(inner)} (a cause chain over ${CAUSE_DEPTH} Errors deep: ${NOT_COPIED})`
          : (error ? !endFits(inner) : valueParts(inner, RICH_ELEMENTS_ALL).over)
          ? `${
            describeCause(inner)
          } (past ${RICH_ELEMENTS_ALL} elements in one cause: ${NOT_COPIED})`
          // The rest, checked once here (at most CAUSE_DEPTH Errors, and its end fits): copied
          // Error by Error where node:v8 would drop a message or cause of it.
          : error && !ownData(inner)
          ? standIn(inner, depth + 1, copies, true)
          : exactOrSaid(inner),
      );
    }
    return copy;
  } catch {
    return new Error(`The channel's close or cancel cause ${NOT_COPIED} (reading it threw)`);
  }
}

/**
 * `v` if `encodeExact` copies it, else a string saying it cannot be copied (and whether for its
 * size).
 */
function exactOrSaid(v: unknown): unknown {
  const bytes = encodeSized(v);
  if (bytes !== null && bytes !== OVER) return v;
  return `${describeCause(v)} (${
    bytes === OVER ? `its encoding takes over ${causeBytesMax} bytes: ` : ""
  }${NOT_COPIED})`;
}

function ownValue(target: object, key: string, value: unknown): void {
  defineOwn(target, key, dataField(value, false));
}

/**
 * A writable, configurable data property's descriptor holding `value`, with no prototype:
 * `Object.defineProperty` reads each field it lacks (`get`, `set`, `enumerable`) through the
 * descriptor's prototype, so that with a plain object `Object.prototype.enumerable = true` made
 * a decoded Error's stack and cause enumerable, and `Object.prototype.get = f` failed every
 * decode (a descriptor with both a value and a getter throws).
 */
function dataField(value: unknown, enumerable: boolean): PropertyDescriptor {
  return {
    __proto__: null,
    value,
    writable: true,
    configurable: true,
    enumerable,
  } as PropertyDescriptor;
}

/**
 * The most bytes of a close cause another isolate can read: `kc_chan_cause` answers its length
 * as an int32. `pack` refuses an array whose elements could not fit in them (a Proxy's length).
 */
const CAUSE_BYTES_MAX = 0x7fff_ffff;

/**
 * The most bytes an encoded close cause may take (`encodeExact`, `withRich`, all of it):
 * `CAUSE_BYTES_MAX`, lowered only by tests (`setCauseBytesMax`), so that a cause too large is
 * tested without gigabytes.
 */
let causeBytesMax = CAUSE_BYTES_MAX;

/**
 * @ignore The least `causeBytesMax` may be (`setCauseBytesMax`): room for the error that says a
 * cause was too large (`tooLargeCause`), without its stack (`encodeTooLarge`), at its largest: a
 * description of `DESCRIBED_MAX` UTF-16 units not all Latin-1, which node:v8 writes two bytes
 * each, the whole message with it (tests/codec_test.ts measures it). Below it that error did not
 * fit either: the cause was encoded as none (null), and other isolates read the channel as
 * closed cleanly. The minimum was 64, where no such error fits. Exported for tests.
 */
export const CAUSE_BYTES_MIN = 758;

/**
 * @ignore For tests (only tests/codec_test.ts calls it): sets `causeBytesMax` (an integer from
 * `CAUSE_BYTES_MIN` to `CAUSE_BYTES_MAX`; else a RangeError naming what it received) and returns
 * what it was.
 */
export function setCauseBytesMax(n: number): number {
  if (!Number.isInteger(n) || n < CAUSE_BYTES_MIN || n > CAUSE_BYTES_MAX) {
    throw new RangeError(
      `Cannot set the cause bytes limit: it must be an integer from ${CAUSE_BYTES_MIN} to ` +
        `${CAUSE_BYTES_MAX} (room for the error that says a cause is too large), received ${
          describe(n)
        }`,
    );
  }
  const was = causeBytesMax;
  causeBytesMax = n;
  return was;
}

/**
 * `encodeSized`'s answer for a value refused for its size (over `causeBytesMax`), not for what it
 * holds: `encodeCause` and `standIn` say so then.
 */
const OVER: unique symbol = Symbol("over causeBytesMax");

/**
 * `describe(v)`, a long string by its length: a cause too large to encode is most often one,
 * and its description (the whole string, quoted) would be as large again. Any other description
 * over `DESCRIBED_MAX` characters (an object's Symbol.toStringTag is its own code's) is cut,
 * its length said: quoted whole, it could make `tooLargeCause`'s RangeError too large as well,
 * and `encodeCause` answered null, the channel read elsewhere as closed cleanly.
 */
function describeCause(v: unknown): string {
  if (typeof v === "string" && v.length > DESCRIBED_HEAD) {
    return `a string of ${v.length} characters`;
  }
  const d = describe(v);
  if (d.length <= DESCRIBED_MAX) return d;
  // Not cut inside a surrogate pair (`headOf`, describe's own cut: its first 64 characters).
  return `${headOf(d)}... (a description of ${d.length} characters)`;
}

/** The longest description `describeCause` gives whole. */
const DESCRIBED_MAX = 256;

/**
 * How much of a description over `DESCRIBED_MAX` `describeCause` keeps, and the longest string
 * it quotes at all (a longer one is its length).
 */
const DESCRIBED_HEAD = 64;

/**
 * What crosses for a close cause whose encoding, and its stand-in's, would take over
 * `causeBytesMax` bytes (2^31-1: the most `kc_chan_cause` can answer): a RangeError in the house
 * form. Before, such bytes were stored (up to 2^32-1; past that Deno's u32 wrapped the length)
 * and another isolate's `kc_chan_cause` answered KC_EINVAL for them: the channel read there as
 * closed cleanly, the failure lost.
 */
function tooLargeCause(cause: unknown): RangeError {
  return new RangeError(
    `Cannot copy the channel's close or cancel cause to another isolate: its encoding takes ` +
      `over ${causeBytesMax} bytes, received ${describeCause(cause)}`,
  );
}

/**
 * `tooLargeCause(cause)` encoded: with its stack where that fits, else without it (its frames are
 * the close's and kcoro's own, as many and as long as the caller's code and paths make them), so
 * that its size is bounded by its message alone: `CAUSE_BYTES_MIN` holds it whatever `cause`.
 * Only a bound lowered for tests (`setCauseBytesMax`) can leave the stack out.
 */
function encodeTooLarge(cause: unknown): Uint8Array | null {
  const error = tooLargeCause(cause);
  const bytes = encodeExact(error);
  if (bytes !== null) return bytes;
  Reflect.deleteProperty(error, "stack");
  return encodeExact(error);
}

/**
 * `encodeCause` of a cause as it is: null when neither encoding can copy it, or its bytes would
 * be over `causeBytesMax` (`encodeSized` tells which).
 */
function encodeExact(cause: unknown): Uint8Array | null {
  const bytes = encodeSized(cause);
  return bytes === OVER ? null : bytes;
}

/**
 * `encodeExact`, `OVER` where its bytes would be over `causeBytesMax`, checked before they are
 * copied into the result.
 */
function encodeSized(cause: unknown): Uint8Array | null | typeof OVER {
  try {
    // An Error as the engine knows it goes to node:v8 as one: one given Object.prototype or null
    // (`Object.setPrototypeOf`) was packed as the plain object it then looks like, and crossed as
    // `{}` (its message, stack and cause are not enumerable). Any other Error the packer gives
    // up at at once (its prototype is no plain object's), reading nothing.
    // A Proxy is not asked (`isError` would run its `getPrototypeOf` trap once more than
    // before): the packer reads its prototype, copying one of a plain object through its traps,
    // and node:v8 refuses any other Proxy, so that it never has heads to read.
    const error = !types.isProxy(cause) && isError(cause);
    const n = error ? -1 : pack(cause, causeBytesMax);
    if (n >= 0) return withKind(1, packed().subarray(0, n));
    // A function or symbol the packer gave up at: node:v8 refuses the cause for it (`serialise`).
    const leaf = error ? undefined : refusedLeaf();
    if (leaf !== undefined) serialize(leaf.leaf);
    const body = serialize(cause);
    const heads = error ? errorHeads(cause) : [];
    if (heads.length === 0) return withKind(2, body); // no Error, or reading it threw
    const count = heads.length === 1 ? [] : [heads.length];
    const size = heads.reduce((sum, h) => sum + h.length, 1 + count.length + body.length);
    if (size > causeBytesMax) return OVER;
    const out = new Uint8Array(size);
    out[0] = heads.length === 1 ? 3 : 4;
    out.set(count, 1);
    let at = 1 + count.length;
    for (const h of heads) {
      out.set(h, at);
      at += h.length;
    }
    out.set(body, at);
    return out;
  } catch {
    return null;
  }
}

/**
 * Each Error down `cause`'s chain (itself, its `cause` if an Error, ...) as its class index and
 * name (`encodeCause`), up to `CAUSE_CHAIN` of them; the chain stops at a non-Error, an Error
 * seen already (a cycle), or a `cause` that throws when read.
 */
function errorHeads(cause: Error): Uint8Array[] {
  const heads: Uint8Array[] = [];
  const seen = new Set<unknown>();
  let e: unknown = cause;
  try {
    while (isError(e) && !seen.has(e) && heads.length < CAUSE_CHAIN) {
      seen.add(e);
      const name = headName(errorName(e));
      const head = new Uint8Array(2 + name.length);
      head[0] = classIndexOf(e);
      head[1] = name.length;
      head.set(name, 2);
      heads.push(head);
      e = causeOf(e);
    }
  } catch {
    // A hostile Error down the chain (a throwing getter or trap): the chain stops there.
  }
  return heads;
}

/** The most UTF-8 bytes of a name a head holds (its length is one byte). */
const HEAD_NAME_MAX = 255;

/** What a name cut to fit a head ends with. */
const CUT_MARK = encoder.encode("…");

/**
 * `name`'s UTF-8 bytes for a head (`errorHeads`): one over `HEAD_NAME_MAX` bytes cut at a
 * character's start to fit with `CUT_MARK` after. Before, such a name ended the heads, and an
 * Error named so first was encoded as kind 2 (node:v8 alone): its rich encoding, which carries
 * the whole name, was dropped with all it carries (an AggregateError's `errors`, its fields).
 */
function headName(name: string): Uint8Array {
  const bytes = encoder.encode(name);
  if (bytes.length <= HEAD_NAME_MAX) return bytes;
  let end = HEAD_NAME_MAX - CUT_MARK.length;
  while ((bytes[end] & 0xc0) === 0x80) end--; // not inside a character's bytes
  const cut = new Uint8Array(end + CUT_MARK.length);
  cut.set(bytes.subarray(0, end));
  cut.set(CUT_MARK, end);
  return cut;
}

/** `body` after its `kind` byte; `OVER` when that takes over `causeBytesMax` bytes. */
function withKind(kind: number, body: Uint8Array): Uint8Array | typeof OVER {
  if (body.length + 1 > causeBytesMax) return OVER;
  const out = new Uint8Array(body.length + 1);
  out[0] = kind;
  out.set(body, 1);
  return out;
}

/** @ignore `encodeCause`'s bytes back into the cause; `{ ok: false }` if they are not one. */
export function decodeCause(bytes: Uint8Array): { ok: true; cause: unknown } | { ok: false } {
  return decodeWith(bytes, true);
}

/**
 * `decodeCause`, reading a rich trailer (`withRich`) only when `rich`: a value inside a rich
 * encoding is `encodeExact`'s bytes, never one.
 */
function decodeWith(bytes: Uint8Array, rich: boolean): { ok: true; cause: unknown } | {
  ok: false;
} {
  try {
    if (bytes[0] === 1) return { ok: true, cause: unpack(bytes.subarray(1)) };
    if (bytes[0] === 2) return { ok: true, cause: deserialize(bytes.subarray(1)) };
    if ((bytes[0] === 3 || bytes[0] === 4) && bytes.length >= 3) {
      const got = rich ? readRich(bytes) : undefined;
      if (got !== undefined) return { ok: true, cause: got.cause };
      let at = 1;
      const count = bytes[0] === 3 ? 1 : bytes[at++];
      const heads: { cls: number; name: string }[] = [];
      for (let i = 0; i < count; i++) {
        // A head is its class byte and length byte, then the name: all of it within the bytes
        // (a length byte past the end would read as undefined, the name's end as NaN).
        if (at + 2 > bytes.length) return { ok: false };
        const end = at + 2 + bytes[at + 1];
        if (end > bytes.length) return { ok: false };
        putAt(heads, i, { cls: bytes[at], name: decodeUtf8(bytes.subarray(at + 2, end)) });
        at = end;
      }
      const cause = deserialize(bytes.subarray(at));
      let e: unknown = cause;
      for (let i = 0; i < heads.length; i++) {
        const { cls, name } = heads[i];
        // node:v8's copy, an Error as the engine knows it (`isError`): `instanceof` ran an own
        // Symbol.hasInstance of Error's (the receiving isolate's code) at each head.
        if (!isError(e)) break;
        const c = errorClassAt(cls);
        if (c !== undefined) setPrototype(e, c.prototype);
        nameAs(e, name);
        // Its own data property, as node:v8 copies a cause: none read through the prototype.
        e = ownField(e, "cause");
      }
      return { ok: true, cause };
    }
  } catch {
    // Not a cause this module wrote (native code's own bytes): none.
  }
  return { ok: false };
}

/**
 * A structured value's bytes back into a value, by the encoding its tag names (freed either
 * way). Bytes that are not that encoding (C code's, or garbled: the tag is all that names them)
 * are a CodecError: `node:v8` throws plain Errors for them ("Unable to deserialize cloned data").
 */
function readStructured(slot: Slot, sym: Sym, codec: string): unknown {
  const tag = slot.u32[6];
  if (ptrOf(slot) === 0 || (tag !== T_PACKED && tag !== T_STRUCTURED)) {
    return foreign(slot, sym, "structured");
  }
  const len = slot.u32[2];
  try {
    return tag === T_PACKED ? withBytes(slot, sym, unpack) : withBytes(slot, sym, deserialize);
  } catch (e) {
    // unpack's TypeError is in the house form itself: its reason only here, "received" once.
    const why = malformedReason(e) ?? (e instanceof Error ? e.message : String(e));
    throw new CodecError(
      codec,
      `Cannot receive: the value's bytes are not ${
        tag === T_PACKED ? "packed" : "node:v8"
      } data (${why}), received ${len} bytes under tag ${tag}`,
      { cause: e },
    );
  }
}

/**
 * A value in V8's structured-clone format, written by `node:v8`'s base `Serializer`: V8 writes
 * a typed array or DataView itself, as a view (offset, length) of its whole ArrayBuffer, which
 * it writes once however many views share it, as `structuredClone` does. `v8.serialize` (Node's
 * DefaultSerializer) writes each view as a host object holding only its own bytes instead: in a
 * value `pack` left to node:v8, a subarray came back as a buffer of its own at offset 0 (or a
 * view into the whole message), and views of one buffer (or a view and its buffer) came back
 * unrelated.
 */
function serialize(value: unknown): Uint8Array {
  const s = new v8.Serializer();
  s.writeHeader();
  s.writeValue(value);
  return s.releaseBuffer();
}

/**
 * `serialize`'s bytes back into the value. V8 copies each ArrayBuffer out of `bytes` (Node's
 * DefaultDeserializer made typed arrays that were views of the very bytes it read, native
 * memory freed or a pooled chunk recycled right after): `bytes` may be freed once it returns.
 */
function deserialize(bytes: Uint8Array): unknown {
  const d = new v8.Deserializer(bytes);
  d.readHeader();
  return d.readValue();
}

/**
 * A value whose tag is not one `codec` makes: the channel's values were sent with another
 * codec (a `SharedChannel` naming the wrong one). Freed, and a CodecError in the house form,
 * the tag received last (it said "(tag <n>); was the channel shared under another codec?").
 */
function foreign(slot: Slot, sym: Sym, codec: string): never {
  const tag = slotTag(slot);
  freeSlot(slot, sym);
  throw new CodecError(
    codec,
    `Cannot receive: the value was not sent with codecs.${codec} (was the channel shared ` +
      `under another codec?), received ${tag}`,
  );
}

/**
 * What a slot's tag is, for an error: `inline tag <n>` for a value in the slot, `buffer tag <n>`
 * for one in a buffer it points to.
 */
function slotTag(slot: Slot): string {
  if (ptrOf(slot) !== 0) return `buffer tag ${slot.u32[6]}`;
  // No inline kind is 0: an empty value (`isEmpty`), whose tag is in the last word.
  return slot.u32[2] === 0 ? `tag ${slot.u32[6]} with no buffer` : `inline tag ${slot.u32[2]}`;
}

/**
 * Whether `slot` (with no buffer) is an empty string or bytes under tag `tag` (KC_TAG_STRING or
 * KC_TAG_BYTES, the tags include/kcoro.h says the codecs read): a length of 0 and the tag in the
 * last word, as `putEmpty` writes it and C code's `kc_desc_make` of 0 bytes does. The codecs'
 * inline kinds are never 0.
 */
function isEmpty(slot: Slot, tag: number): boolean {
  return slot.u32[2] === 0 && slot.u32[3] === 0 && slot.u32[6] === tag && slot.u32[7] === 0;
}

/**
 * The error for a value `codecs.default` cannot read: its tag is none a codec writes (native
 * code put it there). In the house form, the tag received last (it said "unknown inline tag
 * <n>").
 */
function unknownTag(slot: Slot): CodecError {
  return new CodecError(
    "default",
    `Cannot receive: the value was not sent with a kcoro codec (its tag is none that ` +
      `codecs.default reads), received ${slotTag(slot)}`,
  );
}

/**
 * `value` through node:v8, or the CodecError saying why it cannot be. `leaf` is what `pack`
 * gave up at when that was a function or symbol (`refusedLeaf`, taken right after the `pack`):
 * node:v8 refuses the value for it, with the error it gives for that one alone, which is asked
 * instead, so the value's getters (run by the packer on its way there) do not run again.
 */
function serialise(
  value: unknown,
  codec: string,
  op = "send",
  leaf?: { leaf: unknown },
): Uint8Array {
  // One of kcoro's own objects, as the value, where `pack` gave up inside it (the first class
  // instance in plain data) or anywhere after (node:v8 refuses its `_notCloneable` symbol:
  // `refusedByClone`, below): copied, it would be a plain object without its methods, which a
  // receiver could only fail on later (a Channel in a message, Go's channel of channels; a
  // CompletableDeferred as a reply, Kotlin's actor idiom).
  const top = refusedClass(value);
  const refused = top ?? refusedClass(unpackedObject());
  if (refused !== undefined) throw refusedValue(codec, refused, top !== undefined, value, op);
  const platform = platformClass(value);
  if (platform !== undefined) {
    // node:v8 sees only own properties, and these keep their state elsewhere: the value would
    // arrive as an empty object.
    throw new CodecError(
      codec,
      `Cannot ${op}: a ${platform} is a platform object that would arrive empty (send its ` +
        `contents instead), received ${describe(value)}`,
    );
  }
  try {
    // Throws (a function or symbol is never copied); were it not to, the value as before.
    if (leaf !== undefined) serialize(leaf.leaf);
    return serialize(value);
  } catch (e) {
    const inside = refusedByClone(e);
    if (inside !== undefined) throw refusedValue(codec, inside, false, value, op);
    throw new CodecError(
      codec,
      `Cannot ${op}: the value cannot be structured-cloned, received ${describe(value)}`,
      { cause: e },
    );
  }
}

/** The CodecError for one of kcoro's objects, as the value (`top`) or inside it. */
function refusedValue(
  codec: string,
  [what, instead]: readonly [string, string],
  top: boolean,
  value: unknown,
  op: string,
): CodecError {
  return new CodecError(
    codec,
    `Cannot ${op}: ${top ? "" : "the value holds "}${what}, which lives in ` +
      `its isolate and cannot be copied (${instead}), received ${describe(value)}`,
  );
}

/** Deno's platform classes written in JavaScript, whose state node:v8 cannot see. */
const PLATFORM_CLASSES = [
  "Blob", // File too
  "Headers",
  "Request",
  "Response",
  "FormData",
  "URL",
  "URLSearchParams",
  "ReadableStream",
  "WritableStream",
  "TransformStream",
  "EventTarget", // AbortSignal, MessagePort, Worker, WebSocket, ...
  "CryptoKey",
].flatMap((name) => {
  const cls = (globalThis as Record<string, unknown>)[name];
  return typeof cls === "function"
    ? [[name, (cls as { prototype: object }).prototype] as const]
    : [];
});

/**
 * The platform class `value` is an instance of (at the top level only), if any: by its prototype
 * chain (`inherits`, against each class's prototype as the module loaded), not `instanceof`,
 * which ran a `Symbol.hasInstance` the caller gave one of those classes and a Proxy's
 * `getPrototypeOf` trap at each value that `pack` refused. A Proxy is none (node:v8 refuses it).
 */
function platformClass(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  for (let i = 0; i < PLATFORM_CLASSES.length; i++) {
    if (inherits(value, PLATFORM_CLASSES[i][1])) return PLATFORM_CLASSES[i][0];
  }
  return undefined;
}

/**
 * What a round trip through native memory gives (`putStructured`, then `readStructured`), in
 * JavaScript: `structuredClone` accepts what `node:v8` refuses (a SharedArrayBuffer, which a
 * local channel then lost when it escaped) or copies otherwise (a Blob, which comes back `{}`).
 */
function structuredPass<T>(value: T, codec: string, op = "send"): T {
  let n: number;
  try {
    n = pack(value);
  } catch (e) {
    throw packFailed(e, value, codec, op);
  }
  let copy: unknown;
  if (n >= 0) {
    fitsValue(codec, op, n);
    copy = unpack(packed().subarray(0, n));
  } else {
    const bytes = serialise(value, codec, op, refusedLeaf());
    n = bytes.length;
    fitsValue(codec, op, n);
    copy = deserialize(bytes);
  }
  // Its own copy, made here, told by the engine's tag: `instanceof` ran an own
  // Symbol.hasInstance of Uint8Array's.
  if (isBytes(copy)) (passedViewBytes ??= new WeakMap()).set(copy, n);
  return copy as T;
}

/**
 * @ignore The encoding's length of each Uint8Array that `structuredPass` made as a structured
 * value's copy (a Node `Buffer`'s on the default codec, any Uint8Array's on codecs.structured);
 * null until the first. A local channel counts such a copy's bytes (`bytesOf`) as a native one
 * counts the value, its encoding (a pooled `Buffer`'s takes its 8 KiB pool along), not its
 * length, which it counts for the Uint8Arrays sent as bytes. Before, a 10-byte `Buffer` counted
 * 10 local and 8202 shared. Made at the first, so that the bytes path asks a null only.
 */
export let passedViewBytes: WeakMap<Uint8Array, number> | null = null;

/**
 * @ignore `codec.encode(value, slot, sym, op)` for a value a local channel holds as its `pass`
 * made it, encoded when the channel escapes (its ring's, a waiting sender's): a Uint8Array that
 * `structuredPass` made as a structured value's copy (`passedViewBytes`) is encoded as the value
 * it copies would have been natively, not as the plain Uint8Array it is: on the default codec
 * as a structured value, not as bytes; through node:v8 where that value went there (a Node
 * `Buffer`, a subclass's instance, which `pack` leaves to it), not through `pack`. So it counts
 * the encoding it counted locally, and arrives at its offset in a copy of its buffer. Before, a
 * buffered pooled `Buffer`'s `bytesSent` fell from 8202 to 10 at `share()` on the default codec
 * (it arrived as a view of the library's buffer pool), and rose to 8207 on codecs.structured.
 */
export function encodePassed<T>(
  codec: Codec<T>,
  value: T,
  slot: Slot,
  sym: Sym,
  op?: string,
): void {
  // A lookup only (a WeakMap answers undefined for any other value): `instanceof` ran an own
  // Symbol.hasInstance of Uint8Array's, the caller's code, as the channel escaped.
  const n = passedViewBytes?.get(value as Uint8Array);
  const name = codec.name;
  if (n === undefined || (name !== "default" && name !== "structured")) {
    return codec.encode(value, slot, sym, op);
  }
  // `pack` writes a plain Uint8Array (the copy) in as many bytes as it wrote the value copied
  // when that was one too (codecs.structured's); else that value went through node:v8, whose
  // bytes for the copy are the same as for it. Either encoding comes back as the same view.
  let m: number;
  try {
    m = pack(value);
  } catch (e) {
    throw packFailed(e, value, name, op);
  }
  if (m === n) putBuffer(slot, packed(), T_PACKED, sym, name, op, m);
  else putBuffer(slot, serialise(value, name, op), T_STRUCTURED, sym, name, op);
}

function checkNumber(value: unknown, op = "send"): number {
  if (typeof value !== "number") {
    throw new CodecError(
      "f64",
      `Cannot ${op}: codecs.f64 carries numbers, received ${describe(value)}`,
    );
  }
  return value;
}

const f64: Codec<number> = {
  name: "f64",
  elemSize: 8,
  zeroCopy: false,
  encode(value, slot, _sym, op) {
    slot.f64[0] = checkNumber(value, op);
  },
  check(value, op) {
    checkNumber(value, op);
    return true;
  },
  decode: (slot) => slot.f64[0],
  discard() {},
  pass: checkNumber,
};

function checkU64(value: unknown, op = "send"): bigint {
  if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
    throw new CodecError(
      "u64",
      `Cannot ${op}: codecs.u64 carries bigints from 0n to 2n ** 64n - 1n, received ${
        describe(value)
      }`,
    );
  }
  return value;
}

const u64: Codec<bigint> = {
  name: "u64",
  elemSize: 8,
  zeroCopy: false,
  encode(value, slot, _sym, op) {
    slot.u64[0] = checkU64(value, op);
  },
  decode: (slot) => slot.u64[0],
  discard() {},
  pass: (value, op) => checkU64(value, op),
  check: (value, op) => (checkU64(value, op), true),
};

/**
 * @ignore Whether `value` is a Uint8Array, for codecs.bytes (and a local channel's metrics,
 * `bytesOf`): one the engine made (its typed array tag, as `describe` and the default codec's
 * `plainBytes` tell one), whatever its prototype now. Never runs the caller's code, and never
 * throws. It was `instanceof` too, which reads the
 * prototype: a real Uint8Array given another (`Object.setPrototypeOf`) was refused, though its
 * bytes are all there, a Proxy's `getPrototypeOf` trap and an own `Symbol.hasInstance` of
 * Uint8Array's ran at each send (code that could dispose the channel or close the library in
 * the middle of it), and a revoked Proxy's throw became the CodecError's `cause`. An object that
 * only inherits from Uint8Array (`Object.create(Uint8Array.prototype)`), or a Proxy of a
 * Uint8Array, has no such tag: refused, as before.
 */
export function isBytes(value: unknown): value is Uint8Array {
  // A primitive is told apart first, with no call: the getter's call on every number a local
  // channel counts (`bytesOf`) cost its trySend + tryReceive pair ~3.5 ns (~20%).
  return typeof value === "object" && value !== null && typedTag.call(value) === "Uint8Array";
}

function checkBytes(value: unknown, op = "send"): Uint8Array {
  const is = isBytes(value);
  if (!is || realLength(value) < 0) {
    const trouble = is ? viewTrouble(value) : undefined;
    throw new CodecError(
      "bytes",
      `Cannot ${op}: ${trouble ?? "codecs.bytes carries Uint8Array values"}, received ${
        describe(value)
      }`,
    );
  }
  return value;
}

/**
 * What is wrong with a Uint8Array `realLength` refused, for the message: its buffer detached
 * (transferred, or by `retire`), or a resizable buffer shrank below it; undefined for one the
 * engine did not make (a Proxy, an object that only inherits from Uint8Array).
 */
function viewTrouble(value: Uint8Array): string | undefined {
  let buffer: ArrayBufferLike;
  try {
    buffer = typedBuffer(value);
  } catch {
    return undefined;
  }
  // The engine's check, not `instanceof ArrayBuffer`, which ran ArrayBuffer's `Symbol.hasInstance`
  // (the caller's, if given one), and read the buffer's prototype: a detached buffer given
  // another was said to be "outside its buffer". False for a SharedArrayBuffer (never detached).
  if (types.isArrayBuffer(buffer) && isDetached(buffer)) {
    // A releasable chunk buffer that `retire` detached keeps a null hold: the caller released
    // every value of its chunk, and transferred nothing.
    return ReleasableHold.of(buffer) === null
      ? "the Uint8Array's buffer was detached as releaseBytes gave its chunk back (every value " +
        "of the chunk was released): it has no bytes to send"
      : "the Uint8Array's buffer was detached (transferred): it has no bytes to send";
  }
  return "the Uint8Array lies outside its buffer, which was resized below it";
}

/**
 * The engine's length of a Uint8Array, -1 for one it did not make (a Proxy, an object that
 * only inherits from one), whose own `length` could say anything.
 */
function realLength(value: Uint8Array): number {
  try {
    const n = bytesLength(value);
    // A view of a detached (transferred) buffer, or one a resizable buffer shrank out of its
    // range, reads 0 bytes: structured clone refuses it, and so does `pass` (a TypeError from
    // `slice`), so the native path must not send it as an empty value. `at` validates the view
    // the same way (TypeError) without `slice`'s species constructor, which would run a
    // subclass's constructor (user code, which may throw for a valid empty value).
    if (n === 0) atOf.call(value, 0);
    return n;
  } catch {
    return -1;
  }
}
const atOf = Uint8Array.prototype.at;

/**
 * The default codec's answer to a Uint8Array that is detached, out of bounds or not the
 * engine's: structured clone refuses it (node:v8 would send it as empty), on both paths.
 */
function refuseView(value: Uint8Array, op = "send"): never {
  throw new CodecError(
    "default",
    `Cannot ${op}: ${viewTrouble(value) ?? "the value cannot be structured-cloned"}, received ${
      describe(value)
    }`,
  );
}

/**
 * @ignore `codecs.bytes`'s decode, for a channel's tryReceive to call directly: one call site
 * for one codec, which V8 inlines, not `#codec.decode`'s, shared by every codec of the isolate.
 */
export function decodeBytes(slot: Slot, sym: Sym): Uint8Array {
  // The descriptor's words read once, through one view (not `ptrOf` here and again in
  // `receiveBytes`, each through the `u32` getter).
  const w = slot.u32;
  const at = w[0] + w[1] * 0x1_0000_0000;
  if (at === 0) {
    if (!isEmpty(slot, T_BYTES)) return foreign(slot, sym, "bytes");
    return new Uint8Array(0);
  }
  if (w[6] !== T_BYTES) return foreign(slot, sym, "bytes");
  return receiveAt(slot, sym, at, w[2]);
}

/**
 * @ignore `trySendBytes`'s first step: `value`'s byte length, or -1 when it is no Uint8Array
 * (or a view that reads as none: see `realLength`). Engine reads only (`isBytes`): no code of
 * the caller's runs, so nothing can end the channel between this and the send.
 */
export function sendLength(value: unknown): number {
  return isBytes(value) ? realLength(value) : -1;
}

/**
 * @ignore `codecs.bytes`'s encode and a try-send of the result in one native call
 * (`kc_chan_try_send_copy`), for a channel's try-send to call directly: the status of the send.
 * `n` is `sendLength(value)`. Throws what encode throws. A failed send (any status but 0) leaves
 * the value encoded in `slot` (pinned), the caller's to discard or keep, as encode then a try-send
 * of `slot` did; an empty value is sent as encode makes it (no buffer: `putEmpty`), with
 * `kc_chan_try_send(_at)`. `op` names the call in its errors, as encode's (`Codec.encode`).
 */
export function trySendBytes(
  value: unknown,
  n: number,
  slot: Slot,
  sym: Sym,
  at: Deno.PointerValue,
  handle: number,
  op = "send",
): number {
  if (n < 0) checkBytes(value, op); // throws the CodecError
  if (n === 0) {
    putEmpty(slot, T_BYTES);
    return at !== null
      ? sym.kc_chan_try_send_at(at, handle, slot.ptr, 32)
      : sym.kc_chan_try_send(handle, slot.ptr, 32);
  }
  // Both failures no-room errors (`noRoom`), as `putBuffer`'s for the same value through
  // encode: they were thrown unmarked here, so `noRoom` answered for the path, not the value.
  fitsValue("bytes", op, n);
  const rc = sym.kc_chan_try_send_copy(at, handle, value as Uint8Array, n, T_BYTES, slot.ptr);
  if (rc === Status.ENOMEM && ptrOf(slot) === 0) throw noRoomFor(noMemoryFor("bytes", op, n, rc));
  return rc;
}

const bytes: Codec<Uint8Array> = {
  name: "bytes",
  elemSize: 32,
  zeroCopy: true,
  encode(value, slot, sym, op) {
    const n = isBytes(value) ? realLength(value) : -1;
    if (n < 0) checkBytes(value, op); // throws the CodecError
    if (n === 0) putEmpty(slot, T_BYTES);
    else putBuffer(slot, value, T_BYTES, sym, "bytes", op, n);
  },
  decode: decodeBytes,
  discard: freeSlot,
  // A copy in a plain Uint8Array, as the native path gives (a Buffer's `slice` is a view).
  pass: (value, op) => {
    const v = checkBytes(value, op);
    fitsValue("bytes", op, bytesLength(v));
    return new Uint8Array(v);
  },
  check: (value, op) => (checkBytes(value, op), true),
};

function checkString(value: unknown, op = "send"): string {
  if (typeof value !== "string") {
    throw new CodecError(
      "string",
      `Cannot ${op}: codecs.string carries strings, received ${describe(value)}`,
    );
  }
  if (!value.isWellFormed()) {
    throw new CodecError(
      "string",
      `Cannot ${op}: codecs.string carries UTF-8, which has no lone surrogates, received a ` +
        `string of ${value.length} units with one (codecs.structured keeps it)`,
    );
  }
  return value;
}

const string: Codec<string> = {
  name: "string",
  elemSize: 32,
  zeroCopy: true,
  encode(value, slot, sym, op) {
    const s = checkString(value, op);
    if (s.length === 0) putEmpty(slot, T_STRING);
    else putString(slot, s, sym, "string", op);
  },
  decode(slot, sym) {
    if (ptrOf(slot) === 0) {
      return isEmpty(slot, T_STRING) ? "" : foreign(slot, sym, "string");
    }
    if (slot.u32[6] !== T_STRING) return foreign(slot, sym, "string");
    return withBytes(slot, sym, decodeString);
  },
  discard: freeSlot,
  pass: (value, op) => {
    const s = checkString(value, op);
    fitsString(s, "string", op);
    return s;
  },
  check: (value, op) => (checkString(value, op), true),
};

const structured: Codec<unknown> = {
  name: "structured",
  elemSize: 32,
  zeroCopy: true,
  encode(value, slot, sym, op) {
    putStructured(slot, value, sym, "structured", op);
  },
  decode: (slot, sym) => readStructured(slot, sym, "structured"),
  discard: freeSlot,
  pass: (value, op) => structuredPass(value, "structured", op),
  check: () => false,
};

/**
 * Whether the default codec sends `value` as bytes: a Uint8Array itself, not a subclass's
 * instance (Node's `Buffer`: structured data), told by the engine's tag and the value's
 * prototype, so that no code of the caller's runs (a Proxy is no typed array to the tag: its
 * traps are not asked). It was `instanceof` and the value's `constructor`, an own accessor of
 * which ran twice per send on a local channel (the check, then the copy) and once on a shared
 * one, where a value's code runs once per send, and whose error failed the send of bytes that
 * structured clone copies without reading it.
 */
function plainBytes(value: object): value is Uint8Array {
  return typedTag.call(value) === "Uint8Array" &&
    Object.getPrototypeOf(value) === Uint8Array.prototype;
}

const tagged: Codec<unknown> = {
  name: "default",
  elemSize: 32,
  zeroCopy: true,
  encode(value, slot, sym, op) {
    switch (typeof value) {
      case "number":
        putInline(slot, T_NUMBER);
        slot.f64[3] = value;
        return;
      case "boolean":
        putInline(slot, value ? T_TRUE : T_FALSE);
        return;
      case "undefined":
        putInline(slot, T_UNDEFINED);
        return;
      case "string":
        if (value.length === 0) putEmpty(slot, T_STRING);
        // UTF-8 has no lone surrogates: such a string goes whole through node:v8.
        else if (!value.isWellFormed()) break;
        else putString(slot, value, sym, "default", op);
        return;
      case "bigint":
        if (value >= I64_MIN && value <= I64_MAX) {
          putInline(slot, T_BIGINT);
          slot.i64[3] = value;
          return;
        }
        break;
      case "object":
        if (value === null) {
          putInline(slot, T_NULL);
          return;
        }
        if (plainBytes(value)) {
          const n = realLength(value);
          if (n < 0) refuseView(value, op);
          if (n === 0) putEmpty(slot, T_BYTES);
          else putBuffer(slot, value, T_BYTES, sym, "default", op, n);
          return;
        }
        break;
    }
    putStructured(slot, value, sym, "default", op);
  },
  decode(slot, sym) {
    if (ptrOf(slot) === 0) {
      switch (slot.u32[2]) {
        case T_NUMBER:
          return slot.f64[3];
        case T_BIGINT:
          return slot.i64[3];
        case T_TRUE:
          return true;
        case T_FALSE:
          return false;
        case T_NULL:
          return null;
        case T_UNDEFINED:
          return undefined;
        case 0: // no inline kind: an empty string or bytes (`isEmpty`)
          if (isEmpty(slot, T_STRING)) return "";
          if (isEmpty(slot, T_BYTES)) return new Uint8Array(0);
      }
      throw unknownTag(slot);
    }
    switch (slot.u32[6]) {
      case T_STRING:
        return withBytes(slot, sym, decodeDefault);
      case T_BYTES:
        return receiveBytes(slot, sym);
      case T_STRUCTURED:
      case T_PACKED:
        return readStructured(slot, sym, "default");
    }
    const error = unknownTag(slot); // read before the slot is freed
    freeSlot(slot, sym);
    throw error;
  },
  discard: freeSlot,
  pass(value, op) {
    switch (typeof value) {
      case "number":
      case "boolean":
      case "undefined":
      case "bigint":
        return value;
      case "string":
        fitsString(value, "default", op);
        return value;
      case "object":
        if (value === null) return value;
        if (plainBytes(value)) {
          // As `encode`: detached, out of bounds or not the engine's is refused, and so is one
          // too large.
          const n = realLength(value);
          if (n < 0) refuseView(value, op);
          fitsValue("default", op, n);
          // A copy made by the constructor, which reads nothing of the value's: `slice` reads
          // its `constructor` (the species), an own one of which could make the copy a
          // subclass's instance, or run the caller's getter a second time.
          return new Uint8Array(value);
        }
    }
    return structuredPass(value, "default", op);
  },
  check(value) {
    switch (typeof value) {
      case "number":
      case "boolean":
      case "undefined":
      case "string":
        return true;
      case "bigint":
        return value >= I64_MIN && value <= I64_MAX;
      case "object":
        return value === null || (plainBytes(value) && realLength(value) >= 0);
    }
    return false; // structured (or a function or symbol, which encoding rejects)
  },
};

/**
 * What a structured clone of a codec fails on (each built-in's `_notCloneable`): its message.
 * Without it the clone failed on `encode`, printing the function's source as the message.
 */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a codec: a channel knows its codec by identity; send the codec's name and take " +
    "codecs[name] on the other side",
);

refuseCloneOf("a codec", "send its name and take `codecs[name]` there", NOT_CLONEABLE);

/**
 * The built-in codecs' objects (each of `codecs`), with their names: the only codecs a channel
 * takes, so the only objects whose print and tag say `Codec`.
 */
const BUILTINS = new WeakMap<object, string>();

// A built-in codec as "a Codec" in error messages (`describe`), not an object tagged so.
nameInstances("Codec", (x) => BUILTINS.has(x) ? "a Codec" : undefined);

/**
 * Each built-in codec's inspect hook (one function, as a class's method is): the codec it is
 * called on (`this`) by its name, anything else `Codec <not a Codec>`. `WeakMap.get` answers
 * undefined for a primitive, and runs no trap of a Proxy.
 */
function inspectCodec(this: unknown, inspect: unknown, options: unknown): string {
  const name = BUILTINS.get(this as object);
  return name === undefined ? notA("Codec") : inspectAs("Codec", { name }, inspect, options);
}

/**
 * Each built-in codec's `Symbol.toStringTag` getter: `Codec` for a codec only, as
 * `inspectCodec`.
 */
function codecTag(this: unknown): string | undefined {
  return BUILTINS.has(this as object) ? "Codec" : undefined;
}

/**
 * `c` as one of `codecs`, frozen, its first field the `_notCloneable` symbol that structured
 * cloning (postMessage, structuredClone, a structured value's node:v8 copy) fails on with advice
 * (`NOT_CLONEABLE`); printed without that field (`Codec { name: "f64", ... }`), and tagged with
 * that name (`Symbol.toStringTag`, not enumerable), so `String(codec)` says `[object Codec]`, as
 * kcoro's other objects do, not `[object Object]`, and an error message naming a codec passed
 * where something else belongs says "a Codec" (`describe`, by `BUILTINS`).
 *
 * Both only for a codec itself, as a class's are only for an instance: an object derived from
 * one (`Object.create(codecs.f64)`, a Proxy of it), which inherits them and which no channel
 * takes as a codec, prints `Codec <not a Codec>` and has no tag (`[object Object]`). The hook and
 * the tag were a closure over `c` and a fixed value: such an object printed as the codec
 * (`Codec { name: "f64" }`) and a channel's error said it received `[object Codec]`.
 */
function builtin<T>(c: Codec<T>): Codec<T> {
  const out = { _notCloneable: NOT_CLONEABLE, ...c };
  Object.defineProperty(out, customInspect, { value: inspectCodec });
  Object.defineProperty(out, Symbol.toStringTag, { get: codecTag });
  BUILTINS.set(out, c.name);
  return Object.freeze(out);
}

/**
 * The built-in codecs. `default` tags each value; the typed ones skip the tag:
 * `f64` numbers, `u64` bigints, `bytes` Uint8Array, `string` strings, `structured` anything
 * `structuredClone` accepts.
 */
export const codecs: {
  readonly default: Codec<unknown>;
  readonly f64: Codec<number>;
  readonly u64: Codec<bigint>;
  readonly bytes: Codec<Uint8Array>;
  readonly string: Codec<string>;
  readonly structured: Codec<unknown>;
} = Object.freeze({
  // Each frozen too (`builtin`): a channel sizes its native element by `elemSize` and reads and
  // writes its 32-byte slot with `encode` and `decode`, so `codecs.u64.elemSize = 1 << 20` made
  // every native copy run past the slot (a segfault).
  default: builtin(tagged),
  f64: builtin(f64),
  u64: builtin(u64),
  bytes: builtin(bytes),
  string: builtin(string),
  structured: builtin(structured),
});

/**
 * @ignore Each built-in codec's type tag (include/kcoro.h's KC_CHAN_TYPE), which its channels
 * are made with: a `SharedChannel` naming another codec of the same size (f64 for u64) is
 * refused at `Channel.from` instead of reading the values as the wrong type.
 */
export const TYPE_TAGS: Readonly<Record<string, number>> = Object.freeze({
  f64: 1,
  u64: 2,
  bytes: 3,
  string: 4,
  structured: 5,
  default: 6,
});

/** @ignore The built-in codec of that name, or undefined. */
export function codecByName(name: unknown): Codec<unknown> | undefined {
  return typeof name === "string" && Object.hasOwn(codecs, name)
    ? (codecs as Record<string, Codec<unknown>>)[name]
    : undefined;
}

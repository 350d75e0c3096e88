/**
 * `Channel<T>`: a native kcoro channel from TypeScript (DESIGN.md section 4).
 *
 * - Try-operations (`trySend`, `tryReceive`) are one synchronous FFI call each.
 * - `send` / `receive` try first; an operation that must wait is queued natively and completed
 *   through the isolate's completion ring (src/bridge.ts), never blocking the event loop. A
 *   receiver and a sender waiting in the same isolate meet in JavaScript without a thread hop.
 * - Values travel through a {@linkcode Codec} (src/codec.ts): the default one tags each value.
 * - `share()` gives a plain object to `postMessage` to a Worker; `Channel.from()` opens the same
 *   native channel there.
 *
 * @example
 * ```ts
 * import { Channel } from "../mod.ts";
 * import assert from "node:assert/strict";
 * await using ch = new Channel<string>("buffered");
 * const got = ch.receive(); // waits: nothing sent yet
 * await ch.send("hello");
 * assert.equal(await got, "hello");
 * ch.close();
 * assert.deepEqual(await ch.receiveCatching(), { state: "closed" });
 * ```
 *
 * @module
 */
import { type Library, library } from "../ffi/load.ts";
import { Bridge, type RingOp } from "./bridge.ts";
import { type Codec, codecByName, type CodecName, codecs, Slot } from "./codec.ts";
import {
  CancellationError,
  ClosedReceiveError,
  ClosedSendError,
  describe,
  InvalidHandleError,
  Status,
  unwrap,
} from "./errors.ts";

/** How many values a channel buffers: a number, or one of the named kinds. */
export type Capacity = number | "rendezvous" | "buffered" | "conflated" | "unlimited";
/** What a full buffered channel does with a new value. */
export type Overflow = "suspend" | "drop-oldest" | "drop-latest";

/** Options of the {@linkcode Channel} constructor. */
export interface ChannelOptions<T> {
  /** What a full buffer does with a new value (default `"suspend"`: the sender waits). */
  overflow?: Overflow;
  /** How values travel (default {@linkcode codecs}.default). */
  codec?: Codec<T>;
  /**
   * Called in this isolate with every value the channel drops: drop policies, `cancel()`,
   * dispose, a waiting send failed by cancel. Errors it throws are reported with `reportError`.
   */
  onUndeliveredElement?: (value: T) => void;
}

/** Options of `send`, `receive`, `receiveCatching`. */
export interface WaitOptions {
  /** Aborting it rejects the operation with the signal's reason and leaves the channel intact. */
  signal?: AbortSignal;
}

/** Result of `trySend`. */
export type TrySendResult = { state: "ok" } | { state: "full" } | {
  state: "closed";
  cause?: unknown;
};
/** Result of `tryReceive`. */
export type TryReceiveResult<T> = { state: "ok"; value: T } | { state: "empty" } | {
  state: "closed";
  cause?: unknown;
};
/** Result of `receiveCatching`. */
export type ReceiveCatchingResult<T> = { state: "ok"; value: T } | {
  state: "closed";
  cause?: unknown;
};

/** A snapshot of a channel's counters (`kc_chan_snapshot`, plus this isolate's hand-offs). */
export interface ChannelMetrics {
  sends: number;
  receives: number;
  bytesSent: number;
  bytesReceived: number;
  /** Failed operations by kind: full (try-send), closed, timeout, cancelled. */
  failures: { full: number; closed: number; timeout: number; cancelled: number };
  /** Values dropped by a drop policy, cancel or destroy. */
  dropped: number;
  /** Values passed from a waiting party straight to the other. */
  handoffs: number;
  /** Time of the first and the last operation (kc_now_ns clock; 0 before any). */
  firstOpNs: number;
  lastOpNs: number;
  /** When the snapshot was taken (kc_now_ns clock). */
  takenNs: number;
}

/** What `share()` returns: plain data to `postMessage` to a Worker. */
export interface SharedChannel {
  readonly kind: "kcoro.channel";
  readonly version: 1;
  readonly handle: number;
  readonly elemSize: number;
  readonly zeroCopy: boolean;
  readonly codec: CodecName;
  readonly capacity: number;
}

const TRY = 1;
const CONFLATED = 1, ZERO_COPY = 2;
const UNLIMITED = 0xffff_ffff;
const OVERFLOW: Record<Overflow, number> = { "suspend": 0, "drop-oldest": 1, "drop-latest": 2 };

const OK: { state: "ok" } = Object.freeze({ state: "ok" });
const FULL: { state: "full" } = Object.freeze({ state: "full" });
const EMPTY: { state: "empty" } = Object.freeze({ state: "empty" });
const CLOSED: { state: "closed" } = Object.freeze({ state: "closed" });

/** One slot for synchronous operations (JavaScript runs one at a time per isolate). */
const scratch = new Slot();

/**
 * What every Channel object naming one native channel shares in this isolate: the close
 * cause and the operations waiting here (for same-isolate hand-offs).
 */
class Shared {
  closed = false;
  cancelled = false;
  cause: unknown = undefined;
  hasCause = false;
  /** Receivers and senders queued in the ring from this isolate, oldest first. */
  readonly receivers: Waiter[] = [];
  readonly senders: Waiter[] = [];
  /** Values handed over in JavaScript (not seen by the native counters). */
  handoffs = 0;
  refs = 0;
}

const shared = new Map<number, Shared>();

function sharedOf(handle: number): Shared {
  let s = shared.get(handle);
  if (s === undefined) {
    s = new Shared();
    shared.set(handle, s);
  }
  s.refs++;
  return s;
}

const SEND = 0, RECV = 1, RECV_CATCHING = 2;

/** A send or receive queued in the ring (or about to be handed over in JavaScript). */
class Waiter implements RingOp {
  ticket = 0;
  /** Set when `abort` said KC_EBUSY: its record is coming, no one may hand it a value. */
  completing = false;
  readonly kind: number;
  readonly ch: Channel<unknown>;
  readonly slot: Slot;
  readonly value: unknown;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
  signal: AbortSignal | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    kind: number,
    ch: Channel<unknown>,
    slot: Slot,
    value: unknown,
    resolve: (v: unknown) => void,
    reject: (e: unknown) => void,
  ) {
    this.kind = kind;
    this.ch = ch;
    this.slot = slot;
    this.value = value;
    this.resolve = resolve;
    this.reject = reject;
  }

  /** Leaves its queue and drops its abort listener. */
  detach(): void {
    const q = this.kind === SEND ? this.ch._shared.senders : this.ch._shared.receivers;
    const i = q.indexOf(this);
    if (i >= 0) q.splice(i, 1);
    if (this.onAbort !== undefined) this.signal!.removeEventListener("abort", this.onAbort);
  }

  complete(status: number): void {
    this.detach();
    this.ch._completed(this, status);
  }
}

/**
 * A channel of `T` values over a native kcoro channel; see the module documentation.
 *
 * @example
 * ```ts
 * import { Channel } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using ch = new Channel<number>(2, { overflow: "drop-oldest" });
 * ch.trySend(1);
 * ch.trySend(2);
 * ch.trySend(3); // drops 1
 * assert.deepEqual(ch.tryReceive(), { state: "ok", value: 2 });
 * assert.equal(ch.metrics().dropped, 1);
 * ```
 */
export class Channel<T> implements AsyncIterable<T>, Disposable, AsyncDisposable {
  readonly #lib: Library;
  readonly #handle: number;
  readonly #codec: Codec<T>;
  readonly #size: number;
  readonly #capacity: number;
  readonly #owner: boolean;
  readonly #keeps: boolean;
  readonly #dropping: boolean;
  readonly #onUndelivered: ((value: T) => void) | undefined;
  /** @internal */
  readonly _shared: Shared;
  #disposed = false;

  constructor(capacity: Capacity = "rendezvous", options: ChannelOptions<T> = {}) {
    if ((capacity as unknown) === fromToken) {
      const o = open(options as unknown);
      this.#lib = o.lib;
      this.#handle = o.handle;
      this.#codec = o.codec as Codec<T>;
      this.#size = o.codec.elemSize;
      this.#capacity = o.capacity;
      this.#owner = false;
      this.#keeps = false;
      this.#dropping = false;
      this.#onUndelivered = undefined;
      this._shared = sharedOf(o.handle);
      return;
    }
    const op = "create channel";
    if (options === null || typeof options !== "object") {
      throw new TypeError(`Cannot ${op}: options must be an object, received ${describe(options)}`);
    }
    const { overflow = "suspend", codec = codecs.default as Codec<T>, onUndeliveredElement } =
      options;
    if (!Object.hasOwn(OVERFLOW, overflow)) {
      throw new RangeError(
        `Cannot ${op}: overflow must be "suspend", "drop-oldest" or "drop-latest", received ${
          describe(overflow)
        }`,
      );
    }
    if (codecByName(codec?.name) !== codec) {
      throw new TypeError(
        `Cannot ${op}: codec must be one of codecs.default, f64, u64, bytes, string, structured, received ${
          describe(codec)
        }`,
      );
    }
    if (onUndeliveredElement !== undefined && typeof onUndeliveredElement !== "function") {
      throw new TypeError(
        `Cannot ${op}: onUndeliveredElement must be a function, received ${
          describe(onUndeliveredElement)
        }`,
      );
    }
    let cap: number;
    let flags = codec.zeroCopy ? ZERO_COPY : 0;
    let ov = OVERFLOW[overflow];
    switch (capacity) {
      case "rendezvous":
        cap = 0;
        break;
      case "buffered":
        cap = 64;
        break;
      case "unlimited":
        cap = UNLIMITED;
        ov = 0;
        break;
      case "conflated":
        if (overflow !== "suspend" && overflow !== "drop-oldest") {
          throw new RangeError(
            `Cannot ${op}: a conflated channel drops the oldest value, received overflow ${
              describe(overflow)
            }`,
          );
        }
        cap = 1;
        ov = OVERFLOW["drop-oldest"];
        flags |= CONFLATED;
        break;
      default:
        if (typeof capacity !== "number") {
          throw new TypeError(
            `Cannot ${op}: capacity must be a number, "rendezvous", "buffered", "conflated" or "unlimited", received ${
              describe(capacity)
            }`,
          );
        }
        if (!Number.isInteger(capacity) || capacity < 0 || capacity >= UNLIMITED) {
          throw new RangeError(
            `Cannot ${op}: capacity must be an integer from 0 to ${UNLIMITED - 1}, received ${
              describe(capacity)
            }`,
          );
        }
        cap = capacity;
        if (cap === 0 && ov !== 0) cap = 1; // rendezvous + a drop policy = a 1-slot buffer
    }
    const lib = library();
    const sym = lib.symbols(op);
    const out = new Uint32Array(1);
    unwrap(sym.kc_chan_create(codec.elemSize, cap, ov, flags, out), op);
    const handle = out[0];
    // Zero-copy values own native buffers: whatever the channel drops must come back here to
    // be freed (and handed to onUndeliveredElement).
    const keeps = codec.zeroCopy || onUndeliveredElement !== undefined;
    if (keeps) unwrap(sym.kc_chan_keep_undelivered(handle), op);
    this.#lib = lib;
    this.#handle = handle;
    this.#codec = codec;
    this.#size = codec.elemSize;
    this.#capacity = cap;
    this.#owner = true;
    this.#keeps = keeps;
    this.#dropping = ov !== 0 && cap !== UNLIMITED;
    this.#onUndelivered = onUndeliveredElement;
    this._shared = sharedOf(handle);
  }

  /** The native handle (for the C ABI). */
  get handle(): number {
    return this.#handle;
  }

  /** The codec values travel with. */
  get codec(): Codec<T> {
    return this.#codec;
  }

  /** @internal For select: the library's symbols (throws once disposed or closed). */
  _symbols(op: string): ReturnType<Library["symbols"]> {
    return this.#sym(op);
  }

  /** @internal For select: the library this channel lives in. */
  get _lib(): Library {
    return this.#lib;
  }

  /** @internal For select: the rejection of a send that found the channel closed/cancelled. */
  _sendError(status: number): unknown {
    return this.#sendError(status);
  }

  /** @internal For select: the rejection of a receive that found it closed/cancelled. */
  _receiveError(status: number): unknown {
    return this.#receiveError(status);
  }

  /** @internal For select: `{ state: "closed", cause? }`. */
  _closedResult(): { state: "closed"; cause?: unknown } {
    return this.#closedResult();
  }

  /**
   * @internal For select, after a send clause fired with `status`: a send to a dropping
   * channel may have dropped a value; a queued send failed by cancel left its value in the
   * kept list. Both go to onUndeliveredElement.
   */
  _afterSend(status: number, queued: boolean): void {
    if (status === 0 ? this.#dropping : queued && status === Status.ECANCELED) this.#collect();
  }

  #sym(op: string) {
    if (this.#disposed) {
      throw new InvalidHandleError(`Cannot ${op}: the channel was disposed`);
    }
    return this.#lib.symbols(op);
  }

  #closedResult(): { state: "closed"; cause?: unknown } {
    const s = this._shared;
    return s.hasCause ? { state: "closed", cause: s.cause } : CLOSED;
  }

  #sendError(status: number): unknown {
    const s = this._shared;
    if (status === Status.ECANCELED) {
      return new CancellationError("Channel was cancelled", s.hasCause ? { cause: s.cause } : {});
    }
    return s.hasCause ? s.cause : new ClosedSendError();
  }

  #receiveError(status: number): unknown {
    const s = this._shared;
    if (status === Status.ECANCELED) {
      return new CancellationError("Channel was cancelled", s.hasCause ? { cause: s.cause } : {});
    }
    return s.hasCause ? s.cause : new ClosedReceiveError();
  }

  /** Hands every value the channel dropped (kept natively) to onUndeliveredElement. */
  #collect(): void {
    if (!this.#keeps || !this.#lib.isOpen) return;
    const sym = this.#lib.symbols("collect undelivered values");
    const slot = new Slot();
    while (sym.kc_chan_take_undelivered(this.#handle, slot.u8, this.#size) === 1) {
      if (this.#onUndelivered === undefined) {
        this.#codec.discard(slot, sym);
        continue;
      }
      try {
        this.#onUndelivered(this.#codec.decode(slot, sym));
      } catch (e) {
        reportError(e);
      }
    }
  }

  /**
   * Sends without waiting: `ok` (sent, or dropped by drop-latest), `full`, or `closed`.
   * Throws {@linkcode CodecError} for a value the codec cannot carry.
   */
  trySend(value: T): TrySendResult {
    const sym = this.#sym("send");
    const s = this._shared;
    if (s.receivers.length !== 0 && this.#handOff(value)) return OK;
    this.#codec.encode(value, scratch, sym);
    const rc = sym.kc_chan_send(this.#handle, scratch.u8, this.#size, 0n, 0, TRY);
    if (rc === 0) {
      if (this.#dropping) this.#collect();
      return OK;
    }
    this.#codec.discard(scratch, sym);
    if (rc === Status.EAGAIN) return FULL;
    if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#closedResult();
    unwrap(rc, "send");
    return FULL;
  }

  /** Gives `value` to a receiver waiting in this isolate; false if none could take it. */
  #handOff(value: T): boolean {
    const s = this._shared;
    if (s.closed) return false;
    for (const r of s.receivers) {
      if (r.completing) continue;
      const passed = this.#codec.pass(value);
      if (Bridge.of(this.#lib).abort(r) !== 0) {
        r.completing = true;
        continue;
      }
      r.detach();
      s.handoffs++;
      r.resolve(r.kind === RECV ? passed : { state: "ok", value: passed });
      return true;
    }
    return false;
  }

  /** Takes the value of a sender waiting in this isolate; undefined if none. */
  #takeFromSender(): { value: T } | undefined {
    const s = this._shared;
    for (const w of s.senders) {
      if (w.completing) continue;
      if (Bridge.of(this.#lib).abort(w) !== 0) {
        w.completing = true;
        continue;
      }
      w.detach();
      s.handoffs++;
      const value = this.#codec.decode(w.slot, this.#lib.symbols("receive"));
      w.resolve(undefined);
      return { value };
    }
    return undefined;
  }

  /**
   * Receives without waiting: `ok` with the value, `empty`, or `closed` (closed and drained).
   */
  tryReceive(): TryReceiveResult<T> {
    const sym = this.#sym("receive");
    if (this.#capacity === 0 && this._shared.senders.length !== 0) {
      const got = this.#takeFromSender();
      if (got !== undefined) return { state: "ok", value: got.value };
    }
    const rc = sym.kc_chan_recv(this.#handle, scratch.u8, this.#size, 0n, 0, TRY);
    if (rc === 0) return { state: "ok", value: this.#codec.decode(scratch, sym) };
    if (rc === Status.EAGAIN) {
      if (this._shared.senders.length !== 0) {
        const got = this.#takeFromSender();
        if (got !== undefined) return { state: "ok", value: got.value };
      }
      return EMPTY;
    }
    if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#closedResult();
    unwrap(rc, "receive");
    return EMPTY;
  }

  /**
   * Sends, waiting while the channel is full. Rejects with {@linkcode ClosedSendError} (or the
   * close cause) once closed, {@linkcode CancellationError} if cancelled, the signal's reason if
   * aborted (the value is then never delivered).
   */
  send(value: T, options?: WaitOptions): Promise<void> {
    let r: TrySendResult;
    const signal = options?.signal;
    try {
      if (signal?.aborted) return Promise.reject(signal.reason);
      r = this.trySend(value);
    } catch (e) {
      return Promise.reject(e);
    }
    if (r === OK) return Promise.resolve();
    if (r.state === "closed") return Promise.reject(this.#sendError(this.#statusOfClosed()));
    return this.#wait(SEND, value, signal);
  }

  #statusOfClosed(): number {
    return this._shared.cancelled ? Status.ECANCELED : Status.EPIPE;
  }

  /**
   * Receives, waiting while the channel is empty. Rejects with {@linkcode ClosedReceiveError}
   * (or the close cause) once closed and drained, {@linkcode CancellationError} if cancelled,
   * the signal's reason if aborted.
   */
  receive(options?: WaitOptions): Promise<T> {
    return this.#receive(RECV, options) as Promise<T>;
  }

  /** As `receive`, but a closed channel resolves `{ state: "closed", cause? }`. */
  receiveCatching(options?: WaitOptions): Promise<ReceiveCatchingResult<T>> {
    return this.#receive(RECV_CATCHING, options) as Promise<ReceiveCatchingResult<T>>;
  }

  #receive(kind: number, options?: WaitOptions): Promise<unknown> {
    let r: TryReceiveResult<T>;
    const signal = options?.signal;
    try {
      if (signal?.aborted) return Promise.reject(signal.reason);
      r = this.tryReceive();
    } catch (e) {
      return Promise.reject(e);
    }
    if (r.state === "ok") return Promise.resolve(kind === RECV ? r.value : r);
    if (r.state === "closed") {
      if (kind === RECV_CATCHING) return Promise.resolve(r);
      return Promise.reject(this.#receiveError(this.#statusOfClosed()));
    }
    return this.#wait(kind, undefined, signal);
  }

  /** Queues an operation in the ring (after the try failed). */
  #wait(kind: number, value: unknown, signal: AbortSignal | undefined): Promise<never> {
    const { promise, resolve, reject } = Promise.withResolvers<never>();
    let sym;
    try {
      sym = this.#sym(kind === SEND ? "send" : "receive");
    } catch (e) {
      return Promise.reject(e);
    }
    const slot = new Slot();
    if (kind === SEND) {
      try {
        this.#codec.encode(value as T, slot, sym);
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const bridge = Bridge.of(this.#lib);
    const w = new Waiter(
      kind,
      this as Channel<unknown>,
      slot,
      value,
      resolve as (v: unknown) => void,
      reject,
    );
    const rc = bridge.submit(kind !== SEND, this.#handle, slot.u8, this.#size);
    if (rc === 1) {
      w.ticket = bridge.ticket;
      (kind === SEND ? this._shared.senders : this._shared.receivers).push(w);
      bridge.track(w);
      if (signal !== undefined) {
        w.signal = signal;
        w.onAbort = () => {
          if (bridge.abort(w) !== 0) {
            w.completing = true; // completed first: its record settles it
            return;
          }
          w.detach();
          if (kind === SEND) this.#codec.discard(slot, sym);
          reject(signal.reason);
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      return promise;
    }
    this.#settle(w, rc, false);
    return promise;
  }

  /** @internal A ring record for `w` arrived. */
  _completed(w: Waiter, status: number): void {
    const bridge = Bridge.of(this.#lib);
    if (!this.#lib.isOpen) {
      w.reject(new InvalidHandleError("Cannot complete: the kcoro library is closed"));
      return;
    }
    const value = status === 0 && w.kind !== SEND;
    bridge.take(w, value ? w.slot.u8 : null, value ? this.#size : 0);
    this.#settle(w, status, true);
  }

  #settle(w: Waiter, status: number, queued: boolean): void {
    const sym = this.#lib.symbols("complete");
    if (w.kind === SEND) {
      if (status === 0) {
        if (this.#dropping) this.#collect();
        w.resolve(undefined);
        return;
      }
      // A waiting send failed by cancel: the native side kept its value with the dropped ones
      // (the creator's onUndeliveredElement gets it); otherwise the value is still ours.
      if (queued && status === Status.ECANCELED) this.#collect();
      else this.#codec.discard(w.slot, sym);
      w.reject(
        status === Status.EPIPE || status === Status.ECANCELED
          ? this.#sendError(status)
          : new InvalidHandleError(`Cannot send: status ${status}`),
      );
      return;
    }
    if (status === 0) {
      let v: T;
      try {
        v = this.#codec.decode(w.slot, sym);
      } catch (e) {
        w.reject(e);
        return;
      }
      w.resolve(w.kind === RECV ? v : { state: "ok", value: v });
      return;
    }
    if (status === Status.EPIPE || status === Status.ECANCELED) {
      if (w.kind === RECV_CATCHING) w.resolve(this.#closedResult());
      else w.reject(this.#receiveError(status));
      return;
    }
    try {
      unwrap(status, "receive");
    } catch (e) {
      w.reject(e);
    }
  }

  /**
   * Closes the channel: true the first time, false after. Buffered values stay receivable;
   * receivers waiting on an empty channel are rejected (or resolved closed by receiveCatching).
   */
  close(cause?: unknown): boolean {
    const sym = this.#sym("close channel");
    const first = unwrap(sym.kc_chan_close(this.#handle), "close channel") === 1;
    if (first) {
      const s = this._shared;
      s.closed = true;
      if (arguments.length > 0 && cause !== undefined) {
        s.cause = cause;
        s.hasCause = true;
      }
    }
    return first;
  }

  /**
   * Cancels: closes, drops buffered values (each to onUndeliveredElement) and rejects every
   * waiting sender and receiver with {@linkcode CancellationError}.
   */
  cancel(cause?: unknown): void {
    const sym = this.#sym("cancel channel");
    const s = this._shared;
    if (!s.closed && cause !== undefined) {
      s.cause = cause;
      s.hasCause = true;
    }
    s.closed = true;
    s.cancelled = true;
    unwrap(sym.kc_chan_cancel(this.#handle), "cancel channel");
    this.#collect();
  }

  /** True once closed (no send will succeed). */
  get isClosedForSend(): boolean {
    return (unwrap(
      this.#sym("read channel status").kc_chan_status(this.#handle),
      "read channel status",
    ) & 1) !== 0;
  }

  /** True once closed and drained (no receive will succeed). */
  get isClosedForReceive(): boolean {
    return (unwrap(
      this.#sym("read channel status").kc_chan_status(this.#handle),
      "read channel status",
    ) & 2) !== 0;
  }

  /** A snapshot of the channel's counters. */
  metrics(): ChannelMetrics {
    const w = new BigUint64Array(13);
    unwrap(
      this.#sym("read channel metrics").kc_chan_snapshot(this.#handle, w, 13),
      "read channel metrics",
    );
    const n = (i: number) => Number(w[i]);
    const js = this._shared.handoffs;
    return {
      sends: n(0) + js,
      receives: n(1) + js,
      bytesSent: n(2),
      bytesReceived: n(3),
      failures: { full: n(4), closed: n(5), timeout: n(6), cancelled: n(7) },
      dropped: n(8),
      handoffs: n(12) + js,
      firstOpNs: n(9),
      lastOpNs: n(10),
      takenNs: n(11),
    };
  }

  /** Plain data naming this native channel, to `postMessage` to a Worker. */
  share(): SharedChannel {
    this.#sym("share channel");
    return {
      kind: "kcoro.channel",
      version: 1,
      handle: this.#handle,
      elemSize: this.#size,
      zeroCopy: this.#codec.zeroCopy,
      codec: this.#codec.name,
      capacity: this.#capacity,
    };
  }

  /**
   * Opens a channel from `share()`'s object (in a Worker, or anywhere in the process). Throws
   * a TypeError for anything not shaped like one and {@linkcode InvalidHandleError} when the
   * handle names no live channel. Disposing the result does not cancel or destroy the channel:
   * its creator owns it.
   */
  static from<T>(shared: SharedChannel): Channel<T> {
    return new Channel<T>(fromToken as unknown as Capacity, shared as unknown as ChannelOptions<T>);
  }

  /** Receives until the channel is closed; rethrows the close cause if one was given. */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    while (true) {
      const r = await this.receiveCatching();
      if (r.state === "closed") {
        if ("cause" in r) throw r.cause;
        return;
      }
      yield r.value;
    }
  }

  /** Cancels and destroys the native channel (a `Channel.from` copy only detaches). */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    if (!this.#lib.isOpen) {
      this.#disposed = true;
      return;
    }
    if (this.#owner) {
      const sym = this.#lib.symbols("dispose channel");
      this.cancel();
      this.#disposed = true;
      sym.kc_chan_destroy(this.#handle);
      this.#collect();
    }
    this.#disposed = true;
    const s = this._shared;
    if (--s.refs === 0) shared.delete(this.#handle);
  }

  /** As `[Symbol.dispose]`. */
  [Symbol.asyncDispose](): Promise<void> {
    try {
      this[Symbol.dispose]();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

const fromToken = Symbol("Channel.from");

/** Checks a `share()` object and the handle it names. */
function open(
  x: unknown,
): { lib: Library; handle: number; codec: Codec<unknown>; capacity: number } {
  const op = "open shared channel";
  const bad = (why: string): never => {
    throw new TypeError(`Cannot ${op}: ${why}, received ${describe(x)}`);
  };
  if (x === null || typeof x !== "object") {
    return bad("expected the object channel.share() returns");
  }
  const o = x as Record<string, unknown>;
  if (o.kind !== "kcoro.channel" || o.version !== 1) {
    return bad('expected kind "kcoro.channel" and version 1 (from channel.share())');
  }
  const { handle, elemSize, zeroCopy, capacity } = o;
  if (
    typeof handle !== "number" || !Number.isInteger(handle) || handle <= 0 || handle > UNLIMITED
  ) {
    return bad("handle must be a 32-bit channel handle");
  }
  const codec = codecByName(o.codec);
  if (codec === undefined) return bad(`unknown codec ${describe(o.codec)}`);
  if (elemSize !== codec.elemSize || zeroCopy !== codec.zeroCopy) {
    return bad(`elemSize and zeroCopy do not match codec ${codec.name}`);
  }
  if (
    typeof capacity !== "number" || !Number.isInteger(capacity) || capacity < 0 ||
    capacity > UNLIMITED
  ) {
    return bad("capacity must be an integer");
  }
  const lib = library();
  const status = lib.symbols(op).kc_chan_status(handle);
  if (status < 0) {
    throw new InvalidHandleError(
      `Cannot ${op}: handle ${handle} names no live channel (stale, destroyed or forged)`,
    );
  }
  return { lib, handle, codec, capacity };
}

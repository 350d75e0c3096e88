/**
 * `Channel<T>`: a native kcoro channel from TypeScript (README: "Channels from TypeScript").
 *
 * - A channel whose handle never left this isolate's JavaScript (`handle`, `share`, `select`) is
 *   local: its values wait in a JavaScript ring and its waiters in JavaScript, so no operation
 *   calls into the library (nothing else could see the difference). The first escape moves the
 *   ring's values into the native channel, oldest first, and the channel stays native.
 * - Otherwise try-operations (`trySend`, `tryReceive`) are one synchronous FFI call each, or
 *   none when the channel's mapped ready or blocked byte already answers them; `send` /
 *   `receive` try first, and an operation that must wait waits in JavaScript until the end of
 *   its turn, where a partner of the same isolate takes it over without an FFI call or a thread
 *   hop; then it is queued natively and completed through the isolate's completion ring
 *   (src/bridge.ts), never blocking the event loop.
 * - An owning channel dropped without `[Symbol.dispose]` is destroyed when garbage collected,
 *   unless its handle left it.
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
import {
  beforeClose,
  beforeFirstOpen,
  inWorker,
  isLibraryOpen,
  type Library,
  library,
  libraryAt,
  librarySymbols,
  loadedIdOf,
  onClose,
  type OpenTable,
  openTableOf,
  symbolsToReleaseOf,
} from "../ffi/load.ts";
import { Bridge, ringLostError, type RingOp } from "./bridge.ts";
import { isCancellation } from "./job.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";
import { bytesLength } from "./pack.ts";
import {
  type Codec,
  codecByName,
  type CodecName,
  codecs,
  decodeBytes,
  decodeCause,
  descBytes,
  encodeCause,
  encodePassed,
  giveSlot,
  isBytes,
  noRoom,
  passedViewBytes,
  sendLength,
  Slot,
  takeSlot,
  trySendBytes,
  TYPE_TAGS,
} from "./codec.ts";
import {
  abortHeard,
  abortReason,
  CancellationError,
  checkFunction,
  checkOptionNames,
  checkOptions,
  ClosedReceiveError,
  ClosedSendError,
  describe,
  InvalidHandleError,
  isAborted,
  isRevoked,
  KcoroError,
  LibraryClosedError,
  LibraryPermissionError,
  listenAbortNamed,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  reportUncaught,
  signalOf,
  Status,
  statusError,
  unlistenAbort,
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
   * dispose, a send (not a `trySend`) that fails on a closed or cancelled channel, and a send
   * (or a select's `onSend`) that its signal's abort cancelled before it was delivered, a
   * `Channel.from` copy's in another isolate too. Errors it throws are reported with
   * `reportError` (one per value) and change nothing of the call that ran it: a failed send
   * still rejects with the close's error, `trySend`, `cancel()` and dispose do not throw.
   */
  onUndeliveredElement?: (value: T) => void;
}
/** ChannelOptions' names: any other own key is refused (`checkOptionNames`). */
const CHANNEL_OPTIONS = optionNames<ChannelOptions<unknown>>({
  overflow: true,
  codec: true,
  onUndeliveredElement: true,
});

/**
 * The codecs a channel takes (`codecs`' own, a frozen set), told by identity: the constructor's
 * check reads nothing of what it was given. Before, it read `codec.name`, which threw the
 * engine's bare "Cannot perform 'get' on a proxy that has been revoked" for a revoked Proxy
 * and ran a getter or trap of the caller's.
 */
const OWN_CODECS: ReadonlySet<unknown> = new Set(Object.values(codecs));

/** Options of `send`, `receive`, `receiveCatching`. */
export interface WaitOptions {
  /**
   * Aborting it rejects the operation with the signal's reason and leaves the channel intact: a
   * receive that took a value natively as the abort came (its record not drained yet) gives it
   * back to the channel, in front; a send delivered first resolves, one not delivered hands its
   * value to onUndeliveredElement (Kotlin's cancelled send).
   */
  signal?: AbortSignal;
}

/**
 * Result of `trySend`. `closed` carries what `send` rejects with: the close cause, the
 * cancel's `CancellationError`, else a {@linkcode ClosedSendError} (Kotlin's `trySend` answers
 * `closed(sendException)`).
 */
export type TrySendResult = { state: "ok" } | { state: "full" } | {
  state: "closed";
  cause: unknown;
};
/** Result of `tryReceive`. */
export type TryReceiveResult<T> = { state: "ok"; value: T } | { state: "empty" } | {
  state: "closed";
  cause?: unknown;
};
/**
 * Result of `trySendMany`: how many of the values, from the first, were sent (at least 1).
 * `closed` carries what `trySend`'s does.
 */
export type TrySendManyResult = { state: "ok"; sent: number } | { state: "full" } | {
  state: "closed";
  cause: unknown;
};
/** Result of `tryReceiveMany`: the values received, oldest first (never an empty list). */
export type TryReceiveManyResult<T> = { state: "ok"; values: T[] } | { state: "empty" } | {
  state: "closed";
  cause?: unknown;
};
/** Result of `receiveCatching`. */
export type ReceiveCatchingResult<T> = { state: "ok"; value: T } | {
  state: "closed";
  cause?: unknown;
};

/** A snapshot of a channel's counters (`kc_chan_snapshot`: every isolate's operations). */
export interface ChannelMetrics {
  /**
   * Sends that succeeded, including those whose value a drop policy then dropped. A value that
   * went back to the channel (a terminated Worker's receive had taken it, or an aborted receive's
   * abort lost to it: README.md, "Native channels", on the bridge) counts as sent once, also
   * while it waits to go back in.
   */
  sends: number;
  /**
   * Receives that succeeded (values dropped from the buffer were never received). A receive
   * whose value went back to the channel (see `sends`) is not one: it counts in
   * `failures.cancelled`.
   */
  receives: number;
  /**
   * Bytes of the values sent: the 8-byte slot per value for `codecs.f64` and `codecs.u64`; for
   * the zero-copy codecs each value's encoded length. A zero-copy value never encoded (a local
   * channel's, or one a same-isolate hand-off passed as it was) counts less: a Uint8Array its
   * length (its encoding, as natively, where it crosses as a structured value: a Node `Buffer` on
   * the default codec, any on codecs.structured), anything else 0. One a waiting sender encoded
   * (an object at its call, any value once queued natively) counts its encoding, taken in
   * JavaScript too.
   */
  bytesSent: number;
  /** Bytes of the values received, counted as `bytesSent` counts them. */
  bytesReceived: number;
  /**
   * Failed operations by kind, one per failed operation (a select on its clause's channel):
   * full (a try-send that found no room; a `send` that waits counts the try it makes first, a
   * native blocking send none), closed (an operation that failed with the channel closed,
   * whether it found it so or a close failed its wait), timeout, cancelled (one that failed
   * with the channel cancelled, found so or failed waiting by a cancel, and a wait aborted by
   * its signal, wherever it waited). An operation whose signal was aborted before the call
   * counts nothing at all (as a native one whose token was cancelled beforehand): it rejects
   * before it reaches the channel.
   */
  failures: { full: number; closed: number; timeout: number; cancelled: number };
  /**
   * Values dropped by a drop policy, cancel or destroy, and the values of sends (not `trySend`s)
   * that failed on a closed or cancelled channel, or that their signal's abort cancelled before
   * they were delivered, and went to the undelivered path.
   */
  dropped: number;
  /** Values passed from a waiting party straight to the other. */
  handoffs: number;
  /**
   * When the first operation ran, in nanoseconds on the `kc_now_ns` (monotonic) clock; 0 before
   * any. The counters' clock ticks at the coarse clock's granularity (1 ms on a 1000 Hz kernel,
   * 4 ms on a 250 Hz one; within 1-10 ms), so this is to a tick.
   */
  firstOpNs: number;
  /** When the latest operation ran, as `firstOpNs` (same clock and resolution; 0 before any). */
  lastOpNs: number;
  /** When the snapshot was taken (kc_now_ns clock). */
  takenNs: number;
}

/**
 * What a structured clone of a Channel fails on (`Channel._notCloneable`): its message. V8 cuts
 * the middle out of a description much longer than this one in the DataCloneError's message.
 */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a Channel: it lives in its isolate; postMessage its share() and open that with " +
    "Channel.from() in the Worker",
);

/** What a shared channel is to the task that owns it: see {@linkcode SharedChannel.role}. */
export type ChannelRole = "producer" | "actor";

/** Type only (declared, never made): the key of {@linkcode SharedChannel}'s element brand. */
declare const elementType: unique symbol;

/**
 * What `share()` returns: plain data to `postMessage` to a Worker. `T` is the channel's element
 * type, for the type checker only (the object carries no field for it): `Channel.from(shared)`
 * infers it, and a `SharedChannel<string>` is refused where a `SharedChannel<number>` is
 * expected. A plain `SharedChannel` (of `unknown`, what a message's type usually says) is taken
 * for any element type.
 */
export interface SharedChannel<T = unknown> {
  /** Marks the object as a shared channel; `Channel.from` checks it. */
  readonly kind: "kcoro.channel";
  /** The format of this object; `Channel.from` takes version 1 only. */
  readonly version: 1;
  /** The native channel's handle (a 32-bit number, valid in every isolate of the process). */
  readonly handle: number;
  /** Bytes per native slot: the codec's `elemSize` (8, or 32 for a descriptor). */
  readonly elemSize: number;
  /** True when the slots are descriptors of native buffers: the codec's `zeroCopy`. */
  readonly zeroCopy: boolean;
  /** The codec the values travel with; `Channel.from` uses the built-in codec of that name. */
  readonly codec: CodecName;
  /** The capacity the channel was made with, in values (0: rendezvous; 2^32 - 1: unlimited). */
  readonly capacity: number;
  /**
   * The file of the library the channel lives in (`Library.path` where it was shared, absolute).
   * An isolate that has not opened the library yet (a Worker) opens this file for
   * `Channel.from`, instead of searching again; one that opened another file refuses the
   * handle. Absent (objects made by hand): `Channel.from` uses `library()`.
   */
  readonly library?: string;
  /**
   * What the channel is to the task that owns it, when `share()` was called on the channel of a
   * `produce` (`"producer"`) or on an actor's mailbox (`"actor"`); absent for any other channel.
   * It names that task in the CancellationError a copy answers once the isolate running it
   * ended mid-task (`KC_WATCH_OWNED`: "the isolate running its producer ended ..."); nothing
   * else reads it. `Channel.from` refuses any other value; absent (objects made by hand, or
   * from a plain channel), the message says "its producer or actor", until a copy of the same
   * isolate is opened with the role: reads from then on name it (`Shared.learnRole`).
   */
  readonly role?: ChannelRole;
  /**
   * @ignore Never present: the element type `T`, for the type checker. A method's parameter, so
   * compared both ways (bivariant): `SharedChannel<number>` and `SharedChannel<unknown>` are
   * taken for each other, `SharedChannel<string>` for neither.
   */
  [elementType]?(value: T): void;
}

/** Microtasks in which a send waiting for room looks again before the end of its turn. */
const SEND_RETRIES = 4;
/** Uses of a channel before its flags are mapped into JavaScript (see `Channel.#ready`). */
const MAP_AFTER = 16;
const CONFLATED = 1, ZERO_COPY = 2;
/** Where kc_chan_create's flags and kc_chan_info's fourth word keep the type tag (KC_CHAN_TYPE). */
const TYPE_SHIFT = 8;
const UNLIMITED = 0xffff_ffff;
/** The largest bounded capacity (`kc_chan_create` refuses more). */
const MAX_CAPACITY = 2 ** 31;
const OVERFLOW: Record<Overflow, number> = { "suspend": 0, "drop-oldest": 1, "drop-latest": 2 };

/**
 * @ignore Throws unless `capacity` is one a channel takes: a TypeError for what is not a number
 * or one of the names, a RangeError for a number out of range, worded for `op` (the channel's
 * constructor, and `produce` and `actor` under their own names before they make theirs).
 */
export function checkCapacity(op: string, capacity: unknown): asserts capacity is Capacity {
  switch (capacity) {
    case "rendezvous":
    case "buffered":
    case "unlimited":
    case "conflated":
      return;
  }
  if (typeof capacity !== "number") {
    throw new TypeError(
      `Cannot ${op}: capacity must be a number, "rendezvous", "buffered", "conflated" or "unlimited", received ${
        describe(capacity)
      }`,
    );
  }
  // A native buffer takes a power of two of slots, 2^31 at most (and a local channel may go
  // native later: `share`, `select`).
  if (!Number.isInteger(capacity) || capacity < 0 || capacity > MAX_CAPACITY) {
    throw new RangeError(
      `Cannot ${op}: capacity must be an integer from 0 to ${MAX_CAPACITY}, received ${
        describe(capacity)
      }`,
    );
  }
}

const OK: { state: "ok" } = Object.freeze({ state: "ok" });
/** What a send that completed at once returns (a settled promise can be shared). */
const RESOLVED: Promise<void> = Promise.resolve();
const FULL: { state: "full" } = Object.freeze({ state: "full" });
const EMPTY: { state: "empty" } = Object.freeze({ state: "empty" });
/** `#handOff`: a receiver of this isolate took the value. */
const HANDED = Symbol("handed");
/**
 * `#handOff`: the native try-send decides (a receiver may be queued natively ahead of this
 * isolate's), and receivers of this isolate are queued natively: it may complete one of them.
 */
const VIA_RING = Symbol("via the ring");
/** `#handOff`: as VIA_RING, the value already copied for this isolate, in `viaRingCopy`. */
const VIA_RING_COPY = Symbol("via the ring, copied");
/** The copy `#handOff` made, for `#trySend` to send, with VIA_RING_COPY; else undefined. */
let viaRingCopy: unknown = undefined;
const CLOSED: { state: "closed" } = Object.freeze({ state: "closed" });

/**
 * This isolate's `--allow-ffi` (for all paths) as it was when this module loaded: "granted" lets
 * the module-lifetime slots take their address at import (`scratchPtr`).
 */
const ffiState: string = Deno.permissions.querySync({ name: "ffi" }).state;

/**
 * One slot for synchronous operations (JavaScript runs one at a time per isolate), passed to the
 * try-operations by address: an ArrayBuffer's backing store never moves, and a pointer argument
 * keeps the call on V8's fast path. Pinned (its address taken, which needs `--allow-ffi`) when
 * the library is first opened, not at import (see `scratchPtr`).
 */
const scratch = new Slot(new ArrayBuffer(32), ffiState === "granted");
/** The batches of the `…Many` operations that run no caller code meanwhile (grown as needed). */
let batch = new Uint8Array(64 * 32);

/** True while a trySendMany fills `batch`: reading its values may run the caller's code. */
let batchBusy = false;

/** `batch`, at least `bytes` long (a fresh buffer while `batch` is being filled). */
function batchOf(bytes: number): Uint8Array {
  if (batchBusy) return new Uint8Array(bytes);
  if (batch.byteLength < bytes) batch = new Uint8Array(Math.max(bytes, 2 * batch.byteLength));
  return batch;
}

/** `scratch` holding element `i` (of `size` bytes) of a batch. */
function slotAt(buf: Uint8Array, i: number, size: number): Slot {
  scratch.u8.set(buf.subarray(i * size, (i + 1) * size));
  return scratch;
}
/**
 * `e`, a value of a `tryReceiveMany` batch failing to decode, with the batch's other values
 * (taken out of the channel already) as its `received` property, oldest first, so that none is
 * lost. A thrown value that cannot take a property hands them to nobody.
 */
function withReceived(e: unknown, values: unknown[]): unknown {
  if (e !== null && (typeof e === "object" || typeof e === "function") && Object.isExtensible(e)) {
    Object.defineProperty(e, "received", { value: values, configurable: true, writable: true });
  }
  return e;
}

/** The most values one `tryReceiveMany` takes. */
const MAX_BATCH = 65_536;
/** The most dropped values one operation hands to onUndeliveredElement (see `#collect`). */
const COLLECT_BATCH = 65_536;
/**
 * The most values dropped while the hook ran that one call hands it (`#undelivered`, after the
 * value it was called for; each later macrotask's drain too), as README says.
 */
const HOOK_BATCH = 65_536;
/**
 * `scratch`'s address, a constant every try-operation passes: taken at import where `--allow-ffi`
 * is granted then (a `let` set at the first open instead cost the shared try pair ~0.9 ns, 23.6
 * -> 24.5 ns, `deno bench`), else null, and the first open refuses to go on (see below): without
 * the permission nothing native can run, and taking an address at import made importing this
 * module need it (a NotCapable at load, also for a script using only scopes and jobs).
 */
const scratchPtr = scratch.ptr;
/** `scratch` as a number (`codecs.f64`'s slot, written and read without a call to the codec). */
const scratchF64 = scratch.f64;

/**
 * What an operation on a cancelled channel fails with, as Kotlin's `cancel(cause)` makes it: a
 * cause that is a {@linkcode CancellationError} (a TimeoutError too, or another copy of this
 * module's) is that very error, in every operation (another isolate's: its decoded copy, of the
 * same class, `encodeCause`); any other cause is wrapped in a CancellationError, as its
 * `cause`; none, a CancellationError without one. Before, a CancellationError cause was wrapped
 * too ("Channel was cancelled"), so an actor's handler saw its scope's cancellation only as the
 * `cause` of another.
 *
 * The wrapper is one object per channel and isolate (`Shared.cancelError`), made at its first
 * use, as Kotlin's operations all throw the channel's one close cause: a closed result's `cause`
 * is the very error `receive` rejects with. Before, each call made one, equal but not the same.
 * Made again only if the cause it wraps changed since (one read later from the native channel,
 * `#lookCause`, where it had none). Never shared across isolates: each has its own `Shared`.
 */
function cancelledError(s: Shared): unknown {
  if (s.hasCause && isCancellation(s.cause)) return s.cause;
  const of = s.hasCause ? s.cause : NO_CAUSE;
  let e = s.cancelError;
  if (e === undefined || !Object.is(s.cancelErrorOf, of)) {
    e = new CancellationError("Channel was cancelled", s.hasCause ? { cause: s.cause } : {});
    s.cancelError = e;
    s.cancelErrorOf = of;
  }
  if (!s.hasCause) s.lastCancel = e; // an end by the creator reuses it (`Channel.#markEnded`)
  return e;
}

/**
 * @ignore What a subclass of Channel hears of its channel (produce.ts's producer channel,
 * actor.ts's mailbox), given once by `hookChannel` as the channel is made; a Channel has none.
 * Kept in `hooksOf`, which nothing outside this module reads, so that no caller reaches them:
 * as public methods (`_learntDestroyed`, `_escaped`, `_abortDrops`) a consumer's
 * `out._learntDestroyed(x)` cancelled a producer's task with `x`, and as methods keyed by
 * symbols this module exported, `Object.getOwnPropertySymbols` of the channel's prototype still
 * found them (`out[learntDestroyed](x)` did the same).
 */
export interface ChannelHooks {
  /**
   * Called once, in a microtask, after `ch` (its owner) learnt native code destroyed the channel
   * (`#destroyedUnder`), with the channel's cause: `produce` cancels its task there, as its watch
   * does.
   */
  learntDestroyed(ch: object, cause: unknown): void;
  /**
   * Called once, when `ch` escapes (its handle read or shared): from then on another isolate or
   * native code may end it. `produce`'s channel and `actor`'s mailbox start watching for a
   * cancel there (`watchCancelOf`).
   */
  escaped(ch: object): void;
  /**
   * The subclass's own cancel of `ch` (no cause), which Channel's dispose runs (a producer's
   * cancels its task too): not the `cancel` member the object's prototype has when the dispose
   * runs, which a caller may have redefined.
   */
  cancel(ch: object): void;
  /**
   * The subclass's own dispose of `ch`, which Channel's `[Symbol.asyncDispose]` runs (`cancel`).
   */
  dispose(ch: object): void;
}

/** The hooks of the channels that have some (`ChannelHooks`): a producer's, a mailbox. */
const hooksOf = new WeakMap<object, ChannelHooks>();

/** @ignore Gives `ch` its hooks (`ChannelHooks`), once, as it is made, before it can escape. */
export function hookChannel<T>(ch: Channel<T>, hooks: ChannelHooks): void {
  if (hooksOf.has(ch)) {
    throw new TypeError(`Cannot hook channel: it has its hooks already, received ${describe(ch)}`);
  }
  hooksOf.set(ch, hooks);
}

/** `Shared.cancelErrorOf` for a cancel without a cause. */
const NO_CAUSE: unique symbol = Symbol("no cause");

/** The cause of a copy's channel that its creator ended, when no wait got one to reuse. */
const ENDED = "Channel was cancelled: its creator disposed of it";

/**
 * What a `Channel.from` copy that found the end itself says when it cannot tell who ended the
 * channel (its creator is of another isolate, or C): its creator's dispose and native code's
 * `kc_chan_destroy` both leave the handle dead (KC_EBADH, as `kc_chan_status` says too).
 */
const ENDED_EITHER =
  "Channel was cancelled: its creator disposed of it or native code destroyed it (kc_chan_destroy)";

/**
 * The cause of a channel cancelled because the isolate whose `produce` fed it, or whose `actor`
 * read it as its mailbox, ended mid-task (a Worker terminated or closed: its ring went away with
 * the task's owned watch queued, `watchCancelOf`), as each other isolate's copy reads it
 * (`#lookCause`). The native cancel stores no cause (no isolate is left to) and kc_chan_status's
 * bit 2 is the same for both, so which of the two it was comes from the `share()` object the
 * copy was opened from (`SharedChannel.role`, `Shared.role`); without one it says both.
 */
function ownerGone(role: ChannelRole | undefined): string {
  return `Channel was cancelled: the isolate running its ${
    role ?? "producer or actor"
  } ended (a Worker terminated or closed, or its library closed) while it ran`;
}

/** What a watch of a channel that native code destroyed first tells (`watchCancelOf`). */
const DESTROYED = "Channel was cancelled: native code destroyed it (kc_chan_destroy: KC_EBADH)";

/**
 * The channel whose own operation raised each InvalidHandleError about that channel (disposed; its
 * handle dead, for `handle` and `share()`): `isOwnError` asks it, so that `produce` and
 * `actor` take only their own channel's error as that channel's end, not one their block let
 * out of another channel (a bug of the block's, which fails it). A WeakMap, not a field of the
 * error: nothing shows it (the error's keys, its structured clone, a cause `encodeCause` sends
 * to another isolate), and a copy of the error (another isolate's) names no channel.
 */
const raisedBy = new WeakMap<object, object>();

/** `Shared.detour`'s bits. */
const D_LOCAL = 1, D_ENDED = 2, D_SENDERS = 4, D_RECEIVERS = 8, D_INSIDE = 16, D_SELECTS = 32;
/** `Channel.#gate`'s bits. */
const GATE_DISPOSED = 1, GATE_INSIDE = 2;

/**
 * The handle a native call on a channel that ended under its object is given instead of the
 * dead one (`Channel.#handle`): kind 0 and generation 0, which no handle table ever hands out
 * (zig-src/handle.zig), and never the value of a channel's handle word (0 while free, else a
 * live channel's handle), so every call answers KC_EBADH, the mapped `_at` ones too (their word
 * compare fails), and acts on no channel (tests/dispose_test.ts pins that).
 */
const ENDED_HANDLE = 1;

/**
 * What every Channel object naming one native channel shares in this isolate: the close
 * cause and the operations waiting here (for same-isolate hand-offs).
 */
class Shared {
  closed = false;
  cancelled = false;
  /**
   * Closed before any cancel (this isolate's close, or kc_chan_status bit 3 read by
   * `Channel.#cancelledFirst`): a later cancel only drops the buffered values, and every
   * operation answers as on the closed channel (its close cause, else ClosedReceiveError or
   * ClosedSendError), as Kotlin's channels keep their first cause. `closedFirstLooked`: the
   * native status was read once the channel was seen cancelled (the order it tells is final).
   */
  closedFirst = false;
  closedFirstLooked = false;
  cause: unknown = undefined;
  hasCause = false;
  /** The native channel's close cause was looked for (`Channel.#lookCause`). */
  causeLooked = false;
  /**
   * Why a try-operation may not take its inlined native path (`Channel.trySend`, `tryReceive`):
   * the `D_LOCAL`, `D_ENDED`, `D_SENDERS`, `D_RECEIVERS` and `D_INSIDE` bits, 0 when none
   * applies, so that path reads one field, not five (`local`, `ended`, both queues' `first`
   * and `inside`). `local`, `ended` and `inside` are these bits; each WaitQueue keeps its own bit
   * set while it holds a waiter (it is the only writer of its `first`).
   */
  detour = 0;
  /**
   * The native channel was destroyed under this isolate's `Channel.from` copies (its creator's
   * dispose, or native code's `kc_chan_destroy`), which only a destroy can do to a channel they
   * hold, or under its creator not disposed (native code's destroy, as it learnt:
   * `Channel.#destroyedUnder`): its handle is dead, and may name a later channel once its slot is
   * reused. They then answer as on a cancelled channel (`closed`, `cancelled`, and a cause)
   * without a native call (`Channel.#markEnded`). Before, each call threw InvalidHandleError,
   * `close()` too (a creator's each but close() and cancel()).
   * Set once, never cleared.
   */
  get ended(): boolean {
    return (this.detour & D_ENDED) !== 0;
  }
  set ended(yes: true) {
    this.detour |= D_ENDED;
  }
  /** The CancellationError a wait here last rejected with for a cancel without a cause. */
  lastCancel: unknown = undefined;
  /**
   * While `Channel.#settleEnded` settles this isolate's waits on the channel: the objects whose
   * settle left a `#collect` to its end (`Channel.#collectSettled`), so that every wait the
   * close or cancel failed is settled before onUndeliveredElement runs, as a local channel's
   * `#localDrop` settles them (`NO_COLLECTS` until the first is left); null otherwise.
   */
  collectDue: Channel<unknown>[] | null = null;
  /**
   * What the channel is to the task that owns it (`SharedChannel.role`): set by `produce` and
   * `actor` on their channel's entry, and by the first `Channel.from` here given a `role`.
   * `share()` passes it on; `ownerGone` names it.
   */
  role: ChannelRole | undefined = undefined;
  /**
   * `cause` when `#lookCause` made it for the end of the isolate running the channel's producer
   * or actor (`ownerGone`), before the role was known (its message says "its producer or
   * actor"): `learnRole` makes it again naming the role.
   */
  ownerGoneUnnamed: CancellationError | undefined = undefined;

  /**
   * A `Channel.from` copy here was given the channel's `role` (`SharedChannel.role`): the first
   * one known is kept. An owner-gone cause read before any was known, which says "its producer
   * or actor", is made again naming it, so that every read from now on (a receive, a closed
   * result, the copies opened before this one too) says what it is known to be, as a copy
   * opened with the role from the start says. The errors handed out before keep theirs (an
   * error a caller holds is not changed under it). Before, the message made at the first look
   * stayed the channel's whatever a later copy told.
   */
  learnRole(role: ChannelRole | undefined): void {
    if (role === undefined || this.role !== undefined) return;
    this.role = role;
    const unnamed = this.ownerGoneUnnamed;
    if (unnamed === undefined) return;
    this.ownerGoneUnnamed = undefined;
    if (this.hasCause && this.cause === unnamed) {
      this.cause = new CancellationError(ownerGone(role));
    }
  }
  /**
   * The channel's creator is of this isolate (its object made this entry). Its dispose marks
   * the channel ended here itself (`Channel.#markEnded`), so a copy of this isolate that finds
   * the handle dead first can only have met native code's destroy: its cause says so.
   */
  creatorHere = false;
  /**
   * The other objects of this isolate for the channel whose gate (`Channel.#handle`, a field of
   * each) `Channel.#markEnded` closes with its own: the creator's once it is native
   * (`Channel.#materialize`: from then on a `Channel.from` copy of this isolate, which may learn
   * the end first, may be opened from its handle's value, whether `share()` or `handle` gave
   * it out or not: a share object built with the value opens one too), and each `Channel.from`
   * copy of this isolate (`join`). Weak: an undisposed copy the caller dropped stays
   * collectable (its `copyHolds` finalizer gives its hold back), and the creator too
   * (`orphans`). Dead ones are pruned as the list doubles, and
   * both are let go once ended (no object joins an ended entry: `#markEnded` takes it out of
   * `shared`).
   *
   * `owner` is also how a copy that finds native code's destroy first makes the creator learn it
   * (`Channel.#creatorEnded`: `#destroyedUnder`, as the creator's own call would: its hook takes
   * what the destroy dropped and its sends' values still waiting in JavaScript, and `produce` and
   * `actor` hear of it, `ChannelHooks.learntDestroyed`), for the same copies, however opened; it is
   * read only while the channel has not ended, so `#markEnded` letting it go costs that nothing.
   * Before, a `creator` of its own, set by the first `share()` only: a copy opened from `handle`'s
   * value or a share object built with it (an owner made native by a select) found the destroy with
   * no creator to tell, which learnt it only from its own next call (its hook had nothing until
   * then, the values of its sends waiting in JavaScript were freed, and `produce` was not told).
   */
  owner: WeakRef<Channel<unknown>> | undefined = undefined;
  copies: WeakRef<Channel<unknown>>[] | null = null;
  copiesPruneAt = 8;

  /** A `Channel.from` copy of this isolate joined the entry: see `copies`. */
  join(ch: Channel<unknown>): void {
    let copies = this.copies;
    if (copies === null) copies = this.copies = [];
    copies.push(new WeakRef(ch));
    if (copies.length < this.copiesPruneAt) return;
    this.copies = copies = copies.filter((r) => r.deref() !== undefined);
    this.copiesPruneAt = Math.max(8, 2 * copies.length);
  }
  /** `cancelledError`'s wrapper, made once, and the cause it wraps (`NO_CAUSE`: none). */
  cancelError: CancellationError | undefined = undefined;
  cancelErrorOf: unknown = undefined;
  /** Receivers and senders waiting in this isolate (in JavaScript or in the ring). */
  readonly receivers: WaitQueue = new WaitQueue(this, D_RECEIVERS);
  readonly senders: WaitQueue = new WaitQueue(this, D_SENDERS);
  /**
   * The receive clauses (`selectReceives`) and send clauses (`selectSends`) on the channel of
   * this isolate's selects queued natively, counted from the queueing until each select settles
   * (`countSelect`). While any is, a send (a receive) of this isolate that succeeds natively may
   * have completed one of their receive (send) clauses, and settles that select before it
   * returns (`Channel.#settleReceivers`, `#settleSenders`), as it settles a plain wait of the
   * isolate it completes; the `D_SELECTS` bit of `detour` keeps the inlined try paths, which
   * settle nothing, from being taken meanwhile. Before, the select settled when the ring drained,
   * and an abort in between rejected it and put the value back into the channel, though the send
   * had answered ok (`selectReceives`); none was counted since cdde240, which dropped a count of
   * the selects for the order rule (the waiting and ready bytes tell that), not for this.
   */
  selectReceives = 0;
  selectSends = 0;
  /** A select's clause on the channel (`send`: a send clause) is counted (1) or no more (-1). */
  countSelect(send: boolean, by: 1 | -1): void {
    if (send) this.selectSends += by;
    else this.selectReceives += by;
    if (this.selectSends + this.selectReceives > 0) this.detour |= D_SELECTS;
    else this.detour &= ~D_SELECTS;
  }
  /**
   * The counts below are operations this isolate completed in JavaScript that the native
   * counters have not seen yet: `flushCounts` reports them (kc_chan_add_metrics), where every
   * isolate and C's kc_chan_snapshot see them, and zeroes them. A local channel's history is
   * reported when it escapes; a shared channel's at the end of the turn it happened in (the
   * `Bridge.defer` flush, `Channel.#countLater`), before `metrics()` reads, and before a dispose
   * lets go of the handle. `metrics()` adds what is still here to the native snapshot.
   *
   * Values handed over in JavaScript (each a send, a receive and a hand-off).
   */
  handoffs = 0;
  /**
   * Try-sends this isolate answered "full" from the mapped flag (or a local ring), without a
   * call.
   */
  fullFails = 0;
  /** The library and native channel that `flushCounts` reports to (null until it is native). */
  lib: Library | null = null;
  handle = 0;
  /** Its key in `shared` (`sharedKey`): the handle's value and the loaded library it names. */
  key = 0;
  /**
   * The native channel's serial (kc_chan_serial: no other channel of the process has it), as
   * u32 halves: what `Channel.#dropIfStale` and `orphans` compare with the serial of the channel
   * the handle's value names now, with no object of the entry dereferenced (a deref keeps its
   * target alive to the end of the task: a copy dropped undisposed, never collected while a loop
   * opened copies in each task). Read once, as the entry is made (`#materialize`, `Channel.from`),
   * while the channel is known to be this entry's; 0 and 0 if it was dead by then (no channel has
   * serial 0: any the value names later differs). Before, they compared the channel's shape
   * (kc_chan_info), which told no later channel of the same shape apart.
   */
  serialLo = 0;
  serialHi = 0;
  refs = 0;
  /** A flush is due at the end of this turn (Bridge.defer). */
  scheduled = false;
  /**
   * Something outside this isolate's JavaScript may use the channel: its handle was read
   * (`handle`: native code, select) or shared (`share`, `Channel.from`). Until then only this
   * isolate's own operations can complete its waiters, so they wait in JavaScript for good and
   * are never queued natively (no FFI call, no ring wait, no thread hop per event-loop turn).
   */
  escaped = false;
  /**
   * Reachable from outside this isolate's JavaScript for good: its handle was read (`handle`) or
   * shared (`share()`, `Channel.from`). A `select` makes a channel native (`escaped`) but not
   * outside: until then only this isolate's own native calls can complete its native waits,
   * which therefore keep no ring wait outstanding (`inside`; `Bridge.touch`).
   */
  outside = false;
  /**
   * Native (`escaped`) but not `outside`: the `D_INSIDE` bit of `detour`, so that the inlined
   * try paths, which call the library with no `Channel.#sym` (where `Bridge.touch` is called),
   * are not taken.
   */
  get inside(): boolean {
    return (this.detour & D_INSIDE) !== 0;
  }
  /** A microtask will look for room for the senders waiting here (Channel.#retrySends). */
  retrying = false;

  /**
   * Sets `escaped`; the first time, its waits, all still in JavaScript (a local channel's never
   * leave it), are counted from now on (`WaitQueue.local`).
   */
  escape(): void {
    if (this.escaped) return;
    this.escaped = true;
    for (const q of [this.senders, this.receivers]) {
      let n = 0;
      for (let w = q.first; w !== null; w = w.next) n++;
      q.local = n;
    }
  }
  /**
   * Isolate-local: the channel has not escaped (above) and its values wait in `ring`, in
   * JavaScript, not in the native buffer: a try-operation is no FFI call at all. The first
   * escape moves them into the native channel (`Channel.#migrate`) and ends this for good.
   * Invariants while local (every waiter waits in JavaScript): receivers wait only while the
   * ring is empty; senders only while it is full (or the channel is a rendezvous).
   * The `D_LOCAL` bit of `detour`.
   */
  get local(): boolean {
    return (this.detour & D_LOCAL) !== 0;
  }
  set local(yes: boolean) {
    this.detour = yes ? this.detour | D_LOCAL : this.detour & ~D_LOCAL;
  }
  /** The local values, oldest at `head`, `count` of them (a power-of-two ring that grows). */
  ring: unknown[] = EMPTY_RING;
  head = 0;
  count = 0;
  /** Counters of local operations (reported natively when the channel escapes; see above). */
  localSends = 0;
  localReceives = 0;
  localBytesIn = 0;
  localBytesOut = 0;
  localClosed = 0;
  localCancelled = 0;
  /** Selects of this isolate won by `onTimeout` with a clause on the channel (`#countTimeout`). */
  localTimeouts = 0;
  localDropped = 0;
  firstNs = 0;
  lastNs = 0;
  /** The counters' clock word (kc_clock_word) as two halves, and its halves as last seen. */
  clock: Uint32Array | null = null;
  clockLo = -1;
  clockHi = -1;

  /** Appends `v` to the local ring (growing it when full). */
  push(v: unknown): void {
    let ring = this.ring;
    if (this.count === ring.length) ring = this.grow();
    ring[(this.head + this.count) & (ring.length - 1)] = v;
    this.count++;
  }

  /** Takes the oldest local value (`count` must be above 0). */
  shift(): unknown {
    const ring = this.ring;
    const v = ring[this.head];
    ring[this.head] = undefined;
    this.head = (this.head + 1) & (ring.length - 1);
    this.count--;
    return v;
  }

  grow(): unknown[] {
    const old = this.ring;
    const ring = new Array<unknown>(Math.max(4, old.length * 2)).fill(undefined);
    for (let i = 0; i < this.count; i++) ring[i] = old[(this.head + i) & (old.length - 1)];
    this.head = 0;
    return this.ring = ring;
  }
  /**
   * What `orphans` needs to destroy the channel once its owning object is garbage; `orphanLib`
   * null when there is nothing to do (not owned here, disposed, or its handle left the object).
   */
  orphanLib: Library | null = null;
  orphanHandle = 0;
  orphanCodec: Codec<unknown> | null = null;
  orphanKeeps = false;
  /**
   * The owner holds it (kc_chan_hold): a Worker's channel (`Channel.#materialize`), or one a
   * `Channel.from` copy of this isolate was opened for (`Channel.#holdForCopy`). `orphans` gives
   * that hold back rather than taking one of its own.
   */
  orphanHeld = false;

  /**
   * The end of a turn: this turn's counts are reported natively, and operations still waiting
   * in JavaScript queue natively, oldest first.
   */
  flush(): void {
    this.scheduled = false;
    this.flushCounts();
    this.flushNow();
  }

  /**
   * Reports the counts kept here (see `handoffs`) to the native channel and zeroes them. Once
   * the library is closed they are dropped: this isolate can no longer read the channel's
   * metrics, and another isolate misses the counts of this turn that the close did not flush
   * first (`Bridge`'s close flushes what was deferred to the end of the turn, so normally none).
   */
  flushCounts(): void {
    const lib = this.lib;
    if (
      lib === null ||
      this.handoffs === 0 && this.fullFails === 0 && this.localSends === 0 &&
        this.localReceives === 0 && this.localClosed === 0 && this.localCancelled === 0 &&
        this.localTimeouts === 0 && this.localDropped === 0 && this.lastNs === 0
    ) return; // (bytes come with sends and receives, the first time with the last)
    if (isLibraryOpen(lib)) {
      // Each word as two u32 halves: no BigInt made per word.
      const w = addWords, h = this.handoffs;
      put(w, 0, this.localSends + h);
      put(w, 1, this.localReceives + h);
      put(w, 2, this.localBytesIn); // a zero-copy channel's, hand-offs' included (else 0)
      put(w, 3, this.localBytesOut);
      put(w, 4, this.fullFails);
      put(w, 5, this.localClosed);
      put(w, 6, this.localTimeouts);
      put(w, 7, this.localCancelled);
      put(w, 8, this.localDropped);
      put(w, 9, this.firstNs);
      put(w, 10, this.lastNs);
      put(w, 12, h);
      // A dead handle (destroyed by its owner meanwhile) has no counters left to add to.
      librarySymbols(lib, "report channel metrics").kc_chan_add_metrics(this.handle, w, 13);
    }
    this.handoffs =
      this.fullFails =
      this.localSends =
      this.localReceives =
        0;
    this.localBytesIn =
      this.localBytesOut =
      this.localClosed =
      this.localCancelled =
      this.localTimeouts =
        0;
    this.localDropped = this.firstNs = this.lastNs = 0;
  }

  /** Operations still waiting in JavaScript queue natively, oldest first. */
  flushNow(): void {
    if (this.senders.first !== null) flushAll(this.senders);
    if (this.receivers.first !== null) flushAll(this.receivers);
  }
}

/**
 * Waiters, oldest first: an intrusive list (leaving it is O(1) and allocates nothing). The
 * first waiter's `prev` is the last one: a push stores into this long-lived object only when
 * the queue was empty (each store of a fresh waiter here costs a write barrier's slow path).
 */
class WaitQueue {
  first: Waiter | null = null;
  /**
   * Once its channel is native (`Shared.escaped`), how many of its waiters are still in
   * JavaScript (state LOCAL), so that `waitsInJavaScript` and `pump` (native paths only) need no
   * walk of the queue: counted as the channel escapes (`Shared.escape`: every waiter is LOCAL
   * then), one more as a wait is queued (`Channel.#wait`, the one `push`, of a LOCAL waiter),
   * one less as one leaves LOCAL: queued natively (`Channel.#submit`, the one change from LOCAL
   * to QUEUED), or taken out while LOCAL (`Waiter.detach`; `Waiter.leave`, the other removal,
   * is a local channel's hand-off only), each setting DONE. QUEUED and COMPLETING waits change
   * state uncounted (only a native withdrawal, of a queued wait, makes COMPLETING). 0 while the
   * channel is local, whose waits are all LOCAL: its hand-offs, a same-isolate ping-pong's
   * whole cost, count nothing. Before, a drop policy's every send and receive walked both
   * queues (`Channel.#collectAfter`), and every receive and try-receive the receivers (`pump`):
   * O(n) in the waits queued natively.
   */
  local = 0;
  /** The channel's state, whose `detour` has `bit` set while this queue holds a waiter. */
  readonly #of: Shared;
  readonly #bit: number;

  constructor(of: Shared, bit: number) {
    this.#of = of;
    this.#bit = bit;
  }

  push(w: Waiter): void {
    const f = this.first;
    w.next = null;
    if (f === null) {
      w.prev = w;
      this.first = w;
      this.#of.detour |= this.#bit;
    } else {
      const l = f.prev!;
      w.prev = l;
      l.next = w;
      f.prev = w;
    }
  }

  /** `remove(w)` of its first waiter `w`. */
  shift(w: Waiter): void {
    const n = w.next;
    this.first = n;
    if (n !== null) n.prev = w.prev;
    else this.#of.detour &= ~this.#bit;
    w.prev = w.next = null;
  }

  remove(w: Waiter): void {
    const f = this.first!, n = w.next, p = w.prev!;
    if (w === f) {
      this.first = n;
      if (n !== null) n.prev = p;
      else this.#of.detour &= ~this.#bit;
    } else {
      p.next = n;
      if (n === null) f.prev = p;
      else n.prev = p;
    }
    w.prev = w.next = null;
  }
}

/** The ring of a local channel that never held a value (`Shared.grow` makes a real one). */
const EMPTY_RING: unknown[] = [];

/**
 * This isolate's entry for each native channel its objects name, by `sharedKey`: the handle's
 * value and the loaded library whose handle table gave it. Not by `Library` object: the library
 * stays loaded once opened, so one opened again from the same file after `closeLibrary()` is the
 * same loaded library, whose handles name the same channels. A copy opened then from a share()
 * object of the closed one's joins the closed one's owner's entry, as it must: the owner's
 * dispose (through the closed library's symbols) ends the channel for it (`#markEnded`). Nor is
 * an entry of the closed library ever stale for the reopened one: it is the same channel's, and
 * it leaves the table once the channel ends under this isolate (`#markEnded`, also at that
 * dispose), the last of its objects goes (dispose, `copyHolds`) or the owner is collected
 * (`orphans`). Another file (`KCORO_LIB` pointing elsewhere when the library was opened again)
 * is another loaded library, with a handle table of its own whose values are the closed one's
 * (the first channel of each has the same): keyed by the handle's value alone, a copy opened
 * from a channel of the new one joined the entry of a live channel of the old one, and that
 * owner's dispose ended the copy's live channel here (closed as cancelled, "its creator disposed
 * of it"), and a destroy the copy learnt of ended the owner's channel here, which its dispose
 * then never destroyed.
 */
const shared = new Map<number, Shared>();

/**
 * The key in `shared` of handle `handle` of `lib`: the number of the loaded library it names
 * (`loadedIdOf`: the same for each open of one file) above the handle's 32 bits.
 */
function sharedKey(lib: Library, handle: number): number {
  return loadedIdOf(lib) * 0x1_0000_0000 + handle;
}

/**
 * Where kc_chan_serial writes for `Shared.serialLo` (a u64 as u32 halves); `orphans` has its
 * own.
 */
const serialWords = new Uint32Array(2);

/**
 * `handle` names a live channel that is not `s`'s (its serial differs from `Shared.serialLo`'s):
 * a later channel given the value once the slot's generation wrapped (~523,000 frees), `s`'s
 * destroyed unseen here. False for `s`'s own, and for a dead handle (whoever acts on it next
 * finds it dead). `w`: the caller's words for kc_chan_serial.
 */
function laterChannel(
  sym: ReturnType<Library["symbols"]>,
  s: Shared,
  handle: number,
  w: Uint32Array,
): boolean {
  if (sym.kc_chan_serial(handle, w) !== 0) return false;
  return w[0] !== s.serialLo || w[1] !== s.serialHi;
}

/** Files the serial of `handle`'s channel in `s` (`Shared.serialLo`; 0 and 0 if dead). */
function fileSerial(sym: ReturnType<Library["symbols"]>, s: Shared, handle: number): void {
  const dead = sym.kc_chan_serial(handle, serialWords) !== 0;
  s.serialLo = dead ? 0 : serialWords[0];
  s.serialHi = dead ? 0 : serialWords[1];
}

/** `Shared.flushCounts`'s 13 u64 words as u32 halves (kc_chan_snapshot's layout; 6, 11 stay 0). */
const addWords = new Uint32Array(26);

/** Word `i` of `w` (u64 words as little-endian u32 halves) set to `x` (an integer below 2^53). */
function put(w: Uint32Array, i: number, x: number): void {
  w[2 * i] = x >>> 0;
  w[2 * i + 1] = Math.floor(x / 0x1_0000_0000);
}

// Buffers that FFI calls write into, made once: a fresh one costs ~1 µs on these machines (V8
// gives a typed array handed to FFI a backing store of its own), most of what making a channel
// native cost. Nothing runs between a call and the read of what it wrote, except for `dropSlot`
// (see #collect).
const outWords = new Uint32Array(4);
/** Where dropped values are taken (#collect, orphans); pinned with `scratch`. */
const dropSlot = new Slot(new ArrayBuffer(32));

beforeFirstOpen(() => {
  scratch.pin(); // without --allow-ffi a NotCapable, which the open names
  dropSlot.pin();
  if (scratchPtr === null) {
    throw new LibraryPermissionError(
      "ffi",
      "Cannot open the kcoro library: --allow-ffi was not granted when kcoro was imported (it " +
        "was since, by a prompt or a request); run with --allow-ffi (granted when the process " +
        `or Worker starts), received permission state ${ffiState} at import`,
    );
  }
});

/** Where close causes are read from native memory (`kc_chan_cause`); grown as needed. */
let causeBytes = new Uint8Array(256);

/**
 * One cause of channel `h` as `read` (kc_chan_cause or kc_chan_cancel_cause) answers it: its
 * bytes (a copy), null for none, undefined for a dead handle (or an answer that grew between its
 * two reads, which a stored cause never does).
 */
function readCauseBytes(
  read: (h: number, out: Uint8Array, cap: number) => number,
  h: number,
): Uint8Array | null | undefined {
  let n = read(h, causeBytes, causeBytes.length);
  if (n > causeBytes.length) {
    causeBytes = new Uint8Array(n);
    n = read(h, causeBytes, n);
    if (n > causeBytes.length) return undefined;
  }
  if (n < 0) return undefined;
  return n === 0 ? null : causeBytes.slice(0, n);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Each library's counters' clock word (kc_clock_word) as two u32 halves. */
const clocks = new WeakMap<Library, Uint32Array>();

function clockOf(lib: Library): Uint32Array {
  let c = clocks.get(lib);
  if (c === undefined) {
    const p = librarySymbols(lib, "read clock").kc_clock_word();
    c = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(p!, 8));
    clocks.set(lib, c);
  }
  return c;
}

function sharedOf(lib: Library, handle: number): Shared {
  const key = sharedKey(lib, handle);
  let s = shared.get(key);
  if (s === undefined) {
    s = new Shared();
    s.key = key;
    shared.set(key, s);
  }
  s.refs++;
  return s;
}

/** `Channel.#closeNative`'s answer where native code closed the channel but lost its cause. */
const CAUSE_LOST = -2;
/** For tests (`_testCauseNoMemory`): how many closes with a cause answer KC_ENOMEM. */
let causeNoMemory = 0;

/**
 * What close() (`did` "closed") and cancel() ("cancelled") throw when native code could not keep
 * their cause (KC_ENOMEM): the channel is closed or cancelled all the same. In the house form,
 * the status native code answered as what was received: it had no "received" part. The number
 * received, not its name, which KcoroError appends (it read "received KC_ENOMEM ... (KC_ENOMEM)").
 */
function causeLostError(op: string, did: string): KcoroError {
  return new KcoroError(
    Status.ENOMEM,
    `Cannot ${op} with its cause: out of memory to keep the cause for the channel's other ` +
      `isolates; the channel is ${did} all the same, without this cause, received ` +
      `${Status.ENOMEM} from kc_chan_close_cause`,
  );
}

/** For tests (`_testFromChecked`): runs in `Channel.from` between its checks and its holds. */
let fromChecked: ((handle: number) => number) | null = null;
/** For tests (`_testFromChecked`, "hold"): runs in `Channel.from` just before the copy's hold. */
let fromHolding: ((handle: number) => number) | null = null;

/**
 * The handle's value names a live channel other than the one `open()` checked (its serial, read
 * there first): that one was destroyed since, and the value went to a later channel (its slot's
 * generation wrapped: ~523,000 frees). `Channel.from` refuses it (`fromRefused`).
 */
function laterThanChecked(
  sym: ReturnType<Library["symbols"]>,
  o: { handle: number; serialLo: number; serialHi: number },
): boolean {
  if (sym.kc_chan_serial(o.handle, serialWords) !== 0) return false; // dead: the hold fails
  return serialWords[0] !== o.serialLo || serialWords[1] !== o.serialHi;
}

/** What `Channel.from` throws for a handle whose channel changed since it was checked. */
function fromRefused(handle: number): InvalidHandleError {
  return new InvalidHandleError(
    `Cannot open shared channel: handle ${handle} names no live channel of the one ` +
      "described: it was destroyed while this copy opened it, and the handle's value went " +
      "to another channel since (its slot reused), received a handle of another channel",
  );
}
/** For tests (`_testOrphanHold`): answers for `orphans`' hold (undefined: the hold is taken). */
let orphanHold: ((handle: number) => number | undefined) | null = null;
/** For tests (`_testOrphanSwitched`): runs in `orphans` between its hook switch and its take. */
let orphanSwitched: ((handle: number) => void) | null = null;
/** `orphans`' kc_chan_serial words (a finalizer's own: it may run between any two tasks). */
const orphanSerial = new Uint32Array(2);

/**
 * Owners collected whose hold could not be taken (KC_ENOMEM): their channels are ended by the
 * next owner's collection (`orphans` retries them first), each once a hold goes through.
 */
let orphansRetry: Shared[] = [];

/**
 * Ends the native channel of an owning `Channel` that was garbage collected without being
 * disposed, so that channels created and dropped (Go's and Kotlin's are garbage collected
 * too) do not use up the handle table and native memory. It acts only for channels whose handle
 * never left their object (`handle`, `share`; `orphanLib` is null otherwise), and a channel
 * with operations waiting in this isolate is still reachable (its `Shared` entry holds the
 * waiters, which hold it), so none is pending. The owner's hold is given back (taken first if it
 * had none): the last hold's leaving destroys the channel natively, its kept values freed there
 * (kc_chan_unhold; the hook died with the object), so a `Channel.from` copy that still holds it
 * keeps it, the channel then ending when the last copy lets go. A copy may be opened from a
 * share object built with the handle's value (the owner made native by a select), which
 * `share()` never saw; before, the channel was destroyed under it. Such a channel's creator is
 * gone: what it kept for the hook is freed now, and what it drops from then on is freed where
 * dropped, as for a Worker creator that ended. The held value is the channel's `Shared` entry,
 * which exists anyway: a held object of its own cost each channel 40 bytes. A hold it cannot take
 * (KC_ENOMEM) is taken at the next owner's collection instead (`orphansRetry`), the channel left
 * as it is meanwhile.
 */
const orphans = new FinalizationRegistry<Shared>((s) => {
  if (orphansRetry.length > 0) {
    const retry = orphansRetry;
    orphansRetry = [];
    for (const r of retry) endOrphan(r);
  }
  endOrphan(s);
});

/** What `orphans` does for one owner's `Shared` entry (see there); again from `orphansRetry`. */
function endOrphan(s: Shared): void {
  const { orphanLib: lib, orphanHandle: handle, orphanCodec: codec, orphanKeeps: keeps } = s;
  if (lib === null) return; // disposed, or its handle left it
  try {
    // Also once the library was closed: it stays loaded, and the channel with it, which
    // nothing else would ever destroy.
    const sym = symbolsToReleaseOf(lib);
    // Native code may have destroyed it unseen here, and its handle's value gone to a later
    // channel once the slot's generation wrapped (~523,000 frees): that one (another serial, as
    // `Channel.#dropIfStale` tells it) is not this owner's to hold, give a hold back on or take
    // kept values from; only the dead channel's entry goes. Before, the hold taken and given
    // back below destroyed that channel when nobody held it yet, and a held one lost its kept
    // values and its hook: first for any later channel, then (its shape compared) for one of the
    // same shape as the dead one.
    if (laterChannel(sym, s, handle, orphanSerial)) {
      if (shared.get(s.key) === s) shared.delete(s.key);
      return;
    }
    // A Worker's owner holds it (`#materialize`), and so does one a copy of this isolate was
    // opened for (`#holdForCopy`); any other takes a hold now, to give it back at once. A hold
    // given back on a dead handle is forgotten (KC_EBADH; one of a later channel given the
    // value since is another serial's, left alone).
    const rc = s.orphanHeld ? 0 : orphanHold?.(handle) ?? sym.kc_chan_hold(handle, 0);
    // No memory for the hold (KC_ENOMEM): nothing is done now, and the next owner's collection
    // tries again (`orphansRetry`), the entry kept meanwhile. Not destroyed: other holders may
    // remain (another isolate's copy opened from the handle's value, which a select gave out),
    // and a destroy ended the channel under them. Before, it destroyed it, and before that its
    // answer read as "holders remain".
    if (rc !== 0 && rc !== Status.EBADH) {
      orphansRetry.push(s);
      return;
    }
    let lives = false;
    // Given back: 0, holders remain; 1, the last hold, destroyed; KC_EBADH, destroyed before.
    if (rc === 0) lives = sym.kc_chan_unhold(handle) === 0;
    // The owner's share of this isolate's entry; the whole entry once the channel is gone (a
    // later channel may get the handle's value).
    if ((--s.refs === 0 || !lives) && shared.get(s.key) === s) shared.delete(s.key);
    if (!keeps) return;
    // Holders remain: nothing keeps for the dead hook any more (a zero-copy value is freed
    // where it is dropped, another is only counted), as when a creator's Worker ends. Switched
    // before the take: a value another thread drops after the switch is not kept, and one it
    // dropped before is in the list the take empties. Before, the take came first, and a value
    // dropped between the two stayed in a list nobody takes (until the channel's destroy).
    if (lives) {
      if (codec!.zeroCopy) sym.kc_chan_free_undelivered(handle);
      else sym.kc_chan_on_undelivered(handle, null, null);
    }
    orphanSwitched?.(handle);
    while (sym.kc_chan_take_undelivered(handle, dropSlot.u8, codec!.elemSize) === 1) {
      codec!.discard(dropSlot, sym);
    }
  } catch (e) {
    reportUncaught(e); // a finalizer must not throw; nothing here should
  }
}

const SEND = 0, RECV = 1, RECV_CATCHING = 2, RECV_ITER = 3;

/**
 * The call a wait of `kind` names in its errors about the call (a bad option or signal, a
 * dispose, the library's close, a native failure, a lost ring): `receiveCatching` its own name,
 * where it said "Cannot receive", as if `receive` had been called; an iterator's `next()`
 * "iterate channel", the name its signal's errors give (`values`), where its other errors said
 * "Cannot receive".
 */
function waitOp(kind: number): string {
  return kind === SEND
    ? "send"
    : kind === RECV_CATCHING
    ? "receiveCatching"
    : kind === RECV_ITER
    ? "iterate channel"
    : "receive";
}

/**
 * The receives of a channel's iterator that may still wait, for its `return()` to release:
 * the latest, and (only once next() was called again before one settled) the earlier ones; and
 * whether `return()` ran or one of its `next()`s rejected (`ended`: each later `next()` answers
 * done, as an async generator's does), which a receive looks at again after running a hook;
 * and whether one rejected (`rejected`: a `next()` still pending then answers done where it
 * would reject too, as an async generator rejects the first and answers the rest done); and
 * whether `return()` ran (`returned`: a rejection held behind an earlier `next()` then answers
 * done, as every `next()` pending at `return()` does).
 *
 * `turns` is the one rule that settles the `next()`s in call order: null while at most one is
 * pending (a `for await` loop: its settle is the promise's own), else every `next()` and
 * `return()` not yet settled, oldest first (`Turn`). An outcome, whichever path gives it (a
 * record, a close, a cancel, an abort, a lost ring, `return()`, an immediate take), waits in its
 * turn until every earlier one has settled (`deliver`). `turning` is the turn of the `next()`
 * being made, which its wait takes (`Channel.#wait`) and an immediate outcome leaves to it.
 * `making`: the one `next()` pending is being made outside a FIFO (its receive runs); where
 * that receive runs code that calls `next()` or `return()` (an onUndeliveredElement hook), the
 * FIFO begins with a turn for it (`turnsOf`), whose promise (`made`) that `next()` returns.
 * `starting`: a receive of a `next()` in its turn runs (`Channel.#receiveInTurn`).
 * `queued`: the `next()`s called by code a receive of the iterator ran (`making`, `starting`),
 * in call order, whose receives begin once that receive has returned (it took its value or
 * queued its wait), so that each takes its value in call order too. Before, such a `next()`
 * took a value, or queued its wait, ahead of the one whose receive ran it: it settled after
 * that one, with the earlier value.
 */
type IterWaits = {
  waiter: Waiter | null;
  more: Waiter[] | null;
  ended: boolean;
  rejected: boolean;
  returned: boolean;
  turns: Turn[] | null;
  turning: Turn | null;
  making: boolean;
  made: Promise<never> | null;
  starting: boolean;
  queued: (() => void)[] | null;
};

/**
 * A `next()` (or `return()`) of an iterator in its in-order FIFO (`IterWaits.turns`): its
 * promise's functions, and its outcome once it has one (`ready`), held until its turn.
 * `deferred`: the outcome came while an earlier one was still pending.
 */
class Turn {
  ready = false;
  ok = true;
  deferred = false;
  value: unknown = undefined;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
  constructor(resolve: (v: unknown) => void, reject: (e: unknown) => void) {
    this.resolve = resolve;
    this.reject = reject;
  }
}

/**
 * Whether a `next()` of the iterator (`held`) has not settled yet: one in its FIFO, the one
 * receive waiting outside it (a wait is DONE as it settles), or the one being made outside it.
 */
function pendingIn(held: IterWaits): boolean {
  const w = held.waiter;
  return held.turns !== null || (w !== null && w.state !== DONE && w.turn === undefined) ||
    held.making;
}

/**
 * The iterator's FIFO, made when a second `next()` (or `return()`) comes while one is pending:
 * that one's wait takes the first turn (`Waiter.takeTurn`); one still being made (`making`:
 * its receive ran the code that called) takes it as it is made (`turning`), its outcome handed
 * to it after (`Channel.#iterate`).
 */
function turnsOf(held: IterWaits): Turn[] {
  if (held.turns !== null) return held.turns;
  const turns: Turn[] = held.turns = [];
  const w = held.waiter;
  if (held.making) {
    const [t, promise] = turnWith();
    held.turning = t;
    held.made = promise;
    turns.push(t);
  } else if (w !== null && w.state !== DONE && w.turn === undefined) turns.push(w.takeTurn());
  return turns;
}

/** A turn and the promise it settles. */
function turnWith(): [Turn, Promise<never>] {
  let t!: Turn;
  const promise = new Promise<never>((resolve, reject) => {
    t = new Turn(resolve as (v: unknown) => void, reject);
  });
  return [t, promise];
}

/** A new turn at the end of the iterator's FIFO, and the promise it settles. */
function newTurn(held: IterWaits): [Turn, Promise<never>] {
  const turns = turnsOf(held);
  const made = turnWith();
  turns.push(made[0]);
  return made;
}

/**
 * `v` for a `next()` or `return()` of an iterator once every earlier one has settled: at once
 * where none is pending, else in its turn.
 */
function afterPending(held: IterWaits, v: unknown): Promise<never> {
  if (!pendingIn(held)) return Promise.resolve(v as never);
  const [t, promise] = newTurn(held);
  deliver(held, t, true, v);
  return promise;
}

/**
 * Gives turn `t` its outcome (the first one only), then settles, oldest first, every turn at
 * the front of the FIFO that has one: a `next()` settles only once every earlier one has. A
 * rejection ends the iterator at once (`ended`: a `next()` called later answers done, after it).
 */
function deliver(held: IterWaits, t: Turn, ok: boolean, value: unknown): void {
  if (t.ready) return;
  const turns = held.turns!;
  t.ready = true;
  t.ok = ok;
  t.value = value;
  t.deferred = turns[0] !== t;
  if (!ok) held.ended = true;
  while (turns.length > 0 && turns[0].ready) {
    const h = turns.shift()!;
    if (h.ok) h.resolve(h.value);
    else if (held.rejected || (h.deferred && held.returned)) h.resolve(ITER_DONE);
    else {
      held.ended = held.rejected = true;
      h.reject(h.value);
    }
  }
  if (turns.length === 0 && held.turns === turns) held.turns = null;
}

/**
 * A receive's rejection with `e`; one of an iterator (`held`) ends it (`ended`), as an async
 * generator that threw is done. A function, not a closure per receive: every receive passes here.
 * A `next()` made in its turn (`turning`) rejects in its turn: the rejection is its turn's.
 */
function failed(held: IterWaits | undefined, e: unknown): Promise<never> {
  if (held !== undefined) {
    held.ended = true;
    if (held.turning === null) held.rejected = true;
  }
  return Promise.reject(e);
}

/** What a receive of `kind` resolves with for a received value. */
function received(kind: number, value: unknown): unknown {
  return kind === RECV
    ? value
    : kind === RECV_ITER
    ? { value, done: false }
    : { state: "ok", value };
}

const ITER_DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });
/**
 * The reason an iterator's `return()` abandons its pending receive with: that `next()` then
 * resolves done instead of rejecting (`Waiter.giveUp`).
 */
const RETURNED = Object.freeze({ returned: true });

/**
 * Where a waiting operation stands.
 * - LOCAL: waits in JavaScript only, until the end of this turn of the event loop (then the
 *   bridge queues it natively). A same-isolate partner takes it over with no FFI call at all,
 *   which is what makes a same-isolate ping-pong cheap.
 * - QUEUED: queued natively with a ticket; a ring record will settle it unless it is aborted.
 * - COMPLETING: an abort said KC_EBUSY; its record is coming, no one may hand it a value.
 * - DONE: settled.
 */
const LOCAL = 0, QUEUED = 1, COMPLETING = 2, DONE = 3;

/**
 * A send or receive that waits: in JavaScript first, then in the ring. The fields a local wait
 * never sets (its native ticket, slot and encoding, iterator, signal, a late give-up) are
 * `declare`d, not initialised: absent (read undefined) until set, so that a wait of a local
 * ping-pong makes and fills 8 fields, not 17 (`#wait` ~5% less CPU a round trip, measured).
 */
class Waiter implements RingOp {
  /** Set where it queues natively (`Channel.#submit`), read only from then on. */
  declare ticket: number;
  declare keepsAlive?: boolean;
  state = LOCAL;
  readonly kind: number;
  readonly ch: Channel<unknown>;
  /** The encoded value (sends) or the received one; made when the operation is queued. */
  declare slot: Slot | undefined;
  /**
   * A send's object value encoded into `slot` at the call (shared channels): the copy the
   * receiver gets is taken then, once. Its tries and its queueing use the slot as it is, and a
   * receiver of this isolate decodes it; `value` stays the caller's (for onUndeliveredElement).
   */
  declare encoded?: boolean;
  readonly value: unknown;
  resolve: (v: unknown) => void;
  #reject: (e: unknown) => void;
  /**
   * The iterator whose `next()` this receive is (`#receive`'s `held`): a rejection ends it
   * (`IterWaits.ended`), as an async generator that threw is done. A field read at the
   * rejection, not a closure made per wait: an iterator's receive waits once per round trip.
   */
  declare held: IterWaits | undefined;
  /**
   * Its iterator's turn, where its `next()` settles in call order (`IterWaits.turns`): its
   * outcome goes there (`resolve`, `reject`), to settle once every earlier `next()` has.
   */
  declare turn: Turn | undefined;
  declare signal: AbortSignal | undefined;
  declare onAbort: (() => void) | undefined;
  /**
   * A receive given up (its signal aborted, `return()` of its iterator, its copy disposed) after
   * it completed natively, its record not drained yet (COMPLETING): it rejects with
   * `reason` when the record comes, and a value it took goes back to its channel
   * (`Bridge.giveBack`) instead of resolving it.
   */
  declare gaveUp?: boolean;
  declare reason: unknown;
  /** Neighbours in its WaitQueue. */
  prev: Waiter | null = null;
  next: Waiter | null = null;

  constructor(
    kind: number,
    ch: Channel<unknown>,
    value: unknown,
    resolve: (v: unknown) => void,
    reject: (e: unknown) => void,
  ) {
    this.kind = kind;
    this.ch = ch;
    this.value = value;
    this.resolve = resolve;
    this.#reject = reject;
  }

  /**
   * Rejects its promise with `e`; an iterator's receive ends its iterator (`held`) first. One
   * whose iterator's `next()` rejected already, while this one was pending (the close that
   * fails them all, a cancel, their signal's abort), answers done instead, as an async
   * generator's queued `next()`s answer done after the one that threw. Before, each rejected.
   * One that holds a turn of its iterator's FIFO (`turn`) hands `e` to it: that rule applies
   * when the turn comes (`deliver`).
   */
  reject(e: unknown): void {
    const held = this.held;
    if (held !== undefined) {
      const t = this.turn;
      if (t !== undefined) return deliver(held, t, false, e); // in its turn
      if (held.rejected) {
        this.resolve(ITER_DONE);
        return;
      }
      held.ended = held.rejected = true;
    }
    this.#reject(e);
  }

  /**
   * Takes turn `t` of its iterator's FIFO (a new one if not given: the one pending `next()`
   * whose iterator's FIFO begins): every outcome goes to the turn from now on, to settle in
   * call order (`deliver`). A wait outside a FIFO (a `for await` loop's) settles directly.
   */
  takeTurn(t?: Turn): Turn {
    const turn = t ?? new Turn(this.resolve, this.#reject);
    const held = this.held!;
    this.turn = turn;
    this.resolve = (v) => deliver(held, turn, true, v);
    return turn;
  }

  /** Leaves its queue, drops its abort listener, and is done. */
  detach(): void {
    const state = this.state;
    if (state === DONE) return;
    this.state = DONE;
    const s = sharedStateOf(this.ch);
    const q = this.kind === SEND ? s.senders : s.receivers;
    if (state === LOCAL && s.escaped) q.local--; // `WaitQueue.local`
    q.remove(this);
    // Never throws (`unlistenAbort`): before, a signal's own `removeEventListener` that threw
    // escaped here, from inside whatever settled this waiter (a pump of another channel too).
    if (this.onAbort !== undefined) unlistenAbort(this.signal!, this.onAbort);
  }

  /**
   * `detach()` of the first waiter of `q`, its own queue, by a local hand-off
   * (`Channel.#localSend`, `#localTake`), which knows both: a small function V8 inlines into the
   * hand-off, where `detach` stayed a call.
   */
  leave(q: WaitQueue): void {
    this.state = DONE; // a local channel's: uncounted (`WaitQueue.local`)
    q.shift(this);
    if (this.onAbort !== undefined) unlistenAbort(this.signal!, this.onAbort);
  }

  /**
   * Settles it as given up with `reason`: rejected, except that an iterator's `return()`
   * (`RETURNED`) resolves its pending `next()` done. An iterator's in its turn (`deliver`): a
   * `values({ signal })` iterator's later `next()` that the abort withdraws at once rejects
   * after an earlier one whose withdrawal said KC_EBUSY (its record still due) settles: the
   * earlier one rejects with the reason, this one answers done.
   */
  giveUp(reason: unknown): void {
    if (reason === RETURNED) this.resolve(ITER_DONE);
    else this.reject(reason);
  }

  /** Queues it natively if it still waits in JavaScript only. */
  flush(): void {
    if (this.state === LOCAL) submitOf(this.ch, this);
  }

  complete(status: number): void {
    this.detach();
    completedOf(this.ch, this, status);
  }

  /** Its channel never left this isolate's JavaScript (`Shared.inside`; `RingOp.inside`). */
  inside(): boolean {
    return sharedStateOf(this.ch).inside;
  }

  withdrawn(): void {
    this.detach();
    withdrawnOf(this.ch, this);
  }

  lost(status: number): void {
    lostOf(this.ch, this, status);
  }

  /** Its channel's per-isolate state (`Bridge.settleWhere`'s picks). */
  channelAt(): unknown {
    return sharedStateOf(this.ch);
  }

  /** Whether it is a send (`Bridge.settleWhere`'s held lists, one per kind). */
  sendsAt(): boolean {
    return this.kind === SEND;
  }
}

type Sym = ReturnType<Library["symbols"]>;

/**
 * `op` is a select (no Waiter) with a clause on `s`'s channel: of either kind, or a send clause
 * (`send` true) or a receive clause (false). By its clauses' channels (`channelAt`, undefined
 * past the last), for `Bridge.loseWhere` where the ring is gone. One given up too: still tracked,
 * its abort lost to a completion whose record, on the ring when it went, will not come (the
 * failed drain before this look settled every record drained). Before, it was passed over, as
 * `settleWhere`'s picks leave one to the ring's usual drain, and waited on until the ring's wait
 * found the ring gone, a turn or more later.
 */
function selectOn(op: RingOp, s: Shared, send?: boolean): boolean {
  if (op instanceof Waiter) return false;
  for (let i = 0;; i++) {
    const at = op.channelAt?.(i);
    if (at === undefined) return false;
    if (at === s && (send === undefined || op.sendsAt?.(i) === send)) return true;
  }
}

/** Gives a waiter's slot back for other waits, once: called where the waiter is done with it. */
function releaseSlot(w: Waiter): void {
  if (w.slot === undefined) return;
  giveSlot(w.slot);
  w.slot = undefined;
  w.encoded = false;
}

/**
 * Lets the waiters of `q` still waiting in JavaScript try natively, oldest first, until one
 * must go on waiting: true when none is left waiting in JavaScript.
 */
function pump(q: WaitQueue, sym: Sym): boolean {
  let w = q.first;
  // None in JavaScript (`WaitQueue.local`: a native channel's, as every pump's, whose tries are
  // native calls): none to try, and no walk past those queued natively.
  if (w === null || q.local === 0) return true;
  // One batch of settles (`collectDue`), as the end-of-turn flush is (`Bridge.#start`): a send
  // whose try finds the channel cancelled (by native code, or another isolate) rejects, and its
  // value reaches onUndeliveredElement once every waiter tried has settled, before the call that
  // pumped goes on. Before, the first such send's hook ran before it, and the later sends of
  // the pump, rejected. Begun without an allocation (`NO_COLLECTS`), and ended with no call
  // where no collect was left to it: a pump is a send's path.
  const s = sharedStateOf(w.ch);
  const outer = s.collectDue;
  if (outer === null) s.collectDue = NO_COLLECTS;
  try {
    // Until the last in JavaScript has tried (`WaitQueue.local`): the rest are queued natively.
    while (w !== null && q.local !== 0) {
      const next: Waiter | null = w.next; // settling w takes it out of q
      if (w.state === LOCAL && !tryNowOf(w.ch, w, sym)) return false;
      // Settling w may have taken `next` out of q too (DONE: an iterator's next()s that w's
      // decode failure ended, `#endIter`; a user's hook): then from the oldest again, the waiters
      // queued natively before it skipped. Before, the walk stopped there (a detached waiter's
      // `next` is null), and the receivers after it were not tried: a newer receive took the
      // value first.
      w = next !== null && next.state === DONE ? q.first : next;
    }
    return true;
  } finally {
    if (outer === null) {
      if (s.collectDue === NO_COLLECTS) s.collectDue = null;
      else endCollects(s);
    }
  }
}

/**
 * The bytes a local value of a zero-copy codec counts in the metrics: a Uint8Array's length, or
 * its encoding's where it is a structured value's copy (`passedViewBytes`: a Node `Buffer` on
 * the default codec, any Uint8Array on codecs.structured), as a native channel counts it; 0 for
 * the rest (a string is never encoded while the channel is local, and another structured
 * value's length is not kept). Fixed-size codecs count their slot per value (`metrics()`).
 */
function bytesOf(v: unknown): number {
  // By the engine's tag and length (`isBytes`, `bytesLength`): `instanceof` ran an own
  // Symbol.hasInstance of Uint8Array's, the caller's code, at each local send and take.
  if (!isBytes(v)) return 0;
  return passedViewBytes?.get(v) ?? bytesLength(v);
}

/**
 * Whether one of this isolate's receives waits natively on `s` (state QUEUED): the invariant
 * `Channel.#retrySends` relies on for an inside channel (see there) says none does while one of
 * its senders waits in JavaScript. Checked there, and a break drains the ring as before rather
 * than throwing: a throw in that microtask would end the process over a bug of this module.
 */
function hasQueuedReceiver(s: Shared): boolean {
  for (let r = s.receivers.first; r !== null; r = r.next) if (r.state === QUEUED) return true;
  return false;
}

/**
 * Whether a wait of this isolate on `s` is still in JavaScript (state LOCAL), a send or a
 * receive: those that only this isolate's tries settle (`Channel.#collectAfter`). Waits queued
 * natively learn of a close or cancel through their records.
 */
function waitsInJavaScript(s: Shared): boolean {
  return s.senders.local + s.receivers.local !== 0; // counted, not walked (`WaitQueue.local`)
}

/**
 * @ignore For tests: the waits of `ch`'s channel still in JavaScript as counted
 * (`WaitQueue.local` of both queues) and as a walk of the queues finds them (what
 * `waitsInJavaScript` did before; 0 while the channel is local, which counts none): equal at
 * every step, or a count went wrong.
 */
export function _testLocalWaits(ch: Channel<unknown>): [counted: number, walked: number] {
  const s = sharedStateOf(ch);
  let n = 0;
  for (let w = s.senders.first; w !== null; w = w.next) if (w.state === LOCAL) n++;
  for (let w = s.receivers.first; w !== null; w = w.next) if (w.state === LOCAL) n++;
  return [s.senders.local + s.receivers.local, s.escaped ? n : 0];
}

/** The waiters of `q`, oldest first, as a list (settling one may run user code). */
function waiting(q: WaitQueue): Waiter[] {
  const list: Waiter[] = [];
  for (let w = q.first; w !== null; w = w.next) list.push(w);
  return list;
}

/**
 * `Shared.collectDue` while a batch of settles is under way and none of them has left a collect
 * to its end yet: frozen, never pushed to (`#collectSettled` replaces it), so that beginning a
 * batch allocates nothing.
 */
const NO_COLLECTS: Channel<unknown>[] = Object.freeze([]) as unknown as Channel<unknown>[];

/**
 * Values `Channel.#refusedSettled` left to the end of a batch of settles (`#collectDue`), by the
 * object whose hook takes them: not a field of every channel object, which each construction
 * would pay for (the path is rare: a native cancel met as sends queue or retry).
 */
const settledDrops = new Map<Channel<unknown>, unknown[]>();

/** `Channel.#endCollects` for `pump`, outside the class: ends the batch it began on `s`. */
let endCollects: (s: Shared) => void;
/**
 * `Channel.#libraryClosed` and `#unmap` for `trackLocal` and `unmapOnClose`, outside the class.
 * As public methods (`_libraryClosed`, `_unmap`) any caller reached them: a consumer's
 * `ch._libraryClosed()` cancelled a live local channel with a LibraryClosedError, its library
 * open, and rejected what waited on it.
 */
let libraryClosedOf: (ch: Channel<unknown>) => void;
/** See `libraryClosedOf`. */
let unmapOf: (ch: Channel<unknown>) => void;
/**
 * @ignore `Channel.#undelivered`, for select, whose send clause's wait the library's close
 * withdrew: `value` goes to onUndeliveredElement, as a withdrawn plain send's does. Module
 * functions, not members (`_undelivered`, `_checkValue`, `_watchDispose`, `_cancelAfterClose`):
 * as public methods any caller holding a channel reached them (`ch._undelivered(forged)` handed
 * a value never sent to its onUndeliveredElement; `ch._watchDispose(op)` kept an object of the
 * caller's in the channel, called at its dispose).
 */
export let undeliveredOf: <T>(ch: Channel<T>, value: unknown) => void;
/**
 * @ignore For a producer's send made after its task was cancelled (and an actor's mailbox):
 * throws what a send into a closed channel throws for a value its codec cannot carry (the
 * TypeError or CodecError), so such a value never reaches onUndeliveredElement. See
 * `undeliveredOf`.
 */
export let checkValueOf: <T>(ch: Channel<T>, value: T, op?: string) => void;
/**
 * @ignore For select, waiting natively on `ch`: `op.channelDisposed(ch)` runs at this copy's
 * dispose, until the Disposable returned is disposed (`Channel.#watchDispose`). See
 * `undeliveredOf`.
 */
export let watchDisposeOf: <T>(
  ch: Channel<T>,
  op: { channelDisposed(ch: Channel<unknown>): boolean },
) => Disposable | undefined;
/**
 * @ignore This isolate's per-channel state of `ch` (select's counts and settles, produce's and
 * actor's roles and cancels, tests). Internal: as the public field `_shared` any caller holding a
 * channel could rewrite that mutable object (its `cancelled`, `closed`, `refs`, its wait queues).
 * See `undeliveredOf`.
 */
export let sharedStateOf: <T>(ch: Channel<T>) => Shared;
/**
 * @ignore For `produce` and `actor`: the cause of a cancel made after the channel's close
 * (`Channel.#cancelAfterClose`). See `undeliveredOf`.
 */
export let cancelAfterCloseOf: <T>(ch: Channel<T>) => { cause: unknown } | undefined;
/**
 * @ignore For produce and actor: the error a task is cancelled with for its channel's cancel
 * (the channel's CancellationError, `cancelledError`), also where a close came before the cancel
 * and the channel's operations answer as closed (`Channel.#cancelledFirst`); else (not
 * cancelled) the closed result's cause.
 */
export let taskErrorOf: <T>(ch: Channel<T>) => unknown;
/**
 * @ignore For select, produce and actor: what a closed or cancelled channel answers, as module
 * functions reaching its private methods, not members. As the public methods `_closedResult`,
 * `_sendError`, `_receiveError`, `_ended`, `_refused`, `_keepHeld`, `_releaseHeld` and `_lost`
 * any caller holding a channel reached them: `ch._closedResult(KC_ECANCELED)` made an open
 * channel read cancelled in this isolate (its close then failed receives with a
 * CancellationError), `ch._refused(x)` handed a value never sent to onUndeliveredElement, and
 * `copy._keepHeld()` kept a disposed copy's native hold for ever. `closedResultOf`:
 * `{ state: "closed", cause? }`, a clause or a task completed with `status` (KC_EPIPE or
 * KC_ECANCELED; `#closedResult`).
 */
export let closedResultOf: <T>(
  ch: Channel<T>,
  status?: number,
) => { state: "closed"; cause?: unknown };
/** @ignore For select: the rejection of a send that found `ch` closed or cancelled. */
export let sendErrorOf: <T>(ch: Channel<T>, status: number) => unknown;
/** @ignore For select: the rejection of a receive that found `ch` closed or cancelled. */
export let receiveErrorOf: <T>(ch: Channel<T>, status: number) => unknown;
/** @ignore For select: a clause found `ch` closed or cancelled (`#endedSettled`: it settles). */
export let endedOf: <T>(ch: Channel<T>) => void;
/**
 * @ignore For select: a send clause's value not sent, `ch` closed or cancelled; for a producer's
 * send made after its task was cancelled (`slot` undefined: never encoded). See `closedResultOf`.
 */
export let refusedOf: <T>(ch: Channel<T>, value: unknown, slot?: Slot) => void;
/** @ignore For select: `Channel.#keepHeld`. See `closedResultOf`. */
export let keepHeldOf: <T>(ch: Channel<T>) => boolean;
/** @ignore For select: `Channel.#releaseHeld`. See `closedResultOf`. */
export let releaseHeldOf: <T>(ch: Channel<T>) => void;
/**
 * @ignore For `produce` and `actor`: `Channel.#watchCancel`, a close watch that calls
 * `onCancel` with a cancel's cause (`owned`: this isolate's end cancels the channel natively).
 * As the public method `_watchCancel` any caller holding a shared channel could make it owned
 * by its isolate, whose end (a Worker's) then cancelled it for every other one.
 */
export let watchCancelOf: <T>(
  ch: Channel<T>,
  onCancel: (cause: unknown) => void,
  owned?: boolean,
) => (() => boolean) | null;
/**
 * Its ring is gone, no record of `w` will come (see `RingOp.lost`): it fails as `#lost` fails a
 * waiter whose withdrawal failed (Waiter's `lost`).
 */
let lostOf: (ch: Channel<unknown>, w: Waiter, status: number) => void;
/**
 * `Channel.#submit`, `#tryNow`, `#withdrawn` and `#completed` for Waiter and `pump`, outside the
 * class: a wait queued natively, tried natively, withdrawn by the library's close, its ring record
 * come. As the public methods `_submit`, `_tryNow`, `_withdrawn` and `_completed` any caller
 * holding a channel reached them with a waiter of its own making: `ch._tryNow(forged, sym)` took
 * the channel's buffered value into it, `ch._withdrawn(forged)` rejected it with a
 * LibraryClosedError, the library open (tests/channel_test.ts, "last internals").
 */
let submitOf: (ch: Channel<unknown>, w: Waiter) => void;
/** See `submitOf`. */
let tryNowOf: (ch: Channel<unknown>, w: Waiter, sym: Sym) => boolean;
/** See `submitOf`. */
let withdrawnOf: (ch: Channel<unknown>, w: Waiter) => void;
/** See `submitOf`. */
let completedOf: (ch: Channel<unknown>, w: Waiter, status: number) => void;
/**
 * @ignore True if `x` is a Channel this module made (`Channel.#is`, a brand check that runs no
 * Proxy trap): for select and this module's functions outside the class. As the public static
 * `Channel._is` it could be redefined, and every channel call then answered "this is not a
 * Channel" (or took a look-alike for one).
 */
export let isChannel: (x: unknown) => x is Channel<unknown>;
/**
 * @ignore For select, `produce`, `actor` and tests: what the public getters and methods `_handle`,
 * `_symbols`, `_lib`, `_disposed`, `_inside`, `_creatorEnded` and `_destroyedSeen` answered, as
 * module functions reaching the channel's private members. As members any caller holding a
 * channel reached them, and redefined them on `Channel.prototype` for every channel: reading
 * `ch._handle` made a local channel native (it escapes, unpinned, for a select). See
 * `undeliveredOf`. `selectHandleOf`: the native handle a select uses while it holds the channel
 * (throws once disposed; escapes it).
 */
export let selectHandleOf: <T>(ch: Channel<T>) => number;
/** @ignore For select: the library's symbols for `op` (throws once disposed or closed). */
export let symbolsOf: <T>(ch: Channel<T>, op: string) => Sym;
/** @ignore For select, `produce` and `actor`: the library `ch` lives in. */
export let libraryOf: <T>(ch: Channel<T>) => Library;
/**
 * A channel's codec (`codec`) and whether it is closed for send (`isClosedForSend`), read
 * privately: select and `produce` read them so, not through the getters, which a caller may
 * redefine on Channel's prototype (before, such a getter steered select's encoding).
 */
export let codecOf: <T>(ch: Channel<T>) => Codec<T>;
export let closedForSendOf: <T>(ch: Channel<T>) => boolean;
/** @ignore For `actor` (and tests): `ch` was disposed (every operation on it throws). */
export let disposedOf: <T>(ch: Channel<T>) => boolean;
/** @ignore For select: native, but it never left this isolate's JavaScript (`Shared.inside`). */
export let insideOf: <T>(ch: Channel<T>) => boolean;
/** @ignore For select: `Channel.#endedUnder`, after a native call on `ch` said KC_EBADH. */
export let creatorEndedOf: <T>(ch: Channel<T>) => boolean;
/** @ignore For `produce` and `actor`: `Channel.#destroyedSeen`. */
export let destroyedSeenOf: <T>(ch: Channel<T>) => boolean;
/**
 * @ignore For select: after a clause on `ch` fired or was given back, what `ch` must do then
 * (`Channel.#afterSend`, `#afterReceive`, `#afterGiveBack`, `#settleMet`, `#countTimeout`,
 * `#flushLocal`). As the public methods `_afterSend` and the others any caller reached them:
 * `ch._countTimeout()` counted a timeout in the channel's metrics that no select met, and
 * `_flushLocal()` made a local channel native. See `selectHandleOf`.
 */
export let afterSendOf: <T>(ch: Channel<T>, status: number, queued: boolean) => void;
/** @ignore See `afterSendOf`. */
export let afterReceiveOf: <T>(ch: Channel<T>) => void;
/** @ignore See `afterSendOf`. */
export let afterGiveBackOf: <T>(ch: Channel<T>) => void;
/** @ignore See `afterSendOf`. */
export let settleMetOf: <T>(ch: Channel<T>, sent: boolean) => void;
/** @ignore See `afterSendOf`. */
export let countTimeoutOf: <T>(ch: Channel<T>) => void;
/** @ignore See `afterSendOf`. */
export let flushLocalOf: <T>(ch: Channel<T>) => void;
/**
 * @ignore For select: `refusedOf` for a send clause's value its select's failure on another
 * channel refused, as the select settles: left to the end of the batch of settles under way
 * (the ring drain's), as a send's settle leaves it (`Channel.#refusedSettled`); at once where
 * none is. As the public method `_refusedSettled`, `ch._refusedSettled(x, slot)` handed a value
 * never sent to onUndeliveredElement, and freed what a forged slot pointed to.
 */
export let refusedSettledOf: <T>(ch: Channel<T>, value: unknown, slot: Slot) => void;
/** `_testRefusalFault`'s function, called first by `refusedSettledOf` (tests only). */
let refusalFault: ((ch: Channel<unknown>) => void) | null = null;
/**
 * @ignore Tests: `f` runs first in every `refusedSettledOf` (a throw there is the refusal's), until
 * set to null. Where a test patched `_refusedSettled` on one channel.
 */
export function _testRefusalFault(f: ((ch: Channel<unknown>) => void) | null): void {
  refusalFault = f;
}
/**
 * @ignore Whether `e` is an InvalidHandleError `ch`'s own operation raised about it
 * (disposed; `share()` or `handle` once destroyed by native code), by identity: for `produce`
 * and `actor`, which take such an error their block lets out as their channel's end. Any other,
 * one from another channel (disposed, say) above all, is the block's own failure (Kotlin's: a
 * coroutine being cancelled that fails with another exception reports it). Was the public
 * method `_raised`.
 */
export function isOwnError<T>(ch: Channel<T>, e: unknown): boolean {
  return typeof e === "object" && e !== null && raisedBy.get(e) === ch;
}

/** Queues natively every waiter of `q` still waiting in JavaScript, oldest first. */
function flushAll(q: WaitQueue): void {
  for (const w of waiting(q)) w.flush(); // only those still in JavaScript (LOCAL) queue
}

/**
 * A channel of `T` values over a native kcoro channel; the rules are in README.md, "Channels from
 * TypeScript".
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
  /**
   * `#lib`'s internal symbols table (`librarySymbols`'s, the one object every kcoro call reads)
   * while it is open, null once closed (`openTableOf`), for `#sym`: field reads, where a call of
   * the imported `librarySymbols` cost the try pair ~0.5 ns (bench/channel_bench.ts, the
   * codecs.f64 pair: 15.5 against 14.9 ns).
   */
  readonly #table: OpenTable;
  /**
   * The native channel's handle: 0 until it exists (a local channel makes it when it escapes).
   * Native calls are given `#handle`, never this, but where they must reach the dead handle's
   * value itself (`#takeUndelivered`, the dispose's status read that guards it).
   */
  #handleValue: number;

  /**
   * The handle every native call on this channel is given: the one gate that keeps them off a
   * dead handle. Once the channel ended under this object (`Shared.ended`: a copy's creator
   * disposed of it, native code destroyed it), the handle's value may name a later channel
   * (once its slot's generation wraps: zig-src/handle.zig), so from then on it is
   * `ENDED_HANDLE`, which every call answers with KC_EBADH, as the dead handle did: the call's
   * path takes its "ended under this object" branch (`#creatorEnded`), however it learnt the end
   * (mid-call too: a value's or a cause's getter, a queueing of waits, another thread's
   * destroy). Read as each call's argument, after whatever caller code the call runs first
   * (an encoding). Before, each path that could learn the end re-checked `Shared.ended` before
   * its next call, and a path that did not (`cancel()` after its flush, a close or cancel whose
   * cause's getter learnt it) called with the dead handle. Once this object is disposed too
   * (`#disposed`): every entry throws then (`#sym`), so only a call whose caller's code (a
   * value's or a cause's getter) disposed it midway reads this, and it answers KC_EBADH, thrown
   * as the dispose's InvalidHandleError. An owner with no copy does not mark its channel ended
   * at its dispose, and a copy's dispose leaves it live for its other holders: before, such a
   * call went on to the handle (a close or a try-send to the channel the owner's dispose had
   * destroyed, a copy's close to the channel it no longer held). The inlined try-paths pass
   * `#handleValue`: their `Shared.detour` test is this one (`D_ENDED` is one of its bits), and
   * `#at` is null once a dispose began. A dispose's own calls pass `#handleValue` too.
   *
   * A field, one load per call: always `Shared.ended || #disposed ? ENDED_HANDLE :
   * #handleValue`. Each writer of those keeps it so: `#handleValue`'s (the constructor,
   * `#materialize`), `#markDisposed`, and `#markEnded`, which sets it on every object of this
   * isolate for the channel (`Shared.owner`, `Shared.copies`) before any user code runs. A
   * getter testing both cost the shared 16-char string pair ~5% (session 30's A/B).
   */
  #handle: number;
  /** kc_chan_create's overflow and flags arguments, for `#materialize`. */
  readonly #createOverflow: number;
  readonly #createFlags: number;
  readonly #codec: Codec<T>;
  readonly #size: number;
  readonly #capacity: number;
  readonly #owner: boolean;
  readonly #keeps: boolean;
  readonly #dropping: boolean;
  /** OVERFLOW's number for the channel's policy (0 for a `from()` copy: it never buffers). */
  readonly #overflow: number;
  /** The codec's `zeroCopy`: local values then count their own bytes (see `bytesOf`). */
  readonly #zeroCopy: boolean;
  /**
   * The codec is `codecs.f64`: the try-operations put and take a number themselves. A call
   * through `#codec` is one call site for every codec of the isolate, and a second codec in use
   * made the Worker number stream 20-40% slower.
   */
  readonly #f64: boolean;
  /**
   * The codec is `codecs.bytes`: tryReceive on a mapped channel calls its decode directly
   * (`decodeBytes`), not through `#codec` (see `#f64`), and a try-send copies the value into
   * native memory and sends it in one call (`trySendBytes`, `kc_chan_try_send_copy`) instead of
   * two (`kc_desc_make`, then `kc_chan_try_send`).
   */
  readonly #bytes: boolean;
  /**
   * `#f64` and not `#dropping`: trySend and tryReceive test this one field to take their
   * inlined native path.
   */
  readonly #plainF64: boolean;
  /**
   * A number passes the codec as it is (`codecs.f64`, `codecs.default`: `#passLocal` returns it,
   * calling no code of the caller's): `send`'s local fast path takes numbers only.
   */
  readonly #numbers: boolean;
  readonly #onUndelivered: ((value: T) => void) | undefined;
  /**
   * @ignore Declared first of the fields structured cloning sees: `postMessage` or
   * `structuredClone` of a Channel meets this symbol before anything else and throws a
   * DataCloneError whose message is its description. Without it a local channel was copied as
   * a plain object with no error, and a shared one failed on its codec's `encode`, the
   * function's source code as the message.
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  /** This isolate's state of the channel, one per native channel (`sharedStateOf`). */
  readonly #shared: Shared;
  /**
   * No native call on this object's handle any more (`#sym` throws). An owner that learnt native
   * code destroyed its channel is not disposed: it answers as on a cancelled channel, with no
   * call either (`Shared.ended`, `#destroyedUnder`).
   */
  #disposed = false;
  /**
   * What `#sym` must look at before it hands out the symbols, 0 when nothing (one field read on
   * every operation's path): `GATE_DISPOSED` (`#disposed`), `GATE_INSIDE` (the channel was made
   * native but is inside, `Shared.inside`: a call may complete an inside wait, `Bridge.touch`;
   * cleared by `#sym` once the channel went outside).
   */
  #gate = 0;

  /** Disposed from here on: `#disposed` set, and the gate (`#handle`) closed with it. */
  #markDisposed(): void {
    this.#disposed = true;
    this.#gate |= GATE_DISPOSED;
    this.#handle = ENDED_HANDLE;
  }
  /** A dispose under way (`[Symbol.dispose]`). */
  #disposing = false;
  /** Selects waiting on this copy (`watchDisposeOf`). */
  #selects: Set<{ channelDisposed(ch: Channel<unknown>): boolean }> | null = null;
  /**
   * Selects that this copy's dispose found completing with a send clause's value encoded for it
   * (`#abandonAll`), or that are refusing such a value as they settle (`keepHeldOf`): the copy's
   * hold is given back once the last of them settled (`releaseHeldOf`), not at the dispose, so
   * that such a value refused then (`#refused`: the select failed by another channel's end)
   * still reaches the channel through a live handle.
   */
  #keptHeld = 0;
  /**
   * This object holds the native channel (kc_chan_hold): a copy from `Channel.from`, or an owner
   * whose handle went to another isolate (`share`). The channel ends when its last holder lets
   * go (dispose, a copy's garbage collection, or its isolate's thread ending), unless it is
   * `#pinned`.
   */
  #held = false;
  /** Its handle went to code that does not hold it (`handle`): no hold ever ends the channel. */
  #pinned = false;
  #bridgeOf: Bridge | undefined = undefined;
  /**
   * kc_chan_ready_flag's, kc_chan_blocked_flag's and kc_chan_waiting_flag's bytes and the
   * handle word, mapped once the channel has been used `MAP_AFTER` times (null until then, or if
   * unavailable): mapping costs three calls and four ArrayBuffers, more than a channel used a
   * few times ever saves.
   */
  #ready: Uint8Array | null = null;
  #blocked: Uint8Array | undefined = undefined;
  #waiting: Uint8Array | undefined = undefined;
  #word: Uint32Array | undefined = undefined;
  /**
   * The handle word's address, once mapped: the try-operations then skip the handle table.
   * Null again from the start of a dispose, once the library begins to close
   * (`unmapOnClose`) and once the channel ended: trySend and tryReceive test only this (and
   * `Shared.detour`) for their inlined path, which checks neither `#disposed` nor the library
   * (`#sym`).
   */
  #at: Deno.PointerObject | null = null;
  /**
   * kc_chan_try_send_at and kc_chan_try_recv_at, taken from the library's symbols when the
   * channel is mapped: the inlined path calls them with no `#sym` (two loads and two tests)
   * and no property read from the symbols object (a map check and two loads): ~2 ns of a
   * ~30 ns trySend + tryReceive pair.
   */
  #sendAt: Sym["kc_chan_try_send_at"] | null = null;
  #recvAt: Sym["kc_chan_try_recv_at"] | null = null;
  /**
   * The library's symbols, taken when the channel is mapped: the inlined codecs.bytes receive
   * passes them to its decode with no `#sym` (the disposed flag, the library and its closed
   * check), valid while `#at` is not null (see there).
   */
  #symAt: Sym | null = null;
  #unmappedUses = 0;

  /** This isolate's completion ring for the channel's library. */
  get #bridge(): Bridge {
    return this.#bridgeOf ??= Bridge.of(this.#lib);
  }

  /**
   * A channel of `capacity` values: `"rendezvous"` (the default; 0: a send waits for a
   * receiver), `"buffered"` (64), `"conflated"` (keeps the latest value only), `"unlimited"`, or
   * an integer from 0 to 2^31. With a drop policy a rendezvous or `"buffered"` channel buffers
   * one value (Kotlin's rule), and an unlimited one ignores it. Opens the library if need be; the
   * native channel is made only when the channel first escapes this isolate's JavaScript (`handle`,
   * `share`, `select`). Throws a TypeError or RangeError (`Cannot create channel: ...`) for a bad
   * capacity or option.
   */
  constructor(capacity: Capacity = "rendezvous", options: ChannelOptions<T> = {}) {
    if ((capacity as unknown) === fromToken) {
      const o = open(options as unknown);
      if (fromChecked !== null) o.handle = fromChecked(o.handle);
      this.#lib = o.lib;
      this.#table = openTableOf(o.lib);
      this.#handleValue = this.#handle = o.handle;
      this.#createOverflow = 0;
      this.#createFlags = 0;
      this.#codec = o.codec as Codec<T>;
      this.#size = o.codec.elemSize;
      this.#capacity = o.capacity;
      this.#owner = false;
      this.#keeps = false;
      this.#dropping = false;
      this.#overflow = 0;
      this.#zeroCopy = o.codec.zeroCopy;
      this.#f64 = o.codec === (codecs.f64 as Codec<unknown>);
      this.#bytes = o.codec === (codecs.bytes as Codec<unknown>);
      this.#plainF64 = this.#f64;
      this.#numbers = this.#f64 || o.codec === codecs.default;
      this.#onUndelivered = undefined;
      // The owner of this isolate holds it from now on too, if it did not (see `#holdForCopy`):
      // before this copy's hold, so that a failure leaves nothing to give back.
      const found = shared.get(sharedKey(o.lib, o.handle));
      if (found !== undefined) Channel.#dropIfStale(found, o);
      const sym = librarySymbols(o.lib, "open channel");
      // The value names a later channel already (see below): refused before any hold, so that
      // none is taken on that channel (an owner's of this isolate's `#holdForCopy` either),
      // and none given back after a pin: its holders' leaving ends it as before. Before, the
      // refusal came only after the hold, and the pin it then needs kept that channel for good
      // once its holders left (a Worker's, `Channel.from` copies', a collected owner's).
      if (laterThanChecked(sym, o)) throw fromRefused(o.handle);
      const owner = shared.get(sharedKey(o.lib, o.handle))?.owner?.deref();
      if (owner !== undefined) owner.#holdForCopy();
      if (fromHolding !== null) o.handle = fromHolding(o.handle);
      // A holder: the channel lives on while this copy does, also after its owner's isolate
      // ended (a terminated Worker). A handle that died since open() checked it fails here.
      unwrap(sym.kc_chan_hold(o.handle, 0), "open channel");
      // The hold is the checked channel's only if the handle's value still names it (its
      // serial as open() read it first): else that one was destroyed since, and the value went
      // to a later channel once its slot's generation wrapped (~523,000 frees), whose shape
      // nobody checked: refused. Before, the copy opened that channel, of whatever shape, and
      // held it. Its hold is given back, but pinned first (KC_CHAN_HOLD_FOREVER, as a `handle`
      // read pins): the giving back is that channel's last hold when nobody held it yet, which
      // destroys it under its creator (a C caller's, an owner's not shared); pinned, it lives
      // until its creator destroys it, a channel kept too long in this rare race rather than
      // one ended under its user (with no ABI call that holds only the channel of a serial,
      // nothing better: whether other holders remain is not known). Checked just before the
      // hold too (above), this needs the destroy and the wrap between those two calls. Dead
      // now: the hold was taken, and this copy finds the end at its first call, as one opened
      // just before the destroy does.
      const dead = sym.kc_chan_serial(o.handle, serialWords) !== 0;
      if (!dead && (serialWords[0] !== o.serialLo || serialWords[1] !== o.serialHi)) {
        sym.kc_chan_hold(o.handle, HOLD_FOREVER);
        sym.kc_chan_unhold(o.handle);
        throw fromRefused(o.handle);
      }
      this.#held = true;
      this.#shared = sharedOf(o.lib, o.handle); // live: an ended entry is out of `shared`
      // Made now: the channel's serial, read just above while this copy's hold keeps it the
      // handle's (0 and 0 if dead: no channel has serial 0).
      if (this.#shared.refs === 1) {
        this.#shared.serialLo = dead ? 0 : o.serialLo;
        this.#shared.serialHi = dead ? 0 : o.serialHi;
      }
      this.#shared.join(this as Channel<unknown>); // its gate closes with the others' (#markEnded)
      this.#shared.lib = o.lib;
      this.#shared.handle = o.handle;
      copyHolds.register(this, { lib: o.lib, handle: o.handle, s: this.#shared }, this);
      // Its owner (if in this isolate) was escaped by the share() or handle that named it: its
      // values are native already.
      this.#shared.escape(); // another isolate (or this one, through share) has it
      this.#goOutside();
      this.#shared.learnRole(o.role);
      return;
    }
    const op = "create channel";
    checkOptions(op, options);
    const { overflow = "suspend", codec = codecs.default as Codec<T>, onUndeliveredElement } =
      options;
    // checkOptionNames's checks inline, the shared one called only where they find something
    // (it then says what): V8 keeps what a check met per function, and the shared one meets
    // every options object's shape, where this sees a channel's. Called here for every channel
    // it cost ~20 ns a create (bench/channel_bench.ts, "create + dispose a channel (local)",
    // 131 ns before the check, 154 with it, ~145 inline). Same refusals, same messages. The names
    // are CHANNEL_OPTIONS' own, by index (a frozen module constant: as cheap as literals, 134.5
    // and 135.5 ns minima, session 41), so that they cannot drift from the typed list: an option
    // added to it beyond the third only costs the shared call, and one taken out of it is refused.
    if (0 in options || Array.isArray(options)) checkOptionNames(op, options, CHANNEL_OPTIONS);
    for (const key in options) {
      if (
        key !== CHANNEL_OPTIONS[0] && key !== CHANNEL_OPTIONS[1] && key !== CHANNEL_OPTIONS[2] &&
        Object.hasOwn(options, key)
      ) checkOptionNames(op, options, CHANNEL_OPTIONS);
    }
    if (typeof overflow !== "string" || !Object.hasOwn(OVERFLOW, overflow)) {
      // A string naming no policy is a TypeError too, as an unknown capacity name, built-in
      // entry or shutdown mode is (WebIDL's rule for an enum value it does not know). Anything
      // else is refused as it is, never converted: `Object.hasOwn` alone made a key of it, so an
      // object whose toString (run twice, the caller's code) said "drop-oldest", an array
      // `["drop-oldest"]` or a String object was taken for that policy (and refused with a
      // conflated capacity), and a huge bigint took seconds to become one.
      throw new TypeError(
        `Cannot ${op}: overflow must be "suspend", "drop-oldest" or "drop-latest", received ${
          describe(overflow)
        }`,
      );
    }
    if (!OWN_CODECS.has(codec)) {
      throw new TypeError(
        `Cannot ${op}: codec must be one of codecs.default, f64, u64, bytes, string, structured, received ${
          describe(codec)
        }`,
      );
    }
    if (onUndeliveredElement !== undefined) {
      checkFunction(op, "onUndeliveredElement", onUndeliveredElement);
    }
    let cap: number;
    let flags = (codec.zeroCopy ? ZERO_COPY : 0) | TYPE_TAGS[codec.name] << TYPE_SHIFT;
    let ov = OVERFLOW[overflow];
    switch (capacity) {
      case "rendezvous":
        cap = ov !== 0 ? 1 : 0; // as 0 below: rendezvous + a drop policy = a 1-slot buffer
        break;
      case "buffered":
        // Kotlin's factory: BUFFERED with a drop policy is a 1-slot buffer (its default
        // capacity is for suspending senders), as a rendezvous with one is.
        cap = ov !== 0 ? 1 : 64;
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
        checkCapacity(op, capacity);
        cap = (capacity as number) + 0; // -0 as 0: FFI refuses a negative zero for an integer
        if (cap === 0 && ov !== 0) cap = 1; // rendezvous + a drop policy = a 1-slot buffer
    }
    // The native channel is made when the channel escapes (#materialize): a local one needs
    // none, so creating one costs no FFI call and no native memory.
    const lib = library();
    librarySymbols(lib, op); // a closed library is an error now, not at the first escape
    // What the channel drops comes back here for onUndeliveredElement; without the hook, a
    // zero-copy value's native buffer is freed where it is dropped (#materialize).
    const keeps = onUndeliveredElement !== undefined;
    this.#lib = lib;
    this.#table = openTableOf(lib);
    this.#handleValue = this.#handle = 0;
    this.#createOverflow = ov;
    this.#createFlags = flags;
    this.#codec = codec;
    this.#size = codec.elemSize;
    this.#capacity = cap;
    this.#owner = true;
    this.#keeps = keeps;
    this.#dropping = ov !== 0 && cap !== UNLIMITED;
    this.#overflow = ov;
    this.#zeroCopy = codec.zeroCopy;
    this.#f64 = codec === (codecs.f64 as Codec<unknown>);
    this.#bytes = codec === (codecs.bytes as Codec<unknown>);
    this.#plainF64 = this.#f64 && !this.#dropping;
    this.#numbers = this.#f64 || codec === codecs.default;
    this.#onUndelivered = onUndeliveredElement;
    const s = this.#shared = new Shared();
    s.refs = 1;
    s.creatorHere = true;
    s.local = true; // until its handle leaves it (#escape)
    // Its values must reach the hook if the library closes while they wait here.
    if (keeps) this.#track();
  }

  /**
   * A `Channel.from` copy of this isolate is being opened for this owner's channel: the owner
   * holds the channel from now on (kc_chan_hold), as `share()` makes it, unless it holds it
   * already (shared, a Worker's) or its handle was read (pinned: no hold ends it). A channel
   * that was ever held is destroyed natively when its last hold is given back, so without it
   * the copy's dispose (or collection) destroyed the channel under its live owner, whose next
   * call said native code had destroyed it; and the owner's collection (`orphans`, which now
   * gives the hold back instead of destroying) destroyed the channel under the live copy. The
   * copy may be opened from a share object built with the handle's value (the owner made
   * native by a select), which `share()` never saw. The hold stays `orphans`' to give back.
   */
  #holdForCopy(): void {
    if (this.#held || this.#pinned || this.#disposed || this.#shared.ended) return;
    const rc = librarySymbols(this.#lib, "open channel").kc_chan_hold(this.#handle, 0);
    // Dead (native code destroyed it): the copy's own hold fails with its error.
    if (rc === Status.EBADH) return;
    unwrap(rc, "open channel");
    this.#held = true; // its dispose gives it back after its destroy, as a shared owner's
    this.#shared.orphanHeld = true;
  }

  /**
   * `s`, this isolate's entry for the handle value a `Channel.from` copy is being opened with
   * (`o`, checked against the channel the value names now: `open`), is for another channel when
   * the channel the value names now has another serial (kc_chan_serial, `Shared.serialLo`):
   * native code or another isolate destroyed theirs without any of them noticing (no call
   * since), and the value went to a later channel once its slot's generation wrapped (after
   * ~523,000 frees). They learn it now, as if from a call (`#markEnded`: their gates close, the
   * entry leaves `shared`, and the copy gets one of its own), and the creator's collection does
   * nothing to the later channel (`orphanLib`). Before, the copy joined the dead channel's entry:
   * values were handed in JavaScript between it and the dead channel's objects, and their dispose
   * gave back the later channel's holds; then (the shapes compared) so for a later channel of the
   * dead one's shape. A dead handle is left to the copy's hold, which fails.
   */
  static #dropIfStale(s: Shared, o: ReturnType<typeof open>): void {
    if (s.ended) return; // out of `shared` already
    if (!laterChannel(librarySymbols(o.lib, "open channel"), s, o.handle, serialWords)) return;
    s.orphanLib = null; // the later channel is not the creator's to end
    const creator = s.owner?.deref();
    let x = creator;
    for (const r of s.copies ?? []) {
      if (x !== undefined) break;
      x = r.deref();
    }
    if (x === undefined) {
      // Nothing of it left but finalizers to run: they leave the later channel alone.
      s.ended = true;
      if (shared.get(s.key) === s) shared.delete(s.key);
      return;
    }
    if (creator !== undefined && !creator.#disposed) {
      // As `#destroyedUnder`, without its status read (the value names the later channel) or
      // its take of what the destroy dropped (its list is not reachable by the value either).
      creator.#destroyed = true;
      creator.#at = null;
      creator.#markEnded(DESTROYED);
      const cause = s.cause, hooks = hooksOf.get(creator);
      if (hooks !== undefined) queueMicrotask(() => hooks.learntDestroyed(creator, cause));
    } else x.#markEnded(s.creatorHere ? DESTROYED : ENDED_EITHER);
  }

  /** Watched for the library's close (`trackLocal`, `#libraryClosed`); set once. */
  #tracked = false;

  #track(): void {
    this.#tracked = true;
    trackLocal(this.#lib, this as Channel<unknown>);
  }

  /**
   * The library closed while this channel was local: nothing can complete what
   * waits in it, so each waiter rejects with a LibraryClosedError, and its values (buffered,
   * and those of waiting senders) go to onUndeliveredElement, as a cancel would drop them.
   */
  #libraryClosed(): void {
    const s = this.#shared;
    if (this.#disposed || !s.local) return;
    s.closed = true;
    s.cancelled = true;
    this.#localDrop(
      (w) => w.reject(new LibraryClosedError("send")),
      (w) => w.reject(new LibraryClosedError(waitOp(w.kind))),
    );
  }

  /**
   * Makes the native channel of an owning channel that has none yet (it is escaping), names
   * its `Shared` entry in this isolate, and lets `orphans` destroy it if this object is
   * garbage collected without dispose.
   */
  /**
   * Creates the native channel. `orphanable` false: the caller gives the handle away at once
   * (`share`, `handle`), so the garbage collector need not watch for an orphan (the watch costs a
   * finalization registration, ~0.25 µs).
   */
  #materialize(op: string, orphanable = true, moved: Uint8Array | null = null): void {
    if (this.#handle !== 0) return;
    if (this.#disposed) {
      throw this.#own(new InvalidHandleError(`Cannot ${op}: the channel was disposed`));
    }
    const sym = librarySymbols(this.#lib, op);
    unwrap(
      sym.kc_chan_create(
        this.#size,
        this.#capacity,
        this.#createOverflow,
        this.#createFlags,
        outWords,
      ),
      op,
    );
    const handle = outWords[0];
    // Kept for this isolate's hook; or, with no hook, a dropped zero-copy value is freed
    // natively wherever it is dropped (a Worker's send to a conflated channel, say): kept, it
    // would wait for this isolate's next send or dispose, without bound.
    const rc = this.#keeps
      ? sym.kc_chan_keep_undelivered(handle)
      : this.#zeroCopy
      ? sym.kc_chan_free_undelivered(handle)
      : 0;
    if (rc < 0) {
      sym.kc_chan_destroy(handle);
      unwrap(rc, op);
    }
    if (moved !== null) this.#moveIn(sym, handle, moved, op);
    // In a Worker, the channel (not given away: `share` and `handle` take holds of their own) is
    // held by the Worker's thread, whose end gives the hold back and so ends it. `orphans` would
    // destroy it once this object is garbage, but a Worker's finalizers never run once it has
    // ended: a channel a Worker made native by a select and did not dispose stayed for the life
    // of the process, one handle and native channel per channel per Worker.
    const held = orphanable && inWorker;
    if (held) {
      const hrc = sym.kc_chan_hold(handle, 0);
      if (hrc < 0) {
        // The values `#moveIn` sent are `moved`'s copies, which `#escape` frees: taken back
        // first, so that the destroy frees (or keeps for the hook) none of them.
        if (moved === null || this.#takeBack(sym, handle, this.#shared.count)) {
          sym.kc_chan_destroy(handle);
        }
        unwrap(hrc, op);
      }
      this.#held = true; // `share` takes no second hold; dispose forgets this one
    }
    // Not disposed (checked above), nor ended: only a channel with a handle can end.
    this.#handleValue = this.#handle = handle;
    const s = this.#shared;
    s.key = sharedKey(this.#lib, handle);
    fileSerial(sym, s, handle); // made just now: its handle is nobody else's yet
    shared.set(s.key, s); // a Channel.from of it in this isolate shares the entry
    s.lib = this.#lib;
    s.handle = handle;
    // Its gate closes with the others' (`Shared.owner`), and a copy that finds native code's
    // destroy first makes it learn it: a `Channel.from` copy of this isolate may be opened from
    // the handle's value however it was learnt, not only from `share()`'s object.
    s.owner = new WeakRef(this as Channel<unknown>);
    // What `orphans` needs goes on the Shared entry, which is its held value (it references
    // this object only while operations wait, and those keep it alive anyway). No unregister
    // token: unregistering costs more than `orphanLib` set to null, which the finalizer reads.
    s.orphanLib = this.#lib;
    s.orphanHandle = handle;
    s.orphanCodec = this.#codec as Codec<unknown>;
    s.orphanKeeps = this.#keeps;
    s.orphanHeld = held;
    if (orphanable) orphans.register(this, s);
  }

  /**
   * The native handle (for the C ABI). Once read, the channel's waiters also queue natively
   * (at the end of each turn), where native code can complete them, and the channel is no
   * longer destroyed when this object is garbage collected or its holders leave (see `share`):
   * whoever holds the handle may still use it, so only the creator's `[Symbol.dispose]` ends it.
   *
   * Throws {@linkcode InvalidHandleError} once this object is disposed, also when it was read
   * before (the value names no channel of this object's any more), and, when it was never read
   * before, once the channel ended under it (native code destroyed it; a copy's creator disposed
   * of it): no hold may be taken on the dead handle.
   */
  get handle(): number {
    Channel.#check(this, "get handle");
    // Before, a handle read before the dispose was returned after it, dead, as if still live.
    if (this.#disposed) this.#throwNoCalls("get handle");
    this.#escape("get handle", false);
    this.#goOutside();
    this.#giveAway();
    if (!this.#pinned) {
      const sym = this.#sym("get handle");
      // Ended (known: `#handle` then answers KC_EBADH; or its hold says so now): no hold on the
      // dead handle, whose value may name a later channel by now (a hold forever there would
      // keep that one for good). It threw the hold's "stale, destroyed or not a kcoro handle"
      // before, or pinned the later channel.
      const rc = sym.kc_chan_hold(this.#handle, HOLD_FOREVER);
      if (this.#creatorEnded(rc)) throw this.#deadHandle("get handle");
      // Native code may keep it: no holder's leaving may end it now.
      this.#unwrap(rc, "get handle");
      this.#pinned = true;
    }
    return this.#handleValue; // read before (pinned): the value it was, ended since or not
  }

  /**
   * The native handle for an operation that uses it only while it holds this object
   * (`select`, through `selectHandleOf`): its waiters queue natively, but the handle is not
   * given away.
   */
  #selectHandle(): number {
    // Disposed by the caller's code the select ran after its clause was added (an onSend value's
    // getter or codecs.bytes check, a lazy job's start): it throws what a select begun after the
    // dispose throws, before any native select, as send and trySend do (`#afterCallerCode`,
    // `#sendEnded`). Before, the native select was given `ENDED_HANDLE` (`#handle`): on a copy
    // whose channel had ended, or an owner with copies (its dispose ends the channel under
    // them), the select answered as on the cancelled channel (its CancellationError), and on a
    // live copy a ready clause before it fired.
    if (this.#disposed) this.#throwNoCalls("select");
    this.#escape("select");
    return this.#handle;
  }

  /** The codec values travel with. */
  get codec(): Codec<T> {
    try {
      return this.#codec;
    } catch (e) {
      throw thrown(this, "read channel codec", e);
    }
  }

  /**
   * For select (`afterSendOf`), after a send clause fired with `status`: a send to a dropping
   * channel may have dropped a value; a queued send failed by cancel left its value in the
   * kept list. Both go to onUndeliveredElement.
   */
  #afterSend(status: number, queued: boolean): void {
    if (status === 0 ? this.#dropping : queued && status === Status.ECANCELED) {
      this.#collectSettled();
    }
  }

  /**
   * For select (`afterReceiveOf`), after a receive clause took a value: what other isolates' sends
   * dropped goes to onUndeliveredElement, as after a plain receive (see `#poll`). Before, a creator
   * receiving only through select left them kept natively until its next plain operation or its
   * dispose.
   */
  #afterReceive(): void {
    if (this.#dropping) this.#collectSettled();
  }

  /**
   * For select (`afterGiveBackOf`), after a receive clause's value went back to the channel
   * (`kc_ring_give_back`): one the channel refused (closed and drained, or full with a drop
   * policy) goes to onUndeliveredElement, once the ring drain's batch has settled. Also after
   * the library's close failed a send clause (`Select`'s `#completedClosed`): the value a native
   * cancel or the ring's teardown left in the dropped list goes so too.
   */
  #afterGiveBack(): void {
    this.#collectSettled(); // as a receive's give-back (`#completed`)
  }

  /**
   * For select (`settleMetOf`), after a channel clause of a select that was not queued (its probe,
   * or a queueing answered ready) fired natively: a send clause (`sent`) may have completed a
   * receive of this isolate queued natively here, another select's receive clause included, and a
   * receive clause a send or send clause; that one settles now, before the select's own handler
   * runs, as after a plain send (`#settleReceivers`) or receive (`#settleSenders`). Before, it
   * settled when the ring drained, and an abort in between rejected a receive the select's send
   * clause had fired for, its value put back.
   */
  #settleMet(sent: boolean): void {
    const s = this.#shared;
    // A hook the select's settle ran may have closed the library: its close settled them all.
    if (this.#table.table === null) return;
    if (sent) {
      if (s.receivers.first !== null || s.selectReceives > 0) this.#settleReceivers(s);
    } else if (s.senders.first !== null || s.selectSends > 0) this.#settleSenders(s);
  }

  /** Its library begins to close: no inlined try-path from here on (see `#at`). */
  #unmap(): void {
    this.#at = null;
  }

  #sym(op: string) {
    if (this.#gate !== 0) this.#gated(op);
    // As `librarySymbols(this.#lib, op)`, without the call: LibraryClosedError once closed.
    const table = this.#table.table;
    if (table === null) throw new LibraryClosedError(op);
    return table;
  }

  /** `#sym`'s checks, where `#gate` says there is something to check. */
  #gated(op: string): void {
    if (this.#disposed) this.#throwNoCalls(op);
    // The call that follows may complete an inside wait of this isolate: see `Bridge.touch`.
    if ((this.#shared.detour & D_INSIDE) !== 0) this.#bridge.touch();
    else this.#gate &= ~GATE_INSIDE; // outside since (a `Channel.from` copy's share)
  }

  /** `e`, an InvalidHandleError about this channel that its own operation raises (`isOwnError`). */
  #own(e: InvalidHandleError): InvalidHandleError {
    raisedBy.set(e, this);
    return e;
  }

  /**
   * `#sym`'s InvalidHandleError, once disposed: its handle is dead, and once its slot's generation
   * wraps (see zig-src/handle.zig) the handle's value names a later channel, so no call may be
   * given it.
   */
  #throwNoCalls(op: string): never {
    throw this.#own(new InvalidHandleError(`Cannot ${op}: the channel was disposed`));
  }

  /**
   * What `handle` and `share()` throw once the channel ended under this object (`Shared.ended`:
   * a copy's creator disposed of it, or native code destroyed it): no hold may be taken on the
   * dead handle, nor an object handed out naming it, whose value may name a later channel by
   * now. An owner (not disposed) can only have met native code's destroy.
   */
  #deadHandle(op: string): InvalidHandleError {
    const who = this.#owner
      ? "native code destroyed it (kc_chan_destroy)"
      : "its creator disposed of it or native code destroyed it";
    return this.#own(
      new InvalidHandleError(
        `Cannot ${op}: ${who}, so handle ${this.#handleValue} names no live channel`,
      ),
    );
  }

  /**
   * True when `rc`, a native call's status on this channel, says that the channel was destroyed
   * under this object (marked: `#markEnded`), or it was marked so before: a `Channel.from` copy,
   * not disposed, holds the channel while the library is open, so the channel can be gone
   * (KC_EBADH) only because it was destroyed (its creator's dispose, or native code); an owner
   * not disposed can have met only native code's destroy, which a status read confirms
   * (`#destroyedUnder`). Either then answers as on a cancelled channel, with no native call any
   * more. Anything else (a disposed object's, after `closeLibrary()`) stays what it was: false.
   */
  #creatorEnded(rc: number): boolean {
    if (rc !== Status.EBADH) return false;
    if (!this.#shared.ended) {
      if (this.#owner) return this.#destroyedUnder();
      if (!this.#held || this.#disposed || this.#table.table === null) return false;
      // Native code's destroy under a creator of this isolate (see `Shared.creatorHere`): the
      // creator learns it, as its own call would, so that what the destroy dropped and the
      // values of its sends still waiting in JavaScript go to its onUndeliveredElement (in
      // that order), and `produce` hears of it (`ChannelHooks`). Before, the copy's mark
      // failed those sends with their values freed, never handed to the hook, and what the
      // destroy dropped reached it only at the creator's dispose.
      const creator = this.#shared.creatorHere ? this.#shared.owner?.deref() : undefined;
      if (creator !== undefined) creator.#destroyedUnder();
      // Who ended it, where this copy can tell (a no-op once the creator marked it above).
      this.#markEnded(this.#shared.creatorHere ? DESTROYED : ENDED_EITHER);
    }
    this.#at = null; // no call through the mapped handle word any more (see `#ended`)
    return true;
  }

  /**
   * The channel was destroyed under this isolate's copies (`Shared.ended`): from now on they
   * answer as on a cancelled channel, with no native call. Its cause: the close cause this
   * isolate knew, else the CancellationError a wait here got from the destroy's cancel, else a
   * new one with `why` (the creator disposed of it, by default). Waits of this isolate still
   * waiting in JavaScript fail now, as on a cancelled channel (those queued natively got, or
   * get, their record from the destroy's cancel). What this isolate counted and did not report
   * yet is not reported: the channel's counters went with it.
   */
  #markEnded(why: string = ENDED, then?: () => void): void {
    const s = this.#shared;
    if (s.ended) return;
    s.ended = true;
    // The gate of each of this isolate's objects for it (`#handle`), before any user code runs.
    this.#handle = ENDED_HANDLE;
    const owner = s.owner?.deref();
    if (owner !== undefined) owner.#handle = ENDED_HANDLE;
    for (const r of s.copies ?? []) {
      const copy = r.deref();
      if (copy !== undefined) copy.#handle = ENDED_HANDLE;
    }
    s.owner = undefined;
    s.copies = null;
    s.lib = null; // `flushCounts`: nothing to report to
    // A later channel may get the handle's value (once its slot is reused): a `Channel.from` of
    // that one makes an entry of its own, not this ended one.
    if (shared.get(s.key) === s) shared.delete(s.key);
    // Closed before the destroy's cancel, as this isolate knew (`closedFirst`: its close): it
    // keeps answering as closed, with the close cause or none (Kotlin's first cause), so no
    // cause of the end is made up. Before, a copy whose creator was disposed after
    // `close(cause)` answered a CancellationError.
    s.closed = true;
    s.cancelled = true;
    s.causeLooked = true; // kc_chan_cause has nothing any more
    if (!s.hasCause && !s.closedFirst) {
      s.cause = s.lastCancel ?? new CancellationError(why);
      s.hasCause = true;
    }
    // Marked before any user code runs (an owner's hook, `then`): a call it makes answers
    // as on the cancelled channel, with no call on the dead handle.
    // The waits still in JavaScript fail first (senders, then receivers, oldest first), then
    // what the destroy dropped (`then`) and those sends' values reach onUndeliveredElement, in
    // that order, as a local cancel rejects every wait before its hook runs. Before, `then` ran
    // first and each send's value reached the hook before it rejected: what the hook did (a
    // close of another channel) settled ahead of them.
    // Each wait fails even where one before it threw (its encoding's discard failing, which
    // `#failEnded` lets through once the wait has settled): the error goes to reportError, as a
    // hook's or a withdrawn send's discard's does (`#abandon`), and the rest go on. Before, the
    // throw left the later waits pending for good, what the destroy dropped and the sends'
    // values never handed to the hook, and the call that learnt of the end threw it.
    const later: [Channel<unknown>, unknown][] = [];
    try {
      for (const w of [...waiting(s.senders), ...waiting(s.receivers)]) {
        if (w.state !== LOCAL) continue;
        try {
          w.ch.#failEnded(w, later);
        } catch (e) {
          reportUncaught(e);
        }
      }
      then?.();
    } finally {
      for (const [ch, v] of later) ch.#refused(v, undefined); // its encoding freed already
    }
  }

  /**
   * A wait of this isolate still waiting in JavaScript on a channel that ended (`#markEnded`):
   * a send's value was not delivered; a receive fails as on a cancelled channel
   * (`receiveCatching`: closed). A copy's send value stays the caller's (its native copy, if it
   * was made, freed: no hook can take it, the creator's ended with its dispose); an owner's
   * whose channel native code destroyed goes to its onUndeliveredElement, as a cancel drops a
   * waiting sender's value (`#refused`): at once, or, given `later`, put there for the caller to
   * hand on once every wait has failed.
   */
  #failEnded(w: Waiter, later?: [Channel<unknown>, unknown][]): void {
    w.detach();
    try {
      if (w.kind === SEND && this.#owner && this.#destroyed) {
        if (later === undefined) this.#refused(w.value, w.encoded ? w.slot! : undefined);
        else {
          // Handed on by `#markEnded` once every wait has failed: the encoding freed now, as
          // the slot goes back below; the value handed on even where that discard throws.
          try {
            if (w.encoded) this.#codec.discard(w.slot!, symbolsToReleaseOf(this.#lib));
          } finally {
            later.push([this as Channel<unknown>, w.value]);
          }
        }
      } else if (w.kind === SEND && w.encoded) {
        this.#codec.discard(w.slot!, symbolsToReleaseOf(this.#lib));
      }
    } finally {
      releaseSlot(w);
      if (w.kind === RECV_CATCHING) w.resolve(this.#closedResult());
      // In order, as `#settleWith` rejects one that meets a cancel as it queues: an iterator's
      // next() still waiting in JavaScript rejects after an earlier one queued natively, whose
      // record the destroy writes (it answers done then). Before, it rejected first and the
      // earlier one answered done.
      else w.reject(this.#receiveError(Status.ECANCELED));
    }
  }

  /**
   * For select (`creatorEndedOf`), whose native call on this channel said KC_EBADH: true when the
   * channel was destroyed under this object (a copy's creator ended it, or native code destroyed an
   * owner's: then its clause is ready as on a cancelled channel), else false.
   */
  #endedUnder(): boolean {
    if (this.#shared.ended) return true;
    return this.#creatorEnded(this.#sym("select").kc_chan_status(this.#handle));
  }

  /**
   * The closed result of a native try-operation that failed with `rc` (KC_EPIPE or
   * KC_ECANCELED). A cancel made by another isolate or native code is remembered, as `#poll`
   * remembers it: a `send` then rejects with CancellationError, not ClosedSendError.
   */
  #closedBy(rc: number): { state: "closed"; cause?: unknown } {
    this.#ended();
    return this.#closedResult(rc); // KC_ECANCELED remembered there
  }

  /** `#closedBy` for a try-send: its cause as `#sendClosed`'s. */
  #sendClosedBy(rc: number): { state: "closed"; cause: unknown } {
    this.#ended();
    return this.#sendClosed(rc);
  }

  /**
   * The creator saw the channel closed or cancelled (by anyone): what it kept natively for the
   * hook goes to it now, not at its own cancel or dispose only. Another isolate's cancel drops
   * the buffered values (and its waiting senders') into that list, and copies' sends refused
   * since the close put theirs there (`#refused`); before, a creator that did not cancel or
   * dispose itself left them there, its hook never called, for as long as it kept the channel.
   */
  #ended(): void {
    const s = this.#shared;
    if ((s.senders.first === null && s.receivers.first === null) || this.#table.table === null) {
      this.#collect();
      return;
    }
    // Waits of this isolate still in JavaScript (sends for a full buffer's room or a
    // rendezvous's receiver, receives for a value) learn of the close or cancel first, in the
    // order a local cancel settles them (senders, then receivers, oldest first), as one batch of
    // settles with the collect (`collectDue`): their tries (`pump`) find the channel ended and
    // reject, and what the channel dropped natively (a cancel's buffered values), then the sends'
    // values, reach onUndeliveredElement once all have settled, as a local cancel rejects every
    // wait before its hook runs. Before, a receive or try-receive (a send or try-send, for the
    // receives) that found the channel cancelled by native code ran the hook for the buffered
    // values during the call, ahead of those waits, which learnt of the cancel at the end-of-turn
    // flush (what the hook did, a close of another channel, settled first). Where the channel is
    // only closed, a receive that finds a value there takes it, as its queueing at the end of the
    // turn would have.
    const outer = Channel.#beginCollects(s);
    try {
      const sym = librarySymbols(this.#lib, "settle waits on an ended channel");
      pump(s.senders, sym);
      pump(s.receivers, sym);
      this.#collectSettled();
    } finally {
      Channel.#endCollects(s, outer);
    }
  }

  /**
   * `#ended` where a wait settles (its record's status, or its queueing's): the collect is left
   * to the end of what settles it (`#collectSettled`: the ring drain's batch, `#settleEnded`),
   * so that every wait a native cancel failed rejects before onUndeliveredElement runs, as
   * README's close paragraph says. Before, a receive's settle ran the hook at once, ahead of its
   * own rejection and of the later waits of the batch (a value given back to the cancelled
   * channel by an earlier receive that gave up reached it so, and what the hook did, a close of
   * another channel, settled between them).
   */
  #endedSettled(): void {
    this.#collectSettled();
  }

  /**
   * The closed result of `receiveCatching`, a select's `onReceiveCatching` and the
   * try-operations: its `cause` is what `receive` (or `send`) rejects with, as Kotlin's
   * `receiveCatching` closed result carries what `receive` throws. Closed: the close cause, if
   * any. Cancelled (here, or `status` KC_ECANCELED: by another isolate or native code, then
   * remembered): the cancel's CancellationError (`cancelledError`), the cause
   * itself when it is one, else a CancellationError carrying it. Before, a cancel with a plain
   * Error gave that Error here while `receive` rejected with the CancellationError wrapping it,
   * and a cancel without a cause gave no cause here. Closed without a cause: no cause, as
   * Kotlin's receive results (`closed(closeCause)`); a try-send's is `#sendClosed`. `status`
   * KC_EPIPE (a wait's record: a close failed it) is closed even if cancelled since.
   */
  #closedResult(status?: number): { state: "closed"; cause?: unknown } {
    const s = this.#shared;
    if (status === Status.ECANCELED) s.cancelled = true;
    if (!s.hasCause) this.#lookCause(s);
    // A wait a close failed (its record's KC_EPIPE) is closed even when a cancel came after it,
    // before its record was drained: it settles as the close left it, as `receive` does
    // (`#receiveError`) and as a local channel's close settles it at once. Before, it answered
    // the later cancel's CancellationError.
    if (s.cancelled && status !== Status.EPIPE && this.#cancelledFirst(s)) {
      return { state: "closed", cause: cancelledError(s) };
    }
    return s.hasCause ? { state: "closed", cause: s.cause } : CLOSED;
  }

  /**
   * The closed result of a try-send (`trySend`, `trySendMany`): its cause is what `send`
   * rejects with (`#sendError`), closed without a cause a fresh {@linkcode ClosedSendError}, as
   * Kotlin's `trySend` answers `closed(sendException)` (`closeCause ?:
   * ClosedSendChannelException`). Before, it had no cause then.
   */
  #sendClosed(status?: number): { state: "closed"; cause: unknown } {
    const r = this.#closedResult(status);
    if (r === CLOSED) return { state: "closed", cause: new ClosedSendError() };
    return r as { state: "closed"; cause: unknown }; // cancelled, or closed with a cause
  }

  /**
   * A native channel closed by another isolate (or native code) with a cause: this isolate's
   * copy of it (kc_chan_cause), looked for once. Only asked once the channel is seen closed,
   * when the cause, if any, is there already (kc_chan_close_cause stores it with the close).
   * `read`: its bytes as kc_chan_cause answered them already (null: none), for a caller that read
   * them before another thread's destroy could free them (`#cancelAfterClose`).
   */
  #lookCause(s: Shared, read?: Uint8Array | null): void {
    // Not by a disposed object (a record of its send drained after its dispose): it makes no
    // native call (`#handle`), and the look stays for this isolate's other objects to make
    // (else marked made with nothing read, their answers lost the cause).
    if (
      s.causeLooked || s.local || this.#handleValue === 0 || this.#destroyed || this.#disposed ||
      this.#table.table === null
    ) return;
    s.causeLooked = true;
    const sym = librarySymbols(this.#lib, "read close cause");
    // Read here unless the caller read it (`readCauseBytes`, as `#cancelAfterClose` does).
    const bytes = read !== undefined ? read : readCauseBytes(sym.kc_chan_cause, this.#handle);
    if (bytes === undefined) return; // a dead handle: nothing to read
    if (bytes === null) {
      // None stored: a cancel by the end of the isolate that fed or read it (`produce`'s or
      // `actor`'s owned watch, kc_chan_status bit 2) has one to say so, made here: no isolate was
      // left to store it.
      const st = sym.kc_chan_status(this.#handle);
      if (st >= 0 && (st & 4) !== 0) {
        const gone = new CancellationError(ownerGone(s.role));
        s.cause = gone;
        s.hasCause = true;
        // No role known yet: a copy opened later with one names it (`Shared.learnRole`).
        if (s.role === undefined) s.ownerGoneUnnamed = gone;
      }
      return;
    }
    const got = decodeCause(bytes);
    if (!got.ok) return;
    s.cause = got.cause;
    s.hasCause = true;
  }

  /**
   * @ignore The cancel that came after a close of this native channel, as native code recorded
   * it (kc_chan_status bit 3, kc_chan_cancel_cause: ABI 23): `{ cause }` (undefined when that
   * cancel gave none) where the channel was closed first and then cancelled, by anyone (another
   * isolate's `Channel.from` copy, a copy here, native code), else undefined (open, closed
   * only, cancelled as its first close, local, ended or disposed here). The close cause is
   * looked up too (`#lookCause`), so `taskCancelError` can tell the two apart. For `produce`
   * and `actor`, whose task a cancel made elsewhere cancels with that cancel's cause, not the
   * close's (Kotlin's `ChannelCoroutine.cancel(cause)`); before ABI 23 native code kept only
   * the first closer's cause, and the task got the close's.
   */
  #cancelAfterClose(): { cause: unknown } | undefined {
    const s = this.#shared;
    if (
      !s.cancelled || s.local || s.ended || this.#handleValue === 0 || this.#destroyed ||
      this.#disposed || this.#table.table === null
    ) return undefined;
    const sym = librarySymbols(this.#lib, "read cancel cause");
    const h = this.#handle;
    // Both causes before the status: another thread's destroy (it frees them) between a status
    // read that saw bit 3 and the cause's read left the task "Channel was cancelled" without the
    // late cancel's cause. Read first, they still tell it where the status read comes too late
    // (the handle dead): a first cancel's cause that is not the close cause's (the same bytes
    // where that cancel was the close, kc_chan_cause reading its entry too) came after a close.
    const close = readCauseBytes(sym.kc_chan_cause, h);
    if (close === undefined) return undefined; // destroyed already: nothing to read
    let cancel = readCauseBytes(sym.kc_chan_cancel_cause, h);
    if (cancel === undefined) return undefined;
    const st = sym.kc_chan_status(h);
    // The close cause as read above, whatever this answers (a caller given undefined looks for
    // it next, `closedResultOf`): another thread's destroy since (the handle dead at the status
    // read) freed it, and a look now read nothing, for good (`causeLooked`), where this
    // isolate's receivers and the task keep it.
    if (!s.hasCause) this.#lookCause(s, close);
    if (st >= 0) {
      if ((st & 8) === 0) return undefined;
      // Bit 3 comes with its cause (one critical section): one not there at the read above
      // came since.
      if (cancel === null) cancel = readCauseBytes(sym.kc_chan_cancel_cause, h) ?? null;
    } else if (cancel === null || (close !== null && sameBytes(close, cancel))) {
      // Destroyed since the reads: no cause of a cancel after a close read (left: one made
      // without a cause reads as none, the task given the receivers' error rather than a
      // cause-less "Channel was cancelled"); or the first cancel's is the close cause's (that
      // cancel closed it, or gave the same bytes: the same value either way).
      return undefined;
    }
    if (cancel === null) return { cause: undefined }; // none given
    const got = decodeCause(cancel);
    return { cause: got.ok ? got.cause : undefined };
  }

  /**
   * Closes (or cancels) the native channel, storing `cause` with it for other isolates (its
   * stand-in when it cannot be copied, `encodeCause`): 1 if this call closed it, 0 if it was
   * closed already, -1 (a cancel without a cause to store) not known, `CAUSE_LOST` (KC_ENOMEM:
   * native code had no memory to keep the cause) closed or cancelled all the same, without the
   * cause, whether by this call or before not known: the caller makes this isolate's state say
   * so and throws `causeLostError`. `bytes`, when given, is the cause encoded already (`cancel`).
   */
  #closeNative(
    sym: Sym,
    cancel: boolean,
    cause: unknown,
    hasCause: boolean,
    bytes: Uint8Array | null = hasCause ? encodeCause(cause) : null,
  ): number {
    const op = cancel ? "cancel channel" : "close channel";
    // Encoding the cause ran the caller's code (its getters), which may have learnt the channel
    // ended or disposed this object: the call below is given `ENDED_HANDLE` then (`#handle`,
    // read after it), answering KC_EBADH.
    // The test hook (`_testCauseNoMemory`): the cause is not kept, and the answer is
    // KC_ENOMEM, as kc_chan_close_cause gives when it cannot copy it.
    const noMemory = bytes !== null && causeNoMemory > 0;
    if (noMemory) causeNoMemory--;
    let rc = bytes !== null
      ? sym.kc_chan_close_cause(this.#handle, bytes, noMemory ? 0 : bytes.length, cancel ? 1 : 0)
      : cancel
      ? sym.kc_chan_cancel(this.#handle)
      : sym.kc_chan_close(this.#handle);
    // Ended by its creator (a copy's): closed already, as a cancelled channel is. So is an
    // owner's channel that native code destroyed (`#destroyedUnder`): the destroy cancelled it,
    // so close() answers false and cancel() does nothing, as on any cancelled channel
    // (Kotlin's), where both threw InvalidHandleError and the owner's dispose, actor and
    // produce each caught it.
    if (this.#creatorEnded(rc)) return 0;
    if (noMemory && rc >= 0) rc = Status.ENOMEM;
    // The close or cancel stands (zig-src/root.zig, kc_chan_close_cause): only the cause is
    // lost, and whether this call was the first is not told. Before, it threw `unwrap`'s "out
    // of memory" as if nothing had happened: close() left this isolate's state open, and
    // cancel() kept the cause as the channel's here (no other isolate could read it) and left
    // what the cancel dropped for onUndeliveredElement to a later call.
    if (rc === Status.ENOMEM && bytes !== null) return CAUSE_LOST;
    this.#unwrap(rc, op);
    return bytes === null && cancel ? -1 : rc;
  }

  #sendError(status: number): unknown {
    const s = this.#shared;
    if (!s.hasCause) this.#lookCause(s);
    if (status === Status.ECANCELED && this.#cancelledFirst(s)) return cancelledError(s);
    return s.hasCause ? s.cause : new ClosedSendError();
  }

  #receiveError(status: number): unknown {
    const s = this.#shared;
    if (!s.hasCause) this.#lookCause(s);
    if (status === Status.ECANCELED && this.#cancelledFirst(s)) return cancelledError(s);
    return s.hasCause ? s.cause : new ClosedReceiveError();
  }

  /**
   * Whether the cancel of this cancelled channel was its first close: false where a close came
   * first (`Shared.closedFirst`: this isolate's close, or kc_chan_status bit 3, read once for a
   * native channel another isolate or native code ended), when its operations answer as on the
   * closed channel, as Kotlin's `cancel()` after `close(cause)` keeps the close cause (its
   * `closeOrCancelImpl` sets the cause only if none was) and only drops the buffered values.
   * Before, they answered the cancel's CancellationError.
   */
  #cancelledFirst(s: Shared): boolean {
    if (s.closedFirst) return false;
    if (
      s.closedFirstLooked || s.local || s.ended || this.#handleValue === 0 || this.#destroyed ||
      this.#disposed || this.#table.table === null
    ) return true;
    const st = librarySymbols(this.#lib, "read channel status").kc_chan_status(this.#handle);
    // Bit 4 (cancelled): the order is final. Bit 3: a close came before the cancel.
    if (st >= 0 && (st & 16) !== 0) {
      s.closedFirstLooked = true;
      if ((st & 8) !== 0) s.closedFirst = true;
    }
    return !s.closedFirst;
  }

  /**
   * Hands the values the channel dropped (kept natively) to onUndeliveredElement: at most
   * `COLLECT_BATCH` now, the rest a macrotask later (and so on), so that native code dropping
   * values faster than the hook takes them cannot hold this operation, and the event loop, for
   * as long as it goes on. The timer is not unref'd: values handed to a user hook must not be
   * lost at exit, and it keeps the process alive only while a batch came full (README). True if
   * it took any (the hook ran, or will). Given `into`, the values taken now are put there for
   * the caller to hand on (`#collectAfter`), not handed to the hook.
   */
  #collect(into?: unknown[]): boolean {
    // Not once it ended (native code destroyed it: `#destroyedUnder` took all it dropped; or a
    // copy of this isolate found that first: the dispose takes them), nor once disposed (the
    // dispose took them all, its destroy sealed the list), as the handle's value may name a
    // later channel since. Before, a select's losing send clause refused on its channel after
    // user code ran (a hook, a job's Disposable) that may have disposed it, or a send's record
    // drained after the dispose (its queued wait failed by the dispose's cancel), took from the
    // dead handle's list (`#refused`; `#handleValue`, past the gate).
    if (
      !this.#keeps || this.#shared.ended || this.#disposed || this.#table.table === null ||
      this.#collectLater
    ) return false;
    const sym = librarySymbols(this.#lib, "collect undelivered values");
    const taken = this.#takeUndelivered(sym, COLLECT_BATCH, into);
    if (taken < COLLECT_BATCH) return taken > 0;
    this.#collectLater = true;
    setTimeout(() => {
      this.#collectLater = false;
      if (!this.#disposed) this.#collect(); // a dispose took the rest (all of them)
    }, 0);
    return true;
  }

  /** A `#collect` stopped at `COLLECT_BATCH` and set a timer for the rest. */
  #collectLater = false;

  /**
   * `#collect` after an operation of this isolate (a receive that found the channel empty; a
   * drop policy's send or receive, or its try-receive that found it empty): where waits of this
   * isolate are still in JavaScript and it took values, the channel's status is read before the
   * hook gets them, and if it was closed or cancelled meanwhile (another thread's cancel between
   * this isolate's tries and the take, which dropped the buffered values into the list), those
   * waits learn of it first, as `#ended` settles them: one batch of settles, the values taken
   * handed after every wait has settled, then the rest (a send's refused value, what the list
   * got since). A destroy found so ends the channel here first (`#markEnded`: the waits fail,
   * then what the destroy dropped), the values taken after. A cancel after the status read
   * dropped nothing that was taken: its values wait in the list for the settles it causes.
   * Before, the hook ran at once, ahead of those waits' rejections (they learnt of the cancel
   * at the end-of-turn flush), and what it did, a close of another channel, settled first.
   * With no wait in JavaScript (those queued natively learn of it through their records),
   * `#collect`, with no status read. True if it took any.
   */
  #collectAfter(): boolean {
    const s = this.#shared;
    if (!waitsInJavaScript(s)) return this.#collect();
    const taken: unknown[] = [];
    if (!this.#collect(taken)) return false;
    const sym = librarySymbols(this.#lib, "collect undelivered values"); // open: it took some
    const rc = sym.kc_chan_status(this.#handle);
    if (rc < 0 || (rc & 1) === 0) {
      // Open (bit 1 clear); or the handle is dead, which only native code's destroy makes of an
      // owner's (the one object that keeps values): learnt now, its waits failed first. Every
      // hand here is immediate (`#markEnded` hands what the destroy dropped, then the sends'
      // values, none left to a batch), so the order holds inside a batch of settles too, and
      // inside the hook (`#undelivered` queues each in turn). No batch reaches here with a wait
      // still in JavaScript: those a batch's pump leaves all settle on a closed channel, and
      // the hooks it runs run after them.
      if (rc < 0) this.#creatorEnded(rc);
      for (const v of taken) this.#undelivered(v);
      return true;
    }
    const outer = Channel.#beginCollects(s);
    try {
      try {
        pump(s.senders, sym);
        pump(s.receivers, sym);
      } finally {
        for (const v of taken) this.#undelivered(v); // taken out of the list: never lost
      }
      this.#collectSettled();
    } finally {
      Channel.#endCollects(s, outer);
    }
    return true;
  }

  /**
   * What `#collect` does, with `sym` (the release symbols, for a dispose after close): takes up
   * to `most` values; returns how many it took. Given `into`, the decoded values go there, not
   * to the hook.
   */
  #takeUndelivered(sym: Sym, most = Infinity, into?: unknown[]): number {
    // One slot for every channel: each value is decoded before the hook runs, and a #collect
    // the hook causes (disposing another channel) takes its own values into it before this
    // loop takes the next.
    const slot = dropSlot;
    let taken = 0;
    // The handle's value, past the gate (`#handle`): the list outlives the destroy, kept by
    // value, and each caller takes it only while no later channel has the value (not ended; or
    // a status read on the value has just said KC_EBADH: `#destroyedUnder`, the dispose).
    const h = this.#handleValue;
    while (taken < most && sym.kc_chan_take_undelivered(h, slot.u8, this.#size) === 1) {
      taken++;
      if (this.#onUndelivered === undefined) {
        this.#codec.discard(slot, sym);
        continue;
      }
      let v: unknown;
      try {
        v = this.#codec.decode(slot, sym);
      } catch (e) {
        reportUncaught(e);
        continue;
      }
      if (into !== undefined) into.push(v);
      else this.#undelivered(v); // waits its turn if the hook is running (a re-send in it)
    }
    return taken;
  }

  /**
   * Sends without waiting: `ok` (sent, or dropped by drop-latest), `full`, or `closed`.
   * Throws {@linkcode CodecError} for a value the codec cannot carry.
   */
  trySend(value: T): TrySendResult {
    // On what is no Channel, the first private read throws the engine's TypeError: named here,
    // a try around that read only (tryReceive says why).
    let at: Deno.PointerObject | null; // null once disposed or the library closes (see `#at`)
    try {
      at = this.#at;
    } catch {
      throw notChannel(this, "trySend");
    }
    const s = this.#shared;
    if (
      // Not local, no waiter of this isolate, and not ended (another copy saw the end: this
      // one's word may hold a later channel's handle): `Shared.detour`.
      s.detour === 0 && at !== null && this.#plainF64 && typeof value === "number" &&
      this.#blocked![0] === 0
    ) {
      // A mapped codecs.f64 channel with no waiter of this isolate (a stream's sender): what
      // `#trySend` does then, in a function small enough for V8 to inline into the caller's
      // loop (as is a local channel's path).
      scratchF64[0] = value;
      // Past the gate (`#handle`): `detour` 0 says not ended, and no caller code ran since.
      const rc = this.#sendAt!(at, this.#handleValue, scratchPtr, this.#size);
      return rc === 0 ? OK : this.#sendFailed(rc, this.#sym("trySend"), undefined, "trySend");
    }
    // A mapped codecs.bytes channel: its own path, which needs no `#sym` either (see `#at`).
    if (at !== null && this.#bytes) return this.#trySendBytes(value, s, at);
    const sym = this.#sym("trySend"); // a disposed channel's error names the call
    if (s.local) return this.#localSend(this.#passLocal(value, "trySend"));
    return this.#trySend(value, undefined, sym, "trySend");
  }

  /**
   * trySend on a mapped codecs.bytes channel: with no waiter of this isolate (a stream of
   * buffers), copied and sent in one native call (`trySendBytes`) through the symbols taken
   * when it was mapped (`#symAt`), as the codecs.f64 path does: `at` (`#at`) not null says
   * that no dispose began and the library is not closing; else as `trySend`'s checked path. A
   * method of its own, so that trySend stays small enough for V8 to inline (with these lines in
   * it, the codecs.f64 pair measured ~30% slower).
   */
  #trySendBytes(value: T, s: Shared, at: Deno.PointerObject): TrySendResult {
    if (s.detour === 0 && !this.#dropping && this.#blocked![0] === 0) { // see trySend
      // Also for the failure's discard of the copy: they stay valid (the library stays loaded).
      // The value's check runs none of the caller's code (`sendLength`: engine reads only), so
      // nothing disposes the channel or closes the library between it and the send. Before, it
      // was `instanceof Uint8Array`, which ran an own Symbol.hasInstance of Uint8Array's, and the
      // handle had to be read after it.
      const sym = this.#symAt!;
      const n = sendLength(value);
      const rc = trySendBytes(value, n, scratch, sym, at, this.#handle, "trySend");
      return rc === 0 ? OK : this.#sendFailed(rc, sym, undefined, "trySend");
    }
    const sym = this.#sym("trySend"); // a disposed channel's error names the call
    if (s.local) return this.#localSend(this.#passLocal(value, "trySend"));
    return this.#trySend(value, undefined, sym, "trySend");
  }

  /**
   * `trySend` on a channel that is not local (`send` checks that first too), past its inlined
   * path; with `keep` (a send that waits when full, of an object), a `full` answer leaves
   * the value encoded in `keep`, for the wait: the value is read once. Before, the try encoded
   * it (and freed that) and the wait encoded it again: its getters ran twice, and the value
   * sent was the second read. A `closed` answer leaves it there too, for the send to hand to
   * the undelivered path (`#refused`). On any other answer (or a throw) `keep` holds nothing.
   * `op` names the call in its errors, the value's own (its codec's CodecError) and those about
   * the call (a dispose or library close by the caller's code, a native failure): a send's, a
   * trySend's, or trySendMany's sending one value at a time. Before, a trySend's value error said
   * "Cannot send", as if send had been called, while its errors about the call said "trySend".
   */
  #trySend(
    value: T,
    keep: Slot | undefined,
    sym: Sym,
    op = "send",
  ): TrySendResult {
    const s = this.#shared;
    if (s.ended) return this.#sendEnded(value, keep, sym, op);
    // Senders of this isolate still waiting in JavaScript are ahead of this one.
    if (s.senders.first !== null) {
      if (!pump(s.senders, sym)) {
        if (keep !== undefined) this.#codec.encode(value, keep, sym, op);
        else this.#reject(value, sym, op); // still reject what the codec cannot carry
        if (this.#callerEnded()) {
          this.#afterCallerCode(op, keep && ((sym) => this.#codec.discard(keep, sym)));
        }
        // Its own "full" failure: the retries of the senders ahead count none.
        s.fullFails++;
        if (!s.scheduled) this.#countLater(s);
        return FULL;
      }
      // A retry there may have met the dead handle and learnt the channel ended (`#tryNow`): its
      // own try below is given `ENDED_HANDLE` then (`#handle`) and answers closed.
      // The retries' settles ran the caller's code (onUndeliveredElement, `pump`'s collect),
      // which may have disposed the channel or closed the library: this call throws what a call
      // after it throws, nothing sent (`#afterCallerCode`), before `#handle` is read or `sym`
      // called. The encoding below checks that too, but codecs.bytes and codecs.f64 numbers
      // make no call of the codec's: through them the send went on, and after a close its
      // try-send answered closed (a native call through the closed library's symbols). For
      // codecs.bytes, since its value's check stopped running the caller's code (its
      // `instanceof`), and the check after it, which caught this too, was dropped with it.
      if (this.#callerEnded()) this.#afterCallerCode(op);
    }
    let settle = false;
    if (s.receivers.first !== null) {
      const h = this.#handOff(value, sym, op);
      if (h === HANDED) {
        // Handed to a receive of this isolate with no native call: what this creator's copies
        // dropped goes to its hook all the same, as at any send of a drop policy's (README).
        // Before, it waited natively for a later call.
        if (this.#dropping) this.#collectAfter();
        return OK;
      }
      // A receive of this isolate queued natively may be the one the try-send completes.
      if (h === VIA_RING) settle = true;
      else if (h === VIA_RING_COPY) {
        // As VIA_RING, with the copy made before the caller's code queued a receiver natively
        // ahead of this isolate's: it is what is sent, not a second read of the value.
        settle = true;
        value = viaRingCopy as T;
        viaRingCopy = undefined;
      } // Passed, but no receiver could take it (each completed natively first): the copy is
      // what is sent, not a second read of the value.
      else if (h !== EMPTY) value = h as T;
    }
    if (this.#sendBlocked(sym)) {
      // Full as the blocked byte says: the value is checked, not copied into native memory only
      // to be freed again (a sender retrying a full channel did that on every try).
      if (keep !== undefined) this.#codec.encode(value, keep, sym, op);
      else this.#reject(value, sym, op);
      if (this.#callerEnded()) {
        this.#afterCallerCode(op, keep && ((sym) => this.#codec.discard(keep, sym)));
      }
      s.fullFails++; // the native side counts the ones it answers itself
      if (!s.scheduled) this.#countLater(s);
      return FULL;
    }
    const slot = keep ?? scratch;
    const at = this.#at;
    let rc: number;
    if (this.#bytes) {
      // Encoded and sent in one native call (see `#bytes`); a failure leaves it encoded in
      // `slot`, as below.
      const n = sendLength(value); // runs none of the caller's code (see `trySend`)
      rc = trySendBytes(value, n, slot, sym, at, this.#handle, op);
    } else {
      if (this.#f64 && typeof value === "number") scratchF64[0] = value;
      else {
        this.#codec.encode(value, slot, sym, op); // also rejects what the codec cannot carry
        // Guarded here so that the send's fast path makes no closure.
        if (this.#callerEnded()) {
          this.#afterCallerCode(op, (sym) => this.#codec.discard(slot, sym));
        }
        // The caller's code the encoding ran (a getter) may have learnt the channel ended: the
        // try-send below is given `ENDED_HANDLE` then (`#handle`, read after the encoding) and
        // answers closed, `keep` holding the encoding for send (`#sendFailed`).
      }
      rc = at !== null
        ? sym.kc_chan_try_send_at(at, this.#handle, slot.ptr, this.#size)
        : sym.kc_chan_try_send(this.#handle, slot.ptr, this.#size);
    }
    if (rc === 0) {
      // See `#handOff`; a select of this isolate with a receive clause here may be the one the
      // try-send completed (`Shared.selectReceives`).
      if (settle || s.selectReceives > 0) this.#settleReceivers(s);
      if (this.#dropping) this.#collectAfter();
      return OK;
    }
    // Failed though the waiting byte said a receiver was queued: this isolate's may be on a
    // ring that is gone (destroyed by hand; its waiters leave the queues at its teardown), and
    // they fail now (`#settleReceivers`), as the withdrawal before the try-send failed them.
    if (settle) this.#settleReceivers(s);
    return this.#sendFailed(rc, sym, keep, op);
  }

  /**
   * `#trySend` once the channel ended under this object (`Shared.ended`): as a cancelled channel
   * answers, with no call. The value is checked by its codec first: one it cannot carry throws
   * that CodecError (the caller's bug, whatever the channel's state). A check that ran the
   * caller's code (a getter, a Proxy's trap) that disposed this object or closed the library
   * makes the call throw what a call after it throws, as on a channel that did not end
   * (`#trySend`, `#passLocal`), `keep` freed. Before, that answered `closed` (a send's value went
   * to the hook), where the same value on a live channel threw the dispose's InvalidHandleError.
   */
  #sendEnded(
    value: T,
    keep: Slot | undefined,
    sym: Sym,
    op = "send",
  ): TrySendResult {
    this.#at = null;
    if (keep !== undefined) {
      this.#codec.encode(value, keep, sym, op); // for send, as closed
      if (this.#callerEnded()) {
        this.#afterCallerCode(op, (sym) => this.#codec.discard(keep, sym));
      }
    } else {
      this.#reject(value, sym, op);
      this.#afterCallerCode(op);
    }
    return this.#sendClosed();
  }

  /**
   * A native try-send of `keep` (or of `scratch`) failed with `rc`: `full` or `closed`, the
   * copy freed unless `keep` keeps it (see `#trySend`), or thrown.
   */
  #sendFailed(rc: number, sym: Sym, keep: Slot | undefined, op = "send"): TrySendResult {
    if (keep !== undefined) {
      if (rc === Status.EAGAIN) return FULL; // kept for the wait
      if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#sendClosedBy(rc); // see send
      if (this.#creatorEnded(rc)) return this.#sendClosed(); // kept, for send
    }
    this.#codec.discard(keep ?? scratch, sym);
    if (rc === Status.EAGAIN) return FULL;
    if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#sendClosedBy(rc);
    if (this.#creatorEnded(rc)) return this.#sendClosed();
    this.#fail(rc, op);
    return FULL;
  }

  /**
   * Throws for `rc`, a native call's failure: a channel disposed while the call ran the caller's
   * code (a value's getter, as it was encoded) says so, as a call after the dispose does, not
   * "the handle is stale, destroyed or not a kcoro handle".
   */
  #fail(rc: number, op: string): void {
    if (rc === Status.EBADH) this.#sym(op); // throws once disposed
    this.#unwrap(rc, op);
  }

  /**
   * `unwrap(rc, op)`, a KC_EBADH this channel's own error (`isOwnError`). Each caller asks
   * `#creatorEnded(rc)` first: a channel destroyed under this object answers as cancelled, so
   * a KC_EBADH here is a disposed object's (said so) or not expected.
   */
  #unwrap(rc: number, op: string): number {
    if (rc !== Status.EBADH) return unwrap(rc, op);
    if (this.#disposed) this.#throwNoCalls(op);
    throw this.#own(statusError(rc, op) as InvalidHandleError);
  }

  /**
   * True when native code destroyed this owner's channel (`kc_chan_destroy` through its
   * `handle`): not disposed, the library open (so the ring and the table are), and
   * `kc_chan_status` says the channel is gone. Only a destroy ends a channel its owner has not
   * disposed of, as `watchCancelOf` and a copy's `#creatorEnded` take it. Called on a KC_EBADH
   * only (`#creatorEnded`): one status read, off every fast path.
   *
   * Once learnt, the channel is ended here (`#markEnded`, its cause "Channel was cancelled:
   * native code destroyed it", as a copy of this isolate that finds it first says): the owner
   * answers as on a cancelled channel, as its copies do (close() false, cancel() nothing, the
   * try-operations `closed`, sends, receives and iteration a CancellationError, a select clause
   * ready as cancelled), and makes no native call on its handle again (`Shared.ended`; `#at`
   * null, so no inlined try-path either). Before, its calls threw InvalidHandleError, where its
   * copies answered cancelled, and `produce` and `actor` had to tell the channel's own such
   * error from another channel's. The handle's slot is free, and once its generation wraps (511
   * reuses of it, ~523,000 channel frees: zig-src/handle.zig) the value names a later channel,
   * which a close(), a cancel(), a send or cancel()'s take of the dropped values (the handle's
   * native list) would have acted on. So what the destroy dropped for the hook goes to it now,
   * all of it, while the status read has just said no channel has the value (before, a later
   * cancel() took it through the handle, whatever channel had its value by then; the dispose
   * looks once more, guarded by a status read: see there), and so do the values of this
   * owner's sends still waiting in JavaScript (`#failEnded`), after those.
   */
  #destroyedUnder(): boolean {
    if (this.#destroyed) return true;
    if (!this.#owner || this.#disposed || this.#handle === 0 || this.#table.table === null) {
      return false;
    }
    const sym = librarySymbols(this.#lib, "read channel status");
    if (sym.kc_chan_status(this.#handle) !== Status.EBADH) return false;
    this.#destroyed = true;
    this.#at = null;
    this.#shared.orphanLib = null; // nothing for `orphans` to destroy
    this.#markEnded(DESTROYED, () => {
      if (this.#keeps) this.#takeUndelivered(sym);
    });
    // In a microtask: not amid the call that learnt it (a select's clauses, a flush of waits).
    const cause = this.#shared.cause, hooks = hooksOf.get(this);
    if (hooks !== undefined) queueMicrotask(() => hooks.learntDestroyed(this, cause));
    return true;
  }

  /** Set once `#destroyedUnder` found the channel destroyed by native code: never cleared. */
  #destroyed = false;

  /**
   * For `produce` and `actor` (`destroyedSeenOf`): true when native code destroyed this owner's
   * channel, as known without a native call: it learnt so itself (`#destroyedUnder`, also once
   * disposed since), or a copy of its isolate found it first (an owner not disposed sees its
   * channel ended only so).
   */
  #destroyedSeen(): boolean {
    return this.#destroyed || (this.#owner && !this.#disposed && this.#shared.ended);
  }

  /**
   * After the caller's code ran as a value was passed or encoded (a getter, a Proxy's trap):
   * throws what a call after it throws if it disposed the channel ("Cannot <op>: the channel
   * was disposed") or closed the library (LibraryClosedError), so that no call reports a value
   * sent that went nowhere; `free` first frees what was encoded (with the symbols that outlive
   * a close). Before, a local channel answered closed with a CancellationError, and a native
   * one's send went on after closeLibrary() and answered ok or full.
   */
  #afterCallerCode(op: string, free?: (sym: Sym) => void): void {
    if (!this.#callerEnded()) return;
    const lib = this.#lib;
    if (free !== undefined) {
      free(isLibraryOpen(lib) ? librarySymbols(lib, op) : symbolsToReleaseOf(lib));
    }
    this.#sym(op); // InvalidHandleError once disposed
    librarySymbols(lib, op); // LibraryClosedError once closed
  }

  /** Whether the channel was disposed or its library closed (by the caller's code, mid-call). */
  #callerEnded(): boolean {
    return this.#disposed || this.#table.table === null;
  }

  /**
   * Throws what encoding `value` would throw, copying it into native memory only if need be;
   * `op` names the call in a native-memory failure's error (`Codec.encode`).
   */
  #reject(value: T, sym: Sym, op?: string): void {
    if (this.#codec.check(value, op)) return;
    this.#codec.encode(value, scratch, sym, op);
    this.#codec.discard(scratch, sym);
  }

  /**
   * `codec.pass(value)` for a local send, a number for `codecs.f64` without the call (see
   * `#f64`): throws if the value's code disposed the channel or closed the library.
   */
  #passLocal(value: T, call = "send"): T {
    if (this.#f64 && typeof value === "number") return value;
    const v = this.#codec.pass(value, call); // its CodecError names the call
    // Only an object's code (a getter, a Proxy's trap) can run in the pass: a primitive's
    // send skips the check.
    if (typeof value === "object" && value !== null) this.#afterCallerCode(call);
    return v;
  }

  /**
   * A local try-send of `v` (already through `codec.pass`): to a waiting receiver, into the
   * ring, or by the overflow policy; the native counters' rules, counted here.
   */
  #localSend(v: unknown): TrySendResult {
    const s = this.#shared;
    if (s.closed) {
      // A closed or a cancelled failure, as the native channel counts what the caller gets.
      if (s.cancelled) s.localCancelled++;
      else s.localClosed++;
      return this.#sendClosed();
    }
    const r = s.receivers.first;
    if (r !== null) {
      // Receivers wait only while the ring is empty: hand it over.
      r.leave(s.receivers);
      s.handoffs++;
      if (this.#zeroCopy) this.#handOffBytes(s, v);
      this.#stamp(s);
      r.resolve(received(r.kind, v));
      return OK;
    }
    if (s.count < this.#capacity) {
      s.push(v);
      s.localSends++;
      if (this.#zeroCopy) s.localBytesIn += bytesOf(v);
      this.#stamp(s);
      return OK;
    }
    if (!this.#dropping) {
      s.fullFails++;
      return FULL;
    }
    // Full, with a drop policy: the send succeeds and a value is dropped.
    s.localSends++;
    if (this.#zeroCopy) s.localBytesIn += bytesOf(v);
    s.localDropped++;
    this.#stamp(s);
    let dropped = v;
    if (this.#overflow === OVERFLOW["drop-oldest"]) {
      dropped = s.shift();
      s.push(v);
    }
    this.#undelivered(dropped);
    return OK;
  }

  /** A local receive that does not wait: the value, or the markers EMPTY or CLOSED. */
  #localTake(): unknown {
    const s = this.#shared;
    if (s.count !== 0) {
      const v = s.shift();
      s.localReceives++;
      if (this.#zeroCopy) s.localBytesOut += bytesOf(v);
      this.#stamp(s);
      // Room now: the oldest waiting sender's value moves in (senders wait only on a full ring).
      const w = s.senders.first;
      if (w !== null) {
        w.leave(s.senders);
        s.push(w.value);
        s.localSends++;
        if (this.#zeroCopy) s.localBytesIn += bytesOf(w.value);
        w.resolve(undefined);
      }
      return v;
    }
    const w = s.senders.first;
    if (w !== null) {
      // A rendezvous: take the oldest waiting sender's value.
      w.leave(s.senders);
      s.handoffs++;
      if (this.#zeroCopy) this.#handOffBytes(s, w.value);
      this.#stamp(s);
      w.resolve(undefined);
      return w.value;
    }
    if (!s.closed) return EMPTY;
    if (s.cancelled) s.localCancelled++; // as #localSend
    else s.localClosed++;
    return CLOSED;
  }

  /**
   * A zero-copy value handed over in JavaScript: its bytes sent and received, counted as a
   * local channel counts them (`bytesOf`), as a native hand-off counts the value's.
   */
  #handOffBytes(s: Shared, v: unknown): void {
    const n = bytesOf(v);
    s.localBytesIn += n;
    s.localBytesOut += n;
  }

  /**
   * Records a local operation's time, as the native counters do: only when the counters' clock
   * word moved since the last one (once a tick at most), or is `1` (no ticker runs yet).
   */
  #stamp(s: Shared): void {
    // The common case (the word has not moved) in a few bytes of code, so that it inlines into
    // the local fast paths (`send`, `receive`) within V8's budget; `#stampNow` the rest.
    const c = s.clock;
    if (c === null || c[0] !== s.clockLo || c[1] !== s.clockHi) this.#stampNow(s);
  }

  #stampNow(s: Shared): void {
    const c = s.clock ??= clockOf(this.#lib);
    const lo = c[0], hi = c[1];
    if (lo === s.clockLo && hi === s.clockHi) return;
    s.clockLo = lo === 1 && hi === 0 ? -1 : lo;
    s.clockHi = hi;
    const now = Number(librarySymbols(this.#lib, "read clock").kc_clock_now());
    if (s.firstNs === 0) s.firstNs = now;
    s.lastNs = now;
  }

  /**
   * A shared channel's operation completed in JavaScript was counted in `s`: the counts go to
   * the native channel at the end of this turn (`Shared.flush`), one call for the turn's
   * operations, not one each. A flush due anyway (`scheduled`: a waiter queues then) does it.
   */
  #countLater(s: Shared): void {
    s.scheduled = true;
    this.#bridge.defer(s);
  }

  /**
   * A select with a clause on this channel was won by its `onTimeout` (`countTimeoutOf`): one
   * timeout failure, as a native select given up at its deadline counts (reported with this turn's
   * other counts, `#countLater`).
   */
  #countTimeout(): void {
    const s = this.#shared;
    s.localTimeouts++;
    if (s.escaped && !s.scheduled && this.#table.table !== null) this.#countLater(s);
  }

  /**
   * A send (or a select's send clause) failed on a closed or cancelled channel: its value goes
   * to the undelivered path and counts as dropped, as Kotlin's `onClosedSend` hands it to
   * onUndeliveredElement (a `trySend` does not: it answers `closed`, the value stays the
   * caller's). `slot`, if given, holds it encoded and is emptied. A copy (no hook of its own)
   * hands it to the channel's native path (`kc_chan_drop`: the creator's hook, wherever that is,
   * and counted there), encoding a primitive that was not; it frees it when nothing takes it
   * (no hook, the channel is gone). The creator (or a local channel) calls its hook. Counted
   * whether or not a hook takes it, on both sides: kc_chan_drop counts what it is offered.
   */
  #refused(value: unknown, slot: Slot | undefined): void {
    const s = this.#shared;
    if (s.local || this.#owner) {
      // The release symbols: the library may be closed by now (a hook that `#ended` ran for
      // values dropped before, say, called closeLibrary). Before, `symbols` threw there, and the
      // value's encoding was never freed nor the value handed to the hook.
      if (slot !== undefined) this.#codec.discard(slot, symbolsToReleaseOf(this.#lib));
      // Once disposed (a producer's send after its consumer's dispose: src/produce.ts; a
      // select's losing clause, refused after a hook disposed its channel) the handle is dead,
      // its value maybe a later channel's: the value goes to the hook with no count and no look
      // at the kept list (the dispose took it all). Before, both were made with the dead handle.
      if (!this.#disposed) {
        s.localDropped++;
        if (!s.local && !s.scheduled && this.#table.table !== null) this.#countLater(s);
        // What was dropped natively before it (a copy's refused values, kept for this creator)
        // reaches the hook first, in drop order: a select's losing clause on a channel still
        // open comes here with nothing else having emptied the list.
        if (!s.local) this.#collect();
      }
      this.#undelivered(value);
      return;
    }
    if (this.#table.table === null || s.ended) {
      // No native path to the creator's hook any more (its dispose ended the channel, and the
      // hook with it): the encoding is freed, as when nothing takes it.
      if (slot !== undefined) this.#codec.discard(slot, symbolsToReleaseOf(this.#lib));
      return;
    }
    const sym = librarySymbols(this.#lib, "send");
    const enc = slot ?? scratch;
    // As the escape encodes a value a local channel held (`encodePassed`): a structured value's
    // copy that `pass` made (a Node Buffer's, on the default codec) goes as that value went, not
    // as the plain Uint8Array it is. No path is known to reach here with one (a copy's object
    // values come with their slot, encoded at the call), so this keeps the two encodings alike.
    if (slot === undefined) encodePassed(this.#codec, value as T, enc, sym);
    // A copy disposed while a select's clause on it settled still holds the channel for that
    // select (`#keptHeld`): its handle is live, and the value goes to the creator's hook through
    // it. Before, the dispose had given the hold back and this call was given the ended-handle
    // marker, which refused it: the value was freed, reaching no hook and counted nowhere.
    const h = this.#disposed && this.#held ? this.#handleValue : this.#handle;
    if (sym.kc_chan_drop(h, enc.ptr, this.#size) !== 1) this.#codec.discard(enc, sym);
  }

  /**
   * For a producer's send made after its task was cancelled: throws what a send into a
   * closed channel throws for a value its codec cannot carry (the TypeError or CodecError), so
   * such a value never reaches onUndeliveredElement. Without native memory: the codec's cheap
   * check, else its `pass` (a local send's own check: a structured value cloned in JavaScript).
   */
  #checkValue(value: T, op = "send"): void {
    if (this.#f64 && typeof value === "number") return;
    if (!this.#codec.check(value, op)) this.#codec.pass(value, op);
  }

  /**
   * Hands a value the channel drops to onUndeliveredElement (errors to reportError). Never from
   * inside the hook itself: a value dropped while it runs (its own `trySend` into this
   * drop-oldest channel dropping the one buffered, or a cancel it makes) waits in `#deferred`
   * and reaches it once it returned, in the order they were dropped. Before, the hook was called
   * inside itself, as deep as such a chain went: a hook that re-sends every value it gets
   * overflowed the stack, and on a shared channel the RangeError reached reportError, an
   * uncaught error that ends the process. A call hands it `v`, then at most `HOOK_BATCH` of the
   * values dropped meanwhile; the rest go in later macrotasks, `HOOK_BATCH` each (values dropped
   * meanwhile queue behind them), so even a hook that re-sends for ever holds no turn of the
   * event loop for long, and a cancel can end it. As in `#collect`, the timer is not unref'd:
   * values handed to a user hook are not lost at exit.
   */
  #undelivered(v: unknown): void {
    const hook = this.#onUndelivered;
    if (hook === undefined) return;
    if (this.#hooking || this.#deferred !== null) {
      (this.#deferred ??= []).push(v);
      return;
    }
    this.#hooking = true;
    try {
      hook(v as T);
    } catch (e) {
      reportUncaught(e);
    } finally {
      this.#hooking = false;
    }
    // HOOK_BATCH, as README says and each later drain hands: it handed one less (`- 1` counted
    // `v`'s call), so README's "at most 65,536 such values" was 65,535 in the first call.
    if (this.#deferred !== null) this.#drainDeferred(hook, HOOK_BATCH);
  }

  /** The hook is running (`#undelivered`): a value dropped now waits in `#deferred`. */
  #hooking = false;
  /** Values dropped while the hook ran (or past a batch), oldest at `#deferredAt`; else null. */
  #deferred: unknown[] | null = null;
  #deferredAt = 0;

  /** Hands `#deferred` to `hook`, at most `budget` values now, the rest a macrotask later. */
  #drainDeferred(hook: (value: T) => void, budget: number): void {
    const q = this.#deferred!;
    this.#hooking = true;
    try {
      while (this.#deferredAt < q.length) {
        if (budget-- <= 0) {
          setTimeout(() => {
            const rest = this.#deferred!; // kept while a drain is due: later drops queue here
            this.#deferred = rest.slice(this.#deferredAt);
            this.#deferredAt = 0;
            this.#drainDeferred(hook, HOOK_BATCH);
          }, 0);
          return;
        }
        const v = q[this.#deferredAt];
        q[this.#deferredAt++] = undefined; // not kept alive by the queue once handed over
        try {
          hook(v as T);
        } catch (e) {
          reportUncaught(e);
        }
      }
      this.#deferred = null;
      this.#deferredAt = 0;
    } finally {
      this.#hooking = false;
    }
  }

  /**
   * Gives `value` to a receiver waiting in this isolate: HANDED; VIA_RING when the native
   * try-send must decide and may complete one of this isolate's receivers queued natively;
   * else EMPTY when none could take it, or the copy `codec.pass` made when each receiver tried
   * had completed natively first (the value was read: the send goes on with that copy). `op`
   * names the call in the error of a value the codec cannot carry (`#trySend`'s).
   */
  #handOff(value: T, sym: Sym, op: string): unknown {
    const s = this.#shared;
    if (s.closed) return EMPTY;
    // The common case, mapped: the ready and waiting bytes read 0 (not closed, nothing to
    // receive, no receiver queued natively: `#closedNatively`, `#receiverMayWaitNatively` and
    // `#mayReceive` would each answer no) and then the handle word, read once for both (it says
    // they were this channel's), compared with the gate read once. Before, each of the three
    // read the word and the gate again. No caller code runs before `codec.pass` below.
    const ready = this.#ready;
    const quiet = ready !== null && ready[0] === 0 && this.#waiting![0] === 0 &&
      this.#word![0] === this.#handle;
    if (!quiet && this.#closedNatively(sym)) return EMPTY; // the native try-send says closed
    if (!quiet && this.#receiverMayWaitNatively(sym)) {
      // The waiting byte says a receiver may be queued natively: another thread's or isolate's,
      // queued before these receivers began waiting in JavaScript (one waits here only within
      // the turn it began), so ahead of them; or one of this isolate's, queued in an earlier
      // turn, which may itself be behind another's. They queue natively behind it, and the
      // native try-send meets the oldest, whoever's it is: FIFO across them all. Before, the
      // send handed the value to this isolate's receiver, past one that waited longer (the
      // mirror of `#poll`'s rendezvous rule, seed 547's): on a rendezvous channel until
      // 20144ae, on a buffered one (an empty buffer) until the waiting byte; and, where a
      // receive of this isolate was queued natively too, it withdrew the oldest of those and
      // handed it the value, past another thread's queued before it (the byte cannot say whose
      // is first). With the byte clear (no receiver queued natively) they meet here, with no
      // call.
      // A select of this isolate queued natively with a receive clause here is such a receiver
      // (the byte counts select clauses): these receivers began after it (a select queues the
      // waits of this isolate on its channels natively before it probes), so the select is
      // served first, and a ping-pong of this isolate cannot starve it. With a send clause
      // queued here instead, no receiver of this isolate waits: each met it natively. Before,
      // a count of this isolate's selects on the channel (`Shared.selects`, 78e97dd) sent this
      // through the native queue as well, before the byte existed; with the byte it took that
      // route only where the byte would, or once its select was served and not yet drained.
      this.#flushReceivers(s);
      // Receivers of this isolate queued natively now: the try-send may complete one of them.
      // `#trySend` then settles its record before it returns (`#settleReceivers`), as a
      // hand-off here would settle it: one call more than the withdrawal it made before, and
      // only with a receive of this isolate queued natively.
      return s.receivers.first !== null ? VIA_RING : EMPTY;
    }
    // A buffer may hold values sent (from elsewhere) since these receivers began waiting in
    // JavaScript: those come first. On a rendezvous channel, the ready byte says a sender may be
    // queued natively: another thread's or isolate's, queued since these receivers began
    // waiting here (their tries found none), so before this send: senders are served oldest
    // first, and it meets them first. Before, the send handed its value to this isolate's
    // receiver in JavaScript and that older sender went on waiting, though the one receiver
    // was the one it waited for. A plain byte read (no call) while none is queued.
    if (!quiet && this.#mayReceive(sym)) {
      pump(s.receivers, sym);
      // Their settles ran the caller's code (onUndeliveredElement, `pump`'s collect: a drop
      // policy's values dropped natively, collected as a receive takes a value), which may have
      // disposed the channel or closed the library: this send throws what a call after it
      // throws, nothing sent (`#afterCallerCode`), before `sym` is called again, as after the
      // senders' pump (`#trySend`). Before, after a close a codecs.bytes or codecs.f64 send
      // (no codec call, whose check caught it for the others) went on through the closed
      // library's symbols and answered ok, its value in a channel no receive could reach (the
      // dispose handed it to the hook: test "a trySend or send whose receivers ahead, ...").
      if (this.#callerEnded()) this.#afterCallerCode(op);
    }
    let passed: T | undefined;
    let have = false;
    for (let r = s.receivers.first, next: Waiter | null; r !== null; r = next) {
      next = r.next;
      if (r.state === COMPLETING) continue;
      if (!have) {
        passed = this.#codec.pass(value, op); // its CodecError names the call
        have = true;
        // Its getters ran the caller's code, which may have settled this receiver (aborted
        // its signal: it is rejected, and done) or others: look again from the first. Before,
        // a receiver aborted there was handed the copy all the same and the send said ok,
        // the value lost.
        // That code may also have queued a receiver natively ahead of those left: a select of
        // this isolate (its probe queued them natively, or one it began after the select
        // waits behind it), or another thread's. The waiting byte, read before it ran, is read
        // again (only a value with getters or traps runs such code): the native try-send then
        // meets the oldest, with this copy (the value is not read twice). Before, a receive
        // that the getter began after such a select was handed the value, passing it over.
        if (typeof value === "object" || typeof value === "function") {
          // That code may also have closed or cancelled the channel through native code (a
          // library it calls; another thread's end in that window is one after the hand-off,
          // this one returned before it): the ready byte, read before it ran, is read again,
          // and the send goes on natively with this copy, whose try finds the channel ended:
          // these receivers learn of it there (`#ended`) and fail, and a send's value reaches
          // onUndeliveredElement, as the channel's own close or cancel in the getter settles
          // them. Before, the first receiver was handed the value from the ended channel and the
          // send said ok. (A destroy changes the handle word: the flush below meets it.)
          if (this.#closedNatively(sym)) return passed;
          if (this.#receiverMayWaitNatively(sym)) {
            this.#flushReceivers(s); // as above
            if (s.receivers.first === null) return passed; // none left: sent natively as is
            viaRingCopy = passed;
            return VIA_RING_COPY;
          }
        }
        next = s.receivers.first;
        continue;
      }
      if (r.state === QUEUED && !this.#withdraw(r, true)) continue;
      r.detach();
      releaseSlot(r); // a queued receiver's, withdrawn: native code no longer writes it
      s.handoffs++;
      if (this.#zeroCopy) this.#handOffBytes(s, passed);
      this.#stamp(s); // its time too, as a native hand-off records one
      if (!s.scheduled) this.#countLater(s);
      r.resolve(received(r.kind, passed));
      return HANDED;
    }
    return have ? passed : EMPTY;
  }

  /**
   * `#handOff`'s flush of this isolate's receives still waiting in JavaScript, as one batch of
   * settles (`collectDue`), as the other flushes that can meet a native cancel are: another
   * thread may cancel the channel between the reads that sent the send here (the ready and
   * waiting bytes) and the queueing, and a receive that then finds it cancelled leaves the
   * collect of what the cancel dropped (`#endedSettled`) to the end of the flush, once every
   * receive has rejected. Before, the flush was no batch (its comment said receives hand no
   * value to onUndeliveredElement): the first receive's settle ran the hook for the values the
   * cancel dropped before it, and the later receives, rejected (what the hook did, a close of
   * another channel, settled ahead of them). No batch, and no list made (`flushAll`), where none
   * waits in JavaScript: a send to a receive of this isolate queued natively in an earlier turn
   * (a consumer's loop fed from timers or I/O) comes here on every send, with nothing to flush.
   */
  #flushReceivers(s: Shared): void {
    // Counted, not walked (`WaitQueue.local`): before, every such send walked the receivers
    // queued natively, O(n) in them.
    if (s.receivers.local === 0) return;
    const outer = Channel.#beginCollects(s);
    try {
      flushAll(s.receivers);
    } finally {
      Channel.#endCollects(s, outer);
    }
  }

  /**
   * After a native try-send that may have completed a receiver of this isolate queued natively
   * (`#handOff`'s VIA_RING): the records of this channel's receivers of this isolate settle now
   * (`Bridge.settleWhere`), before the send returns, as a hand-off in JavaScript settles the
   * receiver; those of other operations when they would have. Not one given up (its record
   * gives its value back, when the ring is drained as usual). Where the ring cannot be drained
   * (gone), the receivers still queued natively fail with that status's error, as `#handOff`'s
   * withdrawal failed them (`#lost`), and so do those given up whose abort lost (COMPLETING) and
   * the selects with a receive clause here, given up or not: no record will come for them.
   */
  #settleReceivers(s: Shared): void {
    // A select's record whose clause is a receive on this channel too (`Shared.selectReceives`):
    // the try-send may have completed it, and it settles now as a plain receive does, so that an
    // abort later in the turn finds it settled. Before, it settled when the ring drained, and
    // such an abort rejected it and put the value back, though the send had answered ok.
    const drained = this.#bridge.settleWhere(
      (op, index) =>
        op.gaveUp !== true &&
        (op instanceof Waiter
          ? op.kind !== SEND && op.ch.#shared === s
          : op.sendsAt?.(index) === false && op.channelAt?.(index) === s),
      s,
      false, // its held receive records only (`Bridge.#heldReceives`), not its sends
    );
    if (drained) return;
    // Each receiver queued natively fails (its withdrawal fails: the ring is gone), and one
    // whose abort lost to a completion (COMPLETING) too: the failed drain settled every record
    // drained before, so its record, on the ring when it went, will not come. Before, it was
    // skipped and waited on until the ring's wait found the ring gone, a turn or more later.
    for (const w of waiting(s.receivers)) this.#loseQueued(w);
    // Such a select fails too, as a close's look fails it (`#settleEnded`): no record will come.
    if (s.selectReceives > 0) this.#bridge.loseWhere((op) => selectOn(op, s, false), Status.EBADH);
  }

  /**
   * Settles the sends of this isolate queued natively on `s` whose records a native receive of
   * this isolate just wrote (`#poll`); the ring's other records wait for its next drain. Only
   * the oldest sender is looked at: a waiter is queued natively oldest first (at the end of its
   * turn, or by `flushAll`) and never goes back to JavaScript, so none queued natively is behind
   * one still waiting there. Before, this walked every sender waiting in JavaScript on each
   * receive that a native try served: a turn's burst of n sends into a buffer, then n receives,
   * cost n² steps (32000 sends: 4 s, not 13 ms).
   * Where the ring cannot be drained (gone: destroyed by hand, as a test does), no record will
   * come for this isolate's senders queued natively on `s` (a select's send clause too), the
   * one the receive just took included: each fails now, as `RingOp.lost` fails it (`#lost`),
   * and is tracked no more.
   * Before, they went on waiting until the ring's wait found it gone, a turn or more later,
   * while the receive had returned its value.
   */
  #settleSenders(s: Shared): void {
    const w = s.senders.first;
    // A sender queued natively, or a select with a send clause here (`Shared.selectSends`), may
    // have been the native receive's partner; none else.
    const senders = w !== null && w.state !== LOCAL;
    if (!senders && s.selectSends === 0) return;
    // A select's record whose clause is a send on this channel settles now too, as a plain
    // send's does. Before, it settled when the ring drained, after the receive had returned
    // its value.
    const drained = this.#bridge.settleWhere(
      (op, index) =>
        op instanceof Waiter
          ? senders && op.kind === SEND && op.ch.#shared === s
          : op.sendsAt?.(index) === true && op.channelAt?.(index) === s,
      s,
      true, // its held send records only
    );
    if (drained) return;
    // Such a select fails too, as a close's look fails it (`#settleEnded`): no record will come.
    if (s.selectSends > 0) this.#bridge.loseWhere((op) => selectOn(op, s, true), Status.EBADH);
    if (!senders) return;
    for (const q of waiting(s.senders)) {
      if (q.state === LOCAL) continue; // still in JavaScript: its queueing meets the dead ring
      this.#loseQueued(q);
    }
  }

  /**
   * A wait queued natively on a ring that is gone, or one whose abort lost to a completion
   * (COMPLETING) whose record went with the ring: no record will come, so it fails now as
   * `RingOp.lost` fails it (`#lost`: the ring's error, or its own reason where it was given up
   * first) and is tracked no more. `#settleReceivers`, `#settleSenders` and `#settleEnded`, each
   * after a failed drain (which settled every record drained before it), each walking a copy of
   * the queue taken then (`waiting`).
   */
  #loseQueued(w: Waiter): void {
    // Only a wait queued natively (QUEUED), or one whose record was due (COMPLETING: with the
    // ring gone it will not come). Not one still in JavaScript (LOCAL), which has no ticket to
    // withdraw: its queueing meets the dead ring. None is expected (the callers flush the
    // channel's waits still in JavaScript before the native call that leads here: close and
    // cancel, a send's `#flushReceivers`, a select's probe, and `#settleSenders` skips them;
    // trySendMany's batch comes here only with no receiver of the isolate; and no wait made
    // after a close or cancel waits), but one would lose nothing by waiting on, so it is left.
    if (w.state === LOCAL) return;
    // Never one settled already (DONE), whose ticket was freed (its withdrawal, were its slot
    // reused, would withdraw another operation's wait). Every caller passes a waiter of a list
    // it took of the queue (`waiting`) after the failed drain, and a waiter is DONE only once it
    // left its queue (`detach`, `leave`). Nothing between the list's making and this call
    // settles another waiter: a call here runs no caller code (the withdrawal of a dead ring's
    // ticket is a native call; `#lost` detaches with the captured `removeEventListener`, never
    // the signal's own, and rejects a promise). So this is an assertion, not a case: before, a
    // DONE waiter was skipped here, and its comment said no caller passes one.
    if (w.state === DONE) {
      throw new Error(
        `Cannot fail a wait lost with its ring: internal error, the ${
          waitOp(w.kind)
        } settled already, received a settled wait`,
      );
    }
    // The uncounted withdrawal (no wait gave up) forgets the ticket whatever it answers but
    // KC_EBUSY: on a ring gone natively, KC_EBADH; 0 where it was withdrawn, or with no native
    // call where the bridge destroyed the ring (`Bridge.abort`). Either way no record will come:
    // it fails, with KC_EBADH for the 0. KC_EBUSY (the ring still there, holding its
    // completion: not expected after a failed drain) leaves it COMPLETING, for that record to
    // settle it.
    const rc = this.#bridge.abort(w, true);
    if (rc === Status.EBUSY) w.state = COMPLETING; // not with the ring gone: its record settles it
    else this.#lost(w, rc < 0 ? rc : Status.EBADH);
  }

  /**
   * True when the native channel is closed though this isolate did not close it (native code
   * or another isolate did): its waiters here in JavaScript must not meet each other any more.
   * They learn of the close when they queue natively, at the end of the turn.
   */
  #closedNatively(sym: Sym): boolean {
    // The ready byte read 0, and the handle word still this channel's: open at some moment
    // since the byte was written (a close sets it at its unlock), as `#mayReceive` reads it,
    // so no call. That is the common case of a hand-off here (a rendezvous with no sender
    // queued natively, an empty buffer). Before, every hand-off between waits of this isolate
    // called kc_chan_status, the one native call of a same-isolate ping-pong.
    const ready = this.#ready;
    if (ready !== null && ready[0] === 0 && this.#word![0] === this.#handle) return false;
    const rc = sym.kc_chan_status(this.#handle);
    return rc > 0 && (rc & 1) !== 0; // a bad handle is for the native call that follows
  }

  /**
   * Withdraws a queued waiter from the native queue (`Bridge.abort`; `uncounted`: not counted as
   * cancelled): true if withdrawn. False if it completed first (then COMPLETING: its record
   * settles it) or the withdrawal failed (then failed now: `#lost`).
   */
  #withdraw(w: Waiter, uncounted: boolean): boolean {
    const rc = this.#bridge.abort(w, uncounted);
    if (rc === 0) return true;
    if (rc === Status.EBUSY) w.state = COMPLETING; // completed first: its record settles it
    // A counted withdrawal is a wait giving up (`#abandon`), which the error says; an uncounted
    // one this isolate makes itself (a hand-off here, `#settleReceivers`) fails the wait as a
    // lost record does (`lostOf`): one wording for one event.
    else this.#lost(w, rc, !uncounted);
    return false;
  }

  /**
   * A queued waiter that could be neither withdrawn nor found completed (`Bridge.abort` failed
   * with `rc`, e.g. KC_EBADH once its ring is gone): no record will come, so it fails now, with
   * that status's named error. Before, it was taken for completed first and waited for ever for
   * its record. A send's encoded value is not freed: it went to the native side when it queued
   * (a ring's teardown hands it to its channel). Also from an abort handler, with the status
   * error rather than the signal's reason: a ring is gone only once its library's close
   * withdrew every wait, or by hand (tests), so no abort through the API meets this.
   */
  #lost(w: Waiter, rc: number, gaveUp = false): void {
    w.detach();
    releaseSlot(w);
    // A receive given up before the ring went (its abort lost to a completion whose record went
    // with the ring: COMPLETING, `#giveUp`) settles with its own reason, as its record would
    // have settled it (the ring's teardown gives its value back). Before, it rejected with the
    // ring's InvalidHandleError, though its caller's signal had aborted first. One given up
    // whose withdrawal met the ring already gone (the `gaveUp` argument, `w.gaveUp` unset)
    // keeps the ring's error: the loss came first.
    if (w.gaveUp === true) return w.giveUp(w.reason);
    w.reject(ringLostError(rc, waitOp(w.kind), gaveUp));
  }

  /**
   * Takes the value of a sender waiting in this isolate; EMPTY if none. `open`: the caller
   * just saw the native channel open (`#poll`: its ready byte read 0 with the handle word still
   * its own, as `#mayReceive` reads them, or a native try-receive said KC_EAGAIN), so the close
   * check (`#closedNatively`) is not made again: its fast path reads those same two words.
   */
  #takeFromSender(sym: Sym, open = false, op = "receive"): unknown {
    const s = this.#shared;
    if (s.senders.first === null || (!open && this.#closedNatively(sym))) return EMPTY;
    // No rule here for a select of this isolate: none can be queued ahead of this receive with
    // these senders waiting. A select queues this isolate's waits on its channels natively
    // before it probes (`#flushLocal`), so no sender of this isolate begun before it waits here;
    // a send begun later meets its receive clause natively first; and its send clause is a
    // sender queued natively, which `#poll` meets natively (the ready byte, or its native
    // try-receive) before it comes here. Before, while a select was counted on the channel
    // (until its record was drained, so also once it was served), these senders were queued
    // natively and this answered EMPTY: on a channel whose bytes were not mapped yet, a
    // tryReceive after the native try-receive said empty with such a send waiting.
    // The waiting byte says a receiver may be queued natively: another thread's or isolate's,
    // queued since these senders began waiting here (their tries met none), so before this
    // receive: receivers are served oldest first. These senders try natively first, oldest
    // first (`pump`), and meet it; one that finds none (the byte is stale, or the receivers
    // queued there were served) stays here for this receive. Where one moved (met a receiver,
    // went into a buffer with room now, or failed on a close), this receive starts over: a
    // value buffered so comes before the senders still here. Before, this receive took this
    // isolate's sender in JavaScript, past the older receiver, which went on waiting. A plain
    // byte read (no call) while none is queued.
    if (this.#receiverMayWaitNatively(sym)) {
      const first = s.senders.first;
      pump(s.senders, sym);
      // Their tries ran the caller's code (a value's encoding, `#slotFor`; onUndeliveredElement,
      // `pump`'s collect), which may have disposed the channel or closed the library: this
      // call throws what a call after it throws (`#afterCallerCode`), as after the receivers'
      // pump (`#poll`), before `sym` is called again. Before, after a close it started over
      // through the closed library's symbols and answered empty (a rendezvous's receive queued
      // natively ahead: test "a tryReceive or receive whose senders ahead ...").
      if (this.#callerEnded()) this.#afterCallerCode(op);
      if (s.senders.first !== first) return this.#poll(sym, op); // each time one sender fewer
    }
    for (let w: Waiter | null = s.senders.first; w !== null; w = w.next) {
      if (w.state === COMPLETING) continue;
      const queued = w.state === QUEUED;
      if (queued && !this.#withdraw(w, true)) {
        if (w.state === COMPLETING) continue;
        return this.#takeFromSender(sym, false, op); // failed now, and out of the list
      }
      w.detach();
      let value: T;
      let bytes = -1; // the encoding's length, where the value was encoded (zero-copy codecs)
      try {
        // A queued sender's value was encoded (or one encoded at its call); one still waiting
        // here with a primitive hands it over.
        if (queued || w.encoded) {
          if (this.#zeroCopy) bytes = descBytes(w.slot!);
          value = this.#codec.decode(w.slot!, sym);
        } else value = this.#codec.pass(w.value as T);
      } catch (e) {
        w.reject(e);
        return this.#takeFromSender(sym, false, op);
      } finally {
        releaseSlot(w);
      }
      s.handoffs++;
      if (bytes >= 0) {
        // Counted as the native hand-off of that encoding counts it. Before, `bytesOf`: 0 for a
        // string or a structured value.
        s.localBytesIn += bytes;
        s.localBytesOut += bytes;
      } else if (this.#zeroCopy) this.#handOffBytes(s, value);
      this.#stamp(s);
      if (!s.scheduled) this.#countLater(s);
      w.resolve(undefined);
      return value;
    }
    return EMPTY;
  }

  /**
   * Receives without waiting: `ok` with the value, `empty`, or `closed` (closed and drained).
   */
  tryReceive(): TryReceiveResult<T> {
    // Null once disposed or the library closes (see `#at`). Not local, no waiter of this isolate,
    // and not once a copy of this isolate saw the channel end (`Shared.ended`): the handle word
    // this one mapped may hold a later channel's handle by now, of the same value (its slot's
    // generation wrapped). `#poll` answers as cancelled instead.
    // On what is no Channel (a look-alike, a Proxy of one), the first private read throws the
    // engine's TypeError: named here. A try around that read only: around the whole body (or a
    // brand check before it) the try pair measured 2-4 ns slower (bench: same-process, turns).
    let at: Deno.PointerObject | null;
    try {
      at = this.#at;
    } catch {
      throw notChannel(this, "tryReceive");
    }
    if (this.#shared.detour !== 0) at = null;
    let v: unknown;
    if (at !== null && this.#plainF64 && this.#ready![0] !== 0) {
      // A mapped codecs.f64 channel with no waiter of this isolate (a Worker's stream): what
      // `#poll` does then, in a function small enough for V8 to inline into the caller's loop
      // (through `#poll`, a call that returns the number boxed, 9 ns more per value).
      // Past the gate (`#handle`): `detour` 0 says not ended.
      const rc = this.#recvAt!(at, this.#handleValue, scratchPtr, this.#size);
      if (rc === 0) return { state: "ok", value: scratchF64[0] as T };
      v = rc === Status.EAGAIN ? EMPTY : this.#recvFailed(rc, "tryReceive"); // it names itself
    } else if (at !== null && this.#bytes && !this.#dropping && this.#ready![0] !== 0) {
      // The same for a mapped codecs.bytes channel (a Worker's stream of buffers), its codec
      // called directly (see `#bytes`).
      const rc = this.#recvAt!(at, this.#handleValue, scratchPtr, this.#size); // as above
      if (rc === 0) return { state: "ok", value: decodeBytes(scratch, this.#symAt!) as T };
      v = rc === Status.EAGAIN ? EMPTY : this.#recvFailed(rc, "tryReceive");
    } else {
      // A disposed channel's error names it, and so does a native failure (it said "Cannot
      // receive", where trySend's names trySend). A local channel's take is `#poll`'s first
      // step, made here: through `#poll` given its second argument the local f64 try pair cost
      // 2.5 ns more (23.0 against 20.6 ns, measured; with one argument it did not).
      const sym = this.#sym("tryReceive");
      v = this.#shared.local ? this.#localTake() : this.#tryPoll(sym);
    }
    if (v === EMPTY) return EMPTY;
    if (v === CLOSED) return this.#closedResult();
    return { state: "ok", value: v as T };
  }

  /**
   * `#poll` for tryReceive: on a drop policy's channel an empty answer hands the hook what its
   * copies' sends dropped too (`#collectAfter`), as a value's does (`#poll`), so that every
   * try-receive of the creator hands them over (README) and `metrics()`'s `dropped` is not ahead
   * of the hook. Before, only one that got a value did: a creator polling an empty channel left
   * them in the list. A method of its own, so that `#tryReceive` stays small enough for V8 to
   * inline (the drop policies never take its fast paths).
   */
  #tryPoll(sym: Sym): unknown {
    const v = this.#poll(sym, "tryReceive");
    if (v === EMPTY && this.#dropping) this.#collectAfter();
    return v;
  }

  /**
   * Sends `values` in order without waiting, stopping at the first that would wait: `ok` with
   * how many were sent (at least one; fewer than all when the buffer filled), `full` when none
   * could be, or `closed`. The same as calling `trySend` for each until one is not `ok`, but a
   * shared channel takes them into native memory in one call instead of one each (unless its
   * drops go to `onUndeliveredElement`: each drop's hook runs before the next value). `values` is
   * an array of 1 to 65,536 values (else a TypeError, or a RangeError for its length). It throws
   * only when nothing was sent: a value the codec cannot carry, anywhere in `values`, throws its
   * {@linkcode CodecError} before any is sent, and a value's own send that fails after others
   * went (a drop's hook disposed the channel, no native memory for it) ends a short write, `ok`
   * with how many went, the value left for the next call.
   *
   * @example
   * ```ts
   * import { Channel } from "../mod.ts";
   * import assert from "node:assert/strict";
   * using ch = new Channel<number>(3);
   * assert.deepEqual(ch.trySendMany([1, 2]), { state: "ok", sent: 2 });
   * assert.deepEqual(ch.trySendMany([3, 4]), { state: "ok", sent: 1 }); // full after 3
   * assert.deepEqual(ch.trySendMany([4]), { state: "full" });
   * ```
   */
  trySendMany(values: readonly T[]): TrySendManyResult {
    Channel.#check(this, "trySendMany"); // before `values` is read
    // Its errors name it ("Cannot trySendMany: ..."): a value's getter that disposed the channel
    // said "Cannot send: the channel was disposed", as if a send had been called.
    const op = "trySendMany";
    let array = false;
    try {
      array = Array.isArray(values);
    } catch {
      // A revoked Proxy (IsArray throws): no array, described as such below.
    }
    // The length read once: a Proxy's could change between reads and pass the check.
    const n = array ? values.length : 0;
    if (!Number.isInteger(n) || n < 1 || n > MAX_BATCH) {
      // Not an array: a TypeError; an array of the wrong length, a RangeError.
      throw new (array ? RangeError : TypeError)(
        // The length as checked (a Proxy's could read differently a second time).
        `Cannot ${op}: values must be an array of 1 to ${MAX_BATCH} values, received ${
          array ? `[object Array] of length ${n}` : describe(values)
        }`,
      );
    }
    const sym = this.#sym(op);
    const s = this.#shared;
    if (this.#batchesNatively(s)) {
      if (this.#sendBlocked(sym)) {
        // Still reject what the codec cannot carry, anywhere in the batch (as when not full).
        for (let i = 0; i < n; i++) {
          try {
            this.#reject(values[i], sym, op);
          } catch (e) {
            // No native memory to check a value after the first (an object, checked by
            // encoding it): full all the same, as trySend answers for the first. Before, it
            // threw, where the first value's full answer ends the batch one at a time.
            if (i === 0 || !noRoom(e)) throw e;
          }
        }
        this.#afterCallerCode(op);
        s.fullFails++;
        if (!s.scheduled) this.#countLater(s);
        return FULL;
      }
      const size = this.#size;
      const f64 = this.#codec === (codecs.f64 as unknown);
      // Encoding may run the caller's code (a structured value's getters), which may batch too:
      // only the f64 path uses the shared buffer, marked busy while it reads `values` (an
      // accessor element or a Proxy runs code too).
      const buf = f64 ? batchOf(n * size) : new Uint8Array(n * size);
      let encoded = 0;
      let m = n; // how many go: all, or those before a value with no native memory for it
      const wasBusy = batchBusy;
      try {
        if (f64) {
          batchBusy = true;
          const f = new Float64Array(buf.buffer, 0, n);
          for (; encoded < n; encoded++) {
            const v = values[encoded];
            if (typeof v !== "number") this.#codec.pass(v, op); // throws its CodecError
            f[encoded] = v as number;
          }
          batchBusy = wasBusy;
        } else {
          for (; encoded < n; encoded++) {
            this.#codec.encode(values[encoded], scratch, sym, op);
            buf.set(scratch.u8.subarray(0, size), encoded * size);
          }
        }
      } catch (e) {
        batchBusy = wasBusy;
        try {
          if (encoded === 0 || !noRoom(e)) throw e;
          // No native memory for a value after others (or too large): a short write, as one at
          // a time (below), the values before it sent, it left for the next call. The rest
          // are still checked, each read once: one the codec cannot carry fails the call.
          // Before, the batch threw though the same values one at a time answered ok.
          for (let i = encoded + 1; i < n; i++) {
            try {
              this.#codec.pass(values[i], op);
            } catch (e) {
              if (!noRoom(e)) throw e; // too large too (a copy's check): the batch ends before
            }
          }
          m = encoded;
        } catch (e) {
          this.#discardBatch(buf, 0, encoded, sym); // nothing was sent
          throw e;
        }
      }
      this.#afterCallerCode(op, (sym) => this.#discardBatch(buf, 0, m, sym)); // nothing sent
      // Ended as the encoding ran the caller's code (as in `#trySend`): given `ENDED_HANDLE`
      // then (`#handle`), the call answers KC_EBADH, closed below.
      const rc = sym.kc_chan_try_send_n(this.#handle, buf, size, m);
      if (rc > 0) {
        this.#discardBatch(buf, rc, m, sym); // the ones not sent
        // The first value may have completed a select of this isolate waiting to receive here:
        // settled before this returns, as by a trySend (`#settleReceivers`).
        if (s.selectReceives > 0) this.#settleReceivers(s);
        if (this.#dropping) this.#collectAfter();
        return { state: "ok", sent: rc };
      }
      this.#discardBatch(buf, 0, m, sym);
      if (rc === 0) return FULL;
      if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#sendClosedBy(rc);
      if (this.#creatorEnded(rc)) return this.#sendClosed();
      this.#fail(rc, op);
      return FULL;
    }
    // One at a time: a local channel, a rendezvous, or waiters of this isolate in JavaScript.
    // Every value through the codec first: one it cannot carry fails the call, nothing sent.
    // Each element is read once (a getter or a Proxy could answer differently a second time),
    // and so is each value: every send takes the copy the check made (a shared one encodes
    // that copy, which encodes as the value read did). Before, a shared send encoded the value
    // again: an object's getters ran twice, and what was sent was their second answer.
    const passed: unknown[] = new Array(n); // `n`, read once: not `values.map`
    // A value too large after the first (the copy refuses it as encoding does: `noRoom`) ends
    // the batch there, a short write as one that goes natively in one call answers; the rest are
    // still checked, each read once, one the codec cannot carry failing the call.
    let m = n;
    for (let i = 0; i < n; i++) {
      try {
        passed[i] = this.#codec.pass(values[i], op);
      } catch (e) {
        if (i === 0 || !noRoom(e)) throw e;
        if (m === n) m = i;
      }
    }
    this.#afterCallerCode(op); // nothing sent yet
    let sent = 0;
    for (; sent < m; sent++) {
      let r: TrySendResult;
      try {
        // A shared channel's value goes as `trySend` sends it past its fast paths (`#trySend`),
        // under this call's name: its errors said "Cannot send" (a hook a drop ran, disposing
        // the channel, say; a value too large or with no native memory for it; a native
        // failure).
        r = s.local
          ? this.#localSend(passed[sent])
          : this.#trySend(passed[sent] as T, undefined, this.#sym(op), op);
      } catch (e) {
        // A short write: the values before it went, so the call answers how many, and the
        // value that failed (not sent: a send that throws sends nothing) is the next call's
        // first, which meets the failure again (a disposed channel's), or sends it (native
        // memory freed since). Before, the call threw and the caller could not tell that the
        // first `sent` values went. The first value's failure is the call's.
        if (sent === 0) throw e;
        break;
      }
      if (r.state === "ok") continue;
      // Also where a drop's hook that a local send ran (the only caller's code one runs)
      // disposed the channel or closed the library: a local channel is closed by both, and
      // the next value's send answers closed, a short write as above.
      if (sent > 0) break;
      return r;
    }
    return { state: "ok", sent };
  }

  /** Frees the native buffers of encoded values `from` .. `to` of `buf` (never sent). */
  #discardBatch(buf: Uint8Array, from: number, to: number, sym: Sym): void {
    if (!this.#codec.zeroCopy) return;
    const size = this.#size;
    for (let i = from; i < to; i++) this.#codec.discard(slotAt(buf, i, size), sym);
  }

  /**
   * A batch may go through the native channel in one call: it is shared, buffered, and nobody
   * of this isolate waits in JavaScript (so the native channel's order is the order), and no
   * drop runs `onUndeliveredElement` here (a drop policy's creator with the hook). Such a batch
   * goes one value at a time, as `trySend`s or `tryReceive`s would: a send's drop reaches the
   * hook before the next value is sent, and a receive hands the hook what sends through its
   * copies dropped (`#poll`) before the next value is taken, so a hook that closes, cancels,
   * sends to or receives from the channel ends or joins the batch where it ran, as on a local
   * channel. Before, the native call moved every value first and the hooks ran after it: a
   * hook's close came after all of them went, and its receive found what the batch took gone.
   */
  #batchesNatively(s: Shared): boolean {
    return !s.local && !s.ended && this.#capacity !== 0 && s.receivers.first === null &&
      s.senders.first === null && !(this.#dropping && this.#keeps);
  }

  /**
   * Receives up to `max` values without waiting, oldest first: `ok` with those there are now,
   * `empty`, or `closed` (closed and drained). The same as calling `tryReceive` until it is not
   * `ok`, but a shared channel's values come out of native memory in one call instead of one each
   * (unless its drops go to `onUndeliveredElement`: the hook runs after each value). `max` is an
   * integer from 1 to 65,536 (else a TypeError, or a RangeError for a number). A value
   * that fails to decode (one sent with another codec into a channel C code made untyped) throws
   * its error, as `tryReceive` does; the other values the call took, oldest first, are that error's
   * `received` array, so none is lost.
   *
   * @example
   * ```ts
   * import { Channel } from "../mod.ts";
   * import assert from "node:assert/strict";
   * using ch = new Channel<number>(8);
   * for (const v of [1, 2, 3]) ch.trySend(v);
   * assert.deepEqual(ch.tryReceiveMany(2), { state: "ok", values: [1, 2] });
   * assert.deepEqual(ch.tryReceiveMany(10), { state: "ok", values: [3] });
   * assert.deepEqual(ch.tryReceiveMany(10), { state: "empty" });
   * ```
   */
  tryReceiveMany(max: number): TryReceiveManyResult<T> {
    Channel.#check(this, "tryReceiveMany");
    const op = "tryReceiveMany"; // its errors name it, as trySendMany's do
    if (!Number.isInteger(max) || max < 1 || max > MAX_BATCH) {
      // Not a number ("3"): a TypeError; out of range or not an integer, a RangeError.
      throw new (typeof max === "number" ? RangeError : TypeError)(
        `Cannot ${op}: max must be an integer from 1 to ${MAX_BATCH}, received ${describe(max)}`,
      );
    }
    const sym = this.#sym(op);
    const s = this.#shared;
    if (this.#batchesNatively(s)) {
      if (!this.#mayReceive(sym)) return EMPTY;
      const size = this.#size;
      const buf = batchOf(max * size);
      const rc = sym.kc_chan_try_recv_n(this.#handle, buf, size, max);
      if (rc > 0) {
        const values = new Array<T>(rc);
        if (this.#codec === (codecs.f64 as unknown)) {
          const f = new Float64Array(buf.buffer, 0, rc);
          for (let i = 0; i < rc; i++) values[i] = f[i] as T;
        } else {
          let i = 0;
          try {
            for (; i < rc; i++) values[i] = this.#codec.decode(slotAt(buf, i, size), sym);
          } catch (e) {
            // Every value of the batch is out of the native channel already: the ones after
            // the failing one (which its decoder freed) are decoded too, not lost or leaked.
            values.length = i;
            for (i++; i < rc; i++) {
              try {
                values.push(this.#codec.decode(slotAt(buf, i, size), sym));
              } catch {
                // Freed by its decoder; the first failure is the one thrown.
              }
            }
            if (s.selectSends > 0) this.#settleSenders(s);
            if (this.#dropping) this.#collectAfter();
            throw withReceived(e, values);
          }
        }
        // The room the batch made may have taken in a select's send clause of this isolate: it
        // settles before this returns, as after a tryReceive (`#settleSenders`).
        if (s.selectSends > 0) this.#settleSenders(s);
        if (this.#dropping) this.#collectAfter(); // see #poll
        return { state: "ok", values };
      }
      if (rc === 0) return EMPTY;
      if (rc === Status.EPIPE || rc === Status.ECANCELED) return this.#closedBy(rc);
      if (this.#creatorEnded(rc)) return this.#closedResult();
      this.#unwrap(rc, op);
      return EMPTY;
    }
    // One at a time: a local channel, a rendezvous, or waiters of this isolate in JavaScript.
    const values: T[] = [];
    while (values.length < max) {
      let v: unknown;
      try {
        // Each take ran the caller's code (a decode; the senders' encodings as they move into
        // the room it made, `#poll`'s pump; the hook), which may have disposed the channel or
        // closed the library: the next take throws what a call after it throws, the values
        // before it the caller's, before `sym` is called again. Before, after a close the batch
        // went on through the closed library's symbols (read at its start) and took the rest
        // (test "a tryReceiveMany whose take ran the caller's code ...").
        if (values.length !== 0 && this.#callerEnded()) this.#afterCallerCode(op);
        v = this.#poll(sym, op); // a native failure names it too (it said "Cannot receive")
      } catch (e) {
        throw withReceived(e, values); // the values taken before it stay the caller's
      }
      if (v === EMPTY) {
        // As tryReceive's (`#tryPoll`): a drop policy's copies' drops reach the hook here too.
        if (this.#dropping) this.#collectAfter();
        break;
      }
      if (v === CLOSED) {
        if (values.length === 0) return this.#closedResult();
        break;
      }
      values.push(v as T);
    }
    return values.length === 0 ? EMPTY : { state: "ok", values };
  }

  /**
   * A receive that does not wait: the value, or the markers EMPTY or CLOSED. `op` names the call
   * in a native failure's error (`receiveCatching`'s, `tryReceive`'s, `tryReceiveMany`'s own).
   */
  #poll(sym: Sym, op = "receive"): unknown {
    const s = this.#shared;
    if (s.local) return this.#localTake();
    if (s.ended) {
      this.#at = null;
      return CLOSED; // as a cancelled channel answers, with no call
    }
    // Receivers of this isolate still waiting in JavaScript are ahead of this one.
    // A try there may meet the dead handle and learn the channel ended (`#tryNow`): this one's
    // own try below is given `ENDED_HANDLE` then (`#handle`) and answers closed.
    if (s.receivers.first !== null) {
      const moved = pump(s.receivers, sym);
      // Their settles ran the caller's code (onUndeliveredElement, for what the channel dropped
      // as they found it cancelled natively; a codec's decode), which may have disposed the
      // channel or closed the library: this call throws what a call after it throws
      // (`#afterCallerCode`), as a send behind senders of this isolate does (`#trySend`), before
      // `sym` is called again. Before, after a close it went on through the closed library's
      // symbols and answered closed (a receive rejected with the cancel's CancellationError).
      if (this.#callerEnded()) this.#afterCallerCode(op);
      if (!moved) return EMPTY;
    }
    // A rendezvous has no buffer: its senders of this isolate meet this receive in JavaScript
    // (no call), unless the native channel may hold a sender that is ahead of them: the ready
    // byte says so for another thread's or a value given back (`kc_ring_give_back`, in front),
    // each queued before this isolate's sender began waiting (its try failed, and no native
    // sender is ever behind a sender that waits here), and for this isolate's senders queued
    // natively, which the native try takes in their order among the others. Before, this took
    // the JavaScript sender first: a value given back, due first ("so the next receive gets
    // it"), came after a send that began waiting later (the model fuzz's seed 547).
    if (this.#capacity === 0 && s.senders.first !== null && !this.#mayReceive(sym)) {
      const got = this.#takeFromSender(sym, true, op); // open, as the byte just read says
      if (got !== EMPTY) return got;
    }
    const at = this.#at;
    const rc = !this.#mayReceive(sym)
      ? Status.EAGAIN
      : at !== null
      ? sym.kc_chan_try_recv_at(at, this.#handle, scratchPtr, this.#size)
      : sym.kc_chan_try_recv(this.#handle, scratchPtr, this.#size);
    if (rc === 0) {
      let value: unknown;
      try {
        value = this.#f64 ? scratchF64[0] : this.#codec.decode(scratch, sym);
      } catch (e) {
        // The value is out of the channel all the same (its decoder freed it): the send it took,
        // or moved into the room, settles before the throw too, as `tryReceiveMany`'s batch
        // settles it. Before, it settled a ring wake later. (Decoded first: a settle may run the
        // caller's code, which may reuse `scratch`.) So does what follows a receive below: the
        // senders waiting here in JavaScript move into the room, and what other isolates' sends
        // dropped reaches the hook, as after tryReceiveMany's batch. Before, the throw skipped
        // both: another thread's try-send could take the room ahead of those senders, and the
        // dropped values waited for this isolate's next operation that collects.
        if (s.senders.first !== null || s.selectSends > 0) this.#settleSenders(s);
        if (this.#capacity !== 0 && s.senders.first !== null) pump(s.senders, sym);
        if (this.#dropping) this.#collectAfter();
        throw e;
      }
      // A send of this isolate queued natively that the try took (a rendezvous) or moved into
      // the room it made settles before this returns, as a local receive settles the send it
      // takes over and as a send settles the receive of its isolate it completes natively
      // (`#settleReceivers`). Before, it settled a ring wake later, after the receive.
      if (s.senders.first !== null || s.selectSends > 0) this.#settleSenders(s);
      // Room now: senders waiting here in JavaScript move into the buffer, oldest first.
      if (this.#capacity !== 0 && s.senders.first !== null) pump(s.senders, sym);
      // Values other isolates' sends dropped wait for this isolate's hook: an isolate that
      // only receives (the latest state, from a Worker) must take them too, or they pile up.
      if (this.#dropping) this.#collectAfter();
      return value;
    }
    if (rc === Status.EAGAIN) {
      // Open: the ready byte (as above) or the native try said so.
      if (s.senders.first === null) return EMPTY;
      // A buffered channel's senders wait here only while it was full: empty now, another
      // thread or isolate took its values meanwhile. They move into the room first, oldest
      // first, as they would have had they queued natively (a receive's room takes the oldest
      // sender in), and this receive takes the oldest value natively, each time one sender
      // fewer. Before, it took the first sender's value here, counted as a hand-off, and the
      // senders behind it went on waiting in JavaScript with room in the buffer, so that
      // another thread's try-send took that room first (the model fuzz's seed 35).
      if (this.#capacity !== 0) {
        const first = s.senders.first;
        pump(s.senders, sym);
        // The senders' tries ran the caller's code (a value's encoding, `#slotFor`; the hook,
        // `pump`'s collect), which may have disposed the channel or closed the library (either
        // settles every wait, the first too): this call throws what a call after it throws
        // (`#afterCallerCode`), as after the receivers' pump above. Before, after a close it
        // started over through the closed library's symbols and took a value sent natively
        // meanwhile (test "a tryReceive or receive whose senders ahead ...").
        if (this.#callerEnded()) this.#afterCallerCode(op);
        if (s.senders.first !== first) return this.#poll(sym, op);
        // The oldest found no room: another thread or isolate filled the buffer between the
        // try (or the ready byte) above and the pump. Its values came after these senders
        // began waiting (their tries found the buffer full), so the oldest sender's value is
        // handed here, in JavaScript, and theirs follow. Untested: nothing of the caller's
        // runs in that window (a waiting send's value was encoded at its call, so no getter
        // runs in the pump), the library has no test hook to stop a thread there (no
        // `kc_test_` export), and a test racing a thread for it would pass or fail by timing.
      }
      return this.#takeFromSender(sym, true, op);
    }
    return this.#recvFailed(rc, op);
  }

  /** A native try-receive's failure other than KC_EAGAIN: CLOSED, or thrown. */
  #recvFailed(rc: number, op = "receive"): unknown {
    if (rc === Status.EPIPE || rc === Status.ECANCELED) {
      // by another isolate or native code
      if (rc === Status.ECANCELED) this.#shared.cancelled = true;
      this.#ended();
      return CLOSED;
    }
    if (this.#creatorEnded(rc)) return CLOSED;
    this.#unwrap(rc, op);
    return EMPTY;
  }

  /**
   * False when the native channel was empty at some moment since its ready byte was written
   * (and is still this channel): a native try-receive would fail, so no call is needed. Plain
   * loads (Atomics.load costs 4 ns more each): loads are acquire on x86, and on any machine a
   * stale or reordered read can only make this answer "empty" for a channel that was empty a
   * moment ago, or, for a `from()` copy whose channel was destroyed in that moment, "empty"
   * where the call would say bad handle (a wait then fails with InvalidHandleError when it is
   * queued).
   */
  #mayReceive(sym: Sym): boolean {
    const ready = this.#ready ?? this.#mapReady(sym);
    return ready === null || ready[0] !== 0 || this.#word![0] !== this.#handle;
  }

  /**
   * True when a native try-send would have failed with "full" at some moment since the blocked
   * byte was written (full, or rendezvous with no receiver waiting natively), and it is still
   * this channel: no call needed.
   * As #mayReceive.
   */
  #sendBlocked(sym: Sym): boolean {
    const ready = this.#ready ?? this.#mapReady(sym);
    return ready !== null && this.#blocked![0] !== 0 && this.#word![0] === this.#handle;
  }

  /**
   * Maps the channel's ready and blocked bytes and handle word (see #mayReceive) on its
   * `MAP_AFTER`th use; null before (and for good if the library cannot give them).
   */
  #mapReady(sym: Sym): Uint8Array | null {
    if (++this.#unmappedUses !== MAP_AFTER) return null;
    return this.#map(sym);
  }

  /**
   * A send meeting receivers of this isolate that wait in JavaScript: false when the waiting
   * byte (kc_chan_waiting_flag) says no receiver was queued natively at some moment since it was
   * written (so none is ahead of them), true when one may be (or the byte cannot be read: the
   * native try-send then decides). The blocked byte cannot say it on a buffered channel: on an
   * empty buffer it is clear whether or not a receiver waits. Maps the bytes now if not yet
   * (`#map`): a same-turn hand-off before the `MAP_AFTER`th use would otherwise cost the
   * receivers a native queueing each. Plain loads, as #mayReceive's.
   */
  #receiverMayWaitNatively(sym: Sym): boolean {
    const ready = this.#ready ?? this.#map(sym);
    return ready === null || this.#waiting![0] !== 0 || this.#word![0] !== this.#handle;
  }

  /** Maps the bytes (see `#mapReady`): the ready byte, or null if they cannot be. */
  #map(sym: Sym): Uint8Array | null {
    // Never once a dispose began, the library closed (see `#at`) or the channel ended under this
    // object (`Shared.ended`: native code destroyed an owner's, say): that stays so.
    if (this.#disposing || this.#disposed || this.#shared.ended || this.#table.table === null) {
      return null;
    }
    const out = new BigUint64Array(1);
    const p = sym.kc_chan_ready_flag(this.#handle, out);
    const word = out[0] === 0n ? null : Deno.UnsafePointer.create(out[0]);
    const b = sym.kc_chan_blocked_flag(this.#handle);
    const w = sym.kc_chan_waiting_flag(this.#handle);
    if (p === null || word === null || b === null || w === null) return null;
    this.#word = new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(word, 4));
    this.#blocked = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(b, 1));
    this.#waiting = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(w, 1));
    this.#at = word;
    this.#sendAt = sym.kc_chan_try_send_at;
    this.#recvAt = sym.kc_chan_try_recv_at;
    this.#symAt = sym;
    unmapOnClose(this.#lib, this as Channel<unknown>);
    return this.#ready = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, 1));
  }

  /**
   * Sends, waiting while the channel is full. Rejects with {@linkcode ClosedSendError} (or the
   * close cause) once closed, {@linkcode CancellationError} if cancelled (either way the value
   * then goes to onUndeliveredElement first, as Kotlin's `onClosedSend`), the signal's reason if
   * aborted (the value is then never delivered).
   */
  send(value: T, options?: WaitOptions): Promise<void> {
    // A look-alike's first private read (or `#send`) throws the engine's TypeError: named
    // (`thrown`) and rejected, as every failure of a send is.
    try {
      // The local fast path: a number with no options on an open local channel, undisposed and
      // its library open, that a waiting receiver or room in the ring takes: what `#send` does
      // then (`#sym`, `#passLocal`, `#localSend`; a number's bytes count 0), in a function small
      // enough for V8 to inline into the caller's loop, which `#send` (its try, its shared path)
      // is not. Anything else, the general path.
      if (options === undefined && typeof value === "number" && this.#numbers && this.#gate === 0) {
        const s = this.#shared;
        if (s.local && !s.closed && this.#table.table !== null) {
          const r = s.receivers.first;
          if (r !== null) {
            r.leave(s.receivers); // receivers wait only while the ring is empty: hand it over
            s.handoffs++;
            this.#stamp(s);
            r.resolve(received(r.kind, value));
            return RESOLVED;
          }
          if (s.count < this.#capacity) {
            s.push(value);
            s.localSends++;
            this.#stamp(s);
            return RESOLVED;
          }
        }
      }
      return this.#send(value, options);
    } catch (e) {
      return Promise.reject(thrown(this, "send", e));
    }
  }

  #send(value: T, options?: WaitOptions): Promise<void> {
    let r: TrySendResult;
    let signal: AbortSignal | undefined;
    let slot: Slot | undefined;
    try {
      signal = signalOf("send", options);
      if (signal !== undefined && isAborted(signal)) return this.#abortedSend(value, signal);
      if (this.#shared.local) {
        // A waiting local send holds the value as passed (its copy is taken now).
        this.#sym("send");
        const v = this.#passLocal(value);
        r = this.#localSend(v);
        if (r === OK) return RESOLVED;
        if (r.state === "closed") {
          this.#refused(value, undefined); // the caller's, as a shared send's
          return Promise.reject(this.#sendError(this.#statusOfClosed()));
        }
        return this.#wait(SEND, v, signal);
      }
      // The copy is taken now, as a local send takes it: an object that must wait stays
      // encoded in native memory from the try (the caller may change it before the end of the
      // turn, when the wait would queue natively). A primitive cannot change: it is encoded
      // only if it queues (a receiver of this isolate takes it as it is).
      if (typeof value === "object" && value !== null) slot = takeSlot();
      r = this.#trySend(value, slot, this.#sym("send"));
    } catch (e) {
      if (slot !== undefined) giveSlot(slot); // nothing is encoded in it
      return Promise.reject(e);
    }
    if (r !== FULL) {
      if (r === OK) {
        if (slot !== undefined) giveSlot(slot); // sent: nothing is encoded in it
        return RESOLVED;
      }
      // Closed: an object's slot still holds it encoded (`#trySend`).
      try {
        this.#refused(value, slot);
      } catch (e) {
        reportUncaught(e); // a primitive the codec passed but cannot encode: not expected
      } finally {
        if (slot !== undefined) giveSlot(slot);
      }
      return Promise.reject(this.#sendError(this.#statusOfClosed()));
    }
    return this.#wait(SEND, value, signal, slot);
  }

  /**
   * A send whose signal had aborted before it began: cancelled before it had a chance to send,
   * so its value goes to the undelivered path (onUndeliveredElement, counted as dropped; a
   * copy's to the creator's hook), as Kotlin's `send` cancelled before it sent hands it, and it
   * rejects with the signal's reason. A value the codec cannot carry is not hooked (its error
   * rejects, as a send into a closed channel's does). Once disposed or the library closed, as
   * before: the reason, no hook. Before, the value stayed the caller's.
   */
  #abortedSend(value: T, signal: AbortSignal): Promise<void> {
    const reason = abortReason(signal);
    if (this.#disposed || this.#table.table === null) return Promise.reject(reason);
    try {
      this.#checkValue(value);
      this.#refused(value, undefined);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.reject(reason);
  }

  #statusOfClosed(): number {
    return this.#shared.cancelled ? Status.ECANCELED : Status.EPIPE;
  }

  /**
   * Receives, waiting while the channel is empty. Rejects with {@linkcode ClosedReceiveError}
   * (or the close cause) once closed and drained, {@linkcode CancellationError} if cancelled,
   * the signal's reason if aborted.
   */
  receive(options?: WaitOptions): Promise<T> {
    // A look-alike's first private read (or `#receive`) throws the engine's TypeError: named
    // (`thrown`) and rejected, as every failure of a receive is.
    try {
      // The local fast path: no options, an undisposed local channel, its library open, with a
      // value to take (in the ring, or a waiting sender's): what `#receive` does then (`#sym`,
      // `#localTake`), in a function small enough for V8 to inline into the caller's loop.
      if (options === undefined && this.#gate === 0) {
        const s = this.#shared;
        if (s.local && this.#table.table !== null) {
          const w = s.senders.first;
          if (s.count === 0) {
            if (w !== null) {
              // A rendezvous: the oldest waiting sender's value (`#localTake`).
              w.leave(s.senders);
              s.handoffs++;
              if (this.#zeroCopy) this.#handOffBytes(s, w.value);
              this.#stamp(s);
              w.resolve(undefined);
              return Promise.resolve(w.value as T);
            }
          } else if (w === null) {
            // The ring's oldest value, no sender waiting to move in (`#localTake`).
            const v = s.shift();
            s.localReceives++;
            if (this.#zeroCopy) s.localBytesOut += bytesOf(v);
            this.#stamp(s);
            return Promise.resolve(v as T);
          }
        }
      }
      return this.#receive(RECV, options) as Promise<T>;
    } catch (e) {
      return Promise.reject(thrown(this, "receive", e));
    }
  }

  /** As `receive`, but a closed channel resolves `{ state: "closed", cause? }`. */
  receiveCatching(options?: WaitOptions): Promise<ReceiveCatchingResult<T>> {
    // On a look-alike, `#receive` throws the engine's TypeError: named and rejected.
    try {
      return this.#receive(RECV_CATCHING, options) as Promise<ReceiveCatchingResult<T>>;
    } catch (e) {
      return Promise.reject(thrown(this, "receiveCatching", e));
    }
  }

  #receive(
    kind: number,
    options?: WaitOptions,
    held?: IterWaits,
  ): Promise<unknown> {
    let v: unknown;
    let signal: AbortSignal | undefined;
    const op = waitOp(kind); // receiveCatching's errors name it, an iterator's "iterate channel"
    try {
      signal = signalOf(op, options);
      if (signal !== undefined && isAborted(signal)) return failed(held, abortReason(signal));
      // A local channel's take made here, as tryReceive makes it: through `#poll`, a call V8
      // does not inline (its shared path is too long), a local ping-pong's receive cost more.
      const sym = this.#sym(op);
      v = this.#shared.local ? this.#localTake() : this.#poll(sym, op);
      // Before it waits, what the channel kept for this isolate's hook while open (a terminated
      // Worker's queued send, withdrawn as its thread ended; what a drop policy's copies
      // dropped) goes to the hook: a drop policy's receives take it at every value (#poll),
      // other channels took it only at a close, cancel or dispose, and a creator that went on
      // receiving never saw it. Here, not per value: a wait costs far more than this one call,
      // and only a channel with the hook makes it. Before, a drop policy's empty receive took
      // nothing: a copy's drops waited for a value, a send, a close. Waits of this isolate still
      // in JavaScript learn first of a cancel the take meets (`#collectAfter`).
      if (v === EMPTY && this.#keeps && !this.#shared.local && this.#collectAfter()) {
        // The hook ran: it may have ended the iterator this next() is of (its return() has
        // released what waited, and this receive would wait past it), sent, closed, disposed.
        if (held?.ended) return Promise.resolve(ITER_DONE);
        v = this.#poll(this.#sym(op), op);
      }
    } catch (e) {
      // An iterator's next() rejecting for its own reason (a value that fails to decode): the
      // others still pending answer done and take nothing, as where a wait's value fails to
      // decode (`#settleWith`). Before, where this next() was made in its turn while earlier
      // ones waited, they went on waiting and took later values.
      if (held !== undefined) this.#endIter(held);
      return failed(held, e);
    }
    if (v === EMPTY) return this.#wait(kind, undefined, signal, undefined, held);
    if (v !== CLOSED) return Promise.resolve(received(kind, v));
    const r = this.#closedResult();
    if (kind === RECV_CATCHING) return Promise.resolve(r);
    const status = this.#statusOfClosed();
    if (
      kind === RECV_ITER &&
      (status !== Status.ECANCELED || !this.#cancelledFirst(this.#shared))
    ) {
      // Closed (a cancel after the close too): the loop ends, or rethrows the close cause.
      // Cancelled: CancellationError.
      return "cause" in r ? failed(held, r.cause) : Promise.resolve(ITER_DONE);
    }
    return failed(held, this.#receiveError(status));
  }

  /**
   * Waits (after the try failed): in JavaScript until the end of this turn, where a partner of
   * this isolate takes it over without an FFI call; then the bridge queues it natively.
   */
  #wait(
    kind: number,
    value: unknown,
    signal: AbortSignal | undefined,
    encoded?: Slot,
    held?: IterWaits,
  ): Promise<never> {
    let w!: Waiter;
    // new Promise, not Promise.withResolvers: 10 ns less, and this is every wait's cost.
    const promise = new Promise<never>((resolve, reject) => {
      w = new Waiter(
        kind,
        this as Channel<unknown>,
        value,
        resolve as (v: unknown) => void,
        reject,
      );
    });
    if (encoded !== undefined) {
      w.slot = encoded;
      w.encoded = true;
    }
    if (held !== undefined) {
      w.held = held; // a rejection ends the iterator (`Waiter.reject`)
      // A next() made while an earlier one is pending settles in its turn (`IterWaits.turns`).
      if (held.turning !== null) w.takeTurn(held.turning);
      const prev = held.waiter;
      if (prev !== null && prev.state !== DONE) {
        // Another next() of the iterator still waits (next() called again before it settled):
        // return() releases it too. The settled ones go first, so the list stays as long as
        // the receives waiting at once.
        const more = held.more ??= [];
        let n = 0;
        for (const x of more) if (x.state !== DONE) more[n++] = x;
        more.length = n;
        more.push(prev);
      }
      held.waiter = w;
    }
    const s = this.#shared;
    const q = kind === SEND ? s.senders : s.receivers;
    q.push(w);
    if (!this.#tracked && s.local) this.#track(); // once per channel
    if (s.escaped) {
      q.local++; // LOCAL, as made (`WaitQueue.local`)
      if (!s.scheduled) {
        s.scheduled = true;
        this.#bridge.defer(s);
      }
    }
    // A busy channel's buffer that is full now is often drained by another thread within a
    // microsecond, well before the end of the turn: look again a few microtasks later.
    // One look serves every sender of the isolate waiting on this channel (pump goes in order).
    if (kind === SEND && s.escaped && this.#capacity !== 0 && this.#at !== null && !s.retrying) {
      s.retrying = true;
      queueMicrotask(() => this.#retrySends(SEND_RETRIES));
    }
    if (signal !== undefined) {
      w.signal = signal;
      // By AbortSignal's own members, never the signal's (errors.ts, `isAborted`). A call while
      // the signal has not aborted (the caller's code that reached the listener through the
      // engine's listeners property) changes nothing: before, the wait gave up with undefined.
      // Passing itself: one an "abort" Event that is no abort called listens again (`abortHeard`).
      // As `w.onAbort`, set once per waiter: a block-scoped const the closure captured cost a
      // context object per wait (~10 ns a receive that waits).
      w.onAbort = (event?: Event) => {
        if (abortHeard(signal, w.onAbort!, event)) this.#abandon(w, abortReason(signal), true);
      };
      // Aborted since it was checked (a value's getter, encoding it, ran the caller's code), or
      // during the listen (an accessor of the caller's that the engine's listen reached): the
      // event will not come, and `listenAbortNamed` calls it, withdrawing the waiter. Before, one
      // that aborted during the listen stayed queued: a receive took the next value, lost to
      // its caller, and a send could still be delivered.
      try {
        listenAbortNamed(waitOp(kind), signal, w.onAbort);
      } catch (e) {
        // The engine's own listen ran the caller's code (an accessor for its symbol-keyed
        // listeners property on a prototype under the signal) and threw: the wait gives up,
        // withdrawn, with the named error ("Cannot receive: signal must be one that can be
        // listened to", under the op that checked the signal, the listen's error its cause),
        // as createScope refuses such a signal. Before, with the listen's raw error; before
        // that, the call threw where it returns a Promise and left this waiter queued, its
        // promise rejected later unhandled (ending the process).
        this.#abandon(w, e);
      }
    }
    return promise;
  }

  /**
   * A waiter gives up (its signal aborted, or its copy disposed, or its signal's listen threw):
   * withdrawn if queued, and rejected with `reason`; a send's value is never delivered. With
   * `cancelled` (its signal aborted: a producer's or mailbox's task's too) the send's value goes
   * to the undelivered path (onUndeliveredElement, counted as dropped), as Kotlin's `send`
   * cancelled before it sent hands it, and as a cancel's waiting sender's does; else (a copy's
   * dispose, a signal that cannot be listened to) its encoding is freed, not handed to a hook:
   * the value stays the caller's. If it completed first, its record settles it: a send as
   * delivered (never hooked), a receive that took a value rejects with `reason` all the same and
   * its value goes back to the channel (`gaveUp`, see `#completed`). Nothing if it is done.
   */
  #abandon(w: Waiter, reason: unknown, cancelled = false): void {
    const drop = w.kind === SEND && cancelled;
    // Where the value is encoded: a queued send's slot always, a local one's if taken at the call.
    let encoded = w.encoded;
    if (w.state === QUEUED) {
      if (!this.#withdraw(w, false)) {
        this.#giveUp(w, reason); // if it completed first (not if the withdrawal failed)
        return;
      }
      encoded = w.kind === SEND;
      if (w.kind === SEND && !drop && this.#table.table !== null) {
        this.#codec.discard(w.slot!, librarySymbols(this.#lib, "abort send"));
      }
    } else if (w.state === COMPLETING) return this.#giveUp(w, reason);
    else if (w.state !== LOCAL) return;
    else {
      if (w.encoded && !drop && this.#table.table !== null) {
        // Never queued, but encoded at the call: its native copy is freed.
        this.#codec.discard(w.slot!, librarySymbols(this.#lib, "abort send"));
      }
      // A cancelled failure, as the native withdraw of a queued one counts it.
      const s = this.#shared;
      s.localCancelled++;
      if (s.escaped && !s.scheduled && this.#table.table !== null) this.#countLater(s);
    }
    if (drop) {
      // Out of the queues before the hook (user code) runs; its encoding freed by `#refused`.
      w.detach();
      try {
        this.#refused(w.value, encoded ? w.slot : undefined);
      } catch (e) {
        // an encoding's release failing: not expected (the hook's own are caught)
        reportUncaught(e);
      } finally {
        releaseSlot(w);
      }
      w.giveUp(reason);
      return;
    }
    releaseSlot(w); // withdrawn (or never queued): nothing reads it any more
    w.detach();
    w.giveUp(reason);
  }

  /**
   * A receive given up after it completed natively (COMPLETING: its abort lost, or a hand-off's
   * withdrawal did before): the first reason is kept, its record settles it (`#completed`): a
   * value goes back to the channel, and a closed or cancelled outcome (which moved nothing)
   * rejects with the reason too. A send's record settles it as delivered (or not) as before.
   */
  #giveUp(w: Waiter, reason: unknown): void {
    if (w.state !== COMPLETING || w.kind === SEND || w.gaveUp) return;
    w.gaveUp = true;
    w.reason = reason;
  }

  /**
   * Senders of this isolate still waiting in JavaScript move into the buffer, oldest first, if
   * it has room now (as its blocked byte says); else looks again `left - 1` more microtasks later.
   */
  #retrySends(left: number): void {
    const s = this.#shared;
    if (s.senders.first !== null && !this.#disposed && this.#table.table !== null) {
      const sym = librarySymbols(this.#lib, "send");
      // No `Bridge.touch` on an inside channel: `pump` calls the library only for a sender
      // still waiting in JavaScript, whose send found the buffer full (so no receive waited
      // natively: the try-send would have met it), and until the end of its turn (these
      // retries are microtasks of that turn) no receive of this isolate queues natively on it
      // while that sender waits there: a receive or try-receive moves such senders into the
      // room it makes, or takes from them (`#poll`), instead of waiting; a select queues them
      // natively before it probes (`#flushLocal`, senders first), and so does the turn's end
      // (`flushNow`). Only this isolate can queue a wait on an inside channel, so the
      // retry-send lands in the buffer and completes no wait: it writes no record to drain.
      // (Before, a `Bridge.touch` here drained the ring for a record that never comes.)
      // never, see above
      if ((s.detour & D_INSIDE) !== 0 && hasQueuedReceiver(s)) this.#bridge.touch();
      if ((this.#sendBlocked(sym) || !pump(s.senders, sym)) && left > 1) {
        queueMicrotask(() => this.#retrySends(left - 1));
        return;
      }
    }
    s.retrying = false;
  }

  /**
   * For select (`flushLocalOf`), which selects natively: the channel escapes (its local values move
   * into the native channel) and its waiters still waiting in JavaScript queue natively.
   */
  #flushLocal(): void {
    this.#escape("select");
    const s = this.#shared;
    if (s.senders.first === null && s.receivers.first === null) return; // nothing to queue
    // One batch of settles (`collectDue`), as the end-of-turn flush is (`Bridge.#start`): a send
    // that finds the channel cancelled (by native code, or another isolate) as it queues here
    // rejects, and its value reaches onUndeliveredElement once every wait flushed has settled,
    // before the select probes. Before, the first such send's hook ran before it, and the later
    // sends of the flush, rejected.
    const outer = Channel.#beginCollects(s);
    try {
      s.flushNow();
    } finally {
      Channel.#endCollects(s, outer);
    }
  }

  /**
   * The handle left this object (`handle`, `share`): others may use the native channel after
   * this object is garbage, so the garbage collector no longer destroys it (`orphans`).
   */
  #giveAway(): void {
    if (this.#owner) this.#shared.orphanLib = null;
  }

  /**
   * Marks the channel as reachable from outside this isolate's JavaScript (`Shared.escaped`).
   * `op` names the caller's operation in a failure (a select's escape said "Cannot share
   * channel"); `orphanable` false: the handle is given away right after (see #materialize).
   */
  #escape(op: string, orphanable = true): void {
    const s = this.#shared;
    if (s.escaped) return;
    // The local values are copied into native memory before anything is made native: a copy
    // that finds no native memory fails the escape, the channel still local with every value.
    const moved = s.local ? this.#encodeLocal(op) : null;
    try {
      this.#materialize(op, orphanable, moved);
    } catch (e) {
      if (moved !== null) this.#discardBatch(moved, 0, s.count, symbolsToReleaseOf(this.#lib));
      throw e;
    }
    s.escape();
    // Native now; outside only once its handle leaves it (`#goOutside`, which follows at once
    // for `handle` and `share()`).
    if (!s.outside) {
      s.detour |= D_INSIDE;
      this.#gate |= GATE_INSIDE;
    }
    if (s.local) this.#migrate();
    // Its local history, for every isolate to see from now on.
    s.flushCounts();
    // Waiters already waiting here queue natively at the end of this turn, as if escaped then.
    if ((s.senders.first !== null || s.receivers.first !== null) && !s.scheduled) {
      s.scheduled = true;
      this.#bridge.defer(s);
    }
    hooksOf.get(this)?.escaped(this);
  }

  /**
   * The channel's handle left this isolate's JavaScript (`handle`, `share()`, a `Channel.from`
   * copy): a Worker, a native coroutine or C code may complete its waits from now on, so its
   * waits already queued natively, and any select waiting on it, keep the ring wait
   * outstanding (`Bridge.reconsider`), as every later one does. For good.
   */
  #goOutside(): void {
    const s = this.#shared;
    if (s.outside) return;
    s.outside = true;
    const was = (s.detour & D_INSIDE) !== 0;
    s.detour &= ~D_INSIDE;
    this.#gate &= ~GATE_INSIDE;
    // Inside until now: its waits may be queued natively, counted as inside by the bridge (which
    // exists then: an inside channel's wait or select made it).
    if (was && this.#table.table !== null) Bridge.existing(this.#lib)?.reconsider();
  }

  /**
   * @ignore `onCancel` is called once when the native channel is cancelled by anyone (a
   * `Channel.from` copy in another isolate, native code, this isolate), with its cancel cause as
   * this isolate reads it (`kc_chan_cause`; undefined when it has none): a close watch on this
   * isolate's ring (`kc_ring_watch`, KC_WATCH_CANCEL), which keeps the isolate alive no more
   * than an idle channel does. A close does not call it. Returns the withdrawal, or null when
   * there is nothing to watch (not escaped, disposed, the library closed); the withdrawal calls
   * `onCancel` no more and answers true when the cancel came before it and was not told yet (its
   * record not drained), so that the withdrawer can tell a cancel made before from its own made
   * after (`actor`'s dispose of its mailbox). Cancelled already: `onCancel` runs in a microtask.
   * Destroyed already (native code's `kc_chan_destroy` of a handle it was given: the watch answers
   * KC_EBADH, or this isolate knew it: `Shared.ended`), as a destroy cancels: `onCancel` runs in a
   * microtask with the channel's cause, a `CancellationError` that says so (`DESTROYED`); the
   * owner's close() then answers false, as on any cancelled channel.
   * Before, that returned null and the watcher (a producer in a `delay`) learnt it only at its
   * next operation on the channel, if it made one.
   *
   * `owned` (`produce`, and `actor` for its mailbox, while its task runs): this isolate feeds
   * the channel (an actor's, reads it), so its end with the watch still queued (a Worker
   * terminated or closed, its ring destroyed with its thread; or the library closed here)
   * cancels the channel natively (`KC_WATCH_OWNED`), unless it was closed or cancelled already:
   * the other isolates' consumers and senders fail with a CancellationError that says so
   * (`ownerGone`) instead of waiting for ever, and buffered values are dropped as any cancel
   * drops them. Before, the watch was only withdrawn and the channel stayed open.
   */
  #watchCancel(
    onCancel: (cause: unknown) => void,
    owned = false,
  ): (() => boolean) | null {
    const s = this.#shared;
    if (!s.escaped || this.#disposed || this.#handle === 0 || this.#table.table === null) {
      return null;
    }
    const bridge = this.#bridge;
    let done = false;
    /** A withdrawal before the queued tell ran: the cancel (or destroy) came first, untold. */
    const untold = () => {
      const first = !done;
      done = true;
      return first;
    };
    const tell = () => {
      if (done) return;
      done = true;
      // By another isolate or native code, as `#closedBy` remembers it: a send then rejects
      // with CancellationError. `closed` stays this isolate's to set, at its first native look.
      s.cancelled = true;
      if (!s.hasCause) this.#lookCause(s);
      // A cancel with no cause that native code's destroy made (an owner's handle dead: a
      // producer's watch taken at its share, before its task ran): told as a watch taken after
      // the destroy tells it, not as a plain cancel: with the channel's cause as it ended here
      // (`#markEnded`: the CancellationError a wait here got from the destroy's cancel, else
      // one saying native code destroyed it), the one its waits reject with. Before, a new
      // CancellationError each time: an actor's `onDone` and its task's signal got another
      // error than the one its handler's receive rejected with and let out.
      if (!s.hasCause && this.#owner && this.#destroyedUnder()) {
        onCancel(s.cause);
        return;
      }
      onCancel(s.hasCause ? s.cause : undefined);
    };
    // Ended under this object, as known (an owner that learnt native code destroyed the
    // channel, or a copy of this isolate found it first): KC_EBADH (`#handle`).
    const rc = bridge.watch(this.#handle, true, owned);
    if (rc === Status.ECANCELED) {
      queueMicrotask(tell);
      return untold;
    }
    if (rc === Status.EBADH && this.#creatorEnded(rc)) {
      // The channel is gone (the ring is not: this isolate's, while the library is open), and
      // only a destroy ends a channel its creator has not disposed of. A destroy cancels it
      // first: told with the channel's cause as it ended here (`#markEnded`: "Channel was
      // cancelled: native code destroyed it", unless a wait got the destroy's cancel first).
      queueMicrotask(() => {
        if (done) return;
        done = true;
        onCancel(s.cause);
      });
      return untold;
    }
    if (rc !== 1) return null;
    const op: RingOp = {
      ticket: bridge.ticket,
      complete: (status) => {
        bridge.take(op, null, 0);
        if (status === Status.ECANCELED) tell();
      },
      withdrawn: () => done = true,
      // The ring is gone (destroyed by hand: `Bridge.#watchesLost`), and no record will come:
      // told the cancel its channel's status still shows (bit 4: any cancel, the ring's own
      // going away's too, bit 2, an owned watch's) or a destroy's (gone: a destroy cancels),
      // else watching no more (closed, or open). Before, it was never told, also of the cancel
      // the ring's going away made; and before bit 4, a cancel whose record went with the ring
      // read as a close (bits 0 and 1 alone), and was never told either.
      lost: () => {
        if (done || this.#table.table === null) return;
        const st = librarySymbols(this.#lib, "watch channel").kc_chan_status(this.#handle);
        if (st < 0 || (st & (4 | 16)) !== 0) tell();
        else done = true;
      },
      owned,
    };
    bridge.trackWatch(op);
    return () => {
      if (done) return false;
      done = true;
      return bridge.unwatch(op); // its record came first: a cancel before this withdrawal
    };
  }

  /**
   * The local ring's values copied into native memory (`encode`), oldest first, one slot each,
   * before an escape makes anything native (`#escape`); null when there are none (or nothing
   * native can be made: disposed, the library closed, which `#materialize` throws). A copy
   * that fails (no native memory: a value the codec passed, too large included, encodes
   * otherwise) throws its error, named for `op` ("Cannot share channel: no native memory for
   * ..."), the copies made freed: the ring is untouched. Before, `#migrate` encoded each value
   * as it moved it, after the channel had become native: a failure lost the value, reported
   * as an uncaught error, and the escape answered as if all had moved.
   */
  #encodeLocal(op: string): Uint8Array | null {
    const s = this.#shared, n = s.count;
    if (n === 0 || this.#disposed || this.#table.table === null) return null;
    const sym = librarySymbols(this.#lib, op);
    const size = this.#size, ring = s.ring, mask = ring.length - 1;
    const buf = new Uint8Array(n * size); // not `batch`: an escape is rare, and may come in one
    let i = 0;
    try {
      for (; i < n; i++) {
        // A copy the codec passed, plain data: no caller code runs here to change the ring.
        encodePassed(this.#codec, ring[(s.head + i) & mask] as T, scratch, sym, op);
        buf.set(scratch.u8.subarray(0, size), i * size);
      }
    } catch (e) {
      this.#discardBatch(buf, 0, i, sym);
      throw e;
    }
    return buf;
  }

  /**
   * The ring's values, copied into native memory as `moved` (`#encodeLocal`, one slot per value,
   * nothing ran since), sent into the native channel `handle` just made (`#materialize`), oldest
   * first, before anything else is made of it. A send that fails (an unlimited channel's buffer,
   * or a large bounded one's, finding no memory to grow: KC_ENOMEM) fails the escape whole: the
   * values sent are received back (the native channel is nobody else's yet), the channel is
   * destroyed and the error thrown, `moved`'s copies left for `#escape` to free, the channel
   * still local with every value. Before, `#migrate` sent them after the channel had become
   * native, and a value that found no room went to `onUndeliveredElement` as dropped.
   */
  #moveIn(sym: Sym, handle: number, moved: Uint8Array, op: string): void {
    const n = this.#shared.count, size = this.#size;
    for (let i = 0; i < n; i++) {
      slotAt(moved, i, size); // into `scratch`
      const rc = sym.kc_chan_try_send(handle, scratchPtr, size);
      if (rc === 0) continue;
      if (this.#takeBack(sym, handle, i)) sym.kc_chan_destroy(handle);
      unwrap(rc, op); // KC_ENOMEM (a bounded buffer holds the ring: never KC_EAGAIN here)
    }
  }

  /**
   * The `n` values `#moveIn` sent into `handle` received back, as they went in (they are in its
   * buffer, and nothing else can reach it), before the escape that made it destroys it: their
   * copies are `moved`'s (a zero-copy descriptor's bytes), which `#escape` frees, so the
   * destroy must find none to free or keep for the hook. True when all came back.
   *
   * A try-receive here cannot fail: the channel was made just now, of this size, and nothing else
   * can reach it (its handle not given out yet), so it is open (not KC_EPIPE, KC_ECANCELED),
   * live (not KC_EBADH), of this element size (not KC_EINVAL), and its buffer holds the `n`
   * values sent (not KC_EAGAIN: at most the capacity were sent, as the local ring holds, so
   * none was dropped); a try-receive allocates nothing (no KC_ENOMEM). Should one fail all the
   * same (a bug), the caller leaves the channel undestroyed: a destroy would free (or keep for
   * the hook) the values left in it, which `moved` still holds and `#escape` frees too, a
   * double free. A channel leaked is the lesser harm. Before, each result was ignored.
   */
  #takeBack(sym: Sym, handle: number, n: number): boolean {
    const size = this.#size;
    for (let j = 0; j < n; j++) {
      if (sym.kc_chan_try_recv(handle, scratchPtr, size) !== 0) return false;
    }
    return true;
  }

  /**
   * The channel leaves local mode for good (its handle escaped): the ring's values, in the
   * native channel already (`#moveIn`), leave the ring, and a close or cancel made locally is
   * made natively. Waiters queue natively at the end of this turn (#escape), except a closed
   * channel's senders, which queue now, before the native close, so that they still deliver.
   */
  #migrate(): void {
    const s = this.#shared;
    s.local = false;
    if (this.#disposed || this.#table.table === null) return;
    const sym = librarySymbols(this.#lib, "move channel values");
    while (s.count !== 0) {
      const v = s.shift();
      // Counted again natively as it entered the native buffer (`#moveIn`).
      s.localSends--;
      if (this.#zeroCopy) s.localBytesIn -= bytesOf(v);
    }
    s.ring = EMPTY_RING;
    s.head = 0;
    if (!s.closed) return;
    flushAll(s.senders);
    // CAUSE_LOST: closed natively all the same, its cause not kept for other isolates; this
    // one's waiters were told it already, and it stays the channel's here. Not thrown: the
    // escape (`share()`, `handle`) that made the channel native succeeded.
    this.#closeNative(sym, s.cancelled, s.cause, s.hasCause);
  }

  /**
   * A waiter's native slot, made on first use, with a send's value encoded into it; null when
   * the codec rejected the value (the waiter is then settled with that error).
   */
  #slotFor(w: Waiter, sym: Sym): Slot | null {
    if (w.kind !== SEND || w.encoded) return w.slot ??= takeSlot();
    // The encoding may run the caller's code, which may settle `w` (the default codec's of an
    // Error: node:v8 reads its `name` through the prototype, an accessor there; codecs.bytes's
    // check ran an own Symbol.hasInstance of Uint8Array's, and runs none now): it learns that
    // the channel ended (`#failEnded`), aborts its signal, disposes the channel (its waits fail,
    // or queue natively, `flush`), closes the library. So the slot is not `w`'s while it is
    // being encoded, nor after, unless `w` still waits here: else the copy it holds is freed and
    // the slot given back, and `w` is neither tried nor queued (null, settled). Before, such a
    // settling gave `w`'s slot back for other waits while the encoding went on into it (a send
    // that took it then delivered this value, its own copy and this one's leaked), or an aborted
    // send was queued natively all the same (dispose_test pins it).
    const slot = w.slot ?? takeSlot();
    w.slot = undefined;
    try {
      encodePassed(this.#codec, w.value as T, slot, sym);
    } catch (e) {
      giveSlot(slot); // nothing was encoded into it
      if (w.state === LOCAL) {
        w.detach();
        w.reject(e);
      }
      return null;
    }
    if (w.state !== LOCAL) {
      this.#codec.discard(slot, symbolsToReleaseOf(this.#lib)); // the library may be closed
      giveSlot(slot);
      return null;
    }
    w.slot = slot;
    return slot;
  }

  /** Queues a waiter natively (at the end of the turn it began waiting in; Waiter's `flush`). */
  #submit(w: Waiter): void {
    if (this.#table.table === null) {
      // Begun while the library closed (an onUndeliveredElement hook that the close ran, say):
      // failed as the close fails the waits it withdraws (`#withdrawn`). Before, an
      // InvalidHandleError; a send's value, never encoded, went nowhere.
      w.detach();
      // An object value was copied into native memory at the call (`encoded`): freed too (it
      // leaked before).
      this.#failClosed(w, w.encoded === true);
      return;
    }
    if (this.#shared.ended) return this.#failEnded(w);
    const sym = librarySymbols(this.#lib, "wait");
    // Queued, it may pair at once with an inside wait of this isolate (`Bridge.touch`).
    if ((this.#shared.detour & D_INSIDE) !== 0) this.#bridge.touch();
    const slot = this.#slotFor(w, sym);
    if (slot === null) return;
    const bridge = this.#bridge;
    const rc = bridge.submit(w.kind !== SEND, this.#handle, slot, this.#size);
    if (rc === 1) {
      w.ticket = bridge.ticket;
      // LOCAL until now: `flush` submits only a LOCAL wait, and `#slotFor` returned its slot only
      // where it still was; nothing since ran JavaScript; native, so counted (`WaitQueue.local`).
      (w.kind === SEND ? this.#shared.senders : this.#shared.receivers).local--;
      w.state = QUEUED;
      bridge.track(w);
      return;
    }
    if (rc === Status.EBADH) {
      if (w.kind === SEND) w.encoded = true; // its slot holds the encoding (freed either way)
      if (this.#creatorEnded(rc)) return; // w, still waiting here, failed with the rest
    }
    w.detach();
    this.#settle(w, rc, false);
  }

  /**
   * A waiter still waiting in JavaScript tries natively once (`pump`): true when that settled
   * it, false when it must go on waiting.
   */
  #tryNow(w: Waiter, sym: Sym): boolean {
    // Ended (its waits still in JavaScript failed then: none is left to try), as in `#submit`.
    if (this.#shared.ended) {
      this.#failEnded(w);
      return true;
    }
    const slot = this.#slotFor(w, sym);
    if (slot === null) return true;
    // A send's retry counts no "full" failure: its first try (`trySend`) counted the one its
    // send makes. Before, each retry that found no room counted another.
    const rc = w.kind === SEND
      ? sym.kc_chan_retry_send(this.#handle, slot.ptr, this.#size)
      : sym.kc_chan_try_recv(this.#handle, slot.ptr, this.#size);
    if (rc === Status.EAGAIN) {
      // Encoded at its call: kept for the next try (or its queueing).
      if (w.kind === SEND && !w.encoded) this.#codec.discard(slot, sym);
      return false;
    }
    if (rc === Status.EBADH) {
      if (w.kind === SEND) w.encoded = true; // its slot holds the encoding (freed either way)
      if (this.#creatorEnded(rc)) return true; // w, still waiting here, failed with the rest
    }
    w.detach();
    this.#settle(w, rc, false);
    return true;
  }

  /** Its native wait was withdrawn as the library closes (see `RingOp.withdrawn`). */
  #withdrawn(w: Waiter): void {
    this.#failClosed(w, true); // a queued send's slot holds its encoded value
  }

  /**
   * Fails `w` as the library's close fails the waits it cuts off: a send's native copy freed
   * when `encoded` (through the symbols that outlive the close), its value handed to
   * onUndeliveredElement; the slot given back; a LibraryClosedError.
   */
  #failClosed(w: Waiter, encoded: boolean): void {
    try {
      if (w.kind === SEND) {
        if (encoded) this.#codec.discard(w.slot!, symbolsToReleaseOf(this.#lib));
        if (this.#onUndelivered !== undefined) this.#undelivered(w.value);
      }
    } finally {
      releaseSlot(w);
      w.reject(new LibraryClosedError(waitOp(w.kind)));
    }
  }

  /** A ring record for `w` arrived (Waiter's `complete`). */
  #completed(w: Waiter, status: number): void {
    const bridge = this.#bridge;
    if (this.#table.table === null) return this.#completedClosed(w, status);
    const value = status === 0 && w.kind !== SEND;
    if (value && w.gaveUp) {
      // Given up after it took a value natively (`#abandon`): the value goes back to the
      // channel, in front, and the receive rejects with the abort's reason. Before, it resolved
      // with the value though its signal had aborted, and a caller that had moved on (a
      // withTimeoutOrNull timed out) dropped the value, lost to every receiver.
      bridge.giveBack(w);
      releaseSlot(w);
      // Refused (closed and drained, full with a drop policy): to the hook, once the drain's
      // batch has settled (`#collectSettled`), as a cancel's dropped sends' values reach it.
      // Before, the hook ran here, ahead of this receive's own rejection and of the later
      // waits a native cancel failed in the same batch (what it did, a close of another
      // channel, settled between them).
      this.#collectSettled();
      w.giveUp(w.reason);
      return;
    }
    if (w.gaveUp && (status === Status.EPIPE || status === Status.ECANCELED)) {
      // Given up after a close or cancel failed it natively, its record not drained yet: that
      // outcome moved nothing, so the abort's reason wins, as a native wait's own token wins
      // over a close (KC_EINTR) and as Kotlin's prompt cancellation throws the cancellation
      // for a receive a close resumed. Before, it settled as closed, the abort ignored. (A
      // send never gives up so: a close leaves a waiting send waiting, and a cancel that failed
      // one dropped its value to the hook, an outcome that stands.)
      bridge.take(w, null, 0);
      this.#endedSettled();
      releaseSlot(w);
      w.giveUp(w.reason);
      return;
    }
    const rc = bridge.take(w, value ? w.slot! : null, value ? this.#size : 0);
    if (rc < 0 && value) {
      // The ring is gone (destroyed by hand after this record was drained, `Bridge.settleWhere`
      // holding it): the destroy gave the value back to its channel, and none was copied into
      // the slot. It fails as a wait whose ring is gone fails (`lostOf`). Before, it resolved
      // with whatever the slot held, the value still in the channel for another receive.
      this.#lost(w, rc);
      return;
    }
    this.#settle(w, status, true);
  }

  /**
   * `#completed` after the library's close (`Bridge.#closed`): a record drained before the ring's
   * destroy (held past the close's last round, or landed after the withdrawals' deadline), or
   * none (`status` KC_ECANCELED: cut off by the close). It settles as the record says where the
   * wait took effect: a send delivered resolves (its value is its receiver's: reported failed,
   * its caller would send it again), a receive that took a value resolves with it, and a wait
   * given up rejects with its reason (a value it took goes back to its channel, in front). Any
   * other rejects with LibraryClosedError: the ring's teardown hands a send's value to its
   * channel's undelivered path (zig-src/bridge/ring.zig, `dropUnsent`). The ticket is taken
   * through the raw symbols, which outlive the close; where the ring is gone already (its
   * destroy gave a received value back), a receive fails as cut off. Before, every one failed
   * with LibraryClosedError, also a send delivered and a receive given up.
   */
  #completedClosed(w: Waiter, status: number): void {
    const bridge = this.#bridge;
    const value = status === 0 && w.kind !== SEND;
    if (w.gaveUp) {
      if (value) bridge.giveBack(w);
      else bridge.take(w, null, 0);
      releaseSlot(w);
      // A give-back refused (its channel closed and drained) left the value in the channel's
      // dropped list: to the hook at the end of the close's batch (`Bridge.#closed`), as open
      // (`#completed`). Before, it reached the hook only at the creator's dispose.
      if (value) this.#collectSettled();
      w.giveUp(w.reason);
      return;
    }
    if (status === 0 && w.kind === SEND) {
      bridge.take(w, null, 0);
      releaseSlot(w);
      w.resolve(undefined);
      return;
    }
    if (value && bridge.take(w, w.slot!, this.#size) >= 0) {
      let v: T;
      try {
        v = this.#codec.decode(w.slot!, symbolsToReleaseOf(this.#lib));
      } catch (e) {
        w.reject(e);
        // Its iterator ends, as the open library's settle ends it (`#settleWith`): the next()s
        // still pending answer done and take nothing (withdrawn here without a native call: a
        // record of theirs still to settle in this drain is dropped, its value given back by
        // the ring's destroy). Before, a later one's record resolved it with its value after
        // this one had rejected, that value lost to the channel's other receivers.
        if (w.held !== undefined) this.#endIter(w.held);
        return;
      } finally {
        releaseSlot(w);
      }
      w.resolve(received(w.kind, v));
      return;
    }
    releaseSlot(w);
    w.reject(new LibraryClosedError(waitOp(w.kind)));
    // A send failed so left its value in the channel's dropped list (a native cancel's, as its
    // record says; or the ring's teardown's, `dropUnsent`, for one cut off): to the hook at the
    // end of the close's batch, once every wait it settles has rejected (`Bridge.#closed`), as
    // open. Before, it waited there until the creator's dispose.
    if (w.kind === SEND) this.#collectSettled();
  }

  /**
   * Releases the receives of an iterator (`held`) still waiting, as its `return()` does: each
   * `next()` answers done, having taken nothing (one that took a value natively gives it back to
   * the channel, `#abandon`). For a `next()` that rejected for its own reason while others were
   * pending (a value that failed to decode): a close, a cancel or the signal's abort fails them
   * all (`IterWaits.rejected`), this fails them alone.
   */
  #endIter(held: IterWaits): void {
    const w = held.waiter;
    const more = held.more;
    held.waiter = held.more = null;
    if (more !== null) { for (const x of more) this.#abandon(x, RETURNED); }
    if (w !== null) this.#abandon(w, RETURNED);
  }

  /** Settles a waiter that is done waiting, then gives its slot back (see `takeSlot`). */
  #settle(w: Waiter, status: number, queued: boolean): void {
    try {
      this.#settleWith(w, status, queued);
    } finally {
      releaseSlot(w);
    }
  }

  /**
   * What a wait of a send rejects with for a native status that is neither a completion nor a
   * close or cancel: a KC_EBADH that `#creatorEnded` did not take (this object disposed, said
   * so: the channel's own InvalidHandleError), else a {@linkcode KcoroError} naming the status
   * as an internal error (no native send answers another: an out-of-memory in the native
   * queueing, say). Before, every one was an `InvalidHandleError("Cannot send: status N")`,
   * which named neither the status nor what was wrong.
   */
  #sendFailure(status: number): unknown {
    if (status === Status.EBADH) {
      try {
        this.#unwrap(status, "send");
      } catch (e) {
        return e;
      }
    }
    // In the house form, the status as what was received (it said "answered status -12, which
    // no send expects"): the number, as KcoroError appends its name (it read "received
    // KC_ENOMEM (KC_ENOMEM)").
    return new KcoroError(
      status,
      `Cannot send: internal error, the native send answered a status no send expects, received ` +
        status,
    );
  }

  /**
   * `#collect` for a settle: left to the end of `#settleEnded` while it settles (`collectDue`),
   * and to the end of the ring drain's batch while it settles (`Bridge.due`).
   * Before, the first send its cancel dropped ran the hook for every dropped value before the
   * later waits were rejected (code the hook ran, a close of another channel, settled first).
   */
  #collectSettled(): void {
    const due = this.#shared.collectDue;
    if (due !== null) {
      if (due === NO_COLLECTS) this.#shared.collectDue = [this as Channel<unknown>];
      else if (!due.includes(this as Channel<unknown>)) due.push(this as Channel<unknown>);
      return;
    }
    // Settled by the ring's drain: left to the end of its batch (`Bridge.due`), so that every
    // send a native cancel failed rejects before the hook runs.
    const batch = (this.#bridgeOf ?? Bridge.existing(this.#lib))?.due; // a select's: not #bridgeOf
    if (batch != null) {
      if (!batch.has(this)) batch.set(this, () => this.#collectDue());
      return;
    }
    // Once the library is closed, `#collect` takes nothing: `#collectDue` takes with the release
    // symbols, as a dispose after the close does.
    if (this.#table.table !== null) this.#collect();
    else this.#collectDue();
  }

  /**
   * `#collect` at the end of `#settleEnded`'s settles, also where code a settle ran (another
   * channel's hook) closed the library: then with the release symbols, as a dispose after the
   * close takes them. Before, `#collect` took nothing once the library closed, and the values
   * the cancel dropped waited in the native list for the channel's dispose.
   */
  #collectDue(): void {
    try {
      if (this.#table.table !== null) this.#collect();
      else if (this.#keeps && !this.#shared.ended && !this.#disposed) {
        this.#takeUndelivered(symbolsToReleaseOf(this.#lib));
      }
    } finally {
      // Then the values of sends refused meanwhile (`#refusedSettled`), in the order they were,
      // after what was dropped natively before them, as `#refused` hands them; also where the
      // collect threw, so that the map never keeps this object.
      const drops = settledDrops.size === 0
        ? undefined
        : settledDrops.get(this as Channel<unknown>);
      if (drops !== undefined) {
        settledDrops.delete(this as Channel<unknown>);
        for (const v of drops) this.#undelivered(v);
      }
    }
  }

  /**
   * `#refused` for a send's settle: where it is the creator's (or a local channel's) and a
   * batch of settles is under way (`#settleEnded`'s `collectDue`, or `Bridge.due`: the ring
   * drain's batch, the end-of-turn flush of the waits still in JavaScript), the value reaches
   * the hook at the batch's end (`#collectDue`), once every wait it fails has settled; counted
   * now. Otherwise (a copy's, which `kc_chan_drop` hands on; no batch) `#refused` at once.
   */
  #refusedSettled(value: unknown, slot: Slot | undefined): void {
    const s = this.#shared;
    const batch = s.collectDue !== null ||
      (this.#bridgeOf ?? Bridge.existing(this.#lib))?.due != null;
    if (!batch || !(s.local || this.#owner)) return this.#refused(value, slot);
    if (slot !== undefined) this.#codec.discard(slot, symbolsToReleaseOf(this.#lib));
    if (!this.#disposed) {
      s.localDropped++;
      if (!s.local && !s.scheduled && this.#table.table !== null) this.#countLater(s);
    }
    const drops = settledDrops.get(this as Channel<unknown>);
    if (drops === undefined) settledDrops.set(this as Channel<unknown>, [value]);
    else drops.push(value);
    this.#collectSettled();
  }

  #settleWith(w: Waiter, status: number, queued: boolean): void {
    const sym = librarySymbols(this.#lib, "complete");
    const slot = w.slot!;
    if (w.kind === SEND) {
      if (status === 0) {
        if (this.#dropping) this.#collectSettled();
        w.resolve(undefined);
        return;
      }
      // A waiting send failed by cancel: the native side kept its value with the dropped ones
      // (the creator's onUndeliveredElement gets it, once the send has rejected, as a local
      // cancel rejects its senders before the hook runs: before, the hook ran first, and what
      // it did, a close of another channel, settled ahead of the send); otherwise the value is
      // still ours.
      if (queued && status === Status.ECANCELED) {
        w.reject(this.#sendError(status));
        this.#collectSettled();
        return;
      }
      if (status === Status.EPIPE || status === Status.ECANCELED) {
        // Closed or cancelled (by native code or another isolate) while it waited here in
        // JavaScript, or found so as it queued: dropped as a waiting sender's value is by this
        // isolate's own cancel (Kotlin's `onClosedSend`). Before, a closed one was freed
        // here and no hook saw it. Its value (and what the channel dropped natively) reaches
        // the hook once what settles it has settled every wait it fails (`#refusedSettled`):
        // the end-of-turn flush that queues the sends still waiting in JavaScript, the ring
        // drain's batch. Before, the first such send of a flush ran the hook for its value
        // before it, and every later send of the flush, rejected (what the hook did, a close of
        // another channel, settled ahead of them), where a local cancel rejects every send first.
        this.#endedSettled();
        this.#refusedSettled(w.value, slot);
      } else this.#codec.discard(slot, sym);
      w.reject(
        status === Status.EPIPE || status === Status.ECANCELED
          ? this.#sendError(status)
          : this.#sendFailure(status),
      );
      return;
    }
    if (status === 0) {
      let v: T;
      try {
        v = this.#codec.decode(slot, sym);
      } catch (e) {
        w.reject(e);
        // An iterator's next() rejecting for its own reason, the others still pending: they
        // answer done and take nothing, as an async generator that threw answers its queued
        // next()s (`#endIter`). Before, they went on waiting and took later values.
        if (w.held !== undefined) this.#endIter(w.held);
        return;
      }
      if (this.#dropping) this.#collectSettled(); // see #poll
      w.resolve(received(w.kind, v));
      return;
    }
    if (status === Status.EPIPE || status === Status.ECANCELED) {
      this.#endedSettled();
      // In order (its turn, `deliver`): an iterator's next() still waiting in JavaScript that
      // meets the channel closed or cancelled (by another thread) as it queues, an earlier
      // next() of its iterator still queued natively, rejects after that one settles (the
      // earlier one rejects, this one answers done), as README's iteration paragraph says.
      // Before, this one rejected first and the earlier one, its record drained later,
      // answered done: the iterator failed at its second step, having ended at its first.
      if (w.kind === RECV_CATCHING) w.resolve(this.#closedResult(status));
      else if (
        w.kind === RECV_ITER &&
        (status === Status.EPIPE || !this.#cancelledFirst(this.#shared))
      ) {
        // Closed (a cancel after the close too): the loop ends, or rethrows the close cause.
        // Cancelled: CancellationError.
        const c = this.#closedResult(status);
        if ("cause" in c) w.reject(c.cause);
        else w.resolve(ITER_DONE);
      } else w.reject(this.#receiveError(status));
      return;
    }
    try {
      this.#unwrap(status, waitOp(w.kind));
    } catch (e) {
      // In order too: an iterator's next() still waiting in JavaScript that queues onto this
      // isolate's ring gone (destroyed, KC_EBADH) while an earlier next() is queued natively on
      // it rejects after that one, whose loss (`lostOf`) the ring's wait finds later (it rejects,
      // this one answers done). Before, this one rejected first and the earlier one answered
      // done: the iterator failed at its second step, having ended at its first.
      w.reject(e);
    }
  }

  /**
   * Closes the channel: true the first time, false after (and on a cancelled channel, a copy's
   * whose creator disposed of it and an owner's that native code destroyed too). Buffered values
   * stay receivable; receivers waiting on an empty channel are rejected (or resolved closed by
   * receiveCatching).
   */
  close(cause?: unknown): boolean {
    Channel.#check(this, "close channel");
    const sym = this.#sym("close channel");
    const s = this.#shared;
    if (s.local) {
      if (s.closed) return false;
      s.closed = true;
      s.closedFirst = true; // not cancelled: a cancel closes it too
      if (arguments.length > 0 && cause !== undefined) {
        s.cause = cause;
        s.hasCause = true;
      }
      // Receivers wait only on an empty ring with no sender waiting: they learn of the close.
      // Senders waiting on a full ring stay where they are: they still deliver.
      // Each counts a closed failure, as the native close counts each waiter it fails.
      for (const w of waiting(s.receivers)) {
        w.detach();
        s.localClosed++;
        this.#settle(w, Status.EPIPE, false);
      }
      return true;
    }
    // Destroyed under this object (a copy's creator ended the channel, or native code destroyed
    // an owner's, as it learnt: `#destroyedUnder`): cancelled, so closed already (Kotlin's close
    // on a cancelled channel returns false), with no call on the dead handle.
    if (s.ended) return false;
    // One batch of settles with the flushes (`#closeShared`), as in `cancel`.
    const outer = Channel.#beginCollects(s);
    try {
      return this.#closeShared(sym, s, cause, arguments.length > 0 && cause !== undefined);
    } finally {
      Channel.#endCollects(s, outer);
    }
  }

  /**
   * `close` of a channel that escaped: `given` says whether `cause` was given. Run as one batch
   * of settles (`collectDue`): a send the flush below finds cancelled (by native code or another
   * isolate) rejects, and its value reaches onUndeliveredElement once every wait it fails has
   * settled, as a local cancel rejects every waiting send before its hook runs. Before, the first
   * such send's hook ran before it, and the later sends of the flush, rejected.
   */
  #closeShared(sym: Sym, s: Shared, cause: unknown, given: boolean): boolean {
    // Waiters still waiting in JavaScript queue natively first: a sender already waiting still
    // delivers, and every waiter learns of the close the one way (a ring record).
    flushAll(s.senders);
    flushAll(s.receivers);
    // A queueing there may have met the dead handle and learnt the channel ended (`#submit`):
    // the close call is given `ENDED_HANDLE` then (`#handle`) and answers false, as on any
    // cancelled channel.
    const rc = this.#closeNative(sym, false, cause, given);
    if (rc === CAUSE_LOST) {
      // Closed natively all the same: so here, with the cause every isolate reads (none kept;
      // another closer's, if one came first), not `cause`.
      s.closed = true;
      this.#settleEnded(s);
      throw causeLostError("close channel", "closed");
    }
    const first = rc === 1;
    if (first) {
      s.closed = true;
      s.closedFirst = true; // this close came before any cancel: a later one keeps its cause
      if (given) {
        s.cause = cause;
        s.hasCause = true;
      }
    }
    // After the cause is this isolate's: the receives the close failed reject with it.
    this.#settleEnded(s);
    return first;
  }

  /**
   * Begins a batch of settles on `s` (`collectDue`), unless one is under way: the collects they
   * leave (`#collectSettled`) run at its end (`#endCollects`, given what this answered).
   */
  static #beginCollects(s: Shared): Channel<unknown>[] | null {
    const outer = s.collectDue;
    s.collectDue = outer ?? NO_COLLECTS; // the list is made by the first collect left to it
    return outer;
  }

  /** Ends the batch `#beginCollects` began (`outer` null): runs the collects left to it. */
  static #endCollects(s: Shared, outer: Channel<unknown>[] | null): void {
    if (outer !== null) return;
    const due = s.collectDue!;
    s.collectDue = null;
    if (due === NO_COLLECTS) return;
    for (const c of due) c.#collectDue();
  }

  static {
    endCollects = (s) => Channel.#endCollects(s, null);
    libraryClosedOf = (ch) => ch.#libraryClosed();
    unmapOf = (ch) => ch.#unmap();
    undeliveredOf = (ch, value) => ch.#undelivered(value);
    sharedStateOf = (ch) => ch.#shared;
    checkValueOf = (ch, value, op) => ch.#checkValue(value, op);
    watchDisposeOf = (ch, op) => ch.#watchDispose(op);
    cancelAfterCloseOf = (ch) => ch.#cancelAfterClose();
    taskErrorOf = (ch) => {
      const r = ch.#closedResult(); // looks the cause up first
      return ch.#shared.cancelled ? cancelledError(ch.#shared) : r.cause;
    };
    closedResultOf = (ch, status) => ch.#closedResult(status);
    sendErrorOf = (ch, status) => ch.#sendError(status);
    receiveErrorOf = (ch, status) => ch.#receiveError(status);
    endedOf = (ch) => ch.#endedSettled();
    refusedOf = (ch, value, slot) => ch.#refused(value, slot);
    keepHeldOf = (ch) => ch.#keepHeld();
    releaseHeldOf = (ch) => ch.#releaseHeld();
    watchCancelOf = (ch, onCancel, owned) => ch.#watchCancel(onCancel, owned);
    lostOf = (ch, w, status) => {
      if (w.state !== DONE) ch.#lost(w, status);
    };
    submitOf = (ch, w) => ch.#submit(w);
    tryNowOf = (ch, w, sym) => ch.#tryNow(w, sym);
    withdrawnOf = (ch, w) => ch.#withdrawn(w);
    completedOf = (ch, w, status) => ch.#completed(w, status);
    isChannel = (x): x is Channel<unknown> => Channel.#is(x);
    selectHandleOf = (ch) => ch.#selectHandle();
    symbolsOf = (ch, op) => ch.#sym(op);
    libraryOf = (ch) => ch.#lib;
    codecOf = (ch) => ch.#codec;
    closedForSendOf = (ch) => (ch.#status() & 1) !== 0;
    disposedOf = (ch) => ch.#disposed;
    insideOf = (ch) => ch.#shared.inside;
    creatorEndedOf = (ch) => ch.#endedUnder();
    destroyedSeenOf = (ch) => ch.#destroyedSeen();
    afterSendOf = (ch, status, queued) => ch.#afterSend(status, queued);
    afterReceiveOf = (ch) => ch.#afterReceive();
    afterGiveBackOf = (ch) => ch.#afterGiveBack();
    settleMetOf = (ch, sent) => ch.#settleMet(sent);
    countTimeoutOf = (ch) => ch.#countTimeout();
    flushLocalOf = (ch) => ch.#flushLocal();
    refusedSettledOf = (ch, value, slot) => {
      if (refusalFault !== null) refusalFault(ch as Channel<unknown>);
      ch.#refusedSettled(value, slot);
    };
  }

  /**
   * After this isolate's own native close or cancel of the channel: the records of this
   * isolate's waits on it settle now (`Bridge.settleWhere`), before close() or cancel() returns,
   * in the order the native call failed them (a cancel's senders, then the receivers, oldest
   * first), as a local channel's close or cancel settles its waiters at the call; so do those
   * another thread completed earlier in the turn, and a select whose record names a clause on
   * this channel. Not one given up (its record gives back the value it took when the ring drains
   * as usual), nor the records of other channels' operations, which settle when they would have.
   * Before, they settled when the ring drained (a later wake-up): for the rest of the turn their
   * promises were pending on a channel closed here, an abort in that turn won over the close
   * (README's abort paragraph), and they settled in another order than a local channel's.
   */
  #settleEnded(s: Shared): void {
    // No ring of this isolate, no wait of it to settle: none is made for the look (a ring made
    // at a dispose's cancel was an FFI call that, with --allow-ffi revoked since the library
    // opened, threw out of the dispose).
    const bridge = this.#bridgeOf ?? Bridge.existing(this.#lib);
    // The hook for what the settles dropped runs once every one of them has settled, as a local
    // channel's cancel runs it (`#localDrop`).
    // The ring's batch too (`Bridge.due`): a select these settles fail hands its send clauses'
    // values on other channels to their hooks (`refusedSettledOf`) once every wait has settled,
    // as a native cancel's ring drain does. Before, they ran as the select rejected, ahead of
    // the later waits this cancel failed (what they did, a close of another channel, settled
    // ahead of those waits).
    const outer = Channel.#beginCollects(s);
    const began = bridge !== undefined && bridge.beginDue();
    let drained: boolean | undefined;
    try {
      drained = bridge?.settleWhere(
        (op, index) => op.gaveUp !== true && op.channelAt?.(index) === s,
        s,
      );
    } finally {
      try {
        Channel.#endCollects(s, outer);
      } finally {
        if (began) bridge!.endDue();
      }
    }
    if (drained !== false) return;
    // The ring cannot be drained (gone: destroyed by hand, as a test does): no record will come
    // for this isolate's waits queued natively on `s`, so each fails now with the error of
    // `RingOp.lost` (`#lost`), as `#settleSenders` fails them, and is tracked no more. Before,
    // they went on waiting after close() or cancel() returned, until the ring's wait found it
    // gone, a turn or more later. One whose abort lost to a completion (COMPLETING) too: the
    // failed drain settled every record drained before (`settleWhere`), so its record, on the
    // ring when it went, will not come. Before, it was skipped (as if its record were held) and
    // waited on until the ring's wait found the ring gone. Not one still in JavaScript (LOCAL:
    // settled by the close, or its queueing meets the dead ring): `#loseQueued` skips it. None
    // settled (DONE) is among them: the lists are taken after the settles and their collects
    // ran, and failing one runs no code (`#loseQueued` asserts it).
    for (const q of [s.senders, s.receivers]) {
      for (const w of waiting(q)) this.#loseQueued(w); // `bridge` is `#bridge`: it exists
    }
    // A select with a clause on `s` is not among its waiters: it fails too, by its clauses'
    // channels (`channelAt`, undefined past the last). Before, it waited on until the ring's
    // wait found the ring gone, as the waits above did.
    bridge!.loseWhere((op) => selectOn(op, s), Status.EBADH);
  }

  /**
   * Cancels: closes, drops buffered values (each to onUndeliveredElement) and rejects every
   * waiting sender and receiver, and every later operation, with a {@linkcode CancellationError}:
   * `cause` itself when it is one (a TimeoutError too), as Kotlin's `cancel(cause)` throws its
   * CancellationException as it is (other isolates get a copy of the same class, message and
   * cause); else a new `CancellationError("Channel was cancelled")` carrying `cause` (if given)
   * as its `cause`. A channel closed already keeps its close outcome (the first cause wins, as
   * Kotlin's): this only drops its buffered values, and later operations answer as on the
   * closed channel (the close cause, else ClosedReceiveError / ClosedSendError). Nothing to cancel
   * on a cancelled channel: a copy's whose creator disposed of it, an owner's that native code
   * destroyed (which hands the values the destroy dropped to onUndeliveredElement).
   */
  cancel(cause?: unknown): void {
    Channel.#check(this, "cancel channel");
    const sym = this.#sym("cancel channel");
    const s = this.#shared;
    // Destroyed under this object (a copy's creator ended the channel, or native code destroyed
    // an owner's, as it learnt: what it dropped went to the hook then, `#destroyedUnder`):
    // cancelled already, with no call on the dead handle.
    if (s.ended) return;
    // It looks first whether it ended since its last call (a status read), before `cause`
    // becomes the channel's below: else the end, met by the native cancel, kept this late
    // cause as the channel's (and its waits' rejections carried it). An owner's only once
    // escaped: native code can destroy only a channel whose handle it was given.
    if (
      (!this.#owner || s.escaped) &&
      this.#creatorEnded(sym.kc_chan_status(this.#handle))
    ) return;
    const given = !s.closed && cause !== undefined;
    // Encoded also where the channel was closed (not cancelled) already: native code keeps the
    // first cancel's cause after a close (kc_chan_cancel_cause) for a producer's or an actor's
    // task, which a copy's cancel cancels with it, the close cause staying the channel's. Before,
    // a copy in the producer's isolate, which shares its state (closed), stored none: its task
    // got no cause, or the close's.
    // Where this isolate would make the cause the channel's (`given`), encoded whatever it knows
    // of a cancel: the native answer (1: this cancel closed it) is what makes `cause` the
    // channel's (`#cancelShared`), and `s.cancelled` may be known here before `s.closed` (a
    // try-operation's ECANCELED).
    const encode = cause !== undefined && (given || !s.cancelled);
    // The cause encoded for other isolates first, before anything here changes: its getters
    // (the caller's code) may learn that the channel ended (cancelled already: nothing to do,
    // this late cause not the channel's) or dispose this object (what a call after it throws,
    // with no native call: `#handle`). Before, the cancel was this isolate's already (closed,
    // cancelled, the cause its) when a copy's getter disposed it, and its cancel call went on
    // to the channel it no longer held.
    const bytes = encode && !s.local ? encodeCause(cause) : null;
    if (s.ended) return;
    if (this.#disposed) this.#throwNoCalls("cancel channel");
    // Closed already by this isolate's close (`closedFirst`, set there): the close's outcome
    // stays, as Kotlin's first cause does; this cancel only drops what is buffered.
    s.closed = true;
    s.cancelled = true;
    if (s.local) {
      if (given) {
        s.cause = cause;
        s.hasCause = true;
      }
      return this.#localCancel();
    }
    // A native channel's: `cause` becomes the channel's only once the native cancel says it
    // was the first close (`#cancelShared`).
    this.#cancelShared(sym, s, cause, given, bytes);
  }

  /**
   * `cancel` of a channel that escaped, once the cancel is this isolate's (`given`: `cause`
   * becomes the channel's if the native cancel was the first close; `bytes`: it encoded). Apart
   * from `cancel` so that `cancel` stays
   * small enough for V8 to inline into a local channel's dispose: with this batch inline (617e66a)
   * create + dispose of a local channel took ~5% longer.
   */
  #cancelShared(
    sym: Sym,
    s: Shared,
    cause: unknown,
    given: boolean,
    bytes: Uint8Array | null,
  ): void {
    // Waiters still waiting in JavaScript queue natively first: senders' values are then dropped
    // (to onUndeliveredElement) and every waiter is rejected the one way (a ring record).
    // Another thread's destroy since the status read: the first queueing meets the dead handle
    // and the channel ends here (`#submit`), so the cancel call is given `ENDED_HANDLE`
    // (`#handle`) and does nothing, as on any cancelled channel: `cause` does not become the
    // channel's (the end's is, `#markEnded`), as where `cancel` found it ended.
    // One batch of settles with the flushes, as in `close` (`#closeShared`): a send the flush
    // finds cancelled by native code rejects before its value reaches the hook.
    const outer = Channel.#beginCollects(s);
    let rc: number;
    try {
      flushAll(s.senders);
      flushAll(s.receivers);
      rc = this.#closeNative(sym, true, cause, given, bytes);
      // `cause` is the channel's only where this cancel closed it (1). Closed already by another
      // isolate or native code (0): its cause (if any) is the cause; so where native code could
      // not keep `cause` (CAUSE_LOST): the cause is what every isolate reads (none, or an
      // earlier closer's), not one only this isolate knows; ended (another thread's destroy met
      // by the flush or the call): the end's, as a cancel of an ended channel leaves it.
      // Made the channel's after the flush, not before: a wait still in JavaScript that the
      // flush found closed natively (another thread's close since this isolate last looked)
      // settles with the close's cause (none, or the closer's), as the close decided it. Before,
      // `cause` was the channel's through the flush, taken back after the native answer: such
      // a receiveCatching resolved closed with this later cancel's cause, a receive rejected
      // with it (model fuzz seed 113).
      if (rc === 1 && given && !s.ended) {
        s.cause = cause;
        s.hasCause = true;
      }
      // The waits it failed settle now, as a local cancel's do; a queued send's record hands
      // what the cancel dropped to the hook (`#settleWith`), in drop order.
      this.#settleEnded(s);
    } finally {
      Channel.#endCollects(s, outer);
    }
    this.#collect(); // cancelled either way: what it dropped goes to the hook now
    if (rc === CAUSE_LOST) throw causeLostError("cancel channel", "cancelled");
  }

  /**
   * A local cancel: the ring's values and those of waiting senders are dropped (to
   * onUndeliveredElement, after every waiter was rejected), waiting senders and receivers fail.
   */
  #localCancel(): void {
    const s = this.#shared;
    this.#localDrop((w) => {
      s.localCancelled++;
      w.reject(this.#sendError(Status.ECANCELED));
    }, (w) => {
      s.localCancelled++;
      this.#settle(w, Status.ECANCELED, false);
    });
  }

  /**
   * Empties a local channel: its buffered values and those of its waiting senders are dropped
   * (to onUndeliveredElement, after every waiter was settled), each waiting sender settled by
   * `sender`, each receiver by `receiver`.
   */
  #localDrop(sender: (w: Waiter) => void, receiver: (w: Waiter) => void): void {
    const s = this.#shared;
    const dropped: unknown[] = [];
    while (s.count !== 0) dropped.push(s.shift());
    for (const w of waiting(s.senders)) {
      w.detach();
      dropped.push(w.value);
      sender(w);
    }
    for (const w of waiting(s.receivers)) {
      w.detach();
      receiver(w);
    }
    s.localDropped += dropped.length;
    for (const v of dropped) this.#undelivered(v);
  }

  /**
   * `Channel`, the name it prints with (`[customInspect]`): `String(x)` and template literals say
   * `[object Channel]` instead of `[object Object]`; error messages name an argument of the wrong
   * kind that is one "a Channel" (`describe`, by this brand check). Only on an instance: an object
   * made from the prototype (`Object.create`) stays `[object Object]`, so a message does not call
   * it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #disposed in Object(this) ? "Channel" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a channel: `Channel { [[capacity]],
   * [[native]], codec, isClosedForSend, isClosedForReceive }` (`[[native]]`: shared, not local;
   * `[[...]]`: no property of it, `inspectAs`), or `Channel { [[disposed]]: true }`. Its status
   * read never throws (a native status that is an error, or a closed library, leaves it out), and
   * it marks nothing (`#status` may mark a copy's channel ended).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#disposed in Object(this))) return notA("Channel");
    if (this.#disposed) return inspectAs("Channel", { "[[disposed]]": true }, inspect, options);
    const s = this.#shared;
    const facts: Record<string, unknown> = {
      "[[capacity]]": this.#capacity,
      "[[native]]": !s.local,
      codec: this.#codec,
    };
    let status = -1;
    // A local channel's too: every call on it throws LibraryClosedError from then on, and its
    // JavaScript state (it printed `closed: false`) says nothing a caller could use.
    if (s.local && this.#table.table !== null) {
      status = !s.closed ? 0 : s.count === 0 && s.senders.first === null ? 3 : 1;
    } else if (s.ended) status = 3;
    else if (this.#table.table === null) facts["[[libraryClosed]]"] = true;
    else if (this.#handle !== 0) {
      status = librarySymbols(this.#lib, "inspect channel").kc_chan_status(this.#handle);
    }
    if (status >= 0) {
      facts.isClosedForSend = (status & 1) !== 0;
      facts.isClosedForReceive = (status & 2) !== 0;
    }
    return inspectAs("Channel", facts, inspect, options);
  }

  /** True once closed (no send will succeed). */
  get isClosedForSend(): boolean {
    Channel.#check(this, "read channel status");
    return (this.#status() & 1) !== 0;
  }

  /** True once closed and drained (no receive will succeed). */
  get isClosedForReceive(): boolean {
    Channel.#check(this, "read channel status");
    return (this.#status() & 2) !== 0;
  }

  /**
   * kc_chan_status's bits: 1 closed for send, 2 closed for receive (closed and drained); both
   * for a copy whose creator ended the channel, as for a cancelled one.
   */
  #status(): number {
    const op = "read channel status";
    const sym = this.#sym(op);
    const s = this.#shared;
    if (s.local) {
      return !s.closed ? 0 : s.count === 0 && s.senders.first === null ? 3 : 1;
    }
    if (s.ended) return 3;
    const rc = sym.kc_chan_status(this.#handle);
    return this.#creatorEnded(rc) ? 3 : this.#unwrap(rc, op);
  }

  /**
   * A snapshot of the channel's counters: every isolate's operations (and native code's), those
   * another isolate completed in JavaScript as of the end of its latest turn. A copy whose
   * creator disposed of the channel has only what this isolate counted and had not reported
   * when it saw the end (the counters went with the channel): zeros, mostly. A creator with
   * `onUndeliveredElement` first hands it what the channel dropped and kept for it (a copy's
   * drops), so that `dropped` counts no value the hook was not handed: the hook runs inside
   * this call then. An error it throws is reported (`reportError`), not thrown here; a hook that
   * disposes the channel or closes the library makes this call throw what a call after that
   * throws ({@linkcode InvalidHandleError}, `LibraryClosedError`). `Deno.inspect` of a channel
   * reads no metrics and never runs the hook.
   */
  metrics(): ChannelMetrics {
    Channel.#check(this, "read channel metrics");
    const w = new BigUint64Array(13);
    let sym = this.#sym("read channel metrics");
    const s = this.#shared;
    if (this.#keeps && !s.local && this.#collectAfter()) {
      // What the channel dropped that this creator's hook was not handed yet (a copy's drops,
      // another thread's cancel) goes to it first, so that `dropped` counts no value the hook
      // has not had. Before, a creator that only read its metrics saw the drops counted and the
      // hook not called. The hook may have disposed the channel or closed the library: then
      // this call throws as one after it does.
      sym = this.#sym("read channel metrics");
    }
    if (this.#handle !== 0 && !s.ended) {
      s.flushCounts(); // this isolate's, so that its own view is exact
      const rc = sym.kc_chan_snapshot(this.#handle, w, 13);
      if (!this.#creatorEnded(rc)) this.#unwrap(rc, "read channel metrics");
    }
    if (this.#handle === 0 || s.ended) {
      // No native channel: only this isolate's counters. One not made yet (a local channel's),
      // or destroyed under a copy by its creator (its counters went with it: what this isolate
      // did and did not report before it saw the end, zeros mostly).
      w.fill(0n);
      w[11] = sym.kc_now_ns();
    }
    const n = (i: number) => Number(w[i]);
    // Operations completed in JavaScript and not reported natively yet (a local channel's).
    const js = s.handoffs;
    const first = n(9) === 0 ? s.firstNs : s.firstNs === 0 ? n(9) : Math.min(n(9), s.firstNs);
    // Fixed-size values count their slot, as natively; zero-copy ones their own bytes.
    const zc = this.#zeroCopy;
    return {
      sends: n(0) + js + s.localSends,
      receives: n(1) + js + s.localReceives,
      bytesSent: n(2) + (zc ? s.localBytesIn : (s.localSends + js) * this.#size),
      bytesReceived: n(3) + (zc ? s.localBytesOut : (s.localReceives + js) * this.#size),
      failures: {
        full: n(4) + s.fullFails,
        closed: n(5) + s.localClosed,
        timeout: n(6) + s.localTimeouts,
        cancelled: n(7) + s.localCancelled,
      },
      dropped: n(8) + s.localDropped,
      handoffs: n(12) + js,
      firstOpNs: first,
      lastOpNs: Math.max(n(10), s.lastNs),
      takenNs: n(11),
    };
  }

  /**
   * Plain data naming this native channel, to `postMessage` to a Worker. From then on the
   * channel lives while this object or a `Channel.from` copy of it does (in any isolate), or
   * until this object's dispose. A `Channel.from` copy whose creator ended the channel
   * (disposed of it, or native code destroyed it), and a creator whose channel native code
   * destroyed, throw {@linkcode InvalidHandleError}: no copy could open what it would hand out
   * (their other calls answer as on a cancelled channel).
   */
  share(): SharedChannel<T> {
    Channel.#check(this, "share channel");
    const sym = this.#sym("share channel");
    const s = this.#shared;
    // Ended under this object (a copy's creator disposed of it; native code destroyed it, an
    // owner's too): the object would name the dead handle. Before, it was handed out, and
    // `Channel.from` refused it ("handle ... names no live channel") away from the call that
    // made it (a producer that shared its channel after the destroy went on, its share lost).
    // The channel's own error (`isOwnError`). Only escaped channels can be destroyed so: one
    // status read for those (a copy's always are), none for a local channel's first share.
    if (
      s.ended || (s.escaped && this.#creatorEnded(sym.kc_chan_status(this.#handle)))
    ) throw this.#deadHandle("share channel");
    this.#escape("share channel", false);
    this.#goOutside();
    this.#giveAway();
    if (this.#owner && !this.#held && !this.#pinned) {
      // The owner holds it from now on, so that copies keep it alive after its isolate ended.
      unwrap(sym.kc_chan_hold(this.#handle, 0), "share channel");
      this.#held = true;
    }
    return {
      kind: "kcoro.channel",
      version: 1,
      handle: this.#handle,
      elemSize: this.#size,
      zeroCopy: this.#codec.zeroCopy,
      codec: this.#codec.name,
      capacity: this.#capacity,
      library: this.#lib.path,
      ...(this.#shared.role === undefined ? {} : { role: this.#shared.role }),
    };
  }

  /**
   * Opens a channel from `share()`'s object (in a Worker, or anywhere in the process). Throws
   * a TypeError for anything not shaped like one and {@linkcode InvalidHandleError} when the
   * handle names no live channel. Disposing the result does not cancel or destroy the channel:
   * its creator owns it. Its own waits still pending then (a send, a receive, a select with a
   * clause on it) reject with InvalidHandleError, as a call after the dispose does, and a send's
   * value is not delivered. The copy holds the channel, though: if the creator's isolate ends
   * without disposing it, the channel ends when its last copy is disposed or collected. Once its
   * creator disposed of the channel, the copy answers as a cancelled channel (`close()` false,
   * the try-operations `closed`, the waits a CancellationError), not with InvalidHandleError
   * (README: the `share()` paragraph of "Channels from TypeScript").
   */
  static from<T>(shared: SharedChannel<T>): Channel<T> {
    // The constructor's default parameter would turn `undefined` into `{}`, and its error then
    // named an object the caller never passed ("received [object Object]").
    if (shared === undefined) open(shared);
    return new Channel<T>(fromToken as unknown as Capacity, shared as unknown as ChannelOptions<T>);
  }

  /**
   * True if `x` is a Channel this module made (`isChannel` outside the class): by its private
   * field, not `instanceof`,
   * which a Proxy of a channel and `Object.create(Channel.prototype)` pass (every method then
   * threw the engine's "Receiver must be an instance of class Channel").
   */
  static #is(x: unknown): x is Channel<unknown> {
    return typeof x === "object" && x !== null && #handle in x;
  }

  /**
   * Throws `notChannel` unless `self` is a Channel (`#is`: a brand check, which runs no Proxy
   * trap), made first by the calls off the hot paths, before any argument is read.
   */
  static #check(self: unknown, op: string): void {
    if (!Channel.#is(self)) throw notChannel(self, op);
  }

  /**
   * Receives until the channel is closed; rethrows the close cause if one was given. A plain
   * iterator over the receive path, not an async generator (which costs a receive's time again).
   * Once `return()` ran (a `break` out of `for await`), `next()` answers done, as a generator's
   * does, and takes nothing from the channel; the channel itself stays open (Kotlin's iterator).
   * Once a `next()` rejected (the close cause, a CancellationError), later ones answer done too,
   * as an async generator that threw does, and so do those still pending then that would reject
   * too (several `next()`s at once: the first that rejects rejects, the rest answer done).
   * A `return()` while a `next()` is pending settles after it, as an async generator's does: that
   * `next()` resolves done, having taken nothing (the value stays in the channel).
   * Its receives take no signal: a loop that must end with its task iterates
   * {@linkcode Channel.values}`({ signal })` instead.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    Channel.#check(this, "iterate channel");
    return this.#iterate(undefined);
  }

  /**
   * Receives until the channel is closed, as `for await (const v of ch)` does (ends on close,
   * rethrows a close cause, a CancellationError once cancelled), but each receive takes
   * `signal`: once it aborts, the pending `next()` rejects with the signal's reason, so a loop
   * that must end with its task takes the task's signal (a `for await` over the channel itself
   * takes none, and waits on after the cancellation). `return()` (a `break`) also ends a receive
   * still waiting: that `next()` answers done. No value is lost either way: a receive ends only
   * if it took nothing; one that took a value first resolves with it. A bad `options` throws a
   * TypeError at once; an aborted signal rejects the first `next()`. Once a `next()` rejected,
   * later ones answer done, as an async generator that threw does, and so do those still
   * pending then that would reject too.
   *
   * @example
   * ```ts
   * import { Channel, withTimeoutOrNull } from "../mod.ts";
   * import assert from "node:assert/strict";
   * using ch = new Channel<number>(4);
   * for (const v of [1, 2]) ch.trySend(v);
   * const got: number[] = [];
   * const result = await withTimeoutOrNull(20, async (task) => {
   *   for await (const v of ch.values({ signal: task.signal })) got.push(v); // ends with the task
   * });
   * assert.equal(result, null); // timed out waiting for a third value
   * assert.deepEqual(got, [1, 2]);
   * ch.trySend(3);
   * ch.close();
   * const rest: number[] = [];
   * for await (const v of ch.values()) rest.push(v); // ends when closed and drained
   * assert.deepEqual(rest, [3]);
   * ```
   */
  values(options?: { signal?: AbortSignal }): AsyncIterableIterator<T> {
    Channel.#check(this, "iterate channel"); // before `options` is read
    const signal = signalOf("iterate channel", options);
    return this.#iterate(signal === undefined ? undefined : { signal });
  }

  /**
   * The iterator of `for await` (`wait` undefined) and of `values()`. Its `return()` releases
   * every receive still waiting (that `next()` resolves done, having taken nothing; one that took
   * a value natively gives it back to the channel) and settles after the last `next()` did, as an
   * async generator queues a `return()` behind a pending `next()`. Before, the plain iterator's
   * `return()` resolved done first and its pending `next()` still took the channel's next value
   * afterwards; `values()`'s resolved before that `next()` answered done.
   */
  #iterate(wait: WaitOptions | undefined): AsyncIterableIterator<T> {
    /**
     * The receive waiting last, which `return()` abandons as an abort would. Not a signal of
     * the iterator's own combined with the caller's: Deno's AbortSignal.any keeps each signal
     * it made alive while a source lives, ~900 bytes per loop over a task's long-lived signal.
     */
    const held: IterWaits = {
      waiter: null,
      more: null,
      ended: false,
      rejected: false,
      returned: false,
      turns: null,
      turning: null,
      making: false,
      made: null,
      starting: false,
      queued: null,
    };
    const next = (): Promise<IteratorResult<T, undefined>> => {
      // Once ended, done: after the next()s and return() still pending (`afterPending`), as an
      // async generator queues a next() behind them. Not chained on the last one's promise:
      // a rejection the caller ignored stays unhandled.
      if (held.ended) return afterPending(held, ITER_DONE);
      // The one pending at a time of a `for await` loop: its receive settles it directly,
      // unless that receive runs code (an onUndeliveredElement hook) that calls next() or
      // return(), which must settle after this one: the FIFO begins then, with a turn for this
      // one (`turnsOf`, `made`). Before, such a next(), finding none pending, settled first.
      if (!pendingIn(held)) {
        held.making = true;
        let p: Promise<unknown>;
        let threw = false;
        try {
          p = this.#receive(RECV_ITER, wait, held);
        } catch (e) {
          // `#receive` rejects what fails; a throw past it (none is known) still rejects this
          // next(), and its turn if one was made meanwhile, whatever took the turn: never a
          // next() that throws, nor a turn left unsettled, which every later one waits behind.
          // Before, it threw where no turn was made, and left one made to its wait.
          threw = true;
          p = failed(held, e);
        } finally {
          held.making = false;
        }
        const made = held.made;
        if (made === null) return p as Promise<IteratorResult<T, undefined>>;
        const t = held.turning!;
        held.turning = null;
        held.made = null;
        if (threw || held.waiter?.turn !== t) {
          p.then((v) => deliver(held, t, true, v), (e) => deliver(held, t, false, e));
        }
        // The next()s the code its receive ran called begin their receives now, in call order.
        if (held.queued !== null) this.#startQueued(held);
        return made;
      }
      // Called again before an earlier one settled: it settles in its turn (`#receiveInTurn`).
      return this.#receiveInTurn(wait, held) as Promise<IteratorResult<T, undefined>>;
    };
    const it: AsyncIterableIterator<T> = {
      next,
      return: () => {
        // Its own turn first, behind every next() still pending (it settles after them all).
        const r = afterPending(held, ITER_DONE);
        held.ended = held.returned = true;
        const w = held.waiter;
        const more = held.more;
        // Withdrawn and answering done if still waiting; one that took a value first, its
        // record not drained yet, gives it back to the channel and ends as returned too
        // (`#abandon`); nothing if it is done. Every next() still waiting, not only the last
        // one: an earlier one left waiting took the channel's next value after the return, and
        // nobody read it. Each settles in its turn (`deliver`): a later one withdrawn at once
        // answers done after an earlier one whose record is still due, and `return()` after them.
        if (more !== null) { for (const x of more) this.#abandon(x, RETURNED); }
        if (w !== null) this.#abandon(w, RETURNED);
        held.waiter = held.more = null;
        return r;
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /**
   * An iterator's `next()` (of `held`) made in a turn of its FIFO (`IterWaits.turns`): it
   * settles after every earlier one, whatever settles it first (`deliver`): a wait takes the
   * turn (`#wait`), an immediate outcome (a value, done, a rejection) is handed to it. One that
   * code a receive of the iterator runs calls (an onUndeliveredElement hook) begins its receive
   * once that receive has returned (`IterWaits.queued`): it takes the value after that one's.
   */
  #receiveInTurn(wait: WaitOptions | undefined, held: IterWaits): Promise<unknown> {
    const [t, promise] = newTurn(held);
    if (held.making || held.starting) {
      // Rare (a hook's next()): a closure per such call, none on a loop's path.
      (held.queued ??= []).push(() => this.#startTurn(wait, held, t));
      return promise;
    }
    held.starting = true;
    try {
      this.#startTurn(wait, held, t);
      if (held.queued !== null) this.#startQueued(held);
    } finally {
      held.starting = false;
    }
    return promise;
  }

  /**
   * The `next()`s queued while a receive of the iterator ran (`IterWaits.queued`), each begun in
   * call order; one a hook of theirs calls joins the end of the list, begun in its turn too.
   */
  #startQueued(held: IterWaits): void {
    const queued = held.queued!;
    held.starting = true;
    try {
      for (let i = 0; i < queued.length; i++) queued[i]();
    } finally {
      held.queued = null;
      held.starting = false;
    }
  }

  /**
   * Begins the receive of the `next()` of turn `t`: its outcome goes to the turn, which settles
   * in every path, a throw past `#receive` too (rejected, the iterator ended). One begun late
   * (`#startQueued`) on an iterator ended meanwhile (a `return()`, a rejection) answers done,
   * having taken nothing, as a `next()` pending at the end does.
   */
  #startTurn(wait: WaitOptions | undefined, held: IterWaits, t: Turn): void {
    if (held.ended) return deliver(held, t, true, ITER_DONE);
    // Restored after, not cleared: a next() made in a hook this receive runs (`#collectAfter`)
    // is made in its own turn and leaves this one to this receive's wait.
    const outer = held.turning;
    held.turning = t;
    let p: Promise<unknown>;
    try {
      p = this.#receive(RECV_ITER, wait, held);
    } catch (e) {
      // `#receive` rejects what fails; should something throw past it, the turn settles all the
      // same, whatever took it. Before, it stayed unsettled: this next() threw, and every later
      // next() and return() waited behind its turn for ever. It rejects for its own reason, as
      // a value that fails to decode at the call does (`#receive`'s catch): the earlier next()s
      // still waiting answer done and take nothing (`#endIter`; one whose value was taken
      // natively gives it back). Before, they went on waiting and took later values, though
      // the iterator had ended.
      held.ended = true;
      deliver(held, t, false, e);
      this.#endIter(held);
      return;
    } finally {
      held.turning = outer;
    }
    if (held.waiter?.turn !== t) {
      p.then((v) => deliver(held, t, true, v), (e) => deliver(held, t, false, e));
    }
  }

  /**
   * Cancels and destroys the native channel: what waits on it rejects with CancellationError,
   * and its `Channel.from` copies answer as on a cancelled channel from then on. A copy's only
   * detaches: its own pending waits reject with InvalidHandleError, as its later calls throw.
   */
  [Symbol.dispose](): void {
    Channel.#check(this, "dispose channel");
    if (this.#disposed || this.#disposing) return;
    // Its hooks and a select's job Disposables (user code) may dispose it again: that call
    // returns, the first one finishes. Before, the second ran the whole dispose too and each
    // took the object's reference out of `Shared.refs` (an owner's destroyed it twice): at 0
    // the isolate's entry for the channel went while its other objects still used it, and a
    // later `Channel.from` there made a second `Shared` for the same channel.
    this.#disposing = true;
    try {
      this.#dispose();
    } finally {
      this.#disposing = false;
    }
  }

  #dispose(): void {
    // The try-operations take their checked path from here (see `#at`); it throws once
    // `#disposed` is set below.
    this.#at = null;
    if (this.#table.table === null) {
      // Released as when open, without the operations: the library stays loaded once opened,
      // and the native channel with it (values and all), which nothing else would release.
      // What waited in this isolate was withdrawn when the library closed.
      this.#markDisposed();
      this.#giveAway();
      const sym = symbolsToReleaseOf(this.#lib);
      // Ended (destroyed under a copy): its hold is not given back, nor is it destroyed again
      // (its handle's value may name a later channel: see the open path's copy unhold below).
      // An owner's that learnt native code destroyed it is ended too (`#destroyedUnder`).
      const ended = this.#shared.ended;
      // Disposed already: `#handle` is `ENDED_HANDLE`; these calls, made while the channel
      // has not ended (the hold still this object's), are given the handle's value.
      const h = this.#handleValue;
      if (!this.#owner) {
        if (this.#held) {
          // A copy's hold, given back as `copyHolds` would (see there).
          copyHolds.unregister(this);
          this.#held = false;
          if (!ended) sym.kc_chan_unhold(h);
        }
      } else if (h !== 0) {
        // Its creator's dispose ends it for everyone, as open (destroy cancels it natively).
        if (!ended) sym.kc_chan_destroy(h);
        if (this.#held && !ended) sym.kc_chan_unhold(h); // forgotten (see below)
        // Ended for this isolate's `Channel.from` copies, as open (below), before the hook (user
        // code) runs: their gates close, and the entry leaves `shared`. A copy opened after the
        // library was opened again (the same loaded library: the handle names the same channel
        // there, and the copy joined this entry) answers as on a cancelled channel, "its creator
        // disposed of it", with no native call; a copy opened before gives its hold back on no
        // handle at its dispose. Before, the channel was destroyed with the entry left as it was:
        // the first copy's call went to the dead handle (whose value may name a later channel)
        // and, its creator of this isolate, said native code destroyed it; a copy's dispose gave
        // a hold back on it; and the stale entry stayed in `shared` for a later channel given the
        // handle's value to join.
        if (!ended && this.#shared.refs > 1) this.#markEnded();
        // What it dropped and kept for this isolate's hook goes there, as open (ended, by a
        // destroy: while no channel has the handle's value, as open).
        if (
          this.#keeps && (!ended || sym.kc_chan_status(h) === Status.EBADH)
        ) this.#takeUndelivered(sym);
      }
      const s = this.#shared;
      if (--s.refs === 0 && shared.get(s.key) === s) shared.delete(s.key);
      return;
    }
    if (!this.#owner) {
      // Disposed from here on: a wait the code run below begins on this copy (a select's job
      // Disposable, `reportError`'s listeners) throws as after the dispose. Before, it began,
      // was queued natively with the other objects' waiters below and outlived the dispose.
      // Nothing below calls the symbols through `#sym`.
      this.#markDisposed();
      this.#abandonAll();
    }
    // This isolate's counts go to the native channel while this object still holds it.
    this.#shared.flushCounts();
    if (!this.#owner) {
      // Waiters of this isolate's other objects for the channel stay valid: they queue
      // natively now. One batch of settles, as in `close` (`#closeShared`): a send the flush
      // finds cancelled (by native code or another isolate) rejects, and its value reaches its
      // object's onUndeliveredElement once every wait the flush failed has settled. Before, the
      // first such send's hook ran before it, and the later sends of the flush, rejected.
      const outer = Channel.#beginCollects(this.#shared);
      try {
        flushAll(this.#shared.senders);
        flushAll(this.#shared.receivers);
      } finally {
        Channel.#endCollects(this.#shared, outer);
      }
      // The last holder to leave ends the channel (its owner's isolate may be gone). Kept for
      // a select still settling with a value for it (`#keptHeld`): given back by the last of
      // them (`releaseHeldOf`), which reach this object until then (no finalizer is needed).
      if (this.#held) copyHolds.unregister(this);
      if (this.#held && this.#keptHeld === 0) {
        this.#held = false;
        // Not once the channel ended: the hold's native record is per thread and handle value,
        // and a later channel given the value replaced it there; this unhold then gave back
        // one of that channel's holds (its last holder's leaving destroyed it under its owner).
        // The ended one's record is dropped by that replacement or at the thread's end.
        // Given the handle's value: disposed already, `#handle` is `ENDED_HANDLE`.
        if (!this.#shared.ended) {
          librarySymbols(this.#lib, "dispose channel").kc_chan_unhold(this.#handleValue);
        }
      }
    } else {
      this.#giveAway();
      const sym = librarySymbols(this.#lib, "dispose channel");
      // A no-op once native code destroyed the channel, which it may learn here (its status
      // read: `#destroyedUnder`): ended then, as its copies take it, its waits still in
      // JavaScript failed as cancelled. Nothing is left to cancel, destroy or unhold, and the
      // dispose reports nothing, its dropped values collected. Before, the cancel's
      // InvalidHandleError escaped the dispose (a `using` threw at its scope's end) and the
      // object stayed undisposed, its entry in the isolate's table.
      // The class's own cancel (a subclass's through its hook), not the prototype's `cancel`:
      // a caller who redefined `Channel.prototype.cancel` made every dispose run theirs.
      ownCancel(this);
      this.#markDisposed();
      // The handle's value from here on: disposed, `#handle` is `ENDED_HANDLE`.
      const h = this.#handleValue;
      if (h === 0) return; // it never had a native channel
      // Destroyed already (native code's kc_chan_destroy, seen by a copy of this isolate: its
      // handle's value may name a later channel by now): nothing to destroy.
      const ended = this.#shared.ended;
      if (!ended) sym.kc_chan_destroy(h);
      // Its hold is forgotten (the handle is dead: the call says KC_EBADH). Not once ended
      // before (its handle's value may name a later channel: see the copy's unhold above).
      if (this.#held && !ended) sym.kc_chan_unhold(h);
      // `Channel.from` copies of this isolate answer as on a cancelled channel from now on,
      // with no call on the dead handle (copies elsewhere learn it from their next call).
      // Before the hook runs below (user code, which may call a copy): marked after it, a
      // copy's call from the hook met the dead handle first and, its creator of this isolate
      // (`Shared.creatorHere`), said native code destroyed the channel.
      if (this.#shared.refs > 1) this.#markEnded();
      // What the channel dropped for the hook waits in its handle value's list, which outlives
      // a destroy (kc_chan_take_undelivered), native code's too: the values buffered when it
      // destroyed the channel go to the hook here, as after this dispose's own destroy. Not
      // when a later channel has the handle's value (a status read says it is live): its
      // kc_chan_create freed the values this channel kept, and what is there is its own.
      // All of them, not `#collect`'s batch of `COLLECT_BATCH`: the destroyed channel's list
      // gets no more (the destroy sealed it after its cancel: a late drop, by a call on another
      // thread that looked the channel up before the destroy, is refused or freed and counted
      // natively, kc_undelivered_lost; README, the 65,536 paragraph), and the rest's timer stops
      // once disposed (by then the handle's value may name a later channel), so a dispose of more
      // than one batch, or a cancel's batch just before it, left the rest there for good.
      // An owner that learnt of the destroy itself took them then (`#destroyedUnder`), and finds
      // none here; one whose copy learnt it first (`#markEnded` by the copy) takes them here, the
      // status read guarding it as above (the dispose's one call on the dead handle's value,
      // past the gate: `#handleValue`).
      // Either take sees all of them: kc_chan_destroy cancels and seals the channel before its
      // handle dies, so a call that finds the handle dead finds what it dropped in the list.
      // Before, another thread's destroy freed the handle first and cancelled after: a take in
      // between found nothing, and the values waited there for a later channel of the value.
      if (
        this.#keeps && this.#table.table !== null &&
        (!ended || sym.kc_chan_status(h) === Status.EBADH)
      ) this.#takeUndelivered(sym);
    }
    this.#markDisposed();
    const s = this.#shared;
    if (--s.refs === 0 && shared.get(s.key) === s) shared.delete(s.key);
  }

  /**
   * A copy's dispose ends its own waits, a select's on it too: each rejects with the
   * InvalidHandleError a call after the dispose throws, its send's value never delivered (as
   * an aborted wait); the channel stays as it was for its other holders. Before, they went on
   * waiting natively: a disposed copy's receive still took a value, its send still delivered,
   * and a wait no other holder would complete kept the process alive. (An owner's dispose
   * cancels the channel, which rejects every wait with CancellationError.)
   */
  #abandonAll(): void {
    const s = this.#shared;
    for (const w of [...waiting(s.senders), ...waiting(s.receivers)]) {
      if (w.ch !== (this as Channel<unknown>)) continue;
      const op = waitOp(w.kind);
      this.#abandon(w, this.#own(new InvalidHandleError(`Cannot ${op}: the channel was disposed`)));
    }
    const selects = this.#selects;
    this.#selects = null;
    if (selects !== null) {
      for (const op of selects) if (op.channelDisposed(this as Channel<unknown>)) this.#keptHeld++;
    }
  }

  /**
   * For select: one that this copy's dispose found completing (`channelDisposed`
   * answered true) has settled. The last such gives the copy's hold back, as its dispose would
   * have (not once the channel ended: see there).
   */
  #releaseHeld(): void {
    if (this.#keptHeld === 0) return; // never: each true answer is released once
    // Not disposed (kept by `keepHeldOf` and never disposed since): the hold stays its own.
    if (--this.#keptHeld > 0 || !this.#held || !this.#disposed) return;
    this.#held = false;
    if (!this.#shared.ended) symbolsToReleaseOf(this.#lib).kc_chan_unhold(this.#handleValue);
  }

  /**
   * For select, about to refuse its send clauses' values (`#settleNative`): a copy's
   * hold is kept until `releaseHeldOf`, so that a dispose meanwhile (by a hook that one of those
   * refusals runs) leaves the channel live for the refusal through this copy. False, nothing
   * kept, for an owner (its dispose destroys the channel anyway), a copy disposed already (a
   * select kept its hold: `channelDisposed`) or one that holds nothing.
   */
  #keepHeld(): boolean {
    if (this.#owner || this.#disposed || !this.#held) return false;
    this.#keptHeld++;
    return true;
  }

  /**
   * For select, waiting natively on this channel: `op.channelDisposed(this)` runs at this
   * copy's dispose (`#abandonAll`), until the Disposable returned is disposed. Undefined for an
   * owner: its dispose cancels the channel, which the select sees natively. True from it keeps
   * the copy's hold for the select until it calls `releaseHeldOf`.
   */
  #watchDispose(op: { channelDisposed(ch: Channel<unknown>): boolean }): Disposable | undefined {
    if (this.#owner) return undefined;
    const selects = this.#selects ??= new Set();
    selects.add(op);
    return { [Symbol.dispose]: () => selects.delete(op) };
  }

  /** As `[Symbol.dispose]`. */
  [Symbol.asyncDispose](): Promise<void> {
    try {
      Channel.#check(this, "dispose channel"); // not `this[Symbol.dispose]`, a Proxy's trap
      ownDispose(this); // the class's own, not a redefined `Channel.prototype[Symbol.dispose]`
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

/** Channels of one library, held weakly; dead entries are pruned whenever the set doubles. */
interface WeakChannels {
  refs: Set<WeakRef<Channel<unknown>>>;
  pruneAt: number;
}

/**
 * Local channels that had waiters or keep values for a hook, per library: when the library
 * closes, `#libraryClosed` rejects what still waits in them and hands their values to the hook
 * (no completion can come for them any more).
 */
const locals = new Map<Library, WeakChannels>();

/**
 * Mapped channels (`Channel.#at`), per library: when the library begins to close
 * (`beforeClose`, while it is still open), each is unmapped (`#unmap`), so that its
 * try-operations take their checked path, which throws LibraryClosedError once it is closed.
 */
const mapped = new Map<Library, WeakChannels>();

/**
 * Adds `ch`, weakly, to `lib`'s set in `table`; `first` (given the new set) registers the
 * library hook that empties it, when `lib` had no set yet.
 */
function holdWeakly(
  table: Map<Library, WeakChannels>,
  lib: Library,
  ch: Channel<unknown>,
  first: (refs: Set<WeakRef<Channel<unknown>>>) => void,
): void {
  let t = table.get(lib);
  if (t === undefined) {
    t = { refs: new Set<WeakRef<Channel<unknown>>>(), pruneAt: 64 };
    table.set(lib, t);
    first(t.refs);
  }
  t.refs.add(new WeakRef(ch));
  if (t.refs.size >= t.pruneAt) {
    for (const ref of t.refs) if (ref.deref() === undefined) t.refs.delete(ref);
    t.pruneAt = Math.max(64, 2 * t.refs.size);
  }
}

function unmapOnClose(lib: Library, ch: Channel<unknown>): void {
  holdWeakly(mapped, lib, ch, (refs) =>
    beforeClose(lib, () => {
      mapped.delete(lib);
      for (const ref of refs) {
        const ch = ref.deref();
        if (ch !== undefined) unmapOf(ch);
      }
    }, "the unmap of mapped channels"));
}

function trackLocal(lib: Library, ch: Channel<unknown>): void {
  holdWeakly(locals, lib, ch, (refs) =>
    onClose(lib, () => {
      locals.delete(lib);
      for (const ref of refs) {
        try {
          const ch = ref.deref();
          if (ch !== undefined) libraryClosedOf(ch);
        } catch (e) {
          reportUncaught(e);
        }
      }
    }));
}

const fromToken = Symbol("Channel.from");

/** kc_chan_hold's flag: a hold that is never given back. */
const HOLD_FOREVER = 1;

/**
 * Gives back the hold of a `Channel.from` copy that was garbage collected without dispose (no
 * operation of it was pending: its waiters would have kept it reachable). The last holder's
 * leaving ends the channel.
 */
const copyHolds = new FinalizationRegistry<{ lib: Library; handle: number; s: Shared }>(
  ({ lib, handle, s }) => {
    // Its share of this isolate's entry for the channel, as dispose gives it back.
    if (--s.refs === 0 && shared.get(s.key) === s) shared.delete(s.key);
    try {
      // Also once the library was closed: it stays loaded, and the channel with it, which a
      // hold never given back kept for good (values and all) after its other holders left.
      // Not once the channel ended (a later channel may have its handle's value: see dispose).
      if (!s.ended) symbolsToReleaseOf(lib).kc_chan_unhold(handle);
      copyHoldGone?.(handle);
    } catch (e) {
      reportUncaught(e); // a finalizer must not throw; nothing here should
    }
  },
);

/** For tests (`_testCopyHoldGone`): runs at the end of a collected copy's `copyHolds`. */
let copyHoldGone: ((handle: number) => void) | null = null;

/**
 * @ignore For tests: `f` runs once `copyHolds` has given back (or, its channel ended, not) the
 * hold of a `Channel.from` copy collected undisposed, with its handle value, so that a test
 * knows the finalizer ran rather than that the copy was collected (null: none). Internal.
 */
export function _testCopyHoldGone(f: ((handle: number) => void) | null): void {
  copyHoldGone = f;
}

/*
 * Channel's own members, captured as the module loads: kcoro's other modules call a channel's
 * close, cancel, dispose, send and trySend through these (an actor's `close()` closing its
 * mailbox, a producer's end closing its channel, an actor's end cancelling and disposing of its
 * mailbox), never through the object's prototype, which a caller may redefine
 * (`Channel.prototype.close = ...`): before, such a redefinition steered kcoro's own calls.
 */
const channelClose = Channel.prototype.close;
const channelCancel = Channel.prototype.cancel;
const channelDispose = Channel.prototype[Symbol.dispose];
const channelSend = Channel.prototype.send;
const channelTrySend = Channel.prototype.trySend;

/** Channel's own `close` of `ch` (no cause when `cause` is left out, as `close()`). Internal. */
export function closeChannel<T>(ch: Channel<T>, ...cause: [] | [unknown]): boolean {
  return cause.length === 0 ? channelClose.call(ch) : channelClose.call(ch, cause[0]);
}

/** Channel's own `cancel` of `ch` (a subclass's override is not run). Internal. */
export function cancelChannel<T>(ch: Channel<T>, cause?: unknown): void {
  channelCancel.call(ch, cause);
}

/** Channel's own `[Symbol.dispose]` of `ch` (a subclass's override is not run). Internal. */
export function disposeChannel<T>(ch: Channel<T>): void {
  channelDispose.call(ch);
}

/** Channel's own `send` on `ch`. Internal. */
export function sendChannel<T>(ch: Channel<T>, value: T, options?: WaitOptions): Promise<void> {
  return channelSend.call(ch, value, options) as Promise<void>;
}

/** Channel's own `trySend` on `ch`. Internal. */
export function trySendChannel<T>(ch: Channel<T>, value: T): TrySendResult {
  return channelTrySend.call(ch, value) as TrySendResult;
}

/** The cancel of `ch`'s own class: its subclass's through its hook (`ChannelHooks.cancel`). */
function ownCancel<T>(ch: Channel<T>): void {
  const hooks = hooksOf.get(ch);
  if (hooks === undefined) channelCancel.call(ch);
  else hooks.cancel(ch);
}

/** The dispose of `ch`'s own class (`ownCancel`'s rule). */
function ownDispose<T>(ch: Channel<T>): void {
  const hooks = hooksOf.get(ch);
  if (hooks === undefined) channelDispose.call(ch);
  else hooks.dispose(ch);
}

/**
 * @ignore Whether `p`, what a `send` returned, is the one promise a send that completed at once
 * returns (for `actor`: nothing can reject it, so it needs no handler). Internal.
 */
export function _sentAtOnce(p: Promise<void>): boolean {
  return p === RESOLVED;
}

/**
 * How many dropped values of shared channels with an `onUndeliveredElement` hook never reached
 * the hook, in this process (every isolate's channels together; `kc_undelivered_lost`). A value
 * counts here when it is dropped after its owner disposed of the channel: another isolate's
 * pending operation took it or was still sending it and ends after the dispose (a Worker that
 * ended with a received value it had not taken yet, or with a select whose send clause lost; a
 * receive whose wait was given up, an abort, just as it completed). The dispose hands its hook
 * every value dropped before, and nothing can reach the hook after, so such a value is freed
 * natively (a zero-copy buffer too) and counted. Stays 0 while every channel outlives the
 * isolates that use it. Opens the library if it is not open yet.
 *
 * @example
 * ```ts
 * import { undeliveredLost } from "../mod.ts";
 * import assert from "node:assert/strict";
 * assert.equal(typeof undeliveredLost(), "number");
 * ```
 */
export function undeliveredLost(): number {
  return Number(librarySymbols(library(), "read lost undelivered values").kc_undelivered_lost());
}

/** @ignore For tests: the handle a channel's native calls are given once it ended (see there). */
export const _ENDED_HANDLE = ENDED_HANDLE;

/**
 * @ignore For tests: files `ch`'s entry under `handle` instead, as if its channel had had that
 * handle's value, been destroyed unseen here, and the value gone to a later channel (its slot's
 * generation wrapped: ~523,000 frees); an owner's collection (`orphans`) acts on that value too.
 * Internal.
 */
export function _testRekeyEntry(ch: Channel<unknown>, handle: number): void {
  const s = sharedStateOf(ch);
  if (shared.get(s.key) === s) shared.delete(s.key);
  s.key = sharedKey(libraryOf(ch), handle);
  shared.set(s.key, s);
  if (s.orphanLib !== null) s.orphanHandle = handle; // what its collection would act on
}

/**
 * @ignore For tests: `f` runs in an owner's collection (`orphans`) between its switch of a live
 * channel's hook and its take of the values kept for the owner, as another thread's drop may
 * (null: none). Internal.
 */
export function _testOrphanSwitched(f: ((handle: number) => void) | null): void {
  orphanSwitched = f;
}

/**
 * @ignore For tests: `f` runs in `Channel.from` between `open`'s checks of the handle and the
 * copy's holds (`at` "hold": just before the copy's own hold, after its re-check), and answers
 * the handle value to go on with: another channel's, as if the checked one had been destroyed
 * meanwhile and its value gone to a later channel (its slot's generation wrapped: ~523,000
 * frees). Null: none. Internal.
 */
export function _testFromChecked(
  f: ((handle: number) => number) | null,
  at: "checks" | "hold" = "checks",
): void {
  if (at === "hold") fromHolding = f;
  else fromChecked = f;
}

/**
 * @ignore For tests: the next `n` closes and cancels with a cause (`close(cause)`,
 * `cancel(cause)`) store none natively and answer KC_ENOMEM, as kc_chan_close_cause does when it
 * cannot copy the cause (the close or cancel stands). Internal.
 */
export function _testCauseNoMemory(n: number): void {
  causeNoMemory = n;
}

/**
 * @ignore For tests: `f` answers for the hold an owner's collection (`orphans`) takes on its
 * channel, as kc_chan_hold would (KC_ENOMEM: no hold taken), or undefined to take it (null:
 * none). Internal.
 */
export function _testOrphanHold(f: ((handle: number) => number | undefined) | null): void {
  orphanHold = f;
}

/** @ignore For tests: how many channels this isolate keeps an entry for. */
export function _sharedEntries(): number {
  return shared.size;
}

/** Checks a `share()` object and the handle it names. */
function open(
  x: unknown,
): {
  lib: Library;
  handle: number;
  codec: Codec<unknown>;
  capacity: number;
  role: ChannelRole | undefined;
  serialLo: number;
  serialHi: number;
} {
  const op = "open shared channel";
  // `got`: what was wrong, a field's own value where one field is (the whole object said
  // "received [object Object]" for a forged handle, leaving the caller to guess which field).
  const bad = (why: string, got: string = describe(x)): never => {
    throw new TypeError(`Cannot ${op}: ${why}, received ${got}`);
  };
  // A revoked Proxy too (its first read threw the engine's bare error): no share() answer.
  if (x === null || typeof x !== "object" || isRevoked(x)) {
    return bad("expected the object channel.share() returns");
  }
  const o = x as Record<string, unknown>;
  // Each read once (a getter runs once), and both named: the whole object said
  // "received [object Object]", leaving the caller to guess which of the two was wrong.
  const kind = o.kind, version = o.version;
  if (kind !== "kcoro.channel" || version !== 1) {
    return bad(
      'expected kind "kcoro.channel" and version 1 (from channel.share())',
      `kind ${describe(kind)} and version ${describe(version)}`,
    );
  }
  const { handle, elemSize, zeroCopy, capacity } = o;
  if (
    typeof handle !== "number" || !Number.isInteger(handle) || handle <= 0 || handle > UNLIMITED
  ) {
    return bad(`handle must be a 32-bit channel handle (1 to ${UNLIMITED})`, describe(handle));
  }
  const codec = codecByName(o.codec);
  if (codec === undefined) {
    return bad(
      `codec must be the name of one of codecs (${Object.keys(codecs).join(", ")})`,
      describe(o.codec),
    );
  }
  if (elemSize !== codec.elemSize || zeroCopy !== codec.zeroCopy) {
    return bad(
      `elemSize and zeroCopy must match codec ${codec.name} (${codec.elemSize} and ${codec.zeroCopy})`,
      `${describe(elemSize)} and ${describe(zeroCopy)}`,
    );
  }
  if (
    typeof capacity !== "number" || !Number.isInteger(capacity) || capacity < 0 ||
    capacity > UNLIMITED
  ) {
    return bad(`capacity must be an integer from 0 to ${UNLIMITED}`, describe(capacity));
  }
  const where = o.library;
  // With NUL it names no file: the system's paths end at one. It was taken for this isolate's
  // library (`libraryAt`: a path that cannot be looked at is the same file), a forged field
  // accepted.
  if (
    where !== undefined && (typeof where !== "string" || where === "" || where.includes("\0"))
  ) {
    return bad("library must be the path of the library the channel lives in", describe(where));
  }
  // Only the names share() writes: a forged one is refused as any forged field is, so a copy's
  // owner-gone message never carries text of the sender's making.
  const role = o.role;
  if (role !== undefined && role !== "producer" && role !== "actor") {
    return bad(
      'role must be "producer" or "actor" (from share() of a produce or actor channel)',
      describe(role),
    );
  }
  // The file it lives in, not a search of this isolate's own: a Worker's would resolve a
  // relative KCORO_LIB against the directory current when it runs, maybe another one.
  const lib = where === undefined ? library() : libraryAt(where, op);
  // This one and the next three refusals end in the house form's "received" part: the field,
  // or fields, that said what the native side denies (they had none). This one as `libraryAt`'s
  // for a path that names nothing: "its library is not ..., received <the path>".
  if (lib === null) {
    throw new InvalidHandleError(
      `Cannot ${op}: its library is not ${library().path}, which this isolate opened: another ` +
        `file (another copy, whose handles, ${handle} among them, name nothing of this one's), ` +
        `received ${describe(where)}`,
    );
  }
  const info = outWords;
  const sym = librarySymbols(lib, op);
  // The serial first, then the shape: the copy's hold, taken last (`Channel.from`), is checked
  // against this serial, so that the shape checked here, the hold and every call between were
  // the one channel's (a serial names one channel, alive over one stretch of time).
  const dead = sym.kc_chan_serial(handle, serialWords) !== 0;
  const serialLo = serialWords[0], serialHi = serialWords[1];
  if (dead || sym.kc_chan_info(handle, info) < 0) {
    // Most often a channel a Worker shared and then ended (closed or terminated) before any
    // other isolate opened it: the message said only "stale, destroyed or forged", and a Worker
    // that produced a few values and closed itself left its user nothing to go on.
    throw new InvalidHandleError(
      `Cannot ${op}: the handle names no live channel: its creator disposed of it (or ` +
        "native code destroyed it), or it ended with the Worker that made it, which closed or " +
        "was terminated before any other isolate opened it; else the object is stale or " +
        `forged, received handle ${handle}`,
    );
  }
  // A handle copied into an object that describes another kind of channel: its codec would
  // read the wrong slots, and its capacity decide the wrong paths.
  const zc = (info[3] & ZERO_COPY) !== 0;
  if (info[0] !== elemSize || zc !== zeroCopy || info[1] !== capacity) {
    const kind = (size: unknown, z: unknown, cap: unknown) =>
      `${size}-byte${z ? " zero-copy" : ""} elements, capacity ${cap}`;
    throw new InvalidHandleError(
      `Cannot ${op}: handle ${handle} names a channel of ${kind(info[0], zc, info[1])}, not of ${
        kind(elemSize, zeroCopy, capacity)
      } as described (forged, or from another channel), received elemSize ${elemSize}, ` +
        `zeroCopy ${zeroCopy} and capacity ${capacity}`,
    );
  }
  // 0: made untyped (by C code); any codec of the right size may read it.
  const tag = (info[3] >>> TYPE_SHIFT) & 0xff;
  if (tag !== 0 && tag !== TYPE_TAGS[codec.name]) {
    const made = Object.keys(TYPE_TAGS).find((name) => TYPE_TAGS[name] === tag);
    throw new InvalidHandleError(
      `Cannot ${op}: handle ${handle} names a channel of codecs.${made ?? `<type ${tag}>`} ` +
        `values, not of codecs.${codec.name} as described (forged, or from another channel), ` +
        `received codec ${describe(o.codec)}`,
    );
  }
  return { lib, handle, codec, capacity: capacity + 0, role, serialLo, serialHi }; // -0 as 0
}

refuseAsValue(
  Channel,
  "a Channel",
  "send its `share()` and open it with `Channel.from()` there",
  NOT_CLONEABLE,
);

/**
 * The TypeError of a public method or getter of Channel called on what is no Channel, `op`
 * naming the call as its other errors do: an object made from the prototype
 * (`Object.create(Channel.prototype)`, which `instanceof` takes), a Proxy of a channel (the
 * private fields are the channel's, not the Proxy's), a primitive. Before, each threw the
 * engine's TypeError ("Receiver must be an instance of class Channel", "Cannot read private
 * member #at from an object whose class did not declare it"), send and receive synchronously.
 */
function notChannel(self: unknown, op: string): TypeError {
  return new TypeError(`Cannot ${op}: this is not a Channel, received ${describe(self)}`);
}

/**
 * What a hot path's catch throws (or rejects with): `e`, what its body threw, on a Channel; on
 * what is none, whose first private read threw the engine's TypeError, `notChannel`. The brand
 * check runs only once the body threw: send, receive and receiveCatching make none on the path
 * of a call that succeeds (trySend and tryReceive try their first private read only, which
 * measured cheaper on the try pair than a catch around the whole body).
 */
function thrown(self: unknown, op: string, e: unknown): unknown {
  return isChannel(self) ? e : notChannel(self, op);
}

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(Channel.prototype, "Channel");

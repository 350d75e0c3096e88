/**
 * `select()`: waits for the first of several clauses (README: "Select from TypeScript"), built on
 * the native select.
 *
 * - At most one clause fires; its handler's result (awaited) is the select's result.
 * - Biased to clause order by default (Kotlin); `unbiased: true` picks uniformly among the
 *   ready clauses (Go): the clauses are probed in a fresh random order.
 * - `onTimeout(ms)` fires after `ms` if nothing else did; `onTimeout(0)` (or less) is an
 *   immediate default: it fires at once when no other clause is ready.
 * - `onReceive` on a channel closed for receive rejects the select with ClosedReceiveError (or
 *   the close cause); `onReceiveCatching` fires with `{ state: "closed" }`; `onSend` to a closed
 *   channel rejects with ClosedSendError (or the cause). A cancelled channel gives
 *   CancellationError: the cancel's cause itself when that is one, as its plain operations do.
 * - An aborted `signal` rejects with the signal's reason; no clause fired, so every channel is
 *   intact (an `onSend`'s value is never delivered).
 *
 * How: the channel clauses are probed with one `kc_select(KC_SELECT_POLL)` call. If none is
 * ready they are queued as one `kc_select_async` on the isolate's completion ring
 * (src/bridge.ts); whoever completes a clause (a native coroutine, a thread, a Worker, a send
 * from this isolate) writes the record that settles the select; a send or receive of this
 * isolate (another select's clause too) drains it before it returns (`Shared.selectReceives`),
 * so that an abort after it finds the select settled. A JavaScript-side clause
 * (`onTimeout`, `onJoin`, `onAwait`) or an abort wins only after `kc_ring_abort` withdrew the
 * native select; when the abort answers KC_EBUSY a channel clause won first and is honoured,
 * except that an abort (the signal) that lost to a receive clause still rejects the select, the
 * value going back to its channel in front (`kc_ring_give_back`).
 * Every party in this isolate that waits on a channel is queued natively too, so a select meets
 * a plain `send`/`receive` of the same isolate (and they meet it) through the native channel.
 *
 * @example
 * ```ts
 * import { Channel, select } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using numbers = new Channel<number>("buffered");
 * using words = new Channel<string>("buffered");
 * await words.send("hi");
 * const got = await select<string>((s) => {
 *   s.onReceive(numbers, (n) => `number ${n}`);
 *   s.onReceive(words, (w) => `word ${w}`);
 * });
 * assert.equal(got, "word hi");
 * // Nothing ready: the immediate default fires.
 * assert.equal(await select<string>((s) => {
 *   s.onReceive(numbers, (n) => `number ${n}`);
 *   s.onTimeout(0, () => "nothing");
 * }), "nothing");
 * ```
 *
 * @module
 */
import { isLibraryOpen, type Library, librarySymbols, symbolsToReleaseOf } from "../ffi/load.ts";
import { Bridge, ringLostError, type RingOp } from "./bridge.ts";
import {
  afterGiveBackOf,
  afterReceiveOf,
  afterSendOf,
  type Channel,
  checkValueOf,
  closedResultOf,
  codecOf,
  countTimeoutOf,
  creatorEndedOf,
  disposedOf,
  endedOf,
  flushLocalOf,
  insideOf,
  isChannel,
  keepHeldOf,
  libraryOf,
  type ReceiveCatchingResult,
  receiveErrorOf,
  refusedOf,
  refusedSettledOf,
  releaseHeldOf,
  selectHandleOf,
  sendErrorOf,
  settleMetOf,
  sharedStateOf,
  symbolsOf,
  undeliveredOf,
  watchDisposeOf,
} from "./channel.ts";
import { giveSlot, type Slot, takeSlot } from "./codec.ts";
import {
  abortHeard,
  abortReason,
  checkFunction,
  checkOptionNames,
  checkOptions,
  checkSignal,
  describe,
  InvalidHandleError,
  isAborted,
  isRevoked,
  LibraryClosedError,
  listenAbortNamed,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  reportUncaught,
  Status,
  unlistenAbort,
  unwrap,
} from "./errors.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";
import {
  awaitJob,
  type Deferred,
  handlersRanOf,
  isCompletedJob,
  isJob as isKcoroJob,
  isResultlessJob,
  type Job,
  jobStateOf,
  onJobCompletion,
  startJob,
} from "./job.ts";
import { checkMs, timer } from "./time.ts";

/** What a clause's handler may return: the select's result, or a promise of it. */
export type SelectResult<R> = R | PromiseLike<R>;

/**
 * Registers the clauses of one {@linkcode select}; the rules are in README.md, "Select from
 * TypeScript".
 */
export interface SelectBuilder<R> {
  /** Receives a value from `ch`; a channel closed for receive rejects the select. */
  onReceive<T>(ch: Channel<T>, fn: (value: T) => SelectResult<R>): void;
  /** Receives from `ch`; a closed channel fires with `{ state: "closed", cause? }`. */
  onReceiveCatching<T>(
    ch: Channel<T>,
    fn: (result: ReceiveCatchingResult<T>) => SelectResult<R>,
  ): void;
  /**
   * Sends `value` to `ch`; a closed channel rejects the select (the value goes to its
   * onUndeliveredElement, as a failed `send`'s does, and so do the values of the other onSend
   * clauses the select reached, each to its own channel's: one after an onJoin or onAwait whose
   * job was complete or lazy, when a channel clause before it failed at once, was not reached and
   * its value stays the caller's). Unless it fires, nothing is sent.
   */
  onSend<T>(ch: Channel<T>, value: T, fn: () => SelectResult<R>): void;
  /**
   * Fires after `ms` milliseconds; `ms <= 0` is an immediate default (fires when nothing else is
   * ready). Not a number is a TypeError, NaN a RangeError (as `delay`'s).
   */
  onTimeout(ms: number, fn: () => SelectResult<R>): void;
  /** Fires when `job` reaches a final state, whatever the outcome (starts a lazy job). */
  onJoin(job: Job, fn: () => SelectResult<R>): void;
  /**
   * Fires with `deferred`'s value when it completes (starts a lazy one); its failure rejects
   * the select.
   */
  onAwait<T>(deferred: Deferred<T>, fn: (value: T) => SelectResult<R>): void;
}

/** Options of {@linkcode select}. */
export interface SelectOptions {
  /**
   * Aborting it rejects the select with the signal's reason; no clause fires, and each onSend
   * clause's value goes to its channel's onUndeliveredElement (as an aborted send's).
   */
  signal?: AbortSignal;
  /** Pick uniformly among the ready clauses instead of the first in clause order. */
  unbiased?: boolean;
}
/** SelectOptions' names: any other own key is refused (`checkOptionNames`). */
const SELECT_OPTIONS = optionNames<SelectOptions>({ signal: true, unbiased: true });

const SEND = 0, RECV = 1, RECV_CATCHING = 2, TIMEOUT = 3, JOIN = 4, AWAIT = 5;
/** At most this many channel clauses (the native select's limit). */
const MAX_CHANNEL_CLAUSES = 16;
const CLAUSE_BYTES = 24;
const KC_SELECT_POLL = 1;

// deno-lint-ignore no-explicit-any
type Fn = (...args: any[]) => unknown;

interface Clause {
  kind: number;
  fn: Fn;
  ch?: Channel<unknown>;
  value?: unknown;
  ms?: number;
  job?: Job;
  /** Channel clauses: the native slot (a send's encoded value; where a receive lands). */
  slot?: Slot;
  /** Channel clauses: the value is encoded in `slot` and must be freed unless sent. */
  encoded?: boolean;
}

/** What a structured clone of a select builder fails on (`Builder._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  "Cannot clone a select builder: it registers clauses for the select() call that made it; " +
    "postMessage the channels' share() and build the select in the Worker",
);

/** Set by Builder's static block: ends the builder's clauses (late ones refused); its list. */
let sealBuilder: (b: Builder) => Clause[];
/** Set by Builder's static block: how many channel clauses the builder has. */
let channelsOf: (b: Builder) => number;

class Builder implements SelectBuilder<unknown> {
  /**
   * First of the fields structured cloning sees: a DataCloneError with its description as the
   * message. A builder cloned as `{ clauses: [], channels: 0, sealed: false }` before (its clauses,
   * once added, failed on the first handler function or channel instead).
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  // Private: as public fields the caller could change them past #add's checks
  // (`s.clauses.push(null)` or a forged clause: the engine's TypeErrors from inside the select;
  // `s.sealed = false` on a builder kept past its block: a clause added to a select built).
  readonly #clauses: Clause[] = [];
  #channels = 0;
  #sealed = false;

  static {
    sealBuilder = (b) => {
      b.#sealed = true;
      return b.#clauses;
    };
    channelsOf = (b) => b.#channels;
  }

  #add(op: string, c: Clause): void {
    if (this.#sealed) {
      throw new TypeError(`Cannot ${op}: the select was built already, received a late clause`);
    }
    if (typeof c.fn !== "function") {
      throw new TypeError(
        `Cannot ${op}: the handler must be a function, received ${describe(c.fn)}`,
      );
    }
    if (c.ch !== undefined) {
      if (this.#channels === MAX_CHANNEL_CLAUSES) {
        throw new RangeError(
          `Cannot ${op}: a select takes at most ${MAX_CHANNEL_CLAUSES} channel clauses, received ${
            this.#channels + 1
          }`,
        );
      }
      this.#channels++;
    }
    this.#clauses.push(c);
  }

  #channel(op: string, ch: unknown): Channel<unknown> {
    if (!isChannel(ch)) {
      throw new TypeError(`Cannot ${op}: expected a Channel, received ${describe(ch)}`);
    }
    return ch;
  }

  /**
   * Throws a TypeError naming `op` unless `self` (a method's `this`) is a builder: a brand check
   * on `Object(self)`, which runs no Proxy trap, before any argument is read. On an object made
   * from the prototype or a Proxy of a builder, `onReceive`, `onReceiveCatching` and `onSend`
   * threw the engine's "Receiver must be an instance of class Builder", the others after
   * checking their arguments.
   */
  static #check(self: unknown, op: string): void {
    if (!(#add in Object(self))) {
      throw new TypeError(`Cannot ${op}: this is not a SelectBuilder, received ${describe(self)}`);
    }
  }

  onReceive<T>(ch: Channel<T>, fn: (value: T) => unknown): void {
    const op = "add onReceive clause";
    Builder.#check(this, op);
    this.#add(op, { kind: RECV, ch: this.#channel(op, ch), fn });
  }

  onReceiveCatching<T>(ch: Channel<T>, fn: (r: ReceiveCatchingResult<T>) => unknown): void {
    const op = "add onReceiveCatching clause";
    Builder.#check(this, op);
    this.#add(op, { kind: RECV_CATCHING, ch: this.#channel(op, ch), fn });
  }

  onSend<T>(ch: Channel<T>, value: T, fn: () => unknown): void {
    const op = "add onSend clause";
    Builder.#check(this, op);
    this.#add(op, { kind: SEND, ch: this.#channel(op, ch), value, fn });
  }

  onTimeout(ms: number, fn: () => unknown): void {
    const op = "add onTimeout clause";
    Builder.#check(this, op);
    checkMs(op, ms); // NaN: a RangeError, as delay's and withTimeout's (it was a TypeError)
    this.#add(op, { kind: TIMEOUT, ms, fn });
  }

  onJoin(job: Job, fn: () => unknown): void {
    const op = "add onJoin clause";
    Builder.#check(this, op);
    if (!isJob(job)) throw new TypeError(`Cannot ${op}: expected a Job, received ${describe(job)}`);
    this.#add(op, { kind: JOIN, job, fn });
  }

  onAwait<T>(deferred: Deferred<T>, fn: (value: T) => unknown): void {
    const op = "add onAwait clause";
    Builder.#check(this, op);
    // A Job of kcoro's that is no Deferred (a `launch`'s, a scope) has an `await`, but no result:
    // refused, as Kotlin's onAwait is Deferred's only (onJoin waits for a Job). Before, the clause
    // fired with undefined once the job completed.
    // A kcoro job by its brand (`isKcoroJob`: no member of its prototype is read, as the clause
    // runs JobSupport's own, `awaitJob`); one of the caller's own by its members.
    if (
      isKcoroJob(deferred)
        ? isResultlessJob(deferred)
        : !isJob(deferred) || typeof (deferred as Deferred<T>).await !== "function"
    ) {
      throw new TypeError(`Cannot ${op}: expected a Deferred, received ${describe(deferred)}`);
    }
    this.#add(op, { kind: AWAIT, job: deferred, fn });
  }

  /**
   * `SelectBuilder`, the name it prints with (`[customInspect]`): `String(s)` says
   * `[object SelectBuilder]`, as kcoro's other objects do, not `[object Object]`, and an error
   * message naming a builder passed where something else belongs says "a SelectBuilder"
   * (`describe`, by this brand check). Only on an instance (a private brand check): an object made
   * from the prototype stays `[object Object]`.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #add in Object(this) ? "SelectBuilder" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a builder: `SelectBuilder { [[clauses]]: 2 }`
   * (`[[...]]`: no property of it, `inspectAs`).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#add in Object(this))) return notA("SelectBuilder");
    return inspectAs("SelectBuilder", { "[[clauses]]": this.#clauses.length }, inspect, options);
  }
}

refuseAsValue(
  Builder,
  "a select builder",
  "build the select where its channels are received",
  NOT_CLONEABLE,
);

/**
 * Whether `x` is a Job an onJoin or onAwait clause takes: a kcoro job by its brand (`isKcoroJob`),
 * reading no member, as the clause starts and watches it by JobSupport's own (`startJob`,
 * `onJobCompletion`); one of the caller's own by its `invokeOnCompletion` and `start`. Before, a
 * kcoro job was looked at through its prototype's members too: a `start` a caller redefined there
 * (a getter that threw, a value no function) refused it ("expected a Job") or threw out of the
 * clause's `onJoin`, though the clause never runs that member.
 */
function isJob(x: unknown): x is Job {
  if (isKcoroJob(x)) return true;
  // A revoked Proxy is none (refused by name): reading it threw the engine's bare error.
  return x !== null && typeof x === "object" && !isRevoked(x) &&
    typeof (x as Job).invokeOnCompletion === "function" && typeof (x as Job).start === "function";
}

/** Clause array for `kc_select` / `kc_select_async` (struct kc_clause[16]), reused. */
const clauseBuf = new Uint8Array(new ArrayBuffer(CLAUSE_BYTES * MAX_CHANNEL_CLAUSES));
const clauseU32 = new Uint32Array(clauseBuf.buffer);
const clauseU64 = new BigUint64Array(clauseBuf.buffer);
const outIndex = new Uint32Array(1);
const outTicket = new Uint32Array(1);

/**
 * Whether `value` is a thenable (a getter or proxy that throws counts as none); if so, its
 * rejection is handled (given to `onRejected`), so that it cannot end the process as an
 * unhandled rejection.
 */
function handleThenable(value: unknown, onRejected: (e: unknown) => void = () => {}): boolean {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return false;
  try {
    const then = (value as { then?: unknown }).then;
    if (typeof then !== "function") return false;
    then.call(value, undefined, onRejected);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits for the first clause `build` registers to fire and resolves with its handler's result;
 * the rules are in README.md, "Select from TypeScript". Rejects with a TypeError for a select
 * without clauses.
 *
 * @example
 * ```ts
 * import { Channel, select } from "../mod.ts";
 * import assert from "node:assert/strict";
 * using ch = new Channel<number>();
 * const ctl = new AbortController();
 * const waiting = select<number>((s) => s.onReceive(ch, (v) => v), { signal: ctl.signal });
 * ctl.abort(new Error("stop"));
 * await assert.rejects(waiting, { message: "stop" });
 * // A closed channel: onReceiveCatching fires with the closed result.
 * ch.close();
 * assert.deepEqual(
 *   await select<unknown>((s) => s.onReceiveCatching(ch, (r) => r)),
 *   { state: "closed" },
 * );
 * ```
 */
export function select<R>(
  build: (s: SelectBuilder<R>) => void,
  options: SelectOptions = {},
): Promise<R> {
  const op = "select";
  try {
    checkFunction(op, "build", build);
    checkOptions(op, options);
    const { signal, unbiased = false } = options;
    checkOptionNames(op, options, SELECT_OPTIONS);
    checkSignal(op, signal);
    // As every other flag option: "yes" or 0 said nothing about which the caller meant.
    if (typeof unbiased !== "boolean") {
      throw new TypeError(
        `Cannot ${op}: unbiased must be a boolean, received ${describe(unbiased)}`,
      );
    }
    const b = new Builder();
    const built: unknown = build(b as SelectBuilder<unknown> as SelectBuilder<R>);
    const clauses = sealBuilder(b); // no clause is added from now on
    if (clauses.length === 0) {
      // An async builder that awaited before its first clause: its clauses come after the
      // select was built, each a TypeError ("built already") rejecting the builder's promise,
      // which nobody awaited, so Deno ended the process with it, while the select rejected
      // saying no clause was added at all. That promise is handled here (its late clauses were
      // refused: what this error reports), and the error says what went wrong.
      if (handleThenable(built)) {
        throw new TypeError(
          `Cannot ${op}: build must add its clauses before it returns (an async builder's ` +
            `clauses after its first await come too late), received a promise and no clause`,
        );
      }
      throw new TypeError(`Cannot ${op}: a select needs at least one clause, received none`);
    }
    if (signal !== undefined && isAborted(signal)) {
      handleThenable(built); // its late clauses' errors: the select rejected already
      refuseAborted(clauses);
      return Promise.reject(abortReason(signal));
    }
    if (unbiased) shuffle(clauses);
    const selection = new Selection(clauses, channelsOf(b), signal);
    const result = selection.run() as Promise<R>;
    // An async builder that adds a clause after an await (or fails after it): its promise
    // rejects ("built already"), which nobody awaited, an unhandled rejection that ended the
    // process, also when the clauses before the await had made a select. The select, if still
    // waiting, rejects with that error as an aborted one does (a receive clause's value taken
    // meanwhile goes back); once settled, a clause won and the late clause could never have
    // been added: the rejection is dropped.
    handleThenable(built, (e) => selection.buildFailed(e));
    return result;
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * A select whose signal had aborted before it began: no clause fires, and each `onSend`
 * clause's value, cancelled before it was sent, goes to its channel's undelivered path, in
 * clause order, as a `send` given an aborted signal hands its value (counted as dropped; a
 * copy's to the creator's hook). Not a value its channel's codec cannot carry (that clause
 * would have failed the select), nor one for a channel disposed or whose library closed (a
 * send there refuses it unhooked). Before, the values stayed the caller's.
 */
function refuseAborted(clauses: Clause[]): void {
  for (const c of clauses) {
    if (c.kind !== SEND) continue;
    const ch = c.ch!;
    if (disposedOf(ch) || !isLibraryOpen(libraryOf(ch))) continue;
    try {
      checkValueOf(ch, c.value);
    } catch {
      continue; // not a value this channel can carry: never the hook's
    }
    try {
      refusedOf(ch, c.value);
    } catch (e) {
      reportUncaught(e); // an encoding failing: not expected (the hook's own errors are caught)
    }
  }
}

/** Fisher-Yates: probing in a uniformly random order picks uniformly among the ready clauses. */
function shuffle(a: Clause[]): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

/** One select in flight. `clauses` are in probe order. */
class Selection implements RingOp {
  ticket = 0;
  keepsAlive = false;
  readonly clauses: Clause[];
  readonly nChannels: number;
  readonly signal: AbortSignal | undefined;
  /** The channel clauses, in probe order (their index in the native clause array). */
  readonly native: Clause[] = [];
  lib: Library | undefined = undefined;
  bridge: Bridge | undefined = undefined;
  /** The native select is queued on the ring. */
  queued = false;
  /** The ring said KC_EBUSY to an abort: a channel clause won, its record settles the select. */
  completing = false;
  /**
   * It was aborted (its signal, or a `Channel.from` copy disposed) and the abort lost to a
   * channel clause: a receive clause that took a value gives it back to its channel and the
   * select rejects with `reason` (`complete`); a send clause that fired is honoured.
   */
  gaveUp = false;
  reason: unknown = undefined;
  /**
   * The give-up that stays (`gaveUp`, `reason`) is its signal's abort: a cancellation, so the
   * send clauses' values, none sent, go to their channels' undelivered path as an aborted
   * send's does (not for a copy's dispose, an async builder's failure).
   */
  cancelled = false;
  done = false;
  resolve!: (v: unknown) => void;
  reject!: (e: unknown) => void;
  /** The timeout clauses' cancel functions. */
  readonly timers: (() => void)[] = [];
  readonly disposers: Disposable[] = [];
  onAbort: (() => void) | undefined = undefined;
  /**
   * Copies whose holds it keeps until it settled (`#giveSlots` gives them back): disposed while
   * it completed (`channelDisposed`), or with a value to refuse as it settles (`#settleNative`).
   */
  keptHolds: Channel<unknown>[] = [];
  /**
   * Its channel clauses are counted on their channels (`Shared.countSelect`): from its queueing
   * natively until it settles (`#cleanup`).
   */
  counted = false;

  constructor(clauses: Clause[], nChannels: number, signal: AbortSignal | undefined) {
    this.clauses = clauses;
    this.nChannels = nChannels;
    this.signal = signal;
  }

  /**
   * Every channel it waits on never left this isolate's JavaScript (`insideOf`: made
   * native by a select, its handle never read or shared): only this isolate's own calls can
   * complete it, so it keeps no ring wait outstanding (`RingOp.inside`). One outside channel
   * makes the whole select outside.
   */
  inside(): boolean {
    for (const c of this.native) if (!insideOf(c.ch!)) return false;
    return true;
  }

  run(): Promise<unknown> {
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    this.resolve = resolve;
    this.reject = reject;
    try {
      this.#start();
    } catch (e) {
      if (this.done || this.completing) {
        // A clause won before the throw (a job's handler run at once by its invokeOnCompletion,
        // which then returned no Disposable, or threw): that win settled the select and cleaned
        // up, so the error is dropped (the select's outcome stands, as for an async builder's
        // late failure). Before, this cleaned up a second time (the job Disposables disposed
        // twice) and rejected, while the winner's handler still ran afterwards; then the error
        // was reported (an error event nobody handles, which ends the process). A channel
        // clause's record still to come (`completing`): it gives up with the error (`#giveUp`,
        // as the start's failure rejects a select it withdrew, below), unless an abort did
        // first; before, it was reported, and the receive clause fired.
        if (!this.done) this.#giveUp(e);
        return promise;
      }
      let free = true;
      if (this.queued) {
        // Thrown after the native select was queued (arming a JavaScript clause: a Job whose
        // invokeOnCompletion throws; the signal's listen): withdrawn first. Before, it stayed
        // queued with its values freed: a receiver then got a send's freed buffer, from a
        // select that rejected. Uncounted: the select failed, nothing cancelled it.
        const rc = this.bridge!.abort(this, true);
        if (rc === Status.EBUSY) {
          // A channel clause won first: its record settles the select, which gives up with the
          // error as above (a receive clause's value goes back to its channel; a send clause
          // that won was delivered, and fires). Before, the error was reported (ending the
          // process) and the receive clause fired unless the signal then aborted.
          this.completing = true;
          this.#giveUp(e);
          return promise;
        }
        this.queued = false;
        free = rc === 0; // else its ring is gone, its values with it (see `#jsWins`)
      }
      if (free) this.#freeValues(-1);
      this.#giveSlots();
      this.done = true;
      this.#cleanup();
      reject(e);
    }
    return promise;
  }

  #start(): void {
    const clauses = this.clauses;
    // Encode the values to send and fill the native clause array, in probe order.
    let firstReadyJs = -1;
    let prefix = 0; // channel clauses before the first ready JavaScript clause
    let def: Clause | undefined;
    for (let i = 0; i < clauses.length; i++) {
      const c = clauses[i];
      if (c.ch !== undefined) {
        this.#addNative(c);
        prefix = this.native.length;
      } else if (c.kind === TIMEOUT) {
        if (c.ms! <= 0) def ??= c;
      } else {
        // Kotlin's onJoin / onAwait start a lazy job, but only while no earlier clause is
        // selected: the channel clauses before it are probed first.
        // A kcoro Job's own state (`jobStateOf`, `isCompletedJob`), not a getter a caller
        // redefined on its prototype; a Job of another kind's, as it answers.
        const job = c.job!, callers: Job = job; // `callers`: one of another kind, its own
        if ((isKcoroJob(job) ? jobStateOf(job) : callers.state) === "new") {
          // An immediate default before it is selected whatever a lazy job would do (Kotlin
          // selects onTimeout(0) while registering and registers nothing after it): not
          // started. Nor when a channel clause before it is ready.
          if (def !== undefined) continue;
          if (this.#probe(prefix)) return;
        }
        startJob(job); // a kcoro Job's own start (not a redefined one); another's, its own
        // Final, its handlers run (those still waiting, ended deep in other handlers, run now,
        // as a join's: `handlersRanOf`; too deep for that, it waits behind them below). Before,
        // the clause fired ahead of them, and of the joins made before that they resume.
        if ((isKcoroJob(job) ? isCompletedJob(job) : callers.isCompleted) && handlersRanOf(job)) {
          firstReadyJs = i; // it wins unless a channel clause before it is ready
          break;
        }
      }
    }
    // Probe: the channel clauses before the first ready JavaScript clause, in one call.
    if (this.#probe(prefix)) return;
    if (firstReadyJs >= 0) {
      this.#fireJs(clauses[firstReadyJs]);
      return;
    }
    if (def !== undefined) {
      this.#fireJs(def);
      return;
    }
    // Wait: the channel clauses natively, the others in JavaScript.
    if (this.native.length > 0) {
      const lib = this.lib = libraryOf(this.native[0].ch!);
      const bridge = this.bridge = Bridge.of(lib);
      const sym = symbolsOf(this.native[0].ch!, "select");
      // A clause on a channel known to have ended (the lazy jobs started above ran the caller's
      // code) is given `ENDED_HANDLE` (`#fill`): KC_EBADH, with nothing queued (every handle is
      // looked up before any clause acts).
      this.#fill();
      const rc = sym.kc_select_async(
        clauseBuf,
        this.native.length,
        0,
        bridge.ring,
        outTicket,
        outIndex,
      );
      if (rc !== 1) {
        // A channel ended by its creator since the probe: its clause is ready (`#firedEnded`).
        if (rc === Status.EBADH && this.#firedEnded(this.native.length)) return;
        // Ready after all (a partner arrived between the probe and now).
        if (rc !== 0 && rc !== Status.EPIPE && rc !== Status.ECANCELED) {
          unwrap(rc, "select");
        }
        this.#fireNativeNow(outIndex[0], rc);
        return;
      }
      this.ticket = outTicket[0];
      this.queued = true;
      bridge.track(this);
      // A send (receive) of this isolate that succeeds natively on one of its channels may
      // complete it: while counted there, that call settles it before it returns (channel.ts,
      // `Shared.selectReceives`).
      this.counted = true;
      for (const c of this.native) sharedStateOf(c.ch!).countSelect(c.kind === SEND, 1);
      for (const c of this.native) {
        // A `Channel.from` copy's dispose ends the select (`channelDisposed`).
        const d = watchDisposeOf(c.ch!, this);
        if (d !== undefined) this.disposers.push(d);
      }
    }
    for (const c of clauses) {
      // A job's handler runs at once when the job is final already (one an earlier lazy clause
      // completed): that clause won and cleaned up, or lost to a channel clause that completed
      // meanwhile (`completing`); arm nothing after it.
      if (this.done || this.completing) break;
      if (c.kind === TIMEOUT) {
        this.timers.push(timer(c.ms!, () => this.#jsWins(c))); // any length, Infinity never
      } else if (c.kind === JOIN || c.kind === AWAIT) {
        const d: unknown = onJobCompletion(c.job!, () => this.#jsWins(c)); // as startJob
        // A Job of the caller's own may return anything: checked before it is kept. Before,
        // the cleanup of the select's end threw at it ("d[Symbol.dispose] is not a function",
        // reported uncaught) before the winning handler was called: the select never settled.
        // Its read may throw (a CoroutineScope or Runtime returned: their `Symbol.dispose` is a
        // getter that refuses a sync dispose, `refuseSyncDispose`; a Proxy's trap): the same
        // named error, what it threw its cause. Before, that class's "Cannot dispose ...
        // synchronously" rejected the select, naming nothing of select's.
        let dispose: unknown;
        let threw: { cause: unknown } | undefined;
        try {
          dispose = (d as Disposable | null)?.[Symbol.dispose];
        } catch (e) {
          threw = { cause: e };
        }
        if (typeof dispose !== "function") {
          throw new TypeError(
            `Cannot select: a job's invokeOnCompletion must return a Disposable, received ${
              describe(d)
            }`,
            threw,
          );
        }
        if (!this.done) this.disposers.push(d as Disposable);
        // Settled as it was armed (its handler run at once, or a close or cancel of this
        // isolate, run by the arming, settled a channel clause: `Bridge.settleWhere`): the
        // cleanup ran before this Disposable came, so it is disposed here, unregistering the
        // handler. Before, it was kept and never disposed.
        else disposeReporting(d as Disposable);
      }
    }
    this.#listen();
  }

  /**
   * Listens to the signal once the clauses are armed, unless the select settled already; also
   * while a channel clause's record is to come (`completing`: a JavaScript clause lost to it as
   * it was armed), as an abort until that record is taken still gives up (`#jsWins`). Before,
   * such a select never listened, and the receive clause fired though the signal had aborted.
   */
  #listen(): void {
    if (this.done) return;
    const signal = this.signal;
    if (signal !== undefined) {
      // Only once the signal aborted: a call before (the caller's code that reached the listener
      // through the engine's listeners property) changes nothing. Before, the select gave up
      // with undefined.
      // Passing itself: one an "abort" Event that is no abort called listens again (`abortHeard`).
      // As `this.onAbort`, set once per select (`#listen` runs once): a block-scoped const the
      // closure captured cost a context object per select.
      this.onAbort = (event?: Event) => {
        if (abortHeard(signal, this.onAbort!, event)) this.#jsWins(undefined);
      };
      // Aborted since it was checked (a value's getter, encoding it, ran the caller's code), or
      // during the listen (an accessor of the caller's that the engine's listen reached): the
      // event will not come, and `listenAbortNamed` calls it (before, a select whose signal aborted
      // during the listen waited on for a clause). By AbortSignal's own members.
      // A listen that throws (an accessor of the caller's for the engine's listeners property)
      // throws the named error ("Cannot select: signal must be one that can be listened to",
      // the listen's error its cause), as createScope refuses such a signal; before, the
      // listen's raw error. `run`'s catch settles it as any throw of the start: settled already
      // (that code aborted the signal once kcoro's listener was in: the engine called it), the
      // select keeps its outcome (the signal's reason); a channel clause's record still to come
      // (`completing`), it gives up with the error, as for an abort (`#jsWins`), unless an abort
      // did first (before, both went to `reportError`: an error event nobody handles, which ends
      // the process); else it is withdrawn and rejects with the error, or gives up with it when
      // a channel clause completed meanwhile (that code sent to, or received from, one of its
      // channels).
      listenAbortNamed("select", signal, this.onAbort);
    }
  }

  /**
   * A select whose channel clause's record is still to come (`completing`) gives up with
   * `reason`, as an abort then does (`#jsWins`; `complete` settles it), unless something gave it
   * up first (an abort, an async builder's failure, a copy's dispose): the first reason stays.
   */
  #giveUp(reason: unknown): void {
    if (this.gaveUp) return;
    this.gaveUp = true;
    this.reason = reason;
  }

  /**
   * Polls the first `n` channel clauses at once: true if one was ready and fired. Operations of
   * this isolate still waiting in JavaScript (channel.ts) queue natively first, so that the
   * native select sees them.
   */
  #probe(n: number): boolean {
    if (n === 0) return false;
    for (let i = 0; i < n; i++) flushLocalOf(this.native[i].ch!);
    const sym = symbolsOf(this.native[0].ch!, "select");
    this.#fill(); // an ended channel's clause: KC_EBADH (see `#fill`)
    const rc = sym.kc_select(clauseBuf, n, 0n, 0, KC_SELECT_POLL, outIndex);
    if (rc === Status.EAGAIN) return false;
    if (rc === Status.EBADH && this.#firedEnded(n)) return true;
    // A channel destroyed under its object never fails it here: `#firedEnded` fired its clause.
    if (rc !== 0 && rc !== Status.EPIPE && rc !== Status.ECANCELED) unwrap(rc, "select");
    this.#fireNativeNow(outIndex[0], rc);
    return true;
  }

  /**
   * Channel clause `index` fired as it was probed or queued (`rc`, not from a record): as
   * `#fireNative`, then the operation of this isolate it completed (its partner: a receive or
   * another select's receive clause for a send clause, a send or a send clause for a receive
   * clause), queued natively on that channel, settles now (`settleMetOf`), before this
   * select's handler runs, as a plain send settles the receive it completes. Before, it settled
   * when the ring drained, and an abort in between rejected a receive clause whose value this
   * select had sent, the value put back into the channel.
   */
  #fireNativeNow(index: number, rc: number): void {
    this.#fireNative(index, rc, false);
    if (rc === 0) settleMetOf(this.native[index].ch!, this.native[index].kind === SEND);
  }

  /**
   * The native select of the first `n` channel clauses said KC_EBADH: a clause on a channel
   * destroyed under its object (`creatorEndedOf`: a `Channel.from` copy whose creator
   * ended the channel, an owner whose channel native code destroyed) is ready, as on a
   * cancelled channel. The clauses before the first such one are probed first (the order
   * the native select probes in); if none of them fires, it fires with KC_ECANCELED (a send
   * clause rejects with the CancellationError, its value not delivered; `onReceiveCatching`
   * gets `closed`). True once a clause fired; false when no clause's channel ended (the
   * status is then the caller's to throw).
   */
  #firedEnded(n: number): boolean {
    for (let i = 0; i < n; i++) {
      if (!creatorEndedOf(this.native[i].ch!)) continue;
      if (!this.#probe(i)) this.#fireNative(i, Status.ECANCELED, false);
      return true;
    }
    return false;
  }

  #addNative(c: Clause): void {
    const ch = c.ch!;
    // On an inside channel (`insideOf`) this also schedules the drain of the records
    // the native select may write for this isolate's own waits on it (`Bridge.touch`).
    const sym = symbolsOf(ch, c.kind === SEND ? "select: send" : "select: receive");
    c.slot = takeSlot();
    if (c.kind === SEND) {
      try {
        // Its CodecError names the call ("Cannot select: ..."), as select's other errors do:
        // before, "Cannot send: ...", a call the caller never made.
        codecOf(ch).encode(c.value, c.slot, sym, "select");
      } catch (e) {
        giveSlot(c.slot); // nothing was encoded into it; the select fails
        c.slot = undefined;
        throw e;
      }
      c.encoded = true;
    }
    this.native.push(c);
  }

  /**
   * Writes the native clause array (shared by every select: filled right before each call, as
   * encoding a value may run user code that starts another select).
   */
  #fill(): void {
    for (let i = 0; i < this.native.length; i++) {
      const c = this.native[i];
      const ch = c.ch!;
      // Used while the select holds ch. `ENDED_HANDLE` once the channel ended under its object
      // (`Channel.#handle`: its value may name a later channel by now, its slot's generation
      // wrapped), which the native select answers with KC_EBADH (`#firedEnded`). Read right
      // before each call: nothing runs between.
      clauseU32[6 * i] = selectHandleOf(ch);
      clauseU32[6 * i + 1] = c.kind === SEND ? 0 : 1;
      clauseU32[6 * i + 2] = codecOf(ch).elemSize;
      clauseU32[6 * i + 3] = 0;
      clauseU64[3 * i + 2] = c.slot!.addr;
    }
  }

  /**
   * The builder's promise (an async builder) rejected after the select began: it ends as if
   * aborted, with that error (nothing once it settled).
   */
  buildFailed(e: unknown): void {
    // `undefined` would read as "the signal's reason" (`#jsWins`), which a select without a
    // signal has none of.
    const reason = e !== undefined ? e : new TypeError(
      "Cannot select: build's promise rejected with no reason, received undefined",
    );
    this.#jsWins(undefined, reason);
  }

  /**
   * A `Channel.from` copy one of its clauses waits on was disposed: it ends as if aborted, with
   * the InvalidHandleError a select begun after the dispose throws. True when it keeps the
   * copy's hold until it settled (below).
   */
  channelDisposed(ch: Channel<unknown>): boolean {
    this.#jsWins(undefined, new InvalidHandleError("Cannot select: the channel was disposed"));
    // Completed natively first (its record still to come) with a send clause's value encoded
    // for `ch`: a channel's end that failed the select refuses that value through `ch`
    // (`#freeValues`), which needs the channel live. The copy's hold stays until the select
    // settled (`#giveSlots` gives it back): before, the dispose gave it back at once, and the
    // refusal, given the ended-handle marker, freed the value unseen.
    if (!this.completing || this.done) return false;
    if (!this.native.some((c) => c.ch === ch && c.encoded)) return false;
    this.keptHolds.push(ch);
    return true;
  }

  /**
   * A JavaScript-side clause (or the abort, `c` undefined, rejecting with `reason`: the signal's
   * unless given) wants to win. The abort counts a cancelled failure on each channel (as an
   * aborted plain wait does), and an `onTimeout` that fires a timeout failure on each (as a
   * native select given up at its deadline does); a job or deferred that wins fails nothing, its
   * channel clauses just lost (as to another channel clause).
   */
  #jsWins(c: Clause | undefined, reason?: unknown): void {
    if (this.done) return;
    // The signal's abort (no clause, no reason of another give-up): a cancellation.
    const abort = c === undefined && reason === undefined;
    if (this.completing) {
      // A channel clause won first (an `onTimeout`, job or deferred got KC_EBUSY) and its
      // record is not drained yet: an abort now gives up as one that got that KC_EBUSY itself
      // does (`complete`: a receive clause's value goes back, the select rejects with the
      // reason; a send clause that won still fires). Before, it was ignored: the clause fired
      // though the signal had aborted before the select settled, and a caller that had moved
      // on dropped the value.
      if (c === undefined && !this.gaveUp) {
        this.#giveUp(reason ?? abortReason(this.signal!));
        this.cancelled = abort;
      }
      return;
    }
    if (this.queued) {
      const rc = this.bridge!.abort(this, c !== undefined);
      if (rc === Status.EBUSY) {
        this.completing = true; // a channel clause won first: its record settles the select
        // Through `#giveUp`, as every give-up is, so that one rule says which reason stays: the
        // first. It set `reason` itself, which would have overwritten an earlier one; none can
        // be earlier here (every give-up comes once `completing` is set, here or in `run`).
        if (c === undefined) {
          this.#giveUp(reason ?? abortReason(this.signal!));
          this.cancelled = abort;
        }
        return;
      }
      this.queued = false;
      if (rc !== 0) {
        // Neither withdrawn nor completed first (KC_EBADH: its ring is gone): no record will
        // come, so it fails now. Before, it was taken for completed and waited for ever. Its
        // send clauses' values went to the native side when it queued (a ring's teardown hands
        // them to their channels): not freed here.
        this.#giveSlots();
        this.done = true;
        this.#cleanup();
        this.reject(ringLostError(rc, "select", true));
        return;
      }
      if (c !== undefined && c.kind === TIMEOUT) this.#countTimeout();
    }
    if (c === undefined) {
      // Aborted: each send clause's value, not sent, to its channel's undelivered path (as an
      // aborted send's: Kotlin's cancelled select disposes its clauses, each waiting `onSend`
      // handing its element to its channel's onUndeliveredElement). Another give-up (a copy's
      // dispose, an async builder's failure) leaves them the caller's.
      this.#freeValues(-1, false, abort);
      this.#giveSlots(); // withdrawn, or never queued
      this.done = true;
      this.#cleanup();
      this.reject(reason ?? abortReason(this.signal!));
      return;
    }
    this.#fireJs(c);
  }

  /**
   * One timeout failure on each distinct channel of the withdrawn native select (its channel's
   * counters, reported with the turn's others), as `countGiveUp` counts a native select's
   * deadline. Before, an `onTimeout` win counted nothing.
   */
  #countTimeout(): void {
    const seen: unknown[] = [];
    for (const c of this.native) {
      const shared = sharedStateOf(c.ch!); // one per native channel in this isolate
      if (seen.includes(shared)) continue;
      seen.push(shared);
      countTimeoutOf(c.ch!);
    }
  }

  /**
   * Its native wait was withdrawn as the library closes (see `RingOp.withdrawn`): each send
   * clause's value was not sent, and goes to its channel's onUndeliveredElement, as a plain
   * send's withdrawn by the close does (before, it was only freed).
   */
  withdrawn(): void {
    this.queued = false;
    if (this.done) return;
    try {
      this.#freeValues(-1, true);
    } finally {
      this.#giveSlots();
      this.done = true;
      this.#cleanup();
      this.reject(new LibraryClosedError("select"));
    }
  }

  /**
   * Its ring is gone (see `RingOp.lost`): no record will come, so it fails now, as a withdrawal
   * that failed fails it (`#jsWins`): its send clauses' values went to the native side when it
   * queued (a ring's teardown hands them to their channels), not freed here. One given up before
   * (`gaveUp`: its abort lost to a completion whose record went with the ring) with receive
   * clauses only rejects with its own reason, as that record would have settled it (the ring's
   * teardown gives the value back), as a plain receive does (channel.ts, `#lost`). Before, with
   * the ring's error, though its signal had aborted first. With a send clause, the ring's error:
   * had that clause won, its record would have fired it (the value delivered).
   */
  lost(status: number): void {
    this.queued = false;
    if (this.done) return;
    this.#giveSlots();
    this.done = true;
    this.#cleanup();
    const own = this.gaveUp && !this.native.some((c) => c.kind === SEND);
    this.reject(own ? this.reason : ringLostError(status, "select"));
  }

  /** The per-isolate state of clause `index`'s channel (`Bridge.settleWhere`'s picks). */
  channelAt(index: number): unknown {
    const ch = this.native[index]?.ch;
    return ch == null ? undefined : sharedStateOf(ch);
  }

  /** Whether clause `index` is a send clause (`Bridge.settleWhere`'s picks). */
  sendsAt(index: number): boolean | undefined {
    const c = this.native[index];
    return c === undefined ? undefined : c.kind === SEND;
  }

  /** The ring's record for the queued native select. */
  complete(status: number, index: number): void {
    this.queued = false;
    const c = this.native[index];
    const lib = this.lib!;
    if (!isLibraryOpen(lib)) {
      this.#completedClosed(c, status, index);
      return;
    }
    if (c === undefined) {
      this.#badRecord(status, index);
      return;
    }
    const value = status === 0 && c.kind !== SEND;
    if (value && this.gaveUp) {
      // Aborted after a receive clause took a value (`#jsWins`): the value goes back to its
      // channel, in front, and the select rejects with the abort's reason, no clause fired.
      // Before, the clause fired though the signal had aborted, and a caller that had moved on
      // dropped the value.
      this.bridge!.giveBack(this);
      try {
        // The send clauses were not sent: to the hooks where its signal aborted (`cancelled`),
        // else their values stay the caller's.
        this.#freeValues(-1, false, this.cancelled);
      } finally {
        this.#giveSlots();
        this.done = true;
        this.#cleanup();
        afterGiveBackOf(c.ch!); // refused (closed and drained, or full with a drop policy)
        this.reject(this.reason);
      }
      return;
    }
    if (
      this.gaveUp && (status === Status.EPIPE || status === Status.ECANCELED) &&
      !(c.kind === SEND && status === Status.ECANCELED)
    ) {
      // Aborted after a clause's channel closed or was cancelled (its record not drained yet):
      // that outcome moved nothing, so the abort's reason wins, as a native select's own token
      // wins over it (KC_EINTR) and Kotlin's prompt cancellation throws the cancellation.
      // Before, the select settled as closed (onReceiveCatching's handler ran). A send clause
      // that a cancel failed keeps its CancellationError: its value went to the hook.
      this.bridge!.take(this, null, 0);
      try {
        this.#freeValues(-1, false, this.cancelled); // no send clause was sent: as above
      } finally {
        this.#giveSlots();
        this.done = true;
        this.#cleanup();
        endedOf(c.ch!);
        this.reject(this.reason);
      }
      return;
    }
    const rc = this.bridge!.take(this, value ? c.slot! : null, value ? codecOf(c.ch!).elemSize : 0);
    if (rc < 0 && value) {
      // The ring is gone after this record was drained (see `Channel.#completed`): the value
      // went back to its channel, none was copied. Before, the clause fired with the slot's
      // stale bytes.
      this.lost(rc);
      return;
    }
    this.#fireNative(index, status, true);
  }

  /**
   * `complete` after the library's close (`Bridge.#closed`): a record drained before the ring's
   * destroy (held past the close's last round, or landed after the withdrawals' deadline), or
   * none (KC_ECANCELED, clause 0: cut off by the close). A clause that took effect fires, as it
   * would open: a send clause delivered (its value is its receiver's: reported failed, its
   * caller would send it again), a receive clause with the value it took; the other send
   * clauses' values stay the caller's, freed here once the ticket is taken (the raw symbols
   * outlive the close). A select given up rejects with its reason, settled as open (`complete`)
   * where its record came before the ring's destroy: a value a receive clause took goes back to
   * its channel (`giveBack`), and the send clauses' values, none sent, go to their channels'
   * undelivered path where its signal aborted it (as open), else stay the caller's (freed here,
   * no hook). Before, its ticket was left to the destroy, which handed them to their
   * channels' undelivered path: a value reported not sent reached onUndeliveredElement. Cut
   * off (after the destroy, `Bridge.destroyed`), it rejects so too. Any other rejects with
   * LibraryClosedError: the send clauses' values are the ring's, whose teardown hands each one
   * not sent to its channel's undelivered path (zig-src/bridge/ring.zig, `dropUnsent` and
   * `dropLosers`); freeing them here too would free them twice. Before, every one failed with
   * LibraryClosedError, also a select whose send clause was delivered, and one given up.
   */
  #completedClosed(c: Clause | undefined, status: number, index: number): void {
    if (
      this.gaveUp && c !== undefined && !this.bridge!.destroyed &&
      ((status === 0 && c.kind !== SEND) ||
        ((status === Status.EPIPE || status === Status.ECANCELED) &&
          !(c.kind === SEND && status === Status.ECANCELED)))
    ) {
      // As `complete`'s two branches for a select given up whose clause moved nothing of the
      // caller's: the ticket taken (a value given back), every send clause's value to its
      // channel's undelivered path where its signal aborted it (`cancelled`: a creator's hook
      // still runs, a copy's value is freed, the library being closed), else freed as the
      // caller's (`kept`: no hook).
      try {
        if (status === 0) this.bridge!.giveBack(this);
        else this.bridge!.take(this, null, 0);
        this.#freeValues(-1, false, this.cancelled, true);
      } finally {
        this.#giveSlots();
        this.done = true;
        this.#cleanup();
        this.reject(this.reason);
      }
      // A give-back refused (its channel closed and drained) left the value in the channel's
      // dropped list: to the hook at the end of the close's batch, as open (`complete`). Before,
      // it reached the hook only at the creator's dispose.
      if (status === 0) afterGiveBackOf(c.ch!);
      return;
    }
    // A receive clause given up keeps no value: the ring's destroy gives it back.
    let took = c !== undefined && status === 0 && (c.kind === SEND || !this.gaveUp);
    let value: unknown, failure: unknown, failed = false;
    try {
      if (took) {
        const recv = c!.kind !== SEND;
        const size = recv ? codecOf(c!.ch!).elemSize : 0;
        took = this.bridge!.take(this, recv ? c!.slot! : null, size) >= 0;
      }
      if (took) {
        this.#freeValues(index, false, false, true); // the others were not sent: the caller's
        if (c!.kind !== SEND) {
          try {
            const v = codecOf(c!.ch!).decode(c!.slot!, symbolsToReleaseOf(libraryOf(c!.ch!)));
            value = c!.kind === RECV ? v : { state: "ok", value: v };
          } catch (e) {
            failure = e;
            failed = true;
          }
        }
      }
    } finally {
      this.#giveSlots();
      this.done = true;
      this.#cleanup();
    }
    if (failed) this.reject(failure);
    else if (took) this.#call(c!.fn, value);
    else {
      this.reject(this.gaveUp ? this.reason : new LibraryClosedError("select"));
      // No clause fired: a send clause a native cancel failed, and every one the ring's teardown
      // cut off (`dropUnsent`), left its value in its channel's dropped list: to the hook at the
      // end of the close's batch (`Bridge.#closed`), as a plain send's (`Channel`'s
      // `#completedClosed`). Before, those values waited there until the creator's dispose.
      for (const s of this.native) if (s.kind === SEND) afterGiveBackOf(s.ch!);
    }
  }

  /**
   * A record naming no clause of this select (`index` out of range: corrupted, or another
   * operation's): it fails with an InvalidHandleError, cleaned up as a failed select is. Before,
   * it only rejected: its other clauses stayed registered natively (a receiver could still take
   * a send clause's value from the select that had failed) and the encoded values leaked.
   * - Still waiting natively (the record was not its): withdrawn, uncounted (nothing cancelled
   *   it). No clause fired, so every send clause's value is freed and goes to its channel's
   *   onUndeliveredElement, as a select cut off by the library's close hands them (`withdrawn`).
   * - Completed natively: its ticket is taken, which unlinks its losing clauses and frees its
   *   native state. Which clause fired is unknown, so the values are freed (and handed to the
   *   hook) only where none changed hands: a closed (KC_EPIPE) completion neither delivered a
   *   send's value nor gave it to the cancel's undelivered list. After a delivery or a cancel
   *   one of them belongs to its receiver (or to that list) and freeing it would free it twice:
   *   they are left, a leak only after a broken record.
   */
  #badRecord(status: number, index: number): void {
    let free = true;
    if (this.bridge!.abort(this, true) !== 0) {
      this.bridge!.take(this, null, 0);
      free = status === Status.EPIPE;
    }
    try {
      if (free) this.#freeValues(-1, true);
    } finally {
      this.#giveSlots();
      this.done = true;
      this.#cleanup();
      this.reject(
        new InvalidHandleError(
          `Cannot select: the completion record names no clause of this select, received clause ${index}`,
        ),
      );
    }
  }

  /** Channel clause `index` (of `native`) completed with `status`. */
  #fireNative(index: number, status: number, queued: boolean): void {
    try {
      this.#settleNative(index, status, queued);
    } finally {
      this.#giveSlots(); // native code is done with them: the select completed
    }
  }

  #settleNative(index: number, status: number, queued: boolean): void {
    const c = this.native[index];
    // A clause that its channel's close or cancel failed rejects the select, no handler run
    // (onReceiveCatching fires instead): then every other send clause's value goes to its own
    // channel's undelivered path too (`#freeValues`' `refused`), once its own went (the same
    // channel's in clause order). Kotlin's select disposes its other clauses, each onSend handing
    // its element to its channel's onUndeliveredElement (BufferedChannel's
    // SenderWithOnUndeliveredElementCancellationHandler); kcoro does that only here, where the
    // caller learns of no clause: told "cancelled" by one of two channels cancelled in a turn, it
    // could not know which value a hook had (the other's was freed, reaching no hook). A win
    // leaves them the caller's (README argues that difference); the caller's abort hands them
    // to the hooks (`cancelled`), as an aborted send's value is.
    const failed = (status === Status.EPIPE || status === Status.ECANCELED) &&
      c.kind !== RECV_CATCHING;
    if (!failed) {
      this.#freeValues(index);
      this.#settleClause(c, status, queued);
      return;
    }
    // A hook that the refusals below run (the failing channel's, or an earlier clause's) may
    // dispose a `Channel.from` copy whose clause's value is still to be refused: each copy with
    // one keeps its hold until the select settled (`#giveSlots`), as a copy disposed before the
    // record does (`channelDisposed`). Before, that dispose (the select no longer watching) gave
    // the hold back, and the value, refused through the ended-handle marker, reached no hook.
    for (const x of this.native) {
      if (x.encoded && keepHeldOf(x.ch!)) this.keptHolds.push(x.ch!);
    }
    c.encoded = false; // a send clause's own value is settled in #settleClause
    try {
      this.#settleClause(c, status, queued);
    } finally {
      this.#freeValues(-1, false, true);
    }
  }

  #settleClause(c: Clause, status: number, queued: boolean): void {
    const ch = c.ch!;
    this.done = true;
    this.#cleanup();
    const sym = librarySymbols(libraryOf(ch), "select");
    if (status !== 0 && !(queued && status === Status.ECANCELED && c.kind === SEND)) endedOf(ch);
    if (c.kind === SEND) {
      if (status !== 0) {
        // Not sent: cancel kept it for onUndeliveredElement, or it goes there now (Kotlin's
        // `onClosedSelectOnSend`). Before, a closed or cancelled channel's was only freed.
        // Kept by a cancel: the hook runs once the select has rejected, as a plain send's
        // (`Channel.#settleWith`). Before, it ran first, and a close of another channel it made
        // settled that channel's waits ahead of the select.
        if (queued && status === Status.ECANCELED) {
          this.reject(sendErrorOf(ch, status));
          afterSendOf(ch, status, queued);
          return;
        }
        // Refused at once, ahead of the rejection: reached only with `queued` false, at the
        // select's call (`#start`: its probe, its queueing answered ready, `#firedEnded`), never
        // from a record, which a ring drain settles (a queued send clause's record never says
        // KC_EPIPE: a native close fails receivers and watches only, zig-src/chan/channel.zig
        // `closeFrom`; its KC_ECANCELED is taken above, the hook left to the drain's end).
        // So this is the call's own value, refused as a plain `send`'s is on a closed or
        // cancelled channel, local or shared (`#sendEnded`: the hook runs, then the call
        // rejects), after the waits of this isolate on the channel that the probe queued first
        // (`flushLocalOf`) have settled, in their own batch. No wait of a flush is left to
        // reject after it.
        if (status === Status.EPIPE || status === Status.ECANCELED) {
          refusedOf(ch, c.value, c.slot!);
        } else codecOf(ch).discard(c.slot!, sym);
        this.reject(sendErrorOf(ch, status));
        return;
      }
      afterSendOf(ch, status, queued);
      this.#call(c.fn);
      return;
    }
    if (status !== 0) {
      if (c.kind === RECV_CATCHING) this.#call(c.fn, closedResultOf(ch, status));
      else this.reject(receiveErrorOf(ch, status));
      return;
    }
    let v: unknown;
    try {
      v = codecOf(ch).decode(c.slot!, sym);
    } catch (e) {
      this.reject(e);
      return;
    } finally {
      afterReceiveOf(ch);
    }
    this.#call(c.fn, c.kind === RECV ? v : { state: "ok", value: v });
  }

  #fireJs(c: Clause): void {
    this.#freeValues(-1);
    this.#giveSlots(); // not queued natively (never, or withdrawn by the abort that got here)
    this.done = true;
    this.#cleanup();
    if (c.kind === AWAIT) {
      // Completed: await() settles with its value or its failure (which rejects the select).
      // In a promise: a Deferred of the caller's own may return a value or throw.
      new Promise((resolve) => resolve(awaitJob(c.job as Deferred<unknown>))) // as startJob
        .then((v) => this.#call(c.fn, v), this.reject);
      return;
    }
    this.#call(c.fn);
  }

  /** Runs the winning handler in a microtask (never inside a ring drain or a job's handler). */
  #call(fn: Fn, arg?: unknown): void {
    queueMicrotask(() => {
      try {
        this.resolve(fn(arg));
      } catch (e) {
        this.reject(e);
      }
    });
  }

  /**
   * Frees the encoded values of every send clause but `keep` (the one that was sent). With
   * `undelivered`, or where the library closed before the select was queued (a value's getter
   * or a lazy job's start closed it), each value also goes to its channel's
   * onUndeliveredElement, as a plain send's wait failed by the close does (`#failClosed`).
   * With `refused` (a channel's end failed the select: `#settleNative`), each goes to its
   * channel's undelivered path as a send refused by a closed channel's does (`refusedOf`:
   * counted as dropped, a copy's to the creator's hook).
   * Before, a closed library's copies were not freed at all (the library stays loaded: they
   * leaked) and no hook saw the values.
   * A clause whose release throws (nothing does in practice: the codecs are the library's own,
   * and onUndeliveredElement's errors are reported where it is called) does not stop the loop:
   * the later clauses' values are still freed (each `encoded` flag is cleared before its
   * release; before, they were left encoded, never freed), and each error goes to reportError,
   * as a hook's does. Never thrown: called before the select settles (a JavaScript clause's win,
   * an abort, a failed start, a channel clause's win), a throw cut the settling off, and the
   * select stayed pending for ever or rejected with the release's error instead.
   */
  #freeValues(keep: number, undelivered = false, refused = false, kept = false): void {
    for (let i = 0; i < this.native.length; i++) {
      const c = this.native[i];
      if (i === keep || !c.encoded) continue;
      c.encoded = false;
      try {
        if (refused) {
          // Frees the encoding, counts it dropped, and hands it to the hook once the batch of
          // settles under way (the ring drain's) has settled every wait it fails, as a cancel's
          // dropped sends' values reach it (`refusedSettledOf`). Before, the hook ran here, as
          // the select rejected: the later waits the same native cancel failed rejected after
          // it, and what it did (a close of another channel) settled ahead of them.
          refusedSettledOf(c.ch!, c.value, c.slot!);
          continue;
        }
        const lib = libraryOf(c.ch!);
        const open = isLibraryOpen(lib);
        codecOf(c.ch!).discard(
          c.slot!,
          open ? librarySymbols(lib, "select") : symbolsToReleaseOf(lib),
        );
        if (undelivered || (!open && !kept)) undeliveredOf(c.ch!, c.value);
      } catch (e) {
        reportUncaught(e);
      }
    }
    if (keep >= 0) this.native[keep].encoded = false;
  }

  /**
   * Gives the channel clauses' slots back for the next select (or wait), and the holds of the
   * copies disposed while it completed (`channelDisposed`): every way a select ends comes here,
   * after its values were refused or freed.
   */
  #giveSlots(): void {
    for (const c of this.native) {
      if (c.slot !== undefined) giveSlot(c.slot);
      c.slot = undefined;
    }
    const kept = this.keptHolds;
    if (kept.length > 0) {
      this.keptHolds = [];
      for (const ch of kept) releaseHeldOf(ch);
    }
  }

  /**
   * Stops watching the JavaScript clauses. A job's Disposable is the caller's own code when the
   * job is: what it throws is reported (reportError), and the cleanup goes on. Before, it was
   * thrown out of the cleanup, before the select settled: the select never settled (a ring
   * drain reported the error and went on without it), and the other jobs' Disposables and
   * the abort listener were left in place.
   */
  #cleanup(): void {
    if (this.counted) {
      this.counted = false;
      for (const c of this.native) sharedStateOf(c.ch!).countSelect(c.kind === SEND, -1);
    }
    for (const cancel of this.timers) cancel();
    for (const d of this.disposers) disposeReporting(d);
    // Never throws (`unlistenAbort`): before, a signal's own `removeEventListener` that threw
    // escaped the cleanup of a settled select, from inside another channel's pump too.
    if (this.onAbort !== undefined) unlistenAbort(this.signal!, this.onAbort);
  }
}

/**
 * Disposes a job's Disposable (`invokeOnCompletion`'s), the caller's own code when the job is:
 * what it throws is reported (reportError), so that the select's cleanup goes on.
 */
function disposeReporting(d: Disposable): void {
  try {
    d[Symbol.dispose]();
  } catch (e) {
    reportUncaught(e);
  }
}

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(Builder.prototype, "SelectBuilder");

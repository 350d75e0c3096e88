/**
 * `produce`: a task that sends into a channel it owns, and the channel, which is closed when the
 * task ends (kotlinx.coroutines' `produce`).
 *
 * Rules (Kotlin's):
 * - The block runs as a child task of the scope (`launch`): the scope waits for it, and its
 *   failure cancels the scope (unless a supervisor).
 * - When the task completes (its block returned and its children, which may send too, finished),
 *   the channel is closed: values sent stay receivable, then receivers see the channel closed
 *   (`for await` ends).
 * - When the block fails, or a child of the task does, the channel is closed with the error as
 *   its cause when the task is final (its children, being cancelled, finished), as Kotlin's
 *   `ProducerCoroutine.onCancelled(cause)` closes it as the coroutine completes: values sent
 *   stay receivable, then receivers get that error, the failure itself, and a receiver woken by
 *   it reads the task final. Before, it was closed at once, while the task read active (the
 *   block's own error) or cancelling, its children still running.
 * - That failure is its receivers': one no parent takes (a supervisor's child) is not reported
 *   to the CoroutineExceptionHandler too, unless the channel was closed before (by the block, a
 *   cancellation, its consumer), as Kotlin's `ProducerCoroutine.onCancelled` reports only what
 *   its channel's close did not take (`onUnhandledFailure`). One whose close at the task's end
 *   finds the channel closed after all (a completion handler of the block's ran first) is
 *   reported then (`end`): never lost.
 * - When the task is cancelled from outside (its scope cancelled, a sibling failing, a
 *   timeout), the channel is closed at once with the cancellation as its cause, also after
 *   the block returned while children of the task still run: values already sent stay
 *   receivable, then every receiver, Worker-side ones included, rejects with that
 *   `CancellationError`. Kotlin's scope's cancel (`parentCancelled`) closes it in `onCancelled`
 *   as the coroutine completes, after its children; here at once, so that receivers do not
 *   wait on children that can send nothing more (their sends are bound to the task: they reject
 *   once it is cancelling). The producer's own Job's `cancel()` (`task.cancel()`, the Job
 *   kcoro's `launch` returned) cancels the channel at once, dropping what is buffered, with the
 *   CancellationError the task is cancelled with, as Kotlin's `ChannelCoroutine.cancelInternal`
 *   does (`onOwnCancel`); before, it closed it as a scope's cancel does. A failure
 *   after a scope's cancel (a child's, while the task is cancelling) ends the task with it (the
 *   first failure wins) but leaves the channel's close as it was, the cancellation: Kotlin's
 *   closes with the failure at completion (README says why not here).
 * - While the task runs (its block, then its children), `out.send` is bound to the task: a
 *   producer or a child of it waiting in `send` is woken by the task's cancellation (it rejects
 *   with the cause; its value goes to onUndeliveredElement, as a send's made after the cancel
 *   does), as Kotlin's suspending `send` is. Waits of its
 *   own (`select`, `delay`, a fetch) take `task.signal`, as every task's do.
 * - Cancelling the channel (or disposing it) cancels the producer task, with the channel's own
 *   CancellationError, the very one its receivers get (Kotlin's `ProducerCoroutine` is a
 *   ChannelCoroutine, as an actor is): buffered values are dropped, as `cancel` drops them. A
 *   channel closed before the cancel (by the producer, or with a cause) keeps its close's cause
 *   for receivers, and the task gets the cancel's own cause (the cause itself when it is a
 *   CancellationError, else a "Channel was cancelled" carrying it, or none), as Kotlin's
 *   `ChannelCoroutine.cancel(cause)` cancels the coroutine with it.
 *   Also a cancel from another isolate (a Worker's
 *   `Channel.from` copy of its `share()`) or native code: while the task lives (launched, not
 *   complete) and the channel has escaped, a close watch on this isolate's ring
 *   (`watchCancelOf`, src/channel.ts) cancels the task at once, wherever it waits. So does native
 *   code's destroy of the channel (`kc_chan_destroy`), also one made before the task began, which
 *   the watch is told of (or finds as the handle gone, taken after it). A send that meets the
 *   destroyed channel, before the watch's cancel or after, rejects as on a cancelled channel (a
 *   CancellationError), which the block or a child of the task lets out as its cancellation, not
 *   a failure. Only `share()` and `handle` then throw InvalidHandleError (no live channel to hand
 *   out): the channel's own (`isOwnError`) ends the task cancelled too; another channel's
 *   that the block lets out is its failure, as any.
 * - The producer's isolate ending while the task lives (a Worker terminated, or ending by
 *   `self.close()`, with the channel shared to another isolate) cancels the channel natively:
 *   the watch is owned (`KC_WATCH_OWNED`), and the ring's going away with the thread honours it.
 *   It is taken at the channel's escape (its `share()`), also before the task first ran (a
 *   scope of the caller's own whose launch is lazy or defers it), and held until the task is
 *   complete: also after the block returned while children of the task still run, when the end
 *   cancels the channel, not closes it (Kotlin's producer is not complete until its children
 *   are). Consumers elsewhere then reject with a CancellationError whose message says the
 *   isolate running its producer ended (the `role` of the `share()` object names it), values
 *   still buffered are dropped (a cancel, not a clean end: a producer dying mid-flight is a
 *   failure the consumer must learn), and a process waiting on it can exit. A plain channel a
 *   Worker shared stays open when the Worker ends.
 *
 * The consumer owns the returned channel: dispose it (`using`) when done with it.
 *
 * @module
 */
import { isLibraryOpen } from "../ffi/load.ts";
import {
  cancelAfterCloseOf,
  cancelChannel,
  type Capacity,
  Channel,
  type ChannelHooks,
  checkCapacity,
  checkValueOf,
  closeChannel,
  closedForSendOf,
  destroyedSeenOf,
  disposeChannel,
  hookChannel,
  isOwnError,
  libraryOf,
  refusedOf,
  sendChannel,
  sharedStateOf,
  taskErrorOf,
  type WaitOptions,
  watchCancelOf,
} from "./channel.ts";
import {
  abortHeard,
  abortReason,
  CancellationError,
  checkFunction,
  checkOptionNames,
  checkOptions,
  checkReadable,
  checkScope,
  checkSignal,
  checkSignalOptionNames,
  isAborted,
  launchChecked,
  listenAbortNamed,
  optionNames,
  taskSignal,
  unlistenAbort,
} from "./errors.ts";
import {
  cancelJob,
  contextOf,
  failureOf,
  handleCoroutineException,
  isCompletedJob,
  isJob,
  type Job,
  type JobSupport,
  onJobCompletion,
  onOwnCancel,
  onUnhandledFailure,
  signalOfJob,
  taskCancelError,
  taskJobOf,
} from "./job.ts";
import type { Context } from "./context.ts";
import { checkContext, type CoroutineScope, isScopeObject, launchOwn } from "./scope.ts";

/**
 * What a producer is cancelled with when its block lets out the InvalidHandleError of its
 * channel's `share()` or `handle` after native code destroyed the channel.
 */
const DESTROYED =
  "Producer was cancelled: native code destroyed its channel (kc_chan_destroy of its handle)";

/**
 * What a producer ends with when its block lets out the InvalidHandleError of its channel that
 * its consumer disposed (or a failed launch's cleanup did) under a task of the caller's own whose
 * signal that dispose's cancel of the task did not abort (it has none, or one not its job's).
 */
const DISPOSED = "Producer was cancelled: its channel was disposed";

/**
 * What a producer's task ends with when the launch that deferred its start threw or returned no
 * Job before it began: its channel was freed, so its block never runs.
 */
const ABANDONED = "Producer was cancelled: the scope's launch of it failed before it began";

/**
 * What a producer's task ends with when the producer ended before its block began (a deferred
 * start under a task naming a Job completed before, or after the Job `launch` returned
 * completed): its channel was closed, so its block never runs (as an actor's `ENDED_FIRST`).
 */
const ENDED_FIRST = "Producer was cancelled: a Job it ends with completed before its block began";

/**
 * What a producer's sends (a waiting one, and any made after) reject with, and so its block ends
 * with, when a Job it ends with (one its task names, or the one `launch` returned, not the task's
 * own) completed while the block ran: that end closed its channel (`end`).
 */
const ENDED_WHILE = "Producer was cancelled: a Job it ends with completed while its block ran";

/**
 * What a producer's task ends with when the kcoro Job `launch` returned was cancelled before its
 * deferred block began (its completion still to come): its channel was closed with that
 * cancellation (the error's `cause`), so its block never runs, as kcoro's own task cancelled
 * before its deferred start never runs its block.
 */
const CANCELLED_FIRST =
  "Producer was cancelled: a Job it ends with was cancelled before its block began";

/**
 * What a producer's task ends with when its own signal (a task of the caller's own) had aborted by
 * the time its block began: a scope of the caller's own that started it late, after that abort, or
 * gave it a task cancelled already. That abort closed its channel (the error's `cause`), so its
 * block never runs, as kcoro's own scope never runs a block launched into it cancelled, nor one
 * cancelled before its deferred start.
 */
const SIGNAL_FIRST = "Producer was cancelled: its task's signal aborted before its block began";

/** Options for {@linkcode produce}. */
export interface ProduceOptions<T = unknown> {
  /** The channel's capacity (default `"rendezvous"`, as Kotlin's). */
  capacity?: Capacity;
  /**
   * Entries added to the producer task's context (Kotlin's `produce(context)`), as `launch`'s
   * `context` option: the task inherits the scope's context with these on top.
   */
  context?: Context;
  /**
   * Called with every value the channel drops (the consumer cancelling or disposing it with
   * values buffered, a waiting send failed by that cancel), as a Channel's own, and with the value
   * of every send that the task's cancellation ends (one waiting then, or made after).
   */
  onUndeliveredElement?: (value: T) => void;
}
/** ProduceOptions' names: any other own key is refused (`checkOptionNames`). */
const PRODUCE_OPTIONS = optionNames<ProduceOptions>({
  capacity: true,
  context: true,
  onUndeliveredElement: true,
});

/**
 * What produce.ts alone reads and writes of a {@linkcode ProducerChannel} (`stateOf`): its private
 * `#s`. Before, public fields of the channel `produce` returns: its consumer's `ch._gone = true`
 * made its dispose release nothing, `ch._job = null` kept the dispose from cancelling the
 * producer, and `ch._bound = null` unbound the producer's sends from its task.
 */
class ProducerState {
  /** The producer task. */
  job: Job | null = null;
  /** Disposed by its consumer: the producer's end has nothing left to close. */
  gone = false;
  /**
   * `{ signal: task.signal }` while the task lives: its sends end with the task, each
   * listening to that signal itself (a listen that throws rejects it by name, one that aborts
   * the signal hands its value to onUndeliveredElement: `send`). Under a task of the caller's
   * own with no AbortSignal, a signal of the producer's that aborts with the kcoro Job that
   * `launch` returned (if it is one): one that never aborts under none, its sends then bound to
   * nothing, as any channel's (`bindSends` in `produce`).
   */
  bound: { signal: AbortSignal } | null = null;
  /**
   * Under a task whose AbortSignal (`bound`) is not that of the kcoro Job `launch`
   * returned (a task of the caller's own, or a kcoro task under a caller's launch that returned
   * another kcoro Job): the producer's signal that aborts with the first of the task's signal and
   * that Job's (`bindSends` in `produce`), which ends its sends too, with the task's own signal
   * (`send`). Null where the task's signal is all there is (a kcoro task under kcoro's own scope,
   * a `launch` that returned no kcoro Job). Before, such a task's sends were bound to that
   * producer's signal alone: a send's listen of the task's signal that threw, or aborted it, went
   * unseen, the send made as if the signal could be listened to, or had not aborted.
   */
  sendsEnd: AbortSignal | null = null;
  /**
   * The cancel watch's withdrawal, while the task lives and the channel has escaped: true
   * when a cancel made elsewhere came first and the watch had not told it yet.
   */
  unwatch: (() => boolean) | null = null;
  /**
   * The task was launched and is not final yet: from `produce`'s launch, before its
   * block first ran too, until its completion (`bound` is set only once it runs).
   */
  live = false;
}

/** The private state of `out` (its `#s`): set by a static block of ProducerChannel. */
let stateOf: <T>(out: ProducerChannel<T>) => ProducerState;
/** Whether `x` is a ProducerChannel (by its private field): set with `stateOf`. */
let isProducer: (x: unknown) => boolean;
/**
 * What a producer's channel hears of Channel (`ChannelHooks`, given by `hookChannel` as `produce`
 * makes it): its private `#watch` and `#learntDestroyed`. Set by a static block of
 * ProducerChannel.
 */
let producerHooks: ChannelHooks;
/** A producer channel's own dispose (its class's, not its prototype's member). */
let disposeProducer: <T>(out: ProducerChannel<T>) => void;

/** The channel {@linkcode produce} returns: cancelling it cancels the producer. */
class ProducerChannel<T> extends Channel<T> {
  readonly #s = new ProducerState();

  static {
    stateOf = (out) => out.#s;
    isProducer = (x) => typeof x === "object" && x !== null && #s in x;
    producerHooks = {
      escaped: (ch) => (ch as ProducerChannel<unknown>).#watch(),
      learntDestroyed: (ch, cause) => (ch as ProducerChannel<unknown>).#learntDestroyed(cause),
      cancel: (ch) => (ch as ProducerChannel<unknown>).#cancel(undefined),
      dispose: (ch) => (ch as ProducerChannel<unknown>).#dispose(),
    };
    disposeProducer = (out) => out.#dispose();
  }

  /**
   * While the task lives (`live`: launched, not final) and the channel has escaped: a
   * cancel by anyone (a `Channel.from` copy in a Worker, native code) cancels the task at once,
   * with the channel's cancel cause, as a cancel here does, where it may be waiting in a `delay`
   * or a fetch, not only at its next `send` (Kotlin's `ReceiveChannel.cancel`). So does native
   * code's destroy of the channel, also before the task began: the watch cancels the task with a
   * CancellationError that says so (it finds the handle gone, or is told of the destroy's
   * cancel). Taken at the escape (`share()`, a `handle` read) also when the task has not run yet
   * (a scope whose launch defers or is lazy, the start put off to a microtask by deep nesting):
   * the isolate ending before the block first ran cancels the channel too, where it was watched
   * only from the task's start, so a Worker terminated in between left the channel open and
   * consumers elsewhere waiting for ever.
   */
  #watch(): void {
    if (!this.#s.live || this.#s.unwatch !== null || this.#s.gone) return;
    // Owned: this isolate's end mid-task (a terminated Worker) cancels the channel natively.
    this.#s.unwatch = watchCancelOf(this, (told) => this.#cancelTask(told), true);
  }

  /**
   * Cancels the task with the channel's own CancellationError (the cancel's `cause`
   * itself when it is one, else the one its receivers reject with, `closedResultOf`), so the
   * producer and the channel's receivers get one error object, as Kotlin's `ProducerCoroutine`
   * (a ChannelCoroutine) is cancelled with its channel's cancellation exception, and as an
   * actor's task is (`Mailbox._cancelTask`). `told` (the watch's cause) only where the channel
   * does not read as cancelled here. Before, the task was cancelled with the raw cause: a
   * `cancel()` without one, or with a plain Error, gave the producer the job's own
   * "CancellationError: Cancelled[: cause]" while receivers got "Channel was cancelled".
   */
  #cancelTask(told: unknown): void {
    const job = this.#s.job;
    if (job === null) return;
    // A cancel after a close (made elsewhere: another isolate's copy, told by the watch): the
    // task gets that cancel's own cause, as a cancel here gives it (`cancel`), not the close's
    // that the receivers keep. Before ABI 23 native code kept no cause of such a cancel.
    const late = cancelAfterCloseOf(this);
    const own = () => taskErrorOf(this);
    // JobSupport's own cancel of a kcoro Job (`cancelJob`), not one redefined on its prototype.
    if (late !== undefined) cancelJob(job, taskCancelError(sharedStateOf(this), late.cause, own));
    else cancelJob(job, sharedStateOf(this).cancelled ? own() : told);
  }

  /**
   * This object learnt native code destroyed the channel (its own call met the dead
   * handle): the task is cancelled with the channel's CancellationError (`#cancelTask`), as the
   * watch's cancel does (its record may come later, or never once the task completed first: a
   * child of the task whose send met the destroy ends cancelled, and the task with it, not
   * completed). Before, with the raw cause: a channel the producer had closed with an Error
   * gave it the job's "Cancelled: <message>" while its receivers got "Channel was cancelled".
   */
  #learntDestroyed(cause: unknown): void {
    if (this.#s.live && this.#s.bound !== null && !this.#s.gone) this.#cancelTask(cause);
  }

  override send(value: T, options?: WaitOptions): Promise<void> {
    // On what is no producer's channel (an object made from the prototype, a Proxy of one), the
    // private read throws the engine's TypeError, synchronously: Channel's send rejects with its
    // named one ("Cannot send: this is not a Channel, received ..."), as it did while the state
    // was public fields. A try around that read only, as Channel's trySend makes.
    let st: ProducerState;
    try {
      st = this.#s;
    } catch {
      return sendChannel(this, value, options);
    }
    const bound = st.bound;
    if (bound === null) return sendChannel(this, value, options);
    const also = st.sendsEnd;
    if (options === undefined && also === null) {
      if (isAborted(bound.signal)) return this.#afterCancel(value, abortReason(bound.signal));
      return sendChannel(this, value, bound);
    }
    // The caller's own signal counts too; anything malformed is super.send's to reject.
    if (options !== undefined && (typeof options !== "object" || options === null)) {
      return sendChannel(this, value, options);
    }
    let merged: WaitOptions;
    let unlisten: (() => void) | null = null;
    // The caller's getters and proxy traps run here (reading `signal`, looking at its keys): what
    // they throw rejects, as in super.send.
    try {
      if (options !== undefined) checkReadable("send", options); // a revoked Proxy: named
      const own = options?.signal;
      // The caller's options checked as a Channel's send checks them (`signalOf`): the send is
      // then given a `{ signal }` of its own. Before, a copy (`{ ...options, signal }`) was
      // checked instead: it lost what the options inherit, so that one inheriting an index
      // (`Object.create([1])`) was sent with, where a Channel's send refuses it ("unknown option
      // "0""), and it ran the caller's getters of every other option.
      if (options !== undefined) checkSignalOptionNames("send", options);
      // A signal that is no AbortSignal: refused here, as `signalOf` refuses it (thrown in this
      // try, so rejected). Before, super.send checked the options again, running a `signal`
      // getter of the caller's a second time.
      checkSignal("send", own);
      if (own === undefined && also === null) merged = { signal: bound.signal };
      else {
        // Any of the signals ends the send (its own, the task's, the Job's end `sendsEnd`): a
        // controller of this send's own, told by listeners that go when it settles. Not
        // AbortSignal.any: Deno keeps every signal it made alive while a source lives, here the
        // task's, as long as the producer: ~0.9 KB per send given a signal of its own (a fresh
        // one per send, a per-send timeout say), and before that (one per send) until the
        // macrotask ended, which a producer and its consumer trading values in microtasks never
        // did.
        // All read and listened to by AbortSignal's own members (errors.ts, `isAborted`): the
        // task's may be a caller's too. Before, the caller's `removeEventListener` that threw
        // replaced the send's outcome with its error.
        // Once the task was cancelled, the send is one made after (its own signal aborted too
        // or not): hooked, as the one without a signal of its own is.
        const ended = this.#ended();
        if (ended !== null) return this.#afterCancel(value, abortReason(ended));
        if (own !== undefined && isAborted(own)) merged = { signal: own };
        else {
          const either = new AbortController();
          merged = { signal: either.signal };
          // The caller's first, then the task's, then the Job's end (the producer's own, whose
          // listen never throws and which aborts with the task's signal, after it).
          const sources: AbortSignal[] = [bound.signal];
          if (own !== undefined) sources.unshift(own);
          if (also !== null) sources.push(also);
          const listened: [AbortSignal, () => void][] = [];
          const unlistenAll = () => {
            for (const [signal, listener] of listened) unlistenAbort(signal, listener);
          };
          try {
            for (const signal of sources) {
              // Each only once its signal aborted: a call before (the caller's code that
              // reached it through the engine's listeners property) changes nothing. Before,
              // the send rejected with undefined.
              const listener = (event?: Event) => {
                if (abortHeard(signal, listener, event)) either.abort(abortReason(signal));
              };
              // A signal that aborted during its listen has aborted `either`
              // (`listenAbortNamed`), and keeps no listener: the send rejects with its reason,
              // as for one aborted before, and the later ones are not listened to. Before, the
              // send waited on. Aborting `either` twice changes nothing.
              if (listenAbortNamed("send", signal, listener)) break;
              listened.push([signal, listener]);
            }
          } catch (e) {
            // A listen that threw (the signal's engine state redefined, the caller's or the
            // task's) rejects the send with the named error ("Cannot send: signal must be one
            // that can be listened to", the listen's error its cause), as a channel's send does
            // (before, with the raw error), and the signals listened to before keep no listener
            // of ours. Before, the one added to the caller's signal stayed on it until it
            // aborted, one per such send.
            unlistenAll();
            throw e;
          }
          if (listened.length > 0) unlisten = unlistenAll;
        }
      }
    } catch (e) {
      return Promise.reject(e);
    }
    // The task cancelled since it was checked, by the caller's code run here (a getter of the
    // options read above, an accessor of its own that the task's listen reached): a send made
    // once the task was cancelled, hooked as the check above hooks it (`#afterCancel`). Before,
    // its aborted signal rejected it in `super.send`, and the value reached no hook.
    const ended = this.#ended();
    if (ended !== null) {
      unlisten?.();
      return this.#afterCancel(value, abortReason(ended));
    }
    const sent = sendChannel(this, value, merged);
    if (unlisten === null) return sent;
    // The caller gets a promise that settles as `sent` does, not `sent` with handlers of ours
    // on it: those made its rejection handled, so a send left unawaited failed silently, where
    // any other send's rejection is reported as unhandled.
    const done = unlisten;
    return sent.then((v) => {
      done();
      return v;
    }, (e) => {
      done();
      throw e;
    });
  }

  /**
   * The aborted signal that ends the task's sends, once one has (the Job's end `sendsEnd`, which
   * has the first reason, else the task's), or null while the task is not cancelled or no task
   * is bound.
   */
  #ended(): AbortSignal | null {
    const st = this.#s;
    const also = st.sendsEnd;
    if (also !== null && isAborted(also)) return also;
    const signal = st.bound?.signal;
    return signal !== undefined && isAborted(signal) ? signal : null;
  }

  /**
   * A send the producer (or a child of its task) makes once its task was cancelled: the task's
   * end closed or cancelled the channel, or its consumer disposed of it, so the value is handed
   * to onUndeliveredElement (counted as dropped), as a send refused by a closed or cancelled
   * channel hands it (Kotlin's `onClosedSend`), and the send rejects with the cancellation.
   * Before, the task's aborted signal rejected it first and the value reached no hook: a
   * producer that sent again right after its consumer's `break` and dispose (the turn before it
   * learnt of its cancellation) lost that value to its resource-releasing hook. The value is
   * checked by the codec first, as a send into a closed channel checks it: one it cannot carry
   * (a function, say) rejects with that CodecError and is not hooked (it reached the hook).
   * Also where the buffer has room and the channel is open (a failed task's, until its children
   * finish): Kotlin's `send` checks for cancellation only when it suspends, and buffers it there.
   * Through a closed library it rejects with the cancellation and hooks nothing, as a Channel's
   * send whose signal had aborted before the call does there (`#abortedSend` in src/channel.ts):
   * before, the value reached the hook through the closed library.
   */
  #afterCancel(value: T, reason: unknown): Promise<void> {
    if (!isLibraryOpen(libraryOf(this))) return Promise.reject(reason);
    try {
      checkValueOf(this, value);
      refusedOf(this, value);
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.reject(reason);
  }

  /**
   * Cancels the channel and the producer's task (Kotlin's `ChannelCoroutine.cancel(cause)`:
   * `cancelInternal`, the channel's cancel and the coroutine's). The task gets the channel's own
   * CancellationError (`#cancelTask`) where this cancel made it, or the channel read as cancelled
   * before (an earlier cancel, native code's destroy: the task got or gets that one). Where the
   * channel was closed before (by the producer, with a cause or without, here or by another
   * isolate), its receivers keep what that close left (its cause wrapped, `cancelledError`), but
   * the task gets this cancel's cause, as Kotlin's coroutine does: the cause itself when it is a
   * CancellationError, else a "Channel was cancelled" carrying it, or none. Before, the task got
   * the receivers' error: the close cause wrapped, the consumer's cause lost.
   *
   * A cancel made elsewhere (another isolate's copy, native code's `kc_chan_cancel`) that the
   * watch has not told yet (its record in the ring) is an earlier cancel too: the watch is
   * withdrawn first, and its answer says so. Else this cancel read the channel as closed only
   * (the native cancel answers 0 to both) and gave the task the consumer's cause while its
   * receivers got the first cancel's error, where Kotlin's coroutine keeps its first cancel.
   */
  override cancel(cause?: unknown): void {
    // What is no producer's channel: Channel's cancel throws its named TypeError (`send`).
    if (!(#s in Object(this))) return cancelChannel(this, cause);
    this.#cancel(cause);
  }

  /**
   * `cancel`'s body, which kcoro's own calls run (the dispose's hook), not the prototype's
   * `cancel`, which a caller may redefine; Channel's own cancel likewise (`cancelChannel`), not
   * `super.cancel`, which reads `Channel.prototype.cancel` at each call. Before, a redefined
   * `Channel.prototype.cancel` steered a producer's cancel and its consumer's dispose.
   */
  #cancel(cause: unknown): void {
    const s = sharedStateOf(this);
    let before = s.cancelled;
    const unwatch = this.#s.unwatch;
    if (!before && unwatch !== null) {
      // Once cancelled here, the watch has nothing left to tell: the task is cancelled below.
      this.#s.unwatch = null;
      before = unwatch();
    }
    cancelChannel(this, cause);
    const job = this.#s.job;
    if (job === null) return;
    if (before || !s.cancelled) return this.#cancelTask(cause);
    // `own`: looks the cause up where another isolate closed it.
    cancelJob(job, taskCancelError(s, cause, () => taskErrorOf(this)));
  }

  override [Symbol.dispose](): void {
    // What is no producer's channel: Channel's dispose throws its named TypeError (`send`).
    if (!(#s in Object(this))) return disposeChannel(this);
    this.#dispose();
  }

  /** `[Symbol.dispose]`'s body, which kcoro's own calls run (`#cancel`'s rule). */
  #dispose(): void {
    if (this.#s.gone) return;
    this.#s.gone = true;
    disposeChannel(this);
    // Open, the dispose's `cancel()` (above) cancelled the producer; once the library is
    // closed the dispose only releases the native side, and the producer ran on (a scope
    // whose consumer disposed it with `using` waited for it for good).
    const job = this.#s.job;
    if (job !== null) cancelJob(job); // a kcoro Job's own cancel (`cancelJob`)
  }
}

// The three below are module functions, not `_`-named methods of ProducerChannel: every channel
// `produce` returns had them, so its consumer's `ch._cancelByTask(e)` cancelled the channel and
// left its producer active: it ran on and completed as if nothing had happened. (`_end`, now
// `closeAtEnd`, was the consumer's `close`, which a ReceiveChannel's type does not offer.)

/**
 * Closes `out` as the producer's task ends (`cause` as `close`'s); true where this close was its
 * first (`close`'s answer). Not where its consumer disposed it or the library was closed
 * (false): the close rejected its waits already, and `close` would throw LibraryClosedError out
 * of the abort listener or completion handler that ended the task, uncaught (the process ended).
 */
function closeAtEnd<T>(out: ProducerChannel<T>, cause: unknown): boolean {
  if (stateOf(out).gone || !isLibraryOpen(libraryOf(out))) return false;
  // Once native code destroyed the channel (before the task began, or while the watch was on),
  // false and nothing else, as on any cancelled channel: it threw InvalidHandleError out of the
  // abort listener (uncaught) and the completion handler (a CompletionHandlerError) that end
  // the task.
  return closeChannel(out, cause); // Channel's own close, not a redefined `close`
}

/**
 * The producer's own Job's `cancel()` (Kotlin's `ChannelCoroutine.cancelInternal`): cancels the
 * channel `out` with `cause`, the CancellationError the Job is cancelled with next, so receivers
 * and the task get one error and buffered values go to onUndeliveredElement. Only the channel:
 * the Job's cancel goes on by itself (not `out.cancel`, which would cancel it again, with the
 * receivers' error). Nothing where the consumer disposed it, or the library was closed, as
 * `closeAtEnd`; a channel cancelled before keeps its cancel.
 */
function cancelByTask<T>(out: ProducerChannel<T>, cause: CancellationError): void {
  const st = stateOf(out);
  if (st.gone || !isLibraryOpen(libraryOf(out)) || sharedStateOf(out).cancelled) return;
  // Cancelled here: the watch has nothing left to tell (it would cancel the task again).
  const unwatch = st.unwatch;
  st.unwatch = null;
  unwatch?.();
  cancelChannel(out, cause); // the channel's own cancel, not the producer's
}

/**
 * Whether the close at the task's end (`closeAtEnd`) will be the first of `out`: not disposed, the
 * library open, not closed or cancelled yet (here or elsewhere, as far as this isolate knows).
 */
function isOpen<T>(out: ProducerChannel<T>): boolean {
  return !stateOf(out).gone && isLibraryOpen(libraryOf(out)) && !sharedStateOf(out).cancelled &&
    !closedForSendOf(out);
}

/**
 * @ignore The producer task's Job of a channel `produce` returned (null before it is known, or
 * for any other value), for tests: mod.ts does not export it. Its field was public before.
 */
export function producerJobOf(ch: unknown): Job | null {
  return isProducer(ch) ? stateOf(ch as ProducerChannel<unknown>).job : null;
}

/**
 * Runs `block(out, task)` as a child task of `scope` and returns `out`, a channel that is
 * closed when the task completes, closed with its error if it fails, and closed with the
 * cancellation if the task is cancelled. The rules are in README.md,
 * "Producers, actors and native scopes from TypeScript".
 *
 * @example
 * ```ts
 * import { coroutineScope, produce } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const squares = await coroutineScope(async (scope) => {
 *   using numbers = produce<number>(scope, async (out) => {
 *     for (let i = 1; i <= 4; i++) await out.send(i * i);
 *   }); // closed when the block returns
 *   const got: number[] = [];
 *   for await (const n of numbers) got.push(n);
 *   return got;
 * });
 * assert.deepEqual(squares, [1, 4, 9, 16]);
 *
 * await assert.rejects(coroutineScope(async (scope) => {
 *   using failing = produce<number>(scope, async (out) => {
 *     await out.send(1);
 *     throw new Error("sensor lost");
 *   }, { capacity: 4 });
 *   assert.equal(await failing.receive(), 1);
 *   await assert.rejects(failing.receive(), /sensor lost/); // the cause reaches receivers
 * }), /sensor lost/); // and the failure, the scope
 * ```
 */
export function produce<T>(
  scope: CoroutineScope,
  block: (out: Channel<T>, task: CoroutineScope) => unknown,
  options: ProduceOptions<T> = {},
): Channel<T> {
  const op = "produce";
  // kcoro's own scope, whose launch returns the Job of the task it gives the block (a brand
  // check: no getter or trap of the caller's runs; an own `launch` is the caller's): launched by
  // Coroutine's own launch (`launchOwn`), not one a caller redefined on its prototype, which
  // returned what it liked, taken for the producer's own Job all the same.
  const kcoroLaunch = isScopeObject(scope) && !Object.hasOwn(scope, "launch");
  if (!kcoroLaunch) checkScope(op, scope);
  checkFunction(op, "block", block);
  checkOptions(op, options);
  const { capacity: given, context, onUndeliveredElement } = options; // read once
  checkOptionNames(op, options, PRODUCE_OPTIONS);
  checkContext(op, context);
  // Only a missing capacity is the default: null is refused below, as actor and a Channel do.
  const capacity = given === undefined ? "rendezvous" : given;
  if (onUndeliveredElement !== undefined) {
    checkFunction(op, "onUndeliveredElement", onUndeliveredElement);
  }
  // Under this call's name: the Channel's own check said "Cannot create channel", a call
  // nobody made.
  checkCapacity(op, capacity);
  const out = new ProducerChannel<T>(
    capacity,
    onUndeliveredElement === undefined ? {} : { onUndeliveredElement },
  );
  hookChannel(out, producerHooks); // before anything can share it
  const st = stateOf(out);
  // Named in its share(): a copy whose producer's isolate ended says "its producer".
  sharedStateOf(out).role = "producer";
  // Watched from its escape on, before the task first runs too (`#watch`).
  st.live = true;
  // The signals whose abort closes the channel (`closeOnCancel`), and their listeners' removals,
  // run as the task is final.
  const watched: AbortSignal[] = [];
  const detach: (() => void)[] = [];
  /**
   * The task's own Job where it is kcoro's (read as the block starts), and the Job `launch`
   * returned (once it did): where they differ (a scope of the caller's own that returns another
   * kcoro Job than the task's), the first of them to complete ends the producer (`end`), and the
   * completion handler left on the other goes (`ending`), with the listener on that Job's signal
   * (`detach`). Before, only the returned Job's completion ended it: a task that completed
   * first left its channel open, and a listener and a completion handler on that Job, until it
   * completed too (a leak on a long-lived one).
   */
  let taskJob: JobSupport | null = null;
  let launched: Job | null = null;
  const ending: Disposable[] = [];
  let ended = false;
  /** The block runs (began, not settled yet): an `end` now ends its sends (`bound`). */
  let running = false;
  /** The producer's end, once: its watch and listeners go, and the channel closes (`cause`). */
  const end = (cause: unknown): void => {
    if (ended) return;
    ended = true;
    for (const handle of ending) handle[Symbol.dispose]();
    for (const j of hooked) {
      onOwnCancel(j, null);
      onUnhandledFailure(j, null);
    }
    st.live = false;
    // A Job it ends with (one its task names, or the one `launch` returned) completed while the
    // block runs: its sends end, as at a cancel of that Job (`closeOnCancel`), with a
    // CancellationError, a waiting one woken by `sendsEnd` and one made later by `bound` (hooked:
    // `#afterCancel`). Before, one waiting on the full buffer waited for good, its scope with it,
    // and one made later failed with the ClosedSendError of this close, the task and its scope.
    if (st.bound !== null && (sendsEnd !== null || running)) {
      const cut = bindSends();
      if (!isAborted(cut)) {
        const why = cause === undefined ? undefined : { cause };
        sendsEnd!.abort(new CancellationError(ENDED_WHILE, why));
      }
      st.bound = running ? { signal: cut } : null;
    } else st.bound = null;
    st.sendsEnd = null;
    st.unwatch?.();
    st.unwatch = null;
    for (const undo of detach) undo();
    // A cause: failed (Kotlin's `onCancelled`: the failure itself), or cancelled (closed at once
    // already, unless it could not be watched: before it ran, or a task with no AbortSignal).
    const processed = closeAtEnd(out, cause);
    // A failure kept from the exception handler for this close (`cancelOnOwnCancel`) whose close
    // came too late: code that ran between (a completion handler the block added, which ran
    // before this one) closed, cancelled or disposed the channel. Reported now, as Kotlin's
    // `onCancelled` reports a failure its close did not take: before, it was lost, receivers
    // reading a clean close and nothing reported.
    if (delivering !== null && !processed) handleCoroutineException(contextOf(delivering), cause);
  };
  /**
   * The producer's own Job (the task's own kcoro Job, which kcoro's own scope's `launch` returns;
   * not another Job that a scope of the caller's own returns, whose cancel closes it) whose own
   * `cancel()` cancels the channel, at once, before the task is cancelled with the same
   * CancellationError (Kotlin's `ChannelCoroutine.cancelInternal`): buffered values are dropped to
   * onUndeliveredElement and receivers reject with it. A cancellation that reaches the task from
   * its scope (Kotlin's `parentCancelled`) closes it instead (`closeOnCancel`), keeping what was
   * sent. Before, both closed it: a producer's `job.cancel()` left its buffer receivable.
   */
  const hooked: JobSupport[] = [];
  /** The job whose failure was kept from the exception handler for the channel (`end`). */
  let delivering: JobSupport | null = null;
  const cancelOnOwnCancel = (j: JobSupport): void => {
    if (ended || isCompletedJob(j) || hooked.includes(j)) return;
    hooked.push(j);
    onOwnCancel(j, (ce) => {
      if (!ended) cancelByTask(out, ce);
    });
    // Its failure that no parent takes (under a supervisor, a free-standing scope) is its
    // receivers' where the channel is still open, closed with it as the task is final (`end`):
    // not reported too, as Kotlin's `ProducerCoroutine.onCancelled` reports only a failure its
    // channel's close did not take (closed before: by the block, a cancellation, the consumer).
    // Before, it was reported as well (Kotlin's `produce` exposes its failure, as `async` does).
    onUnhandledFailure(j, () => {
      if (ended || !isOpen(out)) return false;
      delivering = j;
      return true;
    });
  };
  /** Whether `endWithTask` added its completion handler (once only). */
  let withTask = false;
  /**
   * The task's own Job ends the producer too, once both Jobs are known and they differ; or
   * `named`, at once: a block started inside `launch` under a task naming a kcoro Job not its own.
   */
  const endWithTask = (named = false): void => {
    if (taskJob === null || withTask || ended) return;
    if (!named && (launched === null || taskJob === launched)) return;
    withTask = true;
    ending.push(onJobCompletion(taskJob, end)); // JobSupport's own, not a redefined one
  };
  /** The task's signal, once the block has read it (null: none, or not read yet). */
  let taskSignalRead: AbortSignal | null = null;
  /**
   * A kcoro Job the task merely names (its signal not the task's), other than the one `launch`
   * returned, ends the producer at its cancellation too, not only at its completion
   * (`endWithTask`): its signal is watched as the returned Job's (`closeOnCancel`, which closes
   * the channel and ends the sends), once both Jobs and the task's signal are known. Before, a
   * named Job cancelled while it waited for its children left the channel open and the block
   * sending (one waiting on the full buffer waited on) until that Job completed.
   */
  const watchNamed = (): void => {
    if (taskJob === null || launched === null || taskJob === launched || ended) return;
    const named = signalOfJob(taskJob);
    // No owner: that Job never runs the block, so its failure reaches the producer as a
    // cancellation, closing the channel at once with it (as an actor's mailbox is cancelled with
    // it). Only the failure of the Job that runs the block waits for that Job's completion, which
    // closes the channel with the failure itself. Before, the named Job's failure was taken for
    // such a one: the sends ended, but the channel stayed open, and a block that went on past its
    // rejected send left it open until its task completed, then closed it cleanly.
    if (named !== taskSignalRead) closeOnCancel(named, null);
  };
  /**
   * What ends the block's sends where the task's signal is not the returned Job's: aborted as
   * the first of the watched signals aborts (`closeOnCancel`), the task's, the kcoro Job's
   * that `launch` returned and the one the task names, with its reason, for a failure too. The
   * sends are bound to it alone under a task with no AbortSignal (`bound`), and to it and the
   * task's signal under one whose signal is not that Job's (`sendsEnd`: each send still listens
   * to the task's signal itself, also a kcoro task's under a caller's launch that returned
   * another kcoro Job). Made at the block's start, before `launch` returned the Job, so a send
   * made then (a launch that runs the block at once) is bound to it as well. Before, such a
   * task's sends were bound to its own signal only, or to nothing: a send waiting on the full
   * buffer when that Job was cancelled waited on (the close fails no waiting send), and the
   * cancelled task, with nobody receiving, hung its scope.
   */
  let sendsEnd: AbortController | null = null;
  const bindSends = (): AbortSignal => {
    // None of the watched signals has aborted by now: a block begun after one did never runs
    // (`ENDED_FIRST`, `CANCELLED_FIRST`, `SIGNAL_FIRST`, checked after the task's getters and the
    // listen, the last of the caller's code to run before this), and one aborting later aborts
    // this too (`closeOnCancel`). Before, it looked for one aborted already: the block's first
    // send rejected there, the block run all the same (a getter of the task's that cancelled the
    // returned Job reached it).
    sendsEnd ??= new AbortController();
    return sendsEnd.signal;
  };
  /**
   * Whether the Job that `launch` returned may end the sends of a task whose signal is `signal`
   * before that signal aborts: not known yet (a block started inside `launch`), a kcoro Job
   * watched for its cancellation (`closeOnCancel`) whose signal is another, or a Job of another
   * kind, whose completion (`end`, `ENDED_WHILE`) may come while the block runs. Before, that one
   * was taken for none: a send made after `launch` returned listened to the task's signal alone,
   * and one waiting on the full buffer as that Job completed waited for good, its scope with it.
   */
  const jobEnds = (signal: AbortSignal): boolean =>
    launched === null || !isJob(launched) ||
    (signalOfJob(launched) !== signal && watched.includes(signalOfJob(launched))) ||
    // A Job the task merely names (not the returned one), whose cancel ends them too
    // (`watchNamed`, which watches it once both Jobs are known).
    (taskJob !== null && taskJob !== launched && signalOfJob(taskJob) !== signal);
  /**
   * Closes the channel at once as `signal` (of the job `owner`, a kcoro Job or not) aborts for a
   * cancellation (the scope cancelled, a sibling failing; the task's own cancel has cancelled it
   * first, `cancelOnOwnCancel`), with the CancellationError: closed, not cancelled, so what was
   * sent stays receivable. Listened to
   * until the task is final, not only while the block runs: a task cancelled after its block
   * returned waits for its children, and its receivers waited with it. A failure (the block's
   * or a child's) does not: the completion handler closes it with the failure itself once the
   * task is final, its children done, as Kotlin's `ProducerCoroutine.onCancelled(cause)` closes
   * it as the coroutine completes. Before, a failure closed it at once, so a receiver saw the
   * producer's failure while the task still read active (the block's own error) or cancelling,
   * its children still running. A listen that throws throws (named: `listenAbortNamed`).
   */
  const closeOnCancel = (signal: AbortSignal, owner: unknown): void => {
    // Ended already (a deferred start whose task names a Job completed before: `endWithTask`
    // ended the producer at once): nothing is left to close, and `end` has run its `detach`, so a
    // listener added now would never go. Before, the task's signal kept one.
    if (ended || watched.includes(signal)) return;
    watched.push(signal);
    // Only once the signal aborted: a call before (the caller's code that reached the listener
    // through the engine's listeners property) changes nothing. Before, it closed the channel
    // with undefined, a clean end for its receivers. Nor once the producer ended.
    const onAbort = (event?: Event) => {
      if (!abortHeard(signal, onAbort, event) || ended) return;
      const reason = abortReason(signal);
      // A job records its failure before its signal aborts (job.ts, `#cancelWith`): a failed
      // task's channel is closed as it completes. A failure after the cancel (a child's, the
      // task cancelling) finds it closed with the cancellation, which it keeps, though the
      // task's cause becomes the failure: Kotlin's receivers get the failure after a cancel of
      // its scope (README says why not here); after its own cancel() the channel was cancelled
      // (`cancelOnOwnCancel`), as Kotlin's.
      // Nor where the Job running the block (`st.job`) failed first: a Job its task names may be
      // its parent, cancelled by that failure (no owner: `watchNamed`), whose reason closed the
      // channel at once, its receivers never given the failure (a caller's scope naming its own
      // Job: "Cancelled: a task in the scope failed"), where kcoro's own scope gives it. Also
      // where `launch` returned the Job running the block after a block started at once watched
      // its signal with another owner (the Job its task names, or none): the first owner stays,
      // and this check covers that Job's failure (`st.job` is the returned Job then).
      const runner = st.job;
      if (
        !st.gone && !(isJob(owner) && failureOf(owner) !== undefined) &&
        !(isJob(runner) && failureOf(runner) !== undefined)
      ) {
        closeAtEnd(out, reason);
      }
      // For a failure too: the sends reject once the task is cancelling. After the close, as a
      // kcoro task's own sends learn of it (their listeners come after this one). Aborting it
      // twice changes nothing.
      sendsEnd?.abort(reason);
    };
    // By AbortSignal's own members (errors.ts, `isAborted`): the task's may be a caller's.
    // One aborted before or during the listen has closed it already (`listenAbortNamed`),
    // keeping no listener: before, the channel stayed open, its receivers waiting on a task
    // whose signal had aborted.
    if (listenAbortNamed(op, signal, onAbort)) return;
    // The listen may run the caller's code (an accessor of its own for the engine's listeners
    // property, on a prototype under the signal), which may end the producer (complete a Job it
    // ends with): `end` ran its `detach` without this listener, which goes now. Before, it
    // stayed on the signal (a long-lived one of the caller's) until that aborted.
    if (ended) unlistenAbort(signal, onAbort);
    else detach.push(() => unlistenAbort(signal, onAbort));
  };
  /**
   * A signal the producer watches, other than `own` (its task's), that has aborted: the kcoro Job
   * `launch` returned, or the one its task names (`watchNamed`), was cancelled (or failed).
   */
  const jobAborted = (own: AbortSignal | null): AbortSignal | undefined =>
    watched.find((s) => s !== own && isAborted(s));
  // The scope's launch threw or returned no Job (its cleanup below): the channel was freed.
  let abandoned = false;
  /** The scope's launch threw or returned no Job, or its Job's invokeOnCompletion threw. */
  const abandon = (): void => {
    abandoned = true;
    // A block started at once watched its task's signal and any Job that task names (a
    // completion handler, an abort listener: `endWithTask`, `closeOnCancel`), which only `end`
    // undoes, at the completion of the Job `launch` returns: there is none. They go now. Before,
    // a named long-lived Job of the caller's kept one of each until it completed, per such call.
    for (const handle of ending.splice(0)) handle[Symbol.dispose]();
    for (const undo of detach.splice(0)) undo();
    disposeProducer(out);
  };
  // A CoroutineScope of the caller's own may throw or return anything: the channel is freed.
  const job = launchChecked<Job>(
    op,
    scope,
    async (task: CoroutineScope) => {
      // Its task, for a cancel of the channel (`ProducerChannel.cancel`, its dispose), from the
      // start: the block may cancel `out` before its first await, before `launch` returned the job
      // (a scope's launch runs the block at once), which cancelled the channel and not the task.
      // Read once: a task of the caller's own may have a getter for it, which ran five times
      // (and could answer differently each time).
      // A getter that throws names no kcoro Job, as a throwing `signal` is none (`taskJobOf`).
      const read = taskJob = taskJobOf(task);
      // A launch that deferred the start (a scope of the caller's own), then threw or returned no
      // Job: its cleanup freed the channel before the block began, so the block never runs and the
      // task ends cancelled, as an actor's (`ABANDONED` in src/actor.ts). Before, the block ran on
      // the freed channel, and its first send's InvalidHandleError failed the scope.
      if (abandoned) throw new CancellationError(ABANDONED);
      // Started after `launch` returned (deferred): the task's own Job is known only now.
      endWithTask();
      // The producer ended before its block began (started late, under a task naming a Job
      // completed before, or after the Job `launch` returned completed): its channel is closed, so
      // the block never runs and the task ends cancelled, as an abandoned one (and an actor's,
      // `ENDED_FIRST` in src/actor.ts). Before the listen below too: nothing is left to watch.
      // Before, the block ran on the closed channel, and its first send's ClosedSendError failed
      // the task (and the scope).
      if (ended) throw new CancellationError(ENDED_FIRST);
      // Cancelled before its block began (started late, after the kcoro Job `launch` returned was
      // cancelled, its completion still to come): that cancel closed the channel
      // (`closeOnCancel`), so the block never runs and the task ends cancelled, with the
      // cancellation as its cause, as kcoro's own task cancelled before its deferred start never
      // runs its block (src/scope.ts, `#startLater`). Before the listen below too. Before, the
      // block ran on the closed channel: what it did before its first send (all of it, in one that
      // never sends) went on past that cancel.
      if (launched !== null && isJob(launched) && isAborted(signalOfJob(launched))) {
        throw new CancellationError(CANCELLED_FIRST, { cause: abortReason(signalOfJob(launched)) });
      }
      // Null for a task of the caller's own with no AbortSignal (`taskSignal`, as an actor's):
      // only a kcoro Job that `launch` returned closes the channel at a cancellation, and ends its
      // sends (below). Before, its `addEventListener` threw a TypeError out of the block.
      // A kcoro task's own signal (`signalOfJob`), not a getter redefined on its prototype.
      const signal = isJob(task) ? signalOfJob(task) : taskSignal(task);
      // A listen that throws (only a signal whose engine state the caller redefined) fails the
      // task by name, before the block runs, as createScope refuses such a signal. Before, with
      // the listen's raw error.
      if (signal !== null) closeOnCancel(signal, read);
      taskSignalRead = signal;
      watchNamed(); // started after `launch` returned (deferred): the named Job is known now
      // The task's own Job (kcoro's task itself, or the Job whose signal is the task's: no two
      // kcoro Jobs share a signal) is the Job that runs the block: the channel's cancel and dispose
      // cancel it (`job`), and its cancel() is the producer's own (`cancelOnOwnCancel`). Not a Job
      // the task merely names (a long-lived one of the caller's, its signal another): the Job
      // `launch` returned is the producer's then (`st.job ??= job`). Before, any kcoro Job the
      // task named was taken: the consumer's dispose of the channel, even after the producer ended,
      // cancelled that long-lived Job.
      if (read !== null && ((read as unknown) === task || signalOfJob(read) === signal)) {
        st.job = read;
        cancelOnOwnCancel(read);
      }
      // Its task's signal aborted before its block began (before or during the listen above, which
      // closed the channel with its reason and kept no listener): only under a scope of the
      // caller's own, as kcoro's own never starts a cancelled task's block. The block never runs
      // and the task ends cancelled, the reason its cause, as kcoro's own scope never runs a block
      // launched into it cancelled, nor one cancelled before its deferred start. Before, the block
      // ran on the closed channel: what it did before its first send (all of it, in one that never
      // sends) went on past that abort.
      if (signal !== null && isAborted(signal)) {
        throw new CancellationError(SIGNAL_FIRST, { cause: abortReason(signal) });
      }
      // Started at once (inside `launch`, which has not returned) under a task naming a kcoro Job
      // not its own: that Job ends the producer at its completion and its cancel (as
      // `endWithTask` and `watchNamed` make it, which wait for `launch`'s Job), watched now, so a
      // Job completed or cancelling before refuses the block (below) as a deferred start does.
      // Before, the block ran: its sends filled the buffer of a channel closed as `launch`
      // returned, then one failed with ClosedSendError (the task and its scope with it).
      // No owner, as `watchNamed`'s: that Job runs no block, so its failure closes the channel at
      // once with its signal's reason (with it as owner, its failure waited for its completion).
      if (launched === null && read !== null && st.job !== read) {
        endWithTask(true);
        closeOnCancel(signalOfJob(read), null);
      }
      // The task's `signal` getter and the listens above may run the caller's code (a getter of
      // its own; an accessor for the engine's listeners property on a prototype under the
      // signal), which may have ended the producer (a Job it ends with completed) or cancelled a
      // Job it ends with (the one `launch` returned, or the one its task names, watched just
      // now): the block never runs, as where that came before (above). Before, it ran on the
      // closed channel: its first send's ClosedSendError failed the task and the scope, or it
      // rejected with the cancellation, what the block did before it going on past that cancel.
      if (ended) throw new CancellationError(ENDED_FIRST);
      const gone = jobAborted(signal);
      if (gone !== undefined) {
        throw new CancellationError(CANCELLED_FIRST, { cause: abortReason(gone) });
      }
      // Until the task is final, not only while the block runs: children of the task sending
      // after the block returned (Kotlin's `produce { launch { send(x) } }`) are cancelled with
      // it, and one left waiting in a send nobody would take hung the scope.
      // Kotlin's: bound to its Job. A kcoro task's own signal is its Job's; any other task's sends
      // are bound to its signal, each send listening to it as to a kcoro task's, and to the kcoro
      // Job `launch` returns, if any (`bindSends`), which the task's signal may not follow (one the
      // caller made). Before, they were bound to that Job's end alone: a send's listen of the
      // task's signal that threw, or aborted it, went unseen.
      // A kcoro task's too, under a caller's launch that may return another kcoro Job than the
      // task's (not known yet for a block started inside it), whose cancellation closes the channel
      // (`closeOnCancel`) without aborting the task's signal: before, such a task's sends were
      // bound to its signal alone, and one waiting on the full buffer waited on past that close
      // (its value received after it), the task and its scope hung with nobody receiving. kcoro's
      // own scope returns the task's Job (`kcoroLaunch`): its sends keep the one-signal fast path.
      if (signal === null) st.bound = { signal: bindSends() };
      else {
        st.bound = { signal };
        const own = taskJob !== null && signalOfJob(taskJob) === signal;
        if (!(own && launched === null && kcoroLaunch) && jobEnds(signal)) {
          st.sendsEnd = bindSends();
        }
      }
      // Shared before the task began: watched since that share (`live`, `producerHooks.escaped`).
      running = true;
      try {
        await block(out, task);
      } catch (e) {
        // Only `out`'s own InvalidHandleError (`_raised`, by identity) is its end below: one the
        // block let out of another channel (a disposed one of its own, say) is its failure, also
        // once `out` ended, and fails the task and the scope, as Kotlin's coroutine being
        // cancelled that fails with another exception reports it. Any InvalidHandleError counted
        // before, so such a bug ended the producer as cancelled, silently.
        // Sending into a channel its consumer disposed: the consumer cancelled this task (its
        // `job`), and it ends with that cancellation. A task of the caller's own may have no
        // AbortSignal, or one that its job's cancel does not abort: it ends cancelled too, with a
        // CancellationError that says so. Before, it failed with the InvalidHandleError.
        if (st.gone && isOwnError(out, e)) {
          throw signal !== null && isAborted(signal)
            ? abortReason(signal)
            : new CancellationError(DISPOSED, { cause: e });
        }
        // Native code destroyed the channel (`kc_chan_destroy` through its `handle`): its sends
        // answer as on a cancelled channel (a CancellationError, which ends the task as
        // cancelled below as any), but `share()` and `handle` have no live channel to hand out
        // and throw its InvalidHandleError: cancelled too, as the watch's cancel (which may come
        // first, or after) would, not failed with it.
        if (!st.gone && isOwnError(out, e) && destroyedSeenOf(out)) {
          throw signal !== null && isAborted(signal)
            ? abortReason(signal)
            : new CancellationError(DESTROYED, { cause: e });
        }
        // Any other error is the task's failure (or its cancellation, as the job takes it:
        // `cancellationOf`), which the completion handler closes the channel with once the task is
        // final (a block that threw undefined: the TypeError the job makes of it).
        throw e;
      } finally {
        running = false;
      }
    },
    abandon,
    context === undefined ? undefined : { context },
    kcoroLaunch ? (b, o) => launchOwn(scope, b, o) : undefined,
  );
  st.job ??= job;
  // The Job `launch` returned, where it is kcoro's, closes the channel at a cancellation too: a
  // scope of the caller's own may give the block a task with no AbortSignal, or one that the
  // job's cancel does not abort, whose cancellation closed the channel only as the task
  // completed, its receivers waiting on a block that might never end. Its own task's signal is
  // the same one, watched once (`closeOnCancel`), also where the start was deferred.
  // The Job's own state and signal (`isCompletedJob`, `signalOfJob`), not redefined getters.
  if (isJob(job) && !isCompletedJob(job)) {
    closeOnCancel(signalOfJob(job), job);
    // kcoro's own scope returns the task's own Job (its start maybe put off, by deep nesting):
    // its cancel() is the producer's own. Not another Job a scope of the caller's own returns.
    if (kcoroLaunch) cancelOnOwnCancel(job);
  }
  launched = job;
  // A block started at once, under a task with an AbortSignal: where the Job adds no signal of
  // its own to the task's, its sends are bound to the task's alone (`jobEnds`).
  const bound = st.bound;
  if (st.sendsEnd !== null && bound !== null && !jobEnds(bound.signal)) st.sendsEnd = null;
  let handle: unknown;
  try {
    handle = onJobCompletion(job, end); // a kcoro Job's own; a Job of the caller's, its own
  } catch (e) {
    // A Job of the caller's whose invokeOnCompletion throws (or a getter for it that throws
    // now): theirs, as it is, and the producer `launch` started is cancelled and its channel
    // released, as where `launch` throws. Before, produce() threw and the block ran on, the
    // channel never released.
    abandon();
    throw e;
  }
  // Withdrawn where the task's own Job ends the producer first: a kcoro Job's Disposable only (a
  // Job of another kind may return anything, whose dispose would run the caller's code).
  if (isJob(job) && !ended) ending.push(handle as Disposable);
  // Started at once, inside `launch`: the task's own Job was known before it returned.
  endWithTask();
  watchNamed();
  return out;
}

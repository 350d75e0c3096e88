/**
 * `actor`: a task that receives and processes the messages of a mailbox channel it owns
 * (kotlinx.coroutines' `actor`).
 *
 * Rules (Kotlin's):
 * - The handler runs as a child task of the scope (`launch`): the scope waits for it, and its
 *   failure cancels the scope (unless a supervisor).
 * - `close()` lets the actor finish its work: messages already queued stay receivable, so a
 *   handler looping `for await (const m of mailbox)` processes every one, then its loop ends.
 * - Cancelling the actor's task (its scope cancelled, a sibling failing, `job.cancel()`) stops it
 *   at once: the mailbox is cancelled with the task's CancellationError, so queued messages are
 *   dropped, and the handler's pending receive and waiting senders reject with that very error
 *   (a cancelled channel's rule, Kotlin's: not a wrapper of it). So does the
 *   handler's failure or a child's, as the task enters cancelling, also while children of the
 *   task still run: a failed or cancelled actor takes no more messages (Kotlin's
 *   `ActorCoroutine.onCancelling`). Also under a scope of the caller's own whose task has no
 *   AbortSignal, where its `launch` returned a kcoro Job (that Job's signal is watched).
 * - A handler that returns leaves the mailbox open while children of the task run (they may
 *   receive from it): the task's completion cancels it (Kotlin's `onCancelling(null)`).
 * - When the task ends, however it ends, the mailbox is cancelled and freed: later sends reject
 *   with ClosedSendError (its `cause` is the actor's failure or cancellation, if any; the message
 *   goes to onUndeliveredElement first, as a closed Channel's send hands it), and
 *   `onDone(cause)` is called once: `undefined` when the handler returned, the
 *   CancellationError when cancelled, the error when it failed. Also on a scope of the caller's
 *   own whose `launch` throws or returns no Job (`actor()` throws): the task it started is
 *   cancelled and `onDone` runs as it ends; where the block had not begun (deferred, or never
 *   run), `onDone` runs at once with the error `actor()` throws, and a block started later ends
 *   cancelled as it starts, its handler never run (Kotlin's `onCompletion` runs however the
 *   actor completes).
 * - Native code's destroy of the mailbox (`kc_chan_destroy` of its `handle`) ends the actor as
 *   cancelled, not failed: the mailbox reads as cancelled from then on, so the handler's receive
 *   rejects with a CancellationError (the destroy's, or one saying native code destroyed it),
 *   which, let out, ends the task cancelled; sends from then on are refused as once the actor
 *   has finished. The mailbox's `share()` and `handle` then throw InvalidHandleError (no live
 *   channel to hand out): the mailbox's own (`isOwnError`), let out, ends it cancelled too;
 *   another channel's that the handler lets out is its failure, as any.
 * - Cancelling the mailbox cancels the actor (Kotlin's actor is a ChannelCoroutine): the
 *   handler's `mailbox.cancel()`, a `Channel.from` copy's in any isolate (its `share()`), native
 *   code's `kc_chan_cancel`. The task's signal aborts with the mailbox's CancellationError,
 *   wherever the handler waits (busy elsewhere, not receiving), and the actor ends cancelled,
 *   `onDone` getting that error. On a mailbox closed before (by the handler or `Actor.close()`),
 *   the handler's `mailbox.cancel(cause)` gives the task its own cause (itself when a
 *   CancellationError, else a "Channel was cancelled" carrying it, or none), the mailbox's
 *   receivers keeping the close's. The handler's dispose of its mailbox is not such a cancel (one
 *   made elsewhere just before it, its report not taken yet, still is).
 * - The actor's isolate ending while its task runs (a Worker terminated, or ending by
 *   `self.close()`, or its library closed, with the mailbox shared to another isolate) cancels
 *   the mailbox natively: the task holds an owned watch on it while it runs and the mailbox has
 *   escaped (`KC_WATCH_OWNED`), and the ring's going away with the thread honours it. Senders
 *   elsewhere waiting on it then reject with a CancellationError whose message says the isolate
 *   running its actor ended (the `role` of the `share()` object names it), later sends fail, and
 *   a process waiting on it can exit.
 *
 * @module
 */
import { isLibraryOpen } from "../ffi/load.ts";
import {
  _sentAtOnce,
  cancelAfterCloseOf,
  cancelChannel,
  type Capacity,
  Channel,
  type ChannelHooks,
  checkCapacity,
  checkValueOf,
  closeChannel,
  destroyedSeenOf,
  disposeChannel,
  disposedOf,
  hookChannel,
  isOwnError,
  libraryOf,
  sendChannel,
  sharedStateOf,
  taskErrorOf,
  trySendChannel,
  type TrySendResult,
  undeliveredOf,
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
  checkScope,
  ClosedSendError,
  cutShort,
  describe,
  isAborted,
  launchChecked,
  LibraryClosedError,
  listenAbortNamed,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  signalOf,
  taskSignal,
  unlistenAbort,
} from "./errors.ts";
import {
  cancelJob,
  contextOf,
  isCompletedJob,
  isJob,
  type Job,
  jobStateOf,
  type JobSupport,
  onJobCompletion,
  runCompletionHandler,
  signalOfJob,
  startJob,
  taskCancelError,
  taskJobOf,
} from "./job.ts";
import { customInspect, inspectAs, notA, stringOf, wrappedBigint } from "./inspect.ts";
import { childContext, type Context, isContext } from "./context.ts";
import { checkContext, type CoroutineScope, isScopeObject, launchOwn } from "./scope.ts";

/**
 * `launch`'s options for an actor's task: its `lazy` and `context` where given, else none (its
 * `launch` gets the block alone, as before those options).
 */
function launchOptions(
  lazy: boolean,
  context: Context | undefined,
): { lazy?: true; context?: Context } | undefined {
  if (!lazy && context === undefined) return undefined;
  const options: { lazy?: true; context?: Context } = {};
  if (lazy) options.lazy = true;
  if (context !== undefined) options.context = context;
  return options;
}

/** Options for {@linkcode actor}. */
export interface ActorOptions<M = unknown> {
  /** The mailbox's capacity (default `"rendezvous"`, as Kotlin's). */
  capacity?: Capacity;
  /**
   * Start the actor's task lazily (Kotlin's `start = CoroutineStart.LAZY`): its job is launched
   * `new`, and its handler runs once the actor is first sent to (`send`, `trySend`), closed, or
   * its `job` started (`start()`, `join()`); a send refused for its options starts nothing.
   * Default false: it starts at once.
   */
  lazy?: boolean;
  /**
   * Entries added to the actor task's context (Kotlin's `actor(context)`), as `launch`'s
   * `context` option: the task inherits the scope's context with these on top.
   */
  context?: Context;
  /** Called once when the actor's task ends, with its cause (undefined when it returned). */
  onDone?: (cause?: unknown) => void;
  /**
   * Called with every message the mailbox drops (queued when the actor was cancelled, failed or
   * ended; a waiting send failed then; a send refused after), as a Channel's own.
   */
  onUndeliveredElement?: (message: M) => void;
}
/** ActorOptions' names: any other own key is refused (`checkOptionNames`). */
const ACTOR_OPTIONS = optionNames<ActorOptions>({
  capacity: true,
  context: true,
  lazy: true,
  onDone: true,
  onUndeliveredElement: true,
});

/** An actor's sending side and its task; see {@linkcode actor}. */
export interface Actor<M> {
  /**
   * Sends a message, waiting while the mailbox is full; rejects with ClosedSendError once the
   * actor has finished or its handler disposed of its mailbox (also one waiting at the dispose)
   * or native code destroyed it (`kc_chan_destroy`; one waiting at the destroy rejects with its
   * CancellationError), the message then going to onUndeliveredElement first (as a Channel's
   * send on a closed channel). Through a closed library it rejects with LibraryClosedError (a
   * `signal` aborted before the call: its reason) and hooks nothing, as a Channel's send.
   */
  send(message: M, options?: WaitOptions): Promise<void>;
  /**
   * Sends without waiting: `ok`, `full`, or `closed` (closed, the actor has finished, its
   * handler disposed of its mailbox, or native code destroyed it), its `cause` the actor's
   * failure or cancellation, else the {@linkcode ClosedSendError} a send rejects with. Throws
   * `CodecError` for a message the mailbox's codec cannot carry, closed or not (as a
   * Channel's trySend). Throws LibraryClosedError through a closed library, as a Channel's.
   */
  trySend(message: M): TrySendResult;
  /**
   * Closes the mailbox: queued messages are still processed. True the first time only; false,
   * doing nothing, once the actor has finished, its handler disposed of its mailbox or native
   * code destroyed it. Throws LibraryClosedError through a closed library, as a Channel's close.
   */
  close(): boolean;
  /** The actor's task. */
  readonly job: Job;
}

/** What a structured clone of an actor fails on (`ActorImpl._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  // Short: V8 cuts the middle out of a longer one in the DataCloneError's message.
  "Cannot clone an actor: it lives in its isolate; postMessage a channel's share() and forward to " +
    "the actor",
);

/**
 * Whether `e` is the mailbox's own InvalidHandleError (`isOwnError`: raised by an operation
 * on `mailbox`, by identity: its `share()` or `handle`, the only ones that throw so once native
 * code destroyed it, the others answering as on a cancelled channel) and native code destroyed
 * the mailbox (`kc_chan_destroy` through its `handle`). Any other error, an InvalidHandleError
 * of another channel's above all (a disposed one of the handler's, say), is what it is: the
 * handler's failure, which fails the actor and reaches its scope (Kotlin's: a coroutine being
 * cancelled that fails with another exception reports it).
 */
function destroyedUnder<M>(mailbox: Channel<M>, e: unknown): boolean {
  return isOwnError(mailbox, e) && destroyedSeenOf(mailbox);
}

/**
 * Cancels an actor's mailbox as its task stops, unless the handler disposed it (a `using`) or
 * the library was closed: the dispose or the close ended its waits already, and `cancel` would
 * throw (InvalidHandleError, LibraryClosedError) out of the abort listener or completion handler
 * that stopped the task, uncaught (the process ended).
 */
function cancelMailbox<M>(mailbox: Mailbox<M>, cause: unknown): void {
  if (disposedOf(mailbox) || !isLibraryOpen(libraryOf(mailbox))) return;
  // A no-op once native code destroyed the mailbox (`kc_chan_destroy` through its `handle`),
  // as on any cancelled channel: the destroy cancelled it, rejecting its waits.
  cancelMailboxOwn(mailbox, cause); // not `mailbox.cancel`: a caller may redefine it
}

/**
 * What an actor's task is cancelled with when its handler lets out the InvalidHandleError of
 * its mailbox's `share()` or `handle` after native code destroyed the mailbox.
 */
const MAILBOX_DESTROYED =
  "Actor was cancelled: native code destroyed its mailbox (kc_chan_destroy of its handle)";

/**
 * What an actor's task ends with when the launch that deferred its start threw or returned no
 * Job before it began: its mailbox was freed, so its handler never runs.
 */
const ABANDONED = "Actor was cancelled: the scope's launch of it failed before it began";

/**
 * What an actor's task ends with when the actor ended before its handler began (a deferred start
 * under a task naming a Job completed before, or after the Job `launch` returned completed): its
 * mailbox was freed, so its handler never runs.
 */
const ENDED_FIRST = "Actor was cancelled: a Job it ends with completed before its handler began";

/**
 * What an actor's task ends with when the kcoro Job `launch` returned was cancelled before its
 * deferred handler began (its completion still to come): its mailbox was cancelled with that
 * cancellation (the error's `cause`), so its handler never runs, as kcoro's own task cancelled
 * before its deferred start never runs its block.
 */
const CANCELLED_FIRST =
  "Actor was cancelled: a Job it ends with was cancelled before its handler began";

/**
 * What an actor's task ends with when its own signal (a task of the caller's own) had aborted by
 * the time its handler began: a scope of the caller's own that started it late, after that abort,
 * or gave it a task cancelled already. That abort cancelled its mailbox (the error's `cause`), so
 * its handler never runs, as kcoro's own scope never runs a block launched into it cancelled, nor
 * one cancelled before its deferred start.
 */
const SIGNAL_FIRST = "Actor was cancelled: its task's signal aborted before its handler began";

/** `Mailbox`'s dispose found no cancel made before it (a cause may be undefined). */
const NOT_CANCELLED = Symbol("not cancelled");

/** What a send to an actor whose mailbox native code destroyed rejects with. */
const DESTROYED = "native code destroyed the actor's mailbox (kc_chan_destroy)";

/**
 * What actor.ts alone reads and writes of a {@linkcode Mailbox} (`mailboxState`): its private
 * `#s`. Before, public fields of the mailbox the handler is given: its `mailbox._job = null` kept
 * a cancel of the mailbox (here or from another isolate) from cancelling the actor, which ran on;
 * `mailbox._running = false` kept it from being watched once shared; `mailbox._inDispose = true`
 * made its own dispose do nothing and its cancel cancel the mailbox only.
 */
class MailboxState {
  /**
   * The CancellationError a dispose while open and not cancelled rejected the waits with (the
   * channel's one: `cancelledError`): a dispose by the handler, as the actor's own dispose, at
   * its task's end, cancels the mailbox first.
   */
  disposedWith: unknown = undefined;
  /** The actor's task runs (from its start until it is final): `#watch` may watch. */
  running = false;
  /** The owned watch's withdrawal, while the task runs and the mailbox has escaped. */
  unwatch: (() => boolean) | null = null;
  /** The actor's task, which a cancel of the mailbox cancels (`#cancelTask`). */
  job: Job | null = null;
  /** In the dispose: its own cancel is the mailbox's end, not the actor's. */
  inDispose = false;
}

/** The private state of `mailbox` (its `#s`): set by a static block of Mailbox. */
let mailboxState: <M>(mailbox: Mailbox<M>) => MailboxState;

/**
 * The task ended, or the handler disposes of the mailbox: the watch goes, before the mailbox is
 * cancelled and freed. True when a cancel made elsewhere (a copy's, here or in another isolate;
 * native code's) came first and the watch had not told it yet. A module function, as the state
 * it changes (before, the mailbox's public `_stopWatching`, which its handler could call: the
 * mailbox, shared, was no longer watched, and an isolate's end no longer cancelled it).
 */
function stopWatching<M>(mailbox: Mailbox<M>): boolean {
  const st = mailboxState(mailbox);
  st.running = false;
  const untold = st.unwatch?.() ?? false;
  st.unwatch = null;
  return untold;
}

/**
 * The task's Job became known after a cancel of the mailbox (made before `launch` returned it):
 * cancels it as that cancel would have (`#cancelTask`). Set by a static block of Mailbox: before,
 * the mailbox's public `_cancelTask`, through which its handler cancelled its own task with
 * whatever it passed (a cancel of the mailbox gives the task the mailbox's own error).
 */
let cancelTaskOf: <M>(mailbox: Mailbox<M>, told: unknown) => void;
/**
 * What a mailbox hears of Channel (`ChannelHooks`, given by `hookChannel` as `actor` makes it):
 * its escape starts its watch (`#watch`); it learns a destroy by that watch, and keeps an aborted
 * send's message as a Channel does. Set by a static block of Mailbox.
 */
let mailboxHooks: ChannelHooks;
/** A mailbox's own cancel (its class's, not its prototype's member). Set by Mailbox. */
let cancelMailboxOwn: <M>(mailbox: Mailbox<M>, cause: unknown) => void;
/** A mailbox's own dispose (its class's, not its prototype's member). Set by Mailbox. */
let disposeMailbox: <M>(mailbox: Mailbox<M>) => void;

/**
 * An actor's mailbox: a Channel that remembers what its dispose's cancel rejected the waits with
 * when its handler disposed of it (a `using mailbox`), so that a send that was waiting then is
 * told what a send after the dispose is told (`ActorImpl.send`). Its state is private (`#s`,
 * `MailboxState`): the handler holds the mailbox.
 */
class Mailbox<M> extends Channel<M> {
  readonly #s = new MailboxState();

  static {
    mailboxState = (mailbox) => mailbox.#s;
    cancelTaskOf = (mailbox, told) => mailbox.#cancelTask(told);
    mailboxHooks = {
      escaped: (ch) => (ch as Mailbox<unknown>).#watch(),
      learntDestroyed: () => {},
      cancel: (ch) => (ch as Mailbox<unknown>).#cancel(undefined),
      dispose: (ch) => (ch as Mailbox<unknown>).#dispose(),
    };
    cancelMailboxOwn = (mailbox, cause) => mailbox.#cancel(cause);
    disposeMailbox = (mailbox) => mailbox.#dispose();
  }

  /**
   * While the task runs and the mailbox has escaped (the handler shared it, or read its
   * `handle`): an owned close watch on this isolate's ring (`watchCancelOf`, `KC_WATCH_OWNED`),
   * so that this isolate's end mid-task (a Worker terminated, or ending by `self.close()`, or
   * its library closed) cancels the mailbox natively, as Kotlin's actor that dies cancels its
   * mailbox: senders in other isolates waiting on it reject with a CancellationError saying the
   * isolate running its actor ended (`SharedChannel.role`), and later sends fail, where they
   * waited for ever (keeping the process alive) or went into a mailbox nobody would read. Told
   * of a cancel (a `Channel.from` copy's in any isolate, native code's `kc_chan_cancel` or
   * destroy), it cancels the actor's task, as a cancel here does (`cancel`): before, a handler
   * busy elsewhere, not receiving, ran on.
   */
  #watch(): void {
    if (!this.#s.running || this.#s.unwatch !== null || disposedOf(this)) return;
    this.#s.unwatch = watchCancelOf(this, (told) => this.#cancelTask(told), true);
  }

  /**
   * Cancelling the mailbox cancels the actor (Kotlin's actor is a ChannelCoroutine: its
   * channel's `cancel` cancels the coroutine), here or from another isolate (the watch above):
   * its signal aborts, wherever the handler waits, and the actor ends cancelled. Not the
   * handler's dispose of its mailbox (`using mailbox`), which ends only the mailbox.
   *
   * The task gets the mailbox's own CancellationError (`#cancelTask`) where this cancel made it,
   * or the mailbox read as cancelled before (an earlier cancel, native code's destroy). Where it
   * was closed before (by the handler, with a cause or without, or by `Actor.close()`), its
   * receivers keep what that close left, but the task gets this cancel's cause, as Kotlin's
   * `ChannelCoroutine.cancel(cause)` cancels the coroutine with it whatever its channel's state
   * (as `produce`'s channel does, `ProducerChannel.cancel`): the cause itself when it is a
   * CancellationError, else a "Channel was cancelled" carrying it, or none. Before, the task got
   * the receivers' error: the close's cause wrapped, this cancel's cause lost.
   *
   * A cancel made elsewhere (another isolate's copy, native code's `kc_chan_cancel`) that the
   * watch has not told yet (its record in the ring) is an earlier cancel too: the watch is
   * withdrawn first, and its answer says so (the native cancel answers 0 to a closed channel and
   * a cancelled one alike), as `ProducerChannel.cancel` does.
   */
  override cancel(cause?: unknown): void {
    // What is no mailbox (an object made from the prototype, a Proxy of one): Channel's cancel
    // throws its named TypeError, not the engine's for the private read below.
    if (!(#s in Object(this))) return cancelChannel(this, cause);
    this.#cancel(cause);
  }

  /**
   * `cancel`'s body, which kcoro's own calls run (`cancelMailboxOwn`, the dispose's hook), not
   * the prototype's `cancel`: a caller who redefined it (`Object.getPrototypeOf(mailbox).cancel`)
   * steered an actor's end and its handler's dispose. Channel's own cancel likewise
   * (`cancelChannel`), not `super.cancel`, which reads `Channel.prototype.cancel` at each call.
   */
  #cancel(cause: unknown): void {
    const s = sharedStateOf(this);
    let before = s.cancelled;
    const unwatch = this.#s.unwatch;
    if (!before && !this.#s.inDispose && unwatch !== null) {
      // Once cancelled here, the watch has nothing left to tell: the task is cancelled below.
      this.#s.unwatch = null;
      before = unwatch();
    }
    cancelChannel(this, cause);
    if (this.#s.inDispose) return;
    const job = this.#s.job;
    if (job === null) return;
    if (before || !s.cancelled) return this.#cancelTask(undefined);
    // `own`: looks the cause up where another isolate closed it.
    cancelJob(job, taskCancelError(s, cause, () => taskErrorOf(this)));
  }

  /**
   * Cancels the task with the mailbox's own CancellationError (the cancel's `cause`
   * itself when it is one, else the one its waits reject with), so the handler's receive, its
   * signal's reason and `onDone` get one error. So where native code destroyed the mailbox:
   * its cause as it ended (the destroy's cancel's CancellationError its waits got, else one
   * saying "Channel was cancelled: native code destroyed it"), told by the watch or found by
   * the handler's own `mailbox.cancel()` (a no-op on the mailbox then). Before, that cancel
   * cancelled the task with no cause (a CancellationError of the job's own), the watch with
   * what it `told`. Nothing once the task is cancelling or final (its own end cancels the
   * mailbox: `cancelMailbox`).
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

  override [Symbol.dispose](): void {
    // What is no mailbox: Channel's dispose throws its named TypeError (`cancel`).
    if (!(#s in Object(this))) return disposeChannel(this);
    this.#dispose();
  }

  /** `[Symbol.dispose]`'s body, which kcoro's own calls run (`#cancel`'s rule). */
  #dispose(): void {
    if (this.#s.inDispose) return; // a hook of its own disposing it again: the first one ends it
    this.#s.inDispose = true;
    // A cancel made elsewhere before this dispose, which the withdrawn watch had not told yet:
    // the actor is cancelled with it after, as the watch would have (`#cancelTask`).
    let cancelledFirst: unknown = NOT_CANCELLED;
    try {
      // The watch goes first: the dispose's cancel, told to it, would cancel the actor. A cancel
      // that came before it still does (below): the watch answers that it came untold.
      const untold = !disposedOf(this) && stopWatching(this);
      if (!disposedOf(this) && isLibraryOpen(libraryOf(this)) && !sharedStateOf(this).cancelled) {
        // The dispose's own cancel, made first: it rejects the waits with the channel's one
        // CancellationError, which a closed result carries. Not once native code destroyed it
        // (its cancel does nothing then): the Channel's dispose then only releases it.
        this.#cancel(undefined);
        if (!destroyedSeenOf(this)) this.#s.disposedWith = taskErrorOf(this);
      }
      if (untold && isLibraryOpen(libraryOf(this))) {
        // A cancel after the handler's close: its own cause, as the watch tells it
        // (`#cancelTask`), read before the dispose releases the handle. Before, the close's.
        const late = destroyedSeenOf(this) ? undefined : cancelAfterCloseOf(this);
        const own = () => taskErrorOf(this);
        cancelledFirst = destroyedSeenOf(this)
          ? new CancellationError(MAILBOX_DESTROYED)
          : late !== undefined
          ? taskCancelError(sharedStateOf(this), late.cause, own)
          : own();
      }
      disposeChannel(this);
    } finally {
      this.#s.inDispose = false;
    }
    const job = this.#s.job;
    if (cancelledFirst !== NOT_CANCELLED && job !== null) cancelJob(job, cancelledFirst);
  }
}

/** Sets the Job of `a` (its `#job`), once: set by a static block of ActorImpl. */
let setJob: <M>(a: ActorImpl<M>, job: Job) => void;
/** The actor's task ended (its `#finish`): set by a static block of ActorImpl. */
let finishActor: <M>(a: ActorImpl<M>, cause: unknown) => void;

/** What a send to an actor whose handler disposed of its mailbox rejects with. */
const DISPOSED = "the actor's handler disposed of its mailbox";

class ActorImpl<M> implements Actor<M> {
  /**
   * The only field structured cloning sees (`job` is a getter), so `postMessage` of an actor
   * throws a DataCloneError with this symbol's description as its message (it cloned as
   * `{ job: { context: {} } }`, no error).
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  readonly #mailbox: Mailbox<M>;
  /** Set when the task has ended and the mailbox is gone. */
  #done: { cause: unknown } | null = null;
  /**
   * The Job `launch` returned (`job`, a getter): set once, by `actor()` (`setJob`). Before, a
   * plain field: `a.job = x` changed what `toString` and inspection read, and `a._finish()`
   * (public then, now `finishActor`) cancelled and freed the mailbox of an actor still running,
   * its handler's next receive failing it with the freed channel's InvalidHandleError.
   */
  #job!: Job;

  static {
    setJob = (a, job) => {
      a.#job = job;
    };
    finishActor = (a, cause) => a.#finish(cause);
  }

  /**
   * Started lazily (`ActorOptions.lazy`): its first `send`, `trySend` or `close` starts its job
   * (`#startLazy`), as Kotlin's `LazyActorCoroutine` does.
   */
  readonly #lazy: boolean;

  constructor(mailbox: Mailbox<M>, lazy: boolean) {
    this.#mailbox = mailbox;
    this.#lazy = lazy;
    Object.freeze(this); // `_notCloneable` fixed (errors.ts, `refuseAsValue`)
  }

  /** The actor's task's Job: read-only (an assignment throws in strict mode). */
  get job(): Job {
    if (!(#mailbox in Object(this))) throw notActor(this, "read actor job");
    return this.#job;
  }

  /**
   * A lazy actor's `send`, `trySend` or `close` starts its job first, as Kotlin's
   * `LazyActorCoroutine` starts it before it sends or closes: a no-op once started (or
   * cancelled, or final). Only a kcoro Job: one of another kind (a `CoroutineScope` of the
   * caller's own returned it) is started by whoever made it, its `start` the caller's code.
   */
  #startLazy(): void {
    if (!this.#lazy) return;
    const job: unknown = this.#job;
    if (isJob(job)) startJob(job); // JobSupport's own start, not one redefined on its prototype
  }

  /** A lazy actor's kcoro Job not started yet (nor cancelled): `#startLazy` would start it. */
  #unstarted(): boolean {
    const job: unknown = this.#job;
    return isJob(job) && jobStateOf(job) === "new";
  }

  /**
   * Throws the CodecError of a lazy actor's first message, before its start, where the mailbox's
   * codec refuses it: so a call refused for what it was passed starts nothing (before, the
   * handler ran first). Only a message that is no object (a function, a symbol, a primitive):
   * checking one runs nothing of the caller's, and a function or symbol, which no codec carries,
   * is never copied. An object is left to the send, after the start (as Kotlin's
   * LazyActorCoroutine starts before its send looks at the element): its check is its copy (a
   * structured clone, its getters run), which the send makes again. Before, it was copied twice,
   * its getters run twice, where a started actor's send runs them once.
   */
  #refusedBeforeStart(message: M, op: "send" | "trySend"): void {
    if (typeof message !== "object" || message === null) checkValueOf(this.#mailbox, message, op);
  }

  /**
   * The mailbox takes messages: the task has not ended, and its handler has not disposed of the
   * mailbox (a `using mailbox`, which ends the channel while the task may run on).
   */
  #open(): boolean {
    const mailbox = this.#mailbox;
    return this.#done === null && !disposedOf(mailbox) && !destroyedSeenOf(mailbox);
  }

  /**
   * The ClosedSendError of a send the mailbox can no longer take, naming the call made (`op`):
   * a `trySend`'s closed result said "Cannot send: ...", as if a send had been called.
   */
  #closedError(op: "send" | "trySend"): ClosedSendError {
    if (this.#done === null) {
      return new ClosedSendError(
        `Cannot ${op}: ${destroyedSeenOf(this.#mailbox) ? DESTROYED : DISPOSED}`,
      );
    }
    const cause = this.#done.cause;
    return new ClosedSendError(
      `Cannot ${op}: the actor has finished`,
      cause === undefined ? {} : { cause },
    );
  }

  send(message: M, options?: WaitOptions): Promise<void> {
    // On what is no Actor (an object made from its prototype, a Proxy of one), `#open()` throws
    // the engine's "Receiver must be an instance of class ActorImpl": named (`notActor`) and
    // rejected. Checked only in the catch, at no cost to an actor's send.
    let open: boolean;
    try {
      if (this.#lazy && this.#unstarted()) {
        // A lazy actor's first send: its options are checked before the start, so a send refused
        // for them (a `signal` that is no AbortSignal) starts nothing, as a refused call changes
        // nothing; read once, the send gets what was read. Before, the handler ran first.
        let signal: AbortSignal | undefined;
        try {
          signal = signalOf("send", options);
        } catch (e) {
          return Promise.reject(e);
        }
        options = signal === undefined ? undefined : { signal };
        // So is one whose message the mailbox's codec cannot carry, where that is told without
        // a copy (`#refusedBeforeStart`): the CodecError it rejects with comes before the start.
        try {
          this.#refusedBeforeStart(message, "send");
        } catch (e) {
          return Promise.reject(e);
        }
        this.#startLazy();
      }
      open = this.#open();
    } catch (e) {
      if (#mailbox in Object(this)) throw e; // an actor's: as before
      return Promise.reject(notActor(this, "send"));
    }
    if (open) {
      // A send still waiting when the handler disposes of the mailbox is rejected by the
      // dispose's cancel: it gets the ClosedSendError a send after the dispose gets (its message
      // went to the hook with the cancel, once), not that CancellationError, which read as the
      // sender's own cancellation (a task catching cancellations as such went on as cancelled).
      // Only that cancel's error, by identity: its own signal's reason, a failed or cancelled
      // actor's CancellationError (the mailbox cancelled before the dispose) stay as they are.
      const mailbox = this.#mailbox;
      const sent = sendChannel(mailbox, message, options); // not a redefined `send`
      if (_sentAtOnce(sent)) return sent; // delivered or queued at once: no promise more
      if (destroyedSeenOf(mailbox)) {
        // Native code destroyed the mailbox (`kc_chan_destroy` through its `handle`) before
        // this send reached it, which learnt it (`#open()` did not know): refused as after the
        // actor finished, a ClosedSendError, not the cancelled channel's CancellationError, which
        // read as the sender's own cancellation. The mailbox's send handed the message to the
        // hook (as on a cancelled channel), once. A send waiting at the destroy gets its
        // cancel's CancellationError.
        sent.catch(() => {});
        return Promise.reject(this.#closedError("send"));
      }
      return sent.then(undefined, (e) => {
        const disposed = mailboxState(mailbox).disposedWith;
        if (disposed !== undefined && e === disposed) {
          throw new ClosedSendError(`Cannot send: ${DISPOSED}`);
        }
        throw e;
      });
    }
    // The mailbox is gone (the task ended, or its handler disposed of it): refused as its send on
    // a closed channel refuses (bad options and an aborted signal first, then Kotlin's
    // onClosedSend: the message goes to the hook). Before, a send after the handler's dispose
    // rejected with the disposed channel's InvalidHandleError.
    let signal: AbortSignal | undefined;
    try {
      signal = signalOf("send", options);
    } catch (e) {
      return Promise.reject(e);
    }
    // An aborted signal rejects with its reason, the message hooked all the same (Kotlin's
    // `send` into a closed channel hands it, cancelled or not). Before, it stayed the caller's.
    // Through a closed library it rejects with the reason only, as a Channel's pre-aborted send
    // does (`#abortedSend`) and this actor's did while it ran: before, a finished actor's handed
    // the message to the hook there, a running one's did not.
    if (signal !== undefined && isAborted(signal)) {
      if (!isLibraryOpen(libraryOf(this.#mailbox))) return Promise.reject(abortReason(signal));
      return this.#refuse(message, signal);
    }
    // Through a closed library: LibraryClosedError, nothing hooked, as a Channel's send there
    // (its `#sym`, before the value is looked at) and this actor's while it ran (its mailbox's).
    // Before, a finished actor's handed the message to the hook and rejected with
    // ClosedSendError.
    if (!isLibraryOpen(libraryOf(this.#mailbox))) {
      return Promise.reject(new LibraryClosedError("send"));
    }
    return this.#refuse(message);
  }

  /**
   * A send the mailbox can no longer take: the message to the hook, a ClosedSendError. The
   * mailbox's own path hands it (`undeliveredOf`), so the hook is called as a Channel's: a plain
   * call (`this` undefined), its errors reported, never from inside itself (a message refused
   * while it runs, its own send to this actor say, waits its turn with what the mailbox drops).
   * Before, it was called here as a method (`this` the Actor), inside itself as deep as a hook
   * that re-sent went. The message is checked by the mailbox's codec first, as a send into the
   * closed mailbox checks it (and a producer's send after its cancel, src/produce.ts): one it
   * cannot carry (a function) rejects with that CodecError and is not hooked. Before, the hook
   * got it.
   */
  #refuse(message: M, aborted?: AbortSignal): Promise<void> {
    try {
      checkValueOf(this.#mailbox, message);
    } catch (e) {
      return Promise.reject(e);
    }
    undeliveredOf(this.#mailbox, message);
    return Promise.reject(aborted === undefined ? this.#closedError("send") : abortReason(aborted));
  }

  trySend(message: M): TrySendResult {
    let open: boolean;
    try {
      if (this.#lazy && this.#unstarted()) {
        // A lazy actor's first trySend of a message the mailbox's codec cannot carry throws that
        // CodecError before the start, as send's rejects (above): before, the handler ran first.
        this.#refusedBeforeStart(message, "trySend");
        this.#startLazy();
      }
      open = this.#open();
    } catch (e) {
      throw #mailbox in Object(this) ? e : notActor(this, "trySend"); // as send's
    }
    if (!open) {
      // Through a closed library: throws LibraryClosedError, as a Channel's trySend (before the
      // value is looked at) and this actor's while it ran. Before, a finished actor's answered
      // `closed`.
      if (!isLibraryOpen(libraryOf(this.#mailbox))) throw new LibraryClosedError("trySend");
      // The message is checked by the mailbox's codec first, as a closed Channel's trySend
      // checks it (and as `#refuse` does for a send): one it cannot carry (a function) throws
      // that CodecError, the caller's bug, where it answered `closed` before.
      checkValueOf(this.#mailbox, message, "trySend"); // "Cannot trySend: ...", as a Channel's
      // The task's failure or cancellation, as Kotlin's mailbox closed with it answers; else
      // the ClosedSendError a send rejects with (Kotlin's `closed(sendException)`), where it
      // had no cause before.
      const cause = this.#done?.cause;
      return { state: "closed", cause: cause === undefined ? this.#closedError("trySend") : cause };
    }
    const r = trySendChannel(this.#mailbox, message); // not a redefined `trySend`
    // Native code destroyed the mailbox, as this call learnt: closed, as after the actor
    // finished, its cause the ClosedSendError a send rejects with (the mailbox answers as a
    // cancelled channel, its CancellationError).
    if (r.state === "closed" && destroyedSeenOf(this.#mailbox)) {
      return { state: "closed", cause: this.#closedError("trySend") };
    }
    return r;
  }

  /**
   * False, doing nothing, once the mailbox is gone (the task ended, or its handler disposed of
   * it: before, that threw the disposed channel's InvalidHandleError).
   */
  close(): boolean {
    if (!(#mailbox in Object(this))) throw notActor(this, "close actor");
    if (!this.#open()) {
      this.#startLazy(); // a no-op: an actor whose mailbox is gone has started, or never will
      // Through a closed library: LibraryClosedError, as this actor's close while it ran (its
      // mailbox's, "Cannot close channel: ...") and any call through it. Before, false.
      if (!isLibraryOpen(libraryOf(this.#mailbox))) throw new LibraryClosedError("close channel");
      return false;
    }
    if (this.#lazy) return this.#closeThenStart();
    // False too once native code destroyed the mailbox (as on any cancelled channel).
    // Channel's own close, not `Channel.prototype.close` (a caller may redefine it).
    return closeChannel(this.#mailbox);
  }

  /**
   * A lazy actor's `close()`: Kotlin's `LazyActorCoroutine.close` closes, then starts, so the
   * handler begins on a closed mailbox (`isClosedForSend`), processes what was queued and ends.
   * Before, it was started first and began on an open one. Started also when the close throws
   * (the library closed), so that no actor is left that nothing would start.
   */
  #closeThenStart(): boolean {
    try {
      return closeChannel(this.#mailbox);
    } finally {
      this.#startLazy();
    }
  }

  /** The task ended: cancel the mailbox (senders waiting reject) and free it. */
  #finish(cause: unknown): void {
    this.#done = { cause };
    cancelMailbox(this.#mailbox, cause);
    disposeMailbox(this.#mailbox); // its own dispose, not its prototype's (`cancelMailbox`)
  }

  toString(): string {
    // On what is no Actor it threw "Cannot read properties of undefined (reading 'state')".
    if (!(#mailbox in Object(this))) throw notActor(this, "convert actor to string");
    // Its job's state as the print reads it (`[customInspect]`): a kcoro Job's by `jobStateOf`
    // (no `state` getter of the caller's runs), a Job of another kind's by its `state`, left out
    // (`Actor`) where that throws. Before, `this.job.state` ran the caller's getter, and what it
    // threw escaped `String(actor)` and a template literal.
    const job: unknown = this.#job;
    if (isJob(job)) return `Actor(${jobStateOf(job)})`;
    try {
      // Its text over 4096 characters by its head and length (`cutShort`): the caller's getter
      // may answer anything, a string of 2**28 characters printed whole. A bigint of more than
      // 4094 digits by its size (`describe`), as a print shows it: its decimal text took more
      // than linear time (minutes for the engine's largest), only to be cut.
      const state: unknown = (job as Job).state;
      // A BigInt wrapper (`Object(10n ** 10_000_000n)`) too, by the value it wraps (read by
      // BigInt.prototype's own valueOf, as the module loaded: no code of the caller's runs):
      // `String` converted it whole (~1 s for one of 2**22 bits), only to be cut.
      const big = typeof state === "bigint" ? state : wrappedBigint(state);
      if (big !== undefined) {
        const said = describe(big);
        if (said.endsWith(" bits")) return `Actor(${said})`;
      }
      // `String`, not a template literal: a symbol by its description (`Actor(Symbol(s))`), where
      // the template's TypeError left the state out (`Actor`), though the print shows it.
      // An array's huge bigints by their size too (`stringOf`); one too big to check: `Actor`.
      return `Actor(${cutShort(stringOf(state), "state")})`;
    } catch {
      return "Actor";
    }
  }

  /**
   * `Actor`, the name it prints with (`[customInspect]`): `Object.prototype.toString` says
   * `[object Actor]` (`String(x)` is its `toString()`, `Actor(active)`); error messages name an
   * argument of the wrong kind that is one "an Actor" (`describe`, by this brand check). Only on an
   * instance: an object made from the prototype (`Object.create`) stays `[object Object]`, so a
   * message does not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #mailbox in Object(this) ? "Actor" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print an actor: `Actor { [[state]]: "active" }`,
   * its job's state (JavaScript state only; `[[...]]`: no property of it, `inspectAs`).
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#mailbox in Object(this))) return notA("Actor");
    // A kcoro Job's state as kcoro reads it (`jobStateOf`: no subclass's getter runs); a Job of
    // another kind's (a CoroutineScope of the caller's own returned it) by its `state`, left out
    // where that throws. Before, a `state` getter that threw made Deno.inspect throw.
    const job: unknown = this.#job;
    const facts: Record<string, unknown> = {};
    if (isJob(job)) facts["[[state]]"] = jobStateOf(job);
    else if (job !== undefined) {
      try {
        facts["[[state]]"] = (job as Job).state;
      } catch {
        // the caller's getter threw: the fact is left out, as a native read that fails is
      }
    }
    return inspectAs("Actor", facts, inspect, options);
  }
}

/**
 * Runs `handler(mailbox, task)` as a child task of `scope` and returns its {@linkcode Actor}:
 * messages sent to it queue in `mailbox` (a channel of `capacity`) for the handler to receive.
 * The rules are in README.md, "Producers, actors and native scopes from TypeScript".
 *
 * @example
 * ```ts
 * import { actor, coroutineScope } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const done: unknown[] = [];
 * const total = await coroutineScope(async (scope) => {
 *   let sum = 0;
 *   const counter = actor<number>(scope, async (mailbox) => {
 *     for await (const n of mailbox) sum += n; // one message at a time: no locks needed
 *   }, { capacity: 8, onDone: (cause) => done.push(cause) });
 *   for (let i = 1; i <= 10; i++) await counter.send(i);
 *   counter.close(); // the queued messages are still processed
 *   await counter.job.join();
 *   return sum;
 * });
 * assert.equal(total, 55);
 * assert.deepEqual(done, [undefined]);
 * ```
 */
export function actor<M>(
  scope: CoroutineScope,
  handler: (mailbox: Channel<M>, task: CoroutineScope) => unknown,
  options: ActorOptions<M> = {},
): Actor<M> {
  const op = "start actor";
  // kcoro's own scope is one (a brand check); its `launch` is found by `launchOwn` below.
  if (!isScopeObject(scope) || Object.hasOwn(scope, "launch")) checkScope(op, scope);
  checkFunction(op, "handler", handler);
  checkOptions(op, options);
  const { capacity = "rendezvous", context, lazy, onDone, onUndeliveredElement } = options;
  checkOptionNames(op, options, ACTOR_OPTIONS);
  checkContext(op, context);
  if (lazy !== undefined && typeof lazy !== "boolean") {
    throw new TypeError(`Cannot ${op}: lazy must be a boolean, received ${describe(lazy)}`);
  }
  if (onDone !== undefined) checkFunction(op, "onDone", onDone);
  if (onUndeliveredElement !== undefined) {
    checkFunction(op, "onUndeliveredElement", onUndeliveredElement);
  }
  // Under this call's name: the Channel's own check said "Cannot create channel", a call
  // nobody made.
  checkCapacity(op, capacity);
  const mailbox = new Mailbox<M>(
    capacity,
    onUndeliveredElement === undefined ? {} : { onUndeliveredElement },
  );
  hookChannel(mailbox, mailboxHooks); // before anything can share it
  // Named in its share(): a copy whose actor's isolate ended says "its actor".
  sharedStateOf(mailbox).role = "actor";
  const st = mailboxState(mailbox);
  const a = new ActorImpl(mailbox, lazy === true);
  // The signals whose abort cancels the mailbox (`cancelOnAbort`), and their listeners' removals,
  // run as the actor ends (`finish`).
  const watched: AbortSignal[] = [];
  const detach: (() => void)[] = [];
  /**
   * Stops the actor at once as `signal` (its task's, or its Job's) aborts: drops the queue and
   * wakes the handler's receive with the CancellationError. Listened to until the task is final,
   * not only while the handler runs (Kotlin's ActorCoroutine cancels its channel on entering
   * `cancelling`, `onCancelling`): a task that failed, or was cancelled after its handler
   * returned, waits for its children, and meanwhile its mailbox took messages that nobody would
   * ever receive. A listen that throws throws (named: `listenAbortNamed`).
   */
  const cancelOnAbort = (signal: AbortSignal): void => {
    // Ended already: nothing is left to cancel, and `finish` has run its `detach`, so a listener
    // added now would never go (as a producer's `closeOnCancel`).
    if (finished || watched.includes(signal)) return;
    watched.push(signal);
    // By AbortSignal's own members (errors.ts, `isAborted`): the task's signal may be a
    // caller's, with members of its own that throw.
    // Only once the signal aborted: a call before (the caller's code that reached the listener
    // through the engine's listeners property) changes nothing. Before, it cancelled the
    // mailbox, and so the actor. Nor once the actor has finished: its mailbox is gone.
    const onAbort = (event?: Event) => {
      if (abortHeard(signal, onAbort, event) && !finished) {
        cancelMailbox(mailbox, abortReason(signal));
      }
    };
    // One aborted before or during the listen has cancelled the mailbox already
    // (`listenAbortNamed`), keeping no listener: before, the handler ran on, its mailbox taking
    // messages.
    if (listenAbortNamed(op, signal, onAbort)) return;
    // The listen may run the caller's code (an accessor of its own for the engine's listeners
    // property, on a prototype under the signal), which may end the actor (complete a Job it
    // ends with): `finish` ran its `detach` without this listener, which goes now. Before, it
    // stayed on the signal (a long-lived one of the caller's), holding the freed mailbox.
    if (finished) unlistenAbort(signal, onAbort);
    else detach.push(() => unlistenAbort(signal, onAbort));
  };
  /**
   * A signal the actor watches, other than `own` (its task's), that has aborted: the Job
   * `launch` returned, or the one its task names (`watchNamed`), was cancelled (or failed).
   */
  const jobAborted = (own: AbortSignal | null): AbortSignal | undefined =>
    watched.find((s) => s !== own && isAborted(s));
  // The scope's launch threw or returned no Job (its cleanup below): the mailbox was freed under
  // a handler it may have started.
  let abandoned = false;
  // The actor's end, once: the watch goes, the mailbox ends, and `onDone` runs with the task's
  // cause. On the job `launch` returned; where the launch threw or returned no Job, on the task
  // it started (`job`) instead, as Kotlin's `onCompletion` runs however the actor completes,
  // exceptionally too. Before, `actor()` threw before attaching it: the task was cancelled and
  // `onDone` never ran, so what it released (a connection the handler held, say) leaked.
  let finished = false;
  /**
   * The task's own Job where it is kcoro's (read as the handler starts), and the Job `launch`
   * returned (once it did): where they differ (a scope of the caller's own that returns another
   * kcoro Job than the task's), the first of them to complete ends the actor (`finish`), and the
   * completion handler left on the other goes (`ending`), with the listener on that Job's signal
   * (`detach`). Before, only the returned Job's completion ended it: a task that completed first
   * left its mailbox taking messages and `onDone` waiting, and a listener and a completion
   * handler on that Job, until it completed too (a leak on a long-lived one).
   */
  let taskJob: JobSupport | null = null;
  let launched: Job | null = null;
  const ending: Disposable[] = [];
  /**
   * `fold`: run as a completion handler of a kcoro Job not final yet (the Job `launch` returned,
   * or the task's own): what `onDone` throws is let out, so the Job reports it with its other
   * handlers' exceptions, in its one CompletionHandlerError (first as its cause, the others
   * suppressed), as Kotlin's `onCompletion` is an ordinary completion handler. Before, it was
   * reported on its own, beside the Job's. Elsewhere (a Job of another kind, one final already so
   * that this runs inside `actor()`, a task with no Job of ours) it is reported on its own.
   */
  const endActor = (cause: unknown, fold: boolean) => {
    if (finished) return;
    finished = true;
    for (const handle of ending) handle[Symbol.dispose]();
    stopWatching(mailbox);
    for (const undo of detach) undo();
    // The actor has ended: the mailbox's cancel below ends the mailbox only, no Job. Before, it
    // cancelled the Job its task named (`Mailbox.cancel`): where that is not the task that ran
    // the handler (a scope of the caller's own whose task names a long-lived Job, and whose
    // returned Job completed first), a Job the actor does not own ended cancelled with it.
    st.job = null;
    finishActor(a, cause);
    // Reported as any completion handler's exception, also when the job was final already
    // (a cancelled scope) and this runs inside actor() itself.
    if (onDone === undefined) return;
    if (fold) onDone(cause);
    else runCompletionHandler(reportContext, "an actor's onDone", onDone, cause);
  };
  /**
   * Where onDone's throw is reported when it runs on its own (not `fold`): the task's context, as
   * a kcoro Job reports its handlers' throws in its own (Kotlin's `handleOnCompletionException`
   * in the coroutine's context), so a `context` option's entries (its CoroutineExceptionHandler)
   * count as `launch` adds them. Before, the scope's alone: an actor whose job was final inside
   * `actor()` (its scope cancelled) reported to the scope's handler, the same actor launched in
   * an active scope to its own. A scope of the caller's own whose `context` is no Context (none
   * of it is read): the option's entries alone, as `launch` would put them over an empty one;
   * without the option, that `context` as it is (`reportError`). Before, the option was ignored
   * there, and onDone's throw went to `reportError` past the option's handler. Read only once
   * onDone has thrown (`runCompletionHandler`); a `context` getter of the caller's that throws
   * counts as no Context, as a throwing `signal` is none (`taskSignal`). Before, it was read
   * ahead of onDone, and such a getter's throw left the completion handler in onDone's place:
   * onDone never ran (what it releases leaked), and what it would have thrown was not reported.
   */
  const reportContext = (): Context => {
    let base: unknown;
    try {
      // A kcoro scope's own context (`contextOf`), not a `context` getter redefined on its
      // prototype; a scope of the caller's own, its `context` as it answers.
      base = isJob(scope) ? contextOf(scope) : scope.context;
    } catch {
      base = undefined; // no Context: the option's entries alone, or `reportError`
    }
    if (context === undefined) return base as Context;
    return isContext(base) ? childContext(base, context) : context;
  };
  /**
   * The actor's end, what `onDone` throws reported on its own: one argument only, as a Job of
   * another kind may call its handlers with more (`h(cause, job)`), which `fold` took for true, so
   * that onDone's throw reached that Job's code unreported.
   */
  const finish = (cause?: unknown) => endActor(cause, false);
  /** `finish` as a completion handler of a kcoro Job not final yet (`fold`). */
  const finishFolded = (cause?: unknown) => endActor(cause, true);
  /** Whether `endWithTask` added its completion handler (once only). */
  let withTask = false;
  /**
   * The task's own Job ends the actor too, once both Jobs are known and they differ; or `named`,
   * at once: a handler started inside `launch` under a task naming a kcoro Job not its own.
   */
  const endWithTask = (named = false): void => {
    if (taskJob === null || withTask || finished) return;
    if (!named && (launched === null || taskJob === launched)) return;
    withTask = true;
    ending.push(onJobCompletion(taskJob, isCompletedJob(taskJob) ? finish : finishFolded));
  };
  /** The task's signal, once the block has read it (null: none, or not read yet). */
  let taskSignalRead: AbortSignal | null = null;
  /**
   * A kcoro Job the task merely names (its signal not the task's), other than the one `launch`
   * returned, stops the actor at its cancellation (or failure) too, not only at its completion
   * (`endWithTask`): its signal is watched as the returned Job's (`cancelOnAbort`), once both
   * Jobs and the task's signal are known. Before, a named Job cancelled while it waited for its
   * children left the actor running, its mailbox taking messages, until that Job completed.
   */
  const watchNamed = (): void => {
    if (taskJob === null || launched === null || taskJob === launched || finished) return;
    const named = signalOfJob(taskJob);
    if (named !== taskSignalRead) cancelOnAbort(named);
  };
  /**
   * Whether the block began (inside `launch`, or later where that launch deferred it): an actor
   * whose block had not begun as its launch failed ends there (`abandon`).
   */
  let entered = false;
  /**
   * The scope's launch threw or returned no Job, or its Job's invokeOnCompletion threw: `cause`,
   * the error `actor()` throws.
   */
  const abandon = (cause: unknown): void => {
    // The scope's launch threw or returned no Job, maybe after running the handler at once (to
    // its first await): its task, known from its start (`job`), is cancelled with the
    // mailbox's CancellationError (`Mailbox.cancel`), as produce's cleanup cancels its producer.
    // Before, the mailbox was only disposed of, which is no cancel of the actor: a handler busy
    // elsewhere ran on, and the scope under that launch waited for it.
    abandoned = true;
    cancelMailbox(mailbox, undefined);
    disposeMailbox(mailbox);
    // Where the cancel could not be made (the library closed). A kcoro Job's own cancel and
    // invokeOnCompletion (`cancelJob`, `onJobCompletion`); a Job of the caller's, its own.
    if (st.job !== null) cancelJob(st.job);
    // Its task, started, ends with that cancel: `onDone` runs then (`finish`), as the job
    // `launch` did not return would have run it. One not started yet attaches it as it starts.
    if (st.job !== null) onJobCompletion(st.job, finish);
    // Its block not begun (a launch that threw, or returned no Job, before running it; a lazy
    // actor's too): the actor ends now, `onDone` getting the launch's error, as Kotlin's
    // `onCompletion` runs however the actor completes. Before, only the block's start ran it: a
    // launch that never runs the block (it failed) left `onDone` unrun, and what it releases
    // leaked. A block the launch deferred and starts later never runs the handler (`abandoned`
    // below), and `onDone` does not run again (`finished`).
    if (!entered) finish(cause);
  };
  // A CoroutineScope of the caller's own may throw or return anything: the mailbox is freed.
  const job = launchChecked<Job>(
    op,
    scope,
    async (task: CoroutineScope) => {
      entered = true;
      // The actor ended before its block began (a deferred start after its launch failed, which
      // ran `onDone` then, or after the Job `launch` returned completed): the block ends cancelled
      // at once, before it watches its task's signal. Before, that watch (`cancelOnAbort`) came
      // first, and nothing withdrew it (`finish` had run): a long-lived signal of the caller's
      // kept the listener, and the freed mailbox, until it aborted.
      if (finished) throw new CancellationError(abandoned ? ABANDONED : ENDED_FIRST);
      // Null for a task of the caller's own with no AbortSignal (`taskSignal`): only a kcoro Job
      // that `launch` returned stops it at once then (below). Before, its `addEventListener` threw
      // a TypeError here, ahead of the abandoned check below, and `onDone` never ran.
      // A kcoro task's own signal (`signalOfJob`), not a getter redefined on its prototype.
      const signal = isJob(task) ? signalOfJob(task) : taskSignal(task);
      // Its task, for a cancel of the mailbox (`Mailbox.cancel`), from the start: the handler may
      // cancel it before its first await, before `launch` returned the job. Before the listen
      // below too: a signal aborted by then cancels the mailbox there, and so the task, as one
      // aborted after.
      // Read once: a task of the caller's own may have a getter for it (it ran twice).
      // A getter that throws names no kcoro Job, as a throwing `signal` is none (`taskJobOf`).
      const read = taskJob = taskJobOf(task);
      // The mailbox's cancel cancels the Job that runs the handler: the task's own (kcoro's task
      // itself, or a Job whose signal is the task's), else the one `launch` returns (below). Not a
      // Job the task merely names (a long-lived one of the caller's, its signal another): before,
      // a cancel of the returned Job aborted the task's signal, cancelled the mailbox, and so that
      // Job, which outlives the actor, ended cancelled.
      if (
        read !== null &&
        ((read as unknown) === task || (signal !== null && signalOfJob(read) === signal))
      ) {
        st.job = read;
      }
      // No Job to end with: a scope of the caller's own gave the block a task whose `job` is no
      // kcoro Job (or one it only names, not its own), and its `launch` has not returned one (it
      // runs the block at once, or it deferred the start and failed). Should that launch fail,
      // nothing attaches `onDone` (`finish`) to a job, so the block's own end runs it.
      const untracked = st.job === null;
      // A launch that deferred the start (a scope of the caller's own), then threw or returned no
      // Job: its cleanup ended the mailbox before the handler began, so the handler never runs and
      // the task ends cancelled, `onDone` with it. Before, the handler ran on the freed mailbox,
      // and its first receive's InvalidHandleError failed the scope.
      if (abandoned) {
        const cancelled = new CancellationError(ABANDONED);
        // Without a Job of ours, at once, with the cancellation the block ends with: before,
        // `onDone` never ran.
        if (untracked) finish(cancelled);
        else onJobCompletion(st.job!, finish);
        throw cancelled;
      }
      // Started after `launch` returned (deferred): the task's own Job is known only now.
      endWithTask();
      // The actor ended before its handler began (started late, under a task naming a Job
      // completed before, or after the Job `launch` returned completed): its mailbox was freed, so
      // the handler never runs and the task ends cancelled, as an abandoned one. Before, the
      // handler ran on the freed mailbox, and its first receive's InvalidHandleError failed the
      // scope.
      if (finished) throw new CancellationError(ENDED_FIRST);
      // Cancelled before its handler began (started late, after the kcoro Job `launch` returned
      // was cancelled, its completion still to come): that cancel cancelled the mailbox
      // (`cancelOnAbort`), so the handler never runs and the task ends cancelled, with the
      // cancellation as its cause (`onDone` runs as that Job completes), as kcoro's own task
      // cancelled before its deferred start never runs its block (src/scope.ts, `#startLater`).
      // Before the listen below too. Before, the handler ran on the cancelled mailbox: what it did
      // before its first receive (all of it, in one that never receives) went on past that cancel.
      // That Job's signal, also where it is the task's own (the returned Job runs the handler), as
      // a producer's: `jobAborted` looks past that one, which ended such a handler with
      // SIGNAL_FIRST, a task of the caller's own's wording, where a producer says CANCELLED_FIRST.
      if (launched !== null && isJob(launched) && isAborted(signalOfJob(launched))) {
        throw new CancellationError(CANCELLED_FIRST, { cause: abortReason(signalOfJob(launched)) });
      }
      // A listen that throws (only a signal whose engine state the caller redefined) fails the
      // task by name, before the handler runs, as createScope refuses such a signal. Before, with
      // the listen's raw error. After the checks above, as a producer's (src/produce.ts): an actor
      // that ended before its handler began (abandoned, or a Job it ends with completed first)
      // ends cancelled, its signal not listened to. Before, the listen came first, and one that
      // throws failed such a task by name instead.
      if (signal !== null) cancelOnAbort(signal);
      taskSignalRead = signal;
      watchNamed(); // started after `launch` returned (deferred): the named Job is known now
      // Started at once (inside `launch`, which has not returned) under a task naming a kcoro Job
      // not its own: that Job ends the actor at its completion and its cancel (as `endWithTask`
      // and `watchNamed` make it, which wait for `launch`'s Job), watched now, so a Job completed
      // or cancelling before refuses the handler (below) as a deferred start does. Before, the
      // handler ran on the mailbox, which that Job then ended as `launch` returned.
      if (launched === null && read !== null && st.job !== read) {
        endWithTask(true);
        cancelOnAbort(signalOfJob(read));
      }
      // Its task's signal aborted before its handler began (before or during the listen above,
      // which cancelled the mailbox with its reason and kept no listener): only under a scope of
      // the caller's own, as kcoro's own never starts a cancelled task's block. The handler never
      // runs and the task ends cancelled, the reason its cause, as kcoro's own scope never runs a
      // block launched into it cancelled, nor one cancelled before its deferred start. Before, the
      // handler ran on the cancelled mailbox: what it did before its first receive went on past
      // that abort.
      if (signal !== null && isAborted(signal)) {
        const cancelled = new CancellationError(SIGNAL_FIRST, { cause: abortReason(signal) });
        // As a handler's end (below): begun inside a launch that then fails, with no Job of ours
        // to end with, `onDone` runs now, with what the block ends with (`abandon` leaves it to
        // a block that began). A microtask later, `actor()` has returned or thrown.
        if (untracked && !abandoned) await null;
        if (abandoned && untracked) finish(cancelled);
        throw cancelled;
      }
      // The listen above may run the caller's code (an accessor of its own for the engine's
      // listeners property, on a prototype under the signal), which may have ended the actor (a
      // Job it ends with completed) or cancelled a Job it ends with (the returned one, or the one
      // its task names, watched just now): the handler never runs, as where that came before
      // (above). Before, it ran on the freed mailbox, and its first receive's InvalidHandleError
      // failed the scope (or on the cancelled one).
      if (finished) throw new CancellationError(ENDED_FIRST);
      const gone = jobAborted(signal);
      if (gone !== undefined) {
        throw new CancellationError(CANCELLED_FIRST, { cause: abortReason(gone) });
      }
      // Until the task is final: its end withdraws the owned watch before the mailbox is
      // cancelled and freed (`_finish`). Only the handler has the mailbox, so it escapes (and is
      // watched, `mailboxHooks.escaped`) after this, never before the task began as a producer's
      // channel may.
      st.running = true;
      try {
        await handler(mailbox, task);
      } catch (e) {
        // A handler that is no async function and threw at once ended the block inside `launch`,
        // before it failed or returned: a microtask later it has done either (actor() is
        // synchronous). Before, `abandoned` was still false here, and the failure that followed
        // found no job to attach `onDone` to: it never ran.
        if (untracked && !abandoned) await null;
        // Its mailbox freed by the cleanup of a launch that threw or returned no Job, which
        // cancelled this task first: the handler, busy elsewhere then, met the freed mailbox
        // after (its own InvalidHandleError, `_raised`), and ends cancelled, as a producer sending
        // into the channel its consumer disposed does. Before, that error failed the scope.
        // Native code destroyed the mailbox (`kc_chan_destroy` through its `handle`): its receive
        // rejects with a CancellationError, which ends the task cancelled as any, but its
        // `share()` or `handle` throw its InvalidHandleError (no live channel to hand out): the
        // actor ends as cancelled then too, as a producer whose channel it destroyed (Kotlin's
        // actor ends with its cancelled channel), not failed with it.
        const error = abandoned && signal !== null && isAborted(signal) && isOwnError(mailbox, e)
          ? abortReason(signal)
          : destroyedUnder(mailbox, e)
          ? new CancellationError(MAILBOX_DESTROYED, { cause: e })
          : e;
        // Started at once under a task not ours by a launch that then failed: `onDone` gets what
        // the block ends with (there is no job to end with). Before, it never ran.
        if (abandoned && untracked) finish(error);
        throw error;
      }
      if (abandoned && untracked) finish(undefined);
    },
    abandon,
    launchOptions(lazy === true, context),
    // kcoro's own scope (no own `launch` of the caller's): Coroutine's own launch (`launchOwn`),
    // not one a caller redefined on its prototype.
    isScopeObject(scope) && !Object.hasOwn(scope, "launch")
      ? (b, o) => launchOwn(scope, b, o)
      : undefined,
  );
  setJob(a, job);
  // A cancel of the mailbox made before `launch` returned the Job that runs the handler (a task
  // that only names another Job, whose signal aborted as it was listened to) found no Job to
  // cancel: the returned one gets it now, as it would have then. Before, that actor's task ran
  // on, not cancelled, though its mailbox was.
  const cancelledUnknown = st.job === null && sharedStateOf(mailbox).cancelled;
  const tracked = st.job; // the task's own Job, known from its start, or null
  st.job ??= job;
  if (cancelledUnknown) cancelTaskOf(mailbox, undefined);
  // The Job `launch` returned, where it is kcoro's, stops the actor at once too (Kotlin's
  // `onCancelling`): a scope of the caller's own may give the handler a task with no
  // AbortSignal, or one that the job's cancel does not abort, whose cancellation or failure
  // cancelled the mailbox only as the task completed, taking messages meanwhile that nobody
  // would receive. Its own task's signal is the same one, watched once (`cancelOnAbort`).
  // The Job's own state and signal (`isCompletedJob`, `signalOfJob`), not redefined getters.
  if (isJob(job) && !isCompletedJob(job)) cancelOnAbort(signalOfJob(job));
  launched = job;
  let handle: unknown;
  try {
    handle = onJobCompletion(job, isJob(job) && !isCompletedJob(job) ? finishFolded : finish);
  } catch (e) {
    // A Job of the caller's whose invokeOnCompletion throws (or a getter for it that throws
    // now): theirs, as it is, and the actor `launch` started is cancelled, its mailbox released
    // and `onDone` run, as where `launch` throws (`abandon` on the task's own Job only, not on
    // this one). Before, actor() threw and the handler ran on, the mailbox never released.
    st.job = tracked;
    abandon(e);
    throw e;
  }
  // Withdrawn where the task's own Job ends the actor first: a kcoro Job's Disposable only (a Job
  // of another kind may return anything, whose dispose would run the caller's code).
  if (isJob(job) && !finished) ending.push(handle as Disposable);
  // Started at once, inside `launch`: the task's own Job was known before it returned.
  endWithTask();
  watchNamed();
  return a;
}

refuseAsValue(ActorImpl, "an actor", "send its messages where it runs", NOT_CLONEABLE);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(ActorImpl.prototype, "Actor");

/**
 * The TypeError of an Actor's member called on what is none (a look-alike, another object, a
 * primitive): "Cannot send: this is not an Actor, received an Actor look-alike". Before, the
 * engine's "Receiver must be an instance of class ActorImpl", a class no caller can name.
 */
function notActor(self: unknown, op: string): TypeError {
  return new TypeError(`Cannot ${op}: this is not an Actor, received ${describe(self)}`);
}

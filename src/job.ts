/**
 * Jobs: the lifecycle of a task, with kotlinx.coroutines' six states and flag table.
 *
 * | state        | isActive | isCompleted | isCancelled |
 * | ------------ | -------- | ----------- | ----------- |
 * | `new`        | false    | false       | false       |
 * | `active`     | true     | false       | false       |
 * | `completing` | true     | false       | false       |
 * | `cancelling` | false    | false       | true        |
 * | `cancelled`  | false    | true        | true        |
 * | `completed`  | false    | true        | false       |
 *
 * ```
 *                                       wait children
 * +-----+ start  +--------+ complete   +------------+  finish  +-----------+
 * | new | -----> | active | ---------> | completing | -------> | completed |
 * +-----+        +--------+            +------------+          +-----------+
 *    |  cancel / fail |                       |
 *    |                v                       |
 *    |         +------------+                 |          +-----------+
 *    +-------> | cancelling | <---------------+--------> | cancelled |
 *              +------------+      finish (body and      +-----------+
 *                                  children done)
 * ```
 *
 * A job is `new` only when launched lazily; `start()`, `join()` or `await()` starts it. Its
 * body finishing moves it to `completing` until every child has finished. Cancelling it, or a
 * failure (its body throwing anything but a {@linkcode CancellationError} or an AbortError
 * standing for one, `cancellationOf`; or a child failing), moves it to `cancelling`: its
 * `signal` aborts, every child is cancelled (oldest first, each one's subtree before the next,
 * as Kotlin's), and it becomes `cancelled` once its body and children are done. A failure that
 * cancels its parents too cancels them innermost first (the failing job's subtree, then its
 * parent's signal and other children, and so on up, Kotlin's `notifyCancelling` order), each parent
 * becoming `cancelling` only at its own turn (Kotlin's `cancelParent`), and none of them completes
 * before all are cancelling. A job's own signal aborts as it becomes `cancelling`, before its first
 * child is cancelled. A failed job is a cancelled job whose cause is not a CancellationError
 * (Kotlin: `isCancelled` is true for failed jobs too).
 *
 * Failures travel up: a failing child cancels its parent (and so its siblings) unless the parent
 * is a supervisor. Cancellation travels down and is never a failure. A failure nobody handles
 * (a `launch` under a supervisor or a free-standing scope) goes to the
 * {@linkcode CoroutineExceptionHandler} in the job's context, else to `reportError`, like an
 * uncaught exception. So do exceptions thrown by `invokeOnCompletion` handlers that run when the
 * job completes, wrapped in one {@linkcode CompletionHandlerError} per completion, the first as its
 * cause, the others in its `suppressed` list (a handler added to a job already final runs at once
 * and throws to its caller).
 *
 * This module holds the state machine ({@linkcode JobSupport}, internal) and
 * {@linkcode CompletableDeferred}; scope.ts adds the coroutines that run a block.
 *
 * @module
 */
import { checkedContextKey, childContext, Context, type ContextKey, isContext } from "./context.ts";
import { customInspect, inspectAs, notA } from "./inspect.ts";
import {
  _setJobBrand,
  abortHeard,
  abortReason,
  CancellationError,
  checkFunction,
  checkOptionNames,
  checkReadable,
  CompletionHandlerError,
  cutShort,
  describe,
  errorKind,
  isAborted,
  isEngineRangeError,
  listenAbortNamed,
  nameInstances,
  nameLookAlikes,
  optionNames,
  refuseAsValue,
  reportUncaught,
  signalOf,
  unlistenAbort,
} from "./errors.ts";

/**
 * The six job states (Kotlin's): {@linkcode Job}'s `isActive`, `isCompleted` and `isCancelled`
 * say which of them each covers.
 */
export type JobState = "new" | "active" | "completing" | "cancelling" | "cancelled" | "completed";

/**
 * Called once when a job reaches a final state: `cause` is undefined when it completed, the
 * CancellationError when it was cancelled, the error when it failed.
 */
export type CompletionHandler = (cause?: unknown) => void;

/**
 * A task's lifecycle handle: returned by `launch`; the rules are in README.md, "Structured
 * concurrency".
 */
export interface Job {
  /** The current state. */
  readonly state: JobState;
  /** True in `active` and `completing`. */
  readonly isActive: boolean;
  /** True in `cancelled` and `completed` (final states). */
  readonly isCompleted: boolean;
  /** True in `cancelling` and `cancelled`, whether cancelled or failed. */
  readonly isCancelled: boolean;
  /** The unfinished children, oldest first (in the order they were attached, as Kotlin's). */
  readonly children: Job[];
  /** Starts a lazy (`new`) job; true if this call started it, false otherwise. */
  start(): boolean;
  /**
   * Resolves when the job reaches a final state, whatever the outcome. Starts a lazy job. With
   * a `signal` (the waiting task's, as Kotlin's join is cancelled with its caller), rejects with
   * the signal's reason once it aborts, even if the job is final; otherwise never rejects.
   */
  join(options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Cancels the job and its children: its signal aborts, then each child's subtree, oldest
   * child first (Kotlin's order). `cause` becomes the cancellation: a CancellationError is used
   * as it is, anything else is wrapped in one (as its `cause`). Cancellation is never a failure.
   * Does nothing once the job is cancelling or final.
   */
  cancel(cause?: unknown): void;
  /**
   * Calls `handler` once when the job reaches a final state (at once, synchronously, if it has).
   * Disposing the result removes the handler: one not run yet does not run, also when another
   * handler of the job disposes it while they run. Exceptions from handlers called later are
   * reported, never swallowed, once all of the job's handlers have run: one
   * {@linkcode CompletionHandlerError} whose `cause` is the first, the others in its `suppressed`
   * list, as Kotlin's are. One from a handler called at once (the job was final already) is thrown
   * to the caller, as Kotlin's is.
   */
  invokeOnCompletion(handler: CompletionHandler): Disposable;
}

/** A job with a result: returned by `async`. */
export interface Deferred<T> extends Job {
  /**
   * The result: resolves with the value, or rejects with the failure or CancellationError,
   * the same error object on every call. Starts a lazy job. With a `signal` (the waiting task's:
   * `withTimeout(50, (t) => reply.await({ signal: t.signal }))`), rejects with the signal's reason
   * once it aborts before the deferred is final; the deferred itself is not cancelled. A deferred
   * already final gives its result even when the signal has aborted (Kotlin's await does not
   * suspend then, and checks nothing; `join` does check).
   */
  await(options?: { signal?: AbortSignal }): Promise<T>;
}

/**
 * The context key for the handler of failures that no parent takes: a failed `launch` under a
 * supervisor or a free-standing scope, and errors thrown by completion handlers. Without one,
 * the error goes to `reportError` (an uncaught exception: Deno exits unless an `error` listener
 * calls `preventDefault()`).
 *
 * @example
 * ```ts
 * import { Context, CoroutineExceptionHandler, supervisorScope } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const seen: unknown[] = [];
 * const context = Context.empty.with(CoroutineExceptionHandler, (e) => seen.push(e));
 * await supervisorScope(async (scope) => {
 *   scope.launch(() => Promise.reject(new Error("lost")));
 * }, { context });
 * assert.equal((seen[0] as Error).message, "lost");
 * ```
 */
export const CoroutineExceptionHandler: ContextKey<(error: unknown) => void> = checkedContextKey(
  "CoroutineExceptionHandler",
  (v) => typeof v === "function" ? null : "a function",
);

/**
 * Whether `e` is a cancellation (a {@linkcode CancellationError}, including TimeoutError, also
 * from another copy of this module). Internal.
 */
export function isCancellation(e: unknown): boolean {
  // By its brand, which this copy's CancellationError (and TimeoutError, and a subclass of
  // either) carries, and another copy's too (imported by another URL, or another version):
  // `instanceof` sees only this copy's. Not by `e.name`, which a DOMException from
  // AbortSignal.timeout() also calls "TimeoutError", nor by its class's name, which any class
  // of the caller's may have (before, another copy's was found by that name).
  const kind = errorKind(e);
  return kind === "CancellationError" || kind === "TimeoutError";
}

/**
 * @ignore The cancellation that `e`, let out of a block, stands for: `e` itself when it is one;
 * for an `AbortError` (by `name`: Node's, or a DOMException), the `cause` it carries when that (an
 * own data property) is one, as Node's APIs given a task's signal reject with
 * (`node:timers/promises`, `fs/promises`: a new AbortError carrying the signal's reason), else,
 * unless it is a DOMException (another signal's reason, below) or carries a cause that is no
 * cancellation (another signal's reason too, below), `e` itself when the job is `cancelling` (its
 * signal has aborted: Deno's `events.once` rejects with an AbortError carrying nothing, whatever
 * signal aborted), where Kotlin's suspending calls throw the CancellationException itself; else
 * undefined (a failure). `cancelling` is asked after `name` is read (a getter may cancel the job).
 * Reads nothing that runs the caller's code but `name`, and a throw there answers undefined; throws
 * only the engine's error (a stack overflow, out of `errorKind` or the `cancelling` call). Only
 * a cancelling job takes an AbortError that carries no cancellation, so such an `e` is never kept
 * as a job's cause.
 */
export function cancellationOf(e: unknown, cancelling: () => boolean): unknown {
  if (isCancellation(e)) return e;
  if (typeof e !== "object" || e === null) return undefined;
  let carried: unknown = undefined; // the AbortError's own `cause`, where it has one
  try {
    if ((e as { name?: unknown }).name !== "AbortError") return undefined;
    const cause = Object.getOwnPropertyDescriptor(e, "cause");
    if (cause !== undefined && "value" in cause) carried = cause.value;
    if (carried === undefined) {
      // A DOMException is a signal's reason (a `controller.abort()` given none): fetch, `delay`
      // and Deno's APIs reject with their signal's reason as it is, so given the task's signal
      // with its CancellationError, and this one is another signal's, a failure even while the
      // job is cancelling, as Kotlin's cancelled coroutine fails with another exception its
      // `finally` throws (a cleanup's fetch that a controller of the caller's aborted). Before,
      // it was taken as the job's cancellation: a supervisor reported nothing.
      if (e instanceof DOMException) return undefined;
    }
  } catch {
    return undefined; // a revoked proxy, a throwing trap or `name` getter: a failure, as it was
  }
  if (carried !== undefined) {
    // Node's APIs carry their signal's reason, which a task's signal has as its
    // CancellationError: another cause is another signal's reason (`node:timers/promises` given a
    // controller of the caller's), a failure even while the job is cancelling, as a DOMException
    // is (above). Before, a cancelling job took it as its cancellation, where `delay` or `fetch`
    // aborted by the same controller failed it. Asked outside the `try`: what `isCancellation`
    // throws is the engine's (a stack overflow), for the caller's recovery, not a failure.
    return isCancellation(carried) ? carried : undefined;
  }
  // Asked only now, after `name`: a getter of the caller's that cancels the job and answers
  // "AbortError" makes it a cancellation, as its abort does. Read before the getter, the state was
  // still active, and the cancelled job failed with the AbortError.
  return cancelling() ? e : undefined;
}

/**
 * @ignore The error a producer's or an actor's task is cancelled with by its channel's
 * `cancel(cause)` that found the channel open or closed (not cancelled before), given the
 * channel's shared state: `own()`, the receivers' error, where this cancel's cause is the
 * channel's (it was open); else the cancel's own cause (a close came first: Kotlin's
 * `ChannelCoroutine.cancel(cause)`), itself when it is a cancellation, else a "Channel was
 * cancelled" carrying it. One rule for src/produce.ts and src/actor.ts.
 */
export function taskCancelError(
  channel: { readonly hasCause: boolean; readonly cause: unknown },
  cause: unknown,
  own: () => unknown,
): unknown {
  // This cancel's cause is the channel's (it was open): the receivers' error is the task's.
  if (
    cause === undefined ? !channel.hasCause : channel.hasCause && Object.is(channel.cause, cause)
  ) {
    return own();
  }
  return isCancellation(cause)
    ? cause
    : new CancellationError("Channel was cancelled", cause === undefined ? {} : { cause });
}

/**
 * `cause` as a cancellation: itself if it is one, else a CancellationError carrying it. Internal.
 */
export function toCancellation(cause: unknown): CancellationError {
  if (isCancellation(cause)) return cause as CancellationError;
  if (cause === undefined) return new CancellationError("Cancelled");
  let what: string;
  try {
    // An Error's message over 4096 characters by its head and length, as `describe` bounds a
    // string: whole, one near V8's longest string made this message longer than V8 allows, and
    // cancel() threw the engine's RangeError, the job not cancelled (a signal's abort reason
    // alike). The cause is carried whole.
    // A real Error by `Error.isError` too, as codec's `isError` asks: one given a null prototype
    // (or another) is not `instanceof Error`, and read "Cancelled: [object Error]", its message
    // lost. `instanceof` still answers for a Proxy (its traps) and an Error.prototype look-alike.
    what = cause instanceof Error || engineIsError?.(cause) === true
      ? cutShort(String((cause as Error).message), "message")
      : describe(cause);
  } catch {
    what = describe(cause); // a hostile cause (a throwing getter or trap): described safely
  }
  return new CancellationError(`Cancelled: ${what}`, { cause });
}

/** The engine's `Error.isError` (`toCancellation`), undefined where it has none. */
const engineIsError = (Error as { isError?: (v: unknown) => boolean }).isError;

/** Context's own `get`, captured as the module loads (`handleCoroutineException`). */
const contextGet = Context.prototype.get;

/**
 * Hands an unhandled error to the context's {@linkcode CoroutineExceptionHandler}, else to
 * `reportError`. Internal.
 */
export function handleCoroutineException(context: Context, error: unknown): void {
  // Context's own `get`, not the prototype's member at this call, which a caller may redefine
  // (before, a redefined one steered, or threw out of, every failure handed on here). What is
  // no Context (the `context` of a CoroutineScope of the caller's own, which an actor's onDone
  // reports to) holds no handler: `reportError`, nothing of it read. Before, Context's own
  // `get` threw its "this must be a Context" TypeError out of the completion handler that ran
  // onDone, in place of onDone's error (and `context.get` before that, for `undefined`).
  const handler = isContext(context)
    ? contextGet.call(context, CoroutineExceptionHandler) as ((error: unknown) => void) | undefined
    : undefined;
  if (handler === undefined) {
    reportUncaught(error);
    return;
  }
  try {
    handler(error);
  } catch (thrown) {
    reportUncaught(
      new AggregateError(
        [error, thrown],
        "CoroutineExceptionHandler threw while handling an exception",
      ),
    );
  }
}

/**
 * Runs completion handler `h` with `cause`; what it throws goes to `handleCoroutineException` as
 * a {@linkcode CompletionHandlerError} (`what` names the handler), in the context `contextOf`
 * answers, asked only then: it may read a caller's getter (an actor's scope's `context`), which
 * runs only where there is something to report, and after `h` has run. Internal.
 */
export function runCompletionHandler(
  contextOf: () => Context,
  what: string,
  h: CompletionHandler,
  cause: unknown,
): void {
  try {
    h(cause);
  } catch (e) {
    handleCoroutineException(
      contextOf(),
      new CompletionHandlerError(`Exception in ${what}`, { cause: e }),
    );
  }
}

const NEW = 0, ACTIVE = 1, COMPLETING = 2, CANCELLING = 3, CANCELLED = 4, COMPLETED = 5;
const stateNames: readonly JobState[] = [
  "new",
  "active",
  "completing",
  "cancelling",
  "cancelled",
  "completed",
];

/**
 * The hooks of `onOwnCancel`, by job (a producer's); `cancel()` looks only once one
 * was ever set, so a program with no producer pays one load of a boolean per cancel.
 */
const ownCancelHooks = new WeakMap<JobSupport<unknown>, (cause: CancellationError) => void>();
let ownCancelHooked = false;
/** The hooks of `onUnhandledFailure`, by job (a producer's). */
const failureSinks = new WeakMap<JobSupport<unknown>, () => boolean>();

/**
 * Internal (mod.ts does not export it). Runs `hook(cause)` at the first `cancel()` of `job`
 * itself, before the job is cancelled with that same CancellationError (`produce`: Kotlin's
 * producer is a ChannelCoroutine, whose own `cancel` cancels its channel, `cancelInternal`). Not
 * for a cancellation that reaches it from its parent, nor a failure. `null` withdraws it.
 * A module function, not a static of JobSupport: every job's class inherits a static, and any
 * caller holding a job reached it (`task.constructor._onOwnCancel(task, hook)`).
 */
export function onOwnCancel(
  job: JobSupport<unknown>,
  hook: ((cause: CancellationError) => void) | null,
): void {
  if (hook === null) {
    if (ownCancelHooked) ownCancelHooks.delete(job);
    return;
  }
  ownCancelHooked = true;
  ownCancelHooks.set(job, hook);
}

/**
 * Internal (mod.ts does not export it). `delivers()` answers, as `job` reports a failure no parent
 * took, whether a channel will hand that failure to its receivers (`produce`: its channel still
 * open, closed with the failure as the task is final): true keeps it from the exception handler,
 * as Kotlin's `ProducerCoroutine.onCancelled(cause, handled)` reports only when its channel's
 * close was not processed. `null` withdraws it. A module function, as `onOwnCancel`: as a static
 * of JobSupport, `task.constructor._onUnhandledFailure(task, () => true)` kept any job's failure
 * from the exception handler.
 */
export function onUnhandledFailure(
  job: JobSupport<unknown>,
  delivers: (() => boolean) | null,
): void {
  if (delivers === null) failureSinks.delete(job);
  else failureSinks.set(job, delivers);
}

/**
 * @ignore True if `x` is a job this module made: by its private field, not `instanceof`, which
 * `Object.create(JobSupport.prototype)` passes (its every read then threw the engine's "Cannot
 * read private member"). A brand check, which runs no Proxy trap. Set by a static block of
 * JobSupport: as the public static `JobSupport._is` it was reachable from any job
 * (`Object.getPrototypeOf(CompletableDeferred)._is = () => true` made every kcoro function take
 * any object for a job, and throw the engine's TypeError at its first private read).
 */
export let isJob: (x: unknown) => x is JobSupport<unknown>;
/**
 * @ignore True if `x` is a CompletableDeferred this module made (a brand check, no trap). Set by
 * its static block: as the public static `CompletableDeferred._isDeferred`, replaced by
 * `() => true`, it let `CompletableDeferred.prototype.complete.call(launchedJob, v)` complete a
 * running `launch`'s job from outside its block.
 */
export let isDeferred: (x: unknown) => x is CompletableDeferred<unknown>;
/**
 * @ignore The failure `job` fails with (its body's or a child's) once it is cancelling or
 * cancelled because of it; undefined while it is not failing (a cancellation is no failure). Its
 * signal's reason wraps it in a CancellationError; `produce` closes its channel with it as it is
 * (Kotlin's `ProducerCoroutine.onCancelled`). A module function: as the getter `_failure` any
 * caller read a job's failure, and an own `_failure` defined on a task's job decided whether
 * `produce` closed its channel.
 */
export let failureOf: (job: JobSupport<unknown>) => unknown;
/** @ignore `job`'s completion handlers registered and not disposed (tests; was `_handlerCount`). */
export let handlerCountOf: (job: JobSupport<unknown>) => number;
/**
 * @ignore Whether a final `job`'s completion handlers have all run, running the waiting ones first
 * (`#handlersRan`: false only `PULL_NESTING` handlers deep, where they wait); true for a job that
 * is not kcoro's or not final. For select's `onJoin`, which took a final job for ready at once:
 * its handler ran ahead of the job's own waiting handlers, and of the joins they resume.
 */
export let handlersRanOf: (job: unknown) => boolean;
/**
 * @ignore `job`'s state as kcoro's own `state` getter answers it (a scope's as scope.ts's, which
 * shows a queued cancel as "cancelling"), read from its fields, running no getter (a subclass's,
 * or one redefined on a prototype): for the inspect hooks, which never throw (a
 * CompletableDeferred's subclass whose `state` getter threw made `Deno.inspect` throw, and an
 * actor's print with it).
 */
export let jobStateOf: (job: JobSupport<unknown>) => JobState;
/** The flags `x` (a job: `isJob`) was made with (`describe` names its kind by them). */
let flagsOf: (x: JobSupport<unknown>) => number;
/** The job `x` (a job: `isJob`) is a child of, while it is linked in its list; else null. */
let parentOf: (x: JobSupport<unknown>) => JobSupport<unknown> | null;

/**
 * @ignore The result of `job` (a root scope's: its block's value), as `await()` without a signal
 * gives a Deferred's: for scope.ts and time.ts, whose root scopes are no Deferred (their `await()`
 * refuses). Set by a static block of JobSupport.
 */
export let resultOf: <T>(job: JobSupport<T>) => Promise<T>;
/**
 * @ignore The context `job` runs with, read from its private field: kcoro's own reads of a job's
 * context (a launch's parent context, a native scope's owner's deadline, a producer's failure
 * report) run no `context` getter a caller redefined on a job's prototype. Set by a static block
 * of JobSupport.
 */
export let contextOf: (job: JobSupport<unknown>) => Context;
/**
 * @ignore `job`'s `isCompleted` and `isCancelled` as kcoro's own getters answer them (a scope's
 * queued follow cancel reads cancelling, as its getter says: `jobStateOf`), from its fields:
 * kcoro's own decisions (a native scope cancelling its owner, produce and actor watching their
 * tasks) run no getter a caller redefined on a job's prototype. Set by a static block of
 * JobSupport.
 */
export let isCompletedJob: (job: JobSupport<unknown>) => boolean;
/** @ignore See `isCompletedJob`. */
export let isCancelledJob: (job: JobSupport<unknown>) => boolean;
/**
 * @ignore `#runStopped`, the run of `stoppedWalks` and `lostBodyEnds`, for scope.ts's catches to
 * queue after their stores by `SETTLED.then(runStopped)` written out there (one builtin's call,
 * as `start()`'s catch does): the call that overflowed there was no deeper than a call of a
 * function of this module, which then did not fit either (a thenable's call back's catch: a
 * scan saw none of ~420 fit, where the builtin's call fit 60). `stoppedQueued` is left as it is:
 * a second run queued meanwhile returns at once. Where even that does not fit, the next cancel's
 * or failure's run goes on with them. Internal.
 */
export let runStopped: () => void;

/** Children's failures do not cancel this job (supervisor). */
export const SUPERVISOR = 1;
/** A failure no parent took goes to the exception handler (`launch`). */
export const REPORTS_FAILURE = 2;
/** Takes its children's failures: they become its own (coroutines, `coroutineScope`). */
export const HANDLES_CHILD_FAILURE = 4;
/** Has no body to wait for once cancelled (CompletableDeferred, free-standing scopes). */
export const CANCEL_COMPLETES = 8;
/**
 * Its failure is its parent's own, which a supervisor parent takes too: the job standing for a
 * scope's native children, whose abandonment is the scope's work not finishing.
 */
export const PARENTS_OWN = 16;
/**
 * Has a result (`async`, CompletableDeferred): `await()` gives it, and error messages name it "a
 * Deferred" (`describe`). A job without it (a `launch`'s, a scope, a native scope's children)
 * refuses `await()` and select's `onAwait`, as Kotlin's `Job` has neither.
 */
export const DEFERRED = 32;

/**
 * @ignore JobSupport's hooks for its subclasses (scope.ts, native_scope.ts): one frozen object per
 * class, handed to JobSupport's constructor by the subclass's and kept in a private field, whose
 * functions reach the subclass's private methods from its static block. As TypeScript-`protected`
 * methods named `onStart`, `onFinal` and `completionWaits`, and then as methods keyed by symbols
 * that mod.ts does not export, JavaScript reached them on any job (the symbols by
 * `Object.getOwnPropertySymbols` of its prototype).
 */
export interface JobHooks {
  /** Runs the body; called once by `start()`. */
  onStart(job: JobSupport<unknown>): void;
  /**
   * Runs the body a microtask after a `start()` whose `onStart` an engine error (a stack
   * overflow) stopped, unless it began (a no-op then), or ends it cancelled, never run, where the
   * job was cancelled meanwhile. None: such a start is not tried again.
   */
  onStartAgain?(job: JobSupport<unknown>): void;
  /** Called once on reaching a final state, before handlers run (drop timers, listeners). */
  onFinal(job: JobSupport<unknown>): void;
  /**
   * True while this job, `completing` with nothing left to wait for, must not complete yet: a
   * scope whose follow cancel waits in the queue (scope.ts), cancelled, and so finished, once it
   * runs.
   */
  completionWaits(job: JobSupport<unknown>): boolean;
}

/** A job's hooks where its class gives none (a CompletableDeferred): none does anything. */
const NO_HOOKS: JobHooks = Object.freeze({
  onStart() {},
  onFinal() {},
  completionWaits: () => false,
});

/**
 * @ignore Makes `job` (new) a child of `parent`; a parent that is cancelling or final cancels it
 * at once, so its body never runs. A module function reaching a private method, not a member:
 * as the method `attachTo`, then one keyed by a module symbol, any job's caller reached it.
 */
export let attachTo: (job: JobSupport<unknown>, parent: JobSupport<unknown>) => void;
/** @ignore `job`'s body returned `value`. False if the body had already ended. */
export let completeBody: <T>(job: JobSupport<T>, value: T) => boolean;
/**
 * @ignore `job`'s body threw `error` (`op` names the call in an `undefined` error's TypeError). A
 * module function: as a symbol-keyed member, `job[sym](v)` found by reflection completed a
 * running `launch` job from outside its block.
 */
export let failBody: (job: JobSupport<unknown>, error: unknown, op?: string) => boolean;

const RESOLVED: Promise<void> = Promise.resolve();
/** @ignore A settled promise: a reaction on it queues `runStopped` (which says why). Internal. */
export const SETTLED: Promise<void> = RESOLVED;
const NO_OP: Disposable = Object.freeze({ [Symbol.dispose]() {} });

/**
 * How many jobs' completion handlers may run nested in one another's (a handler that cancels or
 * completes a job runs that job's handlers inside its own call, as Kotlin's do) before a deeper
 * job's wait in `deferredLeaves`: a chain of handlers each ending the next job overflowed the
 * stack at ~1,000 levels (reported as a CompletionHandlerError carrying a RangeError, the rest of
 * the chain left unfinished). Up to this depth the order is Kotlin's, nested; deeper, each
 * waiting job's handlers run (oldest first) once the handler at this depth has returned.
 */
const NOTIFY_NESTING = 32;
/** The `#notify` calls on the stack (a handler's job's inside a handler's). */
let notifyDepth = 0;
/** A job made final past `NOTIFY_NESTING`: its handlers and its parent's finish wait. */
interface DeferredLeave {
  job: JobSupport<unknown>;
  state: number;
  parent: JobSupport<unknown> | null;
}
/** The jobs made final past `NOTIFY_NESTING`, oldest first (a drain's run skips one run since). */
const deferredLeaves: DeferredLeave[] = [];
/**
 * Each job in `deferredLeaves` whose handlers have not run yet: a final job found here has
 * handlers still waiting (`#handlersRan`). Touched only past `NOTIFY_NESTING` and, while not
 * empty, by a final job's `invokeOnCompletion`, `join` and `await`.
 */
const deferredOf = new Map<JobSupport<unknown>, DeferredLeave>();
/**
 * How deep in handlers a job's waiting handlers are run ahead of the drain, for a handler added
 * to it, or a join or await of it, once it reads final (`#handlersRan`): deeper, those wait
 * behind its handlers, so that a chain of handlers each ending a job and adding one to it stays
 * bounded too.
 */
const PULL_NESTING = 2 * NOTIFY_NESTING;
/**
 * The first entry of `deferredLeaves` that may not have run yet: every one before it has (by the
 * drain or a pull, `#handlersRan`, which both move it on before each run and go on from it, so
 * the handlers waiting run oldest first). Back to 0 as the drain empties the list.
 */
let deferredNext = 0;
/**
 * The cancel walks an engine error stopped (`#walkDown`), to go on a microtask later: triples of
 * the job, the walk's stack of levels and the phase the job was in.
 */
let stoppedWalks: unknown[] = [];
/**
 * @ignore The body ends an engine error (a stack overflow) lost at their call (a launch's block
 * that ended with the stack all but full, or whose thenable called back so: scope.ts's `#run`
 * and `#adopt`), as triples of the job, the value or error and how it ends (true: fails; false:
 * completes; else a function of the job and the value, a thenable's value to adopt): each ended
 * again by the next run of `stoppedWalks` (`#runStopped`), a no-op where the first call had
 * begun (an adoption is not run once the body has ended: it would call the thenable's `then`
 * again). Stored into by scope.ts's catches (stores alone: there the stack may have no room for
 * a call). Internal.
 */
export const lostBodyEnds: unknown[] = [];
/**
 * How many entries `stoppedWalks` holds (for tests: a finish that threw on a job it made final
 * keeps none, so a `reportError` that keeps throwing, with no cancel to run them, adds nothing).
 * Internal.
 */
export function stoppedWalksCount(): number {
  return stoppedWalks.length / 3;
}
/**
 * The error a walk's catch has just dealt with (`#walkDown`): the `#cancelWith` it reaches keeps
 * nothing more for it. Another error there left the walk before it began.
 */
let stoppedBy: unknown;
/** A microtask that runs `stoppedWalks` is queued. */
// `#walkDown`'s phases: the job's abort, then its children; its children from its `#walk`; its
// finish; the next level of the walk's stack; the children of the job, `c` the next.
const WALK_ENTER = 0, WALK_NEXT = 1, WALK_FINISH = 2, WALK_POP = 3, WALK_CHILDREN = 4;
// `#runStopped`'s phases past the walk's: the `#cancelWith` of a body's failure (or cancellation)
// whose call overflowed (`#failBody`), its error in the walk's stack's slot, the job held
// (`#leaving`) until then.
const WALK_FAIL = 5, WALK_CANCEL = 6;
// The rest of a failure's (or cancellation's) path up that an engine error stopped in
// `#cancelWith`'s loop, from the job it was to look at next, its cause in the stack's slot
// (nothing held for it: the job below it on the path is); then the release of the job that path
// held (`#leaving`), and its finish.
const WALK_UP_FAIL = 7, WALK_UP_CANCEL = 8, WALK_RELEASE = 9;
// A start whose hook an engine error stopped (`start()`): `onStartAgain`.
const WALK_START = 10;
// A final job whose handlers an engine error stopped (`#leave`, `#runLeave`): they go on, then
// the parent in the stack's slot (held by `#leaving` until then, where it waited) may finish.
const WALK_NOTIFY = 11;
let stoppedQueued = false;
/** A `deferredLeaves` drain is on the stack: it runs what is added meanwhile. */
let draining = false;
/**
 * The first error out of a run `#handlersRan` pulled ahead of the drain (a `reportError` that
 * throws out of the handlers' report), where `pulledThrew`: thrown on in its turn (the first
 * thrown is thrown, the later ones kept in its `suppressed`) by the end whose handlers pulled
 * it: a deferred job's run (`#runLeave`, in a drain or a pull) or, outside a drain, the job's
 * `#leave`; not by the pull's caller. A flag and the value, no object: kept where the stack may
 * have no room for a call.
 */
let pulledThrew = false;
let pulledThrown: unknown = undefined;

/** A `suppressed` list shorter than this is scanned for a duplicate; a longer one gets a Set. */
const SUPPRESSED_SCAN = 8;

/**
 * A `suppressed` list longer than this (a million entries) is read by its keys to make its Set:
 * only a list of the caller's own can be so long, and it may be sparse.
 */
const SUPPRESSED_INDEXED = 1 << 20;

/**
 * A long `suppressed` list's entries as a Set, so each later failure's duplicate check is O(1):
 * scanning the list made a scope whose N children fail after the first O(N^2) (100,000 took
 * most of a second). Keyed by the list, not the error: a list that replaced it (the property is
 * writable) gets its own. `length` and `last` are the list's when the Set was brought up to date;
 * a list changed behind it (pushed to, shortened, its last entry replaced) is read again.
 */
const suppressedSets = new WeakMap<
  unknown[],
  { set: Set<unknown>; length: number; last: unknown }
>();

/**
 * Appends `value` to `list` unless it holds it already (SameValueZero, as `list.includes`): a
 * frozen list throws, and nothing is recorded.
 */
function keepSuppressed(list: unknown[], value: unknown): void {
  const length = list.length;
  if (length < SUPPRESSED_SCAN) {
    suppressedSets.delete(list); // a list shortened behind its Set: that Set is stale
    if (!list.includes(value)) list.push(value);
    return;
  }
  let kept = suppressedSets.get(list);
  if (kept === undefined || kept.length !== length || !Object.is(kept.last, list[length - 1])) {
    const set = new Set<unknown>();
    if (length <= SUPPRESSED_INDEXED) {
      for (let i = 0; i < length; i++) set.add(list[i]); // holes read as undefined, as includes
    } else {
      // Longer than any list failures fill: one of the caller's own, maybe sparse (`length` set
      // to 2^32 - 2 and no element), so its entries are read by key, never index by index up
      // to `length`. Before, that read held the event loop for minutes (every timer, every
      // other job) while the failure was being added.
      let found = 0;
      for (const key of Object.keys(list)) {
        if (String(Number(key) >>> 0) === key && key !== "4294967295") {
          set.add(list[key as unknown as number]);
          found++;
        }
      }
      if (found < length) set.add(undefined); // a hole reads as undefined, as includes
    }
    suppressedSets.set(list, kept = { set, length, last: list[length - 1] });
  }
  if (kept.set.has(value)) return;
  list.push(value);
  kept.set.add(value);
  kept.length = list.length;
  kept.last = value;
}

/**
 * Keeps `later` in the `suppressed` list of `first` (a non-enumerable own array, as Java's
 * `getSuppressed()`), unless it holds it already; false, nothing added, when `first` cannot hold
 * one: a primitive, an object that is not extensible (`Object.preventExtensions`, sealed or
 * frozen, whatever `suppressed` it has), or one whose `suppressed` is no array (a
 * `SuppressedError`'s is the one error it replaced, which an array there would lose). A `first`
 * that cannot be looked at (a revoked proxy, a throwing trap, a frozen `suppressed` list) gets
 * nothing added either: never throws.
 */
function suppressInto(first: unknown, later: unknown): boolean {
  try {
    if (typeof first === "object" && first !== null && Object.isExtensible(first)) {
      const own = Object.getOwnPropertyDescriptor(first, "suppressed");
      if (own === undefined) {
        Object.defineProperty(first, "suppressed", {
          value: [later],
          writable: true,
          configurable: true,
          enumerable: false,
        });
        return true;
      }
      if (Array.isArray(own.value)) {
        keepSuppressed(own.value, later);
        return true; // kept, now or already
      }
    }
  } catch {
    // not kept
  }
  return false;
}

/**
 * A second throw out of a job's finish (a `reportError` that throws again, on the next report),
 * or out of the handlers run after it (a drain's, a pull's, a cancel's walk), after `first`,
 * which is thrown on: kept in `first`'s `suppressed` (`suppressInto`), as the
 * README's rule for a failure after the first, else dropped. Reporting it would go to the
 * `reportError` that threw it, which is the caller's own to mend: `first` reaches the caller.
 */
function keepLater(first: unknown, later: unknown): void {
  if (first !== later) suppressInto(first, later);
}

/**
 * Adds `later` to the `suppressed` list of `error`, an error of kcoro's own making (extensible, its
 * list an array kcoro put there): a non-enumerable own property, as a failure's (`#suppress`).
 * Duplicates are kept, as Java's `addSuppressed` keeps them.
 */
function addSuppressedTo(error: Error, later: unknown): void {
  const own = ownDescriptor(error, "suppressed");
  if (own !== undefined) {
    arrayPush(own.value as unknown[], later);
    return;
  }
  defineProperty(error, "suppressed", {
    value: [later],
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

/**
 * The built-ins `#notify` calls (and `addSuppressedTo` there), as this module loaded: the only
 * code of the caller's run there is the handlers themselves. Before, its `for...of` called the
 * Set iterator's `next` as the caller left it (`%SetIteratorPrototype%.next = ...`, or a
 * `Set.prototype[Symbol.iterator]` of theirs), whose throw was taken for an overflow and retried
 * a microtask later, throwing again: a microtask loop for ever (no timer ran again), reported on
 * every pass, the waiting parent never released.
 */
const callOf = Function.prototype.call;
const SET_PROTO: Record<symbol, unknown> = Set.prototype as never;
const SET_ITERATOR_PROTO: { next: unknown } = Object.getPrototypeOf(new Set().values());
const iteratorKey: symbol = Symbol.iterator;
const setValuesFn: unknown = Set.prototype.values;
const setIteratorNextFn: unknown = SET_ITERATOR_PROTO.next;
const setValues = callOf.bind(Set.prototype.values) as <V>(set: Set<V>) => SetIterator<V>;
const setIteratorNext = callOf.bind(SET_ITERATOR_PROTO.next as () => unknown) as <V>(
  it: SetIterator<V>,
) => IteratorResult<V>;
const setSize = callOf.bind(
  Object.getOwnPropertyDescriptor(Set.prototype, "size")!.get!,
) as (set: Set<unknown>) => number;
const arrayPush = callOf.bind(Array.prototype.push) as (a: unknown[], x: unknown) => number;
const ownDescriptor = Object.getOwnPropertyDescriptor;
const defineProperty = Object.defineProperty;

/** What a structured clone of a job fails on (`JobSupport._notCloneable`): its message. */
const NOT_CLONEABLE = Symbol(
  // Short: V8 cuts the middle out of a description over ~127 characters in the message.
  "Cannot clone a job, deferred or scope: it lives in its isolate; send a reply channel's share() " +
    "for its result",
);

/**
 * The job state machine shared by every kind of job (Kotlin's `JobSupport`). Internal: the
 * public types are {@linkcode Job} and {@linkcode Deferred}. Subclasses run a body and report
 * its end through `completeBody` / `failBody`.
 *
 * @ignore
 */
export class JobSupport<T = unknown> implements Deferred<T> {
  /**
   * The only field structured cloning sees (`context` is a getter), so
   * `postMessage` or `structuredClone` of a job, deferred or scope throws a DataCloneError with
   * this symbol's description as its message: it cloned as `{ context: {} }` without an error.
   * One store per job: launch + join measured no slower (README says so beside share()).
   */
  readonly _notCloneable: symbol = NOT_CLONEABLE;
  /**
   * The context this job runs with (`context`, a getter). Private: as a plain own field it was
   * writable from JavaScript (`readonly` is TypeScript's only), so `scope.context = 5` made every
   * later `launch` on the scope, and each `CompletableDeferred` given it as parent, throw the
   * engine's TypeError from `childContext`, and a completion handler's throw went to no handler.
   */
  readonly #context: Context;
  readonly #flags: number;
  #state = NEW;
  /** The body (block, or `complete()`) has finished. */
  #bodyDone = false;
  /** The value of a body that completed. */
  #value: T | undefined = undefined;
  /** The cancellation or failure; the final error of a cancelled job. */
  #cause: unknown = undefined;
  /** `#cause` is a failure (not a cancellation). */
  #failed = false;
  /** The parent took the failure, so it is not reported here. */
  #handled = false;
  /** What children and the signal see when a failure cancels this job. */
  #cancelError: CancellationError | undefined = undefined;
  // The unfinished children as an intrusive doubly linked list, oldest first (attachTo appends
  // at the tail): no allocation per child, O(1) to attach and to leave, and `children` and the
  // cancellation walk read it in Kotlin's order, the order the children were attached.
  #parent: JobSupport<unknown> | null = null;
  #head: JobSupport<unknown> | null = null;
  #tail: JobSupport<unknown> | null = null;
  #prev: JobSupport<unknown> | null = null;
  #next: JobSupport<unknown> | null = null;
  /**
   * While `#cancelDown` walks this job's children: the child it goes on with once the one it is
   * in is done. A child leaving the list while it is this one moves it on to the child's next
   * (`#finalize`), so the walk never has to find its place again; null outside the walk.
   */
  #walk: JobSupport<unknown> | null = null;
  /**
   * The first job on a failure's path while the jobs above it are not all cancelling yet:
   * `#tryFinalize` leaves it, and so each of them (it is in their subtrees), unfinished until
   * `#cancelWith` lets go.
   */
  #holdFinal = false;
  /**
   * Children that left this job's list while it was already waiting for them (its body done)
   * and are still running their exception and completion handlers (`#finalize`): it does not
   * finish meanwhile, as Kotlin's waiting parent finishes only at the child's ChildCompletion
   * node, one of that child's completion handlers.
   */
  #leaving = 0;
  #handlers: Set<HandlerNode> | null = null;
  #join: Promise<void> | null = null;
  #resolveJoin: (() => void) | null = null;
  #result: Promise<T> | null = null;
  #resolve: ((value: unknown) => void) | null = null;
  #reject: ((error: unknown) => void) | null = null;
  #controller: AbortController | null = null;
  /**
   * The class's hooks (`JobHooks`), given to the constructor by a subclass's (`super`), fixed
   * from then on. Before, an exported module function (`setJobHooks`) set them after `super()`:
   * one more call on every launch's path, and a way to swap a live job's hooks from any module
   * importing this one.
   */
  readonly #hooks: JobHooks;

  constructor(context: Context, flags: number, hooks: JobHooks = NO_HOOKS) {
    this.#context = context;
    this.#flags = flags;
    this.#hooks = hooks;
  }

  // Each public member called on what is no job (an object made from the prototype, a Proxy of
  // a job, a primitive) throws, or rejects with, `notJob`'s TypeError naming the call: it threw
  // the engine's "Cannot read private member #state". The hot ones (the state getters, join,
  // await, cancel) check only in their catch (`jobThrown`), at no cost to a job's call.

  /** The context this job runs with: read-only (an assignment throws in strict mode). */
  get context(): Context {
    try {
      return this.#context;
    } catch (e) {
      throw jobThrown(this, "read job context", e);
    }
  }

  get state(): JobState {
    try {
      return stateNames[this.#state];
    } catch (e) {
      throw jobThrown(this, "read job state", e);
    }
  }

  get isActive(): boolean {
    try {
      return this.#state === ACTIVE || this.#state === COMPLETING;
    } catch (e) {
      throw jobThrown(this, "read job state", e);
    }
  }

  get isCompleted(): boolean {
    try {
      return this.#state >= CANCELLED;
    } catch (e) {
      throw jobThrown(this, "read job state", e);
    }
  }

  get isCancelled(): boolean {
    try {
      return this.#state === CANCELLING || this.#state === CANCELLED;
    } catch (e) {
      throw jobThrown(this, "read job state", e);
    }
  }

  get children(): Job[] {
    JobSupport.#check(this, "read job children");
    const out: Job[] = [];
    for (let c = this.#head; c !== null; c = c.#next) out.push(c); // oldest first
    return out;
  }

  /** Throws `notJob` unless `self` is a job (`#x in`: a brand check, which runs no Proxy trap). */
  static #check(self: unknown, op: string): void {
    if (!isJob(self)) throw notJob(self, op);
  }

  /**
   * An AbortSignal that aborts, with the job's CancellationError as its reason, when the job is
   * cancelled or fails. Made on first use (an AbortController per task costs more than the task).
   */
  get signal(): AbortSignal {
    JobSupport.#check(this, "read job signal");
    let c = this.#controller;
    if (c === null) {
      c = this.#controller = new AbortController();
      if (this.#state === CANCELLING || this.#state === CANCELLED) c.abort(this.#childCancel());
    }
    return c.signal;
  }

  start(): boolean {
    JobSupport.#check(this, "start job");
    if (this.#state !== NEW) return false;
    this.#state = ACTIVE;
    try {
      this.#hooks.onStart(this);
    } catch (e) {
      // An engine error (a stack overflow: the start called with the stack all but full) may have
      // stopped the hook before its block began: the job, `active` now, is kept to start again
      // (`WALK_START`: `onStartAgain`, a no-op where the block was taken, and the block never run
      // where the job was cancelled meanwhile: a launch's `#startLater`). Before, it
      // stayed `active` with its block never run, and a second start() answered false: its
      // parent never finished. Also after a throw once the body ended (a `reportError` that
      // throws on its report): nothing kept then. Stores, then the queueing: a reaction on a
      // settled promise (one builtin's call, where `queueMicrotask`'s wrapper did not fit here),
      // which may itself not fit (then the next cancel's or failure's microtask runs it).
      if (!this.#bodyDone && this.#hooks.onStartAgain !== undefined) {
        const at = stoppedWalks.length;
        stoppedWalks[at] = this;
        stoppedWalks[at + 1] = null;
        stoppedWalks[at + 2] = WALK_START; // where its block's end was lost: `lostBodyEnds`
        if (!stoppedQueued) {
          try {
            void RESOLVED.then(JobSupport.#runStopped);
            stoppedQueued = true;
          } catch {
            // no room for the call: the next cancel's or failure's `#armStopped` runs it
          }
        }
      }
      throw e;
    }
    return true;
  }

  join(options?: { signal?: AbortSignal }): Promise<void> {
    let signal: AbortSignal | undefined;
    try {
      signal = signalOf("join", options);
    } catch (e) {
      return Promise.reject(e); // rejects, never throws (as a channel's wait)
    }
    try {
      // A lazy job starts even for a caller already cancelled (Kotlin's joinInternal).
      if (this.#state === NEW) jobStart.call(this); // its own start, not a redefined one
      if (signal !== undefined && isAborted(signal)) return Promise.reject(abortReason(signal));
      // Resolved after the joins made before, should its handlers still wait (`#handlersRan`).
      if (this.#state >= CANCELLED && (deferredOf.size === 0 || this.#handlersRan())) {
        return RESOLVED;
      }
      if (signal !== undefined) return this.#untilAborted("join", signal, () => undefined);
      return this.#join ??= new Promise((resolve) => this.#resolveJoin = resolve);
    } catch (e) {
      if (isJob(this)) throw e; // a job's: as before
      return Promise.reject(notJob(this, "join"));
    }
  }

  await(options?: { signal?: AbortSignal }): Promise<T> {
    let signal: AbortSignal | undefined;
    try {
      signal = signalOf("await", options);
    } catch (e) {
      return Promise.reject(e); // as join's
    }
    try {
      // A Job that is no Deferred (a `launch`'s, a scope) has no result: refused, as Kotlin's
      // `Job` has no `await` (TypeScript's `Job` has none either). Before, it resolved with
      // undefined once the job completed, and started a lazy one.
      if ((this.#flags & DEFERRED) === 0) {
        return Promise.reject(notJob(this, "await", "Deferred"));
      }
      if (this.#state === NEW) jobStart.call(this); // its own start, not a redefined one
      // A final deferred gives its result even to a caller already cancelled (Kotlin's
      // awaitInternal returns before it would suspend; join checks its caller there, await not).
      if (signal === undefined || this.#state >= CANCELLED) return this.#awaitResult();
      if (isAborted(signal)) return Promise.reject(abortReason(signal));
      return this.#untilAborted("await", signal, () => this.#awaitResult());
    } catch (e) {
      if (isJob(this)) throw e; // a job's: as before
      return Promise.reject(notJob(this, "await"));
    }
  }

  /**
   * What `settle` gives once this job is final, or a rejection with `signal`'s reason once it
   * aborts first. Waits through a completion handler that the abort disposes, not a reaction
   * on the shared join or result promise: that reaction (and the timed-out caller it held)
   * stayed until the job completed, ~1.5 KB per timed-out wait on a long-lived deferred. The
   * signal is read and listened to by AbortSignal's own members (errors.ts, `isAborted`):
   * before, its own `removeEventListener`, when it threw, stopped the handler before `resolve`,
   * and the wait never settled.
   */
  #untilAborted<R>(op: string, signal: AbortSignal, settle: () => R | Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const onAbort = (event?: Event) => {
        // Only once the signal aborted: a call before (the caller's code that reached the
        // listener through the engine's listeners property) changes nothing. Before, the wait
        // rejected with undefined.
        if (!abortHeard(signal, onAbort, event)) return;
        done[Symbol.dispose]();
        reject(abortReason(signal));
      };
      const done = jobInvokeOnCompletion.call(this, () => {
        unlistenAbort(signal, onAbort);
        resolve(settle());
      });
      // A listen that throws (only a signal whose engine state the caller redefined) rejects
      // with the named error ("Cannot join: signal must be one that can be listened to", its
      // error the cause; before, with the raw error), and the handler goes with it: before, it
      // stayed registered until the job ended, one per such call on a long-lived job. One whose
      // signal aborted during the listen has run `onAbort` (`listenAbortNamed`): disposed `done`,
      // rejected.
      try {
        listenAbortNamed(op, signal, onAbort);
      } catch (e) {
        done[Symbol.dispose]();
        reject(e);
      }
    });
  }

  #awaitResult(): Promise<T> {
    if (this.#result !== null) return this.#result;
    if (this.#state === NEW) jobStart.call(this);
    // Settled after the joins made before, should its handlers still wait (`#handlersRan`).
    if (this.#state >= CANCELLED && (deferredOf.size === 0 || this.#handlersRan())) {
      return this.#result = this.#state === COMPLETED
        ? Promise.resolve(this.#value as T)
        : Promise.reject(this.#cause);
    }
    return this.#result = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve as (value: unknown) => void;
      this.#reject = reject;
    });
  }

  cancel(cause?: unknown): void {
    try {
      if (this.#state >= CANCELLING) return;
    } catch (e) {
      throw jobThrown(this, "cancel job", e); // before `cause` is read
    }
    // Before anything changes (the hook below included): what an overflow stops in this cancel
    // is gone on with a microtask later (`#armStopped`).
    if (!stoppedQueued) JobSupport.#armStopped();
    const ce = toCancellation(cause);
    // A producer's own cancel (Kotlin's `ChannelCoroutine.cancelInternal`): its channel is
    // cancelled first, with this very error, then the job. Only this call: a parent's cancel
    // (`#cancelDown`) is Kotlin's `parentCancelled`, which closes the channel instead.
    if (ownCancelHooked) {
      const hook = ownCancelHooks.get(this);
      if (hook !== undefined) {
        ownCancelHooks.delete(this); // once
        try {
          hook(ce);
        } catch (e) {
          handleCoroutineException(this.#context, e); // never left half-cancelled
        }
        // Code the hook ran (an onUndeliveredElement of the caller's) may have cancelled it.
        if (this.#state >= CANCELLING) return;
      }
    }
    this.#cancelWith(ce, false);
  }

  // The bodies of this module's functions that read a job's private fields (`flagsOf`,
  // `parentOf`, `resultOf`): inside the class for those fields, not public statics of it, which
  // every job's class inherits, so any caller holding a job reached them
  // (`task.constructor._flagsOf(task)`).
  static {
    isJob = (x): x is JobSupport<unknown> => typeof x === "object" && x !== null && #state in x;
    failureOf = (job) => job.#failed ? job.#cause : undefined;
    handlerCountOf = (job) => job.#handlers?.size ?? 0;
    handlersRanOf = (job) =>
      deferredOf.size === 0 || !isJob(job) || job.#state < CANCELLED || job.#handlersRan();
    // A scope whose follow cancel waits in scope.ts's queue reads "cancelling" until it runs, as
    // Coroutine's `state` getter says (`#cancelQueued() && !isCancelled`: not completed, not
    // cancelling), from the fields themselves: calling that getter ran JobSupport's `state`,
    // `isCancelled` and `isCompleted` through `super`, which a caller can redefine on the
    // prototype, and a print of a scope threw where one of a CompletableDeferred did not.
    jobStateOf = (job) => {
      const s = job.#state;
      return s < CANCELLING && queuedCancelOf(job) !== null ? "cancelling" : stateNames[s];
    };
    flagsOf = (x) => x.#flags;
    parentOf = (x) => x.#parent;
    resultOf = (job) => job.#awaitResult();
    contextOf = (job) => job.#context;
    isCompletedJob = (job) => job.#state >= CANCELLED;
    isCancelledJob = (job) => {
      const s = job.#state;
      return s === CANCELLING || s === CANCELLED ||
        (s < CANCELLING && queuedCancelOf(job) !== null);
    };
    attachTo = (job, parent) => job.#attachTo(parent);
    completeBody = (job, value) => job.#completeBody(value);
    failBody = (job, error, op) => job.#failBody(error, op);
    runStopped = JobSupport.#runStopped;
  }

  invokeOnCompletion(handler: CompletionHandler): Disposable {
    JobSupport.#check(this, "invoke on completion");
    checkFunction("invoke on completion", "handler", handler);
    // Its own handlers first, should they still wait (`#handlersRan`; deeper, it joins them).
    if (this.#state >= CANCELLED && (deferredOf.size === 0 || this.#handlersRan())) {
      // Kotlin invokes at once on the caller's stack; what the handler throws reaches the caller.
      handler(this.#state === COMPLETED ? undefined : this.#cause);
      return NO_OP;
    }
    const handlers = this.#handlers ??= new Set();
    const node: HandlerNode = { h: handler, t: undefined };
    handlers.add(node);
    return {
      // Also while the handlers run (another handler of this job disposing this one): a Set's
      // iteration skips what was deleted before it got there, so a disposed handler never runs.
      // One called already stays (`#notify` reports its throw from its node).
      [Symbol.dispose]: () => {
        if (node.h === handler) handlers.delete(node);
      },
    };
  }

  toString(): string {
    JobSupport.#check(this, "convert job to string");
    // kcoro's own state (`jobStateOf`), as the print reads it: a `state` getter of the caller's
    // (a subclass's, an own property) does not run. Before, `String(job)` threw what it threw.
    return `Job(${jobStateOf(this)})`;
  }

  /**
   * `Job`, the name it prints with (`[customInspect]`): `Object.prototype.toString` says
   * `[object Job]` (`String(x)` is its `toString()`, `Job(active)`); error messages name an
   * argument of the wrong kind that is one "a Job" (`describe`). Only on an instance: an
   * object made from the prototype (`Object.create`) stays `[object Object]`, so a message does
   * not call it what it is not.
   * A primitive receiver (`Reflect.get(proto, Symbol.toStringTag, 1)`) gets undefined too: the
   * brand check is on `Object(this)` (`#x in 1` throws a TypeError).
   */
  get [Symbol.toStringTag](): string | undefined {
    return #state in Object(this) ? "Job" : undefined;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a job, deferred or scope:
   * `Job { state: "active", [[children]]: 2 }` (JavaScript state only): the count of its
   * `children` (`[[...]]`: no property of it, `inspectAs`). Each by its kind, the name error
   * messages give it (`jobKind`): `CoroutineScope { ... }` (`createScope`'s, a root scope's),
   * `Deferred { ... }` (`async`'s), `CompletableDeferred { ... }`, `Job { ... }` (`launch`'s, which
   * its block gets as its task; a native scope's children's). Before, all but a
   * CompletableDeferred printed `Job`, a scope and an `async`'s deferred too.
   */
  [customInspect](inspect: unknown, options: unknown): string {
    if (!(#head in Object(this))) return notA("Job");
    let children = 0; // counted on the list: the `children` getter would copy it to count it
    for (let c = this.#head; c !== null; c = c.#next) children++;
    // kcoro's own state (`jobStateOf`), not `this.state`: a subclass's getter (a
    // CompletableDeferred's subclass, a scope's class extended) that threw made Deno.inspect throw.
    const facts = { state: jobStateOf(this), "[[children]]": children };
    return inspectAs(jobKind(this), facts, inspect, options);
  }

  // --- for subclasses: reached through attachTo, completeBody and failBody (static block) ---

  /**
   * Makes this (new) job a child of `parent`. A parent that is cancelling or final cancels the
   * child at once, so its body never runs.
   */
  #attachTo(parent: JobSupport<unknown>): void {
    const ps = parent.#state;
    if (ps >= CANCELLING) {
      this.#cancelWith(
        ps === COMPLETED
          ? new CancellationError(
            // A CompletableDeferred's parent may be another deferred (`{ parent }`), no scope:
            // named so, where this said "the scope" whatever the parent was.
            isScope(parent)
              ? "Cancelled: the scope has already completed"
              : "Cancelled: its parent has already completed",
          )
          : parent.#childCancel(),
        false,
      );
      return;
    }
    this.#parent = parent;
    const tail = parent.#tail;
    this.#prev = tail;
    if (tail !== null) tail.#next = this;
    else parent.#head = this;
    parent.#tail = this;
  }

  /** The body returned `value`. False if the body had already ended. */
  #completeBody(value: T): boolean {
    if (this.#bodyDone) return false;
    this.#bodyDone = true;
    if (this.#state === ACTIVE) {
      this.#value = value;
      this.#state = COMPLETING;
    }
    try {
      this.#tryFinalize();
    } catch (e) {
      // The call itself may have overflowed (a body ending with the stack all but full), the
      // job left `completing` with nothing to finish it: tried again, as the walk's finish is (a
      // no-op where the throw came out of a finish, the job final by then), by the next run of
      // `stoppedWalks` (the next cancel's or failure's, `#armStopped`: not armed here, which
      // costs a microtask a turn on every body's end). Stores only: the stack may have no room
      // for a call.
      if (this.#state < CANCELLED) { // else final: nothing to retry (no growth)
        const at = stoppedWalks.length;
        stoppedWalks[at] = this;
        stoppedWalks[at + 1] = null;
        stoppedWalks[at + 2] = WALK_FINISH;
      }
      throw e;
    }
    return true;
  }

  /**
   * The body threw `error`: a cancellation cancels the job, anything else fails it. `op` names
   * what the caller did in the message of an `undefined` error's TypeError (a task's body, or
   * CompletableDeferred's `completeExceptionally`).
   */
  #failBody(error: unknown, op = "fail task"): boolean {
    if (this.#bodyDone) return false;
    // A cause of undefined means "completed" to completion handlers: a body that threw
    // undefined fails with an Error saying so.
    if (error === undefined) {
      error = new TypeError(
        `Cannot ${op}: its error must not be undefined (to completion handlers that means ` +
          "completed), received undefined",
      );
    }
    // An AbortError carrying a cancellation (a Node API given the task's signal) is that
    // cancellation: before, it failed the job, so a cancelled task failed its scope, and a
    // withTimeoutOrNull whose block let one out rejected with it instead of resolving null.
    // Told before the body is marked done: the error's `name`, read here, may be a getter of the
    // caller's that re-enters (cancels this job or its scope, completes this deferred). With the
    // body marked done first, a cancel there finished the job at once, cancelled, and the
    // failure that followed found it final and was dropped: a coroutineScope rejected with the
    // CancellationError, or resolved, and nothing was reported.
    // Throws only the engine's error (a stack overflow: the brand's read, `errorKind`), with
    // nothing changed yet, as where this call itself overflows (a launch's block keeps its end
    // for a retry then: scope.ts's `lostBodyEnds`). Before, the read's overflow was taken for "no
    // brand": a cancellation failed the job, and its parent with it.
    const cancellation = cancellationOf(error, () => this.#state === CANCELLING);
    if (this.#bodyDone) return false; // the getter ended the body (a deferred's complete)
    // Before anything changes: a walk or a finish an overflow stops goes on a microtask later.
    if (!stoppedQueued) JobSupport.#armStopped();
    this.#bodyDone = true;
    if (this.#state === NEW) this.#state = ACTIVE;
    if (cancellation !== undefined) error = cancellation;
    const failure = cancellation === undefined;
    try {
      this.#cancelWith(error, failure);
    } catch (e) {
      // Where the call itself overflowed, nothing of it ran: the job, its body marked done, stayed
      // `active` (or a cancelling one not failed), and a second `completeExceptionally` found the
      // body done (false). Kept for a microtask (queued above), held meanwhile (a cancel then does
      // not finish it with the failure lost); else its finish is tried again (a no-op once final).
      // Stores only.
      const at = stoppedWalks.length;
      stoppedWalks[at] = this;
      if (this.#state < CANCELLING || (failure && !this.#failed)) {
        stoppedWalks[at + 1] = error;
        stoppedWalks[at + 2] = failure ? WALK_FAIL : WALK_CANCEL;
        this.#leaving++;
      } else {
        stoppedWalks[at + 1] = null;
        stoppedWalks[at + 2] = WALK_FINISH;
      }
      throw e;
    }
    try {
      this.#tryFinalize();
    } catch (e) {
      // As in `#completeBody`: a job already cancelling (no walk here to finish it) whose finish
      // call overflowed is tried again a microtask later. Stores only. (Not pinned: reached only
      // where the calls before it, deeper, fit and this one does not; no scan has reached it,
      // job_test's launch scans nor the fixture's modes with this catch removed.)
      if (this.#state < CANCELLED) { // else final: nothing to retry (no growth)
        const at = stoppedWalks.length;
        stoppedWalks[at] = this;
        stoppedWalks[at + 1] = null;
        stoppedWalks[at + 2] = WALK_FINISH;
      }
      throw e;
    }
    return true;
  }

  // --- the machine ----------------------------------------------------------------------

  /** The CancellationError that children and the signal see. */
  #childCancel(): CancellationError {
    if (!this.#failed) return this.#cause as CancellationError;
    return this.#cancelError ??= new CancellationError(
      "Cancelled: a task in the scope failed",
      { cause: this.#cause },
    );
  }

  /**
   * Cancels this job with `cause` (a failure when `failure`). Loops instead of recursing, so a
   * chain of 10,000 nested tasks does not overflow the stack (the recursion did, leaving the
   * jobs half-cancelled and a RangeError unhandled). Innermost first, as Kotlin's
   * `notifyCancelling` cancels a job's own children before it tells its parent (`cancelParent`):
   * each job that starts cancelling here walks its subtree (`#cancelDown`) at once, and only then
   * is its parent looked at, which a failure cancels unless it is a supervisor: the failing job's
   * subtree, then its parent's signal and other children, and so on up. A parent becomes
   * `cancelling` only when its turn comes, as Kotlin's stays active until `cancelParent` reaches
   * it: code run by a child's walk (abort listeners, a lazy child's completion handlers) sees it
   * still active (before, every job on the path was made cancelling before the first walk), and
   * what that code does to it (cancel it, fail another of its children) comes first, as in
   * Kotlin. (It walked outermost first: the root's subtree was cancelled before the failing
   * job's.)
   *
   * None of those jobs completes before all of them are cancelling (`#holdFinal`), as Kotlin
   * completes a job only after its `notifyCancelling`, parents included, has returned: then each
   * that can finish does, innermost first. Holding the first job on the path (walked here, or
   * already cancelling) holds them all: each parent has it in its subtree. Without the hold the
   * failing job (its body over, its children gone) completed at the end of its own walk, before
   * its parent's signal aborted.
   */
  #cancelWith(cause: unknown, failure: boolean): void {
    // Before anything changes: a walk an overflow stops is gone on with a microtask later, also
    // where the stack has no room left to queue it then (`#armStopped`).
    if (!stoppedQueued) JobSupport.#armStopped();
    let held: JobSupport<unknown> | null = null; // the first on the path, when its parent is next
    let threw = false, thrown: unknown; // the first throw out of a walk (no object: below)
    // deno-lint-ignore no-this-alias -- j walks up from this job
    let j: JobSupport<unknown> = this;
    let pathDone = false; // the loop left by its own `break`, not by an engine error
    try {
      for (;;) {
        const s = j.#state;
        if (s >= CANCELLED) break;
        let walk = false;
        if (s === CANCELLING) {
          // The first failure wins over a cancellation (Kotlin's root cause rule).
          if (!failure) break;
          if (j.#failed) {
            // Kept in j's cause, or else reported: the path ends here either way, so a throw out
            // of the report (a `reportError` that throws) is thrown on with nothing kept to go on
            // with (\`pathDone\`): kept, its retry reported the failure again a microtask later.
            if (cause !== j.#cause && !suppressInto(j.#cause, cause)) {
              pathDone = true;
              handleCoroutineException(j.#context, cause);
            }
            break;
          }
          j.#cause = cause;
          j.#failed = true;
        } else {
          j.#state = CANCELLING;
          j.#cause = cause;
          j.#failed = failure;
          if (s === NEW || (j.#flags & CANCEL_COMPLETES) !== 0) j.#bodyDone = true;
          walk = true;
        }
        // A failure goes on to j's parent unless that is a supervisor (or there is none);
        // `#handled` records whether the parent takes it, so j does not report it too.
        const p = j.#parent;
        const up = failure &&
          !(p === null || ((p.#flags & SUPERVISOR) !== 0 && (j.#flags & PARENTS_OWN) === 0));
        if (failure) j.#handled = up && (p!.#flags & HANDLES_CHILD_FAILURE) !== 0;
        // The first job on the path is held, walked here or not: one already cancelling (its
        // body failing after a cancel) is not walked again, but a walk above it can end its
        // last child (a thenable settled by an abort listener) and so complete it, before the
        // jobs above are cancelling, unless it is held.
        if (up && held === null) {
          held = j;
          j.#holdFinal = true;
        }
        // Its walk's last step is its own #tryFinalize: a no-op while it, or a job below it on
        // the path, is held.
        if (walk) {
          try {
            j.#cancelDown();
          } catch (e) {
            // Only an engine error gets here (a stack overflow, where the cancel starts deep in
            // its caller's stack): abort listeners' and completion handlers' throws are
            // reported, not thrown. The failure still goes on up, as Kotlin's cancelParent
            // follows notifyCancelling; stopping here left the parents active and the failure,
            // marked handled, lost (its scope completed as if the child had not failed). Thrown
            // on once the path is done. (So does a `reportError` that throws on a finish's report,
            // which the walk throws once it is done.)
            //
            // Thrown before the walk began (the call itself overflowed: the cancel started with
            // the stack all but full), so the walk kept nothing: j, `cancelling` now, is kept
            // here to be walked a microtask later, held until then (`#walkDown`).
            if (stoppedBy !== e) {
              const at = stoppedWalks.length;
              stoppedWalks[at] = j;
              stoppedWalks[at + 1] = null;
              stoppedWalks[at + 2] = WALK_ENTER;
              j.#leaving++;
            }
            stoppedBy = undefined;
            // The first is thrown on, a later walk's kept in its `suppressed`: before, dropped.
            // Kept by stores alone: an object made here (`{ error: e }`, as before) is a call the
            // stack may have no room for, and its overflow left this loop, the failure never
            // reaching the parents (t `completing`, d `cancelling`: job_test's scan of a failure
            // whose parent's report overflows), then finished as if it had not failed.
            if (!threw) {
              threw = true;
              thrown = e;
            } else {
              try {
                keepLater(thrown, e);
              } catch {
                // no room for the call (a stack overflow): dropped, the first thrown on
              }
            }
          }
        }
        if (!up) break;
        // p is still unfinished: j is linked in its list until j finishes, and j (or the held
        // job below it) cannot finish before the hold ends.
        j = p!;
      }
      pathDone = true;
      if (threw) throw thrown;
    } catch (e) {
      // An engine error out of the loop itself (a stack overflow: V8 checks the stack at a
      // loop's back-edge, not only at a call, and at `#suppress`'s call), the failure part way
      // up: j is the job it was to look at next (its parent, past the back-edge). Kept for the
      // microtask queued as this began (`#armStopped`), the held job held (`#leaving`) until
      // then. Before, the throw left the path there and the `finally` let the held job finish:
      // a failing child ended `cancelled` (its failure marked handled, so not reported) and its
      // parent, never cancelled, `completed` (job_test's `--max-opt=0` scan). Stores only: the
      // stack has no room for a call.
      if (!pathDone) {
        const at = stoppedWalks.length;
        stoppedWalks[at] = j;
        stoppedWalks[at + 1] = cause;
        stoppedWalks[at + 2] = failure ? WALK_UP_FAIL : WALK_UP_CANCEL;
        if (held !== null) {
          stoppedWalks[at + 3] = held;
          stoppedWalks[at + 4] = null;
          stoppedWalks[at + 5] = WALK_RELEASE;
          held.#leaving++;
        }
      }
      throw e;
    } finally {
      // Also when a walk threw (thrown on above), so that no job stays held for good.
      if (held !== null) held.#holdFinal = false;
      let unfinished = held; // null once its finish has returned
      try {
        // Goes on up to each parent this lets finish; those above the first that cannot finish
        // have it in their subtree, so they cannot finish either: nothing else to try.
        if (held !== null) held.#tryFinalize();
        unfinished = null;
      } finally {
        // Its finish threw: the call itself may have overflowed, so it is tried again a
        // microtask later (a no-op where the throw came from the finish, the job final by then).
        if (unfinished !== null) {
          if (unfinished.#state < CANCELLED) { // else final: nothing to retry (no growth)
            const at = stoppedWalks.length;
            stoppedWalks[at] = unfinished;
            stoppedWalks[at + 1] = null;
            stoppedWalks[at + 2] = WALK_FINISH;
          }
        }
        // A walk an engine error stopped (this one's, or one below it on the stack) goes on a
        // microtask later (`#walkDown`): queued as this cancel began (`#armStopped`), since here
        // the stack may have no room for the call. (Before, it was queued here, and where that
        // overflowed at the outermost cancel, the walk waited for the next cancel.)
      }
    }
  }

  /**
   * The downward half of cancelling a job that has just become `cancelling`: aborts its signal,
   * cancels each child's subtree depth first, its children oldest first (Kotlin's order: a job
   * notifies its children in the order they were attached, so their signals abort and their
   * completion handlers run in that order), and finishes each job that can finish. With a stack
   * of its own instead of recursion (see `#cancelWith`). No child attaches meanwhile (a job that
   * is cancelling cancels a new child at once, unlinked), so the walk ends at the list's tail.
   *
   * Cancelling a child runs code (abort listeners, a lazy child's completion handlers) that may
   * finish and unlink the sibling the walk goes on with: each job's `#walk` holds that sibling,
   * and `#finalize` moves it past a child that leaves, so the walk is O(children) (it restarted
   * from the head, skipping the children already cancelling: O(N^2) when each child's cancel
   * finished the next one) and allocates nothing for it.
   *
   * No caller's code can cut the walk short, leaving the children it had not reached uncancelled
   * and their parent waiting for ever: what runs inside it catches what that code throws (an
   * abort listener's throw is reported by the signal's dispatch, never thrown out of `abort`; a
   * completion handler's by `#finalize`, which reports it; a CoroutineExceptionHandler's by
   * `handleCoroutineException`; a caller's signal is unlistened by `unlistenAbort`, which never
   * throws), and the CancellationErrors it makes read nothing of the cause they wrap. Only the
   * engine can: a stack overflow thrown out of an abort's dispatch (abort listeners of the
   * caller's that each cancel the next job, ~500 deep, as a chain of plain AbortControllers
   * overflows at ~700). Such an error, where it reaches the walk, is thrown on, and the walk goes
   * on where it stopped a microtask later, on a fresh stack (`#walkDown`, `#runStopped`). (In such
   * a chain it mostly does not: Deno's report of the listener's RangeError overflows as well, and
   * the process ends with "Uncaught RangeError", 1,000 or 100,000 deep on Deno 2.9.6.) Before,
   * it was left as it was: the job whose abort threw stayed `cancelling` for good, its signal
   * maybe never aborted, its children never cancelled, and each job above it on the walk's stack
   * `cancelling` too.
   */
  #cancelDown(): void {
    JobSupport.#walkDown(this, null, WALK_ENTER);
  }

  /**
   * `#cancelDown`'s walk from where it is, `phase` of job `j` (`WALK_ENTER`: its signal to abort,
   * then its children to walk; `WALK_NEXT`: its children from its `#walk` on; `WALK_FINISH`: its
   * finish; `WALK_POP`: none, the next level of `stack`), then the levels of `stack` (each job
   * and its CancellationError; the child it goes on with is the job's `#walk`). A finish's throw
   * (a `reportError` that throws) lets the walk go on, thrown once it is done. An engine error
   * out of the caller's code it runs (an abort's dispatch), or out of a call the stack had no
   * room for, is thrown on, the rest of the walk kept for a microtask
   * (`stoppedWalks`, `#runStopped`) from the phase it stopped in: an abort or a finish already
   * done is a no-op the second time, and a child the walk had not marked yet is looked at again.
   */
  static #walkDown(
    j: JobSupport<unknown> | null,
    stack: (JobSupport<unknown> | CancellationError)[] | null,
    phase: number,
  ): void {
    // The first throw out of a finish (a `reportError` that throws, on the report of a child's
    // handler's exception, or of its failure), thrown once the walk is done.
    let finishThrew = false, finishThrown: unknown;
    let c: JobSupport<unknown> | null = null; // in WALK_CHILDREN, the child looked at next
    try {
      let ce!: CancellationError;
      for (;;) {
        if (phase === WALK_ENTER) {
          ce = j!.#childCancel();
          j!.#controller?.abort(ce);
          c = j!.#head;
          phase = WALK_CHILDREN;
        } else if (phase === WALK_NEXT) {
          ce = j!.#childCancel(); // the CancellationError its children are cancelled with
          c = j!.#walk;
          phase = WALK_CHILDREN;
        } else if (phase === WALK_FINISH) {
          j!.#walk = null;
          phase = WALK_POP;
          try {
            j!.#tryFinalize();
          } catch (e) {
            // The walk goes on at once: the job and those it let finish are final by then (the
            // rest of the tree is not the finish's to stop). Before, the rest waited for a
            // microtask, the siblings after it still active when the cancel returned. Tried
            // again a microtask later too (a no-op once final), should the call itself have
            // overflowed; an overflow goes on to stop the walk at its next call anyway.
            if (j!.#state < CANCELLED) { // else final: nothing to retry (no growth)
              const at = stoppedWalks.length;
              stoppedWalks[at] = j;
              stoppedWalks[at + 1] = null;
              stoppedWalks[at + 2] = WALK_FINISH;
            }
            if (!finishThrew) {
              finishThrew = true;
              finishThrown = e;
            } else {
              try {
                keepLater(finishThrown, e);
              } catch {
                // no room for the call (a stack overflow): dropped, the first thrown on
              }
            }
          }
        } else if (phase === WALK_POP) {
          if (stack === null || stack.length === 0) break;
          ce = stack.pop() as CancellationError;
          j = stack.pop() as JobSupport<unknown>;
          c = j.#walk;
          phase = WALK_CHILDREN;
        } else if (c === null) {
          phase = WALK_FINISH;
        } else {
          const s = c.#state;
          if (s >= CANCELLING) {
            c = c.#next; // nothing ran since c was reached: it is still linked
            continue;
          }
          j!.#walk = c; // where a stop before c is marked goes on (`WALK_NEXT`)
          phase = WALK_NEXT;
          (stack ??= []).push(j!, ce);
          c.#state = CANCELLING;
          c.#cause = ce;
          c.#failed = false;
          if (s === NEW || (c.#flags & CANCEL_COMPLETES) !== 0) c.#bodyDone = true;
          j!.#walk = c.#next; // cancelling c runs code that may unlink it, and the siblings after
          j = c;
          phase = WALK_ENTER;
        }
      }
      if (finishThrew) throw finishThrown; // the walk is done: nothing kept
    } catch (e) {
      // The rest of the walk, kept for a microtask (`#runStopped`, queued as the cancel began:
      // `#armStopped`, or the run going on with it queues another): the stack here may be as full
      // as where the abort overflowed, so no call is made. A job whose abort threw is held
      // (`#leaving`) so that nothing finishes it before its signal aborts and its children are
      // cancelled.
      stoppedBy = e; // what is left is kept below, or nothing is
      // Stopped between a job's children (an overflow at the loop's back-edge: V8 checks the
      // stack there too), the next child in `c` alone: kept in the job's `#walk` (c is still
      // linked: nothing ran since it was reached). Before, the run went on from `c === null`,
      // its children left uncancelled: p `cancelling` and its children `active` for good
      // (job_test's back-edge scan, mode cancel-wide).
      if (phase === WALK_CHILDREN) {
        j!.#walk = c;
        phase = WALK_NEXT;
      }
      if (phase !== WALK_POP || (stack !== null && stack.length !== 0)) {
        const at = stoppedWalks.length;
        stoppedWalks[at] = j;
        stoppedWalks[at + 1] = stack;
        stoppedWalks[at + 2] = phase;
        if (phase === WALK_ENTER) j!.#leaving++;
      }
      if (finishThrew && finishThrown !== e) {
        // A finish threw first: it is thrown on, the engine error kept in its `suppressed`.
        stoppedBy = finishThrown;
        try {
          keepLater(finishThrown, e);
        } catch {
          // no room for the call: dropped
        }
        throw finishThrown;
      }
      throw e;
    }
  }

  /**
   * Queues a microtask that runs the walks an engine error stopped (`stoppedWalks`), unless one
   * is queued: for what `#runStopped`'s runs stopped again (they run on a microtask's fresh stack,
   * outside any cancel that queued one ahead, `#armStopped`). Should the queueing throw, the next
   * cancel's queues it.
   */
  static #queueStopped(): void {
    if (stoppedQueued) return;
    try {
      queueMicrotask(JobSupport.#runStopped);
      stoppedQueued = true;
    } catch {
      // queued by the next cancel's `#armStopped`
    }
  }

  /**
   * Queues the microtask that runs `stoppedWalks` (`#runStopped`), ahead of the work that may
   * add to them: called (where `stoppedQueued` is false) as a cancel or a failure's path begins
   * (`cancel()`, `#cancelWith`, `#failBody`), before anything changes. Not as a body's end begins
   * (`#completeBody`: a microtask a turn on every body's end, +12-15% on scope_bench's launch +
   * join): a finish an overflow stopped there waits for the next cancel's or failure's, anywhere
   * (with none, it stays `completing`). Where an engine error (a stack overflow) stops that work,
   * the stop is kept by stores alone (no call can be made there), and this microtask goes on with
   * it. Before, each stop queued it as it came, and where the stack had no room
   * left even for that at the outermost cancel, the rest waited for the next cancel to end.
   * Where the stack has no room for this call, it throws with nothing changed yet. At most one a
   * turn: `stoppedQueued` stays set until the microtask runs, which returns at once with
   * nothing kept.
   */
  static #armStopped(): void {
    queueMicrotask(JobSupport.#runStopped);
    stoppedQueued = true;
  }

  /**
   * Runs the walks an engine error stopped, each from where it stopped (`#walkDown`): a job
   * whose abort threw, entered again (its hold released), or the levels past a job whose finish
   * threw. What a run throws is reported (nobody called it); what it stops again is queued again,
   * each run going on from where the last stopped. (Not a chain of abort listeners each
   * cancelling the next job: its RangeError comes in Deno's event dispatch, whose own report of
   * it overflows too, and the process ends with "Uncaught RangeError", 1,000 or 100,000 deep on
   * Deno 2.9.6, as a chain of plain AbortControllers does: README's jobs section.)
   */
  static #runStopped(): void {
    stoppedQueued = false;
    if (lostBodyEnds.length !== 0) {
      const lost = lostBodyEnds.splice(0);
      for (let i = 0; i < lost.length; i += 3) {
        const j = lost[i] as JobSupport<unknown>;
        const how = lost[i + 2];
        try {
          if (how === true) j.#failBody(lost[i + 1]);
          else if (how === false) j.#completeBody(lost[i + 1]);
          // A thenable adopted again (scope.ts's `adoptAgain`) only while the body has not ended:
          // adopting it calls its `then` again. Kept where the throw came after the end (a
          // `reportError` that throws on the failure's report), it had called that `then` twice.
          else if (!j.#bodyDone) {
            (how as (job: JobSupport<unknown>, value: unknown) => void)(j, lost[i + 1]);
          }
        } catch (e) {
          try {
            reportUncaught(e); // as a walk's run below: nobody called it
          } catch {
            // a `reportError` that throws: nowhere else to go
          }
          // A throw with the body still not ended, here on a microtask's fresh stack (no overflow
          // of the end's own: what overflows past its start is kept by the walks' stores): the
          // end threw it at its first call too (kept here for an overflow), and a later retry
          // would again; nothing keeps this entry for one. Failed now, once, with no microtask
          // armed (`stoppedQueued` held: what stops is queued at this run's end), with the error
          // it ends with (a thenable's value whose adoption threw: that throw). Before, it was
          // reported and dropped, the job `active` for good (a `queueMicrotask` of the caller's
          // that throws, which `#armStopped` calls; before errors.ts's `isEngineError` ran no
          // trap, a Proxy's among the thrown value's prototypes), also for a RangeError (taken
          // for an overflow a later run would retry: none did).
          if (!j.#bodyDone) {
            JobSupport.#failLost(j, how === true ? lost[i + 1] : e);
          }
        }
      }
    }
    if (stoppedWalks.length === 0) return; // armed ahead (`#armStopped`), and nothing stopped
    const list = stoppedWalks;
    stoppedWalks = [];
    for (let i = 0; i < list.length; i += 3) {
      const j = list[i] as JobSupport<unknown> | null;
      const stack = list[i + 1];
      const phase = list[i + 2] as number;
      if (
        phase === WALK_ENTER || phase === WALK_FAIL || phase === WALK_CANCEL ||
        phase === WALK_RELEASE
      ) j!.#leaving--;
      try {
        // A finish to try again (a job that no walk holds now: nothing but its finish is done),
        // a failure's path or a body's end to go on with, else a walk to go on with.
        if (phase === WALK_FINISH || phase === WALK_RELEASE) j!.#tryFinalize();
        else if (phase === WALK_START) j!.#hooks.onStartAgain!(j!);
        else if (phase === WALK_NOTIFY) JobSupport.#notifyAgain(j!, stack as JobSupport | null);
        else if (phase === WALK_UP_FAIL || phase === WALK_UP_CANCEL) {
          j!.#cancelWith(stack, phase === WALK_UP_FAIL);
        } else if (phase >= WALK_FAIL) {
          try {
            j!.#cancelWith(stack, phase === WALK_FAIL);
          } finally {
            j!.#tryFinalize(); // a job already cancelling is not walked again: none finished it
          }
        } else {
          JobSupport.#walkDown(
            j,
            stack as (JobSupport<unknown> | CancellationError)[] | null,
            phase,
          );
        }
      } catch (e) {
        stoppedBy = undefined; // dealt with here: not held on to
        try {
          reportUncaught(e);
        } catch {
          // a `reportError` that throws: nowhere else to go, and the next walks still run
        }
      }
    }
    if (stoppedWalks.length !== 0) JobSupport.#queueStopped();
  }

  /**
   * Fails job `j`, whose lost body end's retry threw what is no overflow (`#runStopped`), with
   * `error`, `stoppedQueued` held meanwhile so that no microtask is armed (the run queues what
   * stops, at its end); what this throws too is reported, then nothing more is tried.
   */
  static #failLost(j: JobSupport<unknown>, error: unknown): void {
    const queued = stoppedQueued;
    stoppedQueued = true;
    try {
      j.#failBody(error);
    } catch (e) {
      try {
        reportUncaught(e);
      } catch {
        // a `reportError` that throws: nowhere else to go
      }
    } finally {
      stoppedQueued = queued;
    }
  }

  /**
   * Goes on with the handlers of final job `j` that an engine error stopped (`WALK_NOTIFY`),
   * reports what they threw, then releases `parent` (held for them, where not null) and lets it
   * finish; also should they stop again (then kept again, still held) by an overflow. A throw
   * that is none (`isEngineRangeError`: only kcoro's own code runs there, the finalizers, so
   * none is expected) would be thrown again by the next retry: thrown on, for the run to report
   * once, the parent released and the handlers not run again. Before, every throw was kept
   * again, a microtask loop for ever where one kept throwing (a patched Set iterator, before
   * `#notify` called the built-ins as the module loaded), reported on every pass.
   */
  static #notifyAgain(j: JobSupport<unknown>, parent: JobSupport<unknown> | null): void {
    let notified = false;
    try {
      const error = j.#notify(j.#state, true); // by the built-ins as loaded: a fresh stack
      notified = true;
      if (error !== null) handleCoroutineException(j.#context, error);
    } catch (e) {
      if (!notified && !isEngineRangeError(e)) {
        notified = true; // made no progress a retry would make: the parent released below
      } else if (!notified) {
        const at = stoppedWalks.length;
        stoppedWalks[at] = j;
        stoppedWalks[at + 1] = parent;
        stoppedWalks[at + 2] = WALK_NOTIFY; // the run that reports this queues the next
      }
      throw e;
    } finally {
      if (notified && parent !== null) {
        parent.#leaving--;
        parent.#tryFinalize();
      }
    }
  }

  /**
   * A failure after the one this job fails with (Kotlin's suppressed exceptions): kept in the
   * first's `suppressed` list (a non-enumerable own property, as Java's `getSuppressed()`) when
   * it is an object that takes one; else reported, never silently lost: a primitive, an object
   * that is not extensible (`Object.preventExtensions`, sealed or frozen, whatever `suppressed`
   * it has), or one whose `suppressed` is no array (a `SuppressedError`'s is the one error it
   * replaced, which an array there would lose).
   */
  #suppress(later: unknown): void {
    if (!suppressInto(this.#cause, later)) handleCoroutineException(this.#context, later);
  }

  /**
   * Finishes this job if its body and children are done, then each parent that this lets
   * finish: a loop, not recursion (a chain of 10,000 nested tasks ending at once overflowed).
   *
   * A cancelling job's signal has always aborted here (or was never made), as Kotlin notifies a
   * job's cancelling before its completion: nothing runs between a job becoming `cancelling` and
   * its signal's abort (`#cancelWith` walks each job on a failure's path as it makes it
   * cancelling, `#cancelDown` aborts each child as it makes it cancelling), and the abort sets
   * `aborted` before its listeners run. (A backstop here aborted a signal not aborted yet: while
   * `#cancelWith` made every job on the path cancelling before the first walk, an outer job's
   * walk could reach an inner one before that one's own walk.)
   */
  #tryFinalize(): void {
    // What a job's finish throws (a `reportError` that throws, out of its failure's or its
    // handlers' report) does not stop the walk: the job is final and unlinked by then, and its
    // parent, already waiting for it, finishes still. Before, the throw left this loop, and such a
    // parent stayed `completing` (or `cancelling`) for good, its join never resolving. The first
    // throw is thrown on once the walk is done, a later one kept in its `suppressed` (`keepLater`).
    let threw = false, thrown: unknown;
    // deno-lint-ignore no-this-alias -- j walks up from this job
    let j: JobSupport<unknown> | null = this;
    try {
      while (j !== null) {
        if (!j.#bodyDone || j.#head !== null || j.#holdFinal || j.#leaving !== 0) break;
        const s = j.#state;
        if (s === COMPLETING) {
          if (j.#hooks.completionWaits(j)) break;
        } else if (s !== CANCELLING) break;
        // Read first: `#leave` unlinks j. Should it have deferred j's handlers (`NOTIFY_NESTING`),
        // the parent is held (`#leaving`) and the next turn stops at it.
        const p: JobSupport<unknown> | null = j.#parent;
        try {
          j = j.#finalize(s === COMPLETING ? COMPLETED : CANCELLED);
        } catch (e) {
          // Its finish may not have begun (the call overflowed): j is tried again by the next run
          // of `stoppedWalks` (a microtask later where a cancel or a failure began this work, its
          // `#armStopped`; after a body's end, the next cancel's or failure's), a no-op once final.
          // Stores only.
          if (j!.#state < CANCELLED) { // else final: nothing to retry (no growth)
            const at = stoppedWalks.length;
            stoppedWalks[at] = j;
            stoppedWalks[at + 1] = null;
            stoppedWalks[at + 2] = WALK_FINISH;
          }
          if (!threw) {
            threw = true;
            thrown = e;
          } else {
            try {
              keepLater(thrown, e);
            } catch {
              // no room for the call (a stack overflow): dropped, the first thrown on
            }
          }
          j = p;
        }
      }
    } catch (e) {
      // An engine error out of the loop itself (a stack overflow at its back-edge, where V8
      // checks the stack too, or at `completionWaits`' call), j not finished yet (the parent the
      // last finish let go on to): tried again by the next run of `stoppedWalks`, as above.
      // Before, only the first job was tried again, final by then, and j waited for good. Stores
      // only. (Not pinned: job_test's back-edge scan, complete-chain mode, never stopped the loop
      // there, nor did a 60-job chain, 7,351 cases under `--max-opt=0` and 32,271 with the JIT.)
      if (j !== null) {
        if (j.#state < CANCELLED) { // else final: nothing to retry (no growth)
          const at = stoppedWalks.length;
          stoppedWalks[at] = j;
          stoppedWalks[at + 1] = null;
          stoppedWalks[at + 2] = WALK_FINISH;
        }
      }
      throw e;
    }
    if (threw) throw thrown;
  }

  /** Makes this job final; returns its parent, which may now finish too. */
  #finalize(state: number): JobSupport<unknown> | null {
    // A failure no parent took is reported first, while the job is still `cancelling` and among
    // its parent's children, as Kotlin's handleJobException runs in finalizeFinishingState,
    // before the job is final (its completeStateFinalization comes after). Before, the handler
    // saw the job `cancelled` and gone from the list. Nothing it does can finish this job
    // meanwhile: it has no children left and its body is done (a child launched on it now is
    // cancelled unlinked, a cancel or failure of it is no new state), and its parent, which still
    // lists it, cannot finish before it. Made final also should an engine error (a stack
    // overflow) leave the report (`reportError` is called outside any catch), as should one
    // leave `#notify`'s handlers: it left the job `cancelling` for good, still listed, its join
    // pending and its parent never finishing.
    if (state === CANCELLED) {
      try {
        this.#report();
      } catch (e) {
        // The report's throw wins over one out of the handlers' report after it (the same
        // `reportError` throwing again), which is kept in its `suppressed`: it replaced it before.
        try {
          this.#leave(state);
        } catch (later) {
          try {
            keepLater(e, later);
          } catch {
            // no room for the call (a stack overflow): dropped, the first thrown on
          }
        }
        throw e;
      }
    }
    return this.#leave(state);
  }

  /** `#finalize` once the failure is reported: final, unlinked, its handlers run. */
  #leave(state: number): JobSupport<unknown> | null {
    this.#state = state;
    // Unlinked from its parent first, before any other code of the caller's runs (completion
    // handlers): a final job is no longer among its parent's `children` (the unfinished ones).
    // Kotlin's completeStateFinalization unregisters from the parent before it invokes the
    // completion handlers too. Before, it was unlinked last, so a completion handler of a child
    // that had completed still found it in `parent.children`.
    //
    // A parent already waiting for its children (its body done) does not finish before this
    // job's handlers have run (`#leaving`), as Kotlin's waits for the child's ChildCompletion
    // node: one of the child's handlers that cancels it makes it cancelling, and its later
    // handlers see it so. One whose body ends in them (a free-standing scope closed there)
    // finishes at once, as Kotlin's finds no child left to wait for. Without the hold, a waiting
    // parent cancelled in a child's handler finished there, before the child's later handlers.
    const p = this.#parent;
    let waiting = false;
    if (p !== null) {
      const prev = this.#prev, next = this.#next;
      if (prev !== null) prev.#next = next;
      else p.#head = next;
      if (next !== null) next.#prev = prev;
      else p.#tail = prev;
      if (p.#walk === this) p.#walk = next; // the parent's cancel walk was to go on here
      this.#prev = this.#next = this.#parent = null;
      if (p.#bodyDone) {
        waiting = true;
        p.#leaving++;
      }
    }
    if (notifyDepth >= NOTIFY_NESTING) {
      // Too deep in other jobs' handlers (`NOTIFY_NESTING`): this job is final and unlinked now,
      // its handlers and its parent's finish run from the drain below the nesting. The parent is
      // held meanwhile (`#leaving`), its body done or not: it does not finish before them.
      if (p !== null && !waiting) p.#leaving++;
      const leave = { job: this, state, parent: p };
      deferredLeaves.push(leave);
      deferredOf.set(this, leave);
      return null;
    }
    // The hold ends also should an engine error leave the handlers (a stack overflow): a count
    // left behind would keep the parent from ever finishing. What was deferred meanwhile is run
    // also then (a `reportError` that throws, out of the handlers' report): before, it was left
    // waiting for some other job's end, those jobs final with their handlers unrun, and the jobs
    // those handlers end (the rest of a chain) left active. The first error is thrown on.
    notifyDepth++;
    let threw = false, thrown: unknown;
    let notified = false, held = waiting;
    try {
      const error = this.#notify(state);
      notified = true;
      if (error !== null) handleCoroutineException(this.#context, error);
    } catch (e) {
      threw = true;
      thrown = e;
      // An engine error (a stack overflow) stopped the handlers part way, or before they began
      // (the call itself: the job ended with the stack all but full): they go on a microtask
      // later (`WALK_NOTIFY`), the waiting parent held until then. Before, they were lost: the
      // job final, its join and await never settled, its handlers never run. Stores, then the
      // queueing (as `start()`'s).
      if (!notified) {
        const at = stoppedWalks.length;
        stoppedWalks[at] = this;
        stoppedWalks[at + 1] = waiting ? p : null;
        stoppedWalks[at + 2] = WALK_NOTIFY;
        held = false; // released by that run
        if (!stoppedQueued) {
          try {
            void RESOLVED.then(JobSupport.#runStopped);
            stoppedQueued = true;
          } catch {
            // no room for the call: the next cancel's or failure's `#armStopped` runs it
          }
        }
      }
    } finally {
      notifyDepth--;
      if (held) p!.#leaving--;
    }
    if (pulledThrew && !draining) {
      // Pulled by this job's handlers (`#handlersRan`), so before their own report threw (it runs
      // once they all have): the first, theirs kept in its `suppressed`, as the README's rule
      // keeps a later failure. Before, theirs was thrown, the earlier pulled one kept after it.
      const pulled = pulledThrown;
      pulledThrew = false;
      pulledThrown = undefined;
      if (threw) {
        try {
          keepLater(pulled, thrown);
        } catch {
          // no room for the call (a stack overflow): dropped, the first thrown on
        }
      }
      threw = true;
      thrown = pulled;
    }
    if (deferredLeaves.length !== 0 && !draining) {
      try {
        JobSupport.#drainLeaves();
      } catch (e) {
        // A later throw is kept in the first's `suppressed` (`keepLater`): before, dropped.
        if (!threw) {
          threw = true;
          thrown = e;
        } else {
          try {
            keepLater(thrown, e);
          } catch {
            // no room for the call (a stack overflow): dropped, the first thrown on
          }
        }
      }
    }
    if (pulledThrew && !draining) {
      // None is left by the drain (each run takes its pulls' in turn: `#runLeave`): kept after.
      const pulled = pulledThrown;
      pulledThrew = false;
      pulledThrown = undefined;
      if (!threw) {
        threw = true;
        thrown = pulled;
      } else {
        try {
          keepLater(thrown, pulled);
        } catch {
          // no room for the call (a stack overflow): dropped, the first thrown on
        }
      }
    }
    if (threw) throw thrown;
    return p;
  }

  /**
   * Whether this final job's handlers have all run (they have unless `#leave` deferred them):
   * still waiting, they are run now, as Kotlin's had run by the time the job read final, unless
   * the stack is `PULL_NESTING` handlers deep (false: the caller waits behind them). For a handler
   * added once the job reads final, and a join or await made then: before, the added handler ran
   * at once, ahead of the job's own, and a join resolved ahead of the joins made before it.
   */
  #handlersRan(): boolean {
    if (!deferredOf.has(this)) return true;
    if (notifyDepth >= PULL_NESTING) return false;
    // Oldest first: the jobs deferred before this one have their handlers run first, as Kotlin's
    // ran in the order the jobs completed. Before, only this job's ran, ahead of those of a job
    // that ended before it. Each at the same depth, one after the other (bounded, as the drain's),
    // each once: `deferredNext` moves past it, and everything before `deferredNext` has run, so
    // this job, still waiting, lies at or after it. What a run throws goes where the drain's
    // would have (`pulledThrown`): thrown here, it lost the caller's handler (never run, never
    // added, the job final) and made a join throw.
    while (deferredOf.has(this)) {
      const leave = deferredLeaves[deferredNext++];
      if (!deferredOf.has(leave.job)) continue;
      try {
        JobSupport.#runLeave(leave);
      } catch (e) {
        if (!pulledThrew) {
          pulledThrew = true;
          pulledThrown = e;
        } else {
          try {
            keepLater(pulledThrown, e);
          } catch {
            // no room for the call (a stack overflow): dropped, the first thrown on
          }
        }
      }
    }
    return true;
  }

  /**
   * Runs a deferred job's handlers (`#leave`), at one handler's depth more (what they end is
   * deferred again), then lets its parent finish, also should an engine error leave them. The
   * first error is thrown on: the handlers' (a `reportError` that throws), not the parent's
   * report after it, which a `finally` let win.
   */
  static #runLeave(leave: DeferredLeave): void {
    const { job, state, parent } = leave;
    deferredOf.delete(job); // run once: the drain skips it
    let threw = false, thrown: unknown;
    let notified = false, held = parent !== null;
    notifyDepth++;
    try {
      const error = job.#notify(state);
      notified = true;
      if (error !== null) handleCoroutineException(job.#context, error);
    } catch (e) {
      threw = true;
      thrown = e;
      if (!notified) {
        // As in `#leave`: the handlers go on a microtask later, the parent held until then.
        // (Not pinned: job_test's scans never stopped a run here, nor did one of a deferred job's
        // handlers pulled ahead of the drain `n` frames deep, 12 rounds: the pull's own calls
        // before #runLeave overflowed first.)
        const at = stoppedWalks.length;
        stoppedWalks[at] = job;
        stoppedWalks[at + 1] = parent;
        stoppedWalks[at + 2] = WALK_NOTIFY;
        held = false;
        if (!stoppedQueued) {
          try {
            void RESOLVED.then(JobSupport.#runStopped);
            stoppedQueued = true;
          } catch {
            // no room for the call: the next cancel's or failure's `#armStopped` runs it
          }
        }
      }
    } finally {
      notifyDepth--;
      if (held) parent!.#leaving--;
    }
    // What its handlers' pulls threw (`#handlersRan`), and any pull's before them, came before
    // their report's throw: first, as `#leave` takes its own handlers' (chronological).
    if (pulledThrew) {
      const pulled = pulledThrown;
      pulledThrew = false;
      pulledThrown = undefined;
      if (threw) {
        try {
          keepLater(pulled, thrown);
        } catch {
          // no room for the call (a stack overflow): dropped, the first thrown on
        }
      }
      threw = true;
      thrown = pulled;
    }
    if (parent !== null) {
      let finishThrew = false, finishThrown: unknown;
      try {
        parent.#tryFinalize();
      } catch (e) {
        // The call may have overflowed, the parent left unfinished: tried again by the next run
        // of `stoppedWalks` (as in `#tryFinalize`: a microtask later on a cancel's or failure's
        // path, else with the next cancel or failure), a no-op once final. Stores only. (Not
        // pinned: a deferred run starts `NOTIFY_NESTING` handlers deep, and no scan has begun one
        // with the stack all but full.)
        if (parent.#state < CANCELLED) { // else final: nothing to retry (no growth)
          const at = stoppedWalks.length;
          stoppedWalks[at] = parent;
          stoppedWalks[at + 1] = null;
          stoppedWalks[at + 2] = WALK_FINISH;
        }
        finishThrew = true;
        finishThrown = e;
      }
      // Pulls during the parent's finish (its handlers'), then the finish's throw, in turn.
      for (let i = 0; i < 2; i++) {
        let later: unknown;
        if (i === 0 && pulledThrew) {
          later = pulledThrown;
          pulledThrew = false;
          pulledThrown = undefined;
        } else if (i === 1 && finishThrew) later = finishThrown;
        else continue;
        if (!threw) {
          threw = true;
          thrown = later;
        } else {
          try {
            keepLater(thrown, later);
          } catch {
            // no room for the call (a stack overflow): dropped, the first thrown on
          }
        }
      }
    }
    if (threw) throw thrown;
  }

  /**
   * Runs the handlers of the jobs that `#leave` deferred, oldest first, each at the nesting's
   * depth (what they end in turn is deferred again, so the stack stays bounded), then lets each
   * one's parent finish. A loop: a 100,000-job chain ends here without recursion. An engine
   * error out of one (the only kind `#notify` lets out) does not strand the rest: they still run,
   * and the first such error is thrown on after.
   */
  static #drainLeaves(): void {
    draining = true;
    let threw = false, thrown: unknown;
    try {
      while (deferredNext < deferredLeaves.length) {
        const leave = deferredLeaves[deferredNext++]; // moved on first: a pull goes on after it
        if (!deferredOf.has(leave.job)) continue; // run already (`#handlersRan`)
        try {
          JobSupport.#runLeave(leave); // what its pulls threw first (it takes them in turn)
        } catch (e) {
          if (!threw) {
            threw = true;
            thrown = e;
          } else {
            try {
              keepLater(thrown, e);
            } catch {
              // no room for the call (a stack overflow): dropped, the first thrown on
            }
          }
        }
      }
    } finally {
      deferredLeaves.length = 0;
      deferredNext = 0;
      deferredOf.clear();
      draining = false;
    }
    if (threw) throw thrown;
  }

  /**
   * Reports this job's failure where no parent took it and it reports one (`launch`'s), unless
   * a channel will deliver it (`onUnhandledFailure`: a producer's, Kotlin's
   * `ProducerCoroutine.onCancelled` reports only what its channel's close did not take).
   */
  #report(): void {
    if (this.#failed && !this.#handled && (this.#flags & REPORTS_FAILURE) !== 0) {
      const delivers = failureSinks.get(this);
      if (delivers !== undefined) {
        failureSinks.delete(this);
        let taken = false;
        try {
          taken = delivers();
        } catch {
          // reported below, as if there were no channel
        }
        if (taken) return;
      }
      handleCoroutineException(this.#context, this.#cause);
    }
  }

  /**
   * `#finalize`'s handlers, run once this job has left its parent's list; returns what they threw
   * (a CompletionHandlerError), for the caller to report, else null. Throws only an engine error
   * (a stack overflow): then run again (`WALK_NOTIFY`), it goes on from where it stopped, each
   * part once (the join and result settled, each handler marked run as it is called), the
   * handlers walked by the built-ins as the module loaded (`captured`, as `#notifyAgain` asks:
   * a caller's getter that threw on the first walk runs no more).
   */
  #notify(state: number, captured = false): CompletionHandlerError | null {
    const cause = state === COMPLETED ? undefined : this.#cause;
    this.#hooks.onFinal(this); // once: a launch's (`#onFinal`) takes its finalizer first
    if (this.#resolveJoin !== null) {
      this.#resolveJoin();
      this.#resolveJoin = null;
    }
    if (this.#resolve !== null) {
      if (state === COMPLETED) this.#resolve(this.#value);
      else this.#reject!(cause);
      this.#resolve = this.#reject = null;
    }
    const handlers = this.#handlers;
    if (handlers === null) return null;
    // What the handlers throw is reported once, after all of them have run, as Kotlin's
    // notifyHandlers does: the first throw as the CompletionHandlerError's cause, each later one
    // in its `suppressed` list (Kotlin's addSuppressed). Before, each throw was reported on its
    // own, as it came. (No handler is added meanwhile: the job reads final, so one added runs at
    // once.)
    // By the built-ins as the module loaded (`setValues`, `setIteratorNext`), and the job named
    // by its own state (`jobStateOf`, as `toString` says): no code of the caller's runs here but
    // the handlers, so a throw out of here is the engine's (an overflow), which a retry goes on
    // from.
    // A handler's throw is kept on its node by stores alone (`HANDLER_THREW`), and wrapped once
    // all have run: where the wrap, at the depth of the call, overflowed, the throw was lost with
    // the handler marked run, and a retry skipped it (job_test's "... its handlers' run
    // overflowing" scan saw 'ran 1' once the iteration's calls moved where overflows land).
    // By `for...of` while the built-ins it calls are the module's (V8 runs it with no call, so
    // an overflow lands where it did), else by them as the module loaded: a caller's
    // replacement never runs. One made an accessor runs its getter (the check's read, then
    // `for...of`'s): what that throws, or a walk that visits fewer nodes than the Set holds (the
    // getter gave the built-in to the check and another iterator to `for...of`), goes on by the
    // built-ins as loaded, each node called once (marked). Before, the getter's throw left here
    // (a RangeError's retried a microtask later for ever), and an empty iterator skipped them.
    let threw = false, fast = false, visited = 0;
    if (!captured) {
      try {
        fast = SET_ITERATOR_PROTO.next === setIteratorNextFn &&
          SET_PROTO[iteratorKey] === setValuesFn;
      } catch {
        // a caller's getter: by the built-ins as loaded
      }
    }
    if (fast) {
      try {
        for (const n of handlers) {
          visited++;
          const h = n.h;
          if (h === HANDLER_RAN) continue; // called before an engine error stopped this
          if (h === HANDLER_THREW) {
            threw = true; // likewise, its throw on its node
            continue;
          }
          n.h = HANDLER_RAN;
          try {
            h(cause);
          } catch (e) {
            n.t = e;
            n.h = HANDLER_THREW;
            threw = true;
          }
        }
      } catch (e) {
        // The iteration's: an overflow (or a caller's getter's RangeError) thrown on, for the
        // retry on a fresh stack, which walks by the built-ins as loaded (`captured`: at this
        // depth their calls land where the handlers' entries overflow, a run lost to the
        // handler); anything else a caller's getter's, gone on from at once.
        if (isEngineRangeError(e)) throw e;
        visited = -1;
      }
      // A handler disposing a later one deletes it before the walk gets there: both counts drop.
      if (visited !== setSize(handlers)) fast = false;
    }
    if (!fast) {
      const it = setValues(handlers);
      for (let r = setIteratorNext(it); r.done !== true; r = setIteratorNext(it)) {
        const n = r.value;
        const h = n.h;
        if (h === HANDLER_RAN) continue;
        if (h === HANDLER_THREW) {
          threw = true;
          continue;
        }
        n.h = HANDLER_RAN;
        try {
          h(cause);
        } catch (e) {
          n.t = e;
          n.h = HANDLER_THREW;
          threw = true;
        }
      }
    }
    let error: CompletionHandlerError | null = null;
    if (threw) {
      const it = setValues(handlers);
      for (let r = setIteratorNext(it); r.done !== true; r = setIteratorNext(it)) {
        const n = r.value;
        if (n.h !== HANDLER_THREW) continue;
        if (error === null) {
          error = new CompletionHandlerError(
            `Exception in completion handler of Job(${jobStateOf(this)})`,
            { cause: n.t },
          );
        } else addSuppressedTo(error, n.t);
      }
    }
    this.#handlers = null; // all run, their throws wrapped: a retry finds none
    return error;
  }
}

/** A completion handler `#notify` has called: not called again where it goes on. */
const HANDLER_RAN: CompletionHandler = () => {};
/** A completion handler `#notify` has called that threw (its node's `t`): not called again. */
const HANDLER_THREW: CompletionHandler = () => {};
/** A job's completion handler (`h`) and, once it threw (`HANDLER_THREW`), what it threw. */
type HandlerNode = { h: CompletionHandler; t: unknown };

/**
 * Throws unless a promise resolved with `value` fulfils with `value` itself: a thenable (its
 * `then`, read once, a function) would be adopted, and one whose `then` cannot be read would
 * reject with what the read throws. Kotlin's `complete(value)` completes with the value, at once,
 * and `await()` returns it; here `await()` could not, so the deferred said `completed` (to its
 * state and its completion handlers) while `await()` waited on the thenable and rejected with its
 * failure, or never settled with it. A `then` getter answering differently at `await()` is the
 * caller's own doing: that promise's resolve reads `then` again itself (every resolve does, and
 * nothing fulfils a promise with an object without that read), so this read cannot be reused
 * there, and a getter answering a function only to that later read has `await()` adopt it.
 */
function checkNotThenable(op: string, value: unknown): void {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return;
  let then: unknown;
  try {
    then = (value as { then?: unknown }).then;
  } catch (e) {
    throw new TypeError(
      `Cannot ${op}: value's then cannot be read (await() would reject with what it throws), ` +
        `received ${describe(value)}`,
      { cause: e },
    );
  }
  if (typeof then === "function") {
    throw new TypeError(
      `Cannot ${op}: value must not be a thenable (await() would adopt it, never return it: ` +
        `complete with its result), received ${describe(value)}`,
    );
  }
}

/*
 * JobSupport's own members, captured as the module loads: kcoro's modules start, cancel, await,
 * read the signal of and attach completion handlers to their own jobs (a scope's children, an
 * actor's or producer's task, a native scope's owner, a withTimeout's scope, a select's clause)
 * through these (and their context and state by `contextOf`, `isCancelledJob`, `isCompletedJob`
 * and `jobStateOf`, from the fields), never through the job's
 * prototype, which a caller may redefine (`Object.getPrototypeOf(job).cancel = ...`, reaching
 * JobSupport.prototype from any job): before, such a redefinition steered kcoro's own calls (a
 * `cancel` that threw crashed a producer's end; a `start` that threw left a scope never started).
 * A Job of another kind (one a CoroutineScope of the caller's own returns) is the caller's: called
 * through its own members, as before.
 */
const jobStart = JobSupport.prototype.start;
const jobCancel = JobSupport.prototype.cancel;
const jobInvokeOnCompletion = JobSupport.prototype.invokeOnCompletion;
const jobSignal = Object.getOwnPropertyDescriptor(JobSupport.prototype, "signal")!.get!;
const jobAwait = JobSupport.prototype.await;

/**
 * @ignore JobSupport's own `await()` of a kcoro `deferred`; a Deferred of another kind's own
 * (select's onAwait takes one of the caller's).
 */
export function awaitJob<T>(deferred: Deferred<T>): Promise<T> {
  if (isJob(deferred)) return jobAwait.call(deferred) as Promise<T>;
  const callers: Deferred<T> = deferred; // as startJob's
  return callers.await();
}

/**
 * @ignore JobSupport's own `signal` getter on a kcoro `job` (its AbortSignal, made on first use).
 */
export function signalOfJob(job: JobSupport<unknown>): AbortSignal {
  return jobSignal.call(job);
}

/** @ignore JobSupport's own `start` of a kcoro `job`; a Job of another kind's own `start()`. */
export function startJob(job: Job): boolean {
  if (isJob(job)) return jobStart.call(job);
  const callers: Job = job; // the caller's own: its members are its to define
  return callers.start();
}

/**
 * @ignore JobSupport's own `cancel` of a kcoro `job`; a Job of another kind's own `cancel`, with
 * no argument where `cause` is left out (as `cancel()`).
 */
export function cancelJob(job: Job, ...cause: [] | [unknown]): void {
  if (isJob(job)) return jobCancel.call(job, cause[0]);
  const callers: Job = job; // as startJob's
  if (cause.length === 0) callers.cancel();
  else callers.cancel(cause[0]);
}

/**
 * @ignore JobSupport's own `invokeOnCompletion` on a kcoro `job`; a Job of another kind's own
 * (which may return anything: the caller checks what it keeps).
 */
export function onJobCompletion(job: Job, handler: CompletionHandler): Disposable {
  if (isJob(job)) return jobInvokeOnCompletion.call(job, handler);
  const callers: Job = job; // as startJob's
  return callers.invokeOnCompletion(handler);
}

/** The option names of the CompletableDeferred constructor: any other own key is refused. */
const DEFERRED_OPTIONS = optionNames<{ context?: Context; parent?: Job }>({
  context: true,
  parent: true,
});

/**
 * A {@linkcode Deferred} completed by hand (Kotlin's `CompletableDeferred`): `complete(value)`
 * or `completeExceptionally(error)` settle it; `cancel()` cancels it. Active from the start.
 * With a `parent` (Kotlin's `CompletableDeferred(parent)`) it is that job's child: cancelled
 * with it, failing it, waited for by it. Besides the members of `Deferred` it has `context` (the
 * constructor's) and `signal` (an AbortSignal that aborts, with the CancellationError as its
 * reason, once it is cancelled or fails).
 *
 * @example
 * ```ts
 * import { CompletableDeferred, coroutineScope } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const answer = new CompletableDeferred<number>();
 * setTimeout(() => answer.complete(42), 0);
 * assert.equal(await answer.await(), 42);
 * assert.equal(answer.complete(43), false); // already completed
 * assert.equal(answer.state, "completed");
 *
 * // A child of a scope's job: the scope waits for it (and its cancel would cancel it).
 * let reply: CompletableDeferred<string> | undefined;
 * const done = coroutineScope((scope) => {
 *   reply = new CompletableDeferred<string>({ parent: scope.job });
 *   setTimeout(() => reply!.complete("late"), 0);
 * });
 * await done; // resolved only once `reply` completed
 * assert.equal(reply!.state, "completed");
 * ```
 */
export class CompletableDeferred<T> extends JobSupport<T> implements Deferred<T> {
  /**
   * An active deferred, a child of `options.parent` when given (Kotlin's
   * `CompletableDeferred(parent)`): a {@linkcode Job} of kcoro's (a scope or its `job`, a task's
   * job, another CompletableDeferred). Its parent's cancel cancels it; its failure
   * (`completeExceptionally` with an error that is no cancellation) cancels its parent, unless
   * that is a supervisor; its parent does not complete before it does, and lists it among its
   * `children`. A parent already cancelling or final cancels it at once; a lazy one is started
   * once it is attached (its block runs before this returns). `options.context` is its
   * context, added to its parent's (as `launch`'s is; default: the parent's, else
   * `Context.empty`): its {@linkcode CoroutineExceptionHandler} gets the errors completion
   * handlers throw. Throws a TypeError (`Cannot create CompletableDeferred: ...`) for options that
   * are not an object, a context that is not a {@linkcode Context} or a parent that is not a Job.
   */
  constructor(options: { context?: Context; parent?: Job } = {}) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        `Cannot create CompletableDeferred: options must be an object, received ${
          describe(options)
        }`,
      );
    }
    checkReadable("create CompletableDeferred", options); // a revoked Proxy: named
    // Each read once (a getter of the caller's may answer differently each time).
    const own = options.context, parent = options.parent;
    checkOptionNames("create CompletableDeferred", options, DEFERRED_OPTIONS);
    if (own !== undefined && !isContext(own)) {
      throw new TypeError(
        `Cannot create CompletableDeferred: context must be a Context, received ${describe(own)}`,
      );
    }
    // A brand check (no trap runs): a look-alike, a Proxy of a job or a scope of the caller's own
    // is none. Before, `parent` was ignored (an unknown option), so the deferred stayed active
    // after its parent's cancel and its parent completed without waiting for it.
    if (parent !== undefined && !isJob(parent)) {
      throw new TypeError(
        `Cannot create CompletableDeferred: parent must be a Job, received ${describe(parent)}`,
      );
    }
    // The parent's own context (`contextOf`), not a `context` getter redefined on its prototype.
    const context = parent === undefined
      ? own ?? Context.empty
      : own === undefined
      ? contextOf(parent)
      : childContext(contextOf(parent), own);
    // Takes its children's failures, as Kotlin's CompletableDeferredImpl does (JobSupport's
    // `handlesException` is true; only JobImpl, createScope's, answers false without a parent):
    // a child's failure completes it exceptionally, its `await()` rejecting with it, and is not
    // reported too. Before, the failing child (the children of `nativeScope({ job: deferred })`)
    // also went to the exception handler.
    super(context, CANCEL_COMPLETES | HANDLES_CHILD_FAILURE | DEFERRED);
    // Attached as it is made, as Kotlin's `initParentJob` runs in its constructor: a parent
    // cancelling or final cancels it here, so it starts `cancelled` (and `start` does nothing).
    // So does a scope whose follow cancel waits in scope.ts's queue (it reads `cancelling`),
    // unattached, as a task launched on it is (a shallow tree's scope is cancelling there).
    if (parent !== undefined) {
      const queued = queuedCancelOf(parent);
      if (queued !== null) jobCancel.call(this, abortReason(queued));
      else attachTo(this, parent as JobSupport<unknown>);
    }
    jobStart.call(this);
    // A lazy parent is started (Kotlin's initParentJob: "make sure the parent is started"), last:
    // its block runs now, on this stack (kcoro's blocks start at once, where Kotlin's is
    // dispatched), and finds this deferred active among its children, as Kotlin's does. Started
    // before the attach, a block that returned at once completed its job first, and the deferred
    // was cancelled ("the scope has already completed"). JobSupport's own `start`: a `start` the
    // caller set on the job itself, or on its prototype since the module loaded, is not run.
    if (parent !== undefined) jobStart.call(parent);
  }

  /**
   * The brand of a CompletableDeferred (a private method: `#x in`, no slot per instance). Its own
   * members check it: the shared job brand (`isJob`) let
   * `CompletableDeferred.prototype.complete.call(launchedJob, v)` complete another task's job
   * from outside, its body still running.
   */
  #deferred(): void {}

  static {
    isDeferred = (x): x is CompletableDeferred<unknown> =>
      typeof x === "object" && x !== null && #deferred in x;
  }

  /**
   * @ignore How `console.log` / `Deno.inspect` print a deferred:
   * `CompletableDeferred { state: "active", [[children]]: 0 }` (a job's hook, by its own name);
   * what is none prints `CompletableDeferred <not a CompletableDeferred>`.
   */
  override [customInspect](inspect: unknown, options: unknown): string {
    if (!isDeferred(this)) return notA("CompletableDeferred");
    return super[customInspect](inspect, options);
  }

  /**
   * Completes with `value`; false if it had already completed, failed or been cancelled. Throws
   * a TypeError (`Cannot complete: ...`), changing nothing, for a thenable (an object or function
   * whose `then`, read once, is a function, or cannot be read): `await()` could not give it back
   * (a promise adopts a thenable), so complete with its result instead (`d.complete(await p)`).
   */
  complete(value: T): boolean {
    // On what is no job, named before `value` is read (its `then` is the caller's code).
    if (!isDeferred(this)) {
      throw notJob(this, "complete", "CompletableDeferred");
    }
    checkNotThenable("complete", value);
    return !isCancelledJob(this) && completeBody(this, value); // not a redefined getter
  }

  /**
   * Fails with `error` (a CancellationError cancels instead, and so does an AbortError carrying
   * one as its `cause`, cancelling with that one, as a block letting it out does:
   * `cancellationOf`); false if already settled. An `error` of `undefined` (which to completion
   * handlers means completed) fails it with a TypeError saying so
   * (`Cannot completeExceptionally: ...`).
   */
  completeExceptionally(error: unknown): boolean {
    if (!isDeferred(this)) {
      throw notJob(this, "completeExceptionally", "CompletableDeferred");
    }
    return !isCancelledJob(this) && failBody(this, error, "completeExceptionally");
  }
}

/**
 * @ignore `task.job` where it is a kcoro Job, else null: a task that a CoroutineScope of the
 * caller's own gives a block (produce's, an actor's) may name none, a Job of another kind, or have
 * a getter that throws, which is taken as naming none, as `taskSignal` takes a throwing `signal`
 * getter for no signal. Read once (a getter of the caller's may answer differently each time).
 * Before, that getter's throw failed the block, where a throwing `signal` left it unwatched.
 */
export function taskJobOf(task: { readonly job?: unknown }): JobSupport<unknown> | null {
  const own = scopeOwnJob(task);
  if (own !== null) return own;
  let read: unknown;
  try {
    read = task.job;
  } catch {
    return null; // the caller's getter: no kcoro Job, as with none
  }
  return isJob(read) ? read : null;
}

refuseAsValue(
  JobSupport,
  "a job or deferred",
  "send a reply channel's `share()` for the result instead",
  NOT_CLONEABLE,
);

// Its look-alikes are described as such in error messages (`describe`).
nameLookAlikes(JobSupport.prototype, "Job");
// And its instances by kind (`describe`): "received a Deferred", where it said "[object Job]".
nameInstances("Job", (x) => isJob(x) ? describeJobKind(x) : undefined);

/**
 * What kind of job `job` is, for error messages: "a CompletableDeferred"; a scope's or task's by
 * its flags: "a CoroutineScope" (createScope's, a root scope's), "a Deferred" (`async`), else
 * "a Job" (`launch`, a native scope's children).
 */
function describeJobKind(job: JobSupport<unknown>): string {
  return `a ${jobKind(job)}`;
}

/** The kind `describeJobKind` names, without its article: the name a job prints with. */
function jobKind(job: JobSupport<unknown>): string {
  if (isDeferred(job)) return "CompletableDeferred";
  const flags = flagsOf(job);
  if ((flags & DEFERRED) !== 0) return "Deferred";
  if (isScope(job) && (flags & REPORTS_FAILURE) === 0) return "CoroutineScope";
  return "Job";
}

/**
 * @ignore Whether `x` is a job of kcoro's that is no Deferred: a `launch`'s, a scope's (or a
 * block's task), a native scope's children (no `DEFERRED` flag). Each has an `await` method
 * (JobSupport's, which refuses them), so select's `onAwait` took it for a Deferred's, firing with
 * undefined; Kotlin's `onAwait` is on Deferred only (a Job has `onJoin`).
 */
export function isResultlessJob(x: unknown): boolean {
  return isJob(x) && (flagsOf(x) & DEFERRED) === 0;
}

/**
 * @ignore The TypeError of a public member of a job, deferred or scope called on what is none
 * (`what`, a Job by default): "Cannot <op>: this is not a Job, received a Job look-alike". Each
 * threw the engine's "Cannot read private member" (a join or await rejected with none: it threw).
 */
export function notJob(self: unknown, op: string, what = "Job"): TypeError {
  return new TypeError(
    `Cannot ${op}: this is not ${/^[AEIOU]/.test(what) ? "an" : "a"} ${what}, received ${
      describeJob(self)
    }`,
  );
}

/**
 * @ignore `x` itself where it is a scope (or task) of scope.ts with no own `job` of the caller's:
 * its `job` is itself (Coroutine's getter), found without running the getter, which a caller may
 * redefine on its prototype (a throwing one made a kcoro task's actor or producer take the task
 * for a scope of the caller's own, and `nativeScope(task)` throw); else null.
 */
export function scopeOwnJob(x: unknown): JobSupport<unknown> | null {
  return isScope(x) && !Object.hasOwn(x as object, "job") ? x as JobSupport<unknown> : null;
}

/** @ignore Whether `x` is a scope (or task) of scope.ts: set by it (`isScopeObject`). */
let isScope: (x: unknown) => boolean = () => false;
/** @ignore scope.ts's brand check, for `describeJobKind` (job.ts cannot import scope.ts). */
export function _setScopeBrand(check: (x: unknown) => boolean): void {
  isScope = check;
}

// errors.ts's `launchChecked` takes a kcoro Job by this brand check (errors.ts imports no module).
_setJobBrand(isJob);

/**
 * @ignore Whether a failure that a child of `parent`'s fails with is seen above it (rethrown or
 * reported) without that child's own report: it reaches `parent` (no supervisor) and, passed on up
 * from job to job as long as none is a supervisor, comes to one that takes children's failures as
 * its own (a task, `async`, a `coroutineScope`, a scope made so) or that reports its own (a
 * launch's, a native scope's job). A scope made `parent`'s child by `createScope`'s `parent` option
 * takes its own children's failures exactly then, as Kotlin's `Job(parent)` handles exceptions when
 * an ancestor does (`JobImpl.handlesException` walks up): else a child of its failing would report
 * nothing (its scope took it) and nothing above would either (a supervisor, a free-standing scope):
 * the failure would be lost; or, taken by both, it would
 * be reported by the child and rethrown or reported again above. Walked, not only `parent` asked:
 * a scope made a child that takes nothing passes its failure on to its own parent, so a scope
 * under it whose grandparent is a task had its launch report a failure the task reported again (a
 * `CompletableDeferred` did so too until it took its children's failures).
 */
export function parentTakesFailure(parent: JobSupport<unknown>): boolean {
  if ((flagsOf(parent) & SUPERVISOR) !== 0) return false; // it stops below the supervisor
  for (let j: JobSupport<unknown> = parent;;) {
    const flags = flagsOf(j);
    if ((flags & (HANDLES_CHILD_FAILURE | REPORTS_FAILURE)) !== 0) return true;
    // j fails with it, taking it from nobody: it goes on to j's parent unless that is a
    // supervisor (which a job standing for a scope's own work fails all the same), as
    // `#cancelWith` sends it.
    const p: JobSupport<unknown> | null = parentOf(j);
    if (p === null || ((flagsOf(p) & SUPERVISOR) !== 0 && (flags & PARENTS_OWN) === 0)) {
      return false;
    }
    j = p;
  }
}

/**
 * @ignore The signal whose follow cancel of `job` (a scope) waits in scope.ts's queue, else null:
 * set by scope.ts (a static block of `Coroutine`).
 */
let queuedCancelOf: (job: JobSupport<unknown>) => AbortSignal | null = () => null;

/** @ignore Sets `queuedCancelOf` (job.ts cannot import scope.ts). */
export function _setQueuedCancel(of: (job: JobSupport<unknown>) => AbortSignal | null): void {
  queuedCancelOf = of;
}

/**
 * `self` described for `notJob`: a job of another kind than the member's by its kind (by brand,
 * running none of its code), as `describe` names it (`describeJobKind`), anything else by
 * `describe`. Before, every job was "[object Job]": "this is not a Job, received [object Job]"
 * for a CompletableDeferred given to a scope's state getter; then a task or scope was "a task's
 * or scope's Job" here while other messages named it "a Job", "a Deferred", "a CoroutineScope".
 */
function describeJob(self: unknown): string {
  return isJob(self) ? describeJobKind(self) : describe(self);
}

/**
 * What a job member's catch throws: `e`, what its body threw, on a job; `notJob` on what is none,
 * whose first private read threw the engine's TypeError. The brand check runs only then.
 */
function jobThrown(self: unknown, op: string, e: unknown): unknown {
  return isJob(self) ? e : notJob(self, op);
}

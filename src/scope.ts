/**
 * Structured concurrency for JavaScript tasks: scopes, `launch` and `async`, modelled on
 * kotlinx.coroutines.
 *
 * A task is a plain (async) function on the event loop. `scope.launch(block)` runs it as a child
 * of the scope and returns its {@linkcode Job}; `scope.async(block)` does the same and returns a
 * {@linkcode Deferred} holding its result. Each block receives its own task's scope, so it can
 * launch children of its own, read `scope.context`, and see cancellation through
 * `scope.signal` (an AbortSignal: pass it to `fetch`, `delay`, channel operations, or check
 * `scope.isActive` in a loop). Cancellation is cooperative: a task that ignores its signal runs
 * to its end, and its scope waits for it.
 *
 * Rules (Kotlin's):
 * - A scope finishes only when its block and every child have finished; no task outlives it.
 * - A child failing (throwing anything but a CancellationError) cancels the scope and all its
 *   other children, and `coroutineScope` rejects with that error (the first failure wins).
 * - Cancellation is not a failure: a cancelled child does not cancel its siblings.
 * - In `supervisorScope` a child's failure stays with that child: a `launch` reports it to the
 *   {@linkcode CoroutineExceptionHandler} (else `reportError`), an `async` keeps it for `await`.
 * - An outside `signal` cancels the scope; a cancelled scope rejects with the CancellationError
 *   (the signal's reason, wrapped unless it is one), even if its block returned.
 *
 * JavaScript has no implicit coroutine context: `AsyncLocalStorage.run` costs ~180 ns a call
 * here, about the price of a whole launch + join, so the scope is passed explicitly. To make a
 * nested `coroutineScope` part of a task, pass it the task's `signal` and `context`.
 *
 * @module
 */
import { childContext, Context, Deadline, isContext } from "./context.ts";
import {
  abortHeard,
  abortReason,
  CancellationError,
  checkFunction,
  checkOptionNames,
  checkReadable,
  checkSignal,
  describe,
  isAborted,
  listenAbortNamed,
  optionNames,
  refuseSyncDispose,
  reportUncaught,
  signalOf,
  unlistenAbort,
} from "./errors.ts";
import {
  _setQueuedCancel,
  _setScopeBrand,
  attachTo,
  CANCEL_COMPLETES,
  cancelJob,
  completeBody,
  contextOf,
  DEFERRED,
  type Deferred,
  failBody,
  HANDLES_CHILD_FAILURE,
  isCancelledJob,
  isJob,
  type Job,
  type JobHooks,
  type JobState,
  JobSupport,
  lostBodyEnds,
  notJob,
  parentTakesFailure,
  REPORTS_FAILURE,
  resultOf,
  runStopped,
  SETTLED,
  startJob,
  SUPERVISOR,
  toCancellation,
} from "./job.ts";

/**
 * A lost thenable's value adopted again (`lostBodyEnds`): a no-op where the body has ended
 * (`completeBody` and `failBody` answer false); a thenable value adopted twice ends it once.
 */
let adoptAgain: (job: JobSupport<unknown>, value: unknown) => void;

/** A task's body: gets its own task's scope, returns its result (or a promise of it). */
export type Block<T> = (scope: CoroutineScope) => T | PromiseLike<T>;

/** Options for {@linkcode CoroutineScope.launch} and {@linkcode CoroutineScope.async}. */
export interface LaunchOptions {
  /** Start in state `new`; `start()`, `join()` or `await()` starts it (Kotlin's `LAZY`). */
  lazy?: boolean;
  /**
   * Entries added to the child's context (Kotlin's `launch(context)`): it inherits the scope's
   * context with these on top (their values win per key), e.g. `Context.empty.with(key, value)`.
   * A key cannot be removed this way: given `scope.context.without(key)`, the child still has the
   * scope's entry. Its {@linkcode Deadline} is the earlier of the scope's and this one's, so the
   * child, and the native children it launches, never get a later one than the scope's timeout.
   */
  context?: Context;
}
/** LaunchOptions' names: any other own key is refused (`checkOptionNames`). */
const LAUNCH_OPTIONS = optionNames<LaunchOptions>({ lazy: true, context: true });

/** Options for {@linkcode coroutineScope}, {@linkcode supervisorScope} and the timeouts. */
export interface ScopeOptions {
  /** Aborting it cancels the scope; an aborted one fails at once without running the block. */
  signal?: AbortSignal;
  /**
   * The scope's context (default: {@linkcode Context.empty}); its tasks inherit it. A
   * {@linkcode Deadline} set in it by hand ends a `withTimeout` / `withTimeoutOrNull` given it
   * when it comes first; a `coroutineScope` or `supervisorScope` arms no timer for it.
   */
  context?: Context;
}
/** ScopeOptions' names: any other own key is refused (`checkOptionNames`). */
const SCOPE_OPTIONS = optionNames<ScopeOptions>({ signal: true, context: true });
/** nonCancellable's option names. */
const NON_CANCELLABLE_OPTIONS = optionNames<{ context?: Context }>({ context: true });

/** Options for {@linkcode createScope}. */
export interface CreateScopeOptions extends ScopeOptions {
  /** Children's failures do not cancel the scope or each other (Kotlin's `SupervisorJob`). */
  supervisor?: boolean;
  /**
   * The job this scope's job is a child of (Kotlin's `CoroutineScope(Job(parent))`): a
   * {@linkcode Job} of kcoro's (a scope or its `job`, a task's job, a deferred). The parent waits
   * for the scope (its `join()`, `coroutineScope`, lists it among its `children`) until the scope
   * completes (`join()`, or cancelled and its tasks done); the parent's cancel cancels it; its
   * failure (a child's, unless `supervisor`) fails the parent unless that is a supervisor. A
   * parent already cancelling or completed makes the scope start cancelled; a lazy one is
   * started. The scope's context is the parent's with `context` added (as `launch`'s is).
   */
  parent?: Job;
}
/** CreateScopeOptions' names: any other own key is refused (`checkOptionNames`). */
const CREATE_SCOPE_OPTIONS = optionNames<CreateScopeOptions>({
  signal: true,
  context: true,
  supervisor: true,
  parent: true,
});

/**
 * Where tasks are launched: the argument of every block, of {@linkcode coroutineScope} and
 * friends, and what {@linkcode createScope} returns.
 */
export interface CoroutineScope {
  /** Aborts (reason: the CancellationError) when this scope is cancelled or fails. */
  readonly signal: AbortSignal;
  /** The context, inherited by every task launched here. */
  readonly context: Context;
  /** This scope's own job (inside a block: the running task's job). */
  readonly job: Job;
  /** True until the scope is cancelled or finished; loop on it for cooperative cancellation. */
  readonly isActive: boolean;
  /** Runs `block` as a child task; its failure cancels the scope (unless a supervisor). */
  launch(block: Block<unknown>, options?: LaunchOptions): Job;
  /** Runs `block` as a child task whose result `await()` returns. */
  async<T>(block: Block<T>, options?: LaunchOptions): Deferred<T>;
  /** Cancels this scope and every task in it. */
  cancel(cause?: unknown): void;
}

/**
 * A free-standing scope from {@linkcode createScope}: a job without a body of its own, disposed
 * with `await using` (a sync `using` is refused with a TypeError: its disposal could not wait).
 */
export interface Scope extends CoroutineScope, Job, AsyncDisposable {
  /**
   * Closes the scope to new work once its current tasks finish, and waits for them (with a
   * `signal`: until it aborts, as `Job.join`).
   */
  join(options?: { signal?: AbortSignal }): Promise<void>;
  /** Cancels every task and waits until all have finished. */
  [Symbol.asyncDispose](): Promise<void>;
}

function checkBlock(op: string, block: unknown): void {
  checkFunction(op, "block", block);
}

function checkObject(op: string, options: unknown): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`Cannot ${op}: options must be an object, received ${describe(options)}`);
  }
  checkReadable(op, options); // a revoked Proxy: named, not the engine's bare error
}

/** Throws "Cannot <op>: context must be a Context" unless `context` is undefined or one. */
export function checkContext(op: string, context: unknown): void {
  if (context !== undefined && !isContext(context)) {
    throw new TypeError(`Cannot ${op}: context must be a Context, received ${describe(context)}`);
  }
}

function checkBoolean(op: string, name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "boolean") {
    throw new TypeError(`Cannot ${op}: ${name} must be a boolean, received ${describe(value)}`);
  }
}

/**
 * Checks scope options and returns what it checked, each read once: the caller uses that, not
 * `options` (a getter answered undefined to the check and `{}` to the use after it: a failing
 * supervisorScope never settled). `known`: the option names taken (createScope's are more).
 * Internal (time.ts uses it too).
 */
export function checkScopeOptions(
  op: string,
  options: ScopeOptions | undefined,
  known: readonly string[] = SCOPE_OPTIONS,
): ScopeOptions | undefined {
  if (options === undefined) return undefined;
  checkObject(op, options);
  const { signal, context } = options;
  checkOptionNames(op, options, known);
  checkSignal(op, signal);
  checkContext(op, context);
  return { signal, context };
}

const LAUNCH = REPORTS_FAILURE | HANDLES_CHILD_FAILURE;

/** Blocks running inside blocks' synchronous starts, now; past the bound one starts later. */
let nestedStarts = 0;
const MAX_NESTED_STARTS = 100;

/**
 * Thenables adopted (`#adopt`) within one another's `then` call, synchronously: a caller's
 * thenable that hands back another from inside its `then` nests one adoption per level.
 * Past `MAX_NESTED_STARTS` of them the next is adopted a microtask later, on a fresh stack, as a
 * promise's resolve always calls `then` in a job of its own. Before, 10,000 such levels overflowed
 * the stack, and the RangeError was dropped by a level whose thenable had already handed back its
 * value (a later throw is ignored): the body never ended, and its scope waited for ever.
 */
let nestedAdopts = 0;
const ASYNC = HANDLES_CHILD_FAILURE | DEFERRED;

/**
 * Cancels made by `follow`'s listeners running now, one inside another: a scope given a task's
 * signal (a `coroutineScope` nested in a task, as README says to nest one) is cancelled from that
 * signal's abort, which runs inside the walk cancelling the task, whose own nested scope's cancel
 * runs inside that one's walk, and so on down. Recursing through the signals' dispatch, ~500
 * such levels overflowed the stack (a recursive algorithm nesting a scope per level): the
 * RangeError escaped from an abort listener, uncaught (the process ended), and the scopes below
 * were never cancelled.
 */
let followDepth = 0;
/** Past this many follow cancels nested in one another, the next waits in `followQueue`. */
const MAX_FOLLOW_DEPTH = 32;
/**
 * Follow cancels waiting to run, each a scope and the signal it follows, in the order they came:
 * one past `MAX_FOLLOW_DEPTH`, and every later one of the same run (the first level's cancel, or
 * one that `runQueuedFollows` runs) once one waits, at any depth, so that none overtakes one that
 * came before it. The first level runs them once its own cancel returns, before it returns itself
 * (`runQueuedFollows`), so every scope below is cancelled by the time the outermost cancel
 * returns, as without the queue, on a stack no deeper than `MAX_FOLLOW_DEPTH` levels, and in the
 * order the nested cancels would have come in: outermost first along each path, each one's whole
 * nest before the next one's. Before, a later one at a lower depth ran at once, ahead of the
 * nests that had been queued before it, and queued cancels ran first come first served, each
 * one's own queued nest after all its queued siblings (breadth first).
 */
const followQueue: (Coroutine<unknown> | AbortSignal)[] = [];
/**
 * @ignore A scope's internals for the follow queue and for its signal and finalizers: module
 * functions that reach its private methods, set by `Coroutine`'s static block. As methods named
 * `queueCancel`, `runQueuedCancel`, `follow` and `addFinalizer` every scope and task had them
 * (`task.queueCancel(signal)` left a scope reading cancelling, its launches cancelled, and never
 * completing), and then as methods keyed by symbols mod.ts did not export, which
 * `Object.getOwnPropertySymbols` of a scope's prototype still listed.
 */
let queueCancel: (scope: Coroutine<unknown>, by: AbortSignal) => void;
/** @ignore Runs the cancel `cancelFollowing` queued (`runQueuedFollows`). See `queueCancel`. */
let runQueuedCancel: (scope: Coroutine<unknown>, by: AbortSignal) => void;
/**
 * @ignore Cancels `scope` when `signal` aborts, until it finishes (createScope's and the root
 * scopes'); checks its arguments, refusing a listen that throws by name under `op`. See
 * `queueCancel`.
 */
export let follow: (scope: unknown, op: unknown, signal: unknown) => void;
/**
 * @ignore Runs `fn` once `scope` reaches a final state, before completion handlers (src/time.ts's
 * timeouts); checks its arguments. See `queueCancel`.
 */
export let addFinalizer: (scope: unknown, fn: unknown) => void;
/** A scope's (a Coroutine's) JobSupport hooks, reaching its private methods (its static block). */
let COROUTINE_HOOKS: JobHooks;
/**
 * @ignore True if `x` is a scope (or task) this module made: a brand check, no Proxy trap. Set by
 * a static block of `Coroutine`: as the public static `Coroutine._isScope`, reachable from any
 * scope (`scope.constructor._isScope = () => true`), it let a CompletableDeferred or any object
 * pass for a scope in this module's members, which then threw the engine's "Cannot read private
 * member" where they throw a named TypeError.
 */
export let isScopeObject: (x: unknown) => x is Coroutine<unknown>;
/**
 * The queued cancels `runQueuedFollows` has taken from `followQueue` and not yet run, the next
 * on top. Module state, not the run's own: an engine error that leaves the run (anywhere, its
 * own steps included) leaves them here, with the ones still in `followQueue`, for
 * `runLeftFollows`. Before, a local of the run: such an error dropped them, and the nest's end
 * emptied `followQueue`, so those scopes read cancelling for good and never completed.
 */
const followStack: (Coroutine<unknown> | AbortSignal)[] = [];
/**
 * The signal whose follow cancel of `job` waits in `followQueue`, else null (a job of another
 * kind too): set by `Coroutine`'s static block, which reads its private field.
 */
let queuedCancelOf: (job: JobSupport<unknown>) => AbortSignal | null;
/** A `runLeftFollows` is queued as a microtask. */
let leftFollowsQueued = false;

/**
 * A follow cancel: `scope` cancelled with `signal`'s reason by JobSupport's own cancel
 * (`cancelJob`), not one a caller redefined on its prototype. `_testFollowCancelFault`'s function
 * runs first.
 */
function followCancel(scope: Coroutine<unknown>, signal: AbortSignal): void {
  if (followCancelFault !== null) followCancelFault(scope);
  cancelJob(scope, abortReason(signal));
}
/** `_testFollowCancelFault`'s function, run first by each `followCancel` (tests only). */
let followCancelFault: ((scope: Coroutine<unknown>) => void) | null = null;
/**
 * @ignore Tests: `f` runs first in each cancel a scope's signal following makes (a throw there is
 * the cancel's: an engine error such as a stack overflow, simulated), until set to null. Where a
 * test redefined the scopes' `cancel` on their prototype, which kcoro's own calls no longer run.
 */
export function _testFollowCancelFault(f: ((scope: Coroutine<unknown>) => void) | null): void {
  followCancelFault = f;
}

/** `scope.cancel` with `signal`'s reason, nested at most `MAX_FOLLOW_DEPTH` deep (above). */
function cancelFollowing(scope: Coroutine<unknown>, signal: AbortSignal): void {
  // At depth 0 `followQueue` holds only cancels left by an engine error (`runLeftFollows`):
  // this cancel runs at once, as a first level that runs them too.
  if (followDepth >= MAX_FOLLOW_DEPTH || (followDepth !== 0 && followQueue.length !== 0)) {
    // Queued before it is marked: an engine error between the two leaves a queued cancel that
    // runs (reading active meanwhile), never a scope marked cancelling whose cancel never runs.
    followQueue.push(scope, signal);
    // Until its cancel runs the scope reads cancelling (`isActive`, `isCancelled`, `state`), a
    // launch on it is cancelled at once, and it does not complete (`completionWaits`), to code
    // run by abort listeners at this depth: as a shallow tree's scope, already cancelling.
    queueCancel(scope, signal);
    return;
  }
  let failed: { error: unknown } | null = null;
  followDepth++;
  try {
    try {
      followCancel(scope, signal);
    } catch (e) {
      failed = { error: e }; // only an engine error: thrown once the queued cancels have run
    }
    // The first of the nest runs the queued cancels, also when its own cancel threw.
    if (followDepth === 1) failed = endFollowNest(failed);
  } finally {
    followDepth--;
  }
  // The first error, as it is (to the abort's dispatch, which reports a listener's throw).
  if (failed !== null) throw failed.error;
}

/**
 * The end of a nest's first level (`cancelFollowing`, `runLeftFollows`): runs the cancels
 * waiting, and answers `failed`, else the error that left the run (only an engine error, or
 * a `reportError` that throws). What such an error left waiting is not dropped: it runs in a
 * microtask, on a fresh stack (`runLeftFollows`), or, should its queuing throw too, at the next
 * first level, those scopes reading cancelling until then.
 */
function endFollowNest(failed: { error: unknown } | null): { error: unknown } | null {
  try {
    if (followQueue.length !== 0 || followStack.length !== 0) runQueuedFollows();
  } catch (e) {
    failed ??= { error: e };
  }
  if ((followQueue.length !== 0 || followStack.length !== 0) && !leftFollowsQueued) {
    try {
      queueMicrotask(runLeftFollows);
      // Marked once queued: were the mark set first, a queuing that threw would leave it set
      // for good, and no later error's leftovers would be queued again.
      leftFollowsQueued = true;
    } catch (e) {
      // An engine error here too (the first level is where the stack ran out): the first error
      // is the one thrown, and what is left runs at the next first level (`cancelFollowing`).
      // Before, this error left the first level in place of the first one.
      failed ??= { error: e };
    }
  }
  return failed;
}

/** Cancels run by `runQueuedFollows` so far: whether `runLeftFollows` got on. */
let followsRun = 0;

/**
 * Runs the cancels an engine error left waiting (`endFollowNest`), as a nest's first level.
 * Its own error is reported (`reportUncaught`); what that left is queued again only when this run
 * cancelled at least one scope, so that an error that comes every time cannot hold the event
 * loop in microtasks: what it leaves runs at the next first level (`cancelFollowing`).
 */
function runLeftFollows(): void {
  leftFollowsQueued = false;
  if (followQueue.length === 0 && followStack.length === 0) return; // a first level ran them
  const ran = followsRun;
  let failed: { error: unknown } | null = null;
  followDepth++;
  try {
    try {
      runQueuedFollows();
    } catch (e) {
      failed = { error: e };
    }
    // Only when some cancel ran: one that an error stopped before any ran is not run again.
    if (failed !== null && followsRun !== ran) failed = endFollowNest(failed);
  } finally {
    followDepth--;
  }
  if (failed !== null) reportUncaught(failed.error); // kcoro's report form (a Proxy's wrapped)
}

/**
 * Runs `followQueue` (in a nest's first level) until it stays empty, depth first: `followStack`
 * holds the cancels still to run, the next on top; what each one queues goes on top of the
 * rest, its first on top, so it runs, with all that it queues in turn, before the next one. Each
 * runs as a fresh first level (its nested cancels counted from it), queuing afresh.
 */
function runQueuedFollows(): void {
  const pending = followStack;
  let thrown: { error: unknown } | null = null; // the first throw of `reportError` itself
  for (;;) {
    for (let i = followQueue.length - 2; i >= 0; i -= 2) {
      pending.push(followQueue[i], followQueue[i + 1]);
    }
    followQueue.length = 0;
    if (pending.length === 0) break;
    // The pair leaves in one step once the pop (a call, where an engine error can come) has
    // taken its signal: the scope is read and dropped by index and length. Before, a second
    // pop, and an error there left the scope on top without its signal, to be paired with the
    // entry below: it was never cancelled, reading cancelling for good.
    const by = pending.pop() as AbortSignal,
      next = pending[pending.length - 1] as Coroutine<unknown>;
    pending.length--;
    followsRun++;
    try {
      runQueuedCancel(next, by);
    } catch (e) {
      // Only an engine error (the cancel walk catches what callers' code throws): the rest are
      // still cancelled, and the error is reported, as the abort's dispatch reports a listener's.
      // What it had queued before it threw runs all the same (moved above, next time round).
      try {
        reportUncaught(e); // kcoro's report form (a Proxy's wrapped)
      } catch (r) {
        // A `reportError` that throws (replaced, or deleted) is thrown once the queue is empty,
        // to the abort's dispatch that reports a listener's throw. Before, it left at once and
        // the cancels still waiting were dropped: those scopes were never cancelled.
        thrown ??= { error: r };
      }
    }
  }
  if (thrown !== null) throw thrown.error;
}

/**
 * A job that runs a block and is the scope its block gets (Kotlin's `AbstractCoroutine`): the
 * task, its job and its scope are one object, so a launch allocates one object and one closure
 * pair. Internal.
 */
export class Coroutine<T> extends JobSupport<T> implements CoroutineScope {
  #block: Block<T> | null;
  #finalizer: (() => void) | null = null;
  /** The signal whose follow cancel waits in `followQueue` for this scope, else null. */
  #queuedBy: AbortSignal | null = null;

  constructor(context: Context, flags: number, block: Block<T> | null) {
    super(context, flags, COROUTINE_HOOKS);
    this.#block = block;
  }

  get job(): Job {
    return this;
  }

  /**
   * False also while a follow cancel for this scope waits in `followQueue`: the signal it
   * follows has aborted (its own aborts only when the cancel runs: `isCancelled`), and a shallow
   * tree's scope would be cancelling by now. Before, it read true in
   * that gap, so a loop on it ran on.
   */
  override get isActive(): boolean {
    try {
      return this.#queuedBy === null && super.isActive;
    } catch (e) {
      throw scopeThrown(this, "read job state", e, "Job"); // on what is none (`notJob`)
    }
  }

  /**
   * True also while a follow cancel for this scope waits in `followQueue` (unless it has ended
   * meanwhile), as `state` reads `cancelling` then: the flags agree with `isActive` (false) in
   * the gap, as a shallow tree's cancelling scope's do. Before, `isCancelled` read false and
   * `state` active there, while `isActive` read false.
   *
   * Its `signal` still aborts only when the queued cancel runs, not as it is queued: its
   * listeners are the follow listeners of the scopes nested through it, so an abort as it is
   * queued would queue theirs, each queuing aborting its own signal inside the one above, one
   * level deeper each: the recursion through the signals' dispatch that the queue is for. It
   * would also run the signal's listeners ahead of the cancels queued before this one.
   */
  override get isCancelled(): boolean {
    try {
      return super.isCancelled || this.#cancelQueued();
    } catch (e) {
      throw scopeThrown(this, "read job state", e, "Job");
    }
  }

  /** `cancelling` also while a follow cancel for this scope waits (`isCancelled` says why). */
  override get state(): JobState {
    try {
      return this.#cancelQueued() && !super.isCancelled ? "cancelling" : super.state;
    } catch (e) {
      throw scopeThrown(this, "read job state", e, "Job");
    }
  }

  /** Throws `notJob` unless `self` is a scope (off the hot paths, before any argument is read). */
  static #check(self: unknown, op: string): void {
    if (!isScopeObject(self)) throw notJob(self, op, "CoroutineScope");
  }

  static {
    isScopeObject = (x): x is Coroutine<unknown> =>
      typeof x === "object" && x !== null && #block in x;
    // job.ts's `queuedCancelOf`: the signal whose follow cancel of `job` waits in `followQueue`,
    // else null (a job of another kind too): a CompletableDeferred made with it as its `parent`
    // is cancelled with that signal's reason, unattached, as a task launched on it is (`#child`).
    // A closure handed over here, not a static member: as `Coroutine._queuedBy` it was reachable
    // from any scope (`scope.constructor._queuedBy(other)` read another scope's queued signal),
    // where JobSupport's subclass hooks are kept out of reach on purpose (module symbols).
    // Also this module's `queuedCancelOf` (createScope's `parent`), the same closure.
    queuedCancelOf = (job) => isScopeObject(job) ? job.#queuedBy : null;
    _setQueuedCancel(queuedCancelOf);
    queueCancel = (scope, by) => scope.#queueCancel(by);
    runQueuedCancel = (scope, by) => scope.#runQueuedCancel(by);
    follow = (scope, op, signal) => {
      Coroutine.#check(scope, "follow signal");
      (scope as Coroutine<unknown>).#follow(op as string, signal as AbortSignal);
    };
    addFinalizer = (scope, fn) => {
      Coroutine.#check(scope, "add scope finalizer");
      (scope as Coroutine<unknown>).#addFinalizer(fn as () => void);
    };
    COROUTINE_HOOKS = Object.freeze({
      onStart: (job: JobSupport<unknown>) => (job as Coroutine<unknown>).#onStart(),
      onStartAgain: (job: JobSupport<unknown>) => (job as Coroutine<unknown>).#startLater(),
      onFinal: (job: JobSupport<unknown>) => (job as Coroutine<unknown>).#onFinal(),
      // Not completed while a follow cancel for this scope waits in `followQueue`: its last child
      // ending there (a lazy one cancelled by an abort listener run meanwhile) leaves it
      // `completing`, reading cancelling, until the queued cancel runs and it ends cancelled, as a
      // shallow tree's scope, cancelling by then, does. Before, it completed there, with its
      // block's value.
      completionWaits: (job: JobSupport<unknown>) => (job as Coroutine<unknown>).#queuedBy !== null,
    });
  }

  /** A follow cancel for this scope waits in `followQueue`, and the scope has not ended. */
  #cancelQueued(): boolean {
    return this.#queuedBy !== null && !super.isCompleted;
  }

  /** `cancelFollowing` queued this scope's cancel, following `by`. */
  #queueCancel(by: AbortSignal): void {
    this.#queuedBy ??= by;
  }

  /** Runs the cancel `cancelFollowing` queued (`runQueuedFollows`). */
  #runQueuedCancel(by: AbortSignal): void {
    this.#queuedBy = null;
    followCancel(this as Coroutine<unknown>, by);
  }

  launch(block: Block<unknown>, options?: LaunchOptions): Job {
    // On what is no scope, `#child` throws the engine's TypeError: named (`scopeThrown`).
    try {
      if (typeof block !== "function") checkBlock("launch", block);
      return this.#child("launch", block, options, LAUNCH);
    } catch (e) {
      throw scopeThrown(this, "launch", e);
    }
  }

  async<T>(block: Block<T>, options?: LaunchOptions): Deferred<T> {
    try {
      if (typeof block !== "function") checkBlock("run async", block);
      return this.#child("run async", block, options, ASYNC);
    } catch (e) {
      throw scopeThrown(this, "run async", e);
    }
  }

  #child<R>(op: string, block: Block<R>, options: LaunchOptions | undefined, flags: number) {
    // The scope's own context (`contextOf`), not a `context` getter redefined on its prototype.
    let context = contextOf(this as Coroutine<unknown>), lazy = false;
    if (options !== undefined) {
      checkObject(op, options);
      const { lazy: given, context: own } = options; // read once (checkScopeOptions says why)
      checkOptionNames(op, options, LAUNCH_OPTIONS);
      checkBoolean(op, "lazy", given);
      checkContext(op, own);
      lazy = given === true;
      // Added to the parent's (Kotlin's `launch(context)`), never in place of it: the child
      // keeps the parent's other keys and, at the latest, its Deadline.
      if (own !== undefined) context = childContext(context, own);
    }
    const child = new Coroutine<R>(context, flags, block);
    const queuedBy = this.#queuedBy;
    // This scope's cancel waits in `followQueue`: the child is cancelled at once, never
    // started, as `attachTo` cancels one launched on a cancelling scope (a shallow tree's scope
    // is cancelling here). Before, its block ran, on a scope its signal had already cancelled.
    if (queuedBy !== null) cancelJob(child, abortReason(queuedBy));
    else attachTo(child as Coroutine<unknown>, this as Coroutine<unknown>);
    if (!lazy) startJob(child); // JobSupport's own start: a redefined one is not run
    return child;
  }

  /**
   * Cancels this scope when `signal` aborts, until the scope finishes: at once if it is aborted
   * once the listen is done (`listenAbortNamed`: one that aborted during the listen too; before,
   * such a scope, createScope's or a root scope's, ran on following an aborted signal). A listen
   * that throws (only a signal whose engine state the caller redefined) is refused by name under
   * `op`, keeping no listener, before the scope starts. Only the listen: what the cancel run here
   * throws (only an engine error) is thrown as it is (createScope throws it; the root scopes'
   * calls, which return a promise, reject with it). Before, the whole call was wrapped, and such
   * an error was named "signal must be one that can be listened to".
   */
  #follow(op: string, signal: AbortSignal): void {
    // Internal (createScope's and the root scopes'), checked before the listen all the same.
    // Called with no arguments it said "Cannot undefined: signal must be one that can be listened
    // to"; on what is no scope, its listen stayed on the signal when `addFinalizer` threw, to
    // throw the engine's error from the signal's dispatch once it aborted.
    if (typeof op !== "string") {
      throw new TypeError(`Cannot follow signal: op must be a string, received ${describe(op)}`);
    }
    if (signal === undefined) {
      throw new TypeError(
        "Cannot follow signal: signal must be an AbortSignal, received undefined",
      );
    }
    checkSignal("follow signal", signal);
    // By AbortSignal's and EventTarget's own members (errors.ts, `isAborted`): before, the
    // signal's own `removeEventListener`, when it threw, escaped the finalizer partway and left
    // this scope and its parent unfinished.
    // Only once the signal aborted: a call before (the caller's code that reached the listener
    // through the engine's listeners property) changes nothing. Before, it cancelled the scope.
    const onAbort = (event?: Event) => {
      if (abortHeard(signal, onAbort, event)) cancelFollowing(this as Coroutine<unknown>, signal);
    };
    if (!listenAbortNamed(op, signal, onAbort)) {
      this.#addFinalizer(() => unlistenAbort(signal, onAbort));
      return;
    }
    // Aborted before or during the listen: `onAbort` has run, but it only queued the cancel when
    // it came inside nested follow cancels (`cancelFollowing`), to run once they return, after
    // this scope's block would have started. Cancelled here instead, at once: this scope, not
    // started yet, has no child and nothing listening to its signal, so its cancel nests nothing.
    // Before, past 32 nested levels, its block ran.
    followCancel(this as Coroutine<unknown>, signal);
  }

  /** Runs `fn` once the scope reaches a final state, before completion handlers. */
  #addFinalizer(fn: () => void): void {
    // Checked here: a non-function threw only once the scope ended, inside its finalization.
    checkFunction("add scope finalizer", "fn", fn);
    const before = this.#finalizer;
    this.#finalizer = before === null ? fn : () => {
      before();
      fn();
    };
  }

  #onStart(): void {
    const block = this.#block;
    if (block === null) return;
    if (nestedStarts >= MAX_NESTED_STARTS) {
      // Blocks launched from blocks, synchronously, this many deep: start this one on a fresh
      // stack (Kotlin's Unconfined dispatcher does the same). Running each at once overflowed
      // the stack near 2,000 levels, between a job's start and its body, and the scope hung.
      queueMicrotask(() => this.#startLater());
      return;
    }
    nestedStarts++;
    try {
      this.#run(block);
    } finally {
      nestedStarts--;
    }
  }

  /**
   * The deferred start of `onStart` (past `MAX_NESTED_STARTS`, and job.ts's `onStartAgain`, after
   * a start an overflow stopped): a job cancelled meanwhile never runs its block; one whose block
   * was taken, a no-op.
   */
  #startLater(): void {
    const block = this.#block;
    if (block === null) return;
    if (isCancelledJob(this as Coroutine<unknown>)) { // its own state, not a redefined getter
      this.#block = null;
      failBody(this as Coroutine<unknown>, new CancellationError("Cancelled before it started"));
      return;
    }
    this.#onStart();
  }

  #run(block: Block<T>): void {
    this.#block = null;
    let result;
    try {
      result = block(this);
    } catch (e) {
      try {
        failBody(this as Coroutine<unknown>, e);
      } catch (again) {
        // The call itself may not have fit (an engine error: the block started with the stack
        // all but full), the body's end lost, the job `active` for good: kept for the next run
        // of `stoppedWalks` (job.ts: queued here where that fits, or by the start this throw
        // leaves, else by the next cancel or failure), where a second failBody is a no-op should
        // the first have begun. Stores, then the queueing.
        const at = lostBodyEnds.length;
        lostBodyEnds[at] = this;
        lostBodyEnds[at + 1] = e;
        lostBodyEnds[at + 2] = true;
        try {
          void SETTLED.then(runStopped); // one builtin's call: `runStopped` says why
        } catch {
          // no room for it: the next cancel's or failure's run goes on with it
        }
        throw again;
      }
      return;
    }
    try {
      this.#adopt(result);
    } catch (e) {
      // The call of #adopt may not have fit (the block returned with the stack all but full),
      // nor, for a thenable whose `then` could not be read or called so, its failBody: the body's
      // end lost, its block taken (a start's retry is a no-op then), the job `active` for good.
      // Adopted again by `stoppedWalks`' run, as a thenable's call back's lost end is: not once
      // the body ended (`#runStopped` asks: also a caller's throw, a `reportError`'s, comes
      // here, and adopting again called a thenable's `then` twice). Stores, then the queueing.
      const at = lostBodyEnds.length;
      lostBodyEnds[at] = this;
      lostBodyEnds[at + 1] = result;
      lostBodyEnds[at + 2] = adoptAgain;
      try {
        void SETTLED.then(runStopped); // one builtin's call: `runStopped` says why
      } catch {
        // no room for it: the next cancel's or failure's run goes on with it
      }
      throw e;
    }
  }

  /**
   * Ends the body with `result`, a thenable adopted as a promise's resolve adopts it: the value
   * it hands back is adopted in turn when it is a thenable (a caller's thenable may hand back
   * another), and only its first call counts (a later value, failure or throw is ignored, as
   * Promise's resolve functions ignore it). Before, the value handed back completed the body
   * as it was, so the job said completed while `await()` adopted it (its failure lost to the
   * scope). A native promise never hands back a thenable.
   */
  #adopt(result: unknown): void {
    if (result === null || (typeof result !== "object" && typeof result !== "function")) {
      try {
        completeBody(this as Coroutine<T>, result as T);
      } catch (e) {
        // As `#run`'s failBody: the call may not have fit, the body's end lost (a block that
        // returned with the stack all but full). Kept for `stoppedWalks`' run (job.ts), where a
        // second completeBody is a no-op should the first have begun. Stores, then the queueing.
        const at = lostBodyEnds.length;
        lostBodyEnds[at] = this;
        lostBodyEnds[at + 1] = result;
        lostBodyEnds[at + 2] = false;
        try {
          void SETTLED.then(runStopped); // one builtin's call: `runStopped` says why
        } catch {
          // no room for it: the next cancel's or failure's run goes on with it
        }
        throw e;
      }
      return;
    }
    // A thenable, as Promise.resolve takes one: reading `then` or calling it may throw, which
    // fails the body (it must not escape to the caller, leaving the job running for ever).
    let called = false;
    try {
      const then = (result as PromiseLike<T>).then;
      if (typeof then !== "function") {
        completeBody(this as Coroutine<T>, result as T);
        return;
      }
      nestedAdopts++;
      try {
        then.call(result, (v: unknown) => {
          if (called) return;
          called = true;
          try {
            if (nestedAdopts >= MAX_NESTED_STARTS) queueMicrotask(() => this.#adopt(v));
            else this.#adopt(v);
          } catch (e) {
            // As `#run`'s: a thenable that called back with the stack all but full, the call not
            // fitting, lost the body's end (`called` set: a second call is ignored). Kept, then
            // the run queued (where that fits). Adopted again: a no-op once the body ended.
            const at = lostBodyEnds.length;
            lostBodyEnds[at] = this;
            lostBodyEnds[at + 1] = v;
            lostBodyEnds[at + 2] = adoptAgain;
            try {
              void SETTLED.then(runStopped); // one builtin's call: `runStopped` says why
            } catch {
              // no room for it: the next cancel's or failure's run goes on with it
            }
            throw e;
          }
        }, (e: unknown) => {
          if (called) return;
          called = true;
          try {
            failBody(this as Coroutine<unknown>, e);
          } catch (again) {
            const at = lostBodyEnds.length; // as above
            lostBodyEnds[at] = this;
            lostBodyEnds[at + 1] = e;
            lostBodyEnds[at + 2] = true;
            try {
              void SETTLED.then(runStopped); // one builtin's call: `runStopped` says why
            } catch {
              // no room for it: the next cancel's or failure's run goes on with it
            }
            throw again;
          }
        });
      } finally {
        nestedAdopts--;
      }
    } catch (e) {
      if (called) return;
      called = true;
      failBody(this as Coroutine<unknown>, e);
    }
  }

  static {
    adoptAgain = (job, value) => (job as Coroutine<unknown>).#adopt(value);
  }

  #onFinal(): void {
    const finalizer = this.#finalizer;
    if (finalizer !== null) {
      this.#finalizer = null;
      finalizer();
    }
  }
}

/**
 * What a scope member's catch throws: `e`, what its body threw, on a scope; on what is none,
 * whose first private read threw the engine's TypeError, `notJob`'s (naming `what`: a Job for
 * the state getters a task's job shares with its scope, else a CoroutineScope).
 */
function scopeThrown(self: unknown, op: string, e: unknown, what = "CoroutineScope"): unknown {
  if (isScopeObject(self)) return e;
  // A job of another kind (a CompletableDeferred) is a Job: what it is not is a scope. Before,
  // "this is not a Job, received [object Job]".
  return notJob(self, op, isJob(self) ? "CoroutineScope" : what);
}

_setScopeBrand(isScopeObject);

/**
 * @ignore `rootScope`'s checks without making a scope: throws for bad arguments, answers the
 * CancellationError of an aborted signal, else null.
 */
export function checkRoot<T>(
  op: string,
  block: Block<T>,
  options: ScopeOptions | undefined,
): CancellationError | null {
  checkBlock(op, block);
  const signal = checkScopeOptions(op, options)?.signal;
  return signal !== undefined && isAborted(signal) ? toCancellation(abortReason(signal)) : null;
}

/**
 * @ignore Makes a root scope running `block` (not yet started), following `options.signal`.
 * Returns the CancellationError instead when the signal has already aborted; throws for bad
 * arguments (its callers turn that into a rejection). Internal (time.ts uses it).
 */
export function rootScope<T>(
  op: string,
  block: Block<T>,
  options: ScopeOptions | undefined,
  supervisor: boolean,
): Coroutine<T> | CancellationError {
  checkBlock(op, block);
  const checked = checkScopeOptions(op, options);
  const signal = checked?.signal;
  if (signal !== undefined && isAborted(signal)) return toCancellation(abortReason(signal));
  const flags = HANDLES_CHILD_FAILURE | (supervisor ? SUPERVISOR : 0);
  const scope = new Coroutine<T>(checked?.context ?? Context.empty, flags, block);
  // Refused by name as createScope's (before, the listen's raw error). One that aborted during
  // the listen has cancelled the scope (`follow`): it rejects without running its block.
  if (signal !== undefined) follow(scope, op, signal);
  return scope;
}

/**
 * Makes the root scope (`rootScope`'s arguments) and runs it. A bad argument rejects, as every
 * function that returns a Promise does here: never a synchronous throw.
 */
function run<T>(
  op: string,
  block: Block<T>,
  options: ScopeOptions | undefined,
  supervisor: boolean,
): Promise<T> {
  let scope: Coroutine<T> | CancellationError;
  try {
    scope = rootScope(op, block, options, supervisor);
  } catch (e) {
    return Promise.reject(e);
  }
  if (scope instanceof CancellationError) return Promise.reject(scope);
  startJob(scope);
  return resultOf(scope); // its block's value: a root scope is no Deferred (its await refuses)
}

/**
 * Runs `block` in a new scope and resolves with its result once the block and every task
 * launched in the scope have finished. A failing task cancels the others and the scope rejects
 * with its error; a cancelled scope rejects with the CancellationError.
 *
 * @example
 * ```ts
 * import { coroutineScope } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const order: string[] = [];
 * const sum = await coroutineScope(async (scope) => {
 *   scope.launch(async () => { await null; order.push("child"); });
 *   const a = scope.async(async () => 20);
 *   const b = scope.async(() => 22);
 *   return await a.await() + await b.await();
 * });
 * assert.equal(sum, 42);
 * assert.deepEqual(order, ["child"]); // the scope waited for its child
 *
 * await assert.rejects(coroutineScope(async (scope) => {
 *   scope.launch(async (task) => { // a sibling that would run forever, but is cancelled
 *     await new Promise((_, reject) => task.signal.addEventListener("abort", reject));
 *   });
 *   scope.launch(async () => { throw new Error("boom"); });
 * }), /boom/);
 * ```
 */
export function coroutineScope<T>(block: Block<T>, options?: ScopeOptions): Promise<T> {
  return run("run coroutineScope", block, options, false);
}

/**
 * Like {@linkcode coroutineScope}, but a child's failure does not cancel the scope or its
 * siblings: a failed `launch` goes to the {@linkcode CoroutineExceptionHandler} in its context
 * (else `reportError`), a failed `async` keeps its error for `await()`. The block's own failure
 * still cancels every child.
 *
 * @example
 * ```ts
 * import { supervisorScope } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const results = await supervisorScope(async (scope) => {
 *   const bad = scope.async(async () => { throw new Error("one failed"); });
 *   const good = scope.async(async () => "the other did not");
 *   await assert.rejects(bad.await(), /one failed/);
 *   return await good.await();
 * });
 * assert.equal(results, "the other did not");
 * ```
 */
export function supervisorScope<T>(block: Block<T>, options?: ScopeOptions): Promise<T> {
  return run("run supervisorScope", block, options, true);
}

/**
 * Runs `block` in a scope that nothing outside can cancel: for cleanup that must finish after
 * its task was cancelled (Kotlin's `withContext(NonCancellable) { ... }`). A cancelled task's
 * own `signal` is already aborted, so cleanup that waits must wait on this scope's `signal`
 * instead. The section is still a scope: its children are awaited and a failure is rethrown.
 * It inherits no context unless given one (pass the task's `scope.context`).
 *
 * @example
 * ```ts
 * import { coroutineScope, delay, nonCancellable } from "../mod.ts";
 * import assert from "node:assert/strict";
 * let flushed = false;
 * await assert.rejects(coroutineScope(async (scope) => {
 *   scope.launch(async (task) => {
 *     try {
 *       await delay(60_000, { signal: task.signal }); // cancelled below
 *     } finally {
 *       await nonCancellable(async (cleanup) => {
 *         await delay(1, { signal: cleanup.signal }); // would reject with task.signal
 *         flushed = true;
 *       }, { context: task.context });
 *     }
 *   });
 *   await null;
 *   scope.cancel();
 * }), { name: "CancellationError" });
 * assert.equal(flushed, true);
 * ```
 */
export function nonCancellable<T>(block: Block<T>, options?: { context?: Context }): Promise<T> {
  const op = "run nonCancellable";
  let context: Context | undefined;
  try {
    if (options !== undefined) {
      checkObject(op, options);
      context = options.context; // read once (checkScopeOptions says why)
      checkOptionNames(op, options, NON_CANCELLABLE_OPTIONS);
      checkContext(op, context);
    }
  } catch (e) {
    return Promise.reject(e); // as `run`'s own checks
  }
  // A timeout is the cancellation of the scopes it covers, not a property of the context: the
  // section must not inherit the (maybe expired) Deadline of a withTimeout around the task.
  return run(op, block, { context: context?.without(Deadline) }, false);
}

/**
 * JobSupport's own `join`, captured as the module loads: a scope's `join` and `await using` wait
 * by it, not by `super.join`, which reads JobSupport.prototype's `join` at each call, one a caller
 * may have redefined (`cancelJob`'s rule, job.ts).
 */
const jobJoin = JobSupport.prototype.join;

/** Coroutine's own `launch`, captured as the module loads (`launchOwn`). */
const scopeLaunch = Coroutine.prototype.launch;

/**
 * @ignore Coroutine's own `launch` on kcoro's `scope` (produce's and actor's, on a scope without an
 * own `launch` of the caller's: `kcoroLaunch`), not a `launch` a caller redefined on its
 * prototype: produce and actor take the Job it returns for the task's own (its cancel the
 * producer's), which only kcoro's launch makes sure of.
 */
export function launchOwn(scope: Coroutine<unknown>, block: unknown, options?: unknown): Job {
  return scopeLaunch.call(scope, block as Block<unknown>, options as LaunchOptions | undefined);
}

class StandaloneScope extends Coroutine<void> implements Scope {
  /**
   * A scope (not started yet) that follows `signal` (one not aborted: createScope cancels the
   * scope for an aborted one once started), then is `parent`'s child when one is given: attached
   * as a launch is, so the parent's cancel cancels it and the parent waits for it; a parent
   * cancelling or completed cancels it here, and so does a scope whose follow cancel waits in the
   * queue (it reads cancelling), unattached, as a task launched on it is.
   *
   * The listen comes first: one that throws (a signal whose engine state the caller redefined)
   * refuses the call before the parent holds the scope, and a scope the attach cancels unlistens
   * as it ends. Attached first, a refused call left the scope, never started and held by nobody,
   * among the parent's children, which waited for it for ever (its `join()` never settled); and a
   * scope made cancelled by its parent followed the signal after it had ended, so its listener,
   * never removed, stayed on the caller's signal, holding the scope.
   */
  constructor(
    context: Context,
    flags: number,
    parent: JobSupport<unknown> | undefined,
    signal: AbortSignal | undefined,
  ) {
    super(context, flags, null);
    if (signal !== undefined) follow(this, "create scope", signal);
    // Cancelled by an abort during the listen: final already, and so no child to attach.
    if (parent === undefined || isCancelledJob(this)) return;
    const queued = queuedCancelOf(parent);
    if (queued !== null) cancelJob(this, abortReason(queued));
    else attachTo(this, parent);
  }

  override join(options?: { signal?: AbortSignal }): Promise<void> {
    if (!isScopeObject(this)) return Promise.reject(notJob(this, "join")); // as a job's
    let signal: AbortSignal | undefined;
    try {
      // bad options change nothing (before, the scope closed first)
      signal = signalOf("join", options);
    } catch (e) {
      return Promise.reject(e);
    }
    // Completes its own part (it has no block). Not a member of every scope's: as `close()` any
    // task had it, and `deferred.close()` completed an `async` deferred with undefined from
    // outside its block, the block still running.
    completeBody(this as Coroutine<void>, undefined);
    // What was checked, not `options` read again: a getter answering a bad signal the second time
    // rejected the join after the scope had closed.
    // JobSupport's own join (`jobJoin`): `super.join` reads the prototype's at each call.
    return jobJoin.call(this, signal === undefined ? undefined : { signal });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!isScopeObject(this)) throw notJob(this, "dispose scope", "CoroutineScope"); // rejects
    cancelJob(this, new CancellationError("Cancelled: the scope was disposed"));
    await jobJoin.call(this); // JobSupport's own join, as `join` above
  }
}

// `using scope = createScope()` (sync) is refused by name: its disposal waits for its tasks; one
// that only cancelled them would let them outlive the block, unawaited (their failures and cleanup
// after it), where `await using` guarantees none does. Not in the `Scope` type either.
refuseSyncDispose(StandaloneScope.prototype, "scope", "disposing a scope waits for its tasks");

/**
 * A free-standing scope (Kotlin's `CoroutineScope(Job())`, or `SupervisorJob()` with
 * `supervisor: true`) for tasks that outlive one function call, e.g. a server's connections.
 * Leaving an `await using` block cancels every task still running and waits for all of them;
 * `join()` instead waits for the tasks to finish by themselves and then completes the scope
 * (later launches are cancelled at once). A failed `launch` cancels the scope (unless
 * supervisor) and is reported to the {@linkcode CoroutineExceptionHandler} (else
 * `reportError`): no function call is there to rethrow it.
 *
 * With `parent` (a {@linkcode Job}: Kotlin's `CoroutineScope(Job(parent))`) the scope is that
 * job's child: the parent's cancel cancels it, the parent does not complete before it does (so
 * `join()` or dispose it), and its failure fails the parent unless that is a supervisor; a
 * parent that rethrows failures (a task, `coroutineScope`), or one it reaches through jobs that
 * pass it on (a `CompletableDeferred` made with a `parent`), rethrows it in place of the launch's
 * report. Its context is the parent's with `context` added.
 *
 * `using scope = createScope()` (without `await`) throws a TypeError as it is declared: a sync
 * disposal could not wait for the tasks, and one that only cancelled them would let them run on
 * past the block.
 *
 * @example
 * ```ts
 * import { coroutineScope, createScope, delay } from "../mod.ts";
 * import assert from "node:assert/strict";
 * let finished = 0;
 * {
 *   await using scope = createScope();
 *   for (let i = 0; i < 3; i++) {
 *     scope.launch(async (task) => {
 *       try {
 *         await delay(60_000, { signal: task.signal });
 *       } finally {
 *         finished++;
 *       }
 *     });
 *   }
 * } // disposed here: the three tasks are cancelled and awaited
 * assert.equal(finished, 3);
 *
 * // A child of a task's job: the task waits for it, and a failure in it fails the task.
 * await assert.rejects(coroutineScope(async (scope) => {
 *   const events = createScope({ parent: scope.job });
 *   events.launch(async () => {
 *     await delay(1);
 *     throw new Error("listener failed");
 *   });
 *   await delay(60_000, { signal: scope.signal }); // cancelled by that failure
 * }), /listener failed/);
 * ```
 */
export function createScope(options?: CreateScopeOptions): Scope {
  const op = "create scope";
  const checked = checkScopeOptions(op, options, CREATE_SCOPE_OPTIONS);
  // Each read once (checkScopeOptions says why).
  const supervisor = options?.supervisor, parent = options?.parent;
  checkBoolean(op, "supervisor", supervisor);
  // A brand check (no trap runs), as CompletableDeferred's: a look-alike, a Proxy of a job, an
  // AbortSignal or a scope of the caller's own is none. Before, `parent` was an unknown option,
  // ignored: the scope ran on after its parent's cancel and the parent completed without it.
  if (parent !== undefined && !isJob(parent)) {
    throw new TypeError(`Cannot ${op}: parent must be a Job, received ${describe(parent)}`);
  }
  const own = checked?.context;
  // The parent's context with the scope's own added, as a launch's (a CompletableDeferred's).
  const context = parent === undefined
    ? own ?? Context.empty
    : own === undefined
    ? contextOf(parent)
    : childContext(contextOf(parent), own);
  // Its children's failures are its own exactly when its parent takes its failure in turn
  // (`parentTakesFailure` says why): a failed launch reports it itself otherwise.
  const flags = CANCEL_COMPLETES | (supervisor === true ? SUPERVISOR : 0) |
    (parent !== undefined && parentTakesFailure(parent) ? HANDLES_CHILD_FAILURE : 0);
  const signal = checked?.signal;
  const aborted = signal !== undefined && isAborted(signal);
  // Followed before the scope starts (and before its parent holds it: the constructor): a listen
  // that throws (only a signal whose engine state the caller redefined) refuses the call by name,
  // leaving no scope. Before, its raw error was thrown after the start, leaving a started scope
  // that nobody held.
  const scope = new StandaloneScope(context, flags, parent, aborted ? undefined : signal);
  startJob(scope);
  if (signal !== undefined && aborted) cancelJob(scope, abortReason(signal));
  // A lazy parent is started (Kotlin's initParentJob), last: its block, run now, finds this scope
  // among its children (CompletableDeferred's constructor says why). JobSupport's own `start`.
  if (parent !== undefined) startJob(parent);
  return scope;
}

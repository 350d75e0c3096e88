/**
 * Time: {@linkcode delay}, {@linkcode withTimeout} and {@linkcode withTimeoutOrNull}.
 *
 * A timeout is a cancellation: `withTimeout` runs its block in a scope and cancels that scope
 * with a {@linkcode TimeoutError} (a CancellationError) when the time is up, so the block sees it
 * through `scope.signal` like any other cancellation, and the call settles only once the block
 * and its tasks have finished. Timeouts of 0 or less fail at once without running the block.
 * Times are milliseconds; `Infinity` means no timeout, and so does 2^64 ns (about 584 years) or
 * more, which arms no timer either, and whose `Deadline` is `Infinity` (native children get none).
 *
 * @module
 */
import {
  abortHeard,
  abortReason,
  describe,
  isAborted,
  listenAbortNamed,
  signalOf,
  TimeoutError,
  unlistenAbort,
} from "./errors.ts";
import {
  addFinalizer,
  type Block,
  checkRoot,
  checkScopeOptions,
  type Coroutine,
  rootScope,
  type ScopeOptions,
} from "./scope.ts";
import { cancelJob, isCompletedJob, resultOf, startJob } from "./job.ts";
import {
  Context,
  deadlineContext,
  inForce,
  liveDeadline,
  runningTimeout,
  timedContext,
  type Timeout,
} from "./context.ts";

/** What `withDeadline` makes of a timeout's arguments. */
interface Timed {
  /** The options to run the scope with: its Deadline in the context, when it has one. */
  options: ScopeOptions | undefined;
  /**
   * The record of its Deadline, its scope context's, which `runTimed` arms the timer of (none
   * nested) and marks done when the scope finishes; null where no scope runs (`ms` 0 or less).
   */
  timeout: Timeout | null;
  /**
   * The running withTimeout whose Deadline, in the context, comes before this one's would: that
   * Deadline ends this scope too (`runTimed` puts `timeout` in its `nested`); null where none.
   */
  under: Timeout | null;
  /** How long to wait (0 or less: at once; Infinity: no timer of its own). */
  ms: number;
  /** What the scope is cancelled with when that wait is over (`under`'s error under it). */
  error: TimeoutError;
}

/**
 * The scope of a timeout of `ms`: `options` with the timeout's deadline in its context, and the
 * {@linkcode Timeout} that `runTimed` marks done when the scope finishes. An earlier live
 * Deadline wins (one of a withTimeout already finished is stale: a context can outlive its
 * scope), as Go's `context.WithTimeout` keeps a parent's earlier deadline. If a running
 * withTimeout put it in (or took it on, or carries it nested), this timeout is nested in that
 * one, as Go's is in its parent: that one's Deadline (its timer, or the one it is nested in)
 * cancels this scope too, with that one's TimeoutError (which `withTimeoutOrNull` rethrows),
 * given that one's signal or not (the context alone carries the deadline, as Go's does), and it
 * fails so at once, without running the block, if that Deadline has come (that one's block went
 * on after it). This scope's context carries the Deadline with a record of its own, in force
 * while this one runs, also after that one has finished. One set by hand (`Context.with`) has no
 * timer of its own, so this timeout takes it as its own: it waits only until then, fails with its
 * own kind of TimeoutError (`withTimeoutOrNull` resolves null), and at once if that Deadline has
 * passed.
 */
function withDeadline(op: string, options: ScopeOptions | undefined, ms: number): Timed {
  const checked = checkScopeOptions(op, options); // what it read, once
  if (!(ms > 0)) return { options: checked, timeout: null, under: null, ms, error: timedOut(ms) };
  const context = checked?.context ?? Context.empty;
  const now = performance.now();
  // 2^64 ns or more is no timeout, as Infinity (no timer: `timer`), and so is its Deadline: a
  // native scope under it then sets none either (`deadlineNs`, the same bound from its own now).
  // A finite one moved the bound by the time gone before the native scope read it: one of
  // exactly 2^64 ns armed no timer, but its native children got a deadline (just short of it).
  const deadline = ms >= NEVER_MS ? Infinity : now + ms;
  const outer = liveDeadline(context);
  if (outer === undefined || outer > deadline) {
    // Once it has finished, its scope's contexts keep the later Deadline it replaced (where that
    // context had it from).
    const replaced = outer === undefined ? null : deadlineContext(context);
    const timeout = newTimeout(deadline, timedOut(ms), false, null, replaced);
    const timedOptions = { ...checked, context: timedContext(context, deadline, timeout) };
    return { options: timedOptions, timeout, under: null, ms, error: timeout.error };
  }
  // An earlier Deadline of a running withTimeout: nested in that one, no timer of its own. Its
  // context carries that Deadline with a record of its own, in force while this one runs (also
  // after that one has finished, for the timeouts and native scopes given this one's context)
  // and while that one does, in which the timeouts given this one's context nest in turn.
  const under = runningTimeout(context);
  if (under !== null) {
    if (under.fired) return { options: checked, timeout: null, under, ms: 0, error: under.error };
    const timeout = newTimeout(outer, under.error, under.adopted, under, under.replaced);
    const timedOptions = { ...checked, context: timedContext(context, outer, timeout) };
    return { options: timedOptions, timeout, under, ms: Infinity, error: under.error };
  }
  const left = outer - now;
  if (!(left > 0)) {
    // A Deadline of -Infinity passed no number of ms ago: "passed Infinity ms ago" misread.
    const when = Number.isFinite(left) ? `${msText(-left)} ago` : `(it is ${outer})`;
    const error = new TimeoutError(
      `Timed out at once: the Deadline of its context passed ${when}, before its timeout of ` +
        `${ms} ms; the block does not run`,
    );
    return { options: checked, timeout: null, under: null, ms: 0, error };
  }
  // Taken as this timeout's own, so that timeouts nested in this one end with this one's error;
  // `adopted`: once this one is over, contexts derived from its scope's keep it as hand-set (it
  // went stale with this timeout, so a nativeScope or timeout given such a context dropped it).
  // A Deadline that is the timeout's own moment (`outer === deadline`) is taken on too: it did
  // not come before it, as this said of it.
  const came = outer < deadline ? "came before" : "came at the same moment as";
  const error = new TimeoutError(
    `Timed out waiting for ${msText(left)}: the Deadline of its context ${came} its timeout of ` +
      `${ms} ms`,
  );
  const timeout = newTimeout(outer, error, true);
  const timedOptions = { ...checked, context: timedContext(context, outer, timeout) };
  return { options: timedOptions, timeout, under: null, ms: left, error };
}

/**
 * The record of a timeout's Deadline `at` (`adopted`: one set by hand that it, or the one it is
 * nested in, took on; `replaced`: the context whose later Deadline its own came before). Its
 * `nested` set comes with the first timeout nested in it.
 */
function newTimeout(
  at: number,
  error: TimeoutError,
  adopted: boolean,
  under: Timeout | null = null,
  replaced: Context | null = null,
): Timeout {
  return {
    done: false,
    under,
    at,
    error,
    fired: false,
    scope: null,
    nested: null,
    adopted,
    replaced,
  };
}

/**
 * @ignore A time measured here (0 or more, finite) for a message: whole milliseconds, "<1 ms"
 * below one. Before, `Math.round` said "Timed out waiting for 0 ms" for a wait of 0.3 ms (a
 * hand-set Deadline just ahead) and "passed 0 ms ago" for one just passed. Exported for
 * tests/time_test.ts.
 */
export function msText(ms: number): string {
  return ms < 1 ? "<1 ms" : `${Math.round(ms)} ms`;
}

/** setTimeout's largest delay; longer ones are chained. */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * @ignore The shortest delay that arms nothing, as Infinity: 2^64 ns from now, about 584 years,
 * from which a native scope's children get no deadline either (native_scope's `deadlineNs`, the
 * same bound counted from now, not from the native clock's origin). Such a timer
 * cannot fire while the process lives, and would only keep it alive: a withTimeout(1e300), or a
 * withTimeout(Infinity) given a hand-set Deadline that far ahead, re-armed 2^31 - 1 ms for good
 * (1e300 - 2^31 is 1e300), and a wait nothing can end hung the process. Below it the chain is at
 * most 8,192 timers, one each 24.8 days.
 */
export const NEVER_MS = 2 ** 64 / 1e6;

/** The cancel function of a timer that never fires. */
const NEVER = () => {};

/**
 * @ignore Calls `fn` after `ms` (any length, Infinity for never); returns the cancel
 * function. (setTimeout fires a delay past 2^31 - 1 ms at once.) Infinity, or `NEVER_MS` and
 * more, arms nothing: a timer that can never fire would only keep the process alive, so that a
 * select with an `onTimeout(Infinity)` or a `withTimeout(Infinity, ...)` around a wait nothing
 * can complete (a local channel's) hung for good where the wait alone ends the process (Deno
 * reports the promise never resolved).
 */
export function timer(ms: number, fn: () => void): () => void {
  if (ms >= NEVER_MS) return NEVER;
  let id: ReturnType<typeof setTimeout>;
  const arm = (left: number) => {
    id = left > MAX_TIMER
      ? setTimeout(() => arm(left - MAX_TIMER), MAX_TIMER)
      : setTimeout(fn, left);
  };
  arm(ms);
  return () => clearTimeout(id);
}

/**
 * @ignore Throws unless `ms` is a number of milliseconds (`name`: what the caller calls it):
 * not a number at all is the caller's TypeError (as a channel's capacity says), NaN a number
 * out of range, a RangeError. For delay, withTimeout(OrNull), select's onTimeout and a native
 * scope's wait.
 */
export function checkMs(op: string, ms: unknown, name = "ms"): asserts ms is number {
  if (typeof ms !== "number" || Number.isNaN(ms)) {
    throw new (typeof ms === "number" ? RangeError : TypeError)(
      `Cannot ${op}: ${name} must be a number of milliseconds, received ${describe(ms)}`,
    );
  }
}

/**
 * Resolves after `ms` milliseconds (at once for 0 or less); rejects with the signal's reason if
 * `signal` aborts first. `delay(0)` resolves as Kotlin's returns, without a turn of the event
 * loop: a loop that awaits only it runs no timer (not even a timeout's) and no I/O meanwhile;
 * to let them run, await a real timer (`delay(1)`).
 *
 * @example
 * ```ts
 * import { delay } from "../mod.ts";
 * import assert from "node:assert/strict";
 * const t0 = performance.now();
 * await delay(5);
 * assert.ok(performance.now() - t0 >= 4);
 * await assert.rejects(delay(60_000, { signal: AbortSignal.abort(new Error("stop")) }), /stop/);
 * ```
 */
export function delay(ms: number, options?: { signal?: AbortSignal }): Promise<void> {
  const op = "delay";
  let signal: AbortSignal | undefined;
  try {
    checkMs(op, ms);
    signal = signalOf(op, options);
  } catch (e) {
    return Promise.reject(e); // a function that returns a Promise rejects, never throws
  }
  // The signal's own members never run (errors.ts, `isAborted`): before, an overridden
  // `removeEventListener` threw out of the timer's callback, an uncaught error that ended the
  // process, and an `aborted` getter that threw escaped as a synchronous throw.
  if (signal !== undefined && isAborted(signal)) return Promise.reject(abortReason(signal));
  if (ms <= 0) return Promise.resolve();
  if (signal === undefined) return new Promise((resolve) => timer(ms, resolve));
  return new Promise((resolve, reject) => {
    let cancel = (): void => {}; // the timer's, armed right after the listen
    const onAbort = (event?: Event) => {
      // Only once the signal aborted: a call before (the caller's code that reached the
      // listener through the engine's listeners property) changes nothing. Before, the delay
      // rejected with undefined, and (a call during the listen) armed its timer all the same.
      if (!abortHeard(signal, onAbort, event)) return;
      cancel();
      reject(abortReason(signal));
    };
    // Listened to before the timer is armed (the event comes in a later turn, after `cancel`
    // is set): AbortSignal's own `addEventListener` may still throw (the caller's accessor for
    // the engine's listeners symbol, on a prototype under the signal), and the executor's
    // rejection then leaves no timer. Before, the timer armed first kept the process up for
    // the whole delay after the delay rejected. One that aborted during the listen has
    // rejected (`listenAbortNamed`): no timer is armed. Before, it was, and the delay waited
    // it out.
    // One whose listen throws rejects with the named error ("Cannot delay: signal must be one
    // that can be listened to", its error the cause), as createScope refuses such a signal;
    // before, with the listen's raw error.
    if (listenAbortNamed(op, signal, onAbort)) return;
    cancel = timer(ms, () => {
      unlistenAbort(signal, onAbort);
      resolve();
    });
  });
}

/**
 * Starts `scope` with a timer that ends it, and the timeouts nested in it, when `timeout`'s
 * Deadline is reached, after `ms` (Infinity: no timer; one nested in `under` has none: `under`'s
 * ends it); under a running timeout, nested in that one's until it finishes.
 */
function runTimed<T>(
  scope: Coroutine<T>,
  timeout: Timeout,
  ms: number,
  under: Timeout | null,
): Promise<T> {
  if (isCompletedJob(scope)) {
    // Final before it started: its signal aborted while `rootScope` listened to it (the
    // caller's accessor aborting it), which cancelled it then. Its finalizers have run, so a
    // timer armed now would never be cleared (it kept the process alive for the whole timeout),
    // and it joins no outer timeout. Its Deadline is stale, as a finished one's.
    timeout.done = true;
    return resultOf(scope);
  }
  timeout.scope = scope;
  const cancel = timer(ms, () => expire(timeout));
  if (under !== null) (under.nested ??= new Set()).add(timeout);
  addFinalizer(scope, () => {
    cancel();
    // The one it is nested in now: `under`, or the one it rejoined when `under` finished first.
    timeout.under?.nested?.delete(timeout);
    // Its Deadline is stale from now on, unless the one it is nested in still runs (hand-set
    // again where adopted).
    timeout.done = true;
    timeout.scope = null; // a context that outlives the scope does not keep it
    const nested = timeout.nested;
    if (timeout.fired || nested === null) return; // fired: `expire` ends the nested ones
    timeout.nested = null;
    // Nested timeouts that outlive it (given its context, not awaited) still end by its Deadline,
    // and so do the ones nested in them: where a timeout it is nested in still runs (the same
    // Deadline), they join that one's set, so that its expiry ends them in its walk (after its
    // own scope, as when they nested in it) and marks them fired (a timeout given their contexts
    // then fails at once); a timer of their own could fire before or after that one's, and until
    // it did they took nested ones of their own past the Deadline. That one enforced this one's
    // Deadline, so this one was in its set, which is not null: if that one has fired, its walk is
    // still on (a cancel in it finished this one before the walk reached it, or it would be
    // fired), and the set, iterated live, reaches them still. Where none runs, each gets a timer
    // of its own for the rest of the time.
    const heir = inForce(timeout.under);
    if (heir !== null && heir.nested !== null) {
      for (const n of nested) {
        n.under = heir;
        heir.nested.add(n);
      }
      return;
    }
    for (const n of nested) {
      addFinalizer(n.scope!, timer(timeout.at - performance.now(), () => expire(n)));
    }
  });
  startJob(scope); // JobSupport's own start, not one a caller redefined on its prototype
  return resultOf(scope);
}

/**
 * `top`'s Deadline is reached: its scope is cancelled with its error, then the timeouts nested in
 * it, oldest first, each followed by the ones nested in it (depth first, with a stack of its own:
 * a deep nesting does not overflow the call stack). Each is marked fired before its cancel: none
 * nests in it from then on, and a scope a cancel here finishes leaves its nested ones to this loop
 * (its finalizer); one that finished meanwhile has left its set, which is iterated live.
 */
function expire(top: Timeout): void {
  const open: [Timeout, Iterator<Timeout>][] = [];
  let next: Timeout | undefined = top;
  for (;;) {
    if (next !== undefined) {
      next.fired = true;
      // Its own scope first, as its signal cancels the scopes following it: by JobSupport's own
      // cancel (`cancelJob`), not one a caller redefined on its prototype.
      if (next.scope !== null) cancelJob(next.scope as Coroutine<unknown>, next.error);
      if (next.nested !== null) open.push([next, next.nested.values()]);
    }
    const last = open.at(-1);
    if (last === undefined) return;
    const step = last[1].next();
    if (step.done) {
      last[0].nested = null;
      open.pop();
      next = undefined;
    } else next = step.value;
  }
}

/**
 * The TimeoutError of a timeout of `ms`. One of 0 or less never waited (the block does not run),
 * and says so: "Timed out waiting for -1 ms" read as a wait that happened.
 */
function timedOut(ms: number): TimeoutError {
  if (ms <= 0) {
    return new TimeoutError(
      `Timed out at once: a timeout of ${ms} ms (0 or less) expires before the block runs`,
    );
  }
  return new TimeoutError(`Timed out waiting for ${ms} ms`);
}

/**
 * Runs `block` in a scope (as {@linkcode coroutineScope} does) and cancels it if it has not
 * finished after `ms` milliseconds; then rejects with a {@linkcode TimeoutError} once the block
 * and its tasks have finished. `ms` of 0 or less rejects at once without running the block.
 *
 * A `Deadline` set by hand in `options.context` (`Context.with`) that comes before
 * `ms` is over is this timeout's instead: it times out then, with the same TimeoutError, and at
 * once without running the block if that Deadline has passed (as Go's `context.WithTimeout` under
 * a parent with an earlier deadline). Under an earlier Deadline of a `withTimeout` still running
 * (its scope's context, or a task's in it, is `options.context`) this one is nested in that one:
 * that one's timer ends it too, with that one's TimeoutError (at once if it has fired). The
 * context alone is enough, as in Go (pass the outer's `signal` too, so that its other
 * cancellations reach this scope).
 *
 * @example
 * ```ts
 * import { delay, TimeoutError, withTimeout } from "../mod.ts";
 * import assert from "node:assert/strict";
 * assert.equal(await withTimeout(1_000, async () => "in time"), "in time");
 * await assert.rejects(
 *   withTimeout(5, (scope) => delay(60_000, { signal: scope.signal })),
 *   TimeoutError,
 * );
 * ```
 */
export function withTimeout<T>(ms: number, block: Block<T>, options?: ScopeOptions): Promise<T> {
  const op = "run withTimeout";
  let timed: Timed;
  let scope: Coroutine<T> | Error;
  try {
    checkMs(op, ms);
    timed = withDeadline(op, options, ms);
    // No scope at all for 0 or less (no record): one never started would keep its listener on
    // the caller's signal.
    if (timed.timeout === null) scope = checkRoot(op, block, timed.options) ?? timed.error;
    else scope = rootScope(op, block, timed.options, false);
  } catch (e) {
    return Promise.reject(e); // bad arguments reject, as every wait's do
  }
  if (scope instanceof Error) return Promise.reject(scope);
  return runTimed(scope, timed.timeout!, timed.ms, timed.under);
}

/**
 * Like {@linkcode withTimeout}, but resolves with `null` when its own timeout expires (a hand-set
 * `Deadline` in `options.context` that comes first counts as its own). Any other
 * error, including a TimeoutError from an inner `withTimeout` or an outer one (also one whose
 * earlier Deadline, in `options.context`, ended this one), is rethrown. `ms` of 0 or less (or a
 * hand-set Deadline passed) resolves null at once without running the block.
 *
 * @example
 * ```ts
 * import { delay, withTimeoutOrNull } from "../mod.ts";
 * import assert from "node:assert/strict";
 * assert.equal(
 *   await withTimeoutOrNull(5, (scope) => delay(60_000, { signal: scope.signal })),
 *   null,
 * );
 * assert.equal(await withTimeoutOrNull(1_000, async () => 42), 42);
 * ```
 */
export function withTimeoutOrNull<T>(
  ms: number,
  block: Block<T>,
  options?: ScopeOptions,
): Promise<T | null> {
  const op = "run withTimeoutOrNull";
  let timed: Timed;
  let scope: Coroutine<T> | Error | null;
  try {
    checkMs(op, ms);
    timed = withDeadline(op, options, ms);
    // As withTimeout: no scope at all for 0 or less.
    if (timed.timeout === null) scope = checkRoot(op, block, timed.options);
    else scope = rootScope(op, block, timed.options, false);
  } catch (e) {
    return Promise.reject(e); // bad arguments reject, as every wait's do
  }
  // Null for its own timeout only: that of an outer withTimeout it is nested in is rethrown.
  const own = timed.under === null;
  if (scope === null) return own ? Promise.resolve(null) : Promise.reject(timed.error);
  if (scope instanceof Error) return Promise.reject(scope);
  const timeout = timed.error;
  return runTimed(scope, timed.timeout!, timed.ms, timed.under).catch((e) => {
    if (e === timeout && own) return null;
    throw e;
  });
}

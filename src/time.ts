/**
 * Time: {@linkcode delay}, {@linkcode withTimeout} and {@linkcode withTimeoutOrNull}.
 *
 * A timeout is a cancellation: `withTimeout` runs its block in a scope and cancels that scope
 * with a {@linkcode TimeoutError} (a CancellationError) when the time is up, so the block sees it
 * through `scope.signal` like any other cancellation, and the call settles only once the block
 * and its tasks have finished. Timeouts of 0 or less fail at once without running the block.
 * Times are milliseconds; `Infinity` means no timeout.
 *
 * @module
 */
import { describe, signalOf, TimeoutError } from "./errors.ts";
import {
  type Block,
  checkRoot,
  checkScopeOptions,
  type Coroutine,
  rootScope,
  type ScopeOptions,
} from "./scope.ts";
import { Context, timedContext, type Timeout } from "./context.ts";

/**
 * `options` with the timeout's deadline in its context (an earlier outer deadline wins, unless
 * the withTimeout that set it has finished: a context can outlive its scope), and the
 * {@linkcode Timeout} that `runTimed` marks done when the scope finishes.
 */
function withDeadline(
  op: string,
  options: ScopeOptions | undefined,
  ms: number,
): { options: ScopeOptions | undefined; timeout: Timeout | null } {
  const checked = checkScopeOptions(op, options); // what it read, once
  if (!(ms > 0)) return { options: checked, timeout: null };
  const context = checked?.context ?? Context.empty;
  const deadline = performance.now() + ms;
  const outer = Context._liveDeadline(context);
  if (outer !== undefined && outer <= deadline) return { options: checked, timeout: null };
  const timeout: Timeout = { done: false };
  return { options: { ...checked, context: timedContext(context, deadline, timeout) }, timeout };
}

/** setTimeout's largest delay; longer ones are chained. */
const MAX_TIMER = 2 ** 31 - 1;

/** The cancel function of a timer that never fires. */
const NEVER = () => {};

/**
 * @ignore Calls `fn` after `ms` (any length, Infinity for never); returns the cancel
 * function. (setTimeout fires a delay past 2^31 - 1 ms at once.) Infinity arms nothing: a
 * timer that can never fire would only keep the process alive, so that a select with an
 * `onTimeout(Infinity)` or a `withTimeout(Infinity, ...)` around a wait nothing can complete
 * (a local channel's) hung for good where the wait alone ends the process (Deno reports the
 * promise never resolved).
 */
export function timer(ms: number, fn: () => void): () => void {
  if (ms === Infinity) return NEVER;
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
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  if (signal === undefined) return new Promise((resolve) => timer(ms, resolve));
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      cancel();
      reject(signal.reason);
    };
    const cancel = timer(ms, () => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Starts `scope` with a timer that cancels it with `timeout` after `ms`. */
function runTimed<T>(
  scope: Coroutine<T>,
  ms: number,
  timeout: TimeoutError,
  deadline: Timeout | null,
): Promise<T> {
  const cancel = timer(ms, () => scope.cancel(timeout));
  scope.addFinalizer(() => {
    cancel();
    if (deadline !== null) deadline.done = true; // its Deadline is stale from now on
  });
  scope.start();
  return scope.await();
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
  let timed: ReturnType<typeof withDeadline>;
  let scope: Coroutine<T> | Error;
  try {
    checkMs(op, ms);
    // No scope at all for 0 or less: one never started would keep its listener on the
    // caller's signal.
    if (ms <= 0) {
      scope = checkRoot(op, block, withDeadline(op, options, ms).options) ?? timedOut(ms);
    } else scope = rootScope(op, block, (timed = withDeadline(op, options, ms)).options, false);
  } catch (e) {
    return Promise.reject(e); // bad arguments reject, as every wait's do
  }
  if (scope instanceof Error) return Promise.reject(scope);
  return runTimed(scope, ms, timedOut(ms), timed!.timeout);
}

/**
 * Like {@linkcode withTimeout}, but resolves with `null` when its own timeout expires. Any other
 * error, including a TimeoutError from an inner `withTimeout`, is rethrown. `ms` of 0 or less
 * resolves null at once without running the block.
 *
 * @example
 * ```ts
 * import { delay, withTimeoutOrNull } from "../mod.ts";
 * import assert from "node:assert/strict";
 * assert.equal(await withTimeoutOrNull(5, (scope) => delay(60_000, { signal: scope.signal })), null);
 * assert.equal(await withTimeoutOrNull(1_000, async () => 42), 42);
 * ```
 */
export function withTimeoutOrNull<T>(
  ms: number,
  block: Block<T>,
  options?: ScopeOptions,
): Promise<T | null> {
  const op = "run withTimeoutOrNull";
  let timed: ReturnType<typeof withDeadline>;
  let scope: Coroutine<T> | Error | null;
  try {
    checkMs(op, ms);
    // As withTimeout: no scope at all for 0 or less.
    if (ms <= 0) scope = checkRoot(op, block, withDeadline(op, options, ms).options);
    else scope = rootScope(op, block, (timed = withDeadline(op, options, ms)).options, false);
  } catch (e) {
    return Promise.reject(e); // bad arguments reject, as every wait's do
  }
  if (scope === null) return Promise.resolve(null);
  if (scope instanceof Error) return Promise.reject(scope);
  const timeout = timedOut(ms);
  return runTimed(scope, ms, timeout, timed!.timeout).catch((e) => {
    if (e === timeout) return null;
    throw e;
  });
}

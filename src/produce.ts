/**
 * `produce`: a task that sends into a channel it owns, and the channel, which is closed when the
 * task ends (kotlinx.coroutines' `produce`).
 *
 * Rules (Kotlin's):
 * - The block runs as a child task of the scope (`launch`): the scope waits for it, and its
 *   failure cancels the scope (unless a supervisor).
 * - When the block returns, the channel is closed: values it sent stay receivable, then
 *   receivers see the channel closed (`for await` ends).
 * - When the block fails, the channel is closed with the error as its cause: values sent stay
 *   receivable, then receivers get that error.
 * - When the task is cancelled (its scope cancelled, a sibling failing, a timeout), the channel
 *   is cancelled at once: buffered values are dropped and every waiting sender and receiver,
 *   Worker-side ones included, rejects with a CancellationError. A producer waiting in `send`
 *   is woken by that too.
 * - Cancelling the channel (or disposing it) cancels the producer task.
 *
 * The consumer owns the returned channel: dispose it (`using`) when done with it.
 *
 * @module
 */
import { type Capacity, Channel } from "./channel.ts";
import { checkFunction, checkOptions, checkScope, InvalidHandleError } from "./errors.ts";
import { isCancellation, type Job } from "./job.ts";
import type { CoroutineScope } from "./scope.ts";

/** Options for {@linkcode produce}. */
export interface ProduceOptions {
  /** The channel's capacity (default `"rendezvous"`, as Kotlin's). */
  capacity?: Capacity;
}

/** The channel {@linkcode produce} returns: cancelling it cancels the producer. */
class ProducerChannel<T> extends Channel<T> {
  /** @internal The producer task. */
  _job: Job | null = null;
  /** @internal Disposed by its consumer: the producer's end has nothing left to close. */
  _gone = false;

  override cancel(cause?: unknown): void {
    super.cancel(cause);
    this._job?.cancel(cause);
  }

  override [Symbol.dispose](): void {
    if (this._gone) return;
    this._gone = true;
    super[Symbol.dispose]();
  }
}

/**
 * Runs `block(out, task)` as a child task of `scope` and returns `out`, a channel that is
 * closed when the block returns, closed with its error if it fails, and cancelled if the task
 * is cancelled. See the module documentation for the rules.
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
  options: ProduceOptions = {},
): Channel<T> {
  const op = "produce";
  checkScope(op, scope);
  checkFunction(op, "block", block);
  checkOptions(op, options);
  const out = new ProducerChannel<T>(options.capacity ?? "rendezvous");
  let failed = false;
  const job = scope.launch(async (task) => {
    const signal = task.signal;
    const onAbort = () => {
      if (!failed && !out._gone) out.cancel(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await block(out, task);
    } catch (e) {
      // Sending into a channel its consumer disposed: the consumer cancelled this task.
      if (out._gone && e instanceof InvalidHandleError && signal.aborted) throw signal.reason;
      if (!isCancellation(e) && !out._gone) {
        failed = true; // before the failure aborts the signal: close, do not cancel
        out.close(e);
      }
      throw e;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  });
  out._job = job;
  job.invokeOnCompletion((cause) => {
    if (out._gone || failed) return;
    if (cause === undefined) out.close();
    else out.cancel(cause); // cancelled before it could run
  });
  return out;
}

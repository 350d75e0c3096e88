/**
 * A pipeline of producers (Kotlin's "Pipelines" and prime sieve), each stage a `produce` task
 * whose buffered output channel the next stage reads with `for await`.
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/pipeline.ts
 *
 * 1. A finite pipeline: numbers 1..5 -> squares -> the consumer. Each stage's channel is closed
 *    when its block returns, so the close travels down and ends every `for await`.
 * 2. An endless one: numbers from 2 -> one prime filter per prime found. The consumer takes ten
 *    primes, then cancels the scope the stages run in: every stage waiting in a send or a receive
 *    is woken by the cancellation, and the scope's `join()` returns once all have ended.
 */
import { type Channel, type CoroutineScope, createScope, produce } from "../mod.ts";

const stages = { made: 0, running: 0 }; // how many were made, and are running their block now

/** A stage: a producer task whose output channel buffers 4 values. */
function stage(
  scope: CoroutineScope,
  block: (out: Channel<number>, task: CoroutineScope) => Promise<void>,
) {
  stages.made++;
  return produce<number>(scope, async (out, task) => {
    stages.running++;
    try {
      await block(out, task); // out.send is bound to the task: a cancellation wakes it
    } finally {
      stages.running--;
    }
  }, { capacity: 4 });
}

/** first, first + 1, ... up to `last` (Infinity: for ever). */
function numbersFrom(scope: CoroutineScope, first: number, last = Infinity) {
  return stage(scope, async (out) => {
    for (let x = first; x <= last; x++) await out.send(x);
  });
}

/** A map stage: `f` of each value of `input`; the stage owns `input` and disposes of it. */
function map(scope: CoroutineScope, input: Channel<number>, f: (x: number) => number) {
  return stage(scope, async (out, task) => {
    using values = input; // leaving the block cancels what is upstream, if it still runs
    for await (const x of values.values({ signal: task.signal })) await out.send(f(x));
  });
}

/** A filter stage: the values of `input` that `prime` does not divide. */
function filter(scope: CoroutineScope, input: Channel<number>, prime: number) {
  return stage(scope, async (out, task) => {
    using values = input;
    for await (const x of values.values({ signal: task.signal })) {
      if (x % prime !== 0) await out.send(x);
    }
  });
}

// 1. Closing propagates: the consumer's loop ends once both stages have returned.
{
  await using scope = createScope();
  using squares = map(scope, numbersFrom(scope, 1, 5), (x) => x * x);
  const got: number[] = [];
  for await (const s of squares) got.push(s);
  console.log(`1. squares of 1..5: ${got.join(" ")} (the close reached the consumer)`);
  await scope.join();
  console.log(
    `   ${stages.made} stages, ${stages.running} still running; the scope: ${scope.job.state}`,
  );
}

// 2. Cancelling the scope cancels the whole pipeline, however many stages it has grown.
{
  await using scope = createScope();
  stages.made = 0;
  let numbers = numbersFrom(scope, 2);
  const primes: number[] = [];
  for (let i = 0; i < 10; i++) {
    const prime = await numbers.receive();
    primes.push(prime);
    numbers = filter(scope, numbers, prime); // the new stage owns the old channel
  }
  console.log(`2. the first ten primes: ${primes.join(" ")}`);
  scope.cancel(); // Kotlin: coroutineContext.cancelChildren()
  await scope.join();
  numbers[Symbol.dispose](); // the last stage's channel is the consumer's to dispose of
  console.log(
    `   cancelled ${stages.made} stages, ${stages.running} still running; ` +
      `the scope: ${scope.job.state}`,
  );
}

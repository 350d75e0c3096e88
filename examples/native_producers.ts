/**
 * Native coroutines feeding a channel that TypeScript consumes: the built-in "chanSender"
 * (cells `[channel handle, first, count, sent, done]`) sends `count` u64 values from `first` on,
 * on the work-stealing scheduler's threads, while this isolate's event loop stays free.
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/native_producers.ts
 *
 * 1. Three native producers in a native scope; TypeScript receives with `for await`, and closes
 *    the channel once the scope's `wait()` says every producer has finished.
 * 2. A native producer of a million values launched into a TypeScript scope's own native scope
 *    (`nativeScope`): the consumer takes ten and cancels the scope, which cancels the native
 *    producer waiting in its send; the scope returns only once it has stopped.
 */
import {
  CancellationError,
  Channel,
  codecs,
  coroutineScope,
  NativeScope,
  nativeScope,
  runtime,
} from "../mod.ts";

const rt = runtime({ workers: 2 });

// 1. Three producers, one TypeScript consumer; every value arrives exactly once.
{
  using numbers = new Channel<bigint>(64, { codec: codecs.u64 }); // the element type chanSender sends
  const got = await coroutineScope(async (scope) => {
    const consumer = scope.async(async (task) => {
      const seen: bigint[] = [];
      for await (const v of numbers.values({ signal: task.signal })) seen.push(v);
      return seen;
    });
    await using producers = NativeScope.create();
    const cells = [0n, 1n, 2n].map((p) =>
      runtime().cells([BigInt(numbers.handle), p * 1000n, 1000n, 0n, 0n])
    );
    for (const c of cells) producers.launch("chanSender", c);
    await producers.wait({ signal: scope.signal });
    console.log(`1. native producers sent ${cells.map((c) => c[3]).join(" + ")} values`);
    numbers.close(); // the consumer's loop ends once it has drained the buffer
    return await consumer.await();
  });
  const once = new Set(got).size === got.length && got.every((v) => v >= 0n && v < 3000n);
  const sum = got.reduce((a, b) => a + b, 0n);
  console.log(`   TypeScript received ${got.length} values, sum ${sum}, each once: ${once}`);
}

// 2. Cancelling the TypeScript scope cancels the native producer it owns.
{
  using ticks = new Channel<bigint>(0, { codec: codecs.u64 }); // rendezvous: each send waits
  const cells = runtime().cells([BigInt(ticks.handle), 0n, 1_000_000n, 0n, 0n]);
  const taken: bigint[] = [];
  try {
    await coroutineScope(async (scope) => {
      nativeScope(scope).launch("chanSender", cells);
      for (let i = 0; i < 10; i++) taken.push(await ticks.receive({ signal: scope.signal }));
      scope.cancel(); // the native send waiting for the eleventh receive ends with KC_EINTR
    });
  } catch (e) {
    if (!(e instanceof CancellationError)) throw e;
  }
  console.log(`2. took ${taken.join(" ")}, then cancelled the scope`);
  console.log(`   the native producer: done ${cells[4] === 1n}, sent ${cells[3]} of 1000000`);
}

await rt.shutdown(); // joins the scheduler's threads

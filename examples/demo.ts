/**
 * kcoro demo: TypeScript drives native stackful coroutines through the C ABI.
 *
 *   ./task demo        (or: deno run --allow-ffi --allow-read --allow-env examples/demo.ts)
 *
 * 1. Three native Fibonacci generators, each on its own stack, interleaved round-robin.
 * 2. A native coroutine that parks until TypeScript unparks it (and an unpark that comes
 *    before the park, which is not lost).
 * 3. A million resume/yield round trips from JavaScript, timed.
 * 4. What happens to a destroyed handle, and the resource counters at the end.
 * 5. The work-stealing scheduler: skynet (a tree of 1,000,000 native coroutines), 1,000
 *    sleepers and a CPU-bound fan-out, all running while this isolate's event loop stays free.
 * 6. Channels shared by native producers and TypeScript, select over two producers, and a
 *    TypeScript timeout that cancels a native coroutine through the scope that owns it.
 */
import {
  Channel,
  codecs,
  coroutineScope,
  coroutineStats,
  delay,
  InvalidHandleError,
  library,
  NativeCoroutine,
  type NativeCoroutineOptions,
  nativeScope,
  produce,
  runtime,
  select,
  statusName,
  withTimeoutOrNull,
} from "../mod.ts";

/** A count with thousands separators (1,000,000), as every count in the output is printed. */
const count = (n: number | bigint) => n.toLocaleString("en-US");

const lib = library();
console.log(`kcoro: loaded ${lib.path} (ABI ${lib.abiVersion})\n`);

// 1. Round-robin over three generators until all have finished.
console.log("1. three native Fibonacci generators, interleaved:");
const gens: [string, NativeCoroutineOptions][] = [
  ["A", { arg: 5 }],
  ["B", { arg: 8, fpControl: true }],
  ["C", { arg: 3, slabStack: true, stackSize: 16 * 1024 }],
];
const running = gens.map(([name, options]) => ({
  name,
  co: NativeCoroutine.create("fib", options),
  seen: [] as bigint[],
}));
let live = running.length;
for (let tick = 0; live > 0; tick++) {
  const line: string[] = [];
  for (const g of running) {
    if (g.co.state === "finished") continue;
    if (g.co.resume() === "finished") {
      live--;
      line.push(`${g.name}:done`);
    } else {
      g.seen.push(g.co.value);
      line.push(`${g.name}:${g.co.value}`);
    }
  }
  console.log(`   tick ${tick}: ${line.join("  ")}`);
}
for (const g of running) g.co.destroy();

// 2. Park and unpark.
console.log("\n2. park / unpark:");
{
  using waiter = NativeCoroutine.create("park-loop", { arg: 2 });
  console.log(`   resume -> ${waiter.resume()} (waiting for an unpark)`);
  for (let i = 0; i < 2; i++) {
    const woke = waiter.unpark();
    console.log(`   unpark -> ${woke ? "woke it" : "left a permit"}; resume -> ${waiter.resume()}`);
  }
  console.log(`   wake-ups counted natively: ${waiter.value}`);
  using early = NativeCoroutine.create("park-loop", { arg: 1 });
  console.log(`   unpark before the first park -> ${early.unpark() ? "woke it" : "left a permit"}`);
  console.log(
    `   resume -> ${early.resume()} (its park returned at once; wake-ups: ${early.value})`,
  );
}

// 3. Resume/yield round trips through FFI.
console.log("\n3. resume/yield round trips from JavaScript:");
{
  using spinner = NativeCoroutine.create("yield-loop");
  const n = 1_000_000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) spinner.resume();
  const ms = performance.now() - t0;
  console.log(
    `   ${count(n)} round trips in ${ms.toFixed(1)} ms: ${
      (ms * 1e6 / n).toFixed(1)
    } ns each (two native context switches + one FFI call); the coroutine counted ${
      count(spinner.value)
    }`,
  );
}

// 4. Handles are checked; nothing leaks.
console.log("\n4. a destroyed handle:");
{
  const co = NativeCoroutine.create("fib", { arg: 1 });
  co.destroy();
  try {
    co.resume();
  } catch (e) {
    if (!(e instanceof InvalidHandleError)) throw e;
    console.log(`   ${e.name}: ${e.message}`);
  }
}
const stats = coroutineStats();
console.log(
  `\nstats: ${stats.live} live coroutines, ${stats.pooledStacks} stacks pooled for reuse, ` +
    `${stats.mappings} stack mappings`,
);
if (stats.live !== 0) throw new Error(`expected no live coroutines, found ${stats.live}`);

// 5. The scheduler.
console.log("\n5. the work-stealing scheduler:");
{
  const rt = runtime({ workers: 2, slabStacks: true, stackSize: 16 * 1024 });
  const sky = runtime().cells([1_000_000n, 0n]);
  let t0 = performance.now();
  rt.spawn("skynet", sky);
  // The event loop stays free while native workers run: count timer ticks during the drain.
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 1);
  await rt.drain();
  clearInterval(ticker);
  console.log(
    `   skynet: 1,000,000 native coroutines summed 0..999,999 = ${count(sky[1])} in ${
      (performance.now() - t0).toFixed(1)
    } ms`,
  );
  const sleepers = runtime().cells([20n, 0n]);
  t0 = performance.now();
  for (let i = 0; i < 1000; i++) rt.spawn("sleeper", sleepers);
  await rt.drain();
  console.log(
    `   1,000 coroutines slept 20 ms each, concurrently: ${count(sleepers[1])} done in ${
      (performance.now() - t0).toFixed(1)
    } ms`,
  );
  const spin = runtime().cells([2_000_000n, 0n]);
  t0 = performance.now();
  for (let i = 0; i < 16; i++) rt.spawn("spin", spin);
  await rt.drain();
  console.log(
    `   16 CPU-bound coroutines on 2 workers: ${count(spin[1])} done in ${
      (performance.now() - t0).toFixed(1)
    } ms`,
  );
  const st = rt.stats();
  console.log(
    `   workers: ${
      st.workers.map((w, i) =>
        `#${i} ran ${count(w.runs)}, stole ${count(w.steals)}, parked ${count(w.parks)}`
      ).join("; ")
    }`,
  );
  console.log(
    `   the event loop ticked while waiting (it was never blocked): ${ticks > 0 ? "yes" : "no"}`,
  );
  await rt.shutdown();
}

// 6. Channels, select and structured concurrency.
console.log("\n6. channels, select and structured concurrency:");
{
  const rt = runtime({ workers: 2 });
  // Native producers (coroutines on the workers) and this isolate share one channel.
  await coroutineScope(async (scope) => {
    using numbers = new Channel<bigint>(64, { codec: codecs.u64 });
    const producers = [0n, 1n].map((p) =>
      runtime().cells([BigInt(numbers.handle), p * 1000n, 1000n, 0n, 0n])
    );
    for (const cells of producers) rt.spawn("chanSender", cells);
    let sum = 0n;
    for (let i = 0; i < 2000; i++) sum += await numbers.receive({ signal: scope.signal });
    console.log(`   2 native producers -> 1 TypeScript receiver: 2,000 values, sum ${count(sum)}`);
  });
  // produce + select: the first of two producers, or a timeout. Leaving the block disposes both
  // channels, which cancels the slow producer, so the scope does not wait a minute for it.
  const winner = await coroutineScope(async (scope) => {
    using fast = produce<string>(scope, async (out) => {
      await delay(1);
      await out.send("fast");
    });
    using slow = produce<string>(scope, async (out, task) => {
      await delay(60_000, { signal: task.signal });
      await out.send("slow");
    });
    return await select<string>((s) => {
      s.onReceive(fast, (v) => v);
      s.onReceive(slow, (v) => v);
      s.onTimeout(10_000, () => "timeout");
    });
  });
  console.log(`   select over two producers: ${winner} won; the other was cancelled`);
  // A native scope owned by a TypeScript scope: withTimeout cancels the native sleepers too.
  const cells = runtime().cells([60_000n, 0n, 0n]);
  const t0 = performance.now();
  const r = await withTimeoutOrNull(20, async (scope) => {
    nativeScope(scope).launch("cancellable-sleeper", cells);
    await delay(60_000, { signal: scope.signal });
    return "slept";
  });
  console.log(
    `   withTimeoutOrNull(20 ms) around a native 60 s sleep: ${r} after ${
      (performance.now() - t0).toFixed(0)
    } ms; the native sleeper ended with ${statusName(Number(BigInt.asIntN(64, cells[2])))}`,
  );
  await rt.shutdown();
}

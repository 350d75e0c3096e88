/**
 * Structured concurrency: a failing child cancels its siblings in a `coroutineScope`, and the
 * scope rethrows its error; in a `supervisorScope` the siblings run on and the failure stays with
 * the child that had it (Go: an errgroup against a plain WaitGroup).
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/structured.ts
 *
 * Each scope has three children: "fetch" fails after its first wait, "slow-a" and "slow-b" wait on
 * a channel that "fetch" never sends on. Every wait takes the task's signal, which is how a
 * cancellation reaches it.
 */
import {
  CancellationError,
  Channel,
  type CoroutineScope,
  coroutineScope,
  delay,
  supervisorScope,
} from "../mod.ts";

/** Launches the three children into `scope`, recording how each ended in `ended`. */
function launchChildren(scope: CoroutineScope, ready: Channel<string>, ended: string[]) {
  const child = (name: string, body: (task: CoroutineScope) => Promise<string>) =>
    scope.async(async (task) => {
      try {
        const r = await body(task);
        ended.push(`${name}: returned ${r}`);
        return r;
      } catch (e) {
        const how = e instanceof CancellationError
          ? "cancelled"
          : `failed (${(e as Error).message})`;
        ended.push(`${name}: ${how}`);
        throw e;
      }
    });
  const fetch = child("fetch", async (task) => {
    await delay(1, { signal: task.signal });
    throw new Error("connection refused");
  });
  const slow = ["slow-a", "slow-b"].map((name) =>
    child(name, async (task) => {
      // Waits for a value; without a cancellation it ends when the scope's block closes `ready`.
      const r = await ready.receiveCatching({ signal: task.signal });
      return r.state === "ok" ? r.value : "after the close";
    })
  );
  return { fetch, slow };
}

// 1. coroutineScope: the failure cancels slow-a and slow-b, and the scope rethrows it.
const ended1: string[] = [];
try {
  await coroutineScope(async (scope) => {
    using ready = new Channel<string>();
    const { fetch } = launchChildren(scope, ready, ended1);
    await fetch.await({ signal: scope.signal }); // rethrows; the scope was failing already
  });
} catch (e) {
  console.log(`1. coroutineScope threw: ${(e as Error).message}`);
}
for (const line of ended1.sort()) console.log(`   ${line}`);

// 2. supervisorScope: fetch fails alone; the others finish their work, and the scope completes.
const ended2: string[] = [];
const outcome = await supervisorScope(async (scope) => {
  using ready = new Channel<string>();
  const { fetch, slow } = launchChildren(scope, ready, ended2);
  const err = await fetch.await().catch((e: Error) => e.message);
  ready.close(); // now the slow children may end: each receive sees the close
  const rest = await Promise.all(slow.map((d) => d.await()));
  return `fetch failed with "${err}", the others returned "${rest.join('", "')}"`;
});
console.log(`2. supervisorScope completed: ${outcome}`);
for (const line of ended2.sort()) console.log(`   ${line}`);

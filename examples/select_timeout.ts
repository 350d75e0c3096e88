/**
 * Select over two channels with a timeout (Go's `select` with `time.After`), and a receive that
 * gives up after a while (Kotlin's `withTimeoutOrNull`).
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/select_timeout.ts
 *
 * 1. Two producers send on their own channels; a loop selects whichever is ready until both are
 *    closed. No clause here waits on the clock, so the order is fixed by what is sent.
 * 2. A select over two channels nobody sends on: the `onTimeout` clause fires.
 * 3. `onTimeout(0)` is Go's `default:`: it fires at once when no other clause is ready.
 * 4. `withTimeoutOrNull` around a receive: null when nothing arrives in time, the value otherwise.
 */
import { Channel, coroutineScope, select, withTimeoutOrNull } from "../mod.ts";

// 1. Two channels, one loop: each round takes what is ready; a closed channel's clause is dropped.
const log = await coroutineScope(async (scope) => {
  using words = new Channel<string>(4);
  using numbers = new Channel<number>(4);
  scope.launch(async (task) => {
    for (const w of ["one", "two"]) await words.send(w, { signal: task.signal });
    words.close();
  });
  scope.launch(async (task) => {
    for (const n of [1, 2, 3]) await numbers.send(n, { signal: task.signal });
    numbers.close();
  });
  const seen: string[] = [];
  let open = { words: true, numbers: true };
  while (open.words || open.numbers) {
    seen.push(
      await select<string>((s) => {
        if (open.words) {
          s.onReceiveCatching(words, (r) => {
            if (r.state === "closed") open = { ...open, words: false };
            return r.state === "ok" ? `word ${r.value}` : "words closed";
          });
        }
        if (open.numbers) {
          s.onReceiveCatching(numbers, (r) => {
            if (r.state === "closed") open = { ...open, numbers: false };
            return r.state === "ok" ? `number ${r.value}` : "numbers closed";
          });
        }
        s.onTimeout(60_000, () => "timeout"); // not reached: both producers send at once
      }, { signal: scope.signal }),
    );
  }
  return seen.sort(); // the interleaving depends on the producers' turns; the set does not
});
console.log(`1. received: ${log.join(", ")}`);

// 2. Nothing arrives: the timeout clause wins.
using quiet = new Channel<string>();
using silent = new Channel<number>();
const r = await select<string>((s) => {
  s.onReceive(quiet, (v) => `quiet: ${v}`);
  s.onReceive(silent, (v) => `silent: ${v}`);
  s.onTimeout(20, () => "timed out after 20 ms");
});
console.log(`2. select over two idle channels: ${r}`);

// 3. A default clause: nothing is ready, so it fires without waiting.
const d = await select<string>((s) => {
  s.onReceive(quiet, (v) => v);
  s.onTimeout(0, () => "nothing ready");
});
console.log(`3. select with a default: ${d}`);

// 4. withTimeoutOrNull: the receive takes the task's signal, so the timeout ends it.
using inbox = new Channel<string>(1);
const none = await withTimeoutOrNull(20, (task) => inbox.receive({ signal: task.signal }));
inbox.trySend("hello");
const some = await withTimeoutOrNull(5_000, (task) => inbox.receive({ signal: task.signal }));
console.log(`4. withTimeoutOrNull: ${none} while the inbox was empty, then "${some}"`);

// Seeded cross-isolate chaos on one shared channel (tests/fixtures/chaos.ts says what a seed
// does and what it checks): every id received at most once; every successful send received
// exactly once or handed to onUndeliveredElement (only when the channel drops or was
// cancelled, or a receive that took it was given up by its signal once the channel was closed
// with nothing left to receive: one such value per receive given up then, at most; or a
// terminated Worker's); a refused send's value to the hook only; nothing of a failed, aborted or
// unselected send seen; every promise settled within a deadline; no channel handle left; and a
// process running a seed exits by itself.
//
// KCORO_STRESS_SEEDS seeds (3 by default) from KCORO_STRESS_SEED (117478 by default, so that
// every run of the suite draws the same mixes: 117478 to 117480 draw a byte channel of one slot
// dropping the latest, made by the last Worker, which is terminated before the first Worker
// closes it; a conflated f64 one made by the first Worker, the last one disposing of its copy
// mid-stream, closed natively and cancelled by its owner 3 ms later; a u64 one of one slot,
// made by the main isolate, with native senders and echo, the last Worker terminated before
// the channel is closed natively), each for about KCORO_STRESS_MS (300) ms, with
// KCORO_STRESS_WORKERS Workers (2).
// A seed fixes the channel, the operations each party draws and the moments of the close and
// the termination, not how the threads interleave: a replay repeats the mix, not necessarily a
// failure. Run many by hand, for example
//   KCORO_STRESS_SEEDS=200 KCORO_STRESS_SEED=$RANDOM deno test -A tests/chaos_test.ts
import assert from "node:assert/strict";
import { draw, runSeed } from "./fixtures/chaos.ts";
import { evalScript, liveChannels, shutdownScheduler, until } from "./support.ts";

const seeds = Number(Deno.env.get("KCORO_STRESS_SEEDS") ?? 3);
const first = Number(Deno.env.get("KCORO_STRESS_SEED") ?? 117478);
const ms = Number(Deno.env.get("KCORO_STRESS_MS") ?? 300);
const workers = Number(Deno.env.get("KCORO_STRESS_WORKERS") ?? 2);

Deno.test("chaos: main isolate, 2 Workers and native coroutines on one shared channel of a random kind, closed or cancelled by a random party mid-stream: every value accounted for", async () => {
  assert.ok(Number.isInteger(seeds) && seeds >= 1, `KCORO_STRESS_SEEDS=${seeds}`);
  const before = liveChannels();
  const totals = { sent: 0, received: 0, undelivered: 0, lost: 0, returned: 0, terminated: 0 };
  for (let seed = first; seed < first + seeds; seed++) {
    const o = await runSeed(seed, ms, workers).catch((e) => {
      throw new Error(
        `chaos failed: replay with KCORO_STRESS_SEED=${seed} KCORO_STRESS_SEEDS=1 ` +
          `KCORO_STRESS_MS=${ms} KCORO_STRESS_WORKERS=${workers}: ${(e as Error)?.message ?? e}`,
        { cause: e },
      );
    });
    totals.sent += o.sent;
    totals.received += o.received;
    totals.undelivered += o.undelivered;
    totals.lost += o.lost.length;
    totals.returned += o.returned.values;
    totals.terminated += o.terminated ? 1 : 0;
    if (Deno.env.get("KCORO_STRESS_VERBOSE")) console.log(seed, draw(seed, ms, workers), o);
  }
  assert.ok(totals.sent > 0 && totals.received > 0, Deno.inspect(totals));
  // Back to the count before (or below: another file's channel collected meanwhile). A
  // terminated Worker's thread gives its holds back a little after it ended: bounded wait.
  let now = -1;
  await until(() => (now = liveChannels()) <= before, "channel handles back").catch(() => {});
  assert.ok(now <= before, `live channel handles: ${now} after the seeds, ${before} before`);
  if (Deno.env.get("KCORO_STRESS_VERBOSE")) console.log(totals);
});

Deno.test("chaos: a process that ran a seed exits by itself", async () => {
  // One with native coroutines if the first three draw one (a running scheduler must not keep
  // the process alive either).
  const seed = [first, first + 1, first + 2].find((s) => draw(s, ms, workers).natives) ?? first;
  const res = await evalScript(
    `import { runSeed } from "./tests/fixtures/chaos.ts";
     await runSeed(${seed}, ${ms}, ${workers});`,
    { timeoutMs: 60_000 },
  );
  assert.equal(res.signal, null, `killed at the bound: ${res.stderr}`);
  assert.equal(res.code, 0, res.stderr);
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

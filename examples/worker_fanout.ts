/**
 * Fan-out over Workers: one jobs channel shared with three Workers (`share()` in this isolate,
 * `Channel.from()` in each Worker), each Worker squaring what it receives into a shared results
 * channel (Go's worker pool over one `chan`, each goroutine in a thread of its own).
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/worker_fanout.ts
 *
 * The same file is the Workers' module: it tells which side it runs on from `WorkerGlobalScope`.
 * Closing the jobs channel ends every Worker's `for await` once the jobs are drained; each Worker
 * then reports how many it took and is terminated, and the process exits by itself.
 */
import { Channel, coroutineScope, type SharedChannel } from "../mod.ts";

type Start = { jobs: SharedChannel<number>; results: SharedChannel<number[]> };
const inWorker = "WorkerGlobalScope" in globalThis;

if (inWorker) {
  const self = globalThis as unknown as {
    onmessage: (e: MessageEvent<Start>) => void;
    postMessage(message: unknown): void;
  };
  self.onmessage = async ({ data }) => {
    using jobs = Channel.from(data.jobs); // copies: their dispose only detaches
    using results = Channel.from(data.results);
    let taken = 0;
    for await (const n of jobs) { // shared with the other Workers: each job reaches one of them
      await results.send([n, n * n]);
      taken++;
    }
    self.postMessage(taken); // the jobs channel was closed and drained
  };
} else {
  const workerCount = 3, jobCount = 100;
  using jobs = new Channel<number>(16);
  using results = new Channel<number[]>(16);
  const workers = Array.from({ length: workerCount }, () => {
    const w = new Worker(import.meta.url, { type: "module" });
    const done = new Promise<number>((resolve, reject) => {
      w.onmessage = (e: MessageEvent<number>) => resolve(e.data);
      w.onerror = (e) => {
        e.preventDefault(); // handled here: it fails the scope below
        reject(new Error(`a Worker failed: ${e.message}`));
      };
    });
    w.postMessage({ jobs: jobs.share(), results: results.share() } satisfies Start);
    return { w, done };
  });
  try {
    const { sum, once, taken } = await coroutineScope(async (scope) => {
      scope.launch(async (task) => {
        for (let n = 1; n <= jobCount; n++) await jobs.send(n, { signal: task.signal });
        jobs.close(); // the Workers' loops end once they have taken what is buffered
      });
      // A Worker's error fails the scope, which cancels the receives below.
      const finished = scope.async(() => Promise.all(workers.map((x) => x.done)));
      const seen = new Array<number>(jobCount + 1).fill(0);
      let sum = 0;
      for (let i = 0; i < jobCount; i++) {
        const [n, square] = await results.receive({ signal: scope.signal });
        seen[n]++;
        sum += square;
      }
      const taken = (await finished.await()).reduce((a, b) => a + b, 0);
      return { sum, once: seen.slice(1).every((count) => count === 1), taken };
    });
    console.log(`${workerCount} Workers squared 1..${jobCount}: ${jobCount} results, sum ${sum}`);
    console.log(`every job exactly once: ${once}; jobs taken by the Workers add up to ${taken}`);
    console.log(
      `nothing left: ${results.tryReceive().state}; jobs closed: ${jobs.isClosedForReceive}`,
    );
  } finally {
    for (const { w } of workers) w.terminate(); // each had finished its loop: nothing is lost
  }
}

/**
 * Kotlin's counter actor ("Shared mutable state and concurrency"): many tasks increment one
 * counter that only the actor's handler touches, and a request reads it back through a
 * `CompletableDeferred`.
 *
 *   deno run --allow-ffi --allow-read --allow-env examples/actor_counter.ts
 *
 * Messages are copies (the mailbox is a channel), so a `CompletableDeferred`, as any kcoro
 * object, cannot travel inside one. The request carries a number instead, and the deferred waits
 * in a table of this isolate under that number; the handler completes it from there. (Across
 * isolates, send a reply channel's `share()` instead: README, "Producers, actors and native
 * scopes from TypeScript".)
 */
import { actor, CompletableDeferred, type CoroutineScope, coroutineScope } from "../mod.ts";

type CounterMsg = { kind: "inc" } | { kind: "get"; reply: number };

/** The replies still awaited, by request number: this isolate's side of each "get". */
const replies = new Map<number, CompletableDeferred<number>>();
let nextReply = 0;

function counterActor(scope: CoroutineScope) {
  return actor<CounterMsg>(scope, async (mailbox) => {
    let counter = 0; // the actor's state: only this handler reads or writes it
    for await (const msg of mailbox) {
      if (msg.kind === "inc") counter++;
      else {
        replies.get(msg.reply)!.complete(counter);
        replies.delete(msg.reply);
      }
    }
  }, { capacity: 64 });
}

/** Kotlin's massiveRun: `tasks` tasks, each calling `action` `times` times. */
async function massiveRun(tasks: number, times: number, action: () => Promise<void>) {
  await coroutineScope((scope) => {
    for (let t = 0; t < tasks; t++) {
      scope.launch(async () => {
        for (let i = 0; i < times; i++) await action();
      });
    }
  });
  console.log(`completed ${(tasks * times).toLocaleString("en-US")} actions`);
}

await coroutineScope(async (scope) => {
  const counter = counterActor(scope);
  await massiveRun(100, 100, () => counter.send({ kind: "inc" }));

  const response = new CompletableDeferred<number>();
  const reply = nextReply++;
  replies.set(reply, response);
  await counter.send({ kind: "get", reply });
  console.log(`Counter = ${await response.await()}`);
  counter.close(); // the handler's loop ends once the queue is drained
  await counter.job.join();
  console.log(`the actor: ${counter.job.state}; replies still awaited: ${replies.size}`);
});

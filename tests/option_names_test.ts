// Every option of the public API that takes one of a fixed set of names (a Channel's capacity and
// overflow, produce's and actor's capacity, a built-in entry for NativeCoroutine.create, spawn
// and a native scope's launch, a shutdown mode) and every one that takes one of a fixed set of
// objects (a codec): a string naming none of them is a TypeError, as a value of the wrong type is
// (WebIDL's rule for an enum value it does not know; README, "Wrong input"). Only valid choices
// that do not go together (a conflated channel that would drop the latest value) are a RangeError.
import assert from "node:assert/strict";
import {
  actor,
  Channel,
  createScope,
  NativeCoroutine,
  nativeScope,
  produce,
  runtime,
} from "../mod.ts";
import { shutdownScheduler } from "./support.ts";

/** Names no option takes: a near miss, an inherited property name, the empty string. */
const UNKNOWN = ["drop-newest", "toString", "__proto__", ""];

Deno.test("a string naming none of an option's choices is a TypeError that names it, everywhere", async () => {
  const rt = runtime();
  const scope = createScope();
  const ns = nativeScope(scope);
  const block = () => {};
  // [what is called, the message's start, a call with the name `x`; a rejection for a Promise]
  const table: [string, string, (x: string) => unknown][] = [
    ["Channel capacity", "Cannot create channel: capacity must be", (x) => new Channel(x as never)],
    [
      "Channel overflow",
      "Cannot create channel: overflow must be",
      (x) => new Channel(4, { overflow: x as never }),
    ],
    [
      "Channel overflow, conflated",
      "Cannot create channel: overflow must be",
      (x) => new Channel("conflated", { overflow: x as never }),
    ],
    [
      "Channel codec",
      "Cannot create channel: codec must be",
      (x) => new Channel(4, { codec: x as never }),
    ],
    [
      "produce capacity",
      "Cannot produce: capacity must be",
      (x) => produce(scope, block, { capacity: x as never }),
    ],
    [
      "actor capacity",
      "Cannot start actor: capacity must be",
      (x) => actor(scope, block, { capacity: x as never }),
    ],
    [
      "NativeCoroutine.create entry",
      "Cannot create coroutine: entry must be one of",
      (x) => NativeCoroutine.create(x as never),
    ],
    [
      "spawn entry",
      "Cannot spawn coroutine: entry must be one of",
      (x) => rt.spawn(x as never, rt.cells(3)),
    ],
    [
      "native scope launch entry",
      "Cannot launch native coroutine: entry must be one of",
      (x) => ns.launch(x as never, rt.cells(3)),
    ],
    ["shutdown mode", "Cannot shut down runtime: mode must be", (x) => rt.shutdown(x as never)],
  ];
  for (const [what, start, call] of table) {
    for (const x of UNKNOWN) {
      let thrown: unknown = undefined, returned: unknown = undefined;
      try {
        returned = call(x);
      } catch (e) {
        thrown = e;
      }
      // A call that returns a Promise rejects instead of throwing (README: never throws).
      if (returned instanceof Promise) thrown = await returned.then(() => undefined, (e) => e);
      const at = `${what} given ${JSON.stringify(x)}`;
      assert.ok(thrown instanceof TypeError, `${at}: ${thrown}`);
      assert.ok(thrown.message.startsWith(start), `${at}: ${thrown.message}`);
      assert.ok(
        thrown.message.endsWith(`received ${JSON.stringify(x)}`),
        `${at}: ${thrown.message}`,
      );
    }
  }
  // Choices that exist but do not go together: a value out of range, a RangeError.
  assert.throws(() => new Channel("conflated", { overflow: "drop-latest" }), {
    name: "RangeError",
    message:
      'Cannot create channel: a conflated channel drops the oldest value, received overflow "drop-latest"',
  });
  scope.cancel();
  await scope.join();
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

// Every option of the public API that takes one of a fixed set of names (a Channel's capacity and
// overflow, produce's and actor's capacity, a built-in entry for NativeCoroutine.create, spawn
// and a native scope's launch, a shutdown mode) and every one that takes one of a fixed set of
// objects (a codec): a string naming none of them is a TypeError, as a value of the wrong type is
// (WebIDL's rule for an enum value it does not know; README, "Wrong input"). Only valid choices
// that do not go together (a conflated channel that would drop the latest value) are a RangeError.
// And every option given as null is a TypeError naming it, not its default (README, same section).
import assert from "node:assert/strict";
import {
  actor,
  Channel,
  CompletableDeferred,
  coroutineScope,
  createScope,
  delay,
  NativeCoroutine,
  NativeScope,
  nativeScope,
  nonCancellable,
  openLibrary,
  produce,
  runtime,
  select,
  supervisorScope,
  withTimeout,
  withTimeoutOrNull,
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

Deno.test("an option given as null is a TypeError naming it, not the default, in every options object (README, Wrong input)", async () => {
  // README: "An option given as `null` is of a wrong type too, not the default: only
  // `undefined` (or leaving it out) takes the default". Before, NativeCoroutine.create's `arg`
  // and `stackSize` took null for 0 (`?? 0`); this pins the rule for every option of the API
  // (an option added to it belongs in this table: one read with `??` fails here).
  const rt = runtime();
  const scope = createScope();
  await using ns = NativeScope.create();
  using ch = new Channel<number>(4);
  const block = async () => {};
  const job = scope.launch(block);
  const deferred = scope.async(() => 1);
  const cd = new CompletableDeferred<number>();
  const mailbox = actor<number>(scope, async (m) => {
    for await (const _ of m) { /* drained */ }
  });
  const onRecv = (s: Parameters<Parameters<typeof select>[0]>[0]) => s.onReceive(ch, (v) => v);
  // [the op in the message, the option, a call with that option null]
  const table: [string, string, (n: never) => unknown][] = [
    ["create channel", "overflow", (n) => new Channel(4, { overflow: n })],
    ["create channel", "codec", (n) => new Channel(4, { codec: n })],
    ["create channel", "onUndeliveredElement", (n) => new Channel(4, { onUndeliveredElement: n })],
    ["send", "signal", (n) => ch.send(1, { signal: n })],
    ["receive", "signal", (n) => ch.receive({ signal: n })],
    ["receiveCatching", "signal", (n) => ch.receiveCatching({ signal: n })],
    ["iterate channel", "signal", (n) => ch.values({ signal: n })],
    ["select", "signal", (n) => select(onRecv, { signal: n })],
    ["select", "unbiased", (n) => select(onRecv, { unbiased: n })],
    ["delay", "signal", (n) => delay(1, { signal: n })],
    ["run coroutineScope", "signal", (n) => coroutineScope(block, { signal: n })],
    ["run coroutineScope", "context", (n) => coroutineScope(block, { context: n })],
    ["run supervisorScope", "signal", (n) => supervisorScope(block, { signal: n })],
    ["run supervisorScope", "context", (n) => supervisorScope(block, { context: n })],
    ["run withTimeout", "signal", (n) => withTimeout(1000, block, { signal: n })],
    ["run withTimeout", "context", (n) => withTimeout(1000, block, { context: n })],
    ["run withTimeoutOrNull", "signal", (n) => withTimeoutOrNull(1000, block, { signal: n })],
    ["run withTimeoutOrNull", "context", (n) => withTimeoutOrNull(1000, block, { context: n })],
    ["run nonCancellable", "context", (n) => nonCancellable(block, { context: n })],
    ["create scope", "signal", (n) => createScope({ signal: n })],
    ["create scope", "context", (n) => createScope({ context: n })],
    ["create scope", "supervisor", (n) => createScope({ supervisor: n })],
    ["create scope", "parent", (n) => createScope({ parent: n })],
    ["launch", "lazy", (n) => scope.launch(block, { lazy: n })],
    ["launch", "context", (n) => scope.launch(block, { context: n })],
    ["run async", "lazy", (n) => scope.async(block, { lazy: n })],
    ["run async", "context", (n) => scope.async(block, { context: n })],
    ["join", "signal", (n) => scope.join({ signal: n })],
    ["join", "signal", (n) => job.join({ signal: n })],
    ["await", "signal", (n) => deferred.await({ signal: n })],
    ["create CompletableDeferred", "parent", (n) => new CompletableDeferred({ parent: n })],
    ["create CompletableDeferred", "context", (n) => new CompletableDeferred({ context: n })],
    ["join", "signal", (n) => cd.join({ signal: n })],
    ["await", "signal", (n) => cd.await({ signal: n })],
    ["produce", "capacity", (n) => produce(scope, block, { capacity: n })],
    ["produce", "onUndeliveredElement", (n) => produce(scope, block, { onUndeliveredElement: n })],
    ["start actor", "capacity", (n) => actor(scope, block, { capacity: n })],
    ["start actor", "onDone", (n) => actor(scope, block, { onDone: n })],
    [
      "start actor",
      "onUndeliveredElement",
      (n) => actor(scope, block, { onUndeliveredElement: n }),
    ],
    ["send", "signal", (n) => mailbox.send(1, { signal: n })],
    ["create coroutine", "arg", (n) => NativeCoroutine.create("fib", { arg: n })],
    ["create coroutine", "stackSize", (n) => NativeCoroutine.create("fib", { stackSize: n })],
    ["create coroutine", "fpControl", (n) => NativeCoroutine.create("fib", { fpControl: n })],
    ["create coroutine", "slabStack", (n) => NativeCoroutine.create("fib", { slabStack: n })],
    ["create native scope", "parent", (n) => NativeScope.create({ parent: n })],
    ["wait for native scope", "signal", (n) => ns.wait({ signal: n })],
    ["wait for native scope", "timeout", (n) => ns.wait({ timeout: n })],
    ["open library", "path", (n) => openLibrary({ path: n })],
    ["open library", "expectAbi", (n) => openLibrary({ expectAbi: n })],
    ["open library", "build", (n) => openLibrary({ build: n })],
    ["start runtime", "workers", (n) => runtime({ workers: n })],
    ["start runtime", "stackSize", (n) => runtime({ stackSize: n })],
    ["start runtime", "fpControl", (n) => runtime({ fpControl: n })],
    ["start runtime", "slabStacks", (n) => runtime({ slabStacks: n })],
  ];
  for (const [op, option, call] of table) {
    let thrown: unknown = undefined, returned: unknown = undefined;
    try {
      returned = call(null as never);
    } catch (e) {
      thrown = e;
    }
    // A call that returns a Promise rejects instead of throwing (README: never throws).
    if (returned instanceof Promise) thrown = await returned.then(() => undefined, (e) => e);
    const at = `${op}: ${option} null`;
    assert.ok(thrown instanceof TypeError, `${at}: ${thrown}`);
    assert.ok(thrown.message.startsWith(`Cannot ${op}: ${option} must be `), `${at}: ${thrown}`);
    assert.ok(thrown.message.endsWith(", received null"), `${at}: ${thrown.message}`);
  }
  assert.equal(rt.isRunning, true);
  scope.cancel();
  await scope.join();
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

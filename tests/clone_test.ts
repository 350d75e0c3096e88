// Structured cloning (postMessage to a Worker, structuredClone) of kcoro's objects: each lives in
// its isolate, so each must fail with a DataCloneError whose message says what to send instead.
// A copy used to arrive as a lifeless plain object without an error: a job, deferred or scope as
// { context: {} }, a Context, NativeCoroutine or NativeScope as {}, a Runtime as { workers }, a
// Library as { path, abiVersion }, a context key as { name, check: null }; kcoro's own keys failed
// on their check function, printing its source as the message.
import assert from "node:assert/strict";
import {
  actor,
  Channel,
  CompletableDeferred,
  Context,
  CoroutineExceptionHandler,
  coroutineScope,
  createContextKey,
  createScope,
  Deadline,
  library,
  NativeCoroutine,
  NativeScope,
  nativeScope,
  nonCancellable,
  produce,
  runtime,
  supervisorScope,
  withTimeout,
} from "../mod.ts";

/** Asserts that both ways of cloning `value` throw a DataCloneError matching `advice`. */
function assertRefused(name: string, value: unknown, advice: RegExp): void {
  const port = new MessageChannel();
  try {
    for (const clone of [() => structuredClone({ value }), () => port.port1.postMessage([value])]) {
      assert.throws(clone, (e: unknown) => {
        assert.ok(e instanceof DOMException && e.name === "DataCloneError", `${name}: ${e}`);
        assert.match(e.message, advice, name);
        return true;
      }, `${name} cloned without an error`);
    }
  } finally {
    port.port1.close();
    port.port2.close();
  }
}

const JOB = /Cannot clone a job, deferred or scope: .*share\(\)/;

Deno.test("every public kcoro object refuses structured cloning with a DataCloneError that says what to send instead", async () => {
  const rows: [string, unknown, RegExp][] = [];
  const key = createContextKey<number>("user");
  rows.push(
    ["Context.empty", Context.empty, /Cannot clone a Context: .*send the values it holds/],
    ["a Context with a value", Context.empty.with(key, 1), /Cannot clone a Context: /],
    ["createContextKey's key", key, /Cannot clone a context key: .*compare by identity/],
    ["Deadline", Deadline, /Cannot clone a context key: /],
    ["CoroutineExceptionHandler", CoroutineExceptionHandler, /Cannot clone a context key: /],
    ["CompletableDeferred", new CompletableDeferred<number>(), JOB],
    ["library()", library(), /Cannot clone a Library: .*library\(\)/],
    ["runtime()", runtime(), /Cannot clone a Runtime: .*runtime\(\)/],
  );
  using co = NativeCoroutine.create("fib", { arg: 3 });
  rows.push(["NativeCoroutine", co, /Cannot clone a NativeCoroutine: /]);
  await using ns = NativeScope.create();
  rows.push(["NativeScope.create()", ns, /Cannot clone a NativeScope: .*handle/]);
  await using free = createScope();
  rows.push(["createScope()", free, JOB]);
  using ch = new Channel<number>(1);
  rows.push(["Channel", ch, /Cannot clone a Channel: /]);
  await coroutineScope(async (scope) => {
    rows.push(["coroutineScope's scope", scope, JOB], ["its context", scope.context, /Context/]);
    const job = scope.launch(() => Promise.resolve(), { lazy: true }); // not started: its state only
    rows.push(["launch's job", job, JOB]);
    rows.push(["async's deferred", scope.async(() => Promise.resolve(1)), JOB]);
    rows.push(["produce's channel", produce<number>(scope, () => Promise.resolve()), /Channel/]);
    const a = actor<number>(scope, async (mailbox) => {
      for await (const _ of mailbox);
    });
    rows.push(["actor", a, /Cannot clone an actor: /]);
    rows.push(["nativeScope(scope)", nativeScope(scope), /Cannot clone a NativeScope: /]);
    await supervisorScope((s) => rows.push(["supervisorScope's scope", s, JOB]));
    await nonCancellable((s) => rows.push(["nonCancellable's scope", s, JOB]));
    await withTimeout(60_000, (s) => {
      rows.push(["withTimeout's scope", s, JOB], ["its timed context", s.context, /Context/]);
    });
    for (const [name, value, advice] of rows) assertRefused(name, value, advice);
    a.close();
    job.cancel();
  });
  assert.ok(rows.length >= 20, `rows: ${rows.length}`);
});

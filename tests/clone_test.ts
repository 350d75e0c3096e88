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
  CodecError,
  codecs,
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
  select,
  type SelectBuilder,
  supervisorScope,
  withTimeout,
} from "../mod.ts";
import { shutdownScheduler } from "./support.ts";

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

/**
 * Calls `check` with every public kcoro object (its name, the object, the advice its clone
 * fails with), each live while `check` runs.
 */
async function withEveryObject(
  check: (rows: [string, unknown, RegExp][]) => void,
): Promise<void> {
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
  const CODEC = /Cannot clone a codec: .*send the codec's name and take codecs\[name\]/;
  for (const [name, codec] of Object.entries(codecs)) rows.push([`codecs.${name}`, codec, CODEC]);
  using co = NativeCoroutine.create("fib", { arg: 3 });
  rows.push(["NativeCoroutine", co, /Cannot clone a NativeCoroutine: /]);
  await using ns = NativeScope.create();
  rows.push(["NativeScope.create()", ns, /Cannot clone a NativeScope: .*handle/]);
  await using free = createScope();
  rows.push(["createScope()", free, JOB]);
  using ch = new Channel<number>(1);
  rows.push(["Channel", ch, /Cannot clone a Channel: /]);
  using copy = Channel.from<number>(ch.share());
  rows.push(["Channel.from's copy", copy, /Cannot clone a Channel: /]);
  const BUILDER = /Cannot clone a select builder: .*share\(\) and build the select in the Worker/;
  await ch.send(1);
  await select<number>((s) => {
    rows.push(["a select builder, empty", s, BUILDER]);
    s.onReceive(ch, (v) => v);
    rows.push(["a select builder with a clause", s, BUILDER]);
  });
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
    // The job a native scope's children are waited for by, among its owner's children.
    const before = new Set(scope.job.children);
    nativeScope(scope).launch("cancellable-sleeper", runtime().cells([0n, 0n, 0n]));
    const waits = scope.job.children.filter((c) => !before.has(c));
    assert.equal(waits.length, 1);
    rows.push(["a native scope's children's job", waits[0], JOB]);
    check(rows);
    a.close();
    job.cancel();
  });
  assert.ok(rows.length >= 20, `rows: ${rows.length}`);
}

Deno.test("every public kcoro object refuses structured cloning with a DataCloneError that says what to send instead", async () => {
  await withEveryObject((rows) => {
    for (const [name, value, advice] of rows) assertRefused(name, value, advice);
  });
});

Deno.test("a Runtime's, Library's, NativeScope's, NativeCoroutine's or actor's _notCloneable can be neither overwritten nor deleted (the object is frozen, as a Context and a key were): `rt._notCloneable = 1` let structuredClone(rt) post a plain { _notCloneable: 1, workers }", async () => {
  let checked = 0;
  await withEveryObject((rows) => {
    for (const [name, value, advice] of rows) {
      // Not frozen: jobs and channels (a freeze costs ~30 ns an object: launch + join measured
      // ~30% slower, a local channel's create + dispose ~22%), and a select builder (it lives
      // only while its block runs; a freeze per select would cost its hot path).
      if (advice === JOB || /Channel/.test(advice.source) || name.startsWith("a select")) continue;
      checked++;
      const o = value as Record<string, unknown>;
      assert.ok(Object.isFrozen(o), name);
      assert.throws(
        () => {
          o._notCloneable = 1;
        },
        TypeError,
        name,
      );
      assert.throws(() => delete o._notCloneable, TypeError, name);
      assert.throws(() => Object.defineProperty(o, "_notCloneable", { value: 1 }), TypeError, name);
      // Nor can a field be added that a clone would carry instead.
      assert.throws(
        () => {
          o.extra = 1;
        },
        TypeError,
        name,
      );
      assertRefused(name, value, advice);
    }
  });
  assert.ok(checked >= 10, `checked: ${checked}`);
});

Deno.test("a codec or a select builder sent as a channel's value is a CodecError naming what to send instead", async () => {
  using ch = new Channel<unknown>(4, { codec: codecs.structured });
  const refused = (what: RegExp) => (e: unknown) => {
    assert.ok(e instanceof CodecError, String(e));
    assert.match(e.message, what);
    return true;
  };
  await assert.rejects(
    ch.send({ codec: codecs.f64 }),
    refused(/Cannot send: the value holds a codec, .*send its name and take `codecs\[name\]`/),
  );
  let builder: SelectBuilder<number> | undefined;
  await select<number>((s) => {
    builder = s;
    s.onTimeout(0, () => 0);
  });
  await assert.rejects(ch.send(builder), refused(/Cannot send: a select builder, /));
  // The name travels, and names the same codec there.
  await ch.send({ codec: codecs.f64.name });
  const got = await ch.receive() as { codec: keyof typeof codecs };
  assert.equal(codecs[got.codec], codecs.f64);
  assert.equal(Deno.inspect(codecs.f64), 'Codec { name: "f64" }');
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

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
import { settled, shutdownScheduler, until, untilAborted } from "./support.ts";

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
  // (every option of withOptionReaders' table is given as null: one read with `??` fails here).
  const rt = runtime();
  await withOptionReaders(async (table) => {
    for (const [op, options, call] of table) {
      for (const option of options) {
        let thrown: unknown = undefined, returned: unknown = undefined;
        try {
          returned = call({ [option]: null } as never);
        } catch (e) {
          thrown = e;
        }
        // A call that returns a Promise rejects instead of throwing (README: never throws).
        if (returned instanceof Promise) thrown = await returned.then(() => undefined, (e) => e);
        const at = `${op}: ${option} null`;
        assert.ok(thrown instanceof TypeError, `${at}: ${thrown}`);
        assert.ok(
          thrown.message.startsWith(`Cannot ${op}: ${option} must be `),
          `${at}: ${thrown}`,
        );
        assert.ok(thrown.message.endsWith(", received null"), `${at}: ${thrown.message}`);
      }
    }
  });
  assert.equal(rt.isRunning, true);
});

/**
 * What a call does with `options`: the error it throws, or its Promise rejects with by the time
 * pending microtasks ran (an option check rejects at once); undefined if neither (a Promise still
 * pending: never awaited, so that a call that did not refuse cannot hang the test).
 */
async function refusal(call: () => unknown): Promise<unknown> {
  let returned: unknown;
  try {
    returned = call();
  } catch (e) {
    return e;
  }
  if (!(returned instanceof Promise)) return undefined;
  let error: unknown = undefined;
  returned.catch((e) => error = e);
  await settled(returned);
  return error;
}

/**
 * Every call that takes an options object, as a row: [the op its messages name, its known
 * options in order, the call given options `o`]. An options object added to the API belongs in
 * this table. `body` runs with the table; the scope and the objects the rows call on end after.
 */
async function withOptionReaders(
  body: (table: [string, string[], (o: never) => unknown][]) => Promise<void>,
): Promise<void> {
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
  // Running, so that its send merges the task's signal into the options (produce.ts).
  const produced = produce<number>(scope, (_, task) => untilAborted(task.signal));
  const onRecv = (s: Parameters<Parameters<typeof select>[0]>[0]) => s.onReceive(ch, (v) => v);
  const table: [string, string[], (o: never) => unknown][] = [
    ["create channel", ["overflow", "codec", "onUndeliveredElement"], (o) => new Channel(4, o)],
    ["send", ["signal"], (o) => ch.send(1, o)],
    ["receive", ["signal"], (o) => ch.receive(o)],
    ["receiveCatching", ["signal"], (o) => ch.receiveCatching(o)],
    ["iterate channel", ["signal"], (o) => ch.values(o)],
    ["select", ["signal", "unbiased"], (o) => select(onRecv, o)],
    ["delay", ["signal"], (o) => delay(1, o)],
    ["run coroutineScope", ["signal", "context"], (o) => coroutineScope(block, o)],
    ["run supervisorScope", ["signal", "context"], (o) => supervisorScope(block, o)],
    ["run withTimeout", ["signal", "context"], (o) => withTimeout(1000, block, o)],
    ["run withTimeout", ["signal", "context"], (o) => withTimeout(0, block, o)],
    ["run withTimeoutOrNull", ["signal", "context"], (o) => withTimeoutOrNull(1000, block, o)],
    ["run nonCancellable", ["context"], (o) => nonCancellable(block, o)],
    ["create scope", ["signal", "context", "supervisor", "parent"], (o) => createScope(o)],
    ["launch", ["lazy", "context"], (o) => scope.launch(block, o)],
    ["run async", ["lazy", "context"], (o) => scope.async(block, o)],
    ["join", ["signal"], (o) => scope.join(o)],
    ["join", ["signal"], (o) => job.join(o)],
    ["await", ["signal"], (o) => deferred.await(o)],
    ["create CompletableDeferred", ["context", "parent"], (o) => new CompletableDeferred(o)],
    ["join", ["signal"], (o) => cd.join(o)],
    ["await", ["signal"], (o) => cd.await(o)],
    ["produce", ["capacity", "context", "onUndeliveredElement"], (o) => produce(scope, block, o)],
    ["send", ["signal"], (o) => produced.send(1, o)],
    [
      "start actor",
      ["capacity", "context", "lazy", "onDone", "onUndeliveredElement"],
      (o) => actor(scope, block, o),
    ],
    ["send", ["signal"], (o) => mailbox.send(1, o)],
    [
      "create coroutine",
      ["arg", "stackSize", "fpControl", "slabStack"],
      (o) => NativeCoroutine.create("fib", o),
    ],
    ["create native scope", ["parent"], (o) => NativeScope.create(o)],
    ["wait for native scope", ["signal", "timeout"], (o) => ns.wait(o)],
    ["open library", ["path", "expectAbi", "build"], (o) => openLibrary(o)],
    ["start runtime", ["workers", "stackSize", "fpControl", "slabStacks"], (o) => runtime(o)],
    ["drain runtime", ["signal"], (o) => runtime().drain(o)],
    ["shut down runtime", ["signal"], (o) => runtime().shutdown("cancel", o)],
  ];
  try {
    await body(table);
  } finally {
    scope.cancel();
    await scope.join();
  }
}

Deno.test("a misspelt option is a TypeError naming it and the known ones, in every options object (README, Wrong input)", async () => {
  // README: "An own key that names no option of the call (a misspelling: `runtime({ slabStack:
  // true })`, where the option is `slabStacks`) is a TypeError". Before, every options object
  // ignored it, the option it was meant to be taking its default. Each option of each call is
  // misspelt (its last letter left out) and must be refused, with the suggestion of that option.
  await withOptionReaders(async (table) => {
    // Every row's outcome, so that a failure names each call that took the misspelling.
    const wrong: string[] = [];
    for (const [op, known, call] of table) {
      for (const name of known) {
        const key = name.slice(0, -1);
        const thrown = await refusal(() => call({ [key]: 1 } as never));
        const message = `Cannot ${op}: unknown option "${key}" (known: ${known.join(", ")}; ` +
          `did you mean "${name}"?), received { ${key}: 1 }`;
        if (!(thrown instanceof TypeError) || thrown.message !== message) {
          wrong.push(`${op} given ${key}: ${thrown}`);
        }
      }
    }
    assert.deepEqual(wrong, []);
  });
});

Deno.test("options behind a revoked Proxy are a named TypeError carrying the engine's error, in every options object; a getter or trap of the caller's that throws passes its own error through (README, Wrong input)", async () => {
  // Before, each call let the engine's bare "Cannot perform 'get' on a proxy that has been
  // revoked" out: no op, no "received".
  await withOptionReaders(async (table) => {
    const wrong: string[] = [];
    const mine = new Error("the caller's getter");
    for (const [op, known, call] of table) {
      const { proxy, revoke } = Proxy.revocable({}, {});
      revoke();
      // A Proxy over a revoked one is as unreadable: its reads reach the revoked target.
      for (const revoked of [proxy, new Proxy(proxy, {})]) {
        const thrown = await refusal(() => call(revoked as never));
        if (
          !(thrown instanceof TypeError) ||
          !thrown.message.startsWith(`Cannot ${op}: options could not be read, received `) ||
          !(thrown.cause instanceof TypeError) || !/revoked/.test(thrown.cause.message)
        ) wrong.push(`${op} given a revoked Proxy: ${thrown}`);
      }
      // The caller's own: its first option's getter, and a Proxy whose `get` trap throws.
      const getter = Object.defineProperty({}, known[0], {
        enumerable: true,
        get: () => {
          throw mine;
        },
      });
      const trap = new Proxy({}, {
        get: () => {
          throw mine;
        },
      });
      for (const [what, o] of [["getter", getter], ["trap", trap]] as const) {
        const thrown = await refusal(() => call(o as never));
        if (thrown !== mine) wrong.push(`${op} given a throwing ${what}: ${thrown}`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});

Deno.test("the unknown-option check: own enumerable string keys only, no getter run, named with the nearest option", async () => {
  // The exact form, README's example.
  assert.throws(() => runtime({ slabStack: true } as never), {
    name: "TypeError",
    message: 'Cannot start runtime: unknown option "slabStack" (known: workers, stackSize, ' +
      'fpControl, slabStacks; did you mean "slabStacks"?), received { slabStack: true }',
  });
  // Case ignored in the suggestion; a name far from every option gets none; a key that is no
  // identifier is quoted in the received object.
  assert.throws(() => new Channel(4, { Overflow: "suspend" } as never), {
    message: 'Cannot create channel: unknown option "Overflow" (known: overflow, codec, ' +
      'onUndeliveredElement; did you mean "overflow"?), received { Overflow: "suspend" }',
  });
  assert.throws(() => new Channel(4, { "buffer size": 8 } as never), {
    message: 'Cannot create channel: unknown option "buffer size" (known: overflow, codec, ' +
      'onUndeliveredElement), received { "buffer size": 8 }',
  });
  // A getter's value is not read: named as a getter, and it never ran.
  let ran = 0;
  const getter = {
    get sigal() {
      ran++;
      return undefined;
    },
  };
  assert.equal(
    ((await refusal(() => delay(1, getter as never))) as Error).message,
    'Cannot delay: unknown option "sigal" (known: signal; did you mean "signal"?), ' +
      "received { sigal: a getter }",
  );
  assert.equal(ran, 0);
  // Only own enumerable string keys: an inherited key, a non-enumerable one and a symbol key are
  // not looked at (README), and the call runs as without them.
  const inherited = Object.create({ capacity: 1, signa: 1 });
  const hidden = Object.defineProperty({}, "signa", { value: 1, enumerable: false });
  const symbolic = { [Symbol("signa")]: 1 };
  for (const o of [inherited, hidden, symbolic]) {
    assert.equal(await delay(0, o), undefined);
    using c = new Channel<number>(4, o);
    assert.deepEqual(c.trySend(1), { state: "ok" });
  }
  // An inherited option is still read, as before: one slot dropping the oldest.
  using buffered = new Channel<number>("buffered", Object.create({ overflow: "drop-oldest" }));
  buffered.trySend(1);
  buffered.trySend(2);
  assert.deepEqual(buffered.tryReceive(), { state: "ok", value: 2 });
  // An index 0, own or inherited, is refused before any key is listed: `for...in` would list
  // every index of a typed array or a String object up front, a key string for each byte or
  // character. An empty array has none, and is looked at as a literal is.
  const indexed: [unknown, string][] = [
    [["signal"], '{ "0": "signal" }'],
    [new Uint8Array(64), '{ "0": 0 }'],
    [new String("signal"), '{ "0": "s" }'],
    [new Proxy(new Uint8Array(64), {}), '{ "0": 0 }'],
    [Object.create(new Uint8Array(64)), '{ "0": an inherited value }'],
  ];
  for (const [o, received] of indexed) {
    assert.equal(
      ((await refusal(() => delay(0, o as never))) as Error).message,
      `Cannot delay: unknown option "0" (known: signal), received ${received}`,
    );
  }
  let listed = 0;
  const counting = new Proxy(new Uint8Array(64), {
    ownKeys: (t) => (listed++, Reflect.ownKeys(t)),
  });
  assert.match(
    ((await refusal(() => delay(0, counting as never))) as Error).message,
    /^Cannot delay: unknown option "0" /,
  );
  assert.equal(listed, 0); // refused before its keys were listed
  assert.equal(await delay(0, [] as never), undefined);
  // A non-empty array without its index 0 is refused before its indices are listed too: before,
  // `for...in` made a key string for each (an array of ten million: 730 MB more, seconds), then
  // named its "1". In a wait's check (signalOf) and the shared one (a channel's creation).
  const holey = new Array(64).fill(1);
  delete holey[0];
  let trapped = 0;
  const watched = new Proxy(holey, { ownKeys: (t) => (trapped++, Reflect.ownKeys(t)) });
  for (const o of [holey, watched]) {
    assert.equal(
      ((await refusal(() => delay(0, o as never))) as Error).message,
      "Cannot delay: options must be an object of named options, not an array, received " +
        "[object Array] of length 64",
    );
    assert.throws(() => new Channel(4, o as never), {
      name: "TypeError",
      message: "Cannot create channel: options must be an object of named options, not an " +
        "array, received [object Array] of length 64",
    });
  }
  assert.equal(trapped, 0);
  // A Proxy of a plain object is looked at through its traps.
  assert.match(
    (await refusal(() => delay(0, new Proxy({ sigal: 1 }, {}) as never)) as Error).message,
    /^Cannot delay: unknown option "sigal" /,
  );
  assert.equal(await delay(0, new Proxy({}, {})), undefined);
  // An object of a class of its own is looked at as a literal is: its own enumerable fields.
  assert.match(
    (await refusal(() =>
      delay(
        0,
        new (class {
          sigal = 1;
        })() as never,
      )
    ) as Error).message,
    /^Cannot delay: unknown option "sigal" /,
  );
  // Several unknown keys: the first is named.
  assert.match(
    (await refusal(() => delay(1, { a: 1, b: 2 } as never)) as Error).message,
    /^Cannot delay: unknown option "a" \(known: signal\), received \{ a: 1 \}$/,
  );
});

Deno.test("a running producer's send checks its option names before it copies the options: no getter run, no index listed", async () => {
  // A send of a running producer merges the task's signal into a copy of the options
  // (produce.ts): the copy ran the getter of an unknown key and listed every index of a typed
  // array (a huge one, gigabytes of keys) before the channel's send refused the key.
  const scope = createScope();
  const produced = produce<number>(scope, (_, task) => untilAborted(task.signal));
  let ran = 0;
  const getter = {
    get sigal() {
      ran++;
      return undefined;
    },
  };
  assert.equal(
    ((await refusal(() => produced.send(1, getter as never))) as Error).message,
    'Cannot send: unknown option "sigal" (known: signal; did you mean "signal"?), ' +
      "received { sigal: a getter }",
  );
  assert.equal(ran, 0);
  let listed = 0;
  const counting = new Proxy(new Uint8Array(64), {
    ownKeys: (t) => (listed++, Reflect.ownKeys(t)),
  });
  assert.match(
    ((await refusal(() => produced.send(1, counting as never))) as Error).message,
    /^Cannot send: unknown option "0" /,
  );
  assert.equal(listed, 0); // refused before its keys were listed
  // With a signal of its own too (the other copies): refused the same, the getter not run.
  const own = Object.defineProperty({ signal: new AbortController().signal }, "sigal", {
    get: () => ran++,
    enumerable: true,
  });
  assert.match(
    ((await refusal(() => produced.send(1, own as never))) as Error).message,
    /^Cannot send: unknown option "sigal" .*received \{ sigal: a getter \}$/,
  );
  assert.equal(ran, 0);
  // A non-empty array without its index 0, as a Channel's send refuses it: before its indices
  // are listed (the producer's inline check missed the array test the shared one has).
  const holey = new Array(64).fill(1);
  delete holey[0];
  let trapped = 0;
  const watched = new Proxy(holey, { ownKeys: (t) => (trapped++, Reflect.ownKeys(t)) });
  assert.equal(
    ((await refusal(() => produced.send(1, watched as never))) as Error).message,
    "Cannot send: options must be an object of named options, not an array, received " +
      "[object Array] of length 64",
  );
  assert.equal(trapped, 0);
  scope.cancel();
  await scope.join();
});

Deno.test("a send given options that inherit many keys lists them once, the shared check never run per inherited key", async () => {
  // signalOf and the producer's send's inline check called the shared check on every key but
  // `signal`, inherited ones too, and it lists every key again: quadratic in their number (an
  // options object made with `Object.create` of an array of 10,000 elements took ~9 s a send).
  // Counted by a prototype that is a Proxy: its `ownKeys` trap runs once per listing.
  const keys: Record<string, number> = {};
  for (let i = 0; i < 100; i++) keys[`k${i}`] = i;
  let listed = 0;
  const proto = new Proxy(keys, { ownKeys: (t) => (listed++, Reflect.ownKeys(t)) });
  const options = Object.create(proto) as { signal?: AbortSignal };
  const ch = new Channel<number>(4);
  await ch.send(1, options); // inherited keys are not refused: sent
  assert.equal(listed, 1);
  listed = 0;
  options.signal = new AbortController().signal;
  await ch.send(2, options);
  assert.equal(listed, 1);
  const scope = createScope();
  const produced = produce<number>(scope, (_, task) => untilAborted(task.signal));
  for (const signal of [options.signal, undefined]) {
    options.signal = signal;
    listed = 0;
    const sent = produced.send(3, options); // checked as it is called
    assert.equal(listed, 1);
    assert.equal(await produced.receive(), 3);
    await sent;
  }
  // An own unknown key after them is still refused, with its name.
  Object.defineProperty(options, "sigal", { value: 1, enumerable: true });
  assert.match(
    ((await refusal(() => ch.send(5, options))) as Error).message,
    /^Cannot send: unknown option "sigal" /,
  );
  assert.match(
    ((await refusal(() => produced.send(5, options))) as Error).message,
    /^Cannot send: unknown option "sigal" /,
  );
  ch.close();
  scope.cancel();
  await scope.join();
});

Deno.test("a producer's send given a signal that is no AbortSignal runs the caller's signal getter once, as a Channel's send does", async () => {
  // It handed such options to the channel's send, which read `signal` again.
  const scope = createScope();
  const produced = produce<number>(scope, (_, task) => untilAborted(task.signal));
  for (const ch of [new Channel<number>(1), produced]) {
    let ran = 0;
    const options = {
      get signal() {
        ran++;
        return 5;
      },
    };
    assert.equal(
      ((await refusal(() => ch.send(1, options as never))) as Error).message,
      "Cannot send: signal must be an AbortSignal, received 5",
    );
    assert.equal(ran, 1);
  }
  scope.cancel();
  await scope.join();
});

Deno.test("an unknown option's key (and its string value) is printed bounded: a huge one is the TypeError, not V8's RangeError", async () => {
  // The message named the key twice, quoted whole: a key of 45 million control characters (six
  // each as JSON) made two strings of 270 million, whose join is longer than V8 allows, and the
  // engine's RangeError "Invalid string length" came instead of the TypeError. Now its first 64
  // characters, an ellipsis and its length.
  const huge = "\u0001".repeat(45_000_000);
  const shown = JSON.stringify(huge.slice(0, 64));
  const options = { [huge]: "v".repeat(100) } as never;
  const expected = (op: string, known: string) =>
    `Cannot ${op}: unknown option ${shown}… (a key of 45000000 characters) (known: ${known}), ` +
    `received { ${shown}… (a key of 45000000 characters): "${"v".repeat(64)}"… ` +
    `(a string of 100 characters) }`;
  // The Channel constructor's inline check, the shared one, a wait's (signalOf).
  assert.throws(() => new Channel(4, options), {
    name: "TypeError",
    message: expected("create channel", "overflow, codec, onUndeliveredElement"),
  });
  await assert.rejects(select((s) => s.onTimeout(0, () => {}), options), {
    name: "TypeError",
    message: expected("select", "signal, unbiased"),
  });
  using ch = new Channel<number>(4);
  await assert.rejects(ch.receive(options), {
    name: "TypeError",
    message: expected("receive", "signal"),
  });
  // Up to 64 characters, exactly as before: quoted whole, named bare if an identifier.
  const edge = "k".repeat(64);
  assert.throws(() => new Channel(4, { [edge]: "w".repeat(64) } as never), {
    message: `Cannot create channel: unknown option "${edge}" (known: overflow, codec, ` +
      `onUndeliveredElement), received { ${edge}: "${"w".repeat(64)}" }`,
  });
  // One more, 65: cut, an identifier named quoted as well (its head is no key of the object).
  const over = `"${"k".repeat(64)}"… (a key of 65 characters)`;
  assert.throws(() => new Channel(4, { [edge + "k"]: "w".repeat(65) } as never), {
    message: `Cannot create channel: unknown option ${over} (known: overflow, codec, ` +
      `onUndeliveredElement), received { ${over}: "${
        "w".repeat(64)
      }"… (a string of 65 characters) }`,
  });
});

Deno.test("a huge string received is described by its head and length: the named TypeError, not V8's RangeError", async () => {
  // `describe` quoted a received string whole: 90 million control characters, six each as JSON,
  // are longer than V8 allows a string, and the engine's RangeError "Invalid string length" came
  // instead of the TypeError (a capacity name, an overflow policy, a delay's ms alike).
  const huge = "\u0001".repeat(90_000_000);
  const head = `${JSON.stringify(huge.slice(0, 64))}… (a string of 90000000 characters)`;
  assert.throws(() => new Channel(huge as never), {
    name: "TypeError",
    message: 'Cannot create channel: capacity must be a number, "rendezvous", "buffered", ' +
      `"conflated" or "unlimited", received ${head}`,
  });
  assert.throws(() => new Channel(1, { overflow: huge as never }), {
    name: "TypeError",
    message: 'Cannot create channel: overflow must be "suspend", "drop-oldest" or "drop-latest", ' +
      `received ${head}`,
  });
  await assert.rejects(delay(huge as never), {
    name: "TypeError",
    message: `Cannot delay: ms must be a number of milliseconds, received ${head}`,
  });
  // Cut before a surrogate pair, never inside one; 4096 characters and fewer (a path) whole.
  const emoji = "x".repeat(63) + "\u{1F600}".repeat(2100);
  assert.throws(() => new Channel(emoji as never), {
    message: /, received "x{63}"… \(a string of 4263 characters\)$/,
  });
  assert.throws(() => new Channel("y".repeat(4096) as never), {
    message: new RegExp(`, received "y{4096}"$`),
  });
  // One more, 4097: its head and length.
  assert.throws(() => new Channel("y".repeat(4097) as never), {
    message: /, received "y{64}"… \(a string of 4097 characters\)$/,
  });
});

Deno.test("a symbol's long description, an object's long tag and a bigint of many digits are described by their size", () => {
  // As a string over 4096 characters is (above): a symbol printed whole (`Symbol(...)`) and an
  // object's tag (`[object ...]`, its own Symbol.toStringTag) with a description or tag of 2**29
  // characters made the message longer than V8 allows, and its RangeError came instead of the
  // TypeError; a bigint printed in decimal took seconds to minutes (~4 s for one of 2**24 bits),
  // blocking the thread for an error message.
  const received = (x: unknown) => {
    try {
      new Channel(x as never);
    } catch (e) {
      const m = /, received (.*)$/s.exec((e as Error).message);
      if (m !== null) return m[1];
      throw e;
    }
    throw new Error("not refused");
  };
  assert.equal(received(Symbol("s".repeat(4096))), `Symbol(${"s".repeat(4096)})`);
  assert.equal(
    received(Symbol("s".repeat(4097))),
    `Symbol(${"s".repeat(64)}…) (a description of 4097 characters)`,
  );
  assert.equal(received(Symbol()), "Symbol()");
  assert.equal(
    received({ [Symbol.toStringTag]: "t".repeat(4096) }),
    `[object ${"t".repeat(4096)}]`,
  );
  assert.equal(
    received({ [Symbol.toStringTag]: "t".repeat(4097) }),
    `[object ${"t".repeat(64)}…] (a tag of 4097 characters)`,
  );
  const most = 10n ** 4094n - 1n; // 4094 digits: with its sign and its n, 4096 characters
  assert.equal(received(most), `${most}n`);
  assert.equal(received(-most), `-${most}n`);
  assert.equal(received(most + 1n), "a bigint of 13600 bits");
  assert.equal(received(-(1n << 1048576n)), "a negative bigint of 1048577 bits");
  // A symbol's description is read by Symbol.prototype's own getter: a caller's never runs.
  const own = Object.getOwnPropertyDescriptor(Symbol.prototype, "description")!;
  Object.defineProperty(Symbol.prototype, "description", {
    get: () => {
      throw new Error("a getter of the caller's is not run");
    },
    configurable: true,
  });
  try {
    assert.equal(
      received(Symbol("s".repeat(4097))),
      `Symbol(${"s".repeat(64)}…) (a description of 4097 characters)`,
    );
  } finally {
    Object.defineProperty(Symbol.prototype, "description", own);
  }
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("a revoked Proxy given as a value (a codec, a scope, a Job, a share() answer, cells, what a scope's launch returns) is the call's named TypeError (a native entry or its cells too), not the engine's bare error; a launch's Job whose read throws still ends the channel and task it started", async () => {
  // Before, each let "Cannot perform 'get' on a proxy that has been revoked" (or 'IsArray') out:
  // the codec check read `codec.name`, produce and actor read `scope.launch`, select's onJoin and
  // onAwait read the job's members, Channel.from read `kind`, cells ran `Array.isArray`.
  const revoked = () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    return proxy as never;
  };
  const scope = createScope();
  const wrong: string[] = [];
  const rows: [string, string, () => unknown][] = [
    ["create channel", "codec must be one of", () => new Channel(1, { codec: revoked() })],
    ["produce", "scope must be a CoroutineScope", () => produce(revoked(), () => {})],
    ["start actor", "scope must be a CoroutineScope", () => actor(revoked(), () => {})],
    ["add onJoin clause", "expected a Job", () => select((s) => s.onJoin(revoked(), () => 1))],
    [
      "add onAwait clause",
      "expected a Deferred",
      () => select((s) => s.onAwait(revoked(), () => 1)),
    ],
    ["open shared channel", "expected the object", () => Channel.from(revoked())],
    ["allocate cells", "expected a count or an array", () => runtime().cells(revoked())],
    [
      "allocate cells",
      "expected a count or an array",
      () => {
        const { proxy, revoke } = Proxy.revocable(() => {}, {}); // typeof: "function"
        revoke();
        return runtime().cells(proxy as never);
      },
    ],
    [
      "spawn coroutine",
      '"sleeper" needs a BigUint64Array',
      () => runtime().spawn("sleeper", revoked()),
    ],
    ["spawn coroutine", "entry must be", () => runtime().spawn(revoked(), runtime().cells(3))],
    [
      "spawn coroutine",
      "arg must be a BigUint64Array or a pointer",
      // A NativeFunction entry (never run: its arg is refused first).
      () => runtime().spawn({ pointer: Deno.UnsafePointer.create(1n) } as never, revoked()),
    ],
    [
      "launch native coroutine",
      '"sleeper" needs a BigUint64Array',
      () => nativeScope(scope).launch("sleeper", revoked()),
    ],
    [
      "launch native coroutine",
      "entry must be",
      () => nativeScope(scope).launch(revoked(), runtime().cells(3)),
    ],
    [
      "produce",
      "scope.launch must return a Job",
      () => produce({ launch: () => revoked() } as never, () => {}),
    ],
  ];
  for (const [op, why, call] of rows) {
    const thrown = await refusal(call);
    if (!(thrown instanceof TypeError) || !thrown.message.startsWith(`Cannot ${op}: ${why}`)) {
      wrong.push(`${op}: ${thrown}`);
    }
  }
  assert.deepEqual(wrong, []);
  // A scope of the caller's whose launch starts the task and returns what cannot be read (a
  // revoked Proxy, a getter of the caller's that throws): the call fails, and the producer or
  // actor it started is cancelled, its channel released. Before, the throw skipped that cleanup:
  // each block below waited for good, the scope's join with it.
  const mine = new Error("the caller's getter");
  const unreadable = [revoked, () => ({
    get invokeOnCompletion() {
      throw mine;
    },
  })];
  const started: { isCompleted: boolean; isCancelled: boolean }[] = [];
  const failed: string[] = [];
  const theirs = (returns: () => unknown) => ({
    launch: (block: never, options?: never) => {
      started.push(scope.launch(block, options));
      return returns();
    },
  });
  for (const returns of unreadable) {
    for (const make of ["produce", "actor"] as const) {
      const thrown = await refusal(() =>
        make === "produce"
          ? produce(theirs(returns) as never, (_, task) => untilAborted(task.signal))
          : actor(theirs(returns) as never, async (mailbox) => {
            for await (const _ of mailbox) { /* never sent to */ }
          })
      );
      if (returns === unreadable[1] ? thrown !== mine : !(thrown instanceof TypeError)) {
        failed.push(`${make}: ${thrown}`);
      }
    }
  }
  assert.deepEqual(failed, []);
  assert.equal(started.length, 4);
  await until(() => started.every((j) => j.isCompleted), "the started tasks to end");
  assert.ok(started.every((j) => j.isCancelled));
  scope.cancel();
  await scope.join();
});

Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);

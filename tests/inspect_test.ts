// How kcoro's objects print (console.log, Deno.inspect): each public class prints its name and a
// few facts, not the `_notCloneable` field that makes structured cloning fail with advice (which
// must stay an own enumerable field), and prints without throwing once disposed, destroyed or
// after closeLibrary(). Before, Deno printed the fields: `Coroutine { _notCloneable:
// Symbol("Cannot clone a job, ..."), context: Context { _notCloneable: ... } }`.
import assert from "node:assert/strict";
import {
  actor,
  Channel,
  closeLibrary,
  codecs,
  CompletableDeferred,
  Context,
  type CoroutineScope,
  coroutineScope,
  createContextKey,
  createScope,
  Deadline,
  Library,
  library,
  LibraryClosedError,
  NativeCoroutine,
  NativeScope,
  nativeScope,
  produce,
  Runtime,
  runtime,
  select,
  supervisorScope,
  withTimeout,
} from "../mod.ts";
import { shutdownScheduler, withIndexAccessors } from "./support.ts";
import * as kcoro from "../mod.ts";
import { cutQuoted, inspectAs, notA, showByHand, stringOf } from "../src/inspect.ts";

/** `X { ...facts }` as `inspectAs` prints it without Deno's inspect where Deno's throws. */
function byHand(facts: Record<string, unknown>): string {
  return `X { ${Object.entries(facts).map(([k, v]) => `${k}: ${showByHand(v)}`).join(", ")} }`;
}

type Row = [label: string, value: unknown, name: string, facts: RegExp, tag?: string];

/**
 * The top-level `key: value` entries of a one-line print `Name { a: 1, b: Codec { name: "x" } }`
 * (split at the commas outside braces, brackets and strings).
 */
function entries(plain: string, name: string): [string, string][] {
  const body = plain.slice(`${name} { `.length, -" }".length);
  const out: [string, string][] = [];
  let depth = 0, quoted = false, start = 0;
  for (let i = 0; i <= body.length; i++) {
    const c = body[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "{" || c === "[" && body[i + 1] !== "[" && body[i - 1] !== "[") depth++;
    else if (c === "}" || c === "]" && body[i + 1] !== "]" && body[i - 1] !== "]") depth--;
    else if (depth === 0 && (i === body.length || body.startsWith(", ", i))) {
      const part = body.slice(start, i);
      const colon = part.indexOf(": ");
      out.push([part.slice(0, colon), part.slice(colon + 2)]);
      start = i + 2;
    }
  }
  return out;
}

/**
 * Each key a print shows is a property of the object, printed as `Deno.inspect` prints what the
 * property reads, or `[[name]]`, which no property read can name. A Runtime printed `running`
 * (its property is `isRunning`), a Channel `closed`, `drained` and `native`, none of them its own.
 */
function checkKeys(label: string, value: unknown, plain: string, name: string): void {
  if (plain === `${name} {}`) return;
  for (const [key, printed] of entries(plain, name)) {
    if (/^\[\[\w+\]\]$/.test(key)) continue;
    assert.ok(
      Reflect.has(value as object, key),
      `${label}: printed key ${key} is no property of it: ${plain}`,
    );
    let got: unknown;
    try {
      got = Reflect.get(value as object, key);
    } catch (e) {
      // After closeLibrary() a read throws (LibraryClosedError), where the print never does.
      assert.ok(e instanceof LibraryClosedError, `${label}: reading ${key} threw ${e}`);
      continue;
    }
    const read = Deno.inspect(got).replace(/\s+/g, " ");
    assert.equal(printed, read, `${label}: printed ${key} is not what it reads: ${plain}`);
  }
}

/** Checks each row's print (plain and with colors) and that its advice field is still there. */
function check(rows: Row[], when: string): void {
  for (const [label, value, name, facts, tag = name] of rows) {
    for (const colors of [false, true]) {
      const text = Deno.inspect(value, { colors });
      // One line (a long path breaks the print over lines), without the color codes.
      // deno-lint-ignore no-control-regex -- the escape that starts a color code
      const plain = text.replace(/\x1b\[[0-9;]*m/g, "").replace(/\s+/g, " ");
      assert.ok(plain.startsWith(`${name} {`), `${when}, ${label}: ${plain}`);
      assert.match(plain, facts, `${when}, ${label}`);
      assert.ok(!plain.includes("_notCloneable"), `${when}, ${label}: ${plain}`);
      assert.ok(!plain.includes("Cannot clone"), `${when}, ${label}: ${plain}`);
      if (!colors) checkKeys(`${when}, ${label}`, value, plain, name);
    }
    // Nested in a plain object (console.log({ job })) too.
    assert.match(Deno.inspect({ value }), new RegExp(`value: ${name} \\{`), `${when}, ${label}`);
    // Its Symbol.toStringTag is the same name (a CompletableDeferred's is Job's): String() and
    // template literals say it (a job, context, key or actor through its own toString(),
    // `Job(active)`), not "[object Object]".
    assert.equal(Object.prototype.toString.call(value), `[object ${tag}]`, `${when}, ${label}`);
    assert.ok(String(value).includes(tag), `${when}, ${label}: ${String(value)}`);
    assert.ok(`${value}`.includes(tag), `${when}, ${label}: ${value}`);
    // The advice stays an own enumerable field: structured cloning still refuses with it.
    const own = Object.getOwnPropertyDescriptor(value, "_notCloneable");
    assert.ok(own?.enumerable && typeof own.value === "symbol", `${when}, ${label}`);
  }
}

Deno.test("String() and template literals of kcoro objects name their class, not [object Object]; an object made from a prototype is no instance and stays [object Object]", async () => {
  using ch = new Channel<number>(1);
  assert.equal(String(ch), "[object Channel]");
  assert.equal(`${runtime()}`, "[object Runtime]");
  await using ns = NativeScope.create();
  assert.equal(String(ns), "[object NativeScope]");
  assert.equal(String(library()), "[object Library]");
  // An error message naming a wrong argument by its class says which kcoro object it got (it
  // gave the tag, "received [object Channel]").
  assert.throws(
    () => NativeScope.create({ parent: ch as never }),
    /parent must be a NativeScope, received a Channel$/,
  );
  // Each class with a tag, by its class (as their tag getters' comments say).
  for (
    const [x, said] of [[ns, "a NativeScope"], [runtime(), "a Runtime"], [library(), "a Library"]]
  ) {
    assert.throws(() => new Channel(x as never), {
      name: "TypeError",
      message: new RegExp(`^Cannot create channel: capacity must be .*, received ${said}$`),
    }, String(said));
  }
  // A codec or a select builder where something else belongs: named as such, not [object Object].
  assert.equal(String(codecs.f64), "[object Codec]");
  assert.throws(
    () => new Channel(codecs.f64 as never),
    /capacity must be a number, .*, received a Codec$/,
  );
  await select((s) => {
    assert.equal(String(s), "[object SelectBuilder]");
    assert.throws(
      () => s.onReceive(s as never, () => {}),
      /expected a Channel, received a SelectBuilder$/,
    );
    s.onTimeout(0, () => {});
  });
  // Built from a prototype, not constructed: no tag, as it is none of them.
  const key = createContextKey<string>("user");
  let builder: unknown;
  await select((s) => {
    builder = s;
    s.onTimeout(0, () => {});
  });
  for (
    const proto of [
      Channel.prototype,
      NativeScope.prototype,
      NativeCoroutine.prototype,
      CompletableDeferred.prototype,
      Context.prototype,
      Object.getPrototypeOf(key),
      Object.getPrototypeOf(runtime()),
      Object.getPrototypeOf(library()),
      Object.getPrototypeOf(builder),
    ]
  ) {
    const fake = Object.create(proto);
    assert.equal(Object.prototype.toString.call(fake), "[object Object]", proto.constructor.name);
  }
  await coroutineScope((scope) => {
    const a = actor<number>(scope, async (mailbox) => {
      for await (const _ of mailbox);
    });
    assert.equal(String(a), "Actor(active)");
    assert.equal(Object.prototype.toString.call(a), "[object Actor]");
    assert.equal(
      Object.prototype.toString.call(Object.create(Object.getPrototypeOf(a))),
      "[object Object]",
    );
    a.close();
  });
});

Deno.test("each public kcoro object prints its class name and facts, not its _notCloneable field, also disposed and after closeLibrary()", async () => {
  const key = createContextKey<string>("user");
  const rows: Row[] = [
    ["Context.empty", Context.empty, "Context", /\[\[keys\]\]: \[\]/],
    [
      "a Context with a value",
      Context.empty.with(key, "ada"),
      "Context",
      /\[\[keys\]\]: \[ "user" \]/,
    ],
    ["a context key", key, "ContextKey", /name: "user"/],
    ["Deadline", Deadline, "ContextKey", /name: "deadline"/],
    // It printed `Job { ... }`: its own class name now (its tag stays Job's).
    [
      "CompletableDeferred",
      new CompletableDeferred<number>(),
      "CompletableDeferred",
      /^CompletableDeferred \{ state: "active", \[\[children\]\]: 0 \}$/,
      "Job",
    ],
    ["library()", library(), "Library", /abiVersion: \d+, isOpen: true/],
    ["runtime()", runtime(), "Runtime", /workers: \d+, isRunning: true/],
  ];
  // A codec and a select builder print as such and carry the tag too (they said [object Object]).
  for (const [name, codec] of Object.entries(codecs)) {
    rows.push([`codecs.${name}`, codec, "Codec", new RegExp(`name: "${name}"`)]);
  }
  await select((s) => {
    s.onTimeout(0, () => {});
    rows.push(["a select builder", s, "SelectBuilder", /\[\[clauses\]\]: 1/]);
  });
  const co = NativeCoroutine.create("fib", { arg: 3 });
  rows.push(["NativeCoroutine", co, "NativeCoroutine", /handle: \d+, state: "\w+"/]);
  const ns = NativeScope.create();
  rows.push(["NativeScope.create()", ns, "NativeScope", /\[\[owned\]\]: false, live: 0/]);
  const free = createScope();
  // A scope, an `async`'s deferred printed `Job { ... }` too: each by its kind now, the name
  // error messages give it (their tag stays Job's).
  rows.push([
    "createScope()",
    free,
    "CoroutineScope",
    /^CoroutineScope \{ state: "active", \[\[children\]\]: 0 \}$/,
    "Job",
  ]);
  const local = new Channel<number>(4);
  rows.push([
    "a local Channel",
    local,
    "Channel",
    /\[\[capacity\]\]: 4, \[\[native\]\]: false, codec: Codec \{ name: "\w+" \}, isClosedForSend: false, isClosedForReceive: false \}$/,
  ]);
  const shared = new Channel<number>(2);
  shared.share();
  const copy = Channel.from<number>(shared.share());
  rows.push([
    "a shared Channel",
    shared,
    "Channel",
    /\[\[native\]\]: true, codec: .*, isClosedForSend: false/,
  ]);
  rows.push(["its Channel.from copy", copy, "Channel", /\[\[native\]\]: true/]);
  const closed = new Channel<number>(1);
  closed.close();
  rows.push([
    "a closed Channel",
    closed,
    "Channel",
    /isClosedForSend: true, isClosedForReceive: true/,
  ]);
  await coroutineScope(async (scope) => {
    const job = scope.launch(() => Promise.resolve(), { lazy: true });
    rows.push([
      "coroutineScope's scope",
      scope,
      "CoroutineScope",
      /state: "active", \[\[children\]\]: \d/,
      "Job",
    ]);
    rows.push(["its context", scope.context, "Context", /\[\[keys\]\]: /]);
    rows.push(["launch's lazy job", job, "Job", /state: "new"/]);
    rows.push([
      "async's deferred",
      scope.async(() => Promise.resolve(1)),
      "Deferred",
      /^Deferred \{ state: /,
      "Job",
    ]);
    rows.push([
      "produce's channel",
      produce<number>(scope, () => {}),
      "Channel",
      /\[\[capacity\]\]: /,
    ]);
    const a = actor<number>(scope, async (mailbox) => {
      for await (const _ of mailbox);
    });
    rows.push(["actor", a, "Actor", /\[\[state\]\]: "active"/]);
    rows.push(["nativeScope(scope)", nativeScope(scope), "NativeScope", /\[\[owned\]\]: true/]);
    await supervisorScope((s) =>
      rows.push(["supervisorScope's scope", s, "CoroutineScope", /state: /, "Job"])
    );
    await withTimeout(60_000, (s) => {
      rows.push(["its timed context", s.context, "Context", /\[\[keys\]\]: \[ "deadline" \]/]);
    });
    check(rows, "live");
    a.close();
    job.cancel();
  });
  assert.ok(rows.length >= 20, `rows: ${rows.length}`);

  // Disposed or destroyed: each prints that, with no native read (which would throw).
  const disposed: Row[] = [
    ["a disposed Channel", local, "Channel", /^Channel \{ \[\[disposed\]\]: true \}$/],
    ["a disposed shared Channel", shared, "Channel", /^Channel \{ \[\[disposed\]\]: true \}$/],
    [
      "a destroyed NativeCoroutine",
      co,
      "NativeCoroutine",
      /^NativeCoroutine \{ destroyed: true \}$/,
    ],
    ["a disposed NativeScope", ns, "NativeScope", /^NativeScope \{ \[\[destroyed\]\]: true \}$/],
  ];
  local[Symbol.dispose]();
  shared[Symbol.dispose]();
  co.destroy();
  await ns[Symbol.asyncDispose]();
  await free[Symbol.asyncDispose]();
  check(disposed, "disposed");

  // After closeLibrary(): the objects still print, saying so where it matters.
  const rt = runtime();
  const lib = library();
  using late = new Channel<number>(1);
  late.share(); // a native channel, whose status is a native read
  using lateLocal = new Channel<number>(1);
  lateLocal.trySend(1); // used, never escaped
  using lateCo = NativeCoroutine.create("fib", { arg: 3 });
  await using lateScope = NativeScope.create();
  closeLibrary();
  check([
    ["a closed Library", lib, "Library", /isOpen: false/],
    ["its Runtime", rt, "Runtime", /isRunning: false/],
    ["a native Channel", late, "Channel", /\[\[libraryClosed\]\]: true/],
    // It printed `closed: false`, though every call on it throws LibraryClosedError.
    [
      "a local Channel",
      lateLocal,
      "Channel",
      /\[\[native\]\]: false, codec: .*, \[\[libraryClosed\]\]: true \}$/,
    ],
    ["a Channel.from copy", copy, "Channel", /\[\[capacity\]\]: /],
    ["a NativeCoroutine", lateCo, "NativeCoroutine", /\[\[libraryClosed\]\]: true/],
    ["a NativeScope", lateScope, "NativeScope", /\[\[libraryClosed\]\]: true/],
    ["a finished scope", free, "CoroutineScope", /state: "(completed|cancelled)"/, "Job"],
  ], "after closeLibrary()");
  copy[Symbol.dispose]();
});

Deno.test("a kcoro class's Symbol.toStringTag getter answers undefined for any receiver but an instance, a primitive too, without throwing", async () => {
  // Reflect.get(Channel.prototype, Symbol.toStringTag, 1) threw the engine's TypeError ("Cannot
  // use 'in' operator to search for '#disposed' in 1"), each class's getter likewise.
  const tagOf = (proto: object, receiver: unknown) =>
    Reflect.get(proto, Symbol.toStringTag, receiver);
  using ch = new Channel<number>(1);
  using co = NativeCoroutine.create("fib", { arg: 3 });
  await using ns = NativeScope.create();
  const free = createScope();
  const key = createContextKey<string>("user");
  await coroutineScope(async (scope) => {
    let builder: object | undefined;
    await select((s) => {
      builder = s;
      s.onTimeout(0, () => {});
    });
    const a = actor<number>(scope, async (m) => {
      for await (const _ of m);
    });
    // [an instance, the class's prototype, its tag]
    const rows: [object, object, string][] = [
      [ch, Channel.prototype, "Channel"],
      [co, NativeCoroutine.prototype, "NativeCoroutine"],
      [ns, NativeScope.prototype, "NativeScope"],
      [new CompletableDeferred<number>(), CompletableDeferred.prototype, "Job"],
      [free, Object.getPrototypeOf(free), "Job"],
      [scope, Object.getPrototypeOf(scope), "Job"],
      [Context.empty, Context.prototype, "Context"],
      [key, Object.getPrototypeOf(key), "ContextKey"],
      [runtime(), Runtime.prototype, "Runtime"],
      [library(), Library.prototype, "Library"],
      [builder!, Object.getPrototypeOf(builder), "SelectBuilder"],
      [a, Object.getPrototypeOf(a), "Actor"],
    ];
    // Every exported class whose instances carry a tag has a row.
    const protos = new Set(rows.map((r) => r[1]));
    for (const [name, v] of Object.entries(kcoro)) {
      if (typeof v !== "function" || typeof v.prototype !== "object" || v.prototype === null) {
        continue;
      }
      if (!(Symbol.toStringTag in v.prototype) || v.prototype instanceof Error) continue;
      assert.ok(protos.has(v.prototype), `exported ${name} has a tag getter and no row`);
    }
    const receivers = [1, 0, "c", "", true, 1n, Symbol("s"), null, undefined, {}, Object(1)];
    for (const [instance, proto, name] of rows) {
      assert.equal(tagOf(proto, instance), name, name);
      for (const [i, r] of receivers.entries()) {
        assert.equal(tagOf(proto, r), undefined, `${name}, receiver ${i}`);
      }
      assert.equal(tagOf(proto, Object.create(proto)), undefined, name);
      // Another class's instance is no instance of this one.
      const other = rows.find((o) => o[2] !== name)![0];
      assert.equal(tagOf(proto, other), undefined, `${name}, another class's instance`);
    }
    a.close();
  });
  await free[Symbol.asyncDispose]();
});

Deno.test("an object derived from a codec (Object.create, a Proxy, the hook called on another value) prints Codec <not a Codec> and has no Codec tag: no channel takes it as a codec", () => {
  // A codec's hook was a closure over the codec and its tag a fixed value, both inherited:
  // Deno.inspect(Object.create(codecs.f64)) printed `Codec { name: "f64" }`, and a channel
  // refusing it as a codec said it received `[object Codec]`.
  const all = Object.entries(codecs);
  for (const [name, codec] of all) {
    const hook = (codec as unknown as Record<symbol, (this: unknown, ...a: unknown[]) => unknown>)[
      Symbol.for("Deno.customInspect")
    ];
    // The codec itself prints and is tagged as before.
    assert.equal(Deno.inspect(codec), `Codec { name: "${name}" }`);
    assert.equal(Object.prototype.toString.call(codec), "[object Codec]");
    const derived = Object.create(codec);
    assert.equal(Deno.inspect(derived), "Codec <not a Codec>", name);
    assert.equal(Deno.inspect({ x: derived }), "{ x: Codec <not a Codec> }", name);
    const proxy = new Proxy(codec, {});
    for (const fake of [derived, proxy]) {
      assert.equal(Object.prototype.toString.call(fake), "[object Object]", name);
      assert.throws(
        () => new Channel(1, { codec: fake }),
        /codec must be one of codecs\.default, .*, received \[object Object\]$/,
      );
    }
    // Called on another codec, the hook prints that one, as a class's method prints the
    // instance it is called on.
    const [otherName, other] = all.find(([n]) => n !== name)!;
    assert.equal(hook.call(other, Deno.inspect, {}), `Codec { name: "${otherName}" }`);
    assert.equal(Reflect.get(codec, Symbol.toStringTag, other), "Codec");
    const receivers = [derived, proxy, {}, 1, "c", Symbol(), null, undefined];
    for (const [i, r] of receivers.entries()) {
      assert.equal(hook.call(r, Deno.inspect, {}), "Codec <not a Codec>", `${name}, ${i}`);
      assert.equal(Reflect.get(codec, Symbol.toStringTag, r), undefined, `${name}, ${i}`);
    }
  }
});

Deno.test("a hook called without Deno's inspect function prints each fact as Deno.inspect does, a channel's codec too", () => {
  using ch = new Channel<number>(1);
  const hook = (ch as unknown as Record<symbol, (this: unknown, ...a: unknown[]) => string>)[
    Symbol.for("Deno.customInspect")
  ];
  // Its codec printed as JSON before: `codec: {"name":"default","elemSize":32,"zeroCopy":true}`.
  assert.equal(
    hook.call(ch, undefined, {}),
    'Channel { [[capacity]]: 1, [[native]]: false, codec: Codec { name: "default" }, ' +
      "isClosedForSend: false, isClosedForReceive: false }",
  );
  assert.equal(hook.call(ch, undefined, {}), hook.call(ch, Deno.inspect, {}));
  assert.equal(
    (runtime() as unknown as Record<symbol, (...a: unknown[]) => string>)[
      Symbol.for("Deno.customInspect")
    ](undefined, {}).replace(/workers: \d+/, "workers: N"),
    "Runtime { workers: N, isRunning: true }",
  );
});

Deno.test("inspectAs without Deno's inspect prints as Deno.inspect does what it printed by hand unlike Deno: a [Tag] after a function, a class's static properties, a name getter's name, a Proxy of a class, NaN and -0 inside an object", () => {
  // Before, the plain path (a hook called with no inspect function of the caller's) printed
  // JSON and a few kinds by hand: each row below printed otherwise than Deno prints it.
  function tagged() {}
  Object.defineProperty(tagged, Symbol.toStringTag, { value: "Tg" });
  class TaggedClass {
    static get [Symbol.toStringTag]() {
      return "T2";
    }
  }
  class Statics {
    static x = 1;
    static y = "a";
  }
  const withProps = Object.assign(function withProps() {}, { k: 2 });
  const gotName = Object.defineProperty(function f() {}, "name", { get: () => "fromGetter" });
  class Proxied {}
  const rows: [string, unknown, string][] = [
    ["a function's [Tag]", tagged, "[Function: tagged] [Tg]"],
    ["a class's [Tag]", TaggedClass, "[class TaggedClass [T2]]"],
    ["a class's static properties", Statics, '[class Statics] { x: 1, y: "a" }'],
    ["a function's own properties", withProps, "[Function: withProps] { k: 2 }"],
    ["a name getter's name", gotName, "[Function: fromGetter]"],
    ["a Proxy of a class", new Proxy(Proxied, {}), "[class Proxied]"],
    [
      "NaN and -0 in an object",
      { a: NaN, b: -0, c: [Infinity] },
      "{ a: NaN, b: -0, c: [ Infinity ] }",
    ],
  ];
  for (const [label, value, printed] of rows) {
    assert.equal(inspectAs("X", { v: value }, undefined, {}), `X { v: ${printed} }`, label);
    assert.equal(
      inspectAs("X", { v: value }, undefined, {}),
      inspectAs("X", { v: value }, Deno.inspect, {}),
      label,
    );
  }
});

Deno.test("inspectAs without Deno's inspect never throws and prints what Deno's inspect throws on by hand, and an output over 4096 characters by its head and length", () => {
  // A name getter that throws: Deno.inspect throws it, the plain path prints by hand.
  const throwing = Object.defineProperty(function f() {}, "name", {
    get: () => {
      throw new Error("a getter of the caller's");
    },
  });
  assert.throws(() => Deno.inspect(throwing), /a getter of the caller's/);
  assert.equal(inspectAs("X", { f: throwing }, undefined, {}), "X { f: [Function (anonymous)] }");
  // Deno prints a function's name whole: one of 2**20 characters, a fact as long, is cut short.
  const long = Object.defineProperty(function f() {}, "name", { value: "y".repeat(2 ** 20) });
  assert.equal(
    inspectAs("X", { f: long }, undefined, {}),
    `X { f: [Function: ${"y".repeat(53)}… (a print of 1048588 characters) }`,
  );
  // Past the engine's string limit (Deno's inspect throws a RangeError): by hand, its name cut.
  const huge = Object.defineProperty(function f() {}, "name", { value: "z".repeat(2 ** 29 - 24) });
  assert.equal(
    inspectAs("X", { f: huge }, undefined, {}),
    `X { f: [Function: ${"z".repeat(64)}… (a name of ${2 ** 29 - 24} characters)] }`,
  );
});

Deno.test("by hand (where Deno's inspect throws), a fact prints what JSON has no text for as Deno does (a function as [Function: name], not its source; a bigint as 1n) and what JSON refuses by its tag, never throwing", () => {
  // No public object has such a fact today (a channel's codec is JSON-safe): the hook's JSON
  // path must still never throw out of a print. Before c46bd06 a BigInt or a cycle threw.
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.equal(
    byHand({ n: 1n, c: cyclic, u: undefined, s: "a", y: Symbol("q") }),
    'X { n: 1n, c: [object Object], u: undefined, s: "a", y: Symbol(q) }',
  );
  // A function printed its whole source (`String(v)`), which JSON gives no text for; a bigint in
  // an object, which JSON refuses, still prints the object's tag.
  function named() {
    return "secret source";
  }
  const nameless = [() => 1][0];
  const getterName = Object.defineProperty(function f() {}, "name", {
    get: () => {
      throw new Error("a getter of the caller's is not run");
    },
  });
  assert.equal(
    byHand({ f: named, a: nameless, c: class Named {}, g: getterName, o: { n: 1n } }),
    "X { f: [Function: named], a: [Function (anonymous)], c: [class Named], " +
      "g: [Function (anonymous)], o: [object Object] }",
  );
  // Each kind by its name, as Deno prints them.
  const kinds = {
    f: named,
    a: async function af() {},
    g: function* gf() {},
    ag: async function* agf() {},
    b: named.bind(null),
    p: new Proxy(named, {}),
  };
  assert.equal(byHand(kinds), inspectAs("X", kinds, Deno.inspect, {}));
  assert.equal(
    byHand(kinds),
    "X { f: [Function: named], a: [AsyncFunction: af], g: [GeneratorFunction: gf], " +
      "ag: [AsyncGeneratorFunction: agf], b: [Function: bound named], p: [Function: named] }",
  );
  // With Deno's inspect, each fact by it.
  assert.equal(inspectAs("X", { n: 1n }, Deno.inspect, {}), "X { n: 1n }");
});

Deno.test("by hand (where Deno's inspect throws), a fact prints a subclass, a null-prototype function and NaN, the infinities and -0 as Deno does", () => {
  // Before, a class that extends another printed `[class B]`, a function whose prototype is
  // null `[Function: f]` (an async one `[Function: af]`, its kind read from its prototype), and
  // the numbers JSON has no text for `null` (NaN, Infinity) and `0` (-0).
  class Base {}
  class Derived extends Base {}
  const nameless = [class extends Derived {}][0];
  class Orphan {}
  Object.setPrototypeOf(Orphan, null);
  const bare = Object.setPrototypeOf(function bare() {}, null);
  const anonymous = Object.setPrototypeOf([function () {}][0], null);
  const bareAsync = Object.setPrototypeOf(async function ba() {}, null);
  const facts = {
    d: Derived,
    n: nameless,
    o: Orphan,
    b: bare,
    a: anonymous,
    ba: bareAsync,
    nan: NaN,
    inf: Infinity,
    ninf: -Infinity,
    nz: -0,
    z: 0,
  };
  assert.equal(
    byHand(facts),
    "X { d: [class Derived extends Base], n: [class (anonymous) extends Derived], " +
      "o: [class Orphan extends [null prototype]], b: [Function (null prototype): bare], " +
      "a: [Function (null prototype) (anonymous)], ba: [AsyncFunction (null prototype): ba], " +
      "nan: NaN, inf: Infinity, ninf: -Infinity, nz: -0, z: 0 }",
  );
  assert.equal(byHand(facts), inspectAs("X", facts, Deno.inspect, {}));
  // The superclass's name is read as the class's is: an own data property only, no getter run.
  const hidden = Object.defineProperty(class {}, "name", {
    get: () => {
      throw new Error("a getter of the caller's is not run");
    },
  });
  assert.equal(
    byHand({ c: class Sub extends hidden {} }),
    "X { c: [class Sub] }",
  );
});

Deno.test("by hand (where Deno's inspect throws), a fact names what made a function when its prototype is of another kind, as Deno does", () => {
  // Its kind is the engine's, its prototype chain may say another (a bound function's prototype
  // is its target's): Deno prints the name of the constructor found up the chain after the tag.
  // Before, a bound async function printed `[Function: bound af]` (and, before that,
  // `[AsyncFunction: bound af]`), where Deno prints `[Function: bound af] AsyncFunction`.
  const AsyncFunctionPrototype = Object.getPrototypeOf(async function () {});
  class Made {}
  const facts = {
    ba: (async function af() {}).bind(null),
    bg: (function* g() {}).bind(null),
    fa: Object.setPrototypeOf(function f() {}, AsyncFunctionPrototype),
    af: Object.setPrototypeOf(async function a() {}, Function.prototype),
    m: Object.setPrototypeOf(function m() {}, Made.prototype),
    c: Object.setPrototypeOf(class C {}, async function sup() {}),
    b: (function plain() {}).bind(null),
  };
  assert.equal(
    byHand(facts),
    "X { ba: [Function: bound af] AsyncFunction, bg: [Function: bound g] GeneratorFunction, " +
      "fa: [Function: f] AsyncFunction, af: [AsyncFunction: a] Function, m: [Function: m] Made, " +
      "c: [class C [AsyncFunction] extends sup], b: [Function: bound plain] }",
  );
  assert.equal(byHand(facts), inspectAs("X", facts, Deno.inspect, {}));
  // The constructor is read by own data properties only: a getter of the caller's is not run.
  const trap = {
    get constructor(): never {
      throw new Error("a getter of the caller's is not run");
    },
  };
  Object.setPrototypeOf(trap, AsyncFunctionPrototype);
  assert.equal(
    byHand({ g: Object.setPrototypeOf(function g() {}, trap) }),
    "X { g: [Function: g] AsyncFunction }",
  );
});

Deno.test("by hand (where Deno's inspect throws), a superclass's or a constructor's name over 4096 characters prints by its head and length, and an object whose tag getter throws as [object], never throwing", () => {
  // A class whose superclass's name (or a function whose constructor's name, up its prototype
  // chain) is 2**20 characters printed it whole, a fact as long; an object whose inspect hook,
  // `toJSON` and `Symbol.toStringTag` getters throw threw the last out of the print (the
  // fallback `Object.prototype.toString` reads that tag).
  const n = 2 ** 20;
  const cut = (c: string) => `${c.repeat(64)}… (a name of ${n} characters)`;
  const base = Object.defineProperty(class {}, "name", { value: "b".repeat(n) });
  function Made() {}
  Object.defineProperty(Made, "name", { value: "m".repeat(n) });
  const made = Object.setPrototypeOf(function m() {}, Made.prototype);
  assert.equal(
    byHand({ c: class Sub extends base {}, m: made }),
    `X { c: [class Sub extends ${cut("b")}], m: [Function: m] ${cut("m")} }`,
  );
  const boom = (): never => {
    throw new Error("a getter of the caller's");
  };
  const throwing = {
    [Symbol.for("Deno.customInspect")]: boom,
    get toJSON() {
      return boom();
    },
    get [Symbol.toStringTag]() {
      return boom();
    },
  };
  assert.throws(() => Deno.inspect(throwing), /a getter of the caller's/);
  assert.equal(inspectAs("X", { o: throwing }, undefined, {}), "X { o: [object] }");
});

Deno.test("a job prints the count of its unfinished children", async () => {
  await coroutineScope((scope) => {
    const gate = Promise.withResolvers<void>();
    scope.launch(() => gate.promise);
    scope.launch(() => {}, { lazy: true });
    scope.launch(() => {}); // finished at once: not counted
    assert.match(
      Deno.inspect(scope),
      /^CoroutineScope \{ state: "active", \[\[children\]\]: 2 \}$/,
    );
    gate.resolve();
    scope.cancel(); // the lazy one
  }).catch(() => {});
  const free = createScope();
  assert.match(Deno.inspect(free), /\[\[children\]\]: 0/);
  await free[Symbol.asyncDispose]();
});

Deno.test("inspecting anything but an instance through a kcoro class's inspect hook never throws: it prints <ClassName> <not a ClassName>", async () => {
  // Deno.inspect(Object.create(Channel.prototype)) threw the engine's "Cannot read private member
  // #disposed from an object whose class did not declare it" out of console.log (Job's, Runtime's,
  // Library's, NativeCoroutine's and NativeScope's hooks likewise; SelectBuilder's and Actor's
  // "Cannot read properties of undefined"), and ContextKey's printed `ContextKey { name: undefined }`.
  const hookOf = (x: object) =>
    (x as Record<symbol, (this: unknown, ...a: unknown[]) => unknown>)[
      Symbol.for("Deno.customInspect")
    ];
  using ch = new Channel<number>(1);
  using co = NativeCoroutine.create("fib", { arg: 3 });
  await using ns = NativeScope.create();
  const free = createScope();
  await coroutineScope(async (scope) => {
    let builder: object | undefined;
    await select((s) => {
      builder = s;
      s.onTimeout(0, () => {});
    });
    const started = Promise.withResolvers<object>();
    const a = actor<number>(scope, async (m) => {
      started.resolve(m);
      for await (const _ of m);
    });
    const mailbox = await started.promise; // a Channel too (a subclass)
    const launched = scope.launch(() => {});
    // [label, an instance, the class's prototype, what a foreign receiver prints, the name the
    // instance prints with where it is not the hook's (a job's hook prints each job by its kind)]
    const rows: [string, object, object, string, string?][] = [
      ["Channel", ch, Channel.prototype, "Channel <not a Channel>"],
      ["NativeCoroutine", co, NativeCoroutine.prototype, "NativeCoroutine <not a NativeCoroutine>"],
      ["NativeScope", ns, NativeScope.prototype, "NativeScope <not a NativeScope>"],
      [
        "CompletableDeferred",
        new CompletableDeferred<number>(),
        CompletableDeferred.prototype,
        "CompletableDeferred <not a CompletableDeferred>",
      ],
      ["createScope()", free, Object.getPrototypeOf(free), "Job <not a Job>", "CoroutineScope"],
      [
        "coroutineScope's scope",
        scope,
        Object.getPrototypeOf(scope),
        "Job <not a Job>",
        "CoroutineScope",
      ],
      [
        "launch's job",
        launched,
        Object.getPrototypeOf(launched),
        "Job <not a Job>",
      ],
      ["Context", Context.empty, Context.prototype, "Context <not a Context>"],
      ["ContextKey", Deadline, Object.getPrototypeOf(Deadline), "ContextKey <not a ContextKey>"],
      ["Runtime", runtime(), Runtime.prototype, "Runtime <not a Runtime>"],
      ["Library", library(), Library.prototype, "Library <not a Library>"],
      [
        "SelectBuilder",
        builder!,
        Object.getPrototypeOf(builder),
        "SelectBuilder <not a SelectBuilder>",
      ],
      ["Actor", a, Object.getPrototypeOf(a), "Actor <not an Actor>"],
      ["actor's mailbox", mailbox, Object.getPrototypeOf(mailbox), "Channel <not a Channel>"],
    ];
    // Every exported class with an inspect hook has a row.
    const protos = new Set(rows.map((r) => r[2]));
    let exported = 0;
    for (const [name, v] of Object.entries(kcoro)) {
      if (typeof v !== "function" || typeof v.prototype !== "object" || v.prototype === null) {
        continue;
      }
      if (!(Symbol.for("Deno.customInspect") in v.prototype)) continue;
      assert.ok(protos.has(v.prototype), `exported ${name} has an inspect hook and no row`);
      exported++;
    }
    assert.ok(exported >= 7, `exported classes with a hook: ${exported}`);
    for (const [label, instance, proto, text, name = text.split(" ")[0]] of rows) {
      const hook = hookOf(proto);
      // An instance prints as before.
      assert.ok(
        Deno.inspect(instance).startsWith(`${name} {`),
        `${label}: ${Deno.inspect(instance)}`,
      );
      assert.equal(Deno.inspect(Object.create(proto)), text, label);
      assert.equal(Deno.inspect([Object.create(proto)]), `[ ${text} ]`, label);
      assert.equal(
        Deno.inspect({ x: Object.create(proto) }, { colors: true }),
        `{ x: ${text} }`,
        label,
      );
      // Another kcoro object (whose hook is another), a Proxy of an instance, anything at all.
      const other = rows.find((r) => hookOf(r[2]) !== hook)![1];
      const fakes = [
        {},
        Object.create(proto),
        new Proxy(instance, {}),
        other,
        1,
        "c",
        Symbol(),
        null,
        undefined,
      ];
      for (const [i, fake] of fakes.entries()) {
        assert.equal(hook.call(fake, Deno.inspect, {}), text, `${label}, fake ${i}`);
      }
    }
    a.close();
  });
  await free[Symbol.asyncDispose]();
});

Deno.test("a job whose `state` getter is the caller's (a CompletableDeferred's subclass, an own getter on a scope or a launch's job) prints kcoro's own state, and an actor whose Job of another kind has a `state` that throws prints without it: Deno.inspect threw that getter's error", async () => {
  const thrown = () => {
    throw new Error("the caller's state getter");
  };
  class Mine extends CompletableDeferred<number> {
    override get state(): never {
      return thrown();
    }
  }
  const mine = new Mine();
  assert.equal(Deno.inspect(mine), 'CompletableDeferred { state: "active", [[children]]: 0 }');
  assert.equal(String(mine), "Job(active)"); // `toString` too (it threw the getter's error)
  mine.complete(1);
  assert.equal(Deno.inspect(mine), 'CompletableDeferred { state: "completed", [[children]]: 0 }');
  assert.equal(`${mine}`, "Job(completed)");
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const launched = scope.launch(() => gate.promise);
  for (const job of [scope, launched]) {
    Object.defineProperty(job, "state", { get: thrown, configurable: true });
  }
  assert.equal(Deno.inspect(scope), 'CoroutineScope { state: "active", [[children]]: 1 }');
  assert.equal(Deno.inspect(launched), 'Job { state: "active", [[children]]: 0 }');
  assert.equal(String(scope), "Job(active)");
  assert.equal(String(launched), "Job(active)");
  // An actor on a CoroutineScope of the caller's own, whose launch returns a Job of another kind
  // (a Proxy of a deferred) whose `state` throws: the fact is left out. One that returns a kcoro
  // Job with the caller's getter prints kcoro's state.
  const other = new CompletableDeferred<void>();
  const foreign = new Proxy(other, {
    get: (t, k) => {
      if (k === "state") thrown();
      const v = Reflect.get(t, k, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  // `String(actor)` likewise (it threw the getter's error): `Actor` where the fact is left out.
  const rows = [
    [foreign, "Actor {}", "Actor"],
    [launched, 'Actor { [[state]]: "active" }', "Actor(active)"],
  ] as const;
  for (const [returned, printed, text] of rows) {
    const own = {
      launch: (block: (task: CoroutineScope) => Promise<void>) => (scope.launch(block), returned),
    } as unknown as CoroutineScope;
    const a = actor<number>(own, async (mailbox) => {
      for await (const _ of mailbox) { /* none */ }
    });
    assert.equal(Deno.inspect(a), printed);
    assert.equal(String(a), text);
    assert.equal(`${a}`, text);
    a.close();
  }
  other.complete();
  gate.resolve();
});

Deno.test("an actor whose Job of another kind has a `state` of over 4096 characters prints it by its head and length in String(actor) and without Deno's inspect", async () => {
  // `String(actor)` printed the caller's state whole: a string of 2**28 characters as long.
  await using scope = createScope();
  const gate = Promise.withResolvers<void>();
  const n = 2 ** 28;
  const long = "s".repeat(n);
  const other = new CompletableDeferred<void>();
  const foreign = new Proxy(other, {
    get: (t, k) => {
      if (k === "state") return long;
      const v = Reflect.get(t, k, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  const own = {
    launch: (block: (task: CoroutineScope) => Promise<void>) => (scope.launch(block), foreign),
  } as unknown as CoroutineScope;
  const a = actor<number>(own, async (mailbox) => {
    for await (const _ of mailbox) { /* none */ }
  });
  const cut = `${"s".repeat(64)}… (a state of ${n} characters)`;
  assert.equal(String(a), `Actor(${cut})`);
  const hook = (a as unknown as Record<symbol, (...args: unknown[]) => string>)[
    Symbol.for("Deno.customInspect")
  ];
  assert.equal(
    hook.call(a, undefined, {}),
    // Deno's inspect quotes 10,000 characters of it (and says how many more), a print of 10,031
    // characters, which is cut to its first 64, its quote closed (before, left open).
    `Actor { [[state]]: "${"s".repeat(63)}"… (a print of 10031 characters) }`,
  );
  assert.ok(Deno.inspect(a).length < 10_100);
  a.close();
  other.complete();
  gate.resolve();
});

/**
 * An actor on a CoroutineScope of the caller's own whose launch returns a Job of another kind (a
 * Proxy of a deferred) whose `state` reads `state()`: its print shows what the caller's getter
 * answers. `end()` closes it and completes what it waits on.
 */
function actorWithState(scope: CoroutineScope, state: () => unknown) {
  const gate = Promise.withResolvers<void>();
  const other = new CompletableDeferred<void>();
  const foreign = new Proxy(other, {
    get: (t, k) => {
      if (k === "state") return state();
      const v = Reflect.get(t, k, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  const own = {
    launch: (block: (task: CoroutineScope) => Promise<void>) => (
      scope.launch(async (task) => {
        await block(task);
        await gate.promise;
      }), foreign
    ),
  } as unknown as CoroutineScope;
  const a = actor<number>(own, async (mailbox) => {
    for await (const _ of mailbox) { /* none */ }
  });
  const hook = (a as unknown as Record<symbol, (...args: unknown[]) => string>)[
    Symbol.for("Deno.customInspect")
  ];
  return {
    a,
    /** The print without Deno's inspect (a caller's own call of the hook). */
    plain: () => hook.call(a, undefined, {}),
    end: () => {
      a.close();
      other.complete();
      gate.resolve();
    },
  };
}

Deno.test("a fact whose printing throws inside Deno's inspect (a revoked Proxy, a [Deno.customInspect] that throws, either inside an object) prints by hand, never Deno's [Internal Formatting Error] with its stack and file paths", async () => {
  // Before: a value whose own printing threw made the hook throw, and Deno printed the whole
  // actor as `[Internal Formatting Error] TypeError: ...` and a stack; one inside an object made
  // the fact's text that, stack and all (`at file:///...`), on both paths.
  await using scope = createScope();
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const throwing = {
    [Symbol.for("Deno.customInspect")]() {
      throw new Error("the caller's inspect hook");
    },
  };
  const rows: [string, unknown, string][] = [
    ["a revoked Proxy", revoked, "[revoked Proxy]"],
    ["a revoked Proxy in an object", { r: revoked }, "[object Object]"],
    ["a hook that throws", throwing, "{}"],
    ["a hook that throws in an object", { c: throwing }, '{"c":{}}'],
  ];
  let state: unknown;
  const { a, plain, end } = actorWithState(scope, () => state);
  for (const [label, value, printed] of rows) {
    state = value;
    for (const text of [Deno.inspect(a), Deno.inspect({ a }), plain()]) {
      assert.ok(!text.includes("Internal Formatting Error"), `${label}: ${text}`);
      assert.ok(!/file:|ext:|\n\s+at /.test(text), `${label}: ${text}`);
      assert.ok(text.includes(`Actor { [[state]]: ${printed} }`), `${label}: ${text}`);
    }
    // inspectAs alike, with and without Deno's inspect.
    for (const inspect of [Deno.inspect, undefined]) {
      assert.equal(inspectAs("X", { v: value }, inspect, {}), `X { v: ${printed} }`, label);
    }
  }
  end();
});

Deno.test("a print cut inside a quoted string closes its quote before the ellipsis, an escape the cut splits left out", () => {
  // Before, the quote was left open: `"ssss… (a print of 10027 characters) }`, the ellipsis and
  // the rest read as the string's.
  const named = (name: string) => Object.defineProperty(() => {}, "name", { value: name });
  const rows: [string, unknown, string][] = [
    ["a string", "s".repeat(20_000), `"${"s".repeat(63)}"… (a print of 10027 characters)`],
    [
      "one with double quotes (Deno quotes it with single ones)",
      'a"'.repeat(5000),
      `'${'a"'.repeat(31)}a'… (a print of 10002 characters)`,
    ],
    [
      "escapes, the last one split",
      "\x01".repeat(5000),
      `"${"\\x01".repeat(15)}"… (a print of 20002 characters)`,
    ],
    [
      "a string in an object",
      { k: "v".repeat(5000) },
      `{\n  k: "${"v".repeat(56)}"… (a print of 5011 characters)`,
    ],
    [
      "a quote inside a name opens no string",
      { [Symbol('a"b')]: "x".repeat(5000) },
      `{\n  Symbol(a"b): "${"x".repeat(46)}"… (a print of 5021 characters)`,
    ],
    [
      // All three quotes in it: Deno quotes it with `"`, each of its own escaped (`\"`), which
      // closes no string.
      "escaped quotes",
      "a\"b'c`".repeat(1000),
      `"${"a\\\"b'c`".repeat(9)}"… (a print of 7002 characters)`,
    ],
    [
      // Before, the space before its quote opened a string there, which the value's opening
      // quote closed: the value's string was left open.
      "a quote after a space inside a name opens no string",
      { [Symbol('a "b')]: "x".repeat(5000) },
      `{\n  Symbol(a "b): "${"x".repeat(45)}"… (a print of 5022 characters)`,
    ],
    [
      "strings in a Map, an array, a String object and an indented key",
      [new String("s"), new Map([["k", { "a b": "y".repeat(5000) }]])],
      `[\n  [String: "s"],\n  Map(1) {\n    "k" => {\n      "a b": "yyyyyyy"… (a print of 5070`,
    ],
    [
      // Deno prints a string with line breaks in it as quoted lines joined by ` +`, each after a
      // line break and its indent.
      "a multi-line string in a Set, cut in its last line",
      new Set(["a\nb\n" + "z".repeat(5000)]),
      `Set(1) {\n  "a\\n" +\n    "b\\n" +\n    "${"z".repeat(28)}"… (a print of 5039 characters)`,
    ],
    [
      // Deno prints a space after `,` and `:` before a value: a quote just after one is a name's
      // or a regular expression's own. Before, it opened a string there, which the value's
      // opening quote closed: the value's string was left open.
      "a quote just after `,` in a regular expression",
      { re: /[,"]/, s: "x".repeat(5000) },
      `{\n  re: /[,"]/,\n  s: "${"x".repeat(42)}"… (a print of 5025 characters)`,
    ],
    [
      "a quote just after `:` in a regular expression",
      [/a:"/, "x".repeat(5000)],
      `[\n  /a:"/,\n  "${"x".repeat(50)}"… (a print of 5017 characters)`,
    ],
    [
      "a quote just after `,` in a function's name",
      [named('a,"b'), "x".repeat(5000)],
      `[\n  [Function: a,"b],\n  "${"x".repeat(39)}"… (a print of 5028 characters)`,
    ],
    [
      // Deno quotes a symbol's description that is no name, just after `Symbol(`: taken for
      // none, its closing quote (after `, `) opened one.
      "a symbol with a quoted description",
      [Symbol("a, "), "x".repeat(5000)],
      `[\n  Symbol("a, "),\n  "${"x".repeat(42)}"… (a print of 5025 characters)`,
    ],
    [
      // A quote just after `(` but `Symbol(`'s is a name's own.
      "a quote just after `(` in a function's name",
      [named('f("b'), "x".repeat(5000)],
      `[\n  [Function: f("b],\n  "${"x".repeat(39)}"… (a print of 5028 characters)`,
    ],
    [
      "no string open at the cut",
      { [Symbol("q".repeat(5000))]: 1 },
      `{\n  Symbol(${"q".repeat(53)}… (a print of 5017 characters) }`,
    ],
  ];
  for (const [label, value, printed] of rows) {
    const text = inspectAs("X", { v: value }, undefined, {});
    assert.ok(text.startsWith(`X { v: ${printed}`), `${label}: ${text}`);
  }
  // Printed by hand (a value in it whose own printing throws), as JSON, with Deno's inspect and
  // without: its strings open right after `:`, `,`, `[` and `{`. Before, one after `:` or `,` was
  // taken for none, and the string the cut fell in was left open: `{"c":{},"k":"vvvv… (a print`.
  const throwing = {
    [Symbol.for("Deno.customInspect")]() {
      throw new Error("the caller's inspect hook");
    },
  };
  const byHand: [string, unknown, string][] = [
    [
      "a value after a key",
      { c: throwing, k: "v".repeat(5000) },
      `{"c":{},"k":"${"v".repeat(51)}"… (a print of 5015 characters) }`,
    ],
    [
      "an element after another",
      ["a", "v".repeat(5000), throwing],
      `["a","${"v".repeat(58)}"… (a print of 5011 characters) }`,
    ],
    [
      "a key",
      { c: throwing, ["k".repeat(5000)]: 1 },
      `{"c":{},"${"k".repeat(55)}"… (a print of 5013 characters) }`,
    ],
    [
      // No JSON (its toJSON answers none): its tag, which holds no string whatever its quotes.
      // Before, the quote after `,` opened one, closed before the ellipsis: `[object T,"yy"…`.
      "a tag",
      {
        toJSON: () => undefined,
        [Symbol.toStringTag]: 'T,"' + "y".repeat(5000),
        [Symbol.for("Deno.customInspect")]: throwing[Symbol.for("Deno.customInspect")],
      },
      `[object T,"${"y".repeat(53)}… (a print of 5012 characters) }`,
    ],
  ];
  for (const [label, value, printed] of byHand) {
    for (const inspect of [Deno.inspect, undefined]) {
      assert.equal(inspectAs("X", { v: value }, inspect, {}), `X { v: ${printed}`, label);
    }
  }
});

Deno.test("a bigint of more than 4094 digits prints by its size, in a print with and without Deno's inspect and in String(actor)", async () => {
  // Before, whole: its decimal text, as long as its digits (and minutes to make for the engine's
  // largest) in console.log, and only to be cut in String(actor) and the plain path.
  await using scope = createScope();
  let state: unknown;
  const { a, plain, end } = actorWithState(scope, () => state);
  const rows: [bigint, string][] = [
    [10n ** 4093n, `${10n ** 4093n}n`], // 4094 digits: whole
    [10n ** 4094n, "[a bigint of 13600 bits]"], // 4095 digits: by its size
    [-(2n ** 100_000n), "[a negative bigint of 100001 bits]"],
  ];
  for (const [value, printed] of rows) {
    state = value;
    assert.equal(Deno.inspect(a), `Actor { [[state]]: ${printed} }`);
    assert.equal(plain(), `Actor { [[state]]: ${printed} }`);
    assert.equal(inspectAs("X", { v: value }, Deno.inspect, {}), `X { v: ${printed} }`);
    const said = printed.startsWith("[") ? printed.slice(1, -1) : null;
    if (said !== null) assert.equal(String(a), `Actor(${said})`);
  }
  end();
});

Deno.test("String(actor) names a BigInt wrapper state of more than 4094 digits by its size, as a bigint state, not by its whole decimal text", async () => {
  // Before, `String(state)` converted the wrapper whole (~1 s for 2**22 bits), only to be cut.
  await using scope = createScope();
  let state: unknown;
  const { a, plain, end } = actorWithState(scope, () => state);
  state = Object(2n ** 4_000_000n);
  assert.equal(String(a), "Actor(a bigint of 4000001 bits)");
  // Its print too (Deno's `[BigInt: 12n]`), with and without Deno's inspect: before, Deno printed
  // its whole decimal text (~0.7 s, 1.2 million characters).
  const huge = "Actor { [[state]]: [BigInt: a bigint of 4000001 bits] }";
  assert.equal(Deno.inspect(a), huge);
  assert.equal(plain(), huge);
  state = Object(-(10n ** 4094n));
  assert.equal(String(a), "Actor(a negative bigint of 13600 bits)");
  assert.equal(Deno.inspect(a), "Actor { [[state]]: [BigInt: a negative bigint of 13600 bits] }");
  state = Object(12n); // small: its text, as before
  assert.equal(String(a), "Actor(12)");
  assert.equal(Deno.inspect(a), "Actor { [[state]]: [BigInt: 12n] }");
  end();
});

Deno.test("String(actor) names a symbol state of a Job of another kind by its description, as its print does", async () => {
  // Before, the template literal's TypeError ("Cannot convert a Symbol value to a string") left
  // the state out: `Actor`, where Deno.inspect printed `Actor { [[state]]: Symbol(s) }`.
  await using scope = createScope();
  const { a, plain, end } = actorWithState(scope, () => Symbol("s"));
  assert.equal(String(a), "Actor(Symbol(s))");
  assert.equal(`${a}`, "Actor(Symbol(s))");
  assert.equal(Deno.inspect(a), "Actor { [[state]]: Symbol(s) }");
  assert.equal(plain(), "Actor { [[state]]: Symbol(s) }");
  end();
});

Deno.test("a scope prints its state with JobSupport's `state`, `isCancelled` and `isCompleted` getters redefined by the caller to throw, as a CompletableDeferred does: the scope's print ran them (through Coroutine's `state` getter's `super`) and threw", async () => {
  const base = Object.getPrototypeOf(CompletableDeferred.prototype) as object;
  const names = ["state", "isCancelled", "isCompleted"] as const;
  const saved = names.map((n) => [n, Object.getOwnPropertyDescriptor(base, n)!] as const);
  await using scope = createScope();
  const deferred = new CompletableDeferred<number>();
  try {
    for (const n of names) {
      Object.defineProperty(base, n, {
        get: () => {
          throw new Error(`the caller's ${n} getter`);
        },
        configurable: true,
      });
    }
    assert.equal(
      Deno.inspect(deferred),
      'CompletableDeferred { state: "active", [[children]]: 0 }',
    );
    assert.equal(Deno.inspect(scope), 'CoroutineScope { state: "active", [[children]]: 0 }');
  } finally {
    for (const [n, d] of saved) Object.defineProperty(base, n, d);
  }
  assert.equal(scope.state, "active"); // restored
});

Deno.test("a bigint or BigInt wrapper of more than 4094 digits nested in a fact (an object, an array, a Map, a class's instance) prints by its size, and in String(actor) inside an array: Deno printed its digits", async () => {
  // Before, Deno's inspect printed a nested one whole: 1.26 million digits and ~0.2 s for one of
  // 2**22 bits, also in console.log of an actor whose state holds it.
  const big = 2n ** (2n ** 22n);
  const said = "a bigint of 4194305 bits";
  class Holder {
    held = big;
  }
  const deep = { a: { b: { c: { d: { e: big } } } } }; // Deno prints a bigint at that depth
  const rows: [string, unknown, string][] = [
    ["in an object", { a: big }, `{ a: [${said}] }`],
    ["a wrapper in an array", [1, Object(big)], `[ 1, [BigInt: ${said}] ]`],
    ["a Map's key", new Map([[big, 1]]), `Map(1) { [${said}] => 1 }`],
    ["a Set's value", new Set([big]), `Set(1) { [${said}] }`],
    ["a class's instance", new Holder(), `Holder { held: [${said}] }`],
    ["deep", deep, `{ a: { b: { c: { d: { e: [${said}] } } } } }`],
  ];
  for (const [label, value, printed] of rows) {
    for (const inspect of [Deno.inspect, undefined]) {
      const text = inspectAs("X", { v: value }, inspect, {});
      assert.equal(text.replace(/\s+/g, " "), `X { v: ${printed} }`, label);
    }
  }
  // A cycle prints as Deno prints it, the bigint once.
  const cyclic: Record<string, unknown> = { big };
  cyclic.self = cyclic;
  assert.equal(
    inspectAs("X", { v: cyclic }, Deno.inspect, {}),
    `X { v: <ref *1> { big: [${said}], self: [Circular *1] } }`,
  );
  // What Deno prints within its depth only: deeper, `[Object]`, and nothing is copied.
  assert.equal(
    inspectAs("X", { v: { deep } }, Deno.inspect, {}).replace(/\s+/g, " "),
    "X { v: { deep: { a: { b: { c: { d: [Object] } } } } } }",
  );
  // An object met first deeper than Deno prints into, then higher, where Deno prints into it:
  // looked at there too (before, not: its bigint's digits and its error's stack were printed).
  const shared = { p: { q: { e: big, error: new Error("x") } } };
  for (const inspect of [Deno.inspect, undefined]) {
    assert.equal(
      inspectAs("X", { v: { a: { b: { c: { d: shared } } }, shared } }, inspect, {})
        .replace(/\s+/g, " "),
      "X { v: { a: { b: { c: { d: { p: [Object] } } } }, " +
        `shared: { p: { q: { e: [${said}], error: [Error: x] } } } } }`,
    );
  }
  // Too many values to check (an array of 20,000 to copy): by hand, bounded, never walked whole.
  const many = Array.from({ length: 20_000 }, (_, i) => i);
  assert.equal(inspectAs("X", { v: { many, big } }, Deno.inspect, {}), "X { v: [object Object] }");
  // Such an array without one prints as Deno prints it (only its first 100 elements are looked at).
  assert.ok(inspectAs("X", { v: many }, Deno.inspect, {}).includes("... 19900 more items"));
  // An actor whose state holds one: its print, and String(actor) for an array, which
  // `Array.prototype.join` converted whole.
  await using scope = createScope();
  let state: unknown = { big };
  const { a, plain, end } = actorWithState(scope, () => state);
  for (const text of [Deno.inspect(a), plain(), Deno.inspect({ a })]) {
    assert.ok(text.includes(`[[state]]: { big: [${said}] }`), text);
    assert.ok(text.length < 200, text);
  }
  state = [1, [big, Object(big)]];
  assert.equal(String(a), `Actor(1,${said},${said})`);
  // In an array of any length, by its size (as `join` converts each element anyway).
  state = [big, ...many];
  assert.ok(String(a).startsWith(`Actor(${said},0,1,2,`), String(a));
  assert.ok(String(a).length < 200, String(a));
  end();
});

Deno.test("an Error in a fact prints its name, message, cause and own properties, without its stack: Deno printed the stack's file paths and lines", async () => {
  // Before: `X { v: Error: boom\n    at file:///.../inspect_test.ts:...\n  [cause]: ... }`.
  const boom = Object.assign(new Error("boom", { cause: new TypeError("inner") }), { code: 5 });
  const printed = "[Error: boom] { code: 5, [cause]: [TypeError: inner] }";
  class MyError extends Error {
    override name = "MyError";
  }
  const rows: [string, unknown, string][] = [
    ["an error", boom, printed],
    ["in an object", { e: boom }, `{ e: ${printed} }`],
    [
      "deeper than Deno's depth",
      { a: { b: { c: { d: { e: boom } } } } },
      "{ a: { b: { c: { d: { e: [Error] } } } } }",
    ],
    [
      "in an AggregateError",
      new AggregateError([boom], "all"),
      `[AggregateError: all] { [errors]: [ ${printed} ] }`,
    ],
    ["a subclass's", new MyError("mine"), "[MyError: mine]"],
  ];
  for (const [label, value, want] of rows) {
    for (const inspect of [Deno.inspect, undefined]) {
      const text = inspectAs("X", { v: value }, inspect, {});
      assert.ok(!/file:|\n\s+at /.test(text), `${label}: ${text}`);
      assert.equal(text.replace(/\s+/g, " "), `X { v: ${want} }`, label);
    }
  }
  // By hand too (its cause a revoked Proxy, on which Deno's inspect throws), where JSON printed
  // `{}`: its name, message and cause, no stack; a cause 4 deep at most (its own cause here).
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const odd = new RangeError("odd", { cause: revoked });
  for (const inspect of [Deno.inspect, undefined]) {
    assert.equal(
      inspectAs("X", { v: odd }, inspect, {}),
      "X { v: [RangeError: odd] { [cause]: [revoked Proxy] } }",
    );
  }
  const own = new Error("own");
  own.cause = own;
  assert.equal(
    showByHand(own),
    "[Error: own] { [cause]: [Error: own] { [cause]: [Error: own] { [cause]: [Error: own] " +
      "{ [cause]: [Error] } } } }",
  );
  // An error whose cause is itself prints as Deno prints a cycle.
  const self = new Error("self");
  self.cause = self;
  assert.ok(!/file:/.test(inspectAs("X", { v: self }, Deno.inspect, {})));
  // An actor whose state is one, and String(actor), which never printed a stack.
  await using scope = createScope();
  const { a, plain, end } = actorWithState(scope, () => boom);
  for (const text of [Deno.inspect(a), plain()]) {
    assert.equal(text.replace(/\s+/g, " "), `Actor { [[state]]: ${printed} }`);
  }
  assert.equal(String(a), "Actor(Error: boom)");
  end();
});

Deno.test("a fact holding a string that reads [Internal Formatting Error] prints as Deno prints it, not by hand: only Deno's own, outside a string, is", () => {
  // Before, the text anywhere in the print made the fact print by hand (JSON): `{"s":"..."}`.
  const s = "[Internal Formatting Error] x";
  for (const inspect of [Deno.inspect, undefined]) {
    assert.equal(inspectAs("X", { v: { s } }, inspect, {}), `X { v: { s: "${s}" } }`);
    assert.equal(inspectAs("X", { v: [`'${s}`] }, inspect, {}), `X { v: [ "'${s}" ] }`);
  }
  // With Deno's own too (a hook inside that throws): by hand, as before.
  const throwing = {
    [Symbol.for("Deno.customInspect")]() {
      throw new Error("the caller's inspect hook");
    },
  };
  for (const inspect of [Deno.inspect, undefined]) {
    assert.equal(
      inspectAs("X", { v: { s, c: throwing } }, inspect, {}),
      `X { v: {"s":"${s}","c":{}} }`,
    );
  }
});

Deno.test("the walk that finds a fact's errors runs no trap of a Proxy in a prototype chain, and leaves Deno's own classes, which print by a hook of their own, as Deno prints them", () => {
  // Before, `customInspect in o` ran a Proxy prototype's `has` trap (the caller's code) for each
  // object the walk met, twice where it copied; and a `TextDecoder` (Deno's private hook, reading
  // its private fields) copied beside an error threw in Deno's print: the fact by hand, `[{},{}]`.
  const trapped: PropertyKey[] = [];
  const proto = new Proxy({}, {
    has: (t, k) => (trapped.push(k), Reflect.has(t, k)),
    get: (t, k, r) => (trapped.push(k), Reflect.get(t, k, r)),
  });
  const odd = Object.assign(Object.create(proto), { a: 1 });
  Deno.inspect([odd]);
  const byDeno = trapped.length; // Deno's own print of it runs its traps
  trapped.length = 0;
  const text = inspectAs("X", { v: [odd, new Error("e")] }, Deno.inspect, {});
  assert.equal(text, "X { v: [ Object <{}> { a: 1 }, [Error: e] ] }");
  assert.equal(trapped.length, byDeno, String(trapped.map(String)));
  // By hand too: an error's name is looked for up to such a prototype, not through it.
  const traps: PropertyKey[] = [];
  const error = Object.setPrototypeOf(
    new Error("m"),
    new Proxy(Error.prototype, {
      getOwnPropertyDescriptor: (t, k) => (traps.push(k), Reflect.getOwnPropertyDescriptor(t, k)),
    }),
  );
  assert.equal(showByHand(error), "[Error: m]");
  assert.deepEqual(traps, []);
  for (const inspect of [Deno.inspect, undefined]) {
    for (const made of [new TextDecoder(), new CustomEvent("c", { detail: 1 })]) {
      const alone = inspectAs("X", { v: [made] }, inspect, {}).replace(/\s+/g, " ");
      const beside = inspectAs("X", { v: [made, new Error("e")] }, inspect, {});
      assert.equal(beside.replace(/\s+/g, " "), `${alone.slice(0, -4)}, [Error: e] ] }`);
    }
  }
});

Deno.test("a fact of many values with no error nor huge bigint in it prints as Deno prints it, one with an error beside them too: only what Deno does not print is bounded", async () => {
  // Before, past 10,000 values checked (a 100 by 100 array: 20,000 elements and keys), the fact
  // printed by hand, as JSON (`[[0,0,...`), though it held nothing to replace.
  const matrix = Array.from({ length: 100 }, () => Array(100).fill(0));
  const wide = Object.fromEntries(Array.from({ length: 10_001 }, (_, i) => [`k${i}`, i]));
  const hook = Symbol.for("Deno.customInspect");
  const error = { [hook]: () => "[Error: e]" }; // prints as the Error below prints
  for (const v of [matrix, wide]) {
    assert.equal(inspectAs("X", { v }, Deno.inspect, {}), `X { v: ${Deno.inspect(v)} }`);
    assert.ok(
      inspectAs("X", { v }, undefined, {}).startsWith(`X { v: ${Deno.inspect(v).slice(0, 64)}`),
    );
    assert.equal(
      inspectAs("X", { v: [v, new Error("e")] }, Deno.inspect, {}),
      `X { v: ${Deno.inspect([v, error])} }`,
    );
  }
  // String(actor) of an array state of any length: its head, as before (`Actor` past 10,000), and
  // an Error in it by its own `toString`, which may read a private field (a copy has none: `Actor`).
  class Coded extends Error {
    #code = 7;
    override toString() {
      return `Coded ${this.#code}`;
    }
  }
  await using scope = createScope();
  let state: unknown = Array.from({ length: 10_001 }, (_, i) => i);
  const { a, end } = actorWithState(scope, () => state);
  assert.ok(String(a).startsWith("Actor(0,1,2,3,"), String(a));
  state = [1, [new Coded("c"), 2n ** (2n ** 22n)]];
  assert.equal(String(a), "Actor(1,Coded 7,a bigint of 4194305 bits)");
  // An array's own `toString` (or `join`) still converts it, where a copy had none.
  state = Object.assign([2n ** 20_000n], { toString: () => "mine" });
  assert.equal(String(a), "Actor(mine)");
  // Only its first 10,000 values are looked at (no scan may cost more than `String`, which read
  // each of a million elements in about a quarter of the time): past them, as `String` converts.
  const late = 2n ** 20_000n; // 6021 digits
  state = [...Array.from({ length: 10_000 }, (_, i) => i), late];
  const text = String(state);
  assert.equal(String(a), `Actor(${text.slice(0, 64)}… (a state of ${text.length} characters))`);
  end();
});

Deno.test("a fact copied to print its error refers to each object as Deno's print of it does: one met at two levels, one holding itself met at Deno's depth", () => {
  // Before, an object met first deeper and then higher was copied twice, each copy numbered apart
  // (`<ref *2>` where Deno printed `<ref *1>`), and one met at Deno's depth held the original
  // (not its copy) past it: `self: [Object]` where Deno printed `[Circular *1]`.
  const hook = Symbol.for("Deno.customInspect");
  const error = { [hook]: () => "[Error: e]" }; // prints as the Error below prints
  const o: Record<string, unknown> = { v: 1 };
  o.self = o;
  const facts = (e: unknown) => [
    [e, [[o]], o],
    [e, { a: { b: { c: o } } }],
    [e, { a: { b: { c: o } } }, o],
    new Map<unknown, unknown>([["e", e], ["deep", [[o]]], ["o", o]]),
  ];
  const byDeno = facts(error);
  const ours = facts(new Error("e"));
  for (let i = 0; i < ours.length; i++) {
    for (const options of [{}, { depth: 2 }, { compact: false }]) {
      assert.equal(
        inspectAs("X", { v: ours[i] }, Deno.inspect, options),
        `X { v: ${Deno.inspect(byDeno[i], options)} }`,
      );
    }
    const plain = inspectAs("X", { v: ours[i] }, undefined, {});
    assert.equal(plain, `X { v: ${Deno.inspect(byDeno[i])} }`);
  }
});

Deno.test("an array's named properties in a fact are looked into as its elements are: an error there prints without its stack, a huge bigint by its size", () => {
  // Before, only an array's elements were: `[ 1, code: Error: e\n    at file:///...` (its stack,
  // file paths and lines) and a bigint's whole digits, where Deno prints the named properties.
  const hook = Symbol.for("Deno.customInspect");
  const big = 2n ** 20_000n;
  const said = "a bigint of 20001 bits";
  const sym = Symbol("s");
  const facts = (e: unknown, b: unknown) => [
    Object.assign([1, 2], { code: e }),
    Object.assign([1], { [sym]: e, n: b }),
    { deep: [Object.assign(Array.from({ length: 150 }, (_, i) => i), { e })] },
  ];
  const byDeno = facts({ [hook]: () => "[Error: e]" }, { [hook]: () => `[${said}]` });
  const ours = facts(new Error("e"), big);
  for (let i = 0; i < ours.length; i++) {
    for (const inspect of [Deno.inspect, undefined]) {
      assert.equal(
        inspectAs("X", { v: ours[i] }, inspect, {}),
        `X { v: ${Deno.inspect(byDeno[i])} }`,
      );
    }
  }
});

Deno.test("a DOMException in a fact (an abort's reason) prints without its stack, as Deno prints one that has none", () => {
  // Before, Deno's own hook for it (`Deno.privateCustomInspect`, which the walk leaves alone)
  // printed its stack: `AbortError: The signal has been aborted\n    at file:///...`.
  const reason = AbortSignal.abort().reason;
  const stackless = new DOMException(reason.message, "AbortError");
  Object.defineProperty(stackless, "stack", { value: undefined });
  for (const inspect of [Deno.inspect, undefined]) {
    for (const [v, w] of [[reason, stackless], [[1, { reason }], [1, { reason: stackless }]]]) {
      assert.equal(inspectAs("X", { v }, inspect, {}), `X { v: ${Deno.inspect(w)} }`);
    }
  }
  // One whose hook is the caller's prints by it.
  const own = Object.assign(new DOMException("m"), {
    [Symbol.for("Deno.customInspect")]: () => "mine",
  });
  assert.equal(inspectAs("X", { v: [own] }, Deno.inspect, {}), "X { v: [ mine ] }");
});

Deno.test("a fact's print runs none of the caller's replacements of the built-ins it uses: globalThis.Map, Error, Object.defineProperty, a Map iterator's next, Function.prototype.call", () => {
  // Before, the walk that copies a fact holding an error or a huge bigint (`printable`, and
  // `stringOf` for String(actor)) read `Map`, `Set`, `Error`, `Array`, `Reflect.ownKeys`,
  // `Object.defineProperty`... from the globals, and Map and Set methods and iterators from their
  // prototypes, at each print: the caller's replacement ran (and a throwing one printed by hand).
  const big = 2n ** 20_000n;
  const said = "a bigint of 20001 bits";
  const error = Object.assign(new Error("e"), { cause: new TypeError("c") });
  const fact = {
    m: new Map<unknown, unknown>([["k", error], [error, [big]]]),
    s: new Set([error, 1]),
    a: [1, [error, Object(big)], { d: error }],
  };
  const f = function named() {};
  // String's, RegExp's and Array's methods too (a print cut short, a class and a Proxy of an async
  // function by hand, a DOMException by hand, a name cut and quoted, a look-alike's `notA`):
  // before, a replaced `String.prototype.slice`, `RegExp.prototype.exec`, `Array.prototype.push`
  // or `BigInt.prototype.toString` (a bigint's size) ran.
  const long = `${"s".repeat(5000)}"`;
  class Sub extends Array {}
  const asyncProxy = new Proxy(async function af() {}, {});
  const reason = AbortSignal.abort().reason;
  const name = cutQuoted("n".repeat(5000), "name");
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const run = () => [
    inspectAs("X", { fact }, Deno.inspect, {}),
    inspectAs("X", { fact }, undefined, {}),
    showByHand(fact.a),
    showByHand(f),
    showByHand(error),
    showByHand(-0),
    stringOf([1, [big, Object(big)], [2]]),
    inspectAs("X", { long, big }, undefined, {}),
    inspectAs("X", { name, e: [error] }, Deno.inspect, {}),
    showByHand(Sub),
    showByHand(asyncProxy),
    showByHand(reason),
    notA("Actor"),
    // Cut inside the print, as a ContextKey's hook cuts its name; a cut in a string of an object
    // (where a quote opens one: `opensString`), one splitting an escape (`closeQuote`), and a
    // print by hand that is cut (`cutByHand`, a revoked Proxy's): before, String's `slice` and
    // `includes` and an array's iterator (the hand print's destructuring) ran there.
    inspectAs("X", { name: cutQuoted("n".repeat(5000), "name") }, undefined, {}),
    inspectAs("X", { o: { long } }, undefined, {}),
    inspectAs("X", { esc: `${"a".repeat(62)}${"\x1b".repeat(2000)}` }, undefined, {}),
    inspectAs("X", { r: revoked }, Deno.inspect, {}),
    showByHand(new DOMException("m".repeat(5000))),
  ];
  const want = run();
  assert.ok(want[0].includes(`[${said}]`) && want[0].includes("[Error: e]"), want[0]);
  assert.equal(want[6], `1,${said},${said},2`);
  assert.ok(want[7].includes("… (a print of 5003 characters)"), want[7]);
  assert.ok(want[8].includes("… (a name of 5000 characters)"), want[8]);
  assert.deepEqual(want.slice(9), [
    "[class Sub extends Array]",
    "[AsyncFunction: af]",
    'DOMException { message: "The signal has been aborted", name: "AbortError", code: 20 }',
    "Actor <not an Actor>",
    `X { name: "${"n".repeat(64)}"… (a name of 5000 characters) }`,
    `X { o: {\n  long: '${"s".repeat(53)}'… (a print of 5015 characters) }`,
    `X { esc: "${"a".repeat(62)}"… (a print of 8064 characters) }`,
    "X { r: [revoked Proxy] }",
    `DOMException { message: "${"m".repeat(64)}"… (a string of 5000 characters), name: "Error", ` +
    "code: 0 }",
  ]);
  const ran: string[] = [];
  const g = globalThis as Record<string, unknown>;
  const patches: [object, PropertyKey][] = [
    [g, "Map"],
    [g, "Set"],
    [g, "Error"],
    [g, "Array"],
    [g, "String"],
    [Array, "isArray"],
    [Reflect, "ownKeys"],
    [Reflect, "getOwnPropertyDescriptor"],
    [Object, "getOwnPropertyDescriptor"],
    [Object, "getPrototypeOf"],
    [Object, "setPrototypeOf"],
    [Object, "defineProperty"],
    [Object.prototype, "toString"],
    [Map.prototype, "get"],
    [Map.prototype, "set"],
    [Map.prototype, "entries"],
    [Set.prototype, "has"],
    [Set.prototype, "add"],
    [Set.prototype, "entries"],
    [Object.getPrototypeOf(new Map().entries()), "next"],
    [Object.getPrototypeOf(new Set().entries()), "next"],
    [BigInt.prototype, "valueOf"],
    [Function.prototype, "toString"],
    [Function.prototype, "call"],
    [String.prototype, "slice"],
    [String.prototype, "indexOf"],
    [String.prototype, "includes"],
    [String.prototype, "endsWith"],
    [String.prototype, "charCodeAt"],
    [RegExp.prototype, "exec"],
    [RegExp.prototype, "test"],
    [RegExp.prototype, Symbol.match],
    [RegExp.prototype, Symbol.replace],
    [Array.prototype, "map"],
    [Array.prototype, "join"],
    [Array.prototype, "push"],
    [Array.prototype, "includes"],
    [Array.prototype, "find"],
    [Array.prototype, Symbol.iterator],
    [Object.getPrototypeOf([][Symbol.iterator]()), "next"],
    [BigInt.prototype, "toString"],
    [JSON, "stringify"],
    [Object, "entries"],
    [g, "parseInt"],
    [Math, "clz32"],
  ];
  const saved = patches.map(([o, k]) => Reflect.getOwnPropertyDescriptor(o, k)!);
  let got: string[];
  try {
    // By index, not `for...of` nor destructuring: an array's iterator is patched here too.
    for (let i = 0; i < patches.length; i++) {
      const o = patches[i][0], k = patches[i][1];
      const was = Reflect.get(o, k) as (...a: unknown[]) => unknown;
      // No `String` (it may be patched already), nor `push` on `ran`.
      const name = typeof k === "symbol" ? k.description ?? "?" : typeof k === "string" ? k : "?";
      // A function that records its call, then does what the built-in does (`new` too).
      const by = function (this: unknown, ...a: unknown[]) {
        ran[ran.length] = name;
        return new.target ? Reflect.construct(was, a, new.target) : Reflect.apply(was, this, a);
      };
      Reflect.defineProperty(o, k, { value: by, writable: true, configurable: true });
    }
    got = run();
  } finally {
    for (let i = 0; i < patches.length; i++) {
      Reflect.defineProperty(patches[i][0], patches[i][1], saved[i]);
    }
  }
  assert.deepEqual(got, want);
  // Only the three arrays' `join` in `stringOf`'s `String` of them, which converts each by its
  // own conversion, as `String(state)` does (`join` through Array.prototype's `toString`).
  assert.deepEqual(ran, ["join", "join", "join"]);
});

Deno.test("a DOMException subclass's object prints by its class's name and one made from DOMException's prototype as an object of it, with and without Deno's inspect; a DOMException by hand as Deno prints one: before, Sub printed as DOMException, the made one as JSON, and by hand [Error]", () => {
  class Sub extends DOMException {
    constructor(m: string) {
      super(m, "SubError");
    }
  }
  const sub = new Sub("s");
  const stackless = new Sub("s");
  Object.defineProperty(stackless, "stack", { value: undefined });
  // Deno's own hook throws on it (its getters' brand check): Deno prints `[Internal Formatting
  // Error]` and a stack, and before, the whole fact was printed by hand: `[{"a":1},{}]`.
  const made = Object.assign(Object.create(DOMException.prototype), { a: 1 });
  for (const inspect of [Deno.inspect, undefined]) {
    const text = inspectAs("X", { v: [sub, made, new Error("e")] }, inspect, {});
    assert.equal(
      text.replace(/\s+/g, " "),
      `X { v: [ ${Deno.inspect(stackless)}, DOMException { a: 1 }, [Error: e] ] }`,
    );
    assert.equal(Deno.inspect(stackless), 'Sub { message: "s", name: "SubError", code: 0 }');
  }
  // By hand (where Deno's inspect throws): as Deno prints one without a stack, a cause too.
  // Before, `[Error]` (its name and message are getters).
  const reason = AbortSignal.abort().reason;
  const said =
    'DOMException { message: "The signal has been aborted", name: "AbortError", code: 20 }';
  assert.equal(showByHand(reason), said);
  assert.equal(showByHand(sub), 'Sub { message: "s", name: "SubError", code: 0 }');
  // A message over 4096 characters: its head quoted, then the ellipsis and its length, as a
  // quoted string is cut elsewhere (before, inside the quotes, read as the message's own text).
  assert.equal(
    showByHand(new DOMException("m".repeat(5000), "AbortError")),
    `DOMException { message: "${"m".repeat(64)}"… (a string of 5000 characters), name: ` +
      '"AbortError", code: 20 }',
  );
  assert.equal(showByHand(new Error("e", { cause: reason })), `[Error: e] { [cause]: ${said} }`);
  // One whose hook is the caller's (before Deno's, up its chain) is not Deno's: printed by it.
  const own = Object.assign(Object.create(DOMException.prototype), {
    [Symbol.for("Deno.customInspect")]: () => "mine",
  });
  assert.equal(inspectAs("X", { v: [own] }, Deno.inspect, {}), "X { v: [ mine ] }");
});

Deno.test("with Deno's showHidden, an Error in a property that is not enumerable prints without its stack, and a copied error's stack shows as the original's: before, its stack and file paths printed", () => {
  // Deno prints such properties in brackets (`[e]: ...`) under showHidden; the walk looked at
  // enumerable ones only, and Deno printed the Error there with its stack. A copied error's
  // stack printed `[stack]: undefined` where Deno shows the original's `[Getter/Setter]`.
  const sym = Symbol("s");
  const facts = (e: unknown) => [
    Object.defineProperty({ a: 1 }, "e", { value: e }),
    Object.defineProperty([1], sym, { value: e }),
    { deep: Object.defineProperty({}, "e", { value: { e } }) },
    new Map([[1, e]]),
    e,
  ];
  // An Error whose stack reads undefined: Deno prints it as it prints ours.
  const stackless = () =>
    Object.defineProperty(new Error("x"), "stack", { get: () => undefined, set() {} });
  const byDeno = facts(stackless());
  const ours = facts(new Error("x"));
  // Deno takes any truthy showHidden (`1`, "yes") as true: before, only `true` was, and under
  // the others the Error printed its stack.
  for (const showHidden of [true, 1, "yes"]) {
    const options = { showHidden } as Deno.InspectOptions;
    for (let i = 0; i < ours.length; i++) {
      const text = inspectAs("X", { v: ours[i] }, Deno.inspect, options);
      assert.ok(!/file:|\n\s+at /.test(text), text);
      assert.equal(text, `X { v: ${Deno.inspect(byDeno[i], options)} }`);
      assert.ok(text.includes("[stack]: [Getter/Setter]"), text);
    }
  }
  // Not shown, not looked into: as before.
  assert.equal(inspectAs("X", { v: ours[0] }, Deno.inspect, {}), "X { v: { a: 1 } }");
});

Deno.test("an object holding a Deno.customInspect, Node's or Deno's private inspect key whose value is no function is looked into: Deno prints it as any other, and before, an Error in it printed its stack", () => {
  // The walk took the key alone for a hook of the caller's (`key in o`) and left the object as it
  // was; Deno calls only a function there, and printed the Error in it with its file paths.
  const keys = [
    Symbol.for("Deno.customInspect"),
    Symbol.for("nodejs.util.inspect.custom"),
    Symbol.for("Deno.privateCustomInspect"),
  ];
  const stackless = () => {
    const e = new Error("x");
    Object.defineProperty(e, "stack", { value: undefined });
    return e;
  };
  for (const key of keys) {
    for (const held of [1, undefined, "f"]) {
      const own = { [key]: held, e: new Error("x") };
      const inherited = Object.assign(Object.create({ [key]: held }), { e: new Error("x") });
      for (
        const [v, w] of [
          [own, { [key]: held, e: stackless() }],
          [inherited, Object.assign(Object.create({ [key]: held }), { e: stackless() })],
        ]
      ) {
        for (const inspect of [Deno.inspect, undefined]) {
          const text = inspectAs("X", { v }, inspect, {});
          assert.equal(text, `X { v: ${Deno.inspect(w)} }`, `${String(key)}: ${String(held)}`);
        }
      }
    }
    // A function there (or a getter, whose value only its code tells) is a hook: it prints.
    const hooked = { [key]: () => "mine", e: new Error("x") };
    assert.equal(inspectAs("X", { v: [hooked] }, Deno.inspect, {}), "X { v: [ mine ] }");
    // A getter: Deno calls what it answers on the object itself, not on a copy (untested before:
    // with a getter taken for no hook, the walk copied it, and the hook ran on the copy).
    const got: object = {
      get [key]() {
        return function (this: unknown) {
          return this === got ? "mine" : "a copy";
        };
      },
      e: new Error("x"),
    };
    assert.equal(inspectAs("X", { v: [got] }, Deno.inspect, {}), "X { v: [ mine ] }");
  }
});

Deno.test("a print defines its arrays' elements as their own: an index getter or setter Array.prototype has does not run, nor replace the print: before, inspectAs's parts were assigned, and a fact printed as the getter's text", () => {
  // inspectAs's list of facts and constructorName's chain (a DOMException's class name by hand)
  // were assigned (`parts[i] = ...`, `chain.push(p)`): where the array has no element yet, that
  // runs a setter Array.prototype has there, and `join` read its getter.
  const show = (v: unknown) => `<${typeof v}>`; // an inspect of no arrays: only kcoro's run
  const reason = AbortSignal.abort().reason;
  const [ran, got] = withIndexAccessors(() => [
    inspectAs("X", { a: 1, b: "s" }, show, {}),
    showByHand(reason),
  ]);
  const [fact, dom] = [got[0], got[1]];
  assert.equal(ran, "");
  assert.equal(fact, "X { a: <number>, b: <string> }");
  assert.equal(
    dom,
    'DOMException { message: "The signal has been aborted", name: "AbortError", code: 20 }',
  );
});

Deno.test("a print reads each property's descriptor as its own: a descriptor field put on Object.prototype is not read, nor its getter run: before, an accessor read as a data property there, and a copy holding one threw", () => {
  // The engine's descriptors have Object.prototype's prototype: `"value" in d` was true for an
  // accessor where Object.prototype has a `value` (its getter, the caller's code, ran), and
  // `defineProperty(copy, k, d)` read a `get` there beside the value (it threw).
  const big = 2n ** 20_000n;
  const said = "a bigint of 20001 bits";
  const joined: unknown[] = [big];
  Object.defineProperty(joined, 1, { get: () => 7, enumerable: true });
  const named = new Error("m");
  Object.defineProperty(named, "name", { get: () => "Got" });
  const fact = {
    e: new Error("e"),
    s: Object.defineProperty(new Error("s"), "stack", { value: "at", writable: true }), // data
    get g() {
      return 1;
    },
  };
  class Sub extends DOMException {}
  const facts = {
    fact,
    d: AbortSignal.abort().reason, // a DOMException's stand-in (Deno's own print of one)
    sub: new Sub("s"),
    named: Object.assign([1], { code: new Error("c") }), // an array's named keys
  };
  // Deno's inspect of each copy, shown by what it holds: no Deno code runs.
  const show = (v: unknown): string => {
    const o = v as object;
    const keys = Reflect.ownKeys(o).filter((k) => k !== "length" && k !== "stack");
    const kinds = keys.map((k) => {
      const d = Object.getOwnPropertyDescriptor(o, k)!;
      if (!Object.hasOwn(d, "value")) return `${String(k)}:get`;
      return `${String(k)}:${typeof d.value === "object" ? show(d.value) : d.value}`;
    });
    return `${Object.getPrototypeOf(o)?.constructor?.name}(${kinds.join(" ")})`;
  };
  const run = () => [
    stringOf(joined),
    showByHand(named),
    inspectAs("X", facts, show, {}),
    showByHand(new DOMException("d", "AbortError")),
  ];
  const want = run();
  assert.deepEqual(want, [
    `${said},7`,
    "[Error: m]",
    "X { fact: Object(e:Error(message:e) s:Error(message:s) g:get), d: DOMException(message:" +
    "The signal has been aborted name:AbortError code:20), sub: Sub(message:s name:Error " +
    "code:0), named: Array(0:1 code:Error(message:c)) }",
    'DOMException { message: "d", name: "AbortError", code: 20 }',
  ]);
  const ran: string[] = [];
  const fields = ["value", "get", "set", "writable", "enumerable", "configurable"];
  for (const k of fields) {
    // With no prototype: the fields put there before this one are not read by this define.
    Object.defineProperty(Object.prototype, k, {
      __proto__: null,
      configurable: true,
      get() {
        if (new Error().stack!.includes("/src/inspect.ts")) ran.push(k);
        return undefined;
      },
    } as PropertyDescriptor);
  }
  let got: unknown;
  try {
    got = run();
  } catch (e) {
    got = e;
  } finally {
    for (const k of fields) delete (Object.prototype as Record<string, unknown>)[k];
  }
  assert.deepEqual(ran, []);
  assert.deepEqual(got, want);
});

// Last: no scheduler left running for the files after this one (tests/support.ts says why).
Deno.test("the scheduler this file may have started is shut down", shutdownScheduler);
